//! `plg-sim bench`: three paths to the same UDP echo server, measured side by side in one run —
//! direct, nginx's UDP `stream` proxy, and PLG (client → node → echo, real sealed frames,
//! sessions set up through billing and QUIC). The node runs in its own process (this binary
//! re-executed as `plg-sim bench-node`) so its CPU time and memory can be read from `/proc`;
//! so do nginx's workers. See `docs/benchmarks.md` § Node data plane.

mod load;
mod nginx;
mod procfs;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use plg_billing::Billing;
use plg_billing::config::{Plans, RateLimits};
use plg_billing::games::GameSeed;
use plg_client::{BillingClient, Tunnel};
use plg_proto::Session;
use plg_proto::frame::Frame;
use plg_proto::session::{EXPORTER_LABEL, KEYING_MATERIAL_LEN, Role};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::local_mesh::{DEMO_GAME, DEMO_PASSWORD};
use load::{Clients, Echo, Load, RunStats, Target};

/// Options of `plg-sim bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Short run (about 20 s): fewer sessions, shorter phases, one repetition. Used as the CI
    /// smoke test.
    #[arg(long)]
    pub quick: bool,
    /// Concurrent sessions (one client socket and, through PLG, one session and one flow
    /// each). Default 1000, or 50 with --quick.
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Repetitions of the whole suite; the table shows medians. Default 3, or 1 with --quick.
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Seconds per measured phase. Default 3, or 0.5 with --quick.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// nginx worker processes (the PLG node forwards on one data-plane thread).
    #[arg(long, default_value_t = 1)]
    pub nginx_workers: usize,
    /// Packets in flight in the closed-loop phase.
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// Skip nginx even when it is installed.
    #[arg(long)]
    pub no_nginx: bool,
    /// Run the node from this `plg-node` binary (`plg-node run ...`) instead of re-executing
    /// plg-sim: compares another build of the node, e.g. a baseline.
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
}

/// Options of the hidden `plg-sim bench-node`: a node in its own process for the benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Identity directory written by `plg_node::join`.
    #[arg(long)]
    pub dir: PathBuf,
}

/// Runs a node from `args.dir` on loopback; `ready` gets the line announcing its addresses.
/// Returns when standard input closes (the harness exited or is done).
pub async fn node_process(args: NodeArgs, ready: impl FnOnce(&str)) -> Result<()> {
    let identity = plg_node::Identity::load(&args.dir)?;
    let loopback: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let cfg = plg_node::NodeConfig {
        control_listen: loopback,
        data_listen: loopback,
        allow_private_destinations: true,
        // Phases of other paths run in between: never let a benchmark session idle out.
        session_idle: Duration::from_secs(3600),
        flow_idle: Duration::from_secs(3600),
        max_sessions: 100_000,
        ..plg_node::NodeConfig::default()
    };
    let node = plg_node::start(identity, cfg).await?;
    ready(&format!(
        "ready control={} data={}",
        node.control_addr, node.data_addr
    ));
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    })
    .await?;
    node.shutdown().await;
    Ok(())
}

/// A node running in a child process.
#[derive(Debug)]
struct NodeProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    data: SocketAddr,
}

