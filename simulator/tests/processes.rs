//! The README's manual path with the real binaries as separate processes: `plg-billing serve`,
//! `plg-billing join-token create`, `plg-node join`, `plg-node run`, `plg login`, `plg connect`.
//! `cargo test --workspace` builds them (node, client and billing have integration tests).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use plg_sim::echo::EchoServer;
use plg_sim::traffic::{self, TrafficSpec};

const WAIT: Duration = Duration::from_secs(20);

fn bin(name: &str) -> PathBuf {
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

/// A child process killed on drop, with its output lines on a channel.
struct Proc {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let mut child = cmd
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
    fn wait_for(&self, needle: &str) -> String {
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

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.name);
    }

    /// Waits for exit; returns whether it exited successfully.
    fn wait_exit(&mut self) -> bool {
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
fn field(line: &str, key: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    v["fields"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .to_owned()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binaries_carry_a_game_session() {
    let dir = tempfile::tempdir().unwrap();
    let game = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let billing_dir = dir.path().join("billing");
    let config = dir.path().join("billing.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[[extra_games]]\nslug = \"demo\"\nname = \"Demo\"\ndestinations = [\"127.0.0.1/32:{}\"]\n",
            game.addr.port()
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
    let mut login = Command::new(bin("plg"))
        .args([
            "login",
            "--billing",
            &url,
            "--email",
            "proc@example.com",
            "--register",
            "--password-stdin",
        ])
        .env("PLG_CONFIG_DIR", &config_dir)
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
    let out = login.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "plg login: {}",
        String::from_utf8_lossy(&out.stderr)
    );

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

    // Clean shutdowns: Ctrl-C for the gamer, SIGTERM for the daemons.
    connect.signal("INT");
    connect.wait_for("disconnected");
    assert!(connect.wait_exit(), "plg connect exit status");
    node.signal("TERM");
    assert!(node.wait_exit(), "plg-node exit status");
    billing.signal("TERM");
    let mut billing = billing;
    assert!(billing.wait_exit(), "plg-billing exit status");
}
