//! Quantising activations to the block type a weight's dot product pairs with.
//! Bytes match ggml's x86 CPU `from_float` (its AVX path for Q8_0/Q8_1:
//! scale `127/amax`, round half to even; the reference path for Q8_K).

use crate::float16::{f32_to_bf16, f32_to_f16};

pub const Q8_0_BYTES: usize = 34;
pub const Q8_1_BYTES: usize = 36;
pub const Q8_K_BYTES: usize = 292;

/// The largest |x| (NaNs ignored), in eight lanes so that the compiler
/// keeps it in vectors (`f32::max`'s NaN rule kept a fold scalar: 8% of a
/// prompt batch at one thread); max is exact, so any order gives the same.
#[inline(always)]
fn amax(x: &[f32]) -> f32 {
    let pick = |m: f32, a: f32| if a > m { a } else { m };
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(0f32, |m, v| pick(m, v.abs()));
    for c in chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = pick(*m, v.abs());
        }
    }
    lanes.into_iter().fold(tail, pick)
}

/// Quantises one 32-element block to `q` and returns (d, sum of q).
#[inline(always)]
fn q8_block(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let amax = amax(x);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (qj, &xj) in q.iter_mut().zip(x) {
        let v = (xj * id).round_ties_even().clamp(-128.0, 127.0) as i32;
        sum += v;
        *qj = v as i8 as u8;
    }
    (d, sum)
}

/// `{f16 d; i8 qs[32]}` per 32 values.
#[inline(always)]
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let (d, _) = q8_block(xb, &mut b[2..34]);
        b[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    }
}

/// `{f16 d; f16 s = d * sum(qs); i8 qs[32]}` per 32 values.
#[inline(always)]
pub fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_1_BYTES)) {
        let (d, sum) = q8_block(xb, &mut b[4..36]);
        b[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        b[2..4].copy_from_slice(&f32_to_f16(d * sum as f32).to_le_bytes());
    }
}

/// `{f32 d; i8 qs[256]; i16 bsums[16]}` per 256 values; the scale comes from
/// the signed value of largest magnitude, so that value maps to -127.
#[inline(always)]
pub fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(256).zip(out.chunks_exact_mut(Q8_K_BYTES)) {
        // ggml's value: the first of largest magnitude, with its sign.
        let amax = amax(xb);
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let (d, rest) = b.split_at_mut(4);
        let (qs, bsums) = rest.split_at_mut(256);
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8 as u8;
        }
        for (j, s) in bsums.chunks_exact_mut(2).enumerate() {
            let sum: i32 = qs[16 * j..16 * j + 16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            s.copy_from_slice(&(sum as i16).to_le_bytes());
        }
        d.copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

#[inline(always)]
pub fn quantize_f16(x: &[f32], out: &mut [u8]) {
    for (v, b) in x.iter().zip(out.chunks_exact_mut(2)) {
        b.copy_from_slice(&f32_to_f16(*v).to_le_bytes());
    }
}

#[inline(always)]
pub fn quantize_bf16(x: &[f32], out: &mut [u8]) {
    for (v, b) in x.iter().zip(out.chunks_exact_mut(2)) {
        b.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
    }
}

#[inline(always)]
pub fn quantize_f32(x: &[f32], out: &mut [u8]) {
    for (v, b) in x.iter().zip(out.chunks_exact_mut(4)) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}
