//! [`Calibration`]: what a server's `x-ratelimit-remaining-*` count says about its accounting.
//!
//! Why learn it: Azure charges an *estimate* on arrival ("based in part on the character
//! count", plus `max_tokens`), and how it estimates is not documented. A client that charges
//! its own estimate sends too little where the server charges less (a 2x loss where it charges
//! only `max_tokens`) and meets 429s where it charges more. The remaining count tells: between
//! two replies whose requests arrived in the same window, it drops by what the server charged
//! for the requests that arrived in between, and our own count rose by what we charged for the
//! same requests. The ratio of the drops to the rises, over recent pairs of replies, is the
//! server's charge per unit of ours.
//!
//! Why a header must earn trust: a stand-in server (a proxy, a gateway, another API) may send
//! remaining counts that do not follow our requests at all: a value that never moves, or one
//! from another window. Read as Azure's, a remaining count stuck at 3 teaches a limit of 4
//! requests a window and paces a deployment to a crawl. A header is believed only once it has
//! been seen to fall as our count rose, and stops being believed when, over recent pairs, it
//! barely falls at all ([`MIN_FACTOR`]); an unbelieved header is treated as missing.
//!
//! Pairs are taken in the order the requests were charged (reservation ids), not the order the
//! replies came back, so replies that overtake each other do not distort the drops. A pair
//! whose remaining count went up spans a window's boundary (or another client's charges aged
//! out) and says nothing about the charge; it is skipped. Where the server's windows are fixed
//! and ours slide, our count also loses charges the server already forgot, so the ratio errs
//! high (charging more: safe); where the server's windows slide like ours, it is exact.

use std::collections::{BTreeMap, VecDeque};

/// Pairs of replies the factor needs before it replaces the documented estimate (1.0).
pub const MIN_PAIRS: usize = 8;

/// Below this ratio of drops to rises (over at least [`MIN_PAIRS`] pairs) a remaining count
/// does not follow our charges: the header is treated as missing. Far below any real charge
/// ratio (a request charged only its `max_tokens` of 100 with a prompt of 2,000 is 0.05).
pub const MIN_FACTOR: f64 = 0.02;

/// The largest factor charged: a server charging more than 4 times our estimate is more likely
/// shared with other clients (their charges fall into our pairs' drops); its 429s and the
/// remaining counts themselves still hold us back.
pub const MAX_FACTOR: f64 = 4.0;

/// Recent pairs the factor is taken over.
const MAX_PAIRS: usize = 256;

/// Recent replies kept to pair later ones with (replies come back out of order).
const MAX_SAMPLES: usize = 64;

/// One reply: our count when its request arrived, and the remaining count it carried.
#[derive(Clone, Copy, Debug)]
struct Sample {
    counted: u64,
    remaining: u64,
}

/// Two replies in charging order: how far the remaining count fell, how far our count rose.
#[derive(Clone, Copy, Debug)]
struct Pair {
    drop: u64,
    rise: u64,
}

/// What one `x-ratelimit-remaining-*` header says about the server's accounting: whether it
/// follows our charges at all ([`Calibration::trusted`]) and what the server charges per unit
/// we charge ([`Calibration::factor`]). See the module docs.
#[derive(Clone, Debug, Default)]
pub(super) struct Calibration {
    samples: BTreeMap<u64, Sample>,
    pairs: VecDeque<Pair>,
    drops: u64,
    rises: u64,
    /// Pairs kept in which the remaining count fell.
    falls: usize,
    /// Whether the header was trusted when the factor was last reset (a 429): trust is about
    /// the header, the reset only about the factor.
    trusted_before_reset: bool,
}

impl Calibration {
    /// The reply to the request charged as `id` carried `remaining`; our count (in our units,
    /// that request included when the server counted it) was `counted` when it was charged.
    pub(super) fn observe(&mut self, id: u64, counted: u64, remaining: u64) {
        let before = self.samples.range(..id).next_back().map(|(_, s)| *s);
        if let Some(before) = before
            && counted > before.counted
            && remaining <= before.remaining
        {
            self.push(Pair {
                drop: before.remaining - remaining,
                rise: counted - before.counted,
            });
        }
        self.samples.insert(id, Sample { counted, remaining });
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_first();
        }
    }

    fn push(&mut self, pair: Pair) {
        self.drops = self.drops.saturating_add(pair.drop);
        self.rises = self.rises.saturating_add(pair.rise);
        self.falls += usize::from(pair.drop > 0);
        self.pairs.push_back(pair);
        if self.pairs.len() > MAX_PAIRS
            && let Some(old) = self.pairs.pop_front()
        {
            self.drops = self.drops.saturating_sub(old.drop);
            self.rises = self.rises.saturating_sub(old.rise);
            self.falls -= usize::from(old.drop > 0);
        }
    }

    /// The ratio of drops to rises over the recent pairs, once there are [`MIN_PAIRS`].
    fn ratio(&self) -> Option<f64> {
        (self.pairs.len() >= MIN_PAIRS && self.rises > 0)
            .then(|| self.drops as f64 / self.rises as f64)
    }

    /// Whether the header follows our charges: it fell as our count rose in a recent pair (or
    /// did before the last reset), and over [`MIN_PAIRS`] or more pairs it fell by at least
    /// [`MIN_FACTOR`] of what we charged.
    pub(super) fn trusted(&self) -> bool {
        match self.ratio() {
            Some(ratio) => ratio >= MIN_FACTOR,
            None => self.falls > 0 || self.trusted_before_reset,
        }
    }

    /// Whether the header is known not to follow our charges: over [`MIN_PAIRS`] or more
    /// pairs it fell by less than [`MIN_FACTOR`] of what we charged. (A header neither trusted
    /// nor distrusted is unproven: a 429 may still be read by it, since the refusal itself says
    /// a limit was reached.)
    pub(super) fn distrusted(&self) -> bool {
        self.ratio().is_some_and(|ratio| ratio < MIN_FACTOR)
    }

    /// What the server charges per unit of our estimate: the ratio over recent pairs (at most
    /// [`MAX_FACTOR`]) once there are [`MIN_PAIRS`] and the header is trusted; 1.0 before
    /// (the documented estimate).
    pub(super) fn factor(&self) -> f64 {
        match self.ratio() {
            Some(ratio) if ratio >= MIN_FACTOR => ratio.min(MAX_FACTOR),
            _ => 1.0,
        }
    }

    /// A 429 or a count lower than predicted: back to the documented estimate at once (the
    /// factor is learned again from the replies that follow); the header's trust stays.
    pub(super) fn reset(&mut self) {
        self.trusted_before_reset = self.trusted();
        self.pairs.clear();
        self.samples.clear();
        (self.drops, self.rises, self.falls) = (0, 0, 0);
    }

    /// `ours` (our estimate) in the server's units.
    pub(super) fn to_server(&self, ours: u64) -> u64 {
        scale(ours, self.factor(), f64::ceil)
    }

    /// `server` (the server's units) in ours.
    pub(super) fn to_ours(&self, server: u64) -> u64 {
        scale(server, 1.0 / self.factor(), f64::floor)
    }
}

