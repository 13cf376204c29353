//! Every op of a backend against the scalar CPU backend, on random inputs of
//! awkward shapes (llama.cpp's test-backend-ops, in our terms). Each backend's
//! tests call `check` with the error it is allowed; the report says how far
//! each op and case came from the reference.

use std::sync::Arc;

use crate::backend::{Attention, Backend, Glu, HostMat, KvTypes, WeightFormat};
use crate::blocks::{quantize, WEIGHT_TYPES};
use crate::cpu::backend::CpuBackend;
use crate::cpu::Isa;
use crate::rope::{yarn_corr_dims, Rope};
use crate::GgmlType;

/// One op on one case: the largest difference from the reference, relative
/// to the largest reference magnitude.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub op: &'static str,
    pub case: String,
    pub rel_err: f64,
}

/// A small deterministic generator (xorshift), so failures repeat.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

/// `w` as a group-quantised layer: its inputs in `order`, or in a random
/// order of its own.
pub fn grouped(rng: &mut Rng, mut w: HostMat, order: Option<Arc<[u32]>>) -> HostMat {
    let order = order.unwrap_or_else(|| {
        let mut o: Vec<u32> = (0..w.cols as u32).collect();
        for i in (1..o.len()).rev() {
            o.swap(i, rng.next_u64() as usize % (i + 1));
        }
        o.into()
    });
    w.format = WeightFormat::Grouped(w.format.ggml());
    w.input_order = Some(order);
    w
}

/// The reference: the portable kernels on one thread.
pub fn reference() -> CpuBackend {
    CpuBackend::new(1, Isa::Scalar)
}

/// A random weight matrix of `ty`, quantised as ggml does.
pub fn random_mat(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> HostMat {
    let x = rng.vec(rows * cols, 1.0);
    let row_bytes = ty.row_size(cols as u64).expect("whole blocks") as usize;
    let mut bytes = vec![0u8; rows * row_bytes];
    for (src, dst) in x.chunks_exact(cols).zip(bytes.chunks_exact_mut(row_bytes)) {
        quantize(ty, src, dst).expect("every weight type quantises");
    }
    let owner = Arc::new(bytes);
    HostMat {
        name: format!("random {} {rows}x{cols}", ty.name()),
        format: WeightFormat::Ggml(ty),
        rows,
        cols,
        row_bytes,
        ptr: owner.as_ptr(),
        len: owner.len(),
        owner,
        input_order: None,
        mapped: false,
    }
}

pub fn rel_err(reference: &[f32], got: &[f32]) -> f64 {
    assert_eq!(reference.len(), got.len(), "output sizes differ");
    let scale = reference
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(1e-30);
    reference
        .iter()
        .zip(got)
        .map(|(&a, &b)| {
            if a.to_bits() == b.to_bits() {
                0.0
            } else {
                (f64::from(a) - f64::from(b)).abs() / scale
            }
        })
        .fold(0.0, f64::max)
}

fn up<B: Backend>(b: &B, x: &[f32]) -> B::Buf {
    let mut buf = b.buf(x.len()).expect("room for a test buffer");
    b.write(x, &mut buf);
    buf
}

fn buf<B: Backend>(b: &B, len: usize) -> B::Buf {
    b.buf(len).expect("room for a test buffer")
}

fn down<B: Backend>(b: &B, buf: &B::Buf, len: usize) -> Vec<f32> {
    let mut out = vec![0f32; len];
    b.read(buf, &mut out).expect("the ops ran");
    out
}

/// Runs one op on a backend from host inputs to host outputs.
trait Op {
    fn name(&self) -> &'static str;
    fn case(&self) -> String;
    fn run<B: Backend>(&self, b: &B) -> Vec<f32>;
}

struct MatMul {
    w: HostMat,
    x: Vec<f32>,
    tokens: usize,
}

impl Op for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn case(&self) -> String {
        format!(
            "{} {}x{} x {} tokens",
            self.w.format, self.w.rows, self.w.cols, self.tokens
        )
    }
    fn run<B: Backend>(&self, b: &B) -> Vec<f32> {
        let w = b
            .upload_mat(&self.w)
            .expect("the backend takes every weight type");
        let x = up(b, &self.x);
        let mut out = buf(b, self.tokens * self.w.rows);
        let mut sc = b.scratch().expect("scratch");
        b.matmul(&mut sc, &w, &x, self.tokens, &mut out);
        down(b, &out, self.tokens * self.w.rows)
    }
}

struct Norm {
    x: Vec<f32>,
    w: Vec<f32>,
    rows: usize,
    in_place: bool,
}

impl Op for Norm {
    fn name(&self) -> &'static str {
        if self.in_place {
            "rms_norm_in_place"
        } else {
            "rms_norm"
        }
    }
    fn case(&self) -> String {
        format!("{} rows of {}", self.rows, self.w.len())
    }
    fn run<B: Backend>(&self, b: &B) -> Vec<f32> {
        let w = b.upload_vector(&self.w).expect("a vector");
        let mut x = up(b, &self.x);
        let n = self.rows * self.w.len();
        if self.in_place {
            b.rms_norm_in_place(&mut x, &w, 1e-6, self.rows);
            down(b, &x, n)
        } else {
            let mut out = buf(b, n);
            b.rms_norm(&x, &w, 1e-6, self.rows, &mut out);
            down(b, &out, n)
        }
    }
}

/// add_bias, add, scale, copy_cols, copy_rows and the two GLUs on one input.
struct Elementwise {
    kind: &'static str,
    x: Vec<f32>,
    y: Vec<f32>,
    rows: usize,
    width: usize,
}

