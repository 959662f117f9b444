//! Route selection on the whole path to the game server.
//!
//! A route is entry node (the one the client sends to) → optional mesh hop → exit node → game
//! server. Its expected game RTT is the sum of its legs: client→entry (the client's own
//! probes), entry→exit (the mesh's RTT matrix, from billing) and exit→game (what the exit
//! measured and announced, from billing); losses compound. Routes are compared by
//! [`Leg::cost`]: RTT plus [`LOSS_PENALTY_PER_PERCENT`] per percent of loss. The client also
//! probes the game server directly with the same kind of probe, so it can say
//! `direct 94 ms → via fra-2 61 ms (−35 %)`, or that direct is better.
//!
//! [`choose`] picks the exit whose best route is cheapest (keeping the current exit unless
//! another is [`clearly_better`]) and, for that exit, its routes best first: the session's
//! paths. An exit whose exit→game leg is unknown is assumed no closer to the game than the
//! client is (its exit→game leg is taken as the direct RTT), so a measured exit wins over a
//! guess; with no direct figure either, unknown exits rank after every known one by their
//! client→node leg alone.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::billing::{LegRtt, NodeInfo, TargetRtt};
use crate::probe::{self, Probe};

/// Cost of loss in route comparisons: this much RTT per percent of loss (a lost game packet
/// costs about a resend interval; the mesh's own [`plg`-mesh `RttSummary::cost`] uses the
/// same weight).
pub const LOSS_PENALTY_PER_PERCENT: Duration = Duration::from_millis(2);

/// One leg of a route (or a whole route): RTT, jitter and loss.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Leg {
    /// Round-trip time.
    pub rtt: Duration,
    /// Jitter (mean absolute difference of consecutive samples).
    pub jitter: Duration,
    /// Fraction lost, 0–1.
    pub loss: f64,
}

impl Leg {
    /// A clean leg of `rtt`.
    pub fn of(rtt: Duration) -> Leg {
        Leg {
            rtt,
            ..Leg::default()
        }
    }

    /// What a probe series saw (median RTT); `None` if nothing answered.
    pub fn from_probe(p: &Probe) -> Option<Leg> {
        Some(Leg {
            rtt: p.median()?,
            jitter: p.jitter(),
            loss: p.loss_percent() / 100.0,
        })
    }

    /// A measurement relayed by billing.
    pub fn from_announced(l: &LegRtt) -> Leg {
        Leg {
            rtt: Duration::from_micros(l.rtt_us),
            jitter: Duration::from_micros(l.jitter_us),
            loss: f64::from(l.loss_permille.min(1000)) / 1000.0,
        }
    }

    /// This leg followed by `next`: RTTs and jitters add, losses compound.
    pub fn then(self, next: Leg) -> Leg {
        Leg {
            rtt: self.rtt + next.rtt,
            jitter: self.jitter + next.jitter,
            loss: 1.0 - (1.0 - self.loss) * (1.0 - next.loss),
        }
    }

    /// What routes are compared by: RTT plus [`LOSS_PENALTY_PER_PERCENT`] per percent lost.
    pub fn cost(&self) -> Duration {
        self.rtt + LOSS_PENALTY_PER_PERCENT.mul_f64(self.loss.clamp(0.0, 1.0) * 100.0)
    }
}

/// One way to the game server through the mesh.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteOption {
    /// The node the client sends to.
    pub entry: String,
    /// The node that sends to the game server.
    pub exit: String,
    /// Client → entry.
    pub to_entry: Leg,
    /// Entry → exit through the mesh (`None` when the entry is the exit).
    pub mesh: Option<Leg>,
    /// Exit → game server (`None`: not measured yet).
    pub to_game: Option<Leg>,
}

impl RouteOption {
    /// The whole route, with `assumed` standing in for an unmeasured exit→game leg.
    pub fn expected_with(&self, assumed: Option<Leg>) -> Option<Leg> {
        let mut leg = self.to_entry;
        if let Some(m) = self.mesh {
            leg = leg.then(m);
        }
        Some(leg.then(self.to_game.or(assumed)?))
    }

    /// The whole route; `None` while its exit→game leg is unknown.
    pub fn expected(&self) -> Option<Leg> {
        self.expected_with(None)
    }

