//! `plg`: the gamer's command line.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
#[cfg(windows)]
use plg_client::capture::WinDivertCapture;
use plg_client::capture::{ProxyCapture, Targets};
#[cfg(target_os = "linux")]
use plg_client::capture::{TunCapture, TunConfig};
use plg_client::credentials::{Credentials, config_dir};
use plg_client::{BillingClient, Failover, Protection, Proxy, ProxyEvent, Redundancy};

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
    /// List the game catalog, optionally filtered by a search string.
    Games {
        /// Part of a game's name or slug, e.g. "counter".
        search: Option<String>,
    },
    /// Accelerate a game: its UDP traffic goes through a relay node (see --mode).
    Connect {
        /// Game slug from the catalog (decides which destinations the ticket allows).
        #[arg(long)]
        game: String,
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
        /// Use this node id instead of billing's first choice.
        #[arg(long)]
        node: Option<String>,
        /// Redundancy policy: single (best path), duplicate (every path), adaptive
        /// (single while clean, duplicate when loss is seen).
        #[arg(long, default_value = "adaptive", value_parser = parse_redundancy)]
        redundancy: Redundancy,
        /// Number of paths to the node (each its own UDP socket; more paths help only on
        /// multi-homed hosts until relay paths arrive).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
        paths: u8,
        /// Protected mode: auto (QUIC datagrams on the control connection when the node's UDP
        /// port does not answer), always, or never.
        #[arg(long, default_value = "auto")]
        protected: Protection,
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

#[tokio::main]
async fn main() -> Result<()> {
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
    let dir = config_dir()?;
    match cli.command {
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
            for g in games {
                println!("{:<24} {}", g.slug, g.name);
            }
        }
        Command::Connect {
            game,
            proxy,
            to,
            mode,
            node,
            redundancy,
            paths,
            protected,
        } => {
            let creds = Credentials::load(&dir)?;
            if creds.expires_at <= unix_now() {
                bail!("your login expired; run `plg login` again");
            }
            let billing =
                BillingClient::new(&creds.billing_url).with_token(creds.access_token.clone());
            let (grant, node, tunnel) =
                plg_client::open_session(&billing, &creds.mesh_ca_pem, &game, node.as_deref())
                    .await?;
            let tunnel = tunnel.with_protection(protected);
            let path_addrs = vec![tunnel.data_addr; paths as usize];
            // If the node goes silent, the same ticket moves the session to the next node.
            let failover = Failover {
                ticket: grant.ticket_bytes()?,
                ca_pem: creds.mesh_ca_pem.clone(),
                candidates: grant
                    .nodes
                    .iter()
                    .filter(|n| n.id != node.id)
                    .cloned()
                    .collect(),
                after: Duration::from_secs(1),
            };
            // Our own traffic (node, billing) must never be captured into the tunnel.
            let mut own: Vec<std::net::IpAddr> = vec![tunnel.data_addr.ip()];
            if let Ok(a) = node.control_addr.parse::<SocketAddr>() {
                own.push(a.ip());
            }
            if let Some(host) = creds
                .billing_url
                .split("//")
                .nth(1)
                .and_then(|h| h.split('/').next())
            {
                let host = if host.contains(':') {
                    host.to_string()
                } else {
                    format!("{host}:443")
                };
                if let Ok(addrs) = tokio::net::lookup_host(host).await {
                    own.extend(addrs.map(|a| a.ip()));
                }
            }
            let targets = Targets::parse(&grant.destinations)?.exclude(own);
            let mut p = match mode {
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
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    Some(ev) = p.events.recv() => match ev {
                        ProxyEvent::DestinationRefused(d) => {
                            eprintln!("error: the node refused {d}: your ticket for {} does not allow it", grant.game.name);
                            break;
                        }
                        ProxyEvent::PrimaryChanged { from, to } => println!("route: primary path {from} → {to}"),
                        ProxyEvent::Failover { to, gap } => println!("node lost: session moved to node {to} ({} ms without replies)", gap.as_millis()),
                        ProxyEvent::ProtectedMode { on, reason } => println!("protected mode {}: {reason}", if on { "on" } else { "off" }),
                        ProxyEvent::NodeLost { reason } => eprintln!("error: the node stopped answering and no other node took the session ({reason}); retrying"),
                        other => eprintln!("warning: {other:?}"),
                    },
                    _ = tick.tick() => {
                        let s = &p.stats;
                        let rtt = s.rtt_us.load(Ordering::Relaxed);
                        println!(
                            "up {} pkts / {} B   down {} pkts / {} B   node rtt {}",
                            s.from_game.load(Ordering::Relaxed), s.bytes_up.load(Ordering::Relaxed),
                            s.to_game.load(Ordering::Relaxed), s.bytes_down.load(Ordering::Relaxed),
                            if rtt == 0 { "-".to_string() } else { format!("{:.2} ms", rtt as f64 / 1000.0) },
                        );
                        if grant.expires_at <= unix_now() {
                            eprintln!("the session ticket expired; reconnect with `plg connect`");
                            break;
                        }
                    }
                }
            }
            p.stop().await;
            println!("disconnected");
        }
    }
    Ok(())
}