impl NodeProcess {
    /// Starts `plg-sim bench-node` (or `node_bin run`) on the identity in `dir`.
    async fn spawn(dir: &Path, node_bin: Option<&Path>) -> Result<NodeProcess> {
        let mut cmd = match node_bin {
            None => {
                let mut c = Command::new(std::env::current_exe().context("locating plg-sim")?);
                c.arg("bench-node").arg("--dir").arg(dir);
                c.stdout(Stdio::piped()).stderr(Stdio::inherit());
                c
            }
            Some(bin) => {
                let mut c = Command::new(bin);
                c.arg("run")
                    .arg("--data-dir")
                    .arg(dir)
                    .args(["--control", "127.0.0.1:0", "--data", "127.0.0.1:0"])
                    .args(["--session-idle-secs", "3600", "--flow-idle-secs", "3600"])
                    .args(["--max-sessions", "100000", "--allow-private-destinations"])
                    .env("NO_COLOR", "1")
                    .env("PLG_LOG", "info");
                // It announces its addresses in its "node running" log line.
                c.stdout(Stdio::null()).stderr(Stdio::piped());
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .spawn()
            .context("starting the node process")?;
        let stdin = child.stdin.take();
        let out: Box<dyn std::io::Read + Send> = match child.stdout.take() {
            Some(o) => Box::new(o),
            None => Box::new(child.stderr.take().context("node output")?),
        };
        let (tx, rx) = oneshot::channel();
        // Reads until the address line, then keeps draining so the node never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if line.contains("control=")
                    && line.contains("data=")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line);
                }
            }
        });
        let line = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .context("node process did not start within 30 s")?
            .context("node process exited before announcing its addresses")?;
        let field = |key: &str| -> Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .with_context(|| format!("node process said {line:?}"))?
                .parse()
                .context("node address")
        };
        Ok(NodeProcess {
            data: field("data=")?,
            child,
            stdin,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // Closing stdin asks the node to shut down; kill it if it doesn't.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Billing in-process, a node in a child process, and `n` sessions opened the real way.
struct PlgSetup {
    node: NodeProcess,
    tunnels: Vec<Tunnel>,
    billing: Billing,
    billing_stop: oneshot::Sender<()>,
    billing_task: JoinHandle<Result<()>>,
    rss_idle_kib: u64,
    rss_sessions_kib: u64,
    _dir: tempfile::TempDir,
}

impl PlgSetup {
    async fn start(
        echo: SocketAddr,
        clients: &Clients,
        node_bin: Option<&Path>,
    ) -> Result<(PlgSetup, Target)> {
        let n = clients.len();
        let dir = tempfile::tempdir()?;
        let loopback: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let defaults = Plans::default();
        let config = plg_billing::Config {
            listen: loopback,
            data_dir: dir.path().join("billing"),
            extra_games: vec![GameSeed {
                slug: DEMO_GAME.into(),
                name: "Benchmark echo".into(),
                destinations: vec![format!("127.0.0.1/32:{}", echo.port()).parse()?],
                process_names: vec![],
                ..Default::default()
            }],
            // One account opens every session of the benchmark.
            plans: Plans {
                trial: plg_billing::config::PlanTerms {
                    max_sessions: n as u32 + 1,
                    ..defaults.trial.clone()
                },
                ..defaults
            },
            rate_limits: RateLimits {
                enabled: false,
                ..RateLimits::default()
            },
            ..plg_billing::Config::default()
        };
        let billing = Billing::open(config).await.context("opening billing")?;
        let listener = billing.bind().await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (billing_stop, stop_rx) = oneshot::channel::<()>();
        let billing_task = tokio::spawn(billing.clone().serve(listener, async {
            let _ = stop_rx.await;
        }));
        let node_dir = dir.path().join("node");
        let token = billing.create_join_token(Duration::from_secs(600)).await?;
        plg_node::join(&url, &token, "bench-node", "local", &node_dir)
            .await
            .context("joining the node")?;
        let node = NodeProcess::spawn(&node_dir, node_bin).await?;
        let rss_idle_kib = procfs::rss_kib(node.pid());

        let gamer = BillingClient::new(&url);
        gamer.register("bench@example.com", DEMO_PASSWORD).await?;
        let mut gamer = gamer;
        gamer.login("bench@example.com", DEMO_PASSWORD).await?;
        let gamer = Arc::new(gamer);
        let ca = Arc::new(billing.ca_cert_pem().to_owned());
        // Handshakes 16 at a time: billing's SQLite and the node's ticket checks are the pace.
        let sem = Arc::new(tokio::sync::Semaphore::new(16));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (gamer, ca, sem) = (gamer.clone(), ca.clone(), sem.clone());
            set.spawn(async move {
                let _permit = sem.acquire().await?;
                let (_, _, t) = plg_client::open_session(&gamer, &ca, DEMO_GAME, None).await?;
                anyhow::Ok((i, t))
            });
        }
        let mut tunnels: Vec<Option<Tunnel>> = (0..n).map(|_| None).collect();
        while let Some(r) = set.join_next().await {
            let (i, t) = r??;
            tunnels[i] = Some(t);
        }
        let tunnels: Vec<Tunnel> = tunnels.into_iter().map(|t| t.unwrap()).collect();
        let (mut tx, mut rx) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for t in &tunnels {
            let id = t.session.id();
            let mut km = [0u8; KEYING_MATERIAL_LEN];
            t.connection
                .export_keying_material(&mut km, EXPORTER_LABEL, &id.to_be_bytes())
                .map_err(|_| anyhow::anyhow!("key export failed"))?;
            tx.push(Session::new(Role::Client, id, &km));
            rx.push(Session::new(Role::Client, id, &km));
        }
        let data = tunnels[0].data_addr;
        if data != node.data {
            bail!(
                "billing sent the client to {data}, the node listens on {}",
                node.data
            );
        }
        let rss_sessions_kib = procfs::rss_kib(node.pid());
        // Flow 0 of every session → the echo server. Paced (a burst of a thousand would
        // overflow a default-sized socket buffer) and sent twice, as clients repeat FLOW_OPEN
        // (a repeat with the same destination is a no-op).
        let mut out = Vec::new();
        for _ in 0..2 {
            for (i, s) in tx.iter_mut().enumerate() {
                s.seal(0, &Frame::FlowOpen { flow: 0, dst: echo }, &mut out);
                clients.send_from(i, &out, data)?;
                if i % 50 == 49 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok((
            PlgSetup {
                node,
                tunnels,
                billing,
                billing_stop,
                billing_task,
                rss_idle_kib,
                rss_sessions_kib,
                _dir: dir,
            },
            Target::Plg { addr: data, tx, rx },
        ))
    }

    async fn stop(self) {
        for t in self.tunnels {
            t.connection.close(0u32.into(), b"bench done");
        }
        drop(self.node);
        let _ = self.billing_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.billing_task).await;
        self.billing.close().await;
    }
}

/// The three paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PathKind {
    Direct,
    Nginx,
    Plg,
}

impl PathKind {
    fn name(self, nginx_workers: usize) -> String {
        match self {
            PathKind::Direct => "direct".into(),
            PathKind::Nginx => format!("nginx stream ({nginx_workers}w)"),
            PathKind::Plg => "PLG node".into(),
        }
    }
}

/// What a relay (nginx or the node) cost during one phase.
#[derive(Debug, Clone)]
struct Sample {
    stats: RunStats,
    relay_cpu_ns: u64,
    echo_cpu_ns: u64,
}

impl Sample {
    /// CPU per forwarded datagram (a round trip forwards two).
    fn relay_us_per_packet(&self) -> f64 {
        self.relay_cpu_ns as f64 / 1000.0 / (2.0 * self.stats.received.max(1) as f64)
    }
    fn relay_util(&self) -> f64 {
        self.relay_cpu_ns as f64 / self.stats.elapsed.as_nanos() as f64
    }
    fn gen_util(&self) -> f64 {
        self.stats.generator_cpu_ns as f64 / self.stats.elapsed.as_nanos() as f64
    }
    fn echo_util(&self) -> f64 {
        self.echo_cpu_ns as f64 / self.stats.elapsed.as_nanos() as f64
    }
}

/// The paths under test and their relays.
struct Bench {
    clients: Clients,
    echo: Echo,
    targets: BTreeMap<PathKind, Target>,
    nginx: Option<nginx::Nginx>,
    node_pid: Option<u32>,
    seconds: f64,
    seed: u64,
}

impl Bench {
    fn relay_cpu(&self, path: PathKind) -> u64 {
        match path {
            PathKind::Direct => 0,
            PathKind::Nginx => self.nginx.as_ref().map_or(0, |n| n.cpu_ns()),
            PathKind::Plg => self.node_pid.map_or(0, procfs::process_cpu_ns),
        }
    }

    fn relay_rss_kib(&self, path: PathKind) -> u64 {
        match path {
            PathKind::Direct => 0,
            PathKind::Nginx => self.nginx.as_ref().map_or(0, |n| n.rss_kib()),
            PathKind::Plg => self.node_pid.map_or(0, procfs::rss_kib),
        }
    }

    fn phase(&mut self, path: PathKind, load: Load, seconds: f64) -> Sample {
        self.seed += 1;
        let (c0, e0) = (self.relay_cpu(path), self.echo.cpu_ns());
        let target = self.targets.get_mut(&path).expect("path");
        let stats = self.clients.run(
            target,
            load,
            Duration::from_secs_f64(seconds),
            Duration::from_millis(200),
            self.seed,
        );
        Sample {
            stats,
            relay_cpu_ns: self.relay_cpu(path).saturating_sub(c0),
            echo_cpu_ns: self.echo.cpu_ns().saturating_sub(e0),
        }
    }
}

/// One repetition's results, by phase name and path.
type Round = BTreeMap<(String, PathKind), Sample>;
/// Highest paced rate at ≤ 0.1 % loss per path, and whether the ramp ended for a reason other
/// than loss (the generator lagged or the ramp's top was reached).
type MaxPaced = BTreeMap<PathKind, (u64, bool)>;

/// Loss on the PLG path, at 64 packets/s per session, above which `bench` fails.
const SMOKE_MAX_LOSS: f64 = 0.01;

const RTT_RATES: [u64; 3] = [10_000, 50_000, 100_000];
const RAMP: [u64; 12] = [
    20_000, 40_000, 60_000, 80_000, 100_000, 120_000, 140_000, 160_000, 180_000, 200_000, 250_000,
    300_000,
];

fn round(
    b: &mut Bench,
    window: u64,
    sessions: usize,
    quick: bool,
    progress: &dyn Fn(&str),
) -> (Round, MaxPaced) {
    let paths: Vec<PathKind> = b.targets.keys().copied().collect();
    let mut r = Round::new();
    let secs = b.seconds;
    for &p in &paths {
        let s = b.phase(p, Load::Closed(window), secs);
        progress(&format!(
            "  closed loop  {:<22} {:>9.0} pkt/s  loss {:.3} %",
            p.name(1),
            s.stats.rate(),
            100.0 * s.stats.loss()
        ));
        r.insert(("closed".into(), p), s);
    }
    let ramp: &[u64] = if quick { &RAMP[..3] } else { &RAMP };
    let mut max_paced = BTreeMap::new();
    for &p in &paths {
        let mut best = (0, false);
        for &rate in ramp {
            let s = b.phase(p, Load::Paced(rate), (secs / 2.0).max(0.5));
            let ok = s.stats.loss() <= 0.001 && !s.stats.lagged;
            progress(&format!(
                "  ramp         {:<22} {:>9} pkt/s  loss {:.3} %{}",
                p.name(1),
                rate,
                100.0 * s.stats.loss(),
                if s.stats.lagged {
                    "  (generator lagged)"
                } else {
                    ""
                }
            ));
            if !ok {
                best.1 = s.stats.lagged;
                break;
            }
            best = (rate, rate == *ramp.last().unwrap());
        }
        max_paced.insert(p, best);
    }
    let rates: &[u64] = if quick { &RTT_RATES[..1] } else { &RTT_RATES };
    for &rate in rates {
        for &p in &paths {
            let s = b.phase(p, Load::Paced(rate), secs);
            progress(&format!(
                "  paced {:>6}  {:<22} loss {:.3} %  p50 {:.0} µs  p99 {:.0} µs",
                rate,
                p.name(1),
                100.0 * s.stats.loss(),
                s.stats.rtt_us(0.5),
                s.stats.rtt_us(0.99)
            ));
            r.insert((format!("paced {rate}"), p), s);
        }
    }
    let rate = 64 * sessions as u64;
    for &p in &paths {
        let s = b.phase(p, Load::Paced(rate), secs);
        r.insert(("sessions".into(), p), s);
    }
    (r, max_paced)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} × {cpu}, Linux {}", kernel.trim())
}

