//! Echo probe: numbered test packets to a UDP echo server, directly or through the session's
//! local port, giving round-trip time, loss and jitter once a second. Only meaningful against a
//! server that echoes (the local demo game does); a real game server does not, so for real
//! games the dashboard shows the node's RTT from the session's own pings instead.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use ts_rs::TS;

const MAGIC: &[u8; 8] = b"PLGPROBE";
/// Packets per second.
const RATE: u64 = 20;
/// Replies later than this count as lost.
const LATE: Duration = Duration::from_secs(1);
const RING: usize = 64;

/// One second of probing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, TS)]
pub struct Sample {
    /// Mean round-trip time of the replies, ms.
    pub rtt_ms: f64,
    /// Share of the probes not answered within a second, %.
    pub loss_pct: f64,
    /// Mean difference between consecutive round-trip times (RFC 3550 style), ms.
    pub jitter_ms: f64,
    /// Probes judged in this window.
    pub probes: u32,
}

/// Running totals from which one [`Sample`] is cut per window.
#[derive(Debug, Default)]
pub struct Window {
    judged: u32,
    lost: u32,
    rtt_sum: f64,
    replies: u32,
    jitter_sum: f64,
    jitter_n: u32,
    last_rtt: Option<f64>,
}

impl Window {
    /// A reply came back after `rtt_ms`.
    pub fn reply(&mut self, rtt_ms: f64) {
        self.judged += 1;
        self.replies += 1;
        self.rtt_sum += rtt_ms;
        if let Some(prev) = self.last_rtt {
            self.jitter_sum += (rtt_ms - prev).abs();
            self.jitter_n += 1;
        }
        self.last_rtt = Some(rtt_ms);
    }

    /// A probe went unanswered for [`LATE`].
    pub fn lost(&mut self) {
        self.judged += 1;
        self.lost += 1;
    }

    /// The window's figures (`None` if nothing was judged); starts a new window.
    pub fn cut(&mut self) -> Option<Sample> {
        if self.judged == 0 {
            return None;
        }
        let s = Sample {
            rtt_ms: if self.replies > 0 {
                self.rtt_sum / f64::from(self.replies)
            } else {
                0.0
            },
            loss_pct: 100.0 * f64::from(self.lost) / f64::from(self.judged),
            jitter_ms: if self.jitter_n > 0 {
                self.jitter_sum / f64::from(self.jitter_n)
            } else {
                0.0
            },
            probes: self.judged,
        };
        *self = Window {
            last_rtt: self.last_rtt,
            ..Window::default()
        };
        Some(s)
    }
}

/// A running probe; stops when dropped.
#[derive(Debug)]
pub struct EchoProbe {
    /// The latest one-second sample.
    pub samples: watch::Receiver<Option<Sample>>,
    task: JoinHandle<()>,
}

impl Drop for EchoProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoProbe {
    /// Starts probing `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<EchoProbe> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        sock.connect(target).await?;
        let (tx, samples) = watch::channel(None);
        let task = tokio::spawn(run(sock, tx));
        Ok(EchoProbe { samples, task })
    }
}

async fn run(sock: UdpSocket, tx: watch::Sender<Option<Sample>>) {
    // Send time of probe `seq` at `seq % RING`; `None` once answered or judged lost.
    let mut sent: [Option<(u64, Instant)>; RING] = [None; RING];
    let mut seq = 0u64;
    let mut window = Window::default();
    let mut send = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let mut cut = tokio::time::interval(Duration::from_secs(1));
    cut.tick().await;
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            _ = send.tick() => {
                let slot = &mut sent[seq as usize % RING];
                if slot.is_some() {
                    window.lost();
                }
                *slot = Some((seq, Instant::now()));
                let mut pkt = [0u8; 48];
                pkt[..8].copy_from_slice(MAGIC);
                pkt[8..16].copy_from_slice(&seq.to_be_bytes());
                // Nothing to do about a failed send but count it as lost later.
                let _ = sock.send(&pkt).await;
                seq += 1;
            }
            r = sock.recv(&mut buf) => {
                let Ok(n) = r else { continue };
                if n < 16 || &buf[..8] != MAGIC {
                    continue;
                }
                let got = u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes"));
                let slot = &mut sent[got as usize % RING];
                if let Some((s, at)) = *slot && s == got {
                    window.reply(at.elapsed().as_secs_f64() * 1000.0);
                    *slot = None;
                }
            }
            _ = cut.tick() => {
                let now = Instant::now();
                for slot in sent.iter_mut() {
                    if let Some((_, at)) = *slot && now - at > LATE {
                        window.lost();
                        *slot = None;
                    }
                }
                if tx.send(window.cut()).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_figures() {
        let mut w = Window::default();
        assert_eq!(w.cut(), None);
        for rtt in [10.0, 12.0, 11.0] {
            w.reply(rtt);
        }
        w.lost();
        let s = w.cut().unwrap();
        assert_eq!(s.probes, 4);
        assert!((s.rtt_ms - 11.0).abs() < 1e-9);
        assert!((s.loss_pct - 25.0).abs() < 1e-9);
        assert!((s.jitter_ms - 1.5).abs() < 1e-9);
        // Jitter continues across windows from the last RTT.
        w.reply(15.0);
        assert!((w.cut().unwrap().jitter_ms - 4.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn probes_an_echo_server() {
        let echo = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], from).await;
            }
        });
        let mut p = EchoProbe::start(addr).await.unwrap();
        let s = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                p.samples.changed().await.unwrap();
                if let Some(s) = *p.samples.borrow()
                    && s.probes >= 5
                {
                    return s;
                }
            }
        })
        .await
        .expect("a sample within 10 s");
        assert_eq!(s.loss_pct, 0.0);
        assert!(s.rtt_ms > 0.0);
    }
}
