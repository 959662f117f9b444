//! The desktop app's back end: every command the window can give, over `plg-client`.
//!
//! Both faces of the app call [`App::dispatch`] (a command name and JSON arguments, parsed into
//! a typed [`Command`]) and then [`App::handle`]: the Tauri shell through one Tauri command,
//! and the test bridge (`plg-app-bridge`) over HTTP. Live numbers and notices go out as
//! [`AppEvent`]s on a broadcast channel that each face forwards to the frontend. The frontend's
//! types are generated from these (`tests/bindings.rs`).

pub mod account;
pub mod boost;
pub mod command;
pub mod error;
pub mod history;
pub mod notice;
pub mod probe;
pub mod session;
pub mod settings;
pub mod update;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use plg_client::credentials::Credentials;
use plg_client::{BillingClient, BillingError, Controller, detect};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, broadcast};
use ts_rs::TS;

pub use command::{
    Command, GameArgs, GameView, GamesQuery, GamesView, PayArgs, RedeemArgs, Replies, Reply,
    SignInArgs,
};
pub use error::CmdError;
pub use notice::{Notice, NoticeKind};
pub use plg_client::billing::{GameInfo, Subscription};
pub use plg_client::credentials::config_dir;
pub use session::{NodeInfo, SessionInfo, Summary, Tick};
pub use settings::{CaptureKind, Language, Redundancy, Settings, Theme};
pub use update::{UpdatePhase, UpdatePort, UpdateView};

use notice::{What, notice};
use session::Session;

/// The slug of the local demo mesh's game, whose server echoes: only for it can direct and
/// accelerated round trips be measured end to end with test packets.
pub const ECHO_GAME: &str = "demo";
/// Warn when the plan ends within this many days.
const EXPIRY_WARNING_DAYS: i64 = 3;

/// Something for the frontend (and the desktop shell) to show.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum AppEvent {
    /// Live numbers of the running session, once a second.
    Tick(Tick),
    /// A session started.
    Connected(SessionInfo),
    /// The running session changed: another node after a failover, a relay moved, a renewed
    /// ticket.
    Session(SessionInfo),
    /// The session ended; its summary.
    Ended(Summary),
    /// A message for the gamer.
    Notice(Notice),
    /// Catalog games running right now (slugs).
    Detected(Vec<String>),
    /// Settings changed.
    Settings(Settings),
    /// Signed in (`Some`) or out.
    Account(Option<AccountView>),
    /// The update state changed (checked, on offer, installing, failed).
    Update(UpdateView),
}

/// Who is signed in, where.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, TS)]
pub struct AccountView {
    /// Account email.
    pub email: String,
    /// Billing base URL.
    pub billing_url: String,
}

/// Everything the window needs at start.
#[derive(Debug, Clone, Serialize, TS)]
pub struct StateView {
    /// Signed in as.
    pub account: Option<AccountView>,
    /// Billing URL to offer on the sign-in screen.
    pub default_billing_url: String,
    /// Settings.
    pub settings: Settings,
    /// The running session.
    pub session: Option<SessionInfo>,
    /// Detected running games (slugs).
    pub detected: Vec<String>,
    /// Where the login and settings live.
    pub config_dir: String,
    /// Where the app writes its log.
    pub logs_dir: String,
    /// Capture modes this build and OS have.
    pub capture_modes: Vec<CaptureKind>,
    /// App version.
    pub version: &'static str,
}

/// The candidate route for a game: billing's grant, before connecting.
#[derive(Debug, Clone, Serialize, TS)]
pub struct RouteView {
    /// Game slug.
    pub game: String,
    /// Game name.
    pub game_name: String,
    /// Where the ticket lets traffic go.
    pub destinations: Vec<String>,
    /// Candidate nodes, best first by live probes (`plg_client::route`); the first is the
    /// recommended exit.
    pub nodes: Vec<RouteNode>,
    /// Paths the session will open (settings, capped by the plan on connect).
    pub paths: u8,
    /// For each path, the node relaying it to the exit (`None`: straight to the exit).
    pub relays: Vec<Option<NodeInfo>>,
    /// Regions with a candidate node, sorted (the region picker's choices).
    pub regions: Vec<String>,
    /// Redundancy policy.
    pub redundancy: Redundancy,
    /// Whether direct vs accelerated will be measured (echo game only).
    pub measurable: bool,
    /// The verdict on the whole path: `direct 94 ms → via fra-2 61 ms (−35 %)`, or that
    /// direct is better (`plg_client::route::RoutePlan::summary`).
    pub summary: String,
}

