//! The control plane: a QUIC endpoint where clients present tickets and get sessions.
//!
//! The connection stays open for the session's lifetime. In protected mode (see
//! `docs/protocol.md`) the client sends its sealed data frames as QUIC DATAGRAM frames on it;
//! [`bridge`] hands them to the data plane through a loopback UDP socket, so the data plane
//! sees an ordinary client and applies its usual checks (authentication, replay window,
//! destination policy, anti-amplification), and carries the data plane's answers back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use plg_mesh::{Candidate, MeshHandle, NodeId, SelectionPolicy, SessionRecord, select_exits};
use plg_proto::control::{ALPN, Accept, ControlMessage, MAX_CONTROL_LEN, RejectCode};
use plg_proto::frame::{Header, MAX_DATAGRAM};
use plg_proto::session::{EXPORTER_LABEL, KEYING_MATERIAL_LEN, Role};
use plg_proto::{Session, TicketError, TicketVerifier};
use quinn::crypto::rustls::QuicServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use crate::dataplane::Command;
use crate::identity::Identity;
use crate::metrics::{Metrics, inc};
use crate::unix_now;

/// How long a client has to present its ticket after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of protected-mode datagrams a connection buffers each way (about 64 full frames);
/// beyond it quinn drops the oldest, as a congested UDP path would.
const DATAGRAM_BUFFER: usize = 64 * MAX_DATAGRAM;

