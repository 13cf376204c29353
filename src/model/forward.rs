//! The forward pass: one code path for every architecture, a straight line of
//! backend ops over a batch of tokens, reading like the math. It names no
//! device: each range of layers runs on the backend the plan gave it, and the
//! hidden state crosses to the host only between ranges.

use std::any::Any;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use ggml::backend::{Attention, Backend, Glu, HostMat};
use ggml::cpu::backend::CpuBackend;
use ggml::cpu::Isa;
use ggml::cuda::CudaBackend;

use crate::format::gguf::GgufFile;
use crate::format::TensorSource;
use crate::model::arch::Activation;
use crate::model::config::Config;
use crate::model::footprint::kv_cells;
use crate::model::weights::{self, Layer, Weights};

mod streamed;
use streamed::StreamedRange;

/// Most tokens processed in one batch; longer prompts go in several.
pub const MAX_BATCH: usize = 512;

/// Rows of logits a device computes at a time: a batch that wants every
/// token's logits gets them in pieces, so a device never holds MAX_BATCH
/// rows of a 128k vocabulary.
pub const LOGIT_ROWS: usize = 8;

/// The fewest token embeddings a thread of `embed` takes (fewer are not
/// worth a thread's start).
const EMBED_ROWS_A_THREAD: usize = 32;

pub struct Model {
    pub config: Config,
    /// The weights as stored (host memory, usually the file mapping).
    pub weights: Weights,
    cpu: Arc<CpuBackend>,
    /// Layer ranges in order, each on its device; the last one computes logits.
    stages: Vec<Box<dyn Stage>>,
}

/// How the KV cache of each layer is laid out, for rewinding.
pub struct KvCache {
    pub n_ctx: usize,
    layers: Vec<KvLayer>,
}

struct KvLayer {
    cells: usize,
    window: Option<usize>,
}

/// A debugging hook: (name as in llama.cpp's graph, layer, values).
pub type Trace = Box<dyn FnMut(&str, usize, &[f32]) + Send>;

/// A sequence being decoded: its caches and how far it has got.
pub struct State {
    pub kv: KvCache,
    pub n_past: usize,
    /// The hidden state on the host, between layer ranges.
    hidden: Vec<f32>,
    /// One per stage: its KV caches and working buffers, on its device.
    caches: Vec<Box<dyn Any + Send>>,
    /// Logits of the last token of the last batch (or of every token, when asked).
    pub logits: Vec<f32>,
    /// Called with (name, layer, values) at points named as in llama.cpp's
    /// graph, to find where two implementations part. None in normal runs.
    pub trace: Option<Trace>,
}

impl State {
    /// Frees the caches on every device; the state is unusable until replaced.
    pub fn release(&mut self) {
        self.caches.clear();
        self.n_past = self.kv.n_ctx;
    }

    /// Forgets the tokens from position `n` on, so decoding goes on from
    /// there (a chat turn that shares a prefix with the last one). False, and
    /// nothing changed, when a sliding-window ring has already overwritten
    /// cells that position `n` still attends to: start from 0 then.
    ///
    /// Cells of forgotten positions stay as they are: attention reads a cell
    /// as the latest position at or before the current one that maps to it,
    /// which for a stale cell is at least a window (or the context) back, so
    /// it is masked.
    pub fn rewind(&mut self, n: usize) -> bool {
        if n >= self.n_past {
            return n == self.n_past;
        }
        let dropped = self.n_past - n;
        let ok = self.kv.layers.iter().all(|l| match l.window {
            Some(w) if l.cells < self.kv.n_ctx => dropped + w <= l.cells,
            _ => true,
        });
        if ok {
            self.n_past = n;
        }
        ok
    }
}

/// A GPU of the layout, opened once: CUDA, or Metal in an Apple build
/// (where there is no CUDA).
#[derive(Clone)]
enum Gpu {
    #[cfg_attr(target_vendor = "apple", allow(dead_code))]
    Cuda(Arc<CudaBackend>),
    #[cfg(target_vendor = "apple")]
    Metal(Arc<ggml::metal::MetalBackend>),
}

impl Gpu {
    fn cuda(&self) -> Option<Arc<CudaBackend>> {
        match self {
            Gpu::Cuda(c) => Some(c.clone()),
            #[cfg(target_vendor = "apple")]
            Gpu::Metal(_) => None,
        }
    }

