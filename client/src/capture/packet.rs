//! Raw IP packets for the backends that see them (`tun`, `windivert`): pick the UDP datagrams
//! out of captured IPv4/IPv6 packets, and build the replies the game must see as coming from
//! the server itself (valid IP and UDP checksums). Header work is etherparse's.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use etherparse::{IpNumber, IpSlice, PacketBuilder, UdpSlice};

use super::targets::Targets;

/// TTL / hop limit of the replies we write: what a server a few hops away would leave.
const REPLY_TTL: u8 = 64;

/// A UDP datagram found in an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// UDP payload.
    pub payload: &'a [u8],
}

/// Why a captured IP packet is not a UDP datagram we can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotUdp {
    /// Not a well-formed IPv4/IPv6 packet, or a truncated UDP header.
    #[error("malformed IP packet")]
    Malformed,
    /// Another protocol (TCP, ICMP, ...).
    #[error("not UDP")]
    OtherProtocol,
    /// A fragment of a larger datagram (games send datagrams below the MTU; fragments are
    /// not reassembled).
    #[error("IP fragment")]
    Fragment,
}

/// Finds the UDP datagram in an IPv4 or IPv6 packet. Checksums are not verified: the packets
/// come from the local stack, which may leave them to offload.
pub fn parse_udp(packet: &[u8]) -> Result<UdpDatagram<'_>, NotUdp> {
    let ip = IpSlice::from_slice(packet).map_err(|_| NotUdp::Malformed)?;
    if ip.is_fragmenting_payload() {
        return Err(NotUdp::Fragment);
    }
    if ip.payload_ip_number() != IpNumber::UDP {
        return Err(NotUdp::OtherProtocol);
    }
    let udp = UdpSlice::from_slice(ip.payload().payload).map_err(|_| NotUdp::Malformed)?;
    Ok(UdpDatagram {
        src: SocketAddr::new(ip.source_addr(), udp.source_port()),
        dst: SocketAddr::new(ip.destination_addr(), udp.destination_port()),
        payload: udp.payload(),
    })
}

/// Why a reply packet could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Source and destination are of different IP versions.
    #[error("cannot build a packet from {src} to {dst}: different IP versions")]
    MixedFamilies {
        /// Source.
        src: SocketAddr,
        /// Destination.
        dst: SocketAddr,
    },
    /// The payload does not fit in one IP packet.
    #[error("payload of {0} bytes does not fit in one IP packet")]
    TooLarge(usize),
}

impl From<BuildError> for std::io::Error {
    fn from(e: BuildError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// Writes an IP/UDP packet from `src` to `dst` carrying `payload` into `out` (cleared first),
/// with the IPv4 header checksum and the UDP checksum filled in. IPv4-mapped IPv6 addresses are
/// written as IPv4.
pub fn build_udp(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BuildError> {
    out.clear();
    let builder = match (src.ip().to_canonical(), dst.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if payload.len() > usize::from(u16::MAX) - 20 - 8 {
                return Err(BuildError::TooLarge(payload.len()));
            }
            PacketBuilder::ipv4(s.octets(), d.octets(), REPLY_TTL)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), REPLY_TTL),
        _ => return Err(BuildError::MixedFamilies { src, dst }),
    };
    let builder = builder.udp(src.port(), dst.port());
    out.reserve(builder.size(payload.len()));
    builder
        .write(out, payload)
        .map_err(|_| BuildError::TooLarge(payload.len()))
}

/// What a capturing backend did with the packets it saw (all monotonic counters).
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// Game datagrams handed to the session.
    pub captured: AtomicU64,
    /// Packets that were not UDP (TCP, ICMP, neighbour discovery, ...): dropped.
    pub not_udp: AtomicU64,
    /// IP fragments: dropped.
    pub fragments: AtomicU64,
    /// Malformed packets: dropped.
    pub malformed: AtomicU64,
    /// UDP datagrams to an address or port outside the destinations (or to an excluded
    /// address): dropped.
    pub outside: AtomicU64,
    /// Datagrams larger than the session's receive buffer: dropped.
    pub oversize: AtomicU64,
    /// Replies written back to the game.
    pub delivered: AtomicU64,
}

