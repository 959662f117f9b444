//! The capture helper on Linux: a unix socket, `SO_PEERCRED` on every connection, a TUN
//! device per session whose descriptor goes to the client with `SCM_RIGHTS`.
//!
//! The helper needs `CAP_NET_ADMIN` only (creating the device, adding routes and rules), so it
//! runs as a systemd service with just that capability ([`unit_file`]). It closes its own copy
//! of the device right after passing it: the device (non-persistent) and its routes then live
//! exactly as long as the client's descriptor. The policy rules are the helper's: it deletes
//! them when the client's connection closes — a normal exit, a crash or SIGKILL alike, since
//! the kernel closes the socket of a dead process.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use plg_proto::ticket::Destination;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tun_rs::{AsyncDevice, DeviceBuilder, SyncDevice};

use super::{
    CaptureReply, CaptureRequest, Gate, Granted, MAX_FRAME, Refusal, Slots, decode_keys,
    encode_frame, frame_len, parse_request, uid_allowed,
};
use crate::billing::BillingClient;
use crate::capture::tun::{self, DEFAULT_PRIORITY, DEFAULT_TABLE, TunCapture};
use crate::capture::{Capture, Captured};

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two key refreshes from billing (a flood of forged key ids must not
/// become a flood of requests to billing).
const KEY_REFRESH_EVERY: Duration = Duration::from_secs(10);
/// Device name prefix: `plgc0`, `plgc1`, … (not `plg0`, which `--mode tun` uses).
pub const DEVICE_PREFIX: &str = "plgc";
/// Where the systemd unit goes (under `--root`).
pub const UNIT_PATH: &str = "etc/systemd/system/plg-capture.service";

/// How the helper runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Socket path.
    pub socket: PathBuf,
    /// The user served (besides root).
    pub uid: u32,
    /// Billing base URL: its ticket keys, and its address is never captured.
    pub billing: String,
    /// Capture private ranges too (labs).
    pub allow_private: bool,
}

/// Why the helper could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Socket path problems.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Billing's keys could not be had.
    #[error("cannot fetch billing's ticket keys from {url}: {detail}")]
    Keys {
        /// Billing.
        url: String,
        /// Cause.
        detail: String,
    },
}

struct Keys {
    gate: Gate,
    billing: BillingClient,
    fetched: tokio::time::Instant,
}

impl Keys {
    async fn refresh(&mut self) -> Result<(), String> {
        let mesh = self.billing.mesh().await.map_err(|e| e.to_string())?;
        self.gate.set_keys(decode_keys(&mesh.ticket_keys)?);
        self.fetched = tokio::time::Instant::now();
        Ok(())
    }
}

/// The addresses `url`'s host resolves to.
async fn resolve(url: &str) -> Vec<IpAddr> {
    let Some(host) = url.split("//").nth(1).and_then(|h| h.split('/').next()) else {
        return Vec::new();
    };
    let host = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:443")
    };
    tokio::net::lookup_host(host)
        .await
        .map(|a| a.map(|a| a.ip()).collect())
        .unwrap_or_default()
}

/// Binds the socket (mode 0666: every local user may connect, `SO_PEERCRED` decides) and
/// fetches billing's keys. Returns the listener to pass to [`serve`].
pub async fn bind(config: &ServerConfig) -> Result<UnixListener, ServeError> {
    let listen_err = |source| ServeError::Listen {
        path: config.socket.clone(),
        source,
    };
    if let Some(dir) = config.socket.parent() {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    match std::fs::remove_file(&config.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_err(e)),
    }
    let listener = UnixListener::bind(&config.socket).map_err(listen_err)?;
    std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o666))
        .map_err(listen_err)?;
    Ok(listener)
}

