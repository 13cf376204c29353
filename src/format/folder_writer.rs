//! Random-weight Hugging Face folders of a given Llama shape, plain f16,
//! GPTQ, AWQ or EXL2, for benchmarks (as model::synth writes GGUF files): speed does not
//! depend on the weights, and a 7B folder is written in seconds without
//! holding it in memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::json;

use super::safetensors::Dtype;
use crate::model::synth::Rng;

#[derive(Clone, Copy, Debug)]
pub enum FolderWeights {
    F16,
    /// GPTQ (v1 zeros) of 2, 4 or 8 bits, groups of `group` inputs,
    /// act-order (a shuffled `g_idx`) or not, symmetric or with random zero
    /// points.
    Gptq {
        bits: u32,
        group: usize,
        act_order: bool,
        sym: bool,
    },
    /// AWQ GEMM, 4 bits, random zero points.
    Awq {
        group: usize,
    },
    /// EXL2 in groups of 32 inputs under a random input permutation, every
    /// group at `bits` or, with None, each projection mixed as exllamav2
    /// 0.3.2 mixed the 4.0 bpw fixture's first layer (q, k, o: an eighth of
    /// the groups at 6 bits, the rest 5; v 6; gate and up 4; down a twelfth
    /// at 8, the rest 4: 4.5 bits a weight on a 7B shape); the head at
    /// `head_bits`.
    Exl2 {
        bits: Option<u32>,
        head_bits: u32,
    },
}

#[derive(Clone, Debug)]
pub struct FolderSpec {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub weights: FolderWeights,
    pub seed: u64,
}

impl FolderSpec {
    /// Llama-2-7B's shape, or Llama-3.2-1B's.
    pub fn named(shape: &str, weights: FolderWeights) -> Option<FolderSpec> {
        let (n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab) = match shape {
            "7b" => (32, 4096, 32, 32, 11008, 32000),
            "1b" => (16, 2048, 32, 8, 8192, 128256),
            _ => return None,
        };
        Some(FolderSpec {
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            n_ff,
            n_vocab,
            weights,
            seed: 7,
        })
    }
}

/// One tensor of the file: its name, dtype, shape and how its bytes are made.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    fill: Fill,
}

#[derive(Clone)]
enum Fill {
    /// f16 values uniform in `center ± spread`.
    F16 { center: f32, spread: f32 },
    /// Random 32-bit words.
    Words,
    /// One repeated 32-bit word.
    Word(u32),
    /// i32 `g_idx`: input i's group, shuffled (by a generator of `seed`)
    /// when the flag says so.
    GroupIndex {
        group: usize,
        shuffled: bool,
        seed: u64,
    },
    /// These bytes.
    Bytes(std::sync::Arc<[u8]>),
}

impl Entry {
    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size() as usize
    }
}

fn linear(entries: &mut Vec<Entry>, prefix: &str, inp: usize, out: usize, w: FolderWeights) {
    let e = |name: &str, dtype, shape: Vec<usize>, fill| Entry {
        name: format!("{prefix}.{name}"),
        dtype,
        shape,
        fill,
    };
    match w {
        FolderWeights::F16 => entries.push(e(
            "weight",
            Dtype::F16,
            vec![out, inp],
            Fill::F16 {
                center: 0.0,
                spread: 0.05,
            },
        )),
        FolderWeights::Gptq {
            bits,
            group,
            act_order,
            sym,
        } => {
            let groups = inp.div_ceil(group);
            // Zero points of 2^(bits-1), stored minus one (v1), in every slot.
            let z = (1u32 << (bits - 1)) - 1;
            let word = (0..32 / bits).fold(0u32, |w, i| w | (z << (i * bits)));
            entries.push(e(
                "qweight",
                Dtype::I32,
                vec![inp * bits as usize / 32, out],
                Fill::Words,
            ));
            entries.push(e(
                "qzeros",
                Dtype::I32,
                vec![groups, out * bits as usize / 32],
                if sym { Fill::Word(word) } else { Fill::Words },
            ));
            entries.push(e(
                "scales",
                Dtype::F16,
                vec![groups, out],
                Fill::F16 {
                    center: 0.004,
                    spread: 0.002,
                },
            ));
            entries.push(e(
                "g_idx",
                Dtype::I32,
                vec![inp],
                Fill::GroupIndex {
                    group,
                    shuffled: act_order,
                    seed: input_seed(prefix),
                },
            ));
        }
        FolderWeights::Awq { group } => {
            let groups = inp.div_ceil(group);
            entries.push(e("qweight", Dtype::I32, vec![inp, out / 8], Fill::Words));
            entries.push(e("qzeros", Dtype::I32, vec![groups, out / 8], Fill::Words));
            entries.push(e(
                "scales",
                Dtype::F16,
                vec![groups, out],
                Fill::F16 {
                    center: 0.004,
                    spread: 0.002,
                },
            ));
        }
        FolderWeights::Exl2 { bits, .. } => {
            let (high_bits, high_share, bits) = match bits {
                Some(b) => (b, 0.0, b),
                None if prefix.ends_with("v_proj") => (6, 0.0, 6),
                None if prefix.ends_with("_proj") && prefix.contains("self_attn") => (6, 0.125, 5),
                None if prefix.ends_with("down_proj") => (8, 1.0 / 12.0, 4),
                None => (4, 0.0, 4),
            };
            exl2_linear(entries, prefix, inp, out, bits, high_bits, high_share)
        }
    }
}

