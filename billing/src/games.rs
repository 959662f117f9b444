//! Game catalog: the embedded `games.toml` plus the config's `extra_games`, upserted by slug
//! at start-up (unless an admin edited the row); searchable; admin-editable; looked up by
//! slug when a session is requested. A game may name its server query protocol and a few
//! representative server addresses that nodes probe to measure the exit→game leg.

use std::net::{IpAddr, SocketAddr};

use crate::db::Pool;
use anyhow::{Context, bail};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use plg_proto::ticket::{Destination, MAX_DESTINATIONS};
use serde::{Deserialize, Serialize};

use crate::Billing;
use crate::auth::AdminAccount;
use crate::db::now_secs;
use crate::error::{ApiError, ApiJson};

/// The built-in catalog, compiled into the binary.
const BUILTIN_CATALOG: &str = include_str!("../games.toml");

/// Most probe addresses per game.
pub const MAX_PROBES: usize = 8;
/// Longest `probes_source` text.
const MAX_PROBES_SOURCE: usize = 1024;

pub use plg_proto::query::QueryKind;

/// Whether `addr` is a globally routable unicast address with a port: the rule the node
/// applies to destinations (`plg_node::policy::is_public`), applied here to catalog probes.
pub fn is_public(addr: SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match addr.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] >= 240)
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(SocketAddr::new(v4.into(), addr.port()));
            }
            let s = ip.segments();
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Why a game's query or probes were refused (each message names the rule).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// More than [`MAX_PROBES`] addresses.
    #[error("at most {MAX_PROBES} probes per game, got {0}")]
    TooMany(usize),
    /// Not an `ip:port`.
    #[error("probe {0:?} is not an ip:port (e.g. 203.0.113.7:27015)")]
    Malformed(String),
    /// Loopback, private, link-local, CGNAT, multicast or port 0.
    #[error(
        "probe {0} is not a public address (loopback, private, link-local, CGNAT and multicast are refused)"
    )]
    NotPublic(SocketAddr),
    /// Inside none of the game's destinations.
    #[error("probe {0} is outside the game's destinations")]
    OutsideDestinations(SocketAddr),
    /// Listed twice.
    #[error("probe {0} is listed twice")]
    Duplicate(SocketAddr),
    /// Probes without a source, or a source that is too long.
    #[error(
        "probes_source must say where the probe addresses come from (1..={MAX_PROBES_SOURCE} bytes) when probes are given"
    )]
    Source,
}

/// Checks a game's probe list against its destinations.
pub fn check_probes(
    probes: &[SocketAddr],
    source: Option<&str>,
    destinations: &[Destination],
    allow_private: bool,
) -> Result<(), ProbeError> {
    if probes.len() > MAX_PROBES {
        return Err(ProbeError::TooMany(probes.len()));
    }
    for (i, &p) in probes.iter().enumerate() {
        if !allow_private && !is_public(p) {
            return Err(ProbeError::NotPublic(p));
        }
        if !destinations.iter().any(|d| d.contains(p)) {
            return Err(ProbeError::OutsideDestinations(p));
        }
        if probes[..i].contains(&p) {
            return Err(ProbeError::Duplicate(p));
        }
    }
    let too_long = source.is_some_and(|s| s.len() > MAX_PROBES_SOURCE);
    let missing = source.is_none_or(|s| s.trim().is_empty());
    if too_long || (!probes.is_empty() && missing) {
        return Err(ProbeError::Source);
    }
    Ok(())
}

/// One game as written in `games.toml` or in the config's `extra_games`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameSeed {
    /// Stable identifier used by clients (`cs2`, `dota2`, …).
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Where the game's servers are; becomes the ticket's destinations.
    pub destinations: Vec<Destination>,
    /// Executable names for auto-detection.
    #[serde(default)]
    pub process_names: Vec<String>,
    /// The game servers' query protocol, if they answer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryKind>,
    /// Representative server addresses nodes probe (≤ 8, public, inside `destinations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<SocketAddr>,
    /// Where the probe addresses come from (required with `probes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes_source: Option<String>,
}

