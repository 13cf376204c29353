//! x86 SIMD dot products with ggml's exact float arithmetic: the same integer
//! lanes (4 adjacent products per i32 lane), the same fused multiply-adds per
//! block and the same horizontal sums, so results are bit-identical to
//! llama.cpp's x86 build and to our lane-ordered scalar versions in `dot`.
#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum_float_8(x: __m256) -> f32 {
    let mut res = _mm256_extractf128_ps(x, 1);
    res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

/// 16 bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn bytes_from_nibbles_32(qs: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(qs as *const __m128i);
    let bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    _mm256_and_si256(_mm256_set1_epi8(0x0f), bytes)
}

/// 32 bits -> 32 bytes of 0xff where the bit is set.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn bytes_from_bits_32(x: *const u8) -> __m256i {
    let x32 = u32::from_le_bytes([*x, *x.add(1), *x.add(2), *x.add(3)]);
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32 as i32), shuf);
    let bit_mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit_mask), _mm256_set1_epi64x(-1))
}

/// Unsigned bytes times signed bytes, 4 adjacent products per i32 lane, as f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
    let dot = _mm256_maddubs_epi16(ax, sy);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), dot))
}

/// An f16 scale as f32, looked up in `table` (f16_table): a plain load, where
/// F16C's conversion of a value inserted into a vector register made LLVM
/// merge into the accumulator's register, so that each block waited for the
/// previous block's arithmetic before its weight's scale could load, and the
/// loop ran at memory latency rather than bandwidth.
#[inline(always)]
pub(super) unsafe fn f16_at(table: &[f32], p: *const u8) -> f32 {
    debug_assert_eq!(table.len(), 1 << 16);
    *table.get_unchecked(u16::from_le_bytes([*p, *p.add(1)]) as usize)
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

/// Every f16 as f32 (256 KiB, stays in L2): an activation block's scale is
/// then one broadcast load instead of a conversion chain per block and row.
/// The values are exactly those of the F16C conversion.
pub(super) fn f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(crate::float16::f16_to_f32).collect())
}

/// Defines a kernel twice: for AVX2, and for AVX-512 VNNI, where one
/// `vpdpbusd` gives the same exact i32 lane sums as `vpmaddubsw` +
/// `vpmaddwd` (the products of these block types never saturate 16 bits:
/// |x| <= 127 and |y| <= 127 give pair sums below 32767; Q4_1 and Q5_1's
/// unsigned 0..31 against |y| <= 128 give at most 7936). Results are
/// therefore bit-identical; only the instruction count changes.
macro_rules! with_vnni {
    ($avx2:ident, $vnni:ident, |$w:ident, $a:ident, $msum:ident| $body:block) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $avx2<const N: usize>($w: &[u8], $a: [&[u8]; N]) -> [f32; N] {
            #[inline]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $msum(ax: __m256i, sy: __m256i) -> __m256 {
                mul_sum_us8_pairs_float(ax, sy)
            }
            $body
        }

        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $vnni<const N: usize>($w: &[u8], $a: [&[u8]; N]) -> [f32; N] {
            #[inline]
            #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
            unsafe fn $msum(ax: __m256i, sy: __m256i) -> __m256 {
                _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy))
            }
            $body
        }
    };
}

with_vnni!(q4_0_q8_0_n, q4_0_q8_0_n_vnni, |w, a, msum| {
    let nb = w.len() / 18;
    let ya = rows!(a, nb, 34);
    let mut acc = [_mm256_setzero_ps(); N];
    let table = f16_table();
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 18);
        prefetch_ahead::<1>(x);
        let dx = _mm256_set1_ps(f16_at(table, x));
        let qx = _mm256_sub_epi8(bytes_from_nibbles_32(x.add(2)), _mm256_set1_epi8(8));
        let ax = _mm256_sign_epi8(qx, qx);
        for t in 0..N {
            let y = ya[t].add(ib * 34);
            let dy = f16_at(table, y);
            let d = _mm256_mul_ps(dx, _mm256_set1_ps(dy));
            let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
            let sy = _mm256_sign_epi8(qy, qx);
            acc[t] = _mm256_fmadd_ps(d, msum(ax, sy), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_float_8(acc[t]))
});

with_vnni!(q5_0_q8_0_n, q5_0_q8_0_n_vnni, |w, a, msum| {
    let nb = w.len() / 22;
    let ya = rows!(a, nb, 34);
    let mut acc = [_mm256_setzero_ps(); N];
    let table = f16_table();
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 22);
        prefetch_ahead::<1>(x);
        let dx = _mm256_set1_ps(f16_at(table, x));
        let hi = _mm256_andnot_si256(bytes_from_bits_32(x.add(2)), _mm256_set1_epi8(0xf0u8 as i8));
        let qx = _mm256_or_si256(bytes_from_nibbles_32(x.add(6)), hi);
        let ax = _mm256_sign_epi8(qx, qx);
        for t in 0..N {
            let y = ya[t].add(ib * 34);
            let dy = f16_at(table, y);
            let d = _mm256_mul_ps(dx, _mm256_set1_ps(dy));
            let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
            let sy = _mm256_sign_epi8(qy, qx);
            acc[t] = _mm256_fmadd_ps(d, msum(ax, sy), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_float_8(acc[t]))
});

