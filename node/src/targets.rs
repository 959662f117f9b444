//! What to probe, when and how, sans-IO: the node's probe targets and their budget.
//!
//! A node probes only what it was asked to reach: the destinations of flows its sessions'
//! tickets opened ([`Scheduler::flow_used`], forgotten [`FLOW_TARGET_TTL`] after their last
//! use) and the catalog's probe addresses from billing ([`Scheduler::set_catalog`], replaced
//! at each announce). Nothing else enters the table, so probing is never an open service.
//! Loopback, private and other non-public addresses are refused unless the node allows
//! private destinations (tests, demos).
//!
//! Budget: at most one probe per target prefix (/24, /48) per [`PREFIX_INTERVAL`], whatever
//! the number of sessions or addresses in it (its addresses take turns); at most
//! [`RATE_PER_SEC`] probes per second in all (token bucket, burst [`BURST`]); at most
//! [`MAX_TARGETS`] targets.
//!
//! Method: the game's query protocol (`probes[].query`, UDP to the server's port) when the
//! catalog names one for the address's prefix, else ICMP echo. A query target that never
//! answered falls back to ICMP after [`QUERY_FALLBACK_AFTER`] losses in a row; without ICMP
//! (no ping socket, no raw socket) an ICMP target is never probed and stays unknown.
//! The driver (`prober.rs`) sends what [`Scheduler::poll`] returns, sleeps until
//! [`Scheduler::poll_timeout`], and reports outcomes with [`Scheduler::on_result`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use plg_proto::query::{QueryKind, target_key};
use tokio::time::Instant;

use crate::policy;

/// Most targets (addresses) at once.
pub const MAX_TARGETS: usize = 256;
/// At most one probe per target prefix this often.
pub const PREFIX_INTERVAL: Duration = Duration::from_secs(1);
/// Probes per second for the whole node (token bucket rate).
pub const RATE_PER_SEC: u32 = 200;
/// Token bucket depth.
pub const BURST: u32 = 10;
/// A flow's destination stays a target this long after its last use.
pub const FLOW_TARGET_TTL: Duration = Duration::from_secs(300);
/// A probe unanswered this long is lost.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A query target with no answer ever is probed with ICMP after this many losses in a row.
pub const QUERY_FALLBACK_AFTER: u32 = 3;

/// How a target is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// ICMP echo (ping socket, or raw socket as root).
    Icmp,
    /// The game's query protocol over UDP to the target's port.
    Query(QueryKind),
}

/// One probe to send now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The target: where a query goes; for ICMP only the address counts.
    pub addr: SocketAddr,
    /// How.
    pub method: Method,
}

/// Billing's probe addresses for one catalog game (announce response `probes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogProbe {
    /// Catalog game slug.
    pub game: String,
    /// Catalog game id, as tickets carry it (`None`: billing did not say).
    pub game_id: Option<u32>,
    /// Its query protocol, if the catalog names one.
    pub query: Option<QueryKind>,
    /// Representative server addresses.
    pub addrs: Vec<SocketAddr>,
}

/// Why an address was not taken as a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Loopback, private, link-local, multicast… and the node does not allow those.
    #[error("{0} is not a public address")]
    NotPublic(IpAddr),
    /// A query target without a port.
    #[error("{0}: a query probe needs a port")]
    NoPort(SocketAddr),
    /// [`MAX_TARGETS`] targets already.
    #[error("probe target table full ({MAX_TARGETS})")]
    Full,
}

#[derive(Debug)]
struct Target {
    key: String,
    method: Method,
    /// Named by the catalog (kept until the catalog changes).
    catalog: bool,
    /// Named by a flow: kept until then.
    flow_until: Option<Instant>,
    last_probe: Option<Instant>,
    answered: u64,
    lost_in_row: u32,
}

/// Token bucket of [`RATE_PER_SEC`], depth [`BURST`].
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let at = self.at.get_or_insert(now);
        let secs = now.saturating_duration_since(*at).as_secs_f64();
        self.tokens = (self.tokens + secs * f64::from(RATE_PER_SEC)).min(f64::from(BURST));
        *at = now;
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token is there.
    fn ready_at(&self, now: Instant) -> Instant {
        if self.tokens >= 1.0 {
            return now;
        }
        let missing = (1.0 - self.tokens) / f64::from(RATE_PER_SEC);
        now + Duration::from_secs_f64(missing)
    }
}