impl CaptureCounters {
    /// Classifies a captured packet: the UDP datagram if it is game traffic to carry, else
    /// `None` with the reason counted.
    pub fn classify<'a>(&self, packet: &'a [u8], targets: &Targets) -> Option<UdpDatagram<'a>> {
        let counter = match parse_udp(packet) {
            Ok(d) if targets.contains(d.dst) => {
                self.captured.fetch_add(1, Ordering::Relaxed);
                return Some(d);
            }
            Ok(_) => &self.outside,
            Err(NotUdp::OtherProtocol) => &self.not_udp,
            Err(NotUdp::Fragment) => &self.fragments,
            Err(NotUdp::Malformed) => &self.malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Sum of the drop counters.
    pub fn dropped(&self) -> u64 {
        [
            &self.not_udp,
            &self.fragments,
            &self.malformed,
            &self.outside,
            &self.oversize,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Ipv4Header, Ipv4HeaderSlice};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// RFC 1071 one's-complement sum over 16-bit words, folded.
    fn ones_sum(mut acc: u32, data: &[u8]) -> u32 {
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            acc += u32::from(w);
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc
    }

    /// Verifies the UDP checksum independently of etherparse: the sum over the pseudo-header
    /// and the whole UDP segment must be 0xffff.
    pub(super) fn udp_checksum_ok(packet: &[u8]) -> bool {
        let ip = IpSlice::from_slice(packet).unwrap();
        let udp = ip.payload().payload;
        let mut pseudo = Vec::new();
        match (ip.source_addr(), ip.destination_addr()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, 17]);
                pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 17]);
            }
            _ => unreachable!(),
        }
        let checksum = u16::from_be_bytes([udp[6], udp[7]]);
        checksum != 0 && ones_sum(ones_sum(0, &pseudo), udp) == 0xffff
    }

    #[test]
    fn ipv4_round_trip_with_valid_checksums() {
        let mut out = Vec::new();
        let payload = b"hello game server, odd length!";
        build_udp(
            sa("10.200.2.2:27015"),
            sa("10.200.1.2:40000"),
            payload,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 20 + 8 + payload.len());
        let d = parse_udp(&out).unwrap();
        assert_eq!(d.src, sa("10.200.2.2:27015"));
        assert_eq!(d.dst, sa("10.200.1.2:40000"));
        assert_eq!(d.payload, payload);
        // IPv4 header checksum: the header sums to 0xffff.
        assert_eq!(ones_sum(0, &out[..20]), 0xffff);
        let h = Ipv4HeaderSlice::from_slice(&out).unwrap().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.time_to_live, REPLY_TTL);
        assert!(udp_checksum_ok(&out));
    }

    #[test]
    fn ipv6_round_trip_with_valid_checksum() {
        let mut out = Vec::new();
        let payload = vec![0xa5; 1200];
        build_udp(
            sa("[fd00:200:2::2]:5000"),
            sa("[fd00:200:1::2]:6000"),
            &payload,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 40 + 8 + payload.len());
        let d = parse_udp(&out).unwrap();
        assert_eq!(d.src, sa("[fd00:200:2::2]:5000"));
        assert_eq!(d.dst, sa("[fd00:200:1::2]:6000"));
        assert_eq!(d.payload, &payload[..]);
        assert!(udp_checksum_ok(&out));
    }

    #[test]
    fn empty_payload_and_mapped_addresses() {
        let mut out = Vec::new();
        build_udp(sa("[::ffff:192.0.2.1]:1"), sa("192.0.2.2:2"), b"", &mut out).unwrap();
        assert_eq!(out[0] >> 4, 4, "IPv4-mapped is written as IPv4");
        let d = parse_udp(&out).unwrap();
        assert_eq!(d.payload, b"");
        assert!(udp_checksum_ok(&out));
    }

    #[test]
    fn build_rejects_mixed_families_and_oversize() {
        let mut out = Vec::new();
        assert!(matches!(
            build_udp(sa("10.0.0.1:1"), sa("[2001:db8::1]:1"), b"x", &mut out),
            Err(BuildError::MixedFamilies { .. })
        ));
        assert_eq!(
            build_udp(
                sa("10.0.0.1:1"),
                sa("10.0.0.2:1"),
                &vec![0; 65_508],
                &mut out
            ),
            Err(BuildError::TooLarge(65_508))
        );
        build_udp(
            sa("10.0.0.1:1"),
            sa("10.0.0.2:1"),
            &vec![0; 65_507],
            &mut out,
        )
        .unwrap();
    }

    #[test]
    fn parse_rejects_other_protocols_fragments_and_garbage() {
        assert_eq!(parse_udp(&[]), Err(NotUdp::Malformed));
        assert_eq!(parse_udp(&[0x45, 0, 0]), Err(NotUdp::Malformed));
        assert_eq!(parse_udp(&[0x60; 10]), Err(NotUdp::Malformed));

        // TCP.
        let mut tcp = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 0, 1000)
            .write(&mut tcp, b"x")
            .unwrap();
        assert_eq!(parse_udp(&tcp), Err(NotUdp::OtherProtocol));

        // An IPv4 first fragment of a UDP datagram.
        let mut frag = Vec::new();
        build_udp(sa("10.0.0.1:1"), sa("10.0.0.2:2"), &[7; 100], &mut frag).unwrap();
        let mut h = Ipv4HeaderSlice::from_slice(&frag).unwrap().to_header();
        h.more_fragments = true;
        h.dont_fragment = false;
        h.header_checksum = h.calc_header_checksum();
        let mut fragment = Vec::new();
        h.write(&mut fragment).unwrap();
        fragment.extend_from_slice(&frag[Ipv4Header::MIN_LEN..]);
        assert_eq!(parse_udp(&fragment), Err(NotUdp::Fragment));

        // Truncated UDP header (IP total length says 24 bytes).
        let mut short = frag.clone();
        short.truncate(24);
        short[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(parse_udp(&short), Err(NotUdp::Malformed));
    }

    #[test]
    fn classify_counts_why_packets_are_dropped() {
        let targets = Targets::parse(["10.200.0.0/16:27015"]).unwrap();
        let c = CaptureCounters::default();
        let mut p = Vec::new();
        build_udp(sa("10.200.1.2:5000"), sa("10.200.2.2:27015"), b"in", &mut p).unwrap();
        assert_eq!(c.classify(&p, &targets).unwrap().payload, b"in");
        build_udp(
            sa("10.200.1.2:5000"),
            sa("10.200.2.2:27016"),
            b"port",
            &mut p,
        )
        .unwrap();
        assert!(c.classify(&p, &targets).is_none());
        build_udp(
            sa("10.200.1.2:5000"),
            sa("10.201.2.2:27015"),
            b"net",
            &mut p,
        )
        .unwrap();
        assert!(c.classify(&p, &targets).is_none());
        assert!(c.classify(&[1, 2, 3], &targets).is_none());
        let mut tcp = Vec::new();
        PacketBuilder::ipv4([10, 200, 1, 2], [10, 200, 2, 2], 64)
            .tcp(1, 27015, 0, 1000)
            .write(&mut tcp, b"x")
            .unwrap();
        assert!(c.classify(&tcp, &targets).is_none());
        assert_eq!(c.captured.load(Ordering::Relaxed), 1);
        assert_eq!(c.outside.load(Ordering::Relaxed), 2);
        assert_eq!(c.malformed.load(Ordering::Relaxed), 1);
        assert_eq!(c.not_udp.load(Ordering::Relaxed), 1);
        assert_eq!(c.dropped(), 4);
    }
}

