//! Control-channel messages, exchanged on one bidirectional QUIC stream per session.
//!
//! Each message is `len u16 | type u8 | body` (big-endian; `len` counts type and body).
//! The client sends [`ControlMessage::Hello`]; the node answers `Accept` or `Reject`.

use crate::codec::{Reader, Writer};
use crate::ticket::MAX_TICKET_LEN;

/// ALPN protocol id of the control channel.
pub const ALPN: &[u8] = b"plg/1";
/// QUIC application close code a node uses when it drains: the client should present its
/// ticket to its backup at once (any other close is treated like silence).
pub const CLOSE_DRAINING: u32 = 2;
/// Largest control message body accepted.
pub const MAX_CONTROL_LEN: usize = 4096;

/// Reasons a node refuses a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RejectCode {
    /// The ticket does not parse or its version is unknown.
    MalformedTicket = 1,
    /// Signature invalid or key id unknown.
    InvalidTicket = 2,
    /// Expired, or issued in the future.
    TicketExpired = 3,
    /// The node is draining or full.
    Unavailable = 4,
    /// The hello itself is malformed.
    BadRequest = 5,
    /// Anything else.
    Other = 0xffff,
}

impl RejectCode {
    /// Maps a wire code; unknown codes become [`RejectCode::Other`].
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => RejectCode::MalformedTicket,
            2 => RejectCode::InvalidTicket,
            3 => RejectCode::TicketExpired,
            4 => RejectCode::Unavailable,
            5 => RejectCode::BadRequest,
            _ => RejectCode::Other,
        }
    }
}

/// Session parameters the node grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept {
    /// Session id (equal to the ticket's).
    pub session_id: u64,
    /// UDP port of the node's data plane (on the control connection's IP).
    pub data_port: u16,
    /// Seconds without traffic after which the node forgets the session.
    pub idle_timeout_secs: u16,
    /// Most paths the client may use.
    pub max_paths: u8,
    /// Unix seconds at which the ticket (and session) ends.
    pub expires_at: u64,
    /// The node the mesh designated to adopt this session if this one fails (its id, as in
    /// billing's node list); empty if none.
    pub backup: String,
}

/// Longest node id carried in an ACCEPT.
pub const MAX_NODE_ID: usize = 64;

/// A control-channel message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// Client → node: present a ticket.
    Hello {
        /// Signed ticket bytes from billing.
        ticket: Vec<u8>,
    },
    /// Node → client: session established.
    Accept(Accept),
    /// Node → client: session refused.
    Reject {
        /// Machine-readable reason.
        code: RejectCode,
        /// Human-readable detail (UTF-8, at most 1024 bytes).
        message: String,
    },
}

/// Why a control message could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Too short for its type.
    #[error("truncated control message")]
    Truncated,
    /// Longer than [`MAX_CONTROL_LEN`].
    #[error("control message too long")]
    TooLong,
    /// Unknown message type.
    #[error("unknown control message type {0}")]
    UnknownType(u8),
    /// Bytes left over or invalid fields.
    #[error("invalid control message: {0}")]
    Invalid(&'static str),
}

const HELLO: u8 = 1;
const ACCEPT: u8 = 2;
const REJECT: u8 = 3;
const MAX_MESSAGE: usize = 1024;

