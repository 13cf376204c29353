//! x86 kernels over groups of eight interleaved rows (`interleaved`):
//! a register's eight i32 lanes are the eight rows. AVX2 forms (with FMA
//! and F16C, `Isa::Avx2` and up) and AVX-512 VNNI forms, whose `vpdpbusd`
//! gives the same exact integers in fewer instructions.

use std::arch::x86_64::*;

use super::interleaved::{LANE_PAIRS, ROWS};
use super::x86::{f16_at, f16_table, prefetch_ahead};

const ACT_BLOCK: usize = 34;
/// Bytes of a group's block column: Q4_0 and IQ4_NL.
const GROUP_BLOCK: usize = ROWS * 18;
/// Q8_0.
const Q8_COLUMN: usize = ROWS * 34;
/// Q5_0: the scales, the eight words of fifth bits, the quant bytes.
const Q5_COLUMN: usize = ROWS * 22;
const Q5_QUANTS: usize = 48;

/// `hsum_float_8`'s order over eight registers whose lanes are rows
/// (register l holding lane l of each row's sum).
#[inline(always)]
unsafe fn reduce(x: [__m256; 8]) -> __m256 {
    _mm256_add_ps(
        _mm256_add_ps(_mm256_add_ps(x[0], x[4]), _mm256_add_ps(x[2], x[6])),
        _mm256_add_ps(_mm256_add_ps(x[1], x[5]), _mm256_add_ps(x[3], x[7])),
    )
}

#[inline(always)]
unsafe fn store(r: __m256) -> [f32; ROWS] {
    let mut out = [0f32; ROWS];
    _mm256_storeu_ps(out.as_mut_ptr(), r);
    out
}

/// Each token's `reduce` and `store`, in a loop rather than `array::map`,
/// whose closure the compiler kept out of line, calling each intrinsic
/// (10% of a Q5_0 prompt batch's time).
#[inline(always)]
unsafe fn store_four(acc: [[__m256; 8]; 4]) -> [[f32; ROWS]; 4] {
    let mut out = [[0f32; ROWS]; 4];
    for t in 0..4 {
        _mm256_storeu_ps(out[t].as_mut_ptr(), reduce(acc[t]));
    }
    out
}

/// Exact i32 lane sums of unsigned-by-signed byte products: AVX2's two
/// steps, and VNNI's one (the same integers; no pair here reaches 2^15).
#[inline(always)]
unsafe fn sums_avx2(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

#[inline(always)]
unsafe fn sums_vnni(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy)
}

/// Four bytes of an activation block's values, in every lane.
#[inline(always)]
unsafe fn broadcast4(p: *const u8) -> __m256i {
    _mm256_set1_epi32((p as *const i32).read_unaligned())
}

pub fn one(group: &[u8], act: &[u8], _side: &[i32]) -> [f32; ROWS] {
    let nb = group.len() / GROUP_BLOCK;
    assert!(act.len() >= nb * ACT_BLOCK, "activation row too short");
    // SAFETY: chosen only where Isa::detect found AVX2, FMA and F16C; the
    // lengths are checked above.
    unsafe { one_avx2(group.as_ptr(), act.as_ptr(), nb) }
}

pub fn four(group: &[u8], acts: [&[u8]; 4], sums: [&[i32]; 4]) -> [[f32; ROWS]; 4] {
    let (g, ys, ss, nb) = four_args(group, GROUP_BLOCK, acts, sums);
    // SAFETY: as in `one`.
    unsafe { four_avx2(g, ys, ss, nb) }
}

/// `four` with `vpdpbusd` summing each block in i32 directly.
pub fn four_vnni(group: &[u8], acts: [&[u8]; 4], sums: [&[i32]; 4]) -> [[f32; ROWS]; 4] {
    let (g, ys, ss, nb) = four_args(group, GROUP_BLOCK, acts, sums);
    // SAFETY: chosen only where the CPU has AVX-512 VNNI with VL and BW.
    unsafe { four_vnni_impl(g, ys, ss, nb) }
}

type FourArgs = (*const u8, [*const u8; 4], [*const i32; 4], usize);

/// A four-token kernel's pointers and block count, the lengths checked:
/// the group (`column` bytes a block), the activation rows (`act` bytes a
/// block).
fn four_acts(group: &[u8], column: usize, acts: [&[u8]; 4], act: usize) -> ([*const u8; 4], usize) {
    let nb = group.len() / column;
    for a in acts {
        assert!(a.len() >= nb * act, "activation row too short");
    }
    (acts.map(|a| a.as_ptr()), nb)
}

