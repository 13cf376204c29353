//! k-quant quantisers: ggml's `quantize_row_*_K_ref` (its CPU `from_float`
//! for these types), step for step. ggml builds them without FMA and in f32
//! throughout, so every product and sum below rounds where ggml's does; keep
//! the operation order when editing.

use super::kquants::{q3_k_scales, scale_min_k4};
use super::{f16_at, nearest_int, put_f16, signed_absmax};

const QK_K: usize = 256;

/// Below this, ggml treats a group as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Symmetric levels in `[-nmax, nmax)`, stored biased by `nmax`, for the
/// inverse scale `iscale`.
#[inline]
fn symmetric_level(iscale: f32, v: f32, nmax: i32) -> i32 {
    nearest_int(iscale * v).clamp(-nmax, nmax - 1)
}

/// The x²-weighted sums Σw·x·l and Σw·l² of the levels `iscale` gives.
fn weighted_sums(x: &[f32], iscale: f32, nmax: i32) -> (f32, f32) {
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for &v in x {
        let l = symmetric_level(iscale, v, nmax) as f32;
        let w = v * v;
        sumlx += w * v * l;
        suml2 += w * l * l;
    }
    (sumlx, suml2)
}

fn set_symmetric_levels(x: &[f32], iscale: f32, nmax: i32, levels: &mut [u8]) {
    for (q, &v) in levels.iter_mut().zip(x) {
        *q = (symmetric_level(iscale, v, nmax) + nmax) as u8;
    }
}

