//! Each fault kind, made certain with probability 1, and scheduled outages.

use std::net::TcpStream;
use std::time::Duration;

use aoai_sim::{DeploymentSpec, FaultSpec, OutageSpec, SimConfig, SimHandle};
use serde_json::{Value, json};

use crate::common::{KEY, chat_body, chat_url, client, post, post_chat, raw_exchange, start};

async fn with_fault(faults: FaultSpec) -> SimHandle {
    start(SimConfig::default().deployment(DeploymentSpec::new("d").faults(faults))).await
}

fn stream_body() -> Value {
    json!({"messages": [{"role": "user", "content": "go"}], "stream": true})
}

#[actix_rt::test]
async fn status_faults_have_azure_bodies() {
    let cases = [
        (
            FaultSpec {
                p_500: 1.0,
                ..Default::default()
            },
            500,
            "InternalServerError",
        ),
        (
            FaultSpec {
                p_503: 1.0,
                ..Default::default()
            },
            503,
            "ServiceUnavailable",
        ),
        (
            FaultSpec {
                p_content_filter: 1.0,
                ..Default::default()
            },
            400,
            "content_filter",
        ),
    ];
    for (faults, status, code) in cases {
        let sim = with_fault(faults).await;
        let reply = post_chat(&sim, "d", &chat_body(5)).await;
        assert_eq!(reply.status, status);
        assert_eq!(reply.error_code(), code);
        let stats = sim.stats().deployment("d");
        if status == 400 {
            assert_eq!(
                reply.json()["error"]["innererror"]["code"],
                "ResponsibleAIPolicyViolation"
            );
            assert_eq!((stats.content_filter, stats.client_errors), (1, 1));
        } else {
            assert_eq!(stats.server_errors, 1);
        }
        sim.stop().await;
    }
}

#[actix_rt::test]
async fn not_json_fault_sends_200_with_a_body_that_is_not_json() {
    let sim = with_fault(FaultSpec {
        p_not_json: 1.0,
        ..Default::default()
    })
    .await;
    let reply = post_chat(&sim, "d", &chat_body(5)).await;
    assert_eq!(reply.status, 200);
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());
    assert!(!reply.body.is_empty());
    let stats = sim.stats().deployment("d");
    assert_eq!((stats.not_json, stats.ok), (1, 1));
    sim.stop().await;
}

#[actix_rt::test]
async fn hang_fault_outlasts_the_client_timeout() {
    let sim = with_fault(FaultSpec {
        p_hang: 1.0,
        hang_secs: 600,
        ..Default::default()
    })
    .await;
    crate::common::install_crypto_provider();
    let client = awc::Client::builder()
        .timeout(Duration::from_millis(300))
        .finish();
    let result = client
        .post(chat_url(&sim.base_url(), "d"))
        .insert_header(("api-key", aoai_sim::DEFAULT_API_KEY))
        .send_json(&chat_body(5))
        .await;
    assert!(
        matches!(result, Err(awc::error::SendRequestError::Timeout)),
        "{result:?}"
    );
    let stats = sim.stats().deployment("d");
    assert_eq!((stats.hangs, stats.in_flight), (1, 1));
    sim.stop().await;
}

#[actix_rt::test]
async fn drop_fault_sends_headers_and_part_of_the_body_then_aborts() {
    let sim = with_fault(FaultSpec {
        p_drop: 1.0,
        ..Default::default()
    })
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    let reply = post(&client, &url, KEY, &chat_body(5)).await;
    assert_eq!(reply.status, 200);
    let promised = reply.header_u64("content-length");
    assert!(
        (reply.body.len() as u64) < promised,
        "{} of {promised}",
        reply.body.len()
    );
    assert!(reply.body.starts_with(b"{"));
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());

    // On the wire: the headers, then fewer bytes than promised, then the connection closes.
    let raw = raw_exchange(&sim.base_url(), &path("d"), &chat_body(5));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: "), "{head}");
    assert!(!body.is_empty() && !body.ends_with('}'), "{body}");

    let streamed = post(&client, &url, KEY, &stream_body()).await;
    assert_eq!(streamed.status, 200);
    assert!(!streamed.body.ends_with(b"\n\n"), "an event is torn");
    assert_eq!(sim.stats().deployment("d").drops, 3);
    sim.stop().await;
}

fn path(deployment: &str) -> String {
    format!("/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21")
}

#[actix_rt::test]
async fn stream_cut_stops_without_done_and_aborts() {
    let sim = start(
        SimConfig::default()
            .deployment(DeploymentSpec::new("cut").faults(FaultSpec {
                p_stream_cut: 1.0,
                ..Default::default()
            }))
            .deployment(DeploymentSpec::new("fine")),
    )
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "cut");
    let reply = post(&client, &url, KEY, &stream_body()).await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert!(events.len() >= 3, "some deltas arrive first: {events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));

    // On the wire the chunked body never gets its final empty chunk: the connection is aborted.
    let cut = raw_exchange(&sim.base_url(), &path("cut"), &stream_body());
    assert!(cut.contains("transfer-encoding: chunked"), "{cut}");
    assert!(cut.contains("chat.completion.chunk"));
    assert!(
        !cut.contains("[DONE]") && !cut.ends_with("0\r\n\r\n"),
        "{cut}"
    );
    let fine = raw_exchange(&sim.base_url(), &path("fine"), &stream_body());
    assert!(
        fine.contains("data: [DONE]") && fine.ends_with("0\r\n\r\n"),
        "{fine}"
    );

    // Stream-only: a non-streaming request is served normally.
    let plain = post(&client, &url, KEY, &chat_body(5)).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.json()["object"], "chat.completion");
    assert_eq!(sim.stats().deployment("cut").stream_cuts, 2);
    sim.stop().await;
}

