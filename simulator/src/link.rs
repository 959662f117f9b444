//! Userspace impairment links: a UDP hop placed between the client and a node's data port
//! that drops, delays, jitters, reorders, duplicates, corrupts, rate-limits (or queues) and
//! MTU-limits datagrams, or replays a recorded trace, per direction.
//!
//! The decisions come from [`Impairer`], a sans-IO state machine fed with the arrival time
//! (relative to the scenario clock) and the datagram length; the real links here, the
//! virtual-time engine and route probing all use it. Each direction owns one impairer seeded on
//! its own, and every datagram consumes the same number of random draws whatever happens to it,
//! so the n-th datagram through a direction gets the same random outcome in every run with the
//! same seed. The Gilbert-Elliott chain runs on a second stream of its own, in time, so its bad
//! periods do not depend on how many datagrams are sent. (Bursts, rate limits, queues, traces
//! and scheduled events depend on arrival *times*, which is the point of them.)
//!
//! Delivery timing: a receive task per direction decides, and one OS thread per direction
//! sends each datagram when it is due. A tokio timer fires on the next millisecond tick, which
//! would add 0–1 ms of its own jitter to every figure; the thread parks on a futex with a
//! deadline (a high-resolution timer) and is typically late by tens of microseconds. The
//! lateness is measured and reported ([`DirectionReport::late_us_p50`]).
//!
//! Host noise: a stall of this process (a busy or overcommitted machine, a stopped VM) delays
//! datagrams exactly like a network spike would. Both sides are measured so that a report can
//! tell the two apart: the sender thread's lateness against each due time, and the receive
//! side's lateness — how long a datagram waited in the socket before the receive task read it,
//! from the kernel's receive timestamp (`SO_TIMESTAMPNS`) against the time of the read. Every
//! episode above [`STALL_THRESHOLD`] is reported as a [`Stall`] with its time and length.
//!
//! Clients: a simulator link carries one client and sends answers to the address that spoke
//! last ([`Link::start_on`]); the standalone `plg-sim link` opens one upstream socket per
//! client address instead ([`Link::start_per_client`], NAT-like), so that several clients at
//! once each get their own answers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::trace::{TraceRef, TraceStep};

/// Width of one bin of the per-link timeline.
pub const TIMELINE_BIN: Duration = Duration::from_millis(100);

/// A datagram handled later than this (sender behind its due time, or a datagram left unread
/// in the socket) marks a host stall.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(5);

/// How delay varies around its mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitterDistribution {
    /// Uniform in `[-jitter_ms, +jitter_ms]`.
    #[default]
    Uniform,
    /// Normal with standard deviation `jitter_ms`, cut at ±3 standard deviations.
    Normal,
}

/// Gilbert-Elliott bursty loss: a two-state chain (good, bad) that evolves in **time**,
/// independent of the traffic. Each state is held for an exponentially distributed time
/// (means `mean_good_ms` and `mean_bad_ms`), drawn from the direction's own burst stream, so
/// the bad periods are a function of (seed, time): two policies that send different numbers of
/// datagrams meet the same bad periods at the same times. A datagram arriving in a state is
/// lost with that state's probability.
///
/// Long-run share of time in the bad state: π_bad = mean_bad / (mean_good + mean_bad); long-run
/// loss = π_bad · loss_bad + (1 − π_bad) · loss_good; a bad period lasts `mean_bad_ms` on
/// average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliott {
    /// Mean time in the good state, milliseconds (> 0).
    pub mean_good_ms: f64,
    /// Mean time in the bad state (mean burst length), milliseconds (> 0).
    pub mean_bad_ms: f64,
    /// Loss probability in the bad state, percent (default 100).
    #[serde(default = "hundred")]
    pub loss_bad_pct: f64,
    /// Loss probability in the good state, percent (default 0).
    #[serde(default)]
    pub loss_good_pct: f64,
}

fn hundred() -> f64 {
    100.0
}

fn default_reorder_delay() -> f64 {
    // Longer than a game's tick interval (15.6 ms at 64 ticks/s), or nothing overtakes.
    50.0
}

fn default_rate_burst() -> u64 {
    4_000
}

impl GilbertElliott {
    /// Long-run share of time in the bad state (0..=1).
    pub fn bad_share(&self) -> f64 {
        let sum = self.mean_good_ms + self.mean_bad_ms;
        if sum > 0.0 {
            self.mean_bad_ms / sum
        } else {
            0.0
        }
    }

    /// Long-run loss rate (0..=1): π_bad · loss_bad + π_good · loss_good.
    pub fn stationary_loss(&self) -> f64 {
        let bad = self.bad_share();
        bad * self.loss_bad_pct / 100.0 + (1.0 - bad) * self.loss_good_pct / 100.0
    }

    /// The chain as seen by datagrams `interval` apart: the per-datagram probabilities
    /// `(p, r)` of moving good→bad and bad→good between two of them. With rates λ = 1/mean_good
    /// and μ = 1/mean_bad, the chain mixes at λ + μ: p = π_bad · (1 − e^{−(λ+μ)·interval}),
    /// r = π_good · (1 − e^{−(λ+μ)·interval}). Consecutive bad datagrams then come in runs of
    /// mean 1/r.
    pub fn per_datagram(&self, interval: Duration) -> (f64, f64) {
        let rate = 1.0 / self.mean_good_ms + 1.0 / self.mean_bad_ms;
        let mix = 1.0 - (-rate * interval.as_secs_f64() * 1000.0).exp();
        let bad = self.bad_share();
        (bad * mix, (1.0 - bad) * mix)
    }
}

/// A scalar parameter a `ramp` event moves linearly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampParam {
    /// [`Impairment::delay_ms`].
    DelayMs,
    /// [`Impairment::jitter_ms`].
    JitterMs,
    /// [`Impairment::loss_pct`].
    LossPct,
    /// [`Impairment::duplicate_pct`].
    DuplicatePct,
    /// [`Impairment::reorder_pct`].
    ReorderPct,
    /// [`Impairment::corrupt_pct`].
    CorruptPct,
}

impl RampParam {
    /// Name as written in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            RampParam::DelayMs => "delay_ms",
            RampParam::JitterMs => "jitter_ms",
            RampParam::LossPct => "loss_pct",
            RampParam::DuplicatePct => "duplicate_pct",
            RampParam::ReorderPct => "reorder_pct",
            RampParam::CorruptPct => "corrupt_pct",
        }
    }

    fn field(self, p: &mut Impairment) -> &mut f64 {
        match self {
            RampParam::DelayMs => &mut p.delay_ms,
            RampParam::JitterMs => &mut p.jitter_ms,
            RampParam::LossPct => &mut p.loss_pct,
            RampParam::DuplicatePct => &mut p.duplicate_pct,
            RampParam::ReorderPct => &mut p.reorder_pct,
            RampParam::CorruptPct => &mut p.corrupt_pct,
        }
    }

    /// Checks a target value against the parameter's range.
    pub fn validate(self, to: f64) -> Result<(), String> {
        let max = match self {
            RampParam::DelayMs | RampParam::JitterMs => 60_000.0,
            _ => 100.0,
        };
        if to.is_finite() && (0.0..=max).contains(&to) {
            Ok(())
        } else {
            Err(format!(
                "{} must be within 0..={max} (got {to})",
                self.name()
            ))
        }
    }
}

/// What one direction of a link does to datagrams. Every field defaults to "nothing".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Impairment {
    /// Independent (Bernoulli) loss, percent.
    pub loss_pct: f64,
    /// Bursty loss on top of the independent loss.
    pub burst: Option<GilbertElliott>,
    /// Fixed one-way delay, milliseconds.
    pub delay_ms: f64,
    /// Jitter amplitude, milliseconds (see [`JitterDistribution`]).
    pub jitter_ms: f64,
    /// Shape of the jitter.
    pub jitter: JitterDistribution,
    /// Share of datagrams held back `reorder_delay_ms` beyond their turn, percent. Without
    /// it the link is FIFO: jitter never reorders (a datagram waits for the one before it).
    pub reorder_pct: f64,
    /// Extra hold of a reordered datagram, milliseconds (default 50: at 64 ticks/s the next
    /// three datagrams overtake it; a hold shorter than the tick interval reorders nothing).
    pub reorder_delay_ms: f64,
    /// Share of datagrams sent twice, percent.
    pub duplicate_pct: f64,
    /// Rate limit in kilobits per second (0 = none). Without `queue_bytes`, a token bucket:
    /// datagrams over it are dropped.
    pub rate_kbps: f64,
    /// Token-bucket depth in bytes (default 4000).
    pub rate_burst_bytes: u64,
    /// With `rate_kbps`: a FIFO buffer of this many bytes (0 = none, token bucket instead).
    /// Datagrams wait for the backlog ahead of them to drain at the rate, and are dropped only
    /// when they would not fit in the buffer (tail drop): bufferbloat.
    pub queue_bytes: u64,
    /// Share of datagrams delivered with one byte flipped, percent.
    pub corrupt_pct: f64,
    /// Largest UDP payload the link carries, bytes (0 = no limit); larger ones are dropped.
    pub mtu: usize,
    /// A recorded delay/loss trace replacing `delay_ms`, `jitter_ms`, `loss_pct` and `burst`
    /// (see [`crate::trace`]); the path is relative to the scenario file.
    pub trace: Option<TraceRef>,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            loss_pct: 0.0,
            burst: None,
            delay_ms: 0.0,
            jitter_ms: 0.0,
            jitter: JitterDistribution::Uniform,
            reorder_pct: 0.0,
            reorder_delay_ms: default_reorder_delay(),
            duplicate_pct: 0.0,
            rate_kbps: 0.0,
            rate_burst_bytes: default_rate_burst(),
            queue_bytes: 0,
            corrupt_pct: 0.0,
            mtu: 0,
            trace: None,
        }
    }
}

