//! The tensors of a model, found by llama.cpp's names and checked against the
//! hyper-parameters before anything runs. Format-neutral: tensors come from a
//! `TensorSource` and keep their storage format; a backend uploads them.

use std::any::Any;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ggml::backend::HostMat;

use crate::format::{TensorRef, TensorSource};

use super::arch::Arch;

/// One layer's weights: matrices `M` and small vectors `V`, on the host
/// (`HostMat`, `Vec<f32>`) or uploaded to a backend.
pub struct Layer<M, V> {
    pub attn_norm: V,
    /// Q, K, V projections, or one fused matrix in `wq` when the arch fuses them.
    pub wq: M,
    pub wk: Option<M>,
    pub wv: Option<M>,
    pub bq: Option<V>,
    pub bk: Option<V>,
    pub bv: Option<V>,
    pub q_norm: Option<V>,
    pub k_norm: Option<V>,
    pub wo: M,
    pub post_attn_norm: Option<V>,
    pub ffn_norm: V,
    /// None when the arch fuses gate and up into `w_up`.
    pub w_gate: Option<M>,
    pub w_up: M,
    pub w_down: M,
    pub post_ffn_norm: Option<V>,
}

impl<M, V> Layer<M, V> {
    /// The same layer with every matrix and vector converted (uploaded).
    pub fn try_map<M2, V2, E>(
        &self,
        m: impl Fn(&M) -> Result<M2, E>,
        v: impl Fn(&V) -> Result<V2, E>,
    ) -> Result<Layer<M2, V2>, E> {
        let om = |x: &Option<M>| x.as_ref().map(&m).transpose();
        let ov = |x: &Option<V>| x.as_ref().map(&v).transpose();
        Ok(Layer {
            wq: m(&self.wq)?,
            wk: om(&self.wk)?,
            wv: om(&self.wv)?,
            wo: m(&self.wo)?,
            w_gate: om(&self.w_gate)?,
            w_up: m(&self.w_up)?,
            w_down: m(&self.w_down)?,
            attn_norm: v(&self.attn_norm)?,
            bq: ov(&self.bq)?,
            bk: ov(&self.bk)?,
            bv: ov(&self.bv)?,
            q_norm: ov(&self.q_norm)?,
            k_norm: ov(&self.k_norm)?,
            post_attn_norm: ov(&self.post_attn_norm)?,
            ffn_norm: v(&self.ffn_norm)?,
            post_ffn_norm: ov(&self.post_ffn_norm)?,
        })
    }
}

impl Layer<usize, usize> {
    /// The sum of every part, where each part is a size.
    fn bytes_of_parts(&self) -> usize {
        let mats = [self.wq, self.wo, self.w_up, self.w_down]
            .into_iter()
            .chain([self.wk, self.wv, self.w_gate].into_iter().flatten());
        let vecs = [self.attn_norm, self.ffn_norm].into_iter().chain(
            [
                self.bq,
                self.bk,
                self.bv,
                self.q_norm,
                self.k_norm,
                self.post_attn_norm,
                self.post_ffn_norm,
            ]
            .into_iter()
            .flatten(),
        );
        mats.chain(vecs).sum()
    }
}

impl Layer<HostMat, Vec<f32>> {
    /// Bytes of this layer's tensors as stored (what a device holds of it).
    pub fn bytes(&self) -> usize {
        self.bytes_aligned(1)
    }

    /// The same with each tensor rounded up to `align` bytes, as a device
    /// places them one after another.
    pub fn bytes_aligned(&self, align: usize) -> usize {
        let up = |n: usize| n.next_multiple_of(align);
        let Ok(sizes) = self.try_map::<usize, usize, std::convert::Infallible>(
            |m| Ok(up(m.len)),
            |v| Ok(up(v.len() * 4)),
        );
        sizes.bytes_of_parts()
    }
}

pub struct Weights {
    /// Where the tensors live (a GGUF file, a model folder).
    pub file: Arc<dyn TensorSource>,
    pub token_embd: HostMat,
    pub output_norm: Vec<f32>,
    /// The output projection; the token embedding when the model ties them.
    pub output: HostMat,
    pub rope_freqs: Option<Vec<f32>>,
    /// Phi-3 LongRoPE frequency factors for contexts within / beyond the
    /// original training context.
    pub rope_short: Option<Vec<f32>>,
    pub rope_long: Option<Vec<f32>>,
    pub layers: Vec<Layer<HostMat, Vec<f32>>>,
}

