//! aarch64 NEON dot products with the float arithmetic of the portable
//! kernels in `dot` (which follow ggml's x86 lane order): eight i32 lanes per
//! block, lane l holding the exact integer sum of products 4l..4l+4, converted
//! to f32 and fused-multiply-added with the block scale, then reduced as
//! `hsum_float_8` does. The integer partial sums are exact, so only the float
//! steps have to follow the portable order; they do, step for step. Eight
//! lanes are kept as two `float32x4_t`: lanes 0..4 and lanes 4..8.
//!
//! Only base NEON (Armv8.0) instructions are used, no `dotprod`.
#![allow(clippy::missing_safety_doc)]

use std::arch::aarch64::*;

/// An f16 scale at `p` as f32 (exact).
#[inline(always)]
pub(super) unsafe fn h2f(p: *const u8) -> f32 {
    crate::float16::f16_to_f32(u16::from_le_bytes([*p, *p.add(1)]))
}

#[inline(always)]
pub(super) unsafe fn f32_at(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// The i16 block sums of a Q8_K block at `y`.
#[inline(always)]
unsafe fn q8k_bsums(y: *const u8) -> [i32; 16] {
    std::array::from_fn(|j| i16::from_le_bytes([*y.add(260 + 2 * j), *y.add(261 + 2 * j)]) as i32)
}

/// Lane l: exact sum of x[4l+k]·y[4l+k] for k in 0..4 (16 bytes in, 4 lanes out).
#[inline(always)]
pub(super) unsafe fn dot16(x: int8x16_t, y: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
    let hi = vmull_high_s8(x, y);
    vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi))
}

/// `acc + d·(lanes as f32)`, fused, per lane (portable: `d.mul_add(sum as f32, acc)`).
#[inline(always)]
pub(super) unsafe fn fma_lanes(acc: float32x4_t, d: f32, sum: int32x4_t) -> float32x4_t {
    vfmaq_f32(acc, vdupq_n_f32(d), vcvtq_f32_s32(sum))
}

/// `hsum8` of dot.rs: [l0+l4, l1+l5, l2+l6, l3+l7], then [h0+h2, h1+h3], then their sum.
#[inline(always)]
pub(super) unsafe fn hsum8(a: [float32x4_t; 2]) -> f32 {
    let h = vaddq_f32(a[0], a[1]);
    let h = vadd_f32(vget_low_f32(h), vget_high_f32(h));
    vpadds_f32(h)
}

/// 16 bytes of nibbles -> (low nibbles, high nibbles).
#[inline(always)]
pub(super) unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let b = vld1q_u8(p);
    (vandq_u8(b, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(b))
}

/// 0x10 in byte j where bit j of the 16 bits `b0 | b1 << 8` is set, else 0.
#[inline(always)]
pub(super) unsafe fn bits16(b0: u8, b1: u8) -> uint8x16_t {
    const MASK: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let v = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
    vandq_u8(vtstq_u8(v, vld1q_u8(MASK.as_ptr())), vdupq_n_u8(0x10))
}

#[inline(always)]
pub(super) unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

#[inline(always)]
pub(super) unsafe fn load_s8(p: *const u8) -> int8x16_t {
    vld1q_s8(p as *const i8)
}

/// The dot kernels below take one weight row and N activation rows: each
/// weight block is unpacked once and used for every activation row, and each
/// row's float operations are exactly those of the single-row kernel.
macro_rules! rows {
    ($a:ident, $n:ident, $bytes:expr) => {{
        for r in $a.iter() {
            assert!(r.len() >= $n * $bytes, "activation row too short");
        }
        std::array::from_fn::<*const u8, N, _>(|t| $a[t].as_ptr())
    }};
}

#[inline(always)]
pub(super) fn zero2() -> [float32x4_t; 2] {
    // SAFETY: NEON is part of every aarch64 target we build for.
    unsafe { [vdupq_n_f32(0.0); 2] }
}

/// Q8_0/Q4_0/Q5_0-style blocks: signed 32 weight bytes (two halves) against
/// a Q8_0 row, `d = dx·dy`.
#[inline(always)]
unsafe fn signed_block(acc: &mut [float32x4_t; 2], d: f32, q: [int8x16_t; 2], y: *const u8) {
    acc[0] = fma_lanes(acc[0], d, dot16(q[0], load_s8(y)));
    acc[1] = fma_lanes(acc[1], d, dot16(q[1], load_s8(y.add(16))));
}

