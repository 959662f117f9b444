//! PLG billing: accounts, session tickets, the mesh CA and node join, behind a JSON HTTP API.
//!
//! [`Billing::open`] prepares everything (database, migrations, CA, ticket signing key, JWT
//! secret, game catalog); [`Billing::router`] / [`Billing::serve`] expose the API described
//! in `docs/billing.md`. The local demo and the tests run it in-process.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, http::StatusCode};
use serde::Serialize;
use sqlx::SqlitePool;
use tokio::net::TcpListener;

mod accounts;
mod auth;
pub mod cli;
pub mod config;
mod db;
pub mod error;
pub mod games;
mod mesh_ca;
mod nodes;
mod sessions;
mod tickets;

pub use config::{Config, Secret};
pub use games::GameSeed;
pub use tickets::TicketKey;

use auth::JwtKeys;
use error::ApiError;
use mesh_ca::MeshCa;
use tickets::TicketSigner;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The billing service: cheap to clone (one `Arc` inside).
#[derive(Clone)]
pub struct Billing {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    db: SqlitePool,
    jwt: JwtKeys,
    signer: TicketSigner,
    ca: MeshCa,
    /// Argon2 hash of a random password, verified against on logins for unknown emails.
    dummy_password_hash: String,
}

impl fmt::Debug for Billing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Billing")
            .field("listen", &self.inner.config.listen)
            .field("data_dir", &self.inner.config.data_dir)
            .field("ticket_key_id", &self.inner.signer.key_id)
            .finish_non_exhaustive()
    }
}

/// `n` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // No usable OS RNG means we must not issue keys or tokens at all.
    getrandom::fill(&mut buf).expect("operating system random number generator failed");
    buf
}

impl Billing {
    /// Validates the config, creates the data dir and database, runs migrations, and loads
    /// (or generates on first start) the mesh CA, the ticket signing key and the JWT secret;
    /// then seeds the game catalog.
    pub async fn open(config: Config) -> anyhow::Result<Billing> {
        config.validate()?;
        let db = db::open(&config).await?;
        let ca = MeshCa::load_or_create(&db).await?;
        let signer = tickets::current_signer(&db).await?;
        let jwt = JwtKeys::new(&db::secret(&db, "jwt_hs256", 32).await?);
        let mut seeds = games::builtin_games()?;
        seeds.extend(config.extra_games.iter().cloned());
        games::seed(&db, &seeds).await.context("seeding games")?;
        let dummy_password_hash = tokio::task::spawn_blocking(|| {
            let pw = random_bytes(16)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>();
            accounts::hash_password(&pw)
        })
        .await??;
        tracing::info!(
            data_dir = %config.data_dir.display(),
            ticket_key_id = signer.key_id,
            games = seeds.len(),
            "billing opened"
        );
        Ok(Billing {
            inner: Arc::new(Inner {
                config,
                db,
                jwt,
                signer,
                ca,
                dummy_password_hash,
            }),
        })
    }

    /// Creates a single-use node join token valid for `ttl`.
    pub async fn create_join_token(&self, ttl: Duration) -> anyhow::Result<String> {
        nodes::create_join_token(&self.inner.db, ttl).await
    }

    /// Bans or unbans the account with this email.
    pub async fn set_banned(&self, email: &str, banned: bool) -> anyhow::Result<()> {
        accounts::set_banned(&self.inner.db, email, banned).await
    }

    /// The public ticket keys nodes must trust (same as `GET /v1/mesh`).
    pub async fn ticket_keys(&self) -> anyhow::Result<Vec<TicketKey>> {
        tickets::published_keys(&self.inner.db, self.inner.config.ticket_ttl_secs).await
    }

    /// PEM of the mesh CA certificate.
    pub fn ca_cert_pem(&self) -> &str {
        self.inner.ca.cert_pem()
    }

    /// The configuration this instance was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/v1/accounts", post(accounts::register))
            .route("/v1/auth/login", post(accounts::login))
            .route("/v1/sessions", post(sessions::create))
            .route("/v1/games", get(games::list))
            .route("/v1/mesh", get(mesh))
            .route("/v1/nodes/join", post(nodes::join))
            .route("/v1/nodes/announce", post(nodes::announce))
            .fallback(|| async { ApiError::NotFound })
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self.clone())
    }

    /// Binds `config.listen` (port 0 picks a free port).
    pub async fn bind(&self) -> anyhow::Result<TcpListener> {
        let addr = self.inner.config.listen;
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))
    }

    /// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        tracing::info!(listen = %addr, "billing API listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        tracing::info!("billing API stopped");
        Ok(())
    }

    /// Closes the database pool (waits for connections to finish).
    pub async fn close(&self) {
        self.inner.db.close().await;
    }

    /// The current ticket signing key id and public key (for tests and the local demo).
    pub fn ticket_verifying_key(&self) -> (u32, ed25519_dalek::VerifyingKey) {
        (
            self.inner.signer.key_id,
            self.inner.signer.key.verifying_key(),
        )
    }

    pub(crate) fn db(&self) -> &SqlitePool {
        &self.inner.db
    }

    pub(crate) fn jwt(&self) -> &JwtKeys {
        &self.inner.jwt
    }

    pub(crate) fn signer(&self) -> &TicketSigner {
        &self.inner.signer
    }

    pub(crate) fn ca(&self) -> &MeshCa {
        &self.inner.ca
    }

    pub(crate) fn dummy_password_hash(&self) -> &str {
        &self.inner.dummy_password_hash
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

async fn healthz() -> (StatusCode, Json<Health>) {
    (StatusCode::OK, Json(Health { status: "ok" }))
}

#[derive(Serialize)]
struct Mesh {
    ca_cert_pem: String,
    ticket_keys: Vec<TicketKey>,
}

/// `GET /v1/mesh`: what a node or client needs to trust billing's signatures.
async fn mesh(State(billing): State<Billing>) -> Result<Json<Mesh>, ApiError> {
    Ok(Json(Mesh {
        ca_cert_pem: billing.ca_cert_pem().to_owned(),
        ticket_keys: billing.ticket_keys().await?,
    }))
}
