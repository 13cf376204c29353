//! The CUDA backend: kernels compiled ahead of time (`kernels/*.cu`, built
//! by scripts/build-kernels.sh into fatbins that are embedded here) and run
//! through the driver API, loaded at run time. A binary built anywhere runs
//! on the CPU where there is no NVIDIA driver.

pub mod backend;
pub mod driver;
mod kvcache;
mod matvec1;
pub mod stream;

pub use backend::CudaBackend;
pub use driver::{devices, DeviceInfo};
pub use stream::LayerRoom;

/// The embedded kernel images, by module name.
pub(crate) const MODULES: &[(&str, &[u8])] = &[
    ("ops", include_bytes!("kernels/build/ops.fatbin")),
    ("matmul", include_bytes!("kernels/build/matmul.fatbin")),
    ("kvcache", include_bytes!("kernels/build/kvcache.fatbin")),
];

/// What `llm --version` says: the GPU architectures the embedded kernels
/// carry machine code for, and the PTX for newer ones.
pub fn compiled_for() -> String {
    let manifest = include_str!("kernels/build/manifest.txt");
    let line = |key: &str| {
        manifest
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    let archs = line("archs:");
    let (sms, ptx) = archs.split_once("ptx:").unwrap_or((&archs, "?"));
    let sms: Vec<String> = sms.split_whitespace().map(|a| format!("sm_{a}")).collect();
    format!(
        "CUDA {} ({}, PTX {})",
        line("nvcc:")
            .split(',')
            .next()
            .unwrap_or("?")
            .trim_start_matches("release "),
        sms.join(" "),
        ptx.trim()
    )
}
