//! The offload planner: which device runs each layer, and what that costs
//! each device. Pure arithmetic over the model's footprint and a list of
//! devices, so one GPU, several, hypothetical cards (`llm info --plan
//! --gpu-mem`) and none at all go through the same code.
//!
//! `--n-gpu-layers N` means what it means in llama.cpp (`load_tensors` in
//! its llama-model.cpp): of the n_layer + 1 slots (the repeating layers, then
//! the output layer), the last N go to the GPUs, so N = 1 offloads only the
//! output layer and N >= n_layer + 1 everything. The token embedding stays on
//! the CPU; each layer's KV cache lives with the layer. A layer split gives
//! each GPU a contiguous range in proportion to the split, the output layer
//! going with the last range.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::model::footprint::Footprint;

/// Kept free on every real device beyond what we count. Our count covers
/// weights, KV cache and scratch exactly; what it cannot see is the
/// driver's share of the card. Measured on an H200 (driver 580, CUDA 13,
/// `cudaMemGetInfo` around each step): the CUDA context takes 527 MiB, a
/// cuBLAS handle 66 MiB more, and every allocation is rounded up to 2 MiB.
/// That is about 600 MiB before our first buffer; the rest of 1 GiB covers
/// the rounding of a few hundred buffers and memory other programs take
/// after we look. llama.cpp's `--fit` keeps the same 1 GiB a device.
/// Hypothetical cards (`--gpu-mem`) are given as usable memory, after it.
pub const MARGIN_BYTES: u64 = 1 << 30;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuLayers {
    /// Fit as many layers as free GPU memory allows (llama.cpp's default).
    Auto,
    /// Every layer (`all`, or any count at least the model's layers + 1).
    All,
    Count(u32),
}

impl FromStr for GpuLayers {
    type Err = String;

    fn from_str(s: &str) -> Result<GpuLayers, String> {
        match s {
            "auto" | "-1" => Ok(GpuLayers::Auto),
            "all" => Ok(GpuLayers::All),
            _ => s
                .parse::<u32>()
                .map(GpuLayers::Count)
                .map_err(|_| format!("'{s}' is not a layer count: give a number, 'auto' or 'all'")),
        }
    }
}

impl fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuLayers::Auto => f.write_str("auto"),
            GpuLayers::All => f.write_str("all"),
            GpuLayers::Count(n) => write!(f, "{n}"),
        }
    }
}

/// `--split-mode`: how several GPUs share the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// Everything offloaded goes to `--main-gpu`.
    None,
    /// Contiguous ranges of whole layers, with their KV cache.
    #[default]
    Layer,
}

impl FromStr for SplitMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SplitMode, String> {
        match s {
            "none" => Ok(SplitMode::None),
            "layer" => Ok(SplitMode::Layer),
            "row" => Err("split mode 'row' (weight rows across GPUs) is not supported: use 'layer' or 'none'".into()),
            _ => Err(format!("'{s}' is not a split mode: give 'none' or 'layer'")),
        }
    }
}

/// `--tensor-split 3,1` (llama.cpp also takes `3/1`): each GPU's share.
pub fn parse_tensor_split(s: &str) -> Result<Vec<f32>, String> {
    s.split([',', '/'])
        .map(|p| match p.trim().parse::<f32>() {
            Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
            _ => Err(format!(
                "'{p}' in tensor split '{s}' is not a proportion: give numbers like 3,1"
            )),
        })
        .collect()
}

/// A memory size: bytes, or a number with KiB/MiB/GiB (powers of 1024),
/// KB/MB/GB (powers of 1000) or B; `24GiB`, `0.5 GiB`, `512mb`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_bytes: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => MIB,
        "g" | "gib" => MIB * 1024.0,
        "t" | "tib" => MIB * MIB,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}' (give GiB, MiB, GB, MB or bytes)"
            ))
        }
    };
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok((n * unit_bytes).round() as u64),
        _ => Err(format!(
            "'{s}' is not a memory size: give e.g. 24GiB or 512MiB"
        )),
    }
}

