//! Things the gamer is told about, in their language: shown in the window and, by the desktop
//! shell, as system notifications.

use serde::Serialize;
use ts_rs::TS;

use crate::settings::Language;

/// A message for the gamer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct Notice {
    /// What it is about.
    pub kind: NoticeKind,
    /// Whether it deserves a system notification (not only a line in the window).
    pub notify: bool,
    /// Short title.
    pub title: String,
    /// One sentence.
    pub body: String,
}

/// A notice's stable kind, for the window to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The session moved to another node.
    Failover,
    /// Every path went silent and no node took the session.
    NodeLost,
    /// The primary path changed.
    PrimaryChanged,
    /// Frames go (or stopped going) over the QUIC control connection.
    ProtectedMode,
    /// The node refused a destination.
    DestinationRefused,
    /// The game opened more flows than one session carries.
    TooManyFlows,
    /// The ticket expired; the session stopped.
    TicketExpired,
    /// The plan ends soon.
    PlanExpiring,
    /// The plan has ended.
    PlanExpired,
    /// A catalog game is running.
    GameDetected,
    /// Another exit would lower the ping; taken between matches.
    BetterRoute,
    /// The session moved to an exit with a lower ping (the game was idle).
    RouteChanged,
    /// The FPS boost is on but the OS would not apply it.
    BoostFailed,
}

