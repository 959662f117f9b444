//! Hand-written SVG plots of reports: latency over time per policy and per path, residual loss
//! per policy with its 95 % interval, and the sweep curve on log-log axes with the one-path
//! and two-path theory lines. No plotting dependency: a small chart type with linear or log
//! axes, nice ticks, error bars, shaded event windows, a legend, and data clipped to the plot
//! area is all these need.

use std::fmt::Write as _;

use crate::report::{RunReport, SweepReport};
use crate::scenario::Policy;
use crate::stats::{LossEstimate, binom_range};

/// Colour of a policy, the same in every plot.
pub fn policy_colour(p: Policy) -> &'static str {
    match p {
        Policy::Single => "#d62728",
        Policy::Duplicate => "#1f77b4",
        Policy::Adaptive => "#2ca02c",
    }
}

const PATH_COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Ticks at 1, 2 or 5 × 10^k covering `[lo, hi]`.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-6 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    let near = |x: f64| (x - x.round()).abs() < 1e-6;
    if near(v) && v.abs() < 1e6 {
        format!("{v:.0}")
    } else if near(v * 10.0) {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Ticks of a log axis: every power of ten in `[lo, hi]`, with 2× and 5× when the range spans
/// fewer than three decades.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mults: &[f64] = if b - a <= 3 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    let mut out = vec![];
    for e in a..=b {
        for m in mults {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
    }
    out
}

fn fmt_log_tick(v: f64) -> String {
    if v >= 1.0 {
        fmt_tick(v)
    } else {
        let digits = (-v.log10()).ceil() as usize;
        format!("{v:.digits$}")
    }
}

/// Upper bound for a y axis: a bit above the largest value, at least `floor`.
fn y_top(values: impl Iterator<Item = f64>, floor: f64) -> f64 {
    let m = values.fold(0.0f64, f64::max);
    let top = if m > 0.0 { m * 1.1 } else { floor };
    top.max(floor)
}

/// One chart panel inside an SVG document.
#[derive(Debug)]
pub struct Panel {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    x_range: (f64, f64),
    y_range: (f64, f64),
    log_x: bool,
    log_y: bool,
    /// Data, clipped to the plot area.
    body: String,
    /// Labels outside the plot area (not clipped).
    annot: String,
    legend: Vec<(String, String, bool)>,
}

impl Panel {
    /// A panel whose plot area is at `(x, y)` of size `w × h`.
    pub fn new(x: f64, y: f64, w: f64, h: f64, x_range: (f64, f64), y_range: (f64, f64)) -> Panel {
        let fix = |(a, b): (f64, f64)| if b > a { (a, b) } else { (a, a + 1.0) };
        Panel {
            x,
            y,
            w,
            h,
            x_range: fix(x_range),
            y_range: fix(y_range),
            log_x: false,
            log_y: false,
            body: String::new(),
            annot: String::new(),
            legend: vec![],
        }
    }

    /// Log-scale axes (both ranges must be positive).
    pub fn log_axes(mut self, log_x: bool, log_y: bool) -> Panel {
        self.log_x = log_x;
        self.log_y = log_y;
        self
    }

    fn frac(v: f64, (lo, hi): (f64, f64), log: bool) -> f64 {
        if log {
            let v = v.max(lo * 1e-3);
            (v.log10() - lo.log10()) / (hi.log10() - lo.log10())
        } else {
            (v - lo) / (hi - lo)
        }
    }

    fn px(&self, v: f64) -> f64 {
        self.x + Self::frac(v, self.x_range, self.log_x) * self.w
    }

    fn py(&self, v: f64) -> f64 {
        let v = v.clamp(self.y_range.0, self.y_range.1);
        self.y + self.h - Self::frac(v, self.y_range, self.log_y) * self.h
    }

    /// A vertical error bar from `lo` to `hi` at `x`, with caps.
    pub fn error_bar(&mut self, x: f64, lo: f64, hi: f64, colour: &str) {
        let px = self.px(x);
        let (a, b) = (self.py(lo), self.py(hi));
        let _ = write!(
            self.body,
            r#"<path d="M{:.1},{a:.1} L{:.1},{a:.1} M{px:.1},{a:.1} L{px:.1},{b:.1} M{:.1},{b:.1} L{:.1},{b:.1}" fill="none" stroke="{colour}" stroke-width="1.2"/>"#,
            px - 4.0,
            px + 4.0,
            px - 4.0,
            px + 4.0
        );
    }

    /// A downward triangle at `(x, y)`: "at most this" (a point with nothing lost, drawn at
    /// its interval's upper end).
    pub fn at_most(&mut self, x: f64, y: f64, colour: &str) {
        let (px, py) = (self.px(x), self.py(y));
        let _ = write!(
            self.body,
            r#"<path d="M{:.1},{:.1} L{:.1},{:.1} L{px:.1},{:.1} Z" fill="{colour}" fill-opacity="0.85"/>"#,
            px - 5.0,
            py - 4.0,
            px + 5.0,
            py - 4.0,
            py + 5.0
        );
    }

    /// A shaded band between two curves sampled at the same x values.
    pub fn area(&mut self, lower: &[[f64; 2]], upper: &[[f64; 2]], colour: &str, label: &str) {
        if lower.is_empty() || upper.is_empty() {
            return;
        }
        let mut d = String::new();
        for (i, p) in upper.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                self.px(p[0]),
                self.py(p[1])
            );
        }
        for p in lower.iter().rev() {
            let _ = write!(d, " L{:.1},{:.1}", self.px(p[0]), self.py(p[1]));
        }
        let _ = write!(
            self.body,
            r#"<path d="{d} Z" fill="{colour}" fill-opacity="0.15" stroke="none"/>"#
        );
        if !label.is_empty() {
            self.legend.push((label.into(), colour.into(), false));
        }
    }

    /// A shaded vertical band (an event window) with a label.
    pub fn band(&mut self, from: f64, until: f64, label: &str) {
        let (a, b) = (
            self.px(from.max(self.x_range.0)),
            self.px(until.min(self.x_range.1)),
        );
        let w = (b - a).max(2.0);
        let _ = write!(
            self.body,
            r##"<rect x="{a:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="#000" fill-opacity="0.07"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
            self.y,
            self.h,
            a + 3.0,
            self.y + 12.0,
            esc(label)
        );
    }

    /// A polyline; `dashed` for a second direction or a reference. A NaN y breaks the line.
    pub fn line(&mut self, pts: &[[f64; 2]], colour: &str, label: &str, dashed: bool) {
        if pts.is_empty() {
            return;
        }
        let mut d = String::new();
        let mut pen_up = true;
        for p in pts {
            if p[1].is_nan() {
                pen_up = true;
                continue;
            }
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if pen_up { " M" } else { " L" },
                self.px(p[0]),
                self.py(p[1])
            );
            pen_up = false;
        }
        let dash = if dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = write!(
            self.body,
            r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>"#
        );
        if !label.is_empty() {
            self.legend.push((label.into(), colour.into(), dashed));
        }
    }

    /// Small dots.
    pub fn dots(&mut self, pts: &[[f64; 2]], colour: &str, label: &str) {
        self.dots_sized(pts, colour, label, 1.3);
    }

    /// Dots of radius `r` pixels.
    pub fn dots_sized(&mut self, pts: &[[f64; 2]], colour: &str, label: &str, r: f64) {
        for p in pts {
            let _ = write!(
                self.body,
                r#"<circle cx="{:.1}" cy="{:.1}" r="{r}" fill="{colour}" fill-opacity="0.75"/>"#,
                self.px(p[0]),
                self.py(p[1])
            );
        }
        if !label.is_empty() {
            self.legend.push((label.into(), colour.into(), false));
        }
    }

    /// Short ticks along the bottom edge at each x (lost packets), in lane `lane`.
    pub fn rug(&mut self, xs: &[f64], colour: &str, lane: usize) {
        let y0 = self.y + self.h - 2.0 - 7.0 * lane as f64;
        for x in xs {
            let px = self.px(*x);
            let _ = write!(
                self.body,
                r#"<line x1="{px:.1}" y1="{y0:.1}" x2="{px:.1}" y2="{:.1}" stroke="{colour}" stroke-width="1"/>"#,
                y0 - 6.0
            );
        }
    }

    /// A bar from the x axis up to `v`, centred at `x` with width `w` in data units.
    pub fn bar(&mut self, x: f64, w: f64, v: f64, colour: &str, label_on_top: &str) {
        self.bar_faded(x, w, v, colour, 1.0, label_on_top);
    }

    /// Like [`Panel::bar`] with a fill opacity.
    pub fn bar_faded(
        &mut self,
        x: f64,
        w: f64,
        v: f64,
        colour: &str,
        opacity: f64,
        label_on_top: &str,
    ) {
        let (a, b) = (self.px(x - w / 2.0), self.px(x + w / 2.0));
        let top = self.py(v);
        let base = self.py(self.y_range.0.max(0.0));
        let _ = write!(
            self.body,
            r#"<rect x="{a:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="{opacity}"/>"#,
            b - a,
            (base - top).max(0.5)
        );
        if !label_on_top.is_empty() {
            let _ = write!(
                self.body,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                (a + b) / 2.0,
                top - 3.0,
                esc(label_on_top)
            );
        }
    }

    /// Text at data coordinates.
    pub fn text(&mut self, x: f64, y: f64, s: &str, anchor: &str) {
        let _ = write!(
            self.body,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="{anchor}" fill="#444">{}</text>"##,
            self.px(x),
            self.py(y),
            esc(s)
        );
    }

    /// Text under the x axis at data x, on line `line` (0 = first).
    pub fn below(&mut self, x: f64, line: usize, s: &str) {
        let _ = write!(
            self.annot,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            self.px(x),
            self.y + self.h + 14.0 + 14.0 * line as f64,
            esc(s)
        );
    }

    /// Adds a legend entry without drawing anything.
    pub fn legend_entry(&mut self, label: &str, colour: &str, dashed: bool) {
        self.legend.push((label.into(), colour.into(), dashed));
    }

    /// Renders axes, grid, title, labels, the body and the legend.
    pub fn render(&self, title: &str, x_label: &str, y_label: &str, x_ticks: bool) -> String {
        let mut s = String::new();
        let (x0, y0, w, h) = (self.x, self.y, self.w, self.h);
        let _ = write!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#fff" stroke="#999"/>"##
        );
        let y_ticks = if self.log_y {
            log_ticks(self.y_range.0, self.y_range.1)
        } else {
            nice_ticks(self.y_range.0, self.y_range.1, 5)
        };
        let label = |log: bool, t: f64| if log { fmt_log_tick(t) } else { fmt_tick(t) };
        for t in y_ticks {
            let py = self.py(t);
            let _ = write!(
                s,
                r##"<line x1="{x0}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
                x0 + w,
                x0 - 4.0,
                py + 3.0,
                label(self.log_y, t)
            );
        }
        if x_ticks {
            let ticks = if self.log_x {
                log_ticks(self.x_range.0, self.x_range.1)
            } else {
                nice_ticks(self.x_range.0, self.x_range.1, 10)
            };
            for t in ticks {
                let px = self.px(t);
                let _ = write!(
                    s,
                    r##"<line x1="{px:.1}" y1="{y0}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
                    y0 + h,
                    y0 + h + 13.0,
                    label(self.log_x, t)
                );
            }
        }
        // Data stays inside the plot area: a value past an axis is cut at the frame.
        let clip = format!("clip-{}-{}", x0.round() as i64, y0.round() as i64);
        let _ = write!(
            s,
            r#"<clipPath id="{clip}"><rect x="{x0}" y="{y0}" width="{w}" height="{h}"/></clipPath><g clip-path="url(#{clip})">{}</g>{}"#,
            self.body, self.annot
        );
        let _ = write!(
            s,
            r##"<text x="{x0}" y="{:.1}" font-size="13" font-weight="bold">{}</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text><text transform="translate({:.1},{:.1}) rotate(-90)" font-size="11" text-anchor="middle">{}</text>"##,
            y0 - 8.0,
            esc(title),
            x0 + w / 2.0,
            y0 + h + 28.0,
            esc(x_label),
            x0 - 38.0,
            y0 + h / 2.0,
            esc(y_label)
        );
        let lx = x0 + w + 12.0;
        for (i, (label, colour, dashed)) in self.legend.iter().enumerate() {
            let ly = y0 + 10.0 + 16.0 * i as f64;
            let dash = if *dashed {
                r#" stroke-dasharray="5,3""#
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
                lx + 18.0,
                lx + 23.0,
                ly + 4.0,
                esc(label)
            );
        }
        s
    }
}

