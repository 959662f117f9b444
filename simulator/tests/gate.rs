//! End-to-end gate: billing, a relay node and a game server on loopback, real sockets, real
//! QUIC, real SQLite; the client and hostile peers speak to the node's real ports.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use ed25519_dalek::SigningKey;
use plg_client::{Proxy, ProxyEvent, Tunnel, TunnelError};
use plg_node::identity::TicketKey;
use plg_node::{MetricsSnapshot, NodeConfig, RunningNode};
use plg_proto::control::RejectCode;
use plg_proto::frame::{ErrorCode, Frame};
use plg_proto::{Destination, Ticket};
use plg_sim::echo::EchoServer;
use plg_sim::local_mesh::{DEMO_GAME, LocalMesh, loopback_node_config};
use plg_sim::traffic::{self, TrafficSpec};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` until it holds or `WAIT` passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn metrics(node: &RunningNode) -> MetricsSnapshot {
    node.metrics.snapshot()
}

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Receives one datagram or gives up after `d`.
async fn recv_within(s: &UdpSocket, d: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(d, s.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// A session opened the real way (billing ticket, QUIC), plus a raw UDP socket to the node's
/// data port so a test can send hand-made frames.
async fn raw_session(mesh: &LocalMesh, email: &str) -> (Tunnel, UdpSocket) {
    let billing = mesh.gamer(email).await.unwrap();
    let (_, _, tunnel) = plg_client::open_session(&billing, &mesh.ca_pem, DEMO_GAME, None)
        .await
        .unwrap();
    let sock = UdpSocket::bind(loopback()).await.unwrap();
    sock.connect(tunnel.data_addr).await.unwrap();
    (tunnel, sock)
}

/// Joins another node through billing and starts it trusting only `key` (as ticket key
/// `key_id`), without talking to billing, so a test can sign any ticket it needs. Returns the
/// node and the TLS name in its certificate.
async fn node_trusting(
    mesh: &LocalMesh,
    name: &str,
    key_id: u32,
    key: &SigningKey,
    cfg: NodeConfig,
) -> (RunningNode, String) {
    let mut id = mesh.join_identity(name).await.unwrap();
    id.state.ticket_keys = vec![TicketKey {
        key_id,
        public_key: base64::engine::general_purpose::STANDARD
            .encode(key.verifying_key().to_bytes()),
    }];
    let server_name = id.state.server_name.clone();
    let node = plg_node::start(
        id,
        NodeConfig {
            talk_to_billing: false,
            ..cfg
        },
    )
    .await
    .unwrap();
    (node, server_name)
}

#[tokio::test]
async fn round_trip_through_the_relay() {
    let mesh = LocalMesh::start().await.unwrap();
    let billing = mesh.gamer("rt@example.com").await.unwrap();
    let (grant, node, tunnel) = plg_client::open_session(&billing, &mesh.ca_pem, DEMO_GAME, None)
        .await
        .unwrap();
    assert_eq!(
        grant.destinations,
        vec![format!("127.0.0.1/32:{}", mesh.game.addr.port())]
    );
    assert_eq!(node.control_addr, mesh.node.control_addr.to_string());
    let proxy = Proxy::start(tunnel, loopback(), mesh.game.addr)
        .await
        .unwrap();

    let spec = TrafficSpec {
        rate: 200,
        duration: Duration::from_millis(500),
        ..Default::default()
    };
    let report = traffic::run(proxy.local_addr, spec).await.unwrap();
    assert_eq!(report.sent, 100);
    assert_eq!(
        report.received, report.sent,
        "every echo must come back through the relay"
    );
    assert_eq!(report.corrupted, 0);

    let m = metrics(&mesh.node);
    assert_eq!(m.upstream_packets_out, 100);
    assert_eq!(m.upstream_packets_in, 100);
    assert_eq!(m.flows_opened, 1);
    // The game server saw one source, and it is the node's upstream socket, not the client.
    let sources = mesh.game.sources.lock().await.clone();
    assert_eq!(sources.len(), 1);
    assert!(!sources.contains(&proxy.local_addr));

    proxy.stop().await;
    eventually("node sees the CLOSE", || async {
        metrics(&mesh.node).sessions_closed == 1
    })
    .await;
    mesh.stop().await;
}

async fn expect_rejected(
    mesh: &LocalMesh,
    node: &RunningNode,
    server_name: &str,
    ticket: &[u8],
    code: RejectCode,
    words: &str,
) {
    match Tunnel::open(node.control_addr, server_name, &mesh.ca_pem, ticket).await {
        Err(TunnelError::Rejected { code: got, message }) => {
            assert_eq!(got, code, "{message}");
            assert!(
                message.contains(words),
                "message {message:?} should mention {words:?}"
            );
        }
        other => panic!("expected a {code:?} rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn forged_expired_and_wrong_key_tickets_are_rejected() {
    let mesh = LocalMesh::start().await.unwrap();
    let billing = mesh.gamer("tickets@example.com").await.unwrap();
    let grant = billing.request_session(DEMO_GAME).await.unwrap();
    let good = grant.ticket_bytes().unwrap();
    let server_name = &grant.nodes[0].server_name;
    let (ticket, _, _) = Ticket::decode_unverified(&good).unwrap();

    // Forged: a claim changed after signing (another account).
    let mut forged = good.clone();
    forged[29] ^= 0x01;
    expect_rejected(
        &mesh,
        &mesh.node,
        server_name,
        &forged,
        RejectCode::InvalidTicket,
        "signature",
    )
    .await;
    // Wrong key: billing's key id, someone else's key.
    let attacker = SigningKey::from_bytes(&[9; 32]);
    let wrong = Ticket {
        account_id: 1,
        ..ticket.clone()
    }
    .sign(&attacker);
    expect_rejected(
        &mesh,
        &mesh.node,
        server_name,
        &wrong,
        RejectCode::InvalidTicket,
        "signature",
    )
    .await;
    // Unknown key id.
    let unknown = Ticket {
        key_id: ticket.key_id + 1000,
        ..ticket.clone()
    }
    .sign(&attacker);
    expect_rejected(
        &mesh,
        &mesh.node,
        server_name,
        &unknown,
        RejectCode::InvalidTicket,
        "unknown key id",
    )
    .await;
    // Garbage.
    expect_rejected(
        &mesh,
        &mesh.node,
        server_name,
        b"not a ticket",
        RejectCode::MalformedTicket,
        "malformed",
    )
    .await;

    // Expiry needs a key we hold: a second node trusting a test key (and nothing else).
    let test_key = SigningKey::from_bytes(&[5; 32]);
    let (node2, server_name2) = node_trusting(
        &mesh,
        "node-test-key",
        77,
        &test_key,
        loopback_node_config(),
    )
    .await;
    let fresh = Ticket {
        key_id: 77,
        issued_at: now() - 100,
        expires_at: now() + 3600,
        ..ticket.clone()
    };
    let expired = Ticket {
        expires_at: now() - 1,
        ..fresh.clone()
    };
    expect_rejected(
        &mesh,
        &node2,
        &server_name2,
        &expired.sign(&test_key),
        RejectCode::TicketExpired,
        "expired",
    )
    .await;
    let future = Ticket {
        issued_at: now() + 3600,
        expires_at: now() + 7200,
        ..fresh.clone()
    };
    expect_rejected(
        &mesh,
        &node2,
        &server_name2,
        &future.sign(&test_key),
        RejectCode::TicketExpired,
        "future",
    )
    .await;
    // Billing's genuine ticket is foreign to this node.
    expect_rejected(
        &mesh,
        &node2,
        &server_name2,
        &good,
        RejectCode::InvalidTicket,
        "unknown key id",
    )
    .await;
    // The control case: the same node accepts a valid ticket, and billing's node accepts billing's.
    Tunnel::open(
        node2.control_addr,
        &server_name2,
        &mesh.ca_pem,
        &fresh.sign(&test_key),
    )
    .await
    .unwrap()
    .close()
    .await;
    Tunnel::open(mesh.node.control_addr, server_name, &mesh.ca_pem, &good)
        .await
        .unwrap()
        .close()
        .await;

    assert_eq!(metrics(&mesh.node).tickets_rejected, 4);
    assert_eq!(metrics(&node2).tickets_rejected, 3);
    // A node certificate for another name is refused by the client (TLS name check).
    let err = Tunnel::open(mesh.node.control_addr, &server_name2, &mesh.ca_pem, &good)
        .await
        .unwrap_err();
    assert!(matches!(err, TunnelError::Connect { .. }), "{err:?}");
    node2.shutdown().await;
    mesh.stop().await;
}

#[tokio::test]
async fn disallowed_destination_is_refused() {
    let mesh = LocalMesh::start().await.unwrap();
    let other_server = EchoServer::start(loopback()).await.unwrap();
    let billing = mesh.gamer("dest@example.com").await.unwrap();
    let (_, _, tunnel) = plg_client::open_session(&billing, &mesh.ca_pem, DEMO_GAME, None)
        .await
        .unwrap();
    let mut proxy = Proxy::start(tunnel, loopback(), other_server.addr)
        .await
        .unwrap();
    let game = UdpSocket::bind(loopback()).await.unwrap();
    game.send_to(b"hello, not-allowed server", proxy.local_addr)
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, proxy.events.recv())
        .await
        .expect("no event")
        .expect("events closed");
    assert_eq!(ev, ProxyEvent::DestinationRefused(other_server.addr));
    // Once told, the client stops asking.
    game.send_to(b"again", proxy.local_addr).await.unwrap();
    eventually("proxy drops data for the refused flow", || async {
        proxy
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    assert!(metrics(&mesh.node).refused_destination >= 1);
    assert_eq!(metrics(&mesh.node).upstream_packets_out, 0);
    assert_eq!(
        other_server.count(),
        0,
        "nothing may reach a destination the ticket does not allow"
    );
    proxy.stop().await;

    // Node policy on top of the ticket: a node without --allow-private-destinations refuses
    // loopback even when a ticket allows it.
    let test_key = SigningKey::from_bytes(&[6; 32]);
    let strict_cfg = NodeConfig {
        allow_private_destinations: false,
        ..loopback_node_config()
    };
    let (strict, name) = node_trusting(&mesh, "node-strict", 1, &test_key, strict_cfg).await;
    let ticket = Ticket {
        key_id: 1,
        issued_at: now(),
        expires_at: now() + 600,
        session_id: 4242,
        account_id: 1,
        plan: 0,
        game_id: 1,
        path_limit: 1,
        bandwidth_kbps: 0,
        destinations: vec![
            format!("127.0.0.1/32:{}", mesh.game.addr.port())
                .parse::<Destination>()
                .unwrap(),
        ],
    };
    let mut t = Tunnel::open(
        strict.control_addr,
        &name,
        &mesh.ca_pem,
        &ticket.sign(&test_key),
    )
    .await
    .unwrap();
    let sock = UdpSocket::bind(loopback()).await.unwrap();
    sock.connect(t.data_addr).await.unwrap();
    let mut out = Vec::new();
    t.session.seal(
        0,
        &Frame::FlowOpen {
            flow: 0,
            dst: mesh.game.addr,
        },
        &mut out,
    );
    sock.send(&out).await.unwrap();
    let mut reply = recv_within(&sock, WAIT).await.expect("an ERROR frame");
    let (_, frame) = t.session.open(&mut reply).unwrap();
    assert_eq!(frame, Frame::error(ErrorCode::DestinationNotAllowed, 0));
    assert_eq!(metrics(&strict).refused_destination, 1);
    t.close().await;
    strict.shutdown().await;
    mesh.stop().await;
}

#[tokio::test]
async fn ten_thousand_random_datagrams_leave_the_node_serving() {
    let mesh = LocalMesh::start().await.unwrap();
    let (mut tunnel, sock) = raw_session(&mesh, "flood@example.com").await;
    let session_id = tunnel.session.id();
    let attacker = UdpSocket::bind(loopback()).await.unwrap();
    attacker.connect(mesh.node.data_addr).await.unwrap();
    let mut rng = fastrand::Rng::with_seed(2024);
    const N: u64 = 10_000;
    for i in 0..N {
        let len = rng.usize(0..2100);
        let mut d: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // A third look like frames of the live session, to get past the header checks.
        if i % 3 == 0 && d.len() >= 36 {
            d[0] = 1;
            d[1] = rng.u8(1..=6);
            d[2] = 0;
            d[3] = 0;
            d[4..12].copy_from_slice(&session_id.to_be_bytes());
        }
        attacker.send(&d).await.unwrap();
        // Pace so loopback's socket buffer doesn't overflow and every datagram is counted.
        if i % 25 == 24 {
            eventually("node drains the flood", || async {
                metrics(&mesh.node).datagrams_in > i
            })
            .await;
        }
    }
    eventually("every datagram counted", || async {
        metrics(&mesh.node).datagrams_in == N
    })
    .await;
    let m = metrics(&mesh.node);
    let dropped = m.dropped_malformed
        + m.dropped_unknown_session
        + m.dropped_auth
        + m.dropped_replay
        + m.dropped_path
        // Random bytes that start with the mesh marker (0xF1), from a non-member.
        + m.dropped_mesh;
    assert_eq!(dropped, N, "{m:?}");
    assert!(
        m.dropped_auth > 1000,
        "the session-shaped third must reach authentication: {m:?}"
    );
    assert_eq!(m.datagrams_out, 0, "no datagram may be answered: {m:?}");
    assert_eq!(
        recv_within(&attacker, Duration::from_millis(200)).await,
        None
    );

    // Still serving: the live session works.
    let mut out = Vec::new();
    tunnel.session.seal(
        0,
        &Frame::FlowOpen {
            flow: 0,
            dst: mesh.game.addr,
        },
        &mut out,
    );
    sock.send(&out).await.unwrap();
    tunnel.session.seal(
        0,
        &Frame::Data {
            flow: 0,
            payload: b"still alive",
        },
        &mut out,
    );
    sock.send(&out).await.unwrap();
    let mut reply = recv_within(&sock, WAIT)
        .await
        .expect("echo after the flood");
    assert_eq!(
        tunnel.session.open(&mut reply).unwrap().1,
        Frame::Data {
            flow: 0,
            payload: b"still alive"
        }
    );
    tunnel.close().await;
    mesh.stop().await;
}

#[tokio::test]
async fn replayed_frames_are_dropped() {
    let mesh = LocalMesh::start().await.unwrap();
    let (mut tunnel, sock) = raw_session(&mesh, "replay@example.com").await;
    let mut open = Vec::new();
    tunnel.session.seal(
        0,
        &Frame::FlowOpen {
            flow: 0,
            dst: mesh.game.addr,
        },
        &mut open,
    );
    let mut data = Vec::new();
    tunnel.session.seal(
        0,
        &Frame::Data {
            flow: 0,
            payload: b"once",
        },
        &mut data,
    );
    sock.send(&open).await.unwrap();
    sock.send(&data).await.unwrap();
    let mut reply = recv_within(&sock, WAIT).await.expect("echo");
    assert_eq!(
        tunnel.session.open(&mut reply).unwrap().1,
        Frame::Data {
            flow: 0,
            payload: b"once"
        }
    );

    // The same sealed bytes again, from the client's address and from an attacker's.
    sock.send(&data).await.unwrap();
    let attacker = UdpSocket::bind(loopback()).await.unwrap();
    attacker.send_to(&data, tunnel.data_addr).await.unwrap();
    attacker.send_to(&open, tunnel.data_addr).await.unwrap();
    eventually("replays counted", || async {
        metrics(&mesh.node).dropped_replay == 3
    })
    .await;
    assert_eq!(
        mesh.game.count(),
        1,
        "the game server must see the packet exactly once"
    );
    assert_eq!(recv_within(&sock, Duration::from_millis(200)).await, None);
    assert_eq!(
        recv_within(&attacker, Duration::from_millis(50)).await,
        None
    );

    // The attacker's replay didn't move the session to its address: replies still reach us.
    tunnel.session.seal(
        0,
        &Frame::Data {
            flow: 0,
            payload: b"twice",
        },
        &mut data,
    );
    sock.send(&data).await.unwrap();
    let mut reply = recv_within(&sock, WAIT).await.expect("echo");
    assert_eq!(
        tunnel.session.open(&mut reply).unwrap().1,
        Frame::Data {
            flow: 0,
            payload: b"twice"
        }
    );
    tunnel.close().await;
    mesh.stop().await;
}

#[tokio::test]
async fn answers_are_never_larger_than_requests() {
    let mesh = LocalMesh::start().await.unwrap();
    let (mut tunnel, sock) = raw_session(&mesh, "amp@example.com").await;
    let mut out = Vec::new();
    // Ping → pong of exactly the same size.
    tunnel.session.seal(
        0,
        &Frame::Ping {
            id: 7,
            timestamp_us: 8,
        },
        &mut out,
    );
    let ping_len = out.len();
    sock.send(&out).await.unwrap();
    let mut pong = recv_within(&sock, WAIT).await.expect("pong");
    assert_eq!(pong.len(), ping_len);
    assert_eq!(
        tunnel.session.open(&mut pong).unwrap().1,
        Frame::Pong {
            id: 7,
            timestamp_us: 8
        }
    );
    // DATA on an unopened flow with an empty payload: the ERROR answer would be larger, so none.
    tunnel.session.seal(
        0,
        &Frame::Data {
            flow: 3,
            payload: b"",
        },
        &mut out,
    );
    sock.send(&out).await.unwrap();
    assert_eq!(recv_within(&sock, Duration::from_millis(300)).await, None);
    // With a payload the ERROR fits and tells the client what is wrong.
    tunnel.session.seal(
        0,
        &Frame::Data {
            flow: 3,
            payload: b"0123456789",
        },
        &mut out,
    );
    let req = out.len();
    sock.send(&out).await.unwrap();
    let mut err = recv_within(&sock, WAIT).await.expect("error frame");
    assert!(err.len() <= req);
    assert_eq!(
        tunnel.session.open(&mut err).unwrap().1,
        Frame::error(ErrorCode::UnknownFlow, 3)
    );
    assert_eq!(metrics(&mesh.node).dropped_unknown_flow, 2);
    tunnel.close().await;
    mesh.stop().await;
}

#[tokio::test]
async fn renewal_in_place_keeps_the_session_and_its_source() {
    let mesh = LocalMesh::start().await.unwrap();
    let billing = mesh.gamer("renew@example.com").await.unwrap();
    let (grant, _, tunnel) = plg_client::open_session(&billing, &mesh.ca_pem, DEMO_GAME, None)
        .await
        .unwrap();
    let proxy = Proxy::start(tunnel, loopback(), mesh.game.addr)
        .await
        .unwrap();
    // One game socket throughout, as a game would have.
    let game = UdpSocket::bind(loopback()).await.unwrap();
    game.connect(proxy.local_addr).await.unwrap();
    let echo = async |payload: &[u8]| {
        game.send(payload).await.unwrap();
        recv_within(&game, WAIT).await
    };
    assert_eq!(
        echo(b"before renewal").await.as_deref(),
        Some(&b"before renewal"[..])
    );

    // A fresh ticket for the same session, presented on the open control connection.
    let renewed = billing.renew_session(&grant.session_id).await.unwrap();
    assert_eq!(renewed.session_id, grant.session_id);
    let ticket = renewed.ticket_bytes().unwrap();
    let accept = Tunnel::renew_on(&proxy.control_connection(), &ticket)
        .await
        .unwrap();
    assert_eq!(accept.session_id.to_string(), grant.session_id);
    assert_eq!(accept.expires_at, renewed.expires_at);

    assert_eq!(
        echo(b"after renewal").await.as_deref(),
        Some(&b"after renewal"[..]),
        "the session carries on"
    );
    let m = metrics(&mesh.node);
    assert_eq!(m.sessions_accepted, 1, "no second session: {m:?}");
    assert_eq!(m.flows_opened, 1, "the flow and its upstream socket stayed");
    assert_eq!(
        mesh.game.sources.lock().await.len(),
        1,
        "the game server saw one source before and after"
    );

    // Another session's ticket on this connection is refused, and changes nothing.
    let other = mesh.gamer("other@example.com").await.unwrap();
    let foreign = other.request_session(DEMO_GAME).await.unwrap();
    let err = Tunnel::renew_on(
        &proxy.control_connection(),
        &foreign.ticket_bytes().unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            TunnelError::Rejected {
                code: RejectCode::BadRequest,
                ..
            }
        ),
        "{err:?}"
    );
    proxy.stop().await;
    mesh.stop().await;
}
