//! `llm tokenize` run as a user runs it, on the real test models. The ids
//! expected here are the ones llama.cpp gives (tests/tokenizer_oracle.rs
//! checks a whole corpus against it).

mod common;

use common::{llm, path_str, real_model, GEMMA3, QWEN2_TRUNCATED, SMOLLM2};
use llm::format::gguf::{read_metadata, GgufWriter};

fn ok(args: &[&str]) -> String {
    let run = llm(args);
    assert_eq!(run.code, Some(0), "llm {args:?} failed:\n{}", run.stderr);
    run.stdout
}

fn fails(args: &[&str]) -> String {
    let run = llm(args);
    assert_eq!(
        run.code,
        Some(1),
        "llm {args:?} should fail:\n{}",
        run.stdout
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error: {:?}", run.stderr);
    assert!(lines[0].starts_with("llm: "), "{}", lines[0]);
    run.stderr
}

#[test]
fn smollm2_ids() {
    let m = real_model(SMOLLM2);
    // SmolLM2 adds no BOS.
    assert_eq!(
        ok(&["tokenize", path_str(&m), "Hello world"]),
        "19556 905\n"
    );
    // Chat markers are text unless asked for.
    let text = "<|im_start|>user\nHi<|im_end|>";
    assert_eq!(
        ok(&["tokenize", path_str(&m), text]),
        "44 108 306 79 3738 108 46 4093 198 26843 44 108 306 79 486 108 46\n"
    );
    assert_eq!(
        ok(&["tokenize", "--special", path_str(&m), text]),
        "1 4093 198 26843 2\n"
    );
}

#[test]
fn gemma3_ids_and_pieces() {
    let m = real_model(GEMMA3);
    assert_eq!(
        ok(&["tokenize", path_str(&m), "Hello world"]),
        "2 9259 1902\n"
    );
    assert_eq!(
        ok(&["tokenize", "--no-bos", path_str(&m), "Hello world"]),
        "9259 1902\n"
    );
    assert_eq!(
        ok(&[
            "tokenize",
            "--special",
            path_str(&m),
            "<start_of_turn>user\nHi<end_of_turn>"
        ]),
        "2 105 2364 107 10979 106\n"
    );
    assert_eq!(
        ok(&["tokenize", "--pieces", path_str(&m), "Hello world"]),
        "     2 -> '<bos>'\n  9259 -> 'Hello'\n  1902 -> ' world'\n"
    );
}

#[test]
fn pieces_show_split_characters_as_bytes() {
    let m = real_model(SMOLLM2);
    // "🦀" is two byte-level tokens here: neither is a character alone.
    let out = ok(&["tokenize", "--pieces", path_str(&m), "🦀"]);
    assert!(out.contains("\\x"), "{out}");
    assert!(!out.contains('\u{FFFD}'), "{out}");
}

#[test]
fn text_from_a_file() {
    let m = real_model(GEMMA3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompt.txt");
    std::fs::write(&file, "Hello world").unwrap();
    assert_eq!(
        ok(&["tokenize", path_str(&m), "--file", path_str(&file)]),
        "2 9259 1902\n"
    );
}

#[test]
fn truncated_deepseek_r1_reads_its_vocabulary() {
    let m = real_model(QWEN2_TRUNCATED);
    // <think> is user-defined: a token even in user text.
    assert_eq!(
        ok(&["tokenize", path_str(&m), "<think>\nOK</think>"]),
        "151646 151648 198 3925 151649\n"
    );
    assert_eq!(
        ok(&["tokenize", path_str(&m), "Hello world"]),
        "151646 9707 1879\n"
    );
}

#[test]
fn vocabulary_only_file() {
    // The metadata of SmolLM2 and no tensors, as llama.cpp's vocab files are.
    let md = read_metadata(&real_model(SMOLLM2)).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in md.iter() {
        w.set(key, value.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("ggml-vocab-smollm2.gguf");
    w.write_to(&vocab).unwrap();
    assert_eq!(
        ok(&["tokenize", path_str(&vocab), "Hello world"]),
        "19556 905\n"
    );
}

#[test]
fn tokenizer_json_directory() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama");
    assert_eq!(
        ok(&["tokenize", path_str(&dir), "Hello, world!"]),
        "0 41 70 364 80 13 277 270 552 2\n"
    );
}

#[test]
fn bad_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "just some text, not a model").unwrap();
    let err = fails(&["tokenize", path_str(&text), "hi"]);
    assert!(err.contains("not a GGUF file"), "{err}");

    let missing = dir.path().join("missing.gguf");
    let err = fails(&["tokenize", path_str(&missing), "hi"]);
    assert!(err.contains("no such file"), "{err}");

    // A GGUF file without a vocabulary.
    let mut w = GgufWriter::new();
    w.set(
        "general.architecture",
        llm::format::gguf::Value::String("llama".into()),
    );
    let novocab = dir.path().join("novocab.gguf");
    w.write_to(&novocab).unwrap();
    let err = fails(&["tokenize", path_str(&novocab), "hi"]);
    assert!(err.contains("no vocabulary"), "{err}");
}
