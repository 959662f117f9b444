//! The client's session engine, sans-IO: every decision about a running session is made
//! here, and nothing here touches a socket, a task or a clock.
//!
//! [`ClientConn`] is fed with what happened — a packet from the game
//! ([`ClientConn::handle_game`]), a datagram from the node on path *i* or on the control
//! connection ([`ClientConn::handle_datagram`]), the control connection's state
//! ([`ClientConn::handle_control`]), a timer ([`ClientConn::handle_timeout`]), the outcome of
//! an I/O request ([`ClientConn::handle_switched`], [`ClientConn::handle_failover_failed`]) —
//! and is polled for what to do: datagrams to send ([`ClientConn::poll_transmit`]), I/O to
//! perform ([`ClientConn::poll_action`]: open a path's socket, open the session on another
//! node), events for the user ([`ClientConn::poll_event`]) and when to wake it next
//! ([`ClientConn::poll_timeout`]). `now` is always passed in, so tests run the engine on a
//! virtual clock (quinn-proto's shape; the tokio driver is [`crate::proxy`]).
//!
//! Decisions made here: which paths a frame goes on (redundancy, [`PathScheduler`]), flows
//! (open, repeat FLOW_OPEN until confirmed, idle expiry, reuse of the least recently used
//! slot), protected mode (QUIC datagrams on the control connection when UDP is silent but
//! the node is alive, re-probing UDP), failover to the backup exit when every path is silent
//! (or the node drains), moving a relayed path whose relay went silent, and rebinding the
//! paths' sockets when they all go silent (the local address changed: a laptop moving from
//! Wi-Fi to Ethernet) — the node follows the new address after the first authenticated
//! frame, as WireGuard and QUIC do.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use plg_proto::Session;
use plg_proto::frame::{ErrorCode, Frame, Header, MAX_DATAGRAM, MAX_PAYLOAD};
use plg_proto::paths::{PathConfig, PathMask, PathScheduler, PathStats, Redundancy};
use plg_proto::replay::ReplayError;
use plg_proto::session::OpenError;

use crate::billing::NodeInfo;
use crate::proxy::ProxyStats;
use crate::tunnel::Protection;

/// Most game-side flows one session carries at a time (the node's per-session cap).
pub const MAX_FLOWS: usize = 64;
/// A flow without a packet either way for this long is forgotten (the node's default flow
/// idle timeout, so both ends let go together); its slot is reused.
pub const FLOW_IDLE: Duration = Duration::from_secs(60);
/// When every slot is taken, the least recently used flow is given up if it has been quiet
/// this long; otherwise the new flow is refused ([`ProxyEvent::TooManyFlows`]).
pub const FLOW_EVICT_AFTER: Duration = Duration::from_secs(5);
/// How often control state is repeated (unconfirmed FLOW_OPENs, the PATHS mask), silent relays
/// are looked at and idle flows are swept.
pub const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// Automatic protected mode starts after UDP has been silent this long (or the failover
/// delay, if shorter) while the control connection is alive.
pub const PROTECT_AFTER: Duration = Duration::from_secs(1);
/// A relayed path silent this long, while the session answers on another path, has lost its
/// relay: it moves to another node.
pub const RELAY_SILENT: Duration = Duration::from_secs(3);
/// How often protected mode re-probes UDP.
pub const REPROBE_EVERY: Duration = Duration::from_secs(2);
/// Every path silent this long: rebind the paths' sockets once (the local address may have
/// changed) before the failover delay runs out.
pub const REBIND_AFTER: Duration = Duration::from_millis(500);
/// The control connection counts as alive while it received something this recently (its
/// keep-alives are answered every [`crate::tunnel::KEEP_ALIVE`]).
pub const CONTROL_ALIVE: Duration = Duration::from_millis(400);
/// Ping ids with this bit set are UDP re-probes, not the path scheduler's probes.
const REPROBE_ID: u64 = 1 << 63;

/// Where a datagram travels between the client and the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// The UDP socket of this path.
    Path(u8),
    /// A QUIC datagram on the control connection (protected mode).
    Quic,
}

/// A sealed datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// On which socket.
    pub via: Via,
    /// The sealed PLG datagram.
    pub bytes: Vec<u8>,
}

/// I/O the driver must perform for the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Bind a fresh socket for path `path`, sending to `addr` (a new exit's data port,
    /// another relay, or the same address from a new local port after a network change).
    OpenPath {
        /// Path index.
        path: u8,
        /// Where the path's datagrams go.
        addr: SocketAddr,
    },
    /// Every path went silent: the local address may have changed (a laptop moving from
    /// Wi-Fi to Ethernet, waking from sleep). Bind every path's socket and the control
    /// connection's anew, to the same destinations; the node follows the first authenticated
    /// frame from the new address.
    Rebind,
    /// Every path is silent (or the node drains): open the session, with the same ticket, on
    /// the first of these nodes that accepts it, then report with
    /// [`ClientConn::handle_switched`] or [`ClientConn::handle_failover_failed`].
    FailOver {
        /// Candidates, best first (the backup the node named in its ACCEPT first).
        candidates: Vec<NodeInfo>,
    },
}

/// Things the user should be told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEvent {
    /// The node refused to forward to this destination (not in the ticket or node policy).
    DestinationRefused(SocketAddr),
    /// The node reported another error for a flow.
    FlowError {
        /// Flow id.
        flow: u32,
        /// Error code.
        code: ErrorCode,
    },
    /// The game used more flows at once than a session carries.
    TooManyFlows,
    /// The session moved to another node (failover, a renewal, or a clearly better node).
    Failover {
        /// The node now carrying the session.
        to: String,
        /// Time from the last frame heard to the new session being up.
        gap: Duration,
    },
    /// Every path went silent and no other node could take the session.
    NodeLost {
        /// Why the failover failed.
        reason: String,
    },
    /// The primary path changed (a path went silent or another is clearly better).
    PrimaryChanged {
        /// Old primary.
        from: u8,
        /// New primary.
        to: u8,
    },
    /// Frames started (`on`) or stopped travelling as QUIC datagrams on the control
    /// connection instead of UDP.
    ProtectedMode {
        /// Whether protected mode is now on.
        on: bool,
        /// Why, for the user.
        reason: String,
    },
    /// A relayed path lost its relay and now goes through another node.
    RelayMoved {
        /// Path index.
        path: u8,
        /// The relay given up on.
        from: String,
        /// The new relay.
        to: String,
    },
}