impl ControlMessage {
    /// Encodes with the `len u16` prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut w = Writer::new(&mut body);
        match self {
            ControlMessage::Hello { ticket } => {
                w.u8(HELLO);
                w.u16(ticket.len() as u16);
                w.bytes(ticket);
            }
            ControlMessage::Accept(a) => {
                w.u8(ACCEPT);
                w.u64(a.session_id);
                w.u16(a.data_port);
                w.u16(a.idle_timeout_secs);
                w.u8(a.max_paths);
                w.u64(a.expires_at);
                let backup = if a.backup.len() <= MAX_NODE_ID {
                    a.backup.as_bytes()
                } else {
                    &[]
                };
                w.u8(backup.len() as u8);
                w.bytes(backup);
            }
            ControlMessage::Reject { code, message } => {
                let mut end = message.len().min(MAX_MESSAGE);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                w.u8(REJECT);
                w.u16(*code as u16);
                w.u16(end as u16);
                w.bytes(&message.as_bytes()[..end]);
            }
        }
        let mut out = Vec::with_capacity(body.len() + 2);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes one message body (without the `len` prefix).
    pub fn decode(body: &[u8]) -> Result<ControlMessage, ControlError> {
        if body.len() > MAX_CONTROL_LEN {
            return Err(ControlError::TooLong);
        }
        let mut r = Reader::new(body);
        let t = ControlError::Truncated;
        let msg = match r.u8().ok_or(t)? {
            HELLO => {
                let n = r.u16().ok_or(t)? as usize;
                if n > MAX_TICKET_LEN {
                    return Err(ControlError::Invalid("ticket too long"));
                }
                ControlMessage::Hello {
                    ticket: r.take(n).ok_or(t)?.to_vec(),
                }
            }
            ACCEPT => ControlMessage::Accept(Accept {
                session_id: r.u64().ok_or(t)?,
                data_port: r.u16().ok_or(t)?,
                idle_timeout_secs: r.u16().ok_or(t)?,
                max_paths: r.u8().ok_or(t)?,
                expires_at: r.u64().ok_or(t)?,
                backup: {
                    let n = r.u8().ok_or(t)? as usize;
                    if n > MAX_NODE_ID {
                        return Err(ControlError::Invalid("backup node id too long"));
                    }
                    let id = std::str::from_utf8(r.take(n).ok_or(t)?)
                        .map_err(|_| ControlError::Invalid("backup node id is not UTF-8"))?;
                    if !id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    {
                        return Err(ControlError::Invalid("backup node id has bad characters"));
                    }
                    id.to_owned()
                },
            }),
            REJECT => {
                let raw = r.u16().ok_or(t)?;
                let n = r.u16().ok_or(t)? as usize;
                if n > MAX_MESSAGE {
                    return Err(ControlError::Invalid("message too long"));
                }
                let message = std::str::from_utf8(r.take(n).ok_or(t)?)
                    .map_err(|_| ControlError::Invalid("message is not UTF-8"))?
                    .to_owned();
                ControlMessage::Reject {
                    code: RejectCode::from_u16(raw),
                    message,
                }
            }
            other => return Err(ControlError::UnknownType(other)),
        };
        if !r.is_empty() {
            return Err(ControlError::Invalid("trailing bytes"));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_msg() -> impl Strategy<Value = ControlMessage> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..MAX_TICKET_LEN)
                .prop_map(|ticket| ControlMessage::Hello { ticket }),
            (
                any::<u64>(),
                any::<u16>(),
                any::<u16>(),
                any::<u8>(),
                any::<u64>(),
                "[a-z0-9-]{0,64}"
            )
                .prop_map(|(s, p, i, m, e, backup)| {
                    ControlMessage::Accept(Accept {
                        session_id: s,
                        data_port: p,
                        idle_timeout_secs: i,
                        max_paths: m,
                        expires_at: e,
                        backup,
                    })
                }),
            (1u16..=5, "[a-z ]{0,200}").prop_map(|(c, message)| ControlMessage::Reject {
                code: RejectCode::from_u16(c),
                message
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_msg()) {
            let bytes = m.encode();
            let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
            prop_assert_eq!(len, bytes.len() - 2);
            prop_assert_eq!(ControlMessage::decode(&bytes[2..]).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = ControlMessage::decode(&bytes);
        }
    }

    #[test]
    fn long_reject_message_is_cut_on_a_char_boundary() {
        let m = ControlMessage::Reject {
            code: RejectCode::Other,
            message: "é".repeat(1000),
        };
        let bytes = m.encode();
        let ControlMessage::Reject { message, .. } = ControlMessage::decode(&bytes[2..]).unwrap()
        else {
            panic!()
        };
        assert_eq!(message.len(), 1024);
    }

    #[test]
    fn protocol_md_accept_example() {
        let m = ControlMessage::Accept(Accept {
            session_id: 0x0102030405060708,
            data_port: 443,
            idle_timeout_secs: 60,
            max_paths: 2,
            expires_at: 1_700_003_600,
            backup: "n-2".into(),
        });
        let hex: Vec<String> = m.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "00 1a 02 01 02 03 04 05 06 07 08 01 bb 00 3c 02 00 00 00 00 65 53 ff 10 03 6e 2d 32"
        );
    }
}
