//! Reports: per policy and per direction, what was sent and delivered, residual loss, one-way
//! delay and RTT quantiles, jitter, bandwidth overhead counted at the links, and the longest gap
//! in delivery; rendered as a terminal table (policies side by side), a JSON file and CSV.
//! Every loss figure carries its count and 95 % interval (`crate::stats`); `aggregate` pools
//! the reports of several seeds.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::link::{Impairment, LinkReport};
use crate::scenario::{Policy, Scenario};
use crate::stats::{CiMethod, LossEstimate, LossSample, Spread};
use crate::tick::{PairTrace, RttSample, StreamTrace};

/// Latency quantiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Quantiles {
    /// Nearest-rank quantiles of microsecond samples.
    pub fn from_us(mut v: Vec<u64>) -> Quantiles {
        if v.is_empty() {
            return Quantiles::default();
        }
        v.sort_unstable();
        let q = |q: f64| {
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        };
        Quantiles {
            count: v.len() as u64,
            mean: v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0,
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: *v.last().unwrap() as f64 / 1000.0,
        }
    }
}

/// One direction of one policy run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Packets the sending game end sent.
    pub sent: u64,
    /// Distinct packets that reached the receiving game end.
    pub delivered: u64,
    /// Extra copies that reached the receiving game end (should be 0: the client dedups).
    pub duplicates: u64,
    /// `sent - delivered`.
    pub lost: u64,
    /// Lost, percent of sent.
    pub residual_loss_pct: f64,
    /// The loss with its count and 95 % interval (and how it was computed).
    #[serde(default)]
    pub loss: LossEstimate,
    /// Which packets were lost: indices among the packets sent (0 = the first sent), for
    /// comparisons and pooling.
    #[serde(default)]
    pub lost_at: Vec<u32>,
    /// One-way delay of delivered packets.
    pub one_way_ms: Quantiles,
    /// Interarrival jitter as in RFC 3550 (mean |D| of consecutive transit-time differences,
    /// unsmoothed), milliseconds.
    pub jitter_ms: f64,
    /// Longest time without a delivery while the stream was running, milliseconds (the
    /// nominal tick interval on a clean path; a failover shows up here).
    pub longest_gap_ms: f64,
    /// When that gap started, seconds from the start of traffic.
    pub longest_gap_at_s: f64,
    /// Game payload bytes sent.
    pub payload_bytes: u64,
    /// Bytes the sender put on the wire towards the links, all paths together (UDP payload:
    /// PLG frames including pings and control frames).
    pub wire_bytes: u64,
    /// `wire_bytes / payload_bytes`.
    pub overhead: f64,
}

impl StreamStats {
    /// The per-packet loss record.
    pub fn sample(&self) -> LossSample {
        LossSample {
            n: self.sent,
            lost_at: self.lost_at.clone(),
        }
    }
}

/// Plot data of one policy run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Upstream `(send time s, one-way delay ms)` of delivered packets.
    pub up: Vec<[f64; 2]>,
    /// Upstream send times (s) of lost packets.
    pub up_lost: Vec<f64>,
    /// Downstream `(send time s, one-way delay ms)`.
    pub down: Vec<[f64; 2]>,
    /// Downstream send times (s) of lost packets.
    pub down_lost: Vec<f64>,
    /// `(send time s, RTT ms)`.
    pub rtt: Vec<[f64; 2]>,
}

/// How a policy run went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PolicyStatus {
    /// Measured.
    Ran {
        /// The client implementation that ran it.
        client: String,
    },
    /// The client can't run it yet: no numbers.
    Unavailable {
        /// Why.
        reason: String,
    },
    /// Setting up or running failed: no numbers.
    Failed {
        /// What failed.
        error: String,
    },
}

/// One policy's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// The policy.
    pub policy: Policy,
    /// Whether it ran.
    #[serde(flatten)]
    pub status: PolicyStatus,
    /// Client → game server.
    pub up: Option<StreamStats>,
    /// Game server → client.
    pub down: Option<StreamStats>,
    /// Round trips (client tick → server → client, without the server's hold time).
    pub rtt_ms: Option<Quantiles>,
    /// What each path's link saw, in path order.
    #[serde(default)]
    pub links: Vec<LinkReport>,
    /// Plot data.
    #[serde(default)]
    pub series: Series,
    /// Times the client moved the session to another node.
    #[serde(default)]
    pub failovers: Vec<FailoverInfo>,
    /// Times every path went silent and no other node took the session.
    #[serde(default)]
    pub node_lost: Vec<f64>,
    /// The other sessions of a run with several (virtual time), in order from session 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionSummary>,
    /// What each shared segment saw (virtual time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentReport>,
}

/// One more session's figures (a run with several sessions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Client → game server.
    pub up: StreamStats,
    /// Game server → client.
    pub down: StreamStats,
    /// Round trips.
    pub rtt_ms: Quantiles,
}

/// A shared segment's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentReport {
    /// Its name in the scenario.
    pub name: String,
    /// Both directions, every session's and the cross traffic's datagrams.
    pub link: LinkReport,
}

/// A session's figures from its game ends' trace.
pub fn session_summary(t: &PairTrace) -> SessionSummary {
    let (up, _, _) = stream_stats(&t.up, 0);
    let (down, _, _) = stream_stats(&t.down, 0);
    let (rtt_ms, _) = rtt_stats(&t.rtt);
    SessionSummary { up, down, rtt_ms }
}

/// The client moved the session to another node (its exit went silent on every path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverInfo {
    /// When the session was up on the new node, seconds from the start of traffic.
    pub at_s: f64,
    /// The node's index in the topology (`None` if the client chose a node the scenario does
    /// not know).
    pub node: Option<usize>,
    /// The node's id.
    pub node_id: String,
    /// The client's own measure: from the last frame heard from the old node to the session
    /// being up on the new one, milliseconds. The game's gap (`longest_gap_ms`) adds the time
    /// for traffic to flow again.
    pub gap_ms: f64,
}

impl PolicyReport {
    /// A report without numbers.
    pub fn without_numbers(policy: Policy, status: PolicyStatus) -> PolicyReport {
        PolicyReport {
            policy,
            status,
            up: None,
            down: None,
            rtt_ms: None,
            links: vec![],
            series: Series::default(),
            failovers: vec![],
            node_lost: vec![],
            sessions: vec![],
            segments: vec![],
        }
    }

