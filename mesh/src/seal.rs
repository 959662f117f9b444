//! Sealing of gossip datagrams, sans-IO.
//!
//! Chitchat authenticates nothing, so every gossip datagram is sealed with
//! XChaCha20-Poly1305 under the mesh gossip key. The cleartext header (sender id, sequence
//! number, fragment position) is the associated data; a per-sender [`ReplayWindow`] plus a
//! freshness bound on the sequence number (it is a millisecond clock) refuse replays. The
//! byte layout is in `docs/mesh.md`.
//!
//! Chitchat fills messages up to 65,507 bytes (the IPv4 UDP payload limit) and cannot be told
//! otherwise, so sealing can push a message past what a datagram can carry: such messages
//! are split into up to [`MAX_FRAGMENTS`] sealed fragments and reassembled here.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use plg_proto::replay::{ReplayError, ReplayWindow};

use crate::node::{InvalidValue, NodeId};

/// Largest UDP payload over IPv4; chitchat's own cap.
pub const MAX_DATAGRAM: usize = 65_507;
/// Most fragments one message may be split into.
pub const MAX_FRAGMENTS: u8 = 4;
/// Format version, first byte of every datagram.
pub const VERSION: u8 = 1;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// version, flags, fragment index, fragment count, seq (8), sender length.
const FIXED_HEADER_LEN: usize = 13;
/// Most reassemblies in flight; the oldest is evicted beyond that.
const MAX_PENDING: usize = 32;
/// Most senders we keep a replay window for; a full table evicts the stalest one.
const MAX_SENDERS: usize = 4096;

/// The 32-byte mesh gossip key (from billing's mesh bundle). `Debug` never prints it.
#[derive(Clone)]
pub struct GossipKey([u8; 32]);

impl GossipKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        GossipKey(bytes)
    }

    /// From a decoded key of exactly 32 bytes (billing ships it base64-encoded).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidValue> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| InvalidValue::new("gossip key", &format!("{} bytes", bytes.len())))?;
        Ok(GossipKey(bytes))
    }

    /// Raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipKey(***)")
    }
}

/// Why a datagram was refused. None of these stop gossip: the datagram is counted and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short, wrong version or a header that does not parse.
    #[error("malformed gossip datagram")]
    Malformed,
    /// Authentication failed: wrong key, or forged or corrupted bytes.
    #[error("gossip datagram failed authentication")]
    Forged,
    /// Sequence number already seen, or behind the sender's window.
    #[error("replayed gossip datagram")]
    Replayed,
    /// Sequence number (a millisecond clock) too far from ours.
    #[error("gossip datagram outside the clock-skew bound")]
    Stale,
}

/// Why a message could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Would need more than [`MAX_FRAGMENTS`] datagrams.
    #[error("gossip message of {0} bytes is too large to seal")]
    TooLarge(usize),
}

/// Seals outgoing messages for one sender.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    sender: NodeId,
    last_seq: u64,
    max_datagram: usize,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("sender", &self.sender)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `sender` under `key`.
    pub fn new(key: &GossipKey, sender: NodeId) -> Self {
        Sealer {
            cipher: XChaCha20Poly1305::new(key.as_bytes().into()),
            sender,
            last_seq: 0,
            max_datagram: MAX_DATAGRAM,
        }
    }

    /// Overrides the datagram size limit (tests use a small one to exercise fragmentation).
    pub fn with_max_datagram(mut self, max_datagram: usize) -> Self {
        assert!(
            max_datagram > self.overhead() + 16,
            "datagram limit too small"
        );
        self.max_datagram = max_datagram;
        self
    }

    /// Bytes each datagram adds to its share of the payload.
    pub fn overhead(&self) -> usize {
        FIXED_HEADER_LEN + self.sender.as_str().len() + NONCE_LEN + TAG_LEN
    }

    /// Seals `payload` into one or more datagrams appended to `out`. `now_ms` is wall-clock
    /// Unix milliseconds; sequence numbers are `max(last + 1, now_ms)`, so they survive a
    /// restart and double as a timestamp.
    pub fn seal(
        &mut self,
        now_ms: u64,
        payload: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), SealError> {
        let per_fragment = self.max_datagram - self.overhead();
        let count = payload.len().div_ceil(per_fragment).max(1);
        if count > MAX_FRAGMENTS as usize {
            return Err(SealError::TooLarge(payload.len()));
        }
        // Fragments take consecutive sequence numbers: message id = seq - index.
        let first = (self.last_seq + 1).max(now_ms);
        self.last_seq = first + count as u64 - 1;
        for (index, chunk) in payload.chunks(per_fragment.max(1)).enumerate() {
            out.push(self.seal_one(first + index as u64, index as u8, count as u8, chunk));
        }
        if payload.is_empty() {
            out.push(self.seal_one(first, 0, 1, &[]));
        }
        Ok(())
    }

    fn seal_one(&self, seq: u64, index: u8, count: u8, chunk: &[u8]) -> Vec<u8> {
        let id = self.sender.as_str().as_bytes();
        let header_len = FIXED_HEADER_LEN + id.len();
        let mut buf = Vec::with_capacity(header_len + NONCE_LEN + chunk.len() + TAG_LEN);
        buf.extend_from_slice(&[VERSION, 0, index, count]);
        buf.extend_from_slice(&seq.to_be_bytes());
        buf.push(id.len() as u8);
        buf.extend_from_slice(id);
        let nonce = XNonce::generate();
        buf.extend_from_slice(&nonce);
        let body_start = buf.len();
        buf.extend_from_slice(chunk);
        let (head, body) = buf.split_at_mut(body_start);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, &head[..header_len], body.into())
            .expect("chunk length is bounded by the datagram size");
        buf.extend_from_slice(&tag);
        buf
    }
}

