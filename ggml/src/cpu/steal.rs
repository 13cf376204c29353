//! Work for a pool job in pieces that a thread done early takes from the
//! others. Each thread starts on its own contiguous share (`pool::split`'s),
//! front to back, so its weights stream in address order and its prefetches
//! run ahead into its own rows; a thread whose share is done takes pieces
//! from the back of another's. A decode step's products are split evenly,
//! but two cores do not finish together (one is interrupted, or shares its
//! memory queue differently), and every product waits for the slower.

use super::pool::split;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// One thread's share as (front, back) piece indices in one word, so that
/// its owner (front) and a thief (back) agree with one compare-and-swap.
#[repr(align(64))]
struct Share(AtomicU64);

pub struct Pieces {
    shares: Vec<Share>,
    piece: usize,
    n: usize,
}

impl Pieces {
    /// `0..n` in pieces of `piece` items, shared out over `threads` threads.
    pub fn new(n: usize, piece: usize, threads: usize) -> Pieces {
        let piece = piece.max(1);
        let count = n.div_ceil(piece);
        let threads = threads.max(1);
        let shares = (0..threads)
            .map(|i| {
                let own = split(count, threads, i, 1);
                Share(AtomicU64::new((own.start as u64) << 32 | own.end as u64))
            })
            .collect();
        Pieces { shares, piece, n }
    }

    /// The next items thread `i` takes: its own share's front piece, then
    /// the back piece of the first other share with any left; None when
    /// every piece is taken.
    pub fn next(&self, i: usize) -> Option<Range<usize>> {
        let t = self.shares.len();
        let k = self
            .take(i % t, true)
            .or_else(|| (1..t).find_map(|d| self.take((i + d) % t, false)))?;
        let start = k * self.piece;
        Some(start..(start + self.piece).min(self.n))
    }

    fn take(&self, s: usize, front: bool) -> Option<usize> {
        let share = &self.shares[s].0;
        let mut cur = share.load(Ordering::Relaxed);
        loop {
            let (f, b) = (cur >> 32, cur & 0xffff_ffff);
            if f >= b {
                return None;
            }
            let (next, k) = if front {
                ((f + 1) << 32 | b, f)
            } else {
                (f << 32 | (b - 1), b - 1)
            };
            match share.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(k as usize),
                Err(seen) => cur = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::pool::ThreadPool;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_item_is_taken_once_alone_and_by_a_pool() {
        for n in [0, 1, 15, 16, 17, 1000, 4099] {
            for threads in 1..5 {
                let p = Pieces::new(n, 16, threads);
                let mut seen = vec![0; n];
                // One thread alone takes its own share, then steals the rest.
                while let Some(r) = p.next(threads - 1) {
                    r.for_each(|j| seen[j] += 1);
                }
                assert!(seen.iter().all(|&s| s == 1), "n={n} threads={threads}");

                let pool = ThreadPool::new(threads);
                let p = Pieces::new(n, 16, threads);
                let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|i| {
                    while let Some(r) = p.next(i) {
                        r.for_each(|j| {
                            seen[j].fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
                assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn a_thread_starts_on_its_own_share_in_order() {
        let p = Pieces::new(100, 10, 2);
        assert_eq!(p.next(1), Some(50..60));
        assert_eq!(p.next(1), Some(60..70));
        assert_eq!(p.next(0), Some(0..10));
    }
}
