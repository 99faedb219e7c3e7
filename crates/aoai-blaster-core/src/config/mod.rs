//! Configuration: the Python `azure-openai-blaster` schema, loaded unchanged, plus our own keys.
//!
//! Two layers:
//! - [`RawConfig`] / [`RawDeployment`] mirror the file as written (serde, every key optional so
//!   that a missing key is reported together with every other problem, not as the first error).
//! - [`BlasterConfig`] / [`DeploymentConfig`] hold only valid values with all defaults applied.
//!   [`RawConfig::validate`] turns one into the other and reports **every** problem at once,
//!   each naming its place and the fix, e.g.
//!   `deployments[1] ("west").weight: must be at least 1, got 0`.
//!
//! Files are read with the `config` crate (YAML, JSON or TOML by extension), and top-level keys
//! can be overridden from the environment as `AOAI_BLASTER__<KEY>` (two underscores, key in any
//! case: `AOAI_BLASTER__NUM_WORKERS=16`, `AOAI_BLASTER__REQUEST_TIMEOUT=90s`). Deployments are
//! configured in the file only.
//!
//! Durations accept a number of seconds (`30`, `0.5`, as in the Python package) or a string such
//! as `"1500ms"`, `"2m"` or `"1h 30m"`.
//!
//! ```
//! use aoai_blaster_core::config::{AuthConfig, BlasterConfig};
//!
//! let config = BlasterConfig::from_yaml_str(r#"
//! strategy: weighted
//! deployments:
//!   - name: east
//!     endpoint: https://east.openai.azure.com
//!     api_key: az
//!     model: gpt-4o
//!     weight: 2
//! num_workers: 16
//! "#)?;
//! let east = &config.deployments[0];
//! assert_eq!(east.auth, AuthConfig::AzureCli);
//! assert_eq!(
//!     east.chat_completions_url(),
//!     "https://east.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview"
//! );
//! assert_eq!(config.queue_capacity, 64); // 4 x num_workers
//! # Ok::<(), aoai_blaster_core::config::ConfigError>(())
//! ```
//!
//! One file per step: `raw` holds the file as written ([`RawConfig`], [`RawDeployment`]);
//! `knobs` the keys both levels share, written once ([`RawKnobs`]), and how they resolve (a
//! deployment's over the top level's over the defaults); `load` reads files, text and the
//! environment and reports every unreadable key; `validate` checks the values and applies the
//! defaults, reporting every problem at once; `duration` reads durations.

use std::fmt;
use std::time::Duration;

use crate::operation::{ApiStyle, Operation, Operations};
use crate::secret::Secret;

mod duration;
mod gateway;
mod guard;
mod knobs;
mod load;
mod raw;
mod shared;
mod validate;

pub use duration::parse_duration;
pub use gateway::{GatewayConfig, RawGateway};
pub use knobs::RawKnobs;
pub use load::{ConfigError, ConfigFormat};
pub use raw::{RawConfig, RawDeployment};
pub use shared::{DEFAULT_KEY_PREFIX, RawShared, RedisUrl, SharedConfig, SharedFallback};
pub use validate::{ConfigErrors, ConfigProblem};

