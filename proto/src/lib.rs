//! PLG wire protocol, sans-IO: frame codec, AEAD sealing, replay window, tickets, control
//! messages and game-server probes. Nothing here touches a socket or a clock; callers pass
//! `now` in. The byte-level specification is `docs/protocol.md`.

mod codec;
pub mod control;
pub mod frame;
pub mod paths;
pub mod query;
pub mod replay;
pub mod session;
pub mod ticket;

pub use frame::{ErrorCode, Frame, FrameType, Header};
pub use session::{Role, Session};
pub use ticket::{Destination, Ticket, TicketError, TicketVerifier};
