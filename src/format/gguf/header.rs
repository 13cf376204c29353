//! Parsing a GGUF header (metadata and tensor infos) from bytes.
//!
//! Nothing in the bytes is trusted: every length, count, dimension product and
//! offset is checked for overflow and against the bytes actually present before
//! it is used, and no allocation is sized by a count the file could not hold.

use std::collections::HashMap;

use ggml::GgmlType;

use super::error::{human_bytes, human_offset, GgufError};
use super::value::{Array, Value, ValueType};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Metadata in file order, with lookup by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// Adds an entry; returns false (and changes nothing) if the key exists.
    pub fn insert(&mut self, key: String, value: Value) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        true
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn wrong_type(key: &str, value: &Value, expected: &str) -> GgufError {
        GgufError::new(format!(
            "metadata key '{key}' has type {}, expected {expected}",
            value.type_description()
        ))
    }

    /// An optional non-negative integer key; present with another type is an error.
    pub fn u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| Self::wrong_type(key, v, "an unsigned integer"))
            })
            .transpose()
    }

    /// An optional numeric key, read as a float.
    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| Self::wrong_type(key, v, "a number"))
            })
            .transpose()
    }

    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Self::wrong_type(key, v, "a string"))
            })
            .transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| Self::wrong_type(key, v, "a bool"))
            })
            .transpose()
    }

    /// A key that is either one integer for every layer or an array with one per layer.
    pub fn per_layer_u64(&self, key: &str, n_layer: u64) -> Result<Option<Vec<u64>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if let Some(x) = v.as_u64() {
            return Ok(Some(vec![x; n_layer.min(1 << 16) as usize]));
        }
        let expected = "an unsigned integer or an array of them";
        let array = v
            .as_array()
            .ok_or_else(|| Self::wrong_type(key, v, expected))?;
        if array.len() as u64 != n_layer {
            return Err(GgufError::new(format!(
                "metadata key '{key}' has {} values for {n_layer} layers",
                array.len()
            )));
        }
        (0..array.len())
            .map(|i| {
                array
                    .get(i)
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| Self::wrong_type(key, v, expected))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// Where one tensor's data lies, checked to be inside the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// Dimensions in ggml order: `dims[0]` is the contiguous one.
    pub dims: Vec<u64>,
    /// Absolute offset of the first byte in its file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
    /// Which part of a split model holds the data (0 for single files).
    pub part: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        // Checked not to overflow when the header was parsed.
        self.dims.iter().product()
    }
}

/// Everything before the tensor data.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset where tensor data starts.
    pub data_offset: u64,
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

type Result<T> = std::result::Result<T, GgufError>;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::new(format!(
                "{} at offset {} needs {} but the file ends at {} (truncated download?)",
                what(),
                human_offset(self.pos as u64),
                human_bytes(n),
                human_offset(self.buf.len() as u64),
            )));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let bytes = self.take(N as u64, what)?;
        Ok(bytes.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A u64 length-prefixed string. Invalid UTF-8 is an error when `strict`
    /// (keys, tensor names) and is replaced otherwise (values).
    fn string(&mut self, what: &dyn Fn() -> String, strict: bool) -> Result<String> {
        let start = self.pos;
        let len = self.u64(&|| format!("the length of {}", what()))?;
        let bytes = self.take(len, &|| format!("{} ({} long)", what(), human_bytes(len)))?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) if strict => Err(GgufError::new(format!(
                "{} at offset {start} is not valid UTF-8",
                what()
            ))),
            Err(_) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        }
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in
    /// what is left, so that a corrupt count never sizes an allocation.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<usize> {
        let fits = self.remaining() / min_size;
        if count > fits {
            return Err(GgufError::new(format!(
                "{} at offset {} claims {count} {}, but the {} left in the file can hold at most {fits} (corrupt or truncated file)",
                what(),
                self.pos,
                if count == 1 { "entry" } else { "entries" },
                human_bytes(self.remaining()),
            )));
        }
        Ok(count as usize)
    }
}

/// Parses the header of a GGUF file whose whole contents are `buf`.
pub fn parse(buf: &[u8]) -> Result<Header> {
    parse_with(buf, buf.len() as u64)
}

/// What a file cut short lacks: the tensors whose data lies past its end.
#[derive(Clone, Debug, PartialEq)]
pub struct Missing {
    pub file_len: u64,
    /// Tensors with no byte in the file, and tensors cut part way.
    pub absent: usize,
    pub cut: usize,
    /// Bytes of tensor data the file lacks.
    pub bytes: u64,
    /// Where the tensor data would end.
    pub full_len: u64,
}