/// A candidate node.
#[derive(Debug, Clone, Serialize, TS)]
pub struct RouteNode {
    /// Node id.
    pub id: String,
    /// The name its operator gave it, else the id.
    pub name: String,
    /// Region label.
    pub region: String,
    /// Control address.
    pub control_addr: String,
    /// Ranked first: the recommended exit.
    pub recommended: bool,
    /// Median RTT of QUIC handshakes to its control port, if any answered.
    pub ping_ms: Option<f64>,
    /// Share of probes without an answer.
    pub loss_percent: Option<f64>,
    /// The node's own RTT to the game's servers, as it measured and billing relayed it.
    pub to_game_ms: Option<f64>,
}

#[derive(Debug, Default)]
struct Inner {
    creds: Option<Credentials>,
    settings: Settings,
    games: Vec<GameInfo>,
    session: Option<Session>,
    /// A connect is under way (no lock is held while it talks to the network).
    connecting: bool,
    /// Catalog games running now, with their processes.
    detected: Vec<detect::Detected>,
}

impl Inner {
    fn detected_slugs(&self) -> Vec<String> {
        self.detected.iter().map(|d| d.slug.clone()).collect()
    }

    /// The process of `game`, if it was seen running.
    fn game_pid(&self, game: &str) -> Option<u32> {
        self.detected.iter().find(|d| d.slug == game).map(|d| d.pid)
    }
}

/// The app's state and command handlers.
#[derive(Debug)]
pub struct App {
    dir: PathBuf,
    default_billing: String,
    events: broadcast::Sender<AppEvent>,
    inner: Mutex<Inner>,
    updates: update::Updates,
}

/// `text` with each node id replaced by the node's name (verdicts are written with ids).
pub fn named(text: &str, nodes: &[plg_client::NodeInfo]) -> String {
    nodes
        .iter()
        .filter(|n| !n.name.is_empty())
        .fold(text.to_owned(), |t, n| t.replace(&n.id, &n.name))
}