with_vnni!(q8_0_q8_0_n, q8_0_q8_0_n_vnni, |w, a, msum| {
    let nb = w.len() / 34;
    let ya = rows!(a, nb, 34);
    let mut acc = [_mm256_setzero_ps(); N];
    let table = f16_table();
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 34);
        prefetch_ahead::<1>(x);
        let dx = _mm256_set1_ps(f16_at(table, x));
        let qx = _mm256_loadu_si256(x.add(2) as *const __m256i);
        // Signs moved onto y once per block, as mul_sum_i8_pairs_float does.
        let ax = _mm256_sign_epi8(qx, qx);
        for t in 0..N {
            let y = ya[t].add(ib * 34);
            let dy = f16_at(table, y);
            let d = _mm256_mul_ps(dx, _mm256_set1_ps(dy));
            let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
            let sy = _mm256_sign_epi8(qy, qx);
            acc[t] = _mm256_fmadd_ps(d, msum(ax, sy), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_float_8(acc[t]))
});

// ggml_vec_dot_iq4_nl_q8_0's AVX2 path: the 4-bit indices looked up in
// the IQ4_NL table by byte shuffle, blocks alternating between two
// accumulators, their sum reduced, a last odd block added in scalar.
with_vnni!(iq4_nl_q8_0_n, iq4_nl_q8_0_n_vnni, |w, a, msum| {
    let values = _mm_loadu_si128(crate::blocks::iquants::KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let m4b = _mm_set1_epi8(0x0f);
    let nb = w.len() / 18;
    let pairs = nb / 2 * 2;
    let ya = rows!(a, nb, 34);
    let table = f16_table();
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    let lookup = |x: *const u8| {
        let bits = _mm_loadu_si128(x.add(2) as *const __m128i);
        _mm256_set_m128i(
            _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16(bits, 4), m4b)),
            _mm_shuffle_epi8(values, _mm_and_si128(bits, m4b)),
        )
    };
    for ib in 0..pairs {
        let x = w.as_ptr().add(ib * 18);
        prefetch_ahead::<1>(x);
        let dx = f16_at(table, x);
        let qx = lookup(x);
        let ax = _mm256_sign_epi8(qx, qx);
        for t in 0..N {
            let y = ya[t].add(ib * 34);
            let d = _mm256_set1_ps(f16_at(table, y) * dx);
            let sy = _mm256_sign_epi8(_mm256_loadu_si256(y.add(2) as *const __m256i), qx);
            acc[t][ib % 2] = _mm256_fmadd_ps(d, msum(ax, sy), acc[t][ib % 2]);
        }
    }
    std::array::from_fn(|t| {
        let mut s = hsum_float_8(_mm256_add_ps(acc[t][0], acc[t][1]));
        for ib in pairs..nb {
            let x = w.as_ptr().add(ib * 18);
            let y = ya[t].add(ib * 34);
            let mut sumi = 0i32;
            for j in 0..16 {
                let b = *x.add(2 + j);
                let k = &crate::blocks::iquants::KVALUES_IQ4NL;
                sumi += *y.add(2 + j) as i8 as i32 * k[(b & 0x0f) as usize] as i32;
                sumi += *y.add(18 + j) as i8 as i32 * k[(b >> 4) as usize] as i32;
            }
            s += f16_at(table, y) * f16_at(table, x) * sumi as f32;
        }
        s
    })
});

with_vnni!(q4_1_q8_1_n, q4_1_q8_1_n_vnni, |w, a, msum| {
    let nb = w.len() / 20;
    let ya = rows!(a, nb, 36);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut summs = [0f32; N];
    let table = f16_table();
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 20);
        prefetch_ahead::<1>(x);
        let (dx, mx) = (f16_at(table, x), f16_at(table, x.add(2)));
        let qx = bytes_from_nibbles_32(x.add(4));
        for t in 0..N {
            let y = ya[t].add(ib * 36);
            summs[t] += mx * f16_at(table, y.add(2));
            let d = _mm256_mul_ps(_mm256_set1_ps(dx), _mm256_set1_ps(f16_at(table, y)));
            let qy = _mm256_loadu_si256(y.add(4) as *const __m256i);
            acc[t] = _mm256_fmadd_ps(d, msum(qx, qy), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_float_8(acc[t]) + summs[t])
});

