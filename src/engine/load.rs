//! Loading in order, the same for chat, run and bench: open and parse the
//! file once, read the configuration, choose the context, plan where each
//! layer runs, then build each layer range on its device.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::engine::planner::{self, Devices, GpuLayers, Placement, Plan};
use crate::engine::source::ModelSource;
use crate::format::gguf::human_bytes;
use crate::model::footprint::footprint;
use crate::model::forward::{Device, Layout};
use crate::model::Model;
use ggml::backend::KvTypes;

/// What the user asked for, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// None: 4096 capped at the model's own; Some(0): the model's own.
    pub ctx_size: Option<usize>,
    pub threads: usize,
    /// None when not asked for (then `auto` where GPUs are present).
    pub gpu_layers: Option<GpuLayers>,
    pub planner: planner::Options,
    /// The KV cache's types (-ctk/-ctv).
    pub kv_types: KvTypes,
}

pub struct Loaded {
    pub source: ModelSource,
    pub model: Model,
    pub n_ctx: usize,
    pub plan: Plan,
    /// Lines to say once on stderr: the plan where there is one to tell, or
    /// why everything runs on the CPU when GPU layers were asked for.
    pub notes: Vec<String>,
}

/// The context size to use: the user's, or 4096 capped at the model's own.
pub fn context_size(requested: Option<usize>, trained: usize) -> usize {
    match requested {
        Some(0) => trained,
        Some(n) => n,
        None => trained.min(4096),
    }
}

/// Opens `path` (a GGUF file or a Hugging Face folder) and loads it as
/// `opts` says.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded> {
    load_source(ModelSource::open(path)?, opts)
}

/// Loads a model already opened (chat reads its template from it first).
pub fn load_source(source: ModelSource, opts: &LoadOptions) -> Result<Loaded> {
    let path = source.path().to_path_buf();
    let hp = source.hyper_params()?;
    let mut config = source.config()?;
    let n_ctx = context_size(opts.ctx_size, config.n_ctx_train);
    if n_ctx > MAX_CTX {
        bail!("-c {n_ctx}: a context holds at most {MAX_CTX} tokens");
    }
    config.kv_types = opts.kv_types;
    config
        .kv_types
        .check_head_dim(config.shape.head_dim)
        .map_err(anyhow::Error::msg)?;
    let fp = footprint(source.tensors(), &hp, n_ctx, opts.kv_types);
    let mut devices = Devices::present();
    if cfg!(target_vendor = "apple") {
        // What Metal cannot run stays on the CPU, said once as the reason.
        if let Some(why) = ggml::metal::cannot_run(config.shape.head_dim, opts.kv_types) {
            devices.list.clear();
            devices.ordinals.clear();
            devices.why_none = why;
        }
    }
    let mut planner_opts = opts.planner.clone();
    planner_opts.gpu_layers = opts.gpu_layers.unwrap_or(GpuLayers::Auto);
    let mut notes = Vec::new();
    let plan = planner::plan(&fp, &devices, &planner_opts)
        .map_err(anyhow::Error::msg)
        .with_context(|| path.display().to_string())?;
    check_memory(&plan, n_ctx, config.n_ctx_train, mem_available())?;
    if n_ctx > config.n_ctx_train && config.n_ctx_train > 0 {
        notes.push(format!(
            "llm: -c {n_ctx} is more than the {} tokens the model was trained on: replies past that may degrade",
            config.n_ctx_train
        ));
    }
    if let Some(note) = planner::no_gpu_notice(opts.gpu_layers, &devices) {
        notes.push(note);
    } else if !devices.list.is_empty() {
        notes.push(plan.to_string());
    }
    let t_build = std::time::Instant::now();
    let (threads, isa, layout) = (
        opts.threads,
        ggml::cpu::isa(),
        layout(&plan, &devices.ordinals),
    );
    let model = match &source {
        ModelSource::Gguf(f) => Model::build(f.clone(), config, threads, isa, &layout),
        ModelSource::Folder(f) => Model::build(f.clone(), config, threads, isa, &layout),
    }
    .map_err(|e| out_of_memory_hint(e, &fp, &planner_opts))?;
    if std::env::var_os("LLM_TIMING").is_some() {
        eprintln!(
            "llm: built the model in {:.2} s",
            t_build.elapsed().as_secs_f64()
        );
    }
    Ok(Loaded {
        source,
        model,
        n_ctx,
        plan,
        notes,
    })
}

