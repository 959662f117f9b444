//! The prober task: sends what the [`Scheduler`] says, times the answers, and feeds the
//! results to the mesh (gossip) or, outside a mesh, to a local table (the announce reads
//! either).
//!
//! ICMP echo goes through an unprivileged ping socket (`SOCK_DGRAM`/`IPPROTO_ICMP`, allowed
//! when the process's group is inside `net.ipv4.ping_group_range`); if the kernel refuses it,
//! through a raw socket (needs root or `CAP_NET_RAW`); if that fails too, ICMP targets stay
//! unknown. Query probes (`plg_proto::query`) are UDP from the same address (`--upstream-bind`)
//! and ephemeral port kind as the node's upstream sockets, one socket per probe. The ICMP echo
//! payload is the `echo` probe format, so a reply is matched by sequence and nonce.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use plg_mesh::{MeshHandle, RttConfig, RttSummary, TargetRtts};
use plg_proto::query::{self, QueryKind, Reply};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::metrics::{Metrics, add, inc};
use crate::targets::{CatalogProbe, Method, PROBE_TIMEOUT, Probe, Scheduler};

/// How the node sends ICMP echo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    /// Unprivileged ping socket (`SOCK_DGRAM`): the kernel sets the identifier and checksum.
    Ping,
    /// Raw socket (root or `CAP_NET_RAW`): every ICMP packet to the host is seen and filtered.
    Raw,
}

/// ICMP echo wire format, sans-IO.
mod icmp {
    use plg_proto::query::{self, QueryKind};

    const ECHO_REQUEST_V4: u8 = 8;
    const ECHO_REPLY_V4: u8 = 0;
    const ECHO_REQUEST_V6: u8 = 128;
    const ECHO_REPLY_V6: u8 = 129;

    /// An echo reply's identifier, sequence number and the nonce of its payload.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct EchoReply {
        pub ident: u16,
        pub seq: u16,
        pub nonce: u64,
    }

    /// RFC 1071 Internet checksum.
    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// An echo request whose payload is the `echo` probe carrying `nonce`. The checksum is
    /// filled in for IPv4 (the kernel computes ICMPv6's, and a ping socket recomputes both).
    pub(crate) fn echo_request(v6: bool, ident: u16, seq: u16, nonce: u64) -> Vec<u8> {
        let mut p = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
        p.extend_from_slice(&ident.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&query::request(QueryKind::Echo, nonce));
        if !v6 {
            let c = checksum(&p);
            p[2..4].copy_from_slice(&c.to_be_bytes());
        }
        p
    }

    /// Parses an echo reply as a socket hands it over: raw IPv4 sockets include the IP
    /// header, ping sockets and ICMPv6 raw sockets do not. `None` for anything else.
    pub(crate) fn parse_echo_reply(v6: bool, raw: bool, data: &[u8]) -> Option<EchoReply> {
        let icmp = if raw && !v6 {
            let first = *data.first()?;
            if first >> 4 != 4 {
                return None;
            }
            data.get(usize::from(first & 0x0f) * 4..)?
        } else {
            data
        };
        let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
        if icmp.len() < 8 || icmp[0] != want || icmp[1] != 0 {
            return None;
        }
        Some(EchoReply {
            ident: u16::from_be_bytes([icmp[4], icmp[5]]),
            seq: u16::from_be_bytes([icmp[6], icmp[7]]),
            nonce: query::echo_nonce(&icmp[8..])?,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        #[test]
        fn request_checksums_and_reply_parses() {
            let req = echo_request(false, 0x1234, 7, 99);
            assert_eq!(req.len(), 24);
            assert_eq!(checksum(&req), 0, "a valid checksum sums to zero");
            // The same bytes as a reply, behind a 20-byte IPv4 header as a raw socket sees it.
            let mut reply = req.clone();
            reply[0] = ECHO_REPLY_V4;
            let mut framed = vec![0x45u8];
            framed.extend_from_slice(&[0; 19]);
            framed.extend_from_slice(&reply);
            let want = EchoReply {
                ident: 0x1234,
                seq: 7,
                nonce: 99,
            };
            assert_eq!(parse_echo_reply(false, true, &framed), Some(want));
            assert_eq!(parse_echo_reply(false, false, &reply), Some(want));
            // Our own request, looped back to a raw socket, is not a reply.
            assert_eq!(parse_echo_reply(false, false, &req), None);
            let mut v6 = echo_request(true, 1, 2, 3);
            assert_eq!(v6[0], ECHO_REQUEST_V6);
            v6[0] = ECHO_REPLY_V6;
            assert_eq!(parse_echo_reply(true, true, &v6).map(|r| r.nonce), Some(3));
            assert_eq!(parse_echo_reply(false, true, &[0x4f]), None);
        }

        proptest! {
            #[test]
            fn parsing_never_panics(v6: bool, raw: bool, data in proptest::collection::vec(any::<u8>(), 0..120)) {
                let _ = parse_echo_reply(v6, raw, &data);
            }
        }
    }
}

/// An ICMP echo socket of one address family.
#[derive(Debug)]
pub struct IcmpSocket {
    socket: UdpSocket,
    kind: IcmpKind,
    v6: bool,
}

impl IcmpSocket {
    /// Opens a ping socket, or a raw socket if the kernel refuses that; the ping socket's
    /// error if neither can be had.
    pub fn open(v6: bool) -> io::Result<IcmpSocket> {
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let (socket, kind) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
            Ok(s) => (s, IcmpKind::Ping),
            Err(ping) => match Socket::new(domain, Type::RAW, Some(proto)) {
                Ok(s) => (s, IcmpKind::Raw),
                Err(_) => return Err(ping),
            },
        };
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        Ok(IcmpSocket { socket, kind, v6 })
    }

    /// Ping or raw.
    pub fn kind(&self) -> IcmpKind {
        self.kind
    }

    /// Sends one echo request.
    pub async fn send(&self, ip: IpAddr, ident: u16, seq: u16, nonce: u64) -> io::Result<()> {
        let pkt = icmp::echo_request(self.v6, ident, seq, nonce);
        self.socket.send_to(&pkt, SocketAddr::new(ip, 0)).await?;
        Ok(())
    }

    /// Receives one datagram: its source and, if it is an echo reply, what it carries.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<(IpAddr, Option<icmp::EchoReply>)> {
        let (n, from) = self.socket.recv_from(buf).await?;
        let raw = self.kind == IcmpKind::Raw;
        Ok((
            from.ip().to_canonical(),
            icmp::parse_echo_reply(self.v6, raw, &buf[..n]),
        ))
    }
}

