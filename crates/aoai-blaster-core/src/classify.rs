//! Turning one HTTP reply (or one transport failure) into one [`AttemptOutcome`].
//!
//! Why one place: whether a failure is the job's fault (retrying it elsewhere would fail the same
//! way), the endpoint's fault (its key or deployment is wrong, so it must stop taking jobs), a
//! passing condition (timeouts, 5xx) or Azure asking us to slow down (429) decides everything
//! downstream: the endpoint's health, the job's retry, the quota budget. Deciding it in scattered
//! `match` arms is how retry storms and silent hangs happen, so the decision is made here, once,
//! on plain values (a status, a header lookup, the body bytes, the current time), and the helpers
//! on [`AttemptOutcome`] answer the questions the callers ask.
//!
//! Azure's replies are read leniently: the error body `{"error": {"code", "message"}}` when it is
//! there, a short sanitised excerpt of whatever came back when it is not (an HTML page from a
//! proxy, an empty body), and rate-limit headers that are garbage, negative or absurd are ignored
//! rather than trusted or allowed to panic.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use aoai_blaster_core::classify::{classify, AttemptOutcome, WaitSource};
//!
//! let body = br#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation
//! have exceeded token rate limit. Please retry after 7 seconds."}}"#;
//! let no_headers = |_: &str| None;
//! let outcome = classify(429, &no_headers, body, SystemTime::UNIX_EPOCH, Duration::from_secs(15));
//! match outcome {
//!     AttemptOutcome::RateLimited { wait, source, .. } => {
//!         assert_eq!(wait, Duration::from_secs(7));
//!         assert_eq!(source, WaitSource::Message);
//!     }
//!     other => panic!("expected a rate limit, got {other:?}"),
//! }
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::error_body::ApiErrorBody;

/// The longest wait any rate-limit hint is taken at: 7 days. A larger (finite, non-negative)
/// value saturates to this; the health policy's `retry_after_cap` then decides what to do with it.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest error message kept from a JSON error body, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// The longest excerpt kept from a body that is not Azure's JSON error, in characters.
pub const MAX_EXCERPT_CHARS: usize = 200;

/// An error reply from Azure (or from whatever answered in its place): status, Azure's error
/// code when it gave one, and a message a person can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status code.
    pub status: u16,
    /// Azure's `error.code` (`"content_filter"`, `"DeploymentNotFound"`, `"429"`, ...), or for
    /// a content-filter refusal the inner code when the outer one is missing.
    pub code: Option<String>,
    /// Azure's `error.message`, or a short sanitised excerpt of a body that was not Azure's
    /// JSON error (`"(empty body)"` when there was none).
    pub message: String,
}

impl ApiError {
    /// Reads an error reply's body leniently.
    ///
    /// Accepted shapes: `{"error": {"code", "message", "innererror": {"code"}}}` (Azure OpenAI;
    /// a numeric code is kept as its digits), `{"error": "text"}`, and API Management's
    /// `{"statusCode", "message"}`, read by [`ApiErrorBody::from_reply_body`] (the parser the
    /// stream's error events use too); a missing message reads `(no message)`. Anything else
    /// becomes an excerpt of at most
    /// [`MAX_EXCERPT_CHARS`] characters, with HTML tags and control characters removed.
    pub fn from_body(status: u16, body: &[u8]) -> ApiError {
        match ApiErrorBody::from_reply_body(body) {
            Some(error) => ApiError {
                status,
                code: error.code_or_inner(),
                // A message of only spaces or control characters cleans to nothing: none.
                message: match clean_text(&error.message, MAX_MESSAGE_CHARS) {
                    message if message.is_empty() => "(no message)".to_owned(),
                    message => message,
                },
            },
            None => ApiError {
                status,
                code: None,
                message: body_excerpt(body),
            },
        }
    }

    /// The code, or `""` when Azure gave none.
    pub fn code_str(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }

    /// The code when it says more than the status does (Azure often repeats the status as the
    /// code: `"429"`, `"401"`).
    fn informative_code(&self) -> Option<&str> {
        self.code
            .as_deref()
            .filter(|code| code.parse::<u16>().ok() != Some(self.status))
    }
}

