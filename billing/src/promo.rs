//! Promo codes: N days of service, a maximum number of uses, an optional expiry; each
//! account redeems a code once. Redemption is one transaction: a conditional increment of
//! `uses` (so concurrent redeemers can't exceed `max_uses`), the per-account redemption
//! row (primary key), and the subscription extension.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::Billing;
use crate::auth::{AdminAccount, AuthAccount};
use crate::db::now_secs;
use crate::error::{ApiError, ApiJson};
use crate::plans::{Change, SubscriptionView};
use crate::sessions::Page;

fn normalize(code: &str) -> Result<String, ApiError> {
    let code = code.trim().to_uppercase();
    if code.is_empty()
        || code.len() > 64
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request(
            "invalid_promo_code",
            "a promo code is 1-64 chars of [A-Z0-9_-]",
        ));
    }
    Ok(code)
}

#[derive(Deserialize)]
pub(crate) struct Redeem {
    code: String,
}

/// `POST /v1/promo/redeem`.
pub(crate) async fn redeem(
    State(billing): State<Billing>,
    auth: AuthAccount,
    ApiJson(req): ApiJson<Redeem>,
) -> Result<Json<Option<SubscriptionView>>, ApiError> {
    let code = normalize(&req.code)?;
    let now = now_secs();
    let mut tx = billing.db().begin().await?;
    sqlx::query("UPDATE accounts SET lock_seq = lock_seq + 1 WHERE id = $1")
        .bind(auth.account_id)
        .execute(&mut *tx)
        .await?;
    let already: Option<(i64,)> = sqlx::query_as(
        "SELECT created_at FROM promo_redemptions WHERE code = $1 AND account_id = $2",
    )
    .bind(&code)
    .bind(auth.account_id)
    .fetch_optional(&mut *tx)
    .await?;
    if already.is_some() {
        return Err(ApiError::conflict(
            "promo_already_redeemed",
            "this account already redeemed this code",
        ));
    }
    let claimed: Option<(i64,)> = sqlx::query_as(
        "UPDATE promo_codes SET uses = uses + 1 \
         WHERE code = $1 AND disabled = 0 AND uses < max_uses \
         AND (expires_at IS NULL OR expires_at > $2) RETURNING days",
    )
    .bind(&code)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((days,)) = claimed else {
        let exists: Option<(i64,)> = sqlx::query_as("SELECT days FROM promo_codes WHERE code = $1")
            .bind(&code)
            .fetch_optional(&mut *tx)
            .await?;
        return Err(match exists {
            None => ApiError::not_found("unknown_promo_code", "no such promo code"),
            Some(_) => ApiError::other(
                StatusCode::GONE,
                "promo_unavailable",
                "this promo code is expired, used up or disabled",
            ),
        });
    };
    let inserted = sqlx::query(
        "INSERT INTO promo_redemptions (code, account_id, created_at) VALUES ($1, $2, $3)",
    )
    .bind(&code)
    .bind(auth.account_id)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::conflict(
                "promo_already_redeemed",
                "this account already redeemed this code",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    crate::plans::extend(
        &mut tx,
        auth.account_id,
        None,
        days * 86_400,
        Change::Promo,
        Some(&code),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(account = auth.account_id, code = %code, days, "promo code redeemed");
    Ok(Json(
        crate::plans::load(billing.db(), &billing.config().plans, auth.account_id).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPromo {
    /// Omit to generate one.
    #[serde(default)]
    code: Option<String>,
    days: i64,
    max_uses: i64,
    #[serde(default)]
    expires_at: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct PromoView {
    code: String,
    days: i64,
    max_uses: i64,
    uses: i64,
    expires_at: Option<i64>,
    disabled: bool,
    created_at: i64,
}

type PromoRow = (String, i64, i64, i64, Option<i64>, i64, i64);

fn promo_view(
    (code, days, max_uses, uses, expires_at, disabled, created_at): PromoRow,
) -> PromoView {
    PromoView {
        code,
        days,
        max_uses,
        uses,
        expires_at,
        disabled: disabled != 0,
        created_at,
    }
}

const PROMO_COLUMNS: &str = "code, days, max_uses, uses, expires_at, disabled, created_at";

/// `POST /v1/admin/promo-codes`.
pub(crate) async fn admin_create(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    ApiJson(req): ApiJson<NewPromo>,
) -> Result<(StatusCode, Json<PromoView>), ApiError> {
    if !(1..=3660).contains(&req.days) || !(1..=1_000_000).contains(&req.max_uses) {
        return Err(ApiError::bad_request(
            "invalid_promo",
            "days must be 1..=3660 and max_uses 1..=1000000",
        ));
    }
    let code = match &req.code {
        Some(c) => normalize(c)?,
        None => crate::hex(&crate::random_bytes(6)).to_uppercase(),
    };
    let now = now_secs();
    let done = sqlx::query(
        "INSERT INTO promo_codes (code, days, max_uses, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&code)
    .bind(req.days)
    .bind(req.max_uses)
    .bind(req.expires_at)
    .bind(now)
    .execute(billing.db())
    .await;
    match done {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::conflict("promo_code_taken", "this code exists"));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(code = %code, days = req.days, max_uses = req.max_uses, "promo code created");
    Ok((
        StatusCode::CREATED,
        Json(PromoView {
            code,
            days: req.days,
            max_uses: req.max_uses,
            uses: 0,
            expires_at: req.expires_at,
            disabled: false,
            created_at: now,
        }),
    ))
}

#[derive(Serialize)]
pub(crate) struct PromoList {
    promo_codes: Vec<PromoView>,
    total: i64,
}

/// `GET /v1/admin/promo-codes`.
pub(crate) async fn admin_list(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Query(page): Query<Page>,
) -> Result<Json<PromoList>, ApiError> {
    let (limit, offset) = page.clamp();
    let rows: Vec<PromoRow> = sqlx::query_as(&format!(
        "SELECT {PROMO_COLUMNS} FROM promo_codes ORDER BY created_at DESC, code LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(billing.db())
    .await?;
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM promo_codes")
        .fetch_one(billing.db())
        .await?;
    Ok(Json(PromoList {
        promo_codes: rows.into_iter().map(promo_view).collect(),
        total,
    }))
}

/// `DELETE /v1/admin/promo-codes/{code}`: disables the code (redemptions stay recorded).
pub(crate) async fn admin_disable(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(code): Path<String>,
) -> Result<StatusCode, ApiError> {
    let code = normalize(&code)?;
    let done = sqlx::query("UPDATE promo_codes SET disabled = 1 WHERE code = $1")
        .bind(&code)
        .execute(billing.db())
        .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::not_found(
            "unknown_promo_code",
            "no such promo code",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