/// A seed for the input order of the layer at `prefix`: the same for the
/// projections that read one input (q, k and v; gate and up), as the
/// quantisers' orders are (they follow the input's statistics; so are the
/// fixtures').
fn input_seed(prefix: &str) -> u64 {
    let input = prefix
        .replace("k_proj", "q_proj")
        .replace("v_proj", "q_proj")
        .replace("up_proj", "gate_proj");
    input.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// One EXL2 layer: groups of 32 inputs, the first `high_share` of them at
/// `high_bits`, the rest at `bits`; a random input permutation, shared by
/// the projections of one input (input_seed).
fn exl2_linear(
    entries: &mut Vec<Entry>,
    prefix: &str,
    inp: usize,
    out: usize,
    bits: u32,
    high_bits: u32,
    high_share: f32,
) {
    let groups = inp / 32;
    let high = ((groups as f32 * high_share).ceil() as usize).min(groups);
    let mut q_groups = Vec::with_capacity(4 * groups);
    let mut packed = 0usize;
    for g in 0..groups {
        let b = if g < high { high_bits } else { bits };
        q_groups.extend_from_slice(&(b as i16).to_le_bytes());
        q_groups.extend_from_slice(&(packed as u16).to_le_bytes());
        packed += b as usize;
    }
    let mut rng = Rng::new(input_seed(prefix));
    let mut perm: Vec<u32> = (0..inp as u32).collect();
    for i in (1..inp).rev() {
        perm.swap(i, rng.next_u64() as usize % (i + 1));
    }
    let mut inv = vec![0u32; inp];
    for (k, &p) in perm.iter().enumerate() {
        inv[p as usize] = k as u32;
    }
    let words =
        |v: &[u32]| -> std::sync::Arc<[u8]> { v.iter().flat_map(|w| w.to_le_bytes()).collect() };
    let e = |name: &str, dtype, shape: Vec<usize>, fill| Entry {
        name: format!("{prefix}.{name}"),
        dtype,
        shape,
        fill,
    };
    entries.push(e("q_weight", Dtype::I32, vec![packed, out], Fill::Words));
    entries.push(e("q_scale", Dtype::I32, vec![groups, out / 8], Fill::Words));
    entries.push(e(
        "q_scale_max",
        Dtype::F16,
        vec![groups],
        Fill::F16 {
            center: 0.02,
            spread: 0.01,
        },
    ));
    entries.push(e(
        "q_groups",
        Dtype::I16,
        vec![2 * groups],
        Fill::Bytes(q_groups.into()),
    ));
    entries.push(e(
        "q_perm",
        Dtype::I32,
        vec![inp],
        Fill::Bytes(words(&perm)),
    ));
    entries.push(e(
        "q_invperm",
        Dtype::I32,
        vec![inp],
        Fill::Bytes(words(&inv)),
    ));
}

fn entries(s: &FolderSpec) -> Vec<Entry> {
    let hd = s.n_embd / s.n_head;
    let kv = s.n_head_kv * hd;
    let mut v = Vec::new();
    let norm = Fill::F16 {
        center: 1.0,
        spread: 0.1,
    };
    let plain = Fill::F16 {
        center: 0.0,
        spread: 0.05,
    };
    let f16 = |name: String, shape: Vec<usize>, fill| Entry {
        name,
        dtype: Dtype::F16,
        shape,
        fill,
    };
    v.push(f16(
        "model.embed_tokens.weight".into(),
        vec![s.n_vocab, s.n_embd],
        plain.clone(),
    ));
    for l in 0..s.n_layer {
        let p = format!("model.layers.{l}");
        v.push(f16(
            format!("{p}.input_layernorm.weight"),
            vec![s.n_embd],
            norm.clone(),
        ));
        v.push(f16(
            format!("{p}.post_attention_layernorm.weight"),
            vec![s.n_embd],
            norm.clone(),
        ));
        for (name, inp, out) in [
            ("self_attn.q_proj", s.n_embd, s.n_embd),
            ("self_attn.k_proj", s.n_embd, kv),
            ("self_attn.v_proj", s.n_embd, kv),
            ("self_attn.o_proj", s.n_embd, s.n_embd),
            ("mlp.gate_proj", s.n_embd, s.n_ff),
            ("mlp.up_proj", s.n_embd, s.n_ff),
            ("mlp.down_proj", s.n_ff, s.n_embd),
        ] {
            linear(&mut v, &format!("{p}.{name}"), inp, out, s.weights);
        }
    }
    v.push(f16(
        "model.norm.weight".into(),
        vec![s.n_embd],
        norm.clone(),
    ));
    // GPTQ and AWQ keep the head in f16; exllamav2 quantises it too.
    match s.weights {
        FolderWeights::Exl2 { head_bits, .. } => exl2_linear(
            &mut v, "lm_head", s.n_embd, s.n_vocab, head_bits, head_bits, 0.0,
        ),
        _ => v.push(f16(
            "lm_head.weight".into(),
            vec![s.n_vocab, s.n_embd],
            plain.clone(),
        )),
    }
    v
}

fn write_fill(out: &mut impl Write, e: &Entry, rng: &mut Rng) -> std::io::Result<()> {
    let n = e.bytes();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut done = 0;
    let order: Vec<u32> = match &e.fill {
        &Fill::GroupIndex {
            group,
            shuffled,
            seed,
        } => {
            let inp = e.shape[0];
            let mut g: Vec<u32> = (0..inp).map(|i| (i / group) as u32).collect();
            let mut rng = Rng::new(seed);
            if shuffled {
                for i in (1..inp).rev() {
                    g.swap(i, rng.next_u64() as usize % (i + 1));
                }
            }
            g
        }
        _ => Vec::new(),
    };
    while done < n {
        buf.clear();
        let piece = (n - done).min(1 << 20);
        match &e.fill {
            &Fill::F16 { center, spread } => {
                for _ in 0..piece / 2 {
                    let h = ggml::float16::f32_to_f16(center + spread * rng.unit());
                    buf.extend_from_slice(&h.to_le_bytes());
                }
            }
            Fill::Words => {
                for _ in 0..piece / 4 {
                    buf.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
                }
            }
            &Fill::Word(w) => {
                for _ in 0..piece / 4 {
                    buf.extend_from_slice(&w.to_le_bytes());
                }
            }
            Fill::GroupIndex { .. } => {
                for g in &order[done / 4..(done + piece) / 4] {
                    buf.extend_from_slice(&g.to_le_bytes());
                }
            }
            Fill::Bytes(b) => buf.extend_from_slice(&b[done..done + piece]),
        }
        out.write_all(&buf)?;
        done += piece;
    }
    Ok(())
}

/// A WordLevel tokenizer of `n` tokens: `<s>` (0), `</s>` (1), then `t2`...
pub(super) fn tokenizer_json(n: usize) -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            let t = match i {
                0 => "<s>".to_string(),
                1 => "</s>".to_string(),
                _ => format!("t{i}"),
            };
            (t, json!(i))
        })
        .collect();
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "added_tokens": [special(0, "<s>"), special(1, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "</s>"}
    })
}