impl Op for Elementwise {
    fn name(&self) -> &'static str {
        self.kind
    }
    fn case(&self) -> String {
        format!("{} rows of {}", self.rows, self.width)
    }
    fn run<B: Backend>(&self, b: &B) -> Vec<f32> {
        let (rows, width) = (self.rows, self.width);
        let n = rows * width;
        let mut x = up(b, &self.x);
        let y = up(b, &self.y);
        match self.kind {
            "add_bias" => {
                let bias = b.upload_vector(&self.y[..width]).expect("a vector");
                b.add_bias(&mut x, &bias, rows);
                down(b, &x, n)
            }
            "add" => {
                b.add(&mut x, &y, n);
                down(b, &x, n)
            }
            "scale" => {
                b.scale(&mut x, 0.125, n);
                down(b, &x, n)
            }
            "copy_cols" => {
                // The middle third of each row.
                let (col0, w) = (width / 3, width / 3 + 1);
                let mut out = buf(b, rows * w);
                b.copy_cols(&x, width, col0, w, rows, &mut out);
                down(b, &out, rows * w)
            }
            "copy_rows" => {
                let mut out = buf(b, n);
                b.copy_rows(&x, rows / 2, rows - rows / 2, width, &mut out);
                down(b, &out, (rows - rows / 2) * width)
            }
            "swiglu" | "geglu" => {
                let act = if self.kind == "swiglu" {
                    Glu::SwiGlu
                } else {
                    Glu::GeGlu
                };
                b.glu(act, &mut x, &y, n);
                down(b, &x, n)
            }
            other => unreachable!("no elementwise op {other}"),
        }
    }
}

struct RopeOp {
    x: Vec<f32>,
    tokens: usize,
    n_heads: usize,
    head_dim: usize,
    rope: Rope,
    factors: Option<Vec<f32>>,
    pos0: usize,
}

impl Op for RopeOp {
    fn name(&self) -> &'static str {
        "rope"
    }
    fn case(&self) -> String {
        format!(
            "{} tokens x {} heads of {} (rot {}, {}, yarn {}, factors {}) at {}",
            self.tokens,
            self.n_heads,
            self.head_dim,
            self.rope.n_dims,
            if self.rope.neox { "neox" } else { "norm" },
            self.rope.ext_factor != 0.0,
            self.factors.is_some(),
            self.pos0
        )
    }
    fn run<B: Backend>(&self, b: &B) -> Vec<f32> {
        let mut x = up(b, &self.x);
        let f = self
            .factors
            .as_ref()
            .map(|f| b.upload_vector(f).expect("a vector"));
        let mut sc = b.scratch().expect("scratch");
        b.begin(&mut sc, self.pos0, self.tokens);
        b.rope(
            &mut sc,
            &mut x,
            self.tokens,
            self.n_heads,
            self.head_dim,
            &self.rope,
            f.as_ref(),
            self.pos0,
        );
        down(b, &x, self.x.len())
    }
}

/// Fills a cache of `cells` with `history` earlier tokens, then attends for
/// `tokens` new ones (their K and V stored first, as the forward pass does).
struct AttentionOp {
    a: Attention,
    cells: usize,
    history: usize,
    tokens: usize,
    k: Vec<f32>,
    v: Vec<f32>,
    q: Vec<f32>,
    /// Rotate the new tokens' q and k and store them through `rope_store`
    /// (then the roped q and k follow the output).
    rope: Option<Rope>,
    types: KvTypes,
}

/// (n_head, n_head_kv, head_dim, window, cells, history, tokens).
type AttentionShape = (usize, usize, usize, Option<usize>, usize, usize, usize);

impl AttentionOp {
    /// A case of `shape` with random keys, values and queries.
    fn random(
        rng: &mut Rng,
        shape: AttentionShape,
        rope: Option<Rope>,
        types: KvTypes,
    ) -> AttentionOp {
        let (n_head, n_head_kv, head_dim, window, cells, history, tokens) = shape;
        let kv_dim = n_head_kv * head_dim;
        let total = history + tokens;
        AttentionOp {
            a: Attention {
                n_head,
                n_head_kv,
                head_dim,
                window,
                kq_scale: 1.0 / (head_dim as f32).sqrt(),
            },
            cells,
            history,
            tokens,
            k: rng.vec(total * kv_dim, 1.5),
            v: rng.vec(total * kv_dim, 1.0),
            q: rng.vec(tokens * n_head * head_dim, 1.5),
            rope,
            types,
        }
    }

    /// Fills `kv` with the history, then stores the new tokens' keys and
    /// values (through rope_store when the op ropes): the cache as the
    /// forward pass leaves it for attention.
    #[allow(clippy::too_many_arguments)]
    fn fill<B: Backend>(
        &self,
        b: &B,
        sc: &mut B::Scratch,
        kv: &mut B::Kv,
        q: &mut B::Buf,
        k: &mut B::Buf,
        v: &B::Buf,
    ) {
        let pos = self.fill_history(b, sc, kv);
        b.begin(sc, pos, self.tokens);
        if let Some(rope) = &self.rope {
            let heads = (self.a.n_head, self.a.n_head_kv);
            let (t, hd) = (self.tokens, self.a.head_dim);
            b.rope_store(sc, kv, q, k, v, t, heads, hd, rope, None, pos);
        } else {
            b.kv_store(sc, kv, k, v, pos, self.tokens);
        }
    }

    /// Stores the history's keys and values; returns the next position.
    fn fill_history<B: Backend>(&self, b: &B, sc: &mut B::Scratch, kv: &mut B::Kv) -> usize {
        let kv_dim = self.a.n_head_kv * self.a.head_dim;
        // The history in batches of at most `cells - window` so a ring never
        // overwrites what a batch still needs, as the forward pass guarantees.
        let total = self.history + self.tokens;
        let step = self.a.window.map_or(total, |w| (self.cells - w).max(1));
        let mut pos = 0;
        while pos < self.history {
            let n = step.min(self.history - pos);
            let k = up(b, &self.k[pos * kv_dim..(pos + n) * kv_dim]);
            let v = up(b, &self.v[pos * kv_dim..(pos + n) * kv_dim]);
            b.begin(sc, pos, n);
            b.kv_store(sc, kv, &k, &v, pos, n);
            pos += n;
        }
        pos
    }