impl fmt::Display for ApiError {
    /// `HTTP 400 content_filter: The response was filtered ...` (a code that only repeats the
    /// status is left out: `HTTP 429: Requests to ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.informative_code() {
            Some(code) => write!(f, "HTTP {} {}: {}", self.status, code, self.message),
            None => write!(f, "HTTP {}: {}", self.status, self.message),
        }
    }
}

/// Where a rate-limit wait came from (reported with the wait, so a surprising cooldown can be
/// traced to the header or message that asked for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitSource {
    /// The `retry-after-ms` header, or else `x-ms-retry-after-ms` (milliseconds, possibly
    /// fractional).
    RetryAfterMs,
    /// The `retry-after` header as a number of seconds.
    RetryAfter,
    /// The `retry-after` header as an HTTP date.
    RetryAfterDate,
    /// "retry after N seconds" in the error message.
    Message,
    /// None of the above: the configured `rate_limit_fallback`.
    Fallback,
}

impl fmt::Display for WaitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitSource::RetryAfterMs => "Retry-After-Ms",
            WaitSource::RetryAfter => "Retry-After",
            WaitSource::RetryAfterDate => "Retry-After date",
            WaitSource::Message => "error message",
            WaitSource::Fallback => "rate_limit_fallback",
        })
    }
}

/// A failure worth retrying, during which the endpoint should be backed off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransientKind {
    /// No reply (or no complete reply) in time; the text says which timeout and how long.
    Timeout(String),
    /// The connection could not be made (refused, reset, DNS, TLS).
    Connect(String),
    /// The server answered 408, 425 or 5xx.
    Server(ApiError),
    /// A 2xx reply whose body could not be read as a chat completion (or a 1xx reply).
    InvalidReply(String),
    /// A stream ended or broke before it was complete.
    StreamCut(String),
    /// Anything else that is worth another try.
    Other(String),
}

impl TransientKind {
    /// A timeout described uniformly: `timeout after 120s`.
    pub fn timeout_after(limit: Duration) -> TransientKind {
        TransientKind::Timeout(format!("after {}", format_duration(limit)))
    }
}

impl fmt::Display for TransientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransientKind::Timeout(detail) => write!(f, "timeout {detail}"),
            TransientKind::Connect(detail) => write!(f, "connection failed: {detail}"),
            TransientKind::Server(error) => write!(f, "{error}"),
            TransientKind::InvalidReply(detail) => write!(f, "invalid reply: {detail}"),
            TransientKind::StreamCut(detail) => write!(f, "stream cut: {detail}"),
            TransientKind::Other(detail) => write!(f, "{detail}"),
        }
    }
}

/// What one attempt of a job on one endpoint came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx reply; the caller parses the body.
    Success,
    /// HTTP 429: cool the endpoint down for `wait`; the job goes back to the queue and the
    /// attempt does not count against `max_job_retry`.
    RateLimited {
        /// How long Azure asked us to wait (at most [`MAX_RETRY_WAIT`]).
        wait: Duration,
        /// Where `wait` came from.
        source: WaitSource,
        /// The reply itself.
        error: ApiError,
    },
    /// Worth another try (preferably elsewhere); the endpoint backs off.
    Transient(TransientKind),
    /// The job itself was refused (400 including `content_filter` and
    /// `context_length_exceeded`, 413, 422, other 4xx): retrying cannot help.
    JobFatal(ApiError),
    /// The reply (plain or streamed) was larger than `max_reply_bytes`: fatal for the job, with
    /// no HTTP error to show (a 2xx came back; its body was not kept). Another attempt would
    /// download as large a reply again, so it is not retried; the endpoint itself is fine.
    ReplyTooLarge {
        /// The `max_reply_bytes` in force, in bytes.
        limit: u64,
    },
    /// The endpoint cannot serve anything (401/403: credentials; 404: deployment missing; a
    /// redirect: wrong `endpoint`): disable it; the job may still succeed elsewhere.
    EndpointFatal {
        /// What is wrong and what to fix, for the disabled endpoint's report.
        reason: String,
        /// The reply itself.
        error: ApiError,
    },
}

