//! [`SharedQuota`]: one process's side of a deployment's shared quota, as a state machine with
//! explicit instants. It charges jobs to the lease it holds, says when to renew it (give back
//! the rest and ask for the next in one round trip), sizes the next lease to the recent rate,
//! and runs on a `1/N` ledger of its own while Redis is away.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ledger::{Grant, LeaseAsk, LeaseLedger, LeaseLimits, LeaseSpans};
use crate::quota::Cost;

/// How far ahead a lease is sized: the room the recent rate uses in this time (shorter with an
/// RPM limit: [`SHORT_WINDOW_PARTS`]).
pub const LEASE_HORIZON: Duration = Duration::from_secs(1);
/// With an RPM limit a lease is sized for at most this fraction of the short window: a lease's
/// requests count in the window from its grant until its last use plus the window, so a lease
/// spent over a whole window would count for two and halve what the window admits. Spent over
/// an eighth, the window loses at most about a ninth, and only while no process has a backlog
/// (with one, leases are spent at once).
pub const SHORT_WINDOW_PARTS: u32 = 8;
/// How long a lease may be charged to after it was asked for (its idle rest is then given back).
pub const LEASE_TTL: Duration = Duration::from_secs(2);
/// An ask with no answer after this long is taken as Redis gone.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest time a rate sample is measured over (a lease spent at once is not infinitely
/// fast).
const MIN_SAMPLE: Duration = Duration::from_millis(10);

/// A charge made to a lease (or, without Redis, to the local ledger's lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseCharge {
    /// The lease charged.
    pub lease: u64,
    /// What was charged.
    pub cost: Cost,
    /// When.
    pub at: Instant,
}

/// Why a cost cannot be charged now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseWait {
    /// The lease held has no room for it: a renewal is due ([`SharedQuota::next_renewal`]) or on
    /// its way; ask again when [`SharedQuota::granted`] has been called.
    Renewal,
    /// The shared quota is full until then.
    NotUntil(Instant),
    /// Larger than the deployment's whole limit: it can never be charged.
    NeverFits {
        /// The cost's tokens.
        tokens: u64,
        /// The limit it exceeds.
        capacity: u64,
    },
}

/// A lease given back: what was used of it, and when it was last charged, counted from the ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseReturn {
    /// The lease.
    pub id: u64,
    /// What was charged to it.
    pub used: Cost,
    /// From the ask to its last charge (zero when unused).
    pub last_use: Duration,
}

/// One round trip to Redis: give a lease back, ask for the next, or both (one script call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Renewal {
    /// The lease to give back.
    pub give_back: Option<LeaseReturn>,
    /// The room to ask for.
    pub ask: Option<LeaseAsk>,
}

/// Room this process held or used recently, to be counted again by a ledger that did not see
/// it (Redis after it lost its data, or the local ledger when Redis goes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carry {
    /// What was charged.
    pub cost: Cost,
    /// How much longer it counts in the minute span.
    pub minute_left: Duration,
    /// How much longer its requests count in the short window.
    pub window_left: Duration,
}

#[derive(Clone, Copy, Debug)]
struct HeldLease {
    id: u64,
    asked_at: Instant,
    room: Cost,
    used: Cost,
    last_use: Option<Instant>,
}

impl HeldLease {
    fn fits(&self, cost: Cost, limits: LeaseLimits) -> bool {
        let tokens_ok = limits.tokens_per_minute.is_none()
            || self.used.tokens + cost.tokens <= self.room.tokens;
        let requests_ok = limits.requests_per_minute.is_none()
            || self.used.requests + cost.requests <= self.room.requests;
        tokens_ok && requests_ok
    }

    fn give_back(&self) -> LeaseReturn {
        LeaseReturn {
            id: self.id,
            used: self.used,
            last_use: self
                .last_use
                .map_or(Duration::ZERO, |at| at - self.asked_at),
        }
    }
}

/// Recent rate of charges, from the leases given back (an average over the last few).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Rate {
    tokens_per_sec: f64,
    requests_per_sec: f64,
}

