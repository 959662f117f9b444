//! DonatePay payments against a local stand-in that speaks DonatePay's format: intents,
//! signed webhooks (100 deliveries credit once), wrong amount/currency flagged, polling
//! fallback, raw audit trail, history — on SQLite and PostgreSQL.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::routing::get;
use common::*;
use plg_billing::config::DonatePayConfig;
use plg_billing::payments::sign_hmac_hex;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";
const API_KEY: &str = "dp-api-key";

/// A DonatePay stand-in: `GET /api/v1/transactions?access_token=…` lists `txns`.
async fn donatepay_standin(txns: Arc<Mutex<Vec<Value>>>) -> String {
    async fn transactions(
        State(txns): State<Arc<Mutex<Vec<Value>>>>,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> axum::Json<Value> {
        if q.get("access_token").map(String::as_str) != Some(API_KEY) {
            return axum::Json(json!({"status": "error", "message": "invalid token"}));
        }
        assert_eq!(q.get("type").map(String::as_str), Some("donation"));
        let data = txns.lock().unwrap().clone();
        axum::Json(json!({"status": "success", "data": data}))
    }
    let app = axum::Router::new()
        .route("/api/v1/transactions", get(transactions))
        .with_state(txns);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/v1")
}

fn txn(id: u64, sum: &str, comment: &str) -> Value {
    json!({"id": id, "type": "donation", "status": "success", "sum": sum,
           "comment": comment, "created_at": "2025-06-01 12:00:00",
           "vars": {"name": "gamer", "comment": comment}})
}

async fn webhook(s: &Server, body: &Value, secret: &str) -> (StatusCode, Value) {
    let raw = serde_json::to_vec(body).unwrap();
    let sig = sign_hmac_hex(secret.as_bytes(), &raw);
    read(
        s.http
            .post(s.url("/v1/payments/webhook/donatepay"))
            .header("content-type", "application/json")
            .header("x-signature", sig)
            .body(raw)
            .send()
            .await
            .unwrap(),
    )
    .await
}

both!(donatepay_webhook_polling_idempotency_and_flags);
async fn donatepay_webhook_polling_idempotency_and_flags(db: Db) {
    let env = Env::new(db).await;
    let txns = Arc::new(Mutex::new(Vec::new()));
    let api_url = donatepay_standin(txns.clone()).await;
    let s = env
        .start_with(|c| {
            c.trial_on_signup = false;
            c.plans.currency = "RUB".into();
            c.plans.monthly.price = Some("499".into());
            c.donatepay = Some(DonatePayConfig {
                api_url,
                api_key: plg_billing::Secret::new(API_KEY),
                webhook_secret: plg_billing::Secret::new(WEBHOOK_SECRET),
                page_url: "https://donatepay.example/don/plg".into(),
                poll_interval_secs: 0,
            });
        })
        .await;
    let id = s.register("payer@example.com").await;
    let token = s.login("payer@example.com").await;
    let admin = s.admin("admin@example.com").await;

    // Intent: pending payment + instructions with PLG:{payment_id}.
    let (status, body) = s
        .post("/v1/payments", Some(&token), json!({"plan": "trial"}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "unknown_plan");
    let (status, intent) = s
        .post("/v1/payments", Some(&token), json!({"plan": "monthly"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{intent}");
    let pid = intent["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(intent["status"], "pending");
    assert_eq!(intent["amount"], "499.00");
    assert_eq!(intent["currency"], "RUB");
    assert_eq!(intent["instructions"]["comment"], format!("PLG:{pid}"));
    assert_eq!(
        intent["instructions"]["pay_url"],
        "https://donatepay.example/don/plg"
    );

    // A forged webhook is refused and still stored for audit.
    let note = txn(1001, "499.00", &format!("PLG:{pid}"));
    let (status, body) = webhook(&s, &note, "not-the-secret-at-all").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_signature");
    let (status, body) = s.get_auth("/v1/me", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["subscription"], Value::Null);

    // The real one, delivered 100 times, credits once.
    let mut outcomes = std::collections::HashMap::<String, u32>::new();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let raw = serde_json::to_vec(&note).unwrap();
        let sig = sign_hmac_hex(WEBHOOK_SECRET.as_bytes(), &raw);
        let req = s
            .http
            .post(s.url("/v1/payments/webhook/donatepay"))
            .header("content-type", "application/json")
            .header("x-signature", format!("sha256={sig}"))
            .body(raw);
        tasks.push(tokio::spawn(async move {
            read(req.send().await.unwrap()).await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        *outcomes
            .entry(body["outcomes"][0].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(outcomes.get("credited"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("duplicate"), Some(&99), "{outcomes:?}");
    let (_, me) = s.get_auth("/v1/me", &token).await;
    assert_eq!(me["subscription"]["plan"], "monthly");
    let left = me["subscription"]["seconds_left"].as_i64().unwrap();
    assert!((30 * 86_400 - 30..=30 * 86_400).contains(&left), "{left}");

    // Wrong amount: flagged, not credited. Wrong currency: flagged too.
    let (_, short) = s
        .post("/v1/payments", Some(&token), json!({"plan": "monthly"}))
        .await;
    let short_id = short["payment_id"].as_str().unwrap().to_owned();
    let (_, body) = webhook(
        &s,
        &txn(1002, "100.00", &format!("please PLG:{short_id}")),
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(body["outcomes"][0], "flagged");
    let (_, usd) = s
        .post("/v1/payments", Some(&token), json!({"plan": "monthly"}))
        .await;
    let usd_id = usd["payment_id"].as_str().unwrap().to_owned();
    let mut t = txn(1003, "499.00", &format!("PLG:{usd_id}"));
    t["currency"] = json!("USD");
    let (_, body) = webhook(&s, &t, WEBHOOK_SECRET).await;
    assert_eq!(body["outcomes"][0], "flagged");
    let (_, me2) = s.get_auth("/v1/me", &token).await;
    assert_eq!(
        me2["subscription"]["period_end"], me["subscription"]["period_end"],
        "flagged payments must not extend the plan"
    );

    // Polling fallback: a payment whose webhook never came is found in the transactions
    // API; the already-processed transactions in the same answer are not credited again.
    let (_, polled) = s
        .post("/v1/payments", Some(&token), json!({"plan": "monthly"}))
        .await;
    let polled_id = polled["payment_id"].as_str().unwrap().to_owned();
    {
        let mut list = txns.lock().unwrap();
        list.push(txn(1001, "499.00", &format!("PLG:{pid}")));
        list.push(txn(1004, "499", &format!("PLG:{polled_id}")));
        list.push(txn(1005, "499", "no id in this one"));
    }
    let (status, body) = s
        .post("/v1/admin/payments/poll", Some(&admin), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let outcomes: Vec<(&str, &str)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["txn_id"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("1001", "duplicate"),
            ("1004", "credited"),
            ("1005", "no_payment_id")
        ]
    );
    let (_, again) = s
        .post("/v1/admin/payments/poll", Some(&admin), json!({}))
        .await;
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "duplicate"),
        "{again}"
    );
    let (_, me3) = s.get_auth("/v1/me", &token).await;
    assert_eq!(
        me3["subscription"]["period_end"].as_i64().unwrap(),
        me["subscription"]["period_end"].as_i64().unwrap() + 30 * 86_400,
        "the polled payment extends from the current end"
    );

    // History for the user, and the admin's views.
    let (_, hist) = s.get_auth("/v1/payments", &token).await;
    assert_eq!(hist["total"], 4);
    let status_of = |pid: &str| {
        hist["payments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["payment_id"] == pid)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of(&pid), "credited");
    assert_eq!(status_of(&short_id), "flagged");
    assert_eq!(status_of(&usd_id), "flagged");
    assert_eq!(status_of(&polled_id), "credited");
    let (_, flagged) = s
        .get_auth("/v1/admin/payments?status=flagged", &admin)
        .await;
    assert_eq!(flagged["total"], 2);
    assert!(
        flagged["payments"][0]["flag_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    let (_, mine) = s
        .get_auth(&format!("/v1/admin/payments?account_id={id}"), &admin)
        .await;
    assert_eq!(mine["total"], 4);
    let (_, notes) = s
        .get_auth("/v1/admin/payment-notifications?limit=500", &admin)
        .await;
    let notes = notes["notifications"].as_array().unwrap();
    // 1 forged + 100 deliveries + 2 flagged + 2 new polled = 105 stored.
    assert_eq!(notes.len(), 105);
    assert_eq!(
        notes.iter().filter(|n| n["signature_ok"] == false).count(),
        1
    );
    assert!(
        notes
            .iter()
            .all(|n| n["raw"].as_str().unwrap().contains("sum"))
    );
    // Users can't reach admin routes.
    let (status, body) = s.get_auth("/v1/admin/payments", &token).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    s.shutdown().await;
    env.cleanup().await;
}

both!(payments_unconfigured_say_so);
async fn payments_unconfigured_say_so(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    s.register("u@example.com").await;
    let token = s.login("u@example.com").await;
    let (status, body) = s
        .post("/v1/payments", Some(&token), json!({"plan": "monthly"}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "payments_unavailable",
    );
    s.shutdown().await;
    env.cleanup().await;
}
