//! Session setup with a node: QUIC to its control endpoint (trusting only the mesh CA),
//! present the ticket, derive the data-plane keys from the TLS exporter.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use plg_proto::Session;
use plg_proto::control::{ALPN, Accept, ControlMessage, MAX_CONTROL_LEN, RejectCode};
use plg_proto::session::{EXPORTER_LABEL, KEYING_MATERIAL_LEN, Role};
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why a session could not be set up with a node.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The mesh CA we were given is unusable.
    #[error("mesh CA certificate is invalid: {0}")]
    BadCa(String),
    /// Network or TLS failure reaching the node (including a certificate not from our mesh).
    #[error("cannot connect to node {node}: {detail}")]
    Connect {
        /// Node address.
        node: SocketAddr,
        /// What failed.
        detail: String,
    },
    /// The node refused the ticket.
    #[error("node refused the session: {message} ({code:?})")]
    Rejected {
        /// Machine-readable reason.
        code: RejectCode,
        /// Node's explanation.
        message: String,
    },
    /// The node broke the control protocol.
    #[error("node sent an invalid control message: {0}")]
    Protocol(String),
}

/// How a session's data frames travel to the node (see `docs/protocol.md`, protected mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protection {
    /// UDP to the node's data port; QUIC datagrams on the control connection when UDP gets no
    /// answer, back to UDP as soon as it answers again.
    #[default]
    Auto,
    /// Always QUIC datagrams on the control connection (the user asked for protected mode).
    Always,
    /// UDP only, whatever happens.
    Never,
}

impl std::str::FromStr for Protection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Protection::Auto),
            "always" | "on" => Ok(Protection::Always),
            "never" | "off" => Ok(Protection::Never),
            other => Err(format!(
                "unknown protected mode {other:?} (auto, always, never)"
            )),
        }
    }
}

/// An established session: the sealed-frame state and where to send data frames.
#[derive(Debug)]
pub struct Tunnel {
    /// Client end of the session.
    pub session: Session,
    /// Node's UDP data address.
    pub data_addr: SocketAddr,
    /// What the node granted.
    pub accept: Accept,
    /// Control connection (kept open for the session; carries the frames in protected mode).
    pub connection: quinn::Connection,
    /// How the frames travel.
    pub protection: Protection,
    endpoint: quinn::Endpoint,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends HELLO with `ticket` on a new stream of `connection` and reads the answer.
async fn hello(
    connection: &quinn::Connection,
    node: SocketAddr,
    ticket: &[u8],
) -> Result<Accept, TunnelError> {
    let connect_err = |detail: String| TunnelError::Connect { node, detail };
    let exchange = async {
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        send.write_all(
            &ControlMessage::Hello {
                ticket: ticket.to_vec(),
            }
            .encode(),
        )
        .await
        .map_err(|e| connect_err(e.to_string()))?;
        let mut len = [0u8; 2];
        recv.read_exact(&mut len)
            .await
            .map_err(|e| TunnelError::Protocol(e.to_string()))?;
        let len = u16::from_be_bytes(len) as usize;
        if len > MAX_CONTROL_LEN {
            return Err(TunnelError::Protocol("message too long".into()));
        }
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body)
            .await
            .map_err(|e| TunnelError::Protocol(e.to_string()))?;
        ControlMessage::decode(&body).map_err(|e| TunnelError::Protocol(e.to_string()))
    };
    let reply = tokio::time::timeout(CONNECT_TIMEOUT, exchange)
        .await
        .map_err(|_| connect_err("no answer to HELLO".into()))??;
    match reply {
        ControlMessage::Accept(a) => Ok(a),
        ControlMessage::Reject { code, message } => Err(TunnelError::Rejected { code, message }),
        ControlMessage::Hello { .. } => Err(TunnelError::Protocol("unexpected HELLO".into())),
    }
}
/// Keep-alive period of the control connection.
pub const KEEP_ALIVE: Duration = Duration::from_millis(200);
/// Bytes of protected-mode datagrams buffered each way (about 64 full frames).
pub(crate) const DATAGRAM_BUFFER: usize = 64 * plg_proto::frame::MAX_DATAGRAM;

