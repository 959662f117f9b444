//! A parsed, immutable snapshot of the mesh as one node sees it.
//!
//! Built from chitchat's cluster state after each change; readers share it as
//! `Arc<MeshView>` without touching chitchat's lock. A node id may appear under several
//! generations (restarts): the newest live one is the node; records of older or dead
//! generations are still read for session failover until chitchat forgets them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chitchat::ChitchatId;

use crate::node::{KEY_INFO, KEY_LOAD, KEY_STATUS, Load, NodeId, NodeInfo, NodeView, Status};
use crate::rtt::{self, RttSummary};
use crate::selection::Candidate;
use crate::session::{self, SessionRecord, SessionRoute};

/// One chitchat node state, as input to [`MeshView::build`].
#[derive(Debug)]
pub(crate) struct NodeEntry<'a, I> {
    pub id: &'a ChitchatId,
    pub alive: bool,
    pub key_values: I,
}

/// One node state, decoded.
struct Parsed {
    id: NodeId,
    generation: u64,
    alive: bool,
    addr: std::net::SocketAddr,
    info: Option<NodeInfo>,
    load: Load,
    status: Status,
    peers: BTreeMap<NodeId, RttSummary>,
    targets: BTreeMap<String, RttSummary>,
    sessions: Vec<SessionRecord>,
}

/// A change in membership between two views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// A node became live.
    Joined(NodeId),
    /// A node is no longer live (failed, partitioned or left).
    Left(NodeId),
    /// A live node came back under a new generation.
    Restarted(NodeId),
    /// A live node's published info, load or status changed.
    Updated(NodeId),
}

/// Snapshot of the mesh; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct MeshView {
    self_id: Option<NodeId>,
    nodes: BTreeMap<NodeId, NodeView>,
    dead: BTreeSet<NodeId>,
    peer_rtts: HashMap<NodeId, BTreeMap<NodeId, RttSummary>>,
    target_rtts: HashMap<NodeId, BTreeMap<String, RttSummary>>,
    sessions: HashMap<u64, SessionRoute>,
}

