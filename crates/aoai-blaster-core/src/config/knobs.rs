//! The keys that exist both at the top level and in each `deployments[i]` entry, written once
//! ([`RawKnobs`], flattened into [`RawConfig`](super::RawConfig) and
//! [`RawDeployment`](super::RawDeployment)), and how they resolve: a deployment's values over the
//! top level's, the top level's over the defaults.

use std::time::Duration;

use serde::Deserialize;

use super::duration::{optional_duration, optional_duration_or_never};
use super::validate::{Problems, Scope};
use super::{Resilience, Timeouts};

/// The keys of [`RawKnobs`], in order (kept in step with it by a test).
pub(super) const KNOB_KEYS: [&str; 10] = [
    "request_timeout",
    "connect_timeout",
    "stream_idle_timeout",
    "backoff_base",
    "backoff_max",
    "rate_limit_fallback",
    "retry_after_cap",
    "auto_disable_threshold",
    "reenable_after",
    "max_reply_bytes",
];

/// The keys that exist at both levels: the time bounds of an attempt and how an endpoint reacts
/// to failures. At the top level they set every deployment's default; in a deployment they
/// override the top level for it. The defaults named below apply where neither sets a key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKnobs {
    /// Bound on one HTTP attempt, from sending the request to the last byte of the reply,
    /// streams included. Default 120 s.
    #[serde(deserialize_with = "optional_duration")]
    pub request_timeout: Option<Duration>,
    /// Bound on opening a connection. Default 10 s.
    #[serde(deserialize_with = "optional_duration")]
    pub connect_timeout: Option<Duration>,
    /// Longest silence between two chunks of a stream. Default 30 s.
    #[serde(deserialize_with = "optional_duration")]
    pub stream_idle_timeout: Option<Duration>,
    /// First backoff after a transient failure. Default 1 s.
    #[serde(deserialize_with = "optional_duration")]
    pub backoff_base: Option<Duration>,
    /// Longest backoff. Default 60 s.
    #[serde(deserialize_with = "optional_duration")]
    pub backoff_max: Option<Duration>,
    /// Cooldown after a 429 that says nothing about when to retry. Default 15 s.
    #[serde(deserialize_with = "optional_duration")]
    pub rate_limit_fallback: Option<Duration>,
    /// A longer Retry-After disables the endpoint until then. Default 5 min.
    #[serde(deserialize_with = "optional_duration")]
    pub retry_after_cap: Option<Duration>,
    /// Consecutive transient failures that disable an endpoint. Default 5.
    pub auto_disable_threshold: Option<u32>,
    /// Probe a disabled endpoint after this long (doubling after each failed probe, up to
    /// `backoff_max`); `Some(None)` for `never`. Default 30 s.
    #[serde(deserialize_with = "optional_duration_or_never")]
    pub reenable_after: Option<Option<Duration>>,
    /// Largest reply body read, plain or streamed, in bytes; a larger reply fails the job.
    /// Default 64 MiB.
    pub max_reply_bytes: Option<u64>,
}

impl RawKnobs {
    /// Applies the values set here over `base`, reporting those that are invalid, and the
    /// inconsistent pairs in which at least one value is set here.
    pub(super) fn resolve(
        &self,
        base_timeouts: Timeouts,
        base_resilience: Resilience,
        scope: Scope<'_>,
        problems: &mut Problems,
    ) -> (Timeouts, Resilience) {
        let timeouts = self.resolve_timeouts(base_timeouts, scope, problems);
        let resilience = self.resolve_resilience(base_resilience, scope, problems);
        self.check_pairs(&resilience, scope, problems);
        (timeouts, resilience)
    }

