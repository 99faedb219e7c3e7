//! EndpointHealth with explicit instants and a seeded RNG.

use super::*;
use crate::classify::ApiError;
use crate::classify::samples::{rate_limited as limited, timeout, unauthorized};
use rand::SeedableRng;

const S: Duration = Duration::from_secs(1);

fn policy() -> HealthPolicy {
    HealthPolicy {
        backoff_base: S,
        backoff_max: 8 * S,
        auto_disable_threshold: 3,
        reenable_after: Some(30 * S),
        retry_after_cap: 300 * S,
        jitter: false,
    }
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(12)
}

fn health(policy: HealthPolicy) -> EndpointHealth {
    EndpointHealth::new(policy, rng())
}

fn rejected() -> AttemptOutcome {
    AttemptOutcome::JobFatal(ApiError {
        status: 400,
        code: Some("content_filter".into()),
        message: "filtered".into(),
    })
}

fn cooling(until: Instant, cause: CoolingCause) -> HealthState {
    HealthState::Cooling { until, cause }
}

#[test]
fn backoff_doubles_and_caps_without_overflow() {
    let p = policy();
    let got: Vec<u64> = (0..7).map(|s| p.backoff(s).as_secs()).collect();
    assert_eq!(got, vec![0, 1, 2, 4, 8, 8, 8]);
    for streak in [31, 32, 33, 64, u32::MAX] {
        assert_eq!(p.backoff(streak), 8 * S, "streak {streak}");
    }
    let huge = HealthPolicy {
        backoff_base: Duration::MAX,
        backoff_max: Duration::MAX,
        ..policy()
    };
    assert_eq!(huge.backoff(2), Duration::MAX);
}

#[test]
fn transient_failures_back_off_then_disable_with_the_last_error() {
    let t0 = Instant::now();
    let mut h = health(policy());
    let change = h.on_outcome(t0, t0, &timeout()).unwrap();
    assert_eq!(change.from, HealthState::Healthy);
    assert_eq!(
        change.to,
        cooling(t0 + S, CoolingCause::Backoff { streak: 1 })
    );
    assert_eq!(h.availability(t0), Availability::At(t0 + S));
    assert_eq!(h.availability(t0 + S), Availability::Now);

    // Second failure 1 s later (the cooldown just ended): 2 s.
    let t1 = t0 + S;
    h.on_outcome(t1, t1, &timeout()).unwrap();
    assert_eq!(
        *h.state(),
        cooling(t1 + 2 * S, CoolingCause::Backoff { streak: 2 })
    );
    assert_eq!(h.failure_streak(), 2);

    // Third: threshold 3 reached.
    let t2 = t1 + 2 * S;
    let change = h.on_outcome(t2, t2, &timeout()).unwrap();
    assert!(change.is_disable());
    assert_eq!(
        *h.state(),
        HealthState::Disabled {
            reason: "3 consecutive failures, last: timeout after 2m".into(),
            until: Some(t2 + 30 * S),
            cause: DisableCause::Failures,
        }
    );
    assert_eq!(h.availability(t2 + 29 * S), Availability::At(t2 + 30 * S));
    assert_eq!(h.availability(t2 + 30 * S), Availability::ProbeOnly);
}

#[test]
fn a_failure_during_a_backoff_extends_it() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_outcome(t0, t0, &timeout());
    // A second in-flight request fails at once: streak 2, until t0 + 2 s.
    h.on_outcome(t0, t0, &timeout());
    assert_eq!(
        *h.state(),
        cooling(t0 + 2 * S, CoolingCause::Backoff { streak: 2 })
    );
}

#[test]
fn probe_success_re_enables_and_probe_failure_disables_again() {
    let t0 = Instant::now();
    let mut h = health(policy());
    for _ in 0..3 {
        h.on_outcome(t0, t0, &timeout());
    }
    let t1 = t0 + 30 * S;
    assert_eq!(h.refresh(t1 - Duration::from_nanos(1)), None);
    let change = h.refresh(t1).unwrap();
    assert_eq!(change.to, HealthState::Probing);
    assert_eq!(h.availability(t1), Availability::ProbeOnly);

    // The probe fails: disabled for another 30 s, from now.
    let t2 = t1 + 5 * S;
    h.on_outcome(t2, t2, &timeout()).unwrap();
    assert_eq!(
        *h.state(),
        HealthState::Disabled {
            reason: "probe failed (4 consecutive failures), last: timeout after 2m".into(),
            until: Some(t2 + 30 * S),
            cause: DisableCause::Failures,
        }
    );

    // The next probe succeeds.
    let t3 = t2 + 30 * S;
    let change = h.on_outcome(t3, t3, &AttemptOutcome::Success).unwrap();
    assert_eq!(change.to, HealthState::Healthy);
    assert!(matches!(change.from, HealthState::Disabled { .. }));
    assert!(change.is_recovery());
    assert_eq!(h.failure_streak(), 0);
    assert_eq!(h.availability(t3), Availability::Now);
}

