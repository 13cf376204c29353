//! Safe wrappers over the llama.cpp / ggml oracle (feature `oracle`): tests and
//! benchmarks compare our results with it. Never used by the engine.

use std::ffi::c_void;
use std::sync::Once;

use ggml::GgmlType;
use llama_cpp_sys_2 as sys;

/// ggml's CPU backend keeps tables that its first user must build.
fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| unsafe {
        sys::llama_backend_init();
    });
}

fn ggml_type(ty: GgmlType) -> sys::ggml_type {
    ty.id() as sys::ggml_type
}

/// ggml's `to_float` for `ty`, if it has one, applied to whole blocks.
pub fn to_float(ty: GgmlType, src: &[u8]) -> Option<Vec<f32>> {
    init();
    let blocks = src.len() / ty.type_size() as usize;
    assert_eq!(blocks * ty.type_size() as usize, src.len(), "whole blocks only");
    let n = blocks * ty.block_size() as usize;
    let mut out = vec![0f32; n];
    // SAFETY: ggml_get_type_traits returns a static table entry for valid ids;
    // to_float reads `n` elements' worth of blocks from `src` (its exact length)
    // and writes `n` floats to `out`.
    unsafe {
        let traits = sys::ggml_get_type_traits(ggml_type(ty));
        let f = (*traits).to_float?;
        f(src.as_ptr() as *const c_void, out.as_mut_ptr(), n as i64);
    }
    Some(out)
}