impl Impairment {
    /// Checks ranges; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let pct = |name: &str, v: f64| {
            if (0.0..=100.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be within 0..=100 (got {v})"))
            }
        };
        let non_neg = |name: &str, v: f64, max: f64| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be within 0..={max} (got {v})"))
            }
        };
        pct("loss_pct", self.loss_pct)?;
        pct("reorder_pct", self.reorder_pct)?;
        pct("duplicate_pct", self.duplicate_pct)?;
        pct("corrupt_pct", self.corrupt_pct)?;
        non_neg("delay_ms", self.delay_ms, 60_000.0)?;
        non_neg("jitter_ms", self.jitter_ms, 60_000.0)?;
        non_neg("reorder_delay_ms", self.reorder_delay_ms, 60_000.0)?;
        non_neg("rate_kbps", self.rate_kbps, 10_000_000.0)?;
        if self.rate_kbps > 0.0 && self.queue_bytes == 0 && self.rate_burst_bytes < 64 {
            return Err("rate_burst_bytes must be at least 64 with a rate limit".into());
        }
        if self.queue_bytes > 0 {
            if self.rate_kbps <= 0.0 {
                return Err("queue_bytes needs a rate_kbps to drain at".into());
            }
            if !(64..=1 << 30).contains(&self.queue_bytes) {
                return Err(format!(
                    "queue_bytes must be within 64..={} (got {})",
                    1u64 << 30,
                    self.queue_bytes
                ));
            }
        }
        if self.mtu != 0 && !(28..=65_535).contains(&self.mtu) {
            return Err(format!(
                "mtu must be 0 (none) or within 28..=65535 bytes of UDP payload (got {})",
                self.mtu
            ));
        }
        if let Some(b) = &self.burst {
            for (name, v) in [
                ("burst.mean_good_ms", b.mean_good_ms),
                ("burst.mean_bad_ms", b.mean_bad_ms),
            ] {
                if !(v.is_finite() && v > 0.0 && v <= 86_400_000.0) {
                    return Err(format!("{name} must be > 0 and at most a day (got {v})"));
                }
            }
            pct("burst.loss_bad_pct", b.loss_bad_pct)?;
            pct("burst.loss_good_pct", b.loss_good_pct)?;
        }
        if let Some(t) = &self.trace {
            if self.delay_ms != 0.0
                || self.jitter_ms != 0.0
                || self.loss_pct != 0.0
                || self.burst.is_some()
            {
                return Err(format!(
                    "trace {} replaces delay_ms, jitter_ms, loss_pct and burst: leave them unset",
                    t.path().display()
                ));
            }
            if t.trace().is_none() {
                return Err(format!(
                    "trace {} is not loaded (traces are read with the scenario file)",
                    t.path().display()
                ));
            }
        }
        Ok(())
    }

    /// Reads the trace file, if any and not read yet (a relative path is taken relative to
    /// `dir`: the scenario file's directory, or the working directory for a command line).
    pub fn load_trace(&mut self, dir: &std::path::Path) -> Result<(), crate::trace::TraceError> {
        match &mut self.trace {
            Some(t) => t.load_relative_to(dir),
            None => Ok(()),
        }
    }

    /// Long-run loss this impairment injects (0..=1), ignoring rate limits, traces and events.
    pub fn expected_loss(&self) -> f64 {
        let burst = self.burst.map_or(0.0, |b| b.stationary_loss());
        1.0 - (1.0 - self.loss_pct / 100.0) * (1.0 - burst)
    }

    /// Largest delay a datagram can get (a full queue included), for drain timing.
    pub fn max_delay(&self) -> Duration {
        let jitter = match self.jitter {
            JitterDistribution::Uniform => self.jitter_ms,
            JitterDistribution::Normal => 3.0 * self.jitter_ms,
        };
        let reorder = if self.reorder_pct > 0.0 {
            self.reorder_delay_ms
        } else {
            0.0
        };
        let queue = if self.queue_bytes > 0 && self.rate_kbps > 0.0 {
            self.queue_bytes as f64 * 8.0 / self.rate_kbps
        } else {
            0.0
        };
        let trace = self
            .trace
            .as_ref()
            .and_then(|t| t.trace())
            .map_or(0.0, |t| t.max_delay_ms());
        Duration::from_secs_f64(
            (self.delay_ms + jitter + reorder + queue + trace).max(0.0) / 1000.0,
        )
    }
}

/// A change to one direction at a point of the scenario clock.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduledChange {
    /// Drop every datagram arriving in `[from, until)`.
    Blackhole {
        /// Start of the window.
        from: Duration,
        /// End of the window (exclusive).
        until: Duration,
    },
    /// From `at` on, use `impairment` instead of what was there.
    Set {
        /// When the change applies.
        at: Duration,
        /// The new parameters.
        impairment: Impairment,
    },
    /// Move `param` linearly from its value at `from` to `to` at `until`, then hold `to`. A
    /// `Set` after `from` ends the ramp (the latest change wins).
    Ramp {
        /// Start of the ramp.
        from: Duration,
        /// End of the ramp (`to` is reached).
        until: Duration,
        /// Which parameter.
        param: RampParam,
        /// Its value at `until` and after.
        to: f64,
    },
}

impl ScheduledChange {
    /// The same change `by` later (a clock whose zero comes earlier).
    pub fn delayed(&self, by: Duration) -> ScheduledChange {
        match self {
            ScheduledChange::Blackhole { from, until } => ScheduledChange::Blackhole {
                from: *from + by,
                until: *until + by,
            },
            ScheduledChange::Set { at, impairment } => ScheduledChange::Set {
                at: *at + by,
                impairment: impairment.clone(),
            },
            ScheduledChange::Ramp {
                from,
                until,
                param,
                to,
            } => ScheduledChange::Ramp {
                from: *from + by,
                until: *until + by,
                param: *param,
                to: *to,
            },
        }
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A scheduled blackhole window.
    Blackhole,
    /// Larger than the link's MTU.
    Mtu,
    /// Over the token-bucket rate (no queue).
    Rate,
    /// Tail drop: the rate limiter's queue had no room for it.
    Queue,
    /// Gilbert-Elliott loss.
    Burst,
    /// Independent loss.
    Random,
    /// A `loss` step of a replayed trace.
    Trace,
}

/// One byte of a delivered datagram flipped by the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    /// Offset of the byte (always within the datagram the decision was made for).
    pub index: usize,
    /// Mask XORed into it (never 0).
    pub xor: u8,
}

impl Corruption {
    /// Flips the byte in `buf` (a no-op if `buf` is shorter than `index`).
    pub fn apply(&self, buf: &mut [u8]) {
        if let Some(b) = buf.get_mut(self.index) {
            *b ^= self.xor;
        }
    }
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Dropped.
    Drop(DropReason),
    /// Delivered after `delay` (from arrival), and a second copy after `duplicate` if any.
    Deliver {
        /// Delay of the datagram.
        delay: Duration,
        /// Delay of the duplicate copy.
        duplicate: Option<Duration>,
        /// A byte to flip in the delivered datagram ([`Corruption::apply`]); the duplicate
        /// copy, if any, is left intact.
        corrupt: Option<Corruption>,
    },
}

/// Salt of the burst stream's seed (derived from the direction's seed).
const BURST_STREAM: u64 = 0x0062_7572_7374; // "burst" in ASCII

/// The Gilbert-Elliott chain of one direction, on its own random stream, evaluated lazily up
/// to the arrival time.
#[derive(Debug)]
struct BurstChain {
    rng: fastrand::Rng,
    /// The chain was running during the current state (a burst model was in force).
    on: bool,
    bad: bool,
    /// When the current state ends: the next time the chain moves or re-reads its parameters.
    until: Duration,
}

