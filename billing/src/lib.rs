//! PLG billing: accounts, session tickets, the mesh CA and node join, behind a JSON HTTP API.
//!
//! [`Billing::open`] prepares everything (database, migrations, CA, ticket signing key, JWT
//! secret, game catalog); [`Billing::router`] / [`Billing::serve`] expose the API described
//! in `docs/billing.md`. The local demo and the tests run it in-process.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use axum::{Json, http::StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

mod accounts;
mod admin;
mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod games;
mod mesh_ca;
mod metrics;
mod nodes;
mod openapi;
pub mod payments;
pub mod plans;
mod promo;
mod ratelimit;
mod rtt;
mod sessions;
mod tickets;

pub use config::{Config, Secret};
pub use db::Backend;
pub use games::GameSeed;
pub use tickets::TicketKey;

use auth::JwtKeys;
use error::ApiError;
use mesh_ca::MeshCa;
use metrics::Metrics;
use payments::PaymentProvider;
use ratelimit::RateLimiter;
use tickets::TicketSigner;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Largest announce body: 256 targets and 1024 peers with their measurements fit.
pub const ANNOUNCE_BODY_LIMIT: usize = 256 * 1024;

/// The billing service: cheap to clone (one `Arc` inside).
#[derive(Clone)]
pub struct Billing {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    db: db::Pool,
    backend: Backend,
    jwt: JwtKeys,
    /// Replaced by key rotation; read (and the `Arc` cloned) once per ticket.
    signer: RwLock<Arc<TicketSigner>>,
    ca: MeshCa,
    limiter: RateLimiter,
    metrics: Metrics,
    provider: Option<Arc<dyn PaymentProvider>>,
    /// SQLite allows one writer at a time and its busy handler waits by sleeping (up to
    /// 100 ms a try): queueing hot write transactions here instead keeps the tail short.
    sqlite_writer: tokio::sync::Mutex<()>,
    /// Argon2 hash of a random password, verified against on logins for unknown emails.
    dummy_password_hash: String,
}

impl fmt::Debug for Billing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Billing")
            .field("listen", &self.inner.config.listen)
            .field("data_dir", &self.inner.config.data_dir)
            .field("backend", &self.inner.backend)
            .field("ticket_key_id", &self.signer().key_id)
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

/// 256 random bits, base64url: bearer tokens (refresh tokens, join tokens, node secrets).
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(32))
}

