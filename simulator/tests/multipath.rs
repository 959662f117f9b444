//! Multipath through a real node: every copy sealed per path with one sequence number, the
//! node delivers the first copy to the game server, the client the first copy to the game.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use plg_client::{Proxy, Redundancy};
use plg_sim::local_mesh::{DEMO_GAME, LocalMesh};
use plg_sim::traffic::{self, TrafficSpec};
use tokio::net::UdpSocket;

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

#[tokio::test]
async fn duplicate_policy_delivers_each_packet_once_each_way() {
    let mesh = LocalMesh::start().await.unwrap();
    let billing = mesh.gamer("dup@example.com").await.unwrap();
    let (_, _, tunnel) = plg_client::open_session(&billing, &mesh.ca_pem, DEMO_GAME, None)
        .await
        .unwrap();
    let data = tunnel.data_addr;
    let proxy = Proxy::start_multipath(
        tunnel,
        loopback(),
        mesh.game.addr,
        vec![data, data],
        Redundancy::Duplicate,
    )
    .await
    .unwrap();

    let spec = TrafficSpec {
        rate: 200,
        duration: Duration::from_millis(500),
        ..Default::default()
    };
    let report = traffic::run(proxy.local_addr, spec).await.unwrap();
    assert_eq!(report.sent, 100);
    assert_eq!(report.received, 100);
    assert_eq!(report.corrupted, 0);
    // Upstream: the game server saw each packet once; the node dropped the second copies.
    assert_eq!(mesh.game.count(), 100);
    let m = mesh.node.metrics.snapshot();
    assert_eq!(m.upstream_packets_out, 100);
    assert!(
        m.dropped_replay >= 100,
        "second copies must be dropped as duplicates: {m:?}"
    );
    // Downstream: once the node learned both paths, replies came twice and one copy was dropped.
    let dups = proxy.stats.duplicates.load(Ordering::Relaxed);
    assert!(dups >= 50, "expected downstream duplicates, got {dups}");
    let wire = proxy.stats.wire_bytes_up.load(Ordering::Relaxed) as f64;
    let payload = proxy.stats.bytes_up.load(Ordering::Relaxed) as f64;
    assert!(
        wire / payload > 2.0,
        "two copies of every frame: overhead {}",
        wire / payload
    );
    proxy.stop().await;
    mesh.stop().await;
}

#[tokio::test]
async fn a_dead_path_is_suspected_and_traffic_stays_on_the_live_one() {
    let mesh = LocalMesh::start().await.unwrap();
    let billing = mesh.gamer("dead@example.com").await.unwrap();
    let (_, _, tunnel) = plg_client::open_session(&billing, &mesh.ca_pem, DEMO_GAME, None)
        .await
        .unwrap();
    // Path 0 goes into a black hole (a socket nobody reads); path 1 reaches the node.
    let hole = UdpSocket::bind(loopback()).await.unwrap();
    let paths = vec![hole.local_addr().unwrap(), tunnel.data_addr];
    let mut proxy = Proxy::start_multipath(
        tunnel,
        loopback(),
        mesh.game.addr,
        paths,
        Redundancy::Single,
    )
    .await
    .unwrap();

    // Wait (bounded) until the scheduler has moved the primary to the live path.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if proxy.paths.borrow().primary == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "primary never moved off the dead path"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), proxy.paths.changed()).await;
    }
    let view = proxy.paths.borrow().clone();
    assert!(view.paths[0].suspect, "{view:?}");
    assert!(!view.paths[1].suspect, "{view:?}");

    let spec = TrafficSpec {
        rate: 200,
        duration: Duration::from_millis(500),
        ..Default::default()
    };
    let report = traffic::run(proxy.local_addr, spec).await.unwrap();
    assert_eq!(
        report.received, report.sent,
        "single policy on the live path loses nothing"
    );
    while let Ok(ev) = proxy.events.try_recv() {
        tracing::debug!(?ev);
    }
    proxy.stop().await;
    mesh.stop().await;
}
