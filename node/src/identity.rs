//! The node's identity on disk: private key, mesh certificate, CA, and what billing told it
//! at join time. `join` creates it; `load` reads it back.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// A ticket-verification key as billing publishes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TicketKey {
    /// Key id carried in tickets.
    pub key_id: u32,
    /// Base64 (standard) of the 32-byte Ed25519 public key.
    pub public_key: String,
}

impl TicketKey {
    /// Decodes the public key.
    pub fn verifying_key(&self) -> Result<VerifyingKey> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.public_key)
            .context("ticket key is not base64")?;
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| anyhow::anyhow!("ticket key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&raw).context("ticket key is not a valid Ed25519 point")
    }
}

/// Decodes a list of ticket keys into verifier input.
pub fn decode_keys(keys: &[TicketKey]) -> Result<Vec<(u32, VerifyingKey)>> {
    keys.iter()
        .map(|k| Ok((k.key_id, k.verifying_key()?)))
        .collect()
}

fn decode_gossip_key(b64: &str) -> Result<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("gossip key is not base64")?
        .try_into()
        .map_err(|_| anyhow::anyhow!("gossip key is not 32 bytes"))
}

/// Answer of `GET /v1/mesh`.
#[derive(Clone, Debug, Deserialize)]
pub struct MeshInfo {
    /// Mesh CA certificate (PEM).
    pub ca_cert_pem: String,
    /// Ticket keys that can still be valid.
    pub ticket_keys: Vec<TicketKey>,
}

/// Secret newtype: never printed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What `node.json` in the data dir holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeState {
    /// Id billing assigned.
    pub node_id: String,
    /// DNS name in the node certificate; clients verify it.
    pub server_name: String,
    /// Billing base URL.
    pub billing_url: String,
    /// Bearer secret for announcing to billing.
    pub node_secret: Secret,
    /// Ticket keys last fetched from billing (used when billing is unreachable).
    pub ticket_keys: Vec<TicketKey>,
    /// Region given at join (published to the mesh).
    #[serde(default = "unknown_region")]
    pub region: String,
    /// Base64 of the mesh gossip key (absent in identities from before the mesh).
    #[serde(default)]
    pub gossip_key: Option<Secret>,
    /// Gossip addresses of other nodes, last heard from billing: where to join the mesh.
    #[serde(default)]
    pub seeds: Vec<String>,
}

fn unknown_region() -> String {
    "unknown".to_owned()
}

/// What a node tells billing about itself and its view of the mesh at each announce.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AnnounceStatus {
    /// Where it gossips.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_addr: Option<std::net::SocketAddr>,
    /// `ok`, `degraded` or `overloaded`.
    pub health: &'static str,
    /// Taking no new sessions.
    pub draining: bool,
    /// Sessions served now.
    pub sessions: u32,
    /// Peers its failure detector holds dead.
    pub dead_peers: Vec<String>,
    /// What it measured to game server prefixes, best-ranked first (≤ 256).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetRtt>,
    /// What it measured to peer nodes (≤ 1024).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, LegRtt>,
}

/// Most peers in an announce (billing's limit).
pub const MAX_ANNOUNCED_PEERS: usize = 1024;
/// Highest RTT or jitter billing accepts, in microseconds.
const MAX_ANNOUNCED_US: u64 = 60_000_000;

/// One measured leg, as billing stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LegRtt {
    /// Smoothed RTT, µs.
    pub rtt_us: u64,
    /// Smoothed jitter, µs.
    pub jitter_us: u64,
    /// Loss among the last probes, ‰.
    pub loss_permille: u16,
}

impl From<&plg_mesh::RttSummary> for LegRtt {
    fn from(s: &plg_mesh::RttSummary) -> Self {
        let us = |d: std::time::Duration| (d.as_micros() as u64).min(MAX_ANNOUNCED_US);
        LegRtt {
            rtt_us: us(s.srtt),
            jitter_us: us(s.jitter),
            loss_permille: (f64::from(s.loss) * 1000.0).round().clamp(0.0, 1000.0) as u16,
        }
    }
}

