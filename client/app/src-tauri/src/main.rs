//! PLG Booster desktop app: the window (frontend in `../src`) over `plg_app_core`, plus the
//! desktop behaviour — tray with status and connect/disconnect, close-to-tray, notifications,
//! single instance, start with the system.

// No console window behind the app on Windows.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod update;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use plg_app_core::{App, AppEvent, CmdError, Command, GameArgs, Language, Reply};
use serde_json::Value;
use tauri::menu::{Menu, MenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Emitter, Manager};
use tauri_plugin_autostart::{MacosLauncher, ManagerExt};
use tauri_plugin_notification::NotificationExt;

/// Started by the system at login: stay in the tray.
const MINIMISED: &str = "--minimised";
/// `--connect GAME`: connect to a catalog game, at start or in the running instance (a desktop
/// shortcut that plays a game accelerated; `measure-memory.sh` uses it for a live session).
const CONNECT: &str = "--connect";

fn connect_arg(argv: &[String]) -> Option<String> {
    let i = argv.iter().position(|a| a == CONNECT)?;
    argv.get(i + 1).cloned()
}

/// Connects to `game` in the background; a failure shows the window and a notification.
fn connect_to(app: &AppHandle, core: Arc<App>, game: String) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let connect = Command::Connect(GameArgs {
            game,
            node: None,
            region: None,
        });
        if let Err(e) = core.handle(connect).await {
            show_main(&app);
            let _ = app
                .notification()
                .builder()
                .title("PLG Booster")
                .body(e.message)
                .show();
        }
    });
}

/// `plg-app --update`: install an update from the command line, then exit (no window).
const UPDATE: &str = "--update";

/// Every window command goes through here to the shared handlers: the name and JSON arguments
/// are parsed into a typed `Command` (`unknown_command` / `bad_arguments` otherwise).
#[tauri::command]
async fn call(
    cmd: String,
    args: Option<Value>,
    app: tauri::State<'_, Arc<App>>,
) -> Result<Reply, CmdError> {
    app.dispatch(&cmd, args.unwrap_or(Value::Null)).await
}

/// The tray menu's labels: connect, disconnect, show, quit.
fn tray_labels(lang: Language) -> [&'static str; 4] {
    if lang == Language::Ru {
        ["Подключить", "Отключить", "Показать окно", "Выход"]
    } else {
        ["Connect", "Disconnect", "Show window", "Quit"]
    }
}

/// Shows the window, building it (and its WebView) again if it was closed to the tray.
fn show_main(app: &AppHandle) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
        return;
    }
    let Some(config) = app.config().app.windows.iter().find(|w| w.label == "main") else {
        tracing::error!("no window named main in tauri.conf.json");
        return;
    };
    if let Err(e) = tauri::WebviewWindowBuilder::from_config(app, config).and_then(|b| b.build()) {
        tracing::error!(error = %e, "could not open the window");
    }
}

fn logging(dir: &std::path::Path) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PLG_LOG").unwrap_or_else(|_| "info".into());
    let file = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("plg-app.log"))
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match file {
        Ok(f) => b.with_writer(std::sync::Mutex::new(f)).init(),
        Err(_) => b.with_writer(std::io::stderr).init(),
    }
}

/// The async runtime the app (and its game traffic) runs on. Tokio's default is one worker per
/// core plus up to 512 blocking threads; a gamer's 16-core PC would get 16 workers, each with
/// its own stack and malloc arena, for an app that forwards a few hundred packets a second.
/// Two workers keep one free while the other serialises an event; `TOKIO_WORKER_THREADS`
/// still overrides.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        b.worker_threads(2);
    }
    b.max_blocking_threads(8)
        .thread_keep_alive(Duration::from_secs(5))
        .thread_name("plg-app-rt")
        .enable_all()
        .build()
}

