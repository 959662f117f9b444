//! The client under test, behind one function: [`start_client`] gets a session's tunnel, the
//! local address the game talks to, the game server's address, one address per path (where
//! that path's frames go: an impairment link in front of a node), a redundancy policy and
//! where to fail over, and starts `plg_client::Proxy` in multipath mode.

use std::net::SocketAddr;
use std::time::Duration;

use plg_client::capture::ProxyCapture;
use plg_client::{Failover, Proxy, ProxyEvent, Redundancy, Tunnel};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::scenario::Policy;

/// Why a policy can't be run by the client we have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Why the client under test did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartClientError {
    /// The client can't run this policy (reported, not faked).
    #[error("policy unavailable: {0}")]
    Unavailable(#[from] Unavailable),
    /// A socket could not be bound.
    #[error("starting the client: {0}")]
    Io(#[from] std::io::Error),
}

/// The client-side redundancy policy a scenario policy maps to.
pub fn redundancy(policy: Policy) -> Redundancy {
    match policy {
        Policy::Single => Redundancy::Single,
        Policy::Duplicate => Redundancy::Duplicate,
        Policy::Adaptive => Redundancy::ADAPTIVE,
    }
}

/// Checks, before any session is opened, whether `policy` can run over `paths` paths; the
/// `Ok` value describes the implementation that will run it (shown in reports).
pub fn availability(policy: Policy, paths: usize) -> Result<String, Unavailable> {
    if paths == 0 {
        return Err(Unavailable("no path configured".into()));
    }
    if paths > plg_proto::paths::MAX_PATHS {
        return Err(Unavailable(format!(
            "{paths} paths configured, at most {} supported",
            plg_proto::paths::MAX_PATHS
        )));
    }
    Ok(format!(
        "plg_client::Proxy, {paths} path(s), policy {policy:?}"
    ))
}

/// A running client under test.
#[derive(Debug)]
pub struct ClientUnderTest {
    /// Where the game sends its packets.
    pub local_addr: SocketAddr,
    /// What implementation runs (for reports).
    pub implementation: String,
    /// The running proxy (stats, path health). Its `events` are collected by the harness.
    pub proxy: Proxy,
    events: JoinHandle<Vec<(Instant, ProxyEvent)>>,
}

impl ClientUnderTest {
    /// Closes the session, stops, and returns what the client told its user, with the time
    /// each event came.
    pub async fn stop(self) -> Vec<(Instant, ProxyEvent)> {
        self.proxy.stop().await;
        // The proxy's task has ended, so its event sender is gone and the collector ends.
        match tokio::time::timeout(Duration::from_secs(2), self.events).await {
            Ok(Ok(v)) => v,
            _ => vec![],
        }
    }
}

/// Drains the proxy's events as they come (its channel is bounded and drops events when full,
/// and a failover event is exactly the one a report must not lose).
fn collect(mut rx: mpsc::Receiver<ProxyEvent>) -> JoinHandle<Vec<(Instant, ProxyEvent)>> {
    tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = rx.recv().await {
            v.push((Instant::now(), e));
        }
        v
    })
}

/// Starts the client under test: the game talks to `listen`, packets go to `dst` through the
/// session in `tunnel`, path `i`'s frames are sent to `path_addrs[i]`, spread by `policy`;
/// when every path goes silent the session moves as `failover` says (as `plg connect` does).
pub async fn start_client(
    tunnel: Tunnel,
    listen: SocketAddr,
    dst: SocketAddr,
    path_addrs: &[SocketAddr],
    policy: Policy,
    failover: Option<Failover>,
) -> Result<ClientUnderTest, StartClientError> {
    let mut implementation = availability(policy, path_addrs.len())?;
    if let Some(f) = &failover {
        implementation.push_str(&format!(
            ", failover to {} node(s) after {} ms of silence",
            f.candidates.len(),
            f.after.as_millis()
        ));
    }
    let capture = ProxyCapture::bind(listen, dst).await?;
    let local_addr = capture.local_addr()?;
    // Measured paths go through the impairment links: protected mode (QUIC datagrams on the
    // control connection) would bypass them when a scenario blackholes every path.
    let tunnel = tunnel.with_protection(plg_client::Protection::Never);
    let mut proxy = Proxy::start_with(
        tunnel,
        capture,
        path_addrs.to_vec(),
        redundancy(policy),
        failover,
    )
    .await?;
    proxy.local_addr = local_addr;
    let events = collect(std::mem::replace(&mut proxy.events, mpsc::channel(1).1));
    Ok(ClientUnderTest {
        local_addr,
        implementation,
        proxy,
        events,
    })
}
