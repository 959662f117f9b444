//! `plg-sim demo`: a small mesh on loopback (billing + 3 relay nodes), impaired links, the game
//! played directly and through PLG in each redundancy policy, and the before/after table
//! with every loss figure's 95 % interval and the claims those intervals support
//! (`crate::claims`). The demo fails when it cannot show that `duplicate` loses less than
//! `single`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::claims::{self, Claim, ClaimKind, Verdict};
use crate::link::Impairment;
use crate::report::{PolicyReport, PolicyStatus, Quantiles, RunReport, StreamStats};
use crate::runner::{self, Harness};
use crate::scenario::{PathSpec, Policy, Scenario, Topology, Traffic};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Seconds of traffic per run (direct, then each policy).
    pub seconds: f64,
    /// Packets per second each way.
    pub rate: u32,
    /// Seed of every random decision.
    pub seed: u64,
    /// The impairment of every route, each direction: the direct one and each PLG path.
    pub route: Impairment,
    /// Where to write the report files (`report.json`, `report.txt`, SVG plots).
    pub out: PathBuf,
}

/// Seconds per run by default: 8 s at 64 ticks/s is 512 packets each way, 1,024 per route
/// with both directions pooled — at 5 % loss single loses ~51 and duplicate ~3, and Newcombe's
/// interval of the difference excludes 0 with a wide margin (at 4 s it would still, but one
/// lost packet moves duplicate's figure by 0.2 %).
pub const DEFAULT_SECONDS: f64 = 8.0;

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seconds: DEFAULT_SECONDS,
            rate: 64,
            seed: 1,
            route: Impairment {
                delay_ms: 20.0,
                jitter_ms: 2.0,
                loss_pct: 5.0,
                ..Impairment::default()
            },
            out: PathBuf::from("target/plg-sim/demo"),
        }
    }
}

/// The demo as a scenario: three nodes (the exit and two backups), two paths to the exit with
/// the same impairment as the direct route: one straight to it, one through node 1 as a relay.
pub fn scenario(o: &DemoOptions) -> Result<Scenario> {
    let path = |name: &str, node: usize, via: Vec<usize>| PathSpec {
        name: name.into(),
        node,
        via,
        both: Some(o.route.clone()),
        up: None,
        down: None,
        segments: vec![],
    };
    let s = Scenario {
        name: "demo".into(),
        description: format!(
            "billing + 3 nodes; two paths to the exit (one direct, one relayed by node 1), each {} \
             each way, like the direct route",
            crate::report::describe(&o.route)
        ),
        duration: o.seconds,
        seed: o.seed,
        policies: vec![Policy::Single, Policy::Duplicate, Policy::Adaptive],
        topology: Topology {
            nodes: 3,
            ..Topology::default()
        },
        traffic: Traffic {
            tick_rate: o.rate,
            ..Traffic::default()
        },
        paths: vec![
            path("route A", 0, vec![]),
            path("route B via node 1", 0, vec![1]),
            path("to backup 1", 1, vec![]),
            path("to backup 2", 2, vec![]),
        ],
        events: vec![],
        segments: vec![],
        cross: vec![],
    };
    if let Err((field, message)) = s.validate() {
        bail!("demo settings: {field}: {message}");
    }
    Ok(s)
}

