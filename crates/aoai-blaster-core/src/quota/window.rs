//! [`WindowBudget`]: configured limits, counted like Azure over sliding spans, and the
//! counting state it shares with [`AdaptiveBudget`](super::AdaptiveBudget).

use std::time::{Duration, Instant};

use crate::classify::WaitSource;

use super::calibrate::Calibration;
use super::log::{SlidingLog, far_future};
use super::phase::{FixedPhase, Turns};
use super::probe::{self, Ask, Lesson, ProbeReply, TurnProbe};
use super::{BudgetSnapshot, Cost, QuotaBudget, QuotaFeedback, Refusal, Reservation};

pub(super) const MINUTE: Duration = Duration::from_secs(60);

/// The span a budget counts over for an Azure window of length `window`: the window plus
/// 0.5 % of it, at least 20 ms more (the jitter margin; 1 s gives 1.02 s, 60 s gives 60.3 s).
///
/// ```
/// use std::time::Duration;
/// use aoai_blaster_core::quota::span_of;
/// assert_eq!(span_of(Duration::from_secs(1)), Duration::from_millis(1_020));
/// assert_eq!(span_of(Duration::from_secs(60)), Duration::from_millis(60_300));
/// ```
pub fn span_of(window: Duration) -> Duration {
    window.saturating_add((window / 200).max(Duration::from_millis(20)))
}

/// Limits in force for one admission decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) tpm: Option<u64>,
    pub(super) rpm: Option<u32>,
    pub(super) per_window: Option<u32>,
}

/// The counting state shared by [`WindowBudget`] and [`AdaptiveBudget`](super::AdaptiveBudget).
#[derive(Clone, Debug)]
pub(super) struct Counts {
    minute: SlidingLog,
    window: SlidingLog,
    blocked_until: Option<Instant>,
    /// When the request span was last widened ([`Counts::widen_request_span`]).
    widened_at: Option<Instant>,
    next_id: u64,
    pub(super) reported_usage: u64,
}

impl Counts {
    pub(super) fn new(rpm_window: Duration) -> Self {
        Counts {
            minute: SlidingLog::new(span_of(MINUTE)),
            window: SlidingLog::new(span_of(rpm_window)),
            blocked_until: None,
            widened_at: None,
            next_id: 0,
            reported_usage: 0,
        }
    }

    /// The reply to `reservation` came at `now`, `call_time` after its endpoint started the
    /// call. A request that left much later than it was charged (it waited in the client: a
    /// flood of submissions at the start of a batch, a busy thread) reached the server later
    /// too, and a server counting at arrival over a sliding window counts it longer than our
    /// span from its charge: the next burst is refused. Its charge is moved to when it left
    /// (at most the reply's instant less the call), in both logs; the reservation says so.
    pub(super) fn settled(
        &mut self,
        now: Instant,
        reservation: Reservation,
        call_time: Option<Duration>,
    ) -> Reservation {
        let Some(left) = call_time.and_then(|call| now.checked_sub(call)) else {
            return reservation;
        };
        if left <= reservation.at {
            return reservation;
        }
        let (id, at) = (reservation.id, reservation.at);
        let (tokens, requests) = (
            reservation.cost.tokens,
            u64::from(reservation.cost.requests),
        );
        for log in [&mut self.minute, &mut self.window] {
            let span = log.span();
            // Aged out of our span already, but not of the server's: count it again.
            if !log.redate(id, at, left, tokens, requests) && at + span <= now && left + span > now
            {
                log.insert(left, tokens, requests, Some(id));
            }
        }
        Reservation {
            at: left,
            ..reservation
        }
    }

    pub(super) fn prune(&mut self, now: Instant) {
        self.minute.prune(now);
        self.window.prune(now);
        if self.blocked_until.is_some_and(|until| until <= now) {
            self.blocked_until = None;
        }
    }

