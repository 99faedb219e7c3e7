//! Which deployments a request's `model` may use.
//!
//! A `model` that is a deployment's `name` pins the request to that deployment; one that is a
//! deployment's `model` (the Azure deployment name) lets every deployment of it serve; an alias
//! (`gateway.model_alias`) stands for either; no `model` lets any deployment serve. Anything
//! else is unknown (404, as OpenAI answers).

use std::collections::BTreeMap;

use crate::config::BlasterConfig;

/// Where a request may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Any deployment.
    Any,
    /// The deployments this pin selects (a deployment's `name`, or a `model`): what
    /// `ChatJob::pin` takes.
    Pin(String),
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// What a request puts in `model`.
    pub id: String,
    /// The deployments that may serve it, by `name`.
    pub deployments: Vec<String>,
}

/// The names a request's `model` may use, from the config.
///
/// ```
/// use aoai_blaster_core::config::BlasterConfig;
/// use aoai_blaster_core::gateway::{ModelRoutes, Route};
///
/// let config = BlasterConfig::from_yaml_str(r#"
/// deployments:
///   - {name: east, endpoint: 'http://127.0.0.1:1/', api_key: k, model: gpt-4o}
///   - {name: west, endpoint: 'http://127.0.0.1:2/', api_key: k, model: gpt-4o}
/// gateway:
///   model_alias: {fast: gpt-4o}
/// "#)?;
/// let routes = ModelRoutes::new(&config);
/// assert_eq!(routes.route(Some("west")), Ok(Route::Pin("west".into())));
/// assert_eq!(routes.route(Some("fast")), Ok(Route::Pin("gpt-4o".into())));
/// assert_eq!(routes.route(None), Ok(Route::Any));
/// assert!(routes.route(Some("gpt-5")).is_err());
/// assert_eq!(routes.serves(&Route::Pin("gpt-4o".into()), "east"), true);
/// # Ok::<(), aoai_blaster_core::config::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ModelRoutes {
    /// (`name`, `model`) of each deployment, in config order.
    deployments: Vec<(String, String)>,
    aliases: BTreeMap<String, String>,
}

impl ModelRoutes {
    /// The routes of `config`'s deployments and `gateway.model_alias`.
    pub fn new(config: &BlasterConfig) -> Self {
        ModelRoutes {
            deployments: config
                .deployments
                .iter()
                .map(|d| (d.name.clone(), d.model.clone()))
                .collect(),
            aliases: config.gateway.model_alias.clone(),
        }
    }

    /// Where a request naming `model` may go; `Err` carries the known names, comma-separated,
    /// for the 404's message.
    pub fn route(&self, model: Option<&str>) -> Result<Route, String> {
        let Some(model) = model.map(str::trim).filter(|m| !m.is_empty()) else {
            return Ok(Route::Any);
        };
        let target = self.aliases.get(model).map_or(model, String::as_str);
        if self
            .deployments
            .iter()
            .any(|(name, model)| name == target || model == target)
        {
            return Ok(Route::Pin(target.to_owned()));
        }
        let known: Vec<String> = self.entries().into_iter().map(|e| e.id).collect();
        Err(known.join(", "))
    }

    /// True when deployment `name` may serve a request routed by `route`.
    pub fn serves(&self, route: &Route, name: &str) -> bool {
        match route {
            Route::Any => true,
            Route::Pin(pin) => {
                // A name pins to that deployment alone; otherwise the pin is a model.
                if self.deployments.iter().any(|(n, _)| n == pin) {
                    pin == name
                } else {
                    self.deployments
                        .iter()
                        .any(|(n, model)| n == name && model == pin)
                }
            }
        }
    }

    /// Every name a request may use: the models, then the deployment names, then the aliases,
    /// each with the deployments that serve it.
    pub fn entries(&self) -> Vec<ModelEntry> {
        let mut entries: Vec<ModelEntry> = Vec::new();
        let mut add = |id: &str, route: Route| {
            if entries.iter().any(|e| e.id == id) {
                return;
            }
            let deployments = self
                .deployments
                .iter()
                .filter(|(name, _)| self.serves(&route, name))
                .map(|(name, _)| name.clone())
                .collect();
            entries.push(ModelEntry {
                id: id.to_owned(),
                deployments,
            });
        };
        for (_, model) in &self.deployments {
            add(model, Route::Pin(model.clone()));
        }
        for (name, _) in &self.deployments {
            add(name, Route::Pin(name.clone()));
        }
        for (alias, target) in &self.aliases {
            add(alias, Route::Pin(target.clone()));
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> ModelRoutes {
        let config = BlasterConfig::from_yaml_str(
            "deployments:\n\
             \x20 - {name: east, endpoint: 'http://127.0.0.1:1/', api_key: k, model: gpt-4o}\n\
             \x20 - {name: west, endpoint: 'http://127.0.0.1:2/', api_key: k, model: gpt-4o}\n\
             \x20 - {name: think, endpoint: 'http://127.0.0.1:3/', api_key: k, model: o3}\n\
             gateway:\n  model_alias: {reasoning: o3, pinned: east}\n",
        )
        .expect("valid config");
        ModelRoutes::new(&config)
    }

    #[test]
    fn names_pin_models_spread_aliases_follow_and_the_rest_is_unknown() {
        let routes = routes();
        let pin = |name: &str| Route::Pin(name.to_owned());
        assert_eq!(routes.route(Some("east")), Ok(pin("east")));
        assert_eq!(routes.route(Some("gpt-4o")), Ok(pin("gpt-4o")));
        assert_eq!(routes.route(Some("reasoning")), Ok(pin("o3")));
        assert_eq!(routes.route(Some("pinned")), Ok(pin("east")));
        assert_eq!(routes.route(Some(" ")), Ok(Route::Any));
        assert_eq!(
            routes.route(Some("gpt-5")),
            Err("gpt-4o, o3, east, west, think, pinned, reasoning".to_owned())
        );
        let serving = |route: Route| -> Vec<&str> {
            ["east", "west", "think"]
                .into_iter()
                .filter(|name| routes.serves(&route, name))
                .collect()
        };
        assert_eq!(serving(pin("gpt-4o")), ["east", "west"]);
        assert_eq!(serving(pin("west")), ["west"]);
        assert_eq!(serving(Route::Any), ["east", "west", "think"]);
    }

    #[test]
    fn the_model_list_names_who_serves_each_entry() {
        let entries = routes().entries();
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "gpt-4o",
                "o3",
                "east",
                "west",
                "think",
                "pinned",
                "reasoning"
            ]
        );
        assert_eq!(entries[0].deployments, ["east", "west"]);
        assert_eq!(entries[6].deployments, ["think"]);
    }
}
