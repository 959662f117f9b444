//! Statistics of loss figures: how sure a measured loss rate is, and when two of them differ.
//!
//! - **One rate, independent loss**: the exact binomial (Clopper–Pearson) 95 % interval, from
//!   the regularized incomplete beta function (no dependency: `statrs` would bring `nalgebra`
//!   and `rand` into the build for two functions).
//! - **One rate, correlated loss** (bursts): a moving-block bootstrap over the per-packet
//!   lost/delivered sequence, seeded from the data so the same sequence always gives the same
//!   interval. A sequence counts as *clustered* when its lag-1 autocorrelation is above
//!   2/√n (two standard errors of the autocorrelation of an independent sequence) and at
//!   least two pairs of consecutive packets were both lost (one pair among a handful of
//!   losses passes the autocorrelation test by itself, but is no burst); then the
//!   interval reported is the union of the bootstrap's and Clopper–Pearson's (bursts can only
//!   make us less sure than the binomial says, and a bootstrap of a handful of losses is
//!   narrow by accident).
//! - **Two rates**: Newcombe's hybrid score interval (method 10, from Wilson intervals) for
//!   the difference; for clustered sequences the union with the block bootstrap of the
//!   difference. "A loses less than B" is claimed only when the interval excludes 0.
//! - **Theory lines**: binomial tails and the central 95 % range of a count.
//!
//! Rates are fractions (0..=1) here; the report shows percent.

use serde::{Deserialize, Serialize};

/// Two-sided 95 %.
pub const ALPHA: f64 = 0.05;
/// The normal quantile of 97.5 %.
pub const Z95: f64 = 1.959_963_984_540_054;
/// Bootstrap replicates: the 2.5 % and 97.5 % percentiles of 2,000 are stable to a few
/// hundredths of a percentage point at the rates we see.
pub const BOOTSTRAP_REPS: usize = 2000;
const BOOTSTRAP_SEED: u64 = 0x504c_4742_6f6f_7374; // "PLGBoost"

