//! `llm`'s tensor crate: the ggml type table, block formats and (later) the
//! CPU, CUDA and Metal kernels that work on them.

pub mod backend;
pub mod backend_check;
pub mod blocks;
pub mod cpu;
pub mod cuda;
pub mod float16;
pub mod kv_types;
pub mod metal;
pub mod profile;
pub mod rope;
pub mod types;

pub use types::{GgmlType, TypeError};
