//! The simulator's configuration: what a YAML/JSON/TOML file says, or what a test builds in code.
//!
//! Every field has a default, so a file (or a struct literal with `..Default::default()`) names
//! only what it changes. [`SimConfig::validate`] checks the whole tree and names the offending key.
//!
//! One file on purpose (about 1,000 lines, its tests apart): it is the schema users read, each
//! key with its documentation, default, builder and validation side by side.
//!
//! ```
//! use aoai_sim::{DeploymentSpec, FaultSpec, SimConfig};
//!
//! let config = SimConfig {
//!     deployments: vec![
//!         DeploymentSpec::new("gpt-4o").tpm(60_000),
//!         DeploymentSpec::new("flaky").tpm(10_000).faults(FaultSpec { p_500: 0.1, ..Default::default() }),
//!     ],
//!     ..Default::default()
//! };
//! assert!(config.validate().is_ok());
//! assert_eq!(config.deployments[0].effective_rpm(), Some(360));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::quota::{self, Limits};

/// The `api-key` accepted when a configuration names none.
pub const DEFAULT_API_KEY: &str = "sim-key";
/// The `Authorization: Bearer` token accepted when a configuration names none.
pub const DEFAULT_BEARER_TOKEN: &str = "sim-token";
/// Tokens charged for the completion when a request gives neither `max_tokens` nor
/// `max_completion_tokens` (configurable per deployment with `default_max_tokens`).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Requests per minute granted per 1,000 TPM when `rpm` is not given (the gpt-4o family's ratio).
pub const DEFAULT_RPM_PER_1000_TPM: u64 = 6;
/// Completion length (in tokens, one word each) when `max_tokens` does not cut it short.
pub const DEFAULT_REPLY_TOKENS: u64 = 40;
/// Floats per embedding vector when a request gives no `dimensions` (text-embedding-3-small's).
pub const DEFAULT_EMBEDDING_DIMENSIONS: u64 = 1536;
/// Tokens per minute of a deployment that does not say.
pub const DEFAULT_TPM: u64 = 60_000;
/// How long a "hang" fault holds a request before answering 408.
pub const DEFAULT_HANG_SECS: u64 = 600;
/// The `retry-after` of a `p_429` fault: a day, as when a daily quota is exhausted.
pub const DEFAULT_FAULT_RETRY_AFTER_SECS: u64 = 86_400;
/// From this many seconds on, a `p_429` fault's `retry_after_secs_f64` is written in exponent notation
/// (`1e30`) instead of as an integer: values no real server means, for clients to survive.
pub const ABSURD_RETRY_AFTER_SECS: f64 = 1e15;

/// The whole simulator: listeners, credentials, deployments.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed for every random draw (faults, jitter). Same seed and same request order, same run.
    pub seed: u64,
    /// Address of the shared listener (`127.0.0.1:0` picks a free port). Deployments on their own
    /// listener bind the same host with port 0.
    pub bind: String,
    /// actix-web worker threads per listener.
    pub workers: usize,
    /// Length of the short window over which RPM is enforced (`1s`: RPM/60 per second, `10s`:
    /// RPM/6 per 10 seconds, `60s`: RPM per 60 seconds), for every deployment that does not set
    /// its own [`DeploymentSpec::rpm_window`].
    pub rpm_window: RpmWindow,
    /// Where the simulator's time comes from: the wall clock, or a clock that only moves when a
    /// test calls [`SimHandle::advance_clock`](crate::SimHandle::advance_clock).
    pub clock: ClockMode,
    /// Accepted `api-key` header values.
    pub api_keys: Vec<String>,
    /// Accepted `Authorization: Bearer` tokens.
    pub bearer_tokens: Vec<String>,
    /// Serve a managed-identity token endpoint (App Service protocol) on the shared listener.
    pub managed_identity: Option<ManagedIdentitySpec>,
    /// The deployments served.
    pub deployments: Vec<DeploymentSpec>,
    /// Serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) on every listener with this certificate, instead
    /// of plain HTTP (the default).
    pub tls: Option<TlsFiles>,
}

/// The PEM files of an HTTPS listener (`tls:` in a file; `--tls-cert`/`--tls-key` on the
/// command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