/// A GPU as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Device {
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// The GPUs to plan for, or why there are none.
#[derive(Clone, Debug)]
pub struct Devices {
    pub list: Vec<Device>,
    /// The driver's ordinal of each device in `list` (GPUs too old for our
    /// kernels are left out of the list).
    pub ordinals: Vec<usize>,
    /// Memory kept free on each beyond the plan (MARGIN_BYTES on real cards).
    pub margin_bytes: u64,
    /// Said when the list is empty.
    pub why_none: String,
}

impl Devices {
    /// The GPUs of this machine that a backend of this build can drive:
    /// Metal's in an Apple build, CUDA's elsewhere.
    pub fn present() -> Devices {
        if cfg!(target_vendor = "apple") {
            return Devices::metal(&ggml::metal::devices());
        }
        let all = ggml::cuda::devices();
        // Our kernels carry code for Turing (compute 7.5) and newer, built
        // for drivers from 580 on; a GPU they cannot run on is left out.
        let (usable, unusable): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|d| d.problem.is_none());
        let why_none = match ggml::cuda::driver::driver() {
            Err(e) => e.0,
            Ok(()) => match unusable.first() {
                Some(d) => format!("{}: {}", d.name, d.problem.as_deref().unwrap_or("unusable")),
                None => "the NVIDIA driver found no GPU".into(),
            },
        };
        Devices {
            ordinals: usable.iter().map(|d| d.ordinal).collect(),
            list: usable
                .into_iter()
                .map(|d| Device {
                    name: format!("CUDA{} ({})", d.ordinal, d.name),
                    total_bytes: d.total as u64,
                    free_bytes: d.free as u64,
                })
                .collect(),
            margin_bytes: MARGIN_BYTES,
            why_none,
        }
    }

    /// Metal devices. A Mac's GPU shares the host's memory, so its budget is
    /// what Metal recommends a process keep resident (about three quarters
    /// of the RAM on Apple silicon) less what this process already holds
    /// there; `-ngl` keeps its meaning.
    pub fn metal(metal: &[ggml::metal::MetalDeviceInfo]) -> Devices {
        Devices {
            ordinals: metal.iter().map(|d| d.index).collect(),
            list: metal
                .iter()
                .map(|d| Device {
                    name: format!("Metal{} ({})", d.index, d.name),
                    total_bytes: d.working_set,
                    free_bytes: d.working_set.saturating_sub(d.allocated),
                })
                .collect(),
            margin_bytes: MARGIN_BYTES,
            why_none: "Metal found no GPU".into(),
        }
    }

    /// Cards of the given usable sizes (already after any margin).
    pub fn hypothetical(sizes: &[u64]) -> Devices {
        Devices {
            ordinals: (0..sizes.len()).collect(),
            list: sizes
                .iter()
                .enumerate()
                .map(|(i, &bytes)| Device {
                    name: format!("hypothetical GPU {i}"),
                    total_bytes: bytes,
                    free_bytes: bytes,
                })
                .collect(),
            margin_bytes: 0,
            why_none: "no GPU found".into(),
        }
    }
}

/// The one line said when the user asked for GPU layers and there is no GPU
/// to put them on: the run goes on, on the CPU. None when nothing was asked.
pub fn no_gpu_notice(requested: Option<GpuLayers>, devices: &Devices) -> Option<String> {
    match requested {
        None | Some(GpuLayers::Count(0)) => None,
        Some(_) if !devices.list.is_empty() => None,
        Some(n) => Some(format!(
            "llm: --n-gpu-layers {n}: {}; running every layer on the CPU",
            devices.why_none
        )),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub gpu_layers: GpuLayers,
    pub split_mode: SplitMode,
    /// Each GPU's share; None (or all zero): in proportion to free memory.
    pub tensor_split: Option<Vec<f32>>,
    /// The one GPU of `-sm none`.
    pub main_gpu: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            gpu_layers: GpuLayers::Auto,
            split_mode: SplitMode::Layer,
            tensor_split: None,
            main_gpu: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    Cpu,
    /// An index into the device list.
    Gpu(usize),
}

/// What one device holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// First and last repeating layer (a contiguous range).
    pub layers: Option<(usize, usize)>,
    pub output: bool,
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    pub scratch_bytes: u64,
}

