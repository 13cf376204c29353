//! What a model needs in memory at a context size, part by part, from the
//! file's header alone: `llm info`, the offload planner and the loader all
//! count with this one function, so the plan is what a load allocates.

use serde::Serialize;

use crate::format::TensorSource;
use crate::model::forward::LOGIT_ROWS;
use crate::model::{HyperParams, MAX_BATCH};
use ggml::backend::KvTypes;
use ggml::kv_types::row_bytes;

const F16: u64 = 2;
const F32: u64 = 4;

/// Cells of a layer's KV cache at context `n_ctx`. A sliding-window layer
/// keeps a ring of its window plus one batch, so that a batch never
/// overwrites a cell one of its own tokens still attends to.
pub fn kv_cells(window: Option<usize>, n_ctx: usize) -> usize {
    window.map_or(n_ctx, |w| (w + MAX_BATCH).min(n_ctx))
}

/// One repeating layer (`blk.{i}.*`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerBytes {
    pub weights: u64,
    /// K and V of the cache's types, `kv_cells` cells each.
    pub kv: u64,
    pub kv_cells: u64,
}

/// The compute scratch of one device for a batch of `MAX_BATCH` tokens (B),
/// counted as the forward pass keeps it, in f32 unless said otherwise:
/// - activations: the hidden state and its normed copy (2 x n_embd), Q and
///   the attention output (2 x q_dim), K and V (2 x kv_dim), gate and up
///   (2 x n_ff), the split buffer of fused QKV or gate-up weights where the
///   file has them, each times B; the quantised activations of the widest
///   matmul input (B rows of its kernel's activation type); one rope table;
/// - attention: scores of one head over the batch, B x cells in f32 plus
///   their f16 copies with the query, B x (cells + head_dim); the CPU keeps
///   one such row per worker thread, a device up to one per token;
/// - logits: LOGIT_ROWS rows of n_vocab, on the device of the output layer
///   (the forward pass returns the last token's; a run that asks for every
///   token's logits gets them in host memory, LOGIT_ROWS at a time).
///
/// A device that holds none of the model keeps none; the CPU, which always
/// embeds the tokens, keeps at least `input`: B x n_embd.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScratchModel {
    pub input: u64,
    pub activations: u64,
    /// Attention bytes per KV cell of the largest layer on the device ...
    pub attention_per_cell: u64,
    /// ... plus this much for the f16 query.
    pub attention_fixed: u64,
    pub logits: u64,
}

