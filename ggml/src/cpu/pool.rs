//! A persistent thread pool for kernels: `run(f)` calls `f(i)` for every
//! thread index `i` (0 is the caller) and returns when all are done. Workers
//! spin briefly between jobs (a token's matmuls come microseconds apart), then
//! sleep, so an idle pool costs nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per job; workers start when it changes.
    generation: AtomicUsize,
    /// Workers still running the current job.
    pending: AtomicUsize,
    job: Mutex<Option<JobPtr>>,
    wake: Condvar,
    stop: AtomicUsize,
}

#[derive(Clone, Copy)]
struct JobPtr(Job);
// SAFETY: the pointee is Sync and outlives every use (run() waits for all workers).
unsafe impl Send for JobPtr {}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

/// Spins before a waiting thread yields or sleeps: long enough to bridge the
/// microseconds between a token's matmuls, short enough not to steal a core
/// from other work when the machine is oversubscribed.
const SPIN_ROUNDS: usize = 1 << 11;

impl ThreadPool {
    /// A pool of `n` threads in all, the caller included (`n` of at least 1).
    pub fn new(n: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: Mutex::new(None),
            wake: Condvar::new(),
            stop: AtomicUsize::new(0),
        });
        let workers = (1..n.max(1))
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("llm-worker-{index}"))
                    .spawn(move || worker(&shared, index))
                    .expect("spawn a worker thread")
            })
            .collect();
        ThreadPool { shared, workers }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` on every thread `i` in `0..threads()`, the caller as 0.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        // SAFETY: the lifetime is erased only until every worker has finished
        // with it, which the wait below guarantees before returning.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        self.shared
            .pending
            .store(self.workers.len(), Ordering::SeqCst);
        {
            let mut slot = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(JobPtr(job));
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();
        f(0);
        let mut spins = 0;
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            if spins < SPIN_ROUNDS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0;
        let job = loop {
            if shared.stop.load(Ordering::Relaxed) != 0 {
                return;
            }
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                let slot = shared.job.lock().unwrap_or_else(|e| e.into_inner());
                break slot.expect("a job is set with each generation");
            }
            spins += 1;
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
            } else {
                let slot = shared.job.lock().unwrap_or_else(|e| e.into_inner());
                if shared.generation.load(Ordering::Acquire) == seen
                    && shared.stop.load(Ordering::Relaxed) == 0
                {
                    drop(shared.wake.wait(slot).unwrap_or_else(|e| e.into_inner()));
                }
                spins = 0;
            }
        };
        // SAFETY: run() keeps the closure alive until `pending` reaches zero.
        unsafe { (*job.0)(index) };
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(1, Ordering::SeqCst);
        {
            let _slot = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The range of `0..n` that thread `i` of `threads` takes, in chunks of `align`.
pub fn split(n: usize, threads: usize, i: usize, align: usize) -> std::ops::Range<usize> {
    let chunks = n.div_ceil(align);
    let per = chunks.div_ceil(threads);
    let start = (i * per * align).min(n);
    let end = ((i + 1) * per * align).min(n);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once_per_job() {
        let pool = ThreadPool::new(4);
        let counts: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..1000 {
            pool.run(&|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        for c in &counts {
            assert_eq!(c.load(Ordering::Relaxed), 1000);
        }
    }

    #[test]
    fn split_covers_everything_once() {
        for n in [0, 1, 7, 100, 1000] {
            for threads in 1..5 {
                let mut seen = vec![0; n];
                for i in 0..threads {
                    for j in split(n, threads, i, 4) {
                        seen[j] += 1;
                    }
                }
                assert!(seen.iter().all(|&s| s == 1), "n={n} threads={threads}");
            }
        }
    }
}
