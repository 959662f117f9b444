//! Sentences generated from the numbers: each comparison the demo and the reports state is
//! printed as a finding only when its 95 % interval supports it and rejects the alternative;
//! otherwise the sentence says the run cannot tell, and how much longer to run.
//!
//! Loss is pooled over both directions (each direction crosses its own links with the same
//! impairment, so the two are independent samples of the same rate); differences use
//! `stats::compare` (Newcombe, or the block bootstrap for clustered loss).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::report::{Aggregate, PathInfo, RunReport, fmt_ci_end};
use crate::scenario::Policy;
use crate::stats::{Difference, LossEstimate, LossSample, compare};

/// What a claim is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// `duplicate` loses less than `single`.
    DuplicateBeatsSingle,
    /// `duplicate` loses less than the direct route.
    DuplicateBeatsDirect,
    /// `single` against the direct route.
    SingleVsDirect,
    /// `duplicate` against the theory of independent paths (p²) and of one shared path (p).
    DuplicateMatchesIndependentPaths,
    /// `adaptive` between `single` and `duplicate`.
    AdaptiveBetween,
}

/// Whether the numbers support the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The interval supports it and rejects the alternative.
    Shown,
    /// The interval rejects it.
    Contradicted,
    /// The interval includes both: the run is too short to tell.
    Inconclusive,
}

/// One generated sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// What it is about.
    pub kind: ClaimKind,
    /// What the numbers say.
    pub verdict: Verdict,
    /// The sentence.
    pub text: String,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the claims are made from: each route's pooled loss record, the session paths' loss,
/// and how to tell the user to run longer.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// The game without PLG.
    pub direct: Option<LossSample>,
    /// Per policy.
    pub policies: Vec<(Policy, LossSample)>,
    /// `(pa, pb)` per direction: the long-run injected loss (fraction) of the session's first
    /// two paths, when both lose something.
    pub path_loss: Vec<(f64, f64)>,
    /// Seconds per run (for "run longer").
    pub duration_s: f64,
    /// The flag that sets the length (`--seconds` for the demo, `--duration` for `run`).
    pub length_flag: String,
}

/// The injected loss of the session's first two paths per direction (fractions).
fn path_loss(paths: &[PathInfo]) -> Vec<(f64, f64)> {
    let session: Vec<&PathInfo> = paths.iter().filter(|p| p.node == 0).take(2).collect();
    let [a, b] = session[..] else { return vec![] };
    let dirs = [
        (a.injected_loss_up_pct, b.injected_loss_up_pct),
        (a.injected_loss_down_pct, b.injected_loss_down_pct),
    ];
    if dirs.iter().any(|(x, y)| *x <= 0.0 || *y <= 0.0) {
        return vec![];
    }
    dirs.iter().map(|(x, y)| (x / 100.0, y / 100.0)).collect()
}

/// The claims of one run (both directions pooled).
pub fn for_run(r: &RunReport, length_flag: &str) -> Vec<Claim> {
    let input = Input {
        direct: r
            .direct
            .as_ref()
            .map(|d| d.up.sample().concat(&d.down.sample())),
        policies: r
            .policies
            .iter()
            .filter(|p| p.ran())
            .filter_map(|p| {
                Some((
                    p.policy,
                    p.up.as_ref()?.sample().concat(&p.down.as_ref()?.sample()),
                ))
            })
            .collect(),
        path_loss: path_loss(&r.paths),
        duration_s: r.duration_s,
        length_flag: length_flag.into(),
    };
    claims(&input)
}

/// The claims of several seeds pooled (`--repeat`).
pub fn for_aggregate(
    a: &Aggregate,
    paths: &[PathInfo],
    duration_s: f64,
    length_flag: &str,
) -> Vec<Claim> {
    let mut input = Input {
        path_loss: path_loss(paths),
        duration_s,
        length_flag: length_flag.into(),
        ..Input::default()
    };
    for row in a.rows.iter().filter(|r| r.runs > 0) {
        let s = row.up.sample.concat(&row.down.sample);
        match row.policy {
            None => input.direct = Some(s),
            Some(p) => input.policies.push((p, s)),
        }
    }
    claims(&input)
}

fn figure(s: &LossSample) -> String {
    let e = LossEstimate::of(s);
    format!(
        "{:.2} % [{}–{}] ({}/{})",
        e.pct,
        fmt_ci_end(e.ci_lo_pct),
        fmt_ci_end(e.ci_hi_pct),
        e.lost,
        e.sent
    )
}

