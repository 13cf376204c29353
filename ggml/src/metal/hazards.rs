//! When a dispatch of a concurrent compute encoder must wait for the ones
//! before it. Dispatches of one such encoder may run at once; a memory
//! barrier orders everything before it against everything after. One is
//! needed where a dispatch reads what an unbarriered one writes, or writes
//! what one reads or writes: llama.cpp's Metal backend orders its graph the
//! same way. Buffers are told apart by identity (whole buffers: two ranges
//! of one buffer conflict, which costs a barrier and never correctness).

/// The buffers touched since the last barrier.
#[derive(Debug, Default)]
pub struct Hazards {
    read: Vec<usize>,
    written: Vec<usize>,
    barriers: usize,
}

impl Hazards {
    /// Records a dispatch reading `reads` and writing `writes`; true when a
    /// barrier must come before it (the caller encodes it).
    pub fn dispatch(&mut self, reads: &[usize], writes: &[usize]) -> bool {
        let clash = reads.iter().any(|b| self.written.contains(b))
            || writes
                .iter()
                .any(|b| self.written.contains(b) || self.read.contains(b));
        if clash {
            self.read.clear();
            self.written.clear();
            self.barriers += 1;
        }
        self.read.extend_from_slice(reads);
        self.written.extend_from_slice(writes);
        clash
    }

    /// A new encoder starts with nothing in flight (encoders of one queue
    /// run in order).
    pub fn reset(&mut self) {
        self.read.clear();
        self.written.clear();
    }

    /// Barriers asked for so far (for tests and profiles).
    pub fn barriers(&self) -> usize {
        self.barriers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_exactly_where_a_dispatch_depends_on_an_earlier_one() {
        let mut h = Hazards::default();
        let (x, w, q, k, v, out) = (1, 2, 3, 4, 5, 6);
        // q, k and v from x: independent, no barrier between them.
        assert!(!h.dispatch(&[w, x], &[q]));
        assert!(!h.dispatch(&[w, x], &[k]));
        assert!(!h.dispatch(&[w, x], &[v]));
        // Attention reads q: it waits (read after write).
        assert!(h.dispatch(&[q, k, v], &[out]));
        // The residual add writes x, which nothing since the barrier read
        // but attention wrote out, which it reads (read after write).
        assert!(h.dispatch(&[out], &[x]));
        // Writing what an unbarriered dispatch read (write after read).
        assert!(!h.dispatch(&[k], &[q]));
        assert!(h.dispatch(&[v], &[k]));
        // Two writes of one buffer (write after write).
        assert!(!h.dispatch(&[], &[out]));
        assert!(h.dispatch(&[], &[out]));
        // A new encoder starts clean.
        h.reset();
        assert!(!h.dispatch(&[out], &[x]));
        assert_eq!(h.barriers(), 4);
    }
}
