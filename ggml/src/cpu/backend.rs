//! The CPU as a backend: weights used in place from the file mapping, a KV
//! cache of f16 or a quantised type, one thread pool, kernels of one
//! instruction set. Numerics follow ggml's CPU one-token path to the bit
//! (activations quantised to each weight type's dot partner, f16 attention as
//! llama.cpp does without flash attention, other cache types as its flash
//! attention does).

use super::ops;
use super::pages::{huge_pages, huge_pages_on, release_pages, HUGE_PAGE, RELEASE_STEP};
use super::pool::{split, ThreadPool};
use super::steal::Pieces;
use super::{Isa, Kernels};
use crate::backend::{
    Attention, Backend, BackendError, Glu, HostMat, KvTypes, MatmulOffload, WeightFormat,
};
use crate::float16::f32_to_f16;
use crate::rope::Rope;
use std::sync::Arc;

pub struct CpuBackend {
    /// Where large prompt batches' matmuls go, when a GPU is there.
    offload: Option<Arc<dyn MatmulOffload>>,
    pool: ThreadPool,
    isa: Isa,
    /// The f16 dot product of this ISA (attention's scores and values).
    dot16: super::DotFn,
}

/// A weight matrix left where it lies (the mapping), with its kernels.
pub struct CpuMat {
    host: HostMat,
    kernels: Kernels,
    /// The weights regrouped eight rows at a time, where this ISA has
    /// kernels for them (`interleaved`); the products then read only these.
    interleaved: Option<Interleaved>,
}

struct Interleaved {
    bytes: Vec<u8>,
    kernels: super::interleaved::Kernels,
}

impl CpuMat {
    pub fn host(&self) -> &HostMat {
        &self.host
    }
}

/// With f16 keys and values (the default): keys one row per cell, values
/// stored transposed (one row per dimension over the cells), as llama.cpp
/// does without flash attention. Other types: keys and values each one row
/// of their type per cell, as llama.cpp keeps them for flash attention.
/// Rows of every cache type are a whole number of u16 (blocks of 2, 18, 20,
/// 22, 24 or 34 bytes).
pub struct CpuKv {
    cells: usize,
    kv_dim: usize,
    /// Rows of a quantised cache rotate head by head.
    head_dim: usize,
    types: KvTypes,
    k: Vec<u16>,
    v: Vec<u16>,
}

#[derive(Default)]
pub struct CpuScratch {
    /// Activations quantised for the dot kernels.
    act: Vec<u8>,
    scores: Vec<f32>,
    half: Vec<u16>,
    rope: Vec<f32>,
}

impl CpuBackend {
    pub fn new(threads: usize, isa: Isa) -> CpuBackend {
        CpuBackend {
            offload: None,
            pool: ThreadPool::new(threads.max(1)),
            isa,
            dot16: super::kernels_for(crate::GgmlType::F16, isa)
                .expect("f16 kernels exist")
                .dot,
        }
    }

