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
        for (k, a) in acc.iter_mut().enumerate() {
            *a += f32_at(wb, 4 * k) * f32_at(ab, 4 * k);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in wr.chunks_exact(4).zip(ar.chunks_exact(4)) {
        s += f32_at(x, 0) * f32_at(y, 0);
    }
    s
}

/// F16 rows in ggml_vec_dot_f16's summation order for `isa`.
#[inline(always)]
pub fn f16_f16(isa: crate::cpu::Isa, w: &[u8], a: &[u8]) -> f32 {
    let h = |b: &[u8], i: usize| f16_to_f32(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]));
    crate::cpu::ops::f16_dot_ordered(isa, w.len() / 2, |i| h(w, i), |i| h(a, i))
}

#[inline(always)]
pub fn f16_f16_scalar(w: &[u8], a: &[u8]) -> f32 {
    f16_f16(crate::cpu::Isa::Scalar, w, a)
}

#[inline(always)]
pub fn f16_f16_avx2(w: &[u8], a: &[u8]) -> f32 {
    f16_f16(crate::cpu::Isa::Avx2, w, a)
}

#[inline(always)]
pub fn f16_f16_avx512(w: &[u8], a: &[u8]) -> f32 {
    f16_f16(crate::cpu::Isa::Avx512, w, a)
}

/// BF16 rows in 16 lanes: fast, within rounding of ggml's order (weights).
#[inline(always)]
pub fn bf16_bf16_lanes(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 16];
    let (wc, ac) = (w.chunks_exact(32), a.chunks_exact(32));
    let (wr, ar) = (wc.remainder(), ac.remainder());
    let h = |b: &[u8], k: usize| bf16_to_f32(u16::from_le_bytes([b[2 * k], b[2 * k + 1]]));
    for (wb, ab) in wc.zip(ac) {
        for (k, a) in acc.iter_mut().enumerate() {
            *a += h(wb, k) * h(ab, k);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in wr.chunks_exact(2).zip(ar.chunks_exact(2)) {
        s += h(x, 0) * h(y, 0);
    }
    s
}

/// BF16 rows in ggml_vec_dot_bf16's summation order for `isa` (slower:
/// the bf16 KV cache's keys, where llama.cpp's order is kept to the bit).
#[inline(always)]
pub fn bf16_bf16(isa: crate::cpu::Isa, w: &[u8], a: &[u8]) -> f32 {
    let h = |b: &[u8], i: usize| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]);
    crate::cpu::ops::bf16_dot_ordered(isa, w.len() / 2, |i| h(w, i), |i| h(a, i))
}

#[inline(always)]
pub fn bf16_bf16_scalar(w: &[u8], a: &[u8]) -> f32 {
    bf16_bf16(crate::cpu::Isa::Scalar, w, a)
}

#[inline(always)]
pub fn bf16_bf16_avx2(w: &[u8], a: &[u8]) -> f32 {
    bf16_bf16(crate::cpu::Isa::Avx2, w, a)
}

#[inline(always)]
pub fn bf16_bf16_avx512(w: &[u8], a: &[u8]) -> f32 {
    bf16_bf16(crate::cpu::Isa::Avx512, w, a)
}

#[inline(always)]
pub fn q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut q = [0i32; 32];
    for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
        let qs = &x[2..18];
        for j in 0..16 {
            q[j] = (qs[j] & 0x0f) as i32 - 8;
            q[j + 16] = (qs[j] >> 4) as i32 - 8;
        }
        fma_lanes(&mut acc, f16_at(x, 0) * f16_at(y, 0), &q, i8s(&y[2..34]));
    }
    hsum8(&acc)
}

/// Sums of 8 lanes the way ggml's x86 kernels reduce them (hsum_float_8).
#[inline(always)]
fn hsum8(l: &[f32; 8]) -> f32 {
    let h = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let h = [h[0] + h[2], h[1] + h[3]];
    h[0] + h[1]
}

/// One block's contribution to eight float lanes: lane l takes the integer
/// sum of products 4l..4l+4 (what `maddubs` + `madd`, or `dpbusd`, leave in
/// an i32 lane), fused-multiply-added with the block scale.
#[inline(always)]
fn fma_lanes(acc: &mut [f32; 8], d: f32, x: &[i32; 32], y: &[i8]) {
    for (lane, acc) in acc.iter_mut().enumerate() {
        let sum: i32 = (0..4)
            .map(|k| x[4 * lane + k] * y[4 * lane + k] as i32)
            .sum();
        *acc = d.mul_add(sum as f32, *acc);
    }
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
    let mut acc = [0f32; 8];
    let mut v = [0i32; 32];
    for (x, y) in w.chunks_exact(22).zip(a.chunks_exact(34)) {
        q5_values(&x[2..6], &x[6..22], &mut v);
        v.iter_mut().for_each(|q| *q -= 16);
        fma_lanes(&mut acc, f16_at(x, 0) * f16_at(y, 0), &v, i8s(&y[2..34]));
    }
    hsum8(&acc)
}

