//! Game detection: which catalog games are running, by matching the names of running
//! processes against each game's `process_names`.
//!
//! The process table comes from `sysinfo` (no child process, so no console window flashing
//! every few seconds on Windows). On Linux a process is known by its short `comm` name,
//! `argv[0]` and the executable's file name, so Wine/Proton games such as `cs2.exe` match too;
//! on Windows by its image name only (reading other processes' command lines means reading
//! their memory, which anti-cheat software watches). Matching is case-insensitive, ignores a
//! trailing `.exe` on either side and accepts the kernel's 15-byte truncation of `comm`.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

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
    if !sysinfo::IS_SUPPORTED_SYSTEM {
        return Vec::new();
    }
    // Threads are not processes here; on Windows the image name is all we read.
    let kind = ProcessRefreshKind::nothing().without_tasks();
    let kind = if cfg!(windows) {
        kind
    } else {
        kind.with_cmd(UpdateKind::Always)
            .with_exe(UpdateKind::Always)
    };
    let mut system = System::new();
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    system
        .processes()
        .values()
        .filter(|p| p.thread_kind().is_none())
        .filter_map(|p| {
            let names = names_of(p.name(), p.cmd(), p.exe());
            (!names.is_empty()).then(|| RunningProcess {
                pid: p.pid().as_u32(),
                names,
            })
        })
        .collect()
}

/// The names a process may be known by: its short name (Linux: `comm`, cut at 15 bytes;
/// Windows: the image name), `argv[0]` as the program set it (Wine shows the Windows path of
/// the `.exe` there) and the executable's file name.
fn names_of(name: &OsStr, cmd: &[OsString], exe: Option<&Path>) -> Vec<String> {
    let arg0 = cmd.first().map(OsString::as_os_str);
    let file = exe.and_then(Path::file_name);
    let mut names: Vec<String> = [Some(name), arg0, file]
        .into_iter()
        .flatten()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .collect();
    names.dedup();
    names
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
    fn names_come_from_comm_argv0_and_the_executable() {
        let os = |s: &str| OsString::from(s);
        // Proton: comm is cut, argv[0] is the Windows path, the executable is Wine's loader.
        assert_eq!(
            names_of(
                OsStr::new("VALORANT-Win64-"),
                &[os("Z:\\Games\\VALORANT-Win64-Shipping.exe"), os("-arg")],
                Some(Path::new("/usr/bin/wine64-preloader")),
            ),
            [
                "VALORANT-Win64-",
                "Z:\\Games\\VALORANT-Win64-Shipping.exe",
                "wine64-preloader"
            ]
        );
        // Repeats collapse; a missing command line or executable (a kernel thread, another
        // user's process) leaves the short name.
        assert_eq!(
            names_of(OsStr::new("cs2"), &[os("cs2")], Some(Path::new("/opt/cs2"))),
            ["cs2"]
        );
        assert_eq!(
            names_of(OsStr::new("kworker/0:1"), &[], None),
            ["kworker/0:1"]
        );
        assert!(names_of(OsStr::new(""), &[os("")], None).is_empty());
    }

    #[cfg(any(target_os = "linux", windows))]
    #[test]
    fn this_test_process_is_listed() {
        let me = std::process::id();
        let all = running_processes();
        let p = all.iter().find(|p| p.pid == me).expect("own pid listed");
        // The test binary's name (`plg_client-<hash>`, longer than `comm`) finds it.
        let exe = std::env::current_exe().unwrap();
        let exe = exe.file_name().unwrap().to_str().unwrap();
        assert!(p.names.iter().any(|n| name_matches(n, exe)), "{p:?}");
        // Threads are not listed as processes of their own (this test runs on one of ours).
        #[cfg(target_os = "linux")]
        {
            let threads: Vec<u32> = std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&tid| tid != me)
                .collect();
            assert!(!threads.is_empty());
            assert!(all.iter().all(|p| !threads.contains(&p.pid)), "{threads:?}");
        }
    }
}
