//! The Dispatcher's wiring on tokio's paused clock, with scripted endpoint actors (no sockets):
//! the timer it arms for a cooldown, the requeue of a lost attempt, a declined attempt.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aoai_blaster_core::chat::{ChatCompletion, ChatRequest};
use aoai_blaster_core::classify::{ApiError, AttemptOutcome, RateLimitHeaders, WaitSource};
use aoai_blaster_core::config::BlasterConfig;
use aoai_blaster_core::health::{CoolingCause, HealthSnapshot, HealthState};
use aoai_blaster_core::retry::AttemptKind;
use aoai_blaster_core::scheduler::AttemptReport;
use serde_json::json;

use super::*;
use crate::messages::ChatJob;

const S: Duration = Duration::from_secs(1);

/// What the scripted endpoint does with one attempt, after `after`.
#[derive(Clone, Copy)]
enum Answer {
    Success,
    /// A 429 naming this wait; the endpoint cools down for it.
    RateLimited(Duration),
    /// The actor restarted with the attempt in flight.
    Lost,
    /// Declined without sending: the endpoint cools for this long.
    Declined(Duration),
}

/// An endpoint actor that answers attempts from a script and notes when each arrived.
struct Scripted {
    index: usize,
    script: VecDeque<(Duration, Answer)>,
    done: Recipient<AttemptDone>,
    reports: Recipient<HealthReport>,
    generation: u64,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn health(&mut self, state: HealthState) -> HealthSnapshot {
        self.generation += 1;
        HealthSnapshot {
            generation: self.generation,
            state,
            failure_streak: 0,
        }
    }

    fn announce(&self, health: &HealthSnapshot, event: HealthEvent) {
        self.reports.do_send(HealthReport {
            endpoint: "east".into(),
            index: self.index,
            event,
            previous: None,
            health: health.clone(),
            at: SystemTime::now(),
        });
    }

    fn end(&mut self, answer: Answer) -> AttemptEnd {
        let now = clock::now();
        let cooling = |wait: Duration| HealthState::Cooling {
            until: now + wait,
            cause: CoolingCause::RateLimited,
        };
        let (outcome, health) = match answer {
            Answer::Success => (AttemptOutcome::Success, self.health(HealthState::Healthy)),
            Answer::RateLimited(wait) => {
                let health = self.health(cooling(wait));
                self.announce(&health, HealthEvent::Changed);
                let error = ApiError {
                    status: 429,
                    code: Some("429".into()),
                    message: "Please retry after 30 seconds.".into(),
                };
                let outcome = AttemptOutcome::RateLimited {
                    wait,
                    source: WaitSource::RetryAfter,
                    error,
                };
                (outcome, health)
            }
            Answer::Lost => {
                let health = self.health(HealthState::Healthy);
                self.announce(&health, HealthEvent::Restarted);
                return AttemptEnd::Lost;
            }
            Answer::Declined(wait) => {
                let health = self.health(cooling(wait));
                return AttemptEnd::Declined { health };
            }
        };
        let reply = matches!(outcome, AttemptOutcome::Success).then(|| {
            serde_json::from_value::<ChatCompletion>(json!({
                "id": "c", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]
            }))
            .expect("completion parses")
            .into()
        });
        AttemptEnd::Finished(Box::new(AttemptReport {
            outcome,
            reply,
            status: Some(200),
            request_id: None,
            rate_limits: RateLimitHeaders::default(),
            elapsed: Duration::from_millis(5),
            server_time: None,
            deltas_delivered: 0,
            stale_retries: 0,
            health,
        }))
    }
}

impl Actor for Scripted {
    type Context = Context<Self>;
}

impl Handler<Attempt> for Scripted {
    type Result = ();

    fn handle(&mut self, attempt: Attempt, ctx: &mut Self::Context) {
        self.arrivals
            .lock()
            .expect("not poisoned")
            .push(clock::now());
        let (after, answer) = self.script.pop_front().unwrap_or((S, Answer::Success));
        ctx.run_later(after, move |act, _| {
            let end = act.end(answer);
            act.done.do_send(AttemptDone {
                job: attempt.job,
                number: attempt.number,
                endpoint: act.index,
                end,
            });
        });
    }
}

impl Handler<StopForRestart> for Scripted {
    type Result = ();

    fn handle(&mut self, _: StopForRestart, _ctx: &mut Self::Context) {}
}

