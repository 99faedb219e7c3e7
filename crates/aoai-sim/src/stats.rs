//! Counters per deployment, and their snapshot served at `GET /stats`.
//!
//! Every chat request lands in exactly one outcome class, so
//! `requests == ok + rate_limited + client_errors + server_errors + hangs`. The fault counters
//! (`drops`, `stream_cuts`, `stream_errors`, `stream_stalls`, `not_json`) count replies that started as 200 and are
//! also in `ok`; `content_filter` replies are also in `client_errors`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of the simulator's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Counters per deployment name.
    pub deployments: BTreeMap<String, DeploymentStats>,
    /// Chat requests that named no deployment served on the listener they reached (404, or a
    /// 400/401 before a deployment was known).
    pub unrouted: DeploymentStats,
}

impl SimStats {
    /// The counters of one deployment (all zero if it is unknown).
    pub fn deployment(&self, name: &str) -> DeploymentStats {
        self.deployments.get(name).cloned().unwrap_or_default()
    }

    /// The sum over all deployments and `unrouted`.
    pub fn total(&self) -> DeploymentStats {
        let mut total = self.unrouted.clone();
        for stats in self.deployments.values() {
            total.add(stats);
        }
        total
    }
}

/// Counters of one deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStats {
    /// Requests received (chat, embeddings, responses).
    pub requests: u64,
    /// Requests of `requests` that came over HTTP/2 (the others over HTTP/1.1).
    #[serde(default)]
    pub http2_requests: u64,
    /// Replies with a 2xx status (including faulty 200s).
    pub ok: u64,
    /// 429 replies.
    pub rate_limited: u64,
    /// 429 replies of the quota for the minute's tokens (also in `rate_limited`).
    #[serde(default)]
    pub refused_for_tokens: u64,
    /// 429 replies of the quota for the short window's requests (also in `rate_limited`).
    #[serde(default)]
    pub refused_for_requests: u64,
    /// Other 4xx replies.
    pub client_errors: u64,
    /// 5xx replies.
    pub server_errors: u64,
    /// Tokens charged against the quota on admission.
    pub charged_tokens: u64,
    /// Prompt + completion tokens reported in replies.
    pub used_tokens: u64,
    /// Requests being served right now (including hung ones and open streams).
    pub in_flight: u64,
    /// The most requests in flight at once.
    pub peak_in_flight: u64,
    /// Hang faults (no reply until `hang_secs`).
    pub hangs: u64,
    /// Dropped-connection faults.
    pub drops: u64,
    /// Streams cut without `[DONE]`.
    pub stream_cuts: u64,
    /// Streams ended by an error event.
    pub stream_errors: u64,
    /// Streams stalled after some deltas (`p_stream_stall`).
    pub stream_stalls: u64,
    /// 200 replies whose body was not JSON.
    pub not_json: u64,
    /// Content-filter 400 replies.
    pub content_filter: u64,
}

impl DeploymentStats {
    fn add(&mut self, other: &DeploymentStats) {
        self.requests += other.requests;
        self.http2_requests += other.http2_requests;
        self.ok += other.ok;
        self.rate_limited += other.rate_limited;
        self.refused_for_tokens += other.refused_for_tokens;
        self.refused_for_requests += other.refused_for_requests;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.charged_tokens += other.charged_tokens;
        self.used_tokens += other.used_tokens;
        self.in_flight += other.in_flight;
        self.peak_in_flight = self.peak_in_flight.max(other.peak_in_flight);
        self.hangs += other.hangs;
        self.drops += other.drops;
        self.stream_cuts += other.stream_cuts;
        self.stream_errors += other.stream_errors;
        self.stream_stalls += other.stream_stalls;
        self.not_json += other.not_json;
        self.content_filter += other.content_filter;
    }
}

/// A fault counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultCounter {
    Hang,
    Drop,
    StreamCut,
    StreamError,
    StreamStall,
    NotJson,
    ContentFilter,
}

