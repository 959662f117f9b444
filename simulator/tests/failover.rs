//! The exit node dies while the game plays: the client presents the same ticket to the next
//! node and the game keeps getting replies.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use plg_client::capture::ProxyCapture;
use plg_client::{Failover, Proxy, ProxyEvent, Redundancy, Tunnel};
use plg_sim::local_mesh::{DEMO_GAME, LocalMesh};
use plg_sim::traffic::{self, TrafficSpec};

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_exit_node_moves_the_session_to_the_next_node() {
    let mut mesh = LocalMesh::start().await.unwrap();
    mesh.add_node("node-2").await.unwrap();
    let billing = mesh.gamer("failover@example.com").await.unwrap();
    let grant = billing.request_session(DEMO_GAME).await.unwrap();
    assert_eq!(
        grant.nodes.len(),
        2,
        "billing offers both nodes: {:?}",
        grant.nodes
    );
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
    let data = tunnel.data_addr;
    let mut proxy = Proxy::start_with(
        tunnel,
        capture,
        vec![data],
        Redundancy::Single,
        Some(failover),
    )
    .await
    .unwrap();

    // 3 s of game traffic at 100 packets/s; the exit dies after 1 s.
    let spec = TrafficSpec {
        rate: 100,
        duration: Duration::from_secs(3),
        ..Default::default()
    };
    let play = tokio::spawn(traffic::run(local, spec));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(mesh.kill_node(first.control_addr.parse().unwrap()).await);

    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match proxy.events.recv().await {
                Some(ProxyEvent::Failover { to, gap }) => return (to, gap),
                Some(_) => continue,
                None => panic!("proxy stopped"),
            }
        }
    })
    .await
    .expect("no failover within 10 s");
    assert_eq!(event.0, second.id);
    assert!(
        event.1 < Duration::from_secs(3),
        "failover gap {:?}",
        event.1
    );

    let report = play.await.unwrap().unwrap();
    assert_eq!(report.sent, 300);
    assert_eq!(report.corrupted, 0);
    // Lost: roughly what was sent between the kill and the failover; everything after came back.
    let lost = report.sent - report.received;
    assert!(
        lost > 0,
        "the kill must cost something, or the test did not kill the exit"
    );
    assert!(lost <= 250, "lost {lost} of 300 with a {:?} gap", event.1);
    println!(
        "failover to {} after {:?}; lost {lost} of {} packets",
        event.0, event.1, report.sent
    );
    proxy.stop().await;
    mesh.stop().await;
}
