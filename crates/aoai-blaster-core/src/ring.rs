//! Weighted choice of an endpoint: smooth weighted round-robin.
//!
//! Why smooth: a plain weighted round-robin sends runs of requests to one endpoint (`a a a a a b c`
//! for weights 5, 1, 1), so one deployment takes a burst while the others idle, and its short
//! request windows (Azure counts RPM per 1 s or 10 s) fill first. The smooth variant used by
//! nginx interleaves (`a a b a c a a`) while giving every endpoint exactly its share of each full
//! cycle of `sum(weights)` picks.
//!
//! Why a random start: several processes built from the same configuration would otherwise all
//! open on the heaviest endpoint at the same moment. [`WeightedRing::new`] advances the ring to a
//! random point of its cycle, drawn from a caller-supplied (seedable) RNG, so tests stay exact.
//!
//! Why a predicate: whether an endpoint can take a job now (cooling down, disabled, at its
//! in-flight limit, out of quota) is the caller's knowledge. [`WeightedRing::pick`] skips the
//! endpoints the predicate rejects, and the remaining ones keep their relative proportions (a
//! change of the eligible set perturbs the shares by a couple of picks while the scores settle).
//!
//! ```
//! use aoai_blaster_core::ring::WeightedRing;
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! let mut ring = WeightedRing::new(&[2, 1], &mut StdRng::seed_from_u64(7));
//! let picks: Vec<usize> = (0..300).filter_map(|_| ring.pick(|_| true)).collect();
//! assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 200);
//!
//! // Endpoint 0 is cooling down: only endpoint 1 comes out.
//! assert_eq!(ring.pick(|i| i != 0), Some(1));
//! // Nobody can take the job.
//! assert_eq!(ring.pick(|_| false), None);
//! ```

use rand::RngExt;

/// The most single picks [`WeightedRing::new`] spends to reach its random start.
///
/// The start is uniform over the whole cycle when `cycle length × endpoints` stays below this
/// bound (always, for weights reduced by their common divisor in any sensible configuration);
/// beyond it the start is uniform over the first `bound / endpoints` positions of the cycle.
pub const MAX_START_STEPS: u64 = 1 << 22;

/// Smooth weighted round-robin over endpoints `0..len()` (nginx's algorithm), with a random start.
///
/// Each pick adds every eligible endpoint's weight to its running score, takes the endpoint with
/// the highest score (the lowest index on a tie), and subtracts the eligible weights' sum from
/// the winner. (One addition to nginx: scores carried over from a different eligible set are
/// clamped to twice the eligible sum, so an endpoint coming back from a cooldown neither bursts
/// nor starves.) With every endpoint eligible the sequence repeats every `sum(weights)` picks (after
/// dividing the weights by their greatest common divisor) and each cycle holds exactly `weight`
/// picks of each endpoint. An endpoint of weight 0 is never picked.
#[derive(Debug, Clone)]
pub struct WeightedRing {
    weights: Vec<u32>,
    scores: Vec<i64>,
    /// Scratch space for one pick's eligibility answers (kept to avoid an allocation per pick).
    eligible: Vec<bool>,
}

impl WeightedRing {
    /// Builds a ring for `weights` (index `i` is endpoint `i`) and moves it to a random point of
    /// its cycle, drawn from `rng`. Weights are divided by their greatest common divisor first
    /// (`[300, 200]` behaves as `[3, 2]`), which changes no share and shortens the cycle.
    pub fn new(weights: &[u32], rng: &mut impl rand::Rng) -> WeightedRing {
        let mut ring = WeightedRing::unshuffled(weights);
        let cycle = ring.cycle_len();
        if cycle > 1 {
            let endpoints = u64::try_from(ring.weights.len()).unwrap_or(u64::MAX).max(1);
            let span = cycle.min((MAX_START_STEPS / endpoints).max(1));
            let steps = rng.random_range(0..span);
            for _ in 0..steps {
                ring.pick(|_| true);
            }
        }
        ring
    }

    /// Builds a ring that starts at the beginning of its cycle (the heaviest endpoint first):
    /// deterministic, for tests and for callers that want nginx's exact sequence.
    pub fn unshuffled(weights: &[u32]) -> WeightedRing {
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        WeightedRing {
            weights: weights.iter().map(|w| w / divisor).collect(),
            scores: vec![0; weights.len()],
            eligible: Vec::with_capacity(weights.len()),
        }
    }

