//! A game-like traffic pair for the simulator: a game client and a game server in one process,
//! each sending its own fixed-rate tick stream (the server does not merely echo), every packet
//! stamped with a sequence number and its send time on one shared clock, so each direction's
//! one-way delay and loss are measured on their own. Server ticks also carry the newest client
//! tick they saw and how long the server held it, which gives a round-trip time as in RTCP's
//! LSR/DLSR.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

const MAGIC: &[u8; 4] = b"PLGt";
pub(crate) const KIND_HELLO: u8 = 0;
pub(crate) const KIND_HELLO_ACK: u8 = 1;
pub(crate) const KIND_TICK: u8 = 2;
pub(crate) const NO_ECHO: u32 = u32::MAX;
/// Bytes of header in every tick; packets are never smaller.
pub const HEADER_LEN: usize = 41;
/// How often the warm-up hello repeats until the server answers.
pub(crate) const HELLO_INTERVAL: Duration = Duration::from_millis(20);

/// Shape of both tick streams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickSpec {
    /// Packets per second, each way.
    pub rate: u32,
    /// Smallest packet (at least [`HEADER_LEN`]).
    pub min_size: usize,
    /// Largest packet.
    pub max_size: usize,
    /// How long both ends send.
    pub duration: Duration,
    /// How long to keep listening after the last send.
    pub drain: Duration,
    /// Seed for packet sizes.
    pub seed: u64,
}

impl TickSpec {
    /// Packets each end sends.
    pub fn total(&self) -> u32 {
        (self.duration.as_secs_f64() * self.rate as f64).round() as u32
    }

    /// Time between two ticks.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate.max(1) as f64)
    }
}

/// A sent tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Send time, microseconds after the epoch.
    pub at_us: u64,
    /// Payload bytes (what the game put in the datagram).
    pub size: u32,
}

/// A received tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Sequence number.
    pub seq: u32,
    /// Arrival time, microseconds after the epoch.
    pub at_us: u64,
}

/// One direction's record: what was sent (by sequence number) and every arrival in order,
/// duplicates included.
#[derive(Debug, Clone, Default)]
pub struct StreamTrace {
    /// Index = sequence number; `None` = not sent (the server had no peer yet).
    pub sent: Vec<Option<Sent>>,
    /// In arrival order.
    pub arrivals: Vec<Arrival>,
}

/// A round-trip sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttSample {
    /// When the echoed client tick was sent, microseconds after the epoch.
    pub at_us: u64,
    /// Round-trip time without the server's hold time, microseconds.
    pub rtt_us: u64,
}

/// Everything both ends saw.
#[derive(Debug, Clone, Default)]
pub struct PairTrace {
    /// Client → server.
    pub up: StreamTrace,
    /// Server → client.
    pub down: StreamTrace,
    /// Round trips.
    pub rtt: Vec<RttSample>,
}

/// Why the traffic could not run.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// A socket failed.
    #[error("game traffic socket error: {0}")]
    Io(#[from] io::Error),
    /// The warm-up never got an answer from the server through the path under test.
    #[error("no answer from the game server through the client within {0:?} (warm-up)")]
    WarmUp(Duration),
}

pub(crate) struct Header {
    pub(crate) run: u32,
    pub(crate) kind: u8,
    pub(crate) seq: u32,
    pub(crate) sent_us: u64,
    pub(crate) echo_seq: u32,
    pub(crate) echo_sent_us: u64,
    pub(crate) echo_hold_us: u64,
}

pub(crate) fn encode(h: &Header, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&h.run.to_be_bytes());
    out.push(h.kind);
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.sent_us.to_be_bytes());
    out.extend_from_slice(&h.echo_seq.to_be_bytes());
    out.extend_from_slice(&h.echo_sent_us.to_be_bytes());
    out.extend_from_slice(&h.echo_hold_us.to_be_bytes());
    let seq = h.seq;
    out.extend((out.len()..size.max(HEADER_LEN)).map(|i| (i as u32).wrapping_add(seq) as u8));
}

