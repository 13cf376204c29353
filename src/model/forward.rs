//! The forward pass: one code path for every architecture, a straight line of
//! kernel calls over a batch of tokens, reading like the math.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ggml::cpu::ops::{self, Rope};
use ggml::cpu::pool::{split, ThreadPool};
use ggml::cpu::Isa;
use ggml::float16::f32_to_f16;

use crate::format::gguf::GgufFile;
use crate::model::arch::{Activation, Arch, RopeStyle};
use crate::model::footprint::kv_cells;
use crate::model::hparams::HyperParams;
use crate::model::weights::{self, Mat, Shape, Weights};

/// Most tokens processed in one batch; longer prompts go in several.
pub const MAX_BATCH: usize = 512;

/// Per-layer attention settings.
#[derive(Clone, Copy, Debug)]
pub struct LayerAttn {
    pub rope: Rope,
    /// Sliding window in tokens, for local layers.
    pub window: Option<usize>,
}

pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub shape: Shape,
    pub eps: f32,
    pub layers: Vec<LayerAttn>,
    /// Multiplies Q before attention (gemma3) ...
    pub q_scale: Option<f32>,
    /// ... or the scores (everyone else).
    pub kq_scale: f32,
    pub embd_scale: Option<f32>,
    pub n_ctx_train: usize,
    /// The context the model was first trained at (before rope scaling).
    pub n_ctx_orig: usize,
}

pub struct Model {
    pub config: Config,
    pub weights: Weights,
    pool: ThreadPool,
    isa: Isa,
    /// The f16 dot product of this ISA (attention's scores and values).
    dot16: ggml::cpu::DotFn,
}

/// A KV cache of f16 values; sliding-window layers keep a ring of cells.
pub struct KvCache {
    pub n_ctx: usize,
    layers: Vec<KvLayer>,
}

struct KvLayer {
    cells: usize,
    /// The sliding window of this layer, if it has one.
    window: Option<usize>,
    k: Vec<u16>,
    v: Vec<u16>,
}

/// Buffers for one batch, kept between calls so decoding allocates nothing.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    xb: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<u8>,
    scores: Vec<f32>,
    half: Vec<u16>,
    rope: Vec<f32>,
}

/// A debugging hook: (name as in llama.cpp's graph, layer, values).
pub type Trace = Box<dyn FnMut(&str, usize, &[f32]) + Send>;

/// A sequence being decoded: its cache and how far it has got.
pub struct State {
    pub kv: KvCache,
    pub n_past: usize,
    scratch: Scratch,
    /// Logits of the last token of the last batch (or of every token, when asked).
    pub logits: Vec<f32>,
    /// Called with (name, layer, values) at points named as in llama.cpp's
    /// graph, to find where two implementations part. None in normal runs.
    pub trace: Option<Trace>,
}

impl State {
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

impl Model {
    pub fn load(path: &Path, threads: usize) -> Result<Model> {
        Model::load_with_isa(path, threads, ggml::cpu::isa())
    }

