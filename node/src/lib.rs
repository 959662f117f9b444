//! `plg-node`, the relay daemon: verifies billing's tickets offline, runs the QUIC control
//! endpoint and the UDP data plane, and forwards each flow to the destinations its ticket
//! allows — never anywhere else.

mod control;
pub mod core;
mod dataplane;
pub mod identity;
mod meshlink;
pub mod metrics;
pub mod policy;
pub mod prober;
pub mod targets;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use plg_mesh::{
    GossipKey, Health, Load, MembershipChange, Mesh, MeshConfig, MeshHandle, NodeId, NodeInfo,
};
use plg_proto::TicketVerifier;
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::task::JoinSet;

pub use control::DRAINING_CODE;
pub use core::MAX_FLOWS_PER_SESSION;
pub use identity::{AnnounceReply, AnnounceStatus, Identity, LegRtt, TargetRtt, join};
pub use metrics::{Metrics, MetricsSnapshot};

/// Run-time settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// QUIC control endpoint.
    pub control_listen: SocketAddr,
    /// UDP data port.
    pub data_listen: SocketAddr,
    /// Address announced to billing when listening on a wildcard address.
    pub public_ip: Option<IpAddr>,
    /// Announce these control and data addresses instead of the bound ones (a port forward
    /// or a proxy in front of the node: the simulator puts its links there).
    pub public_addrs: Option<(SocketAddr, SocketAddr)>,
    /// Forget sessions without traffic for this long.
    pub session_idle: Duration,
    /// Close flows without traffic for this long.
    pub flow_idle: Duration,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Allow loopback/private destinations (local demos and tests only).
    pub allow_private_destinations: bool,
    /// Source address for traffic to game servers (a host with several addresses; the
    /// simulator gives each node its own loopback address). `None`: the kernel picks.
    pub upstream_bind: Option<IpAddr>,
    /// Fetch ticket keys from billing and announce this node's addresses (periodically).
    pub talk_to_billing: bool,
    /// Gossip (UDP) listen address; `None` runs the node alone, outside any mesh.
    pub gossip_listen: Option<SocketAddr>,
    /// Gossip round period (shorter detects failures sooner, costs more packets).
    pub gossip_interval: Duration,
    /// How long `drain` waits for sessions to move before the node stops anyway.
    pub drain_grace: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            control_listen: "0.0.0.0:4443".parse().unwrap(),
            data_listen: "0.0.0.0:443".parse().unwrap(),
            public_ip: None,
            public_addrs: None,
            session_idle: Duration::from_secs(60),
            flow_idle: Duration::from_secs(60),
            max_sessions: 10_000,
            allow_private_destinations: false,
            upstream_bind: None,
            talk_to_billing: true,
            gossip_listen: None,
            gossip_interval: Duration::from_millis(200),
            drain_grace: Duration::from_secs(30),
        }
    }
}

impl NodeConfig {
    /// Checks the settings before any socket is bound.
    pub fn validate(&self) -> Result<()> {
        if self.public_ip.is_none()
            && (self.control_listen.ip().is_unspecified() || self.data_listen.ip().is_unspecified())
        {
            bail!(
                "listening on a wildcard address: set --public-ip to the address clients should use"
            );
        }
        if self.session_idle < Duration::from_secs(1) || self.flow_idle < Duration::from_secs(1) {
            bail!("idle timeouts must be at least one second");
        }
        if self.max_sessions == 0 {
            bail!("max sessions must be at least 1");
        }
        Ok(())
    }

    /// The address peers and clients use for a socket bound to `bound`: `public_ip` if
    /// given, else the bound IP, else (a wildcard gossip socket) the control address's IP.
    fn public(&self, bound: SocketAddr) -> SocketAddr {
        let ip = match (self.public_ip, bound.ip()) {
            (Some(ip), _) => ip,
            (None, ip) if ip.is_unspecified() => self.control_listen.ip(),
            (None, ip) => ip,
        };
        SocketAddr::new(ip, bound.port())
    }
}

/// Unix time in seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    /// Bound QUIC control address.
    pub control_addr: SocketAddr,
    /// Bound UDP data address.
    pub data_addr: SocketAddr,
    /// Gossip address peers reach this node on, when it is in a mesh.
    pub gossip_addr: Option<SocketAddr>,
    /// Live counters.
    pub metrics: Arc<Metrics>,
    /// Node id from the identity.
    pub node_id: String,
    /// The node's mesh membership (view, sessions), when it is in a mesh.
    pub mesh: Option<Arc<MeshHandle>>,
    shutdown: watch::Sender<bool>,
    draining: watch::Sender<bool>,
    announce_now: Arc<Notify>,
    targets: Arc<prober::TargetSink>,
    drain_grace: Duration,
    endpoint: quinn::Endpoint,
    tasks: JoinSet<()>,
}

