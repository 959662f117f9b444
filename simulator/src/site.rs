//! The internet between the sites of a topology, on loopback, for real processes: a game
//! server whose every source address sees its own link ([`GameSite`]: the client's direct
//! route and each node's exit→game leg), and a delayed NAT-style relay in front of a node
//! ([`SiteLink`]: the client→node leg, for the node's control and data ports alike).
//!
//! Each leg is an [`Impairment`] applied in both directions with its own seeded
//! [`Impairer`]s, so "the direct route is 95 ms with 2 % loss, the nearest node is 8 ms away
//! but 90 ms from the server" is a few lines of set-up. Delays are one-way: a leg with
//! `delay_ms = 45` adds 90 ms to a round trip.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::link::{Decision, Impairer, Impairment, derive_seed};

/// Most distinct sources a [`GameSite`] or [`SiteLink`] keeps state for.
const MAX_SOURCES: usize = 4096;

fn salt_of(ip: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ip.hash(&mut h);
    h.finish()
}

/// Both directions of one leg.
#[derive(Debug)]
struct Leg {
    params: Impairment,
    up: Impairer,
    down: Impairer,
}

impl Leg {
    fn new(params: Impairment, seed: u64) -> Leg {
        Leg {
            up: Impairer::new(derive_seed(seed, 0), params.clone(), vec![]),
            down: Impairer::new(derive_seed(seed, 1), params.clone(), vec![]),
            params,
        }
    }
}

/// Datagrams waiting on one direction of a leg: (due time, bytes, destination — `None` for a
/// connected socket).
type Queue = tokio::sync::mpsc::UnboundedSender<(Instant, Vec<u8>, Option<SocketAddr>)>;

/// One direction's sender: datagrams leave in the order queued, each not before its due time,
/// so a leg never reorders on its own (as a real path rarely does; a test that wants
/// reordering says so in its [`Impairment`]). The task ends when the queue is dropped.
fn fifo(socket: Arc<UdpSocket>) -> Queue {
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>, Option<SocketAddr>)>();
    tokio::spawn(async move {
        while let Some((at, data, to)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = match to {
                Some(to) => socket.send_to(&data, to).await,
                None => socket.send(&data).await,
            };
        }
    });
    tx
}

/// The delay of a datagram that survives, or `None` when it is dropped.
fn delay_of(d: Decision) -> Option<Duration> {
    match d {
        Decision::Drop(_) => None,
        Decision::Deliver { delay, .. } => Some(delay),
    }
}

/// A UDP game server that echoes every datagram, behind one link per source IP address.
#[derive(Debug)]
pub struct GameSite {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Datagrams received (before any loss on the way in).
    pub received: Arc<AtomicU64>,
    links: Arc<Mutex<HashMap<IpAddr, Impairment>>>,
    task: JoinHandle<()>,
}

