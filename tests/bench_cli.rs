//! `llm bench` on the real binary: llama-bench's lists, depths, `-ngl`,
//! `-fa` and output formats, on a tiny synthetic model; and the model flags
//! `run` now shares with `chat`.

mod common;

use std::path::Path;

use common::*;
use ggml::GgmlType;
use llm::format::gguf::{Array, Metadata, Value};
use llm::model::synth::{synthesize, Spec};

/// A two-layer model with a 256-token vocabulary: bench needs no tokenizer.
fn tiny_model(dir: &Path) -> String {
    let mut vocab = Metadata::default();
    vocab.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    vocab.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(Array::String((0..256).map(|i| format!("t{i}")).collect())),
    );
    let spec = Spec {
        arch: "llama".into(),
        weight: GgmlType::Q8_0,
        n_layer: 2,
        n_embd: 64,
        n_head: 2,
        n_head_kv: 1,
        n_ff: 128,
        n_ctx: 256,
        tied: true,
        seed: 11,
        longrope_orig: None,
        rope_scaling: None,
    };
    let path = dir.join("tiny.gguf");
    synthesize(&spec, &vocab).unwrap().write_to(&path).unwrap();
    path_str(&path).to_string()
}

fn json_rows(run: &Run) -> Vec<serde_json::Value> {
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout));
    v.as_array().expect("an array of results").clone()
}

#[test]
fn lists_and_depths_run_every_combination_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let run = llm(&[
        "bench", &model, "-p", "8,16", "-n", "4", "-d", "0,8", "-r", "1", "-o", "json", "-t", "1",
    ]);
    let rows = json_rows(&run);
    let tests: Vec<&str> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(
        tests,
        ["pp8", "pp16", "tg4", "pp8 @ d8", "pp16 @ d8", "tg4 @ d8"]
    );
    for r in &rows {
        assert_eq!(r["model"], "tiny.gguf");
        assert_eq!(r["engine"], "llm");
        assert_eq!(r["threads"], 1);
        assert_eq!(r["ngl"], 0);
        assert!(r["size"].as_u64().unwrap() > 0, "{r}");
        // Two 64x256 embeddings (tied: one) plus two layers.
        assert!(r["params"].as_u64().unwrap() > 64 * 256, "{r}");
        let samples = r["samples_ts"].as_array().unwrap();
        assert_eq!(samples.len(), 1, "{r}");
        let avg = r["avg_ts"].as_f64().unwrap();
        assert!(avg > 0.0 && avg.is_finite(), "{r}");
        assert_eq!(samples[0].as_f64().unwrap(), avg);
        assert_eq!(r["stddev_ts"].as_f64().unwrap(), 0.0);
    }
    let field = |i: usize, k: &str| rows[i][k].as_u64().unwrap();
    assert_eq!(
        (field(1, "n_prompt"), field(1, "n_gen"), field(1, "n_depth")),
        (16, 0, 0)
    );
    assert_eq!(
        (field(5, "n_prompt"), field(5, "n_gen"), field(5, "n_depth")),
        (0, 4, 8)
    );
}

#[test]
fn gpu_layers_and_flash_attn_lists_are_recorded_in_llama_cpp_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let run = llm(&[
        "bench", "-m", &model, "-p", "8", "-n", "0", "-r", "1", "-ngl", "0,99", "-fa", "0,1", "-o",
        "json", "-t", "1",
    ]);
    let rows = json_rows(&run);
    let settings: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["ngl"].to_string(), r["fa"].as_str().unwrap().to_string()))
        .collect();
    let s = |n: &str, f: &str| (n.to_string(), f.to_string());
    assert_eq!(
        settings,
        [s("0", "0"), s("0", "1"), s("99", "0"), s("99", "1")]
    );
    // No GPU backend: said once, for the count that asked for one.
    assert_eq!(
        run.stderr.matches("no NVIDIA driver").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn markdown_is_a_llama_bench_table() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let run = llm(&[
        "bench", &model, "-p", "8", "-n", "4", "-d", "8", "-r", "2", "-t", "1",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert_eq!(
        lines[0],
        "| model | size | params | backend | threads | ngl | fa | test | t/s |"
    );
    assert!(lines[2].starts_with("| tiny.gguf | "), "{}", lines[2]);
    assert!(lines[2].contains("| pp8 @ d8 | "), "{}", lines[2]);
    assert!(lines[3].contains("| tg4 @ d8 | "), "{}", lines[3]);
    assert!(lines[3].contains(" ± "), "{}", lines[3]);
}

fn one_line_error(run: &Run, want: &str) {
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains(want), "{}", run.stderr);
}

#[test]
fn bad_model_flags_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    one_line_error(
        &llm(&["bench", &model, "-sm", "row", "-r", "1"]),
        "split mode 'row'",
    );
    one_line_error(
        &llm(&["bench", &model, "-ts", "0,0", "-r", "1"]),
        "--tensor-split",
    );
    one_line_error(
        &llm(&[
            "bench", &model, "-p", "64", "-n", "0", "-c", "32", "-r", "1",
        ]),
        "-c/--ctx-size gives 32",
    );
    one_line_error(
        &llm(&["bench", &model, "-p", "0", "-n", "0"]),
        "nothing to measure",
    );
    one_line_error(
        &llm(&["run", &model, "-p", "hi", "-t", "1,2"]),
        "-t/--threads takes one value",
    );
}

#[test]
fn run_takes_the_gpu_flags_chat_takes() {
    let run = llm(&[
        "run",
        path_str(&real_model(SMOLLM2)),
        "-p",
        "The capital of France is",
        "-n",
        "4",
        "--temp",
        "0",
        "-ngl",
        "99",
        "-sm",
        "layer",
        "-mg",
        "0",
        "-c",
        "64",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("no NVIDIA driver"), "{}", run.stderr);
    assert!(run.stdout.contains("Paris"), "{:?}", run.stdout);
}
