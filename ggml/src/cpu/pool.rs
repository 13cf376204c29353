//! A persistent thread pool for kernels: `run(f)` calls `f(i)` for every
//! thread index `i` (0 is the caller) and returns when all are done. Workers
//! spin briefly between jobs (a token's matmuls come microseconds apart), then
//! sleep, so an idle pool costs nothing.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The current job: `run`'s closure, through a pointer to a reference to it
/// on `run`'s stack (a thin pointer, so one atomic holds it).
type JobRef<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per job; workers start when it changes.
    generation: AtomicUsize,
    /// Workers still running the current job.
    pending: AtomicUsize,
    /// A `*const JobRef`, valid from the generation's bump until `pending`
    /// is zero. Workers read it without a lock: fifteen threads taking one
    /// mutex at each job's start queued on it for tens of microseconds.
    job: AtomicPtr<()>,
    /// Only for workers going to sleep, and for waking them.
    sleep: Mutex<usize>,
    wake: Condvar,
    stop: AtomicUsize,
}

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
            job: AtomicPtr::new(std::ptr::null_mut()),
            sleep: Mutex::new(0),
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
        let job: JobRef<'_> = f;
        let sh = &*self.shared;
        sh.job
            .store(&job as *const JobRef<'_> as *mut (), Ordering::Release);
        sh.pending.store(self.workers.len(), Ordering::SeqCst);
        {
            // Bumped under the lock, so that a worker deciding to sleep
            // either sees the new generation or is woken below.
            let sleepers = sh.sleep.lock().unwrap_or_else(|e| e.into_inner());
            sh.generation.fetch_add(1, Ordering::SeqCst);
            if *sleepers > 0 {
                sh.wake.notify_all();
            }
        }
        f(0);
        let mut spins = 0;
        while sh.pending.load(Ordering::Acquire) != 0 {
            if spins < SPIN_ROUNDS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // `job` (on this stack) is no longer read by anyone.
        sh.job.store(std::ptr::null_mut(), Ordering::Release);
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0;
        loop {
            if shared.stop.load(Ordering::Relaxed) != 0 {
                return;
            }
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
            } else {
                let mut sleepers = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
                if shared.generation.load(Ordering::Acquire) == seen
                    && shared.stop.load(Ordering::Relaxed) == 0
                {
                    *sleepers += 1;
                    sleepers = shared
                        .wake
                        .wait(sleepers)
                        .unwrap_or_else(|e| e.into_inner());
                    *sleepers -= 1;
                }
                drop(sleepers);
                spins = 0;
            }
        }
        let job = shared.job.load(Ordering::Acquire) as *const JobRef<'_>;
        // SAFETY: set before the generation this worker saw, and kept alive
        // by run() until `pending` reaches zero, which needs this worker.
        unsafe { (*job)(index) };
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(1, Ordering::SeqCst);
        {
            let _sleepers = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
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
