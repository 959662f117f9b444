//! Route intelligence (issue 15), billing's part: catalog probes and query kinds, nodes'
//! RTT reports on announce, and what billing offers clients from them. Each test runs on
//! SQLite and on PostgreSQL against a real server on 127.0.0.1:0.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A public test game whose servers are in TEST-NET-3 (the node policy treats documentation
/// ranges as public, so they stand in for real servers).
fn arena(probes: Value) -> Value {
    json!({
        "slug": "arena", "name": "Arena", "query": "a2s",
        "destinations": ["203.0.113.0/24:27015-27020", "198.51.100.0/25:7777"],
        "probes": probes, "probes_source": "test fixture",
    })
}

both!(catalog_probes_are_validated_and_served);
async fn catalog_probes_are_validated_and_served(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let admin = s.admin("root@example.com").await;

    for (probes, code, needle) in [
        (json!(["nope"]), "invalid_probes", "not an ip:port"),
        (json!(["127.0.0.1:27015"]), "invalid_probes", "not a public"),
        (json!(["10.1.2.3:27015"]), "invalid_probes", "not a public"),
        (json!(["192.0.2.1:27015"]), "invalid_probes", "outside"),
        (json!(["203.0.113.9:27999"]), "invalid_probes", "outside"),
        (
            json!(["203.0.113.9:27015", "203.0.113.9:27015"]),
            "invalid_probes",
            "twice",
        ),
        (
            json!(
                (1..=9)
                    .map(|i| format!("203.0.113.{i}:27015"))
                    .collect::<Vec<_>>()
            ),
            "invalid_probes",
            "at most 8",
        ),
    ] {
        let (status, body) = s
            .post("/v1/admin/games", Some(&admin), arena(probes.clone()))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, code);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{probes}: {message}");
    }
    let mut bad_query = arena(json!([]));
    bad_query["query"] = json!("icmp");
    let (status, body) = s.post("/v1/admin/games", Some(&admin), bad_query).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    let mut no_source = arena(json!(["203.0.113.9:27015"]));
    no_source["probes_source"] = Value::Null;
    let (status, body) = s.post("/v1/admin/games", Some(&admin), no_source).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_probes");

    let (status, created) = s
        .post(
            "/v1/admin/games",
            Some(&admin),
            arena(json!(["203.0.113.9:27015", "198.51.100.5:7777"])),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["query"], "a2s");
    assert_eq!(
        created["probes"],
        json!(["203.0.113.9:27015", "198.51.100.5:7777"])
    );
    assert_eq!(created["probes_source"], "test fixture");

    // The grant's game names its query protocol; a game without one has no `query`.
    s.register("g@example.com").await;
    let g = s.login("g@example.com").await;
    let (status, body) = s.session(&g, "arena").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["game"]["query"], "a2s");
    let (_, preview) = s.get_auth("/v1/routes/demo", &g).await;
    assert!(preview["game"].get("query").is_none(), "{preview}");

    // PUT replaces: no probes, no query.
    let (status, edited) = s
        .send(
            Method::PUT,
            "/v1/admin/games/arena",
            Some(&admin),
            Some(json!({"name": "Arena", "destinations": ["203.0.113.0/24:27015"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert!(edited.get("probes").is_none() && edited.get("query").is_none());
    let (status, body) = s
        .send(
            Method::PUT,
            "/v1/admin/games/arena",
            Some(&admin),
            Some(arena(json!(["127.0.0.1:27015"]))),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_probes");
    s.shutdown().await;

    // The demo/test-only setting lets private probes in (the local mesh's echo server).
    let s = env
        .start_with(|c| {
            c.allow_private_probes = true;
            c.extra_games[0].probes = vec!["127.0.0.1:40001".parse().unwrap()];
            c.extra_games[0].probes_source = Some("the test's echo server".into());
        })
        .await;
    let (_, demo) = s.get("/v1/games?search=demo-game").await;
    assert_eq!(demo["games"][0]["probes"], json!(["127.0.0.1:40001"]));
    s.shutdown().await;
    // Without it, a config naming a private probe is refused at start-up.
    let mut config = env.config();
    config.extra_games[0].probes = vec!["127.0.0.1:40001".parse().unwrap()];
    config.extra_games[0].probes_source = Some("x".into());
    let err = plg_billing::Billing::open(config).await.unwrap_err();
    assert!(format!("{err:#}").contains("not a public"), "{err:#}");
    env.cleanup().await;
}
