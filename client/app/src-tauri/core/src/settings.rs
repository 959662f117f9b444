//! The app's settings, kept as `app-settings.json` next to the CLI's login in the config dir.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// User settings. Unknown fields are refused so a typo is seen, not ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Start the app with the system (applied by the desktop shell).
    pub autostart: bool,
    /// `en` or `ru`.
    pub language: String,
    /// `system`, `dark` or `light`.
    pub theme: String,
    /// `adaptive`, `single` or `duplicate` (see `plg_proto::paths::Redundancy`).
    pub redundancy: String,
    /// Paths to the node, 1..=4 (each its own UDP socket).
    pub paths: u8,
    /// `proxy`, `tun` (Linux, root) or `windivert` (Windows, administrator).
    pub capture: String,
    /// Proxy mode: the local address the game is pointed at.
    pub proxy_listen: String,
    /// Proxy mode: the game server, when the game's catalog entry names more than one.
    pub game_server: String,
    /// Closing the window hides it to the tray.
    pub minimise_to_tray: bool,
    /// Desktop notifications (failover, plan expiry, detected game).
    pub notifications: bool,
    /// The last game connected (the tray's "Connect" uses it).
    pub last_game: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            autostart: false,
            language: "en".into(),
            theme: "system".into(),
            redundancy: "adaptive".into(),
            paths: 2,
            capture: "proxy".into(),
            proxy_listen: "127.0.0.1:0".into(),
            game_server: String::new(),
            minimise_to_tray: true,
            notifications: true,
            last_game: String::new(),
        }
    }
}

impl Settings {
    fn file(dir: &Path) -> PathBuf {
        dir.join("app-settings.json")
    }

    /// Loads the settings; a missing or unreadable file gives the defaults (and a log line).
    pub fn load(dir: &Path) -> Settings {
        match std::fs::read_to_string(Self::file(dir)) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "app-settings.json is invalid; using defaults");
                Settings::default()
            }),
            Err(_) => Settings::default(),
        }
    }

    /// Checks every field; the message says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !["en", "ru"].contains(&self.language.as_str()) {
            return Err(format!("unknown language {:?} (en, ru)", self.language));
        }
        if !["system", "dark", "light"].contains(&self.theme.as_str()) {
            return Err(format!("unknown theme {:?}", self.theme));
        }
        self.redundancy
            .parse::<plg_client::Redundancy>()
            .map_err(|e| e.to_string())?;
        if !(1..=4).contains(&self.paths) {
            return Err(format!("paths must be 1..=4, not {}", self.paths));
        }
        if !["proxy", "tun", "windivert"].contains(&self.capture.as_str()) {
            return Err(format!("unknown capture mode {:?}", self.capture));
        }
        self.proxy_listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| format!("proxy address {:?} is not IP:PORT", self.proxy_listen))?;
        if !self.game_server.is_empty() {
            self.game_server
                .parse::<std::net::SocketAddr>()
                .map_err(|_| format!("game server {:?} is not IP:PORT", self.game_server))?;
        }
        Ok(())
    }

    /// Saves atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("app-settings.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, Self::file(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()), Settings::default());
        let s = Settings {
            language: "ru".into(),
            paths: 3,
            ..Settings::default()
        };
        s.validate().unwrap();
        s.save(dir.path()).unwrap();
        assert_eq!(Settings::load(dir.path()), s);
        for bad in [
            Settings {
                language: "de".into(),
                ..Settings::default()
            },
            Settings {
                paths: 0,
                ..Settings::default()
            },
            Settings {
                redundancy: "triple".into(),
                ..Settings::default()
            },
            Settings {
                game_server: "nowhere".into(),
                ..Settings::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        std::fs::write(dir.path().join("app-settings.json"), "{\"colour\": 1}").unwrap();
        assert_eq!(Settings::load(dir.path()), Settings::default());
    }
}
