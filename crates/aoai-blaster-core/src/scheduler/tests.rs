//! The scheduler driven by hand: explicit instants, no sockets, no actors.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use super::*;
use crate::chat::{ChatCompletion, ChatRequest};
use crate::classify::{ApiError, AttemptOutcome, RateLimitHeaders, TransientKind};
use crate::health::{CoolingCause, HealthSnapshot, HealthState};
use crate::retry::AttemptKind;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// A payload that can be marked abandoned, named for the assertions.
#[derive(Debug)]
struct Job {
    name: &'static str,
    gone: bool,
}

impl Payload for Job {
    fn abandoned(&self) -> bool {
        self.gone
    }
}

fn pinned(name: &str) -> JobOptions {
    JobOptions {
        pin: Some(name.into()),
        ..JobOptions::default()
    }
}

fn job(name: &'static str) -> Job {
    Job { name, gone: false }
}

/// A config of `deployments` (YAML flow mappings without the endpoint and key) and top-level
/// `extra` lines.
fn config(deployments: &[&str], extra: &str) -> BlasterConfig {
    let mut yaml = String::from("deployments:\n");
    for d in deployments {
        let d = d.trim_start_matches('{').trim_end_matches('}');
        let model = if d.contains("model:") {
            ""
        } else {
            "model: gpt-4o, "
        };
        yaml.push_str(&format!(
            "  - {{endpoint: 'http://127.0.0.1:1/', api_key: k, {model}{d}}}\n"
        ));
    }
    yaml.push_str(extra);
    BlasterConfig::from_yaml_str(&yaml).expect("test config is valid")
}

fn scheduler(deployments: &[&str], extra: &str) -> Scheduler<Job> {
    Scheduler::new(&config(deployments, extra), StdRng::seed_from_u64(1))
}

fn request(words: usize) -> ChatRequest {
    let text = "word ".repeat(words);
    ChatRequest::new(vec![json!({"role": "user", "content": text})])
}

fn small() -> ChatRequest {
    request(1).option("max_tokens", 10)
}

/// The sends among `effects`, as (job, endpoint, number), and clears them.
fn sends(effects: &mut Vec<Effect<Job>>) -> Vec<(JobId, usize, u32)> {
    let sent = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                job,
                endpoint,
                number,
                ..
            } => Some((*job, *endpoint, *number)),
            _ => None,
        })
        .collect();
    effects.retain(|e| !matches!(e, Effect::Send { .. }));
    sent
}

fn health(generation: u64, state: HealthState) -> HealthSnapshot {
    HealthSnapshot {
        generation,
        state,
        failure_streak: 0,
    }
}

fn report(outcome: AttemptOutcome, elapsed: Duration) -> AttemptEnd {
    let reply = matches!(outcome, AttemptOutcome::Success).then(|| {
        serde_json::from_value::<ChatCompletion>(json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        }))
        .expect("completion parses")
        .into()
    });
    AttemptEnd::Finished(Box::new(AttemptReport {
        outcome,
        reply,
        status: Some(200),
        request_id: Some("req-1".into()),
        rate_limits: RateLimitHeaders::default(),
        elapsed,
        server_time: None,
        deltas_delivered: 0,
        stale_retries: 0,
        health: HealthSnapshot::initial(),
    }))
}

fn success(elapsed: Duration) -> AttemptEnd {
    report(AttemptOutcome::Success, elapsed)
}

fn unavailable() -> AttemptEnd {
    report(
        AttemptOutcome::Transient(TransientKind::Server(ApiError {
            status: 503,
            code: None,
            message: "busy".into(),
        })),
        MS,
    )
}

fn delivered(effects: &[Effect<Job>]) -> Vec<(&'static str, &JobResult)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver { payload, result } => Some((payload.name, &**result)),
            _ => None,
        })
        .collect()
}

fn failed(effects: &[Effect<Job>]) -> Vec<(&'static str, &JobError)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Fail { payload, error, .. } => Some((payload.name, error)),
            _ => None,
        })
        .collect()
}