    /// Sends matmuls of large batches to `device` (see MatmulOffload).
    pub fn with_offload(mut self, device: Arc<dyn MatmulOffload>) -> CpuBackend {
        self.offload = Some(device);
        self
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `f(i)` on each thread `i` in `0..threads()` of the pool, the
    /// caller as 0 (work outside the backend's ops that is worth the
    /// threads: a prompt batch's embeddings).
    pub fn on_threads(&self, f: &(dyn Fn(usize) + Sync)) {
        self.pool.run(f);
    }

    /// Cells `cell0..cell0 + n` of a cache as rows, `[cell][kv_dim]` keys
    /// and values in the cache's types as u16 words (another device's
    /// layout: an f16 cache's values untransposed).
    pub fn kv_cells_out(&self, kv: &CpuKv, cell0: usize, k: &mut [u16], v: &mut [u16]) {
        let (kv_dim, cells) = (kv.kv_dim, kv.cells);
        if !kv.types.is_f16() {
            let (kw, vw) = kv.types.row_words(kv_dim);
            let n = k.len() / kw;
            assert!(k.len() == n * kw && v.len() == n * vw && cell0 + n <= cells);
            k.copy_from_slice(&kv.k[cell0 * kw..(cell0 + n) * kw]);
            v.copy_from_slice(&kv.v[cell0 * vw..(cell0 + n) * vw]);
            return;
        }
        let n = k.len() / kv_dim;
        assert!(k.len() == n * kv_dim && v.len() == k.len() && cell0 + n <= cells);
        k.copy_from_slice(&kv.k[cell0 * kv_dim..(cell0 + n) * kv_dim]);
        let out = SyncPtr(v.as_mut_ptr() as *mut f32);
        let work = |dims: std::ops::Range<usize>| {
            let out = &out;
            let out = out.0 as *mut u16;
            for d in dims {
                let row = &kv.v[d * cells + cell0..][..n];
                for (c, &x) in row.iter().enumerate() {
                    // SAFETY: c < n and d < kv_dim: inside `v`; threads
                    // write disjoint dimensions.
                    unsafe { *out.add(c * kv_dim + d) = x };
                }
            }
        };
        self.over_dims(kv_dim, n * kv_dim, 1 << 14, &work);
    }

    /// The reverse of `kv_cells_out`: rows of keys and values into cells
    /// `cell0..` of a cache.
    pub fn kv_cells_in(&self, kv: &mut CpuKv, cell0: usize, k: &[u16], v: &[u16]) {
        let (kv_dim, cells) = (kv.kv_dim, kv.cells);
        if !kv.types.is_f16() {
            let (kw, vw) = kv.types.row_words(kv_dim);
            let n = k.len() / kw;
            assert!(k.len() == n * kw && v.len() == n * vw && cell0 + n <= cells);
            kv.k[cell0 * kw..(cell0 + n) * kw].copy_from_slice(k);
            kv.v[cell0 * vw..(cell0 + n) * vw].copy_from_slice(v);
            return;
        }
        let n = k.len() / kv_dim;
        assert!(k.len() == n * kv_dim && v.len() == k.len() && cell0 + n <= cells);
        kv.k[cell0 * kv_dim..(cell0 + n) * kv_dim].copy_from_slice(k);
        let cache = SyncPtr(kv.v.as_mut_ptr() as *mut f32);
        let work = |dims: std::ops::Range<usize>| {
            let cache = &cache;
            let cache = cache.0 as *mut u16;
            for d in dims {
                for c in 0..n {
                    // SAFETY: d < kv_dim, cell0 + c < cells: inside the
                    // cache; threads write disjoint dimensions.
                    unsafe { *cache.add(d * cells + cell0 + c) = v[c * kv_dim + d] };
                }
            }
        };
        self.over_dims(kv_dim, n * kv_dim, 1 << 14, &work);
    }

    /// `work` over the dimensions `0..kv_dim` of a cache, split over the
    /// pool when it moves at least `min` of its `values`.
    fn over_dims(
        &self,
        kv_dim: usize,
        values: usize,
        min: usize,
        work: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let threads = self.pool.threads();
        if threads == 1 || values < min {
            work(0..kv_dim);
        } else {
            self.pool.run(&|i| work(split(kv_dim, threads, i, 16)));
        }
    }

    /// Keys and values of `tokens` tokens into a cache of rows, each row
    /// quantised as ggml's `from_float` of the cache type does; tokens are
    /// spread over the pool.
    fn kv_store_rows(&self, kv: &mut CpuKv, k: &[f32], v: &[f32], pos0: usize, tokens: usize) {
        let (kv_dim, cells, types, head_dim) = (kv.kv_dim, kv.cells, kv.types, kv.head_dim);
        let (kw, vw) = types.row_words(kv_dim);
        let (k_rot, v_rot) = (types.k_rotation(head_dim), types.v_rotation(head_dim));
        let k_cache = SyncPtr(kv.k.as_mut_ptr() as *mut f32);
        let v_cache = SyncPtr(kv.v.as_mut_ptr() as *mut f32);
        let work = |i: usize| {
            let (k_cache, v_cache) = (&k_cache, &v_cache);
            let cell = (pos0 + i) % cells;
            // SAFETY: cell < cells: the rows lie inside the caches; each
            // token's cell is written by one thread (a batch never holds
            // more tokens than a ring has cells).
            let (kr, vr) = unsafe {
                (
                    std::slice::from_raw_parts_mut(
                        (k_cache.0 as *mut u8).add(cell * kw * 2),
                        kw * 2,
                    ),
                    std::slice::from_raw_parts_mut(
                        (v_cache.0 as *mut u8).add(cell * vw * 2),
                        vw * 2,
                    ),
                )
            };
            let row = i * kv_dim..(i + 1) * kv_dim;
            // Rotated as llama.cpp rotates them before they enter its cache.
            let store = |x: &[f32], rot: Option<usize>, t, out: &mut [u8]| {
                let q = |x: &[f32], out| crate::blocks::quantize(t, x, out);
                match rot {
                    Some(n) => {
                        let mut x = x.to_vec();
                        crate::kv_types::hadamard(&mut x, n);
                        q(&x, out)
                    }
                    None => q(x, out),
                }
                .expect("cache types quantise")
            };
            store(&k[row.clone()], k_rot, types.k, kr);
            store(&v[row], v_rot, types.v, vr);
        };
        let threads = self.pool.threads();
        if threads == 1 || tokens * kv_dim < 8192 {
            (0..tokens).for_each(&work);
        } else {
            self.pool
                .run(&|t| split(tokens, threads, t, 1).for_each(&work));
        }
    }

    /// Attention over a cache of rows (see attention_rows), jobs handed out
    /// to the pool's threads as they free up: with quantised values, one job
    /// a KV head (and block of tokens) that dequantises them once; with f16
    /// values, one job a query head of a token.
    #[allow(clippy::too_many_arguments)]
    fn attention_rows(
        &self,
        kv: &CpuKv,
        q: &[f32],
        pos0: usize,
        t: usize,
        a: &Attention,
        n_kv: usize,
        att: &mut [f32],
    ) {
        use super::attention_rows::{
            attend, dequantize_values, Kernels, RowsCache, Scratch, Visibility,
        };
        let cache = RowsCache {
            k: u16_bytes(&kv.k),
            v: u16_bytes(&kv.v),
            types: kv.types,
            cells: kv.cells,
            kv_dim: kv.kv_dim,
            n_kv,
        };
        let (hd, n_head) = (a.head_dim, a.n_head);
        let q_dim = n_head * hd;
        let group = n_head / a.n_head_kv;
        let kern = Kernels::new(kv.types, hd, self.isa);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let att_ptr = SyncPtr(att.as_mut_ptr());
        let isa = self.isa;
        let last = pos0 + t - 1;
        let seen = |ti: usize| Visibility {
            pos: pos0 + ti,
            last,
            window: a.window,
        };
        // SAFETY (for both paths): each (token, head) is one job's, run
        // once; `att` outlives the pool run.
        let att_ptr = &att_ptr;
        let out = |ti: usize, h: usize| unsafe {
            std::slice::from_raw_parts_mut(att_ptr.0.add(ti * q_dim + h * hd), hd)
        };
        if kv.types.v != crate::GgmlType::F16 {
            // Each job dequantises its KV head's values once for all its
            // queries: the group's query heads, and a batch's tokens.
            let jobs = super::attention_batch::jobs(a.n_head_kv, t, self.pool.threads());
            self.pool.run(&|_| {
                let (mut sc, mut values) = (Scratch::default(), Vec::new());
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    dequantize_values(&cache, job.g, hd, &mut values);
                    for ti in job.tokens.clone() {
                        for h in job.g * group..(job.g + 1) * group {
                            let qh = &q[ti * q_dim + h * hd..][..hd];
                            let (s, o) = (seen(ti), out(ti, h));
                            attend(
                                isa,
                                &cache,
                                &kern,
                                a,
                                job.g,
                                qh,
                                &s,
                                Some(&values),
                                &mut sc,
                                o,
                            );
                        }
                    }
                }
            });
            return;
        }
        self.pool.run(&|_| {
            let mut sc = Scratch::default();
            loop {
                let job = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if job >= t * n_head {
                    break;
                }
                let (ti, h) = (job / n_head, job % n_head);
                let qh = &q[ti * q_dim + h * hd..][..hd];
                let (s, o) = (seen(ti), out(ti, h));
                attend(isa, &cache, &kern, a, h / group, qh, &s, None, &mut sc, o);
            }
        });
    }

