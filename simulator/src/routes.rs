//! Route choice against the oracle, in virtual time: `plg-sim routes`.
//!
//! For a [`Topology`], the client's view comes only from probes: `probes` UDP round trips
//! through each edge's link (its own seeded [`Impairer`] per direction, so every edge has its
//! own random stream and the run is the same for the same seed) — client→game (the direct
//! probe), client→node, node↔node (the mesh's RTT matrix) and exit→game, which in the
//! real system the exit measures and billing relays; in the simulator it is probed with UDP
//! through that leg's link (ICMP would bypass a userspace link). The results become
//! [`plg_client::route::Measurements`] and the client decides with
//! [`plg_client::route::choose`], exactly as `plg connect` does. The oracle knows every
//! edge's true parameters (mean delay both ways, loss) and takes the cheapest route by the
//! same cost ([`Leg::cost`]: RTT + 2 ms per % of loss), direct included.
//!
//! A sweep generates random geographic topologies ([`crate::geo`]) and reports the issue's
//! targets: the share of topologies where the client's choice achieves ≥ 90 % of the oracle's
//! reduction, the share within 5 % of the oracle, the mean ping reduction against direct where
//! a better route exists, and how often the client says so where direct is best.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use plg_client::probe::Probe;
use plg_client::route::{Leg, Measurements, choose};
use serde::Serialize;

use crate::geo::GeoParams;
use crate::link::{Decision, Impairer, derive_seed};
use crate::topology::{Edge, Route, Topology};

/// Bytes of one probe (the echo query: `PLGPROBE` + an 8-byte nonce).
pub const PROBE_LEN: usize = 16;
/// Time between two probes of one edge.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// A probe unanswered after this long is lost.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes per edge by default.
pub const DEFAULT_PROBES: u32 = 10;
/// Share of the oracle's reduction the client must achieve in a topology (target 1).
pub const GAIN_SHARE: f64 = 0.9;
/// How far above the oracle's cost the client may be in a topology (target 2).
pub const COST_MARGIN: f64 = 0.05;
/// Share of topologies that must meet each of the two targets.
pub const TARGET_SHARE: f64 = 0.95;

/// A stable salt for an edge's label (FNV-1a), so its random stream does not depend on the
/// order edges are probed in.
fn salt(label: &str) -> u64 {
    label.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `count` probe round trips through `edge` in virtual time: each probe crosses the edge's
/// `up` impairer, is echoed at once, and crosses `down`; lost either way or later than
/// [`PROBE_TIMEOUT`], it is lost. `label` names the edge (its random stream).
pub fn probe_edge(edge: &Edge, seed: u64, label: &str, count: u32) -> Probe {
    let edge_seed = derive_seed(seed, salt(label));
    let mut up = Impairer::new(derive_seed(edge_seed, 0), edge.up.clone(), vec![]);
    let mut down = Impairer::new(derive_seed(edge_seed, 1), edge.down.clone(), vec![]);
    let mut rtts = Vec::new();
    for k in 0..count {
        let sent = PROBE_INTERVAL * k;
        let Decision::Deliver { delay: there, .. } = up.decide(sent, PROBE_LEN) else {
            continue;
        };
        let Decision::Deliver { delay: back, .. } = down.decide(sent + there, PROBE_LEN) else {
            continue;
        };
        if there + back <= PROBE_TIMEOUT {
            rtts.push(there + back);
        }
    }
    Probe { sent: count, rtts }
}

/// What the client knows of `game` in `t`: every edge probed `probes` times.
pub fn measure(t: &Topology, game: usize, probes: u32) -> Measurements {
    let g = &t.games[game];
    let mut m = Measurements {
        direct: Leg::from_probe(&probe_edge(
            &g.direct,
            t.seed,
            &format!("client>{}", g.name),
            probes,
        )),
        ..Measurements::default()
    };
    for n in &t.nodes {
        let p = probe_edge(&n.from_client, t.seed, &format!("client>{}", n.id), probes);
        if let Some(l) = Leg::from_probe(&p) {
            m.to_node.insert(n.id.clone(), l);
        }
        let p = probe_edge(
            &n.to_game[game],
            t.seed,
            &format!("{}>{}", n.id, g.name),
            probes,
        );
        if let Some(l) = Leg::from_probe(&p) {
            m.to_game.insert(n.id.clone(), l);
        }
    }
    for (&(a, b), e) in &t.mesh {
        let (ia, ib) = (&t.nodes[a].id, &t.nodes[b].id);
        // One series per pair: a round trip crosses both directions whoever starts it.
        if let Some(l) = Leg::from_probe(&probe_edge(e, t.seed, &format!("{ia}<>{ib}"), probes)) {
            m.mesh.insert((ia.clone(), ib.clone()), l);
            m.mesh.insert((ib.clone(), ia.clone()), l);
        }
    }
    m
}

/// A route with its figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// The route.
    pub route: Route,
    /// `direct`, `fra-2`, `fra-2 via ams-1`.
    pub label: String,
    /// Round trip, ms.
    pub rtt_ms: f64,
    /// Round-trip loss, percent.
    pub loss_pct: f64,
    /// [`Leg::cost`], ms.
    pub cost_ms: f64,
}

