//! The data plane: one OS thread owns the session table, the client-facing UDP socket and every
//! flow's upstream socket, and waits on all of them with one level-triggered epoll. No locks,
//! no task and no heap allocation per packet:
//!
//! - client datagrams arrive in `recvmmsg` batches into buffers allocated once, are opened in
//!   place, and their payloads go out on the flow's connected upstream socket;
//! - a ready upstream socket is read straight into a reused buffer and the reply is sealed
//!   into the outgoing batch, which leaves in one `sendmmsg` per loop turn (or when full);
//! - the control plane hands sessions over through a channel and an eventfd wake-up.
//!
//! Per-session decisions (authentication, path learning, flow open/refuse, PING, CLOSE,
//! anti-amplification, downstream copies, idle expiry, renewal) are not made here: each session
//! is a sans-IO [`SessionCore`], and this thread is its driver — it routes datagrams to it and
//! executes what it returns (open a socket, send upstream, queue a sealed reply, count a drop).
//!
//! Upstream sockets are one per flow (the game server sees one source per flow), so sends
//! towards game servers stay one syscall per packet; see `docs/benchmarks.md`.

use std::collections::HashMap;
use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt, sockopt,
};
use plg_proto::frame::{Header, MAX_DATAGRAM, MAX_PAYLOAD};
use plg_proto::{ErrorCode, Session, Ticket};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

pub(crate) use crate::core::RenewRefused;
use crate::core::{ClientOutcome, DropReason, ReplyKind, SessionCore};
use crate::meshlink::{self, Kind, MAX_MESH_DATAGRAM, MeshLink, Message};
use crate::metrics::{Metrics, add, inc};
use crate::policy;
use crate::prober;
use crate::unix_now;
use plg_mesh::{MeshHandle, MeshView, NodeId};

/// Datagrams per `recvmmsg` / `sendmmsg` call.
const BATCH: usize = 32;
/// Receive buffer: one byte more than the largest valid datagram (a relayed client datagram
/// in its mesh envelope), so oversize ones show.
const RX_LEN: usize = MAX_MESH_DATAGRAM + 1;
/// How often every live peer is probed for RTT.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe unanswered for this long counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Socket buffers asked for on the client-facing socket (capped by `net.core.[rw]mem_max`):
/// a burst of a few thousand datagrams waits in the kernel instead of being dropped.
const DATA_SOCKET_BUFFER: usize = 4 << 20;
/// How often the destinations of open flows are reported to the prober again (they stay
/// probe targets while in use; see `targets.rs`).
const REPORT_FLOWS_EVERY: Duration = Duration::from_secs(60);
/// Most destinations in one report.
const MAX_REPORTED_FLOWS: usize = 1024;
/// How often idle sessions and flows are swept.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Longest wait for a full socket send buffer to drain before a datagram is given up.
const SEND_WAIT_MS: u16 = 10;

/// Epoll token of the client-facing socket.
const TOKEN_DATA: u64 = 0;
/// Epoll token of the control plane's wake-up eventfd.
const TOKEN_WAKE: u64 = 1;
/// Epoll tokens from here on are flow slots (`token - TOKEN_FLOWS`).
const TOKEN_FLOWS: u64 = 2;

/// Data-plane settings.
#[derive(Debug, Clone)]
pub(crate) struct DataConfig {
    pub session_idle: Duration,
    pub flow_idle: Duration,
    pub max_sessions: usize,
    pub allow_private_destinations: bool,
    /// Source address of upstream sockets (`None`: the kernel picks).
    pub upstream_bind: Option<IpAddr>,
    /// Where flow destinations go to become probe targets.
    pub probe_targets: Option<tokio::sync::mpsc::Sender<prober::Input>>,
}

/// The mesh, for relaying and probing: the node's gossip handle and its link key.
pub(crate) struct MeshCtx {
    pub handle: Arc<MeshHandle>,
    pub link: MeshLink,
}

impl std::fmt::Debug for MeshCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshCtx")
    }
}

/// Where a path's frames come from and go back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// The client itself.
    Direct(SocketAddr),
    /// The client at `client`, through the relay node whose data port is `relay`.
    Via {
        relay: SocketAddr,
        client: SocketAddr,
    },
}

