//! The CUDA backend: kernels compiled ahead of time (`kernels/*.cu`, built
//! by scripts/build-kernels.sh into fatbins that are embedded here) and run
//! through the driver API, loaded at run time. A binary built anywhere runs
//! on the CPU where there is no NVIDIA driver.

pub mod backend;
pub mod driver;
mod kvcache;
mod matvec1;
pub mod stream;
mod tile;

pub use backend::CudaBackend;
pub use driver::{devices, DeviceInfo};
pub use stream::LayerRoom;

/// The embedded kernel images, by module name.
pub(crate) const MODULES: &[(&str, &[u8])] = &[
    ("ops", include_bytes!("kernels/build/ops.fatbin")),
    ("matmul", include_bytes!("kernels/build/matmul.fatbin")),
    (
        "matvec1_lean",
        include_bytes!("kernels/build/matvec1_lean.fatbin"),
    ),
    ("kvcache", include_bytes!("kernels/build/kvcache.fatbin")),
    ("tile", include_bytes!("kernels/build/tile.fatbin")),
    (
        "attention_tc",
        include_bytes!("kernels/build/attention_tc.fatbin"),
    ),
];

/// Modules built for Hopper alone (sm_90a: its warpgroup instructions do
/// not exist elsewhere), loaded on compute 9.0 only.
pub(crate) const HOPPER_MODULES: &[(&str, &[u8])] = &[(
    "gemm_sm90",
    include_bytes!("kernels/build/gemm_sm90.fatbin"),
)];

/// A module's image from `$LLM_CUDA_MODULE_DIR/<name>.cubin` (or `.fatbin`)
/// when that file exists: a developer's way to time a kernel variant on the
/// GPU machine beside the embedded one without building llm there.
pub(crate) fn module_override(name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("LLM_CUDA_MODULE_DIR")?;
    ["cubin", "fatbin"].iter().find_map(|ext| {
        let path = std::path::Path::new(&dir).join(format!("{name}.{ext}"));
        let image = std::fs::read(&path).ok()?;
        eprintln!("llm: CUDA module {name} from {}", path.display());
        Some(image)
    })
}

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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    /// The kernels' own checks compiled by the host C++ compiler against the
    /// CPU emulator (kernels/emu), so that they run without a GPU;
    /// misaligned vector loads are caught by the sanitizer. No timing is
    /// checked.
    fn emulated(test: &str) {
        let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda/kernels");
        let dir = std::env::temp_dir().join(format!("llm-cuda-emu-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        let exe = dir.join(test);
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
        let built = Command::new(&cxx)
            .current_dir(&kernels)
            .args([
                "-std=c++17",
                "-O2",
                "-ffp-contract=off",
                "-fsanitize=alignment",
            ])
            .args(["-fno-sanitize-recover=alignment", "-I", "emu", "-x", "c++"])
            .arg(format!("{test}.cu"))
            .arg("-o")
            .arg(&exe)
            .status()
            .unwrap_or_else(|e| panic!("{cxx} (set CXX for another C++ compiler): {e}"));
        assert!(
            built.success(),
            "{test}.cu does not compile against kernels/emu"
        );
        let run = Command::new(&exe)
            .output()
            .expect("the emulated checks run");
        let stdout = String::from_utf8_lossy(&run.stdout);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            run.status.success() && stdout.contains("all ok"),
            "{test} on the emulator failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }

    /// kernels/test_matmul.cu: exact dequantisation, every one-token and
    /// batched product against a double-precision reference, the
    /// X-stationary variants (the tensor-core products left out: too slow
    /// emulated).
    #[test]
    fn kernel_checks_pass_on_the_cpu_emulator() {
        emulated("test_matmul");
    }

    /// kernels/test_ops.cu: the fused decode attention equals rope_store
    /// then attention_vec to the bit, cache included.
    #[test]
    fn fused_op_checks_pass_on_the_cpu_emulator() {
        emulated("test_ops");
    }

    /// Device functions that a kernel calls before it waits, which wait
    /// inside (rope_attention_vec: rope's angles and the cache's first
    /// round before its `ready`).
    const WAIT_INSIDE: [&str; 1] = ["rope_attention_vec"];

    /// Whether `name`'s definition in `text` calls pdl_begin().
    fn waits_inside(text: &str, name: &str) -> bool {
        let Some(def) = text.find(&format!("void {name}(")) else {
            return false;
        };
        let body = &text[def..];
        let end = body.find("\n}\n").unwrap_or(body.len());
        body[..end].contains("gq::pdl_begin()")
    }

    /// Where kernels launch early (kernels/pdl.cuh), a kernel that does not
    /// wait for the one before it would race it: every kernel calls
    /// pdl_begin() near the top of its body, before any return (the lean
    /// products' loads of weights before it are checked by hand: no kernel
    /// writes weights).
    #[test]
    fn every_kernel_waits_for_the_one_before() {
        let sources = [
            ("ops.cu", include_str!("kernels/ops.cu")),
            ("matmul.cu", include_str!("kernels/matmul.cu")),
            ("matvec1_lean.cu", include_str!("kernels/matvec1_lean.cu")),
            ("kvcache.cu", include_str!("kernels/kvcache.cu")),
            ("tile.cu", include_str!("kernels/tile.cu")),
            ("attention_tc.cu", include_str!("kernels/attention_tc.cu")),
        ];
        let mut kernels = 0;
        for (file, text) in sources {
            for piece in text.split("__global__").skip(1) {
                let body = &piece[piece.find('{').expect("a kernel body")..];
                let head = &body[..body.len().min(800)];
                // pdl_begin() or pdl_begin(release_first), or a call of a
                // device function that waits inside, after work that reads
                // nothing an earlier kernel writes.
                let at = head.find("pdl_begin(").or_else(|| {
                    WAIT_INSIDE
                        .iter()
                        .filter(|f| waits_inside(text, f))
                        .find_map(|f| head.find(&format!("{f}<")))
                });
                let name: String = piece.chars().take(80).collect();
                assert!(at.is_some(), "{file}: a kernel without pdl_begin: {name}");
                assert!(
                    !head[..at.unwrap()].contains("return"),
                    "{file}: a kernel returns before pdl_begin: {name}"
                );
                kernels += 1;
            }
        }
        assert!(kernels >= 30, "{kernels} kernels found");
    }
}
