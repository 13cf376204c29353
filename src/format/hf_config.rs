//! A Hugging Face `config.json` read into the GGUF metadata keys llama.cpp's
//! converter would write (`general.architecture`, `{arch}.block_count`, ...),
//! so that a model folder meets the same hyper-parameter reader, planner and
//! forward pass as a GGUF file. Both the old top-level `rope_theta` /
//! `rope_scaling` and transformers 5's `rope_parameters` are read; Gemma 3
//! folders may say `gemma3_text` or nest the text model under `text_config`.

use serde_json::{Map, Value as Json};

use super::gguf::{Array, Metadata, Value};

/// Hugging Face `model_type` -> our architecture name.
fn architecture(model_type: &str) -> Option<&'static str> {
    Some(match model_type {
        "llama" | "mistral" => "llama",
        "qwen2" => "qwen2",
        "qwen3" => "qwen3",
        "gemma3" | "gemma3_text" => "gemma3",
        "phi3" => "phi3",
        _ => return None,
    })
}

/// The quantisation a folder declares (`quantization_config.quant_method`,
/// or a `quantize_config.json` beside it); None for plain weights.
pub fn quant_method(
    config: &Json,
    quantize_config: Option<&Json>,
) -> Result<Option<String>, String> {
    let method = config
        .get("quantization_config")
        .or(quantize_config)
        .map(|q| {
            q.get("quant_method")
                .and_then(Json::as_str)
                .unwrap_or("gptq")
                .to_string()
        });
    match method.as_deref() {
        None | Some("gptq" | "awq" | "exl2") => Ok(method),
        Some(other) => Err(format!(
            "quantization method '{other}' is not supported (gptq, awq, exl2)"
        )),
    }
}