/// The data thread's view of the mesh.
struct MeshState {
    handle: Arc<MeshHandle>,
    link: MeshLink,
    self_id: NodeId,
    view_rx: watch::Receiver<Arc<MeshView>>,
    view: Arc<MeshView>,
    /// Data addresses of peers (live, or dead but not yet forgotten by gossip, so a brief
    /// false suspicion under load does not cut relaying): mesh datagrams from anywhere else
    /// are dropped.
    peers: HashMap<SocketAddr, NodeId>,
    /// The same, by node id.
    peer_addrs: HashMap<NodeId, SocketAddr>,
    probes: HashMap<u64, (NodeId, Instant)>,
    next_probe_id: u64,
    next_probe: Instant,
}

impl MeshState {
    fn new(ctx: MeshCtx) -> MeshState {
        let view_rx = ctx.handle.subscribe();
        let view = view_rx.borrow().clone();
        let mut st = MeshState {
            self_id: ctx.handle.node_id().clone(),
            handle: ctx.handle,
            link: ctx.link,
            view_rx,
            view,
            peers: HashMap::new(),
            peer_addrs: HashMap::new(),
            probes: HashMap::new(),
            next_probe_id: 1,
            next_probe: Instant::now(),
        };
        st.rebuild_peers();
        st
    }

    fn refresh(&mut self) {
        if self.view_rx.has_changed().unwrap_or(false) {
            self.view = self.view_rx.borrow_and_update().clone();
            self.rebuild_peers();
        }
    }

    fn rebuild_peers(&mut self) {
        let dead: std::collections::HashSet<&NodeId> = self.view.dead_nodes().collect();
        let mut addrs: HashMap<NodeId, SocketAddr> = self
            .peer_addrs
            .drain()
            .filter(|(id, _)| dead.contains(id))
            .collect();
        addrs.extend(
            self.view
                .live_nodes()
                .filter(|n| n.id != self.self_id)
                .map(|n| (n.id.clone(), n.info.data_addr)),
        );
        self.peers = addrs.iter().map(|(id, a)| (*a, id.clone())).collect();
        self.peer_addrs = addrs;
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Requests from the control plane.
#[derive(Debug)]
pub(crate) enum Command {
    /// Install (or replace, on reconnect) a session.
    Open {
        ticket: Ticket,
        session: Box<Session>,
        /// Epoch of the session's record in the mesh (0 without a mesh).
        epoch: u32,
        reply: oneshot::Sender<Result<(), OpenRefused>>,
    },
    /// Replace a live session's ticket with a renewed one (same session and account).
    Renew {
        ticket: Ticket,
        reply: oneshot::Sender<Result<(), RenewRefused>>,
    },
}

/// The data plane can't take the session.
#[derive(Debug, thiserror::Error)]
#[error("node is full ({0} sessions)")]
pub(crate) struct OpenRefused(pub usize);

/// One flow's upstream socket, in the slab indexed by its epoll token.
#[derive(Debug)]
struct Flow {
    session: u64,
    id: u32,
    /// The game server (reported to the prober as a probe target).
    dst: SocketAddr,
    /// The session's catalog game (the ticket's `game_id`), for the probe's protocol.
    game: u32,
    socket: std::net::UdpSocket,
}

#[derive(Debug)]
struct Entry {
    /// The session's state machine; a flow's handle is its slot in [`Flows`].
    core: SessionCore<Peer, usize>,
    /// Epoch at which this node holds the session in the mesh.
    epoch: u32,
}

/// Every open flow, indexed by slot; a slot's epoll token is `TOKEN_FLOWS + slot`.
#[derive(Debug, Default)]
struct Flows {
    slots: Vec<Option<Flow>>,
    free: Vec<usize>,
}

impl Flows {
    fn insert(&mut self, flow: Flow) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(flow);
                i
            }
            None => {
                self.slots.push(Some(flow));
                self.slots.len() - 1
            }
        }
    }

    fn get_mut(&mut self, slot: usize) -> Option<&mut Flow> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Removes a flow; dropping it closes the socket, which also leaves the epoll set.
    fn remove(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot)
            && s.take().is_some()
        {
            self.free.push(slot);
        }
    }
}

/// Outgoing datagrams to clients, sent with one `sendmmsg` when full or at the end of a turn.
struct OutBatch {
    socket: std::net::UdpSocket,
    headers: MultiHeaders<SockaddrStorage>,
    bufs: Vec<Vec<u8>>,
    addrs: Vec<Option<SockaddrStorage>>,
    len: usize,
}

