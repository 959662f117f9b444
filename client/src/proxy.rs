//! The client's data path: packets from a capture backend ([`crate::capture`]) become flows
//! through the session; each (game address, server address) pair is one flow. Frames go out
//! on the paths the redundancy policy picks ([`plg_proto::paths`]); the first copy of every
//! reply is delivered, the rest dropped by the replay window.
//!
//! Protected mode: when the node's UDP data port gets no answer while the control connection
//! is alive (or the tunnel asks for it), the same sealed frames travel as QUIC datagrams on
//! the control connection, one path at a time; UDP is re-probed every few seconds and used
//! again as soon as it answers (`docs/protocol.md`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plg_proto::frame::{ErrorCode, Frame, Header, MAX_DATAGRAM, MAX_PAYLOAD};
use plg_proto::paths::{PathConfig, PathMask, PathScheduler, PathStats, Redundancy};
use plg_proto::replay::ReplayError;
use plg_proto::session::OpenError;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::billing::NodeInfo;
use crate::capture::{Capture, ProxyCapture};
use crate::tunnel::{DATAGRAM_BUFFER, Protection, Tunnel, TunnelError};

/// Most game-side flows one proxy carries.
const MAX_FLOWS: usize = 64;
/// How often to repeat control state (unconfirmed FLOW_OPENs, the PATHS mask) and publish stats.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// Automatic protected mode starts after UDP has been silent this long (or the failover
/// delay, if shorter) while the control connection is alive.
const PROTECT_AFTER: Duration = Duration::from_secs(1);
/// A relayed path silent this long, while the session answers on another path, has lost its
/// relay: it moves to another node.
const RELAY_SILENT: Duration = Duration::from_secs(3);
/// How often protected mode re-probes UDP.
const REPROBE_EVERY: Duration = Duration::from_secs(2);
/// Ping ids with this bit set are UDP re-probes, not the path scheduler's probes.
const REPROBE_ID: u64 = 1 << 63;

/// Which transport a frame from the node arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The UDP socket of this path.
    Udp(u8),
    /// A QUIC datagram on the control connection (protected mode).
    Quic,
}

/// Live counters of a running proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Packets the game sent us.
    pub from_game: AtomicU64,
    /// Packets delivered back to the game.
    pub to_game: AtomicU64,
    /// Payload bytes from the game.
    pub bytes_up: AtomicU64,
    /// Payload bytes to the game.
    pub bytes_down: AtomicU64,
    /// Sealed data-frame bytes sent on all paths (wire overhead = this / `bytes_up`).
    pub wire_bytes_up: AtomicU64,
    /// Downstream copies dropped because another path delivered them first.
    pub duplicates: AtomicU64,
    /// Datagrams from the node dropped (forged, replayed outside the window, malformed).
    pub dropped: AtomicU64,
    /// Game packets dropped because the node refused their destination.
    pub refused: AtomicU64,
    /// Game packets too large to carry.
    pub oversize: AtomicU64,
    /// Smoothed RTT to the node on the primary path in microseconds (0 = none yet).
    pub rtt_us: AtomicU64,
    /// Pongs received.
    pub pongs: AtomicU64,
    /// Frames sent as QUIC datagrams (protected mode).
    pub protected_up: AtomicU64,
    /// Authenticated frames received as QUIC datagrams (protected mode).
    pub protected_down: AtomicU64,
}

/// The paths' state, published a few times a second.
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
    /// The game used more flows than the proxy carries.
    TooManyFlows,
    /// Every path to the node went silent; the session moved to another node.
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
}

#[derive(Debug)]
struct FlowState {
    game: SocketAddr,
    server: SocketAddr,
    confirmed: bool,
    /// The node refused the destination: stop sending for this flow.
    refused: bool,
}

/// Where to take the session when its node goes silent: the same ticket is presented to the
/// next candidate (a node accepts any valid ticket), so no new ticket is needed.
#[derive(Clone, Debug)]
pub struct Failover {
    /// The session's ticket.
    pub ticket: Vec<u8>,
    /// Mesh CA certificate (PEM).
    pub ca_pem: String,
    /// Other nodes, best first.
    pub candidates: Vec<NodeInfo>,
    /// How long every path must be silent before failing over.
    pub after: Duration,
    /// For each path, the id of the node relaying it (`None` or missing: straight to the
    /// exit). A relayed path keeps its relay through a failover — the relay finds the
    /// session's new exit in the mesh — and a direct path moves to the new exit.
    pub relays: Vec<Option<String>>,
}