/// The games screen's view of `games`: filtered by `q`, running ones flagged.
fn games_view(
    games: &[GameInfo],
    detected: &[String],
    q: &GamesQuery,
    offline_since: Option<u64>,
) -> GamesView {
    let list = account::filter_games(games, &q.search, &q.category)
        .into_iter()
        .map(|g| GameView::new(g, detected.contains(&g.slug)))
        .collect();
    let mut categories: Vec<String> = games.iter().filter_map(|g| g.category.clone()).collect();
    categories.sort_unstable();
    categories.dedup();
    GamesView {
        games: list,
        categories,
        offline_since,
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl App {
    /// An app keeping its login and settings in `dir` (the CLI's config dir, so both share
    /// the login); `default_billing` is offered on the sign-in screen.
    pub fn new(dir: PathBuf, default_billing: &str) -> Arc<App> {
        let (events, _) = broadcast::channel(256);
        let settings = Settings::load(&dir);
        let creds = Credentials::load(&dir)
            .ok()
            .filter(|c| c.expires_at > unix_now());
        Arc::new(App {
            default_billing: creds
                .as_ref()
                .map(|c| c.billing_url.clone())
                .unwrap_or_else(|| default_billing.to_owned()),
            dir,
            events,
            inner: Mutex::new(Inner {
                creds,
                settings,
                ..Inner::default()
            }),
            updates: update::Updates::default(),
        })
    }

    /// Events for the frontend and the shell.
    pub fn subscribe(&self) -> broadcast::Receiver<AppEvent> {
        self.events.subscribe()
    }

    fn emit(&self, ev: AppEvent) {
        let _ = self.events.send(ev);
    }

    /// Where the app writes logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The settings in force.
    pub async fn settings(&self) -> Settings {
        self.inner.lock().await.settings.clone()
    }

    /// Runs the command called `cmd` with JSON `args` (the wire form of a call); see
    /// [`Command::from_call`].
    pub async fn dispatch(&self, cmd: &str, args: Value) -> Result<Reply, CmdError> {
        self.handle(Command::from_call(cmd, args)?).await
    }

    /// Runs a command.
    pub async fn handle(&self, cmd: Command) -> Result<Reply, CmdError> {
        Ok(match cmd {
            Command::State => Reply::State(self.state().await),
            Command::SignIn(a) => Reply::SignIn(self.sign_in(a).await?),
            Command::SignOut => Reply::SignOut(self.sign_out().await),
            Command::Me => Reply::Me(self.account().await?.me().await?),
            Command::Plans => Reply::Plans(self.account().await?.plans().await?),
            Command::Payments => Reply::Payments(self.account().await?.payments().await?),
            Command::Pay(a) => Reply::Pay(self.account().await?.pay(&a.plan).await?),
            Command::Redeem(a) => Reply::Redeem(self.account().await?.redeem(&a.code).await?),
            Command::StartTrial => Reply::StartTrial(self.account().await?.start_trial().await?),
            Command::CancelPlan => {
                Reply::CancelPlan(self.account().await?.cancel_subscription().await?)
            }
            Command::Games(q) => Reply::Games(self.games(q).await?),
            Command::Route(a) => Reply::Route(self.route(a).await?),
            Command::Connect(a) => Reply::Connect(self.connect(a).await?),
            Command::Disconnect => Reply::Disconnect(self.disconnect().await),
            Command::SaveSettings(s) => Reply::SaveSettings(self.save_settings(s).await?),
            Command::History(q) => Reply::History(history::of_game(&self.dir, &q.game)),
            Command::Update => Reply::Update(self.update_view()),
            Command::CheckUpdate => Reply::CheckUpdate(self.check_update().await?),
            Command::InstallUpdate => Reply::InstallUpdate(self.install_update().await?),
        })
    }

    /// The window's starting state.
    pub async fn state(&self) -> StateView {
        let mut inner = self.inner.lock().await;
        if inner.session.as_ref().is_some_and(Session::finished) {
            inner.session = None;
        }
        StateView {
            account: inner.creds.as_ref().map(|c| AccountView {
                email: c.email.clone(),
                billing_url: c.billing_url.clone(),
            }),
            default_billing_url: self.default_billing.clone(),
            settings: inner.settings.clone(),
            session: inner.session.as_ref().map(Session::info),
            detected: inner.detected_slugs(),
            config_dir: self.dir.display().to_string(),
            logs_dir: self.logs_dir().display().to_string(),
            capture_modes: CaptureKind::available(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    async fn account(&self) -> Result<BillingClient, CmdError> {
        let inner = self.inner.lock().await;
        let c = inner.creds.as_ref().ok_or_else(CmdError::not_signed_in)?;
        Ok(billing(c))
    }

    async fn sign_in(&self, a: SignInArgs) -> Result<AccountView, CmdError> {
        let url = a.billing_url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(CmdError::new(
                "bad_billing_url",
                "the billing address must start with http:// or https://",
            ));
        }
        let mut client = BillingClient::new(&url);
        if a.register {
            client.register(&a.email, &a.password).await?;
        }
        let (token, ttl) = client.login(&a.email, &a.password).await?;
        let mesh = client.mesh().await?;
        let creds = Credentials {
            billing_url: url.clone(),
            email: a.email.trim().to_owned(),
            access_token: token,
            expires_at: unix_now() + ttl,
            mesh_ca_pem: mesh.ca_cert_pem,
        };
        creds.save(&self.dir)?;
        let account = billing(&creds);
        if a.trial {
            let me = account.me().await?;
            let has_plan = me["subscription"]["status"].as_str() == Some("active");
            if me["trial_available"].as_bool() == Some(true) && !has_plan {
                account.start_trial().await?;
            }
        }
        let view = AccountView {
            email: creds.email.clone(),
            billing_url: url,
        };
        let lang = {
            let mut inner = self.inner.lock().await;
            inner.creds = Some(creds);
            inner.games.clear();
            inner.settings.language
        };
        // Warn about the plan's end at sign-in (the shell turns it into a notification).
        match account.subscription().await {
            Ok(Some(s)) if s.seconds_left == 0 => {
                self.emit(AppEvent::Notice(notice(What::PlanExpired, lang)))
            }
            Ok(Some(s)) if s.seconds_left < EXPIRY_WARNING_DAYS * 86_400 => {
                self.emit(AppEvent::Notice(notice(
                    What::PlanExpiring {
                        days: s.seconds_left / 86_400,
                    },
                    lang,
                )))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the subscription"),
        }
        self.emit(AppEvent::Account(Some(view.clone())));
        Ok(view)
    }

    async fn sign_out(&self) -> bool {
        self.disconnect().await;
        let mut inner = self.inner.lock().await;
        inner.creds = None;
        inner.games.clear();
        drop(inner);
        let was = Credentials::remove(&self.dir).unwrap_or(false);
        self.emit(AppEvent::Account(None));
        was
    }

    /// The catalog (fetched once per login), filtered, with a `running` flag per game. Each
    /// successful fetch is saved (`catalog.json`); when billing cannot be reached the saved
    /// one is shown, marked offline, and the next call tries billing again.
    async fn games(&self, q: GamesQuery) -> Result<GamesView, CmdError> {
        let account = self.account().await?;
        let cached = !self.inner.lock().await.games.is_empty();
        let mut offline_since = None;
        if !cached {
            // Fetched without holding the lock: billing may be slow or down.
            match account.games(None).await {
                Ok(games) => {
                    if let Err(e) = account::save_catalog(&self.dir, &games, unix_now()) {
                        tracing::warn!(error = %format!("{e:#}"), "cannot save the catalog");
                    }
                    self.inner.lock().await.games = games;
                }
                Err(e @ BillingError::Unreachable { .. }) => {
                    tracing::warn!(error = %e, "billing unreachable; showing the saved catalog");
                    let Some((saved_at, games)) = account::load_catalog(&self.dir) else {
                        return Err(e.into());
                    };
                    offline_since = Some(saved_at);
                    let inner = self.inner.lock().await;
                    return Ok(games_view(
                        &games,
                        &inner.detected_slugs(),
                        &q,
                        offline_since,
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let inner = self.inner.lock().await;
        Ok(games_view(
            &inner.games,
            &inner.detected_slugs(),
            &q,
            offline_since,
        ))
    }

    /// Shows where a session for `game` would go: billing's live nodes, probed. A preview:
    /// no ticket is issued and no session slot is taken.
    async fn route(&self, a: GameArgs) -> Result<RouteView, CmdError> {
        let account = self.account().await?;
        let (ca_pem, paths, redundancy) = {
            let inner = self.inner.lock().await;
            (
                inner
                    .creds
                    .as_ref()
                    .map(|c| c.mesh_ca_pem.clone())
                    .unwrap_or_default(),
                inner.settings.paths,
                inner.settings.redundancy,
            )
        };
        let g = account.route_preview(&a.game).await?;
        // Probe without holding the lock (up to a second per silent node), the game server
        // directly at the same time.
        let server = plg_client::controller::single_target(&g.destinations);
        let (ranked, direct) = tokio::join!(
            plg_client::route::probe_nodes(&g.nodes, &ca_pem, plg_client::route::PROBES),
            plg_client::controller::direct_probe(server, g.game.query.as_deref(), 3),
        );
        let m = plg_client::route::measurements(&ranked, direct.as_ref(), server.map(|s| s.ip()));
        let mut regions: Vec<String> = g
            .nodes
            .iter()
            .map(|n| n.region.clone())
            .filter(|r| !r.is_empty())
            .collect();
        regions.sort();
        regions.dedup();
        // The best exit in the picked region, by the same ranking (what `connect` will do).
        let in_region = |n: &plg_client::NodeInfo| {
            a.region
                .as_deref()
                .is_none_or(|r| r.is_empty() || n.region.eq_ignore_ascii_case(r))
        };
        let chosen = match plg_client::route::choose(&m, None) {
            Some(p) if a.region.as_deref().is_some_and(|r| !r.is_empty()) => {
                let best = std::iter::once(&p.exit)
                    .chain(&p.backups)
                    .chain(ranked.iter().map(|c| &c.node.id))
                    .find(|id| {
                        ranked
                            .iter()
                            .any(|c| &c.node.id == *id && in_region(&c.node))
                    })
                    .cloned();
                best.and_then(|id| plg_client::route::choose_exit(&m, &id))
            }
            other => other,
        };
        let relays = plg_client::route::answering(&ranked);
        let plan = chosen
            .as_ref()
            .and_then(|p| {
                let exit = ranked.iter().find(|c| c.node.id == p.exit)?;
                Some((p, exit.node.data_addr.parse().ok()?))
            })
            .map(|(p, data)| plg_client::route::plan_route_paths(p, data, &relays, paths as usize))
            .unwrap_or_default();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let exit_id = chosen.as_ref().map(|p| p.exit.clone());
        let mut order: Vec<&plg_client::route::Candidate> = ranked.iter().collect();
        // The recommended exit first, then its backups, then the silent ones.
        if let Some(p) = &chosen {
            let rank = |id: &str| {
                std::iter::once(&p.exit)
                    .chain(&p.backups)
                    .position(|e| e == id)
                    .unwrap_or(usize::MAX)
            };
            order.sort_by_key(|c| rank(&c.node.id));
        }
        Ok(RouteView {
            game: g.game.slug.clone(),
            game_name: g.game.name.clone(),
            destinations: g.destinations.clone(),
            nodes: order
                .iter()
                .map(|c| RouteNode {
                    id: c.node.id.clone(),
                    name: c.node.label().to_owned(),
                    region: c.node.region.clone(),
                    control_addr: c.node.control_addr.clone(),
                    recommended: exit_id.as_deref() == Some(c.node.id.as_str()),
                    ping_ms: c.probe.median().map(ms),
                    loss_percent: (c.probe.sent > 0).then(|| c.probe.loss_percent()),
                    to_game_ms: m.to_game.get(&c.node.id).map(|l| ms(l.rtt)),
                })
                .collect(),
            paths,
            relays: plan
                .iter()
                .map(|p| p.relay.clone().map(NodeInfo::from))
                .collect(),
            regions,
            summary: named(
                &chosen.as_ref().map_or_else(
                    || "no relay node answered: acceleration is not available right now".to_owned(),
                    plg_client::route::RoutePlan::summary,
                ),
                &g.nodes,
            ),
            redundancy,
            measurable: g.game.slug == ECHO_GAME,
        })
    }

    /// Connects to `game` (through `node` if given) with the shared session controller. No
    /// lock is held while it talks to billing and the nodes: the tray, `state` and
    /// `disconnect` answer meanwhile.
    async fn connect(&self, a: GameArgs) -> Result<SessionInfo, CmdError> {
        if a.game.is_empty() {
            return Err(CmdError::new("no_game", "pick a game first"));
        }
        let (c, settings) = {
            let mut inner = self.inner.lock().await;
            if let Some(s) = &inner.session {
                if !s.finished() {
                    return Err(CmdError::new(
                        "already_connected",
                        format!(
                            "already connected to {}; disconnect first",
                            s.info().game_name
                        ),
                    ));
                }
                inner.session = None;
            }
            if self.updates.installing() {
                return Err(CmdError::new(
                    "update_installing",
                    "an update is being installed and the app will restart: connect after that",
                ));
            }
            if inner.connecting {
                return Err(CmdError::new(
                    "already_connecting",
                    "a connection is already being set up",
                ));
            }
            let c = inner.creds.clone().ok_or_else(CmdError::not_signed_in)?;
            if c.expires_at <= unix_now() {
                return Err(CmdError::new(
                    "login_expired",
                    "your login expired; sign in again",
                ));
            }
            inner.connecting = true;
            (c, inner.settings.clone())
        };
        let result = async {
            let req = session::request(&a.game, a.node.clone(), a.region.clone(), &settings)?;
            let ctl = Controller::connect(billing(&c), c.mesh_ca_pem.clone(), req, |_| {}).await?;
            let probe = ctl.info().game == ECHO_GAME;
            let game_pid = if settings.fps_boost {
                self.find_game(&ctl.info().game).await
            } else {
                None
            };
            Session::start(
                ctl,
                &settings,
                probe,
                game_pid,
                self.events.clone(),
                self.dir.clone(),
            )
            .await
        }
        .await;
        let mut inner = self.inner.lock().await;
        inner.connecting = false;
        let session = result?;
        let info = session.info();
        inner.session = Some(session);
        if inner.settings.last_game != a.game {
            inner.settings.last_game = a.game.clone();
            if let Err(e) = inner.settings.save(&self.dir) {
                tracing::warn!(error = %e, "could not save settings");
            }
        }
        drop(inner);
        tracing::info!(session = %info.session_id, game = %info.game, node = %info.node.id, "connected");
        self.emit(AppEvent::Connected(info.clone()));
        Ok(info)
    }

    /// The running process of catalog game `slug`: the watcher's last sighting, else a look
    /// at the process table now (the watcher runs every few seconds).
    async fn find_game(&self, slug: &str) -> Option<u32> {
        let games = {
            let inner = self.inner.lock().await;
            if let Some(pid) = inner.game_pid(slug) {
                return Some(pid);
            }
            inner.games.clone()
        };
        let running = tokio::task::spawn_blocking(detect::running_processes)
            .await
            .ok()?;
        detect::detect(&games, &running)
            .into_iter()
            .find(|d| d.slug == slug)
            .map(|d| d.pid)
    }

    /// Stops the session (if any): CLOSE to the node and billing's slot released by the
    /// controller; its summary.
    async fn disconnect(&self) -> Option<Summary> {
        let session = self.inner.lock().await.session.take()?;
        let id = session.info().session_id;
        let summary = session.stop().await;
        tracing::info!(session = %id, secs = summary.duration_secs, "disconnected");
        Some(summary)
    }

    async fn save_settings(&self, s: Settings) -> Result<Settings, CmdError> {
        s.validate().map_err(|e| CmdError::new("bad_settings", e))?;
        s.save(&self.dir).map_err(|e| {
            CmdError::new(
                "save_failed",
                format!("cannot save settings in {}: {e}", self.dir.display()),
            )
        })?;
        self.inner.lock().await.settings = s.clone();
        self.emit(AppEvent::Settings(s.clone()));
        Ok(s)
    }

    /// Checks every `every` which catalog games are running; tells the frontend when the set
    /// changes, with a notice for each newly started game while no session runs. Runs forever.
    pub async fn watch_games(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let (creds, mut games) = {
                let inner = self.inner.lock().await;
                (inner.creds.clone(), inner.games.clone())
            };
            let Some(c) = creds else { continue };
            if games.is_empty() {
                // Fetched without holding the lock: billing may be slow or down.
                match billing(&c).games(None).await {
                    Ok(g) => {
                        self.inner.lock().await.games = g.clone();
                        games = g;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "catalog not available for detection");
                        continue;
                    }
                }
            }
            let running = match tokio::task::spawn_blocking(detect::running_processes).await {
                Ok(r) => r,
                Err(_) => continue,
            };
            let now = detect::detect(&games, &running);
            let mut inner = self.inner.lock().await;
            if now == inner.detected {
                continue;
            }
            // The FPS boost follows the session's game: started later, restarted, or quit.
            if let Some(s) = &inner.session {
                let game = s.info().game;
                s.set_game_pid(now.iter().find(|d| d.slug == game).map(|d| d.pid));
            }
            let idle = inner.session.is_none();
            let lang = inner.settings.language;
            let before = inner.detected_slugs();
            let now_slugs: Vec<String> = now.iter().map(|d| d.slug.clone()).collect();
            for slug in now_slugs.iter().filter(|s| !before.contains(s)) {
                if idle && let Some(g) = games.iter().find(|g| &g.slug == slug) {
                    self.emit(AppEvent::Notice(notice(
                        What::GameDetected { name: &g.name },
                        lang,
                    )));
                }
            }
            inner.detected = now;
            drop(inner);
            if now_slugs != before {
                self.emit(AppEvent::Detected(now_slugs));
            }
        }
    }

    /// A one-line status for the tray.
    pub async fn status_line(&self) -> String {
        let inner = self.inner.lock().await;
        let ru = inner.settings.language == Language::Ru;
        match (&inner.session, &inner.creds) {
            (Some(s), _) if !s.finished() => {
                let i = s.info();
                let node = if i.node.region.is_empty() {
                    i.node.name.clone()
                } else {
                    format!("{} ({})", i.node.name, i.node.region)
                };
                if ru {
                    format!("Подключено: {} через {node}", i.game_name)
                } else {
                    format!("Connected: {} via {node}", i.game_name)
                }
            }
            (_, None) => if ru {
                "Вход не выполнен"
            } else {
                "Not signed in"
            }
            .to_owned(),
            _ => if ru {
                "Не подключено"
            } else {
                "Not connected"
            }
            .to_owned(),
        }
    }
}

/// A billing client for the signed-in account.
fn billing(c: &Credentials) -> BillingClient {
    BillingClient::new(&c.billing_url).with_token(c.access_token.clone())
}
