//! `llm`: a local chat app for quantized large language models.

pub mod cli;
pub mod format;
pub mod model;
#[cfg(feature = "oracle")]
pub mod oracle;