    /// Whether numbers were measured.
    pub fn ran(&self) -> bool {
        matches!(self.status, PolicyStatus::Ran { .. })
    }
}

/// A path as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathInfo {
    /// Label.
    pub name: String,
    /// Node it leads to.
    pub node: usize,
    /// Client → node.
    pub up: Impairment,
    /// Node → client.
    pub down: Impairment,
    /// Long-run loss the base impairment injects upstream, percent (events not included).
    pub injected_loss_up_pct: f64,
    /// Same, downstream.
    pub injected_loss_down_pct: f64,
}

/// A scheduled event, for the report and the plots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInfo {
    /// What happens.
    pub label: String,
    /// Start, seconds.
    pub from_s: f64,
    /// End, seconds.
    pub until_s: f64,
}

/// A whole run: every policy over the same scenario and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// Seed used.
    pub seed: u64,
    /// Seconds of traffic per policy.
    pub duration_s: f64,
    /// Packets per second each way.
    pub tick_rate: u32,
    /// Paths.
    pub paths: Vec<PathInfo>,
    /// Events.
    pub events: Vec<EventInfo>,
    /// One entry per policy, in the scenario's order.
    pub policies: Vec<PolicyReport>,
    /// The game without PLG over path 0's impairment (`plg-sim run --direct`, the demo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectReport>,
}

impl RunReport {
    /// The header part of a report for `scenario`, without policy results.
    pub fn for_scenario(s: &Scenario, seed: u64) -> RunReport {
        RunReport {
            scenario: s.name.clone(),
            description: s.description.clone(),
            seed,
            duration_s: s.duration,
            tick_rate: s.traffic.tick_rate,
            paths: s
                .paths
                .iter()
                .map(|p| PathInfo {
                    name: p.name.clone(),
                    node: p.node,
                    up: p.up(),
                    down: p.down(),
                    injected_loss_up_pct: 100.0 * p.up().expected_loss(),
                    injected_loss_down_pct: 100.0 * p.down().expected_loss(),
                })
                .collect(),
            events: s
                .events
                .iter()
                .map(|e| {
                    let (from_s, until_s) = e.window(s.duration);
                    EventInfo {
                        label: e.describe(),
                        from_s,
                        until_s,
                    }
                })
                .collect(),
            policies: vec![],
            direct: None,
        }
    }

    /// The report of `policy`, if present.
    pub fn policy(&self, policy: Policy) -> Option<&PolicyReport> {
        self.policies.iter().find(|p| p.policy == policy)
    }
}

/// Statistics of one direction from what the game ends recorded; `wire_bytes` comes from the
/// links.
pub fn stream_stats(t: &StreamTrace, wire_bytes: u64) -> (StreamStats, Vec<[f64; 2]>, Vec<f64>) {
    let mut first: Vec<Option<u64>> = vec![None; t.sent.len()];
    let mut duplicates = 0u64;
    let mut delays = Vec::with_capacity(t.arrivals.len());
    let mut jitter_sum = 0.0;
    let mut jitter_n = 0u64;
    let mut prev_transit: Option<i64> = None;
    let mut deliveries = Vec::with_capacity(t.arrivals.len());
    for a in &t.arrivals {
        let Some(Some(s)) = t.sent.get(a.seq as usize) else {
            continue;
        };
        let slot = &mut first[a.seq as usize];
        if slot.is_some() {
            duplicates += 1;
            continue;
        }
        *slot = Some(a.at_us);
        let transit = a.at_us as i64 - s.at_us as i64;
        delays.push(transit.max(0) as u64);
        deliveries.push(a.at_us);
        if let Some(p) = prev_transit {
            jitter_sum += (transit - p).unsigned_abs() as f64;
            jitter_n += 1;
        }
        prev_transit = Some(transit);
    }
    let sent = t.sent.iter().flatten().count() as u64;
    let delivered = first.iter().flatten().count() as u64;
    let payload_bytes: u64 = t.sent.iter().flatten().map(|s| s.size as u64).sum();
    let one_way = Quantiles::from_us(delays);
    // Gaps: from the first send to the first delivery, between deliveries, and from the last
    // delivery to when the last packet would have arrived (a stream that died shows).
    let first_send = t.sent.iter().flatten().map(|s| s.at_us).min();
    let last_send = t.sent.iter().flatten().map(|s| s.at_us).max();
    let mut gap = (0u64, 0u64);
    if let (Some(fs), Some(ls)) = (first_send, last_send) {
        let mut prev = fs;
        for &d in &deliveries {
            if d > prev && d - prev > gap.0 {
                gap = (d - prev, prev);
            }
            prev = prev.max(d);
        }
        let expected_end = ls + (one_way.p50 * 1000.0) as u64;
        if expected_end > prev && expected_end - prev > gap.0 {
            gap = (expected_end - prev, prev);
        }
    }
    let mut points = Vec::with_capacity(delivered as usize);
    let mut lost = Vec::new();
    let mut lost_at = Vec::new();
    for (i, (seq, s)) in t
        .sent
        .iter()
        .enumerate()
        .filter_map(|(seq, s)| Some((seq, (*s)?)))
        .enumerate()
    {
        match first[seq] {
            Some(at) => points.push([
                s.at_us as f64 / 1e6,
                at.saturating_sub(s.at_us) as f64 / 1000.0,
            ]),
            None => {
                lost.push(s.at_us as f64 / 1e6);
                lost_at.push(i as u32);
            }
        }
    }
    let loss = LossEstimate::of(&LossSample {
        n: sent,
        lost_at: lost_at.clone(),
    });
    let stats = StreamStats {
        sent,
        delivered,
        duplicates,
        lost: sent - delivered,
        residual_loss_pct: if sent == 0 {
            0.0
        } else {
            100.0 * (sent - delivered) as f64 / sent as f64
        },
        loss,
        lost_at,
        one_way_ms: one_way,
        jitter_ms: if jitter_n == 0 {
            0.0
        } else {
            jitter_sum / jitter_n as f64 / 1000.0
        },
        longest_gap_ms: gap.0 as f64 / 1000.0,
        longest_gap_at_s: gap.1 as f64 / 1e6,
        payload_bytes,
        wire_bytes,
        overhead: if payload_bytes == 0 {
            0.0
        } else {
            wire_bytes as f64 / payload_bytes as f64
        },
    };
    (stats, points, lost)
}

