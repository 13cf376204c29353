//! Non-linear 4-bit types: IQ4_NL and IQ4_XS share one 16-value codebook.

use super::{f16_at, nearest_int, put_f16};

/// ggml's `kvalues_iq4nl`.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// `{f16 d; u8 qs[16]}`
pub fn dequantize_iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = d * KVALUES_IQ4NL[(qs[j] & 0x0f) as usize] as f32;
        y[j + 16] = d * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
    }
}

/// `{f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]}`: 8 sub-blocks of 32
/// with 6-bit scales biased by 32.
pub fn dequantize_iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let scales_l = &b[4..8];
    for ib in 0..8 {
        let low = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
        let high = ((scales_h >> (2 * ib)) & 3) as u8;
        let dl = d * ((low | (high << 4)) as i32 - 32) as f32;
        let qs = &b[8 + 16 * ib..8 + 16 * ib + 16];
        let y = &mut y[32 * ib..32 * ib + 32];
        for j in 0..16 {
            y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0x0f) as usize] as f32;
            y[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
        }
    }
}

// Quantisers. ggml's CPU `from_float` runs its `quantize_row_iq4_nl_impl`
// with no importance weights: for IQ4_NL through `quantize_row_iq4_nl_ref`
// (`ntry` -1: no scale search), for IQ4_XS through `quantize_iq4_xs`
// (`ntry` 7).

/// Below this, ggml treats a sub-block as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `best_index_int8` over the codebook: the nearest entry, the upper
/// one on a tie.
fn best_index(x: f32) -> u8 {
    let val = |i: usize| KVALUES_IQ4NL[i] as f32;
    if x <= val(0) {
        return 0;
    }
    if x >= val(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0, 15);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - val(mu - 1) < val(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The x²-weighted sums Σw·q·x and Σw·q² of the codebook values inverse
/// scale `id` picks.
fn codebook_sums(xb: &[f32], id: f32) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for &v in xb {
        let q = KVALUES_IQ4NL[best_index(id * v) as usize] as f32;
        let w = v * v;
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The scale of one 32-value sub-block: the least-squares scale for the
/// levels `max -> -127` picks (written to `levels`), then, for `ntry` > 0,
/// the best of 2·ntry+1 inverse scales `(k - 127)/max` (levels not updated).
/// `None` for a block ggml counts as all zeros, leaving `levels` alone.
fn subblock_scale(xb: &[f32], ntry: i32, levels: &mut [u8]) -> Option<f32> {
    let max = super::signed_absmax(xb);
    if max.abs() < GROUP_MAX_EPS {
        return None;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    let d = if ntry > 0 { -max / v0 } else { max / v0 };
    let id = 1.0 / d;
    for (l, &v) in levels.iter_mut().zip(xb) {
        *l = best_index(id * v);
    }
    let (sumqx, sumq2) = codebook_sums(xb, id);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -ntry..=ntry {
        let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        let (sumqx, sumq2) = codebook_sums(xb, id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

/// Codebook indices of elements 0..16 (low nibbles) and 16..32 (high).
fn pack_indices(levels: &[u8], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = levels[j] | (levels[j + 16] << 4);
    }
}

/// `{f16 d; u8 qs[16]}` per 32 values.
///
/// An all-zero block gets d = 0 and index 8 (the entry nearest 0)
/// everywhere; ggml leaves such a block's indices as whatever its scratch
/// buffer last held, so only d is comparable there.
pub fn quantize_iq4_nl(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(18)) {
        let mut levels = [8u8; 32];
        let d = subblock_scale(xb, -1, &mut levels).unwrap_or(0.0);
        put_f16(b, 0, d);
        pack_indices(&levels, &mut b[2..18]);
    }
}

/// `{f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]}` per 256 values.
pub fn quantize_iq4_xs(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(256).zip(out.chunks_exact_mut(136)) {
        iq4_xs_block(xb, b);
    }
}

fn iq4_xs_block(x: &[f32], b: &mut [u8]) {
    const NTRY: i32 = 7;
    let mut levels = [0u8; 256];
    let mut scales = [0f32; 8];
    let (mut amax, mut max_scale) = (0f32, 0f32);
    for (ib, xb) in x.chunks_exact(32).enumerate() {
        let lb = &mut levels[32 * ib..32 * ib + 32];
        scales[ib] = subblock_scale(xb, NTRY, lb).unwrap_or(0.0);
        if scales[ib].abs() > amax {
            amax = scales[ib].abs();
            max_scale = scales[ib];
        }
    }

    // 6-bit sub-block scales of d = -max_scale/32; the levels are re-picked
    // for the scale each sub-block ends up with.
    let d = -max_scale / 32.0;
    put_f16(b, 0, d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (mut scales_h, mut scales_l) = (0u16, [0u8; 4]);
    for (ib, xb) in x.chunks_exact(32).enumerate() {
        let l = nearest_int(id * scales[ib]).clamp(-32, 31);
        let dl = d * l as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        for (q, &v) in levels[32 * ib..32 * ib + 32].iter_mut().zip(xb) {
            *q = best_index(idl * v);
        }
        let l = (l + 32) as u8;
        scales_l[ib / 2] |= (l & 0x0f) << (4 * (ib % 2));
        scales_h |= u16::from(l >> 4) << (2 * ib);
    }
    b[2..4].copy_from_slice(&scales_h.to_le_bytes());
    b[4..8].copy_from_slice(&scales_l);
    for (ib, qs) in b[8..136].chunks_exact_mut(16).enumerate() {
        pack_indices(&levels[32 * ib..32 * ib + 32], qs);
    }
}
