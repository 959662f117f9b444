//! Scenario files: topology, traffic, paths with per-direction impairments, scheduled events,
//! duration, seed and the redundancy policies to compare. TOML, `deny_unknown_fields`
//! everywhere; see `docs/simulator.md` for the format and `simulator/scenarios/` for examples.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::link::{
    DirectionConfig, Impairment, LinkConfig, RampParam, ScheduledChange, derive_seed,
};
use crate::tick::{HEADER_LEN, TickSpec};

/// Largest game payload the traffic model sends (fits a PLG frame with room to spare).
pub const MAX_PACKET: usize = 1200;
/// Most paths a scenario may have.
pub const MAX_PATHS: usize = 8;
/// Most relay nodes a scenario may start.
pub const MAX_NODES: usize = 8;

/// How a session spreads packets over its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Best path only.
    Single,
    /// Every packet on every path.
    Duplicate,
    /// Single while clean; duplicate for a hold time once loss or a jitter spike is seen.
    Adaptive,
}

impl Policy {
    /// Name as written in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Single => "single",
            Policy::Duplicate => "duplicate",
            Policy::Adaptive => "adaptive",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "single" => Ok(Policy::Single),
            "duplicate" => Ok(Policy::Duplicate),
            "adaptive" => Ok(Policy::Adaptive),
            _ => Err(format!(
                "unknown policy {s:?} (single, duplicate, adaptive)"
            )),
        }
    }
}

/// Which direction(s) of a path an event touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client → game server.
    Up,
    /// Game server → client.
    Down,
    /// Both.
    #[default]
    Both,
}

impl Direction {
    fn up(self) -> bool {
        matches!(self, Direction::Up | Direction::Both)
    }
    fn down(self) -> bool {
        matches!(self, Direction::Down | Direction::Both)
    }
}

/// A whole scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (defaults to the file stem).
    #[serde(default)]
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Seconds of traffic per policy.
    pub duration: f64,
    /// Seed of every random decision (links and packet sizes).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Policies to compare, in report order.
    #[serde(default = "default_policies")]
    pub policies: Vec<Policy>,
    /// What runs.
    #[serde(default)]
    pub topology: Topology,
    /// The game's traffic.
    #[serde(default)]
    pub traffic: Traffic,
    /// Paths from the client to the nodes, each an impairment link.
    pub paths: Vec<PathSpec>,
    /// Scheduled events.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Links several paths cross together (virtual time only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentSpec>,
    /// Other traffic through segments (virtual time only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cross: Vec<CrossSpec>,
}

/// Where a shared segment sits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Between the client and the paths that list it (and the direct route if path 0 lists
    /// it): the home Wi-Fi, the ISP's last mile.
    #[default]
    Client,
    /// Between every exit and the game server, and on the direct route: the game's data
    /// centre uplink.
    Game,
}

/// A link several paths share: what it does hits them together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    /// Name paths and cross traffic refer to.
    pub name: String,
    /// Where it sits.
    #[serde(default)]
    pub side: Side,
    /// Impairment of both directions (instead of `up` and `down`).
    pub both: Option<Impairment>,
    /// Away from the client.
    pub up: Option<Impairment>,
    /// Towards the client.
    pub down: Option<Impairment>,
}

impl SegmentSpec {
    /// Upstream impairment.
    pub fn up(&self) -> Impairment {
        self.up.clone().or(self.both.clone()).unwrap_or_default()
    }

    /// Downstream impairment.
    pub fn down(&self) -> Impairment {
        self.down.clone().or(self.both.clone()).unwrap_or_default()
    }
}

/// Other people's datagrams through a segment, at a constant rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossSpec {
    /// The segment it loads.
    pub segment: String,
    /// Which direction(s).
    #[serde(default)]
    pub direction: Direction,
    /// Kilobits per second of UDP payload in each loaded direction.
    pub rate_kbps: f64,
    /// Bytes per datagram.
    #[serde(default = "default_cross_size")]
    pub size: usize,
    /// When it starts, seconds from the start of the game's traffic.
    #[serde(default)]
    pub at: f64,
    /// How long it lasts, seconds; absent = to the end.
    pub duration: Option<f64>,
}

fn default_cross_size() -> usize {
    1200
}

fn default_seed() -> u64 {
    1
}

fn default_policies() -> Vec<Policy> {
    vec![Policy::Single, Policy::Duplicate, Policy::Adaptive]
}

/// Components to start. Billing, the game server and the client always run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// Relay nodes. Node 0 is the exit the session starts on; nodes 1.. are backup exits, in
    /// the order the client tries them when every path to its exit goes silent.
    pub nodes: usize,
    /// Seconds of silence on every path before the client moves the session to the next node
    /// (the real client's default is 1 s).
    pub failover_after: f64,
    /// Sessions playing at once, each its own client and game server with its own copy of
    /// the paths, sharing nodes and segments (virtual time only above 1). Session 0 is the
    /// one measured in full.
    pub sessions: usize,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            nodes: 1,
            failover_after: 1.0,
            sessions: 1,
        }
    }
}

/// The game's traffic model: a fixed tick rate each way, packet sizes uniform in a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Traffic {
    /// Packets per second, each way.
    pub tick_rate: u32,
    /// Smallest packet, bytes.
    pub min_size: usize,
    /// Largest packet, bytes.
    pub max_size: usize,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            tick_rate: 64,
            min_size: 100,
            max_size: 300,
        }
    }
}

