//! Dot products of one weight row with one quantised activation row, written
//! so that the compiler vectorises the integer inner loops. The same source is
//! compiled once per ISA (see `cpu::mod`), so these are `inline(always)`.

use crate::blocks::f16_at;
use crate::blocks::iquants::KVALUES_IQ4NL;
use crate::blocks::kquants::scale_min_k4;
use crate::float16::{bf16_to_f32, f16_to_f32};

#[inline(always)]
fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn i8s(b: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have the same size and alignment.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const i8, b.len()) }
}

#[inline(always)]
pub fn f32_f32(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 16];
    let (wc, ac) = (w.chunks_exact(64), a.chunks_exact(64));
    let (wr, ar) = (wc.remainder(), ac.remainder());
    for (wb, ab) in wc.zip(ac) {
        for k in 0..16 {
            acc[k] += f32_at(wb, 4 * k) * f32_at(ab, 4 * k);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in wr.chunks_exact(4).zip(ar.chunks_exact(4)) {
        s += f32_at(x, 0) * f32_at(y, 0);
    }
    s
}

#[inline(always)]
fn half_dot(w: &[u8], a: &[u8], conv: impl Fn(u16) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let (wc, ac) = (w.chunks_exact(32), a.chunks_exact(32));
    let (wr, ar) = (wc.remainder(), ac.remainder());
    let h = |b: &[u8], k: usize| conv(u16::from_le_bytes([b[2 * k], b[2 * k + 1]]));
    for (wb, ab) in wc.zip(ac) {
        for k in 0..16 {
            acc[k] += h(wb, k) * h(ab, k);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in wr.chunks_exact(2).zip(ar.chunks_exact(2)) {
        s += h(x, 0) * h(y, 0);
    }
    s
}

#[inline(always)]
pub fn f16_f16(w: &[u8], a: &[u8]) -> f32 {
    half_dot(w, a, f16_to_f32)
}

#[inline(always)]
pub fn bf16_bf16(w: &[u8], a: &[u8]) -> f32 {
    half_dot(w, a, bf16_to_f32)
}

#[inline(always)]
fn sum_i8_i8(x: &[i8], y: &[i8]) -> i32 {
    x.iter().zip(y).map(|(&a, &b)| a as i32 * b as i32).sum()
}

#[inline(always)]
pub fn q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
        let (qs, qy) = (&x[2..18], i8s(&y[2..34]));
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += ((qs[j] & 0x0f) as i32 - 8) * qy[j] as i32;
            sumi += ((qs[j] >> 4) as i32 - 8) * qy[j + 16] as i32;
        }
        s += sumi as f32 * (f16_at(x, 0) * f16_at(y, 0));
    }
    s
}

/// Sums of 8 lanes the way ggml's x86 kernels reduce them (hsum_float_8).
#[inline(always)]
fn hsum8(l: &[f32; 8]) -> f32 {
    let h = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let h = [h[0] + h[2], h[1] + h[3]];
    h[0] + h[1]
}

/// Q4_1 with ggml's x86 accumulation: eight lanes, each summing four adjacent
/// products per block and fused-multiply-added with d·d; the min terms summed
/// apart. Float rounding then matches llama.cpp, whose activations are
/// quantised again after every layer (an ulp can flip a quant).
#[inline(always)]
pub fn q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (x, y) in w.chunks_exact(20).zip(a.chunks_exact(36)) {
        let (qs, qy) = (&x[4..20], i8s(&y[4..36]));
        summs += f16_at(x, 2) * f16_at(y, 2);
        let d = f16_at(x, 0) * f16_at(y, 0);
        let mut q = [0i32; 32];
        for j in 0..16 {
            q[j] = (qs[j] & 0x0f) as i32;
            q[j + 16] = (qs[j] >> 4) as i32;
        }
        for (lane, acc) in acc.iter_mut().enumerate() {
            let sum: i32 = (0..4)
                .map(|k| q[4 * lane + k] * qy[4 * lane + k] as i32)
                .sum();
            *acc = d.mul_add(sum as f32, *acc);
        }
    }
    hsum8(&acc) + summs
}