    /// A batch's attention (see attention_batch), its jobs spread over the pool.
    #[allow(clippy::too_many_arguments)]
    fn attention_batch(
        &self,
        kv: &CpuKv,
        q: &[f32],
        pos0: usize,
        t: usize,
        a: &Attention,
        n_kv: usize,
        att: &mut [f32],
    ) {
        use super::attention_batch::{jobs, run, Cache};
        let cache = Cache {
            k: &kv.k,
            v: &kv.v,
            cells: kv.cells,
            kv_dim: kv.kv_dim,
            n_kv,
        };
        let threads = self.pool.threads();
        let jobs = jobs(a.n_head_kv, t, threads);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (hd, q_dim) = (a.head_dim, a.n_head * a.head_dim);
        let att_ptr = SyncPtr(att.as_mut_ptr());
        let isa = self.isa;
        self.pool.run(&|_| {
            let att_ptr = &att_ptr;
            let mut put = |ti: usize, h: usize, o: &[f32]| {
                // SAFETY: each (token, head) belongs to one job, run once;
                // `att` outlives the pool run.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(att_ptr.0.add(ti * q_dim + h * hd), hd)
                };
                dst.copy_from_slice(o);
            };
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                run(isa, &cache, q, pos0, t, a, job, &mut put);
            }
        });
    }

    /// `t` rows of `x` quantised for `m`'s dot kernels into `sc.act`, rows
    /// spread over the pool; returns the bytes of one row.
    fn quantize_rows(&self, sc: &mut CpuScratch, m: &CpuMat, x: &[f32], t: usize) -> usize {
        let cols = m.host.cols;
        let ab = m
            .kernels
            .act
            .row_bytes(cols)
            .expect("kernels exist for uploaded weights");
        let quantize = m.kernels.quantize;
        let order = m.host.input_order.as_deref();
        resize(&mut sc.act, t * ab);
        self.par_pieces(&mut sc.act[..t * ab], ab, 2 * ab, &|at, rows| {
            let mut gathered = vec![0f32; if order.is_some() { cols } else { 0 }];
            for (k, ar) in rows.chunks_exact_mut(ab).enumerate() {
                let r = at / ab + k;
                let mut x = &x[r * cols..(r + 1) * cols];
                if let Some(order) = order {
                    for (g, &i) in gathered.iter_mut().zip(order) {
                        *g = x[i as usize];
                    }
                    x = &gathered;
                }
                quantize(x, ar);
            }
        });
        ab
    }

    /// `out[t][r] = W[r] · act[t]` over activations quantised for `m`
    /// (`ab` bytes a row), rows of `W` spread over the pool.
    fn product(&self, act: &[u8], ab: usize, m: &CpuMat, t: usize, out: &mut Vec<f32>) {
        let rows = m.host.rows;
        resize(out, t * rows);
        if let Some(il) = &m.interleaved {
            return self.product_interleaved(act, ab, il, rows, t, out);
        }
        let data = m.host.bytes();
        let out_ptr = SyncPtr(out.as_mut_ptr());
        let threads = self.pool.threads();
        let (dot, dot4) = (m.kernels.dot, m.kernels.dot4);
        let rb = m.host.row_bytes;
        // Tiles of 16 weight rows by TOKEN_TILE tokens, so that both stay
        // in the first-level cache while every pair is dotted.
        let pieces = Pieces::new(rows, 16, threads);
        self.pool.run(&|i| {
            let out_ptr = &out_ptr;
            // SAFETY: each (ti, r) is written by exactly one thread, and
            // `out` outlives the pool run.
            let put = |ti: usize, r: usize, v: f32| unsafe { *out_ptr.0.add(ti * rows + r) = v };
            while let Some(block) = pieces.next(i) {
                for t0 in (0..t).step_by(TOKEN_TILE) {
                    let t1 = (t0 + TOKEN_TILE).min(t);
                    for r in block.clone() {
                        let w = &data[r * rb..(r + 1) * rb];
                        let mut ti = t0;
                        // Four tokens per pass over the weight row, where a kernel allows.
                        if let Some(dot4) = dot4 {
                            while ti + 4 <= t1 {
                                let a: [&[u8]; 4] =
                                    std::array::from_fn(|k| &act[(ti + k) * ab..(ti + k + 1) * ab]);
                                for (k, v) in dot4(w, a).into_iter().enumerate() {
                                    put(ti + k, r, v);
                                }
                                ti += 4;
                            }
                        }
                        for tj in ti..t1 {
                            put(tj, r, dot(w, &act[tj * ab..(tj + 1) * ab]));
                        }
                    }
                }
            }
        });
    }

    /// `product` over weights regrouped eight rows at a time: four tokens
    /// at once where there are four, the rest one at a time (ggml's
    /// one-token order).
    fn product_interleaved(
        &self,
        act: &[u8],
        ab: usize,
        il: &Interleaved,
        rows: usize,
        t: usize,
        out: &mut [f32],
    ) {
        use super::interleaved::ROWS;
        let nb = ab / il.kernels.act_block;
        let gb = nb * il.kernels.column;
        // Side data, made once a product: `four`'s for the tokens taken four
        // at a time, `one`'s for those past the last four.
        let side_data = |side: super::interleaved::Side, tokens: std::ops::Range<usize>| {
            let per = nb * side.per_block();
            let mut data = vec![0i32; tokens.len() * per];
            let acts = act[tokens.start * ab..tokens.end * ab].chunks_exact(ab);
            for (s, a) in data.chunks_exact_mut(per.max(1)).zip(acts) {
                side.fill(a, s);
            }
            (data, per)
        };
        let fours = if il.kernels.four.is_some() {
            t / 4 * 4
        } else {
            0
        };
        let (sums, per) = side_data(il.kernels.side, 0..fours);
        let (one_sums, one_per) = side_data(il.kernels.one_side, fours..t);
        let out_ptr = SyncPtr(out.as_mut_ptr());
        let threads = self.pool.threads();
        let k = il.kernels;
        // A few groups' weights (about 48 KiB) stay near while four
        // tokens' activations, loaded once, serve each of them.
        let chunk = (48 * 1024 / gb).clamp(1, 8);
        let pieces = Pieces::new(rows / ROWS, chunk, threads);
        self.pool.run(&|i| {
            let out_ptr = &out_ptr;
            let put = |ti: usize, g: usize, v: [f32; ROWS]| {
                // SAFETY: each (ti, group) is written by exactly one
                // thread, and `out` outlives the pool run.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        v.as_ptr(),
                        out_ptr.0.add(ti * rows + g * ROWS),
                        ROWS,
                    )
                }
            };
            while let Some(groups) = pieces.next(i) {
                let mut ti = 0;
                while let Some(four) = k.four.filter(|_| ti + 4 <= t) {
                    let a = std::array::from_fn(|k| &act[(ti + k) * ab..(ti + k + 1) * ab]);
                    let s = std::array::from_fn(|k| {
                        sums.get((ti + k) * per..(ti + k + 1) * per).unwrap_or(&[])
                    });
                    for g in groups.clone() {
                        let w = &il.bytes[g * gb..(g + 1) * gb];
                        for (k, v) in four(w, a, s).into_iter().enumerate() {
                            put(ti + k, g, v);
                        }
                    }
                    ti += 4;
                }
                for tj in ti..t {
                    let side = &one_sums[(tj - fours) * one_per..(tj - fours + 1) * one_per];
                    for g in groups.clone() {
                        let w = &il.bytes[g * gb..(g + 1) * gb];
                        put(tj, g, (k.one)(w, &act[tj * ab..(tj + 1) * ab], side));
                    }
                }
            }
        });
    }

    /// The offload device, for a batch of `tokens` rows it takes.
    fn offload_for(&self, tokens: usize) -> Option<&dyn MatmulOffload> {
        self.offload.as_deref().filter(|d| tokens >= d.min_tokens())
    }

    /// A copy of host bytes spread over the pool (one thread copies well
    /// below the memory's and the bus's speed).
    pub fn host_copy(&self, src: &[u8], dst: &mut [u8]) {
        self.par_pieces(dst, 4096, 1 << 20, &|at, d| {
            d.copy_from_slice(&src[at..at + d.len()])
        });
    }

    /// Runs `f(start, piece)` over `data` cut in pieces that start at
    /// multiples of `align`, one a thread, when `data` holds at least
    /// `min_len` values (less is done here: waking the pool costs more).
    fn par_pieces<T: Send>(
        &self,
        data: &mut [T],
        align: usize,
        min_len: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let threads = self.pool.threads();
        let n = data.len();
        if threads == 1 || n < min_len {
            return f(0, data);
        }
        let base = SyncPtr(data.as_mut_ptr() as *mut f32);
        self.pool.run(&|i| {
            let base = &base;
            let r = split(n, threads, i, align);
            if !r.is_empty() {
                // SAFETY: split's ranges are disjoint and inside `data`,
                // which outlives the pool run.
                let piece = unsafe {
                    std::slice::from_raw_parts_mut((base.0 as *mut T).add(r.start), r.len())
                };
                f(r.start, piece);
            }
        });
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Mat = CpuMat;
    type Vector = Vec<f32>;
    type Kv = CpuKv;
    type Scratch = CpuScratch;

    fn name(&self) -> String {
        "CPU".to_string()
    }

    /// Grows on first use instead: a one-token decode never touches the room
    /// a full prompt batch would need.
    fn buf(&self, _len: usize) -> Result<Vec<f32>, BackendError> {
        Ok(Vec::new())
    }

    fn scratch(&self) -> Result<CpuScratch, BackendError> {
        Ok(CpuScratch::default())
    }

    fn upload_mat(&self, w: &HostMat) -> Result<CpuMat, BackendError> {
        let kernels = super::kernels_for_format(w.format, self.isa)
            .map_err(|e| BackendError(format!("tensor '{}': {e}", w.name)))?;
        // A GPU that takes prompt batches reads the rows as stored: no copy then.
        let interleaved = match w.format {
            WeightFormat::Ggml(t) if self.offload.is_none() && repack() => {
                super::interleaved::kernels(t, self.isa, w.rows).map(|kernels| {
                    let nb = w.cols / super::interleaved::block_elems(t);
                    let src = w.bytes();
                    // The mapped rows go a few MiB at a time as their copy
                    // is made: a tied output's copy (Gemma 3's 178 MB Q8_0
                    // embedding) doubled in memory was the run's peak.
                    let mut released = 0;
                    let mut release = |done: usize| {
                        if w.mapped && (done - released >= RELEASE_STEP || done == src.len()) {
                            released += release_pages(&src[released..done]);
                        }
                    };
                    let mut bytes = vec![0u8; src.len()];
                    huge_pages(&mut bytes);
                    super::interleaved::pack_streaming(
                        t,
                        src,
                        w.rows,
                        nb,
                        &mut bytes,
                        &mut release,
                    );
                    Interleaved { bytes, kernels }
                })
            }
            _ => None,
        };
        let host = match interleaved {
            None if self.offload.is_none()
                && w.mapped
                && w.len >= 2 * HUGE_PAGE
                && huge_pages_on() =>
            {
                copy_to_huge_pages(w)
            }
            _ => w.clone(),
        };
        Ok(CpuMat {
            host,
            kernels,
            interleaved,
        })
    }

    fn upload_vector(&self, v: &[f32]) -> Result<Vec<f32>, BackendError> {
        Ok(v.to_vec())
    }

    fn kv(
        &self,
        cells: usize,
        kv_dim: usize,
        head_dim: usize,
        types: KvTypes,
    ) -> Result<CpuKv, BackendError> {
        for t in [types.k, types.v] {
            if !kv_dim.is_multiple_of(t.block_size() as usize) {
                return Err(BackendError(format!(
                    "a KV cache of {} needs rows that are a multiple of {} values, not {kv_dim}",
                    crate::kv_types::cache_type_name(t),
                    t.block_size()
                )));
            }
        }
        let (kw, vw) = types.row_words(kv_dim);
        Ok(CpuKv {
            cells,
            kv_dim,
            head_dim,
            types,
            k: vec![0; cells * kw],
            v: vec![0; cells * vw],
        })
    }

    fn kv_bytes(cells: usize, kv_dim: usize, types: KvTypes) -> usize {
        cells * types.cell_bytes(kv_dim)
    }

    fn kv_allocated(&self, kv: &CpuKv) -> usize {
        (kv.k.capacity() + kv.v.capacity()) * std::mem::size_of::<u16>()
    }

    fn write(&self, src: &[f32], dst: &mut Vec<f32>) {
        resize(dst, src.len());
        dst.copy_from_slice(src);
    }

    fn write_with(&self, n: usize, fill: &mut dyn FnMut(&mut [f32]), dst: &mut Vec<f32>) {
        // Straight into the buffer: no vector made and copied a token step.
        resize(dst, n);
        fill(dst);
    }

    fn read(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<(), BackendError> {
        dst.copy_from_slice(&src[..dst.len()]);
        Ok(())
    }

    fn matmul(&self, sc: &mut CpuScratch, m: &CpuMat, x: &Vec<f32>, t: usize, out: &mut Vec<f32>) {
        let _p = crate::profile::scope("cpu.matmul");
        let (rows, cols) = (m.host.rows, m.host.cols);
        let x = &x[..t * cols];
        resize(out, t * rows);
        if let Some(dev) = self.offload_for(t) {
            let copy = |s: &[u8], d: &mut [u8]| self.host_copy(s, d);
            if dev
                .matmuls_host(x, t, &mut [(&m.host, &mut out[..])], &copy)
                .is_ok()
            {
                return;
            }
        }
        let ab = self.quantize_rows(sc, m, x, t);
        self.product(&sc.act, ab, m, t, out);
    }

    fn matmuls(
        &self,
        sc: &mut CpuScratch,
        x: &Vec<f32>,
        t: usize,
        products: &mut [(&CpuMat, &mut Vec<f32>)],
    ) {
        if let Some(dev) = self.offload_for(t) {
            let _p = crate::profile::scope("cpu.matmul");
            let cols = products[0].0.host.cols;
            let mut outs: Vec<(&HostMat, &mut [f32])> = products
                .iter_mut()
                .map(|(m, out)| {
                    resize(out, t * m.host.rows);
                    (&m.host, &mut out[..])
                })
                .collect();
            let copy = |s: &[u8], d: &mut [u8]| self.host_copy(s, d);
            if dev
                .matmuls_host(&x[..t * cols], t, &mut outs, &copy)
                .is_ok()
            {
                return;
            }
        }
        // One quantisation of x for products whose kernels take the same
        // activation type (q, k and v; gate and up, mostly).
        let act_type = |m: &CpuMat| m.kernels.act;
        let first = act_type(products[0].0);
        let order = |m: &CpuMat| m.host.input_order.as_ref().map(|o| o.as_ptr());
        if products.len() > 1
            && products
                .iter()
                .all(|(m, _)| act_type(m) == first && order(m) == order(products[0].0))
        {
            let _p = crate::profile::scope("cpu.matmul");
            let ab = self.quantize_rows(sc, products[0].0, &x[..t * products[0].0.host.cols], t);
            for (m, out) in products.iter_mut() {
                self.product(&sc.act, ab, m, t, out);
            }
            return;
        }
        for (w, out) in products.iter_mut() {
            self.matmul(sc, w, x, t, out);
        }
    }

    fn matmul_glu(
        &self,
        sc: &mut CpuScratch,
        act: Glu,
        w_gate: &CpuMat,
        w_up: &CpuMat,
        x: &Vec<f32>,
        t: usize,
        width: usize,
        gate: &mut Vec<f32>,
        up: &mut Vec<f32>,
    ) {
        if let Some(dev) = self.offload_for(t) {
            let _p = crate::profile::scope("cpu.matmul");
            resize(gate, t * width);
            let copy = |s: &[u8], d: &mut [u8]| self.host_copy(s, d);
            let x = &x[..t * w_gate.host.cols];
            if dev
                .matmul_glu_host(act, &w_gate.host, &w_up.host, x, t, gate, &copy)
                .is_ok()
            {
                return;
            }
        }
        self.matmuls(sc, x, t, &mut [(w_gate, &mut *gate), (w_up, &mut *up)]);
        self.glu(act, gate, up, t * width);
    }

    fn rms_norm(&self, src: &Vec<f32>, w: &Vec<f32>, eps: f32, rows: usize, dst: &mut Vec<f32>) {
        let n = rows * w.len();
        resize(dst, n);
        dst.copy_from_slice(&src[..n]);
        self.rms_norm_in_place(dst, w, eps, rows);
    }

    fn rms_norm_in_place(&self, x: &mut Vec<f32>, w: &Vec<f32>, eps: f32, rows: usize) {
        let _p = crate::profile::scope("cpu.rms_norm_in_place");
        let e = w.len();
        self.par_pieces(&mut x[..rows * e], e, 2 * e, &|_, rows| {
            rows.chunks_exact_mut(e)
                .for_each(|r| ops::rms_norm(r, w, eps))
        });
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize) {
        let _p = crate::profile::scope("cpu.add_bias");
        for row in x[..rows * bias.len()].chunks_exact_mut(bias.len()) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) {
        let _p = crate::profile::scope("cpu.add");
        self.par_pieces(&mut x[..len], 64, PAR_MIN, &|at, x| {
            x.iter_mut().zip(&y[at..]).for_each(|(x, d)| *x += d)
        });
    }

    fn scale(&self, x: &mut Vec<f32>, s: f32, len: usize) {
        let _p = crate::profile::scope("cpu.scale");
        x[..len].iter_mut().for_each(|v| *v *= s);
    }

    fn copy_cols(
        &self,
        src: &Vec<f32>,
        src_width: usize,
        col0: usize,
        width: usize,
        rows: usize,
        dst: &mut Vec<f32>,
    ) {
        let _p = crate::profile::scope("cpu.copy_cols");
        resize(dst, rows * width);
        for (d, s) in dst
            .chunks_exact_mut(width)
            .zip(src[..rows * src_width].chunks_exact(src_width))
        {
            d.copy_from_slice(&s[col0..col0 + width]);
        }
    }

    fn copy_rows(
        &self,
        src: &Vec<f32>,
        row0: usize,
        rows: usize,
        width: usize,
        dst: &mut Vec<f32>,
    ) {
        let _p = crate::profile::scope("cpu.copy_rows");
        resize(dst, rows * width);
        dst.copy_from_slice(&src[row0 * width..(row0 + rows) * width]);
    }

    fn rope(
        &self,
        sc: &mut CpuScratch,
        x: &mut Vec<f32>,
        tokens: usize,
        n_heads: usize,
        head_dim: usize,
        rope: &Rope,
        freq_factors: Option<&Vec<f32>>,
        pos0: usize,
    ) {
        let _p = crate::profile::scope("cpu.rope");
        let width = n_heads * head_dim;
        if tokens == 1 {
            resize(&mut sc.rope, head_dim);
            rope.cache(pos0 as i64, freq_factors.map(|f| &f[..]), &mut sc.rope);
            x[..width]
                .chunks_exact_mut(head_dim)
                .for_each(|h| rope.apply(h, &sc.rope));
            return;
        }
        self.par_pieces(&mut x[..tokens * width], width, 2 * width, &|at, rows| {
            let mut cache = vec![0f32; head_dim];
            for (i, row) in rows.chunks_exact_mut(width).enumerate() {
                let pos = pos0 + at / width + i;
                rope.cache(pos as i64, freq_factors.map(|f| &f[..]), &mut cache);
                row.chunks_exact_mut(head_dim)
                    .for_each(|h| rope.apply(h, &cache));
            }
        });
    }

    fn kv_store(
        &self,
        _sc: &mut CpuScratch,
        kv: &mut CpuKv,
        k: &Vec<f32>,
        v: &Vec<f32>,
        pos0: usize,
        tokens: usize,
    ) {
        let _p = crate::profile::scope("cpu.kv_store");
        if !kv.types.is_f16() {
            return self.kv_store_rows(kv, k, v, pos0, tokens);
        }
        let (kv_dim, cells) = (kv.kv_dim, kv.cells);
        // Split by dimension: each thread writes its columns of the key rows
        // and its rows of the transposed values.
        let k_cache = SyncPtr(kv.k.as_mut_ptr() as *mut f32);
        let v_cache = SyncPtr(kv.v.as_mut_ptr() as *mut f32);
        let work = |dims: std::ops::Range<usize>| {
            let (k_cache, v_cache) = (&k_cache, &v_cache);
            let (kc, vc) = (k_cache.0 as *mut u16, v_cache.0 as *mut u16);
            for i in 0..tokens {
                let cell = (pos0 + i) % cells;
                for d in dims.clone() {
                    // SAFETY: cell < cells and d < kv_dim: inside both caches;
                    // threads write disjoint dimensions.
                    unsafe { *kc.add(cell * kv_dim + d) = f32_to_f16(k[i * kv_dim + d]) };
                }
            }
            // Token by token: reads run along a row of `v`, and the writes,
            // one a dimension, land in the same cache lines (one a
            // dimension's row) for neighbouring cells.
            for i in 0..tokens {
                let cell = (pos0 + i) % cells;
                for d in dims.clone() {
                    // SAFETY: as above.
                    unsafe { *vc.add(d * cells + cell) = f32_to_f16(v[i * kv_dim + d]) };
                }
            }
        };
        self.over_dims(kv_dim, tokens * kv_dim, 1024, &work);
    }

    /// Mirrors llama.cpp without flash attention, to the bit on this CPU's
    /// instruction set: Q as f16 dotted with each f16 key cell, scores over
    /// llama.cpp's padded cell count (masked cells -inf), its softmax, then
    /// probabilities as f16 dotted with each V row.
    fn attention(
        &self,
        sc: &mut CpuScratch,
        kv: &CpuKv,
        q: &Vec<f32>,
        pos0: usize,
        t: usize,
        a: &Attention,
        att: &mut Vec<f32>,
    ) {
        let _p = crate::profile::scope("cpu.attention");
        let hd = a.head_dim;
        let (q_dim, kv_dim) = (a.n_head * hd, a.n_head_kv * hd);
        resize(att, t * q_dim);
        let group = a.n_head / a.n_head_kv;
        let kq_scale = a.kq_scale;
        let window = a.window;
        let isa = self.isa;
        let dot16 = self.dot16;
        let last = pos0 + t - 1;
        // llama.cpp attends over all cells up to the used ones, padded to 256.
        let n_kv = kv.cells.min((last + 1).next_multiple_of(256).max(256));
        let cells = kv.cells;
        let cell_pos = |c: usize| -> Option<usize> {
            let back = (last as isize - c as isize).rem_euclid(cells as isize) as usize;
            last.checked_sub(back)
        };
        let threads = self.pool.threads();
        if !kv.types.is_f16() {
            return self.attention_rows(kv, q, pos0, t, a, n_kv, att);
        }
        if t > 1 {
            return self.attention_batch(kv, q, pos0, t, a, n_kv, att);
        }
        resize(&mut sc.scores, threads * n_kv);
        resize(&mut sc.half, threads * (n_kv + hd));
        let scores_ptr = SyncPtr(sc.scores.as_mut_ptr());
        let half_ptr = SyncPtr(sc.half.as_mut_ptr() as *mut f32);
        let att_ptr = SyncPtr(att.as_mut_ptr());
        let (k_bytes, v_bytes) = (u16_bytes(&kv.k), u16_bytes(&kv.v));
        let work = t * a.n_head;
        let n_head = a.n_head;
        self.pool.run(&|i| {
            let (scores_ptr, half_ptr, att_ptr) = (&scores_ptr, &half_ptr, &att_ptr);
            // SAFETY: each thread uses its own slices of the scratch buffers.
            let sc = unsafe { std::slice::from_raw_parts_mut(scores_ptr.0.add(i * n_kv), n_kv) };
            let hb = unsafe {
                std::slice::from_raw_parts_mut(
                    (half_ptr.0 as *mut u16).add(i * (n_kv + hd)),
                    n_kv + hd,
                )
            };
            let (p16, q16) = hb.split_at_mut(n_kv);
            // Interleaved: later tokens attend over more cells, so a
            // contiguous split would leave the first thread idle.
            for job in (i..work).step_by(threads) {
                let (ti, h) = (job / n_head, job % n_head);
                let g = h / group;
                let pos = pos0 + ti;
                let qh = &q[ti * q_dim + h * hd..][..hd];
                for (d, &v) in q16.iter_mut().zip(qh) {
                    *d = f32_to_f16(v);
                }
                let qb = u16_bytes(q16);
                // Cells from `hi` on are masked (unused, or later than this
                // token) while the cache has not wrapped: their scores are
                // -inf and their probabilities 0, which add nothing to the
                // value dots. `hi` is a multiple of every dot's step, so the
                // dots keep their lanes and have no tail.
                let hi = if last < cells {
                    (pos + 1).next_multiple_of(64).min(n_kv)
                } else {
                    n_kv
                };
                sc[hi..].fill(f32::NEG_INFINITY);
                for (c, score) in sc[..hi].iter_mut().enumerate() {
                    let visible =
                        cell_pos(c).is_some_and(|p| p <= pos && window.is_none_or(|w| pos - p < w));
                    *score = if visible {
                        let k = &k_bytes[2 * (c * kv_dim + g * hd)..][..2 * hd];
                        dot16(qb, k) * kq_scale
                    } else {
                        f32::NEG_INFINITY
                    };
                }
                ops::softmax_isa(isa, sc);
                for (p, &v) in p16.iter_mut().zip(sc.iter()) {
                    *p = f32_to_f16(v);
                }
                let pb = u16_bytes(p16);
                // SAFETY: each (ti, h) head slice is written by one thread.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(att_ptr.0.add(ti * q_dim + h * hd), hd)
                };
                for (d, o) in out.iter_mut().enumerate() {
                    let row = (g * hd + d) * cells;
                    *o = dot16(&pb[..2 * hi], &v_bytes[2 * row..2 * (row + hi)]);
                }
            }
        });
    }

    fn glu(&self, act: Glu, gate: &mut Vec<f32>, up: &Vec<f32>, len: usize) {
        let _p = crate::profile::scope("cpu.glu");
        // Pieces start at multiples of the SIMD width, so every value takes
        // the same (vector or tail) path as in one pass.
        let isa = self.isa;
        self.par_pieces(&mut gate[..len], 64, PAR_MIN, &|at, g| {
            let u = &up[at..at + g.len()];
            match act {
                Glu::SwiGlu => ops::swiglu(isa, g, u),
                Glu::GeGlu => ops::geglu(isa, g, u),
            }
        });
    }
}

