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

/// Charges remembered until their reply (more in flight than this are not paired).
const MAX_CHARGES: usize = 4_096;

/// One reply: our count when its request arrived, the remaining count it carried, and our
/// log's churn when it was charged.
#[derive(Clone, Copy, Debug)]
struct Sample {
    counted: u64,
    remaining: u64,
    churn: Option<u64>,
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
#[derive(Clone, Debug)]
pub(super) struct Calibration {
    /// Whether pairs must see no churn between their charges (see [`Calibration::charged`]).
    tracks_churn: bool,
    /// (reservation id, churn when charged), in id order, until the reply comes.
    charges: VecDeque<(u64, u64)>,
    samples: BTreeMap<u64, Sample>,
    pairs: VecDeque<Pair>,
    drops: u64,
    rises: u64,
    /// Pairs kept in which the remaining count fell.
    falls: usize,
    /// Whether the header was trusted when the factor was last relearned (a 429): trust is
    /// about the header, relearning only about the factor.
    trusted_before_relearn: bool,
    /// The factor until [`MIN_PAIRS`] pairs are in: 1.0 (the documented estimate), or what a
    /// 429 proved.
    fallback: f64,
}

impl Calibration {
    /// A calibration whose pairs must span no churn of the log they count in (the minute's
    /// tokens: where the server's windows are fixed, charges aging out of our sliding count
    /// would make the ratio err high), or any two replies (`tracks_churn` false).
    pub(super) fn new(tracks_churn: bool) -> Self {
        Calibration {
            tracks_churn,
            charges: VecDeque::new(),
            samples: BTreeMap::new(),
            pairs: VecDeque::new(),
            drops: 0,
            rises: 0,
            falls: 0,
            trusted_before_relearn: false,
            fallback: 1.0,
        }
    }

    /// The request charged as `id` found the log's churn at `churn`.
    pub(super) fn charged(&mut self, id: u64, churn: u64) {
        if self.tracks_churn {
            self.charges.push_back((id, churn));
            if self.charges.len() > MAX_CHARGES {
                self.charges.pop_front();
            }
        }
    }

    /// The churn `id` was charged at, forgotten once asked (its reply came).
    fn churn_of(&mut self, id: u64) -> Option<u64> {
        let index = self.charges.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        self.charges.remove(index).map(|(_, churn)| churn)
    }

    /// The reply to the request charged as `id` carried `remaining`; our count (in our units,
    /// that request included when the server counted it) was `counted` when it was charged.
    pub(super) fn observe(&mut self, id: u64, counted: u64, remaining: u64) {
        let churn = if self.tracks_churn {
            self.churn_of(id)
        } else {
            Some(0)
        };
        let before = self.samples.range(..id).next_back().map(|(_, s)| *s);
        if let Some(before) = before
            && churn.is_some()
            && before.churn == churn
            && counted > before.counted
            && remaining <= before.remaining
        {
            self.push(Pair {
                drop: before.remaining - remaining,
                rise: counted - before.counted,
            });
        }
        self.samples.insert(
            id,
            Sample {
                counted,
                remaining,
                churn,
            },
        );
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
    /// did before the last relearning), and over [`MIN_PAIRS`] or more pairs it fell by at
    /// least [`MIN_FACTOR`] of what we charged.
    pub(super) fn trusted(&self) -> bool {
        match self.ratio() {
            Some(ratio) => ratio >= MIN_FACTOR,
            None => self.falls > 0 || self.trusted_before_relearn,
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
    /// [`MAX_FACTOR`]) once there are [`MIN_PAIRS`] and the header is trusted; before, 1.0 (the
    /// documented estimate) or what the last 429 proved.
    pub(super) fn factor(&self) -> f64 {
        match self.ratio() {
            Some(ratio) if ratio >= MIN_FACTOR => ratio.min(MAX_FACTOR),
            Some(_) => 1.0,
            None => self.fallback,
        }
    }

    /// A 429 for tokens: the factor in force may be too low, so it is learned again from the
    /// replies that follow, and until then is at least `at_least` (what the refusal proved;
    /// never below the factor in force). The header's trust stays.
    pub(super) fn relearn(&mut self, at_least: f64) {
        self.trusted_before_relearn = self.trusted();
        self.fallback = self.factor().max(at_least).min(MAX_FACTOR);
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
        let mut c = Calibration::new(false);
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
        let mut c = Calibration::new(false);
        // Server charges 2 per 1 of ours; replies come back in a shuffled order.
        for id in [3u64, 0, 1, 7, 2, 5, 4, 6, 9, 8, 11, 10, 12, 13] {
            c.observe(id, (id + 1) * 10, 10_000 - (id + 1) * 20);
        }
        assert_eq!(c.factor(), 2.0);
    }

    #[test]
    fn a_count_that_never_moves_is_never_trusted() {
        let mut c = Calibration::new(false);
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
        let mut c = Calibration::new(false);
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
        let mut c = Calibration::new(false);
        feed(&mut c, 0..10, 100, 50, 10_000);
        // The window turned: the count jumps back up, our sliding count keeps rising.
        c.observe(10, 1_100, 9_950);
        c.observe(11, 1_200, 9_900);
        assert_eq!(c.factor(), 0.5);
    }

    #[test]
    fn a_429_relearns_from_at_least_what_it_proved_and_keeps_trust() {
        let mut c = Calibration::new(false);
        feed(&mut c, 0..20, 100, 50, 100_000);
        assert_eq!(c.factor(), 0.5);
        // The refusal proved no more than the factor in force: it stays until relearned.
        c.relearn(0.4);
        assert_eq!(c.factor(), 0.5);
        assert!(c.trusted());
        // One that proved more raises it at once.
        c.relearn(0.8);
        assert_eq!(c.factor(), 0.8);
        // Learned again within MIN_PAIRS more pairs.
        feed(&mut c, 20..20 + MIN_PAIRS as u64 + 1, 100, 50, 100_000);
        assert_eq!(c.factor(), 0.5);
    }

    #[test]
    fn pairs_that_saw_charges_age_out_are_skipped() {
        // The server's window is fixed and charges 1 per 1 of ours; our sliding count loses
        // 50 to ageing between ids 10 and 11: that pair (rise 100 - 50, drop 100: a ratio of
        // 2) is left out.
        let mut c = Calibration::new(true);
        for id in 0..12u64 {
            c.charged(id, if id < 11 { 0 } else { 50 });
        }
        feed(&mut c, 0..11, 100, 100, 100_000);
        c.observe(11, 1_200 - 50, 100_000 - 1_200);
        assert_eq!(c.factor(), 1.0);
        assert_eq!(c.pairs.len(), 10);
        // A reply whose charge is not remembered pairs with nothing.
        c.observe(40, 5_000, 10);
        assert_eq!(c.pairs.len(), 10);
    }

    #[test]
    fn the_factor_is_capped() {
        let mut c = Calibration::new(false);
        feed(&mut c, 0..20, 10, 100, 1_000_000);
        assert_eq!(c.factor(), MAX_FACTOR);
        assert_eq!(c.to_server(u64::MAX), u64::MAX);
    }
}
