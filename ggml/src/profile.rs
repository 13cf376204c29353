//! Wall time spent in named host-side operations, for finding where a run's
//! time goes without a profiler (the GPU machine has none for host code).
//! Off unless LLM_PROFILE is set; then every timed scope adds to a table
//! that `report` prints and clears.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// 0: not read yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);
/// Name, total, calls, shortest call (the steady state, where the first
/// call also pays for warming up).
static TABLE: Mutex<Vec<(&'static str, Duration, u64, Duration)>> = Mutex::new(Vec::new());

pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("LLM_PROFILE").is_some();
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// Adds the time until it is dropped to `name`'s row.
pub struct Scope {
    name: &'static str,
    start: Instant,
}

impl Drop for Scope {
    fn drop(&mut self) {
        add(self.name, self.start.elapsed());
    }
}

/// A scope timing `name`, or nothing when profiling is off.
#[inline]
pub fn scope(name: &'static str) -> Option<Scope> {
    enabled().then(|| Scope {
        name,
        start: Instant::now(),
    })
}

fn add(name: &'static str, d: Duration) {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    match t.iter_mut().find(|(n, ..)| *n == name) {
        Some(row) => {
            row.1 += d;
            row.2 += 1;
            row.3 = row.3.min(d);
        }
        None => t.push((name, d, 1, d)),
    }
}

/// The table since the last report, longest first, one line a name; empty
/// when profiling is off or nothing was timed. Clears the table.
pub fn report() -> String {
    let mut t = std::mem::take(&mut *TABLE.lock().unwrap_or_else(|e| e.into_inner()));
    t.sort_by_key(|row| std::cmp::Reverse(row.1));
    t.iter()
        .map(|(name, d, n, least)| {
            format!(
                "{name:<24} {:>10.2} ms {n:>8} calls {:>9.1} us/call {:>9.1} us least\n",
                d.as_secs_f64() * 1e3,
                d.as_secs_f64() * 1e6 / *n as f64,
                least.as_secs_f64() * 1e6
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_add_up_and_report_clears() {
        add("test.a", Duration::from_millis(2));
        add("test.a", Duration::from_millis(3));
        add("test.b", Duration::from_millis(1));
        let r = report();
        let a = r.lines().find(|l| l.starts_with("test.a")).expect("row a");
        assert!(a.contains("5.00 ms") && a.contains(" 2 calls"), "{a}");
        assert!(a.contains("2000.0 us least"), "{a}");
        assert!(r.find("test.a") < r.find("test.b"), "longest first: {r}");
        assert!(!report().contains("test.a"));
    }
}