/// `api_version` used when a deployment gives none (the Python package's default).
pub const DEFAULT_API_VERSION: &str = "2025-01-01-preview";
/// `num_workers` when not configured: the cap on jobs in flight overall.
pub const DEFAULT_NUM_WORKERS: usize = 64;
/// `max_job_retry` when not configured.
pub const DEFAULT_MAX_JOB_RETRY: u32 = 5;
/// `request_timeout` when not configured.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// `connect_timeout` when not configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `stream_idle_timeout` when not configured.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `backoff_base` when not configured.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// `backoff_max` when not configured.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// `rate_limit_fallback` when not configured (the Python package's 15 s).
pub const DEFAULT_RATE_LIMIT_FALLBACK: Duration = Duration::from_secs(15);
/// `retry_after_cap` when not configured.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(300);
/// `reenable_after` when not configured.
pub const DEFAULT_REENABLE_AFTER: Duration = crate::health::DEFAULT_REENABLE_AFTER;
/// `max_reply_bytes` when not configured: 64 MiB.
pub const DEFAULT_MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;
/// `auto_disable_threshold` when not configured.
pub const DEFAULT_AUTO_DISABLE_THRESHOLD: u32 = 5;
/// `queue_capacity` is this many times `num_workers` when not configured.
pub const QUEUE_CAPACITY_PER_WORKER: usize = 4;
/// `rpm_window` when not configured: RPM/60 requests in any second.
pub const DEFAULT_RPM_WINDOW: Duration = Duration::from_secs(1);
/// `max_wait` when not configured: how long a job may wait with no endpoint able to take it.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);
/// `tokenizer` when a deployment gives none.
pub const DEFAULT_TOKENIZER: &str = "o200k_base";
/// The encodings a deployment's `tokenizer` may name.
pub const TOKENIZERS: &[&str] = &[
    "o200k_base",
    "o200k_harmony",
    "cl100k_base",
    "p50k_base",
    "p50k_edit",
    "r50k_base",
];
/// Prefix of environment variables that override top-level keys: `AOAI_BLASTER__NUM_WORKERS`.
pub const ENV_PREFIX: &str = "AOAI_BLASTER";
/// Separator between [`ENV_PREFIX`] and the key.
pub const ENV_SEPARATOR: &str = "__";

/// A validated configuration: every value is usable as is and every default is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct BlasterConfig {
    /// How the Dispatcher picks an endpoint.
    pub strategy: StrategyKind,
    /// At least one deployment, names unique, in file order.
    pub deployments: Vec<DeploymentConfig>,
    /// Jobs in flight overall (at least 1).
    pub num_workers: usize,
    /// Retries of a failed job (429s do not count).
    pub max_job_retry: u32,
    /// Jobs that may wait in the queue (at least 1).
    pub queue_capacity: usize,
    /// Bound on a job's total time, retries included; `None`: unbounded.
    pub job_deadline: Option<Duration>,
    /// Longest a job waits while no endpoint that may serve it can take it (every one cooling
    /// or disabled), and longest it keeps meeting 429s that name no wait; then it fails with
    /// `no_endpoint_available` or `rate_limited`. Waits for quota (pacing) do not count.
    pub max_wait: Duration,
    /// The short window over which each `rpm_limit` is spread (1 ms to 60 s). Default 1 s.
    pub rpm_window: Duration,
    /// Threads of their own for the endpoint actors, shared round robin (more than there are
    /// deployments are not started). 0, the default: the endpoint actors run on the
    /// Dispatcher's thread, which costs least per job when one thread keeps up (it does to
    /// well over 10,000 jobs/s; see the README's benchmarks).
    pub endpoint_threads: usize,
    /// Several processes share the deployments' quotas through Redis (`shared:`); `None`: this
    /// process paces alone.
    pub shared: Option<SharedConfig>,
    /// The `gateway:` section (`aoai-blaster serve`).
    pub gateway: GatewayConfig,
    /// Things that are accepted but deserve attention (deprecated keys and the like), each
    /// naming its place. Log them at start-up.
    pub warnings: Vec<String>,
}

impl BlasterConfig {
    /// The deployment with this name.
    pub fn deployment(&self, name: &str) -> Option<&DeploymentConfig> {
        self.deployments.iter().find(|d| d.name == name)
    }
}

/// Routing strategies (`strategy:` in the file). See `aoai_blaster_core::strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StrategyKind {
    /// Smooth weighted round robin (the Python package's only strategy).
    #[default]
    Weighted,
    /// Prefer the endpoint with the most quota headroom relative to its limits.
    Capacity,
    /// Serve the group with the lowest `priority` value first; spill to the next group only
    /// while no endpoint of the first can admit the job.
    Priority,
    /// Power of two choices on a moving average of latency, among endpoints that can admit.
    Latency,
}

impl StrategyKind {
    /// Every strategy, in documentation order.
    pub const ALL: [StrategyKind; 4] = [
        StrategyKind::Weighted,
        StrategyKind::Capacity,
        StrategyKind::Priority,
        StrategyKind::Latency,
    ];