    /// Attention in f64 over the cache the CPU stores (quantised, rotated):
    /// what a kernel would give with no rounding of its own. None for an f16
    /// cache or a roped case (whose q the devices rotate differently).
    fn exact_over_cache(&self) -> Option<Vec<f32>> {
        if self.types.is_f16() || self.rope.is_some() {
            return None;
        }
        let r = reference();
        let a = &self.a;
        let (hd, kv_dim) = (a.head_dim, a.n_head_kv * a.head_dim);
        let mut kv = r.kv(self.cells, kv_dim, hd, self.types).expect("a cache");
        let mut sc = r.scratch().expect("scratch");
        let (mut q, mut k) = (self.q.clone(), self.k[self.history * kv_dim..].to_vec());
        let v = self.v[self.history * kv_dim..].to_vec();
        self.fill(&r, &mut sc, &mut kv, &mut q, &mut k, &v);
        let (kw, vw) = self.types.row_words(kv_dim);
        let (mut kc, mut vc) = (vec![0u16; self.cells * kw], vec![0u16; self.cells * vw]);
        r.kv_cells_out(&kv, 0, &mut kc, &mut vc);
        let rows = |t: GgmlType, words: &[u16]| -> Vec<f32> {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut out = vec![0f32; self.cells * kv_dim];
            crate::blocks::dequantize(t, &bytes, &mut out).expect("cache types dequantise");
            out
        };
        let (kf, vf) = (rows(self.types.k, &kc), rows(self.types.v, &vc));
        let (k_rot, v_rot) = (self.types.k_rotation(hd), self.types.v_rotation(hd));
        let last = self.history + self.tokens - 1;
        let oldest = (last + 1).saturating_sub(self.cells);
        let mut out = Vec::with_capacity(self.q.len());
        for t in 0..self.tokens {
            let pos = self.history + t;
            for h in 0..a.n_head {
                let g = h / (a.n_head / a.n_head_kv);
                let qh = &self.q[(t * a.n_head + h) * hd..][..hd];
                let mut qh: Vec<f64> = qh.iter().map(|&x| f64::from(x)).collect();
                if let Some(n) = k_rot {
                    hadamard_f64(&mut qh, n);
                }
                let seen: Vec<usize> = (oldest..=pos)
                    .filter(|&p| a.window.is_none_or(|w| pos - p < w))
                    .collect();
                let row = |c: &[f32], p: usize| -> Vec<f64> {
                    let at = (p % self.cells) * kv_dim + g * hd;
                    c[at..at + hd].iter().map(|&x| f64::from(x)).collect()
                };
                let scores: Vec<f64> = seen
                    .iter()
                    .map(|&p| {
                        let kr = row(&kf, p);
                        qh.iter().zip(&kr).map(|(x, y)| x * y).sum::<f64>() * f64::from(a.kq_scale)
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                let mut o = vec![0f64; hd];
                for (&p, w) in seen.iter().zip(&weights) {
                    for (oi, vi) in o.iter_mut().zip(row(&vf, p)) {
                        *oi += w / sum * vi;
                    }
                }
                if let Some(n) = v_rot {
                    hadamard_f64(&mut o, n);
                }
                out.extend(o.iter().map(|&x| x as f32));
            }
        }
        Some(out)
    }
}

/// The orthonormal Walsh-Hadamard rotation in f64, pieces of n.
fn hadamard_f64(x: &mut [f64], n: usize) {
    for piece in x.chunks_exact_mut(n) {
        let mut len = 1;
        while len < n {
            for pair in piece.chunks_exact_mut(2 * len) {
                let (lo, hi) = pair.split_at_mut(len);
                for (u, v) in lo.iter_mut().zip(hi.iter_mut()) {
                    (*u, *v) = (*u + *v, *u - *v);
                }
            }
            len <<= 1;
        }
        let scale = 1.0 / (n as f64).sqrt();
        piece.iter_mut().for_each(|v| *v *= scale);
    }
}

impl Op for AttentionOp {
    fn name(&self) -> &'static str {
        if self.rope.is_some() {
            "rope_store"
        } else {
            "attention"
        }
    }
    fn case(&self) -> String {
        format!(
            "{} heads / {} kv heads of {}, {} cells, window {:?}, {} tokens after {}{}",
            self.a.n_head,
            self.a.n_head_kv,
            self.a.head_dim,
            self.cells,
            self.a.window,
            self.tokens,
            self.history,
            if self.types.is_f16() {
                String::new()
            } else {
                format!(", cache {}", self.types)
            }
        )
    }
    fn run<B: Backend>(&self, b: &B) -> Vec<f32> {
        let kv_dim = self.a.n_head_kv * self.a.head_dim;
        let q_dim = self.a.n_head * self.a.head_dim;
        let mut kv = b
            .kv(self.cells, kv_dim, self.a.head_dim, self.types)
            .expect("a cache");
        let mut sc = b.scratch().expect("scratch");
        let mut k = up(b, &self.k[self.history * kv_dim..]);
        let v = up(b, &self.v[self.history * kv_dim..]);
        let mut q = up(b, &self.q);
        self.fill(b, &mut sc, &mut kv, &mut q, &mut k, &v);
        let pos = self.history;
        let mut out = buf(b, self.tokens * q_dim);
        b.attention(&mut sc, &kv, &q, pos, self.tokens, &self.a, &mut out);
        let mut got = down(b, &out, self.tokens * q_dim);
        if self.rope.is_some() {
            got.extend(down(b, &q, self.tokens * q_dim));
            got.extend(down(b, &k, self.tokens * kv_dim));
        }
        got
    }
}

/// `rope_store_attention` after a history (the forward pass's attention
/// block), then one more token attended over the cache it left, so that the
/// cells it stored are read back: its output, then that token's.
struct RopeAttentionOp {
    base: AttentionOp,
    /// The next token's query, key and value.
    next: [Vec<f32>; 3],
}

impl RopeAttentionOp {
    fn random(rng: &mut Rng, shape: AttentionShape, rope: Rope) -> RopeAttentionOp {
        let base = AttentionOp::random(rng, shape, Some(rope), KvTypes::F16);
        let (kv_dim, q_dim) = (
            base.a.n_head_kv * base.a.head_dim,
            base.a.n_head * base.a.head_dim,
        );
        let next = [
            rng.vec(q_dim, 1.5),
            rng.vec(kv_dim, 1.5),
            rng.vec(kv_dim, 1.0),
        ];
        RopeAttentionOp { base, next }
    }
}

impl Op for RopeAttentionOp {
    fn name(&self) -> &'static str {
        "rope_store_attention"
    }
    fn case(&self) -> String {
        self.base.case()
    }
    fn run<B: Backend>(&self, b: &B) -> Vec<f32> {
        let o = &self.base;
        let (a, t) = (&o.a, o.tokens);
        let (kv_dim, q_dim) = (a.n_head_kv * a.head_dim, a.n_head * a.head_dim);
        let mut kv = b.kv(o.cells, kv_dim, a.head_dim, o.types).expect("a cache");
        let mut sc = b.scratch().expect("scratch");
        let mut k = up(b, &o.k[o.history * kv_dim..]);
        let v = up(b, &o.v[o.history * kv_dim..]);
        let mut q = up(b, &o.q);
        let pos = o.fill_history(b, &mut sc, &mut kv);
        b.begin(&mut sc, pos, t);
        let rope = o.rope.as_ref().expect("a roped case");
        let mut out = buf(b, t * q_dim);
        let qkv = (&mut q, &mut k, &v);
        b.rope_store_attention(&mut sc, &mut kv, qkv, t, rope, None, pos, a, &mut out);
        let mut got = down(b, &out, t * q_dim);
        let [q2, k2, v2] = &self.next;
        let (q2, k2, v2) = (up(b, q2), up(b, k2), up(b, v2));
        b.begin(&mut sc, pos + t, 1);
        b.kv_store(&mut sc, &mut kv, &k2, &v2, pos + t, 1);
        let mut out2 = buf(b, q_dim);
        b.attention(&mut sc, &kv, &q2, pos + t, 1, a, &mut out2);
        got.extend(down(b, &out2, q_dim));
        got
    }
}

