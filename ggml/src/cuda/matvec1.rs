//! The decode step's one-token mat-vec kernels (matmul.cu's
//! `matvec1_<t>_<variant>`): X quantised inside the kernel, up to three
//! products of one input in one launch, and the residual add or the gated
//! activation in the epilogue. A decode step runs many small products, each
//! launch costs microseconds, and so do the element-wise kernels these
//! replace.

use super::driver::{CuResult, Function};
use crate::backend::Glu;
use crate::GgmlType;

/// What a launch does with its products.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Epilogue {
    /// `Y_p = W_p · X` for each part.
    Store,
    /// `Y += W · X` (one part).
    Add,
    /// `Y = act(W_gate · X) * (W_up · X)` (parts: gate, then up).
    Glu(Glu),
}

/// One kernel, the dynamic shared memory it may take on this GPU and the
/// most of its blocks a multiprocessor holds (its registers' limit).
#[derive(Clone, Copy)]
struct Kernel {
    f: Function,
    max_shared: usize,
    most_resident: usize,
}

/// The X-stationary kernels (matvec1_xs.cuh), by epilogue.
#[derive(Clone, Copy)]
struct Stationary {
    store: Kernel,
    add: Kernel,
    swiglu: Kernel,
    geglu: Kernel,
}

/// A weight type's one-token kernels.
pub(super) struct Matvec1 {
    /// The float types' variant: X read as it is, no shared memory.
    float: bool,
    /// One and two rows a warp; stores, then adds.
    r1: Kernel,
    r2: Kernel,
    r1a: Kernel,
    r2a: Kernel,
    swiglu: Kernel,
    geglu: Kernel,
    /// The X-stationary variants, where the module has them.
    stationary: Option<Stationary>,
    /// The products of X quantised once (matvec1_lean.cu: Q4_K, Q4_0,
    /// Q8_0, Q6_K; F16 reads X as it is), where LLM_CUDA_LEAN_TYPES lists
    /// the type.
    lean: Option<Lean>,
}

/// quantize_x16 and the products that read its output, by epilogue.
#[derive(Clone, Copy)]
struct Lean {
    /// quantize_x16 (None for F16, whose products read X as it is).
    quantize: Option<Function>,
    /// The plain loop (None for F16, which has the piped one only).
    plain: Option<LeanProducts>,
    piped: LeanProducts,
    /// The piped loop of row groups split over warps.
    split: LeanProducts,
    /// F16's deep products, each with the batches in flight a warp it was
    /// found for: their weights brought through shared memory. The piped
    /// loop's (a warp a row group) and the split loop's apart, so that each
    /// may keep the register loop (f16_depth).
    deep_piped: Option<(LeanProducts, usize)>,
    deep_split: Option<(LeanProducts, usize)>,
    /// Rows a warp reads at once (LeanRows).
    rows: LeanRows,
}

/// How a type's lean products take their rows: how many a warp reads at
/// once (mv1_lean::ROWS) and the alignment their starts need (16 bytes for
/// the 16-byte loads; Q6_K's 4-byte loads and funnel shifts read any even
/// start, as its 210-byte super-blocks give).
#[derive(Clone, Copy, Debug, PartialEq)]
struct LeanRows {
    a_warp: usize,
    align: usize,
    /// Columns a warp's step moves on (its lanes' SB_STEP groups of 256;
    /// F16's batch of two steps of 256).
    step_cols: usize,
    /// Split only while the product's warps read fewer bytes than this a
    /// step (SPLIT_BELOW_BYTES; F16's split wherever the GPU holds the warps).
    split_below: usize,
}

impl LeanRows {
    fn of(name: &str) -> LeanRows {
        match name {
            "q6_k" => LeanRows {
                a_warp: 4,
                align: 2,
                step_cols: 512,
                split_below: SPLIT_BELOW_BYTES,
            },
            "f16" => LeanRows {
                a_warp: 4,
                align: 16,
                step_cols: 512,
                split_below: usize::MAX,
            },
            _ => LeanRows {
                a_warp: 4,
                align: 16,
                step_cols: 1024,
                split_below: SPLIT_BELOW_BYTES,
            },
        }
    }

    /// Warps a row group of `cols` columns (rows of `row_bytes`) is split
    /// over in the piped loop (product_piped's `split`): doubled, up to
    /// `most` and a step each, while the warps' steps read fewer than
    /// SPLIT_BELOW_BYTES at once and the GPU's `resident` warps hold them.
    /// A small product's few warps otherwise run long chains of steps, one
    /// HBM latency each (a 1B's Q6_K v: 128 row groups of 4 steps).
    fn split(
        self,
        groups: usize,
        (cols, row_bytes): (usize, usize),
        resident: usize,
        most: usize,
    ) -> usize {
        if self.step_cols == 0 || cols == 0 {
            return 1;
        }
        let steps = cols.div_ceil(self.step_cols);
        let step_bytes = self.a_warp * row_bytes * self.step_cols.min(cols) / cols;
        let mut split = 1;
        while split * 2 <= most.min(8)
            && split * 2 <= steps
            && groups * split * 2 <= resident
            && groups * split * step_bytes < self.split_below
        {
            split *= 2;
        }
        split
    }

    /// Warps F16's deep products split a row group of `cols` columns over:
    /// F16_DEEP_SPLIT, or fewer where each warp would otherwise take less
    /// than two batches (steps) of a group.
    fn deep_split(self, cols: usize) -> usize {
        let steps = cols.div_ceil(self.step_cols.max(1));
        F16_DEEP_SPLIT.min(power_of_two_at_most(steps / 2))
    }

    /// Outputs a warp takes: its rows of a part, or a glu's outputs (a gate
    /// and an up row each).
    fn outputs(self, epilogue: Epilogue) -> usize {
        match epilogue {
            Epilogue::Glu(_) => self.a_warp / 2,
            _ => self.a_warp,
        }
    }
}

/// The largest power of two no more than `n` (1 for 0).
fn power_of_two_at_most(n: usize) -> usize {
    1 << n.max(1).ilog2()
}

/// One loop of the lean products (matvec1_lean.cu: `product`, or
/// `product_piped`), by epilogue, and the most blocks of each a
/// multiprocessor holds.
#[derive(Clone, Copy)]
struct LeanProducts {
    store: Kernel,
    add: Kernel,
    swiglu: Kernel,
    geglu: Kernel,
}

/// Bytes of quantize_x16's output for `cols` values (matvec1_lean.cu's
/// mv1_lean::x_bytes): int16 values, then a scale and a sum a chunk of 32.
pub(super) fn lean_x_bytes(cols: usize) -> usize {
    2 * cols + 8 * (cols / 32)
}

/// Where a lean glu's chunk counters start in its room for `cols` outputs
/// quantised (lean_x_bytes, rounded up to 16 bytes).
pub(super) fn lean_y_counts_at(cols: usize) -> usize {
    lean_x_bytes(cols).next_multiple_of(16)
}

/// The room for `cols` glu outputs quantised and their chunks' counters.
pub(super) fn lean_y_bytes(cols: usize) -> usize {
    lean_y_counts_at(cols) + 4 * cols.div_ceil(32)
}

