//! A Hugging Face model folder as a tensor source under our (GGUF) names:
//! plain F16/BF16/F32 weights straight from the mapping, GPTQ, AWQ and EXL2
//! linear layers re-encoded once at open as ggml blocks without loss
//! (group_blocks.rs; dequantised to f16 where blocks cannot hold them), and
//! the config read as GGUF-style metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ggml::backend::WeightFormat;
use ggml::GgmlType;
use serde_json::Value as Json;

use super::awq::AwqLinear;
use super::exl2::Exl2Linear;
use super::gguf::{Metadata, Value};
use super::gptq::{GptqConfig, GptqLinear, ZeroFormat};
use super::group_blocks::{self, GroupCodes};
use super::hf_config;
use super::hf_names::hf_names;
use super::safetensors::{Checkpoint, Dtype};
use super::{TensorRef, TensorSource};

enum Bytes {
    /// In the checkpoint, under this name.
    Mapped(String),
    /// Re-encoded or dequantised at open.
    Owned(Vec<u8>),
}

struct Stored {
    name: String,
    format: WeightFormat,
    /// Contiguous dimension first, as GGUF.
    dims: Vec<u64>,
    bytes: Bytes,
    input_order: Option<Vec<u32>>,
}

pub struct ModelFolder {
    dir: PathBuf,
    pub metadata: Metadata,
    /// `gptq`, `exl2`, or None for plain weights.
    pub quant_method: Option<String>,
    checkpoint: Checkpoint,
    tensors: HashMap<String, Stored>,
}

fn read_json(path: &Path) -> Result<Json, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))
}

/// Our tensor names a model of `n_layer` layers may have.
fn our_names(n_layer: u64) -> Vec<String> {
    let mut names: Vec<String> = ["token_embd.weight", "output_norm.weight", "output.weight"]
        .map(String::from)
        .to_vec();
    const STEMS: [&str; 17] = [
        "attn_norm.weight",
        "attn_q.weight",
        "attn_q.bias",
        "attn_k.weight",
        "attn_k.bias",
        "attn_v.weight",
        "attn_v.bias",
        "attn_qkv.weight",
        "attn_output.weight",
        "attn_q_norm.weight",
        "attn_k_norm.weight",
        "post_attention_norm.weight",
        "ffn_norm.weight",
        "post_ffw_norm.weight",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_down.weight",
    ];
    for i in 0..n_layer {
        names.extend(STEMS.iter().map(|s| format!("blk.{i}.{s}")));
    }
    names
}

