//! The `plg-billing` command line: `serve`, `join-token create`, `account ban|unban|grant-admin|revoke-admin`,
//! `keys rotate`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{Billing, Config, Secret};

/// PLG billing service.
#[derive(Debug, Parser)]
#[command(name = "plg-billing", version, about)]
pub struct Cli {
    /// Log as JSON lines instead of text (filter with PLG_LOG, default "info").
    #[arg(long, global = true, env = "PLG_BILLING_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "PLG_BILLING_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Manage node join tokens.
    JoinToken {
        #[command(subcommand)]
        action: JoinTokenAction,
    },
    /// Manage accounts.
    Account {
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Manage ticket signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Rotate the ticket signing key (a running server keeps signing with the key it loaded
    /// until restarted; prefer `POST /v1/admin/keys/rotate` on a running server).
    Rotate {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
enum JoinTokenAction {
    /// Create a single-use join token and print it on stdout.
    Create {
        #[command(flatten)]
        common: Common,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

#[derive(Debug, Subcommand)]
enum AccountAction {
    /// Ban an account: it can no longer log in or start sessions.
    Ban {
        #[command(flatten)]
        common: Common,
        /// Account email.
        email: String,
    },
    /// Lift a ban.
    Unban {
        #[command(flatten)]
        common: Common,
        /// Account email.
        email: String,
    },
    /// Make an account an admin (bootstraps the first admin; it must log in again).
    GrantAdmin {
        #[command(flatten)]
        common: Common,
        /// Account email.
        email: String,
    },
    /// Make an admin an ordinary user again.
    RevokeAdmin {
        #[command(flatten)]
        common: Common,
        /// Account email.
        email: String,
    },
}

/// Options every subcommand shares; each overrides the config file.
#[derive(Debug, Args)]
struct Common {
    /// TOML config file.
    #[arg(long, env = "PLG_BILLING_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database) [default: ./plg-billing-data].
    #[arg(long, env = "PLG_BILLING_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (sqlite:… or postgres://…) [default: <data_dir>/billing.db].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Access token lifetime in seconds [default: 3600].
    #[arg(long, env = "PLG_BILLING_ACCESS_TOKEN_TTL_SECS")]
    access_token_ttl_secs: Option<u64>,
    /// Ticket lifetime in seconds [default: 7200].
    #[arg(long, env = "PLG_BILLING_TICKET_TTL_SECS")]
    ticket_ttl_secs: Option<u64>,
}

impl Common {
    /// Default < file < env/CLI (clap already resolved env vs CLI).
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.database_url {
            config.database_url = Some(Secret::new(v.clone()));
        }
        if let Some(v) = self.access_token_ttl_secs {
            config.access_token_ttl_secs = v;
        }
        if let Some(v) = self.ticket_ttl_secs {
            config.ticket_ttl_secs = v;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Sets up the tracing subscriber: `PLG_LOG` filter (default `info`), text or JSON, stderr.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PLG_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { common, listen } => {
            let mut config = common.config()?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let billing = Billing::open(config).await?;
            let listener = billing.bind().await?;
            billing.serve(listener, shutdown_signal()).await
        }
        Command::JoinToken {
            action: JoinTokenAction::Create { common, ttl },
        } => {
            let billing = Billing::open(common.config()?).await?;
            let token = billing.create_join_token(Duration::from_secs(ttl)).await?;
            println!("{token}");
            billing.close().await;
            Ok(())
        }
        Command::Account { action } => {
            let (common, email) = match &action {
                AccountAction::Ban { common, email }
                | AccountAction::Unban { common, email }
                | AccountAction::GrantAdmin { common, email }
                | AccountAction::RevokeAdmin { common, email } => (common, email),
            };
            let billing = Billing::open(common.config()?).await?;
            let result = match &action {
                AccountAction::Ban { .. } => billing.set_banned(email, true).await,
                AccountAction::Unban { .. } => billing.set_banned(email, false).await,
                AccountAction::GrantAdmin { .. } => billing.set_role(email, "admin").await,
                AccountAction::RevokeAdmin { .. } => billing.set_role(email, "user").await,
            };
            billing.close().await;
            result
        }
        Command::Keys {
            action: KeysAction::Rotate { common },
        } => {
            let billing = Billing::open(common.config()?).await?;
            let id = billing.rotate_ticket_key().await?;
            println!("{id}");
            billing.close().await;
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

/// Parses the process arguments, sets up logging and runs.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    run(cli).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "plg-billing",
            "join-token",
            "create",
            "--ttl",
            "60",
            "--data-dir",
            "/x",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::JoinToken { .. }));
    }
}