/// A game server prefix (`203.0.113.0/24`, `2001:db8:1::/48`) and what was measured to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetRtt {
    /// The target key (`plg_proto::query::target_key`).
    pub target: String,
    /// The figures.
    #[serde(flatten)]
    pub leg: LegRtt,
}

/// What billing answers to an announce.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnnounceReply {
    /// Other nodes' gossip addresses.
    pub seeds: Vec<String>,
    /// Catalog probe addresses to measure (absent from older billing: none).
    pub probes: Vec<crate::targets::CatalogProbe>,
}

impl AnnounceReply {
    /// Reads billing's JSON leniently: a field or entry this node cannot read is skipped
    /// (and logged), never the whole answer.
    pub fn from_json(v: &serde_json::Value) -> AnnounceReply {
        #[derive(Deserialize)]
        struct Entry {
            game: String,
            #[serde(default)]
            game_id: Option<u32>,
            #[serde(default)]
            query: Option<String>,
            #[serde(default)]
            addrs: Vec<String>,
        }
        let seeds = serde_json::from_value(v["seeds"].clone()).unwrap_or_default();
        let mut probes = Vec::new();
        for e in v["probes"].as_array().into_iter().flatten() {
            let Ok(e) = serde_json::from_value::<Entry>(e.clone()) else {
                tracing::warn!("billing sent a probe entry this node cannot read; skipped");
                continue;
            };
            let query = e.query.as_deref().and_then(|q| match q.parse() {
                Ok(k) => Some(k),
                Err(err) => {
                    tracing::warn!(game = %e.game, error = %err, "probing with ICMP instead");
                    None
                }
            });
            let addrs = e
                .addrs
                .iter()
                .filter_map(|a| match a.parse() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        tracing::warn!(game = %e.game, addr = %a, "unreadable probe address skipped");
                        None
                    }
                })
                .collect();
            probes.push(crate::targets::CatalogProbe {
                game: e.game,
                game_id: e.game_id,
                query,
                addrs,
            });
        }
        AnnounceReply { seeds, probes }
    }
}

/// Everything the node needs to run, loaded from its data dir.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Data dir it was loaded from.
    pub dir: PathBuf,
    /// Persistent state.
    pub state: NodeState,
    /// Node certificate (PEM).
    pub cert_pem: String,
    /// Node private key (PEM, PKCS#8).
    pub key_pem: Secret,
    /// Mesh CA certificate (PEM).
    pub ca_pem: String,
}

#[derive(Serialize)]
struct JoinRequest<'a> {
    token: &'a str,
    name: &'a str,
    region: &'a str,
    public_key_pem: String,
}

#[derive(Deserialize)]
struct JoinResponse {
    node_id: String,
    server_name: String,
    cert_pem: String,
    ca_cert_pem: String,
    node_secret: String,
    ticket_keys: Vec<TicketKey>,
    #[serde(default)]
    gossip_key: Option<String>,
    #[serde(default)]
    seeds: Vec<String>,
}

/// Parses billing's JSON error body into a sentence.
pub(crate) async fn billing_error(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or("unknown");
    let msg = body["error"]["message"].as_str().unwrap_or("no detail");
    anyhow::anyhow!("billing answered {status}: {msg} ({code})")
}

const STATE_FILE: &str = "node.json";
const KEY_FILE: &str = "node.key";
const CERT_FILE: &str = "node.crt";
const CA_FILE: &str = "ca.crt";