fn u16_bytes(v: &[u16]) -> &[u8] {
    // SAFETY: u16 has no invalid bit patterns; the byte view has the same extent.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) }
}

/// Tokens a matmul tile takes (a multiple of 4, the four-token kernels'
/// step): their quantised activations stay in the first-level cache.
const TOKEN_TILE: usize = 32;

/// `LLM_REPACK=0` keeps every weight as stored (as llama.cpp's
/// `--no-repack`), to compare the two.
fn repack() -> bool {
    std::env::var_os("LLM_REPACK").is_none_or(|v| v != "0")
}

/// `w`'s mapped bytes copied into memory backed by 2 MiB pages, the mapped
/// pages let go as the copy grows (one copy in memory at a time): decode
/// streams every weight once a token, and read from 4 KiB pages it reached
/// 22 GB/s on two cores of the project's machine against 34 GB/s from
/// 2 MiB pages (`tests/large_models.rs`'s `read_bandwidth`).
fn copy_to_huge_pages(w: &HostMat) -> HostMat {
    let src = w.bytes();
    let mut bytes = vec![0u8; src.len()];
    huge_pages(&mut bytes);
    let mut released = 0;
    for (i, (d, s)) in bytes
        .chunks_mut(RELEASE_STEP)
        .zip(src.chunks(RELEASE_STEP))
        .enumerate()
    {
        d.copy_from_slice(s);
        let done = (i * RELEASE_STEP + s.len()).min(src.len());
        released += release_pages(&src[released..done]);
    }
    let owner = Arc::new(bytes);
    HostMat {
        ptr: owner.as_ptr(),
        len: owner.len(),
        owner,
        mapped: false,
        ..w.clone()
    }
}

