//! Probing game servers, sans-IO: the one probe wire format of the project (nodes probing the
//! exit→game leg, the client probing the direct route, the simulator) and the one place that
//! names a probe target.
//!
//! Three query protocols, chosen per catalog game (`docs/protocol.md` § Probing):
//!
//! - `echo`: `"PLGPROBE" | nonce u64` to a server that echoes datagrams back verbatim (the
//!   simulator's game servers, test fixtures); the answer is the request itself.
//! - `a2s`: Source engine `A2S_INFO`. The server either answers (`FF FF FF FF 49 …`), or asks
//!   for a challenge (`FF FF FF FF 41 <4 bytes>`), in which case the request is sent again with
//!   those 4 bytes appended ([`request_with_challenge`]) and the RTT is that of the last
//!   exchange. A2S carries no nonce: matching relies on the prober's connected socket.
//! - `q3`: Quake 3 `getinfo <nonce>`; the `infoResponse` echoes the nonce as its `challenge`
//!   key.
//!
//! [`classify`] never panics, whatever the bytes (property test below, fuzz target
//! `query_classify`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Tag that starts every `echo` probe.
pub const ECHO_MAGIC: &[u8; 8] = b"PLGPROBE";
/// Length of an `echo` probe: the tag and a big-endian `u64` nonce.
pub const ECHO_LEN: usize = 16;

/// Out-of-band header of Source and Quake 3 connectionless packets.
const OOB: [u8; 4] = [0xff; 4];
/// Header of a split (multi-packet) Source reply.
const SPLIT: [u8; 4] = [0xfe, 0xff, 0xff, 0xff];
/// `A2S_INFO` request body after the header.
const A2S_INFO: &[u8] = b"TSource Engine Query\0";
const A2S_REPLY_INFO: u8 = 0x49;
const A2S_REPLY_CHALLENGE: u8 = 0x41;
const Q3_GETINFO: &[u8] = b"getinfo ";
const Q3_INFO_RESPONSE: &[u8] = b"infoResponse\n";
const Q3_CHALLENGE_KEY: &[u8] = b"\\challenge\\";

/// A game-server query protocol a prober can speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryKind {
    /// PLG's own echo probe (answered by a server that echoes datagrams).
    Echo,
    /// Source engine `A2S_INFO`.
    A2s,
    /// Quake 3 `getinfo`.
    Q3,
}

impl QueryKind {
    /// The name used in the catalog and on the wire (`echo`, `a2s`, `q3`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::Echo => "echo",
            QueryKind::A2s => "a2s",
            QueryKind::Q3 => "q3",
        }
    }
}

