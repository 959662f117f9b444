//! The tokio driver: runs chitchat over the sealed transport, publishes this node's state
//! and keeps an up-to-date [`MeshView`].
//!
//! Local writes (`set_load`, `publish_session`, probes…) go into a small local state
//! under a mutex that is never held across an await; a background task flushes them into
//! chitchat and rebuilds the view whenever chitchat reports a change, a local write
//! happens, or the publish interval ticks.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::node::{
    Health, InvalidValue, KEY_INFO, KEY_LOAD, KEY_STATUS, Load, NodeId, NodeInfo, NodeView, Status,
    check_token,
};
use crate::rtt::{self, RttConfig, RttMatrix, RttSummary};
use crate::seal::GossipKey;
use crate::session::{SessionRecord, SessionRoute};
use crate::targets::{MAX_GOSSIPED_TARGETS, MAX_REPORTED_TARGETS, TargetRtts};
use crate::transport::{GossipCounters, GossipNetwork, GossipStats, GossipTransport};
use crate::view::{MeshView, NodeEntry};

/// Everything needed to start a mesh member.
#[derive(Debug)]
pub struct MeshConfig {
    /// This node's stable id.
    pub node_id: NodeId,
    /// Static facts to publish.
    pub info: NodeInfo,
    /// Mesh gossip key (from billing's mesh bundle).
    pub gossip_key: GossipKey,
    /// Chitchat cluster id: nodes with another id ignore us.
    pub cluster_id: String,
    /// Gossip UDP bind address; port 0 picks one.
    pub listen_addr: SocketAddr,
    /// UDP (default), or an in-memory network for tests and simulations; also decides the
    /// wall clock that stamps gossip.
    pub network: GossipNetwork,
    /// Address peers should gossip to, if not the bound one (e.g. behind NAT or bound to
    /// 0.0.0.0).
    pub advertise_addr: Option<SocketAddr>,
    /// Gossip addresses (`ip:port` or `host:port`) of nodes to join through.
    pub seeds: Vec<String>,
    /// Incarnation number; must grow across restarts. Default: Unix milliseconds at start.
    pub generation: Option<u64>,
    /// Gossip round period.
    pub gossip_interval: Duration,
    /// Failure detector threshold: a node is dead after about `phi_threshold` times its
    /// mean heartbeat interval without news.
    pub phi_threshold: f64,
    /// Dead nodes' state is kept this long (sessions can be adopted meanwhile).
    pub dead_node_grace_period: Duration,
    /// Deleted keys (ended sessions) are remembered this long.
    pub deletion_grace_period: Duration,
    /// Datagrams timestamped further than this from our clock are refused.
    pub max_clock_skew: Duration,
    /// How often RTT estimates are considered for republication.
    pub publish_interval: Duration,
    /// RTT estimator tuning.
    pub rtt: RttConfig,
}

impl MeshConfig {
    /// Defaults tuned for a relay mesh: 200 ms gossip, phi threshold 7, so a killed node
    /// is seen dead by every peer in about 1.2–1.9 s (see `docs/mesh.md`).
    pub fn new(
        node_id: NodeId,
        info: NodeInfo,
        gossip_key: GossipKey,
        listen_addr: SocketAddr,
    ) -> Self {
        MeshConfig {
            node_id,
            info,
            gossip_key,
            cluster_id: "plg".to_owned(),
            listen_addr,
            network: GossipNetwork::Udp,
            advertise_addr: None,
            seeds: Vec::new(),
            generation: None,
            gossip_interval: Duration::from_millis(200),
            phi_threshold: 7.0,
            dead_node_grace_period: Duration::from_secs(600),
            deletion_grace_period: Duration::from_secs(600),
            max_clock_skew: Duration::from_secs(30),
            publish_interval: Duration::from_secs(1),
            rtt: RttConfig::default(),
        }
    }