/// A parsed, not yet authenticated header.
struct Parsed<'a> {
    index: u8,
    count: u8,
    seq: u64,
    sender: &'a str,
    header_len: usize,
}

fn parse(datagram: &[u8]) -> Result<Parsed<'_>, OpenError> {
    if datagram.len() < FIXED_HEADER_LEN || datagram[0] != VERSION || datagram[1] != 0 {
        return Err(OpenError::Malformed);
    }
    let (index, count) = (datagram[2], datagram[3]);
    if count == 0 || count > MAX_FRAGMENTS || index >= count {
        return Err(OpenError::Malformed);
    }
    let seq = u64::from_be_bytes(datagram[4..12].try_into().expect("8 bytes"));
    let id_len = datagram[12] as usize;
    let header_len = FIXED_HEADER_LEN + id_len;
    if datagram.len() < header_len + NONCE_LEN + TAG_LEN {
        return Err(OpenError::Malformed);
    }
    let sender = std::str::from_utf8(&datagram[FIXED_HEADER_LEN..header_len])
        .map_err(|_| OpenError::Malformed)?;
    if NodeId::validate(sender).is_err() || seq < index as u64 {
        return Err(OpenError::Malformed);
    }
    Ok(Parsed {
        index,
        count,
        seq,
        sender,
        header_len,
    })
}

struct Pending {
    sender: String,
    message_id: u64,
    started_ms: u64,
    parts: Vec<Option<Vec<u8>>>,
}

