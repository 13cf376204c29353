//! F32, F16 and BF16 "blocks" of one element.

use crate::float16::{bf16_to_f32, f16_to_f32};

pub fn dequantize_f32(b: &[u8], y: &mut [f32]) {
    y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
}

pub fn dequantize_f16(b: &[u8], y: &mut [f32]) {
    y[0] = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
}

pub fn dequantize_bf16(b: &[u8], y: &mut [f32]) {
    y[0] = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
}
