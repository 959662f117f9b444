//! One accelerated session: starts `plg-client`'s proxy with the chosen capture, publishes a
//! [`Tick`] of live numbers every second, turns proxy events into notices, and sums the
//! session up when it ends.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use plg_client::{CaptureMode, ConnectRequest, Controller, EndReason, ProxyEvent, SessionEvent};
use serde::Serialize;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use ts_rs::TS;

use crate::boost::{self, Boosting};
use crate::history::{self, HistoryEntry};
use crate::notice::{What, notice};
use crate::probe::{EchoProbe, Sample};
use crate::settings::{CaptureKind, Language, Redundancy, Settings};
use crate::{AppEvent, CmdError};

/// A relay node, as the window shows it (`plg_client::billing::NodeInfo`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, TS)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// The name its operator gave it (`fra-1`), else the id: what the window shows.
    pub name: String,
    /// TLS name in the node's certificate.
    pub server_name: String,
    /// Region label.
    pub region: String,
    /// QUIC control address.
    pub control_addr: String,
    /// UDP data address.
    pub data_addr: String,
}

impl From<plg_client::NodeInfo> for NodeInfo {
    fn from(n: plg_client::NodeInfo) -> Self {
        // Destructured so a new field is a compile error here, not a silent omission.
        let name = n.label().to_owned();
        let plg_client::NodeInfo {
            id,
            name: _,
            server_name,
            region,
            control_addr,
            data_addr,
            // Route measurements are shown by the route screen, not the session card.
            game_rtt: _,
            mesh_rtt: _,
        } = n;
        NodeInfo {
            id,
            name,
            server_name,
            region,
            control_addr,
            data_addr,
        }
    }
}

/// What the dashboard shows about a running session.
#[derive(Debug, Clone, Serialize, PartialEq, TS)]
pub struct SessionInfo {
    /// Billing's session id.
    pub session_id: String,
    /// Game slug.
    pub game: String,
    /// Game display name.
    pub game_name: String,
    /// The node carrying the session.
    pub node: NodeInfo,
    /// Capture backend, described (`proxy 127.0.0.1:40000 → 1.2.3.4:27015`, `tun plg0`).
    pub capture: String,
    /// Proxy mode: where the game must send its packets.
    pub local_addr: Option<String>,
    /// Paths to the node.
    pub paths: u8,
    /// For each path, the node relaying it to the exit (`None`: straight to the exit).
    pub relays: Vec<Option<NodeInfo>>,
    /// Redundancy policy.
    pub redundancy: Redundancy,
    /// Unix seconds.
    #[ts(type = "number")]
    pub started_at: u64,
    /// Unix seconds when the ticket expires.
    #[ts(type = "number")]
    pub expires_at: u64,
    /// Whether direct vs accelerated is measured with echo probes (the demo game only).
    pub probing: bool,
}

/// A path's state on the dashboard.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, TS)]
#[serde(rename_all = "snake_case")]
pub enum PathState {
    /// Probes answered recently.
    Up,
    /// Silent for a while: carries nothing in `single`.
    Suspect,
    /// No probe answered yet.
    Waiting,
}

/// One path's health.
#[derive(Debug, Clone, Serialize, PartialEq, TS)]
pub struct PathTick {
    /// Path index.
    pub id: u8,
    /// Its state.
    pub state: PathState,
    /// Smoothed RTT, ms.
    pub rtt_ms: Option<f64>,
    /// RTT variation, ms.
    pub rttvar_ms: f64,
    /// Probe loss (EWMA), %.
    pub loss_pct: f64,
    /// Probes answered / sent.
    #[ts(type = "number")]
    pub probes_answered: u64,
    /// Probes sent.
    #[ts(type = "number")]
    pub probes_sent: u64,
    /// Frames from the node whose first copy came on this path.
    #[ts(type = "number")]
    pub first: u64,
    /// Copies that came on this path after another path's.
    #[ts(type = "number")]
    pub late: u64,
}

