//! Corrupt GGUF files, each made from a valid one written by our writer, with
//! the words its error must contain.

use ggml::GgmlType;
use llm::format::gguf::{Array, GgufWriter, Layout, Value};

pub struct Case {
    pub name: String,
    pub bytes: Vec<u8>,
    pub expect: &'static str,
}

/// A small valid llama-shaped model: metadata of several types, three tensors.
pub fn base_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.name", Value::String("corrupt-me".into()));
    w.set("llama.block_count", Value::U32(1));
    w.set("llama.embedding_length", Value::U32(64));
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["a".into(), "b".into(), "<s>".into()])),
    );
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.add_tensor(
        "token_embd.weight",
        GgmlType::Q8_0,
        &[64, 3],
        vec![1; 34 * 2 * 3],
    )
    .unwrap();
    w.add_tensor("blk.0.attn_norm.weight", GgmlType::F32, &[64], vec![2; 256])
        .unwrap();
    w.add_tensor("output.weight", GgmlType::Q4_K, &[256, 2], vec![3; 144 * 2])
        .unwrap();
    w
}

pub fn base() -> (Vec<u8>, Layout) {
    base_writer().to_bytes()
}

fn put_u32(b: &mut [u8], at: u64, v: u32) {
    b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offsets of the fields of tensor info `i`: (n_dims, first dim, type, offset).
fn tensor_fields(bytes: &[u8], layout: &Layout, i: usize) -> (u64, u64, u64, u64) {
    let at = layout.tensor_info_offsets[i];
    let name_len = u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap());
    let n_dims_at = at + 8 + name_len;
    let n_dims = u32::from_le_bytes(
        bytes[n_dims_at as usize..n_dims_at as usize + 4]
            .try_into()
            .unwrap(),
    );
    let dims_at = n_dims_at + 4;
    let type_at = dims_at + 8 * u64::from(n_dims);
    (n_dims_at, dims_at, type_at, type_at + 4)
}

fn with(name: impl Into<String>, expect: &'static str, bytes: Vec<u8>) -> Case {
    Case {
        name: name.into(),
        bytes,
        expect,
    }
}

fn written(name: &str, expect: &'static str, edit: impl FnOnce(&mut GgufWriter)) -> Case {
    let mut w = base_writer();
    edit(&mut w);
    with(name, expect, w.to_bytes().0)
}

