//! Windows capture with WinDivert: outbound UDP to the game's destinations is diverted to us
//! (the original packet never leaves), and replies are injected as inbound packets from the
//! server's address on the interface the game's packet was leaving by.
//!
//! Two handles, one thread each (several threads on one handle reorder packets): the capture
//! handle's thread receives in batches of up to 255 packets, the send-only handle's thread
//! injects whatever replies are queued, also in batches. Both are bridged to the async data
//! path with channels. Buffers travel, they are not copied or allocated per packet: a batch is
//! handed over in the buffer it was received into and comes back empty once read (a fixed
//! pool of [`BATCHES`], which also bounds what waits in memory), and a reply's buffer comes back
//! from the send thread once injected. Dropping the capture shuts the capture handle down and
//! closes both handles, which removes the filter; Windows does the same if the process dies.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;

use ::windivert::prelude::*;
use tokio::sync::mpsc;

use super::packet::{CaptureCounters, build_udp};
use super::targets::Targets;
use super::{Capture, Captured};

/// Packets per WinDivert batch (the driver's maximum).
const BATCH: u8 = WinDivert::<()>::MAX_BATCH;
/// Receive buffer for one batch of MTU-sized packets.
const RECV_BUFFER: usize = BATCH as usize * 1600;
/// Capture handle priority (0 = default; higher runs first).
const PRIORITY: i16 = 0;
/// Receive buffers (of [`RECV_BUFFER`] bytes each): when all wait to be read, the receive
/// thread waits and the driver's own queue fills.
const BATCHES: usize = 8;
/// Queued replies before the sender waits.
const QUEUE: usize = 1024;
/// Room for IPv6 and UDP headers in a reply buffer.
const HEADERS: usize = 48;
/// Games whose interface we remember (a game uses a handful of sockets).
const MAX_GAMES: usize = 4096;

type Packet = WinDivertPacket<'static, NetworkLayer>;
type Address = WinDivertAddress<NetworkLayer>;

/// One receive's worth of diverted packets, in the buffer they were received into.
struct Batch {
    buf: Vec<u8>,
    packets: Vec<(Address, Range<usize>)>,
}

/// Why the WinDivert backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum WinDivertCaptureError {
    /// Nothing to capture.
    #[error("the session allows no destinations, so there is nothing to capture")]
    NoDestinations,
    /// The driver refused to open a handle.
    #[error(
        "cannot open WinDivert with filter {filter:?}: {source} (run as administrator; \
         WinDivert64.sys must sit next to the executable)"
    )]
    Open {
        /// The filter.
        filter: String,
        /// Cause.
        source: WinDivertError,
    },
    /// A worker thread could not be started.
    #[error("cannot start the WinDivert thread: {0}")]
    Thread(io::Error),
}

/// Captures game UDP with WinDivert (see the module docs).
pub struct WinDivertCapture {
    targets: Targets,
    filter: String,
    counters: Arc<CaptureCounters>,
    captured: mpsc::Receiver<Batch>,
    /// The batch being read and the index of its next packet.
    reading: Option<(Batch, usize)>,
    /// Read batches going back to the receive thread.
    read: Option<std_mpsc::Sender<Batch>>,
    replies: Option<mpsc::Sender<Packet>>,
    /// Reply buffers back from the send thread.
    reply_buffers: std_mpsc::Receiver<Vec<u8>>,
    /// The address of each game's last packet, turned around to inject its replies.
    interfaces: HashMap<SocketAddr, Address>,
    shutdown: ShutdownHandle,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for WinDivertCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WinDivertCapture")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl WinDivertCapture {
    /// Opens the capture and injection handles and starts their threads.
    pub fn open(targets: Targets) -> Result<WinDivertCapture, WinDivertCaptureError> {
        if targets.is_empty() {
            return Err(WinDivertCaptureError::NoDestinations);
        }
        let filter = targets.windivert_filter();
        let open_err = |filter: &str, source| WinDivertCaptureError::Open {
            filter: filter.to_owned(),
            source,
        };
        let capture = WinDivert::network(&filter, PRIORITY, WinDivertFlags::new().set_recv_only())
            .map_err(|e| open_err(&filter, e))?;
        let inject = WinDivert::network("false", PRIORITY, WinDivertFlags::new().set_send_only())
            .map_err(|e| open_err("false", e))?;
        let shutdown = capture.shutdown_handle();
        let (captured_tx, captured) = mpsc::channel(BATCHES);
        let (read, read_rx) = std_mpsc::channel();
        let (replies, replies_rx) = mpsc::channel(QUEUE);
        let (reply_buffers_tx, reply_buffers) = std_mpsc::channel();
        let recv_thread = std::thread::Builder::new()
            .name("plg-windivert-recv".into())
            .spawn(move || recv_loop(capture, captured_tx, read_rx))
            .map_err(WinDivertCaptureError::Thread)?;
        let send_thread = std::thread::Builder::new()
            .name("plg-windivert-send".into())
            .spawn(move || send_loop(inject, replies_rx, reply_buffers_tx));
        let send_thread = match send_thread {
            Ok(t) => t,
            Err(e) => {
                let _ = shutdown.shutdown();
                return Err(WinDivertCaptureError::Thread(e));
            }
        };
        tracing::info!(filter = %filter, "WinDivert capture up");
        Ok(WinDivertCapture {
            targets,
            filter,
            counters: Arc::new(CaptureCounters::default()),
            captured,
            reading: None,
            read: Some(read),
            replies: Some(replies),
            reply_buffers,
            interfaces: HashMap::new(),
            shutdown,
            threads: vec![recv_thread, send_thread],
        })
    }

