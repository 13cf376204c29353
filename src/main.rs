//! The `llm` binary: parse the command line, run a subcommand, map the outcome
//! to a documented exit code (0 ok, 1 error, 2 usage).

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use llm::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse_from(cli::compat::rewrite(std::env::args_os()));
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(io::stderr(), "llm: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// A reader that closed our stdout (`llm info m.gguf | head -1`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
