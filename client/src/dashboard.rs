//! What a running session shows: ping, loss and jitter over time for the direct path and the
//! accelerated one, the route and its paths, bytes and packets. [`Monitor`] collects the
//! numbers once a second; [`Tui`] draws them with ratatui when stdout is a terminal, and
//! [`Monitor::line`] is the plain one-line form for pipes and logs.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph, Row, Table};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::PathsView;
use crate::proxy::ProxyStats;

/// Seconds of history kept and drawn.
pub const WINDOW: usize = 120;
/// Event lines kept.
const LOG_LINES: usize = 6;

/// One ping series: a sample per second, `None` for a lost or missing answer.
#[derive(Clone, Debug, Default)]
pub struct Series {
    points: VecDeque<(f64, Option<f64>)>,
    /// Why there is no data, if there is none (shown instead of numbers).
    pub note: Option<String>,
}

impl Series {
    /// Records the sample at `t` seconds (milliseconds, or `None` if lost).
    pub fn push(&mut self, t: f64, ms: Option<f64>) {
        if self.points.len() == WINDOW {
            self.points.pop_front();
        }
        self.points.push_back((t, ms));
    }

    /// The latest answered sample.
    pub fn last(&self) -> Option<f64> {
        self.points.iter().rev().find_map(|(_, v)| *v)
    }

    /// Mean of the answered samples.
    pub fn mean(&self) -> Option<f64> {
        let v: Vec<f64> = self.points.iter().filter_map(|(_, v)| *v).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Mean absolute difference between consecutive answered samples.
    pub fn jitter(&self) -> Option<f64> {
        let v: Vec<f64> = self.points.iter().filter_map(|(_, v)| *v).collect();
        (v.len() >= 2)
            .then(|| v.windows(2).map(|w| (w[0] - w[1]).abs()).sum::<f64>() / (v.len() - 1) as f64)
    }

    /// Percentage of samples lost.
    pub fn loss_percent(&self) -> Option<f64> {
        (!self.points.is_empty()).then(|| {
            100.0 * self.points.iter().filter(|(_, v)| v.is_none()).count() as f64
                / self.points.len() as f64
        })
    }

    /// Answered samples as chart points.
    pub fn chart_points(&self) -> Vec<(f64, f64)> {
        self.points
            .iter()
            .filter_map(|(t, v)| v.map(|v| (*t, v)))
            .collect()
    }

    /// Whether anything was recorded.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// A ping result for the monitor: which series and what it saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ping {
    /// Straight to the game server, not through us.
    Direct(Option<Duration>),
    /// To the game server through the session.
    Accelerated(Option<Duration>),
}

/// Sends one echo probe a second to `target` and reports each result as `wrap(rtt)`. Stops
/// after `give_up` probes in a row go unanswered before any answer (the target does not echo:
/// most real game servers don't), reporting that with a `None` then closing the channel.
pub fn spawn_pinger(
    target: std::net::SocketAddr,
    wrap: fn(Option<Duration>) -> Ping,
    give_up: u32,
    tx: mpsc::Sender<Ping>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ever = false;
        let mut silent = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // One socket for the whole session: through the local proxy it is one flow.
        let bind: std::net::SocketAddr = if target.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = match tokio::net::UdpSocket::bind(bind).await {
            Ok(s)
                if crate::connreset::disable_connreset(&s).is_ok()
                    && s.connect(target).await.is_ok() =>
            {
                s
            }
            _ => {
                let _ = tx.send(wrap(None)).await;
                return;
            }
        };
        for round in 0u64.. {
            tick.tick().await;
            let r = crate::probe::echo_on(
                &socket,
                round,
                1,
                Duration::ZERO,
                Duration::from_millis(900),
            )
            .await;
            let rtt = r.rtts.first().copied();
            ever |= rtt.is_some();
            silent = if rtt.is_some() { 0 } else { silent + 1 };
            if tx.send(wrap(rtt)).await.is_err() || (!ever && silent >= give_up) {
                return;
            }
        }
    })
}

