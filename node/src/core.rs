//! The node's per-session state machine, sans-IO: what to do with one session's client
//! frames and game-server replies, with no socket and no clock (`now` is passed in), in the
//! shape of quinn-proto. The data plane (`dataplane.rs`) is its driver: it owns the sockets,
//! the epoll tokens, the mesh envelope, the metrics and the batching, routes each datagram to
//! its session's [`SessionCore`] and carries out the returned [`ClientOutcome`]. The
//! simulator drives the same core in virtual time.
//!
//! A session here is: its [`Session`] keys and replay window, its [`Ticket`] (destinations,
//! path limit, expiry), the client address of each path (learned from authenticated frames
//! only, so a forged datagram never moves a path), the PATHS downstream mask, and its open
//! flows (id, destination, last activity, and the driver's handle for the upstream socket).
//!
//! Nothing here allocates per packet: replies are sealed into a buffer the driver lends, and
//! downstream copies into buffers the driver picks per peer ([`Downstream::seal`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plg_proto::frame::{Frame, Header};
use plg_proto::session::OpenError;
use plg_proto::{ErrorCode, Session, Ticket};

/// Most flows one session may have open at once.
pub const MAX_FLOWS_PER_SESSION: usize = 64;
/// With every flow slot taken, a new FLOW_OPEN closes the least recently used flow if it has
/// been quiet this long (the client gives up the same flow after the same time); otherwise
/// the new flow is refused with TOO_MANY_FLOWS.
pub const FLOW_EVICT_AFTER: Duration = Duration::from_secs(5);

/// Why a client datagram was dropped without an answer (each is a metrics counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The header names a path beyond the ticket's path limit.
    Path,
    /// The AEAD tag does not verify (forged, corrupted, another session's key).
    Auth,
    /// A replay or a duplicate (including the same frame's copy from another path).
    Replay,
    /// The header or body does not parse.
    Malformed,
}

/// What a reply sealed by the core answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// PONG to a PING.
    Pong,
    /// ERROR `code` about `flow` (DATA on an unknown flow, a refused FLOW_OPEN).
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// The flow concerned.
        flow: u32,
    },
}

/// Where and how an answer to one client frame may go: the frame's source and path, and its
/// size (anti-amplification: an answer is never larger than the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo<P> {
    to: P,
    path: u8,
    max_len: usize,
}

impl<P: Copy> ReplyTo<P> {
    /// Where the request came from.
    pub fn to(&self) -> P {
        self.to
    }

    /// The path it came on.
    pub fn path(&self) -> u8 {
        self.path
    }
}

/// What the driver must do with a client datagram handed to [`SessionCore::handle_client`].
#[derive(Debug, PartialEq, Eq)]
pub enum ClientOutcome<'a, P, F> {
    /// Dropped; nothing to send.
    Dropped(DropReason),
    /// Send `payload` on the flow's upstream socket (`upstream` is the driver's handle).
    Forward {
        /// Flow id.
        flow: u32,
        /// The handle given to [`SessionCore::flow_opened`].
        upstream: F,
        /// The game payload, decrypted in place in the datagram.
        payload: &'a [u8],
    },
    /// A new flow the ticket and the policy allow: the driver opens an upstream socket, then
    /// calls [`SessionCore::flow_opened`] or, if it can't, [`SessionCore::flow_failed`].
    OpenFlow {
        /// Flow id chosen by the client.
        flow: u32,
        /// The game server.
        dst: SocketAddr,
        /// For [`SessionCore::flow_failed`]'s error reply.
        reply: ReplyTo<P>,
        /// A quiet flow the core gave up to make room (every slot was taken): the driver
        /// closes its upstream socket.
        evicted: Option<(u32, F)>,
    },
    /// The core sealed an answer into `out`; send it to `to`, or nothing when `to` is `None`
    /// (the answer would have been larger than the request).
    Reply {
        /// The request's source, if the answer may go.
        to: Option<P>,
        /// What the answer is.
        kind: ReplyKind,
    },
    /// The client closed the session: the driver forgets it and closes its flows.
    Closed {
        /// Reason code from the CLOSE frame (informational).
        reason: u16,
    },
    /// Authenticated and handled; nothing to send (PONG, PATHS, ERROR from the client, a
    /// repeated FLOW_OPEN).
    Nothing,
}

/// The data plane can't renew the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenewRefused {
    /// The session ended (idle, expired or closed) before the renewal arrived.
    #[error("the session is no longer open on this node; start a new one")]
    Gone,
    /// The new ticket is for another account.
    #[error("the renewed ticket belongs to another account")]
    OtherAccount,
}

#[derive(Debug)]
struct FlowState<F> {
    dst: SocketAddr,
    upstream: F,
    last_active: Instant,
}

