//! Prometheus metrics in the text exposition format, kept by hand (a few counters and one
//! latency histogram per route need no framework). Served at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Billing;
use crate::db::now_secs;
use crate::error::ApiError;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Business counters and per-route HTTP statistics.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub tickets_issued: AtomicU64,
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub payments_credited: AtomicU64,
    pub payments_flagged: AtomicU64,
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().expect("metrics lock");
        let h = latency.entry(route.to_owned()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    fn render(&self, out: &mut String) {
        let counters = [
            (
                "plg_billing_tickets_issued_total",
                "Session tickets issued.",
                &self.tickets_issued,
            ),
            (
                "plg_billing_logins_total{result=\"ok\"}",
                "Logins.",
                &self.logins_ok,
            ),
            (
                "plg_billing_logins_total{result=\"failed\"}",
                "",
                &self.logins_failed,
            ),
            (
                "plg_billing_payments_total{result=\"credited\"}",
                "Payments processed.",
                &self.payments_credited,
            ),
            (
                "plg_billing_payments_total{result=\"flagged\"}",
                "",
                &self.payments_flagged,
            ),
        ];
        for (name, help, v) in counters {
            let base = name.split('{').next().unwrap_or(name);
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} counter");
            }
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP plg_billing_http_requests_total HTTP requests by route and status.\n\
             # TYPE plg_billing_http_requests_total counter"
        );
        for ((method, route, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "plg_billing_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP plg_billing_http_request_duration_seconds Request latency by route.\n\
             # TYPE plg_billing_http_request_duration_seconds histogram"
        );
        for (route, h) in self.latency.lock().expect("metrics lock").iter() {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "plg_billing_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "plg_billing_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {c}\n\
                 plg_billing_http_request_duration_seconds_sum{{route=\"{route}\"}} {s}\n\
                 plg_billing_http_request_duration_seconds_count{{route=\"{route}\"}} {c}",
                c = h.count,
                s = h.sum
            );
        }
    }
}

/// Middleware: counts every request by its route template (never the raw path, so ids
/// don't explode the label set).
pub(crate) async fn track(State(billing): State<Billing>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let start = tokio::time::Instant::now();
    let resp = next.run(req).await;
    billing
        .metrics()
        .observe(&method, &route, resp.status().as_u16(), start.elapsed());
    resp
}

/// `GET /metrics`.
pub(crate) async fn render(State(billing): State<Billing>) -> Result<Response, ApiError> {
    let mut out = String::with_capacity(4096);
    billing.metrics().render(&mut out);
    let now = now_secs();
    let gauges: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL AND expires_at > $1), \
                (SELECT COUNT(*) FROM subscriptions WHERE period_end > $1), \
                (SELECT COUNT(*) FROM nodes WHERE deleted_at IS NULL AND enabled = 1 AND last_seen >= $2)",
    )
    .bind(now)
    .bind(now - crate::nodes::NODE_FRESHNESS_SECS)
    .fetch_one(billing.db())
    .await?;
    let _ = writeln!(
        out,
        "# HELP plg_billing_open_sessions Sessions not stopped and not expired.\n\
         # TYPE plg_billing_open_sessions gauge\nplg_billing_open_sessions {}\n\
         # HELP plg_billing_active_subscriptions Accounts with a running plan.\n\
         # TYPE plg_billing_active_subscriptions gauge\nplg_billing_active_subscriptions {}\n\
         # HELP plg_billing_live_nodes Enabled nodes that announced recently.\n\
         # TYPE plg_billing_live_nodes gauge\nplg_billing_live_nodes {}",
        gauges.0, gauges.1, gauges.2
    );
    // What the mesh measured, as billing holds it (counts only: per-target series belong to
    // the nodes' own metrics, where the label set is bounded by the node's probe cap).
    let measured: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT kind, COUNT(*), COUNT(DISTINCT node_id) FROM node_rtt WHERE updated_at >= $1 \
         GROUP BY kind ORDER BY kind",
    )
    .bind(now - crate::rtt::FRESH_SECS)
    .fetch_all(billing.db())
    .await?;
    let count = |kind: &str| {
        measured
            .iter()
            .find(|(k, ..)| k == kind)
            .map_or((0, 0), |&(_, rows, nodes)| (rows, nodes))
    };
    let (targets, target_nodes) = count("target");
    let (peers, _) = count("peer");
    let _ = writeln!(
        out,
        "# HELP plg_billing_fresh_target_rtts Fresh exit-to-game measurements nodes announced.\n\
         # TYPE plg_billing_fresh_target_rtts gauge\nplg_billing_fresh_target_rtts {targets}\n\
         # HELP plg_billing_nodes_with_target_rtts Nodes with at least one fresh exit-to-game measurement.\n\
         # TYPE plg_billing_nodes_with_target_rtts gauge\nplg_billing_nodes_with_target_rtts {target_nodes}\n\
         # HELP plg_billing_fresh_peer_rtts Fresh node-to-node measurements nodes announced.\n\
         # TYPE plg_billing_fresh_peer_rtts gauge\nplg_billing_fresh_peer_rtts {peers}"
    );
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
