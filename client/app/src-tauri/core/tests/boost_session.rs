//! The FPS boost through the app's handlers, on Linux: a real local mesh whose demo game's
//! process name is this test's own (so detection finds a running game: this process), a real
//! `gamemoded` on a private session bus, and the app connecting to the game — with the setting
//! off nothing is registered; with it on the game's process is registered for the session's
//! lifetime and unregistered by Disconnect.
//!
//! One test in its own binary: it points `DBUS_SESSION_BUS_ADDRESS` at the private bus before
//! any other thread exists, so the app finds GameMode exactly as on a desktop.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use plg_app_core::boost::gamemode::{GameMode, Status};
use plg_app_core::{App, Settings};
use plg_sim::local_mesh::{DEMO_PASSWORD, LocalMesh};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// Kills a child process when dropped (the test's panics included).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn connect_registers_the_detected_game_with_gamemode_only_when_the_setting_is_on() {
    let mut bus = Reaped(
        Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon (Debian's dbus-daemon; client/app/ci.sh installs it)"),
    );
    let mut addr = String::new();
    // dbus-daemon prints its address at once, or exits (EOF): no unbounded wait.
    BufReader::new(bus.0.stdout.take().unwrap())
        .read_line(&mut addr)
        .unwrap();
    let addr = addr.trim().to_owned();
    assert!(addr.starts_with("unix:"), "dbus-daemon printed {addr:?}");
    // SAFETY: no other thread exists yet in this test binary (one test, runtime not built).
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &addr)
    };
    let _daemon = Reaped(
        Command::new("gamemoded")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gamemoded (Debian's gamemode package; client/app/ci.sh installs it)"),
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(journey(&addr));
}

async fn call(app: &App, cmd: &str, args: Value) -> Value {
    let reply = app
        .dispatch(cmd, args)
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {} ({})", e.message, e.code));
    serde_json::to_value(reply).unwrap()
}

/// Waits (bounded) until GameMode says `want` for `pid`.
async fn status_becomes(gm: &mut GameMode, pid: u32, want: Status) {
    let mut last = None;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            last = gm.status(pid).await.ok();
            if last == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "GameMode status of {pid}: {last:?}, wanted {want:?}"
    );
}

async fn journey(addr: &str) {
    let mesh = LocalMesh::start().await.unwrap();
    // The demo game is "running": its catalog entry names this test binary's process.
    let admin = "admin@demo.plg";
    mesh.gamer(admin).await.unwrap();
    mesh.billing.set_role(admin, "admin").await.unwrap();
    let (token, _) = plg_client::BillingClient::new(&mesh.billing_url)
        .login(admin, DEMO_PASSWORD)
        .await
        .unwrap();
    let me = std::env::current_exe().unwrap();
    let name = me.file_stem().unwrap().to_str().unwrap().to_owned();
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/admin/games/demo", mesh.billing_url))
        .bearer_auth(token)
        .json(&json!({
            "name": "Local demo game",
            "destinations": [format!("127.0.0.1/32:{}", mesh.game.addr.port())],
            "process_names": [name],
            "category": "demo",
            "regions": ["local"],
        }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    let dir = tempfile::tempdir().unwrap();
    let app = App::new(dir.path().to_owned(), &mesh.billing_url);
    call(
        &app,
        "sign_in",
        json!({"billing_url": mesh.billing_url, "email": "boost@demo.plg",
               "password": "correct horse battery staple", "register": true, "trial": true}),
    )
    .await;
    let games = call(&app, "games", json!({"search": "demo"})).await;
    assert_eq!(games["games"][0]["slug"], "demo", "{games}");

    let game = std::process::id();
    let mut observer = GameMode::at(addr);
    status_becomes(&mut observer, game, Status::Inactive).await;

    // Off by default: a session changes nothing.
    assert!(!app.settings().await.fps_boost);
    call(&app, "connect", json!({"game": "demo"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(observer.status(game).await.unwrap(), Status::Inactive);
    call(&app, "disconnect", Value::Null).await;

    // On: the detected game's process is registered while the session runs.
    let s = Settings {
        fps_boost: true,
        ..app.settings().await
    };
    call(&app, "save_settings", json!(s)).await;
    call(&app, "connect", json!({"game": "demo"})).await;
    status_becomes(&mut observer, game, Status::Registered).await;
    println!("session running: GameMode status of the game ({game}) = Registered");
    call(&app, "disconnect", Value::Null).await;
    status_becomes(&mut observer, game, Status::Inactive).await;
    println!("after disconnect: Inactive");
}
