//! One session controller for every front end (the `plg` CLI and the desktop app): connect
//! (ticket, node ranking, session, paths, capture), then keep the session alive — silent
//! ticket renewal before expiry (in place, else into a new session the data path switches
//! to), periodic re-probing for a clearly better node, failover and relay moves reported by
//! the session engine — and end it cleanly: CLOSE to the node and the slot released at
//! billing, whatever ends it (the user, a signal, a window closing, an error while
//! connecting). Everything the user should see comes out as one typed [`SessionEvent`]
//! stream; [`Controller::info`] always names the node and relays in use.
//!
//! Layering: [`crate::conn`] (sans-IO engine) → [`crate::proxy`] (tokio driver) → this →
//! front ends (`client/src/main.rs`, `client/app`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plg_proto::paths::Redundancy;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

#[cfg(windows)]
use crate::capture::WinDivertCapture;
use crate::capture::{ProxyCapture, Targets};
#[cfg(target_os = "linux")]
use crate::capture::{TunCapture, TunConfig};
use crate::route::{self, Candidate, Leg, RoutePlan};
use crate::{
    BillingClient, BillingError, Failover, NodeInfo, PathsView, Protection, Proxy, ProxyEvent,
    ProxyStats, SessionGrant, Tunnel, TunnelError, probe, renew,
};

/// How often a running session re-probes the nodes to look for a clearly better one.
pub const REEVALUATE: Duration = Duration::from_secs(60);
/// Wait between failed renewal attempts.
pub const RENEW_RETRY: Duration = Duration::from_secs(10);
/// Every path silent this long moves the session to another node.
pub const FAILOVER_AFTER: Duration = Duration::from_secs(1);
/// A better exit is taken only once the game has sent nothing for this long (between
/// matches): a game server knows its players by source address, so a new exit mid-match
/// would cost the match. Until then it is recommended.
pub const EXIT_CHANGE_IDLE: Duration = Duration::from_secs(30);
/// The shadow probe of the direct route: one probe this often, all session long.
pub const SHADOW_EVERY: Duration = Duration::from_secs(2);
/// Shadow probe samples the live direct figure is taken over (the last minute).
const SHADOW_WINDOW: usize = 30;

/// How the game's traffic is captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureMode {
    /// A local UDP port the game is pointed at, forwarding to `server` (default: the game's
    /// only destination, when it has exactly one).
    Proxy {
        /// Where the game sends.
        listen: SocketAddr,
        /// The game server.
        server: Option<SocketAddr>,
    },
    /// A TUN device with routes for the game's server ranges (Linux, root).
    Tun,
    /// WinDivert packet capture (Windows, administrator).
    WinDivert,
    /// A TUN device from the capture helper `plg-capture` (Linux, no privileges here): at
    /// [`helper::socket_path`](crate::capture::helper::socket_path).
    Helper,
}

/// What to connect.
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    /// Game slug.
    pub game: String,
    /// Pin this exit node (it still fails over to the backup its ACCEPT names).
    pub node: Option<String>,
    /// Only exits in this region (the catalog's region label, any case); `None`: anywhere.
    /// Relays may be anywhere, and a failover may leave the region when no node in it is left.
    pub region: Option<String>,
    /// Capture.
    pub capture: CaptureMode,
    /// Paths wanted (capped by the plan).
    pub paths: u8,
    /// Redundancy policy.
    pub redundancy: Redundancy,
    /// Protected mode.
    pub protection: Protection,
    /// Probes per node when ranking.
    pub probes: u32,
    /// Renew and re-probe (false: the session ends at ticket expiry; tests and benches).
    pub keep_alive: bool,
    /// How often a running session re-evaluates its route ([`REEVALUATE`]).
    pub reevaluate: Duration,
}

impl ConnectRequest {
    /// Defaults for `game`: proxy capture on `127.0.0.1:7777`, two paths, adaptive, auto
    /// protected mode.
    pub fn new(game: &str) -> ConnectRequest {
        ConnectRequest {
            game: game.to_owned(),
            node: None,
            region: None,
            capture: CaptureMode::Proxy {
                listen: SocketAddr::from(([127, 0, 0, 1], 7777)),
                server: None,
            },
            paths: 2,
            redundancy: Redundancy::ADAPTIVE,
            protection: Protection::Auto,
            probes: route::PROBES,
            keep_alive: true,
            reevaluate: REEVALUATE,
        }
    }
}

/// Why a connect failed; the session billing opened for it, if any, was stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Billing refused or failed.
    #[error("requesting a session ticket: {0}")]
    Billing(#[from] BillingError),
    /// No node could take the session.
    #[error("{0}")]
    NoNode(String),
    /// A node refused the ticket.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// Proxy capture needs the game server's address and the game has several.
    #[error("{0}")]
    ServerNeeded(String),
    /// The capture could not start (permissions, a port in use).
    #[error("{0}")]
    Capture(String),
    /// Given up before the session was up.
    #[error("connecting was cancelled")]
    Cancelled,
}

impl ConnectError {
    /// A stable code for user interfaces to branch on.
    pub fn code(&self) -> &str {
        match self {
            ConnectError::Billing(BillingError::Api { code, .. }) => code,
            ConnectError::Billing(BillingError::Unreachable { .. }) => "billing_unreachable",
            ConnectError::Billing(BillingError::Protocol(_)) => "billing_protocol",
            ConnectError::NoNode(_) => "no_node",
            ConnectError::Tunnel(TunnelError::Rejected { .. }) => "node_refused",
            ConnectError::Tunnel(_) => "node_unreachable",
            ConnectError::ServerNeeded(_) => "game_server_needed",
            ConnectError::Capture(_) => "capture_failed",
            ConnectError::Cancelled => "cancelled",
        }
    }
}

/// Progress of a connect, for spinners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Asking billing for a ticket.
    Ticket,
    /// Probing this many nodes.
    Probing(usize),
    /// The route verdict, for the user: `direct 94 ms → via fra-2 61 ms (−35 %)`, or that
    /// direct is better ([`RoutePlan::summary`]).
    Advice(String),
    /// Opening the session with a node.
    Opening,
}

