//! The mesh with real nodes: three `plg-node` processes joined through billing with tokens
//! gossip on loopback; the exit of a playing client is killed and its session moves to the
//! backup the mesh designated, then that node is drained and the session moves again. In
//! process: a session's frames carried through a relay node, and forged mesh datagrams.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, bin, eventually, run, start_billing};
use plg_client::capture::ProxyCapture;
use plg_client::{BillingClient, Failover, NodeInfo, Proxy, ProxyEvent, Redundancy, Tunnel};
use plg_sim::echo::EchoServer;
use plg_sim::local_mesh::{DEMO_GAME, LocalMesh};
use plg_sim::traffic::{self, TrafficSpec};

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// Waits (bounded) for the next failover event; returns the node moved to and the gap.
async fn next_failover(proxy: &mut Proxy) -> (String, Duration) {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match proxy.events.recv().await {
                Some(ProxyEvent::Failover { to, gap }) => return (to, gap),
                Some(ProxyEvent::NodeLost { reason }) => println!("node lost: {reason}"),
                Some(_) => continue,
                None => panic!("proxy stopped"),
            }
        }
    })
    .await
    .expect("no failover within 15 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_processes_hand_a_playing_session_to_its_backup() {
    let dir = tempfile::tempdir().unwrap();
    let game = EchoServer::start(loopback()).await.unwrap();
    let (_billing, url, billing_dir) = start_billing(dir.path(), game.addr.port());

    // One command per node: join with a token, then serve and gossip.
    let mut nodes = Vec::new();
    for (i, region) in ["eu-west", "eu-central", "eu-north"].iter().enumerate() {
        let token = run(Command::new(bin("plg-billing"))
            .args(["join-token", "create", "--data-dir"])
            .arg(&billing_dir));
        let node_dir = dir.path().join(format!("node-{i}"));
        let node = Proc::spawn(
            "plg-node join",
            Command::new(bin("plg-node"))
                .args([
                    "--log-json",
                    "join",
                    "--billing",
                    &url,
                    "--token",
                    token.trim(),
                    "--name",
                    &format!("proc-{i}"),
                    "--region",
                    region,
                    "--control",
                    "127.0.0.1:0",
                    "--data",
                    "127.0.0.1:0",
                    "--gossip",
                    "127.0.0.1:0",
                    "--allow-private-destinations",
                    "--data-dir",
                ])
                .arg(&node_dir),
        );
        let running = node.wait_for("node running");
        println!("{running}");
        nodes.push((node, node_dir));
    }

    let mut billing_client = BillingClient::new(&url);
    billing_client
        .register("mesh@example.com", "a long enough password")
        .await
        .unwrap();
    billing_client
        .login("mesh@example.com", "a long enough password")
        .await
        .unwrap();
    let ca_pem = billing_client.mesh().await.unwrap().ca_cert_pem;
    let grant = billing_client.request_session(DEMO_GAME).await.unwrap();
    if grant.nodes.len() != 3 {
        for (p, _) in &nodes {
            while let Ok(line) = p.lines.try_recv() {
                println!("{line}");
            }
        }
    }
    assert_eq!(grant.nodes.len(), 3, "offered: {:?}", grant.nodes);
    let ticket = grant.ticket_bytes().unwrap();
    let exit = grant.nodes[0].clone();

    // The exit names a backup once gossip has shown it the others (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    let tunnel = loop {
        let t = Tunnel::open(
            exit.control_addr.parse().unwrap(),
            &exit.server_name,
            &ca_pem,
            &ticket,
        )
        .await
        .unwrap();
        if !t.accept.backup.is_empty() {
            break t;
        }
        assert!(Instant::now() < deadline, "the exit never named a backup");
        t.close().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let backup = tunnel.accept.backup.clone();
    assert_ne!(backup, exit.id);
    let others: Vec<NodeInfo> = grant.nodes[1..].to_vec();
    assert!(others.iter().any(|n| n.id == backup), "backup {backup}");
    // Put the backup last, so following it is the client obeying the mesh, not list order.
    let mut candidates = others.clone();
    candidates.sort_by_key(|n| n.id == backup);
    println!("exit {} backup {backup}", exit.id);

    let capture = ProxyCapture::bind(loopback(), game.addr).await.unwrap();
    let local = capture.local_addr().unwrap();
    let data = tunnel.data_addr;
    let mut proxy = Proxy::start_with(
        tunnel,
        capture,
        vec![data],
        Redundancy::Single,
        Some(Failover {
            ticket,
            ca_pem: ca_pem.clone(),
            candidates,
            after: Duration::from_millis(500),
            relays: Vec::new(),
        }),
    )
    .await
    .unwrap();

    // 8 s of play at 50 packets/s: the exit is killed at 1.5 s, its successor drained at 4.5 s.
    let spec = TrafficSpec {
        rate: 50,
        duration: Duration::from_secs(8),
        ..Default::default()
    };
    let play = tokio::spawn(traffic::run(local, spec));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let node_of = |id: &str| -> usize {
        nodes
            .iter()
            .position(|(_, dir)| {
                std::fs::read_to_string(dir.join("node.json")).is_ok_and(|s| s.contains(id))
            })
            .unwrap()
    };
    let (exit_i, backup_i) = (node_of(&exit.id), node_of(&backup));
    let third_i = (0..3).find(|i| ![exit_i, backup_i].contains(i)).unwrap();
    nodes[exit_i].0.signal("KILL");

    let (to, gap) = next_failover(&mut proxy).await;
    assert_eq!(to, backup, "the session must move to the designated backup");
    nodes[backup_i].0.wait_for("session adopted");
    println!("killed {}: moved to {to} after {gap:?}", exit.id);

    // Drain the backup with the CLI: the client moves on at once, the node exits cleanly.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let out = Command::new(bin("plg-node"))
        .args(["drain", "--wait-secs", "20", "--data-dir"])
        .arg(&nodes[backup_i].1)
        .output()
        .unwrap();
    if !out.status.success() {
        for (p, _) in &nodes {
            while let Ok(line) = p.lines.try_recv() {
                println!("{} {line}", p.name);
            }
        }
        panic!("drain failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = String::from_utf8(out.stdout).unwrap();
    println!("{out}");
    assert!(out.contains("node stopped"), "{out}");
    let (to2, gap2) = next_failover(&mut proxy).await;
    let third = grant
        .nodes
        .iter()
        .find(|n| n.id != exit.id && n.id != backup)
        .unwrap();
    assert_eq!(to2, third.id);
    assert!(nodes[backup_i].0.wait_exit(), "drained node exit status");
    println!("drained {backup}: moved to {to2} after {gap2:?}");

    let report = play.await.unwrap().unwrap();
    assert_eq!(report.sent, 400);
    assert_eq!(report.corrupted, 0);
    let lost = report.sent - report.received;
    println!(
        "lost {lost} of {} packets over a kill and a drain",
        report.sent
    );
    // The kill costs about the silence before failover (0.5 s + detection ≈ 25-60 packets);
    // the drain costs almost nothing. Anything near the whole run means the moves failed.
    assert!(lost < 150, "lost {lost} of 400");
    assert!(
        report.received > 250,
        "replies kept coming after both moves"
    );
    proxy.stop().await;

    // The killed node restarts with the same identity and rejoins: the third node, which saw
    // it go down, sees it come back up under the same id.
    nodes[third_i].0.wait_for(&format!(
        "\"message\":\"peer down\",\"peer\":\"{}\"",
        exit.id
    ));
    let restarted = Proc::spawn(
        "plg-node run (restart)",
        Command::new(bin("plg-node"))
            .args([
                "--log-json",
                "run",
                "--control",
                "127.0.0.1:0",
                "--data",
                "127.0.0.1:0",
                "--gossip",
                "127.0.0.1:0",
                "--allow-private-destinations",
                "--data-dir",
            ])
            .arg(&nodes[exit_i].1),
    );
    let line = restarted.wait_for("node running");
    assert!(line.contains(&exit.id), "same identity: {line}");
    nodes[third_i]
        .0
        .wait_for(&format!("\"message\":\"peer up\",\"peer\":\"{}\"", exit.id));
    println!("{} restarted and rejoined the mesh", exit.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_node_carries_a_session_to_its_exit() {
    let mut mesh = LocalMesh::start().await.unwrap();
    mesh.add_node("relay").await.unwrap();
    let relay_data = mesh.extra_nodes[0].data_addr;
    let billing = mesh.gamer("relay@example.com").await.unwrap();
    let grant = billing.request_session(DEMO_GAME).await.unwrap();
    let exit = grant
        .nodes
        .iter()
        .find(|n| n.id == mesh.node.node_id)
        .unwrap()
        .clone();
    let tunnel = Tunnel::open(
        exit.control_addr.parse().unwrap(),
        &exit.server_name,
        &mesh.ca_pem,
        &grant.ticket_bytes().unwrap(),
    )
    .await
    .unwrap();
    let session_id = tunnel.accept.session_id;

    // The relay learns where the session lives, and that its exit is alive, through gossip
    // (bounded wait).
    relay_knows(&mesh.extra_nodes[0], session_id, &exit.id).await;

    // Every frame goes client → relay → exit → game server and back the same way.
    let proxy = Proxy::start_multipath(
        tunnel,
        loopback(),
        mesh.game.addr,
        vec![relay_data],
        Redundancy::Single,
    )
    .await
    .unwrap();
    let report = traffic::run(
        proxy.local_addr,
        TrafficSpec {
            rate: 100,
            duration: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.sent, 50);
    assert_eq!(
        report.received, 50,
        "every reply came back through the relay"
    );
    assert_eq!(report.corrupted, 0);
    let relay = mesh.extra_nodes[0].metrics.snapshot();
    let exit_m = mesh.node.metrics.snapshot();
    println!(
        "relay: {} up, {} down; exit saw {} upstream packets",
        relay.relayed_up, relay.relayed_down, exit_m.upstream_packets_out
    );
    // Flow opens and pings ride along too, so at least the data packets were relayed.
    assert!(relay.relayed_up >= 50, "{relay:?}");
    assert!(relay.relayed_down >= 50, "{relay:?}");
    assert_eq!(exit_m.upstream_packets_out, 50);

    proxy.stop().await;

    // Forged mesh datagrams from a non-member: counted, never relayed, never answered.
    let before = mesh.extra_nodes[0].metrics.snapshot();
    let intruder = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
    let mut forged = vec![0xF1u8, 1, 0, 0];
    forged.extend_from_slice(&[7u8; 200]);
    for _ in 0..100 {
        intruder.send_to(&forged, relay_data).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while mesh.extra_nodes[0].metrics.snapshot().dropped_mesh < before.dropped_mesh + 100 {
        assert!(
            Instant::now() < deadline,
            "forged mesh datagrams not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = mesh.extra_nodes[0].metrics.snapshot();
    assert_eq!(
        after.relayed_up, before.relayed_up,
        "nothing relayed for them"
    );
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), intruder.recv(&mut buf))
            .await
            .is_err(),
        "the relay answered a forged datagram"
    );
    mesh.stop().await;
}

/// Waits (bounded) until `node` has learned from gossip that `session` lives on the live
/// node `exit`: only then does it relay the session's frames.
async fn relay_knows(node: &plg_node::RunningNode, session: u64, exit: &str) {
    let m = node.mesh.clone().expect("in the mesh");
    eventually(
        Duration::from_secs(10),
        "the relay learns the session",
        || {
            m.lookup_session(session)
                .is_some_and(|r| r.exit.as_str() == exit && r.exit_alive)
        },
    )
    .await;
}

/// Sends a datagram to `to` every 20 ms and counts the echoes until told to stop.
fn echo_load(
    to: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(u32, u32)> {
    tokio::spawn(async move {
        let s = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
        let (mut sent, mut back) = (0u32, 0u32);
        let mut buf = [0u8; 64];
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !*stop.borrow() {
            tick.tick().await;
            s.send_to(b"keep playing", to).await.unwrap();
            sent += 1;
            // Late echoes are counted by a later round.
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(15), s.recv_from(&mut buf)).await
            {
                back += u32::from(&buf[..n] == b"keep playing");
                if back >= sent {
                    break;
                }
            }
        }
        (sent, back)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_whose_relay_dies_moves_to_another_relay() {
    let mut mesh = LocalMesh::start().await.unwrap();
    mesh.add_node("relay-a").await.unwrap();
    mesh.add_node("relay-b").await.unwrap();
    let billing = mesh.gamer("reroute@example.com").await.unwrap();
    let grant = billing.request_session(DEMO_GAME).await.unwrap();
    let info = |id: &str| grant.nodes.iter().find(|n| n.id == id).unwrap().clone();
    let exit = info(&mesh.node.node_id);
    let relay_a = info(&mesh.extra_nodes[0].node_id);
    let relay_b = info(&mesh.extra_nodes[1].node_id);
    let ticket = grant.ticket_bytes().unwrap();
    let tunnel = Tunnel::open(
        exit.control_addr.parse().unwrap(),
        &exit.server_name,
        &mesh.ca_pem,
        &ticket,
    )
    .await
    .unwrap();
    let session_id = tunnel.accept.session_id;
    // Both would-be relays learn the session from gossip (bounded wait).
    for node in &mesh.extra_nodes {
        relay_knows(node, session_id, &exit.id).await;
    }

    // Path 0 straight to the exit, path 1 through relay A; node B is a spare.
    let capture = ProxyCapture::bind(loopback(), mesh.game.addr)
        .await
        .unwrap();
    let local = capture.local_addr().unwrap();
    let proxy = Proxy::start_with(
        tunnel,
        capture,
        vec![
            exit.data_addr.parse().unwrap(),
            relay_a.data_addr.parse().unwrap(),
        ],
        Redundancy::Duplicate,
        Some(Failover {
            ticket,
            ca_pem: mesh.ca_pem.clone(),
            candidates: vec![relay_a.clone(), relay_b.clone()],
            after: Duration::from_secs(1),
            relays: vec![None, Some(relay_a.id.clone())],
        }),
    )
    .await
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = echo_load(local, stop_rx);
    let relayed = |mesh: &LocalMesh, id: &str| {
        let n = mesh.extra_nodes.iter().find(|n| n.node_id == id).unwrap();
        let m = n.metrics.snapshot();
        (m.relayed_up, m.relayed_down)
    };
    eventually(Duration::from_secs(10), "relay A carries path 1", || {
        relayed(&mesh, &relay_a.id).1 >= 10
    })
    .await;

    // Relay A dies (no goodbye). The exit answers on path 0 all along, so there is no
    // failover: path 1 moves to node B and comes back.
    assert!(mesh.kill_node(relay_a.control_addr.parse().unwrap()).await);
    let killed = Instant::now();
    eventually(Duration::from_secs(15), "relay B carries path 1", || {
        relayed(&mesh, &relay_b.id).1 >= 10
    })
    .await;
    let moved = killed.elapsed();
    // Path 1 answers its probes again.
    let answered = proxy.paths.borrow().paths[1].probes_answered;
    eventually(
        Duration::from_secs(5),
        "path 1 answers through relay B",
        || proxy.paths.borrow().paths[1].probes_answered > answered,
    )
    .await;
    stop_tx.send(true).unwrap();
    let (sent, back) = load.await.unwrap();
    let b = relayed(&mesh, &relay_b.id);
    println!(
        "path 1 moved to relay B {} ms after relay A died; B carried {} up / {} down; {back}/{sent} echoes",
        moved.as_millis(),
        b.0,
        b.1
    );
    assert!(b.0 >= 10 && b.1 >= 10, "{b:?}");
    // The game never noticed: path 0 carried everything meanwhile (at most a few echoes were
    // in flight at the kill).
    assert!(back + 5 >= sent, "{back}/{sent} echoes");
    let mut proxy = proxy;
    while let Ok(ev) = proxy.events.try_recv() {
        assert!(
            !matches!(ev, ProxyEvent::Failover { .. }),
            "no failover: the exit never went silent ({ev:?})"
        );
    }
    proxy.stop().await;
    mesh.stop().await;
}
