//! Ticket signing keys (Ed25519, table `signing_keys`) and the public key set nodes trust.

use std::fmt;

use crate::db::Pool;
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use serde::Serialize;

use crate::db::now_secs;

/// The key billing currently signs tickets with.
#[derive(Clone)]
pub(crate) struct TicketSigner {
    pub key_id: u32,
    pub key: SigningKey,
}

impl fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A public ticket key as published in `/v1/mesh` and the join answer.
#[derive(Clone, Debug, Serialize)]
pub struct TicketKey {
    /// Key id carried in tickets.
    pub key_id: u32,
    /// Base64 (standard) of the 32-byte Ed25519 public key.
    pub public_key: String,
}

/// Loads the newest unretired signing key, generating one on first start.
pub(crate) async fn current_signer(db: &Pool) -> anyhow::Result<TicketSigner> {
    if let Some(signer) = newest(db).await? {
        return Ok(signer);
    }
    let secret: [u8; 32] = crate::random_bytes(32).try_into().expect("32 bytes");
    let key = SigningKey::from_bytes(&secret);
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO signing_keys (secret, public, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(secret.to_vec())
    .bind(key.verifying_key().as_bytes().to_vec())
    .bind(now_secs())
    .fetch_one(db)
    .await?;
    tracing::info!(key_id = id, "generated ticket signing key");
    // Re-read rather than trust our insert: if two processes raced, both now agree.
    newest(db)
        .await?
        .context("signing key vanished after insert")
}

async fn newest(db: &Pool) -> anyhow::Result<Option<TicketSigner>> {
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, secret FROM signing_keys WHERE retired_at IS NULL ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(db)
    .await?;
    let Some((id, secret)) = row else {
        return Ok(None);
    };
    let secret: [u8; 32] = secret
        .as_slice()
        .try_into()
        .context("signing_keys.secret is not 32 bytes")?;
    Ok(Some(TicketSigner {
        key_id: u32::try_from(id).context("signing key id out of range")?,
        key: SigningKey::from_bytes(&secret),
    }))
}

/// Generates a new signing key and retires every other one, atomically. Retired keys stay
/// published until their last ticket has expired.
pub(crate) async fn rotate(db: &Pool) -> anyhow::Result<TicketSigner> {
    let secret: [u8; 32] = crate::random_bytes(32).try_into().expect("32 bytes");
    let key = SigningKey::from_bytes(&secret);
    let now = now_secs();
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO signing_keys (secret, public, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(secret.to_vec())
    .bind(key.verifying_key().as_bytes().to_vec())
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(key_id = id, "ticket signing key rotated");
    Ok(TicketSigner {
        key_id: u32::try_from(id).context("signing key id out of range")?,
        key,
    })
}

/// A key with its lifecycle, for admins.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct KeyInfo {
    key_id: u32,
    public_key: String,
    created_at: i64,
    retired_at: Option<i64>,
    /// Still in `/v1/mesh` (tickets it signed may be valid).
    published: bool,
}

/// Every key ever generated, newest first.
pub(crate) async fn all_keys(db: &Pool, ticket_ttl_secs: u64) -> anyhow::Result<Vec<KeyInfo>> {
    let cutoff = now_secs() - ticket_ttl_secs as i64;
    let rows: Vec<(i64, Vec<u8>, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, public, created_at, retired_at FROM signing_keys ORDER BY id DESC",
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, public, created_at, retired_at)| {
            Ok(KeyInfo {
                key_id: u32::try_from(id).context("signing key id out of range")?,
                public_key: STANDARD.encode(public),
                created_at,
                retired_at,
                published: retired_at.is_none_or(|t| t > cutoff),
            })
        })
        .collect()
}

/// Every key whose tickets may still be valid: unretired ones, and retired ones whose last
/// ticket has not yet expired.
pub(crate) async fn published_keys(
    db: &Pool,
    ticket_ttl_secs: u64,
) -> anyhow::Result<Vec<TicketKey>> {
    let cutoff = now_secs() - ticket_ttl_secs as i64;
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, public FROM signing_keys WHERE retired_at IS NULL OR retired_at > $1 ORDER BY id",
    )
    .bind(cutoff)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, public)| {
            Ok(TicketKey {
                key_id: u32::try_from(id).context("signing key id out of range")?,
                public_key: STANDARD.encode(public),
            })
        })
        .collect()
}