impl GameSite {
    /// Starts on `bind` (port 0); sources without a link of their own see `default`.
    pub async fn start(bind: SocketAddr, default: Impairment, seed: u64) -> std::io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(bind).await?);
        let addr = socket.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let links: Arc<Mutex<HashMap<IpAddr, Impairment>>> = Arc::default();
        let (r, l) = (received.clone(), links.clone());
        let task = tokio::spawn(async move {
            let epoch = Instant::now();
            let mut legs: HashMap<IpAddr, (Leg, Queue)> = HashMap::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                r.fetch_add(1, Ordering::Relaxed);
                let params = l
                    .lock()
                    .map(|m| m.get(&from.ip()).cloned())
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| default.clone());
                if legs.len() >= MAX_SOURCES && !legs.contains_key(&from.ip()) {
                    legs.clear();
                }
                let (leg, queue) = legs.entry(from.ip()).or_insert_with(|| {
                    (
                        Leg::new(params.clone(), derive_seed(seed, salt_of(&from.ip()))),
                        fifo(socket.clone()),
                    )
                });
                if leg.params != params {
                    *leg = Leg::new(params, derive_seed(seed, salt_of(&from.ip())));
                }
                let at = epoch.elapsed();
                let Some(d1) = delay_of(leg.up.decide(at, n)) else {
                    continue;
                };
                let Some(d2) = delay_of(leg.down.decide(at + d1, n)) else {
                    continue;
                };
                let _ = queue.send((Instant::now() + d1 + d2, buf[..n].to_vec(), Some(from)));
            }
        });
        Ok(GameSite {
            addr,
            received,
            links,
            task,
        })
    }

    /// The link between the server and source address `from` (applied both ways); takes
    /// effect with the next datagram, so a leg can degrade mid-session.
    pub fn set_link(&self, from: IpAddr, leg: Impairment) {
        if let Ok(mut m) = self.links.lock() {
            m.insert(from, leg);
        }
    }

    /// Datagrams received so far.
    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for GameSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A delayed relay in front of one UDP port: every client gets its own upstream socket (as
/// behind a NAT), and every datagram crosses the leg's impairment each way. Bound first and
/// [connected](SiteLink::connect) later, so a node can announce the link's address as its own
/// before it starts.
#[derive(Debug)]
pub struct SiteLink {
    addr: SocketAddr,
    upstream: watch::Sender<Option<SocketAddr>>,
    task: JoinHandle<()>,
}

impl SiteLink {
    /// Binds the client-facing socket on `listen` (port 0).
    pub async fn bind(listen: SocketAddr, leg: Impairment, seed: u64) -> std::io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(listen).await?);
        let addr = socket.local_addr()?;
        let (upstream, mut upstream_rx) = watch::channel(None::<SocketAddr>);
        let task = tokio::spawn(async move {
            let epoch = Instant::now();
            let legs = Arc::new(Mutex::new(HashMap::<SocketAddr, Leg>::new()));
            let mut clients: HashMap<SocketAddr, Queue> = HashMap::new();
            let mut readers = JoinSet::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let (n, from) = tokio::select! {
                    r = socket.recv_from(&mut buf) => match r {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                    r = upstream_rx.changed() => {
                        if r.is_err() { return; }
                        continue;
                    }
                };
                let Some(to) = *upstream_rx.borrow() else {
                    continue;
                };
                if clients.len() >= MAX_SOURCES && !clients.contains_key(&from) {
                    clients.clear();
                    readers.abort_all();
                    if let Ok(mut l) = legs.lock() {
                        l.clear();
                    }
                }
                let up = match clients.get(&from) {
                    Some(s) => s.clone(),
                    None => {
                        let bind: SocketAddr = if to.is_ipv4() {
                            (std::net::Ipv4Addr::LOCALHOST, 0).into()
                        } else {
                            (std::net::Ipv6Addr::LOCALHOST, 0).into()
                        };
                        let Ok(s) = UdpSocket::bind(bind).await else {
                            continue;
                        };
                        if s.connect(to).await.is_err() {
                            continue;
                        }
                        let s = Arc::new(s);
                        let up_queue = fifo(s.clone());
                        clients.insert(from, up_queue.clone());
                        if let Ok(mut l) = legs.lock() {
                            l.insert(
                                from,
                                Leg::new(leg.clone(), derive_seed(seed, salt_of(&from))),
                            );
                        }
                        // Replies from upstream go back to this client across the leg.
                        let (back, legs2) = (fifo(socket.clone()), legs.clone());
                        readers.spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while let Ok(n) = s.recv(&mut buf).await {
                                let d = legs2.lock().ok().and_then(|mut l| {
                                    delay_of(l.get_mut(&from)?.down.decide(epoch.elapsed(), n))
                                });
                                let Some(d) = d else { continue };
                                let _ =
                                    back.send((Instant::now() + d, buf[..n].to_vec(), Some(from)));
                            }
                        });
                        up_queue
                    }
                };
                let d = legs
                    .lock()
                    .ok()
                    .and_then(|mut l| delay_of(l.get_mut(&from)?.up.decide(epoch.elapsed(), n)));
                let Some(d) = d else { continue };
                let _ = up.send((Instant::now() + d, buf[..n].to_vec(), None));
            }
        });
        Ok(SiteLink {
            addr,
            upstream,
            task,
        })
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts relaying to `upstream`.
    pub fn connect(&self, upstream: SocketAddr) {
        let _ = self.upstream.send(Some(upstream));
    }
}

impl Drop for SiteLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A relay node's place in a [`World`].
#[derive(Clone, Debug)]
pub struct SiteNode {
    /// Node name (as joined, e.g. `fra-2`).
    pub name: String,
    /// Client → node leg (one way; both directions).
    pub to_client: Impairment,
    /// Node → game server leg (one way; both directions).
    pub to_game: Impairment,
}

/// Where the sites of a [`World`] are, as seen from each other.
#[derive(Clone, Debug)]
pub struct WorldSpec {
    /// Client → game server directly (one way; both directions).
    pub direct: Impairment,
    /// The relay nodes.
    pub nodes: Vec<SiteNode>,
    /// Seed of every leg's random stream.
    pub seed: u64,
    /// List the game server as the catalog's probe (`false`: nodes learn it only from the
    /// flows their sessions open).
    pub catalog_probe: bool,
}