#[inline(always)]
fn q5_values(qh: &[u8], qs: &[u8], out: &mut [i32; 32]) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for j in 0..16 {
        out[j] = ((qs[j] & 0x0f) as u32 | (((qh >> j) << 4) & 0x10)) as i32;
        out[j + 16] = ((qs[j] >> 4) as u32 | ((qh >> (j + 12)) & 0x10)) as i32;
    }
}

#[inline(always)]
pub fn q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    let mut v = [0i32; 32];
    for (x, y) in w.chunks_exact(22).zip(a.chunks_exact(34)) {
        q5_values(&x[2..6], &x[6..22], &mut v);
        let qy = i8s(&y[2..34]);
        let sumi: i32 = (0..32).map(|j| (v[j] - 16) * qy[j] as i32).sum();
        s += sumi as f32 * (f16_at(x, 0) * f16_at(y, 0));
    }
    s
}

#[inline(always)]
pub fn q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    let mut v = [0i32; 32];
    for (x, y) in w.chunks_exact(24).zip(a.chunks_exact(36)) {
        q5_values(&x[4..8], &x[8..24], &mut v);
        let qy = i8s(&y[4..36]);
        let sumi: i32 = (0..32).map(|j| v[j] * qy[j] as i32).sum();
        s += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32 + f16_at(x, 2) * f16_at(y, 2);
    }
    s
}

#[inline(always)]
pub fn q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.chunks_exact(34).zip(a.chunks_exact(34)) {
        let sumi = sum_i8_i8(i8s(&x[2..34]), i8s(&y[2..34]));
        s += sumi as f32 * (f16_at(x, 0) * f16_at(y, 0));
    }
    s
}

#[inline(always)]
pub fn iq4_nl_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
        let (qs, qy) = (&x[2..18], i8s(&y[2..34]));
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += KVALUES_IQ4NL[(qs[j] & 0x0f) as usize] as i32 * qy[j] as i32;
            sumi += KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32 * qy[j + 16] as i32;
        }
        s += sumi as f32 * (f16_at(x, 0) * f16_at(y, 0));
    }
    s
}

/// Parts of a Q8_K block: (d, qs, bsums).
#[inline(always)]
fn q8_k(y: &[u8]) -> (f32, &[i8], [i32; 16]) {
    let mut bsums = [0i32; 16];
    for (j, s) in bsums.iter_mut().enumerate() {
        *s = i16::from_le_bytes([y[260 + 2 * j], y[261 + 2 * j]]) as i32;
    }
    (f32_at(y, 0), i8s(&y[4..260]), bsums)
}

#[inline(always)]
pub fn q2_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    let mut q = [0i8; 256];
    for (x, y) in w.chunks_exact(84).zip(a.chunks_exact(292)) {
        let (dy, qy, bsums) = q8_k(y);
        let (scales, qs) = (&x[0..16], &x[16..80]);
        let summs: i32 = (0..16).map(|j| (scales[j] >> 4) as i32 * bsums[j]).sum();
        for half in 0..2 {
            for (k, shift) in [0, 2, 4, 6].into_iter().enumerate() {
                for l in 0..32 {
                    q[half * 128 + k * 32 + l] = ((qs[half * 32 + l] >> shift) & 3) as i8;
                }
            }
        }
        let mut isum = 0i32;
        for j in 0..16 {
            let part = sum_i8_i8(&q[16 * j..16 * j + 16], &qy[16 * j..16 * j + 16]);
            isum += (scales[j] & 0x0f) as i32 * part;
        }
        s += dy * f16_at(x, 80) * isum as f32 - dy * f16_at(x, 82) * summs as f32;
    }
    s
}

#[inline(always)]
pub fn q3_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    let mut q = [0i8; 256];
    for (x, y) in w.chunks_exact(110).zip(a.chunks_exact(292)) {
        let (dy, qy, _) = q8_k(y);
        let (hmask, qs) = (&x[0..32], &x[32..96]);
        let scales = crate::blocks::kquants::q3_k_scales(&x[96..108]);
        for half in 0..2 {
            for (k, shift) in [0, 2, 4, 6].into_iter().enumerate() {
                let m = 1u8 << (half * 4 + k);
                for l in 0..32 {
                    let low = ((qs[half * 32 + l] >> shift) & 3) as i8;
                    let high = if hmask[l] & m != 0 { 0 } else { 4 };
                    q[half * 128 + k * 32 + l] = low - high;
                }
            }
        }
        let mut isum = 0i32;
        for j in 0..16 {
            let part = sum_i8_i8(&q[16 * j..16 * j + 16], &qy[16 * j..16 * j + 16]);
            isum += (scales[j] as i32 - 32) * part;
        }
        s += dy * f16_at(x, 108) * isum as f32;
    }
    s
}

