//! The capture helper on Windows: the elevated process that owns WinDivert. It listens on a
//! named pipe whose ACL ([`super::pipe_sddl`]) admits SYSTEM and the installing user's SID
//! only, checks each request like the Linux helper ([`super::Gate`]), opens WinDivert for the
//! granted targets and then relays packets over the pipe ([`super::encode_packet`]): captured
//! game packets to the client, the client's replies back to be injected. Closing the pipe (the
//! client exits or dies) closes the WinDivert handles, which removes the filter.
//!
//! Not yet: the service control dispatcher (the installer registers `plg-capture serve`, which
//! today runs as a console process) — see docs/security.md.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use plg_proto::ticket::Destination;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeServer, ServerOptions};
use tokio::sync::mpsc;

use super::{
    CaptureReply, CaptureRequest, DEFAULT_PIPE, Gate, Granted, Refusal, decode_keys, decode_packet,
    encode_frame, encode_packet, frame_len, parse_request, pipe_sddl,
};
use crate::billing::BillingClient;
use crate::capture::{Capture, Captured, WinDivertCapture};

/// Name of the Windows service.
pub const SERVICE: &str = "plg-capture";

/// What `plg-capture` was asked to do.
#[derive(Debug)]
pub enum Action {
    /// Run the helper for the user with this SID.
    Serve {
        /// The user's SID (`S-1-5-21-…`).
        user: String,
        /// Billing base URL.
        billing: String,
        /// Capture private ranges too.
        allow_private: bool,
    },
    /// Register and start the service.
    Install {
        /// The user's SID.
        user: String,
        /// Billing base URL.
        billing: String,
    },
    /// Stop and delete the service.
    Uninstall,
}

/// Runs an [`Action`].
pub fn run_cli(action: Action) -> Result<()> {
    match action {
        Action::Serve {
            user,
            billing,
            allow_private,
        } => {
            let sddl = pipe_sddl(&user).context("--uid must be the user's SID (S-1-5-21-…)")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(serve(sddl, billing, allow_private))
        }
        Action::Install { user, billing } => {
            pipe_sddl(&user).context("--user must be the user's SID (S-1-5-21-…)")?;
            let exe = std::env::current_exe()?;
            let bin = format!(
                "\"{}\" serve --uid {user} --billing {billing}",
                exe.display()
            );
            // Created, or reconfigured when it exists (1073): idempotent.
            let created = sc(&["create", SERVICE, "binPath=", &bin, "start=", "auto"])?;
            if created == Some(1073) {
                sc(&["config", SERVICE, "binPath=", &bin, "start=", "auto"])?;
            }
            sc(&["start", SERVICE])?;
            println!("plg-capture is installed for {user}");
            Ok(())
        }
        Action::Uninstall => {
            sc(&["stop", SERVICE])?;
            sc(&["delete", SERVICE])?;
            println!("plg-capture is uninstalled (stopping it removed its WinDivert filters)");
            Ok(())
        }
    }
}

/// Runs `sc.exe`; `Some(code)` for the tolerated codes (1060 no such service, 1062 not
/// started, 1056 already running, 1073 exists), an error for others.
fn sc(args: &[&str]) -> Result<Option<i32>> {
    let status = std::process::Command::new("sc.exe")
        .args(args)
        .status()
        .context("running sc.exe")?;
    match status.code() {
        Some(0) => Ok(None),
        Some(c @ (1056 | 1060 | 1062 | 1073)) => Ok(Some(c)),
        _ => bail!("`sc.exe {}` failed ({status})", args.join(" ")),
    }
}

/// A pipe instance with the ACL `sddl`.
#[allow(unsafe_code)]
fn pipe_instance(sddl: &str, first: bool) -> io::Result<NamedPipeServer> {
    use windows_sys::Win32::Foundation::{FALSE, LocalFree};
    use windows_sys::Win32::Security::Authorization::{
        ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};

    let wide: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated; `sd` receives a LocalAlloc'd descriptor freed below.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            wide.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut attrs = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd,
        bInheritHandle: FALSE,
    };
    // SAFETY: `attrs` and the descriptor it points to live across the call.
    let pipe = unsafe {
        ServerOptions::new()
            .first_pipe_instance(first)
            .reject_remote_clients(true)
            .create_with_security_attributes_raw(DEFAULT_PIPE, (&raw mut attrs).cast())
    };
    // SAFETY: allocated by the conversion above, used no more.
    unsafe { LocalFree(sd) };
    pipe
}

async fn serve(sddl: String, billing: String, allow_private: bool) -> Result<()> {
    let mesh = BillingClient::new(&billing)
        .mesh()
        .await
        .with_context(|| format!("fetching billing's ticket keys from {billing}"))?;
    let keys = decode_keys(&mesh.ticket_keys).map_err(anyhow::Error::msg)?;
    let gate = std::sync::Arc::new(tokio::sync::Mutex::new(Gate::new(keys, allow_private)));
    let mut pipe = pipe_instance(&sddl, true).context("creating the helper's pipe")?;
    tracing::info!(pipe = DEFAULT_PIPE, "capture helper listening");
    loop {
        pipe.connect().await?;
        let client = pipe;
        pipe = pipe_instance(&sddl, false)?;
        let gate = gate.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(client, &gate).await {
                tracing::debug!(error = %e, "capture connection ended");
            }
        });
    }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    let n = frame_len(header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0; n];
    r.read_exact(&mut body).await?;
    Ok(body)
}