impl GameSeed {
    /// Checks slug shape, destination count (a ticket carries at most 32) and probes
    /// (public unless `allow_private_probes`, the local demo's and tests' setting).
    pub fn validate(&self, allow_private_probes: bool) -> anyhow::Result<()> {
        let slug_ok = !self.slug.is_empty()
            && self.slug.len() <= 64
            && self
                .slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !slug_ok {
            bail!("slug must be 1..=64 chars of [a-z0-9-]");
        }
        if self.name.trim().is_empty() || self.name.len() > 128 {
            bail!("name must be 1..=128 bytes");
        }
        if self.destinations.is_empty() || self.destinations.len() > MAX_DESTINATIONS {
            bail!("a game needs 1..={MAX_DESTINATIONS} destinations");
        }
        check_probes(
            &self.probes,
            self.probes_source.as_deref(),
            &self.destinations,
            allow_private_probes,
        )?;
        Ok(())
    }
}

/// One entry of `games.toml`: a [`GameSeed`] plus catalog-only metadata. Unknown keys are
/// ignored (the catalog file may carry more facts than the service uses, e.g. notes).
#[derive(Clone, Debug, Deserialize)]
pub struct CatalogEntry {
    /// Stable identifier.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Where the game's servers are.
    pub destinations: Vec<Destination>,
    /// Executable names for auto-detection.
    #[serde(default)]
    pub process_names: Vec<String>,
    /// Genre or family (`shooter`, `moba`, …).
    #[serde(default)]
    pub category: Option<String>,
    /// Region hints (`eu`, `na`, `asia`, …).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Where the facts come from (URLs); kept in the file, not served.
    #[serde(default)]
    pub sources: Vec<String>,
    /// `false` while the server ranges are placeholders: the game is listed (search,
    /// auto-detection) but sessions are refused, so no ticket ever allows unverified ranges.
    #[serde(default = "verified_by_default")]
    pub verified: bool,
    /// The game servers' query protocol, if they answer one.
    #[serde(default)]
    pub query: Option<QueryKind>,
    /// Representative server addresses nodes probe.
    #[serde(default)]
    pub probes: Vec<SocketAddr>,
    /// Where the probe addresses come from.
    #[serde(default)]
    pub probes_source: Option<String>,
}

fn verified_by_default() -> bool {
    true
}

impl From<GameSeed> for CatalogEntry {
    fn from(g: GameSeed) -> Self {
        CatalogEntry {
            slug: g.slug,
            name: g.name,
            destinations: g.destinations,
            process_names: g.process_names,
            category: None,
            regions: Vec::new(),
            sources: Vec::new(),
            verified: true,
            query: g.query,
            probes: g.probes,
            probes_source: g.probes_source,
        }
    }
}