/// The command-line flags that say where and how the simulator listens, shared by the
/// `aoai-sim` binary and `aoai-blaster sim`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListenFlags {
    /// Override the shared listener's address (e.g. 127.0.0.1:8080).
    #[arg(long)]
    pub bind: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl ListenFlags {
    /// Applies the flags given over what `config` says.
    pub fn apply(self, config: &mut SimConfig) {
        if let Some(bind) = self.bind {
            config.bind = bind;
        }
        if let (Some(cert_file), Some(key_file)) = (self.tls_cert, self.tls_key) {
            config.tls = Some(TlsFiles {
                cert_file,
                key_file,
            });
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            bind: "127.0.0.1:0".to_owned(),
            workers: 1,
            rpm_window: RpmWindow::default(),
            clock: ClockMode::default(),
            api_keys: vec![DEFAULT_API_KEY.to_owned()],
            bearer_tokens: vec![DEFAULT_BEARER_TOKEN.to_owned()],
            managed_identity: None,
            deployments: Vec::new(),
            tls: None,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("seed", &self.seed)
            .field("bind", &self.bind)
            .field("workers", &self.workers)
            .field("rpm_window", &self.rpm_window)
            .field("clock", &self.clock)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field(
                "bearer_tokens",
                &format_args!("[{} redacted]", self.bearer_tokens.len()),
            )
            .field("managed_identity", &self.managed_identity)
            .field("deployments", &self.deployments)
            .field("tls", &self.tls)
            .finish()
    }
}

impl SimConfig {
    /// Load a configuration file; the format follows the extension (`.yaml`/`.yml`, `.json`,
    /// `.toml`). The result is validated.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SimConfig, SimError> {
        let path = path.as_ref();
        let load_error = |source: config::ConfigError| SimError::Load {
            path: path.display().to_string(),
            source,
        };
        let config: SimConfig = config::Config::builder()
            .add_source(config::File::from(path))
            .build()
            .map_err(load_error)?
            .try_deserialize()
            .map_err(load_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Add a deployment (builder style).
    pub fn deployment(mut self, spec: DeploymentSpec) -> Self {
        self.deployments.push(spec);
        self
    }

    /// Use a clock that stands still until [`SimHandle::advance_clock`](crate::SimHandle::advance_clock)
    /// moves it (builder style; for tests).
    pub fn manual_clock(mut self) -> Self {
        self.clock = ClockMode::Manual;
        self
    }

    /// The short RPM window as a duration.
    pub fn rpm_window_duration(&self) -> Duration {
        self.rpm_window.duration()
    }

    /// Check every field; the error names the key and says how to fix it.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |msg: String| Err(SimError::Invalid(msg));
        if self.workers == 0 {
            return invalid("workers: 0 threads cannot serve anything; use 1 or more".to_owned());
        }
        if self.bind.parse::<std::net::SocketAddr>().is_err() {
            return invalid(format!(
                "bind: {:?} is not an IP address with a port; write it like \"127.0.0.1:0\"",
                self.bind
            ));
        }
        if self
            .api_keys
            .iter()
            .chain(&self.bearer_tokens)
            .any(String::is_empty)
        {
            return invalid(
                "api_keys/bearer_tokens: an empty key would accept requests with an empty header; remove it"
                    .to_owned(),
            );
        }
        if let Some(mi) = &self.managed_identity
            && (mi.identity_header.is_empty() || mi.access_token.is_empty())
        {
            return invalid(
                "managed_identity: identity_header and access_token must not be empty".to_owned(),
            );
        }
        if self.deployments.is_empty() {
            return invalid(
                "deployments: none configured; add at least one with a name".to_owned(),
            );
        }
        let mut names = HashSet::new();
        for (index, deployment) in self.deployments.iter().enumerate() {
            deployment.validate(index)?;
            if !names.insert(deployment.name.as_str()) {
                return invalid(format!(
                    "deployments[{index}].name: {:?} is used twice; deployment names must be unique",
                    deployment.name
                ));
            }
        }
        Ok(())
    }
}

/// The short window over which RPM is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpmWindow {
    /// RPM/60 requests per second.
    #[default]
    #[serde(rename = "1s")]
    OneSecond,
    /// RPM/6 requests per 10 seconds.
    #[serde(rename = "10s")]
    TenSeconds,
    /// RPM requests per 60 seconds (the request window is as long as the token minute).
    #[serde(rename = "60s")]
    SixtySeconds,
}

impl RpmWindow {
    /// The window's length.
    pub fn duration(self) -> Duration {
        match self {
            RpmWindow::OneSecond => Duration::from_secs(1),
            RpmWindow::TenSeconds => Duration::from_secs(10),
            RpmWindow::SixtySeconds => Duration::from_secs(60),
        }
    }
}

/// What a request is charged against the TPM quota on arrival (Azure does not document its
/// exact estimate; each mode is one rule it might follow). Every mode multiplies by
/// `max(n, best_of)` and takes `max_tokens` as `max_completion_tokens`, else `max_tokens`, else
/// the deployment's `default_max_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCharge {
    /// The per-message prompt estimate ([`estimate_prompt_tokens`](crate::quota::estimate_prompt_tokens):
    /// 3 per message + its text characters / 4 rounded up, + 3) plus `max_tokens`.
    #[default]
    PromptPlusMax,
    /// `max_tokens` alone: the prompt costs nothing.
    MaxOnly,
    /// All the messages' text characters / 4, rounded up once (no per-message or per-request
    /// tokens), plus `max_tokens`.
    CharsPlusMax,
}

