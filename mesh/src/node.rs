//! What a node says about itself in gossip: identity, addresses, capacity, load, health.
//!
//! Values are short space-separated text records (chitchat values are strings); each
//! starts with a format version so a newer node can add fields without confusing an older
//! one. Static facts (`n`) and live load (`l`) and status (`h`) are separate keys, so a
//! load update re-sends a few bytes, not the whole record.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Chitchat key of [`NodeInfo`].
pub(crate) const KEY_INFO: &str = "n";
/// Chitchat key of [`Load`].
pub(crate) const KEY_LOAD: &str = "l";
/// Chitchat key of the health and draining status.
pub(crate) const KEY_STATUS: &str = "h";

/// Longest id, region, provider, version or target name, in bytes.
pub const MAX_TOKEN_LEN: usize = 64;

/// A value that cannot be published or was received malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {value:?}")]
pub struct InvalidValue {
    /// Which field.
    pub what: &'static str,
    /// The offending text (truncated).
    pub value: String,
}

impl InvalidValue {
    pub(crate) fn new(what: &'static str, value: &str) -> Self {
        InvalidValue {
            what,
            value: value.chars().take(80).collect(),
        }
    }
}

/// Checks a free-form token: 1–64 bytes of printable ASCII without spaces.
pub(crate) fn check_token(what: &'static str, s: &str) -> Result<(), InvalidValue> {
    if s.is_empty() || s.len() > MAX_TOKEN_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidValue::new(what, s));
    }
    Ok(())
}

/// A node's stable identity (the same across restarts): 1–64 of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Checks that `s` is a valid node id.
    pub fn validate(s: &str) -> Result<(), InvalidValue> {
        let ok = !s.is_empty()
            && s.len() <= MAX_TOKEN_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(())
        } else {
            Err(InvalidValue::new("node id", s))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::validate(s)?;
        Ok(NodeId(s.to_owned()))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Static facts about a node, published once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Region, the first failure domain (e.g. `eu-central`).
    pub region: String,
    /// Hosting provider or ASN, the second failure domain; empty if unknown.
    pub provider: String,
    /// Public address of the PLG data plane (UDP).
    pub data_addr: SocketAddr,
    /// Public address of the QUIC control endpoint.
    pub control_addr: SocketAddr,
    /// Software version.
    pub version: String,
    /// Most sessions this node accepts.
    pub capacity: u32,
}

impl NodeInfo {
    /// Checks the text fields so that [`NodeInfo::encode`] round-trips.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_token("region", &self.region)?;
        if !self.provider.is_empty() {
            check_token("provider", &self.provider)?;
        }
        check_token("version", &self.version)
    }

    pub(crate) fn encode(&self) -> String {
        let provider = if self.provider.is_empty() {
            "-"
        } else {
            &self.provider
        };
        format!(
            "1 {} {} {} {} {} {}",
            self.region, provider, self.data_addr, self.control_addr, self.version, self.capacity
        )
    }

    pub(crate) fn decode(s: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue::new("node info", s);
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() < 7 || f[0] != "1" {
            return Err(bad());
        }
        Ok(NodeInfo {
            region: f[1].to_owned(),
            provider: if f[2] == "-" {
                String::new()
            } else {
                f[2].to_owned()
            },
            data_addr: f[3].parse().map_err(|_| bad())?,
            control_addr: f[4].parse().map_err(|_| bad())?,
            version: f[5].to_owned(),
            capacity: f[6].parse().map_err(|_| bad())?,
        })
    }
}

/// Live load, republished whenever the node reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Sessions currently served.
    pub sessions: u32,
    /// Packets per second forwarded (both directions).
    pub packets_per_sec: u32,
    /// CPU use, percent of the whole machine (0–100).
    pub cpu_percent: u8,
}

impl Load {
    pub(crate) fn encode(&self) -> String {
        format!(
            "1 {} {} {}",
            self.sessions, self.packets_per_sec, self.cpu_percent
        )
    }

    pub(crate) fn decode(s: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue::new("load", s);
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() < 4 || f[0] != "1" {
            return Err(bad());
        }
        Ok(Load {
            sessions: f[1].parse().map_err(|_| bad())?,
            packets_per_sec: f[2].parse().map_err(|_| bad())?,
            cpu_percent: f[3].parse::<u8>().map_err(|_| bad())?.min(100),
        })
    }

