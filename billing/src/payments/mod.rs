//! Payments: intents, provider notifications (webhook and polling), crediting, history.
//!
//! Flow: `POST /v1/payments {"plan"}` creates a pending payment and tells the gamer where to
//! pay and which comment to write (`PLG:{payment_id}`). The provider then tells us about the
//! money, by webhook (HMAC-SHA256 over the raw body, constant-time compare) or because we
//! poll its transactions API. Every notification is stored raw; each provider transaction is
//! processed once (primary key `(provider, txn_id)`), so a notification delivered 100 times
//! credits once; a wrong amount or currency flags the payment instead of crediting it.

pub mod donatepay;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Billing;
use crate::auth::{AdminAccount, AuthAccount};
use crate::config::DonatePayConfig;
use crate::db::{Pool, now_secs};
use crate::error::{ApiError, ApiJson};
use crate::metrics::Metrics;
use crate::plans::{Change, Plan};
use crate::ratelimit::{ClientIp, Limit};

/// A provider's report of one transaction, normalised.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The provider's transaction id (idempotency key).
    pub txn_id: String,
    /// The money arrived (not pending, failed or refunded).
    pub paid: bool,
    /// Amount in cents of `currency`.
    pub amount_cents: i64,
    /// ISO currency, upper case.
    pub currency: String,
    /// Free text from the payer; carries `PLG:{payment_id}`.
    pub comment: String,
    /// The transaction as received, for audit.
    pub raw: String,
}

/// What the gamer must do to pay.
#[derive(Clone, Debug, Serialize)]
pub struct Instructions {
    /// Page to pay on.
    pub pay_url: String,
    /// Exact comment to write with the payment.
    pub comment: String,
    /// Human sentence.
    pub text: String,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A payment provider. DonatePay is the one implemented; another is a new impl.
pub trait PaymentProvider: Send + Sync + fmt::Debug {
    /// Stored provider name.
    fn name(&self) -> &'static str;
    /// What to tell the gamer for a pending payment.
    fn instructions(&self, payment_id: &str, amount: &str, currency: &str) -> Instructions;
    /// Checks a webhook's signature over the raw body.
    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8]) -> bool;
    /// Parses a (verified) webhook body.
    fn parse_webhook(&self, body: &[u8]) -> anyhow::Result<Vec<Notification>>;
    /// Fetches recent transactions (the polling fallback).
    fn fetch_recent<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, anyhow::Result<Vec<Notification>>>;
}

/// DonatePay behind [`PaymentProvider`].
pub struct DonatePay {
    config: DonatePayConfig,
}

impl fmt::Debug for DonatePay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DonatePay")
            .field("api_url", &self.config.api_url)
            .finish_non_exhaustive()
    }
}

impl DonatePay {
    /// From the config section.
    pub fn new(config: DonatePayConfig) -> Self {
        DonatePay { config }
    }
}

/// Checks `hex(HMAC-SHA256(secret, body))` (optionally prefixed `sha256=`) in constant time.
pub fn verify_hmac_hex(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let sig = signature.trim();
    let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
    let Some(expected) = decode_hex(sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

/// `hex(HMAC-SHA256(secret, body))`, for senders and tests.
pub fn sign_hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    crate::hex(&mac.finalize().into_bytes())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl PaymentProvider for DonatePay {
    fn name(&self) -> &'static str {
        donatepay::PROVIDER
    }

    fn instructions(&self, payment_id: &str, amount: &str, currency: &str) -> Instructions {
        let comment = format!("PLG:{payment_id}");
        Instructions {
            pay_url: self.config.page_url.clone(),
            text: format!(
                "Pay exactly {amount} {currency} on {} and write \"{comment}\" in the comment; \
                 the plan starts as soon as the payment is confirmed.",
                self.config.page_url
            ),
            comment,
        }
    }

    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        headers
            .get(donatepay::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|sig| {
                verify_hmac_hex(self.config.webhook_secret.expose().as_bytes(), body, sig)
            })
    }

    fn parse_webhook(&self, body: &[u8]) -> anyhow::Result<Vec<Notification>> {
        Ok(vec![donatepay::parse_webhook(body)?])
    }

    fn fetch_recent<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, anyhow::Result<Vec<Notification>>> {
        Box::pin(async move {
            let url =
                donatepay::transactions_url(&self.config.api_url, self.config.api_key.expose());
            // Never log the URL: it carries the API key.
            let resp =
                http.get(url).send().await.map_err(|e| {
                    anyhow::anyhow!("DonatePay request failed: {}", e.without_url())
                })?;
            anyhow::ensure!(
                resp.status().is_success(),
                "DonatePay answered HTTP {}",
                resp.status()
            );
            let body = resp
                .bytes()
                .await
                .map_err(|e| anyhow::anyhow!("DonatePay body: {}", e.without_url()))?;
            donatepay::parse_transactions(&body)
        })
    }
}

