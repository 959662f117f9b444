//! The data plane: one task owns the session table and the client-facing UDP socket; one
//! small task per flow reads the flow's upstream socket. No locks on the packet path.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use plg_proto::frame::{Frame, Header, MAX_DATAGRAM, MAX_PAYLOAD};
use plg_proto::session::OpenError;
use plg_proto::{ErrorCode, Session, Ticket};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::{Metrics, add, inc};
use crate::policy;
use crate::unix_now;

/// Most flows one session may open.
pub const MAX_FLOWS_PER_SESSION: usize = 64;

/// Data-plane settings.
#[derive(Debug, Clone)]
pub(crate) struct DataConfig {
    pub session_idle: Duration,
    pub flow_idle: Duration,
    pub max_sessions: usize,
    pub allow_private_destinations: bool,
}

/// Requests from the control plane.
#[derive(Debug)]
pub(crate) enum Command {
    /// Install (or replace, on reconnect) a session.
    Open {
        ticket: Ticket,
        session: Session,
        reply: oneshot::Sender<Result<(), OpenRefused>>,
    },
}

/// The data plane can't take the session.
#[derive(Debug, thiserror::Error)]
#[error("node is full ({0} sessions)")]
pub(crate) struct OpenRefused(pub usize);

/// A packet a game server sent to one of our flow sockets.
#[derive(Debug)]
struct Upstream {
    session: u64,
    flow: u32,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Flow {
    dst: SocketAddr,
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    last_active: Instant,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Debug)]
struct Entry {
    session: Session,
    ticket: Ticket,
    /// Client address per path, learned from authenticated frames only.
    paths: Vec<Option<SocketAddr>>,
    last_path: u8,
    /// Paths the client wants downstream frames on (bit i = path i); 0 = `last_path` only.
    downstream: u8,
    flows: HashMap<u32, Flow>,
    last_seen: Instant,
}

pub(crate) struct DataPlane {
    socket: Arc<UdpSocket>,
    sessions: HashMap<u64, Entry>,
    metrics: Arc<Metrics>,
    cfg: DataConfig,
    up_tx: mpsc::Sender<Upstream>,
    out: Vec<u8>,
}

/// Runs the data plane until `shutdown` flips.
pub(crate) async fn run(
    socket: Arc<UdpSocket>,
    metrics: Arc<Metrics>,
    cfg: DataConfig,
    mut commands: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (up_tx, mut up_rx) = mpsc::channel(8192);
    let mut dp = DataPlane {
        socket: socket.clone(),
        sessions: HashMap::new(),
        metrics,
        cfg,
        up_tx,
        out: Vec::with_capacity(MAX_DATAGRAM),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut sweep = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => dp.on_datagram(&mut buf[..n], from).await,
                Err(e) => tracing::debug!(error = %e, "data socket receive error"),
            },
            Some(u) = up_rx.recv() => dp.on_upstream(u).await,
            Some(cmd) = commands.recv() => dp.on_command(cmd),
            _ = sweep.tick() => dp.sweep(Instant::now()),
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!(sessions = dp.sessions.len(), "data plane stopped");
}

