//! Azure at its edges (issue 12): day-long and absurd Retry-After values, each retry header
//! alone, headerless 429 storms, outages of every status, trickling and oversized replies, and a
//! seeded failure rate with fast failures and slow successes.

use std::time::{Duration, Instant};

use aoai_sim::{
    DeploymentSpec, FaultSpec, LatencySpec, OutageMode, OutageSpec, RetryHeader, RetryHeaders,
    SimConfig, SimHandle, TrickleSpec,
};

use crate::common::{KEY, Reply, chat_body, chat_url, client, post, post_chat, start};

const RETRY_HEADERS: [&str; 3] = ["retry-after", "retry-after-ms", "x-ms-retry-after-ms"];

async fn one(spec: DeploymentSpec) -> SimHandle {
    start(SimConfig::default().deployment(spec)).await
}

async fn ask(sim: &SimHandle) -> Reply {
    post_chat(sim, "d", &chat_body(5)).await
}

fn throttled(retry_after_secs: u64) -> FaultSpec {
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
            .faults(throttled(86_400))
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
    let absurd = FaultSpec {
        retry_after_secs_f64: Some(1e30),
        ..throttled(0)
    };
    let sim = one(DeploymentSpec::new("d").faults(absurd)).await;
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
        .faults(throttled(86_400))
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

fn stream_body() -> serde_json::Value {
    serde_json::json!({"messages": [{"role": "user", "content": "go"}], "stream": true})
}

/// Open a reply and read its body chunk by chunk: `(gap before the chunk, chunk)` for at most
/// `limit` of wall time, then drop the connection.
async fn read_timed(
    url: &str,
    body: &serde_json::Value,
    limit: Duration,
) -> (u16, Option<u64>, Vec<(Duration, bytes::Bytes)>) {
    use futures_util::StreamExt;
    let mut response = client()
        .post(url)
        .insert_header(("api-key", aoai_sim::DEFAULT_API_KEY))
        .send_json(body)
        .await
        .expect("reply headers");
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let started = Instant::now();
    let mut last = started;
    let mut chunks = Vec::new();
    while started.elapsed() < limit {
        let left = limit.saturating_sub(started.elapsed());
        match actix_rt::time::timeout(left, response.next()).await {
            Ok(Some(Ok(chunk))) => {
                chunks.push((last.elapsed(), chunk));
                last = Instant::now();
            }
            Ok(_) | Err(_) => break,
        }
    }
    (response.status().as_u16(), length, chunks)
}

fn concat(chunks: &[(Duration, bytes::Bytes)]) -> String {
    let bytes: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[actix_rt::test]
async fn a_trickling_stream_sends_a_little_often_then_finishes() {
    let sim = one(DeploymentSpec::new("d").trickle(TrickleSpec::lasting(20, 400))).await;
    let url = chat_url(&sim.base_url(), "d");
    let started = Instant::now();
    let (status, _, chunks) = read_timed(&url, &stream_body(), Duration::from_secs(10)).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let longest = chunks.iter().map(|(gap, _)| *gap).max().unwrap_or_default();
    assert!(longest < Duration::from_millis(200), "gap {longest:?}");
    let text = concat(&chunks);
    assert_eq!(text.matches(": keep-alive\n\n").count(), 20);
    // The content comes first, the finish and [DONE] after the trickle.
    let tick = text.find(": keep-alive").unwrap_or(0);
    assert!(text[..tick].contains("digest="));
    assert!(text[tick..].contains("\"finish_reason\":\"stop\""));
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    sim.stop().await;
}

#[actix_rt::test]
async fn an_endless_trickle_never_finishes_and_deltas_can_trickle_too() {
    let sim = one(DeploymentSpec::new("d").trickle(TrickleSpec::forever(10).deltas())).await;
    let url = chat_url(&sim.base_url(), "d");
    let (status, length, chunks) =
        read_timed(&url, &stream_body(), Duration::from_millis(600)).await;
    assert_eq!((status, length), (200, None));
    let text = concat(&chunks);
    let ticks = text.matches(r#""content":" tick""#).count();
    assert!(ticks >= 20, "{ticks} ticks in 600 ms");
    assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"stop"));
    // The connection was dropped: the simulator lets the request go.
    let started = Instant::now();
    while sim.stats().deployment("d").in_flight > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still in flight"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn a_plain_reply_trickles_leading_spaces() {
    let sim = one(DeploymentSpec::new("d").trickle(TrickleSpec::lasting(10, 200))).await;
    let url = chat_url(&sim.base_url(), "d");
    let started = Instant::now();
    let (status, length, chunks) = read_timed(&url, &chat_body(5), Duration::from_secs(10)).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    let text = concat(&chunks);
    assert_eq!(length, Some(text.len() as u64));
    assert!(text.starts_with(&" ".repeat(20)) && !text.starts_with(&" ".repeat(21)));
    let reply: serde_json::Value = serde_json::from_str(&text).expect("JSON after the spaces");
    assert_eq!(reply["object"], "chat.completion");
    sim.stop().await;
}

#[actix_rt::test]
async fn an_oversized_plain_reply_is_valid_json_of_the_size_asked() {
    const SIZE: u64 = 70 * 1024 * 1024;
    let sim = one(DeploymentSpec::new("d").reply_bytes(SIZE)).await;
    let url = chat_url(&sim.base_url(), "d");
    let reply = post(&client(), &url, KEY, &chat_body(5)).await;
    assert_eq!(reply.status, 200);
    let length = reply.header_u64("content-length");
    assert_eq!(length, reply.body.len() as u64);
    assert!((SIZE..SIZE + 64 * 1024).contains(&length), "{length}");
    let json = reply.json();
    let content = json["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("");
    assert!(content.starts_with("digest=") && content.ends_with(" pad"));
    assert_eq!(json["usage"]["completion_tokens"], 5);
    // Small requests too: the padding does not depend on the request.
    assert_eq!(sim.stats().deployment("d").ok, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_huge_stream_carries_200_mb_of_deltas_then_finishes() {
    use futures_util::StreamExt;
    const SIZE: u64 = 200 * 1000 * 1000;
    let sim = one(DeploymentSpec::new("d").reply_bytes(SIZE)).await;
    let mut response = client()
        .post(chat_url(&sim.base_url(), "d"))
        .insert_header(("api-key", aoai_sim::DEFAULT_API_KEY))
        .send_json(&stream_body())
        .await
        .expect("reply headers");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().get("content-length").is_none());
    let mut total = 0u64;
    let mut tail = Vec::new();
    while let Some(Ok(chunk)) = response.next().await {
        total += chunk.len() as u64;
        tail.extend_from_slice(&chunk);
        let keep = tail.len().saturating_sub(64 * 1024);
        tail.drain(..keep);
    }
    assert!((SIZE..SIZE + 64 * 1024).contains(&total), "{total}");
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.ends_with("data: [DONE]\n\n"));
    assert!(tail.contains("\"finish_reason\":\"stop\""));
    sim.stop().await;
}

#[actix_rt::test]
async fn a_stalled_stream_goes_silent_after_some_deltas() {
    let sim = one(DeploymentSpec::new("d").reply_tokens(20).faults(FaultSpec {
        p_stream_stall: 1.0,
        hang_secs: 600,
        ..Default::default()
    }))
    .await;
    let url = chat_url(&sim.base_url(), "d");
    let (status, _, chunks) = read_timed(&url, &stream_body(), Duration::from_millis(500)).await;
    assert_eq!(status, 200);
    let text = concat(&chunks);
    assert!(text.contains("digest="), "some deltas arrive: {text}");
    assert!(!text.contains("finish_reason\":\"stop") && !text.contains("[DONE]"));
    let stats = sim.stats().deployment("d");
    assert_eq!((stats.stream_stalls, stats.ok), (1, 1));
    // A plain request is served normally.
    assert_eq!(ask(&sim).await.status, 200);
    sim.stop().await;
}

#[actix_rt::test]
async fn seeded_failure_rate_with_fast_failures_and_slow_successes() {
    let run = |seed: u64| async move {
        let spec = DeploymentSpec::new("d")
            .tpm(10_000_000)
            .rpm(1_000_000)
            .latency(LatencySpec {
                ttft_ms: 50,
                per_token_ms: 0,
                jitter_ms: 0,
            })
            .faults(FaultSpec {
                p_503: 0.2,
                ..Default::default()
            });
        let sim = start(SimConfig {
            seed,
            ..SimConfig::default().deployment(spec)
        })
        .await;
        let client = client();
        let url = chat_url(&sim.base_url(), "d");
        let mut outcomes = Vec::new();
        for _ in 0..30 {
            let started = Instant::now();
            let status = post(&client, &url, KEY, &chat_body(5)).await.status;
            outcomes.push((status, started.elapsed()));
        }
        sim.stop().await;
        outcomes
    };
    let first = run(5).await;
    let statuses: Vec<u16> = first.iter().map(|(s, _)| *s).collect();
    let again: Vec<u16> = run(5).await.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, again, "same seed, same failures");
    let failures = statuses.iter().filter(|s| **s == 503).count();
    assert!((2..=12).contains(&failures), "{failures} of 30");
    for (status, took) in first {
        match status {
            503 => assert!(took < Duration::from_millis(40), "a failure took {took:?}"),
            200 => assert!(took >= Duration::from_millis(50), "a success took {took:?}"),
            other => panic!("unexpected {other}"),
        }
    }
}