/// Authenticates incoming datagrams and keeps per-sender replay windows and reassembly state.
pub struct Opener {
    cipher: XChaCha20Poly1305,
    max_skew_ms: u64,
    windows: HashMap<String, ReplayWindow>,
    pending: VecDeque<Pending>,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("senders", &self.windows.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener under `key` that refuses sequence numbers more than `max_skew_ms` away
    /// from the local clock.
    pub fn new(key: &GossipKey, max_skew_ms: u64) -> Self {
        Opener {
            cipher: XChaCha20Poly1305::new(key.as_bytes().into()),
            max_skew_ms,
            windows: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// Opens one datagram in place. `Ok(Some(payload))` is a whole message; `Ok(None)` is a
    /// fragment kept until the rest arrive. The replay window only moves after
    /// authentication, so forged datagrams cannot disturb it.
    pub fn open(&mut self, now_ms: u64, datagram: &mut [u8]) -> Result<Option<Vec<u8>>, OpenError> {
        let Parsed {
            index,
            count,
            seq,
            sender,
            header_len,
        } = parse(datagram)?;
        let sender = sender.to_owned();
        if seq.abs_diff(now_ms) > self.max_skew_ms {
            return Err(OpenError::Stale);
        }
        if let Some(window) = self.windows.get(&sender) {
            window.check(seq).map_err(replay_error)?;
        }
        let (head, rest) = datagram.split_at_mut(header_len);
        let (nonce, rest) = rest.split_at_mut(NONCE_LEN);
        let body_len = rest.len() - TAG_LEN;
        let (body, tag) = rest.split_at_mut(body_len);
        let tag = Tag::try_from(&*tag).map_err(|_| OpenError::Malformed)?;
        let nonce = XNonce::try_from(&*nonce).map_err(|_| OpenError::Malformed)?;
        self.cipher
            .decrypt_inout_detached(&nonce, head, body.into(), &tag)
            .map_err(|_| OpenError::Forged)?;
        self.window_mut(&sender).update(seq).map_err(replay_error)?;
        if count == 1 {
            return Ok(Some(body.to_vec()));
        }
        Ok(self.reassemble(now_ms, sender, seq - index as u64, index, count, body))
    }

    fn window_mut(&mut self, sender: &str) -> &mut ReplayWindow {
        if !self.windows.contains_key(sender) && self.windows.len() >= MAX_SENDERS {
            // Senders come and go (restarts keep the id, so this is rare): forget the one
            // heard from least recently. Its next datagram still passes the skew bound.
            let stalest = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.top())
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                self.windows.remove(&k);
            }
        }
        self.windows.entry(sender.to_owned()).or_default()
    }

    fn reassemble(
        &mut self,
        now_ms: u64,
        sender: String,
        message_id: u64,
        index: u8,
        count: u8,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let skew = self.max_skew_ms;
        self.pending
            .retain(|p| now_ms.saturating_sub(p.started_ms) <= skew.min(10_000));
        let pos = self
            .pending
            .iter()
            .position(|p| p.sender == sender && p.message_id == message_id);
        let pos = match pos {
            Some(pos) if self.pending[pos].parts.len() == count as usize => pos,
            Some(_) => return None,
            None => {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.pop_front();
                }
                self.pending.push_back(Pending {
                    sender,
                    message_id,
                    started_ms: now_ms,
                    parts: vec![None; count as usize],
                });
                self.pending.len() - 1
            }
        };
        let entry = &mut self.pending[pos];
        entry.parts[index as usize] = Some(body.to_vec());
        if entry.parts.iter().any(Option::is_none) {
            return None;
        }
        let entry = self.pending.remove(pos).expect("index just found");
        Some(entry.parts.into_iter().flatten().flatten().collect())
    }
}

