//! Linux TUN capture: a TUN device plus policy routing that sends the game's UDP into it.
//! The game keeps sending to the server's real address; the kernel hands those packets to us,
//! and replies are written back as IP/UDP packets from the server's address.
//!
//! Routing. For each destination a rule `to NET ipproto udp dport LO-HI lookup TABLE` picks
//! the game's UDP (and only that: TCP or other ports to the same servers keep their normal
//! path); TABLE holds routes of the destination networks into the device. The relay node's
//! and billing's addresses are carved out of those routes ([`Targets::routes`]), so the
//! session's own packets find no route in TABLE and fall through to the machine's normal
//! routes — no bypass route via the original gateway, which would go stale when the network
//! changes.
//!
//! Cleanup. The device is not persistent (it lives while our descriptor is open) and the routes
//! name it, so closing the descriptor removes both — on drop, on Ctrl-C, when a session task
//! panics, even when the process is killed. The rules are deleted on drop; a rule left by a
//! killed process points at an empty table and so changes nothing (lookups fall through), and
//! the next start deletes it.

use std::fmt;
use std::io::{self, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;

use ipnet::IpNet;
use tun_rs::{AsyncDevice, DeviceBuilder};

use super::packet::{CaptureCounters, build_udp};
use super::targets::Targets;
use super::{Capture, Captured};

/// Default device name.
pub const DEFAULT_NAME: &str = "plg0";
/// Default routing table for the device's routes ("PLG" in ASCII).
pub const DEFAULT_TABLE: u32 = 0x504c47;
/// Default priority of the policy rules (before `main` at 32766).
pub const DEFAULT_PRIORITY: u32 = 5262;
/// Largest IP packet read from or written to the device.
const MAX_PACKET: usize = 65_535;

/// What to create.
#[derive(Debug, Clone)]
pub struct TunConfig {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// What to capture (the ticket's destinations minus our own peers' addresses).
    pub targets: Targets,
    /// Device MTU. Games send small datagrams; larger ones arrive fragmented and are dropped.
    pub mtu: u16,
    /// Routing table holding the device's routes (owned by us: stale rules pointing at it
    /// are deleted on start).
    pub table: u32,
    /// Priority of the policy rules.
    pub priority: u32,
}

impl TunConfig {
    /// A device named [`DEFAULT_NAME`] capturing `targets`.
    pub fn new(targets: Targets) -> TunConfig {
        TunConfig {
            name: DEFAULT_NAME.to_owned(),
            targets,
            mtu: 1500,
            table: DEFAULT_TABLE,
            priority: DEFAULT_PRIORITY,
        }
    }
}

/// Why the TUN backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// Nothing to capture.
    #[error("the session allows no destinations, so there is nothing to route into {0}")]
    NoDestinations(String),
    /// Every destination network consists of excluded addresses.
    #[error(
        "every destination address is excluded (it is a relay node or billing), nothing to route"
    )]
    AllExcluded,
    /// The device could not be created.
    #[error(
        "cannot create TUN device {name}: {source} (needs root or CAP_NET_ADMIN and /dev/net/tun; \
         is another `plg connect --mode tun` running?)"
    )]
    Device {
        /// Interface name.
        name: String,
        /// Cause.
        source: io::Error,
    },
    /// Installing the routes or rules failed (or `ip`, from iproute2, is missing).
    #[error("cannot route the game's traffic into {name}: {detail}")]
    Routes {
        /// Interface name.
        name: String,
        /// `ip`'s complaint.
        detail: String,
    },
}

/// Captures game UDP through a TUN device (see the module docs).
pub struct TunCapture {
    // Dropped in this order: rules first, then the device (which takes its routes along).
    _rules: Option<RuleGuard>,
    device: AsyncDevice,
    name: String,
    targets: Targets,
    routes: Vec<IpNet>,
    counters: Arc<CaptureCounters>,
    packet: Box<[u8]>,
    out: Vec<u8>,
}