fn pts(d: &Difference) -> String {
    let f = |v: f64| {
        let s = if v.abs() < 1.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.1}")
        };
        s.replace('-', "−")
    };
    format!("[{} to {}] pts", f(d.lo_pts), f(d.hi_pts))
}

/// How long a run would need to separate two rates that differ by about `d`: the interval's
/// half-width shrinks as 1/√n, so `(half / |d|)²` times as long, with a margin, rounded up
/// to a round number of seconds.
fn longer(input: &Input, d: &Difference) -> String {
    let half = (d.hi_pts - d.lo_pts) / 2.0;
    let factor = if d.pts.abs() < 1e-9 {
        10.0
    } else {
        (1.5 * (half / d.pts.abs()).powi(2)).clamp(2.0, 50.0)
    };
    let want = (input.duration_s * factor).max(1.0);
    let nice = [
        5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0,
        3600.0,
    ];
    let s = nice.iter().copied().find(|n| *n >= want).unwrap_or(3600.0);
    format!("run longer, e.g. {} {s:.0}", input.length_flag)
}

/// `a − b` (or `b − a` when `flip`) with its interval, labelled.
fn labelled(a: &str, b: &str, d: &Difference, flip: bool) -> String {
    if flip {
        let n = Difference {
            pts: -d.pts,
            lo_pts: -d.hi_pts,
            hi_pts: -d.lo_pts,
            method: d.method,
        };
        format!("{b} − {a} {}", pts(&n))
    } else {
        format!("{a} − {b} {}", pts(d))
    }
}

/// Compares `a` with `b`: "a loses less than b" when shown, the opposite when that is shown,
/// otherwise "cannot tell".
fn comparison(
    input: &Input,
    kind: ClaimKind,
    a: (&str, &LossSample),
    b: (&str, &LossSample),
) -> Claim {
    let d = compare(a.1, b.1);
    let both = |flip| {
        format!(
            "{} vs {}, {}",
            figure(a.1),
            figure(b.1),
            labelled(a.0, b.0, &d, flip)
        )
    };
    let (verdict, text) = if d.a_less() {
        (
            Verdict::Shown,
            format!("{} loses less than {}: {}", a.0, b.0, both(true)),
        )
    } else if d.a_more() {
        (
            Verdict::Contradicted,
            format!("{} loses MORE than {}: {}", a.0, b.0, both(false)),
        )
    } else {
        (
            Verdict::Inconclusive,
            format!(
                "cannot tell {} from {} at this length ({}): {}",
                a.0,
                b.0,
                both(false),
                longer(input, &d)
            ),
        )
    };
    Claim {
        kind,
        verdict,
        text,
    }
}

/// Every claim the input allows, in the order the demo prints them.
pub fn claims(input: &Input) -> Vec<Claim> {
    let get = |p: Policy| input.policies.iter().find(|(q, _)| *q == p).map(|(_, s)| s);
    let (single, dup, adaptive) = (
        get(Policy::Single),
        get(Policy::Duplicate),
        get(Policy::Adaptive),
    );
    let mut out = vec![];
    if let (Some(d), Some(s)) = (dup, single) {
        out.push(comparison(
            input,
            ClaimKind::DuplicateBeatsSingle,
            ("duplicate", d),
            ("single", s),
        ));
    }
    if let (Some(d), Some(direct)) = (dup, &input.direct) {
        out.push(comparison(
            input,
            ClaimKind::DuplicateBeatsDirect,
            ("duplicate", d),
            ("direct", direct),
        ));
    }
    if let (Some(s), Some(direct)) = (single, &input.direct) {
        let d = compare(s, direct);
        let both = format!(
            "{} vs {}, difference {}",
            figure(s),
            figure(direct),
            pts(&d)
        );
        let (verdict, text) = if d.a_less() {
            (
                Verdict::Shown,
                format!("single loses less than direct: {both}"),
            )
        } else if d.a_more() {
            (
                Verdict::Contradicted,
                format!("single loses MORE than direct: {both}"),
            )
        } else {
            (
                Verdict::Inconclusive,
                format!("single and direct: no difference shown ({both})"),
            )
        };
        out.push(Claim {
            kind: ClaimKind::SingleVsDirect,
            verdict,
            text,
        });
    }
    if let (Some(d), false) = (dup, input.path_loss.is_empty()) {
        out.push(theory(d, &input.path_loss));
    }
    if let (Some(a), Some(s), Some(d)) = (adaptive, single, dup) {
        out.push(adaptive_between(input, a, s, d));
    }
    out
}