/// What the front ends show about a running session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// Billing's session id (changes when a renewal needs a new session).
    pub session_id: String,
    /// Game slug.
    pub game: String,
    /// Game display name.
    pub game_name: String,
    /// The node carrying the session now.
    pub node: NodeInfo,
    /// For each path, the node relaying it (`None`: straight to the exit).
    pub relays: Vec<Option<NodeInfo>>,
    /// Capture backend, described.
    pub capture: String,
    /// Proxy capture: where the game must send its packets.
    pub local_addr: Option<SocketAddr>,
    /// The game server when there is exactly one (proxy target or single destination).
    pub server: Option<SocketAddr>,
    /// The ticket's destinations.
    pub destinations: Vec<String>,
    /// Redundancy policy.
    pub redundancy: Redundancy,
    /// Unix seconds the session started.
    pub started_at: u64,
    /// Unix seconds the current ticket expires.
    pub expires_at: u64,
}

/// The route as the session sees it now: the verdict and the figures behind it, refreshed
/// by the shadow probe ([`SHADOW_EVERY`]) and each re-evaluation ([`REEVALUATE`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteView {
    /// The one-line verdict of the last evaluation ([`RoutePlan::summary`]).
    pub summary: String,
    /// The direct route now: the shadow probe over the last minute (`None`: the server does
    /// not answer, or its address is not known to this capture mode).
    pub direct: Option<Leg>,
    /// The exit's own exit→game figure, as it announced it (`None`: not measured yet).
    pub exit_game: Option<Leg>,
    /// The game RTT through PLG now: client↔exit from the session's ping frames plus the
    /// exit→game figure (`None` until both are known).
    pub plg: Option<Duration>,
    /// An exit that would lower the ping, waiting for the game to go idle.
    pub recommended: Option<String>,
}

/// A game RTT series summarised for the session report.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RttSummary {
    /// Probes or samples taken.
    pub samples: u32,
    /// Of which answered (a figure was available).
    pub answered: u32,
    /// Median, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub p99_ms: Option<f64>,
    /// Share unanswered, percent.
    pub loss_percent: f64,
}

impl RttSummary {
    fn of(samples: &[Option<Duration>]) -> RttSummary {
        let probe = probe::Probe {
            sent: samples.len() as u32,
            rtts: samples.iter().flatten().copied().collect(),
        };
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e5).round() / 100.0);
        RttSummary {
            samples: probe.sent,
            answered: probe.answered(),
            p50_ms: ms(probe.median()),
            p99_ms: ms(probe.quantile(0.99)),
            loss_percent: probe.loss_percent(),
        }
    }
}

/// What a session did, before vs after, for the gamer and for telemetry (`plg connect`
/// writes it as JSON when the session ends).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SessionReport {
    /// Game slug.
    pub game: String,
    /// Billing's session id (the last one, after renewals).
    pub session_id: String,
    /// Unix seconds the session started and ended (0: still running).
    pub started_at: u64,
    /// See `started_at`.
    pub ended_at: u64,
    /// The verdict when connecting.
    pub route_at_connect: String,
    /// The verdict at the last evaluation.
    pub route_now: String,
    /// The exit at the end.
    pub exit: String,
    /// The direct route, from the shadow probe all session long (and the connect probe).
    pub direct: RttSummary,
    /// The game RTT through PLG: client↔exit (ping frames) + the exit's exit→game figure,
    /// sampled with each shadow probe.
    pub plg: RttSummary,
    /// Median reduction, percent (positive: PLG lower), when both medians are known.
    pub reduction_percent: Option<f64>,
    /// Exit changes and recommendations, as told to the user.
    pub route_events: Vec<String>,
    /// Packets the game sent and received through the session.
    pub packets_up: u64,
    /// See `packets_up`.
    pub packets_down: u64,
}

/// What the runner records for the report.
#[derive(Debug, Default)]
struct Record {
    report: SessionReport,
    direct: Vec<Option<Duration>>,
    plg: Vec<Option<Duration>>,
}

/// Most samples a report keeps per series (a day at one per [`SHADOW_EVERY`]); older ones are
/// thinned out by half so memory stays bounded in endless sessions.
const RECORD_MAX: usize = 43_200;

fn push_sample(v: &mut Vec<Option<Duration>>, x: Option<Duration>) {
    if v.len() >= RECORD_MAX {
        let kept: Vec<Option<Duration>> = v.iter().step_by(2).copied().collect();
        *v = kept;
    }
    v.push(x);
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The user (or a signal, or the app closing) stopped it.
    Stopped,
    /// The ticket expired and could not be renewed.
    TicketExpired {
        /// The last renewal error.
        error: String,
    },
}

/// Everything the user should be told, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// From the data path: failover, protected mode, primary path, refused destinations...
    Path(ProxyEvent),
    /// The ticket was renewed; `in_place`: same session and node, else a new session.
    Renewed {
        /// The session id now.
        session_id: String,
        /// Node carrying it.
        node: String,
        /// New expiry (unix seconds).
        expires_at: u64,
        /// Renewed on the open connection (nothing moved).
        in_place: bool,
    },
    /// A renewal failed; retried after `retry_in`.
    RenewFailed {
        /// What failed (with advice where there is some).
        error: String,
        /// Next attempt.
        retry_in: Duration,
    },
    /// The session moved to a clearly better node.
    Moved {
        /// Why, for the user.
        why: String,
    },
    /// Another exit would lower the ping, but the game is playing: the session moves there
    /// once the game has been idle for [`EXIT_CHANGE_IDLE`] (between matches).
    Recommend {
        /// The exit recommended.
        exit: String,
        /// What it would give, for the user.
        text: String,
    },
    /// The session ended (the last event).
    Ended(EndReason),
}

