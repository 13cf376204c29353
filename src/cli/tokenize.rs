//! `llm tokenize MODEL TEXT`: the token ids of a text, like llama.cpp's
//! `llama-tokenize`. Only the model's vocabulary is read, so a
//! vocabulary-only GGUF file works.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::tokenizer::Tokenizer;

#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// Model: a .gguf file, a tokenizer.json, or a directory holding one
    pub model: PathBuf,
    /// Text to tokenize (or use --file)
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub text: Option<String>,
    /// Read the text from a file ('-' for standard input)
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Add no special tokens (BOS/EOS) around the text
    #[arg(long)]
    pub no_bos: bool,
    /// Parse special tokens written in the text (<|im_start|> becomes that
    /// token), as chat templates do; without it they are plain text
    #[arg(long)]
    pub special: bool,
    /// Print each token's id and text, one per line
    #[arg(long)]
    pub pieces: bool,
}

pub fn run(args: &TokenizeArgs) -> anyhow::Result<()> {
    let text = match (&args.text, &args.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            io::stdin()
                .read_to_end(&mut bytes)
                .context("reading standard input")?;
            String::from_utf8(bytes).context("standard input is not UTF-8 text")?
        }
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("{}", f.display()))?;
            String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", f.display()))?
        }
        (None, None) => bail!("give a TEXT to tokenize or --file FILE"),
    };
    let tokenizer = Tokenizer::open(&args.model)?;
    for w in tokenizer.warnings() {
        let _ = writeln!(io::stderr(), "llm: warning: {w}");
    }
    let ids = tokenizer.encode(&text, !args.no_bos, args.special)?;
    let mut out = io::stdout().lock();
    if args.pieces {
        for &id in &ids {
            let piece = escape_bytes(tokenizer.token_bytes(id, true));
            writeln!(out, "{id:6} -> '{piece}'")?;
        }
    } else {
        let line: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", line.join(" "))?;
    }
    out.flush()?;
    Ok(())
}

/// A token's bytes for a terminal: valid UTF-8 as is, other bytes (part of a
/// character split across tokens) as `\xNN`.
fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}