/// Hands each of `effects` to `perform`, then the effects it pushed in doing so, until none is
/// left (as the Dispatcher performs a cascade: a mirror that changes health, say).
fn drain(
    mut effects: Vec<Effect<Job>>,
    mut perform: impl FnMut(Effect<Job>, &mut Vec<Effect<Job>>),
) {
    while !effects.is_empty() {
        let mut next = Vec::new();
        for effect in effects {
            perform(effect, &mut next);
        }
        effects = next;
    }
}

#[test]
fn a_job_is_sent_and_its_success_delivered_with_its_times() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "");
    let mut fx = Vec::new();
    assert_eq!(
        s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx),
        None
    );
    assert_eq!(sends(&mut fx), vec![(0, 0, 1)]);
    assert_eq!((s.queued(), s.in_flight()), (0, 1));
    let wake = s.attempt_ended(t0 + 3 * S, 0, 1, 0, success(2 * S), &mut fx);
    assert_eq!(wake, None);
    let results = delivered(&fx);
    assert_eq!(results.len(), 1);
    let (name, result) = results[0];
    assert_eq!(name, "a");
    assert_eq!(result.text(), Some("hello"));
    assert_eq!(result.endpoint, "east");
    assert_eq!(result.total_time, 3 * S);
    assert_eq!(result.upstream_time, 2 * S);
    assert_eq!(result.queued_for, S);
    assert_eq!(result.request_id.as_deref(), Some("req-1"));
    assert!(s.is_idle());
    let view = s.endpoints().next().expect("one endpoint");
    assert_eq!((view.counters.requests, view.counters.successes), (1, 1));
    assert_eq!(view.counters.prompt_tokens, 5);
    assert_eq!(view.in_flight, 0);
}

#[test]
fn only_deployments_that_pace_by_tokens_count_with_the_tokenizer() {
    // Spaced digits: each digit and space a token, far more than a quarter of the characters.
    let messages = vec![json!({"role": "user", "content": "3 1 4 1 5 9 2 6 5 3 5 8 9 7 9 3"})];
    let counted = crate::quota::prompt_charge("o200k_base", &messages, None);
    let estimated = crate::quota::char_charge(&messages, None);
    assert!(counted > estimated, "{counted} vs {estimated}");
    let charged = |deployment: &str| {
        let t0 = Instant::now();
        let mut s = scheduler(&[deployment], "");
        let mut fx = Vec::new();
        let request = ChatRequest::new(messages.clone()).option("max_tokens", 10);
        s.submit(t0, job("a"), request, JobOptions::default(), &mut fx);
        let tokens = fx.iter().find_map(|e| match e {
            Effect::Send { tokens, .. } => Some(*tokens),
            _ => None,
        });
        let counted: Vec<String> = s.counted_tokenizers().map(str::to_owned).collect();
        (tokens, counted)
    };
    // A token limit, or learning one, needs the count; no limit at all, or requests only, not.
    for paced in [
        "{name: a, tpm_limit: 100000}",
        "{name: a}",
        "{name: a, adaptive: true, rpm_limit: 60}",
    ] {
        assert_eq!(
            charged(paced),
            (Some(counted + 10), vec!["o200k_base".to_owned()]),
            "{paced}"
        );
    }
    for unpaced in [
        "{name: a, adaptive: false}",
        "{name: a, adaptive: false, rpm_limit: 60}",
    ] {
        assert_eq!(
            charged(unpaced),
            (Some(estimated + 10), Vec::<String>::new()),
            "{unpaced}"
        );
    }
}

#[test]
fn a_transient_failure_is_retried_elsewhere_and_counts() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}", "{name: west}"], "max_job_retry: 1\n");
    let mut fx = Vec::new();
    s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    let [(id, first, 1)] = sends(&mut fx)[..] else {
        panic!("one send expected");
    };
    s.attempt_ended(t0, id, 1, first, unavailable(), &mut fx);
    let [(_, second, 2)] = sends(&mut fx)[..] else {
        panic!("a second attempt expected");
    };
    assert_ne!(first, second, "the retry avoids the endpoint that failed");
    s.attempt_ended(t0, id, 2, second, unavailable(), &mut fx);
    let failures = failed(&fx);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].1.kind, JobErrorKind::RetriesExhausted);
    assert_eq!(failures[0].1.attempts.len(), 2);
}

