//! Session records replicated through gossip.
//!
//! The exit node that accepts a session publishes `s:<session id as 16 hex digits>` =
//! `1 <epoch> <paths> <backup node or ->`. The exit is implied: it is the node that owns
//! the key. When the exit dies, its records stay readable until chitchat forgets the dead
//! node, and the designated backup adopts each session by publishing it itself with
//! `epoch + 1`; the highest epoch wins wherever two records exist.

use crate::node::{InvalidValue, NodeId};

/// Chitchat key prefix of session records.
pub(crate) const PREFIX: &str = "s:";

/// What the mesh needs to know about one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id (the ticket's).
    pub session_id: u64,
    /// Designated backup exit, if any.
    pub backup: Option<NodeId>,
    /// Most simultaneous paths the ticket allows.
    pub paths: u8,
    /// Bumped by each adoption; the highest wins.
    pub epoch: u32,
}

impl SessionRecord {
    pub(crate) fn key(session_id: u64) -> String {
        format!("{PREFIX}{session_id:016x}")
    }

    pub(crate) fn parse_key(key: &str) -> Option<u64> {
        let hex = key.strip_prefix(PREFIX)?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    }

    pub(crate) fn encode(&self) -> String {
        let backup = self.backup.as_ref().map_or("-", NodeId::as_str);
        format!("1 {} {} {}", self.epoch, self.paths, backup)
    }

    pub(crate) fn decode(session_id: u64, s: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue::new("session", s);
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() < 4 || f[0] != "1" {
            return Err(bad());
        }
        Ok(SessionRecord {
            session_id,
            epoch: f[1].parse().map_err(|_| bad())?,
            paths: f[2].parse().map_err(|_| bad())?,
            backup: match f[3] {
                "-" => None,
                id => Some(id.parse().map_err(|_| bad())?),
            },
        })
    }
}

/// Where a session lives, as read from gossip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRoute {
    /// The record with the highest epoch.
    pub record: SessionRecord,
    /// Node that published it: the session's exit.
    pub exit: NodeId,
    /// Whether that exit is currently alive.
    pub exit_alive: bool,
}

impl SessionRoute {
    /// Whether `other` should replace `self` as the authoritative record: higher epoch
    /// first, then a live exit over a dead one.
    pub(crate) fn superseded_by(&self, other: &SessionRoute) -> bool {
        (other.record.epoch, other.exit_alive) > (self.record.epoch, self.exit_alive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = SessionRecord {
            session_id: 0xdead_beef_0000_0001,
            backup: Some("node-b".parse().unwrap()),
            paths: 2,
            epoch: 3,
        };
        let key = SessionRecord::key(r.session_id);
        assert_eq!(key, "s:deadbeef00000001");
        let id = SessionRecord::parse_key(&key).unwrap();
        assert_eq!(SessionRecord::decode(id, &r.encode()).unwrap(), r);
        let none = SessionRecord { backup: None, ..r };
        assert_eq!(SessionRecord::decode(id, &none.encode()).unwrap(), none);
        assert!(SessionRecord::parse_key("s:12").is_none());
        assert!(SessionRecord::decode(1, "1 x 2 -").is_err());
    }

    #[test]
    fn higher_epoch_then_live_exit_wins() {
        let rec = |epoch| SessionRecord {
            session_id: 1,
            backup: None,
            paths: 1,
            epoch,
        };
        let route = |epoch, alive| SessionRoute {
            record: rec(epoch),
            exit: "a".parse().unwrap(),
            exit_alive: alive,
        };
        assert!(route(0, true).superseded_by(&route(1, false)));
        assert!(route(1, false).superseded_by(&route(1, true)));
        assert!(!route(1, true).superseded_by(&route(0, true)));
        assert!(!route(1, true).superseded_by(&route(1, false)));
    }
}
