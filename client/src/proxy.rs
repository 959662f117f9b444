//! Local UDP proxy capture: the game is pointed at a local port; every local source address
//! becomes a flow through the session to one fixed destination.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plg_proto::frame::{ErrorCode, Frame, MAX_DATAGRAM, MAX_PAYLOAD};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::tunnel::Tunnel;

/// Most game-side flows one proxy carries.
const MAX_FLOWS: usize = 64;
/// How often to probe the node's RTT and repeat unconfirmed flow opens.
const PING_INTERVAL: Duration = Duration::from_millis(500);

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
    /// Datagrams from the node dropped (forged, replayed, malformed).
    pub dropped: AtomicU64,
    /// Game packets dropped because the node refused their destination.
    pub refused: AtomicU64,
    /// Game packets too large to carry.
    pub oversize: AtomicU64,
    /// Last ping RTT to the node in microseconds (0 = none yet).
    pub rtt_us: AtomicU64,
    /// Pongs received.
    pub pongs: AtomicU64,
}

/// Things the user should be told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEvent {
    /// The node refused to forward to this destination (not in the ticket).
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
}

#[derive(Debug)]
struct FlowState {
    game: SocketAddr,
    confirmed: bool,
    /// The node refused the destination: stop sending for this flow.
    refused: bool,
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    /// Where the game should send its packets.
    pub local_addr: SocketAddr,
    /// Live counters.
    pub stats: Arc<ProxyStats>,
    /// Events for the user.
    pub events: mpsc::Receiver<ProxyEvent>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Tunnel>,
}

impl Proxy {
    /// Starts proxying `listen` (the game's side) to `dst` through `tunnel`.
    pub async fn start(
        tunnel: Tunnel,
        listen: SocketAddr,
        dst: SocketAddr,
    ) -> std::io::Result<Proxy> {
        let local = UdpSocket::bind(listen).await?;
        let bind: SocketAddr = if tunnel.data_addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let node = UdpSocket::bind(bind).await?;
        node.connect(tunnel.data_addr).await?;
        let local_addr = local.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let (events_tx, events) = mpsc::channel(64);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            tunnel,
            local,
            node,
            dst,
            stats.clone(),
            events_tx,
            stop_rx,
        ));
        Ok(Proxy {
            local_addr,
            stats,
            events,
            stop,
            task,
        })
    }

    /// Sends CLOSE to the node, closes the control connection and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Ok(tunnel) = self.task.await {
            tunnel.close().await;
        }
    }
}

async fn run(
    mut tunnel: Tunnel,
    local: UdpSocket,
    node: UdpSocket,
    dst: SocketAddr,
    stats: Arc<ProxyStats>,
    events: mpsc::Sender<ProxyEvent>,
    mut stop: watch::Receiver<bool>,
) -> Tunnel {
    let mut flows: Vec<FlowState> = Vec::new();
    let mut by_game: HashMap<SocketAddr, u32> = HashMap::new();
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let mut buf = vec![0u8; 65536];
    let mut nbuf = vec![0u8; MAX_DATAGRAM + 1];
    let start = Instant::now();
    let mut tick = tokio::time::interval(PING_INTERVAL);
    let mut ping_id = 0u64;
    let s = &stats;
    loop {
        tokio::select! {
            r = local.recv_from(&mut buf) => {
                let Ok((n, game)) = r else { continue };
                s.from_game.fetch_add(1, Ordering::Relaxed);
                if n > MAX_PAYLOAD {
                    s.oversize.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let flow = match by_game.get(&game) {
                    Some(f) => *f,
                    None => {
                        if flows.len() >= MAX_FLOWS {
                            let _ = events.try_send(ProxyEvent::TooManyFlows);
                            continue;
                        }
                        let f = flows.len() as u32;
                        flows.push(FlowState { game, confirmed: false, refused: false });
                        by_game.insert(game, f);
                        tunnel.session.seal(0, &Frame::FlowOpen { flow: f, dst }, &mut out);
                        let _ = node.send(&out).await;
                        f
                    }
                };
                if flows[flow as usize].refused {
                    s.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tunnel.session.seal(0, &Frame::Data { flow, payload: &buf[..n] }, &mut out);
                if node.send(&out).await.is_ok() {
                    s.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            r = node.recv(&mut nbuf) => {
                let Ok(n) = r else { continue };
                if n > MAX_DATAGRAM {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match tunnel.session.open(&mut nbuf[..n]) {
                    Ok((_, Frame::Data { flow, payload })) => {
                        if let Some(f) = flows.get_mut(flow as usize) {
                            f.confirmed = true;
                            if local.send_to(payload, f.game).await.is_ok() {
                                s.to_game.fetch_add(1, Ordering::Relaxed);
                                s.bytes_down.fetch_add(payload.len() as u64, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok((_, Frame::Pong { timestamp_us, .. })) => {
                        let now = start.elapsed().as_micros() as u64;
                        s.rtt_us.store(now.saturating_sub(timestamp_us).max(1), Ordering::Relaxed);
                        s.pongs.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((_, Frame::Error { code, flow, .. })) => {
                        let ev = match code {
                            ErrorCode::DestinationNotAllowed => ProxyEvent::DestinationRefused(dst),
                            _ => ProxyEvent::FlowError { flow, code },
                        };
                        if let Some(f) = flows.get_mut(flow as usize) {
                            match code {
                                // The node forgot the flow (idle expiry or restart): open it again.
                                ErrorCode::UnknownFlow => f.confirmed = false,
                                ErrorCode::DestinationNotAllowed => f.refused = true,
                                _ => {}
                            }
                        }
                        let _ = events.try_send(ev);
                    }
                    Ok(_) => {}
                    Err(_) => { s.dropped.fetch_add(1, Ordering::Relaxed); }
                }
            }
            _ = tick.tick() => {
                ping_id += 1;
                let ts = start.elapsed().as_micros() as u64;
                tunnel.session.seal(0, &Frame::Ping { id: ping_id, timestamp_us: ts }, &mut out);
                let _ = node.send(&out).await;
                // FLOW_OPEN travels over UDP and can be lost: repeat until the flow answers.
                for (i, f) in flows.iter().enumerate() {
                    if !f.confirmed && !f.refused {
                        tunnel.session.seal(0, &Frame::FlowOpen { flow: i as u32, dst }, &mut out);
                        let _ = node.send(&out).await;
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    tunnel
        .session
        .seal(0, &Frame::Close { reason: 0 }, &mut out);
    let _ = node.send(&out).await;
    tunnel
}
