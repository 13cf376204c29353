//! `llm chat`: templates, the catalogue, the conversation and its session,
//! and the terminal front ends (REPL, scripted stdin, one-shot).

pub mod catalog;
pub mod commands;
pub mod conversation;
pub mod driver;
pub mod interrupt;
pub mod repeat;
pub mod repl;
pub mod script;
pub mod session;
pub mod setup;
pub mod stop;
pub mod template;
pub mod text_input;
pub mod think;
pub mod ui;
pub mod wrap;
