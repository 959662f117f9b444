//! FPS boost: while a session runs for a detected game, ask the OS to favour the game's
//! process, and undo it when the session ends (or the game exits, or the app quits).
//!
//! One API, one file per OS, chosen by `cfg`:
//! - Linux: Feral GameMode (`gamemoded`, D-Bus session bus) — [`gamemode`]. GameMode does the
//!   tuning itself (CPU governor, I/O priority, niceness, screensaver inhibit) and undoes it
//!   when the last game unregisters or exits.
//! - Windows: the game's priority class to HIGH and the "High performance" power plan, each
//!   restored afterwards — the decisions in [`tuner`] (OS calls behind a trait, unit-tested on
//!   any OS), the calls in `windows.rs`.
//!
//! [`Boosting`] follows the detected game's pid over a session: engage on the first pid,
//! release and engage again when the game restarts under a new pid, release at the end. It is
//! off unless the gamer turns it on (`Settings::fps_boost`).

use std::future::Future;

#[cfg(target_os = "linux")]
pub mod gamemode;
pub mod tuner;
#[cfg(windows)]
mod windows;

/// Why the OS would not favour the game.
#[derive(Debug, thiserror::Error)]
pub enum BoostError {
    /// GameMode's daemon is not on the session bus (not installed, or not running).
    #[error(
        "GameMode is not available ({0}); install the gamemode package (it needs a desktop session bus)"
    )]
    GameModeUnavailable(String),
    /// `gamemoded` answered the call with a refusal.
    #[error("GameMode refused to {action} process {pid} (it answered {code})")]
    GameModeRefused {
        /// `register` or `unregister`.
        action: &'static str,
        /// The game's process.
        pid: u32,
        /// GameMode's return value (-1: refused, -2: rejected by its configuration).
        code: i32,
    },
    /// A Windows call failed.
    #[error("could not {action}: {source}")]
    Os {
        /// What was being done, e.g. "raise the priority of process 4242".
        action: String,
        /// The OS's error.
        source: std::io::Error,
    },
    /// This OS has no boost.
    #[error("FPS boost is not available on this OS")]
    Unsupported,
}

/// A way to make the OS favour one process while it plays.
pub trait Booster: Send {
    /// Starts favouring `pid`.
    fn engage(&mut self, pid: u32) -> impl Future<Output = Result<(), BoostError>> + Send;
    /// Undoes what [`Booster::engage`] did for `pid`; called after every engage, even a
    /// failed one (which may have done part of its work).
    fn release(&mut self, pid: u32) -> impl Future<Output = Result<(), BoostError>> + Send;
}

/// The boost of one session: which pid is favoured now.
#[derive(Debug)]
pub struct Boosting<B> {
    booster: B,
    current: Option<u32>,
}

impl<B: Booster> Boosting<B> {
    /// Nothing favoured yet.
    pub fn new(booster: B) -> Self {
        Boosting {
            booster,
            current: None,
        }
    }

    /// The game is now `pid` (`None`: not running). Releases the previous pid if it changed,
    /// then engages the new one; the error is the engage's (a failed release is logged).
    pub async fn follow(&mut self, pid: Option<u32>) -> Result<(), BoostError> {
        if pid == self.current {
            return Ok(());
        }
        self.end().await;
        let Some(pid) = pid else { return Ok(()) };
        self.current = Some(pid);
        let r = self.booster.engage(pid).await;
        match &r {
            Ok(()) => tracing::info!(pid, "FPS boost on"),
            Err(e) => tracing::warn!(pid, error = %e, "FPS boost failed"),
        }
        r
    }

    /// Releases the favoured pid, if any.
    pub async fn end(&mut self) {
        if let Some(old) = self.current.take() {
            match self.booster.release(old).await {
                Ok(()) => tracing::info!(pid = old, "FPS boost off"),
                Err(e) => tracing::warn!(pid = old, error = %e, "could not undo the FPS boost"),
            }
        }
    }

    /// The pid favoured now.
    pub fn current(&self) -> Option<u32> {
        self.current
    }
}

/// This OS's booster.
#[cfg(target_os = "linux")]
pub type Platform = gamemode::GameMode;
/// This OS's booster.
#[cfg(windows)]
pub type Platform = tuner::Tuner<windows::WindowsSystem>;
/// This OS's booster.
#[cfg(not(any(target_os = "linux", windows)))]
pub type Platform = Unsupported;

/// This OS's booster: GameMode on the session bus.
#[cfg(target_os = "linux")]
pub fn platform() -> Platform {
    gamemode::GameMode::session()
}

/// This OS's booster: priority class and power plan.
#[cfg(windows)]
pub fn platform() -> Platform {
    tuner::Tuner::new(windows::WindowsSystem)
}

/// This OS's booster: none.
#[cfg(not(any(target_os = "linux", windows)))]
pub fn platform() -> Platform {
    Unsupported
}

/// The booster of an OS that has none: every engage says so.
#[derive(Debug, Clone, Copy)]
pub struct Unsupported;

impl Booster for Unsupported {
    async fn engage(&mut self, _pid: u32) -> Result<(), BoostError> {
        Err(BoostError::Unsupported)
    }
    async fn release(&mut self, _pid: u32) -> Result<(), BoostError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls; refuses to engage the pids in `refuse`.
    #[derive(Debug, Default)]
    struct Recorder {
        calls: Vec<String>,
        refuse: Vec<u32>,
    }

    impl Booster for &mut Recorder {
        async fn engage(&mut self, pid: u32) -> Result<(), BoostError> {
            self.calls.push(format!("engage {pid}"));
            if self.refuse.contains(&pid) {
                return Err(BoostError::GameModeRefused {
                    action: "register",
                    pid,
                    code: -1,
                });
            }
            Ok(())
        }
        async fn release(&mut self, pid: u32) -> Result<(), BoostError> {
            self.calls.push(format!("release {pid}"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn follows_the_game_and_releases_every_engage() {
        let mut rec = Recorder {
            refuse: vec![30],
            ..Recorder::default()
        };
        let mut b = Boosting::new(&mut rec);
        b.follow(None).await.unwrap();
        b.follow(Some(10)).await.unwrap();
        b.follow(Some(10)).await.unwrap(); // same game: nothing
        b.follow(Some(20)).await.unwrap(); // restarted under a new pid
        b.follow(None).await.unwrap(); // exited
        assert!(b.follow(Some(30)).await.is_err());
        assert_eq!(b.current(), Some(30), "a failed engage is still released");
        b.end().await;
        b.end().await;
        assert_eq!(
            rec.calls,
            [
                "engage 10",
                "release 10",
                "engage 20",
                "release 20",
                "engage 30",
                "release 30"
            ]
        );
    }
}
