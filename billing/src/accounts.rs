//! Accounts: registration, login, bans. Passwords are argon2id PHC strings.

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

use crate::Billing;
use crate::auth::ROLE_USER;
use crate::db::now_secs;
use crate::error::{ApiError, ApiJson};

const MAX_EMAIL_LEN: usize = 254;
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_CHARS: usize = 128;

/// Trims and lowercases an email and checks its rough shape.
pub(crate) fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let invalid = || ApiError::bad_request("invalid_email", "email address is not valid");
    if email.len() > MAX_EMAIL_LEN || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    match email.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !local.contains('@') =>
        {
            Ok(email)
        }
        _ => Err(invalid()),
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
        return Err(ApiError::bad_request(
            "weak_password",
            format!("password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Hashes a password with argon2id (default parameters) and a random salt.
pub(crate) fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&crate::random_bytes(16))
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string())
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .and_then(|h| Argon2::default().verify_password(password.as_bytes(), &h))
        .is_ok()
}

/// Argon2 is deliberately slow: keep it off the async workers.
async fn verify_blocking(password: String, phc: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(|e| ApiError::Internal(e.into()))
}

#[derive(Deserialize)]
pub(crate) struct Credentials {
    email: String,
    password: String,
}

#[derive(Serialize)]
pub(crate) struct Registered {
    account_id: i64,
    email: String,
}

/// `POST /v1/accounts`.
pub(crate) async fn register(
    State(billing): State<Billing>,
    ApiJson(req): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    let email = normalize_email(&req.email)?;
    check_password(&req.password)?;
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    let inserted: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "INSERT INTO accounts (email, password_hash, role, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )
    .bind(&email)
    .bind(&hash)
    .bind(ROLE_USER)
    .bind(now_secs())
    .fetch_one(billing.db())
    .await;
    match inserted {
        Ok((account_id,)) => {
            tracing::info!(account = account_id, "account registered");
            Ok((StatusCode::CREATED, Json(Registered { account_id, email })))
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::EmailTaken),
        Err(e) => Err(e.into()),
    }
}

#[derive(Serialize)]
pub(crate) struct LoggedIn {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// `POST /v1/auth/login`.
pub(crate) async fn login(
    State(billing): State<Billing>,
    ApiJson(req): ApiJson<Credentials>,
) -> Result<Json<LoggedIn>, ApiError> {
    // An unparseable email can't exist; treat it like an unknown one (same answer, same cost).
    let email = normalize_email(&req.email).unwrap_or_default();
    let row: Option<(i64, String, String, bool)> =
        sqlx::query_as("SELECT id, password_hash, role, banned FROM accounts WHERE email = $1")
            .bind(&email)
            .fetch_optional(billing.db())
            .await?;
    let Some((account_id, phc, role, banned)) = row else {
        // Spend the same argon2 time as for a real account so timing doesn't reveal emails.
        verify_blocking(req.password, billing.dummy_password_hash().to_owned()).await?;
        return Err(ApiError::InvalidCredentials);
    };
    if !verify_blocking(req.password, phc).await? {
        tracing::info!(account = account_id, "login refused: wrong password");
        return Err(ApiError::InvalidCredentials);
    }
    // Only someone who knows the password learns about the ban.
    if banned {
        return Err(ApiError::AccountBanned);
    }
    let ttl = billing.config().access_token_ttl_secs;
    let access_token = billing
        .jwt()
        .issue(account_id, &role, now_secs() as u64, ttl)?;
    tracing::info!(account = account_id, "login");
    Ok(Json(LoggedIn {
        access_token,
        token_type: "Bearer",
        expires_in: ttl,
    }))
}

/// Whether the account exists and is not banned.
pub(crate) async fn check_active(db: &SqlitePool, account_id: i64) -> Result<(), ApiError> {
    let row: Option<(bool,)> = sqlx::query_as("SELECT banned FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(db)
        .await?;
    match row {
        None => Err(ApiError::InvalidToken),
        Some((true,)) => Err(ApiError::AccountBanned),
        Some((false,)) => Ok(()),
    }
}

/// Sets or clears the ban flag; errors if no account has that email.
pub(crate) async fn set_banned(db: &SqlitePool, email: &str, banned: bool) -> anyhow::Result<()> {
    let email = normalize_email(email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let done = sqlx::query("UPDATE accounts SET banned = $1 WHERE email = $2")
        .bind(banned)
        .bind(&email)
        .execute(db)
        .await?;
    anyhow::ensure!(done.rows_affected() == 1, "no account with email {email}");
    tracing::info!(email = %email, banned, "account ban flag changed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rules() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "a b@example.com",
            "a@b@c",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn password_rules_and_hashing() {
        assert!(check_password("short").is_err());
        assert!(check_password(&"x".repeat(129)).is_err());
        assert!(check_password("longenough").is_ok());
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse!", &phc));
    }
}
