//! One accelerated session: starts `plg-client`'s proxy with the chosen capture, publishes a
//! [`Tick`] of live numbers every second, turns proxy events into notices, and sums the
//! session up when it ends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use plg_client::capture::{ProxyCapture, Targets};
use plg_client::{Failover, NodeInfo, Proxy, ProxyEvent, Redundancy, SessionGrant, Tunnel};
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::notice::{What, notice};
use crate::probe::{EchoProbe, Sample};
use crate::settings::Settings;
use crate::{AppEvent, CmdError, unix_now};

/// What the dashboard shows about a running session.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
    pub relays: Vec<Option<String>>,
    /// Redundancy policy.
    pub redundancy: String,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds when the ticket expires.
    pub expires_at: u64,
    /// Whether direct vs accelerated is measured with echo probes (the demo game only).
    pub probing: bool,
}

/// One path's health.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PathTick {
    /// Path index.
    pub id: u8,
    /// `up`, `suspect` or `waiting` (no probe answered yet).
    pub state: &'static str,
    /// Smoothed RTT, ms.
    pub rtt_ms: Option<f64>,
    /// RTT variation, ms.
    pub rttvar_ms: f64,
    /// Probe loss (EWMA), %.
    pub loss_pct: f64,
    /// Probes answered / sent.
    pub probes_answered: u64,
    /// Probes sent.
    pub probes_sent: u64,
}

/// Live numbers, once a second.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
    pub packets_up: u64,
    /// Packets delivered to the game.
    pub packets_down: u64,
    /// Payload bytes from the game.
    pub bytes_up: u64,
    /// Payload bytes to the game.
    pub bytes_down: u64,
    /// Duplicate copies dropped (another path was first).
    pub duplicates: u64,
    /// Datagrams from the node dropped (forged, replayed, malformed).
    pub dropped: u64,
    /// Echo probe straight to the game server (demo game only).
    pub direct: Option<Sample>,
    /// Echo probe through the session (demo game only).
    pub accelerated: Option<Sample>,
}

/// Averages of the probe samples over a session.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
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

/// The before/after summary shown when a session ends.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Summary {
    /// Session length, s.
    pub duration_secs: f64,
    /// Payload bytes from the game.
    pub bytes_up: u64,
    /// Payload bytes to the game.
    pub bytes_down: u64,
    /// Packets from the game.
    pub packets_up: u64,
    /// Packets to the game.
    pub packets_down: u64,
    /// Failovers to another node.
    pub failovers: u32,
    /// Mean node RTT, ms (from the session's pings).
    pub node_rtt_ms: Option<f64>,
    /// Direct, from echo probes (demo game only).
    pub before: Option<Average>,
    /// Accelerated, from echo probes (demo game only).
    pub after: Option<Average>,
    /// Why it ended: `user`, `ticket_expired`.
    pub ended_by: String,
}

/// A running session.
#[derive(Debug)]
pub struct Session {
    /// What it is.
    pub info: SessionInfo,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Summary>,
}

/// How to start one.
#[derive(Debug)]
pub struct Start<'a> {
    /// The grant (ticket and candidate nodes).
    pub grant: &'a SessionGrant,
    /// The node it was opened with.
    pub node: NodeInfo,
    /// The open tunnel.
    pub tunnel: Tunnel,
    /// Mesh CA (for failover).
    pub ca_pem: &'a str,
    /// Billing base URL (never captured).
    pub billing_url: &'a str,
    /// Nodes to relay paths after the first through, best first.
    pub relays: &'a [NodeInfo],
    /// Settings in force.
    pub settings: &'a Settings,
    /// Probe direct vs accelerated with echo packets (the demo game's server echoes).
    pub probe: bool,
}

/// The game server for proxy mode: the setting, else the grant's only single-address
/// destination.
pub fn proxy_target(settings: &Settings, grant: &SessionGrant) -> Result<SocketAddr, CmdError> {
    if !settings.game_server.is_empty() {
        return settings
            .game_server
            .parse()
            .map_err(|_| CmdError::new("bad_settings", "the game server address is not IP:PORT"));
    }
    // `1.2.3.4/32:27015` names exactly one server.
    for d in &grant.destinations {
        if let Some((net, port)) = d.rsplit_once(':')
            && let Some(ip) = net.strip_suffix("/32")
            && let (Ok(ip), Ok(port)) = (ip.parse::<std::net::Ipv4Addr>(), port.parse::<u16>())
        {
            return Ok(SocketAddr::from((ip, port)));
        }
    }
    Err(CmdError::new(
        "game_server_needed",
        "proxy mode needs the game server's address: set it in Settings (or use TUN/WinDivert capture)",
    ))
}