/// Whether the token minute and the request window are fixed or sliding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaWindow {
    /// Windows that turn at the simulator's start + k × length (`[0, 60 s)`, `[60 s, 120 s)`,
    /// ...): usage drops to zero at each turn.
    #[default]
    Fixed,
    /// Windows over the last length: at time t a request admitted at a counts while
    /// `t - a < length`.
    Sliding,
}

/// What the `x-ratelimit-remaining-requests` / `-tokens` headers say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemainingHeaders {
    /// What is left in the current windows (the request header only when an RPM limit applies).
    #[default]
    Exact,
    /// `-1` in both headers, on every reply that carries them (as Azure's Responses API has been
    /// seen to answer): the client cannot know what is left.
    Unknown,
}

/// Where the simulator's time comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// Wall-clock time since the simulator started.
    #[default]
    Real,
    /// Starts at zero and moves only through `SimHandle::advance_clock` (tests).
    Manual,
}

/// The managed-identity token endpoint (App Service protocol, as `IDENTITY_ENDPOINT` /
/// `IDENTITY_HEADER` describe it).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagedIdentitySpec {
    /// The value the client must send in `X-IDENTITY-HEADER` (its `IDENTITY_HEADER`).
    pub identity_header: String,
    /// The token handed out; it is then accepted as a bearer token.
    pub access_token: String,
    /// Lifetime announced in `expires_on`.
    pub expires_in_secs: u64,
}

impl Default for ManagedIdentitySpec {
    fn default() -> Self {
        ManagedIdentitySpec {
            identity_header: "sim-identity-header".to_owned(),
            access_token: "sim-mi-token".to_owned(),
            expires_in_secs: 3600,
        }
    }
}

impl fmt::Debug for ManagedIdentitySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentitySpec")
            .field("identity_header", &"<redacted>")
            .field("access_token", &"<redacted>")
            .field("expires_in_secs", &self.expires_in_secs)
            .finish()
    }
}

/// Which listener (TCP port) serves a deployment.
///
/// In files: `shared` (the main listener, the default), `own` (a port of its own), or any other
/// name: deployments giving the same name share that port, like deployments of one Azure resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Listener {
    /// The main listener ([`SimHandle::base_url`](crate::SimHandle::base_url)).
    #[default]
    Shared,
    /// A listener for this deployment alone.
    Own,
    /// A listener shared by every deployment naming it.
    Named(String),
}

impl From<String> for Listener {
    fn from(value: String) -> Self {
        match value.as_str() {
            "shared" => Listener::Shared,
            "own" => Listener::Own,
            _ => Listener::Named(value),
        }
    }
}

impl From<Listener> for String {
    fn from(value: Listener) -> Self {
        match value {
            Listener::Shared => "shared".to_owned(),
            Listener::Own => "own".to_owned(),
            Listener::Named(name) => name,
        }
    }
}

/// One deployment: its quota, reply shape, latency, faults and outages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploymentSpec {
    /// The deployment name (URL path segment, or `model` on the v1 route).
    pub name: String,
    /// Model name reported in replies (defaults to the deployment name).
    pub model: Option<String>,
    /// Tokens-per-minute quota.
    pub tpm: u64,
    /// Requests-per-minute quota; absent: `tpm / 1000 * rpm_per_1000_tpm` (none for provisioned).
    pub rpm: Option<u64>,
    /// RPM granted per 1,000 TPM when `rpm` is absent.
    pub rpm_per_1000_tpm: u64,
    /// Provisioned (PTU): answer 429 whenever the minute's utilisation is over 100%, instead of
    /// refusing any request that would not fit.
    pub provisioned: bool,
    /// Completion tokens charged when the request gives no `max_tokens`/`max_completion_tokens`.
    pub default_max_tokens: u64,
    /// What a request is charged against the TPM quota on arrival.
    pub token_charge: TokenCharge,
    /// The request window of this deployment; absent: [`SimConfig::rpm_window`].
    pub rpm_window: Option<RpmWindow>,
    /// Whether its token minute and request window are fixed or sliding.
    pub window: QuotaWindow,
    /// What its `x-ratelimit-remaining-*` headers say.
    pub remaining_headers: RemainingHeaders,
    /// Completion length when `max_tokens` allows it (finish `stop`), else cut to `max_tokens`
    /// (finish `length`).
    pub reply_tokens: u64,
    /// Floats per embedding vector when a request gives no `dimensions`.
    pub embedding_dimensions: u64,
    /// Which listener serves it.
    pub listener: Listener,
    /// Latency model.
    pub latency: LatencySpec,
    /// Fault probabilities.
    pub faults: FaultSpec,
    /// Scheduled outages.
    pub outages: Vec<OutageSpec>,
    /// Which retry headers its 429 replies carry (quota refusals, `p_429` faults and
    /// `status_429` outages alike); empty: none, and the message names no wait.
    pub retry_headers: RetryHeaders,
    /// Successful replies send a few bytes every so often before completing (or never
    /// completing); `None`: off.
    pub trickle: Option<TrickleSpec>,
    /// Successful replies are padded to at least this many bytes (0: off): a plain reply's
    /// content grows, a stream gets extra content deltas before its finish chunk.
    pub reply_bytes: u64,
}

