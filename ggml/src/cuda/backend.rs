//! One NVIDIA GPU as a backend: weights, KV caches and activations in device
//! memory, every op a kernel on one stream, the hidden state crossing to and
//! from the host through pinned memory. Ops are asynchronous; the first
//! failure is kept and reported by the next `read`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::driver::{
    check, Context, CuResult, DeviceInfo, DeviceMem, EarlyLaunches, Event, Function, Graph,
    KernelArg, Module, PinnedMem, Stream,
};
use super::kvcache::QuantKvKernels;
use super::matvec1::{self, gather_in_matvec1, Epilogue, Matvec1};
use super::tile::{Tile, TILE_THREADS};
use crate::backend::{
    rope_store_then_attention, Attention, Backend, BackendError, Glu, HostCopy, HostMat, KvTypes,
    MatmulOffload, WEIGHT_ALIGN,
};
use crate::rope::Rope;
use crate::GgmlType;

/// Up to this many tokens a mat-vec kernel reads each weight once for all of
/// them; more go through the tiled tensor-core matmul.
const MATVEC_MAX_TOKENS: usize = 8;

/// Weights go to the device through pinned memory in pieces of this size.
const UPLOAD_CHUNK: usize = 16 << 20;

pub(super) struct Kernels {
    rms_norm: Function,
    add_bias: Function,
    add: Function,
    scale: Function,
    copy_cols: Function,
    gather_cols: Function,
    swiglu: Function,
    geglu: Function,
    rope: Function,
    rope_store: Function,
    kv_store: Function,
    attention: Function,
    /// Prompt batches' attention (AQ = 8 queries a block), unless
    /// LLM_CUDA_SIMPLE_ATTENTION is set.
    attention_prompt: Option<Function>,
    /// Prompt batches' attention on tensor cores for head sizes 64 and 128
    /// with its dynamic shared memory (attention_tc.cu), where this GPU
    /// gives it that; not with LLM_CUDA_SIMPLE_ATTENTION or
    /// LLM_CUDA_NO_TC_ATTENTION.
    attention_prompt_tc: [Option<(Function, u32)>; 2],
    /// The same in one pass with an online softmax (attention_tc.cu's
    /// attention_prompt_fa), compute capability 8.0 on, where the
    /// tensor-core kernels are and not with LLM_CUDA_PROMPT_FA=0: on the
    /// H200, 7B of Q4_K, pp512 14297 -> 15251 tokens/s, pp2048 13077 ->
    /// 14398; F16 pp512 16510 -> 17498.
    attention_prompt_fa: [Option<(Function, u32)>; 2],
    attention_split: Function,
    attention_merge: Function,
    /// Decode attention reading 16 bytes a lane, for head sizes 64, 128
    /// and 256 (None with LLM_CUDA_SIMPLE_ATTENTION).
    attention_vec: [Option<Function>; 3],
    /// A decode step's rope_store and attention_vec in one launch (f16
    /// caches, one token), for the same head sizes, unless
    /// LLM_CUDA_FUSED_ROPE=0. It lost to the two launches on the H200 while
    /// only the products launched early (7B of Q4_K tg128 347.6 against
    /// 355.6 tokens/s, a 1B 1306.8 against 1320.4); with every kernel
    /// early it won on the H100 (session 35, alternated twice: 7B Q4_K
    /// 456.6 / 457.3 against 432.8 / 435.0, at depth 4096 330.0 / 331.9
    /// against 314.9 / 313.2, a 1B 1563.3 / 1566.1 against 1465.5 /
    /// 1467.9, 7B F16 190.4 / 191.2 against 185.4 / 184.9).
    rope_attention_vec: [Option<Function>; 3],
    /// The product kernels of each weight type.
    matmul: HashMap<GgmlType, MatKernels>,
    /// Activations f32 -> f16 for tile.cu's products.
    to_half: Function,
    /// Hopper's warpgroup products of f16 rows (gemm_sm90.cu), for batches
    /// of at least `wgmma_tokens` tokens (LLM_CUDA_WGMMA=0: none).
    wgmma: Option<Tile>,
    /// Their forms that add the product to a residual and that take a
    /// GLU's gate and up at once, its activation applied (none with
    /// LLM_CUDA_WGMMA_FUSE=0, for timing).
    wgmma_add: Option<Tile>,
    wgmma_glu: Option<Tile>,
    /// Caches of other types than f16 (kvcache.rs).
    pub(super) kvq: QuantKvKernels,
}

struct MatKernels {
    /// One token of the integer-dot types (unless LLM_CUDA_FLOAT_MATVEC or
    /// LLM_CUDA_NO_MATVEC1 is set).
    matvec1: Option<Matvec1>,
    /// Up to MATVEC_MAX_TOKENS tokens: the integer-dot matvec (matvecx_<t>,
    /// 16-bit activations) where the type has it, unless
    /// LLM_CUDA_FLOAT_MATVEC is set, else the float one.
    matvec: Function,
    matmul: Function,
    /// Past MATVEC_MAX_TOKENS, tile.cu's large tiles where this GPU runs
    /// them (LLM_CUDA_NO_TILE=1: matmul.cu's 64x64 ones, for timing).
    tile: Option<Tile>,
    /// How gemm_sm90.cu's products take this type's weights, where they
    /// are loaded (`Kernels::wgmma`).
    half_rows: HalfRows,
}

/// The way to f16 rows for gemm_sm90.cu: F16 weights are already (where
/// 16-byte aligned), the quantised types are dequantised into a scratch
/// first (tile.cu's dequant_half_<t>).
enum HalfRows {
    Direct,
    Dequantised(Function),
    None,
}

pub struct CudaBackend {
    info: DeviceInfo,
    pub(super) kernels: Kernels,
    /// Host side of the crossings (`write`, `read`), grown as needed.
    staging: Mutex<PinnedMem>,
    /// The first op failure since the last `read`.
    error: Mutex<Option<BackendError>>,
    /// Where uploaded weights go, once `reserve` has been called.
    rooms: Mutex<Vec<Room>>,
    /// The widest weight with an input order (for `CudaScratch::gathered`).
    ordered_cols: AtomicUsize,
    /// The widest weight (for `CudaScratch::lean_x`).
    widest_cols: AtomicUsize,
    /// Input orders uploaded, by the host's shared copy: weights of one
    /// input share one (and so one gather, one launch).
    orders: Mutex<Vec<UploadedOrder>>,
    /// Room for the CPU's offloaded matmuls.
    offload: Mutex<Option<OffloadRoom>>,
    /// A tiled product's activations in f16, grown as needed.
    half_x: Mutex<Option<DeviceMem>>,
    /// A quantised weight dequantised for gemm_sm90.cu, grown as needed.
    half_w: Mutex<Option<DeviceMem>>,
    stream: Stream,
    _modules: Vec<Module>,
    // Dropped last: everything above lives in this context.
    ctx: Context,
}

/// An input order on the host and its copy on the device.
type UploadedOrder = (Arc<[u32]>, Arc<Storage>);

pub struct CudaBuf {
    mem: DeviceMem,
    len: usize,
}

impl CudaBuf {
    pub(super) fn ptr(&self) -> u64 {
        self.mem.ptr
    }
}

/// Device memory of a weight: its own allocation, or a place in the room
/// that `reserve` made (which the backend owns and outlives the weight).
pub(super) enum Storage {
    Own(DeviceMem),
    Reserved(u64),
}

impl Storage {
    fn ptr(&self) -> u64 {
        match self {
            Storage::Own(m) => m.ptr,
            Storage::Reserved(p) => *p,
        }
    }
}

/// One allocation for a range's weights, filled from the front.
struct Room {
    mem: DeviceMem,
    used: usize,
}

pub struct CudaMat {
    pub(super) mem: Storage,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    /// The input order of the stored columns (HostMat::input_order), as u32s.
    order: Option<Arc<Storage>>,
}

impl CudaMat {
    /// `w`'s shape, its bytes at `mem`, its input order at `order`.
    pub(super) fn of(w: &HostMat, mem: Storage, order: Option<Arc<Storage>>) -> CudaMat {
        CudaMat {
            mem,
            ty: w.format.ggml(),
            rows: w.rows,
            cols: w.cols,
            row_bytes: w.row_bytes,
            order,
        }
    }

    fn order_ptr(&self) -> Option<u64> {
        self.order.as_ref().map(|o| o.ptr())
    }
}

pub struct CudaVector {
    pub(super) mem: Storage,
    pub(super) len: usize,
}

/// Keys and values, both `[cell][kv_dim]` in their types' blocks (the
/// CPU's rows for the types other than f16 for both).
pub struct CudaKv {
    pub(super) k: DeviceMem,
    pub(super) v: DeviceMem,
    pub(super) cells: usize,
    pub(super) kv_dim: usize,
    pub(super) head_dim: usize,
    pub(super) types: KvTypes,
}

impl CudaKv {
    /// Bytes of one cell's keys and of its values.
    pub(super) fn row_bytes(&self) -> (usize, usize) {
        (
            crate::kv_types::row_bytes(self.types.k, self.kv_dim),
            crate::kv_types::row_bytes(self.types.v, self.kv_dim),
        )
    }
}

pub struct CudaScratch {
    /// [pos0, tokens] of the batch being run, on the device...
    pub(super) step: DeviceMem,
    /// ...copied from here, which a replayed graph reads anew each time.
    step_host: PinnedMem,
    graphs: HashMap<u64, Graph>,
    recording: Option<u64>,
    /// Split-K decode attention's partial results (ATT_PART_BYTES).
    pub(super) attn_part: DeviceMem,
    /// A counter a token and head for the split that finishes last to
    /// merge them (attention_vec's `count`; zero between launches).
    attn_count: DeviceMem,
    /// Inputs gathered into a weight's stored order; made in `scratch` for
    /// one token (a recorded step must not allocate), grown for batches.
    gathered: Option<CudaBuf>,
    /// One token's X quantised once for the lean one-token products
    /// (matvec1_lean.cu), as wide as the widest weight; None where no
    /// product takes them.
    lean_x: Option<DeviceMem>,
    /// A lean glu's outputs quantised as the down projection reads them,
    /// where LLM_CUDA_LEAN_FUSE=1 (matvec1_lean.cu's RowGroups).
    lean_y: Option<LeanY>,
    /// What lean_x holds: X's buffer, the norm's weights (0: none) and
    /// epsilon's bits, the width, and the stream's operation count after
    /// the product that read it; a product of the same X and norm next
    /// (Q4_K_M's v of Q6_K after its q and k) reads it as it is.
    lean_x_holds: Option<(u64, u64, u32, usize, u64)>,
    /// The glu outputs lean_y holds: their buffer, their count and the
    /// stream's operations just after the glu (none since: still them).
    lean_y_holds: Option<(u64, usize, u64)>,
}

/// Room for a lean glu's outputs quantised (as wide as the widest weight),
/// then a counter a chunk of 32 (zero between launches).
pub(super) struct LeanY {
    mem: DeviceMem,
    /// Outputs the room takes (and chunks' counters: cols / 32).
    cols: usize,
}

impl LeanY {
    fn counts(&self) -> u64 {
        self.mem.ptr + matvec1::lean_y_counts_at(self.cols) as u64
    }
}

/// attention_vec's counters: tokens x heads of a decode step (8 tokens of
/// up to 512 heads); more go through attention_merge.
const ATT_COUNTERS: usize = 4096;

/// Where the split that finishes last merges a decode step's attention
/// (the counters hold its tokens' heads), unless
/// LLM_CUDA_ATT_MERGE_LAUNCH=1 (a launch of attention_merge, for timing).
fn merge_in_kernel(tokens: usize, n_head: usize) -> bool {
    static LAUNCH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let launch = *LAUNCH
        .get_or_init(|| std::env::var_os("LLM_CUDA_ATT_MERGE_LAUNCH").is_some_and(|v| v == "1"));
    !launch && tokens * n_head <= ATT_COUNTERS
}

/// Room for split-K attention's partials: (head_dim + 2) floats per token,
/// head and split; 4 MiB holds 32 splits of a 64-head, 256-dim decode step.
const ATT_PART_BYTES: usize = 4 << 20;

/// Whether one token's decode attention (attention_vec, rope_attention_vec)
/// also writes its output quantised for the output projection's lean
/// product (x16.cuh: the bytes quantize_x16 would write, so one launch
/// fewer a layer): `LLM_CUDA_ATT_X16=1`. Off: on the H100 (2026-12-06,
/// tg128, alternated pairs of `llm bench -r 5`) it ran the rival's 7B
/// Q4_K_M 382.6 against 385.9 tokens/s and its Q4_0 420.8 against 425.1,
/// the 1B Q4_K_M 1169.7 against 1157.7: the attention blocks' longer tail
/// costs a 7B more than the launch it saves.
fn attention_x16() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var("LLM_CUDA_ATT_X16").is_ok_and(|v| v == "1"))
}

/// Where a decode attention launch of one token also writes its output
/// quantised as the lean products read it (x16.cuh), for the output
/// projection next: the scratch's lean_y, where the launch writes the
/// output itself (one split, or splits that merge themselves) and it fits;
/// else 0 (none). Whatever lean_y held is given up.
fn attention_q16_room(
    sc: &mut CudaScratch,
    a: &Attention,
    tokens: usize,
    splits: usize,
    count: u64,
) -> u64 {
    sc.lean_y_holds = None;
    let width = a.n_head * a.head_dim;
    match &sc.lean_y {
        Some(ly)
            if attention_x16()
                && tokens == 1
                && width.is_multiple_of(32)
                && width <= ly.cols
                && (splits == 1 || count != 0) =>
        {
            ly.mem.ptr
        }
        _ => 0,
    }
}

