//! Route choice on the whole path against the oracle (issue 15): the shipped hand-written
//! topologies make the client pick what they are about, and on ≥ 100 seeded random geographic
//! topologies the client, which knows only its probes, meets the targets against the oracle,
//! which knows every link.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use plg_sim::geo::GeoParams;
use plg_sim::routes::{DEFAULT_PROBES, Outcome, Summary, evaluate, sweep};
use plg_sim::topology::{Route, Topology};

fn shipped(name: &str) -> Topology {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/topologies")
        .join(format!("{name}.toml"));
    Topology::load(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn relay(entry: &str, exit: &str) -> Route {
    Route::Relay {
        entry: entry.into(),
        exit: exit.into(),
    }
}

#[test]
fn the_generator_is_deterministic_per_seed() {
    let p = GeoParams::default();
    for i in 0..20 {
        assert_eq!(p.generate(7, i), p.generate(7, i));
    }
    let differs = (0..20)
        .filter(|&i| p.generate(7, i) != p.generate(8, i))
        .count();
    assert_eq!(differs, 20);
    // Probes included: the whole sweep is the same twice.
    assert_eq!(sweep(&p, 7, 30, 10), sweep(&p, 7, 30, 10));
    assert_ne!(sweep(&p, 7, 30, 10), sweep(&p, 8, 30, 10));
}

#[test]
fn the_nearest_node_is_not_the_exit_in_the_trap() {
    let t = shipped("nearest-node-wrong-exit");
    let o = evaluate(&t, 0, DEFAULT_PROBES);
    // fra-2 is the nearest node (8 ms) and the worst exit (90 ms to the server): the client
    // enters there but leaves through ams-1 (8 + 9 + 30 = 47 ms), as the oracle does.
    assert_eq!(o.client.route, relay("fra-2", "ams-1"), "{o:#?}");
    assert_eq!(o.client.route, o.oracle.route);
    assert_eq!(o.nearest.as_ref().unwrap().route, relay("fra-2", "fra-2"));
    assert!(o.nearest.as_ref().unwrap().rtt_ms > o.direct.rtt_ms);
    assert!(
        o.summary.starts_with("direct 9") && o.summary.contains("→ via ams-1 via fra-2 47 ms"),
        "{}",
        o.summary
    );
    assert!((o.ping_reduction_pct(&o.client) - 100.0 * (1.0 - 47.0 / 95.0)).abs() < 0.1);
}

#[test]
fn the_client_says_when_direct_is_best() {
    let o = evaluate(&shipped("direct-is-best"), 0, DEFAULT_PROBES);
    assert!(o.direct_is_best() && o.client_says_direct(), "{o:#?}");
    assert!(
        o.summary.contains("is better than any route"),
        "{}",
        o.summary
    );
}

#[test]
fn loss_and_mesh_hops_count() {
    // Shortest is not best when it loses 3 % each way.
    let o = evaluate(&shipped("lossy-direct"), 0, DEFAULT_PROBES);
    assert!(o.client.rtt_ms > o.direct.rtt_ms);
    assert_eq!(o.client.route, relay("par-1", "par-1"), "{o:#?}");
    // Enter at one node, leave at another.
    let o = evaluate(&shipped("mesh-hop"), 0, DEFAULT_PROBES);
    assert_eq!(o.client.route, relay("fra-1", "sin-1"), "{o:#?}");
    assert_eq!(o.client.route, o.oracle.route);
}

#[test]
fn a_sweep_of_200_random_topologies_meets_the_targets() {
    let started = Instant::now();
    let outcomes = sweep(&GeoParams::default(), 1, 200, DEFAULT_PROBES);
    let s = Summary::of(&outcomes);
    eprintln!("{}", plg_sim::routes::render_summary(&s));
    assert_eq!(s.runs, 200);
    assert!(s.targets_met(), "{s:#?}");
    // The generator is not degenerate: better routes exist in some topologies, not all.
    assert!(
        (20..=180).contains(&s.better_route_exists),
        "{}",
        s.better_route_exists
    );
    assert!(s.mean_ping_reduction_client_pct > 5.0, "{s:#?}");
    assert!(s.direct_best_said * 100 >= s.direct_best * 90, "{s:#?}");
    // The yardstick can fail: ranking nodes by the client's own probe alone (the nearest node
    // as exit) misses both targets by far.
    let nearest: Vec<Outcome> = outcomes
        .iter()
        .map(|o| Outcome {
            client: o.nearest.clone().unwrap(),
            ..o.clone()
        })
        .collect();
    assert!(!Summary::of(&nearest).targets_met());
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

fn plg_sim(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_plg-sim"))
        .args(args)
        .output()
        .expect("running plg-sim");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "plg-sim {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn plg_sim_routes_prints_and_writes_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let text = plg_sim(&[
        "routes",
        "--topologies",
        "20",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(text.contains("client within 5 % of the oracle"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("routes.json")).unwrap()).unwrap();
    assert_eq!(json["outcomes"].as_array().unwrap().len(), 20);
    assert_eq!(json["summary"]["runs"], 20);
    let table = std::fs::read_to_string(out.join("routes.txt")).unwrap();
    assert!(
        table.contains("every topology:") && table.contains("geo-3-19"),
        "{table}"
    );

    let file: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/topologies/nearest-node-wrong-exit.toml");
    let one = tmp.path().join("one");
    let text = plg_sim(&[
        "routes",
        "--topology",
        file.to_str().unwrap(),
        "--out",
        one.to_str().unwrap(),
    ]);
    assert!(
        text.contains("ams-1 via fra-2") && text.contains("← oracle  ← client"),
        "{text}"
    );
    assert!(one.join("routes.json").exists());
}