    fn validate(&self) -> Result<(), StartError> {
        self.info.validate()?;
        check_token("cluster id", &self.cluster_id)?;
        if self.gossip_interval.is_zero() || self.publish_interval.is_zero() {
            return Err(StartError::Config("intervals must be positive"));
        }
        if self.phi_threshold <= 1.0 {
            return Err(StartError::Config("phi_threshold must be above 1"));
        }
        Ok(())
    }
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A published field is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// A setting is out of range.
    #[error("invalid mesh config: {0}")]
    Config(&'static str),
    /// The bound address is unspecified and no advertise address was given.
    #[error("gossip bound to {0}: set advertise_addr so peers can reach this node")]
    NoAdvertiseAddr(SocketAddr),
    /// Binding the gossip socket failed.
    #[error("binding gossip socket {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Chitchat refused to start.
    #[error("starting chitchat: {0}")]
    Chitchat(String),
}

/// Entry point.
#[derive(Debug)]
pub struct Mesh;

impl Mesh {
    /// Binds the gossip socket (on `config.network`), starts chitchat over the sealed
    /// transport and the publisher task.
    pub async fn start(config: MeshConfig) -> Result<MeshHandle, StartError> {
        Self::start_with_transport(config, |t| t).await
    }

    /// Like [`Mesh::start`], with the sealed transport wrapped by `wrap` (fault injection).
    pub async fn start_with_transport<T: Transport>(
        config: MeshConfig,
        wrap: impl FnOnce(GossipTransport) -> T,
    ) -> Result<MeshHandle, StartError> {
        config.validate()?;
        let socket = config
            .network
            .bind(config.listen_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        let local = socket.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen_addr,
            source,
        })?;
        let advertise = config.advertise_addr.unwrap_or(local);
        if advertise.ip().is_unspecified() {
            return Err(StartError::NoAdvertiseAddr(local));
        }
        let generation = config
            .generation
            .unwrap_or_else(|| config.network.clock().now_ms().max(1));
        let chitchat_id = ChitchatId::new(config.node_id.to_string(), generation, advertise);
        let transport = GossipTransport::new(
            config.gossip_key.clone(),
            config.node_id.clone(),
            config.max_clock_skew,
        )
        .on_network(config.network.clone())
        .with_link(socket);
        let stats = transport.stats();
        let transport = wrap(transport);

        let status = Status::default();
        let initial = vec![
            (KEY_INFO.to_owned(), config.info.encode()),
            (KEY_LOAD.to_owned(), Load::default().encode()),
            (KEY_STATUS.to_owned(), status.encode()),
        ];
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: local,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                sampling_window_size: 1_000,
                // A longer silence (e.g. a healed partition) says nothing about the normal
                // heartbeat rate, so it is not sampled.
                max_interval: config.gossip_interval * 10,
                initial_interval: config.gossip_interval,
                dead_node_grace_period: config.dead_node_grace_period,
            },
            marked_for_deletion_grace_period: config.deletion_grace_period,
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let chitchat = chitchat::spawn_chitchat(chitchat_config, initial, &transport)
            .await
            .map_err(|e| StartError::Chitchat(format!("{e:#}")))?;
        info!(node = %config.node_id, gossip = %advertise, generation, "mesh started");

        let shared = Arc::new(Shared {
            node_id: config.node_id.clone(),
            gossip_addr: advertise,
            stats,
            notify: Notify::new(),
            local: Mutex::new(Local {
                load: Load::default(),
                status,
                dirty_load: false,
                dirty_status: false,
                session_ops: Vec::new(),
                sessions: HashMap::new(),
                peer_rtt: RttMatrix::new(config.rtt.clone()),
                targets: TargetRtts::new(config.rtt.clone()),
                published_peer: HashMap::new(),
                published_target: HashMap::new(),
            }),
        });
        let (view_tx, view_rx) = watch::channel(Arc::new(MeshView::default()));
        let (stop_tx, stop_rx) = watch::channel(());
        let task = tokio::spawn(run(
            shared.clone(),
            chitchat.chitchat(),
            view_tx,
            stop_rx,
            config.publish_interval,
        ));
        let handle = MeshHandle {
            shared,
            chitchat,
            view: view_rx,
            task,
            _stop: stop_tx,
        };
        handle.shared.notify.notify_one();
        Ok(handle)
    }
}

enum SessionOp {
    Set(SessionRecord),
    Delete(u64),
}

