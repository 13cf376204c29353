//! Q8_0 activation quantisation in AVX2 intrinsics: `quantize::quantize_q8_0`
//! to the bit (its portable twin), a block of 32 in four registers. The
//! compiler left the portable form's per-block maximum mostly scalar, and
//! prompt batches quantise every product's input.

use std::arch::x86_64::*;

use super::quantize::Q8_0_BYTES;

/// `quantize_q8_0` on CPUs with AVX2, FMA and F16C (`Isa::Avx2` and up).
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let nb = (x.len() / 32).min(out.len() / Q8_0_BYTES);
    // SAFETY: chosen only where Isa::detect found AVX2 and F16C; `nb`
    // blocks fit both slices.
    unsafe { q8_0_avx2(x.as_ptr(), out.as_mut_ptr(), nb) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_avx2(x: *const f32, out: *mut u8, nb: usize) {
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    for b in 0..nb {
        // Loops, not `array::map`: its closures may be compiled out of line.
        let mut v = [_mm256_setzero_ps(); 4];
        for (i, v) in v.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(x.add(32 * b + 8 * i));
        }
        // max(|v|, m) keeps m where |v| is NaN: NaNs ignored, as the
        // portable fold's `a > m` does.
        let mut m = _mm256_setzero_ps();
        for v in v {
            m = _mm256_max_ps(_mm256_and_ps(v, magnitude), m);
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let mut q = [_mm256_setzero_si256(); 4];
        for (q, v) in q.iter_mut().zip(v) {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v, id),
            );
            // NaN lanes to 0, as the portable `as i32` makes them.
            *q = _mm256_cvtps_epi32(_mm256_andnot_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(r, r), r));
        }
        // Saturating packs, then the lanes back in order.
        let p = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let o = out.add(b * Q8_0_BYTES);
        let h = _mm_extract_epi16::<0>(_mm_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm_set_ss(d)))
            as u16;
        (o as *mut [u8; 2]).write_unaligned(h.to_le_bytes());
        _mm256_storeu_si256(o.add(2) as *mut __m256i, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-identical to the portable quantiser on ordinary values, ties,
    /// zeros, huge and tiny blocks, infinities and NaNs.
    #[test]
    fn equals_the_portable_quantiser() {
        if !is_x86_feature_detected!("avx2") || !is_x86_feature_detected!("f16c") {
            return;
        }
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut x: Vec<f32> = (0..32 * 400)
            .map(|i| {
                let r = (next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                match (i / 32) % 8 {
                    0 => r * 1e30,
                    1 => r * 1e-30,
                    2 => (r * 8.0).round() / 2.0 * 127.0 / 4.0,
                    _ => r * ((i % 7) as f32 + 0.5),
                }
            })
            .collect();
        x[32..64].fill(0.0);
        x[64] = f32::NAN;
        x[96] = f32::INFINITY;
        x[130] = f32::NEG_INFINITY;
        x[161] = -0.0;
        x[200] = f32::MAX;
        let mut want = vec![0u8; x.len() / 32 * Q8_0_BYTES];
        let mut got = want.clone();
        super::super::quantize::quantize_q8_0(&x, &mut want);
        quantize_q8_0(&x, &mut got);
        for (b, (w, g)) in want
            .chunks(Q8_0_BYTES)
            .zip(got.chunks(Q8_0_BYTES))
            .enumerate()
        {
            assert_eq!(w, g, "block {b}: {:?}", &x[32 * b..32 * b + 32]);
        }
    }
}
