//! Exit selection: an ordered list (primary, then backups), pure and deterministic.
//!
//! Each candidate gets a cost in milliseconds of RTT: the estimated route RTT to the game,
//! plus penalties for load and degraded health; unhealthy, draining or full nodes are left
//! out. The primary is the cheapest, except that the current primary is kept unless the
//! best is clearly better (≥ 10 ms or ≥ 1/3 cheaper), so routes don't flap on noise.
//! Backups prefer a different failure domain (region, then provider) from those already
//! chosen, as long as that costs at most `diversity_slack` more than the best remaining.

use std::time::Duration;

use crate::node::{Health, NodeId};

/// One node that could carry a session to its game.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// First failure domain.
    pub region: String,
    /// Second failure domain (empty if unknown: never counts as different).
    pub provider: String,
    /// Estimated RTT of the route through this node to the game; `None` if unknown.
    pub rtt: Option<Duration>,
    /// Utilisation, 0–1 (see [`crate::Load::utilisation`]).
    pub load: f32,
    /// Self-reported health.
    pub health: Health,
    /// Accepts no new sessions.
    pub draining: bool,
}

/// Knobs of [`select_exits`].
#[derive(Clone, Debug)]
pub struct SelectionPolicy {
    /// Length of the returned list (primary + backups).
    pub max_exits: usize,
    /// Switch primary if the best is at least this much cheaper…
    pub switch_min_gain: Duration,
    /// …or at least this fraction cheaper.
    pub switch_min_ratio: f64,
    /// Cost assumed for a candidate with no RTT estimate.
    pub unknown_rtt: Duration,
    /// Added to a degraded node's cost.
    pub degraded_penalty: Duration,
    /// Added at full load; ramps quadratically from zero at half load.
    pub full_load_penalty: Duration,
    /// Most extra cost accepted to put a backup in another failure domain.
    pub diversity_slack: Duration,
}

impl Default for SelectionPolicy {
    fn default() -> Self {
        SelectionPolicy {
            max_exits: 3,
            switch_min_gain: Duration::from_millis(10),
            switch_min_ratio: 1.0 / 3.0,
            unknown_rtt: Duration::from_millis(500),
            degraded_penalty: Duration::from_millis(25),
            full_load_penalty: Duration::from_millis(50),
            diversity_slack: Duration::from_millis(40),
        }
    }
}

/// Cost of routing through `c`, or `None` if it must not be used.
pub fn cost(c: &Candidate, policy: &SelectionPolicy) -> Option<Duration> {
    if c.draining || c.health == Health::Unhealthy || c.load >= 1.0 {
        return None;
    }
    let mut cost = c.rtt.unwrap_or(policy.unknown_rtt);
    if c.health == Health::Degraded {
        cost += policy.degraded_penalty;
    }
    let over_half = ((c.load - 0.5) / 0.5).clamp(0.0, 1.0) as f64;
    cost += policy.full_load_penalty.mul_f64(over_half * over_half);
    Some(cost)
}

/// Whether moving the primary from cost `current` to cost `best` is worth it.
pub fn clearly_better(best: Duration, current: Duration, policy: &SelectionPolicy) -> bool {
    let Some(gain) = current.checked_sub(best) else {
        return false;
    };
    !gain.is_zero()
        && (gain >= policy.switch_min_gain
            || gain.as_secs_f64() >= current.as_secs_f64() * policy.switch_min_ratio)
}