struct Local {
    load: Load,
    status: Status,
    dirty_load: bool,
    dirty_status: bool,
    session_ops: Vec<SessionOp>,
    sessions: HashMap<u64, SessionRecord>,
    peer_rtt: RttMatrix<NodeId>,
    targets: TargetRtts,
    published_peer: HashMap<NodeId, RttSummary>,
    published_target: HashMap<String, RttSummary>,
}

/// Key writes computed under the local lock, applied under chitchat's.
enum KeyOp {
    Set(String, String),
    Delete(String),
}

impl Local {
    fn take_ops(&mut self, rtt_due: bool, view: &MeshView, now: Instant) -> Vec<KeyOp> {
        let mut ops = Vec::new();
        if std::mem::take(&mut self.dirty_load) {
            ops.push(KeyOp::Set(KEY_LOAD.to_owned(), self.load.encode()));
        }
        if std::mem::take(&mut self.dirty_status) {
            ops.push(KeyOp::Set(KEY_STATUS.to_owned(), self.status.encode()));
        }
        for op in self.session_ops.drain(..) {
            ops.push(match op {
                SessionOp::Set(r) => KeyOp::Set(SessionRecord::key(r.session_id), r.encode()),
                SessionOp::Delete(id) => KeyOp::Delete(SessionRecord::key(id)),
            });
        }
        if rtt_due {
            // Peers chitchat has forgotten are dropped from the matrix and from gossip.
            let known = |id: &NodeId| view.is_alive(id) || view.dead_nodes().any(|d| d == id);
            self.peer_rtt.retain(known);
            let gone: Vec<NodeId> = self
                .published_peer
                .keys()
                .filter(|id| !known(id))
                .cloned()
                .collect();
            for id in gone {
                self.published_peer.remove(&id);
                ops.push(KeyOp::Delete(format!("{}{id}", rtt::PREFIX_PEER)));
            }
            for (peer, summary) in self.peer_rtt.summaries() {
                if self
                    .published_peer
                    .get(peer)
                    .is_none_or(|old| summary.differs_notably(old))
                {
                    self.published_peer.insert(peer.clone(), summary);
                    ops.push(KeyOp::Set(
                        format!("{}{peer}", rtt::PREFIX_PEER),
                        summary.encode(),
                    ));
                }
            }
            // Targets: only the best-ranked keys are gossiped; the rest (and the expired)
            // are withdrawn.
            self.targets.expire(now);
            let mut ranked = self.targets.ranked();
            ranked.truncate(MAX_GOSSIPED_TARGETS);
            let keep: HashSet<&str> = ranked.iter().map(|(key, _)| key.as_str()).collect();
            let dropped: Vec<String> = self
                .published_target
                .keys()
                .filter(|k| !keep.contains(k.as_str()))
                .cloned()
                .collect();
            for key in dropped {
                self.published_target.remove(&key);
                ops.push(KeyOp::Delete(format!("{}{key}", rtt::PREFIX_TARGET)));
            }
            for (key, summary) in ranked {
                if self
                    .published_target
                    .get(&key)
                    .is_none_or(|old| summary.differs_notably(old))
                {
                    ops.push(KeyOp::Set(
                        format!("{}{key}", rtt::PREFIX_TARGET),
                        summary.encode(),
                    ));
                    self.published_target.insert(key, summary);
                }
            }
        }
        ops
    }
}

struct Shared {
    node_id: NodeId,
    gossip_addr: SocketAddr,
    stats: Arc<GossipStats>,
    notify: Notify,
    local: Mutex<Local>,
}

impl Shared {
    /// Runs `f` on the local state and wakes the publisher. The lock is never held across
    /// an await.
    fn update<T>(&self, f: impl FnOnce(&mut Local) -> T) -> T {
        let out = f(&mut self.local.lock().expect("not poisoned"));
        self.notify.notify_one();
        out
    }
}