impl Default for DeploymentSpec {
    fn default() -> Self {
        DeploymentSpec {
            name: String::new(),
            model: None,
            tpm: DEFAULT_TPM,
            rpm: None,
            rpm_per_1000_tpm: DEFAULT_RPM_PER_1000_TPM,
            provisioned: false,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            token_charge: TokenCharge::default(),
            rpm_window: None,
            window: QuotaWindow::default(),
            remaining_headers: RemainingHeaders::default(),
            reply_tokens: DEFAULT_REPLY_TOKENS,
            embedding_dimensions: DEFAULT_EMBEDDING_DIMENSIONS,
            listener: Listener::Shared,
            latency: LatencySpec::default(),
            faults: FaultSpec::default(),
            outages: Vec::new(),
            retry_headers: RetryHeaders::AZURE,
            trickle: None,
            reply_bytes: 0,
        }
    }
}

impl DeploymentSpec {
    /// A deployment with every default ([`DEFAULT_TPM`], derived RPM, no latency, no faults).
    pub fn new(name: impl Into<String>) -> Self {
        DeploymentSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Set the TPM quota.
    pub fn tpm(mut self, tpm: u64) -> Self {
        self.tpm = tpm;
        self
    }

    /// Set the RPM quota explicitly.
    pub fn rpm(mut self, rpm: u64) -> Self {
        self.rpm = Some(rpm);
        self
    }

    /// Set the RPM-per-1,000-TPM ratio used when `rpm` is absent.
    pub fn rpm_per_1000_tpm(mut self, ratio: u64) -> Self {
        self.rpm_per_1000_tpm = ratio;
        self
    }

    /// Make it a provisioned (PTU) deployment.
    pub fn provisioned(mut self) -> Self {
        self.provisioned = true;
        self
    }

    /// Set the completion tokens charged when a request gives no maximum.
    pub fn default_max_tokens(mut self, tokens: u64) -> Self {
        self.default_max_tokens = tokens;
        self
    }

    /// Choose what a request is charged on arrival.
    pub fn token_charge(mut self, charge: TokenCharge) -> Self {
        self.token_charge = charge;
        self
    }

    /// Give it a request window of its own (instead of [`SimConfig::rpm_window`]).
    pub fn rpm_window(mut self, window: RpmWindow) -> Self {
        self.rpm_window = Some(window);
        self
    }

    /// Make its windows fixed or sliding.
    pub fn window(mut self, window: QuotaWindow) -> Self {
        self.window = window;
        self
    }

    /// Choose what its `x-ratelimit-remaining-*` headers say.
    pub fn remaining_headers(mut self, remaining: RemainingHeaders) -> Self {
        self.remaining_headers = remaining;
        self
    }

    /// Set the natural completion length.
    pub fn reply_tokens(mut self, tokens: u64) -> Self {
        self.reply_tokens = tokens;
        self
    }

    /// Set the floats per embedding vector when a request gives no `dimensions`.
    pub fn embedding_dimensions(mut self, dimensions: u64) -> Self {
        self.embedding_dimensions = dimensions;
        self
    }

    /// Put it on a listener of its own.
    pub fn own_listener(mut self) -> Self {
        self.listener = Listener::Own;
        self
    }

    /// Choose its listener.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listener = listener;
        self
    }

    /// Set the latency model.
    pub fn latency(mut self, latency: LatencySpec) -> Self {
        self.latency = latency;
        self
    }

    /// Set the fault probabilities.
    pub fn faults(mut self, faults: FaultSpec) -> Self {
        self.faults = faults;
        self
    }

    /// Add a scheduled outage.
    pub fn outage(mut self, outage: OutageSpec) -> Self {
        self.outages.push(outage);
        self
    }

    /// Choose the retry headers of its 429 replies ([`RetryHeaders::NONE`]: headerless 429s).
    pub fn retry_headers(mut self, headers: RetryHeaders) -> Self {
        self.retry_headers = headers;
        self
    }

    /// Make its successful replies trickle (see [`TrickleSpec`]).
    pub fn trickle(mut self, trickle: TrickleSpec) -> Self {
        self.trickle = Some(trickle);
        self
    }

