//! Fault injection for tests, benchmarks and the simulator: a transport wrapper that drops
//! gossip between groups of nodes, to partition a mesh and heal it again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chitchat::ChitchatMessage;
use chitchat::transport::{Socket, Transport};

/// Which gossip address is in which group; messages between different groups are dropped.
/// Cheap to clone; all clones share the same state.
#[derive(Clone, Debug, Default)]
pub struct Partition {
    groups: Arc<RwLock<HashMap<SocketAddr, u32>>>,
}

impl Partition {
    /// No partition: everything flows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Splits the mesh: each slice is a group; addresses not listed can talk to everyone.
    pub fn split(&self, groups: &[&[SocketAddr]]) {
        let mut map = self.groups.write().expect("not poisoned");
        map.clear();
        for (i, group) in groups.iter().enumerate() {
            for addr in *group {
                map.insert(*addr, i as u32);
            }
        }
    }

    /// Heals the partition.
    pub fn heal(&self) {
        self.groups.write().expect("not poisoned").clear();
    }

    /// Whether a message from `from` to `to` gets through.
    pub fn allows(&self, from: SocketAddr, to: SocketAddr) -> bool {
        let map = self.groups.read().expect("not poisoned");
        match (map.get(&from), map.get(&to)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Wraps `inner` so that its sockets obey this partition.
    pub fn wrap<T: Transport>(&self, inner: T) -> PartitionedTransport<T> {
        PartitionedTransport {
            inner,
            partition: self.clone(),
        }
    }
}

/// A transport whose sends are filtered by a [`Partition`].
#[derive(Debug)]
pub struct PartitionedTransport<T> {
    inner: T,
    partition: Partition,
}

#[async_trait]
impl<T: Transport> Transport for PartitionedTransport<T> {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(PartitionedSocket {
            inner: self.inner.open(listen_addr).await?,
            local: listen_addr,
            partition: self.partition.clone(),
        }))
    }
}

struct PartitionedSocket {
    inner: Box<dyn Socket>,
    local: SocketAddr,
    partition: Partition,
}

#[async_trait]
impl Socket for PartitionedSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        if !self.partition.allows(self.local, to) {
            return Ok(());
        }
        self.inner.send(to, msg).await
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.inner.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_heal() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let p = Partition::new();
        assert!(p.allows(a, b));
        p.split(&[&[a], &[b]]);
        assert!(!p.allows(a, b) && !p.allows(b, a));
        assert!(p.allows(a, c) && p.allows(c, b));
        p.heal();
        assert!(p.allows(a, b));
    }
}
