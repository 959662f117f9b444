//! Node-to-node datagrams on the data port: relayed frames and RTT probes, sealed with a key
//! every mesh member derives from the gossip key billing hands out at join (so only nodes
//! that joined with a token, and hold a mesh-CA certificate, can produce them).
//!
//! ```text
//! 0   u8     marker 0xF1 (a client frame starts with its version, 1: never confused)
//! 1   u8     kind: 1 RELAY_UP, 2 RELAY_DOWN, 3 PROBE, 4 PROBE_ACK
//! 2   u16    reserved, 0
//! 4   [12]   nonce: sender salt (4 random bytes per process) ‖ u64 counter, big-endian
//! 16  ...    ChaCha20-Poly1305(plaintext) ‖ 16-byte tag; AAD = bytes 0..16
//!
//! plaintext: u64 sender's Unix time in ms, then
//!   RELAY_*:   u8 family (4|6) ‖ client ip (4|16) ‖ u16 client port ‖ the client's PLG datagram
//!   PROBE/ACK: u64 probe id
//! ```
//!
//! The receiver drops anything from an address that is not a live mesh node's data address,
//! anything whose time is more than [`MAX_SKEW_MS`] away from its clock, and anything that
//! fails authentication. The relayed PLG datagram stays sealed end to end with the session's
//! keys: a relay can neither read nor alter it, and the exit's replay window drops replays.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

/// First byte of every mesh datagram.
pub(crate) const MARKER: u8 = 0xF1;
/// Header length (marker, kind, reserved, nonce).
pub(crate) const HEADER: usize = 16;
const TAG: usize = 16;
/// Longest plaintext prefix before the relayed datagram: time, family, IPv6, port.
const RELAY_PREFIX: usize = 8 + 1 + 16 + 2;
/// Largest mesh datagram: a maximal client datagram with the relay envelope around it.
pub(crate) const MAX_MESH_DATAGRAM: usize =
    HEADER + RELAY_PREFIX + plg_proto::frame::MAX_DATAGRAM + TAG;
/// Mesh datagrams timestamped further than this from our clock are dropped.
pub(crate) const MAX_SKEW_MS: u64 = 30_000;

/// What a mesh datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Relay → exit: a client's datagram and the address it came from.
    RelayUp = 1,
    /// Exit → relay: a datagram for the client at the given address.
    RelayDown = 2,
    /// RTT probe.
    Probe = 3,
    /// Answer to a probe.
    ProbeAck = 4,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::RelayUp,
            2 => Kind::RelayDown,
            3 => Kind::Probe,
            4 => Kind::ProbeAck,
            _ => return None,
        })
    }
}

/// An opened mesh datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// A relayed client datagram (`RELAY_UP` or `RELAY_DOWN`).
    Relay {
        /// Direction.
        kind: Kind,
        /// The client's address as the relay sees it.
        client: SocketAddr,
        /// Where the client's PLG datagram (still sealed with the session's keys) lies in
        /// the buffer that was opened.
        datagram: std::ops::Range<usize>,
    },
    /// A probe or its answer.
    Probe {
        /// Direction.
        kind: Kind,
        /// Probe id, echoed in the answer.
        id: u64,
    },
}

/// Why a mesh datagram was dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LinkError {
    /// Too short, unknown kind, bad address family.
    #[error("malformed mesh datagram")]
    Malformed,
    /// Authentication failed.
    #[error("mesh datagram failed authentication")]
    Auth,
    /// Timestamp too far from our clock.
    #[error("mesh datagram outside the time window")]
    Stale,
}

/// Seals and opens mesh datagrams for one node.
pub(crate) struct MeshLink {
    key: LessSafeKey,
    salt: [u8; 4],
    counter: AtomicU64,
}

impl std::fmt::Debug for MeshLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshLink")
    }
}

struct KeyLen;
impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

