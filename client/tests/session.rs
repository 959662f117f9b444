//! The real `plg` binary against a real deployment on loopback (billing and relay nodes run
//! in this test process, the game server is a UDP echo): game detection with `--auto`,
//! `plg games` marking a running game, `plg nodes` probing, `plg bench` before/after, ticket
//! renewal of a running session, and the failure messages.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "a long enough password";

/// Billing, `nodes` relay nodes and an echo game server, all on 127.0.0.1.
struct Mesh {
    _dir: tempfile::TempDir,
    url: String,
    game: SocketAddr,
    billing: plg_billing::Billing,
    billing_stop: Option<tokio::sync::oneshot::Sender<()>>,
    nodes: Vec<plg_node::RunningNode>,
}

struct Options {
    nodes: usize,
    process_names: Vec<String>,
    ticket_ttl_secs: Option<u64>,
    trial_on_signup: bool,
    /// The nodes gossip (they must, to relay each other's sessions).
    mesh: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 1,
            process_names: vec![],
            ticket_ttl_secs: None,
            trial_on_signup: true,
            mesh: false,
        }
    }
}

async fn echo_server() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

impl Mesh {
    async fn start(opts: Options) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let game = echo_server().await;
        let mut config = plg_billing::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("billing"),
            extra_games: vec![plg_billing::games::GameSeed {
                slug: "demo".into(),
                name: "Demo".into(),
                destinations: vec![format!("127.0.0.1/32:{}", game.port()).parse().unwrap()],
                process_names: opts.process_names,
                ..Default::default()
            }],
            trial_on_signup: opts.trial_on_signup,
            ..plg_billing::Config::default()
        };
        if let Some(ttl) = opts.ticket_ttl_secs {
            config.ticket_ttl_secs = ttl;
        }
        let billing = plg_billing::Billing::open(config).await.unwrap();
        let listener = billing.bind().await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (billing_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(billing.clone().serve(listener, async {
            let _ = stop_rx.await;
        }));
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let token = billing
                .create_join_token(Duration::from_secs(600))
                .await
                .unwrap();
            let name = format!("node-{}", i + 1);
            let identity = plg_node::join(&url, &token, &name, "local", &dir.path().join(&name))
                .await
                .unwrap();
            let node = plg_node::start(
                identity,
                plg_node::NodeConfig {
                    control_listen: "127.0.0.1:0".parse().unwrap(),
                    data_listen: "127.0.0.1:0".parse().unwrap(),
                    allow_private_destinations: true,
                    gossip_listen: opts.mesh.then(|| "127.0.0.1:0".parse().unwrap()),
                    ..plg_node::NodeConfig::default()
                },
            )
            .await
            .unwrap();
            nodes.push(node);
        }
        Mesh {
            _dir: dir,
            url,
            game,
            billing,
            billing_stop: Some(billing_stop),
            nodes,
        }
    }

    async fn stop(mut self) {
        for n in self.nodes.drain(..) {
            n.shutdown().await;
        }
        if let Some(s) = self.billing_stop.take() {
            let _ = s.send(());
        }
        self.billing.close().await;
    }
}

fn plg(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plg"));
    c.env("PLG_CONFIG_DIR", config)
        .env_remove("PLG_PASSWORD")
        .env_remove("PLG_BILLING_URL");
    c
}