/// A GPU allocation that failed (the free memory moved since the plan, or
/// the plan was forced with -ngl): the one-line error gains the free memory
/// now and the -ngl that fits it.
fn out_of_memory_hint(
    e: anyhow::Error,
    fp: &crate::model::footprint::Footprint,
    opts: &planner::Options,
) -> anyhow::Error {
    let msg = format!("{e:#}");
    if !msg.contains("out of device memory") {
        return e;
    }
    let devices = Devices::present();
    let free: Vec<String> = devices
        .list
        .iter()
        .map(|d| format!("{} MiB free on {}", d.free_bytes >> 20, d.name))
        .collect();
    let mut auto = opts.clone();
    auto.gpu_layers = GpuLayers::Auto;
    let fits = planner::plan(fp, &devices, &auto)
        .map(|p| format!("; -ngl {} fits", p.gpu_layers))
        .unwrap_or_default();
    anyhow::anyhow!("{msg} ({}){fits}", free.join(", "))
}

/// llama.cpp keeps its context size in 32 bits; beyond it positions and
/// byte counts stop making sense long before memory runs out.
pub const MAX_CTX: usize = u32::MAX as usize;

/// Bytes this machine can give a new allocation without pushing others out:
/// MemAvailable plus free swap (what an allocation could still get before the
/// kernel kills something). None where /proc/meminfo cannot be read; then
/// nothing is checked.
pub fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// Refuses a context whose KV cache and scratch cannot fit in `available`
/// bytes of host memory, before anything is allocated: otherwise the
/// allocation aborts the process. The weights are mapped from the file and
/// paged in and out by the kernel, so they are not counted.
pub fn check_memory(
    plan: &Plan,
    n_ctx: usize,
    trained: usize,
    available: Option<u64>,
) -> Result<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let cpu = &plan.cpu.usage;
    let need = cpu.kv_bytes.saturating_add(cpu.scratch_bytes);
    if need <= available {
        return Ok(());
    }
    bail!(
        "a context of {n_ctx} tokens needs {} (KV cache and scratch) but this machine has {} of memory available: use a smaller context, -c (the model was trained on {trained})",
        human_bytes(need),
        human_bytes(available)
    )
}

/// The model's layout from the plan.
/// The plan as layer ranges on devices, GPUs named by their driver ordinal.
pub fn layout(plan: &Plan, ordinals: &[usize]) -> Layout {
    let device = |p: &Placement| match *p {
        Placement::Cpu => Device::Cpu,
        Placement::Gpu(i) => Device::Gpu(ordinals.get(i).copied().unwrap_or(i)),
    };
    let layers: Vec<Device> = plan.layers.iter().map(device).collect();
    Layout::from_layers(&layers, device(&plan.output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_defaults_as_llama_cpp_chat_does() {
        assert_eq!(context_size(None, 8192), 4096);
        assert_eq!(context_size(None, 2048), 2048);
        assert_eq!(context_size(Some(0), 8192), 8192);
        assert_eq!(context_size(Some(100), 8192), 100);
    }

    #[test]
    fn layout_groups_runs_of_one_device() {
        let l = Layout::from_layers(
            &[Device::Cpu, Device::Cpu, Device::Gpu(0), Device::Gpu(1)],
            Device::Gpu(1),
        );
        assert_eq!(
            l.ranges,
            [
                (Device::Cpu, 0..2),
                (Device::Gpu(0), 2..3),
                (Device::Gpu(1), 3..4)
            ]
        );
    }
}