impl MeshLink {
    /// Derives the link key from the mesh gossip key (HKDF-SHA256, info `plg mesh link v1`).
    pub(crate) fn new(gossip_key: &[u8; 32]) -> MeshLink {
        let mut okm = [0u8; 32];
        hkdf::Salt::new(hkdf::HKDF_SHA256, b"")
            .extract(gossip_key)
            .expand(&[b"plg mesh link v1"], KeyLen)
            .and_then(|o| o.fill(&mut okm))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &okm).expect("32-byte ChaCha20 key"),
        );
        let mut salt = [0u8; 4];
        getrandom::fill(&mut salt).expect("OS random numbers");
        MeshLink {
            key,
            salt,
            counter: AtomicU64::new(0),
        }
    }

    fn header(&self, kind: Kind, out: &mut Vec<u8>) -> Nonce {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.salt);
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        out.clear();
        out.extend_from_slice(&[MARKER, kind as u8, 0, 0]);
        out.extend_from_slice(&nonce);
        Nonce::assume_unique_for_key(nonce)
    }

    fn finish(&self, nonce: Nonce, out: &mut Vec<u8>) {
        let (aad, body) = out.split_at_mut(HEADER);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&aad[..]), body)
            .expect("ChaCha20-Poly1305 seals any length we produce");
        out.extend_from_slice(tag.as_ref());
    }

    /// Seals a relayed client datagram into `out`.
    pub(crate) fn seal_relay(
        &self,
        kind: Kind,
        now_ms: u64,
        client: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) {
        let nonce = self.header(kind, out);
        out.extend_from_slice(&now_ms.to_be_bytes());
        match client.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&client.port().to_be_bytes());
        out.extend_from_slice(datagram);
        self.finish(nonce, out);
    }

    /// Seals a probe or probe answer into `out`.
    pub(crate) fn seal_probe(&self, kind: Kind, now_ms: u64, id: u64, out: &mut Vec<u8>) {
        let nonce = self.header(kind, out);
        out.extend_from_slice(&now_ms.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        self.finish(nonce, out);
    }

    /// Authenticates and parses a mesh datagram in place.
    pub(crate) fn open(&self, now_ms: u64, datagram: &mut [u8]) -> Result<Message, LinkError> {
        if datagram.len() < HEADER + 8 + TAG || datagram[0] != MARKER || datagram[2..4] != [0, 0] {
            return Err(LinkError::Malformed);
        }
        let kind = Kind::from_u8(datagram[1]).ok_or(LinkError::Malformed)?;
        let (aad, body) = datagram.split_at_mut(HEADER);
        let nonce =
            Nonce::try_assume_unique_for_key(&aad[4..16]).map_err(|_| LinkError::Malformed)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(&aad[..]), body)
            .map_err(|_| LinkError::Auth)?;
        let plain_len = plain.len();
        let sent = u64::from_be_bytes(plain[..8].try_into().expect("8 bytes"));
        if sent.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(LinkError::Stale);
        }
        let rest = &plain[8..];
        match kind {
            Kind::Probe | Kind::ProbeAck => {
                let id = rest
                    .get(..8)
                    .filter(|_| rest.len() == 8)
                    .ok_or(LinkError::Malformed)?;
                Ok(Message::Probe {
                    kind,
                    id: u64::from_be_bytes(id.try_into().expect("8 bytes")),
                })
            }
            Kind::RelayUp | Kind::RelayDown => {
                let (ip, rest): (IpAddr, &[u8]) = match rest.first() {
                    Some(4) if rest.len() >= 7 => {
                        let o: [u8; 4] = rest[1..5].try_into().expect("4 bytes");
                        (Ipv4Addr::from(o).into(), &rest[5..])
                    }
                    Some(6) if rest.len() >= 19 => {
                        let o: [u8; 16] = rest[1..17].try_into().expect("16 bytes");
                        (Ipv6Addr::from(o).into(), &rest[17..])
                    }
                    _ => return Err(LinkError::Malformed),
                };
                let port = u16::from_be_bytes([rest[0], rest[1]]);
                let len = rest.len() - 2;
                if len == 0 || len > plg_proto::frame::MAX_DATAGRAM {
                    return Err(LinkError::Malformed);
                }
                // The plaintext ends where the tag starts.
                let end = HEADER + plain_len;
                Ok(Message::Relay {
                    kind,
                    client: SocketAddr::new(ip, port),
                    datagram: end - len..end,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn link() -> MeshLink {
        MeshLink::new(&[7u8; 32])
    }

    #[test]
    fn relay_and_probe_round_trip() {
        let (a, b) = (link(), link());
        let mut buf = Vec::new();
        let client: SocketAddr = "[2001:db8::5]:40000".parse().unwrap();
        a.seal_relay(
            Kind::RelayUp,
            1_000_000,
            client,
            b"\x01sealed-frame",
            &mut buf,
        );
        let mut opened = buf.clone();
        let Message::Relay {
            kind: Kind::RelayUp,
            client: c,
            datagram,
        } = b.open(1_000_500, &mut opened).unwrap()
        else {
            panic!("not a relay")
        };
        assert_eq!(c, client);
        assert_eq!(&opened[datagram], b"\x01sealed-frame");
        let v4: SocketAddr = "198.51.100.9:5".parse().unwrap();
        a.seal_relay(Kind::RelayDown, 5, v4, b"x", &mut buf);
        assert!(matches!(
            b.open(5, &mut buf.clone()).unwrap(),
            Message::Relay { kind: Kind::RelayDown, client, .. } if client == v4
        ));
        a.seal_probe(Kind::Probe, 9, 42, &mut buf);
        assert_eq!(
            b.open(9, &mut buf).unwrap(),
            Message::Probe {
                kind: Kind::Probe,
                id: 42
            }
        );
    }

    #[test]
    fn forged_stale_and_foreign_key_datagrams_are_refused() {
        let a = link();
        let mut buf = Vec::new();
        a.seal_probe(Kind::Probe, 100_000, 1, &mut buf);
        let mut flipped = buf.clone();
        flipped[20] ^= 1;
        assert_eq!(a.open(100_000, &mut flipped), Err(LinkError::Auth));
        let mut kind_changed = buf.clone();
        kind_changed[1] = Kind::ProbeAck as u8;
        assert_eq!(a.open(100_000, &mut kind_changed), Err(LinkError::Auth));
        assert_eq!(
            a.open(100_000 + MAX_SKEW_MS + 1, &mut buf.clone()),
            Err(LinkError::Stale)
        );
        let other = MeshLink::new(&[8u8; 32]);
        assert_eq!(other.open(100_000, &mut buf.clone()), Err(LinkError::Auth));
        assert_eq!(
            a.open(100_000, &mut buf[..20].to_vec()),
            Err(LinkError::Malformed)
        );
    }

    #[test]
    fn largest_relay_fits() {
        let a = link();
        let mut buf = Vec::new();
        let client: SocketAddr = "[::1]:1".parse().unwrap();
        let big = vec![1u8; plg_proto::frame::MAX_DATAGRAM];
        a.seal_relay(Kind::RelayUp, 0, client, &big, &mut buf);
        assert_eq!(buf.len(), MAX_MESH_DATAGRAM);
        assert!(a.open(0, &mut buf).is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let a = link();
            if let Some(b) = bytes.first_mut() { *b = MARKER; }
            let _ = a.open(0, &mut bytes);
        }
    }
}
