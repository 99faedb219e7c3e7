//! Quotas shared by several schedulers through a stand-in of Redis' ledger (the rule the Lua
//! scripts run, [`LeaseLedger`]), with explicit instants: together they never admit more than
//! the limits, a lost link falls back to `1/N`, and the link coming back carries the use over.

use std::time::Instant;

use serde_json::json;

use super::*;
use crate::config::SharedFallback;
use crate::embeddings::EmbeddingsRequest;
use crate::quota::span_of;
use crate::shared::{
    ASK_TIMEOUT, LEASE_TTL, LeaseLedger, LeaseLimits, LeaseSpans, LinkChange, RedisLink,
};

/// Tokens a minute the deployment allows.
const TPM: u64 = 10_000;
/// Tokens each job is charged (an embeddings job of exactly this many input tokens).
const JOB: u64 = 1_000;

/// Redis as the processes see it: the ledger its scripts keep, and whether it answers.
struct Redis {
    ledger: LeaseLedger,
    up: bool,
    /// Takes calls and never answers.
    hung: bool,
    calls: u32,
}

impl Redis {
    fn new() -> Self {
        let limits = LeaseLimits::new(None, Some(TPM), S);
        Redis {
            ledger: LeaseLedger::new(limits, LeaseSpans::new(LEASE_TTL, S)),
            up: true,
            hung: false,
            calls: 0,
        }
    }
}

/// One process: its scheduler and what it saw.
struct Process {
    scheduler: Scheduler<Job>,
    /// Attempts sent and not yet answered.
    in_flight: Vec<(JobId, u32, usize)>,
    /// When each attempt was sent, with its tokens.
    sent: Vec<(Instant, u64)>,
    delivered: usize,
    links: Vec<(Instant, LinkChange)>,
    carried: u64,
}

impl Process {
    /// A process of `processes` sharing one deployment's TPM, with `jobs` jobs submitted at
    /// `t0`, that reached Redis at start or not.
    fn new(t0: Instant, processes: u32, jobs: usize, reached: bool, redis: &mut Redis) -> Self {
        let config = config(
            &["{name: east, model: embed-3, operations: [embeddings], tpm_limit: 10000}"],
            &format!(
                "shared: {{redis_url: 'redis://127.0.0.1:1', expected_processes: {processes}, fallback: local}}\n"
            ),
        );
        let mut scheduler = Scheduler::new(&config, StdRng::seed_from_u64(1));
        let reached = if reached {
            Ok(())
        } else {
            Err("refused".into())
        };
        let (link, _) =
            RedisLink::at_start(t0, reached, SharedFallback::Local, "redis://127.0.0.1:1")
                .expect("fallback local starts");
        scheduler.share_quotas(t0, &config, link);
        let mut process = Process {
            scheduler,
            in_flight: Vec::new(),
            sent: Vec::new(),
            delivered: 0,
            links: Vec::new(),
            carried: 0,
        };
        let mut effects = Vec::new();
        for _ in 0..jobs {
            let request = EmbeddingsRequest::new(json!([vec![1; JOB as usize]]));
            process
                .scheduler
                .submit(t0, job("e"), request, JobOptions::default(), &mut effects);
        }
        process.perform(t0, effects, redis);
        process
    }

    /// Answers what was sent, wakes the scheduler, performs its effects against `redis`.
    fn step(&mut self, now: Instant, redis: &mut Redis) {
        let mut effects = Vec::new();
        // Each was sent at the step before (10 ms ago) and left at once.
        for (job, number, endpoint) in std::mem::take(&mut self.in_flight) {
            self.scheduler.attempt_ended(
                now,
                job,
                number,
                endpoint,
                success(10 * MS),
                &mut effects,
            );
        }
        self.scheduler.wake(now, &mut effects);
        self.perform(now, effects, redis);
    }

    fn perform(&mut self, now: Instant, effects: Vec<Effect<Job>>, redis: &mut Redis) {
        drain(effects, |effect, next| match effect {
            Effect::Send {
                job,
                endpoint,
                number,
                tokens,
                ..
            } => {
                self.sent.push((now, tokens));
                self.in_flight.push((job, number, endpoint));
            }
            Effect::Deliver { .. } => self.delivered += 1,
            Effect::Fail { error, .. } => panic!("no job may fail: {error}"),
            Effect::Shared(shared) => self.shared(now, shared, redis, next),
        });
    }

    fn shared(
        &mut self,
        now: Instant,
        effect: SharedEffect,
        redis: &mut Redis,
        next: &mut Vec<Effect<Job>>,
    ) {
        let s = &mut self.scheduler;
        if redis.hung && !matches!(effect, SharedEffect::Link(_)) {
            return;
        }
        if !redis.up && !matches!(effect, SharedEffect::Link(_)) {
            s.redis_failed(now, "connection refused", next);
            return;
        }
        match effect {
            SharedEffect::Renew { endpoint, renewal } => {
                redis.calls += 1;
                if let Some(back) = renewal.give_back {
                    redis.ledger.give_back(back.id, back.used, back.last_use);
                }
                if let Some(ask) = renewal.ask {
                    let grant = redis.ledger.grant(now, ask);
                    s.lease_granted(now, endpoint, grant, next);
                }
            }
            SharedEffect::Carry { carries, .. } => {
                redis.calls += 1;
                for c in carries {
                    redis
                        .ledger
                        .carry(now, c.cost, c.minute_left, c.window_left);
                    self.carried += c.cost.tokens;
                }
            }
            SharedEffect::Probe => {
                redis.calls += 1;
                s.redis_back(now, next);
            }
            SharedEffect::Link(change) => self.links.push((now, change)),
            // Shared health has its own tests (`shared_health.rs`); unanswered reads stop.
            SharedEffect::Note { .. }
            | SharedEffect::ReadHealth { .. }
            | SharedEffect::Mirror { .. } => {}
        }
    }
}

