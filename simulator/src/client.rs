//! The client under test, behind one function: [`start_client`] gets a session's tunnel, the
//! local address the game talks to, the game server's address, one address per path (where
//! that path's frames go: an impairment link in front of a node) and a redundancy policy, and
//! starts `plg_client::Proxy` in multipath mode.

use std::net::SocketAddr;

use plg_client::{Proxy, Redundancy, Tunnel};

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
    /// The running proxy (stats, path health).
    pub proxy: Proxy,
}

impl ClientUnderTest {
    /// Closes the session and stops.
    pub async fn stop(self) {
        self.proxy.stop().await;
    }
}

/// Starts the client under test: the game talks to `listen`, packets go to `dst` through the
/// session in `tunnel`, path `i`'s frames are sent to `path_addrs[i]`, spread by `policy`.
pub async fn start_client(
    tunnel: Tunnel,
    listen: SocketAddr,
    dst: SocketAddr,
    path_addrs: &[SocketAddr],
    policy: Policy,
) -> Result<ClientUnderTest, StartClientError> {
    let implementation = availability(policy, path_addrs.len())?;
    let proxy =
        Proxy::start_multipath(tunnel, listen, dst, path_addrs.to_vec(), redundancy(policy))
            .await?;
    Ok(ClientUnderTest {
        local_addr: proxy.local_addr,
        implementation,
        proxy,
    })
}