/// One path: an impairment link in front of a node's data port.
///
/// Paths to node 0 (the exit) carry the session from the start, one client path each. A path
/// to a backup node `k ≥ 1` is the route to that node once the session has failed over to it
/// (the client then sends every path to the address the node announced, which is this link):
/// at most one per backup node, and a backup node without one gets a clean path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// Label for reports (defaults to `path N`).
    #[serde(default)]
    pub name: String,
    /// Index of the exit node the path leads to.
    #[serde(default)]
    pub node: usize,
    /// Relay node the path crosses before its exit (client → via → node 0): at most one. The
    /// link impairs the client ↔ relay leg; the relay reaches the exit over clean loopback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<usize>,
    /// Impairment of both directions (instead of `up` and `down`).
    pub both: Option<Impairment>,
    /// Client → node.
    pub up: Option<Impairment>,
    /// Node → client.
    pub down: Option<Impairment>,
    /// Shared segments (by name, `side = "client"`) the path crosses, nearest the client first
    /// (virtual time only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
}

impl PathSpec {
    /// Upstream impairment.
    pub fn up(&self) -> Impairment {
        self.up
            .clone()
            .or_else(|| self.both.clone())
            .unwrap_or_default()
    }

    /// Downstream impairment.
    pub fn down(&self) -> Impairment {
        self.down
            .clone()
            .or_else(|| self.both.clone())
            .unwrap_or_default()
    }
}

/// A scheduled event. Times are seconds from the start of traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// Drop everything on a path for a while.
    Blackhole {
        /// Path index.
        path: usize,
        /// Start, seconds.
        at: f64,
        /// Length, seconds.
        duration: f64,
        /// Which direction(s).
        #[serde(default)]
        direction: Direction,
    },
    /// Replace a path's impairment for a while (or for the rest of the run).
    Degrade {
        /// Path index.
        path: usize,
        /// Start, seconds.
        at: f64,
        /// Length, seconds; absent = until the end.
        duration: Option<f64>,
        /// Which direction(s).
        #[serde(default)]
        direction: Direction,
        /// The impairment in force during the window (unset fields are zero, not inherited).
        set: Impairment,
    },
    /// A path alternates between its normal parameters and a blackhole (or `set`): down for
    /// `down_for` seconds at the start of every `every` seconds within `[at, at + duration)`.
    Flap {
        /// Path index.
        path: usize,
        /// Start of the first down period, seconds.
        at: f64,
        /// Length of the flapping, seconds.
        duration: f64,
        /// Period, seconds.
        every: f64,
        /// Down time per period, seconds (less than `every`).
        down_for: f64,
        /// Which direction(s).
        #[serde(default)]
        direction: Direction,
        /// The impairment while down (unset fields are zero); absent = a blackhole.
        #[serde(default)]
        set: Option<Impairment>,
    },
    /// Move one parameter of a path linearly from its value at `at` to `to` at
    /// `at + duration`, then hold it (until a later degrade or flap replaces the parameters).
    Ramp {
        /// Path index.
        path: usize,
        /// Start, seconds.
        at: f64,
        /// Length, seconds.
        duration: f64,
        /// Which direction(s).
        #[serde(default)]
        direction: Direction,
        /// The parameter: delay_ms, jitter_ms, loss_pct, duplicate_pct, reorder_pct or
        /// corrupt_pct.
        param: RampParam,
        /// Its value at the end.
        to: f64,
    },
    /// Stop a node's process (its sessions are lost).
    #[serde(alias = "kill")]
    KillNode {
        /// Node index.
        node: usize,
        /// When, seconds.
        at: f64,
    },
    /// Start a killed node again on the same ports.
    #[serde(alias = "restart")]
    RestartNode {
        /// Node index.
        node: usize,
        /// When, seconds.
        at: f64,
    },
}

impl Event {
    /// Start time, seconds.
    pub fn at(&self) -> f64 {
        match self {
            Event::Blackhole { at, .. }
            | Event::Degrade { at, .. }
            | Event::Flap { at, .. }
            | Event::Ramp { at, .. }
            | Event::KillNode { at, .. }
            | Event::RestartNode { at, .. } => *at,
        }
    }

    /// The window `(from, until)` in seconds it covers, for plots.
    pub fn window(&self, run_end: f64) -> (f64, f64) {
        match self {
            Event::Blackhole { at, duration, .. }
            | Event::Flap { at, duration, .. }
            | Event::Ramp { at, duration, .. } => (*at, at + duration),
            Event::Degrade { at, duration, .. } => (*at, duration.map_or(run_end, |d| at + d)),
            Event::KillNode { at, .. } | Event::RestartNode { at, .. } => (*at, *at),
        }
    }

