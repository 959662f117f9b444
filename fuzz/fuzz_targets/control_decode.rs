//! Control-channel messages: `ControlMessage::decode` on untrusted bodies, and the
//! round trip decode → encode → decode for whatever decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plg_proto::control::{ControlMessage, RejectCode};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ControlMessage::decode(data) else {
        return;
    };
    let wire = msg.encode();
    let len = u16::from_be_bytes([wire[0], wire[1]]) as usize;
    assert_eq!(len, wire.len() - 2, "length prefix");
    assert_eq!(
        ControlMessage::decode(&wire[2..]).as_ref(),
        Ok(&msg),
        "round trip"
    );
    // The encoding is canonical, except that a reject code this implementation does not know
    // is kept only as `Other` and re-encoded as 0xffff.
    let lossy = matches!(
        msg,
        ControlMessage::Reject {
            code: RejectCode::Other,
            ..
        }
    );
    if !lossy {
        assert_eq!(&wire[2..], data, "re-encoding differs");
    }
});
