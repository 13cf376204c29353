//! The REPL in a pseudo-terminal, driven as a user would: questions,
//! Ctrl-C in the middle of a reply, /regen, /save and /load across
//! processes, history across runs, Ctrl-D. HOME and XDG_STATE_HOME point at a
//! temporary directory. The expect timeout is a hang guard, not a speed
//! limit.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use expectrl::{ControlCode, Eof, Expect, Session};

const HANG_GUARD: Duration = Duration::from_secs(300);
const PROMPT: &str = ">>> ";

fn spawn(home: &Path, extra: &[&str]) -> expectrl::session::OsSession {
    let model = real_model(SMOLLM2);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llm"));
    cmd.args(["chat", path_str(&model), "--temp", "0", "-t", "2"])
        .args(extra)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    let mut s = Session::spawn(cmd).expect("spawn llm in a pty");
    s.set_expect_timeout(Some(HANG_GUARD));
    s.expect(PROMPT).expect("the REPL prompt");
    s
}

/// Sends a line and waits for the reply's speed line, then the next prompt.
fn ask(s: &mut expectrl::session::OsSession, line: &str) -> String {
    s.send_line(line).unwrap();
    let found = s.expect("[ prompt ").expect("a reply");
    let before = String::from_utf8_lossy(found.before()).into_owned();
    s.expect(PROMPT).expect("the prompt after the reply");
    before
}

fn saved_messages(path: &Path) -> Vec<serde_json::Value> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["messages"].as_array().unwrap().clone()
}

fn exits_cleanly(mut s: expectrl::session::OsSession) {
    s.send(ControlCode::EndOfTransmission).unwrap();
    s.expect(Eof).expect("llm exits on Ctrl-D");
    let status = s.get_process().wait().unwrap();
    assert_eq!(
        status,
        expectrl::process::unix::WaitStatus::Exited(s.get_process().pid(), 0),
        "exit status"
    );
}

#[test]
fn a_conversation_keeps_its_context_and_ctrl_d_quits() {
    let home = tempfile::tempdir().unwrap();
    let mut s = spawn(home.path(), &["-n", "24", "--verbose-prompt"]);
    ask(&mut s, "My name is Bob.");
    let second = ask(&mut s, "What is my name?");
    // The second prompt holds the first exchange.
    assert!(second.contains("My name is Bob."), "{second}");
    let saved = home.path().join("chat.json");
    s.send_line(format!("/save {}", saved.display())).unwrap();
    s.expect("(saved 4 messages").unwrap();
    s.expect(PROMPT).unwrap();
    exits_cleanly(s);
    assert_eq!(saved_messages(&saved).len(), 4);
}

#[test]
fn ctrl_c_stops_the_reply_and_keeps_the_conversation() {
    let home = tempfile::tempdir().unwrap();
    let mut s = spawn(
        home.path(),
        &["--ignore-eos", "-n", "5000", "--verbose-prompt"],
    );
    s.send_line("Tell me a very long story about a dragon.")
        .unwrap();
    // The reply's colour starts with its first token.
    s.expect("\x1b[36m").expect("the reply starts");
    s.expect(expectrl::Regex("[A-Za-z]"))
        .expect("a first token");
    s.send(ControlCode::EndOfText).unwrap();
    s.expect("(stopped: the partial reply is kept)").unwrap();
    s.expect(PROMPT).unwrap();
    // A second Ctrl-C, at the prompt, does not end anything.
    s.send(ControlCode::EndOfText).unwrap();
    s.expect("Ctrl-D or /exit to quit").unwrap();
    let saved = home.path().join("chat.json");
    s.send_line(format!("/save {}", saved.display())).unwrap();
    s.expect("(saved 2 messages").unwrap();
    s.expect(PROMPT).unwrap();
    let messages = saved_messages(&saved);
    assert_eq!(
        messages[0]["content"],
        "Tell me a very long story about a dragon."
    );
    let partial = messages[1]["content"].as_str().unwrap();
    assert!(!partial.is_empty(), "the partial reply is kept");
    // The next question sees the interrupted exchange, the partial reply
    // closed as the template closes a reply.
    s.send_line("/set n-predict 4").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("/show template").unwrap();
    s.expect(PROMPT).unwrap();
    let tail: String = partial
        .chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let prompt = ask(&mut s, "Go on.");
    let shown = prompt.replace("\r\n", "\n");
    assert!(
        shown.contains(&format!("{tail}<|im_end|>\n<|im_start|>user\nGo on.")),
        "{tail:?} not closed in {shown:?}"
    );
    s.send_line(format!("/save {}", saved.display())).unwrap();
    s.expect("(saved 4 messages").unwrap();
    s.expect(PROMPT).unwrap();
    exits_cleanly(s);
}

