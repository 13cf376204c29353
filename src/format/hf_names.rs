//! Our (GGUF) tensor names -> the Hugging Face names a model folder uses,
//! per architecture. A folder's weights are looked up under our names, so
//! the weight loader stays one. Gemma 3's multimodal checkpoints keep the
//! text model under `language_model.model.` (transformers 4) or
//! `model.language_model.` (transformers 5): the candidates list all three.
//!
//! Rope factors are not tensors in a folder (phi3's `long_factor` /
//! `short_factor` and llama 3's frequency scaling live in config.json).

/// The Hugging Face names `ours` may have in a folder of `arch`, most likely
/// first; empty when a folder has no such tensor.
pub fn hf_names(arch: &str, ours: &str) -> Vec<String> {
    let Some(base) = hf_base(arch, ours) else {
        return Vec::new();
    };
    if arch != "gemma3" {
        return vec![base];
    }
    let mut names = vec![base.clone()];
    if let Some(rest) = base.strip_prefix("model.") {
        names.push(format!("language_model.model.{rest}"));
        names.push(format!("model.language_model.{rest}"));
    }
    if base == "lm_head.weight" {
        names.push("language_model.lm_head.weight".to_string());
    }
    names
}

fn hf_base(arch: &str, ours: &str) -> Option<String> {
    match ours {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = ours.strip_prefix("blk.")?;
    let (layer, t) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let (stem, kind) = t.rsplit_once('.')?;
    let gemma = arch == "gemma3";
    let hf = match stem {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_qkv" => "self_attn.qkv_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        // Gemma 3's norm after attention; llama-likes' of that name is their
        // norm before the MLP (ffn_norm).
        "post_attention_norm" if gemma => "post_attention_layernorm",
        // Gemma 3 norms around the MLP too; llama-likes name theirs after attention.
        "ffn_norm" if gemma => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        // phi3 keeps gate and up in one matrix.
        "ffn_up" if arch == "phi3" => "mlp.gate_up_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::safetensors::Checkpoint;

    #[test]
    fn every_tensor_of_the_fp16_fixture_has_one_of_our_names() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/tiny-llama-fp16");
        if !dir.is_dir() {
            eprintln!("skipped: {} is not there", dir.display());
            return;
        }
        let c = Checkpoint::open(&dir).unwrap();
        let mut ours = vec![
            "token_embd.weight".to_string(),
            "output_norm.weight".into(),
            "output.weight".into(),
        ];
        for i in 0..4 {
            for t in [
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                ours.push(format!("blk.{i}.{t}.weight"));
            }
        }
        let mapped: Vec<String> = ours
            .iter()
            .map(|o| hf_names("llama", o)[0].clone())
            .collect();
        for m in &mapped {
            assert!(c.tensor(m).is_some(), "{m} is not in the fixture");
        }
        assert_eq!(
            mapped.len(),
            c.tensors().count(),
            "the fixture has tensors we do not map"
        );
    }

    #[test]
    fn gemma_and_phi3_names() {
        assert_eq!(
            hf_names("gemma3", "blk.3.ffn_norm.weight")[0],
            "model.layers.3.pre_feedforward_layernorm.weight"
        );
        assert!(hf_names("gemma3", "blk.0.attn_q_norm.weight")
            .contains(&"model.language_model.layers.0.self_attn.q_norm.weight".to_string()));
        assert!(hf_names("gemma3", "output.weight")
            .contains(&"language_model.lm_head.weight".to_string()));
        assert_eq!(
            hf_names("phi3", "blk.1.ffn_up.weight"),
            vec!["model.layers.1.mlp.gate_up_proj.weight"]
        );
        assert_eq!(
            hf_names("qwen2", "blk.0.attn_q.bias"),
            vec!["model.layers.0.self_attn.q_proj.bias"]
        );
        assert!(hf_names("llama", "rope_freqs.weight").is_empty());
        assert!(hf_names("qwen3", "blk.0.post_attention_norm.weight").is_empty());
        assert!(hf_names("llama", "blk.x.attn_q.weight").is_empty());
    }
}
