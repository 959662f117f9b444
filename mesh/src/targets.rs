//! What a node measured towards game servers, sans-IO: one estimator per server address (or
//! named target), aggregated per target key — the address's /24 or /48
//! ([`plg_proto::query::target_key`]) — and ranked for gossip and billing's announce.
//!
//! A prefix's figure is the median of each field over its addresses, so one odd server does
//! not move it. Addresses not probed for [`TARGET_TTL`] are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::rtt::{RttConfig, RttMatrix, RttSummary};

/// Most target keys a node gossips (`g:<key>`): 16 keys of at most ~55 bytes keep targets
/// within the ~1 KB a chitchat message has to spare (`docs/mesh.md`).
pub const MAX_GOSSIPED_TARGETS: usize = 16;
/// Most target keys reported to billing in the announce (its limit).
pub const MAX_REPORTED_TARGETS: usize = 256;
/// Most measured members (addresses or named targets) kept; probes of more are ignored.
const MAX_MEMBERS: usize = 1024;
/// A member not probed for this long is forgotten (and its key with it when it was the last).
pub const TARGET_TTL: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Member {
    key: String,
    last: Instant,
}

/// Target estimators; see the module docs.
#[derive(Debug)]
pub struct TargetRtts {
    rtt: RttMatrix<String>,
    members: HashMap<String, Member>,
    priority: HashMap<String, u32>,
}

impl TargetRtts {
    /// Nothing measured yet.
    pub fn new(config: RttConfig) -> Self {
        TargetRtts {
            rtt: RttMatrix::new(config),
            members: HashMap::new(),
            priority: HashMap::new(),
        }
    }

    /// Records a probe to game server `addr` sent at `sent_at`: `Some(rtt)` if answered.
    pub fn record_addr(&mut self, addr: IpAddr, sent_at: Instant, rtt: Option<Duration>) {
        let addr = addr.to_canonical();
        let key = plg_proto::query::target_key(addr);
        self.record(addr.to_string(), key, sent_at, rtt);
    }

    /// Records a probe to a named target, which is its own key.
    pub fn record_named(&mut self, name: &str, sent_at: Instant, rtt: Option<Duration>) {
        self.record(name.to_owned(), name.to_owned(), sent_at, rtt);
    }

    fn record(&mut self, member: String, key: String, sent_at: Instant, rtt: Option<Duration>) {
        let full = self.members.len() >= MAX_MEMBERS;
        match self.members.get_mut(&member) {
            Some(m) => m.last = m.last.max(sent_at),
            None if full => return,
            None => {
                self.members
                    .insert(member.clone(), Member { key, last: sent_at });
            }
        }
        self.rtt.record_probe(&member, sent_at, rtt);
    }

    /// Ranks keys: higher priority first; keys without one count 0. Replaces the previous
    /// priorities.
    pub fn set_priorities(&mut self, priorities: impl IntoIterator<Item = (String, u32)>) {
        self.priority = priorities.into_iter().collect();
    }

    /// Forgets members not probed since `now − TARGET_TTL`.
    pub fn expire(&mut self, now: Instant) {
        let members = &mut self.members;
        members.retain(|_, m| now.saturating_duration_since(m.last) < TARGET_TTL);
        self.rtt.retain(|member| members.contains_key(member));
    }

    /// Every target key with its aggregate, best first: higher priority, then usable (under
    /// 50 % loss), then by key, so the gossiped set is stable.
    pub fn ranked(&self) -> Vec<(String, RttSummary)> {
        let mut by_key: HashMap<&str, Vec<RttSummary>> = HashMap::new();
        for (member, summary) in self.rtt.summaries() {
            if let Some(m) = self.members.get(member) {
                by_key.entry(&m.key).or_default().push(summary);
            }
        }
        let mut v: Vec<(u32, String, RttSummary)> = by_key
            .into_iter()
            .filter_map(|(key, mut members)| {
                let priority = self.priority.get(key).copied().unwrap_or(0);
                Some((priority, key.to_owned(), aggregate(&mut members)?))
            })
            .collect();
        v.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(a.2.cost().is_none().cmp(&b.2.cost().is_none()))
                .then_with(|| a.1.cmp(&b.1))
        });
        v.into_iter().map(|(_, k, s)| (k, s)).collect()
    }
}

/// The median (the upper one for an even count) of each field.
fn aggregate(members: &mut [RttSummary]) -> Option<RttSummary> {
    fn median<T: Copy + PartialOrd>(v: &mut [RttSummary], f: impl Fn(&RttSummary) -> T) -> T {
        v.sort_by(|a, b| f(a).partial_cmp(&f(b)).unwrap_or(std::cmp::Ordering::Equal));
        f(&v[v.len() / 2])
    }
    if members.is_empty() {
        return None;
    }
    Some(RttSummary {
        srtt: median(members, |s| s.srtt),
        jitter: median(members, |s| s.jitter),
        p50: median(members, |s| s.p50),
        p99: median(members, |s| s.p99),
        loss: median(members, |s| s.loss),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Option<Duration> {
        Some(Duration::from_millis(x))
    }

    #[test]
    fn prefixes_aggregate_by_median_and_members_expire() {
        let t0 = Instant::now();
        let mut t = TargetRtts::new(RttConfig::default());
        for (host, rtt) in [(1u8, 20u64), (2, 30), (3, 200)] {
            t.record_addr(IpAddr::from([198, 51, 100, host]), t0, ms(rtt));
        }
        // Another prefix, and the same address written as IPv4-mapped IPv6.
        t.record_addr("::ffff:203.0.113.9".parse().unwrap(), t0, ms(50));
        let later = t0 + Duration::from_secs(200);
        t.record_addr(IpAddr::from([198, 51, 100, 3]), later, ms(200));
        let r = t.ranked();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, "198.51.100.0/24");
        assert_eq!(r[0].1.srtt, Duration::from_millis(30));
        assert_eq!(r[1].0, "203.0.113.0/24");
        // Five minutes after their last probe, .1, .2 and 203.0.113.9 are gone; .3 remains.
        t.expire(t0 + TARGET_TTL);
        let r = t.ranked();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1.srtt, Duration::from_millis(200));
        t.expire(later + TARGET_TTL);
        assert!(t.ranked().is_empty());
    }

    #[test]
    fn priority_then_usable_then_key() {
        let t0 = Instant::now();
        let mut t = TargetRtts::new(RttConfig::default());
        t.record_addr(IpAddr::from([203, 0, 113, 1]), t0, None);
        t.record_addr(IpAddr::from([203, 0, 114, 1]), t0, ms(40));
        t.record_named("cs2-eu", t0, ms(10));
        let keys = |t: &TargetRtts| t.ranked().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        // Usable before all-lost, then by key (bytes: digits before letters).
        assert_eq!(keys(&t), ["203.0.114.0/24", "cs2-eu", "203.0.113.0/24"]);
        t.set_priorities([("203.0.113.0/24".to_owned(), 2), ("cs2-eu".to_owned(), 1)]);
        assert_eq!(keys(&t), ["203.0.113.0/24", "cs2-eu", "203.0.114.0/24"]);
    }

    #[test]
    fn members_are_bounded() {
        let t0 = Instant::now();
        let mut t = TargetRtts::new(RttConfig::default());
        for i in 0..2000u32 {
            t.record_addr(
                IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i * 256)),
                t0,
                ms(5),
            );
        }
        assert_eq!(t.ranked().len(), MAX_MEMBERS);
    }
}