/// Seeded decision machine for one direction of one link (sans-IO: time is passed in).
#[derive(Debug)]
pub struct Impairer {
    rng: fastrand::Rng,
    base: Impairment,
    schedule: Vec<ScheduledChange>,
    chain: BurstChain,
    tokens: f64,
    last_refill: Duration,
    /// When the rate limiter's queue is empty again (queue mode).
    busy_until: Duration,
    /// Due time (from the scenario epoch) of the last in-order datagram: FIFO floor.
    last_due: Duration,
    /// Where a replayed trace's time zero is on this machine's clock.
    trace_origin: Duration,
}

impl Impairer {
    /// The same machine with a replayed trace starting at `origin` on its clock (a clock that
    /// starts before the scenario's, as the virtual network's links do during the warm-up).
    pub fn with_trace_origin(mut self, origin: Duration) -> Impairer {
        self.trace_origin = origin;
        self
    }

    /// A machine with `impairment` as the base parameters and `schedule` on top. The burst
    /// chain draws from its own stream, derived from `seed`.
    pub fn new(seed: u64, impairment: Impairment, schedule: Vec<ScheduledChange>) -> Impairer {
        Impairer {
            rng: fastrand::Rng::with_seed(seed),
            chain: BurstChain {
                rng: fastrand::Rng::with_seed(derive_seed(seed, BURST_STREAM)),
                on: false,
                bad: false,
                until: Duration::ZERO,
            },
            tokens: impairment.rate_burst_bytes as f64,
            base: impairment,
            schedule,
            last_refill: Duration::ZERO,
            busy_until: Duration::ZERO,
            last_due: Duration::ZERO,
            trace_origin: Duration::ZERO,
        }
    }

    /// Parameters in force at `at`: the latest `Set` at or before `at` (else the base), with
    /// the ramps that started since then applied.
    pub fn params_at(&self, at: Duration) -> Impairment {
        let mut p = &self.base;
        let mut latest = Duration::ZERO;
        for c in &self.schedule {
            if let ScheduledChange::Set { at: t, impairment } = c
                && *t <= at
                && *t >= latest
            {
                latest = *t;
                p = impairment;
            }
        }
        let mut p = p.clone();
        let mut ramps: Vec<(Duration, Duration, RampParam, f64)> = self
            .schedule
            .iter()
            .filter_map(|c| match c {
                ScheduledChange::Ramp {
                    from,
                    until,
                    param,
                    to,
                } if *from <= at && *from >= latest => Some((*from, *until, *param, *to)),
                _ => None,
            })
            .collect();
        if ramps.is_empty() {
            return p;
        }
        ramps.sort_by_key(|r| r.0);
        let lerp = |start: f64,
                    (from, until, _, to): (Duration, Duration, RampParam, f64),
                    t: Duration| {
            if t >= until || until <= from {
                to
            } else {
                let f = (t - from).as_secs_f64() / (until - from).as_secs_f64();
                start + (to - start) * f
            }
        };
        // Each ramp starts from the value its parameter had when it began (possibly the middle
        // of an earlier ramp on the same parameter); the latest ramp on a parameter wins.
        let mut starts: Vec<f64> = Vec::with_capacity(ramps.len());
        for i in 0..ramps.len() {
            let r = ramps[i];
            let start = match (0..i).rev().find(|&j| ramps[j].2 == r.2) {
                Some(j) => lerp(starts[j], ramps[j], r.0),
                None => *r.2.field(&mut p),
            };
            starts.push(start);
            *r.2.field(&mut p) = lerp(start, r, at);
        }
        p
    }

    fn blackholed(&self, at: Duration) -> bool {
        self.schedule.iter().any(|c| {
            matches!(c, ScheduledChange::Blackhole { from, until } if *from <= at && at < *until)
        })
    }

    /// The first `Set` strictly after `t` (when a stopped burst chain may start again).
    fn next_set_after(&self, t: Duration) -> Duration {
        self.schedule
            .iter()
            .filter_map(|c| match c {
                ScheduledChange::Set { at, .. } if *at > t => Some(*at),
                _ => None,
            })
            .min()
            .unwrap_or(Duration::MAX)
    }

    /// Whether the burst chain is in its bad state at `at`, advancing it lazily. Every change
    /// happens at a time drawn from the chain's own stream, so the answer depends on the seed
    /// and `at` only, not on how often it is asked. `at` should not go backwards (if it does,
    /// the state of the latest time asked is returned).
    pub fn in_burst(&mut self, at: Duration) -> bool {
        while self.chain.until <= at {
            let t = self.chain.until;
            let (u_state, u_hold) = (self.chain.rng.f64(), self.chain.rng.f64());
            let Some(ge) = self.params_at(t).burst else {
                // No burst model now: good until the parameters next change.
                self.chain.on = false;
                self.chain.bad = false;
                self.chain.until = self.next_set_after(t);
                continue;
            };
            self.chain.bad = if self.chain.on {
                !self.chain.bad
            } else {
                // Starting: in the stationary distribution, so short runs are not biased.
                u_state < ge.bad_share()
            };
            self.chain.on = true;
            let mean_ms = if self.chain.bad {
                ge.mean_bad_ms
            } else {
                ge.mean_good_ms
            };
            let hold_ms = -mean_ms * (1.0 - u_hold).ln();
            // At least a nanosecond, so the chain always moves forward.
            self.chain.until =
                t + Duration::from_secs_f64(hold_ms / 1000.0).max(Duration::from_nanos(1));
        }
        self.chain.on && self.chain.bad
    }

    fn jitter(p: &Impairment, u1: f64, u2: f64) -> f64 {
        if p.jitter_ms <= 0.0 {
            return 0.0;
        }
        match p.jitter {
            JitterDistribution::Uniform => (2.0 * u1 - 1.0) * p.jitter_ms,
            JitterDistribution::Normal => {
                // Box-Muller; u1 in (0, 1] so ln is finite.
                let z = (-2.0 * (1.0 - u1).max(f64::MIN_POSITIVE).ln()).sqrt()
                    * (2.0 * std::f64::consts::PI * u2).cos();
                z.clamp(-3.0, 3.0) * p.jitter_ms
            }
        }
    }

    /// Decides the fate of a `len`-byte datagram arriving at `at` on the scenario clock.
    ///
    /// Checks in order: blackhole window, MTU, rate limit (token bucket, or queue), then the
    /// trace if there is one, else Gilbert-Elliott and independent loss; then delay, jitter,
    /// reordering, duplication and corruption.
    pub fn decide(&mut self, at: Duration, len: usize) -> Decision {
        // Always the same seven draws, in the same order, so outcomes line up across runs. (The
        // first was the burst chain's step before the chain moved to its own stream in time;
        // keeping the stride keeps every other seeded outcome what it was.)
        let u_corrupt = self.rng.f64();
        let u_burst = self.rng.f64();
        let u_loss = self.rng.f64();
        let (j1, j2) = (self.rng.f64(), self.rng.f64());
        let u_dup = self.rng.f64();
        let u_reorder = self.rng.f64();
        let p = self.params_at(at);
        // The chain runs whatever happens to the datagram (it runs on time anyway).
        let bad = self.in_burst(at);

        if self.blackholed(at) {
            return Decision::Drop(DropReason::Blackhole);
        }
        if p.mtu > 0 && len > p.mtu {
            return Decision::Drop(DropReason::Mtu);
        }
        let rate_bytes = p.rate_kbps * 1000.0 / 8.0;
        let mut queued = Duration::ZERO;
        if p.rate_kbps > 0.0 && p.queue_bytes > 0 {
            // FIFO queue drained at the rate: the backlog is what is still to be sent.
            let backlog = self.busy_until.saturating_sub(at).as_secs_f64() * rate_bytes;
            if backlog + len as f64 > p.queue_bytes as f64 + 1e-6 {
                return Decision::Drop(DropReason::Queue);
            }
            self.busy_until =
                self.busy_until.max(at) + Duration::from_secs_f64(len as f64 / rate_bytes);
            queued = self.busy_until - at;
        } else if p.rate_kbps > 0.0 {
            let dt = at.saturating_sub(self.last_refill).as_secs_f64();
            self.tokens = (self.tokens + dt * rate_bytes).min(p.rate_burst_bytes as f64);
            self.last_refill = self.last_refill.max(at);
            if self.tokens < len as f64 {
                return Decision::Drop(DropReason::Rate);
            }
            self.tokens -= len as f64;
        }
        let trace_at = at.saturating_sub(self.trace_origin);
        let trace = p.trace.as_ref().map(|t| t.trace().map(|t| t.at(trace_at)));
        let ms = match trace {
            Some(Some(TraceStep::Delay(ms))) => ms,
            // A trace's loss step, or a trace that was never loaded.
            Some(Some(TraceStep::Loss) | None) => return Decision::Drop(DropReason::Trace),
            None => {
                if let Some(ge) = &p.burst {
                    let loss = if bad {
                        ge.loss_bad_pct
                    } else {
                        ge.loss_good_pct
                    };
                    if u_burst < loss / 100.0 {
                        return Decision::Drop(DropReason::Burst);
                    }
                }
                if u_loss < p.loss_pct / 100.0 {
                    return Decision::Drop(DropReason::Random);
                }
                (p.delay_ms + Self::jitter(&p, j1, j2)).max(0.0)
            }
        };
        let mut due = at + queued + Duration::from_secs_f64(ms / 1000.0);
        if u_reorder < p.reorder_pct / 100.0 {
            // Held back past its turn; does not move the FIFO floor, so later ones overtake.
            due = due.max(self.last_due) + Duration::from_secs_f64(p.reorder_delay_ms / 1000.0);
        } else {
            due = due.max(self.last_due);
            self.last_due = due;
        }
        let delay = due - at;
        let duplicate = (u_dup < p.duplicate_pct / 100.0).then_some(delay);
        let q = p.corrupt_pct / 100.0;
        let corrupt = (len > 0 && u_corrupt < q).then(|| {
            // Given u < q, u / q is uniform in [0, 1) again: its integer part over the datagram
            // picks the byte, its fraction the mask.
            let pos = u_corrupt / q * len as f64;
            Corruption {
                index: (pos as usize).min(len - 1),
                xor: 1 + ((pos.fract() * 255.0) as u8).min(254),
            }
        });
        Decision::Deliver {
            delay,
            duplicate,
            corrupt,
        }
    }
}