#[test]
fn without_reenable_after_a_disable_is_for_good() {
    let t0 = Instant::now();
    let mut h = health(HealthPolicy {
        reenable_after: None,
        ..policy()
    });
    for _ in 0..3 {
        h.on_outcome(t0, t0, &timeout());
    }
    assert_eq!(h.availability(t0 + 1_000_000 * S), Availability::Never);
    assert_eq!(h.refresh(t0 + 1_000_000 * S), None);
    // A late success of a request sent before the disable does not overrule it.
    assert_eq!(h.on_outcome(t0 + S, t0 + S, &AttemptOutcome::Success), None);
    assert!(matches!(
        h.state(),
        HealthState::Disabled { until: None, .. }
    ));
}

#[test]
fn threshold_zero_never_disables() {
    let t0 = Instant::now();
    let mut h = health(HealthPolicy {
        auto_disable_threshold: 0,
        ..policy()
    });
    for _ in 0..100 {
        h.on_outcome(t0, t0, &timeout());
    }
    assert_eq!(
        *h.state(),
        cooling(t0 + 8 * S, CoolingCause::Backoff { streak: 100 })
    );
}

#[test]
fn rate_limits_cool_for_the_wait_and_never_shorten() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_outcome(t0, t0, &timeout());
    let streak = h.failure_streak();
    let change = h.on_outcome(t0, t0, &limited(7 * S)).unwrap();
    assert_eq!(change.to, cooling(t0 + 7 * S, CoolingCause::RateLimited));
    assert_eq!(h.failure_streak(), streak, "429 leaves the streak alone");
    // A shorter wait from a later reply does not shorten the cooldown.
    assert_eq!(h.on_outcome(t0 + S, t0 + S, &limited(2 * S)), None);
    assert_eq!(*h.state(), cooling(t0 + 7 * S, CoolingCause::RateLimited));
    // A longer one extends it.
    h.on_outcome(t0 + S, t0 + S, &limited(10 * S)).unwrap();
    assert_eq!(*h.state(), cooling(t0 + 11 * S, CoolingCause::RateLimited));
    // A late success does not end a 429 cooldown.
    assert_eq!(
        h.on_outcome(t0 + 2 * S, t0 + 2 * S, &AttemptOutcome::Success),
        None
    );
    assert_eq!(h.failure_streak(), 0);
    // A failure whose backoff ends earlier keeps the 429 cooldown.
    assert_eq!(h.on_outcome(t0 + 3 * S, t0 + 3 * S, &timeout()), None);
    let change = h.refresh(t0 + 11 * S).unwrap();
    assert_eq!(change.to, HealthState::Healthy);
}

#[test]
fn a_backoff_is_ended_by_a_success() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_outcome(t0, t0, &timeout());
    let change = h.on_outcome(t0, t0, &AttemptOutcome::Success).unwrap();
    assert_eq!(change.to, HealthState::Healthy);
}

#[test]
fn a_rate_limit_longer_than_the_cap_disables_until_it_is_over() {
    let t0 = Instant::now();
    let mut h = health(policy());
    let change = h.on_outcome(t0, t0, &limited(3 * 3600 * S)).unwrap();
    assert_eq!(
        change.to,
        HealthState::Disabled {
            reason: "rate limited for 3h 0m (Retry-After), above retry_after_cap 5m".into(),
            until: Some(t0 + 3 * 3600 * S),
            cause: DisableCause::RateLimited,
        }
    );
    assert_eq!(h.availability(t0 + 3 * 3600 * S), Availability::Now);
    // A mirror that only has the state lets one job through until the refresh arrives.
    assert_eq!(
        h.state().availability(t0 + 3 * 3600 * S),
        Availability::ProbeOnly
    );
    assert_eq!(
        h.state().availability(t0 + 3600 * S),
        Availability::At(t0 + 3 * 3600 * S)
    );
    // Azure said when: healthy again without a probe.
    assert_eq!(
        h.refresh(t0 + 3 * 3600 * S).unwrap().to,
        HealthState::Healthy
    );
    // Exactly the cap still only cools.
    h.on_outcome(t0 + 4 * 3600 * S, t0 + 4 * 3600 * S, &limited(300 * S))
        .unwrap();
    assert!(matches!(h.state(), HealthState::Cooling { .. }));
}

