//! Checked sizes and values (issue 13, items 3, 7 and 8): a context that
//! cannot fit, values out of range, and the smaller warts, each one line of
//! error from the real binary, never an abort.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

fn smollm2() -> PathBuf {
    real_model(SMOLLM2)
}

fn one_line_error(run: &Run, code: i32, want: &[&str]) {
    let err = run.stderr.trim_end();
    assert_eq!(run.code, Some(code), "{err}");
    for w in want {
        assert!(err.contains(w), "missing {w:?} in: {err}");
    }
    assert!(!err.contains("memory allocation"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The machine's memory can hold no KV cache of 10^8 tokens of SmolLM2
/// (about 2 TiB): each command refuses before allocating, in one line.
#[test]
fn a_context_too_large_for_memory_is_refused_before_allocating() {
    let m = smollm2();
    let m = path_str(&m);
    for args in [
        vec!["run", m, "-c", "100000000", "-p", "Hi", "-n", "1"],
        vec!["chat", m, "-c", "100000000", "-p", "Hi", "-n", "1"],
        vec!["bench", m, "-p", "100000000", "-n", "0", "-r", "1"],
    ] {
        let run = llm(&args);
        one_line_error(&run, 1, &["memory available", "use a smaller context, -c"]);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    }
}

#[test]
fn a_context_beyond_32_bits_is_a_range_error() {
    let m = smollm2();
    let run = llm(&["run", path_str(&m), "-c", "5000000000", "-p", "Hi"]);
    one_line_error(&run, 2, &["'5000000000'", "out of range", "4294967295"]);
}

/// As llama.cpp does, a context past the trained one is allowed, with a word.
#[test]
fn a_context_past_the_trained_one_warns() {
    let m = smollm2();
    let args = |c: &'static str| {
        vec![
            "run",
            path_str(&m),
            "-c",
            c,
            "-p",
            "Hi",
            "-n",
            "1",
            "--temp",
            "0",
            "-t",
            "2",
        ]
    };
    let run = llm(&args("8200"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("-c 8200 is more than the 8192 tokens the model was trained on"),
        "{}",
        run.stderr
    );
    let run = llm(&args("8192"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains("trained on"), "{}", run.stderr);
}

/// Negative values reach the range check instead of clap's advice to write
/// `-- -5`; each error names the value and the range.
#[test]
fn values_out_of_range_are_named_with_their_range() {
    let m = smollm2();
    let m = path_str(&m);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["-c", "-5"],
            &["'-5'", "--ctx-size", "give 0 (the model's own)"],
        ),
        (
            &["-t", "-1"],
            &["'-1'", "--threads", "give 1 or more threads"],
        ),
        (&["--temp", "-1"], &["'-1'", "--temp", "0 or more"]),
        (&["--temp", "nan"], &["'nan'", "--temp", "out of range"]),
        (&["--temp", "inf"], &["'inf'", "--temp", "out of range"]),
        (&["--top-k", "-3"], &["'-3'", "--top-k", "0 or more"]),
        (&["--top-p", "2"], &["'2'", "--top-p", "from 0 to 1"]),
        (&["--min-p", "2"], &["'2'", "--min-p", "from 0 to 1"]),
        (
            &["--repeat-penalty", "0"],
            &["'0'", "--repeat-penalty", "above 0"],
        ),
    ];
    for (flags, want) in cases {
        for cmd in ["run", "chat"] {
            let mut args = vec![cmd, m, "-p", "Hi"];
            args.extend_from_slice(flags);
            let run = llm(&args);
            one_line_error(&run, 2, want);
            assert!(!run.stderr.contains("-- -"), "{}", run.stderr);
        }
    }
    // Values in range still run (the edges included).
    let run = llm(&[
        "run",
        m,
        "-p",
        "Hi",
        "-n",
        "1",
        "-t",
        "1",
        "--temp",
        "0",
        "--top-k",
        "0",
        "--top-p",
        "1",
        "--min-p",
        "0",
        "--repeat-last-n",
        "-1",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn more_threads_than_cores_are_cut_to_the_cores() {
    let m = smollm2();
    let run = llm(&[
        "run",
        path_str(&m),
        "-p",
        "Hi",
        "-n",
        "1",
        "--temp",
        "0",
        "-t",
        "100000",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("llm: -t 100000: this machine has"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("logical core"), "{}", run.stderr);
}

fn with_user_catalogue(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("llm/models.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, toml).unwrap();
    (dir, file)
}

#[test]
fn a_user_catalogue_with_values_out_of_range_is_refused_naming_file_and_key() {
    let (dir, file) = with_user_catalogue(
        "[[family]]\nname = \"mine\"\nnames = [\"smollm\"]\n[family.sampling]\ntemp = -5\ntop_k = -1\ntop_p = 7\n",
    );
    let m = smollm2();
    let out = llm_command()
        .env("XDG_CONFIG_HOME", dir.path())
        .args(["chat", path_str(&m), "-p", "Hi", "-n", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(path_str(&file)), "{err}");
    assert!(err.contains("family 'mine'"), "{err}");
    assert!(err.contains("temp = -5 is out of range"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn set_checks_the_same_ranges_and_a_failed_command_fails_the_script() {
    let m = smollm2();
    let run = llm_stdin(
        &["chat", path_str(&m), "-t", "2", "--temp", "0", "-n", "1"],
        b"/set top-p 2\n/set temp -1\n",
    );
    assert!(
        run.stderr
            .contains("/set top-p 2: out of range: give a number from 0 to 1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/set temp -1: out of range"),
        "{}",
        run.stderr
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
}

/// llama.cpp's `-cb` is not read as `-c b`.
#[test]
fn an_unknown_llama_cpp_flag_is_named_whole() {
    let m = smollm2();
    let run = llm(&["chat", path_str(&m), "-cb", "-p", "Hi"]);
    one_line_error(&run, 2, &["unknown option '-cb'"]);
    assert!(!run.stderr.contains("--ctx-size"), "{}", run.stderr);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
}

#[test]
fn a_failed_save_in_a_script_exits_non_zero_and_the_script_goes_on() {
    let m = smollm2();
    let run = llm_stdin(
        &["chat", path_str(&m), "-t", "2", "--temp", "0", "-n", "1"],
        b"/save /nonexistent/dir/chat.json\n/show params\n",
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("/nonexistent/dir/chat.json"),
        "{}",
        run.stderr
    );
    // The command after the failed one still ran.
    let both = format!("{}{}", run.stdout, run.stderr);
    assert!(both.contains("n-predict"), "{both}");
}

#[test]
fn an_unknown_command_in_a_script_is_reported_not_sent() {
    let m = smollm2();
    let run = llm_stdin(
        &["chat", path_str(&m), "-t", "2", "--temp", "0", "-n", "4"],
        b"/bogus\n",
    );
    assert!(
        run.stderr.contains("unknown command /bogus"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.trim().is_empty(), "a reply: {}", run.stdout);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    // A path at the start of a line is still a message.
    let run = llm_stdin(
        &["chat", path_str(&m), "-t", "2", "--temp", "0", "-n", "2"],
        b"/usr/bin is where?\n",
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stdout.trim().is_empty(), "{}", run.stderr);
}

#[test]
fn load_keeps_the_n_predict_given_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("chat.json");
    let m = smollm2();
    let base = ["chat", path_str(&m), "-t", "2", "--temp", "0"];
    let script = format!("/set n-predict 50\n/save {}\n", saved.display());
    let run = llm_stdin(&base, script.as_bytes());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let show = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let run = llm_stdin(
            &args,
            format!("/load {}\n/show params\n", saved.display()).as_bytes(),
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let both = format!("{}{}", run.stdout, run.stderr);
        let line = both
            .lines()
            .find(|l| l.trim_start().starts_with("n-predict"))
            .unwrap_or_else(|| panic!("no n-predict in {both}"))
            .to_string();
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(show(&["-n", "3"]), "3");
    assert_eq!(show(&[]), "50");
}

/// A HOME that is a file: the user catalogue cannot be reached, which is a
/// warning; the chat goes on with the built-in one.
#[test]
fn an_unreachable_user_catalogue_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home-is-a-file");
    std::fs::write(&home, "").unwrap();
    let m = smollm2();
    let out = llm_command()
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", &home)
        .args([
            "chat",
            path_str(&m),
            "-t",
            "2",
            "--temp",
            "0",
            "-n",
            "1",
            "-p",
            "Hi",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("warning: cannot read"), "{err}");
    assert!(err.contains("using the built-in catalogue"), "{err}");
}

#[test]
fn invalid_utf8_on_stdin_says_where() {
    let m = smollm2();
    let input = b"\n\nab\xffc\n";
    for extra in [&[][..], &["-p", "-"][..]] {
        let mut args = vec!["chat", path_str(&m), "-t", "2", "--temp", "0", "-n", "1"];
        args.extend_from_slice(extra);
        let run = llm_stdin(&args, input);
        one_line_error(&run, 1, &["standard input, line 3, byte 3: not UTF-8 text"]);
    }
}

#[test]
fn a_full_disk_on_stdout_names_stdout() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    let m = smollm2();
    let out = llm_command()
        .args([
            "run",
            path_str(&m),
            "-p",
            "Hi",
            "-n",
            "4",
            "--temp",
            "0",
            "-t",
            "2",
            "--ignore-eos",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(full).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("writing to standard output: No space left on device"),
        "{err}"
    );
}

#[test]
fn a_template_that_renders_nothing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("empty.jinja");
    std::fs::write(&template, "{% if false %}never{% endif %}").unwrap();
    let m = smollm2();
    let run = llm(&[
        "chat",
        path_str(&m),
        "--chat-template-file",
        path_str(&template),
        "-p",
        "Hi",
        "-n",
        "2",
        "-t",
        "2",
    ]);
    one_line_error(&run, 1, &["rendered an empty prompt"]);
    assert!(run.stdout.trim().is_empty(), "{}", run.stdout);
}
