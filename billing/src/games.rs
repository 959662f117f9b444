//! Game catalog: the embedded `games.toml` plus the config's `extra_games`, upserted by slug
//! at start-up (unless an admin edited the row); searchable; admin-editable; looked up by
//! slug when a session is requested.

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

/// One game as written in `games.toml` or in the config's `extra_games`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl GameSeed {
    /// Checks slug shape and destination count (a ticket carries at most 32).
    pub fn validate(&self) -> anyhow::Result<()> {
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
            .validate()
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
        // An unverified entry is stored without destinations: sessions for it are refused.
        let destinations: Vec<String> = if g.verified {
            g.destinations.iter().map(ToString::to_string).collect()
        } else {
            Vec::new()
        };
        sqlx::query(
            "INSERT INTO games (slug, name, destinations, process_names, category, regions) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (slug) DO UPDATE SET name = excluded.name, \
             destinations = excluded.destinations, process_names = excluded.process_names, \
             category = excluded.category, regions = excluded.regions \
             WHERE games.admin_edited = 0",
        )
        .bind(&g.slug)
        .bind(&g.name)
        .bind(serde_json::to_string(&destinations)?)
        .bind(serde_json::to_string(&g.process_names)?)
        .bind(g.category.as_deref())
        .bind(serde_json::to_string(&g.regions)?)
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
}

const GAME_COLUMNS: &str =
    "id, slug, name, destinations, process_names, category, regions, deleted_at";
type GameRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<i64>,
);

fn from_row(
    (id, slug, name, destinations, process_names, category, regions, deleted_at): GameRow,
) -> anyhow::Result<Game> {
    Ok(Game {
        id,
        slug,
        name,
        destinations: serde_json::from_str(&destinations).context("games.destinations")?,
        process_names: serde_json::from_str(&process_names).context("games.process_names")?,
        category,
        regions: serde_json::from_str(&regions).context("games.regions")?,
        deleted_at,
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
}

fn validated(slug: String, input: &GameInput) -> Result<GameSeed, ApiError> {
    let seed = GameSeed {
        slug,
        name: input.name.clone(),
        destinations: input.destinations.clone(),
        process_names: input.process_names.clone(),
    };
    seed.validate()
        .map_err(|e| ApiError::bad_request("invalid_game", e.to_string()))?;
    Ok(seed)
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
    let seed = validated(slug, &input)?;
    let destinations: Vec<String> = seed.destinations.iter().map(ToString::to_string).collect();
    let done = sqlx::query(
        "INSERT INTO games (slug, name, destinations, process_names, category, regions, admin_edited) \
         VALUES ($1, $2, $3, $4, $5, $6, 1)",
    )
    .bind(&seed.slug)
    .bind(&seed.name)
    .bind(serde_json::to_string(&destinations).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(serde_json::to_string(&seed.process_names).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(input.category.as_deref())
    .bind(serde_json::to_string(&input.regions).map_err(|e| ApiError::Internal(e.into()))?)
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
    let seed = validated(slug, &input)?;
    let destinations: Vec<String> = seed.destinations.iter().map(ToString::to_string).collect();
    let done = sqlx::query(
        "UPDATE games SET name = $2, destinations = $3, process_names = $4, category = $5, \
         regions = $6, admin_edited = 1, deleted_at = NULL WHERE slug = $1",
    )
    .bind(&seed.slug)
    .bind(&seed.name)
    .bind(serde_json::to_string(&destinations).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(serde_json::to_string(&seed.process_names).map_err(|e| ApiError::Internal(e.into()))?)
    .bind(input.category.as_deref())
    .bind(serde_json::to_string(&input.regions).map_err(|e| ApiError::Internal(e.into()))?)
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
            process_names: vec![],
        };
        assert!(g.validate().is_err());
        assert!(
            GameSeed {
                slug: "ok-1".into(),
                ..g.clone()
            }
            .validate()
            .is_ok()
        );
        assert!(
            GameSeed {
                slug: "ok".into(),
                destinations: vec![],
                ..g
            }
            .validate()
            .is_err()
        );
    }
}
