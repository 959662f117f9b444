//! ICMP probing for real, in a network namespace this test creates (Linux, root): with
//! `net.ipv4.ping_group_range` open the node uses an unprivileged ping socket; closed
//! (`1 0`, the kernel default) it falls back to a raw socket, which root may open. Skipped,
//! with the reason printed, when not root or without `ip`.
//!
//! The namespace's `lo` holds 198.51.100.1/24 (a dummy interface would need a kernel module
//! containers may lack); the probe runs on a thread that entered the namespace (setns), so its
//! sockets live there.

#![cfg(target_os = "linux")]

use std::fs::File;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use plg_node::prober::{IcmpKind, icmp_echo};

const TARGET: &str = "198.51.100.1";

/// Why this test cannot run here, if it cannot.
fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: cannot create network namespaces");
    }
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !ip.is_ok_and(|s| s.success()) {
        return Some("no `ip` command (iproute2)");
    }
    None
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A network namespace, deleted on drop (also when the test fails).
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let ns = Netns(format!("plgprobe{}", std::process::id()));
        run(Command::new("ip").args(["netns", "add", &ns.0]));
        ns
    }

    fn ip(&self, args: &str) {
        run(Command::new("ip")
            .args(["-n", &self.0])
            .args(args.split_whitespace()));
    }

    fn sysctl(&self, setting: &str) {
        run(Command::new("ip").args(["netns", "exec", &self.0, "sysctl", "-qw", setting]));
    }

    /// One ICMP echo to `ip` from a thread inside the namespace.
    fn echo(&self, ip: IpAddr) -> (IcmpKind, Option<Duration>) {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {path}: {e}"));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(icmp_echo(ip, Duration::from_secs(2)))
                .expect("an ICMP socket")
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn icmp_probe_uses_the_ping_socket_when_allowed_and_the_raw_socket_otherwise() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let ns = Netns::new();
    ns.ip("link set lo up");
    ns.ip(&format!("addr add {TARGET}/24 dev lo"));
    let target: IpAddr = TARGET.parse().unwrap();

    ns.sysctl("net.ipv4.ping_group_range=0 2147483647");
    let (kind, rtt) = ns.echo(target);
    println!("ping_group_range open: {kind:?} socket, RTT {rtt:?}");
    assert_eq!(kind, IcmpKind::Ping);
    assert!(rtt.is_some(), "no echo reply through the ping socket");

    ns.sysctl("net.ipv4.ping_group_range=1 0");
    let (kind, rtt) = ns.echo(target);
    println!("ping_group_range closed: {kind:?} socket, RTT {rtt:?}");
    assert_eq!(kind, IcmpKind::Raw);
    assert!(rtt.is_some(), "no echo reply through the raw socket");

    // An address nothing holds, routed out of `lo` (it comes back, and the namespace does
    // not forward): no reply.
    ns.ip("route add 203.0.113.0/24 dev lo");
    let (_, rtt) = ns.echo("203.0.113.9".parse().unwrap());
    assert_eq!(rtt, None);
}
