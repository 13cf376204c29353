//! The backend seam: what a device (the CPU, a CUDA GPU, an Apple GPU) must
//! provide for the forward pass to run a range of layers on it.
//!
//! A backend owns its buffers: activations (`Buf`), weights uploaded once
//! (`Mat`, small `Vector`s), one KV cache per layer (`Kv`) and per-sequence
//! working memory (`Scratch`). The forward pass is generic over this trait and
//! names no device; the hidden state crosses to and from the host only at the
//! ends of a layer range (`write` / `read`).
//!
//! The shape of the ops is chosen so that a GPU backend can record a decode
//! step once and replay it: every op takes its row count explicitly, buffers
//! are sized once by `buf(len)` (a backend may allocate them eagerly; the CPU
//! one grows them lazily), and nothing in an op needs the host.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

pub use crate::kv_types::KvTypes;
use crate::rope::Rope;
use crate::GgmlType;

/// How a weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    Ggml(GgmlType),
    /// A group-quantised Hugging Face layer (GPTQ, AWQ, EXL2) re-encoded
    /// without loss in ggml's blocks. Its libraries multiply it with f16
    /// activations, so its products keep activations at least that precise
    /// (ggml's one 8-bit level would move logits by several hundredths).
    Grouped(GgmlType),
}

impl WeightFormat {
    /// The block type the bytes are in.
    pub fn ggml(self) -> GgmlType {
        match self {
            WeightFormat::Ggml(t) | WeightFormat::Grouped(t) => t,
        }
    }

    /// Whether products must keep activations to f16 precision or better.
    pub fn precise_activations(self) -> bool {
        matches!(self, WeightFormat::Grouped(_))
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightFormat::Ggml(t) => write!(f, "{}", t.name()),
            WeightFormat::Grouped(t) => write!(f, "{} (group-quantised)", t.name()),
        }
    }
}

/// A weight matrix as it lies in host memory (usually a file mapping): `rows`
/// outputs by `cols` inputs, row-major, each row `row_bytes` long.
#[derive(Clone)]
pub struct HostMat {
    pub name: String,
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    /// Keeps the memory behind `bytes` alive (the mapped file).
    pub owner: Arc<dyn Any + Send + Sync>,
    /// Start and length of the tensor's bytes; valid while `owner` lives.
    pub ptr: *const u8,
    pub len: usize,
    /// Where each stored input comes from: column k multiplies input
    /// `input_order[k]` (group-quantised formats store their inputs in group
    /// order). None: in order.
    pub input_order: Option<Arc<[u32]>>,
    /// The bytes are a read-only file mapping: their pages may be dropped
    /// from this process (a backend that keeps its own copy does) and read
    /// back from the file if touched again.
    pub mapped: bool,
}

// SAFETY: the bytes are read-only and kept alive by `owner`, which is Send + Sync.
unsafe impl Send for HostMat {}
unsafe impl Sync for HostMat {}

impl HostMat {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `owner` keeps the memory mapped and nothing writes to it.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The gated activations of the feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// silu(gate) * up
    SwiGlu,
    /// gelu(gate) * up, with ggml's tanh approximation
    GeGlu,
}

/// Shapes and settings of one attention op.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Sliding window in tokens, for local layers.
    pub window: Option<usize>,
    /// Multiplies the scores (1 where Q was scaled instead).
    pub kq_scale: f32,
}

/// A device that can take a large batched matmul off the CPU: the weight
/// travels to it for the one product (llama.cpp does the same for prompt
/// batches of the layers it keeps on the CPU). Only batches of at least
/// `min_tokens()` rows are offered, so the one-token path stays the CPU's.
/// Host bytes go through `copy` (the caller's threads) into the device's
/// pinned memory: one thread alone copies slower than the bus.
pub trait MatmulOffload: Send + Sync {
    fn min_tokens(&self) -> usize;
    /// `out_i[t][r] = W_i[r] · x[t]` for `tokens` rows of one input, which
    /// crosses once; an error leaves the products to the CPU.
    fn matmuls_host(
        &self,
        x: &[f32],
        tokens: usize,
        products: &mut [(&HostMat, &mut [f32])],
        copy: &HostCopy<'_>,
    ) -> Result<(), BackendError>;
    /// `out = act(W_gate · x) * (W_up · x)`: only `out` crosses back.
    #[allow(clippy::too_many_arguments)]
    fn matmul_glu_host(
        &self,
        act: Glu,
        gate: &HostMat,
        up: &HostMat,
        x: &[f32],
        tokens: usize,
        out: &mut [f32],
        copy: &HostCopy<'_>,
    ) -> Result<(), BackendError>;
}