/// `four_acts` for Q8_0 activations and their block sums.
fn four_args(group: &[u8], column: usize, acts: [&[u8]; 4], sums: [&[i32]; 4]) -> FourArgs {
    let (ys, nb) = four_acts(group, column, acts, ACT_BLOCK);
    for s in sums {
        assert!(s.len() >= nb, "block sums too short");
    }
    (group.as_ptr(), ys, sums.map(|s| s.as_ptr()), nb)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_avx2(g: *const u8, y: *const u8, nb: usize) -> [f32; ROWS] {
    one_body(
        g,
        y,
        nb,
        GROUP_BLOCK,
        |c, j| q4_values(c, j),
        |ax, sy| sums_avx2(ax, sy),
    )
}

/// A Q4_0 group column's byte column `j`: the low and the high nibbles'
/// values, code - 8.
#[inline(always)]
unsafe fn q4_values(col: *const u8, j: usize) -> (__m256i, __m256i) {
    let (lo, hi) = q4_codes(col, j);
    let eight = _mm256_set1_epi8(8);
    (_mm256_sub_epi8(lo, eight), _mm256_sub_epi8(hi, eight))
}

/// The codes (0..16) of a Q4_0 group column's byte column `j`.
#[inline(always)]
unsafe fn q4_codes(col: *const u8, j: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let v = _mm256_loadu_si256(col.add(16 + 32 * j) as *const __m256i);
    (
        _mm256_and_si256(v, m4),
        _mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
    )
}

/// The codes (0..32: the nibble and the fifth bit) of a Q5_0 group
/// column's byte column `j`, low nibbles' and high nibbles'. Lane r's
/// bytes i are values 4j + i and 16 + 4j + i of row r, whose fifth bits
/// are bits 4j + i and 16 + 4j + i of the row's word: the word shifted by
/// 4j, its byte 0 (or 2) spread to the four bytes, each byte's own bit
/// tested.
#[inline(always)]
unsafe fn q5_codes(col: *const u8, j: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let bit = _mm256_set1_epi32(0x0804_0201);
    let qh = _mm256_loadu_si256(col.add(16) as *const __m256i);
    let sh = _mm256_srl_epi32(qh, _mm_cvtsi32_si128(4 * j as i32));
    let spread = |b: i8| {
        let idx = _mm256_setr_epi8(
            b,
            b,
            b,
            b,
            b + 4,
            b + 4,
            b + 4,
            b + 4,
            b + 8,
            b + 8,
            b + 8,
            b + 8,
            b + 12,
            b + 12,
            b + 12,
            b + 12,
            b,
            b,
            b,
            b,
            b + 4,
            b + 4,
            b + 4,
            b + 4,
            b + 8,
            b + 8,
            b + 8,
            b + 8,
            b + 12,
            b + 12,
            b + 12,
            b + 12,
        );
        // 0x10 where the value's fifth bit is set.
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(sh, idx), bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    };
    let v = _mm256_loadu_si256(col.add(Q5_QUANTS + 32 * j) as *const __m256i);
    (
        _mm256_or_si256(_mm256_and_si256(v, m4), spread(0)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), spread(2)),
    )
}

/// A Q5_0 group column's values, code - 16 (ggml's `or` of 0xF0 where the
/// fifth bit is clear gives the same bytes).
#[inline(always)]
unsafe fn q5_values(col: *const u8, j: usize) -> (__m256i, __m256i) {
    let (lo, hi) = q5_codes(col, j);
    let sixteen = _mm256_set1_epi8(16);
    (_mm256_sub_epi8(lo, sixteen), _mm256_sub_epi8(hi, sixteen))
}

/// `one` for Q5_0 groups.
pub fn one_q5(group: &[u8], act: &[u8], _side: &[i32]) -> [f32; ROWS] {
    let nb = group.len() / Q5_COLUMN;
    assert!(act.len() >= nb * ACT_BLOCK, "activation row too short");
    // SAFETY: as in `one`.
    unsafe { one_q5_avx2(group.as_ptr(), act.as_ptr(), nb) }
}

