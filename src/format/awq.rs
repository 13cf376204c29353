//! AWQ weights in the GEMM layout (AutoAWQ, GPTQModel): 4-bit codes packed
//! along the *output* dimension, eight to an int32 word of `qweight`
//! (`[in, out / 8]`) in the interleaved order 0, 2, 4, 6, 1, 3, 5, 7 (nibble k
//! of word j holds output 8j + ORDER[k]); zero points packed the same way in
//! `qzeros` (`[in / group, out / 8]`, stored as they are, not minus one); f16
//! `scales` `[in / group, out]`:
//!
//!   w[i][o] = f16((q[i][o] - z[i / group][o]) * scales[i / group][o])
//!
//! The product of an f16 scale and a small integer is exact in f32, so
//! rounding it once gives the library's dequantisation bit for bit.

use ggml::float16::{f16_to_f32, f32_to_f16};

use super::group_blocks::{columns_into_rows, runs_of_32_share, GroupCodes};
use super::safetensors::{Checkpoint, Dtype};

/// Nibble k of a word holds the output `ORDER[k]` of its eight.
const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

pub struct AwqLinear<'a> {
    pub in_features: usize,
    pub out_features: usize,
    group: usize,
    qweight: &'a [u8],
    qzeros: &'a [u8],
    scales: &'a [u8],
}

fn word(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
}

/// Output `o`'s code in row `row` of a packed `[rows, cols / 8]` tensor.
/// The nibble that holds output `o % 8` of its word (ORDER inverted).
const NIBBLE: [u32; 8] = {
    let mut inv = [0u32; 8];
    let mut k = 0;
    while k < 8 {
        inv[ORDER[k]] = k as u32;
        k += 1;
    }
    inv
};

fn nibble(bytes: &[u8], cols: usize, row: usize, o: usize) -> i32 {
    let w = word(bytes, row * cols / 8 + o / 8);
    ((w >> (4 * NIBBLE[o % 8])) & 15) as i32
}

impl<'a> AwqLinear<'a> {
    /// `<prefix>.qweight`, `.qzeros` and `.scales` of a 4-bit GEMM checkpoint.
    pub fn from_checkpoint(
        c: &'a Checkpoint,
        prefix: &str,
        bits: u64,
    ) -> Result<AwqLinear<'a>, String> {
        if bits != 4 {
            return Err(format!(
                "{prefix}: AWQ with {bits} bits is not supported (4)"
            ));
        }
        let get = |name: &str, dtype: Dtype| c.typed(&format!("{prefix}.{name}"), dtype);
        let (qw, qweight) = get("qweight", Dtype::I32)?;
        let (qz, qzeros) = get("qzeros", Dtype::I32)?;
        let (sc, scales) = get("scales", Dtype::F16)?;
        let bad = |what: String| Err(format!("{prefix}: {what}"));
        let [inp, packed] = qw.shape[..] else {
            return bad(format!("qweight has shape {:?}", qw.shape));
        };
        let (inp, out) = (inp as usize, packed as usize * 8);
        let [groups, sc_out] = sc.shape[..] else {
            return bad(format!("scales have shape {:?}", sc.shape));
        };
        let groups = groups as usize;
        if inp == 0 || out == 0 || groups == 0 || inp % groups != 0 || sc_out as usize != out {
            return bad(format!(
                "scales {:?} do not fit qweight {:?}",
                sc.shape, qw.shape
            ));
        }
        if qz.shape != [groups as u64, packed] {
            return bad(format!(
                "qzeros {:?} do not fit scales {:?}",
                qz.shape, sc.shape
            ));
        }
        Ok(AwqLinear {
            in_features: inp,
            out_features: out,
            group: inp / groups,
            qweight,
            qzeros,
            scales,
        })
    }

    fn scale(&self, g: usize, o: usize) -> f32 {
        let at = 2 * (g * self.out_features + o);
        f16_to_f32(u16::from_le_bytes([self.scales[at], self.scales[at + 1]]))
    }

    /// `q - z` of output `o` at input `i`.
    fn code(&self, o: usize, i: usize) -> i32 {
        let out = self.out_features;
        nibble(self.qweight, out, i, o) - nibble(self.qzeros, out, i / self.group, o)
    }

    /// The whole weight, `[out][in]` row-major f16 bits.
    pub fn dequantize_f16(&self) -> Vec<u16> {
        let mut w = Vec::with_capacity(self.out_features * self.in_features);
        for o in 0..self.out_features {
            for i in 0..self.in_features {
                let s = self.scale(i / self.group, o);
                w.push(f32_to_f16(self.code(o, i) as f32 * s));
            }
        }
        w
    }
}

