//! Quota budgets: sending at the rate Azure allows, by Azure's own accounting.
//!
//! Why charge on arrival, like Azure: Azure does not wait for a reply to count a request. When a
//! request arrives it adds an *estimate* to the deployment's running count for the minute: the
//! prompt's tokens plus `max_tokens` (times `n`/`best_of`), and it never refunds the difference
//! when fewer tokens come back. Requests are counted over short windows (1 s or 10 s), so a
//! 600 RPM deployment refuses the 11th request within one second. A client that paces by the
//! tokens it was billed, or by RPM per minute, is always ahead of what Azure will accept, and
//! learns of it from 429s. A budget that charges the same estimate at the same moment admits
//! what Azure would: a batch then runs at the quota's physical limit with almost no 429s.
//!
//! Why sliding spans instead of Azure's fixed windows: where Azure's windows start is not
//! known to the client (they are not aligned to our start, nor announced). A budget that keeps
//! every span of a minute within `tpm_limit` and every span of the request window (1 s by
//! default) within its share of `rpm_limit` keeps *each* of Azure's windows within the limits,
//! wherever it starts. In a backlog this costs nothing: a sliding budget sends a window's worth,
//! then the next as the first one's charges age out, which is the same schedule a client that
//! knew Azure's windows would follow. Each span is a little longer than Azure's window
//! ([`span_of`]: +0.5 %, at least 20 ms) so that the network's jitter cannot move two bursts
//! into one of Azure's windows.
//!
//! Why a trait: today each endpoint's budget lives in the Dispatcher's memory ([`WindowBudget`]
//! for configured limits, [`AdaptiveBudget`] for limits learned from replies, [`UnlimitedBudget`]);
//! later several processes will share a deployment's quota through Redis. [`QuotaBudget`]'s
//! methods take owned values and return plain results, so they can become asynchronous without
//! changing their shape: reserve the estimate before sending, settle with what the reply taught
//! us (Azure's `x-ratelimit-remaining-*`, a 429's wait), release when the attempt never reached
//! Azure.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use aoai_blaster_core::quota::{Cost, QuotaBudget, Refusal, WindowBudget, span_of};
//!
//! let t0 = Instant::now();
//! // 1,000 TPM, 6 RPM counted per 10 s window (1 request per window).
//! let mut budget = WindowBudget::new(Some(6), Some(1_000), Duration::from_secs(10));
//! let first = budget.try_reserve(t0, Cost { requests: 1, tokens: 400 }).unwrap();
//! // A second request within the same 10 s span must wait until the first has aged out.
//! assert_eq!(
//!     budget.try_reserve(t0, Cost { requests: 1, tokens: 400 }).unwrap_err(),
//!     Refusal::NotUntil(t0 + span_of(Duration::from_secs(10)))
//! );
//! // More than the whole minute's tokens can never be admitted.
//! assert!(matches!(
//!     budget.try_reserve(t0, Cost { requests: 1, tokens: 1_001 }),
//!     Err(Refusal::NeverFits { tokens: 1_001, capacity: 1_000 })
//! ));
//! # drop(first);
//! ```
//!
//! The module has one file per role: the [`QuotaBudget`] trait and its vocabulary here,
//! `log` (the sliding log of charges both budgets count in), `window` ([`WindowBudget`], for
//! configured limits), `adaptive` ([`AdaptiveBudget`], for limits learned from replies) and
//! `cost` (what a request is charged: [`options_cost`], [`prompt_charge`]), `calibrate`
//! (what the server's remaining counts say about its own charges, and whether to believe them)
//! and `phase` (where a server's fixed windows turn, so their charges can be forgotten at the
//! turn), `probe` (asking a server without remaining counts where its minute turns).

use std::fmt;
use std::time::{Duration, Instant};

use crate::classify::{AttemptOutcome, RateLimitHeaders, WaitSource};

mod adaptive;
mod calibrate;
mod cost;
mod log;
mod phase;
mod probe;
mod window;

