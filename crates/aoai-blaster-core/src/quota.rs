//! Quota budgets: sending at the rate Azure allows, by Azure's own accounting.
//!
//! Why charge on arrival, like Azure: Azure does not wait for a reply to count a request. When a
//! request arrives it adds an *estimate* to the deployment's running count for the minute: the
//! prompt's tokens plus `max_tokens` (times `n`/`best_of`), and it never refunds the difference
//! when fewer tokens come back. Requests are counted over short windows (1 s or 10 s), so a
//! 600 RPM deployment refuses the 11th request within one second. A client that paces by the
//! tokens it was billed, or by RPM per minute, is always ahead of what Azure will accept, and
//! learns of it from 429s. A budget that charges the same estimate at the same moment, over the
//! same windows, admits exactly what Azure would: a batch then runs at the quota's physical limit
//! with almost no 429s.
//!
//! Why a trait: today each endpoint's budget lives in the Dispatcher's memory
//! ([`WindowBudget`], or [`UnlimitedBudget`] when no limits are configured); later several
//! processes will share a deployment's quota through Redis. [`QuotaBudget`]'s methods take owned
//! values and return plain results, so they can become asynchronous without changing their
//! shape: reserve the estimate before sending, settle with what the reply taught us (Azure's
//! `x-ratelimit-remaining-*`, a 429's wait), release when the attempt never reached Azure.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use aoai_blaster_core::quota::{Cost, QuotaBudget, Refusal, WindowBudget};
//!
//! let start = Instant::now();
//! // 1,000 TPM, 6 RPM counted per 10 s window (1 request per window).
//! let mut budget = WindowBudget::new(start, Some(6), Some(1_000), Duration::from_secs(10));
//! let first = budget.try_reserve(start, Cost { requests: 1, tokens: 400 }).unwrap();
//! // A second request in the same 10 s window must wait for the next one.
//! assert_eq!(
//!     budget.try_reserve(start, Cost { requests: 1, tokens: 400 }).unwrap_err(),
//!     Refusal::NotUntil(start + Duration::from_secs(10))
//! );
//! // More than the whole minute's tokens can never be admitted.
//! assert!(matches!(
//!     budget.try_reserve(start, Cost { requests: 1, tokens: 1_001 }),
//!     Err(Refusal::NeverFits { tokens: 1_001, capacity: 1_000 })
//! ));
//! # drop(first);
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use crate::classify::{AttemptOutcome, RateLimitHeaders};

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
    /// The token (minute) window it was charged to.
    pub window: u64,
    /// The short request window it was charged to.
    pub request_window: u64,
}

/// Why a budget does not admit a cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not now; try again at this instant (which is always later than the `now` asked about;
    /// another refusal may follow if others got there first).
    NotUntil(Instant),
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
    /// Tokens the reply's `usage` reports (not refunded: Azure does not; kept for adaptive
    /// budgets and statistics).
    pub used_tokens: Option<u64>,
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
            used_tokens,
        }
    }
}

/// A budget's state at an instant, for reports and for strategies that compare headroom.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// The configured RPM limit.
    pub rpm_limit: Option<u32>,
    /// The configured TPM limit.
    pub tpm_limit: Option<u64>,
    /// Tokens charged in the current minute window.
    pub tokens_this_minute: u64,
    /// Requests charged in the current minute window.
    pub requests_this_minute: u32,
    /// Requests charged in the current short request window.
    pub requests_this_window: u32,
    /// Requests the short window admits.
    pub requests_per_window: Option<u32>,
    /// Admitting nothing until then (a 429's wait).
    pub blocked_until: Option<Instant>,
}

