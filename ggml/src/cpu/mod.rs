//! CPU kernels: activation quantisation and dot products, compiled once per
//! instruction set and picked at run time, so one binary runs everywhere and
//! uses AVX2 or AVX-512 where the CPU has them.

pub mod dot;
pub mod ops;
pub mod pool;
pub mod quantize;

use std::sync::OnceLock;

use crate::blocks::Unsupported;
use crate::GgmlType;

/// The instruction sets our kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The best set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            let avx512 = avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl");
            if avx512 {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every set this CPU can run, for tests that check each path.
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= best)
            .collect()
    }
}

/// The set in use: `LLM_ISA=scalar|avx2|avx512` lowers it (never above what
/// the CPU has), else the best detected.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = Isa::detect();
        let wanted = match std::env::var("LLM_ISA").as_deref() {
            Ok("scalar") => Isa::Scalar,
            Ok("avx2") => Isa::Avx2,
            Ok("avx512") => Isa::Avx512,
            _ => best,
        };
        wanted.min(best)
    })
}

/// The activation type ggml pairs with each weight type for dot products.
pub fn dot_type(w: GgmlType) -> Result<GgmlType, Unsupported> {
    use GgmlType::*;
    Ok(match w {
        F32 => F32,
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => Q8_K,
        other => return Err(Unsupported(other)),
    })
}

pub type DotFn = fn(&[u8], &[u8]) -> f32;
pub type QuantizeFn = fn(&[f32], &mut [u8]);

/// Kernels for one weight type on one instruction set.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub weight: GgmlType,
    pub act: GgmlType,
    /// Dot product of a weight row and an activation row of the same length.
    pub dot: DotFn,
    /// Activation floats to `act` blocks.
    pub quantize: QuantizeFn,
}

/// Instantiates a kernel body for each instruction set: the body is
/// `inline(always)`, so each copy is compiled with that set's features.
macro_rules! per_isa {
    ($name:ident, $body:path, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[allow(dead_code)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            pub fn scalar($($arg: $ty),*) -> $ret {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c,bmi2")]
            unsafe fn avx2_impl($($arg: $ty),*) -> $ret {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            pub fn avx2($($arg: $ty),*) -> $ret {
                // SAFETY: only chosen when Isa::detect() found these features.
                unsafe { avx2_impl($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c,bmi2")]
            unsafe fn avx512_impl($($arg: $ty),*) -> $ret {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            pub fn avx512($($arg: $ty),*) -> $ret {
                // SAFETY: only chosen when Isa::detect() found these features.
                unsafe { avx512_impl($($arg),*) }
            }
        }
    };
}

macro_rules! pick {
    ($isa:expr, $name:ident) => {{
        #[cfg(target_arch = "x86_64")]
        {
            match $isa {
                Isa::Scalar => $name::scalar as _,
                Isa::Avx2 => $name::avx2 as _,
                Isa::Avx512 => $name::avx512 as _,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $isa;
            $name::scalar as _
        }
    }};
}

per_isa!(d_f32, dot::f32_f32, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_f16_scalar, dot::f16_f16_scalar, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_f16_avx2, dot::f16_f16_avx2, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_f16_avx512, dot::f16_f16_avx512, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_bf16, dot::bf16_bf16, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q4_0, dot::q4_0_q8_0, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q4_1, dot::q4_1_q8_1, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q5_0, dot::q5_0_q8_0, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q5_1, dot::q5_1_q8_1, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q8_0, dot::q8_0_q8_0, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_iq4_nl, dot::iq4_nl_q8_0, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q2_k, dot::q2_k_q8_k, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q3_k, dot::q3_k_q8_k, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q4_k, dot::q4_k_q8_k, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q5_k, dot::q5_k_q8_k, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_q6_k, dot::q6_k_q8_k, (w: &[u8], a: &[u8]) -> f32);
per_isa!(d_iq4_xs, dot::iq4_xs_q8_k, (w: &[u8], a: &[u8]) -> f32);
per_isa!(q_q8_0, quantize::quantize_q8_0, (x: &[f32], out: &mut [u8]) -> ());
per_isa!(q_q8_1, quantize::quantize_q8_1, (x: &[f32], out: &mut [u8]) -> ());
per_isa!(q_q8_k, quantize::quantize_q8_k, (x: &[f32], out: &mut [u8]) -> ());
per_isa!(q_f16, quantize::quantize_f16, (x: &[f32], out: &mut [u8]) -> ());
per_isa!(q_bf16, quantize::quantize_bf16, (x: &[f32], out: &mut [u8]) -> ());
per_isa!(q_f32, quantize::quantize_f32, (x: &[f32], out: &mut [u8]) -> ());

/// The activation quantiser for `act` on `isa`.
pub fn quantizer(act: GgmlType, isa: Isa) -> Result<QuantizeFn, Unsupported> {
    use GgmlType::*;
    Ok(match act {
        Q8_0 => pick!(isa, q_q8_0),
        Q8_1 => pick!(isa, q_q8_1),
        Q8_K => pick!(isa, q_q8_k),
        F16 => pick!(isa, q_f16),
        BF16 => pick!(isa, q_bf16),
        F32 => pick!(isa, q_f32),
        other => return Err(Unsupported(other)),
    })
}

/// The kernels for weight type `w` on `isa`.
pub fn kernels_for(w: GgmlType, isa: Isa) -> Result<Kernels, Unsupported> {
    use GgmlType::*;
    let act = dot_type(w)?;
    let dot: DotFn = match w {
        F32 => pick!(isa, d_f32),
        F16 => match isa {
            Isa::Scalar => d_f16_scalar::scalar,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => d_f16_avx2::avx2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => d_f16_avx512::avx512,
            #[cfg(not(target_arch = "x86_64"))]
            _ => d_f16_scalar::scalar,
        },
        BF16 => pick!(isa, d_bf16),
        Q4_0 => pick!(isa, d_q4_0),
        Q4_1 => pick!(isa, d_q4_1),
        Q5_0 => pick!(isa, d_q5_0),
        Q5_1 => pick!(isa, d_q5_1),
        Q8_0 => pick!(isa, d_q8_0),
        IQ4_NL => pick!(isa, d_iq4_nl),
        Q2_K => pick!(isa, d_q2_k),
        Q3_K => pick!(isa, d_q3_k),
        Q4_K => pick!(isa, d_q4_k),
        Q5_K => pick!(isa, d_q5_k),
        Q6_K => pick!(isa, d_q6_k),
        IQ4_XS => pick!(isa, d_iq4_xs),
        other => return Err(Unsupported(other)),
    };
    Ok(Kernels {
        weight: w,
        act,
        dot,
        quantize: quantizer(act, isa)?,
    })
}

/// The kernels for `w` on the instruction set in use.
pub fn kernels(w: GgmlType) -> Result<Kernels, Unsupported> {
    kernels_for(w, isa())
}

/// Bytes of `n` activations quantised for weight type `w`.
pub fn act_row_bytes(w: GgmlType, n: usize) -> Result<usize, Unsupported> {
    let act = dot_type(w)?;
    Ok(act.row_size(n as u64).ok_or(Unsupported(w))? as usize)
}