impl CatalogEntry {
    /// The seed part.
    pub fn seed(&self) -> GameSeed {
        GameSeed {
            slug: self.slug.clone(),
            name: self.name.clone(),
            destinations: self.destinations.clone(),
            process_names: self.process_names.clone(),
            query: self.query,
            probes: self.probes.clone(),
            probes_source: self.probes_source.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Catalog {
    #[serde(alias = "games")]
    game: Vec<CatalogEntry>,
}

/// The games compiled into the binary, with their metadata.
pub fn builtin_catalog() -> anyhow::Result<Vec<CatalogEntry>> {
    let catalog: Catalog =
        toml::from_str(BUILTIN_CATALOG).context("parsing embedded games.toml")?;
    for g in &catalog.game {
        g.seed()
            .validate(false)
            .with_context(|| format!("embedded game {:?}", g.slug))?;
    }
    Ok(catalog.game)
}

/// The games compiled into the binary.
pub fn builtin_games() -> anyhow::Result<Vec<GameSeed>> {
    Ok(builtin_catalog()?.iter().map(CatalogEntry::seed).collect())
}

/// Upserts every entry by slug (later entries win, so `extra_games` can override a
/// built-in). Rows an admin edited or deleted are left alone.
pub(crate) async fn seed(db: &Pool, entries: &[CatalogEntry]) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    for g in entries {
        // An unverified entry is stored without destinations or probes: sessions for it are
        // refused and nodes don't probe it.
        let (destinations, probes): (Vec<String>, Vec<String>) = if g.verified {
            (
                g.destinations.iter().map(ToString::to_string).collect(),
                g.probes.iter().map(ToString::to_string).collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        sqlx::query(
            "INSERT INTO games (slug, name, destinations, process_names, category, regions, \
             query_kind, probes, probes_source) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (slug) DO UPDATE SET name = excluded.name, \
             destinations = excluded.destinations, process_names = excluded.process_names, \
             category = excluded.category, regions = excluded.regions, \
             query_kind = excluded.query_kind, probes = excluded.probes, \
             probes_source = excluded.probes_source \
             WHERE games.admin_edited = 0",
        )
        .bind(&g.slug)
        .bind(&g.name)
        .bind(serde_json::to_string(&destinations)?)
        .bind(serde_json::to_string(&g.process_names)?)
        .bind(g.category.as_deref())
        .bind(serde_json::to_string(&g.regions)?)
        .bind(g.query.map(QueryKind::as_str))
        .bind(serde_json::to_string(&probes)?)
        .bind(g.probes_source.as_deref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A game row.
#[derive(Clone, Debug)]
pub(crate) struct Game {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub destinations: Vec<Destination>,
    pub process_names: Vec<String>,
    pub category: Option<String>,
    pub regions: Vec<String>,
    pub deleted_at: Option<i64>,
    pub query: Option<QueryKind>,
    pub probes: Vec<SocketAddr>,
    pub probes_source: Option<String>,
}

const GAME_COLUMNS: &str = "id, slug, name, destinations, process_names, category, regions, \
     deleted_at, query_kind, probes, probes_source";
type GameRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<i64>,
    Option<String>,
    String,
    Option<String>,
);

fn from_row(
    (
        id,
        slug,
        name,
        destinations,
        process_names,
        category,
        regions,
        deleted_at,
        query,
        probes,
        probes_source,
    ): GameRow,
) -> anyhow::Result<Game> {
    // A query kind this build doesn't know (written by a newer one) is not a reason to
    // refuse the game: it is served as "none".
    let query = query.as_deref().and_then(|q| q.parse::<QueryKind>().ok());
    let probes: Vec<String> = serde_json::from_str(&probes).context("games.probes")?;
    Ok(Game {
        id,
        slug,
        name,
        destinations: serde_json::from_str(&destinations).context("games.destinations")?,
        process_names: serde_json::from_str(&process_names).context("games.process_names")?,
        category,
        regions: serde_json::from_str(&regions).context("games.regions")?,
        deleted_at,
        query,
        probes: probes.iter().filter_map(|p| p.parse().ok()).collect(),
        probes_source,
    })
}

/// Looks a live (not deleted) game up by slug.
pub(crate) async fn find(db: &Pool, slug: &str) -> Result<Option<Game>, ApiError> {
    let row: Option<GameRow> = sqlx::query_as(&format!(
        "SELECT {GAME_COLUMNS} FROM games WHERE slug = $1 AND deleted_at IS NULL"
    ))
    .bind(slug)
    .fetch_optional(db)
    .await?;
    Ok(row.map(from_row).transpose()?)
}

/// One game's probe addresses, as handed to nodes at announce.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProbeSet {
    /// Game slug.
    game: String,
    /// Catalog id, as tickets carry it (`game_id`): a node probes its sessions' servers of
    /// this game with `query`.
    game_id: i64,
    /// How to query its servers; absent: ICMP echo (the node's fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<QueryKind>,
    /// `ip:port` addresses to probe.
    addrs: Vec<SocketAddr>,
}

/// Probe addresses and query protocols of every live game that can be played (unverified
/// games are stored with neither destinations nor probes), by slug: a game with a query
/// protocol but no probe addresses is listed too, so that nodes query the servers their
/// sessions of it use.
pub(crate) async fn catalog_probes(db: &Pool) -> Result<Vec<ProbeSet>, ApiError> {
    let rows: Vec<GameRow> = sqlx::query_as(&format!(
        "SELECT {GAME_COLUMNS} FROM games WHERE deleted_at IS NULL \
         AND (probes <> '[]' OR query_kind IS NOT NULL) AND destinations <> '[]' ORDER BY slug"
    ))
    .fetch_all(db)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let g = from_row(row)?;
        if (!g.probes.is_empty() || g.query.is_some()) && !g.destinations.is_empty() {
            out.push(ProbeSet {
                game: g.slug,
                game_id: g.id,
                query: g.query,
                addrs: g.probes,
            });
        }
    }
    Ok(out)
}

/// A game as listed.
#[derive(Serialize)]
pub(crate) struct GameView {
    slug: String,
    name: String,
    process_names: Vec<String>,
    category: Option<String>,
    regions: Vec<String>,
    destinations: Vec<Destination>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<i64>,
    /// The servers' query protocol (`a2s`, `q3`, `echo`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<QueryKind>,
    /// Addresses nodes probe for this game.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    probes: Vec<SocketAddr>,
    /// Where the probe addresses come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    probes_source: Option<String>,
}

impl From<Game> for GameView {
    fn from(g: Game) -> Self {
        GameView {
            slug: g.slug,
            name: g.name,
            process_names: g.process_names,
            category: g.category,
            regions: g.regions,
            destinations: g.destinations,
            deleted_at: g.deleted_at,
            query: g.query,
            probes: g.probes,
            probes_source: g.probes_source,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct GameList {
    games: Vec<GameView>,
    total: i64,
}

#[derive(Deserialize)]
pub(crate) struct GameQuery {
    /// Case-insensitive substring of name, slug, process name or category.
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
    /// Admin listing only: include deleted games.
    #[serde(default)]
    include_deleted: bool,
}

/// `LIKE` pattern matching `s` anywhere, with `%`, `_` and `\` escaped (use `ESCAPE '\'`).
pub(crate) fn like_pattern(s: &str) -> String {
    let mut out = String::from("%");
    for c in s.trim().to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

async fn query_games(
    db: &Pool,
    q: &GameQuery,
    include_deleted: bool,
) -> Result<GameList, ApiError> {
    let pattern = like_pattern(q.search.as_deref().unwrap_or(""));
    let limit = q.limit.unwrap_or(500).clamp(1, 500);
    let offset = q.offset.unwrap_or(0).max(0);
    let filter = "(LOWER(name) LIKE $1 ESCAPE '\\' OR slug LIKE $1 ESCAPE '\\' \
         OR LOWER(process_names) LIKE $1 ESCAPE '\\' \
         OR LOWER(COALESCE(category, '')) LIKE $1 ESCAPE '\\') \
         AND ($2 = 1 OR deleted_at IS NULL)";
    let rows: Vec<GameRow> = sqlx::query_as(&format!(
        "SELECT {GAME_COLUMNS} FROM games WHERE {filter} ORDER BY name, slug LIMIT $3 OFFSET $4"
    ))
    .bind(&pattern)
    .bind(i64::from(include_deleted))
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM games WHERE {filter}"))
        .bind(&pattern)
        .bind(i64::from(include_deleted))
        .fetch_one(db)
        .await?;
    let mut games = Vec::with_capacity(rows.len());
    for row in rows {
        games.push(GameView::from(from_row(row)?));
    }
    Ok(GameList { games, total })
}

/// `GET /v1/games?search=`: the catalog, for game pickers and auto-detection (public).
pub(crate) async fn list(
    State(billing): State<Billing>,
    Query(q): Query<GameQuery>,
) -> Result<Json<GameList>, ApiError> {
    Ok(Json(query_games(billing.db(), &q, false).await?))
}

/// `GET /v1/admin/games` (admin; `include_deleted=true` shows deleted ones too).
pub(crate) async fn admin_list(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Query(q): Query<GameQuery>,
) -> Result<Json<GameList>, ApiError> {
    let include = q.include_deleted;
    Ok(Json(query_games(billing.db(), &q, include).await?))
}

/// A game as an admin writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GameInput {
    #[serde(default)]
    slug: Option<String>,
    name: String,
    destinations: Vec<Destination>,
    #[serde(default)]
    process_names: Vec<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    regions: Vec<String>,
    /// `a2s`, `q3` or `echo`; absent: none.
    #[serde(default)]
    query: Option<String>,
    /// `ip:port` strings (checked here, so a bad one gets a clear message).
    #[serde(default)]
    probes: Vec<String>,
    #[serde(default)]
    probes_source: Option<String>,
}

fn validated(
    slug: String,
    input: &GameInput,
    allow_private_probes: bool,
) -> Result<GameSeed, ApiError> {
    let query = match input.query.as_deref() {
        None => None,
        Some(q) => Some(q.parse::<QueryKind>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("query {q:?} is not one of a2s, q3, echo"),
            )
        })?),
    };
    let probe_error = |e: ProbeError| ApiError::bad_request("invalid_probes", e.to_string());
    let probes = input
        .probes
        .iter()
        .map(|p| {
            p.trim()
                .parse::<SocketAddr>()
                .map_err(|_| probe_error(ProbeError::Malformed(p.clone())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let seed = GameSeed {
        slug,
        name: input.name.clone(),
        destinations: input.destinations.clone(),
        process_names: input.process_names.clone(),
        query,
        probes,
        probes_source: input
            .probes_source
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    };
    check_probes(
        &seed.probes,
        seed.probes_source.as_deref(),
        &seed.destinations,
        allow_private_probes,
    )
    .map_err(probe_error)?;
    seed.validate(allow_private_probes)
        .map_err(|e| ApiError::bad_request("invalid_game", e.to_string()))?;
    Ok(seed)
}

/// The JSON-encoded probe list as stored.
fn probes_json(probes: &[SocketAddr]) -> Result<String, ApiError> {
    let strings: Vec<String> = probes.iter().map(ToString::to_string).collect();
    serde_json::to_string(&strings).map_err(|e| ApiError::Internal(e.into()))
}

/// `POST /v1/admin/games`.
pub(crate) async fn admin_create(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    ApiJson(input): ApiJson<GameInput>,
) -> Result<(StatusCode, Json<GameView>), ApiError> {
    let slug = input
        .slug
        .clone()
        .ok_or_else(|| ApiError::bad_request("invalid_game", "slug is required"))?;
    let seed = validated(slug, &input, billing.config().allow_private_probes)?;
    let destinations: Vec<String> = seed.destinations.iter().map(ToString::to_string).collect();
    let done = sqlx::query(
        "INSERT INTO games (slug, name, destinations, process_names, category, regions, \
         query_kind, probes, probes_source, admin_edited) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)",
    )
    .bind(&seed.slug)
    .bind(&seed.name)
    .bind(serde_json::to_string(&destinations).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(serde_json::to_string(&seed.process_names).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(input.category.as_deref())
    .bind(serde_json::to_string(&input.regions).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(seed.query.map(QueryKind::as_str))
    .bind(probes_json(&seed.probes)?)
    .bind(seed.probes_source.as_deref())
    .execute(billing.db())
    .await;
    match done {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::conflict(
                "slug_taken",
                "a game with this slug exists",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(game = %seed.slug, "game created by admin");
    let game = find(billing.db(), &seed.slug)
        .await?
        .ok_or(ApiError::UnknownGame)?;
    Ok((StatusCode::CREATED, Json(game.into())))
}

/// `PUT /v1/admin/games/{slug}`: replaces the game's fields (and undeletes it). The
/// catalog seed no longer overwrites it at start-up.
pub(crate) async fn admin_update(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(slug): Path<String>,
    ApiJson(input): ApiJson<GameInput>,
) -> Result<Json<GameView>, ApiError> {
    let seed = validated(slug, &input, billing.config().allow_private_probes)?;
    let destinations: Vec<String> = seed.destinations.iter().map(ToString::to_string).collect();
    let done = sqlx::query(
        "UPDATE games SET name = $2, destinations = $3, process_names = $4, category = $5, \
         regions = $6, query_kind = $7, probes = $8, probes_source = $9, admin_edited = 1, \
         deleted_at = NULL WHERE slug = $1",
    )
    .bind(&seed.slug)
    .bind(&seed.name)
    .bind(serde_json::to_string(&destinations).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(serde_json::to_string(&seed.process_names).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(input.category.as_deref())
    .bind(serde_json::to_string(&input.regions).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(seed.query.map(QueryKind::as_str))
    .bind(probes_json(&seed.probes)?)
    .bind(seed.probes_source.as_deref())
    .execute(billing.db())
    .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::UnknownGame);
    }
    tracing::info!(game = %seed.slug, "game updated by admin");
    let game = find(billing.db(), &seed.slug)
        .await?
        .ok_or(ApiError::UnknownGame)?;
    Ok(Json(game.into()))
}

/// `DELETE /v1/admin/games/{slug}`: hides the game (sessions keep referring to it).
pub(crate) async fn admin_delete(
    State(billing): State<Billing>,
    _admin: AdminAccount,
    Path(slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    let done = sqlx::query(
        "UPDATE games SET deleted_at = $2, admin_edited = 1 WHERE slug = $1 AND deleted_at IS NULL",
    )
    .bind(&slug)
    .bind(now_secs())
    .execute(billing.db())
    .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::UnknownGame);
    }
    tracing::info!(game = %slug, "game deleted by admin");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    /// Built-in games must only point at public address space: a ticket for a default game
    /// must never let a node forward into its own LAN or loopback.
    #[test]
    fn catalog_has_60_games_and_flags_unverified_ones() {
        let catalog = builtin_catalog().unwrap();
        assert!(catalog.len() >= 60, "{} games", catalog.len());
        let unverified: Vec<&str> = catalog
            .iter()
            .filter(|g| !g.verified)
            .map(|g| g.slug.as_str())
            .collect();
        assert!(
            unverified.contains(&"rust") && !unverified.contains(&"cs2"),
            "{unverified:?}"
        );
    }

    #[test]
    fn builtin_catalog_is_public_only() {
        let games = builtin_games().unwrap();
        assert!(games.len() >= 3);
        for g in &games {
            for d in &g.destinations {
                let bad = match d.net {
                    IpNet::V4(n) => {
                        let a = n.addr();
                        a.is_private()
                            || a.is_loopback()
                            || a.is_link_local()
                            || a.is_unspecified()
                            || a.is_documentation()
                            || a.is_broadcast()
                            || a.is_multicast()
                            || a.octets()[0] == 100 && (64..128).contains(&a.octets()[1])
                            || n.prefix_len() < 8
                    }
                    IpNet::V6(n) => {
                        let a = n.addr();
                        a.is_loopback()
                            || a.is_unspecified()
                            || (a.segments()[0] & 0xfe00) == 0xfc00
                    }
                };
                assert!(!bad, "{}: non-public destination {d}", g.slug);
            }
        }
    }

    #[test]
    fn catalog_accepts_both_table_names_and_metadata() {
        let one: Catalog = toml::from_str(
            "[[games]]\nslug = \"x\"\nname = \"X\"\ndestinations = [\"198.51.100.0/24:1\"]\n\
             category = \"shooter\"\nregions = [\"eu\"]\nsources = [\"https://example.com\"]\n\
             ports_note = \"ignored\"\n",
        )
        .unwrap();
        assert_eq!(one.game[0].category.as_deref(), Some("shooter"));
        assert_eq!(one.game[0].regions, vec!["eu"]);
        let two: Catalog =
            toml::from_str("[[game]]\nslug = \"y\"\nname = \"Y\"\ndestinations = []\n").unwrap();
        assert_eq!(two.game[0].slug, "y");
        assert_eq!(like_pattern(" 50%_a\\ "), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn slug_validation() {
        let g = GameSeed {
            slug: "Bad Slug".into(),
            name: "x".into(),
            destinations: vec!["198.51.100.0/24:1".parse().unwrap()],
            ..Default::default()
        };
        assert!(g.validate(false).is_err());
        assert!(
            GameSeed {
                slug: "ok-1".into(),
                ..g.clone()
            }
            .validate(false)
            .is_ok()
        );
        assert!(
            GameSeed {
                slug: "ok".into(),
                destinations: vec![],
                ..g
            }
            .validate(false)
            .is_err()
        );
    }

    #[test]
    fn probe_rules() {
        let dest: Vec<Destination> = vec![
            "203.0.113.0/24:27015-27020".parse().unwrap(),
            "127.0.0.1/32:4000".parse().unwrap(),
        ];
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let src = Some("publisher's server list");
        assert!(check_probes(&[a("203.0.113.7:27015")], src, &dest, false).is_ok());
        assert!(check_probes(&[], None, &dest, false).is_ok());
        assert!(matches!(
            check_probes(&[a("203.0.113.7:27015")], None, &dest, false),
            Err(ProbeError::Source)
        ));
        assert!(matches!(
            check_probes(&[a("203.0.113.7:9")], src, &dest, false),
            Err(ProbeError::OutsideDestinations(_))
        ));
        assert!(matches!(
            check_probes(&[a("198.51.100.1:27015")], src, &dest, false),
            Err(ProbeError::OutsideDestinations(_))
        ));
        assert!(matches!(
            check_probes(&[a("127.0.0.1:4000")], src, &dest, false),
            Err(ProbeError::NotPublic(_))
        ));
        assert!(check_probes(&[a("127.0.0.1:4000")], src, &dest, true).is_ok());
        assert!(matches!(
            check_probes(
                &[a("203.0.113.7:27015"), a("203.0.113.7:27015")],
                src,
                &dest,
                false
            ),
            Err(ProbeError::Duplicate(_))
        ));
        let nine: Vec<SocketAddr> = (1..=9)
            .map(|i| a(&format!("203.0.113.{i}:27015")))
            .collect();
        assert!(matches!(
            check_probes(&nine, src, &dest, false),
            Err(ProbeError::TooMany(9))
        ));
        for private in [
            "10.0.0.1:1",
            "192.168.1.1:1",
            "100.64.0.1:1",
            "[fd00::1]:1",
            "[::1]:1",
        ] {
            assert!(!is_public(a(private)), "{private}");
        }
        assert!(is_public(a("155.133.226.71:27015")));
        assert_eq!("a2s".parse::<QueryKind>().ok(), Some(QueryKind::A2s));
        assert!("A2S".parse::<QueryKind>().is_err());
        assert_eq!(serde_json::to_string(&QueryKind::Q3).unwrap(), "\"q3\"");
    }

    #[test]
    fn catalog_entries_carry_query_and_probes() {
        let one: Catalog = toml::from_str(
            "[[game]]\nslug = \"x\"\nname = \"X\"\ndestinations = [\"203.0.113.0/24:27015\"]\n\
             query = \"a2s\"\nprobes = [\"203.0.113.9:27015\"]\nprobes_source = \"test\"\n",
        )
        .unwrap();
        let seed = one.game[0].seed();
        assert_eq!(seed.query, Some(QueryKind::A2s));
        assert_eq!(seed.probes, vec!["203.0.113.9:27015".parse().unwrap()]);
        seed.validate(false).unwrap();
        assert!(
            toml::from_str::<Catalog>(
                "[[game]]\nslug = \"x\"\nname = \"X\"\ndestinations = []\nquery = \"icmp\"\n"
            )
            .is_err()
        );
    }
}