#[test]
fn regen_writes_the_last_reply_again() {
    let home = tempfile::tempdir().unwrap();
    let mut s = spawn(home.path(), &["-n", "16"]);
    ask(&mut s, "Name a colour.");
    s.send_line("/regen").unwrap();
    s.expect("[ prompt ").expect("a new reply");
    s.expect(PROMPT).unwrap();
    let saved = home.path().join("chat.json");
    s.send_line(format!("/save {}", saved.display())).unwrap();
    s.expect("(saved 2 messages").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("/exit").unwrap();
    s.expect(Eof).unwrap();
}

#[test]
fn save_then_load_in_a_new_process_restores_the_conversation() {
    let home = tempfile::tempdir().unwrap();
    let saved = home.path().join("chat.json");
    let mut s = spawn(home.path(), &["-n", "12"]);
    s.send_line("/system You are a ship's cook.").unwrap();
    s.expect(PROMPT).unwrap();
    ask(&mut s, "My favourite fruit is the mango.");
    s.send_line(format!("/save {}", saved.display())).unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("/bye").unwrap();
    s.expect(Eof).unwrap();

    let mut s = spawn(home.path(), &["-n", "4", "--verbose-prompt"]);
    s.send_line(format!("/load {}", saved.display())).unwrap();
    s.expect("My favourite fruit is the mango.")
        .expect("the transcript is shown");
    s.expect("(loaded 2 messages").unwrap();
    s.expect(PROMPT).unwrap();
    let prompt = ask(&mut s, "Which fruit do I like?");
    assert!(prompt.contains("You are a ship's cook."), "{prompt}");
    assert!(
        prompt.contains("My favourite fruit is the mango."),
        "{prompt}"
    );
    exits_cleanly(s);
}

#[test]
fn history_is_kept_across_runs() {
    let home = tempfile::tempdir().unwrap();
    let mut s = spawn(home.path(), &["-n", "2"]);
    ask(&mut s, "a line worth remembering");
    exits_cleanly(s);
    let history = std::fs::read_to_string(home.path().join("state/llm/history")).unwrap();
    assert!(history.contains("a line worth remembering"), "{history}");

    let mut s = spawn(home.path(), &["-n", "2", "--verbose-prompt"]);
    // Up arrow, then Enter: the remembered line is sent again.
    s.send("\x1b[A").unwrap();
    s.expect("a line worth remembering").unwrap();
    s.send("\r").unwrap();
    s.expect("[ prompt ").unwrap();
    s.expect(PROMPT).unwrap();
    exits_cleanly(s);
}

#[test]
fn multi_line_blocks_are_one_message() {
    let home = tempfile::tempdir().unwrap();
    let mut s = spawn(home.path(), &["-n", "2", "--verbose-prompt"]);
    s.send_line("\"\"\"").unwrap();
    // Each line inside the block gets the continuation prompt.
    s.expect("... ").expect("the continuation prompt");
    s.send_line("first line").unwrap();
    s.expect("... ").unwrap();
    s.send_line("second line").unwrap();
    s.expect("... ").unwrap();
    s.send_line("\"\"\"").unwrap();
    s.expect("first line\r\nsecond line<|im_end|>")
        .expect("one message of two lines");
    s.expect("[ prompt ").unwrap();
    s.expect(PROMPT).unwrap();
    exits_cleanly(s);
}

#[test]
fn an_unwritable_history_is_a_warning_and_the_chat_goes_on() {
    let home = tempfile::tempdir().unwrap();
    // A file where the state directory should be.
    std::fs::write(home.path().join("state"), "not a directory").unwrap();
    let mut s = spawn_expecting_warning(home.path());
    ask(&mut s, "Hello");
    exits_cleanly(s);
}

fn spawn_expecting_warning(home: &Path) -> expectrl::session::OsSession {
    let model = real_model(SMOLLM2);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llm"));
    cmd.args([
        "chat",
        path_str(&model),
        "--temp",
        "0",
        "-t",
        "2",
        "-n",
        "2",
    ])
    .env("HOME", home)
    .env("XDG_STATE_HOME", home.join("state"))
    .env("TERM", "xterm");
    let mut s = Session::spawn(cmd).unwrap();
    s.set_expect_timeout(Some(HANG_GUARD));
    s.expect("cannot keep history").expect("a warning");
    s.expect(PROMPT).unwrap();
    s
}
