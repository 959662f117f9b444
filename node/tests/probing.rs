//! A real node probing game servers on loopback: billing (a stand-in speaking the announce
//! contract) names a UDP echo server as a catalog probe target; the node measures it, reports
//! it in its next announce and its metrics, and sends nothing anywhere else. With private
//! destinations disallowed, the same catalog entry is refused and nothing is sent at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use plg_node::identity::{NodeState, Secret, TicketKey};
use plg_node::{Identity, NodeConfig, RunningNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;

/// Billing's side of `GET /v1/mesh` and `POST /v1/nodes/announce`; keeps announce bodies.
struct Billing {
    url: String,
    announces: Arc<Mutex<Vec<serde_json::Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Billing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ticket_key() -> TicketKey {
    let vk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    TicketKey {
        key_id: 1,
        public_key: base64::engine::general_purpose::STANDARD.encode(vk.to_bytes()),
    }
}

async fn billing(probes: serde_json::Value) -> Billing {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let announces = Arc::new(Mutex::new(Vec::new()));
    let seen = announces.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let (seen, probes) = (seen.clone(), probes.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body_start) = loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&req[..i]).into_owned(), i + 4);
                    }
                };
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while req.len() < body_start + len {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let body = &req[body_start..body_start + len];
                let answer = if head.starts_with("GET /v1/mesh") {
                    serde_json::json!({"ca_cert_pem": "", "ticket_keys": [ticket_key()]})
                } else if head.starts_with("POST /v1/nodes/announce") {
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_slice(body).unwrap_or_default());
                    serde_json::json!({"seeds": [], "probes": probes})
                } else {
                    serde_json::json!({})
                };
                let text = answer.to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    Billing {
        url,
        announces,
        task,
    }
}

/// A UDP socket that counts what it receives, echoing it back if `echo`.
async fn udp_server(echo: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            c.fetch_add(1, Ordering::Relaxed);
            if echo {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        }
    });
    (addr, count)
}

async fn start_node(dir: &std::path::Path, url: &str, allow_private: bool) -> RunningNode {
    let cert = rcgen::generate_simple_self_signed(vec!["probe-node.nodes.plg".to_owned()]).unwrap();
    let identity = Identity {
        dir: dir.to_owned(),
        state: NodeState {
            node_id: "probe-node".into(),
            server_name: "probe-node.nodes.plg".into(),
            billing_url: url.to_owned(),
            node_secret: Secret("secret".into()),
            ticket_keys: vec![ticket_key()],
            region: "local".into(),
            gossip_key: None,
            seeds: Vec::new(),
        },
        cert_pem: cert.cert.pem(),
        key_pem: Secret(cert.signing_key.serialize_pem()),
        ca_pem: cert.cert.pem(),
    };
    identity.save().unwrap();
    plg_node::start(
        identity,
        NodeConfig {
            control_listen: "127.0.0.1:0".parse().unwrap(),
            data_listen: "127.0.0.1:0".parse().unwrap(),
            allow_private_destinations: allow_private,
            ..NodeConfig::default()
        },
    )
    .await
    .unwrap()
}

async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_measures_the_catalog_echo_server_and_reports_it() {
    let (echo, echoed) = udp_server(true).await;
    let (unnamed, unnamed_got) = udp_server(false).await;
    let probes =
        serde_json::json!([{"game": "echo-game", "query": "echo", "addrs": [echo.to_string()]}]);
    let billing = billing(probes).await;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let node = start_node(dir.path(), &billing.url, true).await;

    eventually(Duration::from_secs(10), "a measured target", || {
        node.target_rtts()
            .iter()
            .any(|(k, s)| k == "127.0.0.0/24" && s.loss == 0.0 && !s.srtt.is_zero())
    })
    .await;
    // A few rounds, to see the pacing (one probe per prefix per second).
    eventually(Duration::from_secs(10), "three answered probes", || {
        node.metrics.snapshot().probes_answered >= 3
    })
    .await;
    node.announce_now();
    eventually(Duration::from_secs(10), "an announce with targets", || {
        billing
            .announces
            .lock()
            .unwrap()
            .iter()
            .any(|a| a["targets"][0]["target"] == "127.0.0.0/24")
    })
    .await;
    let announce = billing
        .announces
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|a| a.get("targets").is_some())
        .cloned()
        .unwrap();
    println!("announce targets: {}", announce["targets"]);
    let t = &announce["targets"][0];
    assert!(t["rtt_us"].as_u64().unwrap() > 0 && t["rtt_us"].as_u64().unwrap() < 1_000_000);
    assert_eq!(t["loss_permille"], 0);

    let text = node.prometheus();
    let gauge = text
        .lines()
        .find(|l| l.starts_with("plg_node_target_rtt_seconds{target=\"127.0.0.0/24\"}"))
        .unwrap_or_else(|| panic!("no RTT gauge in\n{text}"));
    println!("{gauge}");
    let snap = node.metrics.snapshot();
    assert!(snap.probes_answered >= 1, "{snap:?}");
    assert_eq!(snap.probe_targets, 1);
    assert_eq!(snap.probe_targets_refused, 0);
    // One probe per prefix per second at most, and nothing to the address nobody named.
    let secs = started.elapsed().as_secs_f64();
    let probes = echoed.load(Ordering::Relaxed);
    println!(
        "{probes} probes in {secs:.1} s; sent {}, answered {}; unnamed socket got {}",
        snap.probes_sent,
        snap.probes_answered,
        unnamed_got.load(Ordering::Relaxed)
    );
    assert!(
        probes as f64 <= secs + 1.0,
        "{probes} probes in {secs:.1} s"
    );
    assert_eq!(
        unnamed_got.load(Ordering::Relaxed),
        0,
        "{unnamed} was probed"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_refuses_to_probe_private_addresses_unless_allowed() {
    let (echo, echoed) = udp_server(true).await;
    let probes =
        serde_json::json!([{"game": "echo-game", "query": "echo", "addrs": [echo.to_string()]}]);
    let billing = billing(probes).await;
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), &billing.url, false).await;
    eventually(
        Duration::from_secs(10),
        "the catalog address refused",
        || node.metrics.snapshot().probe_targets_refused >= 1,
    )
    .await;
    // Silence is the expected outcome: give the prober two of its one-second rounds to
    // (wrongly) send something.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = node.metrics.snapshot();
    println!(
        "refused {}, sent {}, echo server got {}",
        snap.probe_targets_refused,
        snap.probes_sent,
        echoed.load(Ordering::Relaxed)
    );
    assert_eq!(snap.probes_sent, 0);
    assert_eq!(snap.probe_targets, 0);
    assert_eq!(echoed.load(Ordering::Relaxed), 0);
    assert!(node.target_rtts().is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pings_a_catalog_address_without_a_query_protocol() {
    if let Err(e) = plg_node::prober::IcmpSocket::open(false) {
        println!(
            "skipped: no ICMP socket here ({e}): not root and net.ipv4.ping_group_range excludes us"
        );
        return;
    }
    let probes = serde_json::json!([{"game": "icmp-game", "addrs": ["127.0.0.1:27015"]}]);
    let billing = billing(probes).await;
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), &billing.url, true).await;
    eventually(Duration::from_secs(10), "two answered pings", || {
        node.metrics.snapshot().probes_answered >= 2
    })
    .await;
    let rtts = node.target_rtts();
    println!("ICMP: {rtts:?}");
    assert_eq!(rtts.len(), 1);
    assert_eq!(rtts[0].0, "127.0.0.0/24");
    assert_eq!(rtts[0].1.loss, 0.0);
    node.shutdown().await;
}