/// Runs the demo and prints what happened. Fails if a policy could not be measured or nothing
/// got through.
pub async fn run(opts: DemoOptions) -> Result<()> {
    let s = scenario(&opts)?;
    println!(
        "PLG Booster local demo — everything on 127.0.0.1: real sockets, real QUIC, real SQLite,"
    );
    println!("userspace impairment links in front of every route.\n");
    let mut h = Harness::start().await?;
    let result = drive(&mut h, &s).await;
    let steps = steps(&h);
    h.stop().await;
    let report = result?;
    println!("How each piece was started (in-process tasks; the equivalent commands):");
    for (what, how) in &steps {
        println!("  {what:<12} {how}");
    }
    println!();
    print!("{}", before_after(&s, &report));
    let claims = claims::for_run(&report, "--seconds");
    println!("\nWhat these numbers show (both directions pooled, 95 % intervals):");
    for c in &claims {
        println!("  - {c}");
    }
    let files = runner::write_run(&opts.out, &report)?;
    println!(
        "\nFull report (per direction, gaps, jitter, links) and plots: {}",
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in &report.policies {
        match &p.status {
            PolicyStatus::Ran { .. } => {}
            PolicyStatus::Unavailable { reason } => bail!("{} unavailable: {reason}", p.policy),
            PolicyStatus::Failed { error } => bail!("{} failed: {error}", p.policy),
        }
        if p.down.as_ref().is_none_or(|d| d.delivered == 0) {
            bail!("{}: no traffic came back through the mesh", p.policy);
        }
    }
    check_headline(&opts, &claims)?;
    println!();
    lower_ping(opts.seconds, opts.rate, opts.seed).await?;
    println!("\nCleaned up: nodes and billing stopped, temporary directory removed.");
    Ok(())
}

/// The ping drop: the client routes on the whole path in a world where the nearest node is
/// the wrong exit and a relayed route beats the direct one, then plays the same echo traffic
/// directly and through PLG. Fails if the client does not take the better route.
pub async fn lower_ping(seconds: f64, rate: u32, seed: u64) -> Result<()> {
    use crate::site::{World, WorldSpec};
    use crate::traffic::{self, TrafficSpec};
    use plg_client::{CaptureMode, ConnectRequest, Controller, Progress};

    let spec = WorldSpec::nearest_is_wrong(seed);
    println!("Lower ping: the route on the whole path (a second world on loopback)");
    println!(
        "  the internet: direct to the game server {} each way;",
        crate::report::describe(&spec.direct)
    );
    for n in &spec.nodes {
        println!(
            "  node {:<5} {} from you, {} from the game server (each way)",
            n.name,
            crate::report::describe(&n.to_client),
            crate::report::describe(&n.to_game)
        );
    }
    let world = World::start(&spec).await?;
    let result = async {
        let gamer = world.gamer("ping@example.com").await?;
        eprintln!("waiting for the nodes to measure the game server and tell billing…");
        world
            .wait_measured(&gamer, std::time::Duration::from_secs(60))
            .await?;
        let verdict = std::sync::Mutex::new(String::new());
        let req = ConnectRequest {
            capture: CaptureMode::Proxy {
                listen: "127.0.0.1:0".parse()?,
                server: None,
            },
            keep_alive: false,
            ..ConnectRequest::new(crate::local_mesh::DEMO_GAME)
        };
        let ctl = Controller::connect(gamer, world.ca_pem.clone(), req, |p| {
            if let Progress::Advice(a) = p
                && let Ok(mut v) = verdict.lock()
            {
                *v = a;
            }
        })
        .await?;
        let mut verdict = verdict.into_inner().unwrap_or_default();
        for (name, node, _, _) in &world.nodes {
            verdict = verdict.replace(&node.node_id, name);
        }
        let info = ctl.info();
        let exit = world.name_of(&info.node.id).unwrap_or("?").to_owned();
        println!("  the client says: {verdict}");
        let t = TrafficSpec {
            rate,
            duration: std::time::Duration::from_secs_f64(seconds),
            ..TrafficSpec::default()
        };
        let direct = traffic::run(world.game.addr, t).await?;
        let local = info
            .local_addr
            .ok_or_else(|| anyhow::anyhow!("no local port"))?;
        let via = traffic::run(local, t).await?;
        ctl.stop().await;
        println!(
            "\n  {:<24} {:>26} {:>26}",
            "route", "RTT p50 [95 % CI] / p99 ms", "loss [95 % CI] lost/sent"
        );
        let median = |r: &traffic::TrafficReport| {
            let n = r.received;
            let ci = crate::stats::median_ranks(n).map(|(lo, hi)| {
                (
                    r.rtt_ms(lo as f64 / n as f64),
                    r.rtt_ms(hi as f64 / n as f64),
                )
            });
            (r.rtt_ms(0.5), ci)
        };
        for (name, r) in [
            ("direct (no PLG)", &direct),
            (&*format!("PLG via {exit}"), &via),
        ] {
            let (p50, ci) = median(r);
            let ci = ci.map_or("".into(), |(lo, hi)| format!(" [{lo:.1}–{hi:.1}]"));
            let lost = r.sent - r.received;
            let loss = crate::stats::clopper_pearson(lost, r.sent);
            println!(
                "  {name:<24} {:>26} {:>26}",
                format!("{p50:.1}{ci} / {:.1}", r.rtt_ms(0.99)),
                format!(
                    "{:.1} % [{:.1}–{:.1}] {lost}/{}",
                    r.loss_percent(),
                    loss.lo * 100.0,
                    loss.hi * 100.0,
                    r.sent
                )
            );
        }
        // The claim is printed only when the medians' intervals (distribution-free, from the
        // order statistics) do not overlap.
        match (median(&direct), median(&via)) {
            ((d, Some((d_lo, _))), (v, Some((_, v_hi)))) if v_hi < d_lo => println!(
                "  median ping {:.0} % lower through PLG: {v:.1} ms against {d:.1} ms, the 95 % \
                 intervals of the medians apart ({v_hi:.1} < {d_lo:.1} ms; {} echoes each way)",
                100.0 * (1.0 - v / d.max(1e-9)),
                direct.sent
            ),
            _ => println!(
                "  cannot tell the medians apart at this length (their 95 % intervals overlap): \
                 run longer, e.g. --seconds 30"
            ),
        }
        if exit != "far" {
            bail!("the client chose {exit}, not the far node: {verdict}");
        }
        Ok(())
    }
    .await;
    world.stop().await;
    result
}

/// The demo's point is that duplication repairs loss: with lossy routes, a run that cannot
/// show `duplicate` losing less than `single` fails, saying how to get a run that can.
pub fn check_headline(opts: &DemoOptions, claims: &[Claim]) -> Result<()> {
    if opts.route.expected_loss() <= 0.0 {
        return Ok(());
    }
    match claims
        .iter()
        .find(|c| c.kind == ClaimKind::DuplicateBeatsSingle)
    {
        Some(c) if c.verdict == Verdict::Shown => Ok(()),
        Some(c) => bail!(
            "the demo could not show that duplicate loses less than single ({c}); at {} % loss \
             per route {} s per run is too short or something is wrong",
            opts.route.loss_pct,
            opts.seconds
        ),
        None => bail!("the demo has no duplicate-vs-single comparison (a policy did not run)"),
    }
}

async fn drive(h: &mut Harness, s: &Scenario) -> Result<RunReport> {
    h.ensure_nodes(s.topology.nodes).await?;
    eprintln!("direct route (no PLG)…");
    let mut r = RunReport::for_scenario(s, s.seed);
    r.direct = Some(h.run_direct(s, s.seed).await?);
    for &policy in &s.policies {
        eprintln!("through PLG, {policy}…");
        r.policies.push(h.run_policy(s, s.seed, policy).await);
    }
    Ok(r)
}

fn steps(h: &Harness) -> Vec<(String, String)> {
    let mut steps = h.mesh().steps.clone();
    for (what, how) in &mut steps {
        if what == "game server" {
            *how = format!(
                "tick game server on {} (its own tick stream, not an echo)",
                h.game_addr()
            );
        }
        if what == "node" {
            *what = "node 0".into();
            how.push_str("   (the exit)");
        }
    }
    for (k, (id, control, data)) in h.nodes().into_iter().enumerate().skip(1) {
        steps.push((
            format!("node {k}"),
            format!(
                "plg-node join … && plg-node run --control {control} --data {data}   (id {id}, backup exit)"
            ),
        ));
    }
    steps
}

fn loss(st: &StreamStats) -> String {
    crate::report::fmt_loss(&st.loss)
}

fn rtt(q: &Quantiles) -> String {
    format!("{:.1} / {:.1}", q.p50, q.p99)
}

const ROW_W: usize = 24;

/// The before/after table: the direct route, then PLG in each policy; loss with its 95 %
/// interval and count.
pub fn before_after(s: &Scenario, r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ticks/s each way, 100–300 bytes, {:.0} s per run; every route: {} each way.",
        s.traffic.tick_rate,
        s.duration,
        crate::report::describe(&s.paths[0].up())
    );
    let _ = writeln!(
        out,
        "Direct: the game talks to the game server through one such link. Through PLG: two such\n\
         paths to the exit node (one straight to it, one relayed by node 1 over the mesh), the\n\
         redundancy policy spreading the frames over them. Loss: percent [95 % interval] lost/sent.\n"
    );
    let _ = writeln!(
        out,
        "{:<18} {:>ROW_W$} {:>ROW_W$} {:>16} {:>14} {:>7}",
        "route", "loss up", "loss down", "RTT p50 / p99 ms", "longest gap ms", "bytes ×"
    );
    if let Some(direct) = &r.direct {
        let _ = writeln!(
            out,
            "{:<18} {:>ROW_W$} {:>ROW_W$} {:>16} {:>14} {:>7}",
            "direct (no PLG)",
            loss(&direct.up),
            loss(&direct.down),
            rtt(&direct.rtt_ms),
            format!(
                "{:.0} / {:.0}",
                direct.up.longest_gap_ms, direct.down.longest_gap_ms
            ),
            format!("{:.2}", direct.up.overhead)
        );
    }
    for p in &r.policies {
        let _ = writeln!(out, "{}", policy_row(p));
    }
    out
}

