//! F16's one-token products chained into one launch (matvec1_lean.cu's
//! matvec1_f16_chain): products that follow one another on the stream (a
//! layer's output projection, gate and up, down projection and the next
//! layer's q, k and v) run as the steps of one grid, each step waiting at
//! a barrier of the whole grid for the one before. A step's first weights
//! are asked for before that barrier, so HBM keeps reading where one
//! product ends and the next begins; launches of their own wait there until
//! the blocks of the one before leave room.
//!
//! The backend holds a product's launch back (`Stream::hold`); the next
//! F16 product, with nothing put on the stream between, joins it, and the
//! held launch becomes the chain's (`Stream::rehold`).

use super::driver::{words_of_plain, CuResult, Function, HeldLaunch, KernelArg, Stream};
use super::matvec1::Epilogue;
use crate::backend::Glu;

/// The most steps a chain takes (matvec1_lean.cu's F16_CHAIN_MOST).
pub(super) const CHAIN_MOST: usize = 8;

/// A step, field for field matvec1_lean.cu's F16ChainStep.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ChainStep {
    pub x: u64,
    pub w: [u64; 3],
    pub y: [u64; 3],
    pub norm_w: u64,
    pub row_bytes: i64,
    pub rows: [i32; 3],
    pub cols: i32,
    /// matvec1_lean.cu's Mv1Out: 0 store, 1 add, 2 SwiGLU, 3 GeGLU.
    pub out: i32,
    pub split: i32,
    pub eps: f32,
    /// The C struct's padding, named so that every byte is set.
    pub _pad: u32,
}

/// The kernel's one argument, field for field F16Chain.
#[repr(C)]
#[derive(Clone, Copy)]
struct ChainArgs {
    step: [ChainStep; CHAIN_MOST],
    sync: u64,
    steps: i32,
    depth: i32,
}

const _: () = assert!(std::mem::size_of::<ChainStep>() == 104);
const _: () = assert!(std::mem::size_of::<ChainArgs>() == CHAIN_MOST * 104 + 16);

/// `LLM_CUDA_F16_CHAIN=1`: F16's deep one-token products that follow one
/// another run chained (off unless set: the first form, whose barrier's
/// fence waited behind the next step's first weights, lost on the H100,
/// a 7B layer 167.7 us against 147.9; README, session 37).
pub(super) fn chain_enabled() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var("LLM_CUDA_F16_CHAIN").is_ok_and(|v| v.trim() == "1"))
}

/// Batches of 4 KiB in flight a warp of a chain (`LLM_CUDA_F16_CHAIN_DEPTH`,
/// 1..7; 2 unless set).
pub(super) fn chain_depth() -> usize {
    static SET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        std::env::var("LLM_CUDA_F16_CHAIN_DEPTH")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(2, |d| d.clamp(1, 7))
    })
}

/// The chain kernel at its depth, the blocks a multiprocessor holds at
/// that depth's shared memory, and its grid: those on every
/// multiprocessor (the barriers need each block resident).
#[derive(Clone, Copy)]
pub(super) struct ChainKernel {
    pub f: Function,
    pub depth: usize,
    pub shared: u32,
    pub per_sm: u32,
    pub grid: u32,
}

impl ChainKernel {
    /// Warps a row group of `groups` groups of `cols` columns is split over
    /// in the chain's grid: the most (a power of two up to `most`, no more
    /// than the row's batches of 512 columns) that keeps every group's
    /// warps within the grid's, as the launches of their own split.
    pub fn split(&self, groups: usize, cols: usize, most: usize) -> i32 {
        let warps = 8 * self.grid as usize;
        let mut split = 1;
        while split * 2 <= most.min(8) && split * 2 <= cols / 512 && groups * split * 2 <= warps {
            split *= 2;
        }
        split as i32
    }

    /// The launch of `steps` (1..=CHAIN_MOST) with the barrier's counters
    /// at `sync` (two words, zero between launches).
    pub fn launch(&self, steps: &[ChainStep], sync: u64) -> HeldLaunch {
        debug_assert!(!steps.is_empty() && steps.len() <= CHAIN_MOST);
        let mut args = ChainArgs {
            step: [steps[0]; CHAIN_MOST],
            sync,
            steps: steps.len() as i32,
            depth: self.depth as i32,
        };
        args.step[..steps.len()].copy_from_slice(steps);
        HeldLaunch {
            f: self.f,
            grid: self.grid,
            block: 256,
            shared: self.shared,
            args: vec![words_of(&args)],
        }
    }
}