    fn open(index: usize) -> Result<Gpu> {
        #[cfg(target_vendor = "apple")]
        {
            Ok(Gpu::Metal(Arc::new(ggml::metal::MetalBackend::new(index)?)))
        }
        #[cfg(not(target_vendor = "apple"))]
        {
            Ok(Gpu::Cuda(Arc::new(CudaBackend::new(index)?)))
        }
    }
}

/// A device a part of the model runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A GPU, by its driver ordinal (the CUDA device number; in an Apple
    /// build, the Metal device's index).
    Gpu(usize),
}

/// Where each part of the model runs: contiguous layer ranges in order,
/// covering every layer, and the output head's device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub ranges: Vec<(Device, Range<usize>)>,
    pub output: Device,
}

impl Layout {
    /// Everything on the CPU.
    pub fn cpu(n_layer: usize) -> Layout {
        Layout {
            ranges: vec![(Device::Cpu, 0..n_layer)],
            output: Device::Cpu,
        }
    }

    /// From each layer's device: runs of equal devices become ranges.
    pub fn from_layers(layers: &[Device], output: Device) -> Layout {
        let mut ranges: Vec<(Device, Range<usize>)> = Vec::new();
        for (il, &d) in layers.iter().enumerate() {
            match ranges.last_mut() {
                Some((last, r)) if *last == d => r.end = il + 1,
                _ => ranges.push((d, il..il + 1)),
            }
        }
        Layout { ranges, output }
    }
}

impl Model {
    pub fn load(path: &Path, threads: usize) -> Result<Model> {
        Model::load_with_isa(path, threads, ggml::cpu::isa())
    }

    /// Loads with the kernels of one instruction set (tests run each one).
    pub fn load_with_isa(path: &Path, threads: usize, isa: Isa) -> Result<Model> {
        let file = Arc::new(GgufFile::open(path)?);
        let config = Config::from_gguf(&file)?;
        let layout = Layout::cpu(config.n_layer);
        Model::build(file, config, threads, isa, &layout)
    }

    /// Loads onto the CPU with a KV cache of `kv` types (-ctk/-ctv).
    pub fn load_with_cache(
        path: &Path,
        threads: usize,
        kv: ggml::backend::KvTypes,
    ) -> Result<Model> {
        let file = Arc::new(GgufFile::open(path)?);
        let mut config = Config::from_gguf(&file)?;
        kv.check_head_dim(config.shape.head_dim)
            .map_err(anyhow::Error::msg)?;
        config.kv_types = kv;
        let layout = Layout::cpu(config.n_layer);
        Model::build(file, config, threads, ggml::cpu::isa(), &layout)
    }

