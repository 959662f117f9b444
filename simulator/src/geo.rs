//! Seeded random geographic topologies: a client city, a game server city and 3–8 node
//! cities drawn from `simulator/data/cities.csv`, with every edge's round trip derived from the
//! great-circle distance:
//!
//! ```text
//! RTT = metro + (client edges: access) + 2 · distance / (⅔ c) · inflation · (detour?)
//! ```
//!
//! `2 · distance / (⅔ c)` is the round trip along the great circle in fibre (light in glass
//! travels at about 200 km/ms, so 1 ms of RTT per 100 km). `inflation` is log-normal per edge:
//! real paths follow cables, peering points and routing policy, not the great circle. With
//! probability `detour_rate` an edge also takes a detour (a policy route through a distant
//! exchange), multiplying its RTT again. Every edge draws its own inflation and detour, direct
//! and relayed alike, so the relayed routes get no structural advantage: they win only where
//! the direct path is inflated more than the legs around it, as the detour studies found. Loss
//! is drawn per direction. The parameters, with the studies they come from, are in
//! [`GeoParams`] and `docs/simulator.md`.

use std::sync::OnceLock;

use crate::link::{Impairment, JitterDistribution, derive_seed};
use crate::topology::{Edge, GameSite, NodeSite, Topology};

/// One city of the shipped list.
#[derive(Debug, Clone, PartialEq)]
pub struct City {
    /// Name, e.g. `Frankfurt`.
    pub name: String,
    /// Three-letter code, e.g. `fra` (node ids are `fra-1`).
    pub code: String,
    /// Region: af, as, eu, me, na, oc, sa.
    pub region: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
}

/// The shipped cities (`simulator/data/cities.csv`).
pub fn cities() -> &'static [City] {
    static CITIES: OnceLock<Vec<City>> = OnceLock::new();
    CITIES.get_or_init(|| {
        parse_cities(include_str!("../data/cities.csv")).expect("the shipped cities.csv parses")
    })
}

/// Parses the cities CSV (`#` comments, a header line, then `name,code,region,lat,lon`).
pub fn parse_cities(text: &str) -> Result<Vec<City>, String> {
    let mut out = Vec::new();
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .skip(1);
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [name, code, region, lat, lon] = f[..] else {
            return Err(format!("line {}: expected 5 fields", i + 1));
        };
        let num = |s: &str, max: f64| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.abs() <= max)
                .ok_or_else(|| format!("line {}: bad coordinate {s:?}", i + 1))
        };
        out.push(City {
            name: name.into(),
            code: code.into(),
            region: region.into(),
            lat: num(lat, 90.0)?,
            lon: num(lon, 180.0)?,
        });
    }
    Ok(out)
}

/// Great-circle distance in km (haversine, mean Earth radius 6371 km).
pub fn distance_km(a: &City, b: &City) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dp = p2 - p1;
    let dl = (b.lon - a.lon).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// Round trip along the great circle at ⅔ c (≈ 200 km/ms), ms.
pub fn fibre_rtt_ms(km: f64) -> f64 {
    2.0 * km / 200.0
}

/// The generator's parameters. Defaults and where they come from: `docs/simulator.md`
/// § Generated topologies.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GeoParams {
    /// Fewest relay nodes.
    pub min_nodes: usize,
    /// Most relay nodes.
    pub max_nodes: usize,
    /// Median of the per-edge path inflation over the ⅔ c great-circle RTT.
    pub inflation_median: f64,
    /// σ of the inflation's logarithm (log-normal), floored at 1.0 (no path beats the great
    /// circle).
    pub inflation_sigma: f64,
    /// Share of edges that take a detour.
    pub detour_rate: f64,
    /// A detour multiplies the edge's distance term by a factor uniform in this range.
    pub detour_factor: (f64, f64),
    /// The client's last-mile RTT (on every client edge, direct included), ms, uniform.
    pub access_ms: (f64, f64),
    /// RTT inside a metro area / data centre, on every edge, ms.
    pub metro_ms: f64,
    /// Share of edge directions with no loss.
    pub loss_clean: f64,
    /// Share of edge directions with heavy loss (the rest have light loss).
    pub loss_heavy: f64,
    /// Light loss per direction, percent, uniform in `(0, loss_light_max]`.
    pub loss_light_max: f64,
    /// Heavy loss per direction, percent, uniform in this range.
    pub loss_heavy_range: (f64, f64),
    /// Jitter (normal σ) as a share of each direction's delay.
    pub jitter_share: f64,
    /// Chance that one node is hosted in the game server's city.
    pub node_at_game: f64,
    /// Chance that one node is hosted in the client's city.
    pub node_at_client: f64,
}

impl Default for GeoParams {
    fn default() -> Self {
        GeoParams {
            min_nodes: 3,
            max_nodes: 8,
            inflation_median: 1.5,
            inflation_sigma: 0.25,
            detour_rate: 0.15,
            detour_factor: (1.3, 2.0),
            access_ms: (2.0, 12.0),
            metro_ms: 1.0,
            loss_clean: 0.75,
            loss_heavy: 0.05,
            loss_light_max: 0.5,
            loss_heavy_range: (1.0, 5.0),
            jitter_share: 0.02,
            node_at_game: 0.25,
            node_at_client: 0.25,
        }
    }
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn uniform(rng: &mut fastrand::Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.f64()
}

impl GeoParams {
    /// The RTT of an edge between two cities `km` apart, ms (`access`: the client's last mile
    /// for client edges, 0 otherwise).
    fn rtt_ms(&self, rng: &mut fastrand::Rng, km: f64, access: f64) -> f64 {
        let inflation =
            (self.inflation_median * (self.inflation_sigma * normal(rng)).exp()).max(1.0);
        let detour = if rng.f64() < self.detour_rate {
            uniform(rng, self.detour_factor)
        } else {
            rng.f64(); // the same draws either way, so one edge's luck does not shift the next
            1.0
        };
        self.metro_ms + access + fibre_rtt_ms(km) * inflation * detour
    }

