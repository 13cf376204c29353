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

/// The gap between the two largest logits.
pub fn top2_gap(x: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in x {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `llm` with no user configuration: a developer's own models.toml or
/// model directories must not change what the tests see.
pub fn llm_command() -> Command {
    // LLM_BIN: the binary beside a test built elsewhere (scripts/gpu-suite.sh).
    let bin = std::env::var_os("LLM_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_llm").into());
    let mut cmd = Command::new(bin);
    cmd.env("XDG_CONFIG_HOME", "/nonexistent/llm-test-config")
        .env_remove("LLM_MODELS")
        .env_remove("NO_COLOR");
    cmd
}

pub fn llm(args: &[&str]) -> Run {
    llm_env(args, &[])
}

/// `llm` with variables `env` set.
pub fn llm_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out: Output = llm_command()
        .args(args)
        .envs(env.iter().copied())
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

/// Runs `llm` with `stdin` as its standard input (a pipe).
pub fn llm_stdin(args: &[&str], stdin: &[u8]) -> Run {
    llm_stdin_env(args, stdin, &[])
}

/// `llm_stdin` with variables `env` set.
pub fn llm_stdin_env(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    use std::io::Write;
    let mut child = llm_command()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run llm");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    // Written from a thread: llm may answer before it has read everything.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for llm");
    writer.join().expect("stdin writer");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Renders `source` for `messages` (role, content) with the generation
/// prompt, through scripts/render_templates.py (Python's jinja2 set up as
/// Hugging Face does): an oracle independent of our renderer.
pub fn render_with_python(source: &str, bos: &str, eos: &str, messages: &[(&str, &str)]) -> String {
    use std::io::Write;
    let msgs: Vec<serde_json::Value> = messages
        .iter()
        .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
        .collect();
    let job = serde_json::json!({
        "templates": {"t": {"source": source, "bos_token": bos, "eos_token": eos}},
        "conversations": {"c": msgs},
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/render_templates.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for template oracles (apt-get install python3-jinja2)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "render_templates.py failed (apt-get install python3-jinja2?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let answer = answers
        .iter()
        .find(|a| a["add_generation_prompt"] == true)
        .expect("an answer with the generation prompt");
    answer["output"]
        .as_str()
        .unwrap_or_else(|| panic!("python could not render: {}", answer["error"]))
        .to_string()
}

/// The weight type LLM_WRITE_TYPE names (default Q4_K), for the ignored
/// model writers.
pub fn weight_type_from_env() -> ggml::GgmlType {
    let ty = std::env::var("LLM_WRITE_TYPE").unwrap_or_else(|_| "Q4_K".into());
    ggml::blocks::WEIGHT_TYPES
        .iter()
        .copied()
        .find(|t| t.name().eq_ignore_ascii_case(&ty))
        .unwrap_or_else(|| panic!("LLM_WRITE_TYPE={ty} is not a weight type"))
}