    /// Builds each layer range's buffers on its device, from a file opened
    /// and a configuration read once.
    pub fn build<S: TensorSource>(
        file: Arc<S>,
        config: Config,
        threads: usize,
        isa: Isa,
        layout: &Layout,
    ) -> Result<Model> {
        let weights = weights::load(file.clone(), &config.arch, config.n_layer, &config.shape)?;
        // The GPUs first: the CPU hands its large prompt batches to the first
        // (a CUDA one: a Mac's GPU shares the CPU's memory, so there is
        // nothing to carry over to it).
        let mut gpus: Vec<(usize, Gpu)> = Vec::new();
        for d in layout.ranges.iter().map(|(d, _)| *d).chain([layout.output]) {
            if let Device::Gpu(i) = d {
                if !gpus.iter().any(|(o, _)| *o == i) {
                    gpus.push((i, Gpu::open(i)?));
                }
            }
        }
        let first_cuda = gpus.first().and_then(|(_, g)| g.cuda());
        let mut cpu = CpuBackend::new(threads, isa);
        if let Some(gpu) = &first_cuda {
            cpu = cpu.with_offload(gpu.clone());
        }
        let cpu = Arc::new(cpu);
        // The head rides with the last range when they share a device;
        // otherwise it is a range of no layers of its own.
        let mut parts: Vec<(Device, Range<usize>, bool)> = layout
            .ranges
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(d, r)| (*d, r.clone(), false))
            .collect();
        match parts.last_mut() {
            Some((d, _, head)) if *d == layout.output => *head = true,
            _ => {
                let end = config.n_layer;
                parts.push((layout.output, end..end, true));
            }
        }
        let covered: usize = parts.iter().map(|(_, r, _)| r.len()).sum();
        if covered != config.n_layer {
            bail!("the layout covers {covered} of {} layers", config.n_layer);
        }
        let mut stages: Vec<Box<dyn Stage>> = Vec::with_capacity(parts.len());
        for (device, range, head) in parts {
            let stage: Box<dyn Stage> = match device {
                Device::Cpu => {
                    let on_cpu = LayerRange::upload(cpu.clone(), &weights, range.clone(), head)?;
                    match &first_cuda {
                        // A head-only range has no layers to stream.
                        Some(gpu) if stream_prompts() && !range.is_empty() => {
                            Box::new(StreamedRange::new(on_cpu, gpu.clone(), &weights, range)?)
                        }
                        _ => Box::new(on_cpu),
                    }
                }
                Device::Gpu(i) => {
                    let gpu = gpus
                        .iter()
                        .find(|(o, _)| *o == i)
                        .map(|(_, g)| g.clone())
                        .expect("every GPU of the layout was opened");
                    match gpu {
                        Gpu::Cuda(g) => Box::new(LayerRange::upload(g, &weights, range, head)?),
                        #[cfg(target_vendor = "apple")]
                        Gpu::Metal(g) => Box::new(LayerRange::upload(g, &weights, range, head)?),
                    }
                }
            };
            stages.push(stage);
        }
        Ok(Model {
            config,
            weights,
            cpu,
            stages,
        })
    }

    pub fn threads(&self) -> usize {
        self.cpu.threads()
    }

    /// A fresh sequence with room for `n_ctx` tokens.
    pub fn new_state(&self, n_ctx: usize) -> Result<State> {
        let layers = self
            .config
            .layers
            .iter()
            .map(|l| KvLayer {
                cells: kv_cells(l.window, n_ctx),
                window: l.window,
            })
            .collect();
        Ok(State {
            kv: KvCache { n_ctx, layers },
            n_past: 0,
            hidden: Vec::new(),
            caches: self
                .stages
                .iter()
                .map(|s| s.new_cache(&self.config, n_ctx))
                .collect::<Result<_>>()?,
            logits: Vec::new(),
            trace: None,
        })
    }

    /// Bytes of KV cache a state holds, over every device.
    pub fn kv_allocated(&self, state: &State) -> usize {
        self.stages
            .iter()
            .zip(&state.caches)
            .map(|(s, c)| s.kv_allocated(c.as_ref()))
            .sum()
    }

    /// Bytes of the KV cache of a state of `n_ctx` tokens.
    pub fn kv_bytes(&self, n_ctx: usize) -> usize {
        let kv_dim = self.config.kv_dim();
        self.config
            .layers
            .iter()
            .map(|l| CpuBackend::kv_bytes(kv_cells(l.window, n_ctx), kv_dim, self.config.kv_types))
            .sum()
    }

    /// Runs `tokens` at positions `state.n_past..`, leaving the logits of the
    /// last one (or of all of them with `all_logits`) in `state.logits`.
    pub fn forward(&self, state: &mut State, tokens: &[u32], all_logits: bool) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        if state.n_past + tokens.len() > state.kv.n_ctx {
            bail!(
                "the context is full: {} tokens do not fit after {} of {}",
                tokens.len(),
                state.n_past,
                state.kv.n_ctx
            );
        }
        let n_vocab = self.config.shape.n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            bail!("token id {bad} is outside the vocabulary of {n_vocab}");
        }
        if all_logits {
            state.logits.clear();
            state.logits.resize(tokens.len() * n_vocab, 0.0);
        }
        for (i, chunk) in tokens.chunks(MAX_BATCH).enumerate() {
            let out = all_logits.then_some(i * MAX_BATCH * n_vocab);
            self.forward_batch(state, chunk, out)?;
        }
        Ok(())
    }

    fn forward_batch(
        &self,
        state: &mut State,
        tokens: &[u32],
        logits_at: Option<usize>,
    ) -> Result<()> {
        let c = &self.config;
        let t = tokens.len();
        let e = c.shape.n_embd;
        // The first stage writes the embeddings where its device reads them
        // (`Job::embed`); `hidden` carries the state between stages.
        state.hidden.resize(t * e, 0.0);
        let embed = |dst: &mut [f32]| {
            let _p = ggml::profile::scope("embed");
            self.embed(tokens, dst);
        };

        // Every token's logits, or the last one's.
        let n_vocab = c.shape.n_vocab;
        let logits = match logits_at {
            Some(at) => &mut state.logits[at..at + t * n_vocab],
            None => {
                if state.logits.len() != n_vocab {
                    state.logits.resize(n_vocab, 0.0);
                }
                &mut state.logits[..]
            }
        };
        let mut job = Job {
            config: c,
            embed: Some(&embed),
            hidden: &mut state.hidden,
            pos0: state.n_past,
            tokens: t,
            n_ctx: state.kv.n_ctx,
            first_logit_row: if logits_at.is_some() { 0 } else { t - 1 },
            logits,
            trace: &mut state.trace,
        };
        debug_assert_eq!(job.hidden.len(), t * e);
        const STAGE_NAMES: [&str; 4] = ["stage 0", "stage 1", "stage 2", "stage 3+"];
        for (i, (stage, cache)) in self.stages.iter().zip(state.caches.iter_mut()).enumerate() {
            let _p = ggml::profile::scope(STAGE_NAMES[i.min(3)]);
            stage.run(cache.as_mut(), &mut job)?;
        }
        state.n_past += t;
        Ok(())
    }

    /// Token embeddings on the host (`out`: a row each): rows dequantised as
    /// ggml's get_rows does, a large batch's rows split over the CPU
    /// backend's threads (its device waits for them: one thread took about
    /// 2 to 8 ms for a 7B's 512, and threads spawned for each batch 1.2 ms
    /// on the H200's host).
    fn embed(&self, tokens: &[u32], out: &mut [f32]) {
        let e = self.config.shape.n_embd;
        let rows_a_thread = tokens
            .len()
            .div_ceil(self.threads().max(1))
            .max(EMBED_ROWS_A_THREAD);
        if tokens.len() <= rows_a_thread {
            self.embed_rows(tokens, out);
            return;
        }
        let parts: Vec<Mutex<(&[u32], &mut [f32])>> = tokens
            .chunks(rows_a_thread)
            .zip(out.chunks_mut(rows_a_thread * e))
            .map(Mutex::new)
            .collect();
        self.cpu.on_threads(&|i| {
            if let Some(part) = parts.get(i) {
                let mut part = part.lock().unwrap_or_else(|p| p.into_inner());
                let (toks, dst) = &mut *part;
                self.embed_rows(toks, dst);
            }
        });
    }

    /// `embed` of `tokens` into `out` (their rows), on this thread.
    fn embed_rows(&self, tokens: &[u32], out: &mut [f32]) {
        let e = self.config.shape.n_embd;
        let embd = &self.weights.token_embd;
        let data = embd.bytes();
        for (&tok, dst) in tokens.iter().zip(out.chunks_exact_mut(e)) {
            let row = &data[tok as usize * embd.row_bytes..][..embd.row_bytes];
            ggml::blocks::dequantize(embd.format.ggml(), row, dst).expect("type checked at load");
            if let Some(scale) = self.config.embd_scale {
                dst.iter_mut().for_each(|v| *v *= scale);
            }
        }
    }
}

