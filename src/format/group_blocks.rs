//! Group-quantised linear layers (GPTQ, AWQ, EXL2) re-encoded as ggml's
//! 32-element blocks without loss, so that they run on the kernels every
//! backend already has, at their own size.
//!
//! All three formats store a weight as `scale * (q - z)`: an f16 scale per
//! output and group of inputs, an integer code and an integer zero point.
//! When every 32 consecutive inputs lie in one group, `q - z` of a block is
//! a small signed integer with one f16 scale, which is exactly what Q4_0
//! (-8..7), Q5_0 (-16..15) and Q8_0 (-128..127) hold. Layers whose groups
//! are not in input order (GPTQ act-order, EXL2 always) are stored in group
//! order; the matrix then carries that order and the backend gathers its
//! input into it before the product. The f32 products of the kernels are the
//! exact `scale * (q - z)`; the libraries round it to f16 once more, which
//! the tests reproduce from the blocks bit for bit.

use ggml::blocks::legacy::{pack_q4_0, pack_q5_0, pack_q8_0};
use ggml::float16::f32_to_f16;
use ggml::GgmlType;

/// A group-quantised layer's integers, whatever the format.
pub trait GroupCodes {
    fn out_features(&self) -> usize;
    fn in_features(&self) -> usize;
    /// The input order in which the groups are contiguous: stored input
    /// `k` is original input `order[k]`. None when that is the identity.
    fn group_order(&self) -> Option<Vec<u32>>;
    /// Whether every 32 consecutive inputs (in group order) share a group.
    fn blocks_in_groups(&self, order: Option<&[u32]>) -> bool;
    /// The least and the greatest `q - z` the layer can hold.
    fn code_range(&self) -> (i32, i32);
    /// Outputs `o0..o0 + n`: `codes[j * in + k] = q - z` of output `o0 + j`
    /// at stored input `k`, and `scales[j * in / 32 + b]` the scale of its
    /// block `b`.
    fn tile(
        &self,
        order: Option<&[u32]>,
        o0: usize,
        n: usize,
        codes: &mut [i16],
        scales: &mut [f32],
    );
}

/// Fills `codes[j * k_in + k]` for outputs j < n from `column(k, col)`,
/// which writes input k's codes of the n outputs into `col`. Columns pass
/// through a buffer of 32 inputs so that each row of `codes` is written 64
/// bytes at a time: written straight in, a column's n stores land a row
/// apart, often a power of two bytes, and evict each other from the
/// first-level cache (that took most of a 7B GPTQ folder's load).
pub fn columns_into_rows(
    k_in: usize,
    n: usize,
    codes: &mut [i16],
    mut column: impl FnMut(usize, &mut [i16]),
) {
    let mut buf = vec![0i16; 32 * n];
    for k0 in (0..k_in).step_by(32) {
        let width = 32.min(k_in - k0);
        for (kk, col) in buf.chunks_exact_mut(n).take(width).enumerate() {
            column(k0 + kk, col);
        }
        for j in 0..n {
            let row = &mut codes[j * k_in + k0..][..width];
            for (kk, c) in row.iter_mut().enumerate() {
                *c = buf[kk * n + j];
            }
        }
    }
}

/// A layer as ggml blocks: `[out][in]` row-major in `ty`, inputs in
/// `input_order` (stored input k is original input `input_order[k]`).
pub struct Encoded {
    pub ty: GgmlType,
    pub bytes: Vec<u8>,
    pub input_order: Option<Vec<u32>>,
}

