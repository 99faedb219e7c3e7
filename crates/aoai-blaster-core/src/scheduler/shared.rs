//! The scheduler's side of shared quotas and health: the events that come from Redis (a lease
//! granted, the others' health read, a call failed, Redis back) and the effects that go to it
//! (renew a lease, carry use over, write a health note, read the others' notes, probe). Only
//! endpoints with a configured limit share their quota; every endpoint shares its health. With
//! no `shared:` section none of this runs.
//!
//! Why health notes cannot echo: only changes an endpoint made from its own replies are noted
//! ([`Scheduler::share_health`]); one it made to mirror a note is announced as mirrored, and
//! the shell does not pass it on. And a read sent before this process's latest note on an
//! endpoint is not mirrored on that endpoint ([`Scheduler::health_read`]): it may not show the
//! note yet, and would undo what this process just learned.

use std::time::Instant;

use super::{Effect, Payload, Scheduler, earliest};
use crate::config::BlasterConfig;
use crate::health::HealthChange;
use crate::shared::{
    Carry, Grant, HEALTH_POLL, HealthMirror, HealthNote, LEASE_TTL, LeaseLimits, LeaseSpans,
    LinkChange, RedisLink, Renewal, SharedBudget, SharedHealth, SharedQuota,
};

/// Whether the quotas are paced through Redis now, whether a probe is on its way, and the
/// reads of the others' health.
pub(crate) struct SharedState {
    link: RedisLink,
    probing: bool,
    /// Health reads sent so far (the number of the latest).
    reads: u64,
    /// A read is on its way.
    reading: bool,
    /// When the next read is due.
    next_read: Option<Instant>,
    /// Per endpoint: `reads` when its latest note was sent.
    noted_after: Vec<u64>,
}

/// What the shell must do for the shared quotas ([`Effect::Shared`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedEffect {
    /// One script call for `endpoint`'s quota: give a lease back and/or ask for the next. The
    /// shell reports the answer with [`Scheduler::lease_granted`], or a failure with
    /// [`Scheduler::redis_failed`].
    Renew {
        /// The endpoint's index.
        endpoint: usize,
        /// What to send.
        renewal: Renewal,
    },
    /// Redis answers again: write what this process charged while it was away, before the
    /// next ask of `endpoint` (the shell performs effects in order).
    Carry {
        /// The endpoint's index.
        endpoint: usize,
        /// What to count.
        carries: Vec<Carry>,
    },
    /// Redis is away and its retry time has come: try it, and report with
    /// [`Scheduler::redis_back`] or [`Scheduler::redis_failed`].
    Probe,
    /// Shared pacing was lost or restored: log it, count it in metrics.
    Link(LinkChange),
    /// Write what `endpoint` learned for the other processes (no answer unless it fails:
    /// [`Scheduler::redis_failed`]).
    Note {
        /// The endpoint's index.
        endpoint: usize,
        /// What to write.
        note: HealthNote,
    },
    /// Read every endpoint's shared health in one round trip; report it with
    /// [`Scheduler::health_read`] (with this `read`), or a failure with
    /// [`Scheduler::redis_failed`].
    ReadHealth {
        /// The read's number.
        read: u64,
    },
    /// Hand `mirror` to `endpoint`'s owner of health, which announces the change it makes as
    /// mirrored (not to be noted again).
    Mirror {
        /// The endpoint's index.
        endpoint: usize,
        /// What another process noted.
        mirror: HealthMirror,
    },
}

