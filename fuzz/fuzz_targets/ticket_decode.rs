//! Session tickets: `Ticket::decode_unverified` and `TicketVerifier::verify` on untrusted
//! bytes. Whatever decodes is re-signed with a fixed key: the claims must re-encode to the
//! same bytes, verify (twice: the second time from the cache) with the rules of the format,
//! and stop verifying once any claim byte or the signature changes.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use plg_proto::ticket::MAX_CLOCK_SKEW_SECS;
use plg_proto::{Ticket, TicketError, TicketVerifier};

const KEY_ID: u32 = 7;
const NOW: u64 = 1_700_000_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fuzz_target!(|data: &[u8]| {
    // Raw bytes against a verifier with a fixed key: must never panic, and without the private
    // key nothing the fuzzer makes up can verify.
    let mut verifier = TicketVerifier::new([(KEY_ID, key().verifying_key())]);
    let raw = verifier.verify(data, NOW);
    assert!(raw.is_err(), "an unsigned input verified");

    let Ok((ticket, claims, _sig)) = Ticket::decode_unverified(data) else {
        return;
    };
    for d in &ticket.destinations {
        assert!(d.port_lo <= d.port_hi);
        assert_eq!(d.net.trunc(), d.net);
        assert!(d.contains(std::net::SocketAddr::new(d.net.network(), d.port_lo)));
        // Text form round-trips too (it is what billing's config and API use).
        assert_eq!(d.to_string().parse::<plg_proto::Destination>().unwrap(), *d);
    }

    // Re-sign: the claims must be byte-identical and decode to the same ticket.
    let signed = ticket.sign(&key());
    assert_eq!(
        &signed[..signed.len() - 64],
        claims,
        "claims do not re-encode"
    );
    let (again, _, _) = Ticket::decode_unverified(&signed).unwrap();
    assert_eq!(again, ticket);

    // Verify under the ticket's own key id, at a time chosen from its claims.
    let mut verifier = TicketVerifier::new([(ticket.key_id, key().verifying_key())]);
    let now = ticket.issued_at.saturating_sub(MAX_CLOCK_SKEW_SECS);
    let expected = if now >= ticket.expires_at {
        Err(TicketError::Expired {
            expired_at: ticket.expires_at,
            now,
        })
    } else {
        Ok(ticket.clone())
    };
    assert_eq!(verifier.verify(&signed, now), expected);
    assert_eq!(
        verifier.verify(&signed, now),
        expected,
        "cached result differs"
    );
    // One second earlier is beyond the tolerated skew.
    if let Some(early) = now.checked_sub(1) {
        assert!(matches!(
            verifier.verify(&signed, early),
            Err(TicketError::NotYetValid { .. })
        ));
    }
    // A different key id is unknown.
    let mut other = TicketVerifier::new([(ticket.key_id.wrapping_add(1), key().verifying_key())]);
    assert_eq!(
        other.verify(&signed, now),
        Err(TicketError::UnknownKey(ticket.key_id))
    );

    // Tampering after a cached success: any changed byte (claims or signature) is refused.
    if expected.is_ok() {
        for i in [0, 5, claims.len() - 1, claims.len(), signed.len() - 1] {
            let mut bad = signed.clone();
            bad[i] ^= 0x01;
            assert!(
                verifier.verify(&bad, now).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }
});