fn replay_error(_: ReplayError) -> OpenError {
    OpenError::Replayed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000_000;

    fn key(b: u8) -> GossipKey {
        GossipKey::new([b; 32])
    }

    fn id(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    fn seal(sealer: &mut Sealer, now: u64, payload: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        sealer.seal(now, payload, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip() {
        let mut s = Sealer::new(&key(1), id("a"));
        let mut o = Opener::new(&key(1), 60_000);
        let mut d = seal(&mut s, NOW, b"hello");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].len(), 5 + s.overhead());
        assert_eq!(o.open(NOW, &mut d[0]).unwrap().unwrap(), b"hello");
    }

    #[test]
    fn wrong_key_is_forged() {
        let mut s = Sealer::new(&key(1), id("a"));
        let mut o = Opener::new(&key(2), 60_000);
        let mut d = seal(&mut s, NOW, b"hello");
        assert_eq!(o.open(NOW, &mut d[0]), Err(OpenError::Forged));
    }

    #[test]
    fn tampered_header_is_forged() {
        let mut s = Sealer::new(&key(1), id("a"));
        let mut o = Opener::new(&key(1), 60_000);
        let mut d = seal(&mut s, NOW, b"hello");
        d[0][13] = b'b'; // sender id
        assert_eq!(o.open(NOW, &mut d[0]), Err(OpenError::Forged));
    }

    #[test]
    fn replay_is_refused_and_forgery_does_not_move_the_window() {
        let mut s = Sealer::new(&key(1), id("a"));
        let mut o = Opener::new(&key(1), 60_000);
        let d = seal(&mut s, NOW, b"x");
        o.open(NOW, &mut d[0].clone()).unwrap();
        assert_eq!(o.open(NOW, &mut d[0].clone()), Err(OpenError::Replayed));
        // A forged datagram far ahead must not push the window past genuine traffic.
        let mut forged = Sealer::new(&key(9), id("a"));
        let mut f = seal(&mut forged, NOW + 50_000, b"y");
        assert_eq!(o.open(NOW, &mut f[0]), Err(OpenError::Forged));
        let mut d2 = seal(&mut s, NOW + 1, b"z");
        assert_eq!(o.open(NOW, &mut d2[0]).unwrap().unwrap(), b"z");
    }

    #[test]
    fn stale_and_future_are_refused() {
        let mut s = Sealer::new(&key(1), id("a"));
        let mut o = Opener::new(&key(1), 1_000);
        let mut d = seal(&mut s, NOW - 5_000, b"x");
        assert_eq!(o.open(NOW, &mut d[0]), Err(OpenError::Stale));
        let mut s2 = Sealer::new(&key(1), id("b"));
        let mut d = seal(&mut s2, NOW + 5_000, b"x");
        assert_eq!(o.open(NOW, &mut d[0]), Err(OpenError::Stale));
    }

    #[test]
    fn restart_with_same_id_is_accepted() {
        let mut o = Opener::new(&key(1), 60_000);
        let mut s = Sealer::new(&key(1), id("a"));
        for i in 0..10 {
            let mut d = seal(&mut s, NOW + i, b"x");
            o.open(NOW, &mut d[0]).unwrap();
        }
        // New process, fresh counter: sequence numbers restart from the clock, which moved on.
        let mut s = Sealer::new(&key(1), id("a"));
        let mut d = seal(&mut s, NOW + 100, b"again");
        assert_eq!(o.open(NOW + 100, &mut d[0]).unwrap().unwrap(), b"again");
    }

    #[test]
    fn full_size_chitchat_message_is_fragmented_and_reassembled() {
        let mut s = Sealer::new(&key(1), id("node-1"));
        let mut o = Opener::new(&key(1), 60_000);
        let payload: Vec<u8> = (0..MAX_DATAGRAM).map(|i| (i * 7) as u8).collect();
        let mut d = seal(&mut s, NOW, &payload);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|x| x.len() <= MAX_DATAGRAM));
        // Out of order, with a duplicate of the first fragment in between.
        assert_eq!(o.open(NOW, &mut d[1]).unwrap(), None);
        assert_eq!(o.open(NOW, &mut d[0].clone()).unwrap().unwrap(), payload);
        assert_eq!(o.open(NOW, &mut d[0]), Err(OpenError::Replayed));
    }

    #[test]
    fn too_large_is_an_error() {
        let mut s = Sealer::new(&key(1), id("a")).with_max_datagram(200);
        let mut out = Vec::new();
        assert!(matches!(
            s.seal(NOW, &[0; 2_000], &mut out),
            Err(SealError::TooLarge(2_000))
        ));
    }

    #[test]
    fn junk_is_malformed() {
        let mut o = Opener::new(&key(1), 60_000);
        assert_eq!(o.open(NOW, &mut []), Err(OpenError::Malformed));
        assert_eq!(o.open(NOW, &mut [1; 12]), Err(OpenError::Malformed));
        let mut v = vec![1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 200];
        v.resize(300, 0);
        assert_eq!(o.open(NOW, &mut v), Err(OpenError::Malformed));
    }

    #[test]
    fn debug_hides_key_and_length_is_checked() {
        assert_eq!(format!("{:?}", key(7)), "GossipKey(***)");
        assert!(GossipKey::from_slice(&[0; 31]).is_err());
        assert_eq!(
            GossipKey::from_slice(&[3; 32]).unwrap().as_bytes(),
            &[3; 32]
        );
    }

    proptest! {
        /// Any payload up to the fragment limit round-trips, in any fragment order.
        #[test]
        fn fragments_round_trip(len in 0usize..900, reverse: bool) {
            let mut s = Sealer::new(&key(1), id("n")).with_max_datagram(300);
            let mut o = Opener::new(&key(1), 60_000);
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut d = seal(&mut s, NOW, &payload);
            if reverse { d.reverse(); }
            let mut got = None;
            for dg in &mut d {
                if let Some(p) = o.open(NOW, dg).unwrap() { got = Some(p); }
            }
            prop_assert_eq!(got.unwrap(), payload);
        }

        /// Arbitrary bytes never panic and are never accepted.
        #[test]
        fn garbage_is_refused(mut bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut o = Opener::new(&key(1), u64::MAX);
            prop_assert!(o.open(NOW, &mut bytes).is_err());
        }
    }
}
