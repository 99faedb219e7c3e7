//! The `gateway:` section: what `aoai-blaster serve` needs beyond the deployments (inbound keys,
//! model aliases). The section is optional; without it the gateway takes no keys and knows no
//! aliases.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::DeploymentConfig;
use super::validate::{Problems, Scope};
use crate::gateway::InboundKeys;
use crate::secret::Secret;

/// `gateway:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGateway {
    /// Keys clients must present (`Authorization: Bearer KEY` or `api-key: KEY`), each a
    /// literal or `"env:VAR"`. None: the gateway takes requests without a key.
    pub api_keys: Vec<Secret>,
    /// Extra names a request's `model` may use: alias → a deployment's `name` or a `model`.
    pub model_alias: BTreeMap<String, String>,
}

/// The validated `gateway:` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayConfig {
    /// The inbound keys, held only as digests.
    pub api_keys: InboundKeys,
    /// Alias → a deployment's `name` or a `model` (each target exists, no alias shadows one).
    pub model_alias: BTreeMap<String, String>,
}

impl RawGateway {
    /// Checks the section against the deployments, reporting every problem in `problems`.
    pub(super) fn check(
        self,
        deployments: &[DeploymentConfig],
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> GatewayConfig {
        let mut keys = Vec::with_capacity(self.api_keys.len());
        for (index, raw) in self.api_keys.iter().enumerate() {
            let key = format!("gateway.api_keys[{index}]");
            match resolve_key(raw, env) {
                Ok(value) => keys.push(value),
                Err(message) => problems.add(Scope::Top, &key, message),
            }
        }
        let names = |target: &str| {
            deployments
                .iter()
                .any(|d| d.name == target || d.model == target)
        };
        for (alias, target) in &self.model_alias {
            let key = format!("gateway.model_alias.{alias}");
            if alias.trim().is_empty() {
                problems.add(
                    Scope::Top,
                    "gateway.model_alias",
                    "an alias is empty; remove it",
                );
            } else if names(alias) {
                problems.add(
                    Scope::Top,
                    &key,
                    format!(
                        "{alias:?} is already a deployment name or model; an alias must be a \
                         new name"
                    ),
                );
            } else if !names(target) {
                let mut known: Vec<&str> = deployments
                    .iter()
                    .flat_map(|d| [d.name.as_str(), d.model.as_str()])
                    .collect();
                known.sort_unstable();
                known.dedup();
                problems.add(
                    Scope::Top,
                    &key,
                    format!(
                        "{target:?} is no deployment name or model; use one of {}",
                        known.join(", ")
                    ),
                );
            }
        }
        GatewayConfig {
            api_keys: InboundKeys::new(keys.iter().map(Secret::expose)),
            model_alias: self.model_alias,
        }
    }
}

/// A key as written: a literal, or `env:VAR` read from `env`.
fn resolve_key(raw: &Secret, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
    let value = raw.expose().trim();
    if value.is_empty() {
        return Err("empty; give a key, or \"env:VAR\" to read it from a variable".to_owned());
    }
    let Some(variable) = value.strip_prefix("env:") else {
        return Ok(Secret::new(value));
    };
    let variable = variable.trim();
    if variable.is_empty() {
        return Err("\"env:\" needs a variable name, e.g. \"env:GATEWAY_KEY\"".to_owned());
    }
    match env(variable) {
        None => Err(format!(
            "environment variable {variable} is not set; export it, or put the key here"
        )),
        Some(key) if key.trim().is_empty() => Err(format!(
            "environment variable {variable} is set but empty; export the key in it"
        )),
        Some(key) => Ok(Secret::new(key.trim())),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{deployment, load, problems_of};
    use serde_json::json;

    #[test]
    fn keys_and_aliases_load_and_keys_are_kept_hashed() {
        let config = load(json!({
            "deployments": [deployment("east")],
            "gateway": {"api_keys": ["sk-local-0123456789"], "model_alias": {"fast": "gpt-4o"}},
        }))
        .unwrap();
        let gateway = &config.gateway;
        assert!(gateway.api_keys.accepts("sk-local-0123456789"));
        assert!(!gateway.api_keys.accepts("sk-local-012345678"));
        assert_eq!(gateway.model_alias["fast"], "gpt-4o");
        assert!(!format!("{gateway:?}").contains("0123456789"));
        let without = load(json!({"deployments": [deployment("east")]})).unwrap();
        assert!(without.gateway.api_keys.is_empty());
    }

    #[test]
    fn every_problem_of_the_section_is_reported_with_its_place() {
        let problems = problems_of(json!({
            "deployments": [deployment("east")],
            "gateway": {
                "api_keys": ["", "env:GATEWAY_KEY_NOT_SET", "env:"],
                "model_alias": {"east": "gpt-4o", "fast": "gpt-5"},
            },
        }));
        assert_eq!(
            problems,
            [
                "gateway.api_keys[0]: empty; give a key, or \"env:VAR\" to read it from a variable",
                "gateway.api_keys[1]: environment variable GATEWAY_KEY_NOT_SET is not set; \
                 export it, or put the key here",
                "gateway.api_keys[2]: \"env:\" needs a variable name, e.g. \"env:GATEWAY_KEY\"",
                "gateway.model_alias.east: \"east\" is already a deployment name or model; an \
                 alias must be a new name",
                "gateway.model_alias.fast: \"gpt-5\" is no deployment name or model; use one of \
                 east, gpt-4o",
            ]
        );
        let unknown = problems_of(json!({
            "deployments": [deployment("east")],
            "gateway": {"keys": ["k"]},
        }));
        assert_eq!(unknown.len(), 1);
        assert!(
            unknown[0].starts_with("gateway: unknown field `keys`"),
            "{unknown:?}"
        );
    }
}
