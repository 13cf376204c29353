//! `llm`'s tensor crate: the ggml type table, block formats and (later) the
//! CPU, CUDA and Metal kernels that work on them.

pub mod blocks;
pub mod cpu;
pub mod float16;
pub mod types;

pub use types::{GgmlType, TypeError};
