//! `plg-app-bridge`: the desktop app's frontend and command handlers served over HTTP, against
//! a local demo mesh started in-process (billing, relay nodes, an echo game server). The
//! end-to-end test drives it with a headless browser; `--mesh-only` just runs the mesh for
//! `npm run tauri dev` to sign in against.
//!
//! The handlers are `plg_app_core::App::dispatch`, the same the Tauri shell calls: `POST
//! /api/call/{cmd}` with the arguments as the JSON body (a `plg_app_core::Command`'s `args`)
//! answers the command's `Reply` or `{"error": {"code", "message"}}`; `GET /api/events` streams
//! `AppEvent`s (server-sent events). Everything else is a file from `--dist`.
//!
//! For the end-to-end test's failover, `POST /test/kill-node` with `{"control_addr": …}` stops
//! that node of the bridge's own demo mesh like a crash (no goodbye). It exists only when the
//! bridge started the mesh itself, on loopback; with `--billing` it answers 404.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use futures_util::Stream;
use plg_app_core::App;
use plg_sim::local_mesh::LocalMesh;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

/// Serve the app's frontend and handlers over HTTP against a local demo mesh.
#[derive(Parser, Debug)]
struct Cli {
    /// The built frontend (client/app/dist).
    #[arg(long, default_value = "dist")]
    dist: PathBuf,
    /// Where to listen (port 0 picks one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Relay nodes in the demo mesh (2 lets the route screen show a backup).
    #[arg(long, default_value_t = 2)]
    nodes: u8,
    /// Only run the demo mesh (for the real app to sign in against); serve nothing.
    #[arg(long)]
    mesh_only: bool,
    /// Billing URL to use instead of starting a demo mesh.
    #[arg(long)]
    billing: Option<String>,
    /// The demo mesh's ticket lifetime in seconds (at least 60; default: billing's 2 h). The
    /// long-session test (e2e/long.mjs) uses 60 to see renewals.
    #[arg(long)]
    ticket_ttl_secs: Option<u64>,
}

#[derive(Clone)]
struct Shared {
    app: Arc<App>,
    dist: Arc<Path>,
    /// The demo mesh, when the bridge started it.
    mesh: Option<Arc<tokio::sync::Mutex<LocalMesh>>>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLG_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut mesh = None;
    let billing = match cli.billing {
        Some(b) => b,
        None => {
            let mut m = LocalMesh::start_with_ttl(
                plg_sim::local_mesh::loopback_node_config(),
                cli.ticket_ttl_secs,
            )
            .await
            .context("starting the demo mesh")?;
            for i in 2..=cli.nodes {
                m.add_node(&format!("node-{i}")).await?;
            }
            let url = m.billing_url.clone();
            if let Err(e) = detectable_demo(&m).await {
                tracing::warn!(error = %e, "the demo game stays undetectable");
            }
            println!("billing {url}");
            mesh = Some(m);
            url
        }
    };
    let mesh = mesh.map(|m| Arc::new(tokio::sync::Mutex::new(m)));
    if cli.mesh_only {
        println!(
            "demo mesh running; sign in at {billing} with any new email (Sign up). Ctrl-C to stop."
        );
        tokio::signal::ctrl_c().await?;
    } else {
        serve(cli.dist, cli.listen, &billing, mesh.clone()).await?;
    }
    if let Some(m) = mesh.and_then(|m| Arc::try_unwrap(m).ok()) {
        m.into_inner().stop().await;
    }
    Ok(())
}

/// Gives the demo game this bridge's own process name in the catalog (through billing's admin
/// API), so the app's game detection finds it "running" — the real detection path, with a
/// process that is sure to exist.
async fn detectable_demo(mesh: &LocalMesh) -> Result<()> {
    let admin = "admin@demo.plg";
    mesh.gamer(admin).await?;
    mesh.billing.set_role(admin, "admin").await?;
    let mut c = plg_client::BillingClient::new(&mesh.billing_url);
    let (token, _) = c.login(admin, plg_sim::local_mesh::DEMO_PASSWORD).await?;
    let me = std::env::current_exe()?;
    let name = me
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the bridge's own name")?;
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/admin/games/demo", mesh.billing_url))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "name": "Local demo game",
            "destinations": [format!("127.0.0.1/32:{}", mesh.game.addr.port())],
            "process_names": [name],
            "category": "demo",
            "regions": ["local"],
        }))
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "billing answered {}",
        resp.status()
    );
    Ok(())
}

async fn serve(
    dist: PathBuf,
    listen: SocketAddr,
    billing: &str,
    mesh: Option<Arc<tokio::sync::Mutex<LocalMesh>>>,
) -> Result<()> {
    anyhow::ensure!(
        dist.join("index.html").exists(),
        "{} has no index.html: build the frontend first (npm run build)",
        dist.display()
    );
    // A private config dir: the bridge never touches the user's login.
    let config = tempfile::tempdir().context("creating a config dir")?;
    let app = App::new(config.path().to_owned(), billing);
    tokio::spawn(app.clone().watch_games(Duration::from_secs(3)));
    let shared = Shared {
        app,
        dist: dist.into(),
        mesh,
    };
    let router = Router::new()
        .route("/api/call/{cmd}", post(call))
        .route("/test/kill-node", post(kill_node))
        .route("/api/events", get(events))
        .fallback(get(file))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("bridge http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn call(
    State(s): State<Shared>,
    UrlPath(cmd): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let args = if body.is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, plg_app_core::CmdError::bad_args(e));
            }
        }
    };
    match s.app.dispatch(&cmd, args).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

#[derive(serde::Deserialize)]
struct KillNode {
    control_addr: SocketAddr,
}

/// Stops a node of the demo mesh like a crash (the e2e failover step).
async fn kill_node(State(s): State<Shared>, axum::Json(k): axum::Json<KillNode>) -> Response {
    let Some(mesh) = &s.mesh else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if mesh.lock().await.kill_node(k.control_addr).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            "no such node (or it is the last one)",
        )
            .into_response()
    }
}

fn error(status: StatusCode, e: plg_app_core::CmdError) -> Response {
    (status, axum::Json(serde_json::json!({ "error": e }))).into_response()
}

async fn events(
    State(s): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let stream = BroadcastStream::new(s.app.subscribe()).filter_map(|ev| {
        // A lagging receiver skips what it missed; the next tick catches it up.
        let ev = ev.ok()?;
        Some(Ok(Event::default().data(serde_json::to_string(&ev).ok()?)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn file(State(s): State<Shared>, uri: Uri) -> Response {
    let rel = uri.path().trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    // Only plain relative names under dist.
    if rel.split('/').any(|p| p == ".." || p.is_empty()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = s.dist.join(rel);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mime = match path.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                Some("json") => "application/json",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, mime)], bytes).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
