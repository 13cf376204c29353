//! Fine activations for group-quantised weights (GPTQ, AWQ and EXL2 layers,
//! held as Q4_0, Q5_0 or Q8_0 blocks). Their libraries multiply f16
//! activations, so ggml's one 8-bit level (Q8_0: errors up to 1/254 of a
//! block's largest value) is too coarse for them. A block of 32 values keeps
//! two 8-bit levels on one scale, x ≈ d·(hi + lo/256): errors within one step
//! of the second level, 1/32512 of the block's largest value (half that but
//! where the residue needs lo = ±128, which the levels' -127..=127 lack).
//!
//! One scale is what makes this cheap: a weight block's products with both
//! levels join in one integer, Σ w·(256·hi + lo), so a block costs one
//! conversion and one fused multiply-add per activation row (two 8-bit
//! levels on scales of their own cost two of each, and twice the scale
//! loads). The weights enter as their stored unsigned codes u = w + offset
//! (Q4_0: 8, Q5_0: 16), which the x86 unsigned-by-signed dot products take
//! as they are; the offset's share, offset·d_w·Σx, is summed apart from the
//! stored block sums and taken off at the end. Q8_0's codes are signed
//! (offset 0).
//!
//! The float steps are ggml's x86 ones: eight lanes, lane l holding the
//! exact integer sum over values 4l..4l+4 of a block, fused-multiply-added
//! with the block's scale, reduced as `hsum_float_8` does; the SIMD kernels
//! (`fine_x86`, `fine_neon`) are bit-identical to the portable ones here.

use crate::GgmlType;

use super::{Dot4Fn, DotFn, Isa, QuantizeFn};

/// Values a block.
pub const BLOCK: usize = 32;
/// Bytes a block: dq = d/256 (f32), s = dq·Σ(256·hi + lo) (f32), hi and lo
/// (32 i8 each).
pub const BLOCK_BYTES: usize = 72;
const HI: usize = 8;
const LO: usize = HI + BLOCK;

/// Bytes of `n` activations (a multiple of 32) in fine blocks.
pub fn row_bytes(n: usize) -> usize {
    n / BLOCK * BLOCK_BYTES
}

/// `x` (a multiple of 32 values) as fine blocks into `out`.
pub fn quantize(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (k, &v) in xb.iter().enumerate() {
            let hi = (v * id).round().clamp(-127.0, 127.0);
            // What the first level missed, on a 256 times finer step.
            let lo = ((v - hi * d) * id * 256.0).round().clamp(-127.0, 127.0);
            let (hi, lo) = (hi as i32, lo as i32);
            sum += 256 * hi + lo;
            ob[HI + k] = hi as i8 as u8;
            ob[LO + k] = lo as i8 as u8;
        }
        let dq = d / 256.0;
        ob[0..4].copy_from_slice(&dq.to_le_bytes());
        ob[4..8].copy_from_slice(&(dq * sum as f32).to_le_bytes());
    }
}

/// The weight types with fine kernels, and the offset of their stored codes.
pub fn offset(w: GgmlType) -> Option<i32> {
    match w {
        GgmlType::Q4_0 => Some(8),
        GgmlType::Q5_0 => Some(16),
        GgmlType::Q8_0 => Some(0),
        _ => None,
    }
}

/// The kernels for weight type `w` (Q4_0, Q5_0 or Q8_0) on `isa` against
/// fine activations: one row, four rows, and the quantiser.
pub fn kernels(w: GgmlType, isa: Isa) -> Option<(DotFn, Dot4Fn, QuantizeFn)> {
    offset(w)?;
    let (dot, dot4) = simd(w, isa).unwrap_or_else(|| portable(w));
    Some((dot, dot4, quantize))
}

/// The portable kernels (the reference the SIMD ones are tested against).
pub fn portable(w: GgmlType) -> (DotFn, Dot4Fn) {
    match w {
        GgmlType::Q4_0 => (q4_0, |w, a| a.map(|a| q4_0(w, a))),
        GgmlType::Q5_0 => (q5_0, |w, a| a.map(|a| q5_0(w, a))),
        _ => (q8_0, |w, a| a.map(|a| q8_0(w, a))),
    }
}