    /// Pad its successful replies to at least `bytes` bytes (0: off).
    pub fn reply_bytes(mut self, bytes: u64) -> Self {
        self.reply_bytes = bytes;
        self
    }

    /// The model name put in replies.
    pub fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or(&self.name)
    }

    /// The RPM limit in force: `rpm` if given; none for a provisioned deployment without `rpm`;
    /// else `tpm * rpm_per_1000_tpm / 1000` (rounded down).
    pub fn effective_rpm(&self) -> Option<u64> {
        match (self.rpm, self.provisioned) {
            (Some(rpm), _) => Some(rpm),
            (None, true) => None,
            (None, false) => Some(self.tpm.saturating_mul(self.rpm_per_1000_tpm) / 1000),
        }
    }

    /// Its request window's length: its own `rpm_window`, else the simulator's.
    pub fn rpm_window_duration(&self, config: &SimConfig) -> Duration {
        self.rpm_window.unwrap_or(config.rpm_window).duration()
    }

    /// Its quota limits, with the simulator-wide `rpm_window` as the fallback.
    pub fn limits(&self, config: &SimConfig) -> Limits {
        let window = self.rpm_window_duration(config);
        let limits = if self.provisioned {
            Limits::provisioned(self.tpm, self.effective_rpm(), window)
        } else {
            Limits::standard(self.tpm, self.effective_rpm(), window)
        };
        limits.with_window(self.window)
    }

    /// What a request with these `messages`, `max_tokens` (`max_completion_tokens` when given)
    /// and `n`/`best_of` is charged here on arrival, by its [`token_charge`](Self::token_charge).
    pub fn charge(
        &self,
        messages: &[serde_json::Value],
        max_tokens: Option<u64>,
        n: u64,
        best_of: Option<u64>,
    ) -> u64 {
        quota::charge_by(
            self.token_charge,
            messages,
            max_tokens,
            self.default_max_tokens,
            n,
            best_of,
        )
    }

    fn validate(&self, index: usize) -> Result<(), SimError> {
        let at = format!("deployments[{index}]");
        let invalid = |msg: String| Err(SimError::Invalid(msg));
        if self.name.is_empty() || self.name.contains('/') {
            return invalid(format!(
                "{at}.name: {:?} cannot be a deployment name; give the Azure deployment name (no '/')",
                self.name
            ));
        }
        let at = format!("{at} ({:?})", self.name);
        if self.tpm == 0 {
            return invalid(format!(
                "{at}.tpm: 0 admits nothing; give a positive TPM quota"
            ));
        }
        if self.rpm == Some(0) {
            return invalid(format!(
                "{at}.rpm: 0 admits nothing; give a positive RPM or leave it out to derive it"
            ));
        }
        if self.default_max_tokens == 0 {
            return invalid(format!(
                "{at}.default_max_tokens: must be at least 1 (it is what a request without max_tokens is charged)"
            ));
        }
        if self.reply_tokens == 0 {
            return invalid(format!(
                "{at}.reply_tokens: must be at least 1 (the reply carries the request digest)"
            ));
        }
        if self.embedding_dimensions == 0 {
            return invalid(format!(
                "{at}.embedding_dimensions: must be at least 1 (1536 is text-embedding-3-small's)"
            ));
        }
        self.faults.validate(&at)?;
        if let Some(trickle) = &self.trickle {
            trickle.validate(&at)?;
            if self.reply_bytes > 0 {
                return invalid(format!(
                    "{at}: trickle and reply_bytes cannot be combined; put them on two deployments"
                ));
            }
        }
        for (i, outage) in self.outages.iter().enumerate() {
            if outage.from_secs >= outage.to_secs {
                return invalid(format!(
                    "{at}.outages[{i}]: from_secs {} is not before to_secs {}; an outage needs from_secs < to_secs",
                    outage.from_secs, outage.to_secs
                ));
            }
            if outage.mode == OutageMode::Refuse && self.listener == Listener::Shared {
                return invalid(format!(
                    "{at}.outages[{i}]: mode refuse needs the deployment on its own listener; set `listener: own`"
                ));
            }
        }
        Ok(())
    }
}

/// Latency model: time to first token + per-token time × completion tokens + uniform jitter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencySpec {
    /// Time to first token, in milliseconds.
    pub ttft_ms: u64,
    /// Time per completion token, in milliseconds.
    pub per_token_ms: u64,
    /// Up to this many milliseconds added to the time to first token (uniform, seeded).
    pub jitter_ms: u64,
}

impl LatencySpec {
    /// True when no delay is configured at all (the reply path then touches no timer).
    pub fn is_zero(&self) -> bool {
        self.ttft_ms == 0 && self.per_token_ms == 0 && self.jitter_ms == 0
    }
}