pub use adaptive::{AdaptiveBudget, CEILING_MEMORY, DECREASE_FACTOR, FIRST_FLIGHT, INCREASE_SHARE};
pub use calibrate::{MAX_FACTOR, MIN_FACTOR, MIN_PAIRS};
pub use cost::{
    TOKENS_PER_IMAGE, TOKENS_PER_MESSAGE, TOKENS_PER_REPLY, char_charge, embeddings_charge,
    estimate_prompt_tokens_chars, input_char_charge, input_charge_memo, job_cost, operation_cost,
    options_cost, prompt_charge, prompt_charge_memo, tool_definitions,
};
pub use phase::TURNS_TO_TRUST;
pub use window::{WindowBudget, requests_per_window, span_of};

/// What a job is charged on arrival: requests (1 per attempt) and estimated tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cost {
    /// Requests (1 for a chat completion).
    pub requests: u32,
    /// Estimated tokens (see [`job_cost`]).
    pub tokens: u64,
}

/// A cost charged to a budget, to be settled (or released) when the attempt ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// What was charged.
    pub cost: Cost,
    /// When it was charged.
    pub at: Instant,
    /// The charge's number within its budget (tells reservations apart).
    pub id: u64,
    /// Tokens counted in the minute span ending at `at`, this charge included.
    pub tokens_in_minute: u64,
    /// Requests counted in the request-window span ending at `at`, this charge included.
    pub requests_in_window: u32,
}

/// Why a budget does not admit a cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not now; try again at this instant (which is always later than the `now` asked about;
    /// another refusal may follow if others got there first).
    NotUntil(Instant),
    /// Not before an answer from elsewhere: a shared quota's lease is being renewed
    /// ([`crate::shared::SharedBudget`]); the scheduler tries again when it arrives.
    Pending,
    /// Never: the cost is larger than the whole per-minute capacity.
    NeverFits {
        /// The cost's tokens.
        tokens: u64,
        /// The capacity (`tpm_limit`; 0 for an `rpm_limit` of 0).
        capacity: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotUntil(_) => f.write_str("quota full for now"),
            Refusal::Pending => f.write_str("waiting for a lease of the shared quota"),
            Refusal::NeverFits { tokens, capacity } => write!(
                f,
                "never fits: {tokens} estimated tokens exceed the per-minute capacity {capacity}"
            ),
        }
    }
}

/// What an attempt's reply taught about the quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaFeedback {
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// A 429's wait: admit nothing until it is over.
    pub rate_limited_for: Option<Duration>,
    /// Where that wait came from (`None`: not known, read as whole seconds): a wait of the
    /// configured fallback says nothing about where the server's window turns.
    pub wait_source: Option<WaitSource>,
    /// Tokens the reply's `usage` reports (not refunded: Azure does not; kept for statistics).
    pub used_tokens: Option<u64>,
    /// How long the HTTP call took, from when the endpoint started it: the request left no
    /// earlier than that long before the reply was settled. A request that left much later
    /// than it was charged (it waited in the client) is counted from when it left.
    pub call_time: Option<Duration>,
}

impl QuotaFeedback {
    /// The feedback of one attempt: its reply's rate-limit headers, a 429's wait, and the
    /// usage it reported.
    pub fn from_reply(
        headers: RateLimitHeaders,
        outcome: &AttemptOutcome,
        used_tokens: Option<u64>,
    ) -> Self {
        QuotaFeedback {
            remaining_requests: headers.remaining_requests,
            remaining_tokens: headers.remaining_tokens,
            rate_limited_for: match outcome {
                AttemptOutcome::RateLimited { wait, .. } => Some(*wait),
                _ => None,
            },
            wait_source: match outcome {
                AttemptOutcome::RateLimited { source, .. } => Some(*source),
                _ => None,
            },
            used_tokens,
            call_time: None,
        }
    }
}

/// A budget's state at an instant, for reports and for strategies that compare headroom.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// The RPM limit in force (configured, or learned by an adaptive budget).
    pub rpm_limit: Option<u32>,
    /// The TPM limit in force (configured, or learned by an adaptive budget), in our estimated
    /// tokens: the server's limit divided by what it charges per token of our estimate (twice
    /// a configured `tpm_limit` where the server charges half our estimate).
    pub tpm_limit: Option<u64>,
    /// Tokens charged in the minute span ending now.
    pub tokens_this_minute: u64,
    /// Requests charged in the minute span ending now.
    pub requests_this_minute: u32,
    /// Requests charged in the request-window span ending now.
    pub requests_this_window: u32,
    /// Requests one request window admits.
    pub requests_per_window: Option<u32>,
    /// Admitting nothing until then (a 429's wait).
    pub blocked_until: Option<Instant>,
}

