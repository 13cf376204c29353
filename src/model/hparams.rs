//! Hyper-parameters from GGUF metadata, under llama.cpp's `{arch}.*` keys.

use serde::Serialize;

use crate::format::gguf::{GgufError, Metadata};

/// More layers than any model has; a larger count is a corrupt header, and
/// refusing it keeps per-layer tables small.
const MAX_LAYERS: u64 = 1 << 16;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RopeScaling {
    /// `linear`, `yarn`, `longrope`, ...
    pub kind: String,
    pub factor: Option<f64>,
    pub original_context: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HyperParams {
    pub architecture: String,
    pub n_layer: u64,
    pub n_embd: Option<u64>,
    /// Query heads per layer.
    pub n_head: Vec<u64>,
    /// Key/value heads per layer (GQA/MQA when fewer than `n_head`).
    pub n_head_kv: Vec<u64>,
    pub head_dim_k: Option<u64>,
    pub head_dim_v: Option<u64>,
    /// Feed-forward width per layer.
    pub n_ff: Vec<u64>,
    pub n_ctx_train: Option<u64>,
    pub rope_freq_base: Option<f64>,
    /// Rope base of sliding-window layers, where it differs.
    pub rope_freq_base_swa: Option<f64>,
    pub rope_scaling: Option<RopeScaling>,
    pub sliding_window: Option<u64>,
    /// Which layers attend through the sliding window.
    pub swa_layers: Vec<bool>,
    pub norm_eps: Option<f64>,
    pub n_vocab: Option<u64>,
}

/// Every `n`th layer is global and the rest slide: llama.cpp's default
/// patterns for architectures that interleave them, when the file has none.
fn default_swa_period(arch: &str) -> Option<u64> {
    match arch {
        "gemma2" => Some(2),
        "gemma3" | "gemma3n" => Some(6),
        "cohere2" => Some(4),
        _ => None,
    }
}

impl HyperParams {
    pub fn from_metadata(md: &Metadata) -> Result<HyperParams, GgufError> {
        let architecture = md
            .str("general.architecture")?
            .unwrap_or("unknown")
            .to_string();
        let key = |k: &str| format!("{architecture}.{k}");
        let n_layer = md.u64(&key("block_count"))?.unwrap_or(0);
        if n_layer > MAX_LAYERS {
            return Err(GgufError::new(format!(
                "metadata key '{}' is {n_layer}, more layers than any model has (corrupt header?)",
                key("block_count")
            )));
        }
        let n_embd = md.u64(&key("embedding_length"))?;
        let n_head = md
            .per_layer_u64(&key("attention.head_count"), n_layer)?
            .unwrap_or_default();
        let n_head_kv = md
            .per_layer_u64(&key("attention.head_count_kv"), n_layer)?
            .unwrap_or_else(|| n_head.clone());
        let max_head = n_head.iter().copied().max().filter(|&h| h > 0);
        let default_head_dim = n_embd.zip(max_head).map(|(e, h)| e / h);
        let head_dim_k = md.u64(&key("attention.key_length"))?.or(default_head_dim);
        let head_dim_v = md.u64(&key("attention.value_length"))?.or(default_head_dim);
        let n_ff = md
            .per_layer_u64(&key("feed_forward_length"), n_layer)?
            .unwrap_or_default();
        let rope_scaling = match md.str(&key("rope.scaling.type"))? {
            None | Some("none") => None,
            Some(kind) => Some(RopeScaling {
                kind: kind.to_string(),
                factor: md.f64(&key("rope.scaling.factor"))?,
                original_context: md.u64(&key("rope.scaling.original_context_length"))?,
            }),
        };
        let sliding_window = md.u64(&key("attention.sliding_window"))?.filter(|&w| w > 0);
        let swa_layers = swa_layers(md, &architecture, n_layer, sliding_window)?;
        let norm_eps = match md.f64(&key("attention.layer_norm_rms_epsilon"))? {
            Some(eps) => Some(eps),
            None => md.f64(&key("attention.layer_norm_epsilon"))?,
        };
        let n_vocab = match md.u64(&key("vocab_size"))? {
            Some(n) => Some(n),
            None => md
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len() as u64),
        };
        Ok(HyperParams {
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff,
            n_ctx_train: md.u64(&key("context_length"))?,
            rope_freq_base: md.f64(&key("rope.freq_base"))?,
            rope_freq_base_swa: md.f64(&key("rope.freq_base_swa"))?,
            rope_scaling,
            sliding_window,
            swa_layers,
            norm_eps,
            n_vocab,
            architecture,
        })
    }
}