/// Live numbers, once a second.
#[derive(Debug, Clone, Serialize, PartialEq, TS)]
pub struct Tick {
    /// Seconds since the session started.
    pub secs: f64,
    /// Smoothed RTT to the node on the primary path, ms.
    pub node_rtt_ms: Option<f64>,
    /// Primary path.
    pub primary: u8,
    /// Whether frames currently go on every path.
    pub duplicating: bool,
    /// Each path.
    pub paths: Vec<PathTick>,
    /// Packets from the game.
    #[ts(type = "number")]
    pub packets_up: u64,
    /// Packets delivered to the game.
    #[ts(type = "number")]
    pub packets_down: u64,
    /// Payload bytes from the game.
    #[ts(type = "number")]
    pub bytes_up: u64,
    /// Payload bytes to the game.
    #[ts(type = "number")]
    pub bytes_down: u64,
    /// Duplicate copies dropped (another path was first).
    #[ts(type = "number")]
    pub duplicates: u64,
    /// Datagrams from the node dropped (forged, replayed, malformed).
    #[ts(type = "number")]
    pub dropped: u64,
    /// Echo probe straight to the game server (demo game only).
    pub direct: Option<Sample>,
    /// Echo probe through the session (demo game only).
    pub accelerated: Option<Sample>,
    /// Game RTT through PLG as the route knows it for any game: the node RTT plus the exit's
    /// own exit→game figure, ms (`None` until the exit has measured the game server).
    pub via_exit_ms: Option<f64>,
    /// The route verdict (`direct 94 ms → via fra-2 61 ms (−35 %)`, or that direct is better).
    pub verdict: String,
}

/// Averages of the probe samples over a session.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, TS)]
pub struct Average {
    /// Mean RTT, ms.
    pub rtt_ms: f64,
    /// Mean loss, %.
    pub loss_pct: f64,
    /// Mean jitter, ms.
    pub jitter_ms: f64,
    /// Samples averaged.
    pub samples: u32,
}

impl Average {
    fn add(&mut self, s: &Sample) {
        let n = f64::from(self.samples);
        self.rtt_ms = (self.rtt_ms * n + s.rtt_ms) / (n + 1.0);
        self.loss_pct = (self.loss_pct * n + s.loss_pct) / (n + 1.0);
        self.jitter_ms = (self.jitter_ms * n + s.jitter_ms) / (n + 1.0);
        self.samples += 1;
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq, TS)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The gamer (or the app quitting) stopped it.
    #[default]
    User,
    /// Its ticket expired.
    TicketExpired,
}

/// The before/after summary shown when a session ends.
#[derive(Debug, Clone, Serialize, PartialEq, Default, TS)]
pub struct Summary {
    /// Session length, s.
    pub duration_secs: f64,
    /// Payload bytes from the game.
    #[ts(type = "number")]
    pub bytes_up: u64,
    /// Payload bytes to the game.
    #[ts(type = "number")]
    pub bytes_down: u64,
    /// Packets from the game.
    #[ts(type = "number")]
    pub packets_up: u64,
    /// Packets to the game.
    #[ts(type = "number")]
    pub packets_down: u64,
    /// Failovers to another node.
    pub failovers: u32,
    /// Mean node RTT, ms (from the session's pings).
    pub node_rtt_ms: Option<f64>,
    /// Direct, from echo probes (demo game only).
    pub before: Option<Average>,
    /// Accelerated, from echo probes (demo game only).
    pub after: Option<Average>,
    /// Why it ended.
    pub ended_by: EndedBy,
    /// The exit at the end (its name) and region.
    pub exit: String,
    /// See `exit`.
    pub region: String,
    /// Game ping straight to the server, median ms, from the shadow probe (any game whose
    /// server answers probes).
    pub direct_ms: Option<f64>,
    /// Game ping through PLG, median ms (client↔exit plus the exit's exit→game figure).
    pub plg_ms: Option<f64>,
    /// How much lower PLG was, percent (negative: higher).
    pub reduction_percent: Option<f64>,
}

impl Summary {
    /// The history entry for this session: the echo probes' before/after where they ran
    /// (the demo game), else the route report's medians.
    fn history(&self, info: &SessionInfo) -> HistoryEntry {
        let (direct_ms, plg_ms, reduction, direct_loss, plg_loss) = match (self.before, self.after)
        {
            (Some(b), Some(a)) => (
                Some(b.rtt_ms),
                Some(a.rtt_ms),
                (b.rtt_ms > 0.0).then(|| (b.rtt_ms - a.rtt_ms) / b.rtt_ms * 100.0),
                Some(b.loss_pct),
                Some(a.loss_pct),
            ),
            _ => (
                self.direct_ms,
                self.plg_ms,
                self.reduction_percent,
                None,
                None,
            ),
        };
        HistoryEntry {
            game: info.game.clone(),
            game_name: info.game_name.clone(),
            started_at: info.started_at,
            duration_secs: self.duration_secs,
            exit: self.exit.clone(),
            region: self.region.clone(),
            direct_ms,
            plg_ms,
            reduction_percent: reduction,
            direct_loss_pct: direct_loss,
            plg_loss_pct: plg_loss,
            failovers: self.failovers,
            ended_by: self.ended_by,
        }
    }
}