#[cfg(test)]
mod proptests {
    use super::tests::udp_checksum_ok;
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        prop_oneof![
            (any::<u32>(), any::<u16>(), any::<u32>(), any::<u16>()).prop_map(|(a, p, b, q)| (
                SocketAddr::new(Ipv4Addr::from(a).into(), p),
                SocketAddr::new(Ipv4Addr::from(b).into(), q)
            )),
            (any::<u128>(), any::<u16>(), any::<u128>(), any::<u16>()).prop_map(|(a, p, b, q)| {
                // Keep IPv6 addresses that are not IPv4-mapped (those are written as IPv4).
                let v6 = |x: u128| {
                    let ip = Ipv6Addr::from(x);
                    if ip.to_ipv4_mapped().is_some() {
                        Ipv6Addr::from(x | 1 << 127)
                    } else {
                        ip
                    }
                };
                (
                    SocketAddr::new(v6(a).into(), p),
                    SocketAddr::new(v6(b).into(), q),
                )
            }),
        ]
    }

    proptest! {
        #[test]
        fn build_then_parse_is_identity(
            (src, dst) in addr_pair(),
            payload in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let mut out = Vec::new();
            build_udp(src, dst, &payload, &mut out).unwrap();
            let d = parse_udp(&out).unwrap();
            prop_assert_eq!(d.src, src);
            prop_assert_eq!(d.dst, dst);
            prop_assert_eq!(d.payload, &payload[..]);
            prop_assert!(udp_checksum_ok(&out));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_udp(&bytes);
        }
    }
}