/// How often the node announces itself (and its view of the mesh) to billing.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(10);
/// Ticket keys are refreshed every this many announces.
const KEYS_EVERY_ANNOUNCES: u32 = 3;
/// How often load is republished into the mesh.
const LOAD_EVERY: Duration = Duration::from_secs(1);

/// Starts a node: binds its sockets, joins the mesh (when the identity has a gossip key and
/// `gossip_listen` is set), and (if configured) refreshes ticket keys from billing and
/// announces itself. When billing is unreachable it runs on the cached keys and seeds.
pub async fn start(mut identity: Identity, cfg: NodeConfig) -> Result<RunningNode> {
    cfg.validate()?;
    if cfg.talk_to_billing
        && let Err(e) = identity.refresh_keys().await
    {
        tracing::warn!(error = %format!("{e:#}"), "cannot refresh ticket keys, using cached ones");
    }
    let keys = identity::decode_keys(&identity.state.ticket_keys)?;
    if keys.is_empty() {
        bail!("no ticket keys known: billing never answered; check --billing and rerun join");
    }
    let verifier = Arc::new(Mutex::new(TicketVerifier::new(keys)));
    let metrics = Arc::new(Metrics::default());

    let data = UdpSocket::bind(cfg.data_listen)
        .await
        .with_context(|| format!("binding data port {}", cfg.data_listen))?;
    let data_addr = data.local_addr()?;
    let endpoint = quinn::Endpoint::server(control::server_config(&identity)?, cfg.control_listen)
        .with_context(|| format!("binding control port {}", cfg.control_listen))?;
    let control_addr = endpoint.local_addr()?;
    let node_id = identity.state.node_id.clone();
    let (public_control, public_data) = cfg
        .public_addrs
        .unwrap_or((cfg.public(control_addr), cfg.public(data_addr)));

    let gossip_key = identity.gossip_key()?;
    let (probe_tx, probe_rx) = mpsc::channel(prober::INPUT_QUEUE);
    let mesh = match (cfg.gossip_listen, gossip_key) {
        (Some(listen), Some(key)) => {
            let mut seeds = identity.state.seeds.clone();
            if cfg.talk_to_billing {
                // Ask billing who is in the mesh now, before joining it.
                match identity
                    .announce(public_control, public_data, &starting_status())
                    .await
                {
                    Ok(reply) => {
                        seeds.extend(reply.seeds);
                        let _ = probe_tx.try_send(prober::Input::Catalog(reply.probes));
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot reach billing; joining the mesh through cached seeds")
                    }
                }
            }
            seeds.sort();
            seeds.dedup();
            let info = NodeInfo {
                region: identity.state.region.clone(),
                provider: String::new(),
                data_addr: public_data,
                control_addr: public_control,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                capacity: u32::try_from(cfg.max_sessions).unwrap_or(u32::MAX),
            };
            let id: NodeId = node_id
                .parse()
                .with_context(|| format!("node id {node_id:?} cannot be used in the mesh"))?;
            let mut mc = MeshConfig::new(id, info, GossipKey::new(key), listen);
            if listen.ip().is_unspecified() {
                mc.advertise_addr = Some(cfg.public(listen));
            }
            mc.seeds = seeds;
            mc.gossip_interval = cfg.gossip_interval;
            let handle = Mesh::start(mc).await.context("joining the mesh")?;
            Some((Arc::new(handle), key))
        }
        (Some(_), None) => {
            tracing::warn!(
                "this identity has no mesh gossip key (it joined before the mesh existed): running outside the mesh; join again to be part of it"
            );
            None
        }
        (None, _) => None,
    };
    let gossip_addr = mesh.as_ref().map(|(h, _)| h.gossip_addr());

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (draining, draining_rx) = watch::channel(false);
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let mut tasks = JoinSet::new();
    let dcfg = dataplane::DataConfig {
        session_idle: cfg.session_idle,
        flow_idle: cfg.flow_idle,
        max_sessions: cfg.max_sessions,
        allow_private_destinations: cfg.allow_private_destinations,
        upstream_bind: cfg.upstream_bind,
        probe_targets: Some(probe_tx.clone()),
    };
    tasks.spawn(dataplane::run(
        Arc::new(data),
        metrics.clone(),
        dcfg,
        cmd_rx,
        shutdown_rx.clone(),
        mesh.as_ref().map(|(handle, key)| dataplane::MeshCtx {
            handle: handle.clone(),
            link: meshlink::MeshLink::new(key),
        }),
    ));
    let mesh = mesh.map(|(h, _)| h);
    let targets = Arc::new(prober::TargetSink::new(mesh.clone()));
    tasks.spawn(
        prober::Prober {
            allow_private: cfg.allow_private_destinations,
            upstream_bind: cfg.upstream_bind,
            inputs: probe_rx,
            sink: targets.clone(),
            metrics: metrics.clone(),
            stop: shutdown_rx.clone(),
        }
        .run(),
    );
    let ctl = control::Control {
        verifier: verifier.clone(),
        commands: cmd_tx,
        metrics: metrics.clone(),
        // Clients send data where the node is reachable (a port forward may sit in front).
        data_port: public_data.port(),
        data_addr,
        idle_timeout_secs: cfg.session_idle.as_secs().min(u16::MAX as u64) as u16,
        mesh: mesh.clone(),
        draining: draining_rx.clone(),
    };
    tasks.spawn(ctl.serve(endpoint.clone()));
    if let Some(m) = &mesh {
        tasks.spawn(publish_load(
            m.clone(),
            metrics.clone(),
            cfg.max_sessions,
            shutdown_rx.clone(),
        ));
    }

    let announce_now = Arc::new(Notify::new());
    if cfg.talk_to_billing {
        let (mesh, metrics, mut stop, now, targets) = (
            mesh.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
            announce_now.clone(),
            targets.clone(),
        );
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
            let mut view = mesh.as_ref().map(|m| m.subscribe());
            // Only peers once seen alive are reported dead: a peer that just joined is not
            // live in chitchat's eyes until its heartbeats have been sampled.
            let mut seen_alive = std::collections::HashSet::new();
            let mut last_view = Arc::new(plg_mesh::MeshView::default());
            let mut n = 0u32;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = now.notified() => {}
                    Ok(()) = async { match view.as_mut() { Some(v) => v.changed().await, None => std::future::pending().await } } => {
                        if let Some(v) = &view {
                            let current = v.borrow().clone();
                            for change in current.diff(&last_view) {
                                match change {
                                    MembershipChange::Joined(id) => tracing::info!(peer = %id, "peer up"),
                                    MembershipChange::Left(id) => tracing::warn!(peer = %id, "peer down"),
                                    MembershipChange::Restarted(id) => tracing::info!(peer = %id, "peer restarted"),
                                    MembershipChange::Updated(_) => {}
                                }
                            }
                            seen_alive.extend(current.live_nodes().map(|n| n.id.clone()));
                            last_view = current;
                        }
                        continue;
                    }
                    _ = stop.changed() => return,
                }
                let dead_peers = view.as_ref().map_or_else(Vec::new, |v| {
                    v.borrow()
                        .dead_nodes()
                        .filter(|id| seen_alive.contains(*id))
                        .map(|id| id.as_str().to_owned())
                        .collect()
                });
                let status = AnnounceStatus {
                    gossip_addr,
                    health: "ok",
                    draining: *draining_rx.borrow(),
                    sessions: metrics.sessions_active.load(Ordering::Relaxed) as u32,
                    dead_peers,
                    targets: targets
                        .own()
                        .iter()
                        .map(|(target, s)| TargetRtt {
                            target: target.clone(),
                            leg: s.into(),
                        })
                        .collect(),
                    peers: mesh.as_ref().map_or_else(Default::default, |m| {
                        m.peer_rtts()
                            .iter()
                            .take(identity::MAX_ANNOUNCED_PEERS)
                            .map(|(id, s)| (id.as_str().to_owned(), s.into()))
                            .collect()
                    }),
                };
                match identity
                    .announce(public_control, public_data, &status)
                    .await
                {
                    Ok(reply) => {
                        let _ = probe_tx.try_send(prober::Input::Catalog(reply.probes));
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "announce failed; will retry");
                    }
                }
                if n.is_multiple_of(KEYS_EVERY_ANNOUNCES)
                    && n > 0
                    && identity.refresh_keys().await.is_ok()
                    && let Ok(keys) = identity::decode_keys(&identity.state.ticket_keys)
                {
                    verifier.lock().await.set_keys(keys);
                }
                n = n.wrapping_add(1);
            }
        });
    }
    tracing::info!(node = %node_id, control = %control_addr, data = %data_addr, gossip = ?gossip_addr, "node running");
    Ok(RunningNode {
        control_addr,
        data_addr,
        gossip_addr,
        metrics,
        node_id,
        mesh,
        shutdown,
        draining,
        announce_now,
        targets,
        drain_grace: cfg.drain_grace,
        endpoint,
        tasks,
    })
}

