//! `llm chat` as scripts use it: one-shot and piped modes, stdin that is
//! /dev/null or closed, a broken pipe, llama.cpp's flag spellings, the
//! catalogue, and errors. Runs the real binary on the real models.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use llm::format::gguf::{GgufFile, Metadata};
use llm::model::synth::{synthesize, Spec};

fn smollm2() -> PathBuf {
    real_model(SMOLLM2)
}

/// Greedy, short, two threads: what most tests here need.
fn quick<'a>(model: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["chat", path_str(model), "--temp", "0", "-t", "2", "-n", "8"];
    args.extend_from_slice(extra);
    args
}

fn no_escape_codes(run: &Run) {
    assert!(
        !run.stdout.contains('\x1b'),
        "colour codes on a pipe: {:?}",
        run.stdout
    );
    assert!(
        !run.stderr.contains('\x1b'),
        "colour codes on a pipe: {:?}",
        run.stderr
    );
}

#[test]
fn one_shot_writes_the_reply_and_one_newline_only() {
    let m = smollm2();
    let run = llm(&quick(&m, &["-p", "Say hello."]));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.ends_with('\n') && !run.stdout.ends_with("\n\n"),
        "{:?}",
        run.stdout
    );
    assert!(!run.stdout.trim().is_empty());
    // The speed line goes to stderr.
    assert!(run.stderr.contains("[ prompt "), "{}", run.stderr);
    no_escape_codes(&run);
    let quiet = llm(&quick(&m, &["-p", "Say hello.", "--no-stats"]));
    assert_eq!(quiet.stdout, run.stdout, "greedy replies are reproducible");
    assert!(!quiet.stderr.contains("[ prompt "), "{}", quiet.stderr);
}

#[test]
fn dev_null_stdin_without_prompt_exits_at_once() {
    let run = llm(&["chat", path_str(&smollm2())]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

#[test]
fn closed_stdin_without_prompt_exits_at_once() {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {} chat {} <&-",
            env!("CARGO_BIN_EXE_llm"),
            path_str(&smollm2())
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

#[test]
fn piped_stdin_is_a_scripted_chat_ending_at_eof() {
    let m = smollm2();
    let run = llm_stdin(
        &quick(&m, &[]),
        b"Hello!\n\n\"\"\"\nTwo lines\nof text\n\"\"\"\n/set\n/set temp\n/exit is a bash builtin?\n",
    );
    // A mistyped command is reported and the script goes on, but it ends
    // with exit 1 so that a script's failure shows (issue 13). Three turns
    // (a line that only starts with a command word is a message): three
    // replies, each followed by a blank line.
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stderr.matches("[ prompt ").count(), 3, "{}", run.stderr);
    assert!(run.stderr.contains("needs a value"), "{}", run.stderr);
    assert!(run.stdout.ends_with("\n\n"), "{:?}", run.stdout);
    no_escape_codes(&run);
}

#[test]
fn prompt_dash_reads_stdin_and_piped_stdin_goes_before_the_prompt() {
    let m = smollm2();
    let run = llm_stdin(
        &quick(&m, &["-p", "-", "-n", "1", "--verbose-prompt"]),
        b"whole stdin\nas one message\n",
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("whole stdin\nas one message"),
        "{}",
        run.stderr
    );
    let run = llm_stdin(
        &quick(&m, &["-p", "Summarise it.", "-n", "1", "--verbose-prompt"]),
        b"Some piped text.\n",
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("Some piped text.\n\nSummarise it."),
        "{}",
        run.stderr
    );
    // One turn only: the piped text is not also a scripted chat.
    assert_eq!(run.stderr.matches("[ prompt ").count(), 1, "{}", run.stderr);
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} chat {} -p 'Tell me a long story.' -n 200 --ignore-eos -t 2 | head -c 1 >/dev/null; echo \"status ${{PIPESTATUS[0]}}\"",
            env!("CARGO_BIN_EXE_llm"),
            path_str(&smollm2())
        ))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.trim(), "status 0", "{stderr}");
    assert!(!stderr.contains("llm:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_closed_stderr_or_merged_output_ends_quietly_too() {
    let llm = env!("CARGO_BIN_EXE_llm");
    let m = smollm2();
    for script in [
        format!("printf 'Hi\\nTell me about cats\\nBye\\n' | {llm} chat {} -t 2 -n 20 2>&1 | head -1 >/dev/null; echo \"status ${{PIPESTATUS[1]}}\"", path_str(&m)),
        format!("{llm} chat {} -p hi -t 2 -n 20 2>&1 >/dev/null | head -c1 >/dev/null; echo \"status ${{PIPESTATUS[0]}}\"", path_str(&m)),
    ] {
        let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "status 0", "{script}");
    }
}