/// A whole deployment on loopback with an internet between its sites: billing (in-process,
/// temporary SQLite), a [`GameSite`] as the catalog's only game (`demo`, query `echo`, its
/// address as the catalog probe), and real nodes, each behind a [`SiteLink`] (client→node)
/// and sending to the game from its own loopback address `127.0.0.(10+k)` (exit→game).
#[derive(Debug)]
pub struct World {
    /// Billing's base URL.
    pub billing_url: String,
    /// Mesh CA certificate (PEM).
    pub ca_pem: String,
    /// The game server.
    pub game: GameSite,
    /// The nodes, in the spec's order, with the links in front of their control and data
    /// ports.
    pub nodes: Vec<(String, plg_node::RunningNode, SiteLink, SiteLink)>,
    billing: plg_billing::Billing,
    billing_stop: tokio::sync::oneshot::Sender<()>,
    billing_task: JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl WorldSpec {
    /// The example and the demo's: the direct route is 95 ms with 2 % loss each way;
    /// node `near` is 8 ms from the client but 90 ms from the game server; node `far` is
    /// 25 ms + 30 ms. The nearest node is the wrong exit.
    pub fn nearest_is_wrong(seed: u64) -> WorldSpec {
        let one_way = |ms: f64, loss_pct: f64| Impairment {
            delay_ms: ms,
            loss_pct,
            ..Impairment::default()
        };
        WorldSpec {
            direct: one_way(47.5, 2.0),
            nodes: vec![
                SiteNode {
                    name: "near".into(),
                    to_client: one_way(4.0, 0.0),
                    to_game: one_way(45.0, 0.0),
                },
                SiteNode {
                    name: "far".into(),
                    to_client: one_way(12.5, 0.0),
                    to_game: one_way(15.0, 0.0),
                },
            ],
            seed,
            catalog_probe: true,
        }
    }
}

impl World {
    /// Sets node `name`'s exit→game leg (one way, both directions) from now on.
    pub fn set_to_game(&self, name: &str, leg: Impairment) {
        if let Some(k) = self.nodes.iter().position(|n| n.0 == name) {
            self.game
                .set_link(IpAddr::from([127, 0, 0, 10 + k as u8]), leg);
        }
    }

    /// The id of the node started as `name`.
    pub fn id_of(&self, name: &str) -> Option<String> {
        self.nodes
            .iter()
            .find(|n| n.0 == name)
            .map(|n| n.1.node_id.clone())
    }

    /// The name a node was started under, from its id.
    pub fn name_of(&self, id: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.1.node_id == id)
            .map(|n| n.0.as_str())
    }

