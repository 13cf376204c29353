//! GPTQ weights (AutoGPTQ "gptq" v1 and GPTQModel "gptq_v2" checkpoints):
//! codes of 2, 3, 4 or 8 bits packed along the input dimension of `qweight`
//! (`[in * bits / 32, out]` int32), zero points packed the same way along
//! the output dimension of `qzeros` (`[groups, out * bits / 32]`), f16
//! `scales` `[groups, out]` and the group of each input row in `g_idx` (not
//! monotone under act-order). Each column of words is one little-endian bit
//! stream, so a 3-bit code may straddle two words.
//!
//!   w[i][o] = f16(scales[g][o] * (q[i][o] - z[g][o])),   g = g_idx[i]
//!
//! where v1 stores z - 1 (so a symmetric 4-bit model's words are 0x77777777)
//! and v2 stores z. The product of an f16 scale and a small integer is exact
//! in f32, so rounding it once to f16 gives GPTQModel's own dequantisation
//! bit for bit.

use ggml::float16::{f16_to_f32, f32_to_f16};

use super::group_blocks::{columns_into_rows, runs_of_32_share, sort_by_group, GroupCodes};
use super::safetensors::{Checkpoint, Dtype, TensorInfo};

/// How the zero points are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroFormat {
    /// AutoGPTQ's `checkpoint_format: "gptq"`: zero minus one.
    V1,
    /// GPTQModel's `gptq_v2`: the zero itself.
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GptqConfig {
    pub bits: u32,
    pub zeros: ZeroFormat,
}

/// One linear layer's GPTQ tensors, checked against each other.
pub struct GptqLinear<'a> {
    pub in_features: usize,
    pub out_features: usize,
    pub groups: usize,
    bits: u32,
    zeros: ZeroFormat,
    qweight: &'a [u8],
    qzeros: &'a [u8],
    scales: &'a [u8],
    /// None: the default `i / (in / groups)`.
    g_idx: Option<&'a [u8]>,
}

fn word(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
}

/// Code `i` of a bit stream of `bits`-bit codes held in the words at
/// `stride`-apart positions `first`, `first + stride`, ...
fn code(bytes: &[u8], first: usize, stride: usize, bits: u32, i: usize) -> u32 {
    let bit = i * bits as usize;
    let (w, shift) = (bit / 32, (bit % 32) as u32);
    let lo = word(bytes, first + w * stride) >> shift;
    let v = if shift + bits > 32 {
        lo | (word(bytes, first + (w + 1) * stride) << (32 - shift))
    } else {
        lo
    };
    v & ((1u32 << bits) - 1)
}

