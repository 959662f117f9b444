//! Every shipped scenario runs through the real `plg-sim run` binary — in virtual time at its
//! full length, and with real processes (shortened with `--duration`, events scaled alike)
//! when the real harness can run it — every policy is measured, and the files a tester reads
//! are written; `plg-sim sweep` draws its curve.

use std::path::{Path, PathBuf};
use std::process::Command;

use plg_sim::report::{PolicyStatus, RunReport, SweepReport};
use plg_sim::scenario::Scenario;

fn plg_sim(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plg-sim"))
        .args(args)
        .output()
        .expect("running plg-sim");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "plg-sim {args:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_scenario_runs_with_plg_sim_run() {
    let tmp = tempfile::tempdir().unwrap();
    let scenarios = shipped();
    assert!(scenarios.len() >= 8, "{scenarios:?}");
    let runs = scenarios.iter().flat_map(|path| {
        let real = Scenario::load(path).unwrap().check_real_mode().is_ok();
        let mut v = vec![(path.clone(), "virtual")];
        if real {
            v.push((path.clone(), "real"));
        }
        v
    });
    let mut real_runs = 0;
    for (path, mode) in runs {
        let name = format!("{}-{mode}", path.file_stem().unwrap().to_string_lossy());
        let out = tmp.path().join(&name);
        let mut args = vec![
            "run",
            path.to_str().unwrap(),
            "--mode",
            mode,
            "--out",
            out.to_str().unwrap(),
        ];
        if mode == "real" {
            real_runs += 1;
            args.extend(["--duration", "2"]);
        }
        let (table, _) = plg_sim(&args);
        assert!(table.contains("residual loss"), "{name}: {table}");
        for f in [
            "report.json",
            "report.txt",
            "report.csv",
            "latency.svg",
            "paths.svg",
            "loss.svg",
        ] {
            let len = std::fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
            assert!(len > 100, "{name}: {f} missing or empty");
        }
        let r: RunReport =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert!(!r.policies.is_empty(), "{name}");
        for p in &r.policies {
            assert!(
                matches!(p.status, PolicyStatus::Ran { .. }),
                "{name} {}: {:?}",
                p.policy,
                p.status
            );
            let up = p.up.as_ref().unwrap();
            assert!(
                up.sent > 0 && up.delivered > 0,
                "{name} {}: {up:?}",
                p.policy
            );
        }
        eprintln!("{name}: ok");
    }
    assert!(
        real_runs >= 8,
        "most shipped scenarios run on real sockets too"
    );
}

#[test]
fn the_real_harness_refuses_what_it_cannot_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for (file, what) in [
        ("three-paths.toml", "1..=2"),
        ("shared-wifi.toml", "shared segments"),
        ("crowded-last-mile.toml", "virtual time only"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_plg-sim"))
            .args(["run", dir.join(file).to_str().unwrap(), "--mode", "real"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} ran in real mode");
        assert!(
            err.contains(what) && err.contains("--mode virtual"),
            "{file}: {err}"
        );
    }
}

#[test]
fn sweep_draws_residual_loss_per_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/random-loss-5pct.toml");
    let (table, _) = plg_sim(&[
        "sweep",
        scenario.to_str().unwrap(),
        "--loss",
        "0,20",
        "--duration",
        "1",
        "--repeat",
        "2",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    let s: SweepReport =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("sweep.json")).unwrap())
            .unwrap();
    assert_eq!(s.points.len(), 2, "{table}");
    assert_eq!(s.repeat, 2);
    // Two seeds pooled per point: twice the packets of one run, with an interval.
    let pooled = s.points[1]
        .aggregate
        .as_ref()
        .expect("repeated point pooled");
    assert_eq!(pooled.seeds.len(), 2);
    assert_eq!(pooled.seeds[0], s.points[1].seed);
    let single = pooled.rows.iter().find(|r| r.route == "single").unwrap();
    let first = s.points[1].policies[0].up.as_ref().unwrap();
    assert!(single.up.loss.sent > first.sent, "{table}");
    assert!(
        single.up.loss.ci_lo_pct < single.up.loss.pct
            && single.up.loss.pct < single.up.loss.ci_hi_pct
    );
    assert!(table.contains("2 seeds pooled per point"), "{table}");
    let csv = std::fs::read_to_string(tmp.path().join("sweep.csv")).unwrap();
    // The direct route is measured at every point and pooled like the policies.
    assert!(s.points.iter().all(|p| p.direct.is_some()), "{table}");
    assert_eq!(pooled.rows[0].route, "direct (no PLG)");
    assert_eq!(pooled.rows[0].runs, 2);
    assert_eq!(
        csv.lines().count(),
        1 + 2 * (1 + s.points[1].policies.len()),
        "{csv}"
    );
    let svg = std::fs::read_to_string(tmp.path().join("sweep.svg")).unwrap();
    for p in &s.points[1].policies {
        assert!(svg.contains(p.policy.name()), "{} not drawn", p.policy);
        let up = p.up.as_ref().expect("measured");
        // 20 % on each path: one path shows it, two paths show far less, none shows nothing.
        assert!(up.sent >= 60, "{up:?}");
    }
    let single = s.points[1]
        .policies
        .iter()
        .find(|p| p.policy.name() == "single")
        .unwrap();
    assert!(
        single.up.as_ref().unwrap().residual_loss_pct > 5.0,
        "single at 20 % injected: {table}"
    );
}

#[test]
fn run_with_direct_and_repeat_pools_the_seeds_and_writes_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/random-loss-5pct.toml");
    let (table, _) = plg_sim(&[
        "run",
        scenario.to_str().unwrap(),
        "--duration",
        "1",
        "--direct",
        "--repeat",
        "2",
        "--seed",
        "9",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(table.contains("2 seeds pooled (9, "), "{table}");
    assert!(table.contains("direct (no PLG)"), "{table}");
    let agg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("aggregate.json")).unwrap())
            .unwrap();
    let seeds = agg["aggregate"]["seeds"].as_array().unwrap();
    assert_eq!(seeds.len(), 2);
    assert_eq!(seeds[0], 9);
    let rows = agg["aggregate"]["rows"].as_array().unwrap();
    assert_eq!(rows[0]["route"], "direct (no PLG)");
    assert_eq!(rows[0]["runs"], 2);
    // Each seed's full report, with the direct baseline in it.
    for seed in seeds {
        let dir = tmp.path().join(format!("seed-{seed}"));
        let r: RunReport =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap())
                .unwrap();
        let d = r.direct.expect("direct baseline in report.json");
        assert!(d.up.sent > 0 && d.up.loss.ci_hi_pct > d.up.loss.pct);
        let csv = std::fs::read_to_string(dir.join("report.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 1 + r.policies.len(), "{csv}");
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .contains(",direct (no PLG),ran,"),
            "{csv}"
        );
    }
    let csv = std::fs::read_to_string(tmp.path().join("aggregate.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + rows.len(), "{csv}");
}
