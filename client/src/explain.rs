//! What to do about a failure: each error the gamer can hit gets one sentence of advice.

use plg_proto::control::RejectCode;

use crate::billing::BillingError;
use crate::tunnel::TunnelError;

/// Advice for `err` (searched through its causes), if it is one we know.
pub fn advice(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(b) = cause.downcast_ref::<BillingError>() {
            return Some(billing(b));
        }
        if let Some(t) = cause.downcast_ref::<TunnelError>() {
            return Some(tunnel(t));
        }
    }
    None
}

fn billing(e: &BillingError) -> String {
    match e {
        BillingError::Unreachable { .. } => {
            "check your internet connection; if it works, billing may be down for a moment: try again in a minute (`plg status` shows which billing you use)".into()
        }
        BillingError::Api { code, .. } => match code.as_str() {
            "no_active_plan" => {
                "you have no active plan: `plg subscribe trial` starts the free trial, `plg subscribe` lists the plans; then run the command again".into()
            }
            "trial_used" => "the free trial can be used once per account: `plg subscribe` lists the plans to buy".into(),
            "unknown_plan" => "no such plan: `plg subscribe` lists them (trial, monthly, quarterly, yearly)".into(),
            "payments_unavailable" | "provider_unavailable" => {
                "payments are not available on this billing server right now: try again later or contact support".into()
            }
            "unknown_session" | "session_ended" | "session_expired" => {
                "that session is not open: `plg sessions` lists yours and their ids".into()
            }
            "invalid_token" => "your login is no longer valid: run `plg login` again".into(),
            "invalid_credentials" => "check the email and password (or sign up with `plg login --register`)".into(),
            "account_banned" => "this account is suspended: contact support".into(),
            "unknown_game" => "that game is not in the catalog: `plg games <name>` lists the slugs".into(),
            "game_not_ready" => "this game's server ranges are not verified yet, so it cannot be accelerated; pick another game".into(),
            "session_limit_reached" => "your plan's sessions are all in use: `plg sessions` lists them and `plg sessions --stop ID` frees one (or stop `plg connect` elsewhere)".into(),
            "rate_limited" => "too many requests: wait a minute and try again".into(),
            _ => "try again in a minute; if it keeps failing, contact support with the message above".into(),
        },
        BillingError::Protocol(_) => {
            "billing answered something this client does not understand: update plg".into()
        }
    }
}

fn tunnel(e: &TunnelError) -> String {
    match e {
        TunnelError::BadCa(_) => "the saved mesh certificate is damaged: run `plg login` again".into(),
        TunnelError::Connect { .. } => {
            "the relay node did not answer (node lost or a firewall blocks UDP): try again, or pick another node from `plg nodes` with --node".into()
        }
        TunnelError::Rejected { code, .. } => match code {
            RejectCode::TicketExpired => {
                "the session ticket expired (or this computer's clock is wrong): check the clock, then run `plg connect` again for a fresh ticket".into()
            }
            RejectCode::Unavailable => "the node is full or shutting down: try another one (`plg nodes`, then --node)".into(),
            RejectCode::InvalidTicket | RejectCode::MalformedTicket => {
                "the node does not trust this ticket (billing's keys changed?): run `plg login` again".into()
            }
            _ => "try again; if it keeps failing, pick another node with --node".into(),
        },
        TunnelError::Protocol(_) => "the node speaks another protocol version: update plg".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn advice_is_found_through_context() {
        let e = Err::<(), _>(BillingError::Api {
            status: 402,
            code: "no_active_plan".into(),
            message: "no plan".into(),
        })
        .context("requesting a session ticket")
        .unwrap_err();
        assert!(advice(&e).unwrap().contains("free trial"));
        let e = anyhow::Error::new(TunnelError::Rejected {
            code: RejectCode::TicketExpired,
            message: "expired".into(),
        });
        assert!(advice(&e).unwrap().contains("fresh ticket"));
        assert!(advice(&anyhow::anyhow!("something else")).is_none());
    }
}
