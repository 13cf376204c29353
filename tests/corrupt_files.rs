//! Every corrupt file gets its own clear one-line error and exit code 1 from
//! `llm info` (and `llm chat`), never a panic (issue 2).

mod common;

use common::corpus::{base, cases};
use common::*;

#[test]
fn the_base_file_of_the_corpus_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.gguf");
    std::fs::write(&path, base().0).unwrap();
    let run = llm(&["info", path_str(&path)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn every_corrupt_file_gives_its_own_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let path = dir.path().join(format!("{}.gguf", case.name));
        std::fs::write(&path, &case.bytes).unwrap();
        let run = llm(&["info", path_str(&path)]);
        let line = run.stderr.trim_end();
        // A file cut in its tensor data still shows its (whole) header.
        let header_shown = line.contains("the header above is whole");
        let ok = run.code == Some(1)
            && (run.stdout.is_empty() || header_shown)
            && line.lines().count() == 1
            && line.starts_with(&format!("llm: {}: ", path.display()))
            && line.contains(case.expect)
            && !line.contains("panicked");
        if !ok {
            failures.push(format!(
                "{}: expected exit 1 and {:?}\n   got exit {:?}: {line}",
                case.name, case.expect, run.code
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn files_that_are_not_models() {
    let dir = tempfile::tempdir().unwrap();
    let run = llm(&["info", path_str(dir.path())]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("is a directory"), "{}", run.stderr);

    let missing = dir.path().join("nope.gguf");
    let run = llm(&["info", path_str(&missing)]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("nope.gguf: no such file"),
        "{}",
        run.stderr
    );
}

#[test]
fn chat_reports_corrupt_files_in_one_line_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let path = dir.path().join(format!("{}.gguf", case.name));
        std::fs::write(&path, &case.bytes).unwrap();
        let run = llm(&["chat", path_str(&path), "-p", "hi"]);
        let line = run.stderr.trim_end();
        if run.code != Some(1) || line.lines().count() != 1 || line.contains("panicked") {
            failures.push(format!("{}: exit {:?}: {line}", case.name, run.code));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let run = llm(&["info"]);
    assert_eq!(run.code, Some(2), "a usage error");
}

/// Writes the corpus as the fuzzer's seeds:
/// `cargo test --release --test corrupt_files -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "generator for fuzz/corpus, not a check"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gguf_reader");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("valid.gguf"), base().0).unwrap();
    for case in cases() {
        std::fs::write(dir.join(format!("{}.gguf", case.name)), &case.bytes).unwrap();
    }
}
