//! An empty Tauri app: one window with a static page, a tray icon, and closing the window to
//! the tray like the desktop app does (the window and its WebView are destroyed, the process
//! stays). Nothing of PLG's: the desktop app's memory is measured next to this one, in the same
//! run and the same states (`client/app/measure-memory.sh`).

use tauri::tray::TrayIconBuilder;

fn main() {
    #[cfg(target_os = "linux")]
    without_opengl();
    let app = tauri::Builder::default()
        .setup(|app| {
            let mut tray = TrayIconBuilder::with_id("main").tooltip("baseline");
            if let Some(icon) = app.default_window_icon() {
                tray = tray.icon(icon.clone());
            }
            tray.build(app)?;
            Ok(())
        })
        .build(tauri::generate_context!());
    match app {
        // Closing the window keeps the process (in the tray), as in the desktop app.
        Ok(app) => app.run(|_, event| {
            if let tauri::RunEvent::ExitRequested {
                code: None, api, ..
            } = event
            {
                api.prevent_exit();
            }
        }),
        Err(e) => {
            eprintln!("the baseline app could not start: {e}");
            std::process::exit(1);
        }
    }
}

/// The same rendering settings as the desktop app (its `without_opengl`): software painting,
/// no GTK GL probe. Set here rather than by the measuring script so that the two are compared
/// like for like however they are started; `PLG_APP_GPU=1` keeps the defaults, as there.
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
            // SAFETY: first thing in `main`, before any thread exists.
            unsafe { std::env::set_var(key, value) };
        }
    }
}
