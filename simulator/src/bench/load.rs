//! The echo server and the load generator of the benchmark: plain OS threads, no async runtime,
//! no task or allocation per packet.
//!
//! The generator owns one UDP socket per session (so nginx sees distinct clients and the node
//! distinct client addresses). A sender thread paces in small batches (every ~50 µs it sends
//! what is due since the start, so pacing never drifts); a receiver thread waits on all the
//! sockets with one level-triggered epoll and records round-trip times from the timestamp in
//! each payload. The echo server answers with `recvmmsg`/`sendmmsg` batches.

use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{
    MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt, sockopt,
};
use plg_proto::Session;
use plg_proto::frame::Frame;

use super::procfs;

/// Socket buffers asked for on the busy sockets (echo, generator); the node and nginx get the
/// same.
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 64;
/// Bytes of generator header in each payload: run, flow, sequence, send time.
const STAMP: usize = 24;

/// Asks for larger socket buffers (best effort: capped by `net.core.[rw]mem_max`).
pub(crate) fn grow_buffers(s: &UdpSocket) {
    let _ = setsockopt(s, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(s, sockopt::SndBuf, &SOCKET_BUFFER);
}

/// A UDP echo server on its own thread, answering in batches.
#[derive(Debug)]
pub(crate) struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tid: Arc<AtomicI32>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Binds 127.0.0.1:0 and starts answering.
    pub(crate) fn start() -> Result<Echo> {
        let sock = UdpSocket::bind("127.0.0.1:0").context("binding the echo socket")?;
        grow_buffers(&sock);
        // The blocking receive wakes up now and then to notice `stop`.
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicI32::new(0));
        let (s, t) = (stop.clone(), tid.clone());
        let thread = std::thread::Builder::new()
            .name("bench-echo".into())
            .spawn(move || {
                t.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
                echo_loop(&sock, &s)
            })?;
        Ok(Echo {
            addr,
            stop,
            tid,
            thread: Some(thread),
        })
    }

    /// CPU time the echo thread has used.
    pub(crate) fn cpu_ns(&self) -> u64 {
        procfs::own_thread_cpu_ns(self.tid.load(Ordering::Relaxed))
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_loop(sock: &UdpSocket, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut rx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut tx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut lens = [0usize; BATCH];
    let mut addrs: Vec<Option<SockaddrStorage>> = vec![None; BATCH];
    while !stop.load(Ordering::Relaxed) {
        let n = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(fd, &mut rx, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(res) => {
                    let mut n = 0;
                    for (i, r) in res.enumerate() {
                        lens[i] = r.bytes;
                        addrs[i] = r.address;
                        n = i + 1;
                    }
                    n
                }
                Err(_) => 0,
            }
        };
        if n == 0 {
            continue;
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = bufs[..n]
            .iter()
            .zip(&lens)
            .map(|(b, &l)| [IoSlice::new(&b[..l])])
            .collect();
        let mut done = 0;
        while done < n {
            match sendmmsg(
                fd,
                &mut tx,
                iovs[done..n].iter(),
                &addrs[done..n],
                [],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(res) => done += res.count().max(1),
                // A full send buffer: drop the rest of this batch rather than stall.
                Err(_) => break,
            }
        }
    }
}

/// How the generator offers load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Load {
    /// A fixed rate in packets per second, sent in ~50 µs batches.
    Paced(u64),
    /// At most this many packets in flight (lost ones are written off after 20 ms of silence).
    Closed(u64),
}

/// Where the generator's packets go and how they are wrapped.
#[derive(Debug)]
pub(crate) enum Target {
    /// Raw payloads to one address (the echo server directly, or nginx).
    Raw(SocketAddr),
    /// PLG data frames (flow 0 of each session) to a node's data port.
    Plg {
        /// The node's data address.
        addr: SocketAddr,
        /// Client ends used to seal, one per session.
        tx: Vec<Session>,
        /// Client ends used to open the replies (same keys, own replay window).
        rx: Vec<Session>,
    },
}

/// The generator's sockets, one per session.
#[derive(Debug)]
pub(crate) struct Clients {
    socks: Vec<UdpSocket>,
    epoll: Epoll,
    run: u32,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub(crate) struct RunStats {
    /// Packets sent.
    pub sent: u64,
    /// Echoes received (each once).
    pub received: u64,
    /// How long the sender ran.
    pub elapsed: Duration,
    /// Round-trip times in nanoseconds.
    pub rtt: Histogram<u64>,
    /// CPU time of the sender and receiver threads.
    pub generator_cpu_ns: u64,
    /// Whether the sender fell more than 2 % behind its schedule over the phase (the
    /// generator, not the path, was the limit).
    pub lagged: bool,
}

impl RunStats {
    /// Fraction of packets that did not come back.
    pub(crate) fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.sent.saturating_sub(self.received) as f64 / self.sent as f64
    }