impl Weights {
    pub fn data<'a>(&self, m: &'a HostMat) -> &'a [u8] {
        m.bytes()
    }

    /// The rope frequency factors for a context of `n_ctx` tokens: Llama-3's,
    /// or Phi-3's short or long ones.
    pub fn rope_factors(&self, long: bool) -> Option<&[f32]> {
        let longrope = if long {
            self.rope_long.as_deref()
        } else {
            self.rope_short.as_deref()
        };
        self.rope_freqs.as_deref().or(longrope)
    }

    /// Bytes of tensor data in the file(s).
    pub fn file_bytes(&self) -> u64 {
        self.file.stored_bytes()
    }

    /// Reads every page of the mapped tensors once, so a large model is
    /// loaded from disk now (with progress shown) rather than page by page
    /// during the first prompt. `progress(done, total)` is called every few
    /// MiB.
    pub fn prefetch(&self, mut progress: impl FnMut(u64, u64)) {
        const PAGE: usize = 4096;
        const REPORT: u64 = 32 << 20;
        let total = self.file_bytes();
        let (mut done, mut reported) = (0u64, 0u64);
        for data in self.file.tensor_bytes() {
            for i in (0..data.len()).step_by(PAGE) {
                // SAFETY: in bounds; a volatile read so the touch is not optimised away.
                unsafe { std::ptr::read_volatile(data.as_ptr().add(i)) };
            }
            done += data.len() as u64;
            if done - reported >= REPORT {
                reported = done;
                progress(done, total);
            }
        }
        progress(total, total);
    }
}

/// Looks tensors up and checks their shapes.
pub struct Loader<S: TensorSource> {
    pub source: Arc<S>,
    /// Input orders handed out so far: projections of one input (q, k and
    /// v; gate and up) have equal orders, and sharing one lets the backends
    /// see that by pointer (one activation quantisation, one launch).
    pub orders: std::sync::Mutex<Vec<Arc<[u32]>>>,
}

impl<S: TensorSource> Loader<S> {
    fn info(&self, name: &str) -> Option<TensorRef<'_>> {
        self.source.tensor(name)
    }

    fn require(&self, name: &str) -> Result<TensorRef<'_>> {
        self.info(name).with_context(|| {
            format!(
                "{}: tensor '{name}' is missing",
                self.source.path().display()
            )
        })
    }

    /// A matrix with `cols` inputs; `rows` is checked when given.
    pub fn mat(&self, name: &str, cols: usize, rows: Option<usize>) -> Result<HostMat> {
        let t = self.require(name)?;
        self.mat_from(t, cols, rows)
    }

    pub fn opt_mat(&self, name: &str, cols: usize, rows: Option<usize>) -> Result<Option<HostMat>> {
        self.info(name)
            .map(|t| self.mat_from(t, cols, rows))
            .transpose()
    }

    fn mat_from(&self, t: TensorRef<'_>, cols: usize, rows: Option<usize>) -> Result<HostMat> {
        let path = self.source.path().display();
        let dims = t.dims;
        let (c, r) = match dims {
            [c] => (*c, 1),
            [c, r] => (*c, *r),
            [c, r, 1] | [c, r, 1, 1] => (*c, *r),
            _ => bail!(
                "{path}: tensor '{}' has shape {dims:?}, expected a matrix",
                t.name
            ),
        };
        if c as usize != cols || rows.is_some_and(|rows| rows as u64 != r) {
            bail!(
                "{path}: tensor '{}' has shape {dims:?}, expected [{cols}, {}]",
                t.name,
                rows.map_or("?".to_string(), |r| r.to_string())
            );
        }
        let row_bytes = t
            .format
            .ggml()
            .row_size(c)
            .with_context(|| format!("{path}: tensor '{}': bad row size", t.name))?
            as usize;
        let owner: Arc<dyn Any + Send + Sync> = self.source.clone();
        Ok(HostMat {
            name: t.name.to_string(),
            format: t.format,
            rows: r as usize,
            cols: c as usize,
            row_bytes,
            owner,
            ptr: t.bytes.as_ptr(),
            len: t.bytes.len(),
            input_order: t.input_order.map(|o| self.shared_order(o)),
            mapped: self.source.mapped(),
        })
    }

    fn shared_order(&self, order: &[u32]) -> Arc<[u32]> {
        let mut known = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = known.iter().find(|o| ***o == *order) {
            return o.clone();
        }
        let o: Arc<[u32]> = Arc::from(order);
        known.push(o.clone());
        o
    }

    /// A vector, dequantised to f32 (norm weights and biases are small).
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.require(name)?;
        self.vector_from(t, len)
    }

    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        self.info(name)
            .map(|t| self.vector_from(t, len))
            .transpose()
    }

    fn vector_from(&self, t: TensorRef<'_>, len: usize) -> Result<Vec<f32>> {
        let path = self.source.path().display();
        let n: u64 = t.dims.iter().product();
        if n != len as u64 {
            bail!(
                "{path}: tensor '{}' has {n} elements, expected {len}",
                t.name
            );
        }
        let mut out = vec![0f32; len];
        ggml::blocks::dequantize(t.format.ggml(), t.bytes, &mut out)
            .map_err(|e| anyhow::anyhow!("{path}: tensor '{}': {e}", t.name))?;
        Ok(out)
    }
}