#[test]
fn a_lost_attempt_is_requeued_recorded_and_not_counted() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "max_job_retry: 0\n");
    let mut fx = Vec::new();
    s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    assert_eq!(sends(&mut fx), vec![(0, 0, 1)]);
    s.attempt_ended(t0 + S, 0, 1, 0, AttemptEnd::Lost, &mut fx);
    assert_eq!(sends(&mut fx), vec![(0, 0, 2)]);
    s.attempt_ended(t0 + 2 * S, 0, 2, 0, success(MS), &mut fx);
    let results = delivered(&fx);
    assert_eq!(
        results.len(),
        1,
        "max_job_retry 0 still delivers after a lost attempt"
    );
    let kinds: Vec<AttemptKind> = results[0].1.attempts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, vec![AttemptKind::Lost, AttemptKind::Success]);
    let view = s.endpoints().next().expect("one endpoint");
    assert_eq!((view.counters.requests, view.counters.lost), (2, 1));
}

#[test]
fn a_declined_attempt_leaves_no_trace_and_waits_for_the_cooldown() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "");
    let mut fx = Vec::new();
    s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    assert_eq!(sends(&mut fx), vec![(0, 0, 1)]);
    let until = t0 + 7 * S;
    let cooling = health(
        1,
        HealthState::Cooling {
            until,
            cause: CoolingCause::RateLimited,
        },
    );
    let wake = s.attempt_ended(
        t0,
        0,
        1,
        0,
        AttemptEnd::Declined { health: cooling },
        &mut fx,
    );
    assert_eq!(
        wake,
        Some(until),
        "woken when the cooldown ends, no polling"
    );
    assert!(fx.is_empty());
    assert_eq!(s.endpoints().next().map(|v| v.counters.requests), Some(0));
    assert_eq!(s.wake(until - MS, &mut fx), Some(until));
    assert!(fx.is_empty());
    s.wake(until, &mut fx);
    assert_eq!(
        sends(&mut fx),
        vec![(0, 0, 1)],
        "the same attempt number again"
    );
    s.attempt_ended(until, 0, 1, 0, success(MS), &mut fx);
    assert_eq!(delivered(&fx)[0].1.attempts.len(), 1);
}

#[test]
fn an_end_that_matches_no_attempt_in_flight_is_ignored() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "");
    let mut fx = Vec::new();
    s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    sends(&mut fx);
    assert_eq!(s.attempt_ended(t0, 0, 2, 0, success(MS), &mut fx), None);
    assert_eq!(s.attempt_ended(t0, 9, 1, 0, success(MS), &mut fx), None);
    assert!(fx.is_empty());
    assert_eq!(s.in_flight(), 1);
    s.attempt_ended(t0, 0, 1, 0, success(MS), &mut fx);
    s.attempt_ended(t0, 0, 1, 0, success(MS), &mut fx);
    assert_eq!(delivered(&fx).len(), 1, "answered once");
}

#[test]
fn a_stream_cut_after_deltas_fails_without_a_retry() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "");
    let mut fx = Vec::new();
    s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    sends(&mut fx);
    let AttemptEnd::Finished(mut cut) = unavailable() else {
        unreachable!()
    };
    cut.deltas_delivered = 4;
    s.attempt_ended(t0, 0, 1, 0, AttemptEnd::Finished(cut), &mut fx);
    assert!(sends(&mut fx).is_empty());
    assert_eq!(
        failed(&fx)[0].1.kind,
        JobErrorKind::StreamInterrupted {
            deltas_delivered: 4
        }
    );
}

#[test]
fn unknown_pins_and_jobs_that_never_fit_fail_at_once() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east, tpm_limit: 1000}", "{name: west}"], "");
    let mut fx = Vec::new();
    s.submit(t0, job("lost"), small(), pinned("north"), &mut fx);
    let big = request(10).option("max_tokens", 5000);
    s.submit(t0, job("big"), big.clone(), pinned("east"), &mut fx);
    let failures = failed(&fx);
    assert_eq!(
        failures[0].1.kind,
        JobErrorKind::UnknownDeployment {
            name: "north".into(),
            known: "east, west".into()
        }
    );
    assert_eq!(failures[1].0, "big");
    assert!(matches!(
        failures[1].1.kind,
        JobErrorKind::NeverFits {
            largest_capacity: 1000,
            ..
        }
    ));
    fx.clear();
    // Unpinned, the same job fits on the unlimited endpoint.
    s.submit(t0, job("big"), big, JobOptions::default(), &mut fx);
    assert_eq!(sends(&mut fx).len(), 1);
    assert!(failed(&fx).is_empty());
}