impl<'a> GptqLinear<'a> {
    /// The tensors `<prefix>.qweight`, `.qzeros`, `.scales` and (if there)
    /// `.g_idx` of a checkpoint.
    pub fn from_checkpoint(
        c: &'a Checkpoint,
        prefix: &str,
        cfg: GptqConfig,
    ) -> Result<GptqLinear<'a>, String> {
        let get = |name: &str, dtype: Dtype| -> Result<(&'a TensorInfo, &'a [u8]), String> {
            let (t, d) = c.typed(&format!("{prefix}.{name}"), dtype)?;
            if t.shape.len() > 2 {
                return Err(format!(
                    "tensor '{prefix}.{name}' has {} dimensions",
                    t.shape.len()
                ));
            }
            Ok((t, d))
        };
        let (qw, qweight) = get("qweight", Dtype::I32)?;
        let (qz, qzeros) = get("qzeros", Dtype::I32)?;
        let (sc, scales) = get("scales", Dtype::F16)?;
        let g_idx = c.tensor(&format!("{prefix}.g_idx"));
        let dims = |t: &TensorInfo| -> (usize, usize) {
            match t.shape.as_slice() {
                [a, b] => (*a as usize, *b as usize),
                [a] => (1, *a as usize),
                _ => (0, 0),
            }
        };
        let bits = cfg.bits;
        if ![2, 3, 4, 8].contains(&bits) {
            return Err(format!(
                "{prefix}: GPTQ with {bits} bits is not supported (2, 3, 4 or 8)"
            ));
        }
        let (packed_rows, out_features) = dims(qw);
        let in_features = packed_rows * 32 / bits as usize;
        let (groups, sc_out) = dims(sc);
        let (zg, zwords) = dims(qz);
        let bad = |what: String| Err(format!("{prefix}: {what}"));
        if packed_rows * 32 % bits as usize != 0 || in_features == 0 || out_features == 0 {
            return bad(format!(
                "qweight {:?} does not hold whole {bits}-bit rows",
                qw.shape
            ));
        }
        if sc_out != out_features || groups == 0 || groups > in_features {
            return bad(format!(
                "scales {:?} do not fit qweight {:?}",
                sc.shape, qw.shape
            ));
        }
        if zg != groups || zwords * 32 < out_features * bits as usize {
            return bad(format!(
                "qzeros {:?} do not fit scales {:?}",
                qz.shape, sc.shape
            ));
        }
        let g_idx = match g_idx {
            Some((t, d)) => {
                if t.dtype != Dtype::I32 || t.elements() as usize != in_features {
                    return bad(format!(
                        "g_idx is {} {:?}, not I32 [{in_features}]",
                        t.dtype.name(),
                        t.shape
                    ));
                }
                let out_of_range = (0..in_features).find(|&i| word(d, i) as usize >= groups);
                if let Some(i) = out_of_range {
                    return bad(format!(
                        "g_idx[{i}] = {} but there are {groups} groups",
                        word(d, i) as i32
                    ));
                }
                Some(d)
            }
            None => None,
        };
        Ok(GptqLinear {
            in_features,
            out_features,
            groups,
            bits,
            zeros: cfg.zeros,
            qweight,
            qzeros,
            scales,
            g_idx,
        })
    }

    fn group(&self, i: usize) -> usize {
        match self.g_idx {
            Some(g) => word(g, i) as usize,
            None => i / self.in_features.div_ceil(self.groups),
        }
    }

    /// `q - z` of output `o` at input `i`, and its group.
    fn code(&self, o: usize, i: usize) -> (i32, usize) {
        let g = self.group(i);
        let q = code(self.qweight, o, self.out_features, self.bits, i) as i32;
        (q - self.zero(g, o), g)
    }

    fn zero(&self, g: usize, o: usize) -> i32 {
        let zwords = self.qzeros.len() / 4 / self.groups;
        let z = code(self.qzeros, g * zwords, 1, self.bits, o) as i32;
        match self.zeros {
            ZeroFormat::V1 => (z + 1) & ((1 << self.bits) - 1),
            ZeroFormat::V2 => z,
        }
    }

    fn scale(&self, g: usize, o: usize) -> f32 {
        f16_to_f32(u16::from_le_bytes(
            self.scales[2 * (g * self.out_features + o)..][..2]
                .try_into()
                .expect("2 bytes"),
        ))
    }

    /// Weight `[o][i]` as f16 bits.
    pub fn weight_f16(&self, o: usize, i: usize) -> u16 {
        let (v, g) = self.code(o, i);
        f32_to_f16(self.scale(g, o) * v as f32)
    }

    fn groups_of_inputs(&self) -> Vec<u32> {
        (0..self.in_features)
            .map(|i| self.group(i) as u32)
            .collect()
    }

    pub fn dequantize_f16(&self) -> Vec<u16> {
        let mut w = Vec::with_capacity(self.out_features * self.in_features);
        for o in 0..self.out_features {
            for i in 0..self.in_features {
                w.push(self.weight_f16(o, i));
            }
        }
        w
    }
}