impl MeshView {
    pub(crate) fn build<'a, I>(
        self_id: &NodeId,
        entries: impl IntoIterator<Item = NodeEntry<'a, I>>,
    ) -> Self
    where
        I: Iterator<Item = (&'a str, &'a str)>,
    {
        let mut view = MeshView {
            self_id: Some(self_id.clone()),
            ..Default::default()
        };
        // Newest live generation per node id (`None`: no live generation).
        let mut newest: HashMap<NodeId, Option<u64>> = HashMap::new();
        let mut parsed = Vec::new();
        for entry in entries {
            let Ok(id) = entry.id.node_id.parse::<NodeId>() else {
                continue;
            };
            let generation = entry.id.generation_id;
            let slot = newest.entry(id.clone()).or_insert(None);
            if entry.alive && slot.is_none_or(|g| generation > g) {
                *slot = Some(generation);
            }
            let mut info = None;
            let mut load = Load::default();
            let mut status = Status::default();
            let mut peers = BTreeMap::new();
            let mut targets = BTreeMap::new();
            let mut sessions = Vec::new();
            for (key, value) in entry.key_values {
                if key == KEY_INFO {
                    info = NodeInfo::decode(value).ok();
                } else if key == KEY_LOAD {
                    load = Load::decode(value).unwrap_or_default();
                } else if key == KEY_STATUS {
                    status = Status::decode(value).unwrap_or_default();
                } else if let Some(peer) = key.strip_prefix(rtt::PREFIX_PEER) {
                    if let (Ok(peer), Ok(s)) = (peer.parse(), RttSummary::decode(value)) {
                        peers.insert(peer, s);
                    }
                } else if let Some(target) = key.strip_prefix(rtt::PREFIX_TARGET) {
                    if let Ok(s) = RttSummary::decode(value) {
                        targets.insert(target.to_owned(), s);
                    }
                } else if key.starts_with(session::PREFIX)
                    && let Some(sid) = SessionRecord::parse_key(key)
                    && let Ok(rec) = SessionRecord::decode(sid, value)
                {
                    sessions.push(rec);
                }
            }
            parsed.push(Parsed {
                id,
                generation,
                alive: entry.alive,
                addr: entry.id.gossip_advertise_addr,
                info,
                load,
                status,
                peers,
                targets,
                sessions,
            });
        }
        for Parsed {
            id,
            generation,
            alive,
            addr,
            info,
            load,
            status,
            peers,
            targets,
            sessions,
        } in parsed
        {
            let current = alive && newest.get(&id) == Some(&Some(generation));
            let exit_alive = current;
            for record in sessions {
                let route = SessionRoute {
                    record,
                    exit: id.clone(),
                    exit_alive,
                };
                match view.sessions.get(&route.record.session_id) {
                    Some(old) if !old.superseded_by(&route) => {}
                    _ => {
                        view.sessions.insert(route.record.session_id, route);
                    }
                }
            }
            if !current {
                continue;
            }
            // A node that has not yet gossiped its info is not usable yet.
            let Some(info) = info else { continue };
            view.peer_rtts.insert(id.clone(), peers);
            view.target_rtts.insert(id.clone(), targets);
            view.nodes.insert(
                id.clone(),
                NodeView {
                    id,
                    generation,
                    gossip_addr: addr,
                    info,
                    load,
                    health: status.health,
                    draining: status.draining,
                },
            );
        }
        view.dead = newest
            .into_iter()
            .filter(|(_, live)| live.is_none())
            .map(|(id, _)| id)
            .collect();
        view
    }

    /// This node's id (`None` only for an empty default view).
    pub fn self_id(&self) -> Option<&NodeId> {
        self.self_id.as_ref()
    }

    /// Live nodes with complete info, including this one, ordered by id.
    pub fn live_nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.values()
    }

    /// A live node.
    pub fn node(&self, id: &NodeId) -> Option<&NodeView> {
        self.nodes.get(id)
    }

    /// Whether `id` is live.
    pub fn is_alive(&self, id: &NodeId) -> bool {
        self.nodes.contains_key(id)
    }

    /// Nodes known but currently considered dead (until chitchat forgets them).
    pub fn dead_nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.dead.iter()
    }

    /// RTT that live node `from` measured to `to` and published.
    pub fn published_rtt(&self, from: &NodeId, to: &NodeId) -> Option<RttSummary> {
        self.peer_rtts.get(from)?.get(to).copied()
    }

    /// RTT that live node `node` measured to game target `target` and published.
    pub fn target_rtt(&self, node: &NodeId, target: &str) -> Option<RttSummary> {
        self.target_rtts.get(node)?.get(target).copied()
    }

    /// Every target key live node `node` published, with its RTT, ordered by key.
    pub fn target_rtts(&self, node: &NodeId) -> impl Iterator<Item = (&str, RttSummary)> {
        self.target_rtts
            .get(node)
            .into_iter()
            .flatten()
            .map(|(k, s)| (k.as_str(), *s))
    }

    /// Every peer live node `node` published an RTT to, ordered by id.
    pub fn peer_rtts(&self, node: &NodeId) -> impl Iterator<Item = (&NodeId, RttSummary)> {
        self.peer_rtts
            .get(node)
            .into_iter()
            .flatten()
            .map(|(k, s)| (k, *s))
    }

    /// Where session `id` lives.
    pub fn session(&self, id: u64) -> Option<&SessionRoute> {
        self.sessions.get(&id)
    }

    /// Every known session.
    pub fn sessions(&self) -> impl Iterator<Item = &SessionRoute> {
        self.sessions.values()
    }

    /// Sessions whose exit is dead and whose designated backup is this node: the ones to
    /// adopt (see [`crate::MeshHandle::adopt_session`]).
    pub fn orphaned_sessions(&self) -> Vec<SessionRoute> {
        let Some(me) = &self.self_id else {
            return Vec::new();
        };
        let mut v: Vec<SessionRoute> = self
            .sessions
            .values()
            .filter(|r| !r.exit_alive && r.record.backup.as_ref() == Some(me))
            .cloned()
            .collect();
        v.sort_by_key(|r| r.record.session_id);
        v
    }

    /// Every live node as an exit candidate for `target`, with the node→target RTT it
    /// published as the route estimate (callers add their client→node leg to `rtt` before
    /// [`crate::select_exits`] when they know it).
    pub fn exit_candidates(&self, target: &str) -> Vec<Candidate> {
        self.nodes
            .values()
            .map(|n| Candidate {
                node: n.id.clone(),
                region: n.info.region.clone(),
                provider: n.info.provider.clone(),
                rtt: self
                    .target_rtt(&n.id, target)
                    .and_then(|s| s.cost())
                    .map(|c| c.max(Duration::from_micros(1))),
                load: n.load.utilisation(n.info.capacity),
                health: n.health,
                draining: n.draining,
            })
            .collect()
    }

    /// What changed from `old` to `self`.
    pub fn diff(&self, old: &MeshView) -> Vec<MembershipChange> {
        let mut out = Vec::new();
        for (id, new) in &self.nodes {
            match old.nodes.get(id) {
                None => out.push(MembershipChange::Joined(id.clone())),
                Some(prev) if prev.generation != new.generation => {
                    out.push(MembershipChange::Restarted(id.clone()))
                }
                Some(prev) if prev != new => out.push(MembershipChange::Updated(id.clone())),
                Some(_) => {}
            }
        }
        for id in old.nodes.keys() {
            if !self.nodes.contains_key(id) {
                out.push(MembershipChange::Left(id.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(node: &str, generation: u64, port: u16) -> ChitchatId {
        ChitchatId::new(node.to_owned(), generation, ([127, 0, 0, 1], port).into())
    }

    fn info(region: &str) -> String {
        NodeInfo {
            region: region.into(),
            provider: String::new(),
            data_addr: "127.0.0.1:1".parse().unwrap(),
            control_addr: "127.0.0.1:2".parse().unwrap(),
            version: "0".into(),
            capacity: 100,
        }
        .encode()
    }

    type Entry = (ChitchatId, bool, Vec<(String, String)>);

    fn build(entries: &[Entry]) -> MeshView {
        let me: NodeId = "me".parse().unwrap();
        MeshView::build(
            &me,
            entries.iter().map(|(id, alive, kvs)| NodeEntry {
                id,
                alive: *alive,
                key_values: kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            }),
        )
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn newest_generation_wins_and_incomplete_nodes_are_hidden() {
        let v = build(&[
            (cid("me", 1, 1), true, vec![kv("n", &info("eu"))]),
            (cid("a", 1, 2), false, vec![kv("n", &info("eu"))]),
            (cid("a", 2, 2), true, vec![kv("n", &info("us"))]),
            (cid("b", 1, 3), true, vec![]),
            (cid("c", 5, 4), false, vec![kv("n", &info("eu"))]),
        ]);
        let ids: Vec<&str> = v.live_nodes().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "me"]);
        assert_eq!(v.node(&"a".parse().unwrap()).unwrap().info.region, "us");
        let dead: Vec<&str> = v.dead_nodes().map(NodeId::as_str).collect();
        assert_eq!(dead, ["c"]);
    }

    #[test]
    fn sessions_of_dead_exits_are_orphaned_for_their_backup() {
        let rec = |epoch, backup: &str| format!("1 {epoch} 2 {backup}");
        let v = build(&[
            (cid("me", 1, 1), true, vec![kv("n", &info("eu"))]),
            (
                cid("x", 1, 2),
                false,
                vec![
                    kv("n", &info("eu")),
                    kv("s:0000000000000001", &rec(0, "me")),
                    kv("s:0000000000000002", &rec(0, "y")),
                    kv("s:0000000000000003", &rec(0, "me")),
                ],
            ),
            (
                cid("z", 1, 3),
                true,
                // z already adopted session 3.
                vec![
                    kv("n", &info("eu")),
                    kv("s:0000000000000003", &rec(1, "me")),
                ],
            ),
        ]);
        let orphans: Vec<u64> = v
            .orphaned_sessions()
            .iter()
            .map(|r| r.record.session_id)
            .collect();
        assert_eq!(orphans, [1]);
        let s3 = v.session(3).unwrap();
        assert_eq!((s3.exit.as_str(), s3.exit_alive), ("z", true));
    }

    #[test]
    fn diff_reports_joins_leaves_restarts_and_updates() {
        let old = build(&[
            (cid("me", 1, 1), true, vec![kv("n", &info("eu"))]),
            (cid("a", 1, 2), true, vec![kv("n", &info("eu"))]),
            (cid("b", 1, 3), true, vec![kv("n", &info("eu"))]),
        ]);
        let new = build(&[
            (
                cid("me", 1, 1),
                true,
                vec![kv("n", &info("eu")), kv("h", "1 0 1")],
            ),
            (cid("a", 2, 2), true, vec![kv("n", &info("eu"))]),
            (cid("c", 1, 4), true, vec![kv("n", &info("eu"))]),
        ]);
        let d = new.diff(&old);
        let id = |s: &str| s.parse::<NodeId>().unwrap();
        assert!(d.contains(&MembershipChange::Restarted(id("a"))));
        assert!(d.contains(&MembershipChange::Joined(id("c"))));
        assert!(d.contains(&MembershipChange::Left(id("b"))));
        assert!(d.contains(&MembershipChange::Updated(id("me"))));
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn exit_candidates_carry_target_rtt_and_load() {
        let v = build(&[
            (
                cid("me", 1, 1),
                true,
                vec![
                    kv("n", &info("eu")),
                    kv(
                        "g:cs2-eu",
                        &RttSummary::from_rtt(Duration::from_millis(12)).encode(),
                    ),
                    kv("l", "1 50 0 10"),
                ],
            ),
            (cid("a", 1, 2), true, vec![kv("n", &info("us"))]),
        ]);
        let c = v.exit_candidates("cs2-eu");
        assert_eq!(c.len(), 2);
        let me = c.iter().find(|c| c.node.as_str() == "me").unwrap();
        assert_eq!(me.rtt, Some(Duration::from_millis(12)));
        assert_eq!(me.load, 0.5);
        assert_eq!(c.iter().find(|c| c.node.as_str() == "a").unwrap().rtt, None);
    }
}
