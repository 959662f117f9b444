//! Scenarios in virtual time: the same scenario file, the same reports, but the client's and
//! the nodes' sans-IO cores and the links run on [`VirtualNet`]'s simulated clock with no
//! sockets. Bit-exact for a seed (the report JSON is byte-for-byte the same on every run) and
//! far faster than real time; the real-socket [`crate::runner::Harness`] stays for
//! end-to-end truth.

use std::time::Duration;

use plg_client::Protection;
use plg_client::conn::{ConnConfig, ProxyEvent};

use crate::client::redundancy;
use crate::link::{DirectionConfig, LinkReport};
use crate::report::{self, DirectReport, FailoverInfo, PolicyReport, PolicyStatus, RunReport};
use crate::scenario::{Direction, Policy, Scenario, Side};
use crate::virtual_net::{CrossTraffic, GameMode, LinkSpec, NetConfig, PathPlan, VirtualNet};

/// Where links would forward to in the real harness; virtual links have no address.
const NOWHERE: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

fn link_spec(s: &Scenario, i: usize, seed: u64) -> LinkSpec {
    let c = s.link_config(i, NOWHERE, seed);
    LinkSpec {
        up: c.up,
        down: c.down,
    }
}

fn segment_index(s: &Scenario, name: &str) -> usize {
    s.segments
        .iter()
        .position(|g| g.name == name)
        .expect("validated: segment names resolve")
}

/// The virtual network that plays `s` with `seed` under `policy` (`None`: the direct route,
/// no PLG).
pub fn net_config(s: &Scenario, seed: u64, policy: Option<Policy>) -> NetConfig {
    let plan = |i: usize| PathPlan {
        relay: s.paths[i].via.first().copied(),
        link: link_spec(s, i, seed),
        segments: s.paths[i]
            .segments
            .iter()
            .map(|n| segment_index(s, n))
            .collect(),
    };
    let paths = s.session_paths().into_iter().map(plan).collect();
    let backups = (0..s.topology.nodes)
        .map(|k| s.backup_path(k).map(plan))
        .collect();
    // Segments draw from streams of their own, apart from every path's.
    let segments = s
        .segments
        .iter()
        .enumerate()
        .map(|(i, g)| LinkSpec {
            up: DirectionConfig {
                impairment: g.up(),
                seed: crate::link::derive_seed(seed, 0x5E6_0000 + 2 * i as u64),
                schedule: vec![],
            },
            down: DirectionConfig {
                impairment: g.down(),
                seed: crate::link::derive_seed(seed, 0x5E6_0000 + 2 * i as u64 + 1),
                schedule: vec![],
            },
        })
        .collect();
    let game_side = (0..s.segments.len())
        .filter(|&i| s.segments[i].side == Side::Game)
        .collect();
    let cross = s
        .cross
        .iter()
        .map(|c| CrossTraffic {
            segment: segment_index(s, &c.segment),
            up: matches!(c.direction, Direction::Up | Direction::Both),
            down: matches!(c.direction, Direction::Down | Direction::Both),
            rate_kbps: c.rate_kbps,
            size: c.size,
        })
        .collect();
    let conn = ConnConfig {
        policy: redundancy(policy.unwrap_or(Policy::Single)),
        // As in the real harness: protected mode would bypass the links.
        protection: Protection::Never,
        failover_after: (s.topology.nodes > 1)
            .then(|| Duration::from_secs_f64(s.topology.failover_after)),
        ..ConnConfig::default()
    };
    NetConfig {
        nodes: s.topology.nodes,
        relays: vec![],
        impairment: s.paths[s.session_paths()[0]].up(),
        paths,
        backups,
        segments,
        game_side,
        cross,
        sessions: s.topology.sessions,
        // The real harness's nodes reach the game server over loopback.
        game_delay: Duration::ZERO,
        game: GameMode::Ticks(s.tick_spec(seed)),
        direct: policy.is_none(),
        conn,
        seed,
        ..NetConfig::default()
    }
}

fn build(s: &Scenario, seed: u64, policy: Option<Policy>) -> VirtualNet {
    let mut net = VirtualNet::new(net_config(s, seed, policy));
    for e in &s.events {
        match e {
            crate::scenario::Event::KillNode { node, at } => {
                net.schedule_node(Duration::from_secs_f64(*at), *node, true)
            }
            crate::scenario::Event::RestartNode { node, at } => {
                net.schedule_node(Duration::from_secs_f64(*at), *node, false)
            }
            _ => {}
        }
    }
    net
}

/// The links of session 0 in the scenario's path order (paths to backup nodes: their
/// failover route).
fn link_reports(s: &Scenario, net: &VirtualNet) -> Vec<LinkReport> {
    let session = s.session_paths();
    (0..s.paths.len())
        .map(|i| match session.iter().position(|&j| j == i) {
            Some(p) => net.path_report(0, p),
            None => net.backup_report(0, s.paths[i].node).unwrap_or_default(),
        })
        .collect()
}

/// Runs one policy in virtual time. Never fails: a failed run is reported as such.
pub fn run_policy(s: &Scenario, seed: u64, policy: Policy) -> PolicyReport {
    if let Err(u) = crate::client::availability(policy, s.session_paths().len()) {
        return PolicyReport::without_numbers(policy, PolicyStatus::Unavailable { reason: u.0 });
    }
    let mut net = build(s, seed, Some(policy));
    let traces = match net.play() {
        Ok(t) => t,
        Err(error) => {
            return PolicyReport::without_numbers(policy, PolicyStatus::Failed { error });
        }
    };
    let implementation = format!(
        "plg_client::conn::ClientConn in virtual time, {} path(s), policy {policy:?}",
        s.session_paths().len()
    );
    let mut r = report::measured(policy, implementation, &traces[0], link_reports(s, &net));
    for (at, e) in &net.sessions[0].events {
        let at_s = net.scenario_secs(*at);
        match e {
            ProxyEvent::Failover { to, gap } => r.failovers.push(FailoverInfo {
                at_s,
                node: to.strip_prefix('n').and_then(|n| n.parse().ok()),
                node_id: to.clone(),
                gap_ms: gap.as_secs_f64() * 1000.0,
            }),
            ProxyEvent::NodeLost { .. } => r.node_lost.push(at_s),
            _ => {}
        }
    }
    r.sessions = traces[1..].iter().map(report::session_summary).collect();
    r.segments = (0..s.segments.len())
        .map(|i| report::SegmentReport {
            name: s.segments[i].name.clone(),
            link: net.segment_report(i),
        })
        .collect();
    r
}

/// The game without PLG in virtual time: path 0's link (and its segments, and the game
/// side) between the game client and its server.
pub fn run_direct(s: &Scenario, seed: u64) -> Result<DirectReport, String> {
    let mut net = build(s, seed, None);
    let traces = net.play()?;
    Ok(report::direct(&traces[0], net.path_report(0, 0)))
}

/// Every policy of `s`, in virtual time.
pub fn run_scenario(s: &Scenario, seed: u64) -> RunReport {
    let mut r = RunReport::for_scenario(s, seed);
    for &policy in &s.policies {
        r.policies.push(run_policy(s, seed, policy));
    }
    r
}
