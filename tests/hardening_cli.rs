//! Hostile or odd input to the real binary: chat templates that blow up
//! memory, FIFOs where files are expected, signals while loading and
//! replying, and messages too long to be worth tokenizing.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use llm::format::gguf::{GgufFile, Metadata, Value};
use llm::model::synth::{synthesize, Spec};

/// A template that doubles a string forty times: a terabyte unbounded.
fn doubling_concat() -> String {
    let mut t = String::from("{% set ns = namespace(s='ab') %}");
    for _ in 0..40 {
        t += "{% set ns.s = ns.s ~ ns.s %}";
    }
    t + "{{ ns.s|length }}"
}

/// The same through `|replace`, each step doubling every character.
fn doubling_replace() -> String {
    let mut t = String::from("{% set ns = namespace(s='abcd') %}");
    for _ in 0..40 {
        t += "{% set ns.s = ns.s|replace('', 'x') %}";
    }
    t + "{{ ns.s|length }}"
}

/// Runs `cmd` with its address space capped at `cap` bytes, so that a
/// regression fails with an allocation error instead of taking the
/// machine's memory.
fn run_capped_with_stdin(cmd: &mut Command, cap: u64, stdin: &[u8]) -> Run {
    use std::io::Write;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: cap,
                rlim_max: cap,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run llm");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out: Output = child.wait_with_output().expect("wait for llm");
    writer.join().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run_capped(cmd: &mut Command) -> Run {
    run_capped_with_stdin(cmd, 6 << 30, b"")
}

/// A small random model with SmolLM2's vocabulary and `template` as its own
/// chat template.
fn model_with_template(dir: &Path, template: &str) -> PathBuf {
    let vocab = GgufFile::open(&real_model(SMOLLM2)).unwrap();
    let mut md = Metadata::default();
    for (k, v) in vocab.metadata().iter() {
        if k != "tokenizer.chat_template" {
            md.insert(k.to_string(), v.clone());
        }
    }
    md.insert(
        "tokenizer.chat_template".into(),
        Value::String(template.into()),
    );
    let spec = Spec {
        arch: "llama".into(),
        weight: ggml::GgmlType::Q8_0,
        n_layer: 1,
        n_embd: 64,
        n_head: 2,
        n_head_kv: 1,
        n_ff: 128,
        n_ctx: 256,
        tied: true,
        seed: 7,
        longrope_orig: None,
        rope_scaling: None,
    };
    let path = dir.join("hostile.gguf");
    synthesize(&spec, &md).unwrap().write_to(&path).unwrap();
    path
}

fn assert_memory_limit_error(run: &Run, what: &str) {
    assert_eq!(run.code, Some(1), "{what}: {}", run.stderr);
    assert!(
        run.stderr.contains("memory limit"),
        "{what}: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr.trim().lines().count(),
        1,
        "{what}: {}",
        run.stderr
    );
}

#[test]
fn a_template_file_that_blows_up_memory_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = real_model(SMOLLM2);
    for (name, source) in [
        ("concat", doubling_concat()),
        ("replace", doubling_replace()),
    ] {
        let t = dir.path().join(format!("{name}.jinja"));
        std::fs::write(&t, source).unwrap();
        let run = run_capped(llm_command().args([
            "chat",
            path_str(&m),
            "-t",
            "2",
            "--temp",
            "0",
            "--chat-template-file",
            path_str(&t),
            "-p",
            "hi",
        ]));
        assert_memory_limit_error(&run, name);
    }
}

