use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

/// A safetensors file of F32 tensors `(name, shape, values)`, in order.
fn file_bytes(
    tensors: &[(&str, Vec<u64>, Vec<f32>)],
    metadata: Option<serde_json::Value>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let begin = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.to_string(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), m);
    }
    with_header(&serde_json::Value::Object(header).to_string(), &data)
}

fn with_header(json: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(data);
    out
}

fn two_tensors() -> Vec<u8> {
    file_bytes(
        &[
            ("a", vec![2, 3], vec![1.0; 6]),
            ("b", vec![4], vec![2.0; 4]),
        ],
        Some(json!({"format": "pt"})),
    )
}

fn message(bytes: &[u8]) -> String {
    parse(bytes).expect_err("must be refused").message
}

#[test]
fn a_well_formed_file_parses() {
    let bytes = two_tensors();
    let h = parse(&bytes).unwrap();
    assert_eq!(h.tensors.len(), 2);
    assert_eq!(h.tensors[0].name, "a");
    assert_eq!(h.tensors[0].shape, vec![2, 3]);
    assert_eq!(h.tensors[0].dtype, Dtype::F32);
    assert_eq!(h.tensors[1].start, h.tensors[0].end);
    assert_eq!(h.tensors[1].end, bytes.len() as u64);
    assert_eq!(h.metadata.get("format").map(String::as_str), Some("pt"));
}

#[test]
fn header_padding_with_spaces_is_allowed() {
    let json = r#"{"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}    "#;
    let h = parse(&with_header(json, &[7, 8])).unwrap();
    assert_eq!(h.tensors[0].dtype, Dtype::U8);
}

#[test]
fn a_truncated_file_names_the_cut_tensor() {
    let bytes = two_tensors();
    let m = message(&bytes[..bytes.len() - 3]);
    assert!(m.contains("tensor 'b'") && m.contains("truncated"), "{m}");
}

#[test]
fn corrupt_headers_get_one_line_each() {
    let good = two_tensors();
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut past_end = good.clone();
    past_end[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 2, 3], "shorter than"),
        (huge, "limit"),
        (past_end, "truncated"),
        (with_header("[1, 2]", &[]), "not a JSON object"),
        (with_header("{\"a\": ", &[]), "not valid JSON"),
        (
            with_header(
                r#"{"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}"#,
                &[0],
            ),
            "unknown dtype 'Q4'",
        ),
        (
            with_header(
                r#"{"a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 4]}}"#,
                &[0; 4],
            ),
            "needs 6 bytes",
        ),
        (
            with_header(
                r#"{"a": {"dtype": "U8", "shape": [1], "data_offsets": [2, 1]}}"#,
                &[0; 2],
            ),
            "backwards",
        ),
        (
            with_header(
                r#"{"a": {"dtype": "F64", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}}"#,
                &[0; 8],
            ),
            "overflows",
        ),
        (
            with_header(
                r#"{"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}, "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}"#,
                &[0; 3],
            ),
            "overlaps",
        ),
        (
            with_header(
                r#"{"a": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}"#,
                &[0; 3],
            ),
            "gap",
        ),
        (
            with_header(
                r#"{"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}"#,
                &[0; 5],
            ),
            "not described",
        ),
        (
            with_header(r#"{"__metadata__": {"k": 3}}"#, &[]),
            "metadata 'k' is not a string",
        ),
        (
            with_header(
                r#"{"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}"#,
                &[],
            ),
            "not a whole number",
        ),
    ];
    for (bytes, want) in cases {
        let m = message(&bytes);
        assert!(m.contains(want), "wanted '{want}' in: {m}");
        assert!(!m.contains('\n'), "one line: {m}");
    }
}