/// The provider configured, if any.
pub(crate) fn provider_from_config(config: &crate::Config) -> Option<Arc<dyn PaymentProvider>> {
    config
        .donatepay
        .clone()
        .map(|c| Arc::new(DonatePay::new(c)) as Arc<dyn PaymentProvider>)
}

fn provider(billing: &Billing) -> Result<&Arc<dyn PaymentProvider>, ApiError> {
    billing.payment_provider().ok_or_else(|| {
        ApiError::other(
            StatusCode::SERVICE_UNAVAILABLE,
            "payments_unavailable",
            "payments are not configured on this server",
        )
    })
}

fn format_cents(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The payment id in a comment: the token after `PLG:` (case-insensitive prefix).
pub fn payment_id_in(comment: &str) -> Option<String> {
    let upper = comment.to_ascii_uppercase();
    let at = upper.find("PLG:")?;
    let id: String = comment[at + 4..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

#[derive(Deserialize)]
pub(crate) struct NewPayment {
    plan: String,
}

/// A payment as its owner and admins see it.
#[derive(Serialize)]
pub(crate) struct PaymentView {
    payment_id: String,
    account_id: i64,
    provider: String,
    plan: String,
    amount: String,
    amount_cents: i64,
    currency: String,
    status: String,
    flag_reason: Option<String>,
    paid_amount_cents: Option<i64>,
    paid_currency: Option<String>,
    provider_txn_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<Instructions>,
}

const PAYMENT_COLUMNS: &str = "id, account_id, provider, plan, amount_cents, currency, status, \
    flag_reason, paid_amount_cents, paid_currency, provider_txn_id, created_at, updated_at";

type PaymentRow = (
    String,
    i64,
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

fn payment_view(row: PaymentRow) -> PaymentView {
    let (
        id,
        account_id,
        provider,
        plan,
        amount_cents,
        currency,
        status,
        flag_reason,
        paid,
        paid_cur,
        txn,
        created_at,
        updated_at,
    ) = row;
    PaymentView {
        payment_id: id,
        account_id,
        provider,
        plan,
        amount: format_cents(amount_cents),
        amount_cents,
        currency,
        status,
        flag_reason,
        paid_amount_cents: paid,
        paid_currency: paid_cur,
        provider_txn_id: txn,
        created_at,
        updated_at,
        instructions: None,
    }
}

/// `POST /v1/payments`: a pending payment plus what to do.
pub(crate) async fn create(
    State(billing): State<Billing>,
    auth: AuthAccount,
    ApiJson(req): ApiJson<NewPayment>,
) -> Result<(StatusCode, Json<PaymentView>), ApiError> {
    let provider = provider(&billing)?;
    let plans = &billing.config().plans;
    let plan = Plan::parse(req.plan.trim())
        .filter(|p| *p != Plan::Trial)
        .ok_or_else(|| {
            ApiError::bad_request("unknown_plan", "plan must be monthly, quarterly or yearly")
        })?;
    let amount_cents = plan
        .price_cents(plans)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("plan without a price")))?;
    let id = crate::hex(&crate::random_bytes(8));
    let now = now_secs();
    sqlx::query(
        "INSERT INTO payments (id, account_id, provider, plan, amount_cents, currency, status, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
    )
    .bind(&id)
    .bind(auth.account_id)
    .bind(provider.name())
    .bind(plan.name())
    .bind(amount_cents)
    .bind(&plans.currency)
    .bind(now)
    .execute(billing.db())
    .await?;
    tracing::info!(payment = %id, account = auth.account_id, plan = plan.name(), "payment intent created");
    let amount = format_cents(amount_cents);
    Ok((
        StatusCode::CREATED,
        Json(PaymentView {
            instructions: Some(provider.instructions(&id, &amount, &plans.currency)),
            payment_id: id,
            account_id: auth.account_id,
            provider: provider.name().into(),
            plan: plan.name().into(),
            amount,
            amount_cents,
            currency: plans.currency.clone(),
            status: "pending".into(),
            flag_reason: None,
            paid_amount_cents: None,
            paid_currency: None,
            provider_txn_id: None,
            created_at: now,
            updated_at: now,
        }),
    ))
}

#[derive(Serialize)]
pub(crate) struct PaymentList {
    payments: Vec<PaymentView>,
    total: i64,
}

/// `GET /v1/payments`: the caller's payments, newest first.
pub(crate) async fn history(
    State(billing): State<Billing>,
    auth: AuthAccount,
    Query(page): Query<crate::sessions::Page>,
) -> Result<Json<PaymentList>, ApiError> {
    let (limit, offset) = page.clamp();
    let rows: Vec<PaymentRow> = sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE account_id = $1 \
         ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
    ))
    .bind(auth.account_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(billing.db())
    .await?;
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments WHERE account_id = $1")
        .bind(auth.account_id)
        .fetch_one(billing.db())
        .await?;
    Ok(Json(PaymentList {
        payments: rows.into_iter().map(payment_view).collect(),
        total,
    }))
}

#[derive(Deserialize)]
pub(crate) struct AdminPaymentQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    account_id: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

/// `GET /v1/admin/payments?status=&account_id=`.
pub(crate) async fn admin_list(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Query(q): Query<AdminPaymentQuery>,
) -> Result<Json<PaymentList>, ApiError> {
    let (limit, offset) = crate::sessions::Page {
        limit: q.limit.unwrap_or(50),
        offset: q.offset.unwrap_or(0),
    }
    .clamp();
    let filter = "($1 = '' OR status = $1) AND ($2 = 0 OR account_id = $2)";
    let status = q.status.unwrap_or_default();
    let account = q.account_id.unwrap_or(0);
    let rows: Vec<PaymentRow> = sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE {filter} \
         ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
    ))
    .bind(&status)
    .bind(account)
    .bind(limit)
    .bind(offset)
    .fetch_all(billing.db())
    .await?;
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM payments WHERE {filter}"))
        .bind(&status)
        .bind(account)
        .fetch_one(billing.db())
        .await?;
    Ok(Json(PaymentList {
        payments: rows.into_iter().map(payment_view).collect(),
        total,
    }))
}