#[test]
fn job_fatal_resets_the_streak_and_completes_a_probe() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_outcome(t0, t0, &timeout());
    h.on_outcome(t0, t0, &timeout());
    assert_eq!(h.on_outcome(t0, t0, &rejected()), None, "no state change");
    assert_eq!(h.failure_streak(), 0);
    assert_eq!(
        *h.state(),
        cooling(t0 + 2 * S, CoolingCause::Backoff { streak: 2 })
    );

    // Failures sent no later than that reply do not count; later ones do.
    assert_eq!(h.on_outcome(t0 + S, t0, &timeout()), None);
    assert_eq!(h.failure_streak(), 0);
    for _ in 0..3 {
        h.on_outcome(t0 + S, t0 + S, &timeout());
    }
    h.refresh(t0 + 31 * S).unwrap();
    assert_eq!(*h.state(), HealthState::Probing);
    assert_eq!(
        h.on_outcome(t0 + 32 * S, t0 + 32 * S, &rejected())
            .unwrap()
            .to,
        HealthState::Healthy
    );
}

#[test]
fn endpoint_fatal_disables_with_its_reason() {
    let t0 = Instant::now();
    let mut h = health(policy());
    let change = h.on_outcome(t0, t0, &unauthorized()).unwrap();
    assert_eq!(
        change.to,
        HealthState::Disabled {
            reason: "credentials rejected (HTTP 401): check api_key for this deployment".into(),
            until: Some(t0 + 30 * S),
            cause: DisableCause::Rejected,
        }
    );
    assert_eq!(h.failure_streak(), 0);
    assert_eq!(h.refresh(t0 + 30 * S).unwrap().to, HealthState::Probing);
    // The probe meets the same 401: disabled again.
    let change = h
        .on_outcome(t0 + 31 * S, t0 + 31 * S, &unauthorized())
        .unwrap();
    assert!(matches!(
        change.to,
        HealthState::Disabled { until: Some(u), .. } if u == t0 + 61 * S
    ));
    // A fatal reply also overrides a long rate-limit disable: the latest reason matters.
    let mut h = health(policy());
    h.on_outcome(t0, t0, &limited(3600 * S));
    h.on_outcome(t0, t0, &unauthorized()).unwrap();
    assert_eq!(h.refresh(t0 + 30 * S).unwrap().to, HealthState::Probing);
}

#[test]
fn late_outcomes_do_not_shake_a_disable() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_outcome(t0, t0, &unauthorized());
    let disabled = h.state().clone();
    assert_eq!(h.on_outcome(t0 + S, t0 + S, &timeout()), None);
    assert_eq!(h.on_outcome(t0 + S, t0 + S, &limited(5 * S)), None);
    assert_eq!(h.on_outcome(t0 + S, t0 + S, &AttemptOutcome::Success), None);
    assert_eq!(*h.state(), disabled);
    // Nor does a 429 longer than the cap: the probe will meet it if it still holds.
    assert_eq!(h.on_outcome(t0 + S, t0 + S, &limited(600 * S)), None);
    assert_eq!(*h.state(), disabled);
}

#[test]
fn a_longer_rate_limit_extends_a_rate_limit_disable() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_outcome(t0, t0, &limited(600 * S));
    assert_eq!(h.on_outcome(t0 + S, t0 + S, &limited(400 * S)), None);
    let change = h.on_outcome(t0 + S, t0 + S, &limited(3600 * S)).unwrap();
    assert_eq!(
        change.to,
        HealthState::Disabled {
            reason: "rate limited for 1h 0m (Retry-After), above retry_after_cap 5m".into(),
            until: Some(t0 + 3601 * S),
            cause: DisableCause::RateLimited,
        }
    );
}

#[test]
fn a_rate_limit_during_a_probe_cools() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_outcome(t0, t0, &unauthorized());
    h.refresh(t0 + 30 * S);
    let change = h
        .on_outcome(t0 + 31 * S, t0 + 31 * S, &limited(4 * S))
        .unwrap();
    assert_eq!(change.from, HealthState::Probing);
    assert_eq!(change.to, cooling(t0 + 35 * S, CoolingCause::RateLimited));
}

