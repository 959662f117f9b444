//! Accounts: registration, login, refresh-token rotation, logout, password change, `/me`,
//! bans and roles. Passwords are argon2id PHC strings.

use crate::Billing;
use crate::auth::{AuthAccount, ROLE_ADMIN, ROLE_USER};
use crate::db::{Pool, now_secs};
use crate::error::{ApiError, ApiJson, OptionalJson};
use crate::metrics::Metrics;
use crate::plans::SubscriptionView;
use crate::ratelimit::{ClientIp, Limit};
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

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
    /// The plan the account starts with (the trial when `trial_on_signup`), else `null`.
    subscription: Option<SubscriptionView>,
}

/// `POST /v1/accounts`.
pub(crate) async fn register(
    State(billing): State<Billing>,
    ip: ClientIp,
    ApiJson(req): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    billing.limiter().check_ip(Limit::RegisterIp, ip)?;
    let email = normalize_email(&req.email)?;
    check_password(&req.password)?;
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    let now = now_secs();
    let mut tx = billing.db().begin().await?;
    let inserted: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "INSERT INTO accounts (email, password_hash, role, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )
    .bind(&email)
    .bind(&hash)
    .bind(ROLE_USER)
    .bind(now)
    .fetch_one(&mut *tx)
    .await;
    let account_id = match inserted {
        Ok((id,)) => id,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::EmailTaken);
        }
        Err(e) => return Err(e.into()),
    };
    if billing.config().trial_on_signup {
        crate::plans::start_trial(&mut tx, &billing.config().plans, account_id, now).await?;
    }
    tx.commit().await?;
    tracing::info!(account = account_id, "account registered");
    let subscription =
        crate::plans::load(billing.db(), &billing.config().plans, account_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            account_id,
            email,
            subscription,
        }),
    ))
}

/// Tokens handed out by login, refresh and password change.
#[derive(Serialize)]
pub(crate) struct LoggedIn {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
    refresh_expires_in: u64,
    role: String,
}

/// Inserts a refresh token for `family` and signs an access token bound to it.
async fn issue_tokens(
    billing: &Billing,
    conn: &mut sqlx::AnyConnection,
    account_id: i64,
    role: &str,
    family: &str,
    now: i64,
) -> Result<LoggedIn, ApiError> {
    let config = billing.config();
    let refresh_token = crate::random_token();
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, account_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(crate::sha256_hex(&refresh_token))
    .bind(family)
    .bind(account_id)
    .bind(now)
    .bind(now + config.refresh_token_ttl_secs as i64)
    .execute(&mut *conn)
    .await?;
    let ttl = config.access_token_ttl_secs;
    let access_token = billing
        .jwt()
        .issue(account_id, role, Some(family), now as u64, ttl)?;
    Ok(LoggedIn {
        access_token,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token,
        refresh_expires_in: config.refresh_token_ttl_secs,
        role: role.to_owned(),
    })
}