#[derive(Serialize)]
pub(crate) struct NotificationView {
    id: i64,
    provider: String,
    source: String,
    signature_ok: bool,
    txn_id: Option<String>,
    outcome: String,
    raw: String,
    received_at: i64,
}

#[derive(Serialize)]
pub(crate) struct NotificationList {
    notifications: Vec<NotificationView>,
}

/// `GET /v1/admin/payment-notifications`: the raw audit trail, newest first.
pub(crate) async fn admin_notifications(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Query(page): Query<crate::sessions::Page>,
) -> Result<Json<NotificationList>, ApiError> {
    let (limit, offset) = page.clamp();
    type Row = (
        i64,
        String,
        String,
        i64,
        Option<String>,
        String,
        String,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, provider, source, signature_ok, txn_id, outcome, raw, received_at \
             FROM payment_notifications ORDER BY id DESC LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(billing.db())
    .await?;
    Ok(Json(NotificationList {
        notifications: rows
            .into_iter()
            .map(
                |(id, provider, source, sig, txn_id, outcome, raw, received_at)| NotificationView {
                    id,
                    provider,
                    source,
                    signature_ok: sig != 0,
                    txn_id,
                    outcome,
                    raw,
                    received_at,
                },
            )
            .collect(),
    }))
}

async fn store_raw(
    db: &Pool,
    provider: &str,
    source: &str,
    signature_ok: bool,
    txn_id: Option<&str>,
    outcome: &str,
    raw: &str,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO payment_notifications (provider, source, signature_ok, txn_id, outcome, raw, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(provider)
    .bind(source)
    .bind(i64::from(signature_ok))
    .bind(txn_id)
    .bind(outcome)
    .bind(raw)
    .bind(now_secs())
    .execute(db)
    .await?;
    Ok(())
}

/// Processes one notification exactly once per provider transaction. Returns the outcome:
/// `credited`, `flagged`, `duplicate`, `not_paid`, `no_payment_id`, `unknown_payment`,
/// `payment_not_pending`.
pub(crate) async fn process(
    billing: &Billing,
    provider: &str,
    n: &Notification,
) -> Result<&'static str, ApiError> {
    let now = now_secs();
    if !n.paid {
        return Ok("not_paid");
    }
    let mut tx = billing.db().begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO provider_transactions (provider, txn_id, outcome, created_at) \
         VALUES ($1, $2, 'processing', $3) ON CONFLICT (provider, txn_id) DO NOTHING",
    )
    .bind(provider)
    .bind(&n.txn_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() == 0 {
        return Ok("duplicate");
    }
    let payment_id = payment_id_in(&n.comment);
    let outcome = match &payment_id {
        None => "no_payment_id",
        Some(pid) => {
            let row: Option<(i64, String, i64, String, String)> = sqlx::query_as(
                "SELECT account_id, plan, amount_cents, currency, status FROM payments \
                 WHERE id = $1 AND provider = $2",
            )
            .bind(pid)
            .bind(provider)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                None => "unknown_payment",
                Some((_, _, _, _, status)) if status != "pending" => "payment_not_pending",
                Some((account_id, plan, amount_cents, currency, _)) => {
                    let reason = if n.currency != currency {
                        Some(format!("currency {} instead of {currency}", n.currency))
                    } else if n.amount_cents != amount_cents {
                        Some(format!(
                            "amount {} instead of {}",
                            format_cents(n.amount_cents),
                            format_cents(amount_cents)
                        ))
                    } else {
                        None
                    };
                    let status = if reason.is_some() {
                        "flagged"
                    } else {
                        "credited"
                    };
                    sqlx::query(
                        "UPDATE payments SET status = $2, flag_reason = $3, paid_amount_cents = $4, \
                         paid_currency = $5, provider_txn_id = $6, updated_at = $7 \
                         WHERE id = $1 AND status = 'pending'",
                    )
                    .bind(pid)
                    .bind(status)
                    .bind(reason.as_deref())
                    .bind(n.amount_cents)
                    .bind(&n.currency)
                    .bind(&n.txn_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if reason.is_none() {
                        let plan = Plan::parse(&plan).unwrap_or(Plan::Monthly);
                        crate::plans::extend(
                            &mut tx,
                            account_id,
                            Some(plan),
                            plan.seconds(&billing.config().plans),
                            Change::Payment,
                            Some(pid),
                            now,
                        )
                        .await?;
                        Metrics::inc(&billing.metrics().payments_credited);
                        "credited"
                    } else {
                        tracing::warn!(payment = %pid, reason = ?reason, "payment flagged");
                        Metrics::inc(&billing.metrics().payments_flagged);
                        "flagged"
                    }
                }
            }
        }
    };
    sqlx::query(
        "UPDATE provider_transactions SET outcome = $3, payment_id = $4 \
         WHERE provider = $1 AND txn_id = $2",
    )
    .bind(provider)
    .bind(&n.txn_id)
    .bind(outcome)
    .bind(payment_id.as_deref())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(provider, txn = %n.txn_id, payment = ?payment_id, outcome, "payment notification processed");
    Ok(outcome)
}

#[derive(Serialize)]
pub(crate) struct WebhookAnswer {
    outcomes: Vec<&'static str>,
}

/// `POST /v1/payments/webhook/donatepay`: raw body, verified before it is parsed.
pub(crate) async fn webhook(
    State(billing): State<Billing>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookAnswer>, ApiError> {
    billing.limiter().check_ip(Limit::WebhookIp, ip)?;
    let provider = provider(&billing)?.clone();
    let raw = String::from_utf8_lossy(&body).into_owned();
    if !provider.verify_webhook(&headers, &body) {
        store_raw(
            billing.db(),
            provider.name(),
            "webhook",
            false,
            None,
            "bad_signature",
            &raw,
        )
        .await?;
        tracing::warn!(peer = %ip.0, "payment webhook with a bad signature");
        return Err(ApiError::other(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "webhook signature does not match",
        ));
    }
    let notifications = match provider.parse_webhook(&body) {
        Ok(n) => n,
        Err(e) => {
            store_raw(
                billing.db(),
                provider.name(),
                "webhook",
                true,
                None,
                "unreadable",
                &raw,
            )
            .await?;
            return Err(ApiError::bad_request("bad_notification", e.to_string()));
        }
    };
    let mut outcomes = Vec::with_capacity(notifications.len());
    for n in &notifications {
        let outcome = process(&billing, provider.name(), n).await?;
        store_raw(
            billing.db(),
            provider.name(),
            "webhook",
            true,
            Some(&n.txn_id),
            outcome,
            &raw,
        )
        .await?;
        outcomes.push(outcome);
    }
    Ok(Json(WebhookAnswer { outcomes }))
}

/// One polling round: fetch recent transactions and process the new ones.
pub(crate) async fn poll_once(
    billing: &Billing,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<(String, &'static str)>> {
    let Some(provider) = billing.payment_provider().cloned() else {
        return Ok(Vec::new());
    };
    let notifications = provider.fetch_recent(http).await?;
    let mut results = Vec::new();
    for n in &notifications {
        let outcome = process(billing, provider.name(), n)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if outcome != "duplicate" {
            store_raw(
                billing.db(),
                provider.name(),
                "poll",
                true,
                Some(&n.txn_id),
                outcome,
                &n.raw,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        results.push((n.txn_id.clone(), outcome));
    }
    Ok(results)
}

/// The polling fallback, until the process stops.
pub(crate) async fn poll_loop(billing: Billing, interval: Duration) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client");
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match poll_once(&billing, &http).await {
            Ok(r) => tracing::debug!(processed = r.len(), "payment poll done"),
            Err(e) => tracing::warn!(error = %e, "payment poll failed"),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct PollAnswer {
    results: Vec<PollResult>,
}

#[derive(Serialize)]
pub(crate) struct PollResult {
    txn_id: String,
    outcome: &'static str,
}

/// `POST /v1/admin/payments/poll`: run one polling round now.
pub(crate) async fn admin_poll(
    State(billing): State<Billing>,
    _admin: AdminAccount,
) -> Result<Json<PollAnswer>, ApiError> {
    provider(&billing)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ApiError::Internal(e.into()))?;
    let results = poll_once(&billing, &http).await.map_err(|e| {
        ApiError::other(
            StatusCode::BAD_GATEWAY,
            "provider_unavailable",
            format!("polling the provider failed: {e}"),
        )
    })?;
    Ok(Json(PollAnswer {
        results: results
            .into_iter()
            .map(|(txn_id, outcome)| PollResult { txn_id, outcome })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_comment() {
        let sig = sign_hmac_hex(b"secret", b"body");
        assert!(verify_hmac_hex(b"secret", b"body", &sig));
        assert!(verify_hmac_hex(
            b"secret",
            b"body",
            &format!("sha256={sig}")
        ));
        assert!(!verify_hmac_hex(b"secret", b"body!", &sig));
        assert!(!verify_hmac_hex(b"other", b"body", &sig));
        assert!(!verify_hmac_hex(b"secret", b"body", "zz"));
        assert!(!verify_hmac_hex(b"secret", b"body", ""));
        assert_eq!(
            payment_id_in("thanks! plg: AbC123 ok").as_deref(),
            Some("abc123")
        );
        assert_eq!(payment_id_in("PLG:0f1e").as_deref(), Some("0f1e"));
        assert_eq!(payment_id_in("nothing"), None);
        assert_eq!(payment_id_in("PLG:"), None);
        assert_eq!(format_cents(599), "5.99");
        assert_eq!(format_cents(4788), "47.88");
    }
}