/// `duplicate` against two independent paths (pa·pb each way) and one shared path (losses
/// perfectly correlated: min(pa, pb)).
fn theory(dup: &LossSample, path_loss: &[(f64, f64)]) -> Claim {
    let n = path_loss.len() as f64;
    let independent = path_loss.iter().map(|(a, b)| a * b).sum::<f64>() / n;
    let shared = path_loss.iter().map(|(a, b)| a.min(*b)).sum::<f64>() / n;
    let e = LossEstimate::of(dup);
    let ci = e.interval();
    let (band_lo, band_hi) = crate::stats::binom_range(dup.n, independent);
    let ind = format!("p² = {:.2} %", 100.0 * independent);
    let band = format!(
        "p² predicts {band_lo}–{band_hi} lost of {}, {} were",
        dup.n,
        dup.lost()
    );
    let ci_s = format!(
        "[{}–{}] %",
        fmt_ci_end(e.ci_lo_pct),
        fmt_ci_end(e.ci_hi_pct)
    );
    let shared_s = format!("p = {:.1} %", 100.0 * shared);
    let (verdict, text) = match (ci.contains(independent), ci.contains(shared)) {
        (true, false) => (
            Verdict::Shown,
            format!(
                "duplicate is consistent with independent paths ({ind} is inside its CI {ci_s}; \
                 {band}) and not with one shared path ({shared_s} is outside it)"
            ),
        ),
        (true, true) => (
            Verdict::Inconclusive,
            format!(
                "duplicate's CI {ci_s} holds both {ind} and {shared_s}: cannot tell independent \
                 from shared paths at this length"
            ),
        ),
        (false, _) => (
            Verdict::Contradicted,
            format!(
                "duplicate is NOT consistent with independent paths: {ind} is outside its CI \
                 {ci_s} ({band}; correlated paths, or loss that duplication does not repair)"
            ),
        ),
    };
    Claim {
        kind: ClaimKind::DuplicateMatchesIndependentPaths,
        verdict,
        text,
    }
}

