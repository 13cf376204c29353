//! A Hugging Face folder written from a GGUF file of float weights: the
//! inverse of llama.cpp's converter. Names go back to the Hugging Face ones,
//! llama's Q and K rows back to rotate-half order, Gemma 3's norms lose the
//! 1 the converter adds, and what GGUF keeps as metadata or rope-factor
//! tensors goes into config.json as transformers writes it. Tests require
//! the same logits from the folder as from the file, for every
//! architecture, so the folder reader is checked where no real folder of
//! that architecture is at hand.

use std::path::Path;

use ggml::GgmlType;
use serde_json::{json, Value as Json};

use super::gguf::{GgufFile, Metadata};
use super::hf_names::hf_names;
use super::safetensors::{self, Dtype};
use crate::model::HyperParams;

/// Hugging Face `model_type` and class for our architecture; llama files
/// may also be written as a Mistral folder (the same network).
fn model_type(arch: &str, mistral: bool) -> Option<(&'static str, &'static str)> {
    Some(match arch {
        "llama" if mistral => ("mistral", "MistralForCausalLM"),
        "llama" => ("llama", "LlamaForCausalLM"),
        "qwen2" => ("qwen2", "Qwen2ForCausalLM"),
        "qwen3" => ("qwen3", "Qwen3ForCausalLM"),
        "gemma3" => ("gemma3_text", "Gemma3ForCausalLM"),
        "phi3" => ("phi3", "Phi3ForCausalLM"),
        _ => return None,
    })
}

/// Writes `dir` from `file`: config.json, a WordLevel tokenizer.json of the
/// same size as the vocabulary, tokenizer_config.json and
/// model.safetensors. `mistral` names a llama file's folder Mistral.
pub fn write_folder_from_gguf(file: &GgufFile, dir: &Path, mistral: bool) -> Result<(), String> {
    let md = file.metadata();
    let hp = HyperParams::from_metadata(md).map_err(|e| e.to_string())?;
    let arch = hp.architecture.as_str();
    let (model_type, class) =
        model_type(arch, mistral).ok_or_else(|| format!("no folder for architecture '{arch}'"))?;
    let n_vocab = file
        .tensor_info("token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
        .ok_or("no token_embd.weight")? as usize;

    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut factors: [Option<Vec<f32>>; 2] = [None, None];
    for info in file.tensors() {
        let data = file.tensor_data(info);
        match info.name.as_str() {
            "rope_factors_short.weight" => factors[0] = Some(f32s(data)),
            "rope_factors_long.weight" => factors[1] = Some(f32s(data)),
            "rope_freqs.weight" => {
                return Err(
                    "rope_freqs.weight: Llama-3 rope goes into config.json as its \
                     parameters, which a file does not keep"
                        .into(),
                )
            }
            name => {
                let hf = hf_names(arch, name)
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("{name}: no Hugging Face name"))?;
                let dtype = match info.ty {
                    GgmlType::F32 => Dtype::F32,
                    GgmlType::F16 => Dtype::F16,
                    GgmlType::BF16 => Dtype::BF16,
                    other => return Err(format!("{name}: {other} is not a float type")),
                };
                let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
                let mut bytes = data.to_vec();
                let heads = match name.rsplit('.').nth(1) {
                    Some("attn_q") => Some(hp.n_head[0]),
                    Some("attn_k") => Some(hp.n_head_kv[0]),
                    _ => None,
                };
                if let (Some(heads), "llama") = (heads, arch) {
                    bytes = rotate_half_rows(&bytes, heads as usize, shape[0], dtype);
                }
                if arch == "gemma3" && name.ends_with("norm.weight") {
                    if dtype != Dtype::F32 {
                        return Err(format!("{name}: a Gemma norm that is not F32"));
                    }
                    let less_one: Vec<f32> = f32s(&bytes).iter().map(|v| v - 1.0).collect();
                    bytes = less_one.iter().flat_map(|v| v.to_le_bytes()).collect();
                }
                tensors.push((hf, dtype, shape, bytes));
            }
        }
    }
    let tied = file.tensor_info("output.weight").is_none();
    let config = config_json(md, &hp, (model_type, class), n_vocab, tied, &factors)?;

    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let pretty = |v: &Json| serde_json::to_vec_pretty(v).expect("JSON");
    std::fs::write(dir.join("config.json"), pretty(&config)).map_err(io)?;
    let tokenizer = super::folder_writer::tokenizer_json(n_vocab);
    std::fs::write(dir.join("tokenizer.json"), pretty(&tokenizer)).map_err(io)?;
    let tc = json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true});
    std::fs::write(dir.join("tokenizer_config.json"), pretty(&tc)).map_err(io)?;
    let mut out = safetensors::header(
        tensors
            .iter()
            .map(|(n, d, s, _)| (n.as_str(), *d, s.as_slice())),
    );
    for (_, _, _, bytes) in &tensors {
        out.extend_from_slice(bytes);
    }
    std::fs::write(dir.join("model.safetensors"), out).map_err(io)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// llama.cpp's converter stores each head's rows of Q and K interleaved