/// `one_q5` with `vpdpbusd`.
pub fn one_q5_vnni(group: &[u8], act: &[u8], _side: &[i32]) -> [f32; ROWS] {
    let nb = group.len() / Q5_COLUMN;
    assert!(act.len() >= nb * ACT_BLOCK, "activation row too short");
    // SAFETY: chosen only where the CPU has AVX-512 VNNI with VL and BW.
    unsafe { one_q5_vnni_impl(group.as_ptr(), act.as_ptr(), nb) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn one_q5_vnni_impl(g: *const u8, y: *const u8, nb: usize) -> [f32; ROWS] {
    one_body(
        g,
        y,
        nb,
        Q5_COLUMN,
        |c, j| q5_values(c, j),
        |ax, sy| sums_vnni(ax, sy),
    )
}

/// `four` for Q5_0 groups: each token's lanes as `one_q5` takes them (Q5_0
/// batches keep the one-token order: a block's integer sum changed Gemma 3's
/// greedy reply against llama.cpp's, whose Q5_0 batches keep it too).
pub fn four_q5(group: &[u8], acts: [&[u8]; 4], _sums: [&[i32]; 4]) -> [[f32; ROWS]; 4] {
    let (ys, nb) = four_acts(group, Q5_COLUMN, acts, ACT_BLOCK);
    // SAFETY: as in `one`.
    unsafe { four_q5_avx2(group.as_ptr(), ys, nb) }
}

/// `four_q5` with AVX-512: each token's lanes as `one_q5_vnni` takes them,
/// two lanes a 64-bit piece (`pairs_body`).
pub fn four_q5_pairs(group: &[u8], acts: [&[u8]; 4], side: [&[i32]; 4]) -> [[f32; ROWS]; 4] {
    let (g, ys, ss, nb) = four_pairs_args(group, Q5_COLUMN, acts, side);
    // SAFETY: chosen only where the CPU has AVX-512 VNNI with VL and BW; the
    // lengths are checked above.
    unsafe { pairs_q5::<4>(g, ys, ss, nb) }
}

/// Four tokens of Q8_0 groups with AVX-512, each token's lanes as
/// `one_q8_vnni` takes them (the codes are the values plus 128).
pub fn four_q8_pairs(group: &[u8], acts: [&[u8]; 4], side: [&[i32]; 4]) -> [[f32; ROWS]; 4] {
    let (g, ys, ss, nb) = four_pairs_args(group, Q8_COLUMN, acts, side);
    // SAFETY: as in `four_q5_pairs`.
    unsafe { pairs_q8::<4>(g, ys, ss, nb) }
}

/// `one` for Q4_0 groups with AVX-512: ggml's x86 Q4_0 dot to the bit,
/// two lanes a 64-bit piece (`pairs_body`; codes 0..16, offset 8).
pub fn one_q4_pairs(group: &[u8], act: &[u8], side: &[i32]) -> [f32; ROWS] {
    let (g, y, s, nb) = one_pairs_args(group, GROUP_BLOCK, act, side);
    // SAFETY: as in `four_q5_pairs`.
    unsafe { pairs_q4::<1>(g, y, s, nb)[0] }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pairs_q4<const N: usize>(
    g: *const u8,
    ys: [*const u8; N],
    ss: [*const i32; N],
    nb: usize,
) -> [[f32; ROWS]; N] {
    pairs_body::<N, 3>(g, ys, ss, nb, GROUP_BLOCK, |col, p| q4_codes(col, p))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pairs_q5<const N: usize>(
    g: *const u8,
    ys: [*const u8; N],
    ss: [*const i32; N],
    nb: usize,
) -> [[f32; ROWS]; N] {
    pairs_body::<N, 3>(g, ys, ss, nb, Q5_COLUMN, |col, p| q5_codes(col, p))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pairs_q8<const N: usize>(
    g: *const u8,
    ys: [*const u8; N],
    ss: [*const i32; N],
    nb: usize,
) -> [[f32; ROWS]; N] {
    pairs_body::<N, 5>(g, ys, ss, nb, Q8_COLUMN, |col, p| {
        let flip = _mm256_set1_epi8(-128);
        let lane = |l: usize| {
            _mm256_xor_si256(
                _mm256_loadu_si256(col.add(16 + 32 * l) as *const __m256i),
                flip,
            )
        };
        (lane(p), lane(p + 4))
    })
}

/// A one-token pairs kernel's pointers and block count, the lengths checked.
fn one_pairs_args(
    group: &[u8],
    column: usize,
    act: &[u8],
    side: &[i32],
) -> (*const u8, [*const u8; 1], [*const i32; 1], usize) {
    let nb = group.len() / column;
    assert!(act.len() >= nb * ACT_BLOCK, "activation row too short");
    assert!(side.len() >= nb * LANE_PAIRS, "lane pairs too short");
    (group.as_ptr(), [act.as_ptr()], [side.as_ptr()], nb)
}

/// `four_acts` for Q8_0 activations and their `lane_pairs`.
fn four_pairs_args(group: &[u8], column: usize, acts: [&[u8]; 4], side: [&[i32]; 4]) -> FourArgs {
    let (ys, nb) = four_acts(group, column, acts, ACT_BLOCK);
    for s in side {
        assert!(s.len() >= nb * LANE_PAIRS, "lane pairs too short");
    }
    (group.as_ptr(), ys, side.map(|s| s.as_ptr()), nb)
}

/// N tokens' one-token lanes (ggml's lane l: values 4l..4l+4, one fused
/// multiply-add a block), lanes p and p+4 of each row side by side in a
/// 64-bit piece of a 512-bit register, so that a token's block takes four
/// `vpdpbusd`, four conversions and four fused multiply-adds for eight rows
/// and the activations come by 64-bit broadcasts of its `lane_pairs`,
/// which also hold the codes' offset as each integer sum's start.
/// `codes(col, p)`: a block column's unsigned codes of lanes p and p+4,
/// eight rows each. `LINES`: the cache lines of a block column.
#[inline(always)]
unsafe fn pairs_body<const N: usize, const LINES: usize>(
    g: *const u8,
    ys: [*const u8; N],
    side: [*const i32; N],
    nb: usize,
    column: usize,
    codes: impl Fn(*const u8, usize) -> (__m256i, __m256i),
) -> [[f32; ROWS]; N] {
    let table = f16_table();
    // Row r's lanes p and p+4 as dwords 2r and 2r+1.
    let zip = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let twice = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let mut acc = [[_mm512_setzero_ps(); 4]; N];
    for b in 0..nb {
        let col = g.add(b * column);
        prefetch_ahead::<LINES>(col);
        let mut w = [_mm512_setzero_si512(); 4];
        for (p, w) in w.iter_mut().enumerate() {
            let (lo, hi) = codes(col, p);
            *w = _mm512_permutex2var_epi32(
                _mm512_castsi256_si512(lo),
                zip,
                _mm512_castsi256_si512(hi),
            );
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        let dw = _mm512_permutexvar_ps(twice, _mm512_castps256_ps512(dw));
        for t in 0..N {
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(f16_at(table, ys[t].add(b * ACT_BLOCK))));
            let pairs = side[t].add(b * LANE_PAIRS) as *const i64;
            for p in 0..4 {
                let y = _mm512_set1_epi64(pairs.add(p).read_unaligned());
                let start = _mm512_set1_epi64(pairs.add(4 + p).read_unaligned());
                let s = _mm512_dpbusd_epi32(start, w[p], y);
                acc[t][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[t][p]);
            }
        }
    }
    let mut out = [[0f32; ROWS]; N];
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
    for t in 0..N {
        // Even dwords: lane p plus lane p+4; then hsum_float_8's order.
        let mut s = acc[t];
        for s in s.iter_mut() {
            *s = _mm512_add_ps(*s, _mm512_movehdup_ps(*s));
        }
        let r = _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
        let r = _mm512_permutexvar_ps(evens, r);
        _mm256_storeu_ps(out[t].as_mut_ptr(), _mm512_castps512_ps256(r));
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_q5_avx2(g: *const u8, y: *const u8, nb: usize) -> [f32; ROWS] {
    one_body(
        g,
        y,
        nb,
        Q5_COLUMN,
        |c, j| q5_values(c, j),
        |ax, sy| sums_avx2(ax, sy),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn four_q5_avx2(g: *const u8, ys: [*const u8; 4], nb: usize) -> [[f32; ROWS]; 4] {
    four_lanes_body(
        g,
        ys,
        nb,
        Q5_COLUMN,
        |c, j| q5_values(c, j),
        |ax, sy| sums_avx2(ax, sy),
    )
}

/// Codes 0..=15 against |y| <= 128: a block's sixteen pair sums per i16
/// lane stay within ±30720, so AVX2 sums a block in i16 and widens once.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn four_avx2(
    g: *const u8,
    ys: [*const u8; 4],
    sums: [*const i32; 4],
    nb: usize,
) -> [[f32; ROWS]; 4] {
    four_body(
        g,
        ys,
        sums,
        nb,
        (GROUP_BLOCK, 8),
        |c, j| q4_codes(c, j),
        |acc, lo, ylo, hi, yhi| {
            let p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
            _mm256_add_epi16(acc, p)
        },
        |acc| _mm256_madd_epi16(acc, _mm256_set1_epi16(1)),
    )
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn four_vnni_impl(
    g: *const u8,
    ys: [*const u8; 4],
    sums: [*const i32; 4],
    nb: usize,
) -> [[f32; ROWS]; 4] {
    four_body(
        g,
        ys,
        sums,
        nb,
        (GROUP_BLOCK, 8),
        |c, j| q4_codes(c, j),
        |acc, lo, ylo, hi, yhi| _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc, lo, ylo), hi, yhi),
        |acc| acc,
    )
}

/// Blocks a pass of `four_lanes_body` takes at once.
const LANE_SPAN: usize = 16;

/// Four tokens' `one_body`, each token's lanes exactly as alone (the same
/// fused multiply-adds in the same block order, so the same bits as the
/// one-token path), the weights' values unpacked once for the four. A pass
/// over a span of blocks takes one byte column (two lanes of each token) at
/// a time, so that eight accumulators rather than thirty-two stay in
/// registers.
#[inline(always)]
unsafe fn four_lanes_body(
    g: *const u8,
    ys: [*const u8; 4],
    nb: usize,
    column: usize,
    values: impl Fn(*const u8, usize) -> (__m256i, __m256i),
    sums: impl Fn(__m256i, __m256i) -> __m256i,
) -> [[f32; ROWS]; 4] {
    let lane_sums = |w: __m256i, y: __m256i| sums(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
    let table = f16_table();
    let mut acc = [[_mm256_setzero_ps(); 8]; 4];
    let mut d = [[_mm256_setzero_ps(); LANE_SPAN]; 4];
    for s0 in (0..nb).step_by(LANE_SPAN) {
        let s1 = (s0 + LANE_SPAN).min(nb);
        for b in s0..s1 {
            let col = g.add(b * column);
            prefetch_ahead::<3>(col);
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
            for t in 0..4 {
                d[t][b - s0] =
                    _mm256_mul_ps(dw, _mm256_set1_ps(f16_at(table, ys[t].add(b * ACT_BLOCK))));
            }
        }
        for j in 0..4 {
            let mut a: [[__m256; 2]; 4] = std::array::from_fn(|t| [acc[t][j], acc[t][j + 4]]);
            for b in s0..s1 {
                let (lo, hi) = values(g.add(b * column), j);
                for t in 0..4 {
                    let yb = ys[t].add(b * ACT_BLOCK);
                    let db = d[t][b - s0];
                    let sl = lane_sums(lo, broadcast4(yb.add(2 + 4 * j)));
                    a[t][0] = _mm256_fmadd_ps(db, _mm256_cvtepi32_ps(sl), a[t][0]);
                    let sh = lane_sums(hi, broadcast4(yb.add(18 + 4 * j)));
                    a[t][1] = _mm256_fmadd_ps(db, _mm256_cvtepi32_ps(sh), a[t][1]);
                }
            }
            for t in 0..4 {
                [acc[t][j], acc[t][j + 4]] = a[t];
            }
        }
    }
    store_four(acc)
}

/// ggml's `mul_sum_i8_pairs_float` on eight rows at once: lane r is the
/// exact sum of row r's four values times the four broadcast activations
/// (`sums` of unsigned magnitudes and signed activations).
#[inline(always)]
unsafe fn one_body(
    g: *const u8,
    y: *const u8,
    nb: usize,
    column: usize,
    values: impl Fn(*const u8, usize) -> (__m256i, __m256i),
    sums: impl Fn(__m256i, __m256i) -> __m256i,
) -> [f32; ROWS] {
    let lane_sums = |w: __m256i, y: __m256i| sums(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); 8];
    for b in 0..nb {
        let col = g.add(b * column);
        prefetch_ahead::<3>(col);
        let yb = y.add(b * ACT_BLOCK);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        let d = _mm256_mul_ps(dw, _mm256_set1_ps(f16_at(table, yb)));
        for j in 0..4 {
            let (lo, hi) = values(col, j);
            let s = lane_sums(lo, broadcast4(yb.add(2 + 4 * j)));
            acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[j]);
            let s = lane_sums(hi, broadcast4(yb.add(18 + 4 * j)));
            acc[j + 4] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[j + 4]);
        }
    }
    // hsum_float_8's order, lane l of a row being register l here.
    store(reduce(acc))
}

/// A block's 32 products per row and token summed exactly in integers
/// (`step` over the block's four byte columns of unsigned `codes`, `finish`
/// to i32 lanes), the offset's share taken off as offset·Σy, then one fused
/// multiply-add. `layout`: a block column's bytes and the codes' offset.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn four_body(
    g: *const u8,
    ys: [*const u8; 4],
    sums: [*const i32; 4],
    nb: usize,
    layout: (usize, i32),
    codes: impl Fn(*const u8, usize) -> (__m256i, __m256i),
    step: impl Fn(__m256i, __m256i, __m256i, __m256i, __m256i) -> __m256i,
    finish: impl Fn(__m256i) -> __m256i,
) -> [[f32; ROWS]; 4] {
    let (column, offset) = layout;
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); 4];
    for b in 0..nb {
        let col = g.add(b * column);
        prefetch_ahead::<3>(col);
        let mut isum = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let (lo, hi) = codes(col, j);
            for t in 0..4 {
                let yb = ys[t].add(b * ACT_BLOCK);
                isum[t] = step(
                    isum[t],
                    lo,
                    broadcast4(yb.add(2 + 4 * j)),
                    hi,
                    broadcast4(yb.add(18 + 4 * j)),
                );
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        for t in 0..4 {
            let yb = ys[t].add(b * ACT_BLOCK);
            let off = _mm256_set1_epi32(offset * *sums[t].add(b));
            let s = _mm256_sub_epi32(finish(isum[t]), off);
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(f16_at(table, yb)));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    let mut out = [[0f32; ROWS]; 4];
    for t in 0..4 {
        _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
    }
    out
}

/// `one` for IQ4_NL groups.
pub fn one_nl(group: &[u8], act: &[u8], _side: &[i32]) -> [f32; ROWS] {
    let nb = group.len() / GROUP_BLOCK;
    assert!(act.len() >= nb * ACT_BLOCK, "activation row too short");
    // SAFETY: as in `one`.
    unsafe { one_nl_avx2(group.as_ptr(), act.as_ptr(), nb) }
}

/// `four` for IQ4_NL groups (no offset: the table's values are signed).
pub fn four_nl(group: &[u8], acts: [&[u8]; 4], sums: [&[i32]; 4]) -> [[f32; ROWS]; 4] {
    let (g, ys, _, nb) = four_args(group, GROUP_BLOCK, acts, sums);
    // SAFETY: as in `one`.
    unsafe { four_nl_avx2(g, ys, nb) }
}

/// `one_nl` with `vpdpbusd`.
pub fn one_nl_vnni(group: &[u8], act: &[u8], _side: &[i32]) -> [f32; ROWS] {
    let nb = group.len() / GROUP_BLOCK;
    assert!(act.len() >= nb * ACT_BLOCK, "activation row too short");
    // SAFETY: chosen only where the CPU has AVX-512 VNNI with VL and BW.
    unsafe { one_nl_vnni_impl(group.as_ptr(), act.as_ptr(), nb) }
}

/// `four_nl` with `vpdpbusd`, on the values offset by 128 (unsigned, so no
/// sign moves a token) less 128·Σy: the same integers.
pub fn four_nl_vnni(group: &[u8], acts: [&[u8]; 4], sums: [&[i32]; 4]) -> [[f32; ROWS]; 4] {
    let (g, ys, ss, nb) = four_args(group, GROUP_BLOCK, acts, sums);
    // SAFETY: chosen only where the CPU has AVX-512 VNNI with VL and BW.
    unsafe { four_nl_vnni_impl(g, ys, ss, nb) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_nl_avx2(g: *const u8, y: *const u8, nb: usize) -> [f32; ROWS] {
    one_nl_body(g, y, nb, |ax, sy| sums_avx2(ax, sy))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn one_nl_vnni_impl(g: *const u8, y: *const u8, nb: usize) -> [f32; ROWS] {
    one_nl_body(g, y, nb, |ax, sy| sums_vnni(ax, sy))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn four_nl_avx2(g: *const u8, ys: [*const u8; 4], nb: usize) -> [[f32; ROWS]; 4] {
    four_nl_body(g, ys, nb, |acc, ax, sy| {
        _mm256_add_epi32(acc, sums_avx2(ax, sy))
    })
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn four_nl_vnni_impl(
    g: *const u8,
    ys: [*const u8; 4],
    sums: [*const i32; 4],
    nb: usize,
) -> [[f32; ROWS]; 4] {
    four_body(
        g,
        ys,
        sums,
        nb,
        (GROUP_BLOCK, 128),
        |c, j| {
            let (lo, hi) = nl_values(c, j);
            let flip = _mm256_set1_epi8(-128);
            (_mm256_xor_si256(lo, flip), _mm256_xor_si256(hi, flip))
        },
        |acc, lo, ylo, hi, yhi| _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc, lo, ylo), hi, yhi),
        |acc| acc,
    )
}

/// The IQ4_NL values of a group's byte column: low nibbles' and high
/// nibbles' table values.
#[inline(always)]
unsafe fn nl_values(col: *const u8, j: usize) -> (__m256i, __m256i) {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(
        crate::blocks::iquants::KVALUES_IQ4NL.as_ptr() as *const __m128i,
    ));
    let m4 = _mm256_set1_epi8(0x0f);
    let v = _mm256_loadu_si256(col.add(16 + 32 * j) as *const __m256i);
    (
        _mm256_shuffle_epi8(table, _mm256_and_si256(v, m4)),
        _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)),
    )
}

/// Blocks a pass of `one_nl_body` takes at once (even: block parity is
/// kept).
const SPAN: usize = 16;

/// ggml's AVX2 IQ4_NL dot on eight rows at once: even and odd blocks in two
/// sets of lanes, added lane by lane before `hsum_float_8`'s reduction, a
/// last odd block's whole sum added after it. A pass over a span of blocks
/// takes one byte column at a time (four lane sets in registers, not
/// sixteen); each lane still sees its blocks in order.
#[inline(always)]
unsafe fn one_nl_body(
    g: *const u8,
    y: *const u8,
    nb: usize,
    sums: impl Fn(__m256i, __m256i) -> __m256i,
) -> [f32; ROWS] {
    let lane_sums = |w: __m256i, y: __m256i| sums(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
    let table = f16_table();
    let paired = nb / 2 * 2;
    // [parity][lane]
    let mut acc = [[_mm256_setzero_ps(); 8]; 2];
    let mut d = [_mm256_setzero_ps(); SPAN];
    for s0 in (0..paired).step_by(SPAN) {
        let s1 = (s0 + SPAN).min(paired);
        for b in s0..s1 {
            let col = g.add(b * GROUP_BLOCK);
            prefetch_ahead::<3>(col);
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
            d[b - s0] = _mm256_mul_ps(_mm256_set1_ps(f16_at(table, y.add(b * ACT_BLOCK))), dw);
        }
        for j in 0..4 {
            let mut a = [acc[0][j], acc[0][j + 4], acc[1][j], acc[1][j + 4]];
            for b in s0..s1 {
                let (lo, hi) = nl_values(g.add(b * GROUP_BLOCK), j);
                let yb = y.add(b * ACT_BLOCK);
                let p = 2 * (b % 2);
                let db = d[b - s0];
                a[p] = _mm256_fmadd_ps(
                    db,
                    _mm256_cvtepi32_ps(lane_sums(lo, broadcast4(yb.add(2 + 4 * j)))),
                    a[p],
                );
                let s = lane_sums(hi, broadcast4(yb.add(18 + 4 * j)));
                a[p + 1] = _mm256_fmadd_ps(db, _mm256_cvtepi32_ps(s), a[p + 1]);
            }
            [acc[0][j], acc[0][j + 4], acc[1][j], acc[1][j + 4]] = a;
        }
    }
    let x: [__m256; 8] = std::array::from_fn(|l| _mm256_add_ps(acc[0][l], acc[1][l]));
    let mut r = reduce(x);
    for b in paired..nb {
        let col = g.add(b * GROUP_BLOCK);
        let yb = y.add(b * ACT_BLOCK);
        let mut isum = _mm256_setzero_si256();
        for j in 0..4 {
            let (lo, hi) = nl_values(col, j);
            isum = _mm256_add_epi32(isum, lane_sums(lo, broadcast4(yb.add(2 + 4 * j))));
            isum = _mm256_add_epi32(isum, lane_sums(hi, broadcast4(yb.add(18 + 4 * j))));
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        let d = _mm256_mul_ps(_mm256_set1_ps(f16_at(table, yb)), dw);
        r = _mm256_add_ps(r, _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)));
    }
    store(r)
}

/// A block's 32 products per row and token summed exactly in i32 (`step`
/// takes the values' magnitudes and the activations with their signs),
/// then one fused multiply-add.
#[inline(always)]
unsafe fn four_nl_body(
    g: *const u8,
    ys: [*const u8; 4],
    nb: usize,
    step: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> [[f32; ROWS]; 4] {
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); 4];
    for b in 0..nb {
        let col = g.add(b * GROUP_BLOCK);
        prefetch_ahead::<3>(col);
        let mut isum = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let (lo, hi) = nl_values(col, j);
            let (alo, ahi) = (_mm256_sign_epi8(lo, lo), _mm256_sign_epi8(hi, hi));
            for t in 0..4 {
                let yb = ys[t].add(b * ACT_BLOCK);
                let ylo = _mm256_sign_epi8(broadcast4(yb.add(2 + 4 * j)), lo);
                let yhi = _mm256_sign_epi8(broadcast4(yb.add(18 + 4 * j)), hi);
                isum[t] = step(step(isum[t], alo, ylo), ahi, yhi);
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        for t in 0..4 {
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(f16_at(table, ys[t].add(b * ACT_BLOCK))));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum[t]), acc[t]);
        }
    }
    let mut out = [[0f32; ROWS]; 4];
    for t in 0..4 {
        _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
    }
    out
}

/// `one` for Q8_0 groups.
pub fn one_q8(group: &[u8], act: &[u8], _side: &[i32]) -> [f32; ROWS] {
    let nb = group.len() / Q8_COLUMN;
    assert!(act.len() >= nb * ACT_BLOCK, "activation row too short");
    // SAFETY: as in `one`.
    unsafe { one_q8_avx2(group.as_ptr(), act.as_ptr(), nb) }
}

/// `one_q8` with `vpdpbusd`.
pub fn one_q8_vnni(group: &[u8], act: &[u8], _side: &[i32]) -> [f32; ROWS] {
    let nb = group.len() / Q8_COLUMN;
    assert!(act.len() >= nb * ACT_BLOCK, "activation row too short");
    // SAFETY: chosen only where the CPU has AVX-512 VNNI with VL and BW.
    unsafe { one_q8_vnni_impl(group.as_ptr(), act.as_ptr(), nb) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn one_q8_vnni_impl(g: *const u8, y: *const u8, nb: usize) -> [f32; ROWS] {
    one_q8_body(g, y, nb, |ax, sy| sums_vnni(ax, sy))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_q8_avx2(g: *const u8, y: *const u8, nb: usize) -> [f32; ROWS] {
    one_q8_body(g, y, nb, |ax, sy| sums_avx2(ax, sy))
}

/// ggml's x86 Q8_0 dot on eight rows at once: one set of eight lanes (lane
/// l: values 4l..4l+4), reduced as `hsum_float_8` does.
#[inline(always)]
unsafe fn one_q8_body(
    g: *const u8,
    y: *const u8,
    nb: usize,
    sums: impl Fn(__m256i, __m256i) -> __m256i,
) -> [f32; ROWS] {
    let table = f16_table();
    let mut acc = [_mm256_setzero_ps(); 8];
    for b in 0..nb {
        let col = g.add(b * Q8_COLUMN);
        prefetch_ahead::<5>(col);
        let yb = y.add(b * ACT_BLOCK);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        let d = _mm256_mul_ps(dw, _mm256_set1_ps(f16_at(table, yb)));
        for (c, acc) in acc.iter_mut().enumerate() {
            let w = _mm256_loadu_si256(col.add(16 + 32 * c) as *const __m256i);
            let yc = broadcast4(yb.add(2 + 4 * c));
            let s = sums(_mm256_sign_epi8(w, w), _mm256_sign_epi8(yc, w));
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), *acc);
        }
    }
    store(reduce(acc))
}

/// IQ4_XS: a group's super-block column (the scales, the eight rows'
/// sub-block scales, each sub-block's 128 quant bytes) and a Q8_K
/// activation block.
const XS_COLUMN: usize = ROWS * 136;
const XS_ACT: usize = 292;

/// `one` for IQ4_XS groups (Q8_K activations).
pub fn one_xs(group: &[u8], act: &[u8], _side: &[i32]) -> [f32; ROWS] {
    let nb = group.len() / XS_COLUMN;
    assert!(act.len() >= nb * XS_ACT, "activation row too short");
    // SAFETY: as in `one`.
    unsafe { one_xs_avx2(group.as_ptr(), act.as_ptr(), nb) }
}

/// `four` for IQ4_XS groups: each token's lanes as `one_xs` takes them.
pub fn four_xs(group: &[u8], acts: [&[u8]; 4], _sums: [&[i32]; 4]) -> [[f32; ROWS]; 4] {
    let (ys, nb) = four_acts(group, XS_COLUMN, acts, XS_ACT);
    // SAFETY: as in `one`.
    unsafe { four_xs_avx2(group.as_ptr(), ys, nb) }
}

/// The eight rows' scales of sub-block `ib` (four low bits, two high bits,
/// less 32), each as a pair of i16 lanes for `madd`.
#[inline(always)]
unsafe fn xs_scales(col: *const u8, ib: usize) -> __m256i {
    let high = _mm256_cvtepu16_epi32(_mm_loadu_si128(col.add(16) as *const __m128i));
    let low = _mm256_loadu_si256(col.add(32) as *const __m256i);
    let low = _mm256_and_si256(
        _mm256_srl_epi32(low, _mm_cvtsi32_si128(4 * ib as i32)),
        _mm256_set1_epi32(0x0f),
    );
    let high = _mm256_and_si256(
        _mm256_srl_epi32(high, _mm_cvtsi32_si128(2 * ib as i32)),
        _mm256_set1_epi32(3),
    );
    let ls = _mm256_sub_epi32(
        _mm256_or_si256(low, _mm256_slli_epi32::<4>(high)),
        _mm256_set1_epi32(32),
    );
    _mm256_or_si256(
        _mm256_and_si256(ls, _mm256_set1_epi32(0xffff)),
        _mm256_slli_epi32::<16>(ls),
    )
}

/// Row lanes' sums of four values times four activations, times the rows'
/// sub-block scales: `madd` of ggml's `mul_add_epi8` pairs by the scale.
#[inline(always)]
unsafe fn xs_scaled(v: __m256i, y: __m256i, ls: __m256i) -> __m256i {
    _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(y, v)),
        ls,
    )
}

