//! The catalog as the games screen filters it. Billing calls themselves live in
//! `plg_client::BillingClient`.

use plg_client::billing::GameInfo;

/// Saves the catalog fetched at `at` (Unix seconds) as `catalog.json` in `dir`, for when
/// billing cannot be reached.
pub fn save_catalog(dir: &std::path::Path, games: &[GameInfo], at: u64) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join("catalog.json.tmp");
    let body = serde_json::json!({ "saved_at": at, "games": games });
    std::fs::write(&tmp, serde_json::to_vec(&body)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join("catalog.json"))?;
    Ok(())
}

/// The saved catalog and when it was fetched, if there is a readable one.
pub fn load_catalog(dir: &std::path::Path) -> Option<(u64, Vec<GameInfo>)> {
    #[derive(serde::Deserialize)]
    struct Saved {
        saved_at: u64,
        games: Vec<GameInfo>,
    }
    let text = std::fs::read(dir.join("catalog.json")).ok()?;
    let s: Saved = serde_json::from_slice(&text).ok()?;
    Some((s.saved_at, s.games))
}

/// Games whose name or slug contains `search` and whose category is `category` (empty = any).
pub fn filter_games<'a>(games: &'a [GameInfo], search: &str, category: &str) -> Vec<&'a GameInfo> {
    let q = search.trim().to_lowercase();
    games
        .iter()
        .filter(|g| {
            q.is_empty() || g.name.to_lowercase().contains(&q) || g.slug.to_lowercase().contains(&q)
        })
        .filter(|g| category.is_empty() || g.category.as_deref() == Some(category))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(slug: &str, name: &str, cat: Option<&str>) -> GameInfo {
        GameInfo {
            slug: slug.into(),
            name: name.into(),
            category: cat.map(Into::into),
            regions: vec![],
            process_names: vec![],
        }
    }

    #[test]
    fn filter_by_search_and_category() {
        let g = [
            game("cs2", "Counter-Strike 2", Some("shooter")),
            game("dota2", "Dota 2", Some("moba")),
            game("demo", "Local demo game", None),
        ];
        let names = |v: Vec<&GameInfo>| v.iter().map(|g| g.slug.clone()).collect::<Vec<_>>();
        assert_eq!(names(filter_games(&g, "", "")).len(), 3);
        assert_eq!(names(filter_games(&g, "COUNTER", "")), ["cs2"]);
        assert_eq!(names(filter_games(&g, " 2", "moba")), ["dota2"]);
        assert!(filter_games(&g, "zzz", "").is_empty());
    }
}