/// Runs the benchmark; `progress` gets a line per phase. Returns the report (tables).
pub async fn run(
    args: BenchArgs,
    progress: impl Fn(&str) + Send + Sync + 'static,
) -> Result<String> {
    let quick = args.quick;
    let sessions = args.sessions.unwrap_or(if quick { 50 } else { 1000 });
    let repeat = args.repeat.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let seconds = args.seconds.unwrap_or(if quick { 0.5 } else { 3.0 });
    if sessions == 0 || sessions > 20_000 || !(0.1..=600.0).contains(&seconds) {
        bail!("--sessions must be 1..20000 and --seconds 0.1..600");
    }
    let echo = Echo::start()?;
    let clients = Clients::bind(sessions)?;
    let mut notes = Vec::new();
    let mut targets = BTreeMap::new();
    targets.insert(PathKind::Direct, Target::Raw(echo.addr));
    let nginx = if args.no_nginx {
        notes.push("nginx skipped (--no-nginx)".to_string());
        None
    } else {
        match nginx::find() {
            Ok(bin) => {
                let n = nginx::Nginx::start(&bin, echo.addr, args.nginx_workers)?;
                targets.insert(PathKind::Nginx, Target::Raw(n.addr));
                Some(n)
            }
            Err(why) => {
                notes.push(format!("nginx path skipped: {why}"));
                None
            }
        }
    };
    let nginx_rss0 = nginx.as_ref().map_or(0, |n| n.rss_kib());
    progress(&format!(
        "opening {sessions} PLG sessions through billing + QUIC…"
    ));
    let t0 = Instant::now();
    let (plg, target) = PlgSetup::start(echo.addr, &clients, args.node_bin.as_deref()).await?;
    progress(&format!("  done in {:.1} s", t0.elapsed().as_secs_f64()));
    targets.insert(PathKind::Plg, target);
    let mut bench = Bench {
        clients,
        echo,
        targets,
        nginx,
        node_pid: Some(plg.node.pid()),
        seconds,
        seed: 0,
    };
    let window = args.window;
    let progress = Arc::new(progress);
    let p2 = progress.clone();
    let (bench, rounds) = tokio::task::spawn_blocking(move || {
        let mut rounds = Vec::new();
        for i in 0..repeat {
            p2(&format!("round {}/{repeat}", i + 1));
            rounds.push(round(&mut bench, window, sessions, quick, &*p2));
        }
        (bench, rounds)
    })
    .await?;
    // The smoke check (CI, --quick): at the sessions phase's modest rate (64 × 50 pkt/s),
    // PLG must not lose packets beyond noise. Timing is never asserted.
    let smoke = rounds
        .iter()
        .filter_map(|(r, _)| r.get(&("sessions".to_string(), PathKind::Plg)))
        .map(|s| s.stats.loss())
        .fold(0.0, f64::max);
    let node_rss = bench.relay_rss_kib(PathKind::Plg);
    let nginx_rss = bench.relay_rss_kib(PathKind::Nginx);
    let report = report(
        &args,
        sessions,
        repeat,
        seconds,
        &rounds,
        Memory {
            node_idle: plg.rss_idle_kib,
            node_sessions: plg.rss_sessions_kib,
            node_end: node_rss,
            nginx_start: nginx_rss0,
            nginx_end: nginx_rss,
        },
        &notes,
    );
    drop(bench);
    plg.stop().await;
    if quick && smoke > SMOKE_MAX_LOSS {
        bail!(
            "{report}\ngross regression: the PLG path lost {:.2} % at {} pkt/s (limit {} %)",
            100.0 * smoke,
            64 * sessions,
            100.0 * SMOKE_MAX_LOSS
        );
    }
    Ok(report)
}

