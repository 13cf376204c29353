//! Attention for a batch of queries (a prompt), to the bit the one-token
//! path's (`CpuBackend::attention`, which mirrors llama.cpp): the same f16
//! rounding of queries and probabilities, the same lanes and order in every
//! dot. What changes is the work: a job converts its KV head's cells from f16
//! once and serves every query of that head from them, where the one-token
//! path converts both operands inside each dot call.

use super::ops;
use super::Isa;
use crate::backend::Attention;
use crate::float16::{f16_to_f32, f32_to_f16};

/// One job's share: the queries of KV head `g` for tokens `tokens` (all of
/// that head's query heads).
pub struct Job {
    pub g: usize,
    pub tokens: std::ops::Range<usize>,
}

/// The jobs of a batch: each KV head's tokens cut into enough blocks to give
/// every thread about two jobs (each job converts its head's cells once, so
/// fewer, larger jobs convert less).
pub fn jobs(n_head_kv: usize, tokens: usize, threads: usize) -> Vec<Job> {
    let per_head = (2 * threads)
        .div_ceil(n_head_kv)
        .clamp(1, tokens.div_ceil(16));
    let size = tokens.div_ceil(per_head);
    (0..n_head_kv)
        .flat_map(|g| {
            (0..tokens).step_by(size).map(move |s| Job {
                g,
                tokens: s..(s + size).min(tokens),
            })
        })
        .collect()
}

/// The cache as the batch sees it.
pub struct Cache<'a> {
    /// f16 keys, a row of `kv_dim` a cell.
    pub k: &'a [u16],
    /// f16 values transposed: a row of `cells` a dimension.
    pub v: &'a [u16],
    pub cells: usize,
    pub kv_dim: usize,
    /// Cells from 0 that attention looks at (llama.cpp's padded count).
    pub n_kv: usize,
}

/// Runs `job`, handing each query's output to `out(token, head, values)`.
/// `q` holds the batch's `t` queries (from position `pos0`).
#[allow(clippy::too_many_arguments)]
pub fn run(
    isa: Isa,
    cache: &Cache<'_>,
    q: &[f32],
    pos0: usize,
    t: usize,
    a: &Attention,
    job: &Job,
    out: &mut dyn FnMut(usize, usize, &[f32]),
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: these ISAs are chosen only where the CPU has the features.
        match isa {
            Isa::Avx512 => return unsafe { run_avx512(isa, cache, q, pos0, t, a, job, out) },
            Isa::Avx2 => return unsafe { run_avx2(isa, cache, q, pos0, t, a, job, out) },
            _ => {}
        }
    }
    run_body(
        isa,
        cache,
        q,
        pos0,
        t,
        a,
        job,
        out,
        dot,
        |x, y, stride, n| dots16_each(x, y, stride, n, dot),
        round16,
    )
}

/// Each value rounded to the nearest f16 (ties to even), as f32.
fn round16(x: &mut [f32]) {
    for v in x {
        *v = f16_to_f32(f32_to_f16(*v));
    }
}

/// `round16` with F16C, eight values at a time (the same IEEE rounding).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn round16_f16c(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let whole = x.len() / 8 * 8;
    let p = x.as_mut_ptr();
    for i in (0..whole).step_by(8) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(p.add(i)));
        _mm256_storeu_ps(p.add(i), _mm256_cvtph_ps(h));
    }
    round16(&mut x[whole..]);
}