/// The decode step's fused products (`matmuls`, `matmul_add`,
/// `matmul_glu`): one input, several weights, an epilogue.
struct Fused {
    /// "matmuls", "add", or a gated activation ("swiglu", "geglu").
    kind: &'static str,
    ws: Vec<HostMat>,
    x: Vec<f32>,
    /// The residual that "add" adds to.
    acc: Vec<f32>,
    tokens: usize,
    /// An input norm's weights ("matmuls" and the gated kinds): the
    /// products read rms_norm(x) * norm (`matmuls_normed`, `matmul_glu_normed`).
    norm: Option<Vec<f32>>,
}

/// The norms' epsilon in the fused cases.
const NORM_EPS: f32 = 1e-5;

impl Fused {
    fn new(
        rng: &mut Rng,
        kind: &'static str,
        types: &[GgmlType],
        rows: &[usize],
        tokens: usize,
    ) -> Fused {
        let cols = 512;
        let ws: Vec<HostMat> = types
            .iter()
            .zip(rows)
            .map(|(&ty, &r)| random_mat(rng, ty, r, cols))
            .collect();
        Fused {
            kind,
            acc: rng.vec(tokens * rows[0], 3.0),
            x: rng.vec(tokens * cols, 2.0),
            ws,
            tokens,
            norm: None,
        }
    }

    /// The same products of a normed input.
    fn normed(mut self, rng: &mut Rng) -> Fused {
        let cols = self.ws[0].cols;
        self.norm = Some(rng.vec(cols, 1.5));
        self
    }

    /// The products' input: x, or x normed row by row in f64.
    fn input(&self) -> Vec<f32> {
        let Some(w) = &self.norm else {
            return self.x.clone();
        };
        self.x
            .chunks(w.len())
            .flat_map(|row| {
                let ss: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                let scale = 1.0 / (ss / row.len() as f64 + f64::from(NORM_EPS)).sqrt();
                row.iter()
                    .zip(w)
                    .map(move |(&v, &g)| (f64::from(v) * scale * f64::from(g)) as f32)
            })
            .collect()
    }

    fn act(&self) -> Glu {
        if self.kind == "geglu" {
            Glu::GeGlu
        } else {
            Glu::SwiGlu
        }
    }

    /// The same from the exact products, the epilogue in f64.
    fn exact(&self) -> Vec<f32> {
        let x = self.input();
        let p: Vec<Vec<f32>> = self
            .ws
            .iter()
            .map(|w| exact_matmul(w, &x, self.tokens))
            .collect();
        match self.kind {
            "matmuls" => p.concat(),
            "add" => self
                .acc
                .iter()
                .zip(&p[0])
                .map(|(&a, &b)| (f64::from(a) + f64::from(b)) as f32)
                .collect(),
            _ => p[0]
                .iter()
                .zip(&p[1])
                .map(|(&g, &u)| {
                    let (g, u) = (f64::from(g), f64::from(u));
                    let a = match self.act() {
                        Glu::SwiGlu => g / (1.0 + (-g).exp()),
                        Glu::GeGlu => {
                            let k = (2.0 / std::f64::consts::PI).sqrt();
                            0.5 * g * (1.0 + (k * g * (1.0 + 0.044715 * g * g)).tanh())
                        }
                    };
                    (a * u) as f32
                })
                .collect(),
        }
    }
}

