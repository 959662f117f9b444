//! Linux: Feral GameMode over D-Bus. `gamemoded` owns `com.feralinteractive.GameMode` on the
//! session bus; we register the game's process with `RegisterGameByPID(caller, game)` (the app
//! asks on behalf of another process) and unregister it with `UnregisterGameByPID`. GameMode
//! applies its own tuning while any game is registered and drops a game that exits by itself,
//! so a game that quits mid-session needs nothing from us.

use std::time::Duration;

use zbus::Connection;

use super::{BoostError, Booster};

const SERVICE: &str = "com.feralinteractive.GameMode";
const PATH: &str = "/com/feralinteractive/GameMode";
/// A daemon that does not answer within this is treated as absent: the session must not wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What `QueryStatus` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// GameMode is off.
    Inactive,
    /// GameMode is on, for other processes.
    ActiveForOthers,
    /// GameMode is on and this process is registered.
    Registered,
    /// GameMode answered something else (its error values are negative).
    Other(i32),
}

impl From<i32> for Status {
    fn from(v: i32) -> Self {
        match v {
            0 => Status::Inactive,
            1 => Status::ActiveForOthers,
            2 => Status::Registered,
            v => Status::Other(v),
        }
    }
}

/// A GameMode client: connects on first use, remembers which game it registered.
#[derive(Debug)]
pub struct GameMode {
    /// `None`: the session bus (`DBUS_SESSION_BUS_ADDRESS`).
    address: Option<String>,
    conn: Option<Connection>,
    registered: Option<u32>,
}

impl GameMode {
    /// GameMode on the user's session bus.
    pub fn session() -> Self {
        GameMode {
            address: None,
            conn: None,
            registered: None,
        }
    }

    /// GameMode on the bus at `address` (a D-Bus address such as `unix:path=/run/…`).
    pub fn at(address: &str) -> Self {
        GameMode {
            address: Some(address.to_owned()),
            ..GameMode::session()
        }
    }

    async fn conn(&mut self) -> Result<Connection, BoostError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let unavailable = |e: zbus::Error| BoostError::GameModeUnavailable(e.to_string());
        let connect = async {
            match &self.address {
                None => Connection::session().await,
                Some(a) => {
                    zbus::connection::Builder::address(a.as_str())?
                        .build()
                        .await
                }
            }
        };
        let c = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .map_err(|_| BoostError::GameModeUnavailable("the session bus did not answer".into()))?
            .map_err(unavailable)?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// Calls `method(our pid, pid)` and returns GameMode's integer answer.
    async fn call(&mut self, method: &str, pid: u32) -> Result<i32, BoostError> {
        let conn = self.conn().await?;
        let args = (std::process::id() as i32, pid as i32);
        let call = conn.call_method(Some(SERVICE), PATH, Some(SERVICE), method, &args);
        let reply = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => {
                return Err(BoostError::GameModeUnavailable(format!(
                    "gamemoded did not answer {method} within {CALL_TIMEOUT:?}"
                )));
            }
            Ok(Err(e)) => {
                // A dropped bus connection is opened again on the next call.
                self.conn = None;
                return Err(BoostError::GameModeUnavailable(e.to_string()));
            }
            Ok(Ok(r)) => r,
        };
        reply.body().deserialize::<i32>().map_err(|e| {
            BoostError::GameModeUnavailable(format!("{method}: unexpected reply: {e}"))
        })
    }

    /// GameMode's status for `pid`.
    pub async fn status(&mut self, pid: u32) -> Result<Status, BoostError> {
        self.call("QueryStatusByPID", pid).await.map(Status::from)
    }

    /// Registers `pid` as a game.
    pub async fn register(&mut self, pid: u32) -> Result<(), BoostError> {
        match self.call("RegisterGameByPID", pid).await? {
            0 => {
                self.registered = Some(pid);
                Ok(())
            }
            code => Err(BoostError::GameModeRefused {
                action: "register",
                pid,
                code,
            }),
        }
    }

    /// Unregisters `pid` (registered by [`GameMode::register`]); nothing if it was not.
    pub async fn unregister(&mut self, pid: u32) -> Result<(), BoostError> {
        if self.registered != Some(pid) {
            return Ok(());
        }
        self.registered = None;
        match self.call("UnregisterGameByPID", pid).await? {
            0 => Ok(()),
            // The game exited and GameMode's reaper dropped it already: nothing to undo.
            _ if !std::path::Path::new(&format!("/proc/{pid}")).exists() => Ok(()),
            code => Err(BoostError::GameModeRefused {
                action: "unregister",
                pid,
                code,
            }),
        }
    }
}

impl Booster for GameMode {
    async fn engage(&mut self, pid: u32) -> Result<(), BoostError> {
        self.register(pid).await
    }

    async fn release(&mut self, pid: u32) -> Result<(), BoostError> {
        self.unregister(pid).await
    }
}