    fn resolve_timeouts(
        &self,
        base: Timeouts,
        scope: Scope<'_>,
        problems: &mut Problems,
    ) -> Timeouts {
        let mut positive = |key: &str, value: Option<Duration>, default: Duration| {
            positive(key, value, default, scope, problems)
        };
        Timeouts {
            request: positive("request_timeout", self.request_timeout, base.request),
            connect: positive("connect_timeout", self.connect_timeout, base.connect),
            stream_idle: positive(
                "stream_idle_timeout",
                self.stream_idle_timeout,
                base.stream_idle,
            ),
            max_reply_bytes: match self.max_reply_bytes {
                Some(0) => {
                    problems.add(
                        scope,
                        "max_reply_bytes",
                        format!(
                            "must be greater than 0; remove the key for the default ({})",
                            base.max_reply_bytes
                        ),
                    );
                    base.max_reply_bytes
                }
                Some(bytes) => bytes,
                None => base.max_reply_bytes,
            },
        }
    }

    fn resolve_resilience(
        &self,
        base: Resilience,
        scope: Scope<'_>,
        problems: &mut Problems,
    ) -> Resilience {
        let mut resilience = Resilience {
            backoff_base: positive(
                "backoff_base",
                self.backoff_base,
                base.backoff_base,
                scope,
                problems,
            ),
            backoff_max: positive(
                "backoff_max",
                self.backoff_max,
                base.backoff_max,
                scope,
                problems,
            ),
            rate_limit_fallback: positive(
                "rate_limit_fallback",
                self.rate_limit_fallback,
                base.rate_limit_fallback,
                scope,
                problems,
            ),
            retry_after_cap: positive(
                "retry_after_cap",
                self.retry_after_cap,
                base.retry_after_cap,
                scope,
                problems,
            ),
            auto_disable_threshold: base.auto_disable_threshold,
            reenable_after: base.reenable_after,
        };
        match self.auto_disable_threshold {
            Some(0) => problems.add(
                scope,
                "auto_disable_threshold",
                "must be at least 1 (consecutive transient failures that disable an endpoint), \
                 got 0",
            ),
            Some(threshold) => resilience.auto_disable_threshold = threshold,
            None => {}
        }
        match self.reenable_after {
            Some(Some(Duration::ZERO)) => problems.add(
                scope,
                "reenable_after",
                "must be greater than 0; write `never` to never re-enable",
            ),
            Some(after) => resilience.reenable_after = after,
            None => {}
        }
        resilience
    }

    /// Reports `backoff_max` below `backoff_base` and `rate_limit_fallback` above
    /// `retry_after_cap`, when at least one of the pair is set here.
    fn check_pairs(&self, resilience: &Resilience, scope: Scope<'_>, problems: &mut Problems) {
        if resilience.backoff_max < resilience.backoff_base
            && (self.backoff_max.is_some() || self.backoff_base.is_some())
        {
            let key = if self.backoff_max.is_some() {
                "backoff_max"
            } else {
                "backoff_base"
            };
            problems.add(
                scope,
                key,
                format!(
                    "backoff_max ({}) must not be less than backoff_base ({})",
                    humantime::format_duration(resilience.backoff_max),
                    humantime::format_duration(resilience.backoff_base)
                ),
            );
        }
        if resilience.rate_limit_fallback > resilience.retry_after_cap
            && (self.rate_limit_fallback.is_some() || self.retry_after_cap.is_some())
        {
            let key = if self.rate_limit_fallback.is_some() {
                "rate_limit_fallback"
            } else {
                "retry_after_cap"
            };
            problems.add(
                scope,
                key,
                format!(
                    "rate_limit_fallback ({}) must not exceed retry_after_cap ({})",
                    humantime::format_duration(resilience.rate_limit_fallback),
                    humantime::format_duration(resilience.retry_after_cap)
                ),
            );
        }
    }
}