/// Live counters, updated without locks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    http2_requests: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    refused_for_tokens: AtomicU64,
    refused_for_requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    charged_tokens: AtomicU64,
    used_tokens: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    hangs: AtomicU64,
    drops: AtomicU64,
    stream_cuts: AtomicU64,
    stream_errors: AtomicU64,
    stream_stalls: AtomicU64,
    not_json: AtomicU64,
    content_filter: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn request(&self, http2: bool) {
        bump(&self.requests, 1);
        if http2 {
            bump(&self.http2_requests, 1);
        }
    }

    pub(crate) fn status(&self, status: u16) {
        let counter = match status {
            200..=299 => &self.ok,
            429 => &self.rate_limited,
            400..=499 => &self.client_errors,
            _ => &self.server_errors,
        };
        bump(counter, 1);
    }

    pub(crate) fn fault(&self, fault: FaultCounter) {
        let counter = match fault {
            FaultCounter::Hang => &self.hangs,
            FaultCounter::Drop => &self.drops,
            FaultCounter::StreamCut => &self.stream_cuts,
            FaultCounter::StreamError => &self.stream_errors,
            FaultCounter::StreamStall => &self.stream_stalls,
            FaultCounter::NotJson => &self.not_json,
            FaultCounter::ContentFilter => &self.content_filter,
        };
        bump(counter, 1);
    }

    /// The quota refused a request (a 429 also counted by [`Counters::status`]).
    pub(crate) fn refused(&self, kind: crate::quota::LimitKind) {
        let counter = match kind {
            crate::quota::LimitKind::Tokens => &self.refused_for_tokens,
            crate::quota::LimitKind::Requests => &self.refused_for_requests,
        };
        bump(counter, 1);
    }

    pub(crate) fn charged(&self, tokens: u64) {
        bump(&self.charged_tokens, tokens);
    }

    pub(crate) fn used(&self, tokens: u64) {
        bump(&self.used_tokens, tokens);
    }

    pub(crate) fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::AcqRel);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn snapshot(&self) -> DeploymentStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DeploymentStats {
            requests: get(&self.requests),
            http2_requests: get(&self.http2_requests),
            ok: get(&self.ok),
            rate_limited: get(&self.rate_limited),
            refused_for_tokens: get(&self.refused_for_tokens),
            refused_for_requests: get(&self.refused_for_requests),
            client_errors: get(&self.client_errors),
            server_errors: get(&self.server_errors),
            charged_tokens: get(&self.charged_tokens),
            used_tokens: get(&self.used_tokens),
            in_flight: get(&self.in_flight),
            peak_in_flight: get(&self.peak_in_flight),
            hangs: get(&self.hangs),
            drops: get(&self.drops),
            stream_cuts: get(&self.stream_cuts),
            stream_errors: get(&self.stream_errors),
            stream_stalls: get(&self.stream_stalls),
            not_json: get(&self.not_json),
            content_filter: get(&self.content_filter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_land_in_their_class() {
        let counters = Counters::default();
        for (index, status) in [200, 201, 429, 400, 401, 404, 408, 500, 503]
            .into_iter()
            .enumerate()
        {
            counters.request(index < 3);
            counters.status(status);
        }
        counters.refused(crate::quota::LimitKind::Tokens);
        counters.refused(crate::quota::LimitKind::Requests);
        counters.refused(crate::quota::LimitKind::Requests);
        let stats = counters.snapshot();
        assert_eq!(
            (stats.refused_for_tokens, stats.refused_for_requests),
            (1, 2)
        );
        assert_eq!(
            (
                stats.requests,
                stats.ok,
                stats.rate_limited,
                stats.client_errors,
                stats.server_errors
            ),
            (9, 2, 1, 4, 2)
        );
        assert_eq!(stats.http2_requests, 3);
    }

    #[test]
    fn peak_in_flight_keeps_the_maximum() {
        let counters = Counters::default();
        counters.enter();
        counters.enter();
        counters.leave();
        counters.enter();
        counters.leave();
        let stats = counters.snapshot();
        assert_eq!((stats.in_flight, stats.peak_in_flight), (1, 2));
    }

    #[test]
    fn total_sums_deployments() {
        let mut stats = SimStats::default();
        stats.deployments.insert(
            "a".into(),
            DeploymentStats {
                requests: 2,
                peak_in_flight: 3,
                ..Default::default()
            },
        );
        stats.unrouted.requests = 1;
        assert_eq!(stats.total().requests, 3);
        assert_eq!(stats.total().peak_in_flight, 3);
        assert_eq!(stats.deployment("missing"), DeploymentStats::default());
    }
}