/// Starts a new refresh family (one login) and issues its first tokens.
async fn new_login(billing: &Billing, account_id: i64, role: &str) -> Result<LoggedIn, ApiError> {
    let now = now_secs();
    let family = crate::hex(&crate::random_bytes(16));
    let mut tx = billing.db().begin().await?;
    sqlx::query("INSERT INTO auth_families (id, account_id, created_at) VALUES ($1, $2, $3)")
        .bind(&family)
        .bind(account_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let tokens = issue_tokens(billing, &mut tx, account_id, role, &family, now).await?;
    tx.commit().await?;
    Ok(tokens)
}

/// `POST /v1/auth/login`.
pub(crate) async fn login(
    State(billing): State<Billing>,
    ip: ClientIp,
    ApiJson(req): ApiJson<Credentials>,
) -> Result<Json<LoggedIn>, ApiError> {
    billing.limiter().check_ip(Limit::LoginIp, ip)?;
    // An unparseable email can't exist; treat it like an unknown one (same answer, same cost).
    let email = normalize_email(&req.email).unwrap_or_default();
    billing.limiter().check(Limit::LoginAccount, &email)?;
    let row: Option<(i64, String, String, i64)> =
        sqlx::query_as("SELECT id, password_hash, role, banned FROM accounts WHERE email = $1")
            .bind(&email)
            .fetch_optional(billing.db())
            .await?;
    let Some((account_id, phc, role, banned)) = row else {
        // Spend the same argon2 time as for a real account so timing doesn't reveal emails.
        verify_blocking(req.password, billing.dummy_password_hash().to_owned()).await?;
        Metrics::inc(&billing.metrics().logins_failed);
        return Err(ApiError::InvalidCredentials);
    };
    if !verify_blocking(req.password, phc).await? {
        tracing::info!(account = account_id, "login refused: wrong password");
        Metrics::inc(&billing.metrics().logins_failed);
        return Err(ApiError::InvalidCredentials);
    }
    // Only someone who knows the password learns about the ban.
    if banned != 0 {
        return Err(ApiError::AccountBanned);
    }
    let tokens = new_login(&billing, account_id, &role).await?;
    Metrics::inc(&billing.metrics().logins_ok);
    tracing::info!(account = account_id, "login");
    Ok(Json(tokens))
}

#[derive(Deserialize)]
pub(crate) struct RefreshRequest {
    refresh_token: String,
}

fn invalid_refresh() -> ApiError {
    ApiError::other(
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
        "refresh token is unknown, expired or revoked",
    )
}

/// `POST /v1/auth/refresh`: rotates the refresh token. Presenting an already-used one means
/// it leaked (or the client raced itself): the whole family is revoked.
pub(crate) async fn refresh(
    State(billing): State<Billing>,
    ip: ClientIp,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<LoggedIn>, ApiError> {
    billing.limiter().check_ip(Limit::LoginIp, ip)?;
    let hash = crate::sha256_hex(&req.refresh_token);
    let now = now_secs();
    let mut tx = billing.db().begin().await?;
    let claimed: Option<(String, i64)> = sqlx::query_as(
        "UPDATE refresh_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
         RETURNING family_id, account_id",
    )
    .bind(now)
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((family, account_id)) = claimed else {
        let used: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT family_id, used_at FROM refresh_tokens WHERE token_hash = $1")
                .bind(&hash)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((family, Some(_))) = used {
            sqlx::query(
                "UPDATE auth_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(&family)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::warn!(family = %family, "refresh token reused: family revoked");
            return Err(ApiError::other(
                StatusCode::UNAUTHORIZED,
                "refresh_token_reused",
                "this refresh token was already used; every token of this login is revoked",
            ));
        }
        return Err(invalid_refresh());
    };
    let (revoked_at, banned, role): (Option<i64>, i64, String) = sqlx::query_as(
        "SELECT f.revoked_at, a.banned, a.role FROM auth_families f \
         JOIN accounts a ON a.id = f.account_id WHERE f.id = $1",
    )
    .bind(&family)
    .fetch_one(&mut *tx)
    .await?;
    if revoked_at.is_some() {
        return Err(invalid_refresh());
    }
    if banned != 0 {
        return Err(ApiError::AccountBanned);
    }
    let tokens = issue_tokens(&billing, &mut tx, account_id, &role, &family, now).await?;
    tx.commit().await?;
    Ok(Json(tokens))
}

/// Revokes one refresh family (one login).
async fn revoke_family(db: &Pool, family: &str) -> Result<(), ApiError> {
    sqlx::query("UPDATE auth_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_secs())
        .bind(family)
        .execute(db)
        .await?;
    Ok(())
}

/// Revokes every login of an account and every token issued before now.
pub(crate) async fn revoke_all(
    conn: &mut sqlx::AnyConnection,
    account_id: i64,
) -> Result<(), ApiError> {
    let now = now_secs();
    sqlx::query(
        "UPDATE auth_families SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE accounts SET tokens_valid_after = $1 WHERE id = $2")
        .bind(now)
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LogoutRequest {
    /// Log out every device, not just this one.
    all: bool,
}

/// `POST /v1/auth/logout` (access token): ends this login, or every login with `"all": true`.
pub(crate) async fn logout(
    State(billing): State<Billing>,
    auth: AuthAccount,
    OptionalJson(body): OptionalJson<LogoutRequest>,
) -> Result<StatusCode, ApiError> {
    let all = body.map(|b| b.all).unwrap_or(false);
    if all {
        let mut tx = billing.db().begin().await?;
        revoke_all(&mut tx, auth.account_id).await?;
        tx.commit().await?;
    } else if let Some(sid) = &auth.sid {
        revoke_family(billing.db(), sid).await?;
    }
    tracing::info!(account = auth.account_id, all, "logout");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/revoke` (no access token needed): revokes the login a refresh token
/// belongs to. Always 204, so it can't be used to probe tokens.
pub(crate) async fn revoke(
    State(billing): State<Billing>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let family: Option<(String,)> =
        sqlx::query_as("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(crate::sha256_hex(&req.refresh_token))
            .fetch_optional(billing.db())
            .await?;
    if let Some((family,)) = family {
        revoke_family(billing.db(), &family).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /v1/me/password`: logs out every other device and returns fresh tokens.
pub(crate) async fn change_password(
    State(billing): State<Billing>,
    auth: AuthAccount,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<Json<LoggedIn>, ApiError> {
    check_password(&req.new_password)?;
    let (phc,): (String,) = sqlx::query_as("SELECT password_hash FROM accounts WHERE id = $1")
        .bind(auth.account_id)
        .fetch_one(billing.db())
        .await?;
    if !verify_blocking(req.current_password, phc).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let new_password = req.new_password;
    let hash = tokio::task::spawn_blocking(move || hash_password(&new_password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    let mut tx = billing.db().begin().await?;
    sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
        .bind(&hash)
        .bind(auth.account_id)
        .execute(&mut *tx)
        .await?;
    revoke_all(&mut tx, auth.account_id).await?;
    tx.commit().await?;
    tracing::info!(account = auth.account_id, "password changed");
    Ok(Json(
        new_login(&billing, auth.account_id, &auth.role).await?,
    ))
}

/// Usage totals over an account's sessions.
#[derive(Serialize)]
pub(crate) struct Usage {
    sessions_total: i64,
    sessions_open: i64,
    seconds_total: i64,
    bytes_up: i64,
    bytes_down: i64,
    last_session_at: Option<i64>,
}

pub(crate) async fn usage(db: &Pool, account_id: i64) -> Result<Usage, ApiError> {
    let now = now_secs();
    let (sessions_total, sessions_open, seconds_total, bytes_up, bytes_down, last_session_at): (
        i64,
        i64,
        i64,
        i64,
        i64,
        Option<i64>,
    ) = sqlx::query_as(
        "SELECT COUNT(*), \
           CAST(COALESCE(SUM(CASE WHEN ended_at IS NULL AND expires_at > $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
           CAST(COALESCE(SUM(CASE WHEN ended_at IS NOT NULL THEN ended_at - created_at \
                             WHEN expires_at <= $2 THEN expires_at - created_at \
                             ELSE $2 - created_at END), 0) AS BIGINT), \
           CAST(COALESCE(SUM(bytes_up), 0) AS BIGINT), \
           CAST(COALESCE(SUM(bytes_down), 0) AS BIGINT), \
           MAX(created_at) \
         FROM sessions WHERE account_id = $1",
    )
    .bind(account_id)
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(Usage {
        sessions_total,
        sessions_open,
        seconds_total,
        bytes_up,
        bytes_down,
        last_session_at,
    })
}

#[derive(Serialize)]
pub(crate) struct Me {
    account_id: i64,
    email: String,
    role: String,
    created_at: i64,
    /// Current plan (any status), `null` if the account never had one.
    subscription: Option<SubscriptionView>,
    /// Whether the one-time trial can still be started.
    trial_available: bool,
    usage: Usage,
}

/// `GET /v1/me`.
pub(crate) async fn me(
    State(billing): State<Billing>,
    auth: AuthAccount,
) -> Result<Json<Me>, ApiError> {
    let (email, role, created_at, trial_used_at): (String, String, i64, Option<i64>) =
        sqlx::query_as("SELECT email, role, created_at, trial_used_at FROM accounts WHERE id = $1")
            .bind(auth.account_id)
            .fetch_one(billing.db())
            .await?;
    Ok(Json(Me {
        account_id: auth.account_id,
        email,
        role,
        created_at,
        subscription: crate::plans::load(billing.db(), &billing.config().plans, auth.account_id)
            .await?,
        trial_available: trial_used_at.is_none(),
        usage: usage(billing.db(), auth.account_id).await?,
    }))
}

/// Sets or clears the ban flag; a ban also revokes every login.
pub(crate) async fn set_banned_by_id(
    db: &Pool,
    account_id: i64,
    banned: bool,
) -> Result<(), ApiError> {
    let mut tx = db.begin().await?;
    let done = sqlx::query("UPDATE accounts SET banned = $1 WHERE id = $2")
        .bind(crate::db::flag(banned))
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::not_found("unknown_account", "no such account"));
    }
    if banned {
        revoke_all(&mut tx, account_id).await?;
    }
    tx.commit().await?;
    tracing::info!(account = account_id, banned, "account ban flag changed");
    Ok(())
}

/// The id of the account with this email.
pub(crate) async fn id_by_email(db: &Pool, email: &str) -> anyhow::Result<i64> {
    let email = normalize_email(email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM accounts WHERE email = $1")
        .bind(&email)
        .fetch_optional(db)
        .await?;
    row.map(|r| r.0)
        .ok_or_else(|| anyhow::anyhow!("no account with email {email}"))
}

/// Sets or clears the ban flag; errors if no account has that email.
pub(crate) async fn set_banned(db: &Pool, email: &str, banned: bool) -> anyhow::Result<()> {
    let id = id_by_email(db, email).await?;
    set_banned_by_id(db, id, banned)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Sets an account's role (`user` or `admin`); existing tokens keep their old role claim
/// until they expire, and admin routes check both.
pub(crate) async fn set_role(db: &Pool, email: &str, role: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        role == ROLE_USER || role == ROLE_ADMIN,
        "role must be user or admin"
    );
    let id = id_by_email(db, email).await?;
    sqlx::query("UPDATE accounts SET role = $1 WHERE id = $2")
        .bind(role)
        .bind(id)
        .execute(db)
        .await?;
    tracing::info!(account = id, role, "account role changed");
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