/// Q4_K and Q5_K: eight sub-blocks of 32 with 6-bit scales and mins.
#[inline(always)]
fn k4_tail(x: &[u8], q: &[i8; 256], qy: &[i8], bsums: &[i32; 16], dy: f32) -> f32 {
    let scales = &x[4..16];
    let mut isum = 0i32;
    let mut msum = 0i32;
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        isum += sc as i32 * sum_i8_i8(&q[32 * j..32 * j + 32], &qy[32 * j..32 * j + 32]);
        msum += m as i32 * (bsums[2 * j] + bsums[2 * j + 1]);
    }
    dy * f16_at(x, 0) * isum as f32 - dy * f16_at(x, 2) * msum as f32
}

#[inline(always)]
pub fn q4_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    let mut q = [0i8; 256];
    for (x, y) in w.chunks_exact(144).zip(a.chunks_exact(292)) {
        let (dy, qy, bsums) = q8_k(y);
        let qs = &x[16..144];
        for chunk in 0..4 {
            for l in 0..32 {
                let b = qs[chunk * 32 + l];
                q[chunk * 64 + l] = (b & 0x0f) as i8;
                q[chunk * 64 + 32 + l] = (b >> 4) as i8;
            }
        }
        s += k4_tail(x, &q, qy, &bsums, dy);
    }
    s
}

#[inline(always)]
pub fn q5_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    let mut q = [0i8; 256];
    for (x, y) in w.chunks_exact(176).zip(a.chunks_exact(292)) {
        let (dy, qy, bsums) = q8_k(y);
        let (qh, qs) = (&x[16..48], &x[48..176]);
        for chunk in 0..4 {
            let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
            for l in 0..32 {
                let b = qs[chunk * 32 + l];
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                q[chunk * 64 + l] = ((b & 0x0f) + h1) as i8;
                q[chunk * 64 + 32 + l] = ((b >> 4) + h2) as i8;
            }
        }
        s += k4_tail(x, &q, qy, &bsums, dy);
    }
    s
}

#[inline(always)]
pub fn q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    let mut q = [0i8; 256];
    for (x, y) in w.chunks_exact(210).zip(a.chunks_exact(292)) {
        let (dy, qy, _) = q8_k(y);
        for half in 0..2 {
            let ql = &x[half * 64..half * 64 + 64];
            let qh = &x[128 + half * 32..128 + half * 32 + 32];
            let q = &mut q[half * 128..half * 128 + 128];
            for l in 0..32 {
                q[l] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
                q[l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let scales = i8s(&x[192..208]);
        let mut isum = 0i32;
        for j in 0..16 {
            isum += scales[j] as i32 * sum_i8_i8(&q[16 * j..16 * j + 16], &qy[16 * j..16 * j + 16]);
        }
        s += dy * f16_at(x, 208) * isum as f32;
    }
    s
}

#[inline(always)]
pub fn iq4_xs_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.chunks_exact(136).zip(a.chunks_exact(292)) {
        let (dy, qy, _) = q8_k(y);
        let scales_h = u16::from_le_bytes([x[2], x[3]]);
        let mut isum = 0i32;
        for ib in 0..8 {
            let low = (x[4 + ib / 2] >> (4 * (ib % 2))) & 0x0f;
            let high = ((scales_h >> (2 * ib)) & 3) as u8;
            let ls = (low | (high << 4)) as i32 - 32;
            let qs = &x[8 + 16 * ib..8 + 16 * ib + 16];
            let qy = &qy[32 * ib..32 * ib + 32];
            let mut part = 0i32;
            for j in 0..16 {
                part += KVALUES_IQ4NL[(qs[j] & 0x0f) as usize] as i32 * qy[j] as i32;
                part += KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32 * qy[j + 16] as i32;
            }
            isum += ls * part;
        }
        s += f16_at(x, 0) * dy * isum as f32;
    }
    s
}
