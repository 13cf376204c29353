//! Random-weight models of a given architecture, shape and weight type, written
//! as GGUF: tests check every architecture and type end to end against
//! llama.cpp with them, and benchmarks use large shapes (speed does not depend
//! on the weights).

use anyhow::Result;
use ggml::float16::{f32_to_bf16, f32_to_f16};
use ggml::GgmlType;

use crate::format::gguf::{GgufWriter, Metadata, Value};

#[derive(Clone, Debug)]
pub struct Spec {
    pub arch: String,
    /// Type of the matrices (norms and biases stay F32).
    pub weight: GgmlType,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    /// No `output.weight`: the token embedding doubles as the output.
    pub tied: bool,
    pub seed: u64,
    /// phi3 only: LongRoPE short and long factors, with this original
    /// context length and an attention factor.
    pub longrope_orig: Option<usize>,
    /// `rope.scaling.*`: (type, factor, original context length).
    pub rope_scaling: Option<(&'static str, f32, usize)>,
}

/// A small deterministic generator (xorshift64) for random weights and test
/// data; a seed of 0 is bumped to 1.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Where a block keeps its f16 scales, and a typical size for them that
/// gives weights of a few hundredths.
fn scales(ty: GgmlType) -> (&'static [usize], f32) {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 => (&[0], 0.004),
        Q4_1 | Q5_1 => (&[0, 2], 0.004),
        Q8_0 => (&[0], 0.0005),
        IQ4_NL => (&[0], 0.0004),
        IQ4_XS => (&[0], 0.00003),
        Q2_K => (&[80, 82], 0.002),
        Q3_K => (&[108], 0.0003),
        Q4_K | Q5_K => (&[0, 2], 0.0001),
        Q6_K => (&[208], 0.00002),
        _ => (&[], 0.0),
    }
}

/// `rows` rows of `cols` random values stored as `ty`.
fn random_tensor(ty: GgmlType, cols: usize, rows: usize, rng: &mut Rng) -> Vec<u8> {
    let n = cols * rows;
    let std = 0.05;
    match ty {
        GgmlType::F32 => (0..n)
            .flat_map(|_| (rng.unit() * std).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f32_to_f16(rng.unit() * std).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| f32_to_bf16(rng.unit() * std).to_le_bytes())
            .collect(),
        _ => {
            let bytes = ty.row_size(cols as u64).expect("whole blocks") as usize * rows;
            let mut b: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
            let (at, d) = scales(ty);
            for block in b.chunks_exact_mut(ty.type_size() as usize) {
                for &o in at {
                    let v = d * (1.0 + 0.5 * rng.unit());
                    block[o..o + 2].copy_from_slice(&f32_to_f16(v).to_le_bytes());
                }
            }
            b
        }
    }
}

fn norm(len: usize, rng: &mut Rng) -> Vec<u8> {
    (0..len)
        .flat_map(|_| (1.0 + 0.1 * rng.unit()).to_le_bytes())
        .collect()
}

