//! Validation: checking every value of a [`RawConfig`] and applying the defaults, with every
//! problem collected (each naming its place and the fix) rather than the first one returned.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use super::{
    AuthConfig, BlasterConfig, DEFAULT_API_VERSION, DEFAULT_MAX_JOB_RETRY, DEFAULT_MAX_WAIT,
    DEFAULT_NUM_WORKERS, DEFAULT_RPM_WINDOW, DEFAULT_TOKENIZER, DeploymentConfig,
    QUEUE_CAPACITY_PER_WORKER, RawConfig, RawDeployment, Resilience, StrategyKind, TOKENIZERS,
    Timeouts,
};
use crate::operation::{ApiStyle, Operation, Operations, V1_API_VERSION};
use crate::secret::Secret;

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

    pub(super) fn with_origin(mut self, origin: &str) -> Self {
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

/// Where a problem is: the top level or one deployment.
#[derive(Clone, Copy)]
pub(super) enum Scope<'a> {
    Top,
    Deployment { index: usize, name: &'a str },
}

#[derive(Default)]
pub(super) struct Problems {
    /// (sort rank: 0 for top level, i + 1 for deployments[i]; the problem).
    list: Vec<(usize, ConfigProblem)>,
    pub(super) warnings: Vec<String>,
    /// Keys already reported as unreadable: validation must not report them again.
    /// `None` index: top level; key `*`: the whole deployment.
    pub(super) skip: HashSet<(Option<usize>, String)>,
    /// Top-level key -> environment variable that set it.
    pub(super) env_keys: HashMap<String, String>,
}

impl Problems {
    pub(super) fn place(&self, scope: Scope<'_>, key: &str) -> String {
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

    pub(super) fn add(&mut self, scope: Scope<'_>, key: &str, message: impl Into<String>) {
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

    pub(super) fn add_at(&mut self, rank: usize, place: String, message: String) {
        self.list.push((rank, ConfigProblem { place, message }));
    }

    pub(super) fn warn(&mut self, scope: Scope<'_>, key: &str, message: impl fmt::Display) {
        let place = self.place(scope, key);
        self.warnings.push(format!("{place}: {message}"));
    }

    pub(super) fn finish(
        mut self,
        config: Option<BlasterConfig>,
    ) -> Result<BlasterConfig, ConfigErrors> {
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

    /// Checks everything, collecting each problem in `problems`; `None` only when nothing could
    /// be built.
    pub(super) fn check(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Option<BlasterConfig> {
        let top = self.check_top_level(problems);
        let (timeouts, resilience) = self.knobs.resolve(
            Timeouts::default(),
            Resilience::default(),
            Scope::Top,
            problems,
        );
        let inherited = Inherited {
            num_workers: top.num_workers,
            timeouts,
            resilience,
        };
        if self.deployments.is_empty() && !problems.skip.contains(&(None, "deployments".into())) {
            problems.add(
                Scope::Top,
                "deployments",
                "no deployments configured; add at least one entry with name, endpoint, \
                 api_key and model",
            );
        }
        let deployments = check_deployments(self.deployments, &inherited, env, problems);
        let gateway = self
            .gateway
            .unwrap_or_default()
            .check(&deployments, env, problems);
        Some(BlasterConfig {
            strategy: top.strategy,
            deployments,
            num_workers: top.num_workers,
            max_job_retry: self.max_job_retry.unwrap_or(DEFAULT_MAX_JOB_RETRY),
            queue_capacity: top.queue_capacity,
            job_deadline: self.job_deadline,
            max_wait: self.max_wait.unwrap_or(DEFAULT_MAX_WAIT),
            rpm_window: top.rpm_window,
            endpoint_threads: self.endpoint_threads.unwrap_or(0),
            shared: self
                .shared
                .as_ref()
                .and_then(|shared| shared.check(env, problems)),
            gateway,
            warnings: Vec::new(),
        })
    }

    /// The top-level keys other than the knobs and the deployments.
    fn check_top_level(&self, problems: &mut Problems) -> TopLevel {
        let top = Scope::Top;
        let strategy = check_strategy(self.strategy.as_deref(), problems);
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
        if self.max_wait == Some(Duration::ZERO) {
            problems.add(
                top,
                "max_wait",
                "must be greater than 0 (jobs would fail whenever every endpoint is cooling); \
                 remove the key for the default of 5 min",
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
        TopLevel {
            strategy,
            num_workers,
            queue_capacity,
            rpm_window,
        }
    }
}

/// The checked top-level values the rest of the configuration depends on.
struct TopLevel {
    strategy: StrategyKind,
    num_workers: usize,
    queue_capacity: usize,
    rpm_window: Duration,
}

/// What a deployment takes from the top level unless it sets its own.
struct Inherited {
    num_workers: usize,
    timeouts: Timeouts,
    resilience: Resilience,
}

fn check_strategy(name: Option<&str>, problems: &mut Problems) -> StrategyKind {
    let Some(name) = name else {
        return StrategyKind::Weighted;
    };
    StrategyKind::parse(name).unwrap_or_else(|| {
        let valid: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.as_str()).collect();
        problems.add(
            Scope::Top,
            "strategy",
            format!("unknown strategy {name:?}; use one of {}", valid.join(", ")),
        );
        StrategyKind::Weighted
    })
}

/// Checks each deployment, and that their names are unique.
fn check_deployments(
    raws: Vec<RawDeployment>,
    inherited: &Inherited,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Vec<DeploymentConfig> {
    let mut seen_names: HashMap<String, usize> = HashMap::new();
    let mut deployments = Vec::with_capacity(raws.len());
    for (index, raw) in raws.into_iter().enumerate() {
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
        } else if name.trim() != name || name.chars().any(char::is_control) {
            // Reports and logs would show "a " and "a" alike: one name, two deployments.
            problems.add(
                scope,
                "name",
                format!(
                    "{name:?} has leading or trailing spaces or control characters; write it \
                     as {:?}",
                    name.trim().replace(char::is_control, "")
                ),
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
        deployments.push(check_deployment(raw, scope, inherited, env, problems));
    }
    deployments
}

fn check_deployment(
    raw: RawDeployment,
    scope: Scope<'_>,
    inherited: &Inherited,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> DeploymentConfig {
    let endpoint = check_endpoint(&raw.endpoint, scope, problems);
    let model = check_model(&raw.model, scope, problems);
    let api_version = check_api_version(raw.api_version.as_deref(), scope, problems);
    let auth = match check_auth(&raw.api_key, env) {
        Ok(auth) => auth,
        Err(message) => {
            problems.add(scope, "api_key", message);
            AuthConfig::ApiKey(Secret::default())
        }
    };
    let weight = check_numbers(&raw, scope, problems);
    let tokenizer = check_tokenizer(raw.tokenizer.as_deref(), scope, problems);
    let operations = check_operations(raw.operations.as_deref(), &api_version, scope, problems);
    let (timeouts, resilience) =
        raw.knobs
            .resolve(inherited.timeouts, inherited.resilience, scope, problems);

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
        max_in_flight: raw.max_in_flight.unwrap_or(inherited.num_workers),
        priority: raw.priority.unwrap_or(0),
        tokenizer,
        operations,
        adaptive: raw
            .adaptive
            .unwrap_or(raw.rpm_limit.is_none() && raw.tpm_limit.is_none()),
        timeouts,
        resilience,
    }
}

fn check_model(raw: &str, scope: Scope<'_>, problems: &mut Problems) -> String {
    let model = raw.trim().to_owned();
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
    model
}

fn check_api_version(raw: Option<&str>, scope: Scope<'_>, problems: &mut Problems) -> String {
    let api_version = raw.map(str::trim).unwrap_or(DEFAULT_API_VERSION).to_owned();
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
    api_version
}

/// Checks `operations`: known names, not empty, `responses` only with `api_version: v1` (the
/// Responses API exists only there).
fn check_operations(
    raw: Option<&[String]>,
    api_version: &str,
    scope: Scope<'_>,
    problems: &mut Problems,
) -> Operations {
    let Some(names) = raw else {
        return Operations::default();
    };
    let known = || {
        Operation::ALL
            .iter()
            .map(|op| op.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut operations = Vec::new();
    for name in names {
        match Operation::from_name(name) {
            Some(op) => operations.push(op),
            None => problems.add(
                scope,
                "operations",
                format!("unknown operation {name:?}; use any of {}", known()),
            ),
        }
    }
    if names.is_empty() {
        problems.add(
            scope,
            "operations",
            format!(
                "is empty; list what the deployment takes ({}), or remove the key for [chat]",
                known()
            ),
        );
    }
    let operations = Operations::of(operations);
    if operations.contains(Operation::Responses) && ApiStyle::of(api_version) != ApiStyle::V1 {
        problems.add(
            scope,
            "operations",
            format!(
                "responses needs the v1 API (the Responses API exists only there), but api_version is {api_version:?}; set api_version: {V1_API_VERSION} or remove responses"
            ),
        );
    }
    operations
}

/// Checks `weight`, `temperature` and the limits that must not be 0; returns the weight.
fn check_numbers(raw: &RawDeployment, scope: Scope<'_>, problems: &mut Problems) -> u32 {
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
    weight
}

fn check_tokenizer(raw: Option<&str>, scope: Scope<'_>, problems: &mut Problems) -> String {
    let tokenizer = raw.map(str::trim).unwrap_or(DEFAULT_TOKENIZER).to_owned();
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
    tokenizer
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
        return read_env_secret(variable, "the key", env)
            .map(|key| AuthConfig::ApiKey(Secret::new(key)));
    }
    Ok(AuthConfig::ApiKey(Secret::new(value)))
}

/// The value of `env:VAR` (`variable` is what follows `env:`), trimmed; the error names the
/// variable and says how to fix it (`what`: "the key", "the URL").
pub(super) fn read_env_secret(
    variable: &str,
    what: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let variable = variable.trim();
    if variable.is_empty() {
        return Err("\"env:\" needs a variable name, e.g. \"env:AZURE_OPENAI_API_KEY\"".to_owned());
    }
    match env(variable) {
        None => Err(format!(
            "environment variable {variable} is not set; export it, or put {what} here"
        )),
        Some(value) if value.trim().is_empty() => Err(format!(
            "environment variable {variable} is set but empty; export {what} in it"
        )),
        Some(value) => Ok(value.trim().to_owned()),
    }
}

#[cfg(test)]
mod tests;