pub(crate) fn decode(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER_LEN || &b[..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
    Some(Header {
        run: u32_at(4),
        kind: b[8],
        seq: u32_at(9),
        sent_us: u64_at(13),
        echo_seq: u32_at(21),
        echo_sent_us: u64_at(25),
        echo_hold_us: u64_at(33),
    })
}

fn us_since(epoch: Instant) -> u64 {
    Instant::now().saturating_duration_since(epoch).as_micros() as u64
}

/// The game server's socket, bound once and reused across runs (stale datagrams of an earlier
/// run are told apart by the run id).
#[derive(Debug, Clone)]
pub struct GameServer {
    socket: Arc<UdpSocket>,
}

impl GameServer {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> io::Result<GameServer> {
        Ok(GameServer {
            socket: Arc::new(UdpSocket::bind(addr).await?),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Runs one measurement: warm-up through `client_target` (the client's local proxy) until the
/// server answers, then calls `armed(epoch)` and has both ends send `spec` ticks from `epoch`.
pub async fn run(
    server: &GameServer,
    client_target: SocketAddr,
    spec: TickSpec,
    run_id: u32,
    warm_up: Duration,
    armed: impl FnOnce(Instant),
) -> Result<PairTrace, TickError> {
    let client = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    client.connect(client_target).await?;
    let peer = warm_up_phase(&client, &server.socket, run_id, warm_up).await?;
    let epoch = Instant::now();
    armed(epoch);
    let ((up_sent, down_arrivals, rtt), (down_sent, up_arrivals)) = tokio::try_join!(
        client_end(&client, spec, run_id, epoch),
        server_end(&server.socket, peer, spec, run_id, epoch),
    )?;
    Ok(PairTrace {
        up: StreamTrace {
            sent: up_sent,
            arrivals: up_arrivals,
        },
        down: StreamTrace {
            sent: down_sent,
            arrivals: down_arrivals,
        },
        rtt,
    })
}

async fn warm_up_phase(
    client: &UdpSocket,
    server: &UdpSocket,
    run: u32,
    limit: Duration,
) -> Result<SocketAddr, TickError> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut cbuf = vec![0u8; 2048];
    let mut sbuf = vec![0u8; 2048];
    let mut peer = None;
    let mut tick = tokio::time::interval(HELLO_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let h = Header { run, kind: KIND_HELLO, seq: 0, sent_us: 0, echo_seq: NO_ECHO, echo_sent_us: 0, echo_hold_us: 0 };
                encode(&h, HEADER_LEN, &mut out);
                client.send(&out).await?;
            }
            r = server.recv_from(&mut sbuf) => {
                let (n, from) = r?;
                if let Some(h) = decode(&sbuf[..n]) && h.run == run && h.kind == KIND_HELLO {
                    peer = Some(from);
                    let a = Header { kind: KIND_HELLO_ACK, ..h };
                    encode(&a, HEADER_LEN, &mut out);
                    server.send_to(&out, from).await?;
                }
            }
            r = client.recv(&mut cbuf) => {
                // Connection-refused errors before the proxy is up are not fatal.
                let Ok(n) = r else { continue };
                if let Some(h) = decode(&cbuf[..n]) && h.run == run && h.kind == KIND_HELLO_ACK
                    && let Some(p) = peer
                {
                    return Ok(p);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Err(TickError::WarmUp(limit)),
        }
    }
}

type ClientOut = (Vec<Option<Sent>>, Vec<Arrival>, Vec<RttSample>);

async fn client_end(
    sock: &UdpSocket,
    spec: TickSpec,
    run: u32,
    epoch: Instant,
) -> Result<ClientOut, TickError> {
    let total = spec.total();
    let interval = spec.interval();
    let end = epoch + spec.duration + spec.drain;
    let mut rng = fastrand::Rng::with_seed(crate::link::derive_seed(spec.seed, 0xC11E));
    let mut sent = vec![None; total as usize];
    let mut arrivals = Vec::with_capacity(total as usize);
    let mut rtt = Vec::with_capacity(total as usize);
    let mut echoed = vec![false; total as usize];
    let mut out = Vec::with_capacity(spec.max_size);
    let mut buf = vec![0u8; 65536];
    let mut k = 0u32;
    loop {
        let next = epoch + interval.mul_f64(k as f64);
        tokio::select! {
            _ = tokio::time::sleep_until(next), if k < total => {
                let size = rng.usize(spec.min_size.max(HEADER_LEN)..=spec.max_size.max(HEADER_LEN));
                let at_us = us_since(epoch);
                let h = Header { run, kind: KIND_TICK, seq: k, sent_us: at_us, echo_seq: NO_ECHO, echo_sent_us: 0, echo_hold_us: 0 };
                encode(&h, size, &mut out);
                // A send error (e.g. refused) is a lost packet, not a failed run.
                let _ = sock.send(&out).await;
                sent[k as usize] = Some(Sent { at_us, size: size as u32 });
                k += 1;
            }
            r = sock.recv(&mut buf) => {
                let Ok(n) = r else { continue };
                let now = us_since(epoch);
                let Some(h) = decode(&buf[..n]) else { continue };
                if h.run != run || h.kind != KIND_TICK {
                    continue;
                }
                arrivals.push(Arrival { seq: h.seq, at_us: now });
                if h.echo_seq != NO_ECHO
                    && let Some(e) = echoed.get_mut(h.echo_seq as usize)
                    && !*e
                {
                    *e = true;
                    let rt = now.saturating_sub(h.echo_sent_us).saturating_sub(h.echo_hold_us);
                    rtt.push(RttSample { at_us: h.echo_sent_us, rtt_us: rt.max(1) });
                }
            }
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    Ok((sent, arrivals, rtt))
}

async fn server_end(
    sock: &UdpSocket,
    mut peer: SocketAddr,
    spec: TickSpec,
    run: u32,
    epoch: Instant,
) -> Result<(Vec<Option<Sent>>, Vec<Arrival>), TickError> {
    let total = spec.total();
    let interval = spec.interval();
    let end = epoch + spec.duration + spec.drain;
    let mut rng = fastrand::Rng::with_seed(crate::link::derive_seed(spec.seed, 0x5E4E));
    let mut sent = vec![None; total as usize];
    let mut arrivals = Vec::with_capacity(total as usize);
    let mut out = Vec::with_capacity(spec.max_size);
    let mut buf = vec![0u8; 65536];
    // Newest client tick: (seq, its send time, when we got it).
    let mut newest: Option<(u32, u64, u64)> = None;
    let mut k = 0u32;
    loop {
        let next = epoch + interval.mul_f64(k as f64);
        tokio::select! {
            _ = tokio::time::sleep_until(next), if k < total => {
                let size = rng.usize(spec.min_size.max(HEADER_LEN)..=spec.max_size.max(HEADER_LEN));
                let at_us = us_since(epoch);
                let (echo_seq, echo_sent_us, echo_hold_us) = match newest {
                    Some((s, sent_us, got_us)) => (s, sent_us, at_us.saturating_sub(got_us)),
                    None => (NO_ECHO, 0, 0),
                };
                let h = Header { run, kind: KIND_TICK, seq: k, sent_us: at_us, echo_seq, echo_sent_us, echo_hold_us };
                encode(&h, size, &mut out);
                let _ = sock.send_to(&out, peer).await;
                sent[k as usize] = Some(Sent { at_us, size: size as u32 });
                k += 1;
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let now = us_since(epoch);
                let Some(h) = decode(&buf[..n]) else { continue };
                if h.run != run || h.kind != KIND_TICK {
                    continue;
                }
                // Follow the node's flow socket if it changes (node restart, new exit).
                peer = from;
                arrivals.push(Arrival { seq: h.seq, at_us: now });
                if newest.is_none_or(|(s, _, _)| h.seq > s) {
                    newest = Some((h.seq, h.sent_us, now));
                }
            }
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    Ok((sent, arrivals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_pads() {
        let h = Header {
            run: 7,
            kind: KIND_TICK,
            seq: 42,
            sent_us: 123_456,
            echo_seq: 41,
            echo_sent_us: 120_000,
            echo_hold_us: 300,
        };
        let mut out = Vec::new();
        encode(&h, 200, &mut out);
        assert_eq!(out.len(), 200);
        let d = decode(&out).unwrap();
        assert_eq!(
            (
                d.run,
                d.kind,
                d.seq,
                d.sent_us,
                d.echo_seq,
                d.echo_sent_us,
                d.echo_hold_us
            ),
            (7, KIND_TICK, 42, 123_456, 41, 120_000, 300)
        );
        assert!(decode(&out[..HEADER_LEN - 1]).is_none());
    }
}
