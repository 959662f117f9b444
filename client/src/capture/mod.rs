//! Capture backends: how the game's UDP packets reach the client and how replies go back,
//! behind one trait. `proxy` (a local UDP port the game is pointed at) works everywhere; `tun`
//! (Linux) and `windivert` (Windows) capture without reconfiguring the game.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

pub mod helper;
pub mod packet;
pub mod proxy;
pub mod targets;
#[cfg(target_os = "linux")]
pub mod tun;
#[cfg(windows)]
pub mod windivert;

pub use proxy::ProxyCapture;
pub use targets::Targets;
#[cfg(target_os = "linux")]
pub use tun::{TunCapture, TunConfig, TunError};
#[cfg(windows)]
pub use windivert::{WinDivertCapture, WinDivertCaptureError};

/// A captured game packet: who sent it, where it was going, and how many bytes of the
/// caller's buffer it filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The game's own address (source of the packet).
    pub game: SocketAddr,
    /// The game server the packet was addressed to.
    pub server: SocketAddr,
    /// Payload length in the buffer.
    pub len: usize,
}

/// A capture backend.
pub trait Capture: Send + 'static {
    /// Waits for the next packet from the game and copies its UDP payload into `buf`.
    /// Must be cancel-safe: it is polled in a `select!`.
    fn recv(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<Captured>> + Send;

    /// Delivers a server's reply to the game so that it appears to come from `server`.
    fn send(
        &mut self,
        game: SocketAddr,
        server: SocketAddr,
        payload: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// A short description for logs and the UI ("proxy 127.0.0.1:7777", "tun plg0").
    fn describe(&self) -> String;
}
