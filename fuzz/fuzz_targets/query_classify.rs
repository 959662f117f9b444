//! Game-server probe replies: `query::classify` on untrusted datagrams for every query kind
//! and a nonce taken from the input; the echo codec's round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plg_proto::query::{self, QueryKind, Reply};

fuzz_target!(|data: &[u8]| {
    let Some((head, reply)) = data.split_first_chunk::<8>() else {
        return;
    };
    let nonce = u64::from_be_bytes(*head);
    for kind in [QueryKind::Echo, QueryKind::A2s, QueryKind::Q3] {
        match query::classify(kind, nonce, reply) {
            Reply::Challenge(c) => {
                assert_eq!(kind, QueryKind::A2s, "only a2s has challenges");
                assert_eq!(&reply[5..], c.to_le_bytes(), "challenge bytes");
                let retry = query::request_with_challenge(c);
                assert!(retry.ends_with(&c.to_le_bytes()));
            }
            Reply::Answer if kind == QueryKind::Echo => {
                assert_eq!(reply, query::request(kind, nonce), "echo answer is the request");
            }
            Reply::Answer | Reply::NotOurs => {}
        }
    }
    if let Some(n) = query::echo_nonce(reply) {
        assert_eq!(query::request(QueryKind::Echo, n), reply, "echo nonce round trip");
    }
});
