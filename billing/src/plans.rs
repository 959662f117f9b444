//! Plans and subscriptions: the trial (once per account), paid periods, cancellation,
//! expiry. One `subscriptions` row per account; its status is derived from the times, so
//! nothing has to run at expiry: active (`period_end > now`, not cancelled), cancelled
//! (still works until `period_end`), expired. Every change is also written to
//! `subscription_events`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::Billing;
use crate::auth::AuthAccount;
use crate::config::{PlanTerms, Plans, parse_price_cents};
use crate::db::{Pool, now_secs};
use crate::error::ApiError;

/// A plan name as stored and as sent by clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Free trial.
    Trial,
    /// 30 days (by default).
    Monthly,
    /// 90 days.
    Quarterly,
    /// 365 days.
    Yearly,
}

impl Plan {
    /// All plans, in display order.
    pub const ALL: [Plan; 4] = [Plan::Trial, Plan::Monthly, Plan::Quarterly, Plan::Yearly];

    /// Stored / wire name.
    pub fn name(self) -> &'static str {
        match self {
            Plan::Trial => "trial",
            Plan::Monthly => "monthly",
            Plan::Quarterly => "quarterly",
            Plan::Yearly => "yearly",
        }
    }

    /// Parses a stored / wire name.
    pub fn parse(s: &str) -> Option<Plan> {
        Plan::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The ticket's `plan` byte (0 = trial, 1.. = paid tiers).
    pub fn ticket_code(self) -> u8 {
        match self {
            Plan::Trial => 0,
            Plan::Monthly => 1,
            Plan::Quarterly => 2,
            Plan::Yearly => 3,
        }
    }

    /// This plan's terms in the config.
    pub fn terms(self, plans: &Plans) -> &PlanTerms {
        match self {
            Plan::Trial => &plans.trial,
            Plan::Monthly => &plans.monthly,
            Plan::Quarterly => &plans.quarterly,
            Plan::Yearly => &plans.yearly,
        }
    }

    /// Price in cents, `None` for the trial.
    pub fn price_cents(self, plans: &Plans) -> Option<i64> {
        self.terms(plans)
            .price
            .as_deref()
            .and_then(|p| parse_price_cents(p).ok())
    }

    /// Seconds one purchase adds.
    pub fn seconds(self, plans: &Plans) -> i64 {
        i64::from(self.terms(plans).days) * 86_400
    }
}

/// What changed a subscription (stored in `subscription_events.kind`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Change {
    Trial,
    Payment,
    Promo,
    AdminGrant,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Trial => "trial",
            Change::Payment => "payment",
            Change::Promo => "promo",
            Change::AdminGrant => "admin_grant",
        }
    }
}

/// Status derived from the times.
pub(crate) fn status(period_end: i64, cancelled_at: Option<i64>, now: i64) -> &'static str {
    if period_end <= now {
        "expired"
    } else if cancelled_at.is_some() {
        "cancelled"
    } else {
        "active"
    }
}

/// Extends (or starts) the account's subscription by `seconds` from max(now, current end),
/// inside the caller's transaction. `plan = None` keeps the current plan while it runs
/// (promo codes, admin grants) and uses `monthly` terms otherwise. Clears a cancellation.
/// Returns the new period end.
pub(crate) async fn extend(
    conn: &mut sqlx::AnyConnection,
    account_id: i64,
    plan: Option<Plan>,
    seconds: i64,
    change: Change,
    reference: Option<&str>,
    now: i64,
) -> Result<(i64, Plan), ApiError> {
    let new_plan = plan.unwrap_or(Plan::Monthly).name();
    let keep_plan = i64::from(plan.is_none());
    let (period_end, plan_name): (i64, String) = sqlx::query_as(
        "INSERT INTO subscriptions (account_id, plan, started_at, period_end, cancelled_at, updated_at) \
         VALUES ($1, $2, $3, $3 + $4, NULL, $3) \
         ON CONFLICT (account_id) DO UPDATE SET \
           plan = CASE WHEN $5 = 1 AND subscriptions.period_end > $3 THEN subscriptions.plan \
                  ELSE excluded.plan END, \
           started_at = CASE WHEN subscriptions.period_end > $3 THEN subscriptions.started_at \
                        ELSE $3 END, \
           period_end = (CASE WHEN subscriptions.period_end > $3 THEN subscriptions.period_end \
                         ELSE $3 END) + $4, \
           cancelled_at = NULL, \
           updated_at = $3 \
         RETURNING period_end, plan",
    )
    .bind(account_id)
    .bind(new_plan)
    .bind(now)
    .bind(seconds)
    .bind(keep_plan)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO subscription_events (account_id, kind, plan, seconds, period_end, reference, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(account_id)
    .bind(change.name())
    .bind(&plan_name)
    .bind(seconds)
    .bind(period_end)
    .bind(reference)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let plan = Plan::parse(&plan_name).unwrap_or(Plan::Monthly);
    tracing::info!(
        account = account_id,
        change = change.name(),
        plan = plan.name(),
        period_end,
        "subscription extended"
    );
    Ok((period_end, plan))
}

/// Starts the trial if this account never had one. Race-safe: the conditional update of
/// `trial_used_at` succeeds for exactly one concurrent caller.
pub(crate) async fn start_trial(
    conn: &mut sqlx::AnyConnection,
    plans: &Plans,
    account_id: i64,
    now: i64,
) -> Result<i64, ApiError> {
    let claimed = sqlx::query(
        "UPDATE accounts SET trial_used_at = $1 WHERE id = $2 AND trial_used_at IS NULL",
    )
    .bind(now)
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    if claimed.rows_affected() != 1 {
        return Err(ApiError::conflict(
            "trial_used",
            "the free trial was already used on this account",
        ));
    }
    let (end, _) = extend(
        conn,
        account_id,
        Some(Plan::Trial),
        Plan::Trial.seconds(plans),
        Change::Trial,
        None,
        now,
    )
    .await?;
    Ok(end)
}

/// A subscription as shown to its owner and admins.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SubscriptionView {
    pub plan: String,
    pub status: &'static str,
    pub started_at: i64,
    pub period_end: i64,
    pub cancelled_at: Option<i64>,
    pub seconds_left: i64,
    pub max_sessions: u32,
}