    /// Admits `cost` at `now` under `limits`, or says when it could be.
    pub(super) fn try_charge(
        &mut self,
        now: Instant,
        cost: Cost,
        limits: Limits,
    ) -> Result<Reservation, Refusal> {
        if let Some(never) = never_fits(cost, limits) {
            return Err(never);
        }
        self.prune(now);
        let mut not_until: Option<Instant> = self.blocked_until;
        let mut wait_for = |instant: Instant| {
            not_until = Some(not_until.map_or(instant, |t| t.max(instant)));
        };
        if let Some(tpm) = limits.tpm {
            let total = self.minute.tokens.saturating_add(cost.tokens);
            if total > tpm {
                wait_for(self.minute.freed_by(now, total - tpm, |c| c.tokens));
            }
        }
        let requests = u64::from(cost.requests);
        if let Some(rpm) = limits.rpm {
            let total = self.minute.requests.saturating_add(requests);
            if self.minute.requests > 0 && total > u64::from(rpm) {
                let excess = total - u64::from(rpm);
                wait_for(self.minute.freed_by(now, excess, |c| c.requests));
            }
        }
        if let Some(per_window) = limits.per_window {
            let total = self.window.requests.saturating_add(requests);
            if self.window.requests > 0 && total > u64::from(per_window) {
                let excess = total - u64::from(per_window);
                wait_for(self.window.freed_by(now, excess, |c| c.requests));
            }
        }
        if let Some(instant) = not_until {
            return Err(Refusal::NotUntil(
                instant.max(now + Duration::from_nanos(1)),
            ));
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.minute.insert(now, cost.tokens, requests, Some(id));
        self.window.insert(now, cost.tokens, requests, Some(id));
        Ok(Reservation {
            cost,
            at: now,
            id,
            tokens_in_minute: self.minute.tokens,
            requests_in_window: u32::try_from(self.window.requests).unwrap_or(u32::MAX),
        })
    }

    /// Counts requests over spans of `rpm_window` from now on, with the requests charged in
    /// the last such span (from the minute's log) already in it.
    pub(super) fn set_request_window(&mut self, now: Instant, rpm_window: Duration) {
        let span = span_of(rpm_window);
        let mut window = SlidingLog::new(span);
        for (at, requests) in self.minute.requests_within(now, span) {
            window.insert(at, 0, requests, None);
        }
        self.window = window;
    }

    /// Requests charged within `span` up to `at` (at `at` included), from the minute's log.
    pub(super) fn requests_over(&self, at: Instant, span: Duration) -> u64 {
        self.minute.totals_within(at, span).1
    }

    /// What a server's minute and request window of `rpm_window`, sliding over our charges,
    /// surely still hold when the request charged at `at` arrives: the tokens and the requests
    /// charged within each window less its span's margin up to it (a charge may arrive that
    /// much later than another).
    pub(super) fn sliding_at(&self, at: Instant, rpm_window: Duration) -> (u64, u64) {
        let within = |window: Duration| window.saturating_sub(span_of(window) - window);
        let (tokens, _) = self.minute.totals_within(at, within(MINUTE));
        let (_, requests) = self.window.totals_within(at, within(rpm_window));
        (tokens, requests)
    }

    /// The server refused a request charged at `charged` for its request window, though our
    /// span of `rpm_window` had room: it counted requests later than we did (they waited in the
    /// client or on the way) by more than the span's margin, so two of our spans' requests met
    /// in one of its windows; a sliding server does that at every such skew. Doubles the margin,
    /// up to a tenth of the window. Once per span in force: the refusals of requests charged
    /// before the last widening say nothing about the wider span.
    pub(super) fn widen_request_span(&mut self, charged: Instant, rpm_window: Duration) {
        if self.widened_at.is_some_and(|at| charged <= at) {
            return;
        }
        let span = self.window.span();
        let widest = rpm_window.saturating_add(rpm_window / 10).max(span);
        let margin = span.saturating_sub(rpm_window);
        self.window
            .set_span(span.saturating_add(margin).min(widest));
        self.widened_at = Some(self.widened_at.map_or(charged, |at| at.max(charged)));
    }

    /// Forgets charges at the learned turns of the server's fixed minute and request window
    /// (`None`: at the end of their spans).
    pub(super) fn set_turns(&mut self, minute: Option<Turns>, window: Option<Turns>) {
        self.minute.set_turns(minute);
        self.window.set_turns(window);
    }

    /// Tokens the minute span would count at `now` were the server's minute turning at `turns`.
    pub(super) fn tokens_if_turning(&self, now: Instant, turns: Turns) -> u64 {
        self.minute.tokens_turning_at(now, turns)
    }

    /// The request window's span in force.
    #[cfg(test)]
    pub(super) fn request_span(&self) -> Duration {
        self.window.span()
    }

    /// When the oldest tokens counted in the minute span stop counting (far ahead when none
    /// are counted).
    pub(super) fn oldest_tokens_freed(&self, now: Instant) -> Instant {
        self.minute.freed_by(now, 1, |c| c.tokens)
    }

    /// The minute log's churn (see `SlidingLog::churn`), for [`Calibration::charged`].
    pub(super) fn churn(&self) -> u64 {
        self.minute.churn
    }

    pub(super) fn block_for(&mut self, now: Instant, wait: Duration) {
        let until = now.checked_add(wait).unwrap_or_else(|| far_future(now));
        self.blocked_until = Some(self.blocked_until.map_or(until, |t| t.max(until)));
    }

    /// Azure says it had seen `seen` tokens in its minute when `reservation` arrived: if that is
    /// more than we had counted, charge the difference at that instant (it ages out with it).
    pub(super) fn correct_tokens(&mut self, reservation: &Reservation, seen: u64) {
        if seen <= reservation.tokens_in_minute {
            return;
        }
        let (counted, _) = self.minute.totals_ending(reservation.at);
        if seen > counted {
            self.minute.insert(reservation.at, seen - counted, 0, None);
        }
    }

    /// As [`Counts::correct_tokens`], for the requests of the short window.
    pub(super) fn correct_requests(&mut self, reservation: &Reservation, seen: u64) {
        if seen <= u64::from(reservation.requests_in_window) {
            return;
        }
        let (_, counted) = self.window.totals_ending(reservation.at);
        if seen > counted {
            self.window.insert(reservation.at, 0, seen - counted, None);
        }
    }

    pub(super) fn release(&mut self, reservation: &Reservation) {
        let (at, cost) = (reservation.at, reservation.cost);
        let requests = u64::from(cost.requests);
        self.minute
            .remove(reservation.id, at, cost.tokens, requests);
        self.window
            .remove(reservation.id, at, cost.tokens, requests);
    }

    pub(super) fn snapshot(&self, now: Instant, limits: Limits) -> BudgetSnapshot {
        let (tokens, minute_requests) = self.minute.totals_at(now);
        let (_, window_requests) = self.window.totals_at(now);
        BudgetSnapshot {
            rpm_limit: limits.rpm,
            tpm_limit: limits.tpm,
            tokens_this_minute: tokens,
            requests_this_minute: u32::try_from(minute_requests).unwrap_or(u32::MAX),
            requests_this_window: u32::try_from(window_requests).unwrap_or(u32::MAX),
            requests_per_window: limits.per_window,
            blocked_until: self.blocked_until.filter(|until| *until > now),
        }
    }
}

/// [`Refusal::NeverFits`] when `cost` exceeds the whole minute under `limits` (or `rpm` is 0).
fn never_fits(cost: Cost, limits: Limits) -> Option<Refusal> {
    match limits.tpm {
        Some(tpm) if cost.tokens > tpm => Some(Refusal::NeverFits {
            tokens: cost.tokens,
            capacity: tpm,
        }),
        _ if limits.rpm == Some(0) && cost.requests > 0 => Some(Refusal::NeverFits {
            tokens: cost.tokens,
            capacity: 0,
        }),
        _ => None,
    }
}

/// Requests one window of `rpm_window` admits under `rpm`: `max(1, floor(rpm × window / 60 s))`.
///
/// ```
/// use std::time::Duration;
/// use aoai_blaster_core::quota::requests_per_window;
/// assert_eq!(requests_per_window(600, Duration::from_secs(1)), 10);
/// assert_eq!(requests_per_window(600, Duration::from_secs(10)), 100);
/// assert_eq!(requests_per_window(6, Duration::from_secs(1)), 1);
/// ```
pub fn requests_per_window(rpm: u32, rpm_window: Duration) -> u32 {
    let per_window = u128::from(rpm) * rpm_window.as_millis() / MINUTE.as_millis();
    u32::try_from(per_window).unwrap_or(u32::MAX).max(1)
}

pub(super) fn clamp_window(rpm_window: Duration) -> Duration {
    rpm_window.clamp(Duration::from_millis(1), MINUTE)
}

/// A budget for configured limits, counting like Azure over sliding spans (see the module docs).
///
/// - Every span of a minute ([`span_of`] 60 s) holds at most `tpm` charged tokens and at most
///   `rpm` requests.
/// - Every span of `rpm_window` (Azure uses 1 s or 10 s; [`span_of`] it) holds at most
///   [`requests_per_window`] requests. With few RPM and short windows (6 RPM counted per second)
///   the per-minute `rpm` bound is the one that binds. A cost of more requests than a window
///   allows is admitted only into an empty window.
/// - A cost is refused with [`Refusal::NotUntil`] the instant enough charges age out, and with
///   [`Refusal::NeverFits`] when its tokens exceed `tpm` (or `rpm` is 0).
/// - The configured TPM is in the server's units: from the fall of
///   `x-ratelimit-remaining-tokens` between replies the budget learns what the server charges
///   per token of our estimate (`charge_factor`, starting at 1.0; see the `calibrate` module),
///   and admits `tpm / factor` of our tokens a minute. A 429 for tokens raises the factor at
///   once to what the refusal proved (the server's count over ours), and has it learned again
///   from the replies that follow.
/// - Settling never refunds. Azure's `x-ratelimit-remaining-tokens` (of the minute) and
///   `-requests` (of the short window, as Azure and the simulator count it; a per-minute value is
///   larger than a window's allowance and changes nothing) add a correction when Azure had seen
///   more than we had charged (other clients, a charge above the learned one); they never lower
///   the count. A header is believed only once it has been seen to fall as our count rose (one
///   that never moves, from a stand-in server, would otherwise pace the deployment far below
///   its configured limits): until then, and when it stops following our charges, it is
///   treated as missing. A 429's wait blocks the budget until it is over.
/// - The request window is learned too, but only lengthened: when three replies in a row show
///   an allowance per window (remaining plus our count) that under `rpm` means a longer window
///   (10 s or 60 s, [`WindowBudget::request_window`]), requests are counted over it (a 10 s
///   window's burst is then used); `rpm` still bounds every minute, and a 429 for requests goes
///   back to the configured window.
/// - Where the server's windows are fixed, the remaining counts show where they turn (see the
///   `phase` module): a window's charges are then forgotten at its turn. While the configured
///   request window's turns are being learned, requests are spread evenly over its span (the
///   same rate), so that replies on either side of a turn bracket it closely.
/// - A 429 for requests in the configured window, whose span had room for the request, means
///   the server counted requests later than we did (at their arrival, after a wait in the
///   client or the network) by more than the span's margin: the margin doubles, up to a tenth
///   of the window (1.02 s, 1.04 s, 1.08 s, 1.1 s), once per span in force.
#[derive(Clone, Debug)]
pub struct WindowBudget {
    limits: Limits,
    counts: Counts,
    /// What `x-ratelimit-remaining-tokens` says the server charges per unit of our estimate.
    token_header: Calibration,
    /// Whether `x-ratelimit-remaining-requests` follows our requests.
    request_header: Calibration,
    /// The request window configured, and the one in force (learned: never shorter).
    configured_window: Duration,
    request_window: Duration,
    /// The window the latest replies point at, and how many in a row did.
    window_votes: (Duration, u32),
    /// Where the server's fixed minute and request window turn, as the remaining counts show.
    minute_phase: FixedPhase,
    window_phase: FixedPhase,
    /// While requests are spread ([`WindowBudget::spread_gap`]): when the next one is due,
    /// and how many were charged spread so far.
    spread_due: Option<Instant>,
    spread_count: u32,
    /// Other processes share the quota ([`QuotaBudget::shared_with_others`]).
    shared: bool,
    /// Whether any reply carried a remaining token count (`-1`, missing or garbage: none), and
    /// how many successes came without one.
    remaining_seen: bool,
    uncounted_successes: u32,
    /// Where the minute turns, asked with a 429 while no remaining count has come.
    probe: TurnProbe,
}

/// The request windows Azure is known to use, shortest first.
pub(super) const REQUEST_WINDOWS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
];

/// Windows' allowances sent spread without a turn bracketed before spreading stops: a fixed
/// window's turn falls between two of them within one allowance, so a server that shows none
/// in five slides (or answers too slowly to bracket one) and loses nothing by bursts.
const SPREAD_WINDOWS: u32 = 5;

/// Replies in a row that must point at a longer request window before it is used.
const WINDOW_VOTES: u32 = 3;

/// The request window a server's allowance of `capacity` requests a window points at, under
/// `rpm` a minute: the one of [`REQUEST_WINDOWS`] nearest (on a log scale) to
/// `capacity × 60 s / rpm`.
fn window_of(capacity: u64, rpm: u32) -> Duration {
    let seconds = capacity as f64 * 60.0 / f64::from(rpm.max(1));
    if seconds < 10f64.sqrt() {
        REQUEST_WINDOWS[0]
    } else if seconds < 600f64.sqrt() {
        REQUEST_WINDOWS[1]
    } else {
        REQUEST_WINDOWS[2]
    }
}

impl WindowBudget {
    /// A budget with these limits (`None`: that side is not limited). `rpm_window` is clamped
    /// to 1 ms ..= 60 s.
    pub fn new(rpm: Option<u32>, tpm: Option<u64>, rpm_window: Duration) -> Self {
        let rpm_window = clamp_window(rpm_window);
        WindowBudget {
            limits: Limits {
                tpm,
                rpm,
                per_window: rpm.map(|rpm| requests_per_window(rpm, rpm_window)),
            },
            counts: Counts::new(rpm_window),
            token_header: Calibration::new(true),
            request_header: Calibration::new(false),
            configured_window: rpm_window,
            request_window: rpm_window,
            window_votes: (rpm_window, 0),
            minute_phase: FixedPhase::new(MINUTE),
            window_phase: FixedPhase::new(rpm_window),
            spread_due: None,
            spread_count: 0,
            shared: false,
            remaining_seen: false,
            uncounted_successes: 0,
            probe: TurnProbe::new(),
        }
    }

    /// The request window in force: the configured one, or a longer one the replies showed.
    pub fn request_window(&self) -> Duration {
        self.request_window
    }

    /// Counts requests over `rpm_window` from `now` on.
    fn use_request_window(&mut self, now: Instant, rpm_window: Duration) {
        if rpm_window == self.request_window {
            return;
        }
        self.request_window = rpm_window;
        self.limits.per_window = self
            .limits
            .rpm
            .map(|rpm| requests_per_window(rpm, rpm_window));
        self.counts.set_request_window(now, rpm_window);
        self.window_phase = FixedPhase::new(rpm_window);
        self.counts
            .set_turns(self.minute_phase.turns(), self.window_phase.turns());
    }

    /// A reply's `x-ratelimit-remaining-requests` of `remaining` when our count in the request
    /// window was `counted`: the server's allowance per window is about their sum, which under
    /// `rpm_limit` says how long its window is. After [`WINDOW_VOTES`] replies in a row point
    /// at a longer window than the one in force, it is used (never a shorter one than
    /// configured: odd headers must not pace below the configured limits).
    fn learn_window(&mut self, now: Instant, counted: u64, remaining: u64) {
        let Some(rpm) = self.limits.rpm else {
            return;
        };
        let window = window_of(counted.saturating_add(remaining), rpm);
        if window <= self.request_window {
            self.window_votes = (self.request_window, 0);
            return;
        }
        let votes = if self.window_votes.0 == window {
            self.window_votes.1 + 1
        } else {
            1
        };
        self.window_votes = (window, votes);
        if votes >= WINDOW_VOTES {
            self.use_request_window(now, window);
        }
    }