async fn run(
    shared: Arc<Shared>,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    view_tx: watch::Sender<Arc<MeshView>>,
    mut stop: watch::Receiver<()>,
    publish_interval: Duration,
) {
    let mut live = chitchat.lock().await.live_nodes_watcher();
    let mut tick = tokio::time::interval(publish_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let rtt_due = tokio::select! {
            _ = stop.changed() => break,
            _ = shared.notify.notified() => false,
            _ = tick.tick() => true,
            changed = live.changed() => {
                if changed.is_err() {
                    break;
                }
                false
            }
        };
        let ops = {
            let view = view_tx.borrow().clone();
            shared
                .local
                .lock()
                .expect("not poisoned")
                .take_ops(rtt_due, &view, Instant::now())
        };
        let mut guard = chitchat.lock().await;
        if !ops.is_empty() {
            let me = guard.self_node_state();
            for op in ops {
                match op {
                    KeyOp::Set(k, v) => me.set(k, v),
                    KeyOp::Delete(k) => {
                        if me.get(&k).is_some() {
                            me.delete(&k)
                        }
                    }
                }
            }
        }
        let view = build_view(&shared.node_id, &guard);
        drop(guard);
        let changes = view.diff(&view_tx.borrow());
        for change in &changes {
            debug!(node = %shared.node_id, ?change, "membership");
        }
        view_tx.send_replace(Arc::new(view));
    }
}

fn build_view(me: &NodeId, chitchat: &Chitchat) -> MeshView {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    MeshView::build(
        me,
        chitchat.node_states().iter().map(|(id, state)| NodeEntry {
            id,
            alive: live.contains(id),
            key_values: state.key_values(),
        }),
    )
}

/// A running mesh member. Dropping it stops gossip (as [`MeshHandle::shutdown`] without
/// waiting).
pub struct MeshHandle {
    shared: Arc<Shared>,
    chitchat: ChitchatHandle,
    view: watch::Receiver<Arc<MeshView>>,
    task: JoinHandle<()>,
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for MeshHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshHandle")
            .field("node_id", &self.shared.node_id)
            .field("gossip_addr", &self.shared.gossip_addr)
            .finish_non_exhaustive()
    }
}