/// Splits of a decode step's attention: about 256 cells each, at most 32,
/// as many as `ATT_PART_BYTES` holds; 1 means no split. Where the heads are
/// so few that this leaves the `sms` multiprocessors under two blocks each,
/// more splits (down to 64 cells, at most 64) give them four; with an f16
/// cache, whose kernel spends little a cell, only while each block keeps
/// four rounds of its loop (16384 / head_dim cells). Caches under 1024 cells
/// are not split: the merge launch costs more than splitting their few cells
/// gains (H200, 7B Q4_K, tg128 in a cache of 513 cells: 278 tokens/s split
/// in two, 298 not). On the H200 at a depth of 4096 (`LLM_CUDA_ATT`,
/// scripts/gpu-session.sh att and g): splits of 128 or 64 cells read 0-4%
/// and 7-18% slower on a 7B and a 1B than 256; Gemma-3-270M's 4 heads of
/// 256 with the four-blocks floor (64 splits) read 808 rather than 719
/// tokens/s with an f16 cache, 695 rather than 543 with q4_0; SmolLM2's 9
/// heads of 64 read 689 with q8_0 at 59 splits, but 756 with f16 against
/// 830 at 16 (hence the f16 limit); the floor on the 7B's 32 heads (17
/// splits rather than 16) cost its q5_0 and q5_1 caches 13% (233 to 202),
/// hence only for few heads; 8 warps a block rather than 4 won 2-4% with
/// f16 caches and lost 2-5% with q4_0 on the 7B and 1B.
///
/// Many heads over an f16 cache (the split rule above would give them two
/// blocks a multiprocessor or more) take about two blocks of 8 warps a
/// multiprocessor instead, splits of at least 128 cells: `test_ops --bench`
/// on the H200, a 7B's 32 heads of 128, microseconds a layer with the merge
/// in the kernel, 8 splits of 8 warps against the rule's 16 or 32 of 4:
/// 14.5 / 16.9 at 1024 cells, 27.8 / 30.0 at 4096, 73.8 / 93.3 at 16384
/// (LLM_CUDA_ATT, when set, keeps the rule above for every cache).
fn attention_splits(
    cells: usize,
    tokens: usize,
    n_head: usize,
    head_dim: usize,
    f16_cache: bool,
    sms: usize,
) -> usize {
    let knobs = attention_knobs();
    if cells < 1024 {
        return 1;
    }
    let per_split = tokens * n_head * (head_dim + 2) * 4;
    let blocks = n_head * tokens;
    let mut splits = (cells / knobs.split_cells).min(knobs.max_splits);
    if f16_cache && !knobs.set && blocks * splits >= 2 * sms {
        splits = ((2 * sms + blocks / 2) / blocks).clamp(1, knobs.max_splits);
        splits = splits.min(cells / 128);
    } else if blocks * splits < 2 * sms {
        let mut floor = (knobs.blocks_per_sm * sms)
            .div_ceil(blocks)
            .min(cells / 64)
            .min(64);
        if f16_cache {
            floor = floor.min(cells / (16384 / head_dim.max(1)).max(1));
        }
        splits = splits.max(floor);
    }
    splits.min(ATT_PART_BYTES / per_split.max(1)).max(1)
}

/// attention_tc.cu's `shared_bytes`: the 64 queries' and a tile's keys and
/// values as f16 (rows of head_dim + 8), and each of 4 warps' scores (16 x
/// 68 f32) and weights (16 x 72 f16).
fn prompt_tc_shared(head_dim: usize) -> usize {
    (64 + 2 * 64) * (head_dim + 8) * 2 + 4 * 16 * 68 * 4 + 4 * 16 * 72 * 2
}

/// attention_tc.cu's `attn_fa::shared_bytes`: the 64 queries and two
/// buffers of a tile's keys and values, f16 rows of head_dim + 8.
fn prompt_fa_shared(head_dim: usize) -> usize {
    (64 + 4 * 64) * (head_dim + 8) * 2
}

/// Threads of an attention_vec block (f16 caches): 16 warps over a whole
/// cache, 8 over a split's share (attention_splits' note), or as
/// LLM_CUDA_ATT says.
fn attention_vec_block(splits: usize) -> u32 {
    let knobs = attention_knobs();
    match (splits > 1, knobs.set) {
        (false, _) => 32 * 16,
        (true, false) => 32 * 8,
        (true, true) => 32 * knobs.split_warps,
    }
}

/// Threads of a split decode attention block over a quantised cache.
pub(super) fn attention_split_block() -> u32 {
    32 * attention_knobs().split_warps
}

/// The split rule's numbers, which a developer may change to time others
/// (LLM_CUDA_ATT="split_cells,max_splits,blocks_per_sm,split_warps").
struct AttentionKnobs {
    split_cells: usize,
    max_splits: usize,
    blocks_per_sm: usize,
    split_warps: u32,
    /// Given by LLM_CUDA_ATT.
    set: bool,
}

fn attention_knobs() -> &'static AttentionKnobs {
    static KNOBS: std::sync::OnceLock<AttentionKnobs> = std::sync::OnceLock::new();
    KNOBS.get_or_init(|| {
        let mut k = AttentionKnobs {
            split_cells: 256,
            max_splits: 32,
            blocks_per_sm: 4,
            split_warps: 4,
            set: false,
        };
        if let Ok(v) = std::env::var("LLM_CUDA_ATT") {
            let n: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            if let [a, b, c, d] = n[..] {
                k = AttentionKnobs {
                    split_cells: a.max(16),
                    max_splits: b.clamp(1, 256),
                    blocks_per_sm: c,
                    split_warps: d.clamp(1, 16) as u32,
                    set: true,
                };
            }
        }
        k
    })
}

/// Heads a block of ops.cu's rope and rope_store takes, and its threads
/// (kernels/rope.cuh's ROPE_HEADS_PER_BLOCK and ROPE_HEAD_THREADS).
const ROPE_HEADS_PER_BLOCK: usize = 4;
const ROPE_THREADS: u32 = ROPE_HEADS_PER_BLOCK as u32 * 64;

/// The blocks of a token's `heads` in ops.cu's rope and rope_store.
fn rope_blocks(heads: usize) -> u32 {
    heads.div_ceil(ROPE_HEADS_PER_BLOCK) as u32
}

/// rope_store's blocks a token: a block every ROPE_HEADS_PER_BLOCK heads
/// for a decode step (a 7B's 64 heads over 16 blocks), fewer for a batch
/// while its blocks still fill the GPU about four times over (each block's
/// threads compute their pairs' rotations once for all its heads).
fn rope_store_blocks(tokens: usize, heads: usize, sms: usize) -> u32 {
    let want = (4 * sms.max(1)).div_ceil(tokens.max(1));
    want.clamp(1, heads.div_ceil(ROPE_HEADS_PER_BLOCK).max(1)) as u32
}

/// The rope parameters as the kernel's struct lays them out.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct RopeParams {
    n_dims: i32,
    freq_base: f32,
    freq_scale: f32,
    ext_factor: f32,
    attn_factor: f32,
    corr_low: f32,
    corr_high: f32,
    neox: i32,
}

impl KernelArg for RopeParams {
    fn arg_ptr(&self) -> *mut std::ffi::c_void {
        self as *const RopeParams as *mut std::ffi::c_void
    }
}

fn rope_params(rope: &Rope) -> RopeParams {
    RopeParams {
        n_dims: rope.n_dims as i32,
        freq_base: rope.freq_base,
        freq_scale: rope.freq_scale,
        ext_factor: rope.ext_factor,
        attn_factor: rope.attn_factor,
        corr_low: rope.corr_dims[0],
        corr_high: rope.corr_dims[1],
        neox: i32::from(rope.neox),
    }
}

/// Which kernels launch early, overlapping the end of the one before
/// (kernels/pdl.cuh), on sm_90 and later: every kernel, unless LLM_CUDA_PDL
/// says 0 (none) or `chosen` (the one-token products only). On the H200
/// (session 34, our writer's one-type files, tg128, alternated twice),
/// every kernel against the products only: 7B Q4_K 470.8 / 469.7 against
/// 466.5 / 467.5 tokens/s, Q4_0 444.8 / 445.7 against 443.2 / 443.1, Q8_0
/// 364.8 / 365.3 against 362.0 / 362.9, a 1B of Q4_K 1556.0 / 1566.5
/// against 1537.7 / 1546.0, F16 230.2 / 230.0 against 230.5 / 229.8 (in
/// 2026-12-04's build, before the lean products, Q8_0 and F16 lost to it).
fn early_launches(info: &DeviceInfo) -> EarlyLaunches {
    if info.capability < 90 {
        return EarlyLaunches::Off;
    }
    match std::env::var("LLM_CUDA_PDL").as_deref() {
        Ok("0") => EarlyLaunches::Off,
        Ok("chosen") => EarlyLaunches::Chosen,
        _ => EarlyLaunches::All,
    }
}

/// Prompt batches' products on Hopper's warpgroup instructions
/// (gemm_sm90.cu), the quantised types' weights dequantised to f16 first,
/// unless LLM_CUDA_WGMMA=0 (tile.cu's, for timing): 7B pp512 on the H200
/// Q4_K 10598 -> 14165 tokens/s, Q8_0 9008 -> 13966, F16 10978 -> 16289.
fn wgmma_selected() -> bool {
    std::env::var("LLM_CUDA_WGMMA").map_or(true, |v| v != "0")
}

/// Whether prompt batches' residual adds (`form` "add") or GLUs ("glu")
/// go in the warpgroup products' epilogues (where those take the
/// product): both unless LLM_CUDA_WGMMA_FUSE says "0" (neither), "add" or
/// "glu". A 7B's layer then writes and reads its two products' outputs and
/// its up projection's once less, in three launches fewer.
fn wgmma_fused_selected(form: &str) -> bool {
    match std::env::var("LLM_CUDA_WGMMA_FUSE") {
        Ok(v) if v == "0" => false,
        Ok(v) if v == "add" || v == "glu" => v == form,
        _ => true,
    }
}

/// The largest weight dequantised for gemm_sm90.cu: its f16 copy lives in
/// a scratch the offload plan does not count, so it stays well inside the
/// plan's 1 GiB margin (a 7B's gate and up, 180 MB, fit; a 70B's do not,
/// and keep tile.cu's tiles).
const WGMMA_DEQUANT_MAX_BYTES: usize = 256 << 20;