impl std::fmt::Debug for OutBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutBatch").field("len", &self.len).finish()
    }
}

impl OutBatch {
    fn new(socket: std::net::UdpSocket) -> Self {
        OutBatch {
            socket,
            headers: MultiHeaders::preallocate(BATCH, None),
            bufs: (0..BATCH)
                .map(|_| Vec::with_capacity(MAX_DATAGRAM))
                .collect(),
            addrs: vec![None; BATCH],
            len: 0,
        }
    }

    /// The next free buffer (the batch is sent first if full); fill it, then [`OutBatch::commit`].
    fn slot(&mut self, m: &Metrics) -> &mut Vec<u8> {
        if self.len == BATCH {
            self.flush(m);
        }
        &mut self.bufs[self.len]
    }

    /// Queues the buffer last returned by [`OutBatch::slot`] for `to`.
    fn commit(&mut self, to: SocketAddr) {
        self.addrs[self.len] = Some(SockaddrStorage::from(to));
        self.len += 1;
    }

    /// Sends every queued datagram, waiting briefly if the socket buffer is full.
    fn flush(&mut self, m: &Metrics) {
        let n = self.len;
        let mut done = 0;
        while done < n {
            let iovs: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|i| [IoSlice::new(&self.bufs[i])]);
            match sendmmsg(
                self.socket.as_raw_fd(),
                &mut self.headers,
                iovs[done..n].iter(),
                &self.addrs[done..n],
                [],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(sent) => {
                    let sent = sent.count();
                    add(&m.datagrams_out, sent as u64);
                    done += sent.max(1);
                }
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLOUT)];
                    if !matches!(poll(&mut fds, SEND_WAIT_MS), Ok(1..)) {
                        tracing::debug!(dropped = n - done, "client socket stays full");
                        break;
                    }
                }
                Err(e) => {
                    // The first datagram failed (e.g. an unreachable client): skip it only.
                    tracing::debug!(error = %e, "send to client failed");
                    done += 1;
                }
            }
        }
        self.len = 0;
    }
}

/// Runs the data plane until `shutdown` flips (or this task is dropped).
pub(crate) async fn run(
    socket: Arc<UdpSocket>,
    metrics: Arc<Metrics>,
    cfg: DataConfig,
    mut commands: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<bool>,
    mesh: Option<MeshCtx>,
) {
    let socket = match into_std(socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "data plane cannot take its socket");
            return;
        }
    };
    let wake = match EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            tracing::error!(error = %e, "data plane cannot create its eventfd");
            return;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let (w, st) = (wake.clone(), stop.clone());
    // The batch headers hold raw pointers (not `Send`): build the worker on its thread.
    let thread = std::thread::Builder::new()
        .name("plg-dataplane".into())
        .spawn(
            move || match Worker::new(socket, metrics, cfg, w, st, rx, mesh) {
                Ok(worker) => worker.run(),
                Err(e) => tracing::error!(error = %e, "data plane cannot set up epoll"),
            },
        );
    if let Err(e) = thread {
        tracing::error!(error = %e, "cannot start the data-plane thread");
        return;
    }
    // Stops the thread however this task ends (shutdown, or aborted by the runtime).
    let _stop = StopOnDrop {
        stop,
        wake: wake.clone(),
    };
    loop {
        tokio::select! {
            Some(cmd) = commands.recv() => {
                if tx.send(cmd).is_err() {
                    break;
                }
                let _ = wake.write(1);
            }
            _ = shutdown.changed() => break,
        }
    }
}

struct StopOnDrop {
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
    }
}

/// Takes the socket out of tokio's reactor (its readiness events would only wake tokio for
/// nothing) and makes it a plain non-blocking socket.
fn into_std(socket: Arc<UdpSocket>) -> std::io::Result<std::net::UdpSocket> {
    let s = match Arc::try_unwrap(socket) {
        Ok(s) => s.into_std()?,
        Err(shared) => std::net::UdpSocket::from(shared.as_fd().try_clone_to_owned()?),
    };
    s.set_nonblocking(true)?;
    // Best effort: capped by net.core.rmem_max / wmem_max.
    let _ = setsockopt(&s, sockopt::RcvBuf, &DATA_SOCKET_BUFFER);
    let _ = setsockopt(&s, sockopt::SndBuf, &DATA_SOCKET_BUFFER);
    Ok(s)
}

