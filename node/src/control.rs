//! The control plane: a QUIC endpoint where clients present tickets and get sessions.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use plg_mesh::{Candidate, MeshHandle, NodeId, SelectionPolicy, SessionRecord, select_exits};
use plg_proto::control::{ALPN, Accept, ControlMessage, MAX_CONTROL_LEN, RejectCode};
use plg_proto::session::{EXPORTER_LABEL, KEYING_MATERIAL_LEN, Role};
use plg_proto::{Session, TicketError, TicketVerifier};
use quinn::crypto::rustls::QuicServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use crate::dataplane::Command;
use crate::identity::Identity;
use crate::metrics::{Metrics, inc};
use crate::unix_now;

/// How long a client has to present its ticket after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

#[derive(Clone)]
pub(crate) struct Control {
    pub verifier: Arc<Mutex<TicketVerifier>>,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
    pub data_port: u16,
    pub idle_timeout_secs: u16,
    /// The mesh, where accepted sessions are published with their backup exit.
    pub mesh: Option<Arc<MeshHandle>>,
    /// Flips to true when the node drains: new sessions are refused and open control
    /// connections are closed so their clients move to the backup.
    pub draining: watch::Receiver<bool>,
}

/// QUIC application error code telling a client the node is draining.
pub const DRAINING_CODE: u32 = 2;

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
        let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
            let mut len = [0u8; 2];
            recv.read_exact(&mut len).await?;
            let len = u16::from_be_bytes(len) as usize;
            if len > MAX_CONTROL_LEN {
                bail!("control message too long");
            }
            let mut body = vec![0u8; len];
            recv.read_exact(&mut body).await?;
            Ok(ControlMessage::decode(&body)?)
        })
        .await
        .context("hello timed out");
        let reply = match hello {
            Ok(Ok(ControlMessage::Hello { ticket })) => self.accept(&conn, &ticket).await,
            Ok(Ok(_)) => reject(RejectCode::BadRequest, "expected HELLO".into()),
            Ok(Err(e)) | Err(e) => reject(RejectCode::BadRequest, format!("bad hello: {e}")),
        };
        let accepted = matches!(reply, ControlMessage::Accept(_));
        if !accepted {
            inc(&self.metrics.tickets_rejected);
            tracing::info!(peer = %peer, reply = ?reply, "session refused");
        }
        send.write_all(&reply.encode()).await?;
        send.finish()?;
        if accepted {
            // The connection stays up for the session's lifetime; a drain closes it so the
            // client moves to its backup at once.
            let mut draining = self.draining.clone();
            tokio::select! {
                _ = conn.closed() => {}
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
            Err(e) => {
                let code = match e {
                    TicketError::Malformed(_) | TicketError::UnsupportedVersion(_) => {
                        RejectCode::MalformedTicket
                    }
                    TicketError::UnknownKey(_) | TicketError::BadSignature => {
                        RejectCode::InvalidTicket
                    }
                    TicketError::Expired { .. } | TicketError::NotYetValid { .. } => {
                        RejectCode::TicketExpired
                    }
                };
                return reject(code, e.to_string());
            }
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
                session,
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

fn reject(code: RejectCode, message: String) -> ControlMessage {
    ControlMessage::Reject { code, message }
}
