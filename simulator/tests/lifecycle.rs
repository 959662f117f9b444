//! How a `plg connect` session ends, with the real binaries: every way (an error after the
//! ticket was issued, SIGTERM, SIGHUP, Ctrl-C) gives the plan's session slot back at billing,
//! so a trial user (two sessions at once) is never locked out; and, as a bounded CI step
//! (`--ignored`), a session that outlives five 60-second tickets without losing or
//! duplicating a game packet.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use plg_sim::echo::EchoServer;
use tokio::net::UdpSocket;

mod common;

use common::{Proc, bin, plg_login, start_billing_with, start_node, start_node_with_id};

fn connect(config_dir: &std::path::Path, args: &[&str]) -> Proc {
    Proc::spawn(
        "plg connect",
        Command::new(bin("plg"))
            .arg("connect")
            .args(args)
            .arg("--plain")
            .env("PLG_CONFIG_DIR", config_dir),
    )
}

fn proxy_addr(p: &Proc) -> SocketAddr {
    let line = p.wait_for("point the game at");
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// The exit status and everything `plg connect` printed, once it ends by itself.
fn finish(mut p: Proc) -> (bool, String) {
    let ok = p.wait_exit();
    (ok, p.lines_so_far().join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_session_ends_gives_the_slot_back() {
    let dir = tempfile::tempdir().unwrap();
    let game = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (_billing, url, billing_dir) = start_billing_with(dir.path(), game.addr.port(), "");
    let _node = start_node(dir.path(), &url, &billing_dir, "life-1");
    let cfg = dir.path().join("plg");
    plg_login(&url, "life@example.com", &cfg);
    let to = game.addr.to_string();
    let demo = [
        "--game",
        "demo",
        "--proxy",
        "127.0.0.1:0",
        "--to",
        to.as_str(),
    ];

    // Three connects that fail after billing issued the ticket: proxy capture of a game with
    // two server ranges and no --to. Each must give its session back.
    for _ in 0..3 {
        let (ok, out) = finish(connect(
            &cfg,
            &["--game", "multi", "--proxy", "127.0.0.1:0"],
        ));
        assert!(!ok, "{out}");
        assert!(out.contains("needs the game server's address"), "{out}");
        assert!(!out.contains("/stop"), "no API advice for gamers: {out}");
    }
    // SIGTERM, SIGHUP and Ctrl-C each end a running session cleanly.
    for sig in ["TERM", "HUP", "INT"] {
        let mut p = connect(&cfg, &demo);
        let _ = proxy_addr(&p);
        p.signal(sig);
        p.wait_for("disconnected");
        assert!(p.wait_exit(), "plg connect exit status after SIG{sig}");
    }
    // Nothing leaked: both of the trial's slots are free...
    let a = connect(&cfg, &demo);
    let b = connect(&cfg, &demo);
    let _ = (proxy_addr(&a), proxy_addr(&b));
    // ...and the limit is real: a third session is refused while two run.
    let (ok, out) = finish(connect(&cfg, &demo));
    assert!(!ok && out.contains("session"), "{out}");
    for p in [&a, &b] {
        p.signal("TERM");
    }
    for mut p in [a, b] {
        assert!(p.wait_exit());
    }
}

/// `plg connect --node X` pins the exit, but a pinned exit that dies still fails over (to the
/// backup its ACCEPT named, else the next node) instead of leaving the gamer without a route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_exit_that_dies_still_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let game = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (_billing, url, billing_dir) = start_billing_with(dir.path(), game.addr.port(), "");
    let (pinned, pinned_id) = start_node_with_id(dir.path(), &url, &billing_dir, "pin-1");
    let (_other, other_id) = start_node_with_id(dir.path(), &url, &billing_dir, "pin-2");
    let cfg = dir.path().join("plg");
    plg_login(&url, "pin@example.com", &cfg);
    // `plg nodes` lists both without taking a session slot.
    let out = common::run(
        Command::new(bin("plg"))
            .args(["nodes", "--game", "demo", "--probes", "2"])
            .env("PLG_CONFIG_DIR", &cfg),
    );
    assert!(out.contains(&pinned_id) && out.contains(&other_id), "{out}");
    let p = connect(
        &cfg,
        &[
            "--game",
            "demo",
            "--proxy",
            "127.0.0.1:0",
            "--node",
            pinned_id.as_str(),
            "--paths",
            "1",
        ],
    );
    let line = p.wait_for(" via node ");
    assert!(line.contains(&pinned_id), "{line}");
    let proxy = proxy_addr(&p);
    // The game plays while the pinned exit is killed.
    let game_task = tokio::spawn(play(proxy, 64, Duration::from_secs(6)));
    // Scenario time, not a wait for a condition: two seconds of play before the kill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pinned = pinned;
    pinned.child.kill().unwrap();
    let moved = p.wait_for("session moved to node");
    assert!(moved.contains(&other_id), "{moved}");
    let (copies, longest, sent) = game_task.await.unwrap();
    let tail = copies[copies.len() - 64..]
        .iter()
        .filter(|&&c| c == 1)
        .count();
    println!(
        "pinned exit killed: {sent} packets, longest gap {} ms, last second {tail}/64 delivered",
        longest.as_millis()
    );
    assert!(
        tail >= 60,
        "the session carries on through {other_id}: {tail}/64"
    );
    assert!(longest < Duration::from_secs(3), "{longest:?}");
    p.signal("TERM");
    p.wait_for("disconnected");
    let _ = pinned.wait_exit();
}

/// Game packets carry a sequence number; the echo brings each back. Returns, per sequence
/// number, how many copies came back, and the longest time between two arrivals.
async fn play(proxy: SocketAddr, rate: u32, length: Duration) -> (Vec<u32>, Duration, u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(proxy).await.unwrap();
    let total = (length.as_secs_f64() * f64::from(rate)) as u64;
    let mut copies = vec![0u32; total as usize];
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut sent = 0u64;
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    let mut buf = [0u8; 64];
    let end_grace = Duration::from_secs(2);
    let mut finished_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick(), if sent < total => {
                let mut pkt = [0u8; 32];
                pkt[..8].copy_from_slice(&sent.to_be_bytes());
                let _ = sock.send(&pkt).await;
                sent += 1;
                if sent == total {
                    finished_at = Some(Instant::now());
                }
            }
            r = sock.recv(&mut buf) => {
                if let Ok(n) = r && n >= 8 {
                    let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                    if let Some(c) = copies.get_mut(seq as usize) {
                        *c += 1;
                    }
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if finished_at.is_some() => {
                if finished_at.is_some_and(|t| t.elapsed() > end_grace) {
                    break;
                }
            }
        }
    }
    (copies, longest, sent)
}

/// Issue 14's long session: tickets live 60 s, so `plg connect` renews every ~40 s; over
/// 220 s of play at 64 packets/s it renews at least five times, and every game packet
/// comes back exactly once with no gap over 250 ms. About four minutes: a named CI step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: about four minutes; CI runs it as its own step"]
async fn a_session_outlives_five_tickets_without_losing_a_packet() {
    let dir = tempfile::tempdir().unwrap();
    let game = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (_billing, url, billing_dir) =
        start_billing_with(dir.path(), game.addr.port(), "ticket_ttl_secs = 60");
    let _node = start_node(dir.path(), &url, &billing_dir, "long-1");
    let cfg = dir.path().join("plg");
    plg_login(&url, "long@example.com", &cfg);
    let to = game.addr.to_string();
    let p = connect(
        &cfg,
        &[
            "--game",
            "demo",
            "--proxy",
            "127.0.0.1:0",
            "--to",
            to.as_str(),
        ],
    );
    let proxy = proxy_addr(&p);
    let started = Instant::now();
    let (copies, longest, sent) = play(proxy, 64, Duration::from_secs(220)).await;
    let lines = p.lines_so_far();
    let renewals = lines
        .iter()
        .filter(|l| l.contains("ticket renewed"))
        .count();
    let lost = copies.iter().filter(|&&c| c == 0).count();
    let doubled = copies.iter().filter(|&&c| c > 1).count();
    println!(
        "long session: {:.0} s, {sent} packets, {renewals} renewals, lost {lost}, duplicated {doubled}, longest gap {} ms",
        started.elapsed().as_secs_f64(),
        longest.as_millis()
    );
    for l in lines.iter().filter(|l| l.contains("renew")) {
        println!("  {l}");
    }
    assert!(
        renewals >= 5,
        "only {renewals} renewals:\n{}",
        lines.join("\n")
    );
    assert_eq!(lost, 0, "packets lost");
    assert_eq!(doubled, 0, "packets delivered twice");
    assert!(
        longest <= Duration::from_millis(250),
        "longest gap {longest:?}"
    );
    p.signal("TERM");
    p.wait_for("disconnected");
}
