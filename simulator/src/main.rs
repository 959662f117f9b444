//! `plg-sim`: run the local demo, scenarios, sweeps, benchmarks and the standalone link.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// PLG simulator and local demo.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start billing, 3 relay nodes, a game server and the client on loopback behind impaired
    /// links; play the game directly and through PLG in each redundancy policy; print the
    /// before/after table.
    Demo {
        /// Seconds of traffic per run (direct, single, duplicate, adaptive); the demo fails if
        /// the run is too short to show that duplicate loses less than single.
        #[arg(long, default_value_t = plg_sim::demo::DEFAULT_SECONDS)]
        seconds: f64,
        /// Packets per second each way.
        #[arg(long, default_value_t = 64)]
        rate: u32,
        /// Seed of every random decision (loss, jitter, packet sizes).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Loss of every route, percent, each direction.
        #[arg(long, default_value_t = 5.0)]
        loss: f64,
        /// Jitter of every route, ± milliseconds, each direction.
        #[arg(long, default_value_t = 2.0)]
        jitter: f64,
        /// One-way delay of every route, milliseconds.
        #[arg(long, default_value_t = 20.0)]
        delay: f64,
        /// Directory for the full report and plots.
        #[arg(long, default_value = "target/plg-sim/demo")]
        out: std::path::PathBuf,
    },
    /// Run a scenario file in each of its redundancy policies; print the table, write JSON
    /// and SVG plots.
    Run(plg_sim::runner::RunArgs),
    /// Run a scenario at several injected loss rates and plot residual loss per policy.
    Sweep(plg_sim::runner::SweepArgs),
    /// Route choice against the oracle in virtual time: random geographic topologies (or one
    /// hand-written `--topology FILE`), the client deciding from its probes only; print the
    /// targets, write routes.json and routes.txt.
    Routes(plg_sim::routes::RoutesArgs),
    /// A standalone impairment link in front of any UDP program (a game, `plg connect`, dig):
    /// loss, delay, jitter, reordering, duplication, rate limits per direction, like
    /// clumsy or netem. `plg-sim link --help` has examples.
    Link(plg_sim::link_cmd::LinkArgs),
    /// Benchmark direct vs nginx's UDP proxy vs a PLG node, side by side; print the tables.
    Bench(plg_sim::bench::BenchArgs),
    /// (Internal) a node in its own process for `bench`.
    #[command(hide = true)]
    BenchNode(plg_sim::bench::NodeArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PLG_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Demo {
            seconds,
            rate,
            seed,
            loss,
            jitter,
            delay,
            out,
        } => {
            let route = plg_sim::link::Impairment {
                delay_ms: delay,
                jitter_ms: jitter,
                loss_pct: loss,
                ..Default::default()
            };
            route
                .validate()
                .map_err(|e| anyhow::anyhow!("--loss/--jitter/--delay: {e}"))?;
            plg_sim::demo::run(plg_sim::demo::DemoOptions {
                seconds,
                rate,
                seed,
                route,
                out,
            })
            .await
        }
        Command::Run(args) => {
            print!(
                "{}",
                plg_sim::runner::run_command(args, |m| eprintln!("{m}")).await?
            );
            Ok(())
        }
        Command::Sweep(args) => {
            print!(
                "{}",
                plg_sim::runner::sweep_command(args, |m| eprintln!("{m}")).await?
            );
            Ok(())
        }
        Command::Routes(args) => {
            print!("{}", plg_sim::routes::routes_command(args)?);
            Ok(())
        }
        Command::Bench(args) => {
            print!("{}", plg_sim::bench::run(args, |m| eprintln!("{m}")).await?);
            Ok(())
        }
        Command::Link(args) => plg_sim::link_cmd::run(args, |l| println!("{l}")).await,
        Command::BenchNode(args) => plg_sim::bench::node_process(args, |l| println!("{l}")).await,
    }
}