/// Sixteen dots of `x[..n]` with the rows `y[j * stride..][..n]`, one at a
/// time.
#[inline(always)]
fn dots16_each(
    x: &[f32],
    y: &[f32],
    stride: usize,
    n: usize,
    dot: impl Fn(&[f32], &[f32]) -> f32,
) -> [f32; 16] {
    std::array::from_fn(|j| dot(&x[..n], &y[j * stride..][..n]))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_avx512(
    isa: Isa,
    cache: &Cache<'_>,
    q: &[f32],
    pos0: usize,
    t: usize,
    a: &Attention,
    job: &Job,
    out: &mut dyn FnMut(usize, usize, &[f32]),
) {
    run_body(
        isa,
        cache,
        q,
        pos0,
        t,
        a,
        job,
        out,
        |x, y| dot_avx512(x, y),
        |x, y, stride, n| dots16_avx512(x, y, stride, n),
        |x| round16_f16c(x),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_avx2(
    isa: Isa,
    cache: &Cache<'_>,
    q: &[f32],
    pos0: usize,
    t: usize,
    a: &Attention,
    job: &Job,
    out: &mut dyn FnMut(usize, usize, &[f32]),
) {
    run_body(
        isa,
        cache,
        q,
        pos0,
        t,
        a,
        job,
        out,
        |x, y| dot_avx2(x, y),
        |x, y, stride, n| dots16_avx2(x, y, stride, n),
        |x| round16_f16c(x),
    )
}

/// The work of `run`, compiled once for each ISA's vector width.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_body(
    isa: Isa,
    cache: &Cache<'_>,
    q: &[f32],
    pos0: usize,
    t: usize,
    a: &Attention,
    job: &Job,
    out: &mut dyn FnMut(usize, usize, &[f32]),
    dot: impl Fn(&[f32], &[f32]) -> f32,
    dots16: impl Fn(&[f32], &[f32], usize, usize) -> [f32; 16],
    round16: impl Fn(&mut [f32]),
) {
    let hd = a.head_dim;
    let group = a.n_head / a.n_head_kv;
    let q_dim = a.n_head * hd;
    let last = pos0 + t - 1;
    let cells = cache.cells;
    // Where the cache has not wrapped, cell c holds position c and the
    // block's last token sees no cell past its position.
    let unwrapped = last < cells;
    let block_last = pos0 + job.tokens.end - 1;
    // Cells up to a multiple of 64 past the last visible one: the value dots
    // of the one-token path stop there too (see CpuBackend::attention).
    let reach = |pos: usize| {
        if unwrapped {
            (pos + 1).next_multiple_of(64).min(cache.n_kv)
        } else {
            cache.n_kv
        }
    };
    let hi = reach(block_last);
    let cell_pos = |c: usize| -> Option<usize> {
        let back = (last as isize - c as isize).rem_euclid(cells as isize) as usize;
        last.checked_sub(back)
    };
    // This head's keys (a row a cell) and values (a row a dimension), f32.
    let mut k = vec![0f32; hi * hd];
    for (c, row) in k.chunks_exact_mut(hd).enumerate() {
        let src = &cache.k[c * cache.kv_dim + job.g * hd..][..hd];
        convert(src, row);
    }
    let mut v = vec![0f32; hd * hi];
    for (d, row) in v.chunks_exact_mut(hi.max(1)).enumerate().take(hd) {
        let src = &cache.v[(job.g * hd + d) * cells..][..hi];
        convert(src, row);
    }
    let mut scores = vec![0f32; hi];
    let mut qh = vec![0f32; hd];
    let mut o = vec![0f32; hd];
    for ti in job.tokens.clone() {
        let pos = pos0 + ti;
        let seen = reach(pos);
        for h in job.g * group..(job.g + 1) * group {
            // The query as f16, as the one-token path dots it.
            qh.copy_from_slice(&q[ti * q_dim + h * hd..][..hd]);
            round16(&mut qh);
            let s = &mut scores[..seen];
            // Sixteen cells' dots at a time where the cells are there (each
            // dot exactly as alone: only the horizontal sums are shared).
            let whole = seen / 16 * 16;
            for c0 in (0..whole).step_by(16) {
                let d = dots16(&qh, &k[c0 * hd..], hd, hd);
                s[c0..c0 + 16].copy_from_slice(&d);
            }
            for (c, score) in s.iter_mut().enumerate() {
                // Unwrapped, cell c holds position c.
                let p = if unwrapped { Some(c) } else { cell_pos(c) };
                let visible = p.is_some_and(|p| p <= pos && a.window.is_none_or(|w| pos - p < w));
                *score = if !visible {
                    f32::NEG_INFINITY
                } else if c < whole {
                    *score * a.kq_scale
                } else {
                    dot(&qh, &k[c * hd..(c + 1) * hd]) * a.kq_scale
                };
            }
            // Over `seen` cells rather than n_kv: the rest would be exp(-inf)
            // = 0 in whole vectors, adding nothing to the max or the sum.
            ops::softmax_isa(isa, s);
            round16(s);
            let whole = hd / 16 * 16;
            for d0 in (0..whole).step_by(16) {
                o[d0..d0 + 16].copy_from_slice(&dots16(s, &v[d0 * hi..], hi, seen));
            }
            for (d, od) in o.iter_mut().enumerate().skip(whole) {
                *od = dot(s, &v[d * hi..d * hi + seen]);
            }
            out(ti, h, &o);
        }
    }
}

fn convert(src: &[u16], dst: &mut [f32]) {
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = f16_to_f32(h);
    }
}

/// ggml_vec_dot_f16's order where the one-token path uses the portable dot
/// (every ISA but AVX2 and AVX-512): products summed in f64.
#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    ops::f16_dot_ordered(Isa::Scalar, x.len().min(y.len()), |i| x[i], |i| y[i])
}