impl GroupCodes for AwqLinear<'_> {
    fn out_features(&self) -> usize {
        self.out_features
    }

    fn in_features(&self) -> usize {
        self.in_features
    }

    fn group_order(&self) -> Option<Vec<u32>> {
        None
    }

    fn blocks_in_groups(&self, order: Option<&[u32]>) -> bool {
        let groups: Vec<u32> = (0..self.in_features)
            .map(|i| (i / self.group) as u32)
            .collect();
        runs_of_32_share(&groups, order)
    }

    fn code_range(&self) -> (i32, i32) {
        (-15, 15)
    }

    fn tile(
        &self,
        _order: Option<&[u32]>,
        o0: usize,
        n: usize,
        codes: &mut [i16],
        scales: &mut [f32],
    ) {
        // A 7B model has 6.5e9 codes: the tile's zero points are read once
        // per group.
        let (k_in, out) = (self.in_features, self.out_features);
        let mut zeros = vec![0i32; n];
        columns_into_rows(k_in, n, codes, |i, col| {
            let g = i / self.group;
            if i % self.group == 0 {
                for (j, z) in zeros.iter_mut().enumerate() {
                    *z = nibble(self.qzeros, out, g, o0 + j);
                }
            }
            for (j, (c, z)) in col.iter_mut().zip(&zeros).enumerate() {
                *c = (nibble(self.qweight, out, i, o0 + j) - z) as i16;
            }
            if i % 32 == 0 {
                for j in 0..n {
                    scales[j * k_in / 32 + i / 32] = self.scale(g, o0 + j);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::format::group_blocks::encode;
    use crate::format::safetensors::SafetensorsFile;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama-awq-4bit-g64")
    }

    /// The library's dequantised layer 0, bit for bit, from the unpacking
    /// here and from the Q5_0 blocks the layer is re-encoded to.
    #[test]
    fn the_awq_fixture_dequantises_bit_for_bit() {
        let model = Checkpoint::open(&fixture()).unwrap();
        let reference =
            SafetensorsFile::open(&fixture().join("dequant_layer0.safetensors")).unwrap();
        let mut checked = 0;
        for t in &reference.header.tensors {
            let prefix = t.name.strip_suffix(".weight").unwrap();
            let l = AwqLinear::from_checkpoint(&model, prefix, 4).unwrap();
            assert_eq!(t.shape, [l.out_features as u64, l.in_features as u64]);
            let want = reference.data(t);
            let got = l.dequantize_f16();
            let e = encode(&l).unwrap();
            assert_eq!(e.ty, ggml::GgmlType::Q5_0);
            let mut blocks = vec![0f32; got.len()];
            ggml::blocks::dequantize(e.ty, &e.bytes, &mut blocks).unwrap();
            for (k, (g, b)) in got.iter().zip(&blocks).enumerate() {
                let w = u16::from_le_bytes([want[2 * k], want[2 * k + 1]]);
                assert_eq!(*g, w, "{} [{k}]", t.name);
                assert_eq!(f32_to_f16(*b), w, "{} blocks [{k}]", t.name);
            }
            checked += 1;
        }
        assert_eq!(checked, 2);
    }

    #[test]
    fn mismatched_tensors_are_refused() {
        let model = Checkpoint::open(&fixture()).unwrap();
        let e = AwqLinear::from_checkpoint(&model, "model.layers.0.self_attn.q_proj", 8)
            .err()
            .unwrap();
        assert!(e.contains("8 bits"), "{e}");
        let e = AwqLinear::from_checkpoint(&model, "model.layers.0.self_attn.nope", 4)
            .err()
            .unwrap();
        assert!(e.contains("missing"), "{e}");
    }
}
