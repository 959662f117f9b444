//! The standalone link (`plg-sim link`) used the way a tester uses it: the real binary between
//! `dig` and a real DNS server (dnsmasq), with loss and delay, stopped by SIGTERM; and the
//! link's host-stall accounting, with stalls injected into its sender thread and its receive
//! task.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Proc;
use plg_sim::link::{Dir, Impairment, Link, LinkConfig, StallSide};
use plg_sim::link_cmd::LinkRunReport;

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts dnsmasq on a free loopback port, answering `*.plg.test` with 192.0.2.7, and waits
/// (bounded) until it answers.
fn start_dnsmasq() -> (Proc, u16) {
    for _ in 0..3 {
        let port = free_udp_port();
        let p = Proc::spawn(
            "dnsmasq",
            Command::new("dnsmasq").args([
                "--keep-in-foreground",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--address=/plg.test/192.0.2.7",
                &format!("--port={port}"),
            ]),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = Command::new("dig")
                .args(["@127.0.0.1", "-p", &port.to_string(), "+short"])
                .args(["+tries=1", "+time=1", "ready.plg.test", "A"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("192.0.2.7") {
                return (p, port);
            }
        }
        // Port taken between our probe and dnsmasq's bind, most likely: another port.
    }
    panic!("dnsmasq never answered on a free loopback port");
}

/// P(X outside [lo, hi]) for a binomial below 1e-4 (normal approximation, 3.9 σ).
fn binomial_bound(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 3.9 * sd, mean + 3.9 * sd)
}

#[test]
fn dig_through_plg_sim_link_sees_its_loss_and_delay_and_sigterm_prints_the_summary() {
    if !have("dig") || !have("dnsmasq") {
        eprintln!(
            "\n*** SKIPPED: this test needs `dig` and `dnsmasq` (apt-get install dnsutils \
             dnsmasq-base; .ci/run installs them) ***\n"
        );
        return;
    }
    let (_dns, dns_port) = start_dnsmasq();
    let tmp = tempfile::tempdir().unwrap();
    let report_path = tmp.path().join("link.json");
    let (loss, delay): (f64, f64) = (30.0, 20.0);
    let mut link = Proc::spawn(
        "plg-sim link",
        Command::new(env!("CARGO_BIN_EXE_plg-sim")).args([
            "link",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &format!("127.0.0.1:{dns_port}"),
            "--loss",
            &loss.to_string(),
            "--delay",
            &delay.to_string(),
            "--seed",
            "11",
            "--stats-every",
            "1",
            "--report",
            report_path.to_str().unwrap(),
        ]),
    );
    let first = link.wait_for("listening on");
    let addr: SocketAddr = first
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));

    // One dig process, sequential queries (each from a new source port: a new client for the
    // link), one try each with a 1 s timeout.
    let queries = 40;
    let names: String = (0..queries).map(|i| format!("q{i}.plg.test A\n")).collect();
    let batch = tmp.path().join("queries.txt");
    std::fs::write(&batch, names).unwrap();
    let out = Command::new("timeout")
        .args(["120", "dig", "@127.0.0.1", "-p", &addr.port().to_string()])
        .args(["+tries=1", "+time=1", "-f", batch.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rtts: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(";; Query time: "))
        .map(|l| l.trim_end_matches(" msec").parse().unwrap())
        .collect();
    let answered = rtts.len() as u64;
    let answers_with_the_address = text.matches("192.0.2.7").count() as u64;
    assert_eq!(answers_with_the_address, answered, "{text}");

    // A query is answered when neither direction lost it: P = (1 - loss)².
    let p_ok = (1.0 - loss / 100.0).powi(2);
    let (lo, hi) = binomial_bound(queries, p_ok);
    eprintln!(
        "dig: {answered}/{queries} answered (expected {:.1}, 99.99 % bound {lo:.1}..{hi:.1}), \
         RTT min {} ms, max {} ms",
        queries as f64 * p_ok,
        rtts.iter().min().unwrap_or(&0),
        rtts.iter().max().unwrap_or(&0),
    );
    assert!(
        (lo..=hi).contains(&(answered as f64)),
        "{answered} of {queries} answered, outside {lo:.1}..{hi:.1}"
    );
    // Each way is delayed `delay`: the round trip at least twice that (dig rounds down).
    let min_rtt = *rtts.iter().min().expect("no answer at all");
    assert!(
        min_rtt as f64 >= 2.0 * delay,
        "RTT {min_rtt} ms < 2 × {delay} ms"
    );

    link.wait_for("up: "); // at least one live line
    link.signal("TERM");
    assert!(link.wait_exit(), "plg-sim link did not exit 0 on SIGTERM");
    let rest: Vec<String> = link.lines.try_iter().collect();
    let rest = rest.join("\n");
    for needle in [
        "stopped by SIGTERM",
        "datagrams in / out",
        "random / burst / rate / blackhole",
        "sender late p50/p99/max",
        "host stalls",
        "report written to",
    ] {
        assert!(rest.contains(needle), "no {needle:?} in:\n{rest}");
    }

    // The link's own account agrees with what dig saw.
    let r: LinkRunReport =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(r.stopped_by, "SIGTERM");
    assert_eq!(r.up.loss_pct, loss);
    assert_eq!(r.link.up.packets_in, queries, "dig sent each query once");
    assert_eq!(
        r.link.down.packets_out, answered,
        "every answer out reached dig"
    );
    let trials = r.link.up.packets_in + r.link.down.packets_in;
    let dropped = r.link.up.dropped_random + r.link.down.dropped_random;
    let (lo, hi) = binomial_bound(trials, loss / 100.0);
    eprintln!(
        "link: {dropped} of {trials} datagrams dropped (bound {lo:.1}..{hi:.1}); up {} in / {} out, down {} in / {} out",
        r.link.up.packets_in,
        r.link.up.packets_out,
        r.link.down.packets_in,
        r.link.down.packets_out
    );
    assert!((lo..=hi).contains(&(dropped as f64)));
    assert_eq!(
        r.link.up.packets_out,
        r.link.up.packets_in - r.link.up.dropped_random
    );
}