fn client_config(ca_pem: &str) -> Result<quinn::ClientConfig, TunnelError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TunnelError::BadCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TunnelError::BadCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TunnelError::BadCa("no certificate in PEM".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TunnelError::BadCa(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TunnelError::BadCa(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    // Frequent enough that a dead node is told from a blocked data port within a failover
    // period (the proxy watches for answers); ~5 tiny packets a second.
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    // Protected mode: data frames as QUIC datagrams (RFC 9221).
    transport.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    transport.datagram_send_buffer_size(DATAGRAM_BUFFER);
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

impl Tunnel {
    /// Connects to the node at `control` (whose certificate must name `server_name` and chain
    /// to `ca_pem`), presents `ticket` and derives the session keys.
    pub async fn open(
        control: SocketAddr,
        server_name: &str,
        ca_pem: &str,
        ticket: &[u8],
    ) -> Result<Tunnel, TunnelError> {
        let connect_err = |detail: String| TunnelError::Connect {
            node: control,
            detail,
        };
        let bind: SocketAddr = if control.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| connect_err(e.to_string()))?;
        endpoint.set_default_client_config(client_config(ca_pem)?);
        let connecting = endpoint
            .connect(control, server_name)
            .map_err(|e| connect_err(e.to_string()))?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        let accept = hello(&connection, control, ticket).await?;
        let mut km = [0u8; KEYING_MATERIAL_LEN];
        connection
            .export_keying_material(&mut km, EXPORTER_LABEL, &accept.session_id.to_be_bytes())
            .map_err(|_| TunnelError::Protocol("key export failed".into()))?;
        let session = Session::new(Role::Client, accept.session_id, &km);
        // The data port lives on the IP we reached the control endpoint on.
        let data_addr = SocketAddr::new(control.ip(), accept.data_port);
        Ok(Tunnel {
            session,
            data_addr,
            accept,
            connection,
            protection: Protection::default(),
            endpoint,
        })
    }

    /// Sets how the session's frames travel (default [`Protection::Auto`]).
    pub fn with_protection(mut self, protection: Protection) -> Tunnel {
        self.protection = protection;
        self
    }

    /// Renews the session in place: presents `ticket` (a fresh ticket for the same session,
    /// from billing's `POST /v1/sessions/{id}/renew`) on the open control connection. The node
    /// keeps the session, its flows and its source ports; only the expiry moves.
    pub async fn renew_on(
        connection: &quinn::Connection,
        ticket: &[u8],
    ) -> Result<Accept, TunnelError> {
        hello(connection, connection.remote_address(), ticket).await
    }

    /// Moves the session's sealed-frame state out (to the session engine,
    /// [`crate::conn::ClientConn`]); what stays behind can seal nothing.
    pub fn take_session(&mut self) -> Session {
        let dead = Session::new(Role::Client, self.session.id(), &[0u8; KEYING_MATERIAL_LEN]);
        std::mem::replace(&mut self.session, dead)
    }

    /// Moves the control connection to a fresh local socket (QUIC connection migration):
    /// after the local address changed, the connection — and protected mode with it — keeps
    /// working from the new one.
    pub fn rebind(&self) -> std::io::Result<()> {
        let remote = self.connection.remote_address();
        let bind: SocketAddr = if remote.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        self.endpoint.rebind(std::net::UdpSocket::bind(bind)?)
    }

    /// Closes the control connection.
    pub async fn close(self) {
        self.connection.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_parses_the_cli_words() {
        assert_eq!("auto".parse(), Ok(Protection::Auto));
        assert_eq!("always".parse(), Ok(Protection::Always));
        assert_eq!("on".parse(), Ok(Protection::Always));
        assert_eq!("never".parse(), Ok(Protection::Never));
        assert_eq!("off".parse(), Ok(Protection::Never));
        let err = "sometimes".parse::<Protection>().unwrap_err();
        assert!(err.contains("auto, always, never"), "{err}");
        assert_eq!(Protection::default(), Protection::Auto);
    }
}