#[test]
fn on_outcome_expires_first_and_reports_the_whole_change() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_outcome(t0, t0, &limited(5 * S));
    // The cooldown ended at t0 + 5 s; a success at t0 + 6 s reports cooling -> healthy.
    let change = h
        .on_outcome(t0 + 6 * S, t0 + 6 * S, &AttemptOutcome::Success)
        .unwrap();
    assert_eq!(change.from, cooling(t0 + 5 * S, CoolingCause::RateLimited));
    assert_eq!(change.to, HealthState::Healthy);
}

#[test]
fn huge_streaks_and_waits_do_not_overflow() {
    let t0 = Instant::now();
    let mut h = health(HealthPolicy {
        auto_disable_threshold: 0,
        reenable_after: Some(Duration::MAX),
        retry_after_cap: Duration::MAX,
        ..policy()
    });
    h.dropped = Some((u32::MAX - 1, t0));
    h.on_outcome(t0, t0, &timeout());
    h.on_outcome(t0, t0, &timeout());
    assert_eq!(h.failure_streak(), u32::MAX);
    h.on_outcome(t0, t0, &limited(Duration::MAX));
    assert!(matches!(h.availability(t0), Availability::At(until) if until > t0));
    h.on_outcome(t0, t0, &unauthorized());
    assert!(matches!(h.availability(t0), Availability::At(until) if until > t0));
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn fast_failures_overtaking_slow_successes_make_no_streak() {
    // Sent in the order S F S F S F S F S F; every F comes back before every S.
    let t0 = Instant::now();
    let mut h = health(policy());
    let sent: Vec<Instant> = (0..10).map(|i| t0 + i * MS).collect();
    for at in &sent {
        h.on_sent(*at);
    }
    let now = t0 + 20 * MS;
    for failure in sent.iter().skip(1).step_by(2) {
        assert_eq!(h.on_outcome(now, *failure, &timeout()), None);
        assert_eq!(
            h.failure_streak(),
            0,
            "held back by the success sent before it"
        );
    }
    for (i, success) in sent.iter().step_by(2).enumerate() {
        assert_eq!(
            h.on_outcome(now + S, *success, &AttemptOutcome::Success),
            None
        );
        // The failure sent right after this success has finished: a streak of one, until
        // the success sent after it is back.
        assert_eq!(h.failure_streak(), 1, "after success {i}");
    }
    assert_eq!(*h.state(), HealthState::Healthy);
}

#[test]
fn failures_in_send_order_still_disable_whatever_order_they_finish_in() {
    let t0 = Instant::now();
    let mut h = health(policy());
    for i in 0..3 {
        h.on_sent(t0 + i * MS);
    }
    let now = t0 + 10 * MS;
    assert_eq!(h.on_outcome(now, t0 + 2 * MS, &timeout()), None);
    assert_eq!(h.on_outcome(now, t0 + MS, &timeout()), None);
    assert_eq!(h.failure_streak(), 0);
    let change = h.on_outcome(now, t0, &timeout()).unwrap();
    assert_eq!(
        change.to,
        HealthState::Disabled {
            reason: "3 consecutive failures, last: timeout after 2m".into(),
            until: Some(now + 30 * S),
            cause: DisableCause::Failures,
        }
    );
}

#[test]
fn a_lost_attempt_no_longer_holds_the_streak_back() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_sent(t0);
    h.on_sent(t0 + MS);
    assert_eq!(h.on_outcome(t0 + 5 * MS, t0 + MS, &timeout()), None);
    assert_eq!(h.failure_streak(), 0);
    h.on_lost(t0);
    assert_eq!(h.failure_streak(), 1);
    let t1 = t0 + 6 * MS;
    h.on_sent(t1);
    let change = h.on_outcome(t1, t1, &timeout()).unwrap();
    assert_eq!(
        change.to,
        cooling(t1 + 2 * S, CoolingCause::Backoff { streak: 2 })
    );
}

#[test]
fn a_success_sent_after_a_failure_ends_its_backoff_but_an_older_one_does_not() {
    let t0 = Instant::now();
    let mut h = health(policy());
    h.on_sent(t0);
    h.on_sent(t0 + MS);
    h.on_sent(t0 + 2 * MS);
    h.on_outcome(t0 + 3 * MS, t0, &timeout()).unwrap();
    assert_eq!(h.failure_streak(), 1);
    // A success sent before the failure is no news.
    let older = t0.checked_sub(MS).unwrap();
    assert_eq!(
        h.on_outcome(t0 + 4 * MS, older, &AttemptOutcome::Success),
        None
    );
    assert_eq!(h.failure_streak(), 1);
    // A job-fatal reply sent after it resets the streak but keeps the backoff.
    assert_eq!(h.on_outcome(t0 + 5 * MS, t0 + MS, &rejected()), None);
    assert_eq!(h.failure_streak(), 0);
    // A success sent after it ends the backoff.
    let change = h
        .on_outcome(t0 + 6 * MS, t0 + 2 * MS, &AttemptOutcome::Success)
        .unwrap();
    assert_eq!(change.to, HealthState::Healthy);
}