/// Live counters of one direction.
#[derive(Debug, Default)]
pub struct DirectionCounters {
    /// Datagrams that entered the link.
    pub packets_in: AtomicU64,
    /// Bytes that entered the link (UDP payload: what the sender put on the wire).
    pub bytes_in: AtomicU64,
    /// Datagrams sent out (duplicates included).
    pub packets_out: AtomicU64,
    /// Bytes sent out.
    pub bytes_out: AtomicU64,
    /// Dropped by a blackhole window.
    pub dropped_blackhole: AtomicU64,
    /// Dropped for being larger than the MTU.
    pub dropped_mtu: AtomicU64,
    /// Dropped over the rate limit (token bucket).
    pub dropped_rate: AtomicU64,
    /// Tail-dropped by a full rate-limiter queue.
    pub dropped_queue: AtomicU64,
    /// Dropped by Gilbert-Elliott loss.
    pub dropped_burst: AtomicU64,
    /// Dropped by independent loss.
    pub dropped_random: AtomicU64,
    /// Dropped by a `loss` step of a replayed trace.
    pub dropped_trace: AtomicU64,
    /// Delivered with a byte flipped.
    pub corrupted: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Downstream datagrams dropped because no client had spoken yet, or send errors.
    pub undeliverable: AtomicU64,
    /// Delay decided for the latest delivered datagram, microseconds (live view).
    pub last_delay_us: AtomicU64,
    /// Host stalls flagged so far (sender or receive side, see [`Stall`]).
    pub stalls: AtomicU64,
    /// Upstream only: how many times the client address changed, the first one included
    /// (replies go to the latest address, so more than one means clients took turns); on a
    /// [`Link::start_per_client`] link, the distinct clients seen.
    pub client_changes: AtomicU64,
}

impl DirectionCounters {
    fn count_drop(&self, r: DropReason) {
        let c = match r {
            DropReason::Blackhole => &self.dropped_blackhole,
            DropReason::Mtu => &self.dropped_mtu,
            DropReason::Rate => &self.dropped_rate,
            DropReason::Queue => &self.dropped_queue,
            DropReason::Burst => &self.dropped_burst,
            DropReason::Random => &self.dropped_random,
            DropReason::Trace => &self.dropped_trace,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams dropped for any impairment reason.
    pub fn dropped(&self) -> u64 {
        [
            &self.dropped_blackhole,
            &self.dropped_mtu,
            &self.dropped_rate,
            &self.dropped_queue,
            &self.dropped_burst,
            &self.dropped_random,
            &self.dropped_trace,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// One direction of a link's configuration.
#[derive(Debug, Clone, Default)]
pub struct DirectionConfig {
    /// Base parameters.
    pub impairment: Impairment,
    /// Seed of this direction's decisions.
    pub seed: u64,
    /// Scheduled changes, on the scenario clock.
    pub schedule: Vec<ScheduledChange>,
}

/// A link's configuration.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Where datagrams from the client go (a node's data port).
    pub upstream: SocketAddr,
    /// Client → upstream.
    pub up: DirectionConfig,
    /// Upstream → client.
    pub down: DirectionConfig,
    /// Keep every decision (for tests and debugging).
    pub trace: bool,
}

impl DirectionConfig {
    /// Both directions with `impairment` and no schedule, each with its own stream derived
    /// from `seed` (up: salt 0, down: salt 1).
    pub fn pair(impairment: Impairment, seed: u64) -> (DirectionConfig, DirectionConfig) {
        let one = |impairment, salt| DirectionConfig {
            impairment,
            seed: derive_seed(seed, salt),
            schedule: vec![],
        };
        (one(impairment.clone(), 0), one(impairment, 1))
    }
}

impl LinkConfig {
    /// A link to `upstream` with the same impairment both ways and seeds derived from `seed`.
    pub fn symmetric(upstream: SocketAddr, impairment: Impairment, seed: u64) -> LinkConfig {
        let (up, down) = DirectionConfig::pair(impairment, seed);
        LinkConfig {
            upstream,
            up,
            down,
            trace: false,
        }
    }
}

/// Mixes `salt` into `seed` (SplitMix64), so each link and direction gets its own stream.
pub fn derive_seed(seed: u64, salt: u64) -> u64 {
    let mut z = seed
        ^ salt
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One traced decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEntry {
    /// Arrival on the scenario clock (zero before the link is armed).
    pub at: Duration,
    /// Datagram length.
    pub len: usize,
    /// What was decided.
    pub decision: Decision,
    /// First 8 bytes of the datagram (to match it with what the receiver saw).
    pub head: [u8; 8],
}

/// One bin of a direction's timeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineBin {
    /// Datagrams that arrived in the bin.
    pub packets: u32,
    /// Of those, dropped.
    pub dropped: u32,
    /// Mean added delay of the delivered ones, milliseconds.
    pub mean_delay_ms: f64,
    /// Largest added delay, milliseconds.
    pub max_delay_ms: f64,
}

/// What a direction did over its life.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirectionReport {
    /// Datagrams in.
    pub packets_in: u64,
    /// Bytes in.
    pub bytes_in: u64,
    /// Datagrams out (duplicates included).
    pub packets_out: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Drops per reason.
    pub dropped_blackhole: u64,
    /// Larger than the MTU.
    #[serde(default)]
    pub dropped_mtu: u64,
    /// Over the rate limit.
    pub dropped_rate: u64,
    /// Tail-dropped by the rate limiter's queue.
    #[serde(default)]
    pub dropped_queue: u64,
    /// Gilbert-Elliott.
    pub dropped_burst: u64,
    /// Independent.
    pub dropped_random: u64,
    /// `loss` steps of a replayed trace.
    #[serde(default)]
    pub dropped_trace: u64,
    /// Delivered with a byte flipped.
    #[serde(default)]
    pub corrupted: u64,
    /// Extra copies.
    pub duplicated: u64,
    /// No client known, or a send failed.
    pub undeliverable: u64,
    /// Datagrams still queued when the link stopped (neither delivered nor counted as lost).
    pub in_flight_at_stop: u64,
    /// How late the sender thread was against the decided due time: median, microseconds.
    pub late_us_p50: u64,
    /// Same, 99th percentile.
    pub late_us_p99: u64,
    /// Same, the worst datagram.
    #[serde(default)]
    pub late_us_max: u64,
    /// How long datagrams sat in the receive socket before the link read them (kernel
    /// receive timestamp to read): median, microseconds. 0 where the kernel gives no stamp.
    #[serde(default)]
    pub recv_late_us_p50: u64,
    /// Same, 99th percentile.
    #[serde(default)]
    pub recv_late_us_p99: u64,
    /// Same, the worst datagram.
    #[serde(default)]
    pub recv_late_us_max: u64,
    /// Host stalls: episodes where the link itself held datagrams longer than
    /// [`STALL_THRESHOLD`]. Delay spikes at these times are the machine's, not the network's.
    #[serde(default)]
    pub stalls: Vec<Stall>,
    /// Per-[`TIMELINE_BIN`] activity from the moment the link was armed.
    pub timeline: Vec<TimelineBin>,
    /// Every decision, when tracing was on (not serialized).
    #[serde(skip)]
    pub trace: Vec<TraceEntry>,
}

/// Which part of the link was held up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallSide {
    /// The sender thread delivered after the due time.
    Send,
    /// Datagrams waited in the receive socket (the receive task did not run).
    Receive,
}

/// One host stall: datagrams were held by this process, not by the impairment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// Start, seconds on the scenario clock (negative: before the link was armed; the link's
    /// start counts as 0 for a link that is never armed).
    pub at_s: f64,
    /// Length, milliseconds: from the first held datagram's due (or arrival) time to the last
    /// one's handling, so a lower bound of the stall itself.
    pub ms: f64,
    /// Where it was seen.
    pub side: StallSide,
}

/// Both directions' reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// Client → upstream.
    pub up: DirectionReport,
    /// Upstream → client.
    pub down: DirectionReport,
}