async fn handle(mut pipe: NamedPipeServer, gate: &tokio::sync::Mutex<Gate>) -> io::Result<()> {
    let checked = match tokio::time::timeout(Duration::from_secs(5), read_frame(&mut pipe)).await {
        Err(_) => Err(Refusal::Malformed("no request within 5 s".into())),
        Ok(Err(e)) => Err(Refusal::Malformed(e.to_string())),
        Ok(Ok(body)) => match parse_request(&body) {
            Ok(req) => gate.lock().await.check(&req, unix_now()),
            Err(e) => Err(e),
        },
    };
    let opened = checked.and_then(|targets| {
        WinDivertCapture::open(targets.clone())
            .map(|c| (c, targets))
            .map_err(|e| Refusal::Setup(e.to_string()))
    });
    let (mut capture, targets) = match opened {
        Ok(x) => x,
        Err(refusal) => {
            tracing::warn!(code = ?refusal.code(), reason = %refusal, "refused a capture request");
            return pipe.write_all(&encode_frame(&refusal.reply())).await;
        }
    };
    let granted = Granted {
        device: "windivert".into(),
        destinations: targets.destinations().to_vec(),
        exclude: targets.excluded().to_vec(),
        routes: Vec::new(),
    };
    pipe.write_all(&encode_frame(&CaptureReply::Ok(granted)))
        .await?;
    let (mut rd, mut wr) = tokio::io::split(pipe);
    let (tx, mut replies) = mpsc::channel::<Vec<u8>>(256);
    let reader = tokio::spawn(async move {
        while let Ok(body) = read_frame(&mut rd).await {
            if tx.send(body).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(65_600);
    loop {
        tokio::select! {
            got = capture.recv(&mut buf) => {
                let c = got?;
                encode_packet(c.game, c.server, &buf[..c.len], &mut out);
                wr.write_all(&out).await?;
            }
            reply = replies.recv() => {
                let Some(body) = reply else { break };
                match decode_packet(&body) {
                    Ok((game, server, payload)) => capture.send(game, server, payload).await?,
                    Err(e) => tracing::debug!(error = %e, "dropped a relayed reply"),
                }
            }
        }
    }
    reader.abort();
    tracing::info!("client gone: WinDivert filter removed");
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why the helper could not be used (client side).
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// No helper.
    #[error(
        "no capture helper at {DEFAULT_PIPE} (install it: `plg-capture install --user <SID> --billing URL`, as administrator)"
    )]
    NotRunning,
    /// It said no.
    #[error("{0}")]
    Refused(String),
    /// Talking to it failed.
    #[error("talking to the capture helper: {0}")]
    Io(#[from] io::Error),
}

/// Capture through the service: packets relayed over the pipe.
#[derive(Debug)]
pub struct PipeCapture {
    packets: mpsc::Receiver<Vec<u8>>,
    writer: tokio::io::WriteHalf<tokio::net::windows::named_pipe::NamedPipeClient>,
    out: Vec<u8>,
    describe: String,
}

impl PipeCapture {
    /// Asks the service to capture what the ticket allows, minus `exclude`.
    pub async fn open(
        ticket: &[u8],
        destinations: Vec<Destination>,
        exclude: Vec<IpAddr>,
    ) -> Result<PipeCapture, HelperError> {
        use base64::Engine as _;
        let mut pipe = ClientOptions::new()
            .open(DEFAULT_PIPE)
            .map_err(|_| HelperError::NotRunning)?;
        let req = CaptureRequest {
            ticket: base64::engine::general_purpose::STANDARD.encode(ticket),
            destinations,
            exclude,
        };
        pipe.write_all(&encode_frame(&req)).await?;
        let body = read_frame(&mut pipe).await?;
        let granted = match serde_json::from_slice(&body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            CaptureReply::Ok(g) => g,
            CaptureReply::Error { message, .. } => return Err(HelperError::Refused(message)),
        };
        let (mut rd, writer) = tokio::io::split(pipe);
        let (tx, packets) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Ok(body) = read_frame(&mut rd).await {
                if tx.send(body).await.is_err() {
                    break;
                }
            }
        });
        Ok(PipeCapture {
            packets,
            writer,
            out: Vec::new(),
            describe: format!(
                "helper {} → {} destinations",
                granted.device,
                granted.destinations.len()
            ),
        })
    }
}

impl Capture for PipeCapture {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<Captured> {
        loop {
            // Cancel-safe: a frame is whole in the channel or not there.
            let body = self.packets.recv().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the capture helper hung up")
            })?;
            let Ok((game, server, payload)) = decode_packet(&body) else {
                continue;
            };
            let Some(dst) = buf.get_mut(..payload.len()) else {
                continue;
            };
            dst.copy_from_slice(payload);
            return Ok(Captured {
                game,
                server,
                len: payload.len(),
            });
        }
    }

    async fn send(
        &mut self,
        game: SocketAddr,
        server: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        encode_packet(game, server, payload, &mut self.out);
        self.writer.write_all(&self.out).await
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
