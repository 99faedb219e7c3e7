//! Retries, cooldowns, disabling and fail-fast, end to end over loopback HTTP, with exact
//! upstream counts from the simulator's `/stats`.

mod common;

use std::time::Duration;

use aoai_blaster::{ChatJob, Dispatcher, HealthEvent, HealthReport, JobErrorKind};
use aoai_blaster::{GetReport, RestartEndpoint, Subscribe};
use aoai_sim::{DeploymentSpec, FaultSpec, LatencySpec, OutageSpec};
use common::*;
use futures_util::future::join_all;
use serde_json::json;

fn faults(edit: impl FnOnce(&mut FaultSpec)) -> FaultSpec {
    let mut faults = FaultSpec::default();
    edit(&mut faults);
    faults
}

#[actix_rt::test]
async fn two_retries_make_exactly_three_upstream_calls() {
    let sim = start_sim(vec![spec("broken").faults(faults(|f| f.p_500 = 1.0))]).await;
    let config = config(
        json!({"max_job_retry": 2, "auto_disable_threshold": 10}),
        vec![deployment(&sim, "broken", json!({}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let error = dispatcher
        .send(ChatJob::new(prompt(1)))
        .await
        .expect("dispatcher alive")
        .expect_err("every attempt fails");
    assert!(
        matches!(error.kind, JobErrorKind::RetriesExhausted),
        "{error}"
    );
    assert_eq!(error.attempts.len(), 3, "{error}");
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("broken").requests, 3);
    assert_eq!(stats.deployment("broken").server_errors, 3);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_dead_endpoint_among_live_ones_costs_no_job() {
    let sim = start_sim(vec![
        spec("live"),
        spec("dead")
            .own_listener()
            .outage(OutageSpec::refuse(0, 3600)),
    ])
    .await;
    let config = config(
        json!({"num_workers": 16}),
        vec![
            deployment(&sim, "live", json!({})),
            deployment(&sim, "dead", json!({})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let jobs = (0..200).map(|i| dispatcher.send(ChatJob::new(prompt(i))));
    for result in join_all(jobs).await {
        let result = result.expect("dispatcher alive").expect("job succeeds");
        assert_eq!(result.endpoint, "live");
    }
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("live").ok, 200);
    assert_eq!(stats.deployment("dead").ok, 0);
    let report = dispatcher.send(GetReport).await.expect("report");
    let dead = report
        .iter()
        .find(|r| r.name == "dead")
        .expect("dead reported");
    assert!(dead.counts.errors + dead.counts.timeouts >= 1, "{dead}");
    assert_eq!(dead.counts.successes, 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn when_every_endpoint_is_dead_jobs_fail_fast_with_every_attempt() {
    let sim = start_sim(vec![
        spec("a").own_listener().outage(OutageSpec::refuse(0, 3600)),
        spec("b").own_listener().outage(OutageSpec::refuse(0, 3600)),
    ])
    .await;
    let config = config(
        json!({"auto_disable_threshold": 3, "max_job_retry": 10, "reenable_after": "never"}),
        vec![
            deployment(&sim, "a", json!({})),
            deployment(&sim, "b", json!({})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let jobs = (0..20).map(|i| dispatcher.send(ChatJob::new(prompt(i))));
    let results = tokio::time::timeout(Duration::from_secs(20), join_all(jobs))
        .await
        .expect("no job hangs when every endpoint is dead");
    let mut attempts_seen = 0;
    for result in results {
        let error = result
            .expect("dispatcher alive")
            .expect_err("no endpoint can answer");
        assert!(
            matches!(
                error.kind,
                JobErrorKind::AllEndpointsDisabled | JobErrorKind::RetriesExhausted
            ),
            "{error}"
        );
        attempts_seen += error.attempts.len();
    }
    assert!(
        attempts_seen >= 6,
        "both endpoints were tried to their threshold"
    );
    // Once both are disabled, a new job fails at once, naming the reason.
    let error = dispatcher
        .send(ChatJob::new(prompt(99)))
        .await
        .expect("dispatcher alive")
        .expect_err("all endpoints are disabled");
    assert!(
        matches!(error.kind, JobErrorKind::AllEndpointsDisabled),
        "{error}"
    );
    let report = dispatcher.send(GetReport).await.expect("report");
    for endpoint in &report {
        assert_eq!(endpoint.state.as_str(), "disabled", "{endpoint}");
        assert!(endpoint.disabled_reason.is_some());
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn a_rate_limit_storm_is_absorbed_without_spending_retries() {
    // 300 RPM over 1 s windows: 5 requests per second; 15 concurrent jobs need three seconds.
    let sim = start_sim(vec![DeploymentSpec::new("tight").tpm(1_000_000).rpm(300)]).await;
    let config = config(
        json!({"max_job_retry": 0}),
        vec![deployment(&sim, "tight", json!({}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let jobs = (0..15).map(|i| dispatcher.send(ChatJob::new(prompt(i))));
    let mut rate_limited_attempts = 0;
    for result in join_all(jobs).await {
        let result = result
            .expect("dispatcher alive")
            .expect("429s are waited out");
        rate_limited_attempts += result.attempts.len() - 1;
    }
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("tight").ok, 15);
    assert!(
        stats.deployment("tight").rate_limited >= 1,
        "the storm happened"
    );
    assert_eq!(
        stats.deployment("tight").rate_limited as usize,
        rate_limited_attempts,
        "every 429 is recorded in the job's attempts"
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn timeouts_back_off_then_disable_the_endpoint_with_its_reason() {
    let sim = start_sim(vec![spec("hangs").faults(faults(|f| {
        f.p_hang = 1.0;
        f.hang_secs = 30;
    }))])
    .await;
    let config = config(
        json!({
            "request_timeout": "150ms",
            "auto_disable_threshold": 3,
            "max_job_retry": 10,
            "reenable_after": "never",
        }),
        vec![deployment(&sim, "hangs", json!({}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let error = dispatcher
        .send(ChatJob::new(prompt(1)))
        .await
        .expect("dispatcher alive")
        .expect_err("the endpoint never answers");
    assert!(
        matches!(error.kind, JobErrorKind::AllEndpointsDisabled),
        "{error}"
    );
    assert_eq!(error.attempts.len(), 3, "{error}");
    assert!(error.to_string().contains("timeout"), "{error}");
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("hangs").hangs, 3);
    let report = dispatcher.send(GetReport).await.expect("report");
    assert_eq!(report[0].state.as_str(), "disabled");
    assert_eq!(report[0].counts.timeouts, 3);
    sim.stop().await;
}

#[actix_rt::test]
async fn content_filter_rejections_surface_at_once() {
    let sim = start_sim(vec![
        spec("strict").faults(faults(|f| f.p_content_filter = 1.0)),
    ])
    .await;
    let config = config(json!({}), vec![deployment(&sim, "strict", json!({}))]);
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let error = dispatcher
        .send(ChatJob::new(prompt(1)))
        .await
        .expect("dispatcher alive")
        .expect_err("a filtered prompt is not retried");
    match &error.kind {
        JobErrorKind::Rejected(api) => {
            assert_eq!(api.status, 400);
            assert_eq!(api.code.as_deref(), Some("content_filter"));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(http_stats(&sim).await.deployment("strict").requests, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn wrong_credentials_and_missing_deployments_disable_only_their_endpoint() {
    let sim = start_sim(vec![spec("good")]).await;
    let config = config(
        json!({}),
        vec![
            deployment(&sim, "good", json!({})),
            deployment(
                &sim,
                "badkey",
                json!({"model": "good", "api_key": "not-the-key"}),
            ),
            deployment(&sim, "missing", json!({"model": "no-such-deployment"})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    for i in 0..30 {
        let result = dispatcher
            .send(ChatJob::new(prompt(i)))
            .await
            .expect("dispatcher alive")
            .expect("the good endpoint answers every job");
        assert_eq!(result.endpoint, "good");
    }
    let report = dispatcher.send(GetReport).await.expect("report");
    let by_name = |name: &str| report.iter().find(|r| r.name == name).expect("reported");
    assert_eq!(by_name("good").state.as_str(), "healthy");
    assert_eq!(by_name("badkey").state.as_str(), "disabled");
    assert_eq!(by_name("badkey").counts.requests, 1, "one 401 is enough");
    assert!(
        by_name("badkey")
            .disabled_reason
            .as_deref()
            .unwrap_or("")
            .contains("401")
    );
    assert_eq!(by_name("missing").state.as_str(), "disabled");
    assert!(
        by_name("missing")
            .disabled_reason
            .as_deref()
            .unwrap_or("")
            .contains("404")
    );
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("good").ok, 30);
    sim.stop().await;
}

/// Collects health reports for a test.
struct Collector(std::sync::Arc<std::sync::Mutex<Vec<HealthReport>>>);

impl actix::Actor for Collector {
    type Context = actix::Context<Self>;
}

impl actix::Handler<HealthReport> for Collector {
    type Result = ();
    fn handle(&mut self, report: HealthReport, _: &mut Self::Context) {
        self.0.lock().expect("not poisoned").push(report);
    }
}

#[actix_rt::test]
async fn a_supervisor_restart_loses_no_in_flight_job() {
    use actix::Actor;
    let sim = start_sim(vec![spec("slow").latency(LatencySpec {
        ttft_ms: 300,
        per_token_ms: 0,
        jitter_ms: 0,
    })])
    .await;
    // No pacing: an adaptive budget would probe the unknown deployment with 8 calls first.
    let config = config(
        json!({"num_workers": 32}),
        vec![deployment(&sim, "slow", json!({"adaptive": false}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let collector = Collector(seen.clone()).start();
    dispatcher
        .send(Subscribe(collector.recipient()))
        .await
        .expect("subscribed");
    let jobs: Vec<_> = (0..20)
        .map(|i| actix_rt::spawn(dispatcher.send(ChatJob::new(prompt(i)))))
        .collect();
    wait_until(Duration::from_secs(5), || async {
        aoai_sim_in_flight(&sim).await == 20
    })
    .await;
    assert!(
        dispatcher
            .send(RestartEndpoint("slow".into()))
            .await
            .expect("restart accepted")
    );
    for job in jobs {
        let result = job
            .await
            .expect("task ran")
            .expect("dispatcher alive")
            .expect("the job survives the restart");
        assert_eq!(
            result.attempts.len(),
            2,
            "one lost attempt, then the answer"
        );
    }
    let report = dispatcher.send(GetReport).await.expect("report");
    assert_eq!(report[0].counts.restarts, 1);
    assert_eq!(report[0].counts.lost, 20);
    let reports = seen.lock().expect("not poisoned").clone();
    assert!(reports.iter().any(|r| r.event == HealthEvent::Restarted));
    sim.stop().await;
}

async fn aoai_sim_in_flight(sim: &aoai_sim::SimHandle) -> u64 {
    sim.stats().deployment("slow").in_flight
}

#[actix_rt::test]
async fn a_job_larger_than_every_quota_fails_at_once_saying_it_never_fits() {
    let sim = start_sim(vec![spec("small")]).await;
    let config = config(
        json!({}),
        vec![deployment(
            &sim,
            "small",
            json!({"tpm_limit": 1000, "rpm_limit": 6}),
        )],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let error = dispatcher
        .send(ChatJob::new(prompt(1).max_completion_tokens(5000)))
        .await
        .expect("dispatcher alive")
        .expect_err("5,000 tokens never fit a 1,000 TPM quota");
    match error.kind {
        JobErrorKind::NeverFits {
            tokens,
            largest_capacity,
        } => {
            assert!(tokens > 5000, "prompt plus max tokens: {tokens}");
            assert_eq!(largest_capacity, 1000);
        }
        other => panic!("expected never-fits, got {other:?}"),
    }
    assert!(error.to_string().contains("1000"), "{error}");
    // A job that fits still runs.
    dispatcher
        .send(ChatJob::new(prompt(2).max_completion_tokens(100)))
        .await
        .expect("dispatcher alive")
        .expect("a small job fits");
    assert_eq!(http_stats(&sim).await.deployment("small").requests, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_disabled_endpoint_is_probed_and_comes_back_when_reenable_after_is_set() {
    let sim = start_sim(vec![spec("steady"), spec("flaky").own_listener()]).await;
    sim.set_refusing("flaky", true)
        .await
        .expect("flaky has its own listener");
    let config = config(
        json!({"auto_disable_threshold": 2, "reenable_after": "100ms", "num_workers": 4}),
        vec![
            deployment(&sim, "steady", json!({})),
            deployment(&sim, "flaky", json!({})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let report_of = |name: &'static str| {
        let dispatcher = dispatcher.clone();
        async move {
            let report = dispatcher.send(GetReport).await.expect("report");
            report
                .into_iter()
                .find(|r| r.name == name)
                .expect("reported")
        }
    };
    let mut next = 0;
    // Keep jobs flowing until the refused endpoint is disabled...
    while report_of("flaky").await.state.as_str() != "disabled" {
        dispatcher
            .send(ChatJob::new(prompt(next)))
            .await
            .expect("dispatcher alive")
            .expect("the steady endpoint answers");
        next += 1;
        assert!(next < 200, "flaky was never disabled");
    }
    // ...then let it accept connections again: a probe finds it and it is used again.
    sim.set_refusing("flaky", false)
        .await
        .expect("listener back up");
    while report_of("flaky").await.counts.successes == 0 {
        dispatcher
            .send(ChatJob::new(prompt(next)))
            .await
            .expect("dispatcher alive")
            .expect("every job is answered");
        next += 1;
        assert!(next < 5000, "flaky was never re-enabled");
    }
    assert_eq!(report_of("flaky").await.state.as_str(), "healthy");
    assert!(http_stats(&sim).await.deployment("flaky").ok >= 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn job_deadline_bounds_a_job_that_keeps_failing() {
    let sim = start_sim(vec![spec("broken").faults(faults(|f| f.p_503 = 1.0))]).await;
    let config = config(
        json!({
            "max_job_retry": 1000,
            "auto_disable_threshold": 1000,
            "backoff_base": "50ms",
            "backoff_max": "50ms",
            "job_deadline": "400ms",
        }),
        vec![deployment(&sim, "broken", json!({}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let started = std::time::Instant::now();
    let error = dispatcher
        .send(ChatJob::new(prompt(1)))
        .await
        .expect("dispatcher alive")
        .expect_err("the deployment always fails");
    assert!(
        matches!(error.kind, JobErrorKind::DeadlineExceeded),
        "{error}"
    );
    assert!(
        error.attempts.len() >= 2,
        "it kept trying until the deadline: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline bounded the job"
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn a_day_long_retry_after_disables_the_endpoint_and_says_why() {
    let sim = start_sim(vec![
        spec("steady"),
        spec("exhausted").faults(faults(|f| f.p_429 = 1.0)),
    ])
    .await;
    let config = config(
        json!({"retry_after_cap": "5m"}),
        vec![
            deployment(&sim, "steady", json!({})),
            deployment(&sim, "exhausted", json!({})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    for i in 0..20 {
        let result = dispatcher
            .send(ChatJob::new(prompt(i)))
            .await
            .expect("dispatcher alive")
            .expect("the steady endpoint answers");
        assert_eq!(result.endpoint, "steady");
    }
    let report = dispatcher.send(GetReport).await.expect("report");
    let exhausted = report
        .iter()
        .find(|r| r.name == "exhausted")
        .expect("reported");
    assert_eq!(exhausted.state.as_str(), "disabled", "{exhausted}");
    assert_eq!(
        exhausted.counts.rate_limited, 1,
        "one 429 was enough: {exhausted}"
    );
    let reason = exhausted.disabled_reason.as_deref().unwrap_or("");
    assert!(reason.contains("retry_after_cap"), "{reason}");
    assert!(
        exhausted.cooling_until.is_some(),
        "it comes back when the wait is over"
    );
    sim.stop().await;
}