    /// The name used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Weighted => "weighted",
            StrategyKind::Capacity => "capacity",
            StrategyKind::Priority => "priority",
            StrategyKind::Latency => "latency",
        }
    }

    /// Parses a config name (case-insensitive, surrounding spaces ignored).
    pub fn parse(name: &str) -> Option<StrategyKind> {
        let name = name.trim();
        StrategyKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentConfig {
    /// Label in logs, reports and metrics (unique, not empty).
    pub name: String,
    /// Resource URL, `http(s)://host[:port]/[path/]`, always ending with `/`.
    pub endpoint: String,
    /// How requests authenticate.
    pub auth: AuthConfig,
    /// The Azure deployment name (goes in the URL).
    pub model: String,
    /// The `api-version` query parameter.
    pub api_version: String,
    /// Share in the weighted ring (at least 1).
    pub weight: u32,
    /// Default temperature, sent only when set (0 to 2).
    pub temperature: Option<f64>,
    /// Default `max_completion_tokens`, sent only when set (at least 1).
    pub max_completion_tokens: Option<u32>,
    /// Requests per minute (at least 1) or unlimited.
    pub rpm_limit: Option<u32>,
    /// Tokens per minute (at least 1) or unlimited.
    pub tpm_limit: Option<u64>,
    /// Jobs in flight on this deployment (at least 1).
    pub max_in_flight: usize,
    /// For the `priority` strategy: the lowest value is served first (e.g. 0 for provisioned
    /// deployments, 1 for pay-as-you-go).
    pub priority: i32,
    /// Token encoding for estimates, one of [`TOKENIZERS`].
    pub tokenizer: String,
    /// The operations it takes (`operations`; chat alone by default).
    pub operations: Operations,
    /// Whether the quota budget learns the limits from replies (see `quota::AdaptiveBudget`),
    /// with `rpm_limit`/`tpm_limit` as caps; true by default when neither is configured.
    pub adaptive: bool,
    /// Time bounds of one attempt.
    pub timeouts: Timeouts,
    /// Backoff, cooldown and disabling rules.
    pub resilience: Resilience,
}

impl DeploymentConfig {
    /// `{endpoint}openai/deployments/{model}/chat/completions?api-version={api_version}`.
    ///
    /// ```
    /// # use aoai_blaster_core::config::BlasterConfig;
    /// let config = BlasterConfig::from_value(serde_json::json!({"deployments": [
    ///     {"name": "a", "endpoint": "http://127.0.0.1:8080", "api_key": "k", "model": "m",
    ///      "api_version": "2024-10-21"}
    /// ]}))?;
    /// assert_eq!(
    ///     config.deployments[0].chat_completions_url(),
    ///     "http://127.0.0.1:8080/openai/deployments/m/chat/completions?api-version=2024-10-21"
    /// );
    /// # Ok::<(), aoai_blaster_core::config::ConfigError>(())
    /// ```
    pub fn chat_completions_url(&self) -> String {
        self.url(Operation::Chat)
    }

    /// How its URLs are formed: `api_version: v1` selects the v1 API.
    pub fn api_style(&self) -> ApiStyle {
        ApiStyle::of(&self.api_version)
    }

    /// The URL of `operation` here: `{endpoint}openai/deployments/{model}/{op}?api-version=...`,
    /// or with `api_version: v1`, `{endpoint}openai/v1/{op}` (the deployment goes in
    /// `body.model`, see [`body_model`](Self::body_model)).
    ///
    /// ```
    /// # use aoai_blaster_core::config::BlasterConfig;
    /// # use aoai_blaster_core::operation::Operation;
    /// let config = BlasterConfig::from_value(serde_json::json!({"deployments": [
    ///     {"name": "a", "endpoint": "http://127.0.0.1:8080", "api_key": "k", "model": "m",
    ///      "api_version": "v1", "operations": ["embeddings", "responses"]}
    /// ]}))?;
    /// let deployment = &config.deployments[0];
    /// assert_eq!(deployment.url(Operation::Responses), "http://127.0.0.1:8080/openai/v1/responses");
    /// assert_eq!(deployment.body_model(), Some("m"));
    /// # Ok::<(), aoai_blaster_core::config::ConfigError>(())
    /// ```
    pub fn url(&self, operation: Operation) -> String {
        self.api_style()
            .url_with_version(&self.endpoint, &self.model, operation, &self.api_version)
    }

    /// The `model` every request body names: the deployment, for the v1 API; none otherwise
    /// (the URL names it).
    pub fn body_model(&self) -> Option<&str> {
        (self.api_style() == ApiStyle::V1).then_some(self.model.as_str())
    }

    /// The defaults this deployment puts in every request body.
    pub fn request_defaults(&self) -> crate::chat::RequestDefaults {
        crate::chat::RequestDefaults {
            temperature: self.temperature,
            max_completion_tokens: self.max_completion_tokens,
        }
    }
}

/// Time and size bounds of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Whole attempt, from sending the request to the reply's last byte, streams included.
    /// Default 120 s.
    pub request: Duration,
    /// Opening the connection. Default 10 s.
    pub connect: Duration,
    /// Longest silence between two chunks of a stream. Default 30 s.
    pub stream_idle: Duration,
    /// Largest reply body read, plain or streamed (`max_reply_bytes`). Default 64 MiB.
    pub max_reply_bytes: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: DEFAULT_REQUEST_TIMEOUT,
            connect: DEFAULT_CONNECT_TIMEOUT,
            stream_idle: DEFAULT_STREAM_IDLE_TIMEOUT,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// How an endpoint reacts to failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resilience {
    /// Backoff after the first transient failure; doubles with the streak. Default 1 s.
    pub backoff_base: Duration,
    /// Longest backoff (not less than `backoff_base`). Default 60 s.
    pub backoff_max: Duration,
    /// Cooldown after a 429 with no retry hint. Default 15 s.
    pub rate_limit_fallback: Duration,
    /// A longer Retry-After disables the endpoint until then. Default 5 min.
    pub retry_after_cap: Duration,
    /// Consecutive transient failures that disable the endpoint (at least 1). Default 5.
    pub auto_disable_threshold: u32,
    /// Probe a disabled endpoint after this long (doubling after each failed probe, up to
    /// `backoff_max`); `None` (`never`): stay disabled. Default 30 s.
    pub reenable_after: Option<Duration>,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            rate_limit_fallback: DEFAULT_RATE_LIMIT_FALLBACK,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            auto_disable_threshold: DEFAULT_AUTO_DISABLE_THRESHOLD,
            reenable_after: Some(DEFAULT_REENABLE_AFTER),
        }
    }
}

