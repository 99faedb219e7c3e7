//! Tests of `retry`.

use super::*;
use crate::classify::samples::{timeout, unauthorized};
use crate::classify::{TransientKind, WaitSource};

const S: Duration = Duration::from_secs(1);

fn policy(max_job_retry: u32) -> RetryPolicy {
    RetryPolicy {
        max_job_retry,
        job_deadline: None,
        max_wait: 300 * S,
    }
}

fn unavailable() -> AttemptOutcome {
    AttemptOutcome::Transient(TransientKind::Server(ApiError {
        status: 503,
        code: Some("ServiceUnavailable".into()),
        message: "try later".into(),
    }))
}

fn limited() -> AttemptOutcome {
    AttemptOutcome::RateLimited {
        wait: 7 * S,
        source: WaitSource::Message,
        error: ApiError {
            status: 429,
            code: Some("429".into()),
            message: "Please retry after 7 seconds.".into(),
        },
    }
}

fn filtered() -> ApiError {
    ApiError {
        status: 400,
        code: Some("content_filter".into()),
        message: "The response was filtered".into(),
    }
}

/// Records `outcome` on `endpoint` and decides, as the Dispatcher does.
fn step(
    policy: &RetryPolicy,
    history: &mut JobHistory,
    endpoint: &str,
    outcome: AttemptOutcome,
    now: Instant,
) -> Decision {
    history.record(AttemptRecord::from_outcome(endpoint, &outcome, S));
    let ending = Ending::Outcome {
        outcome: &outcome,
        deltas_delivered: 0,
    };
    policy.decide(history, ending, now)
}

fn retry_avoiding(_endpoint: &str) -> Decision {
    Decision::Retry { elsewhere: true }
}

#[test]
fn max_job_retry_2_fails_on_the_third_transient_and_429s_do_not_count() {
    let t0 = Instant::now();
    let p = policy(2);
    let mut h = JobHistory::new(t0);
    assert_eq!(
        step(&p, &mut h, "east", timeout(), t0),
        retry_avoiding("east")
    );
    for _ in 0..10 {
        assert_eq!(
            step(&p, &mut h, "west", limited(), t0),
            retry_avoiding("west")
        );
    }
    assert_eq!(
        step(&p, &mut h, "west", unavailable(), t0),
        retry_avoiding("west")
    );
    h.record(AttemptRecord::lost("east", S));
    assert_eq!(
        p.decide(&h, Ending::Lost, t0),
        Decision::Retry { elsewhere: false }
    );
    assert_eq!(
        p.decide(&h, Ending::Declined, t0),
        Decision::Retry { elsewhere: false }
    );
    assert_eq!(h.counted_failures(), 2);
    let limited = h
        .attempts
        .iter()
        .filter(|a| a.kind == AttemptKind::RateLimited);
    assert_eq!(limited.count(), 10);
    assert_eq!(
        step(&p, &mut h, "east", timeout(), t0),
        Decision::Fail(JobErrorKind::RetriesExhausted)
    );
    assert_eq!(h.attempts.len(), 14);
}

#[test]
fn zero_retries_means_one_attempt() {
    let t0 = Instant::now();
    let mut h = JobHistory::new(t0);
    assert_eq!(
        step(&policy(0), &mut h, "east", timeout(), t0),
        Decision::Fail(JobErrorKind::RetriesExhausted)
    );
}

#[test]
fn success_is_delivered_even_after_failures_and_the_deadline() {
    let t0 = Instant::now();
    let p = RetryPolicy {
        max_job_retry: 1,
        job_deadline: Some(10 * S),
        max_wait: 300 * S,
    };
    let mut h = JobHistory::new(t0);
    step(&p, &mut h, "east", timeout(), t0);
    assert_eq!(
        step(&p, &mut h, "west", AttemptOutcome::Success, t0 + 60 * S),
        Decision::Deliver
    );
}

#[test]
fn job_fatal_fails_at_once_with_azure_error() {
    let t0 = Instant::now();
    let mut h = JobHistory::new(t0);
    let decision = step(
        &policy(5),
        &mut h,
        "east",
        AttemptOutcome::JobFatal(filtered()),
        t0,
    );
    assert_eq!(decision, Decision::Fail(JobErrorKind::Rejected(filtered())));
}

