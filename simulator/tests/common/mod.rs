//! Helpers for tests that run the real binaries as separate processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn bin(name: &str) -> PathBuf {
    // target/<profile>/deps/processes-<hash> → target/<profile>/<name>
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the workspace tests (`cargo test --workspace`) or `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Makes `cmd`'s child start with the default action for SIGINT, SIGTERM and SIGHUP.
///
/// A test run started from a background job (`cargo test &`, a CI script, `setsid`) has
/// SIGINT ignored, and an ignored signal stays ignored across `exec`: a child relying on the
/// default action would then outlive the Ctrl-C the test sends it.
pub fn default_signals(cmd: &mut Command) -> &mut Command {
    use nix::sys::signal::{SigHandler, Signal, signal};
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe calls are allowed: it calls signal(2) (async-signal-safe per POSIX)
    // and neither allocates nor takes a lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
                signal(s, SigHandler::SigDfl)?;
            }
            Ok(())
        })
    }
}

/// A child process killed on drop, with its output lines on a channel.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let mut child = default_signals(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("PLG_LOG", "info")
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Proc { name, child, lines }
    }

    /// Waits for an output line containing `needle`; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!(
            "{} never printed {needle:?}; it printed:\n{}",
            self.name,
            seen.join("\n")
        );
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.name);
    }

    /// Waits for exit; returns whether it exited successfully.
    pub fn wait_exit(&mut self) -> bool {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not exit",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pulls `key=VALUE` or `"key":"VALUE"` out of a log line.
pub fn field(line: &str, key: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    v["fields"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .to_owned()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `plg-billing serve` process on a free loopback port, its data dir under `dir`, whose
/// catalog adds the game `demo` → `127.0.0.1:<game_port>`. Returns the process, its URL and
/// its data dir (for `plg-billing join-token create --data-dir`).
pub fn start_billing(dir: &std::path::Path, game_port: u16) -> (Proc, String, PathBuf) {
    start_billing_with(dir, game_port, "")
}

/// [`start_billing`] with more settings: `extra` is TOML put before the game tables (e.g.
/// `ticket_ttl_secs = 60`), and a second game `multi` with two server ranges is added.
pub fn start_billing_with(
    dir: &std::path::Path,
    game_port: u16,
    extra: &str,
) -> (Proc, String, PathBuf) {
    let billing_dir = dir.join("billing");
    let config = dir.join("billing.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{extra}\n[[extra_games]]\nslug = \"demo\"\nname = \"Demo\"\ndestinations = [\"127.0.0.1/32:{game_port}\"]\n[[extra_games]]\nslug = \"multi\"\nname = \"Multi\"\ndestinations = [\"127.0.0.1/32:{game_port}\", \"127.0.0.2/32:{game_port}\"]\n"
        ),
    )
    .unwrap();
    let billing = Proc::spawn(
        "plg-billing serve",
        Command::new(bin("plg-billing"))
            .args(["--log-json", "serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&billing_dir),
    );
    let url = format!(
        "http://{}",
        field(&billing.wait_for("billing API listening"), "listen")
    );
    (billing, url, billing_dir)
}

/// Polls `done` every 50 ms until it holds; fails the test with `what` after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Proc {
    /// Every line printed since the last `wait_for`/`lines_so_far`, without waiting.
    pub fn lines_so_far(&self) -> Vec<String> {
        std::iter::from_fn(|| self.lines.try_recv().ok()).collect()
    }
}

/// The game `plg` commands in these tests run against: `plg login` a fresh account at `url`
/// (with the trial: two sessions at once), its config in `config_dir`.
pub fn plg_login(url: &str, email: &str, config_dir: &std::path::Path) {
    let out = plg_login_with(
        &["--billing", url, "--email", email, "--register"],
        config_dir,
    );
    assert!(
        out.status.success(),
        "plg login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `plg login ARGS --password-stdin` with the tests' password, its config in `config_dir`
/// (`PLG_BILLING_URL` unset, so only ARGS or the saved config name the billing).
pub fn plg_login_with(args: &[&str], config_dir: &std::path::Path) -> std::process::Output {
    use std::io::Write;
    let mut login = Command::new(bin("plg"))
        .arg("login")
        .args(args)
        .arg("--password-stdin")
        .env("PLG_CONFIG_DIR", config_dir)
        .env_remove("PLG_BILLING_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .unwrap();
    login.wait_with_output().unwrap()
}

/// A joined and running `plg-node` for the billing at `url` (data dir `dir/<name>`).
pub fn start_node(
    dir: &std::path::Path,
    url: &str,
    billing_dir: &std::path::Path,
    name: &str,
) -> Proc {
    start_node_with_id(dir, url, billing_dir, name).0
}

/// [`start_node`], also returning the node's id (from its "node running" log line).
pub fn start_node_with_id(
    dir: &std::path::Path,
    url: &str,
    billing_dir: &std::path::Path,
    name: &str,
) -> (Proc, String) {
    let token = run(Command::new(bin("plg-billing"))
        .args(["join-token", "create", "--data-dir"])
        .arg(billing_dir));
    let node_dir = dir.join(name);
    run(Command::new(bin("plg-node"))
        .args([
            "join",
            "--billing",
            url,
            "--token",
            token.trim(),
            "--name",
            name,
            "--no-run",
            "--data-dir",
        ])
        .arg(&node_dir));
    let node = Proc::spawn(
        "plg-node run",
        Command::new(bin("plg-node"))
            .args([
                "--log-json",
                "run",
                "--control",
                "127.0.0.1:0",
                "--data",
                "127.0.0.1:0",
                "--gossip",
                "127.0.0.1:0",
                "--allow-private-destinations",
                "--data-dir",
            ])
            .arg(&node_dir),
    );
    let id = field(&node.wait_for("node running"), "node");
    (node, id)
}
