//! Health shared by two schedulers through a stand-in of Redis' health keys (what
//! `note.lua` writes, what the read pipeline returns), each endpoint's health owned by a real
//! [`EndpointHealth`] as its actor would own it, with explicit instants: a 429 or a rejection
//! one process meets reaches the other at its next read, a recovery lifts the other's
//! rejection, nothing is echoed, and a read sent before a process's own note is not mirrored.

use std::time::Instant;

use super::*;
use crate::classify::samples::{rate_limited, unauthorized};
use crate::health::{DisableCause, EndpointHealth, HealthChange, HealthPolicy};
use crate::shared::{HEALTH_POLL, HealthMirror, HealthNote, RECOVERED_TTL, SharedHealth};

/// One deployment's health keys, with their expiry instants.
#[derive(Default)]
struct Keys {
    cooling: Option<Instant>,
    disabled: Option<(String, Instant)>,
    recovered: Option<Instant>,
    notes: Vec<HealthNote>,
}

impl Keys {
    /// As `note.lua` writes it.
    fn write(&mut self, now: Instant, note: HealthNote) {
        match &note {
            HealthNote::Cooling { wait } => {
                if self.cooling.is_none_or(|end| end <= now + *wait) {
                    self.cooling = Some(now + *wait);
                }
            }
            HealthNote::Disabled { reason, ttl } => {
                self.disabled = Some((reason.clone(), now + *ttl));
                self.recovered = None;
            }
            HealthNote::Recovered => {
                self.disabled = None;
                self.recovered = Some(now + RECOVERED_TTL);
            }
        }
        self.notes.push(note);
    }

    /// As the read pipeline returns it at `now` (expired keys are gone).
    fn read(&self, now: Instant) -> SharedHealth {
        SharedHealth {
            cooling_for: self.cooling.filter(|end| *end > now).map(|end| end - now),
            disabled: self
                .disabled
                .clone()
                .filter(|(_, end)| *end > now)
                .map(|(reason, end)| (reason, end - now)),
            recovered: self.recovered.is_some_and(|end| end > now),
        }
    }
}

/// The keys of each endpoint (`hot`, `other`), as every process sees them.
type Redis = [Keys; 2];

/// One process: its scheduler, its endpoints' health, and what it saw.
struct Process {
    scheduler: Scheduler<Job>,
    health: Vec<EndpointHealth>,
    generation: u64,
    /// Attempts in flight: job, number, endpoint, sent at.
    in_flight: Vec<(JobId, u32, usize, Instant)>,
    /// Reads Redis has run (at the instant they were sent), not yet answered.
    reads: Vec<(u64, Vec<SharedHealth>)>,
    mirrors: Vec<(usize, HealthMirror)>,
    failed: Vec<(&'static str, String)>,
}

impl Process {
    fn new(reenable_after: Duration) -> Self {
        let config = config(
            &["{name: hot}", "{name: other}"],
            "shared: {redis_url: 'redis://127.0.0.1:1', expected_processes: 2}\n",
        );
        let mut scheduler = Scheduler::new(&config, StdRng::seed_from_u64(1));
        let (link, _) = crate::shared::RedisLink::at_start(
            Instant::now(),
            Ok(()),
            crate::config::SharedFallback::Error,
            "redis://127.0.0.1:1",
        )
        .expect("reached");
        scheduler.share_quotas(Instant::now(), &config, link);
        let policy = HealthPolicy {
            reenable_after: Some(reenable_after),
            jitter: false,
            ..HealthPolicy::default()
        };
        Process {
            scheduler,
            health: (0..2)
                .map(|_| EndpointHealth::new(policy.clone(), StdRng::seed_from_u64(2)))
                .collect(),
            generation: 0,
            in_flight: Vec::new(),
            reads: Vec::new(),
            mirrors: Vec::new(),
            failed: Vec::new(),
        }
    }

    fn submit(&mut self, now: Instant, name: &'static str, pin: &str, redis: &mut Redis) {
        let mut fx = Vec::new();
        self.scheduler
            .submit(now, job(name), small(), pinned(pin), &mut fx);
        self.perform(now, fx, redis);
    }

    fn wake(&mut self, now: Instant, redis: &mut Redis) {
        let mut fx = Vec::new();
        self.scheduler.wake(now, &mut fx);
        self.perform(now, fx, redis);
    }

    /// Redis' answers to the reads sent so far arrive at `now`.
    fn answer_reads(&mut self, now: Instant, redis: &mut Redis) {
        for (read, healths) in std::mem::take(&mut self.reads) {
            let mut fx = Vec::new();
            self.scheduler.health_read(now, read, &healths, &mut fx);
            self.perform(now, fx, redis);
        }
    }

