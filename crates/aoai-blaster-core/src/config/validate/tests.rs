//! Validation: defaults, every problem at once, names, auth kinds, secrets, endpoints.

use super::*;
use crate::config::RawDeployment;
use crate::config::test_support::{deployment, load, no_env, problems_of};
use serde_json::json;

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
fn names_that_would_look_alike_are_refused() {
    let problems = problems_of(json!({
        "deployments": [deployment("a"), deployment("a "), deployment("b\t")],
    }));
    assert_eq!(
        problems,
        vec![
            r#"deployments[1] ("a").name: "a " has leading or trailing spaces or control characters; write it as "a""#,
            r#"deployments[2] ("b").name: "b\t" has leading or trailing spaces or control characters; write it as "b""#,
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
        unset.contains(r#"deployments[0] ("a").api_key: environment variable NOT_SET is not set"#),
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
    let ten =
        load(json!({"rpm_window": "10s", "endpoint_threads": 2, "deployments": [deployment("a")]}))
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
