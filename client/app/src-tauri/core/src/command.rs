//! The IPC boundary: every command the window can give ([`Command`]) and every answer
//! ([`Reply`]), one Rust type each side, with the TypeScript types generated from them
//! (`tests/bindings.rs` writes `client/app/src/generated/`).
//!
//! On the wire a call is a command name and its JSON arguments: the Tauri shell's `call`
//! command and the bridge's `POST /api/call/{cmd}` both hand them to [`Command::from_call`],
//! which gives `unknown_command` or `bad_arguments` instead of ever guessing.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use ts_rs::TS;

use crate::history::HistoryEntry;
use crate::session::{SessionInfo, Summary};
use crate::settings::Settings;
use crate::update::UpdateView;
use crate::{AccountView, CmdError, RouteView, StateView};

/// A command from the window, with its arguments.
#[derive(Debug, Clone, PartialEq, Deserialize, TS)]
#[serde(tag = "cmd", content = "args", rename_all = "snake_case")]
pub enum Command {
    /// The window's starting state.
    State,
    /// Sign in (or sign up) at a billing server.
    SignIn(SignInArgs),
    /// Forget the login (a running session is stopped first).
    SignOut,
    /// Billing's `GET /v1/me`.
    Me,
    /// Billing's plans.
    Plans,
    /// Billing's payments of this account.
    Payments,
    /// Start paying for a plan.
    Pay(PayArgs),
    /// Redeem a promo code.
    Redeem(RedeemArgs),
    /// Start the free trial.
    StartTrial,
    /// Cancel the plan (it runs to the end of the period).
    CancelPlan,
    /// The catalog, filtered.
    Games(GamesQuery),
    /// Where a session for a game would go (a preview: no ticket).
    Route(GameArgs),
    /// Connect to a game.
    Connect(GameArgs),
    /// Stop the session, if any.
    Disconnect,
    /// Validate, save and apply settings.
    SaveSettings(Settings),
    /// The update state.
    Update,
    /// Look for an update now.
    CheckUpdate,
    /// Install the update on offer and restart (the gamer's consent; refused during a
    /// session).
    InstallUpdate,
    /// Past sessions (newest first), of one game or all.
    History(HistoryQuery),
}

/// `history`'s arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, TS)]
pub struct HistoryQuery {
    /// Only this game's sessions (empty: every game).
    #[serde(default)]
    pub game: String,
}

/// `sign_in`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TS)]
pub struct SignInArgs {
    /// Billing base URL (`http://` or `https://`).
    pub billing_url: String,
    /// Account email.
    pub email: String,
    /// Password (never logged, never stored).
    pub password: String,
    /// Create the account first.
    #[serde(default)]
    pub register: bool,
    /// Start the free trial if the account has none.
    #[serde(default)]
    pub trial: bool,
}

/// `pay`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TS)]
pub struct PayArgs {
    /// Plan name.
    pub plan: String,
}

/// `redeem`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TS)]
pub struct RedeemArgs {
    /// Promo code.
    pub code: String,
}

/// `games`' arguments: a filter (empty = everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, TS)]
pub struct GamesQuery {
    /// Part of a name or slug, any case.
    #[serde(default)]
    pub search: String,
    /// Exact category.
    #[serde(default)]
    pub category: String,
}

/// `route`'s and `connect`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TS)]
pub struct GameArgs {
    /// Game slug.
    pub game: String,
    /// The exit node to use instead of the best-ranked one.
    #[serde(default)]
    #[ts(optional)]
    pub node: Option<String>,
    /// Only exits in this region (one of the game's or the nodes' regions); none: the best
    /// anywhere.
    #[serde(default)]
    #[ts(optional)]
    pub region: Option<String>,
}

impl Command {
    /// The command called `name` with JSON `args` (`null` or `{}` for none).
    pub fn from_call(name: &str, args: Value) -> Result<Command, CmdError> {
        // No arguments mean "none" to a command without any, and "all defaults" to one
        // whose arguments all have defaults (`games`).
        let tries = if args.is_null() || args.as_object().is_some_and(|o| o.is_empty()) {
            vec![json!({ "cmd": name }), json!({ "cmd": name, "args": {} })]
        } else {
            vec![json!({ "cmd": name, "args": args })]
        };
        let mut last = None;
        for t in tries {
            match serde_json::from_value(t) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        // The name alone tells an unknown command from bad arguments: only the tag is read.
        match serde_json::from_value::<Command>(json!({ "cmd": name })) {
            Err(e) if e.to_string().starts_with("unknown variant") => Err(CmdError::new(
                "unknown_command",
                format!("no command {name:?}"),
            )),
            _ => Err(CmdError::bad_args(
                last.map_or_else(|| "none".to_owned(), |e| e.to_string()),
            )),
        }
    }
}

/// A catalog entry on the games screen (`plg_client::billing::GameInfo` plus `running`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct GameView {
    /// Catalog slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Category label, if the catalog has one.
    pub category: Option<String>,
    /// Regions the game's servers are in.
    pub regions: Vec<String>,
    /// Executable names used for auto-detection.
    pub process_names: Vec<String>,
    /// Detected running now.
    pub running: bool,
}

impl GameView {
    /// `g`, running or not.
    pub fn new(g: &plg_client::billing::GameInfo, running: bool) -> GameView {
        // Destructured so a new catalog field is a compile error here, not a silent omission.
        let plg_client::billing::GameInfo {
            slug,
            name,
            category,
            regions,
            process_names,
        } = g.clone();
        GameView {
            slug,
            name,
            category,
            regions,
            process_names,
            running,
        }
    }
}

