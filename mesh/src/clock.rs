//! The wall clock of the gossip transport, in Unix milliseconds.
//!
//! Gossip sequence numbers are millisecond timestamps: they bound replays across restarts
//! and are checked against the receiver's clock (`max_clock_skew`), so they are a real
//! wall-clock protocol field between machines and production reads `SystemTime`. Tests and
//! simulations on a [`crate::MemoryNetwork`] use a virtual wall clock that moves with tokio's
//! clock instead, so paused time (`tokio::time::advance`, auto-advance) also ages sequence
//! numbers, and a run looks like production (sequence numbers ~200 apart per gossip round,
//! not 0–1 ms apart because the test is fast).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A source of wall-clock Unix milliseconds. Cheap to copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock(Source);

#[derive(Clone, Copy, Debug, Default)]
enum Source {
    #[default]
    System,
    Tokio {
        base_ms: u64,
        origin: Instant,
    },
}

impl WallClock {
    /// The operating system's clock.
    pub fn system() -> Self {
        WallClock(Source::System)
    }

    /// A clock reading `base_ms` now and advancing with tokio's clock (so with paused time
    /// it only moves when tokio time does).
    pub fn following_tokio(base_ms: u64) -> Self {
        WallClock(Source::Tokio {
            base_ms,
            origin: Instant::now(),
        })
    }

    /// Current Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match self.0 {
            Source::System => system_ms(),
            Source::Tokio { base_ms, origin } => base_ms + origin.elapsed().as_millis() as u64,
        }
    }
}

/// The operating system's Unix milliseconds (0 before 1970).
#[allow(
    clippy::disallowed_methods,
    reason = "the one place the mesh reads the OS clock"
)]
pub(crate) fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_moves_only_with_tokio_time() {
        let clock = WallClock::following_tokio(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        // Real time passes (the point of the test), virtual time does not.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(clock.now_ms(), 32_000);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(WallClock::system().now_ms() > 1_577_836_800_000);
    }
}
