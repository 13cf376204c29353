//! `llm info` on the real test models (issue 2).

mod common;

use common::*;
use llm::format::gguf::{GgufFile, GgufWriter};
use serde_json::Value as Json;

fn info_json(path: &str) -> Json {
    let run = llm(&["info", path, "--json"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("info --json prints JSON")
}

fn census(json: &Json) -> Vec<(String, u64)> {
    json["tensors"]["by_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap().to_string(),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn owned(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

#[test]
fn smollm2_architecture_layers_and_census() {
    let model = real_model(SMOLLM2);
    let json = info_json(path_str(&model));
    let h = &json["hparams"];
    assert_eq!(h["architecture"], "llama");
    assert_eq!(h["n_layer"], 30);
    assert_eq!(h["n_embd"], 576);
    assert_eq!(h["n_head"][0], 9);
    assert_eq!(h["n_head_kv"][0], 3);
    assert_eq!(h["n_vocab"], 49152);
    assert_eq!(json["file"]["gguf_version"], 3);
    assert_eq!(json["tokenizer"]["model"], "gpt2");
    assert_eq!(json["tokenizer"]["pre"], "smollm");
    assert_eq!(json["chat_template"]["present"], true);
    assert_eq!(
        census(&json),
        owned(&[("F32", 61), ("Q4_1", 210), ("Q8_0", 1)])
    );
    assert_eq!(json["tensors"]["count"], 272);
    // 30 layers x 8192 cells x 3 KV heads x (64 + 64) x f16.
    assert_eq!(json["memory"]["ctx_size"], 8192);
    assert_eq!(json["memory"]["kv_cache_bytes"], 30 * 8192 * 3 * 128 * 2);

    let text = llm(&["info", path_str(&model)]);
    assert_eq!(text.code, Some(0));
    for want in [
        "architecture    llama",
        "layers          30",
        "Q4_1",
        "210 tensors",
        "chat template   yes",
    ] {
        assert!(
            text.stdout.contains(want),
            "missing {want:?} in\n{}",
            text.stdout
        );
    }
    assert!(text.stderr.is_empty(), "{}", text.stderr);
}

#[test]
fn gemma3_architecture_layers_census_and_sliding_window() {
    let model = real_model(GEMMA3);
    let json = info_json(path_str(&model));
    let h = &json["hparams"];
    assert_eq!(h["architecture"], "gemma3");
    assert_eq!(h["n_layer"], 18);
    assert_eq!(h["sliding_window"], 512);
    let global: Vec<usize> = h["swa_layers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.as_bool().unwrap())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(global, vec![5, 11, 17]);
    assert_eq!(json["tokenizer"]["model"], "llama");
    assert_eq!(json["tokenizer"]["tokens"], 262144);
    assert_eq!(json["tokenizer"]["token_types"]["user-defined"], 165);
    assert_eq!(json["chat_template"]["present"], false);
    assert_eq!(
        census(&json),
        owned(&[
            ("F32", 109),
            ("Q5_0", 81),
            ("Q8_0", 10),
            ("Q4_K", 27),
            ("Q6_K", 9)
        ])
    );
    // The KV cache as a load allocates it (issue 8): 3 global layers hold
    // the context, 15 local ones their 512-token window plus one 512-token
    // batch. (Before issue 8 this counted the window alone: at -c 1024,
    // (3 * 1024 + 15 * 512) * 512 * 2.)
    let kv_at = |ctx: &str| {
        let run = llm(&["info", path_str(&model), "--json", "-c", ctx]);
        let json: Json = serde_json::from_str(&run.stdout).unwrap();
        json["memory"]["kv_cache_bytes"].as_u64().unwrap()
    };
    assert_eq!(kv_at("1024"), 18 * 1024 * 512 * 2);
    assert_eq!(kv_at("4096"), (3 * 4096 + 15 * 1024) * 512 * 2);
}

#[test]
fn truncated_qwen2_download_shows_its_header_and_what_is_missing() {
    let model = real_model(QWEN2_TRUNCATED);
    // The header itself is intact: 152k tokens and a chat template parse.
    let run = llm(&["info", path_str(&model)]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.contains("architecture    qwen2"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("152064 tokens"), "{}", run.stdout);
    assert!(run.stdout.contains("tensors         339"), "{}", run.stdout);
    let line = run.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains(path_str(&model)), "{line}");
    assert!(
        line.contains("tensor 'output.weight' needs 426.4 MiB at offset 5.7 MiB but the file ends at 95.0 MiB (truncated download?)")
            && line.contains("in all 339 tensors (4.27 GiB) lie past the end, the file has 95.0 MiB of 4.36 GiB (1 cut part way)")
            && line.contains("the header above is whole"),
        "{line}"
    );
    assert!(!line.contains("panicked"));
    // Loading it for a chat is still refused, before anything runs.
    let chat = llm(&["run", path_str(&model), "--prompt", "hi", "-n", "1"]);
    assert_eq!(chat.code, Some(1), "{}", chat.stderr);
    assert!(
        chat.stderr.contains("truncated download?"),
        "{}",
        chat.stderr
    );
}

/// Our writer reproduces a real file byte for byte from what our reader read.
#[test]
fn writer_round_trips_a_real_model_exactly() {
    let model = real_model(SMOLLM2);
    let file = GgufFile::open(&model).unwrap();
    let mut w = GgufWriter::new().with_version(file.version());
    for (k, v) in file.metadata().iter() {
        w.set(k, v.clone());
    }
    for t in file.tensors() {
        w.add_tensor(&t.name, t.ty, &t.dims, file.tensor_data(t).to_vec())
            .unwrap();
    }
    let (bytes, _) = w.to_bytes();
    let original = std::fs::read(&model).unwrap();
    assert_eq!(bytes.len(), original.len());
    assert!(
        bytes == original,
        "rewritten file differs from the original"
    );
}

/// `llm info` works on vocabulary-only files and on split models.
#[test]
fn vocabulary_only_and_split_models() {
    let model = real_model(SMOLLM2);
    let file = GgufFile::open(&model).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let vocab = dir.path().join("vocab.gguf");
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata().iter() {
        w.set(k, v.clone());
    }
    w.write_to(&vocab).unwrap();
    let json = info_json(path_str(&vocab));
    assert_eq!(json["tokenizer"]["tokens"], 49152);
    assert_eq!(json["tensors"]["count"], 0);
    assert_eq!(json["tensors"]["parameters"], 0);

    let tensors = file.tensors();
    let chunks: Vec<_> = tensors.chunks(tensors.len().div_ceil(3)).collect();
    for (no, chunk) in chunks.iter().enumerate() {
        let mut w = GgufWriter::new();
        if no == 0 {
            for (k, v) in file.metadata().iter() {
                w.set(k, v.clone());
            }
        }
        w.set("split.no", llm::format::gguf::Value::U16(no as u16));
        w.set(
            "split.count",
            llm::format::gguf::Value::U16(chunks.len() as u16),
        );
        w.set(
            "split.tensors.count",
            llm::format::gguf::Value::I32(tensors.len() as i32),
        );
        for t in *chunk {
            w.add_tensor(&t.name, t.ty, &t.dims, file.tensor_data(t).to_vec())
                .unwrap();
        }
        w.write_to(&dir.path().join(format!("smol-{:05}-of-00003.gguf", no + 1)))
            .unwrap();
    }
    let first = dir.path().join("smol-00001-of-00003.gguf");
    let json = info_json(path_str(&first));
    assert_eq!(json["file"]["paths"].as_array().unwrap().len(), 3);
    assert_eq!(
        census(&json),
        owned(&[("F32", 61), ("Q4_1", 210), ("Q8_0", 1)])
    );
    assert_eq!(json["hparams"]["n_layer"], 30);
}
