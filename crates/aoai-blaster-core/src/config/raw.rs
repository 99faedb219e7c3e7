//! The configuration as written: every key optional, so that a missing key is reported with
//! every other problem instead of as the first error.

use std::time::Duration;

use serde::Deserialize;

use super::duration::optional_duration;
use super::gateway::RawGateway;
use super::knobs::{KNOB_KEYS, RawKnobs};
use super::shared::RawShared;
use crate::secret::Secret;

/// Keys accepted at the top level of the file, in the order error messages list them (kept in
/// step with [`RawConfig`] by a test).
pub(super) const TOP_KEYS: &[&str] = &with_knobs::<22>(
    &[
        "strategy",
        "deployments",
        "num_workers",
        "max_job_retry",
        "worker_polling_interval",
    ],
    &[
        "queue_capacity",
        "job_deadline",
        "max_wait",
        "rpm_window",
        "endpoint_threads",
        "shared",
        "gateway",
    ],
);

/// Keys accepted in each `deployments[i]` entry (kept in step with [`RawDeployment`] by a test).
pub(super) const DEPLOYMENT_KEYS: &[&str] = &with_knobs::<25>(
    &[
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
        "operations",
    ],
    &[],
);

/// `before`, then [`KNOB_KEYS`], then `after`: one level's keys, with the shared ones written
/// once.
const fn with_knobs<const N: usize>(
    before: &[&'static str],
    after: &[&'static str],
) -> [&'static str; N] {
    assert!(before.len() + KNOB_KEYS.len() + after.len() == N);
    let mut keys = [""; N];
    let mut i = 0;
    while i < before.len() {
        keys[i] = before[i];
        i += 1;
    }
    let mut j = 0;
    while j < KNOB_KEYS.len() {
        keys[i + j] = KNOB_KEYS[j];
        j += 1;
    }
    let mut k = 0;
    while k < after.len() {
        keys[i + j + k] = after[k];
        k += 1;
    }
    keys
}

/// The configuration file as written: the Python package's keys plus ours, all optional.
///
/// Build it with serde (any format) or by hand, then call [`RawConfig::validate`]. Prefer the
/// loaders on [`BlasterConfig`](super::BlasterConfig): they also report type errors (a string where a number belongs)
/// together with the validation problems, each with its place.
///
/// Unknown keys are refused, by serde (which honours `deny_unknown_fields` beside the flattened
/// [`RawKnobs`], though its documentation does not promise it) and by the loaders, which check
/// every key by hand.
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
    /// The keys a deployment may override (`request_timeout`, `backoff_base`, ...): here,
    /// every deployment's default.
    #[serde(flatten)]
    pub knobs: RawKnobs,
    /// Jobs waiting in the queue. Default 4 x `num_workers`.
    pub queue_capacity: Option<usize>,
    /// Bound on a job's total time, retries included. Default: none.
    #[serde(deserialize_with = "optional_duration")]
    pub job_deadline: Option<Duration>,
    /// Longest a job waits with no endpoint able to take it (pacing waits do not count).
    /// Default 5 min.
    #[serde(deserialize_with = "optional_duration")]
    pub max_wait: Option<Duration>,
    /// The short window over which `rpm_limit` is spread (Azure counts 1 s or 10 s windows):
    /// at most `rpm_limit × rpm_window / 60 s` requests in any such span. Default 1 s.
    #[serde(deserialize_with = "optional_duration")]
    pub rpm_window: Option<Duration>,
    /// Threads of their own for the endpoint actors (shared round robin). Default 0: they run
    /// on the Dispatcher's thread.
    pub endpoint_threads: Option<usize>,
    /// Several processes sharing the deployments' quotas through Redis (`shared:`). Default:
    /// none, each process paces alone.
    pub shared: Option<RawShared>,
    /// What `aoai-blaster serve` needs: inbound keys, model aliases.
    pub gateway: Option<RawGateway>,
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
    /// Default `2025-01-01-preview`; `v1` selects the v1 API (`openai/v1/...`, the
    /// deployment in `body.model`).
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
    /// The operations this deployment takes: `chat`, `embeddings`, `responses` (the last only
    /// with `api_version: v1`). Default `[chat]`.
    pub operations: Option<Vec<String>>,
    /// The keys that override the top level's (`request_timeout`, `backoff_base`, ...).
    #[serde(flatten)]
    pub knobs: RawKnobs,
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
        let knobs = serde_json::from_value::<RawKnobs>(json!({"zzz": 1})).unwrap_err();
        assert_eq!(expected_fields(knobs.to_string()), sorted(&KNOB_KEYS));
        // The levels flatten the knobs in, so serde lists no fields for them: each listed key
        // must be read (a map is the wrong type for every one of them, which is no unknown key),
        // and an unlisted key refused.
        let top = |value| serde_json::from_value::<RawConfig>(value).map(drop);
        let entry = |value| serde_json::from_value::<RawDeployment>(value).map(drop);
        for (keys, parse) in [
            (TOP_KEYS, &top as &dyn Fn(_) -> _),
            (DEPLOYMENT_KEYS, &entry),
        ] {
            for key in keys {
                // A section (`shared`, `gateway`) is a map: a number is the wrong type for it.
                let wrong = if *key == "shared" || *key == "gateway" {
                    json!(7)
                } else {
                    json!({"zzz": 1})
                };
                let error = parse(json!({*key: wrong})).unwrap_err().to_string();
                assert!(!error.contains("unknown field"), "{key}: {error}");
            }
            let error = parse(json!({"zzz": 1})).unwrap_err().to_string();
            assert!(error.contains("unknown field `zzz`"), "{error}");
        }
    }
}