/// The metadata of a `config.json`.
pub fn metadata(config: &Json) -> Result<Metadata, String> {
    let top = config
        .as_object()
        .ok_or("config.json is not a JSON object")?;
    let model_type = top
        .get("model_type")
        .and_then(Json::as_str)
        .ok_or("config.json has no 'model_type'")?;
    let arch = architecture(model_type).ok_or_else(|| {
        format!("architecture '{model_type}' is not supported (llama, mistral, qwen2, qwen3, gemma3, phi3)")
    })?;
    let c = text_config(top);
    let uint = |k: &str| c.get(k).and_then(Json::as_u64);
    let float = |k: &str| c.get(k).and_then(Json::as_f64);
    let need = |k: &str| uint(k).ok_or_else(|| format!("config.json has no whole number '{k}'"));
    let mut md = Metadata::default();
    let mut put = |k: &str, v: Value| {
        md.insert(
            if k.starts_with("general.") {
                k.to_string()
            } else {
                format!("{arch}.{k}")
            },
            v,
        );
    };
    put("general.architecture", Value::String(arch.to_string()));
    let n_layer = need("num_hidden_layers")?;
    let n_embd = need("hidden_size")?;
    let n_head = need("num_attention_heads")?;
    if n_head == 0 || n_layer == 0 {
        return Err("config.json has no layers or no attention heads".to_string());
    }
    put("block_count", Value::U64(n_layer));
    put("embedding_length", Value::U64(n_embd));
    put("attention.head_count", Value::U64(n_head));
    put(
        "attention.head_count_kv",
        Value::U64(uint("num_key_value_heads").unwrap_or(n_head)),
    );
    put(
        "feed_forward_length",
        Value::U64(need("intermediate_size")?),
    );
    if let Some(d) = uint("head_dim") {
        put("attention.key_length", Value::U64(d));
        put("attention.value_length", Value::U64(d));
    }
    if arch == "gemma3" {
        // The forward pass scales queries as llama.cpp does (model::config):
        // by the width per head for the 62-layer 27B, else by the head size.
        let head_dim = uint("head_dim").unwrap_or(n_embd / n_head);
        let ours = if n_layer == 62 {
            n_embd / n_head
        } else {
            head_dim
        };
        if let Some(q) = float("query_pre_attn_scalar") {
            if q != ours as f64 {
                return Err(format!(
                    "query_pre_attn_scalar {q} is not supported for this shape ({ours})"
                ));
            }
        }
    }
    if let Some(n) = uint("max_position_embeddings") {
        put("context_length", Value::U64(n));
    }
    if let Some(n) = uint("vocab_size") {
        put("vocab_size", Value::U64(n));
    }
    if let Some(eps) = float("rms_norm_eps") {
        put("attention.layer_norm_rms_epsilon", Value::F64(eps));
    }
    // Rope: transformers 5 nests it (for Gemma 3 per attention kind).
    let params = c.get("rope_parameters").and_then(Json::as_object);
    let (global, local) = match params {
        Some(p) if p.contains_key("full_attention") => (
            p.get("full_attention").and_then(Json::as_object),
            p.get("sliding_attention").and_then(Json::as_object),
        ),
        Some(p) => (Some(p), None),
        None => (None, None),
    };
    let theta = global
        .and_then(|p| p.get("rope_theta"))
        .and_then(Json::as_f64)
        .or_else(|| float("rope_theta"));
    if let Some(t) = theta {
        put("rope.freq_base", Value::F64(t));
    }
    let local_theta = local
        .and_then(|p| p.get("rope_theta"))
        .and_then(Json::as_f64)
        .or_else(|| float("rope_local_base_freq"));
    if let Some(t) = local_theta {
        put("rope.freq_base_swa", Value::F64(t));
    }
    if let Some(s) = rope_scaling(c) {
        let kind = scaling_kind(s);
        match kind {
            // Frequency factors, as tensors (rope_factor_tensors), and for
            // LongRoPE the context it was trained at and its attention factor.
            "llama3" => {}
            "longrope" | "su" => {
                let orig = s
                    .get("original_max_position_embeddings")
                    .and_then(Json::as_u64)
                    .or_else(|| uint("original_max_position_embeddings"))
                    .ok_or("LongRoPE without 'original_max_position_embeddings'")?;
                put("rope.scaling.original_context_length", Value::U64(orig));
                let attn = match s.get("attention_factor").and_then(Json::as_f64) {
                    Some(f) => f,
                    None => {
                        let scale = uint("max_position_embeddings").unwrap_or(orig) as f64
                            / orig.max(1) as f64;
                        if scale <= 1.0 || orig <= 1 {
                            1.0
                        } else {
                            (1.0 + scale.ln() / (orig as f64).ln()).sqrt()
                        }
                    }
                };
                put("rope.scaling.attn_factor", Value::F64(attn));
            }
            _ => {
                put("rope.scaling.type", Value::String(kind.to_string()));
                if let Some(f) = s.get("factor").and_then(Json::as_f64) {
                    put("rope.scaling.factor", Value::F64(f));
                }
                if let Some(n) = s
                    .get("original_max_position_embeddings")
                    .and_then(Json::as_u64)
                {
                    put("rope.scaling.original_context_length", Value::U64(n));
                }
            }
        }
    }
    // Sliding windows: Gemma 3 always (its pattern or per-layer types);
    // Qwen 2 and Mistral only when the config switches them on.
    let window = uint("sliding_window").filter(|&w| w > 0);
    let uses_window = match arch {
        "gemma3" => true,
        _ => c
            .get("use_sliding_window")
            .and_then(Json::as_bool)
            .unwrap_or(model_type == "mistral"),
    };
    if let (Some(w), true) = (window, uses_window) {
        put("attention.sliding_window", Value::U64(w));
        if let Some(types) = c.get("layer_types").and_then(Json::as_array) {
            let sliding: Vec<bool> = types
                .iter()
                .map(|t| t.as_str() == Some("sliding_attention"))
                .collect();
            if sliding.len() as u64 != n_layer {
                return Err(format!(
                    "config.json lists {} layer types for {n_layer} layers",
                    sliding.len()
                ));
            }
            put(
                "attention.sliding_window_pattern",
                Value::Array(Array::Bool(sliding)),
            );
        } else if let Some(p) = uint("sliding_window_pattern") {
            put("attention.sliding_window_pattern", Value::U64(p));
        }
    }
    Ok(md)
}

/// The text model's settings: Gemma 3's multimodal config nests them.
fn text_config(top: &Map<String, Json>) -> &Map<String, Json> {
    match top.get("text_config").and_then(Json::as_object) {
        Some(text) if top.get("model_type").and_then(Json::as_str) == Some("gemma3") => text,
        _ => top,
    }
}

/// Rope scaling other than the default: transformers 5's `rope_parameters`
/// (the full-attention one where it is split by attention kind), or the
/// older `rope_scaling`.
fn rope_scaling(c: &Map<String, Json>) -> Option<&Map<String, Json>> {
    let params = c.get("rope_parameters").and_then(Json::as_object);
    let global = match params {
        Some(p) if p.contains_key("full_attention") => {
            p.get("full_attention").and_then(Json::as_object)
        }
        other => other,
    };
    global
        .filter(|p| {
            p.get("rope_type")
                .and_then(Json::as_str)
                .is_some_and(|t| t != "default")
        })
        .or_else(|| c.get("rope_scaling").and_then(Json::as_object))
        .filter(|s| scaling_kind(s) != "default")
}

fn scaling_kind(s: &Map<String, Json>) -> &str {
    s.get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("linear")
}

