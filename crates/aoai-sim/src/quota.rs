//! Quota accounting as Azure OpenAI documents it, with time as an input (no actix, no clock).
//!
//! - On arrival a request is charged an *estimate*: prompt tokens estimated from characters
//!   ([`estimate_prompt_tokens`]) plus `max_tokens` (or a default), times `n`/`best_of`
//!   ([`charge`]). The charge is not refunded when fewer tokens come back.
//!   Other rules Azure might follow: [`TokenCharge`] and [`charge_by`].
//! - Tokens are counted per minute window; by default windows are fixed, anchored at the
//!   simulator's start (`[0, 60 s)`, `[60 s, 120 s)`, ...); with [`QuotaWindow::Sliding`] they
//!   cover the last 60 s.
//! - Requests are counted per short window (1 s, 10 s or 60 s; fixed or sliding like the
//!   minute), allowing `RPM × window / 60` requests in each (rounded down, at least 1).
//! - A standard deployment refuses a request whose charge would take the minute over its TPM. A
//!   provisioned (PTU) one refuses only once the minute's utilisation is already over 100%.
//!
//! ```
//! use std::time::Duration;
//! use aoai_sim::quota::{DeploymentLimiter, Limits};
//!
//! // 1,000 TPM, 120 RPM enforced as 2 requests per 1 s window.
//! let mut limiter = DeploymentLimiter::new(Limits::standard(1_000, Some(120), Duration::from_secs(1)));
//! let t = Duration::from_millis(250);
//! assert!(limiter.check(t, 100).is_ok());
//! assert!(limiter.check(t, 100).is_ok());
//! let rejected = limiter.check(t, 100).unwrap_err();
//! assert_eq!(rejected.retry_after, Duration::from_millis(750)); // until the 1 s window ends
//! assert!(limiter.check(Duration::from_secs(1), 100).is_ok());
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

pub use crate::config::{QuotaWindow, TokenCharge};

/// Characters per estimated prompt token.
pub const CHARS_PER_TOKEN: u64 = 4;
/// Tokens added per message (role and framing).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens added once per request (the assistant reply's priming).
pub const TOKENS_PER_REQUEST: u64 = 3;
/// The token window.
pub const MINUTE: Duration = Duration::from_secs(60);

/// Estimate a prompt's tokens from its characters, as Azure's rate limiter does (not a
/// tokenizer): per message [`TOKENS_PER_MESSAGE`] plus its text characters (string `content`,
/// or the `text` of content parts, plus `name`) divided by [`CHARS_PER_TOKEN`], rounded up; plus
/// [`TOKENS_PER_REQUEST`].
///
/// ```
/// use aoai_sim::quota::estimate_prompt_tokens;
/// let messages = serde_json::json!([{"role": "user", "content": "12345678"}]);
/// assert_eq!(estimate_prompt_tokens(messages.as_array().unwrap()), 3 + 2 + 3);
/// ```
pub fn estimate_prompt_tokens(messages: &[Value]) -> u64 {
    let per_message: u64 = messages
        .iter()
        .map(|message| {
            let chars = text_chars(message.get("content")) + text_chars(message.get("name"));
            TOKENS_PER_MESSAGE + chars.div_ceil(CHARS_PER_TOKEN)
        })
        .sum();
    per_message + TOKENS_PER_REQUEST
}

fn text_chars(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::String(text)) => text.chars().count() as u64,
        Some(Value::Array(parts)) => parts.iter().map(|part| text_chars(part.get("text"))).sum(),
        _ => 0,
    }
}

/// The tokens a request is charged on arrival:
/// `(prompt_tokens + max_tokens) × max(n, best_of)`, where `max_tokens` falls back to
/// `default_max_tokens`.
///
/// ```
/// assert_eq!(aoai_sim::quota::charge(10, Some(100), 4096, 2, None), 220);
/// assert_eq!(aoai_sim::quota::charge(10, None, 4096, 1, Some(3)), 3 * 4106);
/// ```
pub fn charge(
    prompt_tokens: u64,
    max_tokens: Option<u64>,
    default_max_tokens: u64,
    n: u64,
    best_of: Option<u64>,
) -> u64 {
    let copies = n.max(best_of.unwrap_or(1)).max(1);
    prompt_tokens
        .saturating_add(max_tokens.unwrap_or(default_max_tokens))
        .saturating_mul(copies)
}