/// The fewest tokens for which a product goes through gemm_sm90.cu: F16
/// weights from 128 (`test_matmul --bench-wgmma` at 128 tokens: faster
/// than the tiles on every 7B shape, 4096x4096 62 -> 158 TFLOP/s),
/// dequantised ones from 256 (dequantising costs the same whatever the
/// batch; timed at 512); LLM_CUDA_WGMMA_TOKENS sets both.
fn wgmma_tokens(dequantised: bool) -> usize {
    static SET: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let set = *SET.get_or_init(|| {
        std::env::var("LLM_CUDA_WGMMA_TOKENS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    set.unwrap_or(if dequantised { 256 } else { 128 })
}

fn blocks(n: usize, per: usize) -> u32 {
    n.div_ceil(per).max(1) as u32
}

impl CudaBackend {
    /// Opens GPU `ordinal` and loads the kernels.
    pub fn new(ordinal: usize) -> CuResult<CudaBackend> {
        let ctx = Context::new(ordinal)?;
        let info = ctx.info();
        let hopper: &[(&str, &[u8])] = if info.capability == 90 && wgmma_selected() {
            super::HOPPER_MODULES
        } else {
            &[]
        };
        let modules = super::MODULES
            .iter()
            .chain(hopper)
            .map(|(name, image)| match super::module_override(name) {
                Some(file) => Module::load(&file),
                None => Module::load(image),
            })
            .collect::<CuResult<Vec<_>>>()?;
        let find = |name: &str| -> CuResult<Function> {
            modules
                .iter()
                .find_map(|m| m.function(name).ok())
                .ok_or_else(|| BackendError(format!("CUDA: kernel {name} is missing")))
        };
        // attention_tc.cu's prompt kernels, each with its dynamic shared memory.
        let prompt_kernel = |kind: &str, d: usize| -> Option<(Function, u32)> {
            let f = find(&format!("attention_prompt_{kind}{d}")).ok()?;
            let shared = if kind == "fa" {
                prompt_fa_shared(d)
            } else {
                prompt_tc_shared(d)
            };
            f.allow_dynamic_shared(shared).ok()?;
            Some((f, shared as u32))
        };
        let tc_off = std::env::var_os("LLM_CUDA_SIMPLE_ATTENTION").is_some()
            || std::env::var_os("LLM_CUDA_NO_TC_ATTENTION").is_some();
        let fa_on = std::env::var_os("LLM_CUDA_PROMPT_FA").is_none_or(|v| v != "0")
            && info.capability >= 80;
        let mut matmul = HashMap::new();
        let float_matvec = std::env::var_os("LLM_CUDA_FLOAT_MATVEC").is_some();
        // Every weight type the CPU runs.
        for &ty in crate::blocks::WEIGHT_TYPES {
            let n = ty.name().to_lowercase();
            let int_matvec = (!float_matvec)
                .then(|| find(&format!("matvecx_{n}")).ok())
                .flatten();
            let matvec = match int_matvec {
                Some(f) => f,
                None => find(&format!("matvec_{n}"))?,
            };
            let matmul_fn = find(&format!("matmul_{n}"))?;
            // Float weights take matvec1's float variant (no quantised X);
            // LLM_CUDA_FLOAT_MATVEC keeps every type on the plain kernels.
            let float_ty = matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
            let matvec1 = (int_matvec.is_some() || (float_ty && !float_matvec))
                && std::env::var_os("LLM_CUDA_NO_MATVEC1").is_none();
            let matvec1 = matvec1
                .then(|| Matvec1::find(find, &n, info.memory_bandwidth))
                .flatten();
            let tile = std::env::var_os("LLM_CUDA_NO_TILE")
                .is_none()
                .then(|| Tile::find(find, ty, &n))
                .flatten();
            let half_rows = if ty == GgmlType::F16 {
                HalfRows::Direct
            } else {
                find(&format!("dequant_half_{n}")).map_or(HalfRows::None, HalfRows::Dequantised)
            };
            matmul.insert(
                ty,
                MatKernels {
                    matvec1,
                    matvec,
                    matmul: matmul_fn,
                    tile,
                    half_rows,
                },
            );
        }
        let kernels = Kernels {
            rms_norm: find("rms_norm")?,
            add_bias: find("add_bias")?,
            add: find("add")?,
            scale: find("scale")?,
            copy_cols: find("copy_cols")?,
            gather_cols: find("gather_cols")?,
            swiglu: find("swiglu")?,
            geglu: find("geglu")?,
            rope: find("rope")?,
            rope_store: find("rope_store")?,
            kv_store: find("kv_store")?,
            attention: find("attention")?,
            attention_prompt: if std::env::var_os("LLM_CUDA_SIMPLE_ATTENTION").is_some() {
                None
            } else {
                Some(find("attention_prompt")?)
            },
            attention_prompt_tc: if tc_off {
                [None, None]
            } else {
                [prompt_kernel("tc", 64), prompt_kernel("tc", 128)]
            },
            attention_prompt_fa: if fa_on && !tc_off {
                [prompt_kernel("fa", 64), prompt_kernel("fa", 128)]
            } else {
                [None, None]
            },
            attention_split: find("attention_split")?,
            attention_merge: find("attention_merge")?,
            attention_vec: if std::env::var_os("LLM_CUDA_SIMPLE_ATTENTION").is_some() {
                [None; 3]
            } else {
                vec_kernels(find, "attention_vec")?
            },
            rope_attention_vec: if std::env::var_os("LLM_CUDA_SIMPLE_ATTENTION").is_some()
                || std::env::var_os("LLM_CUDA_FUSED_ROPE").is_some_and(|v| v == "0")
            {
                [None; 3]
            } else {
                vec_kernels(find, "rope_attention_vec")?
            },
            matmul,
            to_half: find("to_half")?,
            wgmma: if hopper.is_empty() {
                None
            } else {
                Tile::find_wgmma(find, "")
            },
            wgmma_add: if hopper.is_empty() || !wgmma_fused_selected("add") {
                None
            } else {
                Tile::find_wgmma(find, "add_")
            },
            wgmma_glu: if hopper.is_empty() || !wgmma_fused_selected("glu") {
                None
            } else {
                Tile::find_wgmma(find, "glu_")
            },
            kvq: QuantKvKernels::find(find)?,
        };
        let early = early_launches(&info);
        Ok(CudaBackend {
            info,
            kernels,
            staging: Mutex::new(PinnedMem::alloc(1 << 20)?),
            error: Mutex::new(None),
            rooms: Mutex::new(Vec::new()),
            ordered_cols: AtomicUsize::new(0),
            widest_cols: AtomicUsize::new(0),
            orders: Mutex::new(Vec::new()),
            offload: Mutex::new(None),
            half_x: Mutex::new(None),
            half_w: Mutex::new(None),
            stream: Stream::new(early)?,
            _modules: modules,
            ctx,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// (free, total) device memory now.
    pub fn mem_info(&self) -> CuResult<(usize, usize)> {
        self.ctx.mem_info()
    }

    /// Keeps the first failure for the next `read`.
    fn keep(&self, r: CuResult<()>) {
        if let Err(e) = r {
            let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }
    }

    fn bind(&self) {
        self.keep(self.ctx.bind());
    }

    pub(super) fn launch(
        &self,
        f: Function,
        grid: (u32, u32, u32),
        block: u32,
        args: &[&dyn KernelArg],
    ) {
        self.keep(f.launch(&self.stream, grid, block, 0, args));
    }

    /// attention_vec's `count`: the counters where a split decode step's
    /// last split merges it, else 0 (no split, or attention_merge merges).
    fn split_counters(&self, sc: &CudaScratch, splits: usize, tokens: usize, n_head: usize) -> u64 {
        if splits > 1 && merge_in_kernel(tokens, n_head) {
            sc.attn_count.ptr
        } else {
            0
        }
    }

    /// After a decode attention launch given `q16` (attention_q16_room):
    /// lean_y holds its output quantised, for the product that reads it
    /// next (if nothing runs between: a separate merge does not write it).
    fn attention_q16_written(&self, sc: &mut CudaScratch, a: &Attention, q16: u64, out: &CudaBuf) {
        if q16 != 0 {
            let width = a.n_head * a.head_dim;
            sc.lean_y_holds = Some((out.mem.ptr, width, self.stream.ops()));
        }
    }

    /// A split attention_vec launch's merge where its splits did not merge
    /// themselves (`count` 0).
    fn merge_uncounted(
        &self,
        sc: &CudaScratch,
        tokens: usize,
        a: &Attention,
        splits: usize,
        count: u64,
        out: &mut CudaBuf,
    ) {
        if splits > 1 && count == 0 {
            self.attention_merge(sc, tokens, a, splits, out);
        }
    }

    /// The output of split-K decode attention from its splits' partials.
    pub(super) fn attention_merge(
        &self,
        sc: &CudaScratch,
        tokens: usize,
        a: &Attention,
        splits: usize,
        out: &mut CudaBuf,
    ) {
        let (nh, hd, s) = (a.n_head as i32, a.head_dim as i32, splits as i32);
        self.launch(
            self.kernels.attention_merge,
            (tokens as u32, a.n_head as u32, 1),
            128,
            &[&sc.attn_part.ptr, &out.mem.ptr, &nh, &hd, &s],
        );
    }

    /// `out[t][r] = W[r] · x[t]` with `x` already in `w`'s input order, by
    /// the mat-vec or the tiled kernels (one token's matvec1 takes the order
    /// itself and is tried first by the callers).
    fn matmul_in_order(&self, w: &CudaMat, x: &CudaBuf, t: usize, out: &mut CudaBuf) {
        debug_assert!(x.len >= t * w.cols && out.len >= t * w.rows);
        let k = &self.kernels.matmul[&w.ty];
        let (wp, xp, yp) = (w.mem.ptr(), x.mem.ptr, out.mem.ptr);
        if t <= MATVEC_MAX_TOKENS {
            let (rows, cols, rb, nt) = (w.rows as i32, w.cols as i32, w.row_bytes as i64, t as i32);
            let args: [&dyn KernelArg; 7] = [&wp, &xp, &yp, &rows, &cols, &rb, &nt];
            self.launch(k.matvec, (blocks(w.rows, 4), 1, 1), 128, &args);
        } else {
            self.keep(self.product(k, wp, xp, yp, (w.rows, w.cols, w.row_bytes), t));
        }
    }

    /// A product of more than MATVEC_MAX_TOKENS tokens: tile.cu's kernels
    /// on `x` converted to f16 where the type has them, else matmul.cu's.
    fn product(
        &self,
        k: &MatKernels,
        wp: u64,
        xp: u64,
        yp: u64,
        (w_rows, w_cols, row_bytes): (usize, usize, usize),
        t: usize,
    ) -> CuResult<()> {
        let Some(tile) = &k.tile else {
            let (rows, cols, rb, nt) = (w_rows as i32, w_cols as i32, row_bytes as i64, t as i32);
            return k.matmul.launch(
                &self.stream,
                (blocks(w_rows, 64), blocks(t, 64), 1),
                128,
                0,
                &[&wp, &xp, &yp, &rows, &cols, &rb, &nt],
            );
        };
        // Held until the product is launched: nobody regrows (frees) a
        // buffer between the launches that write and read it.
        let mut half_x = self.half_x.lock().unwrap_or_else(|p| p.into_inner());
        let xh = self.to_half(&mut half_x, xp, t * w_cols)?;
        self.product_of_half(k, tile, wp, xh, yp, (w_rows, w_cols, row_bytes), t)
    }

    /// `n` floats at `xp` as f16 in `half_x`, grown to hold them; its address.
    fn to_half(&self, half_x: &mut Option<DeviceMem>, xp: u64, n: usize) -> CuResult<u64> {
        let xh = self.grown(half_x, n * 2, "activations in f16")?;
        let len = n as i64;
        self.kernels.to_half.launch(
            &self.stream,
            (blocks(n / 4, 256), 1, 1),
            256,
            0,
            &[&xp, &xh, &len],
        )?;
        Ok(xh)
    }

    /// `product` of activations already in f16 at `xh` (held by the caller
    /// until this returns) by tile.cu's kernels or the warpgroup ones.
    #[allow(clippy::too_many_arguments)]
    fn product_of_half(
        &self,
        k: &MatKernels,
        tile: &Tile,
        wp: u64,
        xh: u64,
        yp: u64,
        (w_rows, w_cols, row_bytes): (usize, usize, usize),
        t: usize,
    ) -> CuResult<()> {
        let (rows, cols, nt) = (w_rows as i32, w_cols as i32, t as i32);
        let mut half_w = self.half_w.lock().unwrap_or_else(|p| p.into_inner());
        let wgmma = match &self.kernels.wgmma {
            Some(wg) => self
                .wgmma_rows(k, &[wp], (w_rows, w_cols, row_bytes), t, &mut half_w)?
                .map(|(wps, rb)| (wg, wps[0], rb)),
            None => None,
        };
        let (tile, wp, rb) = wgmma.unwrap_or((tile, wp, row_bytes as i64));
        let l = tile.launch(w_rows, t, self.info.sms.max(1) as usize);
        l.f.launch(
            &self.stream,
            l.grid,
            TILE_THREADS,
            l.shared,
            &[&wp, &xh, &yp, &rows, &cols, &rb, &nt],
        )
    }

    /// Products of one input already in their weights' order, the input
    /// converted to f16 once for all of them where they are batches for the
    /// tile kernels (all of one type and width: `matmuls`' runs).
    fn matmuls_in_order(&self, run: &mut [(&CudaMat, &mut CudaBuf)], x: &CudaBuf, t: usize) {
        let w = run[0].0;
        let k = &self.kernels.matmul[&w.ty];
        let shared = t > MATVEC_MAX_TOKENS && run.len() > 1 && !no_shared_half();
        let Some(tile) = k.tile.as_ref().filter(|_| shared) else {
            for (pw, out) in run.iter_mut() {
                self.matmul_in_order(pw, x, t, out);
            }
            return;
        };
        let mut half_x = self.half_x.lock().unwrap_or_else(|p| p.into_inner());
        let xh = match self.to_half(&mut half_x, x.mem.ptr, t * w.cols) {
            Ok(xh) => xh,
            Err(e) => return self.keep(Err(e)),
        };
        for (pw, out) in run.iter_mut() {
            debug_assert!(x.len >= t * pw.cols && out.len >= t * pw.rows);
            let dims = (pw.rows, pw.cols, pw.row_bytes);
            self.keep(self.product_of_half(k, tile, pw.mem.ptr(), xh, out.mem.ptr, dims, t));
        }
    }

    /// The device address of `buf`, first (re)allocated to hold `bytes`
    /// (in whole MiB) where it holds less.
    fn grown(&self, buf: &mut Option<DeviceMem>, bytes: usize, what: &str) -> CuResult<u64> {
        if buf.as_ref().is_none_or(|m| m.bytes < bytes) {
            // The old buffer goes first: freeing waits for the work that reads it.
            *buf = None;
            *buf = Some(self.alloc(bytes.next_multiple_of(1 << 20), what)?);
        }
        Ok(buf.as_ref().expect("just made").ptr)
    }

    /// The f16 rows gemm_sm90.cu's kernels read for the weights at `wps`
    /// (one, or a GLU's gate and up, of one type and shape: where, and
    /// their stride), where those kernels take this product: F16 rows as
    /// they are, quantised ones dequantised one after the other into
    /// `half_w` first. None (nothing launched) where they don't.
    fn wgmma_rows(
        &self,
        k: &MatKernels,
        wps: &[u64],
        (w_rows, w_cols, row_bytes): (usize, usize, usize),
        t: usize,
        half_w: &mut Option<DeviceMem>,
    ) -> CuResult<Option<([u64; 2], i64)>> {
        debug_assert!(matches!(wps.len(), 1 | 2));
        let dequantised = matches!(k.half_rows, HalfRows::Dequantised(_));
        if t < wgmma_tokens(dequantised) || !w_cols.is_multiple_of(32) {
            return Ok(None);
        }
        let mut rows = [wps[0], *wps.last().expect("one or two")];
        match &k.half_rows {
            HalfRows::Direct if wps.iter().all(|wp| (wp | row_bytes as u64) & 15 == 0) => {
                Ok(Some((rows, row_bytes as i64)))
            }
            HalfRows::Dequantised(f)
                if 2 * wps.len() * w_rows * w_cols <= WGMMA_DEQUANT_MAX_BYTES =>
            {
                // A multiple of 64 bytes (cols of 32): the second stays aligned.
                let n = w_rows * w_cols;
                let hp = self.grown(half_w, wps.len() * n * 2, "weights in f16")?;
                let (rb, r, c) = (row_bytes as i64, w_rows as i32, w_cols as i32);
                for (i, wp) in wps.iter().enumerate() {
                    rows[i] = hp + (i * n * 2) as u64;
                    f.launch(
                        &self.stream,
                        (blocks(n / 32, 256), 1, 1),
                        256,
                        0,
                        &[wp, &rb, &r, &c, &rows[i]],
                    )?;
                }
                Ok(Some((rows, 2 * w_cols as i64)))
            }
            _ => Ok(None),
        }
    }

    /// A prompt batch's product on gemm_sm90.cu's fused kernels: `out +=
    /// W x` (Add) or `out = act(W x) * (Wu x)` (Glu, `up` its Wu, of W's
    /// type, shape and input order); false (nothing launched) where they
    /// don't take it (the caller runs the product and the epilogue apart).
    #[allow(clippy::too_many_arguments)]
    fn wgmma_fused(
        &self,
        sc: &mut CudaScratch,
        ep: Epilogue,
        w: &CudaMat,
        up: Option<&CudaMat>,
        x: &CudaBuf,
        t: usize,
        out: &mut CudaBuf,
    ) -> bool {
        let (tile, act) = match ep {
            Epilogue::Add => (self.kernels.wgmma_add.as_ref(), 0i32),
            Epilogue::Glu(Glu::SwiGlu) => (self.kernels.wgmma_glu.as_ref(), 0),
            Epilogue::Glu(Glu::GeGlu) => (self.kernels.wgmma_glu.as_ref(), 1),
            Epilogue::Store => (None, 0),
        };
        let k = &self.kernels.matmul[&w.ty];
        let shape = |m: &CudaMat| (m.ty, m.rows, m.cols, m.row_bytes, m.order_ptr());
        let Some(tile) = tile else {
            return false;
        };
        if t <= MATVEC_MAX_TOKENS || k.tile.is_none() || up.is_some_and(|u| shape(u) != shape(w)) {
            return false;
        }
        debug_assert!(x.len >= t * w.cols && out.len >= t * w.rows);
        let wps: &[u64] = match up {
            Some(u) => &[w.mem.ptr(), u.mem.ptr()],
            None => &[w.mem.ptr()],
        };
        // Held until the product is launched (as in `product_of_half`).
        let mut half_w = self.half_w.lock().unwrap_or_else(|p| p.into_inner());
        let dims = (w.rows, w.cols, w.row_bytes);
        let (wps, rb) = match self.wgmma_rows(k, wps, dims, t, &mut half_w) {
            Ok(Some(found)) => found,
            Ok(None) => return false,
            Err(e) => {
                self.keep(Err(e));
                return true;
            }
        };
        let (rows, cols, nt, yp) = (w.rows as i32, w.cols as i32, t as i32, out.mem.ptr);
        self.in_order(sc, w, x, t, |x| {
            let mut half_x = self.half_x.lock().unwrap_or_else(|p| p.into_inner());
            let launched = self
                .to_half(&mut half_x, x.mem.ptr, t * w.cols)
                .and_then(|xh| {
                    // A GLU's row tile is 64 rows of each weight.
                    let launch_rows = if up.is_some() { 2 * w.rows } else { w.rows };
                    let l = tile.launch(launch_rows, t, self.info.sms.max(1) as usize);
                    let (w0, w1) = (wps[0], wps[1]);
                    match up {
                        Some(_) => l.f.launch(
                            &self.stream,
                            l.grid,
                            TILE_THREADS,
                            l.shared,
                            &[&w0, &w1, &xh, &yp, &rows, &cols, &rb, &nt, &act],
                        ),
                        None => l.f.launch(
                            &self.stream,
                            l.grid,
                            TILE_THREADS,
                            l.shared,
                            &[&w0, &xh, &yp, &rows, &cols, &rb, &nt],
                        ),
                    }
                });
            self.keep(launched);
        });
        drop(half_w);
        true
    }

    /// `f` of `x` in `w`'s input order: `x` itself, or its first `t` rows
    /// gathered into the scratch's buffer.
    fn in_order<R>(
        &self,
        sc: &mut CudaScratch,
        w: &CudaMat,
        x: &CudaBuf,
        t: usize,
        f: impl FnOnce(&CudaBuf) -> R,
    ) -> R {
        let Some(order) = w.order_ptr() else {
            return f(x);
        };
        let Some(g) = self.gather(sc, x, order, w.cols, t) else {
            return f(x);
        };
        let r = f(&g);
        sc.gathered = Some(g);
        r
    }

    /// `t` rows of `cols` of `x` read through `order`, in the scratch's
    /// buffer (taken: put it back); None (the failure kept for the next
    /// read) where no buffer could be had.
    fn gather(
        &self,
        sc: &mut CudaScratch,
        x: &CudaBuf,
        order: u64,
        cols: usize,
        t: usize,
    ) -> Option<CudaBuf> {
        let n = t * cols;
        let g = match sc.gathered.take() {
            Some(g) if g.len >= n => g,
            _ => match self.buf(n) {
                Ok(g) => g,
                Err(e) => {
                    // Reported at the next read; the product runs on stale input.
                    self.keep(Err(e));
                    return None;
                }
            },
        };
        let (width, len) = (cols as i32, n as i64);
        self.elementwise(
            self.kernels.gather_cols,
            n,
            &[&x.mem.ptr, &order, &width, &g.mem.ptr, &len],
        );
        Some(g)
    }

    /// One token's products `parts` (weight, output, its rows) of matrices of
    /// `w`'s type and shape, as one matvec1 launch; false (nothing launched)
    /// where the type or width has none. Glu takes gate and up, one output.
    /// One token's `gate = act(W_gate · X) * (W_up · X)` as one matvec1
    /// launch (X through `norm` where given); false (nothing launched) where
    /// gate and up differ in shape or matvec1 has no launch for them.
    #[allow(clippy::too_many_arguments)]
    fn glu_matvec1(
        &self,
        sc: &mut CudaScratch,
        act: Glu,
        w_gate: &CudaMat,
        w_up: &CudaMat,
        x: &CudaBuf,
        t: usize,
        gate: &CudaBuf,
        norm: Option<(&CudaVector, f32)>,
    ) -> bool {
        // matvec1 reads X in each one's input order.
        let shape = |m: &CudaMat| (m.ty, m.rows, m.cols, m.row_bytes);
        let parts = [(w_gate, gate.mem.ptr, w_gate.rows), (w_up, 0, 0)];
        t == 1
            && shape(w_gate) == shape(w_up)
            && self.matvec1(sc, Epilogue::Glu(act), w_gate, x, &parts, norm)
    }

    /// With `norm` (its weights and epsilon) X is read as rms_norm(X) * w;
    /// false (nothing launched) where a part has an input order then.
    fn matvec1(
        &self,
        sc: &mut CudaScratch,
        ep: Epilogue,
        w: &CudaMat,
        x: &CudaBuf,
        parts: &[(&CudaMat, u64, usize)],
        norm: Option<(&CudaVector, f32)>,
    ) -> bool {
        let Some(m) = &self.kernels.matmul[&w.ty].matvec1 else {
            return false;
        };
        if norm.is_some() && parts.iter().any(|(p, ..)| p.order_ptr().is_some()) {
            return false;
        }
        debug_assert!(
            parts.len() <= 3 && parts.iter().all(|(p, ..)| (p.ty, p.cols) == (w.ty, w.cols))
        );
        let outputs = match ep {
            Epilogue::Glu(_) => parts[0].2,
            _ => parts.iter().map(|p| p.2).sum(),
        };
        // Each part reads X in its own input order; a glu whose gate and up
        // orders differ quantises X twice.
        let mut orders = [0u64; 3];
        for (i, (pw, ..)) in parts.iter().enumerate() {
            orders[i] = pw.order_ptr().unwrap_or(0);
        }
        let x_copies = match ep {
            Epilogue::Glu(_) if orders[1] != orders[0] => 2,
            _ => 1,
        };
        let mut ws = [0u64; 3];
        let mut ys = [0u64; 3];
        let mut rows = [0i32; 3];
        for (i, (pw, y, r)) in parts.iter().enumerate() {
            ws[i] = pw.mem.ptr();
            ys[i] = *y;
            rows[i] = *r as i32;
        }
        let in_order = orders.iter().all(|&o| o == 0);
        // The largest power of two (up to 16) every row start is a multiple of.
        let starts = ws[..parts.len()]
            .iter()
            .fold(w.row_bytes as u64 | 16, |a, &p| a | p);
        let row_align = 1usize << starts.trailing_zeros();
        let aligned = row_align == 16;
        let sms = self.info.sms.max(1) as usize;
        // The lean products (the types that have them: lean_plan) want
        // rows of X in its stored order, their starts aligned as the type's
        // loads need.
        if in_order && x_copies == 1 {
            // Each part's rows (a glu's outputs in the first; none in the others).
            let part_outputs = rows.map(|r| r as usize);
            if let Some(plan) = m.lean_plan(ep, part_outputs, (w.cols, w.row_bytes), sms, row_align)
            {
                if sc
                    .lean_x
                    .as_ref()
                    .is_some_and(|lx| matvec1::lean_x_bytes(w.cols) <= lx.bytes)
                {
                    self.lean_matvec1(sc, &plan, x, norm, (&ws, &ys, &rows), w, ep);
                    return true;
                }
            }
        }
        let Some(plan) = m.plan(
            w.ty,
            ep,
            outputs,
            w.cols,
            x_copies,
            sms,
            (in_order, aligned),
        ) else {
            return false;
        };
        if let Epilogue::Glu(_) = ep {
            rows[1] = 0; // gate's rows index both; part 1 has no blocks of its own
        }
        let grid: u32 = rows
            .iter()
            .map(|&r| (r as usize).div_ceil(plan.rows_per_block) as u32)
            .sum();
        // Parts of one input order read X gathered once by a small kernel:
        // gathering inside the product costs every block scattered loads
        // (7B act-order decode 227 tokens/s that way).
        let mut gathered = None;
        if orders[0] != 0
            && orders[1..parts.len()].iter().all(|&o| o == orders[0])
            && !gather_in_matvec1()
        {
            gathered = self.gather(sc, x, orders[0], w.cols, 1);
            if gathered.is_some() {
                orders = [0; 3];
            }
        }
        // A block may take several blocks' rows where it reads X once for
        // all of them: one order for every part (a glu quantises its two
        // orders' copies at the start either way).
        let shared_x = matches!(ep, Epilogue::Glu(_))
            || orders[1..parts.len()].iter().all(|&o| o == orders[0]);
        let grid = plan.grid(grid as usize, sms, shared_x) as u32;
        let x_ptr = gathered.as_ref().map_or(x.mem.ptr, |g| g.mem.ptr);
        let (cols, rb) = (w.cols as i32, w.row_bytes as i64);
        let (norm_w, eps) = norm.map_or((0u64, 0f32), |(v, eps)| (v.mem.ptr(), eps));
        let args: [&dyn KernelArg; 19] = [
            &x_ptr,
            &ws[0],
            &ys[0],
            &rows[0],
            &ws[1],
            &ys[1],
            &rows[1],
            &ws[2],
            &ys[2],
            &rows[2],
            &cols,
            &rb,
            &plan.stages,
            &plan.split,
            &orders[0],
            &orders[1],
            &orders[2],
            &norm_w,
            &eps,
        ];
        // Products whose rows the kernel reads directly (matmul.cu's
        // mv1_direct: Q4_K) ask L2 for their first weights before they wait
        // for the kernel before them; the others lose to early launches.
        let launch = if w.ty == GgmlType::Q4_K {
            Function::launch_overlapping
        } else {
            Function::launch
        };
        self.keep(launch(
            &plan.f,
            &self.stream,
            (grid.max(1), 1, 1),
            256,
            plan.shared,
            &args,
        ));
        if gathered.is_some() {
            sc.gathered = gathered;
        }
        true
    }

    /// A lean one-token product (matvec1_lean.cu): X (normed where
    /// `norm` is given) quantised once into the scratch's lean_x, then the
    /// product reading it; or, for float weights, the product reading X
    /// (and the norm) itself. Both may start early (pdl.cuh). A glu may
    /// also quantise its outputs into lean_y (LLM_CUDA_LEAN_FUSE=1), which
    /// the next product, reading them unchanged, takes instead of
    /// quantising them again.
    #[allow(clippy::too_many_arguments)]
    fn lean_matvec1(
        &self,
        sc: &mut CudaScratch,
        plan: &matvec1::LeanPlan,
        x: &CudaBuf,
        norm: Option<(&CudaVector, f32)>,
        (ws, ys, rows): (&[u64; 3], &[u64; 3], &[i32; 3]),
        w: &CudaMat,
        ep: Epilogue,
    ) {
        let (cols, rb) = (w.cols as i32, w.row_bytes as i64);
        let (mut norm_w, mut eps) = norm.map_or((0u64, 0f32), |(v, eps)| (v.mem.ptr(), eps));
        let x_key = (x.mem.ptr, norm_w, eps.to_bits(), w.cols);
        let mut xp = x.mem.ptr;
        let held = sc.lean_y_holds.take();
        let x_held = sc.lean_x_holds.take();
        let mut x_quantised = false;
        if let (Some(quantize), Some(lx)) = (plan.quantize, &sc.lean_x) {
            // Not for a glu, which may write lean_y itself.
            let quantised = (sc.lean_y.as_ref()).filter(|_| {
                norm.is_none()
                    && !matches!(ep, Epilogue::Glu(_))
                    && held == Some((x.mem.ptr, w.cols, self.stream.ops()))
            });
            let (xk, nk, ek, ck) = x_key;
            if let Some(ly) = quantised {
                xp = ly.mem.ptr;
            } else if x_held == Some((xk, nk, ek, ck, self.stream.ops())) {
                xp = lx.ptr;
                x_quantised = true;
            } else {
                x_quantised = true;
                let release = i32::from(plan.release_first);
                self.keep(quantize.launch_overlapping(
                    &self.stream,
                    (plan.quantize_grid, 1, 1),
                    256,
                    0,
                    &[&x.mem.ptr, &cols, &norm_w, &eps, &lx.ptr, &release],
                ));
                xp = lx.ptr;
            }
            // The norm is in the quantised X.
            (norm_w, eps) = (0, 0.0);
        }
        // A glu's outputs quantised too, for the product after it.
        let outputs = rows[0] as usize;
        let (yq, counts) = match &sc.lean_y {
            Some(ly)
                if matches!(ep, Epilogue::Glu(_))
                    && matvec1::lean_fuse()
                    && outputs.is_multiple_of(32)
                    && outputs <= ly.cols =>
            {
                (ly.mem.ptr, ly.counts())
            }
            _ => (0, 0),
        };
        let args: [&dyn KernelArg; 19] = [
            &xp,
            &ws[0],
            &ys[0],
            &rows[0],
            &ws[1],
            &ys[1],
            &rows[1],
            &ws[2],
            &ys[2],
            &rows[2],
            &cols,
            &rb,
            &plan.prefetch,
            &norm_w,
            &eps,
            &yq,
            &counts,
            &plan.split,
            &plan.depth,
        ];
        self.keep(plan.f.launch_overlapping(
            &self.stream,
            (plan.grid, 1, 1),
            256,
            plan.shared,
            &args,
        ));
        if yq != 0 {
            sc.lean_y_holds = Some((ys[0], outputs, self.stream.ops()));
        }
        // X stays as quantised unless a product wrote over it.
        let x_end = x.mem.ptr + 4 * w.cols as u64;
        let apart = (0..3).all(|i| {
            let y_end = ys[i] + 4 * rows[i].max(0) as u64;
            rows[i] == 0 || y_end <= x.mem.ptr || ys[i] >= x_end
        });
        if x_quantised && apart {
            let (xk, nk, ek, ck) = x_key;
            sc.lean_x_holds = Some((xk, nk, ek, ck, self.stream.ops()));
        }
    }

    /// An element-wise kernel over `n` elements.
    fn elementwise(&self, f: Function, n: usize, args: &[&dyn KernelArg]) {
        self.launch(f, (blocks(n, 256), 1, 1), 256, args);
    }

    pub(super) fn alloc(&self, bytes: usize, what: &str) -> CuResult<DeviceMem> {
        self.ctx.bind()?;
        DeviceMem::alloc(bytes, what).map_err(|e| self.name_device(e))
    }

    /// Device memory for `bytes` of weights: in the reserved room while it
    /// lasts, else an allocation of its own.
    fn weight_storage(&self, bytes: usize, what: &str) -> CuResult<Storage> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = rooms.last_mut() {
            let need = bytes.next_multiple_of(WEIGHT_ALIGN);
            if room.used + need <= room.mem.bytes {
                let p = room.mem.at(room.used);
                room.used += need;
                return Ok(Storage::Reserved(p));
            }
        }
        // Padded like the room's slots: kernels read 16-byte-aligned windows.
        Ok(Storage::Own(
            self.alloc(bytes.next_multiple_of(WEIGHT_ALIGN), what)?,
        ))
    }

    /// Copies host bytes (usually the file mapping) to the device through
    /// the pinned staging memory, UPLOAD_CHUNK at a time: the mapping's pages
    /// are read here, not faulted in one by one inside the driver's copy.
    fn upload(&self, dst: u64, src: &[u8]) -> CuResult<()> {
        self.ctx.bind()?;
        let s = self.stage(UPLOAD_CHUNK.min(src.len()));
        let chunk = s.bytes.min(UPLOAD_CHUNK);
        for (i, part) in src.chunks(chunk.max(1)).enumerate() {
            // The last copy out of the staging memory must be done.
            self.stream.sync()?;
            // SAFETY: `part` fits in the staging memory, which nothing else uses now.
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), s.as_mut_ptr(), part.len()) };
            self.stream
                .htod(dst + (i * chunk) as u64, s.as_mut_ptr(), part.len())?;
        }
        self.stream.sync()?;
        drop(s);
        Ok(())
    }

    /// An error unless `w`'s type has product kernels here.
    pub(super) fn check_kernels(&self, w: &HostMat) -> Result<(), BackendError> {
        let ty = w.format.ggml();
        if self.kernels.matmul.contains_key(&ty) {
            Ok(())
        } else {
            Err(BackendError(format!(
                "tensor '{}': {} has no CUDA kernels",
                w.name, ty
            )))
        }
    }

    pub(super) fn name_device(&self, e: BackendError) -> BackendError {
        BackendError(format!("{}: {}", self.name(), e.0))
    }

    fn stage(&self, bytes: usize) -> std::sync::MutexGuard<'_, PinnedMem> {
        let mut s = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        if s.bytes < bytes {
            match PinnedMem::alloc(bytes.next_power_of_two()) {
                Ok(m) => *s = m,
                Err(e) => self.keep(Err(e)),
            }
        }
        s
    }
}

/// Prompt batches of the layers left on the CPU: each weight crosses to the
/// GPU for its product, as llama.cpp does; worth it from this many tokens
/// (llama.cpp's threshold too).
const OFFLOAD_MIN_TOKENS: usize = 32;

/// Host bytes cross in pieces of this size through two pinned halves: the
/// host copies one piece while the bus carries the other.
const OFFLOAD_PIECE: usize = 8 << 20;

/// The device and pinned memory of the CPU's offloaded products, grown to
/// the largest call so far.
pub(super) struct OffloadRoom {
    weights: DeviceMem,
    x: DeviceMem,
    out: DeviceMem,
    staging: PinnedMem,
    /// When each staging half's last copy is done.
    done: [Event; 2],
}

/// `mem` holding at least `bytes`, reallocated if smaller.
fn at_least(mem: &mut DeviceMem, bytes: usize, what: &str) -> CuResult<u64> {
    if mem.bytes < bytes {
        *mem = DeviceMem::alloc(bytes, what)?;
    }
    Ok(mem.ptr)
}

impl CudaBackend {
    /// The offload room, with at least these bytes of weights, input and output.
    pub(super) fn offload_room(
        &self,
        weights: usize,
        x: usize,
        out: usize,
    ) -> CuResult<std::sync::MutexGuard<'_, Option<OffloadRoom>>> {
        self.ctx.bind()?;
        let mut room = self.offload.lock().unwrap_or_else(|p| p.into_inner());
        if room.is_none() {
            *room = Some(OffloadRoom {
                weights: DeviceMem::alloc(weights, "offloaded weights")?,
                x: DeviceMem::alloc(x, "offloaded activations")?,
                out: DeviceMem::alloc(out, "offloaded activations")?,
                staging: PinnedMem::alloc(2 * OFFLOAD_PIECE)?,
                done: [Event::new()?, Event::new()?],
            });
        }
        let r = room.as_mut().expect("made above");
        at_least(&mut r.weights, weights, "offloaded weights")?;
        at_least(&mut r.x, x, "offloaded activations")?;
        at_least(&mut r.out, out, "offloaded activations")?;
        Ok(room)
    }

    /// Host bytes to device memory at `dst`, piece by piece through the
    /// staging halves, the host copy of one piece overlapping the transfer
    /// of the one before.
    pub(super) fn send(
        &self,
        r: &OffloadRoom,
        dst: u64,
        src: &[u8],
        copy: &HostCopy<'_>,
    ) -> CuResult<()> {
        for (i, part) in src.chunks(OFFLOAD_PIECE).enumerate() {
            let half = i % 2;
            if i >= 2 {
                r.done[half].sync()?;
            }
            // SAFETY: each half holds OFFLOAD_PIECE bytes, unused until its
            // event said its last transfer was done.
            let stage = unsafe {
                std::slice::from_raw_parts_mut(
                    r.staging.as_mut_ptr().add(half * OFFLOAD_PIECE),
                    part.len(),
                )
            };
            copy(part, stage);
            self.stream
                .htod(dst + (i * OFFLOAD_PIECE) as u64, stage.as_ptr(), part.len())?;
            r.done[half].record(&self.stream)?;
        }
        // The halves are free for the next use once both transfers are done.
        r.done[0].sync()?;
        r.done[1].sync()
    }

    /// Device bytes at `src` to the host, the transfer of one piece
    /// overlapping the host copy of the one before; waits for the queued work.
    pub(super) fn receive(
        &self,
        r: &OffloadRoom,
        src: u64,
        dst: &mut [u8],
        copy: &HostCopy<'_>,
    ) -> CuResult<()> {
        let len = dst.len();
        let pieces = len.div_ceil(OFFLOAD_PIECE);
        let piece = |i: usize| i * OFFLOAD_PIECE..((i + 1) * OFFLOAD_PIECE).min(len);
        let start = |i: usize| -> CuResult<()> {
            let half = i % 2;
            let p = piece(i);
            // SAFETY: as in `send`; the caller waits on the half's event
            // before reading it or starting another transfer into it.
            let stage = unsafe { r.staging.as_mut_ptr().add(half * OFFLOAD_PIECE) };
            self.stream.dtoh(stage, src + p.start as u64, p.len())?;
            r.done[half].record(&self.stream)
        };
        for i in 0..pieces.min(2) {
            start(i)?;
        }
        for i in 0..pieces {
            let half = i % 2;
            r.done[half].sync()?;
            let p = piece(i);
            // SAFETY: the transfer into this half is done.
            let stage = unsafe {
                std::slice::from_raw_parts(
                    r.staging.as_mut_ptr().add(half * OFFLOAD_PIECE),
                    p.len(),
                )
            };
            copy(stage, &mut dst[p]);
            if i + 2 < pieces {
                start(i + 2)?;
            }
        }
        Ok(())
    }

    /// The tiled product of `w` (on the device at `wp`) and `tokens` rows at `xp`, into `yp`.
    fn offload_product(
        &self,
        w: &HostMat,
        wp: u64,
        xp: u64,
        yp: u64,
        tokens: usize,
    ) -> CuResult<()> {
        let Some(k) = self.kernels.matmul.get(&w.format.ggml()) else {
            return Err(BackendError(format!("{}: no kernels", w.format)));
        };
        self.product(k, wp, xp, yp, (w.rows, w.cols, w.row_bytes), tokens)
    }
}