impl BudgetSnapshot {
    /// The share of this minute's tokens still free, from 0.0 to 1.0 (`None` without a TPM
    /// limit).
    pub fn token_headroom(&self) -> Option<f64> {
        let limit = self.tpm_limit?;
        if limit == 0 {
            return Some(0.0);
        }
        let free = limit.saturating_sub(self.tokens_this_minute);
        Some(free as f64 / limit as f64)
    }

    /// The share of the request window still free, from 0.0 to 1.0 (`None` without a limit).
    pub fn request_headroom(&self) -> Option<f64> {
        let limit = self.requests_per_window?;
        if limit == 0 {
            return Some(0.0);
        }
        let free = limit.saturating_sub(self.requests_this_window);
        Some(f64::from(free) / f64::from(limit))
    }

    /// The smaller of the token and request headroom (1.0 when neither is limited, 0.0 while
    /// blocked by a 429): what the `capacity` strategy compares.
    pub fn headroom(&self, now: Instant) -> f64 {
        if self.blocked_until.is_some_and(|until| until > now) {
            return 0.0;
        }
        let tokens = self.token_headroom().unwrap_or(1.0);
        let requests = self.request_headroom().unwrap_or(1.0);
        tokens.min(requests)
    }
}

/// An endpoint's quota budget. Methods take owned values so that an implementation backed by a
/// shared store (Redis) can make them asynchronous without changing their shape.
pub trait QuotaBudget: Send + fmt::Debug {
    /// Charges `cost` at `now` if the budget admits it.
    fn try_reserve(&mut self, now: Instant, cost: Cost) -> Result<Reservation, Refusal>;

    /// The attempt reached Azure and ended: fold in what its reply said. The charge stays
    /// (Azure does not refund an estimate).
    fn settle(&mut self, now: Instant, reservation: Reservation, feedback: &QuotaFeedback);

    /// The attempt never reached Azure (no connection, cancelled before sending): refund the
    /// charge if it still counts.
    fn release(&mut self, reservation: Reservation);

    /// The budget's state at `now`.
    fn snapshot(&self, now: Instant) -> BudgetSnapshot;

    /// The shared side of the quota, when several processes share it through Redis.
    fn shared_quota(&mut self) -> Option<&mut crate::shared::SharedQuota> {
        None
    }

    /// Other processes now send to the same quota: the server's counts hold their requests
    /// too. A budget that reads its own charges in those counts stops what only that allows.
    fn shared_with_others(&mut self) {}
}

/// The budget of an endpoint that is neither limited nor learning: admits everything (the
/// endpoint's health still cools it down on a 429).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnlimitedBudget;

impl QuotaBudget for UnlimitedBudget {
    fn try_reserve(&mut self, now: Instant, cost: Cost) -> Result<Reservation, Refusal> {
        Ok(Reservation {
            cost,
            at: now,
            id: 0,
            tokens_in_minute: cost.tokens,
            requests_in_window: cost.requests,
        })
    }

    fn settle(&mut self, _now: Instant, _reservation: Reservation, _feedback: &QuotaFeedback) {}

    fn release(&mut self, _reservation: Reservation) {}

    fn snapshot(&self, _now: Instant) -> BudgetSnapshot {
        BudgetSnapshot::default()
    }
}

/// Values and helpers the budgets' tests share.
#[cfg(test)]
mod test_support {
    use super::{Cost, QuotaBudget, QuotaFeedback, Refusal, Reservation};
    use std::time::{Duration, Instant};

    pub(super) const S: Duration = Duration::from_secs(1);
    pub(super) const MS: Duration = Duration::from_millis(1);
    /// The minute span: 60.3 s.
    pub(super) const M: Duration = Duration::from_millis(60_300);
    /// The 1 s request span: 1.02 s.
    pub(super) const W: Duration = Duration::from_millis(1_020);

    pub(super) fn cost(tokens: u64) -> Cost {
        Cost {
            requests: 1,
            tokens,
        }
    }

