//! Shared quotas end to end: Dispatchers (standing for processes) share one simulated
//! deployment's quota through a real redis-server the test starts on a unix socket of its own,
//! over loopback HTTP to the simulator.

mod common;

use std::time::{Duration, Instant};

use actix::Addr;
use aoai_blaster::{ChatJob, Dispatcher, GetRedisUse, GetReport, QuotaSharing, StartError};
use aoai_sim::DeploymentSpec;
use aoai_testkit::RedisServer;
use common::*;
use futures_util::future::join_all;
use serde_json::{Value, json};

/// 600 RPM counted over 1 s windows: 10 requests a second, shared.
fn paced(sim: &aoai_sim::SimHandle, name: &str) -> Value {
    let mut entry = deployment(
        sim,
        "paced",
        json!({"rpm_limit": 600, "tpm_limit": 1_000_000}),
    );
    entry["name"] = json!(name);
    entry
}

fn shared_config(
    sim: &aoai_sim::SimHandle,
    name: &str,
    shared: Value,
) -> aoai_blaster::BlasterConfig {
    config(
        json!({"num_workers": 64, "shared": shared}),
        vec![paced(sim, name)],
    )
}

async fn sharing(dispatcher: &Addr<Dispatcher>) -> Option<QuotaSharing> {
    let report = dispatcher.send(GetReport).await.expect("report");
    report[0].shared_quota
}

#[actix_rt::test]
async fn two_processes_sharing_a_quota_meet_no_429_at_the_pace_of_one() {
    let redis = RedisServer::start().expect("redis-server starts");
    let sim = start_sim(vec![DeploymentSpec::new("paced").tpm(1_000_000).rpm(600)]).await;
    let shared = json!({"redis_url": redis.url(), "expected_processes": 2});
    // Two names for the same Azure deployment: the same quota keys.
    let a = Dispatcher::start(shared_config(&sim, "a", shared.clone())).expect("a starts");
    let b = Dispatcher::start(shared_config(&sim, "b", shared)).expect("b starts");
    assert_eq!(sharing(&a).await, Some(QuotaSharing::Shared));
    let started = Instant::now();
    let jobs = (0..40).map(|i| {
        let dispatcher = if i % 2 == 0 { &a } else { &b };
        dispatcher.send(ChatJob::new(prompt(i).option("max_tokens", 20)))
    });
    assert_first_tries(join_all(jobs).await);
    let elapsed = started.elapsed();
    assert_no_429(&sim, "paced", 40).await;
    // What sharing cost each process: the ping at start and one call per lease at least; each
    // job that waited for a lease spent one ask's round trip, the others none.
    for dispatcher in [&a, &b] {
        let usage = dispatcher.send(GetRedisUse).await.expect("alive");
        let usage = usage.expect("shared: its Redis use is kept");
        assert!(usage.asks() >= 1, "{usage:?}");
        assert!(usage.calls() > usage.asks(), "{usage:?}");
        let slowest = usage.ask_quantile(1.0);
        assert!(slowest > Duration::ZERO && slowest < Duration::from_secs(1));
        assert_eq!(usage.per_job_quantile(20, 1.0), slowest);
    }
    // One process at the whole quota: four windows of ten, 3.06 s at least.
    assert!(elapsed >= Duration::from_millis(3_060), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    sim.stop().await;
}

#[actix_rt::test]
async fn redis_lost_mid_run_paces_at_one_nth_and_shares_again_when_back() {
    let mut redis = RedisServer::start().expect("redis-server starts");
    let sim = start_sim(vec![DeploymentSpec::new("paced").tpm(1_000_000).rpm(600)]).await;
    let shared = json!({"redis_url": redis.url(), "expected_processes": 2});
    let dispatcher = Dispatcher::start(shared_config(&sim, "a", shared)).expect("starts");
    let jobs = join_all(
        (0..60).map(|i| dispatcher.send(ChatJob::new(prompt(i).option("max_tokens", 20)))),
    );
    let run = actix_rt::spawn(jobs);
    let ok = |n: u64| {
        let sim = &sim;
        move || async move { http_stats(sim).await.deployment("paced").ok >= n }
    };
    wait_until(Duration::from_secs(10), ok(10)).await;
    redis.kill().expect("redis killed");
    let d = &dispatcher;
    wait_until(Duration::from_secs(10), || async move {
        sharing(d).await == Some(QuotaSharing::Local)
    })
    .await;
    wait_until(Duration::from_secs(20), ok(30)).await;
    assert_eq!(sharing(&dispatcher).await, Some(QuotaSharing::Local));
    redis.restart().expect("redis restarts");
    wait_until(Duration::from_secs(10), || async move {
        sharing(d).await == Some(QuotaSharing::Shared)
    })
    .await;
    let results = run.await.expect("jobs run");
    assert_eq!(results.len(), 60);
    for result in results {
        result.expect("dispatcher alive").expect("job succeeds");
    }
    assert_no_429(&sim, "paced", 60).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn unreachable_redis_at_start_is_an_error_or_with_fallback_local_a_local_start() {
    let sim = start_sim(vec![DeploymentSpec::new("paced").tpm(1_000_000).rpm(600)]).await;
    let gone = "redis+unix:///nonexistent/aoai-blaster-test.sock";
    let error = Dispatcher::start(shared_config(
        &sim,
        "a",
        json!({"redis_url": gone, "expected_processes": 2}),
    ))
    .expect_err("no Redis, fallback error");
    assert!(matches!(error, StartError::Shared(_)));
    assert!(
        error.to_string().contains("or set shared.fallback: local"),
        "{error}"
    );
    let local = json!({"redis_url": gone, "fallback": "local", "expected_processes": 2});
    let dispatcher = Dispatcher::start(shared_config(&sim, "a", local)).expect("local start");
    assert_eq!(sharing(&dispatcher).await, Some(QuotaSharing::Local));
    let result = dispatcher
        .send(ChatJob::new(prompt(0).option("max_tokens", 20)))
        .await
        .expect("dispatcher alive");
    assert!(result.is_ok(), "{result:?}");
    // Local from the start: no ask reached Redis; without `shared:` nothing is kept.
    let usage = dispatcher.send(GetRedisUse).await.expect("alive");
    assert_eq!(usage.map(|u| u.asks()), Some(0));
    let alone = Dispatcher::start(config(json!({}), vec![paced(&sim, "c")])).expect("starts");
    assert!(alone.send(GetRedisUse).await.expect("alive").is_none());
    sim.stop().await;
}
