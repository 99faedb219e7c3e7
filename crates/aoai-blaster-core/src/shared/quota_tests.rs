use std::time::{Duration, Instant};

use super::*;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);
const M: Duration = Duration::from_millis(60_300);

fn job(tokens: u64) -> Cost {
    Cost {
        tokens,
        requests: 1,
    }
}

/// 600 RPM (10 per 1 s window), 100,000 TPM, shared by 4 processes.
fn quota() -> SharedQuota {
    SharedQuota::new(
        LeaseLimits::new(Some(600), Some(100_000), S),
        4,
        LeaseSpans::new(LEASE_TTL, S),
    )
}

/// A job of `wanted` asks for a lease at `at`, and Redis grants lease `id` with `room` at once.
fn hold(q: &mut SharedQuota, at: Instant, wanted: Cost, id: u64, room: Cost) {
    assert_eq!(q.try_charge(at, wanted), Err(LeaseWait::Renewal));
    assert!(q.next_renewal(at).is_some_and(|r| r.ask.is_some()));
    q.granted(at, Grant::Granted { id, cost: room });
}

/// [`quota`] holding lease 5 (room for 500 tokens and 50 requests), granted at `t0` to a job
/// of 10 tokens not yet charged.
fn holding_lease_5(t0: Instant) -> SharedQuota {
    let mut q = quota();
    let room = Cost {
        tokens: 500,
        requests: 50,
    };
    hold(&mut q, t0, job(10), 5, room);
    q
}

fn ask_of(renewal: Option<Renewal>) -> LeaseAsk {
    renewal.and_then(|r| r.ask).expect("expected an ask")
}

#[test]
fn jobs_are_charged_to_the_lease_until_it_is_spent_then_it_is_renewed() {
    let t0 = Instant::now();
    let mut q = quota();
    assert_eq!(q.try_charge(t0, job(1_000)), Err(LeaseWait::Renewal));
    // No rate known yet: room for the job waiting.
    let first = q.next_renewal(t0).unwrap();
    assert_eq!(first.give_back, None);
    assert_eq!(
        first.ask,
        Some(LeaseAsk {
            want: job(1_000),
            at_least: job(1_000)
        })
    );
    // One ask at a time.
    assert_eq!(q.next_renewal(t0 + MS), None);
    assert_eq!(q.wake_at(), Some(t0 + ASK_TIMEOUT));
    q.granted(
        t0 + MS,
        Grant::Granted {
            id: 1,
            cost: Cost {
                tokens: 3_000,
                requests: 3,
            },
        },
    );
    for i in 0..3 {
        let charge = q.try_charge(t0 + (10 + i) * MS, job(1_000)).unwrap();
        assert_eq!((charge.lease, charge.at), (1, t0 + (10 + i) * MS));
    }
    assert_eq!(
        q.try_charge(t0 + 20 * MS, job(1_000)),
        Err(LeaseWait::Renewal)
    );
    // One round trip gives the spent lease back (used, last charged 12 ms after the ask) and
    // asks for the next, sized to the rate it was spent at (3,000 tokens in 20 ms) over an
    // eighth of the 1 s RPM window (127.5 ms: 19,125 tokens); requests are capped at the
    // window's fair share, 10 / 4.
    let renewal = q.next_renewal(t0 + 20 * MS).unwrap();
    assert_eq!(
        renewal.give_back,
        Some(LeaseReturn {
            id: 1,
            used: Cost {
                tokens: 3_000,
                requests: 3
            },
            last_use: 12 * MS,
        })
    );
    assert_eq!(
        renewal.ask,
        Some(LeaseAsk {
            want: Cost {
                tokens: 19_125,
                requests: 2
            },
            at_least: job(1_000),
        })
    );
}

#[test]
fn a_lease_is_sized_to_the_recent_rate() {
    let t0 = Instant::now();
    // No RPM limit: sized for a whole second.
    let mut q = SharedQuota::new(
        LeaseLimits::new(None, Some(10_000_000), S),
        2,
        LeaseSpans::new(LEASE_TTL, S),
    );
    hold(
        &mut q,
        t0,
        job(100),
        1,
        Cost {
            tokens: 10_000,
            requests: 100,
        },
    );
    // 20 jobs of 100 tokens over the lease's 2 s ttl: 1,000 tokens/s, 10 requests/s.
    for i in 0..20 {
        q.try_charge(t0 + i * 100 * MS, job(100)).unwrap();
    }
    // Renewed ahead a lead (1 ms: no round trip measured) before its ttl ends.
    assert_eq!(q.wake_at(), Some(t0 + LEASE_TTL - MS));
    q.try_charge(t0 + LEASE_TTL, job(100)).unwrap_err();
    let renewal = q.next_renewal(t0 + LEASE_TTL).unwrap();
    assert_eq!(renewal.give_back.unwrap().last_use, 1_900 * MS);
    assert_eq!(
        renewal.ask.unwrap().want,
        Cost {
            tokens: 1_000,
            requests: 0
        }
    );
}