/// Everything the dashboard shows, sampled once a second.
#[derive(Debug)]
pub struct Monitor {
    /// Title: game, node, capture.
    pub title: String,
    started: Instant,
    /// RTT to the relay node on the primary path (the session's own pings).
    pub node: Series,
    /// RTT to the game server through the session (if it answers probes).
    pub accelerated: Series,
    /// RTT to the game server directly (if it answers probes).
    pub direct: Series,
    /// Game RTT through PLG as the route knows it: node ping + the exit's own exit→game
    /// figure (for games whose servers do not echo).
    pub via_exit: Series,
    /// The route verdict (`direct 94 ms → via fra-2 61 ms (−35 %)`).
    pub verdict: String,
    /// Latest path state.
    pub paths: PathsView,
    /// Node currently carrying the session.
    pub route: String,
    counters: [u64; 6],
    log: VecDeque<String>,
}

impl Monitor {
    /// A monitor for a session described by `title`, currently on `route`.
    pub fn new(title: String, route: String) -> Monitor {
        Monitor {
            title,
            started: Instant::now(),
            node: Series::default(),
            accelerated: Series::default(),
            via_exit: Series::default(),
            verdict: String::new(),
            direct: Series::default(),
            paths: PathsView::default(),
            route,
            counters: [0; 6],
            log: VecDeque::new(),
        }
    }

    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Session duration.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Takes the per-second sample of the proxy's counters and paths.
    pub fn sample(&mut self, stats: &ProxyStats, paths: &PathsView) {
        let t = self.t();
        // No sample before the first answer: a session that just started has lost nothing
        // (this once showed "20 % loss" on loopback).
        let rtt = stats.rtt_us.load(Ordering::Relaxed);
        if rtt > 0 {
            self.node.push(t, Some(rtt as f64 / 1000.0));
        }
        self.paths = paths.clone();
        self.counters = [
            stats.from_game.load(Ordering::Relaxed),
            stats.bytes_up.load(Ordering::Relaxed),
            stats.to_game.load(Ordering::Relaxed),
            stats.bytes_down.load(Ordering::Relaxed),
            stats.duplicates.load(Ordering::Relaxed),
            stats.dropped.load(Ordering::Relaxed),
        ];
    }

    /// Records the route's live figures (see [`crate::RouteView`]).
    pub fn route_view(&mut self, r: &crate::RouteView) {
        let t = self.t();
        if let Some(p) = r.plg {
            self.via_exit.push(t, Some(p.as_secs_f64() * 1000.0));
        }
        self.verdict = r.summary.clone();
    }

    /// Records a ping result.
    pub fn ping(&mut self, p: Ping) {
        let t = self.t();
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        match p {
            Ping::Direct(d) => self.direct.push(t, ms(d)),
            Ping::Accelerated(d) => self.accelerated.push(t, ms(d)),
        }
    }

    /// Adds a line to the event log.
    pub fn event(&mut self, text: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        let t = self.elapsed().as_secs();
        self.log
            .push_back(format!("{:02}:{:02} {text}", t / 60, t % 60));
    }

    /// The plain status line: packets and bytes each way and the node RTT.
    pub fn line(&self) -> String {
        let [up, bup, down, bdown, ..] = self.counters;
        let mut s = format!(
            "up {up} pkts / {bup} B   down {down} pkts / {bdown} B   node rtt {}",
            fmt_ms(self.node.last())
        );
        if let Some(a) = self.accelerated.last() {
            s.push_str(&format!("   game ping via node {a:.2} ms"));
        }
        if let Some(v) = self.via_exit.last() {
            s.push_str(&format!("   via PLG (node + exit→game) {v:.2} ms"));
        }
        if let Some(d) = self.direct.last() {
            s.push_str(&format!("   direct {d:.2} ms"));
        }
        s
    }

