//! The sliding log of charges a budget counts in: every charge of the last span, oldest first,
//! with running totals, in bounded memory whatever the rate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::phase::Turns;

/// Entries a [`SlidingLog`] keeps exact; beyond this many, charges close in time share one.
const EXACT_ENTRIES: usize = 1024;

/// A log's charges within this fraction of its span of each other may share an entry (once it
/// holds more than [`EXACT_ENTRIES`]).
const MERGE_FRACTION: u32 = 1024;

/// Charges made within `first ..= last`, counted as one; they age out with the latest.
#[derive(Clone, Copy, Debug)]
pub(super) struct Charge {
    first: Instant,
    last: Instant,
    pub(super) tokens: u64,
    pub(super) requests: u64,
    /// The reservation ids of the charges in it (corrections have none): ids grow with time,
    /// so the entries' ranges never overlap.
    ids: Option<(u64, u64)>,
}

/// Charges made within the last `span`, oldest first, with running totals.
///
/// Memory is bounded whatever the rate: the first [`EXACT_ENTRIES`] charges of a span are kept
/// one by one (exact instants), and when the log holds more, a charge made within
/// `span / MERGE_FRACTION` of the newest entry's first charge joins that entry, which then ages
/// out with its latest charge. Merging only ever keeps a charge counted a little longer (at most
/// 0.1 % of the span: 59 ms of a minute), never shorter, so the limits still hold in every
/// window. At 20,000 charges a second a minute's log thus holds about 2,000 entries instead of
/// 1.2 million.
#[derive(Clone, Debug)]
pub(super) struct SlidingLog {
    span: Duration,
    merge_within: Duration,
    entries: VecDeque<Charge>,
    pub(super) tokens: u64,
    pub(super) requests: u64,
    /// Tokens that entered or left the log other than by a reservation's charge (aged out,
    /// released, corrections), since it began: two charges with the same churn saw the log
    /// change only by the charges between them.
    pub(super) churn: u64,
    /// Where the server's fixed window (of the length the span covers) turns, once learned: a
    /// charge is then forgotten at the turn after it (see [`Turns::forgotten`]) if that comes
    /// before its span ends.
    turns: Option<Turns>,
}

impl SlidingLog {
    pub(super) fn new(span: Duration) -> Self {
        SlidingLog {
            span,
            merge_within: span / MERGE_FRACTION,
            entries: VecDeque::new(),
            tokens: 0,
            requests: 0,
            churn: 0,
            turns: None,
        }
    }

    /// Forgets charges at the turns of the server's fixed window from now on (`None`: at the
    /// end of their span only).
    pub(super) fn set_turns(&mut self, turns: Option<Turns>) {
        self.turns = turns;
    }

    pub(super) fn span(&self) -> Duration {
        self.span
    }

    /// Counts every charge, those already in the log too, over `span` from now on.
    pub(super) fn set_span(&mut self, span: Duration) {
        self.span = span;
    }

    fn expires(&self, charge: &Charge) -> Instant {
        self.expiry_of(charge.last)
    }

    /// When a charge made at `at` stops counting: the end of its span, or the server's turn
    /// after it when that is known to come first. Never decreases as `at` grows.
    fn expiry_of(&self, at: Instant) -> Instant {
        self.expiry_under(at, self.turns)
    }

    /// [`SlidingLog::expiry_of`] were the server's window turning at `turns`.
    fn expiry_under(&self, at: Instant, turns: Option<Turns>) -> Instant {
        let end = at.checked_add(self.span).unwrap_or_else(|| far_future(at));
        turns
            .and_then(|turns| turns.forgotten(at, self.span.saturating_sub(turns.window())))
            .map_or(end, |turn| turn.min(end))
    }

    /// Tokens still counted at `now` were the server's window turning at `turns` (without
    /// pruning; what a probe of a supposed turn compares, see `probe`).
    pub(super) fn tokens_turning_at(&self, now: Instant, turns: Turns) -> u64 {
        self.entries
            .iter()
            .filter(|c| self.expiry_under(c.last, Some(turns)) > now)
            .fold(0u64, |sum, c| sum.saturating_add(c.tokens))
    }