fn rtt_stats(rtt: &[RttSample]) -> (Quantiles, Vec<[f64; 2]>) {
    let q = Quantiles::from_us(rtt.iter().map(|r| r.rtt_us).collect());
    let pts = rtt
        .iter()
        .map(|r| [r.at_us as f64 / 1e6, r.rtt_us as f64 / 1000.0])
        .collect();
    (q, pts)
}

/// The game without PLG: its packets cross one impairment link straight to the game server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectReport {
    /// Client → game server.
    pub up: StreamStats,
    /// Game server → client.
    pub down: StreamStats,
    /// Round trips.
    pub rtt_ms: Quantiles,
    /// What the link saw.
    pub link: LinkReport,
}

/// The direct route's report from the game ends' trace and its link.
pub fn direct(trace: &PairTrace, link: LinkReport) -> DirectReport {
    let (up, _, _) = stream_stats(&trace.up, link.up.bytes_in);
    let (down, _, _) = stream_stats(&trace.down, link.down.bytes_in);
    let (rtt_ms, _) = rtt_stats(&trace.rtt);
    DirectReport {
        up,
        down,
        rtt_ms,
        link,
    }
}

/// A measured policy's report from the game ends' trace and the links' reports.
pub fn measured(
    policy: Policy,
    client: String,
    trace: &PairTrace,
    links: Vec<LinkReport>,
) -> PolicyReport {
    let wire_up = links.iter().map(|l| l.up.bytes_in).sum();
    let wire_down = links.iter().map(|l| l.down.bytes_in).sum();
    let (up, up_pts, up_lost) = stream_stats(&trace.up, wire_up);
    let (down, down_pts, down_lost) = stream_stats(&trace.down, wire_down);
    let (rtt, rtt_pts) = rtt_stats(&trace.rtt);
    PolicyReport {
        policy,
        status: PolicyStatus::Ran { client },
        up: Some(up),
        down: Some(down),
        rtt_ms: Some(rtt),
        links,
        series: Series {
            up: up_pts,
            up_lost,
            down: down_pts,
            down_lost,
            rtt: rtt_pts,
        },
        failovers: vec![],
        node_lost: vec![],
        sessions: vec![],
        segments: vec![],
    }
}

/// A percentage for an interval end: one significant digit under 0.01 %, two decimals under
/// 1 %, one above, no decimals for the ends 0 and 100.
pub fn fmt_ci_end(v: f64) -> String {
    if v == 0.0 || v == 100.0 {
        format!("{v:.0}")
    } else if v < 0.01 {
        // One significant digit: 1/1024's lower end is 0.002 %, not "0.00".
        let digits = (-v.log10()).ceil() as usize;
        format!("{v:.digits$}")
    } else if v < 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// `5.08 % [3.7–6.8] 26/512`; a `*` after the interval marks a block-bootstrap interval
/// (clustered loss).
pub fn fmt_loss(e: &LossEstimate) -> String {
    format!(
        "{:.2} % [{}–{}]{} {}/{}",
        e.pct,
        fmt_ci_end(e.ci_lo_pct),
        fmt_ci_end(e.ci_hi_pct),
        if e.method == CiMethod::BlockBootstrap {
            "*"
        } else {
            ""
        },
        e.lost,
        e.sent
    )
}

/// What a table column shows: a policy run or the direct route.
#[derive(Debug)]
struct Col<'a> {
    name: String,
    /// `None` when measured; else the word shown in every cell.
    absent: Option<&'static str>,
    up: Option<&'a StreamStats>,
    down: Option<&'a StreamStats>,
    rtt: Option<Quantiles>,
    links: &'a [LinkReport],
    failovers: &'a [FailoverInfo],
    node_lost: &'a [f64],
}

fn columns(r: &RunReport) -> Vec<Col<'_>> {
    let mut cols = Vec::new();
    if let Some(d) = &r.direct {
        cols.push(Col {
            name: "direct (no PLG)".into(),
            absent: None,
            up: Some(&d.up),
            down: Some(&d.down),
            rtt: Some(d.rtt_ms),
            links: std::slice::from_ref(&d.link),
            failovers: &[],
            node_lost: &[],
        });
    }
    for p in &r.policies {
        cols.push(Col {
            name: p.policy.name().into(),
            absent: match p.status {
                PolicyStatus::Ran { .. } => None,
                PolicyStatus::Unavailable { .. } => Some("unavailable"),
                PolicyStatus::Failed { .. } => Some("FAILED"),
            },
            up: p.up.as_ref(),
            down: p.down.as_ref(),
            rtt: p.rtt_ms,
            links: &p.links,
            failovers: &p.failovers,
            node_lost: &p.node_lost,
        });
    }
    cols
}

const LABEL_W: usize = 26;
const COL_W: usize = 30;

fn row(out: &mut String, label: &str, cols: &[Col<'_>], f: impl Fn(&Col<'_>) -> Option<String>) {
    let _ = write!(out, "  {label:<LABEL_W$}");
    for c in cols {
        let v = match c.absent {
            None => f(c).unwrap_or_else(|| "—".into()),
            Some(w) => w.into(),
        };
        let _ = write!(out, "{v:>COL_W$}");
    }
    out.push('\n');
}

fn stream_rows(
    out: &mut String,
    cols: &[Col<'_>],
    title: &str,
    pick: for<'a> fn(&Col<'a>) -> Option<&'a StreamStats>,
) {
    let _ = writeln!(out, "{title}");
    row(out, "sent / delivered", cols, |p| {
        pick(p).map(|s| format!("{} / {}", s.sent, s.delivered))
    });
    row(out, "residual loss [95 % CI] n", cols, |p| {
        pick(p).map(|s| fmt_loss(&s.loss))
    });
    row(out, "one-way p50 / p99 ms", cols, |p| {
        pick(p).map(|s| format!("{:.2} / {:.2}", s.one_way_ms.p50, s.one_way_ms.p99))
    });
    row(out, "one-way p99.9 / max ms", cols, |p| {
        pick(p).map(|s| format!("{:.2} / {:.2}", s.one_way_ms.p999, s.one_way_ms.max))
    });
    row(out, "jitter (RFC 3550) ms", cols, |p| {
        pick(p).map(|s| format!("{:.3}", s.jitter_ms))
    });
    row(out, "longest gap ms (at s)", cols, |p| {
        pick(p).map(|s| format!("{:.1} ({:.2})", s.longest_gap_ms, s.longest_gap_at_s))
    });
    row(out, "wire / payload bytes", cols, |p| {
        pick(p).map(|s| format!("{:.2}×", s.overhead))
    });
    row(out, "duplicates to the game", cols, |p| {
        pick(p).map(|s| s.duplicates.to_string())
    });
}

