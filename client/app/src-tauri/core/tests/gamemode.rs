//! The FPS boost on Linux against a real `gamemoded` (Debian's `gamemode` package, installed by
//! `client/app/ci.sh`) on a private D-Bus session bus: a real process is registered through the
//! app's code, GameMode reports itself active for it (asked by a second client and by
//! `gamemoded -s`), a restarted game moves the registration, and the end unregisters it.
#![cfg(target_os = "linux")]

use std::process::Stdio;
use std::time::Duration;

use plg_app_core::boost::gamemode::{GameMode, Status};
use plg_app_core::boost::{BoostError, Boosting};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(15);

/// A private session bus: `dbus-daemon --session --nofork`, and the address it printed.
async fn private_bus() -> (Child, String) {
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("dbus-daemon (Debian's dbus-daemon package; client/app/ci.sh installs it)");
    let mut out = BufReader::new(bus.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(WAIT, out.next_line())
        .await
        .expect("dbus-daemon printed its address in time")
        .unwrap()
        .expect("dbus-daemon printed an address");
    (bus, addr)
}

fn gamemoded(addr: &str) -> Command {
    let mut c = Command::new("gamemoded");
    c.env("DBUS_SESSION_BUS_ADDRESS", addr).kill_on_drop(true);
    c
}

/// `gamemoded -s`'s word: "gamemode is active" / "gamemode is inactive".
async fn daemon_says(addr: &str) -> String {
    let out = tokio::time::timeout(WAIT, gamemoded(addr).arg("-s").output())
        .await
        .expect("gamemoded -s in time")
        .expect("gamemoded -s runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn game() -> Child {
    Command::new("sleep")
        .arg("120")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn registers_the_game_with_a_real_gamemoded_and_unregisters_it() {
    let (mut bus, addr) = private_bus().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut daemon = gamemoded(&addr)
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("gamemoded (Debian's gamemode package; client/app/ci.sh installs it)");
    let daemon_log = || std::fs::read_to_string(log.path()).unwrap_or_default();

    // A second client, to check what the app's client did.
    let mut observer = GameMode::at(&addr);
    let (g1, g2) = (game(), game());
    let (p1, p2) = (g1.id().unwrap(), g2.id().unwrap());
    let ready = tokio::time::timeout(WAIT, async {
        loop {
            match observer.status(p1).await {
                Ok(s) => return s,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "gamemoded never answered on {addr}; its log:\n{}",
            daemon_log()
        )
    });
    assert_eq!(ready, Status::Inactive);
    assert_eq!(daemon_says(&addr).await, "gamemode is inactive");

    let mut boost = Boosting::new(GameMode::at(&addr));
    boost.follow(Some(p1)).await.unwrap();
    let s1 = observer.status(p1).await.unwrap();
    println!("game {p1} registered: QueryStatusByPID = {s1:?}");
    assert_eq!(s1, Status::Registered, "log:\n{}", daemon_log());
    assert_eq!(daemon_says(&addr).await, "gamemode is active");

    // The game restarted under another pid: the registration moves.
    boost.follow(Some(p2)).await.unwrap();
    let (s1, s2) = (
        observer.status(p1).await.unwrap(),
        observer.status(p2).await.unwrap(),
    );
    println!("after the restart: old {p1} = {s1:?}, new {p2} = {s2:?}");
    assert_eq!((s1, s2), (Status::ActiveForOthers, Status::Registered));

    // The session ends.
    boost.end().await;
    let s2 = observer.status(p2).await.unwrap();
    println!("after the session: {p2} = {s2:?}");
    assert_eq!(s2, Status::Inactive);
    assert_eq!(daemon_says(&addr).await, "gamemode is inactive");

    // Without GameMode (here: no bus at all; a session bus with gamemode installed would start
    // gamemoded on demand) the gamer is told why, in a sentence.
    daemon.kill().await.unwrap();
    bus.kill().await.unwrap();
    let e = Boosting::new(GameMode::at(&addr))
        .follow(Some(p1))
        .await
        .unwrap_err();
    println!("without gamemoded: {e}");
    assert!(matches!(e, BoostError::GameModeUnavailable(_)), "{e:?}");
    assert!(
        e.to_string().contains("install the gamemode package"),
        "{e}"
    );
}
