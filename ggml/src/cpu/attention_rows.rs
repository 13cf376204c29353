//! Attention over a cache kept as rows of any cache type (`-ctk`/`-ctv`
//! other than f16 for both), to the bit llama.cpp's CPU flash attention,
//! which llama.cpp runs for such caches: for K or V other than f16 it takes
//! its one-row path (`flash_attn_ext_f16_one_chunk`) for every query, one
//! token or a batch. A quantised K cache holds keys rotated by a
//! Walsh-Hadamard matrix, so queries take the same rotation; a quantised V
//! cache holds rotated values, so the output rotates back (llama.cpp's
//! attention rotation). Each query is quantised to K's dot partner and dotted
//! with each visible cell's keys in place; an online softmax scales a running
//! sum of values, which stay f16 (fused multiply-add rounded to f16 each
//! step) when V is f16 and are dequantised to f32 otherwise. No dequantised
//! copy of the cache is made.

use super::{dot_type, kernels_for, quantizer, DotFn, Isa, QuantizeFn};
use crate::backend::Attention;
use crate::blocks::dequantize;
use crate::float16::{f16_to_f32, f32_to_f16};
use crate::kv_types::{hadamard, row_bytes, KvTypes};
use crate::GgmlType;

/// The cache as attention sees it.
pub struct RowsCache<'a> {
    pub k: &'a [u8],
    pub v: &'a [u8],
    pub types: KvTypes,
    pub cells: usize,
    pub kv_dim: usize,
    /// Cells from 0 that attention looks at (llama.cpp's padded count).
    pub n_kv: usize,
}

/// What one query head needs besides the cache, fixed for a call.
pub struct Kernels {
    k_dot: DotFn,
    q_to_k: QuantizeFn,
    q_bytes: usize,
    k_rot: Option<usize>,
    v_rot: Option<usize>,
}

impl Kernels {
    pub fn new(types: KvTypes, head_dim: usize, isa: Isa) -> Kernels {
        let k = kernels_for(types.k, isa).expect("cache types have kernels");
        let act = dot_type(types.k).expect("as above");
        // bf16 keys dot in ggml's own order for this CPU, not the weights'
        // faster lanes: the cache's scores then equal llama.cpp's.
        let k_dot: DotFn = match (types.k, isa) {
            (GgmlType::BF16, Isa::Avx512) => super::dot::bf16_bf16_avx512,
            (GgmlType::BF16, Isa::Avx2) => super::dot::bf16_bf16_avx2,
            (GgmlType::BF16, _) => super::dot::bf16_bf16_scalar,
            _ => k.dot,
        };
        Kernels {
            k_dot,
            q_to_k: quantizer(act, isa).expect("as above"),
            q_bytes: row_bytes(act, head_dim),
            k_rot: types.k_rotation(head_dim),
            v_rot: types.v_rotation(head_dim),
        }
    }
}

/// Per-thread buffers of one query head.
#[derive(Default)]
pub struct Scratch {
    rotated: Vec<f32>,
    q: Vec<u8>,
    acc32: Vec<f32>,
    acc16: Vec<u16>,
    v32: Vec<f32>,
}

/// Where query `pos` looks: cells of positions at most `pos` (and inside
/// the window), `last` being the latest position in the cache.
pub struct Visibility {
    pub pos: usize,
    pub last: usize,
    pub window: Option<usize>,
}

impl Visibility {
    /// The cells to look at, in order, and whether each still needs
    /// `sees`: while the ring has not wrapped, cell c holds position c, so
    /// the visible cells are one range and no cell needs a test.
    fn span(&self, cells: usize, n_kv: usize) -> (std::ops::Range<usize>, bool) {
        if self.last < cells {
            let lo = self.window.map_or(0, |w| (self.pos + 1).saturating_sub(w));
            ((lo..(self.pos + 1).min(n_kv)), false)
        } else {
            (0..n_kv, true)
        }
    }

    fn sees(&self, cells: usize, c: usize) -> bool {
        let back = (self.last as isize - c as isize).rem_euclid(cells as isize) as usize;
        self.last
            .checked_sub(back)
            .is_some_and(|p| p <= self.pos && self.window.is_none_or(|w| self.pos - p < w))
    }
}