/// Parses a header that is whole although the tensor data after it is cut
/// short (a truncated download): every tensor is placed as the header says,
/// and what lies past the end is counted. None when nothing is missing.
pub fn parse_truncated(buf: &[u8]) -> Result<(Header, Option<Missing>)> {
    let header = parse_with(buf, u64::MAX)?;
    let file_len = buf.len() as u64;
    let mut m = Missing {
        file_len,
        absent: 0,
        cut: 0,
        bytes: 0,
        full_len: header.data_offset.max(file_len),
    };
    for t in &header.tensors {
        let end = t.offset.saturating_add(t.size);
        m.full_len = m.full_len.max(end);
        if end > file_len {
            if t.offset >= file_len {
                m.absent += 1;
            } else {
                m.cut += 1;
            }
            m.bytes += end - t.offset.max(file_len);
        }
    }
    let cut = m.absent + m.cut > 0 || header.data_offset > file_len;
    Ok((header, cut.then_some(m)))
}

fn parse_with(buf: &[u8], file_len: u64) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0 };
    let (version, n_tensors, metadata) = parse_start(&mut c)?;
    let alignment = alignment(&metadata)?;
    let (tensors, infos_end) = parse_tensor_infos(&mut c, n_tensors)?;
    let data_offset = infos_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::new("tensor data offset overflows"))?;
    let tensors = place_tensors(tensors, data_offset, alignment, file_len)?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Parses only the format version and the metadata at the start of `buf`,
/// which may be a prefix of a file: what a tokenizer needs from a model whose
/// tensors are absent or cut short.
pub fn parse_metadata(buf: &[u8]) -> Result<(u32, Metadata)> {
    let mut c = Cursor { buf, pos: 0 };
    let (version, _, metadata) = parse_start(&mut c)?;
    Ok((version, metadata))
}

/// Magic, version, counts and metadata: (version, tensor count, metadata).
fn parse_start(c: &mut Cursor) -> Result<(u32, u64, Metadata)> {
    let buf = c.buf;
    if buf.is_empty() {
        return Err(GgufError::new("the file is empty, not a GGUF model"));
    }
    let magic = c.take(4, &|| "the GGUF magic".into())?;
    if magic != MAGIC {
        return Err(GgufError::new(format!(
            "not a GGUF file: it starts with {} where GGUF files start with \"GGUF\"",
            describe_magic(magic)
        )));
    }
    let version = c.u32(&|| "the format version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(GgufError::new(
                "GGUF version 1 is not supported (a file from before August 2023; convert the model again)",
            ))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(GgufError::new(
                "big-endian GGUF files are not supported (this file was written for a big-endian machine)",
            ))
        }
        v => {
            return Err(GgufError::new(format!(
                "unsupported GGUF version {v} (versions 2 and 3 are supported)"
            )))
        }
    }
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv = c.u64(&|| "the metadata count".into())?;

    let metadata = parse_metadata_entries(c, n_kv)?;
    Ok((version, n_tensors, metadata))
}

fn describe_magic(magic: &[u8]) -> String {
    if magic.iter().all(|b| b.is_ascii_graphic()) {
        format!("\"{}\"", String::from_utf8_lossy(magic))
    } else {
        let hex: Vec<String> = magic.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// Smallest metadata entry: a one-byte key, the type tag and a one-byte value.
const MIN_KV_SIZE: u64 = 8 + 1 + 4 + 1;

fn parse_metadata_entries(c: &mut Cursor, n_kv: u64) -> Result<Metadata> {
    let n_kv = c.check_count(n_kv, MIN_KV_SIZE, &|| "the metadata count".into())?;
    let mut metadata = Metadata::default();
    for i in 0..n_kv {
        let key_offset = c.pos;
        let key = c.string(&|| format!("the key of metadata entry {i}"), true)?;
        if key.is_empty() {
            return Err(GgufError::new(format!(
                "metadata entry {i} at offset {key_offset} has an empty key"
            )));
        }
        let what = |s: &str| format!("{s} of metadata key '{key}'");
        let type_id = c.u32(&|| what("the type"))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| {
            GgufError::new(format!(
                "metadata key '{key}' at offset {key_offset} has unknown value type {type_id}"
            ))
        })?;
        let value = parse_value(c, ty, &|| what("the value"))?;
        if !metadata.insert(key.clone(), value) {
            return Err(GgufError::new(format!(
                "duplicate metadata key '{key}' at offset {key_offset}"
            )));
        }
    }
    Ok(metadata)
}

fn parse_value(c: &mut Cursor, ty: ValueType, what: &dyn Fn() -> String) -> Result<Value> {
    Ok(match ty {
        ValueType::U8 => Value::U8(c.u8(what)?),
        ValueType::I8 => Value::I8(c.u8(what)? as i8),
        ValueType::U16 => Value::U16(c.u16(what)?),
        ValueType::I16 => Value::I16(c.u16(what)? as i16),
        ValueType::U32 => Value::U32(c.u32(what)?),
        ValueType::I32 => Value::I32(c.u32(what)? as i32),
        ValueType::F32 => Value::F32(f32::from_bits(c.u32(what)?)),
        ValueType::U64 => Value::U64(c.u64(what)?),
        ValueType::I64 => Value::I64(c.u64(what)? as i64),
        ValueType::F64 => Value::F64(f64::from_bits(c.u64(what)?)),
        ValueType::Bool => Value::Bool(parse_bool(c, what)?),
        ValueType::String => Value::String(c.string(what, false)?),
        ValueType::Array => Value::Array(parse_array(c, what)?),
    })
}

fn parse_bool(c: &mut Cursor, what: &dyn Fn() -> String) -> Result<bool> {
    let offset = c.pos;
    match c.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(GgufError::new(format!(
            "{} at offset {offset} is a bool with byte value {b} (must be 0 or 1)",
            what()
        ))),
    }
}

