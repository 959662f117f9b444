//! Round-trip estimates towards peers and game targets, sans-IO.
//!
//! The data plane sends the protocol's PING frames and reports each outcome with
//! [`RttMatrix::record_probe`]: `Some(rtt)` for a PONG, `None` for a probe given up on.
//! Each peer keeps a smoothed RTT (EWMA, gain 1/8 as in RFC 6298), jitter (mean absolute
//! difference of consecutive samples, gain 1/16 as in RFC 3550), loss over the last 64
//! probes, and p50/p99 over the last one to two windows (two rotating hdrhistograms).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::node::InvalidValue;

/// Chitchat key prefix for what a node measured to a peer node: `r:<node id>`.
pub(crate) const PREFIX_PEER: &str = "r:";
/// Chitchat key prefix for what a node measured to a game target: `g:<target>`.
pub(crate) const PREFIX_TARGET: &str = "g:";

/// Probes remembered for the loss estimate.
const LOSS_PROBES: u32 = 64;
/// Highest RTT the histograms track; longer samples are clamped.
const MAX_TRACKED_US: u64 = 10_000_000;

/// Tuning of the estimators.
#[derive(Clone, Debug)]
pub struct RttConfig {
    /// Percentiles cover the current and the previous window of this length.
    pub percentile_window: Duration,
}

impl Default for RttConfig {
    fn default() -> Self {
        RttConfig {
            percentile_window: Duration::from_secs(30),
        }
    }
}

/// What is known about one path: published in gossip, used by selection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RttSummary {
    /// Smoothed RTT (zero if no probe was ever answered).
    pub srtt: Duration,
    /// Smoothed jitter.
    pub jitter: Duration,
    /// Median of recent samples.
    pub p50: Duration,
    /// 99th percentile of recent samples.
    pub p99: Duration,
    /// Fraction of the last probes that went unanswered (0–1).
    pub loss: f32,
}

impl RttSummary {
    /// A summary of a single clean measurement (for tests and static estimates).
    pub fn from_rtt(rtt: Duration) -> Self {
        RttSummary {
            srtt: rtt,
            jitter: Duration::ZERO,
            p50: rtt,
            p99: rtt,
            loss: 0.0,
        }
    }

    /// Route cost in RTT terms: smoothed RTT plus 2 ms per percent of loss (a lost game
    /// packet costs about a resend interval). `None` when the path is mostly dead.
    pub fn cost(&self) -> Option<Duration> {
        if self.loss >= 0.5 {
            return None;
        }
        let penalty_us = (f64::from(self.loss) * 200_000.0).round() as u64;
        Some(self.srtt + Duration::from_micros(penalty_us))
    }

    /// Whether `self` differs enough from the last published `old` to be worth gossiping:
    /// small wobbles are not re-sent, which keeps gossip quiet on a stable mesh.
    pub fn differs_notably(&self, old: &RttSummary) -> bool {
        fn moved(new: Duration, old: Duration, floor: Duration, frac: f64) -> bool {
            let diff = new.abs_diff(old);
            diff >= floor.max(old.mul_f64(frac))
        }
        moved(self.srtt, old.srtt, Duration::from_millis(1), 0.1)
            || moved(self.jitter, old.jitter, Duration::from_millis(1), 0.25)
            || moved(self.p99, old.p99, Duration::from_millis(2), 0.2)
            || (self.loss - old.loss).abs() >= 0.01
    }

    pub(crate) fn encode(&self) -> String {
        format!(
            "1 {} {} {} {} {}",
            self.srtt.as_micros(),
            self.jitter.as_micros(),
            self.p50.as_micros(),
            self.p99.as_micros(),
            (self.loss * 1000.0).round() as u32
        )
    }

    pub(crate) fn decode(s: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue::new("rtt", s);
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() < 6 || f[0] != "1" {
            return Err(bad());
        }
        let us = |x: &str| {
            x.parse::<u64>()
                .map(Duration::from_micros)
                .map_err(|_| bad())
        };
        let permille: u32 = f[5].parse().map_err(|_| bad())?;
        Ok(RttSummary {
            srtt: us(f[1])?,
            jitter: us(f[2])?,
            p50: us(f[3])?,
            p99: us(f[4])?,
            loss: permille.min(1000) as f32 / 1000.0,
        })
    }
}

