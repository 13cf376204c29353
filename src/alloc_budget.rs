//! Memory budgets for untrusted work, such as rendering a chat template that
//! came inside a downloaded model file.
//!
//! A template engine offers no hook on its string operators, so a template
//! that doubles a string forty times would allocate until the process is
//! killed. The process's allocator therefore counts, on a thread that runs
//! under a budget, the bytes that thread holds, and refuses to hand out more
//! than its budget. It cannot return an error (a failed allocation aborts
//! the process), so the thread that overruns is stopped where it stands: it
//! sleeps forever inside the allocator, holding no lock, while the thread
//! that waits for it reports the overrun. What it holds (at most its budget)
//! stays allocated; after a few such threads, budgeted work is refused
//! outright so that the total stays bounded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The process's allocator: the system's, with per-thread budgets.
pub struct Budgeted;

#[global_allocator]
static ALLOCATOR: Budgeted = Budgeted;

thread_local! {
    /// Bytes this thread may still take; `usize::MAX` when it has no budget.
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Raised when this thread overruns its budget.
    static OVERRUN: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

/// Threads stopped for good by an overrun, each holding up to its budget.
static STOPPED: AtomicUsize = AtomicUsize::new(0);
const MAX_STOPPED: usize = 8;

/// Big enough for deep template recursion, as on the main thread.
const STACK_BYTES: usize = 8 << 20;

fn charge(size: usize) {
    let left = LEFT.try_with(Cell::get).unwrap_or(usize::MAX);
    if left == usize::MAX {
        return;
    }
    if size > left {
        overrun();
    }
    let _ = LEFT.try_with(|l| l.set(left - size));
}

fn credit(size: usize) {
    let _ = LEFT.try_with(|l| {
        let left = l.get();
        if left != usize::MAX {
            // Freeing what was allocated before the budget began also
            // counts: the budget bounds growth, which is what matters.
            l.set(left.saturating_add(size).min(usize::MAX - 1));
        }
    });
}

fn overrun() -> ! {
    // Lift the budget first: what follows may allocate.
    let _ = LEFT.try_with(|l| l.set(usize::MAX));
    let flag = OVERRUN.try_with(Cell::get).unwrap_or_default();
    STOPPED.fetch_add(1, Ordering::SeqCst);
    if !flag.is_null() {
        // SAFETY: the flag is an Arc's content that the closure running on
        // this thread keeps alive, and this thread never returns.
        unsafe { (*flag).store(true, Ordering::SeqCst) };
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// SAFETY: every call goes to the system allocator unchanged; the budget only
// counts sizes, and an overrun never returns.
unsafe impl GlobalAlloc for Budgeted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        credit(layout.size());
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            credit(layout.size() - new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `work` on a thread of its own that may hold at most `limit` bytes at
/// a time; `None` when it tried to take more (or when too many threads have
/// overrun already).
pub fn run_with_budget<T: Send + 'static>(
    limit: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if STOPPED.load(Ordering::SeqCst) >= MAX_STOPPED {
        return None;
    }
    let over = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let flag = over.clone();
    let spawned = std::thread::Builder::new()
        .name("budgeted".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            OVERRUN.with(|o| o.set(Arc::as_ptr(&flag)));
            LEFT.with(|l| l.set(limit.min(usize::MAX - 1)));
            let result = work();
            LEFT.with(|l| l.set(usize::MAX));
            OVERRUN.with(|o| o.set(std::ptr::null()));
            let _ = tx.send(result);
            drop(flag);
        });
    let handle = match spawned {
        Ok(handle) => handle,
        Err(_) => return None,
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(result) => {
                let _ = handle.join();
                return Some(result);
            }
            Err(mpsc::RecvTimeoutError::Timeout) if over.load(Ordering::SeqCst) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The work panicked: pass the panic on.
            Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => return None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_within_its_budget_runs() {
        let got = run_with_budget(1 << 20, || vec![1u8; 1000].len());
        assert_eq!(got, Some(1000));
    }

    #[test]
    fn work_beyond_its_budget_is_stopped() {
        let got = run_with_budget(1 << 20, || {
            let mut s = String::from("ab");
            for _ in 0..40 {
                s = format!("{s}{s}");
            }
            s.len()
        });
        assert_eq!(got, None);
    }
}
