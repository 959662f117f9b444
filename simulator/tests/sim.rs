//! The simulator's own tests: impairment links (determinism, loss statistics, delay precision,
//! blackhole windows), scenario runs through a real node, and the JSON report round trip.
//! Short runs with fixed seeds; statistical bounds are 99 % intervals.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use plg_sim::link::{
    Decision, DirectionConfig, DropReason, GilbertElliott, Impairer, Impairment,
    JitterDistribution, Link, LinkConfig, ScheduledChange,
};
use plg_sim::report::{PolicyStatus, RunReport};
use plg_sim::runner::Harness;
use plg_sim::scenario::{Policy, Scenario};
use tokio::net::UdpSocket;

/// z for a two-sided 99 % normal interval.
const Z99: f64 = 2.576;

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// Runs `n` decisions of `imp` (one datagram per millisecond) and returns them.
fn decisions(seed: u64, imp: Impairment, n: u64) -> Vec<Decision> {
    let mut m = Impairer::new(seed, imp, vec![]);
    (0..n)
        .map(|i| m.decide(Duration::from_millis(i), 200))
        .collect()
}

fn lost(d: &[Decision]) -> Vec<bool> {
    d.iter().map(|d| matches!(d, Decision::Drop(_))).collect()
}

#[test]
fn same_seed_same_decisions_other_seed_other_decisions() {
    let imp = Impairment {
        loss_pct: 10.0,
        burst: Some(GilbertElliott {
            mean_good_ms: 50.0,
            mean_bad_ms: 3.0,
            loss_bad_pct: 100.0,
            loss_good_pct: 0.0,
        }),
        delay_ms: 20.0,
        jitter_ms: 5.0,
        jitter: JitterDistribution::Normal,
        reorder_pct: 2.0,
        duplicate_pct: 1.0,
        ..Default::default()
    };
    let a = decisions(42, imp.clone(), 5000);
    let b = decisions(42, imp.clone(), 5000);
    let c = decisions(43, imp, 5000);
    assert_eq!(a, b);
    assert_ne!(lost(&a), lost(&c));
}

#[test]
fn independent_loss_rate_is_within_the_binomial_bound() {
    let n = 100_000;
    for pct in [1.0, 5.0, 20.0] {
        let d = decisions(
            7,
            Impairment {
                loss_pct: pct,
                ..Default::default()
            },
            n,
        );
        let p = pct / 100.0;
        let observed = lost(&d).iter().filter(|l| **l).count() as f64 / n as f64;
        let bound = Z99 * (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (observed - p).abs() <= bound,
            "{pct} %: observed {observed}, bound ±{bound}"
        );
    }
}

#[test]
fn gilbert_elliott_loss_rate_and_burst_length_are_within_bounds() {
    // Bad periods of 40 ms on average, every ~440 ms: 9.1 % of the time bad.
    let ge = GilbertElliott {
        mean_good_ms: 400.0,
        mean_bad_ms: 40.0,
        loss_bad_pct: 100.0,
        loss_good_pct: 0.0,
    };
    let n = 1_000_000u64;
    let d = decisions(
        9,
        Impairment {
            burst: Some(ge),
            ..Default::default()
        },
        n,
    );
    assert!(
        d.iter()
            .all(|d| !matches!(d, Decision::Drop(r) if *r != DropReason::Burst))
    );
    let l = lost(&d);
    let pi = ge.stationary_loss();
    let observed = l.iter().filter(|x| **x).count() as f64 / n as f64;
    // Datagrams 1 ms apart see the chain as a discrete one with per-datagram (p, r): successive
    // states are correlated (lag-1 autocorrelation 1 - p - r), so the variance of the mean
    // grows by (1 + ρ) / (1 - ρ) over the independent case.
    let (p, r) = ge.per_datagram(Duration::from_millis(1));
    let rho = 1.0 - p - r;
    let bound = Z99 * (pi * (1.0 - pi) / n as f64 * (1.0 + rho) / (1.0 - rho)).sqrt();
    println!("GE loss {observed:.4} vs {pi:.4} ± {bound:.4}");
    assert!(
        (observed - pi).abs() <= bound,
        "loss {observed} vs {pi} ± {bound}"
    );
    // Runs of lost datagrams are geometric with mean 1/r and standard deviation sqrt(1 - r)/r
    // (≈ 41 datagrams = 41 ms here: the bad period's mean plus the one that starts it).
    let mut bursts = vec![];
    let mut run = 0u64;
    for x in l {
        if x {
            run += 1;
        } else if run > 0 {
            bursts.push(run);
            run = 0;
        }
    }
    let mean = bursts.iter().sum::<u64>() as f64 / bursts.len() as f64;
    let se = (1.0 - r).sqrt() / r / (bursts.len() as f64).sqrt();
    println!(
        "GE mean burst {mean:.2} datagrams vs {:.2} ± {:.2} ({} bursts)",
        1.0 / r,
        Z99 * se,
        bursts.len()
    );
    assert!(
        (mean - 1.0 / r).abs() <= Z99 * se,
        "mean burst {mean} vs {} ± {}",
        1.0 / r,
        Z99 * se
    );
}

