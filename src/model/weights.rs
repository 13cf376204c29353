//! The tensors of a model, found by llama.cpp's names and checked against the
//! hyper-parameters before anything runs.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ggml::cpu::{kernels_for, Isa, Kernels};

use crate::format::gguf::{GgufFile, TensorInfo};

use super::arch::Arch;

/// A weight matrix of `rows` outputs by `cols` inputs, left in the mapping.
#[derive(Clone)]
pub struct Mat {
    pub info: TensorInfo,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    pub kernels: Kernels,
}

pub struct Layer {
    pub attn_norm: Vec<f32>,
    /// Q, K, V projections, or one fused matrix in `wq` when the arch fuses them.
    pub wq: Mat,
    pub wk: Option<Mat>,
    pub wv: Option<Mat>,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wo: Mat,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    /// None when the arch fuses gate and up into `w_up`.
    pub w_gate: Option<Mat>,
    pub w_up: Mat,
    pub w_down: Mat,
    pub post_ffn_norm: Option<Vec<f32>>,
}

pub struct Weights {
    pub file: Arc<GgufFile>,
    pub token_embd: Mat,
    pub output_norm: Vec<f32>,
    /// The output projection; the token embedding when the model ties them.
    pub output: Mat,
    pub rope_freqs: Option<Vec<f32>>,
    /// Phi-3 LongRoPE frequency factors for contexts within / beyond the
    /// original training context.
    pub rope_short: Option<Vec<f32>>,
    pub rope_long: Option<Vec<f32>>,
    pub layers: Vec<Layer>,
}

impl Weights {
    pub fn data(&self, m: &Mat) -> &[u8] {
        self.file.tensor_data(&m.info)
    }

    /// Bytes of tensor data in the file(s).
    pub fn file_bytes(&self) -> u64 {
        self.file
            .tensors()
            .iter()
            .map(|t| self.file.tensor_data(t).len() as u64)
            .sum()
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
        for t in self.file.tensors() {
            let data = self.file.tensor_data(t);
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
pub struct Loader<'a> {
    pub file: &'a GgufFile,
    pub isa: Isa,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.file.tensor_info(name)
    }

    fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.info(name)
            .with_context(|| format!("{}: tensor '{name}' is missing", self.file.path().display()))
    }

    /// A matrix with `cols` inputs; `rows` is checked when given.
    pub fn mat(&self, name: &str, cols: usize, rows: Option<usize>) -> Result<Mat> {
        let info = self.require(name)?;
        self.mat_from(info, cols, rows)
    }

    pub fn opt_mat(&self, name: &str, cols: usize, rows: Option<usize>) -> Result<Option<Mat>> {
        self.info(name)
            .map(|i| self.mat_from(i, cols, rows))
            .transpose()
    }

    fn mat_from(&self, info: &TensorInfo, cols: usize, rows: Option<usize>) -> Result<Mat> {
        let path = self.file.path().display();
        let dims = &info.dims;
        let (c, r) = match dims.as_slice() {
            [c] => (*c, 1),
            [c, r] => (*c, *r),
            [c, r, 1] | [c, r, 1, 1] => (*c, *r),
            _ => bail!(
                "{path}: tensor '{}' has shape {dims:?}, expected a matrix",
                info.name
            ),
        };
        if c as usize != cols || rows.is_some_and(|rows| rows as u64 != r) {
            bail!(
                "{path}: tensor '{}' has shape {dims:?}, expected [{cols}, {}]",
                info.name,
                rows.map_or("?".to_string(), |r| r.to_string())
            );
        }
        let kernels = kernels_for(info.ty, self.isa)
            .map_err(|e| anyhow::anyhow!("{path}: tensor '{}': {e}", info.name))?;
        Ok(Mat {
            info: info.clone(),
            rows: r as usize,
            cols: c as usize,
            row_bytes: info.ty.row_size(c).expect("checked at parse") as usize,
            kernels,
        })
    }

    /// A vector, dequantised to f32 (norm weights and biases are small).
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let info = self.require(name)?;
        self.vector_from(info, len)
    }

    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        self.info(name)
            .map(|i| self.vector_from(i, len))
            .transpose()
    }

    fn vector_from(&self, info: &TensorInfo, len: usize) -> Result<Vec<f32>> {
        let path = self.file.path().display();
        if info.n_elements() != len as u64 {
            bail!(
                "{path}: tensor '{}' has {} elements, expected {len}",
                info.name,
                info.n_elements()
            );
        }
        let mut out = vec![0f32; len];
        ggml::blocks::dequantize(info.ty, self.file.tensor_data(info), &mut out)
            .map_err(|e| anyhow::anyhow!("{path}: tensor '{}': {e}", info.name))?;
        Ok(out)
    }
}

/// Shapes the loader checks tensors against.
pub struct Shape {
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
}

pub fn load(
    file: Arc<GgufFile>,
    arch: &Arch,
    n_layer: usize,
    s: &Shape,
    isa: Isa,
) -> Result<Weights> {
    let l = Loader { file: &file, isa };
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
            bail!(
                "{}: layer {i} lacks its Q/K norm tensors",
                file.path().display()
            );
        }
        if arch.post_norms && (layer.post_attn_norm.is_none() || layer.post_ffn_norm.is_none()) {
            bail!(
                "{}: layer {i} lacks its post-attention/FFN norm tensors",
                file.path().display()
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
        file: file.clone(),
    })
}