/// (row 2i + j of a head holds the rotate-half row j * head_dim/2 + i); this
/// puts them back.
fn rotate_half_rows(bytes: &[u8], heads: usize, rows: usize, dtype: Dtype) -> Vec<u8> {
    let row = bytes.len() / rows;
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = h * head_dim + 2 * i + j;
                let to = h * head_dim + j * half + i;
                out[to * row..(to + 1) * row].copy_from_slice(&bytes[from * row..(from + 1) * row]);
            }
        }
    }
    debug_assert_eq!(row % dtype.size() as usize, 0);
    out
}

fn config_json(
    md: &Metadata,
    hp: &HyperParams,
    (model_type, class): (&str, &str),
    n_vocab: usize,
    tied: bool,
    factors: &[Option<Vec<f32>>; 2],
) -> Result<Json, String> {
    let arch = hp.architecture.as_str();
    let key = |k: &str| format!("{arch}.{k}");
    let n_embd = hp.n_embd.ok_or("no embedding length")?;
    let n_head = hp.n_head[0];
    let head_dim = hp.head_dim_k.unwrap_or(n_embd / n_head);
    let bos = md.u64("tokenizer.ggml.bos_token_id").ok().flatten();
    let eos = md.u64("tokenizer.ggml.eos_token_id").ok().flatten();
    let mut c = json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": n_embd,
        "intermediate_size": hp.n_ff[0],
        "num_hidden_layers": hp.n_layer,
        "num_attention_heads": n_head,
        "num_key_value_heads": hp.n_head_kv[0],
        "head_dim": head_dim,
        "vocab_size": n_vocab,
        "rms_norm_eps": hp.norm_eps.unwrap_or(1e-5),
        "rope_theta": hp.rope_freq_base.unwrap_or(10000.0),
        "max_position_embeddings": hp.n_ctx_train.unwrap_or(4096),
        "tie_word_embeddings": tied,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float16"
    });
    if let Some(s) = &hp.rope_scaling {
        let mut r = json!({"rope_type": s.kind, "factor": s.factor.unwrap_or(1.0)});
        if let Some(n) = s.original_context {
            r["original_max_position_embeddings"] = json!(n);
        }
        c["rope_scaling"] = r;
    }
    if let [Some(short), Some(long)] = factors {
        let orig = md
            .u64(&key("rope.scaling.original_context_length"))
            .ok()
            .flatten()
            .ok_or("LongRoPE factors without an original context length")?;
        let mut r = json!({"type": "longrope", "short_factor": short, "long_factor": long});
        if let Some(f) = md.f64(&key("rope.scaling.attn_factor")).ok().flatten() {
            r["attention_factor"] = json!(f);
        }
        c["rope_scaling"] = r;
        c["original_max_position_embeddings"] = json!(orig);
    }
    if arch == "gemma3" {
        c["rope_local_base_freq"] = json!(hp.rope_freq_base_swa.unwrap_or(10000.0));
        c["query_pre_attn_scalar"] = json!(head_dim);
    }
    if let Some(w) = hp.sliding_window {
        c["sliding_window"] = json!(w);
        if arch != "gemma3" {
            c["use_sliding_window"] = json!(true);
        }
        let types: Vec<&str> = hp
            .swa_layers
            .iter()
            .map(|&s| {
                if s {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        c["layer_types"] = json!(types);
    } else if model_type == "mistral" {
        c["sliding_window"] = Json::Null;
    }
    // A folder has no way to say that rope covers part of a head.
    if let Some(n) = md.u64(&key("rope.dimension_count")).ok().flatten() {
        if n != head_dim {
            return Err(format!(
                "{}: partial rope is not written",
                key("rope.dimension_count")
            ));
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_half_rows_undoes_the_converters_interleave() {
        // Two heads of four rows, one byte a row: the converter's order of a
        // head is [0, 2, 1, 3] in rotate-half rows.
        let gguf = [0u8, 2, 1, 3, 4, 6, 5, 7];
        let hf = rotate_half_rows(&gguf, 2, 8, Dtype::U8);
        assert_eq!(hf, [0, 1, 2, 3, 4, 5, 6, 7]);
    }
}