with_vnni!(q5_1_q8_1_n, q5_1_q8_1_n_vnni, |w, a, msum| {
    let nb = w.len() / 24;
    let ya = rows!(a, nb, 36);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut summs = [0f32; N];
    let table = f16_table();
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 24);
        prefetch_ahead::<1>(x);
        let (dx, mx) = (f16_at(table, x), f16_at(table, x.add(2)));
        let hi = _mm256_and_si256(bytes_from_bits_32(x.add(4)), _mm256_set1_epi8(0x10));
        let qx = _mm256_or_si256(bytes_from_nibbles_32(x.add(8)), hi);
        for t in 0..N {
            let y = ya[t].add(ib * 36);
            summs[t] += mx * f16_at(table, y.add(2));
            let d = _mm256_mul_ps(_mm256_set1_ps(dx), _mm256_set1_ps(f16_at(table, y)));
            let qy = _mm256_loadu_si256(y.add(4) as *const __m256i);
            acc[t] = _mm256_fmadd_ps(msum(qx, qy), d, acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_float_8(acc[t]) + summs[t])
});

/// The eight 6-bit scales and mins of a Q4_K/Q5_K block (its 12 packed
/// bytes at `s`) as 16 bytes: scales 0..8, then mins 0..8. Whole-word masks
/// and shifts do all eight at once (see `kquants::scale_min_k4` for the
/// layout, which a test checks this against).
#[inline(always)]
unsafe fn k4_scales_mins(s: *const u8) -> __m128i {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| {
        u32::from_le_bytes([
            *s.add(4 * i),
            *s.add(4 * i + 1),
            *s.add(4 * i + 2),
            *s.add(4 * i + 3),
        ])
    };
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let scales_lo = w0 & LOW6;
    let scales_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let mins_lo = w1 & LOW6;
    let mins_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    _mm_set_epi32(
        mins_hi as i32,
        mins_lo as i32,
        scales_hi as i32,
        scales_lo as i32,
    )
}

/// The mins' part of a Q4_K block against one activation block `y`: the
/// eight mins times the activation's 32-value sums, scaled by `dmin`, added
/// into four lanes (shared by the AVX2 and VNNI kernels, to the bit).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn k4_mins_step(mins: __m128i, y: *const u8, dmin: f32, acc: __m128) -> __m128 {
    _mm_fmadd_ps(
        _mm_set1_ps(dmin),
        _mm_cvtepi32_ps(k4_mins_products(mins, y)),
        acc,
    )
}

/// The eight mins (16-bit) times activation block `y`'s 32-value sums, in
/// four i32 lanes of two products each (exact).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn k4_mins_products(mins: __m128i, y: *const u8) -> __m128i {
    let q8sums = _mm256_loadu_si256(y.add(260) as *const __m256i);
    let q8s = _mm_hadd_epi16(
        _mm256_extracti128_si256(q8sums, 0),
        _mm256_extracti128_si256(q8sums, 1),
    );
    _mm_madd_epi16(mins, q8s)
}

/// A Q4_K/Q5_K block's mins as 16-bit lanes and its eight scales each
/// broadcast to a register's 16-bit lanes (its 12 packed bytes at `s`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn k4_block_scales(s: *const u8) -> (__m128i, [__m256i; 8]) {
    let sm = k4_scales_mins(s);
    let mins = _mm256_extracti128_si256(_mm256_cvtepu8_epi16(sm), 1);
    let mut sm_bytes = [0u8; 16];
    _mm_storeu_si128(sm_bytes.as_mut_ptr() as *mut __m128i, sm);
    (
        mins,
        std::array::from_fn(|j| _mm256_set1_epi16(sm_bytes[j] as i16)),
    )
}

/// How far ahead of a block the weight stream is prefetched: the rows a
/// thread takes follow each other in memory, so this runs on into the
/// next row. A decode step reads each weight once, from DRAM; a core's own
/// prefetchers keep too few lines in flight for its share of the bandwidth.
/// 3 KiB: with the AVX-512 Q4_K and Q6_K kernels a 1B Q4_K_M's decode at two
/// threads read 29.4-31.7 t/s at 4 KiB, 32.6-34.1 at 2.5-3 KiB, 29.8-30.5
/// at 1 KiB (alternated runs); the 1B Q4_0's 33.8-34.3 against 36.0-36.6.
const PREFETCH_BYTES: usize = 3072;

/// Asks for `LINES` cache lines from `PREFETCH_BYTES` past the block at
/// `x`: enough to cover a block (a hint: past the end of the weights it
/// does nothing). Into the second-level cache (T1), whose queue holds more
/// misses in flight than the first level's fill buffers: a 1B Q4_K_M's
/// decode at two threads 28.3 -> 30.5 t/s, SmolLM2 Q8_0's at one 61 -> 75
/// (against T0; 8 KiB ahead was no better).
#[inline(always)]
pub(super) unsafe fn prefetch_ahead<const LINES: usize>(x: *const u8) {
    let p = x.wrapping_add(PREFETCH_BYTES) as *const i8;
    for i in 0..LINES {
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(64 * i));
    }
}

