//! Access tokens: HS256 JWTs signed with a secret generated on first start, and the
//! `Authorization: Bearer` extractor for account routes.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Billing;
use crate::error::ApiError;

/// Role claim of ordinary accounts.
pub const ROLE_USER: &str = "user";

/// Claims carried in an access token.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// Account id, as a decimal string (JWT `sub` is a string).
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub role: String,
}

/// HS256 keys derived from the stored secret.
pub(crate) struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKeys(***)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Issues a token for `account_id`, valid `ttl_secs` from `now`.
    pub fn issue(
        &self,
        account_id: i64,
        role: &str,
        now: u64,
        ttl_secs: u64,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            sub: account_id.to_string(),
            iat: now,
            exp: now + ttl_secs,
            role: role.into(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Checks signature and expiry; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                tracing::debug!(error = %e, "access token refused");
                ApiError::InvalidToken
            })
    }
}

/// The account behind a valid `Authorization: Bearer <jwt>` header.
#[derive(Debug, Clone, Copy)]
pub struct AuthAccount {
    /// Account id from the token's `sub`.
    pub account_id: i64,
}

/// Extracts the token from an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<Billing> for AuthAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, billing: &Billing) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::InvalidToken)?;
        let claims = billing.jwt().verify(token)?;
        if claims.role != ROLE_USER {
            return Err(ApiError::InvalidToken);
        }
        let account_id = claims.sub.parse().map_err(|_| ApiError::InvalidToken)?;
        Ok(AuthAccount { account_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let now = crate::db::now_secs() as u64;
        let t = keys.issue(42, ROLE_USER, now, 3600).unwrap();
        let c = keys.verify(&t).unwrap();
        assert_eq!(c.sub, "42");
        assert_eq!(c.role, "user");
        // Expired.
        let old = keys.issue(42, ROLE_USER, now - 7200, 3600).unwrap();
        assert!(keys.verify(&old).is_err());
        // Other secret.
        let other = JwtKeys::new(b"another secret, 32 bytes long!!!");
        assert!(other.verify(&t).is_err());
        // Tampered.
        let mut bad = t.clone();
        bad.pop();
        assert!(keys.verify(&bad).is_err());
    }
}