fn policy_row(p: &PolicyReport) -> String {
    let name = format!("PLG {}", p.policy);
    match (&p.status, &p.up, &p.down, &p.rtt_ms) {
        (PolicyStatus::Ran { .. }, Some(up), Some(down), Some(q)) => format!(
            "{name:<18} {:>ROW_W$} {:>ROW_W$} {:>16} {:>14} {:>7}",
            loss(up),
            loss(down),
            rtt(q),
            format!("{:.0} / {:.0}", up.longest_gap_ms, down.longest_gap_ms),
            format!("{:.2}", up.overhead)
        ),
        (PolicyStatus::Unavailable { reason }, ..) => format!("{name:<18} unavailable: {reason}"),
        (PolicyStatus::Failed { error }, ..) => format!("{name:<18} FAILED: {error}"),
        _ => format!("{name:<18} no numbers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(verdict: Verdict) -> Claim {
        Claim {
            kind: ClaimKind::DuplicateBeatsSingle,
            verdict,
            text: "cannot tell duplicate from single at this length".into(),
        }
    }

    #[test]
    fn the_demo_fails_unless_duplicate_is_shown_to_beat_single() {
        let o = DemoOptions::default();
        assert!(check_headline(&o, &[claim(Verdict::Shown)]).is_ok());
        let e = check_headline(&o, &[claim(Verdict::Inconclusive)]).unwrap_err();
        assert!(
            e.to_string()
                .contains("could not show that duplicate loses less than single"),
            "{e}"
        );
        assert!(check_headline(&o, &[claim(Verdict::Contradicted)]).is_err());
        assert!(check_headline(&o, &[]).is_err());
        // Clean routes: nothing to repair, nothing to show.
        let clean = DemoOptions {
            route: Impairment::default(),
            ..DemoOptions::default()
        };
        assert!(check_headline(&clean, &[]).is_ok());
    }
}
