//! Load generator for a running billing service: ticket issuance (`POST /v1/sessions`)
//! throughput and latency, and login latency. Prints a table.
//!
//! ```sh
//! cargo run --release -p plg-billing -- serve --config bench.toml &
//! cargo run --release -p plg-billing --example loadgen -- --url http://127.0.0.1:8080
//! ```
//! The service must run with `rate_limits.enabled = false` and a `max_sessions` high enough
//! for `--accounts` × what each worker keeps open (see docs/benchmarks.md), or with
//! `--stop` so each ticket's session is stopped right after it is issued.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent workers (each with its own account).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Tickets to issue in total.
    #[arg(long, default_value_t = 20_000)]
    tickets: usize,
    /// Logins to time in total.
    #[arg(long, default_value_t = 400)]
    logins: usize,
    /// Concurrent logins.
    #[arg(long, default_value_t = 8)]
    login_concurrency: usize,
    /// Game slug.
    #[arg(long, default_value = "cs2")]
    game: String,
    /// Stop each session right after its ticket (adds one request per ticket, untimed).
    #[arg(long)]
    stop: bool,
    /// Label for the output row (e.g. the database).
    #[arg(long, default_value = "")]
    label: String,
}

const PASSWORD: &str = "loadgen password 1";

async fn post(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let mut req = http.post(url).json(&body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let run = format!("{:08x}", fastrand::u32(..));

    // One account per worker; the service starts the trial at sign-up.
    let mut tokens = Vec::new();
    for i in 0..args.concurrency.max(args.login_concurrency) {
        let email = format!("load-{run}-{i}@example.com");
        let (status, body) = post(
            &http,
            &format!("{base}/v1/accounts"),
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
        if status != 201 {
            bail!("sign-up failed: {status} {body}");
        }
        let (status, body) = post(
            &http,
            &format!("{base}/v1/auth/login"),
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
        if status != 200 {
            bail!("login failed: {status} {body}");
        }
        tokens.push((
            email,
            body["access_token"].as_str().context("token")?.to_owned(),
        ));
    }

    // Tickets.
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let per_worker = args.tickets / args.concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (_, token) in tokens.iter().take(args.concurrency) {
        let token = token.clone();
        let http = http.clone();
        let url = format!("{base}/v1/sessions");
        let base = base.clone();
        let game = args.game.clone();
        let hist = hist.clone();
        let stop = args.stop;
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            for _ in 0..per_worker {
                let t0 = Instant::now();
                let (status, body) = post(&http, &url, Some(&token), json!({"game": game})).await?;
                local.record(t0.elapsed().as_micros() as u64).ok();
                if status != 201 {
                    bail!("ticket failed: {status} {body}");
                }
                if stop {
                    let id = body["session_id"].as_str().unwrap_or_default();
                    post(
                        &http,
                        &format!("{base}/v1/sessions/{id}/stop"),
                        Some(&token),
                        json!({}),
                    )
                    .await?;
                }
            }
            hist.lock().await.add(&local).ok();
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    let issued = per_worker * args.concurrency;
    let h = hist.lock().await;
    println!("| run | requests | concurrency | rate | p50 ms | p95 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} tickets{} | {issued} | {} | {:.0} tickets/s | {:.2} | {:.2} | {:.2} | {:.2} |",
        args.label,
        if args.stop { " (+stop)" } else { "" },
        args.concurrency,
        issued as f64 / elapsed.as_secs_f64(),
        pct(&h, 0.50),
        pct(&h, 0.95),
        pct(&h, 0.99),
        h.max() as f64 / 1000.0
    );

    // Logins.
    let lhist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let per = args.logins / args.login_concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (email, _) in tokens.iter().take(args.login_concurrency) {
        let email = email.clone();
        let http = http.clone();
        let url = format!("{base}/v1/auth/login");
        let lhist = lhist.clone();
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            for _ in 0..per {
                let t0 = Instant::now();
                let (status, body) = post(
                    &http,
                    &url,
                    None,
                    json!({"email": email, "password": PASSWORD}),
                )
                .await?;
                local.record(t0.elapsed().as_micros() as u64).ok();
                if status != 200 {
                    bail!("login failed: {status} {body}");
                }
            }
            lhist.lock().await.add(&local).ok();
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    let h = lhist.lock().await;
    let done = per * args.login_concurrency;
    println!(
        "| {} logins | {done} | {} | {:.0} logins/s | {:.2} | {:.2} | {:.2} | {:.2} |",
        args.label,
        args.login_concurrency,
        done as f64 / elapsed.as_secs_f64(),
        pct(&h, 0.50),
        pct(&h, 0.95),
        pct(&h, 0.99),
        h.max() as f64 / 1000.0
    );
    Ok(())
}
