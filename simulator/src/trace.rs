//! Recorded delay/loss traces that a link direction replays instead of its statistical model.
//!
//! A trace is a step function of the scenario clock: each line says from which millisecond on
//! datagrams get which one-way delay, or are lost. The format (documented precisely in
//! `docs/simulator.md` § Trace replay):
//!
//! ```text
//! # comment (also after a value); blank lines are ignored
//! 0      12.5      # from 0 ms: 12.5 ms one-way delay
//! 1000   loss      # from 1000 ms: every datagram lost
//! 1020   13
//! 10000  end       # optional: the trace loops with a period of 10 s
//! ```
//!
//! Times are milliseconds, strictly increasing, the first one 0. Without an `end` line the
//! last step holds for ever. Parsing is strict and every error names the file and the line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest delay a trace may give, milliseconds (the same bound as `delay_ms`).
pub const MAX_TRACE_DELAY_MS: f64 = 60_000.0;

/// What a trace does to datagrams arriving during one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraceStep {
    /// Delivered after this one-way delay, milliseconds.
    Delay(f64),
    /// Lost.
    Loss,
}

/// A parsed trace: steps sorted by start time, and the loop period if it has an `end` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    steps: Vec<(Duration, TraceStep)>,
    period: Option<Duration>,
}

/// Why a trace could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read trace {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A line is not valid.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl Trace {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
            path: path.to_owned(),
            source,
        })?;
        Trace::parse(&text, path)
    }

    /// Parses trace text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Trace, TraceError> {
        let err = |line: usize, message: String| TraceError::Parse {
            path: origin.to_owned(),
            line,
            message,
        };
        let mut steps: Vec<(Duration, TraceStep)> = Vec::new();
        let mut period = None;
        let mut last_ms = -1.0f64;
        let mut last_line = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            if period.is_some() {
                return Err(err(line, "nothing may follow the `end` line".into()));
            }
            let mut words = content.split_whitespace();
            let (Some(t), Some(v), None) = (words.next(), words.next(), words.next()) else {
                return Err(err(
                    line,
                    format!(
                        "expected `t_ms delay_ms`, `t_ms loss` or `t_ms end` (got {content:?})"
                    ),
                ));
            };
            let t_ms: f64 = t
                .parse()
                .map_err(|_| err(line, format!("time {t:?} is not a number of milliseconds")))?;
            if !(t_ms.is_finite() && t_ms >= 0.0) {
                return Err(err(line, format!("time must be >= 0 (got {t})")));
            }
            if steps.is_empty() && t_ms != 0.0 {
                return Err(err(
                    line,
                    format!("the first step must start at 0 (got {t})"),
                ));
            }
            if t_ms <= last_ms {
                return Err(err(
                    line,
                    format!("time {t} ms is not after the previous line's {last_ms} ms"),
                ));
            }
            let at = Duration::from_secs_f64(t_ms / 1000.0);
            match v {
                "end" => period = Some(at),
                "loss" => steps.push((at, TraceStep::Loss)),
                _ => {
                    let d: f64 = v.parse().map_err(|_| {
                        err(
                            line,
                            format!("{v:?} is neither a delay in milliseconds, `loss` nor `end`"),
                        )
                    })?;
                    if !(d.is_finite() && (0.0..=MAX_TRACE_DELAY_MS).contains(&d)) {
                        return Err(err(
                            line,
                            format!("delay must be within 0..={MAX_TRACE_DELAY_MS} ms (got {v})"),
                        ));
                    }
                    steps.push((at, TraceStep::Delay(d)));
                }
            }
            last_ms = t_ms;
            last_line = line;
        }
        if steps.is_empty() {
            return Err(err(
                last_line.max(1),
                "the trace has no step (`t_ms delay_ms` or `t_ms loss`)".into(),
            ));
        }
        Ok(Trace { steps, period })
    }

    /// The step in force at `at` on the scenario clock.
    pub fn at(&self, at: Duration) -> TraceStep {
        let t = match self.period {
            Some(p) => Duration::from_nanos((at.as_nanos() % p.as_nanos().max(1)) as u64),
            None => at,
        };
        // The last step starting at or before `t` (the first starts at 0).
        let i = self.steps.partition_point(|(s, _)| *s <= t);
        self.steps[i.saturating_sub(1)].1
    }

    /// Largest delay of any step, milliseconds.
    pub fn max_delay_ms(&self) -> f64 {
        self.steps
            .iter()
            .map(|(_, s)| match s {
                TraceStep::Delay(d) => *d,
                TraceStep::Loss => 0.0,
            })
            .fold(0.0, f64::max)
    }

    /// Loop period, if the trace has an `end` line.
    pub fn period(&self) -> Option<Duration> {
        self.period
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[(Duration, TraceStep)] {
        &self.steps
    }
}