    pub(super) fn prune(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            if self.expires(front) > now {
                break;
            }
            self.tokens = self.tokens.saturating_sub(front.tokens);
            self.requests = self.requests.saturating_sub(front.requests);
            self.churn = self.churn.wrapping_add(front.tokens);
            self.entries.pop_front();
        }
    }

    /// Counts `tokens` and `requests` charged at `at` by reservation `id` (`None`: a correction,
    /// which is never released).
    pub(super) fn insert(&mut self, at: Instant, tokens: u64, requests: u64, id: Option<u64>) {
        self.tokens = self.tokens.saturating_add(tokens);
        self.requests = self.requests.saturating_add(requests);
        if id.is_none() {
            self.churn = self.churn.wrapping_add(tokens);
        }
        let merge_into_newest = self.entries.len() > EXACT_ENTRIES
            && self.entries.back().is_some_and(|newest| {
                at >= newest.first && at.saturating_duration_since(newest.first) < self.merge_within
            });
        if merge_into_newest && let Some(newest) = self.entries.back_mut() {
            newest.last = newest.last.max(at);
            newest.tokens = newest.tokens.saturating_add(tokens);
            newest.requests = newest.requests.saturating_add(requests);
            newest.ids = match (newest.ids, id) {
                (Some((low, high)), Some(id)) => Some((low.min(id), high.max(id))),
                (None, id) => id.map(|id| (id, id)),
                (ids, None) => ids,
            };
            return;
        }
        let position = self.entries.partition_point(|c| c.first <= at);
        let charge = Charge {
            first: at,
            last: at,
            tokens,
            requests,
            ids: id.map(|id| (id, id)),
        };
        self.entries.insert(position, charge);
    }

    /// Takes back the `tokens` and `requests` that reservation `id` charged at `at`, if they
    /// still count; says whether they did. Release each reservation once: an entry that holds
    /// several charges cannot tell a second release of the same one.
    pub(super) fn remove(&mut self, id: u64, at: Instant, tokens: u64, requests: u64) -> bool {
        // The entry holding the charge starts at or before `at`, and less than the merge
        // distance before it.
        let position = self.entries.partition_point(|c| c.first <= at);
        let holding = (0..position)
            .rev()
            .take_while(|&i| {
                at.saturating_duration_since(self.entries[i].first) <= self.merge_within
            })
            .find(|&i| {
                self.entries[i]
                    .ids
                    .is_some_and(|(low, high)| (low..=high).contains(&id))
            });
        let Some(index) = holding else {
            return false;
        };
        let Some(entry) = self.entries.get_mut(index) else {
            return false;
        };
        let tokens = tokens.min(entry.tokens);
        let requests = requests.min(entry.requests);
        entry.tokens -= tokens;
        entry.requests -= requests;
        if entry.ids == Some((id, id)) {
            entry.ids = None;
        }
        self.tokens = self.tokens.saturating_sub(tokens);
        self.requests = self.requests.saturating_sub(requests);
        self.churn = self.churn.wrapping_add(tokens);
        if entry.tokens == 0 && entry.requests == 0 {
            self.entries.remove(index);
        }
        true
    }

    /// Moves the charge reservation `id` made at `at` to `later` (it left then); says whether
    /// it was still counted. The totals do not change, so neither does the churn.
    pub(super) fn redate(
        &mut self,
        id: u64,
        at: Instant,
        later: Instant,
        tokens: u64,
        requests: u64,
    ) -> bool {
        let churn = self.churn;
        let counted = self.remove(id, at, tokens, requests);
        if counted {
            self.insert(later, tokens, requests, Some(id));
        }
        self.churn = churn;
        counted
    }

    /// The requests of each entry still counted at `now` in a span of `span`: (the entry's
    /// latest charge, its requests).
    pub(super) fn requests_within(
        &self,
        now: Instant,
        span: Duration,
    ) -> impl Iterator<Item = (Instant, u64)> + '_ {
        self.entries
            .iter()
            .filter(move |c| c.requests > 0 && c.last.checked_add(span).is_none_or(|end| end > now))
            .map(|c| (c.last, c.requests))
    }

    /// Tokens and requests of the entries whose latest charge lies within `span` up to `at`
    /// (at `at` included).
    pub(super) fn totals_within(&self, at: Instant, span: Duration) -> (u64, u64) {
        self.entries
            .iter()
            .filter(|c| c.last <= at && c.last.checked_add(span).is_none_or(|end| end > at))
            .fold((0u64, 0u64), |(t, r), c| {
                (t.saturating_add(c.tokens), r.saturating_add(c.requests))
            })
    }

    /// The earliest instant at which at least `excess` units (of `units`) have aged out.
    pub(super) fn freed_by(
        &self,
        now: Instant,
        excess: u64,
        units: impl Fn(&Charge) -> u64,
    ) -> Instant {
        // Entries are in order of their first charge; a correction can sit behind an entry
        // that ages out later than it, hence the running latest.
        let mut freed = 0u64;
        let mut latest: Option<Instant> = None;
        for charge in &self.entries {
            freed = freed.saturating_add(units(charge));
            let expires = self.expires(charge);
            latest = Some(latest.map_or(expires, |t| t.max(expires)));
            if freed >= excess {
                break;
            }
        }
        latest.unwrap_or_else(|| far_future(now))
    }

    /// Totals of the charges that still count at `now` (without pruning).
    pub(super) fn totals_at(&self, now: Instant) -> (u64, u64) {
        // Only entries whose first charge has aged out can have aged out.
        let old = self
            .entries
            .partition_point(|c| self.expiry_of(c.first) <= now);
        let (mut tokens, mut requests) = (self.tokens, self.requests);
        for charge in self.entries.range(..old) {
            if self.expires(charge) <= now {
                tokens = tokens.saturating_sub(charge.tokens);
                requests = requests.saturating_sub(charge.requests);
            }
        }
        (tokens, requests)
    }

    /// Totals of the charges in the span ending at `at`: every entry begun by then. An entry
    /// that also holds later charges counts whole, which can only make a correction smaller, by
    /// at most one merge interval's charges (0.1 % of the span). Leaving it out instead hid the
    /// corrections merged into it from the next reply's: at a high rate each reply then charged
    /// its whole correction again, and the count grew until the budget waited a span for
    /// nothing.
    pub(super) fn totals_ending(&self, at: Instant) -> (u64, u64) {
        let start = at.checked_sub(self.span);
        let end = self.entries.partition_point(|c| c.first <= at);
        self.entries
            .range(..end)
            .rev()
            .take_while(|c| start.is_none_or(|s| c.first > s))
            // A learned fixed window may have forgotten an entry before its span ends.
            .filter(|c| self.expires(c) > at)
            .fold((0u64, 0u64), |(t, r), c| {
                (t.saturating_add(c.tokens), r.saturating_add(c.requests))
            })
    }
}

