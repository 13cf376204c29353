//! Element-wise and row operations of the forward pass, with ggml's numerics
//! where they decide tokens: f64 sums in norms and softmax, the f16 GELU table.

use std::sync::OnceLock;

use crate::float16::{f16_to_f32, f32_to_f16};

use super::Isa;

/// `x * w / rms(x)` in place; the mean square is summed in f64 as ggml does.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * scale * g;
    }
}

/// ggml's tanh-approximated GELU in f32.
fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    // ggml's C contracts `1 + A·x·x` into a fused multiply-add.
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (COEF_A * x).mul_add(x, 1.0)).tanh())
}

/// GELU of every f16 value, rounded to f16: ggml's CPU computes GELU through
/// this table, and matching logits needs the same rounding.
/// One entry of padding follows, so that a 32-bit gather of the last entry
/// stays inside the table.
fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| f32_to_f16(gelu_f32(f16_to_f32(h))))
            .chain([0])
            .collect()
    })
}

#[inline]
pub fn gelu(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        f16_to_f32(gelu_table()[f32_to_f16(x) as usize])
    }
}

/// `gate = gelu(gate) * up`, through the table as ggml's CPU does (one
/// value at a time there); on x86 eight at a time with F16C, to the bit the
/// same: the conversions round to nearest even as `f32_to_f16` does, the
/// table and the products are the same.
pub fn geglu(isa: Isa, gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        // SAFETY: an x86 SIMD Isa is only chosen when the CPU has AVX2 and F16C.
        let n = unsafe { geglu_f16c(gate, up) };
        return geglu_portable(&mut gate[n..], &up[n..]);
    }
    let _ = isa;
    geglu_portable(gate, up)
}

/// The whole groups of eight of `geglu`; returns how many values it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn geglu_f16c(gate: &mut [f32], up: &[f32]) -> usize {
    use std::arch::x86_64::*;
    let table = gelu_table().as_ptr() as *const i32;
    let n = gate.len().min(up.len()) / 8 * 8;
    let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    let low16 = _mm256_set1_epi32(0xffff);
    for i in (0..n).step_by(8) {
        let x = _mm256_loadu_ps(gate.as_ptr().add(i));
        let u = _mm256_loadu_ps(up.as_ptr().add(i));
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        let idx = _mm256_cvtepu16_epi32(h);
        // Two bytes an entry: the gather reads each entry and the next.
        let t = _mm256_and_si256(_mm256_i32gather_epi32::<2>(table, idx), low16);
        let t = _mm_packus_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
        let mut y = _mm256_mul_ps(_mm256_cvtph_ps(t), u);
        y = _mm256_blendv_ps(y, _mm256_mul_ps(x, u), _mm256_cmp_ps::<_CMP_GE_OQ>(x, hi));
        y = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, lo), y);
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), y);
    }
    n
}

fn geglu_portable(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = if *g <= -10.0 {
            0.0
        } else if *g >= 10.0 {
            *g * u
        } else {
            f16_to_f32(table[f32_to_f16(*g) as usize]) * u
        };
    }
}

/// exp(x) by the range-reduced polynomial that ggml's x86 CPU backend uses
/// (from Arm's optimized-routines): n = round(x/ln2), a degree-5 polynomial
/// in the remainder, scaled by 2^n. Matching it to the bit keeps SiLU outputs,
/// and so their quantisation, identical to llama.cpp's. This is the AVX-512
/// form (scalef of a polynomial that includes the constant term).
#[inline(always)]
pub fn expf_avx512(x: f32) -> f32 {
    let (n, b) = exp_reduce(x);
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let j = C5
        .mul_add(b, C4)
        .mul_add(u, C3.mul_add(b, C2))
        .mul_add(u, C1.mul_add(b, 1.0));
    // scalef: j * 2^n in two exact steps so 2^n itself never overflows.
    let n = n as i32;
    let half = n / 2;
    j * pow2(half) * pow2(n - half)
}