    /// A reply's remaining counts, where the headers are believed, in the phase learners; the
    /// turns they trust go to the logs.
    fn learn_phase(&mut self, now: Instant, reservation: &Reservation, feedback: &QuotaFeedback) {
        let counted = feedback.rate_limited_for.is_none();
        let tokens = match (self.limits.tpm, feedback.remaining_tokens) {
            (Some(tpm), Some(remaining)) if counted && self.token_header.trusted() => Some((
                self.token_header.to_ours(tpm.saturating_sub(remaining)),
                self.token_header.to_ours(tpm),
            )),
            _ => None,
        };
        let (sliding_tokens, sliding_requests) =
            self.counts.sliding_at(reservation.at, self.request_window);
        self.minute_phase
            .observe(reservation.id, now, tokens, sliding_tokens);
        let requests = match (self.limits.per_window, feedback.remaining_requests) {
            (Some(per_window), Some(remaining)) if counted && self.request_header.trusted() => {
                let per_window = u64::from(per_window);
                Some((per_window.saturating_sub(remaining), per_window))
            }
            _ => None,
        };
        self.window_phase
            .observe(reservation.id, now, requests, sliding_requests);
        self.counts
            .set_turns(self.minute_phase.turns(), self.window_phase.turns());
    }

    /// The gap left after charging `requests` while the configured request window's turns are
    /// being learned from a believed `x-ratelimit-remaining-requests`: the span shared evenly
    /// by the window's allowance (a burst a span apart brackets no turn; see the `phase`
    /// module). `None` (send at once) when there is nothing to learn: no request limit, an
    /// allowance of one, a header not believed, turns learned or refuted, a longer window
    /// learned (its burst is worth more than its phase), [`SPREAD_WINDOWS`] allowances sent
    /// spread without a turn, or a quota shared with other processes (their requests in the
    /// count hide a fall to ours).
    fn spread_gap(&self, requests: u32) -> Option<Duration> {
        let per_window = self.limits.per_window.filter(|&n| n > 1)?;
        let learning = !self.shared
            && self.request_window == self.configured_window
            && self.request_header.trusted()
            && self.window_phase.learning()
            && self.spread_count < SPREAD_WINDOWS.saturating_mul(per_window);
        learning.then(|| span_of(self.request_window) / per_window * requests)
    }

    /// While spreading, the instant before which `requests` more are not charged: half a gap
    /// before the next is due, so that a timer firing late does not slow the rate (the due
    /// instants advance by whole gaps; the spans still bound every window).
    fn spread_until(&self, now: Instant, requests: u32) -> Option<Instant> {
        let gap = self.spread_gap(requests)?;
        self.spread_due
            .and_then(|due| due.checked_sub(gap / 2))
            .filter(|until| *until > now)
    }

    /// A charge of `requests` at `now`: the next is due a gap after this one was (or after
    /// now, if later).
    fn spread_charged(&mut self, now: Instant, requests: u32) {
        self.spread_due = self.spread_gap(requests).map(|gap| {
            self.spread_count = self.spread_count.saturating_add(requests);
            self.spread_due.map_or(now, |due| due.max(now)) + gap
        });
    }

    /// Whether the minute's turn is to be asked with a probe (see the `probe` module): a
    /// configured TPM, successes but never a remaining count (before the first reply, a full
    /// first flight says nothing about the headers), the turn neither learned nor refuted, and
    /// no other process sharing the quota.
    fn probing(&self) -> bool {
        self.limits.tpm.is_some()
            && !self.shared
            && !self.remaining_seen
            && self.uncounted_successes > 0
            && self.minute_phase.learning()
    }

    /// A request the minute's tokens refused at `now` (until `until`), sent anyway as a probe
    /// of where a fixed minute turns, if the probe asks for one and the request limits admit it.
    fn probe_over_minute(
        &mut self,
        now: Instant,
        until: Instant,
        cost: Cost,
        limits: Limits,
    ) -> Option<Reservation> {
        let tpm = limits.tpm.filter(|_| self.probing())?;
        match self.probe.ask() {
            Ask::Nothing => return None,
            Ask::Turn if until < now + probe::ASK_WHEN_WAITING => return None,
            Ask::Turn => {}
            Ask::Confirm(turns) => {
                // A sliding server surely refuses it (counting only what it surely still holds,
                // less what step 1 showed our count holds over its); a minute turning there
                // admits it.
                let (sliding, _) = self.counts.sliding_at(now, self.request_window);
                let slack = tpm.saturating_add(self.probe.admitted());
                let turned = self.counts.tokens_if_turning(now, turns);
                if sliding.saturating_add(cost.tokens) <= slack
                    || turned.saturating_add(cost.tokens) > tpm
                {
                    return None;
                }
            }
        }
        let over = Limits {
            tpm: None,
            ..limits
        };
        let reservation = self.counts.try_charge(now, cost, over).ok()?;
        self.probe.sent(reservation.id);
        Some(reservation)
    }

    /// A reply, for the probe of the minute's turn; and, once the probe taught the turns, a
    /// 429 without remaining counts must wait until one of them (or they are refuted).
    fn probe_replied(&mut self, now: Instant, reservation: &Reservation, feedback: &QuotaFeedback) {
        let Some(tpm) = self.limits.tpm else {
            return;
        };
        let reply = ProbeReply {
            id: reservation.id,
            tokens: reservation.cost.tokens,
            tpm: self.token_header.to_ours(tpm),
            left: reservation.at,
            replied: now,
        };
        let wait = feedback
            .rate_limited_for
            .map(|wait| (wait, feedback.wait_source));
        if self.probing() {
            if wait.is_some() && self.probe.out(reservation.id) {
                // The server did not count it: neither do we (our count then stays its).
                self.counts.release(reservation);
            }
            match self.probe.replied(reply, wait, self.request_window) {
                Lesson::Learned(turns) => self.minute_phase.learn(turns),
                Lesson::Refuted => self.minute_phase.refute(),
                Lesson::Nothing => {}
            }
            return;
        }
        self.probe.stop();
        if let (Some((wait, source)), false, Some(_)) =
            (wait, self.remaining_seen, self.minute_phase.turns())
        {
            if source == Some(WaitSource::Fallback) {
                self.minute_phase.refute();
            } else if let Some(turns) = probe::turn_of(reply, wait, source, self.request_window) {
                self.minute_phase.learn(turns);
            }
        }
    }

    /// What the server charges per token of our estimate, as its remaining counts taught
    /// (1.0 until they have; see [`WindowBudget`]).
    pub fn charge_factor(&self) -> f64 {
        self.token_header.factor()
    }

    /// Requests one short window admits (`None` without an RPM limit).
    pub fn requests_per_window(&self) -> Option<u32> {
        self.limits.per_window
    }

    /// Tokens reported by replies' `usage` so far (for statistics; never refunded).
    pub fn reported_usage(&self) -> u64 {
        self.counts.reported_usage
    }
}

impl QuotaBudget for WindowBudget {
    fn try_reserve(&mut self, now: Instant, cost: Cost) -> Result<Reservation, Refusal> {
        // The configured TPM is the server's limit in the server's units: in ours it is that
        // divided by the learned factor. A job larger than the configured TPM never fits,
        // whatever the factor (the factor is an average over jobs, not this job's).
        let limits = match self.limits.tpm {
            Some(tpm) if cost.tokens <= tpm => Limits {
                tpm: Some(self.token_header.to_ours(tpm).max(cost.tokens)),
                ..self.limits
            },
            _ => self.limits,
        };
        if let Some(until) = self.spread_until(now, cost.requests) {
            return Err(never_fits(cost, limits).unwrap_or(Refusal::NotUntil(until)));
        }
        let reservation = match self.counts.try_charge(now, cost, limits) {
            Err(Refusal::NotUntil(until)) => self
                .probe_over_minute(now, until, cost, limits)
                .ok_or(Refusal::NotUntil(until))?,
            result => result?,
        };
        self.spread_charged(now, cost.requests);
        self.token_header
            .charged(reservation.id, self.counts.churn());
        self.minute_phase.charge(reservation.id, now, cost.tokens);
        self.window_phase
            .charge(reservation.id, now, u64::from(cost.requests));
        Ok(reservation)
    }

