//! Reading a configuration: files (YAML, JSON or TOML by extension), text and JSON values,
//! `AOAI_BLASTER__<KEY>` overrides from the environment, and every unreadable key reported with
//! its place before validation.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::guard;
use super::raw::{DEPLOYMENT_KEYS, TOP_KEYS};
use super::validate::{ConfigErrors, Problems, Scope};
use super::{BlasterConfig, ENV_PREFIX, ENV_SEPARATOR, RawConfig, RawDeployment};
use crate::extra::kind_of;

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
        let text = read_bounded(path).map_err(|source| ConfigError::Read {
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
}

/// Reads at most one byte more than a config may have (the size check then says so), so that
/// a wrong path (a log, `/dev/zero`) cannot fill the memory.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    let limit = u64::try_from(guard::MAX_CONFIG_BYTES + 1).unwrap_or(u64::MAX);
    std::fs::File::open(path)?
        .take(limit)
        .read_to_string(&mut text)?;
    Ok(text)
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
    guard::check_size(text).map_err(parse_error)?;
    match format {
        ConfigFormat::Yaml => guard::check_yaml_expansion(text).map_err(parse_error)?,
        ConfigFormat::Toml => guard::check_toml_syntax(text).map_err(parse_error)?,
        ConfigFormat::Json => {}
    }
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
    if only_known_keys(&top, TOP_KEYS)
        && let Ok(raw) = serde_json::from_value::<RawConfig>(Value::Object(top.clone()))
    {
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
        if key == "shared" {
            if let Some(shared) = top.get_mut("shared")
                && !super::shared::sanitize(shared, problems)
            {
                top.remove("shared");
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
        if let Some(message) = unreadable::<RawConfig>(&key, &top[&key]) {
            problems.add(Scope::Top, &key, message);
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

/// True when every key of `fields` is one of `keys`. Serde refuses unknown keys beside the
/// flattened knobs too, but does not promise to: the loaders check them by hand as well.
fn only_known_keys(fields: &Map<String, Value>, keys: &[&str]) -> bool {
    fields.keys().all(|key| keys.contains(&key.as_str()))
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
        if only_known_keys(fields, DEPLOYMENT_KEYS)
            && serde_json::from_value::<RawDeployment>(Value::Object(fields.clone())).is_ok()
        {
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
            if let Some(message) = unreadable::<RawDeployment>(&key, &fields[&key]) {
                problems.add(scope, &key, message);
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
pub(super) fn found(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("{} ({b})", kind_of(value)),
        Value::Number(n) => format!("{} ({n})", kind_of(value)),
        Value::String(s) => format!("{} ({s:?})", kind_of(value)),
        Value::Array(_) => kind_of(value).to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

/// Why `key: value` alone does not read as a `T` (one section of the file), in a config
/// author's words; `None` when it does.
pub(super) fn unreadable<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &Value,
) -> Option<String> {
    let mut probe = Map::new();
    probe.insert(key.to_owned(), value.clone());
    serde_json::from_value::<T>(Value::Object(probe))
        .err()
        .map(|error| describe_serde_error(&error))
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

pub(super) fn unknown_key_message(key: &str, valid: &[&str], other_level: &[&str]) -> String {
    let top_level = valid == TOP_KEYS;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{deployment, problems_of};
    use serde_json::json;

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
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("wieght", "weight"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("model", "model"), 0);
    }
}

/// Hostile configs: any text in each format, well-formed configs with values of every wrong
/// type, hostile environment overrides, alias bombs and deep nesting.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const FORMATS: [ConfigFormat; 3] = [ConfigFormat::Yaml, ConfigFormat::Json, ConfigFormat::Toml];

    /// The key every generated config carries: an error must never show it.
    const KEY: &str = "fuzzKEY0123456789abcdefSECRET";

    /// Loads `text`; the result is a config or a named error, and neither shows [`KEY`].
    fn load_checked(
        text: &str,
        format: ConfigFormat,
        env: Vec<(String, String)>,
    ) -> Result<(), TestCaseError> {
        match BlasterConfig::from_str_with_env(text, format, env) {
            Ok(config) => {
                let shown = format!("{config:?}");
                prop_assert!(!shown.contains(KEY), "{}", shown);
            }
            Err(error @ (ConfigError::Parse { .. } | ConfigError::Invalid(_))) => {
                let message = error.to_string();
                prop_assert!(!message.is_empty());
                prop_assert!(!message.contains(KEY), "{format}: {message}");
            }
            Err(other) => prop_assert!(false, "{format}: unexpected {other:?}"),
        }
        Ok(())
    }

    /// A value of any type, often the wrong one: durations that overflow, negative counts,
    /// huge numbers, empty and odd strings, small lists and maps.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "-?[0-9]{1,25}(ms|s|m|h|d)?".prop_map(Value::from),
            "[a-z_ ]{0,10}".prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(Value::from("env:AOAI_FUZZ_VAR")),
            Just(Value::from("https://x.openai.azure.com")),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Some of `keys` (and a misspelt one) with hostile values.
    fn fields(keys: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
        let key = prop_oneof![
            4 => prop::sample::select(keys).prop_map(str::to_owned),
            1 => "[a-z_]{1,12}",
        ];
        prop::collection::btree_map(key, value(), 0..6)
            .prop_map(|fields| fields.into_iter().collect())
    }

    /// A config whose deployments all carry [`KEY`], the rest hostile.
    fn config() -> impl Strategy<Value = Value> {
        let deployment = fields(DEPLOYMENT_KEYS).prop_map(|mut fields| {
            fields.insert("api_key".to_owned(), Value::from(KEY));
            Value::Object(fields)
        });
        let name = prop_oneof![Just("a"), Just("a "), Just("b"), Just("\u{7}")];
        let plain = (name, prop::option::of(0u32..1_000_000)).prop_map(|(name, rpm)| {
            json!({"name": name, "endpoint": "https://x.openai.azure.com", "api_key": KEY,
                   "model": "gpt-4o", "rpm_limit": rpm})
        });
        (
            fields(TOP_KEYS),
            prop::collection::vec(prop_oneof![deployment, plain], 0..4),
        )
            .prop_map(|(mut top, deployments)| {
                top.insert("deployments".to_owned(), Value::from(deployments));
                Value::Object(top)
            })
    }

    /// `value` as TOML: top-level keys, then one `[[deployments]]` table per entry (nulls
    /// left out: TOML has none).
    fn to_toml(config: &Value) -> String {
        fn inline(value: &Value) -> Option<String> {
            Some(match value {
                Value::Null => return None,
                Value::Array(items) => {
                    format!(
                        "[{}]",
                        items
                            .iter()
                            .filter_map(inline)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                Value::Object(map) => format!(
                    "{{{}}}",
                    map.iter()
                        .filter_map(|(k, v)| Some(format!(
                            "{} = {}",
                            Value::from(k.as_str()),
                            inline(v)?
                        )))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => other.to_string(),
            })
        }
        let mut text = String::new();
        let Value::Object(top) = config else {
            unreachable!()
        };
        for (key, value) in top.iter().filter(|(k, _)| *k != "deployments") {
            if let Some(value) = inline(value) {
                text.push_str(&format!("{} = {value}\n", Value::from(key.as_str())));
            }
        }
        for deployment in top["deployments"].as_array().into_iter().flatten() {
            text.push_str("\n[[deployments]]\n");
            for (key, value) in deployment.as_object().into_iter().flatten() {
                if let Some(value) = inline(value) {
                    text.push_str(&format!("{} = {value}\n", Value::from(key.as_str())));
                }
            }
        }
        text
    }

    /// `AOAI_BLASTER__` overrides, good and bad, and unrelated variables.
    fn environment() -> impl Strategy<Value = Vec<(String, String)>> {
        let name = prop_oneof![
            prop::sample::select(TOP_KEYS)
                .prop_map(|k| format!("AOAI_BLASTER__{}", k.to_uppercase())),
            Just("AOAI_BLASTER__DEPLOYMENTS__0__API_KEY".to_owned()),
            Just("AOAI_BLASTER_NUM_WORKERS".to_owned()),
            Just("AOAI_FUZZ_VAR".to_owned()),
            "AOAI_BLASTER__[A-Z_]{0,12}",
        ];
        prop::collection::vec((name, prop_oneof!["-?[0-9]{0,22}(s|ms)?", ".{0,12}"]), 0..3)
    }

    proptest! {
        #![proptest_config(aoai_testkit::fuzz_config())]

        /// Any text in any format: a config or a named error.
        #[test]
        fn any_text_loads_or_fails_by_name(
            format in prop::sample::select(&FORMATS[..]),
            text in prop_oneof![".{0,200}", "([a-z_]{1,10}(: |=| = |\": )[-\\[\\]{}\"'&*!|>0-9a-z.,: ]{0,20}\n){0,8}"],
        ) {
            load_checked(&text, format, Vec::new())?;
        }

        /// Well-formed configs with hostile values, in every format, with hostile overrides:
        /// a config or a named error, and the api_key shows in neither.
        #[test]
        fn hostile_configs_load_or_fail_by_name(
            config in config(),
            env in environment(),
        ) {
            load_checked(&config.to_string(), ConfigFormat::Json, env.clone())?;
            load_checked(&config.to_string(), ConfigFormat::Yaml, env.clone())?;
            load_checked(&to_toml(&config), ConfigFormat::Toml, env)?;
        }

        /// Nested YAML aliases: refused by name when they would expand past the bound, and
        /// the check is fast either way (the expansion is counted, never built).
        #[test]
        fn alias_bombs_are_refused_by_name(width in 2u32..10, depth in 1u32..30) {
            let expanded_at = |depth: u32| {
                (0..depth)
                    .try_fold(1u64, |n, _| n.checked_mul(u64::from(width)))
                    .unwrap_or(u64::MAX)
            };
            // Small enough to build quickly, or past the bound: nothing in between (slow).
            let mut depth = depth;
            while (1000..=guard::MAX_YAML_NODES).contains(&expanded_at(depth)) {
                depth += 1;
            }
            let expanded = expanded_at(depth);
            let mut text = String::from("l0: &l0 \"lol\"\n");
            for level in 1..=depth {
                let refs = vec![format!("*l{}", level - 1); width as usize].join(", ");
                text.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
            }
            let result = BlasterConfig::from_str_with_env(&text, ConfigFormat::Yaml, Vec::new());
            if expanded > guard::MAX_YAML_NODES {
                let message = result.unwrap_err().to_string();
                prop_assert!(message.contains("aliases"), "{message}");
            } else {
                prop_assert!(result.is_err(), "no deployments: never a config");
            }
        }

        /// A valid config broken anywhere outside its key (a character inserted, or the
        /// text cut short): whatever the parser or the validator says, it never quotes the key.
        #[test]
        fn broken_configs_never_quote_the_key(
            format in prop::sample::select(&FORMATS[..]),
            at in any::<prop::sample::Index>(),
            insert in prop::option::of(prop_oneof![
                prop::sample::select(&['"', '\'', ':', '=', '[', ']', '{', '}', ',', '#', '&', '*', '|', '>', '\n', '\t', ' ', '\\', '\u{0}', 'é'][..]),
                any::<char>(),
            ]),
        ) {
            let text = match format {
                ConfigFormat::Yaml => format!(
                    "num_workers: 4\ndeployments:\n  - name: a\n    endpoint: https://x.openai.azure.com\n    api_key: {KEY}\n    model: gpt-4o\n"
                ),
                ConfigFormat::Json => format!(
                    "{{\"num_workers\": 4, \"deployments\": [{{\"name\": \"a\", \"endpoint\": \"https://x.openai.azure.com\", \"api_key\": \"{KEY}\", \"model\": \"gpt-4o\"}}]}}"
                ),
                ConfigFormat::Toml => format!(
                    "num_workers = 4\n\n[[deployments]]\nname = \"a\"\nendpoint = \"https://x.openai.azure.com\"\napi_key = \"{KEY}\"\nmodel = \"gpt-4o\"\n"
                ),
            };
            prop_assert!(BlasterConfig::from_str_with_env(&text, format, Vec::new()).is_ok());
            let key_at = text.find(KEY).unwrap();
            let boundaries: Vec<usize> = (0..=text.len())
                .filter(|i| text.is_char_boundary(*i) && !(key_at + 1..key_at + KEY.len()).contains(i))
                .collect();
            let at = boundaries[at.index(boundaries.len())];
            let broken = match insert {
                Some(c) => format!("{}{c}{}", &text[..at], &text[at..]),
                None => text[..at].to_owned(),
            };
            load_checked(&broken, format, Vec::new())?;
        }

        /// Deep nesting in every format: a named error, not a stack overflow.
        #[test]
        fn deep_nesting_fails_by_name(
            format in prop::sample::select(&FORMATS[..]),
            depth in 1usize..3000,
            map in any::<bool>(),
        ) {
            let (open, close) = match (format, map) {
                (ConfigFormat::Toml, _) => ("x = ".to_owned() + &"[".repeat(depth), "]".repeat(depth)),
                (_, true) => ("{\"a\": ".repeat(depth), "}".repeat(depth)),
                (_, false) => ("[".repeat(depth), "]".repeat(depth)),
            };
            load_checked(&format!("{open}1{close}"), format, Vec::new())?;
        }
    }
}