#[test]
fn bare_llama_cpp_flags_do_not_swallow_the_next_one() {
    let m = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys.txt");
    std::fs::write(&sys, "You answer in French.").unwrap();
    let run = llm(&quick(
        &m,
        &[
            "-fa",
            "-ngl",
            "99",
            "-co",
            "-sysf",
            path_str(&sys),
            "-cnv",
            "-mli",
            "-p",
            "Hi",
            "-n",
            "1",
            "--verbose-prompt",
        ],
    ));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("You answer in French."),
        "{}",
        run.stderr
    );
    // -co alone turns colour on, even on a pipe.
    assert!(run.stderr.contains('\x1b'), "{}", run.stderr);
    let run = llm(&quick(
        &m,
        &["-co", "off", "-fa", "off", "-p", "Hi", "-n", "1"],
    ));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains('\x1b'), "{}", run.stderr);
}

#[test]
fn one_shot_ctrl_c_stops_with_130_and_keeps_the_partial_reply() {
    use std::io::Read;
    let m = smollm2();
    let mut child = llm_command()
        .args(quick(
            &m,
            &["-p", "Tell me a long story.", "--ignore-eos", "-n", "5000"],
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("the reply starts");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        rest.ends_with(b"\n"),
        "the partial reply ends with a newline"
    );
}

#[test]
fn llama_cpp_flag_spellings_work() {
    let m = smollm2();
    let run = llm(&[
        "chat",
        path_str(&m),
        "-ngl",
        "100",
        "-sys",
        "You are terse.",
        "-c",
        "512",
        "-n",
        "4",
        "-t",
        "2",
        "-fa",
        "on",
        "--temp",
        "0",
        "-p",
        "Hi",
        "--verbose-prompt",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("You are terse."), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("no NVIDIA driver").count(),
        1,
        "{}",
        run.stderr
    );
    let long = llm(&quick(
        &m,
        &["--n-gpu-layers", "100", "-p", "Hi", "-n", "1"],
    ));
    assert_eq!(long.code, Some(0), "{}", long.stderr);
    assert!(long.stderr.contains("no NVIDIA driver"), "{}", long.stderr);
    let auto = llm(&quick(&m, &["-ngl", "auto", "-p", "Hi", "-n", "1"]));
    assert_eq!(auto.code, Some(0), "{}", auto.stderr);
    let bad = llm(&quick(&m, &["-ngl", "lots", "-p", "Hi"]));
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
}

#[test]
fn each_reply_is_capped_by_n_predict() {
    let m = smollm2();
    let run = llm(&quick(
        &m,
        &[
            "-p",
            "Count from one to fifty.",
            "-n",
            "3",
            "--ignore-eos",
            "--verbose-prompt",
        ],
    ));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("| 3 tokens ]"), "{}", run.stderr);
}

#[test]
fn gemma_takes_its_template_from_the_catalogue() {
    let m = real_model(GEMMA3);
    let run = llm(&quick(&m, &["-p", "Hi", "-n", "1", "--verbose-prompt"]));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("plain"), "{}", run.stderr);
}

#[test]
fn a_user_catalogue_overrides_the_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("llm")).unwrap();
    std::fs::write(
        dir.path().join("llm/models.toml"),
        "[[family]]\nname = \"gemma3\"\narchitectures = [\"gemma3\"]\ntemplate = \"chatml\"\n",
    )
    .unwrap();
    let m = real_model(GEMMA3);
    let out = llm_command()
        .args(quick(&m, &["-p", "Hi", "-n", "1", "--verbose-prompt"]))
        .env("XDG_CONFIG_HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("<|im_start|>user\nHi<|im_end|>"),
        "{stderr}"
    );
}