    /// Loads with the kernels of one instruction set (tests run each one).
    pub fn load_with_isa(path: &Path, threads: usize, isa: Isa) -> Result<Model> {
        let file = Arc::new(GgufFile::open(path)?);
        let hp = HyperParams::from_metadata(file.metadata()).map_err(|e| e.in_file(path))?;
        let arch = Arch::from_name(&hp.architecture).with_context(|| path.display().to_string())?;
        let md = file.metadata();
        let key = |k: &str| format!("{}.{k}", hp.architecture);
        let need = |v: Option<u64>, what: &str| -> Result<usize> {
            v.map(|v| v as usize)
                .with_context(|| format!("{}: metadata lacks {}", path.display(), key(what)))
        };
        let n_layer = hp.n_layer as usize;
        if n_layer == 0 {
            bail!(
                "{}: the model has no layers ({} is missing or 0)",
                path.display(),
                key("block_count")
            );
        }
        let n_embd = need(hp.n_embd, "embedding_length")?;
        let n_head = need(hp.n_head.first().copied(), "attention.head_count")?;
        let n_head_kv = need(hp.n_head_kv.first().copied(), "attention.head_count_kv")?;
        let n_ff = need(hp.n_ff.first().copied(), "feed_forward_length")?;
        let uniform = |v: &[u64]| v.iter().all(|&x| x == v[0]);
        if !uniform(&hp.n_head) || !uniform(&hp.n_head_kv) || !uniform(&hp.n_ff) {
            bail!(
                "{}: per-layer head counts or feed-forward sizes are not supported yet",
                path.display()
            );
        }
        let head_dim = need(hp.head_dim_k, "attention.key_length")?;
        if hp.head_dim_v != hp.head_dim_k {
            bail!(
                "{}: different key and value head sizes are not supported yet",
                path.display()
            );
        }
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            bail!(
                "{}: {n_head} heads cannot share {n_head_kv} KV heads",
                path.display()
            );
        }
        let n_vocab = file
            .tensor_info("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .context(format!(
                "{}: tensor 'token_embd.weight' is missing",
                path.display()
            ))? as usize;
        let shape = Shape {
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_vocab,
        };
        let eps = hp.norm_eps.unwrap_or(1e-5) as f32;