#[test]
fn with_an_rpm_limit_a_lease_is_sized_for_an_eighth_of_the_window() {
    let t0 = Instant::now();
    // 10 s RPM window: 10.05 s / 8 = 1.256 s is longer than the horizon, so 1 s of the rate;
    // with a 1 s window, 1.02 s / 8 = 127.5 ms of it.
    for (window, tokens, requests) in [(10 * S, 80_000, 800), (S, 10_200, 102)] {
        let mut q = SharedQuota::new(
            LeaseLimits::new(Some(600_000), Some(100_000_000), window),
            1,
            LeaseSpans::new(LEASE_TTL, window),
        );
        hold(
            &mut q,
            t0,
            job(100),
            1,
            Cost {
                tokens: 8_000,
                requests: 80,
            },
        );
        // 80 jobs spent in 100 ms: 80,000 tokens/s, 800 requests/s.
        for i in 0..80 {
            q.try_charge(t0 + i * MS, job(100)).unwrap();
        }
        q.try_charge(t0 + 100 * MS, job(100)).unwrap_err();
        let renewal = q.next_renewal(t0 + 100 * MS).unwrap();
        assert_eq!(
            renewal.ask.unwrap().want,
            Cost { tokens, requests },
            "window {window:?}"
        );
    }
}

#[test]
fn an_idle_lease_is_given_back_a_horizon_after_its_last_use_without_asking_again() {
    let t0 = Instant::now();
    let mut q = holding_lease_5(t0);
    q.try_charge(t0 + MS, job(10)).unwrap();
    // 600 RPM over 1 s: the horizon is an eighth of the 1.02 s window span.
    let idle_at = t0 + MS + Duration::from_micros(127_500);
    assert_eq!(q.next_renewal(t0 + 100 * MS), None);
    assert_eq!(q.wake_at(), Some(idle_at));
    let renewal = q.next_renewal(idle_at).unwrap();
    assert_eq!(
        renewal,
        Renewal {
            give_back: Some(LeaseReturn {
                id: 5,
                used: job(10),
                last_use: MS
            }),
            ask: None,
        }
    );
    assert_eq!(q.wake_at(), None);
    // Given back, it takes no charge even though it had room left.
    assert_eq!(q.try_charge(idle_at, job(10)), Err(LeaseWait::Renewal));
}

#[test]
fn a_lease_in_use_is_given_back_at_its_ttl() {
    let t0 = Instant::now();
    let mut q = holding_lease_5(t0);
    for k in 1..=19 {
        q.try_charge(t0 + k * 100 * MS, job(10)).unwrap();
        assert_eq!(q.next_renewal(t0 + k * 100 * MS), None);
    }
    // It would be renewed ahead a lead (1 ms: no round trip measured) before its ttl ends.
    assert_eq!(q.wake_at(), Some(t0 + LEASE_TTL - MS));
    let back = q.next_renewal(t0 + LEASE_TTL).unwrap().give_back.unwrap();
    assert_eq!(
        (back.id, back.used),
        (
            5,
            Cost {
                tokens: 190,
                requests: 19
            }
        )
    );
    // Past its ttl a lease takes no charge even with room left.
    assert_eq!(
        q.try_charge(t0 + LEASE_TTL, job(10)),
        Err(LeaseWait::Renewal)
    );
}

#[test]
fn a_full_quota_makes_jobs_wait_until_redis_says() {
    let t0 = Instant::now();
    let mut q = quota();
    q.try_charge(t0, job(10)).unwrap_err();
    q.next_renewal(t0);
    let wait = 1_500 * MS;
    q.granted(t0 + MS, Grant::Wait(wait));
    assert_eq!(
        q.try_charge(t0 + S, job(10)),
        Err(LeaseWait::NotUntil(t0 + MS + wait))
    );
    assert_eq!(q.next_renewal(t0 + S), None);
    assert_eq!(q.wake_at(), Some(t0 + MS + wait));
    assert_eq!(ask_of(q.next_renewal(t0 + MS + wait)).at_least, job(10));
    // Larger than the whole minute: never.
    assert_eq!(
        q.try_charge(t0, job(100_001)),
        Err(LeaseWait::NeverFits {
            tokens: 100_001,
            capacity: 100_000
        })
    );
}

