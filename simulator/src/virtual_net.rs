//! A deterministic virtual network: the client's session engine
//! ([`plg_client::conn::ClientConn`]) and the nodes' per-session cores
//! ([`plg_node::core::SessionCore`]) exchange real sealed frames through seeded
//! [`Impairer`]s on a virtual clock — no sockets, no sleeping, no threads — in the manner of
//! quinn-proto's test `Pair`. Minutes of a session run in milliseconds of wall time, so
//! failover, renewal at expiry, roaming, protected mode and relay loss are tested exactly and
//! repeatably.
//!
//! What is modelled: each client path is one link (its own up and down [`Impairer`]) to its
//! first hop — the exit's data port, or a relay that forwards to whichever node holds the
//! session (the mesh's job, reduced to a lookup); the control connection is a clean link to
//! the exit that carries protected-mode datagrams and keep-alives; the game server echoes
//! after a fixed exit→game delay. Nodes can be killed, links blackholed, UDP blocked, the
//! client's address changed. What is not: QUIC handshakes (a failover opens the session on
//! the chosen node at once, with fresh keys), the mesh's gossip, the nodes' sockets.

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

use crate::link::{Decision, Impairer, Impairment, ScheduledChange};

/// The session id every virtual session uses.
pub const SESSION_ID: u64 = 0x5e55_1011;
/// The game server (behind every exit).
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

/// One virtual node.
#[derive(Debug)]
pub struct VNode {
    /// What the client knows of it.
    pub info: NodeInfo,
    /// Running (false: killed, drops everything).
    pub up: bool,
    /// The session, if this node holds it.
    session: Option<SessionCore<SocketAddr, ()>>,
    /// Sessions this node lost to expiry (ticket or idle).
    pub expired: u32,
}

