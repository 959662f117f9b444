//! Session tickets: compact binary, Ed25519-signed by billing, verified offline by nodes.
//!
//! Layout (all integers big-endian), see `docs/protocol.md` § Tickets:
//! `version u8 | key_id u32 | issued_at u64 | expires_at u64 | session_id u64 | account_id u64 |
//! plan u8 | game_id u32 | path_limit u8 | bandwidth_kbps u32 | n u8 | n × destination |
//! signature [u8; 64]`. The signature covers `TICKET_SIGNING_CONTEXT || every byte before it`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};

/// Ticket format version this crate reads and writes.
pub const TICKET_VERSION: u8 = 1;
/// Domain-separation prefix of the signed message, so a ticket signature can never be
/// confused with a signature over anything else billing signs.
pub const TICKET_SIGNING_CONTEXT: &[u8] = b"PLG-TICKET-v1";
/// Most destinations one ticket may carry.
pub const MAX_DESTINATIONS: usize = 32;
/// Length of the fixed part before the destinations.
const FIXED_LEN: usize = 48;
const SIGNATURE_LEN: usize = 64;
/// Longest possible encoded ticket (all destinations IPv6).
pub const MAX_TICKET_LEN: usize = FIXED_LEN + MAX_DESTINATIONS * 22 + SIGNATURE_LEN;
/// Clock skew tolerated between billing and a node when checking `issued_at`.
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// One allowed destination: an IP network and an inclusive UDP port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Network the destination address must fall in.
    pub net: IpNet,
    /// Lowest allowed port.
    pub port_lo: u16,
    /// Highest allowed port (inclusive).
    pub port_hi: u16,
}

impl Destination {
    /// Whether `addr` falls inside this destination.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.net.contains(&addr.ip()) && (self.port_lo..=self.port_hi).contains(&addr.port())
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port_lo == self.port_hi {
            write!(f, "{}:{}", self.net, self.port_lo)
        } else {
            write!(f, "{}:{}-{}", self.net, self.port_lo, self.port_hi)
        }
    }
}

/// Error parsing a destination written as `CIDR:PORT` or `CIDR:LO-HI`.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid destination {input:?}: {reason} (expected CIDR:PORT or CIDR:LO-HI, e.g. 203.0.113.0/24:27015-27030)"
)]
pub struct DestinationParseError {
    input: String,
    reason: &'static str,
}

impl FromStr for Destination {
    type Err = DestinationParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DestinationParseError {
            input: s.to_owned(),
            reason,
        };
        let (net, ports) = s.rsplit_once(':').ok_or_else(|| err("missing :PORT"))?;
        let net = net.trim_start_matches('[').trim_end_matches(']');
        let net = match net.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => IpNet::from(net.parse::<IpAddr>().map_err(|_| err("bad network"))?),
        };
        let (lo, hi) = match ports.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (ports, ports),
        };
        let port_lo: u16 = lo.parse().map_err(|_| err("bad port"))?;
        let port_hi: u16 = hi.parse().map_err(|_| err("bad port"))?;
        if port_lo > port_hi {
            return Err(err("port range is reversed"));
        }
        Ok(Destination {
            net,
            port_lo,
            port_hi,
        })
    }
}

impl Serialize for Destination {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The claims of a session ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// Id of the billing signing key; lets nodes pick the right key during rotation.
    pub key_id: u32,
    /// Unix seconds when billing issued it.
    pub issued_at: u64,
    /// Unix seconds after which nodes refuse it.
    pub expires_at: u64,
    /// Ticket and session id (random, unique).
    pub session_id: u64,
    /// Billing account the session belongs to.
    pub account_id: u64,
    /// Plan tier (0 = trial, 1 = paid, …; meaning owned by billing).
    pub plan: u8,
    /// Game catalog id.
    pub game_id: u32,
    /// Most simultaneous paths the client may use.
    pub path_limit: u8,
    /// Bandwidth cap in kbit/s each way; 0 means no cap.
    pub bandwidth_kbps: u32,
    /// Destinations the node may forward to on this session's behalf.
    pub destinations: Vec<Destination>,
}

