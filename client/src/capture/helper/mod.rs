//! The capture helper (`plg-capture`): a small privileged process that owns the capture
//! device so that the app and the CLI run unprivileged. The client hands it the session's
//! signed ticket over a local socket; the helper checks the ticket itself (billing's Ed25519
//! keys, expiry), keeps only the ticket's destinations that are public unicast, minus the
//! addresses the client names as its own (relay nodes, billing — they only shrink the set),
//! sets the capture up and gives the client the device. On Linux that is a TUN device whose
//! descriptor is passed with `SCM_RIGHTS` ([`linux`]); on Windows the service captures with
//! WinDivert itself ([`windows`]). Rules last as long as the client's connection.
//!
//! This file is the part that is the same everywhere, plain data and tested on every platform:
//! the wire format (a 4-byte big-endian length, then JSON, [`MAX_FRAME`] at most, one request
//! and one reply per connection) and the checks ([`Gate::check`]). The threat model is in
//! `docs/security.md`.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use ipnet::IpNet;
use plg_proto::ticket::{Destination, MAX_TICKET_LEN, TicketError, TicketVerifier};
use serde::{Deserialize, Serialize};

use super::Targets;
use crate::billing::TicketKey;

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(windows)]
pub mod windows;

/// Where the helper listens on Linux.
pub const DEFAULT_SOCKET: &str = "/run/plg/capture.sock";
/// The helper's named pipe on Windows.
pub const DEFAULT_PIPE: &str = r"\\.\pipe\plg-capture";
/// Largest request or reply, length prefix excluded.
pub const MAX_FRAME: usize = 16 * 1024;
/// Most addresses a request may exclude.
pub const MAX_EXCLUDE: usize = 64;
/// Most captures the helper runs at once (each its own device and routing table).
pub const MAX_SESSIONS: usize = 4;

/// Where the client looks for the helper: `$PLG_CAPTURE_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path() -> std::path::PathBuf {
    std::env::var_os("PLG_CAPTURE_SOCKET")
        .map_or_else(|| DEFAULT_SOCKET.into(), std::path::PathBuf::from)
}

/// Whether a helper seems installed here (its socket exists).
pub fn available() -> bool {
    cfg!(target_os = "linux") && socket_path().exists()
}

/// What the client asks for: capture the game traffic its ticket allows.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Base64 of the signed session ticket.
    pub ticket: String,
    /// The destinations to capture, each within one of the ticket's; empty: all of them.
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// Addresses never to capture (the session's relay nodes, billing).
    #[serde(default)]
    pub exclude: Vec<IpAddr>,
}

impl fmt::Debug for CaptureRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The ticket is a bearer credential: never printed.
        f.debug_struct("CaptureRequest")
            .field("ticket", &"***")
            .field("destinations", &self.destinations)
            .field("exclude", &self.exclude)
            .finish()
    }
}

/// What the helper set up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Granted {
    /// The capture device (Linux: the TUN interface whose descriptor came with the reply).
    pub device: String,
    /// The destinations captured.
    pub destinations: Vec<Destination>,
    /// The addresses left out.
    pub exclude: Vec<IpAddr>,
    /// The networks routed into the device.
    pub routes: Vec<IpNet>,
}

impl Granted {
    /// The capture set as the packet path classifies it.
    pub fn targets(&self) -> Targets {
        Targets::new(self.destinations.iter().copied()).exclude(self.exclude.iter().copied())
    }
}

/// The helper's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CaptureReply {
    /// Capturing.
    Ok(Granted),
    /// Refused, and why.
    Error {
        /// Stable code.
        code: RefusalCode,
        /// One sentence for the user.
        message: String,
    },
}

/// Stable codes of [`Refusal`]s, as they travel.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The caller is not the user the helper serves.
    NotAllowed,
    /// The request is not well-formed.
    Malformed,
    /// The ticket is forged, expired or signed with an unknown key.
    BadTicket,
    /// A destination is outside the ticket or not public unicast.
    Destination,
    /// Nothing left to capture.
    NothingToCapture,
    /// Every capture slot is taken.
    Busy,
    /// The helper failed to set the capture up (its side).
    Setup,
}

