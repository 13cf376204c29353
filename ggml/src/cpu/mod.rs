//! CPU kernels: activation quantisation and dot products, compiled once per
//! instruction set and picked at run time, so one binary runs everywhere and
//! uses AVX2 or AVX-512 where the CPU has them (NEON on aarch64).

pub mod attention_batch;
pub mod attention_rows;
pub mod backend;
pub mod dot;
pub mod fine;
#[cfg(target_arch = "aarch64")]
mod fine_neon;
#[cfg(target_arch = "x86_64")]
mod fine_x86;
pub mod interleaved;
#[cfg(target_arch = "x86_64")]
mod interleaved_x86;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod ops;
mod pages;
pub mod pool;
pub mod quantize;
#[cfg(target_arch = "x86_64")]
mod quantize_x86;
mod steal;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use std::sync::OnceLock;

use crate::backend::WeightFormat;
use crate::blocks::Unsupported;
use crate::GgmlType;

/// The instruction sets our kernels are compiled for. `Avx2` and `Avx512`
/// exist only on x86_64 CPUs and `Neon` only on aarch64 ones; the order
/// ranks sets of one architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
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
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                return Isa::Neon;
            }
        }
        Isa::Scalar
    }

    /// Every set this CPU can run, for tests that check each path.
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        Isa::family()
            .iter()
            .copied()
            .filter(|&i| i <= best)
            .collect()
    }

    /// The sets of this build's architecture, lowest first.
    fn family() -> &'static [Isa] {
        if cfg!(target_arch = "aarch64") {
            &[Isa::Scalar, Isa::Neon]
        } else {
            &[Isa::Scalar, Isa::Avx2, Isa::Avx512]
        }
    }
}

/// The set in use: `LLM_ISA=scalar|avx2|avx512|neon` lowers it (never above
/// what the CPU has, and never to another architecture's set), else the best
/// detected.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = Isa::detect();
        let wanted = match std::env::var("LLM_ISA").as_deref() {
            Ok("scalar") => Isa::Scalar,
            Ok("avx2") => Isa::Avx2,
            Ok("avx512") => Isa::Avx512,
            Ok("neon") => Isa::Neon,
            _ => best,
        };
        if Isa::family().contains(&wanted) {
            wanted.min(best)
        } else {
            best
        }
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
/// One weight row against four activation rows; each result equals `DotFn`'s.
pub type Dot4Fn = fn(&[u8], [&[u8]; 4]) -> [f32; 4];
pub type QuantizeFn = fn(&[f32], &mut [u8]);

/// What a weight type's dot kernels take as activations.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Act {
    /// ggml's blocks of this type, as llama.cpp quantises them.
    Ggml(GgmlType),
    /// Two 8-bit levels a block (`fine`), for group-quantised weights.
    Fine,
}

impl Act {
    /// Bytes of `n` activations.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        match self {
            Act::Ggml(t) => t.row_size(n as u64).map(|b| b as usize),
            Act::Fine => n.is_multiple_of(fine::BLOCK).then(|| fine::row_bytes(n)),
        }
    }
}

/// Kernels for one weight type on one instruction set.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub weight: GgmlType,
    pub act: Act,
    /// Dot product of a weight row and an activation row of the same length.
    pub dot: DotFn,
    /// Four activation rows at once, where a kernel for it exists.
    pub dot4: Option<Dot4Fn>,
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
                Isa::Neon => $name::scalar as _,
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
per_isa!(d_bf16, dot::bf16_bf16_lanes, (w: &[u8], a: &[u8]) -> f32);
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
per_isa!(d_iq4_xs_lanes, dot::iq4_xs_q8_k_lanes, (w: &[u8], a: &[u8]) -> f32);
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
        #[cfg(target_arch = "x86_64")]
        Q8_0 if matches!(isa, Isa::Avx2 | Isa::Avx512) => quantize_x86::quantize_q8_0,
        Q8_0 => pick!(isa, q_q8_0),
        Q8_1 => pick!(isa, q_q8_1),
        Q8_K => pick!(isa, q_q8_k),
        F16 => pick!(isa, q_f16),
        BF16 => pick!(isa, q_bf16),
        F32 => pick!(isa, q_f32),
        other => return Err(Unsupported(other)),
    })
}

