//! Writing GGUF files: tests make tiny models and corrupt files with it, and
//! `llm quantize` will write its output through it.

use std::io::{self, Write};
use std::path::Path;

use ggml::GgmlType;

use super::error::GgufError;
use super::header::{tensor_size, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC};
use super::value::{Array, Value};

struct PendingTensor {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory.
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

/// Where each section of a written file starts, for tests that cut or patch it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the first metadata entry (right after the counts).
    pub metadata_offset: u64,
    /// Offset of each metadata entry's key.
    pub kv_offsets: Vec<u64>,
    /// Offset of each tensor info.
    pub tensor_info_offsets: Vec<u64>,
    /// End of the last tensor info (padding follows up to `data_offset`).
    pub tensor_infos_end: u64,
    pub data_offset: u64,
    /// Absolute offset of each tensor's data.
    pub tensor_offsets: Vec<u64>,
    pub file_len: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Writes the given format version (2 or 3: their layouts are the same).
    pub fn with_version(mut self, version: u32) -> GgufWriter {
        self.version = version;
        self
    }

    /// Adds or replaces a metadata entry, keeping first-insertion order.
    pub fn set(&mut self, key: &str, value: Value) -> &mut GgufWriter {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        self
    }

    /// Adds a tensor; `data` must hold exactly the bytes its type and shape need.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        dims: &[u64],
        data: Vec<u8>,
    ) -> Result<&mut GgufWriter, GgufError> {
        let expected = tensor_size(name, ty, dims)?;
        if data.len() as u64 != expected {
            return Err(GgufError::new(format!(
                "tensor '{name}': {} bytes given, {ty} {dims:?} needs {expected}",
                data.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::new(format!("tensor '{name}' added twice")));
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            ty,
            dims: dims.to_vec(),
            data,
        });
        Ok(self)
    }

    fn alignment(&self) -> u64 {
        match self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// The whole file, and where its sections start.
    pub fn to_bytes(&self) -> (Vec<u8>, Layout) {
        let alignment = self.alignment();
        let mut out = Vec::new();
        let mut layout = Layout::default();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        layout.metadata_offset = out.len() as u64;
        for (key, value) in &self.metadata {
            layout.kv_offsets.push(out.len() as u64);
            put_string(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut rel = 0u64;
        let mut rel_offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            layout.tensor_info_offsets.push(out.len() as u64);
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&rel.to_le_bytes());
            rel_offsets.push(rel);
            rel = (rel + t.data.len() as u64).next_multiple_of(alignment);
        }
        layout.tensor_infos_end = out.len() as u64;
        // A vocabulary-only file ends after its metadata, as llama.cpp writes it.
        if !self.tensors.is_empty() {
            pad_to(&mut out, alignment);
        }
        layout.data_offset = out.len() as u64;
        for (t, rel) in self.tensors.iter().zip(rel_offsets) {
            pad_to(&mut out, alignment);
            debug_assert_eq!(out.len() as u64, layout.data_offset + rel);
            layout.tensor_offsets.push(out.len() as u64);
            out.extend_from_slice(&t.data);
        }
        layout.file_len = out.len() as u64;
        (out, layout)
    }

    pub fn write_to(&self, path: &Path) -> io::Result<Layout> {
        let (bytes, layout) = self.to_bytes();
        let mut file = std::fs::File::create(path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        Ok(layout)
    }
}

fn pad_to(out: &mut Vec<u8>, alignment: u64) {
    let len = (out.len() as u64).next_multiple_of(alignment);
    out.resize(len as usize, 0);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.push(*v as u8),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, array: &Array) {
    out.extend_from_slice(&array.element_type().id().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr, $put:expr) => {
            for x in $v {
                $put(out, x);
            }
        };
    }
    match array {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => each!(v, |o: &mut Vec<u8>, x: &u16| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each!(v, |o: &mut Vec<u8>, x: &i16| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each!(v, |o: &mut Vec<u8>, x: &u32| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each!(v, |o: &mut Vec<u8>, x: &i32| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each!(v, |o: &mut Vec<u8>, x: &f32| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::U64(v) => each!(v, |o: &mut Vec<u8>, x: &u64| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each!(v, |o: &mut Vec<u8>, x: &i64| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each!(v, |o: &mut Vec<u8>, x: &f64| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => each!(v, |o: &mut Vec<u8>, s: &String| put_string(o, s)),
    }
}