/// Both directions' live counters.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Client → upstream.
    pub up: DirectionCounters,
    /// Upstream → client.
    pub down: DirectionCounters,
}

/// A running link.
#[derive(Debug)]
pub struct Link {
    addr: SocketAddr,
    counters: Arc<LinkCounters>,
    started: Instant,
    epoch: watch::Sender<Option<Instant>>,
    stop: watch::Sender<bool>,
    up: JoinHandle<DirState>,
    down: JoinHandle<DirState>,
    hooks: [mpsc::UnboundedSender<(StallSide, Duration)>; 2],
}

/// A datagram waiting in a sender thread.
#[derive(Debug)]
struct Due {
    at: Instant,
    dst: SocketAddr,
    data: Vec<u8>,
    /// Send from this socket instead of the direction's own (a client's upstream socket).
    via: Option<Arc<std::net::UdpSocket>>,
}

/// A datagram a per-client upstream socket read, for the downstream direction.
#[derive(Debug)]
struct Inbound {
    data: Vec<u8>,
    from: SocketAddr,
    client: SocketAddr,
    read_at: Instant,
    waited: Option<Duration>,
}

/// Where a direction reads.
#[derive(Debug)]
enum Source {
    Socket(UdpSocket),
    /// Downstream with one upstream socket per client: their readers feed this.
    Clients(mpsc::UnboundedReceiver<Inbound>),
}

/// Upstream with one socket per client (NAT-like): answers find their client by the socket
/// they arrive on.
#[derive(Debug)]
struct PerClient {
    bind: SocketAddr,
    sockets: std::collections::HashMap<SocketAddr, Arc<std::net::UdpSocket>>,
    down: mpsc::UnboundedSender<Inbound>,
    stop: watch::Receiver<bool>,
}

/// Most clients a per-client link maps; datagrams of further ones are undeliverable.
pub const MAX_CLIENTS: usize = 4096;

impl PerClient {
    /// The upstream socket of `client`, opened (with its reader) on first sight.
    fn socket(&mut self, client: SocketAddr) -> Option<Arc<std::net::UdpSocket>> {
        if let Some(s) = self.sockets.get(&client) {
            return Some(s.clone());
        }
        if self.sockets.len() >= MAX_CLIENTS {
            return None;
        }
        let (reader, tx) = std_socket(self.bind).ok()?;
        let tx = Arc::new(tx);
        self.sockets.insert(client, tx.clone());
        let (down, mut stop) = (self.down.clone(), self.stop.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
            loop {
                tokio::select! {
                    r = recv_stamped(&reader, &mut buf, &mut cmsg) => {
                        let Ok((n, from, waited)) = r else { continue };
                        let m = Inbound {
                            data: buf[..n].to_vec(),
                            from,
                            client,
                            read_at: Instant::now(),
                            waited,
                        };
                        if down.send(m).is_err() {
                            break;
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        });
        Some(tx)
    }
}

/// What the receive task hands its sender thread.
#[derive(Debug)]
enum ToSender {
    Due(Due),
    /// Test hook: block the thread this long.
    Stall(Duration),
}

#[derive(Debug)]
struct DirState {
    timeline: Vec<(u32, u32, f64, f64)>,
    trace: Vec<TraceEntry>,
    recv_late_us: Vec<u64>,
    recv_stalls: Stalls,
    sender: Option<std::thread::JoinHandle<SenderResult>>,
    tx: Option<std_mpsc::Sender<ToSender>>,
}

#[derive(Debug, Default)]
struct SenderResult {
    late_us: Vec<u64>,
    stalls: Stalls,
    left: u64,
}

/// Stall windows `[held since, handled at]`, overlapping ones merged.
#[derive(Debug, Default)]
struct Stalls(Vec<(Instant, Instant)>);

impl Stalls {
    /// Notes a datagram handled at `done`, `late` after it was due (or arrived); true when
    /// this starts a new stall.
    fn note(&mut self, done: Instant, late: Duration) -> bool {
        if late <= STALL_THRESHOLD {
            return false;
        }
        let start = done.checked_sub(late).unwrap_or(done);
        if let Some(last) = self.0.last_mut()
            && start <= last.1
        {
            last.0 = last.0.min(start);
            last.1 = last.1.max(done);
            return false;
        }
        self.0.push((start, done));
        true
    }

    fn report(&self, zero: Instant, side: StallSide) -> impl Iterator<Item = Stall> + '_ {
        self.0.iter().map(move |&(from, to)| Stall {
            at_s: if from >= zero {
                (from - zero).as_secs_f64()
            } else {
                -(zero - from).as_secs_f64()
            },
            ms: (to - from).as_secs_f64() * 1000.0,
            side,
        })
    }
}

fn std_socket(addr: SocketAddr) -> io::Result<(UdpSocket, std::net::UdpSocket)> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    // Kernel receive timestamps measure how long datagrams wait for the receive task; a
    // kernel without them leaves the receive-side figures at 0.
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReceiveTimestampns, &true);
    let clone = s.try_clone()?;
    Ok((UdpSocket::from_std(s)?, clone))
}

/// Reads one datagram; also returns how long it waited in the socket, from the kernel's
/// receive timestamp, when there is one.
async fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<(usize, SocketAddr, Option<Duration>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, recvmsg};
    let fd = socket.as_raw_fd();
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [io::IoSliceMut::new(&mut *buf)];
            let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut *cmsg), MsgFlags::empty())
                .map_err(io::Error::from)?;
            let read_at = SystemTime::now();
            let from = msg
                .address
                .and_then(|a| match a.family() {
                    Some(nix::sys::socket::AddressFamily::Inet) => a
                        .as_sockaddr_in()
                        .map(|a| SocketAddr::V4(std::net::SocketAddrV4::from(*a))),
                    Some(nix::sys::socket::AddressFamily::Inet6) => a
                        .as_sockaddr_in6()
                        .map(|a| SocketAddr::V6(std::net::SocketAddrV6::from(*a))),
                    _ => None,
                })
                .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
            let mut waited = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmTimestampns(ts) = c {
                        let stamp = SystemTime::UNIX_EPOCH
                            + Duration::new(ts.tv_sec().max(0) as u64, ts.tv_nsec().max(0) as u32);
                        waited = Some(read_at.duration_since(stamp).unwrap_or(Duration::ZERO));
                    }
                }
            }
            Ok((msg.bytes, from, waited))
        })
        .await
}