/// The probe scheduler; see the module docs.
#[derive(Debug)]
pub struct Scheduler {
    allow_private: bool,
    icmp_v4: bool,
    icmp_v6: bool,
    /// By target: the address for a query, the address with port 0 for ICMP.
    targets: BTreeMap<SocketAddr, Target>,
    /// Query protocol of each prefix the catalog names one for.
    catalog_kinds: HashMap<String, QueryKind>,
    /// Query protocol of each catalog game (by ticket `game_id`) that names one.
    game_kinds: HashMap<u32, QueryKind>,
    /// When each prefix may be probed again.
    prefix_next: HashMap<String, Instant>,
    bucket: Bucket,
}

impl Scheduler {
    /// An empty table. `icmp_v4`, `icmp_v6`: whether the driver can send ICMP echo to
    /// such addresses at all.
    pub fn new(allow_private: bool, icmp_v4: bool, icmp_v6: bool) -> Self {
        Scheduler {
            allow_private,
            icmp_v4,
            icmp_v6,
            targets: BTreeMap::new(),
            catalog_kinds: HashMap::new(),
            game_kinds: HashMap::new(),
            prefix_next: HashMap::new(),
            bucket: Bucket {
                tokens: f64::from(BURST),
                at: None,
            },
        }
    }

    fn check(&self, addr: SocketAddr, method: Method) -> Result<(), Refused> {
        let ip = addr.ip().to_canonical();
        if !self.allow_private && !policy::is_public(SocketAddr::new(ip, 1)) {
            return Err(Refused::NotPublic(ip));
        }
        if matches!(method, Method::Query(_)) && addr.port() == 0 {
            return Err(Refused::NoPort(addr));
        }
        Ok(())
    }

    /// The table entry of `addr` probed with `method`.
    fn slot(addr: SocketAddr, method: Method) -> SocketAddr {
        let ip = addr.ip().to_canonical();
        match method {
            Method::Icmp => SocketAddr::new(ip, 0),
            Method::Query(_) => SocketAddr::new(ip, addr.port()),
        }
    }

    /// A session's flow to `dst` was opened (or is still in use) at `now`; `game`: the
    /// session's catalog game id. Probed with the catalog's query protocol for that prefix,
    /// else the game's, else ICMP.
    pub fn flow_used(
        &mut self,
        dst: SocketAddr,
        game: Option<u32>,
        now: Instant,
    ) -> Result<(), Refused> {
        let key = target_key(dst.ip());
        let method = self
            .catalog_kinds
            .get(&key)
            .or_else(|| self.game_kinds.get(&game?))
            .map_or(Method::Icmp, |k| Method::Query(*k));
        self.check(dst, method)?;
        let slot = Self::slot(dst, method);
        let until = now + FLOW_TARGET_TTL;
        if let Some(t) = self.targets.get_mut(&slot) {
            t.flow_until = Some(t.flow_until.map_or(until, |u| u.max(until)));
            return Ok(());
        }
        self.insert(slot, key, method, false, Some(until))
    }

    fn insert(
        &mut self,
        slot: SocketAddr,
        key: String,
        method: Method,
        catalog: bool,
        flow_until: Option<Instant>,
    ) -> Result<(), Refused> {
        if self.targets.len() >= MAX_TARGETS {
            return Err(Refused::Full);
        }
        self.targets.insert(
            slot,
            Target {
                key,
                method,
                catalog,
                flow_until,
                last_probe: None,
                answered: 0,
                lost_in_row: 0,
            },
        );
        Ok(())
    }