/// As far ahead of `from` as an [`Instant`] comfortably reaches (for overflowing sums).
pub(super) fn far_future(from: Instant) -> Instant {
    from.checked_add(crate::classify::MAX_RETRY_WAIT)
        .unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::QuotaBudget;
    use crate::quota::WindowBudget;
    use crate::quota::test_support::{M, MS, S, cost};
    use crate::quota::window::MINUTE;

    /// As the window budget corrects its count from a reply: the server had seen `seen` in the
    /// span ending at `at`; whatever our log lacks of it is charged at `at`.
    fn correct(log: &mut SlidingLog, at: Instant, seen: u64) {
        let (_, counted) = log.totals_ending(at);
        if seen > counted {
            log.insert(at, 0, seen - counted, None);
        }
    }

    #[test]
    fn corrections_merged_with_later_charges_count_for_the_next_reply() {
        // At 20,000 charges a second the log merges them (beyond its exact entries), and a
        // reply's correction lands in the newest entry, which later charges keep extending.
        // Every later reply must see that correction, or each adds its own: the count then
        // grows without bound and the budget waits a whole span for nothing.
        let t0 = Instant::now();
        let step = Duration::from_micros(50);
        let mut log = SlidingLog::new(10 * S);
        let mut at = t0;
        let mut id = 0u64;
        for _ in 0..2 * EXACT_ENTRIES {
            log.insert(at, 1, 1, Some(id));
            id += 1;
            at += step;
        }
        let seen = 1_000_000;
        for _ in 0..100 {
            let reserved_at = at;
            log.insert(at, 1, 1, Some(id));
            log.insert(at + step, 1, 1, Some(id + 1));
            id += 2;
            at += 2 * step;
            correct(&mut log, reserved_at, seen);
        }
        let charged = id;
        assert!(
            log.requests <= seen + charged,
            "{} requests counted: corrections piled up",
            log.requests
        );
        assert!(log.requests >= seen, "the server's count is kept");
    }

    #[test]
    fn a_log_stays_small_at_any_rate_and_never_ages_charges_out_early() {
        // 20,000 charges a second for 90 s: a minute of them is 1.2 million charges.
        let t0 = Instant::now();
        let mut log = SlidingLog::new(M);
        let step = Duration::from_micros(50);
        let mut largest = 0;
        for k in 0..1_800_000u32 {
            let now = t0 + step * k;
            log.prune(now);
            log.insert(now, 10, 1, Some(u64::from(k)));
            largest = largest.max(log.entries.len());
        }
        assert!(
            largest <= 2 * EXACT_ENTRIES + 2,
            "log grew to {largest} entries"
        );
        // Every charge of the last 60.3 s still counts (merged ones count a little longer).
        let end = t0 + step * 1_799_999;
        let exact_in_span = u64::from(M.as_micros() as u32 / 50);
        let (tokens, requests) = log.totals_at(end);
        assert!(requests >= exact_in_span, "{requests} < {exact_in_span}");
        assert!(requests <= exact_in_span + 1_200, "{requests} counted");
        assert_eq!(tokens, requests * 10);
    }

    #[test]
    fn merged_entries_keep_every_minute_within_the_limit_and_lose_little() {
        // 6,000 jobs of 10 tokens fill a minute; a job is offered every millisecond for
        // 130 s, so the log holds far more than EXACT_ENTRIES charges and merges them.
        let t0 = Instant::now();
        let mut budget = WindowBudget::new(None, Some(60_000), S);
        let mut admitted: Vec<Instant> = Vec::new();
        for k in 0..130_000u32 {
            let now = t0 + MS * k;
            if budget.try_reserve(now, cost(10)).is_ok() {
                admitted.push(now);
            }
        }
        // Any 60 s window (two pointers over the sorted admission instants).
        let mut most = 0;
        let mut start = 0;
        for end in 0..admitted.len() {
            while admitted[end] >= admitted[start] + MINUTE {
                start += 1;
            }
            most = most.max(end + 1 - start);
        }
        assert_eq!(most, 6_000, "most jobs within one minute");
        // Three minutes' worth are offered (0-60.3 s, 60.3-120.6 s, the rest): the merged
        // entries age out a little late, never more than a fraction of a percent.
        assert!(admitted.len() >= 17_900, "{} admitted", admitted.len());
    }

    #[test]
    fn releasing_from_a_merged_entry_takes_back_only_that_charge() {
        let t0 = Instant::now();
        let mut log = SlidingLog::new(M);
        for k in 0..(EXACT_ENTRIES as u32 + 10) {
            log.insert(t0 + MS * k, 100, 1, Some(u64::from(k)));
        }
        let merged_at = t0 + MS * (EXACT_ENTRIES as u32 + 200);
        log.insert(merged_at, 7, 1, Some(5_000));
        log.insert(merged_at + MS, 5, 1, Some(5_001));
        let entries = log.entries.len();
        assert_eq!(log.entries.back().map(|c| c.requests), Some(2));
        log.remove(5_001, merged_at + MS, 5, 1);
        assert_eq!(log.entries.len(), entries);
        assert_eq!(
            log.entries.back().map(|c| (c.tokens, c.requests)),
            Some((7, 1))
        );
        // An exact entry in the middle is removed whole.
        log.remove(3, t0 + MS * 3, 100, 1);
        assert_eq!(log.entries.len(), entries - 1);
        assert_eq!(log.tokens, 100 * (EXACT_ENTRIES as u64 + 10) - 100 + 7);
        // A charge that is not there changes nothing.
        log.remove(3, t0 + MS * 3, 100, 1);
        assert_eq!(log.entries.len(), entries - 1);
    }

    #[test]
    fn releasing_one_of_several_charges_at_one_instant_takes_back_exactly_it() {
        let t0 = Instant::now();
        let mut log = SlidingLog::new(M);
        log.insert(t0, 100, 1, Some(1));
        log.insert(t0, 50, 1, Some(2));
        log.insert(t0, 7, 1, Some(3));
        assert!(log.remove(1, t0, 100, 1));
        // A second release of the same reservation changes nothing.
        assert!(!log.remove(1, t0, 100, 1));
        assert_eq!((log.tokens, log.requests), (57, 2));
        assert_eq!(log.entries.len(), 2);
        log.remove(2, t0, 50, 1);
        log.remove(3, t0, 7, 1);
        assert_eq!((log.tokens, log.requests), (0, 0));
        assert!(log.entries.is_empty());
    }

    #[test]
    fn a_correction_behind_a_merged_entry_neither_frees_early_nor_takes_a_release() {
        let t0 = Instant::now();
        let mut log = SlidingLog::new(M);
        for k in 0..=(EXACT_ENTRIES as u32) {
            log.insert(t0 + MS * k, 1, 1, Some(u64::from(k)));
        }
        let exact = log.tokens;
        // Two merged entries: `start ..= start + 40 ms`, then one 100 ms later.
        let start = t0 + MS * 2_000;
        log.insert(start, 10, 1, Some(10_000));
        log.insert(start + MS * 40, 10, 1, Some(10_001));
        log.insert(start + MS * 100, 10, 1, Some(10_002));
        log.insert(start + MS * 101, 10, 1, Some(10_003));
        // A correction inside the first one's span sits behind it and ages out before it.
        log.insert(start + MS * 10, 5, 0, None);
        let firsts: Vec<Instant> = log.entries.iter().rev().take(3).map(|c| c.first).collect();
        assert_eq!(firsts, vec![start + MS * 100, start + MS * 10, start]);
        // Freeing the first merged entry and the correction waits for the entry.
        assert_eq!(
            log.freed_by(t0, exact + 25, |c| c.tokens),
            start + MS * 40 + M
        );
        // When the correction has aged out, the merged entry before it still counts.
        let (tokens, _) = log.totals_at(start + MS * 10 + M);
        assert_eq!(tokens, 20 + 20);
        // A release of a charge in the first merged entry finds it behind the correction.
        let before = log.tokens;
        log.remove(10_001, start + MS * 40, 10, 1);
        assert_eq!(log.tokens, before - 10);
    }
}
