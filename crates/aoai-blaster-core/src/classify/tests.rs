//! Tests of `classify` (tests).

use super::*;
use std::collections::HashMap;

const FALLBACK: Duration = Duration::from_secs(15);

fn now() -> SystemTime {
    // Wed, 25 Nov 2026 08:00:00 GMT
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_593_600)
}

fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
        .collect();
    move |name: &str| map.get(&name.to_ascii_lowercase()).cloned()
}

fn classify_with(status: u16, pairs: &[(&str, &str)], body: &[u8]) -> AttemptOutcome {
    classify(status, &headers(pairs), body, now(), FALLBACK)
}

fn wait_of(outcome: &AttemptOutcome) -> (Duration, WaitSource) {
    match outcome {
        AttemptOutcome::RateLimited { wait, source, .. } => (*wait, *source),
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

const AZURE_429: &[u8] = br#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 7 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#;

const CONTENT_FILTER_400: &[u8] = br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"violence":{"filtered":true,"severity":"medium"}}}}}"#;

const HTML_502: &[u8] = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

#[test]
fn success_for_every_2xx() {
    for status in [200, 201, 204, 299] {
        assert_eq!(classify_with(status, &[], b""), AttemptOutcome::Success);
    }
}

#[test]
fn real_azure_429_body_gives_the_message_wait() {
    let outcome = classify_with(429, &[], AZURE_429);
    assert_eq!(
        wait_of(&outcome),
        (Duration::from_secs(7), WaitSource::Message)
    );
    let error = outcome.api_error().unwrap();
    assert_eq!(error.status, 429);
    assert_eq!(error.code.as_deref(), Some("429"));
    assert!(
        error
            .message
            .starts_with("Requests to the ChatCompletions_Create")
    );
    assert!(outcome.is_retryable());
    assert!(!crate::retry::AttemptKind::of(&outcome).counts_against_retries());
}

#[test]
fn retry_after_ms_wins_over_everything() {
    let outcome = classify_with(
        429,
        &[("Retry-After-Ms", "1500.5"), ("Retry-After", "2")],
        AZURE_429,
    );
    assert_eq!(
        wait_of(&outcome),
        (Duration::from_micros(1_500_500), WaitSource::RetryAfterMs)
    );
}

#[test]
fn retry_after_seconds_wins_over_the_message() {
    let outcome = classify_with(429, &[("retry-after", "3")], AZURE_429);
    assert_eq!(
        wait_of(&outcome),
        (Duration::from_secs(3), WaitSource::RetryAfter)
    );
    let outcome = classify_with(429, &[("retry-after", " 0.25 ")], AZURE_429);
    assert_eq!(
        wait_of(&outcome),
        (Duration::from_millis(250), WaitSource::RetryAfter)
    );
}

#[test]
fn retry_after_http_date_is_relative_to_now() {
    let outcome = classify_with(
        429,
        &[("retry-after", "Wed, 25 Nov 2026 08:00:42 GMT")],
        b"",
    );
    assert_eq!(
        wait_of(&outcome),
        (Duration::from_secs(42), WaitSource::RetryAfterDate)
    );
    let past = classify_with(
        429,
        &[("retry-after", "Wed, 25 Nov 2026 07:59:00 GMT")],
        b"",
    );
    assert_eq!(wait_of(&past), (Duration::ZERO, WaitSource::RetryAfterDate));
    let far = classify_with(
        429,
        &[("retry-after", "Fri, 25 Nov 2050 08:00:00 GMT")],
        b"",
    );
    assert_eq!(wait_of(&far), (MAX_RETRY_WAIT, WaitSource::RetryAfterDate));
}

#[test]
fn garbage_headers_fall_through_to_the_next_source() {
    for bad in [
        "", "soon", "-1", "NaN", "inf", "-inf", "1e400", "0x10", "5s",
    ] {
        let outcome = classify_with(
            429,
            &[("retry-after-ms", bad), ("retry-after", bad)],
            AZURE_429,
        );
        assert_eq!(
            wait_of(&outcome),
            (Duration::from_secs(7), WaitSource::Message),
            "header value {bad:?}"
        );
    }
    let outcome = classify_with(429, &[("retry-after-ms", "NaN"), ("retry-after", "2")], b"");
    assert_eq!(
        wait_of(&outcome),
        (Duration::from_secs(2), WaitSource::RetryAfter)
    );
}