/// The AVX2 form of the same exp: the constant term is added by a final
/// fused multiply-add with 2^n, and large |n| is assembled from two scales.
#[inline(always)]
pub fn expf_avx2(x: f32) -> f32 {
    let r = ROUNDER;
    let z = x.mul_add(INV_LN2, r);
    let (n, b) = exp_reduce(x);
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = C5
        .mul_add(b, C4)
        .mul_add(u, C3.mul_add(b, C2))
        .mul_add(u, C1 * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// 2^n for n in -126..=127, built from its bits.
#[inline(always)]
fn pow2(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
const C5: f32 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7
const C4: f32 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
const C3: f32 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
const C2: f32 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
const C1: f32 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
/// 0x1.8p23: adding it rounds an f32 to an integer.
const ROUNDER: f32 = f32::from_bits(0x4b40_0000);
const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20

/// n = round(x / ln2) and the reduced argument b = x - n ln2 (ln2 in two parts).
#[inline(always)]
fn exp_reduce(x: f32) -> (f32, f32) {
    let r = ROUNDER;
    let z = x.mul_add(INV_LN2, r);
    let n = z - r;
    let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    (n, b)
}

/// The vector width ggml's CPU kernels use for `isa` (0: plain C loops).
/// NEON runs the portable (scalar) order: its own ggml order is not modelled.
fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Scalar | Isa::Neon => 0,
    }
}

/// exp as ggml computes it on the whole vectors of `isa`.
#[inline(always)]
fn expf_vec(isa: Isa, x: f32) -> f32 {
    match isa {
        Isa::Avx512 => expf_avx512(x),
        Isa::Avx2 => expf_avx2(x),
        Isa::Scalar | Isa::Neon => x.exp(),
    }
}

/// `gate = silu(gate) * up`, with ggml's vector exp on whole vectors and the
/// C library's on the tail, as ggml does.
pub fn swiglu(isa: Isa, gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        let n = gate.len().min(up.len()) / lanes(isa) * lanes(isa);
        // SAFETY: these ISAs are chosen only where the CPU has their
        // features (AVX-512 F, AVX2 with FMA).
        unsafe {
            match isa {
                Isa::Avx512 => swiglu_avx512(&mut gate[..n], &up[..n]),
                _ => swiglu_avx2(&mut gate[..n], &up[..n]),
            }
            // The tail, with the C library's exp.
            return swiglu_fma(Isa::Scalar, &mut gate[n..], &up[n..]);
        }
    }
    swiglu_body(isa, gate, up)
}

/// `swiglu` on whole vectors: ggml's AVX-512 SiLU, x / (1 + exp(-x)) with
/// `expf_avx512`'s steps on sixteen lanes (the same operations, so the same
/// bits), times up.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn swiglu_avx512(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let c = |v: f32| _mm512_set1_ps(v);
    for i in (0..gate.len()).step_by(16) {
        let g = _mm512_loadu_ps(gate.as_ptr().add(i));
        let x = _mm512_sub_ps(_mm512_setzero_ps(), g);
        let r = c(ROUNDER);
        let n = _mm512_sub_ps(_mm512_fmadd_ps(x, c(INV_LN2), r), r);
        let b = _mm512_fnmadd_ps(n, c(LN2_LO), _mm512_fnmadd_ps(n, c(LN2_HI), x));
        let u = _mm512_mul_ps(b, b);
        let j = _mm512_fmadd_ps(
            _mm512_fmadd_ps(
                _mm512_fmadd_ps(c(C5), b, c(C4)),
                u,
                _mm512_fmadd_ps(c(C3), b, c(C2)),
            ),
            u,
            _mm512_fmadd_ps(c(C1), b, c(1.0)),
        );
        let mut e = _mm512_scalef_ps(j, n);
        let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), c(192.0));
        if big != 0 {
            let low = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, _mm512_setzero_ps());
            let alt = _mm512_mask_blend_ps(low, c(f32::INFINITY), _mm512_setzero_ps());
            e = _mm512_mask_blend_ps(big, e, alt);
        }
        let silu = _mm512_div_ps(g, _mm512_add_ps(c(1.0), e));
        _mm512_storeu_ps(
            gate.as_mut_ptr().add(i),
            _mm512_mul_ps(silu, _mm512_loadu_ps(up.as_ptr().add(i))),
        );
    }
}