fn document(w: f64, h: f64, body: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif"><rect width="100%" height="100%" fill="#fafafa"/>{body}</svg>
"##
    )
}

/// Picks one direction's `(delivered points, lost times)` from a policy report.
type SeriesPick = fn(&crate::report::PolicyReport) -> (&[[f64; 2]], &[f64]);

const PLOT_W: f64 = 760.0;
const LEFT: f64 = 60.0;
const LEGEND_W: f64 = 290.0;

/// One-way delay over time per policy, one panel per direction, lost packets as ticks along
/// the bottom (one lane per policy) and event windows shaded.
pub fn latency_svg(r: &RunReport) -> String {
    let ran: Vec<_> = r.policies.iter().filter(|p| p.ran()).collect();
    let panel_h = 220.0;
    let mut body = String::new();
    let dirs: [(&str, SeriesPick); 2] = [
        ("upstream one-way delay (client → game server)", |p| {
            (&p.series.up, &p.series.up_lost)
        }),
        ("downstream one-way delay (game server → client)", |p| {
            (&p.series.down, &p.series.down_lost)
        }),
    ];
    for (i, (title, pick)) in dirs.iter().enumerate() {
        let top = y_top(ran.iter().flat_map(|p| pick(p).0.iter().map(|v| v[1])), 1.0);
        let y = 40.0 + i as f64 * (panel_h + 70.0);
        let mut panel = Panel::new(LEFT, y, PLOT_W, panel_h, (0.0, r.duration_s), (0.0, top));
        for e in &r.events {
            panel.band(e.from_s, e.until_s, &e.label);
        }
        for (lane, p) in ran.iter().enumerate() {
            let (pts, lost) = pick(p);
            let c = policy_colour(p.policy);
            let loss =
                p.up.as_ref()
                    .zip(p.down.as_ref())
                    .map(|(u, d)| if i == 0 { u } else { d })
                    .map_or(0.0, |s| s.residual_loss_pct);
            panel.dots(pts, c, &format!("{} ({loss:.2} % lost)", p.policy));
            panel.rug(lost, c, lane);
        }
        for p in r.policies.iter().filter(|p| !p.ran()) {
            panel.legend_entry(
                &format!("{}: no data (unavailable)", p.policy),
                "#ccc",
                true,
            );
        }
        body.push_str(&panel.render(
            title,
            "time (s); ticks at the bottom = lost packets",
            "ms",
            true,
        ));
    }
    let h = 40.0 + 2.0 * (panel_h + 70.0);
    document(LEFT + PLOT_W + LEGEND_W, h, &body)
}