/// Settings of a virtual network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Nodes (ids `n0`, `n1`, ...); node 0 is the first exit.
    pub nodes: usize,
    /// For each client path, the node relaying it (`None`: straight to the exit).
    pub relays: Vec<Option<usize>>,
    /// One impairment per path, both directions.
    pub impairment: Impairment,
    /// Exit → game server one-way delay.
    pub game_delay: Duration,
    /// Ticket lifetime; renewed in place at [`plg_client::renew::renew_at`] when `renew`.
    pub ticket_ttl: Duration,
    /// Renew tickets (the controller's job).
    pub renew: bool,
    /// The session engine's settings.
    pub conn: ConnConfig,
    /// Seed of every impairer.
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
            game_delay: Duration::from_millis(5),
            ticket_ttl: Duration::from_secs(7200),
            renew: true,
            conn: ConnConfig::default(),
            seed: 1,
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Packet {
    /// A client datagram arriving at `node` (the path's first hop).
    ToNode {
        node: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A node datagram arriving at the client socket `to` (or over QUIC).
    ToClient {
        to: SocketAddr,
        quic: bool,
        bytes: Vec<u8>,
    },
    /// A payload arriving at the game server from `node`'s flow.
    ToGame {
        node: usize,
        flow: u32,
        payload: Vec<u8>,
    },
    /// The game server's answer arriving at `node`'s flow socket.
    FromGame {
        node: usize,
        flow: u32,
        payload: Vec<u8>,
    },
}

/// The network and everything in it.
#[derive(Debug)]
pub struct VirtualNet {
    /// Virtual now.
    pub now: Instant,
    epoch: Instant,
    unix0: u64,
    cfg: NetConfig,
    /// The client's engine.
    pub client: ClientConn,
    /// The nodes.
    pub nodes: Vec<VNode>,
    /// Each path's client socket (source address).
    sockets: Vec<SocketAddr>,
    client_ip: IpAddr,
    next_port: u16,
    up: Vec<Impairer>,
    down: Vec<Impairer>,
    queue: BinaryHeap<Reverse<(Instant, u64, Packet)>>,
    order: u64,
    /// UDP between the client and every node is blocked (the control connection is not).
    pub udp_blocked: bool,
    control_rx: u64,
    next_keepalive: Instant,
    renew_at: Option<Instant>,
    ticket: Ticket,
    keys_generation: u8,
    /// Game sequence numbers delivered back to the game, with their arrival time.
    pub delivered: Vec<(Instant, u64)>,
    /// Copies of each sequence number delivered (index = sequence number).
    pub copies: Vec<u32>,
    /// Events the engine raised.
    pub events: Vec<(Instant, ProxyEvent)>,
    /// I/O the engine asked for.
    pub actions: Vec<(Instant, Action)>,
    /// Renewals done (in place).
    pub renewals: u32,
    next_seq: u64,
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

fn keys(generation: u8) -> [u8; KEYING_MATERIAL_LEN] {
    [generation.wrapping_add(1); KEYING_MATERIAL_LEN]
}

impl VirtualNet {
    /// A network with the session open on node 0.
    pub fn new(cfg: NetConfig) -> VirtualNet {
        let now = Instant::now();
        let unix0 = 1_700_000_000;
        let nodes: Vec<VNode> = (0..cfg.nodes)
            .map(|i| VNode {
                info: node_info(i),
                up: true,
                session: None,
                expired: 0,
            })
            .collect();
        let paths = cfg.relays.len().max(1);
        let ticket = Ticket {
            key_id: 1,
            issued_at: unix0,
            expires_at: unix0 + cfg.ticket_ttl.as_secs(),
            session_id: SESSION_ID,
            account_id: 1,
            plan: 1,
            game_id: 1,
            path_limit: paths as u8,
            bandwidth_kbps: 0,
            destinations: vec![
                format!("{}/32:{}", GAME_SERVER.ip(), GAME_SERVER.port())
                    .parse()
                    .expect("literal destination"),
            ],
        };
        let exit = node_info(0);
        let path_addrs: Vec<SocketAddr> = (0..paths)
            .map(|p| match cfg.relays.get(p).copied().flatten() {
                Some(r) => node_info(r).data_addr.parse().expect("literal"),
                None => exit.data_addr.parse().expect("literal"),
            })
            .collect();
        let route = Route {
            backup: "n1".into(),
            data_addr: exit.data_addr.parse().expect("literal"),
            path_addrs,
            relays: cfg
                .relays
                .iter()
                .map(|r| r.map(|r| format!("n{r}")))
                .collect(),
            candidates: (1..cfg.nodes).map(node_info).collect(),
            node: exit,
        };
        let client = ClientConn::new(
            now,
            Session::new(Role::Client, SESSION_ID, &keys(0)),
            route,
            paths as u8,
            cfg.conn,
            Arc::new(ProxyStats::default()),
        )
        .expect("path count within the ticket");
        let client_ip = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10));
        let sockets = (0..paths)
            .map(|p| SocketAddr::new(client_ip, 40_000 + p as u16))
            .collect();
        let up = (0..paths)
            .map(|p| {
                Impairer::new(
                    crate::link::derive_seed(cfg.seed, 2 * p as u64),
                    cfg.impairment.clone(),
                    vec![],
                )
            })
            .collect();
        let down = (0..paths)
            .map(|p| {
                Impairer::new(
                    crate::link::derive_seed(cfg.seed, 2 * p as u64 + 1),
                    cfg.impairment.clone(),
                    vec![],
                )
            })
            .collect();
        let renew_at = cfg.renew.then(|| {
            let at = plg_client::renew::renew_at(ticket.issued_at, ticket.expires_at);
            now + Duration::from_secs(at - unix0)
        });
        let mut net = VirtualNet {
            now,
            epoch: now,
            unix0,
            client,
            nodes,
            sockets,
            client_ip,
            next_port: 41_000,
            up,
            down,
            queue: BinaryHeap::new(),
            order: 0,
            udp_blocked: false,
            control_rx: 0,
            next_keepalive: now,
            renew_at,
            ticket: ticket.clone(),
            keys_generation: 0,
            delivered: Vec::new(),
            copies: Vec::new(),
            events: Vec::new(),
            actions: Vec::new(),
            renewals: 0,
            cfg,
            next_seq: 0,
        };
        net.nodes[0].session = Some(SessionCore::new(
            Session::new(Role::Node, SESSION_ID, &keys(0)),
            ticket,
            now,
        ));
        net
    }

    /// Time since the network started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    fn unix_now(&self) -> u64 {
        self.unix0 + self.elapsed().as_secs()
    }

    /// Blackholes path `path` both ways from `from` to `until` (network time).
    pub fn blackhole(&mut self, path: usize, from: Duration, until: Duration) {
        for imp in [&mut self.up[path], &mut self.down[path]] {
            *imp = Impairer::new(
                crate::link::derive_seed(self.cfg.seed, 100 + path as u64),
                self.cfg.impairment.clone(),
                vec![ScheduledChange::Blackhole { from, until }],
            );
        }
    }

    /// Replaces path `path`'s impairment (both ways) from now on.
    pub fn impair(&mut self, path: usize, imp: Impairment, seed: u64) {
        self.up[path] = Impairer::new(seed, imp.clone(), vec![]);
        self.down[path] = Impairer::new(seed ^ 0xd0, imp, vec![]);
    }

    /// The client's network changes (Wi-Fi → Ethernet): every socket now sends from `ip`;
    /// datagrams to the old address are lost.
    pub fn move_client(&mut self, ip: IpAddr) {
        self.client_ip = ip;
        for s in &mut self.sockets {
            s.set_ip(ip);
        }
    }

    /// Which node holds the session now (the exit).
    pub fn exit(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.up && n.session.is_some())
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

    fn at(&self) -> Duration {
        self.elapsed()
    }

    /// Puts `bytes` through path `p`'s impairment (`up`: client → node), queueing what
    /// arrives (and a duplicate, if the link makes one) as `packet(bytes)`.
    fn impaired(&mut self, up: bool, p: usize, packet: impl Fn(Vec<u8>) -> Packet, bytes: Vec<u8>) {
        let at = self.at();
        let link = if up {
            &mut self.up[p]
        } else {
            &mut self.down[p]
        };
        if let Decision::Deliver {
            delay,
            duplicate,
            corrupt,
        } = link.decide(at, bytes.len())
        {
            if let Some(d) = duplicate {
                self.push(self.now + d, packet(bytes.clone()));
            }
            let mut bytes = bytes;
            if let Some(c) = corrupt {
                c.apply(&mut bytes);
            }
            self.push(self.now + delay, packet(bytes));
        }
    }

    /// Sends what the client queued.
    fn flush_client(&mut self) {
        while let Some(Transmit { via, bytes }) = self.client.poll_transmit() {
            match via {
                Via::Quic => {
                    // The control connection: straight to the exit, never lost.
                    if let Some(node) = self.exit() {
                        let at = self.now
                            + Duration::from_secs_f64(self.cfg.impairment.delay_ms / 1000.0);
                        self.push(
                            at,
                            Packet::ToNode {
                                node,
                                from: BRIDGE,
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
                    let to = self.client.path_addrs()[p];
                    let Some(node) = self.node_by_addr(to) else {
                        continue;
                    };
                    let from = self.sockets[p];
                    self.impaired(true, p, |bytes| Packet::ToNode { node, from, bytes }, bytes);
                }
            }
        }
        while let Some(a) = self.client.poll_action() {
            self.actions.push((self.now, a.clone()));
            match a {
                Action::OpenPath { path, .. } => {
                    self.next_port += 1;
                    self.sockets[path as usize] = SocketAddr::new(self.client_ip, self.next_port);
                }
                Action::Rebind => {
                    for s in &mut self.sockets {
                        self.next_port += 1;
                        *s = SocketAddr::new(self.client_ip, self.next_port);
                    }
                }
                Action::FailOver { candidates } => self.fail_over(candidates),
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push((self.now, e));
        }
    }

    /// Opens the session on the first live candidate with fresh keys (the QUIC handshake is
    /// not modelled), as the driver would.
    fn fail_over(&mut self, candidates: Vec<NodeInfo>) {
        let pick = candidates
            .iter()
            .find_map(|c| self.nodes.iter().position(|n| n.info.id == c.id && n.up));
        let Some(i) = pick else {
            self.client
                .handle_failover_failed(self.now, "no candidate answered".into());
            return;
        };
        // A node verifies the ticket: an expired one is refused everywhere.
        if self.ticket.expires_at <= self.unix_now() {
            self.client
                .handle_failover_failed(self.now, "the ticket expired".into());
            return;
        }
        self.keys_generation += 1;
        let k = keys(self.keys_generation);
        // The mesh: the old exit lets the session go when another node adopts it.
        for n in &mut self.nodes {
            n.session = None;
        }
        self.nodes[i].session = Some(SessionCore::new(
            Session::new(Role::Node, SESSION_ID, &k),
            self.ticket.clone(),
            self.now,
        ));
        let backup = self
            .nodes
            .iter()
            .find(|n| n.up && n.info.id != self.nodes[i].info.id)
            .map(|n| n.info.id.clone())
            .unwrap_or_default();
        let info = self.nodes[i].info.clone();
        let data = info.data_addr.parse().expect("literal");
        self.client.handle_switched(
            self.now,
            info,
            Session::new(Role::Client, SESSION_ID, &k),
            data,
            backup,
        );
    }

    /// A datagram at `node` from the client socket `from`.
    fn at_node(&mut self, node: usize, from: SocketAddr, mut bytes: Vec<u8>) {
        if !self.nodes[node].up {
            return;
        }
        // A relay: forward to the node holding the session (the mesh's lookup).
        if self.nodes[node].session.is_none() {
            if from == BRIDGE {
                return;
            }
            if let Some(exit) = self.exit() {
                self.push(
                    self.now,
                    Packet::ToNode {
                        node: exit,
                        from,
                        bytes,
                    },
                );
            }
            return;
        }
        let now = self.now;
        let mut out = Vec::new();
        let core = self.nodes[node].session.as_mut().expect("checked");
        match core.handle_client(now, &mut bytes, from, |_| true, &mut out) {
            ClientOutcome::Forward { flow, payload, .. } => {
                let payload = payload.to_vec();
                self.push(
                    now + self.cfg.game_delay,
                    Packet::ToGame {
                        node,
                        flow,
                        payload,
                    },
                );
            }
            ClientOutcome::OpenFlow { flow, dst, .. } => {
                core.flow_opened(flow, dst, (), now);
            }
            ClientOutcome::Reply { to: Some(to), .. } => self.send_to_client(to, out),
            ClientOutcome::Closed { .. } => self.nodes[node].session = None,
            _ => {}
        }
    }

    /// A node datagram towards the client address `to` (a path socket or the bridge).
    fn send_to_client(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        if to == BRIDGE {
            let at = self.now + Duration::from_secs_f64(self.cfg.impairment.delay_ms / 1000.0);
            self.push(
                at,
                Packet::ToClient {
                    to,
                    quic: true,
                    bytes,
                },
            );
            return;
        }
        if self.udp_blocked {
            return;
        }
        // The path whose socket this is (a stale address is simply lost).
        let Some(p) = self.sockets.iter().position(|s| *s == to) else {
            return;
        };
        // A relayed path's downstream goes through its relay.
        let hop = self.client.path_addrs()[p];
        if let Some(r) = self.node_by_addr(hop)
            && !self.nodes[r].up
        {
            return;
        }
        self.impaired(
            false,
            p,
            |bytes| Packet::ToClient {
                to,
                quic: false,
                bytes,
            },
            bytes,
        );
    }

    fn at_client(&mut self, to: SocketAddr, quic: bool, mut bytes: Vec<u8>) {
        let via = if quic {
            Via::Quic
        } else {
            match self.sockets.iter().position(|s| *s == to) {
                Some(p) => Via::Path(p as u8),
                None => return,
            }
        };
        if let Some(d) = self.client.handle_datagram(self.now, via, &mut bytes)
            && d.payload.len() >= 8
        {
            let seq = u64::from_be_bytes(d.payload[..8].try_into().expect("8 bytes"));
            self.delivered.push((self.now, seq));
            if self.copies.len() <= seq as usize {
                self.copies.resize(seq as usize + 1, 0);
            }
            self.copies[seq as usize] += 1;
        }
    }

    fn game_reply(&mut self, node: usize, flow: u32, payload: Vec<u8>) {
        if !self.nodes[node].up {
            return;
        }
        let now = self.now;
        let Some(core) = self.nodes[node].session.as_mut() else {
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
            self.send_to_client(peer, buf);
        }
    }

    /// Control connection, keep-alives, expiry and renewal.
    fn housekeeping(&mut self) {
        let exit = self.exit();
        if self.now >= self.next_keepalive {
            self.next_keepalive = self.now + KEEP_ALIVE;
            if exit.is_some() {
                self.control_rx += 1;
            }
        }
        self.client.handle_control(
            self.now,
            ControlStatus {
                rx_packets: self.control_rx,
                usable: exit.is_some(),
                draining: false,
            },
        );
        let (now, unix) = (self.now, self.unix_now());
        for n in &mut self.nodes {
            if let Some(core) = &n.session
                && core.poll_expired(now, unix, NODE_IDLE)
            {
                n.session = None;
                n.expired += 1;
            }
        }
        if let Some(at) = self.renew_at
            && self.now >= at
        {
            // The controller's in-place renewal: a fresh ticket presented on the control
            // connection.
            self.ticket.issued_at = unix;
            self.ticket.expires_at = unix + self.cfg.ticket_ttl.as_secs();
            let renewed = exit.and_then(|e| {
                self.nodes[e]
                    .session
                    .as_mut()
                    .map(|c| c.renew(self.ticket.clone()).is_ok())
            });
            if renewed == Some(true) {
                self.renewals += 1;
            }
            let next = plg_client::renew::renew_at(self.ticket.issued_at, self.ticket.expires_at);
            self.renew_at =
                Some(self.now + Duration::from_secs(next - unix).max(Duration::from_secs(1)));
        }
    }

    /// Runs for `length`, the game sending one sequence-numbered packet every `every` (if
    /// any).
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
        let mut next_house = self.now;
        loop {
            self.flush_client();
            let mut t = end.min(self.client.poll_timeout()).min(next_house);
            if let Some(Reverse((at, _, _))) = self.queue.peek() {
                t = t.min(*at);
            }
            if every.is_some() {
                t = t.min(next_game);
            }
            if t >= end && self.now >= end {
                break;
            }
            self.now = t.max(self.now);
            if let Some(e) = every
                && self.now >= next_game
            {
                let mut pkt = [0u8; 64];
                pkt[..8].copy_from_slice(&self.next_seq.to_be_bytes());
                self.next_seq += 1;
                let from = source(self.next_seq - 1);
                self.client.handle_game(self.now, from, GAME_SERVER, &pkt);
                next_game += e;
            }
            while let Some(Reverse((at, _, _))) = self.queue.peek()
                && *at <= self.now
            {
                let Reverse((_, _, p)) = self.queue.pop().expect("peeked");
                match p {
                    Packet::ToNode { node, from, bytes } => self.at_node(node, from, bytes),
                    Packet::ToClient { to, quic, bytes } => self.at_client(to, quic, bytes),
                    Packet::ToGame {
                        node,
                        flow,
                        payload,
                    } => {
                        // The game server echoes.
                        self.push(
                            self.now + self.cfg.game_delay,
                            Packet::FromGame {
                                node,
                                flow,
                                payload,
                            },
                        );
                    }
                    Packet::FromGame {
                        node,
                        flow,
                        payload,
                    } => self.game_reply(node, flow, payload),
                }
                self.flush_client();
            }
            if self.now >= next_house {
                next_house = self.now + Duration::from_millis(50);
                self.housekeeping();
            }
            if self.now >= self.client.poll_timeout() {
                self.client.handle_timeout(self.now);
            }
            if self.now >= end {
                self.flush_client();
                break;
            }
        }
    }

    /// Game packets sent so far.
    pub fn sent(&self) -> u64 {
        self.next_seq
    }

    /// Sequence numbers below `upto` that were sent but never delivered.
    pub fn lost(&self, upto: u64) -> u64 {
        (0..upto)
            .filter(|&s| self.copies.get(s as usize).copied().unwrap_or(0) == 0)
            .count() as u64
    }

    /// Sequence numbers delivered more than once.
    pub fn doubled(&self) -> u64 {
        self.copies.iter().filter(|&&c| c > 1).count() as u64
    }

    /// The longest time between two deliveries to the game in `[from, to)` (network time).
    pub fn longest_gap(&self, from: Duration, to: Duration) -> Duration {
        let mut last = self.epoch + from;
        let mut longest = Duration::ZERO;
        for &(at, _) in &self.delivered {
            if at < self.epoch + from || at >= self.epoch + to {
                continue;
            }
            longest = longest.max(at - last);
            last = at;
        }
        longest.max((self.epoch + to).saturating_duration_since(last))
    }
}