/// `LLM_CUDA_LEAN_FUSE=1`: a lean glu quantises its outputs as it writes
/// them (the chunk that completes last is quantised by its warp), and the
/// down projection after it reads them so, without quantize_x16's launch.
pub(super) fn lean_fuse() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var("LLM_CUDA_LEAN_FUSE").is_ok_and(|v| v == "1"))
}

/// A launch pair of the lean path: quantize_x16's grid (where the type's
/// products read X quantised), then the product's.
pub(super) struct LeanPlan {
    pub quantize: Option<Function>,
    pub quantize_grid: u32,
    pub f: Function,
    pub grid: u32,
    /// Whether quantize_x16 lets the product start before it waits.
    pub release_first: bool,
    /// Bytes of each row the product asks of L2 before it waits.
    pub prefetch: u32,
    /// Warps a row group's steps are split over (LeanRows::split).
    pub split: i32,
    /// F16's deep products: batches in flight a warp (0: another kernel).
    pub depth: i32,
    /// Dynamic shared memory: the deep products' ring, or more where
    /// LLM_CUDA_LEAN_SPREAD pads it (spread_shared).
    pub shared: u32,
}

/// Dynamic shared memory of an F16 deep product's block (eight warps) at
/// `depth` batches of 4 KiB in flight a warp (matvec1_lean.cu's
/// f16_deep_shared).
fn f16_deep_shared(depth: usize) -> usize {
    8 * depth * 4096
}

/// Batches of 4 KiB a warp of F16's one-token products keeps in flight
/// through shared memory (1..7; 0: the register loop, one batch), for the
/// products whose row groups are not split (`split` false) or are:
/// `LLM_CUDA_F16_DEPTH` for both, `LLM_CUDA_F16_SPLIT_DEPTH` for the split
/// ones alone. Unless set, F16_DEPTH, and for the split ones a depth that
/// follows the GPU's peak memory bandwidth (`bandwidth`, bytes a second;
/// f16_split_depth).
fn f16_depth(split: bool, bandwidth: u64) -> usize {
    fn setting(name: &str) -> Option<usize> {
        let v = std::env::var(name).ok()?;
        Some(v.trim().parse::<usize>().ok()?.min(7))
    }
    // The settings once; the defaults per GPU, which may differ.
    static SET: std::sync::OnceLock<(Option<usize>, Option<usize>)> = std::sync::OnceLock::new();
    let (whole, split_rows) = *SET.get_or_init(|| {
        let both = setting("LLM_CUDA_F16_DEPTH");
        (both, setting("LLM_CUDA_F16_SPLIT_DEPTH").or(both))
    });
    if split {
        split_rows.unwrap_or(f16_split_depth(bandwidth))
    } else {
        whole.unwrap_or(F16_DEPTH)
    }
}

/// `LLM_CUDA_LEAN_SPREAD=1`: a lean product whose grid leaves room on
/// the multiprocessors takes padding shared memory, so that no more of its
/// blocks fit on one than an even share of the grid needs (spread_shared).
/// Off unless set: neutral on the H100 (session 37: F16, Q4_K, Q4_0, Q8_0
/// and a 1B's decode within 1%).
fn lean_spread() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var("LLM_CUDA_LEAN_SPREAD").is_ok_and(|v| v.trim() == "1"))
}

/// Dynamic shared memory that holds a kernel to `per_sm` of its blocks on
/// a multiprocessor, where it would otherwise hold more: a grid smaller
/// than the GPU's room need not be spread evenly by the hardware, which may
/// put a full complement on some multiprocessors and few on others, and a
/// memory-bound product then waits for its fullest one. Our reading of
/// session 36's H100 figures (`test_matmul --bench-f16`): F16's output and
/// down projections (256 blocks) ran best where only two fit a
/// multiprocessor, and a layer's bytes as one product on 264 blocks where
/// three fit ran at 2.57 TB/s against 3.00 on 264 where two fit. None where
/// the padding would not fit or not hold the count.
fn spread_shared(f: Function, per_sm: usize, at_least: usize, max_shared: usize) -> Option<usize> {
    // 228 KiB a multiprocessor, shared out so that one block more does not fit.
    let shared = ((228usize << 10) / (per_sm + 1)).max(at_least);
    (shared <= max_shared && f.resident_blocks(THREADS, shared).ok()? == per_sm).then_some(shared)
}

/// F16's default depth (f16_depth). On the H100 (session 35, the rival's
/// 7B F16 file, tg128 alternated twice) depth 2 ran 185.2 / 185.8 tokens/s
/// against the register loop's 185.0 / 184.4 and depth 3's 180.1 / 179.6;
/// `test_matmul --bench-f16` put q, k and v at 35.3 us against 39.6 and the
/// GLU at 62.2 against 65.9, the split adds (output and down projections)
/// 1 us slower. The H200, whose HBM wants more bytes in flight, is the
/// machine it is meant for and has not run it yet.
const F16_DEPTH: usize = 2;

/// F16's default depth for the split products, which since session 40 are
/// all of them (F16_DEEP_SPLIT). Session 36 chose 3 while only the output
/// and down projections' adds were split over two warps (H100, the rival's
/// 7B F16 file: 194.25 / 193.97 tokens/s against 192.39 / 191.97 at 2).
/// With every product split over four, depth 2 wins (session 40, H100, our
/// writer's 7B F16, tg128 alternated, two rounds each: 189.57, 189.31,
/// 189.78, 189.53 against 186.56, 186.84 at 3 and 187.62, 187.55 at 1;
/// the old defaults 186.32 to 186.64).
const F16_SPLIT_DEPTH: usize = 2;

/// Peak memory bandwidth (bytes a second) from which F16's split products
/// keep one batch more in flight: HBM this fast wants more bytes on the
/// way to cover its latency. On the H200 (4.81 TB/s peak; session 44, the
/// rival's 7B F16 file, tg128 alternated twice) depth 3 ran 240.72 /
/// 241.43 tokens/s against 239.31 / 238.78 at 2; on another H200, our
/// writer's 7B F16, 237.49 / 239.08 against 235.68 / 235.48 at 2 and
/// 211.27 / 212.20 at 4 (one 128 KiB block a multiprocessor). The H100
/// (3.35 TB/s) keeps 2 (session 40, above).
const F16_FAST_HBM: u64 = 4_000_000_000_000;

/// F16's split products' depth on a GPU of peak memory bandwidth
/// `bandwidth` (0: unknown, taken as the H100's).
fn f16_split_depth(bandwidth: u64) -> usize {
    if bandwidth >= F16_FAST_HBM {
        F16_SPLIT_DEPTH + 1
    } else {
        F16_SPLIT_DEPTH
    }
}

/// The warps F16's deep products split a row group's steps over, by
/// default (LeanRows::deep_split). Session 40 (H100, `test_matmul
/// --bench-f16`): q, k and v 34.7 us and the GLU 61.1 split over four
/// against 36.4 and 64.1 whole, the adds level, a layer 147.0 us against
/// 152.4; over eight the output projection (one batch a warp a group)
/// lost 3 us and decode 4.5%; over two, decode lost 1%. A group's items
/// are smaller and more of them, so the warps' last round is fuller, and a
/// team's warps read neighbouring kilobytes of the same rows.
const F16_DEEP_SPLIT: usize = 4;

