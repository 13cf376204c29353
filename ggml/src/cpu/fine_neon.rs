//! aarch64 NEON kernels of group-quantised weights against fine activations
//! (see `fine`): the same i32 lane sums, 256·Σu·hi + Σu·lo, as the portable
//! kernels (widening multiplies, exact), then their float steps.
#![allow(clippy::missing_safety_doc)]

use std::arch::aarch64::*;

use super::fine::{rows, BLOCK_BYTES};
use super::neon::{bits16, dot16, f32_at, fma_lanes, h2f, hsum8, load_s8, nibbles, s8, zero2};

/// Lanes 4h..4h+4 of a block: codes `u` (values 16h..16h+16) against both
/// levels at `y`.
#[inline(always)]
unsafe fn levels(u: int8x16_t, y: *const u8, h: usize) -> int32x4_t {
    let hi = dot16(u, load_s8(y.add(8 + 16 * h)));
    let lo = dot16(u, load_s8(y.add(40 + 16 * h)));
    vaddq_s32(vshlq_n_s32::<8>(hi), lo)
}

/// N rows' eight lanes and offset sums.
struct Sums<const N: usize> {
    acc: [[float32x4_t; 2]; N],
    corr: [f32; N],
}

impl<const N: usize> Sums<N> {
    fn new() -> Self {
        Sums {
            acc: [zero2(); N],
            corr: [0.0; N],
        }
    }

    /// Weight block `ib`'s codes `u` with scale `dw` into the lanes, and,
    /// for unsigned codes, `dw·s` into the offset sums.
    #[inline(always)]
    unsafe fn block(
        &mut self,
        ya: &[*const u8; N],
        ib: usize,
        u: [int8x16_t; 2],
        dw: f32,
        unsigned: bool,
    ) {
        let rows = ya.iter().zip(self.acc.iter_mut()).zip(self.corr.iter_mut());
        for ((y, acc), corr) in rows {
            let y = y.add(ib * BLOCK_BYTES);
            let d = dw * f32_at(y);
            acc[0] = fma_lanes(acc[0], d, levels(u[0], y, 0));
            acc[1] = fma_lanes(acc[1], d, levels(u[1], y, 1));
            if unsigned {
                *corr = dw.mul_add(f32_at(y.add(4)), *corr);
            }
        }
    }

    /// Row sums: lanes reduced, less the offset's share.
    #[inline(always)]
    unsafe fn finish(&self, offset: f32) -> [f32; N] {
        std::array::from_fn(|t| hsum8(self.acc[t]) - offset * self.corr[t])
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn q4_0_fine_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 18;
    let ya = rows(a, nb);
    let mut sums = Sums::<N>::new();
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 18);
        let (lo, hi) = nibbles(x.add(2));
        sums.block(&ya, ib, [s8(lo), s8(hi)], h2f(x), true);
    }
    sums.finish(8.0)
}

#[target_feature(enable = "neon")]
pub unsafe fn q5_0_fine_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 22;
    let ya = rows(a, nb);
    let mut sums = Sums::<N>::new();
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 22);
        let (lo, hi) = nibbles(x.add(6));
        let lo = vorrq_u8(lo, bits16(*x.add(2), *x.add(3)));
        let hi = vorrq_u8(hi, bits16(*x.add(4), *x.add(5)));
        sums.block(&ya, ib, [s8(lo), s8(hi)], h2f(x), true);
    }
    sums.finish(16.0)
}

#[target_feature(enable = "neon")]
pub unsafe fn q8_0_fine_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 34;
    let ya = rows(a, nb);
    let mut sums = Sums::<N>::new();
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 34);
        let q = [load_s8(x.add(2)), load_s8(x.add(18))];
        sums.block(&ya, ib, q, h2f(x), false);
    }
    sums.finish(0.0)
}
