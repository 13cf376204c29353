//! The original 32-element blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//! Each `dequantize_*` takes one block's bytes and writes its 32 values; each
//! `quantize_*` takes whole rows of blocks.

use super::{f16_at, put_f16};

/// `{f16 d; u8 qs[16]}`: low nibbles are elements 0..16, high nibbles 16..32.
pub fn dequantize_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// `{f16 d, m; u8 qs[16]}`
pub fn dequantize_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0f) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// The fifth bits of a Q5 block: bit j of `qh` belongs to element j.
fn fifth_bits(qh: &[u8], j: usize) -> (u8, u8) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let lo = (((qh >> j) << 4) & 0x10) as u8;
    let hi = ((qh >> (j + 12)) & 0x10) as u8;
    (lo, hi)
}

/// `{f16 d; u8 qh[4]; u8 qs[16]}`
pub fn dequantize_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let (qh, qs) = (&b[2..6], &b[6..22]);
    for j in 0..16 {
        let (lo, hi) = fifth_bits(qh, j);
        y[j] = (((qs[j] & 0x0f) | lo) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | hi) as i32 - 16) as f32 * d;
    }
}

/// `{f16 d, m; u8 qh[4]; u8 qs[16]}`
pub fn dequantize_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let (qh, qs) = (&b[4..8], &b[8..24]);
    for j in 0..16 {
        let (lo, hi) = fifth_bits(qh, j);
        y[j] = ((qs[j] & 0x0f) | lo) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | hi) as f32 * d + m;
    }
}

/// `{f16 d; i8 qs[32]}`
pub fn dequantize_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..34].iter().enumerate() {
        y[j] = (q as i8) as f32 * d;
    }
}

// Quantisers: ggml's `quantize_row_*_ref` (its CPU `from_float` for these
// types), except Q8_0, whose `from_float` on x86 is an AVX routine of its own.

/// C's float-to-integer conversion as x86 performs it (`cvttss2si`):
/// truncation, with the "integer indefinite" `i32::MIN` for NaN and out-of-range
/// values. Only inputs with a zero or infinite scale reach that case, and
/// ggml then stores its low byte, 0.
#[inline]
fn trunc_like_c(v: f32) -> i32 {
    if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// ggml's `MIN(top, (int8_t)v)`: the cast wraps before the clamp.
#[inline]
fn level_i8(v: f32, top: i32) -> u8 {
    (trunc_like_c(v) as i8 as i32).min(top) as u8
}

/// Minimum and maximum, as ggml seeds them (so NaNs are skipped).
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// ggml's `d ? 1.0f/d : 0.0f`.
#[inline]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Packs the fifth bits of a Q5 block's 32 levels into `qh`, bit j for element j.
fn pack_fifth_bits(levels: &[u8; 32]) -> [u8; 4] {
    let mut qh = 0u32;
    for (j, &l) in levels.iter().enumerate() {
        qh |= u32::from((l & 0x10) >> 4) << j;
    }
    qh.to_le_bytes()
}

/// Low nibbles of elements 0..16 and 16..32, paired into 16 bytes.
fn pack_nibbles(levels: &[u8; 32], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = (levels[j] & 0x0f) | ((levels[j + 16] & 0x0f) << 4);
    }
}

/// Symmetric 4 bits: the value of largest magnitude maps to level 0 (-8 d).
pub fn quantize_q4_0(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(18)) {
        let d = super::signed_absmax(xb) / -8.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        let levels = std::array::from_fn(|j| level_i8(xb[j] * id + 8.5, 15));
        pack_nibbles(&levels, &mut b[2..18]);
    }
}

/// Affine 4 bits from the block's minimum to its maximum.
pub fn quantize_q4_1(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(20)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        put_f16(b, 2, min);
        let levels = std::array::from_fn(|j| level_i8((xb[j] - min) * id + 0.5, 15));
        pack_nibbles(&levels, &mut b[4..20]);
    }
}

/// Symmetric 5 bits: the value of largest magnitude maps to level 0 (-16 d).
pub fn quantize_q5_0(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(22)) {
        let d = super::signed_absmax(xb) / -16.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        let levels = std::array::from_fn(|j| level_i8(xb[j] * id + 16.5, 31));
        b[2..6].copy_from_slice(&pack_fifth_bits(&levels));
        pack_nibbles(&levels, &mut b[6..22]);
    }
}

/// Affine 5 bits; unlike the others, ggml does not clamp the level here.
pub fn quantize_q5_1(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(24)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        put_f16(b, 2, min);
        let levels = std::array::from_fn(|j| trunc_like_c((xb[j] - min) * id + 0.5) as u8);
        b[4..8].copy_from_slice(&pack_fifth_bits(&levels));
        pack_nibbles(&levels, &mut b[8..24]);
    }
}

/// ggml's x86 `from_float` for Q8_0 is its AVX routine (scale `127/amax`,
/// round half to even), not `quantize_row_q8_0_ref` (`1/(amax/127)`, round
/// half away): the activation quantiser already reproduces it.
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    crate::cpu::quantize::quantize_q8_0(x, out);
}

/// Blocks from integer levels and a scale that are already known (a
/// group-quantised format re-encoded without loss): `levels` are the stored
/// codes (the value is `(level - offset) * d`), `d` the f16 bits of the scale.
pub fn pack_q4_0(d: u16, levels: &[u8; 32], out: &mut [u8]) {
    out[..2].copy_from_slice(&d.to_le_bytes());
    pack_nibbles(levels, &mut out[2..18]);
}

/// As `pack_q4_0`, for 5-bit levels (offset 16).
pub fn pack_q5_0(d: u16, levels: &[u8; 32], out: &mut [u8]) {
    out[..2].copy_from_slice(&d.to_le_bytes());
    out[2..6].copy_from_slice(&pack_fifth_bits(levels));
    pack_nibbles(levels, &mut out[6..22]);
}

/// As `pack_q4_0`, for signed 8-bit values (no offset).
pub fn pack_q8_0(d: u16, values: &[i8; 32], out: &mut [u8]) {
    out[..2].copy_from_slice(&d.to_le_bytes());
    for (o, &v) in out[2..34].iter_mut().zip(values) {
        *o = v as u8;
    }
}