/// The terminal table: the direct route (when measured) and the policies side by side, then
/// the claims the numbers support.
pub fn render_table(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {}  seed {}  {:.1} s per policy  {} packets/s each way  {} path(s)",
        r.scenario,
        r.seed,
        r.duration_s,
        r.tick_rate,
        r.paths.len()
    );
    if !r.description.is_empty() {
        let _ = writeln!(out, "  {}", r.description);
    }
    for (i, p) in r.paths.iter().enumerate() {
        let to = if p.node == 0 {
            String::new()
        } else {
            format!(" → backup exit node {}", p.node)
        };
        let _ = writeln!(
            out,
            "  path {i} {:<12} up: {}  down: {}{to}",
            format!("({})", p.name),
            describe(&p.up),
            describe(&p.down)
        );
    }
    for e in &r.events {
        let _ = writeln!(out, "  event: {}", e.label);
    }
    out.push('\n');
    let cols = columns(r);
    let _ = write!(out, "  {:<LABEL_W$}", "");
    for c in &cols {
        let _ = write!(out, "{:>COL_W$}", c.name);
    }
    out.push('\n');
    stream_rows(&mut out, &cols, "upstream (client → game server)", |c| {
        c.up
    });
    stream_rows(
        &mut out,
        &cols,
        "downstream (game server → client)",
        |c| c.down,
    );
    let _ = writeln!(out, "round trip");
    row(&mut out, "RTT p50 / p99 ms", &cols, |p| {
        p.rtt.map(|q| format!("{:.2} / {:.2}", q.p50, q.p99))
    });
    row(&mut out, "RTT p99.9 ms", &cols, |p| {
        p.rtt.map(|q| format!("{:.2}", q.p999))
    });
    if cols
        .iter()
        .any(|p| !p.failovers.is_empty() || !p.node_lost.is_empty())
    {
        let _ = writeln!(out, "session");
        row(&mut out, "failover (to, gap ms, at s)", &cols, |p| {
            Some(match (p.failovers.first(), p.node_lost.len()) {
                (Some(f), _) => format!(
                    "{} {:.0} @ {:.2}{}",
                    f.node.map_or(f.node_id.clone(), |n| format!("node {n}")),
                    f.gap_ms,
                    f.at_s,
                    if p.failovers.len() > 1 {
                        format!(" (+{})", p.failovers.len() - 1)
                    } else {
                        String::new()
                    }
                ),
                (None, 0) => "none".into(),
                (None, n) => format!("none ({n}× no node)"),
            })
        });
    }
    let _ = writeln!(out, "links (all paths)");
    row(&mut out, "dropped up / down", &cols, |p| {
        let (u, d) = p.links.iter().fold((0, 0), |(u, d), l| {
            (
                u + l.up.packets_in - l.up.packets_out.min(l.up.packets_in),
                d + l.down.packets_in - l.down.packets_out.min(l.down.packets_in),
            )
        });
        Some(format!("{u} / {d}"))
    });
    row(&mut out, "sender late p50/p99 µs", &cols, |p| {
        let late = p
            .links
            .iter()
            .flat_map(|l| [&l.up, &l.down])
            .filter(|d| d.packets_out > 0);
        let (a, b) = late.fold((0, 0), |(a, b), d| {
            (a.max(d.late_us_p50), b.max(d.late_us_p99))
        });
        Some(format!("{a} / {b}"))
    });
    host_stall_rows(&mut out, &cols);
    let _ = writeln!(
        out,
        "{}",
        loss_footnote(
            cols.iter()
                .flat_map(|c| [c.up, c.down])
                .flatten()
                .map(|s| &s.loss)
        )
    );
    for p in &r.policies {
        match &p.status {
            PolicyStatus::Ran { client } => {
                let _ = writeln!(out, "  {:<10} ran with {client}", p.policy.name());
            }
            PolicyStatus::Unavailable { reason } => {
                let _ = writeln!(out, "  {:<10} UNAVAILABLE: {reason}", p.policy.name());
            }
            PolicyStatus::Failed { error } => {
                let _ = writeln!(out, "  {:<10} FAILED: {error}", p.policy.name());
            }
        }
    }
    let claims = crate::claims::for_run(r, "--duration");
    if !claims.is_empty() {
        let _ = writeln!(
            out,
            "\nwhat the numbers support (both directions pooled, 95 %):"
        );
        for c in &claims {
            let _ = writeln!(out, "  {c}");
        }
    }
    out
}

/// The legend under a table of loss figures.
fn loss_footnote<'a>(figures: impl Iterator<Item = &'a LossEstimate>) -> String {
    let clustered = figures
        .filter(|e| e.method == CiMethod::BlockBootstrap)
        .count();
    let mut s = String::from("\n  loss: percent [exact (Clopper–Pearson) 95 % interval] lost/sent");
    if clustered > 0 {
        s.push_str(
            "; * clustered loss (lag-1 autocorrelation > 2/√n):\n        \
             the interval is widened to the moving-block bootstrap's",
        );
    }
    s.push('\n');
    s
}

/// Host noise: shown only when a link flagged a stall (see [`crate::link::Stall`]), since a
/// stall of this machine shows up in the figures above as a network spike.
fn host_stall_rows(out: &mut String, cols: &[Col<'_>]) {
    let stalls = |c: &Col<'_>| -> Vec<crate::link::Stall> {
        c.links
            .iter()
            .flat_map(|l| l.up.stalls.iter().chain(&l.down.stalls))
            .copied()
            .collect()
    };
    if cols.iter().all(|c| stalls(c).is_empty()) {
        return;
    }
    row(out, "host stalls (n, longest ms @ s)", cols, |p| {
        let s = stalls(p);
        Some(match s.iter().max_by(|a, b| a.ms.total_cmp(&b.ms)) {
            Some(w) => format!("{}, {:.0} @ {:.2}", s.len(), w.ms, w.at_s),
            None => "0".into(),
        })
    });
    let _ = writeln!(
        out,
        "  ! host stalls: the links themselves held datagrams > {} ms (this machine was busy); \
         delay spikes and gaps at those times are host noise, not network",
        crate::link::STALL_THRESHOLD.as_millis()
    );
}