/// One session on the node: `P` says where a path's frames come from (the node's `Peer`, or
/// any address type in a simulation), `F` is the driver's handle for a flow's upstream socket.
#[derive(Debug)]
pub struct SessionCore<P, F = ()> {
    session: Session,
    ticket: Ticket,
    /// Client address per path, learned from authenticated frames only.
    paths: Vec<Option<P>>,
    last_path: u8,
    /// Paths the client wants downstream frames on (bit i = path i); 0 = `last_path` only.
    downstream: u8,
    flows: HashMap<u32, FlowState<F>>,
    last_seen: Instant,
}

impl<P: Copy + Eq + Debug, F: Copy> SessionCore<P, F> {
    /// A session installed at `now` from its node-role [`Session`] and verified ticket.
    pub fn new(session: Session, ticket: Ticket, now: Instant) -> Self {
        SessionCore {
            session,
            paths: vec![None; ticket.path_limit.max(1) as usize],
            ticket,
            last_path: 0,
            downstream: 0,
            flows: HashMap::new(),
            last_seen: now,
        }
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.session.id()
    }

    /// The ticket in force (the latest renewal).
    pub fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// The client address learned for `path`, if any.
    pub fn path_peer(&self, path: u8) -> Option<P> {
        self.paths.get(path as usize).copied().flatten()
    }

