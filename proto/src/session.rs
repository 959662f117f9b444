//! Per-session sealing and opening of data-plane frames (sans-IO).
//!
//! Both ends derive 64 bytes from the QUIC/TLS exporter of the control connection
//! ([`EXPORTER_LABEL`], context = session id big-endian): bytes 0..32 key the client→node
//! direction, 32..64 the node→client direction. Each direction has its own key and sequence
//! space, so a (key, nonce) pair is never reused: the nonce is `path ‖ 0 0 0 ‖ seq` and a sender
//! never sends the same sequence twice on one path.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::frame::{DecodeError, Frame, HEADER_LEN, Header, TAG_LEN};
use crate::replay::{ReplayError, ReplayWindow};

/// TLS exporter label for the data-plane keys.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-PLG-data-v1";
/// Bytes of keying material to export.
pub const KEYING_MATERIAL_LEN: usize = 64;

/// Which end of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The gamer's side.
    Client,
    /// The relay node.
    Node,
}

/// Why an incoming datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The header or body does not parse.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// For another session.
    #[error("frame for another session")]
    WrongSession,
    /// A replay, a duplicate, or too old.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The AEAD tag does not verify: forged, corrupted or wrong key.
    #[error("authentication failed")]
    Auth,
}

/// One end of a session's data plane: keys, next sequence number, replay window.
pub struct Session {
    id: u64,
    seal_key: LessSafeKey,
    open_key: LessSafeKey,
    next_seq: u64,
    replay: ReplayWindow,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("next_seq", &self.next_seq)
            .field("keys", &"***")
            .finish()
    }
}