#[test]
fn no_prefix_of_a_file_panics() {
    let bytes = two_tensors();
    for n in 0..bytes.len() {
        assert!(parse(&bytes[..n]).is_err(), "a {n}-byte prefix parsed");
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_sharded_folder_is_one_namespace() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "model-00001-of-00002.safetensors",
        &file_bytes(&[("a", vec![2], vec![1.0, 2.0])], None),
    );
    write(
        dir.path(),
        "model-00002-of-00002.safetensors",
        &file_bytes(&[("b", vec![1], vec![3.0])], None),
    );
    let index = json!({"metadata": {}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}});
    write(
        dir.path(),
        "model.safetensors.index.json",
        index.to_string().as_bytes(),
    );
    let c = Checkpoint::open(dir.path()).unwrap();
    let (t, data) = c.tensor("b").unwrap();
    assert_eq!(t.shape, vec![1]);
    assert_eq!(data, 3.0f32.to_le_bytes());
    assert_eq!(c.tensors().count(), 2);
    assert!(c.tensor("c").is_none());

    // The index must agree with the shards.
    let wrong = json!({"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}});
    write(
        dir.path(),
        "model.safetensors.index.json",
        wrong.to_string().as_bytes(),
    );
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(
        e.contains("tensor 'a'") && e.contains("no shard has it"),
        "{e}"
    );
    let missing = json!({"weight_map": {"a": "model-00003-of-00003.safetensors"}});
    write(
        dir.path(),
        "model.safetensors.index.json",
        missing.to_string().as_bytes(),
    );
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("not in the folder"), "{e}");
    let outside = json!({"weight_map": {"a": "../elsewhere.safetensors"}});
    write(
        dir.path(),
        "model.safetensors.index.json",
        outside.to_string().as_bytes(),
    );
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("outside the folder"), "{e}");
}

#[test]
fn a_tensor_in_two_shards_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "one.safetensors",
        &file_bytes(&[("a", vec![1], vec![1.0])], None),
    );
    write(
        dir.path(),
        "two.safetensors",
        &file_bytes(&[("a", vec![1], vec![2.0])], None),
    );
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("tensor 'a' is in both"), "{e}");
}

#[test]
fn pickles_are_refused_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    // Not even a valid pickle: it must not matter, since it is never opened.
    write(dir.path(), "pytorch_model.bin", b"\x80\x04not read");
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(
        e.contains("pytorch_model.bin is a pickled PyTorch checkpoint"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let empty = tempfile::tempdir().unwrap();
    let e = Checkpoint::open(empty.path()).err().unwrap().to_string();
    assert!(e.contains("no *.safetensors"), "{e}");
}

#[test]
fn the_shared_fixtures_open() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let Ok(entries) = std::fs::read_dir(&root) else {
        eprintln!("skipped: {} is not there", root.display());
        return;
    };
    let mut opened = 0;
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.join("config.json").is_file() {
            continue;
        }
        let c = Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        for t in c.tensors() {
            let (_, data) = c.tensor(&t.name).unwrap();
            assert_eq!(
                data.len() as u64,
                t.elements() * t.dtype.size(),
                "{}",
                t.name
            );
        }
        opened += 1;
    }
    assert!(opened >= 8, "only {opened} fixture folders");
    // A GPTQ checkpoint's packed weights are I32, its scales F16.
    let g = Checkpoint::open(&root.join("tiny-llama-gptq-4bit-g64")).unwrap();
    let q = g
        .tensors()
        .find(|t| t.name.ends_with(".qweight"))
        .expect("a qweight");
    assert_eq!(q.dtype, Dtype::I32);
    let s = g
        .tensors()
        .find(|t| t.name.ends_with(".scales"))
        .expect("scales");
    assert_eq!(s.dtype, Dtype::F16);
}

#[test]
fn the_fuzz_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/safetensors_reader");
    let mut accepted = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        if let Ok(h) = parse(&bytes) {
            assert_eq!(
                h.tensors.last().map_or(h.data_start, |t| t.end),
                bytes.len() as u64
            );
            accepted += 1;
        }
    }
    assert!(accepted >= 3, "the seeds include valid files");
}

#[test]
fn mutated_files_are_refused_or_consistent() {
    // A cheap stand-in for the fuzzer in every test run: byte flips and cuts
    // of a valid file, each refused or parsed into ranges inside the input.
    let base = two_tensors();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..5000 {
        let mut b = base.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        let cut = b.len() - (next() % 4) as usize;
        let b = &b[..cut];
        if let Ok(h) = parse(b) {
            for t in &h.tensors {
                assert!(
                    t.end <= b.len() as u64 && t.end - t.start == t.elements() * t.dtype.size()
                );
            }
        }
    }
}

#[test]
fn weights_files_win_over_other_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "output.safetensors",
        &file_bytes(&[("a", vec![1], vec![1.0])], None),
    );
    // A reference dump beside the weights (as the fixtures have) is not read.
    write(
        dir.path(),
        "dequant_layer0.safetensors",
        &file_bytes(&[("a", vec![1], vec![2.0])], None),
    );
    let c = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(c.tensor("a").unwrap().1, 1.0f32.to_le_bytes());
    assert_eq!(c.files.len(), 1);
}