/// One ICMP echo to `ip`: the socket kind used and the RTT, `None` if no reply came within
/// `timeout`. For tests and diagnostics; the prober keeps its sockets.
pub async fn icmp_echo(ip: IpAddr, timeout: Duration) -> io::Result<(IcmpKind, Option<Duration>)> {
    let ip = ip.to_canonical();
    let socket = IcmpSocket::open(ip.is_ipv6())?;
    let (ident, nonce) = (random_u64() as u16, random_u64());
    let sent = Instant::now();
    socket.send(ip, ident, 1, nonce).await?;
    let deadline = sent + timeout;
    let mut buf = [0u8; 1500];
    loop {
        match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Ok((socket.kind, None)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok((from, Some(r)))) if from == ip && r.seq == 1 && r.nonce == nonce => {
                return Ok((socket.kind, Some(sent.elapsed())));
            }
            Ok(Ok(_)) => {}
        }
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // A weak nonce only makes a spoofed answer easier to guess; it never stops probing.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// One query-protocol probe to `addr` from an upstream-style socket: the send time of the
/// last request and the RTT, `None` if nothing answered within [`PROBE_TIMEOUT`] of a
/// request. An `a2s` challenge is answered (twice at most) and the RTT is the last exchange's.
pub async fn query_probe(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    kind: QueryKind,
    nonce: u64,
) -> (Instant, Option<Duration>) {
    let mut sent = Instant::now();
    let Some(socket) = crate::dataplane::upstream_socket(addr, bind)
        .ok()
        .and_then(|s| UdpSocket::from_std(s).ok())
    else {
        return (sent, None);
    };
    if socket.send(&query::request(kind, nonce)).await.is_err() {
        return (sent, None);
    }
    let mut challenges = 0;
    let mut buf = vec![0u8; 2048];
    loop {
        let n = match tokio::time::timeout_at(sent + PROBE_TIMEOUT, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            // Timed out, or the port is closed (ICMP unreachable): lost.
            Ok(Err(_)) | Err(_) => return (sent, None),
        };
        match query::classify(kind, nonce, &buf[..n]) {
            Reply::Answer => return (sent, Some(sent.elapsed())),
            Reply::Challenge(c) if challenges < 2 => {
                challenges += 1;
                sent = Instant::now();
                if socket
                    .send(&query::request_with_challenge(c))
                    .await
                    .is_err()
                {
                    return (sent, None);
                }
            }
            Reply::Challenge(_) | Reply::NotOurs => {}
        }
    }
}

/// Where results go: the mesh (gossiped, and read back for the announce), or a local table
/// for a node outside any mesh.
#[derive(Debug)]
pub(crate) enum TargetSink {
    Mesh(Arc<MeshHandle>),
    Alone(std::sync::Mutex<TargetRtts>),
}

impl TargetSink {
    pub(crate) fn new(mesh: Option<Arc<MeshHandle>>) -> Self {
        match mesh {
            Some(m) => TargetSink::Mesh(m),
            None => TargetSink::Alone(std::sync::Mutex::new(TargetRtts::new(RttConfig::default()))),
        }
    }

    fn record(&self, ip: IpAddr, sent_at: Instant, rtt: Option<Duration>) {
        match self {
            TargetSink::Mesh(m) => m.record_target_addr_probe(ip, sent_at, rtt),
            TargetSink::Alone(t) => t
                .lock()
                .expect("not poisoned")
                .record_addr(ip, sent_at, rtt),
        }
    }

    fn set_priorities(&self, p: Vec<(String, u32)>) {
        match self {
            TargetSink::Mesh(m) => m.set_target_priorities(p),
            TargetSink::Alone(t) => t.lock().expect("not poisoned").set_priorities(p),
        }
    }

    /// This node's target figures, best first, at most [`plg_mesh::MAX_REPORTED_TARGETS`].
    pub(crate) fn own(&self) -> Vec<(String, RttSummary)> {
        match self {
            TargetSink::Mesh(m) => m.own_target_rtts(),
            TargetSink::Alone(t) => {
                let mut t = t.lock().expect("not poisoned");
                t.expire(Instant::now());
                let mut v = t.ranked();
                v.truncate(plg_mesh::MAX_REPORTED_TARGETS);
                v
            }
        }
    }
}

/// What the prober is told.
#[derive(Debug)]
pub(crate) enum Input {
    /// Destinations of flows opened or still in use, with their sessions' catalog game ids.
    Flows(Vec<(SocketAddr, u32)>),
    /// Billing's catalog probe addresses (replaces the previous ones).
    Catalog(Vec<CatalogProbe>),
}

/// How often the prober logs its counters.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Capacity of the input channel; the data plane drops reports when it is full.
pub(crate) const INPUT_QUEUE: usize = 64;

struct Pending {
    probe: Probe,
    nonce: u64,
    sent_at: Instant,
}

/// Everything the prober task needs.
pub(crate) struct Prober {
    pub allow_private: bool,
    /// Source address of query probes: the node's upstream bind address, so a probe takes
    /// the path the game's traffic takes.
    pub upstream_bind: Option<IpAddr>,
    pub inputs: mpsc::Receiver<Input>,
    pub sink: Arc<TargetSink>,
    pub metrics: Arc<Metrics>,
    pub stop: watch::Receiver<bool>,
}

async fn recv_on(
    socket: Option<&IcmpSocket>,
    buf: &mut [u8],
) -> io::Result<(IpAddr, Option<icmp::EchoReply>)> {
    match socket {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
    }
}

impl Prober {
    /// Runs until the node stops.
    pub(crate) async fn run(mut self) {
        let open = |v6| match IcmpSocket::open(v6) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(family = if v6 { "IPv6" } else { "IPv4" }, error = %e,
                    "no ICMP socket (ping socket refused, see net.ipv4.ping_group_range, and no CAP_NET_RAW): ICMP probe targets stay unknown");
                None
            }
        };
        let (v4, v6) = (open(false), open(true));
        tracing::info!(
            icmp_v4 = ?v4.as_ref().map(IcmpSocket::kind),
            icmp_v6 = ?v6.as_ref().map(IcmpSocket::kind),
            "prober ready"
        );
        let mut sched = Scheduler::new(self.allow_private, v4.is_some(), v6.is_some());
        let ident = random_u64() as u16;
        let mut nonce = random_u64();
        let mut seq: u16 = 0;
        let mut pending: HashMap<u16, Pending> = HashMap::new();
        let mut queries: JoinSet<(Probe, (Instant, Option<Duration>))> = JoinSet::new();
        let (mut buf4, mut buf6) = (vec![0u8; 1500], vec![0u8; 1500]);
        let m = self.metrics.clone();
        let mut next_log = Instant::now() + LOG_EVERY;
        loop {
            let now = Instant::now();
            if now >= next_log {
                next_log = now + LOG_EVERY;
                let s = m.snapshot();
                if !sched.is_empty() || s.probes_sent > 0 {
                    tracing::info!(
                        targets = sched.len(),
                        sent = s.probes_sent,
                        answered = s.probes_answered,
                        lost = s.probes_lost,
                        refused = s.probe_targets_refused,
                        "probing"
                    );
                }
            }
            // ICMP probes given up on.
            let lost: Vec<u16> = pending
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.sent_at) >= PROBE_TIMEOUT)
                .map(|(s, _)| *s)
                .collect();
            for s in lost {
                if let Some(p) = pending.remove(&s) {
                    self.finish(&mut sched, &p.probe, p.sent_at, None);
                }
            }
            while let Some(probe) = sched.poll(now) {
                nonce = nonce.wrapping_add(1);
                match probe.method {
                    Method::Query(kind) => {
                        inc(&m.probes_sent);
                        let (p, n, bind) = (probe.clone(), nonce, self.upstream_bind);
                        queries.spawn(async move {
                            let r = query_probe(p.addr, bind, kind, n).await;
                            (p, r)
                        });
                    }
                    Method::Icmp => {
                        let ip = probe.addr.ip();
                        let Some(socket) = (if ip.is_ipv4() { &v4 } else { &v6 }) else {
                            continue;
                        };
                        seq = seq.wrapping_add(1);
                        inc(&m.probes_sent);
                        let sent_at = Instant::now();
                        if let Err(e) = socket.send(ip, ident, seq, nonce).await {
                            tracing::debug!(target = %ip, error = %e, "ICMP send failed");
                        }
                        pending.insert(
                            seq,
                            Pending {
                                probe,
                                nonce,
                                sent_at,
                            },
                        );
                    }
                }
            }
            m.probe_targets.store(sched.len() as u64, Ordering::Relaxed);
            let oldest = pending.values().map(|p| p.sent_at + PROBE_TIMEOUT).min();
            let wake = [
                sched.poll_timeout(now),
                oldest,
                Some(now + Duration::from_secs(1)),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now);
            tokio::select! {
                _ = self.stop.changed() => return,
                _ = tokio::time::sleep_until(wake) => {}
                input = self.inputs.recv() => match input {
                    Some(input) => self.on_input(&mut sched, input),
                    None => return,
                },
                r = recv_on(v4.as_ref(), &mut buf4) => self.on_icmp(&mut sched, &mut pending, r, v4.as_ref(), ident),
                r = recv_on(v6.as_ref(), &mut buf6) => self.on_icmp(&mut sched, &mut pending, r, v6.as_ref(), ident),
                Some(Ok((probe, (sent_at, rtt)))) = queries.join_next(), if !queries.is_empty() => {
                    self.finish(&mut sched, &probe, sent_at, rtt);
                }
            }
        }
    }

    fn on_input(&self, sched: &mut Scheduler, input: Input) {
        let now = Instant::now();
        let refused = match input {
            Input::Flows(dsts) => dsts
                .into_iter()
                .filter(|(d, game)| sched.flow_used(*d, Some(*game), now).is_err())
                .count(),
            Input::Catalog(probes) => {
                let refused = sched.set_catalog(&probes);
                for (addr, why) in &refused {
                    tracing::warn!(%addr, reason = %why, "catalog probe address refused");
                }
                refused.len()
            }
        };
        add(&self.metrics.probe_targets_refused, refused as u64);
        self.sink.set_priorities(sched.priorities());
    }

    fn on_icmp(
        &self,
        sched: &mut Scheduler,
        pending: &mut HashMap<u16, Pending>,
        r: io::Result<(IpAddr, Option<icmp::EchoReply>)>,
        socket: Option<&IcmpSocket>,
        ident: u16,
    ) {
        let Ok((from, Some(reply))) = r else { return };
        // A ping socket's identifier is the kernel's; a raw socket sees everyone's replies.
        if socket.is_some_and(|s| s.kind == IcmpKind::Raw) && reply.ident != ident {
            return;
        }
        let ours = pending
            .get(&reply.seq)
            .is_some_and(|p| p.nonce == reply.nonce && p.probe.addr.ip().to_canonical() == from);
        if !ours {
            return;
        }
        if let Some(p) = pending.remove(&reply.seq) {
            let rtt = p.sent_at.elapsed();
            self.finish(sched, &p.probe, p.sent_at, Some(rtt));
        }
    }

    fn finish(
        &self,
        sched: &mut Scheduler,
        probe: &Probe,
        sent_at: Instant,
        rtt: Option<Duration>,
    ) {
        inc(if rtt.is_some() {
            &self.metrics.probes_answered
        } else {
            &self.metrics.probes_lost
        });
        sched.on_result(probe, rtt.is_some());
        self.sink.record(probe.addr.ip(), sent_at, rtt);
    }
}