/// Element-wise work below this many values stays on the calling thread.
const PAR_MIN: usize = 8192;

struct SyncPtr(*mut f32);
// SAFETY: used only for disjoint writes coordinated by the pool's split.
unsafe impl Sync for SyncPtr {}

/// Sets the length exactly: ops see buffers of the current batch's size.
fn resize<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() != n {
        v.resize(n, T::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend_check::Rng;

    /// Cells leave a cache as untransposed rows and come back to the same
    /// bits, wherever in the ring they are, on one thread or several.
    #[test]
    fn kv_cells_cross_as_rows_and_back() {
        let (cells, kv_dim) = (300, 520); // enough for the threaded path
        let mut rng = Rng::new(11);
        let (pos0, t) = (250, 120); // wraps: cells 250..300, then 0..70
        let k = rng.vec(t * kv_dim, 1.0);
        let v = rng.vec(t * kv_dim, 1.0);
        for threads in [1, 3] {
            let b = CpuBackend::new(threads, Isa::Scalar);
            let mut sc = b.scratch().unwrap();
            let mut kv = b.kv(cells, kv_dim, 64, KvTypes::F16).unwrap();
            b.kv_store(&mut sc, &mut kv, &k, &v, pos0, t);
            let (mut kr, mut vr) = (vec![0u16; t * kv_dim], vec![0u16; t * kv_dim]);
            let tail = (cells - pos0) * kv_dim;
            b.kv_cells_out(&kv, pos0, &mut kr[..tail], &mut vr[..tail]);
            b.kv_cells_out(&kv, 0, &mut kr[tail..], &mut vr[tail..]);
            let half = |x: &[f32]| x.iter().map(|&f| f32_to_f16(f)).collect::<Vec<u16>>();
            assert_eq!(kr, half(&k));
            assert_eq!(vr, half(&v));
            let mut back = b.kv(cells, kv_dim, 64, KvTypes::F16).unwrap();
            b.kv_cells_in(&mut back, pos0, &kr[..tail], &vr[..tail]);
            b.kv_cells_in(&mut back, 0, &kr[tail..], &vr[tail..]);
            assert!(back.k == kv.k && back.v == kv.v);
        }
    }

    /// A prompt's attention in one batch equals, to the bit, the same
    /// queries one token at a time (the path that mirrors llama.cpp), on
    /// every ISA this CPU has, f16 and quantised caches, with and without a
    /// sliding window.
    #[test]
    fn batched_attention_is_the_one_token_path() {
        let (n_head, n_head_kv, hd) = (4, 2, 64);
        let (kv_dim, q_dim) = (n_head_kv * hd, n_head * hd);
        let (prefix, t) = (5, 90);
        let mut rng = Rng::new(7);
        let k = rng.vec((prefix + t) * kv_dim, 1.0);
        let v = rng.vec((prefix + t) * kv_dim, 1.0);
        let q = rng.vec(t * q_dim, 1.0);
        use crate::GgmlType::*;
        let types = [(F16, F16), (Q8_0, Q4_0), (Q8_0, F16), (BF16, Q5_1)];
        for (isa, (kt, vt)) in Isa::available()
            .into_iter()
            .flat_map(|i| types.map(|t| (i, t)))
        {
            let b = CpuBackend::new(2, isa);
            let mut sc = b.scratch().unwrap();
            let types = KvTypes { k: kt, v: vt };
            let mut kv = b.kv(300, kv_dim, hd, types).unwrap();
            b.kv_store(&mut sc, &mut kv, &k, &v, 0, prefix + t);
            for window in [None, Some(16)] {
                let a = Attention {
                    n_head,
                    n_head_kv,
                    head_dim: hd,
                    window,
                    kq_scale: 0.125,
                };
                let mut batch = Vec::new();
                b.attention(&mut sc, &kv, &q, prefix, t, &a, &mut batch);
                for i in 0..t {
                    let mut one = Vec::new();
                    let qi = q[i * q_dim..(i + 1) * q_dim].to_vec();
                    b.attention(&mut sc, &kv, &qi, prefix + i, 1, &a, &mut one);
                    let got = &batch[i * q_dim..(i + 1) * q_dim];
                    assert!(
                        got.iter()
                            .zip(&one)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{isa:?} {types} window {window:?}: token {i} differs"
                    );
                }
            }
        }
    }
}