#[test]
fn huge_values_saturate_to_the_documented_cap() {
    for (name, value) in [
        ("retry-after-ms", "1e300"),
        ("retry-after", "1e30"),
        ("retry-after", "18446744073709551616"),
    ] {
        let outcome = classify_with(429, &[(name, value)], b"");
        assert_eq!(wait_of(&outcome).0, MAX_RETRY_WAIT, "{name}: {value}");
    }
    let day = classify_with(429, &[("retry-after", "86400")], b"");
    assert_eq!(wait_of(&day).0, Duration::from_secs(86_400));
    let message =
        br#"{"error":{"code":"429","message":"Please retry after 99999999999 seconds."}}"#;
    assert_eq!(
        wait_of(&classify_with(429, &[], message)),
        (MAX_RETRY_WAIT, WaitSource::Message)
    );
}

#[test]
fn fallback_when_nothing_says_how_long() {
    let outcome = classify_with(
        429,
        &[],
        br#"{"error":{"code":"429","message":"Too many requests"}}"#,
    );
    assert_eq!(wait_of(&outcome), (FALLBACK, WaitSource::Fallback));
    let outcome = classify_with(429, &[], b"");
    assert_eq!(wait_of(&outcome), (FALLBACK, WaitSource::Fallback));
}

#[test]
fn message_waits_in_their_variants() {
    let cases = [
        ("Please retry after 1 second.", Some(1.0)),
        ("PLEASE RETRY AFTER 30 SECONDS", Some(30.0)),
        (
            "Rate limit reached. Please try again in 20 seconds.",
            Some(20.0),
        ),
        ("retry after 2.5 seconds", Some(2.5)),
        ("retry after a while, then retry after 4 seconds", Some(4.0)),
        ("retry after 5 minutes", None),
        ("retry after -3 seconds", None),
        ("retry after", None),
        ("nothing here", None),
    ];
    for (message, expected) in cases {
        assert_eq!(wait_in_message(message), expected, "{message}");
    }
}

#[test]
fn content_filter_400_is_job_fatal_with_azure_code_and_message() {
    let outcome = classify_with(400, &[], CONTENT_FILTER_400);
    let AttemptOutcome::JobFatal(error) = &outcome else {
        panic!("expected JobFatal, got {outcome:?}");
    };
    assert_eq!(error.status, 400);
    assert_eq!(error.code.as_deref(), Some("content_filter"));
    assert!(error.message.starts_with("The response was filtered"));
    assert!(!outcome.is_retryable());
    assert!(outcome.endpoint_answered());
}

#[test]
fn context_length_and_other_4xx_are_job_fatal() {
    let body = br#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
    let outcome = classify_with(400, &[], body);
    assert_eq!(
        outcome.api_error().and_then(|e| e.code.clone()).as_deref(),
        Some("context_length_exceeded")
    );
    for status in [400, 409, 413, 415, 422, 451] {
        assert!(
            matches!(
                classify_with(status, &[], b"{}"),
                AttemptOutcome::JobFatal(_)
            ),
            "HTTP {status}"
        );
    }
}

#[test]
fn timeouts_and_server_errors_are_transient() {
    for status in [408, 425, 500, 502, 503, 504, 599] {
        let outcome = classify_with(status, &[], b"");
        assert!(
            matches!(outcome, AttemptOutcome::Transient(TransientKind::Server(ref e)) if e.status == status),
            "HTTP {status}: {outcome:?}"
        );
        assert!(outcome.is_retryable());
        assert!(crate::retry::AttemptKind::of(&outcome).counts_against_retries());
    }
}

#[test]
fn html_body_becomes_a_short_clean_excerpt() {
    let outcome = classify_with(502, &[], HTML_502);
    let error = outcome.api_error().unwrap();
    assert_eq!(error.code, None);
    assert_eq!(error.message, "502 Bad Gateway 502 Bad Gateway nginx");
    assert_eq!(
        outcome.to_string(),
        "HTTP 502: 502 Bad Gateway 502 Bad Gateway nginx"
    );
}

