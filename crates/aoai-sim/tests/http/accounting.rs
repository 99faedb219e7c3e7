//! The ways of counting Azure might use, per deployment, over HTTP on a manual clock:
//! `token_charge`, `rpm_window`, `window` (fixed or sliding) and `remaining_headers`.

use std::time::Duration;

use aoai_sim::{
    DeploymentSpec, MinimumJob, QuotaWindow, RemainingHeaders, RpmWindow, SimConfig, SimHandle,
    TokenCharge, minimum_makespan,
};
use serde_json::json;

use crate::common::{KEY, Reply, chat_body, chat_url, client, post, start};

async fn advance(sim: &SimHandle, millis: u64) {
    sim.advance_clock(Duration::from_millis(millis))
        .await
        .expect("manual clock");
}

async fn send(sim: &SimHandle, deployment: &str, max_tokens: u64) -> Reply {
    let url = chat_url(&sim.base_url(), deployment);
    post(&client(), &url, KEY, &chat_body(max_tokens)).await
}

#[actix_rt::test]
async fn each_token_charge_rule_charges_its_own_estimate() {
    // chat_body: one message "12345678": prompt estimate 3 + 2 + 3 = 8, characters ⌈8/4⌉ = 2.
    let spec = |name: &str, charge| {
        DeploymentSpec::new(name)
            .tpm(1_000)
            .rpm(1_000_000)
            .token_charge(charge)
    };
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(DeploymentSpec::new("default").tpm(1_000).rpm(1_000_000))
            .deployment(spec("prompt", TokenCharge::PromptPlusMax))
            .deployment(spec("max", TokenCharge::MaxOnly))
            .deployment(spec("chars", TokenCharge::CharsPlusMax)),
    )
    .await;
    for (name, charged) in [
        ("default", 100),
        ("prompt", 100),
        ("max", 92),
        ("chars", 94),
    ] {
        let reply = send(&sim, name, 92).await;
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(
            reply.header_u64("x-ratelimit-remaining-tokens"),
            1_000 - charged,
            "{name}"
        );
        assert_eq!(sim.stats().deployment(name).charged_tokens, charged);
        // The reply's usage still reports the prompt estimate, whatever the charge.
        assert_eq!(reply.json()["usage"]["prompt_tokens"], 8, "{name}");
    }
    // n and a missing max_tokens (default_max_tokens 4096) apply to every rule:
    // max_only charges (4096) × 2 — over the 1,000 TPM: refused.
    let url = chat_url(&sim.base_url(), "max");
    let body = json!({"messages": [{"role": "user", "content": "12345678"}], "n": 2});
    assert_eq!(post(&client(), &url, KEY, &body).await.status, 429);
    // max_only: 100 per request: 9 more fit (92 + 9 × 100 = 992), the next does not.
    for _ in 0..9 {
        assert_eq!(send(&sim, "max", 100).await.status, 200);
    }
    let refused = send(&sim, "max", 100).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header_u64("x-ratelimit-remaining-tokens"), 8);
    assert_eq!(send(&sim, "max", 8).await.status, 200);
    assert_eq!(sim.stats().deployment("max").charged_tokens, 1_000);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_deployment_rpm_window_overrides_the_simulators() {
    // 120 RPM each; the simulator's window is 1 s.
    let spec = |name: &str| DeploymentSpec::new(name).tpm(10_000_000).rpm(120);
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(spec("global"))
            .deployment(spec("ten").rpm_window(RpmWindow::TenSeconds))
            .deployment(spec("sixty").rpm_window(RpmWindow::SixtySeconds)),
    )
    .await;
    advance(&sim, 2_500).await;
    for (name, allowed, retry_ms) in [
        ("global", 2, 500),
        ("ten", 20, 7_500),
        ("sixty", 120, 57_500),
    ] {
        for i in 0..allowed {
            let reply = send(&sim, name, 1).await;
            assert_eq!(reply.status, 200, "{name} {i}");
            assert_eq!(
                reply.header_u64("x-ratelimit-remaining-requests"),
                allowed - 1 - i
            );
        }
        let refused = send(&sim, name, 1).await;
        assert_eq!(refused.status, 429, "{name}");
        assert_eq!(refused.header_u64("retry-after-ms"), retry_ms, "{name}");
    }
    // The 60 s window turns with the minute.
    advance(&sim, 57_500).await;
    assert_eq!(send(&sim, "sixty", 1).await.status, 200);
    let stats = sim.stats();
    let ok: Vec<u64> = ["global", "ten", "sixty"]
        .iter()
        .map(|name| stats.deployment(name).ok)
        .collect();
    assert_eq!(ok, [2, 20, 121]);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_sliding_minute_frees_each_charge_sixty_seconds_after_it() {
    // 300 TPM, 100-token requests, side by side: fixed (the default) and sliding.
    let spec = |name: &str| DeploymentSpec::new(name).tpm(300).rpm(1_000_000);
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(spec("fixed"))
            .deployment(spec("sliding").window(QuotaWindow::Sliding)),
    )
    .await;
    // Sent at 0 s, 20 s and 40 s: both minutes are full.
    for step in 0..3 {
        if step > 0 {
            advance(&sim, 20_000).await;
        }
        for name in ["fixed", "sliding"] {
            assert_eq!(send(&sim, name, 92).await.status, 200, "{name} {step}");
        }
    }
    advance(&sim, 10_000).await; // 50 s
    for name in ["fixed", "sliding"] {
        let refused = send(&sim, name, 92).await;
        assert_eq!(refused.status, 429, "{name}");
        assert_eq!(refused.header_u64("x-ratelimit-remaining-tokens"), 0);
        // Both: 10 s (the minute turns / the 0 s charge slides out).
        assert_eq!(refused.header_u64("retry-after-ms"), 10_000, "{name}");
    }
    // 150 tokens: the fixed minute turns at 60 s; the sliding one needs 0 s and 20 s gone.
    for (name, retry_ms) in [("fixed", 10_000), ("sliding", 30_000)] {
        let refused = send(&sim, name, 142).await;
        assert_eq!(refused.status, 429, "{name}");
        assert_eq!(refused.header_u64("retry-after-ms"), retry_ms, "{name}");
    }
    advance(&sim, 10_000).await; // 60 s
    let fixed = send(&sim, "fixed", 92).await;
    assert_eq!(fixed.header_u64("x-ratelimit-remaining-tokens"), 200);
    let sliding = send(&sim, "sliding", 92).await;
    assert_eq!(sliding.status, 200);
    // 20 s, 40 s and 60 s are still in the last minute.
    assert_eq!(sliding.header_u64("x-ratelimit-remaining-tokens"), 0);
    advance(&sim, 19_999).await; // a millisecond before 20 s slides out
    assert_eq!(send(&sim, "sliding", 92).await.status, 429);
    advance(&sim, 1).await;
    let freed = send(&sim, "sliding", 92).await;
    assert_eq!(freed.status, 200);
    assert_eq!(freed.header_u64("x-ratelimit-remaining-tokens"), 0);
    let stats = sim.stats().deployment("sliding");
    assert_eq!(
        (stats.ok, stats.rate_limited, stats.charged_tokens),
        (5, 3, 500)
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn a_sliding_request_window_counts_the_last_ten_seconds() {
    // 120 RPM in 10 s windows: 20 in any 10 s.
    let spec = |name: &str| {
        DeploymentSpec::new(name)
            .tpm(10_000_000)
            .rpm(120)
            .rpm_window(RpmWindow::TenSeconds)
    };
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(spec("fixed"))
            .deployment(spec("sliding").window(QuotaWindow::Sliding)),
    )
    .await;
    advance(&sim, 5_000).await;
    for _ in 0..20 {
        for name in ["fixed", "sliding"] {
            assert_eq!(send(&sim, name, 1).await.status, 200);
        }
    }
    advance(&sim, 5_000).await; // 10 s: the fixed window turns, the sliding one holds 20
    let fixed = send(&sim, "fixed", 1).await;
    assert_eq!(fixed.status, 200);
    assert_eq!(fixed.header_u64("x-ratelimit-remaining-requests"), 19);
    let sliding = send(&sim, "sliding", 1).await;
    assert_eq!(sliding.status, 429);
    assert_eq!(sliding.header_u64("retry-after-ms"), 5_000);
    assert_eq!(sliding.header_u64("x-ratelimit-remaining-requests"), 0);
    let message = sliding.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("exceeded call rate limit"), "{message}");
    advance(&sim, 5_000).await; // 15 s: all 20 slid out
    for i in 0..20 {
        assert_eq!(send(&sim, "sliding", 1).await.status, 200, "{i}");
    }
    assert_eq!(send(&sim, "sliding", 1).await.status, 429);
    sim.stop().await;
}

