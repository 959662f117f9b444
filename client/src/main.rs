//! `plg`: the gamer's command line.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
#[cfg(windows)]
use plg_client::capture::WinDivertCapture;
use plg_client::capture::{ProxyCapture, Targets};
#[cfg(target_os = "linux")]
use plg_client::capture::{TunCapture, TunConfig};
use plg_client::credentials::{Credentials, config_dir};
use plg_client::dashboard::{Monitor, Ping, Tui, spawn_pinger};
use plg_client::route::{self, Candidate};
use plg_client::{
    BillingClient, Failover, NodeInfo, Protection, Proxy, ProxyEvent, Redundancy, SessionGrant,
    Tunnel, TunnelError, bench, detect, explain, probe, renew,
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
        /// Billing base URL.
        #[arg(long, env = "PLG_BILLING_URL")]
        billing: String,
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
    /// Show who is logged in, where, and until when.
    Status,
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
        /// The game server's address (proxy mode: where the local port forwards to).
        #[arg(long, required_if_eq("mode", "proxy"))]
        to: Option<SocketAddr>,
        /// How game traffic is captured: `proxy` (point the game at --proxy), `tun` (Linux,
        /// root: routes the game's server ranges into a TUN device, no game settings touched),
        /// `windivert` (Windows, administrator).
        #[arg(long, value_enum, default_value_t = Mode::Proxy)]
        mode: Mode,
        /// Use this node id instead of the best-probing one.
        #[arg(long)]
        node: Option<String>,
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
    /// A local UDP port the game is pointed at.
    Proxy,
    /// A TUN device with routes for the game's servers (Linux).
    Tun,
    /// WinDivert packet capture (Windows).
    Windivert,
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

/// The game server's address when the game has exactly one destination host and port (the
/// local demo's echo server, a private server).
fn single_target(destinations: &[String]) -> Option<SocketAddr> {
    let [only] = destinations else { return None };
    let d: plg_proto::ticket::Destination = only.parse().ok()?;
    (d.net.prefix_len() == d.net.max_prefix_len() && d.port_lo == d.port_hi)
        .then(|| SocketAddr::new(d.net.addr(), d.port_lo))
}

/// Requests a ticket and probes the offered nodes; returns the grant and the candidates best
/// first (the one named `only`, if given).
async fn grant_and_rank(
    billing: &BillingClient,
    ca_pem: &str,
    game: &str,
    only: Option<&str>,
    probes: u32,
) -> Result<(SessionGrant, Vec<Candidate>)> {
    let pb = spinner(format!("requesting a session ticket for {game}…"));
    let grant = billing
        .request_session(game)
        .await
        .context("requesting a session ticket");
    let grant = match grant {
        Ok(g) => g,
        Err(e) => {
            pb.finish_and_clear();
            return Err(e);
        }
    };
    let nodes: Vec<NodeInfo> = grant
        .nodes
        .iter()
        .filter(|n| only.is_none_or(|id| n.id == id))
        .cloned()
        .collect();
    if nodes.is_empty() {
        pb.finish_and_clear();
        let _ = billing.stop_session(&grant.session_id).await;
        match only {
            Some(id) => bail!(
                "node {id} is not among the nodes billing offers for this session (`plg nodes --game {game}` lists them)"
            ),
            None => bail!("billing has no relay node online right now; try again in a minute"),
        }
    }
    pb.set_message(format!("probing {} relay node(s)…", nodes.len()));
    let ranked = route::probe_nodes(&nodes, ca_pem, probes).await;
    pb.finish_and_clear();
    Ok((grant, ranked))
}

/// Opens the session on the first candidate that accepts it.
async fn open_ranked(
    ranked: &[Candidate],
    ca_pem: &str,
    ticket: &[u8],
) -> Result<(NodeInfo, Tunnel)> {
    let mut last = None;
    for c in ranked {
        let addr = c.node.control_addr.parse().with_context(|| {
            format!(
                "node {} has a bad address {:?}",
                c.node.id, c.node.control_addr
            )
        })?;
        match Tunnel::open(addr, &c.node.server_name, ca_pem, ticket).await {
            Ok(t) => return Ok((c.node.clone(), t)),
            Err(e @ TunnelError::Rejected { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(node = %c.node.id, error = %e, "node unreachable, trying the next");
                last = Some(e);
            }
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no relay node to try")))
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
        .with_writer(std::io::stderr);
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
                } else {
                    println!("login valid for {}h{:02}m", left / 3600, left % 3600 / 60);
                }
            }
            Err(_) => println!("not logged in (config dir {})", dir.display()),
        },
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
            let (grant, ranked) =
                grant_and_rank(&billing, &creds.mesh_ca_pem, &game, None, probes).await?;
            // Listing needed a ticket; give the session back at once.
            let _ = billing.stop_session(&grant.session_id).await;
            println!(
                "{:<3} {:<20} {:<8} {:<24} {:>8} {:>10} {:>7}",
                "", "node", "region", "address", "rtt ms", "jitter ms", "loss"
            );
            for (i, c) in ranked.iter().enumerate() {
                let best = i == 0 && c.probe.answered() > 0;
                println!(
                    "{:<3} {:<20} {:<8} {:<24} {:>8} {:>10} {:>6.0}%{}",
                    if best { "*" } else { "" },
                    c.node.id,
                    c.node.region,
                    c.node.control_addr,
                    probe::ms(c.probe.median()),
                    probe::ms((c.probe.answered() > 1).then(|| c.probe.jitter())),
                    c.probe.loss_percent(),
                    if best { "  recommended" } else { "" }
                );
            }
            let direct = match single_target(&grant.destinations) {
                Some(t) => probe::echo(t, 3, Duration::from_millis(50), Duration::from_millis(500))
                    .await
                    .ok(),
                None => None,
            };
            println!(
                "\n{}",
                route::advice(direct.as_ref().filter(|p| p.answered() > 0), ranked.first())
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
            let (grant, ranked) =
                grant_and_rank(&billing, &creds.mesh_ca_pem, &game, node.as_deref(), 3).await?;
            let result = bench_session(&creds, &grant, &ranked, to, seconds, rate).await;
            let _ = billing.stop_session(&grant.session_id).await;
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
            let (grant, ranked) = grant_and_rank(
                &billing,
                &creds.mesh_ca_pem,
                &game,
                node.as_deref(),
                route::PROBES,
            )
            .await?;
            let issued = unix_now();
            let ticket = grant.ticket_bytes()?;
            let direct_target = to.or_else(|| single_target(&grant.destinations));
            if mode == Mode::Proxy
                && let Some(t) = direct_target
            {
                let direct =
                    probe::echo(t, 3, Duration::from_millis(50), Duration::from_millis(500))
                        .await
                        .ok()
                        .filter(|p| p.answered() > 0);
                println!("{}", route::advice(direct.as_ref(), ranked.first()));
            } else {
                println!("{}", route::advice(None, ranked.first()));
            }
            let pb = spinner("opening the session…");
            let opened = open_ranked(&ranked, &creds.mesh_ca_pem, &ticket).await;
            pb.finish_and_clear();
            let (node, tunnel) = match opened {
                Ok(x) => x,
                Err(e) => {
                    let _ = billing.stop_session(&grant.session_id).await;
                    return Err(e);
                }
            };
            let tunnel = tunnel.with_protection(protected);
            let allowed = tunnel.accept.max_paths.max(1);
            if paths > allowed {
                println!("your plan allows {allowed} path(s) per session: using {allowed}");
            }
            let plan = route::plan_paths(
                &node,
                tunnel.data_addr,
                &route::answering(&ranked),
                paths.min(allowed) as usize,
            );
            for (i, p) in plan.iter().enumerate() {
                match &p.relay {
                    None => println!("path {i}: straight to node {} ({})", node.id, p.addr),
                    Some(r) => println!(
                        "path {i}: through node {} ({}) to node {}",
                        r.id, p.addr, node.id
                    ),
                }
            }
            let path_addrs: Vec<SocketAddr> = plan.iter().map(|p| p.addr).collect();
            // If the node goes silent, the same ticket moves the session to the next node.
            let failover = Failover {
                ticket: ticket.clone(),
                ca_pem: creds.mesh_ca_pem.clone(),
                candidates: ranked
                    .iter()
                    .filter(|c| c.node.id != node.id)
                    .map(|c| c.node.clone())
                    .collect(),
                after: Duration::from_secs(1),
                relays: plan
                    .iter()
                    .map(|p| p.relay.as_ref().map(|r| r.id.clone()))
                    .collect(),
            };
            // Our own traffic (nodes, relays, billing) must never be captured into the tunnel.
            let targets = Targets::parse(&grant.destinations)?
                .exclude([tunnel.data_addr.ip()])
                .exclude_own(ranked.iter().map(|c| &c.node), &creds.billing_url)
                .await;
            let p = match mode {
                Mode::Proxy => {
                    let to = to.context("--to is required in proxy mode")?;
                    let capture = ProxyCapture::bind(proxy, to)
                        .await
                        .with_context(|| format!("cannot listen on {proxy}"))?;
                    let local = capture.local_addr()?;
                    let mut p =
                        Proxy::start_with(tunnel, capture, path_addrs, redundancy, Some(failover))
                            .await?;
                    p.local_addr = local;
                    p
                }
                #[cfg(target_os = "linux")]
                Mode::Tun => {
                    let capture = TunCapture::open(TunConfig::new(targets))
                        .context("cannot set up TUN capture (needs root: try sudo)")?;
                    Proxy::start_with(tunnel, capture, path_addrs, redundancy, Some(failover))
                        .await?
                }
                #[cfg(windows)]
                Mode::Windivert => {
                    let capture = WinDivertCapture::open(targets)
                        .context("cannot open WinDivert (run as administrator)")?;
                    Proxy::start_with(tunnel, capture, path_addrs, redundancy, Some(failover))
                        .await?
                }
                #[allow(unreachable_patterns)]
                other => {
                    let _ = targets;
                    bail!("--mode {other:?} is not available on this platform")
                }
            };
            println!(
                "session {} via node {} ({}) for {}",
                grant.session_id, node.id, node.control_addr, grant.game.name
            );
            match (mode, to) {
                (Mode::Proxy, Some(to)) => println!(
                    "point the game at {} — traffic goes to {to}; Ctrl-C to stop",
                    p.local_addr
                ),
                _ => println!(
                    "capturing the game's traffic with {}; just play — Ctrl-C to stop",
                    p.capture
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
            let live = Live {
                billing,
                ca_pem: creds.mesh_ca_pem.clone(),
                game: game.clone(),
                mode,
                direct_target,
                grant,
                issued,
                node,
                ticket,
            };
            let outcome = live.run(p, tui).await;
            println!("disconnected");
            outcome?;
        }
    }
    Ok(())
}

/// `plg bench`: direct first, then through a session to the same server.
async fn bench_session(
    creds: &Credentials,
    grant: &SessionGrant,
    ranked: &[Candidate],
    to: Option<SocketAddr>,
    seconds: u64,
    rate: u32,
) -> Result<()> {
    let Some(target) = to.or_else(|| single_target(&grant.destinations)) else {
        bail!(
            "{} has several server ranges: say which server to measure with --to <ip:port>",
            grant.game.name
        );
    };
    let ticket = grant.ticket_bytes()?;
    let pb = spinner("opening the session…");
    let opened = open_ranked(ranked, &creds.mesh_ca_pem, &ticket).await;
    pb.finish_and_clear();
    let (node, tunnel) = opened?;
    let data = tunnel.data_addr;
    let p = Proxy::start_multipath(
        tunnel,
        "127.0.0.1:0".parse().expect("literal"),
        target,
        vec![data],
        Redundancy::Single,
    )
    .await
    .context("starting the local proxy")?;
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
        grant.game.name,
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
    let direct = run("direct", target).await.context("direct run")?;
    let via = run("through PLG", p.local_addr)
        .await
        .context("run through the session")?;
    p.stop().await;
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

/// How often a running session re-probes the nodes to look for a clearly better one.
const REEVALUATE: Duration = Duration::from_secs(60);
/// Unanswered probes (before any answer) after which a pinger gives up.
const PING_GIVE_UP: u32 = 5;
/// Wait between failed renewal attempts.
const RENEW_RETRY: u64 = 30;

/// A running `plg connect`: the dashboard or status lines, ticket renewal, re-evaluation.
struct Live {
    billing: BillingClient,
    ca_pem: String,
    game: String,
    mode: Mode,
    direct_target: Option<SocketAddr>,
    grant: SessionGrant,
    issued: u64,
    node: NodeInfo,
    ticket: Vec<u8>,
}

/// What a background job of the session loop finished with.
enum Job {
    Renewed(Result<renew::Renewed>),
    RenewedInPlace((SessionGrant, Vec<u8>)),
    Better(Option<(NodeInfo, Tunnel, String)>),
}

impl Live {
    fn route(&self) -> String {
        format!("{} ({})", self.node.id, self.node.control_addr)
    }

    async fn run(mut self, mut p: Proxy, tui: bool) -> Result<()> {
        let mut m = Monitor::new(
            format!(
                "{} — session {}",
                self.grant.game.name, self.grant.session_id
            ),
            self.route(),
        );
        let (ping_tx, mut ping_rx) = mpsc::channel(16);
        let mut pingers: Vec<JoinHandle<()>> = Vec::new();
        match (self.mode, self.direct_target) {
            (Mode::Proxy, Some(t)) => {
                pingers.push(spawn_pinger(t, Ping::Direct, PING_GIVE_UP, ping_tx.clone()));
                let mut via = p.local_addr;
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
            (_, Some(t)) => {
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
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("warning: no dashboard ({e}); printing status lines");
                    None
                }
            }
        } else {
            None
        };
        let say = |m: &mut Monitor, screen: bool, text: String, error: bool| {
            if screen {
                m.event(text);
            } else if error {
                eprintln!("{text}");
            } else {
                println!("{text}");
            }
        };
        let mut renew_at = renew::renew_at(self.issued, self.grant.expires_at);
        let mut reevaluate_at = tokio::time::Instant::now() + REEVALUATE;
        let mut job: Option<JoinHandle<Job>> = None;
        let mut switching: Option<String> = None;
        let mut last_error: Option<String> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        let mut result = Ok(());
        loop {
            let has_screen = screen.is_some();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
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
                Some(ev) = p.events.recv() => match ev {
                    ProxyEvent::DestinationRefused(d) => {
                        result = Err(anyhow::anyhow!(
                            "the node refused {d}: your ticket for {} does not allow it",
                            self.grant.game.name
                        ));
                        break;
                    }
                    ProxyEvent::PrimaryChanged { from, to } => {
                        say(&mut m, has_screen, format!("route: primary path {from} → {to}"), false)
                    }
                    ProxyEvent::Failover { to, gap } => {
                        let text = match switching.take() {
                            Some(why) => why,
                            None => format!(
                                "node lost: session moved to node {to} ({} ms without replies)",
                                gap.as_millis()
                            ),
                        };
                        if let Some(n) = self.grant.nodes.iter().find(|n| n.id == to) {
                            self.node = n.clone();
                        }
                        m.route = self.route();
                        say(&mut m, has_screen, text, false);
                    }
                    ProxyEvent::NodeLost { reason } => say(
                        &mut m,
                        has_screen,
                        format!(
                            "node lost: the node stopped answering and no other node took the session ({reason}); retrying — if it lasts, quit and run `plg connect` again or pick a node from `plg nodes`"
                        ),
                        true,
                    ),
                    ProxyEvent::ProtectedMode { on, reason } => say(
                        &mut m,
                        has_screen,
                        format!("protected mode {}: {reason}", if on { "on" } else { "off" }),
                        false,
                    ),
                    other => say(&mut m, has_screen, format!("warning: {other:?}"), true),
                },
                r = async { job.as_mut().expect("guarded").await }, if job.is_some() => {
                    job = None;
                    match r {
                        Ok(Job::Renewed(Ok(renewed))) => {
                            let ticket = match renewed.grant.ticket_bytes() {
                                Ok(t) => t,
                                Err(e) => { last_error = Some(e.to_string()); continue; }
                            };
                            let text = format!(
                                "ticket renewed: session {} on node {}, valid for {} min more",
                                renewed.grant.session_id,
                                renewed.node.id,
                                renewed.grant.expires_at.saturating_sub(unix_now()) / 60
                            );
                            self.issued = unix_now();
                            renew_at = renew::renew_at(self.issued, renewed.grant.expires_at);
                            self.grant = renewed.grant;
                            self.ticket = ticket.clone();
                            self.node = renewed.node.clone();
                            switching = Some(text);
                            m.title = format!("{} — session {}", self.grant.game.name, self.grant.session_id);
                            p.switch_tunnel(renewed.node, renewed.tunnel, ticket).await;
                            last_error = None;
                        }
                        Ok(Job::RenewedInPlace((grant, ticket))) => {
                            say(
                                &mut m,
                                has_screen,
                                format!(
                                    "ticket renewed in place: session {} continues on node {} for {} more minutes",
                                    grant.session_id,
                                    self.node.id,
                                    grant.expires_at.saturating_sub(unix_now()) / 60
                                ),
                                false,
                            );
                            self.issued = unix_now();
                            renew_at = renew::renew_at(self.issued, grant.expires_at);
                            self.grant = grant;
                            self.ticket = ticket.clone();
                            p.set_failover_ticket(ticket).await;
                            last_error = None;
                        }
                        Ok(Job::Renewed(Err(e))) => {
                            let hint = explain::advice(&e).map(|h| format!(" — {h}")).unwrap_or_default();
                            say(
                                &mut m,
                                has_screen,
                                format!("ticket renewal failed: {e:#}{hint}; retrying in {RENEW_RETRY} s"),
                                true,
                            );
                            last_error = Some(format!("{e:#}"));
                            renew_at = unix_now() + RENEW_RETRY;
                        }
                        Ok(Job::Better(Some((node, tunnel, why)))) => {
                            self.node = node.clone();
                            switching = Some(why);
                            p.switch_tunnel(node, tunnel, self.ticket.clone()).await;
                        }
                        Ok(Job::Better(None)) | Err(_) => {}
                    }
                }
                _ = tick.tick() => {
                    ticks += 1;
                    m.sample(&p.stats, &p.paths.borrow());
                    match screen.as_mut() {
                        Some(s) => {
                            if let Err(e) = s.draw(&m) {
                                tracing::warn!(error = %e, "dashboard draw failed");
                            }
                        }
                        None if ticks.is_multiple_of(2) => println!("{}", m.line()),
                        None => {}
                    }
                    let now = unix_now();
                    if now >= self.grant.expires_at {
                        let why = last_error.clone().unwrap_or_else(|| "no renewal happened".into());
                        result = Err(anyhow::anyhow!(
                            "the session ticket expired and could not be renewed ({why}); run `plg connect` again"
                        ));
                        break;
                    }
                    if job.is_none() && now >= renew_at {
                        let (billing, ca, game) = (self.billing.clone(), self.ca_pem.clone(), self.game.clone());
                        let (prefer, old) = (self.node.id.clone(), self.grant.session_id.clone());
                        say(&mut m, has_screen, "renewing the session ticket…".into(), false);
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
                    } else if job.is_none() && tokio::time::Instant::now() >= reevaluate_at {
                        reevaluate_at = tokio::time::Instant::now() + REEVALUATE;
                        let (nodes, ca, ticket) = (self.grant.nodes.clone(), self.ca_pem.clone(), self.ticket.clone());
                        let current = self.node.id.clone();
                        job = Some(tokio::spawn(async move { Job::Better(better_node(nodes, ca, ticket, current).await) }));
                    }
                }
            }
        }
        for t in pingers {
            t.abort();
        }
        drop(screen);
        let session = self.grant.session_id.clone();
        p.stop().await;
        let _ = self.billing.stop_session(&session).await;
        result
    }
}

/// Re-probes the nodes; if one is clearly better than `current` (hysteresis in
/// [`route::clearly_better`]), opens the session there and returns it with a message.
async fn better_node(
    nodes: Vec<NodeInfo>,
    ca: String,
    ticket: Vec<u8>,
    current: String,
) -> Option<(NodeInfo, Tunnel, String)> {
    let ranked = route::probe_nodes(&nodes, &ca, 3).await;
    let best = ranked.first()?;
    if best.node.id == current {
        return None;
    }
    let cur = ranked.iter().find(|c| c.node.id == current);
    let cur_score = cur.and_then(|c| c.probe.score());
    if !route::clearly_better(cur_score, best.probe.score()) {
        return None;
    }
    let addr = best.node.control_addr.parse().ok()?;
    let tunnel = Tunnel::open(addr, &best.node.server_name, &ca, &ticket)
        .await
        .ok()?;
    let why = format!(
        "route: node {} is clearly better ({} ms vs {} ms to node {current}); session moved there",
        best.node.id,
        probe::ms(best.probe.median()),
        probe::ms(cur.and_then(|c| c.probe.median())),
    );
    Some((best.node.clone(), tunnel, why))
}
