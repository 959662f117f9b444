//! Relay nodes: single-use join tokens, joining (certificate + node secret), announcing
//! addresses, and the list of live nodes handed to clients.

use std::net::SocketAddr;
use std::time::Duration;

use crate::db::Pool;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::Billing;
use crate::db::now_secs;
use crate::error::{ApiError, ApiJson};
use crate::mesh_ca::SignError;
use crate::tickets::TicketKey;

/// A node that has not announced for this long is not offered to clients.
pub const NODE_FRESHNESS_SECS: i64 = 90;
/// DNS suffix of node server names (`<node_id>.nodes.plg`).
pub const SERVER_NAME_SUFFIX: &str = "nodes.plg";
const MAX_PUBLIC_KEY_PEM: usize = 4096;

use crate::sha256_hex as secret_hash;

fn random_secret() -> String {
    crate::random_token()
}

/// What every join token starts with.
pub(crate) const JOIN_TOKEN_PREFIX: &str = "plgjoin_";

/// Creates a single-use join token valid for `ttl`; only its hash is stored.
pub(crate) async fn create_join_token(
    db: &Pool,
    ttl: Duration,
    note: Option<&str>,
) -> anyhow::Result<(i64, String, i64)> {
    // Operators paste it after `--token`: a fixed prefix keeps it from ever starting with
    // '-' (base64url's alphabet has one), which a command line would take for a flag.
    let token = format!("{JOIN_TOKEN_PREFIX}{}", random_secret());
    let now = now_secs();
    let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO join_tokens (token_hash, created_at, expires_at, note) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )
    .bind(secret_hash(&token))
    .bind(now)
    .bind(expires_at)
    .bind(note)
    .fetch_one(db)
    .await?;
    tracing::info!(id, expires_at, "join token created");
    Ok((id, token, expires_at))
}

pub(crate) fn valid_label(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Deserialize)]
pub(crate) struct JoinRequest {
    token: String,
    name: String,
    region: String,
    public_key_pem: String,
}

#[derive(Serialize)]
pub(crate) struct Joined {
    node_id: String,
    server_name: String,
    cert_pem: String,
    ca_cert_pem: String,
    node_secret: String,
    ticket_keys: Vec<TicketKey>,
    /// Base64 of the 32-byte key that seals mesh gossip.
    gossip_key: String,
    /// Live nodes to gossip with first.
    seed_nodes: Vec<NodeView>,
    /// Their gossip addresses.
    seeds: Vec<String>,
}