/// The paths' state, for dashboards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathsView {
    /// Current primary path.
    pub primary: u8,
    /// Whether every frame currently goes on several paths.
    pub duplicating: bool,
    /// Health of each path.
    pub paths: Vec<PathStats>,
    /// Whether frames currently travel as QUIC datagrams on the control connection.
    pub protected: bool,
    /// The node carrying the session (its id).
    pub node: String,
    /// For each path, the node relaying it (`None`: straight to the exit).
    pub relays: Vec<Option<String>>,
}

/// Where a session starts: the exit, its paths and the nodes to fall back on.
#[derive(Clone, Debug)]
pub struct Route {
    /// The exit node.
    pub node: NodeInfo,
    /// The backup the exit named in its ACCEPT (tried first on failover).
    pub backup: String,
    /// The exit's UDP data address.
    pub data_addr: SocketAddr,
    /// Where each path's datagrams go (path 0: usually `data_addr`).
    pub path_addrs: Vec<SocketAddr>,
    /// For each path, the node relaying it (`None` or missing: straight to the exit). A
    /// relayed path keeps its relay through a failover (the relay finds the session's new
    /// exit in the mesh); a direct path moves to the new exit.
    pub relays: Vec<Option<String>>,
    /// Other nodes, best first: failover targets and spare relays.
    pub candidates: Vec<NodeInfo>,
}

/// The engine's settings.
#[derive(Clone, Copy, Debug)]
pub struct ConnConfig {
    /// Redundancy policy.
    pub policy: Redundancy,
    /// Protected mode.
    pub protection: Protection,
    /// Every path silent this long moves the session to another node; `None`: never.
    pub failover_after: Option<Duration>,
    /// Flow idle timeout ([`FLOW_IDLE`]).
    pub flow_idle: Duration,
    /// Most flows at once ([`MAX_FLOWS`]).
    pub max_flows: usize,
    /// The path scheduler's tunables.
    pub paths: PathConfig,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            policy: Redundancy::ADAPTIVE,
            protection: Protection::Auto,
            failover_after: Some(Duration::from_secs(1)),
            flow_idle: FLOW_IDLE,
            max_flows: MAX_FLOWS,
            paths: PathConfig::default(),
        }
    }
}

/// What the driver knows about the control (QUIC) connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlStatus {
    /// Datagrams the connection has received so far (any QUIC packet: keep-alives too).
    pub rx_packets: u64,
    /// Open and able to carry QUIC datagrams.
    pub usable: bool,
    /// The node closed it because it drains: move at once.
    pub draining: bool,
}

/// A game packet to deliver: from `server` to `game`.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The game's address.
    pub game: SocketAddr,
    /// The server the reply comes from.
    pub server: SocketAddr,
    /// The payload.
    pub payload: &'a [u8],
}

#[derive(Debug)]
struct Flow {
    id: u32,
    confirmed: bool,
    /// The node refused the destination: stop sending for this flow.
    refused: bool,
    last_active: Instant,
}

/// Flows by (game, server) and by id. Ids are never reused within a session, so a late
/// reply for a forgotten flow is never delivered to the wrong game socket.
#[derive(Debug, Default)]
struct Flows {
    by_addr: BTreeMap<(SocketAddr, SocketAddr), Flow>,
    by_id: BTreeMap<u32, (SocketAddr, SocketAddr)>,
    next_id: u32,
}

impl Flows {
    fn remove(&mut self, key: (SocketAddr, SocketAddr)) {
        if let Some(f) = self.by_addr.remove(&key) {
            self.by_id.remove(&f.id);
        }
    }

    fn get_by_id(&mut self, id: u32) -> Option<((SocketAddr, SocketAddr), &mut Flow)> {
        let key = *self.by_id.get(&id)?;
        Some((key, self.by_addr.get_mut(&key)?))
    }
}

/// One session's engine on the client (see the module docs).
#[derive(Debug)]
pub struct ClientConn {
    cfg: ConnConfig,
    session: Session,
    sched: PathScheduler,
    stats: Arc<ProxyStats>,
    route: Route,
    flows: Flows,
    /// Relay nodes given up on for this session.
    retired: Vec<String>,
    /// When each path got its current address (a relay gets [`RELAY_SILENT`] to answer).
    path_since: Vec<Instant>,
    start: Instant,
    /// Last authenticated frame from the node on any path.
    last_heard: Instant,
    /// Last authenticated frame over UDP.
    udp_heard: Instant,
    /// Whether frames travel as QUIC datagrams now.
    protected: bool,
    protected_since: Instant,
    next_reprobe: Instant,
    control: ControlStatus,
    control_heard: Instant,
    /// A failover was asked for and not answered yet.
    failing_over: bool,
    /// The paths were rebound during the current silence.
    rebound: bool,
    /// The node's drain was acted on (once per node).
    drain_seen: bool,
    next_housekeeping: Instant,
    /// The downstream mask last sent in a PATHS frame.
    last_down: PathMask,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    events: VecDeque<ProxyEvent>,
    closed: bool,
    scratch: Vec<u8>,
}

