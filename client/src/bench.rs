//! `plg bench`: game-like UDP traffic (a steady packet rate, small packets of varying size)
//! sent to an address that echoes it, timed packet by packet. Run once directly against the
//! game server and once through the session to compare.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::probe::{Probe, ms};

/// The traffic shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traffic {
    /// Packets per second.
    pub rate: u32,
    /// Smallest payload in bytes (at least 8).
    pub min_size: usize,
    /// Largest payload in bytes.
    pub max_size: usize,
    /// How long to send.
    pub duration: Duration,
}

impl Default for Traffic {
    /// 64 packets/s of 100–300 bytes for 5 s: a typical shooter's client tick.
    fn default() -> Self {
        Traffic {
            rate: 64,
            min_size: 100,
            max_size: 300,
            duration: Duration::from_secs(5),
        }
    }
}

/// What one run saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Per-packet RTTs and loss.
    pub probe: Probe,
    /// Echoes whose bytes differ from what was sent.
    pub corrupted: u32,
    /// Payload bytes sent.
    pub bytes: u64,
}

/// Answers arriving this long after the last packet count as lost.
const LINGER: Duration = Duration::from_secs(1);
const MAGIC: &[u8; 4] = b"PLGb";

/// Payload of packet `seq` (deterministic, so echoes can be checked byte by byte).
fn payload(seq: u32, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend((8..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
}

/// Size of packet `seq`: spread over `min..=max` without a random source.
fn size(spec: &Traffic, seq: u32) -> usize {
    let min = spec.min_size.max(8);
    let span = spec.max_size.max(min) - min + 1;
    min + (seq as usize).wrapping_mul(7919) % span
}

/// Sends `spec` to `target` and times every echo.
pub async fn run(target: SocketAddr, spec: Traffic) -> std::io::Result<Report> {
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    crate::connreset::disable_connreset(&socket)?;
    socket.connect(target).await?;
    let total = (spec.rate as u64 * spec.duration.as_millis() as u64 / 1000).max(1) as u32;
    let interval = Duration::from_secs(1) / spec.rate.max(1);
    let mut sent_at: Vec<Instant> = Vec::with_capacity(total as usize);
    let mut rtt: Vec<Option<Duration>> = vec![None; total as usize];
    let mut report = Report::default();
    let (mut out, mut expect) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    let mut deadline = start + spec.duration + LINGER;
    loop {
        let n = sent_at.len() as u32;
        let next = if n < total {
            start + interval * n
        } else {
            deadline
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                if n >= total {
                    break;
                }
                let len = size(&spec, n);
                payload(n, len, &mut out);
                // A send error (e.g. ICMP unreachable reported late) is a lost packet.
                let _ = socket.send(&out).await;
                sent_at.push(Instant::now());
                report.bytes += len as u64;
                if n + 1 == total {
                    deadline = Instant::now() + LINGER;
                }
            }
            r = socket.recv(&mut buf) => {
                let len = match r {
                    Ok(len) => len,
                    // The target's port is closed: its packets are lost, no more.
                    Err(e) if crate::connreset::is_icmp_report(&e) => continue,
                    Err(e) => return Err(e),
                };
                if len < 8 || &buf[..4] != MAGIC {
                    continue;
                }
                let seq = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
                let i = seq as usize;
                if i >= sent_at.len() || rtt[i].is_some() {
                    continue;
                }
                payload(seq, size(&spec, seq), &mut expect);
                if buf[..len] != expect[..] {
                    report.corrupted += 1;
                    continue;
                }
                rtt[i] = Some(sent_at[i].elapsed());
                if sent_at.len() as u32 == total && rtt.iter().all(Option::is_some) {
                    break;
                }
            }
        }
    }
    report.probe = Probe {
        sent: sent_at.len() as u32,
        rtts: rtt.into_iter().flatten().collect(),
    };
    Ok(report)
}

/// The comparison table: one row per run.
pub fn table(rows: &[(&str, &Report)]) -> String {
    let mut s = format!(
        "{:<26} {:>6} {:>6} {:>7} {:>9} {:>9} {:>10}\n",
        "path", "sent", "back", "loss", "p50 ms", "p99 ms", "jitter ms"
    );
    for (name, r) in rows {
        let p = &r.probe;
        s.push_str(&format!(
            "{:<26} {:>6} {:>6} {:>6.2}% {:>9} {:>9} {:>10}\n",
            name,
            p.sent,
            p.answered(),
            p.loss_percent(),
            ms(p.quantile(0.5)),
            ms(p.quantile(0.99)),
            ms((p.rtts.len() > 1).then(|| p.jitter()))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_stay_in_range_and_vary() {
        let spec = Traffic::default();
        let sizes: Vec<usize> = (0..200).map(|i| size(&spec, i)).collect();
        assert!(sizes.iter().all(|s| (100..=300).contains(s)));
        assert!(sizes.iter().min() < Some(&130) && sizes.iter().max() > Some(&270));
    }

    #[tokio::test]
    async fn run_against_an_echo_and_a_corrupting_echo() {
        for corrupt in [false, true] {
            let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = server.local_addr().unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = server.recv_from(&mut buf).await {
                    if corrupt {
                        buf[n - 1] ^= 0xff;
                    }
                    let _ = server.send_to(&buf[..n], from).await;
                }
            });
            let spec = Traffic {
                rate: 200,
                duration: Duration::from_millis(250),
                ..Traffic::default()
            };
            let r = run(addr, spec).await.unwrap();
            assert_eq!(r.probe.sent, 50);
            if corrupt {
                assert_eq!((r.probe.answered(), r.corrupted), (0, 50));
            } else {
                assert_eq!((r.probe.answered(), r.corrupted), (50, 0));
            }
            let t = table(&[("direct", &r)]);
            assert!(t.lines().nth(1).unwrap().starts_with("direct"), "{t}");
        }
    }
}
