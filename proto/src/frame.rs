//! Data-plane frames: a 20-byte cleartext header followed by an AEAD-sealed body.
//!
//! ```text
//! 0       1       2       3       4               12              20
//! +-------+-------+-------+-------+---------------+---------------+-----------------+-----+
//! |version| type  | flags | path  |  session id   |   sequence    | sealed body ... | tag |
//! +-------+-------+-------+-------+---------------+---------------+-----------------+-----+
//! ```
//! See `docs/protocol.md` § Frames for the bodies.

use std::net::{IpAddr, SocketAddr};

use crate::codec::{Reader, Writer};

/// Protocol version carried in every header.
pub const PROTOCOL_VERSION: u8 = 1;
/// Cleartext header length.
pub const HEADER_LEN: usize = 20;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Largest datagram either side sends or accepts.
pub const MAX_DATAGRAM: usize = 2048;
/// Bytes a data frame adds around the game payload (header, flow id, tag).
pub const DATA_OVERHEAD: usize = HEADER_LEN + 4 + TAG_LEN;
/// Largest game payload a data frame can carry.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - DATA_OVERHEAD;

/// Frame type codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Game payload of one flow.
    Data = 0x01,
    /// Declares a flow's destination.
    FlowOpen = 0x02,
    /// RTT probe.
    Ping = 0x03,
    /// Answer to a ping.
    Pong = 0x04,
    /// Ends the session.
    Close = 0x05,
    /// Reports a refused or failed operation.
    Error = 0x06,
    /// Client → node: which paths the node should send downstream frames on.
    Paths = 0x07,
}

impl FrameType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x01 => FrameType::Data,
            0x02 => FrameType::FlowOpen,
            0x03 => FrameType::Ping,
            0x04 => FrameType::Pong,
            0x05 => FrameType::Close,
            0x06 => FrameType::Error,
            0x07 => FrameType::Paths,
            _ => return None,
        })
    }
}

/// The cleartext header; authenticated as associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Frame type.
    pub frame_type: FrameType,
    /// Reserved flag bits; zero in version 1.
    pub flags: u8,
    /// Which of the session's paths carried the frame.
    pub path: u8,
    /// Session the frame belongs to.
    pub session_id: u64,
    /// Per-direction sequence number, starting at 1; also the AEAD nonce.
    pub seq: u64,
}

/// Why a datagram could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a header plus tag, or a body shorter than its type needs.
    #[error("truncated frame")]
    Truncated,
    /// Larger than [`MAX_DATAGRAM`].
    #[error("frame too large")]
    TooLarge,
    /// Version other than [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// Unknown frame type code.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// Non-zero reserved flags.
    #[error("reserved flags set")]
    Flags,
    /// A body field holds an impossible value.
    #[error("invalid frame body: {0}")]
    Body(&'static str),
}

impl Header {
    /// Parses the cleartext header of a datagram (before authentication).
    pub fn decode(datagram: &[u8]) -> Result<Header, DecodeError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLarge);
        }
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(DecodeError::Truncated);
        }
        let mut r = Reader::new(datagram);
        let version = r.u8().ok_or(DecodeError::Truncated)?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(version));
        }
        let t = r.u8().ok_or(DecodeError::Truncated)?;
        let frame_type = FrameType::from_u8(t).ok_or(DecodeError::UnknownType(t))?;
        let flags = r.u8().ok_or(DecodeError::Truncated)?;
        if flags != 0 {
            return Err(DecodeError::Flags);
        }
        Ok(Header {
            frame_type,
            flags,
            path: r.u8().ok_or(DecodeError::Truncated)?,
            session_id: r.u64().ok_or(DecodeError::Truncated)?,
            seq: r.u64().ok_or(DecodeError::Truncated)?,
        })
    }

    /// Appends the 20 header bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.u8(PROTOCOL_VERSION);
        w.u8(self.frame_type as u8);
        w.u8(self.flags);
        w.u8(self.path);
        w.u64(self.session_id);
        w.u64(self.seq);
    }
}

/// Error codes carried by [`Frame::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The ticket does not allow this destination.
    DestinationNotAllowed = 1,
    /// Data for a flow that was never opened (or has expired).
    UnknownFlow = 2,
    /// The session has opened as many flows as it may.
    TooManyFlows = 3,
    /// The node could not reach the destination.
    UpstreamUnreachable = 4,
    /// The flow id is already open towards another destination.
    FlowConflict = 5,
    /// A code this implementation does not know.
    Other = 0xffff,
}

