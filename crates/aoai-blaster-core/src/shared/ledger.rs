//! [`LeaseLedger`]: the accounting rule for leases, as plain data. Redis runs the same rule in
//! its Lua scripts (`aoai-blaster/src/shared/scripts/`) for every process at once; this one
//! runs it for one process alone while Redis is away (at `1/N` of each limit), and is the
//! reference the scripts are tested against.

use std::time::{Duration, Instant};

use crate::quota::{Cost, requests_per_window, span_of};

/// The limits a ledger grants leases against (`None`: that side is not limited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseLimits {
    /// Tokens in any minute span.
    pub tokens_per_minute: Option<u64>,
    /// Requests in any minute span.
    pub requests_per_minute: Option<u32>,
    /// Requests in any span of the short window (`rpm_window`).
    pub requests_per_window: Option<u32>,
}

impl LeaseLimits {
    /// The limits of a deployment with these `rpm_limit`/`tpm_limit` counted over `rpm_window`
    /// (the short window's allowance as [`requests_per_window`] computes it).
    pub fn new(rpm: Option<u32>, tpm: Option<u64>, rpm_window: Duration) -> Self {
        LeaseLimits {
            tokens_per_minute: tpm,
            requests_per_minute: rpm,
            requests_per_window: rpm.map(|rpm| requests_per_window(rpm, rpm_window)),
        }
    }

    /// True when neither tokens nor requests are limited: nothing to share.
    pub fn is_unlimited(&self) -> bool {
        self.tokens_per_minute.is_none() && self.requests_per_minute.is_none()
    }

    /// One process's share when `processes` share the limits and cannot coordinate: each limit
    /// divided by `processes`, rounded down, at least 1.
    pub fn share(self, processes: u32) -> Self {
        let n = processes.max(1);
        LeaseLimits {
            tokens_per_minute: self.tokens_per_minute.map(|t| (t / u64::from(n)).max(1)),
            requests_per_minute: self.requests_per_minute.map(|r| (r / n).max(1)),
            requests_per_window: self.requests_per_window.map(|r| (r / n).max(1)),
        }
    }
}

/// How long leases live and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseSpans {
    /// How long a process may charge to a lease after asking for it.
    pub ttl: Duration,
    /// The minute span charges count in ([`span_of`] 60 s).
    pub minute: Duration,
    /// The short window's span ([`span_of`] `rpm_window`).
    pub window: Duration,
}

impl LeaseSpans {
    /// Spans for leases usable for `ttl`, with requests counted over `rpm_window`.
    pub fn new(ttl: Duration, rpm_window: Duration) -> Self {
        LeaseSpans {
            ttl,
            minute: span_of(Duration::from_secs(60)),
            window: span_of(rpm_window),
        }
    }
}

/// What a process asks for: room for `want`, or at least for `at_least` (the job waiting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseAsk {
    /// The room the process expects to use within its lease's ttl.
    pub want: Cost,
    /// Less than this is no use: the job waiting needs it.
    pub at_least: Cost,
}

/// A ledger's answer to a [`LeaseAsk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Room for `cost`, under lease `id`.
    Granted {
        /// The lease's number (unique within its ledger).
        id: u64,
        /// The room granted: between `at_least` and `want` on each side.
        cost: Cost,
    },
    /// Not even `at_least` fits before this much time has passed.
    Wait(Duration),
}

/// One lease as a ledger counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    pub(crate) id: u64,
    pub(crate) cost: Cost,
    pub(crate) granted: Instant,
    /// Until then it counts in the minute span.
    pub(crate) minute_end: Instant,
    /// Until then its requests count in the short window.
    pub(crate) window_end: Instant,
}

/// The leases granted against one deployment's limits, and the rule that grants them.
///
/// The rule (the same in Redis): a lease asked at `t` and granted at `g >= t` may be charged to
/// until `t + ttl`. Its room counts against the limits from `g` until `g + ttl + span` (each
/// span: the minute for tokens and requests, the short window for requests). Every charge made
/// to it at `c` in `[g, g + ttl]` counts for Azure until `c + span <= g + ttl + span`, so as long
/// as the live leases never sum above a limit, no span of real charges does either, whichever
/// processes made them and wherever Azure's windows start. When a process gives a lease back it
/// reports what it used and when it last charged it (`last_use`, counted from its ask, which is
/// never later than the grant): the record shrinks to the use and ends at
/// `g + last_use + span`. A process that dies just lets its leases run out.
#[derive(Clone, Debug)]
pub struct LeaseLedger {
    limits: LeaseLimits,
    spans: LeaseSpans,
    records: Vec<LeaseRecord>,
    next_id: u64,
}

/// What the live leases add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    /// Tokens counting in the minute span.
    pub tokens: u64,
    /// Requests counting in the minute span.
    pub requests_in_minute: u64,
    /// Requests counting in the short window.
    pub requests_in_window: u64,
}

impl LeaseLedger {
    /// An empty ledger for these limits and spans.
    pub fn new(limits: LeaseLimits, spans: LeaseSpans) -> Self {
        LeaseLedger {
            limits,
            spans,
            records: Vec::new(),
            next_id: 1,
        }
    }

    /// The limits it grants against.
    pub fn limits(&self) -> LeaseLimits {
        self.limits
    }