/// Estimator for one peer or target.
pub struct RttEstimator {
    srtt_us: f64,
    jitter_us: f64,
    last_us: Option<f64>,
    /// Bit i set = the i-th most recent probe was lost.
    outcomes: u64,
    probes: u32,
    current: Histogram<u32>,
    previous: Option<Histogram<u32>>,
    window_start: Option<Instant>,
    window: Duration,
}

impl std::fmt::Debug for RttEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RttEstimator")
            .field("summary", &self.summary())
            .finish_non_exhaustive()
    }
}

fn histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 2).expect("static bounds are valid")
}

impl RttEstimator {
    /// An empty estimator.
    pub fn new(config: &RttConfig) -> Self {
        RttEstimator {
            srtt_us: 0.0,
            jitter_us: 0.0,
            last_us: None,
            outcomes: 0,
            probes: 0,
            current: histogram(),
            previous: None,
            window_start: None,
            window: config.percentile_window,
        }
    }

    /// Records a probe sent at `sent_at`: `Some(rtt)` if answered, `None` if lost.
    pub fn record(&mut self, sent_at: Instant, rtt: Option<Duration>) {
        match self.window_start {
            None => self.window_start = Some(sent_at),
            Some(start) if sent_at.saturating_duration_since(start) >= self.window => {
                let full = std::mem::replace(&mut self.current, histogram());
                // A window with nothing in it would make percentiles forget too fast.
                if !full.is_empty() {
                    self.previous = Some(full);
                }
                self.window_start = Some(sent_at);
            }
            Some(_) => {}
        }
        self.outcomes = (self.outcomes << 1) | u64::from(rtt.is_none());
        self.probes = (self.probes + 1).min(LOSS_PROBES);
        let Some(rtt) = rtt else { return };
        let us = rtt.as_micros().min(MAX_TRACKED_US as u128) as f64;
        match self.last_us {
            None => self.srtt_us = us,
            Some(last) => {
                self.srtt_us += (us - self.srtt_us) / 8.0;
                self.jitter_us += ((us - last).abs() - self.jitter_us) / 16.0;
            }
        }
        self.last_us = Some(us);
        self.current.saturating_record((us as u64).max(1));
    }

    /// Current estimate; `None` before the first probe.
    pub fn summary(&self) -> Option<RttSummary> {
        if self.probes == 0 {
            return None;
        }
        let mask = if self.probes >= 64 {
            u64::MAX
        } else {
            (1u64 << self.probes) - 1
        };
        let loss = (self.outcomes & mask).count_ones() as f32 / self.probes as f32;
        let (p50, p99) = {
            let mut merged = self.current.clone();
            if let Some(prev) = &self.previous {
                // Same bounds, so this cannot fail.
                let _ = merged.add(prev);
            }
            if merged.is_empty() {
                (0, 0)
            } else {
                (
                    merged.value_at_quantile(0.5),
                    merged.value_at_quantile(0.99),
                )
            }
        };
        Some(RttSummary {
            srtt: Duration::from_micros(self.srtt_us as u64),
            jitter: Duration::from_micros(self.jitter_us as u64),
            p50: Duration::from_micros(p50),
            p99: Duration::from_micros(p99),
            loss,
        })
    }
}

/// Estimators keyed by peer node or game target.
#[derive(Debug)]
pub struct RttMatrix<K> {
    config: RttConfig,
    peers: HashMap<K, RttEstimator>,
}

impl<K: Eq + Hash + Clone> RttMatrix<K> {
    /// An empty matrix.
    pub fn new(config: RttConfig) -> Self {
        RttMatrix {
            config,
            peers: HashMap::new(),
        }
    }

    /// Records the outcome of one probe to `peer` sent at `sent_at`.
    pub fn record_probe(&mut self, peer: &K, sent_at: Instant, rtt: Option<Duration>) {
        if !self.peers.contains_key(peer) {
            self.peers
                .insert(peer.clone(), RttEstimator::new(&self.config));
        }
        self.peers
            .get_mut(peer)
            .expect("inserted above")
            .record(sent_at, rtt);
    }

    /// Current estimate for `peer`.
    pub fn rtt_to(&self, peer: &K) -> Option<RttSummary> {
        self.peers.get(peer)?.summary()
    }