        let n_rot = md
            .u64(&key("rope.dimension_count"))
            .map_err(|e| e.in_file(path))?
            .map_or(head_dim, |v| v as usize);
        if n_rot > head_dim || n_rot % 2 != 0 {
            bail!(
                "{}: rope dimension count {n_rot} does not fit head size {head_dim}",
                path.display()
            );
        }
        let neox = arch.rope == RopeStyle::Neox;
        let base = hp.rope_freq_base.unwrap_or(10000.0) as f32;
        let mut global_rope = Rope::plain(n_rot, base, neox);
        let n_ctx_train = hp.n_ctx_train.unwrap_or(4096) as usize;
        let n_ctx_orig = hp
            .rope_scaling
            .as_ref()
            .and_then(|s| s.original_context)
            .or(md
                .u64(&key("rope.scaling.original_context_length"))
                .map_err(|e| e.in_file(path))?)
            .map_or(n_ctx_train, |v| v as usize);
        if let Some(s) = &hp.rope_scaling {
            let factor = s.factor.unwrap_or(1.0) as f32;
            if factor > 0.0 {
                global_rope.freq_scale = 1.0 / factor;
            }
            match s.kind.as_str() {
                "linear" => {}
                "yarn" => {
                    let orig = s.original_context.unwrap_or(n_ctx_train as u64) as usize;
                    global_rope.ext_factor = 1.0;
                    global_rope.corr_dims = ops::yarn_corr_dims(n_rot, orig, base, 32.0, 1.0);
                }
                other => bail!(
                    "{}: rope scaling '{other}' is not supported yet",
                    path.display()
                ),
            }
        }
        // Phi-3 LongRoPE files scale cos/sin by an attention factor.
        if let Some(f) = md
            .f64(&key("rope.scaling.attn_factor"))
            .map_err(|e| e.in_file(path))?
        {
            global_rope.attn_factor = f as f32;
        }
        let swa_base = hp.rope_freq_base_swa.unwrap_or(10000.0) as f32;
        let layers = (0..n_layer)
            .map(|il| {
                let local = hp.swa_layers.get(il).copied().unwrap_or(false);
                match (local, hp.sliding_window) {
                    (true, Some(w)) => LayerAttn {
                        // Local layers of gemma3 use their own base and no scaling.
                        rope: if arch.name == "gemma3" {
                            Rope::plain(n_rot, swa_base, neox)
                        } else {
                            global_rope
                        },
                        window: Some(w as usize),
                    },
                    _ => LayerAttn {
                        rope: global_rope,
                        window: None,
                    },
                }
            })
            .collect();
        let (q_scale, kq_scale) = if arch.name == "gemma3" {
            (Some(1.0 / (head_dim as f32).sqrt()), 1.0)
        } else {
            (None, 1.0 / (head_dim as f32).sqrt())
        };
        let embd_scale = arch.scale_embeddings.then(|| (n_embd as f32).sqrt());
        let weights = weights::load(file, &arch, n_layer, &shape, isa)?;
        Ok(Model {
            config: Config {
                arch,
                n_layer,
                shape,
                eps,
                layers,
                q_scale,
                kq_scale,
                embd_scale,
                n_ctx_train,
                n_ctx_orig,
            },
            weights,
            pool: ThreadPool::new(threads.max(1)),
            isa,
            dot16: ggml::cpu::kernels_for(ggml::GgmlType::F16, isa)
                .expect("f16 kernels exist")
                .dot,
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// A fresh sequence with room for `n_ctx` tokens.
    pub fn new_state(&self, n_ctx: usize) -> State {
        let kv_dim = self.config.shape.n_head_kv * self.config.shape.head_dim;
        let layers = self
            .config
            .layers
            .iter()
            .map(|l| {
                let cells = kv_cells(l.window, n_ctx);
                KvLayer {
                    cells,
                    window: l.window,
                    k: vec![0; cells * kv_dim],
                    v: vec![0; cells * kv_dim],
                }
            })
            .collect();
        State {
            kv: KvCache { n_ctx, layers },
            n_past: 0,
            scratch: Scratch::default(),
            logits: Vec::new(),
            trace: None,
        }
    }

    /// Bytes of the KV cache of a state of `n_ctx` tokens.
    pub fn kv_bytes(&self, n_ctx: usize) -> usize {
        let kv_dim = self.config.shape.n_head_kv * self.config.shape.head_dim;
        self.config
            .layers
            .iter()
            .map(|l| kv_cells(l.window, n_ctx) * kv_dim * 2 * 2)
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
            self.forward_batch(state, chunk, out);
        }
        Ok(())
    }

    fn forward_batch(&self, state: &mut State, tokens: &[u32], logits_at: Option<usize>) {
        let c = &self.config;
        let s = &c.shape;
        let t = tokens.len();
        let (e, hd) = (s.n_embd, s.head_dim);
        let (q_dim, kv_dim) = (s.n_head * hd, s.n_head_kv * hd);
        let sc = &mut state.scratch;
        resize(&mut sc.x, t * e);
        resize(&mut sc.xb, t * e);
        resize(&mut sc.q, t * q_dim);
        resize(&mut sc.k, t * kv_dim);
        resize(&mut sc.v, t * kv_dim);
        resize(&mut sc.att, t * q_dim);
        resize(&mut sc.gate, t * s.n_ff);
        resize(&mut sc.up, t * s.n_ff);
        resize(&mut sc.rope, hd);

        // Token embeddings: rows dequantised as ggml's get_rows does.
        let embd = &self.weights.token_embd;
        let embd_data = self.weights.data(embd);
        for (i, &tok) in tokens.iter().enumerate() {
            let row = &embd_data[tok as usize * embd.row_bytes..][..embd.row_bytes];
            ggml::blocks::dequantize(embd.info.ty, row, &mut sc.x[i * e..(i + 1) * e])
                .expect("type checked at load");
            if let Some(scale) = c.embd_scale {
                sc.x[i * e..(i + 1) * e]
                    .iter_mut()
                    .for_each(|v| *v *= scale);
            }
        }

        let pos0 = state.n_past;
        for (il, layer) in self.weights.layers.iter().enumerate() {
            let la = &c.layers[il];
            // Attention block.
            sc.xb.copy_from_slice(&sc.x);
            for row in sc.xb.chunks_exact_mut(e) {
                ops::rms_norm(row, &layer.attn_norm, c.eps);
            }
            if let (Some(wk), Some(wv)) = (&layer.wk, &layer.wv) {
                self.matmul(&layer.wq, &sc.xb, &mut sc.act, &mut sc.q);
                self.matmul(wk, &sc.xb, &mut sc.act, &mut sc.k);
                self.matmul(wv, &sc.xb, &mut sc.act, &mut sc.v);
            } else {
                resize(&mut sc.qkv, t * (q_dim + 2 * kv_dim));
                self.matmul(&layer.wq, &sc.xb, &mut sc.act, &mut sc.qkv);
                for (i, row) in sc.qkv.chunks_exact(q_dim + 2 * kv_dim).enumerate() {
                    sc.q[i * q_dim..(i + 1) * q_dim].copy_from_slice(&row[..q_dim]);
                    sc.k[i * kv_dim..(i + 1) * kv_dim].copy_from_slice(&row[q_dim..q_dim + kv_dim]);
                    sc.v[i * kv_dim..(i + 1) * kv_dim].copy_from_slice(&row[q_dim + kv_dim..]);
                }
            }
            add_bias(&mut sc.q, layer.bq.as_deref());
            add_bias(&mut sc.k, layer.bk.as_deref());
            add_bias(&mut sc.v, layer.bv.as_deref());
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                sc.q.chunks_exact_mut(hd)
                    .for_each(|h| ops::rms_norm(h, qn, c.eps));
                sc.k.chunks_exact_mut(hd)
                    .for_each(|h| ops::rms_norm(h, kn, c.eps));
            }
            // Llama-3's frequency factors, or Phi-3's LongRoPE factors: the
            // long ones for a context beyond the original, which llama.cpp
            // judges on its context padded to 256.
            let long = state.kv.n_ctx.next_multiple_of(256) > c.n_ctx_orig;
            let longrope = if long {
                self.weights.rope_long.as_deref()
            } else {
                self.weights.rope_short.as_deref()
            };
            let freqs = self.weights.rope_freqs.as_deref().or(longrope);
            for i in 0..t {
                la.rope.cache((pos0 + i) as i64, freqs, &mut sc.rope);
                sc.q[i * q_dim..(i + 1) * q_dim]
                    .chunks_exact_mut(hd)
                    .for_each(|h| la.rope.apply(h, &sc.rope));
                sc.k[i * kv_dim..(i + 1) * kv_dim]
                    .chunks_exact_mut(hd)
                    .for_each(|h| la.rope.apply(h, &sc.rope));
            }
            if let Some(trace) = state.trace.as_mut() {
                trace("Qcur", il, &sc.q);
                trace("Kcur", il, &sc.k);
                trace("Vcur", il, &sc.v);
            }
            if let Some(qs) = c.q_scale {
                sc.q.iter_mut().for_each(|v| *v *= qs);
            }
            // Store K and V as f16.
            let kv = &mut state.kv.layers[il];
            for i in 0..t {
                let cell = (pos0 + i) % kv.cells;
                for (dst, &src) in kv.k[cell * kv_dim..(cell + 1) * kv_dim]
                    .iter_mut()
                    .zip(&sc.k[i * kv_dim..])
                {
                    *dst = f32_to_f16(src);
                }
                // V is stored transposed, one row per dimension over the
                // cells, as llama.cpp does without flash attention.
                for (dim, &src) in sc.v[i * kv_dim..(i + 1) * kv_dim].iter().enumerate() {
                    kv.v[dim * kv.cells + cell] = f32_to_f16(src);
                }
            }
            self.attention(
                kv,
                la,
                pos0,
                t,
                &sc.q,
                &mut sc.att,
                &mut sc.scores,
                &mut sc.half,
            );
            if let Some(trace) = state.trace.as_mut() {
                trace("kqv_out", il, &sc.att);
            }
            self.matmul(&layer.wo, &sc.att, &mut sc.act, &mut sc.xb);
            if let Some(pn) = &layer.post_attn_norm {
                sc.xb
                    .chunks_exact_mut(e)
                    .for_each(|r| ops::rms_norm(r, pn, c.eps));
            }
            sc.x.iter_mut().zip(&sc.xb).for_each(|(x, d)| *x += d);
            if let Some(trace) = state.trace.as_mut() {
                trace("ffn_inp", il, &sc.x);
            }

            // Feed-forward block.
            sc.xb.copy_from_slice(&sc.x);
            sc.xb
                .chunks_exact_mut(e)
                .for_each(|r| ops::rms_norm(r, &layer.ffn_norm, c.eps));
            match &layer.w_gate {
                Some(wg) => {
                    self.matmul(wg, &sc.xb, &mut sc.act, &mut sc.gate);
                    self.matmul(&layer.w_up, &sc.xb, &mut sc.act, &mut sc.up);
                }
                None => {
                    resize(&mut sc.qkv, t * 2 * s.n_ff);
                    self.matmul(&layer.w_up, &sc.xb, &mut sc.act, &mut sc.qkv);
                    for (i, row) in sc.qkv.chunks_exact(2 * s.n_ff).enumerate() {
                        sc.gate[i * s.n_ff..(i + 1) * s.n_ff].copy_from_slice(&row[..s.n_ff]);
                        sc.up[i * s.n_ff..(i + 1) * s.n_ff].copy_from_slice(&row[s.n_ff..]);
                    }
                }
            }
            if let Some(trace) = state.trace.as_mut() {
                trace("ffn_gate", il, &sc.gate);
                trace("ffn_up", il, &sc.up);
            }
            match c.arch.activation {
                Activation::SwiGlu => ops::swiglu(self.isa, &mut sc.gate, &sc.up),
                Activation::GeGlu => ops::geglu(&mut sc.gate, &sc.up),
            }
            if let Some(trace) = state.trace.as_mut() {
                trace(
                    if c.arch.activation == Activation::GeGlu {
                        "ffn_geglu"
                    } else {
                        "ffn_swiglu"
                    },
                    il,
                    &sc.gate,
                );
            }
            self.matmul(&layer.w_down, &sc.gate, &mut sc.act, &mut sc.xb);
            if let Some(trace) = state.trace.as_mut() {
                trace("ffn_out", il, &sc.xb);
            }
            if let Some(pn) = &layer.post_ffn_norm {
                sc.xb
                    .chunks_exact_mut(e)
                    .for_each(|r| ops::rms_norm(r, pn, c.eps));
            }
            sc.x.iter_mut().zip(&sc.xb).for_each(|(x, d)| *x += d);
            if let Some(trace) = state.trace.as_mut() {
                trace("l_out", il, &sc.x);
            }
        }

        // Output: every token's logits, or the last one's.
        let first = if logits_at.is_some() { 0 } else { t - 1 };
        let rows = &mut sc.xb[..(t - first) * e];
        rows.copy_from_slice(&sc.x[first * e..]);
        rows.chunks_exact_mut(e)
            .for_each(|r| ops::rms_norm(r, &self.weights.output_norm, c.eps));
        let n_vocab = s.n_vocab;
        let out = match logits_at {
            Some(at) => &mut state.logits[at..at + t * n_vocab],
            None => {
                resize(&mut state.logits, n_vocab);
                &mut state.logits[..]
            }
        };
        self.matmul(
            &self.weights.output,
            &sc.xb[..(t - first) * e],
            &mut sc.act,
            out,
        );
        state.n_past += t;
    }