#[test]
fn failed_probes_lengthen_the_disable_up_to_backoff_max() {
    let t0 = Instant::now();
    let mut h = health(HealthPolicy {
        backoff_max: 100 * S,
        auto_disable_threshold: 1,
        ..policy()
    });
    h.on_outcome(t0, t0, &timeout()).unwrap();
    let mut until = t0 + 30 * S;
    let mut waits = Vec::new();
    for _ in 0..4 {
        assert_eq!(h.refresh(until).unwrap().to, HealthState::Probing);
        let probe = until + S;
        h.on_outcome(probe, probe, &timeout()).unwrap();
        let HealthState::Disabled {
            until: Some(next), ..
        } = *h.state()
        else {
            panic!("disabled again: {:?}", h.state())
        };
        waits.push((next - probe).as_secs());
        until = next;
    }
    assert_eq!(waits, vec![60, 100, 100, 100]);
    assert_eq!(h.failed_probes(), 4);
    // A probe that succeeds starts over from reenable_after.
    h.refresh(until).unwrap();
    h.on_outcome(until, until, &AttemptOutcome::Success)
        .unwrap();
    assert_eq!(h.failed_probes(), 0);
    let t1 = until + S;
    h.on_outcome(t1, t1, &timeout()).unwrap();
    assert!(matches!(
        h.state(),
        HealthState::Disabled { until: Some(u), .. } if *u == t1 + 30 * S
    ));
}

#[test]
fn a_late_failure_from_before_the_probe_does_not_fail_it() {
    let t0 = Instant::now();
    let mut h = health(HealthPolicy {
        auto_disable_threshold: 1,
        ..policy()
    });
    h.on_sent(t0);
    h.on_sent(t0 + MS);
    h.on_outcome(t0 + 2 * MS, t0, &timeout()).unwrap();
    let probing = t0 + 2 * MS + 30 * S;
    assert_eq!(h.refresh(probing).unwrap().to, HealthState::Probing);
    // The attempt sent before the disable times out during the probe.
    assert_eq!(h.on_outcome(probing + S, t0 + MS, &timeout()), None);
    assert_eq!(*h.state(), HealthState::Probing);
    assert_eq!(h.failed_probes(), 0);
}

#[test]
fn disable_causes_say_whether_waiting_helps() {
    let t0 = Instant::now();
    let cause = |outcome: AttemptOutcome| {
        let mut h = health(HealthPolicy {
            auto_disable_threshold: 1,
            ..policy()
        });
        h.on_outcome(t0, t0, &outcome);
        h.state().disable_cause()
    };
    assert_eq!(cause(unauthorized()), Some(DisableCause::Rejected));
    assert_eq!(cause(timeout()), Some(DisableCause::Failures));
    assert_eq!(cause(limited(3600 * S)), Some(DisableCause::RateLimited));
    assert_eq!(cause(limited(S)), None);
    assert!(!DisableCause::Rejected.curable_by_waiting());
    assert!(DisableCause::Failures.curable_by_waiting());
    assert!(DisableCause::RateLimited.curable_by_waiting());
    assert_eq!(DisableCause::Rejected.name(), "rejected");
}

