//! Layers left on the CPU whose large prompt batches run on the GPU, as
//! llama.cpp runs them: for each layer the weights cross into a room that
//! holds one layer, the KV cells the batch attends to cross with them, the
//! layer runs as a GPU layer does, and the cells the batch wrote come back
//! to the CPU's cache. The CPU keeps its cache, its weights and every
//! one-token step; the GPU holds only one layer's worth at a time.

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use ggml::backend::{Backend, HostMat, WEIGHT_ALIGN};
use ggml::cpu::backend::CpuBackend;
use ggml::cuda::{CudaBackend, LayerRoom};

use super::{Job, LayerRange, RangeCache, Stage};
use crate::model::config::Config;
use crate::model::footprint::kv_cells;
use crate::model::weights::{Layer, Weights};

/// A CPU layer range, and the GPU its large prompt batches go to.
pub(super) struct StreamedRange {
    cpu: LayerRange<CpuBackend>,
    /// No layers of its own: the GPU's buffers, rope factors and layer code.
    gpu: LayerRange<CudaBackend>,
    /// The range's weights where they lie, to cross for each batch.
    host: Vec<Layer<HostMat, Vec<f32>>>,
    /// Batches of fewer tokens stay on the CPU.
    min_tokens: usize,
}

struct StreamedCache {
    cpu: RangeCache<CpuBackend>,
    /// Made by the first batch that streams.
    gpu: Option<GpuSide>,
    /// The GPU had no room for it: every batch stays on the CPU.
    no_room: bool,
}

/// What the GPU holds for a sequence: one layer's weights, buffers for a
/// batch, and a KV cache for each cell count the range's layers use.
struct GpuSide {
    cache: RangeCache<CudaBackend>,
    /// The KV cache in `cache.kv` that each layer of the range borrows.
    slot: Vec<usize>,
    room: LayerRoom,
    /// Host rows of keys and values on their way between the caches.
    k_rows: Vec<u16>,
    v_rows: Vec<u16>,
}

impl StreamedRange {
    pub(super) fn new(
        cpu: LayerRange<CpuBackend>,
        gpu: Arc<CudaBackend>,
        w: &Weights,
        range: Range<usize>,
    ) -> Result<StreamedRange> {
        use ggml::backend::MatmulOffload;
        let min_tokens = gpu.min_tokens();
        let gpu = LayerRange::upload(gpu, w, range.end..range.end, false)?;
        let host = w.layers[range]
            .iter()
            .map(|l| l.try_map(|m| Ok::<_, ()>(m.clone()), |v| Ok(v.clone())))
            .collect::<Result<Vec<_>, ()>>()
            .expect("cloning cannot fail");
        Ok(StreamedRange {
            cpu,
            gpu,
            host,
            min_tokens,
        })
    }

    fn gpu_side(&self, c: &Config, n_ctx: usize) -> Result<GpuSide> {
        let gpu = &*self.gpu.backend;
        let mut cache = self
            .gpu
            .make_cache_for(c, n_ctx, super::fused_width(&self.host, c))?;
        let kv_dim = c.kv_dim();
        let first = self.cpu.first;
        let mut counts: Vec<usize> = Vec::new();
        let mut slot = Vec::with_capacity(self.host.len());
        for il in first..first + self.host.len() {
            let cells = kv_cells(c.layers[il].window, n_ctx);
            let i = match counts.iter().position(|&n| n == cells) {
                Some(i) => i,
                None => {
                    cache
                        .kv
                        .push(gpu.kv(cells, kv_dim, c.shape.head_dim, c.kv_types)?);
                    counts.push(cells);
                    counts.len() - 1
                }
            };
            slot.push(i);
        }
        let room_bytes = self
            .host
            .iter()
            .map(|l| l.bytes_aligned(WEIGHT_ALIGN))
            .max()
            .unwrap_or(0);
        let most = counts.iter().copied().max().unwrap_or(0);
        let (kw, vw) = c.kv_types.row_words(kv_dim);
        Ok(GpuSide {
            cache,
            slot,
            room: gpu.layer_room(room_bytes)?,
            k_rows: vec![0; most * kw],
            v_rows: vec![0; most * vw],
        })
    }

    /// The batch through every layer of the range on the GPU.
    fn stream(
        &self,
        cpu_cache: &mut RangeCache<CpuBackend>,
        g: &mut GpuSide,
        job: &mut Job<'_>,
    ) -> Result<()> {
        let (cpu, gpu) = (&*self.cpu.backend, &*self.gpu.backend);
        let failed = |e: ggml::backend::BackendError| anyhow!("{}: {e}", gpu.name());
        let copy = |s: &[u8], d: &mut [u8]| cpu.host_copy(s, d);
        let c = job.config;
        let (t, e) = (job.tokens, c.shape.n_embd);
        gpu.write(job.hidden_input(), &mut g.cache.x);
        gpu.begin(&mut g.cache.sc, job.pos0, t);
        let factors = self.gpu.rope_factors[usize::from(c.long_rope(job.n_ctx))].as_ref();
        // The cells a layer wrote come back once the next layer's weights
        // have crossed (which waits for the layer's kernels), so the host
        // copies those weights while the GPU runs the layer.
        let mut written: Option<usize> = None;
        for (i, host) in self.host.iter().enumerate() {
            g.room.clear();
            let room = &g.room;
            let w = host
                .try_map(
                    |m| gpu.stream_mat(room, m, &copy),
                    |v| gpu.stream_vector(room, v, &copy),
                )
                .map_err(failed)?;
            if let Some(j) = written.take() {
                self.cells_back(cpu_cache, g, j, job)?;
            }
            self.cells_over(cpu_cache, g, i, job)?;
            let il = self.cpu.first + i;
            self.gpu
                .layer(&mut g.cache, g.slot[i], job, il, &w, factors);
            written = Some(i);
        }
        if let Some(j) = written {
            self.cells_back(cpu_cache, g, j, job)?;
        }
        gpu.read(&g.cache.x, &mut job.hidden[..t * e])
            .map_err(failed)
    }