/// A closed interval of rates (fractions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Whether `x` is inside.
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }

    /// The smallest interval holding both.
    pub fn union(&self, o: &Interval) -> Interval {
        Interval {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function `I_x(a, b)`, `a, b > 0`, `x` in `[0, 1]`.
pub fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// `P(X ≤ k)` for `X ~ Binomial(n, p)`.
pub fn binom_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    beta_inc((n - k) as f64, k as f64 + 1.0, 1.0 - p)
}

/// `P(X ≥ k)` for `X ~ Binomial(n, p)`.
pub fn binom_sf(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    beta_inc(k as f64, (n - k + 1) as f64, p)
}

/// The central 95 % range of counts for `n` trials at rate `p`: the smallest `lo` with
/// `P(X ≤ lo) ≥ 2.5 %` and the smallest `hi` with `P(X ≤ hi) ≥ 97.5 %` (a theory line's band).
pub fn binom_range(n: u64, p: f64) -> (u64, u64) {
    let quantile = |q: f64| {
        // Bisection on the monotone CDF over counts.
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if binom_cdf(mid, n, p) >= q {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    };
    (quantile(ALPHA / 2.0), quantile(1.0 - ALPHA / 2.0))
}

/// The ranks (1-based order statistics) bounding a distribution-free 95 % interval of the
/// median of `n` samples: `[x_(lo), x_(hi)]` covers the true median with probability ≥ 95 %
/// whatever the distribution (the number of samples below the median is Binomial(n, ½)).
/// `None` when `n < 6` (no such interval exists).
pub fn median_ranks(n: u64) -> Option<(u64, u64)> {
    if n < 6 {
        return None;
    }
    // Largest lo with P(B ≤ lo − 1) ≤ 2.5 %; by symmetry hi = n + 1 − lo.
    let mut lo = 1;
    while lo < n && binom_cdf(lo, n, 0.5) <= ALPHA / 2.0 {
        lo += 1;
    }
    Some((lo, n + 1 - lo))
}

/// Solves `f(p) = target` for a monotone `f` on `[0, 1]` by bisection.
fn bisect(f: impl Fn(f64) -> f64, target: f64, increasing: bool) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if (f(mid) < target) == increasing {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-14 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// The exact (Clopper–Pearson) 95 % interval of a rate from `k` events in `n` trials: the
/// rates under which seeing at least `k` (for the lower end) or at most `k` (upper end) has
/// probability 2.5 %. `n = 0` gives `[0, 1]`.
pub fn clopper_pearson(k: u64, n: u64) -> Interval {
    if n == 0 {
        return Interval { lo: 0.0, hi: 1.0 };
    }
    let k = k.min(n);
    let lo = if k == 0 {
        0.0
    } else {
        bisect(|p| binom_sf(k, n, p), ALPHA / 2.0, true)
    };
    let hi = if k == n {
        1.0
    } else {
        bisect(|p| binom_cdf(k, n, p), ALPHA / 2.0, false)
    };
    Interval { lo, hi }
}

/// Wilson's score 95 % interval of `k` in `n` (the building block of Newcombe's interval).
pub fn wilson(k: u64, n: u64) -> Interval {
    if n == 0 {
        return Interval { lo: 0.0, hi: 1.0 };
    }
    let (k, n) = (k.min(n) as f64, n as f64);
    let z2 = Z95 * Z95;
    let centre = (k + z2 / 2.0) / (n + z2);
    let half = Z95 / (n + z2) * (k * (n - k) / n + z2 / 4.0).sqrt();
    Interval {
        lo: (centre - half).max(0.0),
        hi: (centre + half).min(1.0),
    }
}

/// Newcombe's hybrid score 95 % interval (his method 10) of `k1/n1 − k2/n2`.
pub fn newcombe(k1: u64, n1: u64, k2: u64, n2: u64) -> Interval {
    let (p1, p2) = (rate(k1, n1), rate(k2, n2));
    let (w1, w2) = (wilson(k1, n1), wilson(k2, n2));
    let d = p1 - p2;
    Interval {
        lo: d - ((p1 - w1.lo).powi(2) + (w2.hi - p2).powi(2)).sqrt(),
        hi: d + ((w1.hi - p1).powi(2) + (p2 - w2.lo).powi(2)).sqrt(),
    }
}

fn rate(k: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { k as f64 / n as f64 }
}

/// A per-packet loss record: `n` packets, the indices (0-based, ascending) of those lost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossSample {
    /// Packets.
    pub n: u64,
    /// Indices of the lost ones, ascending.
    pub lost_at: Vec<u32>,
}

impl LossSample {
    /// Lost packets.
    pub fn lost(&self) -> u64 {
        self.lost_at.len() as u64
    }

    /// Lost share (fraction).
    pub fn rate(&self) -> f64 {
        rate(self.lost(), self.n)
    }

    /// This sample followed by `other` (pooling directions or seeds).
    pub fn concat(&self, other: &LossSample) -> LossSample {
        let mut lost_at = self.lost_at.clone();
        lost_at.extend(other.lost_at.iter().map(|i| i + self.n as u32));
        LossSample {
            n: self.n + other.n,
            lost_at,
        }
    }

    /// Lost (1) / delivered (0) per packet.
    fn sequence(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.n as usize];
        for &i in &self.lost_at {
            if let Some(x) = v.get_mut(i as usize) {
                *x = 1;
            }
        }
        v
    }

    /// Lag-1 autocorrelation of the lost/delivered sequence (0 when undefined).
    pub fn lag1_autocorrelation(&self) -> f64 {
        let n = self.n as usize;
        let k = self.lost() as f64;
        if n < 3 || k == 0.0 || k as usize >= n {
            return 0.0;
        }
        let mean = k / n as f64;
        let var = mean * (1.0 - mean) * n as f64;
        // Σ (x_i − m)(x_{i+1} − m) = Σ x_i x_{i+1} − m (Σ_{i<n} x_i + Σ_{i>0} x_i) + (n−1) m².
        let pairs = self.adjacent_pairs() as f64;
        let first = self.lost_at.first().map_or(0.0, |&i| f64::from(i == 0));
        let last = self
            .lost_at
            .last()
            .map_or(0.0, |&i| f64::from(i as usize == n - 1));
        let cov = pairs - mean * ((k - last) + (k - first)) + (n as f64 - 1.0) * mean * mean;
        cov / var
    }

    /// Pairs of consecutive packets both lost.
    pub fn adjacent_pairs(&self) -> usize {
        self.lost_at.windows(2).filter(|w| w[1] == w[0] + 1).count()
    }

    /// Whether the losses come in clusters: lag-1 autocorrelation above 2/√n and at least two
    /// consecutive lost pairs.
    pub fn clustered(&self) -> bool {
        self.adjacent_pairs() >= 2 && self.lag1_autocorrelation() > 2.0 / (self.n as f64).sqrt()
    }

    /// Mean length of a run of consecutive losses (0 without losses).
    pub fn mean_loss_run(&self) -> f64 {
        if self.lost_at.is_empty() {
            return 0.0;
        }
        let runs = 1 + self.lost_at.windows(2).filter(|w| w[1] != w[0] + 1).count();
        self.lost() as f64 / runs as f64
    }

    /// The bootstrap's block length: `max(⌈n^(1/3)⌉, ⌈2 × mean loss run⌉)`, at most `n`
    /// (n^(1/3) is the classic order for block bootstraps of a mean, Hall, Horowitz & Jing
    /// 1995; twice the mean burst keeps a typical burst inside one block).
    pub fn block_len(&self) -> usize {
        let cube = (self.n as f64).cbrt().ceil() as usize;
        let burst = (2.0 * self.mean_loss_run()).ceil() as usize;
        cube.max(burst).clamp(1, (self.n as usize).max(1))
    }
}

/// Prefix sums of a 0/1 sequence and a block sampler over it.
struct Blocks {
    prefix: Vec<u32>,
    n: usize,
    len: usize,
}

impl Blocks {
    fn new(s: &LossSample) -> Blocks {
        let seq = s.sequence();
        let mut prefix = Vec::with_capacity(seq.len() + 1);
        prefix.push(0u32);
        for x in &seq {
            prefix.push(prefix.last().unwrap() + u32::from(*x));
        }
        Blocks {
            prefix,
            n: seq.len(),
            len: s.block_len(),
        }
    }

    /// One moving-block bootstrap replicate's loss rate.
    fn replicate(&self, rng: &mut fastrand::Rng) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let starts = self.n - self.len + 1;
        let mut left = self.n;
        let mut lost = 0u32;
        while left > 0 {
            let take = self.len.min(left);
            let s = rng.usize(0..starts);
            lost += self.prefix[s + take] - self.prefix[s];
            left -= take;
        }
        lost as f64 / self.n as f64
    }
}

