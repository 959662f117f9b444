//! Hand-written SVG plots of reports: latency over time per policy and per path, residual loss
//! per policy, and the sweep curve. No plotting dependency: a small chart type with axes, nice
//! ticks, shaded event windows and a legend is all these need.

use std::fmt::Write as _;

use crate::report::{RunReport, SweepReport};
use crate::scenario::Policy;

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
    body: String,
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
            body: String::new(),
            legend: vec![],
        }
    }

    fn px(&self, v: f64) -> f64 {
        self.x + (v - self.x_range.0) / (self.x_range.1 - self.x_range.0) * self.w
    }

    fn py(&self, v: f64) -> f64 {
        let v = v.clamp(self.y_range.0, self.y_range.1);
        self.y + self.h - (v - self.y_range.0) / (self.y_range.1 - self.y_range.0) * self.h
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
            self.body,
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
        for t in nice_ticks(self.y_range.0, self.y_range.1, 5) {
            let py = self.py(t);
            let _ = write!(
                s,
                r##"<line x1="{x0}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
                x0 + w,
                x0 - 4.0,
                py + 3.0,
                fmt_tick(t)
            );
        }
        if x_ticks {
            for t in nice_ticks(self.x_range.0, self.x_range.1, 10) {
                let px = self.px(t);
                let _ = write!(
                    s,
                    r##"<line x1="{px:.1}" y1="{y0}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
                    y0 + h,
                    y0 + h + 13.0,
                    fmt_tick(t)
                );
            }
        }
        s.push_str(&self.body);
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
        let mut panel = Panel::new(LEFT, y, PLOT_W, panel_h, (0.0, r.duration_s), (0.0, top));
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
                r.duration_s / 2.0,
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

/// Residual loss per policy, upstream and downstream bars side by side; unavailable policies
/// are labelled, not drawn.
pub fn loss_svg(r: &RunReport) -> String {
    let n = r.policies.len().max(1) as f64;
    let top = y_top(
        r.policies
            .iter()
            .filter_map(|p| {
                Some([
                    p.up.as_ref()?.residual_loss_pct,
                    p.down.as_ref()?.residual_loss_pct,
                ])
            })
            .flatten()
            .chain(
                r.paths
                    .iter()
                    .flat_map(|p| [p.injected_loss_up_pct, p.injected_loss_down_pct]),
            ),
        1.0,
    );
    let w = 120.0 * n + 80.0;
    let mut panel = Panel::new(LEFT, 40.0, w, 260.0, (0.0, n), (0.0, top));
    for (i, p) in r.policies.iter().enumerate() {
        let x = i as f64 + 0.5;
        let c = policy_colour(p.policy);
        match (&p.up, &p.down) {
            (Some(u), Some(d)) => {
                panel.bar(
                    x - 0.17,
                    0.3,
                    u.residual_loss_pct,
                    c,
                    &format!("{:.2} %", u.residual_loss_pct),
                );
                panel.bar(
                    x + 0.17,
                    0.3,
                    d.residual_loss_pct,
                    c,
                    &format!("{:.2} %", d.residual_loss_pct),
                );
                panel.below(x - 0.17, 0, "up");
                panel.below(x + 0.17, 0, "down");
            }
            _ => panel.text(x, top / 2.0, "unavailable", "middle"),
        }
        panel.below(x, 1, p.policy.name());
    }
    let injected = r
        .paths
        .iter()
        .map(|p| p.injected_loss_up_pct.max(p.injected_loss_down_pct))
        .fold(0.0, f64::max);
    if injected > 0.0 {
        panel.line(
            &[[0.0, injected], [n, injected]],
            "#777",
            &format!("worst path's injected loss ({injected:.2} %)"),
            true,
        );
    }
    let title = format!("residual loss per policy — {}", r.scenario);
    let body = panel.render(&title, "", "residual loss %", false);
    document(LEFT + w + LEGEND_W + 40.0, 340.0, &body)
}

/// Residual loss against injected loss, one line per policy (up solid, down dashed), with the
/// single-path (p) and ideal two-path duplication (p²) references.
pub fn sweep_svg(s: &SweepReport) -> String {
    let xmax = s
        .points
        .iter()
        .map(|p| p.injected_loss_pct)
        .fold(1.0, f64::max);
    let mut policies: Vec<Policy> = vec![];
    for pt in &s.points {
        for p in &pt.policies {
            if !policies.contains(&p.policy) {
                policies.push(p.policy);
            }
        }
    }
    let ymax = y_top(
        s.points
            .iter()
            .flat_map(|pt| pt.policies.iter())
            .filter_map(|p| {
                Some([
                    p.up.as_ref()?.residual_loss_pct,
                    p.down.as_ref()?.residual_loss_pct,
                ])
            })
            .flatten()
            .chain(std::iter::once(xmax)),
        1.0,
    );
    let mut panel = Panel::new(LEFT, 40.0, PLOT_W, 360.0, (0.0, xmax), (0.0, ymax));
    let refs: Vec<[f64; 2]> = (0..=40)
        .map(|i| xmax * i as f64 / 40.0)
        .map(|x| [x, x])
        .collect();
    panel.line(
        &refs,
        "#bbb",
        "reference: residual = injected (one path)",
        true,
    );
    let sq: Vec<[f64; 2]> = (0..=40)
        .map(|i| xmax * i as f64 / 40.0)
        .map(|x| [x, x * x / 100.0])
        .collect();
    panel.line(&sq, "#888", "reference: p² (two independent paths)", true);
    for pol in policies {
        let c = policy_colour(pol);
        let pick = |up: bool| -> Vec<[f64; 2]> {
            s.points
                .iter()
                .filter_map(|pt| {
                    let p = pt.policies.iter().find(|p| p.policy == pol)?;
                    let st = if up { p.up.as_ref()? } else { p.down.as_ref()? };
                    Some([pt.injected_loss_pct, st.residual_loss_pct])
                })
                .collect()
        };
        let (up, down) = (pick(true), pick(false));
        if up.is_empty() {
            panel.legend_entry(&format!("{pol}: unavailable"), "#ccc", true);
            continue;
        }
        panel.line(&up, c, &format!("{pol} up"), false);
        panel.dots_sized(&up, c, "", 3.5);
        panel.line(&down, c, &format!("{pol} down"), true);
        panel.dots_sized(&down, c, "", 3.5);
    }
    let title = format!("residual loss vs injected loss per path — {}", s.scenario);
    let body = panel.render(
        &title,
        "injected loss on every path, each direction (%)",
        "residual loss %",
        true,
    );
    document(LEFT + PLOT_W + LEGEND_W + 60.0, 460.0, &body)
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
    }
}