    /// Picks the next endpoint among those for which `eligible(index)` is true, or `None` when
    /// no endpoint of positive weight is eligible (the ring's state is then unchanged).
    ///
    /// `eligible` is called at most once per endpoint per pick, in index order.
    pub fn pick(&mut self, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut total: i64 = 0;
        self.eligible.clear();
        for (index, &weight) in self.weights.iter().enumerate() {
            let take = weight > 0 && eligible(index);
            self.eligible.push(take);
            if take {
                total += i64::from(weight);
            }
        }
        if total == 0 {
            return None;
        }
        // Scores left over from a different eligible set (an endpoint back from a cooldown, or
        // the others while it was away) are pulled into the range the current set produces by
        // itself, so they cannot cause a long run. With every endpoint eligible, scores stay
        // well inside ±2×total and this never changes nginx's sequence.
        let bound = 2 * total;
        let mut best: Option<usize> = None;
        for (index, &weight) in self.weights.iter().enumerate() {
            if !self.eligible[index] {
                continue;
            }
            let score = self.scores[index].clamp(-bound, bound) + i64::from(weight);
            self.scores[index] = score;
            if best.is_none_or(|b| score > self.scores[b]) {
                best = Some(index);
            }
        }
        let winner = best?;
        self.scores[winner] -= total;
        Some(winner)
    }

    /// Number of endpoints (including those of weight 0).
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// True when the ring has no endpoints at all.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The weights in use, after division by their greatest common divisor.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// Length of one full cycle with every endpoint eligible: the sum of the reduced weights.
    pub fn cycle_len(&self) -> u64 {
        self.weights.iter().map(|&w| u64::from(w)).sum()
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn sequence(ring: &mut WeightedRing, picks: usize) -> Vec<usize> {
        (0..picks).map(|_| ring.pick(|_| true).unwrap()).collect()
    }

    fn letters(picks: &[usize]) -> String {
        picks.iter().map(|&i| char::from(b'a' + i as u8)).collect()
    }

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let mut ring = WeightedRing::unshuffled(&[5, 1, 1]);
        assert_eq!(letters(&sequence(&mut ring, 14)), "aabacaaaabacaa");
    }

    #[test]
    fn exact_sequences_for_small_weights() {
        let cases: [(&[u32], &str); 5] = [
            (&[1, 1], "abab"),
            (&[2, 1], "abaaba"),
            (&[3, 2], "ababaababa"),
            (&[2, 1, 1], "abcaabca"),
            (&[1, 2, 3], "cbacbc"),
        ];
        for (weights, expected) in cases {
            let mut ring = WeightedRing::unshuffled(weights);
            assert_eq!(
                letters(&sequence(&mut ring, expected.len())),
                expected,
                "{weights:?}"
            );
        }
    }

    #[test]
    fn weights_are_reduced_by_their_common_divisor() {
        let mut ring = WeightedRing::unshuffled(&[300, 200]);
        assert_eq!(ring.weights(), &[3, 2]);
        assert_eq!(ring.cycle_len(), 5);
        assert_eq!(letters(&sequence(&mut ring, 5)), "ababa");
    }

    #[test]
    fn zero_weight_endpoints_never_come_out() {
        let mut ring = WeightedRing::unshuffled(&[0, 2, 0, 1]);
        assert_eq!(letters(&sequence(&mut ring, 6)), "bdbbdb");
        let mut only_zero = WeightedRing::unshuffled(&[0, 0]);
        assert_eq!(only_zero.pick(|_| true), None);
        let mut empty = WeightedRing::new(&[], &mut StdRng::seed_from_u64(1));
        assert!(empty.is_empty());
        assert_eq!(empty.pick(|_| true), None);
    }

    #[test]
    fn skipping_keeps_the_others_in_proportion() {
        let mut ring = WeightedRing::unshuffled(&[1, 2, 1]);
        // Endpoint 1 is cooling down: 0 and 2 alternate.
        let picks: Vec<usize> = (0..6).map(|_| ring.pick(|i| i != 1).unwrap()).collect();
        assert_eq!(letters(&picks), "acacac");
    }

    #[test]
    fn an_endpoint_back_from_a_cooldown_neither_bursts_nor_starves() {
        let mut ring = WeightedRing::unshuffled(&[1, 1, 1]);
        // Endpoint 0 is cooling for a long time while 1 and 2 serve alone.
        let alone: Vec<usize> = (0..1000).map(|_| ring.pick(|i| i != 0).unwrap()).collect();
        assert_eq!(letters(&alone[..6]), "bcbcbc");
        // Back to all three: interleaved at once, no catch-up run for either side.
        assert_eq!(letters(&sequence(&mut ring, 9)), "abcabcabc");
        assert_eq!(alone.iter().filter(|&&i| i == 1).count(), 500);
    }

    #[test]
    fn nothing_eligible_leaves_the_ring_unchanged() {
        let mut ring = WeightedRing::unshuffled(&[2, 1]);
        let mut asked = Vec::new();
        assert_eq!(
            ring.pick(|i| {
                asked.push(i);
                false
            }),
            None
        );
        assert_eq!(asked, vec![0, 1]);
        assert_eq!(letters(&sequence(&mut ring, 3)), "aba");
    }