/// x86::f16_dot_avx512's lanes and order on values already in f32: four
/// 16-lane accumulators over steps of 64, reduced pairwise, then
/// `reduce16`, the tail in f64.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_avx512(x: &[f32], y: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = x.len().min(y.len());
    let np = n / 64 * 64;
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut s = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, s) in s.iter_mut().enumerate() {
            let o = i + 16 * j;
            *s = _mm512_fmadd_ps(_mm512_loadu_ps(px.add(o)), _mm512_loadu_ps(py.add(o)), *s);
        }
        i += 64;
    }
    let r = _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
    let mut lanes = [0f32; 16];
    _mm512_storeu_ps(lanes.as_mut_ptr(), r);
    let mut sum = f64::from(ops::reduce16(&lanes));
    for k in np..n {
        sum += f64::from(*px.add(k) * *py.add(k));
    }
    sum as f32
}

/// Sixteen dots of `x[..n]` with the rows `y[j * stride..][..n]`, each in
/// `dot_avx512`'s exact lanes and order: the same accumulators and pairwise
/// adds a row, then `reduce16`'s tree done for the sixteen at once in
/// registers (the same adds on the same operands, lane by lane), where a
/// store and fifteen scalar adds a dot cost more than its multiplies.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dots16_avx512(x: &[f32], y: &[f32], stride: usize, n: usize) -> [f32; 16] {
    use std::arch::x86_64::*;
    assert!(x.len() >= n && y.len() >= 15 * stride + n);
    let np = n / 64 * 64;
    let px = x.as_ptr();
    let mut r = [_mm512_setzero_ps(); 16];
    // Four rows at a time share each load of x (sixteen accumulators), which
    // a dot alone loads once for every multiply.
    for (g, r) in r.chunks_exact_mut(4).enumerate() {
        let py: [*const f32; 4] = std::array::from_fn(|j| y.as_ptr().add((4 * g + j) * stride));
        let mut s = [[_mm512_setzero_ps(); 4]; 4];
        let mut i = 0;
        while i < np {
            let xv: [__m512; 4] = std::array::from_fn(|k| _mm512_loadu_ps(px.add(i + 16 * k)));
            for (s, py) in s.iter_mut().zip(&py) {
                for (k, s) in s.iter_mut().enumerate() {
                    *s = _mm512_fmadd_ps(xv[k], _mm512_loadu_ps(py.add(i + 16 * k)), *s);
                }
            }
            i += 64;
        }
        for (r, s) in r.iter_mut().zip(&s) {
            *r = _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
        }
    }
    // reduce16, step 1: lanes i + (i + 8), two rows a register.
    let u: [__m512; 8] = std::array::from_fn(|m| {
        let (a, b) = (r[2 * m], r[2 * m + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        )
    });
    // Step 2: lanes i + (i + 4), four rows a register (a quarter each).
    let t: [__m512; 4] = std::array::from_fn(|m| {
        let (a, b) = (u[2 * m], u[2 * m + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    });
    // Step 3: (t0 + t2) + (t1 + t3) in lane 0 of each quarter.
    let mut lanes = [0f32; 64];
    for (m, t) in t.iter().enumerate() {
        let a = _mm512_add_ps(*t, _mm512_permute_ps::<0b01_00_11_10>(*t));
        let b = _mm512_add_ps(a, _mm512_permute_ps::<0b10_11_00_01>(a));
        _mm512_storeu_ps(lanes.as_mut_ptr().add(16 * m), b);
    }
    std::array::from_fn(|j| {
        let mut sum = f64::from(lanes[4 * j]);
        let py = y.as_ptr().add(j * stride);
        for k in np..n {
            sum += f64::from(*px.add(k) * *py.add(k));
        }
        sum as f32
    })
}

/// x86::f16_dot_avx2's lanes and order: four 8-lane accumulators over steps
/// of 32, reduced pairwise, then `reduce8`, the tail in f64.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_avx2(x: &[f32], y: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = x.len().min(y.len());
    let np = n / 32 * 32;
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut s = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, s) in s.iter_mut().enumerate() {
            let o = i + 8 * j;
            *s = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(o)), _mm256_loadu_ps(py.add(o)), *s);
        }
        i += 32;
    }
    let r = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), r);
    let mut sum = f64::from(ops::reduce8(&lanes));
    for k in np..n {
        sum += f64::from(*px.add(k) * *py.add(k));
    }
    sum as f32
}

