//! What a capturing backend (`tun`, `windivert`) takes from the game: the ticket's destinations
//! (networks and port ranges) minus the addresses the client itself talks to (relay nodes,
//! billing), so the session's own packets never loop back into the capture.
//!
//! The same description becomes kernel routes for `tun` ([`Targets::routes`]) and a filter
//! string for WinDivert ([`Targets::windivert_filter`]); both are plain data, tested here on
//! every platform.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use plg_proto::ticket::{Destination, DestinationParseError};

use crate::billing::NodeInfo;

/// The game destinations to capture and the addresses never to capture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    destinations: Vec<Destination>,
    exclude: Vec<IpAddr>,
}

impl Targets {
    /// Captures traffic to `destinations`.
    pub fn new(destinations: impl IntoIterator<Item = Destination>) -> Targets {
        Targets {
            destinations: destinations
                .into_iter()
                .map(|d| Destination {
                    net: d.net.trunc(),
                    ..d
                })
                .collect(),
            exclude: Vec::new(),
        }
    }

    /// Parses destinations written as `CIDR:PORT` or `CIDR:LO-HI` (as billing's session grant
    /// lists them).
    pub fn parse<I, S>(list: I) -> Result<Targets, DestinationParseError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parsed = list
            .into_iter()
            .map(|s| s.as_ref().parse::<Destination>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Targets::new(parsed))
    }

    /// Never captures traffic to these addresses (the relay nodes, billing), whatever the
    /// destinations say. IPv4-mapped IPv6 addresses are taken as IPv4.
    pub fn exclude(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Targets {
        for a in addrs {
            let a = a.to_canonical();
            if !self.exclude.contains(&a) {
                self.exclude.push(a);
            }
        }
        self
    }

    /// [`Targets::exclude`]s what the session itself talks to: every given node (control and
    /// data ports) and billing (its host resolved; port 443 when the URL names none).
    pub async fn exclude_own<'a>(
        self,
        nodes: impl IntoIterator<Item = &'a NodeInfo>,
        billing_url: &str,
    ) -> Targets {
        let mut own = Vec::new();
        for n in nodes {
            for a in [&n.control_addr, &n.data_addr] {
                if let Ok(a) = a.parse::<SocketAddr>() {
                    own.push(a.ip());
                }
            }
        }
        if let Some(host) = billing_url
            .split("//")
            .nth(1)
            .and_then(|h| h.split('/').next())
        {
            let host = if host.contains(':') {
                host.to_owned()
            } else {
                format!("{host}:443")
            };
            if let Ok(addrs) = tokio::net::lookup_host(host).await {
                own.extend(addrs.map(|a| a.ip()));
            }
        }
        self.exclude(own)
    }

    /// The destinations captured.
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// The addresses never captured.
    pub fn excluded(&self) -> &[IpAddr] {
        &self.exclude
    }

    /// Whether nothing would be captured.
    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    /// Whether a packet to `dst` is game traffic to capture.
    pub fn contains(&self, dst: SocketAddr) -> bool {
        let ip = dst.ip().to_canonical();
        let dst = SocketAddr::new(ip, dst.port());
        !self.exclude.contains(&ip) && self.destinations.iter().any(|d| d.contains(dst))
    }

    /// The networks to route into a TUN device: every destination network, with each excluded
    /// address carved out (so the route set covers exactly the capturable addresses and the
    /// excluded ones keep following the machine's normal routes), aggregated.
    ///
    /// Carving instead of adding a bypass route via the original gateway means every route the
    /// TUN backend installs hangs off its own device: the kernel removes them all with the
    /// device, even if the process is killed.
    pub fn routes(&self) -> Vec<IpNet> {
        let mut nets: Vec<IpNet> = self.destinations.iter().map(|d| d.net).collect();
        for &ex in &self.exclude {
            nets = nets.into_iter().flat_map(|n| carve(n, ex)).collect();
        }
        IpNet::aggregate(&nets)
    }

    /// A WinDivert filter matching outbound, non-loopback UDP to the destinations (address
    /// ranges and port ranges) except the excluded addresses; `false` if there is none.
    pub fn windivert_filter(&self) -> String {
        let mut clauses = Vec::new();
        for d in &self.destinations {
            let (field, first, last) = match d.net {
                IpNet::V4(n) => ("ip", n.network().to_string(), n.broadcast().to_string()),
                IpNet::V6(n) => ("ipv6", n.network().to_string(), n.broadcast().to_string()),
            };
            let mut c = String::from("(");
            if d.net.prefix_len() == d.net.max_prefix_len() {
                let _ = write!(c, "{field}.DstAddr == {first}");
            } else if d.net.prefix_len() == 0 {
                c.push_str(field);
            } else {
                let _ = write!(
                    c,
                    "{field}.DstAddr >= {first} and {field}.DstAddr <= {last}"
                );
            }
            for ex in self.exclude.iter().filter(|ex| d.net.contains(*ex)) {
                let _ = write!(c, " and {field}.DstAddr != {ex}");
            }
            match (d.port_lo, d.port_hi) {
                (0, u16::MAX) => {}
                (lo, hi) if lo == hi => {
                    let _ = write!(c, " and udp.DstPort == {lo}");
                }
                (lo, hi) => {
                    let _ = write!(c, " and udp.DstPort >= {lo} and udp.DstPort <= {hi}");
                }
            }
            c.push(')');
            if !clauses.contains(&c) {
                clauses.push(c);
            }
        }
        if clauses.is_empty() {
            return "false".into();
        }
        format!(
            "outbound and !loopback and udp and ({})",
            clauses.join(" or ")
        )
    }
}

