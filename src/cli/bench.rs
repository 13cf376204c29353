//! `llm bench MODEL -p 512 -n 128 -t N`: prompt and generation speed, like
//! llama-bench, with its `-d` (tokens already in the cache), `-ngl`, `-fa`,
//! comma-separated lists (`-p 512,1024 -ngl 0,99` runs every combination)
//! and `-o md|json`. With `--peer` (built with the `oracle` feature)
//! llama.cpp runs the same tests on the same file in this process, and the
//! ratio is shown.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cli::model_args::{List, ModelArgs, ModelConfig};
use crate::engine::load::{self, LoadOptions};
use crate::engine::session::Session;
use crate::engine::source::ModelSource;
use crate::engine::GpuLayers;
use crate::format::gguf::human_bytes;
use ggml::kv_types::cache_type_name;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A markdown table, as llama-bench prints
    Md,
    /// A JSON array of results, samples included
    Json,
}

/// `-fa`: recorded with each result. There is one attention path, so every
/// value measures the same thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashAttn {
    Off,
    On,
    Auto,
}

impl std::str::FromStr for FlashAttn {
    type Err = String;

    fn from_str(s: &str) -> Result<FlashAttn, String> {
        match s {
            "0" | "off" => Ok(FlashAttn::Off),
            "1" | "on" => Ok(FlashAttn::On),
            "auto" | "-1" => Ok(FlashAttn::Auto),
            _ => Err(format!(
                "'{s}' is not a flash-attention setting: give 0, 1 or auto"
            )),
        }
    }
}

impl std::fmt::Display for FlashAttn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlashAttn::Off => "0",
            FlashAttn::On => "1",
            FlashAttn::Auto => "auto",
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens processed in one batch, a test each (pp; 0 skips it)
    #[arg(
        short = 'p',
        long = "n-prompt",
        default_value = "512",
        value_name = "N[,N...]"
    )]
    pub n_prompt: List<usize>,
    /// Tokens generated one at a time, a test each (tg; 0 skips it)
    #[arg(
        short = 'n',
        long = "n-gen",
        default_value = "128",
        value_name = "N[,N...]"
    )]
    pub n_gen: List<usize>,
    /// Tokens already in the KV cache before each test (llama-bench's depth)
    #[arg(
        short = 'd',
        long = "n-depth",
        default_value = "0",
        value_name = "N[,N...]"
    )]
    pub n_depth: List<usize>,
    /// Flash attention, recorded with the results: 0, 1 or auto; the CPU path has one attention (llama.cpp: -fa)
    #[arg(long = "flash-attn", value_name = "0|1|auto", num_args = 0..=1, default_missing_value = "1")]
    pub flash_attn: Option<List<FlashAttn>>,
    /// Repetitions of each test
    #[arg(short = 'r', long, default_value_t = 3)]
    pub repetitions: usize,
    /// Output format: md or json
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Md)]
    pub output: Output,
    /// Also run llama.cpp on the same file and print the ratio (needs a build
    /// with `--features oracle`)
    #[arg(long)]
    pub peer: bool,
    /// Run llama.cpp alone (no llm tests), in this process: its own peak
    /// memory under `/usr/bin/time -v` (needs the `oracle` feature)
    #[arg(long)]
    pub peer_only: bool,
}

/// One test: what runs, with which settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    pub config: ModelConfig,
    pub fa: FlashAttn,
    pub depth: usize,
    /// Prompt tokens in one batch (pp), or 0.
    pub n_prompt: usize,
    /// Tokens generated one at a time (tg), or 0.
    pub n_gen: usize,
    /// The context it runs in.
    pub n_ctx: usize,
}

impl Test {
    /// llama-bench's name: `pp512`, `tg128`, `pp512 @ d4096`.
    pub fn name(&self) -> String {
        let base = if self.n_prompt > 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        };
        if self.depth > 0 {
            format!("{base} @ d{}", self.depth)
        } else {
            base
        }
    }
}