/// Hex SHA-256 of a bearer secret. Every such secret is 256 random bits, so a fast hash is
/// enough: there is nothing to brute-force.
pub(crate) fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Billing {
    /// Validates the config, creates the data dir and database, runs migrations, and loads
    /// (or generates on first start) the mesh CA, the ticket signing key and the JWT secret;
    /// then seeds the game catalog.
    pub async fn open(config: Config) -> anyhow::Result<Billing> {
        config.validate()?;
        let (db, backend) = db::open(&config).await?;
        let ca = MeshCa::load_or_create(&db).await?;
        let signer = tickets::current_signer(&db).await?;
        let jwt = JwtKeys::new(&db::secret(&db, "jwt_hs256", 32).await?);
        let mut seeds = games::builtin_catalog()?;
        seeds.extend(config.extra_games.iter().cloned().map(Into::into));
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
            backend = backend.name(),
            ticket_key_id = signer.key_id,
            games = seeds.len(),
            "billing opened"
        );
        Ok(Billing {
            inner: Arc::new(Inner {
                limiter: RateLimiter::new(config.rate_limits.clone()),
                provider: payments::provider_from_config(&config),
                config,
                db,
                backend,
                jwt,
                signer: RwLock::new(Arc::new(signer)),
                ca,
                metrics: Metrics::default(),
                sqlite_writer: tokio::sync::Mutex::new(()),
                dummy_password_hash,
            }),
        })
    }

    /// Creates a single-use node join token valid for `ttl`.
    pub async fn create_join_token(&self, ttl: Duration) -> anyhow::Result<String> {
        Ok(nodes::create_join_token(&self.inner.db, ttl, None).await?.1)
    }

    /// Gives the account with this email the `admin` role (or back `user`). The account
    /// must log in again to get a token with the new role.
    pub async fn set_role(&self, email: &str, role: &str) -> anyhow::Result<()> {
        accounts::set_role(&self.inner.db, email, role).await
    }

    /// Rotates the ticket signing key (same as `POST /v1/admin/keys/rotate`); returns the
    /// new key id.
    pub async fn rotate_ticket_key(&self) -> anyhow::Result<u32> {
        let signer = tickets::rotate(&self.inner.db).await?;
        let id = signer.key_id;
        *self.inner.signer.write().expect("signer lock") = Arc::new(signer);
        Ok(id)
    }

    /// Which database this instance uses.
    pub fn backend(&self) -> Backend {
        self.inner.backend
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

    /// The HTTP API (routes, body limit, metrics; CORS and tracing are added by `serve`).
    pub fn router(&self) -> Router {
        let mut router = Router::new();
        for (path, method_router) in openapi::merged(routes()) {
            router = router.route(path, method_router);
        }
        router
            .fallback(|| async { ApiError::NotFound })
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                metrics::track,
            ))
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
        tracing::info!(listen = %addr, backend = self.backend().name(), "billing API listening");
        let poller = match &self.inner.config.donatepay {
            Some(dp) if dp.poll_interval_secs > 0 => Some(tokio::spawn(payments::poll_loop(
                self.clone(),
                Duration::from_secs(dp.poll_interval_secs),
            ))),
            _ => None,
        };
        let app = self
            .router()
            .layer(cors_layer(&self.inner.config.cors_origins)?)
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(
                        tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                    )
                    .on_response(
                        tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
                    ),
            );
        let result = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        if let Some(p) = poller {
            p.abort();
        }
        result?;
        tracing::info!("billing API stopped");
        Ok(())
    }

    /// Closes the database pool (waits for connections to finish).
    pub async fn close(&self) {
        self.inner.db.close().await;
    }

    /// The current ticket signing key id and public key (for tests and the local demo).
    pub fn ticket_verifying_key(&self) -> (u32, ed25519_dalek::VerifyingKey) {
        let signer = self.signer();
        (signer.key_id, signer.key.verifying_key())
    }

    pub(crate) fn db(&self) -> &db::Pool {
        &self.inner.db
    }

    /// Held around a hot write transaction: serialises writers in-process on SQLite, does
    /// nothing on PostgreSQL (row locks do the job there).
    pub(crate) async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.inner.backend {
            Backend::Sqlite => Some(self.inner.sqlite_writer.lock().await),
            Backend::Postgres => None,
        }
    }

    pub(crate) fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn payment_provider(&self) -> Option<&Arc<dyn PaymentProvider>> {
        self.inner.provider.as_ref()
    }

    pub(crate) fn jwt(&self) -> &JwtKeys {
        &self.inner.jwt
    }

    pub(crate) fn signer(&self) -> Arc<TicketSigner> {
        self.inner.signer.read().expect("signer lock").clone()
    }

    pub(crate) fn ca(&self) -> &MeshCa {
        &self.inner.ca
    }

    pub(crate) fn dummy_password_hash(&self) -> &str {
        &self.inner.dummy_password_hash
    }
}

/// CORS from config: none, any origin (`*`), or a list.
fn cors_layer(origins: &[String]) -> anyhow::Result<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    Ok(if origins.is_empty() {
        CorsLayer::new()
    } else if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("cors origin {o:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        layer.allow_origin(list)
    })
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Public,
    User,
    Admin,
    Node,
    Signed,
}

/// One route: the single source of both the router and `/openapi.json`.
pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub handler: MethodRouter<Billing>,
}

fn r(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    access: Access,
    summary: &'static str,
    handler: MethodRouter<Billing>,
) -> Route {
    Route {
        method,
        path,
        tag,
        summary,
        access,
        handler,
    }
}