impl Op for Fused {
    fn name(&self) -> &'static str {
        "fused"
    }
    fn case(&self) -> String {
        let shapes: Vec<String> = self
            .ws
            .iter()
            .map(|w| format!("{} {}x{}", w.format, w.rows, w.cols))
            .collect();
        format!(
            "{}{} {} x {} tokens",
            if self.norm.is_some() { "normed " } else { "" },
            self.kind,
            shapes.join(", "),
            self.tokens
        )
    }
    fn run<B: Backend>(&self, b: &B) -> Vec<f32> {
        let ws: Vec<B::Mat> = self
            .ws
            .iter()
            .map(|w| {
                b.upload_mat(w)
                    .expect("the backend takes every weight type")
            })
            .collect();
        let x = up(b, &self.x);
        let t = self.tokens;
        let mut sc = b.scratch().expect("scratch");
        let mut outs: Vec<B::Buf> = self.ws.iter().map(|w| buf(b, t * w.rows)).collect();
        let width = self.ws[0].rows;
        let norm = self.norm.as_ref().map(|w| {
            let v = b.upload_vector(w).expect("a vector");
            (v, buf(b, t * w.len()))
        });
        match self.kind {
            "matmuls" => {
                let mut products: Vec<(&B::Mat, &mut B::Buf)> =
                    ws.iter().zip(outs.iter_mut()).collect();
                match norm {
                    Some((w, mut xb)) => {
                        b.matmuls_normed(&mut sc, &x, &w, NORM_EPS, t, &mut xb, &mut products)
                    }
                    None => b.matmuls(&mut sc, &x, t, &mut products),
                }
                self.ws
                    .iter()
                    .zip(&outs)
                    .flat_map(|(w, o)| down(b, o, t * w.rows))
                    .collect()
            }
            "add" => {
                let mut acc = up(b, &self.acc);
                b.matmul_add(&mut sc, &ws[0], &x, t, width, &mut acc, &mut outs[0]);
                down(b, &acc, t * width)
            }
            _ => {
                let (gate, rest) = outs.split_at_mut(1);
                let (g, u) = (&mut gate[0], &mut rest[0]);
                match norm {
                    Some((w, mut xb)) => b.matmul_glu_normed(
                        &mut sc,
                        &x,
                        &w,
                        NORM_EPS,
                        &mut xb,
                        self.act(),
                        &ws[0],
                        &ws[1],
                        t,
                        width,
                        g,
                        u,
                    ),
                    None => b.matmul_glu(&mut sc, self.act(), &ws[0], &ws[1], &x, t, width, g, u),
                }
                down(b, g, t * width)
            }
        }
    }
}

/// The product in f64 over the dequantised weights: what every backend
/// approximates (the CPU quantises activations on the way, as ggml does).
pub fn exact_matmul(w: &HostMat, x: &[f32], tokens: usize) -> Vec<f32> {
    let mut row = vec![0f32; w.cols];
    let mut out = vec![0f32; tokens * w.rows];
    for r in 0..w.rows {
        let bytes = &w.bytes()[r * w.row_bytes..(r + 1) * w.row_bytes];
        crate::blocks::dequantize(w.format.ggml(), bytes, &mut row).expect("a known type");
        for t in 0..tokens {
            let xt = &x[t * w.cols..(t + 1) * w.cols];
            let input = |k: usize| xt[w.input_order.as_ref().map_or(k, |o| o[k] as usize)];
            let dot: f64 = row
                .iter()
                .enumerate()
                .map(|(k, &a)| f64::from(a) * f64::from(input(k)))
                .sum();
            out[t * w.rows + r] = dot as f32;
        }
    }
    out
}

fn outcome<R: Backend, B: Backend>(op: &impl Op, reference: &R, b: &B) -> Outcome {
    Outcome {
        op: op.name(),
        case: op.case(),
        rel_err: rel_err(&op.run(reference), &op.run(b)),
    }
}

/// Runs every op on `b` and on the scalar reference, over the cases below,
/// and returns how far each came. `seed` picks the random inputs.
/// Which KV caches the attention cases use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caches {
    /// f16, every other type the CPU stores, and pairs of two.
    All,
    /// f16 only (a backend without quantised caches).
    F16,
}

pub fn check<B: Backend>(b: &B, seed: u64) -> Vec<Outcome> {
    check_with(b, seed, Caches::All)
}