impl BudgetSnapshot {
    /// The share of this minute's tokens still free, from 0.0 to 1.0 (`None` without a TPM
    /// limit). Used by the `capacity` strategy.
    pub fn token_headroom(&self) -> Option<f64> {
        let limit = self.tpm_limit?;
        if limit == 0 {
            return Some(0.0);
        }
        let free = limit.saturating_sub(self.tokens_this_minute);
        Some(free as f64 / limit as f64)
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
    /// charge if its windows are still current.
    fn release(&mut self, reservation: Reservation);

    /// The budget's state at `now`.
    fn snapshot(&self, now: Instant) -> BudgetSnapshot;
}

/// The budget of an endpoint with no limits configured: admits everything. (Adaptive learning
/// from `x-ratelimit-*` and 429s comes with issue 5; the endpoint's health still cools it down
/// on a 429.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnlimitedBudget;

impl QuotaBudget for UnlimitedBudget {
    fn try_reserve(&mut self, now: Instant, cost: Cost) -> Result<Reservation, Refusal> {
        Ok(Reservation {
            cost,
            at: now,
            window: 0,
            request_window: 0,
        })
    }

    fn settle(&mut self, _now: Instant, _reservation: Reservation, _feedback: &QuotaFeedback) {}

    fn release(&mut self, _reservation: Reservation) {}