fn starting_status() -> AnnounceStatus {
    AnnounceStatus {
        health: "ok",
        ..AnnounceStatus::default()
    }
}

/// Republishes sessions, packet rate and CPU use into the mesh every [`LOAD_EVERY`].
async fn publish_load(
    mesh: Arc<MeshHandle>,
    metrics: Arc<Metrics>,
    capacity: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(LOAD_EVERY);
    let packets = |m: &Metrics| {
        m.datagrams_in.load(Ordering::Relaxed) + m.upstream_packets_in.load(Ordering::Relaxed)
    };
    let mut last = (Instant::now(), packets(&metrics), cpu_ticks());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = (Instant::now(), packets(&metrics), cpu_ticks());
        let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let cpu = match (last.2, now.2) {
            // /proc ticks are 1/100 s on Linux.
            (Some(a), Some(b)) => {
                ((b.saturating_sub(a)) as f64 / 100.0 / secs / cpus * 100.0).clamp(0.0, 100.0) as u8
            }
            _ => 0,
        };
        let sessions = metrics.sessions_active.load(Ordering::Relaxed) as u32;
        mesh.set_load(Load {
            sessions,
            packets_per_sec: ((now.1.saturating_sub(last.1)) as f64 / secs) as u32,
            cpu_percent: cpu,
        });
        // Full or nearly so: still serving, but selection should prefer others.
        mesh.set_health(if sessions as usize >= capacity * 9 / 10 {
            Health::Degraded
        } else {
            Health::Ok
        });
        last = now;
    }
}