/// Safe entry points (one activation row, and four) to SIMD kernels that
/// are chosen only where `Isa::detect` found the features they need.
macro_rules! safe {
    ($m:ident; $($one:ident, $four:ident => $kernel:ident;)*) => {$(
        pub fn $one(w: &[u8], a: &[u8]) -> f32 {
            // SAFETY: selected only when Isa::detect() found the kernel's features.
            unsafe { $m::$kernel::<1>(w, [a])[0] }
        }
        pub fn $four(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            // SAFETY: as above.
            unsafe { $m::$kernel::<4>(w, a) }
        }
    )*};
}

/// Safe entry points to the x86 SIMD kernels; chosen only on CPUs that have
/// the features (`Isa::detect`).
#[cfg(target_arch = "x86_64")]
mod simd {
    use crate::cpu::x86;

    safe! { x86;
        q4_0, q4_0_x4 => q4_0_q8_0_n;
        q4_1, q4_1_x4 => q4_1_q8_1_n;
        q5_0, q5_0_x4 => q5_0_q8_0_n;
        q5_1, q5_1_x4 => q5_1_q8_1_n;
        q8_0, q8_0_x4 => q8_0_q8_0_n;
        q4_k, q4_k_x4 => q4_k_q8_k_n;
        q5_k, q5_k_x4 => q5_k_q8_k_n;
        q6_k, q6_k_x4 => q6_k_q8_k_n;
        iq4_xs, iq4_xs_x4 => iq4_xs_q8_k_n;
        iq4_nl, iq4_nl_x4 => iq4_nl_q8_0_n;
    }

    /// AVX-512 VNNI forms, chosen only where `vnni()` found the features.
    pub mod vnni {
        use crate::cpu::x86;

        safe! { x86;
            iq4_nl, iq4_nl_x4 => iq4_nl_q8_0_n_vnni;
            q4_0, q4_0_x4 => q4_0_q8_0_n_vnni;
            q5_0, q5_0_x4 => q5_0_q8_0_n_vnni;
            q8_0, q8_0_x4 => q8_0_q8_0_n_vnni;
            q4_k, q4_k_x4 => q4_k_q8_k_n_vnni;
            q6_k, q6_k_x4 => q6_k_q8_k_n_vnni;
            q4_1, q4_1_x4 => q4_1_q8_1_n_vnni;
            q5_1, q5_1_x4 => q5_1_q8_1_n_vnni;
        }
    }

    pub fn f16_avx2(w: &[u8], a: &[u8]) -> f32 {
        // SAFETY: selected only when Isa::detect() found AVX2, FMA and F16C.
        unsafe { super::x86::f16_dot_avx2(w, a) }
    }

    pub fn f16_avx512(w: &[u8], a: &[u8]) -> f32 {
        // SAFETY: selected only when Isa::detect() found AVX-512F too.
        unsafe { super::x86::f16_dot_avx512(w, a) }
    }
}

/// AVX-512 VNNI (with VL and BW), which the Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q6_K/IQ4_NL kernels use on
/// AVX-512 CPUs that have it.
#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
}

