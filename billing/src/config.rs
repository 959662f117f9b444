//! Typed configuration: defaults, TOML file, validation.
//!
//! Precedence is CLI > env (`PLG_BILLING_*`) > `--config` file > default; the CLI layer
//! (see `cli.rs`) applies the first two on top of what [`Config::from_file`] returns.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::games::GameSeed;

/// A secret string whose `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value; call only where it is actually used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// Billing service configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory holding the SQLite database (created 0700 if missing).
    pub data_dir: PathBuf,
    /// Database URL; default is the SQLite file `<data_dir>/billing.db`. May hold a password.
    pub database_url: Option<Secret>,
    /// Lifetime of an access token (JWT), in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a session ticket, in seconds.
    pub ticket_ttl_secs: u64,
    /// Games added to the embedded catalog (the local demo adds its loopback game here).
    pub extra_games: Vec<GameSeed>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./plg-billing-data"),
            database_url: None,
            access_token_ttl_secs: 3600,
            ticket_ttl_secs: 2 * 3600,
            extra_games: Vec::new(),
        }
    }
}

impl Config {
    /// Reads a TOML config file; missing fields take their defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parses a TOML config.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// Checks the values before anything is opened or bound.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.data_dir.as_os_str().is_empty() {
            bail!("data_dir must not be empty");
        }
        if !(60..=30 * 86_400).contains(&self.access_token_ttl_secs) {
            bail!("access_token_ttl_secs must be between 60 and 2592000");
        }
        if !(60..=30 * 86_400).contains(&self.ticket_ttl_secs) {
            bail!("ticket_ttl_secs must be between 60 and 2592000");
        }
        if let Some(url) = &self.database_url
            && !url.expose().starts_with("sqlite:")
        {
            bail!("database_url: only sqlite: URLs are supported for now");
        }
        for game in &self.extra_games {
            game.validate()
                .with_context(|| format!("extra_games entry {:?}", game.slug))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_file() {
        let c = Config::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            ticket_ttl_secs = 600
            [[extra_games]]
            slug = "demo"
            name = "Demo"
            destinations = ["127.0.0.1/32:40000-40010"]
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.ticket_ttl_secs, 600);
        assert_eq!(c.access_token_ttl_secs, 3600);
        assert_eq!(c.extra_games[0].destinations.len(), 1);
        assert!(c.extra_games[0].process_names.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(Config::from_toml("lisen = \"1.2.3.4:5\"").is_err());
        assert!(
            Config::from_toml("[[extra_games]]\nslug=\"x\"\nname=\"X\"\ndestinations=[\"nope\"]")
                .is_err()
        );
        let c = Config {
            ticket_ttl_secs: 1,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            database_url: Some(Secret::new("postgres://u:p@h/db")),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let c = Config {
            database_url: Some(Secret::new("sqlite:/tmp/secret-path")),
            ..Config::default()
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("secret-path"), "{dbg}");
        assert!(dbg.contains("***"));
    }
}