    /// `fra-2`, or `fra-2 via ams-1` when the entry is another node.
    pub fn label(&self) -> String {
        if self.entry == self.exit {
            self.exit.clone()
        } else {
            format!("{} via {}", self.exit, self.entry)
        }
    }
}

/// Everything known when choosing a route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measurements {
    /// Client → game server directly (`None`: the server does not answer probes).
    pub direct: Option<Leg>,
    /// Client → node, by node id (nodes that did not answer are left out).
    pub to_node: BTreeMap<String, Leg>,
    /// Node → node through the mesh, by (from, to).
    pub mesh: BTreeMap<(String, String), Leg>,
    /// Exit → game server, by node id.
    pub to_game: BTreeMap<String, Leg>,
}

impl Measurements {
    /// Every route the measurements allow: each answering node as an entry, to itself or
    /// (through a measured mesh hop) to any other node as exit.
    pub fn options(&self) -> Vec<RouteOption> {
        let mut out = Vec::new();
        let exits: std::collections::BTreeSet<&String> =
            self.to_node.keys().chain(self.to_game.keys()).collect();
        for (entry, to_entry) in &self.to_node {
            for exit in &exits {
                let mesh = if entry == *exit {
                    None
                } else {
                    match self.mesh.get(&(entry.clone(), (*exit).clone())) {
                        Some(m) => Some(*m),
                        None => continue,
                    }
                };
                out.push(RouteOption {
                    entry: entry.clone(),
                    exit: (*exit).clone(),
                    to_entry: *to_entry,
                    mesh,
                    to_game: self.to_game.get(*exit).copied(),
                });
            }
        }
        out
    }
}

/// The chosen exit and how to reach it.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutePlan {
    /// The exit node.
    pub exit: String,
    /// The exit's routes, best first, one per entry: the session's paths.
    pub routes: Vec<RouteOption>,
    /// The other exits, best first (failover order).
    pub backups: Vec<String>,
    /// The best route's expected game RTT (with the documented assumption for an unmeasured
    /// exit→game leg); `None` when even that cannot be estimated.
    pub expected: Option<Leg>,
    /// Client → game server directly.
    pub direct: Option<Leg>,
}

impl RoutePlan {
    /// How much lower the expected game RTT is than direct (0.35 = 35 % lower; negative when
    /// direct is better); `None` when either is unknown.
    pub fn reduction(&self) -> Option<f64> {
        let (d, e) = (self.direct?, self.expected?);
        if d.rtt.is_zero() {
            return None;
        }
        Some(1.0 - e.rtt.as_secs_f64() / d.rtt.as_secs_f64())
    }

    /// Whether going direct is at least as good as the best route (by [`Leg::cost`]).
    pub fn direct_is_better(&self) -> bool {
        matches!((self.direct, self.expected), (Some(d), Some(e)) if d.cost() <= e.cost())
    }

    /// One line for the gamer: `direct 94 ms → via fra-2 61 ms (−35 %)`, or why not.
    pub fn summary(&self) -> String {
        let Some(best) = self.routes.first() else {
            return "no relay node answered: acceleration is not available right now".into();
        };
        let via = best.label();
        let direct = match self.direct {
            Some(d) => format!("direct {} ms", ms0(d.rtt)),
            None => "direct unknown (the game server does not answer probes)".into(),
        };
        match (self.direct, self.expected) {
            (_, None) => format!(
                "{direct}; via {via}: {} ms to the node, its distance to the game server is not measured yet",
                ms0(best.to_entry.rtt)
            ),
            (Some(d), Some(e)) if self.direct_is_better() => format!(
                "direct {} ms is better than any route (best: via {via} {} ms) — acceleration would not lower the ping",
                ms0(d.rtt),
                ms0(e.rtt)
            ),
            (Some(d), Some(e)) if e.rtt > d.rtt => format!(
                "{direct} ({:.0} % loss) → via {via} {} ms ({:.0} % loss): +{:.0} % ping for less loss",
                d.loss * 100.0,
                ms0(e.rtt),
                e.loss * 100.0,
                -self.reduction().unwrap_or(0.0) * 100.0
            ),
            (Some(_), Some(e)) => format!(
                "{direct} → via {via} {} ms (−{:.0} %)",
                ms0(e.rtt),
                self.reduction().unwrap_or(0.0) * 100.0
            ),
            (None, Some(e)) => format!("{direct} → via {via} {} ms", ms0(e.rtt)),
        }
    }
}

