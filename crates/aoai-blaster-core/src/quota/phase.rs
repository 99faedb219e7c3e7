//! [`FixedPhase`]: where a server's fixed windows turn, learned from its remaining counts.
//!
//! Why learn it: a server that counts in fixed windows (a minute from some instant it does not
//! announce, a second, ten seconds) forgets a whole window's charges at once when it turns. A
//! budget that counts over sliding spans keeps each charge a span after it was made, so after
//! a burst it waits a full span where the server's window turns earlier, and in a backlog
//! bound by requests it sends a window's allowance per span (1.02 s), not per window (1 s).
//! Knowing where the windows turn, the budget can forget a window's charges at the turn.
//!
//! How: between two replies in charging order, a remaining count that went *up* says the
//! server forgot charges between the two requests' arrivals. On a fixed server it forgot all
//! of them: the count after the jump holds no more than what we charged since the first of the
//! two (plus a slack for replies that overtook each other), and less than a window sliding
//! over our own charges would still hold. On a sliding server it forgets only what slid out,
//! and the count after the jump still holds the rest of the window: the first test fails
//! unless we were idle for most of a window, and the second always (after such a pause, with
//! requests spread before it, a sliding count is small, but no smaller than that). A jump that
//! passes brackets a turn: after the first request was sent (it arrived before the turn) and
//! no later than the second's reply (it arrived after). The turns of a fixed window repeat
//! every window, so brackets of several turns intersect (modulo the window) to where the turn
//! lies. One is enough to act on: the first turn of a minute is the one a batch gains most
//! from, and the tests above are strict. The fall must be larger than the slack, so two
//! requests sent just after a turn that arrive in the other order (the second sees one request
//! fewer) do not look like a turn.

//! Why requests are spread while a request window's turns are learned: a budget that sends a
//! window's allowance at once, a span apart, shows a fixed and a sliding server the same
//! traffic (every burst meets a fresh window), and no two of its replies bracket a turn closer
//! than a span, which is longer than the window. Spread evenly over the span (one request every
//! `span / allowance`), the same rate has a request on each side of every turn a gap apart: the
//! first turn is bracketed within the gap plus a reply's latency. The rate is the same, so
//! spreading costs nothing on a sliding server, where it goes on; on a fixed one the budget sends
//! each window's allowance at its turn once the turn is learned (see
//! `WindowBudget::spread_gap`).
//!
//! Never over-admit on a sliding server: a bracket that contradicts the learned one, or a 429
//! for the limit while the phase is in force, refutes it for good, and the budget goes back to
//! sliding spans. Charges made so close to a turn that they may have arrived on either side of
//! it (within the span's margin for late arrival, or within the bracket's uncertainty) keep
//! their sliding span; the others are forgotten at the latest instant the turn can be, plus the
//! margin.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Consistent turns seen before the budget forgets charges at the turn.
pub const TURNS_TO_TRUST: u32 = 1;

/// Charges remembered until their reply (more in flight than this are not paired).
const MAX_CHARGES: usize = 4_096;

/// Recent replies kept to pair later ones with (replies come back out of order).
const MAX_SAMPLES: usize = 64;

/// Where a fixed window's turns lie: each turn `k` is in `(start + k × window, start + k ×
/// window + width]`, in our clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Turns {
    start: Instant,
    width: Duration,
    window: Duration,
}

impl Turns {
    /// Turns of windows of `window` lying in `(earliest, latest]` (and a window apart); `None`
    /// unless that is shorter than a window.
    pub(super) fn within(earliest: Instant, latest: Instant, window: Duration) -> Option<Turns> {
        latest
            .checked_duration_since(earliest)
            .filter(|width| *width < window)
            .map(|width| Turns {
                start: earliest,
                width,
                window,
            })
    }

    /// The window's length.
    pub(super) fn window(&self) -> Duration {
        self.window
    }

    /// When a charge made at `at` is certainly forgotten by the server: the latest instant the
    /// turn after it can be, plus `margin`; `None` when the charge may have arrived on either
    /// side of a turn (within `margin` before it, or within the bracket's uncertainty).
    pub(super) fn forgotten(&self, at: Instant, margin: Duration) -> Option<Instant> {
        let window = self.window.as_nanos() as i128;
        let width = self.width.as_nanos() as i128;
        let since = signed_nanos(at, self.start);
        let offset = since.rem_euclid(window);
        if offset <= width || offset + margin.as_nanos() as i128 >= window {
            return None;
        }
        let end = since - offset + window + width + margin.as_nanos() as i128;
        add_nanos(self.start, end)
    }
}

