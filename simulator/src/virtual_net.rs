//! A deterministic virtual network: the clients' session engines
//! ([`plg_client::conn::ClientConn`]) and the nodes' per-session cores
//! ([`plg_node::core::SessionCore`]) exchange real sealed frames through seeded
//! [`Impairer`]s on a virtual clock — no sockets, no sleeping, no threads — in the manner of
//! quinn-proto's test `Pair` and turmoil. Minutes of a session run in milliseconds of wall
//! time, and the same configuration gives the same run, bit for bit.
//!
//! What is modelled: each client path is one link (its own up and down [`Impairer`]) to its
//! first hop — the exit's data port, or a relay that forwards to whichever node holds the
//! session (the mesh's job, reduced to a lookup); a path may also cross **shared segments**
//! (links several paths — and the direct route — cross together, e.g. the home Wi-Fi), and
//! every exit→game datagram crosses the **game-side segments** (e.g. the game's data centre
//! uplink); **cross traffic** loads a segment with other people's datagrams. Several
//! sessions can run at once, each with its own client, paths and game server, sharing nodes
//! and segments. The game is either an echo (sequence-numbered packets, for the session
//! tests) or the tick game of [`crate::tick`] (both ends sending their own streams, traced
//! like the real-socket runs). The control connection is a clean link to the exit that
//! carries protected-mode datagrams and keep-alives. Nodes can be killed and restarted,
//! links blackholed, UDP blocked, the client's address changed. What is not: QUIC handshakes
//! (a failover opens the session on the chosen node at once, with fresh keys), the mesh's
//! gossip, the nodes' sockets.
//!
//! Every link direction draws from its own random stream, so one link's traffic (control
//! frames, another session, cross traffic) never shifts another link's decisions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plg_client::NodeInfo;
use plg_client::conn::{
    Action, ClientConn, ConnConfig, ControlStatus, ProxyEvent, Route, Transmit, Via,
};
use plg_client::proxy::ProxyStats;
use plg_node::core::{ClientOutcome, SessionCore};
use plg_proto::session::{KEYING_MATERIAL_LEN, Role};
use plg_proto::{Session, Ticket};

use crate::link::{
    Decision, DirectionConfig, DirectionReport, DropReason, Impairer, Impairment, LinkReport,
    ScheduledChange, TIMELINE_BIN, TimelineBin, derive_seed,
};
use crate::tick::{self, Arrival, PairTrace, RttSample, Sent, StreamTrace, TickSpec};

/// The session id of session 0 (session `s` uses `SESSION_ID + s`).
pub const SESSION_ID: u64 = 0x5e55_1011;
/// Session 0's game server (session `s` uses port `27015 + s`).
pub const GAME_SERVER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 27015);
/// The game's own address (the local capture).
pub const GAME: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 5000);
/// Where protected-mode datagrams appear to come from on the node (its loopback bridge).
const BRIDGE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9);
/// Keep-alive period of the control connection.
const KEEP_ALIVE: Duration = Duration::from_millis(200);
/// Node idle timeout for sessions and flows.
const NODE_IDLE: Duration = Duration::from_secs(60);
/// How long the tick game's warm-up may take: its traffic starts this long after the
/// network (virtual time).
pub const WARM_UP: Duration = Duration::from_secs(2);
/// Most sessions in one network.
pub const MAX_SESSIONS: usize = 64;

/// Both directions of one link's configuration (`up`: away from the client).
#[derive(Clone, Debug, Default)]
pub struct LinkSpec {
    /// Client → node (or node → game server).
    pub up: DirectionConfig,
    /// The other way.
    pub down: DirectionConfig,
}

impl LinkSpec {
    /// The same impairment both ways, each direction with its own stream derived from `seed`.
    pub fn symmetric(impairment: Impairment, seed: u64) -> LinkSpec {
        let (up, down) = DirectionConfig::pair(impairment, seed);
        LinkSpec { up, down }
    }

    /// A copy whose streams are re-derived with `salt` (another session's copy of a path).
    pub fn reseeded(&self, salt: u64) -> LinkSpec {
        let mut l = self.clone();
        l.up.seed = derive_seed(l.up.seed, salt);
        l.down.seed = derive_seed(l.down.seed, salt);
        l
    }
}

/// One client path.
#[derive(Clone, Debug, Default)]
pub struct PathPlan {
    /// The node relaying it to the exit (`None`: straight to the exit).
    pub relay: Option<usize>,
    /// Its own link.
    pub link: LinkSpec,
    /// Shared segments it crosses (indices into [`NetConfig::segments`]), nearest the client
    /// first.
    pub segments: Vec<usize>,
}

/// Other people's traffic through a shared segment: `size`-byte datagrams at `rate_kbps`.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossTraffic {
    /// Segment index.
    pub segment: usize,
    /// Load the segment's up direction.
    pub up: bool,
    /// Load its down direction.
    pub down: bool,
    /// Kilobits per second of UDP payload, each loaded direction.
    pub rate_kbps: f64,
    /// Bytes per datagram.
    pub size: usize,
    /// When it starts on the scenario clock.
    pub start: Duration,
    /// When it stops on the scenario clock (`None`: never).
    pub stop: Option<Duration>,
}

impl CrossTraffic {
    fn period(&self) -> Duration {
        Duration::from_secs_f64(self.size as f64 * 8.0 / (self.rate_kbps * 1000.0))
    }
}

/// What the game does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GameMode {
    /// The game server echoes; the game sends sequence-numbered packets ([`VirtualNet::run`]).
    Echo,
    /// The tick game: both ends send their own streams ([`VirtualNet::play`]).
    Ticks(TickSpec),
}

/// Settings of a virtual network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Nodes (ids `n0`, `n1`, ...); node 0 is the first exit.
    pub nodes: usize,
    /// Shorthand when `paths` is empty: for each client path, the node relaying it (`None`:
    /// straight to the exit), every path with `impairment` both ways.
    pub relays: Vec<Option<usize>>,
    /// The shorthand's impairment (and the control connection's one-way delay).
    pub impairment: Impairment,
    /// Explicit client paths (session 0's; other sessions get reseeded copies).
    pub paths: Vec<PathPlan>,
    /// Per node: the route to it once a session has failed over to it (all paths then use
    /// it). `None` or absent: the session's path links are used.
    pub backups: Vec<Option<PathPlan>>,
    /// Shared segments.
    pub segments: Vec<LinkSpec>,
    /// Segments every exit → game datagram crosses (and the direct route).
    pub game_side: Vec<usize>,
    /// Other traffic through segments.
    pub cross: Vec<CrossTraffic>,
    /// Sessions (clients), each with its own game server.
    pub sessions: usize,
    /// Exit → game server one-way delay (before the game-side segments).
    pub game_delay: Duration,
    /// The game.
    pub game: GameMode,
    /// No PLG at all: the game talks to its server over path 0's link and segments.
    pub direct: bool,
    /// Ticket lifetime; renewed in place at [`plg_client::renew::renew_at`] when `renew`.
    pub ticket_ttl: Duration,
    /// Renew tickets (the controller's job).
    pub renew: bool,
    /// The session engine's settings.
    pub conn: ConnConfig,
    /// Seed of every impairer in the shorthand form.
    pub seed: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            nodes: 3,
            relays: vec![None],
            impairment: Impairment {
                delay_ms: 10.0,
                ..Impairment::default()
            },
            paths: vec![],
            backups: vec![],
            segments: vec![],
            game_side: vec![],
            cross: vec![],
            sessions: 1,
            game_delay: Duration::from_millis(5),
            game: GameMode::Echo,
            direct: false,
            ticket_ttl: Duration::from_secs(7200),
            renew: true,
            conn: ConnConfig::default(),
            seed: 1,
        }
    }
}