    /// Starts billing, the game server and the nodes of `spec`.
    pub async fn start(spec: &WorldSpec) -> anyhow::Result<World> {
        use anyhow::Context;
        let lo: IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
        let dir = tempfile::tempdir()?;
        let game = GameSite::start(
            (lo, 0).into(),
            spec.direct.clone(),
            derive_seed(spec.seed, 1),
        )
        .await
        .context("starting the game server")?;
        let config = plg_billing::Config {
            listen: (lo, 0).into(),
            data_dir: dir.path().join("billing"),
            extra_games: vec![plg_billing::games::GameSeed {
                slug: crate::local_mesh::DEMO_GAME.into(),
                name: "Local demo game".into(),
                destinations: vec![format!("127.0.0.1/32:{}", game.addr.port()).parse()?],
                query: Some(plg_billing::games::QueryKind::Echo),
                probes: if spec.catalog_probe {
                    vec![game.addr]
                } else {
                    vec![]
                },
                probes_source: spec
                    .catalog_probe
                    .then(|| "the simulator's game server".into()),
                ..Default::default()
            }],
            allow_private_probes: true,
            ..plg_billing::Config::default()
        };
        let billing = plg_billing::Billing::open(config)
            .await
            .context("opening billing")?;
        let listener = billing.bind().await?;
        let billing_url = format!("http://{}", listener.local_addr()?);
        let (billing_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let billing_task = tokio::spawn(billing.clone().serve(listener, async {
            let _ = stop_rx.await;
        }));
        let mut nodes = Vec::new();
        for (k, n) in spec.nodes.iter().enumerate() {
            let ip = IpAddr::from([127, 0, 0, 10 + k as u8]);
            game.set_link(ip, n.to_game.clone());
            let seed = derive_seed(spec.seed, 100 + k as u64);
            let control =
                SiteLink::bind((lo, 0).into(), n.to_client.clone(), derive_seed(seed, 1)).await?;
            let data =
                SiteLink::bind((lo, 0).into(), n.to_client.clone(), derive_seed(seed, 2)).await?;
            let token = billing.create_join_token(Duration::from_secs(600)).await?;
            let identity = plg_node::join(
                &billing_url,
                &token,
                &n.name,
                "local",
                &dir.path().join(&n.name),
            )
            .await
            .with_context(|| format!("joining node {}", n.name))?;
            let cfg = plg_node::NodeConfig {
                upstream_bind: Some(ip),
                public_addrs: Some((control.addr(), data.addr())),
                ..crate::local_mesh::loopback_node_config()
            };
            let node = plg_node::start(identity, cfg)
                .await
                .with_context(|| format!("starting node {}", n.name))?;
            control.connect(node.control_addr);
            data.connect(node.data_addr);
            nodes.push((n.name.clone(), node, control, data));
        }
        Ok(World {
            billing_url,
            ca_pem: billing.ca_cert_pem().to_owned(),
            game,
            nodes,
            billing,
            billing_stop,
            billing_task,
            _dir: dir,
        })
    }

    /// Registers and logs in a gamer.
    pub async fn gamer(&self, email: &str) -> anyhow::Result<plg_client::BillingClient> {
        let mut c = plg_client::BillingClient::new(&self.billing_url);
        c.register(email, crate::local_mesh::DEMO_PASSWORD).await?;
        c.login(email, crate::local_mesh::DEMO_PASSWORD).await?;
        Ok(c)
    }

    /// Waits (up to `within`) until billing offers every node with an exit→game figure for
    /// the game; returns the offered nodes.
    pub async fn wait_measured(
        &self,
        gamer: &plg_client::BillingClient,
        within: Duration,
    ) -> anyhow::Result<Vec<plg_client::NodeInfo>> {
        let deadline = Instant::now() + within;
        loop {
            let p = gamer.route_preview(crate::local_mesh::DEMO_GAME).await?;
            if p.nodes.len() == self.nodes.len() && p.nodes.iter().all(|n| !n.game_rtt.is_empty()) {
                return Ok(p.nodes);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "billing offers {} of {} nodes, {} with an exit→game figure, after {within:?}",
                    p.nodes.len(),
                    self.nodes.len(),
                    p.nodes.iter().filter(|n| !n.game_rtt.is_empty()).count()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stops everything.
    pub async fn stop(self) {
        for (_, n, _, _) in self.nodes {
            n.shutdown().await;
        }
        let _ = self.billing_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.billing_task).await;
        self.billing.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Impairment {
        Impairment {
            delay_ms: v,
            ..Impairment::default()
        }
    }

    async fn rtt(from: IpAddr, to: SocketAddr) -> Duration {
        let s = UdpSocket::bind((from, 0)).await.unwrap();
        let t = std::time::Instant::now();
        s.send_to(b"x", to).await.unwrap();
        let mut b = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut b))
            .await
            .unwrap()
            .unwrap();
        t.elapsed()
    }

    #[tokio::test]
    async fn each_source_sees_its_own_leg_and_links_add_theirs() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.23".parse().unwrap();
        let game = GameSite::start((lo, 0).into(), ms(30.0), 1).await.unwrap();
        game.set_link(other, ms(5.0));
        let slow = rtt(lo, game.addr).await;
        let fast = rtt(other, game.addr).await;
        assert!(slow >= Duration::from_millis(60), "{slow:?}");
        assert!(fast >= Duration::from_millis(10) && fast < slow, "{fast:?}");
        // A link in front: its 10 ms each way on top of the 5 ms leg of the link's source.
        let link = SiteLink::bind((lo, 0).into(), ms(10.0), 2).await.unwrap();
        link.connect(game.addr);
        let s = UdpSocket::bind((lo, 0)).await.unwrap();
        let t = std::time::Instant::now();
        s.send_to(b"y", link.addr()).await.unwrap();
        let mut b = [0u8; 8];
        let (n, src) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&b[..n], src), (&b"y"[..], link.addr()));
        // 2 × 10 ms on the link + 2 × 30 ms (the link's upstream socket is on 127.0.0.1).
        assert!(
            t.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t.elapsed()
        );
    }
}