/// Fault probabilities, drawn once per admitted request from the deployment's seeded RNG.
/// Their sum must not exceed 1. Stream-only faults do nothing to non-streaming requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSpec {
    /// 500 `InternalServerError`.
    pub p_500: f64,
    /// 503 `ServiceUnavailable` (engine overloaded).
    pub p_503: f64,
    /// Hold the request for `hang_secs` without replying (then 408).
    pub p_hang: f64,
    /// Send headers and part of the body, then abort the connection.
    pub p_drop: f64,
    /// Streams only: stop after some deltas without `[DONE]`, aborting the connection.
    pub p_stream_cut: f64,
    /// Streams only: after some deltas send `data: {"error": {...}}` and end the stream.
    pub p_stream_error: f64,
    /// 400 `content_filter` (`innererror.code` = `ResponsibleAIPolicyViolation`).
    pub p_content_filter: f64,
    /// 200 whose body is not JSON.
    pub p_not_json: f64,
    /// Streams only: after some deltas, send nothing more for `hang_secs`, then abort the
    /// connection (a stalled stream: the idle timeout must cut it).
    pub p_stream_stall: f64,
    /// 429 whatever the quota, with `retry_after_secs` (a quota exhausted for hours or a day),
    /// in the deployment's [`retry_headers`](DeploymentSpec::retry_headers).
    pub p_429: f64,
    /// How long a hang (or a stalled stream) lasts, in seconds.
    pub hang_secs: u64,
    /// The wait a `p_429` fault names, in seconds: `retry-after` carries it, `retry-after-ms`
    /// and `x-ms-retry-after-ms` in milliseconds, the message as "Please retry after N
    /// seconds.".
    pub retry_after_secs: u64,
    /// The wait as a float number of seconds, instead of `retry_after_secs`: fractions (rounded
    /// up: `retry-after` to whole seconds, the millisecond headers to milliseconds), or values
    /// from [`ABSURD_RETRY_AFTER_SECS`] on, written in exponent notation (`1e30`:
    /// `retry-after: 1e30`, `retry-after-ms: 1e33`, "Please retry after 1e30 seconds.").
    pub retry_after_secs_f64: Option<f64>,
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            p_500: 0.0,
            p_503: 0.0,
            p_hang: 0.0,
            p_drop: 0.0,
            p_stream_cut: 0.0,
            p_stream_error: 0.0,
            p_content_filter: 0.0,
            p_not_json: 0.0,
            p_429: 0.0,
            p_stream_stall: 0.0,
            hang_secs: DEFAULT_HANG_SECS,
            retry_after_secs: DEFAULT_FAULT_RETRY_AFTER_SECS,
            retry_after_secs_f64: None,
        }
    }
}

impl FaultSpec {
    /// The wait a `p_429` fault names, in seconds: `retry_after_secs_f64`, else
    /// `retry_after_secs`.
    pub fn retry_after(&self) -> f64 {
        self.retry_after_secs_f64
            .unwrap_or(self.retry_after_secs as f64)
    }

    /// The probabilities with their config keys, in the order they are drawn.
    pub fn probabilities(&self) -> [(&'static str, f64); 10] {
        [
            ("p_500", self.p_500),
            ("p_503", self.p_503),
            ("p_hang", self.p_hang),
            ("p_drop", self.p_drop),
            ("p_stream_cut", self.p_stream_cut),
            ("p_stream_error", self.p_stream_error),
            ("p_content_filter", self.p_content_filter),
            ("p_not_json", self.p_not_json),
            ("p_429", self.p_429),
            ("p_stream_stall", self.p_stream_stall),
        ]
    }

    fn validate(&self, at: &str) -> Result<(), SimError> {
        let mut sum = 0.0;
        for (key, p) in self.probabilities() {
            if !(0.0..=1.0).contains(&p) {
                return Err(SimError::Invalid(format!(
                    "{at}.faults.{key}: {p} is not a probability; use a value between 0 and 1"
                )));
            }
            sum += p;
        }
        if sum > 1.0 + 1e-9 {
            return Err(SimError::Invalid(format!(
                "{at}.faults: the probabilities add up to {sum}, more than 1; lower some of them"
            )));
        }
        if let Some(wait) = self.retry_after_secs_f64
            && !(wait.is_finite() && wait >= 0.0)
        {
            return Err(SimError::Invalid(format!(
                "{at}.faults.retry_after_secs_f64: {wait} is not a wait; give a finite number of seconds, 0 or more (1e30 is fine)"
            )));
        }
        Ok(())
    }
}

/// A scheduled outage, in seconds since the simulator started: `[from_secs, to_secs)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageSpec {
    /// Start (inclusive).
    pub from_secs: u64,
    /// End (exclusive).
    pub to_secs: u64,
    /// How the deployment is down.
    #[serde(default)]
    pub mode: OutageMode,
}

