//! `plg-sim demo`: the whole path on loopback, with numbers.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use plg_client::Proxy;

use crate::local_mesh::{DEMO_GAME, LocalMesh};
use crate::traffic::{self, TrafficReport, TrafficSpec};

/// Demo settings.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// Traffic shape for each phase (direct, then relayed).
    pub traffic: TrafficSpec,
}

fn row(name: &str, r: &TrafficReport) -> String {
    format!(
        "{name:<22} {:>6} {:>6} {:>6.2}% {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        r.sent,
        r.received,
        r.loss_percent(),
        r.rtt_ms(0.5),
        r.rtt_ms(0.9),
        r.rtt_ms(0.99),
        r.rtt_us.max() as f64 / 1000.0
    )
}

/// Runs the demo and prints what happened. Fails if traffic did not get through.
pub async fn run(opts: DemoOptions) -> Result<()> {
    println!(
        "PLG Booster local demo — everything on 127.0.0.1, real sockets, real QUIC, real SQLite\n"
    );
    let mesh = LocalMesh::start().await?;
    let result = drive(&mesh, opts).await;
    let node = mesh.node.metrics.snapshot();
    tracing::debug!(?node, "node counters");
    mesh.stop().await;
    let (direct, relayed, steps) = result?;
    println!("How each piece was started (in-process tasks; the equivalent commands):");
    for (what, how) in &steps {
        println!("  {what:<12} {how}");
    }
    let t = opts.traffic;
    println!(
        "\nTraffic: {} packets/s each way, {}–{} bytes, {:.0} s per phase; the game server echoes every packet.\n",
        t.rate,
        t.min_size,
        t.max_size,
        t.duration.as_secs_f64()
    );
    println!(
        "{:<22} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "path", "sent", "back", "loss", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    println!("{}", row("direct", &direct));
    println!("{}", row("through PLG relay", &relayed));
    let added = relayed.rtt_ms(0.5) - direct.rtt_ms(0.5);
    println!(
        "\nRelay adds {:.3} ms at the median on loopback (sealing, node forwarding, one more hop).",
        added
    );
    println!(
        "Node counters: {} sessions accepted, {} packets to the game server, {} from it, {} dropped (malformed {}, auth {}, replay {}), {} destinations refused.",
        node.sessions_accepted,
        node.upstream_packets_out,
        node.upstream_packets_in,
        node.dropped_malformed
            + node.dropped_auth
            + node.dropped_replay
            + node.dropped_unknown_session,
        node.dropped_malformed,
        node.dropped_auth,
        node.dropped_replay,
        node.refused_destination
    );
    if relayed.corrupted > 0 || direct.corrupted > 0 {
        bail!("{} corrupted echoes", relayed.corrupted + direct.corrupted);
    }
    if relayed.received == 0 {
        bail!("no traffic came back through the relay");
    }
    println!("\nCleaned up: node and billing stopped, temporary directory removed.");
    Ok(())
}

type Outcome = (TrafficReport, TrafficReport, Vec<(String, String)>);

async fn drive(mesh: &LocalMesh, opts: DemoOptions) -> Result<Outcome> {
    let mut steps = mesh.steps.clone();
    let email = "gamer@demo.plg";
    let billing = mesh.gamer(email).await?;
    steps.push((
        "gamer".into(),
        format!(
            "plg login --register --billing {} --email {email}",
            mesh.billing_url
        ),
    ));
    let (grant, node, tunnel) =
        plg_client::open_session(&billing, &mesh.ca_pem, DEMO_GAME, None).await?;
    let listen: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let proxy = Proxy::start(tunnel, listen, mesh.game.addr)
        .await
        .context("starting the local proxy")?;
    steps.push((
        "client".into(),
        format!(
            "plg connect --game {DEMO_GAME} --proxy {} --to {}   (session {} via {}, QUIC control at {})",
            proxy.local_addr, mesh.game.addr, grant.session_id, node.id, node.control_addr
        ),
    ));

    let direct = traffic::run(mesh.game.addr, opts.traffic).await?;
    let relayed = traffic::run(proxy.local_addr, opts.traffic).await?;
    // Give the proxy's CLOSE a moment to reach the node before everything stops.
    proxy.stop().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok((direct, relayed, steps))
}