/// The hand-written SIMD kernels for `w` on `isa`, where there are some:
/// one activation row, and four at once.
#[cfg(target_arch = "x86_64")]
fn simd_kernel(w: GgmlType, isa: Isa) -> Option<(DotFn, Option<Dot4Fn>)> {
    use GgmlType::*;
    if !matches!(isa, Isa::Avx2 | Isa::Avx512) {
        return None;
    }
    if isa == Isa::Avx512 && vnni() {
        match w {
            Q4_0 => return Some((simd::vnni::q4_0, Some(simd::vnni::q4_0_x4))),
            Q5_0 => return Some((simd::vnni::q5_0, Some(simd::vnni::q5_0_x4))),
            Q8_0 => return Some((simd::vnni::q8_0, Some(simd::vnni::q8_0_x4))),
            Q4_1 => return Some((simd::vnni::q4_1, Some(simd::vnni::q4_1_x4))),
            Q5_1 => return Some((simd::vnni::q5_1, Some(simd::vnni::q5_1_x4))),
            Q4_K => return Some((simd::vnni::q4_k, Some(simd::vnni::q4_k_x4))),
            Q6_K => return Some((simd::vnni::q6_k, Some(simd::vnni::q6_k_x4))),
            IQ4_NL => return Some((simd::vnni::iq4_nl, Some(simd::vnni::iq4_nl_x4))),
            _ => {}
        }
    }
    Some(match w {
        Q4_0 => (simd::q4_0, Some(simd::q4_0_x4)),
        Q4_1 => (simd::q4_1, Some(simd::q4_1_x4)),
        Q5_0 => (simd::q5_0, Some(simd::q5_0_x4)),
        Q5_1 => (simd::q5_1, Some(simd::q5_1_x4)),
        Q8_0 => (simd::q8_0, Some(simd::q8_0_x4)),
        Q4_K => (simd::q4_k, Some(simd::q4_k_x4)),
        Q5_K => (simd::q5_k, Some(simd::q5_k_x4)),
        Q6_K => (simd::q6_k, Some(simd::q6_k_x4)),
        IQ4_XS => (simd::iq4_xs, Some(simd::iq4_xs_x4)),
        IQ4_NL => (simd::iq4_nl, Some(simd::iq4_nl_x4)),
        F16 if isa == Isa::Avx512 => (simd::f16_avx512, None),
        F16 => (simd::f16_avx2, None),
        _ => return None,
    })
}

/// Safe entry points to the aarch64 NEON kernels; chosen only where
/// `Isa::detect` found NEON.
#[cfg(target_arch = "aarch64")]
mod simd_neon {
    use crate::cpu::neon;

    safe! { neon;
        q4_0, q4_0_x4 => q4_0_q8_0_n;
        q4_1, q4_1_x4 => q4_1_q8_1_n;
        q5_0, q5_0_x4 => q5_0_q8_0_n;
        q5_1, q5_1_x4 => q5_1_q8_1_n;
        q8_0, q8_0_x4 => q8_0_q8_0_n;
        q4_k, q4_k_x4 => q4_k_q8_k_n;
        q6_k, q6_k_x4 => q6_k_q8_k_n;
    }
}

/// The hand-written NEON kernels for `w`, where there are some; other types
/// (F16 included) keep the portable kernels.
#[cfg(target_arch = "aarch64")]
fn simd_kernel(w: GgmlType, isa: Isa) -> Option<(DotFn, Option<Dot4Fn>)> {
    use GgmlType::*;
    if isa != Isa::Neon {
        return None;
    }
    Some(match w {
        Q4_0 => (simd_neon::q4_0, Some(simd_neon::q4_0_x4)),
        Q4_1 => (simd_neon::q4_1, Some(simd_neon::q4_1_x4)),
        Q5_0 => (simd_neon::q5_0, Some(simd_neon::q5_0_x4)),
        Q5_1 => (simd_neon::q5_1, Some(simd_neon::q5_1_x4)),
        Q8_0 => (simd_neon::q8_0, Some(simd_neon::q8_0_x4)),
        Q4_K => (simd_neon::q4_k, Some(simd_neon::q4_k_x4)),
        Q6_K => (simd_neon::q6_k, Some(simd_neon::q6_k_x4)),
        _ => return None,
    })
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_kernel(_: GgmlType, _: Isa) -> Option<(DotFn, Option<Dot4Fn>)> {
    None
}

/// The kernels for weight type `w` on `isa`.
pub fn kernels_for(w: GgmlType, isa: Isa) -> Result<Kernels, Unsupported> {
    let mut k = generic_kernels_for(w, isa)?;
    if let Some((dot, dot4)) = simd_kernel(w, isa) {
        k.dot = dot;
        k.dot4 = dot4;
    }
    Ok(k)
}

/// The kernels compiled from the portable source for `isa` (the reference
/// the SIMD kernels are tested against).
pub fn generic_kernels_for(w: GgmlType, isa: Isa) -> Result<Kernels, Unsupported> {
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
            // Portable on NEON: the scalar build's order.
            Isa::Neon => d_f16_scalar::scalar,
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
        // x86's SIMD order differs from ggml's generic C here (lanes, not
        // one sum): the portable form of each.
        #[cfg(target_arch = "x86_64")]
        IQ4_XS if matches!(isa, Isa::Avx2) => d_iq4_xs_lanes::avx2,
        #[cfg(target_arch = "x86_64")]
        IQ4_XS if matches!(isa, Isa::Avx512) => d_iq4_xs_lanes::avx512,
        IQ4_XS => pick!(isa, d_iq4_xs),
        other => return Err(Unsupported(other)),
    };
    Ok(Kernels {
        weight: w,
        act: Act::Ggml(act),
        dot,
        dot4: None,
        quantize: quantizer(act, isa)?,
    })
}