impl OutageSpec {
    /// An outage answering 503.
    pub fn status_503(from_secs: u64, to_secs: u64) -> Self {
        OutageSpec {
            from_secs,
            to_secs,
            mode: OutageMode::Status503,
        }
    }

    /// An outage refusing connections (the deployment needs its own listener).
    pub fn refuse(from_secs: u64, to_secs: u64) -> Self {
        OutageSpec {
            from_secs,
            to_secs,
            mode: OutageMode::Refuse,
        }
    }

    /// An outage of any mode.
    pub fn new(mode: OutageMode, from_secs: u64, to_secs: u64) -> Self {
        OutageSpec {
            from_secs,
            to_secs,
            mode,
        }
    }

    /// Whether the outage is in force at this simulator time.
    pub fn covers(&self, elapsed: Duration) -> bool {
        elapsed >= Duration::from_secs(self.from_secs)
            && elapsed < Duration::from_secs(self.to_secs)
    }
}

/// How a deployment behaves during an outage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutageMode {
    /// Answer every request with 503.
    #[default]
    #[serde(rename = "status_503")]
    Status503,
    /// Close the listening socket: connections are refused.
    #[serde(rename = "refuse")]
    Refuse,
    /// Answer 401 with Azure's invalid-key message, whatever the key (a wrong key, fixed later).
    #[serde(rename = "status_401")]
    Status401,
    /// Answer 403 `PermissionDenied` (a token without the role, granted later).
    #[serde(rename = "status_403")]
    Status403,
    /// Answer 404 `DeploymentNotFound` (a deployment not created yet, or a wrong name).
    #[serde(rename = "status_404")]
    Status404,
    /// Answer 429 (a quota exhausted until the outage ends): the wait named is the time left
    /// until `to_secs`, in the deployment's `retry_headers` (none: a headerless 429 storm).
    #[serde(rename = "status_429")]
    Status429,
}

/// One retry header of a 429 reply. In files, its name: `retry-after`, `retry-after-ms` or
/// `x-ms-retry-after-ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum RetryHeader {
    /// `retry-after`: whole seconds, rounded up.
    RetryAfter,
    /// `retry-after-ms`: milliseconds, rounded up.
    RetryAfterMs,
    /// `x-ms-retry-after-ms`: milliseconds, rounded up (seen beside or instead of
    /// `retry-after-ms`).
    XMsRetryAfterMs,
}

impl RetryHeader {
    /// Every retry header, in the order they are sent.
    pub const ALL: [RetryHeader; 3] = [
        RetryHeader::RetryAfter,
        RetryHeader::RetryAfterMs,
        RetryHeader::XMsRetryAfterMs,
    ];

    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            RetryHeader::RetryAfter => "retry-after",
            RetryHeader::RetryAfterMs => "retry-after-ms",
            RetryHeader::XMsRetryAfterMs => "x-ms-retry-after-ms",
        }
    }
}

impl TryFrom<String> for RetryHeader {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        RetryHeader::ALL
            .into_iter()
            .find(|header| header.name().eq_ignore_ascii_case(&name))
            .ok_or_else(|| {
                format!(
                    "{name:?} is not a retry header; use retry-after, retry-after-ms or x-ms-retry-after-ms (an empty list sends none)"
                )
            })
    }
}

impl From<RetryHeader> for &'static str {
    fn from(header: RetryHeader) -> Self {
        header.name()
    }
}

/// The set of retry headers a deployment's 429 replies carry. In files, a list of header
/// names: `[retry-after, retry-after-ms]` (the default, as Azure sends), `[retry-after-ms]`,
/// `[x-ms-retry-after-ms]`, `[]` (none: a 429 that names no wait, in headers or message).
///
/// ```
/// use aoai_sim::{RetryHeader, RetryHeaders};
/// let only_ms = RetryHeaders::only(RetryHeader::RetryAfterMs);
/// assert!(only_ms.contains(RetryHeader::RetryAfterMs) && !only_ms.contains(RetryHeader::RetryAfter));
/// assert!(RetryHeaders::NONE.is_empty());
/// assert_eq!(RetryHeaders::default(), RetryHeaders::AZURE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<RetryHeader>", into = "Vec<RetryHeader>")]
pub struct RetryHeaders {
    retry_after: bool,
    retry_after_ms: bool,
    x_ms_retry_after_ms: bool,
}

