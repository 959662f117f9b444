//! Local UDP proxy capture: the game is pointed at a local port; every packet goes to one
//! fixed game server. A reply we send to a game that has since closed its port draws an ICMP
//! port unreachable; that is not a reason to stop listening for the others.

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
        let socket = UdpSocket::bind(listen).await?;
        crate::connreset::disable_connreset(&socket)?;
        Ok(ProxyCapture { socket, server })
    }

    /// The address the game should send to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl Capture for ProxyCapture {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<Captured> {
        loop {
            match self.socket.recv_from(buf).await {
                Ok((len, game)) => {
                    return Ok(Captured {
                        game,
                        server: self.server,
                        len,
                    });
                }
                Err(e) if crate::connreset::is_icmp_report(&e) => continue,
                Err(e) => return Err(e),
            }
        }
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

// Linux only: it provokes the ICMP report a Windows socket would see by default.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Linux reports ICMP errors on an unconnected UDP socket only with `IP_RECVERR`; with
    /// it, the socket behaves like a Windows one without `SIO_UDP_CONNRESET` off.
    fn report_icmp_errors(socket: &UdpSocket) {
        use nix::sys::socket::{setsockopt, sockopt::Ipv4RecvErr};
        setsockopt(socket, Ipv4RecvErr, &true).unwrap();
    }

    #[tokio::test]
    async fn a_game_gone_away_does_not_end_the_capture() {
        let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let server: SocketAddr = "192.0.2.1:27015".parse().unwrap();
        let mut buf = [0u8; 64];

        // The report is real: a bare socket's next receive fails with it.
        let bare = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        report_icmp_errors(&bare);
        bare.send_to(b"reply", gone_addr).await.unwrap();
        let e = bare.recv_from(&mut buf).await.unwrap_err();
        assert!(crate::connreset::is_icmp_report(&e), "{e}");

        // The capture skips it and hands over the next game packet.
        let mut capture = ProxyCapture::bind("127.0.0.1:0".parse().unwrap(), server)
            .await
            .unwrap();
        report_icmp_errors(&capture.socket);
        capture.send(gone_addr, server, b"reply").await.unwrap();
        let game = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        game.send_to(b"input", capture.local_addr().unwrap())
            .await
            .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), capture.recv(&mut buf))
            .await
            .expect("a packet")
            .unwrap();
        assert_eq!(&buf[..got.len], b"input");
        assert_eq!(got.game, game.local_addr().unwrap());
        assert_eq!(got.server, server);
    }
}
