//! A whole PLG deployment on loopback: billing on a temporary SQLite database, one relay node
//! joined through billing's real join flow, and a UDP game-server stand-in. Used by the demo
//! and the end-to-end tests; every piece runs as a real task on real sockets.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use plg_billing::Billing;
use plg_billing::games::GameSeed;
use plg_client::BillingClient;
use plg_node::{Identity, NodeConfig, RunningNode};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::echo::EchoServer;

/// Slug of the game the local mesh's catalog adds; its only destination is the echo server.
pub const DEMO_GAME: &str = "demo";
/// Password used for gamer accounts created by [`LocalMesh::gamer`].
pub const DEMO_PASSWORD: &str = "correct horse battery staple";

/// A running local deployment.
#[derive(Debug)]
pub struct LocalMesh {
    /// Temporary directory holding billing's database and the node's identity.
    pub dir: tempfile::TempDir,
    /// Billing, in-process.
    pub billing: Billing,
    /// Billing's base URL.
    pub billing_url: String,
    /// The game-server stand-in.
    pub game: EchoServer,
    /// The relay node.
    pub node: RunningNode,
    /// Nodes added with [`LocalMesh::add_node`].
    pub extra_nodes: Vec<RunningNode>,
    /// Mesh CA certificate (PEM).
    pub ca_pem: String,
    /// How each piece was started, as the equivalent commands.
    pub steps: Vec<(String, String)>,
    billing_stop: oneshot::Sender<()>,
    billing_task: JoinHandle<Result<()>>,
}

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// Node settings for loopback: ports chosen by the OS, private destinations allowed (the game
/// server is on 127.0.0.1), short idle timeouts.
pub fn loopback_node_config() -> NodeConfig {
    NodeConfig {
        control_listen: loopback(),
        data_listen: loopback(),
        gossip_listen: Some(loopback()),
        allow_private_destinations: true,
        ..NodeConfig::default()
    }
}

impl LocalMesh {
    /// Starts billing, a game server and one node.
    pub async fn start() -> Result<LocalMesh> {
        Self::start_with(loopback_node_config()).await
    }

    /// Like [`LocalMesh::start`] with custom node settings.
    pub async fn start_with(node_cfg: NodeConfig) -> Result<LocalMesh> {
        Self::start_with_ttl(node_cfg, None).await
    }

    /// Like [`LocalMesh::start_with`], with billing's ticket lifetime set (at least 60 s;
    /// `None`: billing's default) — for long-session tests that must see renewals.
    pub async fn start_with_ttl(
        node_cfg: NodeConfig,
        ticket_ttl_secs: Option<u64>,
    ) -> Result<LocalMesh> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let game = EchoServer::start(loopback())
            .await
            .context("starting the game server")?;
        let mut steps = vec![(
            "game server".to_string(),
            format!("UDP echo on {}", game.addr),
        )];

        let destination = format!("127.0.0.1/32:{}", game.addr.port());
        let config = plg_billing::Config {
            listen: loopback(),
            data_dir: dir.path().join("billing"),
            extra_games: vec![GameSeed {
                slug: DEMO_GAME.into(),
                name: "Local demo game".into(),
                destinations: vec![destination.parse()?],
                process_names: vec![],
                ..Default::default()
            }],
            ..plg_billing::Config::default()
        };
        let mut config = config;
        if let Some(ttl) = ticket_ttl_secs {
            config.ticket_ttl_secs = ttl;
        }
        let billing = Billing::open(config.clone())
            .await
            .context("opening billing")?;
        let listener = billing.bind().await?;
        let billing_url = format!("http://{}", listener.local_addr()?);
        let (billing_stop, stop_rx) = oneshot::channel::<()>();
        let billing_task = tokio::spawn(billing.clone().serve(listener, async {
            let _ = stop_rx.await;
        }));
        steps.push((
            "billing".into(),
            format!(
                "plg-billing serve --listen {} --data-dir {}   (SQLite; catalog + game `{DEMO_GAME}` → {destination})",
                billing_url.trim_start_matches("http://"),
                config.data_dir.display()
            ),
        ));
        let ca_pem = billing.ca_cert_pem().to_owned();

        let node_dir = dir.path().join("node-1");
        let identity = join_node(&billing, &billing_url, "node-1", &node_dir).await?;
        steps.push((
            "node join".into(),
            format!("plg-billing join-token create → plg-node join --billing {billing_url} --token *** --data-dir {}", node_dir.display()),
        ));
        let node = plg_node::start(identity, node_cfg)
            .await
            .context("starting the node")?;
        steps.push((
            "node".into(),
            format!(
                "plg-node run --data-dir {} --control {} --data {} --allow-private-destinations",
                node_dir.display(),
                node.control_addr,
                node.data_addr
            ),
        ));
        Ok(LocalMesh {
            dir,
            billing,
            billing_url,
            game,
            node,
            extra_nodes: Vec::new(),
            ca_pem,
            steps,
            billing_stop,
            billing_task,
        })
    }

    /// Registers and logs in a gamer account.
    pub async fn gamer(&self, email: &str) -> Result<BillingClient> {
        let mut c = BillingClient::new(&self.billing_url);
        c.register(email, DEMO_PASSWORD).await.context("sign-up")?;
        c.login(email, DEMO_PASSWORD).await.context("login")?;
        Ok(c)
    }

    /// Joins another node identity through billing (not started).
    pub async fn join_identity(&self, name: &str) -> Result<Identity> {
        join_node(
            &self.billing,
            &self.billing_url,
            name,
            &self.dir.path().join(name),
        )
        .await
    }

    /// Joins and starts another node (loopback settings); billing then offers it too.
    pub async fn add_node(&mut self, name: &str) -> Result<&RunningNode> {
        let identity = self.join_identity(name).await?;
        let node = plg_node::start(identity, loopback_node_config())
            .await
            .context("starting the node")?;
        self.extra_nodes.push(node);
        Ok(self.extra_nodes.last().expect("just pushed"))
    }

    /// Stops the node whose control endpoint is `control` (simulating a crash: no goodbye).
    /// Returns whether such a node was running. The first node can be killed only while
    /// another one exists; that one then becomes `node`.
    pub async fn kill_node(&mut self, control: SocketAddr) -> bool {
        if let Some(i) = self
            .extra_nodes
            .iter()
            .position(|n| n.control_addr == control)
        {
            self.extra_nodes.remove(i).shutdown().await;
            return true;
        }
        if self.node.control_addr == control && !self.extra_nodes.is_empty() {
            let next = self.extra_nodes.remove(0);
            std::mem::replace(&mut self.node, next).shutdown().await;
            return true;
        }
        false
    }

    /// Stops everything and removes the temporary directory.
    pub async fn stop(self) {
        for n in self.extra_nodes {
            n.shutdown().await;
        }
        self.node.shutdown().await;
        let _ = self.billing_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.billing_task).await;
        self.billing.close().await;
    }
}

async fn join_node(
    billing: &Billing,
    url: &str,
    name: &str,
    dir: &std::path::Path,
) -> Result<Identity> {
    let token = billing.create_join_token(Duration::from_secs(600)).await?;
    plg_node::join(url, &token, name, "local", dir)
        .await
        .context("joining the node")
}
