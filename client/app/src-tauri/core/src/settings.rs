//! The app's settings, kept as `app-settings.json` next to the CLI's login in the config dir.
//!
//! Every setting is typed (enums, socket addresses) but serialized as the strings the file and
//! the frontend have always used, so an older file still loads. A value that no longer parses
//! falls back to its default with a warning; the rest of the file is kept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ts_rs::TS;

/// The window's and the notices' language.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// English.
    #[default]
    En,
    /// Russian.
    Ru,
}

/// The window's colours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    /// Follow the system's light/dark preference.
    #[default]
    System,
    /// Dark.
    Dark,
    /// Light.
    Light,
}

/// Redundancy policy, as the gamer picks it (`plg_client::Redundancy` carries the tunables).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum Redundancy {
    /// Single while clean; every path for a while after trouble.
    #[default]
    Adaptive,
    /// Best path only.
    Single,
    /// Every live path, always.
    Duplicate,
}

impl From<Redundancy> for plg_client::Redundancy {
    fn from(r: Redundancy) -> Self {
        match r {
            Redundancy::Adaptive => plg_client::Redundancy::ADAPTIVE,
            Redundancy::Single => plg_client::Redundancy::Single,
            Redundancy::Duplicate => plg_client::Redundancy::Duplicate,
        }
    }
}

/// How game packets are captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum CaptureKind {
    /// A local UDP port the game is pointed at.
    #[default]
    Proxy,
    /// A TUN device (Linux, root).
    Tun,
    /// WinDivert (Windows, administrator).
    Windivert,
}

impl CaptureKind {
    /// The kinds this build and OS have.
    pub fn available() -> Vec<CaptureKind> {
        let mut m = vec![CaptureKind::Proxy];
        if cfg!(target_os = "linux") {
            m.push(CaptureKind::Tun);
        }
        if cfg!(windows) {
            m.push(CaptureKind::Windivert);
        }
        m
    }
}

/// User settings. Unknown fields are refused so a typo is seen, not ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Start the app with the system (applied by the desktop shell).
    pub autostart: bool,
    /// Window and notice language.
    pub language: Language,
    /// Window colours.
    pub theme: Theme,
    /// Redundancy policy.
    pub redundancy: Redundancy,
    /// Paths to the node, 1..=4 (each its own UDP socket).
    pub paths: u8,
    /// Capture backend.
    pub capture: CaptureKind,
    /// Proxy mode: the local address (`IP:PORT`) the game is pointed at.
    #[serde(with = "addr::required")]
    #[ts(type = "string")]
    pub proxy_listen: SocketAddr,
    /// Proxy mode: the game server (`IP:PORT`), when the game's catalog entry names more than
    /// one; `""` on the wire for none.
    #[serde(with = "addr::empty_is_none")]
    #[ts(type = "string")]
    pub game_server: Option<SocketAddr>,
    /// Closing the window hides it to the tray.
    pub minimise_to_tray: bool,
    /// Desktop notifications (failover, plan expiry, detected game).
    pub notifications: bool,
    /// The last game connected (the tray's "Connect" uses it).
    pub last_game: String,
    /// FPS boost while a session runs for a detected game: GameMode on Linux, high priority and
    /// the High performance power plan on Windows (`boost.rs`). Off unless turned on.
    pub fps_boost: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            autostart: false,
            language: Language::En,
            theme: Theme::System,
            redundancy: Redundancy::Adaptive,
            paths: 2,
            capture: CaptureKind::Proxy,
            proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            game_server: None,
            minimise_to_tray: true,
            notifications: true,
            last_game: String::new(),
            fps_boost: false,
        }
    }
}

/// Socket addresses as `IP:PORT` strings, with errors that name the field's meaning.
mod addr {
    use std::net::SocketAddr;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    /// `IP:PORT`.
    pub mod required {
        use super::*;
        use serde::Serializer;

        pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(a)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
            let s = String::deserialize(d)?;
            s.trim()
                .parse()
                .map_err(|_| D::Error::custom(format!("proxy address {s:?} is not IP:PORT")))
        }
    }

    /// `IP:PORT`, or `""` / `null` for none.
    pub mod empty_is_none {
        use super::*;
        use serde::Serializer;

        pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
            match a {
                Some(a) => s.collect_str(a),
                None => s.serialize_str(""),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SocketAddr>, D::Error> {
            match Option::<String>::deserialize(d)?.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => s
                    .parse()
                    .map(Some)
                    .map_err(|_| D::Error::custom(format!("game server {s:?} is not IP:PORT"))),
            }
        }
    }
}

impl Settings {
    fn file(dir: &Path) -> PathBuf {
        dir.join("app-settings.json")
    }

    /// Loads the settings; a missing file gives the defaults, and an invalid value in the file
    /// its default (with a log line), keeping the rest.
    pub fn load(dir: &Path) -> Settings {
        match std::fs::read_to_string(Self::file(dir)) {
            Ok(text) => Self::parse_lenient(&text),
            Err(_) => Settings::default(),
        }
    }

