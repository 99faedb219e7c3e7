//! Routes, auth, error shapes, replies, the managed-identity endpoint and the stats endpoint.

use std::time::Duration;

use aoai_sim::{
    DeploymentSpec, LatencySpec, ManagedIdentitySpec, SimConfig, SimStats, messages_digest,
};
use bytes::Bytes;
use serde_json::json;

use crate::common::{
    Auth, KEY, chat_body, chat_url, client, get, post, post_chat, post_raw, start,
};

fn one(name: &str) -> SimConfig {
    SimConfig::default().deployment(DeploymentSpec::new(name))
}

#[actix_rt::test]
async fn reply_is_a_chat_completion_carrying_the_digest() {
    let sim =
        start(SimConfig::default().deployment(DeploymentSpec::new("gpt-4o").reply_tokens(12)))
            .await;
    let messages = json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "request 17"}
    ]);
    let body = json!({"messages": messages, "n": 3});
    let reply = post_chat(&sim, "gpt-4o", &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("x-request-id").is_some());
    assert_eq!(
        reply.header("x-request-id"),
        reply.header("apim-request-id")
    );
    let _processing_us = reply.header_u64("x-sim-processing-us");
    let completion = reply.json();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "gpt-4o");
    assert!(
        completion["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert!(completion["created"].as_u64().is_some());
    let choices = completion["choices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(choices.len(), 3);
    let digest = messages_digest(&messages);
    for (index, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], index);
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["finish_reason"], "stop");
        let content = choice["message"]["content"].as_str().unwrap_or_default();
        assert!(
            content.starts_with(&format!("digest={digest} ")),
            "{content}"
        );
        assert_eq!(content.split(' ').count(), 12);
    }
    // prompt: (3 + 2) + (3 + 3) + 3 = 14
    assert_eq!(
        completion["usage"],
        json!({"prompt_tokens": 14, "completion_tokens": 36, "total_tokens": 50})
    );
    assert_eq!(sim.stats().deployment("gpt-4o").used_tokens, 50);
    sim.stop().await;
}

#[actix_rt::test]
async fn max_tokens_cuts_the_reply_with_finish_reason_length() {
    let sim =
        start(SimConfig::default().deployment(DeploymentSpec::new("d").reply_tokens(40))).await;
    let reply = post_chat(&sim, "d", &chat_body(5)).await;
    let completion = reply.json();
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 5);
    let content = completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(content.split(' ').count(), 5);
    sim.stop().await;
}

#[actix_rt::test]
async fn v1_route_takes_the_deployment_from_model() {
    let sim = start(one("gpt-4o-mini")).await;
    let url = format!("{}openai/v1/chat/completions", sim.base_url());
    let client = client();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&client, &url, KEY, &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["model"], "gpt-4o-mini");
    let unknown = json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        post(&client, &url, KEY, &unknown).await.error_code(),
        "DeploymentNotFound"
    );
    let no_model = json!({"messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&client, &url, KEY, &no_model).await.status, 400);
    sim.stop().await;
}

#[actix_rt::test]
async fn auth_by_key_or_bearer_and_401_otherwise() {
    let sim = start(one("d")).await;
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    assert_eq!(post(&client, &url, KEY, &chat_body(5)).await.status, 200);
    assert_eq!(
        post(
            &client,
            &url,
            Auth::Bearer(aoai_sim::DEFAULT_BEARER_TOKEN),
            &chat_body(5)
        )
        .await
        .status,
        200
    );
    for auth in [Auth::Key("wrong"), Auth::None] {
        let reply = post(&client, &url, auth, &chat_body(5)).await;
        assert_eq!(reply.status, 401, "{auth:?}");
        assert_eq!(reply.error_code(), "401");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.starts_with(
                "Access denied due to invalid subscription key or wrong API endpoint."
            )
        );
    }
    let bad_token = post(&client, &url, Auth::Bearer("wrong"), &chat_body(5)).await;
    assert_eq!(bad_token.status, 401);
    assert!(
        bad_token.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Access token"))
    );
    assert_eq!(sim.stats().deployment("d").client_errors, 3);
    sim.stop().await;
}