/// Every test of the cross product, in llama-bench's order: GPU layers,
/// cache types, flash attention, threads and depth vary from slowest to
/// fastest, then the
/// prompt tests, then the generation tests. Each test has a context of its
/// depth, prompt and generation plus one, at least 16, as llama-bench sizes
/// one per test (decode in a larger cache reads slower, so one context for
/// all would not compare like with like), or the one -c gives.
pub fn tests(configs: &[ModelConfig], fa: &[FlashAttn], args: &BenchArgs) -> Result<Vec<Test>> {
    let mut out = Vec::new();
    let ngl: Vec<Option<GpuLayers>> = dedup(configs.iter().map(|c| c.gpu_layers));
    for n in ngl {
        let kv = dedup(
            configs
                .iter()
                .filter(|c| c.gpu_layers == n)
                .map(|c| c.kv_types),
        );
        for (kv, &fa) in kv
            .into_iter()
            .flat_map(|kv| fa.iter().map(move |f| (kv, f)))
        {
            for config in configs
                .iter()
                .filter(|c| c.gpu_layers == n && c.kv_types == kv)
            {
                for &depth in &args.n_depth.0 {
                    let test = |n_prompt: usize, n_gen: usize| -> Result<Test> {
                        let need = depth
                            .saturating_add(n_prompt)
                            .saturating_add(n_gen)
                            .saturating_add(1);
                        let n_ctx = match config.ctx_size {
                            Some(c) if c > 0 && c < need => bail!(
                                "a test at depth {depth} needs a context of {need} tokens but -c/--ctx-size gives {c}"
                            ),
                            Some(c) if c > 0 => c,
                            _ => need.max(16),
                        };
                        Ok(Test {
                            config: config.clone(),
                            fa,
                            depth,
                            n_prompt,
                            n_gen,
                            n_ctx,
                        })
                    };
                    for &p in args.n_prompt.0.iter().filter(|&&p| p > 0) {
                        out.push(test(p, 0)?);
                    }
                    for &g in args.n_gen.0.iter().filter(|&&g| g > 0) {
                        out.push(test(0, g)?);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in items {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Tokens/s over repetitions: mean and standard deviation.
#[derive(Clone, Debug)]
pub struct Speed {
    pub mean: f64,
    pub sd: f64,
    pub samples: Vec<f64>,
}

fn speed(samples: Vec<f64>) -> Speed {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Speed {
        mean,
        sd: var.sqrt(),
        samples,
    }
}

/// Token ids that exercise the model without a tokenizer: speed does not
/// depend on which tokens they are.
fn bench_tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + 13) % vocab.max(1)) as u32)
        .collect()
}

/// The cancel flag of a run nobody interrupts.
static NEVER: AtomicBool = AtomicBool::new(false);

/// One measurement: the cache brought to the test's depth (untimed, re-using
/// the depth already there when it can), then the test timed.
fn measure(session: &mut Session, test: &Test, vocab: usize) -> Result<f64> {
    let depth = bench_tokens(test.depth, vocab);
    let at_depth = |s: &mut Session| s.truncate(test.depth) && s.cached() == depth.as_slice();
    if !at_depth(session) {
        session.clear()?;
        session.prefill(&depth, &NEVER)?;
    }
    let t0 = Instant::now();
    if test.n_prompt > 0 {
        session.prefill(&bench_tokens(test.n_prompt, vocab), &NEVER)?;
        return Ok(test.n_prompt as f64 / t0.elapsed().as_secs_f64());
    }
    for t in bench_tokens(test.n_gen, vocab) {
        session.decode(t)?;
    }
    Ok(test.n_gen as f64 / t0.elapsed().as_secs_f64())
}

/// A result row.
struct Row {
    engine: &'static str,
    backend: String,
    test: Test,
    speed: Speed,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let configs = args.model.configs()?;
    let fa = args
        .flash_attn
        .clone()
        .map_or(vec![FlashAttn::Auto], |l| l.0);
    let tests = tests(&configs, &fa, args)?;
    if tests.is_empty() {
        bail!("nothing to measure: every -p and -n is 0");
    }
    for note in dedup(configs.iter().filter_map(ModelConfig::cpu_only_notice)) {
        eprintln!("{note}");
    }
    if fa.contains(&FlashAttn::On) {
        eprintln!("llm: -fa 1: the CPU path has one attention; results are recorded as asked");
    }
    let path = &configs[0].path;
    let reps = args.repetitions.max(1);

    let mut rows = Vec::new();
    // A session is kept while the next test loads the model the same way
    // (threads, GPU layers and split; the context size is set per test).
    let mut session: Option<(ModelConfig, String, Session)> = None;
    for test in tests.iter().filter(|_| !args.peer_only) {
        let same_load = |c: &ModelConfig| {
            ModelConfig {
                ctx_size: test.config.ctx_size,
                ..c.clone()
            } == test.config
        };
        let (config, backend, mut s) = match session.take() {
            Some((c, b, s)) if same_load(&c) => (c, b, s),
            other => {
                // The old model's memory (a GPU's above all) goes before the new one loads.
                drop(other);
                let opts = LoadOptions {
                    ctx_size: Some(test.n_ctx),
                    ..test.config.load_options()
                };
                let loaded =
                    load::load(path, &opts).with_context(|| format!("test {}", test.name()))?;
                let backend = if loaded.plan.gpu_layers > 0 {
                    "CUDA".to_string()
                } else {
                    format!("CPU ({})", ggml::cpu::isa().name())
                };
                (
                    test.config.clone(),
                    backend,
                    Session::new(loaded.model, test.n_ctx)?,
                )
            }
        };
        // The same context keeps its cache: a depth already there is re-used.
        if s.n_ctx() != test.n_ctx {
            s.set_context(test.n_ctx)?;
        }
        let vocab = s.model().config.shape.n_vocab;
        let mut samples = Vec::new();
        // The first run warms caches and the page cache of the mapping.
        for rep in 0..=reps {
            let tps = measure(&mut s, test, vocab)?;
            if std::env::var_os("LLM_TIMING").is_some() {
                eprintln!("llm: {} rep {rep}: {tps:.2} t/s", test.name());
            }
            if rep > 0 {
                samples.push(tps);
            }
        }
        let profile = ggml::profile::report();
        if !profile.is_empty() {
            eprint!(
                "llm: {} host time over {} runs:\n{profile}",
                test.name(),
                reps + 1
            );
        }
        rows.push(Row {
            engine: "llm",
            backend: backend.clone(),
            test: test.clone(),
            speed: speed(samples),
        });
        session = Some((config, backend, s));
    }
    let vocab = match &session {
        Some((_, _, s)) => s.model().config.shape.n_vocab,
        None => ModelSource::open(path)?.config()?.shape.n_vocab,
    };
    drop(session);
    if args.peer || args.peer_only {
        rows.extend(peer_rows(&tests, reps, vocab)?);
    }

    let source = ModelSource::open(path)?;
    let model = Described {
        name: path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        size: match &source {
            ModelSource::Gguf(file) => file.parts().iter().map(|p| p.len).sum(),
            ModelSource::Folder(_) => source.tensors().stored_bytes(),
        },
        params: source.tensors().parameters(),
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Md => write_md(&mut out, &model, &rows)?,
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &json(&model, &rows))?;
            writeln!(out)?;
        }
    }
    Ok(())
}

struct Described {
    name: String,
    size: u64,
    params: u64,
}

/// Parameters as llama-bench writes them: `134.52 M`, `1.24 B`.
fn params_text(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

fn ngl_text(n: Option<GpuLayers>) -> String {
    n.unwrap_or(GpuLayers::Count(0)).to_string()
}

fn write_md(out: &mut impl Write, model: &Described, rows: &[Row]) -> Result<()> {
    let peers = rows.iter().any(|r| r.engine != "llm");
    // As llama-bench, the cache types only where one is not f16.
    let types = rows.iter().any(|r| !r.test.config.kv_types.is_f16());
    writeln!(
        out,
        "| model | size | params | backend | threads | ngl |{} fa | test | t/s |{}",
        if types { " type_k | type_v |" } else { "" },
        if peers { " llm / llama.cpp |" } else { "" }
    )?;
    writeln!(
        out,
        "|---|---|---|---|---|---|{}---|---|---|{}",
        if types { "---|---|" } else { "" },
        if peers { "---|" } else { "" }
    )?;
    for r in rows {
        let ratio = if !peers {
            String::new()
        } else if r.engine == "llm" {
            rows.iter()
                .find(|p| p.engine != "llm" && p.test == r.test)
                .map_or(" |".to_string(), |p| {
                    format!(" {:.2}x |", r.speed.mean / p.speed.mean)
                })
        } else {
            " |".to_string()
        };
        let kv = r.test.config.kv_types;
        let type_cols = if types {
            format!(" {} | {} |", cache_type_name(kv.k), cache_type_name(kv.v))
        } else {
            String::new()
        };
        writeln!(
            out,
            "| {} | {} | {} | {} {} | {} | {} |{type_cols} {} | {} | {:.2} ± {:.2} |{ratio}",
            model.name,
            human_bytes(model.size),
            params_text(model.params),
            r.engine,
            r.backend,
            r.test.config.threads,
            ngl_text(r.test.config.gpu_layers),
            r.test.fa,
            r.test.name(),
            r.speed.mean,
            r.speed.sd
        )?;
    }
    Ok(())
}

fn json(model: &Described, rows: &[Row]) -> serde_json::Value {
    let ngl = |n: Option<GpuLayers>| match n.unwrap_or(GpuLayers::Count(0)) {
        GpuLayers::Count(c) => serde_json::json!(c),
        other => serde_json::json!(other.to_string()),
    };
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "model": model.name,
                "size": model.size,
                "params": model.params,
                "engine": r.engine,
                "backend": r.backend,
                "threads": r.test.config.threads,
                "ngl": ngl(r.test.config.gpu_layers),
                "type_k": cache_type_name(r.test.config.kv_types.k),
                "type_v": cache_type_name(r.test.config.kv_types.v),
                "fa": r.test.fa.to_string(),
                "test": r.test.name(),
                "n_prompt": r.test.n_prompt,
                "n_gen": r.test.n_gen,
                "n_depth": r.test.depth,
                "avg_ts": r.speed.mean,
                "stddev_ts": r.speed.sd,
                "samples_ts": r.speed.samples,
            })
        })
        .collect()
}

