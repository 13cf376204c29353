//! safetensors checkpoints: one file or a sharded folder, memory-mapped and
//! bounds-checked as strictly as the GGUF reader. Pickled PyTorch
//! checkpoints are refused, never unpickled.

mod error;
mod folder;
mod header;
#[cfg(test)]
mod tests;
mod writer;

pub use error::SafetensorsError;
pub use folder::{Checkpoint, SafetensorsFile};
pub use header::{parse, Dtype, Header, TensorInfo, MAX_HEADER_BYTES};
pub use writer::header;
