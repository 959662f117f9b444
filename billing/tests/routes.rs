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

/// A joined node: its id and secret.
struct Node {
    id: String,
    secret: String,
}

async fn join(s: &Server, name: &str) -> Node {
    let (body, _) = s.join(name).await;
    Node {
        id: body["node_id"].as_str().unwrap().to_owned(),
        secret: body["node_secret"].as_str().unwrap().to_owned(),
    }
}

/// Announces `node` with `extra` fields (targets, peers, …); returns the answer.
async fn announce(s: &Server, node: &Node, extra: Value) -> (StatusCode, Value) {
    let mut body = json!({
        "control_addr": "198.51.100.7:4433",
        "data_addr": "198.51.100.7:443",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    s.post("/v1/nodes/announce", Some(&node.secret), body).await
}

fn target(prefix: &str, rtt_us: u64, loss_permille: u32) -> Value {
    json!({"target": prefix, "rtt_us": rtt_us, "jitter_us": 500, "loss_permille": loss_permille})
}

/// The nodes billing offers for `game` (the preview a route screen shows).
async fn offered(s: &Server, gamer: &str, game: &str) -> Vec<Value> {
    let (status, body) = s.get_auth(&format!("/v1/routes/{game}"), gamer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["nodes"].as_array().unwrap().clone()
}

fn ids(nodes: &[Value]) -> Vec<&str> {
    nodes.iter().map(|n| n["id"].as_str().unwrap()).collect()
}

both!(announced_measurements_are_validated_stored_and_replaced);
async fn announced_measurements_are_validated_stored_and_replaced(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let admin = s.admin("root@example.com").await;
    let (status, body) = s
        .post(
            "/v1/admin/games",
            Some(&admin),
            arena(json!(["203.0.113.9:27015"])),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    s.register("g@example.com").await;
    let g = s.login("g@example.com").await;
    let a = join(&s, "fra-1").await;
    let b = join(&s, "ams-1").await;

    // Old nodes announce without measurements; the answer carries the catalog's probes.
    let (status, body) = announce(&s, &b, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // (The built-in catalog's probes come too: cs2's SDR relays, with no query protocol.)
    let probes = body["probes"].as_array().unwrap();
    // Each entry names the game's catalog id too (tickets carry it: nodes query their
    // sessions' servers of a game with its protocol).
    assert!(
        probes.iter().all(|p| p["game_id"].as_u64().is_some()),
        "{body}"
    );
    let of = |game: &str| {
        let mut p = probes.iter().find(|p| p["game"] == game).cloned()?;
        p.as_object_mut()?.remove("game_id");
        Some(p)
    };
    assert_eq!(
        of("arena"),
        Some(json!({"game": "arena", "query": "a2s", "addrs": ["203.0.113.9:27015"]}))
    );
    assert_eq!(
        of("cs2"),
        Some(json!({"game": "cs2", "addrs": ["155.133.248.36:27015", "162.254.197.36:27015"]}))
    );
    assert_eq!(probes.len(), 2, "{body}");

    let (status, body) = announce(
        &s,
        &a,
        json!({
            "targets": [target("203.0.113.0/24", 61_000, 0)],
            "peers": {b.id.as_str(): {"rtt_us": 12_000, "jitter_us": 300, "loss_permille": 0}},
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let nodes = offered(&s, &g, "arena").await;
    let a_view = nodes.iter().find(|n| n["id"] == a.id.as_str()).unwrap();
    assert_eq!(
        a_view["game_rtt"],
        json!([{"target": "203.0.113.0/24", "rtt_us": 61_000, "jitter_us": 500,
                "loss_permille": 0, "age_secs": 0}])
    );
    assert_eq!(
        a_view["mesh_rtt"],
        json!({b.id.as_str(): {"rtt_us": 12_000, "jitter_us": 300, "loss_permille": 0}})
    );

    // Bad values are refused with invalid_rtt and leave the stored set alone.
    for bad in [
        json!({"targets": [target("203.0.113.1/24", 1, 0)]}),
        json!({"targets": [target("203.0.112.0/23", 1, 0)]}),
        json!({"targets": [target("2001:db8::/64", 1, 0)]}),
        json!({"targets": [target("203.0.113.0/24", 60_000_001, 0)]}),
        json!({"targets": [target("203.0.113.0/24", 1, 1001)]}),
        json!({"targets": [{"target": "203.0.113.0/24", "rtt_us": -5}]}),
        json!({"targets": [{"target": "203.0.113.0/24", "rtt_us": 2.5}]}),
        json!({"targets": [target("203.0.113.0/24", 1, 0), target("203.0.113.0/24", 2, 0)]}),
        json!({"targets": (0..257).map(|i| target(&format!("10.0.{}.0/24", i % 256), 1, 0)).collect::<Vec<_>>()}),
        json!({"peers": {"not a node id": {"rtt_us": 1}}}),
        json!({"peers": {b.id.as_str(): {"rtt_us": 1, "jitter_us": 70_000_000}}}),
    ] {
        let (status, body) = announce(&s, &a, bad.clone()).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_rtt");
    }
    let nodes = offered(&s, &g, "arena").await;
    let a_view = nodes.iter().find(|n| n["id"] == a.id.as_str()).unwrap();
    assert_eq!(a_view["game_rtt"][0]["rtt_us"], 61_000);

    // The next announce replaces the whole set: the old target and peer are gone.
    let (status, body) = announce(
        &s,
        &a,
        json!({"targets": [target("198.51.100.0/24", 30_000, 5)]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let nodes = offered(&s, &g, "arena").await;
    let a_view = nodes.iter().find(|n| n["id"] == a.id.as_str()).unwrap();
    assert_eq!(a_view["game_rtt"].as_array().unwrap().len(), 1, "{a_view}");
    assert_eq!(a_view["game_rtt"][0]["target"], "198.51.100.0/24");
    assert!(a_view.get("mesh_rtt").is_none(), "{a_view}");

    // The session grant offers the same, and an old client's fields are all still there.
    let (status, body) = s.session(&g, "arena").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let granted = body["nodes"].as_array().unwrap();
    assert_eq!(ids(granted), vec![a.id.as_str(), b.id.as_str()]);
    for field in ["id", "server_name", "region", "control_addr", "data_addr"] {
        assert!(granted[1][field].is_string(), "{field}: {}", granted[1]);
    }
    assert_eq!(granted[0]["game_rtt"][0]["rtt_us"], 30_000);
    s.shutdown().await;
    env.cleanup().await;
}

both!(offered_nodes_are_ordered_by_what_the_mesh_measured);
async fn offered_nodes_are_ordered_by_what_the_mesh_measured(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let admin = s.admin("root@example.com").await;
    let (status, body) = s
        .post("/v1/admin/games", Some(&admin), arena(json!([])))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    s.register("g@example.com").await;
    let g = s.login("g@example.com").await;
    // Named so that name order is the reverse of RTT order.
    let a = join(&s, "a-far").await;
    let b = join(&s, "b-lossy").await;
    let c = join(&s, "c-unknown").await;
    let d = join(&s, "d-near").await;
    let gone = join(&s, "e-draining").await;
    let (status, body) = announce(
        &s,
        &a,
        json!({
            "targets": [target("203.0.113.0/24", 80_000, 0),
                        // Not the game's: never offered for it, however good.
                        target("192.0.2.0/24", 1_000, 0)],
            "peers": {
                b.id.as_str(): {"rtt_us": 9_000},
                gone.id.as_str(): {"rtt_us": 1_000},
                a.id.as_str(): {"rtt_us": 1},
                "node-never-joined": {"rtt_us": 1_000},
            },
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // 40 ms with 10 % loss costs 40 + 20 = 60 ms: better than 80, worse than 55.
    announce(
        &s,
        &b,
        json!({"targets": [target("198.51.100.0/24", 40_000, 100)]}),
    )
    .await;
    announce(&s, &c, json!({})).await;
    announce(
        &s,
        &d,
        json!({"targets": [target("203.0.113.0/24", 55_000, 0)]}),
    )
    .await;
    announce(&s, &gone, json!({"draining": true})).await;

    let nodes = offered(&s, &g, "arena").await;
    assert_eq!(
        ids(&nodes),
        vec![d.id.as_str(), b.id.as_str(), a.id.as_str(), c.id.as_str()]
    );
    let a_view = &nodes[2];
    assert_eq!(a_view["game_rtt"].as_array().unwrap().len(), 1, "{a_view}");
    assert_eq!(a_view["game_rtt"][0]["target"], "203.0.113.0/24");
    // Only the other offered nodes: not itself, not a draining or unknown node.
    assert_eq!(
        a_view["mesh_rtt"],
        json!({b.id.as_str(): {"rtt_us": 9_000, "jitter_us": 0, "loss_permille": 0}})
    );
    assert!(nodes[3].get("game_rtt").is_none());
    // The demo game's destinations are loopback: nobody measured them.
    let demo = offered(&s, &g, "demo").await;
    assert!(demo.iter().all(|n| n.get("game_rtt").is_none()), "{demo:?}");
    assert_eq!(
        ids(&demo),
        vec![a.id.as_str(), b.id.as_str(), c.id.as_str(), d.id.as_str()]
    );

    // Priority still comes first.
    let (status, body) = s
        .send(
            Method::PATCH,
            &format!("/v1/admin/nodes/{}", c.id),
            Some(&admin),
            Some(json!({"priority": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(offered(&s, &g, "arena").await[0]["id"], c.id.as_str());

    // Stale (> 5 min) measurements are not offered: D falls back among the unknowns.
    env.sql(&format!(
        "UPDATE node_rtt SET updated_at = updated_at - 301 WHERE node_id = '{}'",
        d.id
    ))
    .await;
    let nodes = offered(&s, &g, "arena").await;
    assert_eq!(
        ids(&nodes),
        vec![c.id.as_str(), b.id.as_str(), a.id.as_str(), d.id.as_str()]
    );
    assert!(nodes[3].get("game_rtt").is_none(), "{}", nodes[3]);
    s.shutdown().await;
    env.cleanup().await;
}

both!(admins_see_every_measurement_with_its_age);
async fn admins_see_every_measurement_with_its_age(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let admin = s.admin("root@example.com").await;
    let a = join(&s, "fra-1").await;
    let b = join(&s, "ams-1").await;
    announce(
        &s,
        &a,
        json!({
            "targets": [target("203.0.113.0/24", 61_000, 3), target("2001:db8:7::/48", 9_000, 0)],
            "peers": {b.id.as_str(): {"rtt_us": 12_000, "jitter_us": 300}},
        }),
    )
    .await;
    announce(&s, &b, json!({})).await;
    env.sql(&format!(
        "UPDATE node_rtt SET updated_at = updated_at - 600 WHERE node_id = '{}' AND key = '2001:db8:7::/48'",
        a.id
    ))
    .await;

    let (status, list) = s.get_auth("/v1/admin/nodes", &admin).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let a_view = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == a.id.as_str())
        .unwrap()
        .clone();
    let targets = a_view["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{a_view}");
    let fresh = targets
        .iter()
        .find(|t| t["target"] == "203.0.113.0/24")
        .unwrap();
    assert_eq!(fresh["rtt_us"], 61_000);
    assert_eq!(fresh["loss_permille"], 3);
    assert_eq!(fresh["fresh"], true);
    assert!(fresh["age_secs"].as_u64().unwrap() < 60);
    let stale = targets
        .iter()
        .find(|t| t["target"] == "2001:db8:7::/48")
        .unwrap();
    assert_eq!(stale["fresh"], false);
    assert!(stale["age_secs"].as_u64().unwrap() >= 600);
    assert_eq!(
        a_view["peers"],
        json!([{"peer": b.id.as_str(), "rtt_us": 12_000, "jitter_us": 300,
                "loss_permille": 0, "age_secs": fresh["age_secs"], "fresh": true}])
    );
    let b_view = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == b.id.as_str())
        .unwrap();
    assert_eq!(b_view["targets"], json!([]));

    let (status, detail) = s
        .get_auth(&format!("/v1/admin/nodes/{}", a.id), &admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["targets"], a_view["targets"]);
    assert_eq!(detail["peers"], a_view["peers"]);

    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "plg_billing_fresh_target_rtts 1",
        "plg_billing_nodes_with_target_rtts 1",
        "plg_billing_fresh_peer_rtts 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    s.shutdown().await;
    env.cleanup().await;
}
