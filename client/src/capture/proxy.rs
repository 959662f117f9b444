//! Local UDP proxy capture: the game is pointed at a local port; every packet goes to one
//! fixed game server.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::{Capture, Captured};

/// A local UDP port standing in for the game server.
#[derive(Debug)]
pub struct ProxyCapture {
    socket: UdpSocket,
    server: SocketAddr,
}

impl ProxyCapture {
    /// Listens on `listen`; everything received is meant for `server`.
    pub async fn bind(listen: SocketAddr, server: SocketAddr) -> io::Result<ProxyCapture> {
        Ok(ProxyCapture {
            socket: UdpSocket::bind(listen).await?,
            server,
        })
    }

    /// The address the game should send to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl Capture for ProxyCapture {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<Captured> {
        let (len, game) = self.socket.recv_from(buf).await?;
        Ok(Captured {
            game,
            server: self.server,
            len,
        })
    }

    async fn send(
        &mut self,
        game: SocketAddr,
        _server: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        self.socket.send_to(payload, game).await.map(|_| ())
    }

    fn describe(&self) -> String {
        match self.socket.local_addr() {
            Ok(a) => format!("proxy {a} → {}", self.server),
            Err(_) => format!("proxy → {}", self.server),
        }
    }
}