/// `swiglu` on whole vectors with `expf_avx2`'s steps on eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let c = |v: f32| _mm256_set1_ps(v);
    let ci = |v: u32| _mm256_set1_epi32(v as i32);
    let abs = |v: __m256| _mm256_andnot_ps(c(-0.0), v);
    for i in (0..gate.len()).step_by(8) {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let x = _mm256_sub_ps(_mm256_setzero_ps(), g);
        let r = c(ROUNDER);
        let z = _mm256_fmadd_ps(x, c(INV_LN2), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(n, c(LN2_LO), _mm256_fnmadd_ps(n, c(LN2_HI), x));
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(e, ci(1f32.to_bits())));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(C5), b, c(C4)),
                u,
                _mm256_fmadd_ps(c(C3), b, c(C2)),
            ),
            u,
            _mm256_mul_ps(c(C1), b),
        );
        let mut ex = _mm256_fmadd_ps(k, j, k);
        let mid = _mm256_cmp_ps::<_CMP_GT_OQ>(abs(n), c(126.0));
        if _mm256_movemask_ps(mid) != 0 {
            let neg = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps()));
            let gb = _mm256_and_si256(neg, ci(0x8200_0000));
            let s1 = _mm256_castsi256_ps(_mm256_add_epi32(gb, ci(0x7f00_0000)));
            let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, gb));
            let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs(n), c(192.0));
            let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
            let far = _mm256_blendv_ps(scaled, _mm256_mul_ps(s1, s1), big);
            ex = _mm256_blendv_ps(ex, far, mid);
        }
        let silu = _mm256_div_ps(g, _mm256_add_ps(c(1.0), ex));
        _mm256_storeu_ps(
            gate.as_mut_ptr().add(i),
            _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))),
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn swiglu_fma(isa: Isa, gate: &mut [f32], up: &[f32]) {
    swiglu_body(isa, gate, up)
}

#[inline(always)]
fn swiglu_body(isa: Isa, gate: &mut [f32], up: &[f32]) {
    let w = lanes(isa);
    let simd = gate.len().checked_div(w).map_or(0, |q| q * w);
    for (i, (g, &u)) in gate.iter_mut().zip(up).enumerate() {
        let e = if i < simd {
            expf_vec(isa, -*g)
        } else {
            (-*g).exp()
        };
        *g = *g / (1.0 + e) * u;
    }
}

/// Sum of 16 lanes in the order of GCC's `_mm512_reduce_add_ps`.
pub fn reduce16(l: &[f32]) -> f32 {
    let t: [f32; 8] = std::array::from_fn(|i| l[i] + l[i + 8]);
    let t: [f32; 4] = std::array::from_fn(|i| t[i] + t[i + 4]);
    (t[0] + t[2]) + (t[1] + t[3])
}

/// Sum of 8 lanes as ggml's AVX reductions do (add halves, then two hadds).
pub fn reduce8(l: &[f32]) -> f32 {
    let t: [f32; 4] = std::array::from_fn(|i| l[i] + l[i + 4]);
    (t[0] + t[1]) + (t[2] + t[3])
}

/// Sum of 8 lanes as ggml's AVX2 soft_max adds each vector: halves added,
/// then `movehl` and `movehdup` (lanes 0+2, then 1+3), not reduce8's hadds.
pub fn reduce8_softmax(l: &[f32]) -> f32 {
    let t: [f32; 4] = std::array::from_fn(|i| l[i] + l[i + 4]);
    (t[0] + t[2]) + (t[1] + t[3])
}

/// Softmax in place as ggml's CPU soft_max does on `isa`: exp over whole
/// vectors, each vector's sum added to an f64 total, the tail in C.
pub fn softmax_isa(isa: Isa, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        // SAFETY: an x86 SIMD Isa is only chosen when the CPU has FMA.
        return unsafe { softmax_fma(isa, x) };
    }
    softmax_body(isa, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn softmax_fma(isa: Isa, x: &mut [f32]) {
    softmax_body(isa, x)
}

#[inline(always)]
fn softmax_body(isa: Isa, x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let w = lanes(isa);
    let simd = x.len().checked_div(w).map_or(0, |q| q * w);
    let mut sum = 0f64;
    for chunk in x[..simd].chunks_exact_mut(w.max(1)) {
        for v in chunk.iter_mut() {
            *v = expf_vec(isa, *v - max);
        }
        sum += f64::from(if w == 16 {
            reduce16(chunk)
        } else {
            reduce8_softmax(chunk)
        });
    }
    for v in x[simd..].iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// ggml_vec_dot_f16's summation order on `isa`, over `n` products `x(i)·y(i)`
/// of f16 values: four accumulators of one vector each over steps of four
/// vectors, reduced pairwise, the tail added in f64.
pub fn f16_dot_ordered(
    isa: Isa,
    n: usize,
    x: impl Fn(usize) -> f32,
    y: impl Fn(usize) -> f32,
) -> f32 {
    let w = lanes(isa);
    if w == 0 {
        let s: f64 = (0..n).map(|i| f64::from(x(i) * y(i))).sum();
        return s as f32;
    }
    let step = 4 * w;
    let np = n / step * step;
    let mut acc = [[0f32; 16]; 4];
    for i in (0..np).step_by(step) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, a) in a[..w].iter_mut().enumerate() {
                let k = i + j * w + l;
                *a = x(k).mul_add(y(k), *a);
            }
        }
    }
    let mut r = [0f32; 16];
    for l in 0..w {
        r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut sum = f64::from(if w == 16 {
        reduce16(&r)
    } else {
        reduce8(&r[..8])
    });
    for i in np..n {
        sum += f64::from(x(i) * y(i));
    }
    sum as f32
}