/// The estimate of [`TokenCharge::CharsPlusMax`]: all the messages' text characters (string
/// `content`, the `text` of content parts, `name`) divided by [`CHARS_PER_TOKEN`], rounded up
/// once.
///
/// ```
/// use aoai_sim::quota::estimate_chars_tokens;
/// let messages = serde_json::json!([
///     {"role": "system", "content": "abcde"},
///     {"role": "user", "content": "1234567"}
/// ]);
/// assert_eq!(estimate_chars_tokens(messages.as_array().unwrap()), 3); // ⌈12 / 4⌉
/// ```
pub fn estimate_chars_tokens(messages: &[Value]) -> u64 {
    let chars: u64 = messages
        .iter()
        .map(|message| text_chars(message.get("content")) + text_chars(message.get("name")))
        .sum();
    chars.div_ceil(CHARS_PER_TOKEN)
}

/// The tokens a request is charged on arrival under `mode`: its prompt part
/// ([`estimate_prompt_tokens`] for `prompt_plus_max`, nothing for `max_only`,
/// [`estimate_chars_tokens`] for `chars_plus_max`) passed to [`charge`].
///
/// ```
/// use aoai_sim::quota::{TokenCharge, charge_by};
/// let messages = serde_json::json!([{"role": "user", "content": "123456789"}]);
/// let messages = messages.as_array().unwrap();
/// assert_eq!(charge_by(TokenCharge::PromptPlusMax, messages, Some(10), 4096, 1, None), 3 + 3 + 3 + 10);
/// assert_eq!(charge_by(TokenCharge::MaxOnly, messages, Some(10), 4096, 2, None), 20);
/// assert_eq!(charge_by(TokenCharge::CharsPlusMax, messages, None, 100, 1, None), 3 + 100);
/// ```
pub fn charge_by(
    mode: TokenCharge,
    messages: &[Value],
    max_tokens: Option<u64>,
    default_max_tokens: u64,
    n: u64,
    best_of: Option<u64>,
) -> u64 {
    let prompt = match mode {
        TokenCharge::PromptPlusMax => estimate_prompt_tokens(messages),
        TokenCharge::MaxOnly => 0,
        TokenCharge::CharsPlusMax => estimate_chars_tokens(messages),
    };
    charge(prompt, max_tokens, default_max_tokens, n, best_of)
}

/// A deployment's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tokens per minute window.
    pub tpm: u64,
    /// Requests per short window; `None`: no request limit.
    pub requests_per_window: Option<u64>,
    /// The short window's length.
    pub short_window: Duration,
    /// PTU semantics: refuse only while the minute's usage is already over `tpm`.
    pub provisioned: bool,
    /// Fixed windows (anchored at zero) or sliding ones (over the last length).
    pub window: QuotaWindow,
}

impl Limits {
    /// A standard (pay-as-you-go) deployment; `rpm` becomes `rpm × window / 60` requests per
    /// short window (rounded down, at least 1).
    pub fn standard(tpm: u64, rpm: Option<u64>, short_window: Duration) -> Self {
        Limits {
            tpm,
            requests_per_window: rpm.map(|rpm| requests_per_window(rpm, short_window)),
            short_window,
            provisioned: false,
            window: QuotaWindow::Fixed,
        }
    }

    /// A provisioned (PTU) deployment.
    pub fn provisioned(tpm: u64, rpm: Option<u64>, short_window: Duration) -> Self {
        Limits {
            provisioned: true,
            ..Limits::standard(tpm, rpm, short_window)
        }
    }

    /// The same limits with fixed or sliding windows.
    pub fn with_window(self, window: QuotaWindow) -> Self {
        Limits { window, ..self }
    }
}

/// Requests allowed per short window for an RPM limit: `rpm × window / 60`, rounded down, at
/// least 1.
pub fn requests_per_window(rpm: u64, short_window: Duration) -> u64 {
    let per_window = u128::from(rpm) * short_window.as_millis() / MINUTE.as_millis();
    u64::try_from(per_window).unwrap_or(u64::MAX).max(1)
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The minute's tokens (Azure: "token rate limit").
    Tokens,
    /// The short window's requests (Azure: "call rate limit").
    Requests,
}

/// A request let through, and what is left afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Requests left in the current short window (`None`: no request limit).
    pub remaining_requests: Option<u64>,
    /// Tokens left in the current minute window.
    pub remaining_tokens: u64,
}