/// `POST /v1/nodes/join`.
pub(crate) async fn join(
    State(billing): State<Billing>,
    ip: crate::ratelimit::ClientIp,
    ApiJson(req): ApiJson<JoinRequest>,
) -> Result<(StatusCode, Json<Joined>), ApiError> {
    billing
        .limiter()
        .check_ip(crate::ratelimit::Limit::JoinIp, ip)?;
    if !valid_label(&req.name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "name must be 1-64 chars of [A-Za-z0-9._-]",
        ));
    }
    if !valid_label(&req.region) {
        return Err(ApiError::bad_request(
            "invalid_region",
            "region must be 1-64 chars of [A-Za-z0-9._-]",
        ));
    }
    if req.public_key_pem.len() > MAX_PUBLIC_KEY_PEM {
        return Err(ApiError::bad_request(
            "invalid_public_key",
            "public_key_pem is too long",
        ));
    }
    let node_id = format!("node-{}", hex(&crate::random_bytes(6)));
    let server_name = format!("{node_id}.{SERVER_NAME_SUFFIX}");
    // Sign before consuming the token, so a bad key doesn't burn it.
    let cert_pem = billing
        .ca()
        .sign_node_cert(&req.public_key_pem, &server_name)
        .map_err(|e| match e {
            SignError::BadPublicKey(_) => {
                ApiError::bad_request("invalid_public_key", e.to_string())
            }
            SignError::Signing(_) => ApiError::Internal(e.into()),
        })?;
    let node_secret = random_secret();
    let now = now_secs();

    let mut tx = billing.db().begin().await?;
    // Atomic single use: only one request can flip used_at from NULL.
    let consumed = sqlx::query(
        "UPDATE join_tokens SET used_at = $1, node_id = $2 \
         WHERE token_hash = $3 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(&node_id)
    .bind(secret_hash(&req.token))
    .execute(&mut *tx)
    .await?;
    if consumed.rows_affected() != 1 {
        tracing::warn!(name = %req.name, "join refused: invalid join token");
        return Err(ApiError::InvalidJoinToken);
    }
    sqlx::query(
        "INSERT INTO nodes (id, name, region, server_name, secret_hash, cert_pem, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&node_id)
    .bind(&req.name)
    .bind(&req.region)
    .bind(&server_name)
    .bind(secret_hash(&node_secret))
    .bind(&cert_pem)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(node = %node_id, name = %req.name, region = %req.region, "node joined");

    let ticket_keys = billing.ticket_keys().await?;
    let gossip_key = STANDARD.encode(crate::db::secret(billing.db(), "gossip_key", 32).await?);
    let seed_nodes = live_nodes(billing.db())
        .await?
        .into_iter()
        .filter(|n| n.id != node_id)
        .collect();
    let seeds = gossip_seeds(billing.db())
        .await?
        .into_iter()
        .map(|(_, addr)| addr)
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(Joined {
            node_id,
            server_name,
            cert_pem,
            ca_cert_pem: billing.ca().cert_pem().to_owned(),
            node_secret,
            ticket_keys,
            gossip_key,
            seed_nodes,
            seeds,
        }),
    ))
}

/// Most peers a node may report dead in one announce.
const MAX_DEAD_PEERS: usize = 1024;

#[derive(Deserialize)]
pub(crate) struct Announce {
    control_addr: String,
    data_addr: String,
    /// Where the node gossips (absent from nodes that predate the mesh).
    #[serde(default)]
    gossip_addr: Option<String>,
    /// The node's own health: `ok`, `degraded` or `overloaded`.
    #[serde(default)]
    health: Option<String>,
    /// Draining: serving its sessions but taking no new ones.
    #[serde(default)]
    draining: bool,
    /// Sessions it serves now.
    #[serde(default)]
    sessions: u32,
    /// Peers its failure detector holds dead.
    #[serde(default)]
    dead_peers: Vec<String>,
    /// Its exit→game measurements per target prefix (≤ 256).
    #[serde(default)]
    targets: Vec<crate::rtt::TargetReport>,
    /// Its mesh RTT per peer node id (≤ 1024).
    #[serde(default)]
    peers: std::collections::BTreeMap<String, crate::rtt::LegReport>,
}

/// Answer to an announce: where the rest of the mesh gossips, and what to probe.
#[derive(Serialize)]
pub(crate) struct Announced {
    /// Gossip addresses of the other live nodes.
    seeds: Vec<String>,
    /// The catalog's probe addresses (games that have any and can be played).
    probes: Vec<crate::games::ProbeSet>,
}

fn parse_public_addr(field: &'static str, s: &str) -> Result<SocketAddr, ApiError> {
    match s.parse::<SocketAddr>() {
        Ok(a) if !a.ip().is_unspecified() && a.port() != 0 => Ok(a),
        _ => Err(ApiError::bad_request(
            "invalid_address",
            format!("{field} must be a reachable ip:port (not 0.0.0.0, not port 0)"),
        )),
    }
}