/// `games`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct GamesView {
    /// The matching games.
    pub games: Vec<GameView>,
    /// Every category in the catalog, sorted.
    pub categories: Vec<String>,
    /// Billing cannot be reached: this is the catalog saved at the last successful fetch
    /// (Unix seconds of that fetch), and the screen keeps retrying.
    #[ts(type = "number | null")]
    pub offline_since: Option<u64>,
}

/// Declares [`Reply`] (one variant per command, serialized bare) and, for TypeScript,
/// [`Replies`] (each command's reply type by name) from one list, so they cannot disagree.
macro_rules! replies {
    ($( $name:literal => $Var:ident($ty:ty) $(as $ts:literal)? ; )*) => {
        /// A command's answer, serialized as just the value (untagged): the frontend knows
        /// which command it called.
        #[derive(Debug, Clone, Serialize)]
        #[serde(untagged)]
        // Built once per call and serialized at once: boxing `StateView` would buy nothing.
        #[allow(clippy::large_enum_variant)]
        pub enum Reply {
            $(
                #[doc = concat!("`", $name, "`'s answer.")]
                $Var($ty),
            )*
        }

        /// TypeScript only: each command's reply type, keyed by command name
        /// (`Replies["connect"]` is `SessionInfo`). Never built in Rust.
        #[derive(Debug, TS)]
        #[allow(non_snake_case, dead_code)]
        pub struct Replies {
            $(
                #[ts(rename = $name)]
                $( #[ts(type = $ts)] )?
                $Var: $ty,
            )*
        }

        impl Reply {
            /// Command names, in declaration order.
            pub const COMMANDS: &[&str] = &[$($name),*];
        }
    };
}

// Billing's own JSON (`me`, `plans`, `payments`, …) is passed through untyped
// (`serde_json::Value` in `plg_client::BillingClient`), so its TypeScript shape is hand-written
// in `src/types.ts` and these replies are `unknown` here.
replies! {
    "state" => State(StateView);
    "sign_in" => SignIn(AccountView);
    "sign_out" => SignOut(bool);
    "me" => Me(Value) as "unknown";
    "plans" => Plans(Value) as "unknown";
    "payments" => Payments(Value) as "unknown";
    "pay" => Pay(Value) as "unknown";
    "redeem" => Redeem(Value) as "unknown";
    "start_trial" => StartTrial(Value) as "unknown";
    "cancel_plan" => CancelPlan(Value) as "unknown";
    "games" => Games(GamesView);
    "route" => Route(RouteView);
    "connect" => Connect(SessionInfo);
    "disconnect" => Disconnect(Option<Summary>);
    "save_settings" => SaveSettings(Settings);
    "update" => Update(UpdateView);
    "check_update" => CheckUpdate(UpdateView);
    "install_update" => InstallUpdate(UpdateView);
    "history" => History(Vec<HistoryEntry>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse_into_commands() {
        assert_eq!(Command::from_call("state", Value::Null), Ok(Command::State));
        assert_eq!(Command::from_call("state", json!({})), Ok(Command::State));
        assert_eq!(
            Command::from_call("games", Value::Null),
            Ok(Command::Games(GamesQuery::default()))
        );
        assert_eq!(
            Command::from_call("connect", json!({"game": "demo"})),
            Ok(Command::Connect(GameArgs {
                game: "demo".into(),
                node: None,
                region: None,
            }))
        );
        assert!(matches!(
            Command::from_call("save_settings", json!({"paths": 3})),
            Ok(Command::SaveSettings(s)) if s.paths == 3
        ));
    }

    #[test]
    fn unknown_commands_and_bad_arguments_are_errors() {
        for name in ["nope", "", "State", "sign-in"] {
            let e = Command::from_call(name, Value::Null).unwrap_err();
            assert_eq!(e.code, "unknown_command", "{name}: {e:?}");
        }
        for (name, args) in [
            ("sign_in", Value::Null),
            ("sign_in", json!({"email": "a@b"})),
            ("connect", json!({"game": 5})),
            ("pay", json!([])),
            ("games", json!("cs2")),
            // A bad setting value is an argument error, not an unknown command, though serde
            // says "unknown variant" for it too.
            ("save_settings", json!({"language": "de"})),
            ("save_settings", json!({"colour": 1})),
        ] {
            let e = Command::from_call(name, args.clone()).unwrap_err();
            assert_eq!(e.code, "bad_arguments", "{name} {args}: {e:?}");
        }
        let e = Command::from_call("sign_in", Value::Null).unwrap_err();
        assert!(e.message.contains("billing_url"), "{e:?}");
    }

    /// Every reply name is a command, and every command has a reply.
    #[test]
    fn each_command_has_one_reply() {
        let mut seen = std::collections::BTreeSet::new();
        for name in Reply::COMMANDS {
            assert!(seen.insert(*name), "{name} twice");
            let e = Command::from_call(name, json!({"x": 1}));
            assert_ne!(
                e.err().map(|e| e.code),
                Some("unknown_command".to_owned()),
                "{name}"
            );
        }
        // `Command` has as many variants: count them through the TS union.
        let cfg = ts_rs::Config::new();
        let decl = Command::inline(&cfg);
        assert_eq!(
            decl.matches("\"cmd\":").count(),
            Reply::COMMANDS.len(),
            "{decl}"
        );
    }
}