/// Builds the QUIC server configuration from the node's certificate (rustls with ring,
/// chosen explicitly so no other provider can be picked up at run time).
pub(crate) fn server_config(id: &Identity) -> Result<quinn::ServerConfig> {
    let certs = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("node certificate PEM")?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.0.as_bytes()).context("node key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("node certificate and key do not match")?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into()?));
    transport.max_concurrent_uni_streams(0u8.into());
    transport.max_concurrent_bidi_streams(4u8.into());
    // Protected mode: data frames as QUIC datagrams (RFC 9221).
    transport.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    transport.datagram_send_buffer_size(DATAGRAM_BUFFER);
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

#[derive(Clone)]
pub(crate) struct Control {
    pub verifier: Arc<Mutex<TicketVerifier>>,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
    pub data_port: u16,
    /// The data plane's bound address: where protected-mode frames are handed over.
    pub data_addr: SocketAddr,
    pub idle_timeout_secs: u16,
    /// The mesh, where accepted sessions are published with their backup exit.
    pub mesh: Option<Arc<MeshHandle>>,
    /// Flips to true when the node drains: new sessions are refused and open control
    /// connections are closed so their clients move to the backup.
    pub draining: watch::Receiver<bool>,
}

/// QUIC application error code telling a client the node is draining.
pub const DRAINING_CODE: u32 = plg_proto::control::CLOSE_DRAINING;

/// Publishes a session this node now serves, with a backup exit chosen by the mesh (by the
/// RTT from here, load, health and failure-domain diversity). A session that another node
/// published before (the client moved here) is adopted: its epoch grows, so every node
/// sends its relayed frames here from now on. Returns the backup's id and the epoch.
fn publish_session(mesh: &MeshHandle, session_id: u64, paths: u8) -> (Option<NodeId>, u32) {
    let view = mesh.view();
    let me = mesh.node_id();
    let mut candidates: Vec<Candidate> = view
        .exit_candidates("")
        .into_iter()
        .filter(|c| &c.node != me)
        .collect();
    for c in &mut candidates {
        c.rtt = c
            .rtt
            .or_else(|| mesh.rtt_to(&c.node).and_then(|s| s.cost()));
    }
    let backup = select_exits(&candidates, None, &SelectionPolicy::default())
        .into_iter()
        .next()
        .map(|c| c.node);
    match view.session(session_id) {
        Some(route) if &route.exit != me => {
            let record = mesh.adopt_session(route, backup.clone());
            tracing::info!(session = session_id, from = %route.exit, epoch = record.epoch, "session adopted");
            (backup, record.epoch)
        }
        existing => {
            let epoch = existing.map_or(0, |r| r.record.epoch);
            mesh.publish_session(SessionRecord {
                session_id,
                backup: backup.clone(),
                paths,
                epoch,
            });
            (backup, epoch)
        }
    }
}

impl Control {
    /// Accepts connections until the endpoint closes.
    pub(crate) async fn serve(self, endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let this = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                if let Err(e) = this.handle(incoming).await {
                    tracing::debug!(peer = %remote, error = %e, "control connection ended with an error");
                }
            });
        }
    }

    async fn handle(self, incoming: quinn::Incoming) -> Result<()> {
        let conn = incoming.await?;
        let peer = conn.remote_address();
        let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
            .await
            .context("no stream")??;
        let hello = tokio::time::timeout(HELLO_TIMEOUT, read_message(&mut recv))
            .await
            .context("hello timed out");
        let reply = match hello {
            Ok(Ok(ControlMessage::Hello { ticket })) => self.accept(&conn, &ticket).await,
            Ok(Ok(_)) => reject(RejectCode::BadRequest, "expected HELLO".into()),
            Ok(Err(e)) | Err(e) => reject(RejectCode::BadRequest, format!("bad hello: {e}")),
        };
        let accepted = match &reply {
            ControlMessage::Accept(a) => Some(a.clone()),
            _ => None,
        };
        if accepted.is_none() {
            inc(&self.metrics.tickets_rejected);
            tracing::info!(peer = %peer, reply = ?reply, "session refused");
        }
        send.write_all(&reply.encode()).await?;
        send.finish()?;
        if let Some(accept) = accepted {
            // The connection stays up for the session's lifetime: it carries renewals (a new
            // HELLO on a new stream) and the session's frames in protected mode; a drain
            // closes it so the client moves to its backup at once.
            let mut draining = self.draining.clone();
            tokio::select! {
                _ = bridge(&conn, accept.session_id, self.data_addr, &self.metrics) => {}
                _ = self.renewals(&conn, &accept) => {}
                _ = draining.wait_for(|d| *d) => {
                    conn.close(DRAINING_CODE.into(), b"node draining");
                }
            }
        } else {
            // Let the reject reach the client before closing.
            let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
        }
        Ok(())
    }

    /// Serves renewals on an accepted connection until it closes: each is a HELLO with a
    /// fresh ticket for the same session and account on a new stream; the data plane keeps
    /// the session (keys, flows, sequence numbers) and takes the new ticket's expiry and
    /// destinations. At most a few streams are open at once (the transport's limit).
    async fn renewals(&self, conn: &quinn::Connection, first: &Accept) {
        let mut current = first.clone();
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let msg = tokio::time::timeout(HELLO_TIMEOUT, read_message(&mut recv)).await;
            let reply = match msg {
                Ok(Ok(ControlMessage::Hello { ticket })) => self.renew(&current, &ticket).await,
                Ok(Ok(_)) => reject(RejectCode::BadRequest, "expected HELLO".into()),
                Ok(Err(e)) => reject(RejectCode::BadRequest, format!("bad hello: {e}")),
                Err(_) => reject(RejectCode::BadRequest, "hello timed out".into()),
            };
            if let ControlMessage::Accept(a) = &reply {
                current = a.clone();
            } else {
                inc(&self.metrics.tickets_rejected);
            }
            if send.write_all(&reply.encode()).await.is_ok() {
                let _ = send.finish();
            }
        }
    }

    async fn renew(&self, current: &Accept, ticket_bytes: &[u8]) -> ControlMessage {
        let verified = self.verifier.lock().await.verify(ticket_bytes, unix_now());
        let ticket = match verified {
            Ok(t) => t,
            Err(e) => return reject(reject_code(&e), e.to_string()),
        };
        if ticket.session_id != current.session_id {
            return reject(
                RejectCode::BadRequest,
                "a renewal must carry a ticket for this connection's session".into(),
            );
        }
        let (tx, rx) = oneshot::channel();
        let expires_at = ticket.expires_at;
        let account = ticket.account_id;
        if self
            .commands
            .send(Command::Renew { ticket, reply: tx })
            .await
            .is_err()
        {
            return reject(RejectCode::Unavailable, "node is shutting down".into());
        }
        match rx.await {
            Ok(Ok(())) => {
                tracing::info!(session = current.session_id, expires_at, "session renewed");
                ControlMessage::Accept(Accept {
                    expires_at,
                    ..current.clone()
                })
            }
            Ok(Err(e)) => {
                tracing::info!(session = current.session_id, account, error = %e, "renewal refused");
                reject(RejectCode::InvalidTicket, e.to_string())
            }
            Err(_) => reject(RejectCode::Unavailable, "node is shutting down".into()),
        }
    }

    async fn accept(&self, conn: &quinn::Connection, ticket_bytes: &[u8]) -> ControlMessage {
        if *self.draining.borrow() {
            return reject(
                RejectCode::Unavailable,
                "node is draining; use another node".into(),
            );
        }
        let now = unix_now();
        let verified = self.verifier.lock().await.verify(ticket_bytes, now);
        let ticket = match verified {
            Ok(t) => t,
            Err(e) => return reject(reject_code(&e), e.to_string()),
        };
        let mut km = [0u8; KEYING_MATERIAL_LEN];
        if conn
            .export_keying_material(&mut km, EXPORTER_LABEL, &ticket.session_id.to_be_bytes())
            .is_err()
        {
            return reject(RejectCode::Other, "key export failed".into());
        }
        let session = Session::new(Role::Node, ticket.session_id, &km);
        let accept = Accept {
            session_id: ticket.session_id,
            data_port: self.data_port,
            idle_timeout_secs: self.idle_timeout_secs,
            max_paths: ticket.path_limit.max(1),
            expires_at: ticket.expires_at,
            backup: String::new(),
        };
        let (tx, rx) = oneshot::channel();
        let (session_id, account) = (ticket.session_id, ticket.account_id);
        // Published before the data plane takes it, so the data plane knows the epoch it
        // holds the session at (it lets go when another node adopts it at a higher one).
        let (backup, epoch) = self.mesh.as_ref().map_or((None, 0), |m| {
            publish_session(m, session_id, accept.max_paths)
        });
        if self
            .commands
            .send(Command::Open {
                ticket,
                session: Box::new(session),
                epoch,
                reply: tx,
            })
            .await
            .is_err()
        {
            return reject(RejectCode::Unavailable, "node is shutting down".into());
        }
        match rx.await {
            Ok(Ok(())) => {
                inc(&self.metrics.sessions_accepted);
                tracing::info!(session = session_id, account, peer = %conn.remote_address(), backup = ?backup, "session accepted");
                ControlMessage::Accept(Accept {
                    backup: backup.map(|b| b.as_str().to_owned()).unwrap_or_default(),
                    ..accept
                })
            }
            refused => {
                if let Some(m) = &self.mesh {
                    m.remove_session(session_id);
                }
                match refused {
                    Ok(Err(e)) => reject(RejectCode::Unavailable, e.to_string()),
                    _ => reject(RejectCode::Unavailable, "node is shutting down".into()),
                }
            }
        }
    }
}

