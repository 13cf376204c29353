//! Models larger than the CPU's caches, for decode speed against the DRAM
//! roofline: random weights of Llama-3.2-1B's shape (16 layers, 2048 wide,
//! 32 heads, 8 KV heads, 8192 FFN) with SmolLM2's vocabulary, written by
//! our own writer. Not a test: `LLM_WRITE_1B=out.gguf LLM_WRITE_TYPE=Q4_K
//! cargo test --release --test large_models -- --ignored` writes one.

mod common;

use common::*;
use llm::format::gguf::GgufFile;
use llm::model::synth::{synthesize, Spec};

#[test]
#[ignore = "writes a large model where LLM_WRITE_1B says"]
fn write_a_1b_shaped_model() {
    let out = std::env::var("LLM_WRITE_1B").expect("LLM_WRITE_1B names the file to write");
    let weight = weight_type_from_env();
    let vocab = GgufFile::open(&real_model(SMOLLM2)).unwrap();
    let spec = Spec {
        arch: "llama".into(),
        weight,
        n_layer: 16,
        n_embd: 2048,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 8192,
        n_ctx: 4096,
        tied: false,
        seed: 2026,
        longrope_orig: None,
        rope_scaling: None,
    };
    synthesize(&spec, vocab.metadata())
        .unwrap()
        .write_to(std::path::Path::new(&out))
        .unwrap();
}