impl Link {
    /// Binds the client-facing socket and the upstream socket on loopback and starts both
    /// directions. Impairments apply at once; scheduled changes count from [`Link::arm`].
    pub async fn start(cfg: LinkConfig) -> io::Result<Link> {
        let any: SocketAddr = if cfg.upstream.is_ipv4() {
            (Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        Self::start_on(cfg, any).await
    }

    /// Like [`Link::start`], with the client-facing socket bound to `listen` (e.g. the address
    /// a node announces, so that a client that finds the node by itself crosses the link).
    pub async fn start_on(cfg: LinkConfig, listen: SocketAddr) -> io::Result<Link> {
        Self::start_inner(cfg, listen, false).await
    }

    /// Like [`Link::start_on`], with one upstream socket per client address (NAT-like), so
    /// that several clients at once each get their own answers: players behind one link to a
    /// game server, or a client with several paths to one node. (The simulator's links carry
    /// one client each and use [`Link::start_on`]; the node sees the same source either way.)
    /// [`DirectionCounters::client_changes`] then counts distinct clients.
    pub async fn start_per_client(cfg: LinkConfig, listen: SocketAddr) -> io::Result<Link> {
        Self::start_inner(cfg, listen, true).await
    }

    async fn start_inner(
        cfg: LinkConfig,
        listen: SocketAddr,
        per_client: bool,
    ) -> io::Result<Link> {
        // A loopback socket can only reach loopback: a real server elsewhere needs the
        // wildcard address (the kernel picks the source by route).
        let any: SocketAddr = match (cfg.upstream.is_ipv4(), cfg.upstream.ip().is_loopback()) {
            (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
            (true, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (false, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
            (false, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let (client_side, client_side_tx) = std_socket(listen)?;
        let (upstream_side, upstream_side_tx) = std_socket(any)?;
        let addr = client_side.local_addr()?;
        let counters = Arc::new(LinkCounters::default());
        let (epoch, epoch_rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let (client_tx, client_rx) = watch::channel(None::<SocketAddr>);
        let (up_hook, up_hook_rx) = mpsc::unbounded_channel();
        let (down_hook, down_hook_rx) = mpsc::unbounded_channel();
        let (down_source, clients, down_target, client_tx) = if per_client {
            let (tx, rx) = mpsc::unbounded_channel();
            let clients = PerClient {
                bind: any,
                sockets: Default::default(),
                down: tx,
                stop: stop_rx.clone(),
            };
            (Source::Clients(rx), Some(clients), Target::Inbound, None)
        } else {
            let last = Target::LastClient(client_rx);
            (Source::Socket(upstream_side), None, last, Some(client_tx))
        };
        let c = counters.clone();
        let up = tokio::spawn(direction(
            Dir::Up,
            Source::Socket(client_side),
            upstream_side_tx,
            Target::Fixed(cfg.upstream),
            client_tx,
            clients,
            cfg.up,
            cfg.trace,
            c,
            epoch_rx.clone(),
            stop_rx.clone(),
            up_hook_rx,
        ));
        let down = tokio::spawn(direction(
            Dir::Down,
            down_source,
            client_side_tx,
            down_target,
            None,
            None,
            cfg.down,
            cfg.trace,
            counters.clone(),
            epoch_rx,
            stop_rx,
            down_hook_rx,
        ));
        Ok(Link {
            addr,
            counters,
            started: Instant::now(),
            epoch,
            stop,
            up,
            down,
            hooks: [up_hook, down_hook],
        })
    }

    /// Where the client sends (and from where it hears back).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Live counters.
    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    /// Starts the scenario clock: scheduled changes and the timeline count from `epoch`.
    pub fn arm(&self, epoch: Instant) {
        let _ = self.epoch.send(Some(epoch));
    }

    /// Test hook: blocks `dir`'s sender thread, or its receive task (and the runtime worker
    /// it runs on), for `length`, as a host stall would.
    #[doc(hidden)]
    pub fn inject_stall(&self, dir: Dir, side: StallSide, length: Duration) {
        let _ = self.hooks[dir as usize].send((side, length));
    }

    /// Stops both directions (datagrams still queued are discarded) and reports.
    pub async fn finish(self) -> LinkReport {
        let _ = self.stop.send(true);
        let zero = self.epoch.borrow().unwrap_or(self.started);
        let up = self.up.await.ok();
        let down = self.down.await.ok();
        LinkReport {
            up: report(&self.counters.up, up, zero).await,
            down: report(&self.counters.down, down, zero).await,
        }
    }
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0)
}

async fn report(c: &DirectionCounters, state: Option<DirState>, zero: Instant) -> DirectionReport {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut r = DirectionReport {
        packets_in: l(&c.packets_in),
        bytes_in: l(&c.bytes_in),
        packets_out: l(&c.packets_out),
        bytes_out: l(&c.bytes_out),
        dropped_blackhole: l(&c.dropped_blackhole),
        dropped_mtu: l(&c.dropped_mtu),
        dropped_rate: l(&c.dropped_rate),
        dropped_queue: l(&c.dropped_queue),
        dropped_burst: l(&c.dropped_burst),
        dropped_random: l(&c.dropped_random),
        dropped_trace: l(&c.dropped_trace),
        corrupted: l(&c.corrupted),
        duplicated: l(&c.duplicated),
        undeliverable: l(&c.undeliverable),
        ..Default::default()
    };
    let Some(mut state) = state else { return r };
    drop(state.tx.take());
    if let Some(h) = state.sender.take()
        && let Ok(Ok(mut s)) = tokio::task::spawn_blocking(move || h.join()).await
    {
        s.late_us.sort_unstable();
        r.late_us_p50 = quantile(&s.late_us, 0.5);
        r.late_us_p99 = quantile(&s.late_us, 0.99);
        r.late_us_max = s.late_us.last().copied().unwrap_or(0);
        r.stalls.extend(s.stalls.report(zero, StallSide::Send));
        r.in_flight_at_stop = s.left;
        // Sent-out counters are bumped by the thread; read them after it ended.
        r.packets_out = l(&c.packets_out);
        r.bytes_out = l(&c.bytes_out);
        r.undeliverable = l(&c.undeliverable);
    }
    state.recv_late_us.sort_unstable();
    r.recv_late_us_p50 = quantile(&state.recv_late_us, 0.5);
    r.recv_late_us_p99 = quantile(&state.recv_late_us, 0.99);
    r.recv_late_us_max = state.recv_late_us.last().copied().unwrap_or(0);
    r.stalls
        .extend(state.recv_stalls.report(zero, StallSide::Receive));
    r.stalls.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    r.timeline = state
        .timeline
        .iter()
        .map(|&(packets, dropped, sum, max)| {
            let delivered = packets.saturating_sub(dropped);
            TimelineBin {
                packets,
                dropped,
                mean_delay_ms: if delivered > 0 {
                    sum / delivered as f64
                } else {
                    0.0
                },
                max_delay_ms: max,
            }
        })
        .collect();
    r.trace = state.trace;
    r
}

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → upstream.
    Up = 0,
    /// Upstream → client.
    Down = 1,
}

#[derive(Debug)]
enum Target {
    Fixed(SocketAddr),
    LastClient(watch::Receiver<Option<SocketAddr>>),
    /// The client the datagram's upstream socket belongs to.
    Inbound,
}

/// Reads the next datagram into `buf`: length, sender, socket wait, the client it is for
/// (per-client downstream), and when it was read.
async fn next_datagram(
    source: &mut Source,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<(
    usize,
    SocketAddr,
    Option<Duration>,
    Option<SocketAddr>,
    Instant,
)> {
    match source {
        Source::Socket(s) => {
            let (n, from, waited) = recv_stamped(s, buf, cmsg).await?;
            Ok((n, from, waited, None, Instant::now()))
        }
        Source::Clients(rx) => match rx.recv().await {
            Some(m) => {
                let n = m.data.len().min(buf.len());
                buf[..n].copy_from_slice(&m.data[..n]);
                Ok((n, m.from, m.waited, Some(m.client), m.read_at))
            }
            // Readers end only when the link stops.
            None => std::future::pending().await,
        },
    }
}

#[allow(clippy::too_many_arguments)]
async fn direction(
    dir: Dir,
    mut source: Source,
    tx_socket: std::net::UdpSocket,
    target: Target,
    client_tx: Option<watch::Sender<Option<SocketAddr>>>,
    mut clients: Option<PerClient>,
    cfg: DirectionConfig,
    trace: bool,
    counters: Arc<LinkCounters>,
    epoch: watch::Receiver<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
    mut hook: mpsc::UnboundedReceiver<(StallSide, Duration)>,
) -> DirState {
    let counters_for_thread = counters.clone();
    let (tx, rx) = std_mpsc::channel::<ToSender>();
    let name = format!("plg-sim-link-{dir:?}").to_lowercase();
    let sender = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let c = match dir {
                Dir::Up => &counters_for_thread.up,
                Dir::Down => &counters_for_thread.down,
            };
            sender_thread(rx, tx_socket, c)
        })
        .ok();
    let c = match dir {
        Dir::Up => &counters.up,
        Dir::Down => &counters.down,
    };
    let mut imp = Impairer::new(cfg.seed, cfg.impairment, cfg.schedule);
    let mut state = DirState {
        timeline: Vec::new(),
        trace: Vec::new(),
        recv_late_us: Vec::new(),
        recv_stalls: Stalls::default(),
        sender,
        tx: None,
    };
    let mut buf = vec![0u8; 65536];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    loop {
        let (n, from, waited, for_client, now) = tokio::select! {
            r = next_datagram(&mut source, &mut buf, &mut cmsg) => match r {
                Ok(v) => v,
                // ICMP port unreachable and the like: keep going.
                Err(_) => continue,
            },
            Some((side, length)) = hook.recv() => {
                match side {
                    // Deliberately blocks the worker: that is what a host stall does.
                    StallSide::Receive => std::thread::sleep(length),
                    StallSide::Send => {
                        let _ = tx.send(ToSender::Stall(length));
                    }
                }
                continue;
            }
            _ = stop.changed() => break,
        };
        if let Some(w) = waited {
            state.recv_late_us.push(w.as_micros() as u64);
            if state.recv_stalls.note(now, w) {
                c.stalls.fetch_add(1, Ordering::Relaxed);
            }
        }
        let epoch = *epoch.borrow();
        let at = epoch.map_or(Duration::ZERO, |e| now.saturating_duration_since(e));
        if let Some(ctx) = &client_tx {
            let changed = ctx.send_if_modified(|c| {
                let changed = *c != Some(from);
                *c = Some(from);
                changed
            });
            if changed {
                c.client_changes.fetch_add(1, Ordering::Relaxed);
            }
        }
        let via = match clients.as_mut() {
            Some(m) => {
                let known = m.sockets.len();
                let s = m.socket(from);
                if m.sockets.len() > known {
                    c.client_changes.fetch_add(1, Ordering::Relaxed);
                }
                if s.is_none() {
                    c.undeliverable.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                s
            }
            None => None,
        };
        c.packets_in.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let decision = imp.decide(at, n);
        if trace {
            let mut head = [0u8; 8];
            let k = n.min(8);
            head[..k].copy_from_slice(&buf[..k]);
            state.trace.push(TraceEntry {
                at,
                len: n,
                decision,
                head,
            });
        }
        let bin = epoch.map(|_| (at.as_nanos() / TIMELINE_BIN.as_nanos()) as usize);
        if let Some(b) = bin
            && b < 1_000_000
        {
            if state.timeline.len() <= b {
                state.timeline.resize(b + 1, (0, 0, 0.0, 0.0));
            }
            let e = &mut state.timeline[b];
            e.0 += 1;
            match decision {
                Decision::Drop(_) => e.1 += 1,
                Decision::Deliver { delay, .. } => {
                    let ms = delay.as_secs_f64() * 1000.0;
                    e.2 += ms;
                    e.3 = e.3.max(ms);
                }
            }
        }
        match decision {
            Decision::Drop(r) => c.count_drop(r),
            Decision::Deliver {
                delay,
                duplicate,
                corrupt,
            } => {
                c.last_delay_us
                    .store(delay.as_micros() as u64, Ordering::Relaxed);
                let dst = match &target {
                    Target::Fixed(a) => Some(*a),
                    Target::LastClient(rx) => *rx.borrow(),
                    Target::Inbound => for_client,
                };
                let Some(dst) = dst else {
                    c.undeliverable.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Some(_) = &state.sender else {
                    c.undeliverable.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut data = buf[..n].to_vec();
                if let Some(d) = duplicate {
                    c.duplicated.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(ToSender::Due(Due {
                        at: now + d,
                        dst,
                        data: data.clone(),
                        via: via.clone(),
                    }));
                }
                if let Some(k) = corrupt {
                    k.apply(&mut data);
                    c.corrupted.fetch_add(1, Ordering::Relaxed);
                }
                let _ = tx.send(ToSender::Due(Due {
                    at: now + delay,
                    dst,
                    data,
                    via,
                }));
            }
        }
    }
    state.tx = Some(tx);
    state
}

/// Sends queued datagrams at their due time. Ends when the channel closes; what is still
/// queued then is discarded and counted.
fn sender_thread(
    rx: std_mpsc::Receiver<ToSender>,
    socket: std::net::UdpSocket,
    c: &DirectionCounters,
) -> SenderResult {
    // Ordered by due time, then arrival order (FIFO among equal due times).
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut slots: std::collections::HashMap<u64, Due> = std::collections::HashMap::new();
    let mut order = 0u64;
    let mut out = SenderResult::default();
    loop {
        let next = heap.peek().map(|Reverse((t, _))| *t);
        let msg = match next {
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
            Some(t) => {
                let now = Instant::now();
                if t <= now {
                    None
                } else {
                    match rx.recv_timeout(t - now) {
                        Ok(m) => Some(m),
                        Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        };
        match msg {
            Some(ToSender::Due(m)) => {
                heap.push(Reverse((m.at, order)));
                slots.insert(order, m);
                order += 1;
                continue;
            }
            Some(ToSender::Stall(length)) => {
                std::thread::sleep(length);
                continue;
            }
            None => {}
        }
        let now = Instant::now();
        while let Some(Reverse((t, k))) = heap.peek().copied() {
            if t > now {
                break;
            }
            heap.pop();
            let Some(d) = slots.remove(&k) else { continue };
            let sent_at = Instant::now();
            let late = sent_at.saturating_duration_since(d.at);
            out.late_us.push(late.as_micros() as u64);
            if out.stalls.note(sent_at, late) {
                c.stalls.fetch_add(1, Ordering::Relaxed);
            }
            if send_retrying(d.via.as_deref().unwrap_or(&socket), &d.data, d.dst) {
                c.packets_out.fetch_add(1, Ordering::Relaxed);
                c.bytes_out
                    .fetch_add(d.data.len() as u64, Ordering::Relaxed);
            } else {
                c.undeliverable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    out.left = heap.len() as u64;
    out
}

fn send_retrying(socket: &std::net::UdpSocket, data: &[u8], dst: SocketAddr) -> bool {
    // The socket is shared with a tokio task and so non-blocking; a full send buffer on
    // loopback clears within microseconds.
    for _ in 0..200 {
        match socket.send_to(data, dst) {
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blackhole_window_is_half_open() {
        let mut imp = Impairer::new(
            1,
            Impairment::default(),
            vec![ScheduledChange::Blackhole {
                from: Duration::from_millis(100),
                until: Duration::from_millis(200),
            }],
        );
        let at = |ms| Duration::from_millis(ms);
        assert!(matches!(imp.decide(at(99), 10), Decision::Deliver { .. }));
        assert_eq!(
            imp.decide(at(100), 10),
            Decision::Drop(DropReason::Blackhole)
        );
        assert_eq!(
            imp.decide(at(199), 10),
            Decision::Drop(DropReason::Blackhole)
        );
        assert!(matches!(imp.decide(at(200), 10), Decision::Deliver { .. }));
    }

    #[test]
    fn fifo_unless_reordering() {
        let imp = Impairment {
            delay_ms: 10.0,
            jitter_ms: 8.0,
            ..Default::default()
        };
        let mut m = Impairer::new(3, imp, vec![]);
        let mut last = Duration::ZERO;
        for i in 0..2000u64 {
            let at = Duration::from_millis(i);
            if let Decision::Deliver { delay, .. } = m.decide(at, 100) {
                assert!(at + delay >= last);
                last = at + delay;
            }
        }
    }

    #[test]
    fn rate_limit_drops_over_the_bucket() {
        // 80 kbit/s = 10 000 B/s; 100 B every ms = 100 000 B/s: ~90 % dropped after the burst.
        let imp = Impairment {
            rate_kbps: 80.0,
            rate_burst_bytes: 1000,
            ..Default::default()
        };
        let mut m = Impairer::new(3, imp, vec![]);
        let delivered = (0..1000u64)
            .filter(|i| {
                matches!(
                    m.decide(Duration::from_millis(*i), 100),
                    Decision::Deliver { .. }
                )
            })
            .count();
        // 1000 B of burst + 10 000 B/s · 1 s = 11 000 B = 110 datagrams (± one refill).
        assert!((108..=112).contains(&delivered), "{delivered}");
    }

    #[test]
    fn set_changes_parameters_at_its_time() {
        let m = Impairer::new(
            1,
            Impairment::default(),
            vec![ScheduledChange::Set {
                at: Duration::from_secs(1),
                impairment: Impairment {
                    delay_ms: 50.0,
                    ..Default::default()
                },
            }],
        );
        assert_eq!(m.params_at(Duration::from_millis(999)).delay_ms, 0.0);
        assert_eq!(m.params_at(Duration::from_secs(1)).delay_ms, 50.0);
    }

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    #[test]
    fn a_queue_delays_up_to_its_size_then_tail_drops_the_excess() {
        // 1 Mbit/s with a 50 KB buffer fed at 2 Mbit/s (1000 B every 4 ms): the backlog grows by
        // 125 KB/s, fills in 0.4 s, and from then on the delay is the full buffer's 400 ms and
        // half of what arrives is dropped.
        let imp = Impairment {
            rate_kbps: 1000.0,
            queue_bytes: 50_000,
            delay_ms: 10.0,
            ..Default::default()
        };
        // The drain time accounts for a full buffer.
        assert_eq!(imp.max_delay().as_millis(), 410);
        let mut m = Impairer::new(1, imp, vec![]);
        let (mut delay_at_200ms, mut max_delay, mut steady) = (0.0, 0.0f64, vec![]);
        let (mut late_in, mut late_dropped) = (0u32, 0u32);
        for i in 0..2500u64 {
            let at = Duration::from_millis(4 * i);
            let d = m.decide(at, 1000);
            let delay = match d {
                Decision::Deliver { delay, .. } => Some(delay.as_secs_f64() * 1000.0),
                Decision::Drop(r) => {
                    assert_eq!(r, DropReason::Queue);
                    None
                }
            };
            if at == ms(200.0) {
                delay_at_200ms = delay.unwrap();
            }
            if let Some(x) = delay {
                max_delay = max_delay.max(x);
            }
            if at >= ms(1000.0) {
                late_in += 1;
                late_dropped += delay.is_none() as u32;
                steady.extend(delay);
            }
        }
        let share = late_dropped as f64 / late_in as f64;
        let mean_steady = steady.iter().sum::<f64>() / steady.len() as f64;
        println!(
            "queue: delay at 0.2 s {delay_at_200ms:.1} ms, steady {mean_steady:.1} ms (max \
             {max_delay:.1}), {:.1} % dropped after 1 s",
            100.0 * share
        );
        // At 0.2 s: 25 KB queued ahead + its own 8 ms of serialization + 10 ms of delay.
        assert!((delay_at_200ms - 218.0).abs() < 1.0, "{delay_at_200ms}");
        assert!(
            (400.0..=418.0).contains(&mean_steady) && max_delay <= 418.0 + 1e-6,
            "{mean_steady} {max_delay}"
        );
        assert!((share - 0.5).abs() < 0.01, "{share}");
    }

    #[test]
    fn corruption_flips_one_byte_at_a_uniform_offset() {
        let n = 100_000u64;
        let imp = Impairment {
            corrupt_pct: 10.0,
            ..Default::default()
        };
        let mut m = Impairer::new(4, imp, vec![]);
        let (mut hits, mut index_sum) = (0u64, 0u64);
        for i in 0..n {
            let Decision::Deliver { corrupt, .. } = m.decide(Duration::from_millis(i), 200) else {
                panic!("corruption never drops");
            };
            if let Some(c) = corrupt {
                assert!(c.index < 200 && c.xor != 0);
                let mut buf = [0x5au8; 200];
                c.apply(&mut buf);
                assert_eq!(buf.iter().filter(|b| **b != 0x5a).count(), 1);
                assert_eq!(buf[c.index], 0x5a ^ c.xor);
                hits += 1;
                index_sum += c.index as u64;
            }
        }
        let share = hits as f64 / n as f64;
        let bound = 2.576 * (0.1 * 0.9 / n as f64).sqrt();
        // Uniform on 0..200: mean 99.5, standard deviation 57.7.
        let mean_index = index_sum as f64 / hits as f64;
        let index_bound = 2.576 * 57.7 / (hits as f64).sqrt();
        println!(
            "corrupted {:.3} % (10 ± {:.3}), mean offset {mean_index:.1} (99.5 ± {index_bound:.1})",
            100.0 * share,
            100.0 * bound
        );
        assert!((share - 0.1).abs() <= bound, "{share}");
        assert!((mean_index - 99.5).abs() <= index_bound, "{mean_index}");
        // Applying never reaches past a shorter buffer.
        Corruption { index: 5, xor: 1 }.apply(&mut [0u8; 3]);
    }

    #[test]
    fn the_mtu_drops_larger_datagrams_without_shifting_the_others_fate() {
        let imp = Impairment {
            mtu: 1200,
            loss_pct: 30.0,
            jitter_ms: 5.0,
            ..Default::default()
        };
        let mut plain = Impairer::new(8, imp.clone(), vec![]);
        let mut mixed = Impairer::new(8, imp, vec![]);
        let mut mtu_drops = 0;
        for i in 0..5000u64 {
            let at = Duration::from_millis(10 * i);
            let a = plain.decide(at, 1200);
            let len = if i % 7 == 0 { 1201 } else { 1200 };
            let b = mixed.decide(at, len);
            if len > 1200 {
                assert_eq!(b, Decision::Drop(DropReason::Mtu));
                mtu_drops += 1;
            } else {
                // Same number of draws per datagram whatever happened to the one before.
                assert_eq!(a, b, "datagram {i}");
            }
        }
        assert_eq!(mtu_drops, 715);
    }

    #[test]
    fn a_ramp_moves_a_parameter_linearly_and_a_later_set_ends_it() {
        let base = Impairment {
            delay_ms: 10.0,
            loss_pct: 2.0,
            ..Default::default()
        };
        let m = Impairer::new(
            1,
            base.clone(),
            vec![
                ScheduledChange::Ramp {
                    from: ms(1000.0),
                    until: ms(2000.0),
                    param: RampParam::DelayMs,
                    to: 110.0,
                },
                // A second ramp on the same parameter starts from where the first one is.
                ScheduledChange::Ramp {
                    from: ms(1500.0),
                    until: ms(2500.0),
                    param: RampParam::DelayMs,
                    to: 0.0,
                },
                ScheduledChange::Ramp {
                    from: ms(0.0),
                    until: ms(4000.0),
                    param: RampParam::LossPct,
                    to: 10.0,
                },
                ScheduledChange::Set {
                    at: ms(3000.0),
                    impairment: base,
                },
            ],
        );
        let delay = |t: f64| m.params_at(ms(t)).delay_ms;
        let loss = |t: f64| m.params_at(ms(t)).loss_pct;
        assert_eq!(delay(999.0), 10.0);
        assert!((delay(1250.0) - 35.0).abs() < 1e-9);
        // The second ramp starts at 60 ms and reaches 0 at 2.5 s.
        assert!((delay(1500.0) - 60.0).abs() < 1e-9);
        assert!((delay(2000.0) - 30.0).abs() < 1e-9);
        assert_eq!(delay(2600.0), 0.0);
        assert!((loss(2000.0) - 6.0).abs() < 1e-9);
        // The set at 3 s restores the base and ends both ramps.
        assert_eq!(delay(3000.0), 10.0);
        assert_eq!(loss(3500.0), 2.0);
    }

    #[test]
    fn a_burst_model_set_by_a_later_change_starts_then() {
        let bursty = Impairment {
            burst: Some(GilbertElliott {
                mean_good_ms: 5.0,
                mean_bad_ms: 5.0,
                loss_bad_pct: 100.0,
                loss_good_pct: 0.0,
            }),
            ..Default::default()
        };
        let mut m = Impairer::new(
            2,
            Impairment::default(),
            vec![ScheduledChange::Set {
                at: ms(1000.0),
                impairment: bursty,
            }],
        );
        let mut lost_before = 0;
        let mut lost_after = 0;
        for i in 0..2000u64 {
            if let Decision::Drop(r) = m.decide(Duration::from_millis(i), 100) {
                assert_eq!(r, DropReason::Burst);
                if i < 1000 {
                    lost_before += 1;
                } else {
                    lost_after += 1;
                }
            }
        }
        assert_eq!(lost_before, 0);
        assert!((400..600).contains(&lost_after), "{lost_after}");
    }

    #[test]
    fn a_trace_replaces_delay_and_loss_and_keeps_the_link_fifo() {
        let trace = crate::trace::Trace::parse(
            "0 10\n100 loss\n200 300\n210 290\n220 5\n1000 end\n",
            std::path::Path::new("t.trace"),
        )
        .unwrap();
        let imp = Impairment {
            trace: Some(TraceRef::loaded("t.trace", trace)),
            ..Default::default()
        };
        imp.validate().unwrap();
        assert_eq!(imp.max_delay(), ms(300.0));
        let mut m = Impairer::new(1, imp, vec![]);
        let delay = |d: Decision| match d {
            Decision::Deliver { delay, .. } => Some(delay.as_micros() as f64 / 1000.0),
            Decision::Drop(r) => {
                assert_eq!(r, DropReason::Trace);
                None
            }
        };
        assert_eq!(delay(m.decide(ms(50.0), 100)), Some(10.0));
        assert_eq!(delay(m.decide(ms(150.0), 100)), None);
        // The stall: 300 ms at 200, then the link stays FIFO behind it.
        assert_eq!(delay(m.decide(ms(200.0), 100)), Some(300.0));
        assert_eq!(delay(m.decide(ms(215.0), 100)), Some(290.0));
        // 5 ms from 220 on, but it waits for the one due at 505 ms.
        assert_eq!(delay(m.decide(ms(230.0), 100)), Some(275.0));
        assert_eq!(delay(m.decide(ms(600.0), 100)), Some(5.0));
        // Looping: 1150 ms is 150 ms into the second round.
        assert_eq!(delay(m.decide(ms(1150.0), 100)), None);
    }

    #[test]
    fn a_loss_ramp_loses_along_its_line() {
        // loss_pct 0 → 20 % over 100 s, a datagram per ms: the first half loses 5 % on average,
        // the second 15 %.
        let mut m = Impairer::new(
            3,
            Impairment::default(),
            vec![ScheduledChange::Ramp {
                from: Duration::ZERO,
                until: Duration::from_secs(100),
                param: RampParam::LossPct,
                to: 20.0,
            }],
        );
        let mut lost = [0u32; 2];
        for i in 0..100_000u64 {
            if let Decision::Drop(r) = m.decide(Duration::from_millis(i), 100) {
                assert_eq!(r, DropReason::Random);
                lost[(i >= 50_000) as usize] += 1;
            }
        }
        for (half, p) in [(0, 0.05), (1, 0.15)] {
            let n = 50_000.0;
            let observed = f64::from(lost[half]) / n;
            // The variance of a sum of Bernoullis with varying p is at most that at the mean p.
            let bound = 2.576 * (p * (1.0 - p) / n).sqrt();
            println!("ramp half {half}: {observed:.4} vs {p} ± {bound:.4}");
            assert!((observed - p).abs() <= bound, "{half}: {observed}");
        }
    }
}
