//! Shared quotas: several processes drawing on the same deployments' quotas through Redis, the
//! pure part (the Redis side is `aoai_blaster::shared`).
//!
//! Why leases, not batched reservations: a reservation per job, even batched, puts Redis on
//! every job's path (a job waits for its batch's round trip) and makes the batch size a
//! trade of latency against Redis calls. A lease takes room for the next jobs *before* they
//! come: a process asks for room for what its recent rate uses in [`LEASE_HORIZON`], charges its
//! jobs to it locally with no round trip, and gives the rest back with the next ask (one script
//! call). Redis calls per job are `1 / jobs per lease`: at a rate the quota allows they stay far
//! below 1, and when few jobs come the calls are few too.
//!
//! Why it keeps Azure's windows: Azure counts tokens per minute and requests per short window
//! wherever those windows start. A lease counts against the limits from its grant until its
//! ttl plus the span has passed (see [`LeaseLedger`]), which covers every span any charge to it
//! can fall in; a lease given back shrinks to what was used and to its last use. Redis' own
//! `TIME` is the one clock the grants are made by; each process only measures durations on its
//! own clock, from the moment it asked (never later than the grant), so no clocks need to agree.
//! A process that dies lets its leases run out by themselves.
//!
//! Why `1/N` without Redis: with Redis unreachable nobody can know what the others send; each
//! process paces to `1/expected_processes` of each limit on a [`LeaseLedger`] of its own, seeded
//! with what it charged in the last minute, so the sum stays within the quota. When Redis
//! answers again the process writes what it charged meanwhile ([`Carry`]) before its next ask,
//! in case Redis lost its data, and shares again.
//!
//! One file per role: `budget` ([`SharedBudget`], the lease beside the local budget's
//! rules), `ledger` (the accounting rule, as the Lua scripts run it), `quota`
//! ([`SharedQuota`], one process's side of one deployment), `link` ([`RedisLink`], shared or
//! local, when to try again), `health` ([`HealthNote`], what the others must know), `keys`
//! ([`SharedKeys`], the key names).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use aoai_blaster_core::quota::Cost;
//! use aoai_blaster_core::shared::{LeaseLimits, LeaseSpans, LeaseWait, SharedQuota};
//!
//! let t0 = Instant::now();
//! let limits = LeaseLimits::new(Some(600), Some(100_000), Duration::from_secs(1));
//! let spans = LeaseSpans::new(Duration::from_secs(2), Duration::from_secs(1));
//! let mut quota = SharedQuota::new(limits, 4, spans);
//! let job = Cost { requests: 1, tokens: 1_000 };
//! // No lease yet: the job waits for a renewal, which asks Redis for room.
//! assert_eq!(quota.try_charge(t0, job), Err(LeaseWait::Renewal));
//! let renewal = quota.next_renewal(t0).unwrap();
//! assert_eq!(renewal.ask.unwrap().at_least, job);
//! // Redis ran the grant script; its answer comes back.
//! let grant = aoai_blaster_core::shared::Grant::Granted { id: 7, cost: job };
//! quota.granted(t0 + Duration::from_millis(1), grant);
//! assert_eq!(quota.try_charge(t0 + Duration::from_millis(1), job).unwrap().lease, 7);
//! ```

mod budget;
mod health;
mod keys;
mod ledger;
mod link;
mod quota;

pub use budget::SharedBudget;
pub use health::{
    DISABLE_TTL_MAX, HEALTH_POLL, HealthMirror, HealthNote, MIRROR_SLACK, RECOVERED_TTL,
    SharedHealth,
};
pub use keys::SharedKeys;
pub use ledger::{Grant, LeaseAsk, LeaseLedger, LeaseLimits, LeaseSpans, LedgerTotals};
pub use link::{LinkChange, PROBE_FIRST, PROBE_MAX, RedisLink, RedisUnreachable};
pub use quota::{
    ASK_TIMEOUT, Carry, LEASE_HORIZON, LEASE_TTL, LeaseCharge, LeaseReturn, LeaseWait, Renewal,
    SHORT_WINDOW_PARTS, SharedQuota,
};