/// Writes a batch's token embeddings into the slice it is given.
type Embed<'a> = dyn Fn(&mut [f32]) + Sync + 'a;

/// One batch as it passes through the stages.
struct Job<'a> {
    config: &'a Config,
    /// Writes the batch's token embeddings (a row each) into the slice it
    /// is given: taken by the first stage, which has them written where its
    /// device reads them.
    embed: Option<&'a Embed<'a>>,
    /// The hidden state on the host: input of a stage, and its output unless
    /// it is the last.
    hidden: &'a mut Vec<f32>,
    pos0: usize,
    tokens: usize,
    n_ctx: usize,
    /// Logits are wanted for rows `first_logit_row..tokens`.
    first_logit_row: usize,
    logits: &'a mut [f32],
    trace: &'a mut Option<Trace>,
}

impl Job<'_> {
    /// The stage's input, in `hidden`: the batch's embeddings, written
    /// there now, where this is the first stage.
    fn hidden_input(&mut self) -> &[f32] {
        let n = self.tokens * self.config.shape.n_embd;
        if let Some(embed) = self.embed.take() {
            embed(&mut self.hidden[..n]);
        }
        &self.hidden[..n]
    }
}

/// A range of layers on one device, erased so that ranges on different
/// backends sit in one list.
trait Stage: Send + Sync {
    /// Its KV caches and working buffers for a sequence of `n_ctx` tokens.
    fn new_cache(&self, config: &Config, n_ctx: usize) -> Result<Box<dyn Any + Send>>;
    fn run(&self, cache: &mut (dyn Any + Send), job: &mut Job<'_>) -> Result<()>;
    /// Bytes of KV cache that `cache` holds on the device.
    fn kv_allocated(&self, cache: &(dyn Any + Send)) -> usize;
}

/// Layers `first..first + layers.len()` uploaded to backend `B`, and the
/// output head when this range is the last.
struct LayerRange<B: Backend> {
    backend: Arc<B>,
    first: usize,
    layers: Vec<Layer<B::Mat, B::Vector>>,
    /// Rope frequency factors for contexts within / beyond the original one.
    rope_factors: [Option<B::Vector>; 2],
    head: Option<Head<B>>,
}

struct Head<B: Backend> {
    norm: B::Vector,
    output: B::Mat,
}

/// A range's state for one sequence, on its device.
struct RangeCache<B: Backend> {
    kv: Vec<B::Kv>,
    sc: B::Scratch,
    x: B::Buf,
    xb: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    fused: B::Buf,
    att: B::Buf,
    gate: B::Buf,
    up: B::Buf,
    logits: B::Buf,
    /// Declared last, so dropped last: the device (its context) outlives
    /// every buffer above, whatever order the model and state go in.
    _backend: Arc<B>,
}

impl<B: Backend + 'static> LayerRange<B> {
    fn upload(
        backend: Arc<B>,
        w: &Weights,
        range: Range<usize>,
        with_head: bool,
    ) -> Result<LayerRange<B>, ggml::backend::BackendError> {
        let b = &*backend;
        b.reserve(range_weight_bytes(w, range.clone(), with_head))?;
        let mat = |m: &HostMat| b.upload_mat(m);
        let vector = |v: &Vec<f32>| b.upload_vector(v);
        let layers = w.layers[range.clone()]
            .iter()
            .map(|l| l.try_map(mat, vector))
            .collect::<Result<Vec<_>, _>>()?;
        let head = if with_head {
            Some(Head {
                norm: b.upload_vector(&w.output_norm)?,
                output: b.upload_mat(&w.output)?,
            })
        } else {
            None
        };
        let [short, long] =
            [false, true].map(|long| w.rope_factors(long).map(|f| b.upload_vector(f)));
        let rope_factors = [short.transpose()?, long.transpose()?];
        Ok(LayerRange {
            first: range.start,
            layers,
            rope_factors,
            head,
            backend,
        })
    }
}