/// Carries protected-mode frames between the session's QUIC connection and the data plane
/// until the connection closes. Only datagrams that carry a frame header of this connection's
/// session go through (the data plane then authenticates them as usual); the loopback socket
/// is opened on the first one, so sessions that never use protected mode cost nothing.
async fn bridge(conn: &quinn::Connection, session_id: u64, data: SocketAddr, m: &Metrics) {
    let first = loop {
        match conn.read_datagram().await {
            Ok(d) if is_session_frame(&d, session_id) => break d,
            Ok(_) => inc(&m.protected_dropped),
            Err(_) => return,
        }
    };
    let socket = match bridge_socket(data).await {
        Ok(s) => s,
        Err(e) => {
            inc(&m.protected_dropped);
            tracing::warn!(session = session_id, error = %e, "cannot open the protected-mode bridge; the session stays on UDP");
            conn.closed().await;
            return;
        }
    };
    inc(&m.protected_sessions);
    tracing::info!(session = session_id, peer = %conn.remote_address(), bridge = ?socket.local_addr().ok(), "protected mode: frames arrive as QUIC datagrams");
    let mut pending = Some(first);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        if let Some(d) = pending.take() {
            match socket.send(&d).await {
                Ok(_) => inc(&m.protected_datagrams_in),
                Err(e) => {
                    inc(&m.protected_dropped);
                    tracing::debug!(session = session_id, error = %e, "bridge send to the data plane failed");
                }
            }
        }
        tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) if is_session_frame(&d, session_id) => pending = Some(d),
                Ok(_) => inc(&m.protected_dropped),
                Err(_) => break,
            },
            r = socket.recv(&mut buf) => match r {
                Ok(n) if n <= MAX_DATAGRAM => {
                    match conn.send_datagram(buf[..n].to_vec().into()) {
                        Ok(()) => inc(&m.protected_datagrams_out),
                        Err(quinn::SendDatagramError::ConnectionLost(_)) => break,
                        // Larger than the path carries, or the peer turned datagrams off.
                        Err(e) => {
                            inc(&m.protected_dropped);
                            tracing::debug!(session = session_id, len = n, error = %e, "frame not sent as a QUIC datagram");
                        }
                    }
                }
                Ok(_) => inc(&m.protected_dropped),
                // ICMP errors from earlier sends surface here; the socket stays usable.
                Err(e) => {
                    tracing::debug!(session = session_id, error = %e, "bridge receive error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    tracing::debug!(session = session_id, "protected-mode bridge closed");
}

/// Whether `d` carries a valid frame header of `session_id` and fits the data plane's limit.
fn is_session_frame(d: &[u8], session_id: u64) -> bool {
    d.len() <= MAX_DATAGRAM && Header::decode(d).is_ok_and(|h| h.session_id == session_id)
}

/// A UDP socket connected to the data plane over loopback (or over the data port's own
/// address when it is bound to one), so only the data plane's answers reach it.
async fn bridge_socket(data: SocketAddr) -> std::io::Result<UdpSocket> {
    let ip = match data.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    socket.connect(SocketAddr::new(ip, data.port())).await?;
    Ok(socket)
}

fn reject_code(e: &TicketError) -> RejectCode {
    match e {
        TicketError::Malformed(_) | TicketError::UnsupportedVersion(_) => {
            RejectCode::MalformedTicket
        }
        TicketError::UnknownKey(_) | TicketError::BadSignature => RejectCode::InvalidTicket,
        TicketError::Expired { .. } | TicketError::NotYetValid { .. } => RejectCode::TicketExpired,
    }
}

/// Reads one length-prefixed control message from a stream.
async fn read_message(recv: &mut quinn::RecvStream) -> Result<ControlMessage> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_CONTROL_LEN {
        bail!("control message too long");
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(ControlMessage::decode(&body)?)
}

fn reject(code: RejectCode, message: String) -> ControlMessage {
    ControlMessage::Reject { code, message }
}
