//! Q4_0, Q5_0, IQ4_NL, Q8_0 and IQ4_XS weights (blocks of a scale and 32
//! codes; IQ4_XS: super-blocks of eight such sub-blocks with 6-bit scales)
//! repacked at load eight rows at a time, so that one SIMD
//! register holds the same four values of eight rows and every lane's sum
//! belongs to one row: no horizontal sums, one scale multiply for eight
//! rows, and each activation value broadcast once for all eight.
//!
//! A group of eight rows is, block column by block column, 144 bytes: the
//! eight rows' f16 scales, then for j in 0..4 the eight rows' quant bytes
//! 4j..4j+4 (low nibbles: values 4j..4j+4 of the block; high nibbles:
//! values 16+4j..16+4j+4). Q5_0 puts the eight rows' 32-bit words of fifth
//! bits between the scales and the quant bytes; Q8_0's quant bytes are the
//! values 4j..4j+4 for j in 0..8; IQ4_XS puts the eight rows' high scale
//! bits (16-bit words) and low scale nibbles (32-bit words) after the
//! scales, then each sub-block's 128 bytes as a Q4_0 column's. As many
//! bytes as the eight rows' blocks.
//!
//! Two products read it:
//! - `one`, for a single token, is ggml's x86 one-token dot to the bit: its
//!   eight float lanes per row (lane l: the exact integer sum over values
//!   4l..4l+4, fused-multiply-added with the block's scale) are here eight
//!   registers whose lanes are rows, reduced as `hsum_float_8` does (IQ4_NL:
//!   even and odd blocks in two sets of lanes, added before the reduction,
//!   an odd last block's whole sum added after it, as ggml's AVX2 dot does).
//! - `four`, for four tokens of a prompt batch: for Q4_0 and IQ4_NL it sums
//!   a whole block's products exactly in integers and takes one fused
//!   multiply-add a block per row and token, as llama.cpp's repacked batch
//!   path does (a different order from the one-token path; see the
//!   exact-reference test); Q5_0, Q8_0 and IQ4_XS keep each token's
//!   one-token lanes (`four_keeps_lanes`), sharing only the weights'
//!   unpacking: the integer order changed Gemma 3's greedy reply against
//!   llama.cpp's, whose batches of these types keep the one-token order too
//!   (with AVX-512, two lanes a 64-bit piece: `lane_pairs`).
//!
//! The SIMD kernels (`interleaved_x86`) are bit-identical to the portable
//! ones here, which are the reference they are tested against.

use crate::blocks::iquants::KVALUES_IQ4NL;
use crate::float16::f16_to_f32;
use crate::GgmlType;

use super::Isa;

/// Rows a group.
pub const ROWS: usize = 8;
/// Bytes of one block column of a group of `w`'s rows.
pub fn column_bytes(w: GgmlType) -> usize {
    ROWS * block_bytes(w)
}

fn block_bytes(w: GgmlType) -> usize {
    match w {
        GgmlType::Q8_0 => 34,
        GgmlType::Q5_0 => 22,
        GgmlType::IQ4_XS => 136,
        _ => 18,
    }
}

/// Values a block holds: 32, or IQ4_XS's super-block of 256.
pub fn block_elems(w: GgmlType) -> usize {
    match w {
        GgmlType::IQ4_XS => 256,
        _ => 32,
    }
}

/// Bytes of a block before its quant bytes: the scale, and Q5_0's fifth
/// bits or IQ4_XS's sub-block scales.
fn header_bytes(w: GgmlType) -> usize {
    match w {
        GgmlType::Q5_0 => 6,
        GgmlType::IQ4_XS => 8,
        _ => 2,
    }
}

/// Where a group's block column's quant bytes start.
fn quants_at(w: GgmlType) -> usize {
    ROWS * header_bytes(w)
}

/// Bytes of an activation block: Q8_0's, or Q8_K's (an f32 scale, 256
/// values, 16 sums) for IQ4_XS.
pub fn act_block_bytes(w: GgmlType) -> usize {
    match w {
        GgmlType::IQ4_XS => 292,
        _ => 34,
    }
}