/// A running accelerated session with its capture backend.
#[derive(Debug)]
pub struct Proxy {
    /// Where the game should send its packets (proxy capture), or `0.0.0.0:0`.
    pub local_addr: SocketAddr,
    /// The capture backend, described.
    pub capture: String,
    /// Live counters.
    pub stats: Arc<ProxyStats>,
    /// Path health, updated a few times a second.
    pub paths: watch::Receiver<PathsView>,
    /// Events for the user.
    pub events: mpsc::Receiver<ProxyEvent>,
    stop: watch::Sender<bool>,
    switch: mpsc::Sender<Switch>,
    /// Tickets renewed in place, for later failovers.
    renewed: mpsc::Sender<Vec<u8>>,
    /// The current node's control connection (it changes on failover).
    control: watch::Receiver<quinn::Connection>,
    task: JoinHandle<Tunnel>,
}

/// A new session to move onto: (node, its tunnel, the ticket it was opened with).
type Switch = (NodeInfo, Tunnel, Vec<u8>);

impl Proxy {
    /// Starts proxying `listen` (the game's side) to `dst` through `tunnel` on one path.
    pub async fn start(
        tunnel: Tunnel,
        listen: SocketAddr,
        dst: SocketAddr,
    ) -> std::io::Result<Proxy> {
        let data = tunnel.data_addr;
        Self::start_multipath(tunnel, listen, dst, vec![data], Redundancy::Single).await
    }

    /// Starts proxying over several paths: `paths[i]` is where path `i`'s frames are sent (the
    /// node's data address, a relay, or an impairment link in front of either).
    pub async fn start_multipath(
        tunnel: Tunnel,
        listen: SocketAddr,
        dst: SocketAddr,
        paths: Vec<SocketAddr>,
        policy: Redundancy,
    ) -> std::io::Result<Proxy> {
        let capture = ProxyCapture::bind(listen, dst).await?;
        let local_addr = capture.local_addr()?;
        let mut p = Self::start_with(tunnel, capture, paths, policy, None).await?;
        p.local_addr = local_addr;
        Ok(p)
    }

    /// Starts carrying whatever `capture` captures over `paths` (see [`Proxy::start_multipath`]).
    pub async fn start_with<C: Capture>(
        tunnel: Tunnel,
        capture: C,
        paths: Vec<SocketAddr>,
        policy: Redundancy,
        failover: Option<Failover>,
    ) -> std::io::Result<Proxy> {
        let max = (tunnel.accept.max_paths as usize).clamp(1, plg_proto::paths::MAX_PATHS);
        if paths.is_empty() || paths.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} paths requested, the session allows 1..={max}",
                    paths.len()
                ),
            ));
        }
        let (rx_tx, rx) = mpsc::channel(1024);
        let (sockets, readers) = open_paths(&paths, &rx_tx).await?;
        let quic_reader = Reader(tokio::spawn(read_quic(
            tunnel.connection.clone(),
            rx_tx.clone(),
        )));
        let stats = Arc::new(ProxyStats::default());
        let (events_tx, events) = mpsc::channel(64);
        let (paths_tx, paths_rx) = watch::channel(PathsView::default());
        let (stop, stop_rx) = watch::channel(false);
        let (switch, switch_rx) = mpsc::channel(1);
        let (renewed, renewed_rx) = mpsc::channel(1);
        let (control_tx, control) = watch::channel(tunnel.connection.clone());
        let sched = PathScheduler::new(
            paths.len(),
            policy,
            PathConfig::default(),
            Instant::now().into_std(),
        );
        let description = capture.describe();
        let driver = Driver {
            tunnel,
            capture,
            sockets,
            sched,
            stats: stats.clone(),
            events: events_tx,
            paths: paths_tx,
            flows: Vec::new(),
            by_game: HashMap::new(),
            out: Vec::with_capacity(MAX_DATAGRAM),
            start: Instant::now(),
            readers,
            rx_tx,
            failover,
            last_heard: Instant::now(),
            failing_over: None,
            protected: false,
            udp_heard: Instant::now(),
            protected_since: Instant::now(),
            next_reprobe: Instant::now(),
            quic_reader,
            quic_heard: Instant::now(),
            quic_rx: 0,
            control_tx,
            path_since: vec![Instant::now(); paths.len()],
            retired: Vec::new(),
        };
        let task = tokio::spawn(driver.run(rx, stop_rx, switch_rx, renewed_rx));
        let local_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        Ok(Proxy {
            local_addr,
            capture: description,
            stats,
            paths: paths_rx,
            events,
            stop,
            switch,
            renewed,
            control,
            task,
        })
    }

    /// Moves the running session onto `tunnel`, a session opened with `node` using `ticket`
    /// (a renewed ticket, or a better node): flows are reopened there and later failovers
    /// present `ticket`. Reported like a failover ([`ProxyEvent::Failover`]). Returns false
    /// if the proxy has stopped.
    pub async fn switch_tunnel(&self, node: NodeInfo, tunnel: Tunnel, ticket: Vec<u8>) -> bool {
        self.switch.send((node, tunnel, ticket)).await.is_ok()
    }

    /// The current node's control connection (it changes on failover), e.g. to renew the
    /// session in place with [`Tunnel::renew_on`].
    pub fn control_connection(&self) -> quinn::Connection {
        self.control.borrow().clone()
    }

    /// Makes later failovers present `ticket` (after an in-place renewal).
    pub async fn set_failover_ticket(&self, ticket: Vec<u8>) {
        let _ = self.renewed.send(ticket).await;
    }

    /// Sends CLOSE to the node, closes the control connection and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Ok(tunnel) = self.task.await {
            tunnel.close().await;
        }
    }
}