    /// The settings in `text`, one field at a time: each field that does not parse or validate
    /// (or is unknown) is left at its default.
    fn parse_lenient(text: &str) -> Settings {
        match serde_json::from_str::<Settings>(text) {
            Ok(s) if s.validate().is_ok() => return s,
            Ok(s) => {
                tracing::warn!(error = %s.validate().unwrap_err(), "app-settings.json has an invalid value")
            }
            Err(e) => tracing::warn!(error = %e, "app-settings.json has an invalid value"),
        }
        let Ok(Value::Object(file)) = serde_json::from_str::<Value>(text) else {
            tracing::warn!("app-settings.json is not a JSON object; using defaults");
            return Settings::default();
        };
        let Ok(Value::Object(mut good)) = serde_json::to_value(Settings::default()) else {
            return Settings::default();
        };
        for (key, value) in file {
            let mut trial: Map<String, Value> = good.clone();
            trial.insert(key.clone(), value);
            match serde_json::from_value::<Settings>(Value::Object(trial.clone())) {
                Ok(s) if s.validate().is_ok() => good = trial,
                _ => {
                    tracing::warn!(setting = %key, "app-settings.json: invalid or unknown setting; using its default")
                }
            }
        }
        serde_json::from_value(Value::Object(good)).unwrap_or_default()
    }

    /// Checks what the types do not; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=4).contains(&self.paths) {
            return Err(format!("paths must be 1..=4, not {}", self.paths));
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
    use serde_json::json;

    #[test]
    fn round_trip_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()), Settings::default());
        let s = Settings {
            language: Language::Ru,
            paths: 3,
            game_server: Some("5.6.7.8:9".parse().unwrap()),
            ..Settings::default()
        };
        s.validate().unwrap();
        s.save(dir.path()).unwrap();
        assert_eq!(Settings::load(dir.path()), s);
        let bad = Settings {
            paths: 0,
            ..Settings::default()
        };
        assert!(bad.validate().is_err());
        std::fs::write(dir.path().join("app-settings.json"), "{\"colour\": 1}").unwrap();
        assert_eq!(Settings::load(dir.path()), Settings::default());
        std::fs::write(dir.path().join("app-settings.json"), "not json").unwrap();
        assert_eq!(Settings::load(dir.path()), Settings::default());
    }

    /// The wire (file and frontend) keeps today's strings.
    #[test]
    fn serialized_as_strings() {
        let v = serde_json::to_value(Settings::default()).unwrap();
        assert_eq!(v["language"], "en");
        assert_eq!(v["theme"], "system");
        assert_eq!(v["redundancy"], "adaptive");
        assert_eq!(v["capture"], "proxy");
        assert_eq!(v["proxy_listen"], "127.0.0.1:0");
        assert_eq!(v["game_server"], "");
        let s = Settings {
            game_server: Some("[::1]:27015".parse().unwrap()),
            capture: CaptureKind::Windivert,
            ..Settings::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            (&v["game_server"], &v["capture"]),
            (&json!("[::1]:27015"), &json!("windivert"))
        );
        assert_eq!(serde_json::from_value::<Settings>(v).unwrap(), s);
    }

    /// A file written by an older app (`game_server: ""`, every field a string) loads.
    #[test]
    fn old_file_loads() {
        let old = json!({
            "autostart": true, "language": "ru", "theme": "dark", "redundancy": "duplicate",
            "paths": 3, "capture": "tun", "proxy_listen": "127.0.0.1:40000", "game_server": "",
            "minimise_to_tray": false, "notifications": true, "last_game": "cs2"
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app-settings.json"), old.to_string()).unwrap();
        let s = Settings::load(dir.path());
        assert_eq!(
            (
                s.language,
                s.theme,
                s.redundancy,
                s.capture,
                s.game_server,
                s.paths
            ),
            (
                Language::Ru,
                Theme::Dark,
                Redundancy::Duplicate,
                CaptureKind::Tun,
                None,
                3
            )
        );
        assert_eq!(
            s.proxy_listen,
            "127.0.0.1:40000".parse::<SocketAddr>().unwrap()
        );
        assert!(s.autostart && !s.minimise_to_tray && s.last_game == "cs2");
        // `null` is none too.
        let s: Settings = serde_json::from_value(json!({"game_server": null})).unwrap();
        assert_eq!(s.game_server, None);
    }

    /// An invalid value falls back to its default; the other fields are kept.
    #[test]
    fn invalid_values_fall_back_one_by_one() {
        let s = Settings::parse_lenient(
            &json!({
                "language": "de", "theme": "dark", "redundancy": "triple", "paths": 9,
                "capture": "tun", "proxy_listen": "nowhere", "game_server": "nope:x",
                "colour": 1, "last_game": "demo"
            })
            .to_string(),
        );
        let d = Settings::default();
        assert_eq!(
            (
                s.language,
                s.redundancy,
                s.paths,
                s.proxy_listen,
                s.game_server
            ),
            (
                d.language,
                d.redundancy,
                d.paths,
                d.proxy_listen,
                d.game_server
            )
        );
        assert_eq!(
            (s.theme, s.capture, s.last_game.as_str()),
            (Theme::Dark, CaptureKind::Tun, "demo")
        );
        for (field, bad) in [
            ("proxy_listen", "nowhere"),
            ("game_server", "nowhere"),
            ("language", "de"),
            ("redundancy", "triple"),
        ] {
            let e = serde_json::from_value::<Settings>(json!({ field: bad })).unwrap_err();
            assert!(e.to_string().contains(bad), "{field}: {e}");
        }
    }

    #[test]
    fn redundancy_maps_to_the_client_policy() {
        for (r, s) in [
            (Redundancy::Adaptive, "adaptive"),
            (Redundancy::Single, "single"),
            (Redundancy::Duplicate, "duplicate"),
        ] {
            assert_eq!(
                plg_client::Redundancy::from(r),
                s.parse::<plg_client::Redundancy>().unwrap()
            );
        }
    }
}
