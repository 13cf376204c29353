//! SmolLM2 requantised by llama.cpp's own quantiser (`llama_model_quantize`,
//! through the oracle crate) to the types the CPU speed issue measures: Q4_0,
//! Q8_0, Q4_K_M and IQ4_XS, and Q5_K_M (a common download, whose Q5_K rows
//! have an AVX2 kernel of their own). Not a test: `scripts/requantize-models.sh` runs
//! it and prints the files, cached beside the real models
//! (`SmolLM2-135M-Instruct.<type>.requant.gguf`); a file already there is
//! kept. The source is Q4_1, so these are requantisations (as the issue
//! asks): their quality is not the point, their tensor types and shapes are.
#![cfg(feature = "oracle")]

mod common;

use std::ffi::CString;

use common::*;
use llama_cpp_sys_2 as sys;

#[test]
#[ignore = "writes requantised models into the model cache"]
fn requantize_smollm2() {
    let src = real_model(SMOLLM2);
    let types = [
        ("Q4_0", sys::LLAMA_FTYPE_MOSTLY_Q4_0),
        ("Q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0),
        ("Q4_K_M", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M),
        ("IQ4_XS", sys::LLAMA_FTYPE_MOSTLY_IQ4_XS),
        ("Q5_K_M", sys::LLAMA_FTYPE_MOSTLY_Q5_K_M),
    ];
    // SAFETY: initialises llama.cpp's backends once, before any other call.
    unsafe { sys::llama_backend_init() };
    for (name, ftype) in types {
        let out = models_dir().join(format!("SmolLM2-135M-Instruct.{name}.requant.gguf"));
        if !out.is_file() {
            quantize(&src, &out, name, ftype);
        }
        println!("{}", out.display());
    }
}

/// Any file through llama.cpp's quantiser: `LLM_REQUANT_IN=src.gguf
/// LLM_REQUANT_OUT=out.gguf LLM_REQUANT_TYPE=Q4_K_M|Q4_0|Q8_0|IQ4_XS|Q5_K_M`
/// (for the CPU's roofline, a 1B-shaped F16 file of our writer's, as
/// llama.cpp's users make their Q4_K_M).
#[test]
#[ignore = "writes where LLM_REQUANT_OUT says"]
fn requantize_a_file() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let name = var("LLM_REQUANT_TYPE");
    let ftype = match name.as_str() {
        "Q4_0" => sys::LLAMA_FTYPE_MOSTLY_Q4_0,
        "Q8_0" => sys::LLAMA_FTYPE_MOSTLY_Q8_0,
        "Q4_K_M" => sys::LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "IQ4_XS" => sys::LLAMA_FTYPE_MOSTLY_IQ4_XS,
        "Q5_K_M" => sys::LLAMA_FTYPE_MOSTLY_Q5_K_M,
        other => panic!("LLM_REQUANT_TYPE={other} is not one of Q4_0 Q8_0 Q4_K_M IQ4_XS Q5_K_M"),
    };
    // SAFETY: as in `requantize_smollm2`.
    unsafe { sys::llama_backend_init() };
    let out = std::path::PathBuf::from(var("LLM_REQUANT_OUT"));
    quantize(
        std::path::Path::new(&var("LLM_REQUANT_IN")),
        &out,
        &name,
        ftype,
    );
    println!("{}", out.display());
}

/// `src` quantised to `ftype` at `out` (written beside it first, renamed
/// when whole).
fn quantize(src: &std::path::Path, out: &std::path::Path, name: &str, ftype: sys::llama_ftype) {
    let tmp = out.with_extension("partial");
    let cin = CString::new(src.to_str().unwrap()).unwrap();
    let cout = CString::new(tmp.to_str().unwrap()).unwrap();
    // SAFETY: the default parameters, then plain fields; both paths are
    // NUL-terminated strings that outlive the call.
    let rc = unsafe {
        let mut p = sys::llama_model_quantize_default_params();
        p.ftype = ftype;
        p.allow_requantize = true;
        p.nthread = std::thread::available_parallelism().map_or(1, |n| n.get() as i32);
        sys::llama_model_quantize(cin.as_ptr(), cout.as_ptr(), &p)
    };
    assert_eq!(rc, 0, "llama_model_quantize to {name} failed");
    std::fs::rename(&tmp, out).unwrap();
}