    fn settle(&mut self, now: Instant, reservation: Reservation, feedback: &QuotaFeedback) {
        self.counts.prune(now);
        let reservation = self.counts.settled(now, reservation, feedback.call_time);
        let (own_tokens, own_requests) = own_charge(&reservation, feedback);
        self.remaining_seen |= feedback.remaining_tokens.is_some();
        if feedback.rate_limited_for.is_none() && feedback.remaining_tokens.is_none() {
            self.uncounted_successes = self.uncounted_successes.saturating_add(1);
        }
        self.probe_replied(now, &reservation, feedback);
        if let Some(remaining) = feedback.remaining_tokens {
            self.token_header.observe(
                reservation.id,
                reservation.tokens_in_minute.saturating_sub(own_tokens),
                remaining,
            );
        }
        let counted_requests =
            u64::from(reservation.requests_in_window).saturating_sub(own_requests);
        if let Some(remaining) = feedback.remaining_requests {
            self.request_header
                .observe(reservation.id, counted_requests, remaining);
            if feedback.rate_limited_for.is_none() && self.request_header.trusted() {
                self.learn_window(now, counted_requests, remaining);
            }
        }
        if let Some(wait) = feedback.rate_limited_for {
            self.counts.block_for(now, wait);
            // Refused for requests in a window longer than configured: it was a guess. In the
            // configured one: the server counts them later than we do (see `Counts`), or its
            // windows do not turn where we learned they do.
            if feedback.remaining_requests == Some(0) {
                if self.window_phase.turns().is_some() {
                    self.window_phase.refute();
                } else if self.request_window > self.configured_window {
                    self.use_request_window(now, self.configured_window);
                    self.window_votes = (self.configured_window, 0);
                } else {
                    self.counts
                        .widen_request_span(reservation.at, self.request_window);
                }
            }
            // Refused for tokens: the server counted at least `tpm - remaining` against our
            // count without this request, a factor the learned one may be below.
            let counted = reservation.tokens_in_minute.saturating_sub(own_tokens);
            if let (Some(tpm), Some(remaining)) = (self.limits.tpm, feedback.remaining_tokens)
                && remaining < self.token_header.to_server(reservation.cost.tokens)
                && counted > 0
            {
                let proved = tpm.saturating_sub(remaining) as f64 / counted as f64;
                self.token_header.relearn(proved);
                self.minute_phase.refute();
            }
        }
        self.learn_phase(now, &reservation, feedback);
        if let (Some(tpm), Some(remaining), true) = (
            self.limits.tpm,
            feedback.remaining_tokens,
            self.token_header.trusted(),
        ) {
            let seen = self.token_header.to_ours(tpm.saturating_sub(remaining));
            self.counts.correct_tokens(&reservation, seen);
        }
        if let (Some(per_window), Some(remaining), true) = (
            self.limits.per_window,
            feedback.remaining_requests,
            self.request_header.trusted(),
        ) {
            let per_window = u64::from(per_window);
            if remaining < per_window {
                self.counts
                    .correct_requests(&reservation, per_window - remaining);
            }
        }
        if let Some(used) = feedback.used_tokens {
            self.counts.reported_usage = self.counts.reported_usage.saturating_add(used);
        }
    }

    fn release(&mut self, reservation: Reservation) {
        self.counts.release(&reservation);
    }

    fn snapshot(&self, now: Instant) -> BudgetSnapshot {
        let limits = Limits {
            tpm: self.limits.tpm.map(|tpm| self.token_header.to_ours(tpm)),
            ..self.limits
        };
        self.counts.snapshot(now, limits)
    }

    fn shared_with_others(&mut self) {
        self.shared = true;
    }
}

