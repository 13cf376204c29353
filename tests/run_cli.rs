//! `llm run` on the real binary (issue 3): streaming output, seeds, clean
//! errors for what is not supported, and a context that fills up.

mod common;

use common::*;
use ggml::GgmlType;
use llm::format::gguf::GgufFile;
use llm::model::synth::{synthesize, Spec};

fn smollm2() -> String {
    path_str(&real_model(SMOLLM2)).to_string()
}

#[test]
fn greedy_text_alone_on_stdout() {
    let run = llm(&[
        "run",
        &smollm2(),
        "-p",
        "The capital of France is",
        "-n",
        "8",
        "--temp",
        "0",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("Paris"), "{:?}", run.stdout);
    assert!(!run.stdout.contains("seed"), "{:?}", run.stdout);
    assert!(run.stderr.contains("seed: "), "{:?}", run.stderr);
}

#[test]
fn a_seed_reproduces_a_sampled_run() {
    let args = [
        "run",
        &smollm2(),
        "-p",
        "Once upon a time",
        "-n",
        "24",
        "--temp",
        "0.9",
        "--seed",
        "1234",
    ];
    let (a, b) = (llm(&args), llm(&args));
    assert_eq!(a.code, Some(0), "{}", a.stderr);
    assert_eq!(a.stdout, b.stdout);
    assert!(a.stderr.contains("seed: 1234"));
}

fn synthetic(dir: &std::path::Path, arch: &str, weight: GgmlType) -> String {
    let vocab = GgufFile::open(&real_model(SMOLLM2)).unwrap();
    let spec = Spec {
        arch: arch.into(),
        weight,
        n_layer: 1,
        n_embd: 256,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 256,
        n_ctx: 64,
        tied: true,
        seed: 5,
        longrope_orig: None,
        rope_scaling: None,
    };
    let path = dir.join(format!("{arch}-{weight}.gguf"));
    synthesize(&spec, vocab.metadata())
        .unwrap()
        .write_to(&path)
        .unwrap();
    path_str(&path).to_string()
}

fn one_line_error(run: &Run, want: &str) {
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains(want), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn unsupported_architecture_and_type_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mamba = synthetic(dir.path(), "mamba", GgmlType::Q8_0);
    one_line_error(
        &llm(&["run", &mamba, "-p", "hi"]),
        "architecture 'mamba' is not supported",
    );
    let iq2 = synthetic(dir.path(), "llama", GgmlType::IQ2_XXS);
    one_line_error(
        &llm(&["run", &iq2, "-p", "hi"]),
        "quant type IQ2_XXS is not supported yet",
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error() {
    let long = "word ".repeat(100);
    one_line_error(
        &llm(&["run", &smollm2(), "-p", &long, "-c", "32"]),
        "context holds 32",
    );
}

#[test]
fn a_full_context_stops_generation_cleanly() {
    let run = llm(&[
        "run",
        &smollm2(),
        "-p",
        "Count: 1, 2, 3,",
        "-c",
        "24",
        "-n",
        "200",
        "--temp",
        "0",
        "--ignore-eos",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("the context is full"), "{}", run.stderr);
    assert!(!run.stdout.is_empty());
}
