//! Ctrl-C and SIGTERM. While the model loads, either ends the program at
//! once (exit 130 or 143, as shells report a death by that signal); once
//! it is loaded they set a flag that the reply loop checks between tokens
//! and that waits on pipes check between polls, so a reply stops and the
//! conversation stays. (At the REPL's prompt the terminal is in raw mode
//! and rustyline sees Ctrl-C as a key.) SIGTERM outside a reply still ends
//! the program at once: nothing else would look at the flag.
//!
//! The flag is cleared when the user starts something new (a line in the
//! REPL, a turn of a script), not when a reply starts, so that a Ctrl-C just
//! before a reply still stops it.
//!
//! The handler is plain `sigaction`, installable again at any time:
//! rustyline puts its own SIGINT handler in place when its editor starts,
//! so the REPL installs ours again after that.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The signal that set the flag.
static SIGNAL: AtomicI32 = AtomicI32::new(libc::SIGINT);

static PHASE: AtomicU8 = AtomicU8::new(IDLE);
const IDLE: u8 = 0;
const LOADING: u8 = 1;
const REPLYING: u8 = 2;

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    // Only atomics and _exit: safe in a signal handler.
    let phase = PHASE.load(Ordering::SeqCst);
    if phase == LOADING || (phase == IDLE && signal == libc::SIGTERM) {
        // SAFETY: _exit is async-signal-safe; nothing was written to stdout
        // that a flush would still owe.
        unsafe { libc::_exit(128 + signal) };
    }
    SIGNAL.store(signal, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Puts our handler in place for SIGINT and SIGTERM. Every later Ctrl-C
/// only sets the flag again, so a second press never kills the
/// conversation.
pub fn install() {
    #[cfg(unix)]
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with an empty mask and a handler that
        // only touches atomics (or exits) is a valid argument; the old
        // action is not needed.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Ctrl-C ends the process again (while a scripted chat waits for input).
pub fn restore_default() {
    #[cfg(unix)]
    // SAFETY: SIG_DFL is a valid disposition for SIGINT.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// From now until [`loaded`], a signal ends the program at once.
pub fn loading() {
    PHASE.store(LOADING, Ordering::SeqCst);
    install();
}

pub fn loaded() {
    PHASE.store(IDLE, Ordering::SeqCst);
}

/// Marks a reply in progress (SIGTERM then stops the reply like Ctrl-C).
pub fn replying(on: bool) {
    PHASE.store(if on { REPLYING } else { IDLE }, Ordering::SeqCst);
}

pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

pub fn reset() {
    INTERRUPTED.store(false, Ordering::SeqCst);
    SIGNAL.store(libc::SIGINT, Ordering::SeqCst);
}

/// The exit code for a program stopped by the flag's signal: 130 after
/// Ctrl-C, 143 after SIGTERM.
pub fn exit_code() -> u8 {
    (128 + SIGNAL.load(Ordering::SeqCst)) as u8
}