/// Serves until `shutdown` resolves. Each connection: peer uid checked, one request, one
/// reply (with the device descriptor), then the rules stay until the client hangs up.
pub async fn serve(
    listener: UnixListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let billing = BillingClient::new(&config.billing);
    let mut gate = Gate::new(Vec::new(), config.allow_private);
    gate.own = resolve(&config.billing).await;
    let mut keys = Keys {
        gate,
        billing,
        fetched: tokio::time::Instant::now(),
    };
    keys.refresh().await.map_err(|detail| ServeError::Keys {
        url: config.billing.clone(),
        detail,
    })?;
    // Tables of a previous helper's sessions (killed before it could delete its rules).
    for i in 0..super::MAX_SESSIONS {
        tun::purge_rules(table(i));
    }
    let keys = Arc::new(tokio::sync::Mutex::new(keys));
    let slots = Arc::new(Slots::default());
    tracing::info!(socket = %config.socket.display(), uid = config.uid, "capture helper listening");
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (keys, slots, serves) = (keys.clone(), slots.clone(), config.uid);
        tokio::spawn(async move {
            if let Err(e) = handle(stream, serves, &keys, &slots).await {
                tracing::debug!(error = %e, "capture connection ended");
            }
        });
    }
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

fn table(slot: usize) -> u32 {
    DEFAULT_TABLE + 1 + slot as u32
}

async fn handle(
    mut stream: UnixStream,
    serves: u32,
    keys: &tokio::sync::Mutex<Keys>,
    slots: &Slots,
) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let (uid, pid) = (cred.uid(), cred.pid().unwrap_or(0));
    if !uid_allowed(uid, serves) {
        tracing::warn!(uid, pid, "refused a capture request from another user");
        let refusal = Refusal::NotAllowed { uid, serves };
        return stream.write_all(&encode_frame(&refusal.reply())).await;
    }
    let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Err(Refusal::Malformed("no request within 5 s".into())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(req)) => grant(&req, keys, slots).await,
    };
    let (granted, routed, device, _slot) = match outcome {
        Ok(ok) => ok,
        Err(refusal) => {
            tracing::warn!(uid, pid, code = ?refusal.code(), reason = %refusal, "refused a capture request");
            return stream.write_all(&encode_frame(&refusal.reply())).await;
        }
    };
    let reply = encode_frame(&CaptureReply::Ok(granted.clone()));
    send_with_fd(&stream, &reply, device.as_raw_fd()).await?;
    // Ours closed: the client's copy now decides the device's life.
    drop(device);
    tracing::info!(uid, pid, device = %granted.device, routes = granted.routes.len(), "capturing for a client");
    // Anything the client sends after its request is ignored; EOF or an error means it is gone.
    let mut sink = [0u8; 256];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(routed);
    tracing::info!(uid, pid, device = %granted.device, "client gone: rules deleted");
    Ok(())
}

async fn read_request(stream: &mut UnixStream) -> Result<CaptureRequest, Refusal> {
    let io = |e: io::Error| Refusal::Malformed(format!("reading the request: {e}"));
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.map_err(io)?;
    let mut body = vec![0; frame_len(header)?];
    stream.read_exact(&mut body).await.map_err(io)?;
    parse_request(&body)
}

async fn grant<'s>(
    req: &CaptureRequest,
    keys: &tokio::sync::Mutex<Keys>,
    slots: &'s Slots,
) -> Result<(Granted, tun::Routed, SyncDevice, super::Slot<'s>), Refusal> {
    let targets = {
        let mut keys = keys.lock().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match keys.gate.check(req, now) {
            Err(Refusal::Ticket(plg_proto::ticket::TicketError::UnknownKey(id)))
                if keys.fetched.elapsed() >= KEY_REFRESH_EVERY =>
            {
                // Billing may have rotated its key: one refresh, then the verdict stands.
                if let Err(e) = keys.refresh().await {
                    tracing::warn!(error = %e, key_id = id, "refreshing billing's ticket keys");
                }
                keys.gate.check(req, now)?
            }
            other => other?,
        }
    };
    let slot = slots.take()?;
    let name = format!("{DEVICE_PREFIX}{}", slot.index);
    let table = table(slot.index);
    let setup = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || -> Result<_, Refusal> {
            let device = DeviceBuilder::new()
                .name(&name)
                .mtu(1500)
                .enable(true)
                .build_sync()
                .map_err(|e| Refusal::Setup(format!("creating TUN device {name}: {e}")))?;
            let name = device.name().unwrap_or(name);
            let routed = tun::route_device(&name, targets, table, DEFAULT_PRIORITY)
                .map_err(|e| Refusal::Setup(e.to_string()))?;
            Ok((name, routed, device))
        })
    };
    let (name, routed, fd) = setup
        .await
        .map_err(|e| Refusal::Setup(format!("setup task failed: {e}")))??;
    let granted = Granted {
        device: name,
        destinations: routed.targets.destinations().to_vec(),
        exclude: routed.targets.excluded().to_vec(),
        routes: routed.routes.clone(),
    };
    Ok((granted, routed, fd, slot))
}