/// Per path: the link's added delay per 100 ms bin (up solid, down dashed) and its drop rate,
/// from the policy run that put the most packets on the links.
pub fn paths_svg(r: &RunReport) -> String {
    let Some(run) = r
        .policies
        .iter()
        .filter(|p| p.ran())
        .max_by_key(|p| p.links.iter().map(|l| l.up.packets_in).sum::<u64>())
    else {
        return document(600.0, 60.0, r#"<text x="10" y="30">no policy ran</text>"#);
    };
    let bin = crate::link::TIMELINE_BIN.as_secs_f64();
    let panel_h = 150.0;
    let mut body = String::new();
    for (i, (info, link)) in r.paths.iter().zip(&run.links).enumerate() {
        let colour = PATH_COLOURS[i % PATH_COLOURS.len()];
        let series = |tl: &[crate::link::TimelineBin]| -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
            // Bins where nothing got through break the line.
            let delay = tl
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    let y = if b.packets > b.dropped {
                        b.mean_delay_ms
                    } else {
                        f64::NAN
                    };
                    [(k as f64 + 0.5) * bin, y]
                })
                .collect();
            let drop = tl
                .iter()
                .enumerate()
                .filter(|(_, b)| b.packets > 0)
                .map(|(k, b)| {
                    [
                        (k as f64 + 0.5) * bin,
                        100.0 * b.dropped as f64 / b.packets as f64,
                    ]
                })
                .collect();
            (delay, drop)
        };
        let (up_d, up_x) = series(&link.up.timeline);
        let (down_d, down_x) = series(&link.down.timeline);
        let top = y_top(
            up_d.iter()
                .chain(&down_d)
                .map(|p| p[1])
                .filter(|v| !v.is_nan()),
            1.0,
        );
        let y = 40.0 + i as f64 * (panel_h + 60.0);
        // The links run a little past the traffic (the drain): the axis covers every bin.
        let bins = link.up.timeline.len().max(link.down.timeline.len());
        let x_end = r.duration_s.max(bins as f64 * bin);
        let mut panel = Panel::new(LEFT, y, PLOT_W, panel_h, (0.0, x_end), (0.0, top));
        for e in &r.events {
            panel.band(e.from_s, e.until_s, &e.label);
        }
        // Drop rate as light bars scaled onto the delay axis (100 % = top).
        for p in up_x.iter().chain(&down_x) {
            if p[1] > 0.0 {
                panel.bar_faded(p[0], bin * 0.8, p[1] / 100.0 * top, "#d62728", 0.35, "");
            }
        }
        if link.up.packets_in + link.down.packets_in == 0 {
            panel.text(
                x_end / 2.0,
                top / 2.0,
                &format!("no traffic on this path in the {} run", run.policy),
                "middle",
            );
        }
        panel.line(&up_d, colour, "up: mean added delay", false);
        panel.line(&down_d, colour, "down: mean added delay", true);
        panel.legend_entry("red: share dropped (full height = 100 %)", "#d62728", false);
        let title = format!(
            "path {i} ({}) — link delay per {} ms, {} run",
            info.name,
            crate::link::TIMELINE_BIN.as_millis(),
            run.policy
        );
        body.push_str(&panel.render(&title, "time (s)", "ms", true));
    }
    let h = 40.0 + r.paths.len() as f64 * (panel_h + 60.0);
    document(LEFT + PLOT_W + LEGEND_W, h, &body)
}

