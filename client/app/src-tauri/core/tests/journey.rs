//! The gamer's journey through the app's handlers against a real local mesh (billing on
//! SQLite, two relay nodes, an echo game server; all on loopback): sign up with the trial,
//! browse games, see the route, connect, receive live numbers, disconnect with a summary.

use std::time::Duration;

use plg_app_core::session::PathState;
use plg_app_core::{App, AppEvent, CmdError, Command, Language, Reply};
use plg_sim::local_mesh::LocalMesh;
use serde_json::{Value, json};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(20);

/// A call as the window makes it: a command name and JSON arguments in, JSON out.
trait CallJson {
    async fn call(&self, cmd: &str, args: Value) -> Result<Value, CmdError>;
}

impl CallJson for App {
    async fn call(&self, cmd: &str, args: Value) -> Result<Value, CmdError> {
        let reply = self.dispatch(cmd, args).await?;
        Ok(serde_json::to_value(reply).expect("replies serialize"))
    }
}

/// Waits (bounded) for the first event `pick` accepts.
async fn next<T>(
    rx: &mut broadcast::Receiver<AppEvent>,
    mut pick: impl FnMut(&AppEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if let Some(t) = pick(&ev) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("event channel: {e}"),
            }
        }
    })
    .await
    .expect("event within the time limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_connect_live_numbers_disconnect() {
    let mut mesh = LocalMesh::start().await.unwrap();
    mesh.add_node("node-2").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(dir.path().to_owned(), &mesh.billing_url);
    let mut events = app.subscribe();
    let url = mesh.billing_url.clone();

    let e = app.call("games", Value::Null).await.unwrap_err();
    assert_eq!(e.code, "not_signed_in");
    let e = app
        .call(
            "sign_in",
            json!({"billing_url": url, "email": "ghost@demo.plg", "password": "wrong password"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "invalid_credentials", "{e:?}");
    assert!(
        !e.message.contains("wrong password"),
        "the password never shows in errors"
    );
    let e = app.call("nope", Value::Null).await.unwrap_err();
    assert_eq!(e.code, "unknown_command");

    let email = "journey@demo.plg";
    app.call(
        "sign_in",
        json!({"billing_url": url, "email": email, "password": "correct horse battery staple", "register": true, "trial": true}),
    )
    .await
    .unwrap();
    let state = app.call("state", Value::Null).await.unwrap();
    assert_eq!(state["account"]["email"], email);
    let me = app.call("me", Value::Null).await.unwrap();
    assert_eq!(me["subscription"]["plan"], "trial");
    assert_eq!(me["subscription"]["status"], "active");

    let all = app.call("games", json!({})).await.unwrap();
    assert!(all["games"].as_array().unwrap().len() > 10);
    assert!(!all["categories"].as_array().unwrap().is_empty());
    let demo = app.call("games", json!({"search": "DEMO"})).await.unwrap();
    let list = demo["games"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["slug"], "demo");
    assert_eq!(list[0]["running"], false);

    let route = app.call("route", json!({"game": "demo"})).await.unwrap();
    let nodes = route["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{route}");
    assert_eq!(nodes[0]["recommended"], true);
    assert_eq!(nodes[1]["recommended"], false);
    // Both demo nodes answered the route screen's live probes.
    assert!(
        nodes
            .iter()
            .all(|n| n["ping_ms"].as_f64().is_some_and(|p| p > 0.0)),
        "{route}"
    );
    assert_eq!(route["measurable"], true);
    // Two paths: the first straight to the exit, the second through the other node.
    let exit = nodes[0]["id"].as_str().unwrap();
    let relay = nodes[1]["id"].as_str().unwrap();
    assert_eq!(route["relays"][0], Value::Null, "{route}");
    assert_eq!(route["relays"][1]["id"], relay, "{route}");
    // Nodes are shown by the names their operators gave at join, not by hex ids.
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert!(
        names.iter().all(|n| n.starts_with("node-")
            && !n.contains(relay)
            && !n.contains(nodes[0]["id"].as_str().unwrap())),
        "{route}"
    );
    assert!(
        !route["summary"]
            .as_str()
            .unwrap()
            .contains(nodes[0]["id"].as_str().unwrap()),
        "{route}"
    );
    assert_eq!(route["regions"], json!(["local"]), "{route}");
    // The region picker: a region with no node is refused with a sentence naming the others,
    // and nothing is left open at billing.
    let e = app
        .call("connect", json!({"game": "demo", "region": "mars"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "no_node", "{e:?}");
    assert!(
        e.message.contains("mars") && e.message.contains("local"),
        "{e:?}"
    );

    // As the window does: connect through the route's recommended exit. (Without `node`,
    // connect ranks the two loopback nodes again and may pick the other one.)
    let info = app
        .call("connect", json!({"game": "demo", "node": exit}))
        .await
        .unwrap();
    assert_eq!(info["game"], "demo");
    assert_eq!(info["probing"], true);
    assert_eq!(info["paths"], 2);
    assert_eq!(info["node"]["id"], exit);
    assert_eq!(info["relays"][0], Value::Null, "{info}");
    assert_eq!(info["relays"][1]["id"], relay, "{info}");
    assert_eq!(info["node"]["name"], nodes[0]["name"], "{info}");
    let e = app
        .call("connect", json!({"game": "demo"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "already_connected");

    // Live numbers: echo probes answered through the session, both paths answering.
    let tick = next(&mut events, |ev| match ev {
        AppEvent::Tick(t)
            if t.accelerated
                .is_some_and(|a| a.probes > 0 && a.loss_pct < 100.0)
                && t.direct.is_some()
                && t.packets_down > 0
                && t.paths.iter().filter(|p| p.state == PathState::Up).count() == 2 =>
        {
            Some(t.clone())
        }
        _ => None,
    })
    .await;
    assert!(tick.node_rtt_ms.is_some());
    // The second path's frames crossed the relay node, both ways.
    let relayed = std::iter::once(&mesh.node)
        .chain(&mesh.extra_nodes)
        .find(|n| n.node_id == relay)
        .map(|n| {
            let m = &n.metrics;
            use std::sync::atomic::Ordering::Relaxed;
            (m.relayed_up.load(Relaxed), m.relayed_down.load(Relaxed))
        })
        .unwrap();
    assert!(
        relayed.0 > 0 && relayed.1 > 0,
        "relay {relay} carried {relayed:?}"
    );
    let later = next(&mut events, |ev| match ev {
        AppEvent::Tick(t) if t.packets_up > tick.packets_up => Some(t.clone()),
        _ => None,
    })
    .await;
    assert!(later.secs > tick.secs);
    // Which path delivered each frame first is counted per path.
    assert!(
        later.paths.iter().map(|p| p.first).sum::<u64>() >= later.packets_down,
        "{later:?}"
    );

    let summary = app.call("disconnect", Value::Null).await.unwrap();
    assert!(summary["packets_up"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["after"]["samples"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["before"]["samples"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(summary["ended_by"], "user");
    next(&mut events, |ev| {
        matches!(ev, AppEvent::Ended(_)).then_some(())
    })
    .await;
    assert!(matches!(
        app.handle(Command::Disconnect).await,
        Ok(Reply::Disconnect(None))
    ));
    // The session is in the history, with its before/after.
    let history = app.call("history", json!({"game": "demo"})).await.unwrap();
    let h = &history[0];
    assert_eq!(h["game"], "demo", "{history}");
    assert!(
        h["direct_ms"].as_f64().is_some() && h["plg_ms"].as_f64().is_some(),
        "{history}"
    );
    assert_eq!(h["exit"], info["node"]["name"], "{history}");
    assert_eq!(
        app.call("history", json!({"game": "cs2"})).await.unwrap(),
        json!([])
    );
    // Billing saw two sessions, both ended: the refused region's (given back at once) and
    // the one played.
    let usage = &app.call("me", Value::Null).await.unwrap()["usage"];
    assert_eq!(usage["sessions_total"], 2, "{usage}");
    assert_eq!(usage["sessions_open"], 0, "{usage}");

    // Settings: validated, saved, and seen by a new instance with the same login.
    let mut s = app.settings().await;
    s.paths = 9;
    assert_eq!(
        app.call("save_settings", json!(s)).await.unwrap_err().code,
        "bad_settings"
    );
    s.paths = 1;
    s.language = Language::Ru;
    app.call("save_settings", json!(s)).await.unwrap();
    assert_eq!(app.settings().await.last_game, "demo");
    let again = App::new(dir.path().to_owned(), "http://unused");
    let st = again.call("state", Value::Null).await.unwrap();
    assert_eq!(st["settings"]["language"], "ru");
    assert_eq!(st["settings"]["paths"], 1);
    assert_eq!(st["account"]["email"], email);
    assert_eq!(again.status_line().await, "Не подключено");

    // Billing goes away: a new instance still shows the catalog saved at the last fetch,
    // marked offline, and errors read as sentences, not library chains.
    mesh.stop().await;
    let offline = App::new(dir.path().to_owned(), "http://unused");
    let games = offline.call("games", json!({})).await.unwrap();
    assert!(games["offline_since"].as_u64().is_some(), "{games}");
    assert!(games["games"].as_array().unwrap().len() > 10);
    let e = offline.call("me", Value::Null).await.unwrap_err();
    assert_eq!(e.code, "billing_unreachable");
    assert_eq!(e.message, plg_app_core::error::UNREACHABLE);
    // Without a saved catalog there is nothing to show: the error says so plainly.
    std::fs::remove_file(dir.path().join("catalog.json")).unwrap();
    let bare = App::new(dir.path().to_owned(), "http://unused");
    let e = bare.call("games", json!({})).await.unwrap_err();
    assert_eq!(e.code, "billing_unreachable");
    assert!(!e.message.contains("error sending request"), "{e:?}");

    app.call("sign_out", Value::Null).await.unwrap();
    assert!(app.call("state", Value::Null).await.unwrap()["account"].is_null());
}
