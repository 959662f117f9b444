//! Topologies of sites: one client, relay nodes and game servers, with an impairment link on
//! every edge — client→game (direct), client→node, node↔node (the mesh) and node→game — so a
//! scenario can say "direct is 95 ms with 2 % loss, the nearest node is 8 ms away but 90 ms
//! from the server, another is 25 ms + 30 ms". Hand-written topologies are TOML files
//! (`simulator/scenarios/topologies/`, format in `docs/simulator.md`); random geographic ones
//! come from [`crate::geo`]. [`crate::routes`] probes them in virtual time and compares the
//! client's choice with the oracle's.
//!
//! An edge has a direction: `up` is away from the client (client→node, node→game, and a→b for
//! the mesh edge declared on node a), `down` the way back, like a scenario path's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use plg_client::route::Leg;
use serde::{Deserialize, Serialize};

use crate::link::{GilbertElliott, Impairment, JitterDistribution};

/// Most relay nodes a topology may have.
pub const MAX_NODES: usize = 32;
/// Most game servers a topology may have.
pub const MAX_GAMES: usize = 8;

/// One edge: what each direction does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    /// Away from the client (client→node, node→game, a→b).
    pub up: Impairment,
    /// The way back.
    pub down: Impairment,
}

impl Edge {
    /// `rtt_ms` split evenly over both directions, `loss_pct` in each direction.
    pub fn of_rtt(rtt_ms: f64, loss_pct: f64) -> Edge {
        let one_way = Impairment {
            delay_ms: rtt_ms / 2.0,
            loss_pct,
            ..Impairment::default()
        };
        Edge {
            up: one_way.clone(),
            down: one_way,
        }
    }

    /// The edge seen from its other end.
    pub fn reversed(self) -> Edge {
        Edge {
            up: self.down,
            down: self.up,
        }
    }

    /// The true round trip: mean delay both ways (jitter is symmetric around the delay), and
    /// the chance that a request or its answer is lost. This is what a probe series estimates.
    pub fn leg(&self) -> Leg {
        Leg {
            rtt: Duration::from_secs_f64((self.up.delay_ms + self.down.delay_ms) / 1000.0),
            jitter: Duration::from_secs_f64((self.up.jitter_ms + self.down.jitter_ms) / 1000.0),
            loss: 1.0 - (1.0 - self.up.expected_loss()) * (1.0 - self.down.expected_loss()),
        }
    }
}

/// A relay node and its edges.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSite {
    /// Node id, e.g. `fra-2`.
    pub id: String,
    /// Region label (free text).
    pub region: String,
    /// Client → node.
    pub from_client: Edge,
    /// Node → game server, one per game (same order as [`Topology::games`]).
    pub to_game: Vec<Edge>,
}

/// A game server and the direct route to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GameSite {
    /// Name, e.g. `game` or a city.
    pub name: String,
    /// Client → game server directly.
    pub direct: Edge,
}

/// Sites and edges.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    /// Short name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Seed of every probe's fate.
    pub seed: u64,
    /// The client's label (a city for generated topologies).
    pub client: String,
    /// Relay nodes.
    pub nodes: Vec<NodeSite>,
    /// Game servers.
    pub games: Vec<GameSite>,
    /// Mesh edges by node index pair `(a, b)` with `a < b`; `up` is a→b. A pair without an
    /// edge has no mesh route between the two nodes.
    #[serde(serialize_with = "mesh_as_list")]
    pub mesh: BTreeMap<(usize, usize), Edge>,
}

/// JSON has no tuple keys: the mesh is written as `[[a, b], edge]` pairs.
fn mesh_as_list<S: serde::Serializer>(
    mesh: &BTreeMap<(usize, usize), Edge>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(mesh.iter())
}

/// A way from the client to a game server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// Straight to the game server, no PLG.
    Direct,
    /// Client → entry node → (mesh, when the exit is another node) → exit node → game server.
    Relay {
        /// Node id the client sends to.
        entry: String,
        /// Node id that sends to the game server.
        exit: String,
    },
}

impl Route {
    /// `direct`, `fra-2`, or `fra-2 via ams-1` (as the client's summary line names routes).
    pub fn label(&self) -> String {
        match self {
            Route::Direct => "direct".into(),
            Route::Relay { entry, exit } if entry == exit => exit.clone(),
            Route::Relay { entry, exit } => format!("{exit} via {entry}"),
        }
    }
}

