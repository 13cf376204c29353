//! The model flags that `chat`, `run` and `bench` share: which file, how much
//! context, how many threads and where the layers go. Declared once here,
//! flattened into each subcommand, and checked once into a [`ModelConfig`].
//! `bench` takes comma-separated lists (`-t 4,8 -ngl 0,99`) and gets one
//! configuration per combination; `chat` and `run` take one value each.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::chat::catalog::Catalogue;
use crate::chat::setup::resolve_model;
use crate::engine::load::LoadOptions;
use crate::engine::planner::{self, no_gpu_notice, Devices, GpuLayers, SplitMode};
use ggml::backend::KvTypes;
use ggml::kv_types::{cache_type_name, parse_cache_type};
use ggml::GgmlType;

/// Values separated by commas, as llama-bench takes them (`-p 512,1024`).
#[derive(Clone, Debug, PartialEq)]
pub struct List<T>(pub Vec<T>);

impl<T: FromStr> FromStr for List<T>
where
    T::Err: fmt::Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<List<T>, String> {
        s.split(',')
            .map(|v| {
                let v = v.trim();
                if v.is_empty() {
                    return Err(format!("'{s}' has an empty value"));
                }
                v.parse::<T>().map_err(|e| format!("'{v}': {e}"))
            })
            .collect::<Result<Vec<T>, String>>()
            .map(List)
    }
}

impl<T: fmt::Display> fmt::Display for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// Model file (.gguf), or a name from models.toml's aliases (e.g. smollm2)
    #[arg(required_unless_present = "model_flag", value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// The model, as llama.cpp's -m spells it
    #[arg(
        short = 'm',
        long = "model",
        value_name = "MODEL",
        conflicts_with = "model"
    )]
    pub model_flag: Option<PathBuf>,
    /// Context size in tokens (0: the model's own) [default: 4096, or the model's if smaller; bench: what each test needs]
    #[arg(short = 'c', long = "ctx-size", allow_hyphen_values = true, value_parser = crate::cli::values::ctx_size)]
    pub ctx_size: Option<usize>,
    /// Threads [default: physical cores] (bench: a comma-separated list)
    #[arg(short = 't', long, value_name = "N", allow_hyphen_values = true, value_parser = crate::cli::values::threads)]
    pub threads: Option<List<usize>>,
    /// Layers to put on the GPU: a number, 'auto' or 'all' (llama.cpp: -ngl; bench: a comma-separated list)
    #[arg(long = "n-gpu-layers", value_name = "N", allow_hyphen_values = true)]
    pub n_gpu_layers: Option<List<GpuLayers>>,
    /// The GPU that holds the model with --split-mode none (llama.cpp: -mg) [default: 0]
    #[arg(long = "main-gpu", value_name = "I")]
    pub main_gpu: Option<usize>,
    /// Each GPU's share of the layers, e.g. 3,1 (llama.cpp: -ts) [default: in proportion to free memory]
    #[arg(long = "tensor-split", value_name = "A,B,...")]
    pub tensor_split: Option<List<f32>>,
    /// Layers over several GPUs: none (one GPU, --main-gpu) or layer (a contiguous range each) (llama.cpp: -sm) [default: layer]
    #[arg(long = "split-mode", value_name = "none|layer")]
    // Parsed in `checked`, so that `row` is one line of error, not clap's usage.
    pub split_mode: Option<String>,
    /// KV cache type of the keys: f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl (llama.cpp: -ctk; bench: a list) [default: f16]
    #[arg(long = "cache-type-k", value_name = "TYPE")]
    pub cache_type_k: Option<List<CacheType>>,
    /// KV cache type of the values, as --cache-type-k (llama.cpp: -ctv) [default: f16]
    #[arg(long = "cache-type-v", value_name = "TYPE")]
    pub cache_type_v: Option<List<CacheType>>,
}

/// A KV cache type by llama.cpp's name (`q8_0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheType(pub GgmlType);

impl FromStr for CacheType {
    type Err = String;

    fn from_str(s: &str) -> Result<CacheType, String> {
        parse_cache_type(s).map(CacheType)
    }
}

impl fmt::Display for CacheType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&cache_type_name(self.0))
    }
}

/// The model flags, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub path: PathBuf,
    /// As given: see [`ModelConfig::n_ctx`].
    pub ctx_size: Option<usize>,
    pub threads: usize,
    /// None: not asked for.
    pub gpu_layers: Option<GpuLayers>,
    pub main_gpu: usize,
    /// Empty: in proportion to each GPU's free memory.
    pub tensor_split: Vec<f32>,
    pub split_mode: SplitMode,
    pub kv_types: KvTypes,
}

impl ModelConfig {
    /// The context size to use: the user's, or 4096 capped at the model's own.
    pub fn n_ctx(&self, trained: usize) -> usize {
        context_size(self.ctx_size, trained)
    }

