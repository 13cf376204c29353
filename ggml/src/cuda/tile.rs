//! tile.cu's prompt-sized products: which of its two tile widths a launch
//! takes, and the dynamic shared memory each needs.

use super::driver::{CuResult, Function};
use crate::GgmlType;

/// Rows of a tile (tile.cu's BM) and threads of a block.
const TILE_ROWS: usize = 128;
pub const TILE_THREADS: u32 = 256;

/// One tile width's kernel and its dynamic shared memory.
#[derive(Clone, Copy)]
struct Width {
    f: Function,
    tokens: usize,
    shared: u32,
}

/// `matmul_tile_<t>_n128` and `_n64` of one weight type (and, for the
/// warpgroup products, `_n256`).
#[derive(Clone, Copy)]
pub struct Tile {
    wide: Width,
    narrow: Width,
    widest: Option<Width>,
}

/// A launch: kernel, grid, dynamic shared memory.
pub struct TileLaunch {
    pub f: Function,
    pub grid: (u32, u32, u32),
    pub shared: u32,
}

/// tile.cu's `tile_shared`: the weight tile, two activation tiles (halves,
/// rows of 64 + 8) and two raw stages of 128 rows; the f32 output tile
/// (128 + 4 a token) reuses them.
fn tile_shared(ty: GgmlType, tokens: usize) -> usize {
    let block = ty.block_size() as usize;
    let stage_elems = if block == 256 { 256 } else { 64 };
    let stage_bytes = stage_elems / block * ty.type_size() as usize;
    let slot = (stage_bytes + 30).div_ceil(16) * 16;
    let tiles = (TILE_ROWS + 2 * tokens) * 72 * 2 + 2 * TILE_ROWS * slot;
    tiles.max(tokens * (TILE_ROWS + 4) * 4)
}

/// gemm_sm90.cu's `shared_bytes`: six slots (four at 256 tokens) of a
/// 128-row weight step and a `tokens`-row activation step (64 halves a
/// row), and 1024 bytes to align the ring.
fn wgmma_shared(tokens: usize) -> usize {
    let stages = if tokens == 256 { 4 } else { 6 };
    stages * (TILE_ROWS + tokens) * 64 * 2 + 1024
}

/// LLM_CUDA_TILE_TOKENS=64|128|256 fixes the tile width (for timing; 256
/// only where the kernels have it, the warpgroup ones); unset, the rule in
/// `Tile::launch` picks.
fn fixed_width() -> Option<usize> {
    static SET: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        std::env::var("LLM_CUDA_TILE_TOKENS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n == 64 || n == 128 || n == 256)
    })
}

/// The share of `sms` multiprocessors' block slots (one block each) that
/// `blocks` blocks fill over the waves they take.
fn wave_fill(blocks: usize, sms: usize) -> f64 {
    let waves = blocks.div_ceil(sms.max(1)).max(1);
    blocks as f64 / (waves * sms.max(1)) as f64
}

impl Tile {
    /// The kernels of type `ty` (lowercase ggml name `name`), where it has
    /// them and this GPU gives them the shared memory they need.
    pub fn find(
        find: impl Fn(&str) -> CuResult<Function>,
        ty: GgmlType,
        name: &str,
    ) -> Option<Tile> {
        Self::find_as(
            find,
            |tokens| format!("matmul_tile_{name}_n{tokens}"),
            |tokens| tile_shared(ty, tokens),
        )
    }

    /// gemm_sm90.cu's products of F16 weights on Hopper's warpgroup
    /// instructions: the same contract and grid as tile.cu's, for rows
    /// 16-byte aligned. `form`: "" (Y = W X), "add_" (Y += W X) or "glu_"
    /// (Y = act(Wg X) * (Wu X), a row tile 64 rows of each: launched as
    /// twice the rows).
    pub fn find_wgmma(find: impl Fn(&str) -> CuResult<Function>, form: &str) -> Option<Tile> {
        let mut tile = Self::find_as(
            &find,
            |tokens| format!("matmul_wg_f16_{form}n{tokens}"),
            wgmma_shared,
        )?;
        tile.widest = Self::width(
            &find,
            &format!("matmul_wg_f16_{form}n256"),
            256,
            wgmma_shared,
        );
        Some(tile)
    }

    fn width(
        find: impl Fn(&str) -> CuResult<Function>,
        name: &str,
        tokens: usize,
        shared: impl Fn(usize) -> usize,
    ) -> Option<Width> {
        let f = find(name).ok()?;
        let shared = shared(tokens);
        f.allow_dynamic_shared(shared).ok()?;
        Some(Width {
            f,
            tokens,
            shared: shared as u32,
        })
    }

    fn find_as(
        find: impl Fn(&str) -> CuResult<Function>,
        name: impl Fn(usize) -> String,
        shared: impl Fn(usize) -> usize,
    ) -> Option<Tile> {
        let width = |tokens: usize| Self::width(&find, &name(tokens), tokens, &shared);
        Some(Tile {
            wide: width(128)?,
            narrow: width(64)?,
            widest: None,
        })
    }

