//! Helpers for tests that run the real `llm` binary.
#![allow(dead_code)]

pub mod corpus;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The cache that scripts/fetch-models.sh fills.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LLM_TEST_MODELS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    cache.join("llm/test-models")
}

/// A real test model; fails with instructions when it has not been fetched.
pub fn real_model(name: &str) -> PathBuf {
    let path = models_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh first (or set LLM_TEST_MODELS)",
        path.display()
    );
    path
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
pub const QWEN2_TRUNCATED: &str = "deepseek-r1-distill-qwen-7b.truncated.gguf";

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn llm(args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_llm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run llm");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}
