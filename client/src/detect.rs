//! Game detection: which catalog games are running, by matching the names of running
//! processes against each game's `process_names`.
//!
//! Linux reads `/proc` (the short `comm` name, `argv[0]` and the executable's file name, so
//! Wine/Proton games such as `cs2.exe` match too); Windows asks `tasklist`. Matching is
//! case-insensitive, ignores a trailing `.exe` on either side and accepts the kernel's
//! 15-byte truncation of `comm`.

use crate::billing::GameInfo;

/// A process seen on this machine, with the names it may be known by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningProcess {
    /// Process id.
    pub pid: u32,
    /// Candidate names (file names, no directories).
    pub names: Vec<String>,
}

/// A catalog game found running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    /// Catalog slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// The matching process.
    pub pid: u32,
    /// The name that matched.
    pub process: String,
}

/// Linux truncates `/proc/<pid>/comm` to this many bytes.
const COMM_LEN: usize = 15;

/// The comparable form of a process name: file name only, lower case, no `.exe`.
fn normalize(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name).trim();
    let lower = base.to_lowercase();
    lower.strip_suffix(".exe").unwrap_or(&lower).to_owned()
}

/// Whether a process known as `seen` is the catalog's `wanted`.
pub fn name_matches(seen: &str, wanted: &str) -> bool {
    let (s, w) = (normalize(seen), normalize(wanted));
    if s.is_empty() || w.is_empty() {
        return false;
    }
    if s == w {
        return true;
    }
    // `comm` is cut at 15 bytes (including any ".exe"): compare the same prefix.
    let raw = seen
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(seen)
        .to_lowercase();
    let full = wanted
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(wanted)
        .to_lowercase();
    raw.len() == COMM_LEN && full.len() > COMM_LEN && full.as_bytes().starts_with(raw.as_bytes())
}

/// The catalog games among `processes`, one entry per game (the lowest pid wins), in catalog
/// order.
pub fn detect(games: &[GameInfo], processes: &[RunningProcess]) -> Vec<Detected> {
    let mut out = Vec::new();
    for g in games {
        let hit = processes
            .iter()
            .filter_map(|p| {
                p.names.iter().find_map(|n| {
                    g.process_names
                        .iter()
                        .any(|w| name_matches(n, w))
                        .then(|| (p.pid, n.clone()))
                })
            })
            .min_by_key(|(pid, _)| *pid);
        if let Some((pid, process)) = hit {
            out.push(Detected {
                slug: g.slug.clone(),
                name: g.name.clone(),
                pid,
                process,
            });
        }
    }
    out
}

/// The processes running now (empty where listing is not supported).
pub fn running_processes() -> Vec<RunningProcess> {
    platform::list()
}

#[cfg(target_os = "linux")]
mod platform {
    use super::RunningProcess;

    pub(super) fn list() -> Vec<RunningProcess> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let mut names = Vec::new();
            if let Ok(comm) = std::fs::read_to_string(path.join("comm")) {
                names.push(comm.trim_end_matches('\n').to_owned());
            }
            // argv[0], as the program set it (Wine shows the Windows path of the .exe here).
            if let Ok(cmdline) = std::fs::read(path.join("cmdline"))
                && let Some(arg0) = cmdline.split(|b| *b == 0).next()
                && !arg0.is_empty()
            {
                names.push(String::from_utf8_lossy(arg0).into_owned());
            }
            if let Ok(exe) = std::fs::read_link(path.join("exe"))
                && let Some(f) = exe.file_name()
            {
                names.push(f.to_string_lossy().into_owned());
            }
            names.dedup();
            if !names.is_empty() {
                out.push(RunningProcess { pid, names });
            }
        }
        out
    }
}

#[cfg(windows)]
mod platform {
    use super::RunningProcess;