impl DataPlane {
    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Open {
                ticket,
                session,
                reply,
            } => {
                let id = session.id();
                if !self.sessions.contains_key(&id) && self.sessions.len() >= self.cfg.max_sessions
                {
                    let _ = reply.send(Err(OpenRefused(self.sessions.len())));
                    return;
                }
                let paths = vec![None; ticket.path_limit.max(1) as usize];
                let replaced = self
                    .sessions
                    .insert(
                        id,
                        Entry {
                            session,
                            ticket,
                            paths,
                            last_path: 0,
                            downstream: 0,
                            flows: HashMap::new(),
                            last_seen: Instant::now(),
                        },
                    )
                    .is_some();
                tracing::info!(session = id, replaced, "session open");
                let _ = reply.send(Ok(()));
            }
        }
    }

    async fn on_datagram(&mut self, data: &mut [u8], from: SocketAddr) {
        let m = &self.metrics;
        inc(&m.datagrams_in);
        if data.len() > MAX_DATAGRAM {
            inc(&m.dropped_malformed);
            return;
        }
        let header = match Header::decode(data) {
            Ok(h) => h,
            Err(_) => return inc(&m.dropped_malformed),
        };
        let Some(entry) = self.sessions.get_mut(&header.session_id) else {
            return inc(&m.dropped_unknown_session);
        };
        if header.path as usize >= entry.paths.len() {
            return inc(&m.dropped_path);
        }
        let request_len = data.len();
        let (h, frame) = match entry.session.open(data) {
            Ok(x) => x,
            Err(OpenError::Auth | OpenError::WrongSession) => return inc(&m.dropped_auth),
            Err(OpenError::Replay(_)) => return inc(&m.dropped_replay),
            Err(OpenError::Decode(_)) => return inc(&m.dropped_malformed),
        };
        let now = Instant::now();
        entry.paths[h.path as usize] = Some(from);
        entry.last_path = h.path;
        entry.last_seen = now;
        let reply: Option<Frame<'static>> = match frame {
            Frame::Data { flow, payload } => match entry.flows.get_mut(&flow) {
                Some(f) => {
                    f.last_active = now;
                    // Never more bytes to the destination than the client sent: the payload is
                    // strictly smaller than the authenticated frame that carried it.
                    // `send` rather than `try_send`: a fresh socket has no readiness yet and
                    // `try_send` would drop the flow's first packet.
                    match f.socket.send(payload).await {
                        Ok(n) => {
                            inc(&m.upstream_packets_out);
                            add(&m.upstream_bytes_out, n as u64);
                        }
                        Err(e) => {
                            inc(&m.upstream_send_errors);
                            tracing::debug!(session = h.session_id, flow, error = %e, "upstream send failed");
                        }
                    }
                    None
                }
                None => {
                    inc(&m.dropped_unknown_flow);
                    Some(Frame::error(ErrorCode::UnknownFlow, flow))
                }
            },
            Frame::FlowOpen { flow, dst } => open_flow(
                entry,
                h.session_id,
                flow,
                dst,
                &self.cfg,
                &self.metrics,
                &self.up_tx,
                now,
            )
            .err()
            .map(|code| Frame::error(code, flow)),
            Frame::Ping { id, timestamp_us } => Some(Frame::Pong { id, timestamp_us }),
            Frame::Close { reason } => {
                tracing::info!(session = h.session_id, reason, "session closed by client");
                self.sessions.remove(&h.session_id);
                inc(&m.sessions_closed);
                return;
            }
            Frame::Pong { .. } => None,
            Frame::Paths { downstream } => {
                entry.downstream = downstream;
                None
            }
            Frame::Error { raw_code, flow, .. } => {
                tracing::debug!(
                    session = h.session_id,
                    code = raw_code,
                    flow,
                    "client reported an error"
                );
                None
            }
        };
        if let Some(reply) = reply {
            entry.session.seal(h.path, &reply, &mut self.out);
            // Anti-amplification: an answer is never larger than the request that caused it.
            if self.out.len() <= request_len && self.socket.send_to(&self.out, from).await.is_ok() {
                inc(&m.datagrams_out);
            }
        }
    }

    async fn on_upstream(&mut self, u: Upstream) {
        let Some(entry) = self.sessions.get_mut(&u.session) else {
            return;
        };
        let Some(flow) = entry.flows.get_mut(&u.flow) else {
            return;
        };
        flow.last_active = Instant::now();
        let frame = Frame::Data {
            flow: u.flow,
            payload: &u.data,
        };
        // One sequence number for every copy: the client keeps the first and drops the rest.
        let seq = entry.session.take_seq();
        let mut mask = if entry.downstream == 0 {
            1u16 << entry.last_path
        } else {
            entry.downstream as u16
        };
        if !entry
            .paths
            .iter()
            .enumerate()
            .any(|(p, a)| a.is_some() && mask & (1 << p) != 0)
        {
            // None of the requested paths has been heard from yet: use the latest one.
            mask = 1 << entry.last_path;
        }
        for (path, addr) in entry.paths.iter().enumerate() {
            let Some(addr) = addr else { continue };
            if mask & (1 << path) == 0 {
                continue;
            }
            entry
                .session
                .seal_with_seq(path as u8, seq, &frame, &mut self.out);
            match self.socket.send_to(&self.out, *addr).await {
                Ok(_) => inc(&self.metrics.datagrams_out),
                Err(e) => {
                    tracing::debug!(session = u.session, path, error = %e, "send to client failed")
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let unix = unix_now();
        let before = self.sessions.len();
        let cfg = &self.cfg;
        self.sessions.retain(|id, e| {
            let keep =
                now.duration_since(e.last_seen) < cfg.session_idle && unix < e.ticket.expires_at;
            if !keep {
                tracing::info!(session = id, "session expired");
            }
            keep
        });
        add(
            &self.metrics.sessions_closed,
            (before - self.sessions.len()) as u64,
        );
        for e in self.sessions.values_mut() {
            e.flows
                .retain(|_, f| now.duration_since(f.last_active) < cfg.flow_idle);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn open_flow(
    entry: &mut Entry,
    session: u64,
    flow: u32,
    dst: SocketAddr,
    cfg: &DataConfig,
    m: &Arc<Metrics>,
    up_tx: &mpsc::Sender<Upstream>,
    now: Instant,
) -> Result<(), ErrorCode> {
    if !entry.ticket.allows(dst) || (!cfg.allow_private_destinations && !policy::is_public(dst)) {
        inc(&m.refused_destination);
        tracing::info!(session, flow, %dst, "destination refused");
        return Err(ErrorCode::DestinationNotAllowed);
    }
    if let Some(f) = entry.flows.get_mut(&flow) {
        // Clients repeat FLOW_OPEN because it can be lost; same destination is a no-op.
        f.last_active = now;
        return if f.dst == dst {
            Ok(())
        } else {
            Err(ErrorCode::FlowConflict)
        };
    }
    if entry.flows.len() >= MAX_FLOWS_PER_SESSION {
        return Err(ErrorCode::TooManyFlows);
    }
    let socket = upstream_socket(dst).map_err(|e| {
        tracing::warn!(session, flow, %dst, error = %e, "cannot open upstream socket");
        ErrorCode::UpstreamUnreachable
    })?;
    let socket = Arc::new(socket);
    let reader = tokio::spawn(read_upstream(
        socket.clone(),
        session,
        flow,
        up_tx.clone(),
        m.clone(),
    ));
    entry.flows.insert(
        flow,
        Flow {
            dst,
            socket,
            reader,
            last_active: now,
        },
    );
    inc(&m.flows_opened);
    tracing::debug!(session, flow, %dst, "flow open");
    Ok(())
}

/// One ephemeral-port socket per flow, connected so only the game server's replies arrive.
fn upstream_socket(dst: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: IpAddr = if dst.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let s = std::net::UdpSocket::bind((bind, 0))?;
    s.connect(dst)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

async fn read_upstream(
    socket: Arc<UdpSocket>,
    session: u64,
    flow: u32,
    up_tx: mpsc::Sender<Upstream>,
    m: Arc<Metrics>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv(&mut buf).await {
            // Replies that cannot fit in one frame are dropped rather than fragmented.
            Ok(n) if n > MAX_PAYLOAD => continue,
            Ok(n) => {
                inc(&m.upstream_packets_in);
                add(&m.upstream_bytes_in, n as u64);
                if up_tx
                    .try_send(Upstream {
                        session,
                        flow,
                        data: buf[..n].to_vec(),
                    })
                    .is_err()
                {
                    if up_tx.is_closed() {
                        return;
                    }
                    inc(&m.dropped_overload);
                }
            }
            // ICMP port unreachable surfaces as ECONNREFUSED on a connected socket: keep going.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                tracing::debug!(session, flow, error = %e, "upstream socket closed");
                return;
            }
        }
    }
}
