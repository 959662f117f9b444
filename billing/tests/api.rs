//! End-to-end tests of the billing HTTP API (accounts, sessions, tickets, nodes), each on
//! SQLite and on PostgreSQL: a real server on 127.0.0.1:0, driven with reqwest.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use plg_proto::ticket::{Destination, TicketVerifier};
use reqwest::StatusCode;
use serde_json::json;

both!(healthz_and_unknown_route);
async fn healthz_and_unknown_route(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let (status, body) = s.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
    let (status, body) = s.get("/v1/nope").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    s.shutdown().await;
    env.cleanup().await;
}

both!(register_login_session_ticket_verifies);
async fn register_login_session_ticket_verifies(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let (status, body) = s
        .post(
            "/v1/accounts",
            None,
            json!({"email": " Gamer@Example.com ", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["email"], "gamer@example.com");
    let account_id = body["account_id"].as_i64().unwrap();
    let token = s.login("GAMER@example.com").await;

    let (status, mesh) = s.get("/v1/mesh").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        mesh["ca_cert_pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(mesh["ticket_keys"].as_array().unwrap().len(), 1);
    let mut verifier = verifier_from_mesh(&mesh);

    let before = unix_now();
    let (status, body) = s.session(&token, "cs2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["game"]["slug"], "cs2");
    assert_eq!(body["game"]["name"], "Counter-Strike 2");
    assert_eq!(body["nodes"], json!([]));
    let destinations: Vec<Destination> =
        serde_json::from_value(body["destinations"].clone()).unwrap();
    assert!(!destinations.is_empty());

    let bytes = STANDARD.decode(body["ticket"].as_str().unwrap()).unwrap();
    let ticket = verifier
        .verify(&bytes, unix_now())
        .expect("ticket verifies with /v1/mesh keys");
    assert_eq!(
        ticket.session_id.to_string(),
        body["session_id"].as_str().unwrap()
    );
    assert_ne!(ticket.session_id, 0);
    assert_eq!(ticket.account_id, account_id as u64);
    assert_eq!(ticket.destinations, destinations);
    assert_eq!(ticket.expires_at, body["expires_at"].as_u64().unwrap());
    assert!(ticket.issued_at >= before && ticket.expires_at == ticket.issued_at + 7200);
    assert_eq!(
        (ticket.plan, ticket.path_limit, ticket.bandwidth_kbps),
        (0, 2, 0)
    );
    assert_eq!(ticket.key_id, s.billing.ticket_verifying_key().0);
    // A ticket from billing's real key must not verify under some other key with that id.
    let mut stranger = TicketVerifier::new([(
        ticket.key_id,
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key(),
    )]);
    assert!(stranger.verify(&bytes, unix_now()).is_err());

    // Two sessions get distinct ids.
    let (_, again) = s.session(&token, "cs2").await;
    assert_ne!(again["session_id"], body["session_id"]);

    // A route preview names the game's destinations and nodes but issues no ticket and
    // takes no slot (two sessions are open now; the preview still answers).
    let (status, preview) = s.get_auth("/v1/routes/cs2", &token).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["game"]["slug"], "cs2");
    assert_eq!(preview["destinations"], body["destinations"]);
    assert!(preview.get("ticket").is_none() && preview.get("session_id").is_none());
    let (status, err) = s.get_auth("/v1/routes/no-such-game", &token).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "unknown_game");
    let (status, _) = s.get("/v1/routes/cs2").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The trial allows two sessions at once: a third waits until one is stopped.
    let (status, third) = s.session(&token, "demo").await;
    assert_error(
        status,
        &third,
        StatusCode::CONFLICT,
        "session_limit_reached",
    );
    let stop = format!(
        "/v1/sessions/{}/stop",
        again["session_id"].as_str().unwrap()
    );
    let (status, stopped) = s.post(&stop, Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["status"], "ended");

    // The config's extra game (loopback, for the local demo) is offered too.
    let (status, body) = s.session(&token, "demo").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["destinations"], json!(["127.0.0.1/32:40000-40010"]));

    let (status, games) = s.get("/v1/games").await;
    assert_eq!(status, StatusCode::OK);
    let slugs: Vec<&str> = games["games"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["slug"].as_str().unwrap())
        .collect();
    assert!(
        slugs.contains(&"cs2") && slugs.contains(&"demo"),
        "{slugs:?}"
    );
    s.shutdown().await;
    env.cleanup().await;
}

both!(registration_rules);
async fn registration_rules(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    s.register("dup@example.com").await;
    let (status, body) = s
        .post(
            "/v1/accounts",
            None,
            json!({"email": "DUP@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "email_taken");
    let (status, body) = s
        .post(
            "/v1/accounts",
            None,
            json!({"email": "no-at-sign", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_email");
    let (status, body) = s
        .post(
            "/v1/accounts",
            None,
            json!({"email": "ok@example.com", "password": "short"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "weak_password");
    s.shutdown().await;
    env.cleanup().await;
}

both!(wrong_password_and_unknown_email_look_the_same);
async fn wrong_password_and_unknown_email_look_the_same(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    s.register("user@example.com").await;
    let (status, wrong) = s
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "user@example.com", "password": "not the password"}),
        )
        .await;
    assert_error(
        status,
        &wrong,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    let (status, unknown) = s
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "ghost@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(
        status,
        &unknown,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert_eq!(wrong, unknown);
    s.shutdown().await;
    env.cleanup().await;
}

both!(sessions_require_a_valid_token);
async fn sessions_require_a_valid_token(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let id = s.register("user@example.com").await;
    // No header.
    let resp = s
        .http
        .post(s.url("/v1/sessions"))
        .json(&json!({"game": "cs2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let (status, body) = read(resp).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    // Garbage.
    let (status, body) = s.session("not.a.jwt", "cs2").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    // Well-formed, but signed with another secret.
    let now = unix_now();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": id.to_string(), "iat": now, "exp": now + 600, "role": "user"}),
        &jsonwebtoken::EncodingKey::from_secret(b"guessed secret guessed secret!!!"),
    )
    .unwrap();
    let (status, body) = s.session(&forged, "cs2").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    // Unknown game with a good token.
    let token = s.login("user@example.com").await;
    let (status, body) = s.session(&token, "no-such-game").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_game");
    // Listed but not verified (placeholder ranges in games.toml): refused, never a ticket.
    let (status, body) = s.session(&token, "rust").await;
    assert_error(status, &body, StatusCode::CONFLICT, "game_not_ready");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not verified"),
        "{body}"
    );
    s.shutdown().await;
    env.cleanup().await;
}

both!(banned_accounts_are_refused);
async fn banned_accounts_are_refused(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    s.register("cheater@example.com").await;
    let token = s.login("cheater@example.com").await;
    s.billing
        .set_banned("Cheater@example.com", true)
        .await
        .unwrap();
    // An access token issued before the ban stops working for sessions at once.
    let (status, body) = s.session(&token, "cs2").await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "account_banned");
    let (status, body) = s
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "cheater@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "account_banned");
    // Every route that takes a token says 403, not just sessions.
    for path in ["/v1/me", "/v1/sessions", "/v1/payments", "/v1/subscription"] {
        let (status, body) = s.get_auth(path, &token).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "account_banned");
    }
    s.billing
        .set_banned("cheater@example.com", false)
        .await
        .unwrap();
    // The ban logged the account out everywhere: the old token is dead, a new login works.
    let (status, body) = s.session(&token, "cs2").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    let token = s.login("cheater@example.com").await;
    let (status, body) = s.session(&token, "cs2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        s.billing
            .set_banned("nobody@example.com", true)
            .await
            .is_err()
    );
    s.shutdown().await;
    env.cleanup().await;
}

both!(malformed_requests_get_json_errors);
async fn malformed_requests_get_json_errors(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let send = |body: Vec<u8>, content_type: &'static str| {
        s.http
            .post(s.url("/v1/accounts"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let (status, body) = read(
        send(b"{\"email\": ".to_vec(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = read(
        send(b"{\"email\": 5}".to_vec(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = read(send(b"{}".to_vec(), "text/plain").await.unwrap()).await;
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let mut big = b"{\"email\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 70 * 1024));
    big.extend(b"\", \"password\": \"x\"}");
    let (status, body) = read(send(big, "application/json").await.unwrap()).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    s.shutdown().await;
    env.cleanup().await;
}

both!(join_tokens_are_single_use_and_expire);
async fn join_tokens_are_single_use_and_expire(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let join = |token: String, key_pem: String| {
        s.post(
            "/v1/nodes/join",
            None,
            json!({"token": token, "name": "relay-1", "region": "eu", "public_key_pem": key_pem}),
        )
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let token = s
        .billing
        .create_join_token(Duration::from_secs(600))
        .await
        .unwrap();
    // Safe to paste after `--token`: never mistaken for a flag.
    assert!(token.starts_with("plgjoin_") && token.len() > 40, "{token}");

    // A bad key is refused without burning the token.
    let (status, body) = join(
        token.clone(),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_public_key");

    let (status, body) = join(token.clone(), key.public_key_pem()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let node_id = body["node_id"].as_str().unwrap();
    assert_eq!(body["server_name"], format!("{node_id}.nodes.plg"));
    assert!(!body["node_secret"].as_str().unwrap().is_empty());
    let (_, mesh) = s.get("/v1/mesh").await;
    assert_eq!(body["ca_cert_pem"], mesh["ca_cert_pem"]);
    assert_eq!(body["ticket_keys"], mesh["ticket_keys"]);

    let (status, body) = join(token, key.public_key_pem()).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_join_token",
    );
    let expired = s.billing.create_join_token(Duration::ZERO).await.unwrap();
    let (status, body) = join(expired, key.public_key_pem()).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_join_token",
    );
    let (status, body) = join("made-up".into(), key.public_key_pem()).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_join_token",
    );
    let (status, body) = s
        .post(
            "/v1/nodes/join",
            None,
            json!({"token": "x", "name": "bad name!", "region": "eu", "public_key_pem": key.public_key_pem()}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_name");
    s.shutdown().await;
    env.cleanup().await;
}

both!(node_certificate_chains_to_the_mesh_ca);
async fn node_certificate_chains_to_the_mesh_ca(db: Db) {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    let env = Env::new(db).await;
    let s = env.start().await;
    let (joined, key) = s.join("relay-a").await;
    let ca =
        CertificateDer::from_pem_slice(joined["ca_cert_pem"].as_str().unwrap().as_bytes()).unwrap();
    let cert =
        CertificateDer::from_pem_slice(joined["cert_pem"].as_str().unwrap().as_bytes()).unwrap();
    // The certificate certifies the node's own key (billing never saw the private half).
    let raw = key.public_key_raw();
    assert!(cert.as_ref().windows(raw.len()).any(|w| w == raw));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let name = ServerName::try_from(joined["server_name"].as_str().unwrap().to_owned()).unwrap();
    verifier
        .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
        .expect("node cert chains to the mesh CA and names its server_name");
    let other = ServerName::try_from("node-other.nodes.plg").unwrap();
    assert!(
        verifier
            .verify_server_cert(&cert, &[], &other, &[], UnixTime::now())
            .is_err()
    );
    s.shutdown().await;
    env.cleanup().await;
}

both!(announced_nodes_are_offered_in_sessions);
async fn announced_nodes_are_offered_in_sessions(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    let (joined, _key) = s.join("relay-b").await;
    let secret = joined["node_secret"].as_str().unwrap();
    let addrs = json!({"control_addr": "198.51.100.7:4433", "data_addr": "198.51.100.7:443"});

    let (status, body) = s
        .post("/v1/nodes/announce", Some("wrong-secret"), addrs.clone())
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_node_secret",
    );
    let (status, body) = s.post("/v1/nodes/announce", None, addrs.clone()).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_node_secret",
    );
    let (status, body) = s
        .post(
            "/v1/nodes/announce",
            Some(secret),
            json!({"control_addr": "0.0.0.0:1", "data_addr": "198.51.100.7:443"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_address");

    // Joined but not yet announced: not offered.
    s.register("user@example.com").await;
    let token = s.login("user@example.com").await;
    let (_, body) = s.session(&token, "cs2").await;
    assert_eq!(body["nodes"], json!([]));

    let (status, body) = s.post("/v1/nodes/announce", Some(secret), addrs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["seeds"], json!([]), "no other node gossips yet");
    let (status, body) = s.session(&token, "cs2").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body["nodes"],
        json!([{
            "id": joined["node_id"],
            "name": "relay-b",
            "server_name": joined["server_name"],
            "region": "eu-central",
            "control_addr": "198.51.100.7:4433",
            "data_addr": "198.51.100.7:443",
        }])
    );
    s.shutdown().await;
    env.cleanup().await;
}

both!(restart_keeps_ca_keys_and_accounts);
async fn restart_keeps_ca_keys_and_accounts(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    s.register("stay@example.com").await;
    let token = s.login("stay@example.com").await;
    let (_, mesh_before) = s.get("/v1/mesh").await;
    s.shutdown().await;

    let s = env.start().await;
    let (_, mesh_after) = s.get("/v1/mesh").await;
    assert_eq!(
        mesh_before, mesh_after,
        "CA and ticket keys survive a restart"
    );
    // The JWT secret survived too: the old token still works.
    let (status, body) = s.session(&token, "cs2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let bytes = STANDARD.decode(body["ticket"].as_str().unwrap()).unwrap();
    verifier_from_mesh(&mesh_before)
        .verify(&bytes, unix_now())
        .unwrap();
    s.login("stay@example.com").await;
    s.shutdown().await;

    #[cfg(unix)]
    if db == Db::Sqlite {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.dir.path().join("billing.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "database holding keys must be owner-only, got {mode:o}"
        );
    }
    env.cleanup().await;
}

both!(a_running_session_is_renewed_in_place);
async fn a_running_session_is_renewed_in_place(db: Db) {
    let env = Env::new(db).await;
    let s = env.start().await;
    s.register("renew@example.com").await;
    let token = s.login("renew@example.com").await;
    s.register("other@example.com").await;
    let other = s.login("other@example.com").await;
    let (_, mesh) = s.get("/v1/mesh").await;
    let mut verifier = verifier_from_mesh(&mesh);

    let (status, first) = s.session(&token, "cs2").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["session_id"].as_str().unwrap();
    let renew = format!("/v1/sessions/{id}/renew");
    let (status, renewed) = s.post(&renew, Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!(renewed["session_id"], first["session_id"]);
    assert_eq!(renewed["game"]["slug"], "cs2");
    let bytes = STANDARD
        .decode(renewed["ticket"].as_str().unwrap())
        .unwrap();
    let ticket = verifier
        .verify(&bytes, unix_now())
        .expect("renewed ticket verifies");
    assert_eq!(ticket.session_id.to_string(), id);
    assert!(ticket.expires_at >= first["expires_at"].as_u64().unwrap());
    assert_eq!(ticket.expires_at, renewed["expires_at"].as_u64().unwrap());

    // Renewing is not a second session: the trial's limit of two still leaves room for one.
    let (status, body) = s.session(&token, "cs2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Someone else's session does not exist for you; a stopped one is not renewed.
    let (status, body) = s.post(&renew, Some(&other), json!({})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_session");
    let (status, body) = s.post(&renew, None, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = s
        .post("/v1/sessions/12345/renew", Some(&token), json!({}))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_session");
    s.post(&format!("/v1/sessions/{id}/stop"), Some(&token), json!({}))
        .await;
    let (status, body) = s.post(&renew, Some(&token), json!({})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "session_ended");
    s.shutdown().await;
    env.cleanup().await;
}