impl GroupCodes for GptqLinear<'_> {
    fn out_features(&self) -> usize {
        self.out_features
    }

    fn in_features(&self) -> usize {
        self.in_features
    }

    fn group_order(&self) -> Option<Vec<u32>> {
        sort_by_group(&self.groups_of_inputs())
    }

    fn blocks_in_groups(&self, order: Option<&[u32]>) -> bool {
        runs_of_32_share(&self.groups_of_inputs(), order)
    }

    fn code_range(&self) -> (i32, i32) {
        let (mut zlo, mut zhi) = (i32::MAX, i32::MIN);
        for g in 0..self.groups {
            for o in 0..self.out_features {
                let z = self.zero(g, o);
                (zlo, zhi) = (zlo.min(z), zhi.max(z));
            }
        }
        (-zhi, (1 << self.bits) - 1 - zlo)
    }

    fn tile(
        &self,
        order: Option<&[u32]>,
        o0: usize,
        n: usize,
        codes: &mut [i16],
        scales: &mut [f32],
    ) {
        // A 7B model has 6.5e9 codes: the tile's zero points are looked up
        // once per group, and each input's codes are read word by word
        // along the outputs (where qweight keeps them side by side).
        let k_in = self.in_features;
        let zeros: Vec<i32> = (0..self.groups)
            .flat_map(|g| (0..n).map(move |j| self.zero(g, o0 + j)))
            .collect();
        let (bits, mask) = (self.bits as usize, (1u32 << self.bits) - 1);
        let words = |w: usize| &self.qweight[4 * (w * self.out_features + o0)..][..4 * n];
        columns_into_rows(k_in, n, codes, |k, col| {
            let i = order.map_or(k, |p| p[k] as usize);
            let g = self.group(i);
            let (w, shift) = (i * bits / 32, (i * bits % 32) as u32);
            let here = words(w);
            // A code that straddles two words (3-bit) takes the next one's low bits.
            let next = (shift as usize + bits > 32).then(|| words(w + 1));
            let z = &zeros[g * n..][..n];
            for (j, c) in col.iter_mut().enumerate() {
                let mut v = word(here, j) >> shift;
                if let Some(next) = next {
                    v |= word(next, j) << (32 - shift);
                }
                *c = ((v & mask) as i32 - z[j]) as i16;
            }
            if k % 32 == 0 {
                for j in 0..n {
                    scales[j * k_in / 32 + k / 32] = self.scale(g, o0 + j);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixtures() -> Option<std::path::PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
        root.is_dir().then_some(root)
    }

    #[test]
    fn every_gptq_fixture_dequantises_bit_for_bit() {
        let Some(root) = fixtures() else {
            eprintln!("skipped: no ../shared/fixtures");
            return;
        };
        for (dir, bits) in [
            ("tiny-llama-gptq-4bit-g64", 4),
            ("tiny-llama-gptq-4bit-g64-actorder", 4),
            ("tiny-llama-gptq-4bit-g64-asym", 4),
            ("tiny-llama-gptq-3bit-g64", 3),
            ("tiny-llama-gptq-8bit-g64", 8),
        ] {
            let model = Checkpoint::open(&root.join(dir)).unwrap();
            let reference = super::super::safetensors::SafetensorsFile::open(
                &root.join(dir).join("dequant_layer0.safetensors"),
            )
            .unwrap();
            let cfg = GptqConfig {
                bits,
                zeros: ZeroFormat::V1,
            };
            let mut checked = 0;
            for t in &reference.header.tensors {
                let prefix = t.name.strip_suffix(".weight").unwrap_or(&t.name);
                let lin = GptqLinear::from_checkpoint(&model, prefix, cfg)
                    .unwrap_or_else(|e| panic!("{dir}: {e}"));
                assert_eq!(
                    t.shape,
                    vec![lin.out_features as u64, lin.in_features as u64],
                    "{dir} {}",
                    t.name
                );
                let want = reference.data(t);
                let got = lin.dequantize_f16();
                let bad = got
                    .iter()
                    .enumerate()
                    .filter(|(k, w)| w.to_le_bytes() != want[2 * k..2 * k + 2])
                    .count();
                assert_eq!(
                    bad,
                    0,
                    "{dir} {}: {bad} of {} weights differ",
                    t.name,
                    got.len()
                );
                checked += 1;
            }
            assert!(checked >= 2, "{dir}: only {checked} reference tensors");
            eprintln!(
                "{dir}: {checked} layer-0 weights equal GPTQModel's dequantisation bit for bit"
            );
        }
    }

    #[test]
    fn mismatched_tensors_are_refused() {
        let Some(root) = fixtures() else {
            return;
        };
        let model = Checkpoint::open(&root.join("tiny-llama-gptq-4bit-g64")).unwrap();
        let p = "model.layers.0.self_attn.q_proj";
        let e = GptqLinear::from_checkpoint(
            &model,
            p,
            GptqConfig {
                bits: 5,
                zeros: ZeroFormat::V1,
            },
        )
        .err()
        .unwrap();
        assert!(e.contains("5 bits"), "{e}");
        let e = GptqLinear::from_checkpoint(
            &model,
            "model.layers.0.nothing",
            GptqConfig {
                bits: 4,
                zeros: ZeroFormat::V1,
            },
        )
        .err()
        .unwrap();
        assert!(e.contains("missing"), "{e}");
        // Read as 8-bit, a 4-bit layer's scales no longer fit its rows.
        let e = GptqLinear::from_checkpoint(
            &model,
            p,
            GptqConfig {
                bits: 8,
                zeros: ZeroFormat::V1,
            },
        )
        .err();
        assert!(e.is_some());
    }
}