#[test]
fn a_model_whose_own_template_blows_up_memory_does_not_crash_info_or_chat() {
    for (name, source) in [
        ("concat", doubling_concat()),
        ("replace", doubling_replace()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let m = model_with_template(dir.path(), &source);
        let info = run_capped(llm_command().args(["info", path_str(&m)]));
        assert_eq!(info.code, Some(0), "{name}: {}", info.stderr);
        let lines: Vec<&str> = info
            .stdout
            .lines()
            .chain(info.stderr.lines())
            .filter(|l| l.contains("memory limit"))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: {}{}", info.stdout, info.stderr);
        // The rest of the report is still there.
        assert!(info.stdout.contains("llama"), "{name}: {}", info.stdout);

        let chat = run_capped(llm_command().args([
            "chat",
            path_str(&m),
            "-t",
            "2",
            "--temp",
            "0",
            "-p",
            "hi",
        ]));
        assert_memory_limit_error(&chat, name);
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path_str(path)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Waits until process `pid` holds `path` open. A hang guard bounds it: a
/// process that never opens the file fails the test instead of hanging it.
fn wait_until_open(pid: u32, path: &Path) {
    let fds = PathBuf::from(format!("/proc/{pid}/fd"));
    for _ in 0..30_000 {
        if let Ok(entries) = std::fs::read_dir(&fds) {
            for e in entries.flatten() {
                if std::fs::read_link(e.path()).is_ok_and(|t| t == path) {
                    return;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("llm never opened {}", path.display());
}

/// Writes `text` to the FIFO `path` from a thread (opening it waits for the
/// reader).
fn feed_fifo(path: &Path, text: &str) -> std::thread::JoinHandle<()> {
    let (path, text) = (path.to_path_buf(), text.to_string());
    std::thread::spawn(move || std::fs::write(path, text).unwrap())
}

#[test]
fn a_fifo_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.gguf");
    mkfifo(&fifo);
    for args in [
        vec!["info", path_str(&fifo)],
        vec!["chat", path_str(&fifo), "-p", "hi"],
        vec!["run", path_str(&fifo), "-p", "hi"],
    ] {
        // Nobody writes: a program that opens the FIFO waits forever, which
        // the harness would report as a hang.
        let run = llm(&args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("not a regular file"),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
}

#[test]
fn text_inputs_may_be_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let m = real_model(SMOLLM2);
    let template = dir.path().join("template");
    let system = dir.path().join("system");
    mkfifo(&template);
    mkfifo(&system);
    let writers = [
        feed_fifo(
            &template,
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n",
        ),
        feed_fifo(&system, "You are terse."),
    ];
    let run = llm(&[
        "chat",
        path_str(&m),
        "-t",
        "2",
        "--temp",
        "0",
        "-n",
        "2",
        "--verbose-prompt",
        "--chat-template-file",
        path_str(&template),
        "--system-file",
        path_str(&system),
        "-p",
        "hi",
    ]);
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("<|im_start|>system\nYou are terse.<|im_end|>"),
        "{}",
        run.stderr
    );

    let prompt = dir.path().join("prompt");
    mkfifo(&prompt);
    let writer = feed_fifo(&prompt, "The capital of France is");
    let run = llm(&[
        "run",
        path_str(&m),
        "-t",
        "2",
        "--temp",
        "0",
        "-n",
        "2",
        "-f",
        path_str(&prompt),
    ]);
    writer.join().unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stdout.trim().is_empty(), "{}", run.stdout);
}

/// `llm chat` held in its loading phase by a FIFO nobody writes to, then
/// sent `signal`: it ends at once with 128 + the signal, having written
/// nothing.
fn signal_while_loading(signal: libc::c_int) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let system = dir.path().join("system");
    mkfifo(&system);
    let m = real_model(SMOLLM2);
    let child = llm_command()
        .args([
            "chat",
            path_str(&m),
            "-t",
            "2",
            "--system-file",
            path_str(&system),
            "-p",
            "Tell me a long story.",
            "--ignore-eos",
            "-n",
            "5000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_open(child.id(), &system);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    child.wait_with_output().unwrap()
}

#[test]
fn ctrl_c_or_sigterm_while_loading_ends_at_once() {
    let out = signal_while_loading(libc::SIGINT);
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let out = signal_while_loading(libc::SIGTERM);
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn sigterm_stops_a_one_shot_reply_like_ctrl_c() {
    use std::io::Read;
    let m = real_model(SMOLLM2);
    let mut child = llm_command()
        .args([
            "chat",
            path_str(&m),
            "-t",
            "2",
            "--temp",
            "0",
            "-p",
            "Tell me a long story.",
            "--ignore-eos",
            "-n",
            "5000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("the reply starts");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        rest.ends_with(b"\n"),
        "the partial reply ends with a newline"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[test]
fn a_huge_message_is_refused_before_it_is_tokenized() {
    let m = real_model(SMOLLM2);
    // 10 MB on one line: tokenizing it would take seconds and gigabytes,
    // more than the capped address space allows.
    let line = "word ".repeat(2 << 20);
    for (mode, args, input) in [
        ("-p -", vec!["-p", "-"], line.clone()),
        ("scripted", vec![], format!("{line}\n")),
    ] {
        let mut cmd = llm_command();
        cmd.args(["chat", path_str(&m), "-t", "2", "--temp", "0"])
            .args(&args);
        let run = run_capped_with_stdin(&mut cmd, 2 << 30, input.as_bytes());
        assert_eq!(run.code, Some(1), "{mode}: {}", run.stderr);
        assert!(run.stderr.contains("too long"), "{mode}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
}
