//! The client's session engine and the nodes' session cores together on a virtual clock
//! (`plg_sim::virtual_net`): failover, renewal at expiry, roaming, protected mode, relay loss
//! and random impairment, each minutes of session time in milliseconds of wall time, the
//! same on every run.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use plg_client::conn::{Action, ConnConfig, ProxyEvent};
use plg_client::{Protection, Redundancy};
use plg_sim::link::Impairment;
use plg_sim::virtual_net::{NetConfig, VirtualNet};
use proptest::prelude::*;

/// 64 game packets a second, like a tick-based shooter.
const TICK: Duration = Duration::from_micros(15_625);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn single() -> ConnConfig {
    ConnConfig {
        policy: Redundancy::Single,
        protection: Protection::Never,
        ..ConnConfig::default()
    }
}

/// Runs `f` and prints how long it took in wall time.
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    println!(
        "{what}: {:.1} ms of wall time",
        t.elapsed().as_secs_f64() * 1000.0
    );
    r
}

#[test]
fn a_killed_exit_fails_over_to_the_backup_within_a_second_and_a_half() {
    let net = timed("failover, 20 s of session", || {
        let mut net = VirtualNet::new(NetConfig {
            conn: single(),
            ..NetConfig::default()
        });
        net.run(secs(5.0), Some(TICK));
        net.nodes[0].up = false;
        net.run(secs(15.0), Some(TICK));
        net
    });
    let failovers: Vec<_> = net.sessions[0]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            ProxyEvent::Failover { to, gap } => Some((to.clone(), *gap)),
            _ => None,
        })
        .collect();
    assert_eq!(failovers.len(), 1, "{:?}", net.sessions[0].events);
    assert_eq!(failovers[0].0, "n1", "the backup the exit named first");
    assert_eq!(net.exit(), Some(1));
    let gap = net.longest_gap(secs(4.0), secs(20.0));
    println!("failover: longest gap {} ms", gap.as_millis());
    assert!(gap < secs(1.5), "{gap:?}");
    assert_eq!(net.doubled(), 0);
    // Everything sent after the failover comes back.
    let after = net.sessions[0]
        .delivered
        .iter()
        .filter(|(at, _)| *at - net.sessions[0].delivered[0].0 > secs(7.0))
        .count();
    assert!(after as f64 >= 12.0 * 64.0 * 0.99, "{after}");
}

#[test]
fn renewal_in_place_carries_a_session_past_every_ticket_expiry() {
    let cfg = NetConfig {
        conn: single(),
        ticket_ttl: Duration::from_secs(60),
        ..NetConfig::default()
    };
    let net = timed("renewal, 5 min of session", || {
        let mut net = VirtualNet::new(cfg.clone());
        net.run(secs(300.0), Some(TICK));
        net
    });
    println!(
        "renewal: {} renewals, {} packets, lost {}, longest gap {} ms",
        net.sessions[0].renewals,
        net.sent(),
        net.lost(net.sent() - 10),
        net.longest_gap(secs(1.0), secs(299.0)).as_millis()
    );
    assert!(
        net.sessions[0].renewals >= 5,
        "{}",
        net.sessions[0].renewals
    );
    assert_eq!(
        net.nodes[0].expired, 0,
        "the node never let the session expire"
    );
    assert_eq!(net.lost(net.sent() - 10), 0);
    assert_eq!(net.doubled(), 0);
    assert!(net.longest_gap(secs(1.0), secs(299.0)) < Duration::from_millis(50));

    // Without renewal the node ends the session at the ticket's expiry: the check above
    // can fail.
    let mut net = VirtualNet::new(NetConfig {
        renew: false,
        ..cfg
    });
    net.run(secs(90.0), Some(TICK));
    assert_eq!(net.nodes[0].expired, 1);
    assert_eq!(net.exit(), None, "no node takes an expired ticket");
    assert!(
        net.lost(net.sent() - 10) > 25 * 64,
        "{}",
        net.lost(net.sent() - 10)
    );
}

#[test]
fn a_new_local_address_keeps_the_session_on_its_node() {
    let mut net = VirtualNet::new(NetConfig {
        conn: single(),
        ..NetConfig::default()
    });
    net.run(secs(5.0), Some(TICK));
    net.move_client(IpAddr::from([10, 9, 8, 7]));
    net.run(secs(10.0), Some(TICK));
    let gap = net.longest_gap(secs(4.0), secs(15.0));
    println!("roaming: longest gap {} ms", gap.as_millis());
    // The node follows the first authenticated frame from the new address: no failover.
    assert!(
        !net.sessions[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, ProxyEvent::Failover { .. })),
        "{:?}",
        net.sessions[0].events
    );
    assert_eq!(net.exit(), Some(0));
    assert!(gap < Duration::from_millis(100), "{gap:?}");
    assert_eq!(net.doubled(), 0);
}

