//! Every path against the exact model (issue 8, point 3): the f64 reference
//! forward pass (src/model/reference.rs) gives the true logits of each
//! position, and each path's max and mean |logit - exact| is measured: ours
//! token by token and batched, llama.cpp's one-token path (no repacking, no
//! flash attention) and its default path (repacked weights, flash attention
//! left to llama.cpp, the prompt in one batch with every position's logits).
//! `--nocapture` shows the table.
//!
//! Asserted: ours, token by token, is no further from exact than llama.cpp's
//! one-token path; ours batched, no further than one of llama.cpp's paths
//! (its one-token path, or its batched one, whose order a batch kernel of
//! ours may share). Otherwise only shown: the comparison with llama.cpp's
//! default batched path. Both of its paths and ours share the
//! dominant error (activations quantised to 8 bits before every matmul), and
//! which one lands nearer exact is a matter of summation order: measured,
//! the default path has the larger max but the smaller mean on SmolLM2, and
//! the order changes from one synthetic model to the next (see the table).
#![cfg(feature = "oracle")]

mod common;

use common::*;
use ggml::GgmlType;
use llm::format::gguf::GgufFile;
use llm::model::reference::ReferenceModel;
use llm::model::synth::{synthesize, Spec};
use llm::model::Model;
use llm::oracle::OracleModel;
use llm::tokenizer::Tokenizer;

/// One thread for both engines: neither's numbers depend on the count (each
/// output is computed by one thread either way), and on a busy machine
/// ggml's spinning barriers made two threads ten times slower here. The
/// reference shares its matmuls out over every core itself.
const THREADS: usize = 1;
const N_CTX: usize = 128;

/// Texts that no other test uses; 30 to 60 tokens each.
const PROMPTS: &[&str] = &[
    "The lighthouse keeper counted the ships that passed each night, writing \
     their names in a leather book that had belonged to his grandmother, who \
     kept the same light for forty years.",
    "fn gcd(a: u64, b: u64) -> u64 {\n    if b == 0 { a } else { gcd(b, a % b) }\n}\n// gcd(48, 18) is",
    "Ingredients for a loaf of rye bread: 500 g rye flour, 10 g salt, 350 ml \
     of warm water and a spoonful of sourdough starter. Mix them, cover the bowl and",
];

/// Max and mean |logit - exact| over every logit of every position.
#[derive(Clone, Copy, Default)]
struct Distance {
    max: f64,
    mean: f64,
}

fn error(got: &[Vec<Vec<f32>>], exact: &[Vec<Vec<f64>>]) -> Distance {
    let (mut max, mut sum, mut n) = (0f64, 0f64, 0usize);
    for (g, e) in got.iter().flatten().zip(exact.iter().flatten()) {
        assert_eq!(g.len(), e.len());
        for (&g, &e) in g.iter().zip(e) {
            let d = (f64::from(g) - e).abs();
            max = max.max(d);
            sum += d;
            n += 1;
        }
    }
    Distance {
        max,
        mean: sum / n as f64,
    }
}

/// The four paths' errors on one model.
struct Row {
    ours_one: Distance,
    ours_batch: Distance,
    oracle_one: Distance,
    oracle_default: Distance,
}

fn measure(path: &std::path::Path, prompts: &[Vec<u32>]) -> Row {
    let model = Model::load(path, THREADS).unwrap();
    let exact: Vec<Vec<Vec<f64>>> = {
        let reference = ReferenceModel::new(&model).unwrap();
        prompts
            .iter()
            .map(|p| reference.logits(p, N_CTX).unwrap())
            .collect()
    };
    let n_vocab = model.config.shape.n_vocab;
    let ours_one: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|p| {
            let mut state = model.new_state(N_CTX).unwrap();
            p.iter()
                .map(|&t| {
                    model.forward(&mut state, &[t], false).unwrap();
                    state.logits.clone()
                })
                .collect()
        })
        .collect();
    let ours_batch: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|p| {
            let mut state = model.new_state(N_CTX).unwrap();
            model.forward(&mut state, p, true).unwrap();
            state
                .logits
                .chunks_exact(n_vocab)
                .map(|r| r.to_vec())
                .collect()
        })
        .collect();
    drop(model);
    let oracle_one: Vec<Vec<Vec<f32>>> = {
        let mut o = OracleModel::load(path, N_CTX as u32, THREADS as i32).unwrap();
        prompts
            .iter()
            .map(|p| {
                o.clear();
                p.iter().map(|&t| o.eval(&[t]).unwrap()).collect()
            })
            .collect()
    };
    let oracle_default: Vec<Vec<Vec<f32>>> = {
        let mut o =
            OracleModel::load_for_speed(path, N_CTX as u32, THREADS as i32, Default::default())
                .unwrap();
        prompts.iter().map(|p| o.eval_all(p).unwrap()).collect()
    };
    Row {
        ours_one: error(&ours_one, &exact),
        ours_batch: error(&ours_batch, &exact),
        oracle_one: error(&oracle_one, &exact),
        oracle_default: error(&oracle_default, &exact),
    }
}