/// The smallest of Q4_0, Q5_0 and Q8_0 that holds every code of `l`, or
/// None when none does (8-bit codes with zero points, groups that split a
/// block, inputs not a multiple of 32): the caller then dequantises.
pub fn encode(l: &(dyn GroupCodes + Sync)) -> Option<Encoded> {
    let (cols, rows) = (l.in_features(), l.out_features());
    if cols % 32 != 0 || cols == 0 {
        return None;
    }
    let (lo, hi) = l.code_range();
    let (ty, offset, block) = if -8 <= lo && hi <= 7 {
        (GgmlType::Q4_0, 8, 18)
    } else if -16 <= lo && hi <= 15 {
        (GgmlType::Q5_0, 16, 22)
    } else if -128 <= lo && hi <= 127 {
        (GgmlType::Q8_0, 0, 34)
    } else {
        return None;
    };
    let order = l.group_order();
    if !l.blocks_in_groups(order.as_deref()) {
        return None;
    }
    let nb = cols / 32;
    let row_bytes = nb * block;
    let mut bytes = vec![0u8; rows * row_bytes];
    // Tiles of outputs (the formats pack neighbouring outputs together),
    // spread over the cores: a 7B model has 6.5e9 codes to move.
    const TILE: usize = 32;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = rows.div_ceil(TILE).div_ceil(threads) * TILE;
    std::thread::scope(|scope| {
        for (i, part) in bytes.chunks_mut(per_thread * row_bytes).enumerate() {
            let order = order.as_deref();
            scope.spawn(move || {
                let mut codes = vec![0i16; TILE * cols];
                let mut scales = vec![0f32; TILE * nb];
                for (k, tile) in part.chunks_mut(TILE * row_bytes).enumerate() {
                    let o0 = i * per_thread + k * TILE;
                    let n = tile.len() / row_bytes;
                    l.tile(order, o0, n, &mut codes, &mut scales);
                    for (j, row) in tile.chunks_exact_mut(row_bytes).enumerate() {
                        for (b, out) in row.chunks_exact_mut(block).enumerate() {
                            let c = &codes[j * cols + 32 * b..][..32];
                            let d = f32_to_f16(scales[j * nb + b]);
                            if ty == GgmlType::Q8_0 {
                                pack_q8_0(d, &std::array::from_fn(|i| c[i] as i8), out);
                            } else {
                                let levels = std::array::from_fn(|i| (c[i] + offset) as u8);
                                match ty {
                                    GgmlType::Q4_0 => pack_q4_0(d, &levels, out),
                                    _ => pack_q5_0(d, &levels, out),
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    Some(Encoded {
        ty,
        bytes,
        input_order: order,
    })
}

/// The order that sorts inputs by group, keeping their order within one;
/// None when they are sorted already.
pub fn sort_by_group(groups: &[u32]) -> Option<Vec<u32>> {
    if groups.windows(2).all(|w| w[0] <= w[1]) {
        return None;
    }
    let mut order: Vec<u32> = (0..groups.len() as u32).collect();
    order.sort_by_key(|&i| groups[i as usize]);
    Some(order)
}

/// Whether each run of 32 inputs, taken in `order`, has one group.
pub fn runs_of_32_share(groups: &[u32], order: Option<&[u32]>) -> bool {
    let at = |k: usize| groups[order.map_or(k, |o| o[k] as usize)];
    groups.len().is_multiple_of(32) && (0..groups.len()).all(|k| at(k) == at(k - k % 32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ggml::float16::f16_to_f32;

    /// A layer given by its dequantised values: groups of `g` inputs (in
    /// the order `perm`), codes `q - z` in `lo..=hi`.
    struct Synthetic {
        out: usize,
        inp: usize,
        group: Vec<u32>,
        codes: Vec<i16>,
        scales: Vec<f32>,
        range: (i32, i32),
    }

    impl GroupCodes for Synthetic {
        fn out_features(&self) -> usize {
            self.out
        }
        fn in_features(&self) -> usize {
            self.inp
        }
        fn group_order(&self) -> Option<Vec<u32>> {
            sort_by_group(&self.group)
        }
        fn blocks_in_groups(&self, order: Option<&[u32]>) -> bool {
            runs_of_32_share(&self.group, order)
        }
        fn code_range(&self) -> (i32, i32) {
            self.range
        }
        fn tile(&self, order: Option<&[u32]>, o0: usize, n: usize, c: &mut [i16], s: &mut [f32]) {
            for j in 0..n {
                for k in 0..self.inp {
                    let i = order.map_or(k, |o| o[k] as usize);
                    c[j * self.inp + k] = self.codes[(o0 + j) * self.inp + i];
                    if k % 32 == 0 {
                        let g = self.group[i] as usize;
                        s[j * self.inp / 32 + k / 32] = self.scales[(o0 + j) * 64 + g];
                    }
                }
            }
        }
    }

    fn synthetic(out: usize, inp: usize, range: (i32, i32), shuffled: bool) -> Synthetic {
        let mut rng = crate::model::synth::Rng::new(0x9e3779b97f4a7c15);
        let mut next = move || rng.next_u64();
        let mut group: Vec<u32> = (0..inp as u32).map(|i| i / 64).collect();
        if shuffled {
            for i in (1..inp).rev() {
                group.swap(i, next() as usize % (i + 1));
            }
        }
        let span = (range.1 - range.0 + 1) as u64;
        let codes = (0..out * inp)
            .map(|_| (range.0 + (next() % span) as i32) as i16)
            .collect();
        let scales = (0..out * 64)
            .map(|_| f16_to_f32(f32_to_f16((next() % 1000) as f32 * 1e-4 + 1e-3)))
            .collect();
        Synthetic {
            out,
            inp,
            group,
            codes,
            scales,
            range,
        }
    }

    fn value(l: &Synthetic, o: usize, i: usize) -> f32 {
        l.scales[o * 64 + l.group[i] as usize] * l.codes[o * l.inp + i] as f32
    }

    #[test]
    fn blocks_hold_every_code_and_scale_exactly() {
        for (range, ty) in [
            ((-8, 7), GgmlType::Q4_0),
            ((-4, 3), GgmlType::Q4_0),
            ((-15, 15), GgmlType::Q5_0),
            ((-128, 127), GgmlType::Q8_0),
        ] {
            for shuffled in [false, true] {
                let l = synthetic(40, 256, range, shuffled);
                let e = encode(&l).expect("representable");
                assert_eq!(e.ty, ty);
                assert_eq!(e.input_order.is_some(), shuffled);
                let mut got = vec![0f32; 40 * 256];
                ggml::blocks::dequantize(ty, &e.bytes, &mut got).unwrap();
                for o in 0..40 {
                    for k in 0..256 {
                        let i = e.input_order.as_ref().map_or(k, |p| p[k] as usize);
                        assert_eq!(got[o * 256 + k], value(&l, o, i), "{ty:?} [{o}][{k}]");
                    }
                }
            }
        }
    }

    #[test]
    fn what_blocks_cannot_hold_is_left_to_the_caller() {
        assert!(encode(&synthetic(4, 256, (-255, 255), false)).is_none());
        let mut split = synthetic(4, 256, (-8, 7), false);
        split.group = (0..256).map(|i| i / 16).collect();
        assert!(encode(&split).is_none());
        let mut odd = synthetic(4, 256, (-8, 7), false);
        odd.inp = 240;
        odd.group.truncate(240);
        assert!(encode(&odd).is_none());
    }

    /// The blocks of every fixture's layer-0 weights, rounded to f16 as the
    /// libraries round their products, are the libraries' own
    /// dequantisation bit for bit.
    #[test]
    fn fixture_layers_encode_to_the_libraries_dequantisation() {
        use crate::format::exl2::Exl2Linear;
        use crate::format::gptq::{GptqConfig, GptqLinear, ZeroFormat};
        use crate::format::safetensors::{Checkpoint, SafetensorsFile};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
        if !root.is_dir() {
            eprintln!("skipped: no ../shared/fixtures");
            return;
        }
        let cases = [
            ("tiny-llama-gptq-4bit-g64", Some(4), GgmlType::Q4_0),
            ("tiny-llama-gptq-4bit-g64-actorder", Some(4), GgmlType::Q4_0),
            ("tiny-llama-gptq-4bit-g64-asym", Some(4), GgmlType::Q5_0),
            ("tiny-llama-gptq-3bit-g64", Some(3), GgmlType::Q4_0),
            ("tiny-llama-gptq-8bit-g64", Some(8), GgmlType::Q8_0),
            ("tiny-llama-exl2-4.0bpw", None, GgmlType::Q8_0),
            ("tiny-llama-exl2-3.0bpw", None, GgmlType::Q8_0),
        ];
        for (dir, bits, want_ty) in cases {
            let model = Checkpoint::open(&root.join(dir)).unwrap();
            let reference =
                SafetensorsFile::open(&root.join(dir).join("dequant_layer0.safetensors")).unwrap();
            let mut types = Vec::new();
            for t in &reference.header.tensors {
                let prefix = t.name.strip_suffix(".weight").unwrap();
                let (out, inp) = (t.shape[0] as usize, t.shape[1] as usize);
                let exl2;
                let gptq;
                let layer: &(dyn GroupCodes + Sync) = match bits {
                    Some(bits) => {
                        let cfg = GptqConfig {
                            bits,
                            zeros: ZeroFormat::V1,
                        };
                        gptq = GptqLinear::from_checkpoint(&model, prefix, cfg).unwrap();
                        &gptq
                    }
                    None => {
                        exl2 = Exl2Linear::from_checkpoint(&model, prefix, out).unwrap();
                        &exl2
                    }
                };
                let e = encode(layer).unwrap_or_else(|| panic!("{dir} {}: not encoded", t.name));
                types.push(e.ty);
                let mut w = vec![0f32; out * inp];
                ggml::blocks::dequantize(e.ty, &e.bytes, &mut w).unwrap();
                // exllamav2 keeps down_proj's inputs in packed order.
                let packed = bits.is_none() && t.name.contains("down_proj");
                let want = reference.data(t);
                for o in 0..out {
                    for k in 0..inp {
                        let i = match (&e.input_order, packed) {
                            (Some(p), false) => p[k] as usize,
                            _ => k,
                        };
                        let at = 2 * (o * inp + i);
                        let r = u16::from_le_bytes([want[at], want[at + 1]]);
                        let got = f32_to_f16(w[o * inp + k]);
                        assert_eq!(got, r, "{dir} {} [{o}][{i}]", t.name);
                    }
                }
            }
            assert!(types.contains(&want_ty), "{dir}: {types:?}");
        }
    }
}