/// Signs up and logs in; returns the config dir.
fn login(mesh: &Mesh, dir: &Path, email: &str) -> PathBuf {
    let config = dir.join(format!("plg-{email}"));
    let mut child = plg(&config)
        .args([
            "login",
            "--billing",
            &mesh.url,
            "--email",
            email,
            "--register",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "plg login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    config
}

/// Runs to completion off the async runtime; returns (success, stdout, stderr).
async fn output(mut cmd: Command) -> (bool, String, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A child process killed on drop, with its output lines on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = common::default_signals(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (without blocking the runtime) for a line containing `needle`.
    async fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            match self.lines.try_recv() {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        panic!(
            "never printed {needle:?}; printed:\n{}",
            self.seen.join("\n")
        );
    }

    fn interrupt(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    }

    async fn wait_exit(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.success();
            }
            assert!(tokio::time::Instant::now() < deadline, "did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one datagram to `to` and waits for the same bytes back.
async fn round_trip(to: SocketAddr, payload: &[u8]) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..20 {
        s.send_to(payload, to).await.unwrap();
        let mut buf = [0u8; 2048];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(250), s.recv_from(&mut buf)).await
            && &buf[..n] == payload
        {
            return true;
        }
    }
    false
}

fn proxy_addr(line: &str) -> SocketAddr {
    // "point the game at 127.0.0.1:PORT — traffic goes to ..."
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_waits_for_the_game_process_then_connects_and_launches() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(Options {
        // The catalog names the Windows executable; on Linux the process is called without
        // ".exe": detection ignores the suffix.
        process_names: vec!["plg-fakegame.exe".into()],
        ..Options::default()
    })
    .await;
    let config = login(&mesh, dir.path(), "auto@example.com");

    // Not running yet: `plg games` shows no mark.
    let mut games = plg(&config);
    games.args(["games", "demo"]);
    let (ok, out, err) = output(games).await;
    assert!(ok, "{err}");
    assert!(out.contains("demo") && !out.contains("running"), "{out}");

    let marker = dir.path().join("launched");
    let launcher = dir.path().join("launch.sh");
    std::fs::write(
        &launcher,
        format!("#!/bin/sh\ntouch {}\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &launcher,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut connect = Proc::spawn(plg(&config).args([
        "connect",
        "--auto",
        "--proxy",
        "127.0.0.1:0",
        "--to",
        &mesh.game.to_string(),
        "--launch",
        launcher.to_str().unwrap(),
    ]));
    connect.wait_for("waiting for one of", WAIT).await;

    // A real process whose name is the catalog's: a copy of `sleep` renamed.
    let game_exe = dir.path().join("plg-fakegame");
    std::fs::copy("/bin/sleep", &game_exe).unwrap();
    let mut game = Proc::spawn(Command::new(&game_exe).arg("60"));

    let detected = connect.wait_for("detected", WAIT).await;
    assert!(
        detected.contains("demo") && detected.contains(&game.child.id().to_string()),
        "{detected}"
    );
    let line = connect.wait_for("point the game at", WAIT).await;
    connect.wait_for("launched", WAIT).await;
    let proxy = proxy_addr(&line);
    assert!(round_trip(proxy, b"hello through the node").await);
    // The status line (not a TTY) with the node RTT and the end-to-end ping via the node.
    connect.wait_for("game ping via node", WAIT).await;
    assert!(marker.exists(), "--launch did not run the program");

    // While it runs, `plg games` marks it.
    let mut games = plg(&config);
    games.args(["games"]);
    let (ok, out, _) = output(games).await;
    assert!(ok);
    let row = out.lines().find(|l| l.starts_with("demo")).unwrap();
    assert!(
        row.contains("running") && row.contains("plg-fakegame"),
        "{out}"
    );

    connect.interrupt();
    connect.wait_for("disconnected", WAIT).await;
    assert!(connect.wait_exit().await);
    let _ = game.child.kill();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_path_goes_through_another_node_of_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(Options {
        nodes: 2,
        mesh: true,
        ..Options::default()
    })
    .await;
    let config = login(&mesh, dir.path(), "relay@example.com");
    let mut connect = Proc::spawn(plg(&config).args([
        "connect",
        "demo",
        "--proxy",
        "127.0.0.1:0",
        "--to",
        &mesh.game.to_string(),
        "--redundancy",
        "duplicate",
        "--plain",
    ]));
    connect.wait_for("path 0: straight to node", WAIT).await;
    let line = connect.wait_for("path 1: through node", WAIT).await;
    // "path 1: through node RELAY (ADDR) to node EXIT"
    let words: Vec<&str> = line.split_whitespace().collect();
    let (relay, exit) = (words[4], words[words.len() - 1]);
    assert_ne!(relay, exit, "{line}");
    let relay = mesh.nodes.iter().find(|n| n.node_id == relay).unwrap();
    let proxy = proxy_addr(&connect.wait_for("point the game at", WAIT).await);

    // Every packet goes both ways on both paths (duplicate): once the relay has learned the
    // session from gossip, its counters move in both directions.
    let counts = || {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &relay.metrics;
        (m.relayed_up.load(Relaxed), m.relayed_down.load(Relaxed))
    };
    let game = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut answered = 0;
    while counts().1 < 10 && tokio::time::Instant::now() < deadline {
        game.send_to(b"over two paths", proxy).await.unwrap();
        let mut buf = [0u8; 64];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(100), game.recv_from(&mut buf)).await
        {
            answered += u32::from(&buf[..n] == b"over two paths");
        }
    }
    let (up, down) = counts();
    println!(
        "relay {}: {up} up, {down} down; {answered} echoes",
        relay.node_id
    );
    assert!(
        up >= 10 && down >= 10,
        "relay carried {up} up / {down} down"
    );
    assert!(answered > 0);

    connect.interrupt();
    connect.wait_for("disconnected", WAIT).await;
    assert!(connect.wait_exit().await);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_probed_and_bench_compares_direct_with_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(Options {
        nodes: 2,
        ..Options::default()
    })
    .await;
    let config = login(&mesh, dir.path(), "bench@example.com");

    let mut nodes = plg(&config);
    nodes.args(["nodes", "--game", "demo", "--probes", "3"]);
    let (ok, out, err) = output(nodes).await;
    println!("{out}");
    assert!(ok, "{out}\n{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("127.0.0.1:")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for row in rows {
        // Every probe answered on loopback, with an RTT (the column after the address).
        assert!(row.contains(" 0%"), "{row}");
        let cols: Vec<&str> = row.split_whitespace().collect();
        let at = cols
            .iter()
            .position(|c| c.starts_with("127.0.0.1:"))
            .unwrap();
        assert!(cols[at + 1].parse::<f64>().unwrap() > 0.0, "{row}");
    }
    assert_eq!(out.matches("recommended").count(), 1, "{out}");
    // The echo server answers direct probes, so the verdict has a direct figure; the nodes
    // have not measured the game yet (no catalog probes here), and the line says so.
    let verdict = out.lines().last().unwrap_or_default();
    assert!(
        verdict.starts_with("direct ") && verdict.contains(" ms"),
        "{out}"
    );
    assert!(
        verdict.contains("not measured yet") || verdict.contains(" → via "),
        "{out}"
    );

    let mut bench = plg(&config);
    bench.args(["bench", "demo", "--seconds", "1", "--rate", "64"]);
    let (ok, out, err) = output(bench).await;
    println!("{out}");
    assert!(ok, "{out}\n{err}");
    let direct = out
        .lines()
        .find(|l| l.starts_with("direct "))
        .unwrap_or_else(|| panic!("{out}"));
    let via = out
        .lines()
        .find(|l| l.starts_with("through PLG"))
        .unwrap_or_else(|| panic!("{out}"));
    for row in [direct, via] {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let n = cols.len();
        // sent, back, loss, p50, p99, jitter
        assert_eq!((cols[n - 6], cols[n - 5]), ("64", "64"), "{row}");
        assert_eq!(cols[n - 4], "0.00%", "{row}");
        assert!(cols[n - 3].parse::<f64>().unwrap() > 0.0, "{row}");
    }
    assert!(out.contains("median ping through PLG is"), "{out}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_session_renews_its_ticket_before_expiry() {
    let dir = tempfile::tempdir().unwrap();
    // The shortest ticket billing issues: 60 s, so renewal is due after 40 s.
    let mesh = Mesh::start(Options {
        ticket_ttl_secs: Some(60),
        ..Options::default()
    })
    .await;
    let config = login(&mesh, dir.path(), "renew@example.com");
    let mut connect = Proc::spawn(plg(&config).args([
        "connect",
        "demo",
        "--proxy",
        "127.0.0.1:0",
        "--to",
        &mesh.game.to_string(),
    ]));
    let first = connect.wait_for(" via node ", WAIT).await;
    let line = connect.wait_for("point the game at", WAIT).await;
    let proxy = proxy_addr(&line);
    assert!(round_trip(proxy, b"before renewal").await);
    let renewed = connect
        .wait_for("ticket renewed", Duration::from_secs(75))
        .await;
    let old_id = first.split_whitespace().nth(1).unwrap();
    // Renewed in place: the same session on the same node (the game server keeps seeing the
    // same source), with a fresh ticket from billing's renew endpoint.
    assert!(
        renewed.contains("in place") && renewed.contains(old_id),
        "the same session renewed in place: {first} / {renewed}"
    );
    // The same local port keeps working on the renewed session.
    assert!(round_trip(proxy, b"after renewal").await);
    connect.interrupt();
    connect.wait_for("disconnected", WAIT).await;
    assert!(connect.wait_exit().await);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plan_and_unreachable_billing_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(Options {
        trial_on_signup: false,
        ..Options::default()
    })
    .await;
    let config = login(&mesh, dir.path(), "noplan@example.com");
    let mut connect = plg(&config);
    connect.args(["connect", "demo", "--to", &mesh.game.to_string()]);
    let (ok, _, err) = output(connect).await;
    assert!(!ok);
    assert!(
        err.contains("what to do:") && err.contains("free trial"),
        "{err}"
    );

    // Billing goes away: the same command says billing cannot be reached and what to do.
    mesh.stop().await;
    let mut connect = plg(&config);
    connect.args(["connect", "demo", "--to", "127.0.0.1:9"]);
    let (ok, _, err) = output(connect).await;
    assert!(!ok);
    assert!(
        err.contains("cannot reach billing") && err.contains("what to do:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_in_a_terminal_and_q_quits() {
    // `script` (util-linux) runs plg on a pseudo-terminal and forwards our stdin to it.
    if Command::new("script").arg("--version").output().is_err() {
        panic!("this test needs `script` from util-linux");
    }
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(Options::default()).await;
    let config = login(&mesh, dir.path(), "tui@example.com");
    let cmd = format!(
        "stty cols 120 rows 45; exec {} connect demo --proxy 127.0.0.1:0 --to {}",
        env!("CARGO_BIN_EXE_plg"),
        mesh.game
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("PLG_CONFIG_DIR", &config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut out = out;
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut screen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    // Wait until the dashboard has drawn its panels, the path table included.
    loop {
        while let Ok(chunk) = rx.try_recv() {
            screen.extend(chunk);
        }
        let text = String::from_utf8_lossy(&screen);
        // ratatui moves the cursor over unchanged cells, so match single words.
        if ["Booster", "accelerated", "jitter", "primary", "events"]
            .iter()
            .all(|w| text.contains(w))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dashboard drawn:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "q did not quit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(500)) {
        screen.extend(chunk);
    }
    let text = String::from_utf8_lossy(&screen);
    assert!(status.success(), "exit {status:?}:\n{text}");
    // The terminal was given back (alternate screen left) before the goodbye line.
    let left = text.rfind("\u{1b}[?1049l").expect("alternate screen left");
    assert!(text[left..].contains("disconnected"), "{text}");
    mesh.stop().await;
}