pub(super) fn u32_bytes(x: &[u32]) -> &[u8] {
    // SAFETY: the byte view has x's extent; u8 has no alignment needs.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u8, x.len() * 4) }
}

fn f32_bytes(x: &[f32]) -> &[u8] {
    // SAFETY: f32 has no invalid bit patterns; the byte view has x's extent.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u8, x.len() * 4) }
}

fn f32_bytes_mut(x: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above; any bytes are a valid f32.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut u8, x.len() * 4) }
}

impl MatmulOffload for CudaBackend {
    fn min_tokens(&self) -> usize {
        OFFLOAD_MIN_TOKENS
    }

    fn matmuls_host(
        &self,
        x: &[f32],
        tokens: usize,
        products: &mut [(&HostMat, &mut [f32])],
        copy: &HostCopy<'_>,
    ) -> Result<(), BackendError> {
        let _p = crate::profile::scope("offload.matmuls");
        if products.iter().any(|(w, _)| w.input_order.is_some()) {
            return Err(BackendError(
                "inputs in a stored order stay on the host".into(),
            ));
        }
        let wbytes = |w: &HostMat| w.len.next_multiple_of(WEIGHT_ALIGN);
        let weights: usize = products.iter().map(|(w, _)| wbytes(w)).sum();
        let outs: usize = products.iter().map(|(w, _)| w.rows * tokens * 4).sum();
        let room = self.offload_room(weights, x.len() * 4, outs)?;
        let r = room.as_ref().expect("made by offload_room");
        self.send(r, r.x.ptr, f32_bytes(x), copy)?;
        let (mut wp, mut yp) = (r.weights.ptr, r.out.ptr);
        for (w, _) in products.iter() {
            self.send(r, wp, w.bytes(), copy)?;
            self.offload_product(w, wp, r.x.ptr, yp, tokens)?;
            wp += wbytes(w) as u64;
            yp += (w.rows * tokens * 4) as u64;
        }
        let mut yp = r.out.ptr;
        for (w, out) in products.iter_mut() {
            let n = w.rows * tokens;
            self.receive(r, yp, f32_bytes_mut(&mut out[..n]), copy)?;
            yp += (n * 4) as u64;
        }
        Ok(())
    }