#[test]
fn blocked_udp_falls_back_to_protected_mode_and_back() {
    let mut net = VirtualNet::new(NetConfig {
        conn: ConnConfig {
            protection: Protection::Auto,
            ..single()
        },
        ..NetConfig::default()
    });
    net.run(secs(3.0), Some(TICK));
    net.udp_blocked = true;
    net.run(secs(7.0), Some(TICK));
    assert!(net.sessions[0].client.protected());
    net.udp_blocked = false;
    net.run(secs(5.0), Some(TICK));
    assert!(!net.sessions[0].client.protected());
    let modes: Vec<bool> = net.sessions[0]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            ProxyEvent::ProtectedMode { on, .. } => Some(*on),
            _ => None,
        })
        .collect();
    assert_eq!(modes, [true, false], "{:?}", net.sessions[0].events);
    let gap = net.longest_gap(secs(2.0), secs(15.0));
    println!("protected mode: longest gap {} ms", gap.as_millis());
    assert!(gap < secs(1.5), "{gap:?}");
    assert!(
        !net.sessions[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, ProxyEvent::Failover { .. })),
        "the node was alive: no failover"
    );
    assert_eq!(net.doubled(), 0);
}

#[test]
fn a_dead_relay_moves_its_path_to_a_spare_node() {
    let mut net = VirtualNet::new(NetConfig {
        nodes: 4,
        relays: vec![None, Some(2)],
        conn: ConnConfig {
            policy: Redundancy::Duplicate,
            protection: Protection::Never,
            ..ConnConfig::default()
        },
        ..NetConfig::default()
    });
    net.run(secs(3.0), Some(TICK));
    net.nodes[2].up = false;
    net.run(secs(6.0), Some(TICK));
    assert!(
        net.sessions[0].events.iter().any(|(_, e)| matches!(
            e,
            ProxyEvent::RelayMoved { path: 1, from, .. } if from == "n2"
        )),
        "{:?}",
        net.sessions[0].events
    );
    assert!(
        !net.sessions[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, ProxyEvent::Failover { .. })),
        "the exit was fine"
    );
    let view = net.sessions[0].client.paths_view(net.now);
    assert!(
        matches!(&view.relays[1], Some(r) if r != "n2" && r != "n0"),
        "{view:?}"
    );
    // The moved path answers again.
    assert!(!view.paths[1].suspect, "{view:?}");
    // Duplicate on two paths: the game never noticed the relay dying.
    assert!(net.longest_gap(secs(2.0), secs(9.0)) < Duration::from_millis(100));
    assert_eq!(net.doubled(), 0);
}

/// A leg degrading mid-session (issue 15's target): the primary path's delay goes from 10 to
/// 90 ms each way. Under `duplicate` the session moves its primary to the other path within
/// 10 s, and the game sees a contiguous sequence: nothing lost, nothing doubled; the longest
/// gap is printed and fails the test only above 250 ms.
#[test]
fn a_degraded_leg_moves_the_primary_within_ten_seconds_and_loses_nothing() {
    let mut net = VirtualNet::new(NetConfig {
        relays: vec![None, Some(1)],
        conn: ConnConfig {
            policy: Redundancy::Duplicate,
            protection: Protection::Never,
            ..ConnConfig::default()
        },
        ..NetConfig::default()
    });
    net.run(secs(5.0), Some(TICK));
    let primary = net.sessions[0].client.paths_view(net.now).primary as usize;
    let degraded_at = net.now;
    net.impair(
        primary,
        Impairment {
            delay_ms: 90.0,
            ..Impairment::default()
        },
        7,
    );
    net.run(secs(15.0), Some(TICK));
    let moved = net.sessions[0]
        .events
        .iter()
        .find_map(|(at, e)| match e {
            ProxyEvent::PrimaryChanged { from, to } if *from as usize == primary => {
                Some((*at, *to))
            }
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "the primary never left the degraded path: {:?}",
                net.sessions[0].events
            )
        });
    let after = moved.0.saturating_duration_since(degraded_at);
    let gap = net.longest_gap(secs(4.0), net.elapsed());
    println!(
        "primary path {primary} → {} {:.2} s after its leg degraded; longest gap {} ms; {} sent, {} lost, {} doubled",
        moved.1,
        after.as_secs_f64(),
        gap.as_millis(),
        net.sent(),
        net.lost(net.sent().saturating_sub(64)),
        net.doubled()
    );
    assert!(after <= secs(10.0), "{after:?}");
    assert_eq!(net.lost(net.sent().saturating_sub(64)), 0);
    assert_eq!(net.doubled(), 0);
    assert!(gap <= Duration::from_millis(250), "{gap:?}");
}

