//! Chitchat transport that seals every message (see [`crate::seal`]), over UDP or, for
//! tests and simulations, a [`MemoryNetwork`]; both carry the same sealed bytes.
//!
//! Chitchat stops its gossip loop when `Socket::recv` returns an error, so a bad datagram is
//! never an error here: it is counted in [`GossipStats`] and the next one is awaited. `recv`
//! is cancel-safe (chitchat `select!`s on it): its only await point is the socket's
//! `recv_from`, and reassembly state lives in the socket, not in the future.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use tracing::{debug, warn};

use crate::clock::WallClock;
use crate::memnet::{MemoryNetwork, MemorySocket};
use crate::node::NodeId;
use crate::seal::{GossipKey, MAX_DATAGRAM, OpenError, Opener, Sealer};

/// Counters of the gossip transport, shared by the socket and the [`crate::MeshHandle`].
#[derive(Debug, Default)]
pub struct GossipStats {
    sent: AtomicU64,
    send_errors: AtomicU64,
    oversize: AtomicU64,
    received: AtomicU64,
    accepted: AtomicU64,
    malformed: AtomicU64,
    forged: AtomicU64,
    replayed: AtomicU64,
    stale: AtomicU64,
}

/// A point-in-time copy of [`GossipStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipCounters {
    /// Datagrams sent.
    pub sent: u64,
    /// Sends the OS refused.
    pub send_errors: u64,
    /// Messages too large to seal, not sent.
    pub oversize: u64,
    /// Datagrams received.
    pub received: u64,
    /// Messages authenticated and handed to chitchat.
    pub accepted: u64,
    /// Datagrams that did not parse (before or after opening).
    pub malformed: u64,
    /// Datagrams that failed authentication (wrong key, forged, corrupted).
    pub forged: u64,
    /// Datagrams refused by the replay window.
    pub replayed: u64,
    /// Datagrams outside the clock-skew bound.
    pub stale: u64,
}

impl GossipStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> GossipCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GossipCounters {
            sent: get(&self.sent),
            send_errors: get(&self.send_errors),
            oversize: get(&self.oversize),
            received: get(&self.received),
            accepted: get(&self.accepted),
            malformed: get(&self.malformed),
            forged: get(&self.forged),
            replayed: get(&self.replayed),
            stale: get(&self.stale),
        }
    }
}

/// Where gossip datagrams travel.
#[derive(Clone, Debug, Default)]
pub enum GossipNetwork {
    /// The operating system's UDP, with the system clock.
    #[default]
    Udp,
    /// An in-memory network, with its virtual clock (tests, simulations).
    Memory(MemoryNetwork),
}

impl GossipNetwork {
    /// The wall clock that stamps and checks sequence numbers on this network.
    pub fn clock(&self) -> WallClock {
        match self {
            GossipNetwork::Udp => WallClock::system(),
            GossipNetwork::Memory(net) => net.clock(),
        }
    }

    pub(crate) async fn bind(&self, addr: SocketAddr) -> io::Result<Link> {
        Ok(match self {
            GossipNetwork::Udp => Link::Udp(tokio::net::UdpSocket::bind(addr).await?),
            GossipNetwork::Memory(net) => Link::Memory(net.bind(addr)?),
        })
    }
}

/// A bound datagram socket on either network.
#[derive(Debug)]
pub(crate) enum Link {
    Udp(tokio::net::UdpSocket),
    Memory(MemorySocket),
}

impl Link {
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Link::Udp(s) => s.local_addr(),
            Link::Memory(s) => Ok(s.local_addr()),
        }
    }

    async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            Link::Udp(s) => s.send_to(datagram, to).await,
            Link::Memory(s) => s.send_to(datagram, to),
        }
    }

    /// Cancel-safe, as both sockets' `recv_from` are.
    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Link::Udp(s) => s.recv_from(buf).await,
            Link::Memory(s) => s.recv_from(buf).await,
        }
    }
}

/// The sealed transport handed to chitchat.
pub struct GossipTransport {
    key: GossipKey,
    sender: NodeId,
    max_skew: Duration,
    stats: Arc<GossipStats>,
    network: GossipNetwork,
    clock: WallClock,
    prebound: std::sync::Mutex<Option<Link>>,
}