#[test]
fn a_pin_by_model_name_picks_that_deployment() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}", "{name: west, model: o3}"], "");
    let mut fx = Vec::new();
    for _ in 0..3 {
        s.submit(t0, job("o3"), small(), pinned("o3"), &mut fx);
    }
    let endpoints: Vec<usize> = sends(&mut fx).iter().map(|s| s.1).collect();
    assert_eq!(endpoints, vec![1, 1, 1]);
}

#[test]
fn a_pin_by_a_shared_model_spreads_over_its_deployments_only() {
    let t0 = Instant::now();
    let mut s = scheduler(
        &[
            "{name: east, model: o3}",
            "{name: mid}",
            "{name: west, model: o3}",
        ],
        "",
    );
    let mut fx = Vec::new();
    for _ in 0..4 {
        s.submit(t0, job("o3"), small(), pinned("o3"), &mut fx);
    }
    let mut endpoints: Vec<usize> = sends(&mut fx).iter().map(|s| s.1).collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    assert_eq!(
        endpoints,
        vec![0, 2],
        "both o3 deployments serve, never `mid`"
    );
    // A deployment's name still pins to that one deployment.
    s.submit(t0, job("west"), small(), pinned("west"), &mut fx);
    assert_eq!(sends(&mut fx), vec![(4, 2, 1)]);
}

#[test]
fn intake_holds_capacity_jobs_and_the_rest_wait_in_order() {
    let t0 = Instant::now();
    // Capacity: queue_capacity 1 + num_workers 1 = 2 jobs held.
    let mut s = scheduler(&["{name: east}"], "num_workers: 1\nqueue_capacity: 1\n");
    let mut fx = Vec::new();
    for name in ["a", "b", "c", "d"] {
        s.submit(t0, job(name), small(), JobOptions::default(), &mut fx);
    }
    assert_eq!(sends(&mut fx), vec![(0, 0, 1)]);
    assert_eq!((s.queued(), s.in_flight()), (1, 1));
    s.attempt_ended(t0, 0, 1, 0, success(MS), &mut fx);
    assert_eq!(
        sends(&mut fx),
        vec![(1, 0, 1)],
        "b goes next; c enters the queue"
    );
    assert_eq!(s.queued(), 1);
    s.attempt_ended(t0, 1, 1, 0, success(MS), &mut fx);
    s.attempt_ended(t0, 2, 1, 0, success(MS), &mut fx);
    s.attempt_ended(t0, 3, 1, 0, success(MS), &mut fx);
    let names: Vec<&str> = delivered(&fx).iter().map(|d| d.0).collect();
    assert_eq!(names, vec!["a", "b", "c", "d"]);
    assert!(s.is_idle());
}

#[test]
fn an_abandoned_job_is_dropped_before_it_is_sent() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "num_workers: 1\n");
    let mut fx = Vec::new();
    s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    s.submit(
        t0,
        Job {
            name: "gone",
            gone: true,
        },
        small(),
        JobOptions::default(),
        &mut fx,
    );
    s.submit(t0, job("c"), small(), JobOptions::default(), &mut fx);
    assert_eq!(sends(&mut fx), vec![(0, 0, 1)]);
    s.attempt_ended(t0, 0, 1, 0, success(MS), &mut fx);
    assert_eq!(
        sends(&mut fx),
        vec![(2, 0, 1)],
        "job 1 was abandoned: no request"
    );
    s.attempt_ended(t0, 2, 1, 0, success(MS), &mut fx);
    assert!(s.is_idle());
}

