//! Runs scenarios through real components: billing, a relay node and a game server on
//! loopback (the local mesh), one impairment link per path, and the client under test
//! ([`crate::client::start_client`]) in each redundancy policy, one after the other over the
//! same seed. Also the `plg-sim run` and `plg-sim sweep` commands.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use plg_node::RunningNode;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::client::{self, start_client};
use crate::echo::EchoServer;
use crate::link::Link;
use crate::local_mesh::{DEMO_GAME, LocalMesh, loopback_node_config};
use crate::report::{
    self, DirectReport, FailoverInfo, PolicyReport, PolicyStatus, RunReport, Series, SweepPoint,
    SweepReport,
};
use crate::scenario::{Event, Policy, Scenario};
use crate::tick::{self, GameServer};

/// How long the warm-up may take before a policy run counts as failed.
const WARM_UP_LIMIT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// A relay node of the harness, by topology index.
#[derive(Debug, Clone)]
struct NodeSlot {
    /// Node id (as billing lists it).
    id: String,
    /// Where its identity lives (for restarts).
    dir: PathBuf,
    /// Its settings, with the ports it got the first time (restarts reuse them).
    cfg: plg_node::NodeConfig,
}

/// A local deployment that runs scenarios, reusable across runs. Node 0 is the local mesh's
/// node; backup nodes are joined when a scenario first needs them. A backup node's data port
/// is bound on its own loopback address (127.0.0.k+1) with the same port number as the address
/// the client computes from its announcement (127.0.0.1), so the path to it, a link bound on
/// that computed address, is crossed even by a client that found the node by itself after a
/// failover.
#[derive(Debug)]
pub struct Harness {
    /// `None` only while a node is being killed and restarted.
    mesh: Option<LocalMesh>,
    /// Backup nodes 1.. (index k-1); `None` while killed.
    backups: Vec<Option<RunningNode>>,
    nodes: Vec<NodeSlot>,
    game: GameServer,
    game_addr: SocketAddr,
    runs: u32,
}