impl AttemptOutcome {
    /// The same outcome with every text that came from upstream passed through
    /// [`crate::secret::redact`]: an error body that echoes the request's headers must not carry
    /// a key into logs, reports or output files.
    pub fn redacted(self) -> AttemptOutcome {
        fn text(value: String) -> String {
            match crate::secret::redact(&value) {
                std::borrow::Cow::Borrowed(_) => value,
                std::borrow::Cow::Owned(clean) => clean,
            }
        }
        fn api(error: ApiError) -> ApiError {
            ApiError {
                status: error.status,
                code: error.code.map(text),
                message: text(error.message),
            }
        }
        match self {
            AttemptOutcome::RateLimited {
                wait,
                source,
                error,
            } => AttemptOutcome::RateLimited {
                wait,
                source,
                error: api(error),
            },
            AttemptOutcome::Transient(kind) => AttemptOutcome::Transient(match kind {
                TransientKind::Timeout(detail) => TransientKind::Timeout(text(detail)),
                TransientKind::Connect(detail) => TransientKind::Connect(text(detail)),
                TransientKind::Server(error) => TransientKind::Server(api(error)),
                TransientKind::InvalidReply(detail) => TransientKind::InvalidReply(text(detail)),
                TransientKind::StreamCut(detail) => TransientKind::StreamCut(text(detail)),
                TransientKind::Other(detail) => TransientKind::Other(text(detail)),
            }),
            AttemptOutcome::JobFatal(error) => AttemptOutcome::JobFatal(api(error)),
            AttemptOutcome::EndpointFatal { reason, error } => AttemptOutcome::EndpointFatal {
                reason: text(reason),
                error: api(error),
            },
            other @ (AttemptOutcome::Success | AttemptOutcome::ReplyTooLarge { .. }) => other,
        }
    }

    /// True for [`AttemptOutcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptOutcome::Success)
    }

    /// True when the job may be tried again (on this endpoint or another one): rate limits,
    /// transient failures and endpoint-fatal replies. Success and job-fatal replies are final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::RateLimited { .. }
                | AttemptOutcome::Transient(_)
                | AttemptOutcome::EndpointFatal { .. }
        )
    }

    /// True when the endpoint answered properly, whatever it thought of the job: proof that it
    /// is reachable and its credentials work (success, job-fatal replies, a reply too large).
    pub fn endpoint_answered(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::Success
                | AttemptOutcome::JobFatal(_)
                | AttemptOutcome::ReplyTooLarge { .. }
        )
    }

    /// True when the job must fail at once, wherever it would go next: a job-fatal reply, or a
    /// reply over `max_reply_bytes`.
    pub fn is_job_fatal(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::JobFatal(_) | AttemptOutcome::ReplyTooLarge { .. }
        )
    }

    /// The HTTP error reply behind this outcome, if there was one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            AttemptOutcome::RateLimited { error, .. }
            | AttemptOutcome::JobFatal(error)
            | AttemptOutcome::EndpointFatal { error, .. }
            | AttemptOutcome::Transient(TransientKind::Server(error)) => Some(error),
            AttemptOutcome::Success
            | AttemptOutcome::Transient(_)
            | AttemptOutcome::ReplyTooLarge { .. } => None,
        }
    }

    /// The HTTP status behind this outcome, when there was a reply (`None` for a transport
    /// failure and for success, whose status the caller has).
    pub fn status(&self) -> Option<u16> {
        self.api_error().map(|error| error.status)
    }
}

impl fmt::Display for AttemptOutcome {
    /// A one-line summary for attempt histories: `success`, `rate limited, retry after 7s
    /// (error message): HTTP 429 ...`, `timeout after 120s`, `HTTP 503: ...`,
    /// `credentials rejected (HTTP 401): ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptOutcome::Success => f.write_str("success"),
            AttemptOutcome::RateLimited {
                wait,
                source,
                error,
            } => write!(
                f,
                "rate limited, retry after {} ({source}): {error}",
                format_duration(*wait)
            ),
            AttemptOutcome::Transient(kind) => write!(f, "{kind}"),
            AttemptOutcome::JobFatal(error) => write!(f, "{error}"),
            AttemptOutcome::ReplyTooLarge { limit } => write!(
                f,
                "reply larger than max_reply_bytes ({}): not retried, another attempt would get \
                 as large a reply; raise max_reply_bytes or ask for less (max_tokens, n)",
                format_bytes(*limit)
            ),
            AttemptOutcome::EndpointFatal { reason, error } => {
                write!(f, "{reason}: {}", error.message)
            }
        }
    }
}