impl Figure {
    fn of(route: Route, leg: Leg) -> Figure {
        Figure {
            label: route.label(),
            route,
            rtt_ms: leg.rtt.as_secs_f64() * 1000.0,
            loss_pct: leg.loss * 100.0,
            cost_ms: leg.cost().as_secs_f64() * 1000.0,
        }
    }
}

/// One topology (and game server): what the client chose, what the oracle would have.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Topology name.
    pub topology: String,
    /// Its description.
    pub description: String,
    /// The client's label (its city for generated topologies).
    pub client_site: String,
    /// The game server.
    pub game: String,
    /// Relay nodes.
    pub nodes: usize,
    /// The direct route's true figures.
    pub direct: Figure,
    /// The client's choice, true figures.
    pub client: Figure,
    /// What the client's probes made of its choice (its estimate).
    pub client_expected: Option<Figure>,
    /// The client's one-line verdict.
    pub summary: String,
    /// The best route by true parameters.
    pub oracle: Figure,
    /// The nearest node (by the client's probe) as entry and exit: how the client ranked nodes
    /// before it measured the whole path. For comparison only.
    pub nearest: Option<Figure>,
}

impl Outcome {
    /// Cost reduction of `f` against direct, ms (negative: worse than direct).
    pub fn gain_ms(&self, f: &Figure) -> f64 {
        self.direct.cost_ms - f.cost_ms
    }

    /// Ping (RTT) reduction of `f` against direct, percent.
    pub fn ping_reduction_pct(&self, f: &Figure) -> f64 {
        100.0 * (1.0 - f.rtt_ms / self.direct.rtt_ms)
    }

    /// Target 1: the client's choice achieves ≥ 90 % of the oracle's reduction (where direct
    /// is best, the oracle's reduction is 0 and the client must not do worse than direct).
    pub fn meets_gain_share(&self) -> bool {
        self.gain_ms(&self.client) >= GAIN_SHARE * self.gain_ms(&self.oracle) - 1e-9
    }

    /// Target 2: the client's choice costs at most 5 % more than the oracle's.
    pub fn within_margin(&self) -> bool {
        self.client.cost_ms <= self.oracle.cost_ms * (1.0 + COST_MARGIN) + 1e-9
    }

    /// The oracle goes direct.
    pub fn direct_is_best(&self) -> bool {
        self.oracle.route == Route::Direct
    }

    /// The client said direct is better.
    pub fn client_says_direct(&self) -> bool {
        self.client.route == Route::Direct
    }
}

/// Runs the client's choice and the oracle on one topology and game.
pub fn evaluate(t: &Topology, game: usize, probes: u32) -> Outcome {
    let truth = |r: &Route| {
        t.true_leg(r, game)
            .map(|l| Figure::of(r.clone(), l))
            .expect("a route of the topology")
    };
    let direct = truth(&Route::Direct);
    let mut oracle = direct.clone();
    for r in t.routes() {
        let f = truth(&r);
        if f.cost_ms < oracle.cost_ms {
            oracle = f;
        }
    }
    let m = measure(t, game, probes);
    let plan = choose(&m, None);
    let (client_route, client_expected, summary) = match &plan {
        None => (
            Route::Direct,
            m.direct.map(|l| Figure::of(Route::Direct, l)),
            "no relay node answered: acceleration is not available right now".into(),
        ),
        Some(p) if p.direct_is_better() => (
            Route::Direct,
            m.direct.map(|l| Figure::of(Route::Direct, l)),
            p.summary(),
        ),
        Some(p) => {
            let best = &p.routes[0];
            let r = Route::Relay {
                entry: best.entry.clone(),
                exit: best.exit.clone(),
            };
            (r.clone(), p.expected.map(|l| Figure::of(r, l)), p.summary())
        }
    };
    let nearest = m
        .to_node
        .iter()
        .min_by_key(|(id, l)| (l.cost(), (*id).clone()))
        .map(|(id, _)| {
            truth(&Route::Relay {
                entry: id.clone(),
                exit: id.clone(),
            })
        });
    Outcome {
        topology: t.name.clone(),
        description: t.description.clone(),
        client_site: t.client.clone(),
        game: t.games[game].name.clone(),
        nodes: t.nodes.len(),
        client: truth(&client_route),
        client_expected,
        summary,
        oracle,
        direct,
        nearest,
    }
}

