//! Sliding-window replay and duplicate filter in the style of RFC 6479.
//!
//! A ring of 64-bit blocks; sequence `s` maps to bit `s % 64` of block `(s / 64) % BLOCKS`.
//! Advancing the window clears whole blocks, so both check and update are O(1) (at most
//! `BLOCKS` word writes on a big jump). One block is kept spare so the newest block never
//! overwrites bits still inside the window. With multipath this same filter delivers the
//! first copy of each frame and drops the rest.

/// Number of 64-bit blocks in the ring (2048 bits, 256 bytes per session).
const BLOCKS: usize = 32;
/// Sequence numbers older than `top - WINDOW` are refused.
pub const WINDOW: u64 = ((BLOCKS - 1) * 64) as u64;

/// Per-direction anti-replay state.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (0 = none yet).
    top: u64,
    ring: [u64; BLOCKS],
}

/// Why a sequence number was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Sequence 0 is never sent.
    #[error("sequence number zero")]
    Zero,
    /// Behind the window: too old to tell, treated as a replay.
    #[error("sequence number too old")]
    TooOld,
    /// Seen before: a replay or a duplicate from another path.
    #[error("duplicate sequence number")]
    Duplicate,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        ReplayWindow {
            top: 0,
            ring: [0; BLOCKS],
        }
    }

    /// Highest sequence number accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Whether `seq` would be accepted, without recording it. Call before authenticating,
    /// then [`ReplayWindow::update`] after, so forged frames cannot move the window.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (block, bit) = Self::position(seq);
        if self.ring[block] & (1 << bit) != 0 {
            return Err(ReplayError::Duplicate);
        }
        Ok(())
    }

    /// Checks and records `seq`.
    pub fn update(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        if seq > self.top {
            let current = self.top / 64;
            let target = seq / 64;
            let steps = (target - current).min(BLOCKS as u64);
            for i in 1..=steps {
                self.ring[((current + i) % BLOCKS as u64) as usize] = 0;
            }
            self.top = seq;
        }
        let (block, bit) = Self::position(seq);
        self.ring[block] |= 1 << bit;
        Ok(())
    }

    fn position(seq: u64) -> (usize, u32) {
        (((seq / 64) % BLOCKS as u64) as usize, (seq % 64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_then_duplicates() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.update(0), Err(ReplayError::Zero));
        for s in 1..5000 {
            w.update(s).unwrap();
        }
        assert_eq!(w.update(4999), Err(ReplayError::Duplicate));
        assert_eq!(w.update(4000), Err(ReplayError::Duplicate));
        assert_eq!(w.update(1), Err(ReplayError::TooOld));
    }

    #[test]
    fn out_of_order_inside_window() {
        let mut w = ReplayWindow::new();
        w.update(100).unwrap();
        w.update(98).unwrap();
        w.update(99).unwrap();
        assert_eq!(w.update(98), Err(ReplayError::Duplicate));
        w.update(100 + WINDOW - 1).unwrap();
        // 100 is now exactly at the edge: still remembered.
        assert_eq!(w.update(100), Err(ReplayError::Duplicate));
        w.update(101).unwrap();
    }

    #[test]
    fn big_jump_clears_everything() {
        let mut w = ReplayWindow::new();
        for s in 1..=64 {
            w.update(s).unwrap();
        }
        w.update(1_000_000).unwrap();
        w.update(1_000_000 - 1).unwrap();
        assert_eq!(w.update(1_000_000), Err(ReplayError::Duplicate));
        assert_eq!(w.update(64), Err(ReplayError::TooOld));
    }

    proptest! {
        /// Against a reference model: accepted iff never seen and within the window.
        #[test]
        fn matches_reference_model(seqs in proptest::collection::vec(1u64..5_000, 1..2_000)) {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut top = 0u64;
            for s in seqs {
                let expected_ok = !seen.contains(&s) && (s > top || top - s < WINDOW);
                let got = w.update(s);
                prop_assert_eq!(got.is_ok(), expected_ok, "seq {} top {}", s, top);
                if got.is_ok() {
                    seen.insert(s);
                    top = top.max(s);
                }
            }
        }
    }
}
