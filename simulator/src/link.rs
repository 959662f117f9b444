//! Userspace impairment links: a UDP hop placed between the client and a node's data port
//! that drops, delays, jitters, reorders, duplicates and rate-limits datagrams, per direction.
//!
//! The decisions come from [`Impairer`], a sans-IO state machine fed with the arrival time
//! (relative to the scenario clock) and the datagram length. Each direction owns one impairer
//! seeded on its own, and every datagram consumes the same number of random draws whatever
//! happens to it, so the n-th datagram through a direction gets the same random outcome in every
//! run with the same seed. (Rate limits and scheduled events depend on arrival *times* as well,
//! which is the point of them.)
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

/// Gilbert-Elliott bursty loss: a two-state Markov chain stepped once per datagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state, per datagram (0..=1).
    pub p: f64,
    /// Probability of moving from the bad back to the good state, per datagram (0..=1).
    pub r: f64,
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
    10.0
}

fn default_rate_burst() -> u64 {
    4_000
}

impl GilbertElliott {
    /// Long-run loss rate (0..=1): π_bad · loss_bad + π_good · loss_good.
    pub fn stationary_loss(&self) -> f64 {
        if self.p + self.r == 0.0 {
            return self.loss_good_pct / 100.0;
        }
        let bad = self.p / (self.p + self.r);
        bad * self.loss_bad_pct / 100.0 + (1.0 - bad) * self.loss_good_pct / 100.0
    }
}

/// What one direction of a link does to datagrams. Every field defaults to "nothing".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
    /// Extra hold of a reordered datagram, milliseconds (default 10).
    pub reorder_delay_ms: f64,
    /// Share of datagrams sent twice, percent.
    pub duplicate_pct: f64,
    /// Token-bucket rate limit in kilobits per second (0 = none); datagrams over it are dropped.
    pub rate_kbps: f64,
    /// Token-bucket depth in bytes (default 4000).
    pub rate_burst_bytes: u64,
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
        non_neg("delay_ms", self.delay_ms, 60_000.0)?;
        non_neg("jitter_ms", self.jitter_ms, 60_000.0)?;
        non_neg("reorder_delay_ms", self.reorder_delay_ms, 60_000.0)?;
        non_neg("rate_kbps", self.rate_kbps, 10_000_000.0)?;
        if self.rate_kbps > 0.0 && self.rate_burst_bytes < 64 {
            return Err("rate_burst_bytes must be at least 64 with a rate limit".into());
        }
        if let Some(b) = &self.burst {
            let unit = |name: &str, v: f64| {
                if (0.0..=1.0).contains(&v) {
                    Ok(())
                } else {
                    Err(format!("burst.{name} must be within 0..=1 (got {v})"))
                }
            };
            unit("p", b.p)?;
            unit("r", b.r)?;
            pct("burst.loss_bad_pct", b.loss_bad_pct)?;
            pct("burst.loss_good_pct", b.loss_good_pct)?;
        }
        Ok(())
    }

    /// Long-run loss this impairment injects (0..=1), ignoring rate limits and events.
    pub fn expected_loss(&self) -> f64 {
        let burst = self.burst.map_or(0.0, |b| b.stationary_loss());
        1.0 - (1.0 - self.loss_pct / 100.0) * (1.0 - burst)
    }

    /// Largest delay a datagram can get, for drain timing.
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
        Duration::from_secs_f64((self.delay_ms + jitter + reorder).max(0.0) / 1000.0)
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
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A scheduled blackhole window.
    Blackhole,
    /// Over the token-bucket rate.
    Rate,
    /// Gilbert-Elliott loss.
    Burst,
    /// Independent loss.
    Random,
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
    },
}

/// Seeded decision machine for one direction of one link (sans-IO: time is passed in).
#[derive(Debug)]
pub struct Impairer {
    rng: fastrand::Rng,
    base: Impairment,
    schedule: Vec<ScheduledChange>,
    bad: bool,
    tokens: f64,
    last_refill: Duration,
    /// Due time (from the scenario epoch) of the last in-order datagram: FIFO floor.
    last_due: Duration,
}

impl Impairer {
    /// A machine with `impairment` as the base parameters and `schedule` on top.
    pub fn new(seed: u64, impairment: Impairment, schedule: Vec<ScheduledChange>) -> Impairer {
        Impairer {
            rng: fastrand::Rng::with_seed(seed),
            tokens: impairment.rate_burst_bytes as f64,
            base: impairment,
            schedule,
            bad: false,
            last_refill: Duration::ZERO,
            last_due: Duration::ZERO,
        }
    }

