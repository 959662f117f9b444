//! Auto-update: when to look for a new version (at start, then daily), whether one may be
//! installed now (only with the gamer's consent, never while a session runs), and whether the
//! downloaded bundle is the one the release key signed.
//!
//! The Tauri shell plugs `tauri-plugin-updater` in behind [`UpdatePort`]: it reads the signed
//! manifest and, once this module has downloaded and verified the bundle, installs it (the
//! plugin verifies it once more, then runs `dpkg -i` / the NSIS setup) and restarts the app.
//! Everything that decides lives here, where it is tested without a window; the manifest
//! format and the release procedure are in `docs/app.md` ("Updates").

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use minisign_verify::{PublicKey, Signature};
use serde::Serialize;
use ts_rs::TS;

use crate::{App, AppEvent, CmdError, unix_now};

/// How often a running app looks for an update (and once at start).
pub const CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How often the watcher wakes to see whether a check is due: wall-clock time, so a laptop
/// that slept through the day checks soon after it wakes.
const WAKE_EVERY: Duration = Duration::from_secs(3600);
/// A bundle larger than this is refused before it fills memory (the installer's target is
/// 20 MB; a debug build's .deb is ~10× that).
pub const MAX_BUNDLE_BYTES: usize = 256 << 20;
/// Where the app looks by default, under the billing URL; `{{target}}`, `{{arch}}` and
/// `{{current_version}}` are filled in by the updater (`linux`, `x86_64`, `0.1.0`).
pub const DEFAULT_PATH: &str = "/v1/app/update/{{target}}/{{arch}}/{{current_version}}";
/// The environment variable that replaces the whole update URL (a static host's
/// `latest.json`, a test server).
pub const URL_ENV: &str = "PLG_UPDATE_URL";

/// The manifest URL: `override_url` (from [`URL_ENV`]) if set, else [`DEFAULT_PATH`] under
/// billing.
pub fn endpoint(billing_url: &str, override_url: Option<&str>) -> String {
    match override_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => u.to_owned(),
        None => format!("{}{DEFAULT_PATH}", billing_url.trim_end_matches('/')),
    }
}

/// Whether a check is due at `now` (Unix seconds) after one at `last` (none yet: at start).
pub fn due(now: u64, last: Option<u64>) -> bool {
    last.is_none_or(|l| now.saturating_sub(l) >= CHECK_EVERY.as_secs())
}

/// What the update server offers: a newer version, where its bundle is, and its signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Offer {
    /// The new version.
    pub version: String,
    /// Release notes.
    pub notes: Option<String>,
    /// Where the bundle (.deb, NSIS setup.exe) is.
    pub url: String,
    /// The bundle's signature as the manifest carries it: base64 of a minisign signature.
    pub signature: String,
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offer")
            .field("version", &self.version)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Boxed future of the port's methods.
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The shell's side of updating (`tauri-plugin-updater` in the app; a fake in tests).
pub trait UpdatePort: Send + Sync + fmt::Debug {
    /// The running app's version (tauri.conf.json's, which the packages carry).
    fn current_version(&self) -> String;
    /// Reads the manifest: `Some` if it offers a version newer than this one.
    fn check(&self) -> PortFuture<'_, Option<Offer>>;
    /// The release public key the bundle must be signed with (base64 of a minisign key, as in
    /// tauri.conf.json `plugins.updater.pubkey`).
    fn pubkey(&self) -> String;
    /// Installs a bundle this module has verified (the plugin verifies it again).
    fn install(&self, bundle: Vec<u8>) -> PortFuture<'_, ()>;
    /// Starts the new version in place of this process.
    fn restart(&self);
}

/// Where updating stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePhase {
    /// Not checked yet (or this build cannot update itself).
    Idle,
    /// Looking at the manifest.
    Checking,
    /// This is the newest version.
    UpToDate,
    /// A newer version can be installed.
    Available,
    /// Downloading, verifying, installing.
    Installing,
    /// Installed: the app restarts.
    Installed,
    /// The last check or install failed (`message` says why).
    Failed,
}