impl Session {
    /// Starts the proxy and the ticker.
    pub async fn start(
        s: Start<'_>,
        events: broadcast::Sender<AppEvent>,
    ) -> Result<Session, CmdError> {
        let Start {
            grant,
            node,
            tunnel,
            ca_pem,
            billing_url,
            relays,
            settings,
            probe,
        } = s;
        let redundancy: Redundancy = settings
            .redundancy
            .parse()
            .map_err(|e: String| CmdError::new("bad_settings", e))?;
        let n = settings.paths.clamp(1, tunnel.accept.max_paths.max(1));
        let plan = plg_client::route::plan_paths(&node, tunnel.data_addr, relays, n as usize);
        let path_addrs: Vec<SocketAddr> = plan.iter().map(|p| p.addr).collect();
        let relay_ids: Vec<Option<String>> = plan
            .iter()
            .map(|p| p.relay.as_ref().map(|r| r.id.clone()))
            .collect();
        let failover = Failover {
            ticket: grant.ticket_bytes()?,
            ca_pem: ca_pem.to_owned(),
            candidates: grant
                .nodes
                .iter()
                .filter(|c| c.id != node.id)
                .cloned()
                .collect(),
            after: Duration::from_secs(1),
            relays: relay_ids.clone(),
        };
        // Our own traffic (nodes, relays, billing) must never be captured into the tunnel.
        let targets = Targets::parse(&grant.destinations)
            .context("the ticket's destinations")?
            .exclude([tunnel.data_addr.ip()])
            .exclude_own(grant.nodes.iter().chain(relays), billing_url)
            .await;
        let mut direct_target = None;
        let proxy = match settings.capture.as_str() {
            "proxy" => {
                let to = proxy_target(settings, grant)?;
                direct_target = Some(to);
                let listen: SocketAddr = settings
                    .proxy_listen
                    .parse()
                    .map_err(|_| CmdError::new("bad_settings", "proxy address is not IP:PORT"))?;
                let capture = ProxyCapture::bind(listen, to)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let local = capture.local_addr().context("proxy address")?;
                let mut p =
                    Proxy::start_with(tunnel, capture, path_addrs, redundancy, Some(failover))
                        .await
                        .context("starting the proxy")?;
                p.local_addr = local;
                p
            }
            #[cfg(target_os = "linux")]
            "tun" => {
                use plg_client::capture::{TunCapture, TunConfig};
                let capture = TunCapture::open(TunConfig::new(targets))
                    .context("cannot set up TUN capture (the app needs root for it)")?;
                Proxy::start_with(tunnel, capture, path_addrs, redundancy, Some(failover))
                    .await
                    .context("starting the session")?
            }
            #[cfg(windows)]
            "windivert" => {
                let capture = plg_client::capture::WinDivertCapture::open(targets)
                    .context("cannot open WinDivert (run the app as administrator)")?;
                Proxy::start_with(tunnel, capture, path_addrs, redundancy, Some(failover))
                    .await
                    .context("starting the session")?
            }
            other => {
                let _ = targets;
                tunnel.close().await;
                return Err(CmdError::new(
                    "capture_unavailable",
                    format!("capture mode {other} is not available on this system"),
                ));
            }
        };
        let local_addr = (settings.capture == "proxy").then(|| proxy.local_addr.to_string());
        let probes = match (probe, direct_target) {
            (true, Some(direct)) => Some((
                EchoProbe::start(direct)
                    .await
                    .context("starting the direct probe")?,
                EchoProbe::start(proxy.local_addr)
                    .await
                    .context("starting the session probe")?,
            )),
            _ => None,
        };
        let info = SessionInfo {
            session_id: grant.session_id.clone(),
            game: grant.game.slug.clone(),
            game_name: grant.game.name.clone(),
            node,
            capture: proxy.capture.clone(),
            local_addr,
            paths: n,
            relays: relay_ids,
            redundancy: settings.redundancy.clone(),
            started_at: unix_now(),
            expires_at: grant.expires_at,
            probing: probes.is_some(),
        };
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(
            proxy,
            probes,
            info.clone(),
            settings.language.clone(),
            events,
            stop_rx,
        ));
        Ok(Session { info, stop, task })
    }

    /// Whether the session ended by itself (ticket expiry).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the session; returns its summary.
    pub async fn stop(self) -> Summary {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

fn tick(p: &Proxy, secs: f64) -> Tick {
    let s = &p.stats;
    let view = p.paths.borrow().clone();
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
                    "suspect"
                } else if ps.probes_answered == 0 {
                    "waiting"
                } else {
                    "up"
                },
                rtt_ms: ps.srtt.map(ms),
                rttvar_ms: ms(ps.rttvar),
                loss_pct: ps.loss * 100.0,
                probes_answered: ps.probes_answered,
                probes_sent: ps.probes_sent,
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
    }
}