// No test here shares health (`shared:`), so no mirror is ever sent.
impl Handler<crate::messages::MirrorHealth> for Scripted {
    type Result = ();

    fn handle(&mut self, _: crate::messages::MirrorHealth, _ctx: &mut Self::Context) {}
}

/// A Dispatcher over one scripted endpoint; returns it and the attempts' arrival instants.
fn dispatcher(script: &[(Duration, Answer)]) -> (Addr<Dispatcher>, Arc<Mutex<Vec<Instant>>>) {
    dispatcher_with("", script)
}

/// [`dispatcher`] with top-level config lines `extra`.
fn dispatcher_with(
    extra: &str,
    script: &[(Duration, Answer)],
) -> (Addr<Dispatcher>, Arc<Mutex<Vec<Instant>>>) {
    // Configured (no) limits, not learned ones: the budget stays out of the timings.
    let yaml = format!(
        "deployments:\n  - {{name: east, endpoint: 'http://127.0.0.1:1/', api_key: k, model: m, \
         adaptive: false}}\n{extra}"
    );
    let config = BlasterConfig::from_yaml_str(&yaml).expect("config is valid");
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let script: VecDeque<_> = script.iter().copied().collect();
    let addr = Dispatcher::launch(&config, None, move |reports, done| {
        let endpoint = Scripted {
            index: 0,
            script,
            done,
            reports,
            generation: 0,
            arrivals: seen,
        }
        .start();
        let link = EndpointLink {
            attempts: endpoint.clone().recipient(),
            restart: endpoint.clone().recipient(),
            mirror: endpoint.recipient(),
        };
        (vec![link], Vec::new())
    });
    (addr, arrivals)
}

fn request() -> ChatRequest {
    ChatRequest::new(vec![json!({"role": "user", "content": "hi"})])
}

/// Runs `request` as a job; on the paused clock a job that nothing wakes fails here after an
/// hour instead of hanging the test.
async fn run(dispatcher: &Addr<Dispatcher>, request: ChatRequest) -> ChatResult {
    tokio::time::timeout(3600 * S, dispatcher.send(ChatJob::new(request)))
        .await
        .expect("the job ends within the hour")
        .expect("mailbox")
        .expect("the job succeeds")
}

fn kinds(result: &ChatResult) -> Vec<AttemptKind> {
    result.attempts.iter().map(|a| a.kind).collect()
}

#[actix_rt::test]
async fn a_cooldown_arms_one_timer_and_the_job_goes_when_it_ends() {
    tokio::time::pause();
    let (dispatcher, arrivals) = dispatcher(&[(S, Answer::RateLimited(30 * S))]);
    let result = run(&dispatcher, request()).await;
    assert_eq!(
        kinds(&result),
        vec![AttemptKind::RateLimited, AttemptKind::Success]
    );
    let arrivals = arrivals.lock().expect("not poisoned").clone();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1] - arrivals[0];
    // Sent when the 429 came back (1 s) plus the 30 s it asked for: not before, and not
    // after a polling interval.
    assert!(
        gap >= 31 * S && gap < 31 * S + Duration::from_millis(5),
        "{gap:?}"
    );
    let report = dispatcher.send(GetReport).await.expect("mailbox");
    assert_eq!(
        (
            report[0].counts.requests,
            report[0].counts.rate_limited,
            report[0].counts.successes
        ),
        (2, 1, 1)
    );
}

#[actix_rt::test]
async fn a_lost_attempt_is_requeued_at_once_and_not_counted() {
    tokio::time::pause();
    let (dispatcher, arrivals) = dispatcher(&[(2 * S, Answer::Lost)]);
    let result = run(&dispatcher, request()).await;
    assert_eq!(
        kinds(&result),
        vec![AttemptKind::Lost, AttemptKind::Success]
    );
    let arrivals = arrivals.lock().expect("not poisoned").clone();
    let gap = arrivals[1] - arrivals[0];
    // Timers fire on the millisecond after their instant.
    assert!(
        gap >= 2 * S && gap < 2 * S + Duration::from_millis(5),
        "requeued at once: {gap:?}"
    );
    let report = dispatcher.send(GetReport).await.expect("mailbox");
    assert_eq!((report[0].counts.requests, report[0].counts.lost), (2, 1));
    assert_eq!(report[0].counts.restarts, 1);
}