/// The data-plane thread: its sockets and buffers, and the [`State`] they feed.
struct Worker {
    socket: std::net::UdpSocket,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    commands: std::sync::mpsc::Receiver<Command>,
    rx_headers: MultiHeaders<SockaddrStorage>,
    rx_bufs: Box<[[u8; RX_LEN]; BATCH]>,
    up_buf: Box<[u8; 65536]>,
    st: State,
}

/// Sessions, flows and the outgoing batch: everything a packet touches.
struct State {
    epoll: Epoll,
    sessions: HashMap<u64, Entry>,
    flows: Flows,
    metrics: Arc<Metrics>,
    cfg: DataConfig,
    out: OutBatch,
    mesh: Option<MeshState>,
    /// Frames for relayed paths are sealed here before their envelope goes around them.
    scratch: Vec<u8>,
    /// When open flows' destinations are next reported to the prober.
    next_flow_report: Instant,
}

impl Worker {
    fn new(
        socket: std::net::UdpSocket,
        metrics: Arc<Metrics>,
        cfg: DataConfig,
        wake: Arc<EventFd>,
        stop: Arc<AtomicBool>,
        commands: std::sync::mpsc::Receiver<Command>,
        mesh: Option<MeshCtx>,
    ) -> nix::Result<Worker> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&socket, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_DATA))?;
        epoll.add(
            wake.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WAKE),
        )?;
        let rx_bufs: Box<[[u8; RX_LEN]; BATCH]> = vec![[0u8; RX_LEN]; BATCH]
            .into_boxed_slice()
            .try_into()
            .expect("BATCH buffers");
        let up_buf: Box<[u8; 65536]> = vec![0u8; 65536]
            .into_boxed_slice()
            .try_into()
            .expect("64 KiB");
        let out = OutBatch::new(
            socket
                .try_clone()
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?,
        );
        Ok(Worker {
            socket,
            wake,
            stop,
            commands,
            rx_headers: MultiHeaders::preallocate(BATCH, None),
            rx_bufs,
            up_buf,
            st: State {
                epoll,
                sessions: HashMap::new(),
                flows: Flows::default(),
                metrics,
                cfg,
                out,
                mesh: mesh.map(MeshState::new),
                scratch: Vec::with_capacity(MAX_MESH_DATAGRAM),
                next_flow_report: Instant::now() + REPORT_FLOWS_EVERY,
            },
        })
    }

    fn run(mut self) {
        let mut events = vec![EpollEvent::empty(); 256];
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        while !self.stop.load(Ordering::Acquire) {
            let wait = next_sweep.saturating_duration_since(Instant::now());
            let ms = u16::try_from(wait.as_millis() + 1).unwrap_or(u16::MAX);
            let n = match self.st.epoll.wait(&mut events, ms) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "data plane epoll failed");
                    break;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_DATA => self.on_client_ready(),
                    TOKEN_WAKE => self.on_commands(),
                    t => self.st.on_upstream_ready(
                        (t - TOKEN_FLOWS) as usize,
                        &mut self.up_buf[..],
                        Instant::now(),
                    ),
                }
            }
            self.st.out.flush(&self.st.metrics);
            let now = Instant::now();
            if now >= next_sweep {
                self.st.sweep(now);
                self.st.probe(now);
                self.st.out.flush(&self.st.metrics);
                next_sweep = now + SWEEP_EVERY;
            }
        }
        tracing::info!(sessions = self.st.sessions.len(), "data plane stopped");
    }

    fn on_commands(&mut self) {
        let _ = self.wake.read();
        while let Ok(cmd) = self.commands.try_recv() {
            self.st.on_command(cmd);
        }
    }

    /// Drains up to a few batches from the client-facing socket (level-triggered: whatever
    /// is left is reported again on the next turn).
    fn on_client_ready(&mut self) {
        let fd = self.socket.as_raw_fd();
        for _ in 0..4 {
            let mut lens = [0usize; BATCH];
            let mut froms: [Option<SocketAddr>; BATCH] = [None; BATCH];
            let n = {
                let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = self
                    .rx_bufs
                    .each_mut()
                    .map(|b| [IoSliceMut::new(&mut b[..])]);
                match recvmmsg(
                    fd,
                    &mut self.rx_headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(res) => {
                        let mut n = 0;
                        for (i, r) in res.enumerate() {
                            lens[i] = r.bytes;
                            froms[i] = r.address.as_ref().and_then(to_socket_addr);
                            n = i + 1;
                        }
                        n
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => 0,
                    Err(e) => {
                        tracing::debug!(error = %e, "data socket receive error");
                        0
                    }
                }
            };
            let now = Instant::now();
            if let Some(ms) = self.st.mesh.as_mut() {
                ms.refresh();
            }
            for i in 0..n {
                if let Some(from) = froms[i] {
                    self.st
                        .on_datagram(&mut self.rx_bufs[i][..lens[i]], from, now);
                }
            }
            if n < BATCH {
                break;
            }
        }
    }
}