    fn matmul_glu_host(
        &self,
        act: Glu,
        gate: &HostMat,
        up: &HostMat,
        x: &[f32],
        tokens: usize,
        out: &mut [f32],
        copy: &HostCopy<'_>,
    ) -> Result<(), BackendError> {
        let _p = crate::profile::scope("offload.matmul_glu");
        if gate.input_order.is_some() || up.input_order.is_some() {
            return Err(BackendError(
                "inputs in a stored order stay on the host".into(),
            ));
        }
        let gb = gate.len.next_multiple_of(WEIGHT_ALIGN);
        let ub = up.len.next_multiple_of(WEIGHT_ALIGN);
        let n = gate.rows * tokens;
        let room = self.offload_room(gb + ub, x.len() * 4, 2 * n * 4)?;
        let r = room.as_ref().expect("made by offload_room");
        self.send(r, r.x.ptr, f32_bytes(x), copy)?;
        let (gp, up_out) = (r.out.ptr, r.out.ptr + (n * 4) as u64);
        self.send(r, r.weights.ptr, gate.bytes(), copy)?;
        self.offload_product(gate, r.weights.ptr, r.x.ptr, gp, tokens)?;
        let uw = r.weights.ptr + gb as u64;
        self.send(r, uw, up.bytes(), copy)?;
        self.offload_product(up, uw, r.x.ptr, up_out, tokens)?;
        let f = match act {
            Glu::SwiGlu => self.kernels.swiglu,
            Glu::GeGlu => self.kernels.geglu,
        };
        let len = n as i64;
        f.launch(
            &self.stream,
            (blocks(n, 256), 1, 1),
            256,
            0,
            &[&gp, &up_out, &len],
        )?;
        self.receive(r, gp, f32_bytes_mut(&mut out[..n]), copy)
    }
}

