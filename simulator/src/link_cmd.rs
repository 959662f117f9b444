//! `plg-sim link`: the simulator's impairment link as a standalone command, to put loss,
//! delay, jitter, reordering, duplication and rate limits in front of any UDP program — a
//! real game, a real `plg connect`, `dig` — the way clumsy or netem are used.
//!
//! It is the same [`Link`] every simulated path runs (same seeded [`Impairer`], same sender
//! threads, same host-stall accounting), so a figure measured here means what it means in a
//! scenario report. Impairments come from short flags for the common fields (both directions)
//! and from inline TOML tables (`--both`, `--up`, `--down`) holding any [`Impairment`] field,
//! deserialized by serde: a field added to `Impairment` is reachable here without new code.
//!
//! [`Impairer`]: crate::link::Impairer

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};

use crate::link::{
    DirectionConfig, DirectionCounters, DirectionReport, Impairment, Link, LinkConfig, LinkReport,
    STALL_THRESHOLD, StallSide, derive_seed,
};

const EXAMPLES: &str = "\
Every datagram a client sends to --listen goes to --to through the `up` direction; every
answer comes back through `down`. Short flags set both directions; --both/--up/--down take a
TOML inline table with any impairment field (the scenario format: loss_pct, burst, delay_ms,
jitter_ms, jitter, reorder_pct, reorder_delay_ms, duplicate_pct, rate_kbps, rate_burst_bytes,
...). Precedence, lowest first: --both, the short flags, --up/--down.

Several clients at once: each client address gets its own upstream port (NAT-like), so the
server sees one source per client and each client gets its own answers.

Examples:
  # 30 % loss and 20 ms each way in front of a DNS server, then: dig -p 5353 @127.0.0.1 ...
  plg-sim link --listen 127.0.0.1:5353 --to 127.0.0.1:53 --loss 30 --delay 20

  # in front of a PLG node's data port; point `plg connect` at 127.0.0.1:7000
  plg-sim link --listen 127.0.0.1:7000 --to 203.0.113.7:7000 --delay 30 --jitter 5 \\
      --up '{ burst = { mean_good_ms = 1400, mean_bad_ms = 70 } }' --stats-every 1 --report link.json

  # in front of a game server: players connect to this machine's port 27016
  plg-sim link --listen 0.0.0.0:27016 --to 127.0.0.1:27015 --down '{ loss_pct = 2 }'

Stops on Ctrl-C, SIGTERM or after --duration; prints a summary (exit code 0).";

/// `plg-sim link`: arguments.
#[derive(clap::Args, Debug, Clone)]
#[command(after_long_help = EXAMPLES)]
pub struct LinkArgs {
    /// Address to listen on (IP:PORT): where the client sends. Port 0 picks a free one (printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Where datagrams go (HOST:PORT): the real server.
    #[arg(long, value_name = "ADDR")]
    pub to: String,
    /// Independent loss, percent, both directions (loss_pct).
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    pub loss: Option<f64>,
    /// One-way delay, milliseconds, both directions (delay_ms).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub delay: Option<f64>,
    /// Jitter amplitude, milliseconds, both directions (jitter_ms).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub jitter: Option<f64>,
    /// Jitter shape: uniform in ±jitter, or normal with σ = jitter (jitter).
    #[arg(long, value_name = "DIST", value_parser = ["uniform", "normal"])]
    pub jitter_dist: Option<String>,
    /// Share of datagrams held back and overtaken, percent (reorder_pct).
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    pub reorder: Option<f64>,
    /// Share of datagrams sent twice, percent (duplicate_pct).
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    pub duplicate: Option<f64>,
    /// Token-bucket rate limit, kilobits per second (rate_kbps).
    #[arg(long, value_name = "KBPS", allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Both directions: a TOML inline table of impairment fields, e.g. '{ loss_pct = 5 }'.
    #[arg(long, value_name = "TOML")]
    pub both: Option<String>,
    /// Client → server only, on top of the rest, e.g. '{ delay_ms = 40, jitter_ms = 5 }'.
    #[arg(long, value_name = "TOML")]
    pub up: Option<String>,
    /// Server → client only, on top of the rest.
    #[arg(long, value_name = "TOML")]
    pub down: Option<String>,
    /// Seed of every random decision (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Print a live line every SECS seconds: datagrams in/out, drops by reason, current delay.
    #[arg(long, value_name = "SECS")]
    pub stats_every: Option<f64>,
    /// Write the configuration and the link's full report (JSON) here on exit.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// A checked `plg-sim link` configuration; nothing is bound yet.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    /// Client-facing address.
    pub listen: SocketAddr,
    /// Server address.
    pub to: SocketAddr,
    /// Client → server.
    pub up: Impairment,
    /// Server → client.
    pub down: Impairment,
    /// Seed (directions derive theirs from it).
    pub seed: u64,
    /// Run length.
    pub duration: Option<Duration>,
    /// Live line period.
    pub stats_every: Option<Duration>,
    /// JSON report path.
    pub report: Option<PathBuf>,
}

