//! The README's manual path with the real binaries as separate processes: `plg-billing serve`,
//! `plg-billing join-token create`, `plg-node join`, `plg-node run`, `plg login`, `plg connect`.
//! `cargo test --workspace` builds them (node, client and billing have integration tests).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use plg_sim::echo::EchoServer;
use plg_sim::traffic::{self, TrafficSpec};

mod common;

use common::{Proc, bin, plg_login, run, start_billing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binaries_carry_a_game_session() {
    let dir = tempfile::tempdir().unwrap();
    let game = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (billing, url, billing_dir) = start_billing(dir.path(), game.addr.port());

    let token = run(Command::new(bin("plg-billing"))
        .args(["join-token", "create", "--data-dir"])
        .arg(&billing_dir));
    let node_dir = dir.path().join("node");
    run(Command::new(bin("plg-node"))
        .args([
            "join",
            "--billing",
            &url,
            "--token",
            token.trim(),
            "--name",
            "proc-1",
            "--no-run",
            "--data-dir",
        ])
        .arg(&node_dir));
    let mut node = Proc::spawn(
        "plg-node run",
        Command::new(bin("plg-node"))
            .args([
                "--log-json",
                "run",
                "--control",
                "127.0.0.1:0",
                "--data",
                "127.0.0.1:0",
                "--allow-private-destinations",
                "--data-dir",
            ])
            .arg(&node_dir),
    );
    node.wait_for("node running");

    let config_dir = dir.path().join("plg-config");
    plg_login(&url, "proc@example.com", &config_dir);

    let mut connect = Proc::spawn(
        "plg connect",
        Command::new(bin("plg"))
            .args([
                "connect",
                "--game",
                "demo",
                "--proxy",
                "127.0.0.1:0",
                "--to",
                &game.addr.to_string(),
            ])
            .env("PLG_CONFIG_DIR", &config_dir),
    );
    let line = connect.wait_for("point the game at");
    let proxy: SocketAddr = line.split_whitespace().nth(4).unwrap().parse().unwrap();

    let report = traffic::run(
        proxy,
        TrafficSpec {
            rate: 100,
            duration: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.sent, 50);
    assert_eq!(
        report.received, 50,
        "every packet must come back through the node process"
    );
    assert_eq!(report.corrupted, 0);

    // The account commands see the live session.
    let plg = |args: &[&str]| {
        let out = Command::new(bin("plg"))
            .args(args)
            .env("PLG_CONFIG_DIR", &config_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "plg {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = plg(&["status"]);
    assert!(
        status.contains("plan trial:") && status.contains("1 open session(s)"),
        "{status}"
    );
    let sessions = plg(&["sessions"]);
    let live = sessions
        .lines()
        .find(|l| l.contains(" demo ") && l.contains(" open "))
        .unwrap_or_else(|| panic!("no open demo session listed:\n{sessions}"));
    let id = live.split_whitespace().next().unwrap().to_owned();

    // Clean shutdowns: Ctrl-C for the gamer, SIGTERM for the daemons.
    connect.signal("INT");
    connect.wait_for("disconnected");
    assert!(connect.wait_exit(), "plg connect exit status");
    let sessions = plg(&["sessions"]);
    assert!(
        sessions
            .lines()
            .any(|l| l.starts_with(&id) && l.contains(" ended ")),
        "session {id} not ended after Ctrl-C:\n{sessions}"
    );
    assert!(plg(&["status"]).contains("no open session"));
    node.signal("TERM");
    assert!(node.wait_exit(), "plg-node exit status");
    billing.signal("TERM");
    let mut billing = billing;
    assert!(billing.wait_exit(), "plg-billing exit status");
}
