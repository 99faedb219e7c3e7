//! Shared quotas end to end: Dispatchers (standing for processes) share one simulated
//! deployment's quota through a real redis-server the test starts on a unix socket of its own,
//! over loopback HTTP to the simulator.

mod common;

use std::time::{Duration, Instant};

use actix::Addr;
use aoai_blaster::{
    ChatJob, Dispatcher, EndpointReport, EndpointState, GetRedisUse, GetReport, QuotaSharing,
    StartError,
};
use aoai_sim::{DeploymentSpec, OutageMode, OutageSpec};
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
    // A stall (a lease held to its ttl, a minute's wait) would show; a loaded machine's
    // scheduling should not, so the bound is loose (5 s failed once at load 5-7).
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
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
    let killed = Instant::now();
    let d = &dispatcher;
    wait_until(Duration::from_secs(10), || async move {
        sharing(d).await == Some(QuotaSharing::Local)
    })
    .await;
    let seen_local = Instant::now();
    wait_until(Duration::from_secs(20), ok(30)).await;
    assert_eq!(sharing(&dispatcher).await, Some(QuotaSharing::Local));
    let restarting = Instant::now();
    redis.restart().expect("redis restarts");
    wait_until(Duration::from_secs(10), || async move {
        sharing(d).await == Some(QuotaSharing::Shared)
    })
    .await;
    // The report (and the CLI's summary) says how long the quota was paced locally: at least
    // from when the report first said so until Redis was started again, at most since the kill.
    let local = dispatcher.send(GetReport).await.expect("report")[0]
        .quota_local_for
        .expect("shared quota");
    assert!(local >= restarting - seen_local, "{local:?}");
    assert!(local <= killed.elapsed(), "{local:?}");
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

async fn state(dispatcher: &Addr<Dispatcher>, endpoint: &str) -> EndpointState {
    endpoint_report(dispatcher, endpoint).await.state
}

async fn endpoint_report(dispatcher: &Addr<Dispatcher>, endpoint: &str) -> EndpointReport {
    let report = dispatcher.send(GetReport).await.expect("report");
    report
        .into_iter()
        .find(|r| r.name == endpoint)
        .expect("endpoint reported")
}

/// A redis-server, a simulator where `troubled` meets `mode` for its first `secs` seconds
/// beside a healthy `spare`, and the `shared:` section for `processes` processes.
async fn troubled_and_spare(
    troubled: &str,
    mode: OutageMode,
    secs: u64,
    processes: u32,
) -> (RedisServer, aoai_sim::SimHandle, Value) {
    let redis = RedisServer::start().expect("redis-server starts");
    let sim = start_sim(vec![
        spec(troubled).outage(OutageSpec::new(mode, 0, secs)),
        spec("spare"),
    ])
    .await;
    let shared = json!({"redis_url": redis.url(), "expected_processes": processes});
    (redis, sim, shared)
}