/// The update state, for the window's "Update available" prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct UpdateView {
    /// This app's version.
    pub current: String,
    /// Where it stands.
    pub phase: UpdatePhase,
    /// The version on offer, if any.
    pub available: Option<String>,
    /// Its release notes.
    pub notes: Option<String>,
    /// Unix seconds of the last check.
    #[ts(type = "number | null")]
    pub last_check: Option<u64>,
    /// Why the last check or install failed.
    pub message: Option<String>,
}

/// Why an update was not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// This build has no updater (the test bridge).
    #[error("this build of the app cannot update itself")]
    Unsupported,
    /// A session runs: installing restarts the app.
    #[error(
        "an update can't be installed during a game session: disconnect first (installing restarts the app)"
    )]
    SessionLive,
    /// Nothing newer was found.
    #[error("there is no update to install")]
    NothingToInstall,
    /// An install is already under way.
    #[error("the update is already being installed")]
    Busy,
    /// The manifest could not be read.
    #[error("could not check for updates: {0}")]
    Check(String),
    /// The bundle could not be downloaded.
    #[error("could not download the update: {0}")]
    Download(String),
    /// The signature or the key is not minisign data.
    #[error("the update was refused: its signature is unreadable ({0})")]
    BadSignature(String),
    /// Signed with another key than this app's release key.
    #[error("the update was refused: it is signed with a key this app does not trust")]
    UntrustedKey,
    /// The bytes are not the ones that were signed.
    #[error(
        "the update was refused: the downloaded file does not match its signature (changed after signing or damaged in transit)"
    )]
    Tampered,
    /// The signature is for another version than the manifest announced (a downgrade trick).
    #[error("the update was refused: it is signed as version {signed} but offered as {announced}")]
    VersionMismatch {
        /// The version in the signature's trusted comment.
        signed: String,
        /// The version in the manifest.
        announced: String,
    },
    /// The signature names no version.
    #[error("the update was refused: its signature does not name the version it is for")]
    UnsignedVersion,
    /// The installer failed.
    #[error("could not install the update: {0}")]
    Install(String),
}

impl UpdateError {
    /// Stable code for the window.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsupported => "update_unsupported",
            Self::SessionLive => "update_during_session",
            Self::NothingToInstall => "no_update",
            Self::Busy => "update_busy",
            Self::Check(_) => "update_check_failed",
            Self::Download(_) => "update_download_failed",
            Self::BadSignature(_)
            | Self::UntrustedKey
            | Self::Tampered
            | Self::VersionMismatch { .. }
            | Self::UnsignedVersion => "update_refused",
            Self::Install(_) => "update_install_failed",
        }
    }
}

impl From<UpdateError> for CmdError {
    fn from(e: UpdateError) -> Self {
        CmdError::new(e.code(), e.to_string())
    }
}

/// Checks that `bundle` is what the holder of `pubkey` signed as version `announced`:
/// `signature` and `pubkey` are base64 of minisign's text form, as `tauri signer` writes them
/// and the manifest and tauri.conf.json carry them. The version must be in the signed trusted
/// comment (`tauri signer sign --app-version`, which `tauri build` passes).
pub fn verify(
    bundle: &[u8],
    signature: &str,
    pubkey: &str,
    announced: &str,
) -> Result<(), UpdateError> {
    let text = |what: &str, b64: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| UpdateError::BadSignature(format!("the {what} is not base64 text")))
    };
    let key = PublicKey::decode(&text("release key", pubkey)?)
        .map_err(|e| UpdateError::BadSignature(format!("release key: {e}")))?;
    let sig = Signature::decode(&text("signature", signature)?)
        .map_err(|e| UpdateError::BadSignature(format!("signature: {e}")))?;
    key.verify(bundle, &sig, false).map_err(|e| match e {
        minisign_verify::Error::UnexpectedKeyId => UpdateError::UntrustedKey,
        minisign_verify::Error::InvalidSignature => UpdateError::Tampered,
        other => UpdateError::BadSignature(other.to_string()),
    })?;
    // Only now is the trusted comment trusted: the global signature covers it.
    let signed = sig
        .trusted_comment()
        .split('\t')
        .find_map(|f| f.strip_prefix("version:"))
        .ok_or(UpdateError::UnsignedVersion)?;
    let norm = |v: &str| v.trim().trim_start_matches('v').to_owned();
    if norm(signed) != norm(announced) {
        return Err(UpdateError::VersionMismatch {
            signed: signed.to_owned(),
            announced: announced.to_owned(),
        });
    }
    Ok(())
}

