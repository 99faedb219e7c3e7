//! Hostile replies: any status, any header values, any body.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

const HEADER_NAMES: [&str; 6] = [
    "retry-after",
    "retry-after-ms",
    "x-ms-retry-after-ms",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "location",
];

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_593_600)
}

/// A header value: numbers of every shape (huge, negative, fractional, exponents, NaN,
/// padded), HTTP dates past and future, and arbitrary text.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        (0u64..4_000_000_000).prop_map(|secs| httpdate::fmt_http_date(
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
        )),
        "[ \t]{0,2}[-+]?[0-9]{0,30}(\\.[0-9]{0,20})?([eE][-+]?[0-9]{1,4})?[ \t]{0,2}",
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("-0".to_owned()),
        ".{0,40}",
    ]
}

fn headers() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(
        prop::sample::select(&HEADER_NAMES[..]).prop_map(str::to_owned),
        header_value(),
        0..HEADER_NAMES.len(),
    )
}

/// A body: arbitrary bytes, or Azure's error shape with hostile fields.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        ".{0,80}",
        "(retry after|try again in) [0-9.]{0,25} ?(seconds?|secs?)",
    ];
    let code = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (code, text).prop_map(|(code, message)| {
            serde_json::json!({"error": {"code": code, "message": message}})
                .to_string()
                .into_bytes()
        }),
        "<html>.{0,100}</html>".prop_map(String::into_bytes),
    ]
}

fn lookup(map: &HashMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    |name: &str| map.get(&name.to_ascii_lowercase()).cloned()
}

/// The number `parse_retry_wait` should read from a header value, by its documented rule.
fn usable_number(value: &str) -> Option<f64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
}

proptest! {
    #![proptest_config(aoai_testkit::fuzz_config())]

    /// Every reply is classified; a wait is never above the documented cap; the message is
    /// one clean, bounded line.
    #[test]
    fn any_reply_is_classified(
        status in any::<u16>(),
        headers in headers(),
        body in body(),
        fallback_secs in any::<u64>(),
    ) {
        let fallback = Duration::from_secs(fallback_secs);
        let outcome = classify(status, &lookup(&headers), &body, now(), fallback);
        let _ = outcome.to_string();
        match &outcome {
            AttemptOutcome::Success => prop_assert!((200..300).contains(&status)),
            AttemptOutcome::RateLimited { wait, .. } => {
                prop_assert_eq!(status, 429);
                prop_assert!(*wait <= MAX_RETRY_WAIT, "wait {wait:?}");
            }
            _ => prop_assert!(!(200..300).contains(&status) && status != 429),
        }
        if let Some(error) = outcome.api_error() {
            prop_assert_eq!(error.status, status);
            prop_assert!(error.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
            prop_assert!(!error.message.chars().any(char::is_control), "{:?}", error.message);
            prop_assert!(!error.message.is_empty());
        }
    }

    /// `retry-after-ms`, `x-ms-retry-after-ms`, `retry-after` (seconds or date), the message: the first
    /// usable one wins, read exactly, saturating at `MAX_RETRY_WAIT`.
    #[test]
    fn retry_wait_follows_the_documented_order(
        headers in headers(),
        message in prop::option::of(".{0,60}"),
    ) {
        let found = parse_retry_wait(&lookup(&headers), message.as_deref(), now());
        let ms = ["retry-after-ms", "x-ms-retry-after-ms"]
            .into_iter()
            .find_map(|name| headers.get(name).and_then(|v| usable_number(v)));
        let secs = headers.get("retry-after").and_then(|v| usable_number(v));
        let date = headers
            .get("retry-after")
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
        if let Some((wait, _)) = found {
            prop_assert!(wait <= MAX_RETRY_WAIT, "wait {wait:?}");
        }
        let expect_near = |wait: Duration, seconds: f64| {
            let capped = seconds.min(MAX_RETRY_WAIT.as_secs_f64());
            (wait.as_secs_f64() - capped).abs() <= 1e-6 * capped.max(1.0)
        };
        if let Some(ms) = ms {
            let (wait, source) = found.unwrap();
            prop_assert_eq!(source, WaitSource::RetryAfterMs);
            prop_assert!(expect_near(wait, ms / 1000.0), "{wait:?} for {ms} ms");
        } else if let Some(secs) = secs {
            let (wait, source) = found.unwrap();
            prop_assert_eq!(source, WaitSource::RetryAfter);
            prop_assert!(expect_near(wait, secs), "{wait:?} for {secs} s");
        } else if let Some(date) = date {
            let (wait, source) = found.unwrap();
            prop_assert_eq!(source, WaitSource::RetryAfterDate);
            let expected = date.duration_since(now()).unwrap_or(Duration::ZERO);
            prop_assert_eq!(wait, expected.min(MAX_RETRY_WAIT));
        } else if let Some((_, source)) = found {
            prop_assert_eq!(source, WaitSource::Message);
        }
    }

    /// A usable message wait is found whatever surrounds it, and capped.
    #[test]
    fn a_wait_in_any_message_is_capped(
        before in ".{0,30}",
        seconds in prop_oneof![any::<u32>().prop_map(f64::from), 0.0f64..1e30],
        after in ".{0,30}",
    ) {
        let message = format!("{before} Please retry after {seconds} seconds.{after}");
        let (wait, _) = parse_retry_wait(&|_| None, Some(&message), now()).unwrap();
        prop_assert!(wait <= MAX_RETRY_WAIT);
    }

    /// `x-ratelimit-remaining-*` are read as trimmed non-negative integers, else `None`.
    #[test]
    fn rate_limit_headers_read_integers_or_nothing(headers in headers()) {
        let parsed = parse_rate_limit_headers(&lookup(&headers));
        let read = |name: &str| headers.get(name).and_then(|v| v.trim().parse::<u64>().ok());
        prop_assert_eq!(parsed.remaining_requests, read("x-ratelimit-remaining-requests"));
        prop_assert_eq!(parsed.remaining_tokens, read("x-ratelimit-remaining-tokens"));
    }
}