#[test]
fn a_reply_too_large_fails_at_once_with_no_reply_to_show() {
    let t0 = Instant::now();
    let mut h = JobHistory::new(t0);
    let too_large = AttemptOutcome::ReplyTooLarge { limit: 1000 };
    let decision = step(&policy(5), &mut h, "east", too_large, t0);
    let kind = JobErrorKind::ReplyTooLarge { limit: 1000 };
    assert_eq!(decision, Decision::Fail(kind.clone()));
    assert_eq!(h.counted_failures(), 1);
    let error = h.into_error(kind);
    assert_eq!(error.code(), "reply_too_large");
    assert_eq!(
        error.reply(),
        None,
        "a batch line carries `error`, not `response`"
    );
    assert!(
        error
            .to_string()
            .starts_with("reply larger than max_reply_bytes (1000 bytes): attempt 1 on 'east'"),
        "{error}"
    );
}

#[test]
fn endpoint_fatal_retries_elsewhere_and_counts() {
    let t0 = Instant::now();
    let p = policy(1);
    let mut h = JobHistory::new(t0);
    assert_eq!(
        step(&p, &mut h, "east", unauthorized(), t0),
        retry_avoiding("east")
    );
    assert_eq!(
        step(&p, &mut h, "west", unauthorized(), t0),
        Decision::Fail(JobErrorKind::RetriesExhausted)
    );
}

#[test]
fn the_deadline_bounds_429_loops_and_lost_attempts() {
    let t0 = Instant::now();
    let p = RetryPolicy {
        max_job_retry: 5,
        job_deadline: Some(30 * S),
        max_wait: 300 * S,
    };
    let mut h = JobHistory::new(t0);
    assert_eq!(
        step(&p, &mut h, "east", limited(), t0 + 29 * S),
        retry_avoiding("east")
    );
    assert_eq!(
        step(&p, &mut h, "east", limited(), t0 + 30 * S),
        Decision::Fail(JobErrorKind::DeadlineExceeded)
    );
    h.record(AttemptRecord::lost("east", S));
    assert_eq!(
        p.decide(&h, Ending::Lost, t0 + 31 * S),
        Decision::Fail(JobErrorKind::DeadlineExceeded)
    );
    assert_eq!(
        p.decide(&h, Ending::Declined, t0 + 31 * S),
        Decision::Fail(JobErrorKind::DeadlineExceeded)
    );
    assert!(!p.deadline_passed(&h, t0));
    assert!(!policy(5).deadline_passed(&h, t0 + 3600 * S));
}

#[test]
fn the_error_lists_every_attempt() {
    let t0 = Instant::now();
    let p = policy(1);
    let mut h = JobHistory::new(t0);
    step(&p, &mut h, "east", timeout(), t0);
    step(&p, &mut h, "west", limited(), t0);
    let Decision::Fail(kind) = step(&p, &mut h, "west", unavailable(), t0) else {
        panic!("expected failure");
    };
    let error = h.into_error(kind);
    assert_eq!(
        error.to_string(),
        "retries exhausted (max_job_retry): \
         attempt 1 on 'east': timeout after 2m; \
         attempt 2 on 'west': rate limited, retry after 7s (error message): HTTP 429: Please retry after 7 seconds.; \
         attempt 3 on 'west': HTTP 503 ServiceUnavailable: try later"
    );
    assert_eq!(error.status(), Some(503));
    assert_eq!(error.code(), "retries_exhausted");
    assert_eq!(error.attempts[1].kind, AttemptKind::RateLimited);
}

#[test]
fn accessors_for_batch_lines() {
    let rejected = JobError::new(
        JobErrorKind::Rejected(filtered()),
        vec![AttemptRecord::from_outcome(
            "east",
            &AttemptOutcome::JobFatal(filtered()),
            S,
        )],
    );
    assert_eq!(rejected.status(), Some(400));
    assert_eq!(
        rejected.reply().and_then(|e| e.code.as_deref()),
        Some("content_filter")
    );
    assert_eq!(
        rejected.to_string(),
        "rejected: HTTP 400 content_filter: The response was filtered: \
         attempt 1 on 'east': HTTP 400 content_filter: The response was filtered"
    );
    let no_reply = JobError::new(
        JobErrorKind::RetriesExhausted,
        vec![AttemptRecord::from_outcome("east", &timeout(), 120 * S)],
    );
    assert_eq!(no_reply.status(), None);
    let nothing_tried = JobError::new(JobErrorKind::AllEndpointsDisabled, Vec::new());
    assert_eq!(nothing_tried.reply(), None);
    assert_eq!(nothing_tried.code(), "all_endpoints_disabled");
    assert_eq!(
        nothing_tried.to_string(),
        "every endpoint is disabled (see the report for each reason)"
    );
    let lost = AttemptRecord::lost("east", S);
    assert_eq!(lost.kind, AttemptKind::Lost);
    assert!(!lost.kind.counts_against_retries());
}

