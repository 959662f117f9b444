//! `plg-node`, the relay daemon: verifies billing's tickets offline, runs the QUIC control
//! endpoint and the UDP data plane, and forwards each flow to the destinations its ticket
//! allows — never anywhere else.

mod control;
mod dataplane;
pub mod identity;
pub mod metrics;
pub mod policy;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use plg_proto::TicketVerifier;
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

pub use dataplane::MAX_FLOWS_PER_SESSION;
pub use identity::{Identity, join};
pub use metrics::{Metrics, MetricsSnapshot};

/// Run-time settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// QUIC control endpoint.
    pub control_listen: SocketAddr,
    /// UDP data port.
    pub data_listen: SocketAddr,
    /// Address announced to billing when listening on a wildcard address.
    pub public_ip: Option<IpAddr>,
    /// Forget sessions without traffic for this long.
    pub session_idle: Duration,
    /// Close flows without traffic for this long.
    pub flow_idle: Duration,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Allow loopback/private destinations (local demos and tests only).
    pub allow_private_destinations: bool,
    /// Fetch ticket keys from billing and announce this node's addresses (periodically).
    pub talk_to_billing: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            control_listen: "0.0.0.0:4443".parse().unwrap(),
            data_listen: "0.0.0.0:443".parse().unwrap(),
            public_ip: None,
            session_idle: Duration::from_secs(60),
            flow_idle: Duration::from_secs(60),
            max_sessions: 10_000,
            allow_private_destinations: false,
            talk_to_billing: true,
        }
    }
}

impl NodeConfig {
    /// Checks the settings before any socket is bound.
    pub fn validate(&self) -> Result<()> {
        if self.public_ip.is_none()
            && (self.control_listen.ip().is_unspecified() || self.data_listen.ip().is_unspecified())
        {
            bail!(
                "listening on a wildcard address: set --public-ip to the address clients should use"
            );
        }
        if self.session_idle < Duration::from_secs(1) || self.flow_idle < Duration::from_secs(1) {
            bail!("idle timeouts must be at least one second");
        }
        if self.max_sessions == 0 {
            bail!("max sessions must be at least 1");
        }
        Ok(())
    }

    fn public(&self, bound: SocketAddr) -> SocketAddr {
        SocketAddr::new(self.public_ip.unwrap_or(bound.ip()), bound.port())
    }
}

/// Unix time in seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    /// Bound QUIC control address.
    pub control_addr: SocketAddr,
    /// Bound UDP data address.
    pub data_addr: SocketAddr,
    /// Live counters.
    pub metrics: Arc<Metrics>,
    /// Node id from the identity.
    pub node_id: String,
    shutdown: watch::Sender<bool>,
    endpoint: quinn::Endpoint,
    tasks: JoinSet<()>,
}

/// How often the node re-announces itself and refreshes ticket keys.
const BILLING_REFRESH: Duration = Duration::from_secs(30);

/// Starts a node: binds its sockets, and (if configured) refreshes ticket keys from billing
/// and announces itself. When billing is unreachable it runs on the cached keys.
pub async fn start(mut identity: Identity, cfg: NodeConfig) -> Result<RunningNode> {
    cfg.validate()?;
    if cfg.talk_to_billing
        && let Err(e) = identity.refresh_keys().await
    {
        tracing::warn!(error = %format!("{e:#}"), "cannot refresh ticket keys, using cached ones");
    }
    let keys = identity::decode_keys(&identity.state.ticket_keys)?;
    if keys.is_empty() {
        bail!("no ticket keys known: billing never answered; check --billing and rerun join");
    }
    let verifier = Arc::new(Mutex::new(TicketVerifier::new(keys)));
    let metrics = Arc::new(Metrics::default());

    let data = UdpSocket::bind(cfg.data_listen)
        .await
        .with_context(|| format!("binding data port {}", cfg.data_listen))?;
    let data_addr = data.local_addr()?;
    let endpoint = quinn::Endpoint::server(control::server_config(&identity)?, cfg.control_listen)
        .with_context(|| format!("binding control port {}", cfg.control_listen))?;
    let control_addr = endpoint.local_addr()?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let mut tasks = JoinSet::new();
    let dcfg = dataplane::DataConfig {
        session_idle: cfg.session_idle,
        flow_idle: cfg.flow_idle,
        max_sessions: cfg.max_sessions,
        allow_private_destinations: cfg.allow_private_destinations,
    };
    tasks.spawn(dataplane::run(
        Arc::new(data),
        metrics.clone(),
        dcfg,
        cmd_rx,
        shutdown_rx.clone(),
    ));
    let ctl = control::Control {
        verifier: verifier.clone(),
        commands: cmd_tx,
        metrics: metrics.clone(),
        data_port: data_addr.port(),
        data_addr,
        idle_timeout_secs: cfg.session_idle.as_secs().min(u16::MAX as u64) as u16,
    };
    tasks.spawn(ctl.serve(endpoint.clone()));

    let node_id = identity.state.node_id.clone();
    let (public_control, public_data) = (cfg.public(control_addr), cfg.public(data_addr));
    if cfg.talk_to_billing {
        if let Err(e) = identity.announce(public_control, public_data).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot announce to billing yet; will retry");
        }
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(BILLING_REFRESH);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                if identity.refresh_keys().await.is_ok()
                    && let Ok(keys) = identity::decode_keys(&identity.state.ticket_keys)
                {
                    verifier.lock().await.set_keys(keys);
                }
                if let Err(e) = identity.announce(public_control, public_data).await {
                    tracing::warn!(error = %format!("{e:#}"), "announce failed");
                }
            }
        });
    }
    tracing::info!(node = %node_id, control = %control_addr, data = %data_addr, "node running");
    Ok(RunningNode {
        control_addr,
        data_addr,
        metrics,
        node_id,
        shutdown,
        endpoint,
        tasks,
    })
}

impl RunningNode {
    /// Stops every task and closes the sockets.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.endpoint.close(0u32.into(), b"node shutting down");
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}