/// KV head `g`'s values of cells `0..n_kv`, dequantised, `head_dim` floats
/// a cell: a batch's queries of that head share them (the same floats each
/// would dequantise for itself).
pub fn dequantize_values(cache: &RowsCache<'_>, g: usize, head_dim: usize, out: &mut Vec<f32>) {
    let vt = cache.types.v;
    let (v_row, v_head) = (row_bytes(vt, cache.kv_dim), row_bytes(vt, head_dim));
    out.resize(cache.n_kv * head_dim, 0.0);
    for (c, o) in out.chunks_exact_mut(head_dim).enumerate() {
        dequantize(vt, &cache.v[c * v_row + g * v_head..][..v_head], o)
            .expect("cache types dequantise");
    }
}

/// The attention of one query head `qh` (of KV head `g`) into `out`.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    isa: Isa,
    cache: &RowsCache<'_>,
    kern: &Kernels,
    a: &Attention,
    g: usize,
    qh: &[f32],
    seen: &Visibility,
    v_rows: Option<&[f32]>,
    sc: &mut Scratch,
    out: &mut [f32],
) {
    let args = Args {
        cache,
        kern,
        a,
        g,
        qh,
        seen,
        v_rows,
    };
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: these ISAs are chosen only where the CPU has the features.
        match isa {
            Isa::Avx512 => return unsafe { attend_avx512(&args, sc, out) },
            Isa::Avx2 => return unsafe { attend_avx2(&args, sc, out) },
            _ => {}
        }
    }
    let _ = isa;
    attend_body::<false>(&args, sc, out)
}

/// One query head's inputs: the cache, kernels, shape, its KV head `g`, the
/// query, what it sees, and (for a batch) KV head `g`'s values dequantised
/// once for every query, `head_dim` floats a cell.
struct Args<'a> {
    cache: &'a RowsCache<'a>,
    kern: &'a Kernels,
    a: &'a Attention,
    g: usize,
    qh: &'a [f32],
    seen: &'a Visibility,
    v_rows: Option<&'a [f32]>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn attend_avx512(args: &Args<'_>, sc: &mut Scratch, out: &mut [f32]) {
    attend_body::<true>(args, sc, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_avx2(args: &Args<'_>, sc: &mut Scratch, out: &mut [f32]) {
    attend_body::<true>(args, sc, out)
}

/// `acc = f16(v * s + acc)` (fused) and `acc = f16(acc * s)` on f16 rows,
/// with F16C's conversions where `F16C` (the caller's features include it):
/// the same bits as the portable conversions.
#[inline(always)]
fn mad_f16<const F16C: bool>(acc: &mut [u16], v: &[u8], s: f32) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if F16C {
        use std::arch::x86_64::*;
        // SAFETY: F16C is set only inside functions built with avx2, fma and
        // f16c, chosen where the CPU has them; loads and stores stay inside
        // `acc` (8 halves) and `v` (16 bytes) at each step.
        unsafe {
            let vs = _mm256_set1_ps(s);
            while done + 8 <= acc.len() {
                let pa = acc.as_mut_ptr().add(done) as *mut __m128i;
                let y = _mm256_cvtph_ps(_mm_loadu_si128(pa));
                let x =
                    _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(2 * done) as *const __m128i));
                let r = _mm256_fmadd_ps(x, vs, y);
                _mm_storeu_si128(pa, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r));
                done += 8;
            }
        }
    }
    for (y, x) in acc[done..].iter_mut().zip(v[2 * done..].chunks_exact(2)) {
        let x = f16_to_f32(u16::from_le_bytes([x[0], x[1]]));
        *y = f32_to_f16(x.mul_add(s, f16_to_f32(*y)));
    }
}

#[inline(always)]
fn scale_f16<const F16C: bool>(acc: &mut [u16], s: f32) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if F16C {
        use std::arch::x86_64::*;
        // SAFETY: as in mad_f16.
        unsafe {
            let vs = _mm256_set1_ps(s);
            while done + 8 <= acc.len() {
                let pa = acc.as_mut_ptr().add(done) as *mut __m128i;
                let r = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(pa)), vs);
                _mm_storeu_si128(pa, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r));
                done += 8;
            }
        }
    }
    for y in acc[done..].iter_mut() {
        *y = f32_to_f16(f16_to_f32(*y) * s);
    }
}