/// ggml's `make_qx_quants` with `rmse_type` 1 and no importance weights:
/// tries 19 inverse scales around `-nmax/max` and keeps the one whose levels
/// fit `x` best in x²-weighted least squares. Returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], levels: &mut [u8]) -> f32 {
    let max = signed_absmax(x);
    if max.abs() < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let iscale = -nmaxf / max;
    set_symmetric_levels(x, iscale, nmax, levels);
    let (sumlx, suml2) = weighted_sums(x, iscale, nmax);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmaxf + 0.1 * is as f32) / max;
        let (sumlx, suml2) = weighted_sums(x, iscale, nmax);
        // Compare the fits' sumlx²/suml2 without dividing.
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            set_symmetric_levels(x, iscale, nmax, levels);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse`: 3-bit levels in `[-4, 4)` from
/// `-4/max`, then up to five passes that move single levels while that
/// improves the x²-weighted fit. Returns the scale; levels are biased by 4.
fn make_q3_quants(x: &[f32], levels: &mut [u8]) -> f32 {
    const NMAX: i32 = 4;
    let max = signed_absmax(x);
    if max.abs() < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let mut l: Vec<i32> = x
        .iter()
        .map(|&v| symmetric_level(iscale, v, NMAX))
        .collect();
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (&v, &li) in x.iter().zip(&l) {
        let (w, li) = (v * v, li as f32);
        sumlx += w * v * li;
        suml2 += w * li * li;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (i, &v) in x.iter().enumerate() {
            let (w, li) = (v * v, l[i] as f32);
            let mut slx = sumlx - w * v * li;
            if slx <= 0.0 {
                continue;
            }
            let mut sl2 = suml2 - w * li * li;
            let new_l = nearest_int(v * sl2 / slx).clamp(-NMAX, NMAX - 1);
            if new_l == l[i] {
                continue;
            }
            let nl = new_l as f32;
            slx += w * v * nl;
            sl2 += w * nl * nl;
            if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                l[i] = new_l;
                sumlx = slx;
                suml2 = sl2;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for (q, li) in levels.iter_mut().zip(l) {
        *q = (li + NMAX) as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The search `make_qkx2_quants` runs for an asymmetric (scale, min) type.
struct Qkx2 {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    /// Absolute rather than squared error.
    use_mad: bool,
}

impl Qkx2 {
    fn error(&self, x: &[f32], weights: &[f32], levels: &[u8], scale: f32, min: f32) -> f32 {
        let mut err = 0f32;
        for ((&v, &w), &l) in x.iter().zip(weights).zip(levels) {
            let diff = scale * l as f32 + min - v;
            err += w * if self.use_mad {
                diff.abs()
            } else {
                diff * diff
            };
        }
        err
    }

    fn set_levels(&self, x: &[f32], iscale: f32, min: f32, levels: &mut [u8]) {
        for (q, &v) in levels.iter_mut().zip(x) {
            *q = nearest_int(iscale * (v - min)).clamp(0, self.nmax) as u8;
        }
    }

    /// ggml's `make_qkx2_quants`: levels in `[0, nmax]` with `x ≈ scale·l - m`.
    /// Starts from the min/max range, then for `nstep + 1` widened or narrowed
    /// ranges fits scale and min by weighted least squares, keeping the best.
    /// Returns (scale, m), m ≥ 0 (or -0.0).
    fn run(&self, x: &[f32], weights: &[f32], levels: &mut [u8]) -> (f32, f32) {
        let (mut min, mut max) = (x[0], x[0]);
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for (&v, &w) in x.iter().zip(weights).skip(1) {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
            sum_w += w;
            sum_x += w * v;
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max == min {
            levels.fill(0);
            return (0.0, -min);
        }
        let nmax = self.nmax as f32;
        let iscale = nmax / (max - min);
        let mut scale = 1.0 / iscale;
        self.set_levels(x, iscale, min, levels);
        let mut best_error = self.error(x, weights, levels, scale, min);
        let mut trial = vec![0u8; x.len()];
        for is in 0..=self.nstep {
            let iscale = (self.rmin + self.rdelta * is as f32 + nmax) / (max - min);
            self.set_levels(x, iscale, min, &mut trial);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
            for ((&v, &w), &l) in x.iter().zip(weights).zip(&trial) {
                let l = l as f32;
                sum_l += w * l;
                sum_l2 += w * l * l;
                sum_xl += w * l * v;
            }
            let det = sum_w * sum_l2 - sum_l * sum_l;
            if det <= 0.0 || det.is_nan() {
                continue;
            }
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let err = self.error(x, weights, &trial, this_scale, this_min);
            if err < best_error {
                levels.copy_from_slice(&trial);
                best_error = err;
                scale = this_scale;
                min = this_min;
            }
        }
        (scale, -min)
    }
}

/// Packs 2-bit levels as Q2_K and Q3_K store them: byte l of each 32-byte half
/// holds elements l, l+32, l+64, l+96 of that half's 128.
fn pack_2bit(levels: &[u8; QK_K], qs: &mut [u8]) {
    for (half, q) in qs.chunks_exact_mut(32).enumerate() {
        let l = &levels[128 * half..128 * half + 128];
        for (i, byte) in q.iter_mut().enumerate() {
            *byte = l[i] | (l[i + 32] << 2) | (l[i + 64] << 4) | (l[i + 96] << 6);
        }
    }
}

/// `{u8 scales[16] (4-bit scale | 4-bit min << 4); u8 qs[64]; f16 d, dmin}`.
pub fn quantize_q2_k(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(84)) {
        q2_k_block(xb, b);
    }
}

fn q2_k_block(x: &[f32], b: &mut [u8]) {
    const SEARCH: Qkx2 = Qkx2 {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    const Q4SCALE: f32 = 15.0;
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
    for (j, xs) in x.chunks_exact(16).enumerate() {
        let weights: [f32; 16] = std::array::from_fn(|l| xs[l].abs());
        (scales[j], mins[j]) = SEARCH.run(xs, &weights, &mut levels[16 * j..16 * j + 16]);
    }
    let max_scale = scales.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0f32, |m, &s| if s > m { s } else { m });

    let sc = &mut b[0..16];
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (q, &s) in sc.iter_mut().zip(&scales) {
            *q = nearest_int(iscale * s) as u8;
        }
    } else {
        sc.fill(0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (q, &m) in sc.iter_mut().zip(&mins) {
            *q |= (nearest_int(iscale * m) << 4) as u8;
        }
    }
    put_f16(
        b,
        80,
        if max_scale > 0.0 {
            max_scale / Q4SCALE
        } else {
            0.0
        },
    );
    put_f16(
        b,
        82,
        if max_min > 0.0 {
            max_min / Q4SCALE
        } else {
            0.0
        },
    );

    // Requantise against the scales as stored.
    let (d_all, m_all) = (f16_at(b, 80), f16_at(b, 82));
    for (j, xs) in x.chunks_exact(16).enumerate() {
        let d = d_all * (b[j] & 0x0f) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * (b[j] >> 4) as f32;
        for (q, &v) in levels[16 * j..16 * j + 16].iter_mut().zip(xs) {
            *q = nearest_int((v + dm) / d).clamp(0, 3) as u8;
        }
    }
    pack_2bit(&levels, &mut b[16..80]);
}

/// `{u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}`.
pub fn quantize_q3_k(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(110)) {
        q3_k_block(xb, b);
    }
}

/// Sixteen 6-bit scales (biased by 32) into Q3_K's twelve bytes: low nibbles
/// in bytes 0..8, top two bits in 8..12.
fn pack_q3_k_scales(ls: &[u8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &l) in ls.iter().enumerate() {
        if j < 8 {
            s[j] = l & 0x0f;
        } else {
            s[j - 8] |= (l & 0x0f) << 4;
        }
        s[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
    s
}

fn q3_k_block(x: &[f32], b: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let (mut amax, mut max_scale) = (0f32, 0f32);
    for (j, xs) in x.chunks_exact(16).enumerate() {
        scales[j] = make_q3_quants(xs, &mut levels[16 * j..16 * j + 16]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }

    let mut packed = [0u8; 12];
    let mut d = 0f32;
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let ls: [u8; 16] = std::array::from_fn(|j| {
            // ggml narrows to int8_t before clamping.
            let l = nearest_int(iscale * scales[j]) as i8;
            (l.clamp(-32, 31) + 32) as u8
        });
        packed = pack_q3_k_scales(&ls);
        d = 1.0 / iscale;
    }
    b[96..108].copy_from_slice(&packed);
    put_f16(b, 108, d);

    // Requantise against the scales as stored.
    let d_all = f16_at(b, 108);
    let stored = q3_k_scales(&packed);
    for (j, xs) in x.chunks_exact(16).enumerate() {
        let d = d_all * (stored[j] as i32 - 32) as f32;
        if d == 0.0 {
            continue;
        }
        for (q, &v) in levels[16 * j..16 * j + 16].iter_mut().zip(xs) {
            *q = (nearest_int(v / d).clamp(-4, 3) + 4) as u8;
        }
    }

    // The third bit of element j goes to bit j/32 of hmask[j % 32].
    let hmask = &mut b[0..32];
    hmask.fill(0);
    for (j, l) in levels.iter_mut().enumerate() {
        if *l > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *l -= 4;
        }
    }
    pack_2bit(&levels, &mut b[32..96]);
}

/// Eight 6-bit scales and mins into the twelve bytes `scale_min_k4` reads.
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// The part Q4_K and Q5_K share: fits 8 sub-blocks of 32 with `search`,
/// writes `{f16 d, dmin; u8 scales[12]}` to `head`, and returns the levels
/// requantised against the stored scales.
fn kx_superblock(x: &[f32], search: &Qkx2, head: &mut [u8]) -> [u8; QK_K] {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    for (j, xs) in x.chunks_exact(32).enumerate() {
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        (scales[j], mins[j]) = search.run(xs, &weights, &mut levels[32 * j..32 * j + 32]);
    }
    let max_scale = scales.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // ggml narrows to uint8_t before clamping.
    let ls = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    let packed = pack_scale_min_k4(&ls, &lm);
    head[4..16].copy_from_slice(&packed);
    put_f16(head, 0, max_scale / 63.0);
    put_f16(head, 2, max_min / 63.0);

    let (d_all, m_all) = (f16_at(head, 0), f16_at(head, 2));
    let top = search.nmax;
    for (j, xs) in x.chunks_exact(32).enumerate() {
        let (sc, m) = scale_min_k4(j, &packed);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * m as f32;
        for (q, &v) in levels[32 * j..32 * j + 32].iter_mut().zip(xs) {
            *q = nearest_int((v + dm) / d).clamp(0, top) as u8;
        }
    }
    levels
}

/// `{f16 d, dmin; u8 scales[12]; u8 qs[128]}`.
pub fn quantize_q4_k(x: &[f32], out: &mut [u8]) {
    const SEARCH: Qkx2 = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    for (xb, b) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(144)) {
        let levels = kx_superblock(xb, &SEARCH, &mut b[0..16]);
        // Each 32 bytes hold 64 elements: the first 32 low, the next 32 high.
        for (chunk, q) in b[16..144].chunks_exact_mut(32).enumerate() {
            let l = &levels[64 * chunk..64 * chunk + 64];
            for (i, byte) in q.iter_mut().enumerate() {
                *byte = l[i] | (l[i + 32] << 4);
            }
        }
    }
}

/// `{f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}`.
pub fn quantize_q5_k(x: &[f32], out: &mut [u8]) {
    const SEARCH: Qkx2 = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    for (xb, b) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(176)) {
        let levels = kx_superblock(xb, &SEARCH, &mut b[0..16]);
        let (qh, qs) = b[16..176].split_at_mut(32);
        qh.fill(0);
        // As Q4_K, with the fifth bit of chunk c's two halves in bits 2c, 2c+1.
        for (chunk, q) in qs.chunks_exact_mut(32).enumerate() {
            let l = &levels[64 * chunk..64 * chunk + 64];
            let (m1, m2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
            for (i, byte) in q.iter_mut().enumerate() {
                let (l1, l2) = (l[i], l[i + 32]);
                if l1 > 15 {
                    qh[i] |= m1;
                }
                if l2 > 15 {
                    qh[i] |= m2;
                }
                *byte = (l1 & 0x0f) | ((l2 & 0x0f) << 4);
            }
        }
    }
}

/// `{u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}`.
pub fn quantize_q6_k(x: &[f32], out: &mut [u8]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(210)) {
        q6_k_block(xb, b);
    }
}

fn q6_k_block(x: &[f32], b: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_abs, mut max_scale) = (0f32, 0f32);
    for (ib, xs) in x.chunks_exact(16).enumerate() {
        scales[ib] = make_qx_quants(32, xs, &mut levels[16 * ib..16 * ib + 16]);
        if scales[ib].abs() > max_abs {
            max_abs = scales[ib].abs();
            max_scale = scales[ib];
        }
    }
    if max_abs < GROUP_MAX_EPS {
        b.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(b, 208, 1.0 / iscale);
    for (ib, &s) in scales.iter().enumerate() {
        b[192 + ib] = nearest_int(iscale * s).min(127) as i8 as u8;
    }

    let d_all = f16_at(b, 208);
    for (j, xs) in x.chunks_exact(16).enumerate() {
        let d = d_all * (b[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for (q, &v) in levels[16 * j..16 * j + 16].iter_mut().zip(xs) {
            *q = (nearest_int(v / d).clamp(-32, 31) + 32) as u8;
        }
    }

    // Per 128 elements: ql gets low nibbles of (l, l+64) and (l+32, l+96) in
    // 64 bytes, qh the top two bits of all four in 32 bytes.
    for half in 0..2 {
        let l = &levels[128 * half..128 * half + 128];
        for i in 0..32 {
            let (q1, q2, q3, q4) = (l[i], l[i + 32], l[i + 64], l[i + 96]);
            b[64 * half + i] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
            b[64 * half + i + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
            b[128 + 32 * half + i] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}