/// The bytes a product's warps read a step below which its row groups
/// are split (LeanRows::split). On the H100 (2026-12-06, tg128, the
/// rival's files, alternated `llm bench -r 5`), splitting every product
/// the GPU had room for sped the 1B Q4_K_M (1135.3 -> 1151.2, groups of
/// 1.2 to 1.5 MB a step) and Q6_K's lean products (7B 359.1 -> 379.4,
/// 0.9 MB), but slowed the 7B's adds (2.4 MB; Q4_0 425.4 -> 412.4, Q8_0
/// 303.4 -> 282.5 at 4.5 MB).
const SPLIT_BELOW_BYTES: usize = 2 << 20;

/// `LLM_CUDA_LEAN_SPLIT`: the most warps the piped loop splits a row
/// group's steps over (1: none); 8 unless set.
fn lean_split_most() -> usize {
    static SET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        std::env::var("LLM_CUDA_LEAN_SPLIT")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(8, |n| n.clamp(1, 8))
    })
}

/// `LLM_CUDA_LEAN_FORCE_SPLIT=N` (1, 2, 4 or 8): every lean product in the
/// piped loop splits its row groups' steps over N warps (no more than a
/// group has steps), whatever LeanRows::split would choose; F16's at the
/// split products' depth (F16_SPLIT_DEPTH) where N > 1. Off unless set.
fn lean_forced_split() -> Option<usize> {
    static SET: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        std::env::var("LLM_CUDA_LEAN_FORCE_SPLIT")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| matches!(n, 1 | 2 | 4 | 8))
    })
}

/// How the lean launches overlap the kernel before them (pdl.cuh), where
/// kernels launch early: `LLM_CUDA_LEAN_EARLY` = `release` (quantize_x16
/// lets the product start before it waits), `prefetch=BYTES` (the product
/// asks L2 for that much of each row before it waits; `row`: all of it),
/// comma-separated; unset or `0`: neither.
fn lean_early() -> (bool, u32) {
    static SET: std::sync::OnceLock<(bool, u32)> = std::sync::OnceLock::new();
    *SET.get_or_init(|| parse_lean_early(&std::env::var("LLM_CUDA_LEAN_EARLY").unwrap_or_default()))
}

/// A prefetch's bytes a row: `row` (all of it) or a count (rounded down
/// to the bulk prefetch's 16 bytes); None for anything else or zero.
fn parse_prefetch(setting: &str) -> Option<u32> {
    match setting.trim() {
        "row" => Some(!15u32),
        n => n.parse::<u32>().ok().map(|n| n & !15).filter(|&n| n > 0),
    }
}

fn parse_lean_early(setting: &str) -> (bool, u32) {
    let (mut release, mut prefetch) = (false, 0u32);
    for item in setting.split(',').map(str::trim) {
        match item.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            _ if item.eq_ignore_ascii_case("release") => release = true,
            Some(("prefetch", n)) => prefetch = parse_prefetch(n).unwrap_or(0),
            _ => {}
        }
    }
    (release, prefetch)
}

/// `LLM_CUDA_MV1_LEAN`, where set: the epilogues (`add`, `glu`, `store`;
/// `1` all, `0` none) whose one-token products of the lean types quantise X once into
/// global memory and read it through L1 (matvec1_lean.cu) rather than each
/// block quantising it, whatever their size.
fn lean_setting() -> Option<&'static str> {
    static SET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SET.get_or_init(|| std::env::var("LLM_CUDA_MV1_LEAN").ok())
        .as_deref()
}

fn lean_enabled(epilogue: Epilogue) -> bool {
    lean_listed(lean_setting().unwrap_or(LEAN_BY_DEFAULT), epilogue)
}

/// The epilogues whose products take the lean path by default: all (the
/// H100, 2026-12-05 night, our writer's 7B files, tg128, with the piped
/// loop: Q4_K 394.1 tokens/s as before -> 435.1 with every epilogue at any
/// size and Q4_0 and Q8_0 lean too, Q4_0 350.0 -> 425.4, Q8_0 253.2 ->
/// 300.9, a 1B of Q4_K 1364.3 -> 1451.7). The plain loop keeps the rule
/// below: where they give at least LEAN_WARPS_A_SM row groups a
/// multiprocessor. Measured for it, on the
/// H100, 7B decode (our writer's Q4_K file, tg128) ran 350.9 tokens/s
/// without them, 358.3 with the glus and 378.0 with the adds too; a 1B
/// (2048 wide) 1334.7 without, 1344.3 with its glus, 1247.4 with its adds
/// alone, whose 512 row groups (64 blocks) left half the multiprocessors
/// idle, where the 7B's 1024 did not.
const LEAN_BY_DEFAULT: &str = "1";
const LEAN_WARPS_A_SM: usize = 6;

/// Whether `groups` row groups (a warp each) are enough for the lean path
/// on `sms` multiprocessors; any size where LLM_CUDA_MV1_LEAN is `set` or
/// the loop is the piped one.
fn lean_fills(groups: usize, sms: usize, set: bool) -> bool {
    set || groups >= LEAN_WARPS_A_SM * sms
}

fn lean_listed(list: &str, epilogue: Epilogue) -> bool {
    match list.trim() {
        "1" | "all" => true,
        "0" | "" => false,
        list => epilogue_listed(list, epilogue),
    }
}

/// Whether a comma-separated list names `epilogue` (`store`, `add`, `glu`).
fn epilogue_listed(list: &str, epilogue: Epilogue) -> bool {
    let name = match epilogue {
        Epilogue::Store => "store",
        Epilogue::Add => "add",
        Epilogue::Glu(_) => "glu",
    };
    list.split(',').any(|e| e.trim().eq_ignore_ascii_case(name))
}

/// `LLM_CUDA_LEAN_TYPES`: the weight types (lowercase ggml names,
/// comma-separated: q4_k, q4_0, q8_0, q6_k, f16) whose one-token products may
/// take the lean path; all five unless set. On the H100 (2026-12-06, tg128,
/// the rival's files, alternated `llm bench -r 5`) F16's ran 7B F16 179.8
/// tokens/s against 159.4 with matvec1f; Q6_K's lost while a warp took a
/// row group alone (Q4_K_M 360.6 against 385.9, its 1B 1032.8 against
/// 1157.9: one super-block a warp-step left a small product's few warps a
/// long chain of steps) and won with its groups split over warps (the 1B
/// 1186.8 and 1198.7 against 1151.2 and 1164.0; the 7B 379.3 against
/// 380.5).
fn lean_type_listed(name: &str) -> bool {
    static SET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let list = SET.get_or_init(|| {
        std::env::var("LLM_CUDA_LEAN_TYPES").unwrap_or_else(|_| "q4_k,q4_0,q8_0,q6_k,f16".into())
    });
    list.split(',').any(|t| t.trim().eq_ignore_ascii_case(name))
}

/// The lean products' software-pipelined loop (`product_piped`: the next
/// step's loads in flight while a warp computes the current one), in a
/// grid no larger than the GPU holds at once, unless LLM_CUDA_LEAN_PIPED=0
/// (the plain loop; 7B Q4_K 394.8 against 422.8 tokens/s on the H100).
fn lean_piped() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var("LLM_CUDA_LEAN_PIPED").map_or(true, |v| v != "0"))
}

/// Whether any product may take the lean path (its scratch is needed).
pub(super) fn lean_in_use() -> bool {
    [Epilogue::Store, Epilogue::Add, Epilogue::Glu(Glu::SwiGlu)]
        .into_iter()
        .any(lean_enabled)
}

