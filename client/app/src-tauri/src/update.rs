//! `tauri-plugin-updater` behind `plg_app_core::UpdatePort`: the plugin reads the manifest,
//! and installs a bundle that the core has already downloaded and verified (it verifies it
//! once more, then runs `dpkg -i` through pkexec/sudo, or the NSIS setup on Windows). When to
//! check and whether the gamer allowed it is the core's business (`plg_app_core::update`).

use std::sync::Mutex;
use std::time::Duration;

use plg_app_core::update::{Offer, PortFuture, UpdatePort};
use tauri::{AppHandle, Manager};
use tauri_plugin_updater::UpdaterExt;

/// The plugin's side of updating, for one endpoint.
pub struct PluginPort {
    app: AppHandle,
    endpoint: String,
    /// Run from the command line (`plg-app --update`): exit after installing instead of
    /// restarting into the window.
    headless: bool,
    /// The plugin's update found by the last check (it carries the install path and key).
    pending: Mutex<Option<tauri_plugin_updater::Update>>,
}

impl std::fmt::Debug for PluginPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginPort")
            .field("endpoint", &self.endpoint)
            .field("headless", &self.headless)
            .finish_non_exhaustive()
    }
}

impl PluginPort {
    /// A port reading the manifest at `endpoint`.
    pub fn new(app: AppHandle, endpoint: String, headless: bool) -> Self {
        PluginPort {
            app,
            endpoint,
            headless,
            pending: Mutex::new(None),
        }
    }
}

impl UpdatePort for PluginPort {
    fn current_version(&self) -> String {
        self.app.package_info().version.to_string()
    }

    fn check(&self) -> PortFuture<'_, Option<Offer>> {
        Box::pin(async move {
            let url = self
                .endpoint
                .parse()
                .map_err(|e| format!("bad update URL {:?}: {e}", self.endpoint))?;
            let updater = self
                .app
                .updater_builder()
                .endpoints(vec![url])
                .and_then(|b| b.timeout(Duration::from_secs(30)).build())
                .map_err(|e| e.to_string())?;
            let found = updater.check().await.map_err(|e| e.to_string())?;
            let offer = found.as_ref().map(|u| Offer {
                version: u.version.clone(),
                notes: u.body.clone(),
                url: u.download_url.to_string(),
                signature: u.signature.clone(),
            });
            *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = found;
            Ok(offer)
        })
    }

    fn pubkey(&self) -> String {
        self.app
            .config()
            .plugins
            .0
            .get("updater")
            .and_then(|u| u.get("pubkey"))
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned()
    }

    fn install(&self, bundle: Vec<u8>) -> PortFuture<'_, ()> {
        Box::pin(async move {
            let update = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or("no update was found by the last check")?;
            // dpkg (and the password prompt before it) blocks.
            tauri::async_runtime::spawn_blocking(move || update.install(bundle))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
    }

    fn restart(&self) {
        if self.headless {
            self.app.exit(0);
        } else {
            self.app.restart();
        }
    }
}

/// `plg-app --update`: check, and install what is found (running the command is the consent),
/// printing the outcome; the app exits 0 if it is up to date or updated, 1 otherwise.
pub async fn run_headless(app: AppHandle) {
    let core = app
        .state::<std::sync::Arc<plg_app_core::App>>()
        .inner()
        .clone();
    let current = core.update_view().current;
    let code = match core.check_update().await {
        Err(e) => {
            eprintln!("plg-app --update: {e}");
            1
        }
        Ok(v) if v.available.is_none() => {
            println!("plg-app --update: {current} is the newest version");
            0
        }
        Ok(v) => {
            let new = v.available.unwrap_or_default();
            println!("plg-app --update: installing {new} over {current}");
            match core.install_update().await {
                Ok(_) => {
                    println!("plg-app --update: installed {new}");
                    0
                }
                Err(e) => {
                    eprintln!("plg-app --update: {e}");
                    1
                }
            }
        }
    };
    app.exit(code);
}
