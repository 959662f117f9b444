//! Scenarios in virtual time (`plg-sim run --mode virtual`): bit-exact repeatability, shared
//! segments that make paths lose together, the game side, cross traffic, several sessions,
//! more than two paths, and the checks that keep a scenario from promising what a mode cannot
//! run.

use std::path::Path;

use plg_sim::report::{PolicyReport, RunReport};
use plg_sim::scenario::{Policy, Scenario};
use plg_sim::vrun;

fn scenario(toml: &str) -> Scenario {
    Scenario::parse(toml, Path::new("test.toml")).expect("valid scenario")
}

fn up_lost(p: &PolicyReport) -> (u64, u64) {
    let s = p.up.as_ref().expect("ran");
    (s.lost, s.sent)
}

fn policy(r: &RunReport, p: Policy) -> &PolicyReport {
    r.policy(p).expect("policy in the report")
}

/// Exact two-sided 95 % Clopper–Pearson interval of k in n, by bisection on the binomial
/// tails (kept here, independent of the crate's statistics, so the test checks the runs and
/// not the code under test).
fn ci95(k: u64, n: u64) -> (f64, f64) {
    let cdf = |p: f64, upto: u64| -> f64 {
        // P(X <= upto) for Binomial(n, p), in log space.
        let mut sum = 0.0;
        let mut log_c = 0.0f64;
        for i in 0..=upto {
            if i > 0 {
                log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
            }
            sum += (log_c + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp();
        }
        sum
    };
    let solve = |f: &dyn Fn(f64) -> f64| {
        let (mut lo, mut hi) = (1e-12, 1.0 - 1e-12);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if f(mid) > 0.0 { lo = mid } else { hi = mid }
        }
        (lo + hi) / 2.0
    };
    let lower = if k == 0 {
        0.0
    } else {
        solve(&|p| 0.025 - (1.0 - cdf(p, k - 1)))
    };
    let upper = if k == n {
        1.0
    } else {
        solve(&|p| cdf(p, k) - 0.025)
    };
    (lower, upper)
}

const TWO_LOSSY_PATHS: &str = r#"
duration = 60
seed = 11
[[paths]]
name = "a"
both = { delay_ms = 20, loss_pct = 5, jitter_ms = 2 }
[[paths]]
name = "b"
both = { delay_ms = 25, loss_pct = 5, jitter_ms = 2 }
"#;

#[test]
fn the_same_seed_gives_the_same_report_byte_for_byte() {
    let s = scenario(TWO_LOSSY_PATHS);
    let t0 = std::time::Instant::now();
    let a = serde_json::to_string_pretty(&vrun::run_scenario(&s, 11)).unwrap();
    let wall = t0.elapsed();
    let b = serde_json::to_string_pretty(&vrun::run_scenario(&s, 11)).unwrap();
    assert!(a == b, "two runs with seed 11 differ");
    let c = serde_json::to_string_pretty(&vrun::run_scenario(&s, 12)).unwrap();
    assert!(a != c, "another seed gives another run");
    let r: RunReport = serde_json::from_str(&a).unwrap();
    assert!(r.policies.iter().all(PolicyReport::ran));
    println!(
        "3 policies × 60 s at 64 ticks/s each way, virtual time: {:.2} s of wall time; report {} bytes, identical twice",
        wall.as_secs_f64(),
        a.len()
    );
    // The direct route is repeatable too.
    let d1 = serde_json::to_string(&vrun::run_direct(&s, 11).unwrap()).unwrap();
    let d2 = serde_json::to_string(&vrun::run_direct(&s, 11).unwrap()).unwrap();
    assert_eq!(d1, d2);
}

#[test]
fn independent_paths_leave_p_squared_and_a_shared_segment_does_not() {
    // Two paths with 5 % loss each, independent: duplicate leaves p² = 0.25 %.
    let s = scenario(TWO_LOSSY_PATHS);
    let r = vrun::run_policy(&s, 11, Policy::Duplicate);
    let (k, n) = up_lost(&r);
    let (lo, hi) = ci95(k, n);
    println!(
        "independent: duplicate lost {k}/{n}, 95 % CI {:.3}–{:.3} %",
        lo * 100.0,
        hi * 100.0
    );
    assert!(lo <= 0.0025 && 0.0025 <= hi, "p² outside the CI");

    // The same two paths, clean, behind one shared Wi-Fi losing 5 % in bursts: both copies of
    // a packet cross it within a millisecond, in the same state, so they lose together and
    // duplication barely helps — residual loss stays near p, far from p². (Independent loss
    // on a shared segment is drawn per transmission: copies would not lose together.)
    let shared = scenario(
        r#"
duration = 60
seed = 11
[[segments]]
name = "wifi"
both = { burst = { mean_good_ms = 950, mean_bad_ms = 50 } }
[[paths]]
name = "a"
segments = ["wifi"]
both = { delay_ms = 20 }
[[paths]]
name = "b"
segments = ["wifi"]
both = { delay_ms = 25 }
"#,
    );
    let r = vrun::run_policy(&shared, 11, Policy::Duplicate);
    let (k, n) = up_lost(&r);
    let (lo, hi) = ci95(k, n);
    println!(
        "shared Wi-Fi: duplicate lost {k}/{n}, 95 % CI {:.2}–{:.2} %",
        lo * 100.0,
        hi * 100.0
    );
    assert!(
        lo > 0.02,
        "the shared segment's loss must survive duplication"
    );
    assert!(lo > 0.0025 * 2.0, "the CI does not exclude 2p²");
    assert_eq!(r.segments.len(), 1);
    assert!(r.segments[0].link.up.dropped_burst > 0);

    // On the game side (the exit's route to the server), loss hits every policy alike.
    let game_side = scenario(
        r#"
duration = 60
seed = 11
[[segments]]
name = "dc"
side = "game"
both = { loss_pct = 3 }
[[paths]]
both = { delay_ms = 20 }
[[paths]]
both = { delay_ms = 25 }
"#,
    );
    let r = vrun::run_scenario(&game_side, 11);
    for p in [Policy::Single, Policy::Duplicate, Policy::Adaptive] {
        let (k, n) = up_lost(policy(&r, p));
        let (lo, hi) = ci95(k, n);
        println!("game side 3 %: {p} lost {k}/{n}");
        assert!(lo <= 0.03 && 0.03 <= hi, "{p}: 3 % outside [{lo}, {hi}]");
    }
    let direct = vrun::run_direct(&game_side, 11).unwrap();
    assert!(
        direct.up.lost > 0,
        "the direct route crosses the game side too"
    );
}