impl Topology {
    /// Index of node `id`.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The mesh edge from node `a` to node `b` (oriented a→b), if there is one.
    pub fn mesh_edge(&self, a: usize, b: usize) -> Option<Edge> {
        if a < b {
            self.mesh.get(&(a, b)).cloned()
        } else {
            self.mesh.get(&(b, a)).map(|e| e.clone().reversed())
        }
    }

    /// The edges a route crosses, client side first; `None` if the route does not exist (an
    /// unknown node or no mesh edge between entry and exit).
    pub fn edges(&self, route: &Route, game: usize) -> Option<Vec<Edge>> {
        match route {
            Route::Direct => Some(vec![self.games.get(game)?.direct.clone()]),
            Route::Relay { entry, exit } => {
                let (i, j) = (self.node_index(entry)?, self.node_index(exit)?);
                let mut v = vec![self.nodes[i].from_client.clone()];
                if i != j {
                    v.push(self.mesh_edge(i, j)?);
                }
                v.push(self.nodes[j].to_game.get(game)?.clone());
                Some(v)
            }
        }
    }

    /// A route's true round trip: its edges' legs in a row (RTTs add, losses compound).
    pub fn true_leg(&self, route: &Route, game: usize) -> Option<Leg> {
        let edges = self.edges(route, game)?;
        edges.iter().map(Edge::leg).reduce(|a, b| a.then(b))
    }

    /// Every route: direct first, then each node as entry to itself or, through a
    /// mesh edge, to any other node as exit.
    pub fn routes(&self) -> Vec<Route> {
        let mut out = vec![Route::Direct];
        for (i, entry) in self.nodes.iter().enumerate() {
            for (j, exit) in self.nodes.iter().enumerate() {
                if i == j || self.mesh_edge(i, j).is_some() {
                    out.push(Route::Relay {
                        entry: entry.id.clone(),
                        exit: exit.id.clone(),
                    });
                }
            }
        }
        out
    }

    /// One link per direction standing for a whole route (for a harness that puts a single
    /// impairment link on each route): delays and jitters add, independent losses compound.
    /// Gilbert-Elliott bursts do not compose into one chain; their long-run loss is folded
    /// into the independent loss.
    pub fn route_impairment(&self, route: &Route, game: usize) -> Option<Edge> {
        let edges = self.edges(route, game)?;
        let fold = |dir: fn(&Edge) -> Impairment| {
            let mut delay = 0.0;
            let mut jitter = 0.0;
            let mut kept = 1.0;
            for e in &edges {
                let d = dir(e);
                delay += d.delay_ms;
                jitter += d.jitter_ms;
                kept *= 1.0 - d.expected_loss();
            }
            Impairment {
                delay_ms: delay,
                jitter_ms: jitter,
                loss_pct: (1.0 - kept) * 100.0,
                ..Impairment::default()
            }
        };
        Some(Edge {
            up: fold(|e| e.up.clone()),
            down: fold(|e| e.down.clone()),
        })
    }

    /// Checks names, references and every impairment; the error is `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: String, m: String| Err((f, m));
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES {
            return bad(
                "nodes".into(),
                format!("need 1..={MAX_NODES} nodes (got {})", self.nodes.len()),
            );
        }
        if self.games.is_empty() || self.games.len() > MAX_GAMES {
            return bad(
                "games".into(),
                format!("need 1..={MAX_GAMES} games (got {})", self.games.len()),
            );
        }
        let edge = |f: String, e: &Edge| -> Result<(), (String, String)> {
            e.up.validate().map_err(|m| (format!("{f}.up"), m))?;
            e.down.validate().map_err(|m| (format!("{f}.down"), m))
        };
        let mut seen = BTreeSet::new();
        for (g, game) in self.games.iter().enumerate() {
            if game.name.is_empty() {
                return bad(format!("games[{g}].name"), "must not be empty".into());
            }
            if !seen.insert(game.name.as_str()) {
                return bad(
                    format!("games[{g}].name"),
                    format!("{:?} is used twice", game.name),
                );
            }
            edge(format!("games[{g}].direct"), &game.direct)?;
        }
        let mut ids = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let label_ok = !n.id.is_empty()
                && n.id.len() <= 63
                && n.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !label_ok {
                return bad(
                    format!("nodes[{i}].id"),
                    format!(
                        "{:?} is not a node id (1–63 characters of a-z, 0-9 and -)",
                        n.id
                    ),
                );
            }
            if !ids.insert(n.id.as_str()) {
                return bad(
                    format!("nodes[{i}].id"),
                    format!("{:?} is used twice", n.id),
                );
            }
            edge(format!("nodes[{i}].from_client"), &n.from_client)?;
            if n.to_game.len() != self.games.len() {
                return bad(
                    format!("nodes[{i}].to_game"),
                    format!(
                        "node {} has {} game edge(s) for {} game(s)",
                        n.id,
                        n.to_game.len(),
                        self.games.len()
                    ),
                );
            }
            for (g, e) in n.to_game.iter().enumerate() {
                edge(format!("nodes[{i}].to_game.{}", self.games[g].name), e)?;
            }
        }
        for (&(a, b), e) in &self.mesh {
            if a >= b || b >= self.nodes.len() {
                return bad(
                    "mesh".into(),
                    format!("edge ({a}, {b}) is not between two nodes"),
                );
            }
            edge(format!("nodes[{a}].mesh.{}", self.nodes[b].id), e)?;
        }
        Ok(())
    }
}