    /// Echoes received per second.
    pub(crate) fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }

    /// RTT quantile in microseconds.
    pub(crate) fn rtt_us(&self, q: f64) -> f64 {
        self.rtt.value_at_quantile(q) as f64 / 1000.0
    }
}

impl Clients {
    /// Binds `n` sockets on 127.0.0.1.
    pub(crate) fn bind(n: usize) -> Result<Clients> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let mut socks = Vec::with_capacity(n);
        for i in 0..n {
            let s = UdpSocket::bind("127.0.0.1:0").context("binding a generator socket")?;
            s.set_nonblocking(true)?;
            epoll.add(&s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
            socks.push(s);
        }
        Ok(Clients {
            socks,
            epoll,
            run: 0,
        })
    }

    /// Number of sessions.
    pub(crate) fn len(&self) -> usize {
        self.socks.len()
    }

    /// Sends one datagram from session `i`'s socket.
    pub(crate) fn send_from(&self, i: usize, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        self.socks[i].send_to(data, to).map(|_| ())
    }

    /// Offers `load` to `target` for `duration`, then waits `drain` for late echoes.
    pub(crate) fn run(
        &mut self,
        target: &mut Target,
        load: Load,
        duration: Duration,
        drain: Duration,
        seed: u64,
    ) -> RunStats {
        self.run += 1;
        let run = self.run;
        let received = AtomicU64::new(0);
        let sender_done = AtomicBool::new(false);
        let (tx_sessions, rx_sessions, addr) = match target {
            Target::Raw(a) => (None, None, *a),
            Target::Plg { addr, tx, rx } => (Some(tx), Some(rx), *addr),
        };
        let socks = &self.socks;
        let epoll = &self.epoll;
        let epoch = Instant::now();
        std::thread::scope(|scope| {
            let sender = std::thread::Builder::new()
                .name("bench-send".into())
                .spawn_scoped(scope, || {
                    send_loop(
                        socks,
                        tx_sessions,
                        addr,
                        load,
                        duration,
                        run,
                        epoch,
                        seed,
                        &received,
                    )
                })
                .expect("spawning the sender");
            let wake = sender.thread().clone();
            let receiver = std::thread::Builder::new()
                .name("bench-recv".into())
                .spawn_scoped(scope, || {
                    recv_loop(
                        socks,
                        epoll,
                        rx_sessions,
                        run,
                        epoch,
                        &received,
                        &sender_done,
                        drain,
                        (matches!(load, Load::Closed(_))).then_some(wake),
                    )
                })
                .expect("spawning the receiver");
            let (sent, elapsed, lagged, send_cpu) = sender.join().expect("sender panicked");
            sender_done.store(true, Ordering::Release);
            let (rtt, recv_cpu) = receiver.join().expect("receiver panicked");
            RunStats {
                sent,
                received: received.load(Ordering::Relaxed),
                elapsed,
                rtt,
                generator_cpu_ns: send_cpu + recv_cpu,
                lagged,
            }
        })
    }
}

fn stamp(buf: &mut [u8], run: u32, flow: u32, seq: u64, t: u64) {
    buf[0..4].copy_from_slice(&run.to_be_bytes());
    buf[4..8].copy_from_slice(&flow.to_be_bytes());
    buf[8..16].copy_from_slice(&seq.to_be_bytes());
    buf[16..24].copy_from_slice(&t.to_be_bytes());
}

fn read_stamp(buf: &[u8]) -> Option<(u32, u32, u64)> {
    if buf.len() < STAMP {
        return None;
    }
    let run = u32::from_be_bytes(buf[0..4].try_into().ok()?);
    let flow = u32::from_be_bytes(buf[4..8].try_into().ok()?);
    let t = u64::from_be_bytes(buf[16..24].try_into().ok()?);
    Some((run, flow, t))
}

