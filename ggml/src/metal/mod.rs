//! The Metal backend for Apple GPUs, begun: device discovery (for `llm
//! devices` and, later, the planner's budget on unified memory) and the MSL
//! kernels' library, compiled from the embedded sources on first use. The
//! kernels are type-checked on Linux by scripts/check-msl.sh and the host
//! code for aarch64-apple-darwin by scripts/check-apple.sh; neither has run
//! on a Mac (README, "Metal").

pub mod args;
#[cfg(target_vendor = "apple")]
pub mod backend;
#[cfg(target_vendor = "apple")]
mod device;
pub mod hazards;
#[cfg(target_vendor = "apple")]
pub mod library;

#[cfg(target_vendor = "apple")]
pub use backend::MetalBackend;

/// The MSL sources, by file name: headers first (the library is one
/// translation unit, headers once, each kernel file's own includes of them
/// dropped).
pub const SOURCES: &[(&str, &str)] = &[
    ("blocks.h", include_str!("kernels/blocks.h")),
    (
        "elementwise.metal",
        include_str!("kernels/elementwise.metal"),
    ),
    ("norm.metal", include_str!("kernels/norm.metal")),
    ("matvec.metal", include_str!("kernels/matvec.metal")),
    ("rope.metal", include_str!("kernels/rope.metal")),
    ("attention.metal", include_str!("kernels/attention.metal")),
    ("matmul.metal", include_str!("kernels/matmul.metal")),
    ("cache.metal", include_str!("kernels/cache.metal")),
];

/// The whole library's source as Metal's compiler takes it.
pub fn library_source() -> String {
    let mut src = String::from("#include <metal_stdlib>\nusing namespace metal;\n");
    for (name, text) in SOURCES {
        src.push_str(&format!("// ---- {name}\n"));
        for line in text.lines() {
            let t = line.trim_start();
            let local_include = t.starts_with("#include \"");
            if local_include || t == "#pragma once" {
                continue;
            }
            src.push_str(line);
            src.push('\n');
        }
    }
    src
}

/// Why a model's layers cannot run on Metal with a KV cache of `kv` and
/// heads of `head_dim` values (the attention kernel reads an f16 cache, a
/// lane a value of each 32, heads up to 256); None where they can. The
/// loader keeps such a model on the CPU with this as the reason, and the
/// backend refuses such a cache with it.
pub fn cannot_run(head_dim: usize, kv: crate::backend::KvTypes) -> Option<String> {
    if !kv.is_f16() {
        return Some(format!(
            "Metal: a KV cache of {kv} is not on Metal yet (f16 is: -ctk f16 -ctv f16)"
        ));
    }
    if !head_dim.is_multiple_of(32) || head_dim > 256 {
        return Some(format!(
            "Metal: attention takes heads of a multiple of 32 values up to 256, and this model's are {head_dim}"
        ));
    }
    None
}

/// A Metal device as `llm devices` lists it.
#[derive(Clone, Debug)]
pub struct MetalDeviceInfo {
    pub index: usize,
    pub name: String,
    /// What Metal recommends a process keep resident on the device: the
    /// budget `-ngl auto` is to fit on unified memory.
    pub working_set: u64,
    /// Bytes this process has allocated on the device.
    pub allocated: u64,
    /// Whether the GPU shares the host's memory (Apple silicon).
    pub unified: bool,
}

/// The Metal devices of this machine; none off Apple platforms.
pub fn devices() -> Vec<MetalDeviceInfo> {
    #[cfg(target_vendor = "apple")]
    {
        device::list()
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        Vec::new()
    }
}

/// What `llm --version` says of Metal.
pub fn compiled_for() -> &'static str {
    if cfg!(target_vendor = "apple") {
        "Metal (MSL compiled at run time; not yet run on a Mac)"
    } else {
        "no Metal (not an Apple build)"
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::GgmlType;

    /// blocks.h asserts each block's size with a message "TYPE ELEMENTS";
    /// those must be the Rust type table's, for every weight type the CPU runs.
    #[test]
    fn msl_block_sizes_are_the_type_tables() {
        let header = SOURCES.iter().find(|(n, _)| *n == "blocks.h").unwrap().1;
        let mut seen = Vec::new();
        for line in header
            .lines()
            .filter(|l| l.starts_with("static_assert(sizeof("))
        {
            let bytes: u64 = line
                .split("== ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no size in {line}"));
            let msg = line
                .split('"')
                .nth(1)
                .unwrap_or_else(|| panic!("no message in {line}"));
            let (name, elems) = msg.split_once(' ').unwrap();
            let t = GgmlType::from_name(name).unwrap_or_else(|| panic!("unknown type {name}"));
            assert_eq!(t.type_size(), bytes, "{name}: bytes a block");
            assert_eq!(
                t.block_size(),
                elems.parse::<u64>().unwrap(),
                "{name}: elements a block"
            );
            seen.push(t);
        }
        for &t in crate::blocks::WEIGHT_TYPES {
            assert!(seen.contains(&t), "blocks.h does not assert {}", t.name());
        }
    }

    #[test]
    fn metal_runs_f16_caches_of_whole_simdgroup_heads() {
        use crate::backend::KvTypes;
        use crate::GgmlType::Q8_0;
        for hd in [64, 128, 256] {
            assert_eq!(cannot_run(hd, KvTypes::F16), None, "{hd}");
        }
        for hd in [80, 96 + 8, 512] {
            assert!(cannot_run(hd, KvTypes::F16).unwrap().contains("heads"));
        }
        let q8 = KvTypes { k: Q8_0, v: Q8_0 };
        let why = cannot_run(128, q8).unwrap();
        assert!(why.contains("q8_0") && !why.contains('\n'), "{why}");
    }

    #[test]
    fn the_library_is_one_unit_with_headers_once() {
        let src = library_source();
        assert_eq!(src.matches("struct block_q4_0 {").count(), 1);
        assert!(!src.contains("#include \""));
        for name in [
            "add_f32",
            "add_bias_f32",
            "scale_f32",
            "glu_f32",
            "rms_norm_f32",
        ] {
            assert!(src.contains(&format!("kernel void {name}(")), "{name}");
        }
    }
}
