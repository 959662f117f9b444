//! The one HTTP error type: a stable `{"error": {"code", "message"}}` body, never SQL or
//! key material (internal details go to the log only).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An API failure, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body or a field is malformed (`code` says which rule).
    #[error("{message}")]
    BadRequest {
        /// Stable snake_case code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// Body over the size limit.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// Body is not declared as JSON.
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    /// Email already registered.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Unknown email or wrong password (deliberately indistinguishable).
    #[error("email or password is wrong")]
    InvalidCredentials,
    /// The account is banned.
    #[error("this account is banned")]
    AccountBanned,
    /// Missing, malformed, expired or forged access token.
    #[error("missing or invalid access token")]
    InvalidToken,
    /// No game with that slug.
    #[error("unknown game")]
    UnknownGame,
    /// The game is in the catalog but its server ranges are not verified yet.
    #[error(
        "{0}'s server addresses are not verified yet, so it can't be accelerated; try again after a catalog update"
    )]
    GameNotReady(String),
    /// Join token unknown, used or expired.
    #[error("join token is unknown, already used or expired")]
    InvalidJoinToken,
    /// Node secret unknown.
    #[error("missing or invalid node secret")]
    InvalidNodeSecret,
    /// No such route.
    #[error("no such endpoint")]
    NotFound,
    /// The account has no active plan (trial or paid).
    #[error("no active plan: start the trial or buy a plan")]
    NoActivePlan,
    /// The token is valid but its role may not do this.
    #[error("this action needs an admin account")]
    Forbidden,
    /// Too many requests from this client or for this account.
    #[error("too many requests, retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request would be allowed.
        retry_after_secs: u64,
    },
    /// Any other refusal with its own status and stable code.
    #[error("{message}")]
    Other {
        /// HTTP status.
        status: StatusCode,
        /// Stable snake_case code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// Our fault; the detail is logged, never returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A refusal with its own status and code.
    pub fn other(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Other {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 404 with a specific code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::other(StatusCode::NOT_FOUND, code, message)
    }

    /// A 409 with a specific code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::other(StatusCode::CONFLICT, code, message)
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::EmailTaken => StatusCode::CONFLICT,
            ApiError::InvalidCredentials
            | ApiError::InvalidToken
            | ApiError::InvalidJoinToken
            | ApiError::InvalidNodeSecret => StatusCode::UNAUTHORIZED,
            ApiError::AccountBanned => StatusCode::FORBIDDEN,
            ApiError::UnknownGame | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::GameNotReady(_) => StatusCode::CONFLICT,
            ApiError::NoActivePlan => StatusCode::PAYMENT_REQUIRED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Other { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::EmailTaken => "email_taken",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::AccountBanned => "account_banned",
            ApiError::InvalidToken => "invalid_token",
            ApiError::UnknownGame => "unknown_game",
            ApiError::GameNotReady(_) => "game_not_ready",
            ApiError::InvalidJoinToken => "invalid_join_token",
            ApiError::InvalidNodeSecret => "invalid_node_secret",
            ApiError::NotFound => "not_found",
            ApiError::NoActivePlan => "no_active_plan",
            ApiError::Forbidden => "forbidden",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Other { code, .. } => code,
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(e)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let status = self.status();
        let body = Body {
            error: Detail {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let ApiError::RateLimited { retry_after_secs } = &self {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
        resp
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s, so a malformed body still gets the JSON error
/// shape (axum's own rejection is plain text).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(from_json_rejection(rejection)),
        }
    }
}

/// A JSON body that may be absent (empty body or `null` → `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| match r.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::bad_request("bad_request", r.body_text()),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        serde_json::from_slice::<Option<T>>(&bytes)
            .map(OptionalJson)
            .map_err(|e| ApiError::bad_request("bad_request", e.to_string()))
    }
}

fn from_json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        _ => ApiError::bad_request("bad_request", rejection.body_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak() {
        let e = ApiError::from(anyhow::anyhow!(
            "UNIQUE constraint failed: secret_table.key"
        ));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.to_string(), "internal error");
    }
}
