//! The `plg-node` binary's start-up errors: validated before any socket is bound.

use std::process::Command;

fn node() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plg-node"));
    for v in [
        "PLG_NODE_DATA_DIR",
        "PLG_NODE_CONTROL",
        "PLG_NODE_DATA",
        "PLG_NODE_PUBLIC_IP",
        "PLG_BILLING_URL",
        "PLG_JOIN_TOKEN",
    ] {
        c.env_remove(v);
    }
    c
}

fn stderr_of(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "expected failure");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn run_without_identity_says_to_join() {
    let dir = tempfile::tempdir().unwrap();
    let err = stderr_of(
        node()
            .args([
                "run",
                "--control",
                "127.0.0.1:0",
                "--data",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path()),
    );
    assert!(err.contains("plg-node join"), "{err}");
}

#[test]
fn wildcard_listen_needs_public_ip() {
    let dir = tempfile::tempdir().unwrap();
    let err = stderr_of(
        node()
            .args([
                "run",
                "--control",
                "0.0.0.0:0",
                "--data",
                "0.0.0.0:0",
                "--data-dir",
            ])
            .arg(dir.path()),
    );
    assert!(err.contains("--public-ip"), "{err}");
}

#[test]
fn join_with_unreachable_billing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = stderr_of(
        node()
            .args([
                "join",
                "--billing",
                &format!("http://127.0.0.1:{port}"),
                "--token",
                "t",
                "--no-run",
                "--data-dir",
            ])
            .arg(dir.path().join("n")),
    );
    assert!(err.contains("cannot reach billing"), "{err}");
    assert!(!dir.path().join("n").join("node.json").exists());
}

#[test]
fn join_refuses_to_overwrite_an_identity() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("node.json"), "{}").unwrap();
    let err = stderr_of(
        node()
            .args([
                "join",
                "--billing",
                "http://127.0.0.1:1",
                "--token",
                "t",
                "--no-run",
                "--data-dir",
            ])
            .arg(dir.path()),
    );
    assert!(err.contains("already holds a node identity"), "{err}");
}

#[test]
fn join_checks_its_run_settings_before_spending_the_token() {
    let dir = tempfile::tempdir().unwrap();
    // Wildcard listen addresses without --public-ip: refused before billing is contacted
    // (billing here is unreachable, so reaching it would print another error).
    let err = stderr_of(
        node()
            .args([
                "join",
                "--billing",
                "http://127.0.0.1:1",
                "--token",
                "t",
                "--data-dir",
            ])
            .arg(dir.path().join("n")),
    );
    assert!(err.contains("--public-ip"), "{err}");
    assert!(!dir.path().join("n").exists());
}

#[test]
fn drain_without_a_running_node_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = stderr_of(node().args(["drain", "--data-dir"]).arg(dir.path()));
    assert!(err.contains("is a node running"), "{err}");
    std::fs::write(dir.path().join("node.pid"), "999999999\n").unwrap();
    let err = stderr_of(node().args(["drain", "--data-dir"]).arg(dir.path()));
    assert!(err.contains("no node is running"), "{err}");
}