/// Sixteen dots of `x[..n]` with the rows `y[j * stride..][..n]`, each in
/// `dot_avx2`'s exact lanes and order: two rows at a time share each load
/// of x, and `reduce8`'s tree runs for eight rows at once in registers (the
/// same adds on the same operands, lane by lane).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dots16_avx2(x: &[f32], y: &[f32], stride: usize, n: usize) -> [f32; 16] {
    use std::arch::x86_64::*;
    assert!(x.len() >= n && y.len() >= 15 * stride + n);
    let np = n / 32 * 32;
    let px = x.as_ptr();
    let mut lanes = [0f32; 16];
    for half in 0..2 {
        let mut r = [_mm256_setzero_ps(); 8];
        for pair in 0..4 {
            let j = 8 * half + 2 * pair;
            let py = [y.as_ptr().add(j * stride), y.as_ptr().add((j + 1) * stride)];
            let mut s = [[_mm256_setzero_ps(); 4]; 2];
            let mut i = 0;
            while i < np {
                for k in 0..4 {
                    let xv = _mm256_loadu_ps(px.add(i + 8 * k));
                    for (s, py) in s.iter_mut().zip(py) {
                        s[k] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(py.add(i + 8 * k)), s[k]);
                    }
                }
                i += 32;
            }
            for (m, s) in s.iter().enumerate() {
                r[2 * pair + m] =
                    _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
            }
        }
        // reduce8, step 1: lanes i + (i + 4), two rows a register.
        let u: [__m256; 4] = std::array::from_fn(|m| {
            let (a, b) = (r[2 * m], r[2 * m + 1]);
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            )
        });
        // Steps 2 and 3: (t0 + t1) + (t2 + t3); rows 0, 2, 4, 6 land in
        // lanes 0..4, rows 1, 3, 5, 7 in lanes 4..8.
        let sums = _mm256_hadd_ps(_mm256_hadd_ps(u[0], u[1]), _mm256_hadd_ps(u[2], u[3]));
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), sums);
        for (k, row) in [0, 2, 4, 6, 1, 3, 5, 7].into_iter().enumerate() {
            lanes[8 * half + row] = l[k];
        }
    }
    std::array::from_fn(|j| {
        let mut sum = f64::from(lanes[j]);
        let py = y.as_ptr().add(j * stride);
        for k in np..n {
            sum += f64::from(*px.add(k) * *py.add(k));
        }
        sum as f32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs of (n, stride) and random operands for the sixteen-dot tests.
    #[cfg(target_arch = "x86_64")]
    fn sixteen_dot_cases(seed: u64) -> Vec<(usize, usize, Vec<f32>, Vec<f32>)> {
        let mut seed = seed;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        };
        [
            (64, 64),
            (256, 256),
            (256, 300),
            (100, 130),
            (640, 641),
            (8, 8),
            (33, 40),
        ]
        .into_iter()
        .map(|(n, stride)| {
            let x: Vec<f32> = (0..n).map(|_| next()).collect();
            let y: Vec<f32> = (0..15 * stride + n).map(|_| next()).collect();
            (n, stride, x, y)
        })
        .collect()
    }

    /// The sixteen-at-once dots are the single dots to the bit, tails and
    /// all, on each x86 width this machine has.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_dots_equal_single_ones() {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            for (n, stride, x, y) in sixteen_dot_cases(3) {
                // SAFETY: AVX2 and FMA were found above.
                let (many, one) = unsafe {
                    (
                        dots16_avx2(&x, &y, stride, n),
                        dots16_each(&x, &y, stride, n, |a, b| dot_avx2(a, b)),
                    )
                };
                assert_eq!(many.map(f32::to_bits), one.map(f32::to_bits), "avx2 n {n}");
            }
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            for (n, stride, x, y) in sixteen_dot_cases(1) {
                // SAFETY: AVX-512F and FMA were found above.
                let (many, one) = unsafe {
                    (
                        dots16_avx512(&x, &y, stride, n),
                        dots16_each(&x, &y, stride, n, |a, b| dot_avx512(a, b)),
                    )
                };
                assert_eq!(
                    many.map(f32::to_bits),
                    one.map(f32::to_bits),
                    "avx512 n {n}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f16c_rounding_equals_the_portable_one() {
        if !is_x86_feature_detected!("f16c") {
            eprintln!("skipped: no F16C here");
            return;
        }
        let mut x: Vec<f32> = (0..4099u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2654435761)) % 70000.0)
            .chain([
                0.0,
                -0.0,
                1e-8,
                6.1e-5,
                5.96e-8,
                65519.0,
                65520.0,
                1.0 / 3.0,
            ])
            .collect();
        x.retain(|v| v.is_finite());
        let mut want = x.clone();
        round16(&mut want);
        // SAFETY: F16C was found above (AVX with it).
        unsafe { round16_f16c(&mut x) };
        assert_eq!(
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn jobs_cover_every_head_and_token_once() {
        for (heads, tokens, threads) in [(32, 512, 16), (3, 256, 2), (1, 2, 8), (8, 33, 1)] {
            let mut seen = vec![0; heads * tokens];
            for j in jobs(heads, tokens, threads) {
                for ti in j.tokens {
                    seen[j.g * tokens + ti] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{heads} {tokens} {threads}");
        }
    }
}