/// `value` if set and positive, else `default`; a zero is reported.
fn positive(
    key: &str,
    value: Option<Duration>,
    default: Duration,
    scope: Scope<'_>,
    problems: &mut Problems,
) -> Duration {
    match value {
        Some(Duration::ZERO) => {
            problems.add(
                scope,
                key,
                format!(
                    "must be greater than 0; remove the key for the default ({})",
                    humantime::format_duration(default)
                ),
            );
            default
        }
        Some(value) => value,
        None => default,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{deployment, load};
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn deployment_overrides_top_level_knobs() {
        let mut east = deployment("east");
        east["request_timeout"] = json!("1500ms");
        east["backoff_max"] = json!(2.5);
        east["auto_disable_threshold"] = json!(2);
        east["reenable_after"] = json!("2m");
        east["max_in_flight"] = json!(3);
        let config = load(json!({
            "num_workers": 8,
            "request_timeout": 30,
            "connect_timeout": 0.25,
            "backoff_base": "500ms",
            "reenable_after": "10m",
            "job_deadline": "1h",
            "deployments": [east, deployment("west")],
        }))
        .unwrap();
        let east = config.deployment("east").unwrap();
        let west = config.deployment("west").unwrap();
        assert_eq!(east.timeouts.request, Duration::from_millis(1500));
        assert_eq!(west.timeouts.request, Duration::from_secs(30));
        assert_eq!(east.timeouts.connect, Duration::from_millis(250));
        assert_eq!(east.resilience.backoff_base, Duration::from_millis(500));
        assert_eq!(east.resilience.backoff_max, Duration::from_millis(2500));
        assert_eq!(west.resilience.backoff_max, Duration::from_secs(60));
        assert_eq!(east.resilience.auto_disable_threshold, 2);
        assert_eq!(west.resilience.auto_disable_threshold, 5);
        assert_eq!(
            east.resilience.reenable_after,
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            west.resilience.reenable_after,
            Some(Duration::from_secs(600))
        );
        assert_eq!(east.max_in_flight, 3);
        assert_eq!(west.max_in_flight, 8);
        assert_eq!(config.queue_capacity, 32);
        assert_eq!(config.job_deadline, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn reenable_after_defaults_to_30_s_and_never_turns_it_off() {
        let mut east = deployment("east");
        east["reenable_after"] = json!("never");
        let mut north = deployment("north");
        north["reenable_after"] = json!("NEVER");
        let config = load(json!({
            "deployments": [east, deployment("west"), north],
        }))
        .unwrap();
        let after = |name: &str| config.deployment(name).unwrap().resilience.reenable_after;
        assert_eq!(after("east"), None);
        assert_eq!(after("north"), None);
        assert_eq!(after("west"), Some(Duration::from_secs(30)));
        let top =
            load(json!({"reenable_after": "never", "deployments": [deployment("a")]})).unwrap();
        assert_eq!(top.deployments[0].resilience.reenable_after, None);
        let zero = load(json!({"reenable_after": 0, "deployments": [deployment("a")]}))
            .unwrap_err()
            .to_string();
        assert!(
            zero.contains("reenable_after: must be greater than 0; write `never`"),
            "{zero}"
        );
        let word = load(json!({"reenable_after": "later", "deployments": [deployment("a")]}))
            .unwrap_err()
            .to_string();
        assert!(
            word.contains("reenable_after: expected `never` or a duration"),
            "{word}"
        );
    }

    #[test]
    fn max_reply_bytes_defaults_to_64_mib_and_is_validated() {
        let mut east = deployment("east");
        east["max_reply_bytes"] = json!(1000);
        let config = load(json!({
            "max_reply_bytes": 2_000_000,
            "deployments": [east, deployment("west")],
        }))
        .unwrap();
        let bytes = |name: &str| config.deployment(name).unwrap().timeouts.max_reply_bytes;
        assert_eq!(bytes("east"), 1000);
        assert_eq!(bytes("west"), 2_000_000);
        let default = load(json!({"deployments": [deployment("a")]})).unwrap();
        assert_eq!(
            default.deployments[0].timeouts.max_reply_bytes,
            64 * 1024 * 1024
        );
        let mut zero = deployment("a");
        zero["max_reply_bytes"] = json!(0);
        let error = load(json!({"deployments": [zero]}))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "max_reply_bytes: must be greater than 0; remove the key for the default (67108864)"
            ),
            "{error}"
        );
        let negative = load(json!({"max_reply_bytes": -5, "deployments": [deployment("a")]}))
            .unwrap_err()
            .to_string();
        assert!(negative.contains("max_reply_bytes"), "{negative}");
    }
}