    /// Replaces the catalog's probe addresses; returns the refused ones. Addresses only the
    /// previous catalog named are dropped.
    pub fn set_catalog(&mut self, probes: &[CatalogProbe]) -> Vec<(SocketAddr, Refused)> {
        for t in self.targets.values_mut() {
            t.catalog = false;
        }
        self.targets.retain(|_, t| t.flow_until.is_some());
        self.catalog_kinds.clear();
        self.game_kinds.clear();
        for p in probes {
            if let (Some(kind), Some(id)) = (p.query, p.game_id) {
                self.game_kinds.insert(id, kind);
            }
            if let Some(kind) = p.query {
                for a in &p.addrs {
                    self.catalog_kinds.insert(target_key(a.ip()), kind);
                }
            }
        }
        let mut refused = Vec::new();
        for p in probes {
            let method = p.query.map_or(Method::Icmp, Method::Query);
            for &addr in &p.addrs {
                if let Err(e) = self.check(addr, method) {
                    refused.push((addr, e));
                    continue;
                }
                let slot = Self::slot(addr, method);
                if let Some(t) = self.targets.get_mut(&slot) {
                    t.catalog = true;
                } else if let Err(e) = self.insert(slot, target_key(addr.ip()), method, true, None)
                {
                    refused.push((addr, e));
                }
            }
        }
        refused
    }

    /// Drops flow targets unused for [`FLOW_TARGET_TTL`], and the pacing of empty prefixes.
    fn expire(&mut self, now: Instant) {
        self.targets
            .retain(|_, t| t.catalog || t.flow_until.is_some_and(|u| u > now));
        let live: std::collections::HashSet<&str> =
            self.targets.values().map(|t| t.key.as_str()).collect();
        self.prefix_next.retain(|k, _| live.contains(k.as_str()));
    }

    fn icmp_for(&self, addr: SocketAddr) -> bool {
        if addr.is_ipv4() {
            self.icmp_v4
        } else {
            self.icmp_v6
        }
    }

    fn usable(&self, slot: SocketAddr, t: &Target) -> bool {
        t.method != Method::Icmp || self.icmp_for(slot)
    }

    fn prefix_due(&self, key: &str, now: Instant) -> bool {
        self.prefix_next.get(key).is_none_or(|&n| n <= now)
    }

    /// The next probe to send at `now`, if one is due and the budget allows it.
    pub fn poll(&mut self, now: Instant) -> Option<Probe> {
        self.expire(now);
        let (&slot, _) = self
            .targets
            .iter()
            .filter(|(slot, t)| self.usable(**slot, t) && self.prefix_due(&t.key, now))
            .min_by_key(|(_, t)| t.last_probe)?;
        if !self.bucket.take(now) {
            return None;
        }
        let t = self.targets.get_mut(&slot).expect("found above");
        t.last_probe = Some(now);
        self.prefix_next
            .insert(t.key.clone(), now + PREFIX_INTERVAL);
        Some(Probe {
            addr: slot,
            method: t.method,
        })
    }

