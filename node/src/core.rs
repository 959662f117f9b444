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

/// Most flows one session may open.
pub const MAX_FLOWS_PER_SESSION: usize = 64;

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
                if self.flows.len() >= MAX_FLOWS_PER_SESSION {
                    return self.refuse(reply, ErrorCode::TooManyFlows, flow, out);
                }
                ClientOutcome::OpenFlow { flow, dst, reply }
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