/// One bar group of the loss plot: a route's name, colour and loss each way.
type LossGroup = (String, &'static str, Option<(LossEstimate, LossEstimate)>);

/// Residual loss per route (direct when measured, then each policy), upstream and downstream
/// bars side by side with their 95 % intervals as error bars; the worst path's injected loss
/// (one path: y = p) and two independent paths (y = p², with the binomial 95 % band of the
/// run's packet count) as reference lines. Unavailable policies are labelled, not drawn.
pub fn loss_svg(r: &RunReport) -> String {
    let mut groups: Vec<LossGroup> = vec![];
    if let Some(d) = &r.direct {
        groups.push((
            "direct".into(),
            "#7f7f7f",
            Some((d.up.loss.clone(), d.down.loss.clone())),
        ));
    }
    for p in &r.policies {
        let l = p.up.as_ref().zip(p.down.as_ref());
        groups.push((
            p.policy.name().into(),
            policy_colour(p.policy),
            l.map(|(u, d)| (u.loss.clone(), d.loss.clone())),
        ));
    }
    let injected = r
        .paths
        .iter()
        .filter(|p| p.node == 0)
        .map(|p| p.injected_loss_up_pct.max(p.injected_loss_down_pct))
        .fold(0.0, f64::max);
    let top = y_top(
        groups
            .iter()
            .filter_map(|g| g.2.as_ref())
            .flat_map(|(u, d)| [u.ci_hi_pct, d.ci_hi_pct])
            .chain(std::iter::once(injected)),
        1.0,
    );
    let n = groups.len().max(1) as f64;
    let w = 120.0 * n + 80.0;
    let mut panel = Panel::new(LEFT, 40.0, w, 260.0, (0.0, n), (0.0, top));
    if injected > 0.0 {
        let sq = injected * injected / 100.0;
        let sent = groups
            .iter()
            .filter_map(|g| g.2.as_ref())
            .map(|(u, _)| u.sent)
            .max()
            .unwrap_or(0);
        if sent > 0 {
            let (lo, hi) = binom_range(sent, sq / 100.0);
            let pct = |k: u64| 100.0 * k as f64 / sent as f64;
            panel.area(
                &[[0.0, pct(lo)], [n, pct(lo)]],
                &[[0.0, pct(hi)], [n, pct(hi)]],
                "#1f77b4",
                &format!("p² band: 95 % of runs of {sent} packets"),
            );
        }
        panel.line(
            &[[0.0, injected], [n, injected]],
            "#777",
            &format!("one path: p = {injected:.2} % (worst path)"),
            true,
        );
        panel.line(
            &[[0.0, sq], [n, sq]],
            "#1f77b4",
            &format!("two independent paths: p² = {sq:.2} %"),
            true,
        );
    }
    for (i, (name, c, loss)) in groups.iter().enumerate() {
        let x = i as f64 + 0.5;
        match loss {
            Some((u, d)) => {
                for (dx, e, dir) in [(-0.17, u, "up"), (0.17, d, "down")] {
                    panel.bar(x + dx, 0.3, e.pct, c, "");
                    panel.error_bar(x + dx, e.ci_lo_pct, e.ci_hi_pct, "#222");
                    panel.text(
                        x + dx,
                        e.ci_hi_pct + top * 0.02,
                        &format!("{:.2} %", e.pct),
                        "middle",
                    );
                    panel.below(x + dx, 0, dir);
                }
            }
            None => panel.text(x, top / 2.0, "unavailable", "middle"),
        }
        panel.below(x, 1, name);
    }
    panel.legend_entry(
        "bars: residual loss; whiskers: 95 % interval",
        "#222",
        false,
    );
    let title = format!("residual loss per route — {}", r.scenario);
    let body = panel.render(&title, "", "residual loss %", false);
    document(LEFT + w + LEGEND_W + 40.0, 340.0, &body)
}

/// Residual loss against injected loss on log-log axes, one series per policy and direction
/// (up solid, down dashed) with 95 % error bars; a point where nothing was lost is drawn at
/// its interval's upper end as a ▼ ("at most"). References: one path (y = x) and two
/// independent paths (y = x², with its binomial 95 % band for the sweep's packet count).
/// An injected loss of 0 sits at the left edge of the x axis.
pub fn sweep_svg(s: &SweepReport) -> String {
    let mut policies: Vec<Policy> = vec![];
    for pt in &s.points {
        for p in &pt.policies {
            if !policies.contains(&p.policy) {
                policies.push(p.policy);
            }
        }
    }
    let positive_x: Vec<f64> = s
        .points
        .iter()
        .map(|p| p.injected_loss_pct)
        .filter(|x| *x > 0.0)
        .collect();
    let x_min = positive_x.iter().copied().fold(f64::INFINITY, f64::min);
    let x_min = if x_min.is_finite() { x_min } else { 1.0 };
    let x_max = positive_x.iter().copied().fold(x_min, f64::max);
    // Injected 0 is drawn half a decade left of the smallest positive rate.
    let x_lo = x_min / 10f64.powf(0.5);
    let x_of = |x: f64| if x > 0.0 { x } else { x_lo };
    // `None` is the direct route (no PLG).
    let mut figures: Vec<(Option<Policy>, bool, f64, LossEstimate)> = vec![];
    for pt in &s.points {
        if let Some((u, d)) = pt.direct_loss() {
            figures.push((None, true, pt.injected_loss_pct, u));
            figures.push((None, false, pt.injected_loss_pct, d));
        }
        for &pol in &policies {
            if let Some((u, d)) = pt.loss(pol) {
                figures.push((Some(pol), true, pt.injected_loss_pct, u));
                figures.push((Some(pol), false, pt.injected_loss_pct, d));
            }
        }
    }
    let sent = figures.iter().map(|f| f.3.sent).max().unwrap_or(0);
    let ys = figures
        .iter()
        .flat_map(|f| [f.3.ci_lo_pct, f.3.pct, f.3.ci_hi_pct])
        .chain([x_max, x_min * x_min / 100.0])
        .filter(|v| *v > 0.0);
    let y_min = ys.clone().fold(f64::INFINITY, f64::min);
    let y_max = ys.fold(0.0f64, f64::max).max(1.0);
    let y_min = if y_min.is_finite() { y_min } else { 0.01 };
    let y_range = (
        10f64.powf((y_min / 2.0).log10().floor()),
        10f64.powf((y_max * 1.5).log10().ceil()).min(100.0),
    );
    let x_range = (x_lo / 1.5, x_max * 1.5);
    let mut panel = Panel::new(LEFT, 40.0, PLOT_W, 360.0, x_range, y_range).log_axes(true, true);
    let xs: Vec<f64> = (0..=60)
        .map(|i| x_min / 1.5 * (x_max * 1.5 / (x_min / 1.5)).powf(i as f64 / 60.0))
        .collect();
    if sent > 0 {
        let band = |hi: bool| -> Vec<[f64; 2]> {
            xs.iter()
                .map(|&x| {
                    let (lo_k, hi_k) = binom_range(sent, (x / 100.0).powi(2));
                    let k = if hi { hi_k } else { lo_k };
                    [x, (100.0 * k as f64 / sent as f64).max(y_range.0)]
                })
                .collect()
        };
        panel.area(
            &band(false),
            &band(true),
            "#888",
            &format!("p² band: 95 % of runs of {sent} packets"),
        );
    }
    let one: Vec<[f64; 2]> = xs.iter().map(|&x| [x, x]).collect();
    panel.line(&one, "#bbb", "one path: y = x", true);
    let sq: Vec<[f64; 2]> = xs.iter().map(|&x| [x, x * x / 100.0]).collect();
    panel.line(&sq, "#888", "two independent paths: y = x²", true);
    let mut routes: Vec<Option<Policy>> = vec![];
    if figures.iter().any(|f| f.0.is_none()) {
        routes.push(None);
    }
    routes.extend(policies.iter().copied().map(Some));
    let offsets = routes.len() * 2;
    for (k, &pol) in routes.iter().enumerate() {
        let (c, name) = match pol {
            Some(p) => (policy_colour(p), p.name()),
            None => ("#7f7f7f", "direct"),
        };
        let mut any = false;
        for up in [true, false] {
            // Spread the series a little sideways so the error bars do not overlap.
            let slot = (2 * k + usize::from(!up)) as f64 - (offsets as f64 - 1.0) / 2.0;
            let shift = 10f64.powf(0.012 * slot);
            let pts: Vec<(f64, &LossEstimate)> = figures
                .iter()
                .filter(|f| f.0 == pol && f.1 == up)
                .map(|f| (x_of(f.2) * shift, &f.3))
                .collect();
            if pts.is_empty() {
                continue;
            }
            any = true;
            // A point with nothing lost is only a bound: the line breaks there.
            let line: Vec<[f64; 2]> = pts
                .iter()
                .map(|(x, e)| [*x, if e.lost > 0 { e.pct } else { f64::NAN }])
                .collect();
            let dir = if up { "up" } else { "down" };
            panel.line(&line, c, &format!("{name} {dir}"), !up);
            for (x, e) in &pts {
                if e.lost > 0 {
                    panel.error_bar(*x, e.ci_lo_pct.max(y_range.0), e.ci_hi_pct, c);
                    panel.dots_sized(&[[*x, e.pct]], c, "", 3.5);
                } else {
                    panel.at_most(*x, e.ci_hi_pct, c);
                }
            }
        }
        if !any {
            panel.legend_entry(&format!("{name}: unavailable"), "#ccc", true);
        }
    }
    panel.legend_entry("▼ nothing lost: at most the upper end", "#444", false);
    panel.legend_entry("whiskers: 95 % interval", "#444", false);
    if positive_x.len() < s.points.len() {
        panel.below(x_lo, 1, "(injected 0)");
    }
    let title = format!("residual loss vs injected loss per path — {}", s.scenario);
    let body = panel.render(
        &title,
        "injected loss on every path, each direction (%, log)",
        "residual loss % (log)",
        true,
    );
    document(LEFT + PLOT_W + LEGEND_W + 60.0, 480.0, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        let t = nice_ticks(0.0, 0.37, 4);
        assert_eq!(t.first(), Some(&0.0));
        assert!(t.last().unwrap() <= &0.37 && t.len() >= 3);
        assert_eq!(log_ticks(0.01, 100.0), vec![0.01, 0.1, 1.0, 10.0, 100.0]);
        assert_eq!(
            log_ticks(0.1, 10.0),
            vec![0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
        );
        assert_eq!(fmt_log_tick(0.01), "0.01");
    }

    #[test]
    fn log_axes_put_decades_at_equal_distances_and_data_is_clipped() {
        let p = Panel::new(0.0, 0.0, 300.0, 300.0, (0.01, 10.0), (0.01, 10.0)).log_axes(true, true);
        assert!((p.px(0.1) - 100.0).abs() < 1e-9 && (p.px(1.0) - 200.0).abs() < 1e-9);
        assert!((p.py(0.1) - 200.0).abs() < 1e-9);
        let svg = p.render("t", "x", "y", true);
        assert!(svg.contains("clip-path=\"url(#clip-0-0)\""), "{svg}");
    }
}
