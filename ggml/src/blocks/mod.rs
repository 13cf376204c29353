//! Block formats: scalar reference dequantisation for every weight type we
//! support, bit-identical to ggml's `to_float`.

pub mod floats;
pub mod iquants;
pub mod kquants;
pub mod legacy;

use crate::GgmlType;

/// A type we cannot compute with (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported(pub GgmlType);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "quant type {} is not supported yet", self.0)
    }
}

impl std::error::Error for Unsupported {}

/// Reads a little-endian f16 at `at`.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    crate::float16::f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Dequantises whole blocks: `src` holds `dst.len() / block_size` blocks of `ty`.
///
/// Panics if the lengths disagree: callers size both from the tensor's shape,
/// which the loader has checked.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), Unsupported> {
    let blocks = dst.len() / ty.block_size() as usize;
    assert_eq!(dst.len() % ty.block_size() as usize, 0, "partial block");
    assert_eq!(src.len(), blocks * ty.type_size() as usize, "source size");
    let f: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => floats::dequantize_f32,
        GgmlType::F16 => floats::dequantize_f16,
        GgmlType::BF16 => floats::dequantize_bf16,
        GgmlType::Q4_0 => legacy::dequantize_q4_0,
        GgmlType::Q4_1 => legacy::dequantize_q4_1,
        GgmlType::Q5_0 => legacy::dequantize_q5_0,
        GgmlType::Q5_1 => legacy::dequantize_q5_1,
        GgmlType::Q8_0 => legacy::dequantize_q8_0,
        GgmlType::Q2_K => kquants::dequantize_q2_k,
        GgmlType::Q3_K => kquants::dequantize_q3_k,
        GgmlType::Q4_K => kquants::dequantize_q4_k,
        GgmlType::Q5_K => kquants::dequantize_q5_k,
        GgmlType::Q6_K => kquants::dequantize_q6_k,
        GgmlType::IQ4_NL => iquants::dequantize_iq4_nl,
        GgmlType::IQ4_XS => iquants::dequantize_iq4_xs,
        other => return Err(Unsupported(other)),
    };
    let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
    for (block, out) in src.chunks_exact(ts).zip(dst.chunks_exact_mut(bs)) {
        f(block, out);
    }
    Ok(())
}

/// The weight types `dequantize` handles.
pub const WEIGHT_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];
