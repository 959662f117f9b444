//! The gossip transport refuses what is not sealed under the mesh key, replayed or stale.
//! In memory with paused tokio time: the datagrams still go through the production sealing
//! layer, and the network's wall clock (sequence numbers, skew bound) is virtual too.

mod common;

use std::time::Duration;

use chitchat::{ChitchatMessage, Serializable};
use common::*;
use plg_mesh::seal::Sealer;
use plg_mesh::{GossipKey, GossipNetwork, MemoryNetwork, Mesh, MeshHandle, NodeId};

#[tokio::test(start_paused = true)]
async fn forged_gossip_never_joins_and_is_counted() {
    let net = memory();
    let nodes = cluster(&net, 3, &["eu"]).await;
    let all = ids(&nodes);
    let refs: Vec<&NodeId> = all.iter().collect();
    let handles: Vec<&MeshHandle> = nodes.iter().collect();
    eventually(Duration::from_secs(10), "converged", || {
        all_see(&handles, &refs)
    })
    .await;

    // Same cluster id, same software, wrong key; it knows every address.
    let seeds: Vec<_> = nodes.iter().map(MeshHandle::gossip_addr).collect();
    let intruder = Mesh::start(config_on(&net, "intruder", "eu", [9; 32], &seeds))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "forgeries counted by every node",
        || nodes.iter().all(|h| h.gossip_counters().forged >= 3),
    )
    .await;
    // Give it several more gossip rounds to get in (each honest node counting five more
    // forged messages); it must not.
    eventually(
        Duration::from_secs(10),
        "five more gossip rounds with the intruder",
        || nodes.iter().all(|h| h.gossip_counters().forged >= 8),
    )
    .await;
    assert!(all_see(&handles, &refs));
    assert_eq!(intruder.live_nodes().len(), 1);
    assert_eq!(intruder.gossip_counters().accepted, 0);
}

#[tokio::test(start_paused = true)]
async fn replayed_unsealed_and_stale_datagrams_are_dropped_and_counted() {
    let mem = MemoryNetwork::new();
    let net = GossipNetwork::Memory(mem.clone());
    let clock = mem.clock();
    let now_ms = || clock.now_ms();
    let node = Mesh::start(config_on(&net, "node-0", "eu", KEY, &[]))
        .await
        .unwrap();
    let target = node.gossip_addr();
    let socket = mem.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut plain = Vec::new();
    ChitchatMessage::BadCluster.serialize(&mut plain);

    // A genuine sealed message, then the same bytes again.
    let mut sealer = Sealer::new(&GossipKey::new(KEY), id("probe"));
    let mut sealed = Vec::new();
    sealer.seal(now_ms(), &plain, &mut sealed).unwrap();
    socket.send_to(&sealed[0], target).unwrap();
    eventually(Duration::from_secs(2), "accepted once", || {
        node.gossip_counters().accepted == 1
    })
    .await;
    socket.send_to(&sealed[0], target).unwrap();
    eventually(Duration::from_secs(2), "replay counted", || {
        node.gossip_counters().replayed == 1
    })
    .await;

    // Plain chitchat, as a stock chitchat node would send.
    socket.send_to(&plain, target).unwrap();
    eventually(Duration::from_secs(2), "unsealed counted", || {
        node.gossip_counters().malformed == 1
    })
    .await;

    // Correctly sealed but recorded long ago (beyond the 30 s skew bound).
    let mut old = Sealer::new(&GossipKey::new(KEY), id("probe-2"));
    let mut stale = Vec::new();
    old.seal(now_ms() - 120_000, &plain, &mut stale).unwrap();
    socket.send_to(&stale[0], target).unwrap();
    eventually(Duration::from_secs(2), "stale counted", || {
        node.gossip_counters().stale == 1
    })
    .await;

    // Sealed now, never delivered, replayed once the 30 s skew bound has passed: stale,
    // although its sequence number is new to the replay window.
    let mut late = Sealer::new(&GossipKey::new(KEY), id("probe-3"));
    let mut captured = Vec::new();
    late.seal(now_ms(), &plain, &mut captured).unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    socket.send_to(&captured[0], target).unwrap();
    eventually(Duration::from_secs(2), "late replay counted stale", || {
        node.gossip_counters().stale == 2
    })
    .await;
    assert_eq!(node.gossip_counters().accepted, 1);

    // None of it stopped the gossip loop: a real peer still joins.
    let peer = Mesh::start(config_on(&net, "node-1", "eu", KEY, &[target]))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "peer joins after the noise",
        || all_see(&[&node, &peer], &[&id("node-0"), &id("node-1")]),
    )
    .await;
}