#[actix_rt::test]
async fn unknown_remaining_headers_say_minus_one() {
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(
                DeploymentSpec::new("unknown")
                    .tpm(200)
                    .rpm(60)
                    .remaining_headers(RemainingHeaders::Unknown),
            )
            .deployment(DeploymentSpec::new("ptu").tpm(200).provisioned()),
    )
    .await;
    let ok = send(&sim, "unknown", 92).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-ratelimit-remaining-tokens"), Some("-1"));
    assert_eq!(ok.header("x-ratelimit-remaining-requests"), Some("-1"));
    // Refused (1 request a second): still -1, and the retry headers as usual.
    let refused = send(&sim, "unknown", 92).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("x-ratelimit-remaining-tokens"), Some("-1"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("-1"));
    assert_eq!(refused.header_u64("retry-after-ms"), 1_000);
    // The quota is counted as ever: 100 + 100 fill the minute.
    advance(&sim, 1_000).await;
    assert_eq!(send(&sim, "unknown", 92).await.status, 200);
    advance(&sim, 1_000).await;
    assert_eq!(send(&sim, "unknown", 92).await.status, 429);
    assert_eq!(sim.stats().deployment("unknown").charged_tokens, 200);
    // Exact (the default) without a request limit: the tokens header only, as before.
    let ptu = send(&sim, "ptu", 92).await;
    assert_eq!(ptu.header_u64("x-ratelimit-remaining-tokens"), 100);
    assert_eq!(ptu.header("x-ratelimit-remaining-requests"), None);
    sim.stop().await;
}