fn parse_array(c: &mut Cursor, what: &dyn Fn() -> String) -> Result<Array> {
    let offset = c.pos;
    let elem_id = c.u32(&|| format!("the element type of {}", what()))?;
    let elem = match ValueType::from_id(elem_id) {
        Some(ValueType::Array) => {
            return Err(GgufError::new(format!(
                "{} at offset {offset} is an array of arrays, which GGUF does not allow",
                what()
            )))
        }
        Some(t) => t,
        None => {
            return Err(GgufError::new(format!(
                "{} at offset {offset} is an array of unknown value type {elem_id}",
                what()
            )))
        }
    };
    let count = c.u64(&|| format!("the length of {}", what()))?;
    let n = c.check_count(count, elem.min_encoded_size(), &|| {
        format!("{} (array of {elem})", what())
    })?;
    let item = |i: usize| move || format!("element {i} of {}", what());
    macro_rules! collect {
        ($variant:ident, $read:expr) => {{
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push($read(c, &item(i))?);
            }
            Array::$variant(v)
        }};
    }
    Ok(match elem {
        ValueType::U8 => Array::U8(c.take(n as u64, what)?.to_vec()),
        ValueType::I8 => Array::I8(c.take(n as u64, what)?.iter().map(|&b| b as i8).collect()),
        ValueType::U16 => collect!(U16, |c: &mut Cursor, w: &dyn Fn() -> String| c.u16(w)),
        ValueType::I16 => collect!(I16, |c: &mut Cursor, w: &dyn Fn() -> String| c
            .u16(w)
            .map(|v| v as i16)),
        ValueType::U32 => collect!(U32, |c: &mut Cursor, w: &dyn Fn() -> String| c.u32(w)),
        ValueType::I32 => collect!(I32, |c: &mut Cursor, w: &dyn Fn() -> String| c
            .u32(w)
            .map(|v| v as i32)),
        ValueType::F32 => collect!(F32, |c: &mut Cursor, w: &dyn Fn() -> String| c
            .u32(w)
            .map(f32::from_bits)),
        ValueType::U64 => collect!(U64, |c: &mut Cursor, w: &dyn Fn() -> String| c.u64(w)),
        ValueType::I64 => collect!(I64, |c: &mut Cursor, w: &dyn Fn() -> String| c
            .u64(w)
            .map(|v| v as i64)),
        ValueType::F64 => collect!(F64, |c: &mut Cursor, w: &dyn Fn() -> String| c
            .u64(w)
            .map(f64::from_bits)),
        ValueType::Bool => collect!(Bool, |c: &mut Cursor, w: &dyn Fn() -> String| parse_bool(
            c, w
        )),
        ValueType::String => collect!(String, |c: &mut Cursor, w: &dyn Fn() -> String| c
            .string(w, false)),
        ValueType::Array => unreachable!("rejected above"),
    })
}

fn alignment(metadata: &Metadata) -> Result<u64> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(Value::U32(a)) => Err(GgufError::new(format!(
            "metadata key '{ALIGNMENT_KEY}' is {a}, which is not a power of two"
        ))),
        Some(v) => Err(GgufError::new(format!(
            "metadata key '{ALIGNMENT_KEY}' has type {}, expected u32",
            v.type_description()
        ))),
    }
}

/// A tensor info as written, before its offset is placed in the file.
struct RawTensor {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    size: u64,
    rel_offset: u64,
}