    /// Draws the dashboard into `frame`.
    pub fn draw(&self, frame: &mut ratatui::Frame<'_>) {
        let [head, chart, summary, paths, log] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(8),
            Constraint::Length(7),
            Constraint::Length(self.paths.paths.len() as u16 + 4),
            Constraint::Length(LOG_LINES as u16 + 2),
        ])
        .areas(frame.area());

        let d = self.elapsed().as_secs();
        let head_text = Line::from(vec![
            Span::styled(&self.title, Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "   route: {}   {}   up {:02}:{:02}:{:02}   ",
                self.route,
                self.verdict,
                d / 3600,
                d / 60 % 60,
                d % 60
            )),
            Span::styled("q quits", Style::new().fg(Color::DarkGray)),
        ]);
        frame.render_widget(
            Paragraph::new(head_text).block(Block::bordered().title(" PLG Booster ")),
            head,
        );

        let series = [
            ("direct", Color::Red, self.direct.chart_points()),
            ("accelerated", Color::Green, self.accelerated.chart_points()),
            ("node ping", Color::Cyan, self.node.chart_points()),
            ("via exit", Color::Yellow, self.via_exit.chart_points()),
        ];
        let t = self.t();
        let x0 = (t - WINDOW as f64).max(0.0);
        let ymax = series
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
            .fold(1.0f64, f64::max)
            * 1.2;
        let datasets = series
            .iter()
            .filter(|(_, _, p)| !p.is_empty())
            .map(|(name, color, p)| {
                Dataset::default()
                    .name(*name)
                    .marker(symbols::Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(Style::new().fg(*color))
                    .data(p)
            })
            .collect();
        let chart_widget = Chart::new(datasets)
            .block(Block::bordered().title(" ping over time (ms) "))
            .x_axis(
                Axis::default()
                    .bounds([x0, t.max(1.0)])
                    .labels([format!("{x0:.0}s"), format!("{t:.0}s")]),
            )
            .y_axis(
                Axis::default()
                    .bounds([0.0, ymax])
                    .labels(["0".to_string(), format!("{ymax:.1}")]),
            );
        frame.render_widget(chart_widget, chart);

        let row = |name: &str, s: &Series| {
            // No numbers: say why, in the wide last column.
            if let Some(note) = s.note.as_ref().filter(|_| s.last().is_none()) {
                let dash = || "-".to_string();
                return Row::new(vec![name.to_string(), dash(), dash(), dash(), note.clone()]);
            }
            Row::new(vec![
                name.to_string(),
                fmt_ms(s.last()),
                fmt_ms(s.mean()),
                fmt_ms(s.jitter()),
                s.loss_percent()
                    .map(|l| format!("{l:.1}%"))
                    .unwrap_or_else(|| "-".into()),
            ])
        };
        let table = Table::new(
            vec![
                row("direct", &self.direct),
                row("accelerated", &self.accelerated),
                row("node ping", &self.node),
                row("via exit", &self.via_exit),
            ],
            [
                Constraint::Length(12),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Min(8),
            ],
        )
        .header(
            Row::new(vec!["", "now ms", "avg ms", "jitter ms", "loss / note"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::bordered().title(" direct vs accelerated "));
        frame.render_widget(table, summary);

        let [up, bup, down, bdown, dup, dropped] = self.counters;
        let mut rows: Vec<Row<'_>> = self
            .paths
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut state = Vec::new();
                if i as u8 == self.paths.primary {
                    state.push("primary");
                }
                if self.paths.duplicating {
                    state.push("duplicating");
                }
                if self.paths.protected {
                    state.push("protected (QUIC)");
                }
                if p.suspect {
                    state.push("SUSPECT");
                }
                Row::new(vec![
                    format!("path {i}"),
                    fmt_ms(p.srtt.map(|d| d.as_secs_f64() * 1000.0)),
                    format!("{:.1}%", p.loss * 100.0),
                    format!("{}/{}", p.probes_answered, p.probes_sent),
                    state.join(", "),
                ])
            })
            .collect();
        rows.push(Row::new(vec![
            "traffic".to_string(),
            format!("up {up} pkts / {}", bytes(bup)),
            format!("down {down} pkts / {}", bytes(bdown)),
            format!("dup {dup}"),
            format!("dropped {dropped}"),
        ]));
        let paths_table = Table::new(
            rows,
            [
                Constraint::Length(10),
                Constraint::Length(22),
                Constraint::Length(24),
                Constraint::Length(10),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(vec!["", "srtt ms", "loss", "probes", "state"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::bordered().title(format!(" route: {} ", self.route)));
        frame.render_widget(paths_table, paths);

        let lines: Vec<Line<'_>> = self.log.iter().map(|l| Line::raw(l.as_str())).collect();
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" events ")),
            log,
        );
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

fn bytes(b: u64) -> String {
    match b {
        0..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        _ => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// The full-screen terminal UI. Restores the terminal when dropped (also on panic, through
/// ratatui's hook).
#[derive(Debug)]
pub struct Tui {
    terminal: ratatui::DefaultTerminal,
    /// Key presses that mean "quit" ('q', Esc, Ctrl-C: raw mode turns Ctrl-C into a key).
    pub quit: mpsc::Receiver<()>,
}

impl Tui {
    /// Switches the terminal to the alternate screen in raw mode and starts reading keys.
    pub fn start() -> std::io::Result<Tui> {
        let terminal = ratatui::try_init()?;
        let (tx, quit) = mpsc::channel(1);
        std::thread::spawn(move || {
            use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
            loop {
                if tx.is_closed() {
                    return;
                }
                match event::poll(Duration::from_millis(200)) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => return,
                }
                let Ok(Event::Key(k)) = event::read() else {
                    continue;
                };
                let quit = k.kind == KeyEventKind::Press
                    && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                        || (k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL)));
                if quit {
                    let _ = tx.blocking_send(());
                    return;
                }
            }
        });
        Ok(Tui { terminal, quit })
    }

    /// Redraws.
    pub fn draw(&mut self, m: &Monitor) -> std::io::Result<()> {
        self.terminal.draw(|f| m.draw(f)).map(|_| ())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    #[test]
    fn no_node_loss_before_the_first_answer() {
        let mut m = Monitor::new("t".into(), "r".into());
        let stats = ProxyStats::default();
        m.sample(&stats, &PathsView::default());
        assert_eq!(
            m.node.loss_percent(),
            None,
            "nothing measured yet is not a loss"
        );
        stats.rtt_us.store(1500, Ordering::Relaxed);
        m.sample(&stats, &PathsView::default());
        m.sample(&stats, &PathsView::default());
        assert_eq!(m.node.loss_percent(), Some(0.0));
        assert_eq!(m.node.last(), Some(1.5));
    }

    #[test]
    fn series_statistics() {
        let mut s = Series::default();
        assert_eq!((s.last(), s.mean(), s.loss_percent()), (None, None, None));
        s.push(0.0, Some(10.0));
        s.push(1.0, None);
        s.push(2.0, Some(14.0));
        s.push(3.0, Some(12.0));
        assert_eq!(s.last(), Some(12.0));
        assert_eq!(s.mean(), Some(12.0));
        assert_eq!(s.jitter(), Some(3.0));
        assert_eq!(s.loss_percent(), Some(25.0));
        for i in 0..WINDOW * 2 {
            s.push(i as f64, Some(1.0));
        }
        assert_eq!(s.chart_points().len(), WINDOW);
    }

    fn rows(screen: &str) -> String {
        let chars: Vec<char> = screen.chars().collect();
        chars
            .chunks(110)
            .map(|c| c.iter().collect::<String>() + "\n")
            .collect()
    }

    #[test]
    fn draws_numbers_paths_and_notes() {
        let mut m = Monitor::new("Demo via node-1".into(), "node-1 (127.0.0.1:4433)".into());
        let stats = ProxyStats::default();
        stats.from_game.store(640, Ordering::Relaxed);
        stats.rtt_us.store(1500, Ordering::Relaxed);
        let paths = PathsView {
            primary: 0,
            duplicating: false,
            paths: vec![plg_proto::paths::PathStats::default(); 2],
            protected: false,
            ..PathsView::default()
        };
        m.sample(&stats, &paths);
        m.ping(Ping::Accelerated(Some(Duration::from_millis(3))));
        m.direct.note = Some("game server does not answer probes".into());
        m.event("session 42 up".into());
        let line = m.line();
        assert!(
            line.starts_with("up 640 pkts") && line.contains("node rtt 1.50"),
            "{line}"
        );

        let mut term = ratatui::Terminal::new(TestBackend::new(110, 40)).unwrap();
        term.draw(|f| m.draw(f)).unwrap();
        let screen: String = term
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        for needle in [
            "Demo via node-1",
            "node-1 (127.0.0.1:4433)",
            "does not answer probes",
            "path 1",
            "primary",
            "up 640 pkts",
            "1.50",
            "3.00",
            "session 42 up",
            "node ping",
        ] {
            assert!(
                screen.contains(needle),
                "screen lacks {needle:?}:\n{}",
                rows(&screen)
            );
        }
    }
}
