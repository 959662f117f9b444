//! The `tun` capture backend for real, in network namespaces (Linux, root; CI runs as root).
//! Without root these tests fail with a message; `PLG_SKIP_NETNS=1` skips them knowingly.
//!
//! Topology of the end-to-end test (three namespaces, two veth links, nothing forwards):
//!
//! ```text
//!  game PC ns                      relay node ns                        game server ns
//!  ┌──────────────────────┐        ┌────────────────────────────┐       ┌──────────────────┐
//!  │ game (python, UDP)   │        │ billing + plg-node         │       │ server (python)  │
//!  │ plg client + plg0    │ gp0  n0│ on 10.200.9.1 (lo)         │n1   s0│ 10.200.2.2       │
//!  │ 10.200.1.2           ├────────┤ 10.200.1.1     10.200.2.1  ├───────┤ fd00:200:2::2    │
//!  │ fd00:200:1::2        │        │ fd00:200:1::1  fd00:200:2::1       │ (no default rt)  │
//!  │ default via .1.1     │        │ ip_forward = 0             │       └──────────────────┘
//!  └──────────────────────┘        └────────────────────────────┘
//! ```
//!
//! The game's catalog entry is `10.200.0.0/16` and `fd00:200::/32` on the server's port. That
//! /16 also covers the node's and billing's address 10.200.9.1, so the TUN backend must carve
//! it out, or the session's own UDP to the node (on a port in the game's range, as the test
//! checks with `ip route get`) would loop into the device. The node namespace does not forward,
//! so the only way the game's packets reach the server is through the session: the server
//! seeing the node's address (10.200.2.1) as the source proves the path. The client runs
//! in-process on a thread that entered the game-PC namespace (setns), the node and billing on
//! one that entered the node namespace; the game and the server are processes started with
//! `ip netns exec`.

#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use plg_client::capture::{Targets, TunCapture, TunConfig};
use plg_client::{BillingClient, Proxy, Redundancy};

const GAME: &str = "netns-game";
const PASSWORD: &str = "correct horse battery staple";
const NODE_IP: &str = "10.200.9.1";
const SERVER_V4: &str = "10.200.2.2";
const SERVER_V6: &str = "fd00:200:2::2";
/// The exit node's addresses on the server link: what the server must see as the source.
const NODE_SERVER_SIDE_V4: &str = "10.200.2.1";
const NODE_SERVER_SIDE_V6: &str = "fd00:200:2::1";
const DEVICE: &str = "plg0";
/// Packets the game sends to each server address.
const PACKETS: usize = 40;

// ---------------------------------------------------------------------------------------------
// Namespaces and commands.

/// Whether to run: true as root; false (with a note) when PLG_SKIP_NETNS=1; a failure otherwise.
fn netns_allowed() -> bool {
    if std::env::var("PLG_SKIP_NETNS").is_ok_and(|v| v == "1") {
        eprintln!("PLG_SKIP_NETNS=1: skipping the network-namespace test");
        return false;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and TUN devices and must run as root (CI does); \
         set PLG_SKIP_NETNS=1 to skip it knowingly"
    );
    true
}

