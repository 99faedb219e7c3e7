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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::extra::kind_of;
use crate::secret::Secret;

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
/// `auto_disable_threshold` when not configured.
pub const DEFAULT_AUTO_DISABLE_THRESHOLD: u32 = 5;
/// `queue_capacity` is this many times `num_workers` when not configured.
pub const QUEUE_CAPACITY_PER_WORKER: usize = 4;
/// `rpm_window` when not configured: RPM/60 requests in any second.
pub const DEFAULT_RPM_WINDOW: Duration = Duration::from_secs(1);
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

/// Keys accepted at the top level of the file (kept in step with [`RawConfig`] by a test).
const TOP_KEYS: &[&str] = &[
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
const DEPLOYMENT_KEYS: &[&str] = &[
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

// ---------------------------------------------------------------------------------------------
// Raw (as written) configuration
// ---------------------------------------------------------------------------------------------

/// The configuration file as written: the Python package's keys plus ours, all optional.
///
/// Build it with serde (any format) or by hand, then call [`RawConfig::validate`]. Prefer the
/// loaders on [`BlasterConfig`]: they also report type errors (a string where a number belongs)
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

// ---------------------------------------------------------------------------------------------
// Valid configuration
// ---------------------------------------------------------------------------------------------

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
    /// The short window over which each `rpm_limit` is spread (1 ms to 60 s). Default 1 s.
    pub rpm_window: Duration,
    /// Threads of their own for the endpoint actors, shared round robin (more than there are
    /// deployments are not started). 0, the default: the endpoint actors run on the
    /// Dispatcher's thread, which costs least per job when one thread keeps up (it does to
    /// well over 10,000 jobs/s; see the README's benchmarks).
    pub endpoint_threads: usize,
    /// Things that are accepted but deserve attention (deprecated keys and the like), each
    /// naming its place. Log them at start-up.
    pub warnings: Vec<String>,
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
        format!(
            "{}openai/deployments/{}/chat/completions?api-version={}",
            self.endpoint, self.model, self.api_version
        )
    }

    /// The defaults this deployment puts in every request body.
    pub fn request_defaults(&self) -> crate::chat::RequestDefaults {
        crate::chat::RequestDefaults {
            temperature: self.temperature,
            max_completion_tokens: self.max_completion_tokens,
        }
    }
}

/// Time bounds of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Whole attempt (headers and body). Default 120 s.
    pub request: Duration,
    /// Opening the connection. Default 10 s.
    pub connect: Duration,
    /// Longest silence between two chunks of a stream. Default 30 s.
    pub stream_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: DEFAULT_REQUEST_TIMEOUT,
            connect: DEFAULT_CONNECT_TIMEOUT,
            stream_idle: DEFAULT_STREAM_IDLE_TIMEOUT,
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
    /// Probe a disabled endpoint after this long; `None`: stay disabled.
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
            reenable_after: None,
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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One thing wrong with a configuration: where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: `strategy`, `deployments[1] ("west").weight`, `environment variable ...`.
    pub place: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// Every problem found in a configuration (never empty). `Display` lists one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    problems: Vec<ConfigProblem>,
    origin: Option<String>,
}

impl ConfigErrors {
    /// The problems, top-level keys first, then deployments in file order.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    /// How many problems there are (at least 1).
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// Always false: a `ConfigErrors` holds at least one problem.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    fn with_origin(mut self, origin: &str) -> Self {
        self.origin = Some(origin.to_owned());
        self
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let plural = if count == 1 { "problem" } else { "problems" };
        match &self.origin {
            Some(origin) => write!(f, "invalid configuration in {origin} ({count} {plural}):")?,
            None => write!(f, "invalid configuration ({count} {plural}):")?,
        }
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file's extension does not say which format it is in.
    #[error(
        "cannot tell the format of config file {path}: name it *.yaml, *.yml, *.json or *.toml"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not valid YAML/JSON/TOML (or the environment overrides could not be merged).
    #[error("cannot parse {origin} as {format}: {message}")]
    Parse {
        /// The file name, or a description of the text.
        origin: String,
        /// The format it was read as.
        format: ConfigFormat,
        /// What the parser said (with line and column where it gives them).
        message: String,
    },
    /// The text parsed but the configuration is not valid.
    #[error("{0}")]
    Invalid(ConfigErrors),
}

impl From<ConfigErrors> for ConfigError {
    fn from(errors: ConfigErrors) -> Self {
        ConfigError::Invalid(errors)
    }
}

/// File formats the loaders read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// `.yaml` / `.yml`.
    Yaml,
    /// `.json`.
    Json,
    /// `.toml`.
    Toml,
}

impl ConfigFormat {
    /// The format a file name's extension names (case-insensitive), if any.
    pub fn from_path(path: &Path) -> Option<ConfigFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "yaml" | "yml" => Some(ConfigFormat::Yaml),
            "json" => Some(ConfigFormat::Json),
            "toml" => Some(ConfigFormat::Toml),
            _ => None,
        }
    }

    fn file_format(self) -> config::FileFormat {
        match self {
            ConfigFormat::Yaml => config::FileFormat::Yaml,
            ConfigFormat::Json => config::FileFormat::Json,
            ConfigFormat::Toml => config::FileFormat::Toml,
        }
    }
}