    /// The attempt of `job` ends at `now` with `outcome`, as the endpoint actor reports it.
    fn end(&mut self, now: Instant, job: JobId, outcome: AttemptOutcome, redis: &mut Redis) {
        let at = self
            .in_flight
            .iter()
            .position(|a| a.0 == job)
            .expect("sent");
        let (job, number, endpoint, sent) = self.in_flight.remove(at);
        let mut fx = Vec::new();
        if let Some(change) = self.health[endpoint].on_outcome(now, sent, &outcome) {
            self.announce(now, endpoint, Some(&change), &mut fx);
        }
        let mut end = report(outcome, MS);
        if let AttemptEnd::Finished(report) = &mut end {
            report.health = self.snapshot(endpoint);
        }
        self.scheduler
            .attempt_ended(now, job, number, endpoint, end, &mut fx);
        self.perform(now, fx, redis);
    }

    /// `endpoint`'s actor announces a change: noted for the others only when `learned`.
    fn announce(
        &mut self,
        now: Instant,
        endpoint: usize,
        learned: Option<&HealthChange>,
        fx: &mut Vec<Effect<Job>>,
    ) {
        self.generation += 1;
        if let Some(change) = learned {
            self.scheduler.share_health(now, endpoint, change, fx);
        }
        let snapshot = self.snapshot(endpoint);
        self.scheduler
            .health_changed(now, endpoint, &snapshot, false, fx);
    }

    fn snapshot(&self, endpoint: usize) -> HealthSnapshot {
        HealthSnapshot {
            generation: self.generation,
            state: self.health[endpoint].state().clone(),
            failure_streak: 0,
        }
    }

    fn state(&self, endpoint: usize) -> &HealthState {
        self.health[endpoint].state()
    }

