//! ICMP errors on UDP sockets. When a datagram we sent draws an ICMP port unreachable, the
//! kernel reports it on a later call on the same socket: Linux only on a connected socket
//! (`ECONNREFUSED`), Windows on any UDP socket, as `WSAECONNRESET` (10054) from the next
//! `recv`, which ends a receive loop that treats every error as fatal. Every UDP socket the
//! client binds goes through [`disable_connreset`], and receive loops skip what
//! [`is_icmp_report`] recognises: one unreachable game or probe target must not stop the rest.

use std::io;

/// Stops Windows from reporting ICMP port unreachable on `socket` as `WSAECONNRESET`
/// (`SIO_UDP_CONNRESET` off). A no-op elsewhere.
#[cfg(windows)]
pub fn disable_connreset(socket: &impl std::os::windows::io::AsSocket) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;

    use windows_sys::Win32::Foundation::FALSE;
    use windows_sys::Win32::Networking::WinSock::{
        SIO_UDP_CONNRESET, SOCKET, SOCKET_ERROR, WSAGetLastError, WSAIoctl,
    };

    let raw = socket.as_socket().as_raw_socket() as SOCKET;
    let enable = FALSE;
    let mut returned = 0u32;
    // SAFETY: `raw` stays open for the call (it is borrowed through `AsSocket`). The input
    // is a BOOL of the size given, there is no output buffer, `returned` is a writable u32,
    // and without an OVERLAPPED or a completion routine the call is synchronous, so no
    // pointer is kept after it returns.
    #[allow(unsafe_code)]
    let failed = unsafe {
        let rc = WSAIoctl(
            raw,
            SIO_UDP_CONNRESET,
            (&raw const enable).cast(),
            size_of_val(&enable) as u32,
            std::ptr::null_mut(),
            0,
            &mut returned,
            std::ptr::null_mut(),
            None,
        );
        (rc == SOCKET_ERROR).then(|| WSAGetLastError())
    };
    match failed {
        Some(code) => Err(io::Error::from_raw_os_error(code)),
        None => Ok(()),
    }
}

/// Stops Windows from reporting ICMP port unreachable on `socket` as `WSAECONNRESET`
/// (`SIO_UDP_CONNRESET` off). A no-op elsewhere.
#[cfg(not(windows))]
pub fn disable_connreset(_socket: &impl std::os::fd::AsFd) -> io::Result<()> {
    Ok(())
}

/// Whether a UDP receive error only reports an ICMP error for an earlier send: port
/// unreachable (`ECONNREFUSED` on Linux, `WSAECONNRESET` on Windows) or, on a connected Linux
/// socket, host or network unreachable. Such an error consumed no datagram and says nothing
/// about the socket: receive again.
pub fn is_icmp_report(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_reports_are_unreachables_only() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
        ] {
            assert!(is_icmp_report(&kind.into()), "{kind:?}");
        }
        // What the OS returns, by number: ECONNREFUSED, EHOSTUNREACH (Linux) / WSAECONNRESET
        // (Windows).
        #[cfg(target_os = "linux")]
        for errno in [111, 113] {
            assert!(
                is_icmp_report(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        #[cfg(windows)]
        assert!(is_icmp_report(&io::Error::from_raw_os_error(10054)));
        for kind in [
            io::ErrorKind::WouldBlock,
            io::ErrorKind::InvalidInput,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::Other,
        ] {
            assert!(!is_icmp_report(&kind.into()), "{kind:?}");
        }
    }

    /// A connected socket whose peer is gone sees the ICMP report on its next receive, except
    /// on Windows once `disable_connreset` turned the report off.
    #[tokio::test]
    async fn a_dead_peer_shows_up_as_an_icmp_report_unless_disabled() {
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = dead.local_addr().unwrap();
        drop(dead);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        disable_connreset(&socket).unwrap();
        socket.connect(target).await.unwrap();
        socket.send(b"x").await.unwrap();
        let mut buf = [0u8; 8];
        let r =
            tokio::time::timeout(std::time::Duration::from_secs(2), socket.recv(&mut buf)).await;
        #[cfg(not(windows))]
        assert!(is_icmp_report(
            &r.expect("the ICMP report arrives").unwrap_err()
        ));
        #[cfg(windows)]
        assert!(r.is_err(), "SIO_UDP_CONNRESET is off, yet: {r:?}");
    }
}