/// Every route of the API.
pub(crate) fn routes() -> Vec<Route> {
    use Access::*;
    vec![
        r(
            "get",
            "/healthz",
            "meta",
            Public,
            "Liveness probe.",
            get(healthz),
        ),
        r(
            "get",
            "/metrics",
            "meta",
            Public,
            "Prometheus metrics (text format).",
            get(metrics::render),
        ),
        r(
            "get",
            "/openapi.json",
            "meta",
            Public,
            "This document.",
            get(openapi::serve),
        ),
        r(
            "post",
            "/v1/accounts",
            "accounts",
            Public,
            "Register; starts the trial when trial_on_signup is set. Rate-limited per IP.",
            post(accounts::register),
        ),
        r(
            "post",
            "/v1/auth/login",
            "accounts",
            Public,
            "Log in: access token (JWT) + rotating refresh token. Rate-limited per IP and per account.",
            post(accounts::login),
        ),
        r(
            "post",
            "/v1/auth/refresh",
            "accounts",
            Public,
            "Rotate a refresh token; reuse revokes the whole login.",
            post(accounts::refresh),
        ),
        r(
            "post",
            "/v1/auth/revoke",
            "accounts",
            Public,
            "Revoke the login a refresh token belongs to (always 204).",
            post(accounts::revoke),
        ),
        r(
            "post",
            "/v1/auth/logout",
            "accounts",
            User,
            "Log out this device, or all devices with {\"all\": true}.",
            post(accounts::logout),
        ),
        r(
            "get",
            "/v1/me",
            "accounts",
            User,
            "The account, its plan, expiry and usage statistics.",
            get(accounts::me),
        ),
        r(
            "post",
            "/v1/me/password",
            "accounts",
            User,
            "Change password; logs out other devices, returns fresh tokens.",
            post(accounts::change_password),
        ),
        r(
            "get",
            "/v1/plans",
            "plans",
            Public,
            "Plans, prices and limits.",
            get(plans::list),
        ),
        r(
            "get",
            "/v1/subscription",
            "plans",
            User,
            "The caller's subscription (null if none).",
            get(plans::get),
        ),
        r(
            "post",
            "/v1/subscriptions/trial",
            "plans",
            User,
            "Start the 7-day trial (once per account).",
            post(plans::trial),
        ),
        r(
            "post",
            "/v1/subscriptions/cancel",
            "plans",
            User,
            "Cancel: the plan runs to the end of the period.",
            post(plans::cancel),
        ),
        r(
            "post",
            "/v1/promo/redeem",
            "plans",
            User,
            "Redeem a promo code.",
            post(promo::redeem),
        ),
        r(
            "post",
            "/v1/payments",
            "payments",
            User,
            "Create a payment intent: pending payment + what to do.",
            post(payments::create),
        ),
        r(
            "get",
            "/v1/payments",
            "payments",
            User,
            "Payment history.",
            get(payments::history),
        ),
        r(
            "post",
            "/v1/payments/webhook/donatepay",
            "payments",
            Signed,
            "DonatePay notification (X-Signature: hex HMAC-SHA256 of the raw body).",
            post(payments::webhook),
        ),
        r(
            "post",
            "/v1/sessions",
            "sessions",
            User,
            "Get a signed session ticket and candidate nodes (needs an active plan).",
            post(sessions::create),
        ),
        r(
            "get",
            "/v1/sessions",
            "sessions",
            User,
            "Session history.",
            get(sessions::history),
        ),
        r(
            "post",
            "/v1/sessions/{id}/stop",
            "sessions",
            User,
            "Stop a session.",
            post(sessions::stop),
        ),
        r(
            "post",
            "/v1/sessions/{id}/renew",
            "sessions",
            User,
            "A fresh ticket for the same session (present it on the open control connection).",
            post(sessions::renew),
        ),
        r(
            "get",
            "/v1/routes/{game}",
            "sessions",
            User,
            "Preview a session: the game's destinations and the live nodes, without a ticket or a session slot.",
            get(sessions::preview),
        ),
        r(
            "get",
            "/v1/games",
            "games",
            Public,
            "Game catalog; ?search= filters by name, slug, process or category.",
            get(games::list),
        ),
        r(
            "get",
            "/v1/mesh",
            "mesh",
            Public,
            "Mesh CA certificate and every ticket key that can still be valid.",
            get(mesh),
        ),
        r(
            "post",
            "/v1/nodes/join",
            "nodes",
            Public,
            "Join with a single-use token and a public key: certificate + mesh bundle.",
            post(nodes::join),
        ),
        r(
            "post",
            "/v1/nodes/announce",
            "nodes",
            Node,
            "Announce addresses, mesh view and RTT measurements (heartbeat); answers seeds and catalog probes.",
            post(nodes::announce).layer(DefaultBodyLimit::max(ANNOUNCE_BODY_LIMIT)),
        ),
        r(
            "post",
            "/v1/nodes/usage",
            "nodes",
            Node,
            "Report per-session bytes, loss and RTT.",
            post(sessions::report_usage),
        ),
        r(
            "get",
            "/v1/admin/users",
            "admin",
            Admin,
            "Users: ?search=&filter=banned|admin|subscribed|expired|no_plan&limit=&offset=",
            get(admin::users),
        ),
        r(
            "get",
            "/v1/admin/users/{id}",
            "admin",
            Admin,
            "One user with plan, usage and plan history.",
            get(admin::user),
        ),
        r(
            "post",
            "/v1/admin/users/{id}/ban",
            "admin",
            Admin,
            "Ban (and log out everywhere).",
            post(admin::ban),
        ),
        r(
            "post",
            "/v1/admin/users/{id}/unban",
            "admin",
            Admin,
            "Lift a ban.",
            post(admin::unban),
        ),
        r(
            "post",
            "/v1/admin/users/{id}/grant",
            "admin",
            Admin,
            "Grant days ({\"days\", \"plan\"?}).",
            post(admin::grant),
        ),
        r(
            "get",
            "/v1/admin/subscriptions",
            "admin",
            Admin,
            "Subscriptions: ?status=active|cancelled|expired",
            get(admin::subscriptions),
        ),
        r(
            "get",
            "/v1/admin/payments",
            "admin",
            Admin,
            "Payments: ?status=pending|credited|flagged&account_id=",
            get(payments::admin_list),
        ),
        r(
            "post",
            "/v1/admin/payments/poll",
            "admin",
            Admin,
            "Poll the payment provider now.",
            post(payments::admin_poll),
        ),
        r(
            "get",
            "/v1/admin/payment-notifications",
            "admin",
            Admin,
            "Raw payment notifications (audit).",
            get(payments::admin_notifications),
        ),
        r(
            "get",
            "/v1/admin/sessions",
            "admin",
            Admin,
            "Sessions: ?status=open|finished&account_id=&game=&node_id=",
            get(admin::sessions),
        ),
        r(
            "get",
            "/v1/admin/nodes",
            "admin",
            Admin,
            "Nodes.",
            get(admin::nodes),
        ),
        r(
            "get",
            "/v1/admin/nodes/{id}",
            "admin",
            Admin,
            "One node.",
            get(admin::node),
        ),
        r(
            "patch",
            "/v1/admin/nodes/{id}",
            "admin",
            Admin,
            "Update name, region, enabled, priority.",
            patch(admin::patch_node),
        ),
        r(
            "delete",
            "/v1/admin/nodes/{id}",
            "admin",
            Admin,
            "Remove a node (its secret stops working).",
            delete(admin::delete_node),
        ),
        r(
            "get",
            "/v1/admin/games",
            "admin",
            Admin,
            "Games incl. ?include_deleted=true.",
            get(games::admin_list),
        ),
        r(
            "post",
            "/v1/admin/games",
            "admin",
            Admin,
            "Add a game.",
            post(games::admin_create),
        ),
        r(
            "put",
            "/v1/admin/games/{slug}",
            "admin",
            Admin,
            "Replace a game's fields.",
            put(games::admin_update),
        ),
        r(
            "delete",
            "/v1/admin/games/{slug}",
            "admin",
            Admin,
            "Hide a game.",
            delete(games::admin_delete),
        ),
        r(
            "get",
            "/v1/admin/promo-codes",
            "admin",
            Admin,
            "Promo codes.",
            get(promo::admin_list),
        ),
        r(
            "post",
            "/v1/admin/promo-codes",
            "admin",
            Admin,
            "Create a promo code ({code?, days, max_uses, expires_at?}).",
            post(promo::admin_create),
        ),
        r(
            "delete",
            "/v1/admin/promo-codes/{code}",
            "admin",
            Admin,
            "Disable a promo code.",
            delete(promo::admin_disable),
        ),
        r(
            "get",
            "/v1/admin/join-tokens",
            "admin",
            Admin,
            "Join tokens (never the secrets).",
            get(admin::join_tokens),
        ),
        r(
            "post",
            "/v1/admin/join-tokens",
            "admin",
            Admin,
            "Create a single-use join token ({ttl_secs?, note?}).",
            post(admin::create_join_token),
        ),
        r(
            "delete",
            "/v1/admin/join-tokens/{id}",
            "admin",
            Admin,
            "Revoke an unused join token.",
            delete(admin::revoke_join_token),
        ),
        r(
            "get",
            "/v1/admin/keys",
            "admin",
            Admin,
            "Ticket signing keys.",
            get(admin::keys),
        ),
        r(
            "post",
            "/v1/admin/keys/rotate",
            "admin",
            Admin,
            "Rotate the ticket signing key.",
            post(admin::rotate_keys),
        ),
    ]
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
