//! Game catalog: the embedded `games.toml` plus the config's `extra_games`, upserted by slug
//! at start-up; looked up by slug when a session is requested.

use anyhow::{Context, bail};
use axum::Json;
use axum::extract::State;
use plg_proto::ticket::{Destination, MAX_DESTINATIONS};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

use crate::Billing;
use crate::error::ApiError;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalog {
    game: Vec<GameSeed>,
}

/// The games compiled into the binary.
pub fn builtin_games() -> anyhow::Result<Vec<GameSeed>> {
    let catalog: Catalog =
        toml::from_str(BUILTIN_CATALOG).context("parsing embedded games.toml")?;
    for g in &catalog.game {
        g.validate()
            .with_context(|| format!("embedded game {:?}", g.slug))?;
    }
    Ok(catalog.game)
}

/// Upserts every seed by slug (later seeds win, so `extra_games` can override a built-in).
pub(crate) async fn seed(db: &SqlitePool, seeds: &[GameSeed]) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    for g in seeds {
        let destinations: Vec<String> = g.destinations.iter().map(ToString::to_string).collect();
        sqlx::query(
            "INSERT INTO games (slug, name, destinations, process_names) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (slug) DO UPDATE SET name = excluded.name, \
             destinations = excluded.destinations, process_names = excluded.process_names",
        )
        .bind(&g.slug)
        .bind(&g.name)
        .bind(serde_json::to_string(&destinations)?)
        .bind(serde_json::to_string(&g.process_names)?)
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
}

type GameRow = (i64, String, String, String, String);

fn from_row((id, slug, name, destinations, process_names): GameRow) -> anyhow::Result<Game> {
    Ok(Game {
        id,
        slug,
        name,
        destinations: serde_json::from_str(&destinations).context("games.destinations")?,
        process_names: serde_json::from_str(&process_names).context("games.process_names")?,
    })
}

/// Looks a game up by slug.
pub(crate) async fn find(db: &SqlitePool, slug: &str) -> Result<Option<Game>, ApiError> {
    let row: Option<GameRow> = sqlx::query_as(
        "SELECT id, slug, name, destinations, process_names FROM games WHERE slug = $1",
    )
    .bind(slug)
    .fetch_optional(db)
    .await?;
    Ok(row.map(from_row).transpose()?)
}

#[derive(Serialize)]
pub(crate) struct GameView {
    slug: String,
    name: String,
    process_names: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct GameList {
    games: Vec<GameView>,
}

/// `GET /v1/games`: the catalog, for game pickers and auto-detection.
pub(crate) async fn list(State(billing): State<Billing>) -> Result<Json<GameList>, ApiError> {
    let rows: Vec<GameRow> = sqlx::query_as(
        "SELECT id, slug, name, destinations, process_names FROM games ORDER BY name",
    )
    .fetch_all(billing.db())
    .await?;
    let mut games = Vec::with_capacity(rows.len());
    for row in rows {
        let g = from_row(row)?;
        games.push(GameView {
            slug: g.slug,
            name: g.name,
            process_names: g.process_names,
        });
    }
    Ok(Json(GameList { games }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    /// Built-in games must only point at public address space: a ticket for a default game
    /// must never let a node forward into its own LAN or loopback.
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