/// Safe one-row and four-row entry points to a SIMD kernel of module `$m`,
/// which `simd` picks only where Isa::detect() found its features.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! entry {
    ($m:ident, $one:ident, $four:ident, $kernel:ident) => {
        fn $one(w: &[u8], a: &[u8]) -> f32 {
            // SAFETY: picked only where the CPU has the kernel's features.
            unsafe { super::$m::$kernel::<1>(w, [a])[0] }
        }
        fn $four(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            // SAFETY: as above.
            unsafe { super::$m::$kernel::<4>(w, a) }
        }
    };
}

#[cfg(target_arch = "x86_64")]
fn simd(w: GgmlType, isa: Isa) -> Option<(DotFn, Dot4Fn)> {
    entry!(fine_x86, q4_0_avx2, q4_0_avx2_x4, q4_0_fine_n);
    entry!(fine_x86, q5_0_avx2, q5_0_avx2_x4, q5_0_fine_n);
    entry!(fine_x86, q8_0_avx2, q8_0_avx2_x4, q8_0_fine_n);
    entry!(fine_x86, q4_0_vnni, q4_0_vnni_x4, q4_0_fine_n_vnni);
    entry!(fine_x86, q5_0_vnni, q5_0_vnni_x4, q5_0_fine_n_vnni);
    entry!(fine_x86, q8_0_vnni, q8_0_vnni_x4, q8_0_fine_n_vnni);
    let vnni = isa == Isa::Avx512 && super::vnni();
    Some(match (w, vnni) {
        _ if !matches!(isa, Isa::Avx2 | Isa::Avx512) => return None,
        (GgmlType::Q4_0, false) => (q4_0_avx2, q4_0_avx2_x4),
        (GgmlType::Q5_0, false) => (q5_0_avx2, q5_0_avx2_x4),
        (GgmlType::Q8_0, false) => (q8_0_avx2, q8_0_avx2_x4),
        (GgmlType::Q4_0, true) => (q4_0_vnni, q4_0_vnni_x4),
        (GgmlType::Q5_0, true) => (q5_0_vnni, q5_0_vnni_x4),
        (GgmlType::Q8_0, true) => (q8_0_vnni, q8_0_vnni_x4),
        _ => return None,
    })
}

