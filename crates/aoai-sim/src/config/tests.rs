//! Tests of `config`.

use super::*;

fn one(spec: DeploymentSpec) -> SimConfig {
    SimConfig::default().deployment(spec)
}

fn invalid_message(config: &SimConfig) -> String {
    match config.validate() {
        Err(err) => err.to_string(),
        Ok(()) => String::from("<valid>"),
    }
}

#[test]
fn default_rpm_is_six_per_thousand_tpm() {
    assert_eq!(
        DeploymentSpec::new("a").tpm(60_000).effective_rpm(),
        Some(360)
    );
    assert_eq!(
        DeploymentSpec::new("a")
            .tpm(60_000)
            .rpm_per_1000_tpm(1)
            .effective_rpm(),
        Some(60)
    );
    assert_eq!(
        DeploymentSpec::new("a").tpm(1_000).rpm(7).effective_rpm(),
        Some(7)
    );
    assert_eq!(DeploymentSpec::new("a").provisioned().effective_rpm(), None);
}

#[test]
fn validation_names_the_key() {
    assert!(invalid_message(&SimConfig::default()).contains("deployments: none"));
    assert!(invalid_message(&one(DeploymentSpec::new("a").tpm(0))).contains("\"a\").tpm"));
    let faults = FaultSpec {
        p_500: 1.5,
        ..Default::default()
    };
    assert!(
        invalid_message(&one(DeploymentSpec::new("a").faults(faults))).contains("faults.p_500")
    );
    let faults = FaultSpec {
        p_500: 0.6,
        p_503: 0.6,
        ..Default::default()
    };
    assert!(invalid_message(&one(DeploymentSpec::new("a").faults(faults))).contains("add up to"));
    for wait in [-1.0, f64::NAN, f64::INFINITY] {
        let faults = FaultSpec {
            retry_after_secs_f64: Some(wait),
            ..Default::default()
        };
        assert!(
            invalid_message(&one(DeploymentSpec::new("a").faults(faults)))
                .contains("faults.retry_after_secs_f64"),
            "{wait}"
        );
    }
    let absurd = FaultSpec {
        retry_after_secs_f64: Some(1e30),
        ..Default::default()
    };
    assert!(
        one(DeploymentSpec::new("a").faults(absurd))
            .validate()
            .is_ok()
    );
    assert_eq!(absurd.retry_after(), 1e30);
    assert_eq!(FaultSpec::default().retry_after(), 86_400.0);
    let still = DeploymentSpec::new("a").trickle(TrickleSpec::forever(0));
    assert!(invalid_message(&one(still)).contains("trickle.interval_ms"));
    let short = DeploymentSpec::new("a").trickle(TrickleSpec::lasting(100, 50));
    assert!(invalid_message(&one(short)).contains("trickle.for_ms"));
    let both = DeploymentSpec::new("a")
        .trickle(TrickleSpec::forever(10))
        .reply_bytes(1);
    assert!(invalid_message(&one(both)).contains("cannot be combined"));
    assert_eq!(TrickleSpec::lasting(30, 100).pieces(), Some(3));
    assert_eq!(TrickleSpec::forever(30).pieces(), None);
    let refuse_shared = DeploymentSpec::new("a").outage(OutageSpec::refuse(1, 2));
    assert!(invalid_message(&one(refuse_shared)).contains("listener: own"));
    let backwards = DeploymentSpec::new("a").outage(OutageSpec::status_503(5, 5));
    assert!(invalid_message(&one(backwards)).contains("outages[0]"));
    let twice = one(DeploymentSpec::new("a")).deployment(DeploymentSpec::new("a"));
    assert!(invalid_message(&twice).contains("used twice"));
    assert!(invalid_message(&one(DeploymentSpec::new("").tpm(5))).contains("deployments[0].name"));
}

#[test]
fn edge_keys_round_trip_through_serde() {
    let config = one(DeploymentSpec::new("a")
        .retry_headers(RetryHeaders::only(RetryHeader::XMsRetryAfterMs))
        .trickle(TrickleSpec::lasting(10, 100).deltas())
        .outage(OutageSpec::new(OutageMode::Status429, 0, 5)))
    .deployment(DeploymentSpec::new("b").reply_bytes(1 << 20));
    let json = serde_json::to_value(&config).unwrap_or_default();
    assert_eq!(
        json["deployments"][0]["retry_headers"],
        serde_json::json!(["x-ms-retry-after-ms"])
    );
    assert_eq!(json["deployments"][0]["outages"][0]["mode"], "status_429");
    assert_eq!(json["deployments"][0]["trickle"]["event"], "delta");
    let back: SimConfig = serde_json::from_value(json).unwrap_or_default();
    assert_eq!(back, config);
}

#[test]
fn debug_output_hides_credentials() {
    let config = SimConfig {
        managed_identity: Some(ManagedIdentitySpec::default()),
        ..one(DeploymentSpec::new("a"))
    };
    let debug = format!("{config:?}");
    assert!(!debug.contains(DEFAULT_API_KEY), "{debug}");
    assert!(!debug.contains(DEFAULT_BEARER_TOKEN), "{debug}");
    assert!(!debug.contains("sim-mi-token"), "{debug}");
    assert!(debug.contains("redacted"));
}

#[test]
fn listener_names_round_trip() {
    for name in ["shared", "own", "resource-b"] {
        let listener = Listener::from(name.to_owned());
        assert_eq!(String::from(listener), name);
    }
    assert_eq!(Listener::from("own".to_owned()), Listener::Own);
}

#[test]
fn outage_covers_half_open_interval() {
    let outage = OutageSpec::status_503(5, 10);
    assert!(!outage.covers(Duration::from_millis(4_999)));
    assert!(outage.covers(Duration::from_secs(5)));
    assert!(outage.covers(Duration::from_millis(9_999)));
    assert!(!outage.covers(Duration::from_secs(10)));
}