    /// Open flows with their upstream handles (to close them with the session).
    pub fn flows(&self) -> impl Iterator<Item = (u32, F)> + '_ {
        self.flows.iter().map(|(&id, f)| (id, f.upstream))
    }

    /// A client datagram for this session, from `from`. It is authenticated and decrypted in
    /// place; answers (PONG, ERROR) are sealed into `out`. `allow` is the node's own
    /// destination policy, checked on top of the ticket's destinations.
    pub fn handle_client<'a>(
        &mut self,
        now: Instant,
        datagram: &'a mut [u8],
        from: P,
        allow: impl FnOnce(SocketAddr) -> bool,
        out: &mut Vec<u8>,
    ) -> ClientOutcome<'a, P, F> {
        match Header::decode(datagram) {
            Ok(h) if h.path as usize >= self.paths.len() => {
                return ClientOutcome::Dropped(DropReason::Path);
            }
            Ok(_) => {}
            Err(_) => return ClientOutcome::Dropped(DropReason::Malformed),
        }
        let request_len = datagram.len();
        let (h, frame) = match self.session.open(datagram) {
            Ok(x) => x,
            Err(OpenError::Auth | OpenError::WrongSession) => {
                return ClientOutcome::Dropped(DropReason::Auth);
            }
            Err(OpenError::Replay(_)) => return ClientOutcome::Dropped(DropReason::Replay),
            Err(OpenError::Decode(_)) => return ClientOutcome::Dropped(DropReason::Malformed),
        };
        // Authenticated: only now may the frame's source become the path's address.
        self.paths[h.path as usize] = Some(from);
        self.last_path = h.path;
        self.last_seen = now;
        let reply = ReplyTo {
            to: from,
            path: h.path,
            max_len: request_len,
        };
        match frame {
            Frame::Data { flow, payload } => match self.flows.get_mut(&flow) {
                Some(f) => {
                    f.last_active = now;
                    // Never more bytes to the destination than the client sent: the payload
                    // is strictly smaller than the authenticated frame that carried it.
                    ClientOutcome::Forward {
                        flow,
                        upstream: f.upstream,
                        payload,
                    }
                }
                None => self.refuse(reply, ErrorCode::UnknownFlow, flow, out),
            },
            Frame::FlowOpen { flow, dst } => {
                if !self.ticket.allows(dst) || !allow(dst) {
                    // Attacker-triggered: debug, not info, so it can't flood the log.
                    tracing::debug!(session = self.id(), flow, %dst, "destination refused");
                    return self.refuse(reply, ErrorCode::DestinationNotAllowed, flow, out);
                }
                if let Some(f) = self.flows.get_mut(&flow) {
                    // Clients repeat FLOW_OPEN because it can be lost; same destination is a
                    // no-op.
                    f.last_active = now;
                    return if f.dst == dst {
                        ClientOutcome::Nothing
                    } else {
                        self.refuse(reply, ErrorCode::FlowConflict, flow, out)
                    };
                }
                let mut evicted = None;
                if self.flows.len() >= MAX_FLOWS_PER_SESSION {
                    let lru = self
                        .flows
                        .iter()
                        .min_by_key(|(id, f)| (f.last_active, **id))
                        .map(|(id, f)| (*id, f.last_active));
                    match lru {
                        Some((id, at)) if now.saturating_duration_since(at) >= FLOW_EVICT_AFTER => {
                            let f = self.flows.remove(&id).expect("just found");
                            evicted = Some((id, f.upstream));
                        }
                        _ => return self.refuse(reply, ErrorCode::TooManyFlows, flow, out),
                    }
                }
                ClientOutcome::OpenFlow {
                    flow,
                    dst,
                    reply,
                    evicted,
                }
            }
            Frame::Ping { id, timestamp_us } => {
                let to = self.seal_reply(reply, &Frame::Pong { id, timestamp_us }, out);
                ClientOutcome::Reply {
                    to,
                    kind: ReplyKind::Pong,
                }
            }
            Frame::Close { reason } => ClientOutcome::Closed { reason },
            Frame::Pong { .. } => ClientOutcome::Nothing,
            Frame::Paths { downstream } => {
                self.downstream = downstream;
                ClientOutcome::Nothing
            }
            Frame::Error { raw_code, flow, .. } => {
                tracing::debug!(
                    session = self.id(),
                    code = raw_code,
                    flow,
                    "client reported an error"
                );
                ClientOutcome::Nothing
            }
        }
    }

    /// The driver opened the upstream socket of a flow [`ClientOutcome::OpenFlow`] asked for.
    pub fn flow_opened(&mut self, flow: u32, dst: SocketAddr, upstream: F, now: Instant) {
        self.flows.insert(
            flow,
            FlowState {
                dst,
                upstream,
                last_active: now,
            },
        );
    }

    /// The driver could not open the flow: seals an ERROR UPSTREAM_UNREACHABLE into `out` and
    /// returns where to send it (`None`: larger than the request, don't).
    pub fn flow_failed(&mut self, flow: u32, reply: ReplyTo<P>, out: &mut Vec<u8>) -> Option<P> {
        self.seal_reply(
            reply,
            &Frame::error(ErrorCode::UpstreamUnreachable, flow),
            out,
        )
    }

    /// A reply from the game server on `flow`: returns the downstream copies to send (one
    /// sequence number for all), or `None` if the flow is not open.
    pub fn handle_upstream<'a>(
        &'a mut self,
        now: Instant,
        flow: u32,
        payload: &'a [u8],
    ) -> Option<Downstream<'a, P>> {
        self.flows.get_mut(&flow)?.last_active = now;
        let seq = self.session.take_seq();
        let mut down = Downstream {
            session: &self.session,
            paths: &self.paths,
            mask: self.downstream,
            last_path: self.last_path,
            seq,
            frame: Frame::Data { flow, payload },
        };
        if down.mask != 0
            && !down
                .paths
                .iter()
                .enumerate()
                .any(|(p, a)| a.is_some() && down.wants(p))
        {
            // None of the requested paths has been heard from yet: use the latest one.
            down.mask = 0;
        }
        Some(down)
    }

    /// Replaces the ticket with a renewed one for the same account: expiry and destinations
    /// follow it, the path limit and open flows stay.
    pub fn renew(&mut self, ticket: Ticket) -> Result<(), RenewRefused> {
        if ticket.account_id != self.ticket.account_id {
            return Err(RenewRefused::OtherAccount);
        }
        self.ticket = ticket;
        Ok(())
    }

    /// Whether the session is over: no authenticated frame for `idle`, or its ticket expired
    /// (`unix_now` in Unix seconds).
    pub fn poll_expired(&self, now: Instant, unix_now: u64, idle: Duration) -> bool {
        now.saturating_duration_since(self.last_seen) >= idle || unix_now >= self.ticket.expires_at
    }

    /// Forgets flows without traffic either way for `idle`, calling `closed` with each one's
    /// id and upstream handle so the driver closes its socket.
    pub fn expire_flows(&mut self, now: Instant, idle: Duration, mut closed: impl FnMut(u32, F)) {
        self.flows.retain(|&id, f| {
            let keep = now.saturating_duration_since(f.last_active) < idle;
            if !keep {
                closed(id, f.upstream);
            }
            keep
        });
    }

    fn refuse<'a>(
        &mut self,
        reply: ReplyTo<P>,
        code: ErrorCode,
        flow: u32,
        out: &mut Vec<u8>,
    ) -> ClientOutcome<'a, P, F> {
        let to = self.seal_reply(reply, &Frame::error(code, flow), out);
        ClientOutcome::Reply {
            to,
            kind: ReplyKind::Error { code, flow },
        }
    }

    /// Seals `frame` into `out` on the request's path; the answer may go only if it is no
    /// larger than the request (anti-amplification).
    fn seal_reply(&mut self, reply: ReplyTo<P>, frame: &Frame<'_>, out: &mut Vec<u8>) -> Option<P> {
        self.session.seal(reply.path, frame, out);
        (out.len() <= reply.max_len).then_some(reply.to)
    }
}

