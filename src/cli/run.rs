//! `llm run MODEL -p PROMPT`: raw completion, no chat template, streamed to
//! stdout as tokens arrive. Only the generated text goes to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::engine::sampler::{Sampler, SamplingOverrides, SamplingParams};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// Sampling flags. Each is optional so that what the user typed can be laid
/// over llama.cpp's defaults and a model family's own (models.toml).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SamplingArgs {
    /// Temperature; 0 picks the most likely token (greedy) [default: 0.8]
    #[arg(long)]
    pub temp: Option<f32>,
    /// Keep the k most likely tokens (0: all) [default: 40]
    #[arg(long = "top-k")]
    pub top_k: Option<i32>,
    /// Keep the smallest set of tokens whose probabilities reach p (1.0: all) [default: 0.95]
    #[arg(long = "top-p")]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than min-p times the most likely one [default: 0.05]
    #[arg(long = "min-p")]
    pub min_p: Option<f32>,
    /// Penalise tokens seen in the last --repeat-last-n (1.0: off) [default: 1.0]
    #[arg(long = "repeat-penalty")]
    pub repeat_penalty: Option<f32>,
    /// Tokens the penalties look back over (0: off, -1: whole context) [default: 64]
    #[arg(long = "repeat-last-n", allow_hyphen_values = true)]
    pub repeat_last_n: Option<i32>,
    /// Subtracted once from the logit of every token already present [default: 0]
    #[arg(long = "presence-penalty")]
    pub presence_penalty: Option<f32>,
    /// Subtracted from a token's logit per time it is present [default: 0]
    #[arg(long = "frequency-penalty")]
    pub frequency_penalty: Option<f32>,
    /// Random seed (-1: a fresh one, printed on stderr) [default: -1]
    #[arg(short = 's', long, allow_hyphen_values = true)]
    pub seed: Option<i64>,
}

impl SamplingArgs {
    /// llama.cpp's defaults with the flags the user gave laid over them.
    pub fn params(&self) -> SamplingParams {
        self.over(SamplingParams::default())
    }

    /// `base` with the flags the user gave laid over it; a negative or absent
    /// seed becomes a fresh one.
    pub fn over(&self, base: SamplingParams) -> SamplingParams {
        // The same layering as a models.toml family's defaults.
        let given = SamplingOverrides {
            temp: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
        };
        SamplingParams {
            seed: match self.seed {
                Some(s) if s >= 0 => s as u64,
                _ => fresh_seed(),
            },
            ..given.over(base)
        }
    }
}

/// A seed from the clock, kept to 32 bits so it is easy to retype.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        & 0xffff_ffff
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Model file (.gguf)
    pub model: PathBuf,
    /// The text to continue
    #[arg(short = 'p', long, conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of generation or a full context)
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_hyphen_values = true)]
    pub n_predict: i64,
    /// Context size in tokens (0: the model's own; default 4096 or the model's if smaller)
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Threads (default: physical cores)
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Keep generating past end-of-generation tokens
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print timings on stderr
    #[arg(long)]
    pub verbose: bool,
    /// Print the generated token ids instead of text (one line)
    #[arg(long)]
    pub print_ids: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The context size to use: the user's, or 4096 capped at the model's own.
pub fn context_size(requested: Option<usize>, trained: usize) -> usize {
    match requested {
        Some(0) => trained,
        Some(n) => n,
        None => trained.min(4096),
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    let prompt = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => bail!("nothing to complete: give a prompt with -p TEXT or -f FILE"),
    };
    let threads = args
        .threads
        .unwrap_or_else(crate::engine::physical_cores)
        .max(1);
    let t_load = Instant::now();
    let model = Model::load(&args.model, threads)?;
    let tok = Tokenizer::from_gguf_file(&args.model)?;
    let n_ctx = context_size(args.ctx_size, model.config.n_ctx_train);
    let params = args.sampling.params();
    let ids = tok.encode(&prompt, true, true)?;
    if ids.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    if ids.len() >= n_ctx {
        bail!(
            "the prompt has {} tokens but the context holds {n_ctx} (raise -c/--ctx-size)",
            ids.len()
        );
    }
    let load_s = t_load.elapsed().as_secs_f64();

    let mut state = model.new_state(n_ctx);
    eprintln!("seed: {}", params.seed);
    let mut sampler = Sampler::new(params);
    ids.iter().for_each(|&t| sampler.accept(t));
    let t_prompt = Instant::now();
    model.forward(&mut state, &ids, false)?;
    let prompt_s = t_prompt.elapsed().as_secs_f64();

    let mut out = std::io::stdout().lock();
    let mut decoder = tok.stream_decoder(false);
    let mut generated = Vec::new();
    let t_gen = Instant::now();
    let limit = if args.n_predict < 0 {
        usize::MAX
    } else {
        args.n_predict as usize
    };
    while generated.len() < limit {
        let next = sampler.sample(&state.logits);
        if tok.is_eog(next) && !args.ignore_eos {
            break;
        }
        sampler.accept(next);
        generated.push(next);
        if !args.print_ids {
            out.write_all(decoder.push(next).as_bytes())?;
            out.flush()?;
        }
        if generated.len() >= limit {
            break;
        }
        if state.n_past >= n_ctx {
            eprintln!("\nllm: the context is full ({n_ctx} tokens); stopping (raise -c/--ctx-size for longer output)");
            break;
        }
        model.forward(&mut state, &[next], false)?;
    }
    let gen_s = t_gen.elapsed().as_secs_f64();
    if args.print_ids {
        let line: Vec<String> = generated.iter().map(u32::to_string).collect();
        writeln!(out, "{}", line.join(" "))?;
    } else {
        out.write_all(decoder.finish().as_bytes())?;
        out.flush()?;
    }
    if args.verbose {
        eprintln!(
            "\nload {load_s:.2} s | prompt {} tokens, {:.1} t/s | generation {} tokens, {:.1} t/s | {threads} threads, {}",
            ids.len(),
            ids.len() as f64 / prompt_s,
            generated.len(),
            generated.len() as f64 / gen_s.max(1e-9),
            ggml::cpu::isa().name()
        );
    }
    Ok(())
}
