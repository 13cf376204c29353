//! GGUF: llama.cpp's single-file model format.

mod error;
mod file;
mod header;
mod value;
mod writer;

pub use error::{human_bytes, GgufError};
pub use file::{read_metadata, GgufFile, Part, TensorView};
pub use header::{
    parse, parse_metadata, parse_truncated, Header, Metadata, Missing, TensorInfo, ALIGNMENT_KEY,
    DEFAULT_ALIGNMENT,
};
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, Layout};

#[cfg(test)]
mod tests;
