//! Per-packet costs of the data path: seal, open (authenticate + decrypt + replay check),
//! the replay window alone, and the frame codec. `cargo bench -p plg-proto`.
//!
//! Target (issue 7): seal + open + dedup ≤ 1 µs for a game-sized packet.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use plg_proto::frame::{Frame, FrameType, HEADER_LEN, Header, TAG_LEN};
use plg_proto::replay::ReplayWindow;
use plg_proto::session::KEYING_MATERIAL_LEN;
use plg_proto::{Role, Session};

const KM: [u8; KEYING_MATERIAL_LEN] = [7; KEYING_MATERIAL_LEN];
/// Game payload sizes: the benchmark's range is 100–300 bytes.
const SIZES: [usize; 3] = [100, 200, 300];

fn pair() -> (Session, Session) {
    (
        Session::new(Role::Client, 42, &KM),
        Session::new(Role::Node, 42, &KM),
    )
}

fn seal_open(c: &mut Criterion) {
    for size in SIZES {
        let payload = vec![0x5a; size];
        let frame = Frame::Data {
            flow: 1,
            payload: &payload,
        };
        let mut g = c.benchmark_group(format!("data frame {size} B"));
        g.throughput(Throughput::Elements(1));

        let (mut client, _) = pair();
        let mut out = Vec::with_capacity(2048);
        g.bench_function("seal", |b| {
            b.iter(|| client.seal(0, black_box(&frame), &mut out))
        });

        // Open needs a fresh sequence number every time (the replay window refuses repeats),
        // so frames are sealed in the untimed setup.
        let (mut client, mut node) = pair();
        g.bench_function("open (auth + decrypt + replay check)", |b| {
            b.iter_batched_ref(
                || {
                    let mut v = Vec::with_capacity(2048);
                    client.seal(0, &frame, &mut v);
                    v
                },
                |d| {
                    let (_, f) = node.open(d).expect("valid frame");
                    black_box(f);
                },
                BatchSize::SmallInput,
            )
        });

        // The whole per-packet crypto of one hop: the client seals, the node opens and
        // dedups (the target's "seal + open + dedup").
        let (mut client, mut node) = pair();
        let mut buf = Vec::with_capacity(2048);
        g.bench_function("seal + open + dedup", |b| {
            b.iter(|| {
                client.seal(0, black_box(&frame), &mut buf);
                let (_, f) = node.open(&mut buf).expect("valid frame");
                black_box(f);
            })
        });
        g.finish();
    }
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay window");
    g.throughput(Throughput::Elements(1));
    let mut w = ReplayWindow::new();
    let mut seq = 0u64;
    g.bench_function("update in order", |b| {
        b.iter(|| {
            seq += 1;
            w.update(black_box(seq)).unwrap();
        })
    });
    // Multipath: every sequence number arrives twice, the second copy is refused.
    let mut w = ReplayWindow::new();
    let mut seq = 0u64;
    g.bench_function("update + duplicate", |b| {
        b.iter(|| {
            seq += 1;
            w.update(black_box(seq)).unwrap();
            black_box(w.update(black_box(seq)).is_err());
        })
    });
    let mut w = ReplayWindow::new();
    for s in 1..=10_000 {
        if s % 3 != 0 {
            w.update(s).unwrap();
        }
    }
    let mut i = 0u64;
    g.bench_function("check inside the window", |b| {
        b.iter(|| {
            i = (i + 7) % 1500;
            black_box(w.check(black_box(10_000 - i)).is_ok());
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame codec");
    g.throughput(Throughput::Elements(1));
    let payload = [0x11u8; 200];
    let frame = Frame::Data {
        flow: 9,
        payload: &payload,
    };
    let header = Header {
        frame_type: FrameType::Data,
        flags: 0,
        path: 1,
        session_id: 0x0102_0304_0506_0708,
        seq: 99,
    };
    let mut datagram = Vec::with_capacity(2048);
    header.encode(&mut datagram);
    frame.encode_body(&mut datagram);
    datagram.extend_from_slice(&[0u8; TAG_LEN]);
    g.bench_function("header decode", |b| {
        b.iter(|| Header::decode(black_box(&datagram)).unwrap())
    });
    let body_end = datagram.len() - TAG_LEN;
    g.bench_function("data body decode", |b| {
        b.iter(|| {
            Frame::decode_body(FrameType::Data, black_box(&datagram[HEADER_LEN..body_end])).unwrap()
        })
    });
    let mut out = Vec::with_capacity(2048);
    g.bench_function("header + data body encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&header).encode(&mut out);
            black_box(&frame).encode_body(&mut out);
        })
    });
    g.finish();
}

/// The same AEAD (ChaCha20-Poly1305, IETF) from `ring`, already in the tree through rustls:
/// the reference for what seal + open of a game-sized packet can cost here.
fn ring_reference(c: &mut Criterion) {
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7; 32]).unwrap());
    let mut g = c.benchmark_group("ring chacha20-poly1305 reference");
    g.throughput(Throughput::Elements(1));
    for size in SIZES {
        let mut buf = vec![0x5a; size + 4];
        let header = [1u8; HEADER_LEN];
        let mut seq = 0u64;
        g.bench_function(format!("seal + open {size} B"), |b| {
            b.iter(|| {
                seq += 1;
                let mut n = [0u8; 12];
                n[4..].copy_from_slice(&seq.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from(&header),
                        &mut buf,
                    )
                    .unwrap();
                key.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(n),
                    Aad::from(&header),
                    tag,
                    &mut buf,
                    0..,
                )
                .unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, seal_open, replay, codec, ring_reference);
criterion_main!(benches);
