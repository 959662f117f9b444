//! Route measurements: what each node reports at announce about its exit→game legs (per
//! target prefix) and its mesh links (per peer), stored in `node_rtt`, and the view of them
//! billing offers clients (a node's fresh game RTTs for one game, the mesh matrix between the
//! offered nodes) and admins (everything, with ages). Billing is not a mesh member; this is
//! its copy of the gossiped `target_rtt`, good enough for a client's first choice before any
//! probe of its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use plg_proto::ticket::Destination;
use serde::{Deserialize, Serialize};

use crate::db::Pool;
use crate::error::ApiError;

/// Most targets a node may report in one announce.
pub const MAX_TARGETS: usize = 256;
/// Most peers a node may report in one announce.
pub const MAX_PEERS: usize = 1024;
/// Largest RTT or jitter accepted, microseconds (a minute: anything above is a bug).
pub const MAX_MICROS: u64 = 60_000_000;
/// A measurement older than this is neither offered to clients nor counted fresh.
pub const FRESH_SECS: i64 = 300;
/// Most `game_rtt` entries per offered node.
pub const MAX_GAME_RTT: usize = 16;
/// Rows per multi-row `INSERT` (7 parameters each, under SQLite's 999).
const INSERT_CHUNK: usize = 100;

/// One leg's measurement as a node reports it. Numbers are read as JSON numbers and checked
/// by hand, so a negative, fractional or huge value is a clear `invalid_rtt`, not a parse error.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct LegReport {
    rtt_us: serde_json::Number,
    #[serde(default)]
    jitter_us: Option<serde_json::Number>,
    #[serde(default)]
    loss_permille: Option<serde_json::Number>,
}

/// A target measurement as a node reports it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct TargetReport {
    target: String,
    #[serde(flatten)]
    leg: LegReport,
}

/// A checked measurement, as billing serves it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Leg {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u64,
    /// Smoothed jitter, microseconds.
    pub jitter_us: u64,
    /// Probes lost, per mille.
    pub loss_permille: u32,
}

impl Leg {
    /// The client's cost (`client/src/route.rs`): RTT plus 2 ms per % of loss, microseconds.
    pub fn cost_us(&self) -> u64 {
        // 2 ms per % = 200 µs per ‰.
        self.rtt_us
            .saturating_add(u64::from(self.loss_permille).saturating_mul(200))
    }
}

/// Whether a stored row is a target prefix or a peer node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Target,
    Peer,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Target => "target",
            Kind::Peer => "peer",
        }
    }
}

/// One validated measurement, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Measurement {
    pub kind: Kind,
    /// Canonical prefix (`203.0.113.0/24`, `2001:db8:1::/48`) or peer node id.
    pub key: String,
    pub leg: Leg,
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_rtt", message)
}

fn number(
    what: &str,
    field: &str,
    n: Option<&serde_json::Number>,
    max: u64,
) -> Result<u64, ApiError> {
    let Some(n) = n else { return Ok(0) };
    match n.as_u64() {
        Some(v) if v <= max => Ok(v),
        _ => Err(invalid(format!(
            "{what}: {field} must be an integer 0..={max}, got {n}"
        ))),
    }
}

fn leg(what: &str, r: &LegReport) -> Result<Leg, ApiError> {
    Ok(Leg {
        rtt_us: number(what, "rtt_us", Some(&r.rtt_us), MAX_MICROS)?,
        jitter_us: number(what, "jitter_us", r.jitter_us.as_ref(), MAX_MICROS)?,
        loss_permille: number(what, "loss_permille", r.loss_permille.as_ref(), 1000)? as u32,
    })
}

/// Parses a target key: a /24 (IPv4) or /48 (IPv6) prefix with its host bits zero.
pub(crate) fn parse_target(s: &str) -> Option<IpNet> {
    let net: IpNet = s.parse().ok()?;
    let len_ok = match net {
        IpNet::V4(n) => n.prefix_len() == 24,
        IpNet::V6(n) => n.prefix_len() == 48,
    };
    (len_ok && net.trunc() == net).then_some(net)
}

/// The target key an address is measured under (`plg_proto::query::target_key` is the
/// node side's; the rule is the same: its /24 or /48).
pub(crate) fn target_of(ip: IpAddr) -> IpNet {
    let len = if ip.is_ipv4() { 24 } else { 48 };
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .unwrap_or(IpNet::from(ip))
}