/// How a deployment authenticates. `Debug` never shows a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// `api-key` header (from a literal key or `"env:VAR"`).
    ApiKey(Secret),
    /// Bearer token from the Azure CLI (`"az"` or `"azure_cli"`; run `az login` first).
    AzureCli,
    /// Bearer token from our default chain (`"default"`).
    Default,
    /// Bearer token from the managed identity (`"managed_identity"`).
    ManagedIdentity,
}

impl AuthConfig {
    /// A short description for reports, never the key: `api key`, `azure cli`, ...
    pub fn describe(&self) -> &'static str {
        match self {
            AuthConfig::ApiKey(_) => "api key",
            AuthConfig::AzureCli => "azure cli",
            AuthConfig::Default => "default credential chain",
            AuthConfig::ManagedIdentity => "managed identity",
        }
    }

    /// True for the credential kinds that send an `Authorization: Bearer` token.
    pub fn uses_bearer_token(&self) -> bool {
        !matches!(self, AuthConfig::ApiKey(_))
    }
}

/// Helpers the configuration's tests share.
#[cfg(test)]
mod test_support {
    use serde_json::{Value, json};

    use super::{BlasterConfig, ConfigError};

    pub(super) fn no_env(_: &str) -> Option<String> {
        None
    }

    pub(super) fn load(value: Value) -> Result<BlasterConfig, ConfigError> {
        BlasterConfig::from_value_with_env(value, &no_env)
    }

    pub(super) fn problems_of(value: Value) -> Vec<String> {
        match load(value) {
            Err(ConfigError::Invalid(errors)) => {
                errors.problems().iter().map(ToString::to_string).collect()
            }
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    pub(super) fn deployment(name: &str) -> Value {
        json!({"name": name, "endpoint": "https://x.openai.azure.com", "api_key": "k", "model": "gpt-4o"})
    }
}