/// What happened, with its details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What<'a> {
    /// The session moved to node `to` after `gap_ms` without replies.
    Failover { to: &'a str, gap_ms: u128 },
    /// Every path went silent and no node took the session.
    NodeLost { reason: &'a str },
    /// The primary path changed.
    PrimaryChanged { from: u8, to: u8 },
    /// Frames started (`on`) or stopped travelling as QUIC datagrams on the control
    /// connection because the node's UDP data port does not answer.
    ProtectedMode { on: bool, reason: &'a str },
    /// The node refused a destination.
    DestinationRefused { addr: String, game: &'a str },
    /// The game opened more flows than one session carries.
    TooManyFlows,
    /// The ticket expired; the session stopped.
    TicketExpired,
    /// The plan ends in `days` days.
    PlanExpiring { days: i64 },
    /// The plan has ended.
    PlanExpired,
    /// A catalog game is running.
    GameDetected { name: &'a str },
    /// Exit `exit` would lower the ping (`text`: the client's verdict, in English).
    BetterRoute { exit: &'a str, text: &'a str },
    /// The session moved to a better exit while the game was idle (`why`, in English).
    RouteChanged { why: &'a str },
    /// The FPS boost could not be applied (`reason`, in English: the OS's or GameMode's word).
    BoostFailed { reason: &'a str },
}

/// The notice for `what` in `lang`.
pub fn notice(what: What<'_>, lang: Language) -> Notice {
    let ru = lang == Language::Ru;
    let (kind, notify, title, body) = match what {
        What::Failover { to, gap_ms } => (
            NoticeKind::Failover,
            true,
            if ru {
                "Маршрут переключён"
            } else {
                "Route switched"
            }
            .to_owned(),
            if ru {
                format!("Сессия перенесена на узел {to} после {gap_ms} мс без ответа")
            } else {
                format!("The session moved to node {to} after {gap_ms} ms without replies")
            },
        ),
        What::BetterRoute { exit, text } => (
            NoticeKind::BetterRoute,
            false,
            if ru {
                "Найден маршрут лучше"
            } else {
                "Better route found"
            }
            .to_owned(),
            if ru {
                format!(
                    "Через узел {exit} пинг будет ниже; сессия перейдёт на него, когда игра 30 с ничего не отправит (между матчами)"
                )
            } else {
                text.to_owned()
            },
        ),
        What::RouteChanged { why } => (
            NoticeKind::RouteChanged,
            true,
            if ru {
                "Маршрут сменён"
            } else {
                "Route changed"
            }
            .to_owned(),
            if ru {
                "Игра простаивала: сессия перенесена на узел с меньшим пингом".to_owned()
            } else {
                why.to_owned()
            },
        ),
        What::NodeLost { reason } => (
            NoticeKind::NodeLost,
            true,
            if ru {
                "Узел не отвечает"
            } else {
                "Node not answering"
            }
            .to_owned(),
            if ru {
                format!("Ни один другой узел не принял сессию ({reason}); повторяем")
            } else {
                format!("No other node took the session ({reason}); retrying")
            },
        ),
        What::PrimaryChanged { from, to } => (
            NoticeKind::PrimaryChanged,
            false,
            if ru {
                "Основной путь сменился"
            } else {
                "Primary path changed"
            }
            .to_owned(),
            if ru {
                format!("Путь {from} → путь {to}")
            } else {
                format!("Path {from} → path {to}")
            },
        ),
        What::ProtectedMode { on, reason } => (
            NoticeKind::ProtectedMode,
            on,
            match (ru, on) {
                (true, true) => "Защищённый режим включён",
                (true, false) => "Защищённый режим выключен",
                (false, true) => "Protected mode on",
                (false, false) => "Protected mode off",
            }
            .to_owned(),
            if ru && on {
                "UDP-порт узла не отвечает: трафик идёт через QUIC-соединение".to_owned()
            } else if ru {
                "UDP снова работает".to_owned()
            } else {
                reason.to_owned()
            },
        ),
        What::DestinationRefused { addr, game } => (
            NoticeKind::DestinationRefused,
            true,
            if ru {
                "Адрес не разрешён"
            } else {
                "Destination refused"
            }
            .to_owned(),
            if ru {
                format!("Узел отказался пересылать на {addr}: билет для {game} его не разрешает")
            } else {
                format!("The node refused {addr}: the ticket for {game} does not allow it")
            },
        ),
        What::TooManyFlows => (
            NoticeKind::TooManyFlows,
            false,
            if ru {
                "Слишком много потоков"
            } else {
                "Too many flows"
            }
            .to_owned(),
            if ru {
                "Игра открыла больше потоков, чем несёт одна сессия".to_owned()
            } else {
                "The game opened more flows than one session carries".to_owned()
            },
        ),
        What::TicketExpired => (
            NoticeKind::TicketExpired,
            true,
            if ru {
                "Сессия завершена"
            } else {
                "Session ended"
            }
            .to_owned(),
            if ru {
                "Билет сессии истёк; подключитесь снова".to_owned()
            } else {
                "The session ticket expired; connect again".to_owned()
            },
        ),
        What::PlanExpiring { days } => (
            NoticeKind::PlanExpiring,
            true,
            if ru {
                "Подписка заканчивается"
            } else {
                "Plan ending soon"
            }
            .to_owned(),
            if ru {
                format!("Подписка закончится через {days} дн.; продлите её на экране «Подписка»")
            } else {
                format!("Your plan ends in {days} day(s); renew it on the Subscription screen")
            },
        ),
        What::PlanExpired => (
            NoticeKind::PlanExpired,
            true,
            if ru {
                "Подписка закончилась"
            } else {
                "Plan ended"
            }
            .to_owned(),
            if ru {
                "Оплатите план или введите промокод, чтобы играть через PLG".to_owned()
            } else {
                "Pay for a plan or redeem a promo code to play through PLG".to_owned()
            },
        ),
        What::GameDetected { name } => (
            NoticeKind::GameDetected,
            true,
            if ru {
                "Игра запущена"
            } else {
                "Game detected"
            }
            .to_owned(),
            if ru {
                format!("{name} запущена — ускорить?")
            } else {
                format!("{name} is running — accelerate it?")
            },
        ),
        What::BoostFailed { reason } => (
            NoticeKind::BoostFailed,
            true,
            if ru {
                "FPS-буст не включён"
            } else {
                "FPS boost not applied"
            }
            .to_owned(),
            if ru {
                format!("Система не дала ускорить игру: {reason}. Сессия работает как обычно")
            } else {
                format!("The system would not boost the game: {reason}. The session runs as usual")
            },
        ),
    };
    Notice {
        kind,
        notify,
        title,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages() {
        let en = notice(
            What::Failover {
                to: "node-2",
                gap_ms: 1200,
            },
            Language::En,
        );
        let ru = notice(
            What::Failover {
                to: "node-2",
                gap_ms: 1200,
            },
            Language::Ru,
        );
        assert_eq!(en.kind, ru.kind);
        assert!(en.body.contains("node-2") && en.body.contains("1200"));
        assert!(ru.body.contains("node-2") && ru.title.contains("Маршрут"));
        assert!(!notice(What::PrimaryChanged { from: 0, to: 1 }, Language::En).notify);
    }
}