/// Checks an announce's `targets` and `peers` (400 `invalid_rtt` naming the first bad entry).
pub(crate) fn validate(
    targets: &[TargetReport],
    peers: &BTreeMap<String, LegReport>,
) -> Result<Vec<Measurement>, ApiError> {
    if targets.len() > MAX_TARGETS {
        return Err(invalid(format!(
            "at most {MAX_TARGETS} targets per announce, got {}",
            targets.len()
        )));
    }
    if peers.len() > MAX_PEERS {
        return Err(invalid(format!(
            "at most {MAX_PEERS} peers per announce, got {}",
            peers.len()
        )));
    }
    let mut out = Vec::with_capacity(targets.len() + peers.len());
    let mut seen = HashSet::new();
    for t in targets {
        let net = parse_target(&t.target).ok_or_else(|| {
            invalid(format!(
                "target {:?} must be an IPv4 /24 or IPv6 /48 prefix with host bits zero, e.g. 203.0.113.0/24",
                t.target
            ))
        })?;
        let key = net.to_string();
        if !seen.insert(key.clone()) {
            return Err(invalid(format!("target {key} is listed twice")));
        }
        out.push(Measurement {
            kind: Kind::Target,
            leg: leg(&format!("target {key}"), &t.leg)?,
            key,
        });
    }
    for (id, r) in peers {
        if !crate::nodes::valid_label(id) {
            return Err(invalid(format!(
                "peer {id:?} is not a node id (1-64 chars of [A-Za-z0-9._-])"
            )));
        }
        out.push(Measurement {
            kind: Kind::Peer,
            key: id.clone(),
            leg: leg(&format!("peer {id}"), r)?,
        });
    }
    Ok(out)
}

/// Replaces `node`'s measurements with `rows`, inside the caller's transaction.
pub(crate) async fn replace(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    node: &str,
    rows: &[Measurement],
    now: i64,
) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM node_rtt WHERE node_id = $1")
        .bind(node)
        .execute(&mut **tx)
        .await?;
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO node_rtt (node_id, kind, key, rtt_us, jitter_us, loss_permille, updated_at) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 7;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            ));
        }
        let mut q = sqlx::query(&sql);
        for m in chunk {
            q = q
                .bind(node)
                .bind(m.kind.as_str())
                .bind(&m.key)
                .bind(m.leg.rtt_us as i64)
                .bind(m.leg.jitter_us as i64)
                .bind(i64::from(m.leg.loss_permille))
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A stored measurement with its age.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Aged {
    /// Prefix or peer id.
    #[serde(skip)]
    pub key: String,
    #[serde(flatten)]
    pub leg: Leg,
    /// Seconds since the node reported it.
    pub age_secs: u64,
}

type Row = (String, String, String, i64, i64, i64, i64);

/// The measurements of `nodes` (every node if `None`) by node id, without those older than
/// `max_age` seconds (if given).
pub(crate) async fn load(
    db: &Pool,
    now: i64,
    max_age: Option<i64>,
    nodes: Option<&[String]>,
) -> Result<HashMap<String, NodeRtt>, ApiError> {
    let oldest = max_age.map_or(i64::MIN, |a| now - a);
    let mut sql = String::from(
        "SELECT node_id, kind, key, rtt_us, jitter_us, loss_permille, updated_at FROM node_rtt \
         WHERE updated_at >= $1",
    );
    if let Some(ids) = nodes {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        sql.push_str(&format!(" AND node_id IN ({})", list.join(", ")));
    }
    sql.push_str(" ORDER BY node_id, kind, key");
    let mut q = sqlx::query_as::<_, Row>(&sql).bind(oldest);
    for id in nodes.unwrap_or_default() {
        q = q.bind(id);
    }
    let rows = q.fetch_all(db).await?;
    let mut out: HashMap<String, NodeRtt> = HashMap::new();
    for (node, kind, key, rtt, jitter, loss, updated_at) in rows {
        let aged = Aged {
            key,
            leg: Leg {
                rtt_us: rtt.max(0) as u64,
                jitter_us: jitter.max(0) as u64,
                loss_permille: loss.clamp(0, 1000) as u32,
            },
            age_secs: (now - updated_at).max(0) as u64,
        };
        let entry = out.entry(node).or_default();
        match kind.as_str() {
            "target" => entry.targets.push(aged),
            "peer" => entry.peers.push(aged),
            _ => {}
        }
    }
    Ok(out)
}

/// One node's stored measurements.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeRtt {
    pub targets: Vec<Aged>,
    pub peers: Vec<Aged>,
}

/// A `game_rtt` entry offered to clients.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub(crate) struct TargetRtt {
    /// The target prefix.
    pub target: String,
    #[serde(flatten)]
    pub leg: Leg,
    /// Seconds since the node reported it.
    pub age_secs: u64,
}

/// Whether `target` (a /24 or /48) overlaps one of `destinations`.
fn intersects(target: &IpNet, destinations: &[Destination]) -> bool {
    destinations
        .iter()
        .any(|d| d.net.contains(&target.network()) || target.contains(&d.net.network()))
}

