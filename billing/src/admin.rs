//! Admin API (`/v1/admin/…`, role `admin` in the token and in the database): users,
//! subscriptions, sessions, nodes, join tokens, signing keys. Games, promo codes and
//! payments have their admin handlers next to the rest of their logic.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::Billing;
use crate::auth::AdminAccount;
use crate::db::now_secs;
use crate::error::{ApiError, ApiJson, OptionalJson};
use crate::games::like_pattern;
use crate::plans::{Change, Plan, SubscriptionView};
use crate::sessions::{Page, SESSION_COLUMNS, SessionRow, SessionView, session_view};

fn page(limit: Option<i64>, offset: Option<i64>) -> (i64, i64) {
    Page {
        limit: limit.unwrap_or(50),
        offset: offset.unwrap_or(0),
    }
    .clamp()
}

#[derive(Deserialize)]
pub(crate) struct UserQuery {
    /// Substring of the email.
    #[serde(default)]
    search: Option<String>,
    /// `banned`, `admin`, `subscribed`, `expired`, `no_plan`.
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct UserView {
    account_id: i64,
    email: String,
    role: String,
    banned: bool,
    created_at: i64,
    subscription: Option<SubscriptionView>,
}

#[derive(Serialize)]
pub(crate) struct UserList {
    users: Vec<UserView>,
    total: i64,
}

type UserRow = (
    i64,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

const USER_SELECT: &str = "SELECT a.id, a.email, a.role, a.banned, a.created_at, s.plan, \
    s.started_at, s.period_end, s.cancelled_at FROM accounts a \
    LEFT JOIN subscriptions s ON s.account_id = a.id";

fn user_view(billing: &Billing, row: UserRow, now: i64) -> UserView {
    let (id, email, role, banned, created_at, plan, started, end, cancelled) = row;
    let subscription = match (plan, started, end) {
        (Some(p), Some(s), Some(e)) => Some(crate::plans::view(
            &billing.config().plans,
            (p, s, e, cancelled),
            now,
        )),
        _ => None,
    };
    UserView {
        account_id: id,
        email,
        role,
        banned: banned != 0,
        created_at,
        subscription,
    }
}

/// `GET /v1/admin/users?search=&filter=&limit=&offset=`.
pub(crate) async fn users(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Query(q): Query<UserQuery>,
) -> Result<Json<UserList>, ApiError> {
    let (limit, offset) = page(q.limit, q.offset);
    let filter = q.filter.unwrap_or_default();
    if !["", "banned", "admin", "subscribed", "expired", "no_plan"].contains(&filter.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_filter",
            "filter must be banned, admin, subscribed, expired or no_plan",
        ));
    }
    let pattern = like_pattern(q.search.as_deref().unwrap_or(""));
    let now = now_secs();
    let cond = "a.email LIKE $1 ESCAPE '\\' AND ($2 = '' \
        OR ($2 = 'banned' AND a.banned = 1) OR ($2 = 'admin' AND a.role = 'admin') \
        OR ($2 = 'subscribed' AND s.period_end > $3) OR ($2 = 'expired' AND s.period_end <= $3) \
        OR ($2 = 'no_plan' AND s.account_id IS NULL))";
    let rows: Vec<UserRow> = sqlx::query_as(&format!(
        "{USER_SELECT} WHERE {cond} ORDER BY a.id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(&pattern)
    .bind(&filter)
    .bind(now)
    .bind(limit)
    .bind(offset)
    .fetch_all(billing.db())
    .await?;
    let (total,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM accounts a LEFT JOIN subscriptions s ON s.account_id = a.id WHERE {cond}"
    ))
    .bind(&pattern)
    .bind(&filter)
    .bind(now)
    .fetch_one(billing.db())
    .await?;
    Ok(Json(UserList {
        users: rows
            .into_iter()
            .map(|r| user_view(&billing, r, now))
            .collect(),
        total,
    }))
}

#[derive(Serialize)]
pub(crate) struct EventView {
    kind: String,
    plan: String,
    seconds: i64,
    period_end: i64,
    reference: Option<String>,
    created_at: i64,
}

#[derive(Serialize)]
pub(crate) struct UserDetail {
    #[serde(flatten)]
    user: UserView,
    trial_used_at: Option<i64>,
    usage: crate::accounts::Usage,
    events: Vec<EventView>,
}

/// `GET /v1/admin/users/{id}`: the user, their plan, usage and plan history.
pub(crate) async fn user(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(id): Path<i64>,
) -> Result<Json<UserDetail>, ApiError> {
    let now = now_secs();
    let row: Option<UserRow> = sqlx::query_as(&format!("{USER_SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_optional(billing.db())
        .await?;
    let row = row.ok_or_else(|| ApiError::not_found("unknown_account", "no such account"))?;
    let (trial_used_at,): (Option<i64>,) =
        sqlx::query_as("SELECT trial_used_at FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_one(billing.db())
            .await?;
    let events: Vec<(String, String, i64, i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT kind, plan, seconds, period_end, reference, created_at FROM subscription_events \
         WHERE account_id = $1 ORDER BY id DESC LIMIT 100",
    )
    .bind(id)
    .fetch_all(billing.db())
    .await?;
    Ok(Json(UserDetail {
        user: user_view(&billing, row, now),
        trial_used_at,
        usage: crate::accounts::usage(billing.db(), id).await?,
        events: events
            .into_iter()
            .map(
                |(kind, plan, seconds, period_end, reference, created_at)| EventView {
                    kind,
                    plan,
                    seconds,
                    period_end,
                    reference,
                    created_at,
                },
            )
            .collect(),
    }))
}

/// `POST /v1/admin/users/{id}/ban`: also logs the account out everywhere.
pub(crate) async fn ban(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    crate::accounts::set_banned_by_id(billing.db(), id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/users/{id}/unban`.
pub(crate) async fn unban(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    crate::accounts::set_banned_by_id(billing.db(), id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Grant {
    days: i64,
    /// Switch to this plan; omitted keeps the running plan (or `monthly` terms if none).
    #[serde(default)]
    plan: Option<String>,
}

/// `POST /v1/admin/users/{id}/grant`: adds days from max(now, current end).
pub(crate) async fn grant(
    State(billing): State<Billing>,
    AdminAccount(admin): AdminAccount,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<Grant>,
) -> Result<Json<Option<SubscriptionView>>, ApiError> {
    if !(1..=3660).contains(&req.days) {
        return Err(ApiError::bad_request(
            "invalid_days",
            "days must be 1..=3660",
        ));
    }
    let plan = match req.plan.as_deref() {
        None => None,
        Some(p) => Some(
            Plan::parse(p).ok_or_else(|| ApiError::bad_request("unknown_plan", "no such plan"))?,
        ),
    };
    let now = now_secs();
    let mut tx = billing.db().begin().await?;
    let exists = sqlx::query("UPDATE accounts SET lock_seq = lock_seq + 1 WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if exists.rows_affected() != 1 {
        return Err(ApiError::not_found("unknown_account", "no such account"));
    }
    let reference = format!("admin:{}", admin.account_id);
    crate::plans::extend(
        &mut tx,
        id,
        plan,
        req.days * 86_400,
        Change::AdminGrant,
        Some(&reference),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(
        crate::plans::load(billing.db(), &billing.config().plans, id).await?,
    ))
}

#[derive(Deserialize)]
pub(crate) struct SubQuery {
    /// `active`, `cancelled`, `expired`.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct SubItem {
    account_id: i64,
    email: String,
    #[serde(flatten)]
    subscription: SubscriptionView,
}

#[derive(Serialize)]
pub(crate) struct SubList {
    subscriptions: Vec<SubItem>,
    total: i64,
}

/// `GET /v1/admin/subscriptions?status=`.
pub(crate) async fn subscriptions(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Query(q): Query<SubQuery>,
) -> Result<Json<SubList>, ApiError> {
    let (limit, offset) = page(q.limit, q.offset);
    let status = q.status.unwrap_or_default();
    let now = now_secs();
    let cond = "($1 = '' OR ($1 = 'active' AND s.period_end > $2 AND s.cancelled_at IS NULL) \
        OR ($1 = 'cancelled' AND s.period_end > $2 AND s.cancelled_at IS NOT NULL) \
        OR ($1 = 'expired' AND s.period_end <= $2))";
    let rows: Vec<(i64, String, String, i64, i64, Option<i64>)> = sqlx::query_as(&format!(
        "SELECT s.account_id, a.email, s.plan, s.started_at, s.period_end, s.cancelled_at \
         FROM subscriptions s JOIN accounts a ON a.id = s.account_id WHERE {cond} \
         ORDER BY s.period_end DESC, s.account_id LIMIT $3 OFFSET $4"
    ))
    .bind(&status)
    .bind(now)
    .bind(limit)
    .bind(offset)
    .fetch_all(billing.db())
    .await?;
    let (total,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM subscriptions s WHERE {cond}"
    ))
    .bind(&status)
    .bind(now)
    .fetch_one(billing.db())
    .await?;
    Ok(Json(SubList {
        subscriptions: rows
            .into_iter()
            .map(
                |(account_id, email, plan, started, end, cancelled)| SubItem {
                    account_id,
                    email,
                    subscription: crate::plans::view(
                        &billing.config().plans,
                        (plan, started, end, cancelled),
                        now,
                    ),
                },
            )
            .collect(),
        total,
    }))
}

#[derive(Deserialize)]
pub(crate) struct SessionQuery {
    /// `open` (not stopped, not expired) or `finished` (stopped or expired).
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    account_id: Option<i64>,
    #[serde(default)]
    game: Option<String>,
    #[serde(default)]
    node_id: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct SessionList {
    sessions: Vec<SessionView>,
    total: i64,
}

/// `GET /v1/admin/sessions?status=&account_id=&game=&node_id=`.
pub(crate) async fn sessions(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Query(q): Query<SessionQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let (limit, offset) = page(q.limit, q.offset);
    let now = now_secs();
    let cond = "($1 = '' OR ($1 = 'open' AND s.ended_at IS NULL AND s.expires_at > $2) \
        OR ($1 = 'finished' AND (s.ended_at IS NOT NULL OR s.expires_at <= $2))) \
        AND ($3 = 0 OR s.account_id = $3) AND ($4 = '' OR g.slug = $4) \
        AND ($5 = '' OR s.node_id = $5)";
    let status = q.status.unwrap_or_default();
    let game = q.game.unwrap_or_default();
    let node = q.node_id.unwrap_or_default();
    let account = q.account_id.unwrap_or(0);
    let rows: Vec<SessionRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions s JOIN games g ON g.id = s.game_id \
         WHERE {cond} ORDER BY s.created_at DESC, s.id LIMIT $6 OFFSET $7"
    ))
    .bind(&status)
    .bind(now)
    .bind(account)
    .bind(&game)
    .bind(&node)
    .bind(limit)
    .bind(offset)
    .fetch_all(billing.db())
    .await?;
    let (total,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM sessions s JOIN games g ON g.id = s.game_id WHERE {cond}"
    ))
    .bind(&status)
    .bind(now)
    .bind(account)
    .bind(&game)
    .bind(&node)
    .fetch_one(billing.db())
    .await?;
    Ok(Json(SessionList {
        sessions: rows.into_iter().map(|r| session_view(r, now)).collect(),
        total,
    }))
}

#[derive(Serialize)]
pub(crate) struct NodeAdminView {
    id: String,
    name: String,
    region: String,
    server_name: String,
    enabled: bool,
    priority: i64,
    control_addr: Option<String>,
    data_addr: Option<String>,
    last_seen: Option<i64>,
    created_at: i64,
    /// Where it gossips.
    gossip_addr: Option<String>,
    /// Its own health report: ok, degraded or overloaded.
    health: Option<String>,
    /// Serving its sessions, taking no new ones.
    draining: bool,
    /// Sessions it reported at its last announce.
    sessions: i64,
    /// Peers whose failure detector holds this node dead (from their latest announces).
    reported_dead_by: Vec<String>,
    /// Enabled, announced recently, not draining and not reported dead: offered to clients.
    live: bool,
    /// Its exit→game measurements per target prefix, from its last announce.
    targets: Vec<TargetView>,
    /// Its mesh RTT per peer node, from its last announce.
    peers: Vec<PeerView>,
}

/// A node's measurement towards a target prefix, as admins see it.
#[derive(Serialize)]
pub(crate) struct TargetView {
    target: String,
    #[serde(flatten)]
    leg: crate::rtt::Leg,
    age_secs: u64,
    /// Young enough to be offered to clients.
    fresh: bool,
}

/// A node's measurement towards a peer, as admins see it.
#[derive(Serialize)]
pub(crate) struct PeerView {
    peer: String,
    #[serde(flatten)]
    leg: crate::rtt::Leg,
    age_secs: u64,
    /// Young enough to be offered to clients.
    fresh: bool,
}

fn with_rtt(mut view: NodeAdminView, rtt: Option<crate::rtt::NodeRtt>) -> NodeAdminView {
    let Some(rtt) = rtt else { return view };
    let fresh = |age: u64| age <= crate::rtt::FRESH_SECS as u64;
    view.targets = rtt
        .targets
        .into_iter()
        .map(|t| TargetView {
            fresh: fresh(t.age_secs),
            target: t.key,
            leg: t.leg,
            age_secs: t.age_secs,
        })
        .collect();
    view.peers = rtt
        .peers
        .into_iter()
        .map(|p| PeerView {
            fresh: fresh(p.age_secs),
            peer: p.key,
            leg: p.leg,
            age_secs: p.age_secs,
        })
        .collect();
    view
}

type NodeRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

const NODE_COLUMNS: &str = "id, name, region, server_name, enabled, priority, control_addr, \
    data_addr, last_seen, created_at, gossip_addr, health, draining, sessions";

fn node_view(
    row: NodeRow,
    now: i64,
    dead: &std::collections::HashMap<String, Vec<String>>,
) -> NodeAdminView {
    let (
        id,
        name,
        region,
        server_name,
        enabled,
        priority,
        control,
        data,
        last_seen,
        created_at,
        gossip_addr,
        health,
        draining,
        sessions,
    ) = row;
    let reported_dead_by = dead.get(&id).cloned().unwrap_or_default();
    NodeAdminView {
        live: enabled != 0
            && control.is_some()
            && draining == 0
            && reported_dead_by.is_empty()
            && last_seen.is_some_and(|t| t >= now - crate::nodes::NODE_FRESHNESS_SECS),
        gossip_addr,
        health,
        draining: draining != 0,
        sessions,
        reported_dead_by,
        id,
        name,
        region,
        server_name,
        enabled: enabled != 0,
        priority,
        control_addr: control,
        data_addr: data,
        last_seen,
        created_at,
        targets: Vec::new(),
        peers: Vec::new(),
    }
}

#[derive(Serialize)]
pub(crate) struct NodeList {
    nodes: Vec<NodeAdminView>,
}

/// `GET /v1/admin/nodes`.
pub(crate) async fn nodes(
    State(billing): State<Billing>,
    _admin: AdminAccount,
) -> Result<Json<NodeList>, ApiError> {
    let rows: Vec<NodeRow> = sqlx::query_as(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes WHERE deleted_at IS NULL ORDER BY priority, name, id"
    ))
    .fetch_all(billing.db())
    .await?;
    let now = now_secs();
    let dead = crate::nodes::reported_dead(billing.db()).await?;
    let mut rtt = crate::rtt::load(billing.db(), now, None, None).await?;
    Ok(Json(NodeList {
        nodes: rows
            .into_iter()
            .map(|r| {
                let view = node_view(r, now, &dead);
                let measured = rtt.remove(&view.id);
                with_rtt(view, measured)
            })
            .collect(),
    }))
}

async fn load_node(billing: &Billing, id: &str) -> Result<NodeAdminView, ApiError> {
    let row: Option<NodeRow> = sqlx::query_as(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(billing.db())
    .await?;
    let dead = crate::nodes::reported_dead(billing.db()).await?;
    let now = now_secs();
    let view = row
        .map(|r| node_view(r, now, &dead))
        .ok_or_else(|| ApiError::not_found("unknown_node", "no such node"))?;
    let mut rtt = crate::rtt::load(
        billing.db(),
        now,
        None,
        Some(std::slice::from_ref(&view.id)),
    )
    .await?;
    let measured = rtt.remove(&view.id);
    Ok(with_rtt(view, measured))
}

/// `GET /v1/admin/nodes/{id}`.
pub(crate) async fn node(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(id): Path<String>,
) -> Result<Json<NodeAdminView>, ApiError> {
    Ok(Json(load_node(&billing, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodePatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    priority: Option<i64>,
}

/// `PATCH /v1/admin/nodes/{id}`: rename, move region, enable/disable, set priority (lower
/// is offered first).
pub(crate) async fn patch_node(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(id): Path<String>,
    ApiJson(p): ApiJson<NodePatch>,
) -> Result<Json<NodeAdminView>, ApiError> {
    for (field, v) in [("name", &p.name), ("region", &p.region)] {
        if let Some(v) = v
            && !crate::nodes::valid_label(v)
        {
            return Err(ApiError::bad_request(
                "invalid_label",
                format!("{field} must be 1-64 chars of [A-Za-z0-9._-]"),
            ));
        }
    }
    if p.priority.is_some_and(|x| !(0..=1_000_000).contains(&x)) {
        return Err(ApiError::bad_request(
            "invalid_priority",
            "priority must be 0..=1000000",
        ));
    }
    let done = sqlx::query(
        "UPDATE nodes SET name = COALESCE($2, name), region = COALESCE($3, region), \
         enabled = COALESCE($4, enabled), priority = COALESCE($5, priority) \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(&id)
    .bind(p.name.as_deref())
    .bind(p.region.as_deref())
    .bind(p.enabled.map(i64::from))
    .bind(p.priority)
    .execute(billing.db())
    .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::not_found("unknown_node", "no such node"));
    }
    tracing::info!(node = %id, "node updated by admin");
    Ok(Json(load_node(&billing, &id).await?))
}

/// `DELETE /v1/admin/nodes/{id}`: removes the node; its secret stops working. (Its
/// certificate stays valid until it expires: clients only connect to offered nodes.)
pub(crate) async fn delete_node(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let done = sqlx::query(
        "UPDATE nodes SET deleted_at = $2, enabled = 0 WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(&id)
    .bind(now_secs())
    .execute(billing.db())
    .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::not_found("unknown_node", "no such node"));
    }
    tracing::info!(node = %id, "node deleted by admin");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NewJoinToken {
    ttl_secs: Option<u64>,
    note: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct JoinTokenCreated {
    id: i64,
    /// Shown once; only its hash is stored.
    token: String,
    expires_at: i64,
}

/// `POST /v1/admin/join-tokens`.
pub(crate) async fn create_join_token(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    OptionalJson(body): OptionalJson<NewJoinToken>,
) -> Result<(StatusCode, Json<JoinTokenCreated>), ApiError> {
    let req = body.unwrap_or_default();
    let ttl = req.ttl_secs.unwrap_or(3600);
    if !(60..=30 * 86_400).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "ttl_secs must be 60..=2592000",
        ));
    }
    if req.note.as_ref().is_some_and(|n| n.len() > 200) {
        return Err(ApiError::bad_request("invalid_note", "note is too long"));
    }
    let (id, token, expires_at) = crate::nodes::create_join_token(
        billing.db(),
        Duration::from_secs(ttl),
        req.note.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenCreated {
            id,
            token,
            expires_at,
        }),
    ))
}

#[derive(Serialize)]
pub(crate) struct JoinTokenView {
    id: i64,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    node_id: Option<String>,
    note: Option<String>,
    status: &'static str,
}

#[derive(Serialize)]
pub(crate) struct JoinTokenList {
    join_tokens: Vec<JoinTokenView>,
}

/// `GET /v1/admin/join-tokens` (never the tokens themselves).
pub(crate) async fn join_tokens(
    State(billing): State<Billing>,
    _admin: AdminAccount,
) -> Result<Json<JoinTokenList>, ApiError> {
    type Row = (i64, i64, i64, Option<i64>, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, created_at, expires_at, used_at, node_id, note FROM join_tokens \
             ORDER BY id DESC LIMIT 500",
    )
    .fetch_all(billing.db())
    .await?;
    let now = now_secs();
    Ok(Json(JoinTokenList {
        join_tokens: rows
            .into_iter()
            .map(
                |(id, created_at, expires_at, used_at, node_id, note)| JoinTokenView {
                    status: if used_at.is_some() {
                        "used"
                    } else if expires_at <= now {
                        "expired"
                    } else {
                        "valid"
                    },
                    id,
                    created_at,
                    expires_at,
                    used_at,
                    node_id,
                    note,
                },
            )
            .collect(),
    }))
}

/// `DELETE /v1/admin/join-tokens/{id}`: expires an unused token now.
pub(crate) async fn revoke_join_token(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let now = now_secs();
    let done = sqlx::query(
        "UPDATE join_tokens SET expires_at = $2 WHERE id = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .execute(billing.db())
    .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::not_found(
            "unknown_join_token",
            "no such valid join token",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub(crate) struct KeyList {
    current_key_id: u32,
    keys: Vec<crate::tickets::KeyInfo>,
}

/// `GET /v1/admin/keys`.
pub(crate) async fn keys(
    State(billing): State<Billing>,
    _admin: AdminAccount,
) -> Result<Json<KeyList>, ApiError> {
    Ok(Json(KeyList {
        current_key_id: billing.signer().key_id,
        keys: crate::tickets::all_keys(billing.db(), billing.config().ticket_ttl_secs).await?,
    }))
}

/// `POST /v1/admin/keys/rotate`: new tickets are signed with a new key at once; the old key
/// stays in `/v1/mesh` until its last ticket expires (`ticket_ttl_secs`). Nodes refresh
/// their key set from `/v1/mesh`.
pub(crate) async fn rotate_keys(
    State(billing): State<Billing>,
    _admin: AdminAccount,
) -> Result<Json<KeyList>, ApiError> {
    billing.rotate_ticket_key().await?;
    keys(State(billing), _admin).await
}
