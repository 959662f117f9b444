//! `plg`: the gamer's command line.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use plg_client::credentials::{Credentials, config_dir};
use plg_client::{BillingClient, Proxy, ProxyEvent};

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
    /// Accelerate a game: point the game at --proxy and traffic goes through a relay to --to.
    Connect {
        /// Game slug from the catalog (decides which destinations the ticket allows).
        #[arg(long)]
        game: String,
        /// Local UDP address the game sends to.
        #[arg(long, default_value = "127.0.0.1:7777")]
        proxy: SocketAddr,
        /// The game server's address.
        #[arg(long)]
        to: SocketAddr,
        /// Use this node id instead of billing's first choice.
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
        Command::Connect {
            game,
            proxy,
            to,
            node,
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
            let mut p = Proxy::start(tunnel, proxy, to)
                .await
                .with_context(|| format!("cannot listen on {proxy}"))?;
            println!(
                "session {} via node {} ({}) for {}",
                grant.session_id, node.id, node.control_addr, grant.game.name
            );
            println!(
                "point the game at {} — traffic goes to {to}; Ctrl-C to stop",
                p.local_addr
            );
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    Some(ev) = p.events.recv() => match ev {
                        ProxyEvent::DestinationRefused(d) => {
                            eprintln!("error: the node refused {d}: your ticket for {} does not allow it", grant.game.name);
                            break;
                        }
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