#[test]
fn three_paths_run_in_virtual_time_and_are_refused_by_the_real_harness() {
    let s = scenario(
        r#"
duration = 60
seed = 5
[[paths]]
both = { delay_ms = 20, loss_pct = 10 }
[[paths]]
both = { delay_ms = 22, loss_pct = 10 }
[[paths]]
both = { delay_ms = 24, loss_pct = 10 }
"#,
    );
    let e = s.check_real_mode().unwrap_err();
    assert!(e.contains("--mode virtual"), "{e}");
    let r = vrun::run_policy(&s, 5, Policy::Duplicate);
    let (k, n) = up_lost(&r);
    let (lo, hi) = ci95(k, n);
    println!(
        "three paths at 10 %: duplicate lost {k}/{n} (p³ = 0.1 %), CI {:.3}–{:.3} %",
        lo * 100.0,
        hi * 100.0
    );
    assert!(lo <= 0.001 && 0.001 <= hi);
    assert!(hi < 0.01, "three copies must beat p² = 1 %");
    assert_eq!(r.links.len(), 3);
    assert!(r.links.iter().all(|l| l.up.packets_in > n));
}

#[test]
fn other_sessions_and_cross_traffic_share_what_they_share_and_nothing_else() {
    let base = r#"
duration = 30
seed = 3
[topology]
sessions = SESSIONS
[[segments]]
name = "last-mile"
both = { rate_kbps = 600, rate_burst_bytes = 6000 }
[[paths]]
both = { delay_ms = 20, loss_pct = 2 }
CROSS
"#;
    let run = |sessions: usize, cross: &str, segment: bool| {
        let mut t = base
            .replace("SESSIONS", &sessions.to_string())
            .replace("CROSS", cross);
        if segment {
            t = t.replace("[[paths]]\n", "[[paths]]\nsegments = [\"last-mile\"]\n");
        }
        vrun::run_policy(&scenario(&t), 3, Policy::Single)
    };
    // Without a shared segment, a second session changes nothing for session 0: every link
    // draws from its own stream.
    let alone = run(1, "", false);
    let with_two = run(3, "", false);
    assert_eq!(
        alone.up, with_two.up,
        "other sessions shifted session 0's draws"
    );
    assert_eq!(alone.down, with_two.down);
    assert_eq!(with_two.sessions.len(), 2);
    for s in &with_two.sessions {
        assert!(s.up.delivered > 0 && s.down.delivered > 0);
    }

    // Three sessions through one 600 kbit/s last mile: each game sends ~200 B × 64/s ≈ 128
    // kbit/s plus the frame overhead each way, so three fit and the segment drops nothing for
    // the rate; add 500 kbit/s of cross traffic and the rate limit bites.
    let fits = run(3, "", true);
    let seg = &fits.segments[0].link;
    println!(
        "3 sessions, 600 kbit/s last mile: rate drops up {} down {}",
        seg.up.dropped_rate, seg.down.dropped_rate
    );
    assert_eq!(seg.up.dropped_rate + seg.down.dropped_rate, 0);
    let crowded = run(
        3,
        "[[cross]]\nsegment = \"last-mile\"\nrate_kbps = 500\nsize = 1000\n",
        true,
    );
    let seg = &crowded.segments[0].link;
    let (k, n) = up_lost(&crowded);
    println!(
        "… plus 500 kbit/s of cross traffic: rate drops up {} down {}; session 0 lost {k}/{n} upstream",
        seg.up.dropped_rate, seg.down.dropped_rate
    );
    assert!(seg.up.dropped_rate > 0 && seg.down.dropped_rate > 0);
    assert!(
        k > up_lost(&fits).0,
        "cross traffic must cost session 0 packets"
    );
}

#[test]
fn node_kills_fail_over_in_virtual_time() {
    let s = Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/exit-kill.toml"))
        .unwrap();
    let r = vrun::run_policy(&s, s.seed, Policy::Duplicate);
    assert_eq!(r.failovers.len(), 1, "{:?}", r.failovers);
    let f = &r.failovers[0];
    assert_eq!(f.node, Some(1));
    println!(
        "exit killed at 3 s: failover to node 1 at {:.2} s, gap {:.0} ms",
        f.at_s, f.gap_ms
    );
    assert!((3.0..5.0).contains(&f.at_s));
    // Traffic after the failover crosses the backup exit's own link.
    assert!(
        r.links[2].up.packets_in > 100,
        "{:?}",
        r.links[2].up.packets_in
    );
}