/// `POST /v1/nodes/announce`: the node's addresses and its view of the mesh.
pub(crate) async fn announce(
    State(billing): State<Billing>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<Announce>,
) -> Result<Json<Announced>, ApiError> {
    let secret = crate::auth::bearer(&headers).ok_or(ApiError::InvalidNodeSecret)?;
    let control = parse_public_addr("control_addr", &req.control_addr)?;
    let data = parse_public_addr("data_addr", &req.data_addr)?;
    let gossip = req
        .gossip_addr
        .as_deref()
        .map(|g| parse_public_addr("gossip_addr", g))
        .transpose()?;
    let health = req.health.as_deref().unwrap_or("ok");
    if !matches!(health, "ok" | "degraded" | "overloaded") {
        return Err(ApiError::bad_request(
            "invalid_health",
            "health must be ok, degraded or overloaded",
        ));
    }
    if req.dead_peers.len() > MAX_DEAD_PEERS || !req.dead_peers.iter().all(|p| valid_label(p)) {
        return Err(ApiError::bad_request(
            "invalid_dead_peers",
            format!("dead_peers must be at most {MAX_DEAD_PEERS} node ids"),
        ));
    }
    let measurements = crate::rtt::validate(&req.targets, &req.peers)?;
    let now = now_secs();
    let guard = billing.write_guard().await;
    let mut tx = billing.db().begin().await?;
    let updated: Option<(String,)> = sqlx::query_as(
        "UPDATE nodes SET control_addr = $1, data_addr = $2, last_seen = $3, gossip_addr = $4, \
         health = $5, draining = $6, sessions = $7, dead_peers = $8 \
         WHERE secret_hash = $9 AND deleted_at IS NULL RETURNING id",
    )
    .bind(control.to_string())
    .bind(data.to_string())
    .bind(now)
    .bind(gossip.map(|g| g.to_string()))
    .bind(health)
    .bind(i64::from(req.draining))
    .bind(i64::from(req.sessions))
    .bind(req.dead_peers.join(" "))
    .bind(secret_hash(secret))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id,)) = updated else {
        return Err(ApiError::InvalidNodeSecret);
    };
    crate::rtt::replace(&mut tx, &id, &measurements, now).await?;
    tx.commit().await?;
    drop(guard);
    tracing::debug!(
        node = %id,
        control = %control,
        data = %data,
        measurements = measurements.len(),
        "node announced"
    );
    let seeds = gossip_seeds(billing.db())
        .await?
        .into_iter()
        .filter(|(node, _)| *node != id)
        .map(|(_, addr)| addr)
        .collect();
    let probes = crate::games::catalog_probes(billing.db()).await?;
    Ok(Json(Announced { seeds, probes }))
}

/// The node id behind `Authorization: Bearer <node_secret>`.
pub(crate) async fn authenticate(db: &Pool, headers: &HeaderMap) -> Result<String, ApiError> {
    let secret = crate::auth::bearer(headers).ok_or(ApiError::InvalidNodeSecret)?;
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM nodes WHERE secret_hash = $1 AND deleted_at IS NULL")
            .bind(secret_hash(secret))
            .fetch_optional(db)
            .await?;
    row.map(|r| r.0).ok_or(ApiError::InvalidNodeSecret)
}

/// A node as offered to clients in `POST /v1/sessions`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct NodeView {
    id: String,
    server_name: String,
    region: String,
    control_addr: String,
    data_addr: String,
    /// Its fresh exit→game measurements for the session's game (best first, ≤ 16).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    game_rtt: Vec<crate::rtt::TargetRtt>,
    /// Its fresh mesh RTT to each of the other offered nodes.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    mesh_rtt: std::collections::BTreeMap<String, crate::rtt::Leg>,
    /// The name the operator gave at join (`fra-1`): what gamers see instead of the id.
    name: String,
    #[serde(skip)]
    priority: i64,
}

/// Ids that some freshly announced node reports dead: billing's view of the mesh's
/// failure detector, which sees a dead node within seconds rather than
/// [`NODE_FRESHNESS_SECS`].
pub(crate) async fn reported_dead(
    db: &Pool,
) -> Result<std::collections::HashMap<String, Vec<String>>, ApiError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, dead_peers FROM nodes WHERE deleted_at IS NULL AND last_seen >= $1 \
         AND dead_peers <> ''",
    )
    .bind(now_secs() - NODE_FRESHNESS_SECS)
    .fetch_all(db)
    .await?;
    let mut dead: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (reporter, peers) in rows {
        for peer in peers.split(' ').filter(|p| !p.is_empty()) {
            dead.entry(peer.to_owned())
                .or_default()
                .push(reporter.clone());
        }
    }
    Ok(dead)
}

