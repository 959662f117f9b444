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
/// Role claim of administrators (granted with `plg-billing account grant-admin`).
pub const ROLE_ADMIN: &str = "admin";

/// Claims carried in an access token.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// Account id, as a decimal string (JWT `sub` is a string).
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub role: String,
    /// Refresh-token family (one login on one device); revoking it kills this token too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
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
        sid: Option<&str>,
        now: u64,
        ttl_secs: u64,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            sub: account_id.to_string(),
            iat: now,
            exp: now + ttl_secs,
            role: role.into(),
            sid: sid.map(str::to_owned),
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

/// The account behind a valid `Authorization: Bearer <jwt>` header, checked against the
/// database on every request: the account exists and is not banned (403 otherwise), the
/// token was issued after the last password change / "log out everywhere", and its login
/// (refresh family) was not logged out.
#[derive(Debug, Clone)]
pub struct AuthAccount {
    /// Account id from the token's `sub`.
    pub account_id: i64,
    /// Current role from the database.
    pub role: String,
    /// Refresh family of the token, if any.
    pub sid: Option<String>,
}

/// An [`AuthAccount`] whose token and database row both say `admin`.
#[derive(Debug, Clone)]
pub struct AdminAccount(pub AuthAccount);

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
        let account_id: i64 = claims.sub.parse().map_err(|_| ApiError::InvalidToken)?;
        let row: Option<(i64, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT a.banned, a.role, a.tokens_valid_after, f.revoked_at \
             FROM accounts a LEFT JOIN auth_families f ON f.id = $2 AND f.account_id = a.id \
             WHERE a.id = $1",
        )
        .bind(account_id)
        .bind(claims.sid.as_deref().unwrap_or(""))
        .fetch_optional(billing.db())
        .await?;
        let Some((banned, role, valid_after, revoked_at)) = row else {
            return Err(ApiError::InvalidToken);
        };
        if banned != 0 {
            return Err(ApiError::AccountBanned);
        }
        if (claims.iat as i64) < valid_after || revoked_at.is_some() {
            return Err(ApiError::InvalidToken);
        }
        Ok(AuthAccount {
            account_id,
            role,
            sid: claims.sid,
        })
    }
}

impl FromRequestParts<Billing> for AdminAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, billing: &Billing) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::InvalidToken)?;
        let claims = billing.jwt().verify(token)?;
        let account = AuthAccount::from_request_parts(parts, billing).await?;
        // Both: the role in the token (so a user token can't be replayed at admin routes
        // after a promotion without logging in again) and the current role (so a demotion
        // takes effect at once).
        if claims.role != ROLE_ADMIN || account.role != ROLE_ADMIN {
            return Err(ApiError::Forbidden);
        }
        Ok(AdminAccount(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let now = crate::db::now_secs() as u64;
        let t = keys.issue(42, ROLE_USER, Some("fam"), now, 3600).unwrap();
        let c = keys.verify(&t).unwrap();
        assert_eq!(c.sub, "42");
        assert_eq!(c.role, "user");
        assert_eq!(c.sid.as_deref(), Some("fam"));
        // Expired.
        let old = keys.issue(42, ROLE_USER, None, now - 7200, 3600).unwrap();
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
