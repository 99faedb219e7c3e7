//! Whole-reply bounds, health that tolerates flakiness, and supervision of a panicking endpoint
//! actor, end to end over loopback HTTP against the simulator (issue 12, items 2, 3 and 6).

mod common;

use std::time::{Duration, Instant};

use aoai_blaster::core::health::HealthState;
use aoai_blaster::core::retry::AttemptKind;
use aoai_blaster::test_hooks;
use aoai_blaster::{ChatJob, Dispatcher, GetReport, HealthEvent, JobErrorKind};
use aoai_sim::{FaultSpec, LatencySpec};
use common::*;
use futures_util::future::join_all;
use serde_json::json;

fn latency(ttft_ms: u64, per_token_ms: u64) -> LatencySpec {
    LatencySpec {
        ttft_ms,
        per_token_ms,
        jitter_ms: 0,
    }
}

#[actix_rt::test]
async fn a_plain_reply_over_max_reply_bytes_fails_the_job_at_once() {
    let sim = start_sim(vec![spec("big").reply_tokens(40)]).await;
    let config = config(
        json!({"max_reply_bytes": 100}),
        vec![deployment(&sim, "big", json!({}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let error = dispatcher
        .send(ChatJob::new(prompt(1)))
        .await
        .expect("dispatcher alive")
        .expect_err("the reply is larger than 100 bytes");
    assert_eq!(error.kind, JobErrorKind::ReplyTooLarge { limit: 100 });
    assert_eq!(error.code(), "reply_too_large");
    assert_eq!(error.attempts.len(), 1, "not retried: {error}");
    assert_eq!(error.attempts[0].kind, AttemptKind::JobFatal);
    assert_eq!(error.reply(), None, "no HTTP error to show");
    assert_eq!(http_stats(&sim).await.deployment("big").requests, 1);
    let report = dispatcher.send(GetReport).await.expect("report");
    assert_eq!(report[0].state.as_str(), "healthy", "the endpoint is fine");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_stream_over_max_reply_bytes_fails_the_job_at_once() {
    let sim = start_sim(vec![spec("big").reply_tokens(40)]).await;
    let config = config(
        json!({}),
        vec![deployment(&sim, "big", json!({"max_reply_bytes": 600}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let error = dispatcher
        .send(ChatJob::new(prompt(1)).streamed())
        .await
        .expect("dispatcher alive")
        .expect_err("40 chunks are more than 600 bytes");
    assert_eq!(error.kind, JobErrorKind::ReplyTooLarge { limit: 600 });
    assert_eq!(error.attempts.len(), 1, "not retried: {error}");
    assert!(
        error.attempts[0]
            .outcome
            .starts_with("reply larger than max_reply_bytes (600 bytes)"),
        "{error}"
    );
    assert_eq!(http_stats(&sim).await.deployment("big").requests, 1);
    // A reply under the cap still comes through.
    let roomy = common::config(json!({}), vec![deployment(&sim, "big", json!({}))]);
    let dispatcher = Dispatcher::start(roomy).expect("dispatcher starts");
    dispatcher
        .send(ChatJob::new(prompt(2)).streamed())
        .await
        .expect("dispatcher alive")
        .expect("64 MiB is plenty");
    sim.stop().await;
}

#[actix_rt::test]
async fn request_timeout_cuts_a_stream_that_keeps_trickling() {
    // 200 tokens, one every 20 ms: 4 s in all, never silent for stream_idle_timeout (1 s).
    let sim = start_sim(vec![
        spec("trickle").reply_tokens(200).latency(latency(0, 20)),
    ])
    .await;
    let config = config(
        json!({"request_timeout": "300ms", "max_job_retry": 1}),
        vec![deployment(&sim, "trickle", json!({}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let started = Instant::now();
    let error = dispatcher
        .send(ChatJob::new(prompt(1)).streamed())
        .await
        .expect("dispatcher alive")
        .expect_err("the stream outlives request_timeout");
    assert_eq!(error.kind, JobErrorKind::RetriesExhausted, "{error}");
    assert_eq!(error.attempts.len(), 2, "{error}");
    for attempt in &error.attempts {
        assert_eq!(attempt.kind, AttemptKind::Transient);
        assert_eq!(
            attempt.outcome,
            "timeout stream not complete within 0.3s (request_timeout)"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut at 300 ms per attempt, not after the 4 s stream: {:?}",
        started.elapsed()
    );
    assert_eq!(http_stats(&sim).await.deployment("trickle").requests, 2);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_deployment_failing_one_request_in_ten_fast_is_never_disabled() {
    // Failures come back at once, successes after 50 ms: with 64 in flight, a wave's ~6
    // failures all finish before its successes. Counted in finishing order, that is a streak
    // of 5 (auto_disable_threshold's default) nearly every wave.
    let faults = FaultSpec {
        p_500: 0.1,
        ..FaultSpec::default()
    };
    let sim = start_sim(vec![spec("flaky").latency(latency(50, 0)).faults(faults)]).await;
    let config = config(
        json!({"num_workers": 64}),
        vec![deployment(&sim, "flaky", json!({}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let collector = collect_reports(&dispatcher).await;
    let jobs = (0..300).map(|i| dispatcher.send(ChatJob::new(prompt(i))));
    for result in join_all(jobs).await {
        result
            .expect("dispatcher alive")
            .expect("every job succeeds");
    }
    let disables: Vec<String> = collector
        .send(Seen)
        .await
        .expect("collector alive")
        .iter()
        .filter(|r| matches!(r.health.state, HealthState::Disabled { .. }))
        .map(|r| r.health.state.to_string())
        .collect();
    assert_eq!(disables, Vec::<String>::new());
    let stats = http_stats(&sim).await.deployment("flaky");
    assert_eq!(stats.ok, 300);
    assert_eq!(stats.requests, 300 + stats.server_errors);
    assert!(stats.server_errors > 0, "the deployment did fail sometimes");
    sim.stop().await;
}

/// Runs 20 slow jobs on `name`, plans a panic with `plan` once they are all in flight, sends
/// one more, and checks that the supervisor restarted the actor by itself and every job was
/// answered once: lost, then a success.
async fn a_panic_mid_run_loses_no_job(name: &str, plan: fn(&str)) {
    let sim = start_sim(vec![spec(name).latency(latency(300, 0))]).await;
    // No pacing: an adaptive budget would probe the unknown deployment with 8 calls first.
    let config = config(
        json!({"num_workers": 32}),
        vec![deployment(&sim, name, json!({"adaptive": false}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let collector = collect_reports(&dispatcher).await;
    let mut jobs: Vec<_> = (0..20)
        .map(|i| actix_rt::spawn(dispatcher.send(ChatJob::new(prompt(i)))))
        .collect();
    wait_until(Duration::from_secs(5), || async {
        sim.stats().deployment(name).in_flight == 20
    })
    .await;
    // The next attempt makes the actor panic while 20 calls are in flight.
    plan(name);
    jobs.push(actix_rt::spawn(dispatcher.send(ChatJob::new(prompt(20)))));
    for job in jobs {
        let result = job
            .await
            .expect("task ran")
            .expect("dispatcher alive")
            .expect("the job survives the panic");
        let kinds: Vec<AttemptKind> = result.attempts.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, vec![AttemptKind::Lost, AttemptKind::Success]);
    }
    let report = dispatcher.send(GetReport).await.expect("report");
    assert_eq!(report[0].counts.restarts, 1);
    assert_eq!(report[0].counts.lost, 21);
    assert_eq!(report[0].counts.successes, 21);
    assert_eq!(report[0].state.as_str(), "healthy");
    let restarts = collector
        .send(Seen)
        .await
        .expect("collector alive")
        .iter()
        .filter(|r| r.event == HealthEvent::Restarted)
        .count();
    assert_eq!(restarts, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn an_endpoint_actor_that_panics_mid_run_is_restarted_and_loses_no_job() {
    a_panic_mid_run_loses_no_job("panicky", test_hooks::panic_on_next_attempt).await;
}

#[actix_rt::test]
async fn a_panic_inside_an_http_call_restarts_the_actor_and_loses_no_job() {
    a_panic_mid_run_loses_no_job("panicky-call", test_hooks::panic_in_next_call).await;
}