    fn perform(&mut self, now: Instant, effects: Vec<Effect<Job>>, redis: &mut Redis) {
        drain(effects, |effect, next| match effect {
            Effect::Send {
                job,
                endpoint,
                number,
                ..
            } => {
                self.health[endpoint].on_sent(now);
                self.in_flight.push((job, number, endpoint, now));
            }
            Effect::Deliver { .. } => {}
            Effect::Fail { payload, error, .. } => {
                self.failed.push((payload.name, error.to_string()));
            }
            Effect::Shared(SharedEffect::Note { endpoint, note }) => {
                redis[endpoint].write(now, note);
            }
            Effect::Shared(SharedEffect::ReadHealth { read }) => {
                let healths = redis.iter().map(|k| k.read(now)).collect();
                self.reads.push((read, healths));
            }
            Effect::Shared(SharedEffect::Mirror { endpoint, mirror }) => {
                if self.health[endpoint].mirror(now, &mirror).is_some() {
                    self.announce(now, endpoint, None, next);
                }
                self.mirrors.push((endpoint, mirror));
            }
            Effect::Shared(other) => panic!("no quota is shared here: {other:?}"),
        });
    }
}

const HOT: usize = 0;

#[test]
fn a_429_met_by_one_process_cools_the_other_at_its_next_read_and_is_not_echoed() {
    let t0 = Instant::now();
    let mut redis = Redis::default();
    let (mut a, mut b) = (Process::new(30 * S), Process::new(30 * S));
    a.submit(t0, "a1", "hot", &mut redis);
    b.submit(t0, "b1", "hot", &mut redis);
    a.answer_reads(t0, &mut redis);
    b.answer_reads(t0, &mut redis);

    // A meets a 429 asking for 5 s: it cools and writes the note, once.
    a.end(t0 + 10 * MS, 0, rate_limited(5 * S), &mut redis);
    let end = t0 + 10 * MS + 5 * S;
    assert_eq!(redis[HOT].notes, [HealthNote::Cooling { wait: 5 * S }]);

    // B's next read (one poll after its first) sees it and cools until the same instant.
    b.wake(t0 + HEALTH_POLL, &mut redis);
    b.answer_reads(t0 + HEALTH_POLL, &mut redis);
    assert_eq!(b.mirrors, [(HOT, HealthMirror::Cooling { until: end })]);
    assert_eq!(
        b.state(HOT),
        &HealthState::Cooling {
            until: end,
            cause: CoolingCause::RateLimited
        }
    );
    // B's job comes back declined-free; its next one waits for the end, not sent before.
    b.end(t0 + 600 * MS, 0, AttemptOutcome::Success, &mut redis);
    b.submit(t0 + 600 * MS, "b2", "hot", &mut redis);
    let mut now = t0 + 600 * MS;
    while now < end - MS {
        now = (now + HEALTH_POLL).min(end - MS);
        b.wake(now, &mut redis);
        b.answer_reads(now, &mut redis);
        a.wake(now, &mut redis);
        a.answer_reads(now, &mut redis);
        assert!(b.in_flight.is_empty(), "b sent to a cooling deployment");
    }
    b.wake(end, &mut redis);
    assert_eq!(b.in_flight.len(), 1, "b2 goes out when the wait ends");
    // No echo: neither read its own (or the mirrored) cooldown back as news, nothing rewritten.
    assert!(a.mirrors.is_empty(), "{:?}", a.mirrors);
    assert_eq!(b.mirrors.len(), 1);
    assert_eq!(redis[HOT].notes.len(), 1);
}

#[test]
fn a_rejection_disables_a_healthy_process_with_its_reason_but_stale_reads_do_nothing() {
    let t0 = Instant::now();
    let mut redis = Redis::default();
    let (mut a, mut b) = (Process::new(30 * S), Process::new(120 * S));
    // An old recovery mark is still there when B sends its first job (and its first read).
    redis[HOT].recovered = Some(t0 + 4 * S);
    b.submit(t0, "b-keep", "other", &mut redis);
    b.submit(t0, "b1", "hot", &mut redis);
    // B's read ran before its own 401 but is answered after it: it shows the old mark and no
    // disable, and must not lift what B just learned.
    b.end(t0 + 10 * MS, 1, unauthorized(), &mut redis);
    b.answer_reads(t0 + 20 * MS, &mut redis);
    assert!(b.mirrors.is_empty(), "{:?}", b.mirrors);
    assert_eq!(b.state(HOT).disable_cause(), Some(DisableCause::Rejected));
    assert_eq!(
        b.failed.len(),
        1,
        "b1 fails fast: its pinned endpoint rejects it"
    );
    assert_eq!(
        redis[HOT].recovered, None,
        "the disable supersedes the old mark"
    );

    // A, healthy, reads B's note and takes the disable with B's reason and end.
    a.submit(t0 + 100 * MS, "a-keep", "other", &mut redis);
    a.answer_reads(t0 + 100 * MS, &mut redis);
    let HealthState::Disabled { reason, until, .. } = a.state(HOT).clone() else {
        panic!("a mirrors the disable: {:?}", a.state(HOT));
    };
    assert_eq!(
        reason,
        "disabled by another process: credentials rejected (HTTP 401): check api_key for this deployment"
    );
    assert_eq!(until, Some(t0 + 10 * MS + 120 * S));
    // Its jobs for that deployment fail fast with the reason, and nothing is sent to it.
    a.submit(t0 + 100 * MS, "a1", "hot", &mut redis);
    assert_eq!(a.in_flight.len(), 1, "only a-keep");
    assert_eq!(a.failed[0].0, "a1");
    assert!(
        a.failed[0].1.contains("disabled by another process"),
        "{:?}",
        a.failed
    );
    // Later reads change nothing, and A never writes the disable back.
    a.wake(t0 + 600 * MS, &mut redis);
    a.answer_reads(t0 + 600 * MS, &mut redis);
    assert_eq!(a.mirrors.len(), 1);
    assert_eq!(redis[HOT].notes.len(), 1);
}

#[test]
fn a_recovery_lifts_the_others_rejection_long_before_their_own_probe() {
    let t0 = Instant::now();
    let mut redis = Redis::default();
    // Both are refused; A probes after 30 s, B would wait 120 s on its own.
    let (mut a, mut b) = (Process::new(30 * S), Process::new(120 * S));
    b.submit(t0, "b-keep", "other", &mut redis);
    b.submit(t0, "b1", "hot", &mut redis);
    a.submit(t0, "a1", "hot", &mut redis);
    a.end(t0 + 10 * MS, 0, unauthorized(), &mut redis);
    b.end(t0 + 10 * MS, 1, unauthorized(), &mut redis);
    a.answer_reads(t0 + 10 * MS, &mut redis);
    b.answer_reads(t0 + 10 * MS, &mut redis);
    assert!(a.mirrors.is_empty() && b.mirrors.is_empty());

    // A's disable ends: it probes (its own schedule, though B's note is still there).
    let probe_at = t0 + 10 * MS + 30 * S;
    let change = a.health[HOT].refresh(probe_at).expect("probing");
    a.announce(probe_at, HOT, Some(&change), &mut Vec::new());
    a.submit(probe_at, "a2", "hot", &mut redis);
    assert_eq!(a.in_flight.len(), 1, "the probe");
    a.answer_reads(probe_at, &mut redis);
    assert!(
        a.mirrors.is_empty(),
        "a probing endpoint keeps its own schedule"
    );
    a.end(probe_at + 10 * MS, 1, AttemptOutcome::Success, &mut redis);
    assert_eq!(redis[HOT].notes.last(), Some(&HealthNote::Recovered));

    // B reads it at its next poll and sends to the deployment again, 90 s early.
    let read_at = probe_at + HEALTH_POLL;
    b.wake(read_at, &mut redis);
    b.answer_reads(read_at, &mut redis);
    assert_eq!(b.mirrors, [(HOT, HealthMirror::Recovered)]);
    assert_eq!(b.state(HOT), &HealthState::Healthy);
    b.submit(read_at, "b2", "hot", &mut redis);
    assert_eq!(b.in_flight.len(), 2, "b-keep and b2");
    // The recovery B mirrored is not written again.
    assert_eq!(
        redis[HOT]
            .notes
            .iter()
            .filter(|n| **n == HealthNote::Recovered)
            .count(),
        1
    );
}
