//! The tokio driver of the session engine ([`crate::conn::ClientConn`]): it moves bytes and
//! time and nothing else. Packets from a capture backend ([`crate::capture`]) and datagrams
//! from the node (one UDP socket per path, plus QUIC datagrams on the control connection in
//! protected mode) are handed to the engine; what it queues is sent; the I/O it asks for
//! (a path's socket, the session on another node) is done here and reported back. Every
//! decision — paths, redundancy, flows, protected mode, failover, relay moves — is the
//! engine's.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plg_proto::frame::MAX_DATAGRAM;
use plg_proto::paths::Redundancy;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::billing::NodeInfo;
use crate::capture::{Capture, ProxyCapture};
use crate::conn::{Action, ClientConn, ConnConfig, ControlStatus, Route, Transmit, Via};
pub use crate::conn::{PathsView, ProxyEvent};
use crate::tunnel::{DATAGRAM_BUFFER, Tunnel, TunnelError};

/// Consecutive capture errors after which reading the capture pauses until the next timer.
const CAPTURE_ERRORS: u32 = 64;

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
    /// Path health (and the node and relays), updated a few times a second.
    pub paths: watch::Receiver<PathsView>,
    /// Events for the user.
    pub events: mpsc::Receiver<ProxyEvent>,
    stop: watch::Sender<bool>,
    commands: mpsc::Sender<Command>,
    /// The current node's control connection (it changes on failover).
    control: watch::Receiver<quinn::Connection>,
    task: JoinHandle<Tunnel>,
}

/// Requests from the front end to the driver.
enum Command {
    /// Move onto `tunnel`, a session opened with `node` using `ticket`.
    Switch(NodeInfo, Box<Tunnel>, Vec<u8>),
    /// Later failovers present this ticket (renewed in place).
    Ticket(Vec<u8>),
}

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
        let node = NodeInfo {
            id: tunnel.data_addr.to_string(),
            server_name: String::new(),
            region: String::new(),
            control_addr: tunnel.connection.remote_address().to_string(),
            data_addr: tunnel.data_addr.to_string(),
            ..Default::default()
        };
        Self::start_on(node, tunnel, capture, paths, policy, failover).await
    }

    /// [`Proxy::start_with`] on a session opened with `node` (named in [`PathsView::node`]
    /// until the session moves).
    pub async fn start_on<C: Capture>(
        node: NodeInfo,
        mut tunnel: Tunnel,
        capture: C,
        paths: Vec<SocketAddr>,
        policy: Redundancy,
        failover: Option<Failover>,
    ) -> std::io::Result<Proxy> {
        let stats = Arc::new(ProxyStats::default());
        let route = Route {
            node,
            backup: tunnel.accept.backup.clone(),
            data_addr: tunnel.data_addr,
            path_addrs: paths.clone(),
            relays: failover
                .as_ref()
                .map(|f| f.relays.clone())
                .unwrap_or_default(),
            candidates: failover
                .as_ref()
                .map(|f| f.candidates.clone())
                .unwrap_or_default(),
        };
        let cfg = ConnConfig {
            policy,
            protection: tunnel.protection,
            failover_after: failover.as_ref().map(|f| f.after),
            ..ConnConfig::default()
        };
        let conn = ClientConn::new(
            Instant::now().into_std(),
            tunnel.take_session(),
            route,
            tunnel.accept.max_paths,
            cfg,
            stats.clone(),
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let (rx_tx, rx) = mpsc::channel(1024);
        let mut sockets = Vec::new();
        let mut readers = Vec::new();
        for (i, addr) in paths.iter().enumerate() {
            let (s, r) = open_path(i as u8, *addr, &rx_tx).await?;
            sockets.push(s);
            readers.push(r);
        }
        let quic_reader = Reader(tokio::spawn(read_quic(
            tunnel.connection.clone(),
            rx_tx.clone(),
        )));
        let (events_tx, events) = mpsc::channel(64);
        let (paths_tx, paths_rx) = watch::channel(conn.paths_view(Instant::now().into_std()));
        let (stop, stop_rx) = watch::channel(false);
        let (commands, commands_rx) = mpsc::channel(4);
        let (control_tx, control) = watch::channel(tunnel.connection.clone());
        let description = capture.describe();
        let driver = Driver {
            conn,
            tunnel,
            capture,
            sockets,
            readers,
            quic_reader,
            rx_tx,
            events: events_tx,
            paths: paths_tx,
            control_tx,
            ticket: failover.as_ref().map(|f| f.ticket.clone()),
            ca_pem: failover.map(|f| f.ca_pem).unwrap_or_default(),
            failing_over: None,
            capture_errors: 0,
        };
        let task = tokio::spawn(driver.run(rx, stop_rx, commands_rx));
        Ok(Proxy {
            local_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            capture: description,
            stats,
            paths: paths_rx,
            events,
            stop,
            commands,
            control,
            task,
        })
    }

    /// Moves the running session onto `tunnel`, a session opened with `node` using `ticket`
    /// (a renewed ticket, or a better node): flows are reopened there and later failovers
    /// present `ticket`. Reported like a failover ([`ProxyEvent::Failover`]). Returns false
    /// if the proxy has stopped.
    pub async fn switch_tunnel(&self, node: NodeInfo, tunnel: Tunnel, ticket: Vec<u8>) -> bool {
        self.commands
            .send(Command::Switch(node, Box::new(tunnel), ticket))
            .await
            .is_ok()
    }

    /// The current node's control connection (it changes on failover), e.g. to renew the
    /// session in place with [`Tunnel::renew_on`].
    pub fn control_connection(&self) -> quinn::Connection {
        self.control.borrow().clone()
    }

    /// Makes later failovers present `ticket` (after an in-place renewal).
    pub async fn set_failover_ticket(&self, ticket: Vec<u8>) {
        let _ = self.commands.send(Command::Ticket(ticket)).await;
    }

    /// Sends CLOSE to the node, closes the control connection and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Ok(tunnel) = self.task.await {
            tunnel.close().await;
        }
    }
}

