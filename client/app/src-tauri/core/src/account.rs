//! The account side of billing that `plg-client`'s `BillingClient` does not cover yet: the
//! account with its plan, plans, trial, promo codes, payments, and the catalog with its
//! categories. Plain JSON calls with the login's bearer token; errors are billing's own
//! (`{"error": {"code", "message"}}`), passed through as `CmdError`s.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::CmdError;

/// A subscription as billing shows it to its owner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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

/// A catalog game with what the games screen shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Game {
    /// Catalog slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Category label (`shooter`, `moba`, …), if the catalog has one.
    #[serde(default)]
    pub category: Option<String>,
    /// Regions the game's servers are in.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Executable names used to detect the game running.
    #[serde(default)]
    pub process_names: Vec<String>,
}

/// Billing's account API for one login.
#[derive(Debug, Clone)]
pub struct Account {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Account {
    /// A client for billing at `base` with the access token `token`.
    pub fn new(base: &str, token: &str) -> Self {
        Account {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("HTTP client"),
        }
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, CmdError> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| {
            CmdError::new(
                "billing_unreachable",
                format!("cannot reach billing at {}: {e}", self.base),
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = body["error"]["code"].as_str().unwrap_or("unknown");
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("billing refused the request");
            return Err(CmdError::new(
                code,
                format!("{message} ({code}, HTTP {})", status.as_u16()),
            ));
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> Result<Value, CmdError> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, CmdError> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// `GET /v1/me`: email, plan, trial availability, usage.
    pub async fn me(&self) -> Result<Value, CmdError> {
        self.get("/v1/me").await
    }

    /// The current subscription, if any.
    pub async fn subscription(&self) -> Result<Option<Subscription>, CmdError> {
        let v = self.get("/v1/subscription").await?;
        serde_json::from_value(v).map_err(|e| CmdError::new("billing_protocol", e.to_string()))
    }

    /// `GET /v1/plans`.
    pub async fn plans(&self) -> Result<Value, CmdError> {
        self.get("/v1/plans").await
    }

    /// `GET /v1/payments`: payment history, newest first.
    pub async fn payments(&self) -> Result<Value, CmdError> {
        self.get("/v1/payments").await
    }

    /// `POST /v1/payments`: a pending payment and how to pay it.
    pub async fn pay(&self, plan: &str) -> Result<Value, CmdError> {
        self.post("/v1/payments", json!({ "plan": plan })).await
    }

    /// `POST /v1/promo/redeem`.
    pub async fn redeem(&self, code: &str) -> Result<Value, CmdError> {
        self.post("/v1/promo/redeem", json!({ "code": code })).await
    }

    /// `POST /v1/subscriptions/trial` (once per account).
    pub async fn start_trial(&self) -> Result<Value, CmdError> {
        self.post("/v1/subscriptions/trial", json!({})).await
    }

    /// `POST /v1/subscriptions/cancel` (the plan runs to its end).
    pub async fn cancel(&self) -> Result<Value, CmdError> {
        self.post("/v1/subscriptions/cancel", json!({})).await
    }

    /// `POST /v1/sessions/{id}/stop`: frees the session's slot in the plan's limit.
    pub async fn stop_session(&self, id: &str) -> Result<(), CmdError> {
        self.post(&format!("/v1/sessions/{id}/stop"), json!({}))
            .await
            .map(drop)
    }

    /// `GET /v1/games`: the whole catalog.
    pub async fn games(&self) -> Result<Vec<Game>, CmdError> {
        #[derive(Deserialize)]
        struct List {
            games: Vec<Game>,
        }
        let v = self.get("/v1/games").await?;
        let list: List = serde_json::from_value(v)
            .map_err(|e| CmdError::new("billing_protocol", e.to_string()))?;
        Ok(list.games)
    }
}

/// Games whose name or slug contains `search` and whose category is `category` (empty = any).
pub fn filter_games<'a>(games: &'a [Game], search: &str, category: &str) -> Vec<&'a Game> {
    let q = search.trim().to_lowercase();
    games
        .iter()
        .filter(|g| {
            q.is_empty() || g.name.to_lowercase().contains(&q) || g.slug.to_lowercase().contains(&q)
        })
        .filter(|g| category.is_empty() || g.category.as_deref() == Some(category))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(slug: &str, name: &str, cat: Option<&str>) -> Game {
        Game {
            slug: slug.into(),
            name: name.into(),
            category: cat.map(Into::into),
            regions: vec![],
            process_names: vec![],
        }
    }

    #[test]
    fn filter_by_search_and_category() {
        let g = [
            game("cs2", "Counter-Strike 2", Some("shooter")),
            game("dota2", "Dota 2", Some("moba")),
            game("demo", "Local demo game", None),
        ];
        let names = |v: Vec<&Game>| v.iter().map(|g| g.slug.clone()).collect::<Vec<_>>();
        assert_eq!(names(filter_games(&g, "", "")).len(), 3);
        assert_eq!(names(filter_games(&g, "COUNTER", "")), ["cs2"]);
        assert_eq!(names(filter_games(&g, " 2", "moba")), ["dota2"]);
        assert!(filter_games(&g, "zzz", "").is_empty());
    }
}