/// The model as a GGUF writer; `vocab` supplies the `tokenizer.*` metadata
/// (llama.cpp needs a real vocabulary to load a model).
pub fn synthesize(spec: &Spec, vocab: &Metadata) -> Result<GgufWriter> {
    let mut rng = Rng::new(spec.seed);
    let mut w = GgufWriter::new();
    let a = spec.arch.as_str();
    let key = |k: &str| format!("{a}.{k}");
    let head_dim = spec.n_embd / spec.n_head;
    let (q_dim, kv_dim) = (spec.n_head * head_dim, spec.n_head_kv * head_dim);
    w.set("general.architecture", Value::String(a.to_string()));
    // Not the architecture's name: llama.cpp keys vocabulary fix-ups on names
    // like "phi3" and then expects that model family's special tokens.
    w.set(
        "general.name",
        Value::String(format!("synthetic {}", spec.weight)),
    );
    w.set(&key("block_count"), Value::U32(spec.n_layer as u32));
    w.set(&key("context_length"), Value::U32(spec.n_ctx as u32));
    w.set(&key("embedding_length"), Value::U32(spec.n_embd as u32));
    w.set(&key("feed_forward_length"), Value::U32(spec.n_ff as u32));
    w.set(&key("attention.head_count"), Value::U32(spec.n_head as u32));
    w.set(
        &key("attention.head_count_kv"),
        Value::U32(spec.n_head_kv as u32),
    );
    w.set(&key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
    w.set(&key("rope.freq_base"), Value::F32(10000.0));
    w.set(&key("rope.dimension_count"), Value::U32(head_dim as u32));
    if let Some((kind, factor, orig)) = spec.rope_scaling {
        w.set(&key("rope.scaling.type"), Value::String(kind.to_string()));
        w.set(&key("rope.scaling.factor"), Value::F32(factor));
        w.set(
            &key("rope.scaling.original_context_length"),
            Value::U32(orig as u32),
        );
    }
    if let (Some(orig), "phi3") = (spec.longrope_orig, a) {
        w.set(
            &key("rope.scaling.original_context_length"),
            Value::U32(orig as u32),
        );
        w.set(&key("rope.scaling.attn_factor"), Value::F32(1.190_238));
    }
    if a == "gemma3" {
        w.set(&key("attention.key_length"), Value::U32(head_dim as u32));
        w.set(&key("attention.value_length"), Value::U32(head_dim as u32));
        w.set(&key("attention.sliding_window"), Value::U32(8));
    }
    let mut n_vocab = 0;
    for (k, v) in vocab.iter() {
        if k.starts_with("tokenizer.") {
            if k == "tokenizer.ggml.tokens" {
                n_vocab = v.as_array().map_or(0, |t| t.len());
            }
            w.set(k, v.clone());
        }
    }
    anyhow::ensure!(n_vocab > 0, "the vocabulary source has no tokens");

    let ty = spec.weight;
    let mut mat = |w: &mut GgufWriter, name: &str, cols: usize, rows: usize| -> Result<()> {
        let data = random_tensor(ty, cols, rows, &mut rng);
        w.add_tensor(name, ty, &[cols as u64, rows as u64], data)?;
        Ok(())
    };
    mat(&mut w, "token_embd.weight", spec.n_embd, n_vocab)?;
    if !spec.tied {
        mat(&mut w, "output.weight", spec.n_embd, n_vocab)?;
    }
    for il in 0..spec.n_layer {
        let n = |t: &str| format!("blk.{il}.{t}");
        if a == "phi3" {
            mat(
                &mut w,
                &n("attn_qkv.weight"),
                spec.n_embd,
                q_dim + 2 * kv_dim,
            )?;
            mat(&mut w, &n("ffn_up.weight"), spec.n_embd, 2 * spec.n_ff)?;
        } else {
            mat(&mut w, &n("attn_q.weight"), spec.n_embd, q_dim)?;
            mat(&mut w, &n("attn_k.weight"), spec.n_embd, kv_dim)?;
            mat(&mut w, &n("attn_v.weight"), spec.n_embd, kv_dim)?;
            mat(&mut w, &n("ffn_gate.weight"), spec.n_embd, spec.n_ff)?;
            mat(&mut w, &n("ffn_up.weight"), spec.n_embd, spec.n_ff)?;
        }
        mat(&mut w, &n("attn_output.weight"), q_dim, spec.n_embd)?;
        mat(&mut w, &n("ffn_down.weight"), spec.n_ff, spec.n_embd)?;
    }
    let mut rng = Rng::new(spec.seed.wrapping_mul(31));
    let vec_f32 = |w: &mut GgufWriter, name: &str, data: Vec<u8>| -> Result<()> {
        let len = data.len() as u64 / 4;
        w.add_tensor(name, GgmlType::F32, &[len], data)?;
        Ok(())
    };
    vec_f32(&mut w, "output_norm.weight", norm(spec.n_embd, &mut rng))?;
    if spec.longrope_orig.is_some() && a == "phi3" {
        // Short factors near 1, long ones growing with the dimension, as in
        // the real files.
        let half = head_dim / 2;
        let short = (0..half).flat_map(|i| {
            (1.0 + 0.05 * (i as f32 / half as f32) + 0.01 * rng.unit()).to_le_bytes()
        });
        vec_f32(&mut w, "rope_factors_short.weight", short.collect())?;
        let long = (0..half).flat_map(|i| {
            (1.0 + 20.0 * (i as f32 / half as f32).powi(2) + 0.1 * rng.unit()).to_le_bytes()
        });
        vec_f32(&mut w, "rope_factors_long.weight", long.collect())?;
    }
    for il in 0..spec.n_layer {
        let n = |t: &str| format!("blk.{il}.{t}");
        vec_f32(&mut w, &n("attn_norm.weight"), norm(spec.n_embd, &mut rng))?;
        vec_f32(&mut w, &n("ffn_norm.weight"), norm(spec.n_embd, &mut rng))?;
        if a == "qwen2" {
            for (t, len) in [
                ("attn_q.bias", q_dim),
                ("attn_k.bias", kv_dim),
                ("attn_v.bias", kv_dim),
            ] {
                let bias = (0..len)
                    .flat_map(|_| (0.05 * rng.unit()).to_le_bytes())
                    .collect();
                vec_f32(&mut w, &n(t), bias)?;
            }
        }
        if a == "qwen3" || a == "gemma3" {
            vec_f32(&mut w, &n("attn_q_norm.weight"), norm(head_dim, &mut rng))?;
            vec_f32(&mut w, &n("attn_k_norm.weight"), norm(head_dim, &mut rng))?;
        }
        if a == "gemma3" {
            vec_f32(
                &mut w,
                &n("post_attention_norm.weight"),
                norm(spec.n_embd, &mut rng),
            )?;
            vec_f32(
                &mut w,
                &n("post_ffw_norm.weight"),
                norm(spec.n_embd, &mut rng),
            )?;
        }
    }
    Ok(w)
}