/// A short description of an impairment.
pub fn describe(i: &Impairment) -> String {
    let mut parts = Vec::new();
    if i.delay_ms > 0.0 {
        parts.push(format!("{} ms", i.delay_ms));
    }
    if i.jitter_ms > 0.0 {
        parts.push(format!("±{} ms {:?}", i.jitter_ms, i.jitter).to_lowercase());
    }
    if i.loss_pct > 0.0 {
        parts.push(format!("{} % loss", i.loss_pct));
    }
    if let Some(b) = &i.burst {
        parts.push(format!(
            "bursts {}/{} ms good/bad (≈{:.1} % loss)",
            b.mean_good_ms,
            b.mean_bad_ms,
            100.0 * b.stationary_loss()
        ));
    }
    if i.reorder_pct > 0.0 {
        parts.push(format!("{} % reordered", i.reorder_pct));
    }
    if i.duplicate_pct > 0.0 {
        parts.push(format!("{} % duplicated", i.duplicate_pct));
    }
    if i.rate_kbps > 0.0 {
        parts.push(format!("{} kbit/s", i.rate_kbps));
    }
    if i.queue_bytes > 0 {
        parts.push(format!("{} B queue", i.queue_bytes));
    }
    if i.corrupt_pct > 0.0 {
        parts.push(format!("{} % corrupted", i.corrupt_pct));
    }
    if i.mtu > 0 {
        parts.push(format!("MTU {}", i.mtu));
    }
    if let Some(t) = &i.trace {
        parts.push(format!("trace {}", t.path().display()));
    }
    if parts.is_empty() {
        "clean".into()
    } else {
        parts.join(", ")
    }
}

/// A sweep: the same scenario at several injected loss rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed given (each point derives its own from it).
    pub seed: u64,
    /// Seconds per policy per point.
    pub duration_s: f64,
    /// Seeds per point (`--repeat`).
    #[serde(default = "one")]
    pub repeat: usize,
    /// One entry per injected loss rate.
    pub points: Vec<SweepPoint>,
}

fn one() -> usize {
    1
}

/// One loss rate of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// Independent loss injected on every path, both directions, percent.
    pub injected_loss_pct: f64,
    /// Seed of this point (derived from the sweep's seed and the loss rate).
    pub seed: u64,
    /// Policies of the run with `seed` (plot series dropped to keep the file small).
    pub policies: Vec<PolicyReport>,
    /// The game without PLG over path 0's route at this loss, the run with `seed`
    /// (timelines dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectReport>,
    /// With `--repeat N > 1`: every seed's run pooled (the first seed is `seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
}

impl SweepPoint {
    /// The direct route's loss figures (up, down) at this point, pooled over the seeds when
    /// the point was repeated.
    pub fn direct_loss(&self) -> Option<(LossEstimate, LossEstimate)> {
        if let Some(a) = &self.aggregate {
            let row = a.rows.iter().find(|r| r.policy.is_none())?;
            return Some((row.up.loss.clone(), row.down.loss.clone()));
        }
        let d = self.direct.as_ref()?;
        Some((d.up.loss.clone(), d.down.loss.clone()))
    }

    /// The loss figures (up, down) of `policy` at this point: pooled over the seeds when the
    /// point was repeated.
    pub fn loss(&self, policy: Policy) -> Option<(LossEstimate, LossEstimate)> {
        if let Some(a) = &self.aggregate {
            let row = a.rows.iter().find(|r| r.policy == Some(policy))?;
            return (row.runs > 0).then(|| (row.up.loss.clone(), row.down.loss.clone()));
        }
        let p = self.policies.iter().find(|p| p.policy == policy)?;
        Some((p.up.as_ref()?.loss.clone(), p.down.as_ref()?.loss.clone()))
    }
}

/// Width of a sweep table cell: `15.06 % [14.4–15.8] 1506/10000` and a gap.
const SWEEP_COL_W: usize = 32;

/// The sweep table: one row per loss rate, residual loss with its interval per policy and
/// direction.
pub fn render_sweep_table(s: &SweepReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sweep of {}  seed {}  {:.1} s per point and policy{}; residual loss % [95 % CI] lost/sent",
        s.scenario,
        s.seed,
        s.duration_s,
        if s.repeat > 1 {
            format!(", {} seeds pooled per point", s.repeat)
        } else {
            String::new()
        }
    );
    let Some(first) = s.points.first() else {
        return out;
    };
    let _ = write!(out, "  {:>10} {:<4}", "injected", "");
    if first.direct.is_some() {
        let _ = write!(out, "{:>SWEEP_COL_W$}", "direct (no PLG)");
    }
    for p in &first.policies {
        let _ = write!(out, "{:>SWEEP_COL_W$}", p.policy.name());
    }
    out.push('\n');
    let mut all = vec![];
    for pt in &s.points {
        for (k, dir) in ["up", "down"].iter().enumerate() {
            if k == 0 {
                let _ = write!(out, "  {:>8.1} % {dir:<4}", pt.injected_loss_pct);
            } else {
                let _ = write!(out, "  {:>10} {dir:<4}", "");
            }
            if first.direct.is_some() {
                let c = match pt.direct_loss() {
                    Some((u, d)) => {
                        let e = if k == 0 { u } else { d };
                        let c = fmt_loss(&e);
                        all.push(e);
                        c
                    }
                    None => "—".into(),
                };
                let _ = write!(out, "{c:>SWEEP_COL_W$}");
            }
            for p in &pt.policies {
                let c = match (&p.status, pt.loss(p.policy)) {
                    (_, Some((u, d))) => {
                        let e = if k == 0 { u } else { d };
                        let c = fmt_loss(&e);
                        all.push(e);
                        c
                    }
                    (PolicyStatus::Unavailable { .. }, None) => "unavailable".into(),
                    (PolicyStatus::Failed { .. }, None) => "FAILED".into(),
                    (PolicyStatus::Ran { .. }, None) => "—".into(),
                };
                let _ = write!(out, "{c:>SWEEP_COL_W$}");
            }
            out.push('\n');
        }
    }
    out.push_str(&loss_footnote(all.iter()));
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