    /// `out[t][r] = W[r] · x[t]` for every token row of `x`, over the pool.
    fn matmul(&self, m: &Mat, x: &[f32], act: &mut Vec<u8>, out: &mut [f32]) {
        let t = x.len() / m.cols;
        let ab =
            ggml::cpu::act_row_bytes(m.info.ty, m.cols).expect("kernels exist for loaded weights");
        resize(act, t * ab);
        for (xr, ar) in x.chunks_exact(m.cols).zip(act.chunks_exact_mut(ab)) {
            (m.kernels.quantize)(xr, ar);
        }
        let data = self.weights.data(m);
        let out_ptr = SyncPtr(out.as_mut_ptr());
        let rows = m.rows;
        let threads = self.pool.threads();
        let act = &act[..];
        let (dot, dot4) = (m.kernels.dot, m.kernels.dot4);
        let rb = m.row_bytes;
        self.pool.run(&|i| {
            let out_ptr = &out_ptr;
            // SAFETY: each (ti, r) is written by exactly one thread, and
            // `out` outlives the pool run.
            let put = |ti: usize, r: usize, v: f32| unsafe { *out_ptr.0.add(ti * rows + r) = v };
            for r in split(rows, threads, i, 16) {
                let w = &data[r * rb..(r + 1) * rb];
                let mut ti = 0;
                // Four tokens per pass over the weight row, where a kernel allows.
                if let Some(dot4) = dot4 {
                    while ti + 4 <= t {
                        let a: [&[u8]; 4] =
                            std::array::from_fn(|k| &act[(ti + k) * ab..(ti + k + 1) * ab]);
                        for (k, v) in dot4(w, a).into_iter().enumerate() {
                            put(ti + k, r, v);
                        }
                        ti += 4;
                    }
                }
                for tj in ti..t {
                    put(tj, r, dot(w, &act[tj * ab..(tj + 1) * ab]));
                }
            }
        });
    }

