//! `llm perplexity MODEL -f TEXT`: how well a model predicts a text, as
//! llama.cpp's llama-perplexity reports it (a running estimate per chunk,
//! then `Final estimate: PPL = x +/- y`), so quantisations can be compared.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::cli::model_args::ModelArgs;
use crate::engine::load;
use crate::engine::perplexity::{chunk_count, score_chunk, Scored};

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to score
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Score at most this many chunks (-1: all)
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub chunks: i64,
    /// Accepted for llama.cpp's sake: tokens a batch (chunks run whole)
    #[arg(short = 'b', long = "batch-size", value_name = "N")]
    pub batch_size: Option<usize>,
}

/// llama-perplexity's default chunk: 512 tokens.
const DEFAULT_CTX: usize = 512;

pub fn run(args: &PerplexityArgs) -> Result<()> {
    let text = crate::chat::text_input::read_to_string(&args.file)?;
    let mut config = args.model.config()?;
    // -c 0 is the model's own context, as elsewhere.
    config.ctx_size = Some(config.ctx_size.unwrap_or(DEFAULT_CTX));
    let loaded = load::load(&config.path, &config.load_options())?;
    for note in &loaded.notes {
        eprintln!("{note}");
    }
    let n_ctx = loaded.n_ctx;
    let tok = loaded.source.tokenizer()?;
    // As llama-perplexity: BOS (where the model adds one) and no special
    // tokens parsed out of the text.
    let tokens = tok.encode(&text, true, false)?;
    let limit = usize::try_from(args.chunks).ok();
    let n_chunks = chunk_count(tokens.len(), n_ctx, limit)?;
    let bos = tok.bos().filter(|_| tok.add_bos());
    eprintln!(
        "perplexity: {} tokens, {n_chunks} chunks of {n_ctx}, scoring the second half of each",
        tokens.len()
    );
    let model = loaded.model;
    let mut state = None;
    let mut scored = Scored::default();
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    for (i, chunk) in tokens.chunks_exact(n_ctx).take(n_chunks).enumerate() {
        score_chunk(&model, &mut state, chunk, bos, &mut scored)?;
        write!(out, "[{}]{:.4},", i + 1, scored.ppl())?;
        out.flush()?;
        if progress {
            let per = started.elapsed().as_secs_f64() / (i + 1) as f64;
            let left = per * (n_chunks - i - 1) as f64;
            eprint!("\r\x1b[K  chunk {}/{n_chunks}, {left:.0} s left", i + 1);
        }
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    writeln!(out)?;
    match scored.uncertainty() {
        Some(u) => writeln!(out, "Final estimate: PPL = {:.4} +/- {u:.5}", scored.ppl())?,
        None => writeln!(out, "Final estimate: PPL = {:.4}", scored.ppl())?,
    }
    eprintln!(
        "perplexity: {} tokens scored in {:.2} s ({:.1} tokens/s evaluated)",
        scored.count,
        started.elapsed().as_secs_f64(),
        (n_chunks * n_ctx) as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
