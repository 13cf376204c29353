//! `llm bench MODEL -p 512 -n 128 -t N`: prompt and generation speed, like
//! llama-bench; with `--peer` (built with the `oracle` feature) llama.cpp
//! runs the same tests on the same file in this process, and the ratio is shown.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::format::gguf::human_bytes;
use crate::model::Model;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model file (.gguf)
    pub model: PathBuf,
    /// Prompt tokens processed in one batch (pp test; 0 skips it)
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Tokens generated one at a time (tg test; 0 skips it)
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Threads (default: physical cores)
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Repetitions of each test
    #[arg(short = 'r', long, default_value_t = 3)]
    pub repetitions: usize,
    /// Also run llama.cpp on the same file and print the ratio (needs a build
    /// with `--features oracle`)
    #[arg(long)]
    pub peer: bool,
}

/// Tokens/s over repetitions: mean and standard deviation.
struct Speed {
    mean: f64,
    sd: f64,
}

fn speed(samples: &[f64]) -> Speed {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Speed {
        mean,
        sd: var.sqrt(),
    }
}

/// Token ids that exercise the model without a tokenizer: speed does not
/// depend on which tokens they are.
fn bench_tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + 13) % vocab.max(1)) as u32)
        .collect()
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(crate::engine::physical_cores)
        .max(1);
    let model = Model::load(&args.model, threads)?;
    let vocab = model.config.shape.n_vocab;
    let reps = args.repetitions.max(1);
    let n_ctx = (args.n_prompt.max(args.n_gen) + 1).max(16);
    let mut results: Vec<(String, Speed)> = Vec::new();

    if args.n_prompt > 0 {
        let toks = bench_tokens(args.n_prompt, vocab);
        let mut samples = Vec::new();
        for rep in 0..=reps {
            let mut state = model.new_state(n_ctx);
            let t0 = Instant::now();
            model.forward(&mut state, &toks, false)?;
            let dt = t0.elapsed().as_secs_f64();
            // The first run warms caches and the page cache of the mapping.
            if rep > 0 {
                samples.push(toks.len() as f64 / dt);
            }
        }
        results.push((format!("pp{}", args.n_prompt), speed(&samples)));
    }
    if args.n_gen > 0 {
        let toks = bench_tokens(args.n_gen, vocab);
        let mut samples = Vec::new();
        for rep in 0..=reps {
            let mut state = model.new_state(n_ctx);
            let t0 = Instant::now();
            for &t in &toks {
                model.forward(&mut state, &[t], false)?;
            }
            let dt = t0.elapsed().as_secs_f64();
            if rep > 0 {
                samples.push(toks.len() as f64 / dt);
            }
        }
        results.push((format!("tg{}", args.n_gen), speed(&samples)));
    }

    let peer = if args.peer {
        peer_results(args, threads, n_ctx, vocab)?
    } else {
        Vec::new()
    };

    let name = args.model.file_name().map_or_else(
        || args.model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let size = human_bytes(model.weights.file.parts().iter().map(|p| p.len).sum());
    let isa = ggml::cpu::isa().name();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| model | size | engine | threads | test | t/s |{}",
        if peer.is_empty() {
            ""
        } else {
            " llm / llama.cpp |"
        }
    )?;
    writeln!(
        out,
        "|---|---|---|---|---|---|{}",
        if peer.is_empty() { "" } else { "---|" }
    )?;
    for (test, s) in &results {
        let ratio = peer
            .iter()
            .find(|(t, _)| t == test)
            .map_or(String::new(), |(_, p)| {
                format!(" {:.2}x |", s.mean / p.mean)
            });
        writeln!(
            out,
            "| {name} | {size} | llm ({isa}) | {threads} | {test} | {:.2} ± {:.2} |{ratio}",
            s.mean, s.sd
        )?;
    }
    for (test, s) in &peer {
        writeln!(
            out,
            "| {name} | {size} | llama.cpp | {threads} | {test} | {:.2} ± {:.2} | |",
            s.mean, s.sd
        )?;
    }
    Ok(())
}

#[cfg(feature = "oracle")]
fn peer_results(
    args: &BenchArgs,
    threads: usize,
    n_ctx: usize,
    vocab: usize,
) -> Result<Vec<(String, Speed)>> {
    use crate::oracle::OracleModel;
    let reps = args.repetitions.max(1);
    // llama.cpp as its users run it: batched prompts, repacked weights allowed.
    let mut peer = OracleModel::load_for_speed(&args.model, n_ctx as u32, threads as i32)
        .ok_or_else(|| anyhow::anyhow!("llama.cpp could not load {}", args.model.display()))?;
    let mut results = Vec::new();
    if args.n_prompt > 0 {
        let toks = bench_tokens(args.n_prompt, vocab);
        let mut samples = Vec::new();
        for rep in 0..=reps {
            peer.clear();
            let t0 = Instant::now();
            peer.eval(&toks)
                .ok_or_else(|| anyhow::anyhow!("llama.cpp decode failed"))?;
            if rep > 0 {
                samples.push(toks.len() as f64 / t0.elapsed().as_secs_f64());
            }
        }
        results.push((format!("pp{}", args.n_prompt), speed(&samples)));
    }
    if args.n_gen > 0 {
        let toks = bench_tokens(args.n_gen, vocab);
        let mut samples = Vec::new();
        for rep in 0..=reps {
            peer.clear();
            let t0 = Instant::now();
            for &t in &toks {
                peer.eval(&[t])
                    .ok_or_else(|| anyhow::anyhow!("llama.cpp decode failed"))?;
            }
            if rep > 0 {
                samples.push(toks.len() as f64 / t0.elapsed().as_secs_f64());
            }
        }
        results.push((format!("tg{}", args.n_gen), speed(&samples)));
    }
    Ok(results)
}

#[cfg(not(feature = "oracle"))]
fn peer_results(_: &BenchArgs, _: usize, _: usize, _: usize) -> Result<Vec<(String, Speed)>> {
    anyhow::bail!(
        "--peer needs llm built with `--features oracle` (llama.cpp is compiled in only then)"
    )
}