/// An edge as written in a topology file: `rtt_ms` (split evenly both ways) with optional
/// `loss_pct`, `jitter_ms`, `jitter` and `burst` applied to each direction, or explicit `up`
/// and `down` impairments (any field of a scenario path's impairment).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    /// Round-trip time, ms: half of it is each direction's delay.
    pub rtt_ms: Option<f64>,
    /// Independent loss in each direction, percent.
    pub loss_pct: Option<f64>,
    /// Jitter amplitude in each direction, ms.
    pub jitter_ms: Option<f64>,
    /// Shape of the jitter.
    pub jitter: Option<JitterDistribution>,
    /// Bursty loss in each direction.
    pub burst: Option<GilbertElliott>,
    /// Away from the client, in full (instead of the shorthand).
    pub up: Option<Impairment>,
    /// Towards the client, in full.
    pub down: Option<Impairment>,
}

impl EdgeSpec {
    fn to_edge(&self) -> Result<Edge, String> {
        let shorthand = self.loss_pct.is_some()
            || self.jitter_ms.is_some()
            || self.jitter.is_some()
            || self.burst.is_some();
        match (self.rtt_ms, self.up.clone(), self.down.clone()) {
            (Some(rtt), None, None) => {
                if !(rtt.is_finite() && (0.0..=20_000.0).contains(&rtt)) {
                    return Err(format!("rtt_ms must be within 0..=20000 (got {rtt})"));
                }
                let one_way = Impairment {
                    delay_ms: rtt / 2.0,
                    loss_pct: self.loss_pct.unwrap_or(0.0),
                    jitter_ms: self.jitter_ms.unwrap_or(0.0),
                    jitter: self.jitter.unwrap_or_default(),
                    burst: self.burst,
                    ..Impairment::default()
                };
                Ok(Edge {
                    up: one_way.clone(),
                    down: one_way,
                })
            }
            (None, Some(up), Some(down)) if !shorthand => Ok(Edge { up, down }),
            (None, Some(_), Some(_)) => Err(
                "with `up` and `down`, put loss_pct, jitter_ms, jitter and burst inside them"
                    .into(),
            ),
            (Some(_), _, _) => Err("give either `rtt_ms` or `up` and `down`, not both".into()),
            (None, None, None) => Err("missing `rtt_ms` (or `up` and `down`)".into()),
            (None, _, _) => Err("`up` and `down` go together (or use `rtt_ms`)".into()),
        }
    }
}

/// A topology file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    /// Short name (defaults to the file stem).
    #[serde(default)]
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// Seed of the probes (default 1).
    pub seed: Option<u64>,
    /// The client's label (default `client`).
    pub client: Option<String>,
    /// Game servers.
    #[serde(default)]
    pub games: Vec<GameSpec>,
    /// Relay nodes.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
}

/// A game server in a topology file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameSpec {
    /// Name (nodes' `to_game` tables are keyed by it).
    pub name: String,
    /// Client → game server directly.
    pub direct: EdgeSpec,
}

