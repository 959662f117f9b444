//! Game auto-detection: which catalog games have a process running, by executable name.

use std::collections::BTreeSet;

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System};

use crate::account::Game;

/// Lower-case name without a Windows `.exe` suffix.
fn normalise(name: &str) -> String {
    let n = name.to_lowercase();
    n.strip_suffix(".exe").map(str::to_owned).unwrap_or(n)
}

/// Slugs of `games` one of whose process names is in `running`.
pub fn matching(games: &[Game], running: &BTreeSet<String>) -> Vec<String> {
    games
        .iter()
        .filter(|g| {
            g.process_names
                .iter()
                .any(|p| running.contains(&normalise(p)))
        })
        .map(|g| g.slug.clone())
        .collect()
}

/// Names of the processes running now (normalised).
pub fn running_processes() -> BTreeSet<String> {
    let mut sys = System::new_with_specifics(
        RefreshKind::nothing().with_processes(ProcessRefreshKind::nothing()),
    );
    sys.refresh_processes_specifics(ProcessesToUpdate::All, true, ProcessRefreshKind::nothing());
    sys.processes()
        .values()
        .map(|p| normalise(&p.name().to_string_lossy()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_by_process_name() {
        let g = |slug: &str, procs: &[&str]| Game {
            slug: slug.into(),
            name: slug.into(),
            category: None,
            regions: vec![],
            process_names: procs.iter().map(|s| s.to_string()).collect(),
        };
        let games = [
            g("cs2", &["cs2.exe"]),
            g("dota2", &["dota2.exe", "dota2"]),
            g("x", &[]),
        ];
        let running: BTreeSet<String> = ["cs2", "bash"].map(String::from).into();
        assert_eq!(matching(&games, &running), ["cs2"]);
        assert!(matching(&games, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn sees_this_test_process() {
        let me = std::env::current_exe().unwrap();
        let name = me.file_name().unwrap().to_string_lossy().to_string();
        // Process names are truncated to 15 bytes by Linux's comm; compare prefixes.
        let running = running_processes();
        assert!(
            running
                .iter()
                .any(|p| name.to_lowercase().starts_with(p.as_str()) && !p.is_empty()),
            "{name} not among {} processes",
            running.len()
        );
    }
}