    pub(super) fn not_until(result: Result<Reservation, Refusal>) -> Instant {
        match result {
            Err(Refusal::NotUntil(at)) => at,
            other => panic!("expected NotUntil, got {other:?}"),
        }
    }

    /// Requests admitted and refused (429) in each minute of a [`drive`].
    #[derive(Debug, Default, PartialEq, Eq)]
    pub(super) struct Run {
        pub(super) admitted: Vec<u64>,
        pub(super) refused: Vec<u64>,
    }

    /// A backlog of jobs of `job` tokens for `minutes`: every 10 ms up to 5 try the budget;
    /// the server answers each admitted one at its arrival (`reply(elapsed, reservation)`,
    /// elapsed since the start) and the reply is settled 20 ms later.
    pub(super) fn drive(
        budget: &mut dyn QuotaBudget,
        minutes: u32,
        job: u64,
        mut reply: impl FnMut(Duration, &Reservation) -> QuotaFeedback,
    ) -> Run {
        let t0 = Instant::now();
        let mut run = Run {
            admitted: vec![0; minutes as usize],
            refused: vec![0; minutes as usize],
        };
        let mut in_flight = std::collections::VecDeque::new();
        for k in 0..minutes * 6_000 {
            let now = t0 + k * 10 * MS;
            while let Some((at, r, feedback)) = in_flight.pop_front() {
                if at > now {
                    in_flight.push_front((at, r, feedback));
                    break;
                }
                budget.settle(at, r, &feedback);
            }
            let minute = (k / 6_000) as usize;
            for _ in 0..5 {
                let Ok(r) = budget.try_reserve(now, cost(job)) else {
                    break;
                };
                let feedback = reply(now - t0, &r);
                run.admitted[minute] += 1;
                run.refused[minute] += u64::from(feedback.rate_limited_for.is_some());
                in_flight.push_back((now + 20 * MS, r, feedback));
            }
        }
        run
    }

    /// A server with fixed minute windows from the start of a [`drive`], `tpm` tokens a
    /// minute in its own units, that says what is left on every reply.
    pub(super) struct FixedMinute {
        tpm: u64,
        minute: u64,
        used: u64,
    }

    impl FixedMinute {
        pub(super) fn new(tpm: u64) -> Self {
            FixedMinute {
                tpm,
                minute: 0,
                used: 0,
            }
        }

        /// A request it charges `tokens` arrives at `elapsed`.
        pub(super) fn arrive(&mut self, elapsed: Duration, tokens: u64) -> QuotaFeedback {
            let minute = elapsed.as_secs() / 60;
            if minute != self.minute {
                (self.minute, self.used) = (minute, 0);
            }
            let fits = self.used + tokens <= self.tpm;
            if fits {
                self.used += tokens;
            }
            QuotaFeedback {
                remaining_tokens: Some(self.tpm - self.used),
                rate_limited_for: (!fits)
                    .then(|| Duration::from_secs((minute + 1) * 60).saturating_sub(elapsed)),
                ..QuotaFeedback::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{S, cost};
    use super::*;

    #[test]
    fn unlimited_admits_everything() {
        let t0 = Instant::now();
        let mut b = UnlimitedBudget;
        for _ in 0..1000 {
            b.try_reserve(t0, cost(u64::MAX)).unwrap();
        }
        assert_eq!(b.snapshot(t0), BudgetSnapshot::default());
        assert_eq!(b.snapshot(t0).token_headroom(), None);
        assert_eq!(b.snapshot(t0).headroom(t0), 1.0);
    }

    #[test]
    fn budgets_are_usable_as_trait_objects() {
        let t0 = Instant::now();
        let mut budgets: Vec<Box<dyn QuotaBudget>> = vec![
            Box::new(UnlimitedBudget),
            Box::new(WindowBudget::new(Some(60), Some(100), S)),
            Box::new(AdaptiveBudget::new(None, Some(100), S)),
        ];
        let admitted: Vec<bool> = budgets
            .iter_mut()
            .map(|b| {
                b.try_reserve(t0, cost(50)).is_ok() && b.try_reserve(t0 + S + S, cost(51)).is_ok()
            })
            .collect();
        assert_eq!(admitted, vec![true, false, false]);
    }
}
