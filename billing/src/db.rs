//! Database: one code path over SQLite (default, WAL, one file in the data dir) and
//! PostgreSQL (when `database_url` says `postgres://`), through sqlx's `Any` driver;
//! embedded migrations per backend, generated secrets, clock.
//!
//! Rules that keep the same SQL valid on both: `$n` parameters; every integer read as i64
//! (PostgreSQL columns are BIGINT); flags stored as integers 0/1, never BOOLEAN (the `Any`
//! driver can't read SQLite BOOLEAN columns); `CASE` instead of `MAX`/`GREATEST`; a
//! transaction that must serialise per account starts with a write to that account's row.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::config::Config;

/// The connection pool type used everywhere.
pub(crate) type Pool = AnyPool;

/// Which database a pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (default).
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Backend named by a database URL.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// Short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Current wall-clock time in unix seconds (tickets and tokens carry wall-clock times).
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A 0/1 flag for binding (see the module doc).
pub(crate) fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// Creates the data dir (0700), opens the database and runs the migrations.
pub(crate) async fn open(config: &Config) -> anyhow::Result<(Pool, Backend)> {
    sqlx::any::install_default_drivers();
    create_private_dir(&config.data_dir)?;
    let url = match &config.database_url {
        Some(url) => url.expose().to_owned(),
        None => {
            let dir = std::fs::canonicalize(&config.data_dir)
                .with_context(|| format!("resolving {}", config.data_dir.display()))?;
            let path = dir.join("billing.db");
            create_private_file(&path)?;
            format!("sqlite://{}?mode=rwc", percent_encode_path(&path))
        }
    };
    let backend = Backend::of_url(&url).context("database_url must be sqlite: or postgres://")?;
    let options: AnyConnectOptions = url.parse().context("parsing database_url")?;
    let max = match backend {
        Backend::Sqlite => config.db_max_connections.min(8),
        Backend::Postgres => config.db_max_connections,
    };
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL + NORMAL: durable across process crashes (not power loss of the
                    // last few ms); busy_timeout makes concurrent writers wait, not fail.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .context("opening the billing database")?;
    migrate(&pool, backend)
        .await
        .context("running database migrations")?;
    tracing::info!(backend = backend.name(), "database ready");
    Ok((pool, backend))
}

async fn migrate(pool: &Pool, backend: Backend) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    match backend {
        Backend::Sqlite => {
            // SQLite's table-rebuild procedure needs foreign keys off (outside a transaction).
            conn.execute("PRAGMA foreign_keys = OFF").await?;
            let result = sqlx::migrate!("./migrations/sqlite").run(&mut *conn).await;
            conn.execute("PRAGMA foreign_keys = ON").await?;
            result?;
            let broken: Vec<(String,)> =
                sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
                    .fetch_all(&mut *conn)
                    .await?;
            anyhow::ensure!(
                broken.is_empty(),
                "foreign key check failed after migration: {broken:?}"
            );
        }
        Backend::Postgres => {
            sqlx::migrate!("./migrations/postgres")
                .run(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Returns the named generated secret, creating it with `len` random bytes on first use.
/// Safe against two processes starting at once: the first insert wins, both read it back.
pub(crate) async fn secret(db: &Pool, name: &str, len: usize) -> anyhow::Result<Vec<u8>> {
    let fresh = crate::random_bytes(len);
    sqlx::query(
        "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(fresh)
    .bind(now_secs())
    .execute(db)
    .await?;
    let (value,): (Vec<u8>,) = sqlx::query_as("SELECT value FROM secrets WHERE name = $1")
        .bind(name)
        .fetch_one(db)
        .await?;
    Ok(value)
}

/// Percent-encodes a path for a `sqlite://` URL (sqlx decodes it again).
fn percent_encode_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))
}

/// The database holds the CA key, the ticket signing keys and the JWT secret: create it
/// owner-only before SQLite does (SQLite gives its -wal/-shm files the same mode).
#[cfg(unix)]
fn create_private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating database file {}", path.display()))?;
    Ok(())
}

#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_paths() {
        assert_eq!(Backend::of_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("mysql://x"), None);
        assert_eq!(
            percent_encode_path(Path::new("/tmp/a b?c/billing.db")),
            "/tmp/a%20b%3Fc/billing.db"
        );
    }
}
