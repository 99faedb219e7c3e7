use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);
/// The minute span (60.3 s) and the 1 s window's span (1.02 s).
const M: Duration = Duration::from_millis(60_300);
const W: Duration = Duration::from_millis(1_020);

fn cost(tokens: u64, requests: u32) -> Cost {
    Cost { tokens, requests }
}

fn ask(want: Cost, at_least: Cost) -> LeaseAsk {
    LeaseAsk { want, at_least }
}

fn ledger(rpm: Option<u32>, tpm: Option<u64>) -> LeaseLedger {
    LeaseLedger::new(LeaseLimits::new(rpm, tpm, S), LeaseSpans::new(2 * S, S))
}

fn granted(grant: Grant) -> (u64, Cost) {
    match grant {
        Grant::Granted { id, cost } => (id, cost),
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn grants_up_to_the_limit_then_says_when_room_frees() {
    let t0 = Instant::now();
    let mut l = ledger(None, Some(10_000));
    assert_eq!(
        granted(l.grant(t0, ask(cost(6_000, 0), cost(1_000, 0)))),
        (1, cost(6_000, 0))
    );
    // Only 4,000 are free: a partial grant, still at least the job's 1,000.
    assert_eq!(
        granted(l.grant(t0 + S, ask(cost(6_000, 0), cost(1_000, 0)))),
        (2, cost(4_000, 0))
    );
    // Full: the first lease counts until its ttl (2 s) plus the minute span have passed.
    assert_eq!(
        l.grant(t0 + 2 * S, ask(cost(500, 0), cost(500, 0))),
        Grant::Wait(M)
    );
    // 7,000 needs both leases gone: the second ends 1 s later.
    assert_eq!(
        l.grant(t0 + 2 * S, ask(cost(7_000, 0), cost(7_000, 0))),
        Grant::Wait(M + S)
    );
    assert_eq!(
        granted(l.grant(t0 + 2 * S + M, ask(cost(9_000, 0), cost(1, 0)))),
        (3, cost(6_000, 0))
    );
    assert_eq!(
        l.totals(t0 + 2 * S + M),
        LedgerTotals {
            tokens: 10_000,
            requests_in_minute: 0,
            requests_in_window: 0
        }
    );
}

#[test]
fn a_lease_given_back_shrinks_to_its_use_and_its_last_use() {
    let t0 = Instant::now();
    let mut l = ledger(None, Some(10_000));
    let (id, _) = granted(l.grant(t0, ask(cost(8_000, 0), cost(1, 0))));
    // 3,000 used, the last charge 500 ms after the ask: it counts until then + the span.
    l.give_back(id, cost(3_000, 0), 500 * MS);
    assert_eq!(l.totals(t0).tokens, 3_000);
    assert_eq!(
        granted(l.grant(t0 + MS, ask(cost(9_000, 0), cost(1, 0)))).1,
        cost(7_000, 0)
    );
    assert_eq!(l.totals(t0 + 500 * MS + M - MS).tokens, 10_000);
    assert_eq!(l.totals(t0 + 500 * MS + M).tokens, 7_000);
    // A last use past the ttl cannot stretch the record; an unused lease vanishes at once.
    let (id, _) = granted(l.grant(t0 + 2 * S + M + MS, ask(cost(1_000, 0), cost(1, 0))));
    l.give_back(id, Cost::default(), Duration::ZERO);
    assert_eq!(l.totals(t0 + 2 * S + M + MS).tokens, 0);
    // Unknown ids change nothing.
    l.give_back(99, cost(5, 0), S);
    assert!(l.live(t0 + 2 * S + M + MS).is_empty());
}

#[test]
fn requests_count_per_minute_and_per_short_window() {
    let t0 = Instant::now();
    // 600 RPM: 10 per 1 s window.
    let mut l = ledger(Some(600), None);
    assert_eq!(
        granted(l.grant(t0, ask(cost(0, 8), cost(0, 1)))).1,
        cost(0, 8)
    );
    assert_eq!(
        granted(l.grant(t0, ask(cost(0, 8), cost(0, 1)))).1,
        cost(0, 2)
    );
    // The window is full until the first lease's ttl + 1.02 s.
    assert_eq!(
        l.grant(t0 + S, ask(cost(0, 1), cost(0, 1))),
        Grant::Wait(S + W)
    );
    let t1 = t0 + 2 * S + W;
    assert_eq!(
        l.totals(t1),
        LedgerTotals {
            tokens: 0,
            requests_in_minute: 10,
            requests_in_window: 0
        }
    );
    assert_eq!(
        granted(l.grant(t1, ask(cost(0, 20), cost(0, 1)))).1,
        cost(0, 10)
    );
}

#[test]
fn an_oversized_ask_fits_only_an_empty_side() {
    let t0 = Instant::now();
    let mut l = ledger(None, Some(1_000));
    let (_, first) = granted(l.grant(t0, ask(cost(100, 0), cost(100, 0))));
    assert_eq!(first, cost(100, 0));
    assert_eq!(
        l.grant(t0, ask(cost(1_500, 0), cost(1_500, 0))),
        Grant::Wait(2 * S + M)
    );
    let t1 = t0 + 2 * S + M;
    assert_eq!(
        granted(l.grant(t1, ask(cost(1_500, 0), cost(1_500, 0)))).1,
        cost(1_500, 0)
    );
}

#[test]
fn shares_and_carries() {
    let limits = LeaseLimits::new(Some(600), Some(100_000), S);
    assert_eq!(
        limits.share(4),
        LeaseLimits {
            tokens_per_minute: Some(25_000),
            requests_per_minute: Some(150),
            requests_per_window: Some(2),
        }
    );
    assert_eq!(
        LeaseLimits::new(Some(3), Some(2), S).share(8),
        LeaseLimits {
            tokens_per_minute: Some(1),
            requests_per_minute: Some(1),
            requests_per_window: Some(1),
        }
    );
    assert!(LeaseLimits::new(None, None, S).is_unlimited());
    let t0 = Instant::now();
    let mut l = ledger(Some(600), Some(10_000));
    l.carry(t0, cost(9_000, 9), 30 * S, 500 * MS);
    assert_eq!(
        l.grant(t0, ask(cost(2_000, 2), cost(2_000, 1))),
        Grant::Wait(30 * S)
    );
    assert_eq!(
        l.live(t0 + 100 * MS),
        [(cost(9_000, 9), 29_900 * MS, 400 * MS)]
    );
}

/// One step of the property test: pass time, ask, charge a lease, or give one back.
#[derive(Clone, Debug)]
enum Step {
    Pass(u64),
    Ask { want: u64, at_least: u64 },
    Charge { lease: usize, tokens: u64 },
    GiveBack { lease: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u64..4_000).prop_map(Step::Pass),
        (1u64..5_000, 1u64..1_500).prop_map(|(want, at_least)| Step::Ask { want, at_least }),
        (0usize..8, 1u64..1_500).prop_map(|(lease, tokens)| Step::Charge { lease, tokens }),
        (0usize..8).prop_map(|lease| Step::GiveBack { lease }),
    ]
}

struct Open {
    id: u64,
    at: Instant,
    room: Cost,
    used: Cost,
    last: Option<Instant>,
}

proptest! {
    /// Whatever the asks, charges and give-backs, the charges made to leases within their ttl
    /// never sum above the limit in any minute span, nor above the window's allowance in any
    /// short span.
    #[test]
    fn no_span_of_charges_exceeds_the_limits(steps in prop::collection::vec(step(), 1..300)) {
        let t0 = Instant::now();
        let (tpm, per_window) = (10_000u64, 10u64);
        let spans = LeaseSpans::new(2 * S, S);
        let mut l = LeaseLedger::new(LeaseLimits::new(Some(600), Some(tpm), S), spans);
        let mut now = t0;
        let mut open: Vec<Open> = Vec::new();
        let mut charges: Vec<(Instant, u64)> = Vec::new();
        for step in steps {
            match step {
                Step::Pass(ms) => now += Duration::from_millis(ms),
                Step::Ask { want, at_least } => {
                    let want = cost(want, (want / 500) as u32 + 1);
                    if let Grant::Granted { id, cost } = l.grant(now, ask(want, cost(at_least, 1))) {
                        open.push(Open { id, at: now, room: cost, used: Cost::default(), last: None });
                    }
                }
                Step::Charge { lease, tokens } => {
                    if let Some(o) = open.get_mut(lease)
                        && now < o.at + spans.ttl
                        && o.used.tokens + tokens <= o.room.tokens
                        && o.used.requests < o.room.requests
                    {
                        o.used.tokens += tokens;
                        o.used.requests += 1;
                        o.last = Some(now);
                        charges.push((now, tokens));
                    }
                }
                Step::GiveBack { lease } => {
                    if lease < open.len() {
                        let o = open.remove(lease);
                        let last = o.last.map_or(Duration::ZERO, |at| at - o.at);
                        l.give_back(o.id, o.used, last);
                    }
                }
            }
        }
        for &(end, _) in &charges {
            let in_span = |span: Duration| charges.iter().filter(move |(at, _)| *at <= end && *at + span > end);
            let tokens: u64 = in_span(spans.minute).map(|(_, t)| t).sum();
            prop_assert!(tokens <= tpm, "{tokens} tokens in the minute span ending at {:?}", end - t0);
            let requests = in_span(spans.window).count() as u64;
            prop_assert!(requests <= per_window, "{requests} requests in the window ending at {:?}", end - t0);
        }
    }
}