/// A node's fresh measurements towards one game: targets that overlap its destinations or
/// hold one of its probes, best cost first, at most [`MAX_GAME_RTT`].
pub(crate) fn game_rtt(
    targets: &[Aged],
    destinations: &[Destination],
    probes: &[std::net::SocketAddr],
) -> Vec<TargetRtt> {
    let probe_nets: Vec<IpNet> = probes.iter().map(|p| target_of(p.ip())).collect();
    let mut out: Vec<TargetRtt> = targets
        .iter()
        .filter(|t| t.age_secs <= FRESH_SECS as u64)
        .filter_map(|t| {
            let net = parse_target(&t.key)?;
            (intersects(&net, destinations) || probe_nets.contains(&net)).then(|| TargetRtt {
                target: t.key.clone(),
                leg: t.leg,
                age_secs: t.age_secs,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        a.leg
            .cost_us()
            .cmp(&b.leg.cost_us())
            .then_with(|| a.target.cmp(&b.target))
    });
    out.truncate(MAX_GAME_RTT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: serde_json::Value) -> Result<Vec<Measurement>, ApiError> {
        #[derive(Deserialize)]
        struct A {
            #[serde(default)]
            targets: Vec<TargetReport>,
            #[serde(default)]
            peers: BTreeMap<String, LegReport>,
        }
        let a: A = serde_json::from_value(json).unwrap();
        validate(&a.targets, &a.peers)
    }

    #[test]
    fn validation() {
        let ok = report(serde_json::json!({
            "targets": [{"target": "203.0.113.0/24", "rtt_us": 61000, "jitter_us": 800, "loss_permille": 0},
                        {"target": "2001:db8:1::/48", "rtt_us": 5}],
            "peers": {"node-ab": {"rtt_us": 12000, "jitter_us": 300, "loss_permille": 10}},
        }))
        .unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(ok[1].key, "2001:db8:1::/48");
        assert_eq!(ok[2].leg.cost_us(), 12000 + 2000);
        for bad in [
            serde_json::json!({"targets": [{"target": "203.0.113.1/24", "rtt_us": 1}]}),
            serde_json::json!({"targets": [{"target": "203.0.113.0/23", "rtt_us": 1}]}),
            serde_json::json!({"targets": [{"target": "203.0.113.7", "rtt_us": 1}]}),
            serde_json::json!({"targets": [{"target": "2001:db8::/64", "rtt_us": 1}]}),
            serde_json::json!({"targets": [{"target": "203.0.113.0/24", "rtt_us": -1}]}),
            serde_json::json!({"targets": [{"target": "203.0.113.0/24", "rtt_us": 1.5}]}),
            serde_json::json!({"targets": [{"target": "203.0.113.0/24", "rtt_us": 60_000_001u64}]}),
            serde_json::json!({"targets": [{"target": "203.0.113.0/24", "rtt_us": 1, "loss_permille": 1001}]}),
            serde_json::json!({"targets": [{"target": "203.0.113.0/24", "rtt_us": 1},
                                           {"target": "203.0.113.0/24", "rtt_us": 2}]}),
            serde_json::json!({"peers": {"bad id": {"rtt_us": 1}}}),
            serde_json::json!({"peers": {"node-a": {"rtt_us": 1, "jitter_us": 1e12}}}),
        ] {
            let e = report(bad.clone()).unwrap_err();
            assert_eq!(e.code(), "invalid_rtt", "{bad}");
        }
    }

    #[test]
    fn game_rtt_filters_sorts_and_caps() {
        let aged = |key: &str, rtt: u64, loss: u32, age: u64| Aged {
            key: key.into(),
            leg: Leg {
                rtt_us: rtt,
                jitter_us: 0,
                loss_permille: loss,
            },
            age_secs: age,
        };
        let dest: Vec<Destination> = vec!["203.0.112.0/23:1-2".parse().unwrap()];
        let probes = ["198.51.100.9:7".parse().unwrap()];
        let targets = vec![
            aged("203.0.113.0/24", 50_000, 0, 1),
            aged("203.0.112.0/24", 40_000, 100, 1), // 40 ms + 20 ms for 10 %
            aged("198.51.100.0/24", 45_000, 0, 1),
            aged("192.0.2.0/24", 1_000, 0, 1), // not this game's
            aged("203.0.113.0/24", 1, 0, 301), // stale (a duplicate key can't be stored)
        ];
        let got = game_rtt(&targets, &dest, &probes);
        let keys: Vec<&str> = got.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(
            keys,
            ["198.51.100.0/24", "203.0.113.0/24", "203.0.112.0/24"]
        );
        // A /24 destination inside a wider one and a wider destination around a /24 both count.
        let wide: Vec<Destination> = vec!["203.0.0.0/16:1".parse().unwrap()];
        assert_eq!(game_rtt(&targets[..1], &wide, &[]).len(), 1);
        let narrow: Vec<Destination> = vec!["203.0.113.7/32:1".parse().unwrap()];
        assert_eq!(game_rtt(&targets[..1], &narrow, &[]).len(), 1);
        let many: Vec<Aged> = (0..40)
            .map(|i| aged(&format!("203.0.{i}.0/24"), 1000 + i, 0, 0))
            .collect();
        assert_eq!(game_rtt(&many, &wide, &[]).len(), MAX_GAME_RTT);
        assert_eq!(
            target_of("2001:db8:1:2::5".parse().unwrap()).to_string(),
            "2001:db8:1::/48"
        );
    }
}