    fn snapshot(&self, _now: Instant) -> BudgetSnapshot {
        BudgetSnapshot::default()
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// A budget that counts like Azure: tokens per minute window, requests per short window.
///
/// - Minute windows are anchored at `start`: `[start + 60k s, start + 60(k+1) s)`. Each holds at
///   most `tpm` charged tokens and at most `rpm` requests.
/// - Request windows of `rpm_window` (Azure uses 1 s or 10 s), also anchored at `start`, hold at
///   most `max(1, floor(rpm × rpm_window / 60 s))` requests each. With few RPM and short windows
///   (6 RPM counted per second) the per-minute `rpm` bound is the one that binds.
/// - A cost is refused with [`Refusal::NotUntil`] the start of the next window that could
///   admit it, and with [`Refusal::NeverFits`] when its tokens exceed `tpm` (or `rpm` is 0).
///   A cost of more requests than a short window allows is admitted only into an empty window.
/// - Settling never refunds. Azure's `x-ratelimit-remaining-tokens`/`-requests` lower the local
///   count when Azure has seen more than we charged (other clients, a different estimate); they
///   never raise it. A 429's wait blocks the budget until it is over.
#[derive(Clone, Debug)]
pub struct WindowBudget {
    start: Instant,
    rpm: Option<u32>,
    tpm: Option<u64>,
    rpm_window: Duration,
    minute: u64,
    tokens_in_minute: u64,
    requests_in_minute: u32,
    request_window: u64,
    requests_in_window: u32,
    blocked_until: Option<Instant>,
    reported_usage: u64,
}

impl WindowBudget {
    /// A budget with windows anchored at `start`. `rpm_window` is clamped to 1 ms ..= 60 s.
    /// `None` for `rpm` or `tpm` means that side is not limited.
    pub fn new(start: Instant, rpm: Option<u32>, tpm: Option<u64>, rpm_window: Duration) -> Self {
        WindowBudget {
            start,
            rpm,
            tpm,
            rpm_window: rpm_window.clamp(Duration::from_millis(1), MINUTE),
            minute: 0,
            tokens_in_minute: 0,
            requests_in_minute: 0,
            request_window: 0,
            requests_in_window: 0,
            blocked_until: None,
            reported_usage: 0,
        }
    }

    /// Requests one short window admits (`None` without an RPM limit).
    pub fn requests_per_window(&self) -> Option<u32> {
        let rpm = self.rpm?;
        let per_window = u128::from(rpm) * self.rpm_window.as_millis() / MINUTE.as_millis();
        Some(u32::try_from(per_window).unwrap_or(u32::MAX).max(1))
    }

    /// Tokens reported by replies' `usage` so far (for statistics; never refunded).
    pub fn reported_usage(&self) -> u64 {
        self.reported_usage
    }

    fn indices(&self, now: Instant) -> (u64, u64) {
        let elapsed = now.saturating_duration_since(self.start);
        let minute = elapsed.as_secs() / 60;
        let window = elapsed.as_nanos() / self.rpm_window.as_nanos().max(1);
        (minute, u64::try_from(window).unwrap_or(u64::MAX))
    }

    fn roll(&mut self, now: Instant) {
        let (minute, window) = self.indices(now);
        if minute != self.minute {
            self.minute = minute;
            self.tokens_in_minute = 0;
            self.requests_in_minute = 0;
        }
        if window != self.request_window {
            self.request_window = window;
            self.requests_in_window = 0;
        }
        if self.blocked_until.is_some_and(|until| until <= now) {
            self.blocked_until = None;
        }
    }

    fn minute_start(&self, minute: u64) -> Instant {
        self.offset(MINUTE.checked_mul(u32::try_from(minute).unwrap_or(u32::MAX)))
    }

    fn window_start(&self, window: u64) -> Instant {
        let nanos = u128::from(window) * self.rpm_window.as_nanos();
        let offset = u64::try_from(nanos).ok().map(Duration::from_nanos);
        self.offset(offset)
    }

    fn offset(&self, offset: Option<Duration>) -> Instant {
        offset
            .and_then(|d| self.start.checked_add(d))
            .unwrap_or_else(|| far_future(self.start))
    }
}

impl QuotaBudget for WindowBudget {
    fn try_reserve(&mut self, now: Instant, cost: Cost) -> Result<Reservation, Refusal> {
        if let Some(tpm) = self.tpm
            && cost.tokens > tpm
        {
            return Err(Refusal::NeverFits {
                tokens: cost.tokens,
                capacity: tpm,
            });
        }
        if self.rpm == Some(0) && cost.requests > 0 {
            return Err(Refusal::NeverFits {
                tokens: cost.tokens,
                capacity: 0,
            });
        }
        self.roll(now);
        let mut not_until: Option<Instant> = self.blocked_until;
        let mut wait_for = |instant: Instant| {
            not_until = Some(not_until.map_or(instant, |t| t.max(instant)));
        };
        if let Some(tpm) = self.tpm
            && self.tokens_in_minute.saturating_add(cost.tokens) > tpm
        {
            wait_for(self.minute_start(self.minute + 1));
        }
        if let (Some(rpm), Some(per_window)) = (self.rpm, self.requests_per_window()) {
            let window_full = self.requests_in_window > 0
                && self.requests_in_window.saturating_add(cost.requests) > per_window;
            let minute_full = self.requests_in_minute > 0
                && self.requests_in_minute.saturating_add(cost.requests) > rpm;
            if window_full {
                wait_for(self.window_start(self.request_window + 1));
            }
            if minute_full {
                wait_for(self.minute_start(self.minute + 1));
            }
        }
        if let Some(instant) = not_until {
            return Err(Refusal::NotUntil(instant));
        }
        self.tokens_in_minute = self.tokens_in_minute.saturating_add(cost.tokens);
        self.requests_in_minute = self.requests_in_minute.saturating_add(cost.requests);
        self.requests_in_window = self.requests_in_window.saturating_add(cost.requests);
        Ok(Reservation {
            cost,
            at: now,
            window: self.minute,
            request_window: self.request_window,
        })
    }

    fn settle(&mut self, now: Instant, _reservation: Reservation, feedback: &QuotaFeedback) {
        self.roll(now);
        if let Some(wait) = feedback.rate_limited_for {
            let until = now.checked_add(wait).unwrap_or_else(|| far_future(now));
            self.blocked_until = Some(self.blocked_until.map_or(until, |t| t.max(until)));
        }
        if let (Some(tpm), Some(remaining)) = (self.tpm, feedback.remaining_tokens) {
            let seen_by_azure = tpm.saturating_sub(remaining);
            self.tokens_in_minute = self.tokens_in_minute.max(seen_by_azure);
        }
        if let (Some(rpm), Some(remaining)) = (self.rpm, feedback.remaining_requests) {
            let seen_by_azure = u64::from(rpm).saturating_sub(remaining);
            let seen_by_azure = u32::try_from(seen_by_azure).unwrap_or(u32::MAX);
            self.requests_in_minute = self.requests_in_minute.max(seen_by_azure);
        }
        if let Some(used) = feedback.used_tokens {
            self.reported_usage = self.reported_usage.saturating_add(used);
        }
    }

    fn release(&mut self, reservation: Reservation) {
        let cost = reservation.cost;
        if reservation.window == self.minute {
            self.tokens_in_minute = self.tokens_in_minute.saturating_sub(cost.tokens);
            self.requests_in_minute = self.requests_in_minute.saturating_sub(cost.requests);
        }
        if reservation.request_window == self.request_window {
            self.requests_in_window = self.requests_in_window.saturating_sub(cost.requests);
        }
    }

    fn snapshot(&self, now: Instant) -> BudgetSnapshot {
        let (minute, window) = self.indices(now);
        let same_minute = minute == self.minute;
        BudgetSnapshot {
            rpm_limit: self.rpm,
            tpm_limit: self.tpm,
            tokens_this_minute: if same_minute {
                self.tokens_in_minute
            } else {
                0
            },
            requests_this_minute: if same_minute {
                self.requests_in_minute
            } else {
                0
            },
            requests_this_window: if window == self.request_window {
                self.requests_in_window
            } else {
                0
            },
            requests_per_window: self.requests_per_window(),
            blocked_until: self.blocked_until.filter(|until| *until > now),
        }
    }
}

/// As far ahead of `from` as an [`Instant`] comfortably reaches (for overflowing sums).
fn far_future(from: Instant) -> Instant {
    from.checked_add(crate::classify::MAX_RETRY_WAIT)
        .unwrap_or(from)
}

/// Tokens charged per message on top of its text (role, separators), as OpenAI's chat format
/// spends them for the gpt-4o family.
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Tokens charged once per request for the reply's priming.
pub const TOKENS_PER_REPLY: u64 = 3;

/// Tokens charged per image part (a low-detail image's cost; the estimate does not open it).
pub const TOKENS_PER_IMAGE: u64 = 85;

/// Estimates a chat request's prompt tokens from characters: for each message,
/// [`TOKENS_PER_MESSAGE`] plus a quarter of the characters of its strings (content, text parts,
/// name, tool calls; not its role), rounded up, plus [`TOKENS_PER_IMAGE`] per image part; plus
/// [`TOKENS_PER_REPLY`]. About right for English with o200k/cl100k; a real tokenizer replaces it
/// later (text in scripts without spaces, e.g. Chinese, is underestimated). For plain text
/// messages this is also the simulator's own estimate; for tool calls and images it errs high.
///
/// ```
/// use aoai_blaster_core::quota::estimate_prompt_tokens_chars;
/// use serde_json::json;
///
/// let messages = [json!({"role": "user", "content": "Say hello in French!"})]; // 20 chars
/// assert_eq!(estimate_prompt_tokens_chars(&messages), 3 + 5 + 3);
/// ```
pub fn estimate_prompt_tokens_chars(messages: &[serde_json::Value]) -> u64 {
    let per_messages: u64 = messages
        .iter()
        .map(|message| {
            let mut chars = 0u64;
            let mut images = 0u64;
            match message {
                serde_json::Value::Object(fields) => {
                    for (key, value) in fields {
                        if key != "role" {
                            count_text(value, &mut chars, &mut images);
                        }
                    }
                }
                other => count_text(other, &mut chars, &mut images),
            }
            TOKENS_PER_MESSAGE
                .saturating_add(chars.div_ceil(4))
                .saturating_add(images.saturating_mul(TOKENS_PER_IMAGE))
        })
        .fold(0u64, u64::saturating_add);
    per_messages.saturating_add(TOKENS_PER_REPLY)
}

fn count_text(value: &serde_json::Value, chars: &mut u64, images: &mut u64) {
    match value {
        serde_json::Value::String(text) => {
            *chars = chars.saturating_add(text.chars().count() as u64);
        }
        serde_json::Value::Array(items) => {
            for item in items {
                count_text(item, chars, images);
            }
        }
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                match key.as_str() {
                    // The part's type tag is no text of the prompt.
                    "type" => {}
                    "image_url" | "input_image" => *images = images.saturating_add(1),
                    _ => count_text(value, chars, images),
                }
            }
        }
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}

/// The cost Azure charges a chat request on arrival: `prompt_tokens` plus the completion
/// allowance (`max_completion_tokens` or `max_tokens`, the larger if both are given, else
/// `default_max_tokens`), all times `max(n, best_of, 1)`; one request. (Whether Azure multiplies
/// the prompt too is not documented; multiplying it is the cautious reading, and the one the
/// simulator charges.) Values that are missing or not non-negative integers count as absent.
/// Never overflows (saturates).
///
/// ```
/// use aoai_blaster_core::quota::{job_cost, Cost};
/// use serde_json::json;
///
/// let body = json!({"messages": [], "max_tokens": 100, "n": 3});
/// assert_eq!(job_cost(&body, 50, 4096), Cost { requests: 1, tokens: 3 * (50 + 100) });
/// ```
pub fn job_cost(body: &serde_json::Value, prompt_tokens: u64, default_max_tokens: u64) -> Cost {
    let field = |name: &str| body.get(name).and_then(serde_json::Value::as_u64);
    let completion = match (field("max_completion_tokens"), field("max_tokens")) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => default_max_tokens,
    };
    let choices = field("n")
        .unwrap_or(1)
        .max(field("best_of").unwrap_or(1))
        .max(1);
    Cost {
        requests: 1,
        tokens: prompt_tokens
            .saturating_add(completion)
            .saturating_mul(choices),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{ApiError, WaitSource};
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::HashMap;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn cost(tokens: u64) -> Cost {
        Cost {
            requests: 1,
            tokens,
        }
    }

    fn not_until(result: Result<Reservation, Refusal>) -> Instant {
        match result {
            Err(Refusal::NotUntil(at)) => at,
            other => panic!("expected NotUntil, got {other:?}"),
        }
    }

    #[test]
    fn tokens_fill_the_minute_and_reopen_at_the_next() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(t0, None, Some(1_000), S);
        b.try_reserve(t0, cost(600)).unwrap();
        b.try_reserve(t0 + 10 * S, cost(400)).unwrap();
        assert_eq!(not_until(b.try_reserve(t0 + 59 * S, cost(1))), t0 + 60 * S);
        // Zero-token costs still pass (only requests would limit them).
        b.try_reserve(t0 + 59 * S, cost(0)).unwrap();
        let r = b.try_reserve(t0 + 60 * S, cost(1_000)).unwrap();
        assert_eq!(r.window, 1);
        assert_eq!(r.at, t0 + 60 * S);
    }

