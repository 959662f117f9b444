//! Talking to billing: sign up, log in, fetch the mesh CA, request a session ticket, and the
//! account's side (plan, plans, trial, promo codes, payments) that the desktop app shows.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// What went wrong talking to billing, phrased for the gamer.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// Network failure.
    #[error("cannot reach billing at {url}: {source}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Underlying error.
        source: reqwest::Error,
    },
    /// Billing answered with an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code, e.g. `invalid_credentials`.
        code: String,
        /// Human-readable message.
        message: String,
    },
    /// Billing answered something we don't understand.
    #[error("unexpected answer from billing: {0}")]
    Protocol(String),
}

/// One leg's measurement as billing relays it from the mesh (integers, as nodes announce).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegRtt {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u64,
    /// Smoothed jitter, microseconds.
    #[serde(default)]
    pub jitter_us: u64,
    /// Probes lost, per mille (0–1000).
    #[serde(default)]
    pub loss_permille: u32,
}

/// What a node measured towards one game target (a /24 or /48 prefix).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetRtt {
    /// The target prefix, e.g. `203.0.113.0/24`.
    pub target: String,
    /// The exit → game leg.
    #[serde(flatten)]
    pub leg: LegRtt,
    /// Seconds since the node announced it.
    #[serde(default)]
    pub age_secs: u64,
}

/// One relay node a session may use.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// The name its operator gave at join (`fra-1`; empty from an older billing).
    #[serde(default)]
    pub name: String,
    /// TLS name in the node's certificate.
    pub server_name: String,
    /// Region label.
    #[serde(default)]
    pub region: String,
    /// QUIC control address.
    pub control_addr: String,
    /// UDP data address.
    pub data_addr: String,
    /// The node's exit → game measurements for this game's targets (empty: none yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub game_rtt: Vec<TargetRtt>,
    /// The node's mesh RTT to other offered nodes, by node id.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub mesh_rtt: std::collections::BTreeMap<String, LegRtt>,
}

impl NodeInfo {
    /// What a gamer sees: the operator's name for it (`fra-1`), else its id.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }
}

/// Game summary in a session grant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GameRef {
    /// Catalog slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// The game's own server query protocol, used to probe servers (`a2s`, `q3`, `echo`);
    /// `None`: the catalog names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// A session billing granted: the signed ticket and where to use it.
#[derive(Clone, Debug, Deserialize)]
pub struct SessionGrant {
    /// Session id (decimal string; u64).
    pub session_id: String,
    /// Base64 of the signed ticket.
    pub ticket: String,
    /// Unix seconds when the ticket expires.
    pub expires_at: u64,
    /// The game.
    pub game: GameRef,
    /// Allowed destinations, `CIDR:PORTS`.
    pub destinations: Vec<String>,
    /// Candidate nodes, best first.
    pub nodes: Vec<NodeInfo>,
}

impl SessionGrant {
    /// The ticket bytes.
    pub fn ticket_bytes(&self) -> Result<Vec<u8>, BillingError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.ticket)
            .map_err(|_| BillingError::Protocol("ticket is not base64".into()))
    }
}

/// Where a session for a game would go, without a ticket (`GET /v1/routes/{game}`).
#[derive(Clone, Debug, Deserialize)]
pub struct RoutePreview {
    /// The game.
    pub game: GameRef,
    /// Allowed destinations, `CIDR:PORTS`.
    pub destinations: Vec<String>,
    /// Live nodes, in billing's order.
    pub nodes: Vec<NodeInfo>,
}

/// A catalog entry as `GET /v1/games` lists it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct GameInfo {
    /// Catalog slug, used with `plg connect --game`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Category label (`shooter`, `moba`, …), if the catalog has one.
    #[serde(default)]
    pub category: Option<String>,
    /// Regions the game's servers are in.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Executable names used for auto-detection.
    #[serde(default)]
    pub process_names: Vec<String>,
}

/// A subscription as billing shows it to its owner (`GET /v1/subscription`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Subscription {
    /// `trial`, `monthly`, `quarterly`, `yearly`.
    pub plan: String,
    /// `active`, `cancelled` (runs to `period_end`) or `expired`.
    pub status: String,
    /// Unix seconds.
    pub period_end: i64,
    /// Seconds until `period_end` (0 once expired).
    pub seconds_left: i64,
}

/// One of the account's sessions (`GET /v1/sessions`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SessionSummary {
    /// Session id (decimal).
    pub session_id: String,
    /// Game slug.
    pub game: String,
    /// `open`, `ended` or `expired`.
    pub status: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Seconds it lasted (so far, when open).
    pub duration_secs: i64,
    /// The node it was opened on.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Why it ended (`stopped`, `expired`, ...).
    #[serde(default)]
    pub end_reason: Option<String>,
}

