//! EXL2 weights (exllamav2): input rows permuted into act-order
//! (`q_invperm`), split into consecutive groups of 2-8 bits (`q_groups`:
//! pairs of bits and first packed row), the codes of a group packed down each
//! column of `q_weight` as one little-endian bit stream; per group and column
//! a 4-bit scale index s (`q_scale`, eight to a word along the columns) and
//! per group an f16 `q_scale_max`:
//!
//!   m = f16(q_scale_max / 256)            (may be subnormal: rounded as f16)
//!   scale = f16((s + 1)^2 * m)
//!   w[o][perm[k]] = f16((q[k][o] - 2^(b - 1)) * scale)
//!
//! with `perm` the inverse of `q_invperm`: the three f16 roundings of
//! exllamav2's own reconstruction (its scale max is divided in place as an
//! f16 tensor, then each product is an f16 multiply; the f32 products here
//! are exact, so rounding each once gives the same halves). Groups come in
//! falling bit widths, as exllamav2's kernels assume and its quantiser
//! writes. Models with a depth or logit scale (exllamav2's `prescale` of
//! o_proj, down_proj and the head) are not handled yet: for llama it is 1.

use ggml::float16::{f16_to_f32, f32_to_f16};

use super::group_blocks::{columns_into_rows, GroupCodes};
use super::safetensors::{Checkpoint, Dtype};

pub struct Exl2Linear<'a> {
    pub in_features: usize,
    pub out_features: usize,
    /// Columns of `q_weight` (out_features padded to 32).
    cols: usize,
    qweight: &'a [u8],
    qscale: &'a [u8],
    scale_max: Vec<f32>,
    /// (bits, first packed row, first permuted input row, rows) per group.
    groups: Vec<(u32, usize, usize, usize)>,
    /// Permuted input row k is original row perm[k].
    perm: Vec<usize>,
}

fn i32_at(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
}