/// llama.cpp on the same tests: the depth is evaluated (untimed) after
/// clearing its cache, then the test is timed, as llama-bench does.
#[cfg(feature = "oracle")]
fn peer_rows(tests: &[Test], reps: usize, vocab: usize) -> Result<Vec<Row>> {
    use crate::oracle::OracleModel;
    let failed = || anyhow::anyhow!("llama.cpp decode failed");
    let mut rows = Vec::new();
    let mut loaded: Option<((usize, usize, ggml::backend::KvTypes), OracleModel)> = None;
    for test in tests {
        let (threads, n_ctx, kv) = (test.config.threads, test.n_ctx, test.config.kv_types);
        let key = (threads, n_ctx, kv);
        if !matches!(&loaded, Some((k, _)) if *k == key) {
            // One llama.cpp model at a time: the old one goes first.
            drop(loaded.take());
            // llama.cpp as its users run it: batched prompts, repacked
            // weights allowed.
            let path = &test.config.path;
            let peer = OracleModel::load_for_speed(path, n_ctx as u32, threads as i32, kv)
                .ok_or_else(|| anyhow::anyhow!("llama.cpp could not load {}", path.display()))?;
            loaded = Some((key, peer));
        }
        let Some((_, peer)) = loaded.as_mut() else {
            unreachable!("loaded above")
        };
        let depth = bench_tokens(test.depth, vocab);
        let mut samples = Vec::new();
        for rep in 0..=reps {
            peer.clear();
            if !depth.is_empty() {
                peer.eval(&depth).ok_or_else(failed)?;
            }
            let t0 = Instant::now();
            let n = if test.n_prompt > 0 {
                peer.eval(&bench_tokens(test.n_prompt, vocab))
                    .ok_or_else(failed)?;
                test.n_prompt
            } else {
                for t in bench_tokens(test.n_gen, vocab) {
                    peer.eval(&[t]).ok_or_else(failed)?;
                }
                test.n_gen
            };
            if rep > 0 {
                samples.push(n as f64 / t0.elapsed().as_secs_f64());
            }
        }
        rows.push(Row {
            engine: "llama.cpp",
            backend: "CPU".to_string(),
            test: test.clone(),
            speed: speed(samples),
        });
    }
    Ok(rows)
}