/// A Q4_K row's sum: the scaled products' eight lanes and the mins' four.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn k4_finish(acc: __m256, acc_m: __m128) -> f32 {
    let mut m = acc_m;
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    hsum_float_8(acc) + _mm_cvtss_f32(m)
}

/// A Q4_K or Q5_K block's integer lanes against activation block `y`: its
/// eight 32-value chunks `q` (unsigned) times the activations, by their
/// scales; lane l holds values 4l..4l+3 of every chunk.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn k4_lanes(q: &[__m256i; 8], scales: &[__m256i; 8], y: *const u8) -> __m256i {
    let mut sumi = _mm256_setzero_si256();
    for j in 0..4 {
        let q8l = _mm256_loadu_si256(y.add(4 + 64 * j) as *const __m256i);
        let q8h = _mm256_loadu_si256(y.add(4 + 64 * j + 32) as *const __m256i);
        let p16l = _mm256_madd_epi16(scales[2 * j], _mm256_maddubs_epi16(q[2 * j], q8l));
        let p16h = _mm256_madd_epi16(scales[2 * j + 1], _mm256_maddubs_epi16(q[2 * j + 1], q8h));
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
    }
    sumi
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_k_q8_k_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let m4 = _mm256_set1_epi8(0x0f);
    let nb = w.len() / 144;
    let ya = rows!(a, nb, 292);
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_m = [_mm_setzero_ps(); N];
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 144);
        prefetch_ahead::<3>(x);
        let (xd, xmin) = (f16_at(table, x), f16_at(table, x.add(2)));
        let (mins, scales) = k4_block_scales(x.add(4));
        // Low and high nibbles of the four 32-byte chunks.
        let q4: [__m256i; 8] = std::array::from_fn(|k| {
            let bits = _mm256_loadu_si256(x.add(16 + 32 * (k / 2)) as *const __m256i);
            if k % 2 == 0 {
                _mm256_and_si256(bits, m4)
            } else {
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4)
            }
        });
        for t in 0..N {
            let y = ya[t].add(ib * 292);
            let dy = f32::from_le_bytes([*y, *y.add(1), *y.add(2), *y.add(3)]);
            let d = dy * xd;
            let dmin = -dy * xmin;
            acc_m[t] = k4_mins_step(mins, y, dmin, acc_m[t]);
            let sumi = k4_lanes(&q4, &scales, y);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
        }
    }
    std::array::from_fn(|t| k4_finish(acc[t], acc_m[t]))
}

/// A super-block's eight 32-value chunks, two a register (`q`, unsigned),
/// against activation block `y` (Q8_K): 16-bit products scaled by `sc` and
/// summed by `vpdpwssd`, then each register's halves added, so lane k holds
/// what lane k of ggml's AVX2 Q4_K/Q6_K sum holds.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
unsafe fn chunk_pairs_lanes(q: &[__m512i; 4], sc: &[__m512i; 4], y: *const u8) -> __m256i {
    let mut sumi = _mm512_setzero_si512();
    for (j, (&q, &sc)) in q.iter().zip(sc).enumerate() {
        let q8 = _mm512_loadu_si512(y.add(4 + 64 * j) as *const __m512i);
        sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q, q8), sc);
    }
    _mm256_add_epi32(
        _mm512_castsi512_si256(sumi),
        _mm512_extracti64x4_epi64::<1>(sumi),
    )
}