    /// The launch for `rows` x `tokens` on `sms` multiprocessors: 128-token
    /// tiles (each dequantised weight serves twice the tokens) where they
    /// give at least three blocks for every four multiprocessors, else
    /// 64-token tiles, twice the blocks for products too small to fill the
    /// GPU. (H200, 7B Q4_K pp512: 128-token tiles throughout 9422 tokens/s,
    /// 64-token tiles throughout 7236, 64 wherever the 128 fell short of two
    /// blocks a multiprocessor, as the attention and output products do,
    /// 8418: one block a multiprocessor of the wide tile beats two of the
    /// narrow.)
    ///
    /// The warpgroup kernels' 256-token tiles read a third less from L2 a
    /// product than two 128-token ones (the weights' step once for 256
    /// tokens); they take a product whose blocks fill the GPU's waves at
    /// least as well as the 128-token tiles' do.
    pub fn launch(&self, rows: usize, tokens: usize, sms: usize) -> TileLaunch {
        let row_tiles = rows.div_ceil(TILE_ROWS);
        let w = match (fixed_width(), self.widest) {
            (Some(256), Some(widest)) => widest,
            (Some(128), _) => self.wide,
            (Some(64), _) => self.narrow,
            (_, widest) => {
                let wide = tokens > 64 && 4 * row_tiles * tokens.div_ceil(128) >= 3 * sms;
                let fill = |n: usize| wave_fill(row_tiles * tokens.div_ceil(n), sms);
                match widest {
                    Some(widest) if wide && tokens > 128 && fill(256) >= fill(128) => widest,
                    _ if wide => self.wide,
                    _ => self.narrow,
                }
            }
        };
        TileLaunch {
            f: w.f,
            // Token tiles first: a row tile's blocks run together, its weights
            // read once from memory into L2.
            grid: (tokens.div_ceil(w.tokens) as u32, row_tiles as u32, 1),
            shared: w.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_fill_picks_the_wider_tiles_where_they_fill_as_well() {
        // 132 multiprocessors, 512 tokens: a 7B's 4096-row products fill
        // one wave at 128 tokens (128 blocks) and half of one at 256; its
        // GLU (two 11008-row weights, 344 blocks at 256 tokens) three
        // waves either way; a 32000-row output head as well.
        assert!(wave_fill(128, 132) > 2.0 * wave_fill(64, 132) - 1e-9);
        assert!(wave_fill(344, 132) >= wave_fill(688, 132));
        assert!((wave_fill(264, 132) - 1.0).abs() < 1e-9);
        assert_eq!(wave_fill(0, 132), 0.0);
    }

    #[test]
    fn shared_memory_follows_the_kernels_layout() {
        // Q4_K: a super-block of 144 bytes a stage, slots of 176.
        assert_eq!(tile_shared(GgmlType::Q4_K, 128), 384 * 144 + 256 * 176);
        assert_eq!(tile_shared(GgmlType::Q4_K, 64), 256 * 144 + 256 * 176);
        // Q4_0: two blocks of 18 bytes a stage, slots of 80; the output
        // tile (128 tokens of 132 floats) is the larger.
        assert_eq!(tile_shared(GgmlType::Q4_0, 128), 384 * 144 + 256 * 80);
        assert_eq!(tile_shared(GgmlType::F16, 64), 256 * 144 + 256 * 160);
        // The wgmma ring: one block a multiprocessor within Hopper's 227 KiB.
        assert_eq!(wgmma_shared(128), 6 * 32768 + 1024);
        assert!(wgmma_shared(128) <= 227 << 10);
        assert_eq!(wgmma_shared(256), 4 * 49152 + 1024);
        assert!(wgmma_shared(256) <= 227 << 10);
        // The fused epilogues' tiles of sums fit in the ring: 128 rows (a
        // GLU's two 64) of `tokens` floats, 4 of padding a token.
        for tokens in [64, 128, 256] {
            assert!(tokens * 132 * 4 <= wgmma_shared(tokens) - 1024);
        }
        // Every type fits Hopper's 227 KiB a block, and all but Q6_K's wide
        // tile leave room for two blocks a multiprocessor.
        let tiled = crate::blocks::WEIGHT_TYPES
            .iter()
            .filter(|t| !matches!(t, GgmlType::F32 | GgmlType::BF16));
        for &ty in tiled {
            for tokens in [64, 128] {
                let two = 2 * (tile_shared(ty, tokens) + 1024) <= 228 << 10;
                assert!(tile_shared(ty, tokens) <= 227 << 10, "{ty:?}");
                assert!(
                    two || (ty == GgmlType::Q6_K && tokens == 128),
                    "{ty:?} {tokens}"
                );
            }
        }
    }
}