/// Why the helper refused a request.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The peer's uid is neither the configured user's nor root's.
    #[error(
        "uid {uid} may not use this capture helper (it serves uid {serves} and root; reinstall it with `plg-capture install --user <you>`)"
    )]
    NotAllowed {
        /// The caller.
        uid: u32,
        /// The user the helper was installed for.
        serves: u32,
    },
    /// Bad framing, JSON, base64 or too many items.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The ticket did not verify.
    #[error("the session ticket was refused: {0}")]
    Ticket(#[from] TicketError),
    /// A destination the helper will not capture.
    #[error("destination {dest} refused: {why}")]
    Destination {
        /// The destination.
        dest: Destination,
        /// Why.
        why: &'static str,
    },
    /// Every destination was excluded or refused.
    #[error("nothing left to capture once relay nodes and billing are excluded")]
    NothingToCapture,
    /// All slots in use.
    #[error("the capture helper is busy: {0} sessions are capturing already")]
    Busy(usize),
    /// Device or routing failure (ours, not the caller's).
    #[error("the capture helper could not set up capture: {0}")]
    Setup(String),
}

impl Refusal {
    /// The code that travels.
    pub fn code(&self) -> RefusalCode {
        match self {
            Refusal::NotAllowed { .. } => RefusalCode::NotAllowed,
            Refusal::Malformed(_) => RefusalCode::Malformed,
            Refusal::Ticket(_) => RefusalCode::BadTicket,
            Refusal::Destination { .. } => RefusalCode::Destination,
            Refusal::NothingToCapture => RefusalCode::NothingToCapture,
            Refusal::Busy(_) => RefusalCode::Busy,
            Refusal::Setup(_) => RefusalCode::Setup,
        }
    }

    /// As a reply.
    pub fn reply(&self) -> CaptureReply {
        CaptureReply::Error {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// Who may ask: the installing user and root.
pub fn uid_allowed(peer: u32, serves: u32) -> bool {
    peer == 0 || peer == serves
}

/// `len (u32 BE) ‖ json`.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let json = serde_json::to_vec(msg).expect("plain data serializes");
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// The body length a frame header announces, refused past [`MAX_FRAME`].
pub fn frame_len(header: [u8; 4]) -> Result<usize, Refusal> {
    let n = u32::from_be_bytes(header) as usize;
    if n == 0 || n > MAX_FRAME {
        return Err(Refusal::Malformed(format!(
            "frame of {n} bytes (1..={MAX_FRAME} allowed)"
        )));
    }
    Ok(n)
}

/// Parses a request body.
pub fn parse_request(body: &[u8]) -> Result<CaptureRequest, Refusal> {
    let req: CaptureRequest =
        serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if req.exclude.len() > MAX_EXCLUDE {
        return Err(Refusal::Malformed(format!(
            "{} excluded addresses (at most {MAX_EXCLUDE})",
            req.exclude.len()
        )));
    }
    if req.destinations.len() > plg_proto::ticket::MAX_DESTINATIONS {
        return Err(Refusal::Malformed("too many destinations".into()));
    }
    Ok(req)
}

/// Decodes billing's published keys into verifier input.
pub fn decode_keys(keys: &[TicketKey]) -> Result<Vec<(u32, VerifyingKey)>, String> {
    keys.iter()
        .map(|k| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&k.public_key)
                .map_err(|_| format!("ticket key {} is not base64", k.key_id))?;
            let raw: [u8; 32] = raw
                .try_into()
                .map_err(|_| format!("ticket key {} is not 32 bytes", k.key_id))?;
            let key = VerifyingKey::from_bytes(&raw)
                .map_err(|_| format!("ticket key {} is not an Ed25519 point", k.key_id))?;
            Ok((k.key_id, key))
        })
        .collect()
}

/// Networks never captured: the machine itself, its links, multicast, reserved space.
const NEVER: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "fe80::/10",
    "ff00::/8",
];
/// Private and shared address space: captured only with `--allow-private` (test labs).
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why `net` may not be captured, if it may not.
pub fn unicast_refusal(net: &IpNet, allow_private: bool) -> Option<&'static str> {
    let hits = |list: &[&str]| {
        list.iter()
            .any(|s| overlaps(net, &s.parse::<IpNet>().expect("constant network")))
    };
    if hits(NEVER) {
        return Some(
            "it covers loopback, link-local, multicast or reserved addresses, never captured",
        );
    }
    if !allow_private && hits(PRIVATE) {
        return Some(
            "it covers private addresses (the helper captures public unicast only, unless started with --allow-private)",
        );
    }
    None
}