/// Q5_1: like Q4_1, but ggml multiplies `q·(dx·dy)` in this order.
#[inline(always)]
pub fn q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    let mut v = [0i32; 32];
    for (x, y) in w.chunks_exact(24).zip(a.chunks_exact(36)) {
        q5_values(&x[4..8], &x[8..24], &mut v);
        summs += f16_at(x, 2) * f16_at(y, 2);
        fma_lanes(&mut acc, f16_at(x, 0) * f16_at(y, 0), &v, i8s(&y[4..36]));
    }
    hsum8(&acc) + summs
}

#[inline(always)]
pub fn q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut q = [0i32; 32];
    for (x, y) in w.chunks_exact(34).zip(a.chunks_exact(34)) {
        for (d, &s) in q.iter_mut().zip(i8s(&x[2..34])) {
            *d = s as i32;
        }
        fma_lanes(&mut acc, f16_at(x, 0) * f16_at(y, 0), &q, i8s(&y[2..34]));
    }
    hsum8(&acc)
}

/// IQ4_NL: ggml alternates two accumulators over pairs of blocks and sums a
/// last odd block in scalar.
#[inline(always)]
pub fn iq4_nl_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [[0f32; 8]; 2];
    let mut q = [0i32; 32];
    let nb = w.len() / 18;
    let pairs = nb / 2 * 2;
    let block = |ib: usize, q: &mut [i32; 32]| {
        let qs = &w[ib * 18 + 2..ib * 18 + 18];
        for j in 0..16 {
            q[j] = KVALUES_IQ4NL[(qs[j] & 0x0f) as usize] as i32;
            q[j + 16] = KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32;
        }
    };
    for ib in 0..pairs {
        block(ib, &mut q);
        let y = &a[ib * 34..ib * 34 + 34];
        // ggml multiplies y.d * x.d here.
        fma_lanes(
            &mut acc[ib % 2],
            f16_at(y, 0) * f16_at(w, ib * 18),
            &q,
            i8s(&y[2..34]),
        );
    }
    let mut lanes = [0f32; 8];
    for l in 0..8 {
        lanes[l] = acc[0][l] + acc[1][l];
    }
    let mut s = hsum8(&lanes);
    for ib in pairs..nb {
        block(ib, &mut q);
        let y = &a[ib * 34..ib * 34 + 34];
        let sumi: i32 = (0..32).map(|j| q[j] * y[2 + j] as i8 as i32).sum();
        s += f16_at(y, 0) * f16_at(w, ib * 18) * sumi as f32;
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

/// Integer lanes of a 256-value super-block as ggml's x86 k-quant kernels
/// form them: lane l takes values 4l..4l+4 of each 32-value chunk, each
/// product weighted by the scale of its 16-value group.
#[inline(always)]
fn k_lanes(q: &[i32; 256], qy: &[i8], sc16: &[i32; 16]) -> [i32; 8] {
    let mut sumi = [0i32; 8];
    for chunk in 0..8 {
        for (lane, s) in sumi.iter_mut().enumerate() {
            for b in 4 * lane..4 * lane + 4 {
                let e = 32 * chunk + b;
                *s += sc16[e / 16] * q[e] * qy[e] as i32;
            }
        }
    }
    sumi
}

/// Q2_K with ggml's x86 accumulation: per block, first the mins through the
/// block sums, then the scaled products, each a fused multiply-add per lane.
#[inline(always)]
pub fn q2_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut q = [0i32; 256];
    for (x, y) in w.chunks_exact(84).zip(a.chunks_exact(292)) {
        let (dy, qy, bsums) = q8_k(y);
        let d = dy * f16_at(x, 80);
        let dmin = -dy * f16_at(x, 82);
        let (scales, qs) = (&x[0..16], &x[16..80]);
        for (l, a) in acc.iter_mut().enumerate() {
            let prod = (scales[2 * l] >> 4) as i32 * bsums[2 * l]
                + (scales[2 * l + 1] >> 4) as i32 * bsums[2 * l + 1];
            *a = dmin.mul_add(prod as f32, *a);
        }
        for half in 0..2 {
            for (k, shift) in [0, 2, 4, 6].into_iter().enumerate() {
                for l in 0..32 {
                    q[half * 128 + k * 32 + l] = ((qs[half * 32 + l] >> shift) & 3) as i32;
                }
            }
        }
        let sc16: [i32; 16] = std::array::from_fn(|j| (scales[j] & 0x0f) as i32);
        for (a, s) in acc.iter_mut().zip(k_lanes(&q, qy, &sc16)) {
            *a = d.mul_add(s as f32, *a);
        }
    }
    hsum8(&acc)
}