/// A launch: the kernel, its dynamic shared memory, its rows a block, the
/// slots each row cycles its weights through and the warps a row is split
/// over.
pub(super) struct Plan {
    pub f: Function,
    pub shared: u32,
    pub rows_per_block: usize,
    pub stages: i32,
    pub split: i32,
    /// Blocks of this launch that stay resident on a multiprocessor, where
    /// one block may take the rows of several (the quantised kernels loop
    /// over them and quantise X once); None for the float kernels, whose
    /// grid is one block per rows_per_block.
    pub resident: Option<usize>,
}

impl Plan {
    /// The grid for `blocks` blocks' worth of rows on `sms` multiprocessors:
    /// no more blocks than stay resident where a block may take several
    /// (`shared_x`: every block can read X in one order).
    pub fn grid(&self, blocks: usize, sms: usize, shared_x: bool) -> usize {
        match self.resident {
            Some(per_sm) if shared_x && !one_pass() => blocks.min(per_sm * sms),
            _ => blocks,
        }
    }
}

/// LLM_CUDA_MV1_ONE_PASS=1: a block a rows_per_block, each quantising X
/// itself (for timing against blocks that take several).
fn one_pass() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("LLM_CUDA_MV1_ONE_PASS").is_some_and(|v| v == "1"))
}

/// The kernels' blocks: 256 threads. How many a multiprocessor holds by
/// their registers is the driver's occupancy figure (matmul.cu's launch
/// bounds, GQ_MV1_MIN_BLOCKS, ask for at least 3; a kernel that takes
/// fewer registers gets more), or 3 where the driver does not answer.
const THREADS: usize = 256;
const MIN_BLOCKS_PER_SM: usize = 3;

/// Blocks of `shared` bytes of dynamic shared memory a multiprocessor
/// holds at once: `most` (what the kernel's registers allow), or fewer
/// where shared memory (228 KiB a multiprocessor on Hopper, 1 KiB of it
/// reserved a block, and a little the kernel declares itself) runs out
/// first.
fn resident_blocks(shared: usize, most: usize) -> usize {
    (228usize << 10)
        .checked_div(shared + 2048)
        .unwrap_or(1)
        .clamp(1, most.max(1))
}

/// Segments of a row in flight while one is read, unless
/// LLM_CUDA_MV1_AHEAD says otherwise (1..7). One: on the H200, 7B decode
/// with 1, 2, 3, 4 and 6 ran Q4_K_M at 269, 263, 259, 232 and 243 tokens/s
/// (Q4_0 311, 303, 299, 263, 288; Q8_0 307, 291, 262; a 1B 925, 911, 909,
/// 815, 904): the grids of a decode step's small products fill under one
/// wave, so what counts is blocks resident, which more slots only cut.
fn segments_ahead() -> usize {
    static AHEAD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *AHEAD.get_or_init(|| {
        std::env::var("LLM_CUDA_MV1_AHEAD")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(1, |n: usize| n.clamp(1, 7))
    })
}

/// Where Q4_K's X-stationary gate and up products copy their first row
/// group's weights into shared memory before they wait for the kernel
/// before (kernels/matvec1_xs.cuh, xs_q4k_stage_first): a header and a
/// piece of nibbles for each of four rows' segments, 16 bytes each, for
/// each of 256 threads.
const Q4K_STAGE_BYTES: usize = 4 * 2 * 256 * 16;

/// Q4_K's gate and up products take their first weights before the wait
/// (the stage above) only with LLM_CUDA_MV1_EARLY=1: on the H200 the L2
/// prefetch alone read more (7B of Q4_K tg128 350.0 against 347.6 tokens/s,
/// a 1B 1326.6 against 1306.8).
fn early_gate_up() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("LLM_CUDA_MV1_EARLY").is_some_and(|v| v == "1"))
}

/// LLM_CUDA_MV1_STAGED=1: the quantised kernels stage every row's weights
/// through shared memory even where they could read them directly (Hopper,
/// Q4_K), for timing the two; the kernel reads negative stages so.
fn staged_only() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("LLM_CUDA_MV1_STAGED").is_some_and(|v| v == "1"))
}

/// LLM_CUDA_MV1_GATHER_IN_KERNEL=1: one token's products of one input order
/// read X through the order inside matvec1 rather than from a copy
/// gathered first (for timing the two).
pub fn gather_in_matvec1() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("LLM_CUDA_MV1_GATHER_IN_KERNEL").is_some_and(|v| v == "1"))
}

/// The blocks a launch should make per multiprocessor before its rows are
/// split over more warps, unless LLM_CUDA_MV1_TARGET says otherwise (0: never
/// split); LLM_CUDA_MV1_SPLIT (1, 2, 4 or 8) fixes the split instead.
fn split_setting() -> (usize, Option<usize>) {
    static SETTING: std::sync::OnceLock<(usize, Option<usize>)> = std::sync::OnceLock::new();
    *SETTING.get_or_init(|| {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
        };
        let fixed = var("LLM_CUDA_MV1_SPLIT").map(|n| n.clamp(1, 8).next_power_of_two().min(8));
        (var("LLM_CUDA_MV1_TARGET").unwrap_or(0), fixed)
    })
}

/// The warps each row is split over: the fewest (1, 2, 4 or 8, and no more
/// than the row has segments, so that none idles) that give `blocks` * split
/// at least the target blocks for `sms` multiprocessors. A small product
/// keeps too few bytes in flight with a warp a row, and a larger one loses
/// to the extra copies of X each block quantises.
fn split_for(blocks: usize, segments: usize, sms: usize) -> usize {
    let (per_sm, fixed) = split_setting();
    split_of(blocks, segments, sms, per_sm, fixed)
}

fn split_of(
    blocks: usize,
    segments: usize,
    sms: usize,
    per_sm: usize,
    fixed: Option<usize>,
) -> usize {
    let most = segments.clamp(1, 8);
    let most = 1 << most.ilog2();
    if let Some(n) = fixed {
        return n.min(most);
    }
    let mut split = 1;
    while split < most && blocks * split < per_sm * sms {
        split *= 2;
    }
    split
}

/// Which one-token products take the X-stationary kernels
/// (matvec1_xs.cuh): `LLM_CUDA_MV1_XS=1` every type that has them, `0`
/// none, a list of type names (`q4_k,q6_k`) those, unset the types where
/// the H200 timed them faster than matvec1 (STATIONARY_BY_DEFAULT).
fn stationary_enabled(ty: GgmlType) -> bool {
    static SET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let set = SET.get_or_init(|| std::env::var("LLM_CUDA_MV1_XS").ok());
    match set.as_deref() {
        Some(list) => stationary_listed(list, ty),
        None => STATIONARY_BY_DEFAULT.contains(&ty),
    }
}

/// `LLM_CUDA_MV1_XS_SKIP=add` (or `store`, `glu`, a list): the products
/// of those epilogues keep matvec1 whatever their type (for timing them
/// apart: in Nsight Compute a 7B's X-stationary products that add, its
/// output and down projections, read 0.87 and 1.0 TB/s).
fn stationary_skipped(epilogue: Epilogue) -> bool {
    static SET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let list = SET.get_or_init(|| std::env::var("LLM_CUDA_MV1_XS_SKIP").unwrap_or_default());
    epilogue_listed(list, epilogue)
}