/// What `--report` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkRunReport {
    /// Client-facing address (as bound).
    pub listen: SocketAddr,
    /// Server address.
    pub to: SocketAddr,
    /// Seed.
    pub seed: u64,
    /// Client → server impairment.
    pub up: Impairment,
    /// Server → client impairment.
    pub down: Impairment,
    /// How long the link ran, seconds.
    pub seconds: f64,
    /// What stopped it: `SIGTERM`, `SIGINT` or `duration`.
    pub stopped_by: String,
    /// The link's counters, timing and stalls per direction.
    pub link: LinkReport,
}

/// Parses `--both/--up/--down`: an inline table, braces optional.
fn parse_table(flag: &str, text: Option<&str>) -> Result<toml::Table> {
    let Some(text) = text else {
        return Ok(toml::Table::new());
    };
    let t = text.trim();
    let inline = if t.starts_with('{') {
        t.to_string()
    } else {
        format!("{{ {t} }}")
    };
    let doc: toml::Table = toml::from_str(&format!("v = {inline}")).map_err(|e| {
        anyhow!(
            "{flag} {text:?}: not a TOML inline table like '{{ loss_pct = 5, delay_ms = 20 }}': {}",
            e.message()
        )
    })?;
    match doc.get("v") {
        Some(toml::Value::Table(t)) => Ok(t.clone()),
        _ => bail!("{flag} {text:?}: expected a TOML inline table"),
    }
}

/// Deserializes (unknown fields, wrong types) and, with `check`, validates the ranges.
fn impairment(flag: &str, table: toml::Table, check: bool) -> Result<Impairment> {
    let mut imp: Impairment = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{flag}: {}", e.message().trim()))?;
    // A trace file is read relative to the working directory.
    imp.load_trace(Path::new("."))
        .map_err(|e| anyhow!("{flag}: {e}"))?;
    if check {
        imp.validate().map_err(|e| anyhow!("{flag}: {e}"))?;
    }
    Ok(imp)
}

fn positive_secs(flag: &str, v: Option<f64>) -> Result<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 1e7 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => bail!("{flag} must be a positive number of seconds (got {s})"),
    }
}

