//! The start of a safetensors file for tensors laid end to end in the
//! order given: the header's length, then its JSON padded to 8 bytes, as
//! the format's readers expect. Writers of test and benchmark folders
//! stream the tensors' bytes after it.

use serde_json::{json, Map, Value};

use super::Dtype;

/// Length prefix and header for `(name, dtype, shape)` in file order.
pub fn header<'a>(tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize])>) -> Vec<u8> {
    let mut entries = Map::new();
    let mut at = 0u64;
    for (name, dtype, shape) in tensors {
        let bytes = shape.iter().product::<usize>() as u64 * dtype.size();
        entries.insert(
            name.to_string(),
            json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [at, at + bytes]}),
        );
        at += bytes;
    }
    let mut h = serde_json::to_vec(&Value::Object(entries)).expect("JSON of plain values");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_header_parses_back() {
        let h = header([
            ("a", Dtype::F16, &[2usize, 3][..]),
            ("b", Dtype::I32, &[5][..]),
        ]);
        let mut file = h.clone();
        file.resize(h.len() + 12 + 20, 0);
        let parsed = super::super::parse(&file).unwrap();
        let b = parsed.tensors.iter().find(|t| t.name == "b").unwrap();
        assert_eq!((b.start, b.end), (h.len() as u64 + 12, h.len() as u64 + 32));
        assert_eq!(b.shape, [5]);
    }
}
