//! Ticket renewal: before a running session's ticket expires, ask billing for a fresh ticket
//! for the same session and present it on the open control connection ([`in_place`]: nothing
//! moves, the game server keeps seeing the same source). If that fails (an older billing or
//! node, or the session is gone), fall back to a new session that the proxy switches onto
//! ([`renew`]), so a long match outlives the ticket either way.

use anyhow::{Context, Result};

use crate::billing::{BillingClient, BillingError, NodeInfo, SessionGrant};
use crate::tunnel::Tunnel;

/// Fraction of a ticket's lifetime after which it is renewed.
pub const RENEW_AT: f64 = 0.8;
/// Renew at least this many seconds before expiry (short tickets).
pub const MIN_MARGIN_SECS: u64 = 20;

/// Unix second at which to renew a ticket issued at `issued` that expires at `expires`.
pub fn renew_at(issued: u64, expires: u64) -> u64 {
    let life = expires.saturating_sub(issued);
    let at = issued + (life as f64 * RENEW_AT) as u64;
    at.min(expires.saturating_sub(MIN_MARGIN_SECS)).max(issued)
}

/// Renews `session_id` in place on `control`, the node's open control connection; returns the
/// new grant and its ticket.
pub async fn in_place(
    billing: &BillingClient,
    control: &quinn::Connection,
    session_id: &str,
) -> Result<(SessionGrant, Vec<u8>)> {
    let grant = billing
        .renew_session(session_id)
        .await
        .context("asking billing to renew the session ticket")?;
    let ticket = grant.ticket_bytes()?;
    Tunnel::renew_on(control, &ticket)
        .await
        .context("presenting the renewed ticket to the node")?;
    Ok((grant, ticket))
}

/// A renewed session, ready to be switched to.
#[derive(Debug)]
pub struct Renewed {
    /// The new grant.
    pub grant: SessionGrant,
    /// The node the new session is on.
    pub node: NodeInfo,
    /// The new session.
    pub tunnel: Tunnel,
}

/// Gets a fresh ticket for `game` and opens it on `prefer` (if billing still offers it) or
/// the first node that answers. If the plan's session limit is reached, the old session
/// (`old_session`) is stopped in billing first; otherwise it is stopped once the new one is up.
pub async fn renew(
    billing: &BillingClient,
    ca_pem: &str,
    game: &str,
    prefer: &str,
    old_session: &str,
) -> Result<Renewed> {
    let grant = match billing.request_session(game).await {
        Err(BillingError::Api { code, .. }) if code == "session_limit_reached" => {
            billing
                .stop_session(old_session)
                .await
                .context("ending the old session to make room for the renewed one")?;
            billing
                .request_session(game)
                .await
                .context("requesting a fresh ticket")?
        }
        other => other.context("requesting a fresh ticket")?,
    };
    let ticket = grant.ticket_bytes()?;
    let mut order: Vec<&NodeInfo> = grant.nodes.iter().filter(|n| n.id == prefer).collect();
    order.extend(grant.nodes.iter().filter(|n| n.id != prefer));
    let mut last = None;
    for node in order {
        let Ok(addr) = node.control_addr.parse() else {
            continue;
        };
        match Tunnel::open(addr, &node.server_name, ca_pem, &ticket).await {
            Ok(tunnel) => {
                // Best effort: the old session ends by itself at expiry anyway.
                let _ = billing.stop_session(old_session).await;
                let node = node.clone();
                return Ok(Renewed {
                    grant,
                    node,
                    tunnel,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => anyhow::Error::new(e).context("opening the renewed session"),
        None => anyhow::anyhow!("billing offered no relay node for the renewed session"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_80_percent_with_a_margin() {
        // Two-hour ticket: renew after 96 minutes.
        assert_eq!(renew_at(1000, 1000 + 7200), 1000 + 5760);
        // One-minute ticket: 48 s would leave 12 s, less than the margin: renew at 40 s.
        assert_eq!(renew_at(1000, 1060), 1040);
        // Already (nearly) expired: renew now.
        assert_eq!(renew_at(1000, 1005), 1000);
        assert_eq!(renew_at(1000, 900), 1000);
    }
}
