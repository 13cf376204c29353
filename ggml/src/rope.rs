//! Rotary position embedding: one layer's parameters (a backend's rope op
//! takes them) and ggml's reference computation of the rotation.

/// YaRN's extrapolation ramp between the correction dimensions.
fn yarn_ramp(low: f32, high: f32, i0: usize) -> f32 {
    let y = ((i0 / 2) as f32 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

/// Rotary embedding parameters of one layer.
#[derive(Clone, Copy, Debug)]
pub struct Rope {
    /// Dimensions rotated (from the start of each head).
    pub n_dims: usize,
    pub freq_base: f32,
    /// 1 / linear scaling factor.
    pub freq_scale: f32,
    /// YaRN: 0 disables extrapolation mixing.
    pub ext_factor: f32,
    pub attn_factor: f32,
    /// YaRN correction dimensions.
    pub corr_dims: [f32; 2],
    pub neox: bool,
}

impl Rope {
    pub fn plain(n_dims: usize, freq_base: f32, neox: bool) -> Rope {
        Rope {
            n_dims,
            freq_base,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            corr_dims: [0.0, 0.0],
            neox,
        }
    }

    /// cos/sin pairs for position `pos`, into `cache` (n_dims entries), as
    /// ggml computes them: theta multiplied up pair by pair in f32.
    pub fn cache(&self, pos: i64, freq_factors: Option<&[f32]>, cache: &mut [f32]) {
        let theta_scale = self.freq_base.powf(-2.0 / self.n_dims as f32);
        let mut theta = pos as f32;
        for i0 in (0..self.n_dims).step_by(2) {
            let ff = freq_factors.map_or(1.0, |f| f[i0 / 2]);
            let theta_extrap = theta / ff;
            let theta_interp = self.freq_scale * theta_extrap;
            let mut t = theta_interp;
            let mut mscale = self.attn_factor;
            if self.ext_factor != 0.0 {
                let mix = yarn_ramp(self.corr_dims[0], self.corr_dims[1], i0) * self.ext_factor;
                t = theta_interp * (1.0 - mix) + theta_extrap * mix;
                mscale *= 1.0 + 0.1 * (1.0 / self.freq_scale).ln();
            }
            cache[i0] = t.cos() * mscale;
            cache[i0 + 1] = t.sin() * mscale;
            theta *= theta_scale;
        }
    }

    /// Rotates one head in place with a cache from `cache()`.
    pub fn apply(&self, head: &mut [f32], cache: &[f32]) {
        let n = self.n_dims;
        for i0 in (0..n).step_by(2) {
            let (c, s) = (cache[i0], cache[i0 + 1]);
            let (a, b) = if self.neox {
                (i0 / 2, i0 / 2 + n / 2)
            } else {
                (i0, i0 + 1)
            };
            let (x0, x1) = (head[a], head[b]);
            // ggml's C compiles these with contraction into fused multiply-adds.
            head[a] = x0.mul_add(c, -(x1 * s));
            head[b] = x0.mul_add(s, x1 * c);
        }
    }
}

/// YaRN correction dimensions for `n_ctx_orig` (ggml_rope_yarn_corr_dims).
pub fn yarn_corr_dims(
    n_dims: usize,
    n_ctx_orig: usize,
    freq_base: f32,
    beta_fast: f32,
    beta_slow: f32,
) -> [f32; 2] {
    let corr = |n_rot: f32| {
        n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * freq_base.ln())
    };
    let start = corr(beta_fast).floor().max(0.0);
    let end = corr(beta_slow).ceil().min(n_dims as f32 - 1.0);
    [start, end]
}