pub fn check_with<B: Backend>(b: &B, seed: u64, caches: Caches) -> Vec<Outcome> {
    let r = reference();
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();

    // Every weight type; odd row counts, several blocks per row, token counts
    // around the four-at-a-time kernels.
    for &ty in WEIGHT_TYPES {
        let block = ty.block_size() as usize;
        let short = if block >= 256 { 512 } else { 96 };
        // Batches past 8 tokens take a GPU's tiled path, with partial tiles;
        // a few long rows of one token are split over several warps.
        for (rows, tokens, cols) in [
            (1, 1, short),
            (17, 1, short),
            (33, 5, short),
            (64, 8, short),
            (130, 9, short),
            (70, 67, short),
            (40, 1, 4096),
        ] {
            push_matmul(&mut out, &mut rng, (ty, rows, cols), tokens, &r, b);
        }
    }

    // Group-quantised layers (the blocks they are re-encoded to, inputs in
    // an order of their own): products as precise as f16 activations, alone
    // and fused, where q, k and v (or gate and up) have orders of their own.
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        for (rows, tokens) in [(17, 1), (33, 5), (70, 67)] {
            let w = random_mat(&mut rng, ty, rows, 96);
            let op = MatMul {
                w: grouped(&mut rng, w, None),
                x: rng.vec(tokens * 96, 2.0),
                tokens,
            };
            let got = op.run(b);
            out.push(Outcome {
                op: "grouped_vs_f64",
                case: op.case(),
                rel_err: rel_err(&exact_matmul(&op.w, &op.x, tokens), &got),
            });
        }
        for tokens in [1, 3] {
            for (kind, rows, shared) in [
                ("matmuls", vec![64, 32, 32], false),
                ("add", vec![64], false),
                ("swiglu", vec![96, 96], true),
                ("swiglu", vec![96, 96], false),
            ] {
                let mut op = Fused::new(&mut rng, kind, &[ty; 3][..rows.len()], &rows, tokens);
                let first = grouped(&mut rng, op.ws[0].clone(), None);
                let order = shared.then(|| first.input_order.clone()).flatten();
                op.ws = std::iter::once(first)
                    .chain(
                        op.ws[1..]
                            .iter()
                            .map(|w| grouped(&mut rng, w.clone(), order.clone())),
                    )
                    .collect();
                out.push(Outcome {
                    op: "grouped_vs_f64",
                    case: op.case(),
                    rel_err: rel_err(&op.exact(), &op.run(b)),
                });
            }
        }
    }

    // The fused products: one and several tokens (the latter the ops one by
    // one), and a batch past the one-token kernels (a GPU's tiles, one f16
    // copy of x for a run), a run of one type then another, gate and up of
    // one type and of two, and sizes past what one block a multiprocessor
    // takes (a GPU's two-rows-a-warp kernels).
    for &ty in WEIGHT_TYPES {
        let other = if ty == GgmlType::Q6_K {
            GgmlType::Q4_K
        } else {
            GgmlType::Q6_K
        };
        for tokens in [1, 3, 20] {
            let cases: [(&str, Vec<GgmlType>, Vec<usize>); 5] = [
                ("matmuls", vec![ty, ty, other], vec![17, 5, 33]),
                ("add", vec![ty], vec![33]),
                ("swiglu", vec![ty, ty], vec![17, 17]),
                ("geglu", vec![ty, ty], vec![9, 9]),
                ("swiglu", vec![ty, other], vec![9, 9]),
            ];
            for (kind, types, rows) in cases {
                let op = Fused::new(&mut rng, kind, &types, &rows, tokens);
                push_fused(&mut out, &op, &r, b);
            }
            // A layer's input norm applied as the products read x.
            for (kind, types, rows) in [
                ("matmuls", vec![ty, ty, ty], vec![17, 5, 33]),
                ("swiglu", vec![ty, ty], vec![17, 17]),
            ] {
                let op = Fused::new(&mut rng, kind, &types, &rows, tokens).normed(&mut rng);
                push_fused(&mut out, &op, &r, b);
            }
        }
    }
    // Batches of 300 tokens: on Hopper the warpgroup products with the
    // residual add or the gated activation in their epilogues (F16 rows as
    // they are, the others dequantised; gate and up of two types apart).
    for ty in [GgmlType::F16, GgmlType::Q4_K, GgmlType::Q8_0] {
        let cases: [(&str, Vec<GgmlType>, Vec<usize>); 4] = [
            ("add", vec![ty], vec![33]),
            ("swiglu", vec![ty, ty], vec![70, 70]),
            ("geglu", vec![ty, ty], vec![9, 9]),
            ("swiglu", vec![ty, GgmlType::Q6_K], vec![9, 9]),
        ];
        for (kind, types, rows) in cases {
            let op = Fused::new(&mut rng, kind, &types, &rows, 300);
            push_fused(&mut out, &op, &r, b);
        }
    }
    for ty in [GgmlType::Q4_K, GgmlType::Q8_0] {
        push_large_fused(&mut out, &mut rng, ty, &r, b);
    }

    for (rows, width) in [(1, 7), (3, 64), (5, 640)] {
        for in_place in [false, true] {
            let op = Norm {
                x: rng.vec(rows * width, 3.0),
                w: rng.vec(width, 1.0),
                rows,
                in_place,
            };
            out.push(outcome(&op, &r, b));
        }
        for kind in [
            "add_bias",
            "add",
            "scale",
            "copy_cols",
            "copy_rows",
            "swiglu",
            "geglu",
        ] {
            let op = Elementwise {
                kind,
                x: rng.vec(rows * width, 4.0),
                y: rng.vec(rows * width, 4.0),
                rows,
                width,
            };
            out.push(outcome(&op, &r, b));
        }
    }

    for (neox, n_rot, yarn, factors, pos0) in [
        (false, 64, false, false, 0),
        (true, 64, false, false, 4095),
        (true, 32, false, true, 17),
        (false, 64, true, false, 9000),
        (true, 64, true, true, 123),
    ] {
        let (tokens, n_heads, head_dim) = (3, 4, 64);
        let mut rope = Rope::plain(n_rot, 10000.0, neox);
        if yarn {
            rope.freq_scale = 0.25;
            rope.ext_factor = 1.0;
            rope.corr_dims = yarn_corr_dims(n_rot, 32, 10000.0, 32.0, 1.0);
        }
        let op = RopeOp {
            x: rng.vec(tokens * n_heads * head_dim, 2.0),
            tokens,
            n_heads,
            head_dim,
            rope,
            factors: factors.then(|| (0..n_rot / 2).map(|i| 1.0 + i as f32 * 0.5).collect()),
            pos0,
        };
        out.push(outcome(&op, &r, b));
    }

    // Every GQA ratio in use (1, 2, 4, 8), batch 1 and > 1, a full cache and
    // a sliding-window ring with positions at the window's edge, short and
    // long caches.
    let window = 16;
    for case in [
        (4, 4, 64, None, 64, 0, 1),
        (4, 4, 64, None, 300, 270, 1),
        (8, 4, 64, None, 64, 10, 7),
        (8, 2, 128, None, 64, 3, 1),
        (8, 1, 64, None, 40, 20, 20),
        (4, 1, 256, Some(window), window + 8, window - 1, 1),
        (4, 1, 256, Some(window), window + 8, window, 1),
        (4, 2, 64, Some(window), window + 8, 3 * window + 5, 8),
        // Caches long enough that a device may split a decode step's cells.
        (8, 2, 128, None, 1100, 900, 1),
        (4, 4, 64, None, 600, 590, 3),
        (4, 2, 128, Some(300), 812, 1500, 2),
        // Sixteen splits; a head size without a 16-byte decode kernel.
        (8, 2, 128, None, 4200, 4000, 1),
        (4, 2, 96, None, 700, 650, 1),
        (4, 1, 256, None, 1300, 1200, 2),
        // Prompt batches of the head sizes with tensor-core kernels: several
        // blocks of queries and tiles of cells, a sliding window in a ring
        // that has wrapped.
        (8, 2, 128, None, 200, 100, 70),
        (4, 2, 64, Some(window), window + 40, 3 * window + 5, 40),
        (4, 1, 128, Some(100), 400, 700, 150),
    ]
    .into_iter()
    .map(|case| (case, None))
    // rope_store: batch 1 and > 1, full and partial rotation, both layouts.
    .chain([
        (
            (8, 2, 64, None, 64, 10, 1),
            Some(Rope::plain(64, 10000.0, false)),
        ),
        (
            (4, 4, 128, None, 64, 5, 3),
            Some(Rope::plain(32, 10000.0, true)),
        ),
        (
            (4, 2, 64, Some(window), window + 8, 2 * window, 1),
            Some(Rope::plain(64, 500.0, true)),
        ),
    ]) {
        let (shape, rope) = case;
        let op = AttentionOp::random(&mut rng, shape, rope, KvTypes::F16);
        out.push(outcome(&op, &r, b));
    }
    // rope_store_attention: decode steps (one split and several, a ring that
    // has wrapped under a window, head sizes with and without a fused
    // kernel) and a batch.
    for (shape, rope) in [
        (
            (8, 2, 128, None, 64, 20, 1),
            Rope::plain(128, 10000.0, false),
        ),
        ((4, 4, 64, None, 40, 39, 1), Rope::plain(32, 10000.0, true)),
        (
            (4, 1, 256, None, 1300, 1200, 1),
            Rope::plain(256, 1e6, false),
        ),
        (
            (8, 2, 128, None, 4200, 4000, 1),
            Rope::plain(128, 5e5, true),
        ),
        (
            (4, 2, 64, Some(window), window + 8, 3 * window + 5, 1),
            Rope::plain(64, 500.0, true),
        ),
        (
            (4, 2, 96, None, 700, 650, 1),
            Rope::plain(96, 10000.0, false),
        ),
        (
            (8, 2, 128, None, 64, 10, 3),
            Rope::plain(128, 10000.0, false),
        ),
    ] {
        let op = RopeAttentionOp::random(&mut rng, shape, rope);
        out.push(outcome(&op, &r, b));
    }
    if caches == Caches::All {
        push_quantised_caches(&mut out, &mut rng, &r, b);
    }
    push_q6_k_rows(&mut out, seed, &r, b);
    out
}