/// Sends `bytes` with `fd` attached to the first of them.
async fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: RawFd) -> io::Result<()> {
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(bytes)],
                &[ControlMessage::ScmRights(&[fd])],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        })
        .await?;
    let mut rest = &bytes[sent..];
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The client side.

/// Why the helper could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// No helper listening.
    #[error(
        "no capture helper at {0} (install it once: `sudo plg-capture install --user $USER --billing URL`)"
    )]
    NotRunning(PathBuf),
    /// The helper said no.
    #[error("{0}")]
    Refused(String),
    /// Talking to it failed.
    #[error("talking to the capture helper: {0}")]
    Io(#[from] io::Error),
    /// It answered something else than the protocol.
    #[error("the capture helper answered nonsense: {0}")]
    Protocol(String),
}

/// A TUN capture whose device came from the helper; the connection keeps its rules alive.
#[derive(Debug)]
pub struct HelperCapture {
    tun: TunCapture,
    _conn: UnixStream,
}

impl HelperCapture {
    /// Asks the helper at `socket` to capture what the ticket allows, minus `exclude`.
    pub async fn open(
        socket: &Path,
        ticket: &[u8],
        destinations: Vec<Destination>,
        exclude: Vec<IpAddr>,
    ) -> Result<HelperCapture, HelperError> {
        let mut conn = match UnixStream::connect(socket).await {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(HelperError::NotRunning(socket.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        use base64::Engine as _;
        let req = CaptureRequest {
            ticket: base64::engine::general_purpose::STANDARD.encode(ticket),
            destinations,
            exclude,
        };
        conn.write_all(&encode_frame(&req)).await?;
        let (reply, fd) = tokio::time::timeout(Duration::from_secs(20), recv_reply(&conn))
            .await
            .map_err(|_| HelperError::Protocol("no answer within 20 s".into()))??;
        let granted = match reply {
            CaptureReply::Ok(g) => g,
            CaptureReply::Error { message, .. } => return Err(HelperError::Refused(message)),
        };
        let fd = fd.ok_or_else(|| HelperError::Protocol("no device descriptor came".into()))?;
        let device = adopt(fd)?;
        let targets = granted.targets();
        let routed = tun::Routed {
            targets,
            routes: granted.routes,
            rules: None,
        };
        Ok(HelperCapture {
            tun: TunCapture::from_device(device, granted.device, routed),
            _conn: conn,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        self.tun.name()
    }
}

async fn recv_reply(conn: &UnixStream) -> Result<(CaptureReply, Option<OwnedFd>), HelperError> {
    let mut buf = vec![0u8; 4 + MAX_FRAME];
    let mut fd = None;
    let mut have = 0;
    loop {
        let n = conn
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut buf[have..])];
                let mut space = nix::cmsg_space!([RawFd; 1]);
                let msg = recvmsg::<()>(
                    conn.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)?;
                for c in msg.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for raw in fds {
                            let owned = received(raw);
                            if fd.is_none() {
                                fd = Some(owned);
                            }
                        }
                    }
                }
                Ok(msg.bytes)
            })
            .await?;
        if n == 0 {
            return Err(HelperError::Protocol("it hung up mid-answer".into()));
        }
        have += n;
        if have >= 4 {
            let len = frame_len(buf[..4].try_into().expect("4 bytes"))
                .map_err(|e| HelperError::Protocol(e.to_string()))?;
            if have >= 4 + len {
                let reply = serde_json::from_slice(&buf[4..4 + len])
                    .map_err(|e| HelperError::Protocol(e.to_string()))?;
                return Ok((reply, fd));
            }
        }
    }
}

