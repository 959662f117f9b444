//! Issue 5's assertions, through real links, a real node and the real multipath client: short
//! runs, fixed seeds, bounds from the binomial distribution rather than magic numbers.

use std::path::Path;

use plg_sim::report::{PolicyReport, PolicyStatus, RunReport, StreamStats};
use plg_sim::runner::Harness;
use plg_sim::scenario::{Policy, Scenario};

/// z for the upper end of a 99.99 % interval. Stricter than the issue's 99 % on purpose: a
/// correct implementation then fails one CI run in ten thousand instead of one in a hundred,
/// and the bound (0.67 % over 2,000 packets) still catches any real defect (no dedup = 5 %,
/// correlated paths ≈ 1 % and up).
const Z: f64 = 3.72;

/// One scenario at a time: these tests measure timing, so they must not compete for the
/// machine's two cores with each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(toml: &str) -> RunReport {
    let _one_at_a_time = SERIAL.lock().await;
    let s = Scenario::parse(toml, Path::new("inline.toml")).unwrap();
    let mut h = Harness::start().await.unwrap();
    let r = h.run_scenario(&s, s.seed).await;
    h.stop().await;
    eprintln!("{}", plg_sim::report::render_table(&r));
    r
}

fn ran(r: &RunReport, p: Policy) -> &PolicyReport {
    let pr = r.policy(p).unwrap();
    assert!(
        matches!(pr.status, PolicyStatus::Ran { .. }),
        "{p:?}: {:?}",
        pr.status
    );
    pr
}

fn dirs(p: &PolicyReport) -> [(&'static str, &StreamStats); 2] {
    [
        ("up", p.up.as_ref().unwrap()),
        ("down", p.down.as_ref().unwrap()),
    ]
}

/// Upper 99.99 % bound, in percent, on the loss rate observed over `n` packets when the true rate is `p`.
fn upper_bound_pct(p: f64, n: u64) -> f64 {
    100.0 * (p + Z * (p * (1.0 - p) / n as f64).sqrt())
}

const TWO_LOSSY_PATHS: &str = r#"
name = "two-lossy-paths"
duration = 8
seed = 11
policies = ["single", "duplicate", "adaptive"]
[traffic]
tick_rate = 250
min_size = 100
max_size = 300
[[paths]]
name = "a"
both = { delay_ms = 5, loss_pct = 5 }
[[paths]]
name = "b"
both = { delay_ms = 8, loss_pct = 5 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_leaves_p_squared_and_adaptive_stays_within_twice_that() {
    let r = run(TWO_LOSSY_PATHS).await;
    let dup = ran(&r, Policy::Duplicate);
    let single = ran(&r, Policy::Single);
    let adaptive = ran(&r, Policy::Adaptive);
    for (dir, st) in dirs(dup) {
        let bound = upper_bound_pct(0.05 * 0.05, st.sent);
        assert!(
            st.residual_loss_pct <= bound,
            "duplicate {dir}: {} % > {bound:.3} % (p² = 0.25 %)",
            st.residual_loss_pct
        );
        assert_eq!(st.duplicates, 0, "the game must never see a copy");
    }
    for (dir, st) in dirs(single) {
        // Sanity: the links really lose 5 %; otherwise the duplicate figure proves nothing.
        assert!(
            st.residual_loss_pct > 2.0,
            "single {dir}: {} %",
            st.residual_loss_pct
        );
    }
    for ((dir, a), (_, d)) in dirs(adaptive).into_iter().zip(dirs(dup)) {
        // "≤ 2× the duplicate figure", with the duplicate figure taken at its 99 % upper bound so
        // a lucky duplicate run can't fail an honest adaptive one.
        let limit = 2.0 * d.residual_loss_pct.max(upper_bound_pct(0.0025, d.sent));
        assert!(
            a.residual_loss_pct <= limit,
            "adaptive {dir}: {} % > {limit:.3} %",
            a.residual_loss_pct
        );
    }
}

const TWO_CLEAN_PATHS: &str = r#"
name = "two-clean-paths"
duration = 3
seed = 12
policies = ["single", "adaptive"]
[traffic]
tick_rate = 128
[[paths]]
name = "a"
both = { delay_ms = 5 }
[[paths]]
name = "b"
both = { delay_ms = 8 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_on_clean_paths_costs_at_most_1_1x_single() {
    let r = run(TWO_CLEAN_PATHS).await;
    let single = ran(&r, Policy::Single);
    let adaptive = ran(&r, Policy::Adaptive);
    for ((dir, a), (_, s)) in dirs(adaptive).into_iter().zip(dirs(single)) {
        assert_eq!(a.lost, 0, "adaptive {dir} lost on clean paths");
        let wire = |st: &StreamStats| st.wire_bytes as f64;
        assert!(
            wire(a) <= 1.1 * wire(s),
            "adaptive {dir}: {} bytes vs single {} bytes",
            a.wire_bytes,
            s.wire_bytes
        );
    }
}

const PRIMARY_BLACKHOLED: &str = r#"
name = "primary-blackholed"
duration = 3
seed = 13
policies = ["single", "duplicate"]
[traffic]
tick_rate = 100
[[paths]]
name = "primary"
both = { delay_ms = 5 }
[[paths]]
name = "backup"
both = { delay_ms = 15 }
[[events]]
kind = "blackhole"
path = 0
at = 1.0
duration = 1.5
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_primary_duplicate_never_gaps_and_single_recovers_within_300ms() {
    let r = run(PRIMARY_BLACKHOLED).await;
    let interval_ms = 1000.0 / 100.0;
    for (dir, st) in dirs(ran(&r, Policy::Duplicate)) {
        // One packet interval, plus the backup's extra 10 ms of delay at the switch, plus up to
        // 30 ms of scheduling noise: on a loaded 2-core box the whole process can stall that
        // long (seen: a 36 ms gap at a time the blackhole was not even active).
        let limit = interval_ms + 10.0 + 30.0;
        assert!(
            st.longest_gap_ms <= limit,
            "duplicate {dir}: gap {} ms > {limit} ms",
            st.longest_gap_ms
        );
        assert_eq!(st.lost, 0, "duplicate {dir} lost packets");
    }
    for (dir, st) in dirs(ran(&r, Policy::Single)) {
        assert!(
            st.longest_gap_ms <= 300.0,
            "single {dir}: gap {} ms at {} s",
            st.longest_gap_ms,
            st.longest_gap_at_s
        );
        assert!(
            st.longest_gap_ms >= 100.0,
            "single {dir}: the blackhole must show ({} ms)",
            st.longest_gap_ms
        );
    }
}