/// Returns (sent, elapsed, lagged, cpu ns).
#[allow(clippy::too_many_arguments)]
fn send_loop(
    socks: &[UdpSocket],
    mut sessions: Option<&mut Vec<Session>>,
    to: SocketAddr,
    load: Load,
    duration: Duration,
    run: u32,
    epoch: Instant,
    seed: u64,
    received: &AtomicU64,
) -> (u64, Duration, bool, u64) {
    let cpu0 = procfs::thread_cpu_ns();
    let n = socks.len() as u64;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut payload = [0u8; 300];
    rng.fill(&mut payload);
    let mut out = Vec::with_capacity(2048);
    let start = Instant::now();
    let end = start + duration;
    let mut sent = 0u64;
    // Closed loop: packets written off as lost, and when the echoes last moved.
    let (mut credit, mut last_rx, mut last_move) = (0u64, 0u64, start);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let allowed = match load {
            Load::Paced(rate) => (rate as f64 * (now - start).as_secs_f64()) as u64,
            Load::Closed(window) => {
                let rx = received.load(Ordering::Relaxed);
                if rx != last_rx {
                    (last_rx, last_move) = (rx, now);
                } else if now - last_move > Duration::from_millis(20) {
                    credit = sent - rx;
                    last_move = now;
                }
                rx + credit + window
            }
        };
        let mut burst = 0;
        while sent < allowed && burst < 512 {
            let i = (sent % n) as usize;
            let size = 100 + rng.usize(..=200);
            let t = epoch.elapsed().as_nanos() as u64;
            stamp(&mut payload, run, i as u32, sent, t);
            let r = match sessions.as_deref_mut() {
                None => socks[i].send_to(&payload[..size], to),
                Some(s) => {
                    s[i].seal(
                        0,
                        &Frame::Data {
                            flow: 0,
                            payload: &payload[..size],
                        },
                        &mut out,
                    );
                    socks[i].send_to(&out, to)
                }
            };
            // A refused send counts as sent: it shows up as loss.
            let _ = r;
            sent += 1;
            burst += 1;
        }
        match load {
            Load::Paced(_) => std::thread::sleep(Duration::from_micros(50)),
            Load::Closed(_) => {
                if sent >= allowed {
                    std::thread::park_timeout(Duration::from_millis(1));
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let lagged = match load {
        Load::Paced(rate) => (sent as f64) < 0.98 * rate as f64 * elapsed.as_secs_f64(),
        Load::Closed(_) => false,
    };
    (sent, elapsed, lagged, procfs::thread_cpu_ns() - cpu0)
}

/// Returns (RTT histogram, cpu ns).
#[allow(clippy::too_many_arguments)]
fn recv_loop(
    socks: &[UdpSocket],
    epoll: &Epoll,
    mut sessions: Option<&mut Vec<Session>>,
    run: u32,
    epoch: Instant,
    received: &AtomicU64,
    sender_done: &AtomicBool,
    drain: Duration,
    wake: Option<std::thread::Thread>,
) -> (Histogram<u64>, u64) {
    let cpu0 = procfs::thread_cpu_ns();
    let mut rtt = Histogram::<u64>::new_with_bounds(1_000, 10_000_000_000, 3).expect("bounds");
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = vec![0u8; 4096];
    let mut count = 0u64;
    let mut done_at: Option<Instant> = None;
    loop {
        if done_at.is_none() && sender_done.load(Ordering::Acquire) {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() >= drain) {
            break;
        }
        let n = epoll.wait(&mut events, 5u16).unwrap_or(0);
        for ev in &events[..n] {
            let i = ev.data() as usize;
            // Level-triggered: a socket with more queued is reported again next round.
            for _ in 0..4 {
                let len = match socks[i].recv(&mut buf) {
                    Ok(len) => len,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                };
                let payload: &[u8] = match sessions.as_deref_mut() {
                    None => &buf[..len],
                    Some(s) => match s[i].open(&mut buf[..len]) {
                        Ok((_, Frame::Data { payload, .. })) => payload,
                        _ => continue,
                    },
                };
                let Some((r, flow, t)) = read_stamp(payload) else {
                    continue;
                };
                if r != run || flow as usize != i {
                    continue;
                }
                let now = epoch.elapsed().as_nanos() as u64;
                let _ = rtt.record(now.saturating_sub(t).max(1_000));
                count += 1;
            }
        }
        received.store(count, Ordering::Relaxed);
        if let Some(w) = &wake {
            w.unpark();
        }
    }
    (rtt, procfs::thread_cpu_ns() - cpu0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_paced_and_closed_loop() {
        let echo = Echo::start().unwrap();
        let mut clients = Clients::bind(8).unwrap();
        let mut target = Target::Raw(echo.addr);
        let s = clients.run(
            &mut target,
            Load::Paced(2_000),
            Duration::from_millis(300),
            Duration::from_millis(100),
            1,
        );
        assert!(s.sent >= 500, "{s:?}");
        assert_eq!(s.received, s.sent, "loopback echo at 2K/s lost packets");
        assert!(s.rtt_us(0.5) > 0.0);
        let c = clients.run(
            &mut target,
            Load::Closed(8),
            Duration::from_millis(200),
            Duration::from_millis(100),
            2,
        );
        assert!(c.received > 100, "{c:?}");
    }
}