#[test]
fn bad_input_fails_before_binding_and_names_the_flag() {
    for (args, want) in [
        (
            &["--loss", "-5"][..],
            "--loss: loss_pct must be within 0..=100",
        ),
        (
            &["--up", "{ delay = 5 }"][..],
            "--up: unknown field `delay`",
        ),
        (&["--jitter-dist", "pareto"][..], "--jitter-dist"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_plg-sim"))
            .args(["link", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"])
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_plg-sim"))
        .args(["link", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Examples:") && help.contains("--listen 127.0.0.1:7000"));
}

/// A clean link with a steady stream (one datagram every 2 ms) up, a sink behind it; a 50 ms
/// stall of the receive task and an 80 ms stall of the sender thread are injected. Each must
/// be flagged on its side, at its time, with its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_stalls_are_flagged_on_their_side_with_their_length() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let imp = Impairment {
        delay_ms: 10.0,
        ..Default::default()
    };
    let link = Link::start(LinkConfig::symmetric(sink.local_addr().unwrap(), imp, 5))
        .await
        .unwrap();
    let t0 = Instant::now();
    link.arm(t0);
    let stop = Arc::new(AtomicBool::new(false));
    let (to, stop_tx) = (link.addr(), stop.clone());
    let sender = std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut n = 0u64;
        while !stop_tx.load(Ordering::Relaxed) {
            s.send_to(&n.to_be_bytes(), to).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let stop_sink = stop.clone();
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop_sink.load(Ordering::Relaxed) {
            let _ = sink.recv_from(&mut buf);
        }
    });
    let at = |s: f64| tokio::time::sleep_until((t0 + Duration::from_secs_f64(s)).into());
    at(0.3).await;
    link.inject_stall(Dir::Up, StallSide::Receive, Duration::from_millis(50));
    at(0.8).await;
    link.inject_stall(Dir::Up, StallSide::Send, Duration::from_millis(80));
    at(1.3).await;
    stop.store(true, Ordering::Relaxed);
    let r = link.finish().await;
    sender.join().unwrap();
    drain.join().unwrap();

    eprintln!("up stalls: {:?}", r.up.stalls);
    eprintln!(
        "sender late p50/p99/max {} / {} / {} µs; receive wait p50/p99/max {} / {} / {} µs",
        r.up.late_us_p50,
        r.up.late_us_p99,
        r.up.late_us_max,
        r.up.recv_late_us_p50,
        r.up.recv_late_us_p99,
        r.up.recv_late_us_max
    );
    // The stall is measured from the first held datagram (≤ 2 ms after the stall began, plus
    // the hook's own hand-over) to the end: a lower bound, within a few ms on a quiet machine.
    // On a loaded one the machine's own stalls next to the injected one merge into it (they
    // are stalls too), so the upper margin is wider.
    let found = |side: StallSide, at_s: f64, ms: f64| {
        r.up.stalls.iter().find(|s| {
            s.side == side
                && (s.at_s - at_s).abs() < 0.05
                && (ms - 10.0..=ms + 25.0).contains(&s.ms)
        })
    };
    assert!(
        found(StallSide::Receive, 0.3, 50.0).is_some(),
        "the 50 ms receive stall at 0.3 s was not flagged: {:?}",
        r.up.stalls
    );
    assert!(
        found(StallSide::Send, 0.8, 80.0).is_some(),
        "the 80 ms sender stall at 0.8 s was not flagged: {:?}",
        r.up.stalls
    );
    assert!(r.up.late_us_max >= 70_000, "{}", r.up.late_us_max);
    assert!(r.up.recv_late_us_max >= 40_000, "{}", r.up.recv_late_us_max);
    // The typical datagram is not held: medians stay well under the threshold.
    assert!(r.up.recv_late_us_p50 < 5_000 && r.up.late_us_p50 < 5_000);

    // The scenario table says so, and only when there was a stall.
    let table = |link: &plg_sim::link::LinkReport| {
        let run: plg_sim::report::RunReport = serde_json::from_value(serde_json::json!({
            "scenario": "stalls", "description": "", "seed": 5, "duration_s": 1.3,
            "tick_rate": 500, "paths": [], "events": [],
            "policies": [{ "policy": "single", "status": "ran", "client": "test",
                           "up": null, "down": null, "rtt_ms": null, "links": [link] }],
        }))
        .unwrap();
        plg_sim::report::render_table(&run)
    };
    let t = table(&r);
    eprintln!("{t}");
    assert!(t.contains("host stalls (n, longest ms @ s)"), "{t}");
    assert!(t.contains("host noise, not network"), "{t}");
    let mut clean = r.clone();
    clean.up.stalls.clear();
    clean.down.stalls.clear();
    assert!(!table(&clean).contains("host stalls"));
}

/// Three clients at once through one per-client link (what `plg-sim link` runs) to an echo
/// server: the server sees three sources, and every client gets all of its own answers and
/// none of the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_clients_at_once_each_get_their_own_answers() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let imp = Impairment {
        delay_ms: 2.0,
        ..Default::default()
    };
    let link = Link::start_per_client(
        LinkConfig::symmetric(echo.local_addr().unwrap(), imp, 9),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_echo = stop.clone();
    let server = std::thread::spawn(move || {
        let mut sources = std::collections::HashSet::new();
        let mut buf = [0u8; 64];
        while !stop_echo.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                sources.insert(from);
                echo.send_to(&buf[..n], from).unwrap();
            }
        }
        sources.len()
    });
    let to = link.addr();
    let per_client = 50u8;
    let clients: Vec<_> = (0..3u8)
        .map(|id| {
            std::thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                for i in 0..per_client {
                    s.send_to(&[id, i], to).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
                let (mut mine, mut others) = (std::collections::HashSet::new(), 0);
                let mut buf = [0u8; 64];
                while let Ok(n) = s.recv(&mut buf) {
                    if n == 2 && buf[0] == id {
                        mine.insert(buf[1]);
                    } else {
                        others += 1;
                    }
                }
                (mine.len(), others)
            })
        })
        .collect();
    for (id, c) in clients.into_iter().enumerate() {
        let (mine, others) = c.join().unwrap();
        eprintln!("client {id}: {mine} of its {per_client} answers, {others} of others'");
        assert_eq!((mine, others), (per_client as usize, 0), "client {id}");
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(server.join().unwrap(), 3, "one upstream source per client");
    let r = link.finish().await;
    assert_eq!(r.up.packets_in, 3 * per_client as u64);
    assert_eq!(r.down.packets_out, 3 * per_client as u64);
}