/// ggml's AVX2 IQ4_XS dot on eight rows at once: lane l of a row sums
/// values 4l..4l+4 of every sub-block times its scale in integers over the
/// super-block, then one fused multiply-add a super-block; reduced as
/// `hsum_float_8` does.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_xs_avx2(g: *const u8, y: *const u8, nb: usize) -> [f32; ROWS] {
    let mut acc = [_mm256_setzero_ps(); 8];
    for b in 0..nb {
        let col = g.add(b * XS_COLUMN);
        prefetch_ahead::<17>(col);
        let yb = y.add(b * XS_ACT);
        let mut lanes = [_mm256_setzero_si256(); 8];
        for ib in 0..8 {
            let ls = xs_scales(col, ib);
            for j in 0..4 {
                let (lo, hi) = nl_values(col.add(48 + 128 * ib), j);
                let ys = yb.add(4 + 32 * ib + 4 * j);
                lanes[j] = _mm256_add_epi32(lanes[j], xs_scaled(lo, broadcast4(ys), ls));
                lanes[j + 4] =
                    _mm256_add_epi32(lanes[j + 4], xs_scaled(hi, broadcast4(ys.add(16)), ls));
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        let d = _mm256_mul_ps(dw, _mm256_set1_ps((yb as *const f32).read_unaligned()));
        for l in 0..8 {
            acc[l] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes[l]), acc[l]);
        }
    }
    store(reduce(acc))
}