impl State {
    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Renew { ticket, reply } => {
                let result = match self.sessions.get_mut(&ticket.session_id) {
                    None => Err(RenewRefused::Gone),
                    Some(e) => e.core.renew(ticket),
                };
                let _ = reply.send(result);
            }
            Command::Open {
                ticket,
                session,
                epoch,
                reply,
            } => {
                let id = session.id();
                if !self.sessions.contains_key(&id) && self.sessions.len() >= self.cfg.max_sessions
                {
                    let _ = reply.send(Err(OpenRefused(self.sessions.len())));
                    return;
                }
                let old = self.sessions.insert(
                    id,
                    Entry {
                        core: SessionCore::new(*session, ticket, Instant::now()),
                        epoch,
                    },
                );
                let replaced = old.is_some();
                if let Some(old) = old {
                    for (_, slot) in old.core.flows() {
                        self.flows.remove(slot);
                    }
                }
                tracing::info!(session = id, replaced, "session open");
                self.metrics.sessions_active.store(
                    self.sessions.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn on_datagram(&mut self, data: &mut [u8], from: SocketAddr, now: Instant) {
        let m = &*self.metrics;
        inc(&m.datagrams_in);
        if data.first() == Some(&meshlink::MARKER) {
            return self.on_mesh_datagram(data, from, now);
        }
        if data.len() > MAX_DATAGRAM {
            inc(&m.dropped_malformed);
            return;
        }
        let header = match Header::decode(data) {
            Ok(h) => h,
            Err(_) => return inc(&m.dropped_malformed),
        };
        if !self.sessions.contains_key(&header.session_id) {
            return self.relay_up(data, from, header.session_id);
        }
        self.on_client_frame(data, header.session_id, Peer::Direct(from), now);
    }

    /// A frame for a session this node does not serve: if the mesh says another live node
    /// is its exit, carry it there in a sealed envelope (one datagram in, one out, and only
    /// ever to a mesh node); otherwise drop it.
    fn relay_up(&mut self, data: &[u8], from: SocketAddr, session_id: u64) {
        let m = &*self.metrics;
        let Some(ms) = self.mesh.as_mut() else {
            return inc(&m.dropped_unknown_session);
        };
        // Even to an exit gossip suspects right now: one datagram to a mesh node costs
        // nothing, and a false suspicion under load must not cut the path.
        let exit = ms
            .view
            .session(session_id)
            .filter(|r| r.exit != ms.self_id)
            .and_then(|r| ms.peer_addrs.get(&r.exit).copied());
        let Some(exit) = exit else {
            return inc(&m.dropped_unknown_session);
        };
        let buf = self.out.slot(m);
        ms.link
            .seal_relay(Kind::RelayUp, unix_ms(), from, data, buf);
        self.out.commit(exit);
        inc(&m.relayed_up);
    }

    /// A datagram from another node: relayed frames in both directions and RTT probes.
    fn on_mesh_datagram(&mut self, data: &mut [u8], from: SocketAddr, now: Instant) {
        let m = &*self.metrics;
        let Some(ms) = self.mesh.as_mut() else {
            return inc(&m.dropped_mesh);
        };
        let Some(peer) = ms.peers.get(&from).cloned() else {
            return inc(&m.dropped_mesh);
        };
        let msg = match ms.link.open(unix_ms(), data) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "mesh datagram dropped");
                return inc(&m.dropped_mesh);
            }
        };
        match msg {
            Message::Probe {
                kind: Kind::Probe,
                id,
            } => {
                let buf = self.out.slot(m);
                ms.link.seal_probe(Kind::ProbeAck, unix_ms(), id, buf);
                self.out.commit(from);
            }
            Message::Probe { id, .. } => {
                if let Some((node, sent)) = ms.probes.remove(&id)
                    && node == peer
                {
                    ms.handle.record_probe(
                        &node,
                        tokio::time::Instant::from_std(sent),
                        Some(now.saturating_duration_since(sent)),
                    );
                }
            }
            Message::Relay {
                kind: Kind::RelayDown,
                client,
                datagram,
            } => {
                let buf = self.out.slot(m);
                buf.clear();
                buf.extend_from_slice(&data[datagram]);
                self.out.commit(client);
                inc(&m.relayed_down);
            }
            Message::Relay {
                client, datagram, ..
            } => {
                let data = &mut data[datagram];
                match Header::decode(data) {
                    Ok(h) if self.sessions.contains_key(&h.session_id) => self.on_client_frame(
                        data,
                        h.session_id,
                        Peer::Via {
                            relay: from,
                            client,
                        },
                        now,
                    ),
                    // Never relayed twice: a frame for a session we don't serve stops here.
                    _ => inc(&m.dropped_unknown_session),
                }
            }
        }
    }

    /// Probes every live peer, and counts probes that were never answered as lost.
    fn probe(&mut self, now: Instant) {
        let Some(ms) = self.mesh.as_mut() else {
            return;
        };
        ms.refresh();
        ms.probes.retain(|_, (node, sent)| {
            let pending = now.saturating_duration_since(*sent) < PROBE_TIMEOUT;
            if !pending {
                ms.handle
                    .record_probe(node, tokio::time::Instant::from_std(*sent), None);
            }
            pending
        });
        if now < ms.next_probe {
            return;
        }
        ms.next_probe = now + PROBE_EVERY;
        let m = &*self.metrics;
        for node in ms.view.live_nodes().filter(|n| n.id != ms.self_id) {
            let (addr, node) = (&node.info.data_addr, &node.id);
            let id = ms.next_probe_id;
            ms.next_probe_id += 1;
            ms.probes.insert(id, (node.clone(), now));
            let buf = self.out.slot(m);
            ms.link.seal_probe(Kind::Probe, unix_ms(), id, buf);
            self.out.commit(*addr);
        }
    }

    /// Queues the PLG datagram just sealed for `peer` into [`State::seal_buf`]'s buffer: the
    /// batch slot itself for a direct peer; for a relayed one, `scratch` goes out in an envelope.
    fn commit_to_peer(
        out: &mut OutBatch,
        mesh: Option<&mut MeshState>,
        scratch: &[u8],
        peer: Peer,
        m: &Metrics,
    ) {
        match peer {
            Peer::Direct(addr) => out.commit(addr),
            Peer::Via { relay, client } => {
                let Some(ms) = mesh else { return };
                let buf = out.slot(m);
                ms.link
                    .seal_relay(Kind::RelayDown, unix_ms(), client, scratch, buf);
                out.commit(relay);
            }
        }
    }

    /// Where a datagram for `peer` is sealed: straight into the next batch slot for a direct
    /// peer, into `scratch` for a relayed one (its envelope is sealed around it afterwards).
    fn seal_buf<'b>(
        out: &'b mut OutBatch,
        scratch: &'b mut Vec<u8>,
        peer: Peer,
        m: &Metrics,
    ) -> &'b mut Vec<u8> {
        match peer {
            Peer::Direct(_) => out.slot(m),
            Peer::Via { .. } => scratch,
        }
    }

    /// An authenticated-or-not client frame for a session this node serves: its core
    /// decides, this executes.
    fn on_client_frame(&mut self, data: &mut [u8], session_id: u64, from: Peer, now: Instant) {
        let m = &*self.metrics;
        let Some(entry) = self.sessions.get_mut(&session_id) else {
            return inc(&m.dropped_unknown_session);
        };
        let allow_private = self.cfg.allow_private_destinations;
        let allow = |dst| allow_private || policy::is_public(dst);
        let buf = State::seal_buf(&mut self.out, &mut self.scratch, from, m);
        match entry.core.handle_client(now, data, from, allow, buf) {
            ClientOutcome::Dropped(reason) => inc(match reason {
                DropReason::Path => &m.dropped_path,
                DropReason::Auth => &m.dropped_auth,
                DropReason::Replay => &m.dropped_replay,
                DropReason::Malformed => &m.dropped_malformed,
            }),
            ClientOutcome::Forward {
                flow,
                upstream,
                payload,
            } => {
                if let Some(f) = self.flows.get_mut(upstream) {
                    send_upstream(f, session_id, payload, m);
                } else {
                    tracing::debug!(session = session_id, flow, "flow without a socket");
                }
            }
            ClientOutcome::OpenFlow {
                flow,
                dst,
                reply,
                evicted,
            } => {
                if let Some((old, slot)) = evicted {
                    tracing::debug!(
                        session = session_id,
                        flow = old,
                        "quiet flow closed to make room"
                    );
                    self.flows.remove(slot);
                }
                let game = entry.core.ticket().game_id;
                match open_flow(
                    &mut self.flows,
                    &self.epoll,
                    (session_id, flow, game),
                    dst,
                    self.cfg.upstream_bind,
                ) {
                    Ok(slot) => {
                        entry.core.flow_opened(flow, dst, slot, now);
                        inc(&m.flows_opened);
                        report_flows(&self.cfg, vec![(dst, game)]);
                        tracing::debug!(session = session_id, flow, %dst, "flow open");
                    }
                    Err(e) => {
                        tracing::warn!(session = session_id, flow, %dst, error = %e, "cannot open upstream socket");
                        let buf = State::seal_buf(&mut self.out, &mut self.scratch, from, m);
                        if let Some(to) = entry.core.flow_failed(flow, reply, buf) {
                            State::commit_to_peer(
                                &mut self.out,
                                self.mesh.as_mut(),
                                &self.scratch,
                                to,
                                m,
                            );
                        }
                    }
                }
            }
            ClientOutcome::Reply { to, kind } => {
                match kind {
                    ReplyKind::Error {
                        code: ErrorCode::UnknownFlow,
                        ..
                    } => inc(&m.dropped_unknown_flow),
                    ReplyKind::Error {
                        code: ErrorCode::DestinationNotAllowed,
                        ..
                    } => inc(&m.refused_destination),
                    _ => {}
                }
                if let Some(to) = to {
                    State::commit_to_peer(&mut self.out, self.mesh.as_mut(), &self.scratch, to, m);
                }
            }
            ClientOutcome::Closed { reason } => {
                tracing::info!(session = session_id, reason, "session closed by client");
                if let Some(e) = self.sessions.remove(&session_id) {
                    for (_, slot) in e.core.flows() {
                        self.flows.remove(slot);
                    }
                }
                if let Some(ms) = &self.mesh {
                    ms.handle.remove_session(session_id);
                }
                inc(&m.sessions_closed);
            }
            ClientOutcome::Nothing => {}
        }
    }

    /// One datagram from a flow's upstream socket (level-triggered: more is reported again).
    fn on_upstream_ready(&mut self, slot: usize, up_buf: &mut [u8], now: Instant) {
        let m = &*self.metrics;
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        let n = match flow.socket.recv(up_buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            // ICMP port unreachable surfaces as ECONNREFUSED on a connected socket: keep going.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            Err(e) => {
                tracing::debug!(session = flow.session, flow = flow.id, error = %e, "upstream socket closed");
                // Stop polling it; the flow idles out as before.
                let _ = self.epoll.delete(&flow.socket);
                return;
            }
        };
        // Replies that cannot fit in one frame are dropped rather than fragmented.
        if n > MAX_PAYLOAD {
            return;
        }
        inc(&m.upstream_packets_in);
        add(&m.upstream_bytes_in, n as u64);
        let (session_id, flow_id) = (flow.session, flow.id);
        let Some(entry) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let Some(down) = entry.core.handle_upstream(now, flow_id, &up_buf[..n]) else {
            return;
        };
        for (peer, path) in down.targets() {
            let buf = State::seal_buf(&mut self.out, &mut self.scratch, peer, m);
            down.seal(path, buf);
            State::commit_to_peer(&mut self.out, self.mesh.as_mut(), &self.scratch, peer, m);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let unix = unix_now();
        let before = self.sessions.len();
        let cfg = &self.cfg;
        let flows = &mut self.flows;
        if let Some(ms) = self.mesh.as_mut() {
            ms.refresh();
        }
        let mesh = &self.mesh;
        self.sessions.retain(|id, e| {
            // Another node adopted the session (its client moved there): let it go.
            let moved = mesh.as_ref().and_then(|ms| {
                ms.view
                    .session(*id)
                    .filter(|r| r.exit != ms.self_id && r.record.epoch > e.epoch)
                    .map(|r| r.exit.clone())
            });
            if let Some(to) = &moved {
                tracing::info!(session = id, to = %to, "session moved to another node");
                for (_, slot) in e.core.flows() {
                    flows.remove(slot);
                }
                return false;
            }
            if e.core.poll_expired(now, unix, cfg.session_idle) {
                tracing::info!(session = id, "session expired");
                if let Some(ms) = &mesh {
                    ms.handle.remove_session(*id);
                }
                for (_, slot) in e.core.flows() {
                    flows.remove(slot);
                }
                return false;
            }
            true
        });
        add(
            &self.metrics.sessions_closed,
            (before - self.sessions.len()) as u64,
        );
        self.metrics.sessions_active.store(
            self.sessions.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        for e in self.sessions.values_mut() {
            e.core
                .expire_flows(now, cfg.flow_idle, |_, slot| flows.remove(slot));
        }
        if now >= self.next_flow_report {
            self.next_flow_report = now + REPORT_FLOWS_EVERY;
            let mut dsts: Vec<(SocketAddr, u32)> = self
                .flows
                .slots
                .iter()
                .flatten()
                .map(|f| (f.dst, f.game))
                .collect();
            dsts.sort_unstable();
            dsts.dedup();
            dsts.truncate(MAX_REPORTED_FLOWS);
            if !dsts.is_empty() {
                report_flows(&self.cfg, dsts);
            }
        }
    }
}