/// LLM_CUDA_NO_FUSED_NORM=1: a decode step's input norms run as kernels of
/// their own rather than inside the products that read them (for timing
/// and checking the two).
fn no_fused_norm() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("LLM_CUDA_NO_FUSED_NORM").is_some_and(|v| v == "1"))
}

/// A decode attention kernel family's head sizes 64, 128 and 256 (the
/// `attention_rounds` variant).
fn vec_kernels(
    find: impl Fn(&str) -> CuResult<Function>,
    family: &str,
) -> CuResult<[Option<Function>; 3]> {
    let vu = attention_rounds();
    let one = |d: usize| find(&format!("{family}{d}{vu}")).map(Some);
    Ok([one(64)?, one(128)?, one(256)?])
}

/// A family's kernel (`vec_kernels`) for a head size, if it has one.
fn by_head_dim(set: &[Option<Function>; 3], head_dim: usize) -> Option<Function> {
    match head_dim {
        64 => set[0],
        128 => set[1],
        256 => set[2],
        _ => None,
    }
}

/// The decode attention kernels' suffix: LLM_CUDA_ATT_VU=8 takes those that
/// keep eight rounds of cells in flight a warp rather than four (for timing).
fn attention_rounds() -> &'static str {
    match std::env::var("LLM_CUDA_ATT_VU").as_deref() {
        Ok("8") => "_vu8",
        _ => "",
    }
}

