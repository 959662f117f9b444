//! `plg-node`: join the mesh once, then run the relay.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// PLG relay node.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about = "PLG relay node. First `join` the mesh with a token from billing's admin, then `run`."
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
    /// Create this node's identity: key pair, mesh certificate from billing, ticket keys.
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
        /// Region label, e.g. eu-central.
        #[arg(long, default_value = "unknown")]
        region: String,
        /// Where the identity is written.
        #[arg(long, env = "PLG_NODE_DATA_DIR", default_value = "/var/lib/plg-node")]
        data_dir: PathBuf,
    },
    /// Run the relay with the identity in --data-dir.
    Run {
        /// Where `join` wrote the identity.
        #[arg(long, env = "PLG_NODE_DATA_DIR", default_value = "/var/lib/plg-node")]
        data_dir: PathBuf,
        /// QUIC control endpoint (UDP).
        #[arg(long, env = "PLG_NODE_CONTROL", default_value = "0.0.0.0:4443")]
        control: SocketAddr,
        /// Data port (UDP).
        #[arg(long, env = "PLG_NODE_DATA", default_value = "0.0.0.0:443")]
        data: SocketAddr,
        /// Address announced to clients when listening on 0.0.0.0 / [::].
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
        /// Allow forwarding to loopback and private addresses (local demos and tests only).
        #[arg(long)]
        allow_private_destinations: bool,
    },
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
            data_dir,
        } => {
            let id = plg_node::join(&billing, &token, &name, &region, &data_dir).await?;
            println!(
                "joined the mesh as {} ({}); identity in {}",
                id.state.node_id,
                id.state.server_name,
                data_dir.display()
            );
            println!("next: plg-node run --data-dir {}", data_dir.display());
        }
        Command::Run {
            data_dir,
            control,
            data,
            public_ip,
            session_idle_secs,
            flow_idle_secs,
            max_sessions,
            allow_private_destinations,
        } => {
            let cfg = plg_node::NodeConfig {
                control_listen: control,
                data_listen: data,
                public_ip,
                session_idle: Duration::from_secs(session_idle_secs),
                flow_idle: Duration::from_secs(flow_idle_secs),
                max_sessions,
                allow_private_destinations,
                talk_to_billing: true,
            };
            cfg.validate()?;
            let identity = plg_node::Identity::load(&data_dir)?;
            let node = plg_node::start(identity, cfg).await?;
            shutdown_signal().await;
            tracing::info!("shutting down");
            node.shutdown().await;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