impl Harness {
    /// Starts the local mesh and puts the tick game server on the game's allowed address.
    pub async fn start() -> Result<Harness> {
        let mut mesh = LocalMesh::start().await?;
        // The mesh's catalog allows exactly the echo server's address; our game server, which
        // sends its own tick stream, takes that address over.
        let placeholder = EchoServer::start(loopback()).await?;
        let echo = std::mem::replace(&mut mesh.game, placeholder);
        let game_addr = echo.addr;
        drop(echo);
        let deadline = Instant::now() + Duration::from_secs(3);
        let game = loop {
            match GameServer::bind(game_addr).await {
                Ok(g) => break g,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).context(format!("binding the game server on {game_addr}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let first = NodeSlot {
            id: mesh.node.node_id.clone(),
            dir: mesh.dir.path().join("node-1"),
            cfg: plg_node::NodeConfig {
                control_listen: mesh.node.control_addr,
                data_listen: mesh.node.data_addr,
                ..loopback_node_config()
            },
        };
        Ok(Harness {
            mesh: Some(mesh),
            backups: vec![],
            nodes: vec![first],
            game,
            game_addr,
            runs: 0,
        })
    }

    /// The game server's address.
    pub fn game_addr(&self) -> SocketAddr {
        self.game_addr
    }

    /// The local mesh.
    pub fn mesh(&self) -> &LocalMesh {
        self.mesh.as_ref().expect("mesh present between runs")
    }

    /// Every node by topology index: id, control address, data address.
    pub fn nodes(&self) -> Vec<(String, SocketAddr, SocketAddr)> {
        self.nodes
            .iter()
            .map(|n| (n.id.clone(), n.cfg.control_listen, n.cfg.data_listen))
            .collect()
    }

    /// Joins and starts backup nodes until there are `n` nodes in all.
    pub async fn ensure_nodes(&mut self, n: usize) -> Result<()> {
        while self.nodes.len() < n {
            let k = self.nodes.len();
            let name = format!("node-{}", k + 1);
            let mesh = self.mesh.as_ref().context("the mesh was lost")?;
            let identity = mesh.join_identity(&name).await?;
            let cfg = plg_node::NodeConfig {
                data_listen: (Ipv4Addr::new(127, 0, 0, 1 + k as u8), 0).into(),
                ..loopback_node_config()
            };
            let node = plg_node::start(identity, cfg.clone())
                .await
                .with_context(|| format!("starting backup node {k}"))?;
            self.nodes.push(NodeSlot {
                id: node.node_id.clone(),
                dir: mesh.dir.path().join(&name),
                cfg: plg_node::NodeConfig {
                    control_listen: node.control_addr,
                    data_listen: node.data_addr,
                    ..cfg
                },
            });
            self.backups.push(Some(node));
        }
        Ok(())
    }

    /// Runs every policy of `s` with `seed`, one after the other.
    pub async fn run_scenario(&mut self, s: &Scenario, seed: u64) -> RunReport {
        let mut r = RunReport::for_scenario(s, seed);
        for &policy in &s.policies {
            let p = self.run_policy(s, seed, policy).await;
            r.policies.push(p);
        }
        r
    }

    /// Runs one policy. Never fails: an unavailable policy or a failed run is reported as such.
    pub async fn run_policy(&mut self, s: &Scenario, seed: u64, policy: Policy) -> PolicyReport {
        if let Err(u) = client::availability(policy, s.session_paths().len()) {
            return PolicyReport::without_numbers(
                policy,
                PolicyStatus::Unavailable { reason: u.0 },
            );
        }
        match self.measure(s, seed, policy).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%policy, error = %format!("{e:#}"), "policy run failed");
                PolicyReport::without_numbers(
                    policy,
                    PolicyStatus::Failed {
                        error: format!("{e:#}"),
                    },
                )
            }
        }
    }

    /// Where path `i` of `s` listens and where it forwards to.
    fn path_ends(&self, s: &Scenario, i: usize) -> (SocketAddr, SocketAddr) {
        if let Some(&relay) = s.paths[i].via.first() {
            // Client → link → relay node's data port; the relay carries frames to the exit.
            return (loopback(), self.nodes[relay].cfg.data_listen);
        }
        let node = &self.nodes[s.paths[i].node].cfg;
        let upstream = node.data_listen;
        let listen = if s.paths[i].node == 0 {
            loopback()
        } else {
            // What the client computes from the node's announcement: its control address's
            // IP with the data port.
            SocketAddr::new(node.control_listen.ip(), upstream.port())
        };
        (listen, upstream)
    }

    async fn start_link(&self, s: &Scenario, i: usize, seed: u64) -> Result<Link> {
        let (listen, upstream) = self.path_ends(s, i);
        let cfg = s.link_config(i, upstream, seed);
        // The fixed address was free a moment ago (the previous run's link held it); give the
        // kernel a moment if it is not yet.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match Link::start_on(cfg.clone(), listen).await {
                Ok(l) => return Ok(l),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("starting the link of path {i} on {listen} → {upstream}")
                    });
                }
            }
        }
    }

    async fn measure(&mut self, s: &Scenario, seed: u64, policy: Policy) -> Result<PolicyReport> {
        self.ensure_nodes(s.topology.nodes).await?;
        self.runs += 1;
        let run_id = self.runs;
        let mesh = self
            .mesh
            .as_ref()
            .context("the mesh was lost by an earlier run")?;
        let gamer = mesh
            .gamer(&format!("sim-{run_id}-{policy}@example.com"))
            .await?;
        let exit = &self.nodes[0];
        let (grant, _node, tunnel) =
            plg_client::open_session(&gamer, &mesh.ca_pem, DEMO_GAME, Some(&exit.id)).await?;
        // As `plg connect` does: the other nodes, here in topology order.
        let mut candidates = Vec::new();
        for (k, slot) in self.nodes.iter().enumerate().take(s.topology.nodes).skip(1) {
            let info = grant
                .nodes
                .iter()
                .find(|n| n.id == slot.id)
                .with_context(|| format!("billing does not offer backup node {k} ({})", slot.id))?;
            candidates.push(info.clone());
        }
        let failover = (!candidates.is_empty()).then(|| plg_client::Failover {
            ticket: grant.ticket_bytes().unwrap_or_default(),
            ca_pem: mesh.ca_pem.clone(),
            candidates,
            after: Duration::from_secs_f64(s.topology.failover_after),
            // A path through a relay node keeps it across a failover.
            relays: s
                .session_paths()
                .iter()
                .map(|&i| {
                    let via = s.paths[i].via.first()?;
                    self.nodes.get(*via).map(|n| n.id.clone())
                })
                .collect(),
        });
        // Relays learn where the session lives through gossip: wait for it (bounded), or
        // the first packets on a relay path would be dropped as an unknown session.
        let session_id = tunnel.accept.session_id;
        for relay in s.paths.iter().filter_map(|p| p.via.first().copied()) {
            let node = self
                .backups
                .get(relay.wrapping_sub(1))
                .and_then(Option::as_ref)
                .and_then(|n| n.mesh.clone())
                .with_context(|| format!("relay node {relay} is not running in the mesh"))?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while node
                .lookup_session(session_id)
                .is_none_or(|r| r.exit.as_str() != exit.id || !r.exit_alive)
            {
                if Instant::now() >= deadline {
                    anyhow::bail!("relay node {relay} never learned the session from the mesh");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut links = Vec::with_capacity(s.paths.len());
        for i in 0..s.paths.len() {
            links.push(self.start_link(s, i, seed).await?);
        }
        let path_addrs: Vec<SocketAddr> =
            s.session_paths().iter().map(|&i| links[i].addr()).collect();
        let client = start_client(
            tunnel,
            loopback(),
            self.game_addr,
            &path_addrs,
            policy,
            failover,
        )
        .await?;
        let implementation = client.implementation.clone();
        let spec = s.tick_spec(seed);

        let (epoch_tx, epoch_rx) = oneshot::channel::<Instant>();
        let epoch_seen = std::sync::OnceLock::new();
        let traffic = tick::run(
            &self.game,
            client.local_addr,
            spec,
            run_id,
            WARM_UP_LIMIT,
            |epoch| {
                for l in &links {
                    l.arm(epoch.into_std());
                }
                let _ = epoch_seen.set(epoch);
                let _ = epoch_tx.send(epoch);
            },
        );
        let node_events = node_event_plan(s);
        let trace = if node_events.is_empty() {
            traffic.await
        } else {
            let mesh = self.mesh.take().context("the mesh was lost")?;
            let backups = std::mem::take(&mut self.backups);
            let events = drive_node_events(
                mesh,
                backups,
                self.nodes.clone(),
                node_events,
                epoch_rx,
                spec.duration,
            );
            let (trace, nodes) = tokio::join!(traffic, events);
            let (mesh, backups) = nodes?;
            self.mesh = Some(mesh);
            self.backups = backups;
            trace
        };
        let client_events = client.stop().await;
        let mut link_reports = Vec::with_capacity(links.len());
        for l in links {
            link_reports.push(l.finish().await);
        }
        let trace = trace?;
        let mut r = report::measured(policy, implementation, &trace, link_reports);
        let epoch = epoch_seen.get().copied().unwrap_or_else(Instant::now);
        let secs = |t: Instant| t.saturating_duration_since(epoch).as_secs_f64();
        for (at, e) in client_events {
            match e {
                plg_client::ProxyEvent::Failover { to, gap } => r.failovers.push(FailoverInfo {
                    at_s: secs(at),
                    node: self.nodes.iter().position(|n| n.id == to),
                    node_id: to,
                    gap_ms: gap.as_secs_f64() * 1000.0,
                }),
                plg_client::ProxyEvent::NodeLost { .. } => r.node_lost.push(secs(at)),
                _ => {}
            }
        }
        Ok(r)
    }

    /// The game without PLG, for comparison: one link with path 0's impairment (and events)
    /// between the game client and the game server, no relay, no session.
    pub async fn run_direct(&mut self, s: &Scenario, seed: u64) -> Result<DirectReport> {
        self.runs += 1;
        let link = Link::start(s.link_config(0, self.game_addr, seed))
            .await
            .context("starting the direct link")?;
        let trace = tick::run(
            &self.game,
            link.addr(),
            s.tick_spec(seed),
            self.runs,
            WARM_UP_LIMIT,
            |epoch| link.arm(epoch.into_std()),
        )
        .await;
        let link_report = link.finish().await;
        Ok(report::direct(&trace?, link_report))
    }

    /// Stops everything.
    pub async fn stop(self) {
        for n in self.backups.into_iter().flatten() {
            n.shutdown().await;
        }
        if let Some(m) = self.mesh {
            m.stop().await;
        }
    }
}

/// A node event at a time from the start of traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NodeEvent {
    at: Duration,
    node: usize,
    kill: bool,
}

/// Kills and restarts in time order.
fn node_event_plan(s: &Scenario) -> Vec<NodeEvent> {
    let mut plan: Vec<NodeEvent> = s
        .events
        .iter()
        .filter_map(|e| match e {
            Event::KillNode { node, at } | Event::RestartNode { node, at } => Some(NodeEvent {
                at: Duration::from_secs_f64(*at),
                node: *node,
                kill: matches!(e, Event::KillNode { .. }),
            }),
            _ => None,
        })
        .collect();
    plan.sort_by_key(|e| e.at);
    plan
}

/// Kills and restarts nodes on schedule; a node still dead when the traffic ends is restarted
/// then, for the next run. A restarted node keeps its identity and ports but has lost every
/// session: whether the client resumes (through a backup exit) is what the run measures.
async fn drive_node_events(
    mut mesh: LocalMesh,
    backups: Vec<Option<RunningNode>>,
    slots: Vec<NodeSlot>,
    plan: Vec<NodeEvent>,
    epoch: oneshot::Receiver<Instant>,
    run_len: Duration,
) -> Result<(LocalMesh, Vec<Option<RunningNode>>)> {
    let Ok(epoch) = epoch.await else {
        // The traffic never started (warm-up failed): nothing to do.
        return Ok((mesh, backups));
    };
    let mut running: Vec<Option<RunningNode>> =
        std::iter::once(Some(mesh.node)).chain(backups).collect();
    for e in plan {
        tokio::time::sleep_until(epoch + e.at).await;
        if e.kill {
            if let Some(n) = running[e.node].take() {
                n.shutdown().await;
                tracing::info!(at = ?e.at, node = e.node, "node killed");
            }
        } else if running[e.node].is_none() {
            running[e.node] = Some(restart(&slots[e.node]).await?);
            tracing::info!(at = ?e.at, node = e.node, "node restarted");
        }
    }
    tokio::time::sleep_until(epoch + run_len).await;
    for (k, slot) in running.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(restart(&slots[k]).await?);
        }
    }
    let mut running = running.into_iter().map(|n| n.expect("all restarted"));
    mesh.node = running.next().expect("node 0");
    Ok((mesh, running.map(Some).collect()))
}