/// The `x-ratelimit-remaining-*` headers of a reply (Azure sends them on successes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
}

/// Reads `x-ratelimit-remaining-requests` and `x-ratelimit-remaining-tokens`; a header that is
/// missing or not a non-negative integer is `None`.
///
/// `header` looks a header up by name, case-insensitively (the caller's HTTP library does that).
pub fn parse_rate_limit_headers(header: &dyn Fn(&str) -> Option<String>) -> RateLimitHeaders {
    let read = |name: &str| header(name).and_then(|value| value.trim().parse::<u64>().ok());
    RateLimitHeaders {
        remaining_requests: read("x-ratelimit-remaining-requests"),
        remaining_tokens: read("x-ratelimit-remaining-tokens"),
    }
}

/// The wait a 429 asks for, from the first usable source in this order: `retry-after-ms`, then
/// `x-ms-retry-after-ms` (milliseconds, possibly fractional; Azure sends either), `retry-after` (seconds, integer or fractional, or an HTTP
/// date, taken relative to `now`; a date in the past means no wait), "retry after N second(s)"
/// or "try again in N second(s)" in `body_message` (case-insensitive).
///
/// A header that is not a number or date, is negative, NaN or infinite is ignored and the next
/// source is tried; a usable value above [`MAX_RETRY_WAIT`] saturates to it. `None` when no source
/// is usable (the caller then applies its fallback).
pub fn parse_retry_wait(
    header: &dyn Fn(&str) -> Option<String>,
    body_message: Option<&str>,
    now: SystemTime,
) -> Option<(Duration, WaitSource)> {
    let ms = ["retry-after-ms", "x-ms-retry-after-ms"]
        .into_iter()
        .find_map(|name| header(name).and_then(|v| parse_non_negative(&v)));
    if let Some(ms) = ms {
        return Some((seconds_to_wait(ms / 1000.0), WaitSource::RetryAfterMs));
    }
    if let Some(value) = header("retry-after") {
        if let Some(seconds) = parse_non_negative(&value) {
            return Some((seconds_to_wait(seconds), WaitSource::RetryAfter));
        }
        if let Ok(date) = httpdate::parse_http_date(value.trim()) {
            let wait = date.duration_since(now).unwrap_or(Duration::ZERO);
            return Some((wait.min(MAX_RETRY_WAIT), WaitSource::RetryAfterDate));
        }
    }
    body_message
        .and_then(wait_in_message)
        .map(|seconds| (seconds_to_wait(seconds), WaitSource::Message))
}

/// Classifies one HTTP reply.
///
/// - 2xx: [`AttemptOutcome::Success`].
/// - 429: [`AttemptOutcome::RateLimited`] with the wait from [`parse_retry_wait`], else
///   `fallback`.
/// - 408, 425, 5xx: [`AttemptOutcome::Transient`] ([`TransientKind::Server`]).
/// - 401, 403, 404 and redirects: [`AttemptOutcome::EndpointFatal`], with a reason that says
///   what to fix in the configuration.
/// - 400 and every other status: [`AttemptOutcome::JobFatal`] (1xx: transient invalid reply).
///
/// `header` looks a header up by name, case-insensitively; `now` is the wall-clock time (for a
/// `retry-after` date).
pub fn classify(
    status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: SystemTime,
    fallback: Duration,
) -> AttemptOutcome {
    if (200..300).contains(&status) {
        return AttemptOutcome::Success;
    }
    if status < 200 {
        return AttemptOutcome::Transient(TransientKind::InvalidReply(format!(
            "unexpected informational status HTTP {status}"
        )));
    }
    let error = ApiError::from_body(status, body);
    match status {
        429 => {
            let (wait, source) = parse_retry_wait(header, Some(&error.message), now)
                .unwrap_or((fallback.min(MAX_RETRY_WAIT), WaitSource::Fallback));
            AttemptOutcome::RateLimited {
                wait,
                source,
                error,
            }
        }
        408 | 425 | 500..=599 => AttemptOutcome::Transient(TransientKind::Server(error)),
        401 => AttemptOutcome::EndpointFatal {
            reason: "credentials rejected (HTTP 401): check api_key for this deployment".into(),
            error,
        },
        403 => AttemptOutcome::EndpointFatal {
            reason: format!(
                "access denied (HTTP 403{}): check api_key, or the identity's role and the \
                 resource's network rules",
                code_suffix(&error)
            ),
            error,
        },
        404 if error.code_str().eq_ignore_ascii_case("DeploymentNotFound") => {
            AttemptOutcome::EndpointFatal {
                reason: "deployment not found (HTTP 404 DeploymentNotFound): check `model` is \
                         the Azure deployment name"
                    .into(),
                error,
            }
        }
        404 => AttemptOutcome::EndpointFatal {
            reason: format!(
                "not found (HTTP 404{}): check `endpoint`, `model` (the Azure deployment name) \
                 and `api_version`",
                code_suffix(&error)
            ),
            error,
        },
        300..=399 => AttemptOutcome::EndpointFatal {
            reason: format!(
                "unexpected redirect (HTTP {status}){}: check `endpoint` (https, resource URL)",
                header("location")
                    .map(|to| format!(" to {}", clean_text(&to, MAX_EXCERPT_CHARS)))
                    .unwrap_or_default()
            ),
            error,
        },
        _ => AttemptOutcome::JobFatal(error),
    }
}