/// The rope frequency factors a config implies, as the F32 tensors a GGUF
/// file would carry: Llama 3's `rope_freqs.weight` (computed as llama.cpp's
/// converter does) and Phi-3's LongRoPE `rope_factors_short/long.weight`.
pub fn rope_factor_tensors(config: &Json) -> Result<Vec<(&'static str, Vec<f32>)>, String> {
    let Some(top) = config.as_object() else {
        return Ok(Vec::new());
    };
    let c = text_config(top);
    let Some(s) = rope_scaling(c) else {
        return Ok(Vec::new());
    };
    let n_embd = c.get("hidden_size").and_then(Json::as_u64).unwrap_or(0);
    let n_head = c
        .get("num_attention_heads")
        .and_then(Json::as_u64)
        .unwrap_or(1)
        .max(1);
    let head_dim = c
        .get("head_dim")
        .and_then(Json::as_u64)
        .unwrap_or(n_embd / n_head) as usize;
    let f = |k: &str, default: f64| s.get(k).and_then(Json::as_f64).unwrap_or(default);
    match scaling_kind(s) {
        "llama3" => {
            let theta = s
                .get("rope_theta")
                .or_else(|| c.get("rope_theta"))
                .and_then(Json::as_f64)
                .unwrap_or(10000.0);
            Ok(vec![(
                "rope_freqs.weight",
                llama3_rope_factors(
                    head_dim,
                    theta,
                    f("factor", 8.0),
                    f("low_freq_factor", 1.0),
                    f("high_freq_factor", 4.0),
                    f("original_max_position_embeddings", 8192.0),
                ),
            )])
        }
        "longrope" | "su" => {
            let list = |k: &str| -> Result<Vec<f32>, String> {
                let v: Vec<f32> = s
                    .get(k)
                    .and_then(Json::as_array)
                    .ok_or_else(|| format!("LongRoPE without '{k}'"))?
                    .iter()
                    .map(|x| x.as_f64().map(|x| x as f32))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("LongRoPE '{k}' is not a list of numbers"))?;
                if v.len() != head_dim / 2 {
                    return Err(format!(
                        "LongRoPE '{k}' has {} factors for a head of {head_dim}",
                        v.len()
                    ));
                }
                Ok(v)
            };
            Ok(vec![
                ("rope_factors_short.weight", list("short_factor")?),
                ("rope_factors_long.weight", list("long_factor")?),
            ])
        }
        _ => Ok(Vec::new()),
    }
}

