//! Database: opening the pool (SQLite, WAL), embedded migrations, generated secrets, clock.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::config::Config;

/// Current wall-clock time in unix seconds (tickets and tokens carry wall-clock times).
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Creates the data dir (0700), opens the database and runs the migrations.
pub(crate) async fn open(config: &Config) -> anyhow::Result<SqlitePool> {
    create_private_dir(&config.data_dir)?;
    let options = match &config.database_url {
        Some(url) => SqliteConnectOptions::from_str(url.expose())
            .context("parsing database_url")?
            .create_if_missing(true),
        None => {
            let path = config.data_dir.join("billing.db");
            create_private_file(&path)?;
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
        }
    };
    let options = options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .context("opening the billing database")?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("running database migrations")?;
    Ok(pool)
}

/// Returns the named generated secret, creating it with `len` random bytes on first use.
/// Safe against two processes starting at once: the first insert wins, both read it back.
pub(crate) async fn secret(db: &SqlitePool, name: &str, len: usize) -> anyhow::Result<Vec<u8>> {
    let fresh = crate::random_bytes(len);
    sqlx::query(
        "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(&fresh)
    .bind(now_secs())
    .execute(db)
    .await?;
    let (value,): (Vec<u8>,) = sqlx::query_as("SELECT value FROM secrets WHERE name = $1")
        .bind(name)
        .fetch_one(db)
        .await?;
    Ok(value)
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