#[test]
fn never_fits_says_what_to_do() {
    let error = JobError::new(
        JobErrorKind::NeverFits {
            tokens: 150_000,
            largest_capacity: 100_000,
        },
        Vec::new(),
    );
    assert_eq!(
        error.to_string(),
        "never fits: the job needs an estimated 150000 tokens, more than the largest \
         tpm_limit (100000); shorten the prompt or lower max_tokens"
    );
    assert_eq!(error.code(), "never_fits");
    let unknown = JobErrorKind::UnknownDeployment {
        name: "north".into(),
        known: "east, west".into(),
    };
    assert_eq!(
        unknown.to_string(),
        "no deployment named 'north' (known: east, west)"
    );
    assert_eq!(unknown.code(), "unknown_deployment");
    let cut = JobErrorKind::StreamInterrupted {
        deltas_delivered: 12,
    };
    assert!(
        cut.to_string()
            .starts_with("stream interrupted after 12 deltas")
    );
    assert_eq!(cut.code(), "stream_interrupted");
}

#[test]
fn unnamed_429s_fail_the_job_after_max_wait_in_a_row() {
    let t0 = Instant::now();
    let p = policy(5);
    let mut h = JobHistory::new(t0);
    let unnamed = AttemptOutcome::RateLimited {
        wait: 15 * S,
        source: WaitSource::Fallback,
        error: ApiError {
            status: 429,
            code: None,
            message: "Too Many Requests".into(),
        },
    };
    let decide = |h: &mut JobHistory, outcome: &AttemptOutcome, at: Instant| {
        h.record_at(at, AttemptRecord::from_outcome("east", outcome, S), outcome);
        let ending = Ending::Outcome {
            outcome,
            deltas_delivered: 0,
        };
        p.decide(h, ending, at)
    };
    assert_eq!(
        decide(&mut h, &unnamed, t0),
        Decision::Retry { elsewhere: true }
    );
    // A 429 that names its wait, or any other outcome, breaks the run.
    assert_eq!(
        decide(&mut h, &limited(), t0 + 200 * S),
        Decision::Retry { elsewhere: true }
    );
    assert_eq!(h.rate_limited_since, None);
    let run_start = t0 + 201 * S;
    assert_eq!(
        decide(&mut h, &unnamed, run_start),
        Decision::Retry { elsewhere: true }
    );
    assert_eq!(
        decide(&mut h, &unnamed, run_start + 299 * S),
        Decision::Retry { elsewhere: true }
    );
    let Decision::Fail(kind) = decide(&mut h, &unnamed, run_start + 300 * S) else {
        panic!("max_wait of unnamed 429s fails the job");
    };
    assert_eq!(kind.code(), "rate_limited");
    let error = h.into_error(kind);
    assert_eq!(error.status(), Some(429), "the last 429 is the job's reply");
}

#[test]
fn a_stream_cut_after_deltas_reached_the_caller_is_not_retried() {
    let t0 = Instant::now();
    let p = policy(5);
    let mut h = JobHistory::new(t0);
    let cut = timeout();
    h.record(AttemptRecord::from_outcome("east", &cut, S));
    let before_first_delta = Ending::Outcome {
        outcome: &cut,
        deltas_delivered: 0,
    };
    assert_eq!(
        p.decide(&h, before_first_delta, t0),
        Decision::Retry { elsewhere: true }
    );
    let after = Ending::Outcome {
        outcome: &cut,
        deltas_delivered: 3,
    };
    assert_eq!(
        p.decide(&h, after, t0),
        Decision::Fail(JobErrorKind::StreamInterrupted {
            deltas_delivered: 3
        })
    );
}

#[test]
fn job_error_is_a_sendable_cloneable_std_error() {
    fn check<T: std::error::Error + Clone + Send + Sync + 'static>() {}
    check::<JobError>();
}