/// Shapes the loader checks tensors against.
#[derive(Debug)]
pub struct Shape {
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
}

/// Finds and checks every tensor the forward pass needs; nothing is copied
/// but norm vectors and biases.
pub fn load<S: TensorSource>(
    source: Arc<S>,
    arch: &Arch,
    n_layer: usize,
    s: &Shape,
) -> Result<Weights> {
    let path = source.path().to_path_buf();
    let l = Loader {
        source: source.clone(),
        orders: Default::default(),
    };
    let q_dim = s.n_head * s.head_dim;
    let kv_dim = s.n_head_kv * s.head_dim;
    let token_embd = l.mat("token_embd.weight", s.n_embd, Some(s.n_vocab))?;
    let output = match l.opt_mat("output.weight", s.n_embd, Some(s.n_vocab))? {
        Some(m) => m,
        None => token_embd.clone(),
    };
    let mut layers = Vec::with_capacity(n_layer);
    for i in 0..n_layer {
        let n = |t: &str| format!("blk.{i}.{t}");
        let (wq, wk, wv) = if arch.fused_qkv_and_gate_up {
            (
                l.mat(&n("attn_qkv.weight"), s.n_embd, Some(q_dim + 2 * kv_dim))?,
                None,
                None,
            )
        } else {
            (
                l.mat(&n("attn_q.weight"), s.n_embd, Some(q_dim))?,
                Some(l.mat(&n("attn_k.weight"), s.n_embd, Some(kv_dim))?),
                Some(l.mat(&n("attn_v.weight"), s.n_embd, Some(kv_dim))?),
            )
        };
        let (w_gate, w_up) = if arch.fused_qkv_and_gate_up {
            (
                None,
                l.mat(&n("ffn_up.weight"), s.n_embd, Some(2 * s.n_ff))?,
            )
        } else {
            (
                Some(l.mat(&n("ffn_gate.weight"), s.n_embd, Some(s.n_ff))?),
                l.mat(&n("ffn_up.weight"), s.n_embd, Some(s.n_ff))?,
            )
        };
        let norm = |t: &str, len| -> Result<Option<Vec<f32>>> {
            if arch.qk_norm || arch.post_norms {
                l.opt_vector(&n(t), len)
            } else {
                Ok(None)
            }
        };
        let layer = Layer {
            attn_norm: l.vector(&n("attn_norm.weight"), s.n_embd)?,
            wq,
            wk,
            wv,
            bq: l.opt_vector(&n("attn_q.bias"), q_dim)?,
            bk: l.opt_vector(&n("attn_k.bias"), kv_dim)?,
            bv: l.opt_vector(&n("attn_v.bias"), kv_dim)?,
            q_norm: norm("attn_q_norm.weight", s.head_dim)?,
            k_norm: norm("attn_k_norm.weight", s.head_dim)?,
            wo: l.mat(&n("attn_output.weight"), q_dim, Some(s.n_embd))?,
            post_attn_norm: norm("post_attention_norm.weight", s.n_embd)?,
            ffn_norm: l.vector(&n("ffn_norm.weight"), s.n_embd)?,
            w_gate,
            w_up,
            w_down: l.mat(&n("ffn_down.weight"), s.n_ff, Some(s.n_embd))?,
            post_ffn_norm: norm("post_ffw_norm.weight", s.n_embd)?,
        };
        if arch.qk_norm && (layer.q_norm.is_none() || layer.k_norm.is_none()) {
            bail!("{}: layer {i} lacks its Q/K norm tensors", path.display());
        }
        if arch.post_norms && (layer.post_attn_norm.is_none() || layer.post_ffn_norm.is_none()) {
            bail!(
                "{}: layer {i} lacks its post-attention/FFN norm tensors",
                path.display()
            );
        }
        layers.push(layer);
    }
    let rope_freqs = l.opt_vector("rope_freqs.weight", s.head_dim / 2)?;
    let rope_short = l.opt_vector("rope_factors_short.weight", s.head_dim / 2)?;
    let rope_long = l.opt_vector("rope_factors_long.weight", s.head_dim / 2)?;
    Ok(Weights {
        output_norm: l.vector("output_norm.weight", s.n_embd)?,
        token_embd,
        output,
        rope_freqs,
        rope_short,
        rope_long,
        layers,
        file: source,
    })
}