#[actix_rt::test]
async fn error_shapes_for_routes_and_bodies() {
    let sim = start(one("d")).await;
    let client = client();
    let base = sim.base_url();

    let unknown = post(&client, &chat_url(&base, "nope"), KEY, &chat_body(5)).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), "DeploymentNotFound");
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("The API deployment for this resource does not exist."))
    );

    let no_version = format!("{base}openai/deployments/d/chat/completions");
    let reply = post(&client, &no_version, KEY, &chat_body(5)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "MissingApiVersionParameter");

    let url = chat_url(&base, "d");
    let cases: [(Bytes, &str); 4] = [
        (
            Bytes::from_static(b"{not json"),
            "could not parse the JSON body",
        ),
        (
            Bytes::from_static(b"{}"),
            "'messages' is a required property",
        ),
        (
            Bytes::from_static(br#"{"messages": "hi"}"#),
            "is not of type 'array'",
        ),
        (
            Bytes::from_static(br#"{"messages": [{"role": "user"}], "max_tokens": -1}"#),
            "max_tokens",
        ),
    ];
    for (body, expected) in cases {
        let reply = post_raw(&client, &url, KEY, body).await;
        assert_eq!(reply.status, 400);
        let error = &reply.json()["error"];
        assert_eq!(error["code"], "BadRequest");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains(expected)),
            "{error}"
        );
    }

    let other = get(&client, &format!("{base}openai/models")).await;
    assert_eq!(other.status, 404);
    assert_eq!(other.error_code(), "404");
    let stats = sim.stats();
    assert_eq!(stats.unrouted.requests, 1);
    assert_eq!(stats.deployment("d").client_errors, 5);
    sim.stop().await;
}

#[actix_rt::test]
async fn managed_identity_token_is_then_accepted_as_bearer() {
    let sim = start(SimConfig {
        managed_identity: Some(ManagedIdentitySpec::default()),
        ..one("d")
    })
    .await;
    let endpoint = sim
        .managed_identity_endpoint()
        .expect("managed identity configured");
    assert_eq!(endpoint, format!("{}msi/token", sim.base_url()));
    let client = client();
    // What azure_identity's App Service source sends.
    let url = format!(
        "{endpoint}?api-version=2019-08-01&resource=https%3A%2F%2Fcognitiveservices.azure.com&client_id=abc"
    );
    let denied = client.get(&url).send().await.expect("reply");
    assert_eq!(denied.status().as_u16(), 401);
    let mut response = client
        .get(&url)
        .insert_header((
            "X-IDENTITY-HEADER",
            ManagedIdentitySpec::default().identity_header,
        ))
        .insert_header(("metadata", "true"))
        .send()
        .await
        .expect("reply");
    assert_eq!(response.status().as_u16(), 200);
    let token: serde_json::Value = response.json().await.expect("token JSON");
    assert_eq!(token["resource"], "https://cognitiveservices.azure.com");
    assert_eq!(token["token_type"], "Bearer");
    let expires_on: u64 = token["expires_on"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("string epoch");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    assert!(expires_on >= now + 3_500 && expires_on <= now + 3_700);
    let access_token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let reply = post(
        &client,
        &chat_url(&sim.base_url(), "d"),
        Auth::Bearer(&access_token),
        &chat_body(5),
    )
    .await;
    assert_eq!(reply.status, 200);
    sim.stop().await;
}

#[actix_rt::test]
async fn stats_endpoint_matches_the_in_process_snapshot() {
    let latency = LatencySpec {
        ttft_ms: 50,
        per_token_ms: 0,
        jitter_ms: 0,
    };
    let sim = start(
        SimConfig::default().deployment(DeploymentSpec::new("d").rpm(1_000_000).latency(latency)),
    )
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    let body = chat_body(5);
    let replies =
        futures_util::future::join_all((0..8).map(|_| post(&client, &url, KEY, &body))).await;
    assert!(replies.iter().all(|r| r.status == 200));
    post(&client, &url, Auth::None, &body).await;

    let served: SimStats =
        serde_json::from_slice(&get(&client, &format!("{}stats", sim.base_url())).await.body)
            .expect("stats JSON");
    assert_eq!(served, sim.stats());
    let d = served.deployment("d");
    assert_eq!((d.requests, d.ok, d.client_errors), (9, 8, 1));
    assert_eq!(d.charged_tokens, 8 * 13);
    assert_eq!(d.in_flight, 0);
    assert!(d.peak_in_flight >= 2, "peak {}", d.peak_in_flight);

    let health = get(&client, &format!("{}healthz", sim.base_url())).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    sim.stop().await;
}

#[actix_rt::test]
async fn stop_closes_the_listener() {
    let sim = start(one("d")).await;
    let addr = sim
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let started = std::time::Instant::now();
    sim.stop().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[actix_rt::test]
async fn a_taken_address_is_a_bind_error() {
    let first = start(one("d")).await;
    let taken = first
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let second = aoai_sim::start(SimConfig {
        bind: taken.clone(),
        ..one("d")
    })
    .await;
    match second {
        Err(aoai_sim::SimError::Bind { addr, .. }) => assert_eq!(addr, taken),
        other => panic!("expected a bind error, got {other:?}"),
    }
    first.stop().await;
}
