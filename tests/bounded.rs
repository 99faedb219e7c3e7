//! Every job ends in bounded time, with an error that says why (issue 12), over loopback HTTP
//! against the simulator.

mod common;

use aoai_blaster::{ChatJob, Dispatcher};
use aoai_sim::{DeploymentSpec, FaultSpec, RetryHeader, RetryHeaders};
use common::*;
use futures_util::future::join_all;
use serde_json::json;

/// A deployment that answers every request with a 429 asking for a day's wait, as Azure does
/// when a daily quota is spent.
fn spent_for_a_day(name: &str) -> DeploymentSpec {
    let mut faults = FaultSpec {
        p_429: 1.0,
        ..FaultSpec::default()
    };
    faults.retry_after_secs = 86_400;
    spec(name).faults(faults)
}

/// Runs 20 jobs against two deployments that every request finds spent for `wait`; each
/// job must fail at once with `no_endpoint_available` naming both, and the long wait stays
/// visible in the report.
async fn check_spent_everywhere(spec_of: impl Fn(&str) -> DeploymentSpec, remaining: &str) {
    let sim = start_sim(vec![spec_of("east"), spec_of("west")]).await;
    let config = config(
        json!({"num_workers": 4}),
        vec![
            deployment(&sim, "east", json!({})),
            deployment(&sim, "west", json!({})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let jobs = (0..20).map(|i| dispatcher.send(ChatJob::new(prompt(i))));
    let results = join_all(jobs).await;
    let mut attempts = 0;
    for result in results {
        let error = result.expect("mailbox").expect_err("no endpoint can serve");
        assert_eq!(error.code(), "no_endpoint_available", "{error}");
        let text = error.to_string();
        assert!(
            text.contains("east disabled") && text.contains("west disabled"),
            "{text}"
        );
        assert!(text.contains(remaining), "{text}");
        attempts += error.attempts.len();
    }
    // Each endpoint was asked until it named its wait; no job waited for it.
    let upstream = sim.stats().total().requests;
    assert_eq!(upstream as usize, attempts);
    assert!(
        upstream <= 8,
        "at most the first wave reached the simulator: {upstream}"
    );
    let report = dispatcher
        .send(aoai_blaster::GetReport)
        .await
        .expect("report");
    for endpoint in &report {
        assert_eq!(endpoint.state.as_str(), "disabled", "{endpoint}");
        assert!(
            endpoint.cooling_until.is_some(),
            "the long wait stays visible"
        );
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn a_day_long_retry_after_everywhere_fails_jobs_at_once_naming_each_endpoint() {
    check_spent_everywhere(spent_for_a_day, "for another 23h 59m").await;
}

#[actix_rt::test]
async fn a_day_in_retry_after_ms_alone_or_an_absurd_retry_after_is_as_long() {
    // Only `retry-after-ms: 86400000`.
    check_spent_everywhere(
        |name| spent_for_a_day(name).retry_headers(RetryHeaders::only(RetryHeader::RetryAfterMs)),
        "for another 23h 59m",
    )
    .await;
    // `retry-after: 1e30` (and its ms twin): capped, never "retry now", never a hang.
    check_spent_everywhere(
        |name| {
            let faults = FaultSpec {
                p_429: 1.0,
                retry_after_secs_f64: Some(1e30),
                ..FaultSpec::default()
            };
            spec(name).faults(faults)
        },
        "for another",
    )
    .await;
}

#[actix_rt::test]
async fn a_job_with_its_own_short_max_wait_gives_up_sooner() {
    // One deployment cooling for two minutes after a 429: within the configured 5 min, but
    // not within the job's 10 s.
    let mut faults = FaultSpec {
        p_429: 1.0,
        ..FaultSpec::default()
    };
    faults.retry_after_secs = 120;
    let sim = start_sim(vec![spec("east").faults(faults)]).await;
    let config = config(json!({}), vec![deployment(&sim, "east", json!({}))]);
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let job = ChatJob::new(prompt(0)).max_wait(std::time::Duration::from_secs(10));
    let error = dispatcher
        .send(job)
        .await
        .expect("mailbox")
        .expect_err("the job does not wait two minutes");
    assert_eq!(error.code(), "no_endpoint_available");
    assert!(error.to_string().contains("max_wait (10s)"), "{error}");
    assert_eq!(error.attempts.len(), 1);
    assert_eq!(error.status(), Some(429), "the 429 is the job's last reply");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_storm_of_429s_naming_no_wait_fails_jobs_after_max_wait_with_the_last_reply() {
    let faults = FaultSpec {
        p_429: 1.0,
        ..FaultSpec::default()
    };
    let storm = spec("east")
        .faults(faults)
        .retry_headers(aoai_sim::RetryHeaders::NONE);
    let sim = start_sim(vec![storm]).await;
    // Fallback cooldowns of 100 ms (fast_top); learned pacing off, so only 429s decide.
    let config = config(
        json!({"max_wait": "1s"}),
        vec![deployment(&sim, "east", json!({"adaptive": false}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let started = std::time::Instant::now();
    let jobs = (0..4).map(|i| dispatcher.send(ChatJob::new(prompt(i))));
    for result in join_all(jobs).await {
        let error = result.expect("mailbox").expect_err("429s forever");
        assert_eq!(error.code(), "rate_limited", "{error}");
        assert_eq!(error.status(), Some(429), "the last 429 is the reply");
        assert!(error.attempts.len() >= 2, "{error}");
        assert!(
            error
                .attempts
                .iter()
                .all(|a| a.reply.as_ref().map(|r| r.status) == Some(429)),
            "{error}"
        );
    }
    // Ended on its own: about max_wait, not the 15 s x forever of before.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    sim.stop().await;
}