/// A fresh socket for path `path`, sending to `addr`, and the task reading it.
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
    crate::connreset::disable_connreset(&*s)?;
    s.connect(addr).await?;
    let reader = Reader(tokio::spawn(read_path(s.clone(), path, tx.clone())));
    Ok((s, reader))
}

/// A reader task, stopped when dropped.
struct Reader(JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type FailoverResult = Result<(NodeInfo, Tunnel), String>;

/// Tries the candidates in order with the same ticket.
async fn fail_over(candidates: Vec<NodeInfo>, ticket: Vec<u8>, ca_pem: String) -> FailoverResult {
    let mut errors = Vec::new();
    for node in &candidates {
        let Ok(addr) = node.control_addr.parse() else {
            errors.push(format!("{}: bad address", node.id));
            continue;
        };
        match Tunnel::open(addr, &node.server_name, &ca_pem, &ticket).await {
            Ok(t) => return Ok((node.clone(), t)),
            Err(e @ TunnelError::Rejected { .. }) | Err(e) => {
                errors.push(format!("{}: {e}", node.id))
            }
        }
    }
    Err(if errors.is_empty() {
        "no other node is known".to_string()
    } else {
        errors.join("; ")
    })
}

/// Reads the control connection's datagrams (protected mode) until it closes.
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
                if tx.send((Via::Path(path), buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            // ICMP unreachable on a connected socket: the path may come back.
            Err(e) if crate::connreset::is_icmp_report(&e) => continue,
            Err(e) => {
                // The socket is unusable (e.g. its address vanished): the engine rebinds the
                // path when it goes silent.
                tracing::debug!(path, error = %e, "path socket receive error; reader stops");
                return;
            }
        }
    }
}

struct Driver<C> {
    conn: ClientConn,
    /// The control connection and what the node granted (its session moved into `conn`).
    tunnel: Tunnel,
    capture: C,
    sockets: Vec<Arc<UdpSocket>>,
    readers: Vec<Reader>,
    quic_reader: Reader,
    rx_tx: mpsc::Sender<(Via, Vec<u8>)>,
    events: mpsc::Sender<ProxyEvent>,
    paths: watch::Sender<PathsView>,
    /// Publishes the current control connection to [`Proxy::control_connection`].
    control_tx: watch::Sender<quinn::Connection>,
    /// The ticket failovers present (`None`: failover is off).
    ticket: Option<Vec<u8>>,
    ca_pem: String,
    failing_over: Option<oneshot::Receiver<FailoverResult>>,
    capture_errors: u32,
}