/// Starts a killed node again with its identity, on its old ports.
async fn restart(slot: &NodeSlot) -> Result<RunningNode> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let identity = plg_node::Identity::load(&slot.dir)
            .with_context(|| format!("loading the node identity from {}", slot.dir.display()))?;
        match plg_node::start(identity, slot.cfg.clone()).await {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).context("restarting the node on its old ports");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Writes `report.json`, `report.txt`, `report.csv` and the SVG plots of a run into `dir`.
pub fn write_run(dir: &Path, r: &RunReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("report.json", serde_json::to_string_pretty(r)?),
        ("report.txt", report::render_table(r)),
        ("report.csv", report::report_csv(r)),
        ("latency.svg", crate::plot::latency_svg(r)),
        ("paths.svg", crate::plot::paths_svg(r)),
        ("loss.svg", crate::plot::loss_svg(r)),
    ];
    write_files(dir, &files)
}

/// Writes `sweep.json`, `sweep.txt`, `sweep.csv` and `sweep.svg` into `dir`.
pub fn write_sweep(dir: &Path, s: &SweepReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("sweep.json", serde_json::to_string_pretty(s)?),
        ("sweep.txt", report::render_sweep_table(s)),
        ("sweep.csv", report::sweep_csv(s)),
        ("sweep.svg", crate::plot::sweep_svg(s)),
    ];
    write_files(dir, &files)
}

