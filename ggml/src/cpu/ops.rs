//! Element-wise and row operations of the forward pass, with ggml's numerics
//! where they decide tokens: f64 sums in norms and softmax, the f16 GELU table.

use std::sync::OnceLock;

use crate::float16::{f16_to_f32, f32_to_f16};

/// `x * w / rms(x)` in place; the mean square is summed in f64 as ggml does.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * scale * g;
    }
}

/// ggml's tanh-approximated GELU in f32.
fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// GELU of every f16 value, rounded to f16: ggml's CPU computes GELU through
/// this table, and matching logits needs the same rounding.
fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| f32_to_f16(gelu_f32(f16_to_f32(h))))
            .collect()
    })
}

#[inline]
pub fn gelu(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        f16_to_f32(gelu_table()[f32_to_f16(x) as usize])
    }
}

/// `gate = gelu(gate) * up`
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = if *g <= -10.0 {
            0.0
        } else if *g >= 10.0 {
            *g * u
        } else {
            f16_to_f32(table[f32_to_f16(*g) as usize]) * u
        };
    }
}

/// exp(x) by the range-reduced polynomial that ggml's x86 CPU backend uses
/// (from Arm's optimized-routines), in its AVX-512 form: reduce by n = round(x/ln2),
/// evaluate a degree-5 polynomial, scale by 2^n. Matching it to the bit keeps
/// SiLU activations, and so their quantisation, identical to llama.cpp's.
#[inline]
pub fn expf_ggml(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // x * 1/ln2 + r
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    );
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let c5 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7
    let c4 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
    let c3 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
    let c2 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
    let c1 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
    let j = c5
        .mul_add(b, c4)
        .mul_add(u, c3.mul_add(b, c2))
        .mul_add(u, c1.mul_add(b, 1.0));
    // scalef: j * 2^n, exact while the result stays normal.
    j * 2f32.powi(n as i32)
}

/// `gate = silu(gate) * up`, with ggml's exp on whole groups of 16 and the C
/// library's on the tail, as ggml does.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let simd = gate.len() / 16 * 16;
    for (i, (g, &u)) in gate.iter_mut().zip(up).enumerate() {
        let e = if i < simd {
            expf_ggml(-*g)
        } else {
            (-*g).exp()
        };
        *g = *g / (1.0 + e) * u;
    }
}

/// Softmax in place; the normaliser is summed in f64 as ggml does.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

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
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_exp_is_accurate() {
        for i in -1000..1000 {
            let x = i as f32 * 0.0837;
            let (a, b) = (expf_ggml(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "{x}: {a} vs {b}");
        }
        assert_eq!(expf_ggml(-200.0), 0.0);
        assert_eq!(expf_ggml(200.0), f32::INFINITY);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1e30];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
    }

    #[test]
    fn rope_rotates_by_position() {
        let rope = Rope::plain(4, 10000.0, false);
        let mut cache = [0f32; 4];
        rope.cache(0, None, &mut cache);
        let mut h = [1.0, 2.0, 3.0, 4.0];
        rope.apply(&mut h, &cache);
        assert_eq!(h, [1.0, 2.0, 3.0, 4.0]);
        rope.cache(1, None, &mut cache);
        rope.apply(&mut h, &cache);
        let (c, s) = (1f32.cos(), 1f32.sin());
        assert!((h[0] - (c - 2.0 * s)).abs() < 1e-6);
    }

    #[test]
    fn gelu_is_close_to_the_exact_formula() {
        for x in [-3.0f32, -0.5, 0.0, 0.1, 1.0, 2.5] {
            assert!(
                (gelu(x) - gelu_f32(x)).abs() < 2e-3 * (1.0 + x.abs()),
                "{x}"
            );
        }
    }
}