#[cfg(target_arch = "aarch64")]
fn simd(w: GgmlType, isa: Isa) -> Option<(DotFn, Dot4Fn)> {
    entry!(fine_neon, q4_0_neon, q4_0_neon_x4, q4_0_fine_n);
    entry!(fine_neon, q5_0_neon, q5_0_neon_x4, q5_0_fine_n);
    entry!(fine_neon, q8_0_neon, q8_0_neon_x4, q8_0_fine_n);
    Some(match w {
        _ if isa != Isa::Neon => return None,
        GgmlType::Q4_0 => (q4_0_neon, q4_0_neon_x4),
        GgmlType::Q5_0 => (q5_0_neon, q5_0_neon_x4),
        GgmlType::Q8_0 => (q8_0_neon, q8_0_neon_x4),
        _ => return None,
    })
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd(_: GgmlType, _: Isa) -> Option<(DotFn, Dot4Fn)> {
    None
}

/// The activation rows' start pointers, each checked to hold `blocks` blocks.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(super) fn rows<const N: usize>(a: [&[u8]; N], blocks: usize) -> [*const u8; N] {
    for r in a.iter() {
        assert!(r.len() >= blocks * BLOCK_BYTES, "activation row too short");
    }
    a.map(|r| r.as_ptr())
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    crate::float16::f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A row of weight blocks (`wb` bytes each, codes decoded by `codes`)
/// against a row of fine activations, in the SIMD kernels' float order.
fn dot_rows(w: &[u8], a: &[u8], wb: usize, offset: i32, codes: impl Fn(&[u8]) -> [i32; 32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut corr = 0f32;
    for (x, y) in w.chunks_exact(wb).zip(a.chunks_exact(BLOCK_BYTES)) {
        let dw = f16_at(x, 0);
        let (dq, s) = (f32_at(y, 0), f32_at(y, 4));
        let u = codes(x);
        let d = dw * dq;
        for (lane, acc) in acc.iter_mut().enumerate() {
            let sum: i32 = (4 * lane..4 * lane + 4)
                .map(|k| u[k] * (256 * y[HI + k] as i8 as i32 + y[LO + k] as i8 as i32))
                .sum();
            *acc = d.mul_add(sum as f32, *acc);
        }
        if offset != 0 {
            corr = dw.mul_add(s, corr);
        }
    }
    let h = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    let h = [h[0] + h[2], h[1] + h[3]];
    (h[0] + h[1]) - offset as f32 * corr
}

/// Q4_0 codes 0..15: low nibbles are values 0..16, high nibbles 16..32.
fn q4_0_codes(x: &[u8]) -> [i32; 32] {
    std::array::from_fn(|k| ((x[2 + k % 16] >> (4 * (k / 16))) & 0x0f) as i32)
}

/// Q5_0 codes 0..31: the nibbles, bit k of qh as the fifth bit of value k.
fn q5_0_codes(x: &[u8]) -> [i32; 32] {
    let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
    std::array::from_fn(|k| {
        let nib = (x[6 + k % 16] >> (4 * (k / 16))) & 0x0f;
        (nib as i32) | ((((qh >> k) & 1) as i32) << 4)
    })
}

pub fn q4_0(w: &[u8], a: &[u8]) -> f32 {
    dot_rows(w, a, 18, 8, q4_0_codes)
}

pub fn q5_0(w: &[u8], a: &[u8]) -> f32 {
    dot_rows(w, a, 22, 16, q5_0_codes)
}

pub fn q8_0(w: &[u8], a: &[u8]) -> f32 {
    dot_rows(w, a, 34, 0, |x| {
        std::array::from_fn(|k| x[2 + k] as i8 as i32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// Activations with a few outliers, as real hidden states have.
    fn activations(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                let v = (xorshift(&mut s) % 20001) as f32 / 10000.0 - 1.0;
                if i % 97 == 3 {
                    v * 60.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Weight blocks of random codes with finite f16 scales.
    fn weights(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut b: Vec<u8> = (0..ty.row_size(n as u64).unwrap())
            .map(|_| xorshift(&mut s) as u8)
            .collect();
        for block in b.chunks_exact_mut(ty.type_size() as usize) {
            block[1] &= 0x3b;
        }
        b
    }

    fn dequantized_weights(ty: GgmlType, w: &[u8], n: usize) -> Vec<f64> {
        let mut out = vec![0f32; n];
        crate::blocks::dequantize(ty, w, &mut out).unwrap();
        out.into_iter().map(f64::from).collect()
    }

    /// Fine activations hold x to one step of the second level (1/32512 of
    /// each block's largest value), and a product with them is as close to
    /// the exact one.
    #[test]
    fn two_levels_hold_activations_and_products_to_3e5() {
        let n = 4096;
        for seed in 1..6 {
            let x = activations(n, seed);
            let mut a = vec![0u8; row_bytes(n)];
            quantize(&x, &mut a);
            for (xb, y) in x.chunks_exact(32).zip(a.chunks_exact(BLOCK_BYTES)) {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let dq = f32_at(y, 0);
                let mut sum = 0f32;
                for (k, &v) in xb.iter().enumerate() {
                    let q = 256 * y[HI + k] as i8 as i32 + y[LO + k] as i8 as i32;
                    let back = dq * q as f32;
                    assert!((back - v).abs() <= amax * 3.1e-5, "{v} came back as {back}");
                    sum += back;
                }
                assert!((f32_at(y, 4) - sum).abs() <= amax * 1e-4);
            }
            for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
                let w = weights(ty, n, seed + 10);
                let wf = dequantized_weights(ty, &w, n);
                let exact: f64 = wf.iter().zip(&x).map(|(w, &x)| w * x as f64).sum();
                let scale: f64 = wf.iter().zip(&x).map(|(w, &x)| (w * x as f64).abs()).sum();
                let got = (portable(ty).0)(&w, &a) as f64;
                assert!(
                    (got - exact).abs() <= 3e-5 * scale,
                    "{ty} seed {seed}: {got} against {exact} (scale {scale})"
                );
            }
        }
    }

    /// Zero blocks, and values at the rounding edges, stay finite and exact.
    #[test]
    fn zero_and_edge_blocks() {
        let mut x = vec![0f32; 64];
        for (k, v) in x[32..].iter_mut().enumerate() {
            *v = (k as f32 - 16.0) * 0.5 / 127.0;
        }
        let mut a = vec![0u8; row_bytes(64)];
        quantize(&x, &mut a);
        assert!(a[..BLOCK_BYTES].iter().all(|&b| b == 0));
        let w = weights(GgmlType::Q4_0, 64, 3);
        let wf = dequantized_weights(GgmlType::Q4_0, &w, 64);
        let exact: f64 = wf.iter().zip(&x).map(|(w, &x)| w * x as f64).sum();
        let got = q4_0(&w, &a) as f64;
        assert!(
            (got - exact).abs() <= 1e-5 * exact.abs().max(1.0),
            "{got} vs {exact}"
        );
    }

    /// The SIMD kernels of every instruction set this CPU has give the
    /// portable kernels' bits, for one row and four, on quantised rows and on
    /// rows of arbitrary levels (the full range of both).
    #[test]
    fn simd_kernels_equal_the_portable_ones() {
        let mut cases = 0;
        for isa in Isa::available() {
            for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
                let (dot, dot4, _) = kernels(ty, isa).unwrap();
                let (slow, _) = portable(ty);
                for (n, seeds) in [(4096, 1..12u64), (32, 12..20), (4096 + 96, 20..26)] {
                    for seed in seeds {
                        let w = weights(ty, n, seed);
                        let x = activations(n, seed + 100);
                        let mut a = vec![0u8; row_bytes(n)];
                        quantize(&x, &mut a);
                        let mut s = seed | 1;
                        let mut r = a.clone();
                        for y in r.chunks_exact_mut(BLOCK_BYTES) {
                            for v in &mut y[HI..] {
                                *v = (xorshift(&mut s) as i8).max(-127) as u8;
                            }
                        }
                        let b: Vec<u8> = {
                            let xr: Vec<f32> = x.iter().rev().map(|v| v * 3.0).collect();
                            let mut b = vec![0u8; a.len()];
                            quantize(&xr, &mut b);
                            b
                        };
                        let want = [&a, &r, &b, &a].map(|y| slow(&w, y).to_bits());
                        assert_eq!(
                            dot(&w, &a).to_bits(),
                            want[0],
                            "{ty} {isa:?} n {n} seed {seed}"
                        );
                        assert_eq!(
                            dot(&w, &r).to_bits(),
                            want[1],
                            "{ty} {isa:?} raw, seed {seed}"
                        );
                        let four = dot4(&w, [&a, &r, &b, &a]).map(f32::to_bits);
                        assert_eq!(four, want, "{ty} x4 {isa:?} n {n} seed {seed}");
                        cases += 6;
                    }
                }
            }
        }
        assert!(cases > 0);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Nanoseconds a weight block, fine kernels against ggml's Q8_0 ones, on
    /// 256 rows of 4096 (cache-resident: the kernels' own cost):
    /// `cargo test --release -p ggml fine::timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing, not a check"]
    fn time_fine_against_ggml_kernels() {
        let (rows, n) = (256, 4096);
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
            let rb = ty.row_size(n as u64).unwrap() as usize;
            let mut w = vec![0x5au8; rows * rb];
            for b in w.chunks_exact_mut(ty.type_size() as usize) {
                b[0] = 0;
                b[1] = 0x30;
            }
            let isa = super::super::isa();
            let ggml = super::super::kernels_for(ty, isa).unwrap();
            let mut qa = vec![0u8; ggml.act.row_bytes(n).unwrap()];
            (ggml.quantize)(&x, &mut qa);
            let (fine, _, _) = kernels(ty, isa).unwrap();
            let mut fa = vec![0u8; row_bytes(n)];
            quantize(&x, &mut fa);
            let once = |f: &dyn Fn(&[u8]) -> f32| {
                let t = std::time::Instant::now();
                let mut s = 0f32;
                for _ in 0..10 {
                    for r in w.chunks_exact(rb) {
                        s += f(r);
                    }
                }
                std::hint::black_box(s);
                t.elapsed().as_nanos() as f64 / (10 * rows * n / 32) as f64
            };
            // Alternated, best of each: the machine's neighbours come and go.
            let (mut g, mut f) = (f64::MAX, f64::MAX);
            for _ in 0..30 {
                g = g.min(once(&|r| (ggml.dot)(r, &qa)));
                f = f.min(once(&|r| fine(r, &fa)));
            }
            eprintln!(
                "{ty} on {isa:?}: ggml {g:.3} ns a block, fine {f:.3} ({:.2}x)",
                f / g
            );
        }
    }
}
