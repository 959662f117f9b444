//! `plg`: the gamer's command line.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use plg_client::controller::single_target;
use plg_client::credentials::{Credentials, config_dir, save_billing_url, saved_billing_url};
use plg_client::dashboard::{Monitor, Ping, Tui, spawn_pinger};
use plg_client::route;
use plg_client::{
    BillingClient, CaptureMode, ConnectRequest, Controller, EndReason, Progress, Protection,
    ProxyEvent, Redundancy, SessionEvent, bench, capture, detect, explain, probe,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// PLG Booster: carry your game's UDP traffic through PLG relay nodes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Log as JSON lines (filter with PLG_LOG, e.g. PLG_LOG=debug).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Log in to billing and save the session token (and the mesh CA) in the config dir.
    Login {
        /// Billing base URL [default: the one of the last login, saved in the config dir].
        #[arg(long, env = "PLG_BILLING_URL")]
        billing: Option<String>,
        /// Account email.
        #[arg(long, env = "PLG_EMAIL")]
        email: String,
        /// Read the password from the first line of stdin instead of prompting
        /// (or set PLG_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
        /// Create the account first (sign up).
        #[arg(long)]
        register: bool,
    },
    /// Forget the saved login.
    Logout,
    /// Show who is logged in, where, the plan and days left, and open sessions.
    Status,
    /// List your recent sessions; `--stop ID` ends one (frees its slot in your plan).
    Sessions {
        /// How many, newest first.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// End this session (an id from the list).
        #[arg(long, value_name = "ID")]
        stop: Option<String>,
    },
    /// Buy or extend a plan. Without PLAN: the plans and prices. `trial`: start the free
    /// trial. Otherwise: create the payment and open the page to pay it on.
    Subscribe {
        /// `trial`, `monthly`, `quarterly` or `yearly`.
        plan: Option<String>,
        /// Print the payment page instead of opening it in a browser.
        #[arg(long)]
        no_open: bool,
    },
    /// List the game catalog (running games are marked), optionally filtered.
    Games {
        /// Part of a game's name or slug, e.g. "counter".
        search: Option<String>,
    },
    /// List the relay nodes billing offers for a game, probe each and mark the best.
    Nodes {
        /// Game slug (nodes are offered per game); default: the game running now.
        #[arg(long)]
        game: Option<String>,
        /// Probes (QUIC handshakes) per node.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
        probes: u32,
    },
    /// Accelerate a game: its UDP traffic goes through a relay node (see --mode).
    Connect {
        /// Game slug from the catalog (decides which destinations the ticket allows).
        #[arg(value_name = "GAME")]
        game_arg: Option<String>,
        /// Same as GAME.
        #[arg(long, conflicts_with = "game_arg")]
        game: Option<String>,
        /// Wait until a catalog game is running (matched by process name), then connect it.
        #[arg(long)]
        auto: bool,
        /// Start this program (the game's executable) once the session is up.
        #[arg(long, value_name = "EXE")]
        launch: Option<PathBuf>,
        /// Print status lines instead of the full-screen dashboard (automatic when stdout is
        /// not a terminal).
        #[arg(long)]
        plain: bool,
        /// Local UDP address the game sends to.
        #[arg(long, default_value = "127.0.0.1:7777")]
        proxy: SocketAddr,
        /// The game server's address (proxy mode: where the local port forwards to; default:
        /// the game's only server, when the catalog names exactly one).
        #[arg(long)]
        to: Option<SocketAddr>,
        /// How game traffic is captured: `auto` (the capture helper `plg-capture` when it is
        /// installed and no --to is given, else proxy), `helper` (the helper: the game's server
        /// ranges are captured, no root, nothing typed), `proxy` (point the game at --proxy,
        /// a fixed port), `tun` (Linux, root: TUN device in this process), `windivert`
        /// (Windows, administrator).
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// Use this node id instead of the best-probing one.
        #[arg(long)]
        node: Option<String>,
        /// Only exits in this region (a region `plg nodes` shows, e.g. eu-central); the best
        /// node there is used.
        #[arg(long, conflicts_with = "node")]
        region: Option<String>,
        /// Redundancy policy: single (best path), duplicate (every path), adaptive
        /// (single while clean, duplicate when loss is seen).
        #[arg(long, default_value = "adaptive", value_parser = parse_redundancy)]
        redundancy: Redundancy,
        /// Number of paths: the first straight to the exit node, each further one through
        /// another node that answered its probes (the mesh carries it to the exit); direct
        /// again when there are fewer such nodes. Capped by the plan's path limit.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
        paths: u8,
        /// Protected mode: auto (QUIC datagrams on the control connection when the node's UDP
        /// port does not answer), always, or never.
        #[arg(long, default_value = "auto")]
        protected: Protection,
    },
    /// Measure before/after: game-like traffic straight to the game server, then through a
    /// session, side by side (the server must echo, like the local demo's).
    Bench {
        /// Game slug.
        game: String,
        /// The game server's address (default: the game's only destination, if it has one).
        #[arg(long)]
        to: Option<SocketAddr>,
        /// Seconds of traffic per run.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// Packets per second.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        rate: u32,
        /// Use this node id instead of the best-probing one.
        #[arg(long)]
        node: Option<String>,
    },
}