/// A running session (see the module docs). Dropping it without [`Controller::stop`] still
/// ends the session (CLOSE and billing's slot) in the background.
#[derive(Debug)]
pub struct Controller {
    info: watch::Receiver<SessionInfo>,
    route: watch::Receiver<RouteView>,
    record: Arc<std::sync::Mutex<Record>>,
    stats: Arc<ProxyStats>,
    paths: watch::Receiver<PathsView>,
    events: mpsc::Receiver<SessionEvent>,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<EndReason>>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When to renew a ticket and when it runs out, from now, measured on this machine's
/// monotonic clock: the ticket's own lifetime (`expires_at - issued_at`, both billing's
/// clock) is what counts, so a client whose wall clock is off by hours still renews in time
/// and never ends a valid session early.
pub fn ticket_schedule(grant: &SessionGrant) -> (Duration, Duration) {
    let lifetime = grant
        .ticket_bytes()
        .ok()
        .and_then(|b| {
            plg_proto::Ticket::decode_unverified(&b)
                .ok()
                .map(|(t, _, _)| t.expires_at.saturating_sub(t.issued_at))
        })
        // Not a ticket we can read: trust our clock.
        .unwrap_or_else(|| grant.expires_at.saturating_sub(unix_now()));
    let renew = renew::renew_at(0, lifetime);
    (Duration::from_secs(renew), Duration::from_secs(lifetime))
}

/// Stops billing's session when dropped unless disarmed: a connect that fails or is
/// cancelled after the ticket was issued never leaves the plan's slot taken.
struct SlotGuard {
    billing: BillingClient,
    session: Option<String>,
}

impl SlotGuard {
    fn disarm(mut self) {
        self.session = None;
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(id) = self.session.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let billing = self.billing.clone();
            rt.spawn(async move {
                if let Err(e) = billing.stop_session(&id).await {
                    tracing::warn!(session = %id, error = %e, "could not release the session at billing");
                }
            });
        }
    }
}

/// The game server when the game has exactly one destination host and port (the local
/// demo's echo server, a private server).
pub fn single_target(destinations: &[String]) -> Option<SocketAddr> {
    let [only] = destinations else { return None };
    let d: plg_proto::ticket::Destination = only.parse().ok()?;
    (d.net.prefix_len() == d.net.max_prefix_len() && d.port_lo == d.port_hi)
        .then(|| SocketAddr::new(d.net.addr(), d.port_lo))
}

/// Candidates in the order to try them as the exit: the plan's exit, its backups, then the
/// nodes that did not answer (billing's order); only the `pinned` node when there is one.
fn exit_order(all: &[Candidate], plan: Option<&RoutePlan>, pinned: Option<&str>) -> Vec<Candidate> {
    if let Some(id) = pinned {
        return all.iter().filter(|c| c.node.id == id).cloned().collect();
    }
    let mut out: Vec<Candidate> = plan
        .into_iter()
        .flat_map(|p| std::iter::once(&p.exit).chain(&p.backups))
        .filter_map(|id| all.iter().find(|c| c.node.id == *id))
        .cloned()
        .collect();
    for c in all {
        if !out.iter().any(|o| o.node.id == c.node.id) {
            out.push(c.clone());
        }
    }
    out
}

/// Probes the game server at `server` directly, `count` times, the way the exits probe it:
/// with the game's own query protocol where the catalog names one (`query`), else with an
/// echo probe (which only servers that echo answer: the demo's, a test's). `None` when the
/// address is unknown or the kind of probe is one this client does not speak.
pub async fn direct_probe_raw(
    server: Option<SocketAddr>,
    query: Option<&str>,
    count: u32,
    timeout: Duration,
) -> Option<probe::Probe> {
    let server = server?;
    match query.map(str::parse::<plg_proto::query::QueryKind>) {
        None => probe::echo(server, count, Duration::from_millis(50), timeout)
            .await
            .ok(),
        Some(Ok(kind)) => probe::query(server, kind, count, timeout).await.ok(),
        Some(Err(_)) => None,
    }
}

/// [`direct_probe_raw`] when the server answered at least once (else the direct RTT is
/// unknown, not infinite).
pub async fn direct_probe(
    server: Option<SocketAddr>,
    query: Option<&str>,
    count: u32,
) -> Option<probe::Probe> {
    direct_probe_raw(server, query, count, Duration::from_millis(500))
        .await
        .filter(|p| p.answered() > 0)
}