impl ScratchModel {
    /// Scratch of a device whose largest KV layer has `max_cells` cells
    /// (0 when it holds no repeating layer), with or without the output.
    pub fn bytes(&self, max_cells: u64, output: bool) -> u64 {
        let attention = if max_cells > 0 {
            self.attention_per_cell * max_cells + self.attention_fixed
        } else {
            0
        };
        self.activations + attention + if output { self.logits } else { 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Footprint {
    pub n_ctx: usize,
    pub layers: Vec<LayerBytes>,
    /// The input layer; it stays on the CPU.
    pub token_embd: u64,
    /// `output_norm` and `output.weight`; a model that ties its output to the
    /// token embedding counts the embedding again, as llama.cpp copies it to
    /// the output layer's device.
    pub output: u64,
    pub output_tied: bool,
    /// Other tensors outside the layers (rope factor tables): small, and a
    /// copy goes with every device that runs layers.
    pub shared: u64,
    pub scratch: ScratchModel,
}

/// The bytes of every part of the model at context `n_ctx`.
pub fn footprint<S: TensorSource + ?Sized>(
    src: &S,
    hp: &HyperParams,
    n_ctx: usize,
    kv_types: KvTypes,
) -> Footprint {
    let n_layer = hp.n_layer as usize;
    let (dk, dv) = (hp.head_dim_k.unwrap_or(0), hp.head_dim_v.unwrap_or(0));
    let mut layers: Vec<LayerBytes> = (0..n_layer)
        .map(|il| {
            let window = match (hp.swa_layers.get(il), hp.sliding_window) {
                (Some(true), Some(w)) => Some(w as usize),
                _ => None,
            };
            let cells = kv_cells(window, n_ctx) as u64;
            let kv_heads = hp.n_head_kv.get(il).copied().unwrap_or(0);
            LayerBytes {
                weights: 0,
                kv: cells
                    * (row_bytes(kv_types.k, (kv_heads * dk) as usize)
                        + row_bytes(kv_types.v, (kv_heads * dv) as usize))
                        as u64,
                kv_cells: cells,
            }
        })
        .collect();
    let (mut token_embd, mut output, mut output_norm, mut shared) = (0, None, 0, 0);
    for name in src.tensor_names() {
        let size = src.tensor(name).map_or(0, |t| t.bytes.len() as u64);
        match name {
            "token_embd.weight" => token_embd += size,
            "output.weight" => output = Some(size),
            "output_norm.weight" => output_norm += size,
            name => match layer_of(name).and_then(|il| layers.get_mut(il)) {
                Some(l) => l.weights += size,
                None => shared += size,
            },
        }
    }
    Footprint {
        n_ctx,
        layers,
        token_embd,
        output: output_norm + output.unwrap_or(token_embd),
        output_tied: output.is_none(),
        shared,
        scratch: scratch_model(src, hp),
    }
}

/// `blk.{i}.` names a tensor of layer i.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

fn scratch_model<S: TensorSource + ?Sized>(src: &S, hp: &HyperParams) -> ScratchModel {
    let b = MAX_BATCH as u64;
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    let e = hp.n_embd.unwrap_or(0);
    let (dk, dv) = (hp.head_dim_k.unwrap_or(0), hp.head_dim_v.unwrap_or(0));
    let q_dim = max(&hp.n_head) * dk;
    let kv_dim = max(&hp.n_head_kv) * dk.max(dv);
    let n_ff = max(&hp.n_ff);
    let has = |name: &str| src.tensor(name).is_some();
    let mut fused = 0;
    if has("blk.0.attn_qkv.weight") {
        fused = fused.max(q_dim + 2 * kv_dim);
    }
    if has("blk.0.ffn_up.weight") && !has("blk.0.ffn_gate.weight") {
        fused = fused.max(2 * n_ff);
    }
    // The widest activation row any matrix of the model quantises its input
    // to; the token embedding is a matrix only when it doubles as the output.
    let tied = !has("output.weight");
    let act_row = src
        .tensor_names()
        .into_iter()
        .filter_map(|n| src.tensor(n))
        .filter(|t| t.dims.len() >= 2 && (t.name != "token_embd.weight" || tied))
        .map(|t| {
            let cols = t.dims[0];
            ggml::cpu::act_row_bytes(t.format, cols as usize).map_or(cols * F32, |n| n as u64)
        })
        .max()
        .unwrap_or(0);
    ScratchModel {
        input: b * e * F32,
        activations: b * F32 * (2 * e + 2 * q_dim + 2 * kv_dim + 2 * n_ff + fused)
            + b * act_row
            + dk.max(dv) * F32,
        attention_per_cell: b * (F32 + F16),
        attention_fixed: b * dk.max(dv) * F16,
        logits: LOGIT_ROWS as u64 * hp.n_vocab.unwrap_or(0) * F32,
    }
}

impl Footprint {
    pub fn weights_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.weights).sum()
    }

    pub fn kv_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.kv).sum()
    }

    /// Everything, when one device holds it all (the CPU): the file's tensors
    /// once (a tied output is not copied where it already is), the KV cache
    /// and one scratch.
    pub fn total_on_one_device(&self) -> u64 {
        let output = if self.output_tied {
            self.output - self.token_embd
        } else {
            self.output
        };
        let max_cells = self.layers.iter().map(|l| l.kv_cells).max().unwrap_or(0);
        self.token_embd
            + output
            + self.shared
            + self.weights_bytes()
            + self.kv_bytes()
            + self.scratch.bytes(max_cells, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gguf::GgufFile;

    #[test]
    fn window_layers_hold_a_window_and_a_batch() {
        assert_eq!(kv_cells(None, 4096), 4096);
        assert_eq!(kv_cells(Some(512), 4096), 512 + MAX_BATCH);
        assert_eq!(kv_cells(Some(512), 700), 700);
        assert_eq!(layer_of("blk.17.attn_q.weight"), Some(17));
        assert_eq!(layer_of("blk.x.attn_q.weight"), None);
        assert_eq!(layer_of("output.weight"), None);
    }

    /// Gemma 3's pattern: 3 global layers hold the context, 15 local ones
    /// their 512-token window plus a batch (the figure `llm info` showed
    /// before counted the window alone).
    #[test]
    fn kv_of_sliding_window_layers_is_what_a_load_allocates() {
        use crate::format::gguf::{GgufWriter, Value};
        let mut w = GgufWriter::new();
        for (k, v) in [
            ("general.architecture", Value::String("gemma3".into())),
            ("gemma3.block_count", Value::U32(18)),
            ("gemma3.embedding_length", Value::U32(640)),
            ("gemma3.attention.head_count", Value::U32(4)),
            ("gemma3.attention.head_count_kv", Value::U32(1)),
            ("gemma3.attention.key_length", Value::U32(256)),
            ("gemma3.attention.value_length", Value::U32(256)),
            ("gemma3.attention.sliding_window", Value::U32(512)),
        ] {
            w.set(k, v);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.gguf");
        w.write_to(&path).unwrap();
        let file = GgufFile::open(&path).unwrap();
        let hp = HyperParams::from_metadata(file.metadata()).unwrap();
        let per_cell = 512 * 2;
        let fp = footprint(&file, &hp, 4096, KvTypes::F16);
        assert_eq!(fp.kv_bytes(), (3 * 4096 + 15 * 1024) * per_cell);
        assert_eq!(fp.layers[5].kv_cells, 4096);
        assert_eq!(fp.layers[4].kv_cells, 1024);
        // A context shorter than window + batch fills every layer alike.
        assert_eq!(
            footprint(&file, &hp, 700, KvTypes::F16).kv_bytes(),
            18 * 700 * per_cell
        );
        assert_eq!(fp.weights_bytes(), 0);
    }
}
