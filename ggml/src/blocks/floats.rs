//! F32, F16 and BF16 rows ("blocks" of one element) as f32.

use crate::float16::bf16_to_f32;
use crate::GgmlType;

/// A row of F32, F16 or BF16 values as f32, in loops the compiler
/// vectorises (`dequantize` once called a one-element function for each
/// value: 7.9 ms for a 512-token batch's F16 embeddings of a 7B, where the
/// GPU then waited). The values are those of `f16_to_f32` and
/// `bf16_to_f32`, bit for bit (`rows_equal_the_scalar_conversions`).
pub fn dequantize_float_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (b, y) in src.chunks_exact(4).zip(dst.iter_mut()) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
                *y = f16_to_f32_branchless(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        GgmlType::BF16 => {
            for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
                *y = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        other => unreachable!("{other:?} is not a float type"),
    }
}

/// `f16_to_f32` without branches: normal halves by moving the exponent
/// and mantissa into f32's places and rebiasing, subnormal ones as their
/// mantissa (an integer) times 2^-24 (exact, and no subnormal arithmetic,
/// which costs x86 a microcode assist), infinities and NaNs (payload kept)
/// with f32's top exponent; the three joined by selects.
#[inline(always)]
fn f16_to_f32_branchless(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let normal = (em << 13) + (112 << 23);
    let subnormal = (em as f32 * f32::from_bits((127 - 24) << 23)).to_bits();
    let special = (em << 13) | 0x7f80_0000;
    let bits = if em >= 0x7c00 {
        special
    } else if em < 0x0400 {
        subnormal
    } else {
        normal
    };
    f32::from_bits(sign | bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float16::f16_to_f32;

    #[test]
    fn rows_equal_the_scalar_conversions() {
        let src: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let mut row = vec![0.0f32; 1 << 16];
        dequantize_float_row(GgmlType::F16, &src, &mut row);
        for (h, y) in (0..=u16::MAX).zip(&row) {
            assert_eq!(y.to_bits(), f16_to_f32(h).to_bits(), "f16 {h:#06x}");
        }
        dequantize_float_row(GgmlType::BF16, &src, &mut row);
        for (h, y) in (0..=u16::MAX).zip(&row) {
            assert_eq!(y.to_bits(), bf16_to_f32(h).to_bits(), "bf16 {h:#06x}");
        }
        let f: Vec<u8> = [1.5f32, -0.0, f32::NAN, 3e-41]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        dequantize_float_row(GgmlType::F32, &f, &mut row[..4]);
        assert_eq!(row[0], 1.5);
        assert_eq!(row[1].to_bits(), (-0.0f32).to_bits());
        assert!(row[2].is_nan());
        assert_eq!(row[3], 3e-41);
    }
}
