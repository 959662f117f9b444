//! Helpers shared by the integration tests: clusters on loopback UDP or on an in-memory
//! network, and a bounded `eventually`.
//!
//! In-memory tests run with paused tokio time (`#[tokio::test(start_paused = true)]`): the
//! runtime jumps to the next timer whenever every task waits, so gossip rounds, the failure
//! detector, the network's wall clock and `eventually`'s limits all run on virtual time and
//! a test of seconds of gossip takes milliseconds.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use plg_mesh::{
    GossipKey, GossipNetwork, MemoryNetwork, Mesh, MeshConfig, MeshHandle, NodeId, NodeInfo,
};
use tokio::time::Instant;

pub const KEY: [u8; 32] = [7; 32];

pub fn id(s: &str) -> NodeId {
    s.parse().unwrap()
}

/// A fresh in-memory network (call it inside the paused runtime: its clock starts there).
pub fn memory() -> GossipNetwork {
    GossipNetwork::Memory(MemoryNetwork::new())
}

/// Config for a loopback UDP node on an OS-chosen port.
pub fn config(name: &str, region: &str, key: [u8; 32], seeds: &[SocketAddr]) -> MeshConfig {
    config_on(&GossipNetwork::Udp, name, region, key, seeds)
}

/// Config for a node on `net`, on a port the network picks.
pub fn config_on(
    net: &GossipNetwork,
    name: &str,
    region: &str,
    key: [u8; 32],
    seeds: &[SocketAddr],
) -> MeshConfig {
    let info = NodeInfo {
        region: region.to_owned(),
        provider: String::new(),
        data_addr: "127.0.0.1:9".parse().unwrap(),
        control_addr: "127.0.0.1:9".parse().unwrap(),
        version: "test".to_owned(),
        capacity: 100,
    };
    let mut c = MeshConfig::new(
        id(name),
        info,
        GossipKey::new(key),
        "127.0.0.1:0".parse().unwrap(),
    );
    c.network = net.clone();
    c.seeds = seeds.iter().map(ToString::to_string).collect();
    c.publish_interval = Duration::from_millis(200);
    c
}

/// Starts `n` nodes named `node-<i>` on `net` in the given regions (cycled), all seeded
/// with node 0.
pub async fn cluster(net: &GossipNetwork, n: usize, regions: &[&str]) -> Vec<MeshHandle> {
    let mut nodes: Vec<MeshHandle> = Vec::new();
    for i in 0..n {
        let seeds: Vec<SocketAddr> = nodes.first().map(|h| h.gossip_addr()).into_iter().collect();
        let region = regions[i % regions.len()];
        let c = config_on(net, &format!("node-{i}"), region, KEY, &seeds);
        nodes.push(Mesh::start(c).await.unwrap());
    }
    nodes
}

/// Polls `check` every 20 ms until it holds; panics after `limit`. Returns the time taken
/// (tokio time: virtual when paused).
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether every node in `nodes` sees exactly the ids in `expected` as live.
pub fn all_see(nodes: &[&MeshHandle], expected: &[&NodeId]) -> bool {
    nodes.iter().all(|h| {
        let v = h.view();
        let live: Vec<&NodeId> = v.live_nodes().map(|n| &n.id).collect();
        live.len() == expected.len() && expected.iter().all(|e| live.contains(e))
    })
}

pub fn ids(nodes: &[MeshHandle]) -> Vec<NodeId> {
    nodes.iter().map(|h| h.node_id().clone()).collect()
}