#[derive(Deserialize)]
struct SessionList {
    sessions: Vec<SessionSummary>,
}

/// A plan on sale (`GET /v1/plans`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct PlanOffer {
    /// `trial`, `monthly`, `quarterly`, `yearly`.
    pub name: String,
    /// Days one purchase adds.
    pub days: u32,
    /// Decimal price (`None` for the trial).
    #[serde(default)]
    pub price: Option<String>,
    /// Currency of the price.
    pub currency: String,
    /// Sessions at once.
    pub max_sessions: u32,
    /// Paths per session.
    pub path_limit: u8,
}

#[derive(Deserialize)]
struct PlanList {
    plans: Vec<PlanOffer>,
}

/// How to pay for a pending payment (`POST /v1/payments`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct PaymentInstructions {
    /// The provider's page to pay on.
    pub pay_url: String,
    /// What to do, in words (amount, comment).
    pub text: String,
    /// The comment that ties the payment to the account.
    pub comment: String,
}

#[derive(Deserialize)]
struct PaymentCreated {
    payment_id: String,
    instructions: Option<PaymentInstructions>,
}

#[derive(Deserialize)]
struct GameList {
    games: Vec<GameInfo>,
}

/// Answer of `GET /v1/mesh`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MeshInfo {
    /// Mesh CA certificate (PEM); nodes must chain to it.
    pub ca_cert_pem: String,
    /// Billing's public ticket keys (the capture helper verifies tickets with them).
    #[serde(default)]
    pub ticket_keys: Vec<TicketKey>,
}

/// A public ticket key as `GET /v1/mesh` lists it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct TicketKey {
    /// Key id carried in tickets.
    pub key_id: u32,
    /// Base64 (standard) of the 32-byte Ed25519 public key.
    pub public_key: String,
}

#[derive(Deserialize)]
struct LoginAnswer {
    access_token: String,
    expires_in: u64,
}

