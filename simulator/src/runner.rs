//! Runs scenarios through real components: billing, a relay node and a game server on
//! loopback (the local mesh), one impairment link per path, and the client under test
//! ([`crate::client::start_client`]) in each redundancy policy, one after the other over the
//! same seed. Also the `plg-sim run` and `plg-sim sweep` commands.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::client::{self, start_client};
use crate::echo::EchoServer;
use crate::link::Link;
use crate::local_mesh::{DEMO_GAME, LocalMesh, loopback_node_config};
use crate::report::{self, PolicyReport, PolicyStatus, RunReport, Series, SweepPoint, SweepReport};
use crate::scenario::{Event, Policy, Scenario};
use crate::tick::{self, GameServer};

/// How long the warm-up may take before a policy run counts as failed.
const WARM_UP_LIMIT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// A local deployment that runs scenarios, reusable across runs.
#[derive(Debug)]
pub struct Harness {
    /// `None` only while a node is being killed and restarted.
    mesh: Option<LocalMesh>,
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
        Ok(Harness {
            mesh: Some(mesh),
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
        if let Err(u) = client::availability(policy, s.paths.len()) {
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

    async fn measure(&mut self, s: &Scenario, seed: u64, policy: Policy) -> Result<PolicyReport> {
        self.runs += 1;
        let run_id = self.runs;
        let mesh = self
            .mesh
            .as_ref()
            .context("the mesh was lost by an earlier run")?;
        let gamer = mesh
            .gamer(&format!("sim-{run_id}-{policy}@example.com"))
            .await?;
        let (_grant, _node, tunnel) =
            plg_client::open_session(&gamer, &mesh.ca_pem, DEMO_GAME, None).await?;
        let upstream = tunnel.data_addr;
        let mut links = Vec::with_capacity(s.paths.len());
        for i in 0..s.paths.len() {
            links.push(
                Link::start(s.link_config(i, upstream, seed))
                    .await
                    .with_context(|| format!("starting the link of path {i}"))?,
            );
        }
        let path_addrs: Vec<SocketAddr> = links.iter().map(Link::addr).collect();
        let client = start_client(tunnel, loopback(), self.game_addr, &path_addrs, policy).await?;
        let implementation = client.implementation.clone();
        let spec = s.tick_spec(seed);

        let (epoch_tx, epoch_rx) = oneshot::channel::<Instant>();
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
                let _ = epoch_tx.send(epoch);
            },
        );
        let node_events = node_event_plan(s);
        let trace = if node_events.is_empty() {
            traffic.await
        } else {
            let mesh = self.mesh.take().context("the mesh was lost")?;
            let events = drive_node_events(mesh, node_events, epoch_rx, spec.duration);
            let (trace, mesh) = tokio::join!(traffic, events);
            self.mesh = Some(mesh?);
            trace
        };
        client.stop().await;
        let mut link_reports = Vec::with_capacity(links.len());
        for l in links {
            link_reports.push(l.finish().await);
        }
        let trace = trace?;
        Ok(report::measured(
            policy,
            implementation,
            &trace,
            link_reports,
        ))
    }

    /// Stops everything.
    pub async fn stop(self) {
        if let Some(m) = self.mesh {
            m.stop().await;
        }
    }
}

/// Kill/restart pairs `(kill at, restart at)`; a kill without a restart restarts after the run.
fn node_event_plan(s: &Scenario) -> Vec<(Duration, Option<Duration>)> {
    let mut evs: Vec<&Event> = s
        .events
        .iter()
        .filter(|e| matches!(e, Event::KillNode { .. } | Event::RestartNode { .. }))
        .collect();
    evs.sort_by(|a, b| a.at().total_cmp(&b.at()));
    let mut plan = vec![];
    for e in evs {
        let at = Duration::from_secs_f64(e.at());
        match e {
            Event::KillNode { .. } => plan.push((at, None)),
            _ => {
                if let Some(last) = plan.last_mut() {
                    last.1 = Some(at);
                }
            }
        }
    }
    plan
}

/// Kills and restarts the (single) node on schedule. The restarted node keeps its identity and
/// ports but has lost every session: whether the client resumes is what the run measures.
async fn drive_node_events(
    mut mesh: LocalMesh,
    plan: Vec<(Duration, Option<Duration>)>,
    epoch: oneshot::Receiver<Instant>,
    run_len: Duration,
) -> Result<LocalMesh> {
    let Ok(epoch) = epoch.await else {
        // The traffic never started (warm-up failed): nothing to do.
        return Ok(mesh);
    };
    let identity_dir = mesh.dir.path().join("node-1");
    for (kill_at, restart_at) in plan {
        tokio::time::sleep_until(epoch + kill_at).await;
        let node = mesh.node;
        let (control, data) = (node.control_addr, node.data_addr);
        node.shutdown().await;
        tracing::info!(at = ?kill_at, "node killed");
        tokio::time::sleep_until(epoch + restart_at.unwrap_or(run_len)).await;
        let cfg = plg_node::NodeConfig {
            control_listen: control,
            data_listen: data,
            ..loopback_node_config()
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        mesh.node = loop {
            let identity = plg_node::Identity::load(&identity_dir).with_context(|| {
                format!("loading the node identity from {}", identity_dir.display())
            })?;
            match plg_node::start(identity, cfg.clone()).await {
                Ok(n) => break n,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).context("restarting the node on its old ports");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        tracing::info!(at = ?restart_at, "node restarted");
    }
    Ok(mesh)
}

/// Writes `report.json`, `report.txt` and the SVG plots of a run into `dir`.
pub fn write_run(dir: &Path, r: &RunReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("report.json", serde_json::to_string_pretty(r)?),
        ("report.txt", report::render_table(r)),
        ("latency.svg", crate::plot::latency_svg(r)),
        ("paths.svg", crate::plot::paths_svg(r)),
        ("loss.svg", crate::plot::loss_svg(r)),
    ];
    write_files(dir, &files)
}

/// Writes `sweep.json`, `sweep.txt` and `sweep.svg` into `dir`.
pub fn write_sweep(dir: &Path, s: &SweepReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("sweep.json", serde_json::to_string_pretty(s)?),
        ("sweep.txt", report::render_sweep_table(s)),
        ("sweep.svg", crate::plot::sweep_svg(s)),
    ];
    write_files(dir, &files)
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

/// Arguments of `plg-sim run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario file (TOML).
    pub scenario: PathBuf,
    /// Directory for report.json, report.txt and the SVG plots [default: target/plg-sim/NAME].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed (overrides the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Arguments of `plg-sim sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Scenario file (TOML); every path's independent loss is replaced by each value in turn.
    pub scenario: PathBuf,
    /// Loss rates in percent, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub loss: Vec<f64>,
    /// Directory for sweep.json, sweep.txt and sweep.svg [default: target/plg-sim/NAME-sweep].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed (overrides the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `plg-sim run`: runs the scenario, writes the files, returns the table to print.
pub async fn run_command(args: RunArgs, progress: impl Fn(&str)) -> Result<String> {
    let s = Scenario::load(&args.scenario)?;
    let seed = args.seed.unwrap_or(s.seed);
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("target/plg-sim").join(&s.name));
    progress(&format!(
        "starting billing, a relay node and the game server on loopback; then {} × {:.1} s",
        s.policies.len(),
        s.duration
    ));
    let mut h = Harness::start().await?;
    let mut r = RunReport::for_scenario(&s, seed);
    for &policy in &s.policies {
        progress(&format!("running {policy}…"));
        r.policies.push(h.run_policy(&s, seed, policy).await);
    }
    h.stop().await;
    let files = write_run(&out, &r)?;
    let mut table = report::render_table(&r);
    table.push_str("\nwritten: ");
    table.push_str(
        &files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    table.push('\n');
    if !r.policies.iter().any(PolicyReport::ran) {
        bail!("no policy could be measured:\n{table}");
    }
    Ok(table)
}

/// `plg-sim sweep`: runs the scenario at each loss rate, writes the files, returns the table.
pub async fn sweep_command(args: SweepArgs, progress: impl Fn(&str)) -> Result<String> {
    let s = Scenario::load(&args.scenario)?;
    for &l in &args.loss {
        if !(0.0..=100.0).contains(&l) {
            bail!("--loss values must be within 0..=100 (got {l})");
        }
    }
    let seed = args.seed.unwrap_or(s.seed);
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("target/plg-sim").join(format!("{}-sweep", s.name)));
    let mut h = Harness::start().await?;
    let mut sweep = SweepReport {
        scenario: s.name.clone(),
        seed,
        duration_s: s.duration,
        points: vec![],
    };
    for &loss in &args.loss {
        progress(&format!("injected loss {loss} %…"));
        // Each point draws its own random numbers (otherwise the lost sets are nested across
        // points and one seed's luck shows at every point); policies within a point share them.
        let point_seed = crate::link::derive_seed(seed, loss.to_bits());
        let mut r = h.run_scenario(&s.with_loss(loss), point_seed).await;
        for p in &mut r.policies {
            p.series = Series::default();
            for l in &mut p.links {
                l.up.timeline.clear();
                l.down.timeline.clear();
            }
        }
        sweep.points.push(SweepPoint {
            injected_loss_pct: loss,
            seed: point_seed,
            policies: r.policies,
        });
    }
    h.stop().await;
    let files = write_sweep(&out, &sweep)?;
    let mut table = report::render_sweep_table(&sweep);
    table.push_str("\nwritten: ");
    table.push_str(
        &files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    table.push('\n');
    Ok(table)
}