    /// One-line description.
    pub fn describe(&self) -> String {
        // Times to the millisecond (scaled events give 1.7999999999999998).
        let t = |x: f64| format!("{}", (x * 1000.0).round() / 1000.0);
        match self {
            Event::Blackhole {
                path,
                at,
                duration,
                direction,
            } => format!(
                "blackhole path {path} ({direction:?}) {}–{} s",
                t(*at),
                t(at + duration)
            ),
            Event::Degrade {
                path,
                at,
                duration,
                direction,
                ..
            } => match duration {
                Some(d) => format!(
                    "degrade path {path} ({direction:?}) {}–{} s",
                    t(*at),
                    t(at + d)
                ),
                None => format!("degrade path {path} ({direction:?}) from {} s", t(*at)),
            },
            Event::Flap {
                path,
                at,
                duration,
                direction,
                every,
                down_for,
                set,
            } => format!(
                "flap path {path} ({direction:?}) {}–{} s: {} for {} s every {} s",
                t(*at),
                t(at + duration),
                if set.is_some() { "degraded" } else { "down" },
                t(*down_for),
                t(*every)
            ),
            Event::Ramp {
                path,
                at,
                duration,
                direction,
                param,
                to,
            } => format!(
                "ramp path {path} ({direction:?}) {} to {to} over {}–{} s",
                param.name(),
                t(*at),
                t(at + duration)
            ),
            Event::KillNode { node, at } => format!("kill node {node} at {} s", t(*at)),
            Event::RestartNode { node, at } => format!("restart node {node} at {} s", t(*at)),
        }
    }
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML for this format (the message names the line and the field).
    #[error("scenario {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// The parser's message, with line and field.
        message: String,
    },
    /// Parsed, but a value is out of range or inconsistent.
    #[error("scenario {path}: field `{field}`: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Dotted field path, e.g. `paths[1].up.loss_pct`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Scenario {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut s = Scenario::parse(&text, path)?;
        if s.name.is_empty() {
            s.name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into());
        }
        Ok(s)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Scenario, ScenarioError> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        for (i, p) in s.paths.iter_mut().enumerate() {
            if p.name.is_empty() {
                p.name = format!("path {i}");
            }
        }
        let dir = origin.parent().unwrap_or(Path::new(""));
        for (field, imp) in s.impairments_mut() {
            imp.load_trace(dir).map_err(|e| ScenarioError::Invalid {
                path: origin.to_owned(),
                field: format!("{field}.trace"),
                message: e.to_string(),
            })?;
        }
        s.validate()
            .map_err(|(field, message)| ScenarioError::Invalid {
                path: origin.to_owned(),
                field,
                message,
            })?;
        Ok(s)
    }

    /// Every impairment the file writes (paths, degrade and flap sets), with its field path.
    fn impairments_mut(&mut self) -> Vec<(String, &mut Impairment)> {
        let mut v = Vec::new();
        for (i, p) in self.paths.iter_mut().enumerate() {
            for (dir, imp) in [
                ("both", &mut p.both),
                ("up", &mut p.up),
                ("down", &mut p.down),
            ] {
                if let Some(imp) = imp {
                    v.push((format!("paths[{i}].{dir}"), imp));
                }
            }
        }
        for (i, g) in self.segments.iter_mut().enumerate() {
            for (dir, imp) in [
                ("both", &mut g.both),
                ("up", &mut g.up),
                ("down", &mut g.down),
            ] {
                if let Some(imp) = imp {
                    v.push((format!("segments[{i}].{dir}"), imp));
                }
            }
        }
        for (i, e) in self.events.iter_mut().enumerate() {
            match e {
                Event::Degrade { set, .. } | Event::Flap { set: Some(set), .. } => {
                    v.push((format!("events[{i}].set"), set))
                }
                _ => {}
            }
        }
        v
    }

    /// What the real-socket harness cannot run: shared segments, cross traffic and several
    /// sessions are modelled in virtual time only, and its sessions get billing's default
    /// plan, whose path limit bounds the paths to node 0.
    pub fn check_real_mode(&self) -> Result<(), String> {
        let virtual_only = |what: &str| {
            Err(format!(
                "{what} run in virtual time only: use `--mode virtual`"
            ))
        };
        if !self.segments.is_empty() {
            return virtual_only("shared segments");
        }
        if !self.cross.is_empty() {
            return virtual_only("cross traffic");
        }
        if self.topology.sessions > 1 {
            return virtual_only("several sessions");
        }
        let limit = usize::from(plg_billing::config::Plans::default().trial.path_limit);
        let n = self.session_paths().len();
        if n > limit {
            return Err(format!(
                "{n} paths lead to node 0, but the real-socket harness's sessions allow 1..={limit} \
                 (billing's plan limit): use `--mode virtual` (up to {}) or fewer paths",
                plg_proto::paths::MAX_PATHS
            ));
        }
        Ok(())
    }

    /// Indices of the paths the session uses from the start (those to node 0), in client
    /// path order.
    pub fn session_paths(&self) -> Vec<usize> {
        (0..self.paths.len())
            .filter(|&i| self.paths[i].node == 0)
            .collect()
    }

    /// Index of the path to backup node `k`, if there is one.
    pub fn backup_path(&self, k: usize) -> Option<usize> {
        (k > 0)
            .then(|| self.paths.iter().position(|p| p.node == k))
            .flatten()
    }

    /// A copy lasting `duration` seconds with every event's time and length scaled alike (for
    /// quick runs of long scenarios).
    pub fn scaled_to(&self, duration: f64) -> Scenario {
        let f = duration / self.duration;
        let mut s = self.clone();
        s.duration = duration;
        for c in &mut s.cross {
            c.at *= f;
            if let Some(d) = &mut c.duration {
                *d *= f;
            }
        }
        for e in &mut s.events {
            match e {
                Event::Blackhole { at, duration, .. } | Event::Ramp { at, duration, .. } => {
                    *at *= f;
                    *duration *= f;
                }
                Event::Flap {
                    at,
                    duration,
                    every,
                    down_for,
                    ..
                } => {
                    *at *= f;
                    *duration *= f;
                    *every *= f;
                    *down_for *= f;
                }
                Event::Degrade { at, duration, .. } => {
                    *at *= f;
                    if let Some(d) = duration {
                        *d *= f;
                    }
                }
                Event::KillNode { at, .. } | Event::RestartNode { at, .. } => *at *= f,
            }
        }
        s
    }

    /// Checks every range and cross-reference; the error is `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_owned(), m));
        if !(self.duration.is_finite() && (0.1..=3600.0).contains(&self.duration)) {
            return bad(
                "duration",
                format!("must be 0.1..=3600 seconds (got {})", self.duration),
            );
        }
        if self.policies.is_empty() {
            return bad(
                "policies",
                "list at least one of single, duplicate, adaptive".into(),
            );
        }
        for (i, p) in self.policies.iter().enumerate() {
            if self.policies[..i].contains(p) {
                return bad("policies", format!("{p} is listed twice"));
            }
        }
        if !(1..=MAX_NODES).contains(&self.topology.nodes) {
            return bad(
                "topology.nodes",
                format!("must be 1..={MAX_NODES} (got {})", self.topology.nodes),
            );
        }
        let fa = self.topology.failover_after;
        if !(fa.is_finite() && (0.1..=30.0).contains(&fa)) {
            return bad(
                "topology.failover_after",
                format!("must be 0.1..=30 seconds (got {fa})"),
            );
        }
        let t = &self.traffic;
        if !(1..=2000).contains(&t.tick_rate) {
            return bad(
                "traffic.tick_rate",
                format!("must be 1..=2000 (got {})", t.tick_rate),
            );
        }
        if t.min_size < HEADER_LEN || t.max_size > MAX_PACKET || t.min_size > t.max_size {
            return bad(
                "traffic.min_size",
                format!(
                    "need {HEADER_LEN} <= min_size <= max_size <= {MAX_PACKET} (got {}..{})",
                    t.min_size, t.max_size
                ),
            );
        }
        if self.paths.is_empty() || self.paths.len() > MAX_PATHS {
            return bad(
                "paths",
                format!("need 1..={MAX_PATHS} paths (got {})", self.paths.len()),
            );
        }
        for (i, p) in self.paths.iter().enumerate() {
            if p.node >= self.topology.nodes {
                return bad(
                    &format!("paths[{i}].node"),
                    format!(
                        "node {} does not exist (topology.nodes = {})",
                        p.node, self.topology.nodes
                    ),
                );
            }
            if let Some(&r) = p
                .via
                .iter()
                .find(|&&r| r >= self.topology.nodes || r == p.node)
            {
                return bad(
                    &format!("paths[{i}].via"),
                    format!("node {r} is not another node of the topology"),
                );
            }
            if p.via.len() > 1 || (!p.via.is_empty() && p.node != 0) {
                return bad(
                    &format!("paths[{i}].via"),
                    "a path crosses at most one relay node, and only on the way to the exit \
                     (node 0)"
                        .into(),
                );
            }
            if p.node > 0 && self.paths[..i].iter().any(|q| q.node == p.node) {
                return bad(
                    &format!("paths[{i}].node"),
                    format!(
                        "backup node {} already has a path: after a failover the client reaches \
                         a node at one address",
                        p.node
                    ),
                );
            }
            if p.both.is_some() && (p.up.is_some() || p.down.is_some()) {
                return bad(
                    &format!("paths[{i}].both"),
                    "give either `both` or `up`/`down`, not both".into(),
                );
            }
            for (dir, imp) in [("both", &p.both), ("up", &p.up), ("down", &p.down)] {
                if let Some(imp) = imp {
                    imp.validate()
                        .or_else(|m| bad(&format!("paths[{i}].{dir}"), m))?;
                }
            }
        }
        for (i, p) in self.paths.iter().enumerate() {
            if p.both.is_none() && (p.up.is_none() || p.down.is_none()) {
                return bad(
                    &format!("paths[{i}]"),
                    "give the path's impairment: `both = { … }`, or `up` and `down` \
                     (`both = {}` for a clean path)"
                        .into(),
                );
            }
            for (j, name) in p.segments.iter().enumerate() {
                match self.segments.iter().find(|g| &g.name == name) {
                    None => {
                        return bad(
                            &format!("paths[{i}].segments[{j}]"),
                            format!("no segment named {name:?}"),
                        );
                    }
                    Some(g) if g.side != Side::Client => {
                        return bad(
                            &format!("paths[{i}].segments[{j}]"),
                            format!(
                                "segment {name:?} is on the game side: every exit's route to \
                                 the game crosses it already"
                            ),
                        );
                    }
                    _ => {}
                }
                if p.segments[..j].contains(name) {
                    return bad(
                        &format!("paths[{i}].segments[{j}]"),
                        format!("segment {name:?} is listed twice"),
                    );
                }
            }
        }
        for k in 1..self.topology.nodes {
            if self.backup_path(k).is_none() {
                return bad(
                    "paths",
                    format!(
                        "node {k} is a backup exit but no path leads to it: add a [[paths]] \
                         entry with node = {k} (the route the session takes after failing over \
                         to it)"
                    ),
                );
            }
        }
        let n = self.session_paths().len();
        if n > plg_proto::paths::MAX_PATHS {
            return bad(
                "paths",
                format!(
                    "{n} paths lead to node 0, a session has at most {}",
                    plg_proto::paths::MAX_PATHS
                ),
            );
        }
        if !(1..=crate::virtual_net::MAX_SESSIONS).contains(&self.topology.sessions) {
            return bad(
                "topology.sessions",
                format!(
                    "must be 1..={} (got {})",
                    crate::virtual_net::MAX_SESSIONS,
                    self.topology.sessions
                ),
            );
        }
        for (i, g) in self.segments.iter().enumerate() {
            if g.name.is_empty() || self.segments[..i].iter().any(|h| h.name == g.name) {
                return bad(
                    &format!("segments[{i}].name"),
                    format!("needs a name of its own (got {:?})", g.name),
                );
            }
            if g.both.is_none() && (g.up.is_none() || g.down.is_none()) {
                return bad(
                    &format!("segments[{i}]"),
                    "give the segment's impairment: `both = { … }`, or `up` and `down`".into(),
                );
            }
            if g.both.is_some() && (g.up.is_some() || g.down.is_some()) {
                return bad(
                    &format!("segments[{i}].both"),
                    "give either `both` or `up`/`down`, not both".into(),
                );
            }
            for (dir, imp) in [("both", &g.both), ("up", &g.up), ("down", &g.down)] {
                if let Some(imp) = imp {
                    imp.validate()
                        .or_else(|m| bad(&format!("segments[{i}].{dir}"), m))?;
                }
            }
        }
        for (i, c) in self.cross.iter().enumerate() {
            if !self.segments.iter().any(|g| g.name == c.segment) {
                return bad(
                    &format!("cross[{i}].segment"),
                    format!("no segment named {:?}", c.segment),
                );
            }
            if !(c.rate_kbps.is_finite() && c.rate_kbps > 0.0 && c.rate_kbps <= 1_000_000.0) {
                return bad(
                    &format!("cross[{i}].rate_kbps"),
                    format!("must be within (0, 1000000] (got {})", c.rate_kbps),
                );
            }
            if !(1..=MAX_PACKET).contains(&c.size) {
                return bad(
                    &format!("cross[{i}].size"),
                    format!("must be 1..={MAX_PACKET} bytes (got {})", c.size),
                );
            }
            if !(c.at.is_finite() && c.at >= 0.0 && c.at <= self.duration) {
                return bad(
                    &format!("cross[{i}].at"),
                    format!("must be within 0..=duration (got {})", c.at),
                );
            }
            if let Some(d) = c.duration
                && !(d.is_finite() && d > 0.0)
            {
                return bad(
                    &format!("cross[{i}].duration"),
                    format!("must be > 0 (got {d})"),
                );
            }
            // A datagram every 10 µs at most keeps a virtual run's event count sane.
            if c.size as f64 * 8.0 / c.rate_kbps < 0.01 {
                return bad(
                    &format!("cross[{i}].rate_kbps"),
                    "more than 100,000 datagrams per second: use larger datagrams".into(),
                );
            }
        }
        if !self.paths.iter().any(|p| p.node == 0) {
            return bad(
                "paths",
                "no path leads to node 0, the exit the session starts on".into(),
            );
        }
        for (i, e) in self.events.iter().enumerate() {
            let f = |name: &str| format!("events[{i}].{name}");
            let at = e.at();
            if !(at.is_finite() && at >= 0.0 && at <= self.duration) {
                return bad(&f("at"), format!("must be within 0..=duration (got {at})"));
            }
            match e {
                Event::Blackhole { path, duration, .. }
                | Event::Degrade {
                    path,
                    duration: Some(duration),
                    ..
                } => {
                    if *path >= self.paths.len() {
                        return bad(
                            &f("path"),
                            format!("path {path} does not exist ({} paths)", self.paths.len()),
                        );
                    }
                    if !(duration.is_finite() && *duration > 0.0) {
                        return bad(&f("duration"), format!("must be > 0 (got {duration})"));
                    }
                }
                Event::Degrade {
                    path,
                    duration: None,
                    ..
                } => {
                    if *path >= self.paths.len() {
                        return bad(
                            &f("path"),
                            format!("path {path} does not exist ({} paths)", self.paths.len()),
                        );
                    }
                }
                Event::Flap {
                    path,
                    duration,
                    every,
                    down_for,
                    ..
                } => {
                    if *path >= self.paths.len() {
                        return bad(
                            &f("path"),
                            format!("path {path} does not exist ({} paths)", self.paths.len()),
                        );
                    }
                    if !(duration.is_finite() && *duration > 0.0) {
                        return bad(&f("duration"), format!("must be > 0 (got {duration})"));
                    }
                    if !(every.is_finite() && *every >= 0.01) {
                        return bad(&f("every"), format!("must be >= 0.01 s (got {every})"));
                    }
                    if duration / every > 10_000.0 {
                        return bad(
                            &f("every"),
                            format!("at most 10000 periods per flap (got {})", duration / every),
                        );
                    }
                    if !(down_for.is_finite() && *down_for > 0.0 && down_for < every) {
                        return bad(
                            &f("down_for"),
                            format!("must be > 0 and less than every = {every} (got {down_for})"),
                        );
                    }
                }
                Event::Ramp {
                    path,
                    duration,
                    param,
                    to,
                    ..
                } => {
                    if *path >= self.paths.len() {
                        return bad(
                            &f("path"),
                            format!("path {path} does not exist ({} paths)", self.paths.len()),
                        );
                    }
                    if !(duration.is_finite() && *duration > 0.0) {
                        return bad(&f("duration"), format!("must be > 0 (got {duration})"));
                    }
                    param.validate(*to).or_else(|m| bad(&f("to"), m))?;
                }
                Event::KillNode { node, .. } | Event::RestartNode { node, .. } => {
                    if *node >= self.topology.nodes {
                        return bad(&f("node"), format!("node {node} does not exist"));
                    }
                }
            }
            if let Event::Degrade { set, .. } | Event::Flap { set: Some(set), .. } = e {
                set.validate().or_else(|m| bad(&f("set"), m))?;
            }
        }
        // Kill/restart must alternate per node, starting with a kill.
        for node in 0..self.topology.nodes {
            let mut evs: Vec<&Event> = self
                .events
                .iter()
                .filter(|e| matches!(e, Event::KillNode { node: n, .. } | Event::RestartNode { node: n, .. } if *n == node))
                .collect();
            evs.sort_by(|a, b| a.at().total_cmp(&b.at()));
            let mut alive = true;
            for e in evs {
                match e {
                    Event::KillNode { .. } if alive => alive = false,
                    Event::RestartNode { .. } if !alive => alive = true,
                    _ => {
                        return bad(
                            "events",
                            format!(
                                "node {node}: kill_node and restart_node must alternate, starting with a kill"
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The traffic both game ends send.
    pub fn tick_spec(&self, seed: u64) -> TickSpec {
        TickSpec {
            rate: self.traffic.tick_rate,
            min_size: self.traffic.min_size,
            max_size: self.traffic.max_size,
            duration: secs(self.duration),
            drain: self.drain(),
            seed,
        }
    }

    /// How long to listen after the last send: enough for the slowest path's worst delay.
    pub fn drain(&self) -> Duration {
        let mut worst = Duration::ZERO;
        for p in &self.paths {
            worst = worst.max(p.up().max_delay()).max(p.down().max_delay());
        }
        for e in &self.events {
            match e {
                Event::Degrade { set, .. } | Event::Flap { set: Some(set), .. } => {
                    worst = worst.max(set.max_delay())
                }
                Event::Ramp {
                    path, param, to, ..
                } => {
                    // The ramped parameter's final value on top of the path's own.
                    let p = &self.paths[*path];
                    for mut imp in [p.up(), p.down()] {
                        match param {
                            RampParam::DelayMs => imp.delay_ms = *to,
                            RampParam::JitterMs => imp.jitter_ms = *to,
                            _ => continue,
                        }
                        worst = worst.max(imp.max_delay());
                    }
                }
                _ => {}
            }
        }
        (Duration::from_millis(500) + worst * 2).min(Duration::from_secs(5))
    }

    /// Link configuration of path `i` towards `upstream`, with the scenario's events turned
    /// into scheduled changes and seeds derived from `seed`.
    pub fn link_config(&self, i: usize, upstream: std::net::SocketAddr, seed: u64) -> LinkConfig {
        let p = &self.paths[i];
        let mut up = DirectionConfig {
            impairment: p.up(),
            seed: derive_seed(seed, 2 * i as u64 + 1),
            schedule: vec![],
        };
        let mut down = DirectionConfig {
            impairment: p.down(),
            seed: derive_seed(seed, 2 * i as u64 + 2),
            schedule: vec![],
        };
        for e in &self.events {
            match e {
                Event::Blackhole {
                    path,
                    at,
                    duration,
                    direction,
                } if *path == i => {
                    let c = ScheduledChange::Blackhole {
                        from: secs(*at),
                        until: secs(at + duration),
                    };
                    if direction.up() {
                        up.schedule.push(c.clone());
                    }
                    if direction.down() {
                        down.schedule.push(c);
                    }
                }
                Event::Degrade {
                    path,
                    at,
                    duration,
                    direction,
                    set,
                } if *path == i => {
                    for (on, d) in [(direction.up(), &mut up), (direction.down(), &mut down)] {
                        if !on {
                            continue;
                        }
                        d.schedule.push(ScheduledChange::Set {
                            at: secs(*at),
                            impairment: set.clone(),
                        });
                        if let Some(len) = duration {
                            d.schedule.push(ScheduledChange::Set {
                                at: secs(at + len),
                                impairment: d.impairment.clone(),
                            });
                        }
                    }
                }
                Event::Flap {
                    path,
                    at,
                    duration,
                    every,
                    down_for,
                    direction,
                    set,
                } if *path == i => {
                    let end = at + duration;
                    for (on, d) in [(direction.up(), &mut up), (direction.down(), &mut down)] {
                        if !on {
                            continue;
                        }
                        let mut k = 0u32;
                        loop {
                            let start = at + f64::from(k) * every;
                            if start >= end {
                                break;
                            }
                            let (from, until) = (secs(start), secs((start + down_for).min(end)));
                            match set {
                                None => d.schedule.push(ScheduledChange::Blackhole { from, until }),
                                Some(set) => {
                                    d.schedule.push(ScheduledChange::Set {
                                        at: from,
                                        impairment: set.clone(),
                                    });
                                    d.schedule.push(ScheduledChange::Set {
                                        at: until,
                                        impairment: d.impairment.clone(),
                                    });
                                }
                            }
                            k += 1;
                        }
                    }
                }
                Event::Ramp {
                    path,
                    at,
                    duration,
                    direction,
                    param,
                    to,
                } if *path == i => {
                    let c = ScheduledChange::Ramp {
                        from: secs(*at),
                        until: secs(at + duration),
                        param: *param,
                        to: *to,
                    };
                    if direction.up() {
                        up.schedule.push(c.clone());
                    }
                    if direction.down() {
                        down.schedule.push(c);
                    }
                }
                _ => {}
            }
        }
        LinkConfig {
            upstream,
            up,
            down,
            trace: false,
        }
    }

    /// A copy with every path's independent loss set to `loss_pct` in both directions (sweeps).
    pub fn with_loss(&self, loss_pct: f64) -> Scenario {
        let mut s = self.clone();
        for p in &mut s.paths {
            let (mut up, mut down) = (p.up(), p.down());
            // A trace replaces the loss model: its directions keep their own loss.
            for d in [&mut up, &mut down] {
                if d.trace.is_none() {
                    d.loss_pct = loss_pct;
                }
            }
            p.both = None;
            p.up = Some(up);
            p.down = Some(down);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("test.toml"))
    }

    const MINIMAL: &str = "duration = 2\n[[paths]]\nboth = {}\n";

    #[test]
    fn minimal_scenario_gets_defaults() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.seed, 1);
        assert_eq!(s.traffic.tick_rate, 64);
        assert_eq!(s.policies.len(), 3);
        assert_eq!(s.paths[0].name, "path 0");
        assert_eq!(s.paths[0].up(), Impairment::default());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse("duration = 2\n[[paths]]\n[paths.up]\nlos_pct = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("test.toml") && e.contains("los_pct"), "{e}");
        let e = parse("duration = 2\nsed = 3\n[[paths]]\nboth = {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sed"), "{e}");
        let e = parse("duration = 2\n[[paths]]\nboth = {}\n[[events]]\nkind = \"blackhole\"\npath = 0\nat = 1\nduration = 1\nwhen = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("when"), "{e}");
    }

    #[test]
    fn ranges_are_checked_with_the_field_path() {
        let e =
            parse("duration = 2\n[[paths]]\nboth = {}\n[[paths]]\n[paths.down]\nloss_pct = 150\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("paths[1].down") && e.contains("loss_pct"), "{e}");
        let e = parse("duration = 2\n[[paths]]\nboth = {}\n[[events]]\nkind = \"blackhole\"\npath = 3\nat = 1\nduration = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("events[0].path"), "{e}");
        let e = parse("duration = 2\n[topology]\nnodes = 9\n[[paths]]\nboth = {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("topology.nodes"), "{e}");
    }

    #[test]
    fn events_become_link_schedules() {
        let s = parse(
            "duration = 10\n[[paths]]\n[paths.both]\ndelay_ms = 5\n[[paths]]\nboth = {}\n\
             [[events]]\nkind = \"blackhole\"\npath = 0\nat = 4\nduration = 2\ndirection = \"up\"\n\
             [[events]]\nkind = \"degrade\"\npath = 0\nat = 1\nduration = 1\n[events.set]\ndelay_ms = 50\n",
        )
        .unwrap();
        let c = s.link_config(0, "127.0.0.1:9".parse().unwrap(), 1);
        assert_eq!(c.up.schedule.len(), 3);
        assert_eq!(c.down.schedule.len(), 2);
        assert!(c.up.schedule.contains(&ScheduledChange::Blackhole {
            from: Duration::from_secs(4),
            until: Duration::from_secs(6)
        }));
        // The degrade window restores the base parameters at its end.
        assert!(c.down.schedule.contains(&ScheduledChange::Set {
            at: Duration::from_secs(2),
            impairment: Impairment {
                delay_ms: 5.0,
                ..Default::default()
            }
        }));
        assert!(
            s.link_config(1, "127.0.0.1:9".parse().unwrap(), 1)
                .up
                .schedule
                .is_empty()
        );
    }

    #[test]
    fn every_backup_node_and_every_path_is_impaired_explicitly() {
        let s = parse(
            "duration = 4\n[topology]\nnodes = 2\n[[paths]]\nname = \"a\"\nboth = {}\n\
             [[paths]]\nname = \"to backup\"\nnode = 1\nboth = { delay_ms = 9 }\n\
             [[paths]]\nname = \"b\"\nboth = { delay_ms = 5 }\n\
             [[events]]\nkind = \"kill\"\nnode = 0\nat = 2\n",
        )
        .unwrap();
        assert_eq!(s.session_paths(), vec![0, 2]);
        assert_eq!(s.backup_path(1), Some(1));
        assert!(matches!(s.events[0], Event::KillNode { node: 0, .. }));

        // A backup node without a path is refused, not given a clean one.
        let e = parse("duration = 2\n[topology]\nnodes = 3\n[[paths]]\nboth = {}\n[[paths]]\nnode = 1\nboth = {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("node 2 is a backup exit"), "{e}");
        // A path without an impairment is refused; `both = {}` says "clean" explicitly.
        let e = parse("duration = 2\n[[paths]]\nname = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("paths[0]") && e.contains("both = {}"), "{e}");
        let e = parse("duration = 2\n[[paths]]\nup = { loss_pct = 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`up` and `down`"), "{e}");

        assert!(
            parse("duration = 2\n[topology]\nnodes = 2\n[[paths]]\nvia = [1]\nboth = {}\n[[paths]]\nnode = 1\nboth = {}\n")
                .is_ok()
        );
        let e = parse("duration = 2\n[topology]\nnodes = 3\n[[paths]]\nvia = [1, 2]\nboth = {}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("paths[0].via") && e.contains("at most one"),
            "{e}"
        );
        let e = parse("duration = 2\n[topology]\nnodes = 2\n[[paths]]\nboth = {}\n[[paths]]\nnode = 1\nboth = {}\n[[paths]]\nnode = 1\nboth = {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("paths[2].node"), "{e}");
        let e = parse("duration = 2\n[topology]\nnodes = 2\n[[paths]]\nnode = 1\nboth = {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("node 0"), "{e}");
    }

    #[test]
    fn session_path_limits_depend_on_the_mode() {
        let three =
            "duration = 2\n[[paths]]\nboth = {}\n[[paths]]\nboth = {}\n[[paths]]\nboth = {}\n";
        let s = parse(three).unwrap();
        // Virtual time runs three paths; the real harness's plan allows two, and says so
        // before anything starts.
        let e = s.check_real_mode().unwrap_err();
        assert!(e.contains("1..=2") && e.contains("--mode virtual"), "{e}");
        let nine = "duration = 2\n".to_owned() + &"[[paths]]\nboth = {}\n".repeat(9);
        let e = parse(&nine).unwrap_err().to_string();
        assert!(e.contains("paths"), "{e}");
    }

    #[test]
    fn segments_and_cross_traffic_are_checked() {
        let ok = "duration = 2\n[[segments]]\nname = \"wifi\"\nboth = { loss_pct = 2 }\n\
                  [[segments]]\nname = \"dc\"\nside = \"game\"\nboth = {}\n\
                  [[paths]]\nsegments = [\"wifi\"]\nboth = {}\n\
                  [[cross]]\nsegment = \"wifi\"\nrate_kbps = 500\n";
        let s = parse(ok).unwrap();
        assert_eq!(s.segments[1].side, Side::Game);
        assert_eq!(s.cross[0].size, 1200);
        assert!(s.check_real_mode().unwrap_err().contains("virtual"));
        let e = parse(&ok.replace("segments = [\"wifi\"]", "segments = [\"lan\"]"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("paths[0].segments[0]") && e.contains("lan"),
            "{e}"
        );
        let e = parse(&ok.replace("segments = [\"wifi\"]", "segments = [\"dc\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("game side"), "{e}");
        let e = parse(&ok.replace("segment = \"wifi\"", "segment = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cross[0].segment"), "{e}");
        let e = parse(&ok.replace("rate_kbps = 500", "rate_kbps = -1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cross[0].rate_kbps"), "{e}");
        let e = parse(&ok.replace("name = \"dc\"", "name = \"wifi\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("segments[1].name"), "{e}");
    }

    #[test]
    fn scaling_keeps_events_in_proportion() {
        let s = parse(
            "duration = 10\n[[paths]]\nboth = {}\n[[events]]\nkind = \"blackhole\"\npath = 0\nat = 4\nduration = 2\n",
        )
        .unwrap()
        .scaled_to(2.0);
        assert_eq!(s.duration, 2.0);
        assert_eq!(s.events[0].window(2.0), (0.8, 0.8 + 0.4));
        s.validate().unwrap();
    }

    #[test]
    fn flaps_alternate_and_ramps_become_link_schedules() {
        let s = parse(
            "duration = 10\n[[paths]]\nboth = { delay_ms = 5 }\n\
             [[events]]\nkind = \"flap\"\npath = 0\nat = 2\nduration = 3\nevery = 1\ndown_for = 0.25\ndirection = \"up\"\n\
             [[events]]\nkind = \"flap\"\npath = 0\nat = 6\nduration = 1.5\nevery = 1\ndown_for = 0.5\ndirection = \"down\"\nset = { loss_pct = 50 }\n\
             [[events]]\nkind = \"ramp\"\npath = 0\nat = 1\nduration = 4\nparam = \"delay_ms\"\nto = 105\n",
        )
        .unwrap();
        let c = s.link_config(0, "127.0.0.1:9".parse().unwrap(), 1);
        let ms = Duration::from_millis;
        let up = crate::link::Impairer::new(1, c.up.impairment.clone(), c.up.schedule.clone());
        let holes: Vec<_> =
            c.up.schedule
                .iter()
                .filter_map(|c| match c {
                    ScheduledChange::Blackhole { from, until } => Some((*from, *until)),
                    _ => None,
                })
                .collect();
        assert_eq!(
            holes,
            vec![
                (ms(2000), ms(2250)),
                (ms(3000), ms(3250)),
                (ms(4000), ms(4250))
            ]
        );
        // The ramp: 5 ms at 1 s to 105 ms at 5 s, in both directions.
        assert_eq!(up.params_at(ms(3000)).delay_ms, 55.0);
        let down =
            crate::link::Impairer::new(1, c.down.impairment.clone(), c.down.schedule.clone());
        assert_eq!(down.params_at(ms(5500)).delay_ms, 105.0);
        // The degrading flap: 50 % loss in [6, 6.5) and [7, 7.5), the base in between. Its
        // restore replaces the ramped parameters by the path's own (the latest change wins).
        assert_eq!(down.params_at(ms(6100)).loss_pct, 50.0);
        assert_eq!(down.params_at(ms(6600)).loss_pct, 0.0);
        assert_eq!(down.params_at(ms(6600)).delay_ms, 5.0);
        assert_eq!(down.params_at(ms(7499)).loss_pct, 50.0);
        assert_eq!(down.params_at(ms(7500)).loss_pct, 0.0);
        let half = s.scaled_to(5.0);
        assert!(matches!(
            half.events[0],
            Event::Flap { every, down_for, .. } if every == 0.5 && down_for == 0.125
        ));
    }

    #[test]
    fn new_fields_are_validated_with_their_names() {
        let cases = [
            (
                "[paths.up]\nqueue_bytes = 5000\n",
                "paths[0].up",
                "queue_bytes",
            ),
            ("[paths.up]\nmtu = 10\n", "paths[0].up", "mtu"),
            (
                "[paths.up]\ncorrupt_pct = 101\n",
                "paths[0].up",
                "corrupt_pct",
            ),
            (
                "[paths.up]\nburst = { mean_good_ms = 100, mean_bad_ms = 0 }\n",
                "paths[0].up",
                "burst.mean_bad_ms",
            ),
            (
                "[[events]]\nkind = \"flap\"\npath = 0\nat = 1\nduration = 1\nevery = 0.5\ndown_for = 0.5\n",
                "events[0].down_for",
                "less than",
            ),
            (
                "[[events]]\nkind = \"ramp\"\npath = 0\nat = 1\nduration = 1\nparam = \"loss_pct\"\nto = 120\n",
                "events[0].to",
                "loss_pct",
            ),
            (
                "[[events]]\nkind = \"flap\"\npath = 0\nat = 1\nduration = 1\nevery = 0.5\ndown_for = 0.1\nset = { mtu = 3 }\n",
                "events[0].set",
                "mtu",
            ),
        ];
        for (tail, field, what) in cases {
            // A path's own table, or a clean path followed by events.
            let path = if tail.starts_with("[paths.") {
                ""
            } else {
                "both = {}\n"
            };
            let e = parse(&format!("duration = 2\n[[paths]]\n{path}{tail}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field) && e.contains(what), "{tail}: {e}");
        }
        // The old per-datagram burst syntax is refused by name.
        let e = parse("duration = 2\n[[paths]]\nboth = { burst = { p = 0.01, r = 0.2 } }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `p`"), "{e}");
    }

    #[test]
    fn traces_load_relative_to_the_scenario_and_errors_name_file_and_line() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/wifi-trace.toml");
        let s = Scenario::load(&shipped).unwrap();
        let c = s.link_config(0, "127.0.0.1:9".parse().unwrap(), 1);
        let mut m = crate::link::Impairer::new(1, c.up.impairment.clone(), vec![]);
        // 1500 ms: the start of the 300 ms stall.
        let crate::link::Decision::Deliver { delay, .. } =
            m.decide(Duration::from_millis(1500), 100)
        else {
            panic!("the stall delays, it does not drop");
        };
        assert!((300..=320).contains(&delay.as_millis()), "{delay:?}");
        // Drain covers the stall.
        assert!(s.drain() >= Duration::from_millis(600));

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/bad.trace"), "0 5\n# c\n10 fast\n").unwrap();
        let scenario = dir.path().join("x.toml");
        std::fs::write(
            &scenario,
            "duration = 2\n[[paths]]\nup = { trace = \"t/bad.trace\" }\n",
        )
        .unwrap();
        let e = Scenario::load(&scenario).unwrap_err().to_string();
        assert!(
            e.contains("paths[0].up.trace") && e.contains("bad.trace:3:"),
            "{e}"
        );
        std::fs::write(
            &scenario,
            "duration = 2\n[[paths]]\nup = { trace = \"t/none.trace\" }\n",
        )
        .unwrap();
        let e = Scenario::load(&scenario).unwrap_err().to_string();
        assert!(
            e.contains("cannot read trace") && e.contains("none.trace"),
            "{e}"
        );
        std::fs::write(dir.path().join("t/ok.trace"), "0 5\n").unwrap();
        std::fs::write(
            &scenario,
            "duration = 2\n[[paths]]\nup = { trace = \"t/ok.trace\", delay_ms = 3 }\n",
        )
        .unwrap();
        let e = Scenario::load(&scenario).unwrap_err().to_string();
        assert!(e.contains("paths[0].up") && e.contains("replaces"), "{e}");
    }
}