fn unique(role: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "plgt{}-{}-{role}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, failing with its stderr.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        let name = unique(role);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns(name);
        // IPv6 addresses usable at once (no duplicate address detection), so route snapshots
        // taken before and after a test don't differ by an address still being checked.
        ns.sysctl("net.ipv6.conf.all.accept_dad=0");
        ns.sysctl("net.ipv6.conf.default.accept_dad=0");
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n <ns> <args>`.
    fn ip(&self, args: &str) -> String {
        run(Command::new("ip")
            .args(["-n", &self.0])
            .args(args.split_whitespace()))
    }

    /// `ip netns exec <ns> <program> <args>`.
    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    fn sysctl(&self, setting: &str) {
        run(self.exec("sysctl").args(["-qw", setting]));
    }

    /// Runs `f` on a new thread that has entered this namespace (as do the threads and
    /// processes it starts).
    fn thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        })
    }

    /// Every route (all tables, both families).
    fn routes(&self) -> String {
        self.ip("-4 route show table all") + &self.ip("-6 route show table all")
    }

    /// Every policy rule (both families).
    fn rules(&self) -> String {
        self.ip("-4 rule show") + &self.ip("-6 rule show")
    }

    /// Routes and rules, for before/after comparisons.
    fn state(&self) -> String {
        self.routes() + &self.rules()
    }

    /// `ip route get <dst> ipproto <proto> dport <port>`: where such a packet would go.
    fn route_get(&self, dst: &str, proto: &str, port: u16) -> String {
        self.ip(&format!("route get {dst} ipproto {proto} dport {port}"))
    }

    /// Waits until `ifname` has carrier and its IPv6 link-local address: both arrive
    /// asynchronously (link watch) and change the route table when they do.
    fn wait_up(&self, ifname: &str) {
        eventually(
            Duration::from_secs(10),
            &format!("{ifname} to come up"),
            || {
                let link: serde_json::Value =
                    serde_json::from_str(&self.ip(&format!("-j link show {ifname}"))).unwrap();
                link[0]["operstate"] == "UP"
                    && self
                        .ip(&format!("-6 addr show dev {ifname} scope link"))
                        .contains("fe80:")
            },
        );
    }

    fn links(&self) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&self.ip("-j link show")).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it returns true, for at most `limit`.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Leaves no trace: no TUN device, and exactly the routes and rules there were before.
fn assert_clean(ns: &Netns, before: &str, when: &str) {
    assert_settles(ns, Netns::state, before, when);
}

/// No TUN device, and `probe` (routes, or routes and rules) back to `before`.
fn assert_settles(ns: &Netns, probe: fn(&Netns) -> String, before: &str, when: &str) {
    eventually(Duration::from_secs(5), "the TUN device to go", || {
        !ns.links().iter().any(|l| l == DEVICE)
    });
    let mut now = String::new();
    let settled = (0..100).any(|_| {
        now = probe(ns);
        now == before || {
            std::thread::sleep(Duration::from_millis(20));
            false
        }
    });
    assert!(
        settled,
        "left behind {when}:\nbefore:\n{before}\nnow:\n{now}"
    );
}

// ---------------------------------------------------------------------------------------------
// The game and its server (Python 3, so they know nothing of us).

/// Echo-like server: prints its port, then `<peer ip> <peer port> <len>` per datagram, and
/// answers each with the payload reversed plus `|srv`.
const SERVER_PY: &str = r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, peer = s.recvfrom(65535)
    ip = peer[0][7:] if peer[0].startswith("::ffff:") else peer[0]
    print(ip, peer[1], len(data), flush=True)
    s.sendto(data[::-1] + b"|srv", peer)
"#;

/// The game: `play N addr...` sends N datagrams of varied sizes to each address and checks
/// every reply byte for byte (retrying a datagram at most 5 times); `silent addr...` sends one
/// datagram (twice) and reports whether anything came back. Prints one JSON object.
const GAME_PY: &str = r#"
import json, os, socket, sys
mode, args = sys.argv[1], sys.argv[2:]
n = int(args.pop(0)) if mode == "play" else 1
attempts = 6 if mode == "play" else 2
sizes = [1, 2, 33, 200, 548, 1200, 1400]
report = {}
for target in args:
    host, port = target.rsplit(":", 1)
    host, port = host.strip("[]"), int(port)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    ok = wrong = retries = 0
    sources = set()
    for i in range(n):
        payload = os.urandom(sizes[i % len(sizes)])
        expected = payload[::-1] + b"|srv"
        for attempt in range(attempts):
            s.sendto(payload, (host, port))
            try:
                data, src = s.recvfrom(65535)
            except socket.timeout:
                retries += 1
                continue
            sources.add(src[0])
            if data == expected:
                ok += 1
            else:
                wrong += 1
            break
    report[target] = {"ok": ok, "wrong": wrong, "retries": retries, "sources": sorted(sources)}
print(json.dumps(report), flush=True)
"#;

fn run_game(ns: &Netns, mode: &str, targets: &[String]) -> serde_json::Value {
    let mut cmd = ns.exec("python3");
    cmd.args(["-c", GAME_PY, mode]);
    if mode == "play" {
        cmd.arg(PACKETS.to_string());
    }
    let out = run(cmd.args(targets));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("game printed {out:?}: {e}"))
}

struct Server {
    _proc: Proc,
    port: u16,
    /// `(peer ip, payload length)` per datagram received.
    seen: Arc<Mutex<Vec<(String, usize)>>>,
}

fn start_server(ns: &Netns) -> Server {
    let mut child = ns
        .exec("python3")
        .args(["-c", SERVER_PY])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the game server");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (port_tx, port_rx) = mpsc::channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = port_tx.send(first.trim().parse::<u16>().ok());
        }
        for line in lines.map_while(Result::ok) {
            let mut parts = line.split_whitespace();
            if let (Some(ip), Some(_port), Some(len)) = (parts.next(), parts.next(), parts.next()) {
                log.lock()
                    .unwrap()
                    .push((ip.to_owned(), len.parse().unwrap_or(0)));
            }
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .ok()
        .flatten()
        .expect("the game server did not print its port");
    Server {
        _proc: proc,
        port,
        seen,
    }
}

// ---------------------------------------------------------------------------------------------
// Billing and a node, in the node namespace.

struct NodeSide {
    billing_url: String,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Drop for NodeSide {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_node_side(ns: &Netns, dir: &std::path::Path, server_port: u16) -> NodeSide {
    let dir = dir.to_owned();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(String, String)>>();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = ns.thread(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let up = async {
                let node_ip: IpAddr = NODE_IP.parse()?;
                let config = plg_billing::Config {
                    listen: (node_ip, 0).into(),
                    data_dir: dir.join("billing"),
                    extra_games: vec![plg_billing::games::GameSeed {
                        slug: GAME.into(),
                        name: "Namespace test game".into(),
                        destinations: vec![
                            format!("10.200.0.0/16:{server_port}").parse()?,
                            format!("[fd00:200::/32]:{server_port}").parse()?,
                        ],
                        process_names: vec![],
                        ..Default::default()
                    }],
                    ..plg_billing::Config::default()
                };
                let billing = plg_billing::Billing::open(config).await?;
                let listener = billing.bind().await?;
                let url = format!("http://{}", listener.local_addr()?);
                let (billing_stop, billing_stop_rx) = tokio::sync::oneshot::channel::<()>();
                let serve = tokio::spawn(billing.clone().serve(listener, async {
                    let _ = billing_stop_rx.await;
                }));
                let token = billing.create_join_token(Duration::from_secs(600)).await?;
                let identity =
                    plg_node::join(&url, &token, "netns-node", "local", &dir.join("node"))
                        .await
                        .context("joining the node")?;
                let node = plg_node::start(
                    identity,
                    plg_node::NodeConfig {
                        control_listen: (node_ip, 0).into(),
                        data_listen: (node_ip, 0).into(),
                        allow_private_destinations: true,
                        ..plg_node::NodeConfig::default()
                    },
                )
                .await
                .context("starting the node")?;
                anyhow::Ok((billing, url, billing_stop, serve, node))
            };
            match up.await {
                Ok((billing, url, billing_stop, serve, node)) => {
                    let _ = ready_tx.send(Ok((url, billing.ca_cert_pem().to_owned())));
                    let _ = stop_rx.await;
                    node.shutdown().await;
                    let _ = billing_stop.send(());
                    let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
                    billing.close().await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
            Ok(())
        })
    });
    let (billing_url, ca_pem) = ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("billing and the node did not start in time")
        .expect("starting billing and the node");
    NodeSide {
        billing_url,
        ca_pem,
        stop: Some(stop),
        thread: Some(thread),
    }
}

// ---------------------------------------------------------------------------------------------
// The client, in the game-PC namespace.

struct ClientReport {
    describe: String,
    from_game: u64,
    to_game: u64,
    captured: u64,
    delivered: u64,
}

struct ClientSide {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<ClientReport>>>,
}

impl ClientSide {
    fn stop(mut self) -> ClientReport {
        drop(self.stop.take());
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the client thread panicked")
            .expect("the client failed")
    }
}

impl Drop for ClientSide {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What `plg connect <game> --mode tun` does: session from billing, TUN capture of the
/// ticket's destinations minus the node's and billing's addresses, data path.
fn start_client(ns: &Netns, billing_url: String, ca_pem: String) -> ClientSide {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = ns.thread(move || -> Result<ClientReport> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let up = async {
                let mut billing = BillingClient::new(&billing_url);
                billing.register("gamer@netns.test", PASSWORD).await?;
                billing.login("gamer@netns.test", PASSWORD).await?;
                let (grant, node, tunnel) =
                    plg_client::open_session(&billing, &ca_pem, GAME, None).await?;
                let control: SocketAddr = node.control_addr.parse()?;
                let billing_ip: IpAddr = billing_url
                    .trim_start_matches("http://")
                    .parse::<SocketAddr>()?
                    .ip();
                let targets = Targets::parse(&grant.destinations)?.exclude([
                    control.ip(),
                    tunnel.data_addr.ip(),
                    billing_ip,
                ]);
                let capture = TunCapture::open(TunConfig::new(targets))?;
                let counters = capture.counters();
                let data = tunnel.data_addr;
                let proxy =
                    Proxy::start_with(tunnel, capture, vec![data], Redundancy::Single, None)
                        .await?;
                anyhow::Ok((proxy, counters))
            };
            let (proxy, counters) = match up.await {
                Ok(x) => x,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            let _ = ready_tx.send(Ok(()));
            let _ = stop_rx.await;
            let report = ClientReport {
                describe: proxy.capture.clone(),
                from_game: proxy.stats.from_game.load(Ordering::Relaxed),
                to_game: proxy.stats.to_game.load(Ordering::Relaxed),
                captured: 0,
                delivered: 0,
            };
            // Stopping drops the capture: device and routes must go with it.
            proxy.stop().await;
            Ok(ClientReport {
                captured: counters.captured.load(Ordering::Relaxed),
                delivered: counters.delivered.load(Ordering::Relaxed),
                ..report
            })
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the client did not start in time")
        .expect("starting the client");
    ClientSide {
        stop: Some(stop),
        thread: Some(thread),
    }
}

fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip(&format!(
        "link add {a_if} type veth peer name {b_if} netns {}",
        b.0
    ));
    a.ip(&format!("link set {a_if} up"));
    b.ip(&format!("link set {b_if} up"));
    a.wait_up(a_if);
    b.wait_up(b_if);
}

// ---------------------------------------------------------------------------------------------

/// The three namespaces of the module docs, linked and addressed.
fn topology() -> (Netns, Netns, Netns) {
    let gp = Netns::new("gp");
    let node = Netns::new("node");
    let srv = Netns::new("srv");
    // Strict reverse-path filtering on the game PC, as on a hardened desktop: replies written
    // into the TUN device must come in on the interface the server is routed through.
    gp.sysctl("net.ipv4.conf.all.rp_filter=1");
    gp.sysctl("net.ipv4.conf.default.rp_filter=1");
    node.sysctl("net.ipv4.ip_forward=0");
    node.sysctl("net.ipv6.conf.all.forwarding=0");
    link(&gp, "gp0", &node, "n0");
    link(&srv, "s0", &node, "n1");
    gp.ip("addr add 10.200.1.2/24 dev gp0");
    gp.ip("addr add fd00:200:1::2/64 dev gp0 nodad");
    gp.ip("route add default via 10.200.1.1");
    gp.ip("-6 route add default via fd00:200:1::1");
    node.ip("addr add 10.200.1.1/24 dev n0");
    node.ip("addr add fd00:200:1::1/64 dev n0 nodad");
    node.ip("addr add 10.200.2.1/24 dev n1");
    node.ip("addr add fd00:200:2::1/64 dev n1 nodad");
    node.ip(&format!("addr add {NODE_IP}/32 dev lo"));
    srv.ip("addr add 10.200.2.2/24 dev s0");
    srv.ip("addr add fd00:200:2::2/64 dev s0 nodad");
    (gp, node, srv)
}

#[test]
fn game_traffic_goes_through_the_tun_capture_and_the_node() {
    if !netns_allowed() {
        return;
    }
    let (gp, node, srv) = topology();

    let server = start_server(&srv);
    let targets = vec![
        format!("{SERVER_V4}:{}", server.port),
        format!("[{SERVER_V6}]:{}", server.port),
    ];

    // Without the client the server is unreachable from the game PC: the node does not forward.
    let before = run_game(&gp, "silent", &targets);
    for t in &targets {
        assert_eq!(
            before[t]["ok"], 0,
            "{t} answered without the client: {before}"
        );
    }
    assert!(server.seen.lock().unwrap().is_empty());
    let before = gp.state();

    let dir = tempfile::tempdir().unwrap();
    let node_side = start_node_side(&node, dir.path(), server.port);
    let client = start_client(&gp, node_side.billing_url.clone(), node_side.ca_pem.clone());

    // The device is up and the game's UDP goes into it; the node's address, other protocols
    // and other ports to the game's servers keep their normal routes.
    assert!(gp.links().iter().any(|l| l == DEVICE), "no {DEVICE}");
    let port = server.port;
    let into_tun = format!("dev {DEVICE}");
    for server_ip in [SERVER_V4, SERVER_V6] {
        let udp = gp.route_get(server_ip, "udp", port);
        assert!(udp.contains(&into_tun), "game UDP: {udp}");
        let tcp = gp.route_get(server_ip, "tcp", port);
        assert!(!tcp.contains(&into_tun), "TCP must not be captured: {tcp}");
        let other = gp.route_get(server_ip, "udp", port.wrapping_add(1).max(1));
        assert!(
            !other.contains(&into_tun),
            "other ports must not be captured: {other}"
        );
    }
    for node_port in [port, 443] {
        let to_node = gp.route_get(NODE_IP, "udp", node_port);
        assert!(
            to_node.contains("via 10.200.1.1 dev gp0"),
            "the node's address must keep its normal route: {to_node}"
        );
    }

    let report = run_game(&gp, "play", &targets);
    for t in &targets {
        let r = &report[t];
        assert_eq!(
            r["ok"], PACKETS,
            "{t}: not every reply came back intact: {report}"
        );
        assert_eq!(r["wrong"], 0, "{t}: a reply was altered: {report}");
        let server_ip = t.rsplit_once(':').unwrap().0.trim_matches(['[', ']']);
        assert_eq!(
            r["sources"],
            serde_json::json!([server_ip]),
            "{t}: replies must come from the server's own address"
        );
    }

    // The server saw only the exit node, on both families.
    let seen = server.seen.lock().unwrap().clone();
    assert!(
        seen.len() >= 2 * PACKETS,
        "server saw {} datagrams",
        seen.len()
    );
    let v4 = seen
        .iter()
        .filter(|(ip, _)| ip == NODE_SERVER_SIDE_V4)
        .count();
    let v6 = seen
        .iter()
        .filter(|(ip, _)| ip == NODE_SERVER_SIDE_V6)
        .count();
    assert_eq!(
        v4 + v6,
        seen.len(),
        "a datagram reached the server from elsewhere: {seen:?}"
    );
    assert!(v4 >= PACKETS && v6 >= PACKETS, "v4 {v4}, v6 {v6}");
    assert!(seen.iter().any(|(_, len)| *len == 1400));

    let stats = client.stop();
    assert!(stats.describe.starts_with("tun plg0"), "{}", stats.describe);
    assert!(
        stats.from_game >= 2 * PACKETS as u64,
        "from game {}",
        stats.from_game
    );
    assert!(
        stats.to_game >= 2 * PACKETS as u64,
        "to game {}",
        stats.to_game
    );
    assert_eq!(stats.captured, stats.from_game);
    assert_eq!(stats.delivered, stats.to_game);

    assert_clean(&gp, &before, "after the client stopped");
    drop(node_side);
}

/// A namespace with one interface and a default route, for the cleanup tests.
fn plain_ns() -> Netns {
    let ns = Netns::new("clean");
    // (No `dummy` module here: a veth pair inside the namespace does the same job.)
    ns.ip("link add d0 type veth peer name d1");
    ns.ip("link set d1 up");
    ns.ip("link set d0 up");
    ns.ip("addr add 10.200.1.2/24 dev d0");
    ns.ip("route add default via 10.200.1.1");
    ns.wait_up("d0");
    ns.wait_up("d1");
    ns
}

fn cleanup_targets() -> Targets {
    Targets::parse(["10.200.0.0/16:1000-2000", "[fd00:200::/32]:5000"])
        .unwrap()
        .exclude([NODE_IP.parse().unwrap()])
}

#[test]
fn tun_device_and_routes_vanish_when_the_session_task_panics() {
    if !netns_allowed() {
        return;
    }
    let ns = plain_ns();
    let before = ns.state();
    let (opened_tx, opened_rx) = mpsc::channel::<usize>();
    let (panic_tx, panic_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = ns.thread(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let session = tokio::spawn(async move {
                let capture = TunCapture::open(TunConfig::new(cleanup_targets())).unwrap();
                let _ = opened_tx.send(capture.routes().len());
                // The task owns the capture (as the proxy's driver task does) when it panics.
                if panic_rx.await.is_ok() {
                    panic!("session task crashed (on purpose)");
                }
                drop(capture);
            });
            session.await.unwrap_err().is_panic()
        })
    });
    let routes = opened_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("capture did not open");
    // 16 carved IPv4 routes around the node's address, one IPv6 route.
    assert_eq!(routes, 17);
    assert!(ns.links().iter().any(|l| l == DEVICE));
    let table = plg_client::capture::tun::DEFAULT_TABLE;
    assert_eq!(
        ns.ip(&format!("route show table {table} dev {DEVICE}"))
            .lines()
            .count()
            + ns.ip(&format!("-6 route show table {table} dev {DEVICE}"))
                .lines()
                .filter(|l| l.starts_with("fd00:200::/32"))
                .count(),
        17
    );
    assert_eq!(
        ns.ip(&format!("rule show table {table}")).lines().count(),
        1
    );
    assert_eq!(
        ns.ip(&format!("-6 rule show table {table}"))
            .lines()
            .count(),
        1
    );
    assert!(ns.route_get("10.200.2.2", "udp", 1500).contains("dev plg0"));
    assert!(!ns.route_get("10.200.2.2", "udp", 999).contains("dev plg0"));
    assert_ne!(ns.state(), before);
    panic_tx.send(()).unwrap();
    assert!(worker.join().unwrap(), "the task should have panicked");
    assert_clean(&ns, &before, "after the session task panicked");
}

/// Environment variable that turns [`tun_child_holds_a_capture`] on.
const CHILD_ENV: &str = "PLG_TUN_CHILD";

/// Helper process for [`tun_device_and_routes_vanish_on_ctrl_c_and_kill`], started by it as
/// this test binary in a namespace: opens a capture, says READY, then either handles Ctrl-C
/// like `plg connect` does (drop and exit) or has no handler at all.
#[test]
#[ignore = "helper process run by tun_device_and_routes_vanish_on_ctrl_c_and_kill"]
fn tun_child_holds_a_capture() {
    // Run directly (e.g. `cargo test -- --ignored`) it has nothing to do.
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        eprintln!(
            "helper process only: started by tun_device_and_routes_vanish_on_ctrl_c_and_kill"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Register the handler before saying READY, so the parent's signal finds it.
        let ctrl_c = (mode == "handler").then(|| {
            let mut s =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).unwrap();
            async move { s.recv().await }
        });
        let capture = TunCapture::open(TunConfig::new(cleanup_targets())).unwrap();
        println!("READY {}", capture.name());
        match ctrl_c {
            Some(c) => {
                c.await;
                drop(capture);
                println!("CLEAN");
            }
            None => std::future::pending::<()>().await,
        }
    });
}

#[test]
fn tun_device_and_routes_vanish_on_ctrl_c_and_kill() {
    if !netns_allowed() {
        return;
    }
    let ns = plain_ns();
    let before = ns.state();
    let routes_before = ns.routes();
    let exe = std::env::current_exe().unwrap();
    for (mode, signal) in [
        ("handler", nix::sys::signal::Signal::SIGINT),
        ("no-handler", nix::sys::signal::Signal::SIGINT),
        ("no-handler", nix::sys::signal::Signal::SIGKILL),
    ] {
        // The "no-handler" child dies of SIGINT's default action, which must not be inherited
        // as "ignored".
        let mut child = common::default_signals(&mut ns.exec(exe.to_str().unwrap()))
            .args([
                "--exact",
                "tun_child_holds_a_capture",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, mode)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut child = Proc(child);
        let (line_tx, line_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                // libtest prints "test <name> ... " before the child's own output.
                Ok(l) if l.contains("READY") => break,
                Ok(_) => continue,
                Err(_) => panic!("{mode}: the child never opened its capture"),
            }
        }
        assert!(ns.links().iter().any(|l| l == DEVICE), "{mode}: no device");
        let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = wait_timeout(&mut child.0, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{mode}/{signal}: the child did not exit"));
        let when = format!("after {signal} ({mode})");
        if mode == "handler" {
            // Like `plg connect`: Ctrl-C ends the session and drops the capture.
            assert!(status.success(), "{mode}: {status:?}");
            let rest: Vec<String> = line_rx.try_iter().collect();
            assert!(rest.iter().any(|l| l.contains("CLEAN")), "{mode}: {rest:?}");
            assert_clean(&ns, &before, &when);
        } else {
            // Killed: the kernel removed the device and its routes. The policy rules stay
            // but point at an empty table, so the game's UDP takes its normal route again.
            assert!(!status.success(), "{mode}/{signal}: {status:?}");
            assert_settles(&ns, Netns::routes, &routes_before, &when);
            let udp = ns.route_get("10.200.2.2", "udp", 1500);
            assert!(udp.contains("via 10.200.1.1 dev d0"), "{when}: {udp}");
        }
    }
    // The next start deletes the leftover rules; dropping it leaves nothing at all.
    ns.thread(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { drop(TunCapture::open(TunConfig::new(cleanup_targets())).unwrap()) })
    })
    .join()
    .unwrap();
    assert_clean(&ns, &before, "after a restart following kills");
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().ok().flatten() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tun_open_fails_cleanly_when_its_routing_table_is_taken() {
    if !netns_allowed() {
        return;
    }
    let ns = plain_ns();
    // Something else put a route in our table, where one of ours would go: the IPv4 routes
    // before it, and the device, must not survive the failed start.
    ns.ip(&format!(
        "route add 10.200.0.0/21 via 10.200.1.1 table {}",
        plg_client::capture::tun::DEFAULT_TABLE
    ));
    let before = ns.state();
    let err = ns
        .thread(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                TunCapture::open(TunConfig::new(cleanup_targets()))
                    .map(|_| ())
                    .unwrap_err()
                    .to_string()
            })
        })
        .join()
        .unwrap();
    assert!(err.contains("already exists"), "{err}");
    assert_clean(&ns, &before, "after a failed open");
}

/// A laptop moving from Wi-Fi to Ethernet: the game PC has two links to the node; mid-game
/// the first one's address is removed and its link goes down, and the default route moves
/// to the second. The session's sockets are bound to the old address, so everything goes
/// silent; the engine rebinds (new sockets, a new source address, the control connection
/// migrated) and the node follows the first authenticated frame from the new address — the
/// same session on the same node, no failover.
#[test]
fn a_session_survives_a_new_local_address() {
    if !netns_allowed() {
        return;
    }
    let gp = Netns::new("rgp");
    let node = Netns::new("rnode");
    let srv = Netns::new("rsrv");
    node.sysctl("net.ipv4.ip_forward=0");
    link(&gp, "ga0", &node, "na0");
    link(&gp, "gb0", &node, "nb0");
    link(&srv, "s0", &node, "n1");
    gp.ip("addr add 10.200.1.2/24 dev ga0");
    gp.ip("addr add 10.200.3.2/24 dev gb0");
    gp.ip("route add default via 10.200.1.1 dev ga0");
    node.ip("addr add 10.200.1.1/24 dev na0");
    node.ip("addr add 10.200.3.1/24 dev nb0");
    node.ip("addr add 10.200.2.1/24 dev n1");
    node.ip(&format!("addr add {NODE_IP}/32 dev lo"));
    srv.ip("addr add 10.200.2.2/24 dev s0");
    let server = start_server(&srv);
    let dir = tempfile::tempdir().unwrap();
    let node_side = start_node_side(&node, dir.path(), server.port);
    let server_addr: SocketAddr = format!("{SERVER_V4}:{}", server.port).parse().unwrap();

    const RATE: u64 = 64;
    const SECONDS: u64 = 10;
    const MOVE_AT: u64 = 3;
    let (moved_tx, moved_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (url, ca) = (node_side.billing_url.clone(), node_side.ca_pem.clone());
    /// Copies per sequence number, arrival times, events, the node before and after.
    type Played = (Vec<u32>, Vec<Duration>, Vec<String>, String, String);
    let client = gp.thread(move || -> Result<Played> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut billing = BillingClient::new(&url);
            billing.register("roam@netns.test", PASSWORD).await?;
            let (token, _) = billing.login("roam@netns.test", PASSWORD).await?;
            let billing = billing.with_token(token);
            let req = plg_client::ConnectRequest {
                capture: plg_client::CaptureMode::Proxy {
                    listen: "127.0.0.1:0".parse()?,
                    server: Some(server_addr),
                },
                paths: 1,
                keep_alive: false,
                ..plg_client::ConnectRequest::new(GAME)
            };
            let mut ctl = plg_client::Controller::connect(billing, ca, req, |_| {}).await?;
            let before = ctl.info().node.id;
            let local = ctl.info().local_addr.context("proxy address")?;
            let game = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            game.connect(local).await?;
            let total = (RATE * SECONDS) as usize;
            let mut copies = vec![0u32; total];
            let mut arrivals = Vec::new();
            let mut events = Vec::new();
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE as u32);
            let mut sent = 0usize;
            let mut buf = [0u8; 64];
            let end = start + Duration::from_secs(SECONDS + 2);
            loop {
                tokio::select! {
                    _ = tick.tick(), if sent < total => {
                        if sent == (RATE * MOVE_AT) as usize {
                            // The main thread moves the network, then play goes on.
                            let _ = moved_tx.send(());
                            let _ = go_rx.recv_timeout(Duration::from_secs(10));
                        }
                        game.send(&(sent as u64).to_be_bytes()).await?;
                        sent += 1;
                    }
                    r = game.recv(&mut buf) => {
                        // The server answers the payload reversed, then "|srv".
                        if let Ok(n) = r && n >= 12 {
                            let mut seq = [0u8; 8];
                            seq.copy_from_slice(&buf[..8]);
                            seq.reverse();
                            if let Some(c) = copies.get_mut(u64::from_be_bytes(seq) as usize) {
                                *c += 1;
                            }
                            arrivals.push(start.elapsed());
                        }
                    }
                    ev = ctl.next_event() => if let Some(ev) = ev { events.push(format!("{ev:?}")) },
                    _ = tokio::time::sleep_until(end) => break,
                }
            }
            let after = ctl.info().node.id;
            ctl.stop().await;
            Ok((copies, arrivals, events, before, after))
        })
    });
    moved_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the game never reached the move");
    gp.ip("addr del 10.200.1.2/24 dev ga0");
    gp.ip("link set ga0 down");
    gp.ip("route replace default via 10.200.3.1 dev gb0");
    go_tx.send(()).unwrap();
    let (copies, arrivals, events, before, after) = client
        .join()
        .expect("the client thread panicked")
        .expect("the client failed");
    let at_move = Duration::from_secs(MOVE_AT);
    let gap = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let lost_after: usize = copies[(RATE * (MOVE_AT + 3)) as usize..]
        .iter()
        .filter(|&&c| c == 0)
        .count();
    println!(
        "roaming: {} of {} echoed, longest gap {} ms, lost in the last {} s: {lost_after}; events {events:?}",
        copies.iter().filter(|&&c| c > 0).count(),
        copies.len(),
        gap.as_millis(),
        SECONDS - MOVE_AT - 3
    );
    assert_eq!(before, after, "the same node carries the session");
    // Roamed over UDP: not failed over, not rescued by protected mode (the QUIC connection
    // alone would survive the move; without the rebind the data path would not).
    assert!(
        !events.iter().any(|e| e.contains("Failover")
            || e.contains("NodeLost")
            || e.contains("ProtectedMode")),
        "roamed, not failed over: {events:?}"
    );
    assert!(
        arrivals
            .iter()
            .any(|&t| t > at_move + Duration::from_secs(1)),
        "echoes came back after the move"
    );
    assert_eq!(lost_after, 0, "everything sent once settled came back");
    assert!(gap < Duration::from_millis(900), "longest gap {gap:?}");
    assert!(copies.iter().all(|&c| c <= 1), "nothing delivered twice");
    drop(node_side);
}

// ---------------------------------------------------------------------------------------------
// The capture helper: `plg-capture` as root, `plg connect` as an unprivileged user.

/// The unprivileged user `plg connect` runs as, and one the helper does not serve.
const GAMER_UID: u32 = 65534;
const STRANGER_UID: u32 = 65533;

/// `ip netns exec NS setpriv --reuid UID --regid UID --clear-groups PROGRAM`.
fn exec_as(ns: &Netns, uid: u32, program: &str) -> Command {
    let mut c = ns.exec("setpriv");
    c.args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        program,
    ]);
    c
}

/// Speaks the helper's protocol from Python: sends one frame (body argv[2], or the length
/// argv[3] in the header when given) and prints the reply's body.
const HELPER_PY: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
body = sys.argv[2].encode()
n = int(sys.argv[3]) if len(sys.argv) > 3 else len(body)
try:
    s.sendall(struct.pack(">I", n) + body)
except OSError:
    pass
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
    if len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
        break
print(data[4:].decode())
"#;

fn ask_helper(
    ns: &Netns,
    uid: u32,
    socket: &std::path::Path,
    body: &str,
    len: Option<u32>,
) -> String {
    // The system Python: a per-user one (pyenv under /root) is out of reach of other users.
    let mut cmd = exec_as(ns, uid, "/usr/bin/python3");
    cmd.args(["-c", HELPER_PY]).arg(socket).arg(body);
    if let Some(n) = len {
        cmd.arg(n.to_string());
    }
    run(&mut cmd).trim().to_owned()
}

/// A real session ticket of another account (asked from inside the game-PC namespace).
fn real_ticket(gp: &Netns, billing_url: String) -> (String, Vec<String>) {
    gp.thread(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut b = BillingClient::new(&billing_url);
            b.register("other@netns.test", PASSWORD).await.unwrap();
            b.login("other@netns.test", PASSWORD).await.unwrap();
            let g = b.request_session(GAME).await.unwrap();
            let _ = b.stop_session(&g.session_id).await;
            (g.ticket, g.destinations)
        })
    })
    .join()
    .unwrap()
}

fn helper_links(ns: &Netns) -> Vec<String> {
    ns.links()
        .into_iter()
        .filter(|l| l.starts_with(plg_client::capture::helper::linux::DEVICE_PREFIX))
        .collect()
}

#[test]
fn unprivileged_plg_connect_captures_through_the_helper() {
    use base64::Engine as _;
    use std::os::unix::fs::PermissionsExt;

    if !netns_allowed() {
        return;
    }
    let (gp, node, srv) = topology();
    let server = start_server(&srv);
    let targets = vec![
        format!("{SERVER_V4}:{}", server.port),
        format!("[{SERVER_V6}]:{}", server.port),
    ];
    let before = gp.state();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let node_side = start_node_side(&node, dir.path(), server.port);

    // The helper, as root in the game PC's namespace, serving the gamer's uid.
    let socket = dir.path().join("run/capture.sock");
    let helper_log = dir.path().join("helper.log");
    let mut helper = gp.exec(env!("CARGO_BIN_EXE_plg-capture"));
    helper
        .args(["serve", "--uid", &GAMER_UID.to_string(), "--allow-private"])
        .args(["--billing", &node_side.billing_url])
        .arg("--socket")
        .arg(&socket)
        .env("PLG_LOG", "info")
        .stderr(File::create(&helper_log).unwrap());
    let _helper = Proc(helper.spawn().expect("starting plg-capture"));
    eventually(Duration::from_secs(20), "the helper's socket", || {
        socket.exists()
    });

    // Refusals: another uid; a forged ticket; a destination outside a real ticket; a frame
    // announcing 4 GiB. The helper answers each and keeps serving.
    let stranger = ask_helper(&gp, STRANGER_UID, &socket, r#"{"ticket":""}"#, None);
    println!("stranger: {stranger}");
    assert!(
        stranger.contains("not_allowed") && stranger.contains("uid 65533 may not use"),
        "{stranger}"
    );
    let forged = plg_proto::ticket::Ticket {
        key_id: 1,
        issued_at: 1,
        expires_at: u64::MAX,
        session_id: 1,
        account_id: 1,
        plan: 1,
        game_id: 1,
        path_limit: 8,
        bandwidth_kbps: 0,
        destinations: vec!["0.0.0.0/0:1-65535".parse().unwrap()],
    }
    .sign(&ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
    let body = serde_json::json!({
        "ticket": base64::engine::general_purpose::STANDARD.encode(forged)
    });
    let answer = ask_helper(&gp, GAMER_UID, &socket, &body.to_string(), None);
    println!("forged: {answer}");
    assert!(
        answer.contains("bad_ticket") && answer.contains("signature is invalid"),
        "{answer}"
    );
    let (ticket, dests) = real_ticket(&gp, node_side.billing_url.clone());
    assert_eq!(dests.len(), 2, "{dests:?}");
    let outside = format!("10.201.0.0/16:{}", server.port);
    let body = serde_json::json!({"ticket": ticket, "destinations": [outside]});
    let answer = ask_helper(&gp, GAMER_UID, &socket, &body.to_string(), None);
    println!("outside the ticket: {answer}");
    assert!(
        answer.contains("\"destination\"") && answer.contains("does not allow it"),
        "{answer}"
    );
    let answer = ask_helper(&gp, GAMER_UID, &socket, "{}", Some(u32::MAX));
    println!("4 GiB frame: {answer}");
    assert!(answer.contains("malformed"), "{answer}");
    assert!(helper_links(&gp).is_empty(), "a refusal left a device");
    assert_eq!(gp.state(), before, "a refusal left routes or rules");

    // The gamer logs in and connects, as an unprivileged user, typing no address.
    let home = dir.path().join("gamer");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(GAMER_UID), Some(GAMER_UID)).unwrap();
    let plg = |args: &[&str]| {
        let mut c = exec_as(&gp, GAMER_UID, env!("CARGO_BIN_EXE_plg"));
        c.args(args)
            .env("PLG_CONFIG_DIR", &home)
            .env("PLG_PASSWORD", PASSWORD)
            .env("PLG_CAPTURE_SOCKET", &socket)
            .stdin(Stdio::null());
        c
    };
    run(&mut plg(&[
        "login",
        "--billing",
        &node_side.billing_url,
        "--email",
        "gamer@netns.test",
        "--register",
    ]));
    let mut connect = plg(&["connect", GAME, "--plain"]);
    connect.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = connect.spawn().expect("starting plg connect");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let client = Proc(child);
    let (line_tx, line_rx) = mpsc::channel::<String>();
    let err_tx = line_tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(format!("stderr: {l}"));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut said = Vec::new();
    let capturing = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match line_rx.recv_timeout(left) {
            Ok(l) if l.contains("capturing the game's traffic with helper") => break l,
            Ok(l) => said.push(l),
            Err(_) => panic!("plg connect did not start capturing: {said:#?}"),
        }
    };
    println!("plg connect (uid {GAMER_UID}): {capturing}");
    assert!(capturing.contains("tun plgc0"), "{capturing}");
    assert_eq!(helper_links(&gp), ["plgc0"]);
    let rules = gp.rules();
    let table = plg_client::capture::tun::DEFAULT_TABLE + 1;
    assert!(
        rules.contains(&format!("lookup {table}")),
        "no rules for table {table}: {rules}"
    );
    let udp = gp.route_get(SERVER_V4, "udp", server.port);
    assert!(udp.contains("dev plgc0"), "game UDP: {udp}");

    // The game, a plain UDP program, sends to the server's real addresses.
    let report = run_game(&gp, "play", &targets);
    println!("game through the helper: {report}");
    for t in &targets {
        assert_eq!(report[t]["ok"], PACKETS, "{t}: {report}");
        assert_eq!(report[t]["wrong"], 0, "{t}: {report}");
    }
    let seen = server.seen.lock().unwrap().clone();
    let via_node = seen
        .iter()
        .filter(|(ip, _)| ip == NODE_SERVER_SIDE_V4 || ip == NODE_SERVER_SIDE_V6)
        .count();
    println!(
        "server saw {} datagrams, {via_node} from the exit node",
        seen.len()
    );
    assert_eq!(via_node, seen.len(), "{seen:?}");
    assert!(via_node >= 2 * PACKETS);

    // SIGKILL: no chance to clean up. The device goes with the descriptor, the helper
    // deletes the rules when the connection drops.
    let pid = nix::unistd::Pid::from_raw(client.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(client);
    let killed = Instant::now();
    eventually(Duration::from_secs(10), "the helper's device to go", || {
        helper_links(&gp).is_empty()
    });
    let mut now = String::new();
    eventually(
        Duration::from_secs(10),
        "routes and rules to be back",
        || {
            now = gp.state();
            now == before
        },
    );
    println!(
        "after SIGKILL: device and rules gone in {} ms",
        killed.elapsed().as_millis()
    );
    eventually(
        Duration::from_secs(5),
        "the helper to log the hang-up",
        || {
            std::fs::read_to_string(&helper_log)
                .is_ok_and(|l| l.contains("client gone: rules deleted"))
        },
    );
    let log = std::fs::read_to_string(&helper_log).unwrap();
    assert!(!log.contains(&ticket[..40]), "the helper logged a ticket");
    assert!(!log.contains("panicked"), "{log}");
    drop(node_side);
}