/// `net` without the single address `addr`: the sibling halves along the path down to `addr`.
fn carve(net: IpNet, addr: IpAddr) -> Vec<IpNet> {
    if !net.contains(&addr) {
        return vec![net];
    }
    let mut out = Vec::new();
    let mut cur = net;
    while cur.prefix_len() < cur.max_prefix_len() {
        let Ok(mut halves) = cur.subnets(cur.prefix_len() + 1) else {
            break;
        };
        let (Some(a), Some(b)) = (halves.next(), halves.next()) else {
            break;
        };
        let (keep, next) = if a.contains(&addr) { (b, a) } else { (a, b) };
        out.push(keep);
        cur = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(list: &[&str]) -> Targets {
        Targets::parse(list).unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contains_checks_network_port_and_exclusions() {
        let t = targets(&["10.200.0.0/16:27015-27030", "[fd00:200::/32]:5000"])
            .exclude(["10.200.9.1".parse().unwrap()]);
        assert!(t.contains(sa("10.200.2.2:27015")));
        assert!(t.contains(sa("10.200.2.2:27030")));
        assert!(!t.contains(sa("10.200.2.2:27031")));
        assert!(!t.contains(sa("10.201.0.1:27015")));
        assert!(!t.contains(sa("10.200.9.1:27015")), "excluded address");
        assert!(t.contains(sa("[fd00:200:2::2]:5000")));
        assert!(!t.contains(sa("[fd00:200:2::2]:5001")));
        // An IPv4-mapped address is the IPv4 address.
        assert!(t.contains(sa("[::ffff:10.200.2.2]:27015")));
        assert!(!t.contains(sa("[::ffff:10.200.9.1]:27015")));
    }

    #[test]
    fn routes_without_exclusions_are_the_networks() {
        let t = targets(&["10.200.0.0/16:1", "10.200.3.0/24:2", "[fd00:200::/32]:5"]);
        let r: Vec<String> = t.routes().iter().map(|n| n.to_string()).collect();
        assert_eq!(r, ["10.200.0.0/16", "fd00:200::/32"]);
    }

    #[test]
    fn routes_carve_out_excluded_addresses_exactly() {
        let ex: IpAddr = "10.200.9.1".parse().unwrap();
        let t = targets(&["10.200.0.0/16:1"]).exclude([ex, "192.0.2.1".parse().unwrap()]);
        let routes = t.routes();
        // One route per bit below the /16 prefix.
        assert_eq!(routes.len(), 16);
        assert!(routes.iter().all(|n| !n.contains(&ex)));
        // Together they cover every other address of the /16, and nothing outside it.
        let covered: u64 = routes.iter().map(|n| 1u64 << (32 - n.prefix_len())).sum();
        assert_eq!(covered, (1 << 16) - 1);
        let outer: IpNet = "10.200.0.0/16".parse().unwrap();
        assert!(routes.iter().all(|n| outer.contains(n)));
        for probe in ["10.200.9.0", "10.200.9.2", "10.200.0.0", "10.200.255.255"] {
            let ip: IpAddr = probe.parse().unwrap();
            assert!(routes.iter().any(|n| n.contains(&ip)), "{probe} not routed");
        }
    }

    #[test]
    fn carving_a_host_route_removes_it() {
        let t = targets(&["10.0.0.1/32:1"]).exclude(["10.0.0.1".parse().unwrap()]);
        assert!(t.routes().is_empty());
        let t = targets(&["[2001:db8::/64]:1"]).exclude(["2001:db8::7".parse().unwrap()]);
        let routes = t.routes();
        assert_eq!(routes.len(), 64);
        assert!(
            !routes
                .iter()
                .any(|n| n.contains(&"2001:db8::7".parse::<IpAddr>().unwrap()))
        );
    }

    #[test]
    fn windivert_filter_covers_ranges_ports_and_exclusions() {
        let t = targets(&[
            "203.0.113.0/24:27015-27030",
            "198.51.100.7:3074",
            "[2001:db8::/48]:0-65535",
        ])
        .exclude(["203.0.113.9".parse().unwrap()]);
        assert_eq!(
            t.windivert_filter(),
            "outbound and !loopback and udp and (\
             (ip.DstAddr >= 203.0.113.0 and ip.DstAddr <= 203.0.113.255 \
             and ip.DstAddr != 203.0.113.9 and udp.DstPort >= 27015 and udp.DstPort <= 27030) \
             or (ip.DstAddr == 198.51.100.7 and udp.DstPort == 3074) \
             or (ipv6.DstAddr >= 2001:db8:: and ipv6.DstAddr <= 2001:db8:0:ffff:ffff:ffff:ffff:ffff))"
        );
        assert_eq!(Targets::default().windivert_filter(), "false");
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(Targets::parse(["10.0.0.0/8"]).is_err());
        assert!(Targets::parse(["nonsense:1"]).is_err());
    }
}
