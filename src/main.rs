//! The `llm` binary: parse the command line, run a subcommand, map the outcome
//! to a documented exit code (0 ok, 1 error, 2 usage).

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use llm::cli::{self, Cli};

fn main() -> ExitCode {
    let args = cli::compat::rewrite(std::env::args_os());
    if let Some(message) = cli::compat::unknown_joined_flag(&args) {
        let _ = writeln!(io::stderr(), "llm: {message}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse_from(args);
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if is_full_stdout(&err) => {
            let _ = writeln!(io::stderr(), "llm: writing to standard output: {err:#}");
            ExitCode::from(1)
        }
        Err(err) => {
            let _ = writeln!(io::stderr(), "llm: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// A full disk met by a write that carries no context of its own. Every
/// file we write names itself in its error (`/save`, `-o`); only the stream
/// of tokens and text to stdout is written bare, so a bare "No space left
/// on device" is stdout's, and the user should hear which file it was.
fn is_full_stdout(err: &anyhow::Error) -> bool {
    err.chain().count() == 1
        && err
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::StorageFull)
}

/// A reader that closed our stdout (`llm info m.gguf | head -1`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