    /// Parameters in force at `at`.
    pub fn params_at(&self, at: Duration) -> Impairment {
        let mut p = self.base;
        let mut latest = Duration::ZERO;
        for c in &self.schedule {
            if let ScheduledChange::Set { at: t, impairment } = c
                && *t <= at
                && *t >= latest
            {
                latest = *t;
                p = *impairment;
            }
        }
        p
    }

    fn blackholed(&self, at: Duration) -> bool {
        self.schedule.iter().any(|c| {
            matches!(c, ScheduledChange::Blackhole { from, until } if *from <= at && at < *until)
        })
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
    pub fn decide(&mut self, at: Duration, len: usize) -> Decision {
        // Always the same draws, in the same order, so outcomes line up across runs.
        let u_trans = self.rng.f64();
        let u_burst = self.rng.f64();
        let u_loss = self.rng.f64();
        let (j1, j2) = (self.rng.f64(), self.rng.f64());
        let u_dup = self.rng.f64();
        let u_reorder = self.rng.f64();
        let p = self.params_at(at);

        // The Markov chain steps on every datagram, lost or not.
        if let Some(ge) = &p.burst {
            self.bad = if self.bad {
                u_trans >= ge.r
            } else {
                u_trans < ge.p
            };
        } else {
            self.bad = false;
        }
        if self.blackholed(at) {
            return Decision::Drop(DropReason::Blackhole);
        }
        if p.rate_kbps > 0.0 {
            let rate_bytes = p.rate_kbps * 1000.0 / 8.0;
            let dt = at.saturating_sub(self.last_refill).as_secs_f64();
            self.tokens = (self.tokens + dt * rate_bytes).min(p.rate_burst_bytes as f64);
            self.last_refill = self.last_refill.max(at);
            if self.tokens < len as f64 {
                return Decision::Drop(DropReason::Rate);
            }
            self.tokens -= len as f64;
        }
        if let Some(ge) = &p.burst {
            let loss = if self.bad {
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
        let ms = (p.delay_ms + Self::jitter(&p, j1, j2)).max(0.0);
        let mut due = at + Duration::from_secs_f64(ms / 1000.0);
        if u_reorder < p.reorder_pct / 100.0 {
            // Held back past its turn; does not move the FIFO floor, so later ones overtake.
            due = due.max(self.last_due) + Duration::from_secs_f64(p.reorder_delay_ms / 1000.0);
        } else {
            due = due.max(self.last_due);
            self.last_due = due;
        }
        let delay = due - at;
        let duplicate = (u_dup < p.duplicate_pct / 100.0).then_some(delay);
        Decision::Deliver { delay, duplicate }
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
    /// Dropped over the rate limit.
    pub dropped_rate: AtomicU64,
    /// Dropped by Gilbert-Elliott loss.
    pub dropped_burst: AtomicU64,
    /// Dropped by independent loss.
    pub dropped_random: AtomicU64,
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
            DropReason::Rate => &self.dropped_rate,
            DropReason::Burst => &self.dropped_burst,
            DropReason::Random => &self.dropped_random,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams dropped for any impairment reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_blackhole.load(Ordering::Relaxed)
            + self.dropped_rate.load(Ordering::Relaxed)
            + self.dropped_burst.load(Ordering::Relaxed)
            + self.dropped_random.load(Ordering::Relaxed)
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

impl LinkConfig {
    /// A link to `upstream` with the same impairment both ways and seeds derived from `seed`.
    pub fn symmetric(upstream: SocketAddr, impairment: Impairment, seed: u64) -> LinkConfig {
        LinkConfig {
            upstream,
            up: DirectionConfig {
                impairment,
                seed: derive_seed(seed, 0),
                schedule: vec![],
            },
            down: DirectionConfig {
                impairment,
                seed: derive_seed(seed, 1),
                schedule: vec![],
            },
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
    /// Over the rate limit.
    pub dropped_rate: u64,
    /// Gilbert-Elliott.
    pub dropped_burst: u64,
    /// Independent.
    pub dropped_random: u64,
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
        dropped_rate: l(&c.dropped_rate),
        dropped_burst: l(&c.dropped_burst),
        dropped_random: l(&c.dropped_random),
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
            Decision::Deliver { delay, duplicate } => {
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
                let data = buf[..n].to_vec();
                if let Some(d) = duplicate {
                    c.duplicated.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(ToSender::Due(Due {
                        at: now + d,
                        dst,
                        data: data.clone(),
                        via: via.clone(),
                    }));
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
}