impl fmt::Display for QueryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A query kind name that is not `echo`, `a2s` or `q3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown query protocol {0:?} (expected echo, a2s or q3)")]
pub struct UnknownQueryKind(pub String);

impl FromStr for QueryKind {
    type Err = UnknownQueryKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "echo" => Ok(QueryKind::Echo),
            "a2s" => Ok(QueryKind::A2s),
            "q3" => Ok(QueryKind::Q3),
            _ => Err(UnknownQueryKind(s.chars().take(32).collect())),
        }
    }
}

/// What a datagram received on a probe socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The answer to the request: the probe's RTT ends here.
    Answer,
    /// An `a2s` server wants the request again with this challenge appended
    /// ([`request_with_challenge`]); the value is the 4 bytes as sent, read little-endian.
    Challenge(u32),
    /// Something else (a stale answer, a stray datagram): ignore it.
    NotOurs,
}

/// The request datagram of a `kind` probe carrying `nonce` (`a2s` has no room for one).
pub fn request(kind: QueryKind, nonce: u64) -> Vec<u8> {
    match kind {
        QueryKind::Echo => {
            let mut v = Vec::with_capacity(ECHO_LEN);
            v.extend_from_slice(ECHO_MAGIC);
            v.extend_from_slice(&nonce.to_be_bytes());
            v
        }
        QueryKind::A2s => {
            let mut v = Vec::with_capacity(OOB.len() + A2S_INFO.len() + 4);
            v.extend_from_slice(&OOB);
            v.extend_from_slice(A2S_INFO);
            v
        }
        QueryKind::Q3 => {
            let mut v = Vec::with_capacity(OOB.len() + Q3_GETINFO.len() + 20);
            v.extend_from_slice(&OOB);
            v.extend_from_slice(Q3_GETINFO);
            v.extend_from_slice(nonce.to_string().as_bytes());
            v
        }
    }
}

/// The `a2s` request again, with the `challenge` from a [`Reply::Challenge`] appended.
pub fn request_with_challenge(challenge: u32) -> Vec<u8> {
    let mut v = request(QueryKind::A2s, 0);
    v.extend_from_slice(&challenge.to_le_bytes());
    v
}

/// Classifies `reply`, received on the socket that sent a `kind` request with `nonce`.
pub fn classify(kind: QueryKind, nonce: u64, reply: &[u8]) -> Reply {
    match kind {
        QueryKind::Echo => {
            if echo_nonce(reply) == Some(nonce) {
                Reply::Answer
            } else {
                Reply::NotOurs
            }
        }
        QueryKind::A2s => {
            if reply.starts_with(&SPLIT) {
                // A reply too large for one datagram: its first part is the server answering.
                return Reply::Answer;
            }
            let Some(body) = reply.strip_prefix(&OOB) else {
                return Reply::NotOurs;
            };
            match body {
                [A2S_REPLY_INFO, ..] => Reply::Answer,
                [A2S_REPLY_CHALLENGE, a, b, c, d] => {
                    Reply::Challenge(u32::from_le_bytes([*a, *b, *c, *d]))
                }
                _ => Reply::NotOurs,
            }
        }
        QueryKind::Q3 => {
            let Some(info) = reply
                .strip_prefix(&OOB)
                .and_then(|b| b.strip_prefix(Q3_INFO_RESPONSE))
            else {
                return Reply::NotOurs;
            };
            if q3_challenge(info) == Some(nonce) {
                Reply::Answer
            } else {
                Reply::NotOurs
            }
        }
    }
}

/// The nonce of an `echo` probe (or of its answer, which is the same bytes).
pub fn echo_nonce(datagram: &[u8]) -> Option<u64> {
    let rest = datagram.strip_prefix(ECHO_MAGIC)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// The `challenge` value of a Quake 3 info string (`\key\value\key\value…`), as a number.
fn q3_challenge(info: &[u8]) -> Option<u64> {
    let start = info
        .windows(Q3_CHALLENGE_KEY.len())
        .position(|w| w == Q3_CHALLENGE_KEY)?
        + Q3_CHALLENGE_KEY.len();
    let value = &info[start..];
    let end = value
        .iter()
        .position(|&b| b == b'\\' || b == b'\n' || b == 0)
        .unwrap_or(value.len());
    std::str::from_utf8(&value[..end]).ok()?.parse().ok()
}

/// Bits of an IPv4 target prefix.
pub const TARGET_PREFIX_V4: u8 = 24;
/// Bits of an IPv6 target prefix.
pub const TARGET_PREFIX_V6: u8 = 48;

/// The target key of an address: its /24 (IPv4) or /48 (IPv6) network, as `ipnet` writes it
/// (`203.0.113.0/24`, `2001:db8:1::/48`). Measurements are aggregated, gossiped and reported
/// per key. An IPv4-mapped IPv6 address is keyed as the IPv4 address it maps.
pub fn target_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Ipv4Net::new(v4, TARGET_PREFIX_V4)
            .expect("24 is a valid IPv4 prefix length")
            .trunc()
            .to_string(),
        IpAddr::V6(v6) => Ipv6Net::new(v6, TARGET_PREFIX_V6)
            .expect("48 is a valid IPv6 prefix length")
            .trunc()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds_parse_print_and_deserialise_lowercase() {
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, StrDeserializer};
        for k in [QueryKind::Echo, QueryKind::A2s, QueryKind::Q3] {
            assert_eq!(k.to_string().parse::<QueryKind>(), Ok(k));
            let de: StrDeserializer<'_, Error> = k.as_str().into_deserializer();
            assert_eq!(QueryKind::deserialize(de).unwrap(), k);
        }
        assert!("A2S".parse::<QueryKind>().is_err());
        assert!("".parse::<QueryKind>().is_err());
    }

    #[test]
    fn echo_answer_is_the_request() {
        let req = request(QueryKind::Echo, 0x0102_0304_0506_0708);
        assert_eq!(&req[..8], b"PLGPROBE");
        assert_eq!(&req[8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            classify(QueryKind::Echo, 0x0102_0304_0506_0708, &req),
            Reply::Answer
        );
        assert_eq!(classify(QueryKind::Echo, 7, &req), Reply::NotOurs);
        assert_eq!(
            classify(QueryKind::Echo, 0x0102_0304_0506_0708, &req[..15]),
            Reply::NotOurs
        );
        let mut long = req.clone();
        long.push(0);
        assert_eq!(
            classify(QueryKind::Echo, 0x0102_0304_0506_0708, &long),
            Reply::NotOurs
        );
    }

    #[test]
    fn a2s_info_challenge_and_retry() {
        let req = request(QueryKind::A2s, 99);
        assert_eq!(
            req,
            b"\xff\xff\xff\xffTSource Engine Query\0".as_slice(),
            "A2S_INFO as Valve documents it"
        );
        let challenge = b"\xff\xff\xff\xff\x41\x11\x22\x33\x44";
        let Reply::Challenge(c) = classify(QueryKind::A2s, 99, challenge) else {
            panic!("challenge not recognised");
        };
        let retry = request_with_challenge(c);
        assert_eq!(&retry[req.len()..], b"\x11\x22\x33\x44");
        assert_eq!(
            classify(QueryKind::A2s, 99, b"\xff\xff\xff\xff\x49\x11de_dust2\0"),
            Reply::Answer
        );
        assert_eq!(
            classify(QueryKind::A2s, 99, b"\xfe\xff\xff\xff\x01\x02"),
            Reply::Answer
        );
        for other in [
            &b""[..],
            b"\xff\xff\xff",
            b"\xff\xff\xff\xff",
            b"\xff\xff\xff\xff\x41\x11\x22",
            b"\xff\xff\xff\xff\x6a",
        ] {
            assert_eq!(classify(QueryKind::A2s, 99, other), Reply::NotOurs);
        }
    }

    #[test]
    fn q3_matches_the_nonce_in_the_challenge_key() {
        let req = request(QueryKind::Q3, 4242);
        assert_eq!(req, b"\xff\xff\xff\xffgetinfo 4242".as_slice());
        let ok = b"\xff\xff\xff\xffinfoResponse\n\\challenge\\4242\\hostname\\q3dm17\\clients\\3";
        assert_eq!(classify(QueryKind::Q3, 4242, ok), Reply::Answer);
        let last = b"\xff\xff\xff\xffinfoResponse\n\\hostname\\x\\challenge\\4242";
        assert_eq!(classify(QueryKind::Q3, 4242, last), Reply::Answer);
        assert_eq!(classify(QueryKind::Q3, 4243, ok), Reply::NotOurs);
        let prefix = b"\xff\xff\xff\xffinfoResponse\n\\challenge\\42420";
        assert_eq!(classify(QueryKind::Q3, 4242, prefix), Reply::NotOurs);
        assert_eq!(
            classify(QueryKind::Q3, 4242, b"\xff\xff\xff\xffstatusResponse\n"),
            Reply::NotOurs
        );
    }

    #[test]
    fn target_keys_are_truncated_prefixes() {
        let k = |s: &str| target_key(s.parse().unwrap());
        assert_eq!(k("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(k("155.133.226.71"), "155.133.226.0/24");
        assert_eq!(k("2001:db8:1:2::5"), "2001:db8:1::/48");
        assert_eq!(k("2001:db8::1"), "2001:db8::/48");
        assert_eq!(k("::ffff:198.51.100.9"), "198.51.100.0/24");
    }

    proptest! {
        #[test]
        fn classify_never_panics(kind in 0u8..3, nonce: u64, reply in proptest::collection::vec(any::<u8>(), 0..200)) {
            let kind = [QueryKind::Echo, QueryKind::A2s, QueryKind::Q3][kind as usize];
            let _ = classify(kind, nonce, &reply);
            // A request is never taken for an answer to itself, except by an echo server.
            let req = request(kind, nonce);
            let own = classify(kind, nonce, &req);
            prop_assert_eq!(own == Reply::Answer, kind == QueryKind::Echo);
        }

        #[test]
        fn q3_answer_found_after_any_info(nonce: u64, noise in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Noise without a backslash cannot hold another challenge key.
            let noise: Vec<u8> = noise.into_iter().filter(|&b| b != b'\\').collect();
            let mut reply = b"\xff\xff\xff\xffinfoResponse\n".to_vec();
            reply.extend_from_slice(&noise);
            prop_assert_eq!(classify(QueryKind::Q3, nonce, &reply), Reply::NotOurs);
            reply.extend_from_slice(format!("\\challenge\\{nonce}").as_bytes());
            prop_assert_eq!(classify(QueryKind::Q3, nonce, &reply), Reply::Answer);
        }

        #[test]
        fn target_key_parses_back_as_a_network_holding_the_address(ip: IpAddr) {
            let key = target_key(ip);
            let net: ipnet::IpNet = key.parse().unwrap();
            prop_assert_eq!(net, net.trunc());
            prop_assert!(net.contains(&ip.to_canonical()));
        }
    }
}
