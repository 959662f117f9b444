//! The one error type every command returns: a stable code for the UI to branch on and a
//! sentence for the gamer. It never carries a password or a token.

use plg_client::BillingError;
use serde::Serialize;
use ts_rs::TS;

/// A command failed.
#[derive(Debug, Clone, Serialize, TS, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct CmdError {
    /// Stable code, e.g. `not_signed_in`, `invalid_credentials`, `no_active_plan`.
    pub code: String,
    /// What happened and what to do, for the gamer.
    pub message: String,
}

impl CmdError {
    /// An error with this code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        CmdError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The caller is not signed in.
    pub fn not_signed_in() -> Self {
        Self::new("not_signed_in", "sign in first")
    }

    /// Bad arguments from the frontend.
    pub fn bad_args(e: impl std::fmt::Display) -> Self {
        Self::new("bad_arguments", format!("bad arguments: {e}"))
    }
}

/// What the gamer reads when billing cannot be reached (the library's error chain goes to the
/// log, not the screen).
pub const UNREACHABLE: &str =
    "Can't reach the PLG service. Check your internet connection; the app keeps trying.";

impl From<BillingError> for CmdError {
    fn from(e: BillingError) -> Self {
        match e {
            // Billing's own sentence, without the code and HTTP status around it.
            BillingError::Api { code, message, .. } => CmdError::new(&code, message),
            BillingError::Unreachable { url, source } => {
                tracing::warn!(%url, error = %source, "billing unreachable");
                CmdError::new("billing_unreachable", UNREACHABLE)
            }
            BillingError::Protocol(detail) => {
                tracing::warn!(%detail, "unexpected answer from billing");
                CmdError::new(
                    "billing_protocol",
                    "The PLG service answered something this app does not understand: update the app.",
                )
            }
        }
    }
}

impl From<plg_client::ConnectError> for CmdError {
    fn from(e: plg_client::ConnectError) -> Self {
        CmdError::new(e.code(), e.to_string())
    }
}

impl From<anyhow::Error> for CmdError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast_ref::<BillingError>() {
            Some(BillingError::Api { code, message, .. }) => CmdError::new(code, message.clone()),
            Some(BillingError::Unreachable { .. }) => {
                tracing::warn!(error = %format!("{e:#}"), "billing unreachable");
                CmdError::new("billing_unreachable", UNREACHABLE)
            }
            _ => CmdError::new("failed", format!("{e:#}")),
        }
    }
}