/// `a` is no further from exact than `b`. Where our one-token path is
/// bit-identical to llama.cpp's (x86), the two errors are the same numbers
/// summed in the same order and compare equal; the relative slack of 1e-6
/// only keeps a tie a tie where the logits agree to float rounding but not
/// to the bit (ggml's NEON order is not modelled): far below the 0.5% to
/// 10% by which different paths' errors differ in the table.
fn no_worse(a: Distance, b: Distance) -> bool {
    let slack = 1.0 + 1e-6;
    a.max <= b.max * slack && a.mean <= b.mean * slack
}

fn synthetic(arch: &str, weight: GgmlType, seed: u64) -> Spec {
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

#[test]
fn every_path_is_measured_against_the_exact_model() {
    let smol = real_model(SMOLLM2);
    let gemma = real_model(GEMMA3);
    let tokens = |path: &std::path::Path| -> Vec<Vec<u32>> {
        let tok = Tokenizer::from_gguf_file(path).unwrap();
        PROMPTS
            .iter()
            .map(|p| {
                let ids = tok.encode(p, true, true).unwrap();
                assert!(
                    (30..=60).contains(&ids.len()),
                    "{p:?}: {} tokens",
                    ids.len()
                );
                ids
            })
            .collect()
    };
    let smol_tokens = tokens(&smol);
    let mut models = vec![
        (
            "SmolLM2-135M Q4_1".to_string(),
            smol.clone(),
            smol_tokens.clone(),
        ),
        (
            "Gemma-3-270M Q4_K_M".to_string(),
            gemma.clone(),
            tokens(&gemma),
        ),
    ];
    // Synthetic models share SmolLM2's vocabulary (llama.cpp needs a real one).
    let dir = tempfile::tempdir().unwrap();
    let vocab = GgufFile::open(&smol).unwrap();
    let specs = ["llama", "qwen2", "qwen3", "gemma3", "phi3"]
        .iter()
        .enumerate()
        .map(|(i, a)| synthetic(a, GgmlType::Q8_0, 500 + i as u64))
        .chain([
            synthetic("llama", GgmlType::Q4_0, 510),
            synthetic("llama", GgmlType::Q4_K, 511),
            // Regrouped rows whose batches sum a block in integers.
            synthetic("llama", GgmlType::Q5_0, 512),
            synthetic("llama", GgmlType::IQ4_XS, 513),
        ]);
    for s in specs {
        let path = dir.path().join(format!("{}-{}.gguf", s.arch, s.weight));
        synthesize(&s, vocab.metadata())
            .unwrap()
            .write_to(&path)
            .unwrap();
        // Fewer positions: the synthetic models' errors are alike across prompts.
        let toks = vec![smol_tokens[0].clone()];
        models.push((format!("synthetic {} {}", s.arch, s.weight), path, toks));
    }

    eprintln!(
        "{:<24} {:<34} {:>10} {:>10}",
        "model", "path", "max", "mean"
    );
    let mut failures = Vec::new();
    for (name, path, prompts) in &models {
        let r = measure(path, prompts);
        for (label, e) in [
            ("ours, token by token", r.ours_one),
            ("ours, batched", r.ours_batch),
            ("llama.cpp, one token per call", r.oracle_one),
            ("llama.cpp default, batched", r.oracle_default),
        ] {
            eprintln!("{name:<24} {label:<34} {:>10.3e} {:>10.3e}", e.max, e.mean);
        }
        if !no_worse(r.ours_one, r.oracle_one) {
            failures.push(format!(
                "{name}: ours token by token is further from exact than llama.cpp's one-token path"
            ));
        }
        // Batches may sum in another order (the regrouped types' four-token kernels), as
        // llama.cpp's own batched path does: no further than either path.
        if !no_worse(r.ours_batch, r.oracle_one) && !no_worse(r.ours_batch, r.oracle_default) {
            failures.push(format!(
                "{name}: ours batched is further from exact than both of llama.cpp's paths"
            ));
        }
        if !no_worse(r.ours_batch, r.oracle_default) {
            eprintln!(
                "{name}: note: llama.cpp's default batched path is nearer exact in max or mean"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