impl Rate {
    fn sample(&mut self, used: Cost, over: Duration) {
        let secs = over.max(MIN_SAMPLE).as_secs_f64();
        let blend = |old: f64, new: f64| if old == 0.0 { new } else { (old + new) / 2.0 };
        self.tokens_per_sec = blend(self.tokens_per_sec, used.tokens as f64 / secs);
        self.requests_per_sec = blend(self.requests_per_sec, f64::from(used.requests) / secs);
    }
}

/// One process's side of one deployment's shared quota.
///
/// - [`SharedQuota::try_charge`] charges a job to the lease held; without room it answers
///   [`LeaseWait::Renewal`] and remembers the cost.
/// - [`SharedQuota::next_renewal`] says what to send Redis now: give back a lease that is spent
///   (cannot take the job waiting), past its ttl or idle (nothing waits and it was not
///   charged for a horizon: its room is the others' again), and ask for the next one, sized to what the
///   recent rate uses in [`LEASE_HORIZON`] (an eighth of the RPM window when requests are
///   limited; at least the job waiting, at most a fair share of
///   each limit, `1/N`). One call per lease, so Redis calls per job are `1 / jobs per lease`.
/// - [`SharedQuota::granted`] folds in Redis' answer; [`SharedQuota::wake_at`] is when to call
///   `next_renewal` again without a new event.
/// - [`SharedQuota::redis_lost`] switches to a ledger of its own at `1/N` of each limit (seeded
///   with what this process charged in the last minute); [`SharedQuota::redis_back`] hands that
///   ledger's live records to Redis as [`Carry`]s and returns to leases.
#[derive(Clone, Debug)]
pub struct SharedQuota {
    limits: LeaseLimits,
    processes: u32,
    spans: LeaseSpans,
    held: Option<HeldLease>,
    asking: Option<Instant>,
    not_before: Option<Instant>,
    wanted: Option<Cost>,
    rate: Rate,
    /// Leases given back or dropped within the last minute span: (last use, cost used).
    recent: VecDeque<(Instant, Cost)>,
    /// While Redis is away: this process's own ledger at `1/N`.
    local: Option<LeaseLedger>,
}

impl SharedQuota {
    /// The shared side of a deployment with `limits`, shared by about `processes` processes,
    /// with leases usable for `spans.ttl`.
    pub fn new(limits: LeaseLimits, processes: u32, spans: LeaseSpans) -> Self {
        SharedQuota {
            limits,
            processes: processes.max(1),
            spans,
            held: None,
            asking: None,
            not_before: None,
            wanted: None,
            rate: Rate::default(),
            recent: VecDeque::new(),
            local: None,
        }
    }

    /// True while it runs on its own `1/N` ledger (Redis away).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Charges `cost` at `now` to the lease held, if it has room.
    pub fn try_charge(&mut self, now: Instant, cost: Cost) -> Result<LeaseCharge, LeaseWait> {
        if let Some(capacity) = self.limits.tokens_per_minute
            && cost.tokens > capacity
        {
            return Err(LeaseWait::NeverFits {
                tokens: cost.tokens,
                capacity,
            });
        }
        if let Some(charge) = self.charge_held(now, cost) {
            return Ok(charge);
        }
        self.wanted = Some(cost);
        if self.local.is_some() {
            // No round trip: renew from the local ledger at once.
            let renewal = self.next_renewal(now);
            if let (Some(ledger), Some(renewal)) = (self.local.as_mut(), renewal) {
                if let Some(back) = renewal.give_back {
                    ledger.give_back(back.id, back.used, back.last_use);
                }
                if let Some(ask) = renewal.ask {
                    let grant = ledger.grant(now, ask);
                    self.granted(now, grant);
                }
            }
            if let Some(charge) = self.charge_held(now, cost) {
                return Ok(charge);
            }
        }
        Err(self.wait_until(now))
    }

    /// Charges the lease held, if it is within its ttl and has room.
    fn charge_held(&mut self, now: Instant, cost: Cost) -> Option<LeaseCharge> {
        let lease = self.held.as_mut()?;
        if now >= lease.asked_at + self.spans.ttl || !lease.fits(cost, self.limits) {
            return None;
        }
        lease.used.tokens += cost.tokens;
        lease.used.requests += cost.requests;
        lease.last_use = Some(now);
        self.wanted = None;
        Some(LeaseCharge {
            lease: lease.id,
            cost,
            at: now,
        })
    }