    #[test]
    fn requests_are_spread_over_short_windows() {
        let t0 = Instant::now();
        // 600 RPM per 1 s window: 10 per second, the 11th waits for the next second.
        let mut b = WindowBudget::new(t0, Some(600), None, S);
        assert_eq!(b.requests_per_window(), Some(10));
        for k in 0..10 {
            b.try_reserve(t0 + k * 10 * MS, cost(1)).unwrap();
        }
        assert_eq!(not_until(b.try_reserve(t0 + 999 * MS, cost(1))), t0 + S);
        b.try_reserve(t0 + S, cost(1)).unwrap();
        // The same with 10 s windows: 100 per window.
        let b10 = WindowBudget::new(t0, Some(600), None, 10 * S);
        assert_eq!(b10.requests_per_window(), Some(100));
    }

    #[test]
    fn low_rpm_gets_one_request_per_window_and_never_more_than_rpm_a_minute() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(t0, Some(6), None, S);
        assert_eq!(b.requests_per_window(), Some(1));
        for k in 0..6 {
            b.try_reserve(t0 + k * S, cost(1)).unwrap();
        }
        assert_eq!(not_until(b.try_reserve(t0 + 6 * S, cost(1))), t0 + 60 * S);
        // Both bounds at once: the later instant is the answer.
        assert_eq!(not_until(b.try_reserve(t0 + 5 * S, cost(1))), t0 + 60 * S);
    }

