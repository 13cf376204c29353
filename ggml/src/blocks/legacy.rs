//! The original 32-element blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//! Each function takes one block's bytes and writes its 32 values.

use super::f16_at;

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