#[test]
fn gilbert_elliott_bad_periods_are_a_function_of_time_not_of_traffic() {
    // One sender every 1 ms, another every 0.5 ms (a policy sending twice the datagrams):
    // the same seed gives the same bad periods, so their datagrams at the same instants meet
    // the same fate, and the denser one sees the same share of time lost.
    let imp = Impairment {
        burst: Some(GilbertElliott {
            mean_good_ms: 200.0,
            mean_bad_ms: 30.0,
            loss_bad_pct: 100.0,
            loss_good_pct: 0.0,
        }),
        delay_ms: 5.0,
        ..Default::default()
    };
    let mut sparse = Impairer::new(5, imp.clone(), vec![]);
    let mut dense = Impairer::new(5, imp.clone(), vec![]);
    let mut other = Impairer::new(6, imp, vec![]);
    let (mut same, mut differs, mut lost_sparse, mut lost_dense) = (0u64, 0u64, 0u64, 0u64);
    let n = 200_000u64;
    for i in 0..n {
        let at = Duration::from_millis(i);
        let s = matches!(sparse.decide(at, 100), Decision::Drop(_));
        let d1 = matches!(dense.decide(at, 100), Decision::Drop(_));
        let d2 = matches!(
            dense.decide(at + Duration::from_micros(500), 100),
            Decision::Drop(_)
        );
        assert_eq!(s, d1, "at {at:?}: same instant, different fate");
        lost_sparse += s as u64;
        lost_dense += d1 as u64 + d2 as u64;
        if other.in_burst(at) == s {
            same += 1;
        } else {
            differs += 1;
        }
    }
    let (a, b) = (
        lost_sparse as f64 / n as f64,
        lost_dense as f64 / (2 * n) as f64,
    );
    println!("lost: every 1 ms {a:.4}, every 0.5 ms {b:.4}; other seed differs at {differs} ms");
    assert!((a - b).abs() < 0.002, "{a} vs {b}");
    assert!(differs > 1000 && same > differs, "{same} {differs}");
}

/// A sink that records `(first 8 bytes as u64, arrival)` of everything it receives.
async fn sink() -> (
    SocketAddr,
    tokio::task::JoinHandle<Vec<(u64, Instant)>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let s = UdpSocket::bind(loopback()).await.unwrap();
    let addr = s.local_addr().unwrap();
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        let mut got = vec![];
        let mut buf = [0u8; 2048];
        loop {
            tokio::select! {
                r = s.recv_from(&mut buf) => {
                    let (n, _) = r.unwrap();
                    if n >= 8 {
                        got.push((u64::from_be_bytes(buf[..8].try_into().unwrap()), Instant::now()));
                    }
                }
                _ = &mut stop => return got,
            }
        }
    });
    (addr, h, stop_tx)
}