impl MeshHandle {
    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.shared.node_id
    }

    /// The address peers gossip to (the bound address unless `advertise_addr` was set).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.shared.gossip_addr
    }

    /// The current snapshot.
    pub fn view(&self) -> Arc<MeshView> {
        self.view.borrow().clone()
    }

    /// A receiver that sees every new snapshot; diff consecutive ones with
    /// [`MeshView::diff`] for join/leave events.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshView>> {
        self.view.clone()
    }

    /// Live nodes (including this one), ordered by id.
    pub fn live_nodes(&self) -> Vec<NodeView> {
        self.view().live_nodes().cloned().collect()
    }

    /// Publishes live load.
    pub fn set_load(&self, load: Load) {
        self.shared.update(|l| {
            if l.load != load {
                l.load = load;
                l.dirty_load = true;
            }
        });
    }

    /// Publishes health.
    pub fn set_health(&self, health: Health) {
        self.shared.update(|l| {
            if l.status.health != health {
                l.status.health = health;
                l.dirty_status = true;
            }
        });
    }

    /// Publishes the draining flag: a draining node is never selected for new sessions.
    pub fn set_draining(&self, draining: bool) {
        self.shared.update(|l| {
            if l.status.draining != draining {
                l.status.draining = draining;
                l.dirty_status = true;
            }
        });
    }

    /// Records a data-plane probe to `peer` sent at `sent_at`: `Some(rtt)` when the PONG
    /// came back, `None` when it was given up on.
    pub fn record_probe(&self, peer: &NodeId, sent_at: Instant, rtt: Option<Duration>) {
        self.shared
            .local
            .lock()
            .expect("not poisoned")
            .peer_rtt
            .record_probe(peer, sent_at, rtt);
    }

    /// This node's own estimate towards `peer`.
    pub fn rtt_to(&self, peer: &NodeId) -> Option<RttSummary> {
        self.shared
            .local
            .lock()
            .expect("not poisoned")
            .peer_rtt
            .rtt_to(peer)
    }

    /// Every peer this node has an estimate for (billing's announce `peers`).
    pub fn peer_rtts(&self) -> Vec<(NodeId, RttSummary)> {
        let local = self.shared.local.lock().expect("not poisoned");
        let mut v: Vec<(NodeId, RttSummary)> = local
            .peer_rtt
            .summaries()
            .map(|(id, s)| (id.clone(), s))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Records a probe to game server `addr`, sent at `sent_at`: `Some(rtt)` when answered,
    /// `None` when given up on. Addresses are aggregated per
    /// [`plg_proto::query::target_key`] (see [`TargetRtts`]).
    pub fn record_target_addr_probe(&self, addr: IpAddr, sent_at: Instant, rtt: Option<Duration>) {
        self.shared
            .local
            .lock()
            .expect("not poisoned")
            .targets
            .record_addr(addr, sent_at, rtt);
    }

    /// Records a probe towards a named game target (1–64 printable ASCII bytes, no spaces),
    /// which is its own target key.
    pub fn record_target_probe(
        &self,
        target: &str,
        sent_at: Instant,
        rtt: Option<Duration>,
    ) -> Result<(), InvalidValue> {
        check_token("target", target)?;
        self.shared
            .local
            .lock()
            .expect("not poisoned")
            .targets
            .record_named(target, sent_at, rtt);
        Ok(())
    }

    /// Ranks target keys for gossip: higher first, absent ones count 0 (the node passes how
    /// much its sessions use each prefix). Replaces the previous priorities.
    pub fn set_target_priorities(&self, priorities: impl IntoIterator<Item = (String, u32)>) {
        self.shared
            .local
            .lock()
            .expect("not poisoned")
            .targets
            .set_priorities(priorities);
    }

    /// This node's own aggregate towards a target key.
    pub fn target_rtt(&self, target: &str) -> Option<RttSummary> {
        self.own_target_rtts()
            .into_iter()
            .find(|(k, _)| k == target)
            .map(|(_, s)| s)
    }

    /// This node's own target aggregates, best-ranked first, at most
    /// [`MAX_REPORTED_TARGETS`] (billing's announce `targets`); the first
    /// [`MAX_GOSSIPED_TARGETS`] are the gossiped ones.
    pub fn own_target_rtts(&self) -> Vec<(String, RttSummary)> {
        let mut local = self.shared.local.lock().expect("not poisoned");
        local.targets.expire(Instant::now());
        let mut v = local.targets.ranked();
        v.truncate(MAX_REPORTED_TARGETS);
        v
    }

    /// Publishes (or updates) a session whose exit is this node.
    pub fn publish_session(&self, record: SessionRecord) {
        self.shared.update(|l| {
            if l.sessions.get(&record.session_id) != Some(&record) {
                l.sessions.insert(record.session_id, record.clone());
                l.session_ops.push(SessionOp::Set(record));
            }
        });
    }

    /// Takes over an orphaned session (see [`MeshView::orphaned_sessions`]): this node
    /// becomes its exit, with `backup` as the new backup. Returns the published record.
    pub fn adopt_session(&self, route: &SessionRoute, backup: Option<NodeId>) -> SessionRecord {
        let record = SessionRecord {
            session_id: route.record.session_id,
            backup,
            paths: route.record.paths,
            epoch: route.record.epoch + 1,
        };
        self.publish_session(record.clone());
        record
    }

    /// Withdraws a session this node published.
    pub fn remove_session(&self, session_id: u64) {
        self.shared.update(|l| {
            if l.sessions.remove(&session_id).is_some() {
                l.session_ops.push(SessionOp::Delete(session_id));
            }
        });
    }

    /// Where a session lives, as gossip says.
    pub fn lookup_session(&self, session_id: u64) -> Option<SessionRoute> {
        self.view().session(session_id).cloned()
    }

    /// Gossip transport counters (forged, replayed, … datagrams).
    pub fn gossip_counters(&self) -> GossipCounters {
        self.shared.stats.snapshot()
    }

    /// Stops gossip and waits for chitchat to finish. Peers see this node die through
    /// their failure detector; publish `set_draining(true)` first for a graceful exit.
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.chitchat.shutdown().await;
    }

    /// Stops everything at once, as a crash would (tests and benchmarks).
    pub fn kill(self) {
        self.task.abort();
        self.chitchat.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::TARGET_TTL;

    fn local() -> Local {
        Local {
            load: Load::default(),
            status: Status::default(),
            dirty_load: false,
            dirty_status: false,
            session_ops: Vec::new(),
            sessions: HashMap::new(),
            peer_rtt: RttMatrix::new(RttConfig::default()),
            targets: TargetRtts::new(RttConfig::default()),
            published_peer: HashMap::new(),
            published_target: HashMap::new(),
        }
    }

    fn record(l: &mut Local, ip: IpAddr, at: Instant, rtt: Option<Duration>) {
        l.targets.record_addr(ip, at, rtt);
    }

    fn target_sets(ops: &[KeyOp]) -> Vec<(&str, &str)> {
        ops.iter()
            .filter_map(|op| match op {
                KeyOp::Set(k, v) if k.starts_with(rtt::PREFIX_TARGET) => {
                    Some((k.as_str(), v.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn three_hundred_targets_gossip_sixteen_keys_within_a_kilobyte() {
        let t0 = Instant::now();
        let mut l = local();
        // Worst case for key length: 300 distinct IPv6 /48s with the longest text form, and
        // RTTs up to a second with some loss (six-digit µs values, three-digit ‰).
        for i in 0..300u32 {
            let ip: IpAddr = format!("fff{:x}:ffff:f{i:03x}::1", i % 16).parse().unwrap();
            for j in 0..20u32 {
                let rtt =
                    (j % 7 != 0).then(|| Duration::from_micros(900_000 + u64::from(i * 331 + j)));
                record(&mut l, ip, t0 + Duration::from_millis(100) * j, rtt);
            }
        }
        let ops = l.take_ops(true, &MeshView::default(), t0 + Duration::from_secs(3));
        let sets = target_sets(&ops);
        assert_eq!(sets.len(), MAX_GOSSIPED_TARGETS);
        let bytes: usize = sets.iter().map(|(k, v)| k.len() + v.len()).sum();
        println!("16 of 300 target keys gossiped: {bytes} bytes of keys and values");
        assert!(bytes <= 1024, "{bytes} bytes: {sets:?}");
        // The next round re-sends nothing that did not move.
        let again = l.take_ops(true, &MeshView::default(), t0 + Duration::from_secs(4));
        assert!(target_sets(&again).is_empty());
        // The announce still sees up to 256.
        assert_eq!(l.targets.ranked().len(), 300);
    }

    #[test]
    fn priorities_pick_the_gossiped_keys_and_losers_are_withdrawn() {
        let t0 = Instant::now();
        let mut l = local();
        for i in 100..120u8 {
            record(
                &mut l,
                IpAddr::from([203, 0, i, 1]),
                t0,
                Some(Duration::from_millis(30)),
            );
        }
        let first = l.take_ops(true, &MeshView::default(), t0);
        assert_eq!(target_sets(&first).len(), 16);
        assert!(!l.published_target.contains_key("203.0.119.0/24"));
        // The least-ranked key by name becomes the most used.
        l.targets.set_priorities([("203.0.119.0/24".to_owned(), 5)]);
        let ops = l.take_ops(true, &MeshView::default(), t0);
        let sets = target_sets(&ops);
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].0, "g:203.0.119.0/24");
        let deleted: Vec<&str> = ops
            .iter()
            .filter_map(|op| match op {
                KeyOp::Delete(k) => Some(k.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["g:203.0.115.0/24"]);
    }

    #[test]
    fn expired_targets_are_withdrawn_from_gossip() {
        let t0 = Instant::now();
        let mut l = local();
        record(
            &mut l,
            IpAddr::from([198, 51, 100, 1]),
            t0,
            Some(Duration::from_millis(20)),
        );
        let ops = l.take_ops(true, &MeshView::default(), t0);
        let sets = target_sets(&ops);
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].0, "g:198.51.100.0/24");
        assert!(sets[0].1.starts_with("1 20000 0 "), "{sets:?}");
        let ops = l.take_ops(true, &MeshView::default(), t0 + TARGET_TTL);
        assert!(
            ops.iter()
                .any(|op| matches!(op, KeyOp::Delete(k) if k == "g:198.51.100.0/24"))
        );
        assert!(l.published_target.is_empty());
    }
}