const CSV_LOSS_COLUMNS: &str = "sent,lost,loss_pct,ci_lo_pct,ci_hi_pct,ci_method";

fn csv_loss(out: &mut String, e: Option<&LossEstimate>) {
    match e {
        Some(e) => {
            let _ = write!(
                out,
                ",{},{},{:.4},{:.4},{:.4},{}",
                e.sent,
                e.lost,
                e.pct,
                e.ci_lo_pct,
                e.ci_hi_pct,
                e.method.name()
            );
        }
        None => out.push_str(",,,,,,"),
    }
}

fn csv_header(first: &str) -> String {
    let dir = |d: &str| {
        CSV_LOSS_COLUMNS
            .split(',')
            .map(|c| format!("{d}_{c}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{first},{},{},rtt_p50_ms,rtt_p99_ms\n",
        dir("up"),
        dir("down")
    )
}

/// `report.csv`: one row per route (direct first when measured, then each policy) with the
/// loss each way, its 95 % interval, and the RTT.
pub fn report_csv(r: &RunReport) -> String {
    let mut out = csv_header("scenario,seed,route,status");
    for c in columns(r) {
        let _ = write!(
            out,
            "{},{},{},{}",
            csv_field(&r.scenario),
            r.seed,
            csv_field(&c.name),
            c.absent.unwrap_or("ran")
        );
        csv_loss(&mut out, c.up.map(|s| &s.loss));
        csv_loss(&mut out, c.down.map(|s| &s.loss));
        match c.rtt {
            Some(q) => {
                let _ = writeln!(out, ",{:.3},{:.3}", q.p50, q.p99);
            }
            None => out.push_str(",,\n"),
        }
    }
    out
}

/// `sweep.csv`: one row per injected loss rate and policy (pooled over the seeds when
/// repeated).
pub fn sweep_csv(s: &SweepReport) -> String {
    let mut out = csv_header("scenario,injected_loss_pct,seed,seeds,policy,status");
    for pt in &s.points {
        let seeds = pt.aggregate.as_ref().map_or(1, |a| a.seeds.len());
        if let Some((u, d)) = pt.direct_loss() {
            let _ = write!(
                out,
                "{},{},{},{seeds},direct (no PLG),ran",
                csv_field(&s.scenario),
                pt.injected_loss_pct,
                pt.seed
            );
            csv_loss(&mut out, Some(&u));
            csv_loss(&mut out, Some(&d));
            let rtt = match &pt.aggregate {
                Some(a) => a
                    .rows
                    .iter()
                    .find(|r| r.policy.is_none())
                    .map(|r| (r.rtt_p50_ms.median, r.rtt_p99_ms.median)),
                None => pt.direct.as_ref().map(|d| (d.rtt_ms.p50, d.rtt_ms.p99)),
            };
            match rtt {
                Some((a, b)) => {
                    let _ = writeln!(out, ",{a:.3},{b:.3}");
                }
                None => out.push_str(",,\n"),
            }
        }
        for p in &pt.policies {
            let status = match p.status {
                PolicyStatus::Ran { .. } => "ran",
                PolicyStatus::Unavailable { .. } => "unavailable",
                PolicyStatus::Failed { .. } => "FAILED",
            };
            let _ = write!(
                out,
                "{},{},{},{seeds},{},{status}",
                csv_field(&s.scenario),
                pt.injected_loss_pct,
                pt.seed,
                p.policy.name()
            );
            let loss = pt.loss(p.policy);
            csv_loss(&mut out, loss.as_ref().map(|l| &l.0));
            csv_loss(&mut out, loss.as_ref().map(|l| &l.1));
            let rtt = match &pt.aggregate {
                Some(a) => a
                    .rows
                    .iter()
                    .find(|r| r.policy == Some(p.policy))
                    .filter(|r| r.runs > 0)
                    .map(|r| (r.rtt_p50_ms.median, r.rtt_p99_ms.median)),
                None => p.rtt_ms.map(|q| (q.p50, q.p99)),
            };
            match rtt {
                Some((a, b)) => {
                    let _ = writeln!(out, ",{a:.3},{b:.3}");
                }
                None => out.push_str(",,\n"),
            }
        }
    }
    out
}

/// Several runs of one scenario with different seeds, pooled per route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The seeds, in run order.
    pub seeds: Vec<u64>,
    /// Direct first (when every run measured it), then the policies in the first run's
    /// order.
    pub rows: Vec<AggregateRow>,
}

/// One route over every seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateRow {
    /// `direct (no PLG)` or the policy's name.
    pub route: String,
    /// The policy (`None` for direct).
    pub policy: Option<Policy>,
    /// Runs that produced numbers.
    pub runs: usize,
    /// Client → game server.
    pub up: PooledLoss,
    /// Game server → client.
    pub down: PooledLoss,
    /// Median RTT per seed.
    pub rtt_p50_ms: Spread,
    /// 99th percentile RTT per seed.
    pub rtt_p99_ms: Spread,
}

/// One direction's loss over every seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PooledLoss {
    /// All seeds' packets as one sequence (seed after seed), with its interval.
    pub loss: LossEstimate,
    /// Each seed's loss, percent: min / median / max.
    pub per_seed_pct: Spread,
    /// The pooled per-packet record.
    #[serde(skip)]
    pub sample: LossSample,
}

fn pooled<'a>(streams: impl Iterator<Item = &'a StreamStats>) -> PooledLoss {
    let mut sample = LossSample::default();
    let mut per_seed = vec![];
    for s in streams {
        sample = sample.concat(&s.sample());
        per_seed.push(s.residual_loss_pct);
    }
    PooledLoss {
        loss: LossEstimate::of(&sample),
        per_seed_pct: Spread::of(&per_seed),
        sample,
    }
}

