//! Protected mode through a real node: when the node's UDP data port is unreachable, or the
//! user asks for it, the session's sealed frames travel as QUIC datagrams on the control
//! connection; the client switches back to UDP when it answers again. The data path is
//! blocked with the simulator's impairment link (100 % loss, or a blackhole window).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use plg_client::capture::ProxyCapture;
use plg_client::{Failover, Protection, Proxy, ProxyEvent, Redundancy, Tunnel};
use plg_proto::Session;
use plg_proto::frame::Frame;
use plg_proto::session::Role;
use plg_sim::link::{DirectionConfig, Impairment, Link, LinkConfig, ScheduledChange};
use plg_sim::local_mesh::{DEMO_GAME, LocalMesh};
use plg_sim::traffic::{self, TrafficSpec};

/// Upper bound on any wait in these tests.
const WAIT: Duration = Duration::from_secs(15);

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

async fn session(mesh: &LocalMesh, email: &str) -> Tunnel {
    let billing = mesh.gamer(email).await.unwrap();
    let (_, _, tunnel) = plg_client::open_session(&billing, &mesh.ca_pem, DEMO_GAME, None)
        .await
        .unwrap();
    tunnel
}

/// A link to `upstream` that drops every datagram both ways (a blocked data port).
async fn blocked_link(upstream: SocketAddr) -> Link {
    let all_lost = Impairment {
        loss_pct: 100.0,
        ..Impairment::default()
    };
    Link::start(LinkConfig::symmetric(upstream, all_lost, 7))
        .await
        .unwrap()
}

/// Waits (bounded) for a `ProtectedMode` event with `on`, skipping others; returns its reason.
async fn protected_event(proxy: &mut Proxy, on: bool) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            match proxy.events.recv().await {
                Some(ProxyEvent::ProtectedMode { on: o, reason }) if o == on => return reason,
                Some(ProxyEvent::ProtectedMode { on: o, reason }) => {
                    panic!("unexpected protected mode {o}: {reason}")
                }
                Some(_) => continue,
                None => panic!("proxy stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no protected-mode {on} event within {WAIT:?}"))
}