/// `a - b` in nanoseconds, signed.
fn signed_nanos(a: Instant, b: Instant) -> i128 {
    match a.checked_duration_since(b) {
        Some(after) => after.as_nanos() as i128,
        None => -(b.duration_since(a).as_nanos() as i128),
    }
}

fn add_nanos(base: Instant, nanos: i128) -> Option<Instant> {
    let magnitude = Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).ok()?);
    if nanos >= 0 {
        base.checked_add(magnitude)
    } else {
        base.checked_sub(magnitude)
    }
}

/// One charge until its reply: when, and our units charged before it and with it.
#[derive(Clone, Copy, Debug)]
struct Charge {
    id: u64,
    at: Instant,
    through: u64,
}

/// One reply: its request's charge, the server's count after it (our units), when it came,
/// and what a sliding window would still have held of ours then.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    through: u64,
    count: u64,
    replied: Instant,
    sliding: u64,
}

/// What one remaining-count header says about where a fixed window turns. See the module docs.
#[derive(Clone, Debug)]
pub(super) struct FixedPhase {
    window: Duration,
    /// Units charged so far (our units), for "charged since".
    charged: u64,
    charges: VecDeque<Charge>,
    samples: BTreeMap<u64, Sample>,
    turns: Option<Turns>,
    /// Consistent brackets in a row behind `turns`.
    seen: u32,
    /// The server was seen not to count in fixed windows of this length: never learn again.
    refuted: bool,
}

impl FixedPhase {
    pub(super) fn new(window: Duration) -> Self {
        FixedPhase {
            window,
            charged: 0,
            charges: VecDeque::new(),
            samples: BTreeMap::new(),
            turns: None,
            seen: 0,
            refuted: false,
        }
    }

    /// The request charged as `id` at `at` was charged `units`.
    pub(super) fn charge(&mut self, id: u64, at: Instant, units: u64) {
        self.charged = self.charged.saturating_add(units);
        self.charges.push_back(Charge {
            id,
            at,
            through: self.charged,
        });
        if self.charges.len() > MAX_CHARGES {
            self.charges.pop_front();
        }
    }

