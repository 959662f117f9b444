//! Node-side destination policy, applied on top of the ticket: by default a node never
//! forwards to its own loopback, private, link-local or multicast ranges, whatever a ticket says.

use std::net::{IpAddr, SocketAddr};

/// Whether `addr` is a globally routable unicast destination.
pub fn is_public(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared address space
                || o[0] >= 240)
                && addr.port() != 0
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(SocketAddr::new(v4.into(), addr.port()));
            }
            let s = ip.segments();
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80) // link local
                && addr.port() != 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        for bad in [
            "127.0.0.1:1",
            "10.1.2.3:1",
            "192.168.0.1:1",
            "172.16.0.1:1",
            "169.254.1.1:1",
            "0.0.0.0:1",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "100.64.0.1:1",
            "[::1]:1",
            "[fd00::1]:1",
            "[fe80::1]:1",
            "[::ffff:127.0.0.1]:1",
            "8.8.8.8:0",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad}");
        }
        for good in ["8.8.8.8:53", "155.133.224.1:27015", "[2001:4860::1]:443"] {
            assert!(is_public(good.parse().unwrap()), "{good}");
        }
    }
}