/// Q6_K's rows at any even byte: one token's products of rows of an odd
/// count of super-blocks (a row at 2 mod 4 every other row), and fused
/// products past what one block a multiprocessor takes. Data of their own
/// (the other cases keep theirs).
fn push_q6_k_rows<R: Backend, B: Backend>(out: &mut Vec<Outcome>, seed: u64, r: &R, b: &B) {
    let mut rng = Rng::new(seed ^ 0x0606);
    push_matmul(out, &mut rng, (GgmlType::Q6_K, 33, 2816), 1, r, b);
    push_large_fused(out, &mut rng, GgmlType::Q6_K, r, b);
}

/// A random `ty` weight of `rows` x `cols` times `tokens` random inputs,
/// against the reference backend ("matmul") and the exact product
/// ("matmul_vs_f64").
fn push_matmul<R: Backend, B: Backend>(
    out: &mut Vec<Outcome>,
    rng: &mut Rng,
    (ty, rows, cols): (GgmlType, usize, usize),
    tokens: usize,
    reference: &R,
    b: &B,
) {
    let op = MatMul {
        w: random_mat(rng, ty, rows, cols),
        x: rng.vec(tokens * cols, 2.0),
        tokens,
    };
    let got = op.run(b);
    out.push(Outcome {
        op: "matmul",
        case: op.case(),
        rel_err: rel_err(&op.run(reference), &got),
    });
    out.push(Outcome {
        op: "matmul_vs_f64",
        case: op.case(),
        rel_err: rel_err(&exact_matmul(&op.w, &op.x, tokens), &got),
    });
}

/// One token's fused products of `ty` past what one block a
/// multiprocessor takes (a GPU's two-rows-a-warp kernels).
fn push_large_fused<R: Backend, B: Backend>(
    out: &mut Vec<Outcome>,
    rng: &mut Rng,
    ty: GgmlType,
    reference: &R,
    b: &B,
) {
    for (kind, types, rows) in [
        ("matmuls", vec![ty, ty, ty], vec![2200, 300, 300]),
        ("add", vec![ty], vec![2300]),
        ("swiglu", vec![ty, ty], vec![2300, 2300]),
    ] {
        let op = Fused::new(rng, kind, &types, &rows, 1);
        push_fused(out, &op, reference, b);
    }
}