impl<B: Backend + 'static> Stage for LayerRange<B> {
    fn new_cache(&self, c: &Config, n_ctx: usize) -> Result<Box<dyn Any + Send>> {
        Ok(Box::new(self.make_cache(c, n_ctx)?))
    }

    fn kv_allocated(&self, cache: &(dyn Any + Send)) -> usize {
        let cache = cache
            .downcast_ref::<RangeCache<B>>()
            .expect("a stage's cache is the one it made");
        self.kv_bytes_of(cache)
    }

    fn run(&self, cache: &mut (dyn Any + Send), job: &mut Job<'_>) -> Result<()> {
        let cache = cache
            .downcast_mut::<RangeCache<B>>()
            .expect("a stage's cache is the one it made");
        self.run_on(cache, job)
    }
}

impl<B: Backend + 'static> LayerRange<B> {
    fn kv_bytes_of(&self, cache: &RangeCache<B>) -> usize {
        cache
            .kv
            .iter()
            .map(|kv| self.backend.kv_allocated(kv))
            .sum()
    }

    fn make_cache(&self, c: &Config, n_ctx: usize) -> Result<RangeCache<B>> {
        self.make_cache_for(c, n_ctx, fused_width(&self.layers, c))
    }

    /// The range's cache, with a split buffer of `fused` values a row.
    fn make_cache_for(&self, c: &Config, n_ctx: usize, fused: usize) -> Result<RangeCache<B>> {
        let b = &*self.backend;
        let s = &c.shape;
        let (e, q_dim, kv_dim) = (s.n_embd, c.q_dim(), c.kv_dim());
        let kv = (self.first..self.first + self.layers.len())
            .map(|il| {
                b.kv(
                    kv_cells(c.layers[il].window, n_ctx),
                    kv_dim,
                    s.head_dim,
                    c.kv_types,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows = MAX_BATCH;
        Ok(RangeCache::<B> {
            kv,
            sc: b.scratch()?,
            x: b.buf(rows * e)?,
            xb: b.buf(rows * e)?,
            q: b.buf(rows * q_dim)?,
            k: b.buf(rows * kv_dim)?,
            v: b.buf(rows * kv_dim)?,
            fused: b.buf(rows * fused)?,
            att: b.buf(rows * q_dim)?,
            gate: b.buf(rows * s.n_ff)?,
            up: b.buf(rows * s.n_ff)?,
            logits: b.buf(if self.head.is_some() {
                LOGIT_ROWS * s.n_vocab
            } else {
                0
            })?,
            _backend: self.backend.clone(),
        })
    }

    fn run_on(&self, cache: &mut RangeCache<B>, job: &mut Job<'_>) -> Result<()> {
        let b = &*self.backend;
        let c = job.config;
        let t = job.tokens;
        let e = c.shape.n_embd;
        {
            // The positions first: `begin` waits for the device to be idle,
            // `write` then leaves its copy to run beside the launches after.
            let _p = ggml::profile::scope("hidden to the device");
            b.begin(&mut cache.sc, job.pos0, t);
            match job.embed.take() {
                Some(embed) => b.write_with(t * e, &mut |dst| embed(dst), &mut cache.x),
                None => b.write(&job.hidden[..t * e], &mut cache.x),
            }
        }
        let long = c.long_rope(job.n_ctx);
        let factors = self.rope_factors[usize::from(long)].as_ref();
        // A decode step issues the same ops at every position (positions come
        // from `begin`), so a backend may record it once and replay it. Not
        // while tracing, which reads buffers between ops.
        let key = (job.trace.is_none() && t == 1).then_some(u64::from(long));
        let name = || b.name();
        let failed = |e: ggml::backend::BackendError| anyhow::anyhow!("{}: {e}", name());
        let issued = ggml::profile::scope("layers issued");
        if !key.is_some_and(|k| b.replay(&mut cache.sc, k)) {
            for (i, layer) in self.layers.iter().enumerate() {
                self.layer(cache, i, job, self.first + i, layer, factors);
            }
            if let Some(k) = key {
                if let Some(head) = &self.head {
                    self.logits(cache, job, head, 0, 1);
                }
                b.end_recording(&mut cache.sc, k);
            }
        }
        drop(issued);
        // The wait for the layers' kernels falls in here.
        let _p = ggml::profile::scope("head and read back");
        match &self.head {
            Some(_) if key.is_some() => b.read(&cache.logits, job.logits).map_err(failed),
            Some(head) => self.output(cache, job, head),
            None => b.read(&cache.x, &mut job.hidden[..t * e]).map_err(failed),
        }
    }
}

impl<B: Backend + 'static> LayerRange<B> {
    /// One transformer block: attention, then the feed-forward network, each
    /// added to the residual stream `x`.
    /// Layer `il` with weights `w`, its KV cache `r.kv[kv]`.
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        r: &mut RangeCache<B>,
        kv: usize,
        job: &mut Job<'_>,
        il: usize,
        w: &Layer<B::Mat, B::Vector>,
        factors: Option<&B::Vector>,
    ) {
        let b = &*self.backend;
        let c = job.config;
        let s = &c.shape;
        let (t, pos0) = (job.tokens, job.pos0);
        let (e, hd) = (s.n_embd, s.head_dim);
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let la = &c.layers[il];
        let sc = &mut r.sc;

        // Attention block.
        if let (Some(wk), Some(wv)) = (&w.wk, &w.wv) {
            let products = &mut [(&w.wq, &mut r.q), (wk, &mut r.k), (wv, &mut r.v)];
            b.matmuls_normed(sc, &r.x, &w.attn_norm, c.eps, t, &mut r.xb, products);
        } else {
            b.rms_norm(&r.x, &w.attn_norm, c.eps, t, &mut r.xb);
            let width = q_dim + 2 * kv_dim;
            b.matmul(sc, &w.wq, &r.xb, t, &mut r.fused);
            b.copy_cols(&r.fused, width, 0, q_dim, t, &mut r.q);
            b.copy_cols(&r.fused, width, q_dim, kv_dim, t, &mut r.k);
            b.copy_cols(&r.fused, width, q_dim + kv_dim, kv_dim, t, &mut r.v);
        }
        if let Some(bias) = &w.bq {
            b.add_bias(&mut r.q, bias, t);
        }
        if let Some(bias) = &w.bk {
            b.add_bias(&mut r.k, bias, t);
        }
        if let Some(bias) = &w.bv {
            b.add_bias(&mut r.v, bias, t);
        }
        if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
            b.rms_norm_in_place(&mut r.q, qn, c.eps, t * s.n_head);
            b.rms_norm_in_place(&mut r.k, kn, c.eps, t * s.n_head_kv);
        }
        let kv = &mut r.kv[kv];
        let attn = Attention {
            n_head: s.n_head,
            n_head_kv: s.n_head_kv,
            head_dim: hd,
            window: la.window,
            kq_scale: c.kq_scale,
        };
        if job.trace.is_none() && c.q_scale.is_none() {
            // Nothing between the rotation and attention: a device may fuse them.
            let qkv = (&mut r.q, &mut r.k, &r.v);
            b.rope_store_attention(sc, kv, qkv, t, &la.rope, factors, pos0, &attn, &mut r.att);
        } else {
            let heads = (s.n_head, s.n_head_kv);
            b.rope_store(
                sc, kv, &mut r.q, &mut r.k, &r.v, t, heads, hd, &la.rope, factors, pos0,
            );
            trace(b, job.trace, "Qcur", il, &r.q, t * q_dim);
            trace(b, job.trace, "Kcur", il, &r.k, t * kv_dim);
            trace(b, job.trace, "Vcur", il, &r.v, t * kv_dim);
            if let Some(qs) = c.q_scale {
                b.scale(&mut r.q, qs, t * q_dim);
            }
            b.attention(sc, kv, &r.q, pos0, t, &attn, &mut r.att);
        }
        trace(b, job.trace, "kqv_out", il, &r.att, t * q_dim);
        match &w.post_attn_norm {
            Some(pn) => {
                b.matmul(sc, &w.wo, &r.att, t, &mut r.xb);
                b.rms_norm_in_place(&mut r.xb, pn, c.eps, t);
                b.add(&mut r.x, &r.xb, t * e);
            }
            None => b.matmul_add(sc, &w.wo, &r.att, t, e, &mut r.x, &mut r.xb),
        }
        trace(b, job.trace, "ffn_inp", il, &r.x, t * e);

        // Feed-forward block.
        let (glu, name) = match c.arch.activation {
            Activation::SwiGlu => (Glu::SwiGlu, "ffn_swiglu"),
            Activation::GeGlu => (Glu::GeGlu, "ffn_geglu"),
        };
        // A trace wants each intermediate, so it takes the ops one by one.
        let tracing = job.trace.is_some();
        match &w.w_gate {
            Some(wg) if !tracing => {
                b.matmul_glu_normed(
                    sc,
                    &r.x,
                    &w.ffn_norm,
                    c.eps,
                    &mut r.xb,
                    glu,
                    wg,
                    &w.w_up,
                    t,
                    s.n_ff,
                    &mut r.gate,
                    &mut r.up,
                );
            }
            gate => {
                b.rms_norm(&r.x, &w.ffn_norm, c.eps, t, &mut r.xb);
                match gate {
                    Some(wg) => {
                        let products = &mut [(wg, &mut r.gate), (&w.w_up, &mut r.up)];
                        b.matmuls(sc, &r.xb, t, products);
                    }
                    None => {
                        b.matmul(sc, &w.w_up, &r.xb, t, &mut r.fused);
                        b.copy_cols(&r.fused, 2 * s.n_ff, 0, s.n_ff, t, &mut r.gate);
                        b.copy_cols(&r.fused, 2 * s.n_ff, s.n_ff, s.n_ff, t, &mut r.up);
                    }
                }
                trace(b, job.trace, "ffn_gate", il, &r.gate, t * s.n_ff);
                trace(b, job.trace, "ffn_up", il, &r.up, t * s.n_ff);
                b.glu(glu, &mut r.gate, &r.up, t * s.n_ff);
            }
        }
        trace(b, job.trace, name, il, &r.gate, t * s.n_ff);
        match &w.post_ffn_norm {
            None if !tracing => b.matmul_add(sc, &w.w_down, &r.gate, t, e, &mut r.x, &mut r.xb),
            post_norm => {
                b.matmul(sc, &w.w_down, &r.gate, t, &mut r.xb);
                trace(b, job.trace, "ffn_out", il, &r.xb, t * e);
                if let Some(pn) = post_norm {
                    b.rms_norm_in_place(&mut r.xb, pn, c.eps, t);
                }
                b.add(&mut r.x, &r.xb, t * e);
            }
        }
        trace(b, job.trace, "l_out", il, &r.x, t * e);
    }

    /// The final norm and the output projection of the rows whose logits
    /// are wanted, LOGIT_ROWS at a time, each piece copied to the host.
    fn output(&self, r: &mut RangeCache<B>, job: &mut Job<'_>, head: &Head<B>) -> Result<()> {
        let n_vocab = job.config.shape.n_vocab;
        let mut row = job.first_logit_row;
        while row < job.tokens {
            let rows = LOGIT_ROWS.min(job.tokens - row);
            self.logits(r, job, head, row, rows);
            let at = (row - job.first_logit_row) * n_vocab;
            self.backend
                .read(&r.logits, &mut job.logits[at..at + rows * n_vocab])
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.backend.name()))?;
            row += rows;
        }
        Ok(())
    }

    /// Logits of hidden rows `row0..row0 + rows` (at most LOGIT_ROWS) into
    /// the logits buffer.
    fn logits(
        &self,
        r: &mut RangeCache<B>,
        job: &Job<'_>,
        head: &Head<B>,
        row0: usize,
        rows: usize,
    ) {
        let b = &*self.backend;
        let c = job.config;
        let e = c.shape.n_embd;
        if row0 == 0 {
            // A decode step's row: the device may apply the norm as the
            // product reads it (one launch, not a copy, a norm and a product).
            let products = &mut [(&head.output, &mut r.logits)];
            b.matmuls_normed(
                &mut r.sc, &r.x, &head.norm, c.eps, rows, &mut r.xb, products,
            );
            return;
        }
        b.copy_rows(&r.x, row0, rows, e, &mut r.xb);
        b.rms_norm_in_place(&mut r.xb, &head.norm, c.eps, rows);
        b.matmul(&mut r.sc, &head.output, &r.xb, rows, &mut r.logits);
    }
}