impl<'a> Exl2Linear<'a> {
    /// `<prefix>.q_weight`, `.q_scale`, `.q_scale_max`, `.q_groups` and
    /// `.q_invperm` of a checkpoint; `out_features` from the model's shape
    /// (the tensors hold it padded to 32).
    pub fn from_checkpoint(
        c: &'a Checkpoint,
        prefix: &str,
        out_features: usize,
    ) -> Result<Exl2Linear<'a>, String> {
        let get = |name: &str, dtype: Dtype| c.typed(&format!("{prefix}.{name}"), dtype);
        let bad = |what: String| Err(format!("{prefix}: {what}"));
        let (qw, qweight) = get("q_weight", Dtype::I32)?;
        let (qs, qscale) = get("q_scale", Dtype::I32)?;
        let (qm, qmax) = get("q_scale_max", Dtype::F16)?;
        let (qg, qgroups) = get("q_groups", Dtype::I16)?;
        let (qi, qinv) = get("q_invperm", Dtype::I32)?;
        let [packed_rows, cols] = qw.shape[..] else {
            return bad(format!("q_weight has shape {:?}", qw.shape));
        };
        let (packed_rows, cols) = (packed_rows as usize, cols as usize);
        let k = qi.elements() as usize;
        let g = qm.elements() as usize;
        if cols < out_features || cols % 8 != 0 || out_features == 0 {
            return bad(format!(
                "q_weight has {cols} columns for {out_features} outputs"
            ));
        }
        if qg.elements() as usize != 2 * g || g == 0 {
            return bad(format!(
                "q_groups has {} entries for {g} groups",
                qg.elements()
            ));
        }
        if qs.shape != [g as u64, cols as u64 / 8] {
            return bad(format!(
                "q_scale has shape {:?}, not [{g}, {}]",
                qs.shape,
                cols / 8
            ));
        }
        let group_pair = |i: usize| {
            let b = i16::from_le_bytes(qgroups[4 * i..4 * i + 2].try_into().expect("2"));
            let first =
                i16::from_le_bytes(qgroups[4 * i + 2..4 * i + 4].try_into().expect("2")) as u16;
            (b, first as usize)
        };
        let mut groups = Vec::with_capacity(g);
        let mut row = 0;
        for i in 0..g {
            let (b, first) = group_pair(i);
            if ![2, 3, 4, 5, 6, 8].contains(&b) {
                return bad(format!("group {i} has {b} bits"));
            }
            let b = b as u32;
            let rows = if i + 1 < g {
                let next = group_pair(i + 1).1;
                if next < first || (next - first) * 32 % b as usize != 0 {
                    return bad(format!(
                        "group {i}'s packed rows {first}..{next} do not hold whole {b}-bit codes"
                    ));
                }
                (next - first) * 32 / b as usize
            } else {
                k.saturating_sub(row)
            };
            if row + rows > k || first + (rows * b as usize).div_ceil(32) > packed_rows {
                return bad(format!(
                    "group {i} runs past the {k} inputs or the {packed_rows} packed rows"
                ));
            }
            groups.push((b, first, row, rows));
            row += rows;
        }
        if row != k {
            return bad(format!("the groups cover {row} of {k} inputs"));
        }
        let mut perm = vec![usize::MAX; k];
        for i in 0..k {
            let p = i32_at(qinv, i) as usize;
            if p >= k || perm[p] != usize::MAX {
                return bad(format!(
                    "q_invperm is not a permutation of 0..{k} (entry {i})"
                ));
            }
            perm[p] = i;
        }
        let scale_max = (0..g)
            .map(|i| {
                let max = f16_to_f32(u16::from_le_bytes(
                    qmax[2 * i..2 * i + 2].try_into().expect("2"),
                ));
                f16_to_f32(f32_to_f16(max / 256.0))
            })
            .collect();
        Ok(Exl2Linear {
            in_features: k,
            out_features,
            cols,
            qweight,
            qscale,
            scale_max,
            groups,
            perm,
        })
    }

    /// Where each packed input row belongs: original row `perm()[k]`.
    pub fn perm(&self) -> &[usize] {
        &self.perm
    }

    fn scale(&self, gi: usize, o: usize) -> f32 {
        let s = (i32_at(self.qscale, gi * self.cols / 8 + o / 8) >> (4 * (o % 8))) & 15;
        let qs = ((s + 1) * (s + 1)) as f32;
        f16_to_f32(f32_to_f16(qs * self.scale_max[gi]))
    }

    /// `q - 2^(b - 1)` of output `o` at packed row `j` of group `gi`.
    fn code(&self, gi: usize, o: usize, j: usize) -> i32 {
        let (b, first, _, _) = self.groups[gi];
        let bit = j * b as usize;
        let (word, shift) = (first + bit / 32, (bit % 32) as u32);
        let mut v = i32_at(self.qweight, word * self.cols + o) >> shift;
        if shift + b > 32 {
            v |= i32_at(self.qweight, (word + 1) * self.cols + o) << (32 - shift);
        }
        (v & ((1 << b) - 1)) as i32 - (1 << (b - 1))
    }

    /// The whole weight, `[out][in]` row-major f16 bits, inputs in their
    /// original order.
    pub fn dequantize_f16(&self) -> Vec<u16> {
        let k = self.in_features;
        let mut w = vec![0u16; self.out_features * k];
        for (gi, &(_, _, row0, rows)) in self.groups.iter().enumerate() {
            for o in 0..self.out_features {
                let scale = self.scale(gi, o);
                for j in 0..rows {
                    let v = self.code(gi, o, j);
                    w[o * k + self.perm[row0 + j]] = f32_to_f16(v as f32 * scale);
                }
            }
        }
        w
    }
}

