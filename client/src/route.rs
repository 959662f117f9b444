//! Route selection: probe the candidate nodes billing offers, order them best first, keep
//! the current one unless another is clearly better, and say when the direct path already
//! beats every node.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::billing::NodeInfo;
use crate::probe::{self, Probe};

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

/// What to tell the user about direct vs accelerated, given a direct probe of the game server
/// (if it answers) and the best node's probe. The node's own distance to the game server
/// comes on top of the node probe, so when the direct path already beats the ride to the node
/// alone (by the switch margin), acceleration cannot lower the ping.
pub fn advice(direct: Option<&Probe>, best_node: Option<&Candidate>) -> String {
    let node = best_node.and_then(|c| c.probe.score().map(|s| (c, s)));
    let direct_score = direct.and_then(Probe::score);
    match (direct_score, node) {
        (_, None) => "no relay node answered: acceleration is not available right now".into(),
        (None, Some((c, _))) => format!(
            "best node: {} ({} ms to the node); the game server does not answer probes, so the direct ping is unknown",
            c.node.id,
            probe::ms(c.probe.median())
        ),
        (Some(d), Some((c, n))) if clearly_better(Some(n), Some(d)) => format!(
            "direct is clearly better: the game server is {} ms away directly, node {} alone is {} ms away — acceleration would not help on this network",
            probe::ms(direct.and_then(Probe::median)),
            c.node.id,
            probe::ms(c.probe.median())
        ),
        (Some(_), Some((c, _))) => format!(
            "best node: {} ({} ms to the node; direct to the game server {} ms)",
            c.node.id,
            probe::ms(c.probe.median()),
            probe::ms(direct.and_then(Probe::median))
        ),
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

    #[test]
    fn advice_says_when_direct_is_better() {
        let direct = Probe {
            sent: 4,
            rtts: vec![Duration::from_millis(5); 4],
        };
        let near = cand("n1", 4, &[30; 4]);
        let text = advice(Some(&direct), Some(&near));
        assert!(text.contains("direct is clearly better"), "{text}");
        let far_direct = Probe {
            sent: 4,
            rtts: vec![Duration::from_millis(80); 4],
        };
        let text = advice(Some(&far_direct), Some(&near));
        assert!(text.contains("best node: n1"), "{text}");
        let text = advice(None, Some(&near));
        assert!(text.contains("direct ping is unknown"), "{text}");
        let text = advice(None, Some(&cand("x", 4, &[])));
        assert!(text.contains("no relay node answered"), "{text}");
    }
}