impl<P: Payload> Scheduler<P> {
    /// Paces every endpoint with an `rpm_limit` or `tpm_limit` on a quota shared with the other
    /// processes of `config.shared` (nothing without it), and shares every endpoint's health,
    /// over `link` (as [`RedisLink::at_start`] made it: local from the start when Redis could
    /// not be reached).
    pub fn share_quotas(&mut self, now: Instant, config: &BlasterConfig, link: RedisLink) {
        let Some(shared) = &config.shared else {
            return;
        };
        let spans = LeaseSpans::new(LEASE_TTL, config.rpm_window);
        for (endpoint, deployment) in self.endpoints.iter_mut().zip(&config.deployments) {
            let limits = LeaseLimits::new(
                deployment.rpm_limit,
                deployment.tpm_limit,
                config.rpm_window,
            );
            if limits.is_unlimited() || endpoint.budget.shared_quota().is_some() {
                continue;
            }
            let mut quota = SharedQuota::new(limits, shared.expected_processes, spans);
            if !link.is_shared() {
                quota.redis_lost(now);
            }
            let local = std::mem::replace(
                &mut endpoint.budget,
                Box::new(crate::quota::UnlimitedBudget),
            );
            endpoint.budget = Box::new(SharedBudget::new(local, quota));
            endpoint.shares_quota = true;
        }
        self.shared = Some(SharedState {
            link,
            probing: false,
            reads: 0,
            reading: false,
            next_read: None,
            noted_after: vec![0; self.endpoints.len()],
        });
    }

    /// `endpoint` changed its health on its own evidence (its replies, its timers): if the
    /// others must know ([`HealthNote::of_change`]) and Redis is reachable, write it. Changes
    /// made to mirror the others' notes must not come here.
    pub fn share_health(
        &mut self,
        now: Instant,
        endpoint: usize,
        change: &HealthChange,
        effects: &mut Vec<Effect<P>>,
    ) {
        let Some(state) = self.shared.as_mut().filter(|s| s.link.is_shared()) else {
            // Without Redis the others learn it from their own replies.
            return;
        };
        let (Some(noted), Some(note)) = (
            state.noted_after.get_mut(endpoint),
            HealthNote::of_change(now, change),
        ) else {
            return;
        };
        *noted = state.reads;
        effects.push(Effect::Shared(SharedEffect::Note { endpoint, note }));
    }

    /// Redis answered read `read` with each endpoint's shared health (in config order): what
    /// another process noted is handed to the endpoints it changes ([`SharedHealth::mirror`]).
    pub fn health_read(
        &mut self,
        now: Instant,
        read: u64,
        healths: &[SharedHealth],
        effects: &mut Vec<Effect<P>>,
    ) -> Option<Instant> {
        if let Some(state) = self.shared.as_mut() {
            if read == state.reads {
                state.reading = false;
            }
            for (index, (endpoint, health)) in self.endpoints.iter().zip(healths).enumerate() {
                // Sent before this process's latest note on it: may not show that note yet.
                if state
                    .noted_after
                    .get(index)
                    .is_none_or(|&noted| read <= noted)
                {
                    continue;
                }
                if let Some(mirror) = health.mirror(now, &endpoint.health.state) {
                    effects.push(Effect::Shared(SharedEffect::Mirror {
                        endpoint: index,
                        mirror,
                    }));
                }
            }
        }
        self.pump(now, effects)
    }

    /// True while quotas are shared through Redis; `None` without shared quotas.
    pub fn is_shared(&self) -> Option<bool> {
        self.shared.as_ref().map(|s| s.link.is_shared())
    }

    /// How long quotas were paced locally (Redis away) up to `now`; `None` without shared
    /// quotas.
    pub fn time_local(&self, now: Instant) -> Option<std::time::Duration> {
        self.shared.as_ref().map(|s| s.link.time_local(now))
    }

    /// Redis answered `endpoint`'s renewal with `grant`.
    pub fn lease_granted(
        &mut self,
        now: Instant,
        endpoint: usize,
        grant: Grant,
        effects: &mut Vec<Effect<P>>,
    ) -> Option<Instant> {
        // A late answer to an ask made before Redis was lost is not ours to use.
        if self.shared.as_ref().is_some_and(|s| s.link.is_shared())
            && let Some(quota) = self
                .endpoints
                .get_mut(endpoint)
                .and_then(|e| e.budget.shared_quota())
        {
            quota.granted(now, grant);
        }
        self.pump(now, effects)
    }