/// A block column's pieces: each row's `len` bytes from `src` in its
/// block go to `dst + len * row` in the column.
fn pieces(w: GgmlType) -> Vec<(usize, usize, usize)> {
    let (head, at0) = (header_bytes(w), quants_at(w));
    let mut p = vec![(0, 2, 0)];
    match w {
        GgmlType::Q5_0 => p.push((2, 4, 16)),
        GgmlType::IQ4_XS => p.extend([(2, 2, 16), (4, 4, 32)]),
        _ => {}
    }
    let quads = (block_bytes(w) - head) / 4;
    // IQ4_XS's sub-blocks of 16 quant bytes each take 128 bytes of the column.
    p.extend((0..quads).map(|q| (head + 4 * q, 4, at0 + 128 * (q / 4) + 32 * (q % 4))));
    if w == GgmlType::Q8_0 {
        p.truncate(1);
        p.extend((0..quads).map(|q| (head + 4 * q, 4, at0 + 32 * q)));
    }
    p
}

/// One token's products with a group: the group, the activation row and
/// its side data (`Kernels::one_side`).
pub type OneFn = fn(&[u8], &[u8], &[i32]) -> [f32; ROWS];

/// Four tokens' products with a group: the group, the four activation
/// rows and their side data (`Side`).
pub type FourFn = fn(&[u8], [&[u8]; 4], [&[i32]; 4]) -> [[f32; ROWS]; 4];

/// What a four-token kernel reads beside each activation row, made once a
/// product for every token rather than once a group.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// Nothing.
    None,
    /// Each block's value sum (`block_sums`): the offset of Q4_0's codes
    /// and of IQ4_NL's VNNI values.
    BlockSums,
    /// `lane_pairs` with the weights' code offset: the AVX-512 kernels that
    /// keep ggml's eight lanes two to a 64-bit piece of a register.
    LanePairs(i32),
}

impl Side {
    /// i32 values a block.
    pub fn per_block(self) -> usize {
        match self {
            Side::None => 0,
            Side::BlockSums => 1,
            Side::LanePairs(_) => LANE_PAIRS,
        }
    }

    /// One activation row's side data into `out` (`per_block` a block).
    pub fn fill(self, act: &[u8], out: &mut [i32]) {
        match self {
            Side::None => {}
            Side::BlockSums => block_sums(act, out),
            Side::LanePairs(offset) => lane_pairs(act, offset, out),
        }
    }
}

/// Kernels over one group of eight rows (`nb` block columns); results are
/// the eight rows' products in row order.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// One Q8_0 activation row, ggml's one-token order.
    pub one: OneFn,
    /// What `one` reads beside the activations.
    pub one_side: Side,
    /// Four activation rows with their `side` data; None: batches take
    /// `one` token by token.
    pub four: Option<FourFn>,
    /// What `four` reads beside the activations.
    pub side: Side,
    /// Bytes of an activation block (`act_block_bytes`).
    pub act_block: usize,
    /// Bytes of a group's block column.
    pub column: usize,
}

/// Whether weights of type `w` are repacked on `isa`: Q4_0 matrices whose
/// rows come in whole groups, where the one-token kernel reproduces ggml's
/// x86 order (the portable and NEON kernels follow other orders of ggml's).
pub fn kernels(w: GgmlType, isa: Isa, rows: usize) -> Option<Kernels> {
    if !matches!(
        w,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::IQ4_NL | GgmlType::Q8_0 | GgmlType::IQ4_XS
    ) || !rows.is_multiple_of(ROWS)
    {
        return None;
    }
    simd(w, isa)
}