/// Every game server of `t`.
pub fn evaluate_all(t: &Topology, probes: u32) -> Vec<Outcome> {
    (0..t.games.len()).map(|g| evaluate(t, g, probes)).collect()
}

/// The targets over a set of outcomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Topologies (× game servers).
    pub runs: usize,
    /// Where some route beats direct (the oracle relays).
    pub better_route_exists: usize,
    /// Where the oracle's route is at least 10 % cheaper than direct.
    pub better_by_10pct: usize,
    /// Target 1 met: ≥ 90 % of the oracle's reduction.
    pub gain_share_met: usize,
    /// Target 2 met: within 5 % of the oracle's cost.
    pub within_margin: usize,
    /// The same two by plain RTT instead of cost (for transparency: the choice is by cost).
    pub gain_share_met_rtt: usize,
    /// Within 5 % of the oracle's RTT.
    pub within_margin_rtt: usize,
    /// The client picked exactly the oracle's route.
    pub same_as_oracle: usize,
    /// Where direct is best.
    pub direct_best: usize,
    /// ...and the client says so.
    pub direct_best_said: usize,
    /// Where a relay is best but the client said direct.
    pub missed_relay: usize,
    /// Where direct is best but the client relays.
    pub needless_relay: usize,
    /// Mean ping (RTT) reduction vs direct of the client's choice where a better route exists,
    /// percent.
    pub mean_ping_reduction_client_pct: f64,
    /// Same for the oracle's route.
    pub mean_ping_reduction_oracle_pct: f64,
    /// Median of the client's.
    pub median_ping_reduction_client_pct: f64,
    /// Mean ping reduction vs direct over all runs (0 where the client goes direct).
    pub mean_ping_reduction_all_pct: f64,
    /// Nearest-node baseline: within 5 % of the oracle's cost.
    pub nearest_within_margin: usize,
    /// Nearest-node baseline: mean ping reduction where a better route exists (negative:
    /// slower than direct).
    pub mean_ping_reduction_nearest_pct: f64,
}

