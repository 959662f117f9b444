//! Data-plane frames: header and body codecs, and `Session::open` on untrusted datagrams.
//!
//! Every input is used three ways:
//! 1. as a raw datagram for `Header::decode` and as a body for `Frame::decode_body` of every
//!    type; whatever decodes must re-encode to the very same bytes (the encoding is canonical);
//! 2. as a raw datagram for `Session::open` on a node-side session with fixed keys: it must
//!    never panic, and anything it accepts must re-seal to the same bytes;
//! 3. as a recipe `type | path | seq u64 | flip_at u16 | xor u8 | body`: a body that decodes is
//!    sealed by the client side, opened by the node side (must give back the same header and
//!    frame), opened again (must be a duplicate), and opened with one byte changed (must fail).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plg_proto::frame::{DecodeError, HEADER_LEN, MAX_DATAGRAM, TAG_LEN};
use plg_proto::replay::ReplayError;
use plg_proto::session::OpenError;
use plg_proto::{Frame, FrameType, Header, Role, Session};

const SESSION_ID: u64 = 0x0102_0304_0506_0708;
const TYPES: [FrameType; 6] = [
    FrameType::Data,
    FrameType::FlowOpen,
    FrameType::Ping,
    FrameType::Pong,
    FrameType::Close,
    FrameType::Error,
];

fn keying_material() -> [u8; 64] {
    std::array::from_fn(|i| i as u8)
}

fn pair() -> (Session, Session) {
    let km = keying_material();
    (
        Session::new(Role::Client, SESSION_ID, &km),
        Session::new(Role::Node, SESSION_ID, &km),
    )
}

fn codecs(data: &[u8]) {
    if let Ok(h) = Header::decode(data) {
        assert!(data.len() >= HEADER_LEN + TAG_LEN && data.len() <= MAX_DATAGRAM);
        let mut again = Vec::new();
        h.encode(&mut again);
        assert_eq!(again, data[..HEADER_LEN], "header does not re-encode");
    }
    for t in TYPES {
        if let Ok(f) = Frame::decode_body(t, data) {
            assert_eq!(f.frame_type(), t);
            let mut again = Vec::new();
            f.encode_body(&mut again);
            assert_eq!(again, data, "{t:?} body does not re-encode");
            assert_eq!(Frame::decode_body(t, &again), Ok(f));
        }
    }
}

fn raw_open(data: &[u8]) {
    let (client, mut node) = pair();
    let mut buf = data.to_vec();
    if let Ok((h, f)) = node.open(&mut buf) {
        // Only reachable from a genuine sealed frame; it must be exactly what we would send.
        let mut resealed = Vec::new();
        client.seal_with_seq(h.path, h.seq, &f, &mut resealed);
        assert_eq!(
            resealed, data,
            "accepted frame does not re-seal identically"
        );
    }
}

fn seal_open(data: &[u8]) {
    if data.len() < 13 {
        return;
    }
    let t = TYPES[data[0] as usize % TYPES.len()];
    let path = data[1];
    let seq = u64::from_be_bytes(data[2..10].try_into().unwrap());
    let flip_at = u16::from_be_bytes([data[10], data[11]]) as usize;
    let xor = data[12];
    let body = &data[13..];
    let Ok(frame) = Frame::decode_body(t, body) else {
        return;
    };

    let (client, mut node) = pair();
    let mut sealed = Vec::new();
    client.seal_with_seq(path, seq, &frame, &mut sealed);
    assert_eq!(sealed.len(), HEADER_LEN + body.len() + TAG_LEN);

    // One changed byte anywhere (header, body or tag) must be refused, on a fresh receiver.
    if xor != 0 && !sealed.is_empty() {
        let mut bad = sealed.clone();
        let i = flip_at % bad.len();
        bad[i] ^= xor;
        let (_, mut fresh) = pair();
        assert!(
            fresh.open(&mut bad).is_err(),
            "byte {i} ^ {xor:#04x} accepted"
        );
    }

    let mut copy = sealed.clone();
    let too_large = sealed.len() > MAX_DATAGRAM;
    let result = node.open(&mut sealed);
    if too_large {
        assert_eq!(
            result.unwrap_err(),
            OpenError::Decode(DecodeError::TooLarge)
        );
        return;
    }
    if seq == 0 {
        assert_eq!(result.unwrap_err(), OpenError::Replay(ReplayError::Zero));
        return;
    }
    let (h, f) = result.expect("a frame we sealed must open");
    assert_eq!(
        (h.frame_type, h.flags, h.path, h.session_id, h.seq),
        (t, 0, path, SESSION_ID, seq)
    );
    assert_eq!(f, frame);
    assert_eq!(
        node.open(&mut copy).unwrap_err(),
        OpenError::Replay(ReplayError::Duplicate)
    );
}

fuzz_target!(|data: &[u8]| {
    codecs(data);
    raw_open(data);
    seal_open(data);
});
