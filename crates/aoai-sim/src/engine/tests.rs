//! Tests of `engine`.

use super::*;
use crate::config::{DeploymentSpec, FaultSpec, LatencySpec, OutageSpec};

fn engine(spec: DeploymentSpec) -> Engine {
    Engine::new(&SimConfig::default().deployment(spec), SimClock::manual())
}

const KEY: Credentials<'static> = Credentials {
    api_key: Some("sim-key"),
    bearer: None,
};

fn call<'a>(name: &'a str, body: &'a str) -> ApiCall<'a> {
    ApiCall {
        api: crate::request::Api::Chat,
        listener: SHARED_LISTENER,
        route: Route::Deployment {
            name,
            api_version: Some("2024-10-21"),
        },
        credentials: KEY,
        http2: false,
        body: body.as_bytes(),
    }
}

fn header<'a>(decision: &'a Decision, name: &str) -> Option<&'a str> {
    decision
        .headers
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.as_str())
}

const BODY: &str = r#"{"messages":[{"role":"user","content":"12345678"}],"max_tokens":10}"#;

#[test]
fn charges_the_estimate_and_reports_remaining() {
    // 60,000 TPM: 360 RPM, 6 per 1 s window.
    let engine = engine(DeploymentSpec::new("d").tpm(60_000));
    let decision = engine.call(call("d", BODY));
    assert_eq!(decision.status, 200);
    // prompt 3 + 2 + 3 = 8, max_tokens 10: charge 18.
    assert_eq!(
        header(&decision, "x-ratelimit-remaining-tokens"),
        Some("59982")
    );
    assert_eq!(
        header(&decision, "x-ratelimit-remaining-requests"),
        Some("5")
    );
    let stats = engine.stats().deployment("d");
    assert_eq!((stats.charged_tokens, stats.used_tokens), (18, 8 + 10));
    // In flight until the reply is sent.
    assert_eq!(stats.in_flight, 1);
    drop(decision);
    let stats = engine.stats().deployment("d");
    assert_eq!((stats.in_flight, stats.peak_in_flight), (0, 1));
}

#[test]
fn rate_limited_with_retry_headers() {
    let engine = engine(DeploymentSpec::new("d").tpm(1_000).rpm(1_000_000));
    let big = r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":992}"#;
    assert_eq!(engine.call(call("d", big)).status, 200);
    engine.clock().advance(Duration::from_micros(12_345_500));
    let decision = engine.call(call("d", big));
    assert_eq!(decision.status, 429);
    // 60 s - 12.3455 s = 47.6545 s: 47655 ms, 48 s.
    assert_eq!(header(&decision, "retry-after-ms"), Some("47655"));
    assert_eq!(header(&decision, "retry-after"), Some("48"));
    let Body::Full(body) = &decision.body else {
        panic!("429 has a full body");
    };
    assert!(String::from_utf8_lossy(body).contains("Please retry after 48 seconds."));
    let stats = engine.stats().deployment("d");
    assert_eq!(stats.rate_limited, 1);
    // The quota's tokens refused it, not its requests.
    assert_eq!(
        (stats.refused_for_tokens, stats.refused_for_requests),
        (1, 0)
    );
}

#[test]
fn routing_and_auth_errors() {
    let engine = engine(DeploymentSpec::new("d"));
    assert_eq!(engine.call(call("nope", BODY)).status, 404);
    let mut no_version = call("d", BODY);
    no_version.route = Route::Deployment {
        name: "d",
        api_version: None,
    };
    assert_eq!(engine.call(no_version).status, 400);
    let mut wrong_key = call("d", BODY);
    wrong_key.credentials.api_key = Some("wrong");
    assert_eq!(engine.call(wrong_key).status, 401);
    let mut bearer = call("d", BODY);
    bearer.credentials = Credentials {
        api_key: None,
        bearer: Some("sim-token"),
    };
    assert_eq!(engine.call(bearer).status, 200);
    let mut other_listener = call("d", BODY);
    other_listener.listener = "own:d";
    assert_eq!(engine.call(other_listener).status, 404);
    let stats = engine.stats();
    assert_eq!(stats.deployment("d").requests, 3);
    assert_eq!(stats.deployment("d").client_errors, 2);
    assert_eq!(stats.unrouted.requests, 2);
}