/// Four tokens' `one_xs_avx2`, each token's lanes exactly as alone (the
/// same integers, the same fused multiply-add a super-block and lane), the
/// values looked up once for the four; one byte column (two lanes of each
/// token) at a time, so that eight integer sums stay in registers.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn four_xs_avx2(g: *const u8, ys: [*const u8; 4], nb: usize) -> [[f32; ROWS]; 4] {
    let mut acc = [[_mm256_setzero_ps(); 8]; 4];
    for b in 0..nb {
        let col = g.add(b * XS_COLUMN);
        prefetch_ahead::<17>(col);
        let ls: [__m256i; 8] = std::array::from_fn(|ib| xs_scales(col, ib));
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        for j in 0..4 {
            let mut lanes = [[_mm256_setzero_si256(); 2]; 4];
            for (ib, &ls) in ls.iter().enumerate() {
                let (lo, hi) = nl_values(col.add(48 + 128 * ib), j);
                for (t, lanes) in lanes.iter_mut().enumerate() {
                    let y = ys[t].add(b * XS_ACT + 4 + 32 * ib + 4 * j);
                    lanes[0] = _mm256_add_epi32(lanes[0], xs_scaled(lo, broadcast4(y), ls));
                    lanes[1] = _mm256_add_epi32(lanes[1], xs_scaled(hi, broadcast4(y.add(16)), ls));
                }
            }
            for (t, lanes) in lanes.iter().enumerate() {
                let dy = (ys[t].add(b * XS_ACT) as *const f32).read_unaligned();
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(dy));
                acc[t][j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes[0]), acc[t][j]);
                acc[t][j + 4] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes[1]), acc[t][j + 4]);
            }
        }
    }
    store_four(acc)
}