fn main() {
    #[cfg(target_os = "linux")]
    without_opengl();
    // Kept alive until the app exits; Tauri's tasks and the session's run on it.
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("PLG Booster could not start its runtime: {e}");
            std::process::exit(1);
        }
    };
    tauri::async_runtime::set(rt.handle().clone());
    let dir = match plg_app_core::config_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
    };
    let billing =
        std::env::var("PLG_BILLING_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let core = App::new(dir, &billing);
    let update_url = plg_app_core::update::endpoint(
        &billing,
        std::env::var(plg_app_core::update::URL_ENV).ok().as_deref(),
    );
    let headless_update = std::env::args().any(|a| a == UPDATE);
    logging(&core.logs_dir());
    let minimise_to_tray = Arc::new(AtomicBool::new(true));

    let close_flag = minimise_to_tray.clone();
    let setup_core = core.clone();
    let result = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(
            |app, argv, _cwd| match connect_arg(&argv) {
                Some(game) => connect_to(app, app.state::<Arc<App>>().inner().clone(), game),
                None => show_main(app),
            },
        ))
        .plugin(tauri_plugin_autostart::init(
            MacosLauncher::LaunchAgent,
            Some(vec![MINIMISED]),
        ))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_updater::Builder::new().build())
        .manage(core.clone())
        .invoke_handler(tauri::generate_handler![call])
        .setup(move |app| {
            let core = setup_core;
            core.set_update_port(Arc::new(update::PluginPort::new(
                app.handle().clone(),
                update_url,
                headless_update,
            )));
            if headless_update {
                tauri::async_runtime::spawn(update::run_headless(app.handle().clone()));
                return Ok(());
            }
            // SIGTERM, SIGHUP (the session ends) or SIGINT: quit like the tray's Quit, so the
            // session is closed and its slot released (`RunEvent::Exit` below).
            #[cfg(unix)]
            {
                let handle = app.handle().clone();
                tauri::async_runtime::spawn(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut term), Ok(mut hup), Ok(mut int)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::hangup()),
                        signal(SignalKind::interrupt()),
                    ) else {
                        return;
                    };
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                        _ = int.recv() => {}
                    }
                    tracing::info!("signal received; quitting");
                    handle.exit(0);
                });
            }
            let status = MenuItem::with_id(app, "status", "PLG Booster", false, None::<&str>)?;
            let connect = MenuItem::with_id(app, "connect", "Connect", true, None::<&str>)?;
            let disconnect =
                MenuItem::with_id(app, "disconnect", "Disconnect", true, None::<&str>)?;
            let show = MenuItem::with_id(app, "show", "Show window", true, None::<&str>)?;
            let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
            let menu = Menu::with_items(app, &[&status, &connect, &disconnect, &show, &quit])?;
            let items = [
                connect.clone(),
                disconnect.clone(),
                show.clone(),
                quit.clone(),
            ];
            let tray_core = core.clone();
            let mut tray = TrayIconBuilder::with_id("main")
                .tooltip("PLG Booster")
                .menu(&menu)
                .on_menu_event(move |app, ev| {
                    let core = tray_core.clone();
                    let app = app.clone();
                    match ev.id.as_ref() {
                        "show" => show_main(&app),
                        "quit" => {
                            tauri::async_runtime::spawn(async move {
                                let _ = core.handle(Command::Disconnect).await;
                                app.exit(0);
                            });
                        }
                        "connect" => {
                            tauri::async_runtime::spawn(async move {
                                let game = core.settings().await.last_game;
                                connect_to(&app, core, game);
                            });
                        }
                        "disconnect" => {
                            tauri::async_runtime::spawn(async move {
                                let _ = core.handle(Command::Disconnect).await;
                            });
                        }
                        _ => {}
                    }
                });
            if let Some(icon) = app.default_window_icon() {
                tray = tray.icon(icon.clone());
            }
            let tray = tray.build(app)?;

            // The window (`"create": false` in tauri.conf.json) opens now unless the system
            // started the app at login: then it waits in the tray.
            if !std::env::args().any(|a| a == MINIMISED) {
                show_main(app.handle());
            }

            // Events to the window, the tray and the system's notifications.
            let handle = app.handle().clone();
            let flag = minimise_to_tray.clone();
            let events_core = core.clone();
            tauri::async_runtime::spawn(async move {
                let core = events_core;
                let mut settings = core.settings().await;
                flag.store(settings.minimise_to_tray, Ordering::Relaxed);
                apply_autostart(&handle, settings.autostart);
                let mut rx = core.subscribe();
                let refresh = |core: Arc<App>| async move { core.status_line().await };
                let line = refresh(core.clone()).await;
                let _ = status.set_text(&line);
                for (item, label) in items.iter().zip(tray_labels(settings.language)) {
                    let _ = item.set_text(label);
                }
                loop {
                    let ev = match rx.recv().await {
                        Ok(ev) => ev,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    };
                    let _ = handle.emit("plg-event", &ev);
                    match &ev {
                        AppEvent::Notice(n) if n.notify && settings.notifications => {
                            let _ = handle
                                .notification()
                                .builder()
                                .title(&n.title)
                                .body(&n.body)
                                .show();
                        }
                        AppEvent::Settings(s) => {
                            if s.autostart != settings.autostart {
                                apply_autostart(&handle, s.autostart);
                            }
                            flag.store(s.minimise_to_tray, Ordering::Relaxed);
                            if s.language != settings.language {
                                let labels = tray_labels(s.language);
                                for (item, label) in items.iter().zip(labels) {
                                    let _ = item.set_text(label);
                                }
                                let line = refresh(core.clone()).await;
                                let _ = status.set_text(&line);
                            }
                            settings = s.clone();
                        }
                        AppEvent::Connected(_)
                        | AppEvent::Session(_)
                        | AppEvent::Ended(_)
                        | AppEvent::Account(_) => {
                            let line = refresh(core.clone()).await;
                            let _ = status.set_text(&line);
                            let _ = tray.set_tooltip(Some(format!("PLG Booster — {line}")));
                        }
                        _ => {}
                    }
                }
            });
            if let Some(game) = connect_arg(&std::env::args().collect::<Vec<_>>()) {
                connect_to(app.handle(), core.clone(), game);
            }
            tauri::async_runtime::spawn(core.clone().watch_games(Duration::from_secs(5)));
            tauri::async_runtime::spawn(core.watch_updates());
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match result {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "the app did not start");
            eprintln!("PLG Booster could not start: {e}");
            std::process::exit(1);
        }
    };
    // Closing the window to the tray destroys it, WebView and all (WebKitGTK's web and network
    // processes exit): ~135 MiB less while the game plays (docs/app.md "Memory"). The session
    // runs on in this process; `show_main` builds the window again. Only Quit ends the app.
    let exit_core = core.clone();
    app.run(move |_app, event| match event {
        tauri::RunEvent::ExitRequested {
            code: None, api, ..
        } if close_flag.load(Ordering::Relaxed) => api.prevent_exit(),
        tauri::RunEvent::Exit => {
            // However the app ends, a running session is closed at the node and billing.
            let core = exit_core.clone();
            let _ = tauri::async_runtime::block_on(async move {
                tokio::time::timeout(Duration::from_secs(3), core.handle(Command::Disconnect)).await
            });
        }
        _ => {}
    });
}

/// A few screens of text and small charts need no OpenGL. Without GPU compositing WebKitGTK's
/// web process paints into shared memory, which under Mesa's software rasteriser (no GPU)
/// halves its memory (220 → 107 MiB PSS), and without GTK's GL probe the app process keeps
/// ~2 MiB less (docs/app.md "Memory"). `PLG_APP_GPU=1` keeps the toolkits' defaults; a value
/// the user set for either variable is kept.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn without_opengl() {
    if std::env::var("PLG_APP_GPU").is_ok_and(|v| v == "1") {
        return;
    }
    for (key, value) in [
        ("WEBKIT_DISABLE_COMPOSITING_MODE", "1"),
        ("GDK_GL", "disable"),
    ] {
        if std::env::var_os(key).is_none() {
            // SAFETY: called first thing in `main`, before any thread exists, so nothing
            // reads or writes the environment at the same time.
            unsafe { std::env::set_var(key, value) };
        }
    }
}

fn apply_autostart(app: &AppHandle, on: bool) {
    let al = app.autolaunch();
    let r = if on { al.enable() } else { al.disable() };
    if let Err(e) = r {
        tracing::warn!(error = %e, on, "could not change start-with-the-system");
    }
}