/// Pools runs of the same scenario (any execution mode that produces `RunReport`s): per
/// route, every seed's packets as one sequence with its interval, and the per-seed spread.
pub fn aggregate(runs: &[RunReport]) -> Aggregate {
    let mut rows = vec![];
    let directs: Vec<&DirectReport> = runs.iter().filter_map(|r| r.direct.as_ref()).collect();
    if !directs.is_empty() {
        rows.push(AggregateRow {
            route: "direct (no PLG)".into(),
            policy: None,
            runs: directs.len(),
            up: pooled(directs.iter().map(|d| &d.up)),
            down: pooled(directs.iter().map(|d| &d.down)),
            rtt_p50_ms: Spread::of(&directs.iter().map(|d| d.rtt_ms.p50).collect::<Vec<_>>()),
            rtt_p99_ms: Spread::of(&directs.iter().map(|d| d.rtt_ms.p99).collect::<Vec<_>>()),
        });
    }
    let mut order: Vec<Policy> = vec![];
    for p in runs.iter().flat_map(|r| &r.policies) {
        if !order.contains(&p.policy) {
            order.push(p.policy);
        }
    }
    for policy in order {
        let ran: Vec<&PolicyReport> = runs
            .iter()
            .filter_map(|r| r.policy(policy))
            .filter(|p| p.ran() && p.up.is_some() && p.down.is_some())
            .collect();
        let rtts: Vec<Quantiles> = ran.iter().filter_map(|p| p.rtt_ms).collect();
        rows.push(AggregateRow {
            route: policy.name().into(),
            policy: Some(policy),
            runs: ran.len(),
            up: pooled(ran.iter().filter_map(|p| p.up.as_ref())),
            down: pooled(ran.iter().filter_map(|p| p.down.as_ref())),
            rtt_p50_ms: Spread::of(&rtts.iter().map(|q| q.p50).collect::<Vec<_>>()),
            rtt_p99_ms: Spread::of(&rtts.iter().map(|q| q.p99).collect::<Vec<_>>()),
        });
    }
    Aggregate {
        seeds: runs.iter().map(|r| r.seed).collect(),
        rows,
    }
}

/// The aggregate table: one row per route, pooled loss each way with its interval and the
/// per-seed spread, RTT medians.
pub fn render_aggregate(scenario: &str, a: &Aggregate) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {scenario}: {} seeds pooled ({})",
        a.seeds.len(),
        a.seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "  {:<16}{:>5}  {:>30} {:>20}  {:>30} {:>20}  {:>16}",
        "route",
        "runs",
        "loss up (pooled)",
        "per seed min/med/max",
        "loss down (pooled)",
        "per seed min/med/max",
        "RTT p50 med ms"
    );
    let spread = |s: &Spread| format!("{:.2} / {:.2} / {:.2}", s.min, s.median, s.max);
    for r in &a.rows {
        if r.runs == 0 {
            let _ = writeln!(out, "  {:<16}{:>5}  no numbers", r.route, 0);
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<16}{:>5}  {:>30} {:>20}  {:>30} {:>20}  {:>16.2}",
            r.route,
            r.runs,
            fmt_loss(&r.up.loss),
            spread(&r.up.per_seed_pct),
            fmt_loss(&r.down.loss),
            spread(&r.down.per_seed_pct),
            r.rtt_p50_ms.median
        );
    }
    out.push_str(&loss_footnote(
        a.rows.iter().flat_map(|r| [&r.up.loss, &r.down.loss]),
    ));
    out
}