#[test]
fn a_game_with_hundreds_of_short_flows_is_never_cut_off() {
    // A server browser or a match that meets many endpoints: a new source port every 200 ms
    // for three minutes (900 flows, ~300 of them within any minute, far over the 64 slots),
    // each sending 16 packets in 200 ms and then going quiet; both ends give up quiet flows
    // after 5 s, so every flow is carried.
    let mut net = VirtualNet::new(NetConfig {
        conn: single(),
        ..NetConfig::default()
    });
    let flows = |n: u64| std::net::SocketAddr::from(([127, 0, 0, 1], 20_000 + (n / 16) as u16));
    net.run_from(secs(180.0), Some(Duration::from_micros(12_500)), flows);
    let sent = net.sent();
    println!(
        "short flows: {sent} packets from {} sources, lost {}, events {:?}",
        sent / 16,
        net.lost(sent - 10),
        net.sessions[0]
            .events
            .iter()
            .filter(|(_, e)| !matches!(e, ProxyEvent::PrimaryChanged { .. }))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        !net.sessions[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, ProxyEvent::TooManyFlows | ProxyEvent::FlowError { .. })),
        "{:?}",
        net.sessions[0].events.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(net.lost(sent - 10), 0);
    assert_eq!(net.doubled(), 0);
}

#[test]
fn the_same_seed_gives_the_same_session() {
    let run = || {
        let mut net = VirtualNet::new(NetConfig {
            relays: vec![None, Some(1)],
            impairment: Impairment {
                loss_pct: 5.0,
                delay_ms: 20.0,
                jitter_ms: 3.0,
                ..Impairment::default()
            },
            seed: 42,
            ..NetConfig::default()
        });
        net.run(secs(20.0), Some(TICK));
        (
            net.sessions[0].copies.clone(),
            net.sessions[0].events.len(),
            net.sessions[0]
                .client
                .stats()
                .pongs
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    assert_eq!(run(), run());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random loss, blackholes and an exit kill, with a live backup: the session never ends
    /// (traffic flows once the trouble is over) and no game packet is delivered twice.
    #[test]
    fn random_trouble_with_a_live_backup_never_ends_the_session(
        seed in any::<u64>(),
        loss in 0.0f64..30.0,
        hole_path in 0usize..2,
        hole_at in 1.0f64..8.0,
        hole_len in 0.0f64..4.0,
        kill_exit_at in proptest::option::of(1.0f64..8.0),
        duplicate in any::<bool>(),
    ) {
        let mut net = VirtualNet::new(NetConfig {
            nodes: 3,
            relays: vec![None, Some(2)],
            impairment: Impairment { loss_pct: loss, delay_ms: 15.0, jitter_ms: 2.0, ..Impairment::default() },
            conn: ConnConfig {
                policy: if duplicate { Redundancy::Duplicate } else { Redundancy::ADAPTIVE },
                protection: Protection::Never,
                ..ConnConfig::default()
            },
            seed,
            ..NetConfig::default()
        });
        net.blackhole(hole_path, secs(hole_at), secs(hole_at + hole_len));
        match kill_exit_at {
            Some(at) => {
                net.run(secs(at), Some(TICK));
                net.nodes[0].up = false;
                net.run(secs(10.0 - at), Some(TICK));
            }
            None => net.run(secs(10.0), Some(TICK)),
        }
        // Trouble over: clean links for the last stretch.
        for p in 0..2 {
            net.impair(p, Impairment { delay_ms: 15.0, ..Impairment::default() }, seed ^ p as u64);
        }
        let before = net.sent();
        net.run(secs(6.0), Some(TICK));
        prop_assert_eq!(net.doubled(), 0);
        // Packets sent in the last 3 s all came back: the session lives.
        let tail_from = before + 3 * 64;
        let lost = (tail_from..net.sent() - 8).filter(|&s| net.sessions[0].copies.get(s as usize).copied().unwrap_or(0) == 0).count();
        prop_assert!(lost == 0, "lost {} of the last packets; events {:?}; actions {:?}", lost, net.sessions[0].events, net.sessions[0].actions.iter().filter(|(_, a)| matches!(a, Action::FailOver { .. })).count());
    }
}