impl NetConfig {
    /// The client paths: explicit, or the shorthand's.
    fn path_plans(&self) -> Vec<PathPlan> {
        if !self.paths.is_empty() {
            return self.paths.clone();
        }
        let relays = if self.relays.is_empty() {
            vec![None]
        } else {
            self.relays.clone()
        };
        relays
            .iter()
            .enumerate()
            .map(|(p, &relay)| PathPlan {
                relay,
                link: LinkSpec {
                    up: DirectionConfig {
                        impairment: self.impairment.clone(),
                        seed: derive_seed(self.seed, 2 * p as u64),
                        schedule: vec![],
                    },
                    down: DirectionConfig {
                        impairment: self.impairment.clone(),
                        seed: derive_seed(self.seed, 2 * p as u64 + 1),
                        schedule: vec![],
                    },
                },
                segments: vec![],
            })
            .collect()
    }
}

/// One direction of a link in the network, with its record.
#[derive(Debug)]
struct VDir {
    imp: Impairer,
    rep: DirectionReport,
    /// Per [`TIMELINE_BIN`]: packets, dropped, sum of delays (ms), max delay (ms).
    bins: Vec<(u32, u32, f64, f64)>,
}

impl VDir {
    /// `lead`: how long before the scenario clock's zero the link's own clock starts.
    fn new(c: &DirectionConfig, lead: Duration) -> VDir {
        let schedule = c.schedule.iter().map(|s| s.delayed(lead)).collect();
        VDir {
            imp: Impairer::new(c.seed, c.impairment.clone(), schedule).with_trace_origin(lead),
            rep: DirectionReport::default(),
            bins: vec![],
        }
    }

    fn decide(&mut self, at: Duration, len: usize) -> Decision {
        let d = self.imp.decide(at, len);
        let r = &mut self.rep;
        r.packets_in += 1;
        r.bytes_in += len as u64;
        let b = (at.as_nanos() / TIMELINE_BIN.as_nanos()) as usize;
        if self.bins.len() <= b {
            self.bins.resize(b + 1, (0, 0, 0.0, 0.0));
        }
        let bin = &mut self.bins[b];
        bin.0 += 1;
        match &d {
            Decision::Drop(reason) => {
                bin.1 += 1;
                match reason {
                    DropReason::Blackhole => r.dropped_blackhole += 1,
                    DropReason::Mtu => r.dropped_mtu += 1,
                    DropReason::Rate => r.dropped_rate += 1,
                    DropReason::Queue => r.dropped_queue += 1,
                    DropReason::Burst => r.dropped_burst += 1,
                    DropReason::Random => r.dropped_random += 1,
                    DropReason::Trace => r.dropped_trace += 1,
                }
            }
            Decision::Deliver {
                delay,
                duplicate,
                corrupt,
            } => {
                r.corrupted += u64::from(corrupt.is_some());
                let ms = delay.as_secs_f64() * 1000.0;
                bin.2 += ms;
                bin.3 = bin.3.max(ms);
                let copies = 1 + u64::from(duplicate.is_some());
                r.packets_out += copies;
                r.bytes_out += copies * len as u64;
                r.duplicated += copies - 1;
            }
        }
        d
    }

    /// The record, its timeline from the scenario clock's zero (`lead` after the link's).
    fn report(&self, lead: Duration) -> DirectionReport {
        let skip = (lead.as_nanos() / TIMELINE_BIN.as_nanos()) as usize;
        let mut r = self.rep.clone();
        r.timeline = self
            .bins
            .iter()
            .skip(skip)
            .map(|&(packets, dropped, sum, max)| {
                let delivered = packets - dropped;
                TimelineBin {
                    packets,
                    dropped,
                    mean_delay_ms: if delivered == 0 {
                        0.0
                    } else {
                        sum / delivered as f64
                    },
                    max_delay_ms: max,
                }
            })
            .collect();
        r
    }
}

#[derive(Debug)]
struct VLink {
    up: VDir,
    down: VDir,
}

impl VLink {
    fn new(spec: &LinkSpec, lead: Duration) -> VLink {
        VLink {
            up: VDir::new(&spec.up, lead),
            down: VDir::new(&spec.down, lead),
        }
    }

    fn report(&self, lead: Duration) -> LinkReport {
        LinkReport {
            up: self.up.report(lead),
            down: self.down.report(lead),
        }
    }
}

/// One step of a datagram's route: a link, in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Hop {
    link: usize,
    up: bool,
}

/// Where a datagram ends up once it has crossed its hops.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    /// A client datagram at `node` (the path's first hop) from the client socket `from`.
    Node {
        node: usize,
        sess: usize,
        from: SocketAddr,
    },
    /// A node datagram at session `sess`'s client socket `to` (or over QUIC).
    Client {
        sess: usize,
        to: SocketAddr,
        quic: bool,
    },
    /// A payload at the game server from `node`'s flow.
    Game { node: usize, sess: usize, flow: u32 },
    /// The game server's datagram at `node`'s flow socket.
    FromGame { node: usize, sess: usize, flow: u32 },
    /// Without PLG: at the game server.
    DirectServer { sess: usize },
    /// Without PLG: at the game client.
    DirectClient { sess: usize },
    /// Cross traffic: leaves the network.
    Sink,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Packet {
    /// Arrives at hop `next` of `hops`.
    Transit {
        hops: Vec<Hop>,
        next: usize,
        dest: Dest,
        bytes: Vec<u8>,
    },
    /// Arrives at its destination.
    Arrive { dest: Dest, bytes: Vec<u8> },
    /// Cross traffic stream `idx` sends its next datagram.
    Cross { idx: usize },
}