    /// The WinDivert filter in use.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// What was captured and dropped.
    pub fn counters(&self) -> Arc<CaptureCounters> {
        self.counters.clone()
    }
}

/// Receives batches on the capture handle until it is shut down or the capture is dropped.
fn recv_loop(
    handle: WinDivert<NetworkLayer>,
    tx: mpsc::Sender<Batch>,
    read: std_mpsc::Receiver<Batch>,
) {
    let mut allocated = 0;
    // A batch that came back from the driver empty or with an error, to use again.
    let mut spare = None;
    loop {
        // A read batch if one is back, a new one while the pool is not full, else wait.
        let next = spare.take().map_or_else(|| read.try_recv(), Ok);
        let mut batch = match next {
            Ok(b) => b,
            Err(std_mpsc::TryRecvError::Empty) if allocated < BATCHES => {
                allocated += 1;
                Batch {
                    buf: vec![0u8; RECV_BUFFER],
                    packets: Vec::with_capacity(BATCH as usize),
                }
            }
            Err(_) => match read.recv() {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        batch.packets.clear();
        let base = batch.buf.as_ptr().addr();
        match handle.recv_ex(&mut batch.buf, BATCH) {
            Ok(packets) => {
                // The packets are slices of `buf`: keep where each one lies.
                for p in packets {
                    let start = p.data.as_ptr().addr().wrapping_sub(base);
                    batch
                        .packets
                        .push((p.address, start..start.saturating_add(p.data.len())));
                }
                if batch.packets.is_empty() {
                    spare = Some(batch);
                } else if tx.blocking_send(batch).is_err() {
                    return;
                }
            }
            Err(WinDivertError::Recv(WinDivertRecvError::NoData)) => return,
            Err(e) => {
                if tx.is_closed() {
                    return;
                }
                spare = Some(batch);
                tracing::warn!(error = %e, "WinDivert receive failed");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Injects queued replies in batches until the capture is dropped, handing their buffers back.
fn send_loop(
    handle: WinDivert<NetworkLayer>,
    mut rx: mpsc::Receiver<Packet>,
    buffers: std_mpsc::Sender<Vec<u8>>,
) {
    let mut batch = Vec::with_capacity(BATCH as usize);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH as usize {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if let Err(e) = handle.send_ex(&batch) {
            tracing::debug!(error = %e, packets = batch.len(), "WinDivert inject failed");
        }
        for p in batch.drain(..) {
            if let Cow::Owned(buf) = p.data {
                let _ = buffers.send(buf);
            }
        }
    }
}

impl Capture for WinDivertCapture {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<Captured> {
        loop {
            let Some((batch, next)) = &mut self.reading else {
                // The only await; a batch, once received, is kept in `reading`.
                match self.captured.recv().await {
                    Some(batch) => {
                        self.reading = Some((batch, 0));
                        continue;
                    }
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "the WinDivert capture thread stopped",
                        ));
                    }
                }
            };
            let Some((address, range)) = batch.packets.get(*next) else {
                // All read: the buffer goes back to the receive thread.
                if let Some((batch, _)) = self.reading.take()
                    && let Some(read) = &self.read
                {
                    let _ = read.send(batch);
                }
                continue;
            };
            *next += 1;
            let Some(packet) = batch.buf.get(range.clone()) else {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(d) = self.counters.classify(packet, &self.targets) else {
                continue;
            };
            let Some(dst) = buf.get_mut(..d.payload.len()) else {
                self.counters.oversize.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            dst.copy_from_slice(d.payload);
            let captured = Captured {
                game: d.src,
                server: d.dst,
                len: d.payload.len(),
            };
            if self.interfaces.len() >= MAX_GAMES && !self.interfaces.contains_key(&d.src) {
                self.interfaces.clear();
            }
            self.interfaces.insert(d.src, address.clone());
            return Ok(captured);
        }
    }

    async fn send(
        &mut self,
        game: SocketAddr,
        server: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        let Some(mut address) = self.interfaces.get(&game).cloned() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no packet from {game} was captured: unknown interface"),
            ));
        };
        let mut data = self
            .reply_buffers
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HEADERS + payload.len()));
        build_udp(server, game, payload, &mut data)?;
        address.set_outbound(false);
        address.set_impostor(false);
        let mut packet = WinDivertPacket {
            address,
            data: Cow::Owned(data),
        };
        packet
            .recalculate_checksums(Default::default())
            .map_err(io::Error::other)?;
        let replies = self
            .replies
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        replies.send(packet).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the WinDivert send thread stopped",
            )
        })?;
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn describe(&self) -> String {
        let dests: Vec<String> = self
            .targets
            .destinations()
            .iter()
            .map(|d| d.to_string())
            .collect();
        format!("windivert → {}", dests.join(", "))
    }
}

impl Drop for WinDivertCapture {
    fn drop(&mut self) {
        // Stops the blocked receive; closing the channels wakes the receive thread if it waits
        // for a buffer or a free slot, and stops the send thread. Joining (a short block of the
        // runtime's thread: both return at once) makes sure both handles, and so the filter,
        // are gone when drop returns, so no game traffic stays diverted to a dead capture.
        let _ = self.shutdown.shutdown();
        self.replies = None;
        self.read = None;
        self.captured.close();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        tracing::info!("WinDivert capture down");
    }
}