/// The helper's checks on a request: the keys it trusts and its address policy.
#[derive(Debug)]
pub struct Gate {
    verifier: TicketVerifier,
    /// Capture private ranges too (test labs, LAN servers).
    pub allow_private: bool,
    /// Addresses the helper itself always excludes (billing, where it fetches keys).
    pub own: Vec<IpAddr>,
}

impl Gate {
    /// A gate trusting `keys`.
    pub fn new(keys: Vec<(u32, VerifyingKey)>, allow_private: bool) -> Gate {
        Gate {
            verifier: TicketVerifier::new(keys),
            allow_private,
            own: Vec::new(),
        }
    }

    /// Replaces the trusted keys (billing rotated).
    pub fn set_keys(&mut self, keys: Vec<(u32, VerifyingKey)>) {
        self.verifier.set_keys(keys);
    }

    /// What `req` may capture at `now` (unix seconds): the ticket verified, each requested
    /// destination inside the ticket and public unicast, the exclusions applied.
    pub fn check(&mut self, req: &CaptureRequest, now: u64) -> Result<Targets, Refusal> {
        if req.ticket.len() > MAX_TICKET_LEN.div_ceil(3) * 4 {
            return Err(Refusal::Malformed("ticket too long".into()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&req.ticket)
            .map_err(|_| Refusal::Malformed("ticket is not base64".into()))?;
        let ticket = self.verifier.verify(&bytes, now)?;
        let wanted = if req.destinations.is_empty() {
            ticket.destinations.clone()
        } else {
            req.destinations.clone()
        };
        for d in &wanted {
            let d = Destination {
                net: d.net.trunc(),
                ..*d
            };
            let inside = ticket.destinations.iter().any(|t| {
                t.net.contains(&d.net) && t.port_lo <= d.port_lo && d.port_hi <= t.port_hi
            });
            if !inside {
                return Err(Refusal::Destination {
                    dest: d,
                    why: "the session ticket does not allow it",
                });
            }
            if let Some(why) = unicast_refusal(&d.net, self.allow_private) {
                return Err(Refusal::Destination { dest: d, why });
            }
        }
        let targets = Targets::new(wanted)
            .exclude(req.exclude.iter().copied())
            .exclude(self.own.iter().copied());
        if targets.routes().is_empty() {
            return Err(Refusal::NothingToCapture);
        }
        Ok(targets)
    }
}

/// The service's pipe ACL (SDDL): full access for SYSTEM, read/write for the installing user's
/// SID, nothing for anyone else (no inherited entries). `None` when `sid` is not a SID.
pub fn pipe_sddl(sid: &str) -> Option<String> {
    let ok = sid.strip_prefix("S-1-").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() < 180
            && rest
                .split('-')
                .all(|p| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit()))
    });
    ok.then(|| format!("D:P(A;;GA;;;SY)(A;;GRGW;;;{sid})"))
}

/// A packet relayed between the Windows service and the client after the reply:
/// `family game-ip game-port family server-ip server-port payload` (family 4 or 6, ports
/// big-endian), inside the usual length-prefixed frame.
pub fn encode_packet(
    game: std::net::SocketAddr,
    server: std::net::SocketAddr,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    for a in [game, server] {
        match a.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
    out.extend_from_slice(payload);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
}

/// Decodes a relayed packet's frame body: `(game, server, payload)`.
pub fn decode_packet(
    body: &[u8],
) -> Result<(std::net::SocketAddr, std::net::SocketAddr, &[u8]), Refusal> {
    let bad = || Refusal::Malformed("bad relayed packet".into());
    let mut rest = body;
    let mut addr = || -> Result<std::net::SocketAddr, Refusal> {
        let (&family, r) = rest.split_first().ok_or_else(bad)?;
        let n = match family {
            4 => 4,
            6 => 16,
            _ => return Err(bad()),
        };
        if r.len() < n + 2 {
            return Err(bad());
        }
        let ip: IpAddr = if n == 4 {
            <[u8; 4]>::try_from(&r[..4]).map_err(|_| bad())?.into()
        } else {
            <[u8; 16]>::try_from(&r[..16]).map_err(|_| bad())?.into()
        };
        let port = u16::from_be_bytes([r[n], r[n + 1]]);
        rest = &r[n + 2..];
        Ok(std::net::SocketAddr::new(ip, port))
    };
    let game = addr()?;
    let server = addr()?;
    Ok((game, server, rest))
}

/// A set of numbered capture slots (device `plgcN`, table base+N), taken without a lock.
#[derive(Debug, Default)]
pub struct Slots([std::sync::atomic::AtomicBool; MAX_SESSIONS]);

/// A taken slot, freed on drop.
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a Slots,
    /// Its number.
    pub index: usize,
}