/// Gossip addresses of live nodes, as `(id, addr)`.
async fn gossip_seeds(db: &Pool) -> Result<Vec<(String, String)>, ApiError> {
    let dead = reported_dead(db).await?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, gossip_addr FROM nodes WHERE deleted_at IS NULL AND last_seen >= $1 \
         AND gossip_addr IS NOT NULL ORDER BY last_seen DESC, id LIMIT 16",
    )
    .bind(now_secs() - NODE_FRESHNESS_SECS)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(id, _)| !dead.contains_key(id))
        .collect())
}

/// Nodes offered to clients: enabled, announced within [`NODE_FRESHNESS_SECS`], not
/// draining and not reported dead by a peer; by priority then name.
pub(crate) async fn live_nodes(db: &Pool) -> Result<Vec<NodeView>, ApiError> {
    let dead = reported_dead(db).await?;
    type Row = (String, String, String, String, String, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, server_name, region, control_addr, data_addr, name, priority FROM nodes \
         WHERE enabled = 1 AND deleted_at IS NULL AND last_seen >= $1 AND draining = 0 \
         AND control_addr IS NOT NULL AND data_addr IS NOT NULL \
         ORDER BY priority, name, id",
    )
    .bind(now_secs() - NODE_FRESHNESS_SECS)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(id, ..)| !dead.contains_key(id))
        .map(
            |(id, server_name, region, control_addr, data_addr, name, priority)| NodeView {
                id,
                server_name,
                region,
                control_addr,
                data_addr,
                game_rtt: Vec::new(),
                mesh_rtt: Default::default(),
                name,
                priority,
            },
        )
        .collect())
}

/// The live nodes offered for `game`, each with what the mesh knows: its fresh RTTs towards
/// the game's servers and towards the other offered nodes. Ordered by priority, then best
/// known game cost (RTT + 2 ms per % loss; unknown last), then name and id.
pub(crate) async fn offered_nodes(
    db: &Pool,
    game: &crate::games::Game,
) -> Result<Vec<NodeView>, ApiError> {
    let mut nodes = live_nodes(db).await?;
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let mut rtt = crate::rtt::load(
        db,
        now_secs(),
        Some(crate::rtt::FRESH_SECS),
        Some(ids.as_slice()),
    )
    .await?;
    for node in &mut nodes {
        let Some(measured) = rtt.remove(&node.id) else {
            continue;
        };
        node.game_rtt = crate::rtt::game_rtt(&measured.targets, &game.destinations, &game.probes);
        node.mesh_rtt = measured
            .peers
            .into_iter()
            .filter(|p| p.key != node.id && ids.contains(&p.key))
            .map(|p| (p.key, p.leg))
            .collect();
    }
    // game_rtt is sorted best first, so its head is the node's best known cost.
    let best = |n: &NodeView| n.game_rtt.first().map_or(u64::MAX, |t| t.leg.cost_us());
    nodes.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| best(a).cmp(&best(b)))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(nodes)
}

use crate::hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(valid_label("relay-1.fra_a"));
        assert!(!valid_label(""));
        assert!(!valid_label("has space"));
        assert!(!valid_label(&"a".repeat(65)));
    }

    #[test]
    fn addresses() {
        assert!(parse_public_addr("x", "198.51.100.7:443").is_ok());
        assert!(parse_public_addr("x", "[2001:db8::1]:443").is_ok());
        assert!(parse_public_addr("x", "0.0.0.0:443").is_err());
        assert!(parse_public_addr("x", "198.51.100.7:0").is_err());
        assert!(parse_public_addr("x", "example.com:443").is_err());
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