/// Downloads a bundle, refusing more than [`MAX_BUNDLE_BYTES`].
async fn download(url: &str) -> Result<Vec<u8>, UpdateError> {
    let err = |e: reqwest::Error| UpdateError::Download(e.without_url().to_string());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .connect_timeout(Duration::from_secs(15))
        .build()
        .map_err(err)?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(err)?;
    let mut bundle = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(err)? {
        if bundle.len() + chunk.len() > MAX_BUNDLE_BYTES {
            return Err(UpdateError::Download(format!(
                "the file is larger than {} MiB",
                MAX_BUNDLE_BYTES >> 20
            )));
        }
        bundle.extend_from_slice(&chunk);
    }
    Ok(bundle)
}

/// The app's update state: the shell's port, the offer, the view.
#[derive(Debug, Default)]
pub(crate) struct Updates {
    port: OnceLock<Arc<dyn UpdatePort>>,
    state: StdMutex<State>,
}

#[derive(Debug, Default)]
struct State {
    offer: Option<Offer>,
    phase: Option<UpdatePhase>,
    last_check: Option<u64>,
    message: Option<String>,
}

impl Updates {
    fn view(&self) -> UpdateView {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        UpdateView {
            current: self.port.get().map_or_else(
                || env!("CARGO_PKG_VERSION").to_owned(),
                |p| p.current_version(),
            ),
            phase: s.phase.unwrap_or(UpdatePhase::Idle),
            available: s.offer.as_ref().map(|o| o.version.clone()),
            notes: s.offer.as_ref().and_then(|o| o.notes.clone()),
            last_check: s.last_check,
            message: s.message.clone(),
        }
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// An install is under way (or done and the app is restarting): no session may start.
    pub(crate) fn installing(&self) -> bool {
        matches!(
            self.state.lock().unwrap_or_else(|p| p.into_inner()).phase,
            Some(UpdatePhase::Installing | UpdatePhase::Installed)
        )
    }
}

impl App {
    /// Plugs in the shell's updater (once; later calls are ignored).
    pub fn set_update_port(&self, port: Arc<dyn UpdatePort>) {
        let _ = self.updates.port.set(port);
    }

    /// The update state.
    pub fn update_view(&self) -> UpdateView {
        self.updates.view()
    }

    fn update_port(&self) -> Result<Arc<dyn UpdatePort>, UpdateError> {
        self.updates
            .port
            .get()
            .cloned()
            .ok_or(UpdateError::Unsupported)
    }

    fn publish_update(&self) -> UpdateView {
        let v = self.updates.view();
        self.emit(AppEvent::Update(v.clone()));
        v
    }

    async fn session_live(&self) -> bool {
        let inner = self.inner.lock().await;
        inner.connecting || inner.session.as_ref().is_some_and(|s| !s.finished())
    }