#[test]
fn aliases_find_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    std::os::unix::fs::symlink(smollm2(), &link).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = llm_command()
        .args(["chat", "smollm2", "--temp", "0", "-n", "1", "-p", "Hi"])
        .env("LLM_MODELS", dir.path())
        .env("LLM_TEST_MODELS", empty.path())
        .env("XDG_CACHE_HOME", empty.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of SmolLM2's vocabulary without its chat template, in a small
/// random model that no catalogue family claims.
fn model_without_template(dir: &Path) -> PathBuf {
    let vocab = GgufFile::open(&smollm2()).unwrap();
    let mut md = Metadata::default();
    for (k, v) in vocab.metadata().iter() {
        if k != "tokenizer.chat_template" {
            md.insert(k.to_string(), v.clone());
        }
    }
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
    let path = dir.join("untemplated.gguf");
    synthesize(&spec, &md).unwrap().write_to(&path).unwrap();
    path
}

#[test]
fn a_model_without_template_falls_back_to_plain_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let m = model_without_template(dir.path());
    let run = llm(&quick(&m, &["-p", "Hi", "-n", "2", "--verbose-prompt"]));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("no chat template"), "{}", run.stderr);
    assert!(run.stderr.contains("User: Hi"), "{}", run.stderr);
    // An explicit template silences the note.
    let run = llm(&quick(
        &m,
        &["-p", "Hi", "-n", "2", "--chat-template", "zephyr"],
    ));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains("no chat template"), "{}", run.stderr);
}

#[test]
fn a_full_context_drops_the_oldest_turns_with_a_warning() {
    let m = smollm2();
    let turns: String = (1..=8)
        .map(|i| format!("Tell me fact number {i} about the ocean in one sentence.\n"))
        .collect();
    let run = llm_stdin(
        &[
            "chat",
            path_str(&m),
            "--temp",
            "0",
            "-t",
            "2",
            "-c",
            "160",
            "-n",
            "24",
            "-sys",
            "Be brief.",
        ],
        turns.as_bytes(),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("dropped the"), "{}", run.stderr);
    assert!(run.stderr.contains("system prompt stays"), "{}", run.stderr);
    assert_eq!(
        run.stdout.split_terminator("\n\n").count(),
        8,
        "{:?}",
        run.stdout
    );
}

#[test]
fn a_message_longer_than_the_context_is_an_error_not_a_truncation() {
    let m = smollm2();
    let long = "word ".repeat(400);
    let run = llm(&[
        "chat",
        path_str(&m),
        "-c",
        "128",
        "-t",
        "2",
        "--temp",
        "0",
        "-p",
        &long,
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("the context holds 128"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a model").unwrap();
    let m = smollm2();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["chat", "/nonexistent/model.gguf", "-p", "hi"],
            "no such file",
        ),
        (
            vec!["chat", path_str(dir.path()), "-p", "hi"],
            "is a directory",
        ),
        (vec!["chat", path_str(&text), "-p", "hi"], "not a GGUF file"),
        (
            vec![
                "chat",
                path_str(&m),
                "--chat-template",
                "nonesuch",
                "-p",
                "hi",
            ],
            "unknown chat template 'nonesuch'",
        ),
        (
            vec![
                "chat",
                path_str(&m),
                "--chat-template-file",
                "/nonexistent.jinja",
                "-p",
                "hi",
            ],
            "/nonexistent.jinja",
        ),
    ];
    for (args, words) in cases {
        let run = llm(&args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(words), "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stdout, "");
    }
    let usage = llm(&["chat"]);
    assert_eq!(usage.code, Some(2), "{}", usage.stderr);
}

#[test]
fn a_template_that_raises_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("strict.jinja");
    std::fs::write(&t, "{{ raise_exception('roles must alternate') }}").unwrap();
    let run = llm(&quick(
        &smollm2(),
        &["--chat-template-file", path_str(&t), "-p", "hi"],
    ));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("roles must alternate"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
}

#[test]
fn scripted_save_then_load_restores_the_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("chat.json");
    let m = smollm2();
    let script = format!(
        "/system Be brief.\nMy name is Ada.\n/save {}\n",
        saved.display()
    );
    let run = llm_stdin(&quick(&m, &[]), script.as_bytes());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(json["system"], "Be brief.");
    assert_eq!(json["messages"][0]["content"], "My name is Ada.");
    assert_eq!(json["messages"][1]["role"], "assistant");
    let script = format!("/load {}\nWhat is my name?\n", saved.display());
    let run = llm_stdin(
        &quick(&m, &["--verbose-prompt", "-n", "1"]),
        script.as_bytes(),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("Be brief."), "{}", run.stderr);
    assert!(run.stderr.contains("My name is Ada."), "{}", run.stderr);
}

#[test]
fn a_random_seed_is_said_and_a_given_one_repeats_the_reply() {
    let m = smollm2();
    let run = |seed: Option<&str>| {
        let mut args = vec![
            "chat",
            path_str(&m),
            "-t",
            "2",
            "-n",
            "12",
            "--temp",
            "1.5",
            "-p",
            "Tell me a word.",
        ];
        if let Some(s) = seed {
            args.extend(["--seed", s]);
        }
        llm(&args)
    };
    let random = run(None);
    assert_eq!(random.code, Some(0), "{}", random.stderr);
    let seed = random
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("seed: "))
        .unwrap_or_else(|| panic!("no seed line: {}", random.stderr))
        .to_string();
    let again = run(Some(&seed));
    assert_eq!(
        again.stdout, random.stdout,
        "the same seed gives the same reply"
    );
    assert!(!again.stderr.contains("seed: "), "{}", again.stderr);
}