/// The kernels for `w` on the instruction set in use.
pub fn kernels(w: GgmlType) -> Result<Kernels, Unsupported> {
    kernels_for(w, isa())
}

/// The kernels for weights of format `f` on `isa`: group-quantised weights
/// take fine activations (`fine`) where their block type has kernels for them.
pub fn kernels_for_format(f: WeightFormat, isa: Isa) -> Result<Kernels, Unsupported> {
    let w = f.ggml();
    match fine::kernels(w, isa) {
        Some((dot, dot4, quantize)) if f.precise_activations() => Ok(Kernels {
            weight: w,
            act: Act::Fine,
            dot,
            dot4: Some(dot4),
            quantize,
        }),
        _ => kernels_for(w, isa),
    }
}

/// Bytes of `n` activations quantised for weights of format `f`.
pub fn act_row_bytes(f: WeightFormat, n: usize) -> Result<usize, Unsupported> {
    let isa = Isa::Scalar;
    kernels_for_format(f, isa)?
        .act
        .row_bytes(n)
        .ok_or(Unsupported(f.ggml()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_blocks(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut b: Vec<u8> = (0..ty.row_size(n as u64).unwrap())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        // Finite f16 scales so every result compares bit for bit.
        let scales: &[usize] = match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => &[],
        };
        let ts = ty.type_size() as usize;
        for block in b.chunks_exact_mut(ts) {
            for &at in scales {
                block[at + 1] &= 0x3b;
            }
            if ty == GgmlType::F16 {
                block[1] &= 0x3b;
            }
        }
        b
    }

    /// Activation blocks of random bytes within what the quantisers can
    /// produce (quants in -127..=127, Q8_K block sums that match), with
    /// finite scales: the full range of every quant, unlike `quantize`.
    fn random_acts(w: GgmlType, n: usize, seed: u64) -> Vec<u8> {
        let act = dot_type(w).unwrap();
        let mut b = random_blocks(act, n, seed ^ 0x9e37_79b9_7f4a_7c15);
        let ts = act.type_size() as usize;
        let clamp = |q: &mut [u8]| q.iter_mut().for_each(|v| *v = (*v as i8).max(-127) as u8);
        for block in b.chunks_exact_mut(ts) {
            match act {
                GgmlType::Q8_0 => {
                    block[1] &= 0x3b;
                    clamp(&mut block[2..34]);
                }
                GgmlType::Q8_1 => {
                    block[1] &= 0x3b;
                    block[3] &= 0x3b;
                    clamp(&mut block[4..36]);
                }
                GgmlType::Q8_K => {
                    // f32 d: exponent below 0x7f, so finite and below 2.
                    block[3] &= 0x3f;
                    clamp(&mut block[4..260]);
                    for j in 0..16 {
                        let s: i32 = block[4 + 16 * j..20 + 16 * j]
                            .iter()
                            .map(|&q| q as i8 as i32)
                            .sum();
                        block[260 + 2 * j..262 + 2 * j].copy_from_slice(&(s as i16).to_le_bytes());
                    }
                }
                _ => {}
            }
        }
        b
    }

    /// The SIMD kernels are bit-identical to the lane-ordered portable ones,
    /// on every instruction set this CPU has (AVX2/AVX-512 on x86_64, NEON
    /// on aarch64), for one row and four rows at once.
    #[test]
    fn simd_dots_equal_the_portable_ones() {
        let isas: Vec<Isa> = Isa::available()
            .into_iter()
            .filter(|&i| i != Isa::Scalar)
            .collect();
        if cfg!(target_arch = "aarch64") {
            assert_eq!(isas, [Isa::Neon], "NEON not detected");
        }
        for isa in isas {
            let mut cases = 0;
            for ty in [
                GgmlType::Q4_0,
                GgmlType::Q4_1,
                GgmlType::Q5_0,
                GgmlType::Q5_1,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
                GgmlType::Q5_K,
                GgmlType::Q6_K,
                GgmlType::IQ4_XS,
                GgmlType::IQ4_NL,
                GgmlType::F16,
            ] {
                let fast = kernels_for(ty, isa).unwrap();
                let slow = generic_kernels_for(ty, isa).unwrap();
                let neon_has = !matches!(
                    ty,
                    GgmlType::F16 | GgmlType::IQ4_XS | GgmlType::IQ4_NL | GgmlType::Q5_K
                );
                if isa == Isa::Neon && neon_has {
                    assert!(fast.dot4.is_some(), "{ty}: no NEON kernel");
                }
                let bs = ty.block_size() as usize;
                let bs = if bs == 1 { 32 } else { bs };
                let lengths = [(4096, 1..20u64), (bs, 20..30), (4096 + 3 * bs, 30..40)];
                for (n, seeds) in lengths {
                    for seed in seeds {
                        let w = random_blocks(ty, n, seed);
                        let x: Vec<f32> = (0..n)
                            .map(|i| ((i as u64 * 2654435761 + seed) % 2001) as f32 / 1000.0 - 1.0)
                            .collect();
                        let mut a = vec![0u8; act_row_bytes(WeightFormat::Ggml(ty), n).unwrap()];
                        (fast.quantize)(&x, &mut a);
                        let (f, s) = ((fast.dot)(&w, &a), (slow.dot)(&w, &a));
                        assert_eq!(
                            f.to_bits(),
                            s.to_bits(),
                            "{ty} on {isa:?}, n {n} seed {seed}: simd {f} portable {s}"
                        );
                        cases += 1;
                        if let Some(dot4) = fast.dot4 {
                            let xr: Vec<f32> = x.iter().rev().map(|v| v * 3.0).collect();
                            let mut b = vec![0u8; a.len()];
                            (fast.quantize)(&xr, &mut b);
                            let r = random_acts(ty, n, seed);
                            let four = dot4(&w, [&a, &b, &r, &b]);
                            let fb = (slow.dot)(&w, &b);
                            let fr = (slow.dot)(&w, &r);
                            assert_eq!(
                                four.map(f32::to_bits),
                                [s, fb, fr, fb].map(f32::to_bits),
                                "{ty} x4 on {isa:?}, n {n} seed {seed}"
                            );
                            let fr1 = (fast.dot)(&w, &r);
                            assert_eq!(
                                fr1.to_bits(),
                                fr.to_bits(),
                                "{ty} on {isa:?}, raw activations, n {n} seed {seed}"
                            );
                            cases += 5;
                        }
                    }
                }
            }
            eprintln!("{isa:?}: {cases} bit-identical cases");
        }
    }
}