impl Summary {
    /// Tallies `outcomes`.
    pub fn of(outcomes: &[Outcome]) -> Summary {
        let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
        let better: Vec<&Outcome> = outcomes.iter().filter(|o| !o.direct_is_best()).collect();
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let client_red: Vec<f64> = better
            .iter()
            .map(|o| o.ping_reduction_pct(&o.client))
            .collect();
        let mut sorted = client_red.clone();
        sorted.sort_by(f64::total_cmp);
        let all: Vec<f64> = outcomes
            .iter()
            .map(|o| o.ping_reduction_pct(&o.client))
            .collect();
        Summary {
            runs: outcomes.len(),
            better_route_exists: better.len(),
            better_by_10pct: count(&|o| o.gain_ms(&o.oracle) >= 0.1 * o.direct.cost_ms),
            gain_share_met: count(&Outcome::meets_gain_share),
            within_margin: count(&Outcome::within_margin),
            gain_share_met_rtt: count(&|o| {
                o.direct.rtt_ms - o.client.rtt_ms
                    >= GAIN_SHARE * (o.direct.rtt_ms - o.oracle.rtt_ms) - 1e-9
            }),
            within_margin_rtt: count(&|o| {
                o.client.rtt_ms <= o.oracle.rtt_ms * (1.0 + COST_MARGIN) + 1e-9
            }),
            same_as_oracle: count(&|o| o.client.route == o.oracle.route),
            direct_best: count(&Outcome::direct_is_best),
            direct_best_said: count(&|o| o.direct_is_best() && o.client_says_direct()),
            missed_relay: count(&|o| !o.direct_is_best() && o.client_says_direct()),
            needless_relay: count(&|o| o.direct_is_best() && !o.client_says_direct()),
            mean_ping_reduction_client_pct: mean(&client_red),
            mean_ping_reduction_oracle_pct: mean(
                &better
                    .iter()
                    .map(|o| o.ping_reduction_pct(&o.oracle))
                    .collect::<Vec<_>>(),
            ),
            median_ping_reduction_client_pct: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
            mean_ping_reduction_all_pct: mean(&all),
            nearest_within_margin: count(&|o| {
                o.nearest
                    .as_ref()
                    .is_some_and(|n| n.cost_ms <= o.oracle.cost_ms * (1.0 + COST_MARGIN) + 1e-9)
            }),
            mean_ping_reduction_nearest_pct: mean(
                &better
                    .iter()
                    .filter_map(|o| o.nearest.as_ref().map(|n| o.ping_reduction_pct(n)))
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// Whether both per-topology targets hold in ≥ 95 % of the runs.
    pub fn targets_met(&self) -> bool {
        let need = (TARGET_SHARE * self.runs as f64).ceil() as usize;
        self.gain_share_met >= need && self.within_margin >= need
    }
}

/// Everything a `plg-sim routes` run produced (`routes.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RoutesReport {
    /// The generator's seed (sweeps) or the probes' (one topology).
    pub seed: Option<u64>,
    /// Probes per edge.
    pub probes: u32,
    /// Generator parameters (sweeps only).
    pub generator: Option<GeoParams>,
    /// The hand-written topology (single runs only).
    pub topology: Option<Topology>,
    /// The tallies.
    pub summary: Summary,
    /// One per topology and game server.
    pub outcomes: Vec<Outcome>,
}

/// Generates `count` topologies from `seed` and evaluates them.
pub fn sweep(params: &GeoParams, seed: u64, count: u64, probes: u32) -> Vec<Outcome> {
    (0..count)
        .flat_map(|i| evaluate_all(&params.generate(seed, i), probes))
        .collect()
}

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

/// The summary block: the targets with their verdicts.
pub fn render_summary(s: &Summary) -> String {
    let mut o = String::new();
    let verdict = |n: usize| {
        if pct(n, s.runs) >= TARGET_SHARE * 100.0 {
            "met"
        } else {
            "MISSED"
        }
    };
    let _ = writeln!(
        o,
        "runs: {}   a better route than direct exists in {} ({:.0} %), ≥ 10 % better in {} ({:.0} %)",
        s.runs,
        s.better_route_exists,
        pct(s.better_route_exists, s.runs),
        s.better_by_10pct,
        pct(s.better_by_10pct, s.runs)
    );
    let _ = writeln!(
        o,
        "client achieves ≥ 90 % of the oracle's reduction: {:>5.1} %  (target ≥ 95 %: {})   by RTT alone: {:.1} %",
        pct(s.gain_share_met, s.runs),
        verdict(s.gain_share_met),
        pct(s.gain_share_met_rtt, s.runs)
    );
    let _ = writeln!(
        o,
        "client within 5 % of the oracle:                  {:>5.1} %  (target ≥ 95 %: {})   by RTT alone: {:.1} %",
        pct(s.within_margin, s.runs),
        verdict(s.within_margin),
        pct(s.within_margin_rtt, s.runs)
    );
    let _ = writeln!(
        o,
        "client picks the oracle's very route:             {:>5.1} %",
        pct(s.same_as_oracle, s.runs)
    );
    let _ = writeln!(
        o,
        "where a better route exists ({}): mean ping reduction vs direct {:.1} % (median {:.1} %), oracle {:.1} %",
        s.better_route_exists,
        s.mean_ping_reduction_client_pct,
        s.median_ping_reduction_client_pct,
        s.mean_ping_reduction_oracle_pct
    );
    let _ = writeln!(
        o,
        "where direct is best ({}): the client says so in {} ({:.0} %); it relays needlessly in {}, stays direct while a relay is better in {}",
        s.direct_best,
        s.direct_best_said,
        pct(s.direct_best_said, s.direct_best),
        s.needless_relay,
        s.missed_relay
    );
    let _ = writeln!(
        o,
        "mean ping reduction over all runs (direct counted as 0): {:.1} %",
        s.mean_ping_reduction_all_pct
    );
    let _ = writeln!(
        o,
        "baseline, the nearest node as exit (ranking by the client's probe alone): within 5 % of the oracle in {:.1} %, mean ping reduction where a better route exists {:.1} %",
        pct(s.nearest_within_margin, s.runs),
        s.mean_ping_reduction_nearest_pct
    );
    o
}

/// One row per outcome.
pub fn render_rows<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<14} {:<30} {:>5} {:>10}  {:<18} {:>8}  {:<18} {:>8} {:>8}  targets",
        "topology",
        "client → game server",
        "nodes",
        "direct ms",
        "client chose",
        "ms",
        "oracle",
        "ms",
        "ping −%"
    );
    for r in outcomes {
        let marks = match (r.meets_gain_share(), r.within_margin()) {
            (true, true) => "ok",
            (false, true) => "<90 % of gain",
            (true, false) => ">5 % off",
            (false, false) => "<90 % of gain, >5 % off",
        };
        let _ = writeln!(
            o,
            "{:<14} {:<30} {:>5} {:>10.1}  {:<18} {:>8.1}  {:<18} {:>8.1} {:>8}  {}",
            r.topology,
            format!("{} → {}", r.client_site, r.game)
                .chars()
                .take(30)
                .collect::<String>(),
            r.nodes,
            r.direct.rtt_ms,
            r.client.label,
            r.client.rtt_ms,
            r.oracle.label,
            r.oracle.rtt_ms,
            format!(
                "{}/{}",
                whole(r.ping_reduction_pct(&r.client)),
                whole(r.ping_reduction_pct(&r.oracle))
            ),
            marks
        );
    }
    o
}