/// The folder's chat template, where transformers keeps it: a
/// `chat_template.jinja` file, `chat_template` in `chat_template.json`, or
/// in `tokenizer_config.json` (a string, or a list of named templates of
/// which "default" is the one).
fn chat_template(dir: &Path) -> Result<Option<String>, String> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| format!("{}: cannot read it: {e}", jinja.display()));
    }
    for name in ["chat_template.json", "tokenizer_config.json"] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let found = match read_json(&path)?.get("chat_template") {
            Some(Json::String(t)) => Some(t.clone()),
            Some(Json::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                .or_else(|| named.first())
                .and_then(|t| t.get("template"))
                .and_then(Json::as_str)
                .map(str::to_string),
            _ => None,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn u16s(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// An F32 vector made at open (not in the checkpoint).
fn f32_vector(name: &str, values: Vec<f32>) -> Stored {
    Stored {
        name: name.to_string(),
        format: WeightFormat::Ggml(GgmlType::F32),
        dims: vec![values.len() as u64],
        bytes: Bytes::Owned(values.into_iter().flat_map(f32::to_le_bytes).collect()),
        input_order: None,
    }
}

fn f16_bytes(w: Vec<u16>) -> Vec<u8> {
    w.into_iter().flat_map(u16::to_le_bytes).collect()
}

impl ModelFolder {
    pub fn open(dir: &Path) -> Result<ModelFolder, String> {
        let config = read_json(&dir.join("config.json"))?;
        let quantize_config = dir.join("quantize_config.json");
        let quantize_config = quantize_config
            .is_file()
            .then(|| read_json(&quantize_config))
            .transpose()?;
        let in_dir = |e: String| format!("{}: {e}", dir.display());
        let mut metadata = hf_config::metadata(&config).map_err(in_dir)?;
        if let Some(t) = chat_template(dir)? {
            metadata.insert("tokenizer.chat_template".into(), Value::String(t));
        }
        let quant_method =
            hf_config::quant_method(&config, quantize_config.as_ref()).map_err(in_dir)?;
        let arch = metadata
            .str("general.architecture")
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string();
        let n_layer = metadata
            .u64(&format!("{arch}.block_count"))
            .ok()
            .flatten()
            .unwrap_or(0);
        let checkpoint = Checkpoint::open(dir).map_err(|e| e.to_string())?;
        let qc = config
            .get("quantization_config")
            .or(quantize_config.as_ref());
        let gptq = match quant_method.as_deref() {
            Some("gptq") => {
                let q = qc.expect("a method implies its config");
                let bits = q
                    .get("bits")
                    .and_then(Json::as_u64)
                    .ok_or_else(|| in_dir("GPTQ config without 'bits'".into()))?;
                let zeros = match q.get("checkpoint_format").and_then(Json::as_str) {
                    Some("gptq_v2") => ZeroFormat::V2,
                    None | Some("gptq") => ZeroFormat::V1,
                    Some(other) => {
                        return Err(in_dir(format!(
                            "GPTQ checkpoint format '{other}' is not supported (gptq, gptq_v2)"
                        )))
                    }
                };
                Some(GptqConfig {
                    bits: bits as u32,
                    zeros,
                })
            }
            _ => None,
        };
        let awq = match (quant_method.as_deref(), qc) {
            (Some("awq"), Some(q)) => {
                let version = q
                    .get("version")
                    .or_else(|| q.get("format"))
                    .and_then(Json::as_str)
                    .unwrap_or("gemm");
                if !version.eq_ignore_ascii_case("gemm") {
                    return Err(in_dir(format!(
                        "AWQ version '{version}' is not supported (gemm)"
                    )));
                }
                let bits = q
                    .get("bits")
                    .or_else(|| q.get("w_bit"))
                    .and_then(Json::as_u64)
                    .ok_or_else(|| in_dir("AWQ config without 'bits'".into()))?;
                Some(bits)
            }
            _ => None,
        };
        let mut tensors = HashMap::new();
        for ours in our_names(n_layer) {
            let candidates = hf_names(&arch, &ours);
            let plain = candidates.iter().find_map(|n| c_tensor(&checkpoint, n));
            if let Some((name, dtype, shape)) = plain {
                let ty = match dtype {
                    Dtype::F16 => GgmlType::F16,
                    Dtype::BF16 => GgmlType::BF16,
                    Dtype::F32 => GgmlType::F32,
                    other => {
                        return Err(format!(
                            "{}: tensor '{name}' is {}, not a float type",
                            dir.display(),
                            other.name()
                        ))
                    }
                };
                let dims: Vec<u64> = shape.iter().rev().copied().collect();
                tensors.insert(
                    ours.clone(),
                    Stored {
                        name,
                        format: WeightFormat::Ggml(ty),
                        dims,
                        bytes: Bytes::Mapped(ours.clone()),
                        input_order: None,
                    },
                );
                continue;
            }
            for hf in &candidates {
                let Some(prefix) = hf.strip_suffix(".weight") else {
                    continue;
                };
                let packed = checkpoint.tensor(&format!("{prefix}.qweight")).is_some();
                let encoded = if let (Some(bits), true) = (awq, packed) {
                    let l =
                        AwqLinear::from_checkpoint(&checkpoint, prefix, bits).map_err(in_dir)?;
                    as_blocks(&l, || l.dequantize_f16())
                } else if let (Some(cfg), true) = (
                    gptq,
                    checkpoint.tensor(&format!("{prefix}.qweight")).is_some(),
                ) {
                    let l =
                        GptqLinear::from_checkpoint(&checkpoint, prefix, cfg).map_err(in_dir)?;
                    as_blocks(&l, || l.dequantize_f16())
                } else if let Some((qw, _)) = checkpoint.tensor(&format!("{prefix}.q_weight")) {
                    // EXL2 pads the outputs to 32; our dimensions are multiples of it.
                    let out = qw.shape.get(1).copied().unwrap_or(0) as usize;
                    let l =
                        Exl2Linear::from_checkpoint(&checkpoint, prefix, out).map_err(in_dir)?;
                    as_blocks(&l, || l.dequantize_f16())
                } else {
                    continue;
                };
                tensors.insert(
                    ours.clone(),
                    Stored {
                        name: hf.clone(),
                        format: encoded.format,
                        dims: encoded.dims,
                        bytes: Bytes::Owned(encoded.bytes),
                        input_order: encoded.input_order,
                    },
                );
                break;
            }
        }
        for i in 0..n_layer {
            feed_down_in_its_order(&mut tensors, i, arch == "phi3");
        }
        for (name, values) in hf_config::rope_factor_tensors(&config).map_err(in_dir)? {
            tensors.insert(name.to_string(), f32_vector(name, values));
        }
        if arch == "gemma3" {
            // Gemma's RMS norms scale by 1 + w; GGUF files (and our forward
            // pass) keep 1 + w.
            for (ours, s) in tensors.iter_mut() {
                if !ours.ends_with("norm.weight") {
                    continue;
                }
                let bytes = checkpoint.tensor(&s.name).map(|(_, b)| b).unwrap_or(&[]);
                let values: Vec<f32> = match s.format.ggml() {
                    GgmlType::F32 => bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    GgmlType::F16 => u16s(bytes).map(ggml::float16::f16_to_f32).collect(),
                    GgmlType::BF16 => u16s(bytes).map(ggml::float16::bf16_to_f32).collect(),
                    _ => continue,
                };
                let name = std::mem::take(&mut s.name);
                *s = f32_vector(&name, values.into_iter().map(|w| 1.0 + w).collect());
            }
        }
        // Mapped entries remember the checkpoint name, not ours.
        for s in tensors.values_mut() {
            if let Bytes::Mapped(n) = &mut s.bytes {
                *n = s.name.clone();
            }
        }
        Ok(ModelFolder {
            dir: dir.to_path_buf(),
            metadata,
            quant_method,
            checkpoint,
            tensors,
        })
    }

    /// Rows of the token embedding: the vocabulary size.
    pub fn n_vocab(&self) -> Option<usize> {
        self.tensors
            .get("token_embd.weight")
            .and_then(|t| t.dims.get(1))
            .map(|&n| n as usize)
    }
}

/// Where a layer's down projection keeps its inputs in an order of its own
/// (act-order GPTQ, EXL2), the gate and up projections' rows go into that
/// order instead: their product then arrives as the down projection reads
/// it, and no backend gathers it. Only rows move, so every product is the
/// same. phi3's fused gate_up holds gate then up, each reordered alike.
fn feed_down_in_its_order(tensors: &mut HashMap<String, Stored>, layer: u64, fused: bool) {
    let name = |t: &str| format!("blk.{layer}.{t}.weight");
    let Some(order) = tensors
        .get(&name("ffn_down"))
        .and_then(|d| d.input_order.clone())
    else {
        return;
    };
    let feeders: &[&str] = if fused {
        &["ffn_up"]
    } else {
        &["ffn_gate", "ffn_up"]
    };
    let n = order.len();
    let fits = |s: &Stored| {
        let rows = s.dims.get(1).copied().unwrap_or(0) as usize;
        matches!(s.bytes, Bytes::Owned(_)) && rows == if fused { 2 * n } else { n }
    };
    if !feeders
        .iter()
        .all(|f| tensors.get(&name(f)).is_some_and(fits))
    {
        return;
    }
    for f in feeders {
        let s = tensors.get_mut(&name(f)).expect("checked");
        let Bytes::Owned(bytes) = &mut s.bytes else {
            unreachable!("checked")
        };
        let rows = s.dims[1] as usize;
        let row = bytes.len() / rows;
        let mut moved = vec![0u8; bytes.len()];
        for half in 0..rows / n {
            for (j, &from) in order.iter().enumerate() {
                let (to, from) = (half * n + j, half * n + from as usize);
                moved[to * row..(to + 1) * row]
                    .copy_from_slice(&bytes[from * row..(from + 1) * row]);
            }
        }
        *bytes = moved;
    }
    tensors
        .get_mut(&name("ffn_down"))
        .expect("checked")
        .input_order = None;
}

/// A quantised layer as blocks, or as f16 where blocks cannot hold it.
fn as_blocks(l: &(dyn GroupCodes + Sync), f16: impl FnOnce() -> Vec<u16>) -> Blocks {
    let dims = vec![l.in_features() as u64, l.out_features() as u64];
    match group_blocks::encode(l) {
        Some(e) => Blocks {
            format: WeightFormat::Grouped(e.ty),
            dims,
            bytes: e.bytes,
            input_order: e.input_order,
        },
        None => Blocks {
            format: WeightFormat::Ggml(GgmlType::F16),
            dims,
            bytes: f16_bytes(f16()),
            input_order: None,
        },
    }
}

struct Blocks {
    format: WeightFormat,
    dims: Vec<u64>,
    bytes: Vec<u8>,
    input_order: Option<Vec<u32>>,
}

fn c_tensor(c: &Checkpoint, name: &str) -> Option<(String, Dtype, Vec<u64>)> {
    c.tensor(name)
        .map(|(t, _)| (t.name.clone(), t.dtype, t.shape.clone()))
}

impl TensorSource for ModelFolder {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn tensor(&self, name: &str) -> Option<TensorRef<'_>> {
        let s = self.tensors.get(name)?;
        let bytes = match &s.bytes {
            Bytes::Mapped(n) => self.checkpoint.tensor(n)?.1,
            Bytes::Owned(b) => b.as_slice(),
        };
        Some(TensorRef {
            name: &s.name,
            format: s.format,
            dims: &s.dims,
            bytes,
            input_order: s.input_order.as_deref(),
        })
    }

    fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_templates_where_transformers_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tokenizer_config.json");
        assert_eq!(chat_template(dir.path()), Ok(None));
        std::fs::write(&config, r#"{"bos_token": "<s>"}"#).unwrap();
        assert_eq!(chat_template(dir.path()), Ok(None));
        std::fs::write(&config, r#"{"chat_template": "A{{ x }}"}"#).unwrap();
        assert_eq!(chat_template(dir.path()), Ok(Some("A{{ x }}".into())));
        std::fs::write(
            &config,
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        )
        .unwrap();
        assert_eq!(chat_template(dir.path()), Ok(Some("D".into())));
        std::fs::write(
            dir.path().join("chat_template.json"),
            r#"{"chat_template": "J"}"#,
        )
        .unwrap();
        assert_eq!(chat_template(dir.path()), Ok(Some("J".into())));
        std::fs::write(dir.path().join("chat_template.jinja"), "F").unwrap();
        assert_eq!(chat_template(dir.path()), Ok(Some("F".into())));
        std::fs::write(dir.path().join("chat_template.jinja"), [0xff, 0xfe]).unwrap();
        assert!(chat_template(dir.path()).is_err());
    }
}