impl fmt::Debug for TunCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunCapture")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl TunCapture {
    /// Creates the device, brings it up and routes the game's UDP into it. Must be called
    /// inside a tokio runtime. Runs `ip` (iproute2) a few times, briefly blocking.
    pub fn open(config: TunConfig) -> Result<TunCapture, TunError> {
        let TunConfig {
            name,
            targets,
            mtu,
            table,
            priority,
        } = config;
        if targets.is_empty() {
            return Err(TunError::NoDestinations(name));
        }
        let device = DeviceBuilder::new()
            .name(&name)
            .mtu(mtu)
            .enable(true)
            .build_async()
            .map_err(|source| TunError::Device {
                name: name.clone(),
                source,
            })?;
        // The kernel may have adjusted the name (e.g. a `%d` pattern).
        let name = device.name().unwrap_or(name);
        let routed = route_device(&name, targets, table, priority)?;
        Ok(TunCapture::from_device(device, name, routed))
    }

    /// Packet I/O on a device that is already routed: `routed` holds the targets, the routes
    /// and, when this process owns them, the rules (deleted on drop). With the capture helper
    /// (`plg-capture`) the device arrives as a descriptor and the helper keeps the rules.
    pub fn from_device(device: AsyncDevice, name: String, routed: Routed) -> TunCapture {
        let Routed {
            targets,
            routes,
            rules,
        } = routed;
        TunCapture {
            _rules: rules,
            device,
            name,
            targets,
            routes,
            counters: Arc::new(CaptureCounters::default()),
            packet: vec![0; MAX_PACKET].into_boxed_slice(),
            out: Vec::with_capacity(MAX_PACKET),
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The networks routed into the device.
    pub fn routes(&self) -> &[IpNet] {
        &self.routes
    }

    /// What was captured and dropped.
    pub fn counters(&self) -> Arc<CaptureCounters> {
        self.counters.clone()
    }
}

/// A device's capture set-up: what it captures, its routes, and its policy rules.
#[derive(Debug)]
pub struct Routed {
    /// What is captured (IPv6 destinations dropped when the device has no IPv6).
    pub targets: Targets,
    /// The networks routed into the device.
    pub routes: Vec<IpNet>,
    /// The policy rules, deleted on drop; `None` when another process owns them.
    pub rules: Option<RuleGuard>,
}

/// Routes `targets` into the device `name` (up already): its routes in `table`, one rule per
/// destination at `priority`. Stale rules pointing at `table` are deleted first. On failure
/// whatever was added is removed.
pub fn route_device(
    name: &str,
    mut targets: Targets,
    table: u32,
    priority: u32,
) -> Result<Routed, TunError> {
    if targets.is_empty() {
        return Err(TunError::NoDestinations(name.to_owned()));
    }
    if !ipv6_enabled(name)
        && targets
            .destinations()
            .iter()
            .any(|d| d.net.addr().is_ipv6())
    {
        // No IPv6 here, so the game cannot send any: keep the IPv4 destinations.
        tracing::warn!(device = %name, "IPv6 is disabled: not capturing IPv6 destinations");
        targets = Targets::new(
            targets
                .destinations()
                .iter()
                .copied()
                .filter(|d| d.net.addr().is_ipv4()),
        )
        .exclude(targets.excluded().iter().copied());
    }
    let routes = targets.routes();
    if routes.is_empty() {
        return Err(TunError::AllExcluded);
    }
    // We own the table: rules pointing at it are leftovers of a killed run.
    purge_rules(table);
    let rules = RuleGuard::new(&targets, table, priority);
    // On failure `rules` is dropped here, removing whatever was added; the routes go with
    // the device.
    for family in [Family::V4, Family::V6] {
        let mut script = String::new();
        for net in routes.iter().filter(|n| family.of(n)) {
            script.push_str(&format!("route add {net} dev {name} table {table}\n"));
        }
        for rule in rules.specs(family) {
            script.push_str(&format!("rule add {rule}\n"));
        }
        if !script.is_empty() {
            ip_batch(family, &script, false).map_err(|detail| TunError::Routes {
                name: name.to_owned(),
                detail,
            })?;
        }
    }
    tracing::info!(device = %name, routes = routes.len(), table, "TUN capture up");
    Ok(Routed {
        targets,
        routes,
        rules: Some(rules),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }

    fn of(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
}

/// Whether IPv6 is enabled on the device (it is not when IPv6 is disabled system-wide).
fn ipv6_enabled(device: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6"))
        .is_ok_and(|v| v.trim() == "0")
}

/// The policy rules of one capture, deleted on drop.
#[derive(Debug)]
pub struct RuleGuard {
    v4: Vec<String>,
    v6: Vec<String>,
}

impl RuleGuard {
    /// One rule per destination: its network, UDP, its port range.
    fn new(targets: &Targets, table: u32, priority: u32) -> RuleGuard {
        let mut guard = RuleGuard {
            v4: Vec::new(),
            v6: Vec::new(),
        };
        for d in targets.destinations() {
            let ports = match (d.port_lo, d.port_hi) {
                (0, u16::MAX) => String::new(),
                (lo, hi) if lo == hi => format!(" dport {lo}"),
                (lo, hi) => format!(" dport {lo}-{hi}"),
            };
            let spec = format!(
                "to {} ipproto udp{ports} table {table} priority {priority}",
                d.net
            );
            let list = if d.net.addr().is_ipv4() {
                &mut guard.v4
            } else {
                &mut guard.v6
            };
            if !list.contains(&spec) {
                list.push(spec);
            }
        }
        guard
    }

    fn specs(&self, family: Family) -> &[String] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

impl Drop for RuleGuard {
    fn drop(&mut self) {
        for family in [Family::V4, Family::V6] {
            let script: String = self
                .specs(family)
                .iter()
                .map(|r| format!("rule del {r}\n"))
                .collect();
            if !script.is_empty()
                && let Err(e) = ip_batch(family, &script, true)
            {
                tracing::debug!(error = %e, "deleting policy rules");
            }
        }
    }
}

/// Deletes every rule pointing at `table` (left by a run that was killed).
pub fn purge_rules(table: u32) {
    for family in [Family::V4, Family::V6] {
        let table = table.to_string();
        // Each call deletes one rule and fails once none is left.
        for _ in 0..1024 {
            let ok = Command::new("ip")
                .args([family.flag(), "rule", "del", "table", &table])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                break;
            }
            tracing::info!(table, "deleted a stale policy rule");
        }
    }
}

/// Runs `ip <family> -batch -` over `script`; with `force`, goes on after errors.
fn ip_batch(family: Family, script: &str, force: bool) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.arg(family.flag());
    if force {
        cmd.arg("-force");
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as a failed exit status below.
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`ip` failed: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', "; ");
    if detail.contains("File exists") {
        detail.push_str(" (a route or rule with these settings already exists)");
    }
    Err(detail)
}

impl Capture for TunCapture {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<Captured> {
        loop {
            // The only await: a cancelled call has consumed nothing.
            let n = self.device.recv(&mut self.packet).await?;
            let Some(d) = self.counters.classify(&self.packet[..n], &self.targets) else {
                continue;
            };
            let Some(dst) = buf.get_mut(..d.payload.len()) else {
                self.counters
                    .oversize
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            };
            dst.copy_from_slice(d.payload);
            return Ok(Captured {
                game: d.src,
                server: d.dst,
                len: d.payload.len(),
            });
        }
    }

    async fn send(
        &mut self,
        game: std::net::SocketAddr,
        server: std::net::SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        build_udp(server, game, payload, &mut self.out)?;
        self.device.send(&self.out).await?;
        self.counters
            .delivered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn describe(&self) -> String {
        let dests: Vec<String> = self
            .targets
            .destinations()
            .iter()
            .map(|d| d.to_string())
            .collect();
        format!(
            "tun {} ({} routes) → {}",
            self.name,
            self.routes.len(),
            dests.join(", ")
        )
    }
}

impl Drop for TunCapture {
    fn drop(&mut self) {
        // Closing the descriptor (right after this) deletes the device and its routes.
        tracing::info!(device = %self.name, "TUN capture down");
    }
}