    /// Every peer with an estimate.
    pub fn summaries(&self) -> impl Iterator<Item = (&K, RttSummary)> {
        self.peers
            .iter()
            .filter_map(|(k, e)| Some((k, e.summary()?)))
    }

    /// Forgets peers for which `keep` is false (e.g. nodes gone from the mesh).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.peers.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn steady_rtt_converges_with_no_jitter_or_loss() {
        let t0 = Instant::now();
        let mut m = RttMatrix::new(RttConfig::default());
        for i in 0..100 {
            m.record_probe(&"b", t0 + ms(100) * i, Some(ms(20)));
        }
        let s = m.rtt_to(&"b").unwrap();
        assert_eq!(s.srtt, ms(20));
        assert_eq!(s.jitter, Duration::ZERO);
        assert_eq!(s.loss, 0.0);
        assert!(s.p50.abs_diff(ms(20)) < ms(1), "{s:?}");
        assert!(m.rtt_to(&"c").is_none());
    }

    #[test]
    fn loss_counts_the_last_64_probes() {
        let t0 = Instant::now();
        let mut e = RttEstimator::new(&RttConfig::default());
        for i in 0..100u32 {
            let lost = i % 4 == 0;
            e.record(t0 + ms(10) * i, (!lost).then_some(ms(30)));
        }
        let s = e.summary().unwrap();
        assert!((s.loss - 0.25).abs() < 0.02, "{s:?}");
        // Then a clean stretch clears it.
        for i in 100..164u32 {
            e.record(t0 + ms(10) * i, Some(ms(30)));
        }
        assert_eq!(e.summary().unwrap().loss, 0.0);
    }

    #[test]
    fn all_lost_is_reported_and_unusable() {
        let t0 = Instant::now();
        let mut e = RttEstimator::new(&RttConfig::default());
        for i in 0..5u32 {
            e.record(t0 + ms(10) * i, None);
        }
        let s = e.summary().unwrap();
        assert_eq!(s.loss, 1.0);
        assert_eq!(s.cost(), None);
    }

    #[test]
    fn jitter_and_percentiles_follow_alternating_samples() {
        let t0 = Instant::now();
        let mut e = RttEstimator::new(&RttConfig::default());
        for i in 0..200u32 {
            let rtt = if i % 2 == 0 { ms(10) } else { ms(30) };
            e.record(t0 + ms(10) * i, Some(rtt));
        }
        let s = e.summary().unwrap();
        assert!(s.jitter > ms(18) && s.jitter <= ms(20), "{s:?}");
        assert!(s.p99 >= ms(29), "{s:?}");
        assert!(s.srtt > ms(15) && s.srtt < ms(25), "{s:?}");
    }

    #[test]
    fn percentiles_forget_old_windows() {
        let t0 = Instant::now();
        let cfg = RttConfig {
            percentile_window: Duration::from_secs(10),
        };
        let mut e = RttEstimator::new(&cfg);
        for i in 0..50u32 {
            e.record(t0 + ms(100) * i, Some(ms(200)));
        }
        // Two windows later only the new level is left.
        for i in 0..300u32 {
            e.record(t0 + Duration::from_secs(10) + ms(100) * i, Some(ms(20)));
        }
        let s = e.summary().unwrap();
        assert!(s.p99 < ms(21), "{s:?}");
    }

    #[test]
    fn summary_round_trips_and_publication_threshold() {
        let s = RttSummary {
            srtt: Duration::from_micros(12_345),
            jitter: Duration::from_micros(678),
            p50: Duration::from_micros(12_000),
            p99: Duration::from_micros(20_000),
            loss: 0.012,
        };
        assert_eq!(RttSummary::decode(&s.encode()).unwrap(), s);
        assert!(RttSummary::decode("1 1 2").is_err());
        let mut t = s;
        t.srtt += Duration::from_micros(500);
        assert!(!t.differs_notably(&s));
        t.srtt += Duration::from_millis(2);
        assert!(t.differs_notably(&s));
        let mut l = s;
        l.loss = 0.05;
        assert!(l.differs_notably(&s));
    }

    #[test]
    fn cost_adds_loss() {
        let mut s = RttSummary::from_rtt(ms(40));
        assert_eq!(s.cost(), Some(ms(40)));
        s.loss = 0.05;
        assert_eq!(s.cost(), Some(ms(50)));
    }
}
