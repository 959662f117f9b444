//! An in-memory datagram network for tests, benchmarks and simulations.
//!
//! It carries the same sealed bytes the UDP socket would (the gossip transport seals and
//! opens exactly as in production, so authentication, replay and skew checks stay on the
//! path), but delivery is a channel send: no OS socket, no scheduler noise, and with paused
//! tokio time a mesh converges or detects a failure in virtual seconds and real
//! milliseconds. Like UDP it is unreliable when overwhelmed (a full receive queue drops the
//! datagram), sending to an address nobody bound is not an error, and a socket's address is
//! free again once it is dropped. The network has its own [`WallClock`] that follows
//! tokio's clock.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::clock::{WallClock, system_ms};
use crate::seal::MAX_DATAGRAM;

/// Datagrams a socket may have queued before new ones are dropped.
const QUEUE: usize = 4_096;
/// First port handed out for port 0.
const FIRST_PORT: u16 = 20_000;

type Datagram = (SocketAddr, Box<[u8]>);

#[derive(Debug)]
struct Inner {
    sockets: HashMap<SocketAddr, mpsc::Sender<Datagram>>,
    next_port: u16,
    dropped: u64,
}

/// An in-memory network. Cheap to clone; clones are the same network.
#[derive(Clone, Debug)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Inner>>,
    clock: WallClock,
}

impl Default for MemoryNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryNetwork {
    /// An empty network whose wall clock starts at the system's and then follows tokio's.
    pub fn new() -> Self {
        MemoryNetwork {
            inner: Arc::new(Mutex::new(Inner {
                sockets: HashMap::new(),
                next_port: FIRST_PORT,
                dropped: 0,
            })),
            clock: WallClock::following_tokio(system_ms()),
        }
    }

    /// The network's wall clock (for sequence numbers and generations of its nodes).
    pub fn clock(&self) -> WallClock {
        self.clock
    }

    /// Binds `addr`; port 0 picks a free one. Fails with `AddrInUse` if it is taken.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemorySocket> {
        let mut inner = self.inner.lock().expect("not poisoned");
        let addr = if addr.port() == 0 {
            let mut found = None;
            for _ in 0..=u16::MAX {
                let port = inner.next_port;
                inner.next_port = inner.next_port.checked_add(1).unwrap_or(FIRST_PORT);
                let candidate = SocketAddr::new(addr.ip(), port);
                if !inner.sockets.contains_key(&candidate) {
                    found = Some(candidate);
                    break;
                }
            }
            found.ok_or_else(|| io::Error::from(io::ErrorKind::AddrInUse))?
        } else if inner.sockets.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is bound"),
            ));
        } else {
            addr
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        inner.sockets.insert(addr, tx);
        Ok(MemorySocket {
            addr,
            net: self.clone(),
            rx,
        })
    }

    /// Datagrams dropped because the receiver's queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().expect("not poisoned").dropped
    }
}

/// A socket bound on a [`MemoryNetwork`]; dropping it frees the address.
#[derive(Debug)]
pub struct MemorySocket {
    addr: SocketAddr,
    net: MemoryNetwork,
    rx: mpsc::Receiver<Datagram>,
}

impl MemorySocket {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one datagram. Unknown destinations and full queues drop it silently, as UDP
    /// would; only a datagram larger than UDP allows is an error.
    pub fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram larger than UDP allows",
            ));
        }
        let mut inner = self.net.inner.lock().expect("not poisoned");
        if let Some(tx) = inner.sockets.get(&to)
            && tx.try_send((self.addr, datagram.into())).is_err()
        {
            inner.dropped += 1;
        }
        Ok(datagram.len())
    }

    /// Waits for the next datagram and copies it into `buf` (truncating, like UDP).
    /// Cancel-safe.
    pub async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (from, datagram) = self
            .rx
            .recv()
            .await
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let len = datagram.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram[..len]);
        Ok((len, from))
    }
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        self.net
            .inner
            .lock()
            .expect("not poisoned")
            .sockets
            .remove(&self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn delivers_with_the_sender_address() {
        let net = MemoryNetwork::new();
        let a = net.bind(addr("127.0.0.1:0")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:0")).unwrap();
        assert_ne!(a.local_addr(), b.local_addr());
        a.send_to(b"hi", b.local_addr()).unwrap();
        let mut buf = [0; 8];
        let (len, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..len], from), (&b"hi"[..], a.local_addr()));
    }

    #[tokio::test]
    async fn address_in_use_until_dropped_and_unknown_destination_is_fine() {
        let net = MemoryNetwork::new();
        let a = net.bind(addr("10.0.0.1:7000")).unwrap();
        let err = net.bind(addr("10.0.0.1:7000")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        a.send_to(b"x", addr("10.0.0.2:1")).unwrap();
        assert!(
            a.send_to(&vec![0; MAX_DATAGRAM + 1], addr("10.0.0.2:1"))
                .is_err()
        );
        drop(a);
        net.bind(addr("10.0.0.1:7000")).unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let net = MemoryNetwork::new();
        let a = net.bind(addr("127.0.0.1:0")).unwrap();
        let b = net.bind(addr("127.0.0.1:0")).unwrap();
        for _ in 0..QUEUE + 3 {
            a.send_to(b"x", b.local_addr()).unwrap();
        }
        assert_eq!(net.dropped(), 3);
    }
}