/// Q4_K with AVX-512: two 32-value chunks in one 512-bit register, their
/// products scaled and summed by one `vpdpwssd`. A 64-byte load holds two
/// chunk pairs (low nibbles: chunks 0 and 2, high: 1 and 3); a 128-bit
/// lane shuffle regroups them into neighbouring chunks, which meet the
/// activations' 64 neighbouring bytes. Lane k of each half gets exactly
/// the integer that lane k of the AVX2 kernel's sum gets (four neighbouring
/// products times the chunk's scale), and the halves are added before the
/// one float step a block, so the result is bit-identical to it.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q4_k_q8_k_n_vnni<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let m4 = _mm512_set1_epi8(0x0f);
    let nb = w.len() / 144;
    let ya = rows!(a, nb, 292);
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_m = [_mm_setzero_ps(); N];
    // Picks scale 2j for the low half's 16-bit lanes and 2j+1 for the high.
    let pick: [__m512i; 4] = std::array::from_fn(|j| {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi16(2 * j as i16)),
            _mm256_set1_epi16(2 * j as i16 + 1),
        )
    });
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 144);
        prefetch_ahead::<3>(x);
        let (xd, xmin) = (f16_at(table, x), f16_at(table, x.add(2)));
        let mins_and_scales = _mm256_cvtepu8_epi16(k4_scales_mins(x.add(4)));
        let mins = _mm256_extracti128_si256(mins_and_scales, 1);
        let all = _mm512_castsi256_si512(mins_and_scales);
        let scales: [__m512i; 4] = std::array::from_fn(|j| _mm512_permutexvar_epi16(pick[j], all));
        // Chunks (0, 1), (2, 3), (4, 5), (6, 7).
        let mut q4 = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            let bits = _mm512_loadu_si512(x.add(16 + 64 * h) as *const __m512i);
            let lo = _mm512_and_si512(bits, m4);
            let hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
            q4[2 * h] = _mm512_shuffle_i64x2::<0b01_00_01_00>(lo, hi);
            q4[2 * h + 1] = _mm512_shuffle_i64x2::<0b11_10_11_10>(lo, hi);
        }
        for t in 0..N {
            let y = ya[t].add(ib * 292);
            let dy = f32::from_le_bytes([*y, *y.add(1), *y.add(2), *y.add(3)]);
            let d = dy * xd;
            let dmin = -dy * xmin;
            acc_m[t] = k4_mins_step(mins, y, dmin, acc_m[t]);
            let halves = chunk_pairs_lanes(&q4, &scales, y);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(halves), acc[t]);
        }
    }
    std::array::from_fn(|t| k4_finish(acc[t], acc_m[t]))
}

/// Q5_K as ggml's AVX2 kernel sums it: Q4_K's lanes with each value's
/// fifth bit (bit k of the block's 32 high-bit bytes for chunk k) worth 16,
/// and the mins' exact integer sum times dmin into a float of its own.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5_k_q8_k_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let m4 = _mm256_set1_epi8(0x0f);
    let sixteen = _mm256_set1_epi8(16);
    let nb = w.len() / 176;
    let ya = rows!(a, nb, 292);
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); N];
    let mut summs = [0f32; N];
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 176);
        prefetch_ahead::<3>(x);
        let (xd, xmin) = (f16_at(table, x), f16_at(table, x.add(2)));
        let (mins, scales) = k4_block_scales(x.add(4));
        let hbits = _mm256_loadu_si256(x.add(16) as *const __m256i);
        // The eight 32-value chunks: a nibble, plus 16 where its bit is set.
        let q5: [__m256i; 8] = std::array::from_fn(|k| {
            let bits = _mm256_loadu_si256(x.add(48 + 32 * (k / 2)) as *const __m256i);
            let low = if k % 2 == 0 {
                _mm256_and_si256(bits, m4)
            } else {
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4)
            };
            let bit = _mm256_set1_epi8((1u8 << k) as i8);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, bit), bit);
            _mm256_add_epi8(low, _mm256_and_si256(set, sixteen))
        });
        for t in 0..N {
            let y = ya[t].add(ib * 292);
            let dy = f32::from_le_bytes([*y, *y.add(1), *y.add(2), *y.add(3)]);
            let d = dy * xd;
            let dmin = -dy * xmin;
            let prod = k4_mins_products(mins, y);
            let zero = _mm_setzero_si128();
            let msum = _mm_cvtsi128_si32(_mm_hadd_epi32(_mm_hadd_epi32(prod, zero), zero));
            summs[t] += dmin * msum as f32;
            let sumi = k4_lanes(&q5, &scales, y);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_float_8(acc[t]) + summs[t])
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k_q8_k_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let m3 = _mm256_set1_epi8(3);
    let m15 = _mm256_set1_epi8(15);
    let nb = w.len() / 210;
    let ya = rows!(a, nb, 292);
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); N];
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 210);
        prefetch_ahead::<4>(x);
        let xd = f16_at(table, x.add(208));
        let scales_16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192) as *const __m128i));
        // The eight 32-value chunks as unsigned 6-bit bytes, and their scales
        // (one per 16 values: low half, high half).
        let mut q = [_mm256_setzero_si256(); 8];
        let mut sc = [_mm256_setzero_si256(); 8];
        for half in 0..2 {
            let q4bits1 = _mm256_loadu_si256(x.add(64 * half) as *const __m256i);
            let q4bits2 = _mm256_loadu_si256(x.add(64 * half + 32) as *const __m256i);
            let h = _mm256_loadu_si256(x.add(128 + 32 * half) as *const __m256i);
            let h0 = _mm256_slli_epi16(_mm256_and_si256(h, m3), 4);
            let h1 = _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(12)), 2);
            let h2 = _mm256_and_si256(h, _mm256_set1_epi8(48));
            let h3 = _mm256_srli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(-64)), 2);
            q[4 * half] = _mm256_or_si256(_mm256_and_si256(q4bits1, m15), h0);
            q[4 * half + 1] = _mm256_or_si256(_mm256_and_si256(q4bits2, m15), h1);
            q[4 * half + 2] =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m15), h2);
            q[4 * half + 3] =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m15), h3);
            for k in 0..4 {
                let s_lo = *x.add(192 + 8 * half + 2 * k) as i8 as i16;
                let s_hi = *x.add(192 + 8 * half + 2 * k + 1) as i8 as i16;
                sc[4 * half + k] = _mm256_set_m128i(_mm_set1_epi16(s_hi), _mm_set1_epi16(s_lo));
            }
        }
        for t in 0..N {
            let y = ya[t].add(ib * 292);
            let dy = f32::from_le_bytes([*y, *y.add(1), *y.add(2), *y.add(3)]);
            let d = dy * xd;
            let q8sums = _mm256_loadu_si256(y.add(260) as *const __m256i);
            let q8sclsub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales_16), 5);
            let mut sumi = _mm256_setzero_si256();
            for half in 0..2 {
                let mut p = [_mm256_setzero_si256(); 4];
                for k in 0..4 {
                    let q8v = _mm256_loadu_si256(y.add(4 + 128 * half + 32 * k) as *const __m256i);
                    p[k] = _mm256_madd_epi16(
                        sc[4 * half + k],
                        _mm256_maddubs_epi16(q[4 * half + k], q8v),
                    );
                }
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[0], p[1]));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[2], p[3]));
            }
            sumi = _mm256_sub_epi32(sumi, q8sclsub);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_float_8(acc[t]))
}