    fn loss_pct(&self, rng: &mut fastrand::Rng) -> f64 {
        let (kind, amount) = (rng.f64(), rng.f64());
        if kind < self.loss_clean {
            0.0
        } else if kind < self.loss_clean + self.loss_heavy {
            let (lo, hi) = self.loss_heavy_range;
            lo + (hi - lo) * amount
        } else {
            self.loss_light_max * (1.0 - amount)
        }
    }

    fn edge(&self, rng: &mut fastrand::Rng, a: &City, b: &City, access: f64) -> Edge {
        let rtt = self.rtt_ms(rng, distance_km(a, b), access);
        let mut dir = || Impairment {
            delay_ms: rtt / 2.0,
            jitter_ms: rtt / 2.0 * self.jitter_share,
            jitter: JitterDistribution::Normal,
            loss_pct: self.loss_pct(rng),
            ..Impairment::default()
        };
        Edge {
            up: dir(),
            down: dir(),
        }
    }

    /// Topology number `index` of the sweep seeded `seed`: the same pair always gives the same
    /// topology (and the same probe seed).
    pub fn generate(&self, seed: u64, index: u64) -> Topology {
        let topo_seed = derive_seed(seed, index);
        let mut rng = fastrand::Rng::with_seed(topo_seed);
        let all = cities();
        let mut order: Vec<usize> = (0..all.len()).collect();
        rng.shuffle(&mut order);
        let client = &all[order[0]];
        let game = &all[order[1]];
        // Node cities: distinct, other than these two, except that a node may be hosted in
        // the game's city (next to its servers) and one in the client's.
        let n = rng.usize(self.min_nodes..=self.max_nodes.max(self.min_nodes));
        let mut node_cities: Vec<&City> = order.iter().map(|&i| &all[i]).skip(2).take(n).collect();
        if rng.f64() < self.node_at_game {
            node_cities[0] = game;
        }
        if rng.f64() < self.node_at_client && n > 1 {
            node_cities[1] = client;
        }
        let access = uniform(&mut rng, self.access_ms);
        let direct = self.edge(&mut rng, client, game, access);
        let nodes: Vec<NodeSite> = node_cities
            .iter()
            .map(|c| NodeSite {
                id: format!("{}-1", c.code),
                region: format!("{} ({})", c.name, c.region),
                from_client: self.edge(&mut rng, client, c, access),
                to_game: vec![self.edge(&mut rng, c, game, 0.0)],
            })
            .collect();
        let mut mesh = std::collections::BTreeMap::new();
        for a in 0..n {
            for b in a + 1..n {
                mesh.insert(
                    (a, b),
                    self.edge(&mut rng, node_cities[a], node_cities[b], 0.0),
                );
            }
        }
        Topology {
            name: format!("geo-{seed}-{index}"),
            description: format!("{} → {}, {n} nodes", client.name, game.name),
            seed: derive_seed(topo_seed, 1),
            client: client.name.clone(),
            nodes,
            games: vec![GameSite {
                name: game.name.clone(),
                direct,
            }],
            mesh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn city(name: &str) -> &'static City {
        cities().iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn the_shipped_cities_are_sane() {
        let all = cities();
        assert!((50..=60).contains(&all.len()), "{}", all.len());
        let mut codes: Vec<&str> = all.iter().map(|c| c.code.as_str()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "city codes are unique");
        // Known distances (great circle): London–New York ≈ 5570 km, Frankfurt–Amsterdam ≈ 365 km,
        // Sydney–Tokyo ≈ 7820 km.
        let d = |a, b| distance_km(city(a), city(b));
        assert!(
            (5500.0..5650.0).contains(&d("London", "New York")),
            "{}",
            d("London", "New York")
        );
        assert!((340.0..390.0).contains(&d("Frankfurt", "Amsterdam")));
        assert!((7700.0..7950.0).contains(&d("Sydney", "Tokyo")));
        assert!(parse_cities("h\na,b,c,91,0").is_err());
        assert!(parse_cities("h\na,b,c").is_err());
    }

    #[test]
    fn generated_topologies_are_valid_and_plausible() {
        let p = GeoParams::default();
        for i in 0..50 {
            let t = p.generate(1, i);
            t.validate().unwrap_or_else(|e| panic!("{}: {e:?}", t.name));
            assert!((3..=8).contains(&t.nodes.len()));
            assert_eq!(t.mesh.len(), t.nodes.len() * (t.nodes.len() - 1) / 2);
            // No edge is faster than light in fibre along the great circle.
            let d = t.games[0].direct.leg().rtt.as_secs_f64() * 1000.0;
            let client = cities().iter().find(|c| c.name == t.client).unwrap();
            let game = cities().iter().find(|c| c.name == t.games[0].name).unwrap();
            assert!(d >= fibre_rtt_ms(distance_km(client, game)), "{}", t.name);
        }
    }
}