/// Values a row of the split buffer of fused QKV or gate-up weights needs,
/// where any of `layers` has them.
fn fused_width<M, V>(layers: &[Layer<M, V>], c: &Config) -> usize {
    let (q_dim, kv_dim, n_ff) = (c.q_dim(), c.kv_dim(), c.shape.n_ff);
    layers
        .iter()
        .map(|l| {
            let qkv = if l.wk.is_none() {
                q_dim + 2 * kv_dim
            } else {
                0
            };
            let up = if l.w_gate.is_none() { 2 * n_ff } else { 0 };
            qkv.max(up)
        })
        .max()
        .unwrap_or(0)
}

/// Whether the CPU's layers run their large prompt batches on the GPU
/// (LLM_NO_STREAMED_LAYERS=1 leaves them on the CPU, sending only their
/// products over: for comparisons).
fn stream_prompts() -> bool {
    std::env::var_os("LLM_NO_STREAMED_LAYERS").is_none()
}

/// Bytes of the weights a range uploads, each rounded up as a device
/// places them.
fn range_weight_bytes(w: &Weights, range: Range<usize>, with_head: bool) -> usize {
    let align = |n: usize| n.next_multiple_of(ggml::backend::WEIGHT_ALIGN);
    let vec_bytes = |v: &Vec<f32>| align(v.len() * 4);
    let mut total: usize = w.layers[range]
        .iter()
        .map(|l| l.bytes_aligned(ggml::backend::WEIGHT_ALIGN))
        .sum();
    if with_head {
        total += vec_bytes(&w.output_norm) + align(w.output.len);
    }
    total
        + [false, true]
            .iter()
            .filter_map(|&long| w.rope_factors(long))
            .map(|f| align(f.len() * 4))
            .sum::<usize>()
}

/// Hands a buffer's values to the debugging hook, when one is set.
fn trace<B: Backend>(
    b: &B,
    hook: &mut Option<Trace>,
    name: &str,
    il: usize,
    buf: &B::Buf,
    len: usize,
) {
    if let Some(f) = hook.as_mut() {
        let mut host = vec![0f32; len];
        if b.read(buf, &mut host).is_ok() {
            f(name, il, &host);
        }
    }
}
