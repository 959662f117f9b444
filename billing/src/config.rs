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
    /// Database URL: `sqlite:…` or `postgres://…`; default is the SQLite file
    /// `<data_dir>/billing.db`. May hold a password.
    pub database_url: Option<Secret>,
    /// Most database connections (SQLite is capped at 8).
    pub db_max_connections: u32,
    /// Lifetime of an access token (JWT), in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds (each use rotates it).
    pub refresh_token_ttl_secs: u64,
    /// Lifetime of a session ticket, in seconds.
    pub ticket_ttl_secs: u64,
    /// Start the one-time trial when an account registers (so a new gamer can play at once).
    /// When false, the gamer starts it with `POST /v1/subscriptions/trial`.
    pub trial_on_signup: bool,
    /// Plans, prices and per-plan limits.
    pub plans: Plans,
    /// Origins allowed by CORS (`["*"]` for any); empty means no CORS headers.
    pub cors_origins: Vec<String>,
    /// Rate limits on the endpoints that attract abuse.
    pub rate_limits: RateLimits,
    /// DonatePay payments; `None` disables payment intents.
    pub donatepay: Option<DonatePayConfig>,
    /// Games added to the embedded catalog (the local demo adds its loopback game here).
    pub extra_games: Vec<GameSeed>,
    /// Accept loopback/private catalog probe addresses (local demos and tests only, like the
    /// node's `allow_private_destinations`); production refuses them.
    pub allow_private_probes: bool,
}

/// One plan's terms.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlanTerms {
    /// Price as a decimal string in `Plans::currency` (`"5.99"`); `None` for the trial.
    #[serde(default)]
    pub price: Option<String>,
    /// Days of service one purchase (or the trial) adds.
    pub days: u32,
    /// Most sessions open at once.
    pub max_sessions: u32,
    /// Most simultaneous paths per session (goes into the ticket).
    pub path_limit: u8,
}

/// The plans sold, by name: `trial`, `monthly`, `quarterly`, `yearly`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Plans {
    /// ISO currency of the prices (`"USD"`).
    pub currency: String,
    /// The free trial (once per account).
    pub trial: PlanTerms,
    /// Monthly plan.
    pub monthly: PlanTerms,
    /// Quarterly plan.
    pub quarterly: PlanTerms,
    /// Yearly plan.
    pub yearly: PlanTerms,
}

impl Default for Plans {
    fn default() -> Self {
        let paid = |price: &str, days| PlanTerms {
            price: Some(price.into()),
            days,
            max_sessions: 2,
            path_limit: 2,
        };
        Plans {
            currency: "USD".into(),
            trial: PlanTerms {
                price: None,
                days: 7,
                max_sessions: 2,
                path_limit: 2,
            },
            monthly: paid("5.99", 30),
            quarterly: paid("14.97", 90),
            yearly: paid("47.88", 365),
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Bucket size.
    pub burst: u32,
    /// Refill per minute.
    pub per_minute: u32,
}

/// Per-IP and per-account limits (429 when exceeded).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Off switch (benchmarks).
    pub enabled: bool,
    /// Per-IP limits skip loopback clients (the local demo and simulator register many
    /// gamers from 127.0.0.1). Per-account limits still apply.
    pub exempt_loopback: bool,
    /// Take the client IP from the last `X-Forwarded-For` hop (set when behind a reverse
    /// proxy you run; never when clients connect directly, as they could forge it).
    pub trust_forwarded_for: bool,
    /// Logins and refreshes per client IP.
    pub login_per_ip: Rate,
    /// Logins per target email (slows password guessing against one account).
    pub login_per_account: Rate,
    /// Registrations per client IP.
    pub register_per_ip: Rate,
    /// Node joins per client IP.
    pub join_per_ip: Rate,
    /// Payment webhooks per client IP.
    pub webhook_per_ip: Rate,
    /// Session tickets per account.
    pub sessions_per_account: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        let r = |burst, per_minute| Rate { burst, per_minute };
        RateLimits {
            enabled: true,
            exempt_loopback: true,
            trust_forwarded_for: false,
            login_per_ip: r(30, 30),
            login_per_account: r(10, 10),
            register_per_ip: r(10, 10),
            join_per_ip: r(10, 10),
            webhook_per_ip: r(120, 600),
            sessions_per_account: r(30, 60),
        }
    }
}

