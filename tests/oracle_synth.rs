//! Every architecture and every weight type end to end against llama.cpp, on
//! small random-weight models written by our GGUF writer (issue 3). Same
//! oracle settings as tests/oracle_models.rs.
#![cfg(feature = "oracle")]

mod common;

use common::*;
use ggml::GgmlType;
use llm::format::gguf::GgufFile;
use llm::model::synth::{synthesize, Spec};
use llm::model::Model;
use llm::oracle::OracleModel;

const N_CTX: usize = 128;

fn spec(arch: &str, weight: GgmlType, seed: u64) -> Spec {
    Spec {
        arch: arch.to_string(),
        weight,
        n_layer: 2,
        n_embd: 256,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 512,
        n_ctx: N_CTX,
        // llama.cpp's phi3 requires its own output matrix.
        tied: seed.is_multiple_of(2) && arch != "phi3",
        seed,
        longrope_orig: None,
        rope_scaling: None,
    }
}

fn argmax(x: &[f32]) -> u32 {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best }) as u32
}

fn top2_gap(x: &[f32]) -> f32 {
    let mut s: Vec<f32> = x.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    s[0] - s[1]
}

/// Runs one synthetic model on both engines; Err describes a mismatch.
fn compare(spec: &Spec, dir: &std::path::Path) -> Result<f32, String> {
    let vocab = GgufFile::open(&real_model(SMOLLM2)).unwrap();
    let path = dir.join(format!("{}-{}.gguf", spec.arch, spec.weight));
    synthesize(spec, vocab.metadata())
        .unwrap()
        .write_to(&path)
        .unwrap();
    let model = Model::load(&path, 2).map_err(|e| format!("ours failed to load: {e:#}"))?;
    let mut oracle =
        OracleModel::load(&path, N_CTX as u32, 2).ok_or("llama.cpp failed to load it")?;
    let mut worst = 0f32;
    for (i, len) in [1usize, 9, 40].into_iter().enumerate() {
        let toks: Vec<u32> = (0..len)
            .map(|k| ((k * 7919 + i * 104729 + 11) % 49152) as u32)
            .collect();
        let mut state = model.new_state(N_CTX).unwrap();
        model.forward(&mut state, &toks, false).unwrap();
        oracle.clear();
        let mut want = oracle.eval_one_by_one(&toks).unwrap();
        let d = state
            .logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        worst = worst.max(d);
        if d > 1e-2 {
            return Err(format!("{len} tokens: logits differ by {d}"));
        }
        for step in 0..16 {
            let (a, b) = (argmax(&state.logits), argmax(&want));
            if a != b {
                let gap = top2_gap(&want);
                if gap <= 0.05 {
                    break;
                }
                return Err(format!(
                    "{len} tokens: greedy step {step}: ours {a}, llama.cpp {b} (gap {gap})"
                ));
            }
            model.forward(&mut state, &[a], false).unwrap();
            want = oracle.eval(&[b]).unwrap();
        }
    }
    Ok(worst)
}

fn run_all(cases: Vec<Spec>) {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for s in &cases {
        match compare(s, dir.path()) {
            Ok(worst) => eprintln!(
                "{} {}: worst logit difference {worst:.2e}",
                s.arch, s.weight
            ),
            Err(e) => failures.push(format!("{} {}: {e}", s.arch, s.weight)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_architecture_matches_llama_cpp() {
    run_all(
        ["llama", "qwen2", "qwen3", "gemma3", "phi3"]
            .iter()
            .enumerate()
            .map(|(i, a)| spec(a, GgmlType::Q8_0, 100 + i as u64))
            .collect(),
    );
}

#[test]
fn every_weight_type_matches_llama_cpp() {
    run_all(
        ggml::blocks::WEIGHT_TYPES
            .iter()
            .enumerate()
            .map(|(i, &t)| spec("llama", t, 200 + i as u64))
            .collect(),
    );
}

#[test]
fn phi3_longrope_short_and_long_factors_match_llama_cpp() {
    // An original context below the (padded) context takes the long
    // factors; one above it, the short ones.
    run_all(
        [64, 512]
            .iter()
            .enumerate()
            .map(|(i, &orig)| Spec {
                longrope_orig: Some(orig),
                ..spec("phi3", GgmlType::Q8_0, 300 + i as u64)
            })
            .collect(),
    );
}

#[test]
fn linear_and_yarn_rope_scaling_match_llama_cpp() {
    run_all(
        [("linear", 2.0, 64), ("yarn", 4.0, 32)]
            .iter()
            .enumerate()
            .map(|(i, &scaling)| Spec {
                rope_scaling: Some(scaling),
                ..spec("llama", GgmlType::Q8_0, 400 + i as u64)
            })
            .collect(),
    );
}
