//! A UDP game-server stand-in: echoes every datagram back to its sender and counts them
//! (except route probes — `plg_proto::query` echo probes from nodes measuring the exit→game
//! leg and from clients measuring the direct route — which are echoed but not counted, so
//! tests count only game traffic).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// A running echo server.
#[derive(Debug)]
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Datagrams received (probes left out).
    pub received: Arc<AtomicU64>,
    /// Distinct source addresses seen (of game traffic, not probes).
    pub sources: Arc<Mutex<HashSet<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Starts on `addr` (use port 0).
    pub async fn start(addr: SocketAddr) -> std::io::Result<EchoServer> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let sources = Arc::new(Mutex::new(HashSet::new()));
        let (r, s) = (received.clone(), sources.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if plg_proto::query::echo_nonce(&buf[..n]).is_none() {
                    r.fetch_add(1, Ordering::Relaxed);
                    s.lock().await.insert(from);
                }
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        Ok(EchoServer {
            addr,
            received,
            sources,
            task,
        })
    }

    /// Datagrams received so far.
    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