    fn wait_until(&self, now: Instant) -> LeaseWait {
        match self.not_before {
            Some(at) if at > now => LeaseWait::NotUntil(at),
            _ => LeaseWait::Renewal,
        }
    }

    /// A charge that never reached Azure is refunded to its lease while the lease is held.
    pub fn refund(&mut self, charge: LeaseCharge) {
        if let Some(lease) = self.held.as_mut()
            && lease.id == charge.lease
        {
            lease.used.tokens = lease.used.tokens.saturating_sub(charge.cost.tokens);
            lease.used.requests = lease.used.requests.saturating_sub(charge.cost.requests);
        }
    }

    /// What to send Redis at `now`, if anything: the lease to give back (spent for the job
    /// waiting, past its ttl, or idle) and the room to ask for (a job waits and Redis has not said
    /// to wait longer). `None` while an ask is on its way.
    pub fn next_renewal(&mut self, now: Instant) -> Option<Renewal> {
        if self.asking.is_some() {
            return None;
        }
        let mut renewal = Renewal::default();
        let expired = |lease: &HeldLease| now >= lease.asked_at + self.spans.ttl;
        let spent = |lease: &HeldLease| {
            self.wanted
                .is_some_and(|cost| !lease.fits(cost, self.limits))
        };
        let idle = |lease: &HeldLease| self.idle_at(lease).is_some_and(|at| now >= at);
        if let Some(lease) = self.held
            && (expired(&lease) || spent(&lease) || idle(&lease))
        {
            self.held = None;
            let back = lease.give_back();
            self.rate.sample(back.used, now - lease.asked_at);
            if let Some(last) = lease.last_use {
                self.recent.push_back((last, back.used));
            }
            renewal.give_back = Some(back);
        }
        let may_ask = self.not_before.is_none_or(|at| at <= now);
        if self.held.is_none()
            && may_ask
            && let Some(cost) = self.wanted
        {
            renewal.ask = Some(self.size(cost));
            self.asking = Some(now);
        }
        self.prune_recent(now);
        (renewal != Renewal::default()).then_some(renewal)
    }

    /// How far ahead a lease is sized: [`LEASE_HORIZON`], or the [`SHORT_WINDOW_PARTS`]th of
    /// the RPM window.
    fn horizon(&self) -> Duration {
        match self.limits.requests_per_window {
            Some(_) => LEASE_HORIZON.min(self.spans.window / SHORT_WINDOW_PARTS),
            None => LEASE_HORIZON,
        }
    }

    /// When a held lease with room left counts as idle and is given back early: nothing waits
    /// and it has not been charged for a horizon. Its unused room would otherwise count
    /// against the others until its ttl ends, while this process sends nothing.
    fn idle_at(&self, lease: &HeldLease) -> Option<Instant> {
        if self.wanted.is_some() || self.local.is_some() {
            return None;
        }
        Some(lease.last_use.unwrap_or(lease.asked_at) + self.horizon())
    }

    /// The room to ask for when `at_least` waits: the recent rate over [`LEASE_HORIZON`] (or
    /// the [`SHORT_WINDOW_PARTS`]th of the RPM window),
    /// between `at_least` and a fair share of each limit (`1/N`; never less than `at_least`).
    fn size(&self, at_least: Cost) -> LeaseAsk {
        let horizon = self.horizon().as_secs_f64();
        let share = self.limits.share(self.processes);
        let tokens = match share.tokens_per_minute {
            None => 0,
            Some(cap) => ((self.rate.tokens_per_sec * horizon) as u64)
                .min(cap)
                .max(at_least.tokens),
        };
        let requests = match share.requests_per_minute {
            None => 0,
            Some(cap) => {
                let cap = share.requests_per_window.map_or(cap, |w| cap.min(w));
                ((self.rate.requests_per_sec * horizon) as u32)
                    .min(cap)
                    .max(at_least.requests)
            }
        };
        let at_least = Cost {
            tokens: if share.tokens_per_minute.is_some() {
                at_least.tokens
            } else {
                0
            },
            requests: if share.requests_per_minute.is_some() {
                at_least.requests
            } else {
                0
            },
        };
        LeaseAsk {
            want: Cost { tokens, requests },
            at_least,
        }
    }

