//! Token-bucket rate limits keyed by (limit, client IP or account), answering 429 with
//! `Retry-After`. In memory, per process: enough for one billing instance; buckets idle
//! for ten minutes are pruned.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use tokio::time::Instant;

use crate::config::{Rate, RateLimits};
use crate::error::ApiError;

/// Which limit a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Limit {
    LoginIp,
    LoginAccount,
    RegisterIp,
    JoinIp,
    WebhookIp,
    SessionsAccount,
}

impl Limit {
    fn rate(self, limits: &RateLimits) -> Rate {
        match self {
            Limit::LoginIp => limits.login_per_ip,
            Limit::LoginAccount => limits.login_per_account,
            Limit::RegisterIp => limits.register_per_ip,
            Limit::JoinIp => limits.join_per_ip,
            Limit::WebhookIp => limits.webhook_per_ip,
            Limit::SessionsAccount => limits.sessions_per_account,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// All buckets. The lock is held for a few hundred nanoseconds, never across an await.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(Limit, String), Bucket>>,
    last_prune: Mutex<Instant>,
}

const IDLE_PRUNE_SECS: u64 = 600;

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        RateLimiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
            last_prune: Mutex::new(Instant::now()),
        }
    }

    /// Per-IP check (skipped for loopback clients when `exempt_loopback`).
    pub fn check_ip(&self, limit: Limit, ip: ClientIp) -> Result<(), ApiError> {
        if self.limits.exempt_loopback && ip.0.is_loopback() {
            return Ok(());
        }
        self.check(limit, &ip.0.to_string())
    }

    /// Takes one token for `key` under `limit`, or says how long to wait.
    pub fn check(&self, limit: Limit, key: &str) -> Result<(), ApiError> {
        if !self.limits.enabled {
            return Ok(());
        }
        let rate = limit.rate(&self.limits);
        let now = Instant::now();
        self.maybe_prune(now);
        let per_sec = f64::from(rate.per_minute) / 60.0;
        let burst = f64::from(rate.burst.max(1));
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let b = buckets.entry((limit, key.to_owned())).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = if per_sec > 0.0 {
                ((1.0 - b.tokens) / per_sec).ceil() as u64
            } else {
                60
            };
            tracing::info!(?limit, key, "rate limited");
            Err(ApiError::RateLimited {
                retry_after_secs: wait.max(1),
            })
        }
    }

    fn maybe_prune(&self, now: Instant) {
        let mut last = self.last_prune.lock().expect("rate limiter lock");
        if now.duration_since(*last).as_secs() < 60 {
            return;
        }
        *last = now;
        drop(last);
        self.buckets
            .lock()
            .expect("rate limiter lock")
            .retain(|_, b| now.duration_since(b.last).as_secs() < IDLE_PRUNE_SECS);
    }
}

/// The client's IP address: the TCP peer, or with `trust_forwarded_for` the last hop of
/// `X-Forwarded-For` (what the trusted proxy saw).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientIp(pub IpAddr);

impl FromRequestParts<crate::Billing> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        billing: &crate::Billing,
    ) -> Result<Self, ApiError> {
        if billing.config().rate_limits.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return Ok(ClientIp(ip));
        }
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Ok(ClientIp(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_refills() {
        let limits = RateLimits {
            login_per_ip: Rate {
                burst: 2,
                per_minute: 60,
            },
            ..RateLimits::default()
        };
        let rl = RateLimiter::new(limits);
        rl.check(Limit::LoginIp, "a").unwrap();
        rl.check(Limit::LoginIp, "a").unwrap();
        match rl.check(Limit::LoginIp, "a") {
            Err(ApiError::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("{other:?}"),
        }
        // Other keys and other limits are independent.
        rl.check(Limit::LoginIp, "b").unwrap();
        rl.check(Limit::RegisterIp, "a").unwrap();
        tokio::time::advance(std::time::Duration::from_millis(1100)).await;
        rl.check(Limit::LoginIp, "a").unwrap();
        assert!(rl.check(Limit::LoginIp, "a").is_err());
    }
}
