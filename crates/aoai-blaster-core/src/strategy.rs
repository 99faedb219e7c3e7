//! Routing strategies: which endpoint a job goes to, among those that may take it now.
//!
//! The Dispatcher asks [`Router::pick`] with a predicate saying which endpoints are eligible
//! (healthy, in-flight room, not yet refused by their budget for this job) and each endpoint's
//! quota headroom. If the chosen endpoint's budget then refuses the job, the Dispatcher marks it
//! ineligible and asks again, so every strategy picks, in effect, among the endpoints that can
//! admit the job.
//!
//! - `weighted` ([`StrategyKind::Weighted`]): smooth weighted round-robin ([`WeightedRing`]),
//!   the default.
//! - `capacity`: the endpoint with the most quota headroom relative to its limits
//!   ([`crate::quota::BudgetSnapshot::headroom`]); ties (e.g. endpoints without limits) go by
//!   the weighted ring.
//! - `priority`: endpoints are grouped by their `priority` value and the group with the
//!   **lowest** value is served first (e.g. `0` for provisioned deployments, `1` for
//!   pay-as-you-go); within a group, by weight. A job spills to the next group only while no
//!   endpoint of the first can admit it, and the next job tries the first group again, so
//!   traffic comes back as soon as the first group has room.
//! - `latency`: power of two choices: two eligible endpoints drawn at random (from a seeded
//!   RNG), the one with the lower moving average (EWMA) of latency wins. An endpoint with no
//!   measurement yet counts as fastest, so each gets tried.
//!
//! ```
//! use aoai_blaster_core::config::StrategyKind;
//! use aoai_blaster_core::strategy::Router;
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! // Two endpoints: the first (priority 0) is preferred while it can admit.
//! let mut router = Router::new(StrategyKind::Priority, &[1, 1], &[0, 1], StdRng::seed_from_u64(1));
//! assert_eq!(router.pick(|_| true, |_| 1.0), Some(0));
//! // Its budget refused the job: spill to the second group.
//! assert_eq!(router.pick(|i| i != 0, |_| 1.0), Some(1));
//! ```

use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;

use crate::config::StrategyKind;
use crate::ring::WeightedRing;

/// The weight of the newest sample in the latency moving average.
pub const LATENCY_EWMA_ALPHA: f64 = 0.2;

/// Headroom differences below this count as ties for the `capacity` strategy.
pub const HEADROOM_TIE: f64 = 1e-9;

/// Picks endpoints by one [`StrategyKind`]. Pure: randomness comes from the seeded RNG given to
/// [`Router::new`], and latency from [`Router::observe_latency`].
#[derive(Debug)]
pub struct Router {
    kind: StrategyKind,
    ring: WeightedRing,
    priorities: Vec<i32>,
    latency_ms: Vec<Option<f64>>,
    rng: StdRng,
    scratch: Vec<bool>,
}

impl Router {
    /// A router over endpoints `0..weights.len()`; `priorities[i]` is endpoint `i`'s priority
    /// (missing entries count as 0). The weighted ring starts at a random point drawn from `rng`.
    pub fn new(kind: StrategyKind, weights: &[u32], priorities: &[i32], mut rng: StdRng) -> Self {
        let ring = WeightedRing::new(weights, &mut rng);
        let priorities = (0..weights.len())
            .map(|i| priorities.get(i).copied().unwrap_or(0))
            .collect();
        Router {
            kind,
            ring,
            priorities,
            latency_ms: vec![None; weights.len()],
            rng,
            scratch: Vec::with_capacity(weights.len()),
        }
    }

    /// The strategy in use.
    pub fn kind(&self) -> StrategyKind {
        self.kind
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.priorities.len()
    }

    /// True without endpoints.
    pub fn is_empty(&self) -> bool {
        self.priorities.is_empty()
    }

    /// Folds one attempt's latency into endpoint `index`'s moving average.
    pub fn observe_latency(&mut self, index: usize, elapsed: Duration) {
        let Some(slot) = self.latency_ms.get_mut(index) else {
            return;
        };
        let sample = elapsed.as_secs_f64() * 1_000.0;
        *slot = Some(match *slot {
            Some(average) => average + LATENCY_EWMA_ALPHA * (sample - average),
            None => sample,
        });
    }

