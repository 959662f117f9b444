//! Game-like traffic: a fixed tick rate, packets of random size, each stamped with a sequence
//! number and send time so the echo tells us loss and round-trip time.

use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Shape of the traffic.
#[derive(Debug, Clone, Copy)]
pub struct TrafficSpec {
    /// Packets per second (each way, since the server echoes).
    pub rate: u32,
    /// Smallest packet.
    pub min_size: usize,
    /// Largest packet.
    pub max_size: usize,
    /// How long to send.
    pub duration: Duration,
    /// Seed for packet sizes.
    pub seed: u64,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            rate: 64,
            min_size: 100,
            max_size: 300,
            duration: Duration::from_secs(4),
            seed: 1,
        }
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct TrafficReport {
    /// Packets sent.
    pub sent: u64,
    /// Echoes received (each sequence counted once).
    pub received: u64,
    /// Echoes whose payload differed from what was sent.
    pub corrupted: u64,
    /// Round-trip times in microseconds.
    pub rtt_us: Histogram<u64>,
    /// Bytes sent.
    pub bytes: u64,
}

impl TrafficReport {
    /// Lost packets in percent.
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * (self.sent - self.received) as f64 / self.sent as f64
        }
    }

    /// RTT quantile in milliseconds.
    pub fn rtt_ms(&self, q: f64) -> f64 {
        self.rtt_us.value_at_quantile(q) as f64 / 1000.0
    }
}

fn fill(buf: &mut [u8], seq: u64) {
    // Deterministic body so a corrupted echo is detectable.
    for (i, b) in buf.iter_mut().enumerate().skip(8) {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
}

/// Sends `spec` traffic to `target` and collects the echoes, waiting up to 1 s after the last
/// send for stragglers.
pub async fn run(target: SocketAddr, spec: TrafficSpec) -> std::io::Result<TrafficReport> {
    let socket = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    socket.connect(target).await?;
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let interval = Duration::from_secs_f64(1.0 / spec.rate.max(1) as f64);
    let total = (spec.duration.as_secs_f64() * spec.rate as f64).round() as u64;
    let start = Instant::now();
    let mut sent_at: Vec<Option<Instant>> = vec![None; total as usize];
    let mut sizes: Vec<usize> = vec![0; total as usize];
    let mut seen = vec![false; total as usize];
    let mut report = TrafficReport {
        sent: 0,
        received: 0,
        corrupted: 0,
        rtt_us: Histogram::new(3).unwrap(),
        bytes: 0,
    };
    let mut tx = vec![0u8; spec.max_size.max(8)];
    let mut rx = vec![0u8; 65536];
    let mut next = 0u64;
    let deadline_after_last = Duration::from_secs(1);
    loop {
        let next_send = start + interval.mul_f64(next as f64);
        let done_at = start + interval.mul_f64(total as f64) + deadline_after_last;
        if next >= total && (report.received == total || Instant::now() >= done_at) {
            break;
        }
        let wake = if next < total { next_send } else { done_at };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if next < total {
                    let size = rng.usize(spec.min_size.max(8)..=spec.max_size.max(8));
                    tx[..8].copy_from_slice(&next.to_be_bytes());
                    fill(&mut tx[..size], next);
                    socket.send(&tx[..size]).await?;
                    sent_at[next as usize] = Some(Instant::now());
                    sizes[next as usize] = size;
                    report.sent += 1;
                    report.bytes += size as u64;
                    next += 1;
                }
            }
            r = socket.recv(&mut rx) => {
                let Ok(n) = r else { continue };
                if n < 8 { report.corrupted += 1; continue; }
                let seq = u64::from_be_bytes(rx[..8].try_into().unwrap());
                let Some(Some(t)) = sent_at.get(seq as usize) else { report.corrupted += 1; continue };
                if seen[seq as usize] { continue; }
                let mut expect = vec![0u8; sizes[seq as usize]];
                expect[..8].copy_from_slice(&seq.to_be_bytes());
                fill(&mut expect, seq);
                if rx[..n] != expect[..] { report.corrupted += 1; continue; }
                seen[seq as usize] = true;
                report.received += 1;
                let _ = report.rtt_us.record(t.elapsed().as_micros().max(1) as u64);
            }
        }
    }
    Ok(report)
}
