//! Model file formats, read into one view of metadata and tensors.

pub mod awq;
pub mod exl2;
pub mod folder_from_gguf;
pub mod folder_writer;
pub mod gguf;
pub mod gptq;
pub mod group_blocks;
pub mod hf_config;
pub mod hf_names;
pub mod model_folder;
pub mod safetensors;
pub mod tensors;

pub use tensors::{TensorRef, TensorSource};