impl GroupCodes for Exl2Linear<'_> {
    fn out_features(&self) -> usize {
        self.out_features
    }

    fn in_features(&self) -> usize {
        self.in_features
    }

    /// Packed rows are in group order already; their order is the input's
    /// permutation.
    fn group_order(&self) -> Option<Vec<u32>> {
        let identity = self.perm.iter().enumerate().all(|(k, &p)| k == p);
        (!identity).then(|| self.perm.iter().map(|&p| p as u32).collect())
    }

    fn blocks_in_groups(&self, _order: Option<&[u32]>) -> bool {
        self.groups
            .iter()
            .all(|&(_, _, row0, rows)| row0 % 32 == 0 && rows % 32 == 0)
    }

    fn code_range(&self) -> (i32, i32) {
        let b = self.groups.iter().map(|g| g.0).max().unwrap_or(2);
        (-(1 << (b - 1)), (1 << (b - 1)) - 1)
    }

    fn tile(
        &self,
        _order: Option<&[u32]>,
        o0: usize,
        n: usize,
        codes: &mut [i16],
        scales: &mut [f32],
    ) {
        let k_in = self.in_features;
        // The groups cover the inputs in order (checked at load), and
        // columns come in order: `gi` follows them.
        let mut gi = 0;
        columns_into_rows(k_in, n, codes, |k, col| {
            while k >= self.groups[gi].2 + self.groups[gi].3 {
                gi += 1;
            }
            let j = k - self.groups[gi].2;
            for (jo, c) in col.iter_mut().enumerate() {
                *c = self.code(gi, o0 + jo, j) as i16;
            }
            if k % 32 == 0 {
                for jo in 0..n {
                    scales[jo * k_in / 32 + k / 32] = self.scale(gi, o0 + jo);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::format::safetensors::SafetensorsFile;

    #[test]
    fn every_exl2_fixture_dequantises_bit_for_bit() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
        if !root.is_dir() {
            eprintln!("skipped: no ../shared/fixtures");
            return;
        }
        for dir in ["tiny-llama-exl2-4.0bpw", "tiny-llama-exl2-3.0bpw"] {
            let model = Checkpoint::open(&root.join(dir)).unwrap();
            let reference =
                SafetensorsFile::open(&root.join(dir).join("dequant_layer0.safetensors")).unwrap();
            let mut checked = 0;
            for t in &reference.header.tensors {
                let prefix = t.name.strip_suffix(".weight").unwrap_or(&t.name);
                let lin = Exl2Linear::from_checkpoint(&model, prefix, t.shape[0] as usize)
                    .unwrap_or_else(|e| panic!("{dir}: {e}"));
                assert_eq!(lin.in_features as u64, t.shape[1], "{dir} {}", t.name);
                let want = reference.data(t);
                let full = lin.dequantize_f16();
                // exllamav2 loads down_proj without its permutation (gate and
                // up take it on their output columns instead), so its
                // reference holds the inputs in packed order.
                let k = lin.in_features;
                let got: Vec<u16> = if t.name.contains("down_proj") {
                    (0..full.len())
                        .map(|i| full[i / k * k + lin.perm()[i % k]])
                        .collect()
                } else {
                    full
                };
                let bad: Vec<usize> = (0..got.len())
                    .filter(|&i| got[i].to_le_bytes() != want[2 * i..2 * i + 2])
                    .collect();
                if let Some(&i) = bad.first() {
                    let w = u16::from_le_bytes(want[2 * i..2 * i + 2].try_into().unwrap());
                    panic!(
                        "{dir} {}: {} of {} weights differ, first [{}][{}]: {} want {}",
                        t.name,
                        bad.len(),
                        got.len(),
                        i / lin.in_features,
                        i % lin.in_features,
                        f16_to_f32(got[i]),
                        f16_to_f32(w)
                    );
                }
                checked += 1;
            }
            assert!(checked >= 2, "{dir}: only {checked} reference tensors");
            eprintln!(
                "{dir}: {checked} layer-0 weights equal exllamav2's reconstruction bit for bit"
            );
        }
    }

    #[test]
    fn missing_or_mismatched_tensors_are_refused() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
        if !root.is_dir() {
            return;
        }
        let gptq = Checkpoint::open(&root.join("tiny-llama-gptq-4bit-g64")).unwrap();
        let e = Exl2Linear::from_checkpoint(&gptq, "model.layers.0.self_attn.q_proj", 256)
            .err()
            .unwrap();
        assert!(e.contains("q_weight") && e.contains("missing"), "{e}");
        let exl2 = Checkpoint::open(&root.join("tiny-llama-exl2-4.0bpw")).unwrap();
        let e = Exl2Linear::from_checkpoint(&exl2, "model.layers.0.self_attn.q_proj", 4096)
            .err()
            .unwrap();
        assert!(e.contains("columns for 4096 outputs"), "{e}");
    }
}
