//! `llm perplexity MODEL -f TEXT`: how well a model predicts a text, as
//! llama.cpp's llama-perplexity reports it (a running estimate per chunk,
//! then `Final estimate: PPL = x +/- y`), so quantisations can be compared.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::cli::model_args::ModelArgs;
use crate::engine::kl_divergence::{BaseReader, BaseWriter, Header, KlStats};
use crate::engine::load;
use crate::engine::perplexity::{chunk_count, score_chunk, LogSoftmax, Scored};

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
    /// Save this model's next-token distributions to FILE (top 32 a
    /// position) as the base of a later --kl-divergence; with
    /// --kl-divergence, read them from FILE
    #[arg(
        long = "kl-divergence-base",
        visible_alias = "save-logits",
        value_name = "FILE"
    )]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compare this model against the base saved in --kl-divergence-base:
    /// KL divergence, Δp and same top token, as llama-perplexity reports them
    #[arg(long = "kl-divergence", requires = "kl_divergence_base")]
    pub kl_divergence: bool,
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
    let mut n_chunks = chunk_count(tokens.len(), n_ctx, limit)?;
    let n_vocab = loaded.model.config.shape.n_vocab;
    // The base to compare with, or the file to save one to.
    let mut base = None;
    let mut save = None;
    match (&args.kl_divergence_base, args.kl_divergence) {
        (Some(path), true) => {
            let r = BaseReader::open(path)?;
            let h = &r.header;
            if h.n_ctx != n_ctx || h.n_vocab != n_vocab {
                bail!(
                    "{}: saved at -c {} with a vocabulary of {}; this run is -c {n_ctx} with {n_vocab}",
                    path.display(),
                    h.n_ctx,
                    h.n_vocab
                );
            }
            n_chunks = n_chunks.min(h.n_chunk);
            if tokens[..n_chunks * n_ctx] != h.tokens[..n_chunks * n_ctx] {
                bail!(
                    "{}: saved from another text or tokenizer (the tokens differ)",
                    path.display()
                );
            }
            base = Some(r);
        }
        (Some(path), false) => {
            let header = Header {
                n_ctx,
                n_vocab,
                n_chunk: n_chunks,
                tokens: tokens[..n_chunks * n_ctx].to_vec(),
            };
            save = Some(BaseWriter::create(path, &header)?);
        }
        _ => {}
    }
    let mut kl = KlStats::default();
    let mut base_scored = Scored::default();
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
        score_chunk(&model, &mut state, chunk, bos, |logits, target| {
            let norm = LogSoftmax::of(logits);
            scored.add_logprob(norm.log_prob(logits, target));
            if let Some(w) = save.as_mut() {
                w.position(logits, &norm, target)?;
            }
            if let Some(r) = base.as_mut() {
                let b = r.position()?;
                base_scored.add_logprob(f64::from(b.target_logprob));
                kl.position(logits, &norm, target, &b);
            }
            Ok(())
        })?;
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
    if let Some(w) = save {
        w.finish()?;
    }
    if base.is_some() {
        let (ours, theirs) = (scored.ppl(), base_scored.ppl());
        writeln!(out, "Mean PPL(Q)/PPL(base): {:.6}", ours / theirs)?;
        writeln!(out, "PPL(base): {theirs:.4}")?;
        write!(out, "{}", kl.report())?;
    }
    eprintln!(
        "perplexity: {} tokens scored in {:.2} s ({:.1} tokens/s evaluated)",
        scored.count,
        started.elapsed().as_secs_f64(),
        (n_chunks * n_ctx) as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