/// Whether this CPU has AVX512-BF16: ggml built for such a CPU dots bf16
/// rows with VDPBF16PS.
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            // CPUID leaf 7, sub-leaf 1: EAX bit 5 is AVX512_BF16.
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::x86_64::__cpuid_count(7, 1).eax & (1 << 5) != 0
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// BF16 rows (`x`, `y`: the bf16 bits of element i) in
/// ggml_vec_dot_bf16's order for `isa`. Products of two bf16 values are
/// exact in f32, so only the order of the sums matters: with AVX512-BF16,
/// VDPBF16PS's pairs (the odd element first, denormals in and out flushed)
/// in 16 lanes for each half of 64 values; with AVX-512F, 16 lanes for each
/// half of 32; with AVX2, four sets of 8 lanes over 32; each set reduced as
/// ggml's intrinsics do and summed in f64 with the tail.
pub fn bf16_dot_ordered(
    isa: Isa,
    n: usize,
    x: impl Fn(usize) -> u16,
    y: impl Fn(usize) -> u16,
) -> f32 {
    use crate::float16::bf16_to_f32;
    let p = |k: usize| bf16_to_f32(x(k)) * bf16_to_f32(y(k));
    let mut sum = 0f64;
    let mut i = 0;
    match isa {
        Isa::Avx512 if has_avx512_bf16() => {
            let daz = |h: u16| if h & 0x7f80 == 0 { h & 0x8000 } else { h };
            let ftz = |v: f32| {
                if v.is_subnormal() {
                    0.0f32.copysign(v)
                } else {
                    v
                }
            };
            let pd = |k: usize| bf16_to_f32(daz(x(k))) * bf16_to_f32(daz(y(k)));
            let mut c = [[0f32; 16]; 2];
            while i + 64 <= n {
                for (half, c) in c.iter_mut().enumerate() {
                    for (j, l) in c.iter_mut().enumerate() {
                        let k = i + 32 * half + 2 * j;
                        *l = ftz(*l + pd(k + 1));
                        *l = ftz(*l + pd(k));
                    }
                }
                i += 64;
            }
            sum += f64::from(reduce16(&c[0]));
            sum += f64::from(reduce16(&c[1]));
        }
        Isa::Avx512 => {
            let mut c = [[0f32; 16]; 2];
            while i + 32 <= n {
                for (half, c) in c.iter_mut().enumerate() {
                    for (j, l) in c.iter_mut().enumerate() {
                        *l += p(i + 16 * half + j);
                    }
                }
                i += 32;
            }
            sum += f64::from(reduce16(&c[0]));
            sum += f64::from(reduce16(&c[1]));
        }
        Isa::Avx2 => {
            let mut c = [[0f32; 8]; 4];
            while i + 32 <= n {
                for (q, c) in c.iter_mut().enumerate() {
                    for (j, l) in c.iter_mut().enumerate() {
                        *l += p(i + 8 * q + j);
                    }
                }
                i += 32;
            }
            let r: [f32; 8] = std::array::from_fn(|l| (c[0][l] + c[2][l]) + (c[1][l] + c[3][l]));
            sum += f64::from(reduce8_softmax(&r));
        }
        Isa::Scalar | Isa::Neon => {}
    }
    for k in i..n {
        sum += f64::from(p(k));
    }
    sum as f32
}

/// Softmax in place; the normaliser is summed in f64 as ggml does.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