    /// Redis' answer to the ask made by the last [`SharedQuota::next_renewal`], at `now`. A wait
    /// longer than a lease's ttl is cut to the ttl: every lease counted is given back by then.
    pub fn granted(&mut self, now: Instant, grant: Grant) {
        let Some(asked_at) = self.asking.take() else {
            return;
        };
        match grant {
            Grant::Granted { id, cost } => {
                self.not_before = None;
                self.held = Some(HeldLease {
                    id,
                    asked_at,
                    room: cost,
                    used: Cost::default(),
                    last_use: None,
                });
            }
            // Redis' wait counts every lease as held to its end, but the others give theirs
            // back (shrunk to their use) within a ttl: by then the room may be free, so ask
            // again no later than that. Near a full minute, waiting out the minute instead
            // stalled a process for up to a minute with room free (bench-quota --processes 4).
            // The local ledger holds only this process's leases: its wait is exact.
            Grant::Wait(wait) if self.local.is_none() => {
                self.not_before = Some(now + wait.min(self.spans.ttl));
            }
            Grant::Wait(wait) => self.not_before = Some(now + wait),
        }
    }

    /// When to call [`SharedQuota::next_renewal`] again with no other event: the held lease's
    /// end (or the moment it falls idle), the end of Redis' wait while a job waits, or the ask's timeout.
    pub fn wake_at(&self) -> Option<Instant> {
        if let Some(asked) = self.asking {
            return Some(asked + ASK_TIMEOUT);
        }
        let lease_end = self.held.map(|l| {
            let end = l.asked_at + self.spans.ttl;
            self.idle_at(&l).map_or(end, |idle| idle.min(end))
        });
        let wait_end = self.wanted.and(self.not_before);
        match (lease_end, wait_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when the ask on its way has had no answer for [`ASK_TIMEOUT`]: take Redis as gone.
    pub fn ask_timed_out(&self, now: Instant) -> bool {
        self.asking.is_some_and(|at| now >= at + ASK_TIMEOUT)
    }

    /// Redis cannot be reached: from now on leases come from a ledger of this process's own at
    /// `1/N` of each limit, which starts with what this process charged in the last minute
    /// span (the lease held included: it is no longer charged to).
    pub fn redis_lost(&mut self, now: Instant) {
        if self.local.is_some() {
            return;
        }
        self.asking = None;
        self.not_before = None;
        if let Some(lease) = self.held.take()
            && let Some(last) = lease.last_use
        {
            self.recent.push_back((last, lease.used));
        }
        self.prune_recent(now);
        let mut ledger = LeaseLedger::new(self.limits.share(self.processes), self.spans);
        for carry in self.recent_carry(now) {
            ledger.carry(now, carry.cost, carry.minute_left, carry.window_left);
        }
        self.local = Some(ledger);
    }

    /// Redis answers again: back to leases from Redis. Returns what Redis must count that it
    /// may not have seen (the local ledger's live records; the lease use before Redis went is
    /// in it too, in case Redis lost its data): write these before the next ask.
    pub fn redis_back(&mut self, now: Instant) -> Vec<Carry> {
        let Some(mut ledger) = self.local.take() else {
            return Vec::new();
        };
        if let Some(lease) = self.held.take() {
            let back = lease.give_back();
            ledger.give_back(back.id, back.used, back.last_use);
        }
        self.asking = None;
        self.not_before = None;
        ledger
            .live(now)
            .into_iter()
            .map(|(cost, minute_left, window_left)| Carry {
                cost,
                minute_left,
                window_left,
            })
            .collect()
    }

    fn recent_carry(&self, now: Instant) -> impl Iterator<Item = Carry> + '_ {
        self.recent.iter().map(move |&(last, cost)| Carry {
            cost,
            minute_left: (last + self.spans.minute).saturating_duration_since(now),
            window_left: (last + self.spans.window).saturating_duration_since(now),
        })
    }

    fn prune_recent(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|&(last, _)| last + self.spans.minute <= now)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
#[path = "quota_tests.rs"]
mod tests;