/// Attention over caches of every other type, and pairs of two types: each
/// against the reference backend ("attention" / "rope_store") and against
/// f64 attention over the same stored cache ("attention_vs_f64").
fn push_quantised_caches<R: Backend, B: Backend>(
    out: &mut Vec<Outcome>,
    rng: &mut Rng,
    r: &R,
    b: &B,
) {
    use GgmlType::*;
    let pairs = [
        (Q8_0, Q8_0),
        (Q4_0, Q4_0),
        (Q4_1, Q4_1),
        (Q5_0, Q5_0),
        (Q5_1, Q5_1),
        (IQ4_NL, IQ4_NL),
        (BF16, BF16),
        (Q8_0, F16),
        (F16, Q4_0),
        (Q4_0, Q8_0),
    ];
    // Decode over a split cache, a short one, a prompt batch, a sliding
    // window's ring, a head without a vector kernel rotated in pieces of 64,
    // and one too odd to rotate at all.
    let shapes = [
        (8, 2, 128, None, 1100, 900, 1),
        (4, 4, 64, None, 64, 10, 1),
        (8, 2, 64, None, 80, 30, 20),
        (4, 1, 256, Some(16), 24, 40, 1),
        (4, 2, 192, None, 96, 50, 2),
        (4, 2, 96, None, 64, 20, 1),
    ];
    let cases = pairs.iter().enumerate().flat_map(|(i, &(k, v))| {
        [shapes[i % 6], shapes[(i + 2) % 6]]
            .into_iter()
            .map(move |shape| (KvTypes { k, v }, shape, None))
    });
    let roped = (
        KvTypes { k: Q8_0, v: Q4_0 },
        (8, 2, 64, None, 64, 10, 3),
        Some(Rope::plain(64, 10000.0, false)),
    );
    for (types, shape, rope) in cases.chain([roped]) {
        let op = AttentionOp::random(rng, shape, rope, types);
        let got = op.run(b);
        out.push(Outcome {
            op: op.name(),
            case: op.case(),
            rel_err: rel_err(&op.run(r), &got),
        });
        if let Some(exact) = op.exact_over_cache() {
            out.push(Outcome {
                op: "attention_vs_f64",
                case: op.case(),
                rel_err: rel_err(&exact, &got[..exact.len()]),
            });
        }
    }
}

/// A fused product against the reference backend ("fused") and against
/// the exact products ("fused_vs_f64").
fn push_fused<R: Backend, B: Backend>(out: &mut Vec<Outcome>, op: &Fused, reference: &R, b: &B) {
    let got = op.run(b);
    out.push(Outcome {
        op: "fused",
        case: op.case(),
        rel_err: rel_err(&op.run(reference), &got),
    });
    out.push(Outcome {
        op: "fused_vs_f64",
        case: op.case(),
        rel_err: rel_err(&op.exact(), &got),
    });
}

/// The outcomes over `tolerance`, one line each, for an assertion message.
pub fn failures(outcomes: &[Outcome], tolerance: impl Fn(&Outcome) -> f64) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.rel_err.is_nan() || o.rel_err > tolerance(o))
        .map(|o| format!("{} [{}]: relative error {:.3e}", o.op, o.case, o.rel_err))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU backend on every instruction set this machine has, with
    /// several threads, against the portable kernels on one: identical,
    /// except where an ISA sums floats in its own lane order (f16 and IQ4_XS
    /// dots, as ggml's do) or has its own exp (softmax, SiLU): within rounding there.
    /// Attention stores probabilities as f16, so an exp one ulp apart can
    /// move a probability by one f16 step (2^-11 relative).
    #[test]
    fn cpu_backend_matches_the_scalar_reference_on_every_op() {
        for isa in Isa::available() {
            let b = CpuBackend::new(3, isa);
            let outcomes = check(&b, 7);
            let bad = failures(&outcomes, |o| match o.op {
                "attention" | "rope_store" | "rope_store_attention" => 1e-3,
                // Queries quantised to the K cache's dot partner (8 bits,
                // or bf16), f16 value sums where V is f16, as ggml does.
                "attention_vs_f64" => 2e-2,
                "swiglu" => 1e-6,
                // Activations quantised to 8 bits, as ggml does: a bound
                // that catches a wrong kernel, not a measure of precision
                // (one short row of Q2_K is off by 3% against the max).
                "matmul_vs_f64" | "fused_vs_f64" => 1e-1,
                "matmul" if o.case.starts_with('F') || o.case.starts_with("BF") => 1e-6,
                // x86 sums IQ4_XS in eight lanes, as ggml's AVX2 build does;
                // the portable kernel, as ggml's generic C does.
                "matmul" if o.case.starts_with("IQ4_XS") => 1e-6,
                // Q4_0 and IQ4_NL regrouped eight rows at a time on x86:
                // four tokens at once sum a block in one integer (the
                // one-token order stays ggml's; `interleaved`).
                "matmul" if o.case.starts_with("Q4_0") || o.case.starts_with("IQ4_NL") => 1e-6,
                // F16 and BF16 weights' dot products and SiLU's exp, per ISA.
                "fused" => 1e-6,
                // Fine activations (two 8-bit levels on one scale): within
                // 3.1e-5 of a block's largest value.
                "grouped_vs_f64" => 1e-4,
                _ => 0.0,
            });
            assert!(bad.is_empty(), "{}:\n{}", isa.name(), bad.join("\n"));
            assert!(outcomes.len() > 90, "every op ran");
        }
    }

    /// The check can fail: a backend that gets one op wrong is caught.
    #[test]
    fn a_wrong_op_is_caught() {
        let r = reference();
        let mut rng = Rng::new(1);
        let op = Norm {
            x: rng.vec(64, 3.0),
            w: rng.vec(64, 1.0),
            rows: 1,
            in_place: false,
        };
        let good = op.run(&r);
        let mut bad = good.clone();
        bad[5] *= 1.001;
        assert!(rel_err(&good, &bad) > 1e-5);
        assert_eq!(rel_err(&good, &good), 0.0);
    }
}
