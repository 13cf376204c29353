//! `llm info MODEL`: what a model file holds, from its header alone (a
//! Hugging Face folder's report is in info_folder.rs).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::chat::catalog::Catalogue;
use crate::chat::setup::{self, TemplateChoice};
use crate::cli::model_args::CacheType;
use crate::engine::load::context_size;
use crate::engine::planner::{
    self, parse_bytes, parse_tensor_split, Devices, GpuLayers, Options, Plan, SplitMode,
};
use crate::format::gguf::{human_bytes, GgufError, GgufFile, Metadata, Value};
use crate::format::model_folder::ModelFolder;
use crate::format::TensorSource;
use crate::model::footprint::{footprint, Footprint};
use crate::model::HyperParams;
use ggml::backend::KvTypes;
use ggml::GgmlType;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Model file (.gguf; for a split model, any part's name), or a Hugging
    /// Face model folder
    pub model: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Context size for the KV cache estimate (0: the model's own; absent:
    /// the model's own, or with --plan chat's default, 4096 or the model's if smaller)
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    pub ctx_size: Option<u64>,
    /// Print the offload plan (which device runs each layer, MiB per device)
    /// without loading the model
    #[arg(long)]
    pub plan: bool,
    /// With --plan: layers on the GPU, a number, 'auto' or 'all' (llama.cpp: -ngl)
    #[arg(
        long = "n-gpu-layers",
        value_name = "N",
        default_value = "auto",
        allow_hyphen_values = true,
        requires = "plan"
    )]
    pub n_gpu_layers: GpuLayers,
    /// With --plan: hypothetical GPUs, each card's usable memory after any
    /// margin (24GiB, 512MiB, 8GB, bytes), comma-separated for several
    #[arg(long = "gpu-mem", value_name = "SIZE[,SIZE...]", requires = "plan", value_parser = parse_gpu_mem)]
    pub gpu_mem: Option<GpuMem>,
    /// With --plan: none (all on --main-gpu) or layer (ranges across GPUs) (llama.cpp: -sm)
    #[arg(
        long = "split-mode",
        value_name = "MODE",
        default_value = "layer",
        requires = "plan"
    )]
    pub split_mode: SplitMode,
    /// With --plan: each GPU's share of the layers, e.g. 3,1 (llama.cpp: -ts)
    #[arg(long = "tensor-split", value_name = "A,B,...", requires = "plan", value_parser = |s: &str| parse_tensor_split(s).map(Shares))]
    pub tensor_split: Option<Shares>,
    /// With --plan: the GPU of --split-mode none (llama.cpp: -mg)
    #[arg(
        long = "main-gpu",
        value_name = "I",
        default_value_t = 0,
        requires = "plan"
    )]
    pub main_gpu: usize,
    /// KV cache type of the keys, for the memory figures (llama.cpp: -ctk) [default: f16]
    #[arg(long = "cache-type-k", value_name = "TYPE")]
    pub cache_type_k: Option<CacheType>,
    /// KV cache type of the values (llama.cpp: -ctv) [default: f16]
    #[arg(long = "cache-type-v", value_name = "TYPE")]
    pub cache_type_v: Option<CacheType>,
}

impl InfoArgs {
    pub fn kv_types(&self) -> KvTypes {
        KvTypes {
            k: self.cache_type_k.map_or(GgmlType::F16, |t| t.0),
            v: self.cache_type_v.map_or(GgmlType::F16, |t| t.0),
        }
    }
}

/// One card's bytes each; a list is one value to clap.
#[derive(Clone, Debug)]
pub struct GpuMem(pub Vec<u64>);

#[derive(Clone, Debug)]
pub struct Shares(pub Vec<f32>);

fn parse_gpu_mem(s: &str) -> Result<GpuMem, String> {
    s.split(',')
        .map(parse_bytes)
        .collect::<Result<_, _>>()
        .map(GpuMem)
}

#[derive(Debug, Serialize)]
pub struct ModelInfo {
    pub file: FileInfo,
    pub general: General,
    pub hparams: HyperParams,
    pub tokenizer: TokenizerInfo,
    pub chat_template: ChatTemplateInfo,
    pub tensors: TensorCensus,
    pub memory: Memory,
}

#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub paths: Vec<PathBuf>,
    pub bytes: u64,
    pub gguf_version: u32,
    pub alignment: u64,
    pub metadata_entries: usize,
}

