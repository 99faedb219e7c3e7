//! Processes renewing ahead against one [`LeaseLedger`] standing in for Redis, over a round
//! trip of fixed length (the ledger acts half way, the answer arrives at its end), stepped
//! every millisecond with explicit instants.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// 600 RPM (10 per 1 s window), 100,000 TPM.
fn limits() -> LeaseLimits {
    LeaseLimits::new(Some(600), Some(100_000), S)
}

fn spans() -> LeaseSpans {
    LeaseSpans::new(LEASE_TTL, S)
}

/// One process: its quota, jobs arriving every `every` at `tokens` each, its calls on their
/// way, and what it charged.
struct Process {
    quota: SharedQuota,
    every: Duration,
    tokens: u64,
    next_job: Instant,
    waiting: VecDeque<Instant>,
    /// Calls on their way: when the ledger performs them, and the renewal.
    calls: VecDeque<(Instant, Renewal)>,
    /// Answers on their way: when they arrive, and the grant.
    answers: VecDeque<(Instant, Grant)>,
    charges: Vec<(Instant, Cost)>,
    /// Jobs not charged the moment they arrived.
    waited: u32,
    asks: u32,
}

impl Process {
    fn new(t0: Instant, processes: u32, every: Duration, tokens: u64) -> Self {
        Process {
            quota: SharedQuota::new(limits(), processes, spans()),
            every,
            tokens,
            next_job: t0,
            waiting: VecDeque::new(),
            calls: VecDeque::new(),
            answers: VecDeque::new(),
            charges: Vec::new(),
            waited: 0,
            asks: 0,
        }
    }
}

/// Runs `processes` against one ledger from `t0` for `run` with a round trip of `rtt`.
fn simulate(t0: Instant, processes: &mut [Process], rtt: Duration, run: Duration) {
    let mut ledger = LeaseLedger::new(limits(), spans());
    let mut now = t0;
    while now < t0 + run {
        // The ledger performs the calls due, in the order they reach it.
        let mut due: Vec<(Instant, usize, Renewal)> = Vec::new();
        for (i, p) in processes.iter_mut().enumerate() {
            while p.calls.front().is_some_and(|(at, _)| *at <= now) {
                let (at, renewal) = p.calls.pop_front().unwrap();
                due.push((at, i, renewal));
            }
        }
        due.sort_by_key(|(at, i, _)| (*at, *i));
        for (at, i, renewal) in due {
            if let Some(back) = renewal.give_back {
                ledger.give_back(back.id, back.used, back.last_use);
            }
            if let Some(ask) = renewal.ask {
                let grant = ledger.grant(at, ask);
                processes[i].answers.push_back((at + rtt / 2, grant));
            }
        }
        for p in processes.iter_mut() {
            while p.answers.front().is_some_and(|(at, _)| *at <= now) {
                let (_, grant) = p.answers.pop_front().unwrap();
                p.quota.granted(now, grant);
            }
            while p.next_job <= now {
                p.waiting.push_back(p.next_job);
                p.next_job += p.every;
            }
            let cost = Cost {
                tokens: p.tokens,
                requests: 1,
            };
            while let Some(&arrived) = p.waiting.front() {
                match p.quota.try_charge(now, cost) {
                    Ok(charge) => {
                        p.charges.push((charge.at, charge.cost));
                        p.waiting.pop_front();
                    }
                    Err(_) => {
                        if arrived == now {
                            p.waited += 1;
                        }
                        break;
                    }
                }
            }
            while let Some(renewal) = p.quota.next_renewal(now) {
                p.asks += u32::from(renewal.ask.is_some());
                p.calls.push_back((now + rtt / 2, renewal));
            }
        }
        now += MS;
    }
}

/// The most of `of` charged within any span of `span`.
fn busiest(charges: &[(Instant, Cost)], span: Duration, of: impl Fn(Cost) -> u64) -> u64 {
    let mut sorted = charges.to_vec();
    sorted.sort_by_key(|(at, _)| *at);
    let (mut start, mut sum, mut most) = (0, 0, 0);
    for &(at, cost) in &sorted {
        sum += of(cost);
        while sorted[start].0 + span <= at {
            sum -= of(sorted[start].1);
            start += 1;
        }
        most = most.max(sum);
    }
    most
}

#[test]
fn at_a_steady_rate_jobs_never_wait_on_an_ask_while_the_quota_has_room() {
    // One of four processes at 4 jobs/s of 100 tokens (40 % of the RPM window, 24 % of the
    // TPM), Redis 4 ms away: leases hold at most a fair share of the window (2 requests), so
    // without renewing ahead every other job would wait a round trip.
    let t0 = Instant::now();
    let mut p = [Process::new(t0, 4, 250 * MS, 100)];
    simulate(t0, &mut p, 4 * MS, 60 * S);
    let [p] = &p;
    assert_eq!(p.charges.len(), 240);
    // The first job waits for the first lease; the second, because the lease fetched ahead
    // after the first fell idle before it came (no gap between jobs known yet). From then on
    // every job is charged the moment it arrives.
    assert_eq!(p.waited, 2);
    assert!(
        p.charges
            .iter()
            .skip(2)
            .enumerate()
            .all(|(i, (at, _))| { *at == t0 + 250 * MS * (i as u32 + 2) })
    );
    // About one ask per job (the leases, sized to the rate, hold one request or two), never
    // more than one per job and the two idle leases.
    assert!(p.asks <= 242, "{} asks", p.asks);
}