pub use crate::rope::{yarn_corr_dims, Rope};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_exp_is_accurate() {
        for i in -1000..1000 {
            let x = i as f32 * 0.0837;
            let b = x.exp();
            for a in [expf_avx512(x), expf_avx2(x)] {
                assert!(((a - b) / b).abs() < 4e-7, "{x}: {a} vs {b}");
            }
        }
        assert_eq!(expf_avx512(-200.0), 0.0);
        assert_eq!(expf_avx512(200.0), f32::INFINITY);
        assert_eq!(expf_avx2(-200.0), 0.0);
        assert_eq!(expf_avx2(200.0), f32::INFINITY);
        assert!(expf_avx2(-100.0) > 0.0 && expf_avx2(-100.0) < 1e-43);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1e30];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
    }

    #[test]
    fn rope_rotates_by_position() {
        let rope = Rope::plain(4, 10000.0, false);
        let mut cache = [0f32; 4];
        rope.cache(0, None, &mut cache);
        let mut h = [1.0, 2.0, 3.0, 4.0];
        rope.apply(&mut h, &cache);
        assert_eq!(h, [1.0, 2.0, 3.0, 4.0]);
        rope.cache(1, None, &mut cache);
        rope.apply(&mut h, &cache);
        let (c, s) = (1f32.cos(), 1f32.sin());
        assert!((h[0] - (c - 2.0 * s)).abs() < 1e-6);
    }

    #[test]
    fn swiglu_vectors_are_the_lane_by_lane_exp() {
        // Around every exponent, both ranges' edges (|n| 126 and 192),
        // zeros, infinities, NaN; a tail shorter than a vector.
        let mut gate: Vec<f32> = (-200..200)
            .flat_map(|e| {
                let v = (e as f32 * 0.7).exp2();
                [v, -v, v * 1.37, -v * 0.61, e as f32, e as f32 + 0.5]
            })
            .chain([
                0.0, -0.0, 87.3, -87.3, 88.8, -88.8, 103.9, -103.9, 133.0, -133.0,
            ])
            .chain([
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                f32::MAX,
                f32::MIN,
            ])
            .collect();
        gate.extend([0.3f32; 13]);
        let up: Vec<f32> = (0..gate.len())
            .map(|i| 1.0 + (i % 5) as f32 * 0.25)
            .collect();
        for isa in Isa::available() {
            let mut want = gate.clone();
            swiglu_body(isa, &mut want, &up);
            let mut got = gate.clone();
            swiglu(isa, &mut got, &up);
            assert_same_bits(isa, &gate, &got, &want);
        }
    }

    /// `got` and `want` hold the same bits (any NaN for a NaN).
    fn assert_same_bits(isa: Isa, gate: &[f32], got: &[f32], want: &[f32]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{isa:?} at {i} (gate {}): {g} vs {w}",
                gate[i]
            );
        }
    }

    #[test]
    fn geglu_is_the_same_on_every_isa() {
        // Every f16 value (and the f32 values between them, rounding
        // either way), the branches' edges and beyond, infinities, NaN.
        let mut gate: Vec<f32> = (0..=u16::MAX)
            .map(f16_to_f32)
            .flat_map(|v| {
                [
                    v,
                    f32::from_bits(v.to_bits().wrapping_add(0x1000)),
                    v * 1.000_3,
                ]
            })
            .chain([
                -10.0,
                10.0,
                -10.000_001,
                9.999_999,
                1e30,
                -1e30,
                f32::INFINITY,
                f32::NEG_INFINITY,
            ])
            .collect();
        gate.extend([0.5f32; 5]); // a tail shorter than a vector
        let up: Vec<f32> = (0..gate.len())
            .map(|i| 0.25 + (i % 7) as f32 * 0.5 - 1.5)
            .collect();
        let mut want = gate.clone();
        geglu(Isa::Scalar, &mut want, &up);
        for isa in Isa::available() {
            let mut got = gate.clone();
            geglu(isa, &mut got, &up);
            assert_same_bits(isa, &gate, &got, &want);
        }
    }

    #[test]
    fn gelu_is_close_to_the_exact_formula() {
        for x in [-3.0f32, -0.5, 0.0, 0.1, 1.0, 2.5] {
            assert!(
                (gelu(x) - gelu_f32(x)).abs() < 2e-3 * (1.0 + x.abs()),
                "{x}"
            );
        }
    }
}