impl ErrorCode {
    /// Maps a wire code; unknown codes become [`ErrorCode::Other`].
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => ErrorCode::DestinationNotAllowed,
            2 => ErrorCode::UnknownFlow,
            3 => ErrorCode::TooManyFlows,
            4 => ErrorCode::UpstreamUnreachable,
            5 => ErrorCode::FlowConflict,
            _ => ErrorCode::Other,
        }
    }
}

/// A decoded frame body. `Data` borrows its payload from the datagram buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Game payload of flow `flow`.
    Data {
        /// Flow id chosen by the client.
        flow: u32,
        /// The game's UDP payload.
        payload: &'a [u8],
    },
    /// Opens flow `flow` towards `dst`.
    FlowOpen {
        /// Flow id chosen by the client.
        flow: u32,
        /// The game server's address.
        dst: SocketAddr,
    },
    /// RTT probe; the peer echoes both fields in a pong.
    Ping {
        /// Probe id.
        id: u64,
        /// Sender's timestamp in microseconds, opaque to the peer.
        timestamp_us: u64,
    },
    /// Echo of a ping.
    Pong {
        /// Probe id from the ping.
        id: u64,
        /// Timestamp from the ping.
        timestamp_us: u64,
    },
    /// Ends the session; `reason` is informational.
    Close {
        /// Reason code (0 = normal).
        reason: u16,
    },
    /// A refused or failed operation on `flow` (0 when no flow applies).
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// The raw wire code (kept so unknown codes can be logged).
        raw_code: u16,
        /// The flow concerned.
        flow: u32,
    },
    /// Client → node: send downstream frames on every path whose bit is set in `downstream`
    /// (bit `i` = path `i`) and that has a known client address. Zero means "the path of the
    /// client's most recent frame".
    Paths {
        /// Path bit mask.
        downstream: u8,
    },
}