/// A node in a topology file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node id (a-z, 0-9, -).
    pub id: String,
    /// Region label.
    #[serde(default)]
    pub region: String,
    /// Client → node.
    pub from_client: EdgeSpec,
    /// Node → game server, by game name (every game needs one).
    #[serde(default)]
    pub to_game: BTreeMap<String, EdgeSpec>,
    /// Node → other node, by node id (declare each pair once, on either node; `up` is from
    /// this node). A pair without an edge has no mesh route.
    #[serde(default)]
    pub mesh: BTreeMap<String, EdgeSpec>,
}

/// Why a topology could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML for this format (the message names the line and the field).
    #[error("topology {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Parsed, but a value is out of range or a reference is wrong.
    #[error("topology {path}: field `{field}`: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Dotted field path, e.g. `nodes[1].to_game.eu`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Topology {
    /// Reads, parses and validates a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut t = Topology::parse(&text, path)?;
        if t.name.is_empty() {
            t.name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "topology".into());
        }
        Ok(t)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Topology, TopologyError> {
        let file: TopologyFile = toml::from_str(text).map_err(|e| TopologyError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |(field, message): (String, String)| TopologyError::Invalid {
            path: origin.to_owned(),
            field,
            message,
        };
        let t = Topology::from_file(&file).map_err(invalid)?;
        t.validate().map_err(invalid)?;
        Ok(t)
    }

    /// Resolves names in a parsed file; the error is `(field, message)`.
    pub fn from_file(f: &TopologyFile) -> Result<Topology, (String, String)> {
        let games = f
            .games
            .iter()
            .enumerate()
            .map(|(g, s)| {
                Ok(GameSite {
                    name: s.name.clone(),
                    direct: s
                        .direct
                        .to_edge()
                        .map_err(|m| (format!("games[{g}].direct"), m))?,
                })
            })
            .collect::<Result<Vec<_>, (String, String)>>()?;
        let mut nodes = Vec::new();
        for (i, n) in f.nodes.iter().enumerate() {
            let from_client = n
                .from_client
                .to_edge()
                .map_err(|m| (format!("nodes[{i}].from_client"), m))?;
            if let Some(name) = n
                .to_game
                .keys()
                .find(|k| !games.iter().any(|g| &g.name == *k))
            {
                return Err((
                    format!("nodes[{i}].to_game.{name}"),
                    format!("no game named {name:?} in [[games]]"),
                ));
            }
            let to_game = games
                .iter()
                .map(|g| match n.to_game.get(&g.name) {
                    Some(s) => s
                        .to_edge()
                        .map_err(|m| (format!("nodes[{i}].to_game.{}", g.name), m)),
                    None => Err((
                        format!("nodes[{i}].to_game"),
                        format!("node {} has no edge to game {:?}", n.id, g.name),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            nodes.push(NodeSite {
                id: n.id.clone(),
                region: n.region.clone(),
                from_client,
                to_game,
            });
        }
        let mut mesh = BTreeMap::new();
        for (a, n) in f.nodes.iter().enumerate() {
            for (peer, spec) in &n.mesh {
                let field = format!("nodes[{a}].mesh.{peer}");
                let b = f
                    .nodes
                    .iter()
                    .position(|m| &m.id == peer)
                    .ok_or_else(|| (field.clone(), format!("no node named {peer:?}")))?;
                if a == b {
                    return Err((field, "a node has no mesh edge to itself".into()));
                }
                let e = spec.to_edge().map_err(|m| (field.clone(), m))?;
                let (key, e) = if a < b {
                    ((a, b), e)
                } else {
                    ((b, a), e.reversed())
                };
                if mesh.insert(key, e).is_some() {
                    return Err((
                        field,
                        format!(
                            "the edge between {} and {peer} is declared twice (once is enough: it has both directions)",
                            n.id
                        ),
                    ));
                }
            }
        }
        Ok(Topology {
            name: f.name.clone(),
            description: f.description.clone(),
            seed: f.seed.unwrap_or(1),
            client: f.client.clone().unwrap_or_else(|| "client".into()),
            nodes,
            games,
            mesh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAP: &str = r#"
        name = "trap"
        [[games]]
        name = "eu"
        direct = { rtt_ms = 95, loss_pct = 2 }
        [[nodes]]
        id = "near-1"
        from_client = { rtt_ms = 8 }
        to_game = { eu = { rtt_ms = 90 } }
        mesh = { far-1 = { rtt_ms = 20 } }
        [[nodes]]
        id = "far-1"
        from_client = { rtt_ms = 25 }
        to_game = { eu = { up = { delay_ms = 10 }, down = { delay_ms = 20 } } }
    "#;

    fn parse(text: &str) -> Result<Topology, TopologyError> {
        Topology::parse(text, Path::new("t.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_file_becomes_sites_and_edges() {
        let t = parse(TRAP).unwrap();
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.games[0].direct.up.delay_ms, 47.5);
        assert_eq!(t.games[0].direct.down.loss_pct, 2.0);
        assert_eq!(t.nodes[1].to_game[0].leg().rtt, Duration::from_millis(30));
        // Declared on near-1 towards far-1: both directions exist.
        assert_eq!(
            t.mesh_edge(1, 0).unwrap().leg().rtt,
            Duration::from_millis(20)
        );
        let routes: Vec<String> = t.routes().iter().map(Route::label).collect();
        assert_eq!(
            routes,
            [
                "direct",
                "near-1",
                "far-1 via near-1",
                "near-1 via far-1",
                "far-1"
            ]
        );
        // Direct: 95 ms, 1 − 0.98² of the probes or their answers lost.
        let d = t.true_leg(&Route::Direct, 0).unwrap();
        assert!((d.loss - 0.0396).abs() < 1e-9);
        let via = Route::Relay {
            entry: "near-1".into(),
            exit: "far-1".into(),
        };
        assert_eq!(t.true_leg(&via, 0).unwrap().rtt, Duration::from_millis(58));
        let one = t.route_impairment(&via, 0).unwrap();
        assert_eq!((one.up.delay_ms, one.down.delay_ms), (24.0, 34.0));
    }

    #[test]
    fn mistakes_are_named() {
        let e = err(&TRAP.replace("rtt_ms = 95", "rtt_ms = -1"));
        assert!(e.contains("games[0].direct") && e.contains("rtt_ms"), "{e}");
        let e = err(&TRAP.replace("eu = { rtt_ms = 90 }", "us = { rtt_ms = 90 }"));
        assert!(e.contains("no game named \"us\""), "{e}");
        let e = err(&TRAP.replace("far-1 = { rtt_ms = 20 }", "nowhere = { rtt_ms = 20 }"));
        assert!(e.contains("no node named \"nowhere\""), "{e}");
        let e = err(&TRAP
            .replace("mesh = { far-1 = { rtt_ms = 20 } }", "")
            .replace("id = \"far-1\"", "id = \"near-1\""));
        assert!(e.contains("nodes[1].id") && e.contains("used twice"), "{e}");
        let e = err(&TRAP
            .replace("mesh = { far-1 = { rtt_ms = 20 } }", "")
            .replace("id = \"far-1\"", "id = \"Far 1\""));
        assert!(e.contains("not a node id"), "{e}");
        let e = err(&TRAP.replace("loss_pct = 2", "loss_pct = 200"));
        assert!(
            e.contains("games[0].direct.up") && e.contains("loss_pct"),
            "{e}"
        );
        let e = err(&TRAP.replace("from_client = { rtt_ms = 25 }", "from_client = {}"));
        assert!(
            e.contains("nodes[1].from_client") && e.contains("missing"),
            "{e}"
        );
        let e = err(&TRAP.replace("rtt_ms = 8", "rtt_ms = 8, up = {}"));
        assert!(e.contains("not both"), "{e}");
        let e = err(&TRAP.replace("to_game = { eu = { rtt_ms = 90 } }", ""));
        assert!(e.contains("no edge to game \"eu\""), "{e}");
        let e = err(&format!("{TRAP}\nmesh = {{ near-1 = {{ rtt_ms = 20 }} }}"));
        assert!(e.contains("declared twice"), "{e}");
        let e = err(&TRAP.replace("name = \"trap\"", "name = \"trap\"\nspeed = 1"));
        assert!(e.contains("unknown field"), "{e}");
        let e = err("[[games]]\nname = \"g\"\ndirect = { rtt_ms = 1 }");
        assert!(e.contains("need 1..="), "{e}");
    }

    #[test]
    fn shipped_topologies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/topologies");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let t = Topology::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(!t.description.is_empty(), "{}", p.display());
            n += 1;
        }
        assert!(n >= 3);
    }
}