/// A request refused with 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Time until the refusing window(s) end.
    pub retry_after: Duration,
    /// The limit that refused it (tokens when both do).
    pub kind: LimitKind,
    /// Requests left in the current short window.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the current minute window.
    pub remaining_tokens: u64,
}

/// Per-deployment counters for the current minute and short window.
///
/// Time never goes backwards for a limiter: an `elapsed` earlier than one already seen (two
/// requests that read the clock in one order and take the lock in the other) counts as the
/// latest one seen.
#[derive(Debug, Clone)]
pub struct DeploymentLimiter {
    limits: Limits,
    latest: Duration,
    // Fixed windows.
    minute_index: u64,
    tokens_used: u64,
    short_index: u64,
    requests_in_window: u64,
    // Sliding windows: admissions (time, tokens) in the last minute and (time) in the last
    // short window, oldest first.
    minute_log: VecDeque<(Duration, u64)>,
    short_log: VecDeque<Duration>,
}

impl DeploymentLimiter {
    /// A limiter with empty windows.
    pub fn new(limits: Limits) -> Self {
        DeploymentLimiter {
            limits,
            latest: Duration::ZERO,
            minute_index: 0,
            tokens_used: 0,
            short_index: 0,
            requests_in_window: 0,
            minute_log: VecDeque::new(),
            short_log: VecDeque::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admit or refuse a request arriving `elapsed` after the simulator started, charged
    /// `cost_tokens`. An admitted request is counted; a refused one is not.
    pub fn check(&mut self, elapsed: Duration, cost_tokens: u64) -> Result<Admitted, Rejected> {
        let elapsed = self.advance(elapsed);
        let limits = self.limits;
        let tokens_ok = if limits.provisioned {
            self.tokens_used <= limits.tpm
        } else {
            self.tokens_used.saturating_add(cost_tokens) <= limits.tpm
        };
        let requests_ok = limits
            .requests_per_window
            .is_none_or(|allowed| self.requests_in_window < allowed);
        if tokens_ok && requests_ok {
            self.tokens_used = self.tokens_used.saturating_add(cost_tokens);
            self.requests_in_window += 1;
            if limits.window == QuotaWindow::Sliding {
                self.minute_log.push_back((elapsed, cost_tokens));
                self.short_log.push_back(elapsed);
            }
            return Ok(Admitted {
                remaining_requests: self.remaining_requests(),
                remaining_tokens: self.remaining_tokens(),
            });
        }
        let minute_wait = self.tokens_wait(elapsed, cost_tokens);
        let short_wait = self.requests_wait(elapsed);
        let (retry_after, kind) = match (tokens_ok, requests_ok) {
            (false, false) => (minute_wait.max(short_wait), LimitKind::Tokens),
            (false, true) => (minute_wait, LimitKind::Tokens),
            _ => (short_wait, LimitKind::Requests),
        };
        Err(Rejected {
            retry_after,
            kind,
            remaining_requests: self.remaining_requests(),
            remaining_tokens: self.remaining_tokens(),
        })
    }

    /// The first instant after `elapsed` at which some usage leaves a window (a fixed window
    /// turns, or an admission slides out), or `None` when nothing is counted: until then, a
    /// request refused at `elapsed` is refused again.
    pub fn next_release(&mut self, elapsed: Duration) -> Option<Duration> {
        let elapsed = self.advance(elapsed);
        match self.limits.window {
            QuotaWindow::Fixed => {
                let counted = |used: bool, window: Duration| {
                    used.then(|| elapsed + time_to_window_end(elapsed, window))
                };
                let short = counted(self.requests_in_window > 0, self.limits.short_window);
                let minute = counted(self.tokens_used > 0, MINUTE);
                short.into_iter().chain(minute).min()
            }
            QuotaWindow::Sliding => {
                let minute = self.minute_log.front().map(|&(at, _)| at + MINUTE);
                let short = self
                    .short_log
                    .front()
                    .map(|&at| at + self.limits.short_window);
                short.into_iter().chain(minute).min()
            }
        }
    }

    /// Move time forward to `elapsed` (never back) and drop what left the windows; returns the
    /// time in force.
    fn advance(&mut self, elapsed: Duration) -> Duration {
        let elapsed = elapsed.max(self.latest);
        self.latest = elapsed;
        match self.limits.window {
            QuotaWindow::Fixed => {
                let minute = window_index(elapsed, MINUTE);
                if minute != self.minute_index {
                    self.minute_index = minute;
                    self.tokens_used = 0;
                }
                let short = window_index(elapsed, self.limits.short_window);
                if short != self.short_index {
                    self.short_index = short;
                    self.requests_in_window = 0;
                }
            }
            QuotaWindow::Sliding => {
                while let Some(&(at, tokens)) = self.minute_log.front() {
                    if elapsed < at + MINUTE {
                        break;
                    }
                    self.minute_log.pop_front();
                    self.tokens_used -= tokens;
                }
                while let Some(&at) = self.short_log.front() {
                    if elapsed < at + self.limits.short_window {
                        break;
                    }
                    self.short_log.pop_front();
                    self.requests_in_window -= 1;
                }
            }
        }
        elapsed
    }

    /// How long until a refused charge of `cost` could pass the token limit (fixed: the minute's
    /// end; sliding: until enough of the minute's admissions have slid out, or all of them when
    /// even an empty minute would not take it).
    fn tokens_wait(&self, elapsed: Duration, cost: u64) -> Duration {
        if self.limits.window == QuotaWindow::Fixed {
            return time_to_window_end(elapsed, MINUTE);
        }
        let tpm = self.limits.tpm;
        let mut used = self.tokens_used;
        let mut last = None;
        for &(at, tokens) in &self.minute_log {
            let fits = if self.limits.provisioned {
                used <= tpm
            } else {
                used.saturating_add(cost) <= tpm
            };
            if fits {
                break;
            }
            used -= tokens;
            last = Some(at);
        }
        last.map_or(MINUTE, |at| (at + MINUTE).saturating_sub(elapsed))
    }

    /// How long until a request could pass the request limit (fixed: the short window's end;
    /// sliding: until the oldest admission that must go has slid out).
    fn requests_wait(&self, elapsed: Duration) -> Duration {
        let window = self.limits.short_window;
        if self.limits.window == QuotaWindow::Fixed {
            return time_to_window_end(elapsed, window);
        }
        let allowed = self.limits.requests_per_window.unwrap_or(u64::MAX);
        let must_go = self
            .requests_in_window
            .saturating_sub(allowed.saturating_sub(1));
        let index = usize::try_from(must_go)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        self.short_log
            .get(index)
            .map_or(window, |&at| (at + window).saturating_sub(elapsed))
    }

    fn remaining_requests(&self) -> Option<u64> {
        self.limits
            .requests_per_window
            .map(|allowed| allowed.saturating_sub(self.requests_in_window))
    }

    fn remaining_tokens(&self) -> u64 {
        self.limits.tpm.saturating_sub(self.tokens_used)
    }
}

fn window_index(elapsed: Duration, window: Duration) -> u64 {
    let window = window.as_nanos().max(1);
    u64::try_from(elapsed.as_nanos() / window).unwrap_or(u64::MAX)
}

/// Time from `elapsed` to the end of the window (anchored at zero) that contains it.
pub fn time_to_window_end(elapsed: Duration, window: Duration) -> Duration {
    let window_nanos = window.as_nanos().max(1);
    let into_window = elapsed.as_nanos() % window_nanos;
    let remaining = window_nanos - into_window;
    Duration::from_nanos(u64::try_from(remaining).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SECOND: Duration = Duration::from_secs(1);

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn prompt_estimate_counts_characters_per_message() {
        let messages = json!([
            {"role": "system", "content": "abcd"},             // 3 + 1
            {"role": "user", "content": "abcde", "name": "x"},  // 3 + ceil(6/4) = 5
            {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}, {"type": "image_url"}]}, // 3 + 2
            {"role": "assistant"}                                // 3
        ]);
        let messages = messages.as_array().cloned().unwrap_or_default();
        assert_eq!(
            estimate_prompt_tokens(&messages),
            4 + 5 + 5 + 3 + TOKENS_PER_REQUEST
        );
        // Characters, not bytes: four 3-byte characters are one token.
        let unicode = json!([{"role": "user", "content": "€€€€"}]);
        let unicode = unicode.as_array().cloned().unwrap_or_default();
        assert_eq!(estimate_prompt_tokens(&unicode), 3 + 1 + 3);
    }

    #[test]
    fn charge_uses_default_and_copies() {
        assert_eq!(charge(20, None, 4096, 1, None), 4116);
        assert_eq!(charge(20, Some(80), 4096, 3, None), 300);
        assert_eq!(charge(20, Some(80), 4096, 2, Some(5)), 500);
        assert_eq!(charge(20, Some(80), 4096, 0, None), 100);
        assert_eq!(charge(u64::MAX, Some(1), 1, 2, None), u64::MAX);
    }

    #[test]
    fn requests_per_window_follows_the_short_window() {
        assert_eq!(requests_per_window(360, SECOND), 6);
        assert_eq!(requests_per_window(360, ms(10_000)), 60);
        assert_eq!(requests_per_window(100, SECOND), 1);
        assert_eq!(requests_per_window(30, SECOND), 1);
        assert_eq!(requests_per_window(100, ms(10_000)), 16);
    }

    #[test]
    fn exactly_the_tpm_fits_in_a_minute_then_429_until_the_boundary() {
        let mut limiter = DeploymentLimiter::new(Limits::standard(1_000, None, SECOND));
        for i in 0..10 {
            let admitted = limiter.check(ms(1_000 + i), 100);
            assert_eq!(
                admitted,
                Ok(Admitted {
                    remaining_requests: None,
                    remaining_tokens: 900 - 100 * i
                })
            );
        }
        let rejected = limiter.check(ms(20_000), 1).unwrap_err();
        assert_eq!(rejected.kind, LimitKind::Tokens);
        assert_eq!(rejected.retry_after, ms(40_000));
        assert_eq!(rejected.remaining_tokens, 0);
        // Still refused a nanosecond before the boundary, and told to wait exactly that long.
        let just_before = MINUTE - Duration::from_nanos(1);
        assert_eq!(
            limiter.check(just_before, 1).unwrap_err().retry_after,
            Duration::from_nanos(1)
        );
        // The next window starts empty.
        assert_eq!(
            limiter.check(MINUTE, 1_000).map(|a| a.remaining_tokens),
            Ok(0)
        );
    }

    #[test]
    fn a_request_that_does_not_fit_is_refused_but_smaller_ones_still_fit() {
        let mut limiter = DeploymentLimiter::new(Limits::standard(1_000, None, SECOND));
        assert!(limiter.check(ms(0), 900).is_ok());
        assert!(limiter.check(ms(1), 200).is_err());
        assert_eq!(limiter.check(ms(2), 100).map(|a| a.remaining_tokens), Ok(0));
    }

    #[test]
    fn rpm_is_enforced_per_one_second_window() {
        // 120 RPM in 1 s windows: 2 per second.
        let mut limiter = DeploymentLimiter::new(Limits::standard(1_000_000, Some(120), SECOND));
        assert_eq!(
            limiter.check(ms(5_100), 1).map(|a| a.remaining_requests),
            Ok(Some(1))
        );
        assert_eq!(
            limiter.check(ms(5_200), 1).map(|a| a.remaining_requests),
            Ok(Some(0))
        );
        let rejected = limiter.check(ms(5_300), 1).unwrap_err();
        assert_eq!(rejected.kind, LimitKind::Requests);
        assert_eq!(rejected.retry_after, ms(700));
        assert_eq!(rejected.remaining_requests, Some(0));
        assert!(limiter.check(ms(6_000), 1).is_ok());
    }

    #[test]
    fn rpm_is_enforced_per_ten_second_window() {
        // 120 RPM in 10 s windows: 20 per 10 s, however they bunch up.
        let mut limiter =
            DeploymentLimiter::new(Limits::standard(1_000_000, Some(120), ms(10_000)));
        for _ in 0..20 {
            assert!(limiter.check(ms(12_000), 1).is_ok());
        }
        let rejected = limiter.check(ms(12_500), 1).unwrap_err();
        assert_eq!(rejected.retry_after, ms(7_500));
        assert!(limiter.check(ms(19_999), 1).is_err());
        assert!(limiter.check(ms(20_000), 1).is_ok());
    }

    #[test]
    fn refused_requests_are_not_counted() {
        let mut limiter = DeploymentLimiter::new(Limits::standard(100, Some(60), SECOND));
        assert!(limiter.check(ms(0), 50).is_ok());
        assert!(limiter.check(ms(1), 50).is_err()); // request limit (1 per second)
        assert_eq!(
            limiter.check(ms(1_000), 50),
            Ok(Admitted {
                remaining_requests: Some(0),
                remaining_tokens: 0
            })
        );
    }

    #[test]
    fn both_limits_wait_for_the_later_window() {
        // 6 RPM in 10 s windows: 1 request per 10 s.
        let mut limiter = DeploymentLimiter::new(Limits::standard(100, Some(6), ms(10_000)));
        assert!(limiter.check(ms(45_000), 100).is_ok());
        let rejected = limiter.check(ms(46_000), 1).unwrap_err();
        assert_eq!(rejected.kind, LimitKind::Tokens);
        assert_eq!(rejected.retry_after, ms(14_000));
        // In the next short window only the tokens refuse, still until the minute ends.
        assert_eq!(
            limiter.check(ms(50_000), 1).unwrap_err().retry_after,
            ms(10_000)
        );
    }

    #[test]
    fn provisioned_refuses_only_once_over_full_utilisation() {
        let mut limiter = DeploymentLimiter::new(Limits::provisioned(1_000, None, SECOND));
        assert!(limiter.check(ms(0), 600).is_ok());
        // Would exceed the quota, but utilisation is only 60%: admitted (PTU semantics).
        assert_eq!(limiter.check(ms(1), 600).map(|a| a.remaining_tokens), Ok(0));
        let rejected = limiter.check(ms(2), 1).unwrap_err();
        assert_eq!(rejected.kind, LimitKind::Tokens);
        assert_eq!(rejected.retry_after, MINUTE - ms(2));
        assert!(limiter.check(MINUTE, 1).is_ok());

        // Exactly 100% is not over 100%.
        let mut limiter = DeploymentLimiter::new(Limits::provisioned(1_000, None, SECOND));
        assert!(limiter.check(ms(0), 1_000).is_ok());
        assert!(limiter.check(ms(0), 1).is_ok());
        assert!(limiter.check(ms(0), 1).is_err());
    }

    fn sliding(tpm: u64, rpm: Option<u64>, window: Duration) -> DeploymentLimiter {
        DeploymentLimiter::new(Limits::standard(tpm, rpm, window).with_window(QuotaWindow::Sliding))
    }

    #[test]
    fn charge_rules_differ_only_in_the_prompt_part() {
        let messages = json!([
            {"role": "system", "content": "abcde"},  // 5 chars
            {"role": "user", "content": "1234567"}   // 7 chars
        ]);
        let messages = messages.as_array().cloned().unwrap_or_default();
        // Per message: 3 + ⌈5/4⌉ = 5 and 3 + ⌈7/4⌉ = 5, plus 3: 13. Characters: ⌈12/4⌉ = 3.
        assert_eq!(estimate_prompt_tokens(&messages), 13);
        assert_eq!(estimate_chars_tokens(&messages), 3);
        let by = |mode| charge_by(mode, &messages, Some(100), 4096, 1, None);
        assert_eq!(by(TokenCharge::PromptPlusMax), 113);
        assert_eq!(by(TokenCharge::MaxOnly), 100);
        assert_eq!(by(TokenCharge::CharsPlusMax), 103);
        // n / best_of and the default max_tokens apply to every rule.
        assert_eq!(
            charge_by(TokenCharge::MaxOnly, &messages, None, 50, 2, Some(3)),
            150
        );
        assert_eq!(
            charge_by(TokenCharge::CharsPlusMax, &messages, Some(7), 50, 2, None),
            20
        );
        assert_eq!(
            charge_by(TokenCharge::PromptPlusMax, &messages, Some(7), 50, 1, None),
            charge(13, Some(7), 50, 1, None)
        );
    }

    #[test]
    fn a_sliding_minute_frees_each_charge_sixty_seconds_after_it() {
        let mut limiter = sliding(300, None, SECOND);
        assert!(limiter.check(ms(0), 100).is_ok());
        assert!(limiter.check(ms(20_000), 100).is_ok());
        assert_eq!(
            limiter.check(ms(40_000), 100).map(|a| a.remaining_tokens),
            Ok(0)
        );
        // 150 needs the first two charges gone: until 20 s + 60 s.
        let rejected = limiter.check(ms(50_000), 150).unwrap_err();
        assert_eq!(rejected.kind, LimitKind::Tokens);
        assert_eq!(rejected.retry_after, ms(30_000));
        assert_eq!(rejected.remaining_tokens, 0);
        // 100 needs only the first: until 60 s. Not a nanosecond before.
        let rejected = limiter.check(ms(50_000), 100).unwrap_err();
        assert_eq!(rejected.retry_after, ms(10_000));
        assert!(
            limiter
                .check(MINUTE - Duration::from_nanos(1), 100)
                .is_err()
        );
        // At 60 s the minute is 20 s..60 s: 200 used. No fixed turn empties it.
        assert_eq!(
            limiter.check(MINUTE, 100).map(|a| a.remaining_tokens),
            Ok(0)
        );
        assert_eq!(
            limiter.check(ms(80_000), 100).map(|a| a.remaining_tokens),
            Ok(0)
        );
        // A charge larger than the TPM: refused, told to wait until everything (the last
        // admitted at 80 s) slid out.
        assert_eq!(
            limiter.check(ms(80_000), 301).unwrap_err().retry_after,
            MINUTE
        );
    }

    #[test]
    fn a_sliding_request_window_counts_the_last_length() {
        // 120 RPM in 10 s windows: 20 in any 10 s.
        let mut limiter = sliding(1_000_000, Some(120), ms(10_000));
        for i in 0..20 {
            let at = ms(5_000 + 100 * i);
            assert_eq!(
                limiter.check(at, 1).map(|a| a.remaining_requests),
                Ok(Some(19 - i))
            );
        }
        // At 10 s a fixed window would turn; the sliding one still holds all 20.
        let rejected = limiter.check(ms(10_000), 1).unwrap_err();
        assert_eq!(rejected.kind, LimitKind::Requests);
        assert_eq!(rejected.retry_after, ms(5_000));
        // The first slides out at 15 s: one more, then the next at 15.1 s.
        assert_eq!(
            limiter.check(ms(15_000), 1).map(|a| a.remaining_requests),
            Ok(Some(0))
        );
        assert_eq!(
            limiter.check(ms(15_000), 1).unwrap_err().retry_after,
            ms(100)
        );
        assert!(limiter.check(ms(15_100), 1).is_ok());
    }

    #[test]
    fn sixty_second_request_windows_allow_the_whole_rpm_at_once() {
        let mut limiter = DeploymentLimiter::new(Limits::standard(1_000_000, Some(90), MINUTE));
        for _ in 0..90 {
            assert!(limiter.check(ms(30_000), 1).is_ok());
        }
        assert_eq!(
            limiter.check(ms(30_000), 1).unwrap_err().retry_after,
            ms(30_000)
        );
        assert!(limiter.check(MINUTE, 1).is_ok());
    }

    #[test]
    fn a_sliding_provisioned_minute_refuses_while_over_full_utilisation() {
        let limits = Limits::provisioned(1_000, None, SECOND).with_window(QuotaWindow::Sliding);
        let mut limiter = DeploymentLimiter::new(limits);
        assert!(limiter.check(ms(0), 600).is_ok());
        assert!(limiter.check(ms(10_000), 600).is_ok());
        // 1,200 used: refused until the 600 of 0 s slides out.
        assert_eq!(
            limiter.check(ms(30_000), 1).unwrap_err().retry_after,
            ms(30_000)
        );
        assert!(limiter.check(MINUTE, 1).is_ok());
    }

    #[test]
    fn next_release_is_the_next_instant_usage_drops() {
        let mut fixed = DeploymentLimiter::new(Limits::standard(1_000, Some(120), SECOND));
        assert_eq!(fixed.next_release(ms(500)), None);
        assert!(fixed.check(ms(1_500), 10).is_ok());
        assert_eq!(fixed.next_release(ms(1_700)), Some(ms(2_000)));
        // Only the minute's tokens are left counted after the second turns.
        assert_eq!(fixed.next_release(ms(2_000)), Some(MINUTE));
        assert_eq!(fixed.next_release(MINUTE), None);

        let mut slide = sliding(1_000, Some(120), SECOND);
        assert!(slide.check(ms(1_500), 10).is_ok());
        assert!(slide.check(ms(1_800), 10).is_ok());
        assert_eq!(slide.next_release(ms(1_900)), Some(ms(2_500)));
        assert_eq!(slide.next_release(ms(2_500)), Some(ms(2_800)));
        assert_eq!(slide.next_release(ms(2_800)), Some(ms(61_500)));
        assert_eq!(slide.next_release(ms(61_500)), Some(ms(61_800)));
        assert_eq!(slide.next_release(ms(61_800)), None);
    }

    #[test]
    fn time_never_goes_backwards_for_a_limiter() {
        // A request that read the clock before the minute turned but took the lock after one
        // that read it after: counted in the new minute, not resetting it again.
        let mut limiter = DeploymentLimiter::new(Limits::standard(1_000, None, SECOND));
        assert!(limiter.check(MINUTE, 900).is_ok());
        assert_eq!(
            limiter
                .check(MINUTE - ms(1), 100)
                .map(|a| a.remaining_tokens),
            Ok(0)
        );
        assert!(limiter.check(MINUTE - ms(1), 1).is_err());
    }

    #[test]
    fn time_to_window_end_is_exact() {
        assert_eq!(time_to_window_end(ms(0), SECOND), SECOND);
        assert_eq!(time_to_window_end(ms(999), SECOND), ms(1));
        assert_eq!(time_to_window_end(ms(61_000), MINUTE), ms(59_000));
    }

    proptest! {
        // A fixed seed: the same cases on every run, so a red CI always means a real change.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_2026),
            ..ProptestConfig::default()
        })]
        #[test]
        fn admitted_tokens_and_requests_never_exceed_a_window(
            tpm in 1u64..5_000,
            rpm in 1u64..600,
            window_secs in prop_oneof![Just(1u64), Just(10), Just(60)],
            arrivals in proptest::collection::vec((0u64..500, 1u64..800), 1..300),
        ) {
            let window = Duration::from_secs(window_secs);
            let allowed = requests_per_window(rpm, window);
            let mut limiter = DeploymentLimiter::new(Limits::standard(tpm, Some(rpm), window));
            let mut now = Duration::ZERO;
            let mut minute_tokens = std::collections::HashMap::<u64, u64>::new();
            let mut window_requests = std::collections::HashMap::<u64, u64>::new();
            for (gap_ms, cost) in arrivals {
                now += ms(gap_ms);
                match limiter.check(now, cost) {
                    Ok(_) => {
                        *minute_tokens.entry(window_index(now, MINUTE)).or_default() += cost;
                        *window_requests.entry(window_index(now, window)).or_default() += 1;
                    }
                    Err(rejected) => {
                        prop_assert!(rejected.retry_after > Duration::ZERO);
                        prop_assert!(rejected.retry_after <= MINUTE);
                        // Waiting the advised time always lands in a later window.
                        let later = now + rejected.retry_after;
                        let refusing_window = match rejected.kind {
                            LimitKind::Tokens => MINUTE,
                            LimitKind::Requests => window,
                        };
                        prop_assert!(window_index(later, refusing_window) > window_index(now, refusing_window));
                    }
                }
            }
            prop_assert!(minute_tokens.values().all(|&used| used <= tpm));
            prop_assert!(window_requests.values().all(|&count| count <= allowed));
        }

        #[test]
        fn sliding_windows_never_hold_more_than_the_limits_and_retry_after_is_exact(
            tpm in 1u64..5_000,
            rpm in 1u64..600,
            window_secs in prop_oneof![Just(1u64), Just(10), Just(60)],
            arrivals in proptest::collection::vec((0u64..3_000, 1u64..800), 1..300),
        ) {
            let window = Duration::from_secs(window_secs);
            let allowed = requests_per_window(rpm, window);
            let limits = Limits::standard(tpm, Some(rpm), window).with_window(QuotaWindow::Sliding);
            let mut limiter = DeploymentLimiter::new(limits);
            let mut admitted: Vec<(Duration, u64)> = Vec::new();
            let mut now = Duration::ZERO;
            fn in_last(
                log: &[(Duration, u64)],
                at: Duration,
                length: Duration,
            ) -> impl Iterator<Item = u64> + '_ {
                log.iter()
                    .filter(move |(when, _)| at < *when + length)
                    .map(|&(_, cost)| cost)
            }
            for (gap_ms, cost) in arrivals {
                now += ms(gap_ms);
                match limiter.check(now, cost) {
                    Ok(_) => {
                        admitted.push((now, cost));
                        prop_assert!(in_last(&admitted, now, MINUTE).sum::<u64>() <= tpm);
                        prop_assert!(in_last(&admitted, now, window).count() as u64 <= allowed);
                    }
                    Err(rejected) => {
                        prop_assert!(rejected.retry_after > Duration::ZERO);
                        prop_assert!(rejected.retry_after <= MINUTE);
                        if cost <= tpm {
                            // Admitted after the advised wait, and not a nanosecond before.
                            let mut later = limiter.clone();
                            prop_assert!(later.check(now + rejected.retry_after, cost).is_ok());
                            let mut sooner = limiter.clone();
                            let just_before = now + rejected.retry_after - Duration::from_nanos(1);
                            prop_assert!(sooner.check(just_before, cost).is_err());
                        }
                    }
                }
            }
        }
    }
}