/// Opens one connected socket per path and a reader task for each.
async fn open_paths(
    paths: &[SocketAddr],
    tx: &mpsc::Sender<(Via, Vec<u8>)>,
) -> std::io::Result<(Vec<Arc<UdpSocket>>, Vec<Reader>)> {
    let mut sockets = Vec::new();
    let mut readers = Vec::new();
    for (i, addr) in paths.iter().enumerate() {
        let (s, r) = open_path(i as u8, *addr, tx).await?;
        sockets.push(s);
        readers.push(r);
    }
    Ok((sockets, readers))
}

/// Path `path`'s socket, sending to `addr`, and the task reading it.
async fn open_path(
    path: u8,
    addr: SocketAddr,
    tx: &mpsc::Sender<(Via, Vec<u8>)>,
) -> std::io::Result<(Arc<UdpSocket>, Reader)> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = Arc::new(UdpSocket::bind(bind).await?);
    s.connect(addr).await?;
    let reader = Reader(tokio::spawn(read_path(s.clone(), path, tx.clone())));
    Ok((s, reader))
}

/// A path reader task, stopped when dropped.
struct Reader(JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type FailoverResult = Result<(NodeInfo, Tunnel), String>;

/// Tries the candidates in order with the same ticket.
async fn fail_over(f: Failover, tx: oneshot::Sender<FailoverResult>) {
    let mut errors = Vec::new();
    for node in &f.candidates {
        let Ok(addr) = node.control_addr.parse() else {
            errors.push(format!("{}: bad address", node.id));
            continue;
        };
        match Tunnel::open(addr, &node.server_name, &f.ca_pem, &f.ticket).await {
            Ok(t) => {
                let _ = tx.send(Ok((node.clone(), t)));
                return;
            }
            Err(e @ TunnelError::Rejected { .. }) | Err(e) => {
                errors.push(format!("{}: {e}", node.id))
            }
        }
    }
    let reason = if errors.is_empty() {
        "no other node is known".to_string()
    } else {
        errors.join("; ")
    };
    let _ = tx.send(Err(reason));
}

/// Reads the control connection's datagrams (protected mode) into the driver's channel until
/// the connection closes.
async fn read_quic(conn: quinn::Connection, tx: mpsc::Sender<(Via, Vec<u8>)>) {
    while let Ok(d) = conn.read_datagram().await {
        if tx.send((Via::Quic, d.to_vec())).await.is_err() {
            return;
        }
    }
}

/// Reads one path's socket into the driver's channel.
async fn read_path(socket: Arc<UdpSocket>, path: u8, tx: mpsc::Sender<(Via, Vec<u8>)>) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                if tx.send((Via::Udp(path), buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            // ICMP unreachable on a connected socket: the path may come back.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

struct Driver<C> {
    tunnel: Tunnel,
    capture: C,
    sockets: Vec<Arc<UdpSocket>>,
    sched: PathScheduler,
    stats: Arc<ProxyStats>,
    events: mpsc::Sender<ProxyEvent>,
    paths: watch::Sender<PathsView>,
    flows: Vec<FlowState>,
    by_game: HashMap<(SocketAddr, SocketAddr), u32>,
    out: Vec<u8>,
    start: Instant,
    readers: Vec<Reader>,
    rx_tx: mpsc::Sender<(Via, Vec<u8>)>,
    failover: Option<Failover>,
    /// Last authenticated frame from the node on any path.
    last_heard: Instant,
    failing_over: Option<oneshot::Receiver<FailoverResult>>,
    /// Frames currently travel as QUIC datagrams on the control connection.
    protected: bool,
    /// Last authenticated frame from the node over UDP (session start until the first).
    udp_heard: Instant,
    /// When protected mode last started: failover waits a full period after it.
    protected_since: Instant,
    /// Next UDP re-probe while protected.
    next_reprobe: Instant,
    quic_reader: Reader,
    /// Last time the control connection received anything (its keep-alives are answered
    /// every [`crate::tunnel::KEEP_ALIVE`]): a node that is silent on QUIC too has died, so
    /// protected mode is not tried and failover is not delayed by it.
    quic_heard: Instant,
    /// The connection's received-datagram count when last looked at.
    quic_rx: u64,
    /// Publishes the current control connection to [`Proxy::renew_in_place`].
    control_tx: watch::Sender<quinn::Connection>,
    /// When each path got its current address (a relay gets [`RELAY_SILENT`] to answer).
    path_since: Vec<Instant>,
    /// Relay nodes given up on for this session.
    retired: Vec<String>,
}

impl<C: Capture> Driver<C> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(Via, Vec<u8>)>,
        mut stop: watch::Receiver<bool>,
        mut switch: mpsc::Receiver<Switch>,
        mut renewed: mpsc::Receiver<Vec<u8>>,
    ) -> Tunnel {
        let mut buf = vec![0u8; 65536];
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        if self.tunnel.protection == Protection::Always {
            self.enter_protected("protected mode was requested".into())
                .await;
        }
        loop {
            let wake = Instant::from_std(self.sched.poll_timeout());
            tokio::select! {
                r = self.capture.recv(&mut buf) => match r {
                    Ok(c) => self.on_game(&buf[..c.len], c.game, c.server).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "capture receive error");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some((via, mut d)) = rx.recv() => self.on_node(via, &mut d).await,
                _ = tokio::time::sleep_until(wake) => self.on_timer().await,
                _ = housekeeping.tick() => self.on_housekeeping().await,
                Ok(r) = async { self.failing_over.as_mut().expect("guarded").await }, if self.failing_over.is_some() => {
                    self.failing_over = None;
                    self.on_failover(r).await;
                }
                Some(ticket) = renewed.recv() => {
                    if let Some(f) = &mut self.failover {
                        f.ticket = ticket;
                    }
                }
                Some((node, tunnel, ticket)) = switch.recv() => {
                    if let Some(f) = &mut self.failover {
                        f.ticket = ticket;
                    }
                    self.on_failover(Ok((node, tunnel))).await;
                }
                _ = stop.changed() => break,
            }
        }
        self.tunnel
            .session
            .seal(0, &Frame::Close { reason: 0 }, &mut self.out);
        if !self.protected {
            for s in &self.sockets {
                let _ = s.send(&self.out).await;
            }
        } else if self.send_quic() {
            // quinn has no flush, and closing the connection discards queued datagrams: wait
            // (briefly) until the CLOSE has left the queue.
            let conn = self.tunnel.connection.clone();
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while conn.datagram_send_buffer_space() < DATAGRAM_BUFFER {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await;
        }
        self.tunnel
    }

    /// Sends `frame` on every path in `mask` with one shared sequence number; in protected
    /// mode, once, as a QUIC datagram sealed for one path of the mask.
    async fn send(&mut self, mask: PathMask, frame: &Frame<'_>) -> u64 {
        let seq = self.tunnel.session.take_seq();
        let mut bytes = 0;
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
            self.tunnel
                .session
                .seal_with_seq(path, seq, frame, &mut self.out);
            if self.send_quic() {
                bytes += self.out.len() as u64;
            }
            return bytes;
        }
        for p in mask.iter() {
            self.tunnel
                .session
                .seal_with_seq(p, seq, frame, &mut self.out);
            if self.sockets[p as usize].send(&self.out).await.is_ok() {
                bytes += self.out.len() as u64;
            }
        }
        bytes
    }

    /// Sends the sealed frame in `self.out` as a QUIC datagram on the control connection.
    fn send_quic(&self) -> bool {
        match self
            .tunnel
            .connection
            .send_datagram(self.out.clone().into())
        {
            Ok(()) => {
                self.stats.protected_up.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(quinn::SendDatagramError::TooLarge) => {
                // The path's QUIC datagram limit (about 1,150-1,400 bytes) is below UDP's.
                self.stats.oversize.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a QUIC datagram");
                false
            }
        }
    }

    fn all_paths(&self) -> PathMask {
        PathMask(((1u16 << self.sockets.len()) - 1) as u8)
    }

    /// The downstream paths to ask the node for: in protected mode only the primary (every
    /// copy would come over the same QUIC connection).
    fn downstream(&self, now: std::time::Instant) -> PathMask {
        if self.protected {
            PathMask::only(self.sched.primary())
        } else {
            self.sched.downstream(now)
        }
    }

    /// Whether the control connection can carry the frames.
    fn quic_usable(&self) -> bool {
        let c = &self.tunnel.connection;
        c.close_reason().is_none() && c.max_datagram_size().is_some()
    }

    /// Switches the frames to QUIC datagrams and tells the node and the user.
    async fn enter_protected(&mut self, reason: String) {
        if !self.quic_usable() {
            let why = "protected mode is not available: the node's control connection does not carry QUIC datagrams".to_string();
            tracing::warn!("{why}");
            let _ = self.events.try_send(ProxyEvent::ProtectedMode {
                on: false,
                reason: why,
            });
            return;
        }
        let now = Instant::now();
        self.protected = true;
        self.protected_since = now;
        self.next_reprobe = now + REPROBE_EVERY;
        tracing::warn!(node = %self.tunnel.data_addr, %reason, "protected mode on");
        let _ = self
            .events
            .try_send(ProxyEvent::ProtectedMode { on: true, reason });
        // PATHS and unconfirmed FLOW_OPENs over QUIC: the node learns where to answer.
        self.repeat_control().await;
    }

    /// Back to UDP after it answered again.
    async fn leave_protected(&mut self, path: u8) {
        self.protected = false;
        let reason =
            format!("the node's UDP port answers again on path {path}; frames travel over UDP");
        tracing::info!(node = %self.tunnel.data_addr, "protected mode off");
        let _ = self
            .events
            .try_send(ProxyEvent::ProtectedMode { on: false, reason });
        // PATHS on every UDP path: the node answers over UDP again.
        self.repeat_control().await;
    }

    /// While protected: one PING per path over UDP; an answer ends protected mode.
    async fn reprobe(&mut self) {
        let now = Instant::now();
        self.next_reprobe = now + REPROBE_EVERY;
        let ts = self.start.elapsed().as_micros() as u64;
        for p in 0..self.sockets.len() {
            let seq = self.tunnel.session.take_seq();
            let ping = Frame::Ping {
                id: REPROBE_ID | p as u64,
                timestamp_us: ts,
            };
            self.tunnel
                .session
                .seal_with_seq(p as u8, seq, &ping, &mut self.out);
            let _ = self.sockets[p].send(&self.out).await;
        }
        // Where only the upstream half of UDP works, the pings just pointed the node's paths at
        // our UDP sockets: point the downstream path back at the control connection.
        let down = self.downstream(now.into_std());
        self.send(down, &Frame::Paths { downstream: down.0 }).await;
    }

    async fn on_game(&mut self, payload: &[u8], game: SocketAddr, server: SocketAddr) {
        let s = self.stats.clone();
        s.from_game.fetch_add(1, Ordering::Relaxed);
        if payload.len() > MAX_PAYLOAD {
            s.oversize.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let flow = match self.by_game.get(&(game, server)) {
            Some(f) => *f,
            None => {
                if self.flows.len() >= MAX_FLOWS {
                    let _ = self.events.try_send(ProxyEvent::TooManyFlows);
                    return;
                }
                let f = self.flows.len() as u32;
                self.flows.push(FlowState {
                    game,
                    server,
                    confirmed: false,
                    refused: false,
                });
                self.by_game.insert((game, server), f);
                let all = self.all_paths();
                self.send(
                    all,
                    &Frame::FlowOpen {
                        flow: f,
                        dst: server,
                    },
                )
                .await;
                f
            }
        };
        if self.flows[flow as usize].refused {
            s.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mask = self
            .sched
            .upstream(Instant::now().into_std(), payload.len());
        let wire = self.send(mask, &Frame::Data { flow, payload }).await;
        s.bytes_up
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        s.wire_bytes_up.fetch_add(wire, Ordering::Relaxed);
    }

    async fn on_node(&mut self, via: Via, datagram: &mut [u8]) {
        let s = self.stats.clone();
        let now = Instant::now().into_std();
        if datagram.len() > MAX_DATAGRAM {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Over QUIC every path shares the connection: the frame's own path id is its path.
        let path = match via {
            Via::Udp(p) => p,
            Via::Quic => match Header::decode(datagram) {
                Ok(h) => h.path,
                Err(_) => {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        let (h, frame) = match self.tunnel.session.open(datagram) {
            Ok(x) => x,
            Err(OpenError::Replay(ReplayError::Duplicate)) => {
                // The other path's copy: the path is alive even though the frame is not new.
                self.sched.on_heard(now, path);
                s.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.last_heard = Instant::now();
        match via {
            Via::Udp(p) => {
                self.udp_heard = self.last_heard;
                if self.protected && self.tunnel.protection == Protection::Auto {
                    self.leave_protected(p).await;
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
        match frame {
            Frame::Data { flow, payload } => {
                if let Some(f) = self.flows.get_mut(flow as usize) {
                    f.confirmed = true;
                    if self.capture.send(f.game, f.server, payload).await.is_ok() {
                        s.to_game.fetch_add(1, Ordering::Relaxed);
                        s.bytes_down
                            .fetch_add(payload.len() as u64, Ordering::Relaxed);
                    }
                }
            }
            Frame::Pong { id, .. } if same_path => {
                let before = self.sched.primary();
                self.sched.on_pong(now, path, id);
                s.pongs.fetch_add(1, Ordering::Relaxed);
                self.after_change(before);
            }
            Frame::Error { code, flow, .. } => {
                let server = self.flows.get(flow as usize).map(|f| f.server);
                let ev = match (code, server) {
                    (ErrorCode::DestinationNotAllowed, Some(server)) => {
                        ProxyEvent::DestinationRefused(server)
                    }
                    _ => ProxyEvent::FlowError { flow, code },
                };
                if let Some(f) = self.flows.get_mut(flow as usize) {
                    match code {
                        // The node forgot the flow (idle expiry or restart): open it again.
                        ErrorCode::UnknownFlow => f.confirmed = false,
                        ErrorCode::DestinationNotAllowed => f.refused = true,
                        _ => {}
                    }
                }
                let _ = self.events.try_send(ev);
            }
            _ => {}
        }
    }

    fn after_change(&mut self, before: u8) {
        let after = self.sched.primary();
        if after != before {
            let _ = self.events.try_send(ProxyEvent::PrimaryChanged {
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

    async fn on_timer(&mut self) {
        let rx = self.tunnel.connection.stats().udp_rx.datagrams;
        if rx != self.quic_rx {
            self.quic_rx = rx;
            self.quic_heard = Instant::now();
        }
        if self.tunnel.protection == Protection::Auto {
            if !self.protected {
                // UDP silent but the control connection alive: the node is up and its data
                // port is blocked somewhere on the way. Tried before failing over.
                let after = self
                    .failover
                    .as_ref()
                    .map_or(PROTECT_AFTER, |f| f.after.min(PROTECT_AFTER));
                let silent = self.udp_heard.elapsed();
                let quic_alive = self.quic_heard.elapsed() < 2 * crate::tunnel::KEEP_ALIVE;
                if silent >= after && quic_alive && self.quic_usable() {
                    let reason = format!(
                        "no answer from the node's UDP data port {} for {} ms; frames travel as QUIC datagrams on the control connection",
                        self.tunnel.data_addr,
                        silent.as_millis()
                    );
                    self.enter_protected(reason).await;
                }
            } else if Instant::now() >= self.next_reprobe {
                self.reprobe().await;
            }
        }
        // In protected mode, silence counts from its start: it gets a full period to work.
        let silent_since = if self.protected {
            self.last_heard.max(self.protected_since)
        } else {
            self.last_heard
        };
        // A draining node closes the control connection with CLOSE_DRAINING: move at once,
        // not after silence. (A node that stops or crashes is noticed by its silence.)
        let drained = matches!(
            self.tunnel.connection.close_reason(),
            Some(quinn::ConnectionError::ApplicationClosed(c))
                if c.error_code == plg_proto::control::CLOSE_DRAINING.into()
        );
        if let Some(f) = &self.failover
            && self.failing_over.is_none()
            && (drained || silent_since.elapsed() >= f.after)
        {
            tracing::warn!(
                silent_ms = self.last_heard.elapsed().as_millis() as u64,
                drained,
                "failing over"
            );
            // The backup the mesh designated for this session first: it adopts the session.
            let mut f = f.clone();
            if let Some(i) = f
                .candidates
                .iter()
                .position(|c| c.id == self.tunnel.accept.backup)
            {
                let backup = f.candidates.remove(i);
                f.candidates.insert(0, backup);
            }
            let (tx, rx) = oneshot::channel();
            tokio::spawn(fail_over(f, tx));
            self.failing_over = Some(rx);
        }
        let now = Instant::now().into_std();
        let before = self.sched.primary();
        self.sched.handle_timeout(now);
        let was_down = self.downstream(now);
        while let Some((path, id)) = self.sched.poll_probe(now) {
            let ts = self.start.elapsed().as_micros() as u64;
            self.send(
                PathMask::only(path),
                &Frame::Ping {
                    id,
                    timestamp_us: ts,
                },
            )
            .await;
        }
        self.after_change(before);
        // Tell the node at once when the downstream choice changes (e.g. failover).
        let down = self.downstream(now);
        if down != was_down || self.sched.primary() != before {
            let live = self.all_paths();
            self.send(live, &Frame::Paths { downstream: down.0 }).await;
        }
    }

    async fn on_failover(&mut self, result: FailoverResult) {
        let (node, tunnel) = match result {
            Ok(x) => x,
            Err(reason) => {
                let _ = self.events.try_send(ProxyEvent::NodeLost { reason });
                // Try again after another silent period.
                self.last_heard = Instant::now();
                return;
            }
        };
        let n = self.sockets.len();
        let relays = self
            .failover
            .as_ref()
            .map(|f| f.relays.clone())
            .unwrap_or_default();
        let paths: Vec<SocketAddr> = (0..n)
            .map(|i| match relays.get(i) {
                Some(Some(r)) if *r != node.id => {
                    self.sockets[i].peer_addr().unwrap_or(tunnel.data_addr)
                }
                _ => tunnel.data_addr,
            })
            .collect();
        let (sockets, readers) = match open_paths(&paths, &self.rx_tx).await {
            Ok(x) => x,
            Err(e) => {
                let _ = self.events.try_send(ProxyEvent::NodeLost {
                    reason: e.to_string(),
                });
                self.last_heard = Instant::now();
                return;
            }
        };
        let gap = self.last_heard.elapsed();
        let protection = self.tunnel.protection;
        let old = std::mem::replace(&mut self.tunnel, tunnel.with_protection(protection));
        tokio::spawn(old.close());
        let _ = self.control_tx.send(self.tunnel.connection.clone());
        self.sockets = sockets;
        self.readers = readers;
        self.path_since = vec![Instant::now(); n];
        self.quic_reader = Reader(tokio::spawn(read_quic(
            self.tunnel.connection.clone(),
            self.rx_tx.clone(),
        )));
        // The new node is tried over UDP first, unless protected mode was asked for.
        let was_protected = self.protected;
        self.protected = protection == Protection::Always;
        if was_protected && !self.protected {
            let _ = self.events.try_send(ProxyEvent::ProtectedMode {
                on: false,
                reason: format!("session moved to node {}; trying UDP first", node.id),
            });
        }
        self.udp_heard = Instant::now();
        self.protected_since = Instant::now();
        self.next_reprobe = Instant::now() + REPROBE_EVERY;
        self.quic_heard = Instant::now();
        self.quic_rx = self.tunnel.connection.stats().udp_rx.datagrams;
        self.sched = PathScheduler::new(
            n,
            self.sched.policy(),
            PathConfig::default(),
            Instant::now().into_std(),
        );
        self.last_heard = Instant::now();
        if let Some(f) = &mut self.failover {
            f.candidates.retain(|c| c.id != node.id);
            // A path relayed by the new exit now reaches it directly.
            for r in &mut f.relays {
                if r.as_deref() == Some(node.id.as_str()) {
                    *r = None;
                }
            }
        }
        // The new node knows nothing of our flows: open them again.
        let all = self.all_paths();
        for i in 0..self.flows.len() {
            self.flows[i].confirmed = false;
            if !self.flows[i].refused {
                let dst = self.flows[i].server;
                self.send(
                    all,
                    &Frame::FlowOpen {
                        flow: i as u32,
                        dst,
                    },
                )
                .await;
            }
        }
        tracing::info!(node = %node.id, gap_ms = gap.as_millis() as u64, "session moved to another node");
        let _ = self
            .events
            .try_send(ProxyEvent::Failover { to: node.id, gap });
    }

    async fn on_housekeeping(&mut self) {
        self.repeat_control().await;
        self.replace_silent_relays().await;
        let now = Instant::now().into_std();
        let view = PathsView {
            primary: self.sched.primary(),
            duplicating: self.sched.duplicating(now),
            paths: (0..self.sched.len() as u8)
                .map(|p| self.sched.stats(p))
                .collect(),
            protected: self.protected,
        };
        self.paths.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    /// A relayed path silent for [`RELAY_SILENT`] while the session answers on another path
    /// has lost its relay (crashed, draining, cut off): it moves to a failover candidate that
    /// no path uses and that was not given up on before. The exit is fine, so no failover.
    async fn replace_silent_relays(&mut self) {
        if self.protected
            || self.failing_over.is_some()
            || self.last_heard.elapsed() >= RELAY_SILENT
        {
            return;
        }
        let now = Instant::now();
        for i in 0..self.sockets.len() {
            let Some(f) = &self.failover else { return };
            let Some(Some(relay)) = f.relays.get(i).cloned() else {
                continue;
            };
            if self.sched.silent_for(i as u8, now.into_std()) < RELAY_SILENT
                || now.duration_since(self.path_since[i]) < RELAY_SILENT
            {
                continue;
            }
            if !self.retired.contains(&relay) {
                self.retired.push(relay.clone());
            }
            let spare = f
                .candidates
                .iter()
                .filter(|c| !self.retired.contains(&c.id))
                .filter(|c| !f.relays.iter().flatten().any(|r| *r == c.id))
                .find_map(|c| Some((c.id.clone(), c.data_addr.parse::<SocketAddr>().ok()?)));
            let Some((id, addr)) = spare else { continue };
            match open_path(i as u8, addr, &self.rx_tx).await {
                Ok((socket, reader)) => {
                    tracing::info!(path = i, from = %relay, to = %id, "relay silent; path moved to another node");
                    self.sockets[i] = socket;
                    self.readers[i] = reader;
                    self.path_since[i] = now;
                    if let Some(f) = &mut self.failover {
                        f.relays[i] = Some(id);
                    }
                    // Tell the exit where the path now answers.
                    let live = self.all_paths();
                    let down = self.downstream(now.into_std());
                    self.send(live, &Frame::Paths { downstream: down.0 }).await;
                }
                Err(e) => {
                    tracing::warn!(path = i, error = %e, "cannot open a socket for the new relay");
                }
            }
        }
    }

    /// PATHS and FLOW_OPEN travel unreliably (UDP or QUIC datagrams) and can be lost: repeat
    /// them. This also tells the node which address each path answers on.
    async fn repeat_control(&mut self) {
        let now = Instant::now().into_std();
        let all = self.all_paths();
        let down = self.downstream(now);
        self.send(all, &Frame::Paths { downstream: down.0 }).await;
        for i in 0..self.flows.len() {
            if !self.flows[i].confirmed && !self.flows[i].refused {
                let dst = self.flows[i].server;
                self.send(
                    all,
                    &Frame::FlowOpen {
                        flow: i as u32,
                        dst,
                    },
                )
                .await;
            }
        }
    }
}