fn percentile_interval(mut v: Vec<f64>) -> Interval {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    Interval {
        lo: at(ALPHA / 2.0),
        hi: at(1.0 - ALPHA / 2.0),
    }
}

fn seed_of(samples: &[&LossSample]) -> u64 {
    samples.iter().fold(BOOTSTRAP_SEED, |h, s| {
        let h = crate::link::derive_seed(h, s.n);
        s.lost_at
            .iter()
            .fold(h, |h, &i| crate::link::derive_seed(h, u64::from(i)))
    })
}

/// The moving-block bootstrap 95 % percentile interval of a loss rate (seeded from the data).
pub fn block_bootstrap(s: &LossSample) -> Interval {
    let b = Blocks::new(s);
    let mut rng = fastrand::Rng::with_seed(seed_of(&[s]));
    percentile_interval((0..BOOTSTRAP_REPS).map(|_| b.replicate(&mut rng)).collect())
}

/// The moving-block bootstrap 95 % interval of `a`'s rate minus `b`'s (each resampled on its
/// own: the runs are independent).
pub fn block_bootstrap_difference(a: &LossSample, b: &LossSample) -> Interval {
    let (ba, bb) = (Blocks::new(a), Blocks::new(b));
    let mut rng = fastrand::Rng::with_seed(seed_of(&[a, b]));
    percentile_interval(
        (0..BOOTSTRAP_REPS)
            .map(|_| ba.replicate(&mut rng) - bb.replicate(&mut rng))
            .collect(),
    )
}