/// Tells the prober these flow destinations (with their sessions' games) are in use; dropped
/// if it is behind.
fn report_flows(cfg: &DataConfig, dsts: Vec<(SocketAddr, u32)>) {
    if let Some(tx) = &cfg.probe_targets {
        let _ = tx.try_send(prober::Input::Flows(dsts));
    }
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*a).into()));
    }
    s.as_sockaddr_in6().map(|a| SocketAddr::V6((*a).into()))
}

/// Sends a payload on the flow's connected socket; a full send buffer is waited for briefly
/// (as the old async `send` did), not dropped at once.
fn send_upstream(f: &Flow, session: u64, payload: &[u8], m: &Metrics) {
    let mut waited = false;
    loop {
        match f.socket.send(payload) {
            Ok(n) => {
                inc(&m.upstream_packets_out);
                add(&m.upstream_bytes_out, n as u64);
                return;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && !waited => {
                waited = true;
                let mut fds = [PollFd::new(f.socket.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, SEND_WAIT_MS);
            }
            Err(e) => {
                inc(&m.upstream_send_errors);
                tracing::debug!(session, flow = f.id, error = %e, "upstream send failed");
                return;
            }
        }
    }
}

/// Opens flow `flow`'s upstream socket and adds it to epoll; returns its slot.
fn open_flow(
    flows: &mut Flows,
    epoll: &Epoll,
    (session, flow, game): (u64, u32, u32),
    dst: SocketAddr,
    bind: Option<IpAddr>,
) -> std::io::Result<usize> {
    let socket = upstream_socket(dst, bind)?;
    let slot = flows.insert(Flow {
        session,
        id: flow,
        dst,
        game,
        socket,
    });
    let f = flows.get_mut(slot).expect("just inserted");
    if let Err(e) = epoll.add(
        &f.socket,
        EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_FLOWS + slot as u64),
    ) {
        flows.remove(slot);
        return Err(e.into());
    }
    Ok(slot)
}

/// One ephemeral-port socket per flow, connected so only the game server's replies arrive;
/// from `bind` when it is set and of the destination's family.
pub(crate) fn upstream_socket(
    dst: SocketAddr,
    bind: Option<IpAddr>,
) -> std::io::Result<std::net::UdpSocket> {
    let bind: IpAddr = match bind {
        Some(ip) if ip.is_ipv4() == dst.is_ipv4() => ip,
        _ if dst.is_ipv4() => Ipv4Addr::UNSPECIFIED.into(),
        _ => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = std::net::UdpSocket::bind((bind, 0))?;
    s.connect(dst)?;
    s.set_nonblocking(true)?;
    Ok(s)
}