    /// The reply to the request charged as `id` came at `replied`: the server had counted
    /// `count` in its window (our units, that request included) of `limit`; `None` when the
    /// reply says nothing believable about it (a 429, no header, one not trusted). A window of
    /// this length sliding over our charges would still hold `sliding` of them at that
    /// request's arrival (those charged less than the window, less the span's margin, before
    /// it, itself included).
    pub(super) fn observe(
        &mut self,
        id: u64,
        replied: Instant,
        count_of: Option<(u64, u64)>,
        sliding: u64,
    ) {
        let Ok(index) = self.charges.binary_search_by_key(&id, |c| c.id) else {
            return;
        };
        let Some(charge) = self.charges.remove(index) else {
            return;
        };
        let Some((count, limit)) = count_of.filter(|_| !self.refuted) else {
            return;
        };
        let sample = Sample {
            at: charge.at,
            through: charge.through,
            count,
            replied,
            sliding,
        };
        let before = self.samples.range(..id).next_back().map(|(_, s)| *s);
        let after = self.samples.range(id + 1..).next().map(|(_, s)| *s);
        self.samples.insert(id, sample);
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_first();
        }
        let slack = limit / 20 + 1;
        for (first, second) in [(before, Some(sample)), (Some(sample), after)] {
            if let (Some(first), Some(second)) = (first, second) {
                self.pair(first, second, slack);
            }
        }
    }

    /// Two replies in charging order: a fall (by more than `slack`) in the server's count to
    /// what we charged since the first, and below what a sliding window would still hold,
    /// brackets a turn.
    fn pair(&mut self, first: Sample, second: Sample, slack: u64) {
        let since = second.through.saturating_sub(first.through);
        if second.count.saturating_add(slack) >= first.count
            || second.count > since.saturating_add(slack)
            || second.count.saturating_add(slack) >= second.sliding
        {
            return;
        }
        let Some(width) = second.replied.checked_duration_since(first.at) else {
            return;
        };
        if width >= self.window {
            return;
        }
        self.bracket(Turns {
            start: first.at,
            width,
            window: self.window,
        });
    }

    /// Turns found otherwise (a 429's wait: a probe's and its confirmation, see `probe`, or
    /// an adaptive budget's): narrows the learned ones as a bracket does (windows of another
    /// length are ignored).
    pub(super) fn learn(&mut self, turns: Turns) {
        if turns.window == self.window {
            self.bracket(turns);
        }
    }

    /// Narrows the learned turns with one more bracket (modulo the window).
    fn bracket(&mut self, new: Turns) {
        if self.refuted {
            return;
        }
        let Some(old) = self.turns else {
            (self.turns, self.seen) = (Some(new), 1);
            return;
        };
        let window = self.window.as_nanos() as i128;
        let (old_width, new_width) = (old.width.as_nanos() as i128, new.width.as_nanos() as i128);
        let offset = signed_nanos(new.start, old.start).rem_euclid(window);
        // The new bracket is [offset, offset + new_width] or one window earlier; keep the
        // pieces that overlap [0, old_width].
        let pieces: Vec<(i128, i128)> = [offset, offset - window]
            .into_iter()
            .map(|low| (low.max(0), (low + new_width).min(old_width)))
            .filter(|(low, high)| low < high)
            .collect();
        match pieces.as_slice() {
            [] => {
                // Inconsistent: a fixed server never does this. Once trusted, refuted.
                if self.seen >= TURNS_TO_TRUST {
                    self.refute();
                } else {
                    (self.turns, self.seen) = (Some(new), 1);
                }
            }
            [(low, high)] => {
                self.turns = add_nanos(old.start, *low).map(|start| Turns {
                    start,
                    width: Duration::from_nanos(u64::try_from(high - low).unwrap_or(u64::MAX)),
                    window: self.window,
                });
                self.seen += 1;
            }
            // Two pieces (both brackets wide): the old one holds both, keep it.
            _ => self.seen += 1,
        }
    }

    /// The server refused a request for this limit while the phase was in force (or replies
    /// contradicted it): it does not count in fixed windows we can see; never learn again.
    pub(super) fn refute(&mut self) {
        self.refuted = true;
        self.turns = None;
        self.samples.clear();
    }

    /// Whether the turns are still to be learned: neither trusted nor refuted.
    pub(super) fn learning(&self) -> bool {
        !self.refuted && self.turns().is_none()
    }

    /// The turns to forget charges at, once learned with confidence.
    pub(super) fn turns(&self) -> Option<Turns> {
        self.turns.filter(|_| self.seen >= TURNS_TO_TRUST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// Requests every `every` for `count` steps against a server with fixed windows of
    /// `window` from `t0 + phase`, allowing `limit` a window (refused ones are not counted),
    /// replies `latency` after sending; returns the learner.
    fn fixed_server(phase: Duration, every: Duration, count: u32, limit: u64) -> FixedPhase {
        let t0 = Instant::now();
        let mut learner = FixedPhase::new(S);
        let mut used = (i128::MIN, 0u64);
        let mut charged = Vec::new();
        for k in 0..count {
            let at = t0 + every * k;
            learner.charge(u64::from(k), at, 1);
            let index = signed_nanos(at, t0 + phase).div_euclid(S.as_nanos() as i128);
            if used.0 != index {
                used = (index, 0);
            }
            used.1 = (used.1 + 1).min(limit);
            let sliding = sliding_count(&mut charged, at);
            learner.observe(u64::from(k), at + 80 * MS, Some((used.1, limit)), sliding);
        }
        learner
    }

    /// Records a request charged at `at` among the `charged` before it, and says how many of
    /// them a sliding second surely holds at its arrival (those within 980 ms of it).
    fn sliding_count(charged: &mut Vec<Instant>, at: Instant) -> u64 {
        charged.push(at);
        charged.iter().filter(|&&c| c + 980 * MS > at).count() as u64
    }

    #[test]
    fn turns_of_a_fixed_window_are_bracketed_and_narrowed() {
        // Ten a second, every 100 ms; the server's second turns 250 ms after our start.
        let learner = fixed_server(250 * MS, 100 * MS, 40, 10);
        let turns = learner.turns().expect("learned");
        // Each turn lies after the last request before it (at .2) and no later than the reply
        // to the first after it (at .3 + 80 ms).
        assert_eq!(turns.width, 180 * MS);
        let t0 = learner.samples[&0].at;
        let offset = signed_nanos(turns.start, t0).rem_euclid(S.as_nanos() as i128);
        assert_eq!(offset, (200 * MS).as_nanos() as i128);
    }

    #[test]
    fn a_sliding_server_teaches_no_turn() {
        // Ten in any second: a request every 100 ms keeps the count at ten; bursts of ten
        // (3 ms apart) every 1.02 s see it fall to one, but from a request a burst's span
        // earlier, longer than a window.
        let t0 = Instant::now();
        let mut steady = FixedPhase::new(S);
        let mut bursts = FixedPhase::new(S);
        let mut sent: Vec<Instant> = Vec::new();
        let (mut steady_charged, mut burst_charged) = (Vec::new(), Vec::new());
        for k in 0..100u32 {
            let at = t0 + 100 * MS * k;
            steady.charge(u64::from(k), at, 1);
            let sliding = sliding_count(&mut steady_charged, at);
            let count = Some((u64::from(k + 1).min(10), 10));
            steady.observe(u64::from(k), at + 5 * MS, count, sliding);
            let at = t0 + 1_020 * MS * (k / 10) + 3 * MS * (k % 10);
            bursts.charge(u64::from(k), at, 1);
            sent.retain(|&s| s + S > at);
            sent.push(at);
            let sliding = sliding_count(&mut burst_charged, at);
            let count = Some((sent.len() as u64, 10));
            bursts.observe(u64::from(k), at + 5 * MS, count, sliding);
        }
        assert_eq!(steady.turns, None);
        assert_eq!(bursts.turns, None);
    }

    #[test]
    fn a_sliding_server_after_a_pause_of_almost_a_window_teaches_no_turn() {
        // Ten a second, every 100 ms to 2 s, then a pause: the request at 2.9 s finds a
        // sliding second holding only itself and the one at 2 s. The count fell (10 to 2) to
        // what was charged since (1) plus the slack, within a window's width (0.98 s), but
        // not below what a second sliding over our charges holds (2).
        let t0 = Instant::now();
        let mut learner = FixedPhase::new(S);
        let mut charged = Vec::new();
        let times = (0..=20u32).map(|k| 100 * MS * k).chain([2_900 * MS]);
        for (k, at) in times.enumerate() {
            let (id, at) = (k as u64, t0 + at);
            learner.charge(id, at, 1);
            let sliding = sliding_count(&mut charged, at);
            let count = charged.iter().filter(|&&c| c + S > at).count() as u64;
            learner.observe(id, at + 80 * MS, Some((count, 10)), sliding);
        }
        assert_eq!(learner.turns, None);
    }

    #[test]
    fn charges_near_a_turn_keep_their_span_and_the_others_go_at_the_turn() {
        let t0 = Instant::now();
        // Turns in (t0 + k s, t0 + k s + 100 ms].
        let turns = Turns {
            start: t0,
            width: 100 * MS,
            window: S,
        };
        let margin = 20 * MS;
        assert_eq!(
            turns.forgotten(t0 + 500 * MS, margin),
            Some(t0 + 1_120 * MS)
        );
        assert_eq!(
            turns.forgotten(t0 + 101 * MS, margin),
            Some(t0 + 1_120 * MS)
        );
        // Within the bracket, or within the margin before the next one: either side.
        assert_eq!(turns.forgotten(t0 + 50 * MS, margin), None);
        assert_eq!(turns.forgotten(t0 + 985 * MS, margin), None);
        // Before the bracket's start, a window earlier.
        assert_eq!(turns.forgotten(t0 - 500 * MS, margin), Some(t0 + 120 * MS));
    }

    #[test]
    fn a_contradicting_bracket_refutes_a_trusted_phase_for_good() {
        let mut learner = fixed_server(250 * MS, 100 * MS, 40, 10);
        assert!(learner.turns().is_some());
        let t0 = learner
            .samples
            .values()
            .next()
            .map(|s| s.at)
            .unwrap_or_else(Instant::now);
        learner.bracket(Turns {
            start: t0 + 10_700 * MS,
            width: 50 * MS,
            window: S,
        });
        assert!(learner.refuted);
        // Even brackets that agree with the old phase teach nothing any more.
        learner.bracket(Turns {
            start: t0 + 10_200 * MS,
            width: 50 * MS,
            window: S,
        });
        assert_eq!(learner.turns, None);
    }
}