/// Writes every seed's run into `dir/seed-N/` and the pooled figures into `dir`:
/// `aggregate.json`, `aggregate.txt` (the table and the claims), `aggregate.csv`.
pub fn write_repeat(dir: &Path, runs: &[RunReport], table: &str) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for r in runs {
        out.extend(write_run(&dir.join(format!("seed-{}", r.seed)), r)?);
    }
    let Some(first) = runs.first() else {
        return Ok(out);
    };
    let agg = report::aggregate(runs);
    let json = serde_json::json!({
        "scenario": first.scenario,
        "duration_s": first.duration_s,
        "base_seed": first.seed,
        "aggregate": agg,
    });
    let files = [
        ("aggregate.json", serde_json::to_string_pretty(&json)?),
        ("aggregate.txt", table.to_owned()),
        (
            "aggregate.csv",
            report::aggregate_csv(&first.scenario, &agg),
        ),
    ];
    out.extend(write_files(dir, &files)?);
    Ok(out)
}

fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for (name, body) in files {
        let p = dir.join(name);
        std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
        out.push(p);
    }
    Ok(out)
}

/// How a scenario is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Real processes on loopback: billing, nodes, the client's proxy and the game on real
    /// sockets, userspace links in wall-clock time. End-to-end truth; not repeatable bit for
    /// bit (scheduling shifts which datagram meets which random draw).
    Real,
    /// The client's and nodes' sans-IO cores and the links on a simulated clock, no sockets:
    /// the same seed gives the same report byte for byte, minutes run in seconds.
    Virtual,
}

