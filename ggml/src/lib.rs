//! `llm`'s tensor crate: the ggml type table and block formats, and (later) the
//! CPU, CUDA and Metal kernels that work on them.

pub mod types;

pub use types::{GgmlType, TypeError};
