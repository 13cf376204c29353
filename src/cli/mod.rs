//! Command-line interface: one module per subcommand.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod info;
pub mod run;
pub mod tokenize;

#[derive(Parser, Debug)]
#[command(
    name = "llm",
    version,
    about = "Chat with quantized language models on your own machine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Chat with a model in the terminal (not built yet)
    Chat(Pending),
    /// Complete a prompt without a chat template, streamed to stdout
    Run(run::RunArgs),
    /// Show a model's architecture, tokenizer, tensor types and memory needs
    Info(info::InfoArgs),
    /// Measure prompt and generation speed (like llama-bench)
    Bench(bench::BenchArgs),
    /// Print the token ids of a text (like llama-tokenize)
    Tokenize(tokenize::TokenizeArgs),
}

/// Arguments of a subcommand that is not built yet: accepted as typed, so the
/// user hears that the command is missing rather than a usage error.
#[derive(clap::Args, Debug)]
pub struct Pending {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<OsString>,
}

/// Exit code for a command that exists in the interface but not yet in the build.
const EXIT_USAGE: u8 = 2;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info(args) => info::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Chat(_) => not_built("chat"),
        Command::Run(args) => run::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Tokenize(args) => tokenize::run(&args).map(|()| ExitCode::SUCCESS),
    }
}

fn not_built(name: &str) -> anyhow::Result<ExitCode> {
    let _ = writeln!(
        std::io::stderr(),
        "llm {name}: not built yet in this version of llm (see `llm --help` for what works)"
    );
    Ok(ExitCode::from(EXIT_USAGE))
}