/// Q3_K with ggml's x86 accumulation.
#[inline(always)]
pub fn q3_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut q = [0i32; 256];
    for (x, y) in w.chunks_exact(110).zip(a.chunks_exact(292)) {
        let (dy, qy, _) = q8_k(y);
        let d = dy * f16_at(x, 108);
        let (hmask, qs) = (&x[0..32], &x[32..96]);
        let scales = crate::blocks::kquants::q3_k_scales(&x[96..108]);
        for half in 0..2 {
            for (k, shift) in [0, 2, 4, 6].into_iter().enumerate() {
                let m = 1u8 << (half * 4 + k);
                for l in 0..32 {
                    let low = ((qs[half * 32 + l] >> shift) & 3) as i32;
                    let high = if hmask[l] & m != 0 { 0 } else { 4 };
                    q[half * 128 + k * 32 + l] = low - high;
                }
            }
        }
        let sc16: [i32; 16] = std::array::from_fn(|j| scales[j] as i32 - 32);
        for (a, s) in acc.iter_mut().zip(k_lanes(&q, qy, &sc16)) {
            *a = d.mul_add(s as f32, *a);
        }
    }
    hsum8(&acc)
}

/// Q4_K with ggml's x86 accumulation: integer lanes over the super-block,
/// one fused multiply-add per lane with d, the mins in four lanes of their own.
#[inline(always)]
pub fn q4_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for (x, y) in w.chunks_exact(144).zip(a.chunks_exact(292)) {
        let (dy, qy, bsums) = q8_k(y);
        let d = dy * f16_at(x, 0);
        let dmin = -dy * f16_at(x, 2);
        let scales = &x[4..16];
        let mut sc = [0i32; 8];
        let mut mn = [0i32; 8];
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, scales);
            sc[j] = s as i32;
            mn[j] = m as i32;
        }
        for i in 0..4 {
            let s0 = bsums[4 * i] + bsums[4 * i + 1];
            let s1 = bsums[4 * i + 2] + bsums[4 * i + 3];
            let prod = mn[2 * i] * s0 + mn[2 * i + 1] * s1;
            acc_m[i] = dmin.mul_add(prod as f32, acc_m[i]);
        }
        let qs = &x[16..144];
        let mut sumi = [0i32; 8];
        for chunk in 0..4 {
            let q4 = &qs[chunk * 32..chunk * 32 + 32];
            let ql = &qy[chunk * 64..chunk * 64 + 32];
            let qh = &qy[chunk * 64 + 32..chunk * 64 + 64];
            for (lane, s) in sumi.iter_mut().enumerate() {
                let mut lo = 0i32;
                let mut hi = 0i32;
                for k in 4 * lane..4 * lane + 4 {
                    lo += (q4[k] & 0x0f) as i32 * ql[k] as i32;
                    hi += (q4[k] >> 4) as i32 * qh[k] as i32;
                }
                *s += sc[2 * chunk] * lo + sc[2 * chunk + 1] * hi;
            }
        }
        for l in 0..8 {
            acc[l] = d.mul_add(sumi[l] as f32, acc[l]);
        }
    }
    let m = [acc_m[0] + acc_m[2], acc_m[1] + acc_m[3]];
    hsum8(&acc) + (m[0] + m[1])
}

/// Q5_K with ggml's x86 accumulation: integer lanes over the super-block,
/// one fused multiply-add per lane with d; the mins' integer sum times dmin
/// into one float sum of their own (a multiply, then an add).
#[inline(always)]
pub fn q5_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (x, y) in w.chunks_exact(176).zip(a.chunks_exact(292)) {
        let (dy, qy, bsums) = q8_k(y);
        let d = dy * f16_at(x, 0);
        let dmin = -dy * f16_at(x, 2);
        let scales = &x[4..16];
        let mut sc = [0i32; 8];
        let mut msum = 0i32;
        for (j, s) in sc.iter_mut().enumerate() {
            let (scale, m) = scale_min_k4(j, scales);
            *s = scale as i32;
            msum += m as i32 * (bsums[2 * j] + bsums[2 * j + 1]);
        }
        summs += dmin * msum as f32;
        let (qh, qs) = (&x[16..48], &x[48..176]);
        let mut sumi = [0i32; 8];
        for chunk in 0..4 {
            let q4 = &qs[chunk * 32..chunk * 32 + 32];
            let ql = &qy[chunk * 64..chunk * 64 + 32];
            let qhy = &qy[chunk * 64 + 32..chunk * 64 + 64];
            let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
            for (lane, s) in sumi.iter_mut().enumerate() {
                let mut lo = 0i32;
                let mut hi = 0i32;
                for k in 4 * lane..4 * lane + 4 {
                    let v0 = (q4[k] & 0x0f) + if qh[k] & u1 != 0 { 16 } else { 0 };
                    let v1 = (q4[k] >> 4) + if qh[k] & u2 != 0 { 16 } else { 0 };
                    lo += v0 as i32 * ql[k] as i32;
                    hi += v1 as i32 * qhy[k] as i32;
                }
                *s += sc[2 * chunk] * lo + sc[2 * chunk + 1] * hi;
            }
        }
        for l in 0..8 {
            acc[l] = d.mul_add(sumi[l] as f32, acc[l]);
        }
    }
    hsum8(&acc) + summs
}

