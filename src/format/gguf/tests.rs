//! Reader and writer checked against each other, and the reader against
//! every prefix and many mutations of a valid file.

use ggml::GgmlType;

use super::*;

fn all_scalars() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(0xfe)),
        ("t.i8", Value::I8(-7)),
        ("t.u16", Value::U16(0xbeef)),
        ("t.i16", Value::I16(-12345)),
        ("t.u32", Value::U32(0xdead_beef)),
        ("t.i32", Value::I32(-123_456_789)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool.true", Value::Bool(true)),
        ("t.bool.false", Value::Bool(false)),
        ("t.string", Value::String("héllo, 世界 🙂".into())),
        ("t.string.empty", Value::String(String::new())),
        ("t.u64", Value::U64(u64::MAX - 1)),
        ("t.i64", Value::I64(i64::MIN + 3)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
    ]
}

fn all_arrays() -> Vec<(&'static str, Value)> {
    vec![
        ("a.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        ("a.i8", Value::Array(Array::I8(vec![-128, 0, 127]))),
        ("a.u16", Value::Array(Array::U16(vec![1, 65535]))),
        ("a.i16", Value::Array(Array::I16(vec![-32768, 32767]))),
        ("a.u32", Value::Array(Array::U32(vec![7; 5]))),
        ("a.i32", Value::Array(Array::I32(vec![-1, 2, -3]))),
        ("a.f32", Value::Array(Array::F32(vec![0.5, -0.25, 1e30]))),
        ("a.bool", Value::Array(Array::Bool(vec![true, false, true]))),
        (
            "a.string",
            Value::Array(Array::String(vec![
                "a".into(),
                String::new(),
                "<|im_end|>".into(),
            ])),
        ),
        ("a.u64", Value::Array(Array::U64(vec![u64::MAX, 0]))),
        ("a.i64", Value::Array(Array::I64(vec![i64::MIN, i64::MAX]))),
        ("a.f64", Value::Array(Array::F64(vec![-0.0, 1e-300]))),
        ("a.empty", Value::Array(Array::U32(vec![]))),
    ]
}

use crate::model::synth::Rng;

/// A small model with every metadata type and one tensor of every ggml type.
/// (name, type, dims, data) of each tensor written.
type Written = Vec<(String, GgmlType, Vec<u64>, Vec<u8>)>;

fn sample(version: u32) -> (Vec<u8>, Layout, Written) {
    let mut w = GgufWriter::new().with_version(version);
    w.set("general.architecture", Value::String("llama".into()));
    for (k, v) in all_scalars().into_iter().chain(all_arrays()) {
        w.set(k, v);
    }
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut tensors = Vec::new();
    for (i, ty) in GgmlType::all().enumerate() {
        let dims = vec![ty.block_size() * 2, 3];
        let size = ty.row_size(dims[0]).unwrap() * 3;
        let data = rng.bytes(size as usize);
        let name = format!("blk.{i}.{}", ty.name().to_lowercase());
        w.add_tensor(&name, ty, &dims, data.clone()).unwrap();
        tensors.push((name, ty, dims, data));
    }
    let (bytes, layout) = w.to_bytes();
    (bytes, layout, tensors)
}

#[test]
fn every_value_type_round_trips() {
    for version in [2, 3] {
        let (bytes, _, _) = sample(version);
        let header = parse(&bytes).unwrap();
        assert_eq!(header.version, version);
        for (k, v) in all_scalars().into_iter().chain(all_arrays()) {
            assert_eq!(header.metadata.get(k), Some(&v), "{k}");
        }
        assert_eq!(
            header.metadata.len(),
            1 + all_scalars().len() + all_arrays().len()
        );
    }
}

#[test]
fn every_tensor_type_round_trips_with_its_bytes() {
    let (bytes, layout, tensors) = sample(3);
    let header = parse(&bytes).unwrap();
    assert_eq!(header.data_offset, layout.data_offset);
    assert_eq!(header.tensors.len(), tensors.len());
    for (info, (name, ty, dims, data)) in header.tensors.iter().zip(&tensors) {
        assert_eq!(&info.name, name);
        assert_eq!(info.ty, *ty);
        assert_eq!(&info.dims, dims);
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(info.offset % header.alignment, 0);
        let at = info.offset as usize;
        assert_eq!(&bytes[at..at + data.len()], &data[..], "{name}");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let file = GgufFile::open(&path).unwrap();
    for (name, _, _, data) in &tensors {
        assert_eq!(file.tensor(name).unwrap().data, &data[..]);
    }
}

#[test]
fn custom_alignment_is_honoured() {
    let mut w = GgufWriter::new();
    w.set(ALIGNMENT_KEY, Value::U32(64));
    w.add_tensor("a", GgmlType::F32, &[3], vec![0; 12]).unwrap();
    w.add_tensor("b", GgmlType::F32, &[5], vec![1; 20]).unwrap();
    let (bytes, layout) = w.to_bytes();
    let header = parse(&bytes).unwrap();
    assert_eq!(header.alignment, 64);
    assert_eq!(header.data_offset % 64, 0);
    assert_eq!(header.tensors[1].offset, layout.tensor_offsets[1]);
    assert_eq!(header.tensors[1].offset - header.tensors[0].offset, 64);
}

#[test]
fn vocabulary_only_file_has_no_tensors() {
    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    let (bytes, _) = w.to_bytes();
    let header = parse(&bytes).unwrap();
    assert!(header.tensors.is_empty());
}

#[test]
fn every_prefix_of_a_file_is_an_error_not_a_panic() {
    let (bytes, _, _) = sample(3);
    for len in 0..bytes.len() {
        let err = parse(&bytes[..len]).expect_err("a truncated file must not parse");
        assert!(
            err.message.contains("truncated")
                || err.message.contains("empty")
                || err.message.contains("claims"),
            "cut at {len}: {err}"
        );
    }
}

#[test]
fn mutated_files_never_panic() {
    let (bytes, _, _) = sample(3);
    let mut rng = Rng::new(12345);
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.next_u64() % 4 {
            let at = (rng.next_u64() % b.len() as u64) as usize;
            b[at] = rng.next_u64() as u8;
        }
        // Only the absence of a panic matters here; many mutations stay valid.
        let _ = parse(&b);
    }
}

#[test]
fn writer_refuses_wrong_sizes() {
    let mut w = GgufWriter::new();
    assert!(w
        .add_tensor("x", GgmlType::Q4_0, &[31], vec![0; 18])
        .is_err());
    assert!(w
        .add_tensor("x", GgmlType::Q4_0, &[32], vec![0; 17])
        .is_err());
    assert!(w
        .add_tensor("x", GgmlType::Q4_0, &[32], vec![0; 18])
        .is_ok());
    assert!(w
        .add_tensor("x", GgmlType::Q4_0, &[32], vec![0; 18])
        .is_err());
}

#[test]
fn metadata_getters_check_types() {
    let (bytes, _, _) = sample(3);
    let md = parse(&bytes).unwrap().metadata;
    assert_eq!(md.u64("t.u16").unwrap(), Some(0xbeef));
    assert!(md.u64("t.i8").is_err());
    assert_eq!(md.f64("t.f32").unwrap(), Some(f64::from(-1.5e-7f32)));
    assert_eq!(md.str("t.string").unwrap(), Some("héllo, 世界 🙂"));
    assert!(md.str("t.u8").is_err());
    assert_eq!(md.bool("t.bool.true").unwrap(), Some(true));
    assert_eq!(md.u64("missing").unwrap(), None);
}

#[test]
fn split_model_opens_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let names = [["a", "b"], ["c", "d"], ["e", "f"]];
    for (no, pair) in names.iter().enumerate() {
        let mut w = GgufWriter::new();
        w.set("split.no", Value::U16(no as u16));
        w.set("split.count", Value::U16(3));
        w.set("split.tensors.count", Value::I32(6));
        for (k, n) in pair.iter().enumerate() {
            w.add_tensor(n, GgmlType::F32, &[2], vec![(no * 2 + k) as u8; 8])
                .unwrap();
        }
        w.write_to(&dir.path().join(format!("m-{:05}-of-00003.gguf", no + 1)))
            .unwrap();
    }
    // Any part's name opens the whole model.
    let file = GgufFile::open(&dir.path().join("m-00002-of-00003.gguf")).unwrap();
    assert_eq!(file.parts().len(), 3);
    assert_eq!(file.tensors().len(), 6);
    assert_eq!(file.tensor("e").unwrap().data, &[4; 8]);
    assert_eq!(file.tensor("d").unwrap().info.part, 1);

    std::fs::remove_file(dir.path().join("m-00003-of-00003.gguf")).unwrap();
    let err = GgufFile::open(&dir.path().join("m-00001-of-00003.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("part 3 of this 3-part split model is missing"),
        "{err}"
    );
}

#[test]
fn a_file_cut_in_its_tensor_data_keeps_its_header() {
    let (bytes, layout, _) = sample(3);
    let whole = parse_truncated(&bytes).unwrap();
    assert!(whole.1.is_none(), "nothing is missing from a whole file");
    // Cut a few bytes into the data: the header parses, every tensor is
    // still described, and what is missing is counted.
    let cut_at = layout.data_offset as usize + 5;
    let (header, missing) = parse_truncated(&bytes[..cut_at]).unwrap();
    let m = missing.expect("a cut file misses data");
    assert_eq!(header.tensors.len(), whole.0.tensors.len());
    assert_eq!(m.absent + m.cut, header.tensors.len());
    assert_eq!(m.file_len, cut_at as u64);
    assert_eq!(m.full_len, bytes.len() as u64);
    assert!(
        parse(&bytes[..cut_at]).is_err(),
        "the strict parse still refuses it"
    );
    // A header cut short is still an error.
    assert!(parse_truncated(&bytes[..layout.data_offset as usize / 2]).is_err());
}