#[cfg(target_arch = "x86_64")]
fn simd(w: GgmlType, isa: Isa) -> Option<Kernels> {
    use super::interleaved_x86 as x86;
    let vnni = isa == Isa::Avx512 && super::vnni();
    // Q5_0 and Q8_0 batches keep the one-token order (`four_keeps_lanes`);
    // with AVX-512 their lanes go two to a register's 64-bit piece, and so
    // do Q4_0's one-token kernel's (`lane_pairs`: SmolLM2 Q4_0 decode at one
    // thread 181 -> 198 t/s; Q5_0's and Q8_0's measured no faster). (An
    // AVX2 Q8_0 four-token kernel in `four_lanes_body`'s order measured
    // no faster than token by token: 248 t/s either way.)
    use Side::{BlockSums, LanePairs};
    let (one, one_side, four, side): (OneFn, Side, Option<FourFn>, Side) = match (w, isa) {
        (_, Isa::Scalar) => return None,
        (GgmlType::Q4_0, _) if vnni => (
            x86::one_q4_pairs,
            LanePairs(8),
            Some(x86::four_vnni),
            BlockSums,
        ),
        (GgmlType::Q4_0, _) => (x86::one, Side::None, Some(x86::four), BlockSums),
        (GgmlType::Q8_0, _) if vnni => (
            x86::one_q8_vnni,
            Side::None,
            Some(x86::four_q8_pairs),
            LanePairs(128),
        ),
        (GgmlType::Q8_0, _) => (x86::one_q8, Side::None, None, Side::None),
        (GgmlType::Q5_0, _) if vnni => (
            x86::one_q5_vnni,
            Side::None,
            Some(x86::four_q5_pairs),
            LanePairs(16),
        ),
        (GgmlType::Q5_0, _) => (x86::one_q5, Side::None, Some(x86::four_q5), Side::None),
        (GgmlType::IQ4_XS, _) => (x86::one_xs, Side::None, Some(x86::four_xs), Side::None),
        (_, _) if vnni => (
            x86::one_nl_vnni,
            Side::None,
            Some(x86::four_nl_vnni),
            BlockSums,
        ),
        (_, _) => (x86::one_nl, Side::None, Some(x86::four_nl), BlockSums),
    };
    Some(Kernels {
        one,
        one_side,
        four,
        side,
        column: column_bytes(w),
        act_block: act_block_bytes(w),
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn simd(_: GgmlType, _: Isa) -> Option<Kernels> {
    None
}

/// Rows of `w` (`rows` a multiple of 8, `nb` blocks each) regrouped: the
/// eight scales, Q5_0's eight words of fifth bits, then quant bytes
/// 4j..4j+4 of the eight rows for each j.
pub fn pack(w: GgmlType, src: &[u8], rows: usize, nb: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    pack_streaming(w, src, rows, nb, &mut out, &mut |_| {});
    out
}

/// `pack` into `out` (as long as `src`), telling `done` after each group
/// how many of `src`'s bytes it has read (they are read once, in order): a
/// caller may let them go while the copy grows, so the two are never both
/// whole in memory.
pub fn pack_streaming(
    w: GgmlType,
    src: &[u8],
    rows: usize,
    nb: usize,
    out: &mut [u8],
    done: &mut dyn FnMut(usize),
) {
    let bb = block_bytes(w);
    let column = column_bytes(w);
    let pieces = pieces(w);
    assert!(rows.is_multiple_of(ROWS) && src.len() == rows * nb * bb && out.len() == src.len());
    for (g, dst) in out.chunks_exact_mut(nb * column).enumerate() {
        for (b, col) in dst.chunks_exact_mut(column).enumerate() {
            for r in 0..ROWS {
                let at = ((g * ROWS + r) * nb + b) * bb;
                let block = &src[at..at + bb];
                for &(from, len, to) in &pieces {
                    col[to + len * r..to + len * (r + 1)].copy_from_slice(&block[from..from + len]);
                }
            }
        }
        done((g + 1) * ROWS * nb * bb);
    }
}

/// Each Q8_0 activation block's value sum (the correction for the codes'
/// offset in `four`), one i32 a block.
pub fn block_sums(act: &[u8], out: &mut [i32]) {
    for (s, b) in out.iter_mut().zip(act.chunks_exact(34)) {
        *s = b[2..].iter().map(|&v| v as i8 as i32).sum();
    }
}

/// i32 values a Q8_0 activation block's `lane_pairs` take.
pub const LANE_PAIRS: usize = 16;

/// A Q8_0 activation row's blocks for kernels whose registers hold lanes
/// p and p+4 of ggml's eight (lane l: values 4l..4l+4) side by side in
/// each 64-bit piece, p in 0..4: per block the four pairs of the lanes'
/// four activation bytes, then the four pairs of their sums times
/// -`offset` (the weights' codes are their values plus `offset`, so
/// starting a lane's integer sum there gives the values' exact sum).
pub fn lane_pairs(act: &[u8], offset: i32, out: &mut [i32]) {
    for (o, b) in out.chunks_exact_mut(LANE_PAIRS).zip(act.chunks_exact(34)) {
        let lane = |l: usize| &b[2 + 4 * l..6 + 4 * l];
        for p in 0..4 {
            for (i, l) in [p, p + 4].into_iter().enumerate() {
                o[2 * p + i] = i32::from_le_bytes(lane(l).try_into().unwrap());
                o[8 + 2 * p + i] = -offset * lane(l).iter().map(|&v| v as i8 as i32).sum::<i32>();
            }
        }
    }
}

/// Value `k` (0..block_elems) of row `r`'s block in a group's block
/// column, as ggml reads it (Q4_0: code - 8; Q5_0: code and fifth bit - 16;
/// IQ4_NL and IQ4_XS: the table's value for the code, IQ4_XS's sub-block
/// scale apart; Q8_0: the byte).
fn value(w: GgmlType, col: &[u8], r: usize, k: usize) -> i32 {
    let at0 = quants_at(w) + 128 * (k / 32);
    let k = k % 32;
    if w == GgmlType::Q8_0 {
        return col[at0 + 32 * (k / 4) + 4 * r + k % 4] as i8 as i32;
    }
    let (j, hi) = ((k % 16) / 4, k >= 16);
    let byte = col[at0 + 32 * j + 4 * r + k % 4];
    let code = if hi { byte >> 4 } else { byte & 15 };
    match w {
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => KVALUES_IQ4NL[code as usize] as i32,
        GgmlType::Q5_0 => {
            let qh = u32::from_le_bytes(col[16 + 4 * r..20 + 4 * r].try_into().unwrap());
            (code as i32 | (((qh >> k) & 1) << 4) as i32) - 16
        }
        _ => code as i32 - 8,
    }
}

/// The integer scale of value `k`'s sub-block: IQ4_XS's, four low bits and
/// two high bits less 32 (ggml's); 1 for the others.
fn sub_scale(w: GgmlType, col: &[u8], r: usize, k: usize) -> i32 {
    if w != GgmlType::IQ4_XS {
        return 1;
    }
    let ib = k / 32;
    let high = u16::from_le_bytes([col[16 + 2 * r], col[17 + 2 * r]]) >> (2 * ib) & 3;
    let low = col[32 + 4 * r + ib / 2] >> (4 * (ib % 2)) & 0x0f;
    (low as i32 | (high as i32) << 4) - 32
}

/// A weight value times an activation as ggml's x86 kernels form it: the
/// value's magnitude times the activation with the value's sign moved on
/// (`vpsignb`, which wraps an activation of -128 where the value is
/// negative; Q8_K activations may be -128).
fn product(v: i32, y: i32) -> i32 {
    let sy = match v.signum() {
        -1 => (y as i8).wrapping_neg() as i32,
        0 => 0,
        _ => y,
    };
    v.abs() * sy
}

/// Row `r`'s integer sum over the block's values `ks` against activation block `a`.
fn int_sum(w: GgmlType, col: &[u8], r: usize, a: &[u8], ks: impl Iterator<Item = usize>) -> i32 {
    // Past the activation block's scale: Q8_K's f32, Q8_0's f16.
    let at = if w == GgmlType::IQ4_XS { 4 } else { 2 };
    ks.map(|k| sub_scale(w, col, r, k) * product(value(w, col, r, k), a[at + k] as i8 as i32))
        .sum()
}

fn scale(col: &[u8], r: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([col[2 * r], col[2 * r + 1]]))
}

/// An activation block's scale: Q8_0's f16, Q8_K's f32.
fn act_scale(w: GgmlType, a: &[u8]) -> f32 {
    match w {
        GgmlType::IQ4_XS => f32::from_le_bytes([a[0], a[1], a[2], a[3]]),
        _ => f16_to_f32(u16::from_le_bytes([a[0], a[1]])),
    }
}

/// The portable form of `Kernels::one` for weights of type `w`.
pub fn one_portable(w: GgmlType, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    let column = column_bytes(w);
    let nb = group.len() / column;
    // IQ4_NL: blocks alternate between two sets of lanes, the last of an
    // odd count is summed whole after the reduction.
    let (sets, paired) = match w {
        GgmlType::IQ4_NL => (2, nb / 2 * 2),
        _ => (1, nb),
    };
    let mut lanes = [[[0f32; 8]; ROWS]; 2];
    let be = block_elems(w);
    let cols = group
        .chunks_exact(column)
        .zip(act.chunks_exact(act_block_bytes(w)));
    for (b, (col, a)) in cols.clone().take(paired).enumerate() {
        for (r, lanes) in lanes[b % sets].iter_mut().enumerate() {
            let d = scale(col, r) * act_scale(w, a);
            // Lane l: values 4l..4l+4 of every 32 (of every sub-block).
            for (l, lane) in lanes.iter_mut().enumerate() {
                let sum = int_sum(w, col, r, a, (0..be).filter(|k| (k % 32) / 4 == l));
                *lane = d.mul_add(sum as f32, *lane);
            }
        }
    }
    std::array::from_fn(|r| {
        let x: [f32; 8] = std::array::from_fn(|l| lanes[0][r][l] + lanes[1][r][l]);
        let mut s = ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
        for (col, a) in cols.clone().skip(paired) {
            s += act_scale(w, a) * scale(col, r) * int_sum(w, col, r, a, 0..be) as f32;
        }
        s
    })
}

/// Whether `w`'s four-token kernel keeps the one-token order (each token
/// as `one` takes it) rather than summing a block in one integer.
fn four_keeps_lanes(w: GgmlType) -> bool {
    matches!(w, GgmlType::Q5_0 | GgmlType::IQ4_XS | GgmlType::Q8_0)
}

/// The portable form of `Kernels::four` for weights of type `w`.
pub fn four_portable(
    w: GgmlType,
    group: &[u8],
    acts: [&[u8]; 4],
    _sums: [&[i32]; 4],
) -> [[f32; ROWS]; 4] {
    if four_keeps_lanes(w) {
        return acts.map(|act| one_portable(w, group, act));
    }
    acts.map(|act| {
        let mut acc = [0f32; ROWS];
        for (col, a) in group
            .chunks_exact(column_bytes(w))
            .zip(act.chunks_exact(act_block_bytes(w)))
        {
            for (r, acc) in acc.iter_mut().enumerate() {
                let d = scale(col, r) * act_scale(w, a);
                let sum = int_sum(w, col, r, a, 0..block_elems(w));
                *acc = d.mul_add(sum as f32, *acc);
            }
        }
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{kernels_for, quantizer};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// Random blocks of `ty`; Q8_0's values within ±127, as ggml
    /// quantises them.
    fn random_blocks(ty: GgmlType, rng: &mut Rng, rows: usize, nb: usize) -> Vec<u8> {
        let bb = block_bytes(ty);
        let mut w = vec![0u8; rows * nb * bb];
        for b in w.chunks_exact_mut(bb) {
            let d = crate::float16::f32_to_f16(rng.f32() * 0.02);
            b[..2].copy_from_slice(&d.to_le_bytes());
            b[2..].iter_mut().for_each(|q| {
                *q = match ty {
                    GgmlType::Q8_0 => ((rng.next() % 255) as i32 - 127) as i8 as u8,
                    _ => rng.next() as u8,
                }
            });
        }
        w
    }

    /// `nb` blocks of `ty`'s activations (Q8_0, or Q8_K for IQ4_XS).
    fn random_act(ty: GgmlType, rng: &mut Rng, nb: usize, isa: Isa) -> Vec<u8> {
        let x: Vec<f32> = (0..nb * block_elems(ty))
            .map(|i| rng.f32() * if i % 17 == 0 { 8.0 } else { 1.0 })
            .collect();
        let mut a = vec![0u8; nb * act_block_bytes(ty)];
        let act = match ty {
            GgmlType::IQ4_XS => GgmlType::Q8_K,
            _ => GgmlType::Q8_0,
        };
        quantizer(act, isa).unwrap()(&x, &mut a);
        a
    }

    /// Every regrouped type on each of this machine's ISAs that has kernels.
    fn cases() -> Vec<(GgmlType, Isa, Kernels)> {
        let types = [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::IQ4_NL,
            GgmlType::Q8_0,
            GgmlType::IQ4_XS,
        ];
        let isas = Isa::available();
        #[cfg(target_arch = "x86_64")]
        if isas.contains(&Isa::Avx2) {
            assert!(kernels(GgmlType::IQ4_NL, Isa::Avx2, ROWS).is_some());
        }
        types
            .into_iter()
            .flat_map(|w| {
                isas.iter()
                    .filter_map(move |&isa| Some((w, isa, kernels(w, isa, ROWS)?)))
            })
            .collect()
    }

    #[test]
    fn pack_keeps_every_value_and_scale() {
        let mut rng = Rng(7);
        let (rows, nb) = (16, 5);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::IQ4_NL,
            GgmlType::Q8_0,
            GgmlType::IQ4_XS,
        ] {
            let (bb, column) = (block_bytes(ty), column_bytes(ty));
            let w = random_blocks(ty, &mut rng, rows, nb);
            let p = pack(ty, &w, rows, nb);
            let mut want = vec![0f32; block_elems(ty)];
            let mut got = vec![0f32; block_elems(ty)];
            for r in 0..rows {
                for b in 0..nb {
                    let src = &w[(r * nb + b) * bb..][..bb];
                    let col = &p[((r / ROWS) * nb + b) * column..][..column];
                    crate::blocks::dequantize(ty, src, &mut want).unwrap();
                    let d = scale(col, r % 8);
                    for (k, g) in got.iter_mut().enumerate() {
                        let (r, s) = (r % 8, sub_scale(ty, col, r % 8, k));
                        *g = d * (s * value(ty, col, r, k)) as f32;
                    }
                    assert_eq!(got, want, "{ty} row {r} block {b}");
                }
            }
        }
    }

    /// The one-token product is ggml's x86 one-token dot to the bit: equal
    /// to the row kernels that the oracle tests hold to llama.cpp.
    #[test]
    fn one_token_equals_the_row_kernels() {
        let mut rng = Rng(11);
        for (ty, isa, k) in cases() {
            let dot = kernels_for(ty, isa).unwrap().dot;
            for nb in [1, 2, 3, 18, 67, 128] {
                let w = random_blocks(ty, &mut rng, 2 * ROWS, nb);
                let p = pack(ty, &w, 2 * ROWS, nb);
                let (bb, column) = (block_bytes(ty), column_bytes(ty));
                let a = random_act(ty, &mut rng, nb, isa);
                let mut side = vec![0; nb * k.one_side.per_block()];
                k.one_side.fill(&a, &mut side);
                for g in 0..2 {
                    let group = &p[g * nb * column..][..nb * column];
                    let got = (k.one)(group, &a, &side);
                    let portable = one_portable(ty, group, &a);
                    for r in 0..ROWS {
                        let row = &w[(g * ROWS + r) * nb * bb..][..nb * bb];
                        let want = dot(row, &a);
                        assert_eq!(
                            got[r].to_bits(),
                            want.to_bits(),
                            "{ty} {isa:?} nb {nb} row {r}"
                        );
                        assert_eq!(
                            portable[r].to_bits(),
                            want.to_bits(),
                            "{ty} portable nb {nb}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn four_tokens_equal_the_portable_kernel() {
        let mut rng = Rng(13);
        for (ty, isa, k) in cases() {
            for nb in [1, 2, 18, 67, 128] {
                let w = random_blocks(ty, &mut rng, ROWS, nb);
                let p = pack(ty, &w, ROWS, nb);
                let bb = block_bytes(ty);
                let acts: Vec<Vec<u8>> =
                    (0..4).map(|_| random_act(ty, &mut rng, nb, isa)).collect();
                let sums: Vec<Vec<i32>> = acts
                    .iter()
                    .map(|a| {
                        let mut s = vec![0; nb * k.side.per_block()];
                        k.side.fill(a, &mut s);
                        s
                    })
                    .collect();
                let a = std::array::from_fn(|t| &acts[t][..]);
                let s = std::array::from_fn(|t| &sums[t][..]);
                let Some(four) = k.four else { continue };
                let got = four(&p, a, s);
                let want = four_portable(ty, &p, a, s);
                for t in 0..4 {
                    for r in 0..ROWS {
                        assert_eq!(
                            got[t][r].to_bits(),
                            want[t][r].to_bits(),
                            "{ty} {isa:?} nb {nb}"
                        );
                        // Another order of the same sums: close to the row kernel.
                        let row = &w[r * nb * bb..][..nb * bb];
                        let one = kernels_for(ty, isa).unwrap().dot;
                        let exact = one(row, &acts[t]);
                        // Within float rounding of the products' magnitudes (the
                        // sum may cancel far below them).
                        let size: f32 = p
                            .chunks_exact(column_bytes(ty))
                            .zip(acts[t].chunks_exact(act_block_bytes(ty)))
                            .map(|(col, a)| {
                                let m: i32 = (0..block_elems(ty))
                                    .map(|k| int_sum(ty, col, r, a, k..k + 1).abs())
                                    .sum();
                                (scale(col, r) * act_scale(ty, a)).abs() * m as f32
                            })
                            .sum();
                        assert!(
                            (got[t][r] - exact).abs() <= 1e-6 * (1e-6 + size),
                            "{ty} {isa:?} nb {nb}: {} vs {exact} (size {size})",
                            got[t][r]
                        );
                    }
                }
            }
        }
    }
}