/// LLM_CUDA_NO_SHARED_HALF=1: each batched product of a run of one input
/// (q, k and v; gate and up) converts it to f16 itself (for timing).
fn no_shared_half() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("LLM_CUDA_NO_SHARED_HALF").is_some_and(|v| v == "1"))
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Mat = CudaMat;
    type Vector = CudaVector;
    type Kv = CudaKv;
    type Scratch = CudaScratch;

    fn name(&self) -> String {
        format!("CUDA{} ({})", self.info.ordinal, self.info.name)
    }

    fn buf(&self, len: usize) -> Result<CudaBuf, BackendError> {
        Ok(CudaBuf {
            mem: self.alloc(len * 4, "activations")?,
            len,
        })
    }

    fn scratch(&self) -> Result<CudaScratch, BackendError> {
        self.ctx.bind()?;
        Ok(CudaScratch {
            step: DeviceMem::zeroed(8, "positions")?,
            step_host: PinnedMem::alloc(8)?,
            graphs: HashMap::new(),
            recording: None,
            attn_part: DeviceMem::alloc(ATT_PART_BYTES, "attention partials")?,
            attn_count: DeviceMem::zeroed(ATT_COUNTERS * 4, "attention counters")?,
            gathered: match self.ordered_cols.load(Ordering::Relaxed) {
                0 => None,
                cols => Some(self.buf(cols)?),
            },
            lean_x: match self.widest_cols.load(Ordering::Relaxed) {
                cols if cols > 0 && matvec1::lean_in_use() => {
                    Some(self.alloc(matvec1::lean_x_bytes(cols), "one token's quantised input")?)
                }
                _ => None,
            },
            lean_y: match self.widest_cols.load(Ordering::Relaxed) {
                cols if cols > 0
                    && matvec1::lean_in_use()
                    && (matvec1::lean_fuse() || attention_x16()) =>
                {
                    self.ctx.bind()?;
                    Some(LeanY {
                        mem: DeviceMem::zeroed(
                            matvec1::lean_y_bytes(cols),
                            "one token's quantised glu outputs",
                        )?,
                        cols,
                    })
                }
                _ => None,
            },
            lean_x_holds: None,
            lean_y_holds: None,
        })
    }

    fn reserve(&self, bytes: usize) -> Result<(), BackendError> {
        let mem = self.alloc(bytes, "the weights")?;
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.push(Room { mem, used: 0 });
        Ok(())
    }

    fn upload_mat(&self, w: &HostMat) -> Result<CudaMat, BackendError> {
        self.check_kernels(w)?;
        self.widest_cols.fetch_max(w.cols, Ordering::Relaxed);
        let mem = self.weight_storage(w.len, &format!("tensor '{}'", w.name))?;
        self.upload(mem.ptr(), w.bytes())
            .map_err(|e| self.name_device(e))?;
        let order = match &w.input_order {
            Some(order) => {
                self.ordered_cols.fetch_max(w.cols, Ordering::Relaxed);
                let mut known = self.orders.lock().unwrap_or_else(|p| p.into_inner());
                match known.iter().find(|(host, _)| Arc::ptr_eq(host, order)) {
                    Some((_, o)) => Some(o.clone()),
                    None => {
                        let what = format!("tensor '{}'", w.name);
                        let o = self.weight_storage(order.len() * 4, &what)?;
                        self.upload(o.ptr(), u32_bytes(order))
                            .map_err(|e| self.name_device(e))?;
                        let o = Arc::new(o);
                        known.push((order.clone(), o.clone()));
                        Some(o)
                    }
                }
            }
            None => None,
        };
        Ok(CudaMat::of(w, mem, order))
    }

    fn upload_vector(&self, v: &[f32]) -> Result<CudaVector, BackendError> {
        let mem = self.weight_storage(v.len() * 4, "a vector")?;
        // SAFETY: `v` is live for the synchronous copy.
        check("uploading a vector", unsafe {
            cudarc::driver::result::memcpy_htod_sync(mem.ptr(), v)
        })?;
        Ok(CudaVector { mem, len: v.len() })
    }

    fn kv(
        &self,
        cells: usize,
        kv_dim: usize,
        head_dim: usize,
        types: KvTypes,
    ) -> Result<CudaKv, BackendError> {
        if !types.is_f16() {
            types
                .check_head_dim(head_dim)
                .map_err(|e| BackendError(format!("{}: {e}", self.name())))?;
            // The kernels for these caches take heads in whole warps of 32
            // values (a bf16 cache alone would pass the block check).
            if !head_dim.is_multiple_of(32) {
                return Err(BackendError(format!(
                    "{}: a KV cache of {types} takes heads of a multiple of 32 values on the GPU, and this model's are {head_dim}: use -ngl 0 or an f16 cache",
                    self.name()
                )));
            }
        }
        if head_dim > 256 {
            return Err(BackendError(format!(
                "{}: attention takes heads of up to 256 values, and this model's are {head_dim}",
                self.name()
            )));
        }
        // Rounded up to 16 bytes (as kv_bytes counts): the kernels read a
        // row's last 8 values in aligned words, which may reach 2 bytes past
        // an odd-sized cache.
        let k_bytes = (cells * crate::kv_types::row_bytes(types.k, kv_dim)).next_multiple_of(16);
        let v_bytes = (cells * crate::kv_types::row_bytes(types.v, kv_dim)).next_multiple_of(16);
        self.ctx.bind()?;
        let k = DeviceMem::zeroed(k_bytes, "the KV cache").map_err(|e| self.name_device(e))?;
        let v = DeviceMem::zeroed(v_bytes, "the KV cache").map_err(|e| self.name_device(e))?;
        Ok(CudaKv {
            k,
            v,
            cells,
            kv_dim,
            head_dim,
            types,
        })
    }

    fn kv_bytes(cells: usize, kv_dim: usize, types: KvTypes) -> usize {
        let padded = |t| (cells * crate::kv_types::row_bytes(t, kv_dim)).next_multiple_of(16);
        padded(types.k) + padded(types.v)
    }

    fn kv_allocated(&self, kv: &CudaKv) -> usize {
        kv.k.bytes + kv.v.bytes
    }

    fn write(&self, src: &[f32], dst: &mut CudaBuf) {
        assert!(src.len() <= dst.len, "write past the buffer");
        self.bind();
        let bytes = src.len() * 4;
        let mut s = self.stage(bytes);
        if s.bytes < bytes {
            return;
        }
        // The previous use of the staging memory must be over before it is
        // overwritten: reads sync, and writes are followed by this one.
        self.keep(self.stream.sync());
        s.f32s(src.len()).copy_from_slice(src);
        self.keep(self.stream.htod(dst.ptr(), s.as_mut_ptr(), bytes));
    }

    fn write_with(&self, n: usize, fill: &mut dyn FnMut(&mut [f32]), dst: &mut CudaBuf) {
        assert!(n <= dst.len, "write past the buffer");
        self.bind();
        let bytes = n * 4;
        let mut s = self.stage(bytes);
        if s.bytes < bytes {
            return;
        }
        // As `write`: the staging memory's last use over first.
        self.keep(self.stream.sync());
        fill(s.f32s(n));
        self.keep(self.stream.htod(dst.ptr(), s.as_mut_ptr(), bytes));
    }

    fn read(&self, src: &CudaBuf, dst: &mut [f32]) -> Result<(), BackendError> {
        assert!(dst.len() <= src.len, "read past the buffer");
        self.bind();
        let bytes = dst.len() * 4;
        let mut s = self.stage(bytes);
        if s.bytes >= bytes {
            self.keep(self.stream.dtoh(s.as_mut_ptr(), src.ptr(), bytes));
            self.keep(self.stream.sync());
            dst.copy_from_slice(s.f32s(dst.len()));
        }
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(e) => Err(self.name_device(e)),
            None => Ok(()),
        }
    }

    fn begin(&self, sc: &mut CudaScratch, pos0: usize, tokens: usize) {
        self.bind();
        // The last batch's copy must have read the old values first.
        self.keep(self.stream.sync());
        let host = sc.step_host.as_mut_ptr() as *mut i32;
        // SAFETY: 8 bytes of pinned memory owned by `sc`.
        unsafe {
            *host = pos0 as i32;
            *host.add(1) = tokens as i32;
        }
        self.keep(self.stream.htod(sc.step.ptr, host as *const u8, 8));
    }

    fn replay(&self, sc: &mut CudaScratch, key: u64) -> bool {
        if let Some(g) = sc.graphs.get(&key) {
            self.keep(g.launch(&self.stream));
            return true;
        }
        match self.stream.begin_capture() {
            Ok(()) => sc.recording = Some(key),
            Err(e) => self.keep(Err(e)),
        }
        false
    }

    fn end_recording(&self, sc: &mut CudaScratch, key: u64) {
        if sc.recording.take() != Some(key) {
            return;
        }
        match self.stream.end_capture() {
            Ok(g) => {
                self.keep(g.launch(&self.stream));
                sc.graphs.insert(key, g);
            }
            Err(e) => self.keep(Err(e)),
        }
    }

    fn matmul(&self, sc: &mut CudaScratch, w: &CudaMat, x: &CudaBuf, t: usize, out: &mut CudaBuf) {
        if t == 1 && self.matvec1(sc, Epilogue::Store, w, x, &[(w, out.mem.ptr, w.rows)], None) {
            return;
        }
        self.in_order(sc, w, x, t, |x| self.matmul_in_order(w, x, t, out));
    }

    fn matmuls(
        &self,
        sc: &mut CudaScratch,
        x: &CudaBuf,
        t: usize,
        products: &mut [(&CudaMat, &mut CudaBuf)],
    ) {
        // Runs of products of one type and shape go as one launch: for one
        // token whatever their input orders (matvec1 reads X through each),
        // for batches only those of one order (gathered once).
        let mut i = 0;
        while i < products.len() {
            let w = products[i].0;
            let key = |m: &CudaMat| (m.ty, m.cols, if t == 1 { None } else { m.order_ptr() });
            let mut n = 1;
            while n < 3 && i + n < products.len() && key(products[i + n].0) == key(w) {
                n += 1;
            }
            let run = &mut products[i..i + n];
            let parts: Vec<(&CudaMat, u64, usize)> = run
                .iter()
                .map(|(pw, out)| (*pw, out.mem.ptr, pw.rows))
                .collect();
            let one_order = run.iter().all(|(pw, _)| pw.order_ptr() == w.order_ptr());
            if t == 1 && self.matvec1(sc, Epilogue::Store, w, x, &parts, None) {
            } else if one_order {
                self.in_order(sc, w, x, t, |x| self.matmuls_in_order(run, x, t));
            } else {
                for (pw, out) in run.iter_mut() {
                    self.in_order(sc, pw, x, t, |x| self.matmul_in_order(pw, x, t, out));
                }
            }
            i += n;
        }
    }

    fn matmul_add(
        &self,
        sc: &mut CudaScratch,
        w: &CudaMat,
        x: &CudaBuf,
        t: usize,
        width: usize,
        acc: &mut CudaBuf,
        tmp: &mut CudaBuf,
    ) {
        let done = (t == 1
            && self.matvec1(sc, Epilogue::Add, w, x, &[(w, acc.mem.ptr, w.rows)], None))
            || self.wgmma_fused(sc, Epilogue::Add, w, None, x, t, acc);
        if !done {
            self.matmul(sc, w, x, t, tmp);
            self.add(acc, tmp, t * width);
        }
    }

    fn matmul_glu(
        &self,
        sc: &mut CudaScratch,
        act: Glu,
        w_gate: &CudaMat,
        w_up: &CudaMat,
        x: &CudaBuf,
        t: usize,
        width: usize,
        gate: &mut CudaBuf,
        up: &mut CudaBuf,
    ) {
        if !self.glu_matvec1(sc, act, w_gate, w_up, x, t, gate, None)
            && !self.wgmma_fused(sc, Epilogue::Glu(act), w_gate, Some(w_up), x, t, gate)
        {
            self.matmuls(sc, x, t, &mut [(w_gate, &mut *gate), (w_up, &mut *up)]);
            self.glu(act, gate, up, t * width);
        }
    }

    fn matmuls_normed(
        &self,
        sc: &mut CudaScratch,
        x: &CudaBuf,
        norm: &CudaVector,
        eps: f32,
        t: usize,
        xb: &mut CudaBuf,
        products: &mut [(&CudaMat, &mut CudaBuf)],
    ) {
        // One token's runs of products of one type and shape (q, k and v;
        // or q and k, then a v of another type, as Q4_K_M's) each read x
        // through the norm in one launch (the lean ones quantise it once for
        // all: lean_matvec1); from a run that has no such launch on, x is
        // normed first.
        let mut i = 0;
        while t == 1 && i < products.len() && !no_fused_norm() {
            let w = products[i].0;
            let mut n = 1;
            while n < 3
                && i + n < products.len()
                && (products[i + n].0.ty, products[i + n].0.cols) == (w.ty, w.cols)
            {
                n += 1;
            }
            let parts: Vec<(&CudaMat, u64, usize)> = products[i..i + n]
                .iter()
                .map(|(pw, out)| (*pw, out.mem.ptr, pw.rows))
                .collect();
            if !self.matvec1(sc, Epilogue::Store, w, x, &parts, Some((norm, eps))) {
                break;
            }
            i += n;
        }
        if i < products.len() {
            self.rms_norm(x, norm, eps, t, xb);
            self.matmuls(sc, xb, t, &mut products[i..]);
        }
    }

    fn matmul_glu_normed(
        &self,
        sc: &mut CudaScratch,
        x: &CudaBuf,
        norm: &CudaVector,
        eps: f32,
        xb: &mut CudaBuf,
        act: Glu,
        w_gate: &CudaMat,
        w_up: &CudaMat,
        t: usize,
        width: usize,
        gate: &mut CudaBuf,
        up: &mut CudaBuf,
    ) {
        let done = !no_fused_norm()
            && self.glu_matvec1(sc, act, w_gate, w_up, x, t, gate, Some((norm, eps)));
        if !done {
            self.rms_norm(x, norm, eps, t, xb);
            self.matmul_glu(sc, act, w_gate, w_up, xb, t, width, gate, up);
        }
    }

    fn rms_norm(&self, src: &CudaBuf, w: &CudaVector, eps: f32, rows: usize, dst: &mut CudaBuf) {
        let width = w.len as i32;
        self.launch(
            self.kernels.rms_norm,
            (rows as u32, 1, 1),
            256,
            &[&src.mem.ptr, &w.mem.ptr(), &dst.mem.ptr, &width, &eps],
        );
    }

    fn rms_norm_in_place(&self, x: &mut CudaBuf, w: &CudaVector, eps: f32, rows: usize) {
        let width = w.len as i32;
        self.launch(
            self.kernels.rms_norm,
            (rows as u32, 1, 1),
            256,
            &[&x.mem.ptr, &w.mem.ptr(), &x.mem.ptr, &width, &eps],
        );
    }

    fn add_bias(&self, x: &mut CudaBuf, bias: &CudaVector, rows: usize) {
        let (width, n) = (bias.len as i32, (rows * bias.len) as i64);
        self.elementwise(
            self.kernels.add_bias,
            n as usize,
            &[&x.mem.ptr, &bias.mem.ptr(), &width, &n],
        );
    }

    fn add(&self, x: &mut CudaBuf, y: &CudaBuf, len: usize) {
        let n = len as i64;
        self.elementwise(self.kernels.add, len, &[&x.mem.ptr, &y.mem.ptr, &n]);
    }

    fn scale(&self, x: &mut CudaBuf, s: f32, len: usize) {
        let n = len as i64;
        self.elementwise(self.kernels.scale, len, &[&x.mem.ptr, &s, &n]);
    }

    fn copy_cols(
        &self,
        src: &CudaBuf,
        src_width: usize,
        col0: usize,
        width: usize,
        rows: usize,
        dst: &mut CudaBuf,
    ) {
        let (sw, c0, w, n) = (
            src_width as i32,
            col0 as i32,
            width as i32,
            (rows * width) as i64,
        );
        self.elementwise(
            self.kernels.copy_cols,
            rows * width,
            &[&src.mem.ptr, &sw, &c0, &w, &dst.mem.ptr, &n],
        );
    }

    fn copy_rows(&self, src: &CudaBuf, row0: usize, rows: usize, width: usize, dst: &mut CudaBuf) {
        self.keep(
            self.stream
                .dtod(dst.mem.ptr, src.mem.at(row0 * width * 4), rows * width * 4),
        );
    }

    fn rope(
        &self,
        sc: &mut CudaScratch,
        x: &mut CudaBuf,
        tokens: usize,
        n_heads: usize,
        head_dim: usize,
        rope: &Rope,
        freq_factors: Option<&CudaVector>,
        _pos0: usize,
    ) {
        let p = rope_params(rope);
        let ff = freq_factors.map_or(0u64, |f| f.mem.ptr());
        let (nh, hd) = (n_heads as i32, head_dim as i32);
        self.launch(
            self.kernels.rope,
            (tokens as u32, rope_blocks(n_heads), 1),
            ROPE_THREADS,
            &[&x.mem.ptr, &nh, &hd, &sc.step.ptr, &p, &ff],
        );
    }

    fn rope_store(
        &self,
        sc: &mut CudaScratch,
        kv: &mut CudaKv,
        q: &mut CudaBuf,
        k: &mut CudaBuf,
        v: &CudaBuf,
        tokens: usize,
        (n_head, n_head_kv): (usize, usize),
        head_dim: usize,
        rope: &Rope,
        freq_factors: Option<&CudaVector>,
        _pos0: usize,
    ) {
        debug_assert_eq!(kv.kv_dim, n_head_kv * head_dim);
        let p = rope_params(rope);
        let ff = freq_factors.map_or(0u64, |f| f.mem.ptr());
        if !kv.types.is_f16() {
            self.rope_store_quantised(sc, kv, q, k, v, tokens, n_head, &p, ff);
            return;
        }
        let (nh, nkv, hd, cells) = (
            n_head as i32,
            n_head_kv as i32,
            head_dim as i32,
            kv.cells as i32,
        );
        self.launch(
            self.kernels.rope_store,
            (
                tokens as u32,
                rope_store_blocks(tokens, n_head + n_head_kv, self.info.sms as usize),
                1,
            ),
            ROPE_THREADS,
            &[
                &q.mem.ptr,
                &k.mem.ptr,
                &v.mem.ptr,
                &nh,
                &nkv,
                &hd,
                &sc.step.ptr,
                &p,
                &ff,
                &kv.k.ptr,
                &kv.v.ptr,
                &cells,
            ],
        );
    }

    fn rope_store_attention(
        &self,
        sc: &mut CudaScratch,
        kv: &mut CudaKv,
        (q, k, v): (&mut CudaBuf, &mut CudaBuf, &CudaBuf),
        tokens: usize,
        rope: &Rope,
        freq_factors: Option<&CudaVector>,
        pos0: usize,
        a: &Attention,
        out: &mut CudaBuf,
    ) {
        let f = match by_head_dim(&self.kernels.rope_attention_vec, a.head_dim) {
            Some(f) if tokens == 1 && kv.types.is_f16() => f,
            _ => {
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
                return;
            }
        };
        let splits = attention_splits(
            kv.cells,
            tokens,
            a.n_head,
            a.head_dim,
            true,
            self.info.sms.max(1) as usize,
        );
        let block = attention_vec_block(splits);
        let p = rope_params(rope);
        let ff = freq_factors.map_or(0u64, |f| f.mem.ptr());
        let (nh, nkv, cells) = (a.n_head as i32, a.n_head_kv as i32, kv.cells as i32);
        let window = a.window.map_or(0, |w| w as i32);
        let count = self.split_counters(sc, splits, tokens, a.n_head);
        let q16 = attention_q16_room(sc, a, tokens, splits, count);
        self.launch(
            f,
            (1, a.n_head as u32, splits as u32),
            block,
            &[
                &q.mem.ptr,
                &k.mem.ptr,
                &v.mem.ptr,
                &kv.k.ptr,
                &kv.v.ptr,
                &out.mem.ptr,
                &sc.attn_part.ptr,
                &nh,
                &nkv,
                &cells,
                &sc.step.ptr,
                &window,
                &a.kq_scale,
                &p,
                &ff,
                &count,
                &q16,
            ],
        );
        self.attention_q16_written(sc, a, q16, out);
        self.merge_uncounted(sc, tokens, a, splits, count, out);
    }

    fn kv_store(
        &self,
        sc: &mut CudaScratch,
        kv: &mut CudaKv,
        k: &CudaBuf,
        v: &CudaBuf,
        _pos0: usize,
        tokens: usize,
    ) {
        if !kv.types.is_f16() {
            self.kv_store_quantised(sc, kv, k, v, tokens);
            return;
        }
        let (kv_dim, cells) = (kv.kv_dim as i32, kv.cells as i32);
        self.launch(
            self.kernels.kv_store,
            (tokens as u32, blocks(kv.kv_dim, 256), 1),
            256,
            &[
                &kv.k.ptr,
                &kv.v.ptr,
                &k.mem.ptr,
                &v.mem.ptr,
                &kv_dim,
                &cells,
                &sc.step.ptr,
            ],
        );
    }

    fn attention(
        &self,
        sc: &mut CudaScratch,
        kv: &CudaKv,
        q: &CudaBuf,
        _pos0: usize,
        tokens: usize,
        a: &Attention,
        out: &mut CudaBuf,
    ) {
        let (nh, nkv, hd, cells) = (
            a.n_head as i32,
            a.n_head_kv as i32,
            a.head_dim as i32,
            kv.cells as i32,
        );
        let window = a.window.map_or(0, |w| w as i32);
        // A decode step has only n_head blocks: over a long cache they split
        // it (each block a share, then a merge), over a short one they take
        // many warps each. A prompt batch shares each tile of the cache among
        // 8 queries.
        let splits = attention_splits(
            kv.cells,
            tokens,
            a.n_head,
            a.head_dim,
            kv.types.is_f16(),
            self.info.sms.max(1) as usize,
        );
        if !kv.types.is_f16() {
            let decode = tokens <= MATVEC_MAX_TOKENS;
            let splits = if decode { splits } else { 1 };
            self.attention_quantised(sc, kv, q, tokens, a, splits, decode, out);
            return;
        }
        let vec = by_head_dim(&self.kernels.attention_vec, a.head_dim);
        if let (Some(f), true) = (vec, tokens <= MATVEC_MAX_TOKENS) {
            let block = attention_vec_block(splits);
            let count = self.split_counters(sc, splits, tokens, a.n_head);
            let q16 = attention_q16_room(sc, a, tokens, splits, count);
            self.launch(
                f,
                (tokens as u32, a.n_head as u32, splits as u32),
                block,
                &[
                    &q.mem.ptr,
                    &kv.k.ptr,
                    &kv.v.ptr,
                    &out.mem.ptr,
                    &sc.attn_part.ptr,
                    &nh,
                    &nkv,
                    &cells,
                    &sc.step.ptr,
                    &window,
                    &a.kq_scale,
                    &count,
                    &q16,
                ],
            );
            self.attention_q16_written(sc, a, q16, out);
            self.merge_uncounted(sc, tokens, a, splits, count, out);
            return;
        }
        if tokens <= MATVEC_MAX_TOKENS && splits > 1 {
            self.launch(
                self.kernels.attention_split,
                (tokens as u32, a.n_head as u32, splits as u32),
                128,
                &[
                    &q.mem.ptr,
                    &kv.k.ptr,
                    &kv.v.ptr,
                    &sc.attn_part.ptr,
                    &nh,
                    &nkv,
                    &hd,
                    &cells,
                    &sc.step.ptr,
                    &window,
                    &a.kq_scale,
                ],
            );
            self.attention_merge(sc, tokens, a, splits, out);
            return;
        }
        let tc = match a.head_dim {
            64 => self.kernels.attention_prompt_fa[0].or(self.kernels.attention_prompt_tc[0]),
            128 => self.kernels.attention_prompt_fa[1].or(self.kernels.attention_prompt_tc[1]),
            _ => None,
        };
        let batch = tokens > MATVEC_MAX_TOKENS;
        let (kernel, grid, block, shared) = match (tc, self.kernels.attention_prompt) {
            (Some((f, shared)), _) if batch => (f, blocks(tokens, 64), 128, shared),
            (_, Some(f)) if batch => (f, blocks(tokens, 8), 256, 0),
            _ => (self.kernels.attention, tokens as u32, 32 * 16, 0),
        };
        self.keep(kernel.launch(
            &self.stream,
            (grid, a.n_head as u32, 1),
            block,
            shared,
            &[
                &q.mem.ptr,
                &kv.k.ptr,
                &kv.v.ptr,
                &out.mem.ptr,
                &nh,
                &nkv,
                &hd,
                &cells,
                &sc.step.ptr,
                &window,
                &a.kq_scale,
            ],
        ));
    }

    fn glu(&self, act: Glu, gate: &mut CudaBuf, up: &CudaBuf, len: usize) {
        let f = match act {
            Glu::SwiGlu => self.kernels.swiglu,
            Glu::GeGlu => self.kernels.geglu,
        };
        let n = len as i64;
        self.elementwise(f, len, &[&gate.mem.ptr, &up.mem.ptr, &n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend_check::{check, failures};

    #[test]
    fn rope_store_blocks_fill_the_gpu() {
        // A decode step keeps a block every four heads (a 7B's 64 over 16).
        assert_eq!(rope_store_blocks(1, 64, 132), 16);
        assert_eq!(rope_store_blocks(3, 6, 132), 2);
        // A prompt batch: a 7B's 512 tokens two blocks each (1024 blocks),
        // 64 tokens nine, 4096 one.
        assert_eq!(rope_store_blocks(512, 64, 132), 2);
        assert_eq!(rope_store_blocks(64, 64, 132), 9);
        assert_eq!(rope_store_blocks(4096, 40, 132), 1);
    }

    #[test]
    fn prompt_attention_shared_memory() {
        // Two blocks of head size 128 a Hopper multiprocessor (228 KiB).
        assert_eq!(prompt_tc_shared(128), 192 * 136 * 2 + 17408 + 9216);
        assert!(2 * (prompt_tc_shared(128) + 1024) <= 228 << 10);
        assert_eq!(prompt_tc_shared(64), 192 * 72 * 2 + 17408 + 9216);
    }

    /// The split rule on an H200's 132 multiprocessors, as measured in
    /// attention_splits' note: many heads keep splits of 256 cells over a
    /// quantised cache and two blocks a multiprocessor over an f16 one, few
    /// heads get four blocks a multiprocessor, short caches none.
    #[test]
    fn decode_attention_splits() {
        let sms = 132;
        let f =
            |cells, tokens, n_head, hd, f16| attention_splits(cells, tokens, n_head, hd, f16, sms);
        assert_eq!(f(513, 1, 32, 128, true), 1);
        assert_eq!(f(1024, 1, 32, 128, true), 8);
        assert_eq!(f(4225, 1, 32, 128, true), 8); // 7B at depth 4096
        assert_eq!(f(4225, 1, 32, 128, false), 16);
        assert_eq!(f(16384, 1, 32, 128, true), 8);
        assert_eq!(f(16384, 1, 64, 128, true), 4); // 70B
        assert_eq!(f(16384, 1, 32, 128, false), 32);
        assert_eq!(f(4225, 1, 4, 256, true), 64); // Gemma-3-270M
        assert_eq!(f(4225, 1, 4, 256, false), 64);
        assert_eq!(f(1024, 1, 4, 256, false), 16); // its window's ring
        assert_eq!(f(4225, 1, 9, 64, true), 16); // SmolLM2
        assert_eq!(f(4225, 1, 9, 64, false), 59);
        assert_eq!(f(4225, 4, 32, 128, true), 2);
        assert_eq!(attention_vec_block(1), 512);
        assert_eq!(attention_vec_block(8), 256);
    }

    /// Every op on the GPU against the scalar CPU backend (the backend-ops
    /// test), and the matmul also against the exact f64 product. Skips where
    /// there is no GPU. The CPU quantises activations to 8 bits before a
    /// quantised matmul (as ggml does) while the GPU keeps f32 (mat-vec) or
    /// f16 (tiles), so the GPU is held to the exact product, tighter than
    /// the CPU is; f16 and its rounding in the cache also set attention's bound.
    #[test]
    fn every_op_matches_the_cpu() {
        let gpus = crate::cuda::devices();
        let Some(first) = gpus.iter().find(|d| d.problem.is_none()) else {
            eprintln!("skipped: no GPU");
            return;
        };
        let b = CudaBackend::new(first.ordinal).expect("the GPU opens");
        let outcomes = check(&b, 11);
        for o in &outcomes {
            eprintln!("{:<18} {:<60} {:.3e}", o.op, o.case, o.rel_err);
        }
        // The same cases on the CPU, which attends over a quantised cache
        // as llama.cpp does (queries quantised for the dot products).
        let cpu = check(
            &crate::cpu::backend::CpuBackend::new(2, crate::cpu::isa()),
            11,
        );
        let cpu_err = |o: &crate::backend_check::Outcome| {
            cpu.iter()
                .find(|c| c.op == o.op && c.case == o.case)
                .map_or(0.0, |c| c.rel_err)
        };
        let bad = failures(&outcomes, |o| match o.op {
            // No further from attention over the stored cache than the CPU.
            "attention_vs_f64" => cpu_err(o),
            // Against the CPU: its 8-bit queries set the difference.
            "attention" | "rope_store" | "rope_store_attention" if o.case.contains("cache") => 3e-2,
            // Shown, not held: the CPU's own 8-bit activations dominate
            // (a single short row can be off by tens of percent); the exact
            // product below is the bound.
            "matmul" => f64::INFINITY,
            // f16 tiles past 8 tokens, f32 below.
            "matmul_vs_f64" if o.case.starts_with("F32") || o.case.starts_with("BF16") => 1e-5,
            "matmul_vs_f64" => 2e-3,
            // The same products (whose types' bounds are above), their
            // epilogues in f32: a wrong row, part or epilogue is off by O(1).
            "fused" => f64::INFINITY,
            "fused_vs_f64" => 2e-3,
            // 16-bit activations up to 8 tokens, f16 tiles past them.
            "grouped_vs_f64" => 1e-3,
            "attention" | "rope_store" | "rope_store_attention" => 2e-3,
            // The CPU rounds GELU through an f16 table.
            "geglu" => 2e-3,
            "swiglu" => 1e-5,
            // The CPU multiplies theta up pair by pair; the GPU takes a power.
            // Both are f32 approximations of the angle pos * theta, which
            // at position 9000 differ in the fourth digit.
            "rope" => 1e-3,
            "rms_norm" | "rms_norm_in_place" => 1e-5,
            _ => 0.0,
        });
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    /// A cache of every type the GPU stores holds the CPU's bytes for the
    /// same keys and values (so cells cross between them as bytes, and the
    /// attention check compares kernels over one cache): rotated heads,
    /// blocks of zeros, a ring that wraps.
    #[test]
    fn quantised_caches_hold_the_cpus_bytes() {
        use crate::backend_check::Rng;
        use crate::kv_types::CACHE_TYPES;
        let gpus = crate::cuda::devices();
        let Some(first) = gpus.iter().find(|d| d.problem.is_none()) else {
            eprintln!("skipped: no GPU");
            return;
        };
        let gpu = CudaBackend::new(first.ordinal).expect("the GPU opens");
        let cpu = crate::cpu::backend::CpuBackend::new(2, crate::cpu::isa());
        let mut rng = Rng::new(3);
        let copy = |s: &[u8], d: &mut [u8]| d.copy_from_slice(s);
        let mut bad = Vec::new();
        for (i, &k) in CACHE_TYPES.iter().enumerate() {
            let v = CACHE_TYPES[(i + 3) % CACHE_TYPES.len()];
            let types = KvTypes { k, v };
            for (n_head_kv, head_dim) in [(2, 64), (1, 128), (2, 96), (1, 256)] {
                // Two batches, the second wrapping the ring.
                let (kv_dim, cells, tokens) = (n_head_kv * head_dim, 24, 30);
                let batches = [(0, 20), (20, 10)];
                let mut kx = rng.vec(tokens * kv_dim, 2.0);
                let vx = rng.vec(tokens * kv_dim, 0.5);
                kx[..32].fill(0.0);
                kx[64..96].iter_mut().for_each(|x| *x *= 1e4);
                let mut caches = Vec::new();
                for dev in 0..2 {
                    let (mut kc, mut vc) = (vec![0u16; 0], vec![0u16; 0]);
                    let (kw, vw) = types.row_words(kv_dim);
                    kc.resize(cells * kw, 0);
                    vc.resize(cells * vw, 0);
                    if dev == 0 {
                        let mut kv = cpu.kv(cells, kv_dim, head_dim, types).unwrap();
                        let mut sc = cpu.scratch().unwrap();
                        for (pos0, n) in batches {
                            let r = pos0 * kv_dim..(pos0 + n) * kv_dim;
                            let (kx, vx) = (kx[r.clone()].to_vec(), vx[r].to_vec());
                            cpu.kv_store(&mut sc, &mut kv, &kx, &vx, pos0, n);
                        }
                        cpu.kv_cells_out(&kv, 0, &mut kc, &mut vc);
                    } else {
                        let mut kv = gpu.kv(cells, kv_dim, head_dim, types).unwrap();
                        let mut sc = gpu.scratch().unwrap();
                        for (pos0, n) in batches {
                            let r = pos0 * kv_dim..(pos0 + n) * kv_dim;
                            let (mut kb, mut vb) =
                                (gpu.buf(r.len()).unwrap(), gpu.buf(r.len()).unwrap());
                            gpu.write(&kx[r.clone()], &mut kb);
                            gpu.write(&vx[r], &mut vb);
                            gpu.begin(&mut sc, pos0, n);
                            gpu.kv_store(&mut sc, &mut kv, &kb, &vb, pos0, n);
                        }
                        gpu.kv_get(&kv, 0, &mut kc, &mut vc, &copy).unwrap();
                    }
                    caches.push((kc, vc));
                }
                let what = format!("{types}, {n_head_kv} heads of {head_dim}");
                if caches[0].0 != caches[1].0 {
                    bad.push(format!("{what}: keys differ"));
                }
                if caches[0].1 != caches[1].1 {
                    bad.push(format!("{what}: values differ"));
                }
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    /// The CPU's prompt batches sent to the GPU (`matmuls_host`,
    /// `matmul_glu_host`), pieces of the pipelined copies included, against
    /// the exact product.
    #[test]
    fn offloaded_batches_match_the_exact_product() {
        use crate::backend_check::{exact_matmul, random_mat, rel_err, Rng};
        let gpus = crate::cuda::devices();
        let Some(first) = gpus.iter().find(|d| d.problem.is_none()) else {
            eprintln!("skipped: no GPU");
            return;
        };
        let gpu = std::sync::Arc::new(CudaBackend::new(first.ordinal).expect("the GPU opens"));
        let cpu = crate::cpu::backend::CpuBackend::new(2, crate::cpu::isa()).with_offload(gpu);
        let mut sc = cpu.scratch().expect("CPU scratch");
        let mut rng = Rng::new(5);
        // (type, rows, cols, tokens): the last two cross in several pieces
        // (an 18 MB weight; a 9 MB product).
        let cases = [
            (GgmlType::Q4_K, 96, 512, 40),
            (GgmlType::Q6_K, 64, 256, 33),
            (GgmlType::Q8_0, 80, 256, 64),
            (GgmlType::F16, 2304, 4096, 32),
            (GgmlType::Q4_0, 4608, 256, 512),
        ];
        for (ty, rows, cols, tokens) in cases {
            let (w1, w2) = (
                random_mat(&mut rng, ty, rows, cols),
                random_mat(&mut rng, ty, rows, cols),
            );
            let x = rng.vec(tokens * cols, 1.0);
            let (m1, m2) = (cpu.upload_mat(&w1).unwrap(), cpu.upload_mat(&w2).unwrap());
            let (e1, e2) = (exact_matmul(&w1, &x, tokens), exact_matmul(&w2, &x, tokens));
            let (mut o1, mut o2) = (Vec::new(), Vec::new());
            cpu.matmuls(&mut sc, &x, tokens, &mut [(&m1, &mut o1), (&m2, &mut o2)]);
            let err = rel_err(&e1, &o1).max(rel_err(&e2, &o2));
            eprintln!("{ty:?} {rows}x{cols} x {tokens}: matmuls {err:.3e}");
            assert!(err < 2e-3, "{ty:?}: offloaded matmuls off by {err:.3e}");
            let (mut gate, mut up) = (Vec::new(), Vec::new());
            cpu.matmul_glu(
                &mut sc,
                Glu::SwiGlu,
                &m1,
                &m2,
                &x,
                tokens,
                rows,
                &mut gate,
                &mut up,
            );
            let want: Vec<f32> = e1
                .iter()
                .zip(&e2)
                .map(|(&g, &u)| {
                    let g = f64::from(g);
                    (g / (1.0 + (-g).exp()) * f64::from(u)) as f32
                })
                .collect();
            let err = rel_err(&want, &gate[..want.len()]);
            eprintln!("{ty:?} {rows}x{cols} x {tokens}: matmul_glu {err:.3e}");
            assert!(err < 2e-3, "{ty:?}: offloaded swiglu off by {err:.3e}");
        }
    }
}