/// Sends `n` datagrams (sequence number in the first 8 bytes) every `gap` through a link
/// with `up` impairment and returns what arrived, the send times and the link's report.
async fn through_link(
    up: Impairment,
    schedule: Vec<ScheduledChange>,
    seed: u64,
    n: u64,
    gap: Duration,
) -> (
    Vec<(u64, Instant)>,
    Vec<Instant>,
    plg_sim::link::LinkReport,
    Instant,
) {
    let (dst, sink, stop) = sink().await;
    let link = Link::start(LinkConfig {
        upstream: dst,
        up: DirectionConfig {
            impairment: up.clone(),
            seed,
            schedule,
        },
        down: DirectionConfig::default(),
        trace: true,
    })
    .await
    .unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();
    client.connect(link.addr()).await.unwrap();
    let epoch = Instant::now();
    link.arm(epoch);
    let mut sent = vec![];
    let mut buf = [0u8; 200];
    for i in 0..n {
        let due = epoch + gap * i as u32;
        tokio::time::sleep_until(due.into()).await;
        buf[..8].copy_from_slice(&i.to_be_bytes());
        sent.push(Instant::now());
        client.send(&buf).await.unwrap();
    }
    // Generous: a loaded machine must not turn late datagrams into lost ones.
    tokio::time::sleep(up.max_delay() + Duration::from_millis(500)).await;
    let report = link.finish().await;
    let _ = stop.send(());
    (sink.await.unwrap(), sent, report, epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_links_with_the_same_seed_drop_the_same_datagrams() {
    // Per-datagram draws only: Gilbert-Elliott bursts follow the (wall-clock) arrival times,
    // so on a real link they line up across runs only as closely as the arrivals do.
    let imp = Impairment {
        loss_pct: 15.0,
        corrupt_pct: 5.0,
        delay_ms: 2.0,
        jitter_ms: 1.0,
        ..Default::default()
    };
    let run = || through_link(imp.clone(), vec![], 99, 400, Duration::from_micros(500));
    let (a, ..) = run().await;
    let (b, ..) = run().await;
    let seqs = |v: &[(u64, Instant)]| {
        let mut s: Vec<u64> = v.iter().map(|x| x.0).collect();
        s.sort_unstable();
        s
    };
    let (sa, sb) = (seqs(&a), seqs(&b));
    assert_eq!(sa, sb, "same seed, different datagrams delivered");
    // Sanity: something was dropped and most was delivered.
    assert!((200..380).contains(&sa.len()), "{}", sa.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_link_flips_one_byte_in_the_datagrams_it_corrupts() {
    // The receiver sees exactly the datagrams the link counted as corrupted, each with one
    // byte changed; the rest arrive intact.
    let s = UdpSocket::bind(loopback()).await.unwrap();
    let dst = s.local_addr().unwrap();
    let link = Link::start(LinkConfig {
        upstream: dst,
        up: DirectionConfig {
            impairment: Impairment {
                corrupt_pct: 20.0,
                ..Default::default()
            },
            seed: 11,
            schedule: vec![],
        },
        down: DirectionConfig::default(),
        trace: false,
    })
    .await
    .unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();
    client.connect(link.addr()).await.unwrap();
    let n = 300usize;
    let pattern = |i: usize| -> Vec<u8> { (0..120).map(|k| (i * 7 + k) as u8).collect() };
    let (mut changed, mut intact) = (0u64, 0u64);
    for i in 0..n {
        client.send(&pattern(i)).await.unwrap();
        let mut buf = [0u8; 2048];
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf))
            .await
            .expect("the link delivers every datagram")
            .unwrap();
        assert_eq!(len, 120);
        let diff = buf[..len]
            .iter()
            .zip(pattern(i))
            .filter(|(a, b)| **a != *b)
            .count();
        assert!(diff <= 1, "datagram {i}: {diff} bytes changed");
        if diff == 1 {
            changed += 1;
        } else {
            intact += 1;
        }
    }
    let report = link.finish().await;
    println!(
        "corrupted {changed} of {n} (link counted {})",
        report.up.corrupted
    );
    assert_eq!(report.up.corrupted, changed);
    assert!(changed > 0 && intact > 0);
}

/// Sends 200 datagrams 5 ms apart through a 10 ms ± 2 ms (uniform) link and returns
/// `(drawn delay ms, measured delay ms)` per datagram and the link's report. 5 ms apart, so
/// ±2 ms jitter never needs FIFO clamping and every delay is the drawn one.
async fn delay_samples() -> (Vec<(f64, f64)>, plg_sim::link::LinkReport) {
    let imp = Impairment {
        delay_ms: 10.0,
        jitter_ms: 2.0,
        jitter: JitterDistribution::Uniform,
        ..Default::default()
    };
    let (got, sent, report, _) = through_link(imp, vec![], 5, 200, Duration::from_millis(5)).await;
    assert_eq!(got.len(), 200);
    let mut out = vec![];
    for (seq, arrived) in &got {
        let t = &report.up.trace[*seq as usize];
        assert_eq!(u64::from_be_bytes(t.head), *seq);
        let Decision::Deliver { delay, .. } = t.decision else {
            panic!("no loss configured")
        };
        let actual = arrived.duration_since(sent[*seq as usize]);
        out.push((delay.as_secs_f64() * 1000.0, actual.as_secs_f64() * 1000.0));
    }
    (out, report)
}

fn mean_sd(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = v.clone().count() as f64;
    let mean = v.clone().sum::<f64>() / n;
    let var = v.map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_delays_datagrams_by_the_drawn_delay_and_never_less() {
    let (samples, _) = delay_samples().await;
    for &(drawn, actual) in &samples {
        assert!((8.0..=12.0).contains(&drawn), "drawn delay {drawn} ms");
        // Measured from the sender's send to the receiver's receive: never early.
        assert!(actual >= drawn, "delivered early: {actual} < {drawn} ms");
    }
    // Uniform ±2 ms around 10 ms: mean 10 (σ of the mean 0.08), sd 1.155 (σ of the sd ~0.04).
    let (mean, sd) = mean_sd(samples.iter().map(|s| s.0));
    assert!((mean - 10.0).abs() < 0.25, "mean {mean} ms");
    assert!((sd - 2.0 / 3f64.sqrt()).abs() < 0.15, "sd {sd} ms");
    // How close to the drawn delay the link delivers is the ignored test below (timing).
}

/// The link's own timing error, on a quiet machine (a tokio timer's millisecond ticks would
/// show ~0.5 ms at the median). `cargo test -p plg-sim --test sim -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing precision: needs a quiet machine"]
async fn link_timing_error_is_sub_millisecond() {
    let (samples, report) = delay_samples().await;
    let mut err_us: Vec<f64> = samples.iter().map(|(d, a)| (a - d) * 1000.0).collect();
    err_us.sort_by(f64::total_cmp);
    let (p50, p95) = (err_us[err_us.len() / 2], err_us[err_us.len() * 95 / 100]);
    eprintln!(
        "link timing error: p50 {p50:.0} µs, p95 {p95:.0} µs, max {:.0} µs; sender late p50 {} µs p99 {} µs",
        err_us.last().unwrap(),
        report.up.late_us_p50,
        report.up.late_us_p99
    );
    assert!(p50 < 450.0, "median timing error {p50} µs");
    assert!(p95 < 2000.0, "95th percentile timing error {p95} µs");
    let (mean, sd) = mean_sd(samples.iter().map(|s| s.1));
    assert!((mean - 10.0).abs() < 0.5, "measured mean {mean} ms");
    assert!((sd - 2.0 / 3f64.sqrt()).abs() < 0.3, "measured sd {sd} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_drops_everything_inside_the_window_and_nothing_outside() {
    let from = Duration::from_millis(200);
    let until = Duration::from_millis(400);
    let (got, sent, report, _) = through_link(
        Impairment::default(),
        vec![ScheduledChange::Blackhole { from, until }],
        1,
        300,
        Duration::from_millis(2),
    )
    .await;
    let delivered: std::collections::HashSet<u64> = got.iter().map(|x| x.0).collect();
    // Judged on the link's own clock (its decision log), so a loaded machine delaying the
    // sender can't blur the window edges.
    let (mut inside, mut outside) = (0, 0);
    for e in &report.up.trace {
        let seq = u64::from_be_bytes(e.head);
        if e.at >= from && e.at < until {
            inside += 1;
            assert!(
                !delivered.contains(&seq),
                "seq {seq} at {:?} got through",
                e.at
            );
        } else {
            outside += 1;
            assert!(
                delivered.contains(&seq),
                "seq {seq} at {:?} was dropped",
                e.at
            );
        }
    }
    assert_eq!(inside + outside, sent.len());
    // The window is where the sender put it, give or take scheduling.
    assert!(
        (50..=150).contains(&inside),
        "{inside} inside, {outside} outside"
    );
    // Every drop was the blackhole's, and the link's decision log agrees with its clock.
    assert_eq!(report.up.dropped_random + report.up.dropped_burst, 0);
    for e in &report.up.trace {
        let in_window = e.at >= from && e.at < until;
        assert_eq!(
            in_window,
            e.decision == Decision::Drop(DropReason::Blackhole),
            "{e:?}"
        );
    }
}

const LOSSY_SINGLE: &str = r#"
name = "single-lossy"
duration = 2
seed = 17
policies = ["single"]
[traffic]
tick_rate = 250
min_size = 100
max_size = 300
[[paths]]
name = "only"
both = { delay_ms = 5, loss_pct = 5 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_path_run_through_a_real_node_reports_the_injected_loss() {
    let s = Scenario::parse(LOSSY_SINGLE, Path::new("inline.toml")).unwrap();
    let mut h = Harness::start().await.unwrap();
    let r = h.run_scenario(&s, s.seed).await;
    h.stop().await;
    eprintln!("{}", plg_sim::report::render_table(&r));

    let single = r.policy(Policy::Single).unwrap();
    assert!(
        matches!(single.status, PolicyStatus::Ran { .. }),
        "{:?}",
        single.status
    );
    assert!(
        r.policy(Policy::Duplicate).is_none(),
        "only the listed policies run"
    );

    for (dir, st) in [
        ("up", single.up.as_ref().unwrap()),
        ("down", single.down.as_ref().unwrap()),
    ] {
        assert_eq!(st.sent, 500, "{dir}");
        let p = 0.05;
        let n = st.sent as f64;
        let bound = 100.0 * Z99 * (p * (1.0 - p) / n).sqrt();
        assert!(
            (st.residual_loss_pct - 100.0 * p).abs() <= bound,
            "{dir}: residual {} % vs 5 % ± {bound:.2}",
            st.residual_loss_pct
        );
        assert_eq!(st.duplicates, 0);
        // 5 ms of link delay plus the relay on loopback; the upper bound only catches gross
        // errors (a loaded CI box can add tens of milliseconds).
        assert!(
            st.one_way_ms.p50 >= 5.0 && st.one_way_ms.p50 < 500.0,
            "{dir}: {:?}",
            st.one_way_ms
        );
        // One path: the wire carries each payload once plus PLG framing and pings.
        assert!(
            st.overhead > 1.0 && st.overhead < 1.5,
            "{dir}: overhead {}",
            st.overhead
        );
    }
    // What the link dropped upstream is what the game server missed (pings and control frames
    // share the link, so the link may drop a few more than the game lost).
    let link = &single.links[0];
    let up = single.up.as_ref().unwrap();
    assert!(
        link.up.dropped_random >= up.lost,
        "{} < {}",
        link.up.dropped_random,
        up.lost
    );
    let rtt = single.rtt_ms.unwrap();
    assert!(rtt.p50 >= 10.0 && rtt.p50 < 1000.0, "{rtt:?}");

    // The JSON report parses back to the same thing (floats to within serde_json's default
    // parsing precision, which may be one ulp off).
    let json = serde_json::to_string(&r).unwrap();
    let back: RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.policies.len(), r.policies.len());
    assert_eq!(back.policy(Policy::Single).unwrap().status, single.status);
    assert_eq!(
        back.policy(Policy::Single)
            .unwrap()
            .up
            .as_ref()
            .unwrap()
            .lost,
        up.lost
    );
    assert!(same_json(
        &serde_json::to_value(&back).unwrap(),
        &serde_json::to_value(&r).unwrap()
    ));
}

fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
            _ => x == y,
        },
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (V::Object(x), V::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn every_shipped_scenario_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(!s.paths.is_empty());
            n += 1;
        }
    }
    assert!(n >= 6, "only {n} scenarios");
}
