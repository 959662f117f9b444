//! Session records, RTT publication and exit selection across a live mesh, in memory with
//! paused tokio time.

mod common;

use std::time::Duration;

use common::*;
use plg_mesh::{MeshHandle, NodeId, SelectionPolicy, SessionRecord, select_exits};
use tokio::time::Instant;

async fn converged(nodes: &[MeshHandle]) {
    let all = ids(nodes);
    let refs: Vec<&NodeId> = all.iter().collect();
    let handles: Vec<&MeshHandle> = nodes.iter().collect();
    eventually(Duration::from_secs(10), "converged", || {
        all_see(&handles, &refs)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn session_record_published_at_one_node_is_visible_at_all_others() {
    let nodes = cluster(&memory(), 5, &["eu"]).await;
    converged(&nodes).await;
    let record = SessionRecord {
        session_id: 0x1234_5678_9abc_def0,
        backup: Some(id("node-3")),
        paths: 2,
        epoch: 0,
    };
    nodes[0].publish_session(record.clone());
    eventually(Duration::from_secs(5), "record everywhere", || {
        nodes.iter().all(|h| {
            h.lookup_session(record.session_id)
                .is_some_and(|r| r.record == record && r.exit == id("node-0") && r.exit_alive)
        })
    })
    .await;
    nodes[0].remove_session(record.session_id);
    eventually(
        Duration::from_secs(5),
        "record withdrawn everywhere",
        || {
            nodes
                .iter()
                .all(|h| h.lookup_session(record.session_id).is_none())
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn backup_adopts_the_sessions_of_a_dead_exit() {
    let mut nodes = cluster(&memory(), 4, &["eu"]).await;
    converged(&nodes).await;
    let record = SessionRecord {
        session_id: 42,
        backup: Some(id("node-1")),
        paths: 2,
        epoch: 0,
    };
    nodes[0].publish_session(record.clone());
    eventually(Duration::from_secs(5), "record at the backup", || {
        nodes[1].lookup_session(42).is_some()
    })
    .await;
    assert!(nodes[1].view().orphaned_sessions().is_empty());

    nodes.remove(0).kill();
    eventually(Duration::from_secs(5), "backup sees an orphan", || {
        nodes[0].view().orphaned_sessions().len() == 1
    })
    .await;
    let orphan = nodes[0].view().orphaned_sessions().remove(0);
    assert_eq!(orphan.record, record);
    let adopted = nodes[0].adopt_session(&orphan, Some(id("node-2")));
    assert_eq!(adopted.epoch, 1);
    eventually(
        Duration::from_secs(5),
        "everyone routes to the new exit",
        || {
            nodes.iter().all(|h| {
                h.lookup_session(42)
                    .is_some_and(|r| r.exit == id("node-1") && r.exit_alive && r.record.epoch == 1)
            })
        },
    )
    .await;
    assert!(nodes[0].view().orphaned_sessions().is_empty());
}

#[tokio::test(start_paused = true)]
async fn rtt_estimates_are_published_and_backup_exit_is_in_another_region() {
    let nodes = cluster(&memory(), 4, &["eu", "eu", "us", "us"]).await;
    converged(&nodes).await;
    // node→game RTTs as their data planes would measure them.
    let game_rtt_ms = [10, 12, 40, 45];
    let t0 = Instant::now();
    for (h, rtt) in nodes.iter().zip(game_rtt_ms) {
        for i in 0..20u32 {
            h.record_target_probe(
                "cs2-eu",
                t0 + Duration::from_millis(50) * i,
                Some(Duration::from_millis(rtt)),
            )
            .unwrap();
        }
    }
    // And node-0's probes to node-1.
    for i in 0..20u32 {
        nodes[0].record_probe(
            &id("node-1"),
            t0 + Duration::from_millis(50) * i,
            Some(Duration::from_millis(3)),
        );
    }
    assert_eq!(
        nodes[0].rtt_to(&id("node-1")).unwrap().srtt,
        Duration::from_millis(3)
    );
    let peers = nodes[0].peer_rtts();
    assert_eq!(peers.len(), 1);
    assert_eq!(
        (&peers[0].0, peers[0].1.srtt),
        (&id("node-1"), Duration::from_millis(3))
    );
    assert_eq!(
        nodes[2].target_rtt("cs2-eu").unwrap().srtt,
        Duration::from_millis(40)
    );

    eventually(Duration::from_secs(5), "estimates gossiped", || {
        let v = nodes[3].view();
        v.published_rtt(&id("node-0"), &id("node-1"))
            .is_some_and(|s| s.srtt == Duration::from_millis(3))
            && v.exit_candidates("cs2-eu").iter().all(|c| c.rtt.is_some())
    })
    .await;
    let v = nodes[3].view();
    let order = select_exits(
        &v.exit_candidates("cs2-eu"),
        None,
        &SelectionPolicy::default(),
    );
    let order: Vec<&str> = order.iter().map(|c| c.node.as_str()).collect();
    // Primary: the fastest; first backup: the best node outside the primary's region.
    assert_eq!(order, ["node-0", "node-2", "node-1"]);
}

#[tokio::test(start_paused = true)]
async fn three_hundred_game_prefixes_gossip_only_sixteen_keys() {
    let nodes = cluster(&memory(), 2, &["eu"]).await;
    converged(&nodes).await;
    let t0 = Instant::now();
    for i in 0..300u32 {
        let ip = std::net::IpAddr::from([10, (i / 256) as u8, (i % 256) as u8, 7]);
        for j in 0..5u32 {
            nodes[0].record_target_addr_probe(
                ip,
                t0 + Duration::from_millis(100) * j,
                Some(Duration::from_millis(20 + u64::from(i))),
            );
        }
    }
    // Most used: the prefix with the slowest server, last by name.
    nodes[0].set_target_priorities([("10.1.43.0/24".to_owned(), 3)]);
    let own = nodes[0].own_target_rtts();
    assert_eq!(own.len(), plg_mesh::MAX_REPORTED_TARGETS);
    assert_eq!(own[0].0, "10.1.43.0/24");
    assert_eq!(
        nodes[0].target_rtt("10.0.0.0/24").unwrap().srtt,
        Duration::from_millis(20)
    );
    eventually(Duration::from_secs(5), "16 target keys at the peer", || {
        nodes[1].view().target_rtts(&id("node-0")).count() == plg_mesh::MAX_GOSSIPED_TARGETS
    })
    .await;
    // A few more publish rounds change nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = nodes[1].view();
    let keys: Vec<&str> = v.target_rtts(&id("node-0")).map(|(k, _)| k).collect();
    assert_eq!(keys.len(), plg_mesh::MAX_GOSSIPED_TARGETS);
    assert!(keys.contains(&"10.1.43.0/24"), "{keys:?}");
    assert_eq!(
        v.target_rtt(&id("node-0"), "10.1.43.0/24").unwrap().srtt,
        Duration::from_millis(319)
    );
}