impl Slots {
    /// Takes the lowest free slot.
    pub fn take(&self) -> Result<Slot<'_>, Refusal> {
        use std::sync::atomic::Ordering;
        for (index, s) in self.0.iter().enumerate() {
            if s.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(Slot { slots: self, index });
            }
        }
        Err(Refusal::Busy(MAX_SESSIONS))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.0[self.index].store(false, std::sync::atomic::Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use plg_proto::ticket::Ticket;

    const NOW: u64 = 1_700_000_000;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn ticket(dests: &[&str], expires_at: u64) -> String {
        let t = Ticket {
            key_id: 1,
            issued_at: NOW - 10,
            expires_at,
            session_id: 42,
            account_id: 9,
            plan: 1,
            game_id: 3,
            path_limit: 2,
            bandwidth_kbps: 0,
            destinations: dests.iter().map(|d| d.parse().unwrap()).collect(),
        };
        base64::engine::general_purpose::STANDARD.encode(t.sign(&key()))
    }

    fn gate() -> Gate {
        Gate::new(vec![(1, key().verifying_key())], false)
    }

    fn req(ticket: String) -> CaptureRequest {
        CaptureRequest {
            ticket,
            destinations: vec![],
            exclude: vec![],
        }
    }

    #[test]
    fn a_valid_ticket_captures_its_destinations_minus_exclusions() {
        let mut r = req(ticket(&["203.0.113.0/24:27015-27050"], NOW + 600));
        r.exclude = vec!["203.0.113.7".parse().unwrap()];
        let t = gate().check(&r, NOW).unwrap();
        assert_eq!(t.destinations().len(), 1);
        assert!(!t.contains("203.0.113.7:27015".parse().unwrap()));
        assert!(t.contains("203.0.113.8:27015".parse().unwrap()));
        assert!(!t.contains("203.0.113.8:27051".parse().unwrap()));
    }

    #[test]
    fn forged_expired_and_unknown_key_tickets_are_refused() {
        let good = ticket(&["203.0.113.0/24:27015"], NOW + 600);
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&good)
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let forged = base64::engine::general_purpose::STANDARD.encode(&raw);
        let e = gate().check(&req(forged), NOW).unwrap_err();
        assert_eq!(e.code(), RefusalCode::BadTicket, "{e}");
        let e = gate()
            .check(&req(ticket(&["203.0.113.0/24:27015"], NOW - 1)), NOW)
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let mut other = Gate::new(
            vec![(1, SigningKey::from_bytes(&[8; 32]).verifying_key())],
            false,
        );
        assert_eq!(
            other.check(&req(good), NOW).unwrap_err().code(),
            RefusalCode::BadTicket
        );
    }

    #[test]
    fn destinations_outside_the_ticket_are_refused() {
        let mut r = req(ticket(&["203.0.113.0/24:27015-27050"], NOW + 600));
        for outside in [
            "198.51.100.0/24:27015",
            "203.0.112.0/23:27015",
            "203.0.113.0/24:27014-27020",
        ] {
            r.destinations = vec![outside.parse().unwrap()];
            let e = gate().check(&r, NOW).unwrap_err();
            assert_eq!(e.code(), RefusalCode::Destination, "{outside}: {e}");
        }
        r.destinations = vec!["203.0.113.128/25:27020".parse().unwrap()];
        let t = gate().check(&r, NOW).unwrap();
        assert!(!t.contains("203.0.113.1:27020".parse().unwrap()));
    }

    #[test]
    fn only_public_unicast_unless_private_is_allowed() {
        for bad in [
            "0.0.0.0/0:53",
            "127.0.0.0/8:1-65535",
            "224.0.0.0/4:5353",
            "[fe80::/10]:1000",
            "[::/0]:1000",
            "64.0.0.0/2:1000",
        ] {
            let e = gate()
                .check(&req(ticket(&[bad], NOW + 600)), NOW)
                .unwrap_err();
            assert_eq!(e.code(), RefusalCode::Destination, "{bad}: {e}");
        }
        let private = req(ticket(&["10.200.0.0/16:4000"], NOW + 600));
        let e = gate().check(&private, NOW).unwrap_err();
        assert!(e.to_string().contains("--allow-private"), "{e}");
        let mut lab = gate();
        lab.allow_private = true;
        assert!(lab.check(&private, NOW).is_ok());
        let loopback = req(ticket(&["127.0.0.0/8:4000"], NOW + 600));
        assert!(lab.check(&loopback, NOW).is_err());
    }

    #[test]
    fn excluding_everything_leaves_nothing_to_capture() {
        let mut r = req(ticket(&["203.0.113.9/32:27015"], NOW + 600));
        r.exclude = vec!["203.0.113.9".parse().unwrap()];
        assert_eq!(
            gate().check(&r, NOW).unwrap_err().code(),
            RefusalCode::NothingToCapture
        );
        let mut g = gate();
        g.own = vec!["203.0.113.9".parse().unwrap()];
        r.exclude.clear();
        assert!(g.check(&r, NOW).is_err());
    }

    #[test]
    fn hostile_frames_and_bodies_get_errors() {
        assert!(frame_len([0, 0, 0, 0]).is_err());
        assert!(frame_len([0xff, 0xff, 0xff, 0xff]).is_err());
        assert_eq!(frame_len([0, 0, 1, 0]).unwrap(), 256);
        for body in [
            &b"not json"[..],
            br#"{"ticket":"x","extra":1}"#,
            br#"{"ticket":"x","destinations":["nope"]}"#,
            br#"{"ticket":5}"#,
        ] {
            assert_eq!(
                parse_request(body).unwrap_err().code(),
                RefusalCode::Malformed
            );
        }
        let many = format!(
            r#"{{"ticket":"x","exclude":[{}]}}"#,
            vec!["\"1.1.1.1\""; MAX_EXCLUDE + 1].join(",")
        );
        assert!(parse_request(many.as_bytes()).is_err());
        let e = gate().check(&req("!!!".into()), NOW).unwrap_err();
        assert_eq!(e.code(), RefusalCode::Malformed);
        let e = gate().check(&req("A".repeat(100_000)), NOW).unwrap_err();
        assert_eq!(e.code(), RefusalCode::Malformed);
    }

    #[test]
    fn pipe_acl_names_only_system_and_the_user() {
        let sid = "S-1-5-21-1004336348-1177238915-682003330-1001";
        assert_eq!(
            pipe_sddl(sid).unwrap(),
            format!("D:P(A;;GA;;;SY)(A;;GRGW;;;{sid})")
        );
        for bad in [
            "",
            "S-1-",
            "WD",
            "S-1-5-21-x",
            "S-1-5)(A;;GA;;;WD",
            "S-1-5--1",
        ] {
            assert!(pipe_sddl(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn relayed_packets_round_trip_and_garbage_is_refused() {
        let mut out = Vec::new();
        for (g, s) in [
            ("192.168.1.5:50000", "203.0.113.9:27015"),
            ("[2001:db8::5]:1", "[2001:db8::9]:65535"),
        ] {
            let (g, s) = (g.parse().unwrap(), s.parse().unwrap());
            encode_packet(g, s, b"hello", &mut out);
            let n = frame_len(out[..4].try_into().unwrap()).unwrap();
            assert_eq!(
                decode_packet(&out[4..4 + n]).unwrap(),
                (g, s, &b"hello"[..])
            );
        }
        for garbage in [&[][..], &[5, 1, 2], &[4, 1, 2, 3, 4, 0], &[6; 10]] {
            assert!(decode_packet(garbage).is_err());
        }
    }

    #[test]
    fn the_request_never_prints_its_ticket() {
        let r = req("c2VjcmV0LXRpY2tldA==".into());
        assert!(!format!("{r:?}").contains("c2Vj"));
    }

    #[test]
    fn replies_round_trip_and_uids_are_checked() {
        let reply = Refusal::Busy(4).reply();
        let frame = encode_frame(&reply);
        let n = frame_len(frame[..4].try_into().unwrap()).unwrap();
        let back: CaptureReply = serde_json::from_slice(&frame[4..4 + n]).unwrap();
        assert_eq!(back, reply);
        assert!(uid_allowed(0, 1000) && uid_allowed(1000, 1000) && !uid_allowed(1001, 1000));
        let slots = Slots::default();
        let taken: Vec<_> = (0..MAX_SESSIONS).map(|_| slots.take().unwrap()).collect();
        assert_eq!(slots.take().unwrap_err().code(), RefusalCode::Busy);
        drop(taken);
        assert_eq!(slots.take().unwrap().index, 0);
    }
}