#[cfg(not(feature = "oracle"))]
fn peer_rows(_: &[Test], _: usize, _: usize) -> Result<Vec<Row>> {
    bail!("--peer needs llm built with `--features oracle` (llama.cpp is compiled in only then)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(argv: &[&str]) -> BenchArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let mut all = vec!["llm", "m.gguf"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all).unwrap().bench
    }

    fn config(threads: usize, ngl: Option<u32>) -> ModelConfig {
        ModelConfig {
            path: "m.gguf".into(),
            ctx_size: None,
            threads,
            gpu_layers: ngl.map(GpuLayers::Count),
            main_gpu: 0,
            tensor_split: Vec::new(),
            split_mode: Default::default(),
            kv_types: Default::default(),
        }
    }

    #[test]
    fn cache_types_vary_between_gpu_layers_and_flash_attention() {
        let args = bench(&["-p", "8", "-n", "0", "--flash-attn", "0,1"]);
        let q8 = ggml::backend::KvTypes {
            k: ggml::GgmlType::Q8_0,
            v: ggml::GgmlType::Q8_0,
        };
        let configs = [
            config(1, Some(0)),
            ModelConfig {
                kv_types: q8,
                ..config(1, Some(0))
            },
        ];
        let fa = args.flash_attn.clone().unwrap().0;
        let order: Vec<_> = tests(&configs, &fa, &args)
            .unwrap()
            .iter()
            .map(|t| (t.config.kv_types.is_f16(), t.fa))
            .collect();
        use FlashAttn::{Off, On};
        assert_eq!(order, [(true, Off), (true, On), (false, Off), (false, On)]);
    }

    #[test]
    fn lists_make_the_cross_product_in_llama_bench_order() {
        let args = bench(&["-p", "8,16", "-n", "4", "-d", "0,8", "--flash-attn", "0,1"]);
        let configs = [config(1, Some(0)), config(2, Some(0)), config(1, Some(99))];
        let fa = args.flash_attn.clone().unwrap().0;
        let all = tests(&configs, &fa, &args).unwrap();
        // 3 configurations x 2 fa x 2 depths x (2 pp + 1 tg).
        assert_eq!(all.len(), 3 * 2 * 2 * 3);
        let names: Vec<String> = all.iter().take(6).map(Test::name).collect();
        assert_eq!(
            names,
            ["pp8", "pp16", "tg4", "pp8 @ d8", "pp16 @ d8", "tg4 @ d8"]
        );
        let settings: Vec<_> = all
            .iter()
            .step_by(6)
            .map(|t| (t.config.gpu_layers, t.fa, t.config.threads))
            .collect();
        let (zero, ninety_nine) = (Some(GpuLayers::Count(0)), Some(GpuLayers::Count(99)));
        assert_eq!(
            settings,
            [
                (zero, FlashAttn::Off, 1),
                (zero, FlashAttn::Off, 2),
                (zero, FlashAttn::On, 1),
                (zero, FlashAttn::On, 2),
                (ninety_nine, FlashAttn::Off, 1),
                (ninety_nine, FlashAttn::On, 1),
            ]
        );
    }

    #[test]
    fn zero_skips_a_test_and_depth_sizes_the_context() {
        let args = bench(&["-p", "0", "-n", "4", "-d", "100"]);
        let all = tests(&[config(1, None)], &[FlashAttn::Auto], &args).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name(), "tg4 @ d100");
        assert_eq!(all[0].n_ctx, 105);
        let mut given = config(1, None);
        given.ctx_size = Some(200);
        assert_eq!(
            tests(&[given.clone()], &[FlashAttn::Auto], &args).unwrap()[0].n_ctx,
            200
        );
        given.ctx_size = Some(50);
        let err = tests(&[given], &[FlashAttn::Auto], &args)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a context of 105"), "{err}");
        // A context a test, as llama-bench: its tokens plus one, at least 16.
        let plain = bench(&["-p", "512", "-n", "128"]);
        let t = tests(&[config(1, None)], &[FlashAttn::Auto], &plain).unwrap();
        assert_eq!((t[0].n_ctx, t[1].n_ctx), (513, 129));
        let tiny = bench(&["-p", "4", "-n", "2"]);
        let t = tests(&[config(1, None)], &[FlashAttn::Auto], &tiny).unwrap();
        assert_eq!(t[0].n_ctx, 16);
    }

    #[test]
    fn flash_attn_values() {
        assert_eq!("0".parse(), Ok(FlashAttn::Off));
        assert_eq!("on".parse(), Ok(FlashAttn::On));
        assert_eq!("auto".parse(), Ok(FlashAttn::Auto));
        assert!("2".parse::<FlashAttn>().is_err());
        assert_eq!(
            bench(&["--flash-attn"]).flash_attn,
            Some(List(vec![FlashAttn::On]))
        );
        assert!(bench(&[]).flash_attn.is_none());
    }

    #[test]
    fn speed_is_mean_and_sample_sd() {
        let s = speed(vec![1.0, 3.0]);
        assert_eq!(s.mean, 2.0);
        assert!((s.sd - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(speed(vec![5.0]).sd, 0.0);
    }
}