#[actix_rt::test]
async fn the_minimum_schedule_is_admitted_exactly_over_http() {
    // 200 TPM, 1 request per 10 s, sliding: jobs of 100, 100 and 200 tokens. The minimum sends
    // them at 0 s, 10 s and 70 s (the 200 waits for both 100s to slide out); at 60 s it would
    // be refused, at 70 s it is admitted.
    let spec = DeploymentSpec::new("d")
        .tpm(200)
        .rpm(6)
        .rpm_window(RpmWindow::TenSeconds)
        .window(QuotaWindow::Sliding);
    let config = SimConfig::default().manual_clock().deployment(spec);
    let job = |max_tokens| {
        MinimumJob::new(
            vec![json!({"role": "user", "content": "12345678"})],
            Some(max_tokens),
        )
    };
    let jobs = [job(92), job(92), job(192)];
    assert_eq!(
        minimum_makespan(&config, &jobs),
        Some(Duration::from_secs(70))
    );
    let sim = start(config).await;
    assert_eq!(send(&sim, "d", 92).await.status, 200);
    advance(&sim, 10_000).await;
    assert_eq!(send(&sim, "d", 92).await.status, 200);
    advance(&sim, 50_000).await;
    let early = send(&sim, "d", 192).await;
    assert_eq!(early.status, 429);
    assert_eq!(early.header_u64("retry-after-ms"), 10_000);
    advance(&sim, 10_000).await;
    assert_eq!(send(&sim, "d", 192).await.status, 200);
    sim.stop().await;
}
