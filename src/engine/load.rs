//! Loading in order, the same for chat, run and bench: open and parse the
//! file once, read the configuration, choose the context, plan where each
//! layer runs, then build each layer range on its device.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::engine::planner::{self, Devices, GpuLayers, Placement, Plan};
use crate::format::gguf::GgufFile;
use crate::model::footprint::footprint;
use crate::model::forward::{Device, Layout};
use crate::model::{Config, HyperParams, Model};

/// What the user asked for, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// None: 4096 capped at the model's own; Some(0): the model's own.
    pub ctx_size: Option<usize>,
    pub threads: usize,
    /// None when not asked for (then `auto` where GPUs are present).
    pub gpu_layers: Option<GpuLayers>,
    pub planner: planner::Options,
}

pub struct Loaded {
    pub file: Arc<GgufFile>,
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

/// Opens `path` and loads it as `opts` says.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded> {
    load_file(Arc::new(GgufFile::open(path)?), opts)
}

/// Loads a file already opened (chat reads its template from it first).
pub fn load_file(file: Arc<GgufFile>, opts: &LoadOptions) -> Result<Loaded> {
    let path = file.path().to_path_buf();
    let hp = HyperParams::from_metadata(file.metadata()).map_err(|e| e.in_file(&path))?;
    let config = Config::from_gguf(&file)?;
    let n_ctx = context_size(opts.ctx_size, config.n_ctx_train);
    let fp = footprint(&file, &hp, n_ctx);
    let devices = Devices::present();
    let mut planner_opts = opts.planner.clone();
    planner_opts.gpu_layers = opts.gpu_layers.unwrap_or(GpuLayers::Auto);
    let plan = planner::plan(&fp, &devices, &planner_opts)
        .map_err(anyhow::Error::msg)
        .with_context(|| path.display().to_string())?;
    let mut notes = Vec::new();
    if let Some(note) = planner::no_gpu_notice(opts.gpu_layers, &devices) {
        notes.push(note);
    } else if !devices.list.is_empty() {
        notes.push(plan.to_string());
    }
    let model = Model::build(
        file.clone(),
        config,
        opts.threads,
        ggml::cpu::isa(),
        &layout(&plan),
    )?;
    Ok(Loaded {
        file,
        model,
        n_ctx,
        plan,
        notes,
    })
}

/// The model's layout from the plan.
pub fn layout(plan: &Plan) -> Layout {
    let device = |p: &Placement| match *p {
        Placement::Cpu => Device::Cpu,
        Placement::Gpu(i) => Device::Gpu(i),
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