/// `aggregate.csv`: one row per route with the pooled loss each way and the per-seed spread.
pub fn aggregate_csv(scenario: &str, a: &Aggregate) -> String {
    let mut out = String::from("scenario,seeds,route,runs");
    for d in ["up", "down"] {
        for c in CSV_LOSS_COLUMNS.split(',') {
            let _ = write!(out, ",{d}_{c}");
        }
        let _ = write!(
            out,
            ",{d}_seed_min_pct,{d}_seed_median_pct,{d}_seed_max_pct"
        );
    }
    out.push_str(",rtt_p50_median_ms,rtt_p99_median_ms\n");
    let seeds = a
        .seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    for r in &a.rows {
        let _ = write!(
            out,
            "{},{seeds},{},{}",
            csv_field(scenario),
            csv_field(&r.route),
            r.runs
        );
        for d in [&r.up, &r.down] {
            csv_loss(&mut out, (r.runs > 0).then_some(&d.loss));
            let s = d.per_seed_pct;
            let _ = write!(out, ",{:.4},{:.4},{:.4}", s.min, s.median, s.max);
        }
        let _ = writeln!(
            out,
            ",{:.3},{:.3}",
            r.rtt_p50_ms.median, r.rtt_p99_ms.median
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::{Arrival, Sent};

    #[test]
    fn stats_count_loss_gaps_jitter_and_duplicates() {
        // 10 packets every 10 ms, 5 ms transit, seq 4–6 lost, seq 8 arrives twice; seq 9 has
        // 7 ms transit.
        let sent = (0..10)
            .map(|i| {
                Some(Sent {
                    at_us: i * 10_000,
                    size: 100,
                })
            })
            .collect();
        let mut arrivals: Vec<Arrival> = (0..10u32)
            .filter(|s| !(4..=6).contains(s))
            .map(|s| Arrival {
                seq: s,
                at_us: s as u64 * 10_000 + if s == 9 { 7_000 } else { 5_000 },
            })
            .collect();
        arrivals.push(Arrival {
            seq: 8,
            at_us: 86_000,
        });
        let t = StreamTrace { sent, arrivals };
        let (s, pts, lost) = stream_stats(&t, 1500);
        assert_eq!((s.sent, s.delivered, s.lost, s.duplicates), (10, 7, 3, 1));
        assert!((s.residual_loss_pct - 30.0).abs() < 1e-9);
        assert_eq!(s.one_way_ms.p50, 5.0);
        assert_eq!(s.one_way_ms.max, 7.0);
        // Gap from seq 3 (35 ms) to seq 7 (75 ms).
        assert_eq!(s.longest_gap_ms, 40.0);
        assert!((s.longest_gap_at_s - 0.035).abs() < 1e-9);
        // Transit differences: 0,0,0,0,0,2 ms → mean 2/6 ms.
        assert!((s.jitter_ms - 2.0 / 6.0).abs() < 1e-9, "{}", s.jitter_ms);
        assert!((s.overhead - 1.5).abs() < 1e-9);
        assert_eq!((pts.len(), lost.len()), (7, 3));
    }

    /// A direction of `n` packets with the given ones lost.
    fn stream(n: u32, lost: &[u32]) -> StreamStats {
        let t = StreamTrace {
            sent: (0..n)
                .map(|i| {
                    Some(Sent {
                        at_us: u64::from(i) * 10_000,
                        size: 100,
                    })
                })
                .collect(),
            arrivals: (0..n)
                .filter(|i| !lost.contains(i))
                .map(|seq| Arrival {
                    seq,
                    at_us: u64::from(seq) * 10_000 + 5_000,
                })
                .collect(),
        };
        stream_stats(&t, 0).0
    }

    fn policy(p: Policy, up: StreamStats, down: StreamStats) -> PolicyReport {
        PolicyReport {
            up: Some(up),
            down: Some(down),
            rtt_ms: Some(Quantiles {
                p50: 40.0,
                p99: 45.0,
                ..Quantiles::default()
            }),
            ..PolicyReport::without_numbers(
                p,
                PolicyStatus::Ran {
                    client: "test".into(),
                },
            )
        }
    }

    fn run(seed: u64, single_lost: &[u32]) -> RunReport {
        RunReport {
            scenario: "t".into(),
            description: String::new(),
            seed,
            duration_s: 8.0,
            tick_rate: 64,
            paths: vec![],
            events: vec![],
            policies: vec![
                policy(Policy::Single, stream(512, single_lost), stream(512, &[])),
                policy(Policy::Duplicate, stream(512, &[]), stream(512, &[7])),
                PolicyReport::without_numbers(
                    Policy::Adaptive,
                    PolicyStatus::Unavailable {
                        reason: "test".into(),
                    },
                ),
            ],
            direct: None,
        }
    }

    #[test]
    fn loss_figures_carry_count_interval_and_lost_indices() {
        let s = stream(512, &[3, 100, 101]);
        assert_eq!(s.lost_at, vec![3, 100, 101]);
        assert_eq!((s.loss.lost, s.loss.sent), (3, 512));
        assert!((s.loss.exact_pct[1] - 1.70).abs() < 0.01, "{:?}", s.loss);
        assert_eq!(fmt_loss(&s.loss), "0.59 % [0.12–1.7] 3/512");
        assert_eq!(
            fmt_loss(&stream(1024, &[9]).loss),
            "0.10 % [0.002–0.54] 1/1024"
        );
        let lost: Vec<u32> = (0..26).map(|i| i * 19).collect();
        assert_eq!(
            fmt_loss(&stream(512, &lost).loss),
            "5.08 % [3.3–7.4] 26/512"
        );
        // Old reports without the new fields still load.
        let mut v = serde_json::to_value(&s).unwrap();
        v.as_object_mut().unwrap().remove("loss");
        v.as_object_mut().unwrap().remove("lost_at");
        let back: StreamStats = serde_json::from_value(v).unwrap();
        assert!(back.lost_at.is_empty());
    }

    #[test]
    fn table_json_and_csv_show_every_loss_with_its_interval() {
        let lost: Vec<u32> = (0..26).map(|i| i * 19).collect();
        let mut r = run(1, &lost);
        r.direct = Some(DirectReport {
            up: stream(512, &lost),
            down: stream(512, &lost),
            rtt_ms: Quantiles::default(),
            link: LinkReport::default(),
        });
        let t = render_table(&r);
        assert!(t.contains("5.08 % [3.3–7.4] 26/512"), "{t}");
        assert!(
            t.contains("direct (no PLG)") && t.contains("unavailable"),
            "{t}"
        );
        assert!(t.contains("duplicate loses less than single"), "{t}");
        let csv = report_csv(&r);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 5, "{csv}");
        assert!(lines[0].starts_with("scenario,seed,route,status,up_sent,up_lost,up_loss_pct,"));
        assert!(
            lines[1].starts_with("t,1,direct (no PLG),ran,512,26,5.0781,3.3"),
            "{csv}"
        );
        assert!(lines[4].starts_with("t,1,adaptive,unavailable,,,"), "{csv}");
        let cols = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == cols), "{csv}");
        let json = serde_json::to_string(&r).unwrap();
        let back: RunReport = serde_json::from_str(&json).unwrap();
        let d = back.direct.as_ref().unwrap();
        assert_eq!((d.up.loss.lost, d.up.lost_at.len()), (26, 26));
        assert!((d.up.loss.ci_hi_pct - 7.352).abs() < 0.001);
        // Deterministic: the same inputs give the same bytes (the bootstrap is seeded).
        assert_eq!(serde_json::to_string(&run(1, &lost)).unwrap(), {
            let mut r2 = r.clone();
            r2.direct = None;
            serde_json::to_string(&r2).unwrap()
        });
    }

    #[test]
    fn aggregate_pools_counts_and_gives_the_per_seed_spread() {
        let runs = vec![
            run(1, &[1, 5, 9]),
            run(2, &[]),
            run(3, &[10, 20, 30, 40, 50, 60]),
        ];
        let a = aggregate(&runs);
        assert_eq!(a.seeds, vec![1, 2, 3]);
        assert_eq!(a.rows.len(), 3);
        let single = &a.rows[0];
        assert_eq!((single.route.as_str(), single.runs), ("single", 3));
        assert_eq!((single.up.loss.lost, single.up.loss.sent), (9, 1536));
        let pct = |k: f64| 100.0 * k / 512.0;
        assert_eq!(single.up.per_seed_pct.min, 0.0);
        assert!((single.up.per_seed_pct.median - pct(3.0)).abs() < 1e-9);
        assert!((single.up.per_seed_pct.max - pct(6.0)).abs() < 1e-9);
        // Seed 3's losses sit after seeds 1 and 2 in the pooled sequence.
        assert_eq!(single.up.sample.lost_at[3], 1024 + 10);
        assert_eq!(a.rows[2].runs, 0);
        let t = render_aggregate("t", &a);
        assert!(t.contains("0.59 % [0.27–1.1] 9/1536"), "{t}");
        assert!(t.contains("no numbers"), "{t}");
        let csv = aggregate_csv("t", &a);
        assert_eq!(csv.lines().count(), 4, "{csv}");
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let q = Quantiles::from_us((1..=1000).map(|v| v * 1000).collect());
        assert_eq!((q.p50, q.p99, q.p999, q.max), (500.0, 990.0, 999.0, 1000.0));
    }
}
