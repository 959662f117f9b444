//! The mesh CA: a self-signed ECDSA P-256 CA generated on first start and kept in the
//! database; it signs node certificates (clients trust only nodes that chain to it).

use std::fmt;

use crate::db::Pool;
use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, SubjectPublicKeyInfo,
};
use time::{Duration, OffsetDateTime};

use crate::db::now_secs;

/// How long the CA certificate is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a node certificate is valid.
pub const NODE_CERT_VALIDITY: Duration = Duration::days(365);
/// Backdating of `not_before`, for clock skew between billing and its peers.
const BACKDATE: Duration = Duration::minutes(5);

/// The loaded CA: its certificate and an issuer holding its key.
pub(crate) struct MeshCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshCa").finish_non_exhaustive()
    }
}

/// Why a node certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignError {
    /// The node sent a public key we can't read or can't certify (the node's fault).
    #[error("public_key_pem is not a supported SubjectPublicKeyInfo PEM: {0}")]
    BadPublicKey(rcgen::Error),
    /// Signing failed on our side.
    #[error("signing node certificate: {0}")]
    Signing(rcgen::Error),
}

impl MeshCa {
    /// Loads the CA from the database, generating and storing it on first start.
    pub async fn load_or_create(db: &Pool) -> anyhow::Result<MeshCa> {
        if let Some(ca) = Self::load(db).await? {
            return Ok(ca);
        }
        let (cert_pem, key_pem) = generate()?;
        // A concurrent first start may have inserted one already; theirs wins, ours is dropped.
        sqlx::query(
            "INSERT INTO mesh_ca (id, cert_pem, key_pem, created_at) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&cert_pem)
        .bind(&key_pem)
        .bind(now_secs())
        .execute(db)
        .await?;
        tracing::info!("generated mesh CA");
        Self::load(db)
            .await?
            .context("mesh CA vanished after insert")
    }

    async fn load(db: &Pool) -> anyhow::Result<Option<MeshCa>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT cert_pem, key_pem FROM mesh_ca WHERE id = 1")
                .fetch_optional(db)
                .await?;
        let Some((cert_pem, key_pem)) = row else {
            return Ok(None);
        };
        let key = KeyPair::from_pem(&key_pem).context("parsing stored mesh CA key")?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).context("parsing stored mesh CA cert")?;
        Ok(Some(MeshCa { cert_pem, issuer }))
    }

    /// PEM of the CA certificate (public).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a server certificate for `server_name` over the node's own public key.
    pub fn sign_node_cert(
        &self,
        public_key_pem: &str,
        server_name: &str,
    ) -> Result<String, SignError> {
        let public_key =
            SubjectPublicKeyInfo::from_pem(public_key_pem).map_err(SignError::BadPublicKey)?;
        let mut params =
            CertificateParams::new(vec![server_name.to_owned()]).map_err(SignError::Signing)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, server_name);
        dn.push(DnType::OrganizationName, "PLG Booster mesh");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + NODE_CERT_VALIDITY;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(SignError::Signing)?;
        Ok(cert.pem())
    }
}

/// Positive 127-bit serial (RFC 5280 asks for unique, positive, ≤ 20 bytes).
fn random_serial() -> SerialNumber {
    let mut bytes = crate::random_bytes(16);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn generate() -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating mesh CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "PLG Booster Mesh CA");
    dn.push(DnType::OrganizationName, "PLG Booster");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key).context("self-signing mesh CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signs_node_keys_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = crate::db::open(&crate::Config {
            data_dir: dir.path().to_path_buf(),
            ..crate::Config::default()
        })
        .await
        .unwrap();
        let ca = MeshCa::load_or_create(&db).await.unwrap();
        let again = MeshCa::load_or_create(&db).await.unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());

        let node_key = KeyPair::generate().unwrap();
        let pem = ca
            .sign_node_cert(&node_key.public_key_pem(), "node-1.nodes.plg")
            .unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let ed_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        ca.sign_node_cert(&ed_key.public_key_pem(), "node-2.nodes.plg")
            .unwrap();
        assert!(matches!(
            ca.sign_node_cert(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "n"
            ),
            Err(SignError::BadPublicKey(_))
        ));
        assert!(matches!(
            ca.sign_node_cert("not pem", "n"),
            Err(SignError::BadPublicKey(_))
        ));
    }
}
