//! Loading configuration files: the example, every format, and clear errors.

use std::path::PathBuf;

use aoai_sim::{
    Listener, OutageMode, QuotaWindow, RemainingHeaders, RetryHeader, RetryHeaders, RpmWindow,
    SimConfig, SimError, TokenCharge, TrickleSpec,
};

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/sim.yaml")
}

fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn load_error(name: &str, text: &str) -> String {
    let (_dir, path) = write(name, text);
    match SimConfig::from_file(&path) {
        Ok(config) => format!("<loaded {config:?}>"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn the_example_loads_and_covers_the_options() {
    let config = SimConfig::from_file(example_path()).expect("examples/sim.yaml loads");
    assert_eq!(config.seed, 42);
    assert_eq!(config.rpm_window, RpmWindow::OneSecond);
    assert!(config.managed_identity.is_some());
    let names: Vec<&str> = config.deployments.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4o-ptu",
            "gpt-4o-trickle",
            "gpt-4o-huge"
        ]
    );
    assert_eq!(config.deployments[0].effective_rpm(), Some(360));
    assert_eq!(config.deployments[0].latency.ttft_ms, 300);
    assert_eq!(
        config.deployments[0].token_charge,
        TokenCharge::PromptPlusMax
    );
    assert_eq!(config.deployments[0].window, QuotaWindow::Fixed);
    assert_eq!(
        config.deployments[0].remaining_headers,
        RemainingHeaders::Exact
    );
    let mini = &config.deployments[1];
    assert_eq!(mini.model_name(), "gpt-4o-mini-2024-07-18");
    assert_eq!(mini.faults.p_500, 0.02);
    assert_eq!(mini.outages[0].mode, OutageMode::Status503);
    let ptu = &config.deployments[2];
    assert!(ptu.provisioned);
    assert_eq!(ptu.listener, Listener::Own);
    assert_eq!(ptu.outages[0].mode, OutageMode::Refuse);
    assert_eq!(mini.retry_headers, RetryHeaders::AZURE);
    assert_eq!(mini.outages[1].mode, OutageMode::Status429);
    assert_eq!(
        config.deployments[3].trickle,
        Some(TrickleSpec::lasting(500, 600_000))
    );
    assert_eq!(config.deployments[4].reply_bytes, 70 * 1024 * 1024);
}

#[test]
fn json_and_toml_load_the_same_config() {
    let (_json_dir, json) = write(
        "sim.json",
        r#"{"seed": 7, "rpm_window": "10s", "deployments": [{"name": "a", "tpm": 1000, "rpm": null,
            "faults": {"p_500": 0}, "outages": [{"from_secs": 1, "to_secs": 2}]}]}"#,
    );
    let (_toml_dir, toml) = write(
        "sim.toml",
        "seed = 7\nrpm_window = \"10s\"\n[[deployments]]\nname = \"a\"\ntpm = 1000\nfaults = { p_500 = 0 }\noutages = [{ from_secs = 1, to_secs = 2 }]\n",
    );
    let from_json = SimConfig::from_file(&json).expect("json loads");
    let from_toml = SimConfig::from_file(&toml).expect("toml loads");
    assert_eq!(from_json, from_toml);
    assert_eq!(from_json.rpm_window, RpmWindow::TenSeconds);
    assert_eq!(from_json.deployments[0].effective_rpm(), Some(6));
    assert_eq!(
        from_json.deployments[0].outages[0].mode,
        OutageMode::Status503
    );
    // Defaults fill everything else.
    assert_eq!(from_json.api_keys, [aoai_sim::DEFAULT_API_KEY]);
    assert_eq!(
        from_json.deployments[0].default_max_tokens,
        aoai_sim::DEFAULT_MAX_TOKENS
    );
}

#[test]
fn errors_name_the_file_and_the_key() {
    let typo = load_error("typo.yaml", "deployments:\n  - name: a\n    tmp: 5\n");
    assert!(typo.contains("typo.yaml") && typo.contains("tmp"), "{typo}");
    let probability = load_error(
        "p.yaml",
        "deployments:\n  - name: a\n    faults: { p_500: 1.5 }\n",
    );
    assert!(
        probability.contains("deployments[0] (\"a\").faults.p_500"),
        "{probability}"
    );
    let window = load_error("w.yaml", "rpm_window: 5s\ndeployments: [{name: a}]\n");
    assert!(
        window.contains("rpm_window") || window.contains("5s"),
        "{window}"
    );
    let missing = SimConfig::from_file("/nonexistent/sim.yaml");
    assert!(
        matches!(&missing, Err(SimError::Load { path, .. }) if path.contains("/nonexistent/sim.yaml"))
    );
}