/// One virtual node.
#[derive(Debug)]
pub struct VNode {
    /// What the client knows of it.
    pub info: NodeInfo,
    /// Running (false: killed, drops everything).
    pub up: bool,
    /// Per session: its core, if this node holds it.
    sessions: Vec<Option<SessionCore<SocketAddr, ()>>>,
    /// Sessions this node lost to expiry (ticket or idle).
    pub expired: u32,
}

/// The tick game of one session, both ends.
#[derive(Debug)]
struct TickGame {
    client_rng: fastrand::Rng,
    server_rng: fastrand::Rng,
    up: StreamTrace,
    down: StreamTrace,
    rtt: Vec<RttSample>,
    echoed: Vec<bool>,
    /// Newest client tick at the server: (seq, its send time, when it came), µs.
    newest: Option<(u32, u64, u64)>,
    /// The server's peer: the node and flow it last heard from.
    peer: Option<(usize, u32)>,
    /// The client heard the server's hello answer.
    acked: bool,
    next_hello: Instant,
    k_up: u32,
    k_down: u32,
}

impl TickGame {
    fn new(spec: TickSpec, now: Instant) -> TickGame {
        TickGame {
            client_rng: fastrand::Rng::with_seed(derive_seed(spec.seed, 0xC11E)),
            server_rng: fastrand::Rng::with_seed(derive_seed(spec.seed, 0x5E4E)),
            up: StreamTrace {
                sent: vec![None; spec.total() as usize],
                arrivals: vec![],
            },
            down: StreamTrace {
                sent: vec![None; spec.total() as usize],
                arrivals: vec![],
            },
            rtt: vec![],
            echoed: vec![false; spec.total() as usize],
            newest: None,
            peer: None,
            acked: false,
            next_hello: now,
            k_up: 0,
            k_down: 0,
        }
    }

    fn size(rng: &mut fastrand::Rng, spec: &TickSpec) -> usize {
        rng.usize(spec.min_size.max(tick::HEADER_LEN)..=spec.max_size.max(tick::HEADER_LEN))
    }
}

/// One session: a client, its paths, its game.
#[derive(Debug)]
pub struct VSession {
    /// The client's engine.
    pub client: ClientConn,
    /// Session id.
    pub id: u64,
    /// Its game server.
    pub server: SocketAddr,
    sockets: Vec<SocketAddr>,
    client_ip: IpAddr,
    next_port: u16,
    control_rx: u64,
    next_keepalive: Instant,
    renew_at: Option<Instant>,
    ticket: Ticket,
    keys_generation: u8,
    /// Link of each client path.
    path_links: Vec<usize>,
    /// Segments of each client path.
    path_segments: Vec<Vec<usize>>,
    /// Per node: the link (and segments) to it after a failover.
    backup_links: Vec<Option<(usize, Vec<usize>)>>,
    /// Echo game: sequence numbers delivered back to the game, with their arrival time.
    pub delivered: Vec<(Instant, u64)>,
    /// Echo game: copies of each sequence number delivered (index = sequence number).
    pub copies: Vec<u32>,
    /// Events the engine raised.
    pub events: Vec<(Instant, ProxyEvent)>,
    /// I/O the engine asked for.
    pub actions: Vec<(Instant, Action)>,
    /// Renewals done (in place).
    pub renewals: u32,
    next_seq: u64,
    game: Option<TickGame>,
}

/// The network and everything in it.
#[derive(Debug)]
pub struct VirtualNet {
    /// Virtual now.
    pub now: Instant,
    epoch: Instant,
    /// The scenario clock's zero (events and the game's times count from it): the start of
    /// the tick game's traffic, [`WARM_UP`] after the network's creation, or the creation
    /// in echo mode.
    armed: Option<Instant>,
    /// How long the links' clocks run before the scenario clock's zero.
    lead: Duration,
    unix0: u64,
    cfg: NetConfig,
    /// The nodes.
    pub nodes: Vec<VNode>,
    /// The sessions (session 0 first).
    pub sessions: Vec<VSession>,
    links: Vec<VLink>,
    segment_links: Vec<usize>,
    queue: BinaryHeap<Reverse<(Instant, u64, Packet)>>,
    order: u64,
    /// UDP between the clients and every node is blocked (the control connection is not).
    pub udp_blocked: bool,
    /// Kills (`true`) and restarts of nodes, at scenario-clock times, sorted.
    node_events: Vec<(Duration, usize, bool)>,
}

fn node_info(i: usize) -> NodeInfo {
    let addr = format!("10.0.0.{}:443", i + 1);
    NodeInfo {
        id: format!("n{i}"),
        server_name: format!("n{i}.nodes.plg"),
        region: String::new(),
        control_addr: addr.clone(),
        data_addr: addr,
        ..Default::default()
    }
}

fn keys(sess: usize, generation: u8) -> [u8; KEYING_MATERIAL_LEN] {
    let mut k = [generation.wrapping_add(1); KEYING_MATERIAL_LEN];
    k[0] = sess as u8;
    k
}

fn data_addr(node: usize) -> SocketAddr {
    node_info(node).data_addr.parse().expect("literal")
}