#[test]
fn a_lease_is_renewed_a_lead_before_it_runs_out_not_after() {
    // A lease of 2 requests spent at 4 jobs/s: after the first charge one request is left,
    // lasting 250 ms; the lead is two round trips (8 ms), so no ask yet. The second charge
    // spends it: the next is asked at once.
    let t0 = Instant::now();
    let mut q = SharedQuota::new(limits(), 4, spans());
    let job = Cost {
        tokens: 500,
        requests: 1,
    };
    assert_eq!(q.try_charge(t0, job), Err(LeaseWait::Renewal));
    assert!(q.next_renewal(t0).is_some());
    let room = Cost {
        tokens: 1_000,
        requests: 2,
    };
    q.granted(t0 + 4 * MS, Grant::Granted { id: 1, cost: room });
    q.try_charge(t0 + 4 * MS, job).unwrap();
    assert_eq!(q.next_renewal(t0 + 4 * MS), None);
    q.try_charge(t0 + 254 * MS, job).unwrap();
    let ahead = q.next_renewal(t0 + 254 * MS).unwrap();
    assert_eq!(ahead.give_back, None);
    assert_eq!(ahead.ask.unwrap().at_least, job);
    q.granted(t0 + 258 * MS, Grant::Granted { id: 2, cost: room });
    // The next job goes to the lease fetched ahead. The spent one would go back with the
    // next ask, but that is more than a horizon (127.5 ms) after its last use: it goes alone.
    assert_eq!(q.try_charge(t0 + 504 * MS, job).unwrap().lease, 2);
    let back = LeaseReturn {
        id: 1,
        used: room,
        last_use: 254 * MS,
    };
    assert_eq!(
        q.next_renewal(t0 + 504 * MS),
        Some(Renewal {
            give_back: Some(back),
            ask: None
        })
    );
    q.try_charge(t0 + 754 * MS, job).unwrap();
    let renewal = q.next_renewal(t0 + 754 * MS).unwrap();
    assert_eq!(renewal.give_back, None);
    assert_eq!(renewal.ask.unwrap().at_least, job);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Two processes renewing ahead on one ledger, at any rates (above the quota too), job
    /// sizes and round trips: their charges together never exceed a limit in any minute span
    /// or short window span.
    #[test]
    fn two_processes_renewing_ahead_never_exceed_the_limits(
        every in (1u32..300, 1u32..300),
        tokens in (100u64..8_000, 100u64..8_000),
        rtt in 0u32..10,
    ) {
        let t0 = Instant::now();
        let mut p = [
            Process::new(t0, 2, every.0 * MS, tokens.0),
            Process::new(t0, 2, every.1 * MS, tokens.1),
        ];
        simulate(t0, &mut p, 2 * rtt * MS, 20 * S);
        let all: Vec<(Instant, Cost)> = p.iter().flat_map(|p| p.charges.clone()).collect();
        prop_assert!(!all.is_empty());
        let spans = spans();
        let tokens_in_minute = busiest(&all, spans.minute, |c| c.tokens);
        prop_assert!(tokens_in_minute <= 100_000, "{tokens_in_minute} tokens in a minute span");
        let requests = |c: Cost| u64::from(c.requests);
        let in_window = busiest(&all, spans.window, requests);
        prop_assert!(in_window <= 10, "{in_window} requests in a window span");
        let in_minute = busiest(&all, spans.minute, requests);
        prop_assert!(in_minute <= 600, "{in_minute} requests in a minute span");
    }
}

/// A process of 4 whose first job (`job`) spent lease 1, granted at `t0 + MS` exactly its
/// size, so that the next lease is fetched ahead at once (its answer not yet in).
fn spent_with_the_next_lease_asked(t0: Instant, job: Cost) -> SharedQuota {
    let mut q = SharedQuota::new(limits(), 4, spans());
    q.try_charge(t0, job).unwrap_err();
    q.next_renewal(t0).unwrap();
    q.granted(t0 + MS, Grant::Granted { id: 1, cost: job });
    q.try_charge(t0 + MS, job).unwrap();
    assert!(q.next_renewal(t0 + MS).unwrap().ask.is_some());
    q
}

#[test]
fn no_room_for_a_lease_fetched_ahead_does_not_hold_up_a_job() {
    let t0 = Instant::now();
    let job = Cost {
        tokens: 500,
        requests: 1,
    };
    let mut q = spent_with_the_next_lease_asked(t0, job);
    // Redis has no room for the one fetched ahead (it counts lease 1 at its full size).
    q.granted(t0 + 2 * MS, Grant::Wait(S));
    // No more fetching ahead until the wait ends...
    assert_eq!(q.next_renewal(t0 + 100 * MS), None);
    // ...but a job that comes asks at once, giving lease 1 back in the same call.
    assert_eq!(q.try_charge(t0 + 100 * MS, job), Err(LeaseWait::Renewal));
    let renewal = q.next_renewal(t0 + 100 * MS).unwrap();
    assert_eq!(renewal.give_back.map(|b| b.id), Some(1));
    assert_eq!(renewal.ask.map(|a| a.at_least), Some(job));
}

#[test]
fn a_process_done_gives_back_the_lease_held_and_the_one_fetched_ahead() {
    let t0 = Instant::now();
    let job = Cost {
        tokens: 500,
        requests: 1,
    };
    let mut q = spent_with_the_next_lease_asked(t0, job);
    q.granted(t0 + 2 * MS, Grant::Granted { id: 2, cost: job });
    let back = q.release();
    assert_eq!(
        back,
        [
            LeaseReturn {
                id: 1,
                used: job,
                last_use: MS
            },
            LeaseReturn {
                id: 2,
                used: Cost::default(),
                last_use: Duration::ZERO
            }
        ]
    );
    // Nothing is left to give back, and a job after it asks again.
    assert!(q.release().is_empty());
    assert_eq!(q.try_charge(t0 + 3 * MS, job), Err(LeaseWait::Renewal));
}
