//! Sessions: `POST /v1/sessions` records a session and hands the client a signed ticket plus
//! the live nodes to try.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use plg_proto::ticket::{Destination, Ticket};
use serde::{Deserialize, Serialize};

use crate::Billing;
use crate::auth::AuthAccount;
use crate::db::now_secs;
use crate::error::{ApiError, ApiJson};
use crate::nodes::NodeView;

/// Most paths a client may use at once (plans will vary this later).
pub const DEFAULT_PATH_LIMIT: u8 = 2;

#[derive(Deserialize)]
pub(crate) struct SessionRequest {
    game: String,
}

#[derive(Serialize)]
pub(crate) struct GameRef {
    slug: String,
    name: String,
}

#[derive(Serialize)]
pub(crate) struct SessionCreated {
    /// u64 as a decimal string: JavaScript clients can't hold a u64 in a number.
    session_id: String,
    ticket: String,
    expires_at: u64,
    game: GameRef,
    destinations: Vec<Destination>,
    nodes: Vec<NodeView>,
}

/// Random nonzero session id.
fn new_session_id() -> u64 {
    loop {
        let bytes: [u8; 8] = crate::random_bytes(8).try_into().expect("8 bytes");
        let id = u64::from_be_bytes(bytes);
        if id != 0 {
            return id;
        }
    }
}

/// `POST /v1/sessions`.
pub(crate) async fn create(
    State(billing): State<Billing>,
    auth: AuthAccount,
    ApiJson(req): ApiJson<SessionRequest>,
) -> Result<(StatusCode, Json<SessionCreated>), ApiError> {
    crate::accounts::check_active(billing.db(), auth.account_id).await?;
    let game = crate::games::find(billing.db(), req.game.trim())
        .await?
        .ok_or(ApiError::UnknownGame)?;
    let signer = billing.signer();
    let now = now_secs() as u64;
    let session_id = new_session_id();
    let ticket = Ticket {
        key_id: signer.key_id,
        issued_at: now,
        expires_at: now + billing.config().ticket_ttl_secs,
        session_id,
        account_id: auth.account_id as u64,
        plan: 0,
        game_id: u32::try_from(game.id).map_err(|e| ApiError::Internal(e.into()))?,
        path_limit: DEFAULT_PATH_LIMIT,
        bandwidth_kbps: 0,
        destinations: game.destinations.clone(),
    };
    let bytes = ticket.sign(&signer.key);
    sqlx::query(
        "INSERT INTO sessions (id, account_id, game_id, key_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    // Stored bit-cast: SQL has no unsigned 64-bit integer.
    .bind(session_id as i64)
    .bind(auth.account_id)
    .bind(game.id)
    .bind(i64::from(signer.key_id))
    .bind(now as i64)
    .bind(ticket.expires_at as i64)
    .execute(billing.db())
    .await?;
    let nodes = crate::nodes::live_nodes(billing.db()).await?;
    tracing::info!(
        session = session_id,
        account = auth.account_id,
        game = %game.slug,
        nodes = nodes.len(),
        "session created"
    );
    Ok((
        StatusCode::CREATED,
        Json(SessionCreated {
            session_id: session_id.to_string(),
            ticket: STANDARD.encode(bytes),
            expires_at: ticket.expires_at,
            game: GameRef {
                slug: game.slug,
                name: game.name,
            },
            destinations: game.destinations,
            nodes,
        }),
    ))
}