#[test]
fn a_looping_greedy_reply_is_cut_with_a_note_and_exit_0() {
    let m = smollm2();
    // The README's old first command: greedy, SmolLM2 answers
    // "L'Étoile, la Marseillaise, la femme, la femme, ..." until the
    // context is full.
    let args = [
        "chat",
        path_str(&m),
        "--prompt",
        "What is the capital of France?",
        "--temp",
        "0",
        "-t",
        "2",
    ];
    let run = llm(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("llm: the reply was cut: it kept repeating itself"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.ends_with('\n'), "{:?}", run.stdout);
    let tokens = generated_tokens(&run.stderr);
    assert!(tokens < 200, "{tokens} tokens: {}", run.stdout);
    no_escape_codes(&run);

    // Any -n is the user's own limit: the reply runs on to it.
    let mut limited = args.to_vec();
    limited.extend(["-n", "90"]);
    let run = llm(&limited);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains("was cut"), "{}", run.stderr);
    assert_eq!(generated_tokens(&run.stderr), 90, "{}", run.stderr);
}

/// The token count of the speed line.
fn generated_tokens(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("[ prompt "))
        .expect("a speed line");
    let n = line.rsplit('|').next().unwrap();
    n.trim()
        .trim_end_matches("tokens ]")
        .trim()
        .parse()
        .unwrap()
}

/// ChatML whose cue opens a thinking block, as DeepSeek-R1's templates do:
/// SmolLM2 never closes it, so all of each reply is thinking.
const THINKING_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";

#[test]
fn thinking_is_hidden_on_a_pipe_shown_on_request_and_never_kept() {
    let m = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("think.jinja");
    std::fs::write(&template, THINKING_TEMPLATE).unwrap();
    let saved = dir.path().join("chat.json");
    let script = format!("Hi\nWho are you?\n/save {}\n", saved.display());
    let run_with = |extra: &[&str]| {
        let mut args = quick(
            &m,
            &[
                "--chat-template-file",
                path_str(&template),
                "--verbose-prompt",
            ],
        );
        args.extend_from_slice(extra);
        llm_stdin(&args, script.as_bytes())
    };

    // On a pipe the thinking is left out: two empty replies.
    let hidden = run_with(&[]);
    assert_eq!(hidden.code, Some(0), "{}", hidden.stderr);
    assert_eq!(hidden.stdout, "\n\n\n\n", "{}", hidden.stderr);

    let shown = run_with(&["--reasoning", "show"]);
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    no_escape_codes(&shown);
    let replies: Vec<&str> = shown.stdout.split("\n\n").collect();
    let first = replies[0].trim();
    assert!(!first.is_empty(), "{:?}", shown.stdout);
    // The second prompt holds the first exchange without its thinking.
    let second_prompt = shown
        .stderr
        .split("Who are you?")
        .next()
        .unwrap()
        .rsplit("<|im_start|>user\nHi<|im_end|>\n")
        .next()
        .unwrap();
    assert!(
        second_prompt.starts_with("<|im_start|>assistant\n<|im_end|>"),
        "{second_prompt:?}"
    );
    assert!(!shown.stderr.contains(first), "{}", shown.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let messages = json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[1]["content"], "", "{json}");
    assert_eq!(messages[3]["content"], "", "{json}");
}

#[test]
fn show_stats_after_undoing_everything_counts_nothing() {
    let m = smollm2();
    let run = llm_stdin(
        &["chat", path_str(&m), "--temp", "0", "-t", "2", "-n", "4"],
        b"Hello!\n/show stats\n/undo\n/show stats\n",
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let stats: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("context:"))
        .collect();
    assert_eq!(stats.len(), 2, "{}", run.stderr);
    assert!(!stats[0].starts_with("context:    0 of"), "{}", stats[0]);
    assert!(stats[1].starts_with("context:    0 of"), "{}", stats[1]);
    assert!(
        run.stderr.contains("last reply: no reply yet"),
        "{}",
        run.stderr
    );
}