/// DonatePay settings (see `payments/donatepay.rs` for the wire format).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DonatePayConfig {
    /// Base URL of DonatePay's API (`https://donatepay.ru/api/v1`).
    pub api_url: String,
    /// API key (`access_token` query parameter of the transactions API).
    pub api_key: Secret,
    /// Shared secret for the webhook's HMAC-SHA256 signature.
    pub webhook_secret: Secret,
    /// The donation page the gamer pays on.
    pub page_url: String,
    /// Poll the transactions API this often (0 disables polling).
    #[serde(default = "default_poll_secs")]
    pub poll_interval_secs: u64,
}

fn default_poll_secs() -> u64 {
    60
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./plg-billing-data"),
            database_url: None,
            db_max_connections: 16,
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 30 * 86_400,
            ticket_ttl_secs: 2 * 3600,
            trial_on_signup: true,
            plans: Plans::default(),
            cors_origins: Vec::new(),
            rate_limits: RateLimits::default(),
            donatepay: None,
            extra_games: Vec::new(),
            allow_private_probes: false,
        }
    }
}

/// Parses a decimal price (`"5.99"`, `"10"`) into cents.
pub fn parse_price_cents(s: &str) -> anyhow::Result<i64> {
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        bail!("price {s:?} is not a decimal with at most 2 decimals");
    }
    let whole: i64 = whole.parse()?;
    let frac: i64 = format!("{frac:0<2}").parse()?;
    Ok(whole * 100 + frac)
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
        if !(60..=365 * 86_400).contains(&self.refresh_token_ttl_secs) {
            bail!("refresh_token_ttl_secs must be between 60 and 31536000");
        }
        if let Some(url) = &self.database_url
            && crate::db::Backend::of_url(url.expose()).is_none()
        {
            bail!("database_url must start with sqlite:, postgres:// or postgresql://");
        }
        if self.db_max_connections == 0 {
            bail!("db_max_connections must be at least 1");
        }
        let p = &self.plans;
        if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            bail!("plans.currency must be a 3-letter ISO code such as USD");
        }
        for (name, terms) in [
            ("trial", &p.trial),
            ("monthly", &p.monthly),
            ("quarterly", &p.quarterly),
            ("yearly", &p.yearly),
        ] {
            if terms.days == 0 || terms.days > 3660 {
                bail!("plans.{name}.days must be 1..=3660");
            }
            if terms.max_sessions == 0 || terms.path_limit == 0 {
                bail!("plans.{name}: max_sessions and path_limit must be at least 1");
            }
            match (&terms.price, name) {
                (Some(_), "trial") => bail!("plans.trial has no price"),
                (None, "trial") => {}
                (None, _) => bail!("plans.{name}.price is required"),
                (Some(price), _) => {
                    if parse_price_cents(price).with_context(|| format!("plans.{name}"))? <= 0 {
                        bail!("plans.{name}.price must be positive");
                    }
                }
            }
        }
        for o in &self.cors_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                bail!("cors_origins: {o:?} must be \"*\" or an http(s) origin");
            }
        }
        if let Some(dp) = &self.donatepay {
            if !(dp.api_url.starts_with("http://") || dp.api_url.starts_with("https://")) {
                bail!("donatepay.api_url must be an http(s) URL");
            }
            if dp.webhook_secret.expose().len() < 16 {
                bail!("donatepay.webhook_secret must be at least 16 characters");
            }
        }
        for game in &self.extra_games {
            game.validate(self.allow_private_probes)
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
            database_url: Some(Secret::new("mysql://u:p@h/db")),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            database_url: Some(Secret::new("postgres://u:p@h/db")),
            ..Config::default()
        };
        c.validate().unwrap();
        let mut c = Config::default();
        c.plans.monthly.price = Some("5.999".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn prices_and_plans() {
        assert_eq!(parse_price_cents("5.99").unwrap(), 599);
        assert_eq!(parse_price_cents("14.97").unwrap(), 1497);
        assert_eq!(parse_price_cents("47.88").unwrap(), 4788);
        assert_eq!(parse_price_cents("10").unwrap(), 1000);
        assert_eq!(parse_price_cents("0.5").unwrap(), 50);
        for bad in ["", "-1", "1.234", "a", "1.x", ".5"] {
            assert!(parse_price_cents(bad).is_err(), "{bad:?}");
        }
        let c = Config::from_toml(
            "[plans]\ncurrency = \"RUB\"\n[plans.monthly]\nprice = \"499\"\ndays = 30\nmax_sessions = 1\npath_limit = 2\n",
        )
        .unwrap();
        assert_eq!(c.plans.monthly.price.as_deref(), Some("499"));
        assert_eq!(c.plans.yearly.days, 365);
        c.validate().unwrap();
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
