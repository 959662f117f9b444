//! The PLG relay mesh: membership and gossip over chitchat with an authenticated
//! transport, an RTT matrix, session records replicated across nodes, and exit selection.
//!
//! The pure parts (sealing, RTT estimation, records, selection, the parsed [`MeshView`])
//! take `now` and bytes and never touch a socket or a clock; [`Mesh`] is the tokio driver.
//! The design and the wire formats are described in `docs/mesh.md`.

mod clock;
pub mod fault;
mod memnet;
mod mesh;
mod node;
pub mod rtt;
pub mod seal;
mod selection;
mod session;
mod targets;
mod transport;
mod view;

pub use clock::WallClock;
pub use memnet::{MemoryNetwork, MemorySocket};
pub use mesh::{Mesh, MeshConfig, MeshHandle, StartError};
pub use node::{Health, InvalidValue, Load, NodeId, NodeInfo, NodeView};
pub use rtt::{RttConfig, RttMatrix, RttSummary};
pub use seal::GossipKey;
pub use selection::{Candidate, SelectionPolicy, clearly_better, cost, select_exits};
pub use session::{SessionRecord, SessionRoute};
pub use targets::{MAX_GOSSIPED_TARGETS, MAX_REPORTED_TARGETS, TARGET_TTL, TargetRtts};
pub use transport::{GossipCounters, GossipNetwork, GossipStats, GossipTransport};
pub use view::{MembershipChange, MeshView};
