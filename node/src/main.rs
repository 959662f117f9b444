//! `plg-node`: join the mesh once, then run the relay.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// PLG relay node.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about = "PLG relay node. `join` the mesh once with a token from billing's admin (it then serves); later starts use `run`; `drain` hands its sessions to their backups and stops it."
)]
struct Cli {
    /// Log as JSON lines instead of text (filter with PLG_LOG, e.g. PLG_LOG=debug).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Join the mesh with a token from billing's admin (creates this node's key pair, gets
    /// its mesh certificate, ticket keys and gossip key), then run. One command on a fresh box.
    Join {
        /// Billing base URL, e.g. https://billing.example.com
        #[arg(long, env = "PLG_BILLING_URL")]
        billing: String,
        /// Single-use join token from `plg-billing join-token create`.
        #[arg(long, env = "PLG_JOIN_TOKEN")]
        token: String,
        /// Node name shown to admins.
        #[arg(long, default_value = "node")]
        name: String,
        /// Region label, e.g. eu-central (the mesh prefers backups in another region).
        #[arg(long, default_value = "unknown")]
        region: String,
        /// Only write the identity; don't start serving.
        #[arg(long)]
        no_run: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run the relay with the identity in --data-dir (after `join`, e.g. from systemd).
    Run {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Drain the node running from --data-dir: it takes no new sessions, its clients move to
    /// their backup nodes, and it exits once they have (or after its grace period).
    Drain {
        /// Where `join` wrote the identity (the running node's pid file is there).
        #[arg(long, env = "PLG_NODE_DATA_DIR", default_value = "/var/lib/plg-node")]
        data_dir: PathBuf,
        /// Give up waiting for the node to exit after this many seconds.
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Where the identity lives (written by `join`).
    #[arg(long, env = "PLG_NODE_DATA_DIR", default_value = "/var/lib/plg-node")]
    data_dir: PathBuf,
    /// QUIC control endpoint (UDP).
    #[arg(long, env = "PLG_NODE_CONTROL", default_value = "0.0.0.0:4443")]
    control: SocketAddr,
    /// Data port (UDP).
    #[arg(long, env = "PLG_NODE_DATA", default_value = "0.0.0.0:443")]
    data: SocketAddr,
    /// Mesh gossip port (UDP).
    #[arg(long, env = "PLG_NODE_GOSSIP", default_value = "0.0.0.0:7946")]
    gossip: SocketAddr,
    /// Run alone, outside the mesh (no gossip, no relaying, no backups).
    #[arg(long)]
    no_mesh: bool,
    /// Address announced to clients and peers when listening on 0.0.0.0 / [::].
    #[arg(long, env = "PLG_NODE_PUBLIC_IP")]
    public_ip: Option<IpAddr>,
    /// Seconds without traffic before a session is forgotten.
    #[arg(long, default_value_t = 60)]
    session_idle_secs: u64,
    /// Seconds without traffic before a flow's upstream socket is closed.
    #[arg(long, default_value_t = 60)]
    flow_idle_secs: u64,
    /// Most concurrent sessions.
    #[arg(long, default_value_t = 10_000)]
    max_sessions: usize,
    /// Gossip round period in milliseconds (a dead peer is noticed in about 7-10 rounds).
    #[arg(long, default_value_t = 200)]
    gossip_interval_ms: u64,
    /// Seconds `drain` waits for sessions to move before the node stops anyway.
    #[arg(long, default_value_t = 30)]
    drain_grace_secs: u64,
    /// Allow forwarding to loopback and private addresses (local demos and tests only).
    #[arg(long)]
    allow_private_destinations: bool,
    /// Source address for traffic to game servers (default: the kernel picks by route).
    #[arg(long, env = "PLG_NODE_UPSTREAM_BIND")]
    upstream_bind: Option<std::net::IpAddr>,
}

impl RunArgs {
    fn config(&self) -> plg_node::NodeConfig {
        plg_node::NodeConfig {
            control_listen: self.control,
            data_listen: self.data,
            public_ip: self.public_ip,
            public_addrs: None,
            session_idle: Duration::from_secs(self.session_idle_secs),
            flow_idle: Duration::from_secs(self.flow_idle_secs),
            max_sessions: self.max_sessions,
            allow_private_destinations: self.allow_private_destinations,
            upstream_bind: self.upstream_bind,
            talk_to_billing: true,
            gossip_listen: (!self.no_mesh).then_some(self.gossip),
            gossip_interval: Duration::from_millis(self.gossip_interval_ms.max(10)),
            drain_grace: Duration::from_secs(self.drain_grace_secs),
        }
    }
}

fn init_logs(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PLG_LOG").unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json { b.json().init() } else { b.init() }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_json);
    match cli.command {
        Command::Join {
            billing,
            token,
            name,
            region,
            no_run,
            run,
        } => {
            // Check the settings before the single-use token is spent.
            let cfg = run.config();
            if !no_run {
                cfg.validate()?;
            }
            let id = plg_node::join(&billing, &token, &name, &region, &run.data_dir).await?;
            println!(
                "joined the mesh as {} ({}); identity in {}",
                id.state.node_id,
                id.state.server_name,
                run.data_dir.display()
            );
            if no_run {
                println!("next: plg-node run --data-dir {}", run.data_dir.display());
                return Ok(());
            }
            serve(id, cfg, &run.data_dir).await?;
        }
        Command::Run { run } => {
            let cfg = run.config();
            cfg.validate()?;
            let identity = plg_node::Identity::load(&run.data_dir)?;
            serve(identity, cfg, &run.data_dir).await?;
        }
        Command::Drain {
            data_dir,
            wait_secs,
        } => drain(&data_dir, Duration::from_secs(wait_secs)).await?,
    }
    Ok(())
}

const PID_FILE: &str = "node.pid";

/// Runs until SIGTERM/Ctrl-C (stop now) or SIGUSR1 (`plg-node drain`: drain, then stop).
async fn serve(
    identity: plg_node::Identity,
    cfg: plg_node::NodeConfig,
    data_dir: &std::path::Path,
) -> Result<()> {
    let node = plg_node::start(identity, cfg).await?;
    let pid_file = data_dir.join(PID_FILE);
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    println!(
        "serving: control {} data {} gossip {}",
        node.control_addr,
        node.data_addr,
        node.gossip_addr
            .map_or_else(|| "off".to_owned(), |a| a.to_string())
    );
    match shutdown_signal().await {
        Signal::Stop => {
            tracing::info!("shutting down");
            node.shutdown().await;
        }
        Signal::Drain => {
            let left = node.drain().await;
            println!("drained ({left} sessions were still here at the end)");
        }
    }
    let _ = std::fs::remove_file(&pid_file);
    Ok(())
}

/// Asks the node running from `data_dir` to drain, and waits for it to exit.
async fn drain(data_dir: &std::path::Path, wait: Duration) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid_file = data_dir.join(PID_FILE);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .with_context(|| {
            format!(
                "reading {} (is a node running from {}?)",
                pid_file.display(),
                data_dir.display()
            )
        })?
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a process id", pid_file.display()))?;
    let pid = Pid::from_raw(pid);
    // A process that exited but was not reaped yet (a zombie) counts as gone.
    let alive = |pid: Pid| {
        kill(pid, None).is_ok()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
                .unwrap_or(true)
    };
    if !alive(pid) {
        bail!(
            "no node is running as pid {pid} (stale {}); nothing to drain",
            pid_file.display()
        );
    }
    kill(pid, Signal::SIGUSR1).with_context(|| format!("signalling pid {pid}"))?;
    println!("draining node pid {pid}: no new sessions; clients move to their backups");
    let deadline = std::time::Instant::now() + wait;
    while alive(pid) {
        if std::time::Instant::now() >= deadline {
            bail!("node pid {pid} is still running after {wait:?}; it keeps draining");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("node stopped");
    Ok(())
}

enum Signal {
    Stop,
    Drain,
}

async fn shutdown_signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::user_defined1()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return Signal::Stop;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Signal::Stop,
        _ = term.recv() => Signal::Stop,
        _ = usr1.recv() => Signal::Drain,
    }
}
