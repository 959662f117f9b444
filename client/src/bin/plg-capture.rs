//! `plg-capture`: the privileged capture helper (see `plg_client::capture::helper`). On Linux
//! it runs as a systemd service with only `CAP_NET_ADMIN` and hands TUN devices to the user's
//! `plg connect` and app over a unix socket; `install` and `uninstall` set that service up and
//! take it down. On Windows it is the service that owns WinDivert.

#[cfg(target_os = "linux")]
use std::path::Path;
use std::path::PathBuf;

use anyhow::Result;
#[cfg(target_os = "linux")]
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "plg-capture",
    version,
    about = "PLG Booster capture helper: captures the game's traffic for an unprivileged `plg connect` or app",
    after_help = "Install once (as root): `plg-capture install --user YOU --billing URL`; \
                  then `plg connect GAME` captures with no address typed and no root. \
                  `plg-capture uninstall` removes the service, its socket and any rules."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the helper (what the service runs).
    Serve {
        /// The user served (name or uid); root is always served too.
        #[arg(long)]
        uid: String,
        /// Billing base URL: where the ticket keys come from (never captured).
        #[arg(long)]
        billing: String,
        /// Socket path (Linux).
        #[arg(long, default_value = plg_client::capture::helper::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Also capture private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7):
        /// test labs and LAN game servers.
        #[arg(long)]
        allow_private: bool,
    },
    /// Install the service for USER and start it (idempotent).
    Install {
        /// The user whose `plg` may use the helper.
        #[arg(long)]
        user: String,
        /// Billing base URL.
        #[arg(long)]
        billing: String,
        /// Socket path.
        #[arg(long, default_value = plg_client::capture::helper::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Write files under this directory instead of `/` (and don't touch systemd).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Stop and remove the service, its socket and any capture rules (idempotent).
    Uninstall {
        /// Socket path.
        #[arg(long, default_value = plg_client::capture::helper::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Remove files under this directory instead of `/` (and don't touch systemd).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

/// A user name or uid, looked up in `root`/etc/passwd.
#[cfg(target_os = "linux")]
fn uid_of(user: &str, root: &Path) -> Result<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    let passwd = root.join("etc/passwd");
    let text = std::fs::read_to_string(&passwd)
        .with_context(|| format!("reading {}", passwd.display()))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == user)
        .and_then(|(_, uid)| uid.parse().ok())
        .with_context(|| format!("no user {user} in {}", passwd.display()))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PLG_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(target_os = "linux")]
fn run(cli: Cli) -> Result<()> {
    use plg_client::capture::helper::linux;

    let systemctl = |args: &[&str]| -> Result<()> {
        let status = std::process::Command::new("systemctl")
            .args(args)
            .status()
            .context("running systemctl")?;
        if !status.success() {
            bail!("`systemctl {}` failed ({status})", args.join(" "));
        }
        Ok(())
    };
    match cli.command {
        Command::Serve {
            uid,
            billing,
            socket,
            allow_private,
        } => {
            let config = linux::ServerConfig {
                socket,
                uid: uid_of(&uid, Path::new("/"))?,
                billing,
                allow_private,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let listener = linux::bind(&config).await?;
                let stop = async {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut term), Ok(mut int)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) else {
                        return std::future::pending().await;
                    };
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                };
                linux::serve(listener, config, stop).await?;
                Ok(())
            })
        }
        Command::Install {
            user,
            billing,
            socket,
            root,
        } => {
            let uid = uid_of(&user, &root)?;
            let exe = std::env::current_exe().context("finding plg-capture's own path")?;
            let unit = linux::unit_file(&exe, uid, &billing, &socket);
            let changed = linux::install(&root, &unit)
                .with_context(|| format!("writing {}", root.join(linux::UNIT_PATH).display()))?;
            println!(
                "{} {}",
                if changed { "wrote" } else { "unchanged:" },
                root.join(linux::UNIT_PATH).display()
            );
            if root == Path::new("/") {
                systemctl(&["daemon-reload"])?;
                systemctl(&["enable", "--now", "plg-capture.service"])?;
                if changed {
                    systemctl(&["restart", "plg-capture.service"])?;
                }
                println!(
                    "plg-capture is running for {user} (uid {uid}); `plg connect GAME` now captures without root"
                );
            }
            Ok(())
        }
        Command::Uninstall { socket, root } => {
            if root == Path::new("/") && root.join(linux::UNIT_PATH).exists() {
                // Stopping first: the helper deletes its rules as it goes.
                if let Err(e) = systemctl(&["disable", "--now", "plg-capture.service"]) {
                    eprintln!("warning: {e:#}");
                }
            }
            let removed = linux::uninstall(&root, &socket).context("removing the helper")?;
            if root == Path::new("/") {
                let _ = systemctl(&["daemon-reload"]);
            }
            for p in &removed {
                println!("removed {}", p.display());
            }
            println!("plg-capture is uninstalled (no unit, no socket, no capture rules left)");
            Ok(())
        }
    }
}

#[cfg(windows)]
fn run(cli: Cli) -> Result<()> {
    plg_client::capture::helper::windows::run_cli(match cli.command {
        Command::Serve {
            uid,
            billing,
            allow_private,
            ..
        } => plg_client::capture::helper::windows::Action::Serve {
            user: uid,
            billing,
            allow_private,
        },
        Command::Install { user, billing, .. } => {
            plg_client::capture::helper::windows::Action::Install { user, billing }
        }
        Command::Uninstall { .. } => plg_client::capture::helper::windows::Action::Uninstall,
    })
}

#[cfg(not(any(target_os = "linux", windows)))]
fn run(_cli: Cli) -> Result<()> {
    anyhow::bail!(
        "the capture helper exists for Linux and Windows only; use `plg connect --mode proxy`"
    )
}