/// Copies the first slice into the second (same length), perhaps on several
/// threads.
pub type HostCopy<'a> = dyn Fn(&[u8], &mut [u8]) + Sync + 'a;

/// The alignment of each weight in a device's reserved room.
pub const WEIGHT_ALIGN: usize = 256;

/// What a backend reports when it cannot do what was asked: one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError(pub String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

/// A device that runs layers. All row-wise ops work on the first `rows` rows
/// of their buffers; widths come from the weights or are given.
pub trait Backend: Send + Sync {
    /// Activations: f32, row-major.
    type Buf: Send;
    /// A weight matrix in the device's layout for its format.
    type Mat: Send + Sync;
    /// A small f32 vector: norm weights, biases, rope frequency factors.
    type Vector: Send + Sync;
    /// One layer's KV cache of `cells` cells.
    type Kv: Send;
    /// Per-sequence working memory of the ops (quantised activations, scores).
    type Scratch: Send;

    /// For messages and plans: "CPU", "CUDA0 (NVIDIA H200)".
    fn name(&self) -> String;

    /// An activation buffer of room for `len` floats.
    fn buf(&self, len: usize) -> Result<Self::Buf, BackendError>;
    fn scratch(&self) -> Result<Self::Scratch, BackendError>;
    /// Room for `bytes` of weights about to be uploaded (matrices and
    /// vectors, each rounded up to WEIGHT_ALIGN), so a device can take them
    /// in one allocation rather than many (each of which it may round up).
    fn reserve(&self, _bytes: usize) -> Result<(), BackendError> {
        Ok(())
    }
    fn upload_mat(&self, w: &HostMat) -> Result<Self::Mat, BackendError>;
    fn upload_vector(&self, v: &[f32]) -> Result<Self::Vector, BackendError>;
    /// A KV cache of `cells` cells of `kv_dim` keys and values each (heads
    /// of `head_dim`), of `types`; a device without attention for those
    /// types says so.
    fn kv(
        &self,
        cells: usize,
        kv_dim: usize,
        head_dim: usize,
        types: KvTypes,
    ) -> Result<Self::Kv, BackendError>;
    /// Bytes a `kv(cells, kv_dim, types)` allocates (the planner counts with it).
    fn kv_bytes(cells: usize, kv_dim: usize, types: KvTypes) -> usize;
    /// Bytes a cache really holds (tests hold it to `kv_bytes`).
    fn kv_allocated(&self, kv: &Self::Kv) -> usize;

    /// `src` from the host into the first `src.len()` floats of `dst`.
    fn write(&self, src: &[f32], dst: &mut Self::Buf);
    /// `write` of the `n` floats that `fill` puts in the slice it is given:
    /// a device that copies from its own host memory has them written there
    /// directly (a 7B's 512-token batch of embeddings is 8 MB, which took
    /// the GPU's host a millisecond to copy once more).
    fn write_with(&self, n: usize, fill: &mut dyn FnMut(&mut [f32]), dst: &mut Self::Buf) {
        let mut v = vec![0.0; n];
        fill(&mut v);
        self.write(&v, dst);
    }
    /// The first `dst.len()` floats of `src` to the host. This is where a
    /// device that runs ops asynchronously waits for them, and reports the
    /// first op that failed since the last read.
    fn read(&self, src: &Self::Buf, dst: &mut [f32]) -> Result<(), BackendError>;

    /// Starts a batch of `tokens` tokens at positions `pos0..`: a backend
    /// whose ops read the positions from device memory (so that a recorded
    /// step replays anywhere) sets them here.
    fn begin(&self, _sc: &mut Self::Scratch, _pos0: usize, _tokens: usize) {}

    /// Replays the ops recorded under `key` for this scratch, if any: true
    /// when it did (the caller then skips issuing them). Otherwise a backend
    /// that records may start recording the ops that follow, up to
    /// `end_recording`. Positions come from `begin`, so only ops whose other
    /// arguments depend on `key` alone may be recorded.
    fn replay(&self, _sc: &mut Self::Scratch, _key: u64) -> bool {
        false
    }

