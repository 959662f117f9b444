//! Convergence and failure-detection benchmark for in-process meshes on loopback UDP.
//!
//! `cargo run --release -p plg-mesh --example convergence -- --nodes 10,50,100`
//!
//! For each size: start the nodes (three seeds), wait until every node sees every node,
//! let the failure detector warm up, publish one state change and time its spread, kill
//! one node and time until every survivor sees it dead, then watch a quiet period for
//! false "dead" verdicts. Prints a Markdown table.

use std::net::SocketAddr;
use std::time::Duration;

use plg_mesh::{GossipKey, Load, Mesh, MeshConfig, MeshHandle, NodeId, NodeInfo};
use tokio::time::Instant;

struct Args {
    sizes: Vec<usize>,
    gossip: Duration,
    phi: f64,
    quiet: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        sizes: vec![10, 50, 100],
        gossip: Duration::from_millis(200),
        phi: MeshConfig::new(
            "x".parse()?,
            info(),
            GossipKey::new([0; 32]),
            "127.0.0.1:0".parse()?,
        )
        .phi_threshold,
        quiet: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--nodes" => {
                args.sizes = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--gossip-ms" => args.gossip = Duration::from_millis(value()?.parse()?),
            "--phi" => args.phi = value()?.parse()?,
            "--quiet-s" => args.quiet = Duration::from_secs(value()?.parse()?),
            other => anyhow::bail!(
                "unknown flag {other}; use --nodes 10,50,100 --gossip-ms 200 --phi 8 --quiet-s 5"
            ),
        }
    }
    Ok(args)
}

fn info() -> NodeInfo {
    NodeInfo {
        region: "bench".into(),
        provider: String::new(),
        data_addr: "127.0.0.1:9".parse().unwrap(),
        control_addr: "127.0.0.1:9".parse().unwrap(),
        version: "bench".into(),
        capacity: 1000,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Time at which the q-quantile of observers had seen the event.
fn quantile(times: &mut [Duration], q: f64) -> Duration {
    times.sort();
    let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
    times[i]
}

struct Row {
    n: usize,
    join: Duration,
    spread: [Duration; 3],
    detect: [Duration; 2],
    false_dead: usize,
    datagrams_per_node_s: f64,
}

async fn run(n: usize, args: &Args) -> anyhow::Result<Row> {
    let key = GossipKey::new([42; 32]);
    let t_start = Instant::now();
    let mut nodes: Vec<MeshHandle> = Vec::with_capacity(n);
    for i in 0..n {
        let seeds: Vec<SocketAddr> = nodes.iter().take(3).map(|h| h.gossip_addr()).collect();
        let mut c = MeshConfig::new(
            format!("node-{i:03}").parse()?,
            info(),
            key.clone(),
            "127.0.0.1:0".parse()?,
        );
        c.seeds = seeds.iter().map(ToString::to_string).collect();
        c.gossip_interval = args.gossip;
        c.phi_threshold = args.phi;
        nodes.push(Mesh::start(c).await?);
    }
    let ids: Vec<NodeId> = nodes.iter().map(|h| h.node_id().clone()).collect();

    // 1. Join: every node sees all n.
    let limit = Duration::from_secs(60);
    loop {
        if nodes.iter().all(|h| h.view().live_nodes().count() == n) {
            break;
        }
        if t_start.elapsed() > limit {
            let counts: Vec<usize> = nodes
                .iter()
                .map(|h| h.view().live_nodes().count())
                .collect();
            anyhow::bail!(
                "{n} nodes: no convergence in {limit:?}; live counts min {} max {}",
                counts.iter().min().unwrap_or(&0),
                counts.iter().max().unwrap_or(&0)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let join = t_start.elapsed();

    // Warm-up: the failure detector needs a few intervals per peer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent_before: u64 = nodes.iter().map(|h| h.gossip_counters().sent).sum();
    let t_traffic = Instant::now();

    // 2. Spread of one update from a middle node.
    let origin = n / 2;
    let marker = Load {
        sessions: 4242,
        ..Load::default()
    };
    let t0 = Instant::now();
    nodes[origin].set_load(marker);
    let mut seen: Vec<Option<Duration>> = vec![None; n];
    while seen.iter().any(Option::is_none) {
        for (i, h) in nodes.iter().enumerate() {
            if seen[i].is_none()
                && h.view()
                    .node(&ids[origin])
                    .is_some_and(|v| v.load == marker)
            {
                seen[i] = Some(t0.elapsed());
            }
        }
        anyhow::ensure!(t0.elapsed() < limit, "update did not spread");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut spread: Vec<Duration> = seen.into_iter().flatten().collect();
    let spread = [
        quantile(&mut spread, 0.5),
        quantile(&mut spread, 0.99),
        quantile(&mut spread, 1.0),
    ];

    // 3. Failure detection of a non-seed node; 4. false verdicts about everyone else.
    let victim = nodes.pop().expect("n > 0");
    let victim_id = victim.node_id().clone();
    victim.kill();
    let t0 = Instant::now();
    let mut seen: Vec<Option<Duration>> = vec![None; nodes.len()];
    let mut false_dead = 0;
    let quiet_until = args.quiet;
    while seen.iter().any(Option::is_none) || t0.elapsed() < quiet_until {
        for (i, h) in nodes.iter().enumerate() {
            let v = h.view();
            if seen[i].is_none() && !v.is_alive(&victim_id) {
                seen[i] = Some(t0.elapsed());
            }
            false_dead += ids[..n - 1].iter().filter(|id| !v.is_alive(id)).count();
        }
        anyhow::ensure!(t0.elapsed() < limit, "victim never seen dead");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut detect: Vec<Duration> = seen.into_iter().flatten().collect();
    let detect = [quantile(&mut detect, 0.5), quantile(&mut detect, 1.0)];
    let sent_after: u64 = nodes.iter().map(|h| h.gossip_counters().sent).sum();
    let datagrams_per_node_s =
        (sent_after - sent_before) as f64 / (n - 1) as f64 / t_traffic.elapsed().as_secs_f64();
    for h in nodes {
        h.kill();
    }
    Ok(Row {
        n,
        join,
        spread,
        detect,
        false_dead,
        datagrams_per_node_s,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!(
        "gossip interval {} ms, phi threshold {}, fanout 3 (chitchat), loopback UDP, sealed",
        args.gossip.as_millis(),
        args.phi
    );
    println!();
    println!(
        "| nodes | join: all see all | update → 50 % | → 99 % | → 100 % | dead seen: p50 | all peers | false dead samples | datagrams/node/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.sizes {
        anyhow::ensure!(n >= 2, "need at least 2 nodes");
        let r = match run(n, &args).await {
            Ok(r) => r,
            Err(e) => {
                println!("| {n} | failed: {e} | | | | | | | |");
                continue;
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.n,
            ms(r.join),
            ms(r.spread[0]),
            ms(r.spread[1]),
            ms(r.spread[2]),
            ms(r.detect[0]),
            ms(r.detect[1]),
            r.false_dead,
            r.datagrams_per_node_s
        );
        // Let the sockets of this round close before the next.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
