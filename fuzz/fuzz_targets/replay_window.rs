//! The replay window against a reference model: a sequence number is accepted iff it is
//! non-zero, never accepted before, and newer than `top - WINDOW`. Also checks that `check`
//! never disagrees with `update` and never changes state.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use plg_proto::replay::{ReplayWindow, WINDOW};

fuzz_target!(|data: &[u8]| {
    let mut w = ReplayWindow::new();
    let mut seen = HashSet::new();
    let mut top = 0u64;
    // Each 3-byte record is a signed step relative to the current top, so inputs stay near the
    // window edges where the bugs would be; a record starting with 0xff is an absolute jump.
    for rec in data.chunks_exact(3) {
        let step = i16::from_be_bytes([rec[1], rec[2]]) as i64;
        let seq = if rec[0] == 0xff {
            (step as u64).wrapping_mul(0x0001_0000_0001)
        } else {
            top.saturating_add_signed(step)
        };
        let expected = seq != 0 && !seen.contains(&seq) && (seq > top || top - seq < WINDOW);
        let checked = w.check(seq).is_ok();
        assert_eq!(checked, expected, "check({seq}) with top {top}");
        assert_eq!(
            w.update(seq).is_ok(),
            expected,
            "update({seq}) with top {top}"
        );
        if expected {
            seen.insert(seq);
            top = top.max(seq);
        }
        assert_eq!(w.top(), top);
    }
});
