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

impl From<BillingError> for CmdError {
    fn from(e: BillingError) -> Self {
        match &e {
            BillingError::Api { code, .. } => CmdError::new(code, e.to_string()),
            BillingError::Unreachable { .. } => CmdError::new("billing_unreachable", e.to_string()),
            BillingError::Protocol(_) => CmdError::new("billing_protocol", e.to_string()),
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
        let code = match e.downcast_ref::<BillingError>() {
            Some(BillingError::Api { code, .. }) => code.as_str(),
            Some(BillingError::Unreachable { .. }) => "billing_unreachable",
            _ => "failed",
        };
        CmdError::new(code, format!("{e:#}"))
    }
}