impl Frame<'_> {
    /// The frame's type code.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Data { .. } => FrameType::Data,
            Frame::FlowOpen { .. } => FrameType::FlowOpen,
            Frame::Ping { .. } => FrameType::Ping,
            Frame::Pong { .. } => FrameType::Pong,
            Frame::Close { .. } => FrameType::Close,
            Frame::Error { .. } => FrameType::Error,
            Frame::Paths { .. } => FrameType::Paths,
        }
    }

    /// Appends the cleartext body to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        match *self {
            Frame::Data { flow, payload } => {
                w.u32(flow);
                w.bytes(payload);
            }
            Frame::FlowOpen { flow, dst } => {
                w.u32(flow);
                match dst.ip() {
                    IpAddr::V4(ip) => {
                        w.u8(4);
                        w.bytes(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        w.u8(6);
                        w.bytes(&ip.octets());
                    }
                }
                w.u16(dst.port());
            }
            Frame::Ping { id, timestamp_us } | Frame::Pong { id, timestamp_us } => {
                w.u64(id);
                w.u64(timestamp_us);
            }
            Frame::Close { reason } => w.u16(reason),
            Frame::Error { raw_code, flow, .. } => {
                w.u16(raw_code);
                w.u32(flow);
            }
            Frame::Paths { downstream } => w.u8(downstream),
        }
    }

    /// Parses a cleartext body of type `t`.
    pub fn decode_body(t: FrameType, body: &[u8]) -> Result<Frame<'_>, DecodeError> {
        let mut r = Reader::new(body);
        let short = DecodeError::Truncated;
        let frame = match t {
            FrameType::Data => {
                let flow = r.u32().ok_or(short)?;
                return Ok(Frame::Data {
                    flow,
                    payload: r.rest(),
                });
            }
            FrameType::FlowOpen => {
                let flow = r.u32().ok_or(short)?;
                let ip: IpAddr = match r.u8().ok_or(short)? {
                    4 => <[u8; 4]>::try_from(r.take(4).ok_or(short)?).unwrap().into(),
                    6 => <[u8; 16]>::try_from(r.take(16).ok_or(short)?)
                        .unwrap()
                        .into(),
                    _ => return Err(DecodeError::Body("bad address family")),
                };
                Frame::FlowOpen {
                    flow,
                    dst: SocketAddr::new(ip, r.u16().ok_or(short)?),
                }
            }
            FrameType::Ping => Frame::Ping {
                id: r.u64().ok_or(short)?,
                timestamp_us: r.u64().ok_or(short)?,
            },
            FrameType::Pong => Frame::Pong {
                id: r.u64().ok_or(short)?,
                timestamp_us: r.u64().ok_or(short)?,
            },
            FrameType::Close => Frame::Close {
                reason: r.u16().ok_or(short)?,
            },
            FrameType::Error => {
                let raw_code = r.u16().ok_or(short)?;
                Frame::Error {
                    code: ErrorCode::from_u16(raw_code),
                    raw_code,
                    flow: r.u32().ok_or(short)?,
                }
            }
            FrameType::Paths => Frame::Paths {
                downstream: r.u8().ok_or(short)?,
            },
        };
        if !r.is_empty() {
            return Err(DecodeError::Body("trailing bytes"));
        }
        Ok(frame)
    }

    /// Builds an error frame from a known code.
    pub fn error(code: ErrorCode, flow: u32) -> Frame<'static> {
        Frame::Error {
            code,
            raw_code: code as u16,
            flow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_frame(payload: Vec<u8>) -> impl Strategy<Value = Frame<'static>> {
        let payload: &'static [u8] = Box::leak(payload.into_boxed_slice());
        prop_oneof![
            any::<u32>().prop_map(move |flow| Frame::Data { flow, payload }),
            (any::<u32>(), any::<SocketAddr>())
                .prop_map(|(flow, dst)| Frame::FlowOpen { flow, dst }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(id, timestamp_us)| Frame::Ping { id, timestamp_us }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(id, timestamp_us)| Frame::Pong { id, timestamp_us }),
            any::<u16>().prop_map(|reason| Frame::Close { reason }),
            any::<u8>().prop_map(|downstream| Frame::Paths { downstream }),
            (any::<u16>(), any::<u32>()).prop_map(|(raw_code, flow)| Frame::Error {
                code: ErrorCode::from_u16(raw_code),
                raw_code,
                flow
            }),
        ]
    }

    proptest! {
        #[test]
        fn body_round_trip(f in proptest::collection::vec(any::<u8>(), 0..300).prop_flat_map(arb_frame)) {
            let mut buf = Vec::new();
            f.encode_body(&mut buf);
            let g = Frame::decode_body(f.frame_type(), &buf).unwrap();
            // IPv6 flow info and scope id are not carried on the wire.
            if let (Frame::FlowOpen { flow: a, dst: x }, Frame::FlowOpen { flow: b, dst: y }) = (f, g) {
                prop_assert_eq!(a, b);
                prop_assert_eq!(x.ip(), y.ip());
                prop_assert_eq!(x.port(), y.port());
            } else {
                prop_assert_eq!(f, g);
            }
        }

        #[test]
        fn header_round_trip(t in 1u8..=7, path: u8, session_id: u64, seq: u64) {
            let h = Header { frame_type: FrameType::from_u8(t).unwrap(), flags: 0, path, session_id, seq };
            let mut buf = Vec::new();
            h.encode(&mut buf);
            buf.extend_from_slice(&[0; TAG_LEN]);
            prop_assert_eq!(Header::decode(&buf).unwrap(), h);
        }

        #[test]
        fn arbitrary_bytes_never_panic(t in 0u8..=8, bytes in proptest::collection::vec(any::<u8>(), 0..2100)) {
            let _ = Header::decode(&bytes);
            if let Some(t) = FrameType::from_u8(t) {
                let _ = Frame::decode_body(t, &bytes);
            }
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let h = Header {
            frame_type: FrameType::Ping,
            flags: 0,
            path: 0,
            session_id: 1,
            seq: 1,
        };
        let mut buf = Vec::new();
        h.encode(&mut buf);
        buf.extend_from_slice(&[0; TAG_LEN]);
        assert!(Header::decode(&buf[..HEADER_LEN + TAG_LEN - 1]).is_err());
        let mut v = buf.clone();
        v[0] = 2;
        assert_eq!(Header::decode(&v), Err(DecodeError::Version(2)));
        let mut v = buf.clone();
        v[1] = 0x77;
        assert_eq!(Header::decode(&v), Err(DecodeError::UnknownType(0x77)));
        let mut v = buf.clone();
        v[2] = 1;
        assert_eq!(Header::decode(&v), Err(DecodeError::Flags));
        assert_eq!(
            Header::decode(&vec![1; MAX_DATAGRAM + 1]),
            Err(DecodeError::TooLarge)
        );
    }
}