/// ggml's order exactly: `s = dot * scale` (its mask adds 0 to a visible
/// cell); a new maximum scales the sum and the values by `exp(M_old - M)`,
/// any other cell weighs `exp(s - M)`; `S = S * ms + vs` fused (ggml is
/// built with contraction on); the result is the values times `1 / S`.
#[inline(always)]
fn attend_body<const F16C: bool>(args: &Args<'_>, sc: &mut Scratch, out: &mut [f32]) {
    let Args {
        cache,
        kern,
        a,
        g,
        qh,
        seen,
        v_rows,
    } = *args;
    let hd = a.head_dim;
    let KvTypes { k: kt, v: vt } = cache.types;
    let (k_row, v_row) = (row_bytes(kt, cache.kv_dim), row_bytes(vt, cache.kv_dim));
    let (k_head, v_head) = (row_bytes(kt, hd), row_bytes(vt, hd));
    sc.q.resize(kern.q_bytes, 0);
    match kern.k_rot {
        Some(n) => {
            sc.rotated.clear();
            sc.rotated.extend_from_slice(qh);
            hadamard(&mut sc.rotated, n);
            (kern.q_to_k)(&sc.rotated, &mut sc.q);
        }
        None => (kern.q_to_k)(qh, &mut sc.q),
    }
    let v16 = vt == GgmlType::F16;
    sc.acc32.clear();
    sc.acc32.resize(hd, 0.0);
    sc.acc16.clear();
    sc.acc16.resize(if v16 { hd } else { 0 }, 0);
    sc.v32.resize(if v16 { 0 } else { hd }, 0.0);
    let (mut sum, mut max) = (0f32, f32::NEG_INFINITY);
    let (span, test) = seen.span(cache.cells, cache.n_kv);
    for c in span {
        if test && !seen.sees(cache.cells, c) {
            continue;
        }
        let k = &cache.k[c * k_row + g * k_head..][..k_head];
        let s = (kern.k_dot)(k, &sc.q) * a.kq_scale;
        let v = &cache.v[c * v_row + g * v_head..][..v_head];
        let (mut ms, mut vs) = (1f32, 1f32);
        let old = max;
        if s > max {
            max = s;
            ms = (old - max).exp();
        } else {
            vs = (s - max).exp();
        }
        if v16 {
            if ms != 1.0 {
                scale_f16::<F16C>(&mut sc.acc16, ms);
            }
            mad_f16::<F16C>(&mut sc.acc16, v, vs);
        } else {
            if ms != 1.0 {
                for y in sc.acc32.iter_mut() {
                    *y *= ms;
                }
            }
            let x = match v_rows {
                Some(rows) => &rows[c * hd..][..hd],
                None => {
                    dequantize(vt, v, &mut sc.v32).expect("cache types dequantise");
                    &sc.v32
                }
            };
            for (y, &x) in sc.acc32.iter_mut().zip(x) {
                *y = x.mul_add(vs, *y);
            }
        }
        sum = sum.mul_add(ms, vs);
    }
    if v16 {
        for (y, &h) in sc.acc32.iter_mut().zip(&sc.acc16) {
            *y = f16_to_f32(h);
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &y) in out.iter_mut().zip(&sc.acc32) {
        *o = y * inv;
    }
    if let Some(n) = kern.v_rot {
        hadamard(out, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend_check::Rng;
    use crate::blocks::quantize;

    /// The span (with its per-cell test where the ring wrapped) visits
    /// exactly the cells `sees` accepts, in cell order.
    #[test]
    fn spans_visit_the_visible_cells() {
        for cells in [40usize, 64, 300] {
            for last in 0..2 * cells {
                for pos in last.saturating_sub(20)..=last {
                    for window in [None, Some(1), Some(16), Some(37)] {
                        let seen = Visibility { pos, last, window };
                        let n_kv = cells.min((last + 1).next_multiple_of(32));
                        let want: Vec<usize> = (0..n_kv).filter(|&c| seen.sees(cells, c)).collect();
                        let (span, test) = seen.span(cells, n_kv);
                        let got: Vec<usize> =
                            span.filter(|&c| !test || seen.sees(cells, c)).collect();
                        assert_eq!(got, want, "cells {cells} last {last} pos {pos} {window:?}");
                    }
                }
            }
        }
    }

    /// Against an f64 softmax over the dequantised cache: the online
    /// softmax, quantised query and f16 or f32 value sums stay within the
    /// rounding of their types, for every cache type, with a window and a
    /// ring that has wrapped.
    #[test]
    fn matches_an_f64_reference_for_every_cache_type() {
        let (cells, n_head_kv, hd) = (96, 2, 64);
        let kv_dim = n_head_kv * hd;
        let a = Attention {
            n_head: 4,
            n_head_kv,
            head_dim: hd,
            window: Some(70),
            kq_scale: 0.125,
        };
        let mut rng = Rng::new(5);
        let keys = rng.vec(cells * kv_dim, 1.0);
        let vals = rng.vec(cells * kv_dim, 1.0);
        let qh = rng.vec(hd, 1.0);
        // Positions 0..130 went through a ring of 96 cells: cell c holds the
        // latest position p with p % 96 == c.
        let seen = Visibility {
            pos: 129,
            last: 129,
            window: a.window,
        };
        for kt in crate::kv_types::CACHE_TYPES {
            for vt in [
                GgmlType::F16,
                GgmlType::Q8_0,
                GgmlType::Q4_0,
                GgmlType::IQ4_NL,
            ] {
                let types = KvTypes { k: kt, v: vt };
                let store = |t: GgmlType, x: &[f32]| {
                    let mut b = vec![0u8; row_bytes(t, x.len())];
                    quantize(t, x, &mut b).unwrap();
                    b
                };
                // The cache holds rotated rows where its types rotate.
                let rotated = |x: &[f32], n: Option<usize>| {
                    let mut x = x.to_vec();
                    if let Some(n) = n {
                        hadamard(&mut x, n);
                    }
                    x
                };
                let (k_rot, v_rot) = (types.k_rotation(hd), types.v_rotation(hd));
                let (k, v) = (
                    store(kt, &rotated(&keys, k_rot)),
                    store(vt, &rotated(&vals, v_rot)),
                );
                let qr = rotated(&qh, k_rot);
                let load = |t: GgmlType, b: &[u8]| {
                    let mut x = vec![0f32; cells * kv_dim];
                    dequantize(t, b, &mut x).unwrap();
                    x
                };
                let (kd, vd) = (load(kt, &k), load(vt, &v));
                let cache = RowsCache {
                    k: &k,
                    v: &v,
                    types,
                    cells,
                    kv_dim,
                    n_kv: cells,
                };
                let mut first: Option<Vec<f32>> = None;
                for isa in Isa::available() {
                    let kern = Kernels::new(types, hd, isa);
                    let mut out = vec![0f32; hd];
                    let g = 1;
                    attend(
                        isa,
                        &cache,
                        &kern,
                        &a,
                        g,
                        &qh,
                        &seen,
                        None,
                        &mut Scratch::default(),
                        &mut out,
                    );
                    let visible: Vec<usize> = (0..cells).filter(|&c| seen.sees(cells, c)).collect();
                    assert_eq!(visible.len(), 70);
                    let scores: Vec<f64> = visible
                        .iter()
                        .map(|&c| {
                            let kr = &kd[c * kv_dim + g * hd..][..hd];
                            kr.iter()
                                .zip(&qr)
                                .map(|(&x, &y)| x as f64 * y as f64)
                                .sum::<f64>()
                                * a.kq_scale as f64
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let total: f64 = w.iter().sum();
                    let want: Vec<f32> = (0..hd)
                        .map(|d| {
                            (visible
                                .iter()
                                .zip(&w)
                                .map(|(&c, w)| w * vd[c * kv_dim + g * hd + d] as f64)
                                .sum::<f64>()
                                / total) as f32
                        })
                        .collect();
                    let want = rotated(&want, v_rot);
                    let worst = want
                        .iter()
                        .zip(&out)
                        .map(|(&r, &o)| (r as f64 - o as f64).abs())
                        .fold(0f64, f64::max);
                    // The query's own quantisation moves scores most for
                    // 4-bit keys (q8_0 of the query, ~1/127 of its range).
                    assert!(worst < 2e-2, "{types} on {isa:?}: off by {worst}");
                    // Every instruction set gives the portable code's bits,
                    // but for float keys: ggml's f16 and bf16 dots sum in
                    // lanes of the vector width, and ours follow each ISA.
                    if matches!(kt, GgmlType::F16 | GgmlType::BF16) {
                        continue;
                    }
                    match &first {
                        Some(f) => assert_eq!(f, &out, "{types} on {isa:?}"),
                        None => first = Some(out),
                    }
                }
            }
        }
    }
}
