//! Loading configuration files: the Python package's example unchanged, every key, environment
//! overrides (injected, never `set_var`), and file errors.

use std::path::PathBuf;
use std::time::Duration;

use aoai_blaster_core::config::{
    AuthConfig, BlasterConfig, ConfigError, ConfigFormat, StrategyKind,
};
use aoai_blaster_core::operation::{Operation, Operations};
use aoai_blaster_core::secret::Secret;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assert_python_readme_config(config: &BlasterConfig) {
    assert_eq!(config.strategy, StrategyKind::Weighted);
    assert_eq!(config.num_workers, 16);
    assert_eq!(config.max_job_retry, 5);
    assert_eq!(config.queue_capacity, 64);
    assert_eq!(config.deployments.len(), 2);

    let primary = &config.deployments[0];
    assert_eq!(primary.name, "gpt-4o");
    assert_eq!(
        primary.endpoint,
        "https://my-aoai-resource.openai.azure.com/"
    );
    assert_eq!(primary.auth, AuthConfig::ApiKey(Secret::new("YOUR_KEY")));
    assert_eq!(primary.model, "gpt-4o");
    assert_eq!(primary.api_version, "2025-01-01-preview");
    assert_eq!(primary.weight, 2);
    assert_eq!(primary.temperature, Some(0.2));
    assert_eq!(primary.max_completion_tokens, Some(512));
    assert_eq!(
        primary.chat_completions_url(),
        "https://my-aoai-resource.openai.azure.com/openai/deployments/gpt-4o/chat/completions\
         ?api-version=2025-01-01-preview"
    );

    let backup = &config.deployments[1];
    assert_eq!(backup.name, "gpt-4o-backup");
    assert_eq!(backup.auth, AuthConfig::Default);
    assert_eq!(backup.model, "gpt-4o-mini");
    assert_eq!(backup.weight, 1);
    assert_eq!(backup.temperature, None);
    assert_eq!(backup.max_completion_tokens, None);
    assert_eq!(backup.max_in_flight, 16);

    assert_eq!(
        config.warnings,
        [
            "worker_polling_interval: accepted for compatibility and ignored: actors do not poll; \
          remove the key"
        ]
    );
}