/// How an interval was computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CiMethod {
    /// Exact binomial (independent loss).
    #[default]
    ClopperPearson,
    /// Newcombe's hybrid score interval of a difference (independent loss).
    Newcombe,
    /// Clustered loss: the union of the block bootstrap's interval and the binomial one.
    BlockBootstrap,
}

impl CiMethod {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            CiMethod::ClopperPearson => "Clopper–Pearson",
            CiMethod::Newcombe => "Newcombe",
            CiMethod::BlockBootstrap => "block bootstrap",
        }
    }
}

/// A loss rate with its 95 % interval, in percent, as the report carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossEstimate {
    /// Lost packets.
    pub lost: u64,
    /// Packets.
    pub sent: u64,
    /// Lost share, percent.
    pub pct: f64,
    /// The interval to quote, percent: `exact_pct`, or for clustered loss its union with
    /// `bootstrap_pct`.
    pub ci_lo_pct: f64,
    /// Upper end, percent.
    pub ci_hi_pct: f64,
    /// Which rule gave `ci_*`.
    pub method: CiMethod,
    /// Clopper–Pearson, percent.
    pub exact_pct: [f64; 2],
    /// Block bootstrap, percent (always computed when anything was lost).
    pub bootstrap_pct: Option<[f64; 2]>,
    /// The bootstrap's block length, packets.
    pub block_len: usize,
    /// Lag-1 autocorrelation of the lost/delivered sequence.
    pub lag1_autocorrelation: f64,
    /// Whether the loss is clustered (autocorrelation above 2/√n, ≥ 2 consecutive lost pairs).
    pub clustered: bool,
}

impl LossEstimate {
    /// The estimate of a sample.
    pub fn of(s: &LossSample) -> LossEstimate {
        let exact = clopper_pearson(s.lost(), s.n);
        let boot = (s.lost() > 0 && s.n > 1).then(|| block_bootstrap(s));
        let clustered = s.clustered();
        let ci = match (clustered, boot) {
            (true, Some(b)) => b.union(&exact),
            _ => exact,
        };
        let pct = |i: Interval| [100.0 * i.lo, 100.0 * i.hi];
        LossEstimate {
            lost: s.lost(),
            sent: s.n,
            pct: 100.0 * s.rate(),
            ci_lo_pct: 100.0 * ci.lo,
            ci_hi_pct: 100.0 * ci.hi,
            method: if clustered && boot.is_some() {
                CiMethod::BlockBootstrap
            } else {
                CiMethod::ClopperPearson
            },
            exact_pct: pct(exact),
            bootstrap_pct: boot.map(pct),
            block_len: s.block_len(),
            lag1_autocorrelation: s.lag1_autocorrelation(),
            clustered,
        }
    }

    /// The quoted interval as fractions.
    pub fn interval(&self) -> Interval {
        Interval {
            lo: self.ci_lo_pct / 100.0,
            hi: self.ci_hi_pct / 100.0,
        }
    }
}

/// The difference of two loss rates with its 95 % interval (percentage points).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// `a − b`, percentage points.
    pub pts: f64,
    /// Lower end, points.
    pub lo_pts: f64,
    /// Upper end, points.
    pub hi_pts: f64,
    /// Newcombe, or (either side clustered) its union with the block bootstrap.
    pub method: CiMethod,
}

impl Difference {
    /// `a` loses less than `b`: the whole interval is below 0.
    pub fn a_less(&self) -> bool {
        self.hi_pts < 0.0
    }

    /// `a` loses more than `b`.
    pub fn a_more(&self) -> bool {
        self.lo_pts > 0.0
    }
}

