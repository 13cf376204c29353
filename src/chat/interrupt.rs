//! Ctrl-C while the model writes: a flag the reply loop checks between
//! tokens, so the reply stops and the conversation stays. (At the REPL's
//! prompt the terminal is in raw mode and rustyline sees Ctrl-C as a key.)
//!
//! The handler is plain `sigaction`, installable again at any time:
//! rustyline puts its own SIGINT handler in place when its editor starts,
//! so the REPL installs ours again after that.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: safe in a signal handler.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C set the flag instead of ending the process. Every later
/// Ctrl-C only sets it again, so a second press never kills the
/// conversation.
pub fn install() {
    #[cfg(unix)]
    // SAFETY: a zeroed sigaction with an empty mask and a handler that only
    // stores an atomic is a valid argument; the old action is not needed.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
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

pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

pub fn reset() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}