/// Why a ticket was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// The bytes are not a well-formed ticket.
    #[error("malformed ticket: {0}")]
    Malformed(&'static str),
    /// Ticket version this node does not speak.
    #[error("unsupported ticket version {0}")]
    UnsupportedVersion(u8),
    /// Signed with a key id this node does not know (rotated out, or forged).
    #[error("ticket signed with unknown key id {0}")]
    UnknownKey(u32),
    /// The signature does not verify.
    #[error("ticket signature is invalid")]
    BadSignature,
    /// The ticket's lifetime is over.
    #[error("ticket expired at {expired_at} (now {now})")]
    Expired {
        /// `expires_at` of the ticket.
        expired_at: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// Issued in the future beyond the tolerated clock skew.
    #[error("ticket issued in the future ({issued_at} > now {now})")]
    NotYetValid {
        /// `issued_at` of the ticket.
        issued_at: u64,
        /// The verifier's clock.
        now: u64,
    },
}

impl Ticket {
    /// Whether the ticket lets a node forward to `addr`.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        self.destinations.iter().any(|d| d.contains(addr))
    }

    /// Encodes the claims (without signature).
    fn encode_claims(&self, w: &mut Writer<'_>) {
        w.u8(TICKET_VERSION);
        w.u32(self.key_id);
        w.u64(self.issued_at);
        w.u64(self.expires_at);
        w.u64(self.session_id);
        w.u64(self.account_id);
        w.u8(self.plan);
        w.u32(self.game_id);
        w.u8(self.path_limit);
        w.u32(self.bandwidth_kbps);
        w.u8(self.destinations.len() as u8);
        for d in &self.destinations {
            match d.net {
                IpNet::V4(n) => {
                    w.u8(4);
                    w.bytes(&n.addr().octets());
                }
                IpNet::V6(n) => {
                    w.u8(6);
                    w.bytes(&n.addr().octets());
                }
            }
            w.u8(d.net.prefix_len());
            w.u16(d.port_lo);
            w.u16(d.port_hi);
        }
    }

    /// Signs the ticket with billing's key, returning the wire bytes.
    ///
    /// Panics if the ticket has more than [`MAX_DESTINATIONS`] destinations (a bug in the
    /// issuer, not input from the network).
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        assert!(
            self.destinations.len() <= MAX_DESTINATIONS,
            "too many destinations"
        );
        let mut buf = Vec::with_capacity(MAX_TICKET_LEN);
        self.encode_claims(&mut Writer::new(&mut buf));
        let sig = key.sign(&signed_message(&buf));
        buf.extend_from_slice(&sig.to_bytes());
        buf
    }

    /// Decodes a ticket without checking its signature. Only for display and for the
    /// verifier; never trust the result on its own.
    pub fn decode_unverified(bytes: &[u8]) -> Result<(Ticket, &[u8], [u8; 64]), TicketError> {
        if bytes.len() < FIXED_LEN + SIGNATURE_LEN {
            return Err(TicketError::Malformed("too short"));
        }
        if bytes.len() > MAX_TICKET_LEN {
            return Err(TicketError::Malformed("too long"));
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut r = Reader::new(body);
        let short = TicketError::Malformed("truncated");
        let version = r.u8().ok_or(short.clone())?;
        if version != TICKET_VERSION {
            return Err(TicketError::UnsupportedVersion(version));
        }
        let mut t = Ticket {
            key_id: r.u32().ok_or(short.clone())?,
            issued_at: r.u64().ok_or(short.clone())?,
            expires_at: r.u64().ok_or(short.clone())?,
            session_id: r.u64().ok_or(short.clone())?,
            account_id: r.u64().ok_or(short.clone())?,
            plan: r.u8().ok_or(short.clone())?,
            game_id: r.u32().ok_or(short.clone())?,
            path_limit: r.u8().ok_or(short.clone())?,
            bandwidth_kbps: r.u32().ok_or(short.clone())?,
            destinations: Vec::new(),
        };
        if t.expires_at <= t.issued_at {
            return Err(TicketError::Malformed("expires before it is issued"));
        }
        let n = r.u8().ok_or(short.clone())? as usize;
        if n > MAX_DESTINATIONS {
            return Err(TicketError::Malformed("too many destinations"));
        }
        for _ in 0..n {
            let family = r.u8().ok_or(short.clone())?;
            let ip: IpAddr = match family {
                4 => <[u8; 4]>::try_from(r.take(4).ok_or(short.clone())?)
                    .unwrap()
                    .into(),
                6 => <[u8; 16]>::try_from(r.take(16).ok_or(short.clone())?)
                    .unwrap()
                    .into(),
                _ => return Err(TicketError::Malformed("bad address family")),
            };
            let prefix = r.u8().ok_or(short.clone())?;
            let net = IpNet::new(ip, prefix).map_err(|_| TicketError::Malformed("bad prefix"))?;
            if net.trunc() != net {
                return Err(TicketError::Malformed("host bits set in network"));
            }
            let port_lo = r.u16().ok_or(short.clone())?;
            let port_hi = r.u16().ok_or(short.clone())?;
            if port_lo > port_hi {
                return Err(TicketError::Malformed("reversed port range"));
            }
            t.destinations.push(Destination {
                net,
                port_lo,
                port_hi,
            });
        }
        if !r.is_empty() {
            return Err(TicketError::Malformed("trailing bytes"));
        }
        Ok((t, body, sig.try_into().unwrap()))
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TICKET_SIGNING_CONTEXT.len() + body.len());
    m.extend_from_slice(TICKET_SIGNING_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// Verifies tickets offline against billing's public keys, caching verified tickets so a
/// ticket presented again costs a map lookup instead of an Ed25519 verification.
#[derive(Debug, Default)]
pub struct TicketVerifier {
    keys: HashMap<u32, VerifyingKey>,
    cache: HashMap<[u8; 64], (Vec<u8>, Ticket)>,
}

/// Most verified tickets kept in the cache.
const CACHE_CAPACITY: usize = 65_536;

impl TicketVerifier {
    /// A verifier that trusts the given `(key_id, key)` pairs.
    pub fn new(keys: impl IntoIterator<Item = (u32, VerifyingKey)>) -> Self {
        TicketVerifier {
            keys: keys.into_iter().collect(),
            cache: HashMap::new(),
        }
    }

    /// Replaces the trusted key set (after billing rotated keys), dropping cached tickets of
    /// keys no longer trusted.
    pub fn set_keys(&mut self, keys: impl IntoIterator<Item = (u32, VerifyingKey)>) {
        let old = std::mem::replace(&mut self.keys, keys.into_iter().collect());
        let keys = &self.keys;
        // A cached ticket stays valid only if its key id still maps to the very same key.
        self.cache.retain(|_, (_, t)| matches!((old.get(&t.key_id), keys.get(&t.key_id)), (Some(a), Some(b)) if a == b));
    }

    /// Key ids currently trusted.
    pub fn key_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.keys.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Checks format, key id, signature and validity period at `now` (unix seconds).
    pub fn verify(&mut self, bytes: &[u8], now: u64) -> Result<Ticket, TicketError> {
        let (ticket, body, sig) = Ticket::decode_unverified(bytes)?;
        if !self.keys.contains_key(&ticket.key_id) {
            return Err(TicketError::UnknownKey(ticket.key_id));
        }
        let cached = matches!(self.cache.get(&sig), Some((b, _)) if b.as_slice() == body);
        if !cached {
            let key = &self.keys[&ticket.key_id];
            key.verify_strict(&signed_message(body), &Signature::from_bytes(&sig))
                .map_err(|_| TicketError::BadSignature)?;
        }
        if ticket.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(TicketError::NotYetValid {
                issued_at: ticket.issued_at,
                now,
            });
        }
        if now >= ticket.expires_at {
            return Err(TicketError::Expired {
                expired_at: ticket.expires_at,
                now,
            });
        }
        if !cached {
            if self.cache.len() >= CACHE_CAPACITY {
                self.cache.retain(|_, (_, t)| t.expires_at > now);
                if self.cache.len() >= CACHE_CAPACITY {
                    self.cache.clear();
                }
            }
            self.cache.insert(sig, (body.to_vec(), ticket.clone()));
        }
        Ok(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn sample() -> Ticket {
        Ticket {
            key_id: 7,
            issued_at: 1_000,
            expires_at: 2_000,
            session_id: 0xdead_beef,
            account_id: 42,
            plan: 1,
            game_id: 730,
            path_limit: 2,
            bandwidth_kbps: 4_000,
            destinations: vec![
                "203.0.113.0/24:27015-27030".parse().unwrap(),
                "2001:db8::/32:3074".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn sign_verify_round_trip() {
        let t = sample();
        let bytes = t.sign(&key(1));
        let mut v = TicketVerifier::new([(7, key(1).verifying_key())]);
        assert_eq!(v.verify(&bytes, 1_500).unwrap(), t);
        // Second time comes from the cache and must still check expiry.
        assert_eq!(v.verify(&bytes, 1_500).unwrap(), t);
        assert_eq!(
            v.verify(&bytes, 2_000),
            Err(TicketError::Expired {
                expired_at: 2_000,
                now: 2_000
            })
        );
    }

    #[test]
    fn refuses_forgeries() {
        let t = sample();
        let mut v = TicketVerifier::new([(7, key(1).verifying_key())]);
        // Wrong key with the right id.
        assert_eq!(
            v.verify(&t.sign(&key(2)), 1_500),
            Err(TicketError::BadSignature)
        );
        // Unknown key id.
        let other = Ticket {
            key_id: 8,
            ..t.clone()
        };
        assert_eq!(
            v.verify(&other.sign(&key(1)), 1_500),
            Err(TicketError::UnknownKey(8))
        );
        // A flipped bit anywhere in the claims.
        let good = t.sign(&key(1));
        for i in 5..good.len() - 64 {
            let mut bad = good.clone();
            bad[i] ^= 1;
            assert!(v.verify(&bad, 1_500).is_err(), "flip at byte {i} accepted");
        }
        // The cache must not let a modified body ride on a cached signature.
        v.verify(&good, 1_500).unwrap();
        let mut bad = good.clone();
        bad[30] ^= 0x80;
        assert!(v.verify(&bad, 1_500).is_err());
    }

    #[test]
    fn rebinding_a_key_id_invalidates_cached_tickets() {
        let bytes = sample().sign(&key(1));
        let mut v = TicketVerifier::new([(7, key(1).verifying_key())]);
        v.verify(&bytes, 1_500).unwrap();
        v.set_keys([(7, key(1).verifying_key()), (8, key(2).verifying_key())]);
        assert!(v.verify(&bytes, 1_500).is_ok(), "same key: cache kept");
        v.set_keys([(7, key(2).verifying_key())]);
        assert_eq!(v.verify(&bytes, 1_500), Err(TicketError::BadSignature));
    }

    #[test]
    fn expiry_before_issue_is_malformed() {
        let t = Ticket {
            issued_at: 2_000,
            expires_at: 2_000,
            ..sample()
        };
        assert_eq!(
            Ticket::decode_unverified(&t.sign(&key(1))).unwrap_err(),
            TicketError::Malformed("expires before it is issued")
        );
    }

    #[test]
    fn not_yet_valid() {
        let t = Ticket {
            issued_at: 10_000,
            expires_at: 20_000,
            ..sample()
        };
        let mut v = TicketVerifier::new([(7, key(1).verifying_key())]);
        assert!(matches!(
            v.verify(&t.sign(&key(1)), 100),
            Err(TicketError::NotYetValid { .. })
        ));
        assert!(
            v.verify(&t.sign(&key(1)), 10_000 - MAX_CLOCK_SKEW_SECS)
                .is_ok()
        );
    }

    #[test]
    fn destinations_match() {
        let t = sample();
        assert!(t.allows("203.0.113.9:27015".parse().unwrap()));
        assert!(t.allows("203.0.113.9:27030".parse().unwrap()));
        assert!(!t.allows("203.0.113.9:27031".parse().unwrap()));
        assert!(!t.allows("203.0.114.9:27015".parse().unwrap()));
        assert!(t.allows("[2001:db8::1]:3074".parse().unwrap()));
        assert!(!t.allows("127.0.0.1:27015".parse().unwrap()));
    }

    #[test]
    fn destination_parsing() {
        let d: Destination = "10.0.0.7:53".parse().unwrap();
        assert_eq!(d.to_string(), "10.0.0.7/32:53");
        assert!("10.0.0.0/8".parse::<Destination>().is_err());
        assert!("10.0.0.0/8:9-1".parse::<Destination>().is_err());
        assert!("10.0.0.0/33:1".parse::<Destination>().is_err());
        assert_eq!(
            "10.1.2.3/8:1".parse::<Destination>().unwrap().to_string(),
            "10.0.0.0/8:1"
        );
    }

    fn arb_destination() -> impl Strategy<Value = Destination> {
        prop_oneof![
            (any::<[u8; 4]>(), 0u8..=32)
                .prop_map(|(a, p)| IpNet::new(a.into(), p).unwrap().trunc()),
            (any::<[u8; 16]>(), 0u8..=128)
                .prop_map(|(a, p)| IpNet::new(a.into(), p).unwrap().trunc()),
        ]
        .prop_flat_map(|net| {
            (Just(net), any::<u16>(), any::<u16>()).prop_map(|(net, a, b)| Destination {
                net,
                port_lo: a.min(b),
                port_hi: a.max(b),
            })
        })
    }

    prop_compose! {
        fn arb_ticket()(
            key_id: u32, issued_at: u64, expires_at: u64, session_id: u64, account_id: u64,
            plan: u8, game_id: u32, path_limit: u8, bandwidth_kbps: u32,
            destinations in proptest::collection::vec(arb_destination(), 0..=MAX_DESTINATIONS),
        ) -> Ticket {
            let issued_at = issued_at.min(u64::MAX - 1);
            let expires_at = expires_at.max(issued_at + 1);
            Ticket { key_id, issued_at, expires_at, session_id, account_id, plan, game_id,
                     path_limit, bandwidth_kbps, destinations }
        }
    }

    proptest! {
        #[test]
        fn codec_round_trip(t in arb_ticket()) {
            let bytes = t.sign(&key(3));
            let (decoded, _, _) = Ticket::decode_unverified(&bytes).unwrap();
            prop_assert_eq!(decoded, t);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let mut v = TicketVerifier::new([(7, key(1).verifying_key())]);
            let _ = v.verify(&bytes, 1_500);
        }
    }
}
