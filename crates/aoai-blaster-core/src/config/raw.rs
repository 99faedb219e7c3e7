//! The configuration as written: every key optional, so that a missing key is reported with
//! every other problem instead of as the first error.

use std::time::Duration;

use serde::Deserialize;

use super::duration::optional_duration;
use crate::secret::Secret;

/// Keys accepted at the top level of the file (kept in step with [`RawConfig`] by a test).
pub(super) const TOP_KEYS: &[&str] = &[
    "strategy",
    "deployments",
    "num_workers",
    "max_job_retry",
    "worker_polling_interval",
    "request_timeout",
    "connect_timeout",
    "stream_idle_timeout",
    "backoff_base",
    "backoff_max",
    "rate_limit_fallback",
    "retry_after_cap",
    "auto_disable_threshold",
    "reenable_after",
    "queue_capacity",
    "job_deadline",
    "rpm_window",
    "endpoint_threads",
];

/// Keys accepted in each `deployments[i]` entry (kept in step with [`RawDeployment`] by a test).
pub(super) const DEPLOYMENT_KEYS: &[&str] = &[
    "name",
    "endpoint",
    "api_key",
    "model",
    "api_version",
    "weight",
    "temperature",
    "max_completion_tokens",
    "rpm_limit",
    "tpm_limit",
    "max_in_flight",
    "priority",
    "tokenizer",
    "adaptive",
    "request_timeout",
    "connect_timeout",
    "stream_idle_timeout",
    "backoff_base",
    "backoff_max",
    "rate_limit_fallback",
    "retry_after_cap",
    "auto_disable_threshold",
    "reenable_after",
];

/// The configuration file as written: the Python package's keys plus ours, all optional.
///
/// Build it with serde (any format) or by hand, then call [`RawConfig::validate`]. Prefer the
/// loaders on [`BlasterConfig`](super::BlasterConfig): they also report type errors (a string where a number belongs)
/// together with the validation problems, each with its place.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Routing strategy: `weighted` (default), `capacity`, `priority` or `latency`.
    pub strategy: Option<String>,
    /// The deployments to spread traffic over.
    pub deployments: Vec<RawDeployment>,
    /// Jobs in flight overall (the Python package's worker count). Default 64.
    pub num_workers: Option<usize>,
    /// How many times a failed job is retried. Default 5.
    pub max_job_retry: Option<u32>,
    /// Accepted for compatibility with the Python package and ignored (actors do not poll).
    #[serde(deserialize_with = "optional_duration")]
    pub worker_polling_interval: Option<Duration>,
    /// Bound on one HTTP attempt. Default 120 s.
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
    /// Probe a disabled endpoint after this long. Default: never.
    #[serde(deserialize_with = "optional_duration")]
    pub reenable_after: Option<Duration>,
    /// Jobs waiting in the queue. Default 4 x `num_workers`.
    pub queue_capacity: Option<usize>,
    /// Bound on a job's total time, retries included. Default: none.
    #[serde(deserialize_with = "optional_duration")]
    pub job_deadline: Option<Duration>,
    /// The short window over which `rpm_limit` is spread (Azure counts 1 s or 10 s windows):
    /// at most `rpm_limit × rpm_window / 60 s` requests in any such span. Default 1 s.
    #[serde(deserialize_with = "optional_duration")]
    pub rpm_window: Option<Duration>,
    /// Threads of their own for the endpoint actors (shared round robin). Default 0: they run
    /// on the Dispatcher's thread.
    pub endpoint_threads: Option<usize>,
}

/// One `deployments[i]` entry as written. `name`, `endpoint`, `api_key` and `model` are
/// required; they default to empty here so that validation can report them missing together
/// with every other problem.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDeployment {
    /// Label in logs, reports and metrics.
    pub name: String,
    /// Resource URL, e.g. `https://my-resource.openai.azure.com/`.
    pub endpoint: String,
    /// A key, `"env:VAR"`, `"az"`/`"azure_cli"`, `"default"`, `"managed_identity"`
    /// (or `"interactive"`, which is rejected with advice).
    pub api_key: Secret,
    /// The Azure deployment name (it goes in the URL).
    pub model: String,
    /// Default `2025-01-01-preview`.
    pub api_version: Option<String>,
    /// Share in the weighted ring. Default 1.
    pub weight: Option<u32>,
    /// Sent only when set (o-series models reject it).
    pub temperature: Option<f64>,
    /// Sent as given when set.
    pub max_completion_tokens: Option<u32>,
    /// Requests per minute this deployment allows.
    pub rpm_limit: Option<u32>,
    /// Tokens per minute this deployment allows.
    pub tpm_limit: Option<u64>,
    /// Jobs in flight on this deployment. Default `num_workers`.
    pub max_in_flight: Option<usize>,
    /// Used by the `priority` strategy: the lowest value is served first. Default 0.
    pub priority: Option<i32>,
    /// Token encoding for estimates. Default `o200k_base`.
    pub tokenizer: Option<String>,
    /// Learn the limits from replies (`x-ratelimit-remaining-*`, 429s), never above
    /// `rpm_limit`/`tpm_limit` if given. Default: true when neither limit is configured.
    pub adaptive: Option<bool>,
    /// Overrides the top-level `request_timeout`.
    #[serde(deserialize_with = "optional_duration")]
    pub request_timeout: Option<Duration>,
    /// Overrides the top-level `connect_timeout`.
    #[serde(deserialize_with = "optional_duration")]
    pub connect_timeout: Option<Duration>,
    /// Overrides the top-level `stream_idle_timeout`.
    #[serde(deserialize_with = "optional_duration")]
    pub stream_idle_timeout: Option<Duration>,
    /// Overrides the top-level `backoff_base`.
    #[serde(deserialize_with = "optional_duration")]
    pub backoff_base: Option<Duration>,
    /// Overrides the top-level `backoff_max`.
    #[serde(deserialize_with = "optional_duration")]
    pub backoff_max: Option<Duration>,
    /// Overrides the top-level `rate_limit_fallback`.
    #[serde(deserialize_with = "optional_duration")]
    pub rate_limit_fallback: Option<Duration>,
    /// Overrides the top-level `retry_after_cap`.
    #[serde(deserialize_with = "optional_duration")]
    pub retry_after_cap: Option<Duration>,
    /// Overrides the top-level `auto_disable_threshold`.
    pub auto_disable_threshold: Option<u32>,
    /// Overrides the top-level `reenable_after`.
    #[serde(deserialize_with = "optional_duration")]
    pub reenable_after: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_lists_match_the_structs() {
        // serde names every accepted field when it rejects an unknown one.
        let expected_fields = |error: String| -> Vec<String> {
            let list = error.split("expected one of ").nth(1).unwrap().to_owned();
            let mut fields: Vec<String> = list
                .split(", ")
                .map(|f| f.trim_matches('`').to_owned())
                .collect();
            fields.sort();
            fields
        };
        let sorted = |keys: &[&str]| {
            let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            keys.sort();
            keys
        };
        let top = serde_json::from_value::<RawConfig>(json!({"zzz": 1})).unwrap_err();
        assert_eq!(expected_fields(top.to_string()), sorted(TOP_KEYS));
        let dep = serde_json::from_value::<RawDeployment>(json!({"zzz": 1})).unwrap_err();
        assert_eq!(expected_fields(dep.to_string()), sorted(DEPLOYMENT_KEYS));
    }
}
