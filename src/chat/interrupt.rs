//! Ctrl-C while the model writes: a flag the reply loop checks between
//! tokens, so the reply stops and the conversation stays. (At the REPL's
//! prompt the terminal is in raw mode and rustyline sees Ctrl-C as a key.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Installs the handler once; later Ctrl-Cs only set the flag again, so a
/// second press never kills the conversation.
pub fn flag() -> &'static AtomicBool {
    INSTALL.call_once(|| {
        // Without a handler Ctrl-C would end the process as usual, which is
        // still correct, so a failure to install is not an error.
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    });
    &INTERRUPTED
}

pub fn reset() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

pub fn is_set() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
