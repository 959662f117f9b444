//! `plg-client`: the gamer's side. Logs in to billing, gets a signed ticket, opens a session
//! with a relay node over QUIC, and carries the game's UDP traffic through it.

pub mod bench;
pub mod billing;
pub mod capture;
pub mod conn;
pub mod connreset;
pub mod controller;
pub mod credentials;
pub mod dashboard;
pub mod detect;
pub mod explain;
pub mod probe;
pub mod proxy;
pub mod renew;
pub mod route;
pub mod tunnel;

pub use billing::{BillingClient, BillingError, NodeInfo, SessionGrant};
pub use controller::{
    CaptureMode, ConnectError, ConnectRequest, Controller, EndReason, Progress, RouteView,
    RttSummary, SessionEvent, SessionInfo, SessionReport,
};
pub use plg_proto::paths::Redundancy;
pub use proxy::{Failover, PathsView, Proxy, ProxyEvent, ProxyStats};
pub use tunnel::{Protection, Tunnel, TunnelError};

use anyhow::{Context, Result, bail};

/// Requests a ticket for `game` and opens a session with the first reachable candidate node
/// (or the one named `node_id`).
pub async fn open_session(
    billing: &BillingClient,
    ca_pem: &str,
    game: &str,
    node_id: Option<&str>,
) -> Result<(SessionGrant, NodeInfo, Tunnel)> {
    let grant = billing
        .request_session(game)
        .await
        .context("requesting a session ticket")?;
    let (node, tunnel) = open_granted(&grant, ca_pem, node_id).await?;
    Ok((grant, node, tunnel))
}

/// Opens a session with a ticket billing already granted: the first reachable candidate
/// node (or the one named `node_id`). Lets a UI show the route before connecting.
pub async fn open_granted(
    grant: &SessionGrant,
    ca_pem: &str,
    node_id: Option<&str>,
) -> Result<(NodeInfo, Tunnel)> {
    let ticket = grant.ticket_bytes()?;
    let candidates: Vec<&NodeInfo> = grant
        .nodes
        .iter()
        .filter(|n| node_id.is_none_or(|id| n.id == id))
        .collect();
    if candidates.is_empty() {
        match node_id {
            Some(id) => bail!("node {id} is not among the nodes billing offers for this session"),
            None => bail!("billing has no relay node online right now; try again in a minute"),
        }
    }
    let mut last = None;
    for node in candidates {
        let addr = node.control_addr.parse().with_context(|| {
            format!("node {} has a bad address {:?}", node.id, node.control_addr)
        })?;
        match Tunnel::open(addr, &node.server_name, ca_pem, &ticket).await {
            Ok(t) => return Ok((node.clone(), t)),
            Err(e @ TunnelError::Rejected { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(node = %node.id, error = %e, "node unreachable, trying the next");
                last = Some(e);
            }
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no node")))
}