/// The most tokens sent within any minute span (60.3 s) starting at a send at or after `from`.
fn busiest_minute(sent: &[(Instant, u64)], from: Instant) -> u64 {
    let minute = span_of(Duration::from_secs(60));
    sent.iter()
        .filter(|(at, _)| *at >= from)
        .map(|(start, _)| {
            sent.iter()
                .filter(|(at, _)| *at >= *start && *at < *start + minute)
                .map(|(_, tokens)| tokens)
                .sum()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn two_schedulers_sharing_a_quota_never_admit_more_than_its_limit() {
    let t0 = Instant::now();
    let mut redis = Redis::new();
    let mut a = Process::new(t0, 2, 20, true, &mut redis);
    let mut b = Process::new(t0, 2, 20, true, &mut redis);
    let mut now = t0;
    while a.delivered + b.delivered < 40 && now < t0 + 400 * S {
        now += 10 * MS;
        a.step(now, &mut redis);
        b.step(now, &mut redis);
    }
    assert_eq!((a.delivered, b.delivered), (20, 20));
    assert!(a.links.is_empty() && b.links.is_empty());
    let mut all: Vec<(Instant, u64)> = a.sent.iter().chain(&b.sent).copied().collect();
    all.sort();
    assert_eq!(all.len(), 40);
    assert!(all.iter().all(|(_, tokens)| *tokens == JOB));
    assert_eq!(busiest_minute(&all, t0), TPM);
    // The last ten go as the third minute span's charges age out: the quota's own pace,
    // as one process alone would send. 79 Redis calls for 40 jobs: 15 leases; while the
    // minute is full each waiting process asks again every lease ttl (2 s; the others' leases
    // may have been given back by then), 60 asks over the two minutes of waiting; and 4 asks
    // made ahead as a lease ran out.
    let last = all.last().map(|(at, _)| *at - t0);
    assert_eq!(last, Some(3 * span_of(Duration::from_secs(60))));
    assert_eq!(redis.calls, 79);
}

#[test]
fn a_lost_link_paces_at_one_nth_and_the_link_back_carries_the_use() {
    let t0 = Instant::now();
    let minute = span_of(Duration::from_secs(60));
    let mut redis = Redis::new();
    let mut p = Process::new(t0, 2, 40, true, &mut redis);
    let mut now = t0;
    let (lose_at, back_at) = (t0 + 70 * S, t0 + 200 * S);
    while p.delivered < 40 && now < t0 + 600 * S {
        now += 10 * MS;
        redis.up = !(lose_at..back_at).contains(&now);
        p.step(now, &mut redis);
    }
    assert_eq!(p.delivered, 40);
    let [
        (lost, LinkChange::Lost { error }),
        (restored, LinkChange::Restored { after }),
    ] = &p.links[..]
    else {
        panic!("expected lost then restored, got {:?}", p.links);
    };
    assert_eq!(error, "connection refused");
    assert!(*lost >= lose_at && *restored >= back_at);
    assert_eq!(*after, *restored - *lost);
    // Shared, the first minute span took the whole quota; alone, half of it per span.
    assert_eq!(busiest_minute(&p.sent, t0), TPM);
    let local: Vec<(Instant, u64)> = p
        .sent
        .iter()
        .filter(|(at, _)| *at >= *lost && *at < *restored)
        .copied()
        .collect();
    assert_eq!(busiest_minute(&local, *lost), TPM / 2);
    // What it sent alone that still counts was written to Redis before its next ask.
    let live: u64 = local
        .iter()
        .filter(|(at, _)| *at + minute > *restored)
        .map(|(_, tokens)| tokens)
        .sum();
    assert!(live > 0);
    assert_eq!(p.carried, live);
    assert!(p.sent.iter().any(|(at, _)| *at >= *restored));
}

#[test]
fn an_ask_with_no_answer_is_redis_lost_and_the_jobs_go_on_alone() {
    let t0 = Instant::now();
    let mut redis = Redis::new();
    redis.hung = true;
    let mut p = Process::new(t0, 2, 10, true, &mut redis);
    assert!(p.sent.is_empty());
    let mut now = t0;
    while p.links.is_empty() && now < t0 + 10 * S {
        now += 10 * MS;
        p.step(now, &mut redis);
    }
    let [(lost, LinkChange::Lost { error })] = &p.links[..] else {
        panic!("expected one loss, got {:?}", p.links);
    };
    assert_eq!(*lost, t0 + ASK_TIMEOUT);
    assert_eq!(error, "no answer from Redis within the ask timeout");
    // At once, on half the quota: five jobs of 1,000 tokens.
    assert_eq!(p.sent, vec![(*lost, JOB); 5]);
    assert_eq!(p.scheduler.is_shared(), Some(false));
}