/// A running session: the shared [`Controller`] (renewal, failover, clean end) plus the
/// app's presentation — ticks, notices and the summary.
#[derive(Debug)]
pub struct Session {
    /// What it is (the node and relays follow failovers; see [`Session::info`]).
    info: watch::Receiver<SessionInfo>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Summary>,
    /// The game's process for the FPS boost (`None` when the boost is off).
    game_pid: Option<watch::Sender<Option<u32>>>,
}

/// The controller's request for `game` under `settings`.
pub fn request(
    game: &str,
    node: Option<String>,
    region: Option<String>,
    settings: &Settings,
) -> Result<ConnectRequest, CmdError> {
    if !CaptureKind::available().contains(&settings.capture) {
        return Err(CmdError::new(
            "capture_unavailable",
            format!(
                "capture mode {} is not available on this system",
                serde_json::to_value(settings.capture).unwrap_or_default()
            ),
        ));
    }
    let capture = match settings.capture {
        // The game server: the setting, else the grant's only single-address destination
        // (`None`: the controller says what is missing).
        // No server typed and the capture helper installed: it captures the catalog's
        // ranges, nothing to point the game at (as `plg connect`'s `auto`).
        CaptureKind::Proxy
            if settings.game_server.is_none() && plg_client::capture::helper::available() =>
        {
            CaptureMode::Helper
        }
        CaptureKind::Proxy => CaptureMode::Proxy {
            listen: settings.proxy_listen,
            server: settings.game_server,
        },
        CaptureKind::Tun => CaptureMode::Tun,
        CaptureKind::Windivert => CaptureMode::WinDivert,
    };
    Ok(ConnectRequest {
        node,
        region: region.filter(|r| !r.is_empty()),
        capture,
        paths: settings.paths,
        redundancy: settings.redundancy.into(),
        ..ConnectRequest::new(game)
    })
}

fn view(i: &plg_client::SessionInfo, redundancy: Redundancy, probing: bool) -> SessionInfo {
    SessionInfo {
        session_id: i.session_id.clone(),
        game: i.game.clone(),
        game_name: i.game_name.clone(),
        node: i.node.clone().into(),
        capture: i.capture.clone(),
        local_addr: i.local_addr.map(|a| a.to_string()),
        paths: i.relays.len() as u8,
        relays: i
            .relays
            .iter()
            .map(|r| r.clone().map(NodeInfo::from))
            .collect(),
        redundancy,
        started_at: i.started_at,
        expires_at: i.expires_at,
        probing,
    }
}