impl LinkArgs {
    /// Checks every input and resolves `--to`; the error names the flag.
    pub async fn plan(&self) -> Result<LinkPlan> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            anyhow!(
                "--listen {:?}: not an address to listen on; give IP:PORT, e.g. 127.0.0.1:7000 \
                 (port 0 picks a free one)",
                self.listen
            )
        })?;
        let to = tokio::net::lookup_host(&self.to)
            .await
            .map_err(|e| {
                anyhow!(
                    "--to {:?}: not a server address (HOST:PORT, e.g. 127.0.0.1:27015): {e}",
                    self.to
                )
            })?
            .next()
            .ok_or_else(|| anyhow!("--to {:?}: the name has no address", self.to))?;
        if to.port() == 0 {
            bail!("--to {:?}: port 0 is not a server's port", self.to);
        }

        let mut both = parse_table("--both", self.both.as_deref())?;
        let shorts: [(&str, &str, Option<f64>); 6] = [
            ("--loss", "loss_pct", self.loss),
            ("--delay", "delay_ms", self.delay),
            ("--jitter", "jitter_ms", self.jitter),
            ("--reorder", "reorder_pct", self.reorder),
            ("--duplicate", "duplicate_pct", self.duplicate),
            ("--rate", "rate_kbps", self.rate),
        ];
        for (flag, key, v) in shorts {
            let Some(v) = v else { continue };
            // Checked alone first, so the message names the flag the user typed.
            let mut alone = toml::Table::new();
            alone.insert(key.into(), toml::Value::Float(v));
            impairment(flag, alone, true)?;
            both.insert(key.into(), toml::Value::Float(v));
        }
        if let Some(d) = &self.jitter_dist {
            both.insert("jitter".into(), toml::Value::String(d.clone()));
        }
        let up_only = parse_table("--up", self.up.as_deref())?;
        let down_only = parse_table("--down", self.down.as_deref())?;
        // Each table alone first, so an unknown field or a wrong type names its flag; ranges
        // are checked on the merged result (a field may depend on another set elsewhere).
        impairment(
            "--both",
            parse_table("--both", self.both.as_deref())?,
            false,
        )?;
        impairment("--up", up_only.clone(), false)?;
        impairment("--down", down_only.clone(), false)?;
        let mut up = both.clone();
        up.extend(up_only);
        let mut down = both;
        down.extend(down_only);
        let up = impairment("--up (client → server, after merging)", up, true)?;
        let down = impairment("--down (server → client, after merging)", down, true)?;

        Ok(LinkPlan {
            listen,
            to,
            up,
            down,
            seed: self.seed.unwrap_or_else(|| fastrand::u64(..)),
            duration: positive_secs("--duration", self.duration)?,
            stats_every: positive_secs("--stats-every", self.stats_every)?,
            report: self.report.clone(),
        })
    }
}

fn link_config(p: &LinkPlan) -> LinkConfig {
    LinkConfig {
        upstream: p.to,
        up: DirectionConfig {
            impairment: p.up.clone(),
            seed: derive_seed(p.seed, 0),
            schedule: vec![],
        },
        down: DirectionConfig {
            impairment: p.down.clone(),
            seed: derive_seed(p.seed, 1),
            schedule: vec![],
        },
        trace: false,
    }
}