#[actix_rt::test]
async fn stream_error_sends_an_error_event() {
    let sim = with_fault(FaultSpec {
        p_stream_error: 1.0,
        ..Default::default()
    })
    .await;
    let reply = post_chat(&sim, "d", &stream_body()).await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    let last: Value =
        serde_json::from_str(events.last().map_or("", String::as_str)).unwrap_or(Value::Null);
    assert_eq!(last["error"]["code"], "server_error");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    assert_eq!(sim.stats().deployment("d").stream_errors, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn faults_hit_the_configured_share_deterministically() {
    let run = |seed: u64| async move {
        let sim = start(SimConfig {
            seed,
            ..SimConfig::default().deployment(
                DeploymentSpec::new("d")
                    .rpm(1_000_000)
                    .tpm(10_000_000)
                    .faults(FaultSpec {
                        p_500: 0.25,
                        ..Default::default()
                    }),
            )
        })
        .await;
        let client = client();
        let url = chat_url(&sim.base_url(), "d");
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(post(&client, &url, KEY, &chat_body(5)).await.status);
        }
        sim.stop().await;
        statuses
    };
    let first = run(3).await;
    assert_eq!(first, run(3).await, "same seed, same faults");
    let failures = first.iter().filter(|s| **s == 500).count();
    assert!((3..=20).contains(&failures), "{failures} of 40");
}

#[actix_rt::test]
async fn status_503_outage_follows_the_schedule() {
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(DeploymentSpec::new("d").outage(OutageSpec::status_503(5, 10))),
    )
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    assert_eq!(post(&client, &url, KEY, &chat_body(5)).await.status, 200);
    sim.advance_clock(Duration::from_secs(5))
        .await
        .expect("manual clock");
    let down = post(&client, &url, KEY, &chat_body(5)).await;
    assert_eq!(down.status, 503);
    assert_eq!(down.error_code(), "ServiceUnavailable");
    sim.advance_clock(Duration::from_secs(5))
        .await
        .expect("manual clock");
    assert_eq!(post(&client, &url, KEY, &chat_body(5)).await.status, 200);
    sim.stop().await;
}

fn connect(url: &str) -> std::io::Result<TcpStream> {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    TcpStream::connect(addr)
}

#[actix_rt::test]
async fn refuse_outage_closes_the_deployments_own_port() {
    let sim = start(
        SimConfig::default()
            .manual_clock()
            .deployment(
                DeploymentSpec::new("own")
                    .own_listener()
                    .outage(OutageSpec::refuse(5, 10)),
            )
            .deployment(DeploymentSpec::new("shared")),
    )
    .await;
    let own = sim.endpoint_for("own").expect("own listener");
    assert_ne!(own, sim.base_url());
    assert_eq!(sim.endpoint_for("shared"), Some(sim.base_url()));
    // The deployment lives on its own port only.
    assert_eq!(post_chat(&sim, "own", &chat_body(5)).await.status, 404);
    assert_eq!(
        post(&client(), &chat_url(&own, "own"), KEY, &chat_body(5))
            .await
            .status,
        200
    );

    sim.advance_clock(Duration::from_secs(5))
        .await
        .expect("manual clock");
    let refused = connect(&own);
    assert_eq!(
        refused.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    // The shared listener is unaffected.
    assert_eq!(post_chat(&sim, "shared", &chat_body(5)).await.status, 200);

    sim.advance_clock(Duration::from_secs(5))
        .await
        .expect("manual clock");
    assert_eq!(
        post(&client(), &chat_url(&own, "own"), KEY, &chat_body(5))
            .await
            .status,
        200
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn set_refusing_takes_a_listener_down_and_up_on_the_same_port() {
    let sim =
        start(SimConfig::default().deployment(DeploymentSpec::new("own").own_listener())).await;
    let own = sim.endpoint_for("own").expect("own listener");
    sim.set_refusing("own", true)
        .await
        .expect("own listener stops");
    assert!(connect(&own).is_err());
    sim.set_refusing("own", false)
        .await
        .expect("own listener restarts");
    assert_eq!(sim.endpoint_for("own").as_deref(), Some(own.as_str()));
    assert_eq!(
        post(&client(), &chat_url(&own, "own"), KEY, &chat_body(5))
            .await
            .status,
        200
    );
    assert!(matches!(
        sim.set_refusing("missing", true).await,
        Err(aoai_sim::SimError::UnknownDeployment(_))
    ));
    sim.stop().await;
}

#[actix_rt::test]
async fn refuse_outage_in_force_at_start_on_the_real_clock() {
    let sim = start(
        SimConfig::default().deployment(
            DeploymentSpec::new("down")
                .own_listener()
                .outage(OutageSpec::refuse(0, 3_600)),
        ),
    )
    .await;
    let own = sim.endpoint_for("down").expect("own listener");
    assert!(connect(&own).is_err(), "refused from the first instant");
    assert!(matches!(
        sim.advance_clock(Duration::from_secs(1)).await,
        Err(aoai_sim::SimError::RealClock)
    ));
    sim.stop().await;
}

#[actix_rt::test]
async fn throttle_fault_answers_429_with_a_long_retry_after() {
    let sim = with_fault(FaultSpec {
        p_429: 1.0,
        retry_after_secs: 86_400,
        ..Default::default()
    })
    .await;
    let reply = post_chat(&sim, "d", &chat_body(5)).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header_u64("retry-after"), 86_400);
    assert_eq!(reply.header_u64("retry-after-ms"), 86_400_000);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Please retry after 86400 seconds."))
    );
    assert_eq!(sim.stats().deployment("d").rate_limited, 1);
    sim.stop().await;
}