impl Session {
    /// Takes over a connected controller: starts the probes (the echo game only), the ticker
    /// and, if `settings.fps_boost`, the FPS boost for `game_pid` (the game's process if it is
    /// running; [`Session::set_game_pid`] follows it later); `Connected` is emitted by the
    /// caller with [`Session::info`].
    /// Each session that ends is added to the history in `dir` ([`history`]).
    pub async fn start(
        ctl: Controller,
        settings: &Settings,
        probe: bool,
        game_pid: Option<u32>,
        events: broadcast::Sender<AppEvent>,
        dir: std::path::PathBuf,
    ) -> Result<Session, CmdError> {
        let ci = ctl.info();
        let probes = match (probe, ci.server, ci.local_addr) {
            (true, Some(direct), Some(local)) => Some((
                EchoProbe::start(direct)
                    .await
                    .context("starting the direct probe")?,
                EchoProbe::start(local)
                    .await
                    .context("starting the session probe")?,
            )),
            _ => None,
        };
        let info = view(&ci, settings.redundancy, probes.is_some());
        let (info_tx, info_rx) = watch::channel(info);
        let (stop, stop_rx) = oneshot::channel();
        let (game_tx, game_rx) = if settings.fps_boost {
            let (tx, rx) = watch::channel(game_pid);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let task = tokio::spawn(run(
            ctl,
            probes,
            info_tx,
            settings.language,
            events,
            stop_rx,
            game_rx,
            dir,
        ));
        Ok(Session {
            info: info_rx,
            stop,
            task,
            game_pid: game_tx,
        })
    }

    /// The game's process now (`None`: not running), for the FPS boost if it is on.
    pub fn set_game_pid(&self, pid: Option<u32>) {
        if let Some(tx) = &self.game_pid {
            tx.send_if_modified(|old| std::mem::replace(old, pid) != pid);
        }
    }

    /// What the session is now.
    pub fn info(&self) -> SessionInfo {
        self.info.borrow().clone()
    }

    /// Whether the session ended by itself (ticket expiry).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the session (CLOSE, billing's slot released); returns its summary.
    pub async fn stop(self) -> Summary {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The game's next pid; never, when the boost is off or the session is going away.
async fn game_changed(rx: &mut Option<watch::Receiver<Option<u32>>>) -> Option<u32> {
    let Some(r) = rx else {
        return std::future::pending().await;
    };
    match r.changed().await {
        Ok(()) => *r.borrow_and_update(),
        Err(_) => std::future::pending().await,
    }
}

fn tick(p: &Controller, secs: f64) -> Tick {
    let s = p.stats();
    let route = p.route();
    let view = p.paths();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rtt = s.rtt_us.load(Ordering::Relaxed);
    Tick {
        secs,
        node_rtt_ms: (rtt > 0).then(|| rtt as f64 / 1000.0),
        primary: view.primary,
        duplicating: view.duplicating,
        paths: view
            .paths
            .iter()
            .enumerate()
            .map(|(i, ps)| PathTick {
                id: i as u8,
                state: if ps.suspect {
                    PathState::Suspect
                } else if ps.probes_answered == 0 {
                    PathState::Waiting
                } else {
                    PathState::Up
                },
                rtt_ms: ps.srtt.map(ms),
                rttvar_ms: ms(ps.rttvar),
                loss_pct: ps.loss * 100.0,
                probes_answered: ps.probes_answered,
                probes_sent: ps.probes_sent,
                first: ps.first,
                late: ps.late,
            })
            .collect(),
        packets_up: s.from_game.load(Ordering::Relaxed),
        packets_down: s.to_game.load(Ordering::Relaxed),
        bytes_up: s.bytes_up.load(Ordering::Relaxed),
        bytes_down: s.bytes_down.load(Ordering::Relaxed),
        duplicates: s.duplicates.load(Ordering::Relaxed),
        dropped: s.dropped.load(Ordering::Relaxed),
        direct: None,
        accelerated: None,
        via_exit_ms: route.plg.map(ms),
        verdict: {
            let i = p.info();
            crate::named(
                &route.summary,
                &[
                    &[i.node],
                    &i.relays.into_iter().flatten().collect::<Vec<_>>()[..],
                ]
                .concat(),
            )
        },
    }
}

// The session task's inputs and outputs, each used once: a struct for them would only rename.
#[allow(clippy::too_many_arguments)]
async fn run(
    mut ctl: Controller,
    probes: Option<(EchoProbe, EchoProbe)>,
    info: watch::Sender<SessionInfo>,
    lang: Language,
    events: broadcast::Sender<AppEvent>,
    mut stop: oneshot::Receiver<()>,
    mut game_pid: Option<watch::Receiver<Option<u32>>>,
    dir: std::path::PathBuf,
) -> Summary {
    let started = tokio::time::Instant::now();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut summary = Summary::default();
    let (mut before, mut after) = (Average::default(), Average::default());
    let (mut rtt_sum, mut rtt_n) = (0.0, 0u32);
    let emit = |ev: AppEvent| {
        // No listener (window closed) is fine.
        let _ = events.send(ev);
    };
    let game_name = info.borrow().game_name.clone();
    let mut boosting = Boosting::new(boost::platform());
    // One notice per session if the boost fails, not one per game restart.
    let mut boost_told = false;
    if let Some(rx) = &mut game_pid {
        let pid = *rx.borrow_and_update();
        if let Err(e) = boosting.follow(pid).await {
            boost_told = true;
            emit(AppEvent::Notice(notice(
                What::BoostFailed {
                    reason: &e.to_string(),
                },
                lang,
            )));
        }
    }
    let ended_itself = loop {
        tokio::select! {
            _ = &mut stop => break false,
            pid = game_changed(&mut game_pid) => {
                if let Err(e) = boosting.follow(pid).await && !boost_told {
                    boost_told = true;
                    emit(AppEvent::Notice(notice(What::BoostFailed { reason: &e.to_string() }, lang)));
                }
            }
            ev = ctl.next_event() => {
                let Some(ev) = ev else { break true };
                // The header, the paths and the tray follow the node actually in use.
                let now = {
                    let old = info.borrow();
                    view(&ctl.info(), old.redundancy, old.probing)
                };
                if *info.borrow() != now {
                    info.send_replace(now.clone());
                    emit(AppEvent::Session(now));
                }
                let what = match &ev {
                    SessionEvent::Path(ProxyEvent::Failover { to, gap }) => {
                        summary.failovers += 1;
                        What::Failover { to, gap_ms: gap.as_millis() }
                    }
                    SessionEvent::Path(ProxyEvent::NodeLost { reason }) => What::NodeLost { reason },
                    SessionEvent::Path(ProxyEvent::PrimaryChanged { from, to }) => What::PrimaryChanged { from: *from, to: *to },
                    SessionEvent::Path(ProxyEvent::DestinationRefused(d)) => What::DestinationRefused { addr: d.to_string(), game: &game_name },
                    SessionEvent::Path(ProxyEvent::TooManyFlows) => What::TooManyFlows,
                    SessionEvent::Path(ProxyEvent::ProtectedMode { on, reason }) => What::ProtectedMode { on: *on, reason },
                    SessionEvent::Ended(EndReason::TicketExpired { .. }) => {
                        summary.ended_by = EndedBy::TicketExpired;
                        What::TicketExpired
                    }
                    SessionEvent::Recommend { exit, text } => What::BetterRoute { exit, text },
                    SessionEvent::Moved { why } => What::RouteChanged { why },
                    other => {
                        tracing::info!(event = ?other, "session event");
                        continue;
                    }
                };
                tracing::info!(event = ?ev, "session event");
                emit(AppEvent::Notice(notice(what, lang)));
            }
            _ = every.tick() => {
                let mut t = tick(&ctl, started.elapsed().as_secs_f64());
                if let Some((d, a)) = &probes {
                    t.direct = *d.samples.borrow();
                    t.accelerated = *a.samples.borrow();
                    if let Some(s) = &t.direct { before.add(s) }
                    if let Some(s) = &t.accelerated { after.add(s) }
                }
                if let Some(r) = t.node_rtt_ms {
                    rtt_sum += r;
                    rtt_n += 1;
                }
                summary.bytes_up = t.bytes_up;
                summary.bytes_down = t.bytes_down;
                summary.packets_up = t.packets_up;
                summary.packets_down = t.packets_down;
                emit(AppEvent::Tick(t));
            }
        }
    };
    drop(probes);
    boosting.end().await;
    let report = if ended_itself {
        ctl.report()
    } else {
        ctl.finish().await.1
    };
    let last = info.borrow().clone();
    summary.exit = last.node.name.clone();
    summary.region = last.node.region.clone();
    summary.direct_ms = report.direct.p50_ms;
    summary.plg_ms = report.plg.p50_ms;
    summary.reduction_percent = report.reduction_percent;
    summary.duration_secs = started.elapsed().as_secs_f64();
    summary.node_rtt_ms = (rtt_n > 0).then(|| rtt_sum / f64::from(rtt_n));
    summary.before = (before.samples > 0).then_some(before);
    summary.after = (after.samples > 0).then_some(after);
    if let Err(e) = history::append(&dir, summary.history(&last)) {
        tracing::warn!(error = %e, "could not save the session history");
    }
    emit(AppEvent::Ended(summary.clone()));
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_follow_the_settings() {
        let s = Settings::default();
        let r = request("g", None, None, &s).unwrap();
        assert_eq!(r.game, "g");
        assert!(matches!(r.capture, CaptureMode::Proxy { server: None, .. }));
        assert_eq!(r.redundancy, plg_client::Redundancy::ADAPTIVE);
        let s = Settings {
            game_server: Some("5.6.7.8:9".parse().unwrap()),
            proxy_listen: "127.0.0.1:4000".parse().unwrap(),
            redundancy: Redundancy::Duplicate,
            paths: 3,
            ..Settings::default()
        };
        let r = request("g", Some("node-2".into()), None, &s).unwrap();
        assert!(matches!(
            r.capture,
            CaptureMode::Proxy { server: Some(a), listen }
                if a == "5.6.7.8:9".parse().unwrap() && listen.port() == 4000
        ));
        assert_eq!(
            (r.redundancy, r.paths, r.node.as_deref()),
            (plg_client::Redundancy::Duplicate, 3, Some("node-2"))
        );
        // A capture this OS lacks is refused before anything is opened.
        let missing = if cfg!(windows) {
            CaptureKind::Tun
        } else {
            CaptureKind::Windivert
        };
        let s = Settings {
            capture: missing,
            ..Settings::default()
        };
        assert_eq!(
            request("g", None, None, &s).unwrap_err().code,
            "capture_unavailable"
        );
    }

    #[test]
    fn averages() {
        let mut a = Average::default();
        a.add(&Sample {
            rtt_ms: 10.0,
            loss_pct: 0.0,
            jitter_ms: 1.0,
            probes: 20,
        });
        a.add(&Sample {
            rtt_ms: 20.0,
            loss_pct: 10.0,
            jitter_ms: 3.0,
            probes: 20,
        });
        assert_eq!(
            (a.rtt_ms, a.loss_pct, a.jitter_ms, a.samples),
            (15.0, 5.0, 2.0, 2)
        );
    }
}