pub fn cases() -> Vec<Case> {
    let (good, layout) = base();
    let mut cases = Vec::new();

    // Truncated at every section boundary and inside each section.
    let mut cuts: Vec<(String, u64)> = vec![
        ("magic".into(), 2),
        ("after-magic".into(), 4),
        ("after-version".into(), 8),
        ("after-tensor-count".into(), 16),
        ("after-kv-count".into(), layout.metadata_offset),
    ];
    for (i, &at) in layout.kv_offsets.iter().enumerate().skip(1) {
        cuts.push((format!("before-kv-{i}"), at));
        cuts.push((format!("inside-kv-{i}"), at + 5));
    }
    for (i, &at) in layout.tensor_info_offsets.iter().enumerate() {
        cuts.push((format!("before-tensor-info-{i}"), at));
        cuts.push((format!("inside-tensor-info-{i}"), at + 12));
    }
    cuts.push(("before-padding".into(), layout.tensor_infos_end));
    cuts.push(("before-data".into(), layout.data_offset));
    for (i, &at) in layout.tensor_offsets.iter().enumerate() {
        cuts.push((format!("inside-tensor-data-{i}"), at + 7));
    }
    cuts.push(("last-byte".into(), layout.file_len - 1));
    for (name, at) in cuts {
        assert!(at < layout.file_len);
        cases.push(with(
            format!("truncated-{name}"),
            "truncated",
            good[..at as usize].to_vec(),
        ));
    }
    cases.push(with("empty", "empty", Vec::new()));

    let mut b = good.clone();
    b[..4].copy_from_slice(b"GGML");
    cases.push(with("bad-magic", "not a GGUF file", b));
    let mut b = good.clone();
    b[..4].copy_from_slice(b"\x7fELF");
    cases.push(with("elf-magic", "not a GGUF file", b));
    for (v, expect) in [
        (1, "GGUF version 1 is not supported"),
        (4, "unsupported GGUF version 4"),
        (0x0300_0000, "big-endian"),
    ] {
        let mut b = good.clone();
        put_u32(&mut b, 4, v);
        cases.push(with(format!("version-{v:x}"), expect, b));
    }

    // Absurd counts and lengths.
    let mut b = good.clone();
    put_u64(&mut b, 8, 1 << 63);
    cases.push(with(
        "tensor-count-2^63",
        "claims 9223372036854775808 entries",
        b,
    ));
    let mut b = good.clone();
    put_u64(&mut b, 16, u64::MAX);
    cases.push(with(
        "kv-count-max",
        "claims 18446744073709551615 entries",
        b,
    ));
    let mut b = good.clone();
    put_u64(&mut b, layout.kv_offsets[0], 1 << 40);
    cases.push(with("key-length-2^40", "needs 1.00 TiB", b));
    cases.push(written("string-value-2^40", "needs 1.00 TiB", |_| {}));
    {
        // general.name's value length sits after its key and type.
        let last = cases.len() - 1;
        let at = layout.kv_offsets[1] + 8 + "general.name".len() as u64 + 4;
        put_u64(&mut cases[last].bytes, at, 1 << 40);
    }
    // Sizes read in the largest unit, not as ten digits of GiB.
    let mut b = good.clone();
    put_u64(&mut b, layout.kv_offsets[0], 1 << 63);
    cases.push(with("key-length-2^63", "needs 8.00 EiB", b));
    // One entry is an entry (the count agrees with its noun).
    let mut b = good[..layout.metadata_offset as usize].to_vec();
    put_u64(&mut b, 16, 1);
    cases.push(with("kv-count-1-nothing-left", "claims 1 entry,", b));
    let tokens_at = layout.kv_offsets[5] + 8 + "tokenizer.ggml.tokens".len() as u64 + 4 + 4;
    let mut b = good.clone();
    put_u64(&mut b, tokens_at, 1 << 62);
    cases.push(with(
        "array-length-2^62",
        "claims 4611686018427387904 entries",
        b,
    ));

    // Shapes.
    let (n_dims_at, dims_at, type_at, offset_at) = tensor_fields(&good, &layout, 0);
    let mut b = good.clone();
    put_u64(&mut b, dims_at, 1 << 40);
    put_u64(&mut b, dims_at + 8, 1 << 40);
    cases.push(with("dims-product-overflows", "element count overflows", b));
    let mut b = good.clone();
    put_u64(&mut b, dims_at + 8, u64::MAX);
    cases.push(with("negative-dim", "negative dimension", b));
    let mut b = good.clone();
    put_u64(&mut b, dims_at, 33);
    cases.push(with(
        "row-not-whole-blocks",
        "not a multiple of its block size 32",
        b,
    ));
    let mut b = good.clone();
    put_u32(&mut b, n_dims_at, 9);
    cases.push(with("too-many-dims", "has 9 dimensions", b));
    let (_, f32_dims_at, f32_type_at, _) = tensor_fields(&good, &layout, 1);
    let mut b = good.clone();
    put_u32(&mut b, f32_type_at, GgmlType::F64.id());
    put_u64(&mut b, f32_dims_at, 1 << 61);
    // 2^61 f64 elements fit in i64 but their 2^64 bytes do not fit in u64.
    cases.push(with("size-overflows", "size in bytes overflows", b));

    // Offsets.
    let mut b = good.clone();
    put_u64(&mut b, offset_at, 1 << 20);
    cases.push(with("offset-past-end", "but the file ends at", b));
    let mut b = good.clone();
    put_u64(&mut b, offset_at, u64::MAX - 31);
    cases.push(with("offset-overflows", "beyond 16 EiB", b));
    let mut b = good.clone();
    put_u64(&mut b, offset_at, 4);
    cases.push(with(
        "misaligned-data",
        "not a multiple of the alignment 32",
        b,
    ));
    cases.push(written(
        "alignment-not-power-of-two",
        "not a power of two",
        |w| {
            w.set("general.alignment", Value::U32(24));
        },
    ));

    // Types.
    let mut b = good.clone();
    put_u32(&mut b, type_at, 99);
    cases.push(with("unknown-type-id", "unknown ggml type id 99", b));
    let mut b = good.clone();
    put_u32(&mut b, type_at, 4);
    cases.push(with("removed-type-id", "type id 4 (Q4_2) was removed", b));
    let value_type_at = layout.kv_offsets[1] + 8 + "general.name".len() as u64;
    let mut b = good.clone();
    put_u32(&mut b, value_type_at, 13);
    cases.push(with("unknown-value-type", "unknown value type 13", b));
    let mut b = good.clone();
    put_u32(&mut b, tokens_at - 4, 9);
    cases.push(with("array-of-arrays", "array of arrays", b));
    let bool_at = layout.kv_offsets[6] + 8 + "tokenizer.ggml.add_bos_token".len() as u64 + 4;
    let mut b = good.clone();
    b[bool_at as usize] = 2;
    cases.push(with("bool-byte-2", "must be 0 or 1", b));

    // Names and keys.
    let name_at = (layout.tensor_info_offsets[1] + 8) as usize;
    let mut b = good.clone();
    b[name_at] = 0xff;
    cases.push(with("invalid-utf8-name", "not valid UTF-8", b));
    cases.push(duplicate_tensor_name());
    cases.push(duplicate_key());
    cases.push(written(
        "alignment-wrong-type",
        "'general.alignment' has type string, expected u32",
        |w| {
            w.set("general.alignment", Value::String("32".into()));
        },
    ));
    cases.push(written(
        "block-count-wrong-type",
        "'llama.block_count' has type f32, expected an unsigned integer",
        |w| {
            w.set("llama.block_count", Value::F32(1.0));
        },
    ));
    cases.push(written(
        "split-count-wrong-type",
        "'split.count' should be a count",
        |w| {
            w.set("split.count", Value::String("two".into()));
        },
    ));
    cases.push(written(
        "absurd-layer-count",
        "more layers than any model has",
        |w| {
            w.set("llama.block_count", Value::U64(1 << 40));
        },
    ));
    cases
}

fn duplicate_tensor_name() -> Case {
    // Two tensors whose names have the same length, then one renamed in place.
    let mut w = base_writer();
    w.add_tensor("aaaa", GgmlType::F32, &[1], vec![0; 4])
        .unwrap();
    w.add_tensor("bbbb", GgmlType::F32, &[1], vec![0; 4])
        .unwrap();
    let (mut b, l) = w.to_bytes();
    let at = (l.tensor_info_offsets[4] + 8) as usize;
    b[at..at + 4].copy_from_slice(b"aaaa");
    with("duplicate-tensor-name", "duplicate tensor name 'aaaa'", b)
}

fn duplicate_key() -> Case {
    let mut w = base_writer();
    w.set("x.aaaa", Value::U8(1));
    w.set("x.bbbb", Value::U8(2));
    let (mut b, l) = w.to_bytes();
    let n = l.kv_offsets.len();
    let at = (l.kv_offsets[n - 1] + 8) as usize;
    b[at..at + 6].copy_from_slice(b"x.aaaa");
    with("duplicate-key", "duplicate metadata key 'x.aaaa'", b)
}