    /// A Redis call (renewal, carry or probe) failed with `error`: on the first failure every
    /// shared quota falls back to `1/N` of its limits.
    pub fn redis_failed(
        &mut self,
        now: Instant,
        error: &str,
        effects: &mut Vec<Effect<P>>,
    ) -> Option<Instant> {
        self.lose_redis(now, error, effects);
        self.pump(now, effects)
    }

    /// A probe (or any call) reached Redis while it was away: carry the local use over and
    /// share again.
    pub fn redis_back(&mut self, now: Instant, effects: &mut Vec<Effect<P>>) -> Option<Instant> {
        if let Some(state) = self.shared.as_mut() {
            state.probing = false;
            if let Some(change) = state.link.succeeded(now) {
                for (index, endpoint) in self.endpoints.iter_mut().enumerate() {
                    let Some(quota) = endpoint.budget.shared_quota() else {
                        continue;
                    };
                    let carries = quota.redis_back(now);
                    if !carries.is_empty() {
                        effects.push(Effect::Shared(SharedEffect::Carry {
                            endpoint: index,
                            carries,
                        }));
                    }
                }
                effects.push(Effect::Shared(SharedEffect::Link(change)));
            }
        }
        self.pump(now, effects)
    }

    fn lose_redis(&mut self, now: Instant, error: &str, effects: &mut Vec<Effect<P>>) {
        let Some(state) = self.shared.as_mut() else {
            return;
        };
        state.probing = false;
        state.reading = false;
        if let Some(change) = state.link.failed(now, error) {
            for endpoint in &mut self.endpoints {
                if let Some(quota) = endpoint.budget.shared_quota() {
                    quota.redis_lost(now);
                }
            }
            effects.push(Effect::Shared(SharedEffect::Link(change)));
        }
    }

    /// After placing: renewals due, asks with no answer (Redis gone), a probe due, a health read
    /// due (every [`HEALTH_POLL`], idle or not: an idle process must know of a cooling
    /// deployment before its next job, not after). Returns the instant to be woken for them, and whether
    /// Redis was just lost (place again: the jobs waiting for a lease may go on the local ledger
    /// now).
    pub(super) fn shared_upkeep(
        &mut self,
        now: Instant,
        effects: &mut Vec<Effect<P>>,
    ) -> (Option<Instant>, bool) {
        let Some(state) = self.shared.as_mut() else {
            return (None, false);
        };
        if !state.link.is_shared() {
            if state.probing {
                return (None, false);
            }
            let retry_at = state.link.retry_at();
            if retry_at.is_some_and(|at| at <= now) {
                state.probing = true;
                effects.push(Effect::Shared(SharedEffect::Probe));
                return (None, false);
            }
            return (retry_at, false);
        }
        let timed_out = self
            .endpoints
            .iter_mut()
            .filter_map(|e| e.budget.shared_quota())
            .any(|q| q.ask_timed_out(now));
        if timed_out {
            self.lose_redis(now, "no answer from Redis within the ask timeout", effects);
            return (None, true);
        }
        let mut wake = None;
        if !state.reading {
            match state.next_read {
                Some(at) if at > now => wake = Some(at),
                _ => {
                    state.reads += 1;
                    state.reading = true;
                    state.next_read = Some(now + HEALTH_POLL);
                    effects.push(Effect::Shared(SharedEffect::ReadHealth {
                        read: state.reads,
                    }));
                }
            }
        }
        for (index, endpoint) in self.endpoints.iter_mut().enumerate() {
            let Some(quota) = endpoint.budget.shared_quota() else {
                continue;
            };
            if let Some(renewal) = quota.next_renewal(now) {
                effects.push(Effect::Shared(SharedEffect::Renew {
                    endpoint: index,
                    renewal,
                }));
            }
            wake = earliest(wake, quota.wake_at());
        }
        (wake, false)
    }
}