/// Arguments of `plg-sim run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario file (TOML).
    pub scenario: PathBuf,
    /// `real`: real processes and sockets on loopback; `virtual`: the same cores on a
    /// simulated clock (repeatable, fast; needed for segments, cross traffic, several
    /// sessions and more than two paths).
    #[arg(long, value_enum, default_value = "real")]
    pub mode: Mode,
    /// Directory for report.json, report.txt, report.csv and the SVG plots
    /// [default: target/plg-sim/NAME].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed (overrides the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds of traffic per policy (overrides the scenario's; event times scale alike).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Also play the game without PLG, through one link with path 0's impairment and events
    /// (the `direct` entry of report.json and the first column of the table).
    #[arg(long)]
    pub direct: bool,
    /// Run N seeds (the seed, then seeds derived from it) and pool them per policy: every
    /// seed's report in DIR/seed-N/, the pooled table in DIR/aggregate.{txt,json,csv}.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
}

/// Arguments of `plg-sim sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Scenario file (TOML); every path's independent loss is replaced by each value in turn.
    pub scenario: PathBuf,
    /// Loss rates in percent, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub loss: Vec<f64>,
    /// `virtual` (default: repeatable, fast) or `real` (real processes and sockets).
    #[arg(long, value_enum, default_value = "virtual")]
    pub mode: Mode,
    /// Directory for sweep.json, sweep.txt, sweep.csv and sweep.svg
    /// [default: target/plg-sim/NAME-sweep].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed (overrides the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds of traffic per policy and point (overrides the scenario's; events scale alike).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Run N seeds per point (the point's seed, then seeds derived from it) and pool them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
}

/// The seeds of `--repeat n`: `base` itself, then seeds derived from it (so `--repeat 1` is
/// the plain run).
pub fn repeat_seeds(base: u64, n: u32) -> Vec<u64> {
    (0..u64::from(n.max(1)))
        .map(|i| {
            if i == 0 {
                base
            } else {
                crate::link::derive_seed(base, i)
            }
        })
        .collect()
}

/// Loads a scenario and applies a `--duration` override.
fn load(path: &Path, duration: Option<f64>) -> Result<Scenario> {
    let s = Scenario::load(path)?;
    let Some(d) = duration else { return Ok(s) };
    let scaled = s.scaled_to(d);
    scaled
        .validate()
        .map_err(|(field, message)| anyhow::anyhow!("--duration {d}: {field}: {message}"))?;
    Ok(scaled)
}