impl ClientConn {
    /// An engine for `session` on `route`. Errors if the route's path count is outside
    /// `1..=max_paths` (the session's path limit).
    pub fn new(
        now: Instant,
        session: Session,
        route: Route,
        max_paths: u8,
        cfg: ConnConfig,
        stats: Arc<ProxyStats>,
    ) -> Result<ClientConn, String> {
        let max = (max_paths as usize).clamp(1, plg_proto::paths::MAX_PATHS);
        let n = route.path_addrs.len();
        if n == 0 || n > max {
            return Err(format!("{n} paths requested, the session allows 1..={max}"));
        }
        let mut route = route;
        route.relays.resize(n, None);
        let mut c = ClientConn {
            sched: PathScheduler::new(n, cfg.policy, cfg.paths, now),
            cfg,
            session,
            stats,
            route,
            flows: Flows::default(),
            retired: Vec::new(),
            path_since: vec![now; n],
            start: now,
            last_heard: now,
            udp_heard: now,
            protected: false,
            protected_since: now,
            next_reprobe: now + REPROBE_EVERY,
            control: ControlStatus::default(),
            control_heard: now,
            failing_over: false,
            rebound: false,
            drain_seen: false,
            next_housekeeping: now,
            last_down: PathMask(0),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
            scratch: Vec::with_capacity(MAX_DATAGRAM),
        };
        if cfg.protection == Protection::Always {
            c.enter_protected(now, "protected mode was requested".into());
        }
        Ok(c)
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    /// Number of paths.
    pub fn path_count(&self) -> usize {
        self.route.path_addrs.len()
    }

    /// Where each path's datagrams go now.
    pub fn path_addrs(&self) -> &[SocketAddr] {
        &self.route.path_addrs
    }

    /// The route as it stands (it changes on failover and relay moves).
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Whether frames travel as QUIC datagrams now.
    pub fn protected(&self) -> bool {
        self.protected
    }

    /// Flows currently open.
    pub fn flow_count(&self) -> usize {
        self.flows.by_addr.len()
    }

    /// The session id.
    pub fn session_id(&self) -> u64 {
        self.session.id()
    }

    /// The paths' state now.
    pub fn paths_view(&self, now: Instant) -> PathsView {
        PathsView {
            primary: self.sched.primary(),
            duplicating: self.sched.duplicating(now),
            paths: (0..self.sched.len() as u8)
                .map(|p| self.sched.stats(p))
                .collect(),
            protected: self.protected,
            node: self.route.node.id.clone(),
            relays: self.route.relays.clone(),
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next I/O request.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<ProxyEvent> {
        self.events.pop_front()
    }

    /// When [`ClientConn::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Instant {
        self.sched.poll_timeout().min(self.next_housekeeping)
    }

    /// A packet from the game (`game` → `server`).
    pub fn handle_game(
        &mut self,
        now: Instant,
        game: SocketAddr,
        server: SocketAddr,
        payload: &[u8],
    ) {
        let s = self.stats.clone();
        s.from_game.fetch_add(1, Ordering::Relaxed);
        if self.closed {
            return;
        }
        if payload.len() > MAX_PAYLOAD {
            s.oversize.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let key = (game, server);
        let flow = match self.flows.by_addr.get_mut(&key) {
            Some(f) => {
                f.last_active = now;
                if f.refused {
                    s.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                f.id
            }
            None => match self.open_flow(now, key) {
                Some(id) => id,
                None => return,
            },
        };
        let mask = self.sched.upstream(now, payload.len());
        let wire = self.send(mask, &Frame::Data { flow, payload });
        s.bytes_up
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        s.wire_bytes_up.fetch_add(wire, Ordering::Relaxed);
    }

    /// A new flow for `key`: a free slot, or the least recently used one if it has been quiet
    /// for [`FLOW_EVICT_AFTER`].
    fn open_flow(&mut self, now: Instant, key: (SocketAddr, SocketAddr)) -> Option<u32> {
        if self.flows.by_addr.len() >= self.cfg.max_flows {
            let lru = self
                .flows
                .by_addr
                .iter()
                .min_by_key(|(_, f)| f.last_active)
                .map(|(k, f)| (*k, f.last_active));
            match lru {
                Some((k, at)) if now.saturating_duration_since(at) >= FLOW_EVICT_AFTER => {
                    self.flows.remove(k)
                }
                _ => {
                    self.events.push_back(ProxyEvent::TooManyFlows);
                    return None;
                }
            }
        }
        let id = self.flows.next_id;
        self.flows.next_id = self.flows.next_id.wrapping_add(1);
        self.flows.by_addr.insert(
            key,
            Flow {
                id,
                confirmed: false,
                refused: false,
                last_active: now,
            },
        );
        self.flows.by_id.insert(id, key);
        let all = self.all_paths();
        self.send(
            all,
            &Frame::FlowOpen {
                flow: id,
                dst: key.1,
            },
        );
        Some(id)
    }

    /// A datagram from the node; returns the game packet it carries, if any (the first copy
    /// of a data frame).
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        via: Via,
        datagram: &'a mut [u8],
    ) -> Option<Delivery<'a>> {
        let s = self.stats.clone();
        if datagram.len() > MAX_DATAGRAM {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Over QUIC every path shares the connection: the frame's own path id is its path.
        let path = match via {
            Via::Path(p) => p,
            Via::Quic => match Header::decode(datagram) {
                Ok(h) => h.path,
                Err(_) => {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            },
        };
        let (h, frame) = match self.session.open(datagram) {
            Ok(x) => x,
            Err(OpenError::Replay(ReplayError::Duplicate)) => {
                // The other path's copy: the path is alive even though the frame is not new.
                self.sched.on_heard(now, path);
                self.sched.on_copy(path, false);
                s.duplicates.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(_) => {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        self.last_heard = now;
        self.rebound = false;
        match via {
            Via::Path(p) => {
                self.udp_heard = now;
                if self.protected && self.cfg.protection == Protection::Auto {
                    self.leave_protected(now, p);
                }
            }
            Via::Quic => {
                s.protected_down.fetch_add(1, Ordering::Relaxed);
            }
        }
        // A frame sealed for another path is authentic and delivered, but says nothing about
        // this path's health.
        let same_path = h.path == path;
        if same_path {
            self.sched.on_heard(now, path);
        }
        self.sched.on_delivered(now, h.seq);
        self.sched.on_copy(path, true);
        match frame {
            Frame::Data { flow, payload } => {
                let (key, f) = self.flows.get_by_id(flow)?;
                f.confirmed = true;
                f.last_active = now;
                s.to_game.fetch_add(1, Ordering::Relaxed);
                s.bytes_down
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                return Some(Delivery {
                    game: key.0,
                    server: key.1,
                    payload,
                });
            }
            Frame::Pong { id, .. } if same_path && id & REPROBE_ID == 0 => {
                let before = self.sched.primary();
                self.sched.on_pong(now, path, id);
                s.pongs.fetch_add(1, Ordering::Relaxed);
                self.after_change(before);
            }
            Frame::Error { code, flow, .. } => {
                let found = self.flows.get_by_id(flow).map(|(key, f)| {
                    match code {
                        // The node forgot the flow (idle expiry or restart): open it again.
                        ErrorCode::UnknownFlow => f.confirmed = false,
                        ErrorCode::DestinationNotAllowed => f.refused = true,
                        _ => {}
                    }
                    key.1
                });
                let ev = match (code, found) {
                    (ErrorCode::DestinationNotAllowed, Some(server)) => {
                        ProxyEvent::DestinationRefused(server)
                    }
                    (ErrorCode::UnknownFlow, Some(_)) => return None,
                    _ => ProxyEvent::FlowError { flow, code },
                };
                self.events.push_back(ev);
            }
            _ => {}
        }
        None
    }

    /// The control connection's state, as the driver sees it (call on every wake-up).
    pub fn handle_control(&mut self, now: Instant, status: ControlStatus) {
        if status.rx_packets != self.control.rx_packets {
            self.control_heard = now;
        }
        self.control = status;
    }

    /// Timers: probes, path health, protected mode, failover, relay moves, flow expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let control_alive = now.saturating_duration_since(self.control_heard) < CONTROL_ALIVE;
        if self.cfg.protection == Protection::Auto {
            if !self.protected {
                // UDP silent but the control connection alive: the node is up and its data
                // port is blocked somewhere on the way. Tried before failing over.
                let after = self
                    .cfg
                    .failover_after
                    .map_or(PROTECT_AFTER, |f| f.min(PROTECT_AFTER));
                let silent = now.saturating_duration_since(self.udp_heard);
                if silent >= after && control_alive && self.control.usable {
                    let reason = format!(
                        "no answer from the node's UDP data port {} for {} ms; frames travel as QUIC datagrams on the control connection",
                        self.route.data_addr,
                        silent.as_millis()
                    );
                    self.enter_protected(now, reason);
                }
            } else if now >= self.next_reprobe {
                self.reprobe(now);
            }
        }
        // In protected mode, silence counts from its start: it gets a full period to work.
        let silent_since = if self.protected {
            self.last_heard.max(self.protected_since)
        } else {
            self.last_heard
        };
        let silent = now.saturating_duration_since(silent_since);
        // Every path silent: the local address may have changed (new network, wake from
        // sleep). Fresh sockets once; the node follows the first authenticated frame.
        if !self.protected && !self.rebound && silent >= REBIND_AFTER {
            self.rebound = true;
            self.actions.push_back(Action::Rebind);
        }
        // A draining node closes the control connection: move at once, not after silence.
        let drained = self.control.draining && !self.drain_seen;
        if let Some(after) = self.cfg.failover_after
            && !self.failing_over
            && (drained || silent >= after)
        {
            self.drain_seen |= drained;
            let mut candidates = self.route.candidates.clone();
            if let Some(i) = candidates.iter().position(|c| c.id == self.route.backup) {
                let backup = candidates.remove(i);
                candidates.insert(0, backup);
            }
            self.failing_over = true;
            self.actions.push_back(Action::FailOver { candidates });
        }
        let before = self.sched.primary();
        self.sched.handle_timeout(now);
        while let Some((path, id)) = self.sched.poll_probe(now) {
            let ts = now.saturating_duration_since(self.start).as_micros() as u64;
            self.send(
                PathMask::only(path),
                &Frame::Ping {
                    id,
                    timestamp_us: ts,
                },
            );
        }
        self.after_change(before);
        // Tell the node at once when the downstream choice changes (e.g. failover).
        let down = self.downstream(now);
        if down != self.last_down {
            self.send_paths(now);
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.repeat_control(now);
            self.replace_silent_relays(now);
            self.expire_flows(now);
        }
    }

    /// The session now runs on `node` (after [`Action::FailOver`], or a switch the front end
    /// asked for: a renewal into a new session, a clearly better node): `session` is its
    /// sealed-frame state, `data_addr` its data port, `backup` the backup its ACCEPT named.
    /// Paths straight to the old exit move to the new one; relayed paths keep their relay.
    pub fn handle_switched(
        &mut self,
        now: Instant,
        node: NodeInfo,
        session: Session,
        data_addr: SocketAddr,
        backup: String,
    ) {
        let gap = now.saturating_duration_since(self.last_heard);
        let n = self.path_count();
        for i in 0..n {
            let keep = matches!(&self.route.relays[i], Some(r) if *r != node.id);
            if !keep {
                self.route.relays[i] = None;
                self.route.path_addrs[i] = data_addr;
            }
            self.actions.push_back(Action::OpenPath {
                path: i as u8,
                addr: self.route.path_addrs[i],
            });
        }
        let old = std::mem::replace(&mut self.route.node, node.clone());
        self.route.candidates.retain(|c| c.id != node.id);
        if old.id != node.id && !self.route.candidates.iter().any(|c| c.id == old.id) {
            // The old exit stays a candidate of last resort (it may come back).
            self.route.candidates.push(old);
        }
        self.route.backup = backup;
        self.route.data_addr = data_addr;
        self.session = session;
        self.failing_over = false;
        self.rebound = false;
        self.drain_seen = false;
        // The new node is tried over UDP first, unless protected mode was asked for.
        let was_protected = self.protected;
        self.protected = self.cfg.protection == Protection::Always;
        if was_protected && !self.protected {
            self.events.push_back(ProxyEvent::ProtectedMode {
                on: false,
                reason: format!("session moved to node {}; trying UDP first", node.id),
            });
        }
        self.udp_heard = now;
        self.protected_since = now;
        self.next_reprobe = now + REPROBE_EVERY;
        self.control_heard = now;
        self.control = ControlStatus {
            usable: true,
            ..ControlStatus::default()
        };
        self.sched = PathScheduler::new(n, self.sched.policy(), self.cfg.paths, now);
        self.path_since = vec![now; n];
        self.last_heard = now;
        self.last_down = PathMask(0);
        // The new node knows nothing of our flows: open them again.
        let all = self.all_paths();
        let reopen: Vec<(u32, SocketAddr)> = self
            .flows
            .by_addr
            .iter_mut()
            .filter(|(_, f)| !f.refused)
            .map(|(k, f)| {
                f.confirmed = false;
                (f.id, k.1)
            })
            .collect();
        for (flow, dst) in reopen {
            self.send(all, &Frame::FlowOpen { flow, dst });
        }
        self.send_paths(now);
        self.events
            .push_back(ProxyEvent::Failover { to: node.id, gap });
    }

    /// No candidate took the session after [`Action::FailOver`]: tell the user and try
    /// again after another silent period.
    pub fn handle_failover_failed(&mut self, now: Instant, reason: String) {
        self.failing_over = false;
        self.last_heard = now;
        self.events.push_back(ProxyEvent::NodeLost { reason });
    }

    /// The driver could not open a socket for a path (it keeps the old one).
    pub fn handle_path_failed(&mut self, path: u8, error: String) {
        tracing::warn!(path, %error, "cannot open a socket for the path");
    }

    /// Ends the session: a CLOSE on every path (or over QUIC in protected mode). Nothing is
    /// sent afterwards.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        let all = self.all_paths();
        self.send(all, &Frame::Close { reason: 0 });
        self.closed = true;
    }

    fn after_change(&mut self, before: u8) {
        let after = self.sched.primary();
        if after != before {
            self.events.push_back(ProxyEvent::PrimaryChanged {
                from: before,
                to: after,
            });
        }
        if let Some(srtt) = self.sched.stats(after).srtt {
            self.stats
                .rtt_us
                .store(srtt.as_micros().max(1) as u64, Ordering::Relaxed);
        }
    }

    /// Queues `frame` on every path in `mask` with one shared sequence number; in protected
    /// mode, once, as a QUIC datagram sealed for one path of the mask. Returns the bytes
    /// queued.
    fn send(&mut self, mask: PathMask, frame: &Frame<'_>) -> u64 {
        let seq = self.session.take_seq();
        if self.protected {
            let primary = self.sched.primary();
            let path = if mask.contains(primary) {
                primary
            } else {
                match mask.iter().next() {
                    Some(p) => p,
                    None => return 0,
                }
            };
            self.session
                .seal_with_seq(path, seq, frame, &mut self.scratch);
            let bytes = self.scratch.clone();
            let len = bytes.len() as u64;
            self.transmits.push_back(Transmit {
                via: Via::Quic,
                bytes,
            });
            return len;
        }
        let mut total = 0;
        let n = self.path_count();
        for p in mask.iter().filter(|&p| (p as usize) < n) {
            self.session.seal_with_seq(p, seq, frame, &mut self.scratch);
            total += self.scratch.len() as u64;
            self.transmits.push_back(Transmit {
                via: Via::Path(p),
                bytes: self.scratch.clone(),
            });
        }
        total
    }

    fn all_paths(&self) -> PathMask {
        PathMask(((1u16 << self.path_count()) - 1) as u8)
    }

    /// The downstream paths to ask the node for: in protected mode only the primary (every
    /// copy would come over the same QUIC connection).
    fn downstream(&self, now: Instant) -> PathMask {
        if self.protected {
            PathMask::only(self.sched.primary())
        } else {
            self.sched.downstream(now)
        }
    }

    fn send_paths(&mut self, now: Instant) {
        let down = self.downstream(now);
        self.last_down = down;
        let all = self.all_paths();
        self.send(all, &Frame::Paths { downstream: down.0 });
    }

    fn enter_protected(&mut self, now: Instant, reason: String) {
        self.protected = true;
        self.protected_since = now;
        self.next_reprobe = now + REPROBE_EVERY;
        tracing::warn!(node = %self.route.data_addr, %reason, "protected mode on");
        self.events
            .push_back(ProxyEvent::ProtectedMode { on: true, reason });
        // PATHS and unconfirmed FLOW_OPENs over QUIC: the node learns where to answer.
        self.repeat_control(now);
    }

    fn leave_protected(&mut self, now: Instant, path: u8) {
        self.protected = false;
        let reason =
            format!("the node's UDP port answers again on path {path}; frames travel over UDP");
        tracing::info!(node = %self.route.data_addr, "protected mode off");
        self.events
            .push_back(ProxyEvent::ProtectedMode { on: false, reason });
        // PATHS on every UDP path: the node answers over UDP again.
        self.repeat_control(now);
    }

    /// While protected: one PING per path over UDP; an answer ends protected mode.
    fn reprobe(&mut self, now: Instant) {
        self.next_reprobe = now + REPROBE_EVERY;
        let ts = now.saturating_duration_since(self.start).as_micros() as u64;
        for p in 0..self.path_count() as u8 {
            let seq = self.session.take_seq();
            let ping = Frame::Ping {
                id: REPROBE_ID | p as u64,
                timestamp_us: ts,
            };
            self.session.seal_with_seq(p, seq, &ping, &mut self.scratch);
            self.transmits.push_back(Transmit {
                via: Via::Path(p),
                bytes: self.scratch.clone(),
            });
        }
        // Where only the upstream half of UDP works, the pings just pointed the node's paths at
        // our UDP sockets: point the downstream path back at the control connection.
        let down = self.downstream(now);
        self.send(down, &Frame::Paths { downstream: down.0 });
    }

    /// PATHS and FLOW_OPEN travel unreliably (UDP or QUIC datagrams) and can be lost: repeat
    /// them. This also tells the node which address each path answers on.
    fn repeat_control(&mut self, now: Instant) {
        self.send_paths(now);
        let all = self.all_paths();
        let pending: Vec<(u32, SocketAddr)> = self
            .flows
            .by_addr
            .iter()
            .filter(|(_, f)| !f.confirmed && !f.refused)
            .map(|(k, f)| (f.id, k.1))
            .collect();
        for (flow, dst) in pending {
            self.send(all, &Frame::FlowOpen { flow, dst });
        }
    }

    /// Forgets flows idle for the flow idle timeout (the node does the same).
    fn expire_flows(&mut self, now: Instant) {
        let idle = self.cfg.flow_idle;
        let old: Vec<_> = self
            .flows
            .by_addr
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.last_active) >= idle)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            self.flows.remove(k);
        }
    }

    /// A relayed path silent for [`RELAY_SILENT`] while the session answers on another path
    /// has lost its relay (crashed, draining, cut off): it moves to a candidate that no path
    /// uses and that was not given up on before. The exit is fine, so no failover.
    fn replace_silent_relays(&mut self, now: Instant) {
        if self.protected
            || self.failing_over
            || now.saturating_duration_since(self.last_heard) >= RELAY_SILENT
        {
            return;
        }
        for i in 0..self.path_count() {
            let Some(relay) = self.route.relays[i].clone() else {
                continue;
            };
            if self.sched.silent_for(i as u8, now) < RELAY_SILENT
                || now.saturating_duration_since(self.path_since[i]) < RELAY_SILENT
            {
                continue;
            }
            if !self.retired.contains(&relay) {
                self.retired.push(relay.clone());
            }
            let spare = self
                .route
                .candidates
                .iter()
                .filter(|c| !self.retired.contains(&c.id))
                .filter(|c| !self.route.relays.iter().flatten().any(|r| *r == c.id))
                .find_map(|c| Some((c.id.clone(), c.data_addr.parse::<SocketAddr>().ok()?)));
            let Some((id, addr)) = spare else { continue };
            tracing::info!(path = i, from = %relay, to = %id, "relay silent; path moved to another node");
            self.route.relays[i] = Some(id.clone());
            self.route.path_addrs[i] = addr;
            self.path_since[i] = now;
            self.actions.push_back(Action::OpenPath {
                path: i as u8,
                addr,
            });
            self.events.push_back(ProxyEvent::RelayMoved {
                path: i as u8,
                from: relay,
                to: id,
            });
            // Tell the exit where the path now answers.
            self.send_paths(now);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The engine on a virtual clock against a minimal node (PING → PONG, FLOW_OPEN, DATA
    //! echoed back on the same flow): no sockets, no sleeping, minutes of session time in
    //! milliseconds. The whole node core runs against it in `simulator/tests/virtual_net.rs`.

    use super::*;
    use plg_proto::session::{KEYING_MATERIAL_LEN, Role};

    const KEYS: [u8; KEYING_MATERIAL_LEN] = [7; KEYING_MATERIAL_LEN];
    const ONE_WAY: Duration = Duration::from_millis(10);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn node(id: &str, data: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            server_name: format!("{id}.nodes.plg"),
            region: String::new(),
            control_addr: data.into(),
            data_addr: data.into(),
            ..Default::default()
        }
    }

    /// A node that answers: which paths reach it (both ways), and its session.
    struct FakeNode {
        session: Session,
        up: Vec<bool>,
        flows: std::collections::HashMap<u32, SocketAddr>,
        /// Data frames forwarded to game servers.
        forwarded: u64,
        /// Send each answer to data on every path (one sealed copy), as a duplicating node does.
        down_all: bool,
    }

    impl FakeNode {
        fn new(paths: usize) -> FakeNode {
            FakeNode {
                session: Session::new(Role::Node, 1, &KEYS),
                up: vec![true; paths],
                flows: std::collections::HashMap::new(),
                forwarded: 0,
                down_all: false,
            }
        }

        /// Handles one client datagram; returns the answers (path, bytes).
        fn handle(&mut self, mut d: Vec<u8>) -> Vec<(u8, Vec<u8>)> {
            let Ok((h, f)) = self.session.open(&mut d) else {
                return vec![];
            };
            let mut out = Vec::new();
            let reply = match f {
                Frame::Ping { id, timestamp_us } => Some(Frame::Pong { id, timestamp_us }),
                Frame::FlowOpen { flow, dst } => {
                    self.flows.insert(flow, dst);
                    None
                }
                Frame::Data { flow, payload } if self.flows.contains_key(&flow) => {
                    self.forwarded += 1;
                    let p = payload.to_vec();
                    self.session
                        .seal(h.path, &Frame::Data { flow, payload: &p }, &mut out);
                    if self.down_all {
                        return (0..self.up.len() as u8).map(|p| (p, out.clone())).collect();
                    }
                    return vec![(h.path, out)];
                }
                Frame::Data { flow, .. } => Some(Frame::error(ErrorCode::UnknownFlow, flow)),
                _ => None,
            };
            match reply {
                Some(r) => {
                    self.session.seal(h.path, &r, &mut out);
                    vec![(h.path, out)]
                }
                None => vec![],
            }
        }
    }

    /// The client engine, the fake node and the datagrams in flight between them.
    struct Net {
        now: Instant,
        conn: ClientConn,
        node: FakeNode,
        /// (arrival, to the node?, path, bytes)
        wire: Vec<(Instant, bool, u8, Vec<u8>)>,
        delivered: Vec<(SocketAddr, Vec<u8>)>,
        events: Vec<ProxyEvent>,
        actions: Vec<Action>,
    }

    impl Net {
        fn new(paths: usize, cfg: ConnConfig, relays: Vec<Option<String>>) -> Net {
            let now = Instant::now();
            let route = Route {
                node: node("exit", "10.0.0.1:443"),
                backup: "backup".into(),
                data_addr: addr("10.0.0.1:443"),
                path_addrs: vec![addr("10.0.0.1:443"); paths],
                relays,
                candidates: vec![
                    node("other", "10.0.0.3:443"),
                    node("backup", "10.0.0.2:443"),
                ],
            };
            let conn = ClientConn::new(
                now,
                Session::new(Role::Client, 1, &KEYS),
                route,
                8,
                cfg,
                Arc::default(),
            )
            .unwrap();
            Net {
                now,
                conn,
                node: FakeNode::new(paths),
                wire: Vec::new(),
                delivered: Vec::new(),
                events: Vec::new(),
                actions: Vec::new(),
            }
        }

        fn drain(&mut self) {
            while let Some(t) = self.conn.poll_transmit() {
                if let Via::Path(p) = t.via {
                    self.wire.push((self.now + ONE_WAY, true, p, t.bytes));
                }
            }
            while let Some(e) = self.conn.poll_event() {
                self.events.push(e);
            }
            while let Some(a) = self.conn.poll_action() {
                self.actions.push(a);
            }
        }

        /// Runs the network until `until`, with the game sending `game()`'s packets every
        /// `every` (if any).
        fn run(
            &mut self,
            until: Duration,
            every: Option<Duration>,
            mut game: impl FnMut(u64) -> (SocketAddr, SocketAddr),
        ) {
            let end = self.now + until;
            let mut next_game = self.now;
            let mut n = 0u64;
            while self.now < end {
                self.drain();
                let next_wire = self.wire.iter().map(|w| w.0).min();
                let mut t = self.conn.poll_timeout().min(end);
                if let Some(w) = next_wire {
                    t = t.min(w);
                }
                if every.is_some() {
                    t = t.min(next_game);
                }
                self.now = t.max(self.now);
                if let Some(e) = every
                    && self.now >= next_game
                {
                    let (g, s) = game(n);
                    self.conn.handle_game(self.now, g, s, &n.to_be_bytes());
                    n += 1;
                    next_game += e;
                }
                let due: Vec<_> = {
                    let now = self.now;
                    let (due, rest) = self.wire.drain(..).partition(|w| w.0 <= now);
                    self.wire = rest;
                    due
                };
                for (_, to_node, path, bytes) in due {
                    if !self.node.up[path as usize] {
                        continue;
                    }
                    if to_node {
                        for (p, b) in self.node.handle(bytes) {
                            self.wire.push((self.now + ONE_WAY, false, p, b));
                        }
                    } else {
                        let mut b = bytes;
                        if let Some(d) =
                            self.conn.handle_datagram(self.now, Via::Path(path), &mut b)
                        {
                            self.delivered.push((d.game, d.payload.to_vec()));
                        }
                    }
                }
                if self.now >= self.conn.poll_timeout() {
                    self.conn.handle_timeout(self.now);
                }
            }
            self.drain();
        }
    }

    fn cfg(policy: Redundancy) -> ConnConfig {
        ConnConfig {
            policy,
            protection: Protection::Never,
            ..ConnConfig::default()
        }
    }

    #[test]
    fn a_new_source_port_every_second_never_fills_the_flow_table() {
        // The dashboard pinger of old: a new socket (flow) per second, for five minutes,
        // beside the game's own flow at 64 packets/s.
        let mut net = Net::new(1, cfg(Redundancy::Single), vec![]);
        let server = addr("1.2.3.4:27015");
        let tick = Duration::from_millis(1000 / 64);
        net.run(Duration::from_secs(300), Some(tick), |n| {
            if n % 64 == 0 {
                // One probe a second from a fresh port.
                (
                    SocketAddr::from(([127, 0, 0, 1], 40_000 + (n / 64) as u16)),
                    server,
                )
            } else {
                (addr("127.0.0.1:5000"), server)
            }
        });
        let sent = net.conn.stats().from_game.load(Ordering::Relaxed);
        assert!(sent >= 19_000, "{sent}");
        assert!(
            !net.events.contains(&ProxyEvent::TooManyFlows),
            "{:?}",
            net.events
        );
        // Every packet came back (lossless network), including the last probes.
        assert!(
            net.delivered.len() as u64 >= sent - 5,
            "{} of {sent}",
            net.delivered.len()
        );
        // Idle flows were forgotten (about a minute of probe ports plus the game's), and
        // when a second's probe found every slot taken, a quiet one gave way.
        assert!(
            net.conn.flow_count() <= MAX_FLOWS,
            "{}",
            net.conn.flow_count()
        );
    }

    #[test]
    fn more_than_the_cap_at_once_reuses_the_least_recently_used_quiet_flow() {
        let mut net = Net::new(1, cfg(Redundancy::Single), vec![]);
        let server = addr("1.2.3.4:27015");
        // 64 flows opened one after another, then a 65th once the first is quiet.
        net.run(
            Duration::from_millis(635),
            Some(Duration::from_millis(10)),
            |n| (SocketAddr::from(([127, 0, 0, 1], 1000 + n as u16)), server),
        );
        assert_eq!(net.conn.flow_count(), 64);
        assert!(
            !net.events.contains(&ProxyEvent::TooManyFlows),
            "{:?}",
            net.events
        );
        // Right away: all 64 are recent, the 65th is refused and said so.
        net.conn
            .handle_game(net.now, addr("127.0.0.1:9999"), server, b"x");
        net.drain();
        assert!(net.events.contains(&ProxyEvent::TooManyFlows));
        // After FLOW_EVICT_AFTER the oldest gives way.
        net.events.clear();
        net.run(FLOW_EVICT_AFTER, None, |_| unreachable!());
        net.conn
            .handle_game(net.now, addr("127.0.0.1:9999"), server, b"y");
        net.run(Duration::from_millis(100), None, |_| unreachable!());
        assert!(
            !net.events.contains(&ProxyEvent::TooManyFlows),
            "{:?}",
            net.events
        );
        assert!(
            net.delivered
                .iter()
                .any(|(g, p)| *g == addr("127.0.0.1:9999") && p == b"y")
        );
    }

    #[test]
    fn each_path_counts_the_copies_it_delivered_first() {
        let mut net = Net::new(2, cfg(Redundancy::Duplicate), vec![]);
        net.node.down_all = true;
        let game = |_| (addr("127.0.0.1:5000"), addr("1.2.3.4:27015"));
        let every = Some(Duration::from_millis(16));
        net.run(Duration::from_secs(2), every, game);
        let v = net.conn.paths_view(net.now);
        let (p0, p1) = (v.paths[0], v.paths[1]);
        let dups = net.conn.stats.duplicates.load(Ordering::Relaxed);
        // Equal paths: path 0's copy is handled first, path 1's is the late one.
        assert!(p0.first > 100 && p1.late > 100, "{p0:?} {p1:?}");
        assert_eq!(p0.late + p1.late, dups);
        // Path 0 dies: path 1 now delivers first.
        net.node.up[0] = false;
        let before = p1.first;
        net.run(Duration::from_secs(2), every, game);
        let p1 = net.conn.paths_view(net.now).paths[1];
        assert!(p1.first >= before + 100, "{p1:?}");
    }

    #[test]
    fn equal_lossless_paths_never_flap() {
        let mut net = Net::new(2, cfg(Redundancy::ADAPTIVE), vec![]);
        net.run(
            Duration::from_secs(120),
            Some(Duration::from_millis(16)),
            |_| (addr("127.0.0.1:5000"), addr("1.2.3.4:27015")),
        );
        let changes: Vec<_> = net
            .events
            .iter()
            .filter(|e| matches!(e, ProxyEvent::PrimaryChanged { .. }))
            .collect();
        assert!(changes.is_empty(), "{changes:?}");
        let v = net.conn.paths_view(net.now);
        assert!(v.paths.iter().all(|p| p.loss < 0.01), "{v:?}");
    }

    #[test]
    fn a_silent_node_is_rebound_then_failed_over_to_the_backup_first() {
        let mut net = Net::new(2, cfg(Redundancy::Single), vec![None, Some("relay".into())]);
        net.run(
            Duration::from_secs(2),
            Some(Duration::from_millis(16)),
            |_| (addr("127.0.0.1:5000"), addr("1.2.3.4:27015")),
        );
        assert!(net.actions.is_empty(), "{:?}", net.actions);
        net.node.up = vec![false, false];
        net.run(Duration::from_millis(600), None, |_| unreachable!());
        // Half a second of silence: fresh sockets, same destinations (a new local address?).
        assert_eq!(net.actions, vec![Action::Rebind]);
        net.actions.clear();
        net.run(Duration::from_millis(500), None, |_| unreachable!());
        let Some(Action::FailOver { candidates }) = net.actions.first() else {
            panic!("{:?}", net.actions)
        };
        let ids: Vec<_> = candidates.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["backup", "other"]);
        // Asked once, not on every timer.
        net.run(Duration::from_secs(2), None, |_| unreachable!());
        assert_eq!(
            net.actions
                .iter()
                .filter(|a| matches!(a, Action::FailOver { .. }))
                .count(),
            1
        );
        // The backup takes it: the direct path moves there, the relayed one keeps its relay,
        // flows are opened again and traffic flows.
        net.actions.clear();
        net.node = FakeNode::new(2);
        let before = net.delivered.len();
        net.conn.handle_switched(
            net.now,
            node("backup", "10.0.0.2:443"),
            Session::new(Role::Client, 1, &KEYS),
            addr("10.0.0.2:443"),
            "other".into(),
        );
        net.drain();
        assert_eq!(
            net.actions,
            vec![
                Action::OpenPath {
                    path: 0,
                    addr: addr("10.0.0.2:443")
                },
                Action::OpenPath {
                    path: 1,
                    addr: addr("10.0.0.1:443")
                },
            ]
        );
        assert!(
            matches!(net.events.last(), Some(ProxyEvent::Failover { to, .. }) if to == "backup")
        );
        assert_eq!(net.conn.paths_view(net.now).node, "backup");
        net.run(
            Duration::from_secs(1),
            Some(Duration::from_millis(16)),
            |_| (addr("127.0.0.1:5000"), addr("1.2.3.4:27015")),
        );
        assert!(
            net.delivered.len() > before + 50,
            "{}",
            net.delivered.len() - before
        );
    }

    #[test]
    fn a_silent_relay_moves_to_a_spare_node_without_failover() {
        let mut net = Net::new(2, cfg(Redundancy::Single), vec![None, Some("relay".into())]);
        net.run(
            Duration::from_secs(1),
            Some(Duration::from_millis(16)),
            |_| (addr("127.0.0.1:5000"), addr("1.2.3.4:27015")),
        );
        net.node.up[1] = false;
        net.run(
            Duration::from_secs(4),
            Some(Duration::from_millis(16)),
            |_| (addr("127.0.0.1:5000"), addr("1.2.3.4:27015")),
        );
        assert!(
            net.events.contains(&ProxyEvent::RelayMoved {
                path: 1,
                from: "relay".into(),
                to: "other".into()
            }),
            "{:?}",
            net.events
        );
        assert!(net.actions.contains(&Action::OpenPath {
            path: 1,
            addr: addr("10.0.0.3:443")
        }));
        assert!(
            !net.actions
                .iter()
                .any(|a| matches!(a, Action::FailOver { .. }))
        );
        assert_eq!(
            net.conn.paths_view(net.now).relays,
            vec![None, Some("other".into())]
        );
    }

    #[test]
    fn protected_mode_when_udp_is_silent_and_the_control_connection_alive() {
        let mut net = Net::new(
            1,
            ConnConfig {
                protection: Protection::Auto,
                ..cfg(Redundancy::Single)
            },
            vec![],
        );
        net.node.up = vec![false];
        // The control connection keeps receiving (keep-alives answered).
        for i in 0..12u64 {
            net.conn.handle_control(
                net.now,
                ControlStatus {
                    rx_packets: i,
                    usable: true,
                    draining: false,
                },
            );
            net.run(Duration::from_millis(100), None, |_| unreachable!());
        }
        assert!(
            net.events
                .iter()
                .any(|e| matches!(e, ProxyEvent::ProtectedMode { on: true, .. })),
            "{:?}",
            net.events
        );
        assert!(net.conn.protected());
        // Game packets now leave as QUIC datagrams.
        net.conn
            .handle_game(net.now, addr("127.0.0.1:5000"), addr("1.2.3.4:1"), b"z");
        let mut quic = 0;
        while let Some(t) = net.conn.poll_transmit() {
            quic += u32::from(t.via == Via::Quic);
        }
        assert!(quic >= 2, "FLOW_OPEN and DATA over QUIC: {quic}");
    }

    #[test]
    fn a_draining_node_is_left_at_once_and_only_once() {
        let mut net = Net::new(1, cfg(Redundancy::Single), vec![]);
        net.run(Duration::from_millis(200), None, |_| unreachable!());
        let draining = ControlStatus {
            rx_packets: 1,
            usable: false,
            draining: true,
        };
        net.conn.handle_control(net.now, draining);
        net.conn.handle_timeout(net.now);
        net.drain();
        assert!(matches!(net.actions.first(), Some(Action::FailOver { .. })));
        net.conn.handle_failover_failed(net.now, "nobody".into());
        net.conn.handle_control(net.now, draining);
        net.run(Duration::from_millis(300), None, |_| unreachable!());
        assert_eq!(
            net.actions
                .iter()
                .filter(|a| matches!(a, Action::FailOver { .. }))
                .count(),
            1,
            "{:?}",
            net.actions
        );
    }

    #[test]
    fn close_is_sent_on_every_path_and_then_nothing() {
        let mut net = Net::new(2, cfg(Redundancy::Single), vec![]);
        net.conn.close();
        let closes: Vec<_> = std::iter::from_fn(|| net.conn.poll_transmit()).collect();
        assert_eq!(closes.len(), 2);
        net.conn
            .handle_game(net.now, addr("127.0.0.1:5000"), addr("1.2.3.4:1"), b"z");
        net.conn.handle_timeout(net.now + Duration::from_secs(5));
        assert!(net.conn.poll_transmit().is_none());
    }
}