impl Usage {
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes + self.kv_bytes + self.scratch_bytes
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DevicePlan {
    pub index: usize,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Free less the margin: what the plan may fill.
    pub usable_bytes: u64,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuPlan {
    /// The input layer, always here.
    pub token_embd_bytes: u64,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub n_ctx: usize,
    pub n_layer: usize,
    /// What was asked (`auto`, `all` or a count) ...
    pub requested: String,
    /// ... and the slots offloaded, 0..=n_layer + 1.
    pub gpu_layers: usize,
    pub split_mode: SplitMode,
    pub layers: Vec<Placement>,
    pub output: Placement,
    pub devices: Vec<DevicePlan>,
    pub cpu: CpuPlan,
    /// Why everything is on the CPU, when it is for want of a GPU.
    pub note: Option<String>,
}

/// Plans `fp` over `devices`. Errors (one line each) for a main GPU that is
/// not there, a tensor split longer than the device list, and an explicit
/// layer count that does not fit.
pub fn plan(fp: &Footprint, devices: &Devices, opts: &Options) -> Result<Plan, String> {
    let n_layer = fp.layers.len();
    let slots = n_layer + 1;
    // The devices layers may go to, as indices into the full list.
    let chosen: Vec<usize> = match opts.split_mode {
        _ if devices.list.is_empty() => Vec::new(),
        SplitMode::None if opts.main_gpu >= devices.list.len() => {
            return Err(format!(
                "--main-gpu {}: there {} only {} GPU{} (0..{})",
                opts.main_gpu,
                if devices.list.len() == 1 { "is" } else { "are" },
                devices.list.len(),
                if devices.list.len() == 1 { "" } else { "s" },
                devices.list.len() - 1
            ))
        }
        SplitMode::None => vec![opts.main_gpu],
        SplitMode::Layer => (0..devices.list.len()).collect(),
    };
    let usable: Vec<u64> = chosen
        .iter()
        .map(|&d| {
            devices.list[d]
                .free_bytes
                .saturating_sub(devices.margin_bytes)
        })
        .collect();
    let given = match &opts.tensor_split {
        Some(ts) if ts.len() > devices.list.len() => {
            return Err(format!(
                "--tensor-split gives {} shares for {} GPU{}",
                ts.len(),
                devices.list.len(),
                if devices.list.len() == 1 { "" } else { "s" }
            ))
        }
        Some(ts) if ts.iter().any(|&v| v > 0.0) && opts.split_mode == SplitMode::Layer => Some(
            (0..chosen.len())
                .map(|i| ts.get(i).copied().unwrap_or(0.0))
                .collect(),
        ),
        _ => None,
    };
    let by_free: Vec<f32> = chosen
        .iter()
        .map(|&d| devices.list[d].free_bytes as f32)
        .collect();
    let ctx = Ctx {
        fp,
        usable: &usable,
    };
    let (n, shares) = match opts.gpu_layers {
        _ if chosen.is_empty() => (0, Vec::new()),
        GpuLayers::All => (slots, given.unwrap_or(by_free)),
        GpuLayers::Count(n) => (slots.min(n as usize), given.unwrap_or(by_free)),
        GpuLayers::Auto => match given {
            Some(shares) => (ctx.largest_fit(slots, &shares), shares),
            None => ctx.greedy(),
        },
    };
    let assign = assign(n_layer, n, &cumulative(&shares));
    let uses: Vec<Usage> = (0..chosen.len())
        .map(|d| ctx.usage(&assign, Some(d)))
        .collect();
    if let Some(d) = (0..chosen.len()).find(|&d| uses[d].total_bytes() > usable[d]) {
        let dev = &devices.list[chosen[d]];
        let u = &uses[d];
        let margin = if devices.margin_bytes > 0 {
            format!(" (free less a {:.0} MiB margin)", mib(devices.margin_bytes))
        } else {
            String::new()
        };
        return Err(format!(
            "-ngl {}: GPU{} ({}) needs {:.1} MiB ({:.1} weights, {:.1} KV, {:.1} scratch) but has {:.1} MiB{margin}; -ngl {} fits",
            opts.gpu_layers,
            chosen[d],
            dev.name,
            mib(u.total_bytes()),
            mib(u.weights_bytes),
            mib(u.kv_bytes),
            mib(u.scratch_bytes),
            mib(usable[d]),
            ctx.largest_fit(n, &shares)
        ));
    }
    let place = |slot: &Option<usize>| slot.map_or(Placement::Cpu, |d| Placement::Gpu(chosen[d]));
    let mut cpu = ctx.usage(&assign, None);
    if cpu.layers.is_none() && !cpu.output {
        // The CPU still embeds the batch's tokens.
        cpu.scratch_bytes = fp.scratch.input;
    }
    Ok(Plan {
        n_ctx: fp.n_ctx,
        n_layer,
        requested: opts.gpu_layers.to_string(),
        gpu_layers: n,
        split_mode: opts.split_mode,
        layers: assign[..n_layer].iter().map(place).collect(),
        output: place(&assign[n_layer]),
        devices: chosen
            .iter()
            .zip(uses)
            .zip(&usable)
            .map(|((&d, usage), &usable_bytes)| DevicePlan {
                index: d,
                name: devices.list[d].name.clone(),
                total_bytes: devices.list[d].total_bytes,
                free_bytes: devices.list[d].free_bytes,
                usable_bytes,
                usage,
            })
            .collect(),
        cpu: CpuPlan {
            token_embd_bytes: fp.token_embd,
            usage: cpu,
        },
        note: devices
            .list
            .is_empty()
            .then(|| format!("{}: every layer runs on the CPU", devices.why_none)),
    })
}

/// Cumulative shares normalised to end at 1, as llama.cpp computes its
/// split points (in f32, so layer boundaries land where its do).
fn cumulative(shares: &[f32]) -> Vec<f32> {
    let mut sum = 0.0f32;
    let mut cum: Vec<f32> = shares
        .iter()
        .map(|&s| {
            sum += s;
            sum
        })
        .collect();
    cum.iter_mut().for_each(|c| *c /= sum);
    cum
}

/// Slot (layer 0..n_layer, then the output) -> device (an index into the
/// chosen devices) or the CPU, for `n` offloaded slots: llama.cpp's
/// `i_gpu_start = max(n_layer + 1 - n, 0)` and its upper bound over the
/// split points.
fn assign(n_layer: usize, n: usize, cum: &[f32]) -> Vec<Option<usize>> {
    let start = (n_layer + 1).saturating_sub(n);
    (0..=n_layer)
        .map(|il| {
            if cum.is_empty() || il < start || il - start >= n {
                return None;
            }
            let x = (il - start) as f32 / n as f32;
            Some(cum.partition_point(|&c| c <= x).min(cum.len() - 1))
        })
        .collect()
}

struct Ctx<'a> {
    fp: &'a Footprint,
    usable: &'a [u64],
}

impl Ctx<'_> {
    /// What the slots assigned to `dev` (None: the CPU) cost.
    fn usage(&self, assign: &[Option<usize>], dev: Option<usize>) -> Usage {
        let fp = self.fp;
        let n_layer = fp.layers.len();
        let mine: Vec<usize> = (0..n_layer).filter(|&il| assign[il] == dev).collect();
        let output = assign[n_layer] == dev;
        let mut u = Usage {
            layers: mine.first().zip(mine.last()).map(|(&a, &b)| (a, b)),
            output,
            ..Usage::default()
        };
        for &il in &mine {
            u.weights_bytes += fp.layers[il].weights;
            u.kv_bytes += fp.layers[il].kv;
        }
        if !mine.is_empty() {
            u.weights_bytes += fp.shared;
        }
        if output {
            // On the CPU a tied output reads the embedding where it is.
            u.weights_bytes += match dev {
                None if fp.output_tied => fp.output - fp.token_embd,
                _ => fp.output,
            };
        }
        if !mine.is_empty() || output {
            let cells = mine.iter().map(|&il| fp.layers[il].kv_cells).max();
            u.scratch_bytes = fp.scratch.bytes(cells.unwrap_or(0), output);
        }
        u
    }