/// Runs `plg-sim link` until a signal or `--duration`; `say` gets each output line.
pub async fn run(args: LinkArgs, mut say: impl FnMut(&str)) -> Result<()> {
    let plan = args.plan().await?;
    // Handlers first: a SIGTERM right after the "listening" line must reach the summary.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let link = Link::start_per_client(link_config(&plan), plan.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", plan.listen))?;
    let started = Instant::now();
    link.arm(started);
    say(&format!(
        "plg-sim link: listening on {} → {} (seed {})",
        link.addr(),
        plan.to,
        plan.seed
    ));
    say(&format!(
        "  up   (client → server): {}",
        crate::report::describe(&plan.up)
    ));
    say(&format!(
        "  down (server → client): {}",
        crate::report::describe(&plan.down)
    ));

    let deadline = plan.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = plan.stats_every.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut clients_seen = 0;
    let clients = |link: &Link| {
        link.counters()
            .up
            .client_changes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let stopped_by = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break "duration",
            _ = async { if let Some(t) = ticker.as_mut() { t.tick().await; } }, if ticker.is_some() => {
                let c = link.counters();
                say(&live_line(started.elapsed(), &c.up, &c.down));
                let n = clients(&link);
                if n != clients_seen {
                    say(&format!("  clients so far: {n} (each with its own upstream port)"));
                }
                clients_seen = n;
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let client_count = clients(&link);
    let listen = link.addr();
    let report = link.finish().await;
    for line in summary(&report, seconds, stopped_by, plan.seed, client_count).lines() {
        say(line);
    }
    if let Some(path) = &plan.report {
        let run = LinkRunReport {
            listen,
            to: plan.to,
            seed: plan.seed,
            up: plan.up,
            down: plan.down,
            seconds,
            stopped_by: stopped_by.into(),
            link: report,
        };
        let json = serde_json::to_string_pretty(&run)?;
        std::fs::write(path, json).with_context(|| format!("--report {}", path.display()))?;
        say(&format!("report written to {}", path.display()));
    }
    Ok(())
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

/// One live line: per direction, datagrams in/out, drops by reason, the latest decided delay.
pub fn live_line(elapsed: Duration, up: &DirectionCounters, down: &DirectionCounters) -> String {
    let dir = |c: &DirectionCounters| {
        let mut s = format!(
            "{} in {} out, lost {}",
            load(&c.packets_in),
            load(&c.packets_out),
            c.dropped()
        );
        let reasons: Vec<String> = [
            ("random", load(&c.dropped_random)),
            ("burst", load(&c.dropped_burst)),
            ("rate", load(&c.dropped_rate)),
            ("queue", load(&c.dropped_queue)),
            ("mtu", load(&c.dropped_mtu)),
            ("trace", load(&c.dropped_trace)),
            ("blackhole", load(&c.dropped_blackhole)),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
        if !reasons.is_empty() {
            let _ = write!(s, " ({})", reasons.join(", "));
        }
        let _ = write!(
            s,
            ", delay {:.1} ms",
            load(&c.last_delay_us) as f64 / 1000.0
        );
        s
    };
    let stalls = load(&up.stalls) + load(&down.stalls);
    format!(
        "{:>7.1} s  up: {} | down: {}{}",
        elapsed.as_secs_f64(),
        dir(up),
        dir(down),
        if stalls > 0 {
            format!(" | host stalls {stalls}")
        } else {
            String::new()
        }
    )
}

/// The final summary.
pub fn summary(r: &LinkReport, seconds: f64, stopped_by: &str, seed: u64, clients: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plg-sim link: stopped by {stopped_by} after {seconds:.1} s (seed {seed})"
    );
    let _ = writeln!(
        out,
        "  {:<32} {:>24} {:>24}",
        "", "up (client → server)", "down (server → client)"
    );
    let row = |out: &mut String, name: &str, f: &dyn Fn(&DirectionReport) -> String| {
        let _ = writeln!(out, "  {:<32} {:>24} {:>24}", name, f(&r.up), f(&r.down));
    };
    row(&mut out, "datagrams in / out", &|d| {
        format!("{} / {}", d.packets_in, d.packets_out)
    });
    row(&mut out, "lost", &|d| {
        let lost = d.dropped_random
            + d.dropped_burst
            + d.dropped_rate
            + d.dropped_queue
            + d.dropped_mtu
            + d.dropped_trace
            + d.dropped_blackhole;
        format!(
            "{lost} ({:.1} %)",
            if d.packets_in > 0 {
                100.0 * lost as f64 / d.packets_in as f64
            } else {
                0.0
            }
        )
    });
    row(&mut out, "  random / burst / rate / blackhole", &|d| {
        format!(
            "{} / {} / {} / {}",
            d.dropped_random, d.dropped_burst, d.dropped_rate, d.dropped_blackhole
        )
    });
    row(&mut out, "  queue / mtu / trace", &|d| {
        format!(
            "{} / {} / {}",
            d.dropped_queue, d.dropped_mtu, d.dropped_trace
        )
    });
    row(&mut out, "corrupted", &|d| d.corrupted.to_string());
    row(&mut out, "duplicated", &|d| d.duplicated.to_string());
    row(&mut out, "undeliverable", &|d| d.undeliverable.to_string());
    row(&mut out, "in flight at stop", &|d| {
        d.in_flight_at_stop.to_string()
    });
    row(&mut out, "sender late p50/p99/max µs", &|d| {
        format!("{} / {} / {}", d.late_us_p50, d.late_us_p99, d.late_us_max)
    });
    row(&mut out, "receive wait p50/p99/max µs", &|d| {
        format!(
            "{} / {} / {}",
            d.recv_late_us_p50, d.recv_late_us_p99, d.recv_late_us_max
        )
    });
    let _ = writeln!(out, "{}", stalls_line(r));
    let _ = writeln!(out, "clients: {clients} (each with its own upstream port)");
    out
}

/// "host stalls: none above 5 ms", or each stall with its direction, side, length and time.
pub fn stalls_line(r: &LinkReport) -> String {
    let mut all: Vec<(&str, &crate::link::Stall)> =
        r.up.stalls
            .iter()
            .map(|s| ("up", s))
            .chain(r.down.stalls.iter().map(|s| ("down", s)))
            .collect();
    if all.is_empty() {
        return format!("host stalls: none above {} ms", STALL_THRESHOLD.as_millis());
    }
    all.sort_by(|a, b| a.1.at_s.total_cmp(&b.1.at_s));
    let shown: Vec<String> = all
        .iter()
        .take(8)
        .map(|(dir, s)| {
            let side = match s.side {
                StallSide::Send => "sender",
                StallSide::Receive => "receive",
            };
            format!("{dir} {side} {:.1} ms at {:.2} s", s.ms, s.at_s)
        })
        .collect();
    format!(
        "host stalls: {} ({}{}) — delay spikes at those times were this machine's, not the \
         configured impairment's",
        all.len(),
        shown.join("; "),
        if all.len() > shown.len() { "; …" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> LinkArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: LinkArgs,
        }
        let mut v = vec!["x", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).expect("parses").a
    }

    #[tokio::test]
    async fn short_flags_set_both_directions_and_tables_override_per_direction() {
        let p = args(&[
            "--loss",
            "30",
            "--delay",
            "20",
            "--up",
            "{ delay_ms = 40, burst = { mean_good_ms = 1400, mean_bad_ms = 70 } }",
            "--down",
            "jitter_ms = 3",
            "--seed",
            "7",
        ])
        .plan()
        .await
        .unwrap();
        assert_eq!((p.up.loss_pct, p.up.delay_ms), (30.0, 40.0));
        assert!(p.up.burst.is_some());
        assert_eq!(
            (p.down.loss_pct, p.down.delay_ms, p.down.jitter_ms),
            (30.0, 20.0, 3.0)
        );
        assert_eq!(p.seed, 7);
    }

    #[tokio::test]
    async fn every_bad_input_names_its_flag() {
        let cases: [(&[&str], &str); 6] = [
            (
                &["--loss", "-5"],
                "--loss: loss_pct must be within 0..=100 (got -5)",
            ),
            (&["--delay", "nan"], "--delay: delay_ms"),
            (&["--up", "{ los_pct = 5 }"], "--up"),
            (
                &["--down", "{ loss_pct = 500 }"],
                "--down (server → client, after merging): loss_pct must be within",
            ),
            (&["--both", "{ loss_pct = "], "--both"),
            (&["--stats-every", "0"], "--stats-every must be a positive"),
        ];
        for (extra, want) in cases {
            let e = args(extra).plan().await.unwrap_err().to_string();
            assert!(e.contains(want), "{extra:?}: {e}");
        }
        let mut a = args(&[]);
        a.listen = "localhost".into();
        let e = a.plan().await.unwrap_err().to_string();
        assert!(e.contains("--listen \"localhost\""), "{e}");
        a.listen = "127.0.0.1:0".into();
        a.to = "127.0.0.1".into();
        let e = a.plan().await.unwrap_err().to_string();
        assert!(e.contains("--to \"127.0.0.1\""), "{e}");
    }
}