/// Joins the mesh: creates a key pair, asks billing for a certificate with a join token, and
/// writes the identity into `dir`. Refuses to overwrite an existing identity.
pub async fn join(
    billing_url: &str,
    token: &str,
    name: &str,
    region: &str,
    dir: &Path,
) -> Result<Identity> {
    if dir.join(STATE_FILE).exists() {
        bail!(
            "{} already holds a node identity; use `plg-node run` or pick another --data-dir",
            dir.display()
        );
    }
    let key = rcgen::KeyPair::generate().context("generating node key")?;
    let url = format!("{}/v1/nodes/join", billing_url.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .post(&url)
        .timeout(std::time::Duration::from_secs(15))
        .json(&JoinRequest {
            token,
            name,
            region,
            public_key_pem: key.public_key_pem(),
        })
        .send()
        .await
        .with_context(|| format!("cannot reach billing at {url}"))?;
    if !resp.status().is_success() {
        return Err(billing_error(resp).await.context("join refused"));
    }
    let j: JoinResponse = resp
        .json()
        .await
        .context("billing sent an unexpected join answer")?;
    decode_keys(&j.ticket_keys)?;
    if let Some(k) = &j.gossip_key {
        decode_gossip_key(k)?;
    }
    let id = Identity {
        dir: dir.to_owned(),
        state: NodeState {
            node_id: j.node_id,
            server_name: j.server_name,
            billing_url: billing_url.trim_end_matches('/').to_owned(),
            node_secret: Secret(j.node_secret),
            ticket_keys: j.ticket_keys,
            region: region.to_owned(),
            gossip_key: j.gossip_key.map(Secret),
            seeds: j.seeds,
        },
        cert_pem: j.cert_pem,
        key_pem: Secret(key.serialize_pem()),
        ca_pem: j.ca_cert_pem,
    };
    id.save()?;
    Ok(id)
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

impl Identity {
    /// Reads the identity written by [`join`].
    pub fn load(dir: &Path) -> Result<Identity> {
        let read = |f: &str| {
            fs::read_to_string(dir.join(f)).with_context(|| {
                format!(
                    "reading {} (has this node joined? run `plg-node join` first)",
                    dir.join(f).display()
                )
            })
        };
        let state: NodeState =
            serde_json::from_str(&read(STATE_FILE)?).context("node.json is corrupt")?;
        Ok(Identity {
            dir: dir.to_owned(),
            state,
            cert_pem: read(CERT_FILE)?,
            key_pem: Secret(read(KEY_FILE)?),
            ca_pem: read(CA_FILE)?,
        })
    }

    /// Writes every file atomically; the key and state are readable by the owner only.
    pub fn save(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        write_private(&self.dir.join(KEY_FILE), self.key_pem.0.as_bytes())?;
        write_private(&self.dir.join(CERT_FILE), self.cert_pem.as_bytes())?;
        write_private(&self.dir.join(CA_FILE), self.ca_pem.as_bytes())?;
        write_private(
            &self.dir.join(STATE_FILE),
            serde_json::to_string_pretty(&self.state)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Fetches the current ticket keys from billing; on success they replace the cached ones.
    pub async fn refresh_keys(&mut self) -> Result<()> {
        let url = format!("{}/v1/mesh", self.state.billing_url);
        let resp = reqwest::Client::new()
            .get(&url)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("cannot reach billing at {url}"))?;
        if !resp.status().is_success() {
            return Err(billing_error(resp).await);
        }
        let mesh: MeshInfo = resp.json().await.context("unexpected /v1/mesh answer")?;
        decode_keys(&mesh.ticket_keys)?;
        if mesh.ticket_keys != self.state.ticket_keys {
            self.state.ticket_keys = mesh.ticket_keys;
            self.save()?;
        }
        Ok(())
    }

    /// The mesh gossip key, if billing gave one at join.
    pub fn gossip_key(&self) -> Result<Option<[u8; 32]>> {
        self.state
            .gossip_key
            .as_ref()
            .map(|k| decode_gossip_key(&k.0))
            .transpose()
    }

    /// Tells billing where clients can reach this node, how it sees the mesh and what it
    /// measured; billing answers with the other nodes' gossip addresses (kept as seeds for
    /// the next start) and the catalog addresses to probe.
    pub async fn announce(
        &mut self,
        control: std::net::SocketAddr,
        data: std::net::SocketAddr,
        status: &AnnounceStatus,
    ) -> Result<AnnounceReply> {
        #[derive(Serialize)]
        struct Body<'a> {
            control_addr: String,
            data_addr: String,
            #[serde(flatten)]
            status: &'a AnnounceStatus,
        }
        let url = format!("{}/v1/nodes/announce", self.state.billing_url);
        let resp = reqwest::Client::new()
            .post(&url)
            .timeout(std::time::Duration::from_secs(10))
            .bearer_auth(&self.state.node_secret.0)
            .json(&Body {
                control_addr: control.to_string(),
                data_addr: data.to_string(),
                status,
            })
            .send()
            .await
            .with_context(|| format!("cannot reach billing at {url}"))?;
        if !resp.status().is_success() {
            return Err(billing_error(resp).await.context("announce refused"));
        }
        // Older billing answered 204 with no body: no seeds or probes then.
        let reply = resp
            .json::<serde_json::Value>()
            .await
            .map(|v| AnnounceReply::from_json(&v))
            .unwrap_or_default();
        if !reply.seeds.is_empty() && reply.seeds != self.state.seeds {
            self.state.seeds = reply.seeds.clone();
            self.save()?;
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plg_proto::query::QueryKind;

    #[test]
    fn announce_reply_is_read_leniently() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"seeds":["10.0.0.1:7946"],"probes":[
                {"game":"cs2","query":"a2s","addrs":["155.133.226.71:27015","nonsense"]},
                {"game":"q","query":"gamespy","addrs":["203.0.113.1:1"]},
                {"game":"x","addrs":["[2001:db8::1]:9"]},
                {"game":7}
            ]}"#,
        )
        .unwrap();
        let r = AnnounceReply::from_json(&v);
        assert_eq!(r.seeds, ["10.0.0.1:7946"]);
        assert_eq!(r.probes.len(), 3);
        assert_eq!(r.probes[0].query, Some(QueryKind::A2s));
        assert_eq!(r.probes[0].addrs, ["155.133.226.71:27015".parse().unwrap()]);
        assert_eq!(r.probes[1].query, None, "unknown protocol: ICMP");
        assert_eq!(r.probes[2].addrs, ["[2001:db8::1]:9".parse().unwrap()]);
        // Older billing: seeds only, or nothing at all.
        let old = AnnounceReply::from_json(&serde_json::json!({"seeds": []}));
        assert_eq!(old, AnnounceReply::default());
        assert_eq!(
            AnnounceReply::from_json(&serde_json::Value::Null),
            AnnounceReply::default()
        );
    }

    #[test]
    fn announce_fields_follow_the_contract() {
        let mut peers = BTreeMap::new();
        peers.insert(
            "fra-2".to_owned(),
            LegRtt::from(&plg_mesh::RttSummary::from_rtt(
                std::time::Duration::from_millis(12),
            )),
        );
        let status = AnnounceStatus {
            health: "ok",
            targets: vec![TargetRtt {
                target: "203.0.113.0/24".into(),
                leg: LegRtt::from(&plg_mesh::RttSummary {
                    srtt: std::time::Duration::from_secs(100),
                    jitter: std::time::Duration::from_micros(800),
                    p50: std::time::Duration::ZERO,
                    p99: std::time::Duration::ZERO,
                    loss: 0.0126,
                }),
            }],
            peers,
            ..AnnounceStatus::default()
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(
            v["targets"],
            serde_json::json!([{"target":"203.0.113.0/24","rtt_us":60000000,"jitter_us":800,"loss_permille":13}])
        );
        assert_eq!(
            v["peers"],
            serde_json::json!({"fra-2":{"rtt_us":12000,"jitter_us":0,"loss_permille":0}})
        );
        // Nothing measured: the fields are left out (older billing never sees them).
        let v = serde_json::to_value(AnnounceStatus::default()).unwrap();
        assert!(v.get("targets").is_none() && v.get("peers").is_none());
    }
}