impl VirtualNet {
    /// A network with every session open on node 0.
    pub fn new(cfg: NetConfig) -> VirtualNet {
        let now = Instant::now();
        let unix0 = 1_700_000_000;
        let n_sessions = cfg.sessions.clamp(1, MAX_SESSIONS);
        // The tick game's traffic starts WARM_UP after the network (whose links' clocks start
        // at once, so that rate limits refill during the warm-up too).
        let lead = match cfg.game {
            GameMode::Echo => Duration::ZERO,
            GameMode::Ticks(_) => WARM_UP,
        };
        let plans = cfg.path_plans();
        let paths = plans.len();
        let mut links: Vec<VLink> = Vec::new();
        let segment_links: Vec<usize> = cfg
            .segments
            .iter()
            .map(|s| {
                links.push(VLink::new(s, lead));
                links.len() - 1
            })
            .collect();
        let mut nodes: Vec<VNode> = (0..cfg.nodes.max(1))
            .map(|i| VNode {
                info: node_info(i),
                up: true,
                sessions: (0..n_sessions).map(|_| None).collect(),
                expired: 0,
            })
            .collect();
        let mut sessions = Vec::with_capacity(n_sessions);
        for s in 0..n_sessions {
            // Session 0 uses the configured streams; the others derive their own.
            let copy = |l: &LinkSpec| {
                if s == 0 {
                    l.clone()
                } else {
                    l.reseeded(s as u64)
                }
            };
            let id = SESSION_ID + s as u64;
            let server = SocketAddr::new(GAME_SERVER.ip(), GAME_SERVER.port() + s as u16);
            let ticket = Ticket {
                key_id: 1,
                issued_at: unix0,
                expires_at: unix0 + cfg.ticket_ttl.as_secs(),
                session_id: id,
                account_id: 1 + s as u64,
                plan: 1,
                game_id: 1,
                path_limit: paths as u8,
                bandwidth_kbps: 0,
                destinations: vec![
                    format!("{}/32:{}", server.ip(), server.port())
                        .parse()
                        .expect("literal destination"),
                ],
            };
            let exit = node_info(0);
            let route = Route {
                backup: "n1".into(),
                data_addr: data_addr(0),
                path_addrs: plans
                    .iter()
                    .map(|p| data_addr(p.relay.unwrap_or(0)))
                    .collect(),
                relays: plans
                    .iter()
                    .map(|p| p.relay.map(|r| format!("n{r}")))
                    .collect(),
                candidates: (1..cfg.nodes).map(node_info).collect(),
                node: exit,
            };
            let client = ClientConn::new(
                now,
                Session::new(Role::Client, id, &keys(s, 0)),
                route,
                paths as u8,
                cfg.conn,
                Arc::new(ProxyStats::default()),
            )
            .expect("path count within the ticket");
            let client_ip = IpAddr::V4(Ipv4Addr::new(
                192,
                168,
                1 + (s / 200) as u8,
                10 + (s % 200) as u8,
            ));
            let path_links = plans
                .iter()
                .map(|p| {
                    links.push(VLink::new(&copy(&p.link), lead));
                    links.len() - 1
                })
                .collect();
            let backup_links = (0..cfg.nodes)
                .map(|k| {
                    let plan = cfg.backups.get(k)?.as_ref()?;
                    links.push(VLink::new(&copy(&plan.link), lead));
                    Some((links.len() - 1, plan.segments.clone()))
                })
                .collect();
            let renew_at = cfg.renew.then(|| {
                let at = plg_client::renew::renew_at(ticket.issued_at, ticket.expires_at);
                now + Duration::from_secs(at - unix0)
            });
            nodes[0].sessions[s] = Some(SessionCore::new(
                Session::new(Role::Node, id, &keys(s, 0)),
                ticket.clone(),
                now,
            ));
            sessions.push(VSession {
                client,
                id,
                server,
                sockets: (0..paths)
                    .map(|p| SocketAddr::new(client_ip, 40_000 + p as u16))
                    .collect(),
                client_ip,
                next_port: 41_000,
                control_rx: 0,
                next_keepalive: now,
                renew_at,
                ticket,
                keys_generation: 0,
                path_links,
                path_segments: plans.iter().map(|p| p.segments.clone()).collect(),
                backup_links,
                delivered: vec![],
                copies: vec![],
                events: vec![],
                actions: vec![],
                renewals: 0,
                next_seq: 0,
                game: match cfg.game {
                    GameMode::Echo => None,
                    GameMode::Ticks(spec) => Some(TickGame::new(spec, now)),
                },
            });
        }
        let armed = matches!(cfg.game, GameMode::Echo).then_some(now);
        let mut net = VirtualNet {
            now,
            epoch: now,
            armed,
            lead,
            unix0,
            nodes,
            sessions,
            links,
            segment_links,
            queue: BinaryHeap::new(),
            order: 0,
            udp_blocked: false,
            node_events: vec![],
            cfg,
        };
        for idx in 0..net.cfg.cross.len() {
            let at = now + lead + net.cfg.cross[idx].start;
            net.push(at, Packet::Cross { idx });
        }
        net
    }

    /// Seconds of `at` on the scenario clock (from the start of traffic).
    pub fn scenario_secs(&self, at: Instant) -> f64 {
        self.armed
            .map_or(0.0, |a| at.saturating_duration_since(a).as_secs_f64())
    }

    /// Time since the network started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// The links' clock: time since the network started.
    fn clock(&self) -> Duration {
        self.now - self.epoch
    }

    fn unix_now(&self) -> u64 {
        self.unix0 + self.elapsed().as_secs()
    }

    /// Blackholes session 0's path `path` both ways from `from` to `until` (network time).
    pub fn blackhole(&mut self, path: usize, from: Duration, until: Duration) {
        let seed = derive_seed(self.cfg.seed, 100 + path as u64);
        let imp = self.cfg.impairment.clone();
        let link = &mut self.links[self.sessions[0].path_links[path]];
        for d in [&mut link.up, &mut link.down] {
            d.imp = Impairer::new(
                seed,
                imp.clone(),
                vec![ScheduledChange::Blackhole { from, until }],
            );
        }
    }

    /// Replaces session 0's path `path`'s impairment (both ways) from now on.
    pub fn impair(&mut self, path: usize, imp: Impairment, seed: u64) {
        let link = &mut self.links[self.sessions[0].path_links[path]];
        link.up.imp = Impairer::new(seed, imp.clone(), vec![]);
        link.down.imp = Impairer::new(seed ^ 0xd0, imp, vec![]);
    }

    /// Session 0's network changes (Wi-Fi → Ethernet): every socket now sends from `ip`;
    /// datagrams to the old address are lost.
    pub fn move_client(&mut self, ip: IpAddr) {
        let s = &mut self.sessions[0];
        s.client_ip = ip;
        for a in &mut s.sockets {
            a.set_ip(ip);
        }
    }

    /// Kills (`kill`) or restarts `node` at `at` on the scenario clock.
    pub fn schedule_node(&mut self, at: Duration, node: usize, kill: bool) {
        self.node_events.push((at, node, kill));
        self.node_events.sort_by_key(|e| e.0);
    }

    /// Which node holds session 0 now (its exit).
    pub fn exit(&self) -> Option<usize> {
        self.exit_of(0)
    }