/// The chain's argument as words.
fn words_of(args: &ChainArgs) -> Vec<u64> {
    // SAFETY: ChainArgs is plain data with no padding inside (ChainStep
    // names its last four bytes; the sizes are asserted above).
    unsafe { words_of_plain(args) }
}

/// matvec1_lean.cu's Mv1Out for a product's epilogue.
pub(super) fn out_of(ep: Epilogue) -> i32 {
    match ep {
        Epilogue::Store => 0,
        Epilogue::Add => 1,
        Epilogue::Glu(Glu::SwiGlu) => 2,
        Epilogue::Glu(Glu::GeGlu) => 3,
    }
}

/// A launch of its own, as a held launch takes it.
pub(super) fn held_launch(
    f: Function,
    grid: u32,
    shared: u32,
    args: &[&dyn KernelArg],
) -> HeldLaunch {
    HeldLaunch {
        f,
        grid,
        block: 256,
        shared,
        args: args.iter().map(|a| a.words()).collect(),
    }
}

/// The products held on the stream as one launch: their steps, and the
/// stream's operation count once the last was put on (equal still: nothing
/// since, so the next product may join them).
pub(super) struct HeldChain {
    pub steps: Vec<ChainStep>,
    pub ops: u64,
}

/// Puts one F16 product (`step`) on `stream`: joining the products held
/// there where nothing came between them and the chain has room (the held
/// launch becomes `chain`'s of them all, its barrier's counters at
/// `sync`), else held as `own`, a launch of its own that the next product
/// may join in turn.
pub(super) fn put(
    stream: &Stream,
    held: &mut Option<HeldChain>,
    chain: &ChainKernel,
    step: ChainStep,
    sync: u64,
    own: HeldLaunch,
) -> CuResult<()> {
    if let Some(h) = held.as_mut() {
        if h.ops == stream.ops() && h.steps.len() < CHAIN_MOST {
            h.steps.push(step);
            if stream.rehold(chain.launch(&h.steps, sync)) {
                h.ops = stream.ops();
                return Ok(());
            }
        }
    }
    *held = None;
    stream.hold(own)?;
    *held = Some(HeldChain {
        steps: vec![step],
        ops: stream.ops(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: i32) -> ChainStep {
        ChainStep {
            x: 1,
            w: [2, 3, 4],
            y: [5, 6, 7],
            norm_w: 8,
            row_bytes: 9,
            rows: [10, 11, 12],
            cols: 13,
            out: i,
            split: 2,
            eps: 1.5,
            _pad: 0,
        }
    }

    #[test]
    fn chain_arguments_lay_out_as_the_kernel_reads_them() {
        let args = ChainArgs {
            step: [
                step(0),
                step(1),
                step(2),
                step(3),
                step(0),
                step(1),
                step(2),
                step(3),
            ],
            sync: 0xabcd,
            steps: 3,
            depth: 2,
        };
        let w = words_of(&args);
        assert_eq!(w.len(), 106);
        // Step 1: x, w[3], y[3], norm_w, row_bytes, then rows and cols,
        // out and split, eps and its padding.
        let s1 = &w[13..26];
        assert_eq!(&s1[..9], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(s1[9], 10 | (11 << 32));
        assert_eq!(s1[10], 12 | (13 << 32));
        assert_eq!(s1[11], 1 | (2 << 32));
        assert_eq!(s1[12] as u32, 1.5f32.to_bits());
        assert_eq!(w[104], 0xabcd);
        assert_eq!(w[105], 3 | (2 << 32));
    }

    #[test]
    fn chain_splits_keep_groups_within_the_grid() {
        let k = ChainKernel {
            f: Function(std::ptr::null_mut()),
            depth: 2,
            shared: 0,
            per_sm: 3,
            grid: 396,
        };
        // 3168 warps: a 7B's adds (1024 groups, 4096 or 11008 columns) two
        // warps a group; q, k and v (3072 groups) and gate and up (5504) one.
        assert_eq!(k.split(1024, 4096, 8), 2);
        assert_eq!(k.split(1024, 11008, 8), 2);
        assert_eq!(k.split(3072, 4096, 8), 1);
        assert_eq!(k.split(5504, 4096, 8), 1);
        // A small model's 256 groups of 2048 columns: four (its row's four batches).
        assert_eq!(k.split(256, 2048, 8), 4);
        assert_eq!(k.split(256, 2048, 1), 1);
    }
}