impl std::fmt::Debug for GossipTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipTransport")
            .field("sender", &self.sender)
            .field("max_skew", &self.max_skew)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl GossipTransport {
    /// A UDP transport sealing as `sender` under `key`, refusing datagrams whose timestamp
    /// is more than `max_skew` from the local clock.
    pub fn new(key: GossipKey, sender: NodeId, max_skew: Duration) -> Self {
        GossipTransport {
            key,
            sender,
            max_skew,
            stats: Arc::default(),
            network: GossipNetwork::Udp,
            clock: WallClock::system(),
            prebound: std::sync::Mutex::new(None),
        }
    }

    /// Opens sockets on `network` and takes its clock.
    pub fn on_network(mut self, network: GossipNetwork) -> Self {
        self.clock = network.clock();
        self.network = network;
        self
    }

    /// Uses an already bound UDP socket for the next `open` (so port 0 can be resolved
    /// before chitchat needs the advertised address).
    pub fn with_socket(self, socket: tokio::net::UdpSocket) -> Self {
        self.with_link(Link::Udp(socket))
    }

    pub(crate) fn with_link(self, link: Link) -> Self {
        *self.prebound.lock().expect("not poisoned") = Some(link);
        self
    }

    /// The counters.
    pub fn stats(&self) -> Arc<GossipStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl Transport for GossipTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let prebound = self.prebound.lock().expect("not poisoned").take();
        let socket = match prebound {
            Some(s) => s,
            None => self
                .network
                .bind(listen_addr)
                .await
                .with_context(|| format!("binding gossip socket {listen_addr}"))?,
        };
        Ok(Box::new(GossipSocket {
            socket,
            clock: self.clock,
            sealer: Sealer::new(&self.key, self.sender.clone()),
            opener: Opener::new(&self.key, self.max_skew.as_millis() as u64),
            stats: self.stats.clone(),
            plain: Vec::with_capacity(MAX_DATAGRAM),
            sealed: Vec::new(),
            recv_buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
        }))
    }
}

struct GossipSocket {
    socket: Link,
    clock: WallClock,
    sealer: Sealer,
    opener: Opener,
    stats: Arc<GossipStats>,
    plain: Vec<u8>,
    sealed: Vec<Vec<u8>>,
    recv_buf: Box<[u8]>,
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::OutOfMemory
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::Interrupted
    ) || err.raw_os_error() == Some(105) // ENOBUFS
}

#[async_trait]
impl Socket for GossipSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.plain.clear();
        msg.serialize(&mut self.plain);
        self.sealed.clear();
        if let Err(err) = self
            .sealer
            .seal(self.clock.now_ms(), &self.plain, &mut self.sealed)
        {
            GossipStats::bump(&self.stats.oversize);
            warn!(error = %err, peer = %to, "gossip message not sent");
            return Ok(());
        }
        for datagram in &self.sealed {
            match self.socket.send_to(datagram, to).await {
                Ok(_) => GossipStats::bump(&self.stats.sent),
                Err(err) => {
                    GossipStats::bump(&self.stats.send_errors);
                    return Err(err).context("sending gossip datagram");
                }
            }
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.recv_buf).await {
                Ok(x) => x,
                Err(err) if is_transient(&err) => {
                    debug!(error = %err, "transient gossip recv error");
                    continue;
                }
                Err(err) => return Err(err).context("gossip socket broken"),
            };
            GossipStats::bump(&self.stats.received);
            let payload = match self
                .opener
                .open(self.clock.now_ms(), &mut self.recv_buf[..len])
            {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(err) => {
                    let counter = match err {
                        OpenError::Malformed => &self.stats.malformed,
                        OpenError::Forged => &self.stats.forged,
                        OpenError::Replayed => &self.stats.replayed,
                        OpenError::Stale => &self.stats.stale,
                    };
                    GossipStats::bump(counter);
                    debug!(peer = %from, error = %err, "gossip datagram dropped");
                    continue;
                }
            };
            match ChitchatMessage::deserialize(&mut &payload[..]) {
                Ok(msg) => {
                    GossipStats::bump(&self.stats.accepted);
                    return Ok((from, msg));
                }
                Err(err) => {
                    // Authentic but unparseable: a peer running another chitchat version.
                    GossipStats::bump(&self.stats.malformed);
                    warn!(peer = %from, error = %err, "undecodable gossip message");
                }
            }
        }
    }
}
