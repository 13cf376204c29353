//! Block formats: scalar reference dequantisation for every weight type we
//! support, bit-identical to ggml's `to_float`, and quantisation bit-identical
//! to ggml's CPU `from_float`.

pub mod floats;
pub mod iquants;
pub mod kquants;
pub mod legacy;
pub mod quantize_kquants;
#[cfg(test)]
mod quantize_tests;

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

/// Writes `x` as a little-endian f16 at `at`, rounding as ggml's portable
/// `GGML_FP32_TO_FP16` does (the reference quantisers are built without F16C):
/// to nearest even, but every NaN becomes the plain quiet NaN 0x7e00.
#[inline]
pub(crate) fn put_f16(b: &mut [u8], at: usize, x: f32) {
    let h = if x.is_nan() {
        0x7e00 | ((x.to_bits() >> 16) as u16 & 0x8000)
    } else {
        crate::float16::f32_to_f16(x)
    };
    b[at..at + 2].copy_from_slice(&h.to_le_bytes());
}

/// ggml's `nearest_int`: adding 1.5 * 2^23 leaves the rounded (half to even)
/// integer in the low mantissa bits. Out of its range (|x| > 2^22, inf, NaN)
/// it returns the same garbage as ggml, which callers then clamp alike.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    ((x + 12_582_912.0).to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// The value of largest magnitude (the first one on ties), as ggml picks the
/// value that must map to the end of a symmetric range; 0 for an empty or
/// all-NaN slice.
#[inline]
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// Why `quantize` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantizeError {
    Unsupported(GgmlType),
    /// `values` is not a whole number of blocks, or `bytes` is not their size.
    Length {
        ty: GgmlType,
        values: usize,
        bytes: usize,
    },
}

impl From<Unsupported> for QuantizeError {
    fn from(u: Unsupported) -> Self {
        QuantizeError::Unsupported(u.0)
    }
}

impl std::fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            QuantizeError::Unsupported(ty) => Unsupported(ty).fmt(f),
            QuantizeError::Length { ty, values, bytes } => write!(
                f,
                "cannot quantise {values} values to {bytes} bytes of {ty}: \
                 need whole blocks of {} values, {} bytes each",
                ty.block_size(),
                ty.type_size()
            ),
        }
    }
}

impl std::error::Error for QuantizeError {}

/// Quantises `src` into `dst` as `ty`, byte for byte as ggml's CPU
/// `from_float` on x86 with AVX (see each quantiser for what that is).
/// `src` must be whole blocks and `dst` exactly their size.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantizeError> {
    use crate::cpu::quantize as act;
    let f: fn(&[f32], &mut [u8]) = match ty {
        GgmlType::F32 => act::quantize_f32,
        GgmlType::F16 => act::quantize_f16,
        GgmlType::BF16 => act::quantize_bf16,
        GgmlType::Q4_0 => legacy::quantize_q4_0,
        GgmlType::Q4_1 => legacy::quantize_q4_1,
        GgmlType::Q5_0 => legacy::quantize_q5_0,
        GgmlType::Q5_1 => legacy::quantize_q5_1,
        GgmlType::Q8_0 => legacy::quantize_q8_0,
        GgmlType::Q2_K => quantize_kquants::quantize_q2_k,
        GgmlType::Q3_K => quantize_kquants::quantize_q3_k,
        GgmlType::Q4_K => quantize_kquants::quantize_q4_k,
        GgmlType::Q5_K => quantize_kquants::quantize_q5_k,
        GgmlType::Q6_K => quantize_kquants::quantize_q6_k,
        GgmlType::IQ4_NL => iquants::quantize_iq4_nl,
        GgmlType::IQ4_XS => iquants::quantize_iq4_xs,
        other => return Err(QuantizeError::Unsupported(other)),
    };
    let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
    if !src.len().is_multiple_of(bs) || dst.len() != src.len() / bs * ts {
        return Err(QuantizeError::Length {
            ty,
            values: src.len(),
            bytes: dst.len(),
        });
    }
    f(src, dst);
    Ok(())
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
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            floats::dequantize_float_row(ty, src, dst);
            return Ok(());
        }
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

/// The weight types `dequantize` and `quantize` handle.
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