#[test]
fn quota_waits_wake_the_scheduler_and_small_jobs_overtake_until_ageing() {
    let t0 = Instant::now();
    // 1,000 TPM: the big job (~800 tokens) waits after the first one; small jobs (~20) pass.
    let mut s = scheduler(&["{name: east, tpm_limit: 1000, rpm_limit: 1000}"], "");
    let mut fx = Vec::new();
    let big = || request(1).option("max_tokens", 800);
    s.submit(t0, job("big1"), big(), JobOptions::default(), &mut fx);
    assert_eq!(sends(&mut fx).len(), 1);
    let wake = s.submit(t0, job("big2"), big(), JobOptions::default(), &mut fx);
    let wake = wake.expect("the quota refuses big2 until tokens age out");
    assert!(
        wake > t0 + 50 * S,
        "tokens free up a minute after their charge: {wake:?}"
    );
    s.submit(
        t0 + MS,
        job("small1"),
        small(),
        JobOptions::default(),
        &mut fx,
    );
    assert_eq!(sends(&mut fx).len(), 1, "small1 overtakes big2");
    // After the ageing limit, jobs behind big2 wait for it.
    let late = t0 + OVERTAKE_AGE_LIMIT;
    s.submit(late, job("small2"), small(), JobOptions::default(), &mut fx);
    assert!(
        sends(&mut fx).is_empty(),
        "small2 may not overtake an aged job"
    );
    assert_eq!(s.queued(), 2);
    s.wake(wake, &mut fx);
    let order: Vec<JobId> = sends(&mut fx).iter().map(|s| s.0).collect();
    assert_eq!(order, vec![1, 3], "big2 first, then small2");
}

#[test]
fn jobs_fail_when_every_endpoint_is_disabled_for_good() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "num_workers: 1\n");
    let mut fx = Vec::new();
    s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    s.submit(t0, job("b"), small(), JobOptions::default(), &mut fx);
    sends(&mut fx);
    let disabled = health(
        1,
        HealthState::Disabled {
            reason: "5 consecutive failures (reenable_after: never)".into(),
            until: None,
            cause: crate::health::DisableCause::Failures,
        },
    );
    s.health_changed(t0, 0, &disabled, false, &mut fx);
    let failures = failed(&fx);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "b");
    assert_eq!(failures[0].1.kind, JobErrorKind::AllEndpointsDisabled);
    // An older announcement does not undo the newer one.
    s.health_changed(t0, 0, &health(0, HealthState::Healthy), false, &mut fx);
    assert_eq!(s.endpoints().next().map(|v| v.health.generation), Some(1));
    s.health_changed(t0, 0, &health(2, HealthState::Healthy), true, &mut fx);
    assert_eq!(s.endpoints().next().map(|v| v.counters.restarts), Some(1));
}

#[test]
fn the_deadline_wakes_the_scheduler_and_fails_a_waiting_job() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "job_deadline: 30\n");
    let mut fx = Vec::new();
    s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    sends(&mut fx);
    let cooling = health(
        1,
        HealthState::Cooling {
            until: t0 + 200 * S,
            cause: CoolingCause::RateLimited,
        },
    );
    let wake = s.attempt_ended(
        t0 + S,
        0,
        1,
        0,
        AttemptEnd::Declined { health: cooling },
        &mut fx,
    );
    assert_eq!(
        wake,
        Some(t0 + 30 * S),
        "the deadline comes before the cooldown ends"
    );
    s.wake(t0 + 30 * S, &mut fx);
    assert_eq!(failed(&fx)[0].1.kind, JobErrorKind::DeadlineExceeded);
    assert!(s.is_idle());
}

fn rate_limited_for(generation: u64, until: Instant) -> HealthSnapshot {
    health(
        generation,
        HealthState::Cooling {
            until,
            cause: CoolingCause::RateLimited,
        },
    )
}

#[test]
fn a_day_long_cooldown_fails_the_job_at_once_naming_each_endpoint() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}", "{name: west}"], "");
    let mut fx = Vec::new();
    s.health_changed(t0, 0, &rate_limited_for(1, t0 + 86_400 * S), false, &mut fx);
    let disabled = HealthState::Disabled {
        reason: "retry-after of 86400s is above retry_after_cap (5m)".into(),
        until: Some(t0 + 86_400 * S),
        cause: crate::health::DisableCause::RateLimited,
    };
    s.health_changed(t0, 1, &health(1, disabled), false, &mut fx);
    let wake = s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    assert_eq!(wake, None, "nothing to wait for");
    let failures = failed(&fx);
    assert_eq!(failures.len(), 1);
    let error = failures[0].1;
    assert_eq!(error.code(), "no_endpoint_available");
    assert_eq!(
        error.to_string(),
        "no endpoint can take the job within max_wait (5m): \
         east cooling (rate limited) for another 1day; \
         west disabled: retry-after of 86400s is above retry_after_cap (5m) for another 1day"
    );
}