/// Which layers use the sliding window: the file's own pattern (a period or a
/// per-layer array), else the architecture's default.
fn swa_layers(
    md: &Metadata,
    arch: &str,
    n_layer: u64,
    window: Option<u64>,
) -> Result<Vec<bool>, GgufError> {
    let key = format!("{arch}.attention.sliding_window_pattern");
    if window.is_none() {
        return Ok(vec![false; n_layer as usize]);
    }
    let period = match md.get(&key) {
        Some(v) => match (v.as_u64(), v.as_array()) {
            (Some(p), _) => Some(p),
            (None, Some(array)) if array.len() as u64 == n_layer => {
                return (0..array.len())
                    .map(|i| {
                        array.get(i).and_then(|x| x.as_bool()).ok_or_else(|| {
                            GgufError::new(format!(
                                "metadata key '{key}' should hold bools, found {}",
                                v.type_description()
                            ))
                        })
                    })
                    .collect();
            }
            _ => {
                return Err(GgufError::new(format!(
                    "metadata key '{key}' has type {}, expected a period or {n_layer} bools",
                    v.type_description()
                )))
            }
        },
        None => default_swa_period(arch),
    };
    Ok((0..n_layer)
        .map(|il| match period {
            // As llama.cpp: with period n, the last layer of every n is global.
            Some(0) => true,
            Some(n) => il % n < n - 1,
            None => false,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gguf::{Array, Value};

    fn md(entries: &[(&str, Value)]) -> Metadata {
        let mut m = Metadata::default();
        for (k, v) in entries {
            m.insert(k.to_string(), v.clone());
        }
        m
    }

    #[test]
    fn gemma3_layers_slide_except_every_sixth() {
        let m = md(&[
            ("general.architecture", Value::String("gemma3".into())),
            ("gemma3.block_count", Value::U32(18)),
            ("gemma3.embedding_length", Value::U32(640)),
            ("gemma3.attention.head_count", Value::U32(4)),
            ("gemma3.attention.head_count_kv", Value::U32(1)),
            ("gemma3.attention.key_length", Value::U32(256)),
            ("gemma3.attention.value_length", Value::U32(256)),
            ("gemma3.attention.sliding_window", Value::U32(512)),
        ]);
        let hp = HyperParams::from_metadata(&m).unwrap();
        let global: Vec<usize> = (0..18).filter(|&i| !hp.swa_layers[i]).collect();
        assert_eq!(global, vec![5, 11, 17]);
    }

    #[test]
    fn explicit_pattern_array_wins() {
        let m = md(&[
            ("general.architecture", Value::String("gemma3".into())),
            ("gemma3.block_count", Value::U32(3)),
            ("gemma3.attention.sliding_window", Value::U32(8)),
            (
                "gemma3.attention.sliding_window_pattern",
                Value::Array(Array::Bool(vec![false, true, false])),
            ),
        ]);
        let hp = HyperParams::from_metadata(&m).unwrap();
        assert_eq!(hp.swa_layers, vec![false, true, false]);
    }

    #[test]
    fn per_layer_arrays_and_defaults() {
        let m = md(&[
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(2)),
            ("llama.embedding_length", Value::U64(64)),
            ("llama.attention.head_count", Value::U32(4)),
            (
                "llama.feed_forward_length",
                Value::Array(Array::U32(vec![100, 200])),
            ),
        ]);
        let hp = HyperParams::from_metadata(&m).unwrap();
        assert_eq!(hp.n_head_kv, vec![4, 4]);
        assert_eq!(hp.head_dim_k, Some(16));
        assert_eq!(hp.n_ff, vec![100, 200]);
        assert!(hp.swa_layers.iter().all(|&s| !s));
    }

    #[test]
    fn wrong_types_are_errors() {
        let m = md(&[
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::String("thirty".into())),
        ]);
        let err = HyperParams::from_metadata(&m).unwrap_err().to_string();
        assert_eq!(
            err,
            "metadata key 'llama.block_count' has type string, expected an unsigned integer"
        );
        let m = md(&[
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U64(1 << 40)),
        ]);
        assert!(HyperParams::from_metadata(&m).is_err());
        let m = md(&[
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(3)),
            (
                "llama.attention.head_count",
                Value::Array(Array::U32(vec![1, 2])),
            ),
        ]);
        let err = HyperParams::from_metadata(&m).unwrap_err().to_string();
        assert!(err.contains("2 values for 3 layers"), "{err}");
    }
}