    /// Endpoint `index`'s latency moving average in milliseconds, if measured.
    pub fn latency_ms(&self, index: usize) -> Option<f64> {
        self.latency_ms.get(index).copied().flatten()
    }

    /// Picks an endpoint among those for which `eligible(i)` holds, or `None` if none does.
    /// `headroom(i)` (0.0 to 1.0) is consulted by the `capacity` strategy only.
    pub fn pick(
        &mut self,
        eligible: impl Fn(usize) -> bool,
        headroom: impl Fn(usize) -> f64,
    ) -> Option<usize> {
        self.scratch.clear();
        self.scratch.extend((0..self.len()).map(&eligible));
        match self.kind {
            StrategyKind::Weighted => {
                let scratch = &self.scratch;
                self.ring.pick(|i| scratch[i])
            }
            StrategyKind::Priority => {
                let best = (0..self.len())
                    .filter(|&i| self.scratch[i])
                    .map(|i| self.priorities[i])
                    .min()?;
                let (scratch, priorities) = (&self.scratch, &self.priorities);
                self.ring.pick(|i| scratch[i] && priorities[i] == best)
            }
            StrategyKind::Capacity => {
                let rooms: Vec<(usize, f64)> = (0..self.len())
                    .filter(|&i| self.scratch[i])
                    .map(|i| (i, headroom(i)))
                    .collect();
                let best = rooms.iter().map(|(_, r)| *r).fold(f64::NAN, f64::max);
                if best.is_nan() {
                    return None;
                }
                for (i, room) in &rooms {
                    self.scratch[*i] = *room >= best - HEADROOM_TIE;
                }
                let scratch = &self.scratch;
                self.ring.pick(|i| scratch[i])
            }
            StrategyKind::Latency => {
                let candidates: Vec<usize> = (0..self.len()).filter(|&i| self.scratch[i]).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    n => {
                        let a = self.rng.random_range(0..n);
                        let mut b = self.rng.random_range(0..n - 1);
                        if b >= a {
                            b += 1;
                        }
                        let (a, b) = (candidates[a], candidates[b]);
                        let cost = |i: usize| self.latency_ms[i].unwrap_or(0.0);
                        Some(if cost(b) < cost(a) { b } else { a })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn router(kind: StrategyKind, weights: &[u32], priorities: &[i32]) -> Router {
        Router::new(kind, weights, priorities, StdRng::seed_from_u64(7))
    }

    fn counts(picks: impl Iterator<Item = Option<usize>>, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for index in picks.flatten() {
            counts[index] += 1;
        }
        counts
    }

    #[test]
    fn weighted_follows_the_weights_and_skips_ineligible() {
        let mut r = router(StrategyKind::Weighted, &[3, 1], &[]);
        let c = counts((0..400).map(|_| r.pick(|_| true, |_| 0.0)), 2);
        assert_eq!(c, vec![300, 100]);
        assert_eq!(r.pick(|i| i == 1, |_| 0.0), Some(1));
        assert_eq!(r.pick(|_| false, |_| 1.0), None);
    }

    #[test]
    fn priority_serves_the_lowest_value_and_spills_only_while_it_cannot_admit() {
        // Endpoints 0 and 2 are group 0 (weights 1 and 1), endpoint 1 is group 5.
        let mut r = router(StrategyKind::Priority, &[1, 1, 1], &[0, 5, 0]);
        let c = counts((0..100).map(|_| r.pick(|_| true, |_| 1.0)), 3);
        assert_eq!(c, vec![50, 0, 50]);
        // Group 0 full: spill to group 5.
        assert_eq!(r.pick(|i| i == 1, |_| 1.0), Some(1));
        // One of group 0 has room again: back to it at once.
        assert_eq!(r.pick(|i| i != 0, |_| 1.0), Some(2));
        // Negative priorities come first too.
        let mut r = router(StrategyKind::Priority, &[1, 1], &[0, -1]);
        assert_eq!(r.pick(|_| true, |_| 1.0), Some(1));
        assert_eq!(r.pick(|_| false, |_| 1.0), None);
    }

    #[test]
    fn capacity_picks_the_most_headroom_and_breaks_ties_by_weight() {
        let mut r = router(StrategyKind::Capacity, &[1, 1, 1], &[]);
        let headroom = [0.2, 0.9, 0.5];
        assert_eq!(r.pick(|_| true, |i| headroom[i]), Some(1));
        assert_eq!(r.pick(|i| i != 1, |i| headroom[i]), Some(2));
        // All equal (no limits: 1.0 each): round-robin by weight.
        let mut r = router(StrategyKind::Capacity, &[2, 1], &[]);
        let c = counts((0..300).map(|_| r.pick(|_| true, |_| 1.0)), 2);
        assert_eq!(c, vec![200, 100]);
        assert_eq!(r.pick(|_| false, |_| 1.0), None);
    }

    #[test]
    fn latency_prefers_the_faster_of_two_and_tries_unmeasured_endpoints() {
        let mut r = router(StrategyKind::Latency, &[1, 1, 1], &[]);
        // Nothing measured: every endpoint counts as fastest (ties keep the first drawn).
        let c = counts((0..300).map(|_| r.pick(|_| true, |_| 1.0)), 3);
        assert!(c.iter().all(|&n| n > 50), "{c:?}");
        r.observe_latency(0, Duration::from_millis(100));
        r.observe_latency(1, Duration::from_millis(300));
        r.observe_latency(2, Duration::from_millis(200));
        // The slowest is never picked when two are drawn; the fastest wins every draw it is in.
        let c = counts((0..300).map(|_| r.pick(|_| true, |_| 1.0)), 3);
        assert_eq!(c[1], 0);
        assert_eq!(c[0] + c[2], 300);
        assert!(c[0] > c[2], "{c:?}");
        // Only one eligible: it, whatever its latency.
        assert_eq!(r.pick(|i| i == 1, |_| 1.0), Some(1));
        assert_eq!(r.pick(|_| false, |_| 1.0), None);
    }

    #[test]
    fn latency_average_moves_by_alpha() {
        let mut r = router(StrategyKind::Latency, &[1], &[]);
        assert_eq!(r.latency_ms(0), None);
        r.observe_latency(0, Duration::from_millis(100));
        assert_eq!(r.latency_ms(0), Some(100.0));
        r.observe_latency(0, Duration::from_millis(200));
        assert_eq!(r.latency_ms(0), Some(120.0));
        r.observe_latency(5, Duration::from_millis(1));
        assert_eq!(r.latency_ms(5), None);
    }

    #[test]
    fn same_seed_same_choices() {
        let run = || {
            let mut r = router(StrategyKind::Latency, &[1, 1, 1, 1], &[]);
            (0..50)
                .map(|_| r.pick(|_| true, |_| 1.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    proptest! {
        // A fixed seed: the same cases on every run, so a red CI always means a real change.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_2026),
            ..ProptestConfig::default()
        })]
        #[test]
        fn every_strategy_picks_only_eligible_endpoints(
            kind in prop::sample::select(StrategyKind::ALL.to_vec()),
            weights in prop::collection::vec(1u32..5, 1..6),
            mask in prop::collection::vec(any::<bool>(), 6),
            seed in any::<u64>(),
        ) {
            let priorities: Vec<i32> = (0..weights.len()).map(|i| (i % 3) as i32).collect();
            let mut r = Router::new(kind, &weights, &priorities, StdRng::seed_from_u64(seed));
            let eligible = |i: usize| mask[i];
            let any = (0..weights.len()).any(eligible);
            for _ in 0..20 {
                let pick = r.pick(eligible, |i| 1.0 / (i as f64 + 1.0));
                prop_assert_eq!(pick.is_some(), any);
                if let Some(i) = pick {
                    prop_assert!(mask[i]);
                    if kind == StrategyKind::Priority {
                        let best = (0..weights.len()).filter(|&j| mask[j]).map(|j| priorities[j]).min();
                        prop_assert_eq!(Some(priorities[i]), best);
                    }
                }
            }
        }
    }
}