#[actix_rt::test]
async fn a_429_one_process_meets_keeps_the_other_off_the_deployment_until_its_wait_ends() {
    // `hot` answers 429 for its first 4 s, naming the time left (Azure's headers).
    let (_redis, sim, shared) = troubled_and_spare("hot", OutageMode::Status429, 4, 2).await;
    // A knows only `hot`; B prefers `hot` and spills to `spare` only while `hot` cannot take.
    // No pacing: the cooldown alone must keep B off `hot` (an adaptive budget would also
    // learn a spent minute from the 429's `remaining-tokens: 0`).
    let unpaced = |priority: i32| json!({"adaptive": false, "priority": priority});
    let a = Dispatcher::start(config(
        json!({"shared": shared.clone()}),
        vec![deployment(&sim, "hot", unpaced(0))],
    ))
    .expect("a starts");
    let b = Dispatcher::start(config(
        json!({"shared": shared, "strategy": "priority"}),
        vec![
            deployment(&sim, "hot", unpaced(0)),
            deployment(&sim, "spare", unpaced(1)),
        ],
    ))
    .expect("b starts");

    let a_job = actix_rt::spawn(a.send(ChatJob::new(prompt(0))));
    let s = &sim;
    wait_until(Duration::from_secs(5), || async move {
        http_stats(s).await.deployment("hot").rate_limited == 1
    })
    .await;
    let met = Instant::now();
    let b_ref = &b;
    wait_until(Duration::from_secs(2), || async move {
        state(b_ref, "hot").await == EndpointState::Cooling
    })
    .await;
    let reached = met.elapsed();
    assert!(reached < Duration::from_secs(1), "{reached:?}");

    // While `hot` cools, every job of B goes to `spare`, at its first try.
    let cooling = join_all((0..8).map(|i| b.send(ChatJob::new(prompt(i)))));
    for result in cooling.await {
        let result = result.expect("b alive").expect("job succeeds");
        assert_eq!(
            (result.endpoint.as_str(), result.attempts.len()),
            ("spare", 1)
        );
    }
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("hot").requests, 1, "only A's 429");
    assert_eq!(stats.deployment("spare").ok, 8);

    // A's job goes out again when the wait ends, and succeeds: nobody met another 429.
    let a_result = a_job
        .await
        .expect("joined")
        .expect("a alive")
        .expect("a's job");
    assert_eq!(a_result.endpoint, "hot");
    wait_until(Duration::from_secs(2), || async move {
        state(b_ref, "hot").await == EndpointState::Healthy
    })
    .await;
    let after = join_all((0..8).map(|i| b.send(ChatJob::new(prompt(i)))));
    for result in after.await {
        let result = result.expect("b alive").expect("job succeeds");
        assert_eq!(result.endpoint, "hot");
    }
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("hot").rate_limited, 1);
    assert_eq!(stats.deployment("hot").ok, 1 + 8);
    assert_eq!(stats.deployment("spare").requests, 8);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_rejection_reaches_the_others_and_the_first_probe_that_succeeds_lifts_it() {
    // `gone` refuses every key for its first 2 s (a key fixed meanwhile); `spare` serves.
    let (_redis, sim, shared) = troubled_and_spare("gone", OutageMode::Status401, 2, 3).await;
    // Each prefers `gone` and spills to `spare` only while `gone` cannot take a job.
    let process = |reenable_after: &str| {
        let entry = |name: &str, priority: i32| {
            deployment(&sim, name, json!({"adaptive": false, "priority": priority}))
        };
        Dispatcher::start(config(
            json!({"shared": shared.clone(), "strategy": "priority",
                   "reenable_after": reenable_after}),
            vec![entry("gone", 0), entry("spare", 1)],
        ))
        .expect("starts")
    };
    // A probes 2-4 s after its disable; B would wait 30-60 s; C sends nothing at first.
    let (a, b, c) = (process("4s"), process("60s"), process("60s"));

    // A and B meet the 401 on their own and disable `gone`; their jobs go on to `spare`.
    let first = join_all([&a, &b].map(|d| d.send(ChatJob::new(prompt(0))))).await;
    for result in first {
        let result = result.expect("alive").expect("job succeeds");
        let endpoints: Vec<&str> = result
            .attempts
            .iter()
            .map(|a| a.endpoint.as_str())
            .collect();
        assert_eq!(endpoints, ["gone", "spare"]);
    }
    let refused = Instant::now();
    // C, healthy, takes the disable with the others' reason within a second.
    let c_ref = &c;
    wait_until(Duration::from_secs(2), || async move {
        endpoint_report(c_ref, "gone")
            .await
            .disabled_reason
            .is_some_and(|r| r.starts_with("disabled by another process: "))
    })
    .await;
    assert!(
        refused.elapsed() < Duration::from_secs(1),
        "{:?}",
        refused.elapsed()
    );
    let c_job = c.send(ChatJob::new(prompt(1))).await.expect("alive");
    assert_eq!(c_job.expect("job succeeds").endpoint, "spare");

    // A's own disable ends first: it probes (the outage is over) and recovers.
    let a_ref = &a;
    wait_until(Duration::from_secs(6), || async move {
        state(a_ref, "gone").await == EndpointState::Probing
    })
    .await;
    let probe = a.send(ChatJob::new(prompt(2))).await.expect("alive");
    assert_eq!(probe.expect("the probe succeeds").endpoint, "gone");
    let recovered = Instant::now();
    // B, disabled on its own evidence for 30 s or more, is lifted within a second.
    let b_ref = &b;
    wait_until(Duration::from_secs(2), || async move {
        state(b_ref, "gone").await == EndpointState::Healthy
    })
    .await;
    assert!(
        recovered.elapsed() < Duration::from_secs(1),
        "{:?}",
        recovered.elapsed()
    );
    let b_job = b.send(ChatJob::new(prompt(3))).await.expect("alive");
    assert_eq!(b_job.expect("job succeeds").endpoint, "gone");

    let gone = http_stats(&sim).await.deployment("gone");
    assert_eq!((gone.client_errors, gone.ok), (2, 2), "{gone:?}");
    assert_eq!(http_stats(&sim).await.deployment("spare").ok, 3);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_closing_process_gives_its_leases_back_before_it_answers() {
    use aoai_blaster::core::quota::Cost;
    use aoai_blaster::core::shared::{Grant, LEASE_TTL, LeaseAsk, LeaseLimits, LeaseSpans};
    use aoai_blaster::core::shared::{Renewal, SharedKeys};
    let redis = RedisServer::start().expect("redis-server starts");
    let sim = start_sim(vec![DeploymentSpec::new("paced").tpm(1_000_000).rpm(600)]).await;
    let cfg = shared_config(
        &sim,
        "a",
        json!({"redis_url": redis.url(), "expected_processes": 1}),
    );
    let a = Dispatcher::start(cfg.clone()).expect("a starts");
    let jobs = (0..3).map(|i| a.send(ChatJob::new(prompt(i).option("max_tokens", 20))));
    assert_first_tries(join_all(jobs).await);
    a.send(aoai_blaster::Close).await.expect("closes");
    // Every lease went back with its use: all but the few hundred tokens the three jobs were
    // charged is free at once, not after the leases' 2 s plus the minute.
    let shared = cfg.shared.as_ref().expect("shared");
    let d = &cfg.deployments[0];
    let keys = SharedKeys::new(&shared.key_prefix, &d.endpoint, &d.model);
    let limits = LeaseLimits::new(d.rpm_limit, d.tpm_limit, cfg.rpm_window);
    let mut other = aoai_blaster::shared::SharedRedis::new(&shared.redis_url).expect("client");
    let most = Cost {
        tokens: 999_000,
        requests: 1,
    };
    let renewal = Renewal {
        give_back: None,
        ask: Some(LeaseAsk {
            want: most,
            at_least: most,
        }),
    };
    let spans = LeaseSpans::new(LEASE_TTL, cfg.rpm_window);
    let grant = other.renew(&keys, limits, spans, &renewal).await;
    assert!(
        matches!(grant, Ok(Some(Grant::Granted { cost, .. })) if cost == most),
        "{grant:?}"
    );
    sim.stop().await;
}