fn scale(value: u64, factor: f64, round: fn(f64) -> f64) -> u64 {
    if factor == 1.0 {
        return value;
    }
    let scaled = round(value as f64 * factor);
    if scaled >= u64::MAX as f64 {
        u64::MAX
    } else {
        scaled as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies to ids 0.. where the server charges `server` per request and we `ours`, all in
    /// one window of `limit`.
    fn feed(c: &mut Calibration, ids: std::ops::Range<u64>, ours: u64, server: u64, limit: u64) {
        for id in ids {
            c.observe(id, (id + 1) * ours, limit - (id + 1) * server);
        }
    }

    #[test]
    fn the_factor_is_the_documented_estimate_until_enough_pairs() {
        let mut c = Calibration::default();
        feed(&mut c, 0..MIN_PAIRS as u64, 100, 50, 100_000);
        // 8 replies make 7 pairs: trusted (it falls), but the factor waits.
        assert!(c.trusted());
        assert_eq!(c.factor(), 1.0);
        feed(&mut c, MIN_PAIRS as u64..9, 100, 50, 100_000);
        assert_eq!(c.factor(), 0.5);
        assert_eq!((c.to_server(301), c.to_ours(301)), (151, 602));
    }

    #[test]
    fn replies_out_of_order_pair_by_charging_order() {
        let mut c = Calibration::default();
        // Server charges 2 per 1 of ours; replies come back in a shuffled order.
        for id in [3u64, 0, 1, 7, 2, 5, 4, 6, 9, 8, 11, 10, 12, 13] {
            c.observe(id, (id + 1) * 10, 10_000 - (id + 1) * 20);
        }
        assert_eq!(c.factor(), 2.0);
    }

    #[test]
    fn a_count_that_never_moves_is_never_trusted() {
        let mut c = Calibration::default();
        for id in 0..5 {
            c.observe(id, (id + 1) * 10, 3);
        }
        assert!(!c.trusted() && !c.distrusted());
        feed(&mut c, 5..40, 10, 0, 3);
        assert!(!c.trusted() && c.distrusted());
        assert_eq!(c.factor(), 1.0);
    }

    #[test]
    fn a_count_that_stops_moving_loses_trust() {
        let mut c = Calibration::default();
        feed(&mut c, 0..20, 100, 100, 1_000_000);
        assert!(c.trusted());
        // From now on it stays at one value while we charge 300 per request: after enough
        // flat pairs the ratio falls below MIN_FACTOR.
        for id in 20..21 + MAX_PAIRS as u64 {
            c.observe(id, 2_000 + id * 300, 5);
        }
        assert!(!c.trusted());
        assert_eq!(c.factor(), 1.0);
    }

    #[test]
    fn pairs_across_a_window_boundary_are_skipped() {
        let mut c = Calibration::default();
        feed(&mut c, 0..10, 100, 50, 10_000);
        // The window turned: the count jumps back up, our sliding count keeps rising.
        c.observe(10, 1_100, 9_950);
        c.observe(11, 1_200, 9_900);
        assert_eq!(c.factor(), 0.5);
    }

    #[test]
    fn reset_returns_to_the_documented_estimate_and_keeps_trust() {
        let mut c = Calibration::default();
        feed(&mut c, 0..20, 100, 50, 100_000);
        assert_eq!(c.factor(), 0.5);
        c.reset();
        assert_eq!(c.factor(), 1.0);
        assert!(c.trusted());
        // Learned again within MIN_PAIRS more pairs.
        feed(&mut c, 20..20 + MIN_PAIRS as u64 + 1, 100, 50, 100_000);
        assert_eq!(c.factor(), 0.5);
    }

    #[test]
    fn the_factor_is_capped() {
        let mut c = Calibration::default();
        feed(&mut c, 0..20, 10, 100, 1_000_000);
        assert_eq!(c.factor(), MAX_FACTOR);
        assert_eq!(c.to_server(u64::MAX), u64::MAX);
    }
}
