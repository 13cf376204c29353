//! An exact reference forward pass, for tests: the model's weights as the
//! file defines them, no activation quantisation, f64 arithmetic throughout
//! (exact softmax, exact GELU, rope computed from its formula, an f64 KV
//! cache). Every path of every backend can then be measured against the true
//! model rather than against one configuration of llama.cpp.
//!
//! It follows the semantics of `forward.rs` step by step, with plain loops in
//! the manner of llama2.c; speed only matters enough for tests (rows of a
//! matrix are shared out over a few threads).
//!
//! Weights are kept as f32, widened to f64 at each multiply. That is the same
//! arithmetic as storing f64: every ggml block format dequantises exactly in
//! f32. The scale-only formats (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K, IQ4_NL, IQ4_XS)
//! compute each weight as a product of an f16 scale (11 significant bits)
//! and small integers, at most 24 significant bits in all, which f32 holds;
//! F16 and BF16 widen exactly. The affine formats (Q4_1, Q5_1, Q2_K, Q4_K,
//! Q5_K) add a second term, an f16 minimum (times a small integer), and that
//! sum is exact only when the two terms' exponents are close enough, so
//! `ReferenceModel::new` checks every block of those formats (see
//! `dequantize_exact`) and refuses a model for which it is not.

use anyhow::{bail, Context, Result};
use ggml::cpu::ops::Rope;
use ggml::GgmlType;

use crate::model::arch::Activation;
use crate::model::Model;
use ggml::backend::HostMat as Mat;

/// A matrix of `rows` outputs by `cols` inputs, dequantised.
pub(crate) struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Rows `range` as a matrix of their own (the parts of a fused matrix).
    fn rows_slice(&self, range: std::ops::Range<usize>) -> Matrix {
        Matrix {
            rows: range.len(),
            cols: self.cols,
            data: self.data[range.start * self.cols..range.end * self.cols].to_vec(),
        }
    }
}

pub(crate) struct RefLayer {
    pub(crate) rope: Rope,
    pub(crate) window: Option<usize>,
    pub(crate) attn_norm: Vec<f64>,
    pub(crate) wq: Matrix,
    pub(crate) wk: Matrix,
    pub(crate) wv: Matrix,
    pub(crate) bq: Option<Vec<f64>>,
    pub(crate) bk: Option<Vec<f64>>,
    pub(crate) bv: Option<Vec<f64>>,
    pub(crate) q_norm: Option<Vec<f64>>,
    pub(crate) k_norm: Option<Vec<f64>>,
    pub(crate) wo: Matrix,
    pub(crate) post_attn_norm: Option<Vec<f64>>,
    pub(crate) ffn_norm: Vec<f64>,
    pub(crate) w_gate: Matrix,
    pub(crate) w_up: Matrix,
    pub(crate) w_down: Matrix,
    pub(crate) post_ffn_norm: Option<Vec<f64>>,
}