#[test]
fn python_readme_example_loads_unchanged_from_yaml_json_and_toml() {
    for name in [
        "python_readme.yaml",
        "python_readme.json",
        "python_readme.toml",
    ] {
        let config = BlasterConfig::from_file_with_env(fixture(name), env(&[]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_python_readme_config(&config);
    }
}

#[test]
fn python_readme_example_loads_from_a_json_value() {
    let text = std::fs::read_to_string(fixture("python_readme.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let config = BlasterConfig::from_value(value).unwrap();
    assert_python_readme_config(&config);
}

#[test]
fn every_key_is_read_from_a_file() {
    let config =
        BlasterConfig::from_file_with_env(fixture("full.yaml"), env(&[("EAST_KEY", "k-east")]))
            .unwrap();
    assert_eq!(config.num_workers, 8);
    assert_eq!(config.max_job_retry, 3);
    assert_eq!(config.queue_capacity, 100);
    assert_eq!(config.job_deadline, Some(Duration::from_secs(600)));

    let east = config.deployment("east").unwrap();
    assert_eq!(east.auth, AuthConfig::ApiKey(Secret::new("k-east")));
    assert_eq!(east.api_version, "2024-10-21");
    assert_eq!(east.weight, 3);
    assert_eq!(east.rpm_limit, Some(600));
    assert_eq!(east.tpm_limit, Some(100_000));
    assert_eq!(east.max_in_flight, 4);
    assert_eq!(east.priority, 2);
    assert_eq!(east.tokenizer, "cl100k_base");
    assert_eq!(east.timeouts.request, Duration::from_secs(30));
    assert_eq!(east.timeouts.connect, Duration::from_secs(1));
    assert_eq!(east.timeouts.stream_idle, Duration::from_secs(5));
    assert_eq!(east.resilience.backoff_base, Duration::from_secs(1));
    assert_eq!(east.resilience.backoff_max, Duration::from_secs(8));
    assert_eq!(east.resilience.rate_limit_fallback, Duration::from_secs(3));
    assert_eq!(east.resilience.retry_after_cap, Duration::from_secs(60));
    assert_eq!(east.resilience.auto_disable_threshold, 2);
    assert_eq!(
        east.resilience.reenable_after,
        Some(Duration::from_secs(30))
    );

    let west = config.deployment("west").unwrap();
    assert_eq!(west.endpoint, "http://127.0.0.1:9000/");
    assert_eq!(west.auth, AuthConfig::ManagedIdentity);
    assert_eq!(west.max_in_flight, 8);
    assert_eq!(west.tokenizer, "o200k_base");
    assert_eq!(west.timeouts.request, Duration::from_secs(90));
    assert_eq!(west.timeouts.connect, Duration::from_millis(2500));
    assert_eq!(west.timeouts.stream_idle, Duration::from_secs(20));
    assert_eq!(west.resilience.backoff_base, Duration::from_millis(500));
    assert_eq!(west.resilience.backoff_max, Duration::from_secs(30));
    assert_eq!(west.resilience.rate_limit_fallback, Duration::from_secs(10));
    assert_eq!(west.resilience.retry_after_cap, Duration::from_secs(120));
    assert_eq!(west.resilience.auto_disable_threshold, 4);
    assert_eq!(
        west.resilience.reenable_after,
        Some(Duration::from_secs(300))
    );
}

#[test]
fn environment_overrides_reach_top_level_keys() {
    let config = BlasterConfig::from_file_with_env(
        fixture("python_readme.yaml"),
        env(&[
            ("AOAI_BLASTER__NUM_WORKERS", "32"),
            ("AOAI_BLASTER__max_job_retry", "1"),
            ("AOAI_BLASTER__REQUEST_TIMEOUT", "1500ms"),
            ("AOAI_BLASTER__JOB_DEADLINE", "90"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(config.num_workers, 32);
    assert_eq!(config.max_job_retry, 1);
    assert_eq!(config.queue_capacity, 128);
    assert_eq!(config.job_deadline, Some(Duration::from_secs(90)));
    for deployment in &config.deployments {
        assert_eq!(deployment.timeouts.request, Duration::from_millis(1500));
        assert_eq!(deployment.max_in_flight, 32);
    }
}

#[test]
fn bad_environment_overrides_are_named_by_their_variable() {
    let error = BlasterConfig::from_file_with_env(
        fixture("python_readme.yaml"),
        env(&[
            ("AOAI_BLASTER__NUM_WORKERS", "0"),
            ("AOAI_BLASTER__MAX_JOB_RETRY", "many"),
            ("AOAI_BLASTER__NUM_WORKRES", "3"),
            ("AOAI_BLASTER__DEPLOYMENTS__0__WEIGHT", "3"),
            ("AOAI_BLASTER_BACKOFF_MAX", "3s"),
        ]),
    )
    .unwrap_err();
    let ConfigError::Invalid(errors) = &error else {
        panic!("expected Invalid, got {error}");
    };
    let problems: Vec<String> = errors.problems().iter().map(ToString::to_string).collect();
    let expected = [
        "environment variable AOAI_BLASTER__DEPLOYMENTS__0__WEIGHT: deployments can only be \
         configured in the config file",
        "environment variable AOAI_BLASTER__NUM_WORKRES: unknown key; did you mean `num_workers`?",
        "max_job_retry (set by AOAI_BLASTER__MAX_JOB_RETRY): invalid type: string \"many\"",
        "num_workers (set by AOAI_BLASTER__NUM_WORKERS): must be at least 1",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (problem, expected) in problems.iter().zip(expected) {
        assert!(problem.starts_with(expected), "{problem:?} vs {expected:?}");
    }
    let text = error.to_string();
    assert!(
        text.starts_with("invalid configuration in ")
            && text.contains("python_readme.yaml (4 problems):\n  - "),
        "{text}"
    );
}

#[test]
fn single_underscore_overrides_are_flagged_as_ignored() {
    let config = BlasterConfig::from_file_with_env(
        fixture("python_readme.yaml"),
        env(&[("AOAI_BLASTER_NUM_WORKERS", "3")]),
    )
    .unwrap();
    assert_eq!(config.num_workers, 16);
    assert!(
        config.warnings.contains(
            &"environment variable AOAI_BLASTER_NUM_WORKERS: ignored; overrides take two \
          underscores after the prefix, e.g. AOAI_BLASTER__NUM_WORKERS"
                .to_owned()
        )
    );
}

#[test]
fn file_errors_name_the_file_and_the_fix() {
    let missing = BlasterConfig::from_file_with_env(fixture("nope.yaml"), env(&[])).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert!(missing.to_string().contains("cannot read config file"));
    assert!(missing.to_string().contains("nope.yaml"));

    let unknown = BlasterConfig::from_file_with_env(fixture("config.ini"), env(&[])).unwrap_err();
    assert!(
        unknown
            .to_string()
            .ends_with("config.ini: name it *.yaml, *.yml, *.json or *.toml"),
        "{unknown}"
    );

    let broken = BlasterConfig::from_file_with_env(fixture("broken.yaml"), env(&[])).unwrap_err();
    let ConfigError::Parse { origin, format, .. } = &broken else {
        panic!("expected Parse, got {broken}");
    };
    assert!(origin.ends_with("broken.yaml"));
    assert_eq!(*format, ConfigFormat::Yaml);
    assert!(broken.to_string().contains("cannot parse"), "{broken}");
}

#[test]
fn text_in_every_format_with_injected_environment() {
    let toml = "[[deployments]]\nname = \"a\"\nendpoint = \"http://127.0.0.1:1\"\n\
                api_key = \"env:MY_KEY\"\nmodel = \"m\"\n";
    let config = BlasterConfig::from_str_with_env(
        toml,
        ConfigFormat::Toml,
        env(&[("MY_KEY", "secret"), ("AOAI_BLASTER__STRATEGY", "capacity")]),
    )
    .unwrap();
    assert_eq!(config.strategy, StrategyKind::Capacity);
    assert_eq!(
        config.deployments[0].auth,
        AuthConfig::ApiKey(Secret::new("secret"))
    );
    let unset = BlasterConfig::from_str_with_env(toml, ConfigFormat::Toml, env(&[])).unwrap_err();
    assert!(
        unset
            .to_string()
            .contains("deployments[0] (\"a\").api_key: environment variable MY_KEY is not set"),
        "{unset}"
    );
}

#[test]
fn a_key_read_as_a_number_is_never_echoed() {
    let yaml = "deployments:\n  - name: a\n    endpoint: https://a\n    api_key: 918273645546372819\n    model: m\n";
    let error = BlasterConfig::from_str_with_env(yaml, ConfigFormat::Yaml, env(&[])).unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(!text.contains("918273645546372819"), "{text}");
    assert!(
        text.contains("api_key: must be a text value: put it in quotes"),
        "{text}"
    );
}

#[test]
fn hostile_files_fail_fast_and_never_quote_a_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    // "Billion laughs": nine levels of nine aliases, 447 bytes that would expand to 9^9 values.
    let mut laughs = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
    let mut previous = 'a';
    for name in "bcdefghi".chars() {
        let refs = vec![format!("*{previous}"); 9].join(",");
        laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
        previous = name;
    }
    let yaml = dir.path().join("laughs.yaml");
    std::fs::write(&yaml, &laughs).expect("write");
    let error = BlasterConfig::from_file_with_env(&yaml, env(&[])).expect_err("refused");
    assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
    assert!(error.to_string().contains("aliases"), "{error}");

    let toml = dir.path().join("bad.toml");
    std::fs::write(
        &toml,
        "[[deployments]]\nname = \"east\"\napi_key = \"sk-live-0123456789\" x\n",
    )
    .expect("write");
    let error = BlasterConfig::from_file_with_env(&toml, env(&[])).expect_err("bad syntax");
    let text = error.to_string();
    assert!(text.contains("line 3"), "{text}");
    assert!(
        !text.contains("sk-live"),
        "the key must not be quoted: {text}"
    );

    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(3 * 1024 * 1024)).expect("write");
    let error = BlasterConfig::from_file_with_env(&big, env(&[])).expect_err("too big");
    assert!(
        error
            .to_string()
            .contains("check that the path names the config file"),
        "{error}"
    );
}

#[test]
fn operations_and_the_v1_api_are_validated_with_every_other_problem() {
    let ok = BlasterConfig::from_yaml_str(concat!(
        "deployments:\n",
        "  - {name: chat, endpoint: 'https://r.openai.azure.com', api_key: k, model: gpt-4o}\n",
        "  - {name: v1, endpoint: 'https://r.openai.azure.com', api_key: k, model: gpt-5,\n",
        "     api_version: v1, operations: [responses, chat]}\n",
        "  - {name: emb, endpoint: 'https://r.openai.azure.com', api_key: k, model: embed-3,\n",
        "     operations: [embeddings]}\n",
    ))
    .unwrap();
    let [chat, v1, emb] = &ok.deployments[..] else {
        panic!("three deployments");
    };
    assert_eq!(chat.operations, Operations::default());
    assert_eq!(
        v1.operations,
        Operations::of([Operation::Chat, Operation::Responses])
    );
    assert_eq!(
        v1.url(Operation::Chat),
        "https://r.openai.azure.com/openai/v1/chat/completions"
    );
    assert_eq!(v1.body_model(), Some("gpt-5"));
    assert_eq!(
        emb.url(Operation::Embeddings),
        "https://r.openai.azure.com/openai/deployments/embed-3/embeddings?api-version=2025-01-01-preview"
    );
    assert_eq!(emb.body_model(), None);

    let error = BlasterConfig::from_yaml_str(concat!(
        "deployments:\n",
        "  - {name: a, endpoint: 'https://r.openai.azure.com', api_key: k, model: m,\n",
        "     operations: [chat, completions, responses]}\n",
        "  - {name: b, endpoint: 'https://r.openai.azure.com', api_key: k, model: m, operations: []}\n",
        "  - {name: c, endpoint: 'https://r.openai.azure.com', api_key: k, model: m, operations: chat}\n",
    ))
    .unwrap_err()
    .to_string();
    for expected in [
        r#"deployments[0] ("a").operations: unknown operation "completions"; use any of chat, embeddings, responses"#,
        r#"deployments[0] ("a").operations: responses needs the v1 API (the Responses API exists only there), but api_version is "2025-01-01-preview"; set api_version: v1 or remove responses"#,
        r#"deployments[1] ("b").operations: is empty"#,
        "deployments[2]",
    ] {
        assert!(error.contains(expected), "{expected}\nin:\n{error}");
    }
}
