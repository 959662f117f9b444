//! `plg-sim`: run the local demo.

use std::time::Duration;

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
    /// Start billing, a relay node, a game server and a client on loopback, send game-like
    /// traffic directly and through the relay, and print the comparison.
    Demo {
        /// Seconds of traffic per phase.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Packets per second each way.
        #[arg(long, default_value_t = 64)]
        rate: u32,
        /// Seed for packet sizes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run a scenario file in each of its redundancy policies; print the table, write JSON
    /// and SVG plots.
    Run(plg_sim::runner::RunArgs),
    /// Run a scenario at several injected loss rates and plot residual loss per policy.
    Sweep(plg_sim::runner::SweepArgs),
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
        } => {
            if !(0.1..=3600.0).contains(&seconds) || rate == 0 || rate > 10_000 {
                anyhow::bail!("--seconds must be 0.1..3600 and --rate 1..10000");
            }
            let traffic = plg_sim::traffic::TrafficSpec {
                rate,
                duration: Duration::from_secs_f64(seconds),
                seed,
                ..Default::default()
            };
            plg_sim::demo::run(plg_sim::demo::DemoOptions { traffic }).await
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
        Command::Bench(args) => {
            print!("{}", plg_sim::bench::run(args, |m| eprintln!("{m}")).await?);
            Ok(())
        }
        Command::BenchNode(args) => plg_sim::bench::node_process(args, |l| println!("{l}")).await,
    }
}