/// Whether `LLM_CUDA_MV1_XS`'s value selects `ty`.
fn stationary_listed(list: &str, ty: GgmlType) -> bool {
    match list.trim() {
        "1" => true,
        "0" | "" => false,
        list => list
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(ty.name())),
    }
}

/// The types whose decode the X-stationary products made faster, whole
/// steps on the H200 (README, "X-stationary one-token products"): one-type
/// 7B files Q4_K 356.7 -> 359.5 tokens/s, Q4_0 348.3 -> 357.1, but F16
/// 185.4 -> 180.5 and Q8_0 300.7 -> 295.4; llama.cpp's 7B Q4_K_M 326 ->
/// 331, its 1B 1051 -> 1096 with these two, no better with Q6_K too.
const STATIONARY_BY_DEFAULT: &[GgmlType] = &[GgmlType::Q4_K, GgmlType::Q4_0];

/// Segments of 1024 columns an X-stationary warp keeps in its registers
/// (matvec1_xs.cuh's xs_segments): two for a glu (whose warp has a gate
/// row's and an up row's weights in flight), else four, or three for the
/// types whose unpacking takes more registers.
/// Float weights keep X as floats: two segments of F16 and BF16, one of
/// F32 or for their glus.
fn stationary_segments(ty: GgmlType, epilogue: Epilogue) -> usize {
    let glu = matches!(epilogue, Epilogue::Glu(_));
    match ty {
        GgmlType::F32 => 1,
        GgmlType::F16 | GgmlType::BF16 if glu => 1,
        GgmlType::F16 | GgmlType::BF16 => 2,
        _ if glu => 2,
        GgmlType::Q5_K | GgmlType::Q6_K => 3,
        _ => 4,
    }
}

/// Rows an X-stationary warp takes at once: a glu's gate and up, else one.
fn stationary_rows(epilogue: Epilogue) -> usize {
    match epilogue {
        Epilogue::Glu(_) => 2,
        _ => 1,
    }
}

/// The fewest warps (1, 2, 4 or 8) a row of `segments` is split over so
/// that none keeps more than `most`; None where eight are not enough.
fn stationary_split(segments: usize, most: usize) -> Option<usize> {
    [1usize, 2, 4, 8]
        .into_iter()
        .find(|&s| segments.div_ceil(s) <= most)
}

/// Blocks a multiprocessor that the float variant splits rows for: the H200
/// measured a 7B of F16's output projection (256 blocks of 16 rows on 132
/// multiprocessors, unsplit) at 2.05 TB/s against 3.06 for q, k and v
/// together (768 blocks).
const FLOAT_BLOCKS_PER_SM: usize = 4;

/// One slot: a segment of 1024 weights of `ty` and room to align it
/// (matmul.cu's mv_slot_bytes).
fn slot_bytes(ty: GgmlType) -> usize {
    let seg = 1024 / ty.block_size() as usize * ty.type_size() as usize;
    (seg + 31).div_ceil(16) * 16
}

/// X in the kernel's shared layout for one token of `cols` (32 int16, a
/// scale, a sum and two half sums a chunk of 32), rounded up to 16.
fn x16_bytes(cols: usize) -> usize {
    (cols / 32 * 80).next_multiple_of(16)
}

/// The most dynamic shared memory `f` may take here: the largest block
/// budget the driver accepts (227 KiB on Hopper, 163 on A100, 99 on Ada, 64
/// on Turing), less what the kernel declares itself.
fn dynamic_shared_budget(f: Function) -> usize {
    let Ok(fixed) = f.static_shared() else {
        return 0;
    };
    [227usize, 163, 99, 64, 48]
        .into_iter()
        .map(|kib| (kib << 10).saturating_sub(fixed))
        .find(|&bytes| bytes > 0 && f.allow_dynamic_shared(bytes).is_ok())
        .unwrap_or(0)
}

impl Matvec1 {
    /// The kernels of type `name` (lowercase ggml name), if it has them.
    /// `bandwidth`: the GPU's peak memory bandwidth in bytes a second
    /// (DeviceInfo::memory_bandwidth), which sets F16's depth.
    pub fn find(
        find: impl Fn(&str) -> CuResult<Function>,
        name: &str,
        bandwidth: u64,
    ) -> Option<Matvec1> {
        let kernel = |variant: &str| -> Option<Kernel> {
            let f = find(&format!("matvec1_{name}_{variant}")).ok()?;
            Some(Kernel {
                f,
                max_shared: dynamic_shared_budget(f),
                most_resident: f
                    .resident_blocks(THREADS, 0)
                    .map_or(MIN_BLOCKS_PER_SM, |n| n.max(1)),
            })
        };
        Some(Matvec1 {
            float: matches!(name, "f32" | "f16" | "bf16"),
            r1: kernel("r1")?,
            r2: kernel("r2")?,
            r1a: kernel("r1a")?,
            r2a: kernel("r2a")?,
            swiglu: kernel("swiglu")?,
            geglu: kernel("geglu")?,
            stationary: (|| {
                Some(Stationary {
                    store: kernel("xs_r1")?,
                    add: kernel("xs_r1a")?,
                    swiglu: kernel("xs_swiglu")?,
                    geglu: kernel("xs_geglu")?,
                })
            })(),
            lean: (|| {
                let products_of = |kernel: &dyn Fn(&str) -> Option<Kernel>, lean: &str| {
                    Some(LeanProducts {
                        store: kernel(&format!("{lean}_r1"))?,
                        add: kernel(&format!("{lean}_r1a"))?,
                        swiglu: kernel(&format!("{lean}_swiglu"))?,
                        geglu: kernel(&format!("{lean}_geglu"))?,
                    })
                };
                let products = |lean: &str| products_of(&kernel, lean);
                // F16's deep products where their ring fits, with the blocks
                // a multiprocessor holds beside it (asked once here, not at
                // every launch).
                let deep = |split: bool| -> Option<(LeanProducts, usize)> {
                    let depth = f16_depth(split, bandwidth);
                    let shared = f16_deep_shared(depth);
                    let deep_kernel = |variant: &str| -> Option<Kernel> {
                        let k = kernel(variant).filter(|k| depth > 0 && shared <= k.max_shared)?;
                        let most_resident = k.f.resident_blocks(THREADS, shared).ok()?.max(1);
                        Some(Kernel { most_resident, ..k })
                    };
                    let variant = if split { "deep_split" } else { "deep_piped" };
                    Some((products_of(&deep_kernel, variant)?, depth))
                };
                if !lean_type_listed(name) {
                    return None;
                }
                let float = name == "f16";
                Some(Lean {
                    quantize: if float {
                        None
                    } else {
                        Some(find("quantize_x16").ok()?)
                    },
                    plain: if float { None } else { Some(products("lean")?) },
                    piped: products("lean_piped")?,
                    split: products("lean_split")?,
                    deep_piped: if float { deep(false) } else { None },
                    deep_split: if float { deep(true) } else { None },
                    rows: LeanRows::of(name),
                })
            })(),
        })
    }