/// A UDP port free on both 127.0.0.1 and 127.0.0.2 (the node binds one, the link the other).
fn port_free_on_both() -> u16 {
    for _ in 0..50 {
        let a = UdpSocket::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// The recipe of docs/simulator.md: a real `plg-node` bound on 127.0.0.2 announcing
/// 127.0.0.1, `plg-sim link` on the announced data port (20 ms each way) and a clean one on the
/// control port, a real `plg connect`: game traffic through the proxy all comes back, at least
/// 40 ms later, and the link counted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plg_connect_through_plg_sim_link_gets_the_links_delay() {
    use common::{bin, plg_login, run, start_billing};
    let dir = tempfile::tempdir().unwrap();
    let game = plg_sim::echo::EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (_billing, url, billing_dir) = start_billing(dir.path(), game.addr.port());
    let (data, control) = (port_free_on_both(), port_free_on_both());
    let report_path = dir.path().join("data-link.json");
    let mut data_link = Proc::spawn(
        "plg-sim link (data)",
        Command::new(env!("CARGO_BIN_EXE_plg-sim")).args([
            "link",
            "--listen",
            &format!("127.0.0.1:{data}"),
            "--to",
            &format!("127.0.0.2:{data}"),
            "--delay",
            "20",
            "--seed",
            "1",
            "--report",
            report_path.to_str().unwrap(),
        ]),
    );
    data_link.wait_for("listening on");
    let control_link = Proc::spawn(
        "plg-sim link (control)",
        Command::new(env!("CARGO_BIN_EXE_plg-sim")).args([
            "link",
            "--listen",
            &format!("127.0.0.1:{control}"),
            "--to",
            &format!("127.0.0.2:{control}"),
        ]),
    );
    control_link.wait_for("listening on");

    let token = run(Command::new(bin("plg-billing"))
        .args(["join-token", "create", "--data-dir"])
        .arg(&billing_dir));
    let node_dir = dir.path().join("node");
    run(Command::new(bin("plg-node"))
        .args(["join", "--billing", &url, "--token", token.trim()])
        .args(["--name", "behind-link", "--no-run", "--data-dir"])
        .arg(&node_dir));
    let node = Proc::spawn(
        "plg-node run",
        Command::new(bin("plg-node"))
            .args([
                "--log-json",
                "run",
                "--no-mesh",
                "--allow-private-destinations",
            ])
            .args(["--control", &format!("127.0.0.2:{control}")])
            .args(["--data", &format!("127.0.0.2:{data}")])
            .args(["--public-ip", "127.0.0.1", "--data-dir"])
            .arg(&node_dir),
    );
    node.wait_for("node running");

    let config_dir = dir.path().join("plg-config");
    plg_login(&url, "link@example.com", &config_dir);
    let connect = Proc::spawn(
        "plg connect",
        Command::new(bin("plg"))
            .args(["connect", "--game", "demo", "--proxy", "127.0.0.1:0"])
            .args(["--to", &game.addr.to_string(), "--paths", "1"])
            .env("PLG_CONFIG_DIR", &config_dir),
    );
    let line = connect.wait_for("point the game at");
    let proxy: SocketAddr = line.split_whitespace().nth(4).unwrap().parse().unwrap();

    let report = plg_sim::traffic::run(
        proxy,
        plg_sim::traffic::TrafficSpec {
            rate: 50,
            duration: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let min_ms = report.rtt_us.min() as f64 / 1000.0;
    eprintln!(
        "through plg connect and plg-sim link: {} of {} back, RTT min {min_ms:.1} ms, p50 {:.1} ms",
        report.received,
        report.sent,
        report.rtt_us.value_at_quantile(0.5) as f64 / 1000.0
    );
    assert_eq!(report.received, report.sent, "a clean link loses nothing");
    assert!(
        min_ms >= 40.0,
        "RTT {min_ms} ms: the link's 2 × 20 ms is missing"
    );

    data_link.signal("TERM");
    assert!(data_link.wait_exit());
    let r: LinkRunReport =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    eprintln!(
        "data link: up {} in, down {} out",
        r.link.up.packets_in, r.link.down.packets_out
    );
    assert!(
        r.link.up.packets_in >= report.sent,
        "the game's frames crossed the link"
    );
    assert!(r.link.down.packets_out >= report.received);
}
