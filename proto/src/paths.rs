//! Path health and the redundancy policy (sans-IO): which of a session's paths carry each
//! frame, upstream and downstream.
//!
//! The client owns this state machine. It probes every path with PING frames, learns RTT,
//! jitter and loss per path, suspects a path that has been silent for a while, and decides:
//! - `single`: every frame on the best path (switching only when another is clearly better);
//! - `duplicate`: every frame on every live path, first copy wins at the receiver;
//! - `adaptive`: single while the primary is clean, duplicate for a hold time as soon as loss,
//!   a jitter spike or a silent primary is seen — within a byte budget (e.g. ≤ 1.5× payload).
//!
//! The downstream choice is sent to the node in PATHS frames; the node just follows it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most paths a session may have (the PATHS frame is an 8-bit mask).
pub const MAX_PATHS: usize = 8;

/// Which paths carry frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PathMask(pub u8);

impl PathMask {
    /// Just path `p`.
    pub fn only(p: u8) -> PathMask {
        PathMask(1 << p)
    }

    /// Whether path `p` is in the mask.
    pub fn contains(self, p: u8) -> bool {
        self.0 & (1 << p) != 0
    }

    /// Iterates the paths in the mask.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..MAX_PATHS as u8).filter(move |p| self.contains(*p))
    }

    /// Number of paths in the mask.
    pub fn count(self) -> u32 {
        self.0.count_ones()
    }
}

/// Redundancy policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Redundancy {
    /// Best path only.
    Single,
    /// Every live path.
    Duplicate,
    /// Single while clean; duplicate after trouble for `hold`, within `budget` × payload bytes.
    Adaptive {
        /// How long to keep duplicating after the last sign of trouble.
        hold: Duration,
        /// Upper bound on wire bytes / payload bytes in the long run (e.g. 1.5).
        budget: f64,
    },
}

impl Redundancy {
    /// The default adaptive policy: hold 2 s, budget 2× (full duplication on two paths while
    /// trouble lasts; about 1× — single — while the primary is clean).
    pub const ADAPTIVE: Redundancy = Redundancy::Adaptive {
        hold: Duration::from_secs(2),
        budget: 2.0,
    };
}

impl std::str::FromStr for Redundancy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "single" => Ok(Redundancy::Single),
            "duplicate" => Ok(Redundancy::Duplicate),
            "adaptive" => Ok(Redundancy::ADAPTIVE),
            other => Err(format!(
                "unknown redundancy policy {other:?} (single, duplicate, adaptive)"
            )),
        }
    }
}

/// Tunables of the path state machine.
#[derive(Clone, Copy, Debug)]
pub struct PathConfig {
    /// Interval between probes on each path.
    pub probe_interval: Duration,
    /// A path not heard from for this long is suspect and carries nothing in `single`.
    pub suspect_after: Duration,
    /// A probe without answer for this long counts as lost.
    pub probe_timeout: Duration,
    /// Switch primary only if the other path's RTT is lower by at least this much...
    pub switch_min_gain: Duration,
    /// ...or by at least this fraction of the primary's RTT, and then by at least
    /// [`PathConfig::switch_floor`] (so sub-millisecond noise between two near-equal paths
    /// never flips the primary).
    pub switch_min_ratio: f64,
    /// Smallest gain the ratio rule acts on.
    pub switch_floor: Duration,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            probe_interval: Duration::from_millis(50),
            suspect_after: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(500),
            switch_min_gain: Duration::from_millis(10),
            switch_min_ratio: 1.0 / 3.0,
            switch_floor: Duration::from_millis(2),
        }
    }
}

/// Health figures of one path.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PathStats {
    /// Smoothed RTT (RFC 6298 style), if any probe came back.
    pub srtt: Option<Duration>,
    /// RTT variation (mean deviation).
    pub rttvar: Duration,
    /// Most recent RTT sample.
    pub last_rtt: Option<Duration>,
    /// Probe loss, EWMA over roughly the last 20 probes (0..1).
    pub loss: f64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Probes answered.
    pub probes_answered: u64,
    /// Whether the path is currently suspected dead.
    pub suspect: bool,
    /// Frames from the node whose first copy arrived on this path.
    pub first: u64,
    /// Copies that arrived on this path after another path's (dropped as duplicates).
    pub late: u64,
}

#[derive(Clone, Debug)]
struct Path {
    stats: PathStats,
    /// Last authenticated frame on this path (creation time until the first one).
    last_heard: Instant,
    next_probe: Instant,
}