    /// What the loader needs of these flags.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            ctx_size: self.ctx_size,
            threads: self.threads,
            gpu_layers: self.gpu_layers,
            planner: planner::Options {
                gpu_layers: self.gpu_layers.unwrap_or(GpuLayers::Auto),
                split_mode: self.split_mode,
                tensor_split: (!self.tensor_split.is_empty()).then(|| self.tensor_split.clone()),
                main_gpu: self.main_gpu,
            },
            kv_types: self.kv_types,
        }
    }

    /// The one line said when GPU layers were asked for and there is no GPU
    /// backend to place them on.
    pub fn cpu_only_notice(&self) -> Option<String> {
        no_gpu_notice(self.gpu_layers, &Devices::present())
    }
}

pub use crate::engine::load::context_size;

/// More threads than logical cores only makes them wait on each other (at
/// `-t 1000` a reply crawls): such a count is cut to the cores, with a word.
fn clamp_threads(t: usize) -> usize {
    let logical = std::thread::available_parallelism().map_or(usize::MAX, |n| n.get());
    if t > logical {
        eprintln!(
            "llm: -t {t}: this machine has {logical} logical core{}; using {logical}",
            if logical == 1 { "" } else { "s" }
        );
        return logical;
    }
    t.max(1)
}

impl ModelArgs {
    /// One configuration: every flag must have one value.
    pub fn config(&self) -> Result<ModelConfig> {
        let one = |flag: &str, n: usize| -> Result<()> {
            if n > 1 {
                bail!("{flag} takes one value here (lists are for `llm bench`)");
            }
            Ok(())
        };
        one(
            "-t/--threads",
            self.threads.as_ref().map_or(0, |l| l.0.len()),
        )?;
        one(
            "-ngl/--n-gpu-layers",
            self.n_gpu_layers.as_ref().map_or(0, |l| l.0.len()),
        )?;
        one(
            "-ctk/--cache-type-k",
            self.cache_type_k.as_ref().map_or(0, |l| l.0.len()),
        )?;
        one(
            "-ctv/--cache-type-v",
            self.cache_type_v.as_ref().map_or(0, |l| l.0.len()),
        )?;
        Ok(self.configs()?.remove(0))
    }