    /// Reads the manifest now. A failed check is reported in the view (and returned), never
    /// shown as a notice: the app works on without updating.
    pub async fn check_update(&self) -> Result<UpdateView, UpdateError> {
        let port = self.update_port()?;
        if self.updates.installing() {
            return Err(UpdateError::Busy);
        }
        self.updates.set(|s| s.phase = Some(UpdatePhase::Checking));
        self.publish_update();
        let result = port.check().await;
        let now = unix_now();
        let r = match result {
            Ok(offer) => {
                tracing::info!(offer = ?offer, "update check");
                self.updates.set(|s| {
                    s.phase = Some(if offer.is_some() {
                        UpdatePhase::Available
                    } else {
                        UpdatePhase::UpToDate
                    });
                    s.offer = offer;
                    s.message = None;
                    s.last_check = Some(now);
                });
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "update check failed");
                let e = UpdateError::Check(e);
                self.updates.set(|s| {
                    s.phase = Some(UpdatePhase::Failed);
                    s.message = Some(e.to_string());
                    s.last_check = Some(now);
                });
                Err(e)
            }
        };
        let v = self.publish_update();
        r.map(|()| v)
    }

    /// Installs the offered update — the gamer asked for it — and restarts the app. Refused
    /// while a session runs or is being set up; the bundle is downloaded and verified against
    /// the release key before the installer sees it.
    pub async fn install_update(&self) -> Result<UpdateView, UpdateError> {
        let port = self.update_port()?;
        if self.session_live().await {
            return Err(UpdateError::SessionLive);
        }
        let offer = {
            let mut s = self.updates.state.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(
                s.phase,
                Some(UpdatePhase::Installing | UpdatePhase::Installed | UpdatePhase::Checking)
            ) {
                return Err(UpdateError::Busy);
            }
            let offer = s.offer.clone().ok_or(UpdateError::NothingToInstall)?;
            s.phase = Some(UpdatePhase::Installing);
            s.message = None;
            offer
        };
        self.publish_update();
        let result = async {
            let bundle = download(&offer.url).await?;
            verify(&bundle, &offer.signature, &port.pubkey(), &offer.version)?;
            // A connect that began during the download would die with the restart.
            if self.session_live().await {
                return Err(UpdateError::SessionLive);
            }
            tracing::info!(version = %offer.version, bytes = bundle.len(), "update verified; installing");
            port.install(bundle).await.map_err(UpdateError::Install)
        }
        .await;
        match result {
            Ok(()) => {
                self.updates.set(|s| s.phase = Some(UpdatePhase::Installed));
                let v = self.publish_update();
                port.restart();
                Ok(v)
            }
            Err(e) => {
                tracing::warn!(error = %e, version = %offer.version, "update not installed");
                self.updates.set(|s| {
                    s.phase = Some(UpdatePhase::Failed);
                    s.message = Some(e.to_string());
                });
                self.publish_update();
                Err(e)
            }
        }
    }