    /// The cells layer `i` attends to from before the batch, CPU to GPU.
    fn cells_over(
        &self,
        cpu_cache: &RangeCache<CpuBackend>,
        g: &mut GpuSide,
        i: usize,
        job: &Job<'_>,
    ) -> Result<()> {
        let kv = &cpu_cache.kv[i];
        let cells = kv_cells(job.config.layers[self.cpu.first + i].window, job.n_ctx);
        let n = job.pos0.min(cells);
        if n == 0 {
            return Ok(());
        }
        let (kw, vw) = job.config.kv_types.row_words(job.config.kv_dim());
        let (k_rows, v_rows) = (&mut g.k_rows[..n * kw], &mut g.v_rows[..n * vw]);
        let (cpu, gpu) = (&*self.cpu.backend, &*self.gpu.backend);
        let copy = |s: &[u8], d: &mut [u8]| cpu.host_copy(s, d);
        cpu.kv_cells_out(kv, 0, k_rows, v_rows);
        gpu.kv_put(&mut g.cache.kv[g.slot[i]], 0, k_rows, v_rows, &copy)
            .map_err(|e| anyhow!("{}: {e}", gpu.name()))
    }

    /// The cells the batch wrote in layer `i`, GPU to CPU.
    fn cells_back(
        &self,
        cpu_cache: &mut RangeCache<CpuBackend>,
        g: &mut GpuSide,
        i: usize,
        job: &Job<'_>,
    ) -> Result<()> {
        let cells = kv_cells(job.config.layers[self.cpu.first + i].window, job.n_ctx);
        let (kw, vw) = job.config.kv_types.row_words(job.config.kv_dim());
        let (cpu, gpu) = (&*self.cpu.backend, &*self.gpu.backend);
        let copy = |s: &[u8], d: &mut [u8]| cpu.host_copy(s, d);
        for run in written_cells(job.pos0, job.tokens, cells) {
            let (k, v) = (
                &mut g.k_rows[..run.len() * kw],
                &mut g.v_rows[..run.len() * vw],
            );
            gpu.kv_get(&g.cache.kv[g.slot[i]], run.start, k, v, &copy)
                .map_err(|e| anyhow!("{}: {e}", gpu.name()))?;
            cpu.kv_cells_in(&mut cpu_cache.kv[i], run.start, k, v);
        }
        Ok(())
    }
}

/// The cells that positions `pos0..pos0 + tokens` land in, in a cache of
/// `cells` cells used as a ring: at most two runs.
#[allow(clippy::single_range_in_vec_init)] // a list of runs that may hold one
fn written_cells(pos0: usize, tokens: usize, cells: usize) -> Vec<Range<usize>> {
    if tokens >= cells {
        return vec![0..cells];
    }
    let start = pos0 % cells;
    if start + tokens <= cells {
        vec![start..start + tokens]
    } else {
        vec![start..cells, 0..start + tokens - cells]
    }
}

impl Stage for StreamedRange {
    fn new_cache(&self, c: &Config, n_ctx: usize) -> Result<Box<dyn Any + Send>> {
        Ok(Box::new(StreamedCache {
            cpu: self.cpu.make_cache(c, n_ctx)?,
            gpu: None,
            no_room: false,
        }))
    }

    fn kv_allocated(&self, cache: &(dyn Any + Send)) -> usize {
        let cache = cache
            .downcast_ref::<StreamedCache>()
            .expect("a stage's cache is the one it made");
        self.cpu.kv_bytes_of(&cache.cpu)
    }

    fn run(&self, cache: &mut (dyn Any + Send), job: &mut Job<'_>) -> Result<()> {
        let cache = cache
            .downcast_mut::<StreamedCache>()
            .expect("a stage's cache is the one it made");
        // A trace compares the CPU's own sums with llama.cpp's.
        if job.tokens < self.min_tokens || job.trace.is_some() || cache.no_room {
            return self.cpu.run_on(&mut cache.cpu, job);
        }
        if cache.gpu.is_none() {
            match self.gpu_side(job.config, job.n_ctx) {
                Ok(g) => cache.gpu = Some(g),
                // Short of device memory: the CPU runs the batches, sending
                // their large products over one at a time.
                Err(_) => {
                    cache.no_room = true;
                    return self.cpu.run_on(&mut cache.cpu, job);
                }
            }
        }
        let g = cache.gpu.as_mut().expect("made above");
        self.stream(&mut cache.cpu, g, job)?;
        match &self.cpu.head {
            Some(head) => {
                let t = job.tokens * job.config.shape.n_embd;
                self.cpu.backend.write(&job.hidden[..t], &mut cache.cpu.x);
                self.cpu.output(&mut cache.cpu, job, head)
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::written_cells;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn a_batch_writes_one_run_or_two_around_the_ring() {
        assert_eq!(written_cells(0, 512, 4096), vec![0..512]);
        assert_eq!(written_cells(4000, 200, 4096), vec![4000..4096, 0..104]);
        assert_eq!(written_cells(5000, 100, 4096), vec![904..1004]);
        assert_eq!(written_cells(7, 600, 512), vec![0..512]);
    }
}