/// Q6_K with ggml's x86 accumulation: unsigned 6-bit values in integer
/// lanes, the -32 offset taken off through the block sums, one fused
/// multiply-add per lane.
#[inline(always)]
pub fn q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in w.chunks_exact(210).zip(a.chunks_exact(292)) {
        let (dy, qy, bsums) = q8_k(y);
        let d = dy * f16_at(x, 208);
        let scales = i8s(&x[192..208]);
        let mut sumi = [0i32; 8];
        for half in 0..2 {
            let ql = &x[half * 64..half * 64 + 64];
            let qh = &x[128 + half * 32..128 + half * 32 + 32];
            for part in 0..4 {
                let base = half * 128 + part * 32;
                for (lane, s) in sumi.iter_mut().enumerate() {
                    for k in 4 * lane..4 * lane + 4 {
                        let q = match part {
                            0 => (ql[k] & 0x0f) | ((qh[k] & 3) << 4),
                            1 => (ql[k + 32] & 0x0f) | (((qh[k] >> 2) & 3) << 4),
                            2 => (ql[k] >> 4) | (((qh[k] >> 4) & 3) << 4),
                            _ => (ql[k + 32] >> 4) | (((qh[k] >> 6) & 3) << 4),
                        } as i32;
                        let sc = scales[(base + k) / 16] as i32;
                        *s += sc * q * qy[base + k] as i32;
                    }
                }
            }
        }
        for (l, s) in sumi.iter_mut().enumerate() {
            *s -= 32
                * (bsums[2 * l] * scales[2 * l] as i32
                    + bsums[2 * l + 1] * scales[2 * l + 1] as i32);
            acc[l] = d.mul_add(*s as f32, acc[l]);
        }
    }
    hsum8(&acc)
}

/// The signed scale of block `ib` (0..8) of an IQ4_XS super-block: four
/// low bits from `scales_l`, two high bits from `scales_h`, less 32.
#[inline(always)]
fn iq4_xs_scale(x: &[u8], ib: usize) -> i32 {
    let scales_h = u16::from_le_bytes([x[2], x[3]]);
    let low = (x[4 + ib / 2] >> (4 * (ib % 2))) & 0x0f;
    let high = ((scales_h >> (2 * ib)) & 3) as u8;
    (low | (high << 4)) as i32 - 32
}

/// IQ4_XS with ggml's x86 (AVX2) accumulation: each 32-value block's
/// products in eight integer lanes (lane l: values 4l..4l+4) times the
/// block's scale, a super-block's lanes fused-multiply-added into eight
/// float lanes, summed as `hsum_float_8` at the end. (The plain version
/// below is ggml's generic C, one float sum; other CPUs run that.)
#[inline(always)]
pub fn iq4_xs_q8_k_lanes(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in w.chunks_exact(136).zip(a.chunks_exact(292)) {
        let (dy, qy, _) = q8_k(y);
        let mut lanes = [0i32; 8];
        for ib in 0..8 {
            let ls = iq4_xs_scale(x, ib);
            let qs = &x[8 + 16 * ib..8 + 16 * ib + 16];
            let qy = &qy[32 * ib..32 * ib + 32];
            for (e, &y) in qy.iter().enumerate() {
                let nibble = if e < 16 {
                    qs[e] & 0x0f
                } else {
                    qs[e - 16] >> 4
                };
                let w = KVALUES_IQ4NL[nibble as usize];
                // |w| times y with w's sign moved on (`vpsignb`), which
                // wraps a y of -128 where w is negative, as ggml's does.
                let sy = match w.signum() {
                    -1 => y.wrapping_neg(),
                    0 => 0,
                    _ => y,
                };
                lanes[e / 4] += ls * (w.unsigned_abs() as i32 * sy as i32);
            }
        }
        let d = f16_at(x, 0) * dy;
        for (acc, &l) in acc.iter_mut().zip(&lanes) {
            *acc = d.mul_add(l as f32, *acc);
        }
    }
    hsum8(&acc)
}

#[inline(always)]
pub fn iq4_xs_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.chunks_exact(136).zip(a.chunks_exact(292)) {
        let (dy, qy, _) = q8_k(y);
        let mut isum = 0i32;
        for ib in 0..8 {
            let ls = iq4_xs_scale(x, ib);
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