#[derive(Debug, Serialize)]
pub struct General {
    pub name: Option<String>,
    pub file_type: Option<String>,
    pub quantization_version: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct SpecialToken {
    pub role: &'static str,
    pub id: u64,
    pub text: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TokenizerInfo {
    pub model: Option<String>,
    pub pre: Option<String>,
    pub tokens: u64,
    pub merges: u64,
    /// Count of each token type (normal, control, user-defined, byte, ...).
    pub token_types: BTreeMap<&'static str, u64>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub special: Vec<SpecialToken>,
}

#[derive(Debug, Serialize)]
pub struct ChatTemplateInfo {
    pub present: bool,
    pub chars: usize,
    pub first_line: Option<String>,
    /// What `llm chat` would use: the model's own, a models.toml family's,
    /// or the plain fallback.
    pub chosen: Option<String>,
    pub origin: Option<String>,
    pub stop: Vec<String>,
    /// A fixed sample conversation rendered with the chosen template.
    pub example: Option<String>,
    /// Why the template cannot be used (a syntax error, a bad models.toml).
    pub error: Option<String>,
}

impl ChatTemplateInfo {
    fn gather(md: &Metadata, tokenizer: &TokenizerInfo) -> ChatTemplateInfo {
        let own = md.str("tokenizer.chat_template").ok().flatten();
        let mut info = ChatTemplateInfo {
            present: own.is_some(),
            chars: own.map_or(0, |t| t.chars().count()),
            first_line: own
                .and_then(|t| t.lines().find(|l| !l.trim().is_empty()).map(str::to_string)),
            chosen: None,
            origin: None,
            stop: Vec::new(),
            example: None,
            error: None,
        };
        let special = |role: &str| {
            tokenizer
                .special
                .iter()
                .find(|s| s.role == role)
                .and_then(|s| s.text.clone())
                .unwrap_or_default()
        };
        let chosen = Catalogue::load().and_then(|cat| {
            let family = setup::family_for(&cat, md)?;
            let (template, _) = setup::choose_template(&TemplateChoice::default(), md, family)?;
            let example = template.example(&special("bos"), &special("eos"))?;
            Ok((template, example))
        });
        match chosen {
            Ok((template, example)) => {
                info.origin = Some(setup::origin_text(&template));
                info.chosen = Some(template.name);
                info.stop = template.stop;
                info.example = Some(example);
            }
            Err(e) => info.error = Some(format!("{e:#}")),
        }
        info
    }
}

#[derive(Debug, Serialize)]
pub struct TypeCount {
    #[serde(rename = "type")]
    pub ty: String,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct TensorCensus {
    pub count: usize,
    pub by_type: Vec<TypeCount>,
    pub parameters: u64,
    pub bits_per_weight: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    pub weights_bytes: u64,
    pub ctx_size: u64,
    pub kv_cache_bytes: u64,
    pub kv_cache_type: String,
}

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    if args.model.is_dir() && args.model.join("config.json").is_file() {
        let folder = ModelFolder::open(&args.model).map_err(anyhow::Error::msg)?;
        if args.plan {
            return show_plan(args, &folder.metadata, &folder);
        }
        return super::info_folder::show(args, &folder);
    }
    // A truncated download still has its header: show it, then say what is
    // missing (that is when users need the header).
    let (gguf, missing) = match GgufFile::open(&args.model) {
        Ok(g) => (g, None),
        Err(e) if e.to_string().contains("truncated download") => {
            match GgufFile::open_truncated(&args.model) {
                Ok((g, Some(m))) => (g, Some((m, e))),
                _ => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    show(args, &gguf)?;
    let Some((m, first)) = missing else {
        return Ok(());
    };
    // The strict reader's words name the first tensor that is missing.
    let first = first.to_string();
    let first = first
        .strip_prefix(&format!("{}: ", args.model.display()))
        .unwrap_or(&first);
    let n = m.absent + m.cut;
    anyhow::bail!(
        "{}: incomplete: {first}; in all {n} tensor{} ({}) lie past the end, the file has {} of {}{}; the header above is whole",
        args.model.display(),
        if n == 1 { "" } else { "s" },
        human_bytes(m.bytes),
        human_bytes(m.file_len),
        human_bytes(m.full_len),
        if m.cut > 0 {
            format!(" ({} cut part way)", m.cut)
        } else {
            String::new()
        },
    )
}

fn show(args: &InfoArgs, gguf: &GgufFile) -> anyhow::Result<()> {
    if args.plan {
        return show_plan(args, gguf.metadata(), gguf);
    }
    let info = ModelInfo::gather(gguf, args.ctx_size, args.kv_types())?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &info).context("writing JSON")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", info.render())?;
    }
    out.flush()?;
    Ok(())
}

/// `llm info --plan`: the offload plan from the header alone.
fn show_plan(args: &InfoArgs, md: &Metadata, tensors: &dyn TensorSource) -> anyhow::Result<()> {
    let hparams = HyperParams::from_metadata(md).map_err(|e| e.in_file(tensors.path()))?;
    let trained = hparams.n_ctx_train.unwrap_or(4096) as usize;
    let n_ctx = context_size(args.ctx_size.map(|c| c as usize), trained);
    let fp = footprint(tensors, &hparams, n_ctx, args.kv_types());
    let devices = match &args.gpu_mem {
        Some(GpuMem(sizes)) => Devices::hypothetical(sizes),
        None => Devices::present(),
    };
    let opts = Options {
        gpu_layers: args.n_gpu_layers,
        split_mode: args.split_mode,
        tensor_split: args.tensor_split.as_ref().map(|s| s.0.clone()),
        main_gpu: args.main_gpu,
    };
    let plan = planner::plan(&fp, &devices, &opts).map_err(anyhow::Error::msg)?;
    let mut out = io::stdout().lock();
    if args.json {
        #[derive(Serialize)]
        struct PlanJson<'a> {
            footprint: &'a Footprint,
            plan: &'a Plan,
        }
        let json = PlanJson {
            footprint: &fp,
            plan: &plan,
        };
        serde_json::to_writer_pretty(&mut out, &json).context("writing JSON")?;
        writeln!(out)?;
    } else {
        write!(out, "{plan}")?;
    }
    out.flush()?;
    Ok(())
}

/// llama.cpp's `general.file_type` (enum llama_ftype) names.
fn file_type_name(id: u64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// llama.cpp's token attribute values in `tokenizer.ggml.token_type`.
fn token_type_name(t: i64) -> &'static str {
    match t {
        1 => "normal",
        2 => "unknown",
        3 => "control",
        4 => "user-defined",
        5 => "unused",
        6 => "byte",
        _ => "undefined",
    }
}

const SPECIAL_ROLES: &[(&str, &str)] = &[
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("eot", "tokenizer.ggml.eot_token_id"),
    ("eom", "tokenizer.ggml.eom_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    // llama.cpp spells the key this way.
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("cls", "tokenizer.ggml.cls_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
];

impl TokenizerInfo {
    fn gather(md: &Metadata) -> Result<TokenizerInfo, GgufError> {
        let tokens = md
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .and_then(|a| a.as_strings());
        let merges = md
            .get("tokenizer.ggml.merges")
            .and_then(Value::as_array)
            .map_or(0, |a| a.len() as u64);
        let mut token_types = BTreeMap::new();
        if let Some(types) = md
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
        {
            for i in 0..types.len() {
                let t = types.get(i).and_then(|v| v.as_i64()).unwrap_or(0);
                *token_types.entry(token_type_name(t)).or_insert(0) += 1;
            }
        }
        let mut special = Vec::new();
        for &(role, key) in SPECIAL_ROLES {
            if let Some(id) = md.u64(key)? {
                let text = tokens.and_then(|t| usize::try_from(id).ok().and_then(|i| t.get(i)));
                special.push(SpecialToken {
                    role,
                    id,
                    text: text.cloned(),
                });
            }
        }
        Ok(TokenizerInfo {
            model: md.str("tokenizer.ggml.model")?.map(str::to_string),
            pre: md.str("tokenizer.ggml.pre")?.map(str::to_string),
            tokens: tokens.map_or(0, |t| t.len() as u64),
            merges,
            token_types,
            add_bos: md.bool("tokenizer.ggml.add_bos_token")?,
            add_eos: md.bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: md.bool("tokenizer.ggml.add_space_prefix")?,
            special,
        })
    }
}

impl ModelInfo {
    pub fn gather(
        gguf: &GgufFile,
        ctx_size: Option<u64>,
        kv_types: KvTypes,
    ) -> Result<ModelInfo, GgufError> {
        let md = gguf.metadata();
        let in_file = |e: GgufError| e.in_file(gguf.path());
        let hparams = HyperParams::from_metadata(md).map_err(in_file)?;
        let tokenizer = TokenizerInfo::gather(md).map_err(in_file)?;
        md.str("tokenizer.chat_template").map_err(in_file)?;
        let chat_template = ChatTemplateInfo::gather(md, &tokenizer);

        let mut by_type: BTreeMap<ggml::GgmlType, (u64, u64)> = BTreeMap::new();
        let mut parameters = 0u64;
        let mut weights_bytes = 0u64;
        for t in gguf.tensors() {
            let entry = by_type.entry(t.ty).or_default();
            entry.0 += 1;
            entry.1 += t.size;
            parameters = parameters.saturating_add(t.n_elements());
            weights_bytes = weights_bytes.saturating_add(t.size);
        }
        let tensors = TensorCensus {
            count: gguf.tensors().len(),
            by_type: by_type
                .into_iter()
                .map(|(ty, (count, bytes))| TypeCount {
                    ty: ty.name().to_string(),
                    count,
                    bytes,
                })
                .collect(),
            parameters,
            bits_per_weight: (parameters > 0)
                .then(|| weights_bytes as f64 * 8.0 / parameters as f64),
        };

        let ctx = match ctx_size {
            Some(n) if n > 0 => n,
            _ => hparams.n_ctx_train.unwrap_or(0),
        };
        let memory = Memory {
            weights_bytes,
            ctx_size: ctx,
            kv_cache_bytes: footprint(gguf, &hparams, ctx as usize, kv_types).kv_bytes(),
            kv_cache_type: kv_types.to_string(),
        };
        let general = General {
            name: md.str("general.name").map_err(in_file)?.map(str::to_string),
            file_type: md.u64("general.file_type").map_err(in_file)?.map(|id| {
                file_type_name(id).map_or_else(|| format!("unknown ({id})"), str::to_string)
            }),
            quantization_version: md.u64("general.quantization_version").map_err(in_file)?,
        };
        let file = FileInfo {
            paths: gguf.parts().iter().map(|p| p.path.clone()).collect(),
            bytes: gguf.parts().iter().map(|p| p.len).sum(),
            gguf_version: gguf.version(),
            alignment: gguf.parts()[0].alignment,
            metadata_entries: md.len(),
        };
        Ok(ModelInfo {
            file,
            general,
            hparams,
            tokenizer,
            chat_template,
            tensors,
            memory,
        })
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut r = Report::default();
        let f = &self.file;
        let parts = if f.paths.len() > 1 {
            format!(", {} parts", f.paths.len())
        } else {
            String::new()
        };
        r.line(
            "file",
            format!("{} ({}{parts})", f.paths[0].display(), human_bytes(f.bytes)),
        );
        r.line(
            "format",
            format!(
                "GGUF v{}, {} metadata entries, alignment {}",
                f.gguf_version, f.metadata_entries, f.alignment
            ),
        );
        if let Some(name) = &self.general.name {
            r.line("name", name.clone());
        }
        if let Some(ft) = &self.general.file_type {
            r.line("file type", ft.clone());
        }

        render_hparams(&mut r, &self.hparams);

        let t = &self.tokenizer;
        let mut tok = format!(
            "{} (pre-tokenizer {}), {} tokens",
            t.model.as_deref().unwrap_or("none"),
            t.pre.as_deref().unwrap_or("default"),
            t.tokens
        );
        if t.merges > 0 {
            tok += &format!(", {} merges", t.merges);
        }
        let types: Vec<String> = t
            .token_types
            .iter()
            .filter(|(name, _)| **name != "normal")
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        if !types.is_empty() {
            tok += &format!(" ({})", types.join(", "));
        }
        r.line("tokenizer", tok);
        let flags = [
            ("add_bos", t.add_bos),
            ("add_eos", t.add_eos),
            ("add_space_prefix", t.add_space_prefix),
        ];
        let flags: Vec<String> = flags
            .iter()
            .filter_map(|(name, v)| v.map(|v| format!("{name}={v}")))
            .collect();
        if !flags.is_empty() {
            r.line("", flags.join(", "));
        }
        let special: Vec<String> = t
            .special
            .iter()
            .map(|s| match &s.text {
                Some(text) => format!("{} {} {:?}", s.role, s.id, text),
                None => format!("{} {} (not in the vocabulary)", s.role, s.id),
            })
            .collect();
        r.line("special tokens", list_or_none(&special));
        let c = &self.chat_template;
        r.line(
            "chat template",
            match &c.first_line {
                Some(first) if c.present => format!(
                    "yes, {} chars, first line: {}",
                    c.chars,
                    truncate(first, 80)
                ),
                _ if c.present => "yes, empty".into(),
                _ => "none".into(),
            },
        );
        if let (Some(name), Some(origin)) = (&c.chosen, &c.origin) {
            r.line("chat uses", format!("{name}: {origin}"));
            if !c.stop.is_empty() {
                let stops: Vec<String> = c.stop.iter().map(|s| format!("{s:?}")).collect();
                r.line("stop strings", stops.join(", "));
            }
        }
        if let Some(e) = &c.error {
            r.line("chat uses", format!("nothing: {e}"));
        }
        if let Some(example) = &c.example {
            r.line("example", String::new());
            for l in example.lines() {
                r.text += &format!("  {l}\n");
            }
        }

        let census = &self.tensors;
        r.line("tensors", census.count.to_string());
        for tc in &census.by_type {
            r.line(
                "",
                format!(
                    "{:<8} {:>5} tensors {:>12}",
                    tc.ty,
                    tc.count,
                    human_bytes(tc.bytes)
                ),
            );
        }
        let bpw = census
            .bits_per_weight
            .map_or(String::new(), |b| format!(", {b:.2} bits per weight"));
        r.line(
            "parameters",
            format!("{}{bpw}", human_count(census.parameters)),
        );
        let m = &self.memory;
        r.line("weights", human_bytes(m.weights_bytes));
        r.line(
            "KV cache",
            format!(
                "{} at context {} ({})",
                human_bytes(m.kv_cache_bytes),
                m.ctx_size,
                m.kv_cache_type
            ),
        );
        r.text
    }
}

/// Two aligned columns.
/// The model's shape and settings, as `llm info` prints them.
pub(super) fn render_hparams(r: &mut Report, h: &HyperParams) {
    r.line("architecture", h.architecture.clone());
    r.line("layers", h.n_layer.to_string());
    r.line("embedding", opt(h.n_embd));
    r.line(
        "heads",
        format!(
            "{} (KV heads {})",
            per_layer(&h.n_head),
            per_layer(&h.n_head_kv)
        ),
    );
    let head_size = match (h.head_dim_k, h.head_dim_v) {
        (Some(k), Some(v)) if k == v => k.to_string(),
        (k, v) => format!("{} (K) / {} (V)", opt(k), opt(v)),
    };
    r.line("head size", head_size);
    r.line("feed-forward", per_layer(&h.n_ff));
    r.line("context", format!("{} (trained)", opt(h.n_ctx_train)));
    let mut rope = format!(
        "base {}",
        h.rope_freq_base.map_or("?".into(), |b| b.to_string())
    );
    if let Some(b) = h.rope_freq_base_swa {
        rope += &format!(", base {b} on sliding-window layers");
    }
    match &h.rope_scaling {
        Some(s) => {
            rope += &format!(", {} scaling", s.kind);
            if let Some(f) = s.factor {
                rope += &format!(" x{f}");
            }
            if let Some(n) = s.original_context {
                rope += &format!(" from {n}");
            }
        }
        None => rope += ", no scaling",
    }
    r.line("rope", rope);
    let swa = match h.sliding_window {
        Some(w) => {
            let local = h.swa_layers.iter().filter(|&&s| s).count();
            let global: Vec<String> = (0..h.swa_layers.len())
                .filter(|&i| !h.swa_layers[i])
                .map(|i| i.to_string())
                .collect();
            format!(
                "{w} tokens on {local} of {} layers (global: {})",
                h.n_layer,
                if global.is_empty() {
                    "none".into()
                } else {
                    global.join(", ")
                }
            )
        }
        None => "none".into(),
    };
    r.line("sliding window", swa);
    // Epsilons are stored as f32; print the value the file meant, not its f64 widening.
    r.line(
        "norm epsilon",
        h.norm_eps.map_or("?".into(), |e| format!("{:e}", e as f32)),
    );
    r.line("vocabulary", opt(h.n_vocab));
}

#[derive(Default)]
pub(super) struct Report {
    pub(super) text: String,
}

impl Report {
    pub(super) fn line(&mut self, label: &str, value: String) {
        self.text += &format!("{label:<15} {value}\n");
    }
}

/// Items joined by commas, or "none".
pub(super) fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

/// One number when every layer agrees, else the range.
fn per_layer(v: &[u64]) -> String {
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}..{hi} (varies by layer)"),
        _ => "?".into(),
    }
}

fn human_count(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2} B", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} K", x / 1e3)
    } else {
        n.to_string()
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max_chars).collect();
        format!("{cut}...")
    }
}