    /// Grants room for `ask.want` (less where less is free, never less than `ask.at_least`) at
    /// `now`, or says how long until `ask.at_least` fits. A side whose `at_least` exceeds its
    /// limit is granted only when nothing else counts on that side (as the in-process budgets
    /// admit an oversized request only into an empty window).
    pub fn grant(&mut self, now: Instant, ask: LeaseAsk) -> Grant {
        self.prune(now);
        let totals = self.totals(now);
        let mut wait = Duration::ZERO;
        let mut room = ask.want;
        let free = |limit: u64, used: u64| limit.saturating_sub(used);
        if let Some(limit) = self.limits.tokens_per_minute {
            let free_tokens = free(limit, totals.tokens);
            let need = ask.at_least.tokens.min(limit);
            if free_tokens < need || (ask.at_least.tokens > limit && totals.tokens > 0) {
                let excess = (totals.tokens + need).saturating_sub(limit).max(1);
                wait = wait.max(self.freed_after(now, excess, |r| (r.cost.tokens, r.minute_end)));
            }
            room.tokens = room.tokens.min(free_tokens).max(ask.at_least.tokens);
        }
        let at_least_requests = u64::from(ask.at_least.requests);
        let mut room_requests = u64::from(ask.want.requests);
        let sides = [
            (
                self.limits.requests_per_minute,
                totals.requests_in_minute,
                true,
            ),
            (
                self.limits.requests_per_window,
                totals.requests_in_window,
                false,
            ),
        ];
        for (limit, used, minute) in sides {
            let Some(limit) = limit.map(u64::from) else {
                continue;
            };
            let need = at_least_requests.min(limit);
            if free(limit, used) < need || (at_least_requests > limit && used > 0) {
                let excess = (used + need).saturating_sub(limit).max(1);
                wait = wait.max(self.freed_after(now, excess, |r| {
                    let end = if minute { r.minute_end } else { r.window_end };
                    (u64::from(r.cost.requests), end)
                }));
            }
            room_requests = room_requests.min(free(limit, used)).max(at_least_requests);
        }
        if !wait.is_zero() {
            return Grant::Wait(wait);
        }
        room.requests = u32::try_from(room_requests).unwrap_or(u32::MAX);
        let id = self.next_id;
        self.next_id += 1;
        self.records.push(LeaseRecord {
            id,
            cost: room,
            granted: now,
            minute_end: now + self.spans.ttl + self.spans.minute,
            window_end: now + self.spans.ttl + self.spans.window,
        });
        Grant::Granted { id, cost: room }
    }

    /// Lease `id` is given back: it was charged `used`, last `last_use` after it was asked for.
    /// Unknown or expired leases are ignored (their room has already run out).
    pub fn give_back(&mut self, id: u64, used: Cost, last_use: Duration) {
        let Some(at) = self.records.iter().position(|r| r.id == id) else {
            return;
        };
        if used == Cost::default() {
            self.records.swap_remove(at);
            return;
        }
        let spans = self.spans;
        let record = &mut self.records[at];
        record.cost = Cost {
            tokens: used.tokens.min(record.cost.tokens),
            requests: used.requests.min(record.cost.requests),
        };
        let last = record.granted + last_use.min(spans.ttl);
        record.minute_end = record.minute_end.min(last + spans.minute);
        record.window_end = record.window_end.min(last + spans.window);
    }

    /// Counts `cost` that was charged elsewhere (while this ledger did not see it) until
    /// `minute_end`/`window_end`, without checking the limits: what a process carries over
    /// when it changes ledgers. Returns the record's id.
    pub fn carry(
        &mut self,
        now: Instant,
        cost: Cost,
        minute_left: Duration,
        window_left: Duration,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.records.push(LeaseRecord {
            id,
            cost,
            granted: now,
            minute_end: now + minute_left,
            window_end: now + window_left,
        });
        id
    }

    /// The live records at `now`, as (cost, time left in the minute span, time left in the
    /// short window): what to carry to another ledger.
    pub fn live(&self, now: Instant) -> Vec<(Cost, Duration, Duration)> {
        self.records
            .iter()
            .filter(|r| r.minute_end > now)
            .map(|r| {
                (
                    r.cost,
                    r.minute_end - now,
                    r.window_end.saturating_duration_since(now),
                )
            })
            .collect()
    }

    /// What the live leases add up to at `now`.
    pub fn totals(&self, now: Instant) -> LedgerTotals {
        let mut totals = LedgerTotals::default();
        for r in self.records.iter().filter(|r| r.minute_end > now) {
            totals.tokens += r.cost.tokens;
            totals.requests_in_minute += u64::from(r.cost.requests);
            if r.window_end > now {
                totals.requests_in_window += u64::from(r.cost.requests);
            }
        }
        totals
    }

    fn prune(&mut self, now: Instant) {
        self.records.retain(|r| r.minute_end > now);
    }

    /// How long until records holding `excess` (of the side `side` reads) have ended.
    fn freed_after(
        &self,
        now: Instant,
        excess: u64,
        side: impl Fn(&LeaseRecord) -> (u64, Instant),
    ) -> Duration {
        let mut ends: Vec<(Instant, u64)> = self
            .records
            .iter()
            .map(|r| {
                let (amount, end) = side(r);
                (end, amount)
            })
            .filter(|&(end, amount)| end > now && amount > 0)
            .collect();
        ends.sort_unstable();
        let mut freed = 0;
        for (end, amount) in ends {
            freed += amount;
            if freed >= excess {
                return end - now;
            }
        }
        // Not reachable with consistent totals; the longest any record lives is a safe answer.
        self.spans.ttl + self.spans.minute
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
