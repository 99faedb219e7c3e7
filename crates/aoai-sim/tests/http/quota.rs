//! Quota windows over HTTP, on a manual clock so the windows are exact.

use std::time::Duration;

use aoai_sim::{DeploymentSpec, RpmWindow, SimConfig};

use crate::common::{KEY, chat_body, chat_url, client, post, start};

#[actix_rt::test]
async fn exactly_the_tpm_is_admitted_then_429_until_the_minute_ends() {
    // Each request costs 8 (prompt) + 92 (max_tokens) = 100 tokens; 1,000 TPM admits 10.
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(DeploymentSpec::new("d").tpm(1_000).rpm(1_000_000)),
    )
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    for i in 1..=10 {
        let reply = post(&client, &url, KEY, &chat_body(92)).await;
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(
            reply.header_u64("x-ratelimit-remaining-tokens"),
            1_000 - 100 * i
        );
    }
    let refused = post(&client, &url, KEY, &chat_body(92)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header_u64("retry-after-ms"), 60_000);
    assert_eq!(refused.header_u64("retry-after"), 60);
    assert_eq!(refused.error_code(), "429");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("exceeded token rate limit"), "{message}");
    assert!(
        message.contains("Please retry after 60 seconds."),
        "{message}"
    );

    sim.advance_clock(Duration::from_millis(59_400))
        .await
        .expect("manual clock");
    let still = post(&client, &url, KEY, &chat_body(92)).await;
    assert_eq!(still.status, 429);
    assert_eq!(still.header_u64("retry-after-ms"), 600);
    assert_eq!(still.header_u64("retry-after"), 1);

    sim.advance_clock(Duration::from_millis(600))
        .await
        .expect("manual clock");
    let next_minute = post(&client, &url, KEY, &chat_body(92)).await;
    assert_eq!(next_minute.status, 200);
    assert_eq!(next_minute.header_u64("x-ratelimit-remaining-tokens"), 900);

    let stats = sim.stats().deployment("d");
    assert_eq!((stats.requests, stats.ok, stats.rate_limited), (13, 11, 2));
    assert_eq!(stats.charged_tokens, 1_100);
    sim.stop().await;
}

#[actix_rt::test]
async fn concurrent_arrivals_are_admitted_exactly_up_to_the_quota() {
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(DeploymentSpec::new("d").tpm(1_000).rpm(1_000_000)),
    )
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    let body = chat_body(92);
    let replies =
        futures_util::future::join_all((0..30).map(|_| post(&client, &url, KEY, &body))).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let limited = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!((ok, limited), (10, 20));
    sim.stop().await;
}

#[actix_rt::test]
async fn rpm_is_enforced_per_one_second_window() {
    // 120 RPM in 1 s windows: 2 requests per second.
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(DeploymentSpec::new("d").tpm(10_000_000).rpm(120)),
    )
    .await;
    sim.advance_clock(Duration::from_millis(3_250))
        .await
        .expect("manual clock");
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    let first = post(&client, &url, KEY, &chat_body(10)).await;
    assert_eq!(first.header_u64("x-ratelimit-remaining-requests"), 1);
    let second = post(&client, &url, KEY, &chat_body(10)).await;
    assert_eq!(second.header_u64("x-ratelimit-remaining-requests"), 0);
    let third = post(&client, &url, KEY, &chat_body(10)).await;
    assert_eq!(third.status, 429);
    assert_eq!(third.header_u64("retry-after-ms"), 750);
    assert_eq!(third.header_u64("retry-after"), 1);
    let message = third.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("exceeded call rate limit"), "{message}");
    sim.advance_clock(Duration::from_millis(750))
        .await
        .expect("manual clock");
    assert_eq!(post(&client, &url, KEY, &chat_body(10)).await.status, 200);
    sim.stop().await;
}

#[actix_rt::test]
async fn rpm_is_enforced_per_ten_second_window() {
    // 120 RPM in 10 s windows: 20 requests per 10 s, even all at once.
    let sim = start(SimConfig {
        rpm_window: RpmWindow::TenSeconds,
        ..SimConfig::default()
            .manual_clock()
            .deployment(DeploymentSpec::new("d").tpm(10_000_000).rpm(120))
    })
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    for _ in 0..20 {
        assert_eq!(post(&client, &url, KEY, &chat_body(10)).await.status, 200);
    }
    let refused = post(&client, &url, KEY, &chat_body(10)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header_u64("retry-after-ms"), 10_000);
    assert_eq!(refused.header_u64("retry-after"), 10);
    sim.advance_clock(Duration::from_secs(10))
        .await
        .expect("manual clock");
    assert_eq!(post(&client, &url, KEY, &chat_body(10)).await.status, 200);
    sim.stop().await;
}

#[actix_rt::test]
async fn default_rpm_follows_the_tpm() {
    // 60,000 TPM: 360 RPM, 6 per second.
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(DeploymentSpec::new("d").tpm(60_000)),
    )
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(post(&client, &url, KEY, &chat_body(10)).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429]);
    sim.stop().await;
}

#[actix_rt::test]
async fn provisioned_answers_429_once_utilisation_is_over_100_percent() {
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(DeploymentSpec::new("ptu").tpm(1_000).provisioned()),
    )
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "ptu");
    // 8 + 592 = 600 tokens each: the second goes over 100% and is still served.
    assert_eq!(post(&client, &url, KEY, &chat_body(592)).await.status, 200);
    assert_eq!(post(&client, &url, KEY, &chat_body(592)).await.status, 200);
    let refused = post(&client, &url, KEY, &chat_body(1)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header_u64("retry-after-ms"), 60_000);
    sim.advance_clock(Duration::from_secs(60))
        .await
        .expect("manual clock");
    assert_eq!(post(&client, &url, KEY, &chat_body(592)).await.status, 200);
    sim.stop().await;
}

#[actix_rt::test]
async fn requests_without_max_tokens_are_charged_the_default() {
    let sim = start(
        SimConfig::default().manual_clock().deployment(
            DeploymentSpec::new("d")
                .tpm(1_000_000)
                .default_max_tokens(500),
        ),
    )
    .await;
    let client = client();
    let body = serde_json::json!({"messages": [{"role": "user", "content": "12345678"}], "n": 2});
    let reply = post(&client, &chat_url(&sim.base_url(), "d"), KEY, &body).await;
    assert_eq!(reply.status, 200);
    // (8 + 500) x 2
    assert_eq!(
        reply.header_u64("x-ratelimit-remaining-tokens"),
        1_000_000 - 1_016
    );
    assert_eq!(sim.stats().deployment("d").charged_tokens, 1_016);
    sim.stop().await;
}