    /// Causal attention for `t` new tokens at positions `pos0..`, written
    /// into `att` (t × q_dim). Mirrors llama.cpp without flash attention, to
    /// the bit on this CPU's instruction set: Q as f16 dotted with each f16 key
    /// cell, scores over llama.cpp's padded cell count (masked cells -inf),
    /// its softmax, then probabilities as f16 dotted with each V row.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        kv: &KvLayer,
        la: &LayerAttn,
        pos0: usize,
        t: usize,
        q: &[f32],
        att: &mut [f32],
        scores: &mut Vec<f32>,
        half: &mut Vec<u16>,
    ) {
        let s = &self.config.shape;
        let hd = s.head_dim;
        let (q_dim, kv_dim) = (s.n_head * hd, s.n_head_kv * hd);
        let group = s.n_head / s.n_head_kv;
        let kq_scale = self.config.kq_scale;
        let isa = self.isa;
        let dot16 = self.dot16;
        let last = pos0 + t - 1;
        // llama.cpp attends over all cells up to the used ones, padded to 256.
        let n_kv = kv.cells.min((last + 1).next_multiple_of(256).max(256));
        let cell_pos = |c: usize| -> Option<usize> {
            let back = (last as isize - c as isize).rem_euclid(kv.cells as isize) as usize;
            last.checked_sub(back)
        };
        let threads = self.pool.threads();
        resize(scores, threads * n_kv);
        resize(half, threads * (n_kv + hd));
        let scores_ptr = SyncPtr(scores.as_mut_ptr());
        let half_ptr = SyncPtr(half.as_mut_ptr() as *mut f32);
        let att_ptr = SyncPtr(att.as_mut_ptr());
        let (k_bytes, v_bytes) = (u16_bytes(&kv.k), u16_bytes(&kv.v));
        let work = t * s.n_head;
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
                let (ti, h) = (job / s.n_head, job % s.n_head);
                let g = h / group;
                let pos = pos0 + ti;
                let qh = &q[ti * q_dim + h * hd..][..hd];
                for (d, &v) in q16.iter_mut().zip(qh) {
                    *d = f32_to_f16(v);
                }
                let qb = u16_bytes(q16);
                for (c, score) in sc.iter_mut().enumerate() {
                    let visible = cell_pos(c)
                        .is_some_and(|p| p <= pos && la.window.is_none_or(|w| pos - p < w));
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
                    let row = (g * hd + d) * kv.cells;
                    *o = dot16(pb, &v_bytes[2 * row..2 * (row + n_kv)]);
                }
            }
        });
    }
}

fn u16_bytes(v: &[u16]) -> &[u8] {
    // SAFETY: u16 has no invalid bit patterns; the byte view has the same extent.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) }
}

struct SyncPtr(*mut f32);
// SAFETY: used only for disjoint writes coordinated by the pool's split.
unsafe impl Sync for SyncPtr {}

fn resize<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() != n {
        v.resize(n, T::default());
    }
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(v, bb)| *v += bb);
        }
    }
}