    /// Checks at start and then whenever [`CHECK_EVERY`] has passed. Runs forever; returns
    /// at once if this build has no updater. Checking is harmless during a session; only
    /// installing waits for the gamer.
    pub async fn watch_updates(self: Arc<Self>) {
        if self.update_port().is_err() {
            return;
        }
        loop {
            let last = self.updates.view().last_check;
            if due(unix_now(), last) && !self.updates.installing() {
                let _ = self.check_update().await;
            }
            tokio::time::sleep(WAKE_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/update");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }
    fn text(name: &str) -> String {
        String::from_utf8(fixture(name)).unwrap()
    }

    #[test]
    fn the_signed_bundle_verifies() {
        let key = text("test-key.TEST-ONLY.pub");
        let sig = text("bundle.bin.sig");
        assert_eq!(verify(&fixture("bundle.bin"), &sig, &key, "0.1.1"), Ok(()));
        assert_eq!(verify(&fixture("bundle.bin"), &sig, &key, "v0.1.1"), Ok(()));
    }

    #[test]
    fn a_tampered_bundle_is_refused() {
        let key = text("test-key.TEST-ONLY.pub");
        let sig = text("bundle.bin.sig");
        let e = verify(&fixture("bundle-tampered.bin"), &sig, &key, "0.1.1").unwrap_err();
        assert_eq!(e, UpdateError::Tampered);
        assert_eq!(e.code(), "update_refused");
        assert!(
            e.to_string().contains("does not match its signature"),
            "{e}"
        );
        // One byte cut off the end is as bad.
        let mut short = fixture("bundle.bin");
        short.pop();
        assert_eq!(
            verify(&short, &sig, &key, "0.1.1"),
            Err(UpdateError::Tampered)
        );
    }

    #[test]
    fn bad_signatures_are_refused() {
        let key = text("test-key.TEST-ONLY.pub");
        let bundle = fixture("bundle.bin");
        // The right file, signed by another key.
        let e = verify(&bundle, &text("bundle.bin.other-key.sig"), &key, "0.1.1").unwrap_err();
        assert_eq!(e, UpdateError::UntrustedKey);
        assert!(e.to_string().contains("key this app does not trust"), "{e}");
        // The right key id, but the signature bytes altered.
        let e = verify(&bundle, &text("bundle.bin.corrupt.sig"), &key, "0.1.1").unwrap_err();
        assert_eq!(e, UpdateError::Tampered);
        // Not a signature at all.
        for junk in ["", "not base64!", "aGVsbG8="] {
            let e = verify(&bundle, junk, &key, "0.1.1").unwrap_err();
            assert!(matches!(e, UpdateError::BadSignature(_)), "{junk:?}: {e:?}");
            assert!(e.to_string().contains("signature is unreadable"), "{e}");
        }
    }

    #[test]
    fn the_signed_version_must_be_the_announced_one() {
        let key = text("test-key.TEST-ONLY.pub");
        let sig = text("bundle.bin.sig");
        let e = verify(&fixture("bundle.bin"), &sig, &key, "0.2.0").unwrap_err();
        assert_eq!(
            e,
            UpdateError::VersionMismatch {
                signed: "0.1.1".into(),
                announced: "0.2.0".into()
            }
        );
        assert!(
            e.to_string()
                .contains("signed as version 0.1.1 but offered as 0.2.0")
        );
    }

    #[test]
    fn the_app_release_key_is_not_the_test_key() {
        let conf: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tauri.conf.json"))
                .unwrap(),
        )
        .unwrap();
        let release = conf["plugins"]["updater"]["pubkey"].as_str().unwrap();
        assert_ne!(release.trim(), text("test-key.TEST-ONLY.pub").trim());
        // And it is a key: the test bundle is refused as signed by an untrusted one.
        let e = verify(
            &fixture("bundle.bin"),
            &text("bundle.bin.sig"),
            release,
            "0.1.1",
        );
        assert_eq!(e, Err(UpdateError::UntrustedKey));
    }

    #[test]
    fn checks_are_due_at_start_and_daily() {
        let day = CHECK_EVERY.as_secs();
        assert!(due(1_000_000, None));
        assert!(!due(1_000_000, Some(1_000_000)));
        assert!(!due(1_000_000 + day - 1, Some(1_000_000)));
        assert!(due(1_000_000 + day, Some(1_000_000)));
        // A clock set back does not stop checks for ever... nor run them in a loop.
        assert!(!due(999_000, Some(1_000_000)));
    }

    #[test]
    fn the_url_is_configuration() {
        assert_eq!(
            endpoint("https://billing.example/", None),
            "https://billing.example/v1/app/update/{{target}}/{{arch}}/{{current_version}}"
        );
        assert_eq!(
            endpoint("https://b", Some(" http://127.0.0.1:9/latest.json ")),
            "http://127.0.0.1:9/latest.json"
        );
        assert_eq!(endpoint("https://b", Some("")), endpoint("https://b", None));
    }

    /// A fake shell: offers a bundle served from a loopback HTTP server, records installs.
    #[derive(Debug)]
    struct FakePort {
        offer: Option<Offer>,
        installed: StdMutex<Vec<usize>>,
        restarted: std::sync::atomic::AtomicBool,
    }

    impl UpdatePort for FakePort {
        fn current_version(&self) -> String {
            "0.1.0".into()
        }
        fn check(&self) -> PortFuture<'_, Option<Offer>> {
            Box::pin(async move { Ok(self.offer.clone()) })
        }
        fn pubkey(&self) -> String {
            text("test-key.TEST-ONLY.pub")
        }
        fn install(&self, bundle: Vec<u8>) -> PortFuture<'_, ()> {
            self.installed.lock().unwrap().push(bundle.len());
            Box::pin(async { Ok(()) })
        }
        fn restart(&self) {
            self.restarted
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Serves `body` for every request on 127.0.0.1:0; returns the base URL.
    async fn serve(body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        format!("http://{addr}")
    }

    async fn app_with(
        bundle: &str,
        signature: &str,
    ) -> (Arc<App>, Arc<FakePort>, tempfile::TempDir) {
        let url = serve(fixture(bundle)).await;
        let dir = tempfile::tempdir().unwrap();
        let app = App::new(dir.path().to_owned(), "http://127.0.0.1:9");
        let port = Arc::new(FakePort {
            offer: Some(Offer {
                version: "0.1.1".into(),
                notes: Some("faster".into()),
                url: format!("{url}/bundle.deb"),
                signature: text(signature),
            }),
            installed: StdMutex::default(),
            restarted: Default::default(),
        });
        app.set_update_port(port.clone());
        (app, port, dir)
    }

    #[tokio::test]
    async fn a_verified_update_is_installed_only_when_asked() {
        let (app, port, _dir) = app_with("bundle.bin", "bundle.bin.sig").await;
        assert_eq!(app.update_view().phase, UpdatePhase::Idle);
        let v = app.check_update().await.unwrap();
        assert_eq!(v.phase, UpdatePhase::Available);
        assert_eq!(v.available.as_deref(), Some("0.1.1"));
        assert_eq!(v.current, "0.1.0");
        assert!(v.last_check.is_some());
        // Checking installs nothing.
        assert!(port.installed.lock().unwrap().is_empty());
        let v = app.install_update().await.unwrap();
        assert_eq!(v.phase, UpdatePhase::Installed);
        assert_eq!(
            *port.installed.lock().unwrap(),
            vec![fixture("bundle.bin").len()]
        );
        assert!(port.restarted.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_tampered_download_never_reaches_the_installer() {
        let (app, port, _dir) = app_with("bundle-tampered.bin", "bundle.bin.sig").await;
        app.check_update().await.unwrap();
        let e = app.install_update().await.unwrap_err();
        assert_eq!(e, UpdateError::Tampered);
        let v = app.update_view();
        assert_eq!(v.phase, UpdatePhase::Failed);
        assert!(v.message.unwrap().contains("does not match its signature"));
        assert!(port.installed.lock().unwrap().is_empty());
        assert!(!port.restarted.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn nothing_is_installed_during_a_session_or_without_an_offer() {
        let (app, port, _dir) = app_with("bundle.bin", "bundle.bin.sig").await;
        assert_eq!(
            app.install_update().await.unwrap_err(),
            UpdateError::NothingToInstall
        );
        app.check_update().await.unwrap();
        app.inner.lock().await.connecting = true;
        let e = app.install_update().await.unwrap_err();
        assert_eq!(e, UpdateError::SessionLive);
        assert_eq!(e.code(), "update_during_session");
        assert!(port.installed.lock().unwrap().is_empty());
        // Still on offer once the session is over.
        assert_eq!(app.update_view().phase, UpdatePhase::Available);
        app.inner.lock().await.connecting = false;
        app.install_update().await.unwrap();
    }

    #[tokio::test]
    async fn without_a_port_there_is_no_updater() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::new(dir.path().to_owned(), "http://127.0.0.1:9");
        assert_eq!(
            app.check_update().await.unwrap_err(),
            UpdateError::Unsupported
        );
        // The watcher returns at once instead of looping.
        tokio::time::timeout(Duration::from_secs(5), app.clone().watch_updates())
            .await
            .unwrap();
    }
}
