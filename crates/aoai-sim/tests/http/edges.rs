//! Azure at its edges (issue 12): day-long and absurd Retry-After values, each retry header
//! alone, headerless 429 storms, outages of every status, trickling and oversized replies, and a
//! seeded failure rate with fast failures and slow successes.

use std::time::{Duration, Instant};

use aoai_sim::{
    DeploymentSpec, FaultSpec, OutageMode, OutageSpec, RetryHeader, RetryHeaders, SimConfig,
    SimHandle,
};

use crate::common::{KEY, Reply, chat_body, chat_url, client, post, start};

const RETRY_HEADERS: [&str; 3] = ["retry-after", "retry-after-ms", "x-ms-retry-after-ms"];

async fn one(spec: DeploymentSpec) -> SimHandle {
    start(SimConfig::default().deployment(spec)).await
}

async fn ask(sim: &SimHandle) -> Reply {
    post(
        &client(),
        &chat_url(&sim.base_url(), "d"),
        KEY,
        &chat_body(5),
    )
    .await
}

fn throttled(retry_after_secs: f64) -> FaultSpec {
    FaultSpec {
        p_429: 1.0,
        retry_after_secs,
        ..Default::default()
    }
}

fn message(reply: &Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The retry headers present, in `RETRY_HEADERS` order.
fn retry_headers(reply: &Reply) -> Vec<(&'static str, String)> {
    RETRY_HEADERS
        .iter()
        .filter_map(|name| reply.header(name).map(|value| (*name, value.to_owned())))
        .collect()
}

#[actix_rt::test]
async fn retry_header_sets_and_day_long_waits() {
    let day = |headers: RetryHeaders| {
        DeploymentSpec::new("d")
            .faults(throttled(86_400.0))
            .retry_headers(headers)
    };
    let ms = "86400000".to_owned();
    let cases = [
        (
            RetryHeaders::AZURE,
            vec![
                ("retry-after", "86400".to_owned()),
                ("retry-after-ms", ms.clone()),
            ],
        ),
        (
            RetryHeaders::only(RetryHeader::RetryAfter),
            vec![("retry-after", "86400".to_owned())],
        ),
        (
            RetryHeaders::only(RetryHeader::RetryAfterMs),
            vec![("retry-after-ms", ms.clone())],
        ),
        (
            RetryHeaders::only(RetryHeader::XMsRetryAfterMs),
            vec![("x-ms-retry-after-ms", ms.clone())],
        ),
        (
            RetryHeaders::ALL,
            vec![
                ("retry-after", "86400".to_owned()),
                ("retry-after-ms", ms.clone()),
                ("x-ms-retry-after-ms", ms),
            ],
        ),
    ];
    for (headers, expected) in cases {
        let sim = one(day(headers)).await;
        let reply = ask(&sim).await;
        assert_eq!(reply.status, 429);
        assert_eq!(reply.error_code(), "429");
        assert_eq!(retry_headers(&reply), expected, "{headers:?}");
        assert!(message(&reply).contains("Please retry after 86400 seconds."));
        sim.stop().await;
    }
}

#[actix_rt::test]
async fn absurd_retry_after_is_written_in_exponent_notation() {
    let sim = one(DeploymentSpec::new("d").faults(throttled(1e30))).await;
    let reply = ask(&sim).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("1e30"));
    assert_eq!(reply.header("retry-after-ms"), Some("1e33"));
    assert!(
        message(&reply).contains("Please retry after 1e30 seconds."),
        "{}",
        message(&reply)
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn headerless_429_storm_names_no_wait() {
    let sim = one(DeploymentSpec::new("d")
        .faults(throttled(86_400.0))
        .retry_headers(RetryHeaders::NONE))
    .await;
    for _ in 0..5 {
        let reply = ask(&sim).await;
        assert_eq!(reply.status, 429);
        assert_eq!(retry_headers(&reply), []);
        let text = message(&reply);
        assert!(text.contains("Please retry later."), "{text}");
        assert!(!text.contains("retry after"), "{text}");
        // No number but the API version's and the pricing tier's (S0).
        let digits: String = text
            .replace(crate::common::API_VERSION, "")
            .replace("S0", "")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        assert_eq!(digits, "", "{text}");
    }
    assert_eq!(sim.stats().deployment("d").rate_limited, 5);
    sim.stop().await;
}

#[actix_rt::test]
async fn quota_429s_follow_the_retry_header_set_too() {
    let sim = one(DeploymentSpec::new("d")
        .tpm(1_000_000)
        .rpm(60)
        .retry_headers(RetryHeaders::only(RetryHeader::XMsRetryAfterMs)))
    .await;
    assert_eq!(ask(&sim).await.status, 200);
    let refused = ask(&sim).await;
    assert_eq!(refused.status, 429);
    assert!(message(&refused).contains("call rate limit"));
    let names: Vec<&str> = retry_headers(&refused).iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["x-ms-retry-after-ms"]);
    assert!(refused.header_u64("x-ms-retry-after-ms") <= 1_000);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_429_outage_is_a_storm_for_a_period_then_recovers() {
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(DeploymentSpec::new("d").outage(OutageSpec::new(
                OutageMode::Status429,
                0,
                30,
            )))
            .deployment(
                DeploymentSpec::new("bare")
                    .retry_headers(RetryHeaders::NONE)
                    .outage(OutageSpec::new(OutageMode::Status429, 0, 30)),
            ),
    )
    .await;
    let client = client();
    let first = ask(&sim).await;
    assert_eq!(first.status, 429);
    // The wait named is what is left of the outage.
    assert_eq!(first.header_u64("retry-after"), 30);
    assert_eq!(first.header_u64("retry-after-ms"), 30_000);
    let bare_url = chat_url(&sim.base_url(), "bare");
    let bare = post(&client, &bare_url, KEY, &chat_body(5)).await;
    assert_eq!((bare.status, retry_headers(&bare)), (429, vec![]));

    sim.advance_clock(Duration::from_millis(12_500))
        .await
        .expect("manual clock");
    let later = ask(&sim).await;
    assert_eq!(later.header_u64("retry-after-ms"), 17_500);
    assert_eq!(later.header_u64("retry-after"), 18);

    sim.advance_clock(Duration::from_millis(17_500))
        .await
        .expect("manual clock");
    assert_eq!(ask(&sim).await.status, 200);
    assert_eq!(
        post(&client, &bare_url, KEY, &chat_body(5)).await.status,
        200
    );
    assert_eq!(sim.stats().deployment("d").rate_limited, 2);
    sim.stop().await;
}

#[actix_rt::test]
async fn status_outages_answer_azure_errors_until_they_end() {
    let cases = [
        (OutageMode::Status401, 401, "401"),
        (OutageMode::Status403, 403, "PermissionDenied"),
        (OutageMode::Status404, 404, "DeploymentNotFound"),
        (OutageMode::Status503, 503, "ServiceUnavailable"),
    ];
    for (mode, status, code) in cases {
        let sim = start(
            SimConfig::default()
                .manual_clock()
                .deployment(DeploymentSpec::new("d").outage(OutageSpec::new(mode, 0, 10))),
        )
        .await;
        let down = ask(&sim).await;
        assert_eq!((down.status, down.error_code()), (status, code.to_owned()));
        sim.advance_clock(Duration::from_secs(10))
            .await
            .expect("manual clock");
        assert_eq!(ask(&sim).await.status, 200, "{mode:?} ends at to_secs");
        let stats = sim.stats().deployment("d");
        assert_eq!((stats.requests, stats.ok), (2, 1));
        sim.stop().await;
    }
}

#[actix_rt::test]
async fn down_for_a_while_on_the_real_clock_then_recovers() {
    let sim = one(DeploymentSpec::new("d").outage(OutageSpec::status_503(0, 1))).await;
    assert_eq!(ask(&sim).await.status, 503);
    let started = Instant::now();
    loop {
        let status = ask(&sim).await.status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never recovered"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sim.elapsed() >= Duration::from_secs(1));
    sim.stop().await;
}
