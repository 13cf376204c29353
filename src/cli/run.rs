//! `llm run MODEL -p PROMPT`: raw completion, no chat template, streamed to
//! stdout as tokens arrive. Only the generated text goes to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::cli::model_args::ModelArgs;
use crate::cli::values;
use crate::engine::load;
use crate::engine::sampler::{Sampler, SamplingOverrides, SamplingParams};
use crate::engine::session::{Events, Flow, Generate, OnEnd, Session, StopReason};
use crate::tokenizer::{StreamDecoder, TokenId};

/// Sampling flags. Each is optional so that what the user typed can be laid
/// over llama.cpp's defaults and a model family's own (models.toml).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SamplingArgs {
    /// Temperature; 0 picks the most likely token (greedy) [default: 0.8]
    #[arg(long, allow_hyphen_values = true, value_parser = values::sampling::<f32>("temp"))]
    pub temp: Option<f32>,
    /// Keep the k most likely tokens (0: all) [default: 40]
    #[arg(long = "top-k", allow_hyphen_values = true, value_parser = values::sampling::<i32>("top-k"))]
    pub top_k: Option<i32>,
    /// Keep the smallest set of tokens whose probabilities reach p (1.0: all) [default: 0.95]
    #[arg(long = "top-p", allow_hyphen_values = true, value_parser = values::sampling::<f32>("top-p"))]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than min-p times the most likely one [default: 0.05]
    #[arg(long = "min-p", allow_hyphen_values = true, value_parser = values::sampling::<f32>("min-p"))]
    pub min_p: Option<f32>,
    /// Penalise tokens seen in the last --repeat-last-n (1.0: off) [default: 1.0]
    #[arg(long = "repeat-penalty", allow_hyphen_values = true, value_parser = values::sampling::<f32>("repeat-penalty"))]
    pub repeat_penalty: Option<f32>,
    /// Tokens the penalties look back over (0: off, -1: whole context) [default: 64]
    #[arg(long = "repeat-last-n", allow_hyphen_values = true, value_parser = values::sampling::<i32>("repeat-last-n"))]
    pub repeat_last_n: Option<i32>,
    /// Subtracted once from the logit of every token already present [default: 0]
    #[arg(long = "presence-penalty", allow_hyphen_values = true, value_parser = values::sampling::<f32>("presence-penalty"))]
    pub presence_penalty: Option<f32>,
    /// Subtracted from a token's logit per time it is present [default: 0]
    #[arg(long = "frequency-penalty", allow_hyphen_values = true, value_parser = values::sampling::<f32>("frequency-penalty"))]
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
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to continue
    #[arg(short = 'p', long, conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of generation or a full context)
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_hyphen_values = true)]
    pub n_predict: i64,
    /// Keep generating past end-of-generation tokens
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print timings on stderr
    #[arg(long)]
    pub verbose: bool,
    /// Print the generated token ids instead of text (one line)
    #[arg(long)]
    pub print_ids: bool,
    /// Accepted for llama.cpp's sake: flash attention (on|off|auto); the CPU path uses standard attention
    #[arg(long = "flash-attn", value_name = "on|off|auto", num_args = 0..=1, default_missing_value = "on")]
    pub flash_attn: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Streams the completion to stdout as it is made.
struct Stream<'t> {
    out: std::io::StdoutLock<'static>,
    decoder: StreamDecoder<'t>,
    print_ids: bool,
    generated: Vec<TokenId>,
}

impl Events for Stream<'_> {
    fn token(&mut self, id: TokenId) -> Result<Flow> {
        self.generated.push(id);
        if !self.print_ids {
            self.out.write_all(self.decoder.push(id).as_bytes())?;
            self.out.flush()?;
        }
        Ok(Flow::Continue)
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    let prompt = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => crate::chat::text_input::read_to_string(f)?,
        (None, None) => bail!("nothing to complete: give a prompt with -p TEXT or -f FILE"),
    };
    let config = args.model.config()?;
    if args.flash_attn.as_deref() == Some("on") {
        eprintln!("llm: --flash-attn on: the CPU path uses standard attention (same results)");
    }
    let threads = config.threads;
    let t_load = Instant::now();
    let loaded = load::load(&config.path, &config.load_options())?;
    for note in &loaded.notes {
        eprintln!("{note}");
    }
    let tok = loaded.source.tokenizer()?;
    let (model, n_ctx) = (loaded.model, loaded.n_ctx);
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

    let mut session = Session::new(model, n_ctx)?;
    eprintln!("seed: {}", params.seed);
    let mut sampler = Sampler::new(params);
    let is_end = |id: TokenId| tok.is_eog(id);
    let opts = Generate {
        limit: usize::try_from(args.n_predict).ok(),
        is_end: &is_end,
        on_end: if args.ignore_eos {
            OnEnd::Pass
        } else {
            OnEnd::Stop
        },
    };
    let mut stream = Stream {
        out: std::io::stdout().lock(),
        decoder: tok.stream_decoder(false),
        print_ids: args.print_ids,
        generated: Vec::new(),
    };
    let stats = session.complete(
        &ids,
        &mut sampler,
        &opts,
        &AtomicBool::new(false),
        &mut stream,
    )?;
    if stats.stop == StopReason::ContextFull {
        eprintln!("\nllm: the context is full ({n_ctx} tokens); stopping (raise -c/--ctx-size for longer output)");
    }
    let out = &mut stream.out;
    if args.print_ids {
        let line: Vec<String> = stream.generated.iter().map(u32::to_string).collect();
        writeln!(out, "{}", line.join(" "))?;
    } else {
        out.write_all(stream.decoder.finish().as_bytes())?;
        out.flush()?;
    }
    if args.verbose {
        eprintln!(
            "\nload {load_s:.2} s | prompt {} tokens, {:.1} t/s | generation {} tokens, {:.1} t/s | {threads} threads, {}",
            stats.prompt_tokens,
            stats.prompt_tokens as f64 / stats.prompt_secs,
            stats.generated_tokens,
            stats.generated_tokens as f64 / stats.generation_secs.max(1e-9),
            ggml::cpu::isa().name()
        );
    }
    Ok(())
}