/// Llama 3's frequency factors: 1 for wavelengths below the original
/// context / `high`, `factor` above context / `low`, a smooth blend between.
/// As llama.cpp's converter: frequencies in f32, the blend in f64.
fn llama3_rope_factors(
    head_dim: usize,
    theta: f64,
    factor: f64,
    low: f64,
    high: f64,
    orig: f64,
) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (orig / low, orig / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor as f32
            } else {
                let smooth = (orig / wavelen - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::HyperParams;

    fn hp(config: Json) -> HyperParams {
        HyperParams::from_metadata(&metadata(&config).unwrap()).unwrap()
    }

    #[test]
    fn the_fixture_config_reads_with_transformers_5_rope() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/tiny-llama-fp16/config.json");
        let Ok(text) = std::fs::read(&path) else {
            eprintln!("skipped: {} is not there", path.display());
            return;
        };
        let h = hp(serde_json::from_slice(&text).unwrap());
        assert_eq!(h.architecture, "llama");
        assert_eq!((h.n_layer, h.n_embd), (4, Some(256)));
        assert_eq!(
            (h.n_head[0], h.n_head_kv[0], h.head_dim_k),
            (8, 4, Some(32))
        );
        assert_eq!(
            (h.n_ff[0], h.n_vocab, h.n_ctx_train),
            (768, Some(1024), Some(2048))
        );
        assert_eq!(
            (h.rope_freq_base, h.norm_eps, h.rope_scaling),
            (Some(10000.0), Some(1e-5), None)
        );
    }

    #[test]
    fn old_style_llama3_rope_scaling() {
        let h = hp(
            json!({"model_type": "llama", "num_hidden_layers": 16, "hidden_size": 2048,
            "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8192,
            "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "vocab_size": 128256, "head_dim": 64,
            "max_position_embeddings": 131072,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"}}),
        );
        assert_eq!(h.rope_freq_base, Some(500000.0));
        // As a GGUF file: no scaling keys, frequency factors as a tensor.
        assert_eq!(h.rope_scaling, None);
        assert_eq!(h.head_dim_k, Some(64));
    }

    #[test]
    fn llama3_frequency_factors_as_llama_cpp_computes_them() {
        let config = json!({"model_type": "llama", "hidden_size": 2048, "num_attention_heads": 32,
            "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}});
        let t = rope_factor_tensors(&config).unwrap();
        assert_eq!(t.len(), 1);
        let (name, f) = &t[0];
        assert_eq!((*name, f.len()), ("rope_freqs.weight", 32));
        assert!(f[..15].iter().all(|&x| x == 1.0) && f[18..].iter().all(|&x| x == 32.0));
        for (got, want) in f[15..18].iter().zip([1.6513, 3.2923, 9.6667]) {
            assert!((got - want).abs() < 1e-3, "{got} vs {want}");
        }
    }

    #[test]
    fn phi3_longrope_factors_and_attention_factor() {
        let half = |v: f64| vec![v; 48];
        let config = json!({"model_type": "phi3", "num_hidden_layers": 2, "hidden_size": 3072,
            "num_attention_heads": 32, "intermediate_size": 8192,
            "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
            "rope_scaling": {"type": "longrope", "short_factor": half(1.0), "long_factor": half(2.0)}});
        let md = metadata(&config).unwrap();
        let attn = md.f64("phi3.rope.scaling.attn_factor").unwrap().unwrap();
        assert!((attn - 1.190_238).abs() < 1e-6, "{attn}");
        assert_eq!(
            md.u64("phi3.rope.scaling.original_context_length").unwrap(),
            Some(4096)
        );
        assert_eq!(hp(config.clone()).rope_scaling, None);
        let t = rope_factor_tensors(&config).unwrap();
        assert_eq!(t[0].0, "rope_factors_short.weight");
        assert_eq!(t[1].1, vec![2.0; 48]);
        let mut short = config;
        short["rope_scaling"]["short_factor"] = json!(half(1.0)[..47]);
        assert!(rope_factor_tensors(&short)
            .unwrap_err()
            .contains("47 factors"));
    }

    #[test]
    fn gemma3_nested_text_config_and_layer_types() {
        let types: Vec<&str> = (0..12)
            .map(|i| {
                if i % 6 == 5 {
                    "full_attention"
                } else {
                    "sliding_attention"
                }
            })
            .collect();
        let h = hp(
            json!({"model_type": "gemma3", "text_config": {"model_type": "gemma3_text",
            "num_hidden_layers": 12, "hidden_size": 640, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 2048,
            "sliding_window": 512, "layer_types": types, "rms_norm_eps": 1e-6,
            "rope_parameters": {"full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
                                "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}}}}),
        );
        assert_eq!(h.architecture, "gemma3");
        assert_eq!(h.sliding_window, Some(512));
        let global: Vec<usize> = (0..12).filter(|&i| !h.swa_layers[i]).collect();
        assert_eq!(global, vec![5, 11]);
        assert_eq!(
            (h.rope_freq_base, h.rope_freq_base_swa),
            (Some(1000000.0), Some(10000.0))
        );
        // gemma3_text at the top, with the old pattern key.
        let h = hp(
            json!({"model_type": "gemma3_text", "num_hidden_layers": 18, "hidden_size": 640,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "intermediate_size": 2048, "sliding_window": 512, "sliding_window_pattern": 6,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0}),
        );
        let global: Vec<usize> = (0..18).filter(|&i| !h.swa_layers[i]).collect();
        assert_eq!(global, vec![5, 11, 17]);
    }

    #[test]
    fn qwen2_window_only_when_switched_on() {
        let base = json!({"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
            "sliding_window": 4096, "use_sliding_window": false, "rope_theta": 1000000.0});
        assert_eq!(hp(base.clone()).sliding_window, None);
        let mut on = base;
        on["use_sliding_window"] = json!(true);
        assert_eq!(hp(on).sliding_window, Some(4096));
    }

    #[test]
    fn unknown_architectures_and_methods_are_named() {
        let e = metadata(&json!({"model_type": "mamba"})).unwrap_err();
        assert!(e.contains("'mamba'"), "{e}");
        let e = metadata(&json!({"model_type": "llama", "hidden_size": 8})).unwrap_err();
        assert!(e.contains("num_hidden_layers"), "{e}");
        let e = quant_method(
            &json!({"quantization_config": {"quant_method": "bitsandbytes"}}),
            None,
        )
        .unwrap_err();
        assert!(e.contains("'bitsandbytes'"), "{e}");
        assert_eq!(quant_method(&json!({}), None).unwrap(), None);
        assert_eq!(
            quant_method(&json!({}), Some(&json!({"bits": 4})))
                .unwrap()
                .as_deref(),
            Some("gptq")
        );
        assert_eq!(
            quant_method(
                &json!({"quantization_config": {"quant_method": "exl2", "bits": 4.0}}),
                None
            )
            .unwrap()
            .as_deref(),
            Some("exl2")
        );
    }
}