/// Whole milliseconds, at least 1 decimal below 10 ms (loopback figures stay readable).
fn ms0(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// Picks the exit and its paths from `m` (see the module docs); `current`: the exit in use,
/// kept unless another is [`clearly_better`]. `None` when no node answered.
pub fn choose(m: &Measurements, current: Option<&str>) -> Option<RoutePlan> {
    plan(m, current, None)
}

/// The plan for a pinned `exit` (the user chose it): its routes, the other exits as backups.
/// `None` when `exit` is not among the measured nodes.
pub fn choose_exit(m: &Measurements, exit: &str) -> Option<RoutePlan> {
    plan(m, None, Some(exit))
}

fn plan(m: &Measurements, current: Option<&str>, pinned: Option<&str>) -> Option<RoutePlan> {
    let options = m.options();
    // Cost of each route: measured, else with the exit→game leg assumed to be the direct
    // RTT, else unknown (ranked by its client→entry leg, after every estimated route).
    let key = |r: &RouteOption| -> (bool, Duration) {
        match r.expected_with(m.direct) {
            Some(l) => (false, l.cost()),
            None => (true, r.to_entry.cost()),
        }
    };
    let mut by_exit: BTreeMap<&str, Vec<&RouteOption>> = BTreeMap::new();
    for r in &options {
        by_exit.entry(r.exit.as_str()).or_default().push(r);
    }
    for routes in by_exit.values_mut() {
        routes.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.entry.cmp(&b.entry)));
    }
    let mut exits: Vec<(&str, (bool, Duration))> = by_exit
        .iter()
        .map(|(exit, routes)| (*exit, key(routes[0])))
        .collect();
    exits.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    let (mut exit, best) = *exits.first()?;
    if let Some(p) = pinned {
        exit = exits.iter().find(|(e, _)| *e == p)?.0;
    } else if let Some((cur, cur_key)) = current.and_then(|c| exits.iter().find(|(e, _)| *e == c))
        && cur_key.0 == best.0
        && !clearly_better(Some(cur_key.1), Some(best.1))
    {
        exit = cur;
    }
    let routes: Vec<RouteOption> = by_exit[exit].iter().map(|r| (*r).clone()).collect();
    Some(RoutePlan {
        exit: exit.to_owned(),
        expected: routes[0].expected(),
        routes,
        backups: exits
            .iter()
            .filter(|(e, _)| *e != exit)
            .map(|(e, _)| (*e).to_owned())
            .collect(),
        direct: m.direct,
    })
}

/// The `n` paths of a session on `plan`'s exit (data port `exit_data`): the plan's routes
/// best first — straight to the exit, or through the route's entry node, which carries the
/// frames on through the mesh — then through other `nodes` that answered (best first, for
/// path diversity where the mesh RTT is not known yet), then straight to the exit again,
/// each from its own socket.
pub fn plan_route_paths(
    plan: &RoutePlan,
    exit_data: SocketAddr,
    nodes: &[NodeInfo],
    n: usize,
) -> Vec<PlannedPath> {
    let by_id = |id: &str| nodes.iter().find(|x| x.id == id);
    let mut out: Vec<PlannedPath> = Vec::new();
    let push = |relay: Option<&NodeInfo>, out: &mut Vec<PlannedPath>| {
        let path = match relay {
            None => PlannedPath {
                addr: exit_data,
                relay: None,
            },
            Some(r) => match r.data_addr.parse::<SocketAddr>() {
                Ok(addr) if addr != exit_data && r.id != plan.exit => PlannedPath {
                    addr,
                    relay: Some(r.clone()),
                },
                _ => return,
            },
        };
        if !out.contains(&path) || path.relay.is_none() {
            out.push(path);
        }
    };
    for r in &plan.routes {
        if r.entry == r.exit {
            push(None, &mut out);
        } else if let Some(node) = by_id(&r.entry) {
            push(Some(node), &mut out);
        }
    }
    for node in nodes {
        push(Some(node), &mut out);
    }
    // Straight to the exit first among the extra paths when no route went there directly.
    if !out.iter().any(|p| p.relay.is_none()) {
        out.insert(
            1.min(out.len()),
            PlannedPath {
                addr: exit_data,
                relay: None,
            },
        );
    }
    out.truncate(n.max(1));
    while out.len() < n.max(1) {
        out.push(PlannedPath {
            addr: exit_data,
            relay: None,
        });
    }
    out
}

