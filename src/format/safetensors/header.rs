//! The safetensors header: an 8-byte little-endian length, then that many
//! bytes of JSON (`{"name": {"dtype", "shape", "data_offsets"}, ...,
//! "__metadata__": {string: string}}`, maybe padded with spaces), then the
//! tensors' bytes. Offsets are relative to the end of the header; like the
//! reference implementation we require the tensors to tile the data exactly
//! (no overlap, no gap, nothing after the last), which also catches a
//! truncated download by the tensor it cuts.

use std::collections::BTreeMap;

use serde_json::Value;

use super::SafetensorsError;
use crate::format::gguf::human_bytes;

/// A header larger than this is refused before it is read (the reference
/// implementation's limit too): a corrupt length must not become a huge
/// allocation.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

impl Dtype {
    fn from_name(s: &str) -> Option<Dtype> {
        Some(match s {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E5M2" => Dtype::F8E5M2,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "F32" => Dtype::F32,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            "F64" => Dtype::F64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
            Dtype::F64 => "F64",
        }
    }

    pub fn size(self) -> u64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// In file order.
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
    /// Where the tensor data starts (8 + the header length).
    pub data_start: u64,
}

fn err(message: String) -> SafetensorsError {
    SafetensorsError::new(message)
}

/// Parses the header of a whole file's bytes (or of a prefix, when `file_len`
/// says how long the file is: only the header needs to be in `bytes`).
pub fn parse(bytes: &[u8]) -> Result<Header, SafetensorsError> {
    parse_with_len(bytes, bytes.len() as u64)
}

pub(super) fn parse_with_len(bytes: &[u8], file_len: u64) -> Result<Header, SafetensorsError> {
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(err(format!(
            "not a safetensors file: {} bytes, shorter than the 8-byte header length",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(err(format!(
            "not a safetensors file (or a corrupt one): its header length is {n} bytes, past the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    let data_start = 8 + n;
    if data_start > file_len || data_start > bytes.len() as u64 {
        return Err(err(format!(
            "the header says {n} bytes of JSON but the file has {} after the length (truncated?)",
            file_len.saturating_sub(8)
        )));
    }
    let json = &bytes[8..data_start as usize];
    if json.first() != Some(&b'{') {
        return Err(err(
            "not a safetensors file: the header is not a JSON object".to_string(),
        ));
    }
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| err(format!("the header is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(err("the header is not a JSON object".to_string()));
    };
    let data_len = file_len - data_start;
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(map.len());
    for (name, entry) in &map {
        if name == "__metadata__" {
            let Value::Object(m) = entry else {
                return Err(err("'__metadata__' is not an object".to_string()));
            };
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(err(format!("metadata '{k}' is not a string")));
                };
                metadata.insert(k.clone(), s.clone());
            }
            continue;
        }
        tensors.push(tensor(name, entry, data_start, data_len)?);
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    let mut at = data_start;
    for t in &tensors {
        if t.start != at {
            let what = if t.start < at {
                "overlaps the one before it"
            } else {
                "leaves a gap before it"
            };
            return Err(err(format!(
                "tensor '{}' at data offset {} {what} (expected {})",
                t.name,
                t.start - data_start,
                at - data_start
            )));
        }
        at = t.end;
    }
    if at != file_len {
        return Err(err(format!(
            "{} after the last tensor are not described by the header",
            human_bytes(file_len - at)
        )));
    }
    Ok(Header {
        tensors,
        metadata,
        data_start,
    })
}

fn tensor(
    name: &str,
    entry: &Value,
    data_start: u64,
    data_len: u64,
) -> Result<TensorInfo, SafetensorsError> {
    let bad = |what: &str| err(format!("tensor '{name}': {what}"));
    let Value::Object(e) = entry else {
        return Err(bad("its entry is not an object"));
    };
    let dtype_name = e
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no string 'dtype'"))?;
    let dtype = Dtype::from_name(dtype_name)
        .ok_or_else(|| bad(&format!("unknown dtype '{dtype_name}'")))?;
    let shape = e
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no 'shape' list"))?
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| bad("a dimension of 'shape' is not a whole number"))
        })
        .collect::<Result<Vec<u64>, _>>()?;
    let offsets = e
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|o| o.len() == 2)
        .ok_or_else(|| bad("no 'data_offsets' pair"))?;
    let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
        return Err(bad("'data_offsets' are not whole numbers"));
    };
    if begin > end {
        return Err(bad(&format!(
            "'data_offsets' run backwards ({begin} > {end})"
        )));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(&format!("shape {shape:?} overflows")))?;
    if bytes != end - begin {
        return Err(bad(&format!(
            "{} {shape:?} needs {bytes} bytes but 'data_offsets' give {}",
            dtype.name(),
            end - begin
        )));
    }
    if end > data_len {
        return Err(bad(&format!(
            "needs {} at data offset {} but the file has {} of data (truncated download?)",
            human_bytes(bytes),
            begin,
            human_bytes(data_len)
        )));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
        start: data_start + begin,
        end: data_start + end,
    })
}
