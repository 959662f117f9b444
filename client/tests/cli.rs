//! The `plg` binary's user-facing failures: each says what happened and what to do.

use std::process::Command;

fn plg(config: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plg"));
    c.env("PLG_CONFIG_DIR", config)
        .env_remove("PLG_PASSWORD")
        .env_remove("PLG_BILLING_URL");
    c
}

#[test]
fn help_lists_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = plg(dir.path()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["login", "logout", "status", "games", "connect"] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
}

#[test]
fn connect_without_login_says_to_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let out = plg(dir.path())
        .args(["connect", "--game", "cs2", "--to", "155.133.226.78:27015"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("not logged in") && err.contains("plg login"),
        "{err}"
    );
}

#[test]
fn login_to_an_unreachable_billing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = plg(dir.path())
        .args([
            "login",
            "--billing",
            &format!("http://127.0.0.1:{port}"),
            "--email",
            "a@b.co",
        ])
        .env("PLG_PASSWORD", "whatever-password")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot reach billing"), "{err}");
    assert!(!err.contains("whatever-password"), "password leaked: {err}");
    assert!(!dir.path().join("credentials.json").exists());
}

#[test]
fn logout_when_logged_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = plg(dir.path()).arg("logout").output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("was not logged in")
    );
}

#[test]
fn status_when_logged_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = plg(dir.path()).arg("status").output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("not logged in")
    );
}

#[test]
fn bad_redundancy_policy_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = plg(dir.path())
        .args([
            "connect",
            "--game",
            "x",
            "--to",
            "1.2.3.4:5",
            "--redundancy",
            "triple",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("single, duplicate, adaptive"), "{err}");
}