/// Opens the session on the first candidate that accepts it (a refusal ends the search: the
/// ticket would be refused everywhere).
pub async fn open_ranked(
    ranked: &[Candidate],
    ca_pem: &str,
    ticket: &[u8],
) -> Result<(NodeInfo, Tunnel), ConnectError> {
    let mut errors = Vec::new();
    for c in ranked {
        let Ok(addr) = c.node.control_addr.parse() else {
            errors.push(format!(
                "node {} has a bad address {:?}",
                c.node.id, c.node.control_addr
            ));
            continue;
        };
        match Tunnel::open(addr, &c.node.server_name, ca_pem, ticket).await {
            Ok(t) => return Ok((c.node.clone(), t)),
            Err(e @ TunnelError::Rejected { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(node = %c.node.id, error = %e, "node unreachable, trying the next");
                errors.push(e.to_string());
            }
        }
    }
    Err(ConnectError::NoNode(if errors.is_empty() {
        "no relay node to try".into()
    } else {
        format!("no relay node accepted the session: {}", errors.join("; "))
    }))
}

impl Controller {
    /// Connects `req` for the logged-in `billing` account (`ca_pem`: the mesh CA). Cancel by
    /// dropping the future: the session billing opened is stopped either way.
    pub async fn connect(
        billing: BillingClient,
        ca_pem: String,
        req: ConnectRequest,
        progress: impl Fn(Progress),
    ) -> Result<Controller, ConnectError> {
        Self::connect_until(billing, ca_pem, req, progress, std::future::pending()).await
    }

    /// [`Controller::connect`], given up when `cancel` resolves (a signal, a Cancel button):
    /// the session billing opened is stopped before this returns, whatever went wrong.
    pub async fn connect_until(
        billing: BillingClient,
        ca_pem: String,
        req: ConnectRequest,
        progress: impl Fn(Progress),
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<Controller, ConnectError> {
        tokio::pin!(cancel);
        progress(Progress::Ticket);
        let grant = tokio::select! {
            g = billing.request_session(&req.game) => g?,
            _ = &mut cancel => return Err(ConnectError::Cancelled),
        };
        let guard = SlotGuard {
            billing: billing.clone(),
            session: Some(grant.session_id.clone()),
        };
        let id = grant.session_id.clone();
        let r = tokio::select! {
            r = Self::start(billing.clone(), ca_pem, req, grant, progress) => r,
            _ = &mut cancel => Err(ConnectError::Cancelled),
        };
        guard.disarm();
        if r.is_err() {
            // Awaited, not left to a background task: a CLI that exits right after an error
            // must not leave the plan's slot taken.
            if let Err(e) = billing.stop_session(&id).await {
                tracing::warn!(session = %id, error = %e, "could not release the session at billing");
            }
        }
        r
    }

    async fn start(
        billing: BillingClient,
        ca_pem: String,
        req: ConnectRequest,
        grant: SessionGrant,
        progress: impl Fn(Progress),
    ) -> Result<Controller, ConnectError> {
        let nodes: Vec<NodeInfo> = grant
            .nodes
            .iter()
            .filter(|n| req.node.as_ref().is_none_or(|id| n.id == *id))
            .cloned()
            .collect();
        let in_region = |n: &NodeInfo| {
            req.region
                .as_ref()
                .is_none_or(|r| n.region.eq_ignore_ascii_case(r))
        };
        if let Some(r) = &req.region
            && !nodes.is_empty()
            && !nodes.iter().any(in_region)
        {
            let mut have: Vec<&str> = nodes.iter().map(|n| n.region.as_str()).collect();
            have.sort_unstable();
            have.dedup();
            return Err(ConnectError::NoNode(format!(
                "no relay node in region {r} is online right now (nodes are in: {}); pick another region or Auto",
                have.join(", ")
            )));
        }
        if nodes.is_empty() {
            return Err(ConnectError::NoNode(match &req.node {
                Some(id) => format!(
                    "node {id} is not among the nodes billing offers for this session (`plg nodes --game {}` lists them)",
                    req.game
                ),
                None => "billing has no relay node online right now; try again in a minute".into(),
            }));
        }
        // Proxy capture needs one server address: checked before any probing.
        let server = match req.capture {
            CaptureMode::Proxy { server, .. } => Some(
                server
                    .or_else(|| single_target(&grant.destinations))
                    .ok_or_else(|| ConnectError::ServerNeeded(format!(
                        "{} has several server ranges: proxy capture needs the game server's address (--to IP:PORT, or the app's settings), or install the capture helper (`plg-capture install`)",
                        grant.game.name
                    )))?,
            ),
            _ => single_target(&grant.destinations),
        };
        progress(Progress::Probing(grant.nodes.len()));
        // Every offered node is probed (a pinned exit still needs relays and a backup), and
        // the game server directly with the same kind of probe, at the same time.
        let (all, direct) = tokio::join!(
            route::probe_nodes(&grant.nodes, &ca_pem, req.probes),
            direct_probe(server, grant.game.query.as_deref(), 3),
        );
        let m = route::measurements(&all, direct.as_ref(), server.map(|s| s.ip()));
        let chosen = match (&req.node, &req.region) {
            (Some(id), _) => route::choose_exit(&m, id),
            // The best exit inside the region, by the same ranking.
            (None, Some(_)) => exit_order(&all, route::choose(&m, None).as_ref(), None)
                .iter()
                .find(|c| in_region(&c.node))
                .and_then(|c| route::choose_exit(&m, &c.node.id)),
            (None, None) => route::choose(&m, None),
        };
        let verdict = chosen.as_ref().map_or_else(
            || "no relay node answered: acceleration is not available right now".to_owned(),
            RoutePlan::summary,
        );
        progress(Progress::Advice(verdict.clone()));
        progress(Progress::Opening);
        let ticket = grant.ticket_bytes()?;
        let mut order = exit_order(&all, chosen.as_ref(), req.node.as_deref());
        order.retain(|c| in_region(&c.node));
        let (node, tunnel) = open_ranked(&order, &ca_pem, &ticket).await?;
        let tunnel = tunnel.with_protection(req.protection);
        let allowed = tunnel.accept.max_paths.max(1);
        let n = req.paths.clamp(1, allowed) as usize;
        let relays = route::answering(&all);
        // The plan of the exit that accepted (the chosen one unless it was unreachable).
        let node_plan = match chosen {
            Some(p) if p.exit == node.id => Some(p),
            _ => route::choose_exit(&m, &node.id),
        };
        let plan = match &node_plan {
            Some(p) => route::plan_route_paths(p, tunnel.data_addr, &relays, n),
            None => route::plan_paths(&node, tunnel.data_addr, &relays, n),
        };
        let failover = Failover {
            ticket: ticket.clone(),
            ca_pem: ca_pem.clone(),
            // A pinned exit fails over too: every other node, best exit first (the engine
            // puts the backup the exit named first).
            candidates: exit_order(&all, node_plan.as_ref(), None)
                .into_iter()
                .filter(|c| c.node.id != node.id)
                .map(|c| c.node)
                .collect(),
            after: FAILOVER_AFTER,
            relays: plan
                .iter()
                .map(|p| p.relay.as_ref().map(|r| r.id.clone()))
                .collect(),
        };
        let route_view = RouteView {
            summary: verdict.clone(),
            direct: m.direct,
            exit_game: m.to_game.get(&node.id).copied(),
            plg: None,
            recommended: None,
        };
        let path_addrs: Vec<SocketAddr> = plan.iter().map(|p| p.addr).collect();
        let data_ip = tunnel.data_addr.ip();
        let own = |t: Targets| {
            // Our own traffic (nodes, relays, billing) must never be captured.
            t.exclude([data_ip])
                .exclude_own(grant.nodes.iter(), billing.base())
        };
        let capture_err =
            |e: &dyn std::fmt::Display, what: &str| ConnectError::Capture(format!("{what}: {e}"));
        let targets = Targets::parse(&grant.destinations)
            .map_err(|e| capture_err(&e, "the ticket's destinations"))?;
        // The data path on whichever capture the request names.
        macro_rules! start {
            ($capture:expr) => {
                Proxy::start_on(
                    node.clone(),
                    tunnel,
                    $capture,
                    path_addrs,
                    req.redundancy,
                    Some(failover),
                )
                .await
                .map_err(|e| capture_err(&e, "starting the data path"))?
            };
        }
        let (proxy, local_addr) = match req.capture {
            CaptureMode::Proxy { listen, .. } => {
                let to = server.expect("checked above");
                let _ = targets;
                let capture = ProxyCapture::bind(listen, to)
                    .await
                    .map_err(|e| capture_err(&e, &format!("cannot listen on {listen}")))?;
                let local = capture
                    .local_addr()
                    .map_err(|e| capture_err(&e, "proxy address"))?;
                let p = start!(capture);
                (p, Some(local))
            }
            #[cfg(target_os = "linux")]
            CaptureMode::Tun => {
                let targets = own(targets).await;
                let capture = TunCapture::open(TunConfig::new(targets)).map_err(|e| {
                    capture_err(
                        &e,
                        "cannot set up TUN capture (needs root or CAP_NET_ADMIN)",
                    )
                })?;
                let p = start!(capture);
                (p, None)
            }
            #[cfg(target_os = "linux")]
            CaptureMode::Helper => {
                let targets = own(targets).await;
                let capture = crate::capture::helper::linux::HelperCapture::open(
                    &crate::capture::helper::socket_path(),
                    &ticket,
                    targets.destinations().to_vec(),
                    targets.excluded().to_vec(),
                )
                .await
                .map_err(|e| capture_err(&e, "capture helper"))?;
                let p = start!(capture);
                (p, None)
            }
            #[cfg(windows)]
            CaptureMode::Helper => {
                let targets = own(targets).await;
                let capture = crate::capture::helper::windows::PipeCapture::open(
                    &ticket,
                    targets.destinations().to_vec(),
                    targets.excluded().to_vec(),
                )
                .await
                .map_err(|e| capture_err(&e, "capture helper"))?;
                let p = start!(capture);
                (p, None)
            }
            #[cfg(windows)]
            CaptureMode::WinDivert => {
                let targets = own(targets).await;
                let capture = WinDivertCapture::open(targets)
                    .map_err(|e| capture_err(&e, "cannot open WinDivert (run as administrator)"))?;
                let p = start!(capture);
                (p, None)
            }
            #[allow(unreachable_patterns)]
            other => {
                let _ = (targets, own, tunnel);
                return Err(ConnectError::Capture(format!(
                    "capture mode {other:?} is not available on this system"
                )));
            }
        };
        let info = SessionInfo {
            session_id: grant.session_id.clone(),
            game: grant.game.slug.clone(),
            game_name: grant.game.name.clone(),
            node: node.clone(),
            relays: plan.iter().map(|p| p.relay.clone()).collect(),
            capture: proxy.capture.clone(),
            local_addr,
            server,
            destinations: grant.destinations.clone(),
            redundancy: req.redundancy,
            started_at: unix_now(),
            expires_at: grant.expires_at,
        };
        let (info_tx, info_rx) = watch::channel(info);
        let (route_tx, route_rx) = watch::channel(route_view);
        let record = Arc::new(std::sync::Mutex::new(Record {
            report: SessionReport {
                game: grant.game.slug.clone(),
                session_id: grant.session_id.clone(),
                started_at: unix_now(),
                route_at_connect: verdict.clone(),
                route_now: verdict,
                exit: node.id.clone(),
                ..SessionReport::default()
            },
            direct: direct
                .iter()
                .flat_map(|p| {
                    let mut v: Vec<Option<Duration>> = p.rtts.iter().copied().map(Some).collect();
                    v.resize(p.sent as usize, None);
                    v
                })
                .collect(),
            plg: Vec::new(),
        }));
        let (events_tx, events) = mpsc::channel(64);
        let (stop, stop_rx) = watch::channel(false);
        let stats = proxy.stats.clone();
        let paths = proxy.paths.clone();
        let grant_query = grant.game.query.clone();
        let runner = Runner {
            billing,
            ca_pem,
            game: req.game.clone(),
            keep_alive: req.keep_alive,
            reevaluate: req.reevaluate.max(Duration::from_secs(1)),
            grant,
            valid_until: tokio::time::Instant::now(),
            ticket,
            info: info_tx,
            events: events_tx,
            route: route_tx,
            record: record.clone(),
            // The shadow probe needs the server's address, and must not be captured itself:
            // proxy capture only (TUN and WinDivert would carry it through the session).
            shadow: match req.capture {
                CaptureMode::Proxy { .. } => server,
                _ => None,
            },
            query: grant_query,
            pinned: req.node.clone(),
        };
        let task = tokio::spawn(runner.run(proxy, stop_rx));
        Ok(Controller {
            info: info_rx,
            route: route_rx,
            record,
            stats,
            paths,
            events,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The session as it stands (node and relays follow failovers and renewals).
    pub fn info(&self) -> SessionInfo {
        self.info.borrow().clone()
    }

    /// Watch the session info.
    pub fn watch_info(&self) -> watch::Receiver<SessionInfo> {
        self.info.clone()
    }

    /// The route now: verdict, direct vs through PLG, any recommended exit.
    pub fn route(&self) -> RouteView {
        self.route.borrow().clone()
    }

    /// The session report so far ([`Controller::finish`] gives the final one).
    pub fn report(&self) -> SessionReport {
        report_of(&self.record, &self.stats)
    }

    /// [`Controller::stop`], then the session's final report.
    pub async fn finish(self) -> (EndReason, SessionReport) {
        let (record, stats) = (self.record.clone(), self.stats.clone());
        let reason = self.stop().await;
        (reason, report_of(&record, &stats))
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    /// Path health.
    pub fn paths(&self) -> PathsView {
        self.paths.borrow().clone()
    }

    /// The next event; `None` once the session has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Whether the session ended by itself.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Ends the session: CLOSE to the node, billing's slot released. Returns why it ended
    /// (`Stopped`, unless it had ended by itself before).
    pub async fn stop(mut self) -> EndReason {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        match self.task.take() {
            Some(t) => t.await.unwrap_or(EndReason::Stopped),
            None => EndReason::Stopped,
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // The runner ends the session when its stop channel closes.
        self.stop.take();
    }
}

/// The report from what the runner recorded and the live counters.
fn report_of(record: &std::sync::Mutex<Record>, stats: &ProxyStats) -> SessionReport {
    let rec = record.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = rec.report.clone();
    r.direct = RttSummary::of(&rec.direct);
    r.plg = RttSummary::of(&rec.plg);
    r.reduction_percent = match (r.direct.p50_ms, r.plg.p50_ms) {
        (Some(d), Some(p)) if d > 0.0 => Some(((1.0 - p / d) * 1000.0).round() / 10.0),
        _ => None,
    };
    r.packets_up = stats.from_game.load(std::sync::atomic::Ordering::Relaxed);
    r.packets_down = stats.to_game.load(std::sync::atomic::Ordering::Relaxed);
    r
}

/// The background half of a [`Controller`]: renewal, re-probing, events, the end.
struct Runner {
    billing: BillingClient,
    ca_pem: String,
    game: String,
    keep_alive: bool,
    reevaluate: Duration,
    grant: SessionGrant,
    /// When the current ticket runs out (monotonic clock, see [`ticket_schedule`]).
    valid_until: tokio::time::Instant,
    ticket: Vec<u8>,
    info: watch::Sender<SessionInfo>,
    events: mpsc::Sender<SessionEvent>,
    route: watch::Sender<RouteView>,
    record: Arc<std::sync::Mutex<Record>>,
    /// The game server the shadow probe measures directly (`None`: no shadow probe).
    shadow: Option<SocketAddr>,
    /// The game's query protocol, for the shadow probe.
    query: Option<String>,
    /// The exit the user pinned: never moved for a better one.
    pinned: Option<String>,
}

/// What a background job of the session loop finished with.
enum Job {
    Renewed(anyhow::Result<renew::Renewed>),
    RenewedInPlace((SessionGrant, Vec<u8>)),
    /// A re-evaluation: the plan (keeping the current exit unless another is clearly
    /// better) and the nodes it was made from.
    Evaluated(Option<Evaluation>),
    Better(Option<(NodeInfo, Tunnel, String)>),
}

impl Runner {
    async fn emit(&self, ev: SessionEvent) {
        // A slow or absent reader must not stall the session: events are dropped when the
        // front end lags by 64.
        let _ = self.events.try_send(ev);
    }

    /// The recommended exit, once the game has been idle long enough to take it.
    fn due_move(&self, idle: Duration) -> Option<NodeInfo> {
        if idle < EXIT_CHANGE_IDLE {
            return None;
        }
        let exit = self.route.borrow().recommended.clone()?;
        self.node_by_id(&exit)
    }

    fn lock_record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn node_by_id(&self, id: &str) -> Option<NodeInfo> {
        self.grant.nodes.iter().find(|n| n.id == id).cloned()
    }

    async fn run(mut self, mut p: Proxy, mut stop: watch::Receiver<bool>) -> EndReason {
        let now = tokio::time::Instant::now;
        let (renew_in, valid_for) = ticket_schedule(&self.grant);
        let mut renew_at = now() + renew_in;
        self.valid_until = now() + valid_for;
        let mut reevaluate_at = tokio::time::Instant::now() + self.reevaluate;
        let mut job: Option<JoinHandle<Job>> = None;
        let mut last_error: Option<String> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // The game's activity, for exit changes (see EXIT_CHANGE_IDLE).
        let stats = p.stats.clone();
        let mut game_packets = 0u64;
        let mut game_active_at = now();
        let mut sample_at = now();
        let mut direct_window: std::collections::VecDeque<Option<Duration>> = Default::default();
        let (shadow_tx, mut shadow_rx) = mpsc::channel::<Option<Duration>>(8);
        let shadow = self
            .shadow
            .map(|server| tokio::spawn(shadow_probe(server, self.query.clone(), shadow_tx)));
        let reason = loop {
            tokio::select! {
                Some(sample) = shadow_rx.recv() => {
                    if direct_window.len() >= SHADOW_WINDOW {
                        direct_window.pop_front();
                    }
                    direct_window.push_back(sample);
                    let probe = probe::Probe {
                        sent: direct_window.len() as u32,
                        rtts: direct_window.iter().flatten().copied().collect(),
                    };
                    self.route.send_modify(|r| r.direct = Leg::from_probe(&probe));
                    push_sample(&mut self.lock_record().direct, sample);
                }
                r = stop.changed() => {
                    // Stopped, or the controller was dropped.
                    let _ = r;
                    break EndReason::Stopped;
                }
                Some(ev) = p.events.recv() => {
                    match &ev {
                        ProxyEvent::Failover { to, .. } => {
                            let node = self.node_by_id(to);
                            self.info.send_modify(|i| if let Some(n) = node { i.node = n });
                        }
                        ProxyEvent::RelayMoved { path, to, .. } => {
                            let node = self.node_by_id(to);
                            self.info.send_modify(|i| if let Some(r) = i.relays.get_mut(*path as usize) { *r = node });
                        }
                        _ => {}
                    }
                    self.emit(SessionEvent::Path(ev)).await;
                }
                r = async { job.as_mut().expect("guarded").await }, if job.is_some() => {
                    job = None;
                    match r {
                        Ok(Job::RenewedInPlace((grant, ticket))) => {
                            let (renew_in, valid_for) = ticket_schedule(&grant);
                            renew_at = now() + renew_in;
                            self.valid_until = now() + valid_for;
                            self.info.send_modify(|i| i.expires_at = grant.expires_at);
                            let node = self.info.borrow().node.id.clone();
                            self.emit(SessionEvent::Renewed {
                                session_id: grant.session_id.clone(),
                                node,
                                expires_at: grant.expires_at,
                                in_place: true,
                            }).await;
                            self.grant = grant;
                            self.ticket = ticket.clone();
                            p.set_failover_ticket(ticket).await;
                            last_error = None;
                        }
                        Ok(Job::Renewed(Ok(renewed))) => {
                            let ticket = match renewed.grant.ticket_bytes() {
                                Ok(t) => t,
                                Err(e) => { last_error = Some(e.to_string()); continue; }
                            };
                            let (renew_in, valid_for) = ticket_schedule(&renewed.grant);
                            renew_at = now() + renew_in;
                            self.valid_until = now() + valid_for;
                            let (id, exp, node) = (renewed.grant.session_id.clone(), renewed.grant.expires_at, renewed.node.clone());
                            self.grant = renewed.grant;
                            self.ticket = ticket.clone();
                            self.info.send_modify(|i| {
                                i.session_id = id.clone();
                                i.expires_at = exp;
                                i.node = node.clone();
                            });
                            p.switch_tunnel(renewed.node, renewed.tunnel, ticket).await;
                            self.emit(SessionEvent::Renewed { session_id: id, node: node.id, expires_at: exp, in_place: false }).await;
                            last_error = None;
                        }
                        Ok(Job::Renewed(Err(e))) => {
                            let hint = crate::explain::advice(&e).map(|h| format!(" — {h}")).unwrap_or_default();
                            let error = format!("{e:#}{hint}");
                            // Retry sooner when the ticket is about to run out.
                            let left = self.valid_until.saturating_duration_since(now());
                            let retry = RENEW_RETRY.min((left / 3).max(Duration::from_secs(1)));
                            renew_at = now() + retry;
                            self.emit(SessionEvent::RenewFailed { error: error.clone(), retry_in: retry }).await;
                            last_error = Some(error);
                        }
                        Ok(Job::Better(Some((node, tunnel, why)))) => {
                            self.info.send_modify(|i| i.node = node.clone());
                            p.switch_tunnel(node.clone(), tunnel, self.ticket.clone()).await;
                            self.route.send_modify(|r| r.recommended = None);
                            {
                                let mut rec = self.lock_record();
                                rec.report.exit = node.id.clone();
                                rec.report.route_events.push(why.clone());
                            }
                            self.emit(SessionEvent::Moved { why }).await;
                        }
                        Ok(Job::Evaluated(Some(Evaluation { plan, current: now_plan, nodes }))) => {
                            let current = self.info.borrow().node.id.clone();
                            let summary = plan.summary();
                            let exit_game = now_plan.as_ref().and_then(|p| p.routes.first()).and_then(|r| r.to_game);
                            self.lock_record().report.route_now = summary.clone();
                            let better = (plan.exit != current && self.pinned.is_none())
                                .then(|| plan.exit.clone());
                            let told = self.route.borrow().recommended.clone();
                            self.route.send_modify(|r| {
                                r.summary = summary.clone();
                                r.exit_game = exit_game;
                                r.recommended = better.clone();
                            });
                            if !nodes.is_empty() {
                                self.grant.nodes = nodes;
                            }
                            if let Some(exit) = better
                                && told.as_deref() != Some(exit.as_str())
                            {
                                let ms = |p: Option<&RoutePlan>| {
                                    p.and_then(|p| p.expected)
                                        .map_or_else(|| "?".to_owned(), |l| format!("{:.0}", l.rtt.as_secs_f64() * 1000.0))
                                };
                                let text = format!(
                                    "{exit} is a better exit than {current} ({} ms to the game instead of {}); the session moves there once the game has been idle for {} s (between matches)",
                                    ms(Some(&plan)),
                                    ms(now_plan.as_ref()),
                                    EXIT_CHANGE_IDLE.as_secs()
                                );
                                self.lock_record().report.route_events.push(text.clone());
                                self.emit(SessionEvent::Recommend { exit, text }).await;
                            }
                        }
                        Ok(Job::Better(None)) | Ok(Job::Evaluated(None)) | Err(_) => {}
                    }
                }
                _ = tick.tick() => {
                    let sent = stats.from_game.load(std::sync::atomic::Ordering::Relaxed);
                    if sent != game_packets {
                        game_packets = sent;
                        game_active_at = now();
                    }
                    if now() >= sample_at {
                        sample_at = now() + SHADOW_EVERY;
                        // Through PLG: client↔exit from the ping frames + exit→game as announced.
                        let node_rtt = stats.rtt_us.load(std::sync::atomic::Ordering::Relaxed);
                        let exit_game = self.route.borrow().exit_game;
                        let plg = (node_rtt > 0)
                            .then(|| exit_game.map(|g| Duration::from_micros(node_rtt) + g.rtt))
                            .flatten();
                        self.route.send_modify(|r| r.plg = plg);
                        push_sample(&mut self.lock_record().plg, plg);
                    }
                    if now() >= self.valid_until {
                        break EndReason::TicketExpired {
                            error: last_error.clone().unwrap_or_else(|| "no renewal happened".into()),
                        };
                    }
                    if !self.keep_alive || job.is_some() {
                        continue;
                    }
                    if now() >= renew_at {
                        let (billing, ca, game) = (self.billing.clone(), self.ca_pem.clone(), self.game.clone());
                        let (prefer, old) = (self.info.borrow().node.id.clone(), self.grant.session_id.clone());
                        let control = p.control_connection();
                        job = Some(tokio::spawn(async move {
                            match renew::in_place(&billing, &control, &old).await {
                                Ok(renewed) => Job::RenewedInPlace(renewed),
                                Err(e) => {
                                    tracing::info!(error = %format!("{e:#}"), "in-place renewal failed; opening a new session");
                                    Job::Renewed(renew::renew(&billing, &ca, &game, &prefer, &old).await)
                                }
                            }
                        }));
                    } else if let Some(exit) = self.due_move(now().duration_since(game_active_at)) {
                        // Between matches: take the recommended exit now.
                        let (ca, ticket) = (self.ca_pem.clone(), self.ticket.clone());
                        let summary = self.route.borrow().summary.clone();
                        let why = format!(
                            "route: {summary}; the game was idle for {} s, so the session moved to {}",
                            now().duration_since(game_active_at).as_secs(),
                            exit.id
                        );
                        self.route.send_modify(|r| r.recommended = None);
                        job = Some(tokio::spawn(async move { Job::Better(move_to(exit, ca, ticket, why).await) }));
                    } else if tokio::time::Instant::now() >= reevaluate_at {
                        reevaluate_at = tokio::time::Instant::now() + self.reevaluate;
                        let (billing, game, grant_nodes, ca) = (self.billing.clone(), self.game.clone(), self.grant.nodes.clone(), self.ca_pem.clone());
                        let current = self.info.borrow().node.id.clone();
                        let direct = self.route.borrow().direct;
                        let server = self.info.borrow().server;
                        job = Some(tokio::spawn(async move {
                            Job::Evaluated(reevaluate(billing, game, grant_nodes, ca, current, direct, server).await)
                        }));
                    }
                }
            }
        };
        if let Some(j) = job {
            j.abort();
        }
        if let Some(s) = shadow {
            s.abort();
        }
        {
            let session = self.grant.session_id.clone();
            let mut rec = self.lock_record();
            rec.report.ended_at = unix_now();
            rec.report.session_id = session;
        }
        p.stop().await;
        let session = self.grant.session_id.clone();
        if let Err(e) = self.billing.stop_session(&session).await {
            tracing::warn!(session = %session, error = %e, "billing did not record the session's end");
        }
        self.emit(SessionEvent::Ended(reason.clone())).await;
        reason
    }
}

/// Re-evaluates the route: billing's current view of the nodes (their exit→game figures
/// move as the exits measure; the grant's list when billing does not answer), fresh client
/// probes, and the shadow probe's direct figure; keeps `current` unless another exit is
/// clearly better ([`route::choose`]).
async fn reevaluate(
    billing: BillingClient,
    game: String,
    grant_nodes: Vec<NodeInfo>,
    ca: String,
    current: String,
    direct: Option<Leg>,
    server: Option<SocketAddr>,
) -> Option<Evaluation> {
    let nodes = match billing.route_preview(&game).await {
        Ok(p) if !p.nodes.is_empty() => p.nodes,
        _ => grant_nodes,
    };
    let ranked = route::probe_nodes(&nodes, &ca, 3).await;
    let mut m = route::measurements(&ranked, None, server.map(|s| s.ip()));
    m.direct = direct;
    Some(Evaluation {
        plan: route::choose(&m, Some(&current))?,
        current: route::choose_exit(&m, &current),
        nodes,
    })
}

/// What a re-evaluation found.
struct Evaluation {
    /// The best plan (the current exit unless another is clearly better).
    plan: RoutePlan,
    /// The current exit's own plan (`None`: it no longer answers).
    current: Option<RoutePlan>,
    /// The nodes it was made from.
    nodes: Vec<NodeInfo>,
}

/// Opens the session on `node` (same ticket: a node takes any valid one).
async fn move_to(
    node: NodeInfo,
    ca: String,
    ticket: Vec<u8>,
    why: String,
) -> Option<(NodeInfo, Tunnel, String)> {
    let addr = node.control_addr.parse().ok()?;
    let tunnel = Tunnel::open(addr, &node.server_name, &ca, &ticket)
        .await
        .ok()?;
    Some((node, tunnel, why))
}

/// The shadow probe: one direct probe of `server` every [`SHADOW_EVERY`], all session long;
/// stops after five unanswered probes if the server never answered (it does not speak the
/// probe).
async fn shadow_probe(
    server: SocketAddr,
    query: Option<String>,
    tx: mpsc::Sender<Option<Duration>>,
) {
    let mut ever = false;
    let mut silent = 0u32;
    let mut every = tokio::time::interval(SHADOW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(p) =
            direct_probe_raw(Some(server), query.as_deref(), 1, Duration::from_secs(1)).await
        else {
            return;
        };
        let rtt = p.rtts.first().copied();
        ever |= rtt.is_some();
        silent = if rtt.is_some() { 0 } else { silent + 1 };
        if tx.send(rtt).await.is_err() || (!ever && silent >= 5) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn grant(issued_at: u64, expires_at: u64) -> SessionGrant {
        let ticket = plg_proto::Ticket {
            key_id: 1,
            issued_at,
            expires_at,
            session_id: 7,
            account_id: 1,
            plan: 0,
            game_id: 1,
            path_limit: 2,
            bandwidth_kbps: 0,
            destinations: vec!["1.2.3.4/32:1".parse().unwrap()],
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        serde_json::from_value(serde_json::json!({
            "session_id": "7",
            "ticket": base64::engine::general_purpose::STANDARD.encode(ticket.sign(&key)),
            "expires_at": expires_at,
            "game": {"slug": "g", "name": "G"},
            "destinations": [], "nodes": []
        }))
        .unwrap()
    }

    #[test]
    fn renewal_follows_the_tickets_lifetime_not_the_local_clock() {
        // Billing's clock is a day behind ours: by our clock this ticket expired long ago,
        // yet it is valid for 60 s and must be renewed after 40.
        let day_ago = unix_now() - 86_400;
        assert_eq!(
            ticket_schedule(&grant(day_ago, day_ago + 60)),
            (Duration::from_secs(40), Duration::from_secs(60))
        );
        // Two hours: renewed at 80 %.
        let now = unix_now();
        assert_eq!(
            ticket_schedule(&grant(now, now + 7200)),
            (Duration::from_secs(5760), Duration::from_secs(7200))
        );
    }

    #[test]
    fn a_single_server_game_needs_no_address() {
        assert_eq!(
            single_target(&["127.0.0.1/32:4000".into()]),
            Some("127.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(single_target(&["10.0.0.0/8:4000".into()]), None);
        assert_eq!(single_target(&["1.2.3.4/32:1-2".into()]), None);
        assert_eq!(
            single_target(&["1.2.3.4/32:1".into(), "1.2.3.5/32:1".into()]),
            None
        );
    }
}