/// A trace named in an impairment: the path as written, and the trace once it is loaded.
///
/// Scenario files give the path relative to themselves; [`TraceRef::load_relative_to`]
/// (called by `Scenario::load`) reads it. It serializes as the path, and cloning it is cheap.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRef {
    path: PathBuf,
    trace: Option<Arc<Trace>>,
}

impl TraceRef {
    /// A reference to `path`, not loaded yet.
    pub fn new(path: impl Into<PathBuf>) -> TraceRef {
        TraceRef {
            path: path.into(),
            trace: None,
        }
    }

    /// A loaded trace under the name `path`.
    pub fn loaded(path: impl Into<PathBuf>, trace: Trace) -> TraceRef {
        TraceRef {
            path: path.into(),
            trace: Some(Arc::new(trace)),
        }
    }

    /// The path as written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trace, if loaded.
    pub fn trace(&self) -> Option<&Arc<Trace>> {
        self.trace.as_ref()
    }

    /// Loads the file (a relative path is taken relative to `dir`); a no-op once loaded.
    pub fn load_relative_to(&mut self, dir: &Path) -> Result<(), TraceError> {
        if self.trace.is_none() {
            let full = dir.join(&self.path);
            self.trace = Some(Arc::new(Trace::load(&full)?));
        }
        Ok(())
    }
}

impl Serialize for TraceRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.path.to_string_lossy())
    }
}

impl<'de> Deserialize<'de> for TraceRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(TraceRef::new(String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Trace, TraceError> {
        Trace::parse(text, Path::new("t.trace"))
    }

    #[test]
    fn steps_hold_until_the_next_line_and_loop_after_end() {
        let t = parse("# wifi\n0 10\n\n100 loss # stall\n150.5 20\n200 end\n").unwrap();
        let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
        assert_eq!(t.at(ms(0.0)), TraceStep::Delay(10.0));
        assert_eq!(t.at(ms(99.9)), TraceStep::Delay(10.0));
        assert_eq!(t.at(ms(100.0)), TraceStep::Loss);
        assert_eq!(t.at(ms(150.5)), TraceStep::Delay(20.0));
        // Loops with period 200 ms.
        assert_eq!(t.at(ms(210.0)), TraceStep::Delay(10.0));
        assert_eq!(t.at(ms(1_120.0)), TraceStep::Loss);
        assert_eq!(t.max_delay_ms(), 20.0);
        // Without `end` the last step holds.
        let h = parse("0 5\n10 7\n").unwrap();
        assert_eq!(h.at(Duration::from_secs(3600)), TraceStep::Delay(7.0));
    }

    #[test]
    fn errors_name_the_file_and_the_line() {
        let cases = [
            ("0 1\n5 x\n", "t.trace:2:", "neither"),
            ("5 1\n", "t.trace:1:", "start at 0"),
            ("0 1\n10 2\n10 3\n", "t.trace:3:", "not after"),
            ("0 1\n# c\n10 2 3\n", "t.trace:3:", "expected"),
            ("0 -1\n", "t.trace:1:", "within"),
            ("0 1\n10 end\n20 1\n", "t.trace:3:", "follow"),
            ("# nothing\n", "t.trace:1:", "no step"),
            ("0 1\nten 2\n", "t.trace:2:", "not a number"),
        ];
        for (text, at, what) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(at) && e.contains(what), "{text:?}: {e}");
        }
    }
}