/// The model in exact form. Fields are visible to this crate's tests, which
/// break one thing at a time to show that the comparison notices.
pub struct ReferenceModel {
    pub(crate) activation: Activation,
    pub(crate) n_head: usize,
    pub(crate) n_head_kv: usize,
    pub(crate) head_dim: usize,
    pub(crate) n_vocab: usize,
    pub(crate) eps: f64,
    pub(crate) embd_scale: Option<f64>,
    pub(crate) q_scale: Option<f64>,
    pub(crate) kq_scale: f64,
    pub(crate) n_ctx_orig: usize,
    token_embd: Matrix,
    /// None when the output projection is the token embedding.
    output: Option<Matrix>,
    pub(crate) output_norm: Vec<f64>,
    pub(crate) rope_freqs: Option<Vec<f64>>,
    pub(crate) rope_short: Option<Vec<f64>>,
    pub(crate) rope_long: Option<Vec<f64>>,
    pub(crate) layers: Vec<RefLayer>,
    threads: usize,
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn widen_opt(v: &Option<Vec<f32>>) -> Option<Vec<f64>> {
    v.as_deref().map(widen)
}

/// Byte offsets of the f16 scale and f16 minimum in one block of an affine
/// format, where a weight is `scale·(small ints) ± minimum·(small int)`.
fn affine_fields(ty: GgmlType) -> Option<(usize, usize)> {
    use GgmlType::*;
    match ty {
        Q4_1 | Q5_1 | Q4_K | Q5_K => Some((0, 2)),
        Q2_K => Some((80, 82)),
        _ => None,
    }
}

/// Dequantises `bytes` of type `ty` into `out`, erring when an f32 value is
/// not the exact weight the block defines. For an affine format each block
/// is dequantised twice more, once with the minimum zeroed (giving the
/// scaled term, itself exact: at most 22 significant bits) and once with the
/// scale zeroed (giving the minimum's term); the weight is exact when their
/// sum, taken without rounding, is the f32 value.
pub fn dequantize_exact(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    ggml::blocks::dequantize(ty, bytes, out).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some((scale_at, min_at)) = affine_fields(ty) else {
        return Ok(());
    };
    let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
    let (mut scaled, mut shifted) = (vec![0f32; bs], vec![0f32; bs]);
    let mut block = vec![0u8; ts];
    for (b, y) in bytes.chunks_exact(ts).zip(out.chunks_exact(bs)) {
        block.copy_from_slice(b);
        block[min_at..min_at + 2].fill(0);
        ggml::blocks::dequantize(ty, &block, &mut scaled).map_err(|e| anyhow::anyhow!("{e}"))?;
        block.copy_from_slice(b);
        block[scale_at..scale_at + 2].fill(0);
        ggml::blocks::dequantize(ty, &block, &mut shifted).map_err(|e| anyhow::anyhow!("{e}"))?;
        for ((&y, &a), &m) in y.iter().zip(&scaled).zip(&shifted) {
            // Knuth's two-sum: s + err is a + m exactly.
            let (a, m) = (f64::from(a), f64::from(m));
            let s = a + m;
            let bb = s - a;
            let err = (a - (s - bb)) + (m - bb);
            if err != 0.0 || s != f64::from(y) {
                bail!("a {ty} weight ({a} + {m}) is not exact in f32 (got {y})");
            }
        }
    }
    Ok(())
}

impl ReferenceModel {
    /// The exact form of a loaded model: its configuration and its weights,
    /// dequantised (checked exact). Takes a few seconds and about four bytes
    /// per parameter.
    pub fn new(model: &Model) -> Result<ReferenceModel> {
        let c = &model.config;
        let s = &c.shape;
        let w = &model.weights;
        let mat = |m: &Mat| -> Result<Matrix> {
            let mut data = vec![0f32; m.rows * m.cols];
            dequantize_exact(m.format.ggml(), w.data(m), &mut data)
                .with_context(|| format!("tensor '{}'", m.name))?;
            Ok(Matrix {
                rows: m.rows,
                cols: m.cols,
                data,
            })
        };
        let (q_dim, kv_dim) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
        let mut layers = Vec::with_capacity(c.n_layer);
        for (il, l) in w.layers.iter().enumerate() {
            // Fused matrices are split by rows, as forward.rs splits their outputs.
            let (wq, wk, wv) = match (&l.wk, &l.wv) {
                (Some(wk), Some(wv)) => (mat(&l.wq)?, mat(wk)?, mat(wv)?),
                _ => {
                    let qkv = mat(&l.wq)?;
                    (
                        qkv.rows_slice(0..q_dim),
                        qkv.rows_slice(q_dim..q_dim + kv_dim),
                        qkv.rows_slice(q_dim + kv_dim..q_dim + 2 * kv_dim),
                    )
                }
            };
            let (w_gate, w_up) = match &l.w_gate {
                Some(g) => (mat(g)?, mat(&l.w_up)?),
                None => {
                    let gu = mat(&l.w_up)?;
                    (gu.rows_slice(0..s.n_ff), gu.rows_slice(s.n_ff..2 * s.n_ff))
                }
            };
            layers.push(RefLayer {
                rope: c.layers[il].rope,
                window: c.layers[il].window,
                attn_norm: widen(&l.attn_norm),
                wq,
                wk,
                wv,
                bq: widen_opt(&l.bq),
                bk: widen_opt(&l.bk),
                bv: widen_opt(&l.bv),
                q_norm: widen_opt(&l.q_norm),
                k_norm: widen_opt(&l.k_norm),
                wo: mat(&l.wo)?,
                post_attn_norm: widen_opt(&l.post_attn_norm),
                ffn_norm: widen(&l.ffn_norm),
                w_gate,
                w_up,
                w_down: mat(&l.w_down)?,
                post_ffn_norm: widen_opt(&l.post_ffn_norm),
            });
        }
        let tied = w.output.name == w.token_embd.name;
        Ok(ReferenceModel {
            activation: c.arch.activation,
            n_head: s.n_head,
            n_head_kv: s.n_head_kv,
            head_dim: s.head_dim,
            n_vocab: s.n_vocab,
            eps: f64::from(c.eps),
            embd_scale: c.embd_scale.map(f64::from),
            q_scale: c.q_scale.map(f64::from),
            kq_scale: f64::from(c.kq_scale),
            n_ctx_orig: c.n_ctx_orig,
            token_embd: mat(&w.token_embd)?,
            output: if tied { None } else { Some(mat(&w.output)?) },
            output_norm: widen(&w.output_norm),
            rope_freqs: widen_opt(&w.rope_freqs),
            rope_short: widen_opt(&w.rope_short),
            rope_long: widen_opt(&w.rope_long),
            layers,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// The logits after each of `tokens`, a fresh sequence at positions 0..,
    /// in a context of `n_ctx` tokens (which picks Phi-3's LongRoPE factors,
    /// as in forward.rs).
    pub fn logits(&self, tokens: &[u32], n_ctx: usize) -> Result<Vec<Vec<f64>>> {
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.n_vocab) {
            bail!(
                "token id {bad} is outside the vocabulary of {}",
                self.n_vocab
            );
        }
        if tokens.len() > n_ctx {
            bail!("{} tokens do not fit a context of {n_ctx}", tokens.len());
        }
        let t_len = tokens.len();
        let e = self.token_embd.cols;
        let hd = self.head_dim;
        let (q_dim, kv_dim) = (self.n_head * hd, self.n_head_kv * hd);

        // Every token of the sequence at once: row t of x is position t.
        let mut x = vec![0f64; t_len * e];
        for (t, &tok) in tokens.iter().enumerate() {
            let row = self.token_embd.row(tok as usize);
            let scale = self.embd_scale.unwrap_or(1.0);
            for (d, &v) in x[t * e..(t + 1) * e].iter_mut().zip(row) {
                *d = f64::from(v) * scale;
            }
        }

        let long = n_ctx.next_multiple_of(256) > self.n_ctx_orig;
        let longrope = if long {
            self.rope_long.as_deref()
        } else {
            self.rope_short.as_deref()
        };
        let freqs = self.rope_freqs.as_deref().or(longrope);

        for l in &self.layers {
            // Attention block.
            let xn = self.norm_rows(&x, &l.attn_norm);
            let mut q = self.matmul(&l.wq, &xn);
            let mut k = self.matmul(&l.wk, &xn);
            let v = add_bias(self.matmul(&l.wv, &xn), l.bv.as_deref());
            q = add_bias(q, l.bq.as_deref());
            k = add_bias(k, l.bk.as_deref());
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                q.chunks_exact_mut(hd)
                    .for_each(|h| rms_norm(h, qn, self.eps));
                k.chunks_exact_mut(hd)
                    .for_each(|h| rms_norm(h, kn, self.eps));
            }
            for t in 0..t_len {
                let cs = rope_cos_sin(&l.rope, t, freqs);
                q[t * q_dim..(t + 1) * q_dim]
                    .chunks_exact_mut(hd)
                    .for_each(|h| rope_apply(&l.rope, h, &cs));
                k[t * kv_dim..(t + 1) * kv_dim]
                    .chunks_exact_mut(hd)
                    .for_each(|h| rope_apply(&l.rope, h, &cs));
            }
            if let Some(qs) = self.q_scale {
                q.iter_mut().for_each(|v| *v *= qs);
            }
            // k and v, all positions, are this layer's (exact) KV cache.
            let att = self.attention(l.window, t_len, &q, &k, &v);
            let mut o = self.matmul(&l.wo, &att);
            if let Some(pn) = &l.post_attn_norm {
                o = self.norm_rows(&o, pn);
            }
            x.iter_mut().zip(&o).for_each(|(x, d)| *x += d);

            // Feed-forward block.
            let xn = self.norm_rows(&x, &l.ffn_norm);
            let mut gate = self.matmul(&l.w_gate, &xn);
            let up = self.matmul(&l.w_up, &xn);
            for (g, &u) in gate.iter_mut().zip(&up) {
                *g = match self.activation {
                    Activation::SwiGlu => silu(*g) * u,
                    Activation::GeGlu => gelu_tanh(*g) * u,
                };
            }
            let mut d = self.matmul(&l.w_down, &gate);
            if let Some(pn) = &l.post_ffn_norm {
                d = self.norm_rows(&d, pn);
            }
            x.iter_mut().zip(&d).for_each(|(x, d)| *x += d);
        }

        let xn = self.norm_rows(&x, &self.output_norm);
        let out = self.output.as_ref().unwrap_or(&self.token_embd);
        let logits = self.matmul(out, &xn);
        Ok(logits
            .chunks_exact(self.n_vocab)
            .map(|r| r.to_vec())
            .collect())
    }

    fn norm_rows(&self, x: &[f64], w: &[f64]) -> Vec<f64> {
        let mut y = x.to_vec();
        y.chunks_exact_mut(w.len())
            .for_each(|r| rms_norm(r, w, self.eps));
        y
    }

    /// Causal attention of every position over the positions up to it (and
    /// within its layer's window), exact softmax, heads grouped as GQA.
    fn attention(
        &self,
        window: Option<usize>,
        t_len: usize,
        q: &[f64],
        k: &[f64],
        v: &[f64],
    ) -> Vec<f64> {
        let hd = self.head_dim;
        let (q_dim, kv_dim) = (self.n_head * hd, self.n_head_kv * hd);
        let group = self.n_head / self.n_head_kv;
        let mut out = vec![0f64; t_len * q_dim];
        let mut scores = Vec::with_capacity(t_len);
        for t in 0..t_len {
            let first = window.map_or(0, |w| (t + 1).saturating_sub(w));
            for h in 0..self.n_head {
                let g = h / group;
                let qh = &q[t * q_dim + h * hd..][..hd];
                scores.clear();
                for p in first..=t {
                    let kh = &k[p * kv_dim + g * hd..][..hd];
                    scores.push(dot64(qh, kh) * self.kq_scale);
                }
                let max = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
                scores.iter_mut().for_each(|s| *s = (*s - max).exp());
                let sum: f64 = scores.iter().sum();
                let o = &mut out[t * q_dim + h * hd..][..hd];
                for (p, &s) in (first..=t).zip(&scores) {
                    let vh = &v[p * kv_dim + g * hd..][..hd];
                    for (o, &vv) in o.iter_mut().zip(vh) {
                        *o += s / sum * vv;
                    }
                }
            }
        }
        out
    }

    /// `out[t][r] = W[r] · x[t]` for every row `t` of `x`, rows of W shared
    /// out over threads (each weight row is read once for all tokens).
    fn matmul(&self, m: &Matrix, x: &[f64]) -> Vec<f64> {
        let t_len = x.len() / m.cols;
        // By weight row first, so each thread writes one contiguous piece.
        let mut by_row = vec![0f64; m.rows * t_len];
        let per = m.rows.div_ceil(self.threads).max(1);
        std::thread::scope(|scope| {
            for (i, part) in by_row.chunks_mut(per * t_len).enumerate() {
                scope.spawn(move || {
                    for (j, out) in part.chunks_exact_mut(t_len).enumerate() {
                        let w = m.row(i * per + j);
                        for (t, o) in out.iter_mut().enumerate() {
                            *o = dot_mixed(w, &x[t * m.cols..(t + 1) * m.cols]);
                        }
                    }
                });
            }
        });
        let mut out = vec![0f64; t_len * m.rows];
        for r in 0..m.rows {
            for t in 0..t_len {
                out[t * m.rows + r] = by_row[r * t_len + t];
            }
        }
        out
    }
}

/// An f32 weight row (exact values) times an f64 activation row, in f64.
fn dot_mixed(w: &[f32], x: &[f64]) -> f64 {
    // Eight partial sums: independent chains the CPU can overlap.
    let mut acc = [0f64; 8];
    let (wc, xc) = (w.chunks_exact(8), x.chunks_exact(8));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (w, x) in wc.zip(xc) {
        for i in 0..8 {
            acc[i] += f64::from(w[i]) * x[i];
        }
    }
    let tail: f64 = wr.iter().zip(xr).map(|(&w, &x)| f64::from(w) * x).sum();
    acc.iter().sum::<f64>() + tail
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn rms_norm(x: &mut [f64], w: &[f64], eps: f64) {
    let mean = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v *= scale * g;
    }
}

fn add_bias(mut x: Vec<f64>, bias: Option<&[f64]>) -> Vec<f64> {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(v, bb)| *v += bb);
        }
    }
    x
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// GELU with the tanh approximation, the function the GeGLU models were
/// trained with (ggml computes the same formula, through an f16 table).
fn gelu_tanh(x: f64) -> f64 {
    let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (sqrt_2_over_pi * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// (cos, sin) of each rotated pair at position `pos`: ggml's rope with YaRN
/// (`Rope::cache`), computed from the formula in f64: pair i turns by
/// pos · base^(-2i/n_dims), divided by its frequency factor.
fn rope_cos_sin(r: &Rope, pos: usize, freq_factors: Option<&[f64]>) -> Vec<(f64, f64)> {
    let n = r.n_dims;
    let base = f64::from(r.freq_base);
    let freq_scale = f64::from(r.freq_scale);
    let ext_factor = f64::from(r.ext_factor);
    let [low, high] = r.corr_dims.map(f64::from);
    (0..n / 2)
        .map(|i| {
            let ff = freq_factors.map_or(1.0, |f| f[i]);
            let theta_extrap = pos as f64 * base.powf(-2.0 * i as f64 / n as f64) / ff;
            let theta_interp = freq_scale * theta_extrap;
            let mut theta = theta_interp;
            let mut mscale = f64::from(r.attn_factor);
            if ext_factor != 0.0 {
                // YaRN: extrapolate the fast dimensions, interpolate the slow.
                let y = (i as f64 - low) / (high - low).max(0.001);
                let mix = (1.0 - y.clamp(0.0, 1.0)) * ext_factor;
                theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
                mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
            }
            (theta.cos() * mscale, theta.sin() * mscale)
        })
        .collect()
}

/// Rotates one head: pairs (2i, 2i+1), or (i, i + n/2) for NeoX.
fn rope_apply(r: &Rope, head: &mut [f64], cs: &[(f64, f64)]) {
    let n = r.n_dims;
    for (i, &(c, s)) in cs.iter().enumerate() {
        let (a, b) = if r.neox {
            (i, i + n / 2)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * c - x1 * s;
        head[b] = x0 * s + x1 * c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gguf::{Array, Metadata, Value};
    use crate::model::synth::{synthesize, Rng, Spec};

    const N_VOCAB: usize = 320;
    const N_CTX: usize = 64;
    /// Longer than gemma3's synthetic window of 8, so masking matters.
    const N_TOKENS: usize = 24;

    fn spec(arch: &str, seed: u64) -> Spec {
        Spec {
            arch: arch.to_string(),
            // Float weights: our path then quantises no activations, and its
            // distance from exact is the smallest that f32 and an f16 KV
            // cache allow, so that mistakes stand out.
            weight: GgmlType::F32,
            n_layer: 2,
            n_embd: 128,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 256,
            n_ctx: N_CTX,
            tied: seed.is_multiple_of(2),
            seed,
            longrope_orig: None,
            rope_scaling: None,
        }
    }

    /// A synthetic model, loaded both ways (the directory keeps its file).
    struct Pair {
        _dir: tempfile::TempDir,
        model: Model,
        exact: ReferenceModel,
    }

    fn pair(spec: &Spec) -> Pair {
        let mut vocab = Metadata::default();
        let words = (0..N_VOCAB).map(|i| format!("t{i}")).collect();
        vocab.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(words)),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        synthesize(spec, &vocab).unwrap().write_to(&path).unwrap();
        let model = Model::load(&path, 2).unwrap();
        let exact = ReferenceModel::new(&model).unwrap();
        Pair {
            _dir: dir,
            model,
            exact,
        }
    }

    fn tokens(seed: u64) -> Vec<u32> {
        let mut rng = Rng::new(seed);
        (0..N_TOKENS)
            .map(|_| (rng.next_u64() % N_VOCAB as u64) as u32)
            .collect()
    }

    /// The largest |ours - exact| over every position, relative to the
    /// largest |exact| logit.
    fn error(p: &Pair, seed: u64) -> f64 {
        let toks = tokens(seed);
        let exact = p.exact.logits(&toks, N_CTX).unwrap();
        let mut state = p.model.new_state(N_CTX).unwrap();
        p.model.forward(&mut state, &toks, true).unwrap();
        let ours = state.logits.chunks_exact(N_VOCAB);
        let (mut worst, mut scale) = (0f64, 0f64);
        for (a, b) in ours.zip(&exact) {
            for (&a, &b) in a.iter().zip(b) {
                worst = worst.max((f64::from(a) - b).abs());
                scale = scale.max(b.abs());
            }
        }
        worst / scale
    }

    /// With float weights our path rounds keys, values and GELU inputs to
    /// f16 and computes in f32: measured 3e-4 to 7e-4 of the largest logit.
    const TOLERANCE: f64 = 2e-3;
    /// With Q8_0 weights it also quantises activations to 8 bits, which
    /// moves logits by 1e-2 to 2.5e-2 of the largest.
    const TOLERANCE_Q8: f64 = 5e-2;

    fn cases() -> Vec<(&'static str, Spec)> {
        let mut v: Vec<(&str, Spec)> = ["llama", "qwen2", "qwen3", "gemma3", "phi3"]
            .iter()
            .enumerate()
            .map(|(i, &a)| (a, spec(a, 10 + i as u64)))
            .collect();
        v.push((
            "llama linear rope",
            Spec {
                rope_scaling: Some(("linear", 2.0, 32)),
                ..spec("llama", 20)
            },
        ));
        v.push((
            "llama yarn rope",
            Spec {
                rope_scaling: Some(("yarn", 4.0, 16)),
                ..spec("llama", 21)
            },
        ));
        // An original context under the padded context takes the long factors.
        for (name, orig) in [("phi3 long factors", 32), ("phi3 short factors", 512)] {
            v.push((
                name,
                Spec {
                    longrope_orig: Some(orig),
                    ..spec("phi3", 22)
                },
            ));
        }
        v
    }

    #[test]
    fn our_f32_path_is_close_to_exact_on_every_architecture() {
        for (name, s) in cases() {
            let e = error(&pair(&s), 1);
            eprintln!("{name}: max |ours - exact| / max |exact| = {e:.2e}");
            assert!(e < TOLERANCE, "{name}: {e}");
        }
        for arch in ["llama", "gemma3"] {
            let s = Spec {
                weight: GgmlType::Q8_0,
                ..spec(arch, 15)
            };
            let e = error(&pair(&s), 1);
            eprintln!("{arch} Q8_0: max |ours - exact| / max |exact| = {e:.2e}");
            assert!(e < TOLERANCE_Q8, "{arch} Q8_0: {e}");
        }
    }

    /// A mistake in the reference (or, equally, in the path measured against
    /// it) shows up far beyond the tolerance: each case breaks one thing.
    #[test]
    fn the_comparison_notices_a_wrong_model() {
        type Break = fn(&mut ReferenceModel);
        let faults: [(&str, Spec, Break); 10] = [
            ("rope base", spec("llama", 30), |r| {
                r.layers.iter_mut().for_each(|l| l.rope.freq_base *= 2.0)
            }),
            ("rope style", spec("qwen2", 31), |r| {
                r.layers.iter_mut().for_each(|l| l.rope.neox = !l.rope.neox)
            }),
            ("Q bias", spec("qwen2", 32), |r| r.layers[0].bq = None),
            ("K norm", spec("qwen3", 33), |r| r.layers[1].k_norm = None),
            ("post-FFN norm", spec("gemma3", 34), |r| {
                r.layers[0].post_ffn_norm = None
            }),
            ("sliding window", spec("gemma3", 35), |r| {
                r.layers.iter_mut().for_each(|l| l.window = None)
            }),
            ("Q scale", spec("gemma3", 36), |r| r.q_scale = None),
            ("GELU for SiLU", spec("llama", 37), |r| {
                r.activation = Activation::GeGlu
            }),
            (
                "short factors for long",
                Spec {
                    longrope_orig: Some(32),
                    ..spec("phi3", 38)
                },
                |r| r.rope_long = r.rope_short.clone(),
            ),
            (
                "YaRN off",
                Spec {
                    rope_scaling: Some(("yarn", 4.0, 16)),
                    ..spec("llama", 39)
                },
                |r| r.layers.iter_mut().for_each(|l| l.rope.ext_factor = 0.0),
            ),
        ];
        for (name, s, fault) in faults {
            let mut p = pair(&s);
            let good = error(&p, 2);
            fault(&mut p.exact);
            let bad = error(&p, 2);
            eprintln!("{name}: {good:.2e} -> {bad:.2e}");
            assert!(
                good < TOLERANCE && bad > TOLERANCE,
                "{name}: {good} -> {bad}"
            );
        }
    }

    #[test]
    fn every_weight_type_dequantises_exactly_in_f32() {
        for &ty in ggml::blocks::WEIGHT_TYPES {
            // Rows of 256, whole K-quant blocks.
            let s = Spec {
                weight: ty,
                n_embd: 256,
                n_ff: 512,
                ..spec("llama", 40)
            };
            // The synthetic weights have scales of the size real files have.
            let p = pair(&s);
            let m = &p.model.weights.layers[0].w_down;
            let mut out = vec![0f32; m.rows * m.cols];
            dequantize_exact(ty, p.model.weights.data(m), &mut out)
                .unwrap_or_else(|e| panic!("{ty}: {e}"));
        }
    }

    #[test]
    fn an_inexact_block_is_refused() {
        // Q4_1 with a scale of 3·2^-24 (an f16 subnormal) and a minimum of
        // 1: 1 + 3q·2^-24 needs more than f32's 24 bits.
        let mut block = vec![0u8; 20];
        block[0..2].copy_from_slice(&3u16.to_le_bytes());
        block[2..4].copy_from_slice(&ggml::float16::f32_to_f16(1.0).to_le_bytes());
        block[4..].fill(0x37);
        let mut out = vec![0f32; 32];
        let err = dequantize_exact(GgmlType::Q4_1, &block, &mut out).unwrap_err();
        assert!(err.to_string().contains("not exact"), "{err}");
    }
}