    /// Ends the recording that `replay` started, and runs what was recorded.
    fn end_recording(&self, _sc: &mut Self::Scratch, _key: u64) {}

    /// `out[t][r] = W[r] · x[t]` for `rows` token rows.
    fn matmul(
        &self,
        sc: &mut Self::Scratch,
        w: &Self::Mat,
        x: &Self::Buf,
        rows: usize,
        out: &mut Self::Buf,
    );
    /// `out_i = W_i · x` for products of one input (q, k and v): a device
    /// may run them as one, preparing `x` once.
    fn matmuls(
        &self,
        sc: &mut Self::Scratch,
        x: &Self::Buf,
        rows: usize,
        products: &mut [(&Self::Mat, &mut Self::Buf)],
    ) {
        for (w, out) in products.iter_mut() {
            self.matmul(sc, w, x, rows, out);
        }
    }
    /// `acc += W · x` (the residual stream), for `rows` token rows of `width`
    /// outputs; `tmp` is room for the product where a device wants it.
    #[allow(clippy::too_many_arguments)]
    fn matmul_add(
        &self,
        sc: &mut Self::Scratch,
        w: &Self::Mat,
        x: &Self::Buf,
        rows: usize,
        width: usize,
        acc: &mut Self::Buf,
        tmp: &mut Self::Buf,
    ) {
        self.matmul(sc, w, x, rows, tmp);
        self.add(acc, tmp, rows * width);
    }
    /// `gate = act(W_gate · x) * (W_up · x)`, for `rows` token rows of
    /// `width` outputs; `up` is room for the up product where a device wants it.
    #[allow(clippy::too_many_arguments)]
    fn matmul_glu(
        &self,
        sc: &mut Self::Scratch,
        act: Glu,
        w_gate: &Self::Mat,
        w_up: &Self::Mat,
        x: &Self::Buf,
        rows: usize,
        width: usize,
        gate: &mut Self::Buf,
        up: &mut Self::Buf,
    ) {
        self.matmuls(sc, x, rows, &mut [(w_gate, &mut *gate), (w_up, &mut *up)]);
        self.glu(act, gate, up, rows * width);
    }
    /// `xb = rms_norm(x) * norm`, then `out_i = W_i · xb` (a layer's input
    /// norm and the products that read it): a device may apply the norm as
    /// the products read `x`, leaving `xb` as it was.
    #[allow(clippy::too_many_arguments)]
    fn matmuls_normed(
        &self,
        sc: &mut Self::Scratch,
        x: &Self::Buf,
        norm: &Self::Vector,
        eps: f32,
        rows: usize,
        xb: &mut Self::Buf,
        products: &mut [(&Self::Mat, &mut Self::Buf)],
    ) {
        self.rms_norm(x, norm, eps, rows, xb);
        self.matmuls(sc, xb, rows, products);
    }
    /// `xb = rms_norm(x) * norm`, then `matmul_glu` of `xb`, likewise.
    #[allow(clippy::too_many_arguments)]
    fn matmul_glu_normed(
        &self,
        sc: &mut Self::Scratch,
        x: &Self::Buf,
        norm: &Self::Vector,
        eps: f32,
        xb: &mut Self::Buf,
        act: Glu,
        w_gate: &Self::Mat,
        w_up: &Self::Mat,
        rows: usize,
        width: usize,
        gate: &mut Self::Buf,
        up: &mut Self::Buf,
    ) {
        self.rms_norm(x, norm, eps, rows, xb);
        self.matmul_glu(sc, act, w_gate, w_up, xb, rows, width, gate, up);
    }
    /// `dst = rms_norm(src) * w`, row by row (row width: `w`'s length).
    fn rms_norm(
        &self,
        src: &Self::Buf,
        w: &Self::Vector,
        eps: f32,
        rows: usize,
        dst: &mut Self::Buf,
    );
    /// The same in place; also per head (rows = tokens × heads).
    fn rms_norm_in_place(&self, x: &mut Self::Buf, w: &Self::Vector, eps: f32, rows: usize);
    /// `x[r] += bias` for every row.
    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Vector, rows: usize);
    /// `x += y` over `len` floats (the residual).
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf, len: usize);
    fn scale(&self, x: &mut Self::Buf, s: f32, len: usize);
    /// `dst[r][..width] = src[r][col0..col0 + width]` (splits fused projections).
    fn copy_cols(
        &self,
        src: &Self::Buf,
        src_width: usize,
        col0: usize,
        width: usize,
        rows: usize,
        dst: &mut Self::Buf,
    );
    /// `dst[..rows] = src[row0..row0 + rows]`, rows of `width`.
    fn copy_rows(
        &self,
        src: &Self::Buf,
        row0: usize,
        rows: usize,
        width: usize,
        dst: &mut Self::Buf,
    );
    /// Rotates every head of `tokens` rows of `n_heads × head_dim`, token i at
    /// position `pos0 + i`.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        sc: &mut Self::Scratch,
        x: &mut Self::Buf,
        tokens: usize,
        n_heads: usize,
        head_dim: usize,
        rope: &Rope,
        freq_factors: Option<&Self::Vector>,
        pos0: usize,
    );
    /// Stores K and V of `tokens` tokens at positions `pos0..` (cell = pos mod cells).
    fn kv_store(
        &self,
        sc: &mut Self::Scratch,
        kv: &mut Self::Kv,
        k: &Self::Buf,
        v: &Self::Buf,
        pos0: usize,
        tokens: usize,
    );
    /// `rope` on `q` (n_head heads) and `k` (n_head_kv heads), then
    /// `kv_store` of k and v: the attention block's steps between its
    /// projections and attention, which a device may run as one.
    #[allow(clippy::too_many_arguments)]
    fn rope_store(
        &self,
        sc: &mut Self::Scratch,
        kv: &mut Self::Kv,
        q: &mut Self::Buf,
        k: &mut Self::Buf,
        v: &Self::Buf,
        tokens: usize,
        heads: (usize, usize),
        head_dim: usize,
        rope: &Rope,
        freq_factors: Option<&Self::Vector>,
        pos0: usize,
    ) {
        let (n_head, n_head_kv) = heads;
        self.rope(sc, q, tokens, n_head, head_dim, rope, freq_factors, pos0);
        self.rope(sc, k, tokens, n_head_kv, head_dim, rope, freq_factors, pos0);
        self.kv_store(sc, kv, k, v, pos0, tokens);
    }
    /// `rope_store` (heads and head size from `a`), then `attention` of the
    /// rotated q: the attention block's steps from its projections to its
    /// output, which a device may run as one launch. Afterwards q and k
    /// hold what the device left there (rotated or not).
    #[allow(clippy::too_many_arguments)]
    fn rope_store_attention(
        &self,
        sc: &mut Self::Scratch,
        kv: &mut Self::Kv,
        (q, k, v): (&mut Self::Buf, &mut Self::Buf, &Self::Buf),
        tokens: usize,
        rope: &Rope,
        freq_factors: Option<&Self::Vector>,
        pos0: usize,
        a: &Attention,
        out: &mut Self::Buf,
    ) {
        rope_store_then_attention(
            self,
            sc,
            kv,
            (q, k, v),
            tokens,
            rope,
            freq_factors,
            pos0,
            a,
            out,
        );
    }
    /// Causal attention of `tokens` queries at positions `pos0..` over the
    /// cache, into `out` (tokens × n_head × head_dim).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        sc: &mut Self::Scratch,
        kv: &Self::Kv,
        q: &Self::Buf,
        pos0: usize,
        tokens: usize,
        a: &Attention,
        out: &mut Self::Buf,
    );
    /// `gate = act(gate) * up` over `len` floats.
    fn glu(&self, act: Glu, gate: &mut Self::Buf, up: &Self::Buf, len: usize);
}

/// `Backend::rope_store_attention` as two ops, for a backend's own version
/// to fall back on where it cannot fuse them.
#[allow(clippy::too_many_arguments)]
pub fn rope_store_then_attention<B: Backend + ?Sized>(
    b: &B,
    sc: &mut B::Scratch,
    kv: &mut B::Kv,
    (q, k, v): (&mut B::Buf, &mut B::Buf, &B::Buf),
    tokens: usize,
    rope: &Rope,
    freq_factors: Option<&B::Vector>,
    pos0: usize,
    a: &Attention,
    out: &mut B::Buf,
) {
    let heads = (a.n_head, a.n_head_kv);
    b.rope_store(
        sc,
        kv,
        q,
        k,
        v,
        tokens,
        heads,
        a.head_dim,
        rope,
        freq_factors,
        pos0,
    );
    b.attention(sc, kv, q, pos0, tokens, a, out);
}