/// "adaptive sits between single and duplicate" only when it loses less than single and more
/// than duplicate, both shown.
fn adaptive_between(input: &Input, a: &LossSample, s: &LossSample, d: &LossSample) -> Claim {
    let vs_single = compare(a, s);
    let vs_dup = compare(a, d);
    let kind = ClaimKind::AdaptiveBetween;
    let single_pts = |flip| labelled("adaptive", "single", &vs_single, flip);
    let dup_pts = |flip| labelled("adaptive", "duplicate", &vs_dup, flip);
    if vs_single.a_less() && vs_dup.a_more() {
        return Claim {
            kind,
            verdict: Verdict::Shown,
            text: format!(
                "adaptive sits between single and duplicate: {}; {}, {}",
                figure(a),
                single_pts(true),
                dup_pts(false)
            ),
        };
    }
    let mut parts = vec![];
    if vs_single.a_less() {
        parts.push(format!(
            "adaptive loses less than single ({} vs {}, {})",
            figure(a),
            figure(s),
            single_pts(true)
        ));
    } else if vs_single.a_more() {
        parts.push(format!(
            "adaptive loses MORE than single ({} vs {}, {})",
            figure(a),
            figure(s),
            single_pts(false)
        ));
    } else {
        parts.push(format!(
            "cannot tell adaptive from single at this length ({} vs {}, {}): {}",
            figure(a),
            figure(s),
            single_pts(false),
            longer(input, &vs_single)
        ));
    }
    if vs_dup.a_more() {
        parts.push(format!(
            "adaptive loses more than duplicate ({} vs {}, {})",
            figure(a),
            figure(d),
            dup_pts(false)
        ));
    } else if vs_dup.a_less() {
        parts.push(format!(
            "adaptive loses LESS than duplicate ({} vs {}, {})",
            figure(a),
            figure(d),
            dup_pts(true)
        ));
    } else {
        parts.push(format!(
            "cannot tell adaptive from duplicate at this length ({} vs {}, {}): {}",
            figure(a),
            figure(d),
            dup_pts(false),
            longer(input, &vs_dup)
        ));
    }
    let contradicted = vs_single.a_more() || vs_dup.a_less();
    Claim {
        kind,
        verdict: if contradicted {
            Verdict::Contradicted
        } else {
            Verdict::Inconclusive
        },
        text: parts.join(";\n    "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `k` losses spread evenly over `n`.
    fn sample(k: u32, n: u64) -> LossSample {
        LossSample {
            n,
            lost_at: (0..k)
                .map(|i| (i as u64 * n / k.max(1) as u64) as u32)
                .collect(),
        }
    }

    fn input(single: u32, dup: u32, adaptive: u32, n: u64) -> Input {
        Input {
            direct: Some(sample(single, n)),
            policies: vec![
                (Policy::Single, sample(single, n)),
                (Policy::Duplicate, sample(dup, n)),
                (Policy::Adaptive, sample(adaptive, n)),
            ],
            path_loss: vec![(0.05, 0.05), (0.05, 0.05)],
            duration_s: 8.0,
            length_flag: "--seconds".into(),
        }
    }

    fn find(c: &[Claim], k: ClaimKind) -> &Claim {
        c.iter().find(|c| c.kind == k).unwrap()
    }

    #[test]
    fn a_clear_difference_is_claimed_with_its_interval() {
        // 5 % vs 0.2 % over 1,024 packets each.
        let c = claims(&input(51, 2, 20, 1024));
        let d = find(&c, ClaimKind::DuplicateBeatsSingle);
        assert_eq!(d.verdict, Verdict::Shown, "{d}");
        assert!(
            d.text
                .starts_with("duplicate loses less than single: 0.20 % ["),
            "{d}"
        );
        assert!(
            d.text.contains("single − duplicate [3.5 to 6.3] pts"),
            "{d}"
        );
        let t = find(&c, ClaimKind::DuplicateMatchesIndependentPaths);
        assert_eq!(t.verdict, Verdict::Shown, "{t}");
        assert!(
            t.text.contains("p² = 0.25 %") && t.text.contains("p = 5.0 %"),
            "{t}"
        );
        let a = find(&c, ClaimKind::AdaptiveBetween);
        assert_eq!(a.verdict, Verdict::Shown, "{a}");
        assert!(
            a.text
                .starts_with("adaptive sits between single and duplicate")
        );
        assert_eq!(
            find(&c, ClaimKind::SingleVsDirect).verdict,
            Verdict::Inconclusive
        );
    }

    #[test]
    fn an_inconclusive_comparison_says_so_and_asks_for_a_longer_run() {
        // Adaptive 0.3 % vs duplicate 0.2 %: not separable at 1,024 packets.
        let c = claims(&input(51, 2, 3, 1024));
        let a = find(&c, ClaimKind::AdaptiveBetween);
        assert_eq!(a.verdict, Verdict::Inconclusive, "{a}");
        assert!(!a.text.contains("sits between"), "{a}");
        assert!(a.text.contains("adaptive loses less than single"), "{a}");
        assert!(
            a.text
                .contains("cannot tell adaptive from duplicate at this length")
                && a.text.contains("run longer, e.g. --seconds "),
            "{a}"
        );
        // Too few packets to tell duplicate from single.
        let c = claims(&input(3, 0, 1, 64));
        let d = find(&c, ClaimKind::DuplicateBeatsSingle);
        assert_eq!(d.verdict, Verdict::Inconclusive, "{d}");
        assert!(
            d.text.starts_with("cannot tell duplicate from single"),
            "{d}"
        );
    }

    #[test]
    fn theory_rejects_independence_when_duplicate_loses_like_one_path() {
        // Duplicate at 5 %: as if both paths were one.
        let c = claims(&input(51, 50, 50, 1024));
        let t = find(&c, ClaimKind::DuplicateMatchesIndependentPaths);
        assert_eq!(t.verdict, Verdict::Contradicted, "{t}");
        assert_eq!(
            find(&c, ClaimKind::DuplicateBeatsSingle).verdict,
            Verdict::Inconclusive
        );
        // Adaptive worse than single is called out.
        let c = claims(&input(10, 1, 60, 1024));
        assert_eq!(
            find(&c, ClaimKind::AdaptiveBetween).verdict,
            Verdict::Contradicted
        );
    }

    #[test]
    fn longer_suggests_a_round_length() {
        let i = input(0, 0, 0, 10);
        let d = Difference {
            pts: 0.2,
            lo_pts: -0.2,
            hi_pts: 0.6,
            method: crate::stats::CiMethod::Newcombe,
        };
        // half 0.4, |d| 0.2 → ×6 → 48 s → 60.
        assert_eq!(longer(&i, &d), "run longer, e.g. --seconds 60");
    }
}