    fn fits(&self, assign: &[Option<usize>]) -> bool {
        (0..self.usable.len()).all(|d| self.usage(assign, Some(d)).total_bytes() <= self.usable[d])
    }

    /// The most slots, at most `max`, that fit with these shares.
    fn largest_fit(&self, max: usize, shares: &[f32]) -> usize {
        let cum = cumulative(shares);
        let n_layer = self.fp.layers.len();
        (0..=max)
            .rev()
            .find(|&n| self.fits(&assign(n_layer, n, &cum)))
            .unwrap_or(0)
    }

    /// `auto` without a tensor split: fill the last device from the top
    /// slot (the output) down, then the one before it, and so on; the
    /// counts become the split, so the ranges are llama.cpp's for them.
    fn greedy(&self) -> (usize, Vec<f32>) {
        let n_layer = self.fp.layers.len();
        let mut counts = vec![0usize; self.usable.len()];
        let mut next = n_layer + 1; // slots at and above `next` are taken
        for d in (0..self.usable.len()).rev() {
            let mut assign = vec![None; n_layer + 1];
            while next > 0 {
                assign[next - 1] = Some(d);
                if self.usage(&assign, Some(d)).total_bytes() > self.usable[d] {
                    break;
                }
                next -= 1;
                counts[d] += 1;
            }
        }
        let n = counts.iter().sum();
        (n, counts.iter().map(|&c| c as f32).collect())
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn describe(u: &Usage) -> String {
    let mut parts = Vec::new();
    if let Some((a, b)) = u.layers {
        parts.push(if a == b {
            format!("layer {a}")
        } else {
            format!("layers {a}-{b}")
        });
    }
    if u.output {
        parts.push("output".to_string());
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(" + ")
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "offload plan at context {}: -ngl {} puts {} of {} layers on the GPU{} (n_layer {} + output)",
            self.n_ctx,
            self.requested,
            self.gpu_layers,
            self.n_layer + 1,
            if self.devices.len() > 1 { "s" } else { "" },
            self.n_layer
        )?;
        if let Some(note) = &self.note {
            writeln!(f, "  {note}")?;
        }
        for d in &self.devices {
            let u = &d.usage;
            writeln!(
                f,
                "  GPU{} ({}): {}: {:.1} MiB weights, {:.1} MiB KV, {:.1} MiB scratch = {:.1} of {:.1} MiB usable",
                d.index,
                d.name,
                describe(u),
                mib(u.weights_bytes),
                mib(u.kv_bytes),
                mib(u.scratch_bytes),
                mib(u.total_bytes()),
                mib(d.usable_bytes)
            )?;
        }
        let u = &self.cpu.usage;
        let embd = mib(self.cpu.token_embd_bytes);
        if u.layers.is_none() && !u.output {
            return writeln!(
                f,
                "  CPU: token embedding only: {embd:.1} MiB, {:.1} MiB scratch",
                mib(u.scratch_bytes)
            );
        }
        writeln!(
            f,
            "  CPU: token embedding + {}: {:.1} MiB weights (embedding {embd:.1}), {:.1} MiB KV, {:.1} MiB scratch",
            describe(u),
            mib(u.weights_bytes + self.cpu.token_embd_bytes),
            mib(u.kv_bytes),
            mib(u.scratch_bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::footprint::{LayerBytes, ScratchModel};

    const M: u64 = 1 << 20;

    /// Four layers of 100 MiB weights and 10 MiB KV; a tied output of
    /// 41 MiB (40 of them the embedding); 6 MiB scratch (+1 with logits).
    fn model() -> Footprint {
        Footprint {
            n_ctx: 1000,
            layers: vec![
                LayerBytes {
                    weights: 100 * M,
                    kv: 10 * M,
                    kv_cells: 1000,
                };
                4
            ],
            token_embd: 40 * M,
            output: 41 * M,
            output_tied: true,
            shared: 0,
            scratch: ScratchModel {
                input: M / 2,
                activations: 5 * M,
                attention_per_cell: M / 1000,
                attention_fixed: M - (M / 1000) * 1000,
                logits: M,
            },
        }
    }

    fn gpus(mib: &[u64]) -> Devices {
        Devices::hypothetical(&mib.iter().map(|m| m * M).collect::<Vec<_>>())
    }

    fn opts(ngl: &str) -> Options {
        Options {
            gpu_layers: ngl.parse().unwrap(),
            ..Options::default()
        }
    }

    fn on_gpu(p: &Plan) -> (Vec<bool>, bool) {
        (
            p.layers.iter().map(|&l| l != Placement::Cpu).collect(),
            p.output != Placement::Cpu,
        )
    }

    #[test]
    fn parses_as_llama_cpp_does() {
        assert_eq!("auto".parse(), Ok(GpuLayers::Auto));
        assert_eq!("-1".parse(), Ok(GpuLayers::Auto));
        assert_eq!("all".parse(), Ok(GpuLayers::All));
        assert_eq!("100".parse(), Ok(GpuLayers::Count(100)));
        assert!("lots".parse::<GpuLayers>().is_err());
        assert_eq!("none".parse(), Ok(SplitMode::None));
        assert_eq!("layer".parse(), Ok(SplitMode::Layer));
        let row = "row".parse::<SplitMode>().unwrap_err();
        assert!(row.contains("'row'") && !row.contains('\n'), "{row}");
        assert_eq!(parse_tensor_split("3,1"), Ok(vec![3.0, 1.0]));
        assert_eq!(parse_tensor_split("3/1"), Ok(vec![3.0, 1.0]));
        assert!(parse_tensor_split("3,-1").is_err());
        assert_eq!(parse_bytes("24GiB"), Ok(24 << 30));
        assert_eq!(parse_bytes("0.5 GiB"), Ok(1 << 29));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("300mb"), Ok(300_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("24 parsecs").is_err());
        assert!(parse_bytes("GiB").is_err());
    }

    /// The output slot counts first, then layers from the last down.
    #[test]
    fn ngl_arithmetic_is_llama_cpp_s() {
        let fp = model();
        let big = gpus(&[100_000]);
        let cases: [(&str, usize, [bool; 4], bool); 6] = [
            ("0", 0, [false; 4], false),
            ("1", 1, [false; 4], true),
            ("4", 4, [false, true, true, true], true),
            ("5", 5, [true; 4], true),
            ("100", 5, [true; 4], true),
            ("all", 5, [true; 4], true),
        ];
        for (ngl, n, layers, output) in cases {
            let p = plan(&fp, &big, &opts(ngl)).unwrap();
            assert_eq!(p.gpu_layers, n, "-ngl {ngl}");
            assert_eq!(on_gpu(&p), (layers.to_vec(), output), "-ngl {ngl}");
            assert!(p.note.is_none());
        }
        // Weights, KV and scratch of -ngl 4: layers 1-3 and the tied output
        // (its embedding copied), scratch with logits.
        let p = plan(&fp, &big, &opts("4")).unwrap();
        let u = &p.devices[0].usage;
        assert_eq!(u.layers, Some((1, 3)));
        assert_eq!(u.weights_bytes, (300 + 41) * M);
        assert_eq!(u.kv_bytes, 30 * M);
        assert_eq!(u.scratch_bytes, 7 * M);
        let c = &p.cpu.usage;
        assert_eq!(c.layers, Some((0, 0)));
        assert_eq!(
            (c.weights_bytes, c.kv_bytes, c.scratch_bytes),
            (100 * M, 10 * M, 6 * M)
        );
        // All on the GPU: the CPU keeps the embedding and its input rows.
        let p = plan(&fp, &big, &opts("all")).unwrap();
        assert_eq!(
            p.cpu.usage,
            Usage {
                scratch_bytes: M / 2,
                ..Usage::default()
            }
        );
        assert_eq!(p.cpu.token_embd_bytes, 40 * M);
    }

    #[test]
    fn auto_fits_what_the_card_holds() {
        let fp = model();
        // Everything: 400 + 41 weights, 40 KV, 7 scratch = 488 MiB.
        let all = plan(&fp, &gpus(&[488]), &opts("auto")).unwrap();
        assert_eq!(all.gpu_layers, 5);
        assert_eq!(all.devices[0].usage.total_bytes(), 488 * M);
        // One MiB short: the first layer stays on the CPU.
        let most = plan(&fp, &gpus(&[487]), &opts("auto")).unwrap();
        assert_eq!(on_gpu(&most), (vec![false, true, true, true], true));
        // About half.
        let half = plan(&fp, &gpus(&[270]), &opts("auto")).unwrap();
        assert_eq!(on_gpu(&half), (vec![false, false, true, true], true));
        // Not even the output layer (41 + 6 scratch = 47 > 42).
        let none = plan(&fp, &gpus(&[42]), &opts("auto")).unwrap();
        assert_eq!(none.gpu_layers, 0);
        assert_eq!(none.devices[0].usage, Usage::default());
        assert!(none.cpu.usage.output && none.cpu.usage.layers == Some((0, 3)));
        // A tied output on the CPU reads the embedding in place.
        assert_eq!(none.cpu.usage.weights_bytes, 401 * M);
        // The margin comes off real cards' free memory.
        let mut real = gpus(&[488 + 1024]);
        real.margin_bytes = MARGIN_BYTES;
        assert_eq!(plan(&fp, &real, &opts("auto")).unwrap().gpu_layers, 5);
        real.list[0].free_bytes -= 1;
        assert_eq!(plan(&fp, &real, &opts("auto")).unwrap().gpu_layers, 4);
    }

    /// A Mac's budget is Metal's recommended working set less what the
    /// process holds, less the margin; `auto` fits to it as to a card.
    #[test]
    fn metal_budgets_the_recommended_working_set() {
        let fp = model();
        let mac = |working_set: u64, allocated: u64| {
            Devices::metal(&[ggml::metal::MetalDeviceInfo {
                index: 0,
                name: "Apple M2".into(),
                working_set,
                allocated,
                unified: true,
            }])
        };
        let d = mac((488 + 1024 + 100) * M, 100 * M);
        assert_eq!(d.list[0].name, "Metal0 (Apple M2)");
        assert_eq!(d.list[0].free_bytes, (488 + 1024) * M);
        assert_eq!(plan(&fp, &d, &opts("auto")).unwrap().gpu_layers, 5);
        let d = mac((488 + 1024 + 100) * M, 101 * M);
        assert_eq!(plan(&fp, &d, &opts("auto")).unwrap().gpu_layers, 4);
        // Holding more than the working set leaves nothing, not an underflow.
        assert_eq!(mac(M, 2 * M).list[0].free_bytes, 0);
    }

    #[test]
    fn two_gpus_split_by_free_memory_or_tensor_split() {
        let fp = model();
        let two = gpus(&[1000, 1000]);
        // Equal shares: slots 0-2 of 5 on GPU0, layer 3 and the output on GPU1.
        let p = plan(&fp, &two, &opts("all")).unwrap();
        assert_eq!(
            p.layers,
            [
                Placement::Gpu(0),
                Placement::Gpu(0),
                Placement::Gpu(0),
                Placement::Gpu(1)
            ]
        );
        assert_eq!(p.output, Placement::Gpu(1));
        assert_eq!(p.devices[0].usage.layers, Some((0, 2)));
        assert_eq!(p.devices[1].usage.layers, Some((3, 3)));
        assert!(p.devices[1].usage.output && !p.devices[0].usage.output);
        // -ts 3,1: four slots on GPU0, the output alone on GPU1.
        let ts = Options {
            tensor_split: Some(vec![3.0, 1.0]),
            ..opts("all")
        };
        let p = plan(&fp, &two, &ts).unwrap();
        assert_eq!(p.devices[0].usage.layers, Some((0, 3)));
        assert_eq!(p.devices[1].usage.layers, None);
        assert_eq!(p.output, Placement::Gpu(1));
        // Default shares follow free memory: 1:3.
        let p = plan(&fp, &gpus(&[1000, 3000]), &opts("all")).unwrap();
        assert_eq!(p.devices[0].usage.layers, Some((0, 1)));
        assert_eq!(p.devices[1].usage.layers, Some((2, 3)));
        // auto over two small cards: the last takes the output and what
        // fits from the top, the first goes on below it.
        let p = plan(&fp, &gpus(&[230, 160]), &opts("auto")).unwrap();
        assert_eq!(p.devices[1].usage.layers, Some((3, 3)));
        assert!(p.devices[1].usage.output);
        assert_eq!(p.devices[0].usage.layers, Some((1, 2)));
        assert_eq!(p.layers[0], Placement::Cpu);
        // auto with a tensor split keeps it: 1:1 over 230 + 230 MiB fits
        // 4 slots (2 and 2), where 5 would put 3 layers on GPU0.
        let ts = Options {
            tensor_split: Some(vec![1.0, 1.0]),
            ..opts("auto")
        };
        let p = plan(&fp, &gpus(&[230, 230]), &ts).unwrap();
        assert_eq!(p.gpu_layers, 4);
        assert_eq!(p.devices[0].usage.layers, Some((1, 2)));
        assert_eq!(p.devices[1].usage.layers, Some((3, 3)));
        let long = Options {
            tensor_split: Some(vec![1.0, 1.0, 1.0]),
            ..opts("auto")
        };
        assert!(plan(&fp, &two, &long)
            .unwrap_err()
            .contains("3 shares for 2 GPUs"));
    }

    #[test]
    fn split_mode_none_uses_the_main_gpu() {
        let fp = model();
        let none = Options {
            split_mode: SplitMode::None,
            main_gpu: 1,
            tensor_split: Some(vec![1.0, 1.0]),
            ..opts("all")
        };
        let p = plan(&fp, &gpus(&[1000, 1000]), &none).unwrap();
        assert!(p.layers.iter().all(|&l| l == Placement::Gpu(1)));
        assert_eq!(p.output, Placement::Gpu(1));
        assert_eq!(p.devices.len(), 1);
        assert_eq!(p.devices[0].index, 1);
        let err = plan(&fp, &gpus(&[1000]), &none).unwrap_err();
        assert_eq!(err, "--main-gpu 1: there is only 1 GPU (0..0)");
    }

    #[test]
    fn an_n_too_large_is_an_error_naming_what_fits() {
        let fp = model();
        let err = plan(&fp, &gpus(&[270]), &opts("5")).unwrap_err();
        assert_eq!(
            err,
            "-ngl 5: GPU0 (hypothetical GPU 0) needs 488.0 MiB (441.0 weights, 40.0 KV, 7.0 scratch) \
             but has 270.0 MiB; -ngl 3 fits"
        );
        let mut real = gpus(&[1024 + 42]);
        real.margin_bytes = MARGIN_BYTES;
        let err = plan(&fp, &real, &opts("all")).unwrap_err();
        assert!(
            err.contains("but has 42.0 MiB (free less a 1024 MiB margin); -ngl 0 fits"),
            "{err}"
        );
        assert!(plan(&fp, &real, &opts("0")).is_ok());
    }

    #[test]
    fn no_gpu_runs_on_the_cpu_with_one_note() {
        let fp = model();
        let present = Devices::present();
        if !present.list.is_empty() {
            eprintln!("skipped: this machine has a GPU");
            return;
        }
        let why = present.why_none.clone();
        let p = plan(&fp, &present, &opts("all")).unwrap();
        assert_eq!(p.gpu_layers, 0);
        assert!(p.layers.iter().all(|&l| l == Placement::Cpu));
        let note = p.note.as_deref().unwrap();
        assert!(note.contains(&why), "{note}");
        let text = p.to_string();
        assert_eq!(text.matches(&why).count(), 1, "{text}");
        assert!(
            text.contains("CPU: token embedding + layers 0-3 + output"),
            "{text}"
        );
        let none = Devices::hypothetical(&[]);
        assert!(plan(&fp, &none, &opts("auto"))
            .unwrap()
            .note
            .unwrap()
            .contains("no GPU found"));
        assert!(no_gpu_notice(Some(GpuLayers::Count(0)), &Devices::present()).is_none());
        assert!(no_gpu_notice(None, &Devices::present()).is_none());
        assert!(
            no_gpu_notice(Some(GpuLayers::Count(100)), &Devices::present())
                .unwrap()
                .contains("no NVIDIA driver")
        );
        assert!(no_gpu_notice(Some(GpuLayers::All), &gpus(&[10])).is_none());
    }
}
