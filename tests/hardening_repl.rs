//! The REPL in a pseudo-terminal waiting on a FIFO: `/read` of a FIFO that
//! nobody writes to must give way to Ctrl-C. The expect timeout and the
//! wait for the open file are hang guards, not speed limits.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use expectrl::{ControlCode, Eof, Expect, Session};

const HANG_GUARD: Duration = Duration::from_secs(300);
const PROMPT: &str = ">>> ";

fn wait_until_open(pid: i32, path: &Path) {
    let fds = PathBuf::from(format!("/proc/{pid}/fd"));
    for _ in 0..30_000 {
        if let Ok(entries) = std::fs::read_dir(&fds) {
            for e in entries.flatten() {
                if std::fs::read_link(e.path()).is_ok_and(|t| t == path) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("llm never opened {}", path.display());
}

#[test]
fn ctrl_c_ends_a_read_that_waits_on_a_fifo() {
    let home = tempfile::tempdir().unwrap();
    let fifo = home.path().join("message");
    let c = std::ffi::CString::new(path_str(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

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
        "4",
    ])
    .env("HOME", home.path())
    .env("XDG_STATE_HOME", home.path().join("state"))
    .env("XDG_CONFIG_HOME", home.path().join("config"))
    .env_remove("NO_COLOR")
    .env("TERM", "xterm");
    let mut s = Session::spawn(cmd).expect("spawn llm in a pty");
    s.set_expect_timeout(Some(HANG_GUARD));
    s.expect(PROMPT).expect("the REPL prompt");

    s.send_line(format!("/read {}", fifo.display())).unwrap();
    wait_until_open(s.get_process().pid().as_raw(), &fifo);
    s.send(ControlCode::EndOfText).unwrap();
    s.expect("interrupted").expect("the wait ends on Ctrl-C");
    s.expect(PROMPT).expect("the prompt comes back");

    // The REPL goes on: a FIFO with a writer is read.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, "Say hi.").unwrap())
    };
    s.send_line(format!("/read {}", fifo.display())).unwrap();
    s.expect("[ prompt ")
        .expect("a reply to the FIFO's message");
    s.expect(PROMPT).unwrap();
    writer.join().unwrap();

    s.send(ControlCode::EndOfTransmission).unwrap();
    s.expect(Eof).expect("llm exits on Ctrl-D");
    let status = s.get_process().wait().unwrap();
    assert_eq!(
        status,
        expectrl::process::unix::WaitStatus::Exited(s.get_process().pid(), 0)
    );
}