    #[test]
    fn the_start_depends_on_the_seed_and_is_reproducible() {
        let weights = [1, 1, 1, 1, 1, 1, 1, 1];
        let first =
            |seed| WeightedRing::new(&weights, &mut StdRng::seed_from_u64(seed)).pick(|_| true);
        assert_eq!(first(3), first(3));
        let starts: std::collections::BTreeSet<_> = (0..64).map(first).collect();
        // 64 seeds over 8 equally likely starts: all of them should appear.
        assert_eq!(starts.len(), 8);
    }

    #[test]
    fn a_random_start_is_a_rotation_of_the_cycle() {
        let weights = [5, 3, 1];
        let reference = sequence(&mut WeightedRing::unshuffled(&weights), 9);
        for seed in 0..20 {
            let mut ring = WeightedRing::new(&weights, &mut StdRng::seed_from_u64(seed));
            let got = sequence(&mut ring, 9);
            let rotated = (0..9).any(|r| (0..9).all(|k| got[k] == reference[(k + r) % 9]));
            assert!(
                rotated,
                "seed {seed}: {got:?} is not a rotation of {reference:?}"
            );
        }
    }

    fn longest_run(picks: &[usize], endpoint: usize) -> usize {
        let mut best = 0;
        let mut run = 0;
        for &p in picks {
            run = if p == endpoint { run + 1 } else { 0 };
            best = best.max(run);
        }
        best
    }

    proptest! {
        // A fixed seed: the same cases on every run, so a red CI always means a real change.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_2026),
            ..ProptestConfig::default()
        })]
        #[test]
        fn every_cycle_gives_each_endpoint_exactly_its_weight(
            weights in prop::collection::vec(0u32..12, 1..7),
            seed in any::<u64>(),
            cycles in 1usize..4,
        ) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let mut ring = WeightedRing::new(&weights, &mut StdRng::seed_from_u64(seed));
            let reduced = ring.weights().to_vec();
            let total = usize::try_from(ring.cycle_len()).unwrap();
            let picks = sequence(&mut ring, total * cycles);
            for (i, &w) in reduced.iter().enumerate() {
                let count = picks.iter().filter(|&&p| p == i).count();
                prop_assert_eq!(count, w as usize * cycles);
            }
        }

        #[test]
        fn skipped_endpoints_never_come_out_and_the_rest_keep_their_share(
            weights in prop::collection::vec(1u32..10, 2..7),
            skipped_mask in any::<u8>(),
            seed in any::<u64>(),
        ) {
            let skipped = |i: usize| skipped_mask & (1 << i) != 0;
            prop_assume!((0..weights.len()).any(|i| !skipped(i)));
            let mut ring = WeightedRing::new(&weights, &mut StdRng::seed_from_u64(seed));
            let eligible_total: u64 = ring
                .weights()
                .iter()
                .enumerate()
                .filter(|&(i, _)| !skipped(i))
                .map(|(_, &w)| u64::from(w))
                .sum();
            let rounds = 3 * usize::try_from(eligible_total).unwrap();
            // Scores carried over from before the skip (the random start) perturb the first
            // cycles by a few picks at most; after that the shares are within two picks per
            // three cycles. The skipped endpoints never come out at all.
            for (phase, tolerance) in [("settling", 3), ("settled", 2)] {
                let picks: Vec<usize> =
                    (0..rounds).map(|_| ring.pick(|i| !skipped(i)).unwrap()).collect();
                for (i, &w) in ring.weights().iter().enumerate() {
                    let count = picks.iter().filter(|&&p| p == i).count();
                    if skipped(i) {
                        prop_assert_eq!(count, 0);
                    } else {
                        let expected = 3 * w as usize;
                        prop_assert!(
                            count.abs_diff(expected) <= tolerance,
                            "{phase}: endpoint {i}: {count} vs {expected}"
                        );
                    }
                }
            }
        }

        #[test]
        fn runs_are_no_longer_than_the_weights_force(
            weights in prop::collection::vec(1u32..12, 2..6),
            seed in any::<u64>(),
        ) {
            let mut ring = WeightedRing::new(&weights, &mut StdRng::seed_from_u64(seed));
            let reduced = ring.weights().to_vec();
            let total: u32 = reduced.iter().sum();
            let picks = sequence(&mut ring, 4 * total as usize);
            for (i, &w) in reduced.iter().enumerate() {
                let others = total - w;
                // The shortest possible longest run is ceil(w / others) (1 for an endpoint with
                // at most half of the weight). nginx's order, read across cycle boundaries as a
                // random start does, stays within twice that.
                let necessary = w.div_ceil(others) as usize;
                prop_assert!(
                    longest_run(&picks, i) <= 2 * necessary,
                    "endpoint {i} weight {w} of {total}: run {} in {:?}", longest_run(&picks, i), picks
                );
            }
        }
    }
}