/// The announced exit→game figure of `node` for `server` (the entry whose prefix holds it),
/// or, when the server is not known yet, the node's best figure among the game's targets
/// (matchmaking favours the nearest server group).
pub fn game_leg(node: &NodeInfo, server: Option<IpAddr>) -> Option<Leg> {
    let pick: Option<&TargetRtt> = match server {
        Some(ip) => node
            .game_rtt
            .iter()
            .find(|t| prefix_contains(&t.target, ip)),
        None => node
            .game_rtt
            .iter()
            .min_by_key(|t| Leg::from_announced(&t.leg).cost()),
    };
    pick.map(|t| Leg::from_announced(&t.leg))
}

/// Whether `prefix` (`a.b.c.0/24`, `x:y::/48`) contains `ip`.
fn prefix_contains(prefix: &str, ip: IpAddr) -> bool {
    prefix
        .parse::<ipnet::IpNet>()
        .is_ok_and(|net| net.contains(&ip))
}

/// The measurements for a session: the client's probes of `ranked` nodes, the mesh and
/// exit→game figures billing relayed for them, and the direct probe.
pub fn measurements(
    ranked: &[Candidate],
    direct: Option<&Probe>,
    server: Option<IpAddr>,
) -> Measurements {
    let mut m = Measurements {
        direct: direct.and_then(Leg::from_probe),
        ..Measurements::default()
    };
    let offered: std::collections::BTreeSet<&str> =
        ranked.iter().map(|c| c.node.id.as_str()).collect();
    for c in ranked {
        if let Some(l) = Leg::from_probe(&c.probe) {
            m.to_node.insert(c.node.id.clone(), l);
        }
        if let Some(l) = game_leg(&c.node, server) {
            m.to_game.insert(c.node.id.clone(), l);
        }
        for (peer, leg) in &c.node.mesh_rtt {
            if offered.contains(peer.as_str()) && peer != &c.node.id {
                m.mesh
                    .insert((c.node.id.clone(), peer.clone()), Leg::from_announced(leg));
            }
        }
    }
    m
}

/// Probes per node when choosing a route.
pub const PROBES: u32 = 4;
/// Switch only when the other node is better by at least this much...
pub const SWITCH_ABSOLUTE: Duration = Duration::from_millis(10);
/// ...or by this fraction of the current score (and at least [`SWITCH_FLOOR`]).
pub const SWITCH_FRACTION: f64 = 1.0 / 3.0;
/// Relative improvements below this are noise, whatever the fraction (loopback, LAN).
pub const SWITCH_FLOOR: Duration = Duration::from_millis(2);

/// A candidate node with what probing it showed.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The node.
    pub node: NodeInfo,
    /// Handshake probes to its control port.
    pub probe: Probe,
}

/// Probes every node concurrently (`count` QUIC handshakes each) and returns them best first:
/// answered nodes by [`Probe::score`], then the silent ones in billing's order.
pub async fn probe_nodes(nodes: &[NodeInfo], ca_pem: &str, count: u32) -> Vec<Candidate> {
    let config = probe::quic_probe_config(ca_pem);
    let mut set = JoinSet::new();
    for (i, node) in nodes.iter().cloned().enumerate() {
        let config = config.clone();
        set.spawn(async move {
            let probe = match (node.control_addr.parse::<SocketAddr>(), config) {
                (Ok(addr), Ok(config)) => {
                    let bind: SocketAddr = if addr.is_ipv4() {
                        "0.0.0.0:0".parse().expect("literal")
                    } else {
                        "[::]:0".parse().expect("literal")
                    };
                    match quinn::Endpoint::client(bind) {
                        Ok(ep) => {
                            let p = probe::quic(
                                &ep,
                                &config,
                                addr,
                                &node.server_name,
                                count,
                                Duration::from_millis(50),
                                Duration::from_secs(1),
                            )
                            .await;
                            ep.wait_idle().await;
                            p
                        }
                        Err(_) => Probe {
                            sent: count,
                            rtts: vec![],
                        },
                    }
                }
                _ => Probe {
                    sent: count,
                    rtts: vec![],
                },
            };
            (i, Candidate { node, probe })
        });
    }
    let mut out: Vec<(usize, Candidate)> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    rank(out.into_iter().map(|(_, c)| c).collect())
}