/// What of `reservation` the server did not count: all of it when it refused it (a 429).
pub(super) fn own_charge(reservation: &Reservation, feedback: &QuotaFeedback) -> (u64, u64) {
    if feedback.rate_limited_for.is_some() {
        (
            reservation.cost.tokens,
            u64::from(reservation.cost.requests),
        )
    } else {
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{ApiError, AttemptOutcome, RateLimitHeaders, WaitSource};
    use crate::quota::test_support::{FixedMinute, M, MS, Run, S, W, cost, drive, not_until};
    use proptest::prelude::*;

    fn rate_limited(wait: Duration) -> AttemptOutcome {
        AttemptOutcome::RateLimited {
            wait,
            source: WaitSource::RetryAfter,
            error: ApiError {
                status: 429,
                code: None,
                message: String::new(),
            },
        }
    }
    #[test]
    fn spans_carry_a_jitter_margin() {
        assert_eq!(span_of(S), W);
        assert_eq!(span_of(60 * S), M);
        assert_eq!(span_of(10 * S), 10 * S + 50 * MS);
        assert_eq!(span_of(MS), 21 * MS);
    }

    #[test]
    fn tokens_free_up_as_their_charges_age_out() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(None, Some(1_000), S);
        b.try_reserve(t0, cost(600)).unwrap();
        b.try_reserve(t0 + 10 * S, cost(400)).unwrap();
        // Full: one token more must wait for the first charge to age out.
        assert_eq!(not_until(b.try_reserve(t0 + 59 * S, cost(1))), t0 + M);
        // Zero-token costs still pass (only requests would limit them).
        b.try_reserve(t0 + 59 * S, cost(0)).unwrap();
        // 700 needs both charges gone.
        assert_eq!(
            not_until(b.try_reserve(t0 + 59 * S, cost(700))),
            t0 + 10 * S + M
        );
        let r = b.try_reserve(t0 + M, cost(600)).unwrap();
        assert_eq!((r.at, r.tokens_in_minute), (t0 + M, 1_000));
        assert_eq!(b.snapshot(t0 + M).tokens_this_minute, 1_000);
        assert_eq!(b.snapshot(t0 + 10 * S + M).tokens_this_minute, 600);
    }

    #[test]
    fn requests_are_spread_over_short_windows() {
        let t0 = Instant::now();
        // 600 RPM per 1 s window: 10 per second, the 11th waits for the first to age out.
        let mut b = WindowBudget::new(Some(600), None, S);
        assert_eq!(b.requests_per_window(), Some(10));
        for k in 0..10 {
            let r = b.try_reserve(t0 + k * 10 * MS, cost(1)).unwrap();
            assert_eq!(r.requests_in_window, k + 1);
        }
        assert_eq!(not_until(b.try_reserve(t0 + 999 * MS, cost(1))), t0 + W);
        b.try_reserve(t0 + W, cost(1)).unwrap();
        assert_eq!(not_until(b.try_reserve(t0 + W, cost(1))), t0 + 10 * MS + W);
        // The same with 10 s windows: 100 per window.
        let b10 = WindowBudget::new(Some(600), None, 10 * S);
        assert_eq!(b10.requests_per_window(), Some(100));
    }

    #[test]
    fn low_rpm_gets_one_request_per_window_and_never_more_than_rpm_a_minute() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(Some(6), None, S);
        assert_eq!(b.requests_per_window(), Some(1));
        for k in 0..6 {
            b.try_reserve(t0 + k * 2 * S, cost(1)).unwrap();
        }
        assert_eq!(not_until(b.try_reserve(t0 + 12 * S, cost(1))), t0 + M);
        // Both bounds at once: the later instant is the answer.
        assert_eq!(
            not_until(b.try_reserve(t0 + 10 * S + 500 * MS, cost(1))),
            t0 + M
        );
    }

    #[test]
    fn never_fits_above_the_whole_minute() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(Some(60), Some(10_000), S);
        assert_eq!(
            b.try_reserve(t0, cost(10_001)),
            Err(Refusal::NeverFits {
                tokens: 10_001,
                capacity: 10_000
            })
        );
        b.try_reserve(t0, cost(10_000)).unwrap();
        let mut zero_rpm = WindowBudget::new(Some(0), None, S);
        assert!(matches!(
            zero_rpm.try_reserve(t0, cost(5)),
            Err(Refusal::NeverFits { capacity: 0, .. })
        ));
    }

    #[test]
    fn release_refunds_charges_that_still_count() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(Some(60), Some(1_000), S);
        let r = b.try_reserve(t0, cost(800)).unwrap();
        b.release(r);
        let snapshot = b.snapshot(t0);
        assert_eq!(
            (snapshot.tokens_this_minute, snapshot.requests_this_window),
            (0, 0)
        );
        let again = b.try_reserve(t0, cost(1_000)).unwrap();
        let later = b.try_reserve(t0 + 2 * S, cost(0)).unwrap();
        b.release(again);
        let snapshot = b.snapshot(t0 + 2 * S);
        assert_eq!(snapshot.tokens_this_minute, 0);
        assert_eq!(snapshot.requests_this_minute, 1);
        assert_eq!(snapshot.requests_this_window, 1);
        // Releasing twice, or a charge that aged out, changes nothing.
        b.release(again);
        b.release(later);
        b.release(later);
        assert_eq!(
            b.snapshot(t0 + 2 * S),
            BudgetSnapshot {
                rpm_limit: Some(60),
                tpm_limit: Some(1_000),
                requests_per_window: Some(1),
                ..BudgetSnapshot::default()
            }
        );
    }

    #[test]
    fn settle_never_refunds_and_corrects_to_what_azure_saw() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(Some(600), Some(10_000), S);
        let r = b.try_reserve(t0, cost(1_000)).unwrap();
        // The reply used 50 tokens and Azure has 9,000 left: our 1,000 stays charged.
        b.settle(
            t0 + S,
            r,
            &QuotaFeedback {
                remaining_tokens: Some(9_000),
                remaining_requests: Some(9),
                used_tokens: Some(50),
                ..QuotaFeedback::default()
            },
        );
        assert_eq!(b.snapshot(t0 + S).tokens_this_minute, 1_000);
        assert_eq!(b.reported_usage(), 50);
        // Azure has seen more (another client): 6,000 left after our 2,000 means 4,000 seen.
        let r2 = b.try_reserve(t0 + S, cost(1_000)).unwrap();
        let feedback = QuotaFeedback {
            remaining_tokens: Some(6_000),
            remaining_requests: Some(5),
            ..QuotaFeedback::default()
        };
        b.settle(t0 + 2 * S, r2, &feedback);
        // The same news twice is not charged twice.
        b.settle(t0 + 2 * S, r2, &feedback);
        let snapshot = b.snapshot(t0 + S);
        assert_eq!(snapshot.tokens_this_minute, 4_000);
        // 10 per window, 5 left: Azure saw 5 requests in the window, we 1.
        assert_eq!(snapshot.requests_this_window, 5);
        assert_eq!(snapshot.token_headroom(), Some(0.6));
        assert_eq!(snapshot.request_headroom(), Some(0.5));
        assert_eq!(snapshot.headroom(t0 + S), 0.5);
        // The correction ages out with the charge it came with.
        assert_eq!(not_until(b.try_reserve(t0 + 2 * S, cost(6_001))), t0 + M);
        assert_eq!(b.snapshot(t0 + S + M).tokens_this_minute, 0);
        // A per-minute remaining count (larger than a window's allowance) changes nothing.
        let r3 = b.try_reserve(t0 + 2 * M, cost(10)).unwrap();
        b.settle(
            t0 + 2 * M,
            r3,
            &QuotaFeedback {
                remaining_requests: Some(590),
                ..QuotaFeedback::default()
            },
        );
        assert_eq!(b.snapshot(t0 + 2 * M).requests_this_window, 1);
    }

    #[test]
    fn a_429_blocks_until_its_wait_is_over() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(Some(600), Some(100_000), S);
        let r = b.try_reserve(t0, cost(10)).unwrap();
        let feedback =
            QuotaFeedback::from_reply(RateLimitHeaders::default(), &rate_limited(7 * S), None);
        assert_eq!(feedback.rate_limited_for, Some(7 * S));
        b.settle(t0 + S, r, &feedback);
        assert_eq!(b.snapshot(t0 + S).blocked_until, Some(t0 + 8 * S));
        assert_eq!(b.snapshot(t0 + S).headroom(t0 + S), 0.0);
        assert_eq!(not_until(b.try_reserve(t0 + 2 * S, cost(1))), t0 + 8 * S);
        b.try_reserve(t0 + 8 * S, cost(1)).unwrap();
        assert_eq!(b.snapshot(t0 + 8 * S).blocked_until, None);
    }
    #[test]
    fn remaining_counts_that_never_move_never_pace_below_the_configured_limits() {
        // A stand-in that answers "0 left" on every success: read as Azure's, each reply
        // charged a correction of the whole minute and paced the deployment to a crawl.
        let mut b = WindowBudget::new(Some(360), Some(60_000), S);
        let stuck = QuotaFeedback {
            remaining_tokens: Some(0),
            remaining_requests: Some(0),
            ..QuotaFeedback::default()
        };
        let run = drive(&mut b, 2, 1_000, |_, _| stuck);
        // Exactly the configured allowance: 60 jobs of 1,000 tokens a minute.
        assert_eq!(run.admitted, vec![60, 60]);
        assert_eq!(b.charge_factor(), 1.0);
    }

    #[test]
    fn the_configured_tpm_is_counted_in_the_servers_units() {
        // The server charges half our estimate (only `max_tokens`, say): after a few replies the
        // budget admits twice the configured TPM of our tokens, and the server never refuses.
        let mut b = WindowBudget::new(None, Some(100_000), S);
        let mut server = FixedMinute::new(100_000);
        let run = drive(&mut b, 2, 1_000, |elapsed, _| server.arrive(elapsed, 500));
        assert_eq!(
            run,
            Run {
                admitted: vec![200, 200],
                refused: vec![0, 0]
            }
        );
        assert_eq!(b.charge_factor(), 0.5);
        assert_eq!(b.snapshot(Instant::now()).tpm_limit, Some(200_000));
    }

    #[test]
    fn only_a_429_for_tokens_moves_the_learned_charge() {
        let mut b = WindowBudget::new(None, Some(100_000), S);
        let mut server = FixedMinute::new(100_000);
        drive(&mut b, 1, 1_000, |elapsed, _| server.arrive(elapsed, 500));
        assert_eq!(b.charge_factor(), 0.5);
        let t1 = Instant::now() + 2 * M;
        let refused = |remaining_tokens| QuotaFeedback {
            remaining_tokens: Some(remaining_tokens),
            rate_limited_for: Some(S),
            ..QuotaFeedback::default()
        };
        // The request window refused it (tokens to spare): the factor stays.
        let r = b.try_reserve(t1, cost(1_000)).unwrap();
        b.settle(t1, r, &refused(99_000));
        assert_eq!(b.charge_factor(), 0.5);
        // The minute's tokens refused it, 100 left: the server counted 99,900 where we had
        // 111,000 (the first refusal's 1,000 with its correction to the 1,000 the server said it
        // had seen, and 109 more; at 0.5, 55,500 of its own): it charges 0.9 of our estimate.
        let t2 = t1 + 2 * S;
        for _ in 0..109 {
            b.try_reserve(t2, cost(1_000)).unwrap();
        }
        let r = b.try_reserve(t2, cost(1_000)).unwrap();
        b.settle(t2, r, &refused(100));
        assert_eq!(b.charge_factor(), 0.9);
    }

    /// A server counting requests in fixed windows of `window` from the start, `per_window`
    /// each, that says what is left on every reply.
    fn fixed_requests(
        window: Duration,
        per_window: u64,
    ) -> impl FnMut(Duration, &Reservation) -> QuotaFeedback {
        let mut used = (u128::MAX, 0u64);
        move |elapsed, _| {
            let index = elapsed.as_nanos() / window.as_nanos();
            if used.0 != index {
                used = (index, 0);
            }
            let fits = used.1 < per_window;
            used.1 += u64::from(fits);
            QuotaFeedback {
                remaining_requests: Some(per_window - used.1),
                rate_limited_for: (!fits).then(|| window.mul_f64(0.5)),
                ..QuotaFeedback::default()
            }
        }
    }

    #[test]
    fn a_longer_request_window_is_learned_and_rpm_stays_the_ceiling() {
        // 600 RPM configured, 1 s windows assumed (10 a window); the server counts 100 per 10 s.
        let mut b = WindowBudget::new(Some(600), None, S);
        let mut server = fixed_requests(10 * S, 100);
        let mut first_second = 0;
        let run = drive(&mut b, 2, 10, |elapsed, r| {
            first_second += u64::from(elapsed < S);
            server(elapsed, r)
        });
        assert_eq!(b.request_window(), 10 * S);
        assert_eq!(b.requests_per_window(), Some(100));
        // The first window's 100 went out within its first second (10 a second before).
        assert_eq!(first_second, 100);
        // Never more than 600 a minute, no refusal.
        assert_eq!(
            run,
            Run {
                admitted: vec![600, 600],
                refused: vec![0, 0]
            }
        );
    }

    #[test]
    fn a_server_with_the_configured_window_keeps_it() {
        let mut b = WindowBudget::new(Some(600), None, S);
        let run = drive(&mut b, 1, 10, fixed_requests(S, 10));
        assert_eq!(b.request_window(), S);
        assert_eq!(run.refused, vec![0]);
        // Spread from the second window on, the requests bracket the first turn; then each
        // of the 60 windows carries its 10 but for one lost while spreading (bursts a 1.02 s
        // span apart: 590).
        assert_eq!(run.admitted, vec![599]);
    }

    /// A server counting requests at their arrival, `per_window` in any `window` (sliding),
    /// the k-th request arriving `delay(k)` after it was sent; it says what is left on every
    /// reply and, on a refusal, when the oldest arrival in the window slides out.
    fn sliding_requests(
        window: Duration,
        per_window: u64,
        delay: impl Fn(u64) -> Duration,
    ) -> impl FnMut(Duration, &Reservation) -> QuotaFeedback {
        let mut arrivals: Vec<Duration> = Vec::new();
        let mut sent = 0u64;
        move |elapsed, _| {
            let arrival = elapsed + delay(sent);
            sent += 1;
            arrivals.retain(|&at| at + window > elapsed);
            let counted = arrivals.iter().filter(|&&at| at <= arrival).count() as u64;
            let fits = counted < per_window;
            if fits {
                arrivals.push(arrival);
            }
            let oldest = arrivals.iter().min().copied().unwrap_or(arrival);
            QuotaFeedback {
                remaining_requests: Some(per_window.saturating_sub(counted + u64::from(fits))),
                rate_limited_for: (!fits).then(|| (oldest + window).saturating_sub(arrival)),
                ..QuotaFeedback::default()
            }
        }
    }

    #[test]
    fn requests_that_reach_a_sliding_server_late_widen_the_request_span() {
        // Every third request arrives 40 ms after it was sent, more than the span's 20 ms
        // margin: a late one of a span and a prompt one of the next meet in one of the
        // server's windows. Its refusals widen the span, once per span in force.
        let mut b = WindowBudget::new(Some(600), None, S);
        let mut server =
            sliding_requests(S, 10, |k| if k % 3 == 0 { 40 * MS } else { Duration::ZERO });
        let run = drive(&mut b, 2, 10, |elapsed, r| server(elapsed, r));
        assert_eq!(b.counts.request_span(), 1_040 * MS);
        // Without the widening: 40 and 39 refusals. (Without the sliding count's test in
        // `FixedPhase::pair`, a pause while spreading taught a false turn: one refusal more.)
        assert_eq!(run.refused, vec![1, 0]);
        // 10 per 1.04 s span: 580 a minute sent as bursts. Spread while the turns were
        // learned (none: the server slides), each request ages out on its own, and the 10 ms
        // steps of this drive delay some by a step.
        assert_eq!(run.admitted, vec![578, 577]);
        // The same span keeps the configured window; a shorter server window never widens it.
        assert_eq!(b.request_window(), S);
    }

    #[test]
    fn a_request_that_left_late_counts_from_when_it_left() {
        // A flood of submissions held the first burst in the client for 600 ms: a sliding
        // server counts it until 1.6 s (and its tokens until 60.6 s). Dated at their charge,
        // the next burst would go at 1.02 s and be refused whole.
        let t0 = Instant::now();
        let mut b = WindowBudget::new(Some(600), Some(100_000), S);
        // Its replies carry no remaining counts: the probe of the minute's turn (tested below)
        // would send the refused requests; not the point here.
        b.probe.stop();
        let first: Vec<Reservation> = (0..10)
            .map(|_| b.try_reserve(t0, cost(1_000)).unwrap())
            .collect();
        let replied = QuotaFeedback {
            call_time: Some(100 * MS),
            ..QuotaFeedback::default()
        };
        for r in first {
            b.settle(t0 + 700 * MS, r, &replied);
        }
        assert_eq!(not_until(b.try_reserve(t0 + W, cost(1))), t0 + 600 * MS + W);
        let full = b.try_reserve(t0 + 2 * S, cost(90_000)).unwrap();
        assert_eq!(
            not_until(b.try_reserve(t0 + 2 * S, cost(1_000))),
            t0 + 600 * MS + M
        );
        // A call that started at once changes nothing.
        b.settle(
            t0 + 2 * S + 100 * MS,
            full,
            &QuotaFeedback {
                call_time: Some(100 * MS),
                ..QuotaFeedback::default()
            },
        );
        assert_eq!(b.snapshot(t0 + 2 * S + W - MS).requests_this_window, 1);
        assert_eq!(b.snapshot(t0 + 2 * S + W).requests_this_window, 0);
    }

    #[test]
    fn the_request_span_widens_at_most_to_a_tenth_of_the_window_once_per_span() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(Some(600), None, S);
        let refused = QuotaFeedback {
            remaining_requests: Some(0),
            rate_limited_for: Some(10 * MS),
            ..QuotaFeedback::default()
        };
        let first = b.try_reserve(t0, cost(1)).unwrap();
        let second = b.try_reserve(t0, cost(1)).unwrap();
        b.settle(t0 + 20 * MS, first, &refused);
        assert_eq!(b.counts.request_span(), 1_040 * MS);
        // Charged under the narrower span: no news about the wider one.
        b.settle(t0 + 20 * MS, second, &refused);
        assert_eq!(b.counts.request_span(), 1_040 * MS);
        let mut spans = Vec::new();
        for k in 1..5 {
            let now = t0 + k * 2 * S;
            let r = b.try_reserve(now, cost(1)).unwrap();
            b.settle(now, r, &refused);
            spans.push(b.counts.request_span());
        }
        assert_eq!(spans, vec![1_080 * MS, 1_100 * MS, 1_100 * MS, 1_100 * MS]);
        // A refusal for tokens (requests left) does not widen it.
        let mut tokens = WindowBudget::new(Some(600), Some(1_000), S);
        let r = tokens.try_reserve(t0, cost(1)).unwrap();
        let for_tokens = QuotaFeedback {
            remaining_requests: Some(5),
            ..refused
        };
        tokens.settle(t0, r, &for_tokens);
        assert_eq!(tokens.counts.request_span(), W);
    }

    /// Replies in flight (settled at, reservation, feedback), in order.
    type InFlight = std::collections::VecDeque<(Instant, Reservation, QuotaFeedback)>;

    /// Settles the replies in flight that are due by `now`.
    fn settle_due(budget: &mut WindowBudget, in_flight: &mut InFlight, now: Instant) {
        while in_flight.front().is_some_and(|(at, _, _)| *at <= now) {
            if let Some((at, r, feedback)) = in_flight.pop_front() {
                budget.settle(at, r, &feedback);
            }
        }
    }

    /// Jobs of 1,000 tokens arriving every 50 ms, queued, offered to `budget` every 10 ms
    /// for `seconds`; the server answers each admitted one (`reply(elapsed)`) and the reply
    /// is settled 20 ms later. Returns when each admitted job was sent, and the refusals.
    fn stream(
        budget: &mut WindowBudget,
        seconds: u32,
        mut reply: impl FnMut(Duration) -> QuotaFeedback,
    ) -> (Vec<Duration>, u32) {
        let t0 = Instant::now();
        let (mut queued, mut sent, mut refused) = (0u32, Vec::new(), 0);
        let mut in_flight = InFlight::new();
        for k in 0..seconds * 100 {
            let now = t0 + k * 10 * MS;
            settle_due(budget, &mut in_flight, now);
            queued += u32::from(k % 5 == 0);
            while queued > 0 {
                let Ok(r) = budget.try_reserve(now, cost(1_000)) else {
                    break;
                };
                queued -= 1;
                let feedback = reply(now - t0);
                refused += u32::from(feedback.rate_limited_for.is_some());
                sent.push(now - t0);
                in_flight.push_back((now + 20 * MS, r, feedback));
            }
        }
        (sent, refused)
    }

    #[test]
    fn the_turn_of_a_fixed_minute_is_learned_and_its_charges_freed_at_the_next() {
        // 100,000 TPM: the first 100 jobs go within 5 s, then the minute is full. The server's
        // minute turns 60 s after our start; the first reply after it shows the count fell to
        // what was sent since, which brackets the turn between 4.95 s and 60.32 s: the first
        // minute's charges (but the last 0.3 s of them) are forgotten at 60.62 s, not 60.3 s
        // after each was made.
        let mut b = WindowBudget::new(None, Some(100_000), S);
        let mut server = FixedMinute::new(100_000);
        let (sent, refused) = stream(&mut b, 65, |elapsed| server.arrive(elapsed, 1_000));
        assert_eq!(refused, 0);
        assert!(b.minute_phase.turns().is_some());
        let by = |seconds: f64| sent.iter().filter(|at| at.as_secs_f64() < seconds).count();
        assert_eq!(by(60.0), 100);
        // 60.30-60.61 s: the jobs of 0-0.31 s age out (7); at 60.62 s those of 0.35-4.60 s
        // (86). The last 0.3 s before the bracket (7 jobs of 4.65-4.95 s) may have reached
        // the server after its turn: they keep their span.
        assert_eq!(by(60.62), 107);
        assert_eq!(by(60.63), 193);
        // Then they age out one by one, as the server (which refused nothing) allowed.
        assert_eq!(by(64.9), 193);
        assert_eq!(sent.len(), 194);
        // A 429 for tokens refutes the phase for good: back to sliding spans.
        let later = Instant::now() + 10 * M;
        b.try_reserve(later, cost(1_000)).unwrap();
        let r = b.try_reserve(later, cost(1_000)).unwrap();
        let refusal = QuotaFeedback {
            remaining_tokens: Some(500),
            rate_limited_for: Some(S),
            ..QuotaFeedback::default()
        };
        b.settle(later, r, &refusal);
        assert_eq!(b.minute_phase.turns(), None);
    }

    /// A backlog offered to `budget` every 10 ms (up to 20 tries) for `seconds`, against a
    /// server allowing 10 requests a second (`arrive(elapsed)` says if it admits one and the
    /// count it then holds); replies are settled 50 ms after sending. Returns when each
    /// admitted request was sent, the refusals, and when the request window's turns were
    /// first trusted.
    fn backlog(
        budget: &mut WindowBudget,
        seconds: u32,
        mut arrive: impl FnMut(Duration) -> Option<u64>,
    ) -> (Vec<Duration>, u32, Option<Duration>) {
        let t0 = Instant::now();
        let (mut sent, mut refused, mut learned) = (Vec::new(), 0, None);
        let mut in_flight = InFlight::new();
        for k in 0..seconds * 100 {
            let now = t0 + k * 10 * MS;
            settle_due(budget, &mut in_flight, now);
            if learned.is_none() && budget.window_phase.turns().is_some() {
                learned = Some(now - t0);
            }
            for _ in 0..20 {
                let Ok(r) = budget.try_reserve(now, cost(1)) else {
                    break;
                };
                let count = arrive(now - t0);
                refused += u32::from(count.is_none());
                sent.push(now - t0);
                let feedback = QuotaFeedback {
                    remaining_requests: Some(10 - count.unwrap_or(10)),
                    rate_limited_for: count.is_none().then_some(100 * MS),
                    ..QuotaFeedback::default()
                };
                in_flight.push_back((now + 50 * MS, r, feedback));
            }
        }
        (sent, refused, learned)
    }

    #[test]
    fn spread_requests_learn_a_fixed_second_and_then_fill_each_of_its_windows() {
        // 600 RPM against fixed one-second windows that turn 370 ms after our start. Bursts of
        // ten a span (1.02 s) apart would meet a fresh window every time, fixed or sliding, and
        // first straddle a turn after 18 s. Spread 102 ms apart once the header is believed
        // (from 1.02 s), the turn at 1.37 s falls between two requests (sent at 1.28 s and
        // 1.38 s; learned from the second's reply at 1.43 s).
        let mut b = WindowBudget::new(Some(600), None, S);
        let phase = 370 * MS;
        let window_of = |at: Duration| ((at + S - phase).as_millis() / 1_000) as usize;
        let mut used = (usize::MAX, 0u64);
        let (sent, refused, learned) = backlog(&mut b, 30, |at| {
            let window = window_of(at);
            if used.0 != window {
                used = (window, 0);
            }
            (used.1 < 10).then(|| {
                used.1 += 1;
                used.1
            })
        });
        assert_eq!(refused, 0);
        assert_eq!(learned, Some(1_430 * MS));
        // Then every window of the server carries its whole allowance, sent at once.
        let mut per_window = [0u32; 31];
        for at in &sent {
            per_window[window_of(*at)] += 1;
        }
        // (A request charged within the bracket keeps its span and drifts by 20 ms a window,
        // so one window in fifty carries one fewer.)
        assert_eq!(per_window[3..30].iter().sum::<u32>(), 269);
        assert!(per_window[3..30].iter().all(|&n| n >= 9), "{per_window:?}");
        assert_eq!(b.spread_gap(1), None);
    }

    #[test]
    fn a_budget_shared_with_other_processes_does_not_spread() {
        // Their requests count in the server's windows too: a count never falls to ours alone,
        // so spreading would learn nothing. Ten go at once, as without spreading.
        let mut b = WindowBudget::new(Some(600), None, S);
        b.shared_with_others();
        let mut used = 0;
        let (sent, refused, learned) = backlog(&mut b, 3, |_| {
            used += 1;
            Some(used.min(10))
        });
        assert_eq!((refused, learned), (0, None));
        assert_eq!(sent[10..20], [1_020 * MS; 10]);
    }

    #[test]
    fn spread_requests_keep_a_sliding_second_within_its_limit() {
        // The same backlog against one-second windows that slide: no turn, no refusal.
        let mut b = WindowBudget::new(Some(600), None, S);
        let mut log: std::collections::VecDeque<Duration> = std::collections::VecDeque::new();
        let (sent, refused, learned) = backlog(&mut b, 30, |at| {
            while log.front().is_some_and(|first| *first + S <= at) {
                log.pop_front();
            }
            (log.len() < 10).then(|| {
                log.push_back(at);
                log.len() as u64
            })
        });
        assert_eq!((refused, learned), (0, None));
        // The first burst at once (the header is not believed yet), then from 1.02 s one due
        // every 102 ms, each sent on the first 10 ms step at most half a gap before it is due.
        assert_eq!(sent[..10], [Duration::ZERO; 10]);
        assert_eq!(
            sent[10..14],
            [1_020 * MS, 1_080 * MS, 1_180 * MS, 1_280 * MS]
        );
        // Five allowances spread without a turn: spreading stops, and the spans keep the rate
        // of ten a 1.02 s span (98 in the last 10 s).
        assert_eq!((b.spread_count, b.spread_gap(1)), (50, None));
        let last = sent.iter().filter(|at| **at >= 20 * S).count();
        assert_eq!(last, 98);
    }

    #[test]
    fn a_sliding_minute_teaches_no_turn_and_keeps_the_spans() {
        // The same traffic to a server whose minute slides: the count after the first reply of
        // the second minute still holds the whole first minute but its first 0.3 s.
        let mut b = WindowBudget::new(None, Some(100_000), S);
        let mut log: Vec<(Duration, u64)> = Vec::new();
        let (sent, refused) = stream(&mut b, 62, |elapsed| {
            log.retain(|(at, _)| *at + 60 * S > elapsed);
            let used: u64 = log.iter().map(|(_, tokens)| tokens).sum();
            let fits = used + 1_000 <= 100_000;
            if fits {
                log.push((elapsed, 1_000));
            }
            QuotaFeedback {
                remaining_tokens: Some(100_000 - used - if fits { 1_000 } else { 0 }),
                rate_limited_for: (!fits).then_some(S),
                ..QuotaFeedback::default()
            }
        });
        assert_eq!(refused, 0);
        assert_eq!(b.minute_phase.turns(), None);
        let by = |seconds: f64| sent.iter().filter(|at| at.as_secs_f64() < seconds).count();
        assert_eq!(by(60.0), 100);
        // Only what aged out of the 60.3 s span: the jobs of 0-1.69 s.
        assert_eq!(by(62.0), 134);
    }

    #[test]
    fn a_remaining_count_below_the_prediction_pulls_the_charge_back_at_once() {
        // Learned: half. Then, from the third minute, the server charges all of our estimate:
        // the first replies of that minute show less left than predicted, and the budget stops
        // at the server's limit, refusals only for what was already on its way.
        let mut b = WindowBudget::new(None, Some(100_000), S);
        let mut server = FixedMinute::new(100_000);
        let run = drive(&mut b, 3, 1_000, |elapsed, _| {
            let full = elapsed >= Duration::from_secs(120);
            server.arrive(elapsed, if full { 1_000 } else { 500 })
        });
        assert_eq!(run.admitted[..2], [200, 200]);
        assert_eq!(run.refused[..2], [0, 0]);
        assert!(run.refused[2] <= 10, "{run:?}");
        assert!(run.admitted[2] <= 110, "{run:?}");
    }

    /// A server of 100,000 TPM whose minute is fixed (turning every 60 s from our start) or
    /// sliding, that sends no remaining counts (`-1`: none) and a 429's exact wait in
    /// `retry-after-ms`; it leaves requests to the budget's window.
    struct Headerless {
        sliding: bool,
        /// What it charges per 100 tokens of ours.
        percent: u64,
        admitted: Vec<(Duration, u64)>,
    }

    impl Headerless {
        const TPM: u64 = 100_000;

        fn new(sliding: bool) -> Self {
            Headerless {
                sliding,
                percent: 100,
                admitted: Vec::new(),
            }
        }

        fn arrive(&mut self, at: Duration, ours: u64) -> QuotaFeedback {
            let tokens = ours * self.percent / 100;
            let minute = 60 * S;
            let fixed_start = minute * (at.as_secs() / 60) as u32;
            let counts = |(when, _): &&(Duration, u64)| {
                if self.sliding {
                    *when + minute > at
                } else {
                    *when >= fixed_start
                }
            };
            let used: u64 = self.admitted.iter().filter(counts).map(|(_, t)| t).sum();
            if used + tokens <= Self::TPM {
                self.admitted.push((at, tokens));
                return QuotaFeedback::default();
            }
            let wait = if self.sliding {
                // Until enough of the oldest charges slide out.
                let mut left = used + tokens - Self::TPM;
                let mut until = at;
                for (when, t) in self.admitted.iter().filter(counts) {
                    until = *when + minute;
                    left = left.saturating_sub(*t);
                    if left == 0 {
                        break;
                    }
                }
                until - at
            } else {
                fixed_start + minute - at
            };
            QuotaFeedback {
                rate_limited_for: Some(wait),
                wait_source: Some(WaitSource::RetryAfterMs),
                ..QuotaFeedback::default()
            }
        }
    }

    /// 400 jobs, the first 200 of 500 tokens and the rest of 1,500, offered every 10 ms for
    /// `seconds` to a budget (of 100,000 TPM and 600 RPM, ten a second, in these tests); see
    /// [`offer`].
    fn headerless_batch(
        budget: &mut WindowBudget,
        server: &mut Headerless,
        seconds: u32,
    ) -> (Vec<Duration>, u32) {
        let jobs = (0..400).map(|k| if k < 200 { 500 } else { 1_500 });
        offer(budget, server, seconds, jobs.collect())
    }

    /// `jobs` (their tokens) offered in order every 10 ms for `seconds` to `budget`; `server`
    /// answers each at once, the reply is settled 20 ms later, and a refused job goes back to
    /// the front. Returns when each job the server admitted was sent, and the 429s.
    fn offer(
        budget: &mut WindowBudget,
        server: &mut Headerless,
        seconds: u32,
        jobs: Vec<u64>,
    ) -> (Vec<Duration>, u32) {
        let t0 = Instant::now();
        let mut pending: std::collections::VecDeque<u64> = jobs.into();
        let (mut admitted, mut refused) = (Vec::new(), 0);
        let mut in_flight = InFlight::new();
        for k in 0..seconds * 100 {
            let now = t0 + k * 10 * MS;
            settle_due(budget, &mut in_flight, now);
            while let Some(tokens) = pending.pop_front() {
                let Ok(r) = budget.try_reserve(now, cost(tokens)) else {
                    pending.push_front(tokens);
                    break;
                };
                let feedback = server.arrive(now - t0, tokens);
                if feedback.rate_limited_for.is_some() {
                    refused += 1;
                    pending.push_front(tokens);
                } else {
                    admitted.push(now - t0);
                }
                in_flight.push_back((now + 20 * MS, r, feedback));
            }
        }
        (admitted, refused)
    }

    fn in_minute_two(admitted: &[Duration], until: Duration) -> usize {
        admitted
            .iter()
            .filter(|at| **at >= 60 * S && **at < until)
            .count()
    }

    #[test]
    fn without_remaining_counts_a_probe_learns_where_a_fixed_minute_turns() {
        // The first minute carries 200 jobs of 500 tokens at ten a span (0-19.4 s); at 20.4 s
        // the tokens first refuse one (of 1,500) the request window has room for: it is sent
        // anyway, and the 429 waits until 60 s (a turn supposed there; the refused charge is
        // taken back). At 60.3 s the sliding span frees the first 5,000 tokens: three jobs go.
        // At 60.33 s a fourth, which a sliding minute surely refuses (it still holds the first
        // minute's 95,000 after its first span, and the 4,500 since), is sent as a minute
        // turned at 60 s admits it: admitted, the turn is learned, and the second minute runs
        // at the request limit.
        let mut b = WindowBudget::new(Some(600), Some(100_000), S);
        let mut server = Headerless::new(false);
        let (admitted, refused) = headerless_batch(&mut b, &mut server, 75);
        assert_eq!(refused, 1);
        let turns = b.minute_phase.turns().expect("learned");
        assert_eq!(turns.window(), 60 * S);
        assert_eq!(admitted.iter().filter(|at| **at < 60 * S).count(), 200);
        // The second minute's 100,000 tokens: 66 jobs by 66.5 s, and nothing more before 120 s.
        assert_eq!(in_minute_two(&admitted, 70 * S), 66);
        assert_eq!(admitted.len(), 266);
        // Without the probe the sliding spans free 5,000 tokens a span (1.02 s) from 60.3 s:
        // three or four jobs, 33 by 70 s.
        let mut c = WindowBudget::new(Some(600), Some(100_000), S);
        c.probe.stop();
        let (slow, refused) = headerless_batch(&mut c, &mut Headerless::new(false), 75);
        assert_eq!((refused, in_minute_two(&slow, 70 * S)), (0, 33));
    }

    #[test]
    fn a_sliding_minute_refuses_the_probes_twice_and_keeps_its_spans() {
        // The same batch to a sliding minute: its first 429 waits until 60 s too (when the
        // first jobs slide out), but at 60.33 s it still holds 95,000 tokens of the first
        // minute and 4,500 of the second: the 1,500 more are refused. Two 429s in all, and
        // never a probe again; the batch ends on sliding spans.
        let mut b = WindowBudget::new(Some(600), Some(100_000), S);
        let mut server = Headerless::new(true);
        let (admitted, refused) = headerless_batch(&mut b, &mut server, 250);
        assert_eq!(refused, 2);
        assert_eq!(b.minute_phase.turns(), None);
        assert!(!b.minute_phase.learning());
        assert_eq!(b.probe.ask(), Ask::Nothing);
        assert_eq!(admitted.len(), 400);
    }

    #[test]
    fn a_sliding_minute_that_counts_less_than_we_do_is_not_taken_for_a_fixed_one() {
        // It charges 98 % of our estimate: at 20.4 s it admits the first request sent over our
        // minute (1,500 of ours, hiding 1,500 more room than our count says) and refuses the
        // second (a turn supposed at 60 s). At 60.33 s our sliding minute refuses a 1,500-token
        // job that this server admits (it holds 98 % of 99,500): only a refusal by more than
        // the 1,500 hidden would show a sliding minute. None comes: nothing more is asked, no
        // false turn, no 429 beyond the one.
        let mut b = WindowBudget::new(Some(600), Some(100_000), S);
        let mut server = Headerless::new(true);
        server.percent = 98;
        let (admitted, refused) = headerless_batch(&mut b, &mut server, 250);
        assert_eq!(refused, 1);
        assert_eq!(b.probe.admitted(), 1_500);
        assert_eq!(b.minute_phase.turns(), None);
        assert_eq!(admitted.len(), 400);
    }

    #[test]
    fn no_probe_with_remaining_counts_or_a_shared_quota() {
        // Shared with other processes: their charges hide ours, nothing is asked.
        let mut shared = WindowBudget::new(Some(600), Some(100_000), S);
        shared.shared_with_others();
        let (_, refused) = headerless_batch(&mut shared, &mut Headerless::new(false), 62);
        assert_eq!(refused, 0);
        // Remaining counts from the 11th second on (here a constant the budget does not
        // believe): they are what the phase is learned from; no probe when the minute's tokens
        // refuse at 20.4 s.
        let mut counted = WindowBudget::new(Some(600), Some(100_000), S);
        let mut server = Headerless::new(false);
        let t0 = Instant::now();
        let mut in_flight = InFlight::new();
        let mut refused = 0;
        for k in 0..3_000u32 {
            let now = t0 + k * 10 * MS;
            settle_due(&mut counted, &mut in_flight, now);
            if let Ok(r) = counted.try_reserve(now, cost(500)) {
                let mut feedback = server.arrive(now - t0, 500);
                refused += u32::from(feedback.rate_limited_for.is_some());
                feedback.remaining_tokens = (k >= 1_000).then_some(7);
                in_flight.push_back((now + 20 * MS, r, feedback));
            }
        }
        assert_eq!(refused, 0);
        assert_eq!(counted.probe.ask(), Ask::Nothing);
    }

    #[test]
    fn no_probe_before_a_reply_or_for_a_short_wait() {
        // A first flight that fills the minute before any reply came says nothing about the
        // headers: refused, nothing sent over.
        let t0 = Instant::now();
        let mut b = WindowBudget::new(None, Some(100_000), S);
        let first = b.try_reserve(t0, cost(100_000)).unwrap();
        assert_eq!(not_until(b.try_reserve(t0, cost(1))), t0 + M);
        // After a success without counts it would be the probe (the minute holds it 60.3 s).
        b.settle(t0 + 10 * MS, first, &QuotaFeedback::default());
        assert!(b.try_reserve(t0 + 20 * MS, cost(1)).is_ok());
        // Jobs of 200 tokens at ten a second fill the minute only at 50 s: a 429 then would
        // block for as long as the minute holds them anyway (10 s), or for the fallback's 15 s
        // without a wait of the server's: not asked. Nor when the sliding minute frees room
        // every second after.
        let mut late = WindowBudget::new(Some(600), Some(100_000), S);
        let mut server = Headerless::new(false);
        let (admitted, refused) = offer(&mut late, &mut server, 130, vec![200; 1_000]);
        assert_eq!((admitted.len(), refused), (1_000, 0));
        assert_eq!(late.probe.ask(), Ask::Turn);
    }

    #[test]
    fn a_429_whose_wait_misses_the_probed_turn_refutes_it() {
        // Turns learned by the probe at 60 s (a minute apart); a later 429 for the minute whose
        // wait ends at 95 s contradicts them: back to sliding spans. One ending at a turn, or
        // within the request window, does not.
        let mut b = WindowBudget::new(Some(600), Some(100_000), S);
        let mut server = Headerless::new(false);
        headerless_batch(&mut b, &mut server, 62);
        assert!(b.minute_phase.turns().is_some());
        let t0 = Instant::now();
        let none = Cost {
            requests: 0,
            tokens: 0,
        };
        let mut sent: Vec<Reservation> = (0..3)
            .map(|_| b.try_reserve(t0 + 89 * S, none).unwrap())
            .collect();
        let mut settle_429 = |b: &mut WindowBudget, at: Duration, wait: Duration| {
            let feedback = QuotaFeedback {
                rate_limited_for: Some(wait),
                wait_source: Some(WaitSource::RetryAfterMs),
                ..QuotaFeedback::default()
            };
            b.settle(t0 + at, sent.remove(0), &feedback);
        };
        settle_429(&mut b, 90 * S, 30 * S);
        settle_429(&mut b, 91 * S, 500 * MS);
        assert!(b.minute_phase.turns().is_some());
        settle_429(&mut b, 92 * S, 3 * S);
        assert_eq!(b.minute_phase.turns(), None);
    }

    /// One step of a random workload.
    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Reserve(u64),
        ReleaseOldest,
        Feedback {
            remaining_tokens: u64,
            remaining_requests: u64,
        },
    }

    fn op(tpm: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..1500).prop_map(Op::Advance),
            6 => (0..=tpm / 2).prop_map(Op::Reserve),
            1 => Just(Op::ReleaseOldest),
            1 => ((0..=tpm), (0u64..20)).prop_map(|(remaining_tokens, remaining_requests)| {
                Op::Feedback { remaining_tokens, remaining_requests }
            }),
        ]
    }

    /// The largest sum of `charges` (instant, amount) within any window of `window` that
    /// starts at one of the charges (where a maximal window can be taken to start).
    fn max_in_any_window(charges: &[(Instant, u64)], window: Duration) -> u64 {
        charges
            .iter()
            .map(|(start, _)| {
                charges
                    .iter()
                    .filter(|(at, _)| at >= start && *at < *start + window)
                    .map(|(_, amount)| amount)
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0)
    }

    proptest! {
        // A fixed seed: the same cases on every run, so a red CI always means a real change.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_2026),
            ..ProptestConfig::default()
        })]
        #[test]
        fn never_admits_more_than_the_limits_in_any_window_wherever_it_starts(
            rpm in 1u32..700,
            tpm in 1u64..20_000,
            window_ms in prop::sample::select(vec![1_000u64, 10_000, 7_000]),
            ops in prop::collection::vec(op(20_000), 1..300),
        ) {
            let t0 = Instant::now();
            let rpm_window = Duration::from_millis(window_ms);
            let mut budget = WindowBudget::new(Some(rpm), Some(tpm), rpm_window);
            let per_window = budget.requests_per_window().unwrap_or(0);
            let mut now = t0;
            let mut admitted: Vec<Reservation> = Vec::new();
            let mut released: Vec<u64> = Vec::new();
            let mut longest_window = rpm_window;
            // Replies that showed fixed windows (a fall to what was charged since) turn the
            // spans into the server's windows: the invariant is then per window of the server.
            let (mut fixed_minute, mut fixed_window) = (false, false);
            for op in ops {
                match op {
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                    Op::Reserve(t) => match budget.try_reserve(now, cost(t)) {
                        Ok(r) => {
                            prop_assert_eq!(r.at, now);
                            admitted.push(r);
                        }
                        Err(Refusal::NotUntil(at)) => prop_assert!(at > now),
                        // Only a shared budget waits for a lease.
                        Err(Refusal::Pending) => prop_assert!(false, "pending"),
                        Err(Refusal::NeverFits { tokens: need, capacity }) => {
                            prop_assert!(need > capacity);
                            prop_assert_eq!(capacity, tpm);
                        }
                    },
                    Op::ReleaseOldest => {
                        if let Some(r) = admitted.iter().find(|r| !released.contains(&r.id)) {
                            released.push(r.id);
                            budget.release(*r);
                        }
                    }
                    Op::Feedback { remaining_tokens, remaining_requests } => {
                        if let Some(r) = admitted.last().copied() {
                            budget.settle(now, r, &QuotaFeedback {
                                remaining_tokens: Some(remaining_tokens),
                                remaining_requests: Some(remaining_requests),
                                ..QuotaFeedback::default()
                            });
                            longest_window = longest_window.max(budget.request_window());
                            fixed_minute |= budget.minute_phase.turns().is_some();
                            fixed_window |= budget.window_phase.turns().is_some();
                        }
                    }
                }
            }
            // Charges that were not refunded: every window of Azure's length, wherever it
            // starts, holds no more than the limits.
            let kept: Vec<&Reservation> =
                admitted.iter().filter(|r| !released.contains(&r.id)).collect();
            let tokens: Vec<(Instant, u64)> = kept.iter().map(|r| (r.at, r.cost.tokens)).collect();
            let requests: Vec<(Instant, u64)> = kept.iter().map(|r| (r.at, 1)).collect();
            if !fixed_minute {
                prop_assert!(max_in_any_window(&tokens, MINUTE) <= tpm);
                prop_assert!(max_in_any_window(&requests, MINUTE) <= u64::from(rpm));
            }
            if fixed_window {
                return Ok(());
            }
            if longest_window <= rpm_window {
                prop_assert!(max_in_any_window(&requests, rpm_window) <= u64::from(per_window));
            }
            // Where the remaining counts showed a longer request window: within its allowance
            // over it.
            let longest = longest_window.max(rpm_window);
            let allowed = u64::from(requests_per_window(rpm, longest));
            prop_assert!(max_in_any_window(&requests, longest) <= allowed);
        }

        #[test]
        fn a_steady_stream_is_admitted_at_the_limit(
            tpm in 1_000u64..200_000,
            tokens_per_job in 100u64..1_000,
        ) {
            // Jobs every 10 ms, no RPM limit: each minute admits exactly floor(tpm / cost) jobs.
            let t0 = Instant::now();
            let mut budget = WindowBudget::new(None, Some(tpm), S);
            let mut per_minute = [0u64; 2];
            for k in 0..12_000u32 {
                let now = t0 + k * 10 * MS;
                if budget.try_reserve(now, cost(tokens_per_job)).is_ok() {
                    per_minute[(k / 6_000) as usize] += 1;
                }
            }
            let expected = tpm / tokens_per_job;
            prop_assert_eq!(per_minute, [expected, expected]);
        }

    }
}
