//! Past sessions, newest first, kept as `history.json` in the config dir (at most [`KEEP`]):
//! each game's before/after as the gamer saw it, for the dashboard's history.

use std::path::Path;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::session::EndedBy;

/// Most sessions kept; older ones are dropped.
pub const KEEP: usize = 200;
const FILE: &str = "history.json";

/// One finished session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS)]
pub struct HistoryEntry {
    /// Game slug.
    pub game: String,
    /// Game name.
    pub game_name: String,
    /// Unix seconds.
    #[ts(type = "number")]
    pub started_at: u64,
    /// Length, s.
    pub duration_secs: f64,
    /// The exit at the end (its name).
    pub exit: String,
    /// The exit's region.
    pub region: String,
    /// Game ping straight to the server, median ms (`None`: the server did not answer
    /// probes, or its address was unknown).
    pub direct_ms: Option<f64>,
    /// Game ping through PLG, median ms.
    pub plg_ms: Option<f64>,
    /// How much lower PLG was, percent (negative: higher).
    pub reduction_percent: Option<f64>,
    /// Loss straight to the server, %.
    pub direct_loss_pct: Option<f64>,
    /// Loss through PLG, %.
    pub plg_loss_pct: Option<f64>,
    /// Failovers to another node.
    pub failovers: u32,
    /// Why it ended.
    pub ended_by: EndedBy,
}

/// The saved history, newest first (missing or unreadable: empty, with a warning).
pub fn load(dir: &Path) -> Vec<HistoryEntry> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "session history unreadable; starting a new one");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// Adds `e` at the front and saves atomically, keeping at most [`KEEP`].
pub fn append(dir: &Path, e: HistoryEntry) -> std::io::Result<()> {
    let mut all = load(dir);
    all.insert(0, e);
    all.truncate(KEEP);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("history.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&all)?)?;
    std::fs::rename(tmp, dir.join(FILE))
}

/// `game`'s sessions (every game's when empty), newest first.
pub fn of_game(dir: &Path, game: &str) -> Vec<HistoryEntry> {
    let mut all = load(dir);
    all.retain(|e| game.is_empty() || e.game == game);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(game: &str, n: u64) -> HistoryEntry {
        HistoryEntry {
            game: game.into(),
            game_name: game.to_uppercase(),
            started_at: n,
            duration_secs: 60.0,
            exit: "fra-1".into(),
            region: "eu".into(),
            direct_ms: Some(90.0),
            plg_ms: Some(60.0),
            reduction_percent: Some(33.3),
            direct_loss_pct: Some(1.0),
            plg_loss_pct: Some(0.0),
            failovers: 0,
            ended_by: EndedBy::User,
        }
    }

    #[test]
    fn newest_first_bounded_and_per_game() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        for n in 0..(KEEP as u64 + 5) {
            append(
                dir.path(),
                entry(if n % 2 == 0 { "cs2" } else { "dota2" }, n),
            )
            .unwrap();
        }
        let all = load(dir.path());
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].started_at, KEEP as u64 + 4);
        let cs2 = of_game(dir.path(), "cs2");
        assert!(
            cs2.iter().all(|e| e.game == "cs2") && cs2.len() == KEEP / 2,
            "{}",
            cs2.len()
        );
        // A damaged file is not fatal: the next session starts a new history.
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(load(dir.path()).is_empty());
        append(dir.path(), entry("cs2", 1)).unwrap();
        assert_eq!(load(dir.path()).len(), 1);
    }
}