/// Q6_K with AVX-512: two 32-value chunks side by side in one 512-bit
/// register (the activations' 64 neighbouring bytes), their four 16-value
/// scales picked into the 16-bit lanes of one register, products scaled and
/// summed by one `vpdpwssd`. Lane k of each half gets exactly the integer
/// lane k of the AVX2 kernel gets (four neighbouring products times their
/// scale), the halves are added before the block's one float step, so the
/// result is bit-identical to `q6_k_q8_k_n`; the work a block is about half.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q6_k_q8_k_n_vnni<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let m15 = _mm512_set1_epi8(15);
    let m48 = _mm512_set1_epi8(48);
    let nb = w.len() / 210;
    let ya = rows!(a, nb, 292);
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); N];
    // 16-bit lane i of pair p's scales: scale 4p + i/8 (a chunk's two
    // 16-value halves, then the next chunk's).
    let pick: [__m512i; 4] = std::array::from_fn(|p| {
        let idx: [i16; 32] = std::array::from_fn(|i| (4 * p + i / 8) as i16);
        _mm512_loadu_si512(idx.as_ptr() as *const __m512i)
    });
    // The high bits' shifts into bits 4 and 5: chunk 4h (bits 0-1) and
    // 4h+1 (bits 2-3) left by 4 and 2; chunk 4h+2 (bits 4-5) and 4h+3
    // (bits 6-7) right by 0 and 2.
    let left = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
    let right = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 210);
        prefetch_ahead::<4>(x);
        let xd = f16_at(table, x.add(208));
        let scales_16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192) as *const __m128i));
        let all = _mm512_castsi256_si512(scales_16);
        let sc: [__m512i; 4] = std::array::from_fn(|p| _mm512_permutexvar_epi16(pick[p], all));
        // Chunk pairs (4h, 4h+1) and (4h+2, 4h+3) as unsigned 6-bit bytes.
        let mut q = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            let ql = _mm512_loadu_si512(x.add(64 * h) as *const __m512i);
            let qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(x.add(128 + 32 * h) as *const __m256i));
            let hi_a = _mm512_and_si512(_mm512_sllv_epi16(qh, left), m48);
            let hi_b = _mm512_and_si512(_mm512_srlv_epi16(qh, right), m48);
            // (a & 15) | b, bitwise.
            q[2 * h] = _mm512_ternarylogic_epi32::<0xF8>(hi_a, ql, m15);
            q[2 * h + 1] = _mm512_ternarylogic_epi32::<0xF8>(hi_b, _mm512_srli_epi16(ql, 4), m15);
        }
        for t in 0..N {
            let y = ya[t].add(ib * 292);
            let dy = f32::from_le_bytes([*y, *y.add(1), *y.add(2), *y.add(3)]);
            let d = dy * xd;
            let q8sums = _mm256_loadu_si256(y.add(260) as *const __m256i);
            let q8sclsub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales_16), 5);
            let sumi = _mm256_sub_epi32(chunk_pairs_lanes(&q, &sc, y), q8sclsub);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_float_8(acc[t]))
}

