//! x86 kernels of group-quantised weights against fine activations (see
//! `fine`): a weight block unpacked once for N activation rows; per row, its
//! products with both levels joined in one i32 lane sum, 256·Σu·hi + Σu·lo,
//! then one conversion and one fused multiply-add. AVX2 forms the lane sums
//! with `vpmaddubsw` + `vpmaddwd` (pair sums stay below 2^15: codes up to 31
//! against |level| <= 127, or Q8_0's |code| <= 128 after the sign trick),
//! AVX-512 VNNI with `vpdpbusd`; the i32 lanes are the same exact integers.
#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use super::fine::{rows, BLOCK_BYTES};
use super::x86::{
    bytes_from_bits_32, bytes_from_nibbles_32, f16_at, f16_table, hsum_float_8, prefetch_ahead,
};

/// Defines a kernel for AVX2 and for AVX-512 VNNI; `$levels(u, hi, lo)` is
/// the i32 lane sum 256·Σu·hi + Σu·lo of unsigned `u` against signed levels.
macro_rules! fine_kernel {
    ($avx2:ident, $vnni:ident, |$w:ident, $a:ident, $levels:ident| $body:block) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $avx2<const N: usize>($w: &[u8], $a: [&[u8]; N]) -> [f32; N] {
            #[inline]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $levels(u: __m256i, hi: __m256i, lo: __m256i) -> __m256i {
                let h = _mm256_madd_epi16(_mm256_maddubs_epi16(u, hi), _mm256_set1_epi16(256));
                let l = _mm256_madd_epi16(_mm256_maddubs_epi16(u, lo), _mm256_set1_epi16(1));
                _mm256_add_epi32(h, l)
            }
            $body
        }

        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $vnni<const N: usize>($w: &[u8], $a: [&[u8]; N]) -> [f32; N] {
            #[inline]
            #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
            unsafe fn $levels(u: __m256i, hi: __m256i, lo: __m256i) -> __m256i {
                let h = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, hi);
                _mm256_dpbusd_epi32(_mm256_slli_epi32(h, 8), u, lo)
            }
            $body
        }
    };
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Row t's sum: its eight lanes reduced as ggml reduces them, less
/// `offset` times its offset sum.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn finish(acc: __m256, corr: f32, offset: f32) -> f32 {
    hsum_float_8(acc) - offset * corr
}

/// A row of blocks of unsigned codes (`$unpack` of the block at `$x`, `$wb`
/// bytes a block) against N rows, with their offset sums.
macro_rules! unsigned_kernel {
    ($w:ident, $a:ident, $levels:ident, $wb:expr, $offset:expr, |$x:ident| $unpack:expr) => {{
        let nb = $w.len() / $wb;
        let ya = rows($a, nb);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut corr = [0f32; N];
        let table = f16_table();
        for ib in 0..nb {
            let $x = $w.as_ptr().add(ib * $wb);
            prefetch_ahead::<1>($x);
            let dw = f16_at(table, $x);
            let u = $unpack;
            for t in 0..N {
                let y = ya[t].add(ib * BLOCK_BYTES);
                let l = $levels(u, load(y.add(8)), load(y.add(40)));
                let d = _mm256_set1_ps(dw * f32_at(y));
                acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(l), acc[t]);
                corr[t] = dw.mul_add(f32_at(y.add(4)), corr[t]);
            }
        }
        std::array::from_fn(|t| finish(acc[t], corr[t], $offset))
    }};
}

fine_kernel!(q4_0_fine_n, q4_0_fine_n_vnni, |w, a, levels| {
    unsigned_kernel!(w, a, levels, 18, 8.0, |x| bytes_from_nibbles_32(x.add(2)))
});

fine_kernel!(q5_0_fine_n, q5_0_fine_n_vnni, |w, a, levels| {
    unsigned_kernel!(w, a, levels, 22, 16.0, |x| {
        let fifth = _mm256_and_si256(bytes_from_bits_32(x.add(2)), _mm256_set1_epi8(0x10));
        _mm256_or_si256(bytes_from_nibbles_32(x.add(6)), fifth)
    })
});

fine_kernel!(q8_0_fine_n, q8_0_fine_n_vnni, |w, a, levels| {
    let nb = w.len() / 34;
    let ya = rows(a, nb);
    let mut acc = [_mm256_setzero_ps(); N];
    let table = f16_table();
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 34);
        prefetch_ahead::<1>(x);
        let dw = f16_at(table, x);
        let q = load(x.add(2));
        // Signed codes: their signs moved onto the levels.
        let u = _mm256_sign_epi8(q, q);
        for t in 0..N {
            let y = ya[t].add(ib * BLOCK_BYTES);
            let hi = _mm256_sign_epi8(load(y.add(8)), q);
            let lo = _mm256_sign_epi8(load(y.add(40)), q);
            let d = _mm256_set1_ps(dw * f32_at(y));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(levels(u, hi, lo)), acc[t]);
        }
    }
    std::array::from_fn(|t| finish(acc[t], 0.0, 0.0))
});
