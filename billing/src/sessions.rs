//! Sessions: `POST /v1/sessions` checks ban, plan and the plan's concurrent-session limit,
//! records the session and hands the client a signed ticket plus the live nodes to try;
//! clients stop sessions, nodes report usage, users read their history.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use plg_proto::ticket::{Destination, Ticket};
use serde::{Deserialize, Serialize};

use crate::Billing;
use crate::auth::AuthAccount;
use crate::db::{Pool, now_secs};
use crate::error::{ApiError, ApiJson};
use crate::games::{Game, QueryKind};
use crate::metrics::Metrics;
use crate::nodes::NodeView;
use crate::plans::Plan;
use crate::ratelimit::Limit;

#[derive(Deserialize)]
pub(crate) struct SessionRequest {
    game: String,
}

#[derive(Serialize)]
pub(crate) struct GameRef {
    slug: String,
    name: String,
    /// The servers' query protocol (`a2s`, `q3`, `echo`), when the catalog names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<QueryKind>,
}

impl GameRef {
    fn of(game: &Game) -> GameRef {
        GameRef {
            slug: game.slug.clone(),
            name: game.name.clone(),
            query: game.query,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct SessionCreated {
    /// u64 as a decimal string: JavaScript clients can't hold a u64 in a number.
    session_id: String,
    ticket: String,
    expires_at: u64,
    game: GameRef,
    destinations: Vec<Destination>,
    nodes: Vec<NodeView>,
    /// Plan the ticket was issued under.
    plan: String,
}

/// What a session for a game would look like, without a ticket: `GET /v1/routes/{game}`.
#[derive(Serialize)]
pub(crate) struct RoutePreview {
    game: GameRef,
    destinations: Vec<Destination>,
    nodes: Vec<NodeView>,
}

/// `GET /v1/routes/{game}`: the game's destinations and the live nodes a session would be
/// offered — for route screens and `plg nodes`. Issues no ticket and takes no session slot.
pub(crate) async fn preview(
    State(billing): State<Billing>,
    _auth: AuthAccount,
    Path(slug): Path<String>,
) -> Result<Json<RoutePreview>, ApiError> {
    let game = crate::games::find(billing.db(), slug.trim())
        .await?
        .ok_or(ApiError::UnknownGame)?;
    let nodes = crate::nodes::offered_nodes(billing.db(), &game).await?;
    Ok(Json(RoutePreview {
        game: GameRef::of(&game),
        destinations: game.destinations,
        nodes,
    }))
}

/// Random nonzero session id.
fn new_session_id() -> u64 {
    loop {
        let bytes: [u8; 8] = crate::random_bytes(8).try_into().expect("8 bytes");
        let id = u64::from_be_bytes(bytes);
        if id != 0 {
            return id;
        }
    }
}

/// `POST /v1/sessions`.
pub(crate) async fn create(
    State(billing): State<Billing>,
    auth: AuthAccount,
    ApiJson(req): ApiJson<SessionRequest>,
) -> Result<(StatusCode, Json<SessionCreated>), ApiError> {
    billing
        .limiter()
        .check(Limit::SessionsAccount, &auth.account_id.to_string())?;
    let game = crate::games::find(billing.db(), req.game.trim())
        .await?
        .ok_or(ApiError::UnknownGame)?;
    if game.destinations.is_empty() {
        return Err(ApiError::GameNotReady(game.name.clone()));
    }
    let plans = &billing.config().plans;
    let now = now_secs();
    let session_id = new_session_id();
    let signer = billing.signer();

    let guard = billing.write_guard().await;
    let mut tx = billing.db().begin().await?;
    // Writing the account row first serialises this account's session requests (a row lock
    // on PostgreSQL, the write lock on SQLite), so two racing requests can't both squeeze
    // under the concurrent-session limit.
    let (banned,): (i64,) = sqlx::query_as(
        "UPDATE accounts SET lock_seq = lock_seq + 1 WHERE id = $1 RETURNING banned",
    )
    .bind(auth.account_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::InvalidToken)?;
    if banned != 0 {
        return Err(ApiError::AccountBanned);
    }
    let sub: Option<(String, i64)> = sqlx::query_as(
        "SELECT plan, period_end FROM subscriptions WHERE account_id = $1 AND period_end > $2",
    )
    .bind(auth.account_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((plan_name, period_end)) = sub else {
        return Err(ApiError::NoActivePlan);
    };
    let plan = Plan::parse(&plan_name).unwrap_or(Plan::Monthly);
    let terms = plan.terms(plans);
    let (open,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM sessions WHERE account_id = $1 AND ended_at IS NULL AND expires_at > $2",
    )
    .bind(auth.account_id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if open >= i64::from(terms.max_sessions) {
        return Err(ApiError::conflict(
            "session_limit_reached",
            format!(
                "your plan allows {} sessions at once and all are in use: end one (quit `plg connect` or the app elsewhere); a session whose client vanished ends when its ticket expires",
                terms.max_sessions
            ),
        ));
    }
    // A ticket never outlives the plan it was issued under.
    let expires_at = (now + billing.config().ticket_ttl_secs as i64).min(period_end);
    sqlx::query(
        "INSERT INTO sessions (id, account_id, game_id, key_id, created_at, expires_at, plan) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    // Stored bit-cast: SQL has no unsigned 64-bit integer.
    .bind(session_id as i64)
    .bind(auth.account_id)
    .bind(game.id)
    .bind(i64::from(signer.key_id))
    .bind(now)
    .bind(expires_at)
    .bind(plan.name())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    drop(guard);

    let ticket = Ticket {
        key_id: signer.key_id,
        issued_at: now as u64,
        expires_at: expires_at as u64,
        session_id,
        account_id: auth.account_id as u64,
        plan: plan.ticket_code(),
        game_id: u32::try_from(game.id).map_err(|e| ApiError::Internal(e.into()))?,
        path_limit: terms.path_limit,
        bandwidth_kbps: 0,
        destinations: game.destinations.clone(),
    };
    let bytes = ticket.sign(&signer.key);
    let nodes = crate::nodes::offered_nodes(billing.db(), &game).await?;
    Metrics::inc(&billing.metrics().tickets_issued);
    tracing::info!(
        session = session_id,
        account = auth.account_id,
        game = %game.slug,
        plan = plan.name(),
        nodes = nodes.len(),
        "session created"
    );
    Ok((
        StatusCode::CREATED,
        Json(SessionCreated {
            session_id: session_id.to_string(),
            ticket: STANDARD.encode(bytes),
            expires_at: ticket.expires_at,
            game: GameRef::of(&game),
            destinations: game.destinations,
            nodes,
            plan: plan.name().into(),
        }),
    ))
}

/// A session as shown in histories (user and admin).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SessionView {
    pub session_id: String,
    pub account_id: i64,
    pub game: String,
    pub plan: Option<String>,
    pub status: &'static str,
    pub created_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub duration_secs: i64,
    pub node_id: Option<String>,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub loss: Option<f64>,
    pub rtt_ms: Option<f64>,
}

/// Columns for [`SessionView`], in order; `s` is `sessions`, `g` is `games`.
pub(crate) const SESSION_COLUMNS: &str = "s.id, s.account_id, g.slug, s.plan, s.created_at, \
    s.expires_at, s.ended_at, s.end_reason, s.node_id, s.bytes_up, s.bytes_down, s.loss, s.rtt_ms";

pub(crate) type SessionRow = (
    i64,
    i64,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<f64>,
    Option<f64>,
);

pub(crate) fn session_view(row: SessionRow, now: i64) -> SessionView {
    let (
        id,
        account_id,
        game,
        plan,
        created_at,
        expires_at,
        ended_at,
        end_reason,
        node_id,
        up,
        down,
        loss,
        rtt,
    ) = row;
    let (status, end) = match ended_at {
        Some(t) => ("ended", t),
        None if expires_at <= now => ("expired", expires_at),
        None => ("open", now),
    };
    SessionView {
        session_id: (id as u64).to_string(),
        account_id,
        game,
        plan,
        status,
        created_at,
        expires_at,
        ended_at,
        end_reason,
        duration_secs: (end - created_at).max(0),
        node_id,
        bytes_up: up,
        bytes_down: down,
        loss,
        rtt_ms: rtt,
    }
}

fn parse_session_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<u64>()
        .ok()
        .filter(|&id| id != 0)
        .map(|id| id as i64)
        .ok_or_else(|| ApiError::not_found("unknown_session", "no such session"))
}

async fn load_session(db: &Pool, id: i64) -> Result<Option<SessionView>, ApiError> {
    let row: Option<SessionRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions s JOIN games g ON g.id = s.game_id WHERE s.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| session_view(r, now_secs())))
}

/// `POST /v1/sessions/{id}/stop`: ends the user's session (idempotent). The ticket stays
/// cryptographically valid until it expires, but it no longer counts against the limit.
pub(crate) async fn stop(
    State(billing): State<Billing>,
    auth: AuthAccount,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let id = parse_session_id(&id)?;
    let now = now_secs();
    sqlx::query(
        "UPDATE sessions SET ended_at = $1, end_reason = 'client' \
         WHERE id = $2 AND account_id = $3 AND ended_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .bind(auth.account_id)
    .execute(billing.db())
    .await?;
    match load_session(billing.db(), id).await? {
        Some(s) if s.account_id == auth.account_id => {
            tracing::info!(
                session = id as u64,
                account = auth.account_id,
                "session stopped"
            );
            Ok(Json(s))
        }
        _ => Err(ApiError::not_found("unknown_session", "no such session")),
    }
}

/// `POST /v1/sessions/{id}/renew`: a fresh ticket for the same session (same id, so the node
/// keeps the session, its flows and the game server's view of it), valid for another ticket
/// lifetime (never beyond the plan). The client presents it on its open control connection.
pub(crate) async fn renew(
    State(billing): State<Billing>,
    auth: AuthAccount,
    Path(id): Path<String>,
) -> Result<Json<SessionCreated>, ApiError> {
    billing
        .limiter()
        .check(Limit::SessionsAccount, &auth.account_id.to_string())?;
    let id = parse_session_id(&id)?;
    let now = now_secs();
    let signer = billing.signer();
    let unknown = || ApiError::not_found("unknown_session", "no such session");

    let guard = billing.write_guard().await;
    let mut tx = billing.db().begin().await?;
    let (banned,): (i64,) = sqlx::query_as(
        "UPDATE accounts SET lock_seq = lock_seq + 1 WHERE id = $1 RETURNING banned",
    )
    .bind(auth.account_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::InvalidToken)?;
    if banned != 0 {
        return Err(ApiError::AccountBanned);
    }
    let row: Option<(i64, i64, Option<i64>, i64)> = sqlx::query_as(
        "SELECT account_id, game_id, ended_at, expires_at FROM sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((account, game_id, ended_at, expires_at)) = row else {
        return Err(unknown());
    };
    if account != auth.account_id {
        return Err(unknown());
    }
    if ended_at.is_some() {
        return Err(ApiError::conflict(
            "session_ended",
            "this session was stopped; start a new one with POST /v1/sessions",
        ));
    }
    if expires_at <= now {
        return Err(ApiError::conflict(
            "session_expired",
            "this session's ticket has expired; start a new one with POST /v1/sessions",
        ));
    }
    let sub: Option<(String, i64)> = sqlx::query_as(
        "SELECT plan, period_end FROM subscriptions WHERE account_id = $1 AND period_end > $2",
    )
    .bind(auth.account_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((plan_name, period_end)) = sub else {
        return Err(ApiError::NoActivePlan);
    };
    let plan = Plan::parse(&plan_name).unwrap_or(Plan::Monthly);
    let terms = plan.terms(&billing.config().plans);
    let new_expiry = (now + billing.config().ticket_ttl_secs as i64).min(period_end);
    sqlx::query("UPDATE sessions SET expires_at = $1, key_id = $2, plan = $3 WHERE id = $4")
        .bind(new_expiry)
        .bind(i64::from(signer.key_id))
        .bind(plan.name())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let (slug,): (String,) = sqlx::query_as("SELECT slug FROM games WHERE id = $1")
        .bind(game_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    drop(guard);
    let game = crate::games::find(billing.db(), &slug)
        .await?
        .ok_or(ApiError::UnknownGame)?;

    let ticket = Ticket {
        key_id: signer.key_id,
        issued_at: now as u64,
        expires_at: new_expiry as u64,
        session_id: id as u64,
        account_id: auth.account_id as u64,
        plan: plan.ticket_code(),
        game_id: u32::try_from(game.id).map_err(|e| ApiError::Internal(e.into()))?,
        path_limit: terms.path_limit,
        bandwidth_kbps: 0,
        destinations: game.destinations.clone(),
    };
    let bytes = ticket.sign(&signer.key);
    let nodes = crate::nodes::offered_nodes(billing.db(), &game).await?;
    Metrics::inc(&billing.metrics().tickets_issued);
    tracing::info!(
        session = id as u64,
        account = auth.account_id,
        expires_at = new_expiry,
        "session renewed"
    );
    Ok(Json(SessionCreated {
        session_id: (id as u64).to_string(),
        ticket: STANDARD.encode(bytes),
        expires_at: ticket.expires_at,
        game: GameRef::of(&game),
        destinations: game.destinations,
        nodes,
        plan: plan.name().to_owned(),
    }))
}

/// `limit` / `offset` query parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    #[serde(default = "default_limit")]
    pub limit: i64,
    #[serde(default)]
    pub offset: i64,
}

fn default_limit() -> i64 {
    50
}

impl Page {
    /// Clamped to 1..=500 and offset ≥ 0.
    pub fn clamp(&self) -> (i64, i64) {
        (self.limit.clamp(1, 500), self.offset.max(0))
    }
}

#[derive(Serialize)]
pub(crate) struct SessionList {
    sessions: Vec<SessionView>,
    total: i64,
}

/// `GET /v1/sessions`: the caller's sessions, newest first.
pub(crate) async fn history(
    State(billing): State<Billing>,
    auth: AuthAccount,
    Query(page): Query<Page>,
) -> Result<Json<SessionList>, ApiError> {
    let (limit, offset) = page.clamp();
    let rows: Vec<SessionRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions s JOIN games g ON g.id = s.game_id \
         WHERE s.account_id = $1 ORDER BY s.created_at DESC, s.id LIMIT $2 OFFSET $3"
    ))
    .bind(auth.account_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(billing.db())
    .await?;
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions WHERE account_id = $1")
        .bind(auth.account_id)
        .fetch_one(billing.db())
        .await?;
    let now = now_secs();
    Ok(Json(SessionList {
        sessions: rows.into_iter().map(|r| session_view(r, now)).collect(),
        total,
    }))
}

/// One session's counters as a node sees them (cumulative totals since the session began).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageReport {
    session_id: String,
    #[serde(default)]
    bytes_up: u64,
    #[serde(default)]
    bytes_down: u64,
    /// Fraction of packets lost, 0.0..=1.0.
    #[serde(default)]
    loss: Option<f64>,
    /// Smoothed round-trip time in milliseconds.
    #[serde(default)]
    rtt_ms: Option<f64>,
    /// The node closed the session.
    #[serde(default)]
    ended: bool,
}

#[derive(Deserialize)]
pub(crate) struct UsageBatch {
    reports: Vec<UsageReport>,
}

#[derive(Serialize)]
pub(crate) struct UsageAccepted {
    accepted: usize,
    unknown: usize,
}

const MAX_REPORTS: usize = 1000;

/// `POST /v1/nodes/usage` (node secret): records bytes, loss and RTT per session. Totals
/// only grow (a re-sent or reordered report can't lower them).
pub(crate) async fn report_usage(
    State(billing): State<Billing>,
    headers: HeaderMap,
    ApiJson(batch): ApiJson<UsageBatch>,
) -> Result<Json<UsageAccepted>, ApiError> {
    let node_id = crate::nodes::authenticate(billing.db(), &headers).await?;
    if batch.reports.len() > MAX_REPORTS {
        return Err(ApiError::bad_request(
            "too_many_reports",
            format!("at most {MAX_REPORTS} reports per request"),
        ));
    }
    let now = now_secs();
    let mut accepted = 0;
    let mut unknown = 0;
    let mut tx = billing.db().begin().await?;
    for r in &batch.reports {
        let Ok(id) = parse_session_id(&r.session_id) else {
            unknown += 1;
            continue;
        };
        let valid =
            |v: Option<f64>, max: f64| v.filter(|x| x.is_finite() && (0.0..=max).contains(x));
        let bytes_up = i64::try_from(r.bytes_up).unwrap_or(i64::MAX);
        let bytes_down = i64::try_from(r.bytes_down).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE sessions SET \
               bytes_up = CASE WHEN bytes_up > $2 THEN bytes_up ELSE $2 END, \
               bytes_down = CASE WHEN bytes_down > $3 THEN bytes_down ELSE $3 END, \
               loss = COALESCE($4, loss), rtt_ms = COALESCE($5, rtt_ms), \
               node_id = $6, last_report_at = $7, \
               ended_at = CASE WHEN $8 = 1 AND ended_at IS NULL THEN $7 ELSE ended_at END, \
               end_reason = CASE WHEN $8 = 1 AND ended_at IS NULL THEN 'node' ELSE end_reason END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(bytes_up)
        .bind(bytes_down)
        .bind(valid(r.loss, 1.0))
        .bind(valid(r.rtt_ms, 600_000.0))
        .bind(&node_id)
        .bind(now)
        .bind(i64::from(r.ended))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            accepted += 1;
        } else {
            unknown += 1;
        }
    }
    tx.commit().await?;
    tracing::debug!(node = %node_id, accepted, unknown, "usage reported");
    Ok(Json(UsageAccepted { accepted, unknown }))
}