    /// Fraction of capacity in use, from sessions and CPU, whichever is higher (0–1).
    pub fn utilisation(&self, capacity: u32) -> f32 {
        let by_sessions = if capacity == 0 {
            1.0
        } else {
            self.sessions as f32 / capacity as f32
        };
        by_sessions.max(self.cpu_percent as f32 / 100.0).min(1.0)
    }
}

/// Self-reported health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Serving normally.
    #[default]
    Ok,
    /// Serving, but something is wrong (e.g. upstream loss); selection penalises it.
    Degraded,
    /// Not fit to serve; never selected.
    Unhealthy,
}

impl Health {
    fn code(self) -> u8 {
        match self {
            Health::Ok => 0,
            Health::Degraded => 1,
            Health::Unhealthy => 2,
        }
    }

    fn from_code(c: &str) -> Option<Self> {
        Some(match c {
            "0" => Health::Ok,
            "1" => Health::Degraded,
            "2" => Health::Unhealthy,
            _ => return None,
        })
    }
}

/// Health plus the draining flag (one key: they change together and rarely).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Status {
    pub health: Health,
    pub draining: bool,
}

impl Status {
    pub(crate) fn encode(&self) -> String {
        format!("1 {} {}", self.health.code(), u8::from(self.draining))
    }

    pub(crate) fn decode(s: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue::new("status", s);
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() < 3 || f[0] != "1" {
            return Err(bad());
        }
        Ok(Status {
            health: Health::from_code(f[1]).ok_or_else(bad)?,
            draining: match f[2] {
                "0" => false,
                "1" => true,
                _ => return Err(bad()),
            },
        })
    }
}

/// A live node as this node sees it through gossip.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// Stable identity.
    pub id: NodeId,
    /// Incarnation: grows on every restart (chitchat generation).
    pub generation: u64,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
    /// Static facts.
    pub info: NodeInfo,
    /// Last reported load.
    pub load: Load,
    /// Last reported health.
    pub health: Health,
    /// Accepts no new sessions.
    pub draining: bool,
}

impl NodeView {
    /// Whether new sessions may be placed here.
    pub fn accepts_sessions(&self) -> bool {
        !self.draining && self.health != Health::Unhealthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_validation() {
        assert!("node-1.eu_2".parse::<NodeId>().is_ok());
        assert!("".parse::<NodeId>().is_err());
        assert!("a b".parse::<NodeId>().is_err());
        assert!("a:b".parse::<NodeId>().is_err());
        assert!("x".repeat(65).parse::<NodeId>().is_err());
    }

    #[test]
    fn records_round_trip() {
        let info = NodeInfo {
            region: "eu-central".into(),
            provider: String::new(),
            data_addr: "1.2.3.4:443".parse().unwrap(),
            control_addr: "[::1]:4433".parse().unwrap(),
            version: "0.1.0".into(),
            capacity: 5000,
        };
        info.validate().unwrap();
        assert_eq!(NodeInfo::decode(&info.encode()).unwrap(), info);
        let load = Load {
            sessions: 7,
            packets_per_sec: 12_000,
            cpu_percent: 42,
        };
        assert_eq!(Load::decode(&load.encode()).unwrap(), load);
        let st = Status {
            health: Health::Degraded,
            draining: true,
        };
        assert_eq!(Status::decode(&st.encode()).unwrap(), st);
        assert!(Status::decode("1 7 0").is_err());
        assert!(Load::decode("2 1 1 1").is_err());
        assert!(NodeInfo::decode("1 eu").is_err());
    }

    #[test]
    fn invalid_info_is_refused() {
        let mut info = NodeInfo {
            region: "eu central".into(),
            provider: String::new(),
            data_addr: "1.2.3.4:443".parse().unwrap(),
            control_addr: "1.2.3.4:4433".parse().unwrap(),
            version: "0.1.0".into(),
            capacity: 1,
        };
        assert!(info.validate().is_err());
        info.region = "eu".into();
        info.provider = "a\nb".into();
        assert!(info.validate().is_err());
    }

    #[test]
    fn utilisation_takes_the_worse_of_sessions_and_cpu() {
        let l = Load {
            sessions: 50,
            packets_per_sec: 0,
            cpu_percent: 20,
        };
        assert_eq!(l.utilisation(100), 0.5);
        assert_eq!(l.utilisation(1000), 0.2);
        assert_eq!(l.utilisation(0), 1.0);
    }
}