/// Why redundancy was switched on (for logs and UI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// A probe on the primary went unanswered.
    ProbeLost,
    /// A downstream sequence gap.
    Gap,
    /// An RTT sample far above the smoothed RTT.
    JitterSpike,
    /// The primary went silent.
    Silent,
}

/// The per-session path state machine.
#[derive(Clone, Debug)]
pub struct PathScheduler {
    cfg: PathConfig,
    policy: Redundancy,
    paths: Vec<Path>,
    primary: u8,
    duplicate_until: Option<Instant>,
    last_trouble: Option<Trouble>,
    /// Budget tokens in bytes: each payload byte earns `budget - 1`, each extra copy costs its size.
    tokens: f64,
    outstanding: VecDeque<(u64, u8, Instant)>,
    next_probe_id: u64,
    highest_seq: u64,
    /// Downstream sequence numbers skipped over, with the time after which a still-missing one
    /// counts as lost (copies on a slower path may still fill it before then).
    holes: VecDeque<(u64, Instant)>,
}

/// Most downstream holes tracked at once.
const MAX_HOLES: usize = 256;

/// Most budget bytes that can be saved up for a burst of duplication.
const MAX_TOKENS: f64 = 64.0 * 1024.0;

impl PathScheduler {
    /// A scheduler for `n` paths (1..=8), path 0 the initial primary.
    pub fn new(n: usize, policy: Redundancy, cfg: PathConfig, now: Instant) -> Self {
        let n = n.clamp(1, MAX_PATHS);
        let paths = (0..n)
            .map(|i| Path {
                stats: PathStats::default(),
                last_heard: now,
                // Stagger first probes so paths aren't probed in lockstep.
                next_probe: now + cfg.probe_interval.mul_f64(i as f64 / n as f64),
            })
            .collect();
        PathScheduler {
            cfg,
            policy,
            paths,
            primary: 0,
            duplicate_until: None,
            last_trouble: None,
            tokens: MAX_TOKENS / 4.0,
            outstanding: VecDeque::new(),
            next_probe_id: 1,
            highest_seq: 0,
            holes: VecDeque::new(),
        }
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Always false: a scheduler has at least one path.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The policy in force.
    pub fn policy(&self) -> Redundancy {
        self.policy
    }

    /// Changes the policy.
    pub fn set_policy(&mut self, policy: Redundancy) {
        self.policy = policy;
    }

    /// The current primary path.
    pub fn primary(&self) -> u8 {
        self.primary
    }

    /// Health of path `p`.
    pub fn stats(&self, p: u8) -> PathStats {
        self.paths[p as usize].stats
    }

    /// Why adaptive redundancy last switched on.
    pub fn last_trouble(&self) -> Option<Trouble> {
        self.last_trouble
    }

    /// Whether adaptive redundancy is currently duplicating.
    pub fn duplicating(&self, now: Instant) -> bool {
        match self.policy {
            Redundancy::Single => false,
            Redundancy::Duplicate => true,
            Redundancy::Adaptive { .. } => self.duplicate_until.is_some_and(|t| now < t),
        }
    }

    fn live(&self) -> PathMask {
        let mut m = 0u8;
        for (i, p) in self.paths.iter().enumerate() {
            if !p.stats.suspect {
                m |= 1 << i;
            }
        }
        if m == 0 {
            PathMask((1u16 << self.paths.len()).wrapping_sub(1) as u8)
        } else {
            PathMask(m)
        }
    }

    fn trouble(&mut self, now: Instant, why: Trouble) {
        if let Redundancy::Adaptive { hold, .. } = self.policy {
            self.duplicate_until = Some(now + hold);
            self.last_trouble = Some(why);
        }
    }

    /// Advances timers: suspects silent paths, expires unanswered probes and unfilled
    /// downstream holes, re-picks the primary.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut lost = false;
        while let Some(&(_, deadline)) = self.holes.front() {
            if deadline > now {
                break;
            }
            self.holes.pop_front();
            lost = true;
        }
        if lost {
            self.trouble(now, Trouble::Gap);
        }
        while let Some(&(_, path, sent)) = self.outstanding.front() {
            if now.duration_since(sent) < self.cfg.probe_timeout {
                break;
            }
            self.outstanding.pop_front();
            let s = &mut self.paths[path as usize].stats;
            s.loss = s.loss * 0.95 + 0.05;
            if path == self.primary {
                self.trouble(now, Trouble::ProbeLost);
            }
        }
        for p in &mut self.paths {
            p.stats.suspect = now.saturating_duration_since(p.last_heard) >= self.cfg.suspect_after;
        }
        if self.paths[self.primary as usize].stats.suspect {
            self.trouble(now, Trouble::Silent);
        }
        self.pick_primary();
    }