/// ggml_vec_dot_iq4_xs_q8_K's AVX2 path: the 4-bit indices looked up in the
/// IQ4_NL table by byte shuffle, `maddubs` on |x| and sign-moved y, `madd`
/// by the block's scale, two blocks' lanes at a time, one fused multiply-add
/// a super-block. Lookups and scales are made once for all N rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn iq4_xs_q8_k_n<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let values = _mm_loadu_si128(crate::blocks::iquants::KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let m4b = _mm_set1_epi8(0x0f);
    let nb = w.len() / 136;
    let ya = rows!(a, nb, 292);
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); N];
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * 136);
        prefetch_ahead::<2>(x);
        let xd = f16_at(table, x);
        let mut sh = u16::from_le_bytes([*x.add(2), *x.add(3)]);
        // Per block: |x| and x (for the sign), and the scale as 16-bit lanes.
        let mut ax = [_mm256_setzero_si256(); 8];
        let mut qx = [_mm256_setzero_si256(); 8];
        let mut ls = [_mm256_setzero_si256(); 8];
        for p in 0..4 {
            for h in 0..2 {
                let bits = _mm_loadu_si128(x.add(8 + 32 * p + 16 * h) as *const __m128i);
                let q = _mm256_set_m128i(
                    _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16(bits, 4), m4b)),
                    _mm_shuffle_epi8(values, _mm_and_si128(bits, m4b)),
                );
                qx[2 * p + h] = q;
                ax[2 * p + h] = _mm256_sign_epi8(q, q);
            }
            let sl = *x.add(4 + p) as i16;
            let l1 = ((sl & 0xf) | (((sh as i16) << 4) & 0x30)) - 32;
            let l2 = ((sl >> 4) | (((sh as i16) << 2) & 0x30)) - 32;
            sh >>= 4;
            ls[2 * p] = _mm256_set1_epi16(l1);
            ls[2 * p + 1] = _mm256_set1_epi16(l2);
        }
        for t in 0..N {
            let y = ya[t].add(ib * 292);
            let dy = f32::from_le_bytes([*y, *y.add(1), *y.add(2), *y.add(3)]);
            let mut sumi1 = _mm256_setzero_si256();
            let mut sumi2 = _mm256_setzero_si256();
            for p in 0..4 {
                let y1 = _mm256_loadu_si256(y.add(4 + 64 * p) as *const __m256i);
                let y2 = _mm256_loadu_si256(y.add(36 + 64 * p) as *const __m256i);
                let p16_1 = _mm256_maddubs_epi16(ax[2 * p], _mm256_sign_epi8(y1, qx[2 * p]));
                let p16_2 =
                    _mm256_maddubs_epi16(ax[2 * p + 1], _mm256_sign_epi8(y2, qx[2 * p + 1]));
                sumi1 = _mm256_add_epi32(_mm256_madd_epi16(p16_1, ls[2 * p]), sumi1);
                sumi2 = _mm256_add_epi32(_mm256_madd_epi16(p16_2, ls[2 * p + 1]), sumi2);
            }
            acc[t] = _mm256_fmadd_ps(
                _mm256_set1_ps(xd * dy),
                _mm256_cvtepi32_ps(_mm256_add_epi32(sumi1, sumi2)),
                acc[t],
            );
        }
    }
    std::array::from_fn(|t| hsum_float_8(acc[t]))
}

/// ggml_vec_dot_f16 as built with AVX-512: four 16-lane accumulators over
/// steps of 64, reduced pairwise, then `_mm512_reduce_add_ps`'s tree; the tail in f64.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub unsafe fn f16_dot_avx512(x: &[u8], y: &[u8]) -> f32 {
    let n = x.len() / 2;
    let np = n / 64 * 64;
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut s = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, s) in s.iter_mut().enumerate() {
            let ax = _mm512_cvtph_ps(_mm256_loadu_si256(
                px.add(2 * (i + 16 * j)) as *const __m256i
            ));
            let ay = _mm512_cvtph_ps(_mm256_loadu_si256(
                py.add(2 * (i + 16 * j)) as *const __m256i
            ));
            *s = _mm512_fmadd_ps(ax, ay, *s);
        }
        i += 64;
    }
    let r = _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
    let mut lanes = [0f32; 16];
    _mm512_storeu_ps(lanes.as_mut_ptr(), r);
    let mut sum = f64::from(super::ops::reduce16(&lanes));
    for k in np..n {
        let a = crate::float16::f16_to_f32(u16::from_le_bytes([x[2 * k], x[2 * k + 1]]));
        let b = crate::float16::f16_to_f32(u16::from_le_bytes([y[2 * k], y[2 * k + 1]]));
        sum += f64::from(a * b);
    }
    sum as f32
}