/// Formats a duration the way reports and reasons show it: `350ms`, `7s`, `7.5s`, `5m`,
/// `2m 30s`, `3h 0m`, `2d 1h`.
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let millis = duration.subsec_millis();
    if total == 0 {
        return format!("{millis}ms");
    }
    let (days, hours, minutes, seconds) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 && seconds > 0 {
        format!("{minutes}m {seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else if millis >= 100 {
        format!("{seconds}.{}s", millis / 100)
    } else {
        format!("{seconds}s")
    }
}

/// Formats a byte count for reasons: `512 bytes`, `64 KiB`, `64 MiB`, `1.5 GiB` (one decimal
/// when not whole).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn code_suffix(error: &ApiError) -> String {
    error
        .informative_code()
        .map(|code| format!(" {code}"))
        .unwrap_or_default()
}

/// A short, single-line, tag-free excerpt of a body that is not Azure's JSON error.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut without_tags = String::with_capacity(text.len().min(4 * MAX_EXCERPT_CHARS));
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                without_tags.push(' ');
            }
            _ if !in_tag => without_tags.push(c),
            _ => {}
        }
        if without_tags.len() > 8 * MAX_EXCERPT_CHARS {
            break;
        }
    }
    let excerpt = clean_text(&without_tags, MAX_EXCERPT_CHARS);
    if excerpt.is_empty() {
        "(empty body)".to_owned()
    } else {
        excerpt
    }
}

/// Collapses whitespace and control characters into single spaces, trims, and truncates to
/// `max_chars` characters (marking a cut with `…`).
fn clean_text(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if count + usize::from(pending_space) >= max_chars {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// A finite, non-negative number from a header value.
fn parse_non_negative(value: &str) -> Option<f64> {
    let number: f64 = value.trim().parse().ok()?;
    (number.is_finite() && number >= 0.0).then_some(number)
}

/// Seconds as a wait, saturating at [`MAX_RETRY_WAIT`].
fn seconds_to_wait(seconds: f64) -> Duration {
    if seconds >= MAX_RETRY_WAIT.as_secs_f64() {
        MAX_RETRY_WAIT
    } else {
        Duration::try_from_secs_f64(seconds).unwrap_or(MAX_RETRY_WAIT)
    }
}

/// The N of "retry after N second(s)" or "try again in N second(s)" in a message.
fn wait_in_message(message: &str) -> Option<f64> {
    let lower = message.to_ascii_lowercase();
    for phrase in ["retry after ", "try again in "] {
        let mut rest = lower.as_str();
        while let Some(at) = rest.find(phrase) {
            rest = &rest[at + phrase.len()..];
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, unit) = rest.split_at(number_len);
            let unit = unit.trim_start();
            let is_seconds = unit.starts_with("second") || unit.starts_with("sec");
            if let (true, Some(seconds)) = (is_seconds, parse_non_negative(number)) {
                return Some(seconds);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;

#[cfg(test)]
pub(crate) mod samples;