    /// Which node holds session `sess` now.
    pub fn exit_of(&self, sess: usize) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.up && n.sessions[sess].is_some())
    }

    fn push(&mut self, at: Instant, p: Packet) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, p)));
    }

    fn node_by_addr(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.info.data_addr.parse::<SocketAddr>().ok() == Some(addr))
    }

    /// Sends `bytes` across `hops` to `dest`, starting now.
    fn send(&mut self, hops: Vec<Hop>, dest: Dest, bytes: Vec<u8>) {
        self.transit(hops, 0, dest, bytes);
    }

    /// A datagram arriving at hop `next` of `hops` now.
    fn transit(&mut self, hops: Vec<Hop>, next: usize, dest: Dest, bytes: Vec<u8>) {
        let Some(&hop) = hops.get(next) else {
            self.push(self.now, Packet::Arrive { dest, bytes });
            return;
        };
        let at = self.clock();
        let link = &mut self.links[hop.link];
        let dir = if hop.up { &mut link.up } else { &mut link.down };
        let Decision::Deliver {
            delay,
            duplicate,
            corrupt,
        } = dir.decide(at, bytes.len())
        else {
            return;
        };
        let last = next + 1 == hops.len();
        let packet = |hops: Vec<Hop>, dest: Dest, bytes: Vec<u8>| {
            if last {
                Packet::Arrive { dest, bytes }
            } else {
                Packet::Transit {
                    hops,
                    next: next + 1,
                    dest,
                    bytes,
                }
            }
        };
        if let Some(d) = duplicate {
            self.push(
                self.now + d,
                packet(hops.clone(), dest.clone(), bytes.clone()),
            );
        }
        // The duplicate (pushed above) stays intact; the delivered copy carries the flip.
        let mut bytes = bytes;
        if let Some(c) = corrupt {
            c.apply(&mut bytes);
        }
        self.push(self.now + delay, packet(hops, dest, bytes));
    }

    /// The hops from session `sess`'s path `p` towards `node` (`up`) or back.
    fn path_hops(&self, sess: usize, p: usize, node: usize, up: bool) -> Vec<Hop> {
        let s = &self.sessions[sess];
        let (link, segments) = match s.backup_links.get(node).and_then(Option::as_ref) {
            Some((l, segs)) => (*l, segs),
            None => (s.path_links[p], &s.path_segments[p]),
        };
        let mut hops: Vec<Hop> = segments
            .iter()
            .map(|&g| Hop {
                link: self.segment_links[g],
                up,
            })
            .collect();
        hops.push(Hop { link, up });
        if !up {
            hops.reverse();
        }
        hops
    }

    /// Sends `bytes` over the exit ↔ game server leg (towards the server when `up`): the fixed
    /// game delay, then the game-side segments.
    fn game_leg(&mut self, up: bool, dest: Dest, bytes: Vec<u8>) {
        let hops = self.game_hops(up);
        self.push(
            self.now + self.cfg.game_delay,
            Packet::Transit {
                hops,
                next: 0,
                dest,
                bytes,
            },
        );
    }

    /// The game-side hops (exit → game server when `up`).
    fn game_hops(&self, up: bool) -> Vec<Hop> {
        let mut hops: Vec<Hop> = self
            .cfg
            .game_side
            .iter()
            .map(|&g| Hop {
                link: self.segment_links[g],
                up,
            })
            .collect();
        if !up {
            hops.reverse();
        }
        hops
    }

    /// Without PLG: the game client → server route (path 0's segments and link, then the
    /// game side), or back.
    fn direct_hops(&self, sess: usize, up: bool) -> Vec<Hop> {
        let mut hops = self.path_hops(sess, 0, 0, true);
        hops.extend(self.game_hops(true));
        for h in &mut hops {
            h.up = up;
        }
        if !up {
            hops.reverse();
        }
        hops
    }

    fn control_delay(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.impairment.delay_ms.max(0.0) / 1000.0)
    }

    /// Sends what session `sess`'s client queued.
    fn flush_client(&mut self, sess: usize) {
        while let Some(Transmit { via, bytes }) = self.sessions[sess].client.poll_transmit() {
            match via {
                Via::Quic => {
                    // The control connection: straight to the exit, never lost.
                    if let Some(node) = self.exit_of(sess) {
                        let at = self.now + self.control_delay();
                        self.push(
                            at,
                            Packet::Arrive {
                                dest: Dest::Node {
                                    node,
                                    sess,
                                    from: BRIDGE,
                                },
                                bytes,
                            },
                        );
                    }
                }
                Via::Path(p) => {
                    let p = p as usize;
                    if self.udp_blocked {
                        continue;
                    }
                    let to = self.sessions[sess].client.path_addrs()[p];
                    let Some(node) = self.node_by_addr(to) else {
                        continue;
                    };
                    let from = self.sessions[sess].sockets[p];
                    let hops = self.path_hops(sess, p, node, true);
                    self.send(hops, Dest::Node { node, sess, from }, bytes);
                }
            }
        }
        while let Some(a) = self.sessions[sess].client.poll_action() {
            let now = self.now;
            let s = &mut self.sessions[sess];
            s.actions.push((now, a.clone()));
            match a {
                Action::OpenPath { path, .. } => {
                    s.next_port += 1;
                    s.sockets[path as usize] = SocketAddr::new(s.client_ip, s.next_port);
                }
                Action::Rebind => {
                    for i in 0..s.sockets.len() {
                        s.next_port += 1;
                        s.sockets[i] = SocketAddr::new(s.client_ip, s.next_port);
                    }
                }
                Action::FailOver { candidates } => self.fail_over(sess, candidates),
            }
        }
        let now = self.now;
        let s = &mut self.sessions[sess];
        while let Some(e) = s.client.poll_event() {
            s.events.push((now, e));
        }
    }

    /// Opens the session on the first live candidate with fresh keys (the QUIC handshake is
    /// not modelled), as the driver would.
    fn fail_over(&mut self, sess: usize, candidates: Vec<NodeInfo>) {
        let pick = candidates
            .iter()
            .find_map(|c| self.nodes.iter().position(|n| n.info.id == c.id && n.up));
        let now = self.now;
        let Some(i) = pick else {
            self.sessions[sess]
                .client
                .handle_failover_failed(now, "no candidate answered".into());
            return;
        };
        // A node verifies the ticket: an expired one is refused everywhere.
        if self.sessions[sess].ticket.expires_at <= self.unix_now() {
            self.sessions[sess]
                .client
                .handle_failover_failed(now, "the ticket expired".into());
            return;
        }
        let s = &mut self.sessions[sess];
        s.keys_generation += 1;
        let k = keys(sess, s.keys_generation);
        // The mesh: the old exit lets the session go when another node adopts it.
        for n in &mut self.nodes {
            n.sessions[sess] = None;
        }
        self.nodes[i].sessions[sess] = Some(SessionCore::new(
            Session::new(Role::Node, s.id, &k),
            s.ticket.clone(),
            now,
        ));
        let backup = self
            .nodes
            .iter()
            .find(|n| n.up && n.info.id != self.nodes[i].info.id)
            .map(|n| n.info.id.clone())
            .unwrap_or_default();
        let info = self.nodes[i].info.clone();
        let data = info.data_addr.parse().expect("literal");
        let id = s.id;
        s.client
            .handle_switched(now, info, Session::new(Role::Client, id, &k), data, backup);
    }

    /// A datagram at `node` from session `sess`'s client socket `from`.
    fn at_node(&mut self, node: usize, sess: usize, from: SocketAddr, mut bytes: Vec<u8>) {
        if !self.nodes[node].up {
            return;
        }
        // A relay: forward to the node holding the session (the mesh's lookup).
        if self.nodes[node].sessions[sess].is_none() {
            if from == BRIDGE {
                return;
            }
            if let Some(exit) = self.exit_of(sess) {
                self.push(
                    self.now,
                    Packet::Arrive {
                        dest: Dest::Node {
                            node: exit,
                            sess,
                            from,
                        },
                        bytes,
                    },
                );
            }
            return;
        }
        let now = self.now;
        let mut out = Vec::new();
        let core = self.nodes[node].sessions[sess].as_mut().expect("checked");
        match core.handle_client(now, &mut bytes, from, |_| true, &mut out) {
            ClientOutcome::Forward { flow, payload, .. } => {
                let payload = payload.to_vec();
                self.game_leg(true, Dest::Game { node, sess, flow }, payload);
            }
            ClientOutcome::OpenFlow { flow, dst, .. } => {
                core.flow_opened(flow, dst, (), now);
            }
            ClientOutcome::Reply { to: Some(to), .. } => self.send_to_client(sess, to, out),
            ClientOutcome::Closed { .. } => self.nodes[node].sessions[sess] = None,
            _ => {}
        }
    }

    /// A node datagram towards session `sess`'s client address `to` (a path socket or the
    /// bridge).
    fn send_to_client(&mut self, sess: usize, to: SocketAddr, bytes: Vec<u8>) {
        if to == BRIDGE {
            let at = self.now + self.control_delay();
            self.push(
                at,
                Packet::Arrive {
                    dest: Dest::Client {
                        sess,
                        to,
                        quic: true,
                    },
                    bytes,
                },
            );
            return;
        }
        if self.udp_blocked {
            return;
        }
        // The path whose socket this is (a stale address is simply lost).
        let Some(p) = self.sessions[sess].sockets.iter().position(|s| *s == to) else {
            return;
        };
        // A relayed path's downstream goes through its relay.
        let hop = self.sessions[sess].client.path_addrs()[p];
        let node = self.node_by_addr(hop);
        if let Some(r) = node
            && !self.nodes[r].up
        {
            return;
        }
        let hops = self.path_hops(sess, p, node.unwrap_or(0), false);
        self.send(
            hops,
            Dest::Client {
                sess,
                to,
                quic: false,
            },
            bytes,
        );
    }

    fn at_client(&mut self, sess: usize, to: SocketAddr, quic: bool, mut bytes: Vec<u8>) {
        let via = if quic {
            Via::Quic
        } else {
            match self.sessions[sess].sockets.iter().position(|s| *s == to) {
                Some(p) => Via::Path(p as u8),
                None => return,
            }
        };
        let now = self.now;
        let Some(d) = self.sessions[sess]
            .client
            .handle_datagram(now, via, &mut bytes)
        else {
            return;
        };
        let payload = d.payload.to_vec();
        self.game_client_receives(sess, &payload);
    }

    /// A game packet reaches session `sess`'s game (through PLG or directly).
    fn game_client_receives(&mut self, sess: usize, payload: &[u8]) {
        let now = self.now;
        let at_us = self.tick_us();
        let s = &mut self.sessions[sess];
        let Some(g) = s.game.as_mut() else {
            if payload.len() >= 8 {
                let seq = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                s.delivered.push((now, seq));
                if s.copies.len() <= seq as usize {
                    s.copies.resize(seq as usize + 1, 0);
                }
                s.copies[seq as usize] += 1;
            }
            return;
        };
        let Some(h) = tick::decode(payload) else {
            return;
        };
        match h.kind {
            tick::KIND_HELLO_ACK => g.acked = true,
            tick::KIND_TICK if self.armed.is_some() => {
                g.down.arrivals.push(Arrival { seq: h.seq, at_us });
                if h.echo_seq != tick::NO_ECHO
                    && let Some(e) = g.echoed.get_mut(h.echo_seq as usize)
                    && !*e
                {
                    *e = true;
                    let rt = at_us
                        .saturating_sub(h.echo_sent_us)
                        .saturating_sub(h.echo_hold_us);
                    g.rtt.push(RttSample {
                        at_us: h.echo_sent_us,
                        rtt_us: rt.max(1),
                    });
                }
            }
            _ => {}
        }
    }

    /// Microseconds on the tick game's clock (from the start of its traffic).
    fn tick_us(&self) -> u64 {
        self.armed.map_or(0, |a| {
            self.now.saturating_duration_since(a).as_micros() as u64
        })
    }

    /// A game packet reaches session `sess`'s game server, from `peer` (node, flow) or
    /// directly (`None`).
    fn game_server_receives(&mut self, sess: usize, peer: Option<(usize, u32)>, payload: Vec<u8>) {
        let at_us = self.tick_us();
        let armed = self.armed.is_some();
        let Some(g) = self.sessions[sess].game.as_mut() else {
            // The echo game: the server echoes after the exit → game leg.
            if let Some((node, flow)) = peer {
                self.game_leg(false, Dest::FromGame { node, sess, flow }, payload);
            }
            return;
        };
        let Some(h) = tick::decode(&payload) else {
            return;
        };
        match h.kind {
            tick::KIND_HELLO => {
                g.peer = peer;
                let mut out = Vec::new();
                tick::encode(
                    &tick::Header {
                        kind: tick::KIND_HELLO_ACK,
                        ..h
                    },
                    tick::HEADER_LEN,
                    &mut out,
                );
                self.server_send(sess, out);
            }
            tick::KIND_TICK if armed => {
                // Follow the node's flow if it changes (a new exit).
                g.peer = peer;
                g.up.arrivals.push(Arrival { seq: h.seq, at_us });
                if g.newest.is_none_or(|(s, _, _)| h.seq > s) {
                    g.newest = Some((h.seq, h.sent_us, at_us));
                }
            }
            _ => {}
        }
    }

    /// The game server sends `payload` to its peer.
    fn server_send(&mut self, sess: usize, payload: Vec<u8>) {
        if self.cfg.direct {
            let hops = self.direct_hops(sess, false);
            self.send(hops, Dest::DirectClient { sess }, payload);
            return;
        }
        let Some((node, flow)) = self.sessions[sess].game.as_ref().and_then(|g| g.peer) else {
            return;
        };
        self.game_leg(false, Dest::FromGame { node, sess, flow }, payload);
    }

    /// The game client sends `payload` (through its PLG client, or directly).
    fn game_send(&mut self, sess: usize, payload: Vec<u8>) {
        if self.cfg.direct {
            let hops = self.direct_hops(sess, true);
            self.send(hops, Dest::DirectServer { sess }, payload);
            return;
        }
        let now = self.now;
        let server = self.sessions[sess].server;
        self.sessions[sess]
            .client
            .handle_game(now, GAME, server, &payload);
        self.flush_client(sess);
    }

    fn game_reply(&mut self, node: usize, sess: usize, flow: u32, payload: Vec<u8>) {
        if !self.nodes[node].up {
            return;
        }
        let now = self.now;
        let Some(core) = self.nodes[node].sessions[sess].as_mut() else {
            return;
        };
        let Some(down) = core.handle_upstream(now, flow, &payload) else {
            return;
        };
        let mut copies = Vec::new();
        for (peer, path) in down.targets() {
            let mut buf = Vec::new();
            down.seal(path, &mut buf);
            copies.push((peer, buf));
        }
        for (peer, buf) in copies {
            self.send_to_client(sess, peer, buf);
        }
    }

    /// Control connection, keep-alives, expiry and renewal.
    fn housekeeping(&mut self) {
        let (now, unix) = (self.now, self.unix_now());
        for sess in 0..self.sessions.len() {
            let exit = self.exit_of(sess);
            let s = &mut self.sessions[sess];
            if now >= s.next_keepalive {
                s.next_keepalive = now + KEEP_ALIVE;
                if exit.is_some() {
                    s.control_rx += 1;
                }
            }
            s.client.handle_control(
                now,
                ControlStatus {
                    rx_packets: s.control_rx,
                    usable: exit.is_some(),
                    draining: false,
                },
            );
            if let Some(at) = s.renew_at
                && now >= at
            {
                // The controller's in-place renewal: a fresh ticket presented on the control
                // connection.
                s.ticket.issued_at = unix;
                s.ticket.expires_at = unix + self.cfg.ticket_ttl.as_secs();
                let ticket = s.ticket.clone();
                let renewed = exit.and_then(|e| {
                    self.nodes[e].sessions[sess]
                        .as_mut()
                        .map(|c| c.renew(ticket.clone()).is_ok())
                });
                let s = &mut self.sessions[sess];
                if renewed == Some(true) {
                    s.renewals += 1;
                }
                let next = plg_client::renew::renew_at(ticket.issued_at, ticket.expires_at);
                s.renew_at =
                    Some(now + Duration::from_secs(next - unix).max(Duration::from_secs(1)));
            }
        }
        for n in &mut self.nodes {
            for core in &mut n.sessions {
                if let Some(c) = core
                    && c.poll_expired(now, unix, NODE_IDLE)
                {
                    *core = None;
                    n.expired += 1;
                }
            }
        }
    }

    fn deliver(&mut self, p: Packet) {
        match p {
            Packet::Transit {
                hops,
                next,
                dest,
                bytes,
            } => self.transit(hops, next, dest, bytes),
            Packet::Arrive { dest, bytes } => match dest {
                Dest::Node { node, sess, from } => self.at_node(node, sess, from, bytes),
                Dest::Client { sess, to, quic } => self.at_client(sess, to, quic, bytes),
                Dest::Game { node, sess, flow } => {
                    self.game_server_receives(sess, Some((node, flow)), bytes)
                }
                Dest::FromGame { node, sess, flow } => self.game_reply(node, sess, flow, bytes),
                Dest::DirectServer { sess } => self.game_server_receives(sess, None, bytes),
                Dest::DirectClient { sess } => self.game_client_receives(sess, &bytes),
                Dest::Sink => {}
            },
            Packet::Cross { idx } => {
                let c = self.cfg.cross[idx].clone();
                if c.stop
                    .is_some_and(|stop| self.now >= self.epoch + self.lead + stop)
                {
                    return;
                }
                let link = self.segment_links[c.segment];
                for (on, up) in [(c.up, true), (c.down, false)] {
                    if on {
                        self.send(vec![Hop { link, up }], Dest::Sink, vec![0u8; c.size]);
                    }
                }
                self.push(self.now + c.period(), Packet::Cross { idx });
            }
        }
    }

    /// Runs for `length`, session 0's game sending one sequence-numbered packet every
    /// `every` (if any); other sessions idle.
    pub fn run(&mut self, length: Duration, every: Option<Duration>) {
        self.run_from(length, every, |_| GAME);
    }

    /// [`VirtualNet::run`] with the game sending packet `n` from `source(n)` (many flows).
    pub fn run_from(
        &mut self,
        length: Duration,
        every: Option<Duration>,
        source: impl Fn(u64) -> SocketAddr,
    ) {
        let end = self.now + length;
        let mut next_game = self.now;
        self.drive(end, |net| {
            let e = every?;
            if net.now >= next_game {
                let s = &mut net.sessions[0];
                let mut pkt = [0u8; 64];
                pkt[..8].copy_from_slice(&s.next_seq.to_be_bytes());
                s.next_seq += 1;
                let from = source(s.next_seq - 1);
                let (now, server) = (net.now, s.server);
                s.client.handle_game(now, from, server, &pkt);
                next_game += e;
            }
            Some(next_game)
        });
    }

    /// The event loop until `end`; `game` runs the game's timers and returns when it next
    /// wants to run.
    fn drive(&mut self, end: Instant, mut game: impl FnMut(&mut VirtualNet) -> Option<Instant>) {
        let mut next_house = self.now;
        let mut next_game = Some(self.now);
        loop {
            for s in 0..self.sessions.len() {
                self.flush_client(s);
            }
            let mut t = end.min(next_house);
            for s in &self.sessions {
                t = t.min(s.client.poll_timeout());
            }
            if let Some(Reverse((at, _, _))) = self.queue.peek() {
                t = t.min(*at);
            }
            if let Some(g) = next_game {
                t = t.min(g);
            }
            if let (Some(a), Some(&(at, _, _))) = (self.armed, self.node_events.first()) {
                t = t.min(a + at);
            }
            self.now = t.max(self.now);
            while let (Some(a), Some(&(at, node, kill))) = (self.armed, self.node_events.first())
                && a + at <= self.now
            {
                self.node_events.remove(0);
                let n = &mut self.nodes[node];
                n.up = !kill;
                if kill {
                    n.sessions.iter_mut().for_each(|s| *s = None);
                }
            }
            if next_game.is_some_and(|g| self.now >= g) {
                next_game = game(self);
            }
            while let Some(Reverse((at, _, _))) = self.queue.peek()
                && *at <= self.now
            {
                let Reverse((_, _, p)) = self.queue.pop().expect("peeked");
                self.deliver(p);
                for s in 0..self.sessions.len() {
                    self.flush_client(s);
                }
            }
            if self.now >= next_house {
                next_house = self.now + Duration::from_millis(50);
                self.housekeeping();
            }
            for s in 0..self.sessions.len() {
                if self.now >= self.sessions[s].client.poll_timeout() {
                    let now = self.now;
                    self.sessions[s].client.handle_timeout(now);
                }
            }
            if self.now >= end {
                for s in 0..self.sessions.len() {
                    self.flush_client(s);
                }
                break;
            }
        }
    }

    /// Plays the tick game ([`GameMode::Ticks`]) in every session: a warm-up (hellos every
    /// 20 ms until every game has heard its server through the route), then, [`WARM_UP`]
    /// after the network started, both streams for the spec's duration plus its drain. The
    /// scenario clock starts with the streams. Returns session `s`'s trace at index `s`.
    pub fn play(&mut self) -> Result<Vec<PairTrace>, String> {
        let GameMode::Ticks(spec) = self.cfg.game else {
            return Err("the network was not built for the tick game".into());
        };
        // Warm-up.
        let limit = self.epoch + WARM_UP;
        self.drive(limit, |net| {
            if net
                .sessions
                .iter()
                .all(|s| s.game.as_ref().is_some_and(|g| g.acked))
            {
                return None;
            }
            let mut next = None::<Instant>;
            for sess in 0..net.sessions.len() {
                let g = net.sessions[sess].game.as_mut().expect("tick game");
                if g.acked {
                    continue;
                }
                if net.now >= g.next_hello {
                    g.next_hello = net.now + tick::HELLO_INTERVAL;
                    let mut out = Vec::new();
                    tick::encode(
                        &tick::Header {
                            run: 1,
                            kind: tick::KIND_HELLO,
                            seq: 0,
                            sent_us: 0,
                            echo_seq: tick::NO_ECHO,
                            echo_sent_us: 0,
                            echo_hold_us: 0,
                        },
                        tick::HEADER_LEN,
                        &mut out,
                    );
                    net.game_send(sess, out);
                }
                let g = net.sessions[sess].game.as_ref().expect("tick game");
                next = Some(next.map_or(g.next_hello, |n: Instant| n.min(g.next_hello)));
            }
            next
        });
        if let Some(s) = self
            .sessions
            .iter()
            .position(|s| !s.game.as_ref().is_some_and(|g| g.acked))
        {
            return Err(format!(
                "session {s}: no answer from the game server within {WARM_UP:?} (warm-up)"
            ));
        }
        // Traffic.
        let epoch = self.now;
        self.armed = Some(epoch);
        let interval = spec.interval();
        let total = spec.total();
        let end = epoch + spec.duration + spec.drain;
        self.drive(end, |net| {
            let mut next = None::<Instant>;
            for sess in 0..net.sessions.len() {
                loop {
                    let g = net.sessions[sess].game.as_mut().expect("tick game");
                    let up_at = epoch + interval.mul_f64(g.k_up as f64);
                    let down_at = epoch + interval.mul_f64(g.k_down as f64);
                    let at_us = (net.now - epoch).as_micros() as u64;
                    if g.k_up < total && net.now >= up_at {
                        let size = TickGame::size(&mut g.client_rng, &spec);
                        let h = tick::Header {
                            run: 1,
                            kind: tick::KIND_TICK,
                            seq: g.k_up,
                            sent_us: at_us,
                            echo_seq: tick::NO_ECHO,
                            echo_sent_us: 0,
                            echo_hold_us: 0,
                        };
                        g.up.sent[g.k_up as usize] = Some(Sent {
                            at_us,
                            size: size as u32,
                        });
                        g.k_up += 1;
                        let mut out = Vec::new();
                        tick::encode(&h, size, &mut out);
                        net.game_send(sess, out);
                    } else if g.k_down < total && net.now >= down_at {
                        let size = TickGame::size(&mut g.server_rng, &spec);
                        let (echo_seq, echo_sent_us, echo_hold_us) = match g.newest {
                            Some((s, sent_us, got_us)) => {
                                (s, sent_us, at_us.saturating_sub(got_us))
                            }
                            None => (tick::NO_ECHO, 0, 0),
                        };
                        let h = tick::Header {
                            run: 1,
                            kind: tick::KIND_TICK,
                            seq: g.k_down,
                            sent_us: at_us,
                            echo_seq,
                            echo_sent_us,
                            echo_hold_us,
                        };
                        // Not sent (no peer yet) is not recorded as sent.
                        if g.peer.is_some() || net.cfg.direct {
                            g.down.sent[g.k_down as usize] = Some(Sent {
                                at_us,
                                size: size as u32,
                            });
                        }
                        g.k_down += 1;
                        let mut out = Vec::new();
                        tick::encode(&h, size, &mut out);
                        net.server_send(sess, out);
                    } else {
                        let mut n = None::<Instant>;
                        if g.k_up < total {
                            n = Some(up_at);
                        }
                        if g.k_down < total {
                            n = Some(n.map_or(down_at, |x| x.min(down_at)));
                        }
                        if let Some(n) = n {
                            next = Some(next.map_or(n, |x: Instant| x.min(n)));
                        }
                        break;
                    }
                }
            }
            next
        });
        Ok(self
            .sessions
            .iter_mut()
            .map(|s| {
                let g = s.game.as_mut().expect("tick game");
                PairTrace {
                    up: std::mem::take(&mut g.up),
                    down: std::mem::take(&mut g.down),
                    rtt: std::mem::take(&mut g.rtt),
                }
            })
            .collect())
    }

    /// What session `sess`'s path `p` link saw.
    pub fn path_report(&self, sess: usize, p: usize) -> LinkReport {
        self.links[self.sessions[sess].path_links[p]].report(self.lead)
    }

    /// What the link to `node` after a failover saw (session `sess`), if it has its own.
    pub fn backup_report(&self, sess: usize, node: usize) -> Option<LinkReport> {
        let (l, _) = self.sessions[sess].backup_links.get(node)?.as_ref()?;
        Some(self.links[*l].report(self.lead))
    }

    /// What shared segment `i` saw (every session's traffic and the cross traffic).
    pub fn segment_report(&self, i: usize) -> LinkReport {
        self.links[self.segment_links[i]].report(self.lead)
    }

    /// Session 0's game packets sent so far (echo game).
    pub fn sent(&self) -> u64 {
        self.sessions[0].next_seq
    }

    /// Session 0's sequence numbers below `upto` that were sent but never delivered.
    pub fn lost(&self, upto: u64) -> u64 {
        let c = &self.sessions[0].copies;
        (0..upto)
            .filter(|&s| c.get(s as usize).copied().unwrap_or(0) == 0)
            .count() as u64
    }

    /// Session 0's sequence numbers delivered more than once.
    pub fn doubled(&self) -> u64 {
        self.sessions[0].copies.iter().filter(|&&c| c > 1).count() as u64
    }

    /// The longest time between two deliveries to session 0's game in `[from, to)` (network
    /// time).
    pub fn longest_gap(&self, from: Duration, to: Duration) -> Duration {
        let mut last = self.epoch + from;
        let mut longest = Duration::ZERO;
        for &(at, _) in &self.sessions[0].delivered {
            if at < self.epoch + from || at >= self.epoch + to {
                continue;
            }
            longest = longest.max(at - last);
            last = at;
        }
        longest.max((self.epoch + to).saturating_duration_since(last))
    }
}