impl fmt::Display for ConfigFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigFormat::Yaml => "YAML",
            ConfigFormat::Json => "JSON",
            ConfigFormat::Toml => "TOML",
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl BlasterConfig {
    /// Reads a YAML/JSON/TOML file (by extension), applies `AOAI_BLASTER__<KEY>` overrides from
    /// the process environment, resolves `env:VAR` keys, and validates.
    pub fn from_file(path: impl AsRef<Path>) -> Result<BlasterConfig, ConfigError> {
        BlasterConfig::from_file_with_env(path, process_environment())
    }

    /// [`BlasterConfig::from_file`] with the environment given as `(name, value)` pairs
    /// (used both for `AOAI_BLASTER__` overrides and for `env:VAR` keys).
    pub fn from_file_with_env(
        path: impl AsRef<Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<BlasterConfig, ConfigError> {
        let path = path.as_ref();
        let format = ConfigFormat::from_path(path).ok_or_else(|| ConfigError::UnknownFormat {
            path: path.to_owned(),
        })?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        load_text(&text, format, &path.display().to_string(), environment)
    }

    /// Parses YAML text (no environment overrides; `env:VAR` keys read the process environment).
    pub fn from_yaml_str(text: &str) -> Result<BlasterConfig, ConfigError> {
        let environment = process_environment()
            .into_iter()
            .filter(|(name, _)| !name.starts_with(ENV_PREFIX));
        load_text(text, ConfigFormat::Yaml, "YAML text", environment)
    }

    /// Parses text in the given format with the given environment (overrides and `env:VAR`).
    pub fn from_str_with_env(
        text: &str,
        format: ConfigFormat,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<BlasterConfig, ConfigError> {
        load_text(text, format, &format!("{format} text"), environment)
    }

    /// Builds from a JSON value, e.g. `serde_json::json!({...})` (no overrides; `env:VAR` keys
    /// read the process environment).
    pub fn from_value(value: Value) -> Result<BlasterConfig, ConfigError> {
        BlasterConfig::from_value_with_env(value, &|name| std::env::var(name).ok())
    }

    /// [`BlasterConfig::from_value`] with `env:VAR` keys looked up by `env`.
    pub fn from_value_with_env(
        value: Value,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BlasterConfig, ConfigError> {
        let mut problems = Problems::default();
        let config = load_value(value, env, &mut problems);
        Ok(problems.finish(config)?)
    }

    /// The deployment with this name.
    pub fn deployment(&self, name: &str) -> Option<&DeploymentConfig> {
        self.deployments.iter().find(|d| d.name == name)
    }
}

fn process_environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

fn load_text(
    text: &str,
    format: ConfigFormat,
    origin: &str,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<BlasterConfig, ConfigError> {
    let environment: HashMap<String, String> = environment.into_iter().collect();
    let mut problems = Problems::default();
    let overrides = select_overrides(&environment, &mut problems);

    let parse_error = |message: String| ConfigError::Parse {
        origin: origin.to_owned(),
        format,
        message,
    };
    let settings = config::Config::builder()
        .add_source(config::File::from_str(text, format.file_format()))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(overrides.into_iter().collect())),
        )
        .build()
        .map_err(|e| parse_error(e.to_string()))?;
    let value: Value = settings
        .try_deserialize()
        .map_err(|e| parse_error(e.to_string()))?;

    let env = |name: &str| environment.get(name).cloned();
    let config = load_value(value, &env, &mut problems);
    problems
        .finish(config)
        .map_err(|errors| ConfigError::Invalid(errors.with_origin(origin)))
}

/// Picks the `AOAI_BLASTER__<KEY>` variables that name a top-level key; reports the others.
fn select_overrides(
    environment: &HashMap<String, String>,
    problems: &mut Problems,
) -> Vec<(String, String)> {
    let full_prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let mut names: Vec<&String> = environment.keys().collect();
    names.sort();
    let mut selected = Vec::new();
    for name in names {
        let Some(key) = name.strip_prefix(&full_prefix) else {
            if let Some(rest) = name.strip_prefix(&format!("{ENV_PREFIX}_")) {
                problems.warnings.push(format!(
                    "environment variable {name}: ignored; overrides take two underscores \
                     after the prefix, e.g. {full_prefix}{rest}"
                ));
            }
            continue;
        };
        let key = key.to_ascii_lowercase();
        let place = format!("environment variable {name}");
        if key == "deployments" || key.starts_with("deployments__") {
            problems.add_at(
                0,
                place,
                "deployments can only be configured in the config file; \
                 environment overrides reach top-level keys"
                    .to_owned(),
            );
        } else if !TOP_KEYS.contains(&key.as_str()) {
            problems.add_at(
                0,
                place,
                unknown_key_message(&key, TOP_KEYS, DEPLOYMENT_KEYS),
            );
        } else {
            problems.env_keys.insert(key, name.clone());
            selected.push((name.clone(), environment[name].clone()));
        }
    }
    selected
}

// ---------------------------------------------------------------------------------------------
// Problem collection
// ---------------------------------------------------------------------------------------------

/// Where a problem is: the top level or one deployment.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Top,
    Deployment { index: usize, name: &'a str },
}

#[derive(Default)]
struct Problems {
    /// (sort rank: 0 for top level, i + 1 for deployments[i]; the problem).
    list: Vec<(usize, ConfigProblem)>,
    warnings: Vec<String>,
    /// Keys already reported as unreadable: validation must not report them again.
    /// `None` index: top level; key `*`: the whole deployment.
    skip: HashSet<(Option<usize>, String)>,
    /// Top-level key -> environment variable that set it.
    env_keys: HashMap<String, String>,
}

impl Problems {
    fn place(&self, scope: Scope<'_>, key: &str) -> String {
        match scope {
            Scope::Top => match self.env_keys.get(key) {
                Some(var) => format!("{key} (set by {var})"),
                None => key.to_owned(),
            },
            Scope::Deployment { index, name } => {
                let mut place = format!("deployments[{index}]");
                if !name.is_empty() {
                    place.push_str(&format!(" ({name:?})"));
                }
                if !key.is_empty() {
                    place.push('.');
                    place.push_str(key);
                }
                place
            }
        }
    }

    fn add(&mut self, scope: Scope<'_>, key: &str, message: impl Into<String>) {
        let index = match scope {
            Scope::Top => None,
            Scope::Deployment { index, .. } => Some(index),
        };
        if self.skip.contains(&(index, key.to_owned()))
            || (index.is_some() && self.skip.contains(&(index, "*".to_owned())))
        {
            return;
        }
        let place = self.place(scope, key);
        self.add_at(index.map_or(0, |i| i + 1), place, message.into());
    }

    fn add_at(&mut self, rank: usize, place: String, message: String) {
        self.list.push((rank, ConfigProblem { place, message }));
    }

    fn warn(&mut self, scope: Scope<'_>, key: &str, message: impl fmt::Display) {
        let place = self.place(scope, key);
        self.warnings.push(format!("{place}: {message}"));
    }

    fn finish(mut self, config: Option<BlasterConfig>) -> Result<BlasterConfig, ConfigErrors> {
        match config {
            Some(mut config) if self.list.is_empty() => {
                self.warnings.append(&mut config.warnings);
                config.warnings = self.warnings;
                Ok(config)
            }
            _ => {
                // Stable: keeps discovery order within a scope.
                self.list.sort_by_key(|(rank, _)| *rank);
                let mut problems: Vec<ConfigProblem> =
                    self.list.into_iter().map(|(_, p)| p).collect();
                if problems.is_empty() {
                    problems.push(ConfigProblem {
                        place: "config".to_owned(),
                        message: "could not be read".to_owned(),
                    });
                }
                Err(ConfigErrors {
                    problems,
                    origin: None,
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// From a JSON value to RawConfig, reporting every unreadable key
// ---------------------------------------------------------------------------------------------

fn load_value(
    value: Value,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<BlasterConfig> {
    let raw = raw_from_value(value, problems)?;
    raw.check(env, problems)
}

fn raw_from_value(value: Value, problems: &mut Problems) -> Option<RawConfig> {
    let Value::Object(mut top) = value else {
        problems.add_at(
            0,
            "config".to_owned(),
            format!(
                "expected a map of settings (strategy, deployments, ...) at the top level, got {}",
                found(&value)
            ),
        );
        return None;
    };
    // Null means "not set", as in the Python package's dict.get().
    top.retain(|_, v| !v.is_null());
    if let Ok(raw) = serde_json::from_value::<RawConfig>(Value::Object(top.clone())) {
        return Some(raw);
    }

    let mut keys: Vec<String> = top.keys().cloned().collect();
    keys.sort();
    for key in keys {
        if key == "deployments" {
            if let Some(deployments) = top.get_mut("deployments")
                && !sanitize_deployments(deployments, problems)
            {
                top.remove("deployments");
                problems.skip.insert((None, "deployments".to_owned()));
            }
            continue;
        }
        if !TOP_KEYS.contains(&key.as_str()) {
            let place = problems.place(Scope::Top, &key);
            problems.add_at(
                0,
                place,
                unknown_key_message(&key, TOP_KEYS, DEPLOYMENT_KEYS),
            );
            top.remove(&key);
            continue;
        }
        let mut probe = Map::new();
        probe.insert(key.clone(), top[&key].clone());
        if let Err(error) = serde_json::from_value::<RawConfig>(Value::Object(probe)) {
            problems.add(Scope::Top, &key, describe_serde_error(&error));
            problems.skip.insert((None, key.clone()));
            top.remove(&key);
        }
    }
    match serde_json::from_value::<RawConfig>(Value::Object(top)) {
        Ok(raw) => Some(raw),
        Err(error) => {
            problems.add_at(0, "config".to_owned(), error.to_string());
            None
        }
    }
}

/// Removes unreadable parts of `deployments` after reporting them. False: not a list at all.
fn sanitize_deployments(deployments: &mut Value, problems: &mut Problems) -> bool {
    let Value::Array(entries) = deployments else {
        problems.add(
            Scope::Top,
            "deployments",
            format!(
                "expected a list of deployments (each with name, endpoint, api_key, model), got {}",
                found(deployments)
            ),
        );
        return false;
    };
    for (index, entry) in entries.iter_mut().enumerate() {
        let Value::Object(fields) = entry else {
            problems.add(
                Scope::Deployment { index, name: "" },
                "",
                format!(
                    "expected a map with name, endpoint, api_key and model, got {}",
                    found(entry)
                ),
            );
            problems.skip.insert((Some(index), "*".to_owned()));
            *entry = Value::Object(Map::new());
            continue;
        };
        fields.retain(|_, v| !v.is_null());
        if serde_json::from_value::<RawDeployment>(Value::Object(fields.clone())).is_ok() {
            continue;
        }
        let name = fields
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let scope = Scope::Deployment { index, name: &name };
        let mut keys: Vec<String> = fields.keys().cloned().collect();
        keys.sort();
        for key in keys {
            if !DEPLOYMENT_KEYS.contains(&key.as_str()) {
                problems.add(
                    scope,
                    &key,
                    unknown_key_message(&key, DEPLOYMENT_KEYS, TOP_KEYS),
                );
                fields.remove(&key);
                continue;
            }
            let mut probe = Map::new();
            probe.insert(key.clone(), fields[&key].clone());
            if let Err(error) = serde_json::from_value::<RawDeployment>(Value::Object(probe)) {
                problems.add(scope, &key, describe_serde_error(&error));
                problems.skip.insert((Some(index), key.clone()));
                fields.remove(&key);
            }
        }
    }
    true
}

/// What was found where something else belongs, in a config author's words: the value's
/// [`kind_of`] with the value itself for a scalar (`a string ("east")`, `a number (7)`),
/// `a map` for an object (YAML and TOML call it so) and `nothing (null)`.
fn found(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("{} ({b})", kind_of(value)),
        Value::Number(n) => format!("{} ({n})", kind_of(value)),
        Value::String(s) => format!("{} ({s:?})", kind_of(value)),
        Value::Array(_) => kind_of(value).to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

/// Serde's message with Rust type names replaced by words a config author knows.
fn describe_serde_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let replacements = [
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        (
            "expected a string",
            "expected a text value (put it in quotes)",
        ),
    ];
    for (from, to) in replacements {
        if let Some(rest) = message.strip_prefix("invalid type: ").and_then(|m| {
            m.find(from)
                .map(|at| format!("invalid type: {}{}{}", &m[..at], to, &m[at + from.len()..]))
        }) {
            return rest;
        }
        if message.contains(from) {
            return message.replace(from, to);
        }
    }
    message
}

fn unknown_key_message(key: &str, valid: &[&str], other_level: &[&str]) -> String {
    let top_level = std::ptr::eq(valid, TOP_KEYS);
    if other_level.contains(&key) {
        return if top_level {
            format!("`{key}` is set per deployment: move it under each entry of `deployments`")
        } else {
            format!("`{key}` is a top-level key: move it out of `deployments`")
        };
    }
    let closest = valid
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .min();
    match closest {
        Some((distance, candidate)) if distance <= 2 || candidate.starts_with(key) => {
            format!("unknown key; did you mean `{candidate}`?")
        }
        _ => format!("unknown key; valid keys here are {}", valid.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

impl RawConfig {
    /// Checks everything and applies defaults; `env:VAR` keys read the process environment.
    ///
    /// ```
    /// use aoai_blaster_core::config::{RawConfig, RawDeployment};
    ///
    /// let raw = RawConfig {
    ///     deployments: vec![RawDeployment { name: "west".into(), weight: Some(0), ..Default::default() }],
    ///     ..Default::default()
    /// };
    /// let errors = raw.validate().unwrap_err().to_string();
    /// assert!(errors.contains(r#"deployments[0] ("west").weight: must be at least 1, got 0"#));
    /// assert!(errors.contains(r#"deployments[0] ("west").endpoint: missing"#));
    /// ```
    pub fn validate(self) -> Result<BlasterConfig, ConfigErrors> {
        self.validate_with_env(&|name| std::env::var(name).ok())
    }

    /// [`RawConfig::validate`] with `env:VAR` keys looked up by `env` (for tests and embedding).
    pub fn validate_with_env(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BlasterConfig, ConfigErrors> {
        let mut problems = Problems::default();
        let config = self.check(env, &mut problems);
        problems.finish(config)
    }

    fn check(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Option<BlasterConfig> {
        let top = Scope::Top;
        let strategy = match &self.strategy {
            None => StrategyKind::Weighted,
            Some(name) => match StrategyKind::parse(name) {
                Some(kind) => kind,
                None => {
                    let valid: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.as_str()).collect();
                    problems.add(
                        top,
                        "strategy",
                        format!("unknown strategy {name:?}; use one of {}", valid.join(", ")),
                    );
                    StrategyKind::Weighted
                }
            },
        };

        let num_workers = self.num_workers.unwrap_or(DEFAULT_NUM_WORKERS);
        if num_workers == 0 {
            problems.add(
                top,
                "num_workers",
                "must be at least 1 (it is the number of jobs in flight), got 0",
            );
        }
        let queue_capacity = self
            .queue_capacity
            .unwrap_or(num_workers.saturating_mul(QUEUE_CAPACITY_PER_WORKER));
        if self.queue_capacity == Some(0) {
            problems.add(
                top,
                "queue_capacity",
                "must be at least 1 (jobs waiting for an endpoint), got 0",
            );
        }
        if self.job_deadline == Some(Duration::ZERO) {
            problems.add(
                top,
                "job_deadline",
                "must be greater than 0; remove the key for no deadline",
            );
        }
        let rpm_window = self.rpm_window.unwrap_or(DEFAULT_RPM_WINDOW);
        if rpm_window < Duration::from_millis(1) || rpm_window > Duration::from_secs(60) {
            problems.add(
                top,
                "rpm_window",
                format!(
                    "must be between 1ms and 60s (Azure counts 1s or 10s windows), got {}",
                    humantime::format_duration(rpm_window)
                ),
            );
        }
        if self.worker_polling_interval.is_some() {
            problems.warn(
                top,
                "worker_polling_interval",
                "accepted for compatibility and ignored: actors do not poll; remove the key",
            );
        }

        let top_knobs = Knobs::from_top(&self);
        let (top_timeouts, top_resilience) =
            top_knobs.resolve(Timeouts::default(), Resilience::default(), top, problems);

        if self.deployments.is_empty() && !problems.skip.contains(&(None, "deployments".into())) {
            problems.add(
                top,
                "deployments",
                "no deployments configured; add at least one entry with name, endpoint, \
                 api_key and model",
            );
        }

        let mut seen_names: HashMap<String, usize> = HashMap::new();
        let mut deployments = Vec::with_capacity(self.deployments.len());
        for (index, raw) in self.deployments.into_iter().enumerate() {
            let name = raw.name.clone();
            let scope = Scope::Deployment {
                index,
                name: name.trim(),
            };
            if name.trim().is_empty() {
                problems.add(
                    scope,
                    "name",
                    "missing; give each deployment a unique name (used in logs and reports)",
                );
            } else if let Some(first) = seen_names.get(&name) {
                problems.add(
                    scope,
                    "name",
                    format!(
                        "duplicate name {name:?} (also used by deployments[{first}]); \
                         names must be unique"
                    ),
                );
            } else {
                seen_names.insert(name.clone(), index);
            }
            let deployment = check_deployment(
                raw,
                scope,
                num_workers,
                top_timeouts,
                top_resilience,
                env,
                problems,
            );
            deployments.push(deployment);
        }

        Some(BlasterConfig {
            strategy,
            deployments,
            num_workers,
            max_job_retry: self.max_job_retry.unwrap_or(DEFAULT_MAX_JOB_RETRY),
            queue_capacity,
            job_deadline: self.job_deadline,
            rpm_window,
            endpoint_threads: self.endpoint_threads.unwrap_or(0),
            warnings: Vec::new(),
        })
    }
}

fn check_deployment(
    raw: RawDeployment,
    scope: Scope<'_>,
    num_workers: usize,
    top_timeouts: Timeouts,
    top_resilience: Resilience,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> DeploymentConfig {
    let endpoint = check_endpoint(&raw.endpoint, scope, problems);

    let model = raw.model.trim().to_owned();
    if model.is_empty() {
        problems.add(
            scope,
            "model",
            "missing; set it to the Azure deployment name (it goes in the URL)",
        );
    } else if let Some(bad) = model.chars().find(|c| is_unsafe_in_path(*c)) {
        problems.add(
            scope,
            "model",
            format!(
                "{model:?} contains {bad:?}; it must be the Azure deployment name \
                 (letters, digits, '-', '_', '.')"
            ),
        );
    }

    let api_version = raw
        .api_version
        .as_deref()
        .map(str::trim)
        .unwrap_or(DEFAULT_API_VERSION)
        .to_owned();
    if api_version.is_empty() {
        problems.add(
            scope,
            "api_version",
            format!("is empty; remove the key to use {DEFAULT_API_VERSION}"),
        );
    } else if let Some(bad) = api_version
        .chars()
        .find(|c| is_unsafe_in_path(*c) || *c == '&')
    {
        problems.add(
            scope,
            "api_version",
            format!("{api_version:?} contains {bad:?}; use a version like {DEFAULT_API_VERSION}"),
        );
    }

    let auth = match check_auth(&raw.api_key, env) {
        Ok(auth) => auth,
        Err(message) => {
            problems.add(scope, "api_key", message);
            AuthConfig::ApiKey(Secret::default())
        }
    };

    let weight = raw.weight.unwrap_or(1);
    if weight == 0 {
        problems.add(
            scope,
            "weight",
            "must be at least 1, got 0 (remove the deployment to stop sending it traffic)",
        );
    }
    if let Some(t) = raw.temperature
        && !(0.0..=2.0).contains(&t)
    {
        problems.add(
            scope,
            "temperature",
            format!("must be between 0 and 2, got {t}"),
        );
    }
    for (key, value) in [
        (
            "max_completion_tokens",
            raw.max_completion_tokens.map(u64::from),
        ),
        ("rpm_limit", raw.rpm_limit.map(u64::from)),
        ("tpm_limit", raw.tpm_limit),
        ("max_in_flight", raw.max_in_flight.map(|v| v as u64)),
    ] {
        if value == Some(0) {
            problems.add(
                scope,
                key,
                "must be at least 1, got 0 (remove the key for no limit)",
            );
        }
    }
    let tokenizer = raw
        .tokenizer
        .as_deref()
        .map(str::trim)
        .unwrap_or(DEFAULT_TOKENIZER)
        .to_owned();
    if !TOKENIZERS.contains(&tokenizer.as_str()) {
        problems.add(
            scope,
            "tokenizer",
            format!(
                "unknown encoding {tokenizer:?}; use one of {}",
                TOKENIZERS.join(", ")
            ),
        );
    }

    let (timeouts, resilience) =
        Knobs::from_deployment(&raw).resolve(top_timeouts, top_resilience, scope, problems);

    DeploymentConfig {
        name: raw.name.trim().to_owned(),
        endpoint,
        auth,
        model,
        api_version,
        weight,
        temperature: raw.temperature,
        max_completion_tokens: raw.max_completion_tokens,
        rpm_limit: raw.rpm_limit,
        tpm_limit: raw.tpm_limit,
        max_in_flight: raw.max_in_flight.unwrap_or(num_workers),
        priority: raw.priority.unwrap_or(0),
        tokenizer,
        adaptive: raw
            .adaptive
            .unwrap_or(raw.rpm_limit.is_none() && raw.tpm_limit.is_none()),
        timeouts,
        resilience,
    }
}

fn is_unsafe_in_path(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '%' | '\\')
}

const ENDPOINT_EXAMPLE: &str = "https://my-resource.openai.azure.com/";

fn check_endpoint(raw: &str, scope: Scope<'_>, problems: &mut Problems) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        problems.add(
            scope,
            "endpoint",
            format!("missing; set it to the resource URL, e.g. {ENDPOINT_EXAMPLE}"),
        );
        return String::new();
    }
    let url = match url::Url::parse(raw) {
        Ok(url) => url,
        Err(error) => {
            problems.add(
                scope,
                "endpoint",
                format!("{raw:?} is not a URL ({error}); use e.g. {ENDPOINT_EXAMPLE}"),
            );
            return raw.to_owned();
        }
    };
    let mut fault = None;
    if !matches!(url.scheme(), "http" | "https") {
        fault = Some(format!(
            "{raw:?} must start with https:// (or http:// for a local simulator)"
        ));
    } else if url.host_str().is_none_or(str::is_empty) {
        fault = Some(format!("{raw:?} has no host; use e.g. {ENDPOINT_EXAMPLE}"));
    } else if !url.username().is_empty() || url.password().is_some() {
        fault = Some("must not contain user:password@; put the key in api_key instead".to_owned());
    } else if url.query().is_some() || url.fragment().is_some() || url.path().contains("/openai/") {
        fault = Some(format!(
            "{raw:?} looks like a full request URL; give only the resource URL, \
             e.g. {ENDPOINT_EXAMPLE} (model and api_version are separate keys)"
        ));
    }
    if let Some(message) = fault {
        problems.add(scope, "endpoint", message);
        return raw.to_owned();
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        problems.warn(
            scope,
            "endpoint",
            "plain http sends credentials unencrypted; use https:// outside a local simulator",
        );
    }
    let mut normalised = url.to_string();
    if !normalised.ends_with('/') {
        normalised.push('/');
    }
    normalised
}

const AUTH_CHOICES: &str = "an api key, \"env:VAR\", \"az\" (after `az login`), \"default\" \
                            or \"managed_identity\"";

fn check_auth(raw: &Secret, env: &dyn Fn(&str) -> Option<String>) -> Result<AuthConfig, String> {
    let value = raw.expose().trim();
    if value.is_empty() {
        return Err(format!("missing; set it to {AUTH_CHOICES}"));
    }
    match value.to_ascii_lowercase().as_str() {
        "az" | "azure_cli" => return Ok(AuthConfig::AzureCli),
        "default" => return Ok(AuthConfig::Default),
        "managed_identity" => return Ok(AuthConfig::ManagedIdentity),
        "interactive" => {
            return Err(
                "interactive browser login has no Rust counterpart; use \"az\" \
                        (after `az login`), \"default\", \"managed_identity\", or an api key"
                    .to_owned(),
            );
        }
        _ => {}
    }
    if let Some(variable) = value.strip_prefix("env:") {
        let variable = variable.trim();
        if variable.is_empty() {
            return Err(
                "\"env:\" needs a variable name, e.g. \"env:AZURE_OPENAI_API_KEY\"".to_owned(),
            );
        }
        return match env(variable) {
            None => Err(format!(
                "environment variable {variable} is not set; export it, or put the key here"
            )),
            Some(key) if key.trim().is_empty() => Err(format!(
                "environment variable {variable} is set but empty; export the key in it"
            )),
            Some(key) => Ok(AuthConfig::ApiKey(Secret::new(key.trim()))),
        };
    }
    Ok(AuthConfig::ApiKey(Secret::new(value)))
}

/// The keys that exist both at the top level and per deployment.
struct Knobs {
    request_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    stream_idle_timeout: Option<Duration>,
    backoff_base: Option<Duration>,
    backoff_max: Option<Duration>,
    rate_limit_fallback: Option<Duration>,
    retry_after_cap: Option<Duration>,
    auto_disable_threshold: Option<u32>,
    reenable_after: Option<Duration>,
}

impl Knobs {
    fn from_top(raw: &RawConfig) -> Knobs {
        Knobs {
            request_timeout: raw.request_timeout,
            connect_timeout: raw.connect_timeout,
            stream_idle_timeout: raw.stream_idle_timeout,
            backoff_base: raw.backoff_base,
            backoff_max: raw.backoff_max,
            rate_limit_fallback: raw.rate_limit_fallback,
            retry_after_cap: raw.retry_after_cap,
            auto_disable_threshold: raw.auto_disable_threshold,
            reenable_after: raw.reenable_after,
        }
    }

    fn from_deployment(raw: &RawDeployment) -> Knobs {
        Knobs {
            request_timeout: raw.request_timeout,
            connect_timeout: raw.connect_timeout,
            stream_idle_timeout: raw.stream_idle_timeout,
            backoff_base: raw.backoff_base,
            backoff_max: raw.backoff_max,
            rate_limit_fallback: raw.rate_limit_fallback,
            retry_after_cap: raw.retry_after_cap,
            auto_disable_threshold: raw.auto_disable_threshold,
            reenable_after: raw.reenable_after,
        }
    }

    /// Applies the values set here over `base`, reporting those that are invalid, and the
    /// inconsistent pairs in which at least one value is set here.
    fn resolve(
        &self,
        base_timeouts: Timeouts,
        base_resilience: Resilience,
        scope: Scope<'_>,
        problems: &mut Problems,
    ) -> (Timeouts, Resilience) {
        let mut positive = |key: &str, value: Option<Duration>, default: Duration| match value {
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
        };
        let timeouts = Timeouts {
            request: positive(
                "request_timeout",
                self.request_timeout,
                base_timeouts.request,
            ),
            connect: positive(
                "connect_timeout",
                self.connect_timeout,
                base_timeouts.connect,
            ),
            stream_idle: positive(
                "stream_idle_timeout",
                self.stream_idle_timeout,
                base_timeouts.stream_idle,
            ),
        };
        let mut resilience = Resilience {
            backoff_base: positive(
                "backoff_base",
                self.backoff_base,
                base_resilience.backoff_base,
            ),
            backoff_max: positive("backoff_max", self.backoff_max, base_resilience.backoff_max),
            rate_limit_fallback: positive(
                "rate_limit_fallback",
                self.rate_limit_fallback,
                base_resilience.rate_limit_fallback,
            ),
            retry_after_cap: positive(
                "retry_after_cap",
                self.retry_after_cap,
                base_resilience.retry_after_cap,
            ),
            auto_disable_threshold: base_resilience.auto_disable_threshold,
            reenable_after: base_resilience.reenable_after,
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
            Some(Duration::ZERO) => problems.add(
                scope,
                "reenable_after",
                "must be greater than 0; remove the key to never re-enable",
            ),
            Some(after) => resilience.reenable_after = Some(after),
            None => {}
        }
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
        (timeouts, resilience)
    }
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<DurationValue>::deserialize(deserializer)?.map(|d| d.0))
}

/// A duration written as seconds (int or float) or as a humantime string.
struct DurationValue(Duration);

const DURATION_EXPECTED: &str =
    "a duration: a number of seconds (30, 0.5) or a string like \"1500ms\", \"2m\", \"1h 30m\"";

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationValue, E> {
                u64::try_from(v)
                    .map(|v| DurationValue(Duration::from_secs(v)))
                    .map_err(|_| E::custom(format!("must not be negative, got {v}")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationValue, E> {
                Duration::try_from_secs_f64(v)
                    .map(DurationValue)
                    .map_err(|_| E::custom(format!("expected {DURATION_EXPECTED}, got {v}")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses `"30"`, `"0.5"` (seconds) or a humantime string (`"1500ms"`, `"2m"`, `"1h 30m"`).
///
/// ```
/// # use std::time::Duration;
/// use aoai_blaster_core::config::parse_duration;
/// assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
/// assert!(parse_duration("soon").unwrap_err().contains("\"1500ms\""));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("expected {DURATION_EXPECTED}, got {text:?}"));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("expected {DURATION_EXPECTED}, got {text:?} ({error})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(value: Value) -> Result<BlasterConfig, ConfigError> {
        BlasterConfig::from_value_with_env(value, &no_env)
    }

    fn problems_of(value: Value) -> Vec<String> {
        match load(value) {
            Err(ConfigError::Invalid(errors)) => {
                errors.problems().iter().map(ToString::to_string).collect()
            }
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    fn deployment(name: &str) -> Value {
        json!({"name": name, "endpoint": "https://x.openai.azure.com", "api_key": "k", "model": "gpt-4o"})
    }

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

    #[test]
    fn minimal_config_gets_every_default() {
        let config = load(json!({"deployments": [deployment("a")]})).unwrap();
        assert_eq!(config.strategy, StrategyKind::Weighted);
        assert_eq!(config.num_workers, 64);
        assert_eq!(config.max_job_retry, 5);
        assert_eq!(config.queue_capacity, 256);
        assert_eq!(config.endpoint_threads, 0);
        assert_eq!(config.job_deadline, None);
        assert!(config.warnings.is_empty());
        let d = &config.deployments[0];
        assert_eq!(d.endpoint, "https://x.openai.azure.com/");
        assert_eq!(d.api_version, DEFAULT_API_VERSION);
        assert_eq!(d.weight, 1);
        assert_eq!(d.temperature, None);
        assert_eq!(d.max_in_flight, 64);
        assert_eq!(d.priority, 0);
        assert_eq!(d.tokenizer, "o200k_base");
        assert_eq!(d.timeouts, Timeouts::default());
        assert_eq!(d.timeouts.request, Duration::from_secs(120));
        assert_eq!(d.resilience, Resilience::default());
        assert_eq!(d.resilience.retry_after_cap, Duration::from_secs(300));
        assert_eq!(d.auth, AuthConfig::ApiKey(Secret::new("k")));
    }

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
    fn every_problem_is_reported_together() {
        let problems = problems_of(json!({
            "strategy": "fastest",
            "num_workers": 0,
            "backoff_base": "10s",
            "backoff_max": "5s",
            "deployments": [
                {"name": "east", "endpoint": "ftp://x", "api_key": "k", "model": "m", "temperature": 3.0},
                {"name": "west", "endpoint": "https://w.openai.azure.com", "api_key": "", "model": "", "weight": 0},
                {"name": "east", "endpoint": "not a url", "api_key": "k", "model": "m/x", "wieght": 2},
                {"name": "south", "endpoint": "https://s", "api_key": "k", "model": "m", "weight": "two", "tokenizer": "gpt2"},
            ],
        }));
        let expected = [
            r#"strategy: unknown strategy "fastest"; use one of weighted, capacity, priority, latency"#,
            "num_workers: must be at least 1 (it is the number of jobs in flight), got 0",
            "backoff_max: backoff_max (5s) must not be less than backoff_base (10s)",
            r#"deployments[0] ("east").endpoint: "ftp://x" must start with https://"#,
            r#"deployments[0] ("east").temperature: must be between 0 and 2, got 3"#,
            r#"deployments[1] ("west").model: missing; set it to the Azure deployment name"#,
            r#"deployments[1] ("west").api_key: missing; set it to an api key"#,
            r#"deployments[1] ("west").weight: must be at least 1, got 0"#,
            r#"deployments[2] ("east").wieght: unknown key; did you mean `weight`?"#,
            r#"deployments[2] ("east").name: duplicate name "east" (also used by deployments[0])"#,
            r#"deployments[2] ("east").endpoint: "not a url" is not a URL"#,
            r#"deployments[2] ("east").model: "m/x" contains '/'"#,
            r#"deployments[3] ("south").weight: invalid type: string "two", expected a whole number"#,
            r#"deployments[3] ("south").tokenizer: unknown encoding "gpt2"; use one of o200k_base"#,
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, expected) in problems.iter().zip(expected) {
            assert!(problem.starts_with(expected), "{problem:?} vs {expected:?}");
        }
    }

    #[test]
    fn empty_and_malformed_deployment_lists() {
        assert_eq!(
            problems_of(json!({})),
            [
                "deployments: no deployments configured; add at least one entry with name, \
              endpoint, api_key and model"
            ]
        );
        assert_eq!(
            problems_of(json!({"deployments": "east"})),
            [
                r#"deployments: expected a list of deployments (each with name, endpoint, api_key, model), got a string ("east")"#
            ]
        );
        assert_eq!(
            problems_of(json!({"deployments": [7, deployment("a")]})),
            [
                "deployments[0]: expected a map with name, endpoint, api_key and model, got a number (7)"
            ]
        );
        assert_eq!(
            problems_of(json!([1])),
            [
                "config: expected a map of settings (strategy, deployments, ...) at the top level, got a list"
            ]
        );
    }

    #[test]
    fn keys_at_the_wrong_level_say_where_they_belong() {
        let mut d = deployment("a");
        d["num_workers"] = json!(3);
        assert_eq!(
            problems_of(json!({"temperature": 0.5, "deployments": [d]})),
            [
                "temperature: `temperature` is set per deployment: move it under each entry of `deployments`",
                r#"deployments[0] ("a").num_workers: `num_workers` is a top-level key: move it out of `deployments`"#,
            ]
        );
    }

    #[test]
    fn auth_kinds_and_env_keys() {
        let with_key = |key: &str| {
            let mut d = deployment("a");
            d["api_key"] = json!(key);
            json!({"deployments": [d]})
        };
        let env = |name: &str| (name == "AOAI_KEY").then(|| " secret-from-env\n".to_owned());
        let auth = |key: &str| {
            BlasterConfig::from_value_with_env(with_key(key), &env)
                .map(|c| c.deployments[0].auth.clone())
        };
        assert_eq!(auth("az").unwrap(), AuthConfig::AzureCli);
        assert_eq!(auth("azure_cli").unwrap(), AuthConfig::AzureCli);
        assert_eq!(auth("default").unwrap(), AuthConfig::Default);
        assert_eq!(
            auth("managed_identity").unwrap(),
            AuthConfig::ManagedIdentity
        );
        assert_eq!(
            auth("env:AOAI_KEY").unwrap(),
            AuthConfig::ApiKey(Secret::new("secret-from-env"))
        );
        let unset = auth("env:NOT_SET").unwrap_err().to_string();
        assert!(
            unset.contains(
                r#"deployments[0] ("a").api_key: environment variable NOT_SET is not set"#
            ),
            "{unset}"
        );
        let interactive = auth("interactive").unwrap_err().to_string();
        assert!(interactive.contains(
            "api_key: interactive browser login has no Rust counterpart; use \"az\" (after `az login`), \
             \"default\", \"managed_identity\", or an api key"
        ), "{interactive}");
        assert!(
            auth("env:")
                .unwrap_err()
                .to_string()
                .contains("needs a variable name")
        );
    }

    #[test]
    fn secrets_never_appear_in_debug_or_errors() {
        let secret = "sk-4f2b9c-super-secret";
        let env = |name: &str| (name == "K").then(|| "env-secret-777".to_owned());
        let config = BlasterConfig::from_value_with_env(
            json!({"deployments": [
                {"name": "a", "endpoint": "https://a", "api_key": secret, "model": "m"},
                {"name": "b", "endpoint": "https://b", "api_key": "env:K", "model": "m"},
            ]}),
            &env,
        )
        .unwrap();
        let shown = format!("{config:?} {config:#?}");
        assert!(
            !shown.contains("super-secret") && !shown.contains("env-secret"),
            "{shown}"
        );
        assert!(shown.contains("ApiKey(Secret(***))"));
        let raw: RawConfig = serde_json::from_value(json!({"deployments": [
            {"name": "a", "api_key": secret}
        ]}))
        .unwrap();
        assert!(!format!("{raw:?}").contains("super-secret"));
        // An invalid config never echoes the key either.
        let errors = raw.validate_with_env(&no_env).unwrap_err();
        assert!(!format!("{errors} {errors:?}").contains("super-secret"));
    }

    #[test]
    fn endpoint_normalisation_and_mistakes() {
        let endpoint = |e: &str| {
            let mut d = deployment("a");
            d["endpoint"] = json!(e);
            load(json!({"deployments": [d]})).map(|c| c.deployments[0].endpoint.clone())
        };
        assert_eq!(
            endpoint("https://X.openai.azure.com").unwrap(),
            "https://x.openai.azure.com/"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8080/proxy").unwrap(),
            "http://127.0.0.1:8080/proxy/"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8080/proxy/").unwrap(),
            "http://127.0.0.1:8080/proxy/"
        );
        let pasted = endpoint(
            "https://x.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=1",
        )
        .unwrap_err()
        .to_string();
        assert!(
            pasted.contains("looks like a full request URL; give only the resource URL"),
            "{pasted}"
        );
        let remote_http = load(
            json!({"deployments": [{"name": "a", "endpoint": "http://10.0.0.1",
            "api_key": "k", "model": "m"}]}),
        )
        .unwrap();
        assert_eq!(
            remote_http.warnings,
            [
                r#"deployments[0] ("a").endpoint: plain http sends credentials unencrypted; use https:// outside a local simulator"#
            ]
        );
        let local = load(
            json!({"deployments": [{"name": "a", "endpoint": "http://localhost:1",
            "api_key": "k", "model": "m"}]}),
        )
        .unwrap();
        assert!(local.warnings.is_empty());
        assert!(
            endpoint("https://u:p@x.com")
                .unwrap_err()
                .to_string()
                .contains("user:password@")
        );
    }

    #[test]
    fn warnings_for_accepted_but_ignored_keys() {
        let config = load(json!({
            "strategy": "latency",
            "worker_polling_interval": 0.5,
            "deployments": [deployment("a")],
        }))
        .unwrap();
        assert_eq!(config.strategy, StrategyKind::Latency);
        assert_eq!(
            config.warnings,
            [
                "worker_polling_interval: accepted for compatibility and ignored: actors do not \
              poll; remove the key"
            ]
        );
    }

    #[test]
    fn rpm_window_and_adaptive_defaults_and_errors() {
        let config = load(json!({
            "deployments": [
                deployment("a"),
                {"name": "b", "endpoint": "https://b", "api_key": "k", "model": "m", "tpm_limit": 1000},
                {"name": "c", "endpoint": "https://c", "api_key": "k", "model": "m",
                 "rpm_limit": 6, "adaptive": true, "priority": -1},
            ],
        }))
        .unwrap();
        assert_eq!(config.rpm_window, DEFAULT_RPM_WINDOW);
        let adaptive: Vec<bool> = config.deployments.iter().map(|d| d.adaptive).collect();
        assert_eq!(adaptive, [true, false, true]);
        assert_eq!(config.deployments[2].priority, -1);
        let ten = load(
            json!({"rpm_window": "10s", "endpoint_threads": 2, "deployments": [deployment("a")]}),
        )
        .unwrap();
        assert_eq!(ten.rpm_window, Duration::from_secs(10));
        assert_eq!(ten.endpoint_threads, 2);
        let error = load(json!({"endpoint_threads": -1, "deployments": [deployment("a")]}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("endpoint_threads"), "{error}");
        let error = load(json!({"rpm_window": "2m", "deployments": [deployment("a")]}))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("rpm_window: must be between 1ms and 60s"),
            "{error}"
        );
    }

    #[test]
    fn durations_accept_seconds_and_humantime() {
        let timeout = |v: Value| {
            load(json!({"request_timeout": v, "deployments": [deployment("a")]}))
                .map(|c| c.deployments[0].timeouts.request)
        };
        assert_eq!(timeout(json!(90)).unwrap(), Duration::from_secs(90));
        assert_eq!(timeout(json!(1.5)).unwrap(), Duration::from_millis(1500));
        assert_eq!(timeout(json!("2m")).unwrap(), Duration::from_secs(120));
        assert_eq!(timeout(json!("45")).unwrap(), Duration::from_secs(45));
        let negative = timeout(json!(-1)).unwrap_err().to_string();
        assert!(
            negative.contains("request_timeout: must not be negative, got -1"),
            "{negative}"
        );
        let zero = timeout(json!(0)).unwrap_err().to_string();
        assert!(
            zero.contains("request_timeout: must be greater than 0"),
            "{zero}"
        );
        let word = timeout(json!("soon")).unwrap_err().to_string();
        assert!(
            word.contains("request_timeout: expected a duration"),
            "{word}"
        );
    }

    #[test]
    fn validate_on_a_hand_built_raw_config() {
        let raw = RawConfig {
            deployments: vec![RawDeployment {
                name: "a".into(),
                endpoint: "http://127.0.0.1:1".into(),
                api_key: Secret::new("k"),
                model: "m".into(),
                weight: Some(3),
                temperature: Some(0.2),
                ..Default::default()
            }],
            num_workers: Some(2),
            ..Default::default()
        };
        let config = raw.validate_with_env(&no_env).unwrap();
        assert_eq!(config.deployments[0].weight, 3);
        assert_eq!(config.deployments[0].temperature, Some(0.2));
        assert_eq!(config.queue_capacity, 8);
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("wieght", "weight"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("model", "model"), 0);
    }
}