/// Takes ownership of a descriptor that came with `SCM_RIGHTS`.
#[allow(unsafe_code)]
fn received(raw: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed this descriptor in our table for this message; nothing
    // else refers to it.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// The helper's device, as an async TUN device of ours.
#[allow(unsafe_code)]
fn adopt(fd: OwnedFd) -> io::Result<AsyncDevice> {
    // SAFETY: the descriptor is ours alone (just received) and is a TUN device the helper
    // opened with tun-rs defaults: IFF_NO_PI, no IFF_VNET_HDR (tun-rs's requirement).
    unsafe { AsyncDevice::from_fd(fd.into_raw_fd()) }
}

impl Capture for HelperCapture {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<Captured> {
        self.tun.recv(buf).await
    }

    async fn send(
        &mut self,
        game: std::net::SocketAddr,
        server: std::net::SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        self.tun.send(game, server, payload).await
    }

    fn describe(&self) -> String {
        format!("helper {}", self.tun.describe())
    }
}

// ---------------------------------------------------------------------------------------------
// Install and uninstall.

/// The systemd unit running `exe` for `uid`: `CAP_NET_ADMIN` and nothing else.
pub fn unit_file(exe: &Path, uid: u32, billing: &str, socket: &Path) -> String {
    format!(
        "# Installed by `plg-capture install`; `plg-capture uninstall` removes it.\n\
         [Unit]\n\
         Description=PLG Booster capture helper (captures the game traffic of uid {uid})\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={exe} serve --uid {uid} --billing {billing} --socket {socket}\n\
         DynamicUser=yes\n\
         RuntimeDirectory=plg\n\
         RuntimeDirectoryMode=0755\n\
         AmbientCapabilities=CAP_NET_ADMIN\n\
         CapabilityBoundingSet=CAP_NET_ADMIN\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         DeviceAllow=/dev/net/tun rw\n\
         RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exe = exe.display(),
        socket = socket.display(),
    )
}

/// Writes the unit under `root` (`/` for real). Idempotent: an identical unit is left alone.
/// Returns whether anything changed.
pub fn install(root: &Path, unit: &str) -> io::Result<bool> {
    let path = root.join(UNIT_PATH);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == unit) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, unit)?;
    Ok(true)
}

/// Removes the unit and the socket under `root` and every rule the helper's tables hold (when
/// `root` is `/`). Idempotent. Returns what was removed.
pub fn uninstall(root: &Path, socket: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let socket = root.join(socket.strip_prefix("/").unwrap_or(socket));
    for path in [root.join(UNIT_PATH), socket] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if root == Path::new("/") {
        for i in 0..super::MAX_SESSIONS {
            tun::purge_rules(table(i));
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_and_uninstall_are_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let sock = Path::new("/run/plg/capture.sock");
        let unit = unit_file(
            Path::new("/usr/bin/plg-capture"),
            1000,
            "https://billing.example",
            sock,
        );
        assert!(unit.contains("AmbientCapabilities=CAP_NET_ADMIN\n"));
        assert!(unit.contains("CapabilityBoundingSet=CAP_NET_ADMIN\n"));
        assert!(unit.contains("--uid 1000"));
        assert!(install(root.path(), &unit).unwrap());
        assert!(!install(root.path(), &unit).unwrap());
        let written = std::fs::read_to_string(root.path().join(UNIT_PATH)).unwrap();
        assert_eq!(written, unit);
        let fake_sock = root.path().join("run/plg/capture.sock");
        std::fs::create_dir_all(fake_sock.parent().unwrap()).unwrap();
        std::fs::write(&fake_sock, b"").unwrap();
        let removed = uninstall(root.path(), sock).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(!root.path().join(UNIT_PATH).exists() && !fake_sock.exists());
        assert!(uninstall(root.path(), sock).unwrap().is_empty());
    }
}