/// Rounded to a whole number, without `-0`.
fn whole(v: f64) -> String {
    let r = v.round();
    if r == 0.0 {
        "0".into()
    } else {
        format!("{r:.0}")
    }
}

/// `−35 %`, `+10 %`, `±0 %`.
fn signed_pct(v: f64) -> String {
    match v.round() {
        r if r < 0.0 => format!("−{:.0} %", -r),
        r if r > 0.0 => format!("+{r:.0} %"),
        _ => "±0 %".into(),
    }
}

/// Every route of one topology with its true and measured figures, and the verdicts.
pub fn render_topology(t: &Topology, probes: u32, outcomes: &[Outcome]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "topology {}: {}", t.name, t.description);
    for (g, out) in outcomes.iter().enumerate() {
        let m = measure(t, g, probes);
        let _ = writeln!(
            o,
            "\ngame server {} — {probes} probes per edge; true RTT / loss, and what the probes saw",
            out.game
        );
        let _ = writeln!(
            o,
            "  {:<22} {:>9} {:>8} {:>9}   {:>9} {:>8}",
            "route", "true ms", "loss %", "cost ms", "probed ms", "loss %"
        );
        for r in t.routes() {
            let truth = t.true_leg(&r, g).expect("a route of the topology");
            let seen = match &r {
                Route::Direct => m.direct,
                Route::Relay { entry, exit } => {
                    let mesh = if entry == exit {
                        Some(Leg::default())
                    } else {
                        m.mesh.get(&(entry.clone(), exit.clone())).copied()
                    };
                    match (m.to_node.get(entry), mesh, m.to_game.get(exit)) {
                        (Some(a), Some(b), Some(c)) => Some(a.then(b).then(*c)),
                        _ => None,
                    }
                }
            };
            let f = Figure::of(r.clone(), truth);
            let (seen_ms, seen_loss) = match seen {
                Some(l) => (
                    format!("{:.1}", l.rtt.as_secs_f64() * 1000.0),
                    format!("{:.1}", l.loss * 100.0),
                ),
                None => ("-".into(), "-".into()),
            };
            let mark = if r == out.oracle.route {
                "  ← oracle"
            } else {
                ""
            };
            let mark2 = if r == out.client.route {
                "  ← client"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "  {:<22} {:>9.1} {:>8.2} {:>9.1}   {:>9} {:>8}{mark}{mark2}",
                f.label, f.rtt_ms, f.loss_pct, f.cost_ms, seen_ms, seen_loss
            );
        }
        let _ = writeln!(o, "  client says: {}", out.summary);
        let _ = writeln!(
            o,
            "  client chose {} ({:.1} ms, {} vs direct); oracle {} ({:.1} ms, {})",
            out.client.label,
            out.client.rtt_ms,
            signed_pct(-out.ping_reduction_pct(&out.client)),
            out.oracle.label,
            out.oracle.rtt_ms,
            signed_pct(-out.ping_reduction_pct(&out.oracle))
        );
    }
    o
}