fn written(files: &[PathBuf]) -> String {
    format!(
        "\nwritten: {}\n",
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Where runs execute: the real harness (`None` in virtual mode).
async fn engine(mode: Mode, s: &Scenario, file: &Path) -> Result<Option<Harness>> {
    match mode {
        Mode::Virtual => Ok(None),
        Mode::Real => {
            s.check_real_mode()
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            Ok(Some(Harness::start().await?))
        }
    }
}

/// One seed: the direct route if asked, then every policy, in either mode.
async fn run_one(
    h: Option<&mut Harness>,
    s: &Scenario,
    seed: u64,
    direct: bool,
    progress: &impl Fn(&str),
) -> Result<RunReport> {
    match h {
        None => {
            let mut r = crate::vrun::run_scenario(s, seed);
            if direct {
                r.direct = Some(
                    crate::vrun::run_direct(s, seed)
                        .map_err(|e| anyhow::anyhow!("the direct route: {e}"))?,
                );
            }
            Ok(r)
        }
        Some(h) => {
            let mut r = RunReport::for_scenario(s, seed);
            if direct {
                progress(&format!("seed {seed}: direct route (no PLG)…"));
                r.direct = Some(
                    h.run_direct(s, seed)
                        .await
                        .context("the direct route could not be measured")?,
                );
            }
            for &policy in &s.policies {
                progress(&format!("seed {seed}: running {policy}…"));
                r.policies.push(h.run_policy(s, seed, policy).await);
            }
            Ok(r)
        }
    }
}

/// `plg-sim run`: runs the scenario (once per seed with `--repeat`), writes the files,
/// returns the table to print.
pub async fn run_command(args: RunArgs, progress: impl Fn(&str)) -> Result<String> {
    let s = load(&args.scenario, args.duration)?;
    let seed = args.seed.unwrap_or(s.seed);
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("target/plg-sim").join(&s.name));
    let seeds = repeat_seeds(seed, args.repeat);
    if args.mode == Mode::Real {
        progress(&format!(
            "starting billing, {} relay node(s) and the game server on loopback; then {} seed(s) \
             × {} run(s) × {:.1} s",
            s.topology.nodes,
            seeds.len(),
            s.policies.len() + usize::from(args.direct),
            s.duration
        ));
    }
    let mut h = engine(args.mode, &s, &args.scenario).await?;
    let mut runs = vec![];
    let mut failed = None;
    for &seed in &seeds {
        match run_one(h.as_mut(), &s, seed, args.direct, &progress).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(h) = h {
        h.stop().await;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let table = match &runs[..] {
        [r] => {
            let files = write_run(&out, r)?;
            report::render_table(r) + &written(&files)
        }
        _ => {
            let agg = report::aggregate(&runs);
            let mut table = report::render_aggregate(&s.name, &agg);
            let claims =
                crate::claims::for_aggregate(&agg, &runs[0].paths, s.duration, "--duration");
            if !claims.is_empty() {
                table.push_str("\nwhat the pooled numbers support (both directions, 95 %):\n");
                for c in &claims {
                    table.push_str(&format!("  {c}\n"));
                }
            }
            let files = write_repeat(&out, &runs, &table)?;
            table + &written(&files)
        }
    };
    if !runs.iter().flat_map(|r| &r.policies).any(PolicyReport::ran) {
        bail!("no policy could be measured:\n{table}");
    }
    Ok(table)
}

/// `plg-sim sweep`: runs the scenario and the direct route at each loss rate (once per seed
/// with `--repeat`), writes the files, returns the table.
pub async fn sweep_command(args: SweepArgs, progress: impl Fn(&str)) -> Result<String> {
    let s = load(&args.scenario, args.duration)?;
    for &l in &args.loss {
        if !(0.0..=100.0).contains(&l) {
            bail!("--loss values must be within 0..=100 (got {l})");
        }
    }
    let seed = args.seed.unwrap_or(s.seed);
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("target/plg-sim").join(format!("{}-sweep", s.name)));
    let mut h = engine(args.mode, &s, &args.scenario).await?;
    let mut sweep = SweepReport {
        scenario: s.name.clone(),
        seed,
        duration_s: s.duration,
        repeat: args.repeat as usize,
        points: vec![],
    };
    for &loss in &args.loss {
        // Each point draws its own random numbers (otherwise the lost sets are nested across
        // points and one seed's luck shows at every point); policies within a point share them.
        let point_seed = crate::link::derive_seed(seed, loss.to_bits());
        let point = s.with_loss(loss);
        let mut runs = vec![];
        for seed in repeat_seeds(point_seed, args.repeat) {
            progress(&format!("injected loss {loss} %, seed {seed}…"));
            let (mut r, direct) = match h.as_mut() {
                Some(h) => (
                    h.run_scenario(&point, seed).await,
                    h.run_direct(&point, seed).await.ok(),
                ),
                None => (
                    crate::vrun::run_scenario(&point, seed),
                    crate::vrun::run_direct(&point, seed).ok(),
                ),
            };
            r.direct = direct.map(|mut d| {
                d.link.up.timeline.clear();
                d.link.down.timeline.clear();
                d
            });
            for p in &mut r.policies {
                p.series = Series::default();
                for l in &mut p.links {
                    l.up.timeline.clear();
                    l.down.timeline.clear();
                }
            }
            runs.push(r);
        }
        let aggregate = (runs.len() > 1).then(|| report::aggregate(&runs));
        let first = runs.swap_remove(0);
        sweep.points.push(SweepPoint {
            injected_loss_pct: loss,
            seed: point_seed,
            policies: first.policies,
            direct: first.direct,
            aggregate,
        });
    }
    if let Some(h) = h {
        h.stop().await;
    }
    let files = write_sweep(&out, &sweep)?;
    Ok(report::render_sweep_table(&sweep) + &written(&files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_seeds_start_with_the_base_and_differ() {
        let s = repeat_seeds(7, 4);
        assert_eq!(s[0], 7);
        assert_eq!(s.len(), 4);
        let mut d = s.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 4);
        assert_eq!(repeat_seeds(7, 1), vec![7]);
        assert_eq!(repeat_seeds(7, 3), s[..3]);
    }
}