/// Smallest tensor info: a one-byte name, no dimensions, type and offset.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 1 + 4 + 4 + 8;

fn parse_tensor_infos(c: &mut Cursor, n_tensors: u64) -> Result<(Vec<RawTensor>, u64)> {
    let n = c.check_count(n_tensors, MIN_TENSOR_INFO_SIZE, &|| {
        "the tensor count".into()
    })?;
    let mut tensors = Vec::with_capacity(n);
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(n);
    for i in 0..n {
        let info_offset = c.pos;
        let name = c.string(&|| format!("the name of tensor {i}"), true)?;
        if name.is_empty() {
            return Err(GgufError::new(format!(
                "tensor {i} at offset {info_offset} has an empty name"
            )));
        }
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(GgufError::new(format!(
                "duplicate tensor name '{name}' (tensors {first} and {i}, offset {info_offset})"
            )));
        }
        let what = |s: &str| format!("the {s} of tensor '{name}'");
        let n_dims = c.u32(&|| what("dimension count"))?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::new(format!(
                "tensor '{name}' at offset {info_offset} has {n_dims} dimensions (at most {MAX_DIMS} are allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let ne = c.u64(&|| what(&format!("dimension {d}")))?;
            if ne > i64::MAX as u64 {
                return Err(GgufError::new(format!(
                    "tensor '{name}' has a negative dimension {d} ({})",
                    ne as i64
                )));
            }
            dims.push(ne);
        }
        let type_id = c.u32(&|| what("type"))?;
        let ty = GgmlType::from_id(type_id)
            .map_err(|e| GgufError::new(format!("tensor '{name}': {e}")))?;
        let rel_offset = c.u64(&|| what("data offset"))?;
        let size = tensor_size(&name, ty, &dims)?;
        tensors.push(RawTensor {
            name,
            ty,
            dims,
            size,
            rel_offset,
        });
    }
    Ok((tensors, c.pos as u64))
}

/// Bytes of a tensor, refusing shapes whose sizes overflow or that do not
/// split into whole blocks.
pub(super) fn tensor_size(name: &str, ty: GgmlType, dims: &[u64]) -> Result<u64> {
    let shape = || {
        let d: Vec<String> = dims.iter().map(u64::to_string).collect();
        format!("[{}]", d.join(", "))
    };
    let mut elements: u64 = 1;
    for &ne in dims {
        elements = elements
            .checked_mul(ne)
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| {
                GgufError::new(format!(
                    "tensor '{name}' has shape {} whose element count overflows",
                    shape()
                ))
            })?;
    }
    let ne0 = dims.first().copied().unwrap_or(1);
    if !ne0.is_multiple_of(ty.block_size()) {
        return Err(GgufError::new(format!(
            "tensor '{name}' of type {ty} has rows of {ne0} elements, not a multiple of its block size {}",
            ty.block_size()
        )));
    }
    let overflow = || {
        GgufError::new(format!(
            "tensor '{name}' has shape {} whose size in bytes overflows",
            shape()
        ))
    };
    let row = ty.row_size(ne0).ok_or_else(overflow)?;
    let rows = elements.checked_div(ne0).unwrap_or(0);
    row.checked_mul(rows).ok_or_else(overflow)
}

fn place_tensors(
    raw: Vec<RawTensor>,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<Vec<TensorInfo>> {
    if !raw.is_empty() && data_offset > file_len {
        return Err(GgufError::new(format!(
            "tensor data should start at offset {data_offset} but the file ends at {file_len} (truncated download?)"
        )));
    }
    raw.into_iter()
        .map(|t| {
            if !t.rel_offset.is_multiple_of(alignment) {
                return Err(GgufError::new(format!(
                    "tensor '{}' has data offset {} which is not a multiple of the alignment {alignment}",
                    t.name, t.rel_offset
                )));
            }
            let offset = data_offset.checked_add(t.rel_offset);
            let end = offset.and_then(|o| o.checked_add(t.size));
            match (offset, end) {
                (Some(offset), Some(end)) if end <= file_len => Ok(TensorInfo {
                    name: t.name,
                    ty: t.ty,
                    dims: t.dims,
                    offset,
                    size: t.size,
                    part: 0,
                }),
                _ => Err(GgufError::new(format!(
                    "tensor '{}' needs {} at offset {} but the file ends at {} (truncated download?)",
                    t.name,
                    human_bytes(t.size),
                    offset.map_or_else(|| "beyond 16 EiB".to_string(), human_offset),
                    human_offset(file_len),
                ))),
            }
        })
        .collect()
}