#[test]
fn v1_route_takes_the_deployment_from_model() {
    let engine = engine(DeploymentSpec::new("d"));
    let v1 = |body: &'static str| ApiCall {
        api: crate::request::Api::Chat,
        listener: SHARED_LISTENER,
        route: Route::V1 { api_version: None },
        credentials: KEY,
        http2: false,
        body: body.as_bytes(),
    };
    assert_eq!(
        engine
            .call(v1(r#"{"model":"d","messages":[{"role":"user"}]}"#))
            .status,
        200
    );
    assert_eq!(
        engine.call(v1(r#"{"messages":[{"role":"user"}]}"#)).status,
        400
    );
    assert_eq!(
        engine
            .call(v1(r#"{"model":"x","messages":[{"role":"user"}]}"#))
            .status,
        404
    );
}

#[test]
fn outage_answers_503_inside_the_schedule_only() {
    let engine = engine(DeploymentSpec::new("d").outage(OutageSpec::status_503(5, 10)));
    assert_eq!(engine.call(call("d", BODY)).status, 200);
    engine.clock().advance(Duration::from_secs(5));
    assert_eq!(engine.call(call("d", BODY)).status, 503);
    engine.clock().advance(Duration::from_secs(5));
    assert_eq!(engine.call(call("d", BODY)).status, 200);
}

#[test]
fn latency_model_sets_the_delay() {
    let latency = LatencySpec {
        ttft_ms: 100,
        per_token_ms: 10,
        jitter_ms: 0,
    };
    let engine = engine(DeploymentSpec::new("d").reply_tokens(5).latency(latency));
    let decision = engine.call(call("d", BODY));
    assert_eq!(decision.delay, Duration::from_millis(150));
    let jittery = LatencySpec {
        jitter_ms: 20,
        ..latency
    };
    let jittery_spec = DeploymentSpec::new("d")
        .rpm(1_000_000)
        .reply_tokens(5)
        .latency(jittery);
    let engine = self::engine(jittery_spec.clone());
    let delays: Vec<Duration> = (0..20)
        .map(|_| engine.call(call("d", BODY)).delay)
        .collect();
    assert!(
        delays
            .iter()
            .all(|d| *d >= Duration::from_millis(150) && *d <= Duration::from_millis(170))
    );
    assert!(delays.iter().any(|d| *d != delays[0]), "jitter varies");
    // Same seed, same draws.
    let again = self::engine(jittery_spec);
    let replay: Vec<Duration> = (0..20).map(|_| again.call(call("d", BODY)).delay).collect();
    assert_eq!(delays, replay);
}

#[test]
fn faults_follow_the_seeded_draw() {
    let faults = FaultSpec {
        p_500: 0.5,
        ..Default::default()
    };
    let statuses = |seed: u64| -> Vec<u16> {
        let config = SimConfig {
            seed,
            ..SimConfig::default().deployment(
                DeploymentSpec::new("d")
                    .tpm(1_000_000)
                    .rpm(1_000_000)
                    .faults(faults),
            )
        };
        let engine = Engine::new(&config, SimClock::manual());
        (0..64)
            .map(|_| engine.call(call("d", BODY)).status)
            .collect()
    };
    let first = statuses(7);
    assert_eq!(first, statuses(7));
    let failures = first.iter().filter(|s| **s == 500).count();
    assert!((16..=48).contains(&failures), "{failures} of 64 failed");
    assert_ne!(first, statuses(8));
}

#[test]
fn msi_token_checks_header_and_query() {
    let config = SimConfig {
        managed_identity: Some(ManagedIdentitySpec::default()),
        ..SimConfig::default().deployment(DeploymentSpec::new("d"))
    };
    let engine = Engine::new(&config, SimClock::manual());
    let query: HashMap<String, String> = [
        ("api-version", "2019-08-01"),
        ("resource", "https://cognitiveservices.azure.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(engine.msi_token(&query, None).0, 401);
    let (status, body) = engine.msi_token(&query, Some("sim-identity-header"));
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(body["access_token"], "sim-mi-token");
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body["expires_on"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok())
    );
    let mut bad = query.clone();
    bad.remove("resource");
    assert_eq!(engine.msi_token(&bad, Some("sim-identity-header")).0, 400);
    // The token is then a valid bearer token.
    let mut bearer = call("d", BODY);
    bearer.credentials = Credentials {
        api_key: None,
        bearer: Some("sim-mi-token"),
    };
    assert_eq!(engine.call(bearer).status, 200);
}