fn password(stdin: bool) -> Result<String> {
    if let Ok(p) = std::env::var("PLG_PASSWORD") {
        return Ok(p);
    }
    if stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    rpassword::prompt_password("Password: ")
        .context("reading password (no terminal? use --password-stdin or PLG_PASSWORD)")
}

/// Capture backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// The capture helper when installed (and no --to), else proxy.
    Auto,
    /// The capture helper `plg-capture` (no root needed here).
    Helper,
    /// A local UDP port the game is pointed at.
    Proxy,
    /// A TUN device with routes for the game's servers (Linux).
    Tun,
    /// WinDivert packet capture (Windows).
    Windivert,
}

/// `12 days 3 h`, `5 h 20 min`.
fn days_left(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d} day{} {h} h", if d == 1 { "" } else { "s" })
    } else {
        format!("{h} h {m} min")
    }
}

/// `1 h 02 min`, `3 min 07 s`.
fn lasted(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 3600 {
        format!("{} h {:02} min", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{} min {:02} s", secs / 60, secs % 60)
    }
}

/// `2026-12-05 13:40` (UTC) from Unix seconds.
fn utc_minute(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let rem = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Opens `url` with the desktop's handler; false when there is none (no display, no
/// handler), so the caller prints it instead.
fn open_in_browser(url: &str) -> bool {
    #[cfg(target_os = "windows")]
    let mut cmd = {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    };
    #[cfg(target_os = "macos")]
    let mut cmd = std::process::Command::new("open");
    #[cfg(not(any(target_os = "windows", target_os = "macos")))]
    let mut cmd = {
        if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
            return false;
        }
        std::process::Command::new("xdg-open")
    };
    cmd.arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn parse_redundancy(s: &str) -> Result<Redundancy, String> {
    s.parse()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A spinner on stderr; when stderr is not a terminal it is hidden and `msg` is printed once
/// instead, so logs still say what is going on.
fn spinner(msg: impl Into<String>) -> ProgressBar {
    let msg = msg.into();
    let pb = ProgressBar::new_spinner();
    if pb.is_hidden() {
        eprintln!("{msg}");
    }
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

fn logged_in(dir: &std::path::Path) -> Result<(Credentials, BillingClient)> {
    let creds = Credentials::load(dir)?;
    if creds.expires_at <= unix_now() {
        bail!("your login expired; run `plg login` again");
    }
    let billing = BillingClient::new(&creds.billing_url).with_token(creds.access_token.clone());
    Ok((creds, billing))
}

/// Waits until a catalog game (or the one named `want`) runs; returns its slug.
async fn wait_for_game(billing: &BillingClient, want: Option<&str>) -> Result<String> {
    let games = billing
        .games(None)
        .await
        .context("fetching the game catalog")?;
    let watch: Vec<_> = games
        .into_iter()
        .filter(|g| want.is_none_or(|w| g.slug == w) && !g.process_names.is_empty())
        .collect();
    if watch.is_empty() {
        match want {
            Some(w) => bail!(
                "the catalog knows no process name for {w}, so it cannot be detected: start the game and run `plg connect {w}`"
            ),
            None => bail!("the catalog has no process names to detect games by"),
        }
    }
    let what = match want {
        Some(w) => w.to_string(),
        None => format!("one of {} known games", watch.len()),
    };
    let pb = spinner(format!(
        "waiting for {what} to start (Ctrl-C to stop waiting)…"
    ));
    loop {
        if let Some(d) = detect::detect(&watch, &detect::running_processes())
            .into_iter()
            .next()
        {
            pb.finish_and_clear();
            println!(
                "detected {} ({}): process {} (pid {})",
                d.name, d.slug, d.process, d.pid
            );
            return Ok(d.slug);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => {
                pb.finish_and_clear();
                bail!("stopped waiting for a game");
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PLG_LOG").unwrap_or_else(|_| "warn".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_writer);
    if cli.log_json {
        b.json().init()
    } else {
        b.init()
    }
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = explain::advice(&e) {
                eprintln!("what to do: {hint}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    let dir = config_dir()?;
    match command {
        Command::Login {
            billing,
            email,
            password_stdin,
            register,
        } => {
            let billing = match billing.or_else(|| saved_billing_url(&dir)) {
                Some(b) => b,
                None => bail!(
                    "which billing? The first login needs --billing URL (or PLG_BILLING_URL); \
                     later ones reuse it"
                ),
            };
            let pw = password(password_stdin)?;
            let mut client = BillingClient::new(&billing);
            if register {
                client
                    .register(&email, &pw)
                    .await
                    .context("sign-up failed")?;
                println!("account {email} created");
            }
            let (token, ttl) = client.login(&email, &pw).await.context("login failed")?;
            let mesh = client.mesh().await.context("fetching the mesh CA")?;
            save_billing_url(&dir, &billing)?;
            Credentials {
                billing_url: billing,
                email: email.clone(),
                access_token: token,
                expires_at: unix_now() + ttl,
                mesh_ca_pem: mesh.ca_cert_pem,
            }
            .save(&dir)?;
            println!(
                "logged in as {email}; credentials saved in {}",
                dir.display()
            );
        }
        Command::Logout => {
            if Credentials::remove(&dir)? {
                println!("logged out");
            } else {
                println!("was not logged in");
            }
        }
        Command::Status => match Credentials::load(&dir) {
            Ok(c) => {
                let left = c.expires_at.saturating_sub(unix_now());
                println!("logged in as {} at {}", c.email, c.billing_url);
                if left == 0 {
                    println!("login expired: run `plg login` again");
                    return Ok(());
                }
                println!("login valid for {}h{:02}m", left / 3600, left % 3600 / 60);
                let billing = BillingClient::new(&c.billing_url).with_token(c.access_token.clone());
                match billing.subscription().await {
                    Ok(Some(sub)) if sub.seconds_left > 0 => println!(
                        "plan {}{}: {} left",
                        sub.plan,
                        if sub.status == "cancelled" {
                            " (cancelled, runs to its end)"
                        } else {
                            ""
                        },
                        days_left(sub.seconds_left)
                    ),
                    Ok(_) => println!(
                        "no active plan: `plg subscribe trial` starts the free trial, `plg subscribe` lists the plans"
                    ),
                    Err(e) => {
                        println!("billing did not answer: {e}");
                        if let Some(a) = explain::advice(&anyhow::Error::new(e)) {
                            println!("  → {a}");
                        }
                        return Ok(());
                    }
                }
                if let Ok(sessions) = billing.sessions(50).await {
                    let open: Vec<_> = sessions.iter().filter(|s| s.status == "open").collect();
                    match open.len() {
                        0 => println!("no open session"),
                        n => println!(
                            "{n} open session(s): {} (`plg sessions` lists them)",
                            open.iter()
                                .map(|s| format!("{} ({})", s.session_id, s.game))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }
            }
            Err(_) => println!("not logged in (config dir {})", dir.display()),
        },
        Command::Sessions { limit, stop } => {
            let (_, billing) = logged_in(&dir)?;
            if let Some(id) = stop {
                billing
                    .stop_session(&id)
                    .await
                    .with_context(|| format!("stopping session {id}"))?;
                println!("session {id} stopped: its slot in your plan is free");
                return Ok(());
            }
            let sessions = billing.sessions(limit).await.context("listing sessions")?;
            if sessions.is_empty() {
                println!("no sessions yet: `plg connect GAME` starts one");
            } else {
                println!(
                    "{:<20} {:<16} {:<8} {:<17} {:>9}  node",
                    "id", "game", "status", "started (UTC)", "lasted"
                );
            }
            for s in &sessions {
                println!(
                    "{:<20} {:<16} {:<8} {:<17} {:>9}  {}{}",
                    s.session_id,
                    s.game,
                    s.status,
                    utc_minute(s.created_at),
                    lasted(s.duration_secs),
                    s.node_id.as_deref().unwrap_or("—"),
                    s.end_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
        }
        Command::Subscribe { plan, no_open } => {
            let (_, billing) = logged_in(&dir)?;
            match plan.as_deref() {
                None => {
                    let plans = billing.plan_offers().await.context("listing the plans")?;
                    println!(
                        "{:<10} {:>12} {:>6} {:>9} {:>6}",
                        "plan", "price", "days", "sessions", "paths"
                    );
                    for p in &plans {
                        println!(
                            "{:<10} {:>12} {:>6} {:>9} {:>6}",
                            p.name,
                            p.price
                                .as_deref()
                                .map(|x| format!("{x} {}", p.currency))
                                .unwrap_or_else(|| "free".into()),
                            p.days,
                            p.max_sessions,
                            p.path_limit
                        );
                    }
                    println!(
                        "\n`plg subscribe trial` starts the free trial (once); `plg subscribe monthly` buys a month."
                    );
                }
                Some("trial") => {
                    billing
                        .start_trial()
                        .await
                        .context("starting the free trial")?;
                    match billing.subscription().await {
                        Ok(Some(sub)) => {
                            println!("trial started: {} left", days_left(sub.seconds_left))
                        }
                        _ => println!("trial started"),
                    }
                }
                Some(name) => {
                    let (id, how) = billing
                        .create_payment(name)
                        .await
                        .with_context(|| format!("creating a payment for plan {name}"))?;
                    println!("payment {id} created for plan {name}");
                    let Some(how) = how else {
                        println!(
                            "billing gave no payment instructions: contact support with the payment id"
                        );
                        return Ok(());
                    };
                    println!("{}", how.text);
                    if no_open || !open_in_browser(&how.pay_url) {
                        println!("pay on: {}", how.pay_url);
                    } else {
                        println!("opened {} in your browser", how.pay_url);
                    }
                    println!("`plg status` shows the plan once the payment is confirmed");
                }
            }
        }
        Command::Games { search } => {
            let creds = Credentials::load(&dir)?;
            let billing = BillingClient::new(&creds.billing_url).with_token(creds.access_token);
            let games = billing
                .games(search.as_deref())
                .await
                .context("listing games")?;
            if games.is_empty() {
                println!("no game matches");
            }
            let running = detect::detect(&games, &detect::running_processes());
            for g in &games {
                match running.iter().find(|d| d.slug == g.slug) {
                    Some(d) => println!(
                        "{:<24} {:<40} ▶ running ({}, pid {})",
                        g.slug, g.name, d.process, d.pid
                    ),
                    None => println!("{:<24} {}", g.slug, g.name),
                }
            }
            if let Some(d) = running.first() {
                println!(
                    "\n{} is running: `plg connect {}` accelerates it",
                    d.name, d.slug
                );
            }
        }
        Command::Nodes { game, probes } => {
            let (creds, billing) = logged_in(&dir)?;
            let game = match game {
                Some(g) => g,
                None => {
                    let games = billing.games(None).await.context("listing games")?;
                    match detect::detect(&games, &detect::running_processes()).first() {
                        Some(d) => d.slug.clone(),
                        None => bail!(
                            "no game is running: say which game with `plg nodes --game <slug>` (nodes are offered per game)"
                        ),
                    }
                }
            };
            // A preview: no ticket, no session slot taken.
            let pb = spinner(format!("asking billing for {game}'s nodes…"));
            let preview = billing.route_preview(&game).await;
            let preview = match preview {
                Ok(p) => p,
                Err(e) => {
                    pb.finish_and_clear();
                    return Err(anyhow::Error::new(e).context("listing the nodes"));
                }
            };
            if preview.nodes.is_empty() {
                pb.finish_and_clear();
                bail!("billing has no relay node online right now; try again in a minute");
            }
            pb.set_message(format!("probing {} relay node(s)…", preview.nodes.len()));
            let server = single_target(&preview.destinations);
            let (ranked, direct) = tokio::join!(
                route::probe_nodes(&preview.nodes, &creds.mesh_ca_pem, probes),
                plg_client::controller::direct_probe(server, preview.game.query.as_deref(), 3),
            );
            pb.finish_and_clear();
            let m = route::measurements(&ranked, direct.as_ref(), server.map(|s| s.ip()));
            let plan = route::choose(&m, None);
            println!(
                "{:<3} {:<20} {:<8} {:<24} {:>8} {:>10} {:>7} {:>12} {:>11}",
                "",
                "node",
                "region",
                "address",
                "rtt ms",
                "jitter ms",
                "loss",
                "→ game ms",
                "via ms"
            );
            for c in &ranked {
                let best = plan.as_ref().is_some_and(|p| p.exit == c.node.id);
                let to_game = m.to_game.get(&c.node.id);
                let whole = plan.as_ref().and_then(|_| {
                    let opt = route::RouteOption {
                        entry: c.node.id.clone(),
                        exit: c.node.id.clone(),
                        to_entry: route::Leg::from_probe(&c.probe)?,
                        mesh: None,
                        to_game: to_game.copied(),
                    };
                    opt.expected()
                });
                println!(
                    "{:<3} {:<20} {:<8} {:<24} {:>8} {:>10} {:>6.0}% {:>12} {:>11}{}",
                    if best { "*" } else { "" },
                    c.node.id,
                    c.node.region,
                    c.node.control_addr,
                    probe::ms(c.probe.median()),
                    probe::ms((c.probe.answered() > 1).then(|| c.probe.jitter())),
                    c.probe.loss_percent(),
                    probe::ms(to_game.map(|l| l.rtt)),
                    probe::ms(whole.map(|l| l.rtt)),
                    if best { "  recommended exit" } else { "" }
                );
            }
            println!(
                "\n{}",
                plan.as_ref().map_or_else(
                    || "no relay node answered: acceleration is not available right now".to_owned(),
                    route::RoutePlan::summary
                )
            );
        }
        Command::Bench {
            game,
            to,
            seconds,
            rate,
            node,
        } => {
            let (creds, billing) = logged_in(&dir)?;
            // One path, no redundancy, no renewal: the plain relay against the direct route.
            let req = ConnectRequest {
                node,
                capture: CaptureMode::Proxy {
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    server: to,
                },
                paths: 1,
                redundancy: Redundancy::Single,
                probes: 3,
                keep_alive: false,
                ..ConnectRequest::new(&game)
            };
            let mut shutdown = Shutdown::listen()?;
            let pb = spinner(format!("requesting a session ticket for {game}…"));
            let connected = Controller::connect_until(
                billing,
                creds.mesh_ca_pem.clone(),
                req,
                progress(&pb, false),
                shutdown.recv(),
            )
            .await;
            pb.finish_and_clear();
            let ctl = connected?;
            // A signal stops the benchmark; the session is still closed cleanly.
            let result = tokio::select! {
                r = bench_session(&ctl, seconds, rate) => r,
                _ = shutdown.recv() => Err(anyhow::anyhow!("benchmark stopped before it finished")),
            };
            ctl.stop().await;
            result?;
        }
        Command::Connect {
            game_arg,
            game,
            auto,
            launch,
            plain,
            proxy,
            to,
            mode,
            node,
            region,
            redundancy,
            paths,
            protected,
        } => {
            let (creds, billing) = logged_in(&dir)?;
            let game = match (game_arg.or(game), auto) {
                (want, true) => wait_for_game(&billing, want.as_deref()).await?,
                (Some(g), false) => g,
                (None, false) => bail!(
                    "which game? `plg connect <game>` (slugs: `plg games`), or `plg connect --auto` to wait for one"
                ),
            };
            let mode = match mode {
                Mode::Auto if to.is_none() && capture::helper::available() => Mode::Helper,
                Mode::Auto => {
                    if to.is_none() && cfg!(target_os = "linux") {
                        eprintln!(
                            "no capture helper at {}: using proxy mode (point the game at {proxy}); \
                             to capture with nothing to type, install it once: \
                             `sudo plg-capture install --user $USER --billing URL`",
                            capture::helper::socket_path().display()
                        );
                    }
                    Mode::Proxy
                }
                m => m,
            };
            let capture = match mode {
                Mode::Auto | Mode::Helper => CaptureMode::Helper,
                Mode::Proxy => CaptureMode::Proxy {
                    listen: proxy,
                    server: to,
                },
                Mode::Tun => CaptureMode::Tun,
                Mode::Windivert => CaptureMode::WinDivert,
            };
            let req = ConnectRequest {
                node,
                region,
                capture,
                paths,
                redundancy,
                protection: protected,
                ..ConnectRequest::new(&game)
            };
            // Listening starts before the ticket is asked for and lasts until `live` ends.
            let mut shutdown = Shutdown::listen()?;
            let pb = spinner(format!("requesting a session ticket for {game}…"));
            // A signal while connecting gives up, and the session billing opened is released.
            let connected = Controller::connect_until(
                billing,
                creds.mesh_ca_pem.clone(),
                req,
                progress(&pb, true),
                shutdown.recv(),
            )
            .await;
            pb.finish_and_clear();
            let ctl = connected?;
            let info = ctl.info();
            if paths as usize > info.relays.len() {
                println!(
                    "your plan allows {} path(s) per session: using {}",
                    info.relays.len(),
                    info.relays.len()
                );
            }
            for (i, r) in info.relays.iter().enumerate() {
                match r {
                    None => println!("path {i}: straight to node {}", info.node.id),
                    Some(r) => println!(
                        "path {i}: through node {} ({}) to node {}",
                        r.id, r.data_addr, info.node.id
                    ),
                }
            }
            println!(
                "session {} via node {} ({}) for {}",
                info.session_id, info.node.id, info.node.control_addr, info.game_name
            );
            match (info.local_addr, info.server) {
                (Some(local), Some(to)) => {
                    println!("point the game at {local} — traffic goes to {to}; Ctrl-C to stop")
                }
                _ => println!(
                    "capturing the game's traffic with {}; just play — Ctrl-C to stop",
                    info.capture
                ),
            }
            if let Some(exe) = &launch {
                match std::process::Command::new(exe).spawn() {
                    Ok(child) => println!("launched {} (pid {})", exe.display(), child.id()),
                    Err(e) => eprintln!(
                        "warning: cannot launch {}: {e}; start the game yourself",
                        exe.display()
                    ),
                }
            }
            let tui = !plain && std::io::stdout().is_terminal();
            let outcome = live(ctl, tui, &mut shutdown).await;
            println!("disconnected");
            outcome?;
        }
    }
    Ok(())
}

/// What a connect is doing, on the spinner (with `advice`, the ranking's advice printed
/// above it; `plg bench` measures instead of advising).
fn progress(pb: &ProgressBar, advice: bool) -> impl Fn(Progress) + use<> {
    let pb = pb.clone();
    move |p: Progress| match p {
        Progress::Ticket => {}
        Progress::Probing(n) => pb.set_message(format!("probing {n} relay node(s)…")),
        Progress::Advice(text) if advice => pb.suspend(|| println!("{text}")),
        Progress::Advice(_) => {}
        Progress::Opening => pb.set_message("opening the session…"),
    }
}

/// `plg bench`: direct first, then through the session to the same server.
async fn bench_session(ctl: &Controller, seconds: u64, rate: u32) -> Result<()> {
    let info = ctl.info();
    let (Some(target), Some(local)) = (info.server, info.local_addr) else {
        bail!("the session has no local port to measure through");
    };
    let node = &info.node;
    let spec = bench::Traffic {
        rate,
        duration: Duration::from_secs(seconds),
        ..bench::Traffic::default()
    };
    println!(
        "bench: {} packets/s of {}–{} bytes for {} s each, to {target} ({}); relay node {} ({})",
        spec.rate,
        spec.min_size,
        spec.max_size,
        seconds,
        info.game_name,
        node.id,
        node.control_addr
    );
    let run = |label: &'static str, addr: SocketAddr| {
        let pb = spinner(format!("{label}: sending…"));
        async move {
            let r = bench::run(addr, spec).await;
            pb.finish_and_clear();
            r
        }
    };
    let route = ctl.route();
    println!("route: {}", route.summary);
    if let Some(g) = route.exit_game {
        println!(
            "the exit measures {:.1} ms to the game server itself (its own probes)",
            g.rtt.as_secs_f64() * 1000.0
        );
    }
    let direct = run("direct", target).await.context("direct run")?;
    let via = run("through PLG", local)
        .await
        .context("run through the session")?;
    print!(
        "\n{}",
        bench::table(&[("direct", &direct), ("through PLG", &via)])
    );
    match (direct.probe.median(), via.probe.median()) {
        (None, _) => println!(
            "\nthe game server did not answer direct traffic: `plg bench` needs a server that echoes (e.g. the local demo's); use `plg connect` and watch the node ping instead"
        ),
        (Some(_), None) => println!(
            "\nnothing came back through the session: the node could not reach {target} (see `plg nodes`)"
        ),
        (Some(d), Some(v)) => {
            let diff = v.as_secs_f64() * 1000.0 - d.as_secs_f64() * 1000.0;
            let pct = 100.0 * diff / (d.as_secs_f64() * 1000.0).max(1e-6);
            println!(
                "\nmedian ping through PLG is {:.2} ms {} than direct ({:+.0}%); loss {:.2}% vs {:.2}%",
                diff.abs(),
                if diff <= 0.0 { "lower" } else { "higher" },
                pct,
                via.probe.loss_percent(),
                direct.probe.loss_percent()
            );
        }
    }
    if direct.corrupted + via.corrupted > 0 {
        bail!(
            "{} echoes came back altered ({} direct, {} through PLG)",
            direct.corrupted + via.corrupted,
            direct.corrupted,
            via.corrupted
        );
    }
    Ok(())
}

/// Where log lines go while the full-screen dashboard is up (never over it).
static DASHBOARD_LOG: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

fn log_writer() -> Box<dyn std::io::Write> {
    match DASHBOARD_LOG.get() {
        Some(f) => Box::new(f),
        None => Box::new(std::io::stderr()),
    }
}

/// Sends log lines to `<config dir>/logs/plg.log` from now on; returns the file's path.
fn log_to_file() -> Option<PathBuf> {
    let dir = config_dir().ok()?.join("logs");
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join("plg.log");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()?;
    DASHBOARD_LOG.set(f).ok()?;
    Some(path)
}

/// Unanswered probes (before any answer) after which a pinger gives up.
const PING_GIVE_UP: u32 = 5;

/// Every way a user or the system asks `plg` to stop: Ctrl-C, SIGTERM, SIGHUP (a closed
/// terminal). It listens from the moment it is made, so a signal that comes while nothing
/// awaits it — between connecting and the live loop, say — is kept for the next `recv`, not
/// lost (tokio keeps the handler installed, so a lost signal would leave `plg` running).
struct Shutdown {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 3],
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
}

impl Shutdown {
    fn listen() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let on = |kind: SignalKind| signal(kind).context("listening for signals");
            Ok(Shutdown {
                signals: [
                    on(SignalKind::interrupt())?,
                    on(SignalKind::terminate())?,
                    on(SignalKind::hangup())?,
                ],
            })
        }
        #[cfg(windows)]
        {
            Ok(Shutdown {
                ctrl_c: tokio::signal::windows::ctrl_c().context("listening for Ctrl-C")?,
            })
        }
    }

    /// Resolves when one of the signals came (since `listen` or the last `recv`).
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let [int, term, hup] = &mut self.signals;
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        }
        #[cfg(windows)]
        {
            self.ctrl_c.recv().await;
        }
    }
}

/// The running `plg connect`: presentation only (dashboard or status lines, direct vs
/// accelerated pings); the session itself is the [`Controller`]'s.
async fn live(mut ctl: Controller, tui: bool, shutdown: &mut Shutdown) -> Result<()> {
    let info = ctl.info();
    let route_of = |i: &plg_client::SessionInfo| format!("{} ({})", i.node.id, i.node.control_addr);
    let mut m = Monitor::new(
        format!("{} — session {}", info.game_name, info.session_id),
        route_of(&info),
    );
    let (ping_tx, mut ping_rx) = mpsc::channel(16);
    let mut pingers: Vec<JoinHandle<()>> = Vec::new();
    match (info.local_addr, info.server) {
        (Some(mut via), Some(t)) => {
            pingers.push(spawn_pinger(t, Ping::Direct, PING_GIVE_UP, ping_tx.clone()));
            if via.ip().is_unspecified() {
                via.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            pingers.push(spawn_pinger(
                via,
                Ping::Accelerated,
                PING_GIVE_UP,
                ping_tx.clone(),
            ));
        }
        (None, Some(t)) => {
            // Captured modes: a probe to the server is itself captured, so it measures the
            // accelerated path; the direct one cannot be measured while connected.
            pingers.push(spawn_pinger(
                t,
                Ping::Accelerated,
                PING_GIVE_UP,
                ping_tx.clone(),
            ));
            m.direct.note = Some("not measurable while the capture is on".into());
        }
        (_, None) => {
            let why = "the game has several server ranges: no single server to probe";
            m.direct.note = Some(why.into());
            m.accelerated.note = Some(format!("{why}; see node ping"));
        }
    }
    drop(ping_tx);
    let mut misses = [0u32; 2];
    let mut screen = if tui {
        match Tui::start() {
            Ok(t) => {
                if let Some(path) = log_to_file() {
                    m.event(format!("logs go to {}", path.display()));
                }
                Some(t)
            }
            Err(e) => {
                eprintln!("warning: no dashboard ({e}); printing status lines");
                None
            }
        }
    } else {
        None
    };
    // With the dashboard up, messages go into its event log (and logs are silenced, see
    // `main`): nothing is printed over the full-screen view.
    let say = |m: &mut Monitor, screen: bool, text: String, error: bool| {
        if screen {
            m.event(text);
        } else if error {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u64;
    let mut result = Ok(());
    loop {
        let has_screen = screen.is_some();
        tokio::select! {
            _ = shutdown.recv() => break,
            Some(()) = async {
                match screen.as_mut() {
                    Some(s) => s.quit.recv().await,
                    None => std::future::pending().await,
                }
            } => break,
            Some(ping) = ping_rx.recv() => {
                let (i, got) = match ping {
                    Ping::Direct(d) => (0, d.is_some()),
                    Ping::Accelerated(d) => (1, d.is_some()),
                };
                misses[i] = if got { u32::MAX } else { misses[i].saturating_add(1).min(u32::MAX - 1) };
                m.ping(ping);
                if misses[i] == PING_GIVE_UP {
                    let note = "the game server does not answer probes (most don't); see node ping";
                    if i == 0 { m.direct.note = Some(note.into()) } else { m.accelerated.note = Some(note.into()) }
                }
            }
            ev = ctl.next_event() => {
                let Some(ev) = ev else { break };
                m.route = route_of(&ctl.info());
                match ev {
                    SessionEvent::Path(ProxyEvent::DestinationRefused(d)) => {
                        result = Err(anyhow::anyhow!(
                            "the node refused {d}: your ticket for {} does not allow it",
                            info.game_name
                        ));
                        break;
                    }
                    SessionEvent::Path(ProxyEvent::PrimaryChanged { from, to }) => {
                        say(&mut m, has_screen, format!("route: primary path {from} → {to}"), false)
                    }
                    SessionEvent::Path(ProxyEvent::Failover { to, gap }) => say(
                        &mut m,
                        has_screen,
                        format!("session moved to node {to} ({} ms without replies)", gap.as_millis()),
                        false,
                    ),
                    SessionEvent::Path(ProxyEvent::RelayMoved { path, from, to }) => say(
                        &mut m,
                        has_screen,
                        format!("path {path}: relay {from} went silent; now through node {to}"),
                        false,
                    ),
                    SessionEvent::Path(ProxyEvent::NodeLost { reason }) => say(
                        &mut m,
                        has_screen,
                        format!(
                            "node lost: the node stopped answering and no other node took the session ({reason}); retrying — if it lasts, quit and run `plg connect` again or pick a node from `plg nodes`"
                        ),
                        true,
                    ),
                    SessionEvent::Path(ProxyEvent::ProtectedMode { on, reason }) => say(
                        &mut m,
                        has_screen,
                        format!("protected mode {}: {reason}", if on { "on" } else { "off" }),
                        false,
                    ),
                    SessionEvent::Path(ProxyEvent::TooManyFlows) => say(
                        &mut m,
                        has_screen,
                        format!("warning: the game uses more than {} flows at once; new ones wait for a free slot", plg_client::conn::MAX_FLOWS),
                        true,
                    ),
                    SessionEvent::Path(other) => say(&mut m, has_screen, format!("warning: {other:?}"), true),
                    SessionEvent::Renewed { session_id, node, expires_at, in_place } => {
                        m.title = format!("{} — session {session_id}", info.game_name);
                        let mins = expires_at.saturating_sub(unix_now()) / 60;
                        let text = if in_place {
                            format!("ticket renewed in place: session {session_id} continues on node {node} for {mins} more minutes")
                        } else {
                            format!("ticket renewed: session {session_id} on node {node}, valid for {mins} min more")
                        };
                        say(&mut m, has_screen, text, false);
                    }
                    SessionEvent::RenewFailed { error, retry_in } => say(
                        &mut m,
                        has_screen,
                        format!("ticket renewal failed: {error}; retrying in {} s", retry_in.as_secs()),
                        true,
                    ),
                    SessionEvent::Moved { why } => say(&mut m, has_screen, why, false),
                    SessionEvent::Recommend { text, .. } => say(&mut m, has_screen, text, false),
                    SessionEvent::Ended(EndReason::TicketExpired { error }) => {
                        result = Err(anyhow::anyhow!(
                            "the session ticket expired and could not be renewed ({error}); run `plg connect` again"
                        ));
                        break;
                    }
                    SessionEvent::Ended(EndReason::Stopped) => break,
                }
            }
            _ = tick.tick() => {
                ticks += 1;
                m.sample(ctl.stats(), &ctl.paths());
                m.route_view(&ctl.route());
                match screen.as_mut() {
                    Some(s) => {
                        if let Err(e) = s.draw(&m) {
                            tracing::warn!(error = %e, "dashboard draw failed");
                        }
                    }
                    None if ticks.is_multiple_of(2) => println!("{}", m.line()),
                    None => {}
                }
            }
        }
    }
    for t in pingers {
        t.abort();
    }
    drop(screen);
    let (_, report) = ctl.finish().await;
    print_report(&report);
    result
}

/// Prints the session's before vs after and writes the report to
/// `<config dir>/reports/session-<id>.json`.
fn print_report(r: &plg_client::SessionReport) {
    let fmt = |s: &plg_client::RttSummary| match (s.p50_ms, s.p99_ms) {
        (Some(p50), Some(p99)) => format!(
            "p50 {p50:.1} ms, p99 {p99:.1} ms, {:.1} % unanswered of {}",
            s.loss_percent, s.samples
        ),
        _ => "not measured".to_owned(),
    };
    println!("direct:      {}", fmt(&r.direct));
    println!("through PLG: {}", fmt(&r.plg));
    if let Some(p) = r.reduction_percent {
        println!("median ping {p:+.1} % lower through PLG");
    }
    let Ok(dir) = config_dir().map(|d| d.join("reports")) else {
        return;
    };
    let path = dir.join(format!("session-{}.json", r.session_id));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, serde_json::to_vec_pretty(r).unwrap_or_default()));
    match written {
        Ok(()) => println!("session report: {}", path.display()),
        Err(e) => eprintln!(
            "warning: cannot write the session report {}: {e}",
            path.display()
        ),
    }
}