    /// The lean launches for parts of `part_outputs` outputs (a glu: the
    /// first; parts that are not there: 0)
    /// of `cols` columns (a multiple of 256), where the type has them and
    /// LLM_CUDA_MV1_LEAN takes the epilogue (by default only where the row
    /// groups fill the GPU: lean_fills): a warp a row group of a part,
    /// eight warps a block.
    pub fn lean_plan(
        &self,
        epilogue: Epilogue,
        part_outputs: [usize; 3],
        (cols, row_bytes): (usize, usize),
        sms: usize,
        row_align: usize,
    ) -> Option<LeanPlan> {
        let lean = self.lean?;
        if !cols.is_multiple_of(256) || !lean_enabled(epilogue) || row_align < lean.rows.align {
            return None;
        }
        let (piped, products) = match lean.plain {
            Some(plain) if !lean_piped() => (false, plain),
            _ => (true, lean.piped),
        };
        let kernel = |products: LeanProducts| match epilogue {
            Epilogue::Store => products.store,
            Epilogue::Add => products.add,
            Epilogue::Glu(Glu::SwiGlu) => products.swiglu,
            Epilogue::Glu(Glu::GeGlu) => products.geglu,
        };
        // F16's deep products, where found (their ring fits).
        let (mut k, mut depth) = match lean.deep_piped {
            Some((deep, depth)) => (kernel(deep), depth),
            None => (kernel(products), 0),
        };
        let per_warp = lean.rows.outputs(epilogue);
        let groups: usize = part_outputs.iter().map(|n| n.div_ceil(per_warp)).sum();
        if !lean_fills(groups, sms, lean_setting().is_some() || piped) {
            return None;
        }
        let (release_first, prefetch) = lean_early();
        // The piped loop carries a warp's state from one group to the next:
        // no more blocks than the GPU holds at once.
        let mut split = 1;
        if piped {
            let (split_products, split_depth) = lean.deep_split.unwrap_or((lean.split, 0));
            let sk = kernel(split_products);
            let resident = 8 * sms * sk.most_resident;
            split = match lean_forced_split() {
                Some(n) if lean.rows.step_cols > 0 => {
                    n.min(power_of_two_at_most(cols.div_ceil(lean.rows.step_cols)))
                }
                // F16's deep products (found only where their ring fits).
                _ if lean.deep_split.is_some() => lean.rows.deep_split(cols),
                _ => lean
                    .rows
                    .split(groups, (cols, row_bytes), resident, lean_split_most()),
            };
            if split > 1 {
                (k, depth) = (sk, split_depth);
            }
        }
        let resident = sms * k.most_resident;
        let blocks = (groups * split).div_ceil(8).max(1);
        let grid = if piped { blocks.min(resident) } else { blocks };
        let mut shared = f16_deep_shared(depth);
        let even = grid.div_ceil(sms);
        if piped && lean_spread() && even < k.most_resident {
            shared = spread_shared(k.f, even, shared, k.max_shared).unwrap_or(shared);
        }
        Some(LeanPlan {
            quantize: lean.quantize,
            quantize_grid: cols.div_ceil(1024) as u32,
            f: k.f,
            grid: grid as u32,
            release_first,
            prefetch,
            split: split as i32,
            depth: depth as i32,
            shared: shared as u32,
        })
    }

    /// The X-stationary launch, where the type has one and a warp can keep
    /// its share of X in registers. Q4_K's rows are read directly (they
    /// must start 16-byte aligned), as are the float types'; the other
    /// types' are staged through each warp's slots, a segment of each of
    /// its rows.
    fn stationary_plan(&self, ty: GgmlType, epilogue: Epilogue, cols: usize) -> Option<Plan> {
        let st = self.stationary?;
        let k = match epilogue {
            Epilogue::Store => st.store,
            Epilogue::Add => st.add,
            Epilogue::Glu(Glu::SwiGlu) => st.swiglu,
            Epilogue::Glu(Glu::GeGlu) => st.geglu,
        };
        let segments = stationary_segments(ty, epilogue);
        let split = stationary_split(cols.div_ceil(1024), segments)?;
        // Float weights read X as it is; Q4_K's rows go straight to
        // registers; the other types stage theirs.
        // The early stage where it fits beside X (else the late variant).
        let early = ty == GgmlType::Q4_K
            && matches!(epilogue, Epilogue::Glu(_))
            && early_gate_up()
            && x16_bytes(cols) + Q4K_STAGE_BYTES <= k.max_shared;
        let shared = match ty {
            _ if self.float => 0,
            GgmlType::Q4_K if early => x16_bytes(cols) + Q4K_STAGE_BYTES,
            GgmlType::Q4_K => x16_bytes(cols),
            _ => x16_bytes(cols) + 8 * stationary_rows(epilogue) * segments * slot_bytes(ty),
        };
        (shared <= k.max_shared).then_some(Plan {
            f: k.f,
            shared: shared as u32,
            rows_per_block: 8 / split,
            stages: i32::from(early),
            split: split as i32,
            resident: Some(resident_blocks(shared, k.most_resident)),
        })
    }

