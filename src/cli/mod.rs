//! Command-line interface: one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod chat;
pub mod compat;
pub mod devices;
pub mod info;
mod info_folder;
pub mod model_args;
pub mod perplexity;
pub mod run;
pub mod tokenize;
pub mod values;

#[derive(Parser, Debug)]
#[command(
    name = "llm",
    version = crate::cli::version(),
    about = "Chat with quantized language models on your own machine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Chat with a model: a REPL in a terminal, a scripted chat on a pipe, or one answer with --prompt
    Chat(chat::ChatArgs),
    /// Complete a prompt without a chat template, streamed to stdout
    Run(run::RunArgs),
    /// Show a model's architecture, tokenizer, tensor types and memory needs
    Info(info::InfoArgs),
    /// Measure prompt and generation speed (like llama-bench)
    Bench(bench::BenchArgs),
    /// Score how well a model predicts a text (like llama-perplexity)
    Perplexity(perplexity::PerplexityArgs),
    /// Print the token ids of a text (like llama-tokenize)
    Tokenize(tokenize::TokenizeArgs),
    /// List the GPUs this binary can use, with their memory
    Devices,
}

/// The version line: the crate's version, then the backends compiled in.
pub fn version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| format!("{}\n{}", env!("CARGO_PKG_VERSION"), devices::backends()))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info(args) => info::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Chat(args) => chat::run(&args),
        Command::Run(args) => run::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Perplexity(args) => perplexity::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Tokenize(args) => tokenize::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Devices => devices::run().map(|()| ExitCode::SUCCESS),
    }
}