#[test]
fn unavailability_adds_up_over_successive_cooldowns_but_pacing_does_not_count() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "max_wait: 300\n");
    let mut fx = Vec::new();
    s.submit(t0, job("a"), small(), JobOptions::default(), &mut fx);
    sends(&mut fx);
    // Declined: cooling 200 s (within max_wait): the job waits.
    let end = AttemptEnd::Declined {
        health: rate_limited_for(1, t0 + 200 * S),
    };
    assert_eq!(
        s.attempt_ended(t0, 0, 1, 0, end, &mut fx),
        Some(t0 + 200 * S)
    );
    // Just before it ends, another 200 s: 400 s unavailable in all, more than max_wait.
    let later = t0 + 199 * S;
    s.health_changed(
        later,
        0,
        &rate_limited_for(2, later + 200 * S),
        false,
        &mut fx,
    );
    assert_eq!(failed(&fx)[0].1.code(), "no_endpoint_available");
    fx.clear();

    // A quota wait far beyond max_wait is pacing, not unavailability: the job waits.
    let mut s = scheduler(
        &["{name: east, tpm_limit: 1000, rpm_limit: 1000}"],
        "max_wait: 5\n",
    );
    let big = || request(1).option("max_tokens", 800);
    s.submit(t0, job("first"), big(), JobOptions::default(), &mut fx);
    let wake = s.submit(t0, job("second"), big(), JobOptions::default(), &mut fx);
    let wake = wake.expect("the budget names when room comes");
    assert!(wake > t0 + 50 * S);
    assert!(failed(&fx).is_empty());
    s.wake(wake, &mut fx);
    assert_eq!(sends(&mut fx).len(), 2, "both sent, none failed");
}

#[test]
fn a_job_may_set_its_own_max_wait() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}"], "");
    let mut fx = Vec::new();
    s.health_changed(t0, 0, &rate_limited_for(1, t0 + 60 * S), false, &mut fx);
    let patient = JobOptions::default();
    assert_eq!(
        s.submit(t0, job("patient"), small(), patient, &mut fx),
        Some(t0 + 60 * S)
    );
    let hurried = JobOptions {
        max_wait: Some(10 * S),
        ..JobOptions::default()
    };
    s.submit(t0, job("hurried"), small(), hurried, &mut fx);
    let failures = failed(&fx);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "hurried");
    assert!(failures[0].1.to_string().contains("max_wait (10s)"));
}

#[test]
fn the_deadline_fails_a_job_in_flight_and_its_late_end_is_still_accounted() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east, tpm_limit: 100000}"], "job_deadline: 30\n");
    let mut fx = Vec::new();
    assert_eq!(
        s.submit(t0, job("slow"), small(), JobOptions::default(), &mut fx),
        Some(t0 + 30 * S),
        "woken at the deadline of the job in flight"
    );
    assert_eq!(sends(&mut fx), vec![(0, 0, 1)]);
    assert_eq!(s.wake(t0 + 30 * S, &mut fx), None);
    let failures = failed(&fx);
    assert_eq!(failures[0].1.kind, JobErrorKind::DeadlineExceeded);
    assert!(s.is_idle());
    assert_eq!(s.in_flight(), 1, "the abandoned attempt is still out there");
    fx.clear();
    s.attempt_ended(t0 + 90 * S, 0, 1, 0, success(90 * S), &mut fx);
    assert!(fx.is_empty(), "the job was answered once, at its deadline");
    assert_eq!(s.in_flight(), 0);
    let view = s.endpoints().next().expect("one endpoint");
    assert_eq!((view.in_flight, view.counters.successes), (0, 1));
}

fn rejected(generation: u64, reason: &str) -> HealthSnapshot {
    health(
        generation,
        HealthState::Disabled {
            reason: reason.into(),
            until: Some(Instant::now() + 30 * S),
            cause: crate::health::DisableCause::Rejected,
        },
    )
}