    /// When [`Scheduler::poll`] may next return something (or a flow target expires).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let due = self
            .targets
            .iter()
            .filter(|(slot, t)| self.usable(**slot, t))
            .map(|(_, t)| self.prefix_next.get(&t.key).copied().unwrap_or(now))
            .min()
            .map(|at| at.max(self.bucket.ready_at(now)));
        let expiry = self.targets.values().filter_map(|t| t.flow_until).min();
        due.into_iter().chain(expiry).min()
    }

    /// The outcome of the probe [`Scheduler::poll`] returned for `probe`.
    pub fn on_result(&mut self, probe: &Probe, answered: bool) {
        let Some(t) = self.targets.get_mut(&probe.addr) else {
            return;
        };
        if answered {
            t.answered += 1;
            t.lost_in_row = 0;
            return;
        }
        t.lost_in_row = t.lost_in_row.saturating_add(1);
        if matches!(t.method, Method::Query(_))
            && t.answered == 0
            && t.lost_in_row >= QUERY_FALLBACK_AFTER
            && (if probe.addr.is_ipv4() {
                self.icmp_v4
            } else {
                self.icmp_v6
            })
        {
            tracing::debug!(target = %probe.addr, "query probes unanswered: falling back to ICMP");
            t.method = Method::Icmp;
            t.lost_in_row = 0;
        }
    }

    /// How much this node's sessions use each prefix, to rank the gossiped ones: the number
    /// of flow destinations in it, plus one if the catalog names it.
    pub fn priorities(&self) -> Vec<(String, u32)> {
        let mut m: HashMap<&str, u32> = HashMap::new();
        for t in self.targets.values() {
            *m.entry(&t.key).or_default() +=
                u32::from(t.flow_until.is_some()) + u32::from(t.catalog);
        }
        m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// Targets in the table.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn catalog(query: Option<QueryKind>, addrs: &[&str]) -> Vec<CatalogProbe> {
        vec![CatalogProbe {
            game: "cs2".into(),
            game_id: Some(730),
            query,
            addrs: addrs.iter().map(|a| sa(a)).collect(),
        }]
    }

    /// Everything `poll` hands out between `from` and `to`, stepping 1 ms.
    fn drain(s: &mut Scheduler, from: Instant, to: Instant) -> Vec<(Instant, Probe)> {
        let mut out = Vec::new();
        let mut now = from;
        while now < to {
            while let Some(p) = s.poll(now) {
                out.push((now, p));
            }
            now += Duration::from_millis(1);
        }
        out
    }

    #[test]
    fn nothing_named_nothing_probed() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(false, true, true);
        assert!(drain(&mut s, t0, t0 + Duration::from_secs(3)).is_empty());
        assert_eq!(s.poll_timeout(t0), None);
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(false, true, true);
        for a in [
            "127.0.0.1:27015",
            "10.0.0.1:1",
            "[::1]:5",
            "[::ffff:192.168.1.1]:5",
        ] {
            assert!(
                matches!(s.flow_used(sa(a), None, t0), Err(Refused::NotPublic(_))),
                "{a}"
            );
        }
        let refused = s.set_catalog(&catalog(None, &["192.168.0.1:27015", "203.0.113.5:27015"]));
        assert_eq!(refused.len(), 1);
        assert_eq!(s.len(), 1);
        let mut open = Scheduler::new(true, true, true);
        assert_eq!(open.flow_used(sa("127.0.0.1:27015"), None, t0), Ok(()));
        assert_eq!(
            open.poll(t0).unwrap(),
            Probe {
                addr: sa("127.0.0.1:0"),
                method: Method::Icmp
            }
        );
    }

    #[test]
    fn one_probe_per_prefix_per_second_whatever_the_sessions() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(false, true, true);
        // 50 flows to 5 servers of one /24, reported again and again.
        for i in 0..50u8 {
            s.flow_used(
                sa(&format!("203.0.113.{}:{}", i % 5, 27015 + u16::from(i))),
                None,
                t0,
            )
            .unwrap();
        }
        assert_eq!(s.len(), 5, "one ICMP target per address");
        let sent = drain(&mut s, t0, t0 + Duration::from_millis(10_500));
        assert_eq!(sent.len(), 11, "{sent:?}");
        for w in sent.windows(2) {
            assert!(w[1].0 - w[0].0 >= PREFIX_INTERVAL);
        }
        // The addresses take turns.
        let first5: std::collections::HashSet<SocketAddr> =
            sent[..5].iter().map(|(_, p)| p.addr).collect();
        assert_eq!(first5.len(), 5);
    }

    #[test]
    fn node_budget_is_a_token_bucket() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(false, true, true);
        // 250 prefixes, all due at once.
        for i in 0..250u32 {
            let ip = std::net::Ipv4Addr::from(0x2e00_0001 + (i << 8));
            s.flow_used(SocketAddr::new(ip.into(), 9), None, t0)
                .unwrap();
        }
        let burst = drain(&mut s, t0, t0 + Duration::from_millis(1));
        assert_eq!(burst.len(), BURST as usize);
        assert_eq!(
            s.poll_timeout(t0).unwrap(),
            t0 + Duration::from_secs(1) / RATE_PER_SEC
        );
        let second = drain(&mut s, t0, t0 + Duration::from_secs(1));
        assert!(
            (195..=211).contains(&second.len()),
            "{} probes in the first second",
            second.len()
        );
    }

    #[test]
    fn flow_targets_expire_five_minutes_after_last_use() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(false, true, true);
        s.flow_used(sa("198.51.100.7:27015"), None, t0).unwrap();
        s.flow_used(
            sa("198.51.100.7:27015"),
            None,
            t0 + Duration::from_secs(100),
        )
        .unwrap();
        assert!(s.poll(t0 + Duration::from_secs(399)).is_some());
        assert_eq!(s.len(), 1);
        assert!(s.poll(t0 + Duration::from_secs(400)).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn catalog_replaced_drops_old_addresses_but_keeps_flows() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(false, true, true);
        s.set_catalog(&catalog(Some(QueryKind::A2s), &["155.133.226.71:27015"]));
        s.flow_used(sa("155.133.226.71:27015"), None, t0).unwrap();
        s.flow_used(sa("203.0.113.9:5000"), None, t0).unwrap();
        assert_eq!(s.len(), 2);
        s.set_catalog(&[]);
        assert_eq!(s.len(), 2, "still used by flows");
        let refused = s.set_catalog(&catalog(None, &["192.168.0.1:1", "8.8.8.8:53"]));
        assert_eq!(
            refused,
            [(
                sa("192.168.0.1:1"),
                Refused::NotPublic("192.168.0.1".parse().unwrap())
            )]
        );
        let slots: Vec<SocketAddr> = s.targets.keys().copied().collect();
        assert_eq!(
            slots,
            [
                sa("8.8.8.8:0"),
                sa("155.133.226.71:27015"),
                sa("203.0.113.9:0")
            ]
        );
    }

    #[test]
    fn catalog_query_kind_applies_to_its_prefix_and_falls_back_to_icmp() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(false, true, true);
        s.set_catalog(&catalog(Some(QueryKind::Q3), &["203.0.113.10:27960"]));
        // A session's server in the same /24: probed with the game's protocol on its port.
        s.flow_used(sa("203.0.113.11:27961"), None, t0).unwrap();
        // Another prefix: ICMP...
        s.flow_used(sa("198.51.100.1:27960"), None, t0).unwrap();
        // ...unless the session's game names a protocol: then that, on the flow's port.
        s.flow_used(sa("8.8.4.4:27015"), Some(730), t0).unwrap();
        s.flow_used(sa("8.8.8.8:27015"), Some(440), t0).unwrap();
        let methods: HashMap<SocketAddr, Method> =
            s.targets.iter().map(|(a, t)| (*a, t.method)).collect();
        assert_eq!(
            methods[&sa("203.0.113.11:27961")],
            Method::Query(QueryKind::Q3)
        );
        assert_eq!(methods[&sa("198.51.100.1:0")], Method::Icmp);
        assert_eq!(methods[&sa("8.8.4.4:27015")], Method::Query(QueryKind::Q3));
        assert_eq!(
            methods[&sa("8.8.8.8:0")],
            Method::Icmp,
            "another game: ICMP"
        );

        let p = Probe {
            addr: sa("203.0.113.10:27960"),
            method: Method::Query(QueryKind::Q3),
        };
        for _ in 0..QUERY_FALLBACK_AFTER {
            s.on_result(&p, false);
        }
        assert_eq!(s.targets[&p.addr].method, Method::Icmp);
        // One that answered once keeps its protocol through losses.
        let q = Probe {
            addr: sa("203.0.113.11:27961"),
            method: Method::Query(QueryKind::Q3),
        };
        s.on_result(&q, true);
        for _ in 0..10 {
            s.on_result(&q, false);
        }
        assert_eq!(s.targets[&q.addr].method, Method::Query(QueryKind::Q3));
    }

    #[test]
    fn without_icmp_only_query_targets_are_probed() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(false, false, false);
        s.flow_used(sa("198.51.100.1:27960"), None, t0).unwrap();
        assert_eq!(s.poll(t0), None);
        assert_eq!(s.poll_timeout(t0), Some(t0 + FLOW_TARGET_TTL));
        s.set_catalog(&catalog(Some(QueryKind::Echo), &["203.0.113.10:7"]));
        assert_eq!(
            s.poll(t0).map(|p| p.method),
            Some(Method::Query(QueryKind::Echo))
        );
    }

    #[test]
    fn table_is_bounded_and_priorities_count_use() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(false, true, true);
        for i in 0..MAX_TARGETS as u32 {
            let ip = std::net::Ipv4Addr::from(0x2e00_0001 + i);
            s.flow_used(SocketAddr::new(ip.into(), 9), None, t0)
                .unwrap();
        }
        assert_eq!(s.flow_used(sa("8.8.8.8:53"), None, t0), Err(Refused::Full));
        let p: HashMap<String, u32> = s.priorities().into_iter().collect();
        assert_eq!(p["46.0.0.0/24"], 255);
        assert_eq!(p["46.0.1.0/24"], 1);
    }
}