/// One game-server reply to send downstream: the same frame, with one sequence number, on
/// every path of the client's PATHS mask that has an address (the client keeps the first copy
/// and drops the rest as duplicates).
#[derive(Debug)]
pub struct Downstream<'a, P> {
    session: &'a Session,
    paths: &'a [Option<P>],
    /// 0 = the path of the client's latest frame only.
    mask: u8,
    last_path: u8,
    seq: u64,
    frame: Frame<'a>,
}

impl<P: Copy> Downstream<'_, P> {
    fn wants(&self, path: usize) -> bool {
        if self.mask == 0 {
            path == self.last_path as usize
        } else {
            path < 8 && self.mask & (1 << path) != 0
        }
    }

    /// Where copies go: each (client address, path).
    pub fn targets(&self) -> impl Iterator<Item = (P, u8)> + '_ {
        self.paths
            .iter()
            .enumerate()
            .filter(|&(p, _)| self.wants(p))
            .filter_map(|(p, a)| a.map(|a| (a, p as u8)))
    }

    /// Seals the copy for `path` into `buf` (cleared first).
    pub fn seal(&self, path: u8, buf: &mut Vec<u8>) {
        self.session.seal_with_seq(path, self.seq, &self.frame, buf);
    }

    /// The sequence number every copy carries.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    //! The core driven in virtual time: a client-role [`Session`] seals frames, the core
    //! answers, the client opens the answers. No socket; addresses are a toy type.

    use super::*;
    use ed25519_dalek::SigningKey;
    use plg_proto::Role;
    use plg_proto::TicketVerifier;
    use plg_proto::replay::ReplayError;

    /// Where frames come from, in these tests.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Addr {
        A,
        B,
        C,
        Evil,
    }
    use Addr::*;

    const SID: u64 = 0x5e55_1011;
    const ISSUED: u64 = 1_000;
    const EXPIRES: u64 = 2_000;
    const IDLE: Duration = Duration::from_secs(60);
    const ALLOWED: &str = "203.0.113.7:27015";

    fn keys() -> [u8; 64] {
        std::array::from_fn(|i| (i * 7) as u8)
    }

    fn allowed() -> SocketAddr {
        ALLOWED.parse().unwrap()
    }

    /// A ticket as the node gets it: signed by billing, verified with billing's key.
    fn ticket(account_id: u64, path_limit: u8, expires_at: u64) -> Ticket {
        let billing = SigningKey::from_bytes(&[3; 32]);
        let claims = Ticket {
            key_id: 1,
            issued_at: ISSUED,
            expires_at,
            session_id: SID,
            account_id,
            plan: 1,
            game_id: 730,
            path_limit,
            bandwidth_kbps: 0,
            destinations: vec!["203.0.113.0/24:27015-27030".parse().unwrap()],
        };
        TicketVerifier::new([(1, billing.verifying_key())])
            .verify(&claims.sign(&billing), ISSUED)
            .expect("a ticket billing signed")
    }

    /// A client and the node's core for the same session, at virtual time `t0`.
    struct Pair {
        client: Session,
        node: SessionCore<Addr, u32>,
        t0: Instant,
        out: Vec<u8>,
    }

    impl Pair {
        fn new(path_limit: u8) -> Pair {
            let t0 = Instant::now();
            Pair {
                client: Session::new(Role::Client, SID, &keys()),
                node: SessionCore::new(
                    Session::new(Role::Node, SID, &keys()),
                    ticket(42, path_limit, EXPIRES),
                    t0,
                ),
                t0,
                out: Vec::new(),
            }
        }

        fn at(&self, secs: u64) -> Instant {
            self.t0 + Duration::from_secs(secs)
        }

        fn seal(&mut self, path: u8, frame: &Frame<'_>) -> Vec<u8> {
            let mut buf = Vec::new();
            self.client.seal(path, frame, &mut buf);
            buf
        }

        /// Seals `frame` on `path`, hands it to the core as coming `from`, returns the outcome
        /// with its payload copied out.
        fn send(&mut self, path: u8, frame: &Frame<'_>, from: Addr) -> Outcome {
            let mut d = self.seal(path, frame);
            self.deliver(&mut d, from, 0)
        }

        fn deliver(&mut self, datagram: &mut [u8], from: Addr, secs: u64) -> Outcome {
            let now = self.at(secs);
            Outcome::from(
                self.node
                    .handle_client(now, datagram, from, |_| true, &mut self.out),
            )
        }

        /// Opens what the core sealed into `out` as the client.
        fn reply(&mut self) -> (Header, Frame<'static>) {
            let mut buf = self.out.clone();
            let (h, f) = self
                .client
                .open(&mut buf)
                .expect("the client opens the reply");
            let f = match f {
                Frame::Data { .. } => panic!("no DATA replies"),
                Frame::FlowOpen { flow, dst } => Frame::FlowOpen { flow, dst },
                Frame::Ping { id, timestamp_us } => Frame::Ping { id, timestamp_us },
                Frame::Pong { id, timestamp_us } => Frame::Pong { id, timestamp_us },
                Frame::Close { reason } => Frame::Close { reason },
                Frame::Error {
                    code,
                    raw_code,
                    flow,
                } => Frame::Error {
                    code,
                    raw_code,
                    flow,
                },
                Frame::Paths { downstream } => Frame::Paths { downstream },
            };
            (h, f)
        }

        /// Opens flow `flow` to the allowed destination (upstream handle = flow id + 100).
        fn open_flow(&mut self, flow: u32, from: Addr) {
            let dst = allowed();
            match self.send(0, &Frame::FlowOpen { flow, dst }, from) {
                Outcome::OpenFlow {
                    flow: f,
                    dst: d,
                    evicted: None,
                } => assert_eq!((f, d), (flow, dst)),
                other => panic!("flow {flow} not opened: {other:?}"),
            }
            let now = self.at(0);
            self.node.flow_opened(flow, dst, flow + 100, now);
        }

        /// The downstream copies of one upstream reply: (to, path, sealed datagram).
        fn upstream(&mut self, secs: u64, flow: u32, payload: &[u8]) -> Vec<(Addr, u8, Vec<u8>)> {
            let now = self.at(secs);
            let Some(down) = self.node.handle_upstream(now, flow, payload) else {
                return Vec::new();
            };
            down.targets()
                .map(|(to, path)| {
                    let mut buf = Vec::new();
                    down.seal(path, &mut buf);
                    (to, path, buf)
                })
                .collect()
        }
    }

    /// [`ClientOutcome`] with the payload owned, so the datagram can go.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Dropped(DropReason),
        Forward {
            flow: u32,
            upstream: u32,
            payload: Vec<u8>,
        },
        OpenFlow {
            flow: u32,
            dst: SocketAddr,
            evicted: Option<(u32, u32)>,
        },
        Reply {
            to: Option<Addr>,
            kind: ReplyKind,
        },
        Closed(u16),
        Nothing,
    }

    impl From<ClientOutcome<'_, Addr, u32>> for Outcome {
        fn from(o: ClientOutcome<'_, Addr, u32>) -> Outcome {
            match o {
                ClientOutcome::Dropped(r) => Outcome::Dropped(r),
                ClientOutcome::Forward {
                    flow,
                    upstream,
                    payload,
                } => Outcome::Forward {
                    flow,
                    upstream,
                    payload: payload.to_vec(),
                },
                ClientOutcome::OpenFlow {
                    flow, dst, evicted, ..
                } => Outcome::OpenFlow { flow, dst, evicted },
                ClientOutcome::Reply { to, kind } => Outcome::Reply { to, kind },
                ClientOutcome::Closed { reason } => Outcome::Closed(reason),
                ClientOutcome::Nothing => Outcome::Nothing,
            }
        }
    }

    fn error(code: ErrorCode, flow: u32) -> ReplyKind {
        ReplyKind::Error { code, flow }
    }

    #[test]
    fn ping_is_answered_with_pong_on_the_same_path() {
        let mut p = Pair::new(2);
        let ping = Frame::Ping {
            id: 9,
            timestamp_us: 1234,
        };
        assert_eq!(
            p.send(1, &ping, B),
            Outcome::Reply {
                to: Some(B),
                kind: ReplyKind::Pong
            }
        );
        let (h, f) = p.reply();
        assert_eq!(h.path, 1);
        assert_eq!(
            f,
            Frame::Pong {
                id: 9,
                timestamp_us: 1234
            }
        );
        assert_eq!(p.node.path_peer(1), Some(B));
        assert_eq!(p.node.path_peer(0), None);
    }

    #[test]
    fn flow_open_allowed_then_data_forwarded_on_it() {
        let mut p = Pair::new(1);
        p.open_flow(5, A);
        assert_eq!(
            p.send(
                0,
                &Frame::Data {
                    flow: 5,
                    payload: b"state"
                },
                A
            ),
            Outcome::Forward {
                flow: 5,
                upstream: 105,
                payload: b"state".to_vec()
            }
        );
        // A repeated FLOW_OPEN (the first one's answer can be lost) is a no-op...
        let dst = allowed();
        assert_eq!(
            p.send(0, &Frame::FlowOpen { flow: 5, dst }, A),
            Outcome::Nothing
        );
        // ...but the same id towards another destination is a conflict.
        let other: SocketAddr = "203.0.113.8:27015".parse().unwrap();
        assert_eq!(
            p.send(
                0,
                &Frame::FlowOpen {
                    flow: 5,
                    dst: other
                },
                A
            ),
            Outcome::Reply {
                to: Some(A),
                kind: error(ErrorCode::FlowConflict, 5)
            }
        );
        assert_eq!(p.node.flows().collect::<Vec<_>>(), vec![(5, 105)]);
    }

    #[test]
    fn flow_open_refused_by_the_ticket() {
        let mut p = Pair::new(1);
        for dst in ["198.51.100.1:27015", "203.0.113.7:80"] {
            let dst: SocketAddr = dst.parse().unwrap();
            assert_eq!(
                p.send(0, &Frame::FlowOpen { flow: 1, dst }, A),
                Outcome::Reply {
                    to: Some(A),
                    kind: error(ErrorCode::DestinationNotAllowed, 1)
                },
                "{dst}"
            );
            let (_, f) = p.reply();
            assert_eq!(f, Frame::error(ErrorCode::DestinationNotAllowed, 1));
        }
        assert_eq!(p.node.flows().count(), 0);
    }

    #[test]
    fn flow_open_refused_by_node_policy() {
        let mut p = Pair::new(1);
        let dst = allowed();
        let mut d = p.seal(0, &Frame::FlowOpen { flow: 1, dst });
        let now = p.at(0);
        let asked = std::cell::Cell::new(None);
        let outcome = p.node.handle_client(
            now,
            &mut d,
            A,
            |a| {
                asked.set(Some(a));
                false
            },
            &mut p.out,
        );
        assert_eq!(
            Outcome::from(outcome),
            Outcome::Reply {
                to: Some(A),
                kind: error(ErrorCode::DestinationNotAllowed, 1)
            }
        );
        assert_eq!(asked.get(), Some(dst), "the policy saw the destination");
        assert_eq!(p.node.flows().count(), 0);
    }

    #[test]
    fn flow_that_cannot_be_opened_answers_upstream_unreachable() {
        let mut p = Pair::new(1);
        let dst = allowed();
        let mut d = p.seal(0, &Frame::FlowOpen { flow: 3, dst });
        let now = p.at(0);
        let reply = match p.node.handle_client(now, &mut d, A, |_| true, &mut p.out) {
            ClientOutcome::OpenFlow { reply, .. } => reply,
            other => panic!("{other:?}"),
        };
        assert_eq!((reply.to(), reply.path()), (A, 0));
        assert_eq!(p.node.flow_failed(3, reply, &mut p.out), Some(A));
        assert_eq!(p.reply().1, Frame::error(ErrorCode::UpstreamUnreachable, 3));
        // Not open: its data is refused.
        assert_eq!(
            p.send(
                0,
                &Frame::Data {
                    flow: 3,
                    payload: b"12345678"
                },
                A
            ),
            Outcome::Reply {
                to: Some(A),
                kind: error(ErrorCode::UnknownFlow, 3)
            }
        );
    }

    #[test]
    fn a_full_session_gives_up_its_least_recently_used_quiet_flow() {
        let mut p = Pair::new(1);
        for flow in 0..MAX_FLOWS_PER_SESSION as u32 {
            p.open_flow(flow, A);
        }
        let at = |p: &mut Pair, secs: u64, frame: &Frame<'_>| {
            let mut d = p.seal(0, frame);
            p.deliver(&mut d, A, secs)
        };
        // Flow 0 keeps talking; the others go quiet.
        at(
            &mut p,
            4,
            &Frame::Data {
                flow: 0,
                payload: b"12345678",
            },
        );
        let dst = allowed();
        // Before FLOW_EVICT_AFTER nothing is quiet enough: refused.
        assert_eq!(
            at(&mut p, 3, &Frame::FlowOpen { flow: 998, dst }),
            Outcome::Reply {
                to: Some(A),
                kind: error(ErrorCode::TooManyFlows, 998)
            }
        );
        // Later the least recently used quiet flow (1, not the busy 0) makes room.
        assert_eq!(
            at(&mut p, 6, &Frame::FlowOpen { flow: 999, dst }),
            Outcome::OpenFlow {
                flow: 999,
                dst,
                evicted: Some((1, 101))
            }
        );
        assert_eq!(p.node.flows().count(), MAX_FLOWS_PER_SESSION - 1);
    }

    #[test]
    fn too_many_flows_refused() {
        let mut p = Pair::new(1);
        for flow in 0..MAX_FLOWS_PER_SESSION as u32 {
            p.open_flow(flow, A);
        }
        let dst = allowed();
        assert_eq!(
            p.send(0, &Frame::FlowOpen { flow: 999, dst }, A),
            Outcome::Reply {
                to: Some(A),
                kind: error(ErrorCode::TooManyFlows, 999)
            }
        );
        assert_eq!(p.node.flows().count(), MAX_FLOWS_PER_SESSION);
    }

    #[test]
    fn data_on_an_unopened_flow_gets_unknown_flow() {
        let mut p = Pair::new(1);
        assert_eq!(
            p.send(
                0,
                &Frame::Data {
                    flow: 7,
                    payload: b"abcdefgh"
                },
                A
            ),
            Outcome::Reply {
                to: Some(A),
                kind: error(ErrorCode::UnknownFlow, 7)
            }
        );
        assert_eq!(p.reply().1, Frame::error(ErrorCode::UnknownFlow, 7));
    }

    #[test]
    fn an_answer_is_never_larger_than_its_request() {
        let mut p = Pair::new(1);
        let mut suppressed = 0;
        for n in 0..16 {
            let payload = vec![0u8; n];
            let mut d = p.seal(
                0,
                &Frame::Data {
                    flow: 7,
                    payload: &payload,
                },
            );
            let request = d.len();
            match p.deliver(&mut d, A, 0) {
                Outcome::Reply {
                    to: Some(A),
                    kind: ReplyKind::Error { .. },
                } => assert!(p.out.len() <= request, "{} > {request}", p.out.len()),
                Outcome::Reply {
                    to: None,
                    kind: ReplyKind::Error { .. },
                } => {
                    assert!(p.out.len() > request);
                    suppressed += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        // An ERROR is 42 bytes: DATA with 0 or 1 payload bytes (40, 41) must go unanswered.
        assert_eq!(suppressed, 2);
        let ping = p.seal(
            0,
            &Frame::Ping {
                id: 1,
                timestamp_us: 2,
            },
        );
        assert!(matches!(
            p.deliver(&mut ping.clone(), A, 0),
            Outcome::Reply { to: Some(A), .. }
        ));
        assert!(p.out.len() <= ping.len());
    }

    #[test]
    fn downstream_copies_go_on_each_path_of_the_mask_with_one_seq() {
        let mut p = Pair::new(3);
        p.open_flow(1, A);
        p.send(
            1,
            &Frame::Pong {
                id: 0,
                timestamp_us: 0,
            },
            B,
        );
        p.send(
            2,
            &Frame::Pong {
                id: 0,
                timestamp_us: 0,
            },
            C,
        );
        // No PATHS yet: only the path of the latest frame (2).
        let copies = p.upstream(1, 1, b"reply");
        assert_eq!(
            copies.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
            vec![(C, 2)]
        );

        assert_eq!(
            p.send(0, &Frame::Paths { downstream: 0b011 }, A),
            Outcome::Nothing
        );
        let copies = p.upstream(1, 1, b"reply");
        assert_eq!(
            copies.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
            vec![(A, 0), (B, 1)]
        );
        let mut seqs = Vec::new();
        for (i, (_, path, datagram)) in copies.into_iter().enumerate() {
            let mut d = datagram;
            let h = Header::decode(&d).unwrap();
            assert_eq!(h.path, path);
            seqs.push(h.seq);
            let opened = p.client.open(&mut d);
            if i == 0 {
                let (_, f) = opened.expect("first copy");
                assert_eq!(
                    f,
                    Frame::Data {
                        flow: 1,
                        payload: b"reply"
                    }
                );
            } else {
                // Same sequence number: the client drops the second copy as a duplicate.
                assert_eq!(
                    opened.unwrap_err(),
                    OpenError::Replay(ReplayError::Duplicate)
                );
            }
        }
        assert_eq!(seqs[0], seqs[1]);

        // A mask naming only paths never heard from falls back to the latest path.
        p.send(
            0,
            &Frame::Paths {
                downstream: 0b1000_0000,
            },
            A,
        );
        let copies = p.upstream(1, 1, b"reply");
        assert_eq!(
            copies.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
            vec![(A, 0)]
        );
        // Replies for a flow that is not open go nowhere.
        assert!(p.upstream(1, 2, b"reply").is_empty());
    }

    #[test]
    fn a_forged_frame_does_not_move_a_path() {
        let mut p = Pair::new(2);
        p.open_flow(1, A);
        let genuine = p.seal(
            0,
            &Frame::Ping {
                id: 1,
                timestamp_us: 1,
            },
        );
        // Tampered copies, and a frame sealed with another key, from another address.
        for i in [0, 3, 12, 21, genuine.len() - 1] {
            let mut forged = genuine.clone();
            forged[i] ^= 0x40;
            let o = p.deliver(&mut forged, Evil, 0);
            assert!(matches!(o, Outcome::Dropped(_)), "byte {i}: {o:?}");
        }
        // (A sequence number the node has not seen yet, so only the key gives it away.)
        let stranger = Session::new(Role::Client, SID, &[1; 64]);
        let mut d = Vec::new();
        stranger.seal_with_seq(0, 1_000, &Frame::Paths { downstream: 0 }, &mut d);
        assert_eq!(
            p.deliver(&mut d, Evil, 0),
            Outcome::Dropped(DropReason::Auth)
        );
        assert_eq!(p.node.path_peer(0), Some(A));
        let copies = p.upstream(0, 1, b"x");
        assert_eq!(
            copies.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
            vec![(A, 0)]
        );
        // The genuine frame is still accepted afterwards (the forgeries took no seq).
        assert!(matches!(
            p.deliver(&mut genuine.clone(), A, 0),
            Outcome::Reply { to: Some(A), .. }
        ));
    }

    #[test]
    fn a_replayed_frame_is_dropped_and_moves_nothing() {
        let mut p = Pair::new(1);
        let ping = p.seal(
            0,
            &Frame::Ping {
                id: 1,
                timestamp_us: 1,
            },
        );
        assert!(matches!(
            p.deliver(&mut ping.clone(), A, 0),
            Outcome::Reply { .. }
        ));
        assert_eq!(
            p.deliver(&mut ping.clone(), Evil, 30),
            Outcome::Dropped(DropReason::Replay)
        );
        assert_eq!(p.node.path_peer(0), Some(A));
        // Nor does it keep the session alive.
        assert!(p.node.poll_expired(p.at(60), ISSUED, IDLE));
    }

    #[test]
    fn a_path_beyond_the_ticket_limit_is_dropped() {
        let mut p = Pair::new(2);
        assert_eq!(
            p.send(2, &Frame::Paths { downstream: 0 }, A),
            Outcome::Dropped(DropReason::Path)
        );
        assert_eq!(
            p.deliver(&mut [0u8; 5], A, 0),
            Outcome::Dropped(DropReason::Malformed)
        );
    }

    #[test]
    fn close_ends_the_session() {
        let mut p = Pair::new(1);
        assert_eq!(
            p.send(0, &Frame::Close { reason: 7 }, A),
            Outcome::Closed(7)
        );
    }

    #[test]
    fn sessions_and_flows_expire_when_idle() {
        let mut p = Pair::new(1);
        p.open_flow(1, A);
        p.open_flow(2, A);
        assert!(!p.node.poll_expired(p.at(59), ISSUED, IDLE));
        assert!(p.node.poll_expired(p.at(60), ISSUED, IDLE));
        // An authenticated frame at t=50 keeps it for another minute.
        let mut d = p.seal(
            0,
            &Frame::Pong {
                id: 0,
                timestamp_us: 0,
            },
        );
        p.deliver(&mut d, A, 50);
        assert!(!p.node.poll_expired(p.at(109), ISSUED, IDLE));
        assert!(p.node.poll_expired(p.at(110), ISSUED, IDLE));
        // The ticket's expiry ends it whatever the traffic.
        assert!(p.node.poll_expired(p.at(51), EXPIRES, IDLE));

        // Flow 1 has traffic at t=40 (upstream), flow 2 none since t=0.
        assert_eq!(p.upstream(40, 1, b"x").len(), 1);
        let mut closed = Vec::new();
        p.node
            .expire_flows(p.at(59), IDLE, |id, h| closed.push((id, h)));
        assert!(closed.is_empty());
        p.node
            .expire_flows(p.at(60), IDLE, |id, h| closed.push((id, h)));
        assert_eq!(closed, vec![(2, 102)]);
        p.node
            .expire_flows(p.at(100), IDLE, |id, h| closed.push((id, h)));
        assert_eq!(closed, vec![(2, 102), (1, 101)]);
        assert_eq!(p.node.flows().count(), 0);
    }

    #[test]
    fn renewal_for_another_account_is_refused() {
        let mut p = Pair::new(1);
        p.open_flow(1, A);
        assert_eq!(
            p.node.renew(ticket(43, 1, EXPIRES + 600)),
            Err(RenewRefused::OtherAccount)
        );
        assert_eq!(p.node.ticket().expires_at, EXPIRES);
        assert!(p.node.poll_expired(p.at(0), EXPIRES, IDLE));
        assert_eq!(p.node.renew(ticket(42, 1, EXPIRES + 600)), Ok(()));
        assert_eq!(p.node.ticket().expires_at, EXPIRES + 600);
        assert!(!p.node.poll_expired(p.at(0), EXPIRES, IDLE));
        assert_eq!(p.node.flows().count(), 1, "flows survive a renewal");
    }
}
