//! Node counters: every dropped or refused input is counted by reason; probe counters and
//! per-target gauges.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, shared by the node's tasks.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`Metrics`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct MetricsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Metrics {
            /// Reads every counter.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl MetricsSnapshot {
            /// Prometheus text exposition of the counters.
            pub fn to_prometheus(&self) -> String {
                let mut s = String::new();
                $(s.push_str(&format!("plg_node_{} {}\n", stringify!($name), self.$name));)*
                s
            }
        }
    };
}

counters! {
    /// Datagrams received on the data port.
    datagrams_in,
    /// Datagrams sent from the data port.
    datagrams_out,
    /// Dropped: header did not parse (garbage, truncated, wrong version).
    dropped_malformed,
    /// Dropped: no such session.
    dropped_unknown_session,
    /// Dropped: AEAD authentication failed (forged, corrupted, wrong key).
    dropped_auth,
    /// Dropped: replayed, duplicate or too-old sequence number.
    dropped_replay,
    /// Dropped: path id beyond the ticket's path limit.
    dropped_path,
    /// Flow opens refused because the ticket (or node policy) does not allow the destination.
    refused_destination,
    /// Data for flows that are not open.
    dropped_unknown_flow,
    /// Upstream packets dropped because the data plane was saturated.
    dropped_overload,
    /// Sessions established.
    sessions_accepted,
    /// Tickets refused on the control channel.
    tickets_rejected,
    /// Sessions removed (closed, idle or expired).
    sessions_closed,
    /// Flows opened towards game servers.
    flows_opened,
    /// Packets sent to game servers.
    upstream_packets_out,
    /// Packets received from game servers.
    upstream_packets_in,
    /// Sends to game servers that failed (e.g. ICMP unreachable).
    upstream_send_errors,
    /// Payload bytes sent to game servers.
    upstream_bytes_out,
    /// Payload bytes received from game servers.
    upstream_bytes_in,
    /// Sessions served now (a gauge, not a counter).
    sessions_active,
    /// Client frames carried to another node (this node as a relay).
    relayed_up,
    /// Frames carried back to clients for another node (this node as a relay).
    relayed_down,
    /// Mesh datagrams dropped: not from a live mesh node, forged, stale or malformed.
    dropped_mesh,
    /// Sessions whose frames started travelling as QUIC datagrams (protected mode).
    protected_sessions,
    /// Protected-mode datagrams passed from a control connection to the data plane.
    protected_datagrams_in,
    /// Protected-mode datagrams passed from the data plane to a control connection.
    protected_datagrams_out,
    /// Protected-mode datagrams refused by the bridge (not a frame of the connection's session,
    /// too large for the connection, or the bridge socket failed).
    protected_dropped,
    /// Probes sent towards game servers (ICMP echo or query protocol).
    probes_sent,
    /// Probes answered within a second.
    probes_answered,
    /// Probes unanswered after a second.
    probes_lost,
    /// Probe targets refused: not public (without `--allow-private-destinations`), or the
    /// table of 256 targets is full.
    probe_targets_refused,
    /// Probe targets now (a gauge).
    probe_targets,
}

/// Most targets with their own series in [`targets_to_prometheus`] (the gossiped ones).
pub const MAX_TARGET_SERIES: usize = plg_mesh::MAX_GOSSIPED_TARGETS;

/// Prometheus gauges for the best-ranked targets (at most [`MAX_TARGET_SERIES`], so the
/// number of series stays bounded): RTT, jitter and loss per target prefix.
pub fn targets_to_prometheus(targets: &[(String, plg_mesh::RttSummary)]) -> String {
    let mut s = String::new();
    let top = &targets[..targets.len().min(MAX_TARGET_SERIES)];
    for (name, value) in [
        ("target_rtt_seconds", 0usize),
        ("target_jitter_seconds", 1),
        ("target_loss_ratio", 2),
    ] {
        for (target, sum) in top {
            let v = match value {
                0 => sum.srtt.as_secs_f64(),
                1 => sum.jitter.as_secs_f64(),
                _ => f64::from(sum.loss),
            };
            s.push_str(&format!("plg_node_{name}{{target=\"{target}\"}} {v}\n"));
        }
    }
    s
}

/// Increments a counter by one.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn target_gauges_are_bounded() {
        let targets: Vec<(String, plg_mesh::RttSummary)> = (0..40)
            .map(|i| {
                (
                    format!("203.0.{i}.0/24"),
                    plg_mesh::RttSummary::from_rtt(Duration::from_millis(61)),
                )
            })
            .collect();
        let text = targets_to_prometheus(&targets);
        assert_eq!(text.lines().count(), 3 * MAX_TARGET_SERIES);
        assert!(text.contains("plg_node_target_rtt_seconds{target=\"203.0.0.0/24\"} 0.061\n"));
        assert!(text.contains("plg_node_target_loss_ratio{target=\"203.0.0.0/24\"} 0\n"));
        let counters = MetricsSnapshot::default().to_prometheus();
        assert!(counters.contains("plg_node_probes_sent 0\n"));
    }
}