#[test]
fn jitter_draws_between_half_and_all_of_each_wait() {
    let t0 = Instant::now();
    let jittery = HealthPolicy {
        jitter: true,
        ..policy()
    };
    let mut draws = StdRng::seed_from_u64(3);
    for _ in 0..1000 {
        let wait = jittery.jittered(8 * S, &mut draws);
        assert!(wait >= 4 * S && wait <= 8 * S, "{wait:?}");
    }
    // No overflow at the extreme.
    assert!(jittery.jittered(Duration::MAX, &mut draws) >= Duration::MAX / 2);
    // The same seed gives the same waits: the first backoff and the first disable draw
    // from the endpoint's RNG in that order.
    let mut expected = StdRng::seed_from_u64(12);
    let backoff = jittery.jittered(S, &mut expected);
    let disable = jittery.jittered(30 * S, &mut expected);
    let mut h = health(HealthPolicy {
        auto_disable_threshold: 2,
        ..jittery
    });
    h.on_outcome(t0, t0, &timeout()).unwrap();
    assert_eq!(
        *h.state(),
        cooling(t0 + backoff, CoolingCause::Backoff { streak: 1 })
    );
    assert_ne!(backoff, S, "jittered");
    h.on_outcome(t0, t0, &timeout()).unwrap();
    assert!(matches!(
        h.state(),
        HealthState::Disabled { until: Some(u), .. } if *u == t0 + disable
    ));
    // 429 waits are Azure's: never jittered.
    let mut h = health(jittery.clone());
    h.on_outcome(t0, t0, &limited(7 * S)).unwrap();
    assert_eq!(*h.state(), cooling(t0 + 7 * S, CoolingCause::RateLimited));
}

#[test]
fn memory_stays_bounded_when_an_early_attempt_hangs() {
    let t0 = Instant::now();
    let mut h = health(HealthPolicy {
        auto_disable_threshold: 0,
        ..policy()
    });
    h.on_sent(t0);
    for i in 1..=(MAX_TRACKED_SENDS as u32 + 10) {
        let sent = t0 + i * MS;
        h.on_sent(sent);
        h.on_outcome(sent, sent, &timeout());
    }
    assert!(h.sends.len() <= MAX_TRACKED_SENDS);
    // The hung attempt was given up on: the failures after it count.
    assert!(h.failure_streak() > 0);
}

#[test]
fn states_display_for_reports() {
    let t0 = Instant::now();
    assert_eq!(HealthState::Healthy.to_string(), "healthy");
    assert_eq!(
        cooling(t0, CoolingCause::Backoff { streak: 2 }).to_string(),
        "cooling (backing off after 2 consecutive failures)"
    );
    assert_eq!(
        HealthState::Disabled {
            reason: "r".into(),
            until: None,
            cause: DisableCause::Failures,
        }
        .to_string(),
        "disabled: r"
    );
    assert_eq!(HealthState::Probing.name(), "probing");
}

#[test]
fn mirrored_notes_cool_disable_and_recover_without_touching_own_disables() {
    let t0 = Instant::now();
    let mut h = health(policy());
    // Another process's 429: cooling until its wait ends, then healthy with no probe.
    let cool = HealthMirror::Cooling { until: t0 + 5 * S };
    let change = h.mirror(t0, &cool).expect("a healthy endpoint cools");
    assert_eq!(change.to, cooling(t0 + 5 * S, CoolingCause::RateLimited));
    assert_eq!(
        h.mirror(t0 + S, &cool),
        None,
        "the same wait again changes nothing"
    );
    assert_eq!(h.availability(t0 + 4 * S), Availability::At(t0 + 5 * S));
    assert_eq!(h.availability(t0 + 5 * S), Availability::Now);

    // Another process's rejection: disabled with its reason, probed after the key's end.
    let disable = HealthMirror::Disabled {
        reason: "disabled by another process: 401".into(),
        until: t0 + 20 * S,
    };
    let change = h.mirror(t0 + 6 * S, &disable).expect("disabled");
    assert_eq!(change.to.disable_cause(), Some(DisableCause::Rejected));
    assert_eq!(
        h.refresh(t0 + 20 * S).map(|c| c.to),
        Some(HealthState::Probing)
    );
    // A probing endpoint keeps its own schedule.
    assert_eq!(h.mirror(t0 + 21 * S, &disable), None);

    // Our own rejection is not replaced by another's, and a recovery lifts it.
    h.on_outcome(t0 + 22 * S, t0 + 22 * S, &unauthorized());
    let own = h.state().clone();
    assert_eq!(h.mirror(t0 + 22 * S, &disable), None);
    assert_eq!(h.mirror(t0 + 22 * S, &cool), None);
    assert_eq!(h.state(), &own);
    let change = h
        .mirror(t0 + 23 * S, &HealthMirror::Recovered)
        .expect("lifted");
    assert!(change.is_recovery());
    assert_eq!(h.availability(t0 + 23 * S), Availability::Now);

    // A disable for failures is not lifted by another's recovery.
    for _ in 0..3 {
        h.on_outcome(t0 + 24 * S, t0 + 24 * S, &timeout());
    }
    assert_eq!(h.state().disable_cause(), Some(DisableCause::Failures));
    assert_eq!(h.mirror(t0 + 24 * S, &HealthMirror::Recovered), None);
}