/// One path of a session: where its frames go, and the node relaying them (`None`: straight
/// to the exit node's data port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedPath {
    /// Where the path's socket sends.
    pub addr: SocketAddr,
    /// The relay node, which carries the frames to the exit through the mesh.
    pub relay: Option<NodeInfo>,
}

/// The `n` paths of a session on `exit` (whose data port is `exit_data`): path 0 goes
/// straight to the exit; path `i` goes through `relays[i - 1]` (best first, the exit itself
/// skipped), so that two paths share as little of the route as the mesh allows. With fewer
/// relays than paths the rest go straight to the exit too, each from its own socket.
pub fn plan_paths(
    exit: &NodeInfo,
    exit_data: SocketAddr,
    relays: &[NodeInfo],
    n: usize,
) -> Vec<PlannedPath> {
    let mut relays = relays.iter().filter(|r| r.id != exit.id).filter_map(|r| {
        let addr: SocketAddr = r.data_addr.parse().ok()?;
        (addr != exit_data).then(|| PlannedPath {
            addr,
            relay: Some(r.clone()),
        })
    });
    (0..n.max(1))
        .map(|i| {
            let relayed = if i == 0 { None } else { relays.next() };
            relayed.unwrap_or(PlannedPath {
                addr: exit_data,
                relay: None,
            })
        })
        .collect()
}

/// The nodes that answered their probes, best first: the ones worth relaying through.
pub fn answering(ranked: &[Candidate]) -> Vec<NodeInfo> {
    ranked
        .iter()
        .filter(|c| c.probe.score().is_some())
        .map(|c| c.node.clone())
        .collect()
}

/// Orders candidates best first (stable: ties keep billing's order).
pub fn rank(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by_key(|c| c.probe.score().unwrap_or(Duration::MAX));
    candidates
}