/// A logged-in (or anonymous) billing client.
#[derive(Clone, Debug)]
pub struct BillingClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl BillingClient {
    /// A client for billing at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("HTTP client");
        BillingClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token: None,
        }
    }

    /// Uses an access token obtained earlier.
    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    /// Billing base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, BillingError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|source| BillingError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            return Err(BillingError::Api {
                status: status.as_u16(),
                code: body["error"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned(),
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or("billing refused the request")
                    .to_owned(),
            });
        }
        resp.json()
            .await
            .map_err(|e| BillingError::Protocol(e.to_string()))
    }

    /// Creates an account.
    pub async fn register(&self, email: &str, password: &str) -> Result<(), BillingError> {
        let url = format!("{}/v1/accounts", self.base);
        let _: serde_json::Value = self
            .call(
                self.http
                    .post(&url)
                    .json(&serde_json::json!({"email": email, "password": password})),
                &url,
            )
            .await?;
        Ok(())
    }

    /// Logs in; returns the access token and its lifetime in seconds, and keeps the token.
    pub async fn login(
        &mut self,
        email: &str,
        password: &str,
    ) -> Result<(String, u64), BillingError> {
        let url = format!("{}/v1/auth/login", self.base);
        let a: LoginAnswer = self
            .call(
                self.http
                    .post(&url)
                    .json(&serde_json::json!({"email": email, "password": password})),
                &url,
            )
            .await?;
        self.token = Some(a.access_token.clone());
        Ok((a.access_token, a.expires_in))
    }

    /// Fetches the mesh CA.
    pub async fn mesh(&self) -> Result<MeshInfo, BillingError> {
        let url = format!("{}/v1/mesh", self.base);
        self.call(self.http.get(&url), &url).await
    }

    /// Lists catalog games whose name, slug or a process name contains `search`
    /// (case-insensitive).
    pub async fn games(&self, search: Option<&str>) -> Result<Vec<GameInfo>, BillingError> {
        let url = format!("{}/v1/games", self.base);
        let mut req = self.http.get(&url);
        if let Some(q) = search {
            req = req.query(&[("search", q)]);
        }
        let list: GameList = self.call(req, &url).await?;
        // Filter here too, so the answer is right whatever the server does with `search`.
        let q = search.map(str::to_lowercase);
        Ok(list
            .games
            .into_iter()
            .filter(|g| {
                q.as_deref().is_none_or(|q| {
                    g.slug.to_lowercase().contains(q)
                        || g.name.to_lowercase().contains(q)
                        || g.process_names.iter().any(|p| p.to_lowercase().contains(q))
                })
            })
            .collect())
    }

    /// Ends a session early (billing stops counting it against the plan's limit).
    pub async fn stop_session(&self, session_id: &str) -> Result<(), BillingError> {
        let url = format!("{}/v1/sessions/{session_id}/stop", self.base);
        let _: serde_json::Value = self.call(self.http.post(&url), &url).await?;
        Ok(())
    }

    /// The account's sessions, newest first (at most `limit`).
    pub async fn sessions(&self, limit: u32) -> Result<Vec<SessionSummary>, BillingError> {
        let v = self
            .get_json(&format!("/v1/sessions?limit={limit}"))
            .await?;
        serde_json::from_value::<SessionList>(v)
            .map(|l| l.sessions)
            .map_err(|e| BillingError::Protocol(e.to_string()))
    }

    /// The plans on sale.
    pub async fn plan_offers(&self) -> Result<Vec<PlanOffer>, BillingError> {
        let v = self.plans().await?;
        serde_json::from_value::<PlanList>(v)
            .map(|l| l.plans)
            .map_err(|e| BillingError::Protocol(e.to_string()))
    }

    /// Creates a pending payment for `plan`; returns its id and how to pay it.
    pub async fn create_payment(
        &self,
        plan: &str,
    ) -> Result<(String, Option<PaymentInstructions>), BillingError> {
        let v = self.pay(plan).await?;
        serde_json::from_value::<PaymentCreated>(v)
            .map(|p| (p.payment_id, p.instructions))
            .map_err(|e| BillingError::Protocol(e.to_string()))
    }

    /// Asks for a fresh ticket for a running session (same session id, later expiry).
    pub async fn renew_session(&self, session_id: &str) -> Result<SessionGrant, BillingError> {
        let url = format!("{}/v1/sessions/{session_id}/renew", self.base);
        self.call(self.http.post(&url), &url).await
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value, BillingError> {
        let url = format!("{}{path}", self.base);
        self.call(self.http.get(&url), &url).await
    }

    async fn post_json(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, BillingError> {
        let url = format!("{}{path}", self.base);
        self.call(self.http.post(&url).json(&body), &url).await
    }

    /// `GET /v1/me`: email, subscription, trial availability, usage (as billing sends it).
    pub async fn me(&self) -> Result<serde_json::Value, BillingError> {
        self.get_json("/v1/me").await
    }

    /// The current subscription, if any.
    pub async fn subscription(&self) -> Result<Option<Subscription>, BillingError> {
        let v = self.get_json("/v1/subscription").await?;
        serde_json::from_value(v).map_err(|e| BillingError::Protocol(e.to_string()))
    }

    /// `GET /v1/plans`: the plans on sale.
    pub async fn plans(&self) -> Result<serde_json::Value, BillingError> {
        self.get_json("/v1/plans").await
    }

    /// `GET /v1/payments`: payment history, newest first.
    pub async fn payments(&self) -> Result<serde_json::Value, BillingError> {
        self.get_json("/v1/payments").await
    }

    /// `POST /v1/payments`: a pending payment for `plan` and how to pay it.
    pub async fn pay(&self, plan: &str) -> Result<serde_json::Value, BillingError> {
        self.post_json("/v1/payments", serde_json::json!({ "plan": plan }))
            .await
    }

    /// `POST /v1/promo/redeem`.
    pub async fn redeem(&self, code: &str) -> Result<serde_json::Value, BillingError> {
        self.post_json("/v1/promo/redeem", serde_json::json!({ "code": code }))
            .await
    }

    /// `POST /v1/subscriptions/trial` (once per account).
    pub async fn start_trial(&self) -> Result<serde_json::Value, BillingError> {
        self.post_json("/v1/subscriptions/trial", serde_json::json!({}))
            .await
    }

    /// `POST /v1/subscriptions/cancel` (the plan runs to its end).
    pub async fn cancel_subscription(&self) -> Result<serde_json::Value, BillingError> {
        self.post_json("/v1/subscriptions/cancel", serde_json::json!({}))
            .await
    }

    /// The nodes and destinations a session for `game` would get; issues no ticket and
    /// takes no session slot (route screens, `plg nodes`).
    pub async fn route_preview(&self, game: &str) -> Result<RoutePreview, BillingError> {
        // Slugs are `[a-z0-9-]`; anything else cannot name a game (and must not reach the path).
        if game.is_empty()
            || !game
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BillingError::Api {
                status: 404,
                code: "unknown_game".into(),
                message: format!("no game {game:?} in the catalog"),
            });
        }
        let url = format!("{}/v1/routes/{game}", self.base);
        self.call(self.http.get(&url), &url).await
    }

    /// Asks for a session ticket for `game`.
    pub async fn request_session(&self, game: &str) -> Result<SessionGrant, BillingError> {
        let url = format!("{}/v1/sessions", self.base);
        self.call(
            self.http
                .post(&url)
                .json(&serde_json::json!({"game": game})),
            &url,
        )
        .await
    }
}