/// Arguments of `plg-sim routes`.
#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    /// Random geographic topologies to generate and evaluate.
    #[arg(long, default_value_t = 200)]
    pub topologies: u64,
    /// Seed of the generator (sweeps) or of the probes (overrides a topology file's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate this hand-written topology (TOML) instead of random ones.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Probe round trips per edge.
    #[arg(long, default_value_t = DEFAULT_PROBES)]
    pub probes: u32,
    /// Generator: share of edges that take a detour (default: see docs/simulator.md).
    #[arg(long)]
    pub detour_rate: Option<f64>,
    /// Generator: σ of the log-normal path inflation.
    #[arg(long)]
    pub inflation_sigma: Option<f64>,
    /// Directory for routes.json and routes.txt [default: target/plg-sim/routes, or
    /// target/plg-sim/routes-NAME for a topology file].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn write(out: &Path, text: &str, report: &RoutesReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let txt = out.join("routes.txt");
    let json = out.join("routes.json");
    std::fs::write(&txt, text).with_context(|| format!("writing {}", txt.display()))?;
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(vec![txt, json])
}

/// `plg-sim routes`: returns what to print.
pub fn routes_command(args: RoutesArgs) -> Result<String> {
    anyhow::ensure!(args.probes >= 1, "--probes must be at least 1");
    let (text, report, out) = match &args.topology {
        Some(path) => {
            let mut t = Topology::load(path)?;
            if let Some(s) = args.seed {
                t.seed = s;
            }
            let outcomes = evaluate_all(&t, args.probes);
            let text = render_topology(&t, args.probes, &outcomes);
            let out = args.out.clone().unwrap_or_else(|| {
                PathBuf::from("target/plg-sim").join(format!("routes-{}", t.name))
            });
            let report = RoutesReport {
                seed: Some(t.seed),
                probes: args.probes,
                generator: None,
                summary: Summary::of(&outcomes),
                topology: Some(t),
                outcomes,
            };
            (text, report, out)
        }
        None => {
            anyhow::ensure!(args.topologies >= 1, "--topologies must be at least 1");
            let seed = args.seed.unwrap_or(1);
            let mut params = GeoParams::default();
            if let Some(r) = args.detour_rate {
                anyhow::ensure!(
                    (0.0..=1.0).contains(&r),
                    "--detour-rate must be within 0..=1"
                );
                params.detour_rate = r;
            }
            if let Some(s) = args.inflation_sigma {
                anyhow::ensure!(
                    (0.0..=2.0).contains(&s),
                    "--inflation-sigma must be within 0..=2"
                );
                params.inflation_sigma = s;
            }
            let outcomes = sweep(&params, seed, args.topologies, args.probes);
            let summary = Summary::of(&outcomes);
            let mut text = format!(
                "{} random geographic topologies, seed {seed}, {} probes per edge; client = plg_client::route::choose on probe results, oracle = true link parameters, both by cost = RTT + 2 ms per % loss\n\n",
                args.topologies, args.probes
            );
            text.push_str(&render_summary(&summary));
            let misses: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| !(o.meets_gain_share() && o.within_margin()))
                .collect();
            let _ = writeln!(text, "\ntopologies that miss a target ({}):", misses.len());
            if !misses.is_empty() {
                text.push_str(&render_rows(misses));
            }
            let mut full = text.clone();
            full.push_str("\nevery topology:\n");
            full.push_str(&render_rows(&outcomes));
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("target/plg-sim/routes"));
            let report = RoutesReport {
                seed: Some(seed),
                probes: args.probes,
                generator: Some(params),
                topology: None,
                summary,
                outcomes,
            };
            let files = write(&out, &full, &report)?;
            return Ok(finish(text, &files));
        }
    };
    let files = write(&out, &text, &report)?;
    Ok(finish(text, &files))
}

fn finish(mut text: String, files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let _ = writeln!(text, "\nwritten: {}", names.join(", "));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_see_the_link() {
        let e = Edge::of_rtt(40.0, 0.0);
        let p = probe_edge(&e, 1, "x", 10);
        assert_eq!(p.rtts, vec![Duration::from_millis(40); 10]);
        // 50 % loss each way: about a quarter answered; a different label, a different stream.
        let mut lossy = Edge::of_rtt(40.0, 50.0);
        lossy.up.jitter_ms = 5.0;
        let a = probe_edge(&lossy, 1, "a", 400);
        let b = probe_edge(&lossy, 1, "b", 400);
        assert!((60..140).contains(&a.rtts.len()), "{}", a.rtts.len());
        assert_ne!(a.rtts, b.rtts);
        assert_eq!(a, probe_edge(&lossy, 1, "a", 400));
        // Later than the timeout is lost.
        assert!(
            probe_edge(&Edge::of_rtt(1200.0, 0.0), 1, "x", 3)
                .rtts
                .is_empty()
        );
    }
}
