//! Measuring a path: RTT samples and what to make of them (median, jitter, loss), plus the
//! two cheap probes the client uses: a UDP echo probe (`plg_proto::query`'s `echo` format, to a
//! game server that answers, or the local proxy port in front of the session) and a QUIC handshake to a node's control port
//! (needs no ticket).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use plg_proto::control::ALPN;
use plg_proto::query::{self, QueryKind};
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// What a series of probes saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probe {
    /// Probes sent.
    pub sent: u32,
    /// RTT of each answered probe, in the order sent.
    pub rtts: Vec<Duration>,
}

impl Probe {
    /// Answered probes.
    pub fn answered(&self) -> u32 {
        self.rtts.len() as u32
    }

    /// Loss in percent (0 when nothing was sent).
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * f64::from(self.sent - self.answered().min(self.sent)) / f64::from(self.sent)
    }

    /// The RTT below which a fraction `q` (0..=1) of the answered probes fell.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.rtts.is_empty() {
            return None;
        }
        let mut v = self.rtts.clone();
        v.sort();
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(v[i])
    }

    /// Median RTT.
    pub fn median(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    /// Jitter: mean absolute difference between consecutive RTT samples (RFC 3550 style,
    /// without the smoothing).
    pub fn jitter(&self) -> Duration {
        if self.rtts.len() < 2 {
            return Duration::ZERO;
        }
        let total: Duration = self.rtts.windows(2).map(|w| w[0].abs_diff(w[1])).sum();
        total / (self.rtts.len() as u32 - 1)
    }

    /// One number to rank paths by: median RTT plus twice the jitter plus 10 ms per percent
    /// of loss (a lost game packet costs more than a few milliseconds). `None` if nothing
    /// answered.
    pub fn score(&self) -> Option<Duration> {
        let m = self.median()?;
        Some(m + 2 * self.jitter() + Duration::from_millis((self.loss_percent() * 10.0) as u64))
    }
}

/// Formats an optional RTT as milliseconds, or `-`.
pub fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2}", d.as_secs_f64() * 1000.0),
        None => "-".into(),
    }
}

/// Sends `count` small datagrams to `target` every `interval` and times the echoes. Answers
/// arriving later than `timeout` after the last probe count as lost.
pub async fn echo(
    target: SocketAddr,
    count: u32,
    interval: Duration,
    timeout: Duration,
) -> std::io::Result<Probe> {
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    crate::connreset::disable_connreset(&socket)?;
    socket.connect(target).await?;
    Ok(echo_on(&socket, 0, count, interval, timeout).await)
}

/// The nonce of echo probe `index` of call `round`: the round in the high half (modulo 2³²)
/// tells this call's answers from late ones of earlier calls.
fn echo_nonce(round: u64, index: u32) -> u64 {
    ((round & 0xffff_ffff) << 32) | u64::from(index)
}

/// [`echo`] on an already connected `socket` (a pinger keeps one socket for a whole session,
/// so a proxy in front of it sees one flow, not one per probe). `round` tells this call's
/// answers from late ones of earlier calls.
pub async fn echo_on(
    socket: &UdpSocket,
    round: u64,
    count: u32,
    interval: Duration,
    timeout: Duration,
) -> Probe {
    let start = Instant::now();
    let mut sent_at = Vec::with_capacity(count as usize);
    let mut answered = vec![None; count as usize];
    let mut buf = [0u8; 64];
    let mut next = start;
    let mut deadline = start + timeout;
    loop {
        let sent = sent_at.len() as u32;
        let wake = if sent < count { next } else { deadline };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if sent >= count {
                    break;
                }
                let pkt = query::request(QueryKind::Echo, echo_nonce(round, sent));
                // A refused or unreachable send is a lost probe, not an error.
                let _ = socket.send(&pkt).await;
                sent_at.push(Instant::now());
                next += interval;
                deadline = Instant::now() + timeout;
            }
            r = socket.recv(&mut buf) => {
                let n = match r {
                    Ok(n) => n,
                    // The target's port is closed: its probes are lost, no more.
                    Err(e) if crate::connreset::is_icmp_report(&e) => continue,
                    // The socket is unusable: what was measured so far stands.
                    Err(_) => break,
                };
                let Some(nonce) = query::echo_nonce(&buf[..n]) else { continue };
                if nonce >> 32 != round & 0xffff_ffff {
                    continue;
                }
                let i = (nonce & 0xffff_ffff) as usize;
                if i < sent_at.len() && answered[i].is_none() {
                    answered[i] = Some(sent_at[i].elapsed());
                    if sent_at.len() as u32 == count && answered.iter().all(Option::is_some) {
                        break;
                    }
                }
            }
        }
    }
    Probe {
        sent: sent_at.len() as u32,
        rtts: answered.into_iter().flatten().collect(),
    }
}

/// QUIC client settings for probes: trust only the mesh CA, give up quickly.
pub fn quic_probe_config(ca_pem: &str) -> Result<quinn::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no certificate in the mesh CA PEM".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(2)).expect("small timeout"),
    ));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Times `count` QUIC handshakes with a node's control endpoint, `interval` apart. Each sample
/// is quinn's RTT estimate after the handshake (network time, not crypto time); a handshake
/// that fails or takes longer than `timeout` is a lost probe. No ticket is presented: the
/// connection is closed right after the handshake.
pub async fn quic(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    control: SocketAddr,
    server_name: &str,
    count: u32,
    interval: Duration,
    timeout: Duration,
) -> Probe {
    let mut probe = Probe::default();
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        probe.sent += 1;
        let started = Instant::now();
        let Ok(connecting) = endpoint.connect_with(config.clone(), control, server_name) else {
            continue;
        };
        if let Ok(Ok(conn)) = tokio::time::timeout(timeout, connecting).await {
            probe.rtts.push(conn.rtt().min(started.elapsed()));
            conn.close(0u32.into(), b"probe");
        }
    }
    probe
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sent: u32, ms: &[u64]) -> Probe {
        Probe {
            sent,
            rtts: ms.iter().map(|m| Duration::from_millis(*m)).collect(),
        }
    }

    #[test]
    fn statistics() {
        let x = p(5, &[10, 14, 10, 12]);
        assert_eq!(x.loss_percent(), 20.0);
        assert_eq!(x.median(), Some(Duration::from_millis(12)));
        assert_eq!(x.quantile(0.0), Some(Duration::from_millis(10)));
        assert_eq!(x.quantile(1.0), Some(Duration::from_millis(14)));
        // |10-14| + |14-10| + |10-12| = 10 over 3 differences.
        assert_eq!(x.jitter().as_micros(), 3333);
        assert_eq!(p(0, &[]).loss_percent(), 0.0);
        assert_eq!(p(3, &[]).median(), None);
        assert_eq!(p(3, &[]).score(), None);
        // Loss weighs in: the same RTT with 20 % loss ranks worse.
        assert!(p(5, &[20; 4]).score() > p(4, &[20; 4]).score());
    }

    #[tokio::test]
    async fn echo_probe_times_a_real_echo_and_sees_silence() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let _ = server.send_to(&buf[..n], from).await;
            }
        });
        let r = echo(addr, 5, Duration::from_millis(5), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!((r.sent, r.answered()), (5, 5));
        assert!(r.median().unwrap() < Duration::from_secs(2));

        // Nobody answers on a port that was just closed.
        let dead = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let r = echo(
            dead,
            3,
            Duration::from_millis(5),
            Duration::from_millis(200),
        )
        .await
        .unwrap();
        assert_eq!((r.sent, r.answered()), (3, 0));
        assert_eq!(r.loss_percent(), 100.0);
    }
}