fn spec(packets: u32) -> TrafficSpec {
    TrafficSpec {
        rate: 200,
        duration: Duration::from_millis(packets as u64 * 5),
        min_size: 100,
        max_size: 1000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_data_port_switches_to_protected_mode() {
    let mesh = LocalMesh::start().await.unwrap();
    let tunnel = session(&mesh, "blocked@example.com").await;
    let link = blocked_link(tunnel.data_addr).await;
    let mut proxy = Proxy::start_multipath(
        tunnel,
        loopback(),
        mesh.game.addr,
        vec![link.addr()],
        Redundancy::Single,
    )
    .await
    .unwrap();

    let started = Instant::now();
    let reason = protected_event(&mut proxy, true).await;
    println!("protected mode after {:?}: {reason}", started.elapsed());
    assert!(reason.contains("UDP"), "{reason}");

    let report = traffic::run(proxy.local_addr, spec(200)).await.unwrap();
    assert_eq!(report.sent, 200);
    assert_eq!(
        report.received, report.sent,
        "every echo comes back over QUIC"
    );
    assert_eq!(report.corrupted, 0, "echoes are byte-identical");
    assert!(mesh.game.count() >= 200);

    // The frames really went through the control connection and the node's bridge, and
    // nothing crossed the blocked UDP link.
    let m = mesh.node.metrics.snapshot();
    assert_eq!(m.protected_sessions, 1, "{m:?}");
    assert!(m.protected_datagrams_in >= 200, "{m:?}");
    assert!(m.protected_datagrams_out >= 200, "{m:?}");
    assert_eq!(m.upstream_packets_in, m.upstream_packets_out);
    let up = &link.counters().up;
    assert!(up.packets_in.load(Ordering::Relaxed) > 0);
    assert_eq!(up.packets_out.load(Ordering::Relaxed), 0);
    assert!(proxy.stats.protected_up.load(Ordering::Relaxed) >= 200);
    assert!(proxy.stats.protected_down.load(Ordering::Relaxed) >= 200);
    let _ = tokio::time::timeout(WAIT, proxy.paths.changed()).await;
    assert!(proxy.paths.borrow().protected);

    proxy.stop().await;
    link.finish().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_protected_mode_never_uses_udp() {
    let mesh = LocalMesh::start().await.unwrap();
    let tunnel = session(&mesh, "forced@example.com")
        .await
        .with_protection(Protection::Always);
    // A clean link in front of the data port, only to count what goes over UDP.
    let link = Link::start(LinkConfig::symmetric(
        tunnel.data_addr,
        Impairment::default(),
        1,
    ))
    .await
    .unwrap();
    let mut proxy = Proxy::start_multipath(
        tunnel,
        loopback(),
        mesh.game.addr,
        vec![link.addr()],
        Redundancy::Single,
    )
    .await
    .unwrap();
    let reason = protected_event(&mut proxy, true).await;
    assert!(reason.contains("requested"), "{reason}");

    // Longer than the re-probe interval: a forced session must not probe UDP either.
    let report = traffic::run(proxy.local_addr, spec(600)).await.unwrap();
    assert_eq!(report.sent, 600);
    assert_eq!(report.received, report.sent);
    assert_eq!(report.corrupted, 0);
    let m = mesh.node.metrics.snapshot();
    assert!(m.protected_datagrams_in >= 600, "{m:?}");
    assert_eq!(
        link.counters().up.packets_in.load(Ordering::Relaxed),
        0,
        "forced protected mode sent something over UDP"
    );
    while let Ok(ev) = proxy.events.try_recv() {
        assert!(
            !matches!(ev, ProxyEvent::ProtectedMode { on: false, .. }),
            "{ev:?}"
        );
    }
    // CLOSE goes over QUIC too: the node ends the session at once, and UDP stays untouched.
    let closed_before = mesh.node.metrics.snapshot().sessions_closed;
    proxy.stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while mesh.node.metrics.snapshot().sessions_closed == closed_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CLOSE sent as a QUIC datagram never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(link.counters().up.packets_in.load(Ordering::Relaxed), 0);
    link.finish().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_udp_when_the_data_port_answers_again() {
    let mesh = LocalMesh::start().await.unwrap();
    let tunnel = session(&mesh, "unblocked@example.com").await;
    // Both directions blackholed for the first 3 s, clean after.
    let hole = || DirectionConfig {
        schedule: vec![ScheduledChange::Blackhole {
            from: Duration::ZERO,
            until: Duration::from_secs(3),
        }],
        ..DirectionConfig::default()
    };
    let link = Link::start(LinkConfig {
        upstream: tunnel.data_addr,
        up: hole(),
        down: hole(),
        trace: false,
    })
    .await
    .unwrap();
    // Times below count from the start of the blackhole window.
    let started = Instant::now();
    link.arm(started);
    let mut proxy = Proxy::start_multipath(
        tunnel,
        loopback(),
        mesh.game.addr,
        vec![link.addr()],
        Redundancy::Single,
    )
    .await
    .unwrap();

    // Traffic runs across both switches: it is carried in protected mode, then over UDP.
    let play = tokio::spawn(traffic::run(proxy.local_addr, spec(1200)));
    protected_event(&mut proxy, true).await;
    let on = started.elapsed();
    let reason = protected_event(&mut proxy, false).await;
    let off = started.elapsed();
    println!("protected mode on after {on:?}, off after {off:?}: {reason}");
    assert!(
        off >= Duration::from_secs(3),
        "left protected mode while UDP was still blackholed"
    );
    let at_switch = proxy.stats.protected_up.load(Ordering::Relaxed);
    assert!(at_switch > 0);

    let report = play.await.unwrap().unwrap();
    assert_eq!(report.sent, 1200);
    assert_eq!(report.corrupted, 0);
    // What was lost is the first second, before protected mode, and the switches.
    let lost = report.sent - report.received;
    assert!(lost <= 400, "lost {lost} of {}", report.sent);
    println!("lost {lost} of {} packets over two switches", report.sent);

    // After the switch back nothing more goes over QUIC, and UDP carries the rest.
    let after = traffic::run(proxy.local_addr, spec(200)).await.unwrap();
    assert_eq!(after.received, after.sent);
    assert_eq!(after.corrupted, 0);
    assert_eq!(
        proxy.stats.protected_up.load(Ordering::Relaxed),
        at_switch,
        "frames still sent over QUIC after switching back"
    );
    assert!(link.counters().down.packets_out.load(Ordering::Relaxed) >= 200);
    assert!(!proxy.paths.borrow().protected);

    proxy.stop().await;
    link.finish().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_carries_only_the_connections_own_session() {
    let mesh = LocalMesh::start().await.unwrap();
    let mut tunnel = session(&mesh, "bridge@example.com").await;
    let conn = tunnel.connection.clone();
    let own = tunnel.session.id();
    let max = conn
        .max_datagram_size()
        .expect("the node accepts QUIC datagrams");
    println!("largest QUIC datagram at the start of the connection: {max} bytes");
    assert!(max >= 1162, "{max}");

    // Garbage, and a well-formed frame of another session: neither reaches the data plane.
    let mut other = Session::new(Role::Client, own ^ 1, &[9u8; 64]);
    let mut forged = Vec::new();
    other.seal(
        0,
        &Frame::Ping {
            id: 1,
            timestamp_us: 1,
        },
        &mut forged,
    );
    conn.send_datagram(vec![0xAB; 200].into()).unwrap();
    conn.send_datagram(forged.clone().into()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while mesh.node.metrics.snapshot().protected_dropped < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bridge did not refuse the foreign datagrams"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let m = mesh.node.metrics.snapshot();
    assert_eq!(m.protected_sessions, 0, "no bridge for foreign frames");
    assert_eq!(m.protected_datagrams_in, 0);

    // The session's own PING gets its PONG as a QUIC datagram.
    let mut ping = Vec::new();
    tunnel.session.seal(
        0,
        &Frame::Ping {
            id: 77,
            timestamp_us: 5,
        },
        &mut ping,
    );
    conn.send_datagram(ping.into()).unwrap();
    let reply = tokio::time::timeout(WAIT, conn.read_datagram())
        .await
        .expect("no PONG within the wait")
        .unwrap();
    let mut reply = reply.to_vec();
    let (_, frame) = tunnel.session.open(&mut reply).unwrap();
    assert_eq!(
        frame,
        Frame::Pong {
            id: 77,
            timestamp_us: 5
        }
    );

    // Once the bridge is open, foreign frames are still refused.
    conn.send_datagram(forged.into()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while mesh.node.metrics.snapshot().protected_dropped < 3 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let m = mesh.node.metrics.snapshot();
    assert_eq!(m.protected_sessions, 1);
    assert_eq!(m.protected_datagrams_in, 1);
    assert_eq!(m.protected_datagrams_out, 1);
    assert_eq!(m.dropped_unknown_session, 0);
    tunnel.close().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_session_still_fails_over_when_its_node_dies() {
    let mut mesh = LocalMesh::start().await.unwrap();
    mesh.add_node("node-2").await.unwrap();
    let billing = mesh.gamer("protected-failover@example.com").await.unwrap();
    let grant = billing.request_session(DEMO_GAME).await.unwrap();
    let (first, second) = (grant.nodes[0].clone(), grant.nodes[1].clone());
    let ticket = grant.ticket_bytes().unwrap();
    let tunnel = Tunnel::open(
        first.control_addr.parse().unwrap(),
        &first.server_name,
        &mesh.ca_pem,
        &ticket,
    )
    .await
    .unwrap();
    let link = blocked_link(tunnel.data_addr).await;
    let capture = ProxyCapture::bind(loopback(), mesh.game.addr)
        .await
        .unwrap();
    let local = capture.local_addr().unwrap();
    let failover = Failover {
        ticket,
        ca_pem: mesh.ca_pem.clone(),
        candidates: vec![second.clone()],
        after: Duration::from_millis(500),
        relays: Vec::new(),
    };
    let mut proxy = Proxy::start_with(
        tunnel,
        capture,
        vec![link.addr()],
        Redundancy::Single,
        Some(failover),
    )
    .await
    .unwrap();
    // The first node's UDP is blocked but its control connection is up: protected mode, not
    // failover.
    protected_event(&mut proxy, true).await;
    let before = traffic::run(local, spec(100)).await.unwrap();
    assert_eq!(before.received, before.sent);

    assert!(mesh.kill_node(first.control_addr.parse().unwrap()).await);
    let events = tokio::time::timeout(WAIT, async {
        let mut seen = Vec::new();
        loop {
            match proxy.events.recv().await {
                Some(ev @ ProxyEvent::Failover { .. }) => {
                    seen.push(ev);
                    return seen;
                }
                Some(ev) => seen.push(ev),
                None => panic!("proxy stopped"),
            }
        }
    })
    .await
    .expect("no failover after the protected node died");
    println!("events after the kill: {events:?}");
    assert!(
        matches!(&events[events.len() - 1], ProxyEvent::Failover { to, .. } if *to == second.id)
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProxyEvent::ProtectedMode { on: false, .. })),
        "the user is told the new node is tried over UDP: {events:?}"
    );
    // The second node's data port is reachable: UDP carries the session again.
    let after = traffic::run(local, spec(200)).await.unwrap();
    assert_eq!(after.received, after.sent);
    assert_eq!(after.corrupted, 0);
    assert!(!proxy.paths.borrow().protected);
    let m = mesh.node.metrics.snapshot();
    assert_eq!(m.protected_sessions, 0, "{m:?}");
    assert!(m.upstream_packets_out >= 200, "{m:?}");
    proxy.stop().await;
    link.finish().await;
    mesh.stop().await;
}
