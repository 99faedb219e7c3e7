//! Quota pacing end to end over loopback: the Dispatcher sends at the rate the simulator's
//! quotas allow (no 429s), `priority` spills over and comes back, and an adaptive budget makes
//! 429s die out without configured limits. (The "never fits" error is in `resilience.rs`.)

mod common;

use std::time::{Duration, Instant};

use aoai_blaster::{ChatJob, ChatRequest, Dispatcher, JobErrorKind};
use aoai_sim::DeploymentSpec;
use common::*;
use futures_util::future::join_all;
use serde_json::json;

/// A request for prompt `i` with `max_tokens` set (charged as the simulator charges it).
fn job(i: usize, max_tokens: u64) -> ChatJob {
    ChatJob::new(prompt(i).option("max_tokens", max_tokens))
}

/// What the simulator charges a [`job`]: its character estimate plus `max_tokens`.
fn charged(i: usize, max_tokens: u64) -> u64 {
    let request: ChatRequest = prompt(i);
    aoai_sim::quota::estimate_prompt_tokens(&request.messages) + max_tokens
}

#[actix_rt::test]
async fn a_steady_load_under_configured_limits_meets_no_429() {
    // 600 RPM over 1 s windows: 10 requests a second. 40 jobs need four windows.
    let sim = start_sim(vec![DeploymentSpec::new("paced").tpm(100_000).rpm(600)]).await;
    let config = config(
        json!({"num_workers": 64}),
        vec![deployment(
            &sim,
            "paced",
            json!({"rpm_limit": 600, "tpm_limit": 100_000}),
        )],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let started = Instant::now();
    let jobs = (0..40).map(|i| dispatcher.send(job(i, 50)));
    assert_first_tries(join_all(jobs).await);
    let elapsed = started.elapsed();
    assert_no_429(&sim, "paced", 40).await;
    // Four bursts of ten, each a request window (1.02 s with the margin) after the last.
    assert!(elapsed >= Duration::from_millis(3_060), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    sim.stop().await;
}

#[actix_rt::test]
async fn tokens_beyond_the_minute_wait_instead_of_meeting_a_429() {
    // 3,000 TPM: the jobs below take the whole minute's tokens; one more must wait for the
    // next minute (here: until its deadline), and the simulator never refuses anything.
    let sim = start_sim(vec![DeploymentSpec::new("small").tpm(3_000).rpm(6_000)]).await;
    let config = config(
        json!({"job_deadline": "2s", "num_workers": 16}),
        vec![deployment(
            &sim,
            "small",
            json!({"rpm_limit": 6_000, "tpm_limit": 3_000}),
        )],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let mut total = 0;
    let mut fitting = 0;
    while total + charged(fitting, 200) <= 3_000 {
        total += charged(fitting, 200);
        fitting += 1;
    }
    let jobs = (0..=fitting).map(|i| dispatcher.send(job(i, 200)));
    let results: Vec<_> = join_all(jobs)
        .await
        .into_iter()
        .map(|r| r.expect("dispatcher alive"))
        .collect();
    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(succeeded, fitting, "the jobs that fit the minute ran");
    let waited = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .collect::<Vec<_>>();
    assert_eq!(waited.len(), 1);
    assert!(
        matches!(waited[0].kind, JobErrorKind::DeadlineExceeded),
        "{}",
        waited[0]
    );
    assert!(waited[0].attempts.is_empty(), "it was never sent");
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("small").rate_limited, 0);
    assert_eq!(stats.deployment("small").charged_tokens, total);
    sim.stop().await;
}

#[actix_rt::test]
async fn priority_spills_over_while_the_first_group_is_full_and_comes_back() {
    // "primary" (priority 0) admits 2 requests a second; "spare" (priority 1) plenty.
    let sim = start_sim(vec![
        DeploymentSpec::new("primary").tpm(1_000_000).rpm(120),
        DeploymentSpec::new("spare").tpm(1_000_000).rpm(60_000),
    ])
    .await;
    let config = config(
        json!({"strategy": "priority"}),
        vec![
            deployment(
                &sim,
                "primary",
                json!({"priority": 0, "rpm_limit": 120, "tpm_limit": 1_000_000}),
            ),
            deployment(
                &sim,
                "spare",
                json!({"priority": 1, "rpm_limit": 60_000, "tpm_limit": 1_000_000}),
            ),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    // A burst of 8: two fit primary's window, the other six spill to spare.
    let burst = join_all((0..8).map(|i| dispatcher.send(job(i, 20)))).await;
    let mut on_primary = 0;
    for result in burst {
        let result = result.expect("dispatcher alive").expect("job succeeds");
        if result.endpoint == "primary" {
            on_primary += 1;
        }
    }
    assert_eq!(on_primary, 2);
    // Once primary's window has room again, traffic goes back to it.
    let mut endpoints = Vec::new();
    for i in 0..4 {
        actix_rt::time::sleep(Duration::from_millis(1_100)).await;
        let result = dispatcher
            .send(job(100 + i, 20))
            .await
            .expect("dispatcher alive")
            .expect("job succeeds");
        endpoints.push(result.endpoint);
    }
    assert_eq!(endpoints, ["primary"; 4]);
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("primary").ok, 6);
    assert_eq!(stats.deployment("spare").ok, 6);
    assert_eq!(stats.total().rate_limited, 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn adaptive_budgets_make_429s_die_out_without_configured_limits() {
    // 600 RPM (10 a second) that the client is not told about.
    let sim = start_sim(vec![DeploymentSpec::new("unknown").tpm(1_000_000).rpm(600)]).await;
    let config = config(
        json!({"num_workers": 64}),
        vec![deployment(&sim, "unknown", json!({}))],
    );
    assert!(config.deployments[0].adaptive, "adaptive by default");
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    // The first burst overruns the unknown limit and teaches it.
    for result in join_all((0..30).map(|i| dispatcher.send(job(i, 20)))).await {
        result
            .expect("dispatcher alive")
            .expect("429s are waited out");
    }
    let first = http_stats(&sim).await.deployment("unknown");
    assert!(first.rate_limited > 0, "the first burst met 429s");
    // The second burst is paced by what the replies taught: no 429 at all.
    let started = Instant::now();
    for result in join_all((30..60).map(|i| dispatcher.send(job(i, 20)))).await {
        let result = result.expect("dispatcher alive").expect("job succeeds");
        assert_eq!(result.attempts.len(), 1);
    }
    let second = http_stats(&sim).await.deployment("unknown");
    assert_eq!(second.rate_limited, first.rate_limited, "no new 429");
    assert_eq!(second.ok, 60);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "paced at 10 a second"
    );
    sim.stop().await;
}
