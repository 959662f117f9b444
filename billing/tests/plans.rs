//! Accounts (refresh, logout, password, /me), plans, trial, cancel, expiry, promo codes,
//! session limits, usage and history — each on SQLite and on PostgreSQL.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

both!(refresh_tokens_rotate_and_reuse_revokes_the_family);
async fn refresh_tokens_rotate_and_reuse_revokes_the_family(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    s.register("r@example.com").await;
    let first = s.login_full("r@example.com").await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(first["refresh_expires_in"], 30 * 86_400);

    let (status, second) = s
        .post("/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    let a2 = second["access_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let (status, _) = s.get_auth("/v1/me", &a2).await;
    assert_eq!(status, StatusCode::OK);

    // Replaying r1 (already used) revokes the family: r2 and a2 die with it.
    let (status, body) = s
        .post("/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "refresh_token_reused",
    );
    let (status, body) = s
        .post("/v1/auth/refresh", None, json!({"refresh_token": r2}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    );
    let (status, body) = s.get_auth("/v1/me", &a2).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    // Another login (another device) is unaffected.
    let other = s.login_full("r@example.com").await;
    let (status, _) = s
        .get_auth("/v1/me", other["access_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": "made-up"}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    );
    s.shutdown().await;
    env.cleanup().await;
}

both!(logout_revoke_and_password_change);
async fn logout_revoke_and_password_change(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    s.register("l@example.com").await;
    let phone = s.login_full("l@example.com").await;
    let laptop = s.login_full("l@example.com").await;
    let tok = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap().to_owned();

    // Logout (this device): its access and refresh tokens stop working; the other survives.
    let (status, _) = s
        .post(
            "/v1/auth/logout",
            Some(&tok(&phone, "access_token")),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.get_auth("/v1/me", &tok(&phone, "access_token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": tok(&phone, "refresh_token")}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s.get_auth("/v1/me", &tok(&laptop, "access_token")).await;
    assert_eq!(status, StatusCode::OK);

    // Revoke by refresh token (no access token needed).
    let (status, _) = s
        .post(
            "/v1/auth/revoke",
            None,
            json!({"refresh_token": tok(&laptop, "refresh_token")}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.get_auth("/v1/me", &tok(&laptop, "access_token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Password change: wrong current password refused; success logs out the others and
    // returns working tokens; the new password works, the old one doesn't.
    let a = s.login_full("l@example.com").await;
    let b = s.login_full("l@example.com").await;
    let (status, body) = s
        .post(
            "/v1/me/password",
            Some(&tok(&a, "access_token")),
            json!({"current_password": "wrong password", "new_password": "a new password!"}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    let (status, body) = s
        .post(
            "/v1/me/password",
            Some(&tok(&a, "access_token")),
            json!({"current_password": PASSWORD, "new_password": "short"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "weak_password");
    let (status, fresh) = s
        .post(
            "/v1/me/password",
            Some(&tok(&a, "access_token")),
            json!({"current_password": PASSWORD, "new_password": "a new password!"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let (status, _) = s.get_auth("/v1/me", &tok(&b, "access_token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s.get_auth("/v1/me", &tok(&fresh, "access_token")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "l@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "l@example.com", "password": "a new password!"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.shutdown().await;
    env.cleanup().await;
}

both!(no_plan_is_refused_and_the_trial_starts_once_under_concurrency);
async fn no_plan_is_refused_and_the_trial_starts_once_under_concurrency(db: Db) {
    let env = Env::new(db).await;
    let s = env.start_with(|c| c.trial_on_signup = false).await;
    let (status, reg) = s
        .post(
            "/v1/accounts",
            None,
            json!({"email": "t@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(reg["subscription"], serde_json::Value::Null);
    let token = s.login("t@example.com").await;
    let (status, body) = s.session(&token, "cs2").await;
    assert_error(
        status,
        &body,
        StatusCode::PAYMENT_REQUIRED,
        "no_active_plan",
    );
    let (_, me) = s.get_auth("/v1/me", &token).await;
    assert_eq!(me["trial_available"], true);
    assert_eq!(me["subscription"], serde_json::Value::Null);

    // Ten racing trial requests: exactly one starts it.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let http = s.http.clone();
        let url = s.url("/v1/subscriptions/trial");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut created = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((created, conflicts), (1, 9));
    let (_, me) = s.get_auth("/v1/me", &token).await;
    assert_eq!(me["trial_available"], false);
    assert_eq!(me["subscription"]["plan"], "trial");
    assert_eq!(me["subscription"]["status"], "active");
    let left = me["subscription"]["seconds_left"].as_i64().unwrap();
    assert!((7 * 86_400 - 10..=7 * 86_400).contains(&left), "{left}");
    let (status, body) = s.session(&token, "cs2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["plan"], "trial");
    s.shutdown().await;
    env.cleanup().await;
}

both!(cancel_runs_to_period_end_then_expires);
async fn cancel_runs_to_period_end_then_expires(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let id = s.register("c@example.com").await;
    let token = s.login("c@example.com").await;
    let (status, sub) = s
        .post("/v1/subscriptions/cancel", Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    assert_eq!(sub["status"], "cancelled");
    let (status, body) = s
        .post("/v1/subscriptions/cancel", Some(&token), json!({}))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "nothing_to_cancel");
    // Cancelled still works until the end of the period.
    let (status, body) = s.session(&token, "cs2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The period ends: expired, refused.
    env.sql(&format!(
        "UPDATE subscriptions SET period_end = {} WHERE account_id = {id}",
        unix_now() - 1
    ))
    .await;
    let (_, sub) = s.get_auth("/v1/subscription", &token).await;
    assert_eq!(sub["status"], "expired");
    assert_eq!(sub["seconds_left"], 0);
    let (status, body) = s.session(&token, "cs2").await;
    assert_error(
        status,
        &body,
        StatusCode::PAYMENT_REQUIRED,
        "no_active_plan",
    );
    // The trial can't be restarted.
    let (status, body) = s
        .post("/v1/subscriptions/trial", Some(&token), json!({}))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "trial_used");
    s.shutdown().await;
    env.cleanup().await;
}

both!(promo_codes_redeem_atomically);
async fn promo_codes_redeem_atomically(db: Db) {
    let env = Env::new(db).await;
    let s = env.start_with(|c| c.trial_on_signup = false).await;
    let admin = s.admin("boss@example.com").await;
    let (status, promo) = s
        .post(
            "/v1/admin/promo-codes",
            Some(&admin),
            json!({"code": "launch-3", "days": 10, "max_uses": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{promo}");
    assert_eq!(promo["code"], "LAUNCH-3");

    // Eight accounts race for three uses.
    let mut tokens = Vec::new();
    for i in 0..8 {
        let email = format!("p{i}@example.com");
        s.register(&email).await;
        tokens.push(s.login(&email).await);
    }
    let mut tasks = Vec::new();
    for t in &tokens {
        let http = s.http.clone();
        let url = s.url("/v1/promo/redeem");
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(t)
                .json(&json!({"code": "Launch-3"}))
                .send()
                .await
                .unwrap();
            read(resp).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(body["plan"], "monthly");
                let left = body["seconds_left"].as_i64().unwrap();
                assert!((10 * 86_400 - 10..=10 * 86_400).contains(&left));
            }
            StatusCode::GONE => assert_eq!(body["error"]["code"], "promo_unavailable"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 3);
    let (_, list) = s.get_auth("/v1/admin/promo-codes", &admin).await;
    assert_eq!(list["promo_codes"][0]["uses"], 3);

    // Once per account; unknown and expired codes.
    let (_, p2) = s
        .post(
            "/v1/admin/promo-codes",
            Some(&admin),
            json!({"days": 5, "max_uses": 100}),
        )
        .await;
    let code = p2["code"].as_str().unwrap();
    let (status, _) = s
        .post("/v1/promo/redeem", Some(&tokens[0]), json!({"code": code}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s
        .post("/v1/promo/redeem", Some(&tokens[0]), json!({"code": code}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "promo_already_redeemed",
    );
    let (status, body) = s
        .post(
            "/v1/promo/redeem",
            Some(&tokens[0]),
            json!({"code": "NOPE"}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_promo_code");
    s.post(
        "/v1/admin/promo-codes",
        Some(&admin),
        json!({"code": "OLD", "days": 5, "max_uses": 100, "expires_at": unix_now() - 5}),
    )
    .await;
    let (status, body) = s
        .post("/v1/promo/redeem", Some(&tokens[1]), json!({"code": "old"}))
        .await;
    assert_error(status, &body, StatusCode::GONE, "promo_unavailable");
    let (status, _) = s
        .send(
            Method::DELETE,
            &format!("/v1/admin/promo-codes/{code}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s
        .post("/v1/promo/redeem", Some(&tokens[1]), json!({"code": code}))
        .await;
    assert_eq!(status, StatusCode::GONE);
    s.shutdown().await;
    env.cleanup().await;
}

both!(session_limit_stop_usage_and_history);
async fn session_limit_stop_usage_and_history(db: Db) {
    let env = Env::new(db).await;
    let s = env.start_with(|c| c.plans.trial.max_sessions = 1).await;
    s.register("h@example.com").await;
    let token = s.login("h@example.com").await;
    let (status, first) = s.session(&token, "demo").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let sid = first["session_id"].as_str().unwrap().to_owned();
    let (status, body) = s.session(&token, "cs2").await;
    assert_error(status, &body, StatusCode::CONFLICT, "session_limit_reached");

    // Racing requests can't exceed the limit either.
    let (status, _) = s
        .post(&format!("/v1/sessions/{sid}/stop"), Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let http = s.http.clone();
        let url = s.url("/v1/sessions");
        let t = token.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(t)
                .json(&json!({"game": "demo"}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::CREATED {
            created += 1;
        }
    }
    assert_eq!(created, 1);

    // A node reports usage for the first session (authenticated by its secret).
    let (joined, _) = s.join("relay-u").await;
    let secret = joined["node_secret"].as_str().unwrap();
    let report = json!({"reports": [
        {"session_id": sid, "bytes_up": 1000, "bytes_down": 5000, "loss": 0.01, "rtt_ms": 23.5},
        {"session_id": "42", "bytes_up": 1},
    ]});
    let (status, body) = s
        .post("/v1/nodes/usage", Some("wrong"), report.clone())
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_node_secret",
    );
    let (status, body) = s.post("/v1/nodes/usage", Some(secret), report).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"accepted": 1, "unknown": 1}));
    // Totals never go down.
    s.post(
        "/v1/nodes/usage",
        Some(secret),
        json!({"reports": [{"session_id": sid, "bytes_up": 10, "bytes_down": 10}]}),
    )
    .await;

    let (status, hist) = s.get_auth("/v1/sessions", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hist["total"], 2);
    let first_row = hist["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["session_id"] == sid.as_str())
        .unwrap();
    assert_eq!(first_row["status"], "ended");
    assert_eq!(first_row["end_reason"], "client");
    assert_eq!(first_row["bytes_up"], 1000);
    assert_eq!(first_row["bytes_down"], 5000);
    assert_eq!(first_row["rtt_ms"], 23.5);
    assert_eq!(first_row["node_id"], joined["node_id"]);
    assert_eq!(first_row["game"], "demo");

    let (_, me) = s.get_auth("/v1/me", &token).await;
    assert_eq!(me["usage"]["sessions_total"], 2);
    assert_eq!(me["usage"]["sessions_open"], 1);
    assert_eq!(me["usage"]["bytes_down"], 5000);
    assert_eq!(me["subscription"]["max_sessions"], 1);

    // Someone else's session can't be stopped.
    s.register("x@example.com").await;
    let other = s.login("x@example.com").await;
    let (status, body) = s
        .post(&format!("/v1/sessions/{sid}/stop"), Some(&other), json!({}))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_session");
    s.shutdown().await;
    env.cleanup().await;
}