    /// The launch for `rows` outputs in all over `cols` columns (X held
    /// `x_copies` times: a glu of two input orders holds two) on a GPU of
    /// `sms` multiprocessors; None when X does not fit its shared memory.
    /// Two rows a warp halve the copies of X, but only while that still
    /// leaves a block for every multiprocessor.
    /// The stages shrink until the block fits its shared memory.
    /// `in_order`: no part reads X through an input order; `aligned`: every
    /// part's rows start 16-byte aligned (what the X-stationary kernels
    /// need, the second for Q4_K only).
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        ty: GgmlType,
        epilogue: Epilogue,
        rows: usize,
        cols: usize,
        x_copies: usize,
        sms: usize,
        (in_order, aligned): (bool, bool),
    ) -> Option<Plan> {
        if in_order
            && (aligned || ty != GgmlType::Q4_K)
            && cols.is_multiple_of(32)
            && x_copies == 1
            && stationary_enabled(ty)
            && !stationary_skipped(epilogue)
        {
            if let Some(plan) = self.stationary_plan(ty, epilogue, cols) {
                return Some(plan);
            }
        }
        let two = rows.div_ceil(16) >= sms;
        let (k, rows_per_block) = match epilogue {
            Epilogue::Store if two => (self.r2, 16),
            Epilogue::Store => (self.r1, 8),
            Epilogue::Add if two => (self.r2a, 16),
            Epilogue::Add => (self.r1a, 8),
            Epilogue::Glu(Glu::SwiGlu) => (self.swiglu, 8),
            Epilogue::Glu(Glu::GeGlu) => (self.geglu, 8),
        };
        if !cols.is_multiple_of(32) {
            return None;
        }
        // Warps' rows: 8 of 1 or 2, or gate and up.
        let warp_rows = if rows_per_block == 16 || matches!(epilogue, Epilogue::Glu(_)) {
            2
        } else {
            1
        };
        let segments = cols.div_ceil(1024);
        let blocks = rows.div_ceil(rows_per_block);
        if self.float {
            // Splitting costs the float variant no second copy of X, so a
            // small product splits until there are FLOAT_BLOCKS_PER_SM
            // blocks a multiprocessor.
            let (per_sm, fixed) = split_setting();
            let per_sm = if per_sm == 0 {
                FLOAT_BLOCKS_PER_SM
            } else {
                per_sm
            };
            let split = split_of(blocks, segments, sms, per_sm, fixed);
            return Some(Plan {
                f: k.f,
                shared: 0,
                rows_per_block: rows_per_block / split,
                stages: 1,
                split: split as i32,
                resident: None,
            });
        }
        let split = split_for(blocks, segments, sms);
        let ahead = segments_ahead().min(segments.div_ceil(split));
        (1..=ahead).rev().find_map(|ahead| {
            let stages = ahead + 1;
            let shared = x_copies * x16_bytes(cols) + 8 * warp_rows * stages * slot_bytes(ty);
            (shared <= k.max_shared).then_some(Plan {
                f: k.f,
                shared: shared as u32,
                rows_per_block: rows_per_block / split,
                stages: if staged_only() {
                    -(stages as i32)
                } else {
                    stages as i32
                },
                split: split as i32,
                resident: Some(resident_blocks(shared, k.most_resident)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_layout_matches_the_kernel() {
        // 4096 columns: 128 chunks of 64 bytes of int16, then 128 scales,
        // 128 sums and 128 pairs of half sums.
        assert_eq!(x16_bytes(4096), 128 * 64 + 128 * 4 * 2 + 128 * 8);
        assert_eq!(x16_bytes(96) % 16, 0);
        assert!(x16_bytes(96) >= 3 * 80);
    }

    #[test]
    fn f16_split_depth_follows_the_memory() {
        // Unknown and the H100's 3.35 TB/s: session 40's depth; the H200's
        // 4.81 TB/s one batch more.
        assert_eq!(f16_split_depth(0), F16_SPLIT_DEPTH);
        assert_eq!(f16_split_depth(3_352_320_000_000), F16_SPLIT_DEPTH);
        assert_eq!(f16_split_depth(4_814_304_000_000), F16_SPLIT_DEPTH + 1);
    }

    #[test]
    fn lean_glu_outputs_room() {
        // 11008 outputs: 22016 bytes of int16, 344 scales and 344 sums,
        // then 344 counters from a 16-byte boundary.
        assert_eq!(lean_x_bytes(11008), 22016 + 344 * 8);
        assert_eq!(lean_y_counts_at(11008), 24768);
        assert_eq!(lean_y_bytes(11008), 24768 + 344 * 4);
        assert_eq!(lean_y_counts_at(96) % 16, 0);
        assert!(lean_y_counts_at(96) >= lean_x_bytes(96));
    }

    #[test]
    fn lean_early_settings_parse() {
        assert_eq!(parse_lean_early(""), (false, 0));
        assert_eq!(parse_lean_early("0"), (false, 0));
        assert_eq!(parse_lean_early("release"), (true, 0));
        assert_eq!(parse_lean_early("prefetch=4100"), (false, 4096));
        assert_eq!(parse_lean_early("release, prefetch=row"), (true, !15u32));
        assert_eq!(parse_lean_early("prefetch=lots"), (false, 0));
        assert_eq!(parse_lean_early("prefetch = 64"), (false, 64));
        assert_eq!(parse_prefetch("row"), Some(!15u32));
        assert_eq!(parse_prefetch(" 4100 "), Some(4096));
        assert_eq!(parse_prefetch("8"), None);
        assert_eq!(parse_prefetch("0"), None);
        assert_eq!(parse_prefetch(""), None);
    }

    #[test]
    fn the_early_stage_matches_the_kernel() {
        let source = include_str!("kernels/matvec1_xs.cuh");
        assert!(source.contains("constexpr int XS_Q4K_STAGE = 4 * 2 * MV1_WARPS * 32 * 16;"));
        assert!(include_str!("kernels/mv1_common.cuh").contains("constexpr int MV1_WARPS = 8;"));
        assert_eq!(Q4K_STAGE_BYTES, 4 * 2 * 8 * 32 * 16);
    }

    #[test]
    fn small_products_split_their_rows() {
        let split = |blocks, segments| split_of(blocks, segments, 132, 4, None);
        // A 7B's output projection on 132 multiprocessors: 256 blocks of 16
        // rows, 4 segments; split until 528 blocks.
        assert_eq!(split(256, 4), 4);
        // Its q, k and v together fill the machine already.
        assert_eq!(split(768, 4), 1);
        // Never more warps than segments, and a power of two.
        assert_eq!(split(1, 3), 2);
        assert_eq!(split(1, 1), 1);
        assert_eq!(split(1, 40), 8);
        // A fixed split, within the segments; a target of 0 never splits.
        assert_eq!(split_of(1, 3, 132, 4, Some(8)), 2);
        assert_eq!(split_of(1, 40, 132, 0, None), 1);
    }

    #[test]
    fn resident_blocks_follow_shared_memory() {
        // A 7B's q, k and v (4096 columns of Q4_K): 10 KiB of X and 19.5 of
        // slots; three blocks fit, the launch bounds' minimum.
        assert_eq!(
            resident_blocks(x16_bytes(4096) + 16 * 2 * slot_bytes(GgmlType::Q4_K), 3),
            3
        );
        // A kernel whose registers allow two keeps two.
        assert_eq!(resident_blocks(x16_bytes(4096), 2), 2);
        // Wide rows hold fewer; never none.
        assert_eq!(resident_blocks(100 << 10, 3), 2);
        assert_eq!(resident_blocks(200 << 10, 3), 1);
        assert_eq!(resident_blocks(400 << 10, 3), 1);
        assert_eq!(resident_blocks(0, 0), 1);
    }

    #[test]
    fn stationary_selection_reads_all_none_or_a_list() {
        assert!(stationary_listed("1", GgmlType::Q8_0));
        assert!(!stationary_listed("0", GgmlType::Q4_K));
        assert!(stationary_listed("q4_k, Q6_K", GgmlType::Q6_K));
        assert!(stationary_listed("q4_k,q6_k", GgmlType::Q4_K));
        assert!(!stationary_listed("q4_k,q6_k", GgmlType::Q4_0));
    }

    #[test]
    fn lean_selection_reads_all_none_or_a_list() {
        let glu = Epilogue::Glu(Glu::SwiGlu);
        assert!(lean_listed("1", Epilogue::Store));
        assert!(!lean_listed("0", Epilogue::Add));
        assert!(lean_listed("add, GLU", glu));
        assert!(!lean_listed("add,glu", Epilogue::Store));
        assert!(lean_listed(LEAN_BY_DEFAULT, Epilogue::Add));
    }

    #[test]
    fn lean_products_fill_the_gpu_by_default() {
        let groups = |outputs: usize, ep| outputs.div_ceil(LeanRows::of("q4_k").outputs(ep));
        // A 7B's adds (4096 outputs) and glus (11008) on 132 multiprocessors...
        assert!(lean_fills(groups(4096, Epilogue::Add), 132, false));
        assert!(lean_fills(
            groups(11008, Epilogue::Glu(Glu::SwiGlu)),
            132,
            false
        ));
        // ...but not a 1B's adds (2048), unless asked for.
        assert!(!lean_fills(groups(2048, Epilogue::Add), 132, false));
        assert!(lean_fills(groups(2048, Epilogue::Add), 132, true));
        assert!(lean_fills(
            groups(8192, Epilogue::Glu(Glu::SwiGlu)),
            132,
            false
        ));
    }

    #[test]
    fn small_lean_products_split_their_groups() {
        let (q4, q6, f16) = (
            LeanRows::of("q4_k"),
            LeanRows::of("q6_k"),
            LeanRows::of("f16"),
        );
        // 132 multiprocessors of two blocks of eight warps.
        let resident = 132 * 2 * 8;
        let q4k = |cols: usize| (cols, cols / 256 * 144);
        let q6k = |cols: usize| (cols, cols / 256 * 210);
        let q8 = |cols: usize| (cols, cols / 32 * 34);
        // A 7B: q, k and v (3072 groups) and the glus (5504) fill the GPU;
        // its adds (1024 groups of 2.4 MB a step, Q8_0's 4.5) stay whole,
        // Q6_K's (1.7 MB: two super-blocks a lane) take two warps each.
        assert_eq!(q4.split(3072, q4k(4096), resident, 8), 1);
        assert_eq!(q4.split(5504, q4k(4096), resident, 8), 1);
        assert_eq!(q4.split(1024, q4k(4096), resident, 8), 1);
        assert_eq!(q4.split(1024, q4k(11008), resident, 8), 1);
        assert_eq!(q4.split(1024, q8(11008), resident, 8), 1);
        assert_eq!(q6.split(1024, q6k(11008), resident, 8), 2);
        assert_eq!(q6.split(1024, q6k(4096), resident, 8), 2);
        // A 1B: its Q6_K v (128 groups, 4 steps) over four; its Q6_K downs
        // (512 groups of 8192 columns) over four; its Q4_K downs and output
        // projection and its q and k (640 groups) over two.
        assert_eq!(q6.split(128, q6k(2048), resident, 8), 4);
        assert_eq!(q6.split(512, q6k(8192), resident, 8), 4);
        assert_eq!(q4.split(512, q4k(8192), resident, 8), 2);
        assert_eq!(q4.split(512, q4k(2048), resident, 8), 2);
        assert_eq!(q4.split(640, q4k(2048), resident, 8), 2);
        // LLM_CUDA_LEAN_SPLIT's most.
        assert_eq!(q6.split(128, q6k(2048), resident, 1), 1);
        assert_eq!(q6.split(128, q6k(2048), resident, 2), 2);
        // F16's register loop (4 KiB a warp's batch; the deep products take
        // deep_split): a 7B's adds (1024 groups, 8 and 22
        // batches) over two warps, its q, k and v and glus whole; a 1B's
        // q and k (640 groups) over two, its glus (4096) whole.
        let f = |cols: usize| (cols, 2 * cols);
        assert_eq!(f16.split(1024, f(4096), resident, 8), 2);
        assert_eq!(f16.split(1024, f(11008), resident, 8), 2);
        assert_eq!(f16.split(3072, f(4096), resident, 8), 1);
        assert_eq!(f16.split(5504, f(4096), resident, 8), 1);
        assert_eq!(f16.split(640, f(2048), resident, 8), 2);
        assert_eq!(f16.split(4096, f(2048), resident, 8), 1);
        // F16's deep products: four warps, or as many as leave each two
        // batches of a group (a 1B's 2048 columns: four batches, two warps).
        assert_eq!(f16.deep_split(4096), 4);
        assert_eq!(f16.deep_split(11008), 4);
        assert_eq!(f16.deep_split(2048), 2);
        assert_eq!(f16.deep_split(1536), 1);
        assert_eq!(f16.deep_split(512), 1);
        assert_eq!(f16.deep_split(256), 1);
        let source = include_str!("kernels/matvec1_lean.cu");
        assert!(source.contains("static constexpr int SB_STEP = 4;"));
        // Q6_K's two super-blocks a lane a step.
        assert!(source.contains("static constexpr int SBS = 2;"));
        assert!(source.contains("static constexpr int SB_STEP = SBS;"));
        assert!(source.contains("__shared__ float part[2][8][R];"));
    }

    #[test]
    fn lean_layout_matches_the_kernel() {
        // int16 values, then a scale and a sum a chunk of 32.
        assert_eq!(lean_x_bytes(4096), 4096 * 2 + 128 * 4 * 2);
        let source = include_str!("kernels/matvec1_lean.cu");
        assert!(source.contains("return 2ll * cols + 8ll * (cols / 32);"));
        assert!(source.contains("constexpr int ROWS = 4;"));
        let rows = LeanRows::of("q4_k");
        assert_eq!(rows.outputs(Epilogue::Add), 4);
        assert_eq!(rows.outputs(Epilogue::Glu(Glu::GeGlu)), 2);
        // Q6_K: rows at any even byte.
        assert!(source.contains("struct Lanes6 : RowGroups<OUT> {"));
        assert_eq!(source.matches("static constexpr int R = ROWS;").count(), 3);
        let q6 = LeanRows::of("q6_k");
        assert_eq!(q6.outputs(Epilogue::Glu(Glu::SwiGlu)), 2);
        assert_eq!(q6.align, 2);
        assert_eq!(rows.align, 16);
    }

    #[test]
    fn stationary_warps_keep_at_most_their_segments() {
        let split = |cols: usize, ep| {
            stationary_split(cols.div_ceil(1024), stationary_segments(GgmlType::Q4_K, ep))
        };
        let glu = Epilogue::Glu(Glu::SwiGlu);
        // A 7B: q, k, v and the output projection unsplit; gate and up over
        // two warps; the down projection (11008 columns) over four.
        assert_eq!(split(4096, Epilogue::Store), Some(1));
        assert_eq!(split(4096, glu), Some(2));
        assert_eq!(split(11008, Epilogue::Add), Some(4));
        assert_eq!(split(11008, glu), Some(8));
        // A 1B's down projection (8192), Llama-3 8B's (14336).
        assert_eq!(split(8192, Epilogue::Add), Some(2));
        assert_eq!(split(14336, Epilogue::Add), Some(4));
        // Past 8 warps of 4 segments: none (matvec1 takes it).
        assert_eq!(split(32768, Epilogue::Store), Some(8));
        assert_eq!(split(33792, Epilogue::Store), None);
        assert_eq!(split(16384 + 1024, glu), None);
        // Q6_K keeps three: a 7B's q, k and v over two warps.
        let q6 = |cols: usize| {
            stationary_split(
                cols.div_ceil(1024),
                stationary_segments(GgmlType::Q6_K, Epilogue::Store),
            )
        };
        assert_eq!(q6(4096), Some(2));
        assert_eq!(q6(11008), Some(4));
        assert_eq!(q6(3072), Some(1));
        // F16 keeps two (a 7B's q, k and v over two warps), F32 one.
        let f = |ty, cols: usize, ep| {
            stationary_split(cols.div_ceil(1024), stationary_segments(ty, ep))
        };
        assert_eq!(f(GgmlType::F16, 4096, Epilogue::Store), Some(2));
        assert_eq!(f(GgmlType::F16, 4096, glu), Some(4));
        assert_eq!(f(GgmlType::F16, 11008, Epilogue::Add), Some(8));
        assert_eq!(f(GgmlType::F32, 4096, Epilogue::Store), Some(4));
        assert_eq!(f(GgmlType::F32, 11008, Epilogue::Add), None);
    }

    #[test]
    fn slots_hold_a_segment_and_its_skew() {
        // Q4_K: 4 blocks of 144 bytes; Q8_0: 32 blocks of 34.
        assert_eq!(slot_bytes(GgmlType::Q4_K), 608);
        assert_eq!(slot_bytes(GgmlType::Q8_0), 1120);
        assert_eq!(slot_bytes(GgmlType::Q4_K) % 16, 0);
    }
}