fn nonce(path: u8, seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = path;
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

impl Session {
    /// Creates one end of session `id` from the exported keying material.
    pub fn new(role: Role, id: u64, keying_material: &[u8; KEYING_MATERIAL_LEN]) -> Self {
        // ring's ChaCha20-Poly1305 (RFC 8439, the same bytes on the wire as any other
        // implementation) is ~7× faster per small packet than the pure-Rust crate here.
        let key = |k: &[u8]| {
            LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).expect("32-byte key"))
        };
        let c2n = key(&keying_material[..32]);
        let n2c = key(&keying_material[32..]);
        let (seal_key, open_key) = match role {
            Role::Client => (c2n, n2c),
            Role::Node => (n2c, c2n),
        };
        Session {
            id,
            seal_key,
            open_key,
            next_seq: 1,
            replay: ReplayWindow::new(),
        }
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sequence number the next sealed frame will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seals `frame` for `path` into `out` (cleared first); returns the sequence number used.
    pub fn seal(&mut self, path: u8, frame: &Frame<'_>, out: &mut Vec<u8>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seal_with_seq(path, seq, frame, out);
        seq
    }

    /// Seals `frame` with an explicit sequence number already taken from [`Session::seal`] or
    /// [`Session::take_seq`]: this is how the same frame goes out on several paths.
    pub fn seal_with_seq(&self, path: u8, seq: u64, frame: &Frame<'_>, out: &mut Vec<u8>) {
        out.clear();
        Header {
            frame_type: frame.frame_type(),
            flags: 0,
            path,
            session_id: self.id,
            seq,
        }
        .encode(out);
        frame.encode_body(out);
        let (header, body) = out.split_at_mut(HEADER_LEN);
        let tag = self
            .seal_key
            .seal_in_place_separate_tag(nonce(path, seq), Aad::from(&*header), body)
            .expect("body length is bounded by MAX_DATAGRAM");
        out.extend_from_slice(tag.as_ref());
    }

    /// Reserves a sequence number for [`Session::seal_with_seq`].
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Authenticates, decrypts in place and decodes a datagram. Replays and duplicates
    /// (including a copy of the same frame from another path) are refused.
    pub fn open<'a>(&mut self, datagram: &'a mut [u8]) -> Result<(Header, Frame<'a>), OpenError> {
        let header = Header::decode(datagram)?;
        if header.session_id != self.id {
            return Err(OpenError::WrongSession);
        }
        self.replay.check(header.seq)?;
        let len = datagram.len();
        let (head, rest) = datagram.split_at_mut(HEADER_LEN);
        debug_assert_eq!(
            rest.len(),
            len - HEADER_LEN,
            "Header::decode checked the minimum length"
        );
        let body = self
            .open_key
            .open_in_place(nonce(header.path, header.seq), Aad::from(&*head), rest)
            .map_err(|_| OpenError::Auth)?;
        debug_assert_eq!(body.len(), len - HEADER_LEN - TAG_LEN);
        self.replay.update(header.seq)?;
        let frame = Frame::decode_body(header.frame_type, body)?;
        Ok((header, frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameType, MAX_DATAGRAM};
    use proptest::prelude::*;

    fn km() -> [u8; 64] {
        std::array::from_fn(|i| i as u8)
    }

    fn pair() -> (Session, Session) {
        let km = km();
        (
            Session::new(Role::Client, 99, &km),
            Session::new(Role::Node, 99, &km),
        )
    }

    /// The worked example of docs/protocol.md §8.1, byte for byte (checked there against an
    /// independent implementation), so the document and the code cannot drift apart.
    #[test]
    fn protocol_md_test_vector() {
        let mut c = Session::new(Role::Client, 0x0102_0304_0506_0708, &km());
        let mut buf = Vec::new();
        c.seal(
            0,
            &Frame::Data {
                flow: 7,
                payload: b"ping",
            },
            &mut buf,
        );
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        let header = "0101000001020304050607080000000000000001";
        let sealed_body_and_tag = "695c7cde4163d61d5a783f57d09b37858f6b370bc116f821";
        assert_eq!(hex, format!("{header}{sealed_body_and_tag}"));
    }

    #[test]
    fn round_trip_both_directions() {
        let (mut c, mut n) = pair();
        let mut buf = Vec::new();
        c.seal(
            0,
            &Frame::Data {
                flow: 3,
                payload: b"hello",
            },
            &mut buf,
        );
        let (h, f) = n.open(&mut buf).unwrap();
        assert_eq!((h.seq, h.path, h.frame_type), (1, 0, FrameType::Data));
        assert_eq!(
            f,
            Frame::Data {
                flow: 3,
                payload: b"hello"
            }
        );
        n.seal(
            1,
            &Frame::Pong {
                id: 1,
                timestamp_us: 2,
            },
            &mut buf,
        );
        assert_eq!(
            c.open(&mut buf).unwrap().1,
            Frame::Pong {
                id: 1,
                timestamp_us: 2
            }
        );
    }

    #[test]
    fn replay_and_multipath_duplicate_dropped() {
        let (mut c, mut n) = pair();
        let frame = Frame::Data {
            flow: 1,
            payload: &[1, 2, 3],
        };
        let seq = c.take_seq();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        c.seal_with_seq(0, seq, &frame, &mut a);
        c.seal_with_seq(1, seq, &frame, &mut b);
        assert_ne!(a, b, "different paths must use different nonces");
        let replay = a.clone();
        n.open(&mut a).unwrap();
        assert_eq!(
            n.open(&mut b).unwrap_err(),
            OpenError::Replay(ReplayError::Duplicate)
        );
        assert_eq!(
            n.open(&mut replay.clone()).unwrap_err(),
            OpenError::Replay(ReplayError::Duplicate)
        );
    }

    #[test]
    fn wrong_key_direction_and_tampering() {
        let (mut c, mut n) = pair();
        let mut buf = Vec::new();
        c.seal(0, &Frame::Close { reason: 0 }, &mut buf);
        // A client can't open its own frames (direction keys differ).
        let mut c2 = Session::new(Role::Client, 99, &km());
        assert_eq!(c2.open(&mut buf.clone()).unwrap_err(), OpenError::Auth);
        // Another session's key.
        let mut other = Session::new(Role::Node, 99, &[8u8; 64]);
        assert_eq!(other.open(&mut buf.clone()).unwrap_err(), OpenError::Auth);
        // Every single-bit flip is refused, and a forged frame doesn't move the window.
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(n.open(&mut bad).is_err(), "flip at {i} accepted");
        }
        n.open(&mut buf).unwrap();
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..MAX_DATAGRAM + 10)) {
            let (_, mut n) = pair();
            let mut b = bytes;
            let _ = n.open(&mut b);
        }

        #[test]
        fn seal_open_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..1400), path: u8, flow: u32) {
            let (mut c, mut n) = pair();
            let mut buf = Vec::new();
            c.seal(path, &Frame::Data { flow, payload: &payload }, &mut buf);
            let (h, f) = n.open(&mut buf).unwrap();
            prop_assert_eq!(h.path, path);
            prop_assert_eq!(f, Frame::Data { flow, payload: &payload });
        }
    }
}