/// ggml_vec_dot_f16 as built with AVX2: four 8-lane accumulators over steps of 32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_dot_avx2(x: &[u8], y: &[u8]) -> f32 {
    let n = x.len() / 2;
    let np = n / 32 * 32;
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut s = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, s) in s.iter_mut().enumerate() {
            let ax = _mm256_cvtph_ps(_mm_loadu_si128(px.add(2 * (i + 8 * j)) as *const __m128i));
            let ay = _mm256_cvtph_ps(_mm_loadu_si128(py.add(2 * (i + 8 * j)) as *const __m128i));
            *s = _mm256_fmadd_ps(ax, ay, *s);
        }
        i += 32;
    }
    let r = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), r);
    let mut sum = f64::from(super::ops::reduce8(&lanes));
    for k in np..n {
        let a = crate::float16::f16_to_f32(u16::from_le_bytes([x[2 * k], x[2 * k + 1]]));
        let b = crate::float16::f16_to_f32(u16::from_le_bytes([y[2 * k], y[2 * k + 1]]));
        sum += f64::from(a * b);
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k4_scales_mins_unpacks_like_the_reference() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            let packed: [u8; 12] = std::array::from_fn(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            });
            let mut got = [0u8; 16];
            // SAFETY: SSE2 is part of x86_64; `packed` has 12 bytes.
            unsafe {
                _mm_storeu_si128(
                    got.as_mut_ptr() as *mut __m128i,
                    k4_scales_mins(packed.as_ptr()),
                )
            };
            for j in 0..8 {
                let (sc, m) = crate::blocks::kquants::scale_min_k4(j, &packed);
                assert_eq!((got[j], got[8 + j]), (sc, m), "j={j} {packed:?}");
            }
        }
    }
}

#[cfg(test)]
mod timing {
    //! Not tests: one-row K-quant kernels timed on weights in the second-
    //! level cache (1 MiB: the arithmetic) and far past the caches (256 MiB
    //! on 2 MiB pages: the memory stream), one thread. `cargo test --release
    //! -p ggml --lib -- --ignored --nocapture kernel_timing`.
    use super::*;

    /// Bytes below 64 (quants and scales of every kind), seeded.
    fn fill(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 8) as u8 & 0x3f
            })
            .collect()
    }

    /// Rows of `row_blocks` blocks filling `total` bytes, each dotted with
    /// one Q8_K activation row; the best of seven passes. Scales are set to
    /// ordinary values: random bytes make subnormal floats, whose
    /// arithmetic is many times slower and would be timed instead.
    fn time(
        name: &str,
        bytes_per_block: usize,
        total: usize,
        row_blocks: usize,
        f: unsafe fn(&[u8], [&[u8]; 1]) -> [f32; 1],
    ) {
        let mut w = vec![0u8; total];
        crate::cpu::pages::huge_pages(&mut w);
        w.copy_from_slice(&fill(total, 1));
        let mut a = fill(row_blocks * 292, 2);
        for b in a.chunks_mut(292) {
            b[..4].copy_from_slice(&0.01f32.to_le_bytes());
        }
        let d = 0x2000u16.to_le_bytes();
        for b in w.chunks_exact_mut(bytes_per_block) {
            if bytes_per_block == 210 {
                b[208..210].copy_from_slice(&d);
            } else {
                b[..2].copy_from_slice(&d);
                b[2..4].copy_from_slice(&d);
            }
        }
        let row = row_blocks * bytes_per_block;
        let rows = total / row;
        let mut best = f64::INFINITY;
        let mut sink = 0f32;
        for _ in 0..7 {
            let t = std::time::Instant::now();
            for r in 0..rows {
                // SAFETY: run only where `kernel_timing` found the features.
                sink += unsafe { f(&w[r * row..(r + 1) * row], [&a])[0] };
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let blocks = (rows * row_blocks) as f64;
        println!(
            "{name} {total} bytes, rows of {row_blocks}: {:.2} ns/block, {:.1} GB/s ({sink})",
            best / blocks * 1e9,
            (rows * row) as f64 / best / 1e9
        );
    }

    #[test]
    #[ignore = "a measurement: prints ns a block"]
    fn kernel_timing() {
        // The kernels' dispatch rule (`simd_kernel`).
        if !(crate::cpu::Isa::available().contains(&crate::cpu::Isa::Avx512) && crate::cpu::vnni())
        {
            eprintln!("skipped: needs AVX-512 with VNNI");
            return;
        }
        for total in [1 << 20, 256 << 20] {
            for rb in [8usize, 32] {
                time("q4_k vnni", 144, total, rb, q4_k_q8_k_n_vnni::<1>);
                time("q6_k", 210, total, rb, q6_k_q8_k_n::<1>);
                time("q6_k vnni", 210, total, rb, q6_k_q8_k_n_vnni::<1>);
            }
        }
    }
}