/// Orders `candidates` for a session: primary first, then backups, at most
/// `policy.max_exits`. `current` is the primary in use, if any (hysteresis).
pub fn select_exits(
    candidates: &[Candidate],
    current: Option<&NodeId>,
    policy: &SelectionPolicy,
) -> Vec<Candidate> {
    let mut pool: Vec<(Duration, &Candidate)> = candidates
        .iter()
        .filter_map(|c| Some((cost(c, policy)?, c)))
        .collect();
    pool.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.node.cmp(&b.1.node)));
    pool.dedup_by(|a, b| a.1.node == b.1.node);
    if pool.is_empty() || policy.max_exits == 0 {
        return Vec::new();
    }

    let mut primary = 0;
    if let Some(cur) = current.and_then(|id| pool.iter().position(|(_, c)| &c.node == id))
        && !clearly_better(pool[0].0, pool[cur].0, policy)
    {
        primary = cur;
    }
    let mut chosen = vec![pool.remove(primary)];

    while chosen.len() < policy.max_exits && !pool.is_empty() {
        let best = pool[0].0;
        let new_region = |c: &Candidate| chosen.iter().all(|(_, x)| x.region != c.region);
        let new_provider = |c: &Candidate| {
            !c.provider.is_empty() && chosen.iter().all(|(_, x)| x.provider != c.provider)
        };
        let pick = [
            pool.iter().position(|(_, c)| new_region(c)),
            pool.iter().position(|(_, c)| new_provider(c)),
        ]
        .into_iter()
        .flatten()
        .find(|&i| pool[i].0 <= best + policy.diversity_slack)
        .unwrap_or(0);
        chosen.push(pool.remove(pick));
    }
    chosen.into_iter().map(|(_, c)| c.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn cand(id: &str, region: &str, rtt: u64) -> Candidate {
        Candidate {
            node: id.parse().unwrap(),
            region: region.into(),
            provider: String::new(),
            rtt: Some(ms(rtt)),
            load: 0.1,
            health: Health::Ok,
            draining: false,
        }
    }

    fn ids(v: &[Candidate]) -> Vec<&str> {
        v.iter().map(|c| c.node.as_str()).collect()
    }

    #[test]
    fn orders_by_cost_and_drops_unusable() {
        let p = SelectionPolicy {
            diversity_slack: Duration::ZERO,
            max_exits: 10,
            ..Default::default()
        };
        let mut unhealthy = cand("u", "eu", 1);
        unhealthy.health = Health::Unhealthy;
        let mut draining = cand("d", "eu", 1);
        draining.draining = true;
        let mut full = cand("f", "eu", 1);
        full.load = 1.0;
        let mut degraded = cand("g", "eu", 10);
        degraded.health = Health::Degraded; // 35
        let mut busy = cand("b", "eu", 20);
        busy.load = 0.9; // 20 + 50 * 0.64 = 52
        let mut unknown = cand("x", "eu", 0);
        unknown.rtt = None;
        let all = [
            unknown,
            cand("c", "eu", 30),
            busy,
            unhealthy,
            draining,
            full,
            degraded,
            cand("a", "eu", 15),
        ];
        assert_eq!(
            ids(&select_exits(&all, None, &p)),
            ["a", "c", "g", "b", "x"]
        );
        assert!(select_exits(&[], None, &p).is_empty());
    }

    #[test]
    fn hysteresis_keeps_current_unless_clearly_better() {
        let p = SelectionPolicy::default();
        let cur: NodeId = "b".parse().unwrap();
        // 5 ms better on 60 ms: neither 10 ms nor a third.
        let c = [cand("a", "eu", 55), cand("b", "eu", 60)];
        assert_eq!(ids(&select_exits(&c, Some(&cur), &p))[0], "b");
        assert_eq!(ids(&select_exits(&c, None, &p))[0], "a");
        // 12 ms better: switch.
        let c = [cand("a", "eu", 48), cand("b", "eu", 60)];
        assert_eq!(ids(&select_exits(&c, Some(&cur), &p))[0], "a");
        // 4 ms better on 9 ms (> 1/3): switch.
        let c = [cand("a", "eu", 5), cand("b", "eu", 9)];
        assert_eq!(ids(&select_exits(&c, Some(&cur), &p))[0], "a");
        // Current became unusable: switch whatever the gain.
        let mut b = cand("b", "eu", 60);
        b.draining = true;
        let c = [cand("a", "eu", 59), b];
        assert_eq!(ids(&select_exits(&c, Some(&cur), &p)), ["a"]);
    }

    /// Two equally good exits under ±4 ms noise: with hysteresis the primary never moves;
    /// without it, it flips constantly (so this test can fail).
    #[test]
    fn noise_does_not_flap() {
        let p = SelectionPolicy::default();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % 9
        };
        let (mut with, mut without) = (0, 0);
        let mut current: Option<NodeId> = None;
        let mut last_naive: Option<NodeId> = None;
        for _ in 0..1_000 {
            let c = [cand("a", "eu", 46 + noise()), cand("b", "eu", 46 + noise())];
            let pick = select_exits(&c, current.as_ref(), &p)[0].node.clone();
            if current.as_ref().is_some_and(|x| *x != pick) {
                with += 1;
            }
            current = Some(pick);
            let naive = select_exits(&c, None, &p)[0].node.clone();
            if last_naive.as_ref().is_some_and(|x| *x != naive) {
                without += 1;
            }
            last_naive = Some(naive);
        }
        assert_eq!(with, 0);
        assert!(without > 100, "{without}");
    }

    #[test]
    fn backup_prefers_another_region() {
        let p = SelectionPolicy::default();
        let c = [
            cand("a", "eu", 20),
            cand("b", "eu", 22),
            cand("c", "us", 45),
            cand("d", "us", 46),
        ];
        assert_eq!(ids(&select_exits(&c, None, &p)), ["a", "c", "b"]);
        // Too far to be worth it: same region first.
        let c = [
            cand("a", "eu", 20),
            cand("b", "eu", 22),
            cand("c", "us", 90),
        ];
        assert_eq!(ids(&select_exits(&c, None, &p)), ["a", "b", "c"]);
    }

    #[test]
    fn backup_then_prefers_another_provider() {
        let p = SelectionPolicy::default();
        let with_provider = |id, rtt, provider: &str| Candidate {
            provider: provider.into(),
            ..cand(id, "eu", rtt)
        };
        let c = [
            with_provider("a", 20, "hetzner"),
            with_provider("b", 21, "hetzner"),
            with_provider("c", 25, "ovh"),
        ];
        assert_eq!(ids(&select_exits(&c, None, &p)), ["a", "c", "b"]);
    }

    #[test]
    fn max_exits_bounds_the_list() {
        let p = SelectionPolicy {
            max_exits: 2,
            ..Default::default()
        };
        let c = [cand("a", "eu", 1), cand("b", "eu", 2), cand("c", "eu", 3)];
        assert_eq!(select_exits(&c, None, &p).len(), 2);
    }
}