#[test]
fn edge_keys_load_from_yaml() {
    let (_dir, path) = write(
        "edges.yaml",
        r#"deployments:
  - name: bare
    retry_headers: []
    faults: { p_429: 1.0, retry_after_secs_f64: 1e30 }
    outages:
      - { from_secs: 0, to_secs: 30, mode: status_401 }
      - { from_secs: 30, to_secs: 60, mode: status_429 }
  - name: ms
    retry_headers: [x-ms-retry-after-ms, retry-after-ms]
    outages: [{ from_secs: 0, to_secs: 5, mode: status_404 }, { from_secs: 5, to_secs: 6, mode: status_403 }]
  - name: default
  - name: trickle
    trickle: { interval_ms: 100, for_ms: 5000, event: delta }
  - name: forever
    trickle: { interval_ms: 250 }
  - name: huge
    reply_bytes: 73400320
"#,
    );
    let config = SimConfig::from_file(&path).unwrap_or_else(|err| panic!("{err}"));
    let bare = &config.deployments[0];
    assert_eq!(bare.retry_headers, RetryHeaders::NONE);
    assert_eq!(bare.faults.retry_after_secs_f64, Some(1e30));
    let modes: Vec<OutageMode> = bare.outages.iter().map(|o| o.mode).collect();
    assert_eq!(modes, [OutageMode::Status401, OutageMode::Status429]);
    let ms = &config.deployments[1];
    assert_eq!(
        ms.retry_headers,
        RetryHeaders::only(RetryHeader::RetryAfterMs).with(RetryHeader::XMsRetryAfterMs)
    );
    assert_eq!(ms.outages[1].mode, OutageMode::Status403);
    assert_eq!(config.deployments[2].retry_headers, RetryHeaders::AZURE);
    assert_eq!(
        config.deployments[3].trickle,
        Some(TrickleSpec::lasting(100, 5_000).deltas())
    );
    assert_eq!(
        config.deployments[4].trickle,
        Some(TrickleSpec::forever(250))
    );
    assert_eq!(config.deployments[5].reply_bytes, 70 * 1024 * 1024);

    let typo = load_error(
        "h.yaml",
        "deployments:\n  - name: a\n    retry_headers: [retry-afterr]\n",
    );
    assert!(
        typo.contains("retry-afterr") && typo.contains("retry-after-ms"),
        "{typo}"
    );
    let negative = load_error(
        "n.yaml",
        "deployments:\n  - name: a\n    faults: { retry_after_secs_f64: -5 }\n",
    );
    assert!(
        negative.contains("faults.retry_after_secs_f64"),
        "{negative}"
    );
}

#[test]
fn accounting_keys_load_from_yaml_with_todays_defaults() {
    let (_dir, path) = write(
        "accounting.yaml",
        r#"rpm_window: 10s
deployments:
  - name: default
  - name: azure-maybe
    token_charge: chars_plus_max
    rpm_window: 60s
    window: sliding
    remaining_headers: unknown
  - name: max
    token_charge: max_only
    rpm_window: 1s
"#,
    );
    let config = SimConfig::from_file(&path).unwrap_or_else(|err| panic!("{err}"));
    let [default, maybe, max] = &config.deployments[..] else {
        panic!("three deployments: {config:?}");
    };
    assert_eq!(default.token_charge, TokenCharge::PromptPlusMax);
    assert_eq!(default.rpm_window, None);
    assert_eq!(default.window, QuotaWindow::Fixed);
    assert_eq!(default.remaining_headers, RemainingHeaders::Exact);
    // A deployment without its own window takes the simulator's.
    assert_eq!(
        default.rpm_window_duration(&config),
        std::time::Duration::from_secs(10)
    );
    assert_eq!(maybe.token_charge, TokenCharge::CharsPlusMax);
    assert_eq!(maybe.rpm_window, Some(RpmWindow::SixtySeconds));
    assert_eq!(maybe.window, QuotaWindow::Sliding);
    assert_eq!(maybe.remaining_headers, RemainingHeaders::Unknown);
    assert_eq!(max.token_charge, TokenCharge::MaxOnly);
    assert_eq!(
        max.rpm_window_duration(&config),
        std::time::Duration::from_secs(1)
    );
    assert_eq!(config.rpm_window, RpmWindow::TenSeconds);
}

#[test]
fn bad_accounting_values_name_the_key() {
    for (key, value) in [
        ("token_charge", "prompt_only"),
        ("rpm_window", "5s"),
        ("window", "rolling"),
        ("remaining_headers", "none"),
    ] {
        let error = load_error(
            "bad.yaml",
            &format!("deployments:\n  - name: a\n    {key}: {value}\n"),
        );
        assert!(error.contains(key), "{key}: {error}");
        assert!(error.contains(value), "{key}: {error}");
    }
}