#[test]
fn a_wait_beyond_a_lease_ttl_asks_again_after_the_ttl() {
    // Redis counts the others' leases to their end (a minute away), but they are given back
    // within a ttl: the job asks again then, not a minute later.
    let t0 = Instant::now();
    let mut q = quota();
    q.try_charge(t0, job(10)).unwrap_err();
    q.next_renewal(t0);
    q.granted(t0 + MS, Grant::Wait(M));
    let again = t0 + MS + LEASE_TTL;
    assert_eq!(
        q.try_charge(t0 + S, job(10)),
        Err(LeaseWait::NotUntil(again))
    );
    assert_eq!(q.wake_at(), Some(again));
    assert_eq!(q.next_renewal(again - MS), None);
    assert_eq!(ask_of(q.next_renewal(again)).at_least, job(10));
}

#[test]
fn an_unanswered_ask_times_out_and_refunds_return_to_the_lease() {
    let t0 = Instant::now();
    let mut q = quota();
    q.try_charge(t0, job(10)).unwrap_err();
    q.next_renewal(t0);
    assert!(!q.ask_timed_out(t0 + ASK_TIMEOUT - MS));
    assert!(q.ask_timed_out(t0 + ASK_TIMEOUT));
    q.granted(
        t0 + MS,
        Grant::Granted {
            id: 2,
            cost: job(100),
        },
    );
    let charge = q.try_charge(t0 + MS, job(100)).unwrap();
    assert_eq!(q.try_charge(t0 + MS, job(100)), Err(LeaseWait::Renewal));
    q.refund(charge);
    assert!(q.try_charge(t0 + 2 * MS, job(100)).is_ok());
}

#[test]
fn without_redis_it_paces_on_a_quarter_then_carries_its_use_back() {
    let t0 = Instant::now();
    let mut q = quota();
    hold(&mut q, t0, job(20_000), 1, job(20_000));
    q.try_charge(t0 + MS, job(20_000)).unwrap();
    q.redis_lost(t0 + S);
    assert!(q.is_local());
    // The quarter is 25,000 tokens a minute, 20,000 of which this process already charged.
    q.try_charge(t0 + S, job(5_000)).unwrap();
    assert_eq!(
        q.try_charge(t0 + S, job(1_000)),
        Err(LeaseWait::NotUntil(t0 + MS + M))
    );
    assert_eq!(q.next_renewal(t0 + S), None);
    // Redis is back: what the local ledger counts goes to Redis before the next ask.
    let carry = q.redis_back(t0 + 2 * S);
    assert!(!q.is_local());
    let mut counted: Vec<(u64, u32, Duration)> = carry
        .iter()
        .map(|c| (c.cost.tokens, c.cost.requests, c.minute_left))
        .collect();
    counted.sort();
    assert_eq!(counted, [(5_000, 1, M - S), (20_000, 1, M + MS - 2 * S)]);
    assert_eq!(
        q.try_charge(t0 + 2 * S, job(1_000)),
        Err(LeaseWait::Renewal)
    );
    assert_eq!(ask_of(q.next_renewal(t0 + 2 * S)).at_least, job(1_000));
    assert!(q.redis_back(t0 + 2 * S).is_empty());
}

#[test]
fn unlimited_sides_are_not_asked_for() {
    let t0 = Instant::now();
    let mut q = SharedQuota::new(
        LeaseLimits::new(None, Some(1_000), S),
        1,
        LeaseSpans::new(LEASE_TTL, S),
    );
    q.try_charge(t0, job(100)).unwrap_err();
    assert_eq!(
        ask_of(q.next_renewal(t0)),
        LeaseAsk {
            want: Cost {
                tokens: 100,
                requests: 0
            },
            at_least: Cost {
                tokens: 100,
                requests: 0
            },
        }
    );
    q.granted(
        t0,
        Grant::Granted {
            id: 1,
            cost: Cost {
                tokens: 300,
                requests: 0,
            },
        },
    );
    // Requests are not limited: three jobs fit a lease of no requests.
    for _ in 0..3 {
        q.try_charge(t0, job(100)).unwrap();
    }
}