#[actix_rt::test]
async fn a_declined_attempt_is_sent_again_when_the_endpoint_can_take_it() {
    tokio::time::pause();
    let (dispatcher, arrivals) = dispatcher(&[(Duration::ZERO, Answer::Declined(5 * S))]);
    let result = run(&dispatcher, request()).await;
    assert_eq!(
        kinds(&result),
        vec![AttemptKind::Success],
        "a decline is not an attempt"
    );
    let arrivals = arrivals.lock().expect("not poisoned").clone();
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= 5 * S && gap < 5 * S + Duration::from_millis(5),
        "{gap:?}"
    );
    let report = dispatcher.send(GetReport).await.expect("mailbox");
    assert_eq!(report[0].counts.requests, 1);
}

#[actix_rt::test]
async fn start_outside_an_actix_system_is_an_error() {
    let outside = std::thread::spawn(|| {
        let config = BlasterConfig::from_yaml_str(
            "deployments:\n  - {name: east, endpoint: 'http://127.0.0.1:1/', api_key: k, model: m}\n",
        )
        .expect("config is valid");
        Dispatcher::start(config).map(|_| ()).map_err(|e| e.to_string())
    })
    .join()
    .expect("no panic");
    let error = outside.expect_err("no system on that thread");
    assert!(error.contains("no actix system is running"), "{error}");
}

#[actix_rt::test]
async fn a_job_whose_caller_stopped_waiting_is_never_sent() {
    tokio::time::pause();
    let (dispatcher, arrivals) = dispatcher_with("num_workers: 1\n", &[(10 * S, Answer::Success)]);
    // `send` puts each job in the mailbox at once; the first is in flight for 10 s.
    let first = dispatcher.send(ChatJob::new(request()));
    let dropped = dispatcher.send(ChatJob::new(request()));
    // Once the report is answered, the Dispatcher has queued the second job (one mailbox, in
    // order): the caller stops waiting only then.
    dispatcher.send(GetReport).await.expect("mailbox");
    drop(dropped);
    let handle_of_first = tokio::time::timeout(3600 * S, first);
    assert!(
        handle_of_first
            .await
            .expect("in time")
            .expect("mailbox")
            .is_ok()
    );
    let third = run(&dispatcher, request()).await;
    assert_eq!(kinds(&third), vec![AttemptKind::Success]);
    let arrivals = arrivals.lock().expect("not poisoned").clone();
    assert_eq!(arrivals.len(), 2, "the dropped job sent no request");
    let report = dispatcher.send(GetReport).await.expect("mailbox");
    assert_eq!(report[0].counts.requests, 2);
}

#[actix_rt::test]
async fn a_tracked_job_says_when_it_is_sent_and_is_cancelled_exactly_while_unsent() {
    tokio::time::pause();
    let (dispatcher, arrivals) = dispatcher_with("num_workers: 1\n", &[(10 * S, Answer::Success)]);
    let (first_gate, second_gate) = (SendGate::default(), SendGate::default());
    let tracked = |gate: &SendGate| TrackedJob {
        job: ChatJob::new(request()).into_job(),
        gate: gate.clone(),
    };
    let first = dispatcher.send(tracked(&first_gate));
    let second = dispatcher.send(tracked(&second_gate));
    dispatcher.send(GetReport).await.expect("mailbox");
    assert!(first_gate.is_sent(), "the first job is on the wire");
    assert!(!second_gate.is_sent(), "the second waits for the worker");
    assert!(!first_gate.cancel_unsent(), "a sent job is not cancelled");
    assert!(second_gate.cancel_unsent(), "an unsent one is");
    assert!(!second_gate.mark_sent(), "and can no longer be sent");
    let first = tokio::time::timeout(3600 * S, first)
        .await
        .expect("in time")
        .expect("mailbox");
    assert!(first.is_ok());
    let second = tokio::time::timeout(3600 * S, second)
        .await
        .expect("in time")
        .expect("mailbox");
    let error = second.expect_err("the cancelled job gives no result");
    assert!(
        matches!(error.kind, JobErrorKind::Cancelled),
        "{:?}",
        error.kind
    );
    assert_eq!(arrivals.lock().expect("not poisoned").len(), 1);
    let report = dispatcher.send(GetReport).await.expect("mailbox");
    assert_eq!(report[0].counts.requests, 1);
}
