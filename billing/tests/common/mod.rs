//! Test harness shared by the billing integration tests: a real server on 127.0.0.1:0 over
//! a fresh database — a temporary SQLite file, or a fresh PostgreSQL database
//! (`CREATE DATABASE t_<random>` on `PLG_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, dropped at the end) — driven with reqwest.
//! `both!(name)` runs `async fn name(db: Db)` once per backend.

#![allow(dead_code)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use plg_billing::{Billing, Config, GameSeed};
use plg_proto::ticket::TicketVerifier;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "correct horse battery";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs `async fn $name(db: Db)` as `$name::sqlite` and `$name::postgres`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Db::Postgres).await
            }
        }
    };
}

fn admin_url() -> String {
    std::env::var("PLG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A data dir plus, for PostgreSQL, a database of its own.
pub struct Env {
    pub db: Db,
    pub dir: tempfile::TempDir,
    pub pg_name: Option<String>,
}

impl Env {
    pub async fn new(db: Db) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let pg_name = match db {
            Db::Sqlite => None,
            Db::Postgres => {
                let name = format!("t_{:016x}", fastrand::u64(..));
                let mut conn = sqlx::postgres::PgConnection::connect(&admin_url())
                    .await
                    .expect("PostgreSQL must be reachable (set PLG_TEST_POSTGRES_URL)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.ok();
                Some(name)
            }
        };
        Env { db, dir, pg_name }
    }

    pub fn database_url(&self) -> Option<String> {
        self.pg_name.as_ref().map(|name| {
            let base = admin_url();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            format!("{prefix}/{name}")
        })
    }

    /// The test config: loopback listener, this env's database, the demo game.
    pub fn config(&self) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: self.dir.path().to_path_buf(),
            database_url: self.database_url().map(plg_billing::Secret::new),
            db_max_connections: 8,
            extra_games: vec![demo_game()],
            ..Config::default()
        }
    }

    pub async fn start(&self) -> Server {
        self.start_with(|_| {}).await
    }

    pub async fn start_with(&self, tweak: impl FnOnce(&mut Config)) -> Server {
        let mut config = self.config();
        tweak(&mut config);
        start_config(config).await
    }

    /// Runs SQL directly (to move clocks in tests: expire a plan, age a session).
    pub async fn sql(&self, sql: &str) {
        sqlx::any::install_default_drivers();
        let url = match self.database_url() {
            Some(url) => url,
            None => format!("sqlite://{}/billing.db", self.dir.path().display()),
        };
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
    }

    /// Drops the PostgreSQL database (the SQLite dir goes with the TempDir).
    pub async fn cleanup(self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&admin_url()).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
            conn.close().await.ok();
        }
    }
}

pub fn demo_game() -> GameSeed {
    GameSeed {
        slug: "demo".into(),
        name: "Local demo".into(),
        destinations: vec!["127.0.0.1/32:40000-40010".parse().unwrap()],
        process_names: vec!["demo-game".into()],
        ..Default::default()
    }
}

pub struct Server {
    pub billing: Billing,
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn start_config(config: Config) -> Server {
    let billing = Billing::open(config).await.expect("open billing");
    let listener = billing.bind().await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(billing.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Server {
        billing,
        base,
        http,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Server {
    pub async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
        self.billing.close().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        read(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn get_auth(&self, path: &str, bearer: &str) -> (StatusCode, Value) {
        read(
            self.http
                .get(self.url(path))
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn register(&self, email: &str) -> i64 {
        let (status, body) = self
            .post(
                "/v1/accounts",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["account_id"].as_i64().unwrap()
    }

    /// Logs in; returns the whole answer (access_token, refresh_token, …).
    pub async fn login_full(&self, email: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/auth/login",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        body
    }

    pub async fn login(&self, email: &str) -> String {
        let body = self.login_full(email).await;
        assert_eq!(body["expires_in"], 3600);
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Registers `email`, makes it an admin, logs in; returns the admin's access token.
    pub async fn admin(&self, email: &str) -> String {
        self.register(email).await;
        self.billing.set_role(email, "admin").await.unwrap();
        self.login(email).await
    }

    pub async fn session(&self, token: &str, game: &str) -> (StatusCode, Value) {
        self.post("/v1/sessions", Some(token), json!({"game": game}))
            .await
    }

    /// Joins a node with a fresh key pair; returns the join answer and the node's key.
    pub async fn join(&self, name: &str) -> (Value, rcgen::KeyPair) {
        let token = self
            .billing
            .create_join_token(Duration::from_secs(3600))
            .await
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let (status, body) = self
            .post(
                "/v1/nodes/join",
                None,
                json!({"token": token, "name": name, "region": "eu-central",
                       "public_key_pem": key.public_key_pem()}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (body, key)
    }
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

pub fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

pub fn verifier_from_mesh(mesh: &Value) -> TicketVerifier {
    let keys = mesh["ticket_keys"].as_array().unwrap().iter().map(|k| {
        let raw: [u8; 32] = STANDARD
            .decode(k["public_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        (
            k["key_id"].as_u64().unwrap() as u32,
            ed25519_dalek::VerifyingKey::from_bytes(&raw).unwrap(),
        )
    });
    TicketVerifier::new(keys)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Makes `cmd`'s child start with the default action for SIGINT, SIGTERM and SIGHUP.
///
/// A test run started from a background job (`cargo test &`, a CI script, `setsid`) has
/// SIGINT ignored, and an ignored signal stays ignored across `exec`: a child relying on the
/// default action would then outlive the Ctrl-C the test sends it.
#[cfg(unix)]
pub fn default_signals(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use nix::sys::signal::{SigHandler, Signal, signal};
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe calls are allowed: it calls signal(2) (async-signal-safe per POSIX)
    // and neither allocates nor takes a lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
                signal(s, SigHandler::SigDfl)?;
            }
            Ok(())
        })
    }
}