fn config_json(s: &FolderSpec) -> serde_json::Value {
    let mut c = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": s.n_embd,
        "intermediate_size": s.n_ff,
        "num_hidden_layers": s.n_layer,
        "num_attention_heads": s.n_head,
        "num_key_value_heads": s.n_head_kv,
        "vocab_size": s.n_vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": false,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "float16"
    });
    match s.weights {
        FolderWeights::F16 => {}
        FolderWeights::Gptq {
            bits,
            group,
            act_order,
            sym,
        } => {
            c["quantization_config"] = json!({
                "quant_method": "gptq", "bits": bits, "group_size": group,
                "desc_act": act_order, "sym": sym, "checkpoint_format": "gptq"
            })
        }
        FolderWeights::Awq { group } => {
            c["quantization_config"] = json!({
                "quant_method": "awq", "bits": 4, "group_size": group,
                "version": "gemm", "zero_point": true
            })
        }
        FolderWeights::Exl2 { bits, head_bits } => {
            c["quantization_config"] = json!({
                "quant_method": "exl2", "version": "0.3.2",
                "bits": bits.map_or(4.0, |b| b as f32), "head_bits": head_bits
            })
        }
    }
    c
}

/// Writes the folder: config.json, tokenizer.json, tokenizer_config.json
/// and one model.safetensors.
pub fn write_folder(s: &FolderSpec, dir: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    match s.weights {
        FolderWeights::Gptq { bits, group, .. } if ![2, 4, 8].contains(&bits) || group == 0 => {
            return Err(format!(
                "GPTQ of {bits} bits in groups of {group} is not written"
            ))
        }
        FolderWeights::Awq { group } if group == 0 || !group.is_multiple_of(32) => {
            return Err(format!("AWQ in groups of {group} is not written"))
        }
        FolderWeights::Exl2 { bits, head_bits }
            if [bits.unwrap_or(4), head_bits]
                .iter()
                .any(|b| ![2, 3, 4, 5, 6, 8].contains(b))
                || !s.n_embd.is_multiple_of(32)
                || !s.n_ff.is_multiple_of(32) =>
        {
            return Err("EXL2 of those widths or that shape is not written".to_string())
        }
        _ => {}
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("JSON");
    std::fs::write(dir.join("config.json"), pretty(&config_json(s))).map_err(io)?;
    std::fs::write(
        dir.join("tokenizer.json"),
        pretty(&tokenizer_json(s.n_vocab)),
    )
    .map_err(io)?;
    let tc = json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true});
    std::fs::write(dir.join("tokenizer_config.json"), pretty(&tc)).map_err(io)?;

    let entries = entries(s);
    let h = super::safetensors::header(
        entries
            .iter()
            .map(|e| (e.name.as_str(), e.dtype, e.shape.as_slice())),
    );
    let file = File::create(dir.join("model.safetensors")).map_err(io)?;
    let mut out = BufWriter::with_capacity(1 << 22, file);
    out.write_all(&h).map_err(io)?;
    let mut rng = Rng::new(s.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for e in &entries {
        write_fill(&mut out, e, &mut rng).map_err(io)?;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_gptq_folder_loads_with_its_layers_as_blocks() {
        let dir = tempfile::tempdir().unwrap();
        for (act_order, bits, sym) in [
            (false, 4, true),
            (true, 4, true),
            (false, 8, true),
            (true, 2, true),
            (false, 4, false),
        ] {
            let spec = FolderSpec {
                n_layer: 2,
                n_embd: 256,
                n_head: 4,
                n_head_kv: 2,
                n_ff: 512,
                n_vocab: 300,
                weights: FolderWeights::Gptq {
                    bits,
                    group: 64,
                    act_order,
                    sym,
                },
                seed: 3,
            };
            let path = dir.path().join(format!("gptq-{bits}-{act_order}-{sym}"));
            write_folder(&spec, &path).unwrap();
            let folder = super::super::model_folder::ModelFolder::open(&path).unwrap();
            use super::super::TensorSource;
            let t = folder.tensor("blk.1.ffn_down.weight").unwrap();
            let want = match (bits, sym) {
                (8, _) => "Q8_0",
                (_, false) => "Q5_0",
                _ => "Q4_0",
            };
            assert_eq!(t.format.ggml().name(), want);
            assert_eq!(t.dims, [512, 256]);
            // The down projection's order went into gate's and up's rows.
            assert!(t.input_order.is_none());
            let gate = folder.tensor("blk.1.ffn_gate.weight").unwrap();
            assert_eq!(gate.input_order.is_some(), act_order);
            assert_eq!(folder.n_vocab(), Some(300));
        }
    }

    #[test]
    fn small_awq_and_exl2_folders_load_as_blocks() {
        use super::super::TensorSource;
        let dir = tempfile::tempdir().unwrap();
        for (name, weights, want, ordered) in [
            ("awq", FolderWeights::Awq { group: 64 }, "Q5_0", false),
            (
                "exl2-4",
                FolderWeights::Exl2 {
                    bits: Some(4),
                    head_bits: 6,
                },
                "Q4_0",
                true,
            ),
            (
                "exl2-mixed",
                FolderWeights::Exl2 {
                    bits: None,
                    head_bits: 6,
                },
                "Q8_0",
                true,
            ),
        ] {
            let spec = FolderSpec {
                n_layer: 2,
                n_embd: 256,
                n_head: 4,
                n_head_kv: 2,
                n_ff: 512,
                n_vocab: 320,
                weights,
                seed: 5,
            };
            let path = dir.path().join(name);
            write_folder(&spec, &path).unwrap();
            let folder = super::super::model_folder::ModelFolder::open(&path)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let t = folder.tensor("blk.1.ffn_down.weight").unwrap();
            assert_eq!(t.format.ggml().name(), want, "{name}");
            assert_eq!(t.dims, [512, 256]);
            assert!(t.input_order.is_none(), "{name}");
            let o = folder.tensor("blk.1.attn_output.weight").unwrap();
            assert_eq!(o.input_order.is_some(), ordered, "{name}");
            let head = folder.tensor("output.weight").unwrap();
            assert_eq!(head.dims, [256, 320]);
        }
    }
}