#[test]
fn when_every_endpoint_rejects_the_requests_queued_jobs_fail_at_once_naming_the_fix() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}", "{name: west}"], "num_workers: 1\n");
    let mut fx = Vec::new();
    for name in ["a", "b", "c"] {
        s.submit(t0, job(name), small(), JobOptions::default(), &mut fx);
    }
    assert_eq!(sends(&mut fx).len(), 1);
    s.health_changed(
        t0,
        0,
        &rejected(1, "credentials rejected (HTTP 401): check api_key"),
        false,
        &mut fx,
    );
    assert!(failed(&fx).is_empty(), "west may still serve");
    s.health_changed(
        t0,
        1,
        &rejected(1, "deployment not found (HTTP 404): check model"),
        false,
        &mut fx,
    );
    let failures = failed(&fx);
    assert_eq!(failures.len(), 2, "both queued jobs, at once");
    assert_eq!(failures[0].1.code(), "endpoints_rejected");
    assert_eq!(
        failures[0].1.to_string(),
        "every endpoint rejects the requests; fix the config and run again: \
         east: credentials rejected (HTTP 401): check api_key; \
         west: deployment not found (HTTP 404): check model"
    );
    // A job submitted now fails the same way, without a request.
    fx.clear();
    s.submit(t0, job("d"), small(), JobOptions::default(), &mut fx);
    assert!(sends(&mut fx).is_empty());
    assert_eq!(failed(&fx)[0].1.code(), "endpoints_rejected");
}

#[test]
fn a_job_pinned_to_a_rejecting_endpoint_fails_at_once_while_others_serve() {
    let t0 = Instant::now();
    let mut s = scheduler(&["{name: east}", "{name: west}"], "");
    let mut fx = Vec::new();
    s.health_changed(
        t0,
        0,
        &rejected(1, "credentials rejected (HTTP 401)"),
        false,
        &mut fx,
    );
    s.submit(t0, job("pinned"), small(), pinned("east"), &mut fx);
    assert_eq!(failed(&fx)[0].1.code(), "no_endpoint_available");
    fx.clear();
    s.submit(t0, job("free"), small(), JobOptions::default(), &mut fx);
    assert_eq!(
        sends(&mut fx).iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn an_endpoint_refused_by_its_quota_says_until_when_and_forgets_once_it_sends() {
    let t0 = Instant::now();
    // 1,000 TPM: after the first big job (~800 tokens), the second waits for quota.
    let mut s = scheduler(&["{name: east, tpm_limit: 1000, rpm_limit: 1000}"], "");
    let mut fx = Vec::new();
    let big = || request(1).option("max_tokens", 800);
    let view = |s: &Scheduler<Job>, now: Instant| {
        let view = s.endpoints().next().expect("one endpoint");
        (
            view.in_flight,
            view.max_in_flight,
            view.waiting_for_quota_until(now),
        )
    };
    assert_eq!(view(&s, t0).2, None, "nothing refused yet");
    s.submit(t0, job("big1"), big(), JobOptions::default(), &mut fx);
    assert_eq!(sends(&mut fx).len(), 1);
    assert_eq!(view(&s, t0).2, None, "the first job was reserved");
    let wake = s
        .submit(t0, job("big2"), big(), JobOptions::default(), &mut fx)
        .expect("the quota refuses big2");
    // The endpoint has in-flight room (1 of its default maximum) but waits for quota.
    let (in_flight, max_in_flight, until) = view(&s, t0 + S);
    assert_eq!(in_flight, 1);
    assert!(max_in_flight > 1);
    assert_eq!(until, Some(wake), "the refusal's instant is the wake-up");
    assert_eq!(
        s.endpoints().next().map(|v| v.quota_refused_until),
        Some(Some(wake))
    );
    // Past that instant the view no longer says it waits, even before anything is retried.
    assert_eq!(view(&s, wake).2, None);
    // At the wake-up the reservation succeeds: the refusal is forgotten.
    s.wake(wake, &mut fx);
    assert_eq!(sends(&mut fx).len(), 1, "big2 goes out");
    assert_eq!(
        s.endpoints().next().map(|v| v.quota_refused_until),
        Some(None)
    );
}

#[cfg(test)]
mod operations;
#[cfg(test)]
mod shared_health;
#[cfg(test)]
mod shared_quotas;