impl<C: Capture> Driver<C> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(Via, Vec<u8>)>,
        mut stop: watch::Receiver<bool>,
        mut commands: mpsc::Receiver<Command>,
    ) -> Tunnel {
        let mut buf = vec![0u8; 65536];
        loop {
            self.drain().await;
            let wake = Instant::from_std(self.conn.poll_timeout());
            let capture_ok = self.capture_errors < CAPTURE_ERRORS;
            tokio::select! {
                r = self.capture.recv(&mut buf), if capture_ok => match r {
                    Ok(c) => {
                        self.capture_errors = 0;
                        let now = Instant::now().into_std();
                        self.conn.handle_game(now, c.game, c.server, &buf[..c.len]);
                    }
                    Err(e) => {
                        self.capture_errors += 1;
                        tracing::debug!(error = %e, "capture receive error");
                    }
                },
                Some((via, mut d)) = rx.recv() => {
                    let now = Instant::now().into_std();
                    if let Some(d) = self.conn.handle_datagram(now, via, &mut d) {
                        let _ = self.capture.send(d.game, d.server, d.payload).await;
                    }
                }
                _ = tokio::time::sleep_until(wake) => self.on_timer(),
                Ok(r) = async { self.failing_over.as_mut().expect("guarded").await }, if self.failing_over.is_some() => {
                    self.failing_over = None;
                    let now = Instant::now().into_std();
                    match r {
                        Ok((node, tunnel)) => self.switch(now, node, tunnel),
                        Err(reason) => self.conn.handle_failover_failed(now, reason),
                    }
                }
                Some(cmd) = commands.recv() => match cmd {
                    Command::Ticket(t) => if self.ticket.is_some() { self.ticket = Some(t) },
                    Command::Switch(node, tunnel, ticket) => {
                        if self.ticket.is_some() {
                            self.ticket = Some(ticket);
                        }
                        self.switch(Instant::now().into_std(), node, *tunnel);
                    }
                },
                _ = stop.changed() => break,
            }
        }
        self.conn.close();
        let protected = self.conn.protected();
        self.drain().await;
        if protected {
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

    fn on_timer(&mut self) {
        let c = &self.tunnel.connection;
        let status = ControlStatus {
            rx_packets: c.stats().udp_rx.datagrams,
            usable: c.close_reason().is_none() && c.max_datagram_size().is_some(),
            draining: matches!(
                c.close_reason(),
                Some(quinn::ConnectionError::ApplicationClosed(c))
                    if c.error_code == plg_proto::control::CLOSE_DRAINING.into()
            ),
        };
        let now = Instant::now().into_std();
        // A paused capture is read again.
        self.capture_errors = 0;
        self.conn.handle_control(now, status);
        self.conn.handle_timeout(now);
        let view = self.conn.paths_view(now);
        self.paths.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    /// Moves onto another node's session.
    fn switch(&mut self, now: std::time::Instant, node: NodeInfo, mut tunnel: Tunnel) {
        let session = tunnel.take_session();
        let (data, backup) = (tunnel.data_addr, tunnel.accept.backup.clone());
        let protection = self.tunnel.protection;
        let old = std::mem::replace(&mut self.tunnel, tunnel.with_protection(protection));
        tokio::spawn(old.close());
        let _ = self.control_tx.send(self.tunnel.connection.clone());
        self.quic_reader = Reader(tokio::spawn(read_quic(
            self.tunnel.connection.clone(),
            self.rx_tx.clone(),
        )));
        tracing::info!(node = %node.id, "session moved to another node");
        self.conn.handle_switched(now, node, session, data, backup);
    }

    /// Performs what the engine queued: I/O requests, datagrams, events.
    async fn drain(&mut self) {
        while let Some(a) = self.conn.poll_action() {
            match a {
                Action::OpenPath { path, addr } => match open_path(path, addr, &self.rx_tx).await {
                    Ok((s, r)) => {
                        self.sockets[path as usize] = s;
                        self.readers[path as usize] = r;
                    }
                    Err(e) => self.conn.handle_path_failed(path, e.to_string()),
                },
                Action::Rebind => {
                    for path in 0..self.sockets.len() {
                        let addr = self.conn.path_addrs()[path];
                        match open_path(path as u8, addr, &self.rx_tx).await {
                            Ok((s, r)) => {
                                self.sockets[path] = s;
                                self.readers[path] = r;
                            }
                            Err(e) => self.conn.handle_path_failed(path as u8, e.to_string()),
                        }
                    }
                    if let Err(e) = self.tunnel.rebind() {
                        tracing::debug!(error = %e, "cannot move the control connection to a new socket");
                    }
                }
                Action::FailOver { candidates } => {
                    let now = Instant::now().into_std();
                    match &self.ticket {
                        Some(ticket) if self.failing_over.is_none() => {
                            tracing::warn!(candidates = candidates.len(), "failing over");
                            let (tx, rx) = oneshot::channel();
                            let job = fail_over(candidates, ticket.clone(), self.ca_pem.clone());
                            tokio::spawn(async move {
                                let _ = tx.send(job.await);
                            });
                            self.failing_over = Some(rx);
                        }
                        Some(_) => {}
                        None => self
                            .conn
                            .handle_failover_failed(now, "failover is off".into()),
                    }
                }
            }
        }
        while let Some(t) = self.conn.poll_transmit() {
            self.transmit(t).await;
        }
        while let Some(ev) = self.conn.poll_event() {
            let _ = self.events.try_send(ev);
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        match t.via {
            Via::Path(p) => {
                if let Some(s) = self.sockets.get(p as usize) {
                    let _ = s.send(&t.bytes).await;
                }
            }
            Via::Quic => match self.tunnel.connection.send_datagram(t.bytes.into()) {
                Ok(()) => {
                    self.conn
                        .stats()
                        .protected_up
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(quinn::SendDatagramError::TooLarge) => {
                    // The path's QUIC datagram limit (about 1,150-1,400 bytes) is below UDP's.
                    self.conn.stats().oversize.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(error = %e, "cannot send a QUIC datagram"),
            },
        }
    }
}