/// Whether `candidate` is enough better than `current` to move a running session (scores
/// from [`Probe::score`]): by [`SWITCH_ABSOLUTE`], or by [`SWITCH_FRACTION`] of the current
/// score when that is also more than [`SWITCH_FLOOR`].
pub fn clearly_better(current: Option<Duration>, candidate: Option<Duration>) -> bool {
    match (current, candidate) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(cur), Some(new)) => {
            let gain = cur.saturating_sub(new);
            gain >= SWITCH_ABSOLUTE
                || (gain >= SWITCH_FLOOR
                    && gain.as_secs_f64() >= cur.as_secs_f64() * SWITCH_FRACTION)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    fn cand(id: &str, sent: u32, rtts: &[u64]) -> Candidate {
        Candidate {
            node: NodeInfo {
                id: id.into(),
                server_name: id.into(),
                region: String::new(),
                control_addr: "127.0.0.1:1".into(),
                data_addr: "127.0.0.1:2".into(),
                ..Default::default()
            },
            probe: Probe {
                sent,
                rtts: rtts.iter().map(|m| Duration::from_millis(*m)).collect(),
            },
        }
    }

    #[test]
    fn second_and_later_paths_go_through_other_answering_nodes() {
        let node = |id: &str, data: &str| {
            let mut c = cand(id, 4, &[10; 4]);
            c.node.data_addr = data.into();
            c
        };
        let exit = node("a", "127.0.0.1:10");
        let exit_data: SocketAddr = "127.0.0.1:10".parse().unwrap();
        let ranked = vec![
            exit.clone(),
            cand("silent", 4, &[]),
            node("b", "127.0.0.1:11"),
            node("bad", "not an address"),
            node("c", "127.0.0.1:12"),
        ];
        let relays = answering(&ranked);
        let plan = plan_paths(&exit.node, exit_data, &relays, 4);
        let via: Vec<Option<&str>> = plan
            .iter()
            .map(|p| p.relay.as_ref().map(|r| r.id.as_str()))
            .collect();
        // The exit itself, silent nodes and unusable addresses never relay; when relays run
        // out, the last path goes straight to the exit again.
        assert_eq!(via, [None, Some("b"), Some("c"), None]);
        let addrs: Vec<String> = plan.iter().map(|p| p.addr.to_string()).collect();
        assert_eq!(
            addrs,
            [
                "127.0.0.1:10",
                "127.0.0.1:11",
                "127.0.0.1:12",
                "127.0.0.1:10"
            ]
        );
        // One path, or no relay at all: straight to the exit.
        assert_eq!(plan_paths(&exit.node, exit_data, &relays, 1).len(), 1);
        let alone = plan_paths(&exit.node, exit_data, &[], 2);
        assert!(
            alone
                .iter()
                .all(|p| p.relay.is_none() && p.addr == exit_data)
        );
    }

    #[test]
    fn hysteresis() {
        // 10 ms absolute always switches.
        assert!(clearly_better(ms(100), ms(90)));
        assert!(!clearly_better(ms(100), ms(91)));
        // A third of a small RTT switches too...
        assert!(clearly_better(ms(15), ms(9)));
        assert!(!clearly_better(ms(15), ms(11)));
        // ...but not when the gain is below the noise floor.
        assert!(!clearly_better(Some(Duration::from_micros(900)), ms(0)));
        // Worse or equal never switches; unknown current always does; unknown new never.
        assert!(!clearly_better(ms(20), ms(30)));
        assert!(!clearly_better(ms(20), ms(20)));
        assert!(clearly_better(None, ms(50)));
        assert!(!clearly_better(ms(50), None));
    }

    #[test]
    fn ranking_puts_silent_and_lossy_nodes_last() {
        let ranked = rank(vec![
            cand("silent", 4, &[]),
            cand("far", 4, &[40, 41, 40, 40]),
            cand("lossy", 4, &[20, 20]),
            cand("near", 4, &[20, 21, 20, 20]),
        ]);
        let ids: Vec<&str> = ranked.iter().map(|c| c.node.id.as_str()).collect();
        assert_eq!(ids, ["near", "far", "lossy", "silent"]);
    }

    fn leg(ms: u64) -> Leg {
        Leg::of(Duration::from_millis(ms))
    }

    fn measured(
        direct: Option<u64>,
        to_node: &[(&str, u64)],
        to_game: &[(&str, u64)],
        mesh: &[(&str, &str, u64)],
    ) -> Measurements {
        Measurements {
            direct: direct.map(leg),
            to_node: to_node
                .iter()
                .map(|(n, v)| (n.to_string(), leg(*v)))
                .collect(),
            to_game: to_game
                .iter()
                .map(|(n, v)| (n.to_string(), leg(*v)))
                .collect(),
            mesh: mesh
                .iter()
                .map(|(a, b, v)| ((a.to_string(), b.to_string()), leg(*v)))
                .collect(),
        }
    }

    #[test]
    fn legs_add_rtt_and_compound_loss() {
        let a = Leg {
            rtt: Duration::from_millis(10),
            jitter: Duration::from_millis(1),
            loss: 0.1,
        };
        let b = Leg {
            rtt: Duration::from_millis(20),
            jitter: Duration::from_millis(2),
            loss: 0.1,
        };
        let ab = a.then(b);
        assert_eq!(ab.rtt, Duration::from_millis(30));
        assert_eq!(ab.jitter, Duration::from_millis(3));
        assert!((ab.loss - 0.19).abs() < 1e-9);
        // 2 ms per percent: 19 % adds 38 ms.
        assert_eq!(ab.cost(), Duration::from_millis(68));
        assert_eq!(leg(5).cost(), Duration::from_millis(5));
    }

    #[test]
    fn the_nearest_node_is_not_always_the_best_exit() {
        // Direct 95 ms; the nearest node is 8 ms away but 90 ms from the server; another
        // is 25 ms + 30 ms.
        let m = measured(
            Some(95),
            &[("near", 8), ("far", 25)],
            &[("near", 90), ("far", 30)],
            &[],
        );
        let plan = choose(&m, None).unwrap();
        assert_eq!(plan.exit, "far");
        assert_eq!(plan.backups, ["near"]);
        assert_eq!(plan.expected.unwrap().rtt, Duration::from_millis(55));
        assert!((plan.reduction().unwrap() - 40.0 / 95.0).abs() < 1e-9);
        assert_eq!(plan.summary(), "direct 95 ms → via far 55 ms (−42 %)");
    }

    #[test]
    fn a_mesh_hop_can_beat_going_straight_to_the_exit() {
        // The client reaches `b` badly (60 ms) but `a` well (8 ms), and a→b is 10 ms.
        let m = measured(
            Some(100),
            &[("a", 8), ("b", 60)],
            &[("a", 80), ("b", 20)],
            &[("a", "b", 10), ("b", "a", 10)],
        );
        let plan = choose(&m, None).unwrap();
        assert_eq!(plan.exit, "b");
        let routes: Vec<String> = plan.routes.iter().map(RouteOption::label).collect();
        assert_eq!(routes, ["b via a", "b"]);
        assert_eq!(plan.expected.unwrap().rtt, Duration::from_millis(38));
        assert!(
            plan.summary()
                .starts_with("direct 100 ms → via b via a 38 ms"),
            "{}",
            plan.summary()
        );
        // Without the mesh figure there is no such route.
        let m = measured(
            Some(100),
            &[("a", 8), ("b", 60)],
            &[("a", 80), ("b", 20)],
            &[],
        );
        assert_eq!(
            choose(&m, None).unwrap().expected.unwrap().rtt,
            Duration::from_millis(80)
        );
    }

    #[test]
    fn direct_is_said_to_be_better_when_it_is() {
        let m = measured(Some(20), &[("a", 6)], &[("a", 25)], &[]);
        let plan = choose(&m, None).unwrap();
        assert!(plan.direct_is_better());
        assert!(plan.reduction().unwrap() < 0.0);
        assert_eq!(
            plan.summary(),
            "direct 20 ms is better than any route (best: via a 31 ms) — acceleration would not lower the ping"
        );
        // Loss counts: a 2 % lossy direct path (cost 24 ms) loses to a clean 22 ms route.
        let mut m = measured(Some(20), &[("a", 6)], &[("a", 16)], &[]);
        m.direct.as_mut().unwrap().loss = 0.02;
        assert!(!choose(&m, None).unwrap().direct_is_better());
        // A route slower than direct but clean wins on loss, and the line says so.
        let mut m = measured(Some(40), &[("a", 10)], &[("a", 34)], &[]);
        m.direct.as_mut().unwrap().loss = 0.05;
        assert_eq!(
            choose(&m, None).unwrap().summary(),
            "direct 40 ms (5 % loss) → via a 44 ms (0 % loss): +10 % ping for less loss"
        );
    }

    #[test]
    fn the_current_exit_stays_unless_another_is_clearly_better() {
        let m = measured(None, &[("a", 10), ("b", 10)], &[("a", 40), ("b", 45)], &[]);
        assert_eq!(choose(&m, None).unwrap().exit, "a");
        // 5 ms better on 55: kept.
        assert_eq!(choose(&m, Some("b")).unwrap().exit, "b");
        // 15 ms better: moved.
        let m = measured(None, &[("a", 10), ("b", 10)], &[("a", 30), ("b", 45)], &[]);
        assert_eq!(choose(&m, Some("b")).unwrap().exit, "a");
        // An exit that vanished from the measurements is not kept.
        assert_eq!(choose(&m, Some("gone")).unwrap().exit, "a");
    }

    #[test]
    fn unmeasured_exits_are_assumed_no_closer_than_the_client() {
        // `x` has no exit→game figure: assumed 5 + 50 = 55 ms, beaten by a measured 45 ms.
        let m = measured(Some(50), &[("x", 5), ("y", 15)], &[("y", 30)], &[]);
        let plan = choose(&m, None).unwrap();
        assert_eq!(plan.exit, "y");
        assert_eq!(plan.summary(), "direct 50 ms → via y 45 ms (−10 %)");
        // With nothing measured and no direct figure: by the client→node leg, and the line
        // says what is missing.
        let m = measured(None, &[("x", 5), ("y", 15)], &[], &[]);
        let plan = choose(&m, None).unwrap();
        assert_eq!((plan.exit.as_str(), plan.expected), ("x", None));
        assert!(
            plan.summary().contains("not measured yet"),
            "{}",
            plan.summary()
        );
        // A measured exit ranks before unknown ones when there is no direct figure.
        let m = measured(None, &[("x", 5), ("y", 15)], &[("y", 300)], &[]);
        assert_eq!(choose(&m, None).unwrap().exit, "y");
        assert!(choose(&Measurements::default(), None).is_none());
    }

    #[test]
    fn billing_figures_become_legs() {
        let mut n = cand("a", 4, &[10; 4]).node;
        let t = |target: &str, rtt_ms: u64| TargetRtt {
            target: target.into(),
            leg: LegRtt {
                rtt_us: rtt_ms * 1000,
                jitter_us: 0,
                loss_permille: 0,
            },
            age_secs: 1,
        };
        n.game_rtt = vec![t("203.0.113.0/24", 30), t("198.51.100.0/24", 12)];
        n.mesh_rtt.insert(
            "b".into(),
            LegRtt {
                rtt_us: 7000,
                jitter_us: 0,
                loss_permille: 50,
            },
        );
        let server: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(game_leg(&n, Some(server)), Some(leg(30)));
        assert_eq!(game_leg(&n, Some("192.0.2.1".parse().unwrap())), None);
        // Server not known yet: the nearest group.
        assert_eq!(game_leg(&n, None), Some(leg(12)));
        let mut b = cand("b", 4, &[20; 4]);
        b.node.game_rtt = vec![t("203.0.113.0/24", 10)];
        let ranked = vec![
            Candidate {
                node: n,
                probe: cand("a", 4, &[10; 4]).probe,
            },
            b,
        ];
        let m = measurements(&ranked, None, Some(server));
        assert_eq!(m.to_node.len(), 2);
        assert_eq!(m.to_game["b"], leg(10));
        let hop = m.mesh[&("a".to_string(), "b".to_string())];
        assert_eq!((hop.rtt, hop.loss), (Duration::from_millis(7), 0.05));
        // a (10) → b (7, 5 % loss) → game (10): 27 ms + 10 ms penalty = 37; b direct: 30.
        let plan = choose(&m, None).unwrap();
        assert_eq!(plan.exit, "b");
        assert_eq!(plan.routes[0].entry, "b");
    }

    #[test]
    fn paths_follow_the_plan_then_add_diversity() {
        let node = |id: &str, data: &str| {
            let mut c = cand(id, 4, &[10; 4]);
            c.node.data_addr = data.into();
            c.node
        };
        let (a, b, c) = (
            node("a", "127.0.0.1:10"),
            node("b", "127.0.0.1:11"),
            node("c", "127.0.0.1:12"),
        );
        let b_data: SocketAddr = "127.0.0.1:11".parse().unwrap();
        // The best route to exit b enters at a (mesh hop); then straight to b.
        let m = measured(
            Some(100),
            &[("a", 8), ("b", 60), ("c", 70)],
            &[("a", 80), ("b", 20)],
            &[("a", "b", 10)],
        );
        let plan = choose(&m, None).unwrap();
        assert_eq!(plan.exit, "b");
        let nodes = [a.clone(), b.clone(), c.clone()];
        let via = |paths: &[PlannedPath]| -> Vec<Option<String>> {
            paths
                .iter()
                .map(|p| p.relay.as_ref().map(|r| r.id.clone()))
                .collect()
        };
        let paths = plan_route_paths(&plan, b_data, &nodes, 3);
        assert_eq!(via(&paths), [Some("a".into()), None, Some("c".into())]);
        assert_eq!(paths[1].addr, b_data);
        // One path: the best route only. More paths than nodes: straight to the exit again.
        assert_eq!(
            via(&plan_route_paths(&plan, b_data, &nodes, 1)),
            [Some("a".into())]
        );
        assert_eq!(
            via(&plan_route_paths(&plan, b_data, &nodes, 4)),
            [Some("a".into()), None, Some("c".into()), None]
        );
        // A pinned exit gets its own plan; an unknown one none.
        assert_eq!(choose_exit(&m, "a").unwrap().exit, "a");
        assert_eq!(choose_exit(&m, "a").unwrap().backups, ["b", "c"]);
        assert!(choose_exit(&m, "zzz").is_none());
    }
}