#[target_feature(enable = "neon")]
pub unsafe fn q8_0_q8_0_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 34;
    let ya = rows!(a, nb, 34);
    let mut acc = [zero2(); N];
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 34);
        let dx = h2f(x);
        let q = [load_s8(x.add(2)), load_s8(x.add(18))];
        for t in 0..N {
            let y = ya[t].add(ib * 34);
            signed_block(&mut acc[t], dx * h2f(y), q, y.add(2));
        }
    }
    std::array::from_fn(|t| hsum8(acc[t]))
}

#[target_feature(enable = "neon")]
pub unsafe fn q4_0_q8_0_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 18;
    let ya = rows!(a, nb, 34);
    let mut acc = [zero2(); N];
    let eight = vdupq_n_s8(8);
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 18);
        let dx = h2f(x);
        let (lo, hi) = nibbles(x.add(2));
        let q = [vsubq_s8(s8(lo), eight), vsubq_s8(s8(hi), eight)];
        for t in 0..N {
            let y = ya[t].add(ib * 34);
            signed_block(&mut acc[t], dx * h2f(y), q, y.add(2));
        }
    }
    std::array::from_fn(|t| hsum8(acc[t]))
}

#[target_feature(enable = "neon")]
pub unsafe fn q5_0_q8_0_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 22;
    let ya = rows!(a, nb, 34);
    let mut acc = [zero2(); N];
    let sixteen = vdupq_n_s8(16);
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 22);
        let dx = h2f(x);
        let (lo, hi) = nibbles(x.add(6));
        let lo = vorrq_u8(lo, bits16(*x.add(2), *x.add(3)));
        let hi = vorrq_u8(hi, bits16(*x.add(4), *x.add(5)));
        let q = [vsubq_s8(s8(lo), sixteen), vsubq_s8(s8(hi), sixteen)];
        for t in 0..N {
            let y = ya[t].add(ib * 34);
            signed_block(&mut acc[t], dx * h2f(y), q, y.add(2));
        }
    }
    std::array::from_fn(|t| hsum8(acc[t]))
}

#[target_feature(enable = "neon")]
pub unsafe fn q4_1_q8_1_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 20;
    let ya = rows!(a, nb, 36);
    let mut acc = [zero2(); N];
    let mut summs = [0f32; N];
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 20);
        let (dx, mx) = (h2f(x), h2f(x.add(2)));
        let (lo, hi) = nibbles(x.add(4));
        let q = [s8(lo), s8(hi)];
        for t in 0..N {
            let y = ya[t].add(ib * 36);
            summs[t] += mx * h2f(y.add(2));
            signed_block(&mut acc[t], dx * h2f(y), q, y.add(4));
        }
    }
    std::array::from_fn(|t| hsum8(acc[t]) + summs[t])
}

#[target_feature(enable = "neon")]
pub unsafe fn q5_1_q8_1_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 24;
    let ya = rows!(a, nb, 36);
    let mut acc = [zero2(); N];
    let mut summs = [0f32; N];
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 24);
        let (dx, mx) = (h2f(x), h2f(x.add(2)));
        let (lo, hi) = nibbles(x.add(8));
        let lo = vorrq_u8(lo, bits16(*x.add(4), *x.add(5)));
        let hi = vorrq_u8(hi, bits16(*x.add(6), *x.add(7)));
        let q = [s8(lo), s8(hi)];
        for t in 0..N {
            let y = ya[t].add(ib * 36);
            summs[t] += mx * h2f(y.add(2));
            signed_block(&mut acc[t], dx * h2f(y), q, y.add(4));
        }
    }
    std::array::from_fn(|t| hsum8(acc[t]) + summs[t])
}