    /// `tasklist /fo csv /nh` prints `"name.exe","pid",...` per process.
    pub(super) fn list() -> Vec<RunningProcess> {
        let Ok(out) = std::process::Command::new("tasklist")
            .args(["/fo", "csv", "/nh"])
            .output()
        else {
            return Vec::new();
        };
        super::parse_tasklist(&String::from_utf8_lossy(&out.stdout))
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
mod platform {
    use super::RunningProcess;

    pub(super) fn list() -> Vec<RunningProcess> {
        Vec::new()
    }
}

/// Parses `tasklist /fo csv /nh` output.
#[cfg_attr(not(windows), allow(dead_code))]
fn parse_tasklist(text: &str) -> Vec<RunningProcess> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split("\",\"");
            let name = fields.next()?.trim().trim_start_matches('"').to_owned();
            let pid = fields.next()?.trim_matches('"').parse().ok()?;
            Some(RunningProcess {
                pid,
                names: vec![name],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(slug: &str, names: &[&str]) -> GameInfo {
        GameInfo {
            slug: slug.into(),
            name: slug.to_uppercase(),
            category: None,
            regions: Vec::new(),
            process_names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn proc(pid: u32, names: &[&str]) -> RunningProcess {
        RunningProcess {
            pid,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn names_match_case_and_exe_insensitively() {
        assert!(name_matches("cs2", "cs2"));
        assert!(name_matches("CS2.EXE", "cs2.exe"));
        assert!(name_matches("cs2", "cs2.exe"));
        assert!(name_matches("cs2.exe", "cs2"));
        assert!(name_matches(
            "C:\\Games\\Steam\\steamapps\\common\\cs2.exe",
            "cs2.exe"
        ));
        assert!(name_matches("/opt/games/cs2", "cs2"));
        assert!(!name_matches("cs2-helper", "cs2"));
        assert!(!name_matches("cs", "cs2"));
        assert!(!name_matches("", "cs2"));
        assert!(!name_matches("cs2", ""));
    }

    #[test]
    fn truncated_comm_matches_the_long_name() {
        // What /proc/<pid>/comm shows for VALORANT's game process under Wine.
        assert!(name_matches(
            "VALORANT-Win64-",
            "VALORANT-Win64-Shipping.exe"
        ));
        // A 15-byte name that is simply another program does not.
        assert!(!name_matches("VALORANT-Win64-", "Fortnite.exe"));
        // Short names must match exactly.
        assert!(!name_matches("VALOR", "VALORANT.exe"));
    }

    #[test]
    fn detect_finds_each_running_game_once() {
        let games = [
            game("cs2", &["cs2.exe", "cs2"]),
            game("dota2", &["dota2.exe"]),
            game("valorant", &["VALORANT-Win64-Shipping.exe"]),
        ];
        let procs = [
            proc(10, &["bash"]),
            proc(42, &["cs2", "/home/u/cs2"]),
            proc(41, &["cs2"]),
            proc(77, &["VALORANT-Win64-", "VALORANT-Win64-Shipping.exe"]),
        ];
        let found = detect(&games, &procs);
        assert_eq!(
            found
                .iter()
                .map(|d| (d.slug.as_str(), d.pid))
                .collect::<Vec<_>>(),
            [("cs2", 41), ("valorant", 77)]
        );
        assert!(detect(&games, &[proc(1, &["init"])]).is_empty());
    }

    #[test]
    fn tasklist_csv_parses() {
        let text = "\"System Idle Process\",\"0\",\"Services\",\"0\",\"8 K\"\r\n\
                    \"cs2.exe\",\"4242\",\"Console\",\"1\",\"1,234,567 K\"\r\n\
                    garbage\r\n";
        assert_eq!(
            parse_tasklist(text),
            [proc(0, &["System Idle Process"]), proc(4242, &["cs2.exe"])]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_test_process_is_listed() {
        let me = std::process::id();
        let all = running_processes();
        let p = all.iter().find(|p| p.pid == me).expect("own pid listed");
        assert!(!p.names.is_empty());
    }
}
