//! Admin API, key rotation, games and HTTP hygiene (OpenAPI, 429, CORS, metrics) — on
//! SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use plg_billing::config::Rate;
use reqwest::{Method, StatusCode};
use serde_json::json;

both!(admin_role_users_subscriptions_sessions);
async fn admin_role_users_subscriptions_sessions(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    s.register("user@example.com").await;
    let user = s.login("user@example.com").await;
    let (status, body) = s.get_auth("/v1/admin/users", &user).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = s.get("/v1/admin/users").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");

    // Promotion needs a fresh login (the role is in the token), demotion is immediate.
    s.billing
        .set_role("user@example.com", "admin")
        .await
        .unwrap();
    let (status, _) = s.get_auth("/v1/admin/users", &user).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let admin = s.login("user@example.com").await;
    let (status, _) = s.get_auth("/v1/admin/users", &admin).await;
    assert_eq!(status, StatusCode::OK);
    s.billing
        .set_role("user@example.com", "user")
        .await
        .unwrap();
    let (status, _) = s.get_auth("/v1/admin/users", &admin).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let admin = s.admin("root@example.com").await;

    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(s.register(&format!("gamer{i:02}@example.com")).await);
    }
    // Search + paginate.
    let (_, page1) = s
        .get_auth("/v1/admin/users?search=GAMER&limit=5", &admin)
        .await;
    assert_eq!(page1["total"], 12);
    assert_eq!(page1["users"].as_array().unwrap().len(), 5);
    let (_, page3) = s
        .get_auth("/v1/admin/users?search=gamer&limit=5&offset=10", &admin)
        .await;
    assert_eq!(page3["users"].as_array().unwrap().len(), 2);
    let (_, one) = s.get_auth("/v1/admin/users?search=gamer03", &admin).await;
    assert_eq!(one["users"][0]["email"], "gamer03@example.com");
    assert_eq!(one["users"][0]["subscription"]["plan"], "trial");

    // Ban / unban, filters.
    let victim = ids[3];
    let (status, _) = s
        .post(
            &format!("/v1/admin/users/{victim}/ban"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, banned) = s.get_auth("/v1/admin/users?filter=banned", &admin).await;
    assert_eq!(banned["total"], 1);
    assert_eq!(banned["users"][0]["account_id"], victim);
    let (status, body) = s
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "gamer03@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "account_banned");
    s.post(
        &format!("/v1/admin/users/{victim}/unban"),
        Some(&admin),
        json!({}),
    )
    .await;
    let (_, banned) = s.get_auth("/v1/admin/users?filter=banned", &admin).await;
    assert_eq!(banned["total"], 0);
    let (status, body) = s.get_auth("/v1/admin/users?filter=nonsense", &admin).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");

    // Grant days: extends from the current end, can switch plan.
    let target = ids[5];
    let (_, before) = s
        .get_auth(&format!("/v1/admin/users/{target}"), &admin)
        .await;
    let end = before["subscription"]["period_end"].as_i64().unwrap();
    let (status, after) = s
        .post(
            &format!("/v1/admin/users/{target}/grant"),
            Some(&admin),
            json!({"days": 30, "plan": "yearly"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["period_end"].as_i64().unwrap(), end + 30 * 86_400);
    assert_eq!(after["plan"], "yearly");
    let (_, detail) = s
        .get_auth(&format!("/v1/admin/users/{target}"), &admin)
        .await;
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["admin_grant", "trial"]);
    let (status, body) = s
        .post(
            "/v1/admin/users/999999/grant",
            Some(&admin),
            json!({"days": 1}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_account");

    // Subscriptions by status.
    env.sql(&format!(
        "UPDATE subscriptions SET period_end = {} WHERE account_id = {}",
        unix_now() - 10,
        ids[0]
    ))
    .await;
    let (_, expired) = s
        .get_auth("/v1/admin/subscriptions?status=expired", &admin)
        .await;
    assert_eq!(expired["total"], 1);
    assert_eq!(expired["subscriptions"][0]["account_id"], ids[0]);
    let (_, active) = s
        .get_auth("/v1/admin/subscriptions?status=active", &admin)
        .await;
    assert_eq!(active["total"], 13, "{active}");
    let (_, subscribed) = s.get_auth("/v1/admin/users?filter=expired", &admin).await;
    assert_eq!(subscribed["total"], 1);

    // Sessions: open/finished filters.
    let g1 = s.login("gamer01@example.com").await;
    let (_, a) = s.session(&g1, "demo").await;
    let (_, b) = s.session(&g1, "cs2").await;
    s.post(
        &format!("/v1/sessions/{}/stop", b["session_id"].as_str().unwrap()),
        Some(&g1),
        json!({}),
    )
    .await;
    let (_, open) = s.get_auth("/v1/admin/sessions?status=open", &admin).await;
    assert_eq!(open["total"], 1);
    assert_eq!(open["sessions"][0]["session_id"], a["session_id"]);
    let (_, finished) = s
        .get_auth(
            &format!("/v1/admin/sessions?status=finished&account_id={}", ids[1]),
            &admin,
        )
        .await;
    assert_eq!(finished["total"], 1);
    let (_, by_game) = s.get_auth("/v1/admin/sessions?game=cs2", &admin).await;
    assert_eq!(by_game["total"], 1);
    s.shutdown().await;
    env.cleanup().await;
}

both!(admin_nodes_join_tokens_and_key_rotation);
async fn admin_nodes_join_tokens_and_key_rotation(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let admin = s.admin("root@example.com").await;

    // Join tokens: create, list (no secret), use, revoke.
    let (status, created) = s
        .post(
            "/v1/admin/join-tokens",
            Some(&admin),
            json!({"ttl_secs": 600, "note": "fra-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let (status, spare) = s
        .post("/v1/admin/join-tokens", Some(&admin), json!(null))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{spare}");
    let key = rcgen::KeyPair::generate().unwrap();
    let (status, joined) = s
        .post(
            "/v1/nodes/join",
            None,
            json!({"token": token, "name": "fra-1", "region": "eu",
                   "public_key_pem": key.public_key_pem()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{joined}");
    assert_eq!(
        STANDARD
            .decode(joined["gossip_key"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(joined["seed_nodes"], json!([]));
    let node_id = joined["node_id"].as_str().unwrap().to_owned();
    let secret = joined["node_secret"].as_str().unwrap().to_owned();
    let (_, list) = s.get_auth("/v1/admin/join-tokens", &admin).await;
    let list = list["join_tokens"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(!list.iter().any(|t| t.to_string().contains(&token)));
    assert_eq!(list[1]["status"], "used");
    assert_eq!(list[1]["node_id"], node_id.as_str());
    assert_eq!(list[0]["status"], "valid");
    let spare_id = spare["id"].as_i64().unwrap();
    let (status, _) = s
        .send(
            Method::DELETE,
            &format!("/v1/admin/join-tokens/{spare_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s
        .post(
            "/v1/nodes/join",
            None,
            json!({"token": spare["token"], "name": "x", "region": "eu",
                   "public_key_pem": key.public_key_pem()}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_join_token",
    );

    // Nodes: announce, disable, priority, delete.
    let addrs = json!({"control_addr": "198.51.100.7:4433", "data_addr": "198.51.100.7:443"});
    s.post("/v1/nodes/announce", Some(&secret), addrs.clone())
        .await;
    let (other, _) = s.join("ams-1").await;
    let other_secret = other["node_secret"].as_str().unwrap();
    s.post(
        "/v1/nodes/announce",
        Some(other_secret),
        json!({"control_addr": "198.51.100.8:4433", "data_addr": "198.51.100.8:443"}),
    )
    .await;
    s.register("g@example.com").await;
    let g = s.login("g@example.com").await;
    let offered = |v: &serde_json::Value| -> Vec<String> {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, sess) = s.session(&g, "demo").await;
    assert_eq!(
        offered(&sess),
        vec![other["node_id"].as_str().unwrap(), node_id.as_str()]
    );
    let (status, patched) = s
        .send(
            Method::PATCH,
            &format!("/v1/admin/nodes/{node_id}"),
            Some(&admin),
            Some(json!({"priority": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["priority"], 1);
    assert_eq!(patched["live"], true);
    let (_, sess) = s.session(&g, "demo").await;
    assert_eq!(offered(&sess)[0], node_id);
    s.send(
        Method::PATCH,
        &format!("/v1/admin/nodes/{node_id}"),
        Some(&admin),
        Some(json!({"enabled": false})),
    )
    .await;
    // (the trial allows 2 open sessions; stop them as we go)
    for v in [&sess] {
        s.post(
            &format!("/v1/sessions/{}/stop", v["session_id"].as_str().unwrap()),
            Some(&g),
            json!({}),
        )
        .await;
    }
    let (status, sess3) = s.session(&g, "demo").await;
    assert_eq!(status, StatusCode::CREATED, "{sess3}");
    assert_eq!(offered(&sess3), vec![other["node_id"].as_str().unwrap()]);
    let (status, body) = s
        .send(
            Method::PATCH,
            &format!("/v1/admin/nodes/{node_id}"),
            Some(&admin),
            Some(json!({"name": "bad name"})),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_label");
    let (_, nodes) = s.get_auth("/v1/admin/nodes", &admin).await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2);
    let (status, _) = s
        .send(
            Method::DELETE,
            &format!("/v1/admin/nodes/{node_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.post("/v1/nodes/announce", Some(&secret), addrs).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_node_secret",
    );
    let (status, body) = s
        .get_auth(&format!("/v1/admin/nodes/{node_id}"), &admin)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_node");

    // Key rotation: new tickets use the new key, /v1/mesh publishes old and new, an old
    // ticket still verifies with what a node fetches after the rotation.
    let old_ticket = STANDARD.decode(sess3["ticket"].as_str().unwrap()).unwrap();
    let (status, keys) = s
        .post("/v1/admin/keys/rotate", Some(&admin), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let new_id = keys["current_key_id"].as_u64().unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert_eq!(keys["keys"][1]["published"], true);
    assert!(keys["keys"][1]["retired_at"].is_i64());
    let (_, mesh) = s.get("/v1/mesh").await;
    let ids: Vec<u64> = mesh["ticket_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&new_id));
    let mut verifier = verifier_from_mesh(&mesh);
    verifier
        .verify(&old_ticket, unix_now())
        .expect("old ticket");
    s.post(
        &format!(
            "/v1/sessions/{}/stop",
            sess3["session_id"].as_str().unwrap()
        ),
        Some(&g),
        json!({}),
    )
    .await;
    let (status, fresh) = s.session(&g, "demo").await;
    assert_eq!(status, StatusCode::CREATED, "{fresh}");
    let t = verifier
        .verify(
            &STANDARD.decode(fresh["ticket"].as_str().unwrap()).unwrap(),
            unix_now(),
        )
        .unwrap();
    assert_eq!(u64::from(t.key_id), new_id);
    assert_eq!(s.billing.ticket_verifying_key().0 as u64, new_id);
    // Once the old key's last ticket has expired it leaves /v1/mesh.
    env.sql(&format!(
        "UPDATE signing_keys SET retired_at = {} WHERE retired_at IS NOT NULL",
        unix_now() - 3 * 3600
    ))
    .await;
    let (_, mesh) = s.get("/v1/mesh").await;
    assert_eq!(mesh["ticket_keys"].as_array().unwrap().len(), 1);
    assert_eq!(mesh["ticket_keys"][0]["key_id"].as_u64(), Some(new_id));
    s.shutdown().await;
    env.cleanup().await;
}

both!(games_search_and_admin_crud);
async fn games_search_and_admin_crud(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let admin = s.admin("root@example.com").await;
    let (_, all) = s.get("/v1/games").await;
    let total = all["total"].as_i64().unwrap();
    assert!(total >= 4);
    let (_, found) = s.get("/v1/games?search=COUNTER").await;
    assert_eq!(found["games"][0]["slug"], "cs2");
    let (_, by_process) = s.get("/v1/games?search=demo-game").await;
    assert_eq!(by_process["games"][0]["slug"], "demo");
    let (_, none) = s.get("/v1/games?search=%25").await;
    assert_eq!(none["total"], 0, "a literal % matches nothing: {none}");

    let game = json!({"slug": "arena", "name": "Arena Shooter", "category": "shooter",
                      "regions": ["eu"], "destinations": ["198.51.100.0/24:7000-7100"],
                      "process_names": ["arena.exe"]});
    let (status, created) = s.post("/v1/admin/games", Some(&admin), game.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, body) = s.post("/v1/admin/games", Some(&admin), game).await;
    assert_error(status, &body, StatusCode::CONFLICT, "slug_taken");
    let (status, body) = s
        .post(
            "/v1/admin/games",
            Some(&admin),
            json!({"slug": "Bad Slug", "name": "x", "destinations": ["198.51.100.0/24:1"]}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_game");
    let (_, shooters) = s.get("/v1/games?search=shooter").await;
    assert!(
        shooters["games"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["slug"] == "arena")
    );
    // Edit a built-in game: the edit survives a restart (the seed leaves it alone).
    let (status, edited) = s
        .send(
            Method::PUT,
            "/v1/admin/games/cs2",
            Some(&admin),
            Some(json!({"name": "CS2 (edited)", "destinations": ["198.51.100.0/24:27015"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    let (status, _) = s
        .send(Method::DELETE, "/v1/admin/games/arena", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    s.register("g@example.com").await;
    let g = s.login("g@example.com").await;
    let (status, body) = s.session(&g, "arena").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_game");
    s.shutdown().await;

    let s = env.start().await;
    let (_, cs2) = s.get("/v1/games?search=cs2").await;
    assert_eq!(cs2["games"][0]["name"], "CS2 (edited)");
    let (_, arena) = s.get("/v1/games?search=arena").await;
    assert_eq!(arena["total"], 0);
    let admin = s.login("root@example.com").await;
    let (_, with_deleted) = s
        .get_auth("/v1/admin/games?search=arena&include_deleted=true", &admin)
        .await;
    assert_eq!(with_deleted["total"], 1);
    assert!(with_deleted["games"][0]["deleted_at"].is_i64());
    s.shutdown().await;
    env.cleanup().await;
}

both!(http_hygiene_openapi_rate_limits_cors_metrics);
async fn http_hygiene_openapi_rate_limits_cors_metrics(db: Db) {
    let env = Env::new(db).await;
    let s = env
        .start_with(|c| {
            c.cors_origins = vec!["https://app.example".into()];
            c.rate_limits.exempt_loopback = false;
            c.rate_limits.login_per_ip = Rate {
                burst: 3,
                per_minute: 1,
            };
            c.rate_limits.register_per_ip = Rate {
                burst: 4,
                per_minute: 1,
            };
            c.rate_limits.login_per_account = Rate {
                burst: 2,
                per_minute: 1,
            };
        })
        .await;
    // OpenAPI: every route of the router is documented.
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/v1/sessions", "post"),
        ("/v1/sessions/{id}/stop", "post"),
        ("/v1/admin/keys/rotate", "post"),
        ("/v1/payments/webhook/donatepay", "post"),
        ("/v1/me", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} {method}");
    }
    assert!(doc["paths"].as_object().unwrap().len() >= 40);

    // 429 with Retry-After: per account (email) first, then per IP.
    s.register("a@example.com").await;
    let attempt = |email: &'static str| {
        s.post(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": "wrong password"}),
        )
    };
    assert_eq!(attempt("a@example.com").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(attempt("a@example.com").await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = attempt("a@example.com").await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let (status, body) = attempt("b@example.com").await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let resp = s
        .http
        .post(s.url("/v1/auth/login"))
        .json(&json!({"email": "c@example.com", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    for i in 0..3 {
        s.register(&format!("r{i}@example.com")).await;
    }
    let (status, body) = s
        .post(
            "/v1/accounts",
            None,
            json!({"email": "r9@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // CORS for the configured origin only.
    let resp = s
        .http
        .request(Method::OPTIONS, s.url("/v1/auth/login"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let resp = s
        .http
        .get(s.url("/healthz"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    // 401 for a bad token, 413 for a big body on another route.
    let (status, _) = s.get_auth("/v1/me", "garbage").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = s
        .post(
            "/v1/auth/revoke",
            None,
            json!({"refresh_token": "x".repeat(70 * 1024)}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // Metrics.
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("plg_billing_logins_total{result=\"failed\"} 2"),
        "{text}"
    );
    assert!(text.contains(
        "plg_billing_http_requests_total{method=\"POST\",route=\"/v1/auth/login\",status=\"429\"} 3"
    ), "{text}");
    assert!(
        text.contains("plg_billing_http_request_duration_seconds_bucket{route=\"/openapi.json\"")
    );
    assert!(text.contains("plg_billing_open_sessions 0"));
    s.shutdown().await;
    env.cleanup().await;
}

/// The real binary stops cleanly on SIGTERM (graceful shutdown), with a request in flight
/// answered first.
#[cfg(unix)]
#[tokio::test]
async fn binary_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = default_signals(&mut Command::new(env!("CARGO_BIN_EXE_plg-billing")))
        .args([
            "--log-json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("PLG_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server starts");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(listen) = v["fields"]["listen"].as_str() {
            break listen.to_owned();
        }
    };
    let resp = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let mut saw_stop = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        saw_stop |= line.contains("billing API stopped");
    }
    assert!(saw_stop);
}

both!(mesh_reports_drive_offers_seeds_and_the_node_list);
async fn mesh_reports_drive_offers_seeds_and_the_node_list(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let admin = s.admin("root@example.com").await;
    let (a, _) = s.join("fra-1").await;
    let (b, _) = s.join("ams-1").await;
    let (a_secret, b_secret) = (
        a["node_secret"].as_str().unwrap(),
        b["node_secret"].as_str().unwrap(),
    );
    let announce = |gossip: &str, extra: serde_json::Value| {
        let mut body = json!({
            "control_addr": "198.51.100.7:4433",
            "data_addr": "198.51.100.7:443",
            "gossip_addr": gossip,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let (status, body) = s
        .post(
            "/v1/nodes/announce",
            Some(a_secret),
            announce("198.51.100.7:7946", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["seeds"], json!([]));
    // B learns A's gossip address as its seed, and the other way round.
    let (_, body) = s
        .post(
            "/v1/nodes/announce",
            Some(b_secret),
            announce("198.51.100.8:7946", json!({"sessions": 3})),
        )
        .await;
    assert_eq!(body["seeds"], json!(["198.51.100.7:7946"]));
    let (_, body) = s
        .post(
            "/v1/nodes/announce",
            Some(a_secret),
            announce("198.51.100.7:7946", json!({})),
        )
        .await;
    assert_eq!(body["seeds"], json!(["198.51.100.8:7946"]));
    // Hostile fields are refused.
    let (status, body) = s
        .post(
            "/v1/nodes/announce",
            Some(a_secret),
            announce("198.51.100.7:7946", json!({"health": "great"})),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_health");
    let (status, body) = s
        .post(
            "/v1/nodes/announce",
            Some(a_secret),
            announce(
                "198.51.100.7:7946",
                json!({"dead_peers": ["no spaces allowed"]}),
            ),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_dead_peers");

    // A fresh gamer per question: a trial allows one open session.
    let mut gamers = 0;
    let mut offered = async || -> Vec<String> {
        gamers += 1;
        let email = format!("g{gamers}@example.com");
        s.register(&email).await;
        let g = s.login(&email).await;
        let (status, body) = s.session(&g, "cs2").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(offered().await.len(), 2);

    // A's failure detector holds B dead: B is no longer offered, nor given as a seed.
    let b_id = b["node_id"].as_str().unwrap();
    let (_, body) = s
        .post(
            "/v1/nodes/announce",
            Some(a_secret),
            announce("198.51.100.7:7946", json!({"dead_peers": [b_id]})),
        )
        .await;
    assert_eq!(body["seeds"], json!([]));
    assert_eq!(offered().await, vec![a["node_id"].as_str().unwrap()]);
    let node = |list: &serde_json::Value, id: &str| {
        list["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap()
            .clone()
    };
    let (_, list) = s.get_auth("/v1/admin/nodes", &admin).await;
    let b_view = node(&list, b_id);
    assert_eq!(b_view["live"], false);
    assert_eq!(b_view["sessions"], 3);
    assert_eq!(b_view["reported_dead_by"], json!([a["node_id"]]));
    assert_eq!(b_view["gossip_addr"], "198.51.100.8:7946");

    // A drains: not offered either; B recovers in A's eyes.
    s.post(
        "/v1/nodes/announce",
        Some(a_secret),
        announce(
            "198.51.100.7:7946",
            json!({"draining": true, "health": "degraded"}),
        ),
    )
    .await;
    assert_eq!(offered().await, vec![b_id]);
    let (_, list) = s.get_auth("/v1/admin/nodes", &admin).await;
    let a_view = node(&list, a["node_id"].as_str().unwrap());
    assert_eq!(a_view["draining"], true);
    assert_eq!(a_view["health"], "degraded");
    assert_eq!(a_view["live"], false);
    s.shutdown().await;
    env.cleanup().await;
}