    #[test]
    fn never_fits_above_the_whole_minute() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(t0, Some(60), Some(10_000), S);
        assert_eq!(
            b.try_reserve(t0, cost(10_001)),
            Err(Refusal::NeverFits {
                tokens: 10_001,
                capacity: 10_000
            })
        );
        b.try_reserve(t0, cost(10_000)).unwrap();
        let mut zero_rpm = WindowBudget::new(t0, Some(0), None, S);
        assert!(matches!(
            zero_rpm.try_reserve(t0, cost(5)),
            Err(Refusal::NeverFits { capacity: 0, .. })
        ));
    }

    #[test]
    fn release_refunds_only_current_windows() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(t0, Some(60), Some(1_000), S);
        let r = b.try_reserve(t0, cost(800)).unwrap();
        b.release(r);
        let snapshot = b.snapshot(t0);
        assert_eq!(
            (snapshot.tokens_this_minute, snapshot.requests_this_window),
            (0, 0)
        );
        let again = b.try_reserve(t0, cost(1_000)).unwrap();
        // Released in the next second: the request window is gone, the minute is not.
        b.try_reserve(t0 + S, cost(0)).unwrap();
        b.release(again);
        let snapshot = b.snapshot(t0 + S);
        assert_eq!(snapshot.tokens_this_minute, 0);
        assert_eq!(snapshot.requests_this_minute, 1);
        assert_eq!(snapshot.requests_this_window, 1);
        // A reservation from an old minute refunds nothing.
        let old = b.try_reserve(t0 + 2 * S, cost(500)).unwrap();
        b.try_reserve(t0 + 61 * S, cost(300)).unwrap();
        b.release(old);
        assert_eq!(b.snapshot(t0 + 61 * S).tokens_this_minute, 300);
    }

    #[test]
    fn settle_never_refunds_and_learns_from_azure() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(t0, Some(600), Some(10_000), S);
        let r = b.try_reserve(t0, cost(1_000)).unwrap();
        // The reply used 50 tokens and Azure has 9,500 left: our 1,000 stays charged.
        b.settle(
            t0 + S,
            r,
            &QuotaFeedback {
                remaining_tokens: Some(9_500),
                used_tokens: Some(50),
                ..QuotaFeedback::default()
            },
        );
        assert_eq!(b.snapshot(t0 + S).tokens_this_minute, 1_000);
        assert_eq!(b.reported_usage(), 50);
        // Azure has seen more (another client): 6,000 left means 4,000 used.
        let r = b.try_reserve(t0 + S, cost(1_000)).unwrap();
        b.settle(
            t0 + 2 * S,
            r,
            &QuotaFeedback {
                remaining_tokens: Some(6_000),
                remaining_requests: Some(590),
                ..QuotaFeedback::default()
            },
        );
        let snapshot = b.snapshot(t0 + 2 * S);
        assert_eq!(snapshot.tokens_this_minute, 4_000);
        assert_eq!(snapshot.requests_this_minute, 10);
        assert_eq!(snapshot.token_headroom(), Some(0.6));
        assert_eq!(
            not_until(b.try_reserve(t0 + 2 * S, cost(6_001))),
            t0 + 60 * S
        );
    }

    #[test]
    fn a_429_blocks_until_its_wait_is_over() {
        let t0 = Instant::now();
        let mut b = WindowBudget::new(t0, Some(600), Some(100_000), S);
        let r = b.try_reserve(t0, cost(10)).unwrap();
        let outcome = AttemptOutcome::RateLimited {
            wait: 7 * S,
            source: WaitSource::RetryAfter,
            error: ApiError {
                status: 429,
                code: None,
                message: String::new(),
            },
        };
        let feedback = QuotaFeedback::from_reply(RateLimitHeaders::default(), &outcome, None);
        assert_eq!(feedback.rate_limited_for, Some(7 * S));
        b.settle(t0 + S, r, &feedback);
        assert_eq!(b.snapshot(t0 + S).blocked_until, Some(t0 + 8 * S));
        assert_eq!(not_until(b.try_reserve(t0 + 2 * S, cost(1))), t0 + 8 * S);
        b.try_reserve(t0 + 8 * S, cost(1)).unwrap();
        assert_eq!(b.snapshot(t0 + 8 * S).blocked_until, None);
    }

    #[test]
    fn times_before_start_count_in_the_first_window() {
        let t0 = Instant::now() + 10 * S;
        let mut b = WindowBudget::new(t0, Some(60), None, S);
        let r = b.try_reserve(t0 - 5 * S, cost(1)).unwrap();
        assert_eq!((r.window, r.request_window), (0, 0));
        assert_eq!(not_until(b.try_reserve(t0 - 5 * S, cost(1))), t0 + S);
    }

    #[test]
    fn unlimited_admits_everything() {
        let t0 = Instant::now();
        let mut b = UnlimitedBudget;
        for _ in 0..1000 {
            b.try_reserve(t0, cost(u64::MAX)).unwrap();
        }
        assert_eq!(b.snapshot(t0), BudgetSnapshot::default());
        assert_eq!(b.snapshot(t0).token_headroom(), None);
    }

    #[test]
    fn budgets_are_usable_as_trait_objects() {
        let t0 = Instant::now();
        let mut budgets: Vec<Box<dyn QuotaBudget>> = vec![
            Box::new(UnlimitedBudget),
            Box::new(WindowBudget::new(t0, Some(60), Some(100), S)),
        ];
        let admitted: Vec<bool> = budgets
            .iter_mut()
            .map(|b| b.try_reserve(t0, cost(150)).is_ok())
            .collect();
        assert_eq!(admitted, vec![true, false]);
    }

    #[test]
    fn prompt_estimate_counts_text_parts_and_images() {
        let messages = [
            json!({"role": "system", "content": "You are terse."}), // 14 chars -> 4
            json!({"role": "user", "name": "ann", "content": [       // 3 + 8 chars -> 3
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]}), // "c1" + "f" + "{}" = 5 chars -> 2
        ];
        assert_eq!(
            estimate_prompt_tokens_chars(&messages),
            (3 + 4) + (3 + 3 + TOKENS_PER_IMAGE) + (3 + 2) + TOKENS_PER_REPLY
        );
        assert_eq!(estimate_prompt_tokens_chars(&[]), TOKENS_PER_REPLY);
        // Characters, not bytes: 8 accented letters are 2 tokens, not 4.
        let accented = [json!({"role": "user", "content": "éééééééé"})];
        assert_eq!(estimate_prompt_tokens_chars(&accented), 3 + 2 + 3);
    }

    #[test]
    fn job_cost_follows_azure_charging() {
        let cases = [
            (json!({}), 1_000 + 4096),
            (json!({"max_tokens": 200}), 1_000 + 200),
            (json!({"max_completion_tokens": 300}), 1_000 + 300),
            (
                json!({"max_tokens": 200, "max_completion_tokens": 300}),
                1_000 + 300,
            ),
            (json!({"max_tokens": 100, "n": 4}), 4 * 1_100),
            (json!({"max_tokens": 100, "n": 2, "best_of": 5}), 5 * 1_100),
            (json!({"max_tokens": -5, "n": "three"}), 1_000 + 4096),
            (json!({"max_tokens": 100, "n": 0}), 1_000 + 100),
        ];
        for (body, tokens) in cases {
            assert_eq!(job_cost(&body, 1_000, 4096), cost(tokens), "{body}");
        }
        let absurd = json!({"max_tokens": u64::MAX, "n": 128});
        assert_eq!(job_cost(&absurd, 10, 0).tokens, u64::MAX);
    }

    /// One step of a random workload.
    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Reserve(u64),
        ReleaseOldest,
        Feedback { remaining_tokens: u64 },
    }

    fn op(tpm: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..1500).prop_map(Op::Advance),
            6 => (0..=tpm / 2).prop_map(Op::Reserve),
            1 => Just(Op::ReleaseOldest),
            1 => (0..=tpm).prop_map(|remaining_tokens| Op::Feedback { remaining_tokens }),
        ]
    }

    proptest! {
        #[test]
        fn never_admits_more_than_the_limits_in_any_window(
            rpm in 1u32..700,
            tpm in 1u64..20_000,
            window_ms in prop::sample::select(vec![1_000u64, 10_000, 7_000]),
            ops in prop::collection::vec(op(20_000), 1..400),
        ) {
            let t0 = Instant::now();
            let rpm_window = Duration::from_millis(window_ms);
            let mut budget = WindowBudget::new(t0, Some(rpm), Some(tpm), rpm_window);
            let per_window = budget.requests_per_window().unwrap();
            let mut now = t0;
            // Net charges (admitted minus released) per minute and per request window.
            let mut tokens: HashMap<u64, u64> = HashMap::new();
            let mut minute_requests: HashMap<u64, u32> = HashMap::new();
            let mut window_requests: HashMap<u64, u32> = HashMap::new();
            let mut outstanding: Vec<Reservation> = Vec::new();
            for op in ops {
                match op {
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                    Op::Reserve(t) => match budget.try_reserve(now, cost(t)) {
                        Ok(r) => {
                            let elapsed = now - t0;
                            prop_assert_eq!(r.window, elapsed.as_secs() / 60);
                            prop_assert_eq!(
                                u128::from(r.request_window),
                                elapsed.as_millis() / u128::from(window_ms)
                            );
                            *tokens.entry(r.window).or_default() += t;
                            *minute_requests.entry(r.window).or_default() += 1;
                            *window_requests.entry(r.request_window).or_default() += 1;
                            outstanding.push(r);
                        }
                        Err(Refusal::NotUntil(at)) => prop_assert!(at > now),
                        Err(Refusal::NeverFits { tokens: need, capacity }) => {
                            prop_assert!(need > capacity);
                            prop_assert_eq!(capacity, tpm);
                        }
                    },
                    Op::ReleaseOldest => {
                        if !outstanding.is_empty() {
                            let r = outstanding.remove(0);
                            // Only a release within the same windows refunds.
                            let elapsed = now - t0;
                            if r.window == elapsed.as_secs() / 60 {
                                *tokens.entry(r.window).or_default() -= r.cost.tokens;
                                *minute_requests.entry(r.window).or_default() -= 1;
                            }
                            if u128::from(r.request_window) == elapsed.as_millis() / u128::from(window_ms) {
                                *window_requests.entry(r.request_window).or_default() -= 1;
                            }
                            budget.release(r);
                        }
                    }
                    Op::Feedback { remaining_tokens } => {
                        if let Some(r) = outstanding.first().copied() {
                            budget.settle(now, r, &QuotaFeedback {
                                remaining_tokens: Some(remaining_tokens),
                                ..QuotaFeedback::default()
                            });
                        }
                    }
                }
            }
            for (minute, used) in &tokens {
                prop_assert!(*used <= tpm, "minute {}: {} tokens > {}", minute, used, tpm);
            }
            for (minute, used) in &minute_requests {
                prop_assert!(*used <= rpm, "minute {}: {} requests > {}", minute, used, rpm);
            }
            for (window, used) in &window_requests {
                prop_assert!(*used <= per_window, "window {}: {} > {}", window, used, per_window);
            }
        }

        #[test]
        fn a_steady_stream_is_admitted_at_the_limit(
            tpm in 1_000u64..200_000,
            tokens_per_job in 100u64..1_000,
        ) {
            // Jobs every 10 ms, no RPM limit: each minute admits exactly floor(tpm / cost) jobs.
            let t0 = Instant::now();
            let mut budget = WindowBudget::new(t0, None, Some(tpm), S);
            let mut per_minute: HashMap<u64, u64> = HashMap::new();
            for k in 0..12_000u32 {
                let now = t0 + k * 10 * MS;
                if let Ok(r) = budget.try_reserve(now, cost(tokens_per_job)) {
                    *per_minute.entry(r.window).or_default() += 1;
                }
            }
            let expected = (tpm / tokens_per_job).min(6_000);
            prop_assert_eq!(per_minute.get(&0).copied().unwrap_or(0), expected);
            prop_assert_eq!(per_minute.get(&1).copied().unwrap_or(0), expected);
        }
    }
}