#[test]
fn long_or_binary_bodies_are_truncated_and_sanitised() {
    let long = "x".repeat(10_000);
    let error = ApiError::from_body(500, long.as_bytes());
    assert_eq!(error.message.chars().count(), MAX_EXCERPT_CHARS + 1);
    assert!(error.message.ends_with('…'));
    let binary = ApiError::from_body(500, &[0xff, 0xfe, b'\n', 0x00, b'o', b'k', 0x07]);
    assert_eq!(binary.message, "\u{fffd}\u{fffd} ok");
    assert_eq!(ApiError::from_body(503, b"  \r\n ").message, "(empty body)");
    let long_json = format!(
        r#"{{"error":{{"code":"x","message":"{}"}}}}"#,
        "y".repeat(5000)
    );
    let error = ApiError::from_body(400, long_json.as_bytes());
    assert_eq!(error.message.chars().count(), MAX_MESSAGE_CHARS + 1);
}

#[test]
fn other_json_error_shapes_are_understood() {
    let apim = br#"{ "statusCode": 401, "message": "Access denied due to invalid subscription key or wrong API endpoint." }"#;
    let error = ApiError::from_body(401, apim);
    assert_eq!(error.code, None);
    assert!(error.message.starts_with("Access denied"));
    let numeric = ApiError::from_body(429, br#"{"error":{"code":429,"message":"slow"}}"#);
    assert_eq!(numeric.code.as_deref(), Some("429"));
    let inner = ApiError::from_body(
        400,
        br#"{"error":{"message":"m","innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#,
    );
    assert_eq!(inner.code.as_deref(), Some("ResponsibleAIPolicyViolation"));
    let text = ApiError::from_body(400, br#"{"error":"bad things"}"#);
    assert_eq!((text.code, text.message.as_str()), (None, "bad things"));
    let unrelated = ApiError::from_body(400, br#"{"detail":"nope"}"#);
    assert_eq!(unrelated.message, r#"{"detail":"nope"}"#);
}

#[test]
fn credential_and_deployment_problems_are_endpoint_fatal_with_a_fix() {
    let reason = |outcome: AttemptOutcome| match outcome {
        AttemptOutcome::EndpointFatal { reason, .. } => reason,
        other => panic!("expected EndpointFatal, got {other:?}"),
    };
    let unauthorized = br#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint."}}"#;
    assert_eq!(
        reason(classify_with(401, &[], unauthorized)),
        "credentials rejected (HTTP 401): check api_key for this deployment"
    );
    assert!(reason(classify_with(403, &[], b"")).starts_with("access denied (HTTP 403)"));
    let missing = br#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#;
    assert_eq!(
        reason(classify_with(404, &[], missing)),
        "deployment not found (HTTP 404 DeploymentNotFound): check `model` is the Azure deployment name"
    );
    let other_404 = br#"{"error":{"code":"404","message":"Resource not found"}}"#;
    assert_eq!(
        reason(classify_with(404, &[], other_404)),
        "not found (HTTP 404): check `endpoint`, `model` (the Azure deployment name) and `api_version`"
    );
    assert_eq!(
        reason(classify_with(
            301,
            &[("Location", "https://x.openai.azure.com/")],
            b""
        )),
        "unexpected redirect (HTTP 301) to https://x.openai.azure.com/: check `endpoint` (https, resource URL)"
    );
    let outcome = classify_with(401, &[], unauthorized);
    assert!(outcome.is_retryable());
    assert!(crate::retry::AttemptKind::of(&outcome).counts_against_retries());
    assert!(!outcome.endpoint_answered());
}

#[test]
fn informational_statuses_are_invalid_replies() {
    assert!(matches!(
        classify_with(100, &[], b""),
        AttemptOutcome::Transient(TransientKind::InvalidReply(_))
    ));
}

#[test]
fn rate_limit_headers_are_read_leniently() {
    let read = |pairs: &[(&str, &str)]| parse_rate_limit_headers(&headers(pairs));
    assert_eq!(
        read(&[
            ("X-RateLimit-Remaining-Requests", "59"),
            ("x-ratelimit-remaining-tokens", " 99000 ")
        ]),
        RateLimitHeaders {
            remaining_requests: Some(59),
            remaining_tokens: Some(99_000)
        }
    );
    assert_eq!(
        read(&[
            ("x-ratelimit-remaining-requests", "-1"),
            ("x-ratelimit-remaining-tokens", "lots")
        ]),
        RateLimitHeaders::default()
    );
}

#[test]
fn summaries_read_well() {
    let limited = classify_with(429, &[("retry-after", "7")], AZURE_429);
    assert!(
        limited
            .to_string()
            .starts_with("rate limited, retry after 7s (Retry-After): HTTP 429: Requests")
    );
    assert_eq!(
        AttemptOutcome::Transient(TransientKind::timeout_after(Duration::from_secs(120)))
            .to_string(),
        "timeout after 2m"
    );
    assert_eq!(
        AttemptOutcome::Transient(TransientKind::Connect("connection refused".into())).to_string(),
        "connection failed: connection refused"
    );
    let server = classify_with(
        503,
        &[],
        br#"{"error":{"code":"ServiceUnavailable","message":"The service is temporarily unable to process your request."}}"#,
    );
    assert_eq!(
        server.to_string(),
        "HTTP 503 ServiceUnavailable: The service is temporarily unable to process your request."
    );
}

#[test]
fn a_reply_too_large_is_fatal_for_the_job_only() {
    let outcome = AttemptOutcome::ReplyTooLarge {
        limit: 64 * 1024 * 1024,
    };
    assert!(outcome.is_job_fatal());
    assert!(!outcome.is_retryable());
    assert!(outcome.endpoint_answered());
    assert!(!outcome.is_success());
    assert_eq!(outcome.api_error(), None);
    assert_eq!(outcome.status(), None);
    assert_eq!(
        outcome.to_string(),
        "reply larger than max_reply_bytes (64 MiB): not retried, another attempt would get \
         as large a reply; raise max_reply_bytes or ask for less (max_tokens, n)"
    );
    assert!(AttemptOutcome::JobFatal(ApiError::from_body(400, b"")).is_job_fatal());
    assert!(!AttemptOutcome::Success.is_job_fatal());
}

#[test]
fn bytes_format_for_people() {
    assert_eq!(format_bytes(0), "0 bytes");
    assert_eq!(format_bytes(1023), "1023 bytes");
    assert_eq!(format_bytes(1024), "1 KiB");
    assert_eq!(format_bytes(1536), "1.5 KiB");
    assert_eq!(format_bytes(64 * 1024 * 1024), "64 MiB");
    assert_eq!(format_bytes(3 << 30), "3 GiB");
    assert_eq!(format_bytes(u64::MAX), "16777216 TiB");
}

#[test]
fn durations_format_for_people() {
    let cases = [
        (Duration::from_millis(350), "350ms"),
        (Duration::from_secs(7), "7s"),
        (Duration::from_millis(7_500), "7.5s"),
        (Duration::from_secs(120), "2m"),
        (Duration::from_secs(150), "2m 30s"),
        (Duration::from_secs(300), "5m"),
        (Duration::from_secs(3 * 3600), "3h 0m"),
        (Duration::from_secs(86_400 + 3600), "1d 1h"),
    ];
    for (duration, expected) in cases {
        assert_eq!(format_duration(duration), expected);
    }
}

#[test]
fn x_ms_retry_after_ms_is_read_when_retry_after_ms_is_not_usable() {
    for pairs in [
        &[("x-ms-retry-after-ms", "2500"), ("retry-after", "9")][..],
        &[("retry-after-ms", "soon"), ("x-ms-retry-after-ms", "2500")][..],
    ] {
        assert_eq!(
            wait_of(&classify_with(429, pairs, AZURE_429)),
            (Duration::from_millis(2500), WaitSource::RetryAfterMs)
        );
    }
    let both = [("retry-after-ms", "100"), ("x-ms-retry-after-ms", "2500")];
    assert_eq!(
        wait_of(&classify_with(429, &both, AZURE_429)).0,
        Duration::from_millis(100)
    );
}

/// Found by `fuzz::any_reply_is_classified`: a message of only control characters or
/// spaces was kept as an empty message.
#[test]
fn a_message_that_cleans_to_nothing_reads_no_message() {
    for body in [
        br#"{"error":{"code":null,"message":"\u0000"}}"#.as_slice(),
        br#"{"error":{"message":" \n\t "}}"#.as_slice(),
    ] {
        let outcome = classify_with(300, &[], body);
        assert_eq!(outcome.api_error().unwrap().message, "(no message)");
    }
}