#[target_feature(enable = "neon")]
pub unsafe fn q4_k_q8_k_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 144;
    let ya = rows!(a, nb, 292);
    let mut acc = [zero2(); N];
    let mut acc_m = [vdupq_n_f32(0.0); N];
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 144);
        let (xd, xmin) = (h2f(x), h2f(x.add(2)));
        let scales = std::slice::from_raw_parts(x.add(4), 12);
        let mut sc = [0i32; 8];
        let mut mn = [0i32; 8];
        for j in 0..8 {
            let (s, m) = crate::blocks::kquants::scale_min_k4(j, scales);
            sc[j] = s as i32;
            mn[j] = m as i32;
        }
        // q[2c + h][half]: chunk c's low (h = 0) or high (h = 1) nibbles,
        // bytes 0..16 and 16..32.
        let q: [[int8x16_t; 2]; 8] = std::array::from_fn(|k| {
            std::array::from_fn(|half| {
                let (lo, hi) = nibbles(x.add(16 + 32 * (k / 2) + 16 * half));
                s8(if k % 2 == 0 { lo } else { hi })
            })
        });
        for t in 0..N {
            let y = ya[t].add(ib * 292);
            let dy = f32_at(y);
            let d = dy * xd;
            let dmin = -dy * xmin;
            let bsums = q8k_bsums(y);
            let prod: [i32; 4] = std::array::from_fn(|i| {
                let s0 = bsums[4 * i] + bsums[4 * i + 1];
                let s1 = bsums[4 * i + 2] + bsums[4 * i + 3];
                mn[2 * i] * s0 + mn[2 * i + 1] * s1
            });
            acc_m[t] = fma_lanes(acc_m[t], dmin, vld1q_s32(prod.as_ptr()));
            let mut sumi = [vdupq_n_s32(0); 2];
            for (k, qk) in q.iter().enumerate() {
                let qy = y.add(4 + 32 * k);
                for half in 0..2 {
                    let p = dot16(qk[half], load_s8(qy.add(16 * half)));
                    sumi[half] = vmlaq_n_s32(sumi[half], p, sc[k]);
                }
            }
            acc[t][0] = fma_lanes(acc[t][0], d, sumi[0]);
            acc[t][1] = fma_lanes(acc[t][1], d, sumi[1]);
        }
    }
    std::array::from_fn(|t| {
        let m = acc_m[t];
        let m = vadd_f32(vget_low_f32(m), vget_high_f32(m));
        hsum8(acc[t]) + vpadds_f32(m)
    })
}

#[target_feature(enable = "neon")]
pub unsafe fn q6_k_q8_k_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / 210;
    let ya = rows!(a, nb, 292);
    let mut acc = [zero2(); N];
    let m4 = vdupq_n_u8(0x0f);
    let m3 = vdupq_n_u8(3);
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 210);
        let xd = h2f(x.add(208));
        let scales: [i32; 16] = std::array::from_fn(|j| *x.add(192 + j) as i8 as i32);
        // q[c][half]: the unsigned 6-bit values of 32-value chunk c
        // (c = 4·half_block + part), bytes 0..16 and 16..32.
        let q: [[int8x16_t; 2]; 8] = std::array::from_fn(|c| {
            std::array::from_fn(|half| {
                let (hb, part) = (c / 4, c % 4);
                let ql = vld1q_u8(x.add(64 * hb + 32 * (part % 2) + 16 * half));
                let qh = vld1q_u8(x.add(128 + 32 * hb + 16 * half));
                let low = if part < 2 {
                    vandq_u8(ql, m4)
                } else {
                    vshrq_n_u8::<4>(ql)
                };
                let high = match part {
                    0 => qh,
                    1 => vshrq_n_u8::<2>(qh),
                    2 => vshrq_n_u8::<4>(qh),
                    _ => vshrq_n_u8::<6>(qh),
                };
                s8(vorrq_u8(low, vshlq_n_u8::<4>(vandq_u8(high, m3))))
            })
        });
        for t in 0..N {
            let y = ya[t].add(ib * 292);
            let d = f32_at(y) * xd;
            let bsums = q8k_bsums(y);
            let corr: [i32; 8] = std::array::from_fn(|l| {
                32 * (bsums[2 * l] * scales[2 * l] + bsums[2 * l + 1] * scales[2 * l + 1])
            });
            let mut sumi = [vdupq_n_s32(0); 2];
            for (c, qc) in q.iter().enumerate() {
                let qy = y.add(4 + 32 * c);
                for half in 0..2 {
                    let p = dot16(qc[half], load_s8(qy.add(16 * half)));
                    sumi[half] = vmlaq_n_s32(sumi[half], p, scales[2 * c + half]);
                }
            }
            for half in 0..2 {
                let s = vsubq_s32(sumi[half], vld1q_s32(corr.as_ptr().add(4 * half)));
                acc[t][half] = fma_lanes(acc[t][half], d, s);
            }
        }
    }
    std::array::from_fn(|t| hsum8(acc[t]))
}