    /// Every combination of the listed values, GPU layers varying slowest,
    /// then the key and value cache types, then threads (as llama-bench
    /// orders its tests).
    pub fn configs(&self) -> Result<Vec<ModelConfig>> {
        let base = self.checked()?;
        let threads: Vec<usize> = match &self.threads {
            Some(l) => l.0.iter().map(|&t| clamp_threads(t)).collect(),
            None => vec![crate::engine::physical_cores().max(1)],
        };
        let ngl: Vec<Option<GpuLayers>> = match &self.n_gpu_layers {
            Some(l) => l.0.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let types = |l: &Option<List<CacheType>>| -> Vec<GgmlType> {
            l.as_ref()
                .map_or(vec![GgmlType::F16], |l| l.0.iter().map(|t| t.0).collect())
        };
        let kv: Vec<KvTypes> = cross(&types(&self.cache_type_k), &types(&self.cache_type_v))
            .into_iter()
            .map(|(k, v)| KvTypes { k, v })
            .collect();
        Ok(cross(&cross(&ngl, &kv), &threads)
            .into_iter()
            .map(|((gpu_layers, kv_types), threads)| ModelConfig {
                gpu_layers,
                threads,
                kv_types,
                ..base.clone()
            })
            .collect())
    }

    /// The flags that never take lists, checked, with the model's path.
    fn checked(&self) -> Result<ModelConfig> {
        let split_mode = match &self.split_mode {
            Some(s) => s
                .parse::<SplitMode>()
                .map_err(|e| anyhow::anyhow!("--split-mode: {e}"))?,
            None => SplitMode::default(),
        };
        let tensor_split = self.tensor_split.clone().map_or(Vec::new(), |l| l.0);
        if tensor_split.iter().any(|s| !s.is_finite() || *s < 0.0)
            || (!tensor_split.is_empty() && tensor_split.iter().all(|&s| s == 0.0))
        {
            bail!("--tensor-split takes non-negative shares, not all zero (e.g. 3,1)");
        }
        Ok(ModelConfig {
            path: self.path()?,
            ctx_size: self.ctx_size,
            threads: 1,
            gpu_layers: None,
            main_gpu: self.main_gpu.unwrap_or(0),
            tensor_split,
            split_mode,
            kv_types: KvTypes::F16,
        })
    }

    /// The model file: a path, or an alias from models.toml.
    fn path(&self) -> Result<PathBuf> {
        let arg = self
            .model
            .as_ref()
            .or(self.model_flag.as_ref())
            .context("no model given: name a .gguf file")?;
        if arg.is_file() {
            return Ok(arg.clone());
        }
        resolve_model(arg, &Catalogue::load()?)
    }
}

/// Every (a, b) pair, `a` varying slowest.
pub fn cross<A: Clone, B: Clone>(a: &[A], b: &[B]) -> Vec<(A, B)> {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (x.clone(), y.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ModelArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            model: ModelArgs,
        }
        let mut argv = vec!["llm", "m.gguf"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().model
    }

    #[test]
    fn lists_parse_and_refuse_empty_values() {
        assert_eq!("512".parse(), Ok(List(vec![512usize])));
        assert_eq!("512, 1024".parse(), Ok(List(vec![512usize, 1024])));
        assert_eq!(
            "0,99,all,auto".parse(),
            Ok(List(vec![
                GpuLayers::Count(0),
                GpuLayers::Count(99),
                GpuLayers::All,
                GpuLayers::Auto
            ]))
        );
        assert!("512,".parse::<List<usize>>().is_err());
        assert!("".parse::<List<usize>>().is_err());
        assert!("8,x".parse::<List<usize>>().unwrap_err().contains("'x'"));
        assert_eq!(List(vec![1, 2]).to_string(), "1,2");
    }

    #[test]
    fn the_cross_product_varies_the_first_list_slowest() {
        assert_eq!(
            cross(&[0, 99], &[1, 2, 4]),
            [(0, 1), (0, 2), (0, 4), (99, 1), (99, 2), (99, 4)]
        );
        assert!(cross::<u8, u8>(&[], &[1]).is_empty());
    }

    #[test]
    fn split_mode_row_is_one_clear_error() {
        assert_eq!("layer".parse(), Ok(SplitMode::Layer));
        assert_eq!("none".parse(), Ok(SplitMode::None));
        assert!("rows".parse::<SplitMode>().is_err());
        let err = args(&["--split-mode", "row"]).checked().unwrap_err();
        assert!(err.to_string().contains("'row'"), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn bad_tensor_splits_are_refused() {
        for ts in ["0,0", "-1,2", "nan,1"] {
            let a = args(&[&format!("--tensor-split={ts}")]);
            assert!(a.checked().is_err(), "{ts}");
        }
    }

    #[test]
    fn lists_belong_to_bench_and_combine_there() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"").unwrap();
        let mut a = args(&[
            "-t",
            "1,2",
            "--n-gpu-layers",
            "0,99",
            "--tensor-split",
            "3,1",
        ]);
        a.model = Some(model.clone());
        let err = a.config().unwrap_err().to_string();
        assert!(err.contains("-t/--threads takes one value"), "{err}");
        let all = a.configs().unwrap();
        let pairs: Vec<_> = all.iter().map(|c| (c.gpu_layers, c.threads)).collect();
        let (zero, ninety_nine) = (Some(GpuLayers::Count(0)), Some(GpuLayers::Count(99)));
        assert_eq!(
            pairs,
            [(zero, 1), (zero, 2), (ninety_nine, 1), (ninety_nine, 2)]
        );
        assert!(all.iter().all(|c| c.tensor_split == [3.0, 1.0]));

        // Cache types cross between GPU layers and threads, keys slower.
        let mut kv = args(&[
            "-t",
            "1,2",
            "--cache-type-k",
            "f16,q8_0",
            "--cache-type-v",
            "q4_0",
        ]);
        kv.model = Some(model.clone());
        let err = kv.config().unwrap_err().to_string();
        assert!(err.contains("-t/--threads takes one value"), "{err}");
        let got: Vec<_> = kv
            .configs()
            .unwrap()
            .iter()
            .map(|c| (c.kv_types.k.name(), c.kv_types.v.name(), c.threads))
            .collect();
        assert_eq!(
            got,
            [
                ("F16", "Q4_0", 1),
                ("F16", "Q4_0", 2),
                ("Q8_0", "Q4_0", 1),
                ("Q8_0", "Q4_0", 2)
            ]
        );
        kv.threads = None;
        assert!(kv
            .config()
            .unwrap_err()
            .to_string()
            .contains("-ctk/--cache-type-k takes one value"));
        kv.cache_type_k = Some("q5_1".parse().unwrap());
        let c = kv.config().unwrap();
        assert_eq!(
            (c.kv_types.k, c.kv_types.v),
            (GgmlType::Q5_1, GgmlType::Q4_0)
        );
        assert!("q4_k"
            .parse::<List<CacheType>>()
            .unwrap_err()
            .contains("not a KV cache type"));

        // One thread: more than the machine's cores would be cut to them.
        let mut one = args(&["-t", "1", "-c", "0"]);
        one.model = Some(model.clone());
        let c = one.config().unwrap();
        assert_eq!((c.threads, c.gpu_layers, &c.path), (1, None, &model));
        assert_eq!(c.n_ctx(2048), 2048);
        assert_eq!(context_size(None, 8192), 4096);
        assert_eq!(context_size(Some(100), 8192), 100);
    }
}
