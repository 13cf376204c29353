//! Model file formats, read into one view of metadata and tensors.

pub mod gguf;