async fn run(
    mut proxy: Proxy,
    probes: Option<(EchoProbe, EchoProbe)>,
    info: SessionInfo,
    lang: String,
    events: broadcast::Sender<AppEvent>,
    mut stop: oneshot::Receiver<()>,
) -> Summary {
    let started = tokio::time::Instant::now();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut summary = Summary {
        ended_by: "user".into(),
        ..Summary::default()
    };
    let (mut before, mut after) = (Average::default(), Average::default());
    let (mut rtt_sum, mut rtt_n) = (0.0, 0u32);
    let emit = |ev: AppEvent| {
        // No listener (window closed) is fine.
        let _ = events.send(ev);
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(ev) = proxy.events.recv() => {
                let what = match &ev {
                    ProxyEvent::Failover { to, gap } => {
                        summary.failovers += 1;
                        What::Failover { to, gap_ms: gap.as_millis() }
                    }
                    ProxyEvent::NodeLost { reason } => What::NodeLost { reason },
                    ProxyEvent::PrimaryChanged { from, to } => What::PrimaryChanged { from: *from, to: *to },
                    ProxyEvent::DestinationRefused(d) => What::DestinationRefused { addr: d.to_string(), game: &info.game_name },
                    ProxyEvent::TooManyFlows => What::TooManyFlows,
                    ProxyEvent::ProtectedMode { on, reason } => What::ProtectedMode { on: *on, reason },
                    ProxyEvent::FlowError { flow, code } => {
                        tracing::warn!(flow, ?code, "flow error from the node");
                        continue;
                    }
                };
                tracing::info!(event = ?ev, "session event");
                emit(AppEvent::Notice(notice(what, &lang)));
            }
            _ = every.tick() => {
                let mut t = tick(&proxy, started.elapsed().as_secs_f64());
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
                if info.expires_at <= unix_now() {
                    summary.ended_by = "ticket_expired".into();
                    emit(AppEvent::Notice(notice(What::TicketExpired, &lang)));
                    break;
                }
            }
        }
    }
    drop(probes);
    proxy.stop().await;
    summary.duration_secs = started.elapsed().as_secs_f64();
    summary.node_rtt_ms = (rtt_n > 0).then(|| rtt_sum / f64::from(rtt_n));
    summary.before = (before.samples > 0).then_some(before);
    summary.after = (after.samples > 0).then_some(after);
    emit(AppEvent::Ended(summary.clone()));
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(dest: &[&str]) -> SessionGrant {
        serde_json::from_value(serde_json::json!({
            "session_id": "1", "ticket": "", "expires_at": 0,
            "game": {"slug": "g", "name": "G"},
            "destinations": dest, "nodes": []
        }))
        .unwrap()
    }

    #[test]
    fn proxy_target_from_settings_or_single_destination() {
        let s = Settings::default();
        assert_eq!(
            proxy_target(&s, &grant(&["10.0.0.0/8:1-2", "1.2.3.4/32:27015"])).unwrap(),
            "1.2.3.4:27015".parse().unwrap()
        );
        assert_eq!(
            proxy_target(&s, &grant(&["10.0.0.0/8:27015"]))
                .unwrap_err()
                .code,
            "game_server_needed"
        );
        let s = Settings {
            game_server: "5.6.7.8:9".into(),
            ..Settings::default()
        };
        assert_eq!(
            proxy_target(&s, &grant(&[])).unwrap(),
            "5.6.7.8:9".parse().unwrap()
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