/// `a`'s loss rate minus `b`'s.
pub fn compare(a: &LossSample, b: &LossSample) -> Difference {
    let n = newcombe(a.lost(), a.n, b.lost(), b.n);
    let clustered = a.clustered() || b.clustered();
    let i = if clustered {
        n.union(&block_bootstrap_difference(a, b))
    } else {
        n
    };
    Difference {
        pts: 100.0 * (a.rate() - b.rate()),
        lo_pts: 100.0 * i.lo,
        hi_pts: 100.0 * i.hi,
        method: if clustered {
            CiMethod::BlockBootstrap
        } else {
            CiMethod::Newcombe
        },
    }
}

/// Minimum, median and maximum of per-seed figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `v` (zeros when empty).
    pub fn of(v: &[f64]) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        Spread {
            min: v[0],
            median: if v.len() % 2 == 1 {
                v[m]
            } else {
                (v[m - 1] + v[m]) / 2.0
            },
            max: v[v.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Binomial CDF by direct summation in log space.
    fn cdf_by_sum(k: u64, n: u64, p: f64) -> f64 {
        (0..=k)
            .map(|i| {
                let ln_c = ln_gamma(n as f64 + 1.0)
                    - ln_gamma(i as f64 + 1.0)
                    - ln_gamma((n - i) as f64 + 1.0);
                (ln_c + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp()
            })
            .sum()
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        assert!(close(ln_gamma(1.0), 0.0, 1e-13));
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-12
        ));
        // 170! ≈ 7.257415615307994e306.
        assert!(close(
            ln_gamma(171.0),
            7.257_415_615_307_994e306f64.ln(),
            1e-9
        ));
    }

    #[test]
    fn the_incomplete_beta_is_the_binomial_cdf() {
        for &(k, n, p) in &[
            (0u64, 10u64, 0.1),
            (3, 10, 0.3),
            (13, 256, 0.05),
            (1, 1024, 0.0025),
            (60, 100, 0.55),
            (499, 1000, 0.5),
        ] {
            let (a, b) = (binom_cdf(k, n, p), cdf_by_sum(k, n, p));
            assert!(close(a, b, 1e-10), "{k}/{n} at {p}: {a} vs {b}");
            assert!(close(binom_sf(k + 1, n, p), 1.0 - b, 1e-10));
        }
        assert_eq!(binom_cdf(10, 10, 0.3), 1.0);
        assert_eq!(binom_sf(0, 10, 0.3), 1.0);
        // Symmetry: I_x(a, b) = 1 − I_{1−x}(b, a).
        assert!(close(
            beta_inc(2.5, 7.0, 0.3),
            1.0 - beta_inc(7.0, 2.5, 0.7),
            1e-13
        ));
    }

    #[test]
    fn clopper_pearson_matches_published_values() {
        let pct = |k, n| {
            let i = clopper_pearson(k, n);
            (100.0 * i.lo, 100.0 * i.hi)
        };
        // 1/256: 0.0099 %–2.16 %.
        let (lo, hi) = pct(1, 256);
        assert!(
            close(lo, 0.00989, 0.00005) && close(hi, 2.157, 0.001),
            "{lo} {hi}"
        );
        // 0/100: 0–3.62 % (1 − 0.025^(1/100)).
        let (lo, hi) = pct(0, 100);
        assert_eq!(lo, 0.0);
        assert!(close(hi, 100.0 * (1.0 - 0.025f64.powf(0.01)), 1e-9), "{hi}");
        assert!(close(hi, 3.62, 0.005));
        // 50/1000: 3.73–6.54 %.
        let (lo, hi) = pct(50, 1000);
        assert!(
            close(lo, 3.73, 0.005) && close(hi, 6.54, 0.005),
            "{lo} {hi}"
        );
        // n/n: upper end 1, lower end 0.025^(1/n).
        let i = clopper_pearson(20, 20);
        assert_eq!(i.hi, 1.0);
        assert!(close(i.lo, 0.025f64.powf(1.0 / 20.0), 1e-9));
        assert_eq!(clopper_pearson(0, 0), Interval { lo: 0.0, hi: 1.0 });
    }

    #[test]
    fn wilson_and_newcombe_match_newcombes_paper() {
        // Newcombe (1998), Statistics in Medicine 17, example (a): 56/70 vs 48/80, method 10:
        // difference 0.2, 95 % CI 0.0524 to 0.3339.
        let d = newcombe(56, 70, 48, 80);
        assert!(
            close(d.lo, 0.0524, 0.0001) && close(d.hi, 0.3339, 0.0001),
            "{d:?}"
        );
        // Example (e): 0/10 vs 0/20: −0.1611 to 0.2775.
        let d = newcombe(0, 10, 0, 20);
        assert!(
            close(d.lo, -0.1611, 0.0001) && close(d.hi, 0.2775, 0.0001),
            "{d:?}"
        );
        // Wilson 0/10: 0–0.2775.
        let w = wilson(0, 10);
        assert!(close(w.lo, 0.0, 1e-12) && close(w.hi, 0.2775, 0.0001));
    }

    #[test]
    fn binomial_range_covers_95_percent() {
        let (lo, hi) = binom_range(1024, 0.0025);
        assert_eq!((lo, hi), (0, 6));
        assert!(binom_cdf(hi, 1024, 0.0025) >= 0.975 && binom_cdf(hi - 1, 1024, 0.0025) < 0.975);
        let (lo, hi) = binom_range(1000, 0.05);
        assert!(binom_cdf(lo, 1000, 0.05) >= 0.025 && binom_cdf(lo - 1, 1000, 0.05) < 0.025);
        assert!((lo, hi) == (37, 64), "{lo} {hi}");
    }

    fn independent(n: u64, p: f64, seed: u64) -> LossSample {
        let mut rng = fastrand::Rng::with_seed(seed);
        LossSample {
            n,
            lost_at: (0..n as u32).filter(|_| rng.f64() < p).collect(),
        }
    }

    /// Gilbert-Elliott: good→bad with `p`, bad→good with `r`, every packet in bad lost.
    fn bursty(n: u64, p: f64, r: f64, seed: u64) -> LossSample {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut bad = false;
        let mut lost_at = vec![];
        for i in 0..n as u32 {
            bad = if bad { rng.f64() >= r } else { rng.f64() < p };
            if bad {
                lost_at.push(i);
            }
        }
        LossSample { n, lost_at }
    }

    #[test]
    fn clustering_is_detected_in_bursts_and_not_in_independent_loss() {
        let ind = independent(2000, 0.05, 1);
        assert!(!ind.clustered(), "r1 = {}", ind.lag1_autocorrelation());
        assert!(ind.lag1_autocorrelation().abs() < 0.1);
        let b = bursty(2000, 0.01, 0.2, 2);
        assert!(b.clustered(), "r1 = {}", b.lag1_autocorrelation());
        // Stationary autocorrelation of the chain: 1 − p − r = 0.79.
        assert!(
            close(b.lag1_autocorrelation(), 0.79, 0.1),
            "{}",
            b.lag1_autocorrelation()
        );
        assert!(close(b.mean_loss_run(), 5.0, 1.5), "{}", b.mean_loss_run());
        // A single burst is one run.
        let s = LossSample {
            n: 100,
            lost_at: vec![10, 11, 12, 13],
        };
        assert_eq!(s.mean_loss_run(), 4.0);
        assert!(s.clustered());
        // One consecutive pair among three losses is no burst.
        let pair = LossSample {
            n: 512,
            lost_at: vec![3, 100, 101],
        };
        assert!(pair.lag1_autocorrelation() > 2.0 / 512f64.sqrt() && !pair.clustered());
        assert_eq!(s.block_len(), 8);
        assert_eq!(
            LossSample {
                n: 1000,
                lost_at: vec![5]
            }
            .block_len(),
            10
        );
    }

    #[test]
    fn the_bootstrap_is_deterministic_and_wider_for_bursts() {
        let b = bursty(2000, 0.01, 0.2, 3);
        assert_eq!(block_bootstrap(&b), block_bootstrap(&b));
        let boot = block_bootstrap(&b);
        let exact = clopper_pearson(b.lost(), b.n);
        assert!(boot.contains(b.rate()));
        assert!(
            boot.hi - boot.lo > 1.5 * (exact.hi - exact.lo),
            "bursts: bootstrap {boot:?} should be much wider than binomial {exact:?}"
        );
        let e = LossEstimate::of(&b);
        assert_eq!(e.method, CiMethod::BlockBootstrap);
        assert!(e.ci_lo_pct <= e.exact_pct[0] && e.ci_hi_pct >= e.exact_pct[1]);
        // Independent loss: the bootstrap agrees with the binomial within a few tenths.
        let ind = independent(2000, 0.05, 4);
        let (boot, exact) = (block_bootstrap(&ind), clopper_pearson(ind.lost(), ind.n));
        assert!(close(boot.lo, exact.lo, 0.004) && close(boot.hi, exact.hi, 0.004));
        assert_eq!(LossEstimate::of(&ind).method, CiMethod::ClopperPearson);
    }

    #[test]
    fn the_bootstrap_covers_the_true_rate_of_bursty_loss() {
        // 200 runs of 1,000 packets of GE loss (stationary rate p/(p+r) = 4.76 %): the
        // quoted interval must cover the true rate in most runs, where the binomial one fails
        // far more often.
        let truth = 0.01 / 0.21;
        let (mut quoted, mut binomial) = (0, 0);
        for seed in 0..200 {
            let s = bursty(1000, 0.01, 0.2, 100 + seed);
            let e = LossEstimate::of(&s);
            quoted += usize::from(e.interval().contains(truth));
            let x = clopper_pearson(s.lost(), s.n);
            binomial += usize::from(x.contains(truth));
        }
        assert!(quoted >= 170, "quoted interval covered {quoted}/200");
        assert!(binomial < quoted, "binomial {binomial} vs quoted {quoted}");
    }

    #[test]
    fn differences_need_an_interval_that_excludes_zero() {
        let single = independent(1024, 0.05, 5);
        let dup = independent(1024, 0.0025, 6);
        let d = compare(&dup, &single);
        assert!(d.a_less() && d.method == CiMethod::Newcombe, "{d:?}");
        let same = compare(&independent(256, 0.05, 7), &independent(256, 0.05, 8));
        assert!(!same.a_less() && !same.a_more(), "{same:?}");
        // Bursts widen the difference's interval.
        let b1 = bursty(1000, 0.01, 0.2, 9);
        let b2 = bursty(1000, 0.01, 0.2, 10);
        let db = compare(&b1, &b2);
        let dn = newcombe(b1.lost(), b1.n, b2.lost(), b2.n);
        assert_eq!(db.method, CiMethod::BlockBootstrap);
        assert!(db.hi_pts - db.lo_pts > 100.0 * (dn.hi - dn.lo));
    }

    #[test]
    fn pooling_offsets_indices_and_spread_takes_the_median() {
        let a = LossSample {
            n: 10,
            lost_at: vec![9],
        };
        let b = LossSample {
            n: 5,
            lost_at: vec![0, 4],
        };
        let c = a.concat(&b);
        assert_eq!((c.n, c.lost_at.clone()), (15, vec![9, 10, 14]));
        assert_eq!(c.mean_loss_run(), 1.5);
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 10.0));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0]).median, 2.0);
    }

    #[test]
    fn median_ranks_cover_the_median() {
        // Known values: n = 100 → x(40) … x(61) (coverage 96.5 %); n = 10 → x(2) … x(9).
        assert_eq!(median_ranks(100), Some((40, 61)));
        assert_eq!(median_ranks(10), Some((2, 9)));
        assert_eq!(median_ranks(5), None);
        for n in [6u64, 20, 256, 1000] {
            let (lo, hi) = median_ranks(n).unwrap();
            // P(lo ≤ B + 1 ≤ hi − 1 …): coverage = P(lo ≤ B < hi) with B ~ Bin(n, ½).
            let coverage = binom_cdf(hi - 1, n, 0.5) - binom_cdf(lo - 1, n, 0.5);
            assert!(coverage >= 0.95, "n = {n}: {coverage}");
        }
    }
}
