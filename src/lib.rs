//! `llm`: a local chat app for quantized large language models.

pub mod alloc_budget;
pub mod chat;
pub mod cli;
pub mod engine;
pub mod format;
pub mod model;
#[cfg(feature = "oracle")]
pub mod oracle;
#[cfg(feature = "oracle")]
pub mod oracle_tokenizer;
pub mod tokenizer;