pub(crate) type SubRow = (String, i64, i64, Option<i64>);

pub(crate) fn view(plans: &Plans, row: SubRow, now: i64) -> SubscriptionView {
    let (plan, started_at, period_end, cancelled_at) = row;
    let max_sessions = Plan::parse(&plan)
        .map(|p| p.terms(plans).max_sessions)
        .unwrap_or(1);
    SubscriptionView {
        status: status(period_end, cancelled_at, now),
        seconds_left: (period_end - now).max(0),
        plan,
        started_at,
        period_end,
        cancelled_at,
        max_sessions,
    }
}

/// The account's subscription row, whatever its status.
pub(crate) async fn load(
    db: &Pool,
    plans: &Plans,
    account_id: i64,
) -> Result<Option<SubscriptionView>, ApiError> {
    let row: Option<SubRow> = sqlx::query_as(
        "SELECT plan, started_at, period_end, cancelled_at FROM subscriptions WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| view(plans, r, now_secs())))
}

#[derive(Serialize)]
pub(crate) struct PlanView {
    name: &'static str,
    days: u32,
    price: Option<String>,
    price_cents: Option<i64>,
    currency: String,
    max_sessions: u32,
    path_limit: u8,
}

#[derive(Serialize)]
pub(crate) struct PlanList {
    plans: Vec<PlanView>,
}

/// `GET /v1/plans`: what is sold, at what price (public).
pub(crate) async fn list(State(billing): State<Billing>) -> Json<PlanList> {
    let plans = &billing.config().plans;
    Json(PlanList {
        plans: Plan::ALL
            .into_iter()
            .map(|p| {
                let t = p.terms(plans);
                PlanView {
                    name: p.name(),
                    days: t.days,
                    price: t.price.clone(),
                    price_cents: p.price_cents(plans),
                    currency: plans.currency.clone(),
                    max_sessions: t.max_sessions,
                    path_limit: t.path_limit,
                }
            })
            .collect(),
    })
}

/// `GET /v1/subscription`.
pub(crate) async fn get(
    State(billing): State<Billing>,
    auth: AuthAccount,
) -> Result<Json<Option<SubscriptionView>>, ApiError> {
    Ok(Json(
        load(billing.db(), &billing.config().plans, auth.account_id).await?,
    ))
}

/// `POST /v1/subscriptions/trial`.
pub(crate) async fn trial(
    State(billing): State<Billing>,
    auth: AuthAccount,
) -> Result<(StatusCode, Json<Option<SubscriptionView>>), ApiError> {
    let mut tx = billing.db().begin().await?;
    start_trial(
        &mut tx,
        &billing.config().plans,
        auth.account_id,
        now_secs(),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(load(billing.db(), &billing.config().plans, auth.account_id).await?),
    ))
}

/// `POST /v1/subscriptions/cancel`: stops renewal; the plan keeps working to `period_end`.
pub(crate) async fn cancel(
    State(billing): State<Billing>,
    auth: AuthAccount,
) -> Result<Json<Option<SubscriptionView>>, ApiError> {
    let now = now_secs();
    let done = sqlx::query(
        "UPDATE subscriptions SET cancelled_at = $1, updated_at = $1 \
         WHERE account_id = $2 AND period_end > $1 AND cancelled_at IS NULL",
    )
    .bind(now)
    .bind(auth.account_id)
    .execute(billing.db())
    .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::conflict(
            "nothing_to_cancel",
            "there is no active, uncancelled plan",
        ));
    }
    tracing::info!(account = auth.account_id, "subscription cancelled");
    Ok(Json(
        load(billing.db(), &billing.config().plans, auth.account_id).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_prices() {
        let plans = Plans::default();
        for p in Plan::ALL {
            assert_eq!(Plan::parse(p.name()), Some(p));
        }
        assert_eq!(Plan::Trial.ticket_code(), 0);
        assert_eq!(Plan::Monthly.price_cents(&plans), Some(599));
        assert_eq!(Plan::Quarterly.price_cents(&plans), Some(1497));
        assert_eq!(Plan::Yearly.price_cents(&plans), Some(4788));
        assert_eq!(Plan::Trial.price_cents(&plans), None);
        assert_eq!(Plan::Trial.seconds(&plans), 7 * 86_400);
        assert_eq!(status(100, None, 50), "active");
        assert_eq!(status(100, Some(60), 50), "cancelled");
        assert_eq!(status(100, None, 100), "expired");
    }
}