impl RetryHeaders {
    /// `retry-after` and `retry-after-ms`, as Azure sends them.
    pub const AZURE: RetryHeaders = RetryHeaders {
        retry_after: true,
        retry_after_ms: true,
        x_ms_retry_after_ms: false,
    };
    /// No retry header at all; the message says "Please retry later." (no number).
    pub const NONE: RetryHeaders = RetryHeaders {
        retry_after: false,
        retry_after_ms: false,
        x_ms_retry_after_ms: false,
    };
    /// All three headers.
    pub const ALL: RetryHeaders = RetryHeaders {
        retry_after: true,
        retry_after_ms: true,
        x_ms_retry_after_ms: true,
    };

    /// Just this header.
    pub fn only(header: RetryHeader) -> Self {
        RetryHeaders::NONE.with(header)
    }

    /// This set plus `header`.
    pub fn with(mut self, header: RetryHeader) -> Self {
        *self.flag(header) = true;
        self
    }

    /// Whether `header` is sent.
    pub fn contains(self, header: RetryHeader) -> bool {
        match header {
            RetryHeader::RetryAfter => self.retry_after,
            RetryHeader::RetryAfterMs => self.retry_after_ms,
            RetryHeader::XMsRetryAfterMs => self.x_ms_retry_after_ms,
        }
    }

    /// Whether no retry header is sent.
    pub fn is_empty(self) -> bool {
        self == RetryHeaders::NONE
    }

    fn flag(&mut self, header: RetryHeader) -> &mut bool {
        match header {
            RetryHeader::RetryAfter => &mut self.retry_after,
            RetryHeader::RetryAfterMs => &mut self.retry_after_ms,
            RetryHeader::XMsRetryAfterMs => &mut self.x_ms_retry_after_ms,
        }
    }
}

impl Default for RetryHeaders {
    fn default() -> Self {
        RetryHeaders::AZURE
    }
}

impl From<Vec<RetryHeader>> for RetryHeaders {
    fn from(headers: Vec<RetryHeader>) -> Self {
        headers
            .into_iter()
            .fold(RetryHeaders::NONE, RetryHeaders::with)
    }
}

impl From<RetryHeaders> for Vec<RetryHeader> {
    fn from(headers: RetryHeaders) -> Self {
        RetryHeader::ALL
            .into_iter()
            .filter(|header| headers.contains(*header))
            .collect()
    }
}

/// A reply that keeps sending a few bytes every `interval_ms` (each gap shorter than a client's
/// idle timeout) for `for_ms`, or without end: what a whole-reply timeout must cut.
///
/// Streams: after the content deltas, before the finish chunk, one `event` every `interval_ms`;
/// then the stream finishes normally. Plain replies: one space (leading JSON whitespace) every
/// `interval_ms` after the headers, then the body; with an end the reply carries a
/// `content-length`, without one it is chunked. `⌊for_ms / interval_ms⌋` pieces are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrickleSpec {
    /// The gap before each piece, in milliseconds (at least 1).
    pub interval_ms: u64,
    /// How long the trickle lasts, in milliseconds; absent: forever.
    #[serde(default)]
    pub for_ms: Option<u64>,
    /// What a stream trickles (plain replies always trickle spaces).
    #[serde(default)]
    pub event: TrickleEvent,
}

impl TrickleSpec {
    /// A trickle that never ends.
    pub fn forever(interval_ms: u64) -> Self {
        TrickleSpec {
            interval_ms,
            for_ms: None,
            event: TrickleEvent::Comment,
        }
    }

    /// A trickle lasting `for_ms` milliseconds.
    pub fn lasting(interval_ms: u64, for_ms: u64) -> Self {
        TrickleSpec {
            for_ms: Some(for_ms),
            ..TrickleSpec::forever(interval_ms)
        }
    }

    /// Trickle content deltas instead of SSE comments (streams).
    pub fn deltas(mut self) -> Self {
        self.event = TrickleEvent::Delta;
        self
    }

    /// How many pieces are sent (`None`: no end).
    pub fn pieces(&self) -> Option<u64> {
        self.for_ms.map(|for_ms| for_ms / self.interval_ms.max(1))
    }

    fn validate(&self, at: &str) -> Result<(), SimError> {
        if self.interval_ms == 0 {
            return Err(SimError::Invalid(format!(
                "{at}.trickle.interval_ms: 0 would send without pause; give at least 1 ms"
            )));
        }
        if let Some(for_ms) = self.for_ms
            && for_ms < self.interval_ms
        {
            return Err(SimError::Invalid(format!(
                "{at}.trickle.for_ms: {for_ms} is shorter than interval_ms {}, so nothing would trickle; make it longer or leave it out (forever)",
                self.interval_ms
            )));
        }
        Ok(())
    }
}

/// What a trickling stream sends each time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrickleEvent {
    /// An SSE comment line, `: keep-alive` (14 bytes; parsers ignore it).
    #[default]
    Comment,
    /// A content delta of one word, ` tick` (the assembled content grows).
    Delta,
}

#[cfg(test)]
mod tests;