struct Memory {
    node_idle: u64,
    node_sessions: u64,
    node_end: u64,
    nginx_start: u64,
    nginx_end: u64,
}

fn report(
    args: &BenchArgs,
    sessions: usize,
    repeat: usize,
    seconds: f64,
    rounds: &[(Round, MaxPaced)],
    mem: Memory,
    notes: &[String],
) -> String {
    use std::fmt::Write;
    let w = args.nginx_workers;
    let mut paths: Vec<PathKind> = rounds[0].0.keys().map(|(_, p)| *p).collect();
    paths.dedup();
    paths.sort();
    paths.dedup();
    let med = |phase: &str, p: PathKind, f: &dyn Fn(&Sample) -> f64| -> f64 {
        median(
            rounds
                .iter()
                .filter_map(|(r, _)| r.get(&(phase.to_string(), p)).map(f))
                .collect(),
        )
    };
    let mut o = String::new();
    let _ = writeln!(o, "# plg-sim bench — {}", machine());
    let _ = writeln!(
        o,
        "{sessions} sessions (one client socket each; through PLG one session + one flow each), \
         payloads 100–300 B, {seconds} s per phase, medians of {repeat} round(s); \
         nginx: {w} worker(s), PLG node: one data-plane thread, own process."
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "## Throughput\n\n| path | closed loop ({} in flight) pkt/s | loss | relay CPU µs/pkt | relay CPU | max paced pkt/s at ≤ 0.1 % loss |\n|---|---:|---:|---:|---:|---:|",
        args.window
    );
    for &p in &paths {
        let maxes: Vec<f64> = rounds
            .iter()
            .filter_map(|(_, m)| m.get(&p).map(|x| x.0 as f64))
            .collect();
        let capped = rounds.iter().any(|(_, m)| m.get(&p).is_some_and(|x| x.1));
        let _ = writeln!(
            o,
            "| {} | {:.0} | {:.3} % | {} | {} | {}{:.0} |",
            p.name(w),
            med("closed", p, &|s| s.stats.rate()),
            med("closed", p, &|s| 100.0 * s.stats.loss()),
            relay_cell(p, med("closed", p, &|s| s.relay_us_per_packet()), 2),
            util_cell(p, med("closed", p, &|s| s.relay_util())),
            if capped { "≥ " } else { "" },
            median(maxes)
        );
    }
    let direct_closed = med("closed", PathKind::Direct, &|s| s.stats.rate());
    let nginx_closed = med("closed", PathKind::Nginx, &|s| s.stats.rate());
    let plg_closed = med("closed", PathKind::Plg, &|s| s.stats.rate());
    let _ = writeln!(
        o,
        "\nratios (closed loop): PLG/nginx {:.2}×, PLG/direct {:.2}×; CPU per packet nginx/PLG {:.2}×",
        plg_closed / nginx_closed,
        plg_closed / direct_closed,
        med("closed", PathKind::Nginx, &|s| s.relay_us_per_packet())
            / med("closed", PathKind::Plg, &|s| s.relay_us_per_packet())
    );
    let _ = writeln!(
        o,
        "closed-loop CPU use (of one core): {}",
        paths
            .iter()
            .map(|&p| format!(
                "{}: generator {:.0} %, echo {:.0} %, relay {:.0} %",
                p.name(w),
                100.0 * med("closed", p, &|s| s.gen_util()),
                100.0 * med("closed", p, &|s| s.echo_util()),
                100.0 * med("closed", p, &|s| s.relay_util()),
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        o,
        "\n## Round-trip time at paced rates\n\n| rate pkt/s | path | loss | p50 µs | p99 µs | p99.9 µs | relay CPU µs/pkt | relay CPU |\n|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    let rates: &[u64] = if args.quick {
        &RTT_RATES[..1]
    } else {
        &RTT_RATES
    };
    for rate in rates {
        let phase = format!("paced {rate}");
        for &p in &paths {
            let _ = writeln!(
                o,
                "| {rate} | {} | {:.3} % | {:.0} | {:.0} | {:.0} | {} | {} |",
                p.name(w),
                med(&phase, p, &|s| 100.0 * s.stats.loss()),
                med(&phase, p, &|s| s.stats.rtt_us(0.5)),
                med(&phase, p, &|s| s.stats.rtt_us(0.99)),
                med(&phase, p, &|s| s.stats.rtt_us(0.999)),
                relay_cell(p, med(&phase, p, &|s| s.relay_us_per_packet()), 2),
                util_cell(p, med(&phase, p, &|s| s.relay_util())),
            );
        }
    }
    let rate = 64 * sessions;
    let _ = writeln!(
        o,
        "\n## {sessions} sessions at 64 pkt/s each way ({rate} pkt/s)\n\n| path | loss | lost packets | p99 µs | relay RSS | relay RSS per session |\n|---|---:|---:|---:|---:|---:|"
    );
    for &p in &paths {
        let lost = med("sessions", p, &|s| {
            (s.stats.sent - s.stats.received.min(s.stats.sent)) as f64
        });
        let (rss, per) = match p {
            PathKind::Direct => ("–".to_string(), "–".to_string()),
            PathKind::Nginx => (
                format!("{} KiB", mem.nginx_end),
                format!(
                    "{:.1} KiB",
                    mem.nginx_end.saturating_sub(mem.nginx_start) as f64 / sessions as f64
                ),
            ),
            PathKind::Plg => (
                format!("{} KiB", mem.node_end),
                format!(
                    "{:.1} KiB (QUIC control {:.1} + data plane {:.1})",
                    mem.node_end.saturating_sub(mem.node_idle) as f64 / sessions as f64,
                    mem.node_sessions.saturating_sub(mem.node_idle) as f64 / sessions as f64,
                    mem.node_end.saturating_sub(mem.node_sessions) as f64 / sessions as f64,
                ),
            ),
        };
        let _ = writeln!(
            o,
            "| {} | {:.3} % | {:.0} | {:.0} | {rss} | {per} |",
            p.name(w),
            med("sessions", p, &|s| 100.0 * s.stats.loss()),
            lost,
            med("sessions", p, &|s| s.stats.rtt_us(0.99)),
        );
    }
    let _ = writeln!(
        o,
        "\nRSS excludes kernel socket buffers. Relay CPU is the relay process's own time \
         (all threads, from /proc/<pid>/task/*/schedstat); on loopback the kernel's receive \
         path runs in the sender's context, so part of each hop is charged to the previous hop."
    );
    for n in notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

fn util_cell(p: PathKind, v: f64) -> String {
    if p == PathKind::Direct {
        "–".into()
    } else {
        format!("{:.0} %", 100.0 * v)
    }
}

fn relay_cell(p: PathKind, v: f64, digits: usize) -> String {
    if p == PathKind::Direct {
        "–".into()
    } else {
        format!("{v:.digits$}")
    }
}