/// User + system CPU ticks of this process (Linux), for the load report.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

impl RunningNode {
    /// What this node measured to game server prefixes, best-ranked first (≤ 256): the
    /// announce's `targets`.
    pub fn target_rtts(&self) -> Vec<(String, plg_mesh::RttSummary)> {
        self.targets.own()
    }

    /// Prometheus text: every counter, and RTT/jitter/loss gauges of the best-ranked
    /// targets.
    pub fn prometheus(&self) -> String {
        self.metrics.snapshot().to_prometheus()
            + &metrics::targets_to_prometheus(&self.targets.own())
    }

    /// Announces to billing now instead of at the next tick.
    pub fn announce_now(&self) {
        self.announce_now.notify_one();
    }

    /// Stops every task and closes the sockets.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.endpoint.close(0u32.into(), b"node shutting down");
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        // The data-plane thread and control tasks let go of the mesh as they stop.
        let mut mesh = self.mesh.take();
        for _ in 0..50 {
            match mesh.map(Arc::try_unwrap) {
                Some(Ok(m)) => {
                    m.shutdown().await;
                    return;
                }
                Some(Err(shared)) => mesh = Some(shared),
                None => return,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Still shared: gossip stops when the last holder drops it.
    }

    /// Drains the node: the mesh and billing learn it takes no new sessions, clients of its
    /// sessions are told to move (their control connections close with
    /// [`control::DRAINING_CODE`]; each presents its ticket to its backup, which adopts the
    /// session), and once no session is left here — or the grace period ends — it stops.
    /// Returns how many sessions were still here at the end.
    pub async fn drain(self) -> u64 {
        tracing::info!(grace = ?self.drain_grace, "draining");
        let _ = self.draining.send(true);
        if let Some(m) = &self.mesh {
            m.set_draining(true);
        }
        self.announce_now.notify_one();
        let deadline = Instant::now() + self.drain_grace;
        let left = loop {
            let left = self.metrics.sessions_active.load(Ordering::Relaxed);
            if left == 0 || Instant::now() >= deadline {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Give the mesh a few gossip rounds to spread the adoptions and the draining flag.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tracing::info!(sessions_left = left, "drained, stopping");
        self.shutdown().await;
        left
    }
}