    fn pick_primary(&mut self) {
        let cur = &self.paths[self.primary as usize].stats;
        let best = (0..self.paths.len() as u8)
            .filter(|&p| !self.paths[p as usize].stats.suspect)
            .min_by_key(|&p| self.paths[p as usize].stats.srtt.unwrap_or(Duration::MAX));
        let Some(best) = best else { return };
        if best == self.primary {
            return;
        }
        if cur.suspect {
            self.primary = best;
            return;
        }
        // Hysteresis: only for a clearly better path.
        let (Some(a), Some(b)) = (cur.srtt, self.paths[best as usize].stats.srtt) else {
            return;
        };
        if a > b
            && (a - b >= self.cfg.switch_min_gain
                || (a - b >= self.cfg.switch_floor
                    && (a - b).as_secs_f64() >= a.as_secs_f64() * self.cfg.switch_min_ratio))
        {
            self.primary = best;
        }
    }

    /// When [`PathScheduler::handle_timeout`] or [`PathScheduler::poll_probe`] next has work.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self
            .paths
            .iter()
            .map(|p| p.next_probe)
            .min()
            .expect("at least one path");
        if let Some(&(_, _, sent)) = self.outstanding.front() {
            t = t.min(sent + self.cfg.probe_timeout);
        }
        if let Some(&(_, deadline)) = self.holes.front() {
            t = t.min(deadline);
        }
        t
    }

    /// A probe due now: `(path, ping id)`. Call until `None`.
    pub fn poll_probe(&mut self, now: Instant) -> Option<(u8, u64)> {
        let i = self.paths.iter().position(|p| p.next_probe <= now)?;
        let p = &mut self.paths[i];
        p.next_probe = now + self.cfg.probe_interval;
        p.stats.probes_sent += 1;
        let id = self.next_probe_id;
        self.next_probe_id += 1;
        self.outstanding.push_back((id, i as u8, now));
        if self.outstanding.len() > 1024 {
            self.outstanding.pop_front();
        }
        Some((i as u8, id))
    }

    /// A pong for probe `id` arrived on `path`.
    pub fn on_pong(&mut self, now: Instant, path: u8, id: u64) {
        let Some(pos) = self.outstanding.iter().position(|&(i, _, _)| i == id) else {
            return;
        };
        let (_, probed, sent) = self.outstanding.remove(pos).expect("position is valid");
        if probed != path || path as usize >= self.paths.len() {
            return;
        }
        let rtt = now.duration_since(sent);
        let s = &mut self.paths[path as usize].stats;
        s.probes_answered += 1;
        s.loss *= 0.95;
        s.last_rtt = Some(rtt);
        let spike = match s.srtt {
            None => {
                s.srtt = Some(rtt);
                s.rttvar = rtt / 2;
                false
            }
            Some(srtt) => {
                let dev = rtt.abs_diff(srtt);
                let spike = rtt > srtt + (s.rttvar * 4).max(Duration::from_millis(20));
                s.rttvar = s.rttvar.mul_f64(0.75) + dev.mul_f64(0.25);
                s.srtt = Some(srtt.mul_f64(0.875) + rtt.mul_f64(0.125));
                spike
            }
        };
        self.on_heard(now, path);
        if spike && path == self.primary {
            self.trouble(now, Trouble::JitterSpike);
        }
        self.pick_primary();
    }

    /// How long `path` has gone without an authenticated frame (since the scheduler started,
    /// if it never had one).
    pub fn silent_for(&self, path: u8, now: Instant) -> Duration {
        self.paths.get(path as usize).map_or(Duration::ZERO, |p| {
            now.saturating_duration_since(p.last_heard)
        })
    }

    /// Any authenticated frame arrived on `path`.
    pub fn on_heard(&mut self, now: Instant, path: u8) {
        if let Some(p) = self.paths.get_mut(path as usize) {
            p.last_heard = p.last_heard.max(now);
            p.stats.suspect = false;
        }
    }

    /// A frame from the node arrived on `path`: the first copy (`first`) or a later one.
    pub fn on_copy(&mut self, path: u8, first: bool) {
        if let Some(p) = self.paths.get_mut(path as usize) {
            if first {
                p.stats.first += 1;
            } else {
                p.stats.late += 1;
            }
        }
    }

    /// How long a skipped downstream sequence number may stay missing before it counts as
    /// lost: the RTT spread between live paths plus a margin, since frames on different paths
    /// (e.g. a pong on the backup) legitimately arrive out of order.
    fn reorder_window(&self) -> Duration {
        let rtts = self
            .paths
            .iter()
            .filter(|p| !p.stats.suspect)
            .filter_map(|p| p.stats.srtt);
        let (lo, hi) = rtts.fold((Duration::MAX, Duration::ZERO), |(lo, hi), r| {
            (lo.min(r), hi.max(r))
        });
        let spread = if hi > lo {
            (hi - lo) / 2
        } else {
            Duration::ZERO
        };
        Duration::from_millis(30) + spread
    }

    /// A downstream frame with sequence `seq` was delivered (first copy). A sequence number
    /// skipped and still missing after the reorder window means a frame was lost on every
    /// path that carried it.
    pub fn on_delivered(&mut self, now: Instant, seq: u64) {
        if let Some(i) = self.holes.iter().position(|&(s, _)| s == seq) {
            self.holes.remove(i);
        }
        if seq > self.highest_seq + 1 && self.highest_seq != 0 {
            let deadline = now + self.reorder_window();
            for missing in (self.highest_seq + 1..seq).take(MAX_HOLES) {
                if self.holes.len() >= MAX_HOLES {
                    self.holes.pop_front();
                }
                self.holes.push_back((missing, deadline));
            }
        }
        self.highest_seq = self.highest_seq.max(seq);
    }

    /// Paths an upstream data frame of `len` bytes goes out on.
    pub fn upstream(&mut self, now: Instant, len: usize) -> PathMask {
        let primary = PathMask::only(self.primary);
        match self.policy {
            Redundancy::Single => primary,
            Redundancy::Duplicate => self.live(),
            Redundancy::Adaptive { budget, .. } => {
                self.tokens = (self.tokens + len as f64 * (budget - 1.0).max(0.0)).min(MAX_TOKENS);
                if !self.duplicating(now) {
                    return primary;
                }
                let mut mask = primary.0;
                for p in self.live().iter().filter(|&p| p != self.primary) {
                    if self.tokens < len as f64 {
                        break;
                    }
                    self.tokens -= len as f64;
                    mask |= 1 << p;
                }
                PathMask(mask)
            }
        }
    }

    /// Paths the node should send downstream frames on (what goes into PATHS frames).
    pub fn downstream(&self, now: Instant) -> PathMask {
        if self.duplicating(now) {
            self.live()
        } else {
            PathMask::only(self.primary)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives probes on `paths` with the given RTTs (None = lost) for `dur`.
    fn run(
        s: &mut PathScheduler,
        start: Instant,
        dur: Duration,
        rtts: &[Option<Duration>],
    ) -> Instant {
        let mut now = start;
        let mut pending: Vec<(Instant, u8, u64)> = Vec::new();
        while now < start + dur {
            while let Some((p, id)) = s.poll_probe(now) {
                if let Some(rtt) = rtts[p as usize] {
                    pending.push((now + rtt, p, id));
                }
            }
            pending.sort_by_key(|x| x.0);
            while pending.first().is_some_and(|x| x.0 <= now) {
                let (_, p, id) = pending.remove(0);
                s.on_pong(now, p, id);
            }
            s.handle_timeout(now);
            now += ms(1);
        }
        now
    }

    #[test]
    fn single_picks_the_faster_path_with_hysteresis() {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(2, Redundancy::Single, PathConfig::default(), t0);
        let now = run(&mut s, t0, ms(2000), &[Some(ms(40)), Some(ms(20))]);
        assert_eq!(s.primary(), 1, "20 ms beats 40 ms");
        assert_eq!(s.upstream(now, 100), PathMask::only(1));
        // Path 0 becomes 15 ms: 5 ms better is under both thresholds (10 ms, 1/3): no switch.
        let now = run(&mut s, now, ms(3000), &[Some(ms(15)), Some(ms(20))]);
        assert_eq!(s.primary(), 1, "no flapping for a small gain");
        // 5 ms vs 20 ms: clearly better.
        run(&mut s, now, ms(3000), &[Some(ms(5)), Some(ms(20))]);
        assert_eq!(s.primary(), 0);
    }

    #[test]
    fn sub_millisecond_noise_between_equal_paths_never_flips_the_primary() {
        // Two paths to the same node on loopback: 0.3 ms vs 0.5 ms is 40 % better, but a
        // fraction of a millisecond; the primary stays.
        let t0 = Instant::now();
        let mut s = PathScheduler::new(2, Redundancy::Single, PathConfig::default(), t0);
        let now = run(
            &mut s,
            t0,
            ms(1000),
            &[Some(Duration::from_micros(500)), None],
        );
        assert_eq!(s.primary(), 0);
        run(
            &mut s,
            now,
            ms(3000),
            &[
                Some(Duration::from_micros(500)),
                Some(Duration::from_micros(300)),
            ],
        );
        assert_eq!(s.primary(), 0, "no switch for a 0.2 ms gain");
    }

    #[test]
    fn silent_primary_is_suspected_and_abandoned() {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(2, Redundancy::Single, PathConfig::default(), t0);
        let now = run(&mut s, t0, ms(1000), &[Some(ms(5)), Some(ms(30))]);
        assert_eq!(s.primary(), 0);
        let now = run(&mut s, now, ms(400), &[None, Some(ms(30))]);
        assert!(s.stats(0).suspect);
        assert_eq!(s.primary(), 1, "switch away from a silent path at once");
        assert_eq!(s.upstream(now, 100), PathMask::only(1));
    }

    #[test]
    fn duplicate_uses_every_live_path() {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(3, Redundancy::Duplicate, PathConfig::default(), t0);
        let now = run(&mut s, t0, ms(1000), &[Some(ms(5)), Some(ms(10)), None]);
        assert_eq!(s.upstream(now, 100), PathMask(0b011));
        assert_eq!(s.downstream(now), PathMask(0b011));
    }

    #[test]
    fn adaptive_duplicates_after_trouble_then_returns_to_single() {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(2, Redundancy::ADAPTIVE, PathConfig::default(), t0);
        let now = run(&mut s, t0, ms(1000), &[Some(ms(5)), Some(ms(10))]);
        assert_eq!(s.upstream(now, 100), PathMask::only(0), "clean: single");
        s.on_delivered(now, 1);
        s.on_delivered(now, 3);
        assert_eq!(
            s.last_trouble(),
            None,
            "a hole is not a loss until the reorder window passes"
        );
        let now = now + ms(100);
        s.handle_timeout(now);
        assert_eq!(s.last_trouble(), Some(Trouble::Gap));
        assert_eq!(s.upstream(now, 100), PathMask(0b11), "gap: duplicate");
        assert_eq!(s.downstream(now), PathMask(0b11));
        let later = now + ms(2100);
        assert_eq!(
            s.upstream(later, 100),
            PathMask::only(0),
            "hold time over: single again"
        );
    }

    #[test]
    fn adaptive_respects_the_byte_budget() {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(
            2,
            Redundancy::Adaptive {
                hold: ms(1_000_000),
                budget: 1.5,
            },
            PathConfig::default(),
            t0,
        );
        let now = run(&mut s, t0, ms(500), &[Some(ms(5)), Some(ms(10))]);
        s.on_delivered(now, 1);
        s.on_delivered(now, 5);
        let now = now + ms(100);
        s.handle_timeout(now);
        let (mut payload, mut wire) = (0u64, 0u64);
        for _ in 0..10_000 {
            let m = s.upstream(now, 200);
            payload += 200;
            wire += 200 * m.count() as u64;
        }
        let ratio = wire as f64 / payload as f64;
        assert!(ratio <= 1.5 + 0.02, "overhead {ratio}");
        assert!(ratio > 1.4, "budget should be used: {ratio}");
    }

    #[test]
    fn reordered_downstream_frames_are_not_losses() {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(2, Redundancy::ADAPTIVE, PathConfig::default(), t0);
        let now = run(&mut s, t0, ms(500), &[Some(ms(5)), Some(ms(25))]);
        s.on_delivered(now, 10);
        s.on_delivered(now, 12); // 11 is a pong on the slower path
        s.on_delivered(now + ms(15), 11);
        s.handle_timeout(now + ms(100));
        assert!(!s.duplicating(now + ms(100)), "{:?}", s.last_trouble());
    }

    #[test]
    fn probe_loss_on_primary_triggers_adaptive() {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(2, Redundancy::ADAPTIVE, PathConfig::default(), t0);
        let now = run(&mut s, t0, ms(1000), &[Some(ms(5)), Some(ms(10))]);
        assert!(!s.duplicating(now));
        // One probe on the primary lost, the path otherwise alive.
        let (p, id) = loop {
            let x = s.poll_probe(now + ms(100));
            if let Some((0, id)) = x {
                break (0u8, id);
            }
            if let Some((p, id)) = x {
                s.on_pong(now + ms(105), p, id);
            }
        };
        let _ = (p, id);
        s.on_heard(now + ms(500), 0);
        s.handle_timeout(now + ms(601));
        assert!(s.duplicating(now + ms(601)));
        assert_eq!(s.last_trouble(), Some(Trouble::ProbeLost));
    }
}
