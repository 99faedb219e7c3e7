//! The gateway end to end over loopback: a simulator (or a recording server this test starts)
//! behind it, requests with awc.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use aoai_blaster_gateway::{Gateway, GatewayOptions, ServeError};
use aoai_sim::{DeploymentSpec, FaultSpec, LatencySpec};
use common::*;
use serde_json::{Value, json};

#[actix_rt::test]
async fn routes_by_model_and_answers_the_upstream_completion() {
    let sim = sim(vec![
        DeploymentSpec::new("gpt-4o"),
        DeploymentSpec::new("o3"),
    ])
    .await;
    let gw = gateway(config(
        vec![
            deployment(&sim, "east", "gpt-4o"),
            deployment(&sim, "west", "gpt-4o"),
            deployment(&sim, "think", "o3"),
        ],
        json!({"gateway": {"model_alias": {"reasoning": "o3"}}}),
    ))
    .await;
    let served_by = |reply: &Reply| reply.header("x-aoai-blaster-deployment").map(str::to_owned);

    // A model name spreads over its deployments; a deployment name pins; an alias follows.
    let mut seen = Vec::new();
    for i in 0..4 {
        let body = chat(Some("gpt-4o"), &format!("spread {i}"));
        let reply = post(&gw, "/v1/chat/completions", &body).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let content = reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(content.starts_with(&digest_of(&body)), "{content}");
        assert!(reply.overhead_ms() >= 0.0);
        seen.push(served_by(&reply).unwrap());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["east", "west"]);
    let pinned = post(&gw, "/v1/chat/completions", &chat(Some("west"), "pin")).await;
    assert_eq!(served_by(&pinned).as_deref(), Some("west"));
    let alias = post(&gw, "/v1/chat/completions", &chat(Some("reasoning"), "a")).await;
    assert_eq!(served_by(&alias).as_deref(), Some("think"));

    // Azure's forms.
    let azure = post(
        &gw,
        "/openai/deployments/o3/chat/completions?api-version=2024-10-21",
        &chat(None, "azure"),
    )
    .await;
    assert_eq!(served_by(&azure).as_deref(), Some("think"));
    let v1 = post(&gw, "/openai/v1/chat/completions", &chat(Some("o3"), "v1")).await;
    assert_eq!(served_by(&v1).as_deref(), Some("think"));
    assert_eq!(sim.stats().deployment("o3").requests, 3);
    let any = post(&gw, "/v1/chat/completions", &chat(None, "any")).await;
    assert_eq!(any.status, 200);

    // Unknown model: OpenAI's 404.
    let unknown = post(&gw, "/v1/chat/completions", &chat(Some("gpt-5"), "x")).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), "model_not_found");
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-4o")
    );
    assert!(unknown.overhead_ms() >= 0.0);

    // Models, health, metrics, the operations not served yet, unknown paths.
    let models = get(&gw, "/v1/models").await;
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["gpt-4o", "o3", "east", "west", "think", "reasoning"]);
    assert_eq!(
        get(&gw, "/v1/models/reasoning").await.json()["deployments"],
        json!(["think"])
    );
    assert_eq!(
        get(&gw, "/v1/models/nope").await.error_code(),
        "model_not_found"
    );
    let health = get(&gw, "/healthz").await;
    assert_eq!(
        (health.status, &health.json()["status"]),
        (200, &json!("ok"))
    );
    let nowhere = get(&gw, "/v2/whatever").await;
    assert_eq!(
        (nowhere.status, nowhere.error_code()),
        (404, "not_found".into())
    );
    let bad = send(
        client()
            .post(url(&gw, "/v1/chat/completions"))
            .insert_header(("content-type", "application/json")),
        None,
    )
    .await;
    assert_eq!((bad.status, bad.error_code()), (400, "invalid_body".into()));
    let metrics = String::from_utf8_lossy(&get(&gw, "/metrics").await.body).into_owned();
    assert!(
        metrics.contains("aoai_blaster_gateway_overhead_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("aoai_blaster_requests_total"), "{metrics}");
    gw.stop().await;
}

/// What the recording upstream saw: each request's headers and body.
type Seen = Arc<Mutex<Vec<(Vec<(String, String)>, Value)>>>;

/// The recording upstream's completion, spaced and escaped as no serialiser of ours would
/// write it: a gateway reply equal to it byte for byte was passed on, not rewritten.
const UPSTREAM_REPLY: &str = r#"{ "id": "chatcmpl-fixed", "object": "chat.completion", "created": 7,
  "model": "gpt-4o", "system_fingerprint": "fp_kept", "note": "caf\u00e9", "score": 1.50,
  "choices": [ {"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "fixed"}} ],
  "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4} }"#;

/// An upstream this test starts: records each request, answers one fixed completion.
async fn recording_upstream() -> (String, Seen, actix_web::dev::ServerHandle) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let server = HttpServer::new(move || {
        let record = record.clone();
        App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
            let record = record.clone();
            async move {
                let headers = request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                record.lock().unwrap().push((headers, body));
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(UPSTREAM_REPLY)
            }
        }))
    })
    .workers(1)
    .shutdown_timeout(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (format!("http://{addr}/"), seen, handle)
}

#[actix_rt::test]
async fn with_several_workers_the_dispatcher_runs_on_its_own_thread_and_serves_them_all() {
    let sim = sim(vec![DeploymentSpec::new("gpt-4o")]).await;
    let mut options = GatewayOptions::new("127.0.0.1:0");
    options.workers = 2;
    let config = config(vec![deployment(&sim, "east", "gpt-4o")], json!({}));
    let gw = Gateway::start(config, options)
        .await
        .expect("the gateway starts");
    let bodies: Vec<Value> = (0..6)
        .map(|i| chat(Some("gpt-4o"), &format!("w{i}")))
        .collect();
    let replies =
        futures_util::future::join_all(bodies.iter().map(|b| post(&gw, "/v1/chat/completions", b)))
            .await;
    for (body, reply) in bodies.iter().zip(&replies) {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let content = reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(content.starts_with(&digest_of(body)), "{content}");
    }
    assert_eq!(gw.requests_held(), 0);
    gw.stop().await;
}

#[actix_rt::test]
async fn embeddings_and_responses_go_to_the_deployments_that_serve_them() {
    let sim = sim(vec![
        DeploymentSpec::new("gpt-4o"),
        DeploymentSpec::new("embed").embedding_dimensions(4),
    ])
    .await;
    let mut embed = deployment(&sim, "embed-east", "embed");
    embed["operations"] = json!(["embeddings"]);
    let mut embed_v1 = deployment(&sim, "embed-v1", "embed");
    embed_v1["operations"] = json!(["embeddings"]);
    embed_v1["api_version"] = json!("v1");
    let mut gpt_v1 = deployment(&sim, "gpt-v1", "gpt-4o");
    gpt_v1["operations"] = json!(["responses", "chat"]);
    gpt_v1["api_version"] = json!("v1");
    let gw = gateway(config(vec![embed, embed_v1, gpt_v1], json!({}))).await;

    // Embeddings by model (either deployment), by name, and in Azure's two forms.
    let cases = [
        ("/v1/embeddings", Some("embed"), None),
        ("/v1/embeddings", Some("embed-v1"), Some("embed-v1")),
        (
            "/openai/v1/embeddings",
            Some("embed-east"),
            Some("embed-east"),
        ),
        (
            "/openai/deployments/embed-east/embeddings?api-version=2024-10-21",
            None,
            Some("embed-east"),
        ),
    ];
    for (i, (path, model, served_by)) in cases.into_iter().enumerate() {
        let input = json!([format!("text {i}"), "and more"]);
        let mut body = json!({"input": input});
        if let Some(model) = model {
            body["model"] = json!(model);
        }
        let reply = post(&gw, path, &body).await;
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        let answer = reply.json();
        for (index, text) in input.as_array().unwrap().iter().enumerate() {
            let got: Vec<f32> =
                serde_json::from_value(answer["data"][index]["embedding"].clone()).unwrap();
            assert_eq!(
                got,
                aoai_sim::embedding_vector(text, 4),
                "{path} input {index}"
            );
        }
        let deployment = reply.header("x-aoai-blaster-deployment").unwrap();
        assert!(deployment.starts_with("embed"), "{deployment}");
        if let Some(expected) = served_by {
            assert_eq!(deployment, expected, "{path}");
        }
        assert!(reply.overhead_ms() >= 0.0);
    }

    // Responses: only the v1 deployment serves them.
    for path in ["/v1/responses", "/openai/v1/responses"] {
        let input = json!(format!("respond via {path}"));
        let body = json!({"model": "gpt-4o", "input": input, "max_output_tokens": 50});
        let reply = post(&gw, path, &body).await;
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        let answer = reply.json();
        assert_eq!(answer["object"], "response");
        let text = answer["output"][0]["content"][0]["text"].as_str().unwrap();
        let digest = aoai_sim::messages_digest(&input);
        assert!(text.starts_with(&format!("digest={digest} ")), "{text}");
        assert_eq!(reply.header("x-aoai-blaster-deployment"), Some("gpt-v1"));
    }

    // Errors keep OpenAI's shape.
    let unknown = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": "nope", "input": "x"}),
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.error_code()),
        (404, "model_not_found".into())
    );
    let no_input = post(&gw, "/v1/embeddings", &json!({"model": "embed"})).await;
    assert_eq!(no_input.status, 400);
    let message = no_input.json()["error"]["message"].to_string();
    assert!(message.contains("input"), "{message}");
    let streamed = json!({"model": "embed", "input": "x", "stream": true});
    let refused = post(&gw, "/v1/embeddings", &streamed).await;
    assert_eq!(refused.status, 400);
    let message = refused.json()["error"]["message"].to_string();
    assert!(message.contains("never streamed"), "{message}");
    gw.stop().await;
}

/// The `(event, data)` pairs of a Responses event stream, in order.
fn named_events(reply: &Reply) -> Vec<(String, Value)> {
    String::from_utf8_lossy(&reply.body)
        .split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let field = |name: &str| {
                event
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {event:?}"))
            };
            let data = serde_json::from_str(field("data: ")).expect("data is JSON");
            (field("event: ").to_owned(), data)
        })
        .collect()
}

#[actix_rt::test]
async fn a_responses_stream_passes_each_event_on_and_a_failure_ends_with_an_error_event() {
    let failing = FaultSpec {
        p_stream_error: 1.0,
        ..FaultSpec::default()
    };
    let sim = sim(vec![
        DeploymentSpec::new("gpt-4o").reply_tokens(8),
        DeploymentSpec::new("o3").reply_tokens(12).faults(failing),
    ])
    .await;
    let v1 = |name: &str, model: &str| {
        let mut deployment = deployment(&sim, name, model);
        deployment["operations"] = json!(["responses"]);
        deployment["api_version"] = json!("v1");
        deployment
    };
    let gw = gateway(config(
        vec![v1("gpt-v1", "gpt-4o"), v1("o3-v1", "o3")],
        json!({"max_job_retry": 1, "backoff_base": "1ms", "backoff_max": "2ms"}),
    ))
    .await;
    let input = json!("stream this response");
    let body = json!({"model": "gpt-4o", "input": input, "stream": true});
    let reply = post(&gw, "/v1/responses", &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = named_events(&reply);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"), "{names:?}");
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    let deltas = names
        .iter()
        .filter(|name| **name == "response.output_text.delta")
        .count();
    assert!(deltas >= 4, "text deltas one by one: {names:?}");
    // Each event as the upstream wrote it: its own type, numbered in order.
    for (index, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], index, "{names:?}");
    }
    let text: String = events
        .iter()
        .filter_map(|(_, data)| data["delta"].as_str())
        .collect();
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(
        completed["output"][0]["content"][0]["text"].as_str(),
        Some(text.as_str())
    );
    let digest = aoai_sim::messages_digest(&input);
    assert!(text.starts_with(&format!("digest={digest} ")), "{text}");

    // Failing after its first events: an error event ends the stream, and no retry.
    let failing = json!({"model": "o3", "input": "fail midway", "stream": true});
    let cut = post(&gw, "/v1/responses", &failing).await;
    assert_eq!(cut.status, 200);
    let events = named_events(&cut);
    let (name, error) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "stream_interrupted", "{error}");
    assert!(
        !events.iter().any(|(name, _)| name == "response.completed"),
        "{events:?}"
    );
    assert!(
        events.len() >= 3,
        "events came before the error: {events:?}"
    );
    assert_eq!(
        sim.stats().deployment("o3").requests,
        1,
        "no retry after an event"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn the_body_goes_upstream_without_routing_keys_and_keys_are_checked_not_forwarded() {
    let (endpoint, seen, upstream) = recording_upstream().await;
    let deployment = json!({"name": "east", "endpoint": endpoint, "api_key": "upstream-key-0123456789", "model": "gpt-4o"});
    let gw = gateway(config(
        vec![deployment],
        json!({"gateway": {"api_keys": ["sk-literal-0123456789", "env:GATEWAY_TEST_KEY"]}}),
    ))
    .await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                      "seed": 7, "response_format": {"type": "json_object"}});
    let target = url(&gw, "/v1/chat/completions");

    let missing = send(client().post(&target), Some(&body)).await;
    assert_eq!(
        (missing.status, missing.error_code()),
        (401, "invalid_api_key".into())
    );
    let wrong = send(
        client().post(&target).bearer_auth("sk-literal-0123456788"),
        Some(&body),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid API key")
    );
    assert_eq!(get(&gw, "/v1/models").await.status, 401);
    assert!(
        seen.lock().unwrap().is_empty(),
        "refused requests go nowhere"
    );

    let bearer = send(
        client().post(&target).bearer_auth("sk-literal-0123456789"),
        Some(&body),
    )
    .await;
    assert_eq!(bearer.status, 200, "{:?}", bearer.body);
    assert_eq!(
        bearer.body,
        UPSTREAM_REPLY.as_bytes(),
        "the upstream's bytes"
    );
    let reply = bearer.json();
    assert_eq!(reply["id"], "chatcmpl-fixed");
    assert_eq!(reply["system_fingerprint"], "fp_kept");
    assert_eq!(reply["choices"][0]["message"]["content"], "fixed");
    let api_key = send(
        client()
            .post(&target)
            .insert_header(("api-key", "sk-from-env-0123456789")),
        Some(&body),
    )
    .await;
    assert_eq!(api_key.status, 200);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (headers, sent) in &seen {
        assert_eq!(
            sent,
            &json!({"messages": [{"role": "user", "content": "hi"}], "seed": 7,
                    "response_format": {"type": "json_object"}})
        );
        let values: Vec<&str> = headers.iter().map(|(_, v)| v.as_str()).collect();
        assert!(values.contains(&"upstream-key-0123456789"), "{headers:?}");
        assert!(
            !values
                .iter()
                .any(|v| v.contains("sk-literal") || v.contains("sk-from-env")),
            "the client's key went upstream: {headers:?}"
        );
    }
    gw.stop().await;
    upstream.stop(false).await;
}

#[actix_rt::test]
async fn without_keys_only_loopback_is_served_unless_allowed() {
    let sim = sim(vec![DeploymentSpec::new("gpt-4o")]).await;
    let open = || config(vec![deployment(&sim, "east", "gpt-4o")], json!({}));
    let refused = Gateway::start(open(), GatewayOptions::new("0.0.0.0:0")).await;
    let Err(error @ ServeError::Unauthenticated { .. }) = refused else {
        panic!("expected a refusal");
    };
    assert!(
        error.to_string().contains("--allow-unauthenticated"),
        "{error}"
    );
    let mut allowed = GatewayOptions::new("0.0.0.0:0");
    allowed.allow_unauthenticated = true;
    allowed.workers = 1;
    let gw = Gateway::start(open(), allowed).await.expect("allowed");
    gw.stop().await;
    let keyed = config(
        vec![deployment(&sim, "east", "gpt-4o")],
        json!({"gateway": {"api_keys": ["sk-literal-0123456789"]}}),
    );
    let mut options = GatewayOptions::new("0.0.0.0:0");
    options.workers = 1;
    Gateway::start(keyed, options)
        .await
        .expect("keys make it safe")
        .stop()
        .await;
}

#[actix_rt::test]
async fn streams_deltas_then_finish_usage_and_done() {
    let sim = sim(vec![DeploymentSpec::new("gpt-4o").reply_tokens(12)]).await;
    let gw = gateway(config(vec![deployment(&sim, "east", "gpt-4o")], json!({}))).await;
    let mut body = chat(Some("gpt-4o"), "stream me");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert!(reply.overhead_ms() >= 0.0);
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("each event is a chunk"))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.starts_with(&digest_of(&body)), "{text}");
    assert!(chunks.len() >= 4, "deltas one by one: {events:?}");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // Without include_usage, no usage chunk.
    body["stream_options"] = json!({"include_usage": false});
    let plain = post(&gw, "/v1/chat/completions", &body).await.events();
    assert!(!plain.iter().any(|e| e.contains("\"usage\"")), "{plain:?}");
    gw.stop().await;
}

#[actix_rt::test]
async fn a_stream_failing_midway_ends_with_an_error_event_and_before_a_delta_with_a_status() {
    let failing = FaultSpec {
        p_stream_error: 1.0,
        ..FaultSpec::default()
    };
    let broken = FaultSpec {
        p_500: 1.0,
        ..FaultSpec::default()
    };
    let sim = sim(vec![
        DeploymentSpec::new("gpt-4o")
            .reply_tokens(12)
            .faults(failing),
        DeploymentSpec::new("o3").faults(broken),
    ])
    .await;
    let gw = gateway(config(
        vec![
            deployment(&sim, "east", "gpt-4o"),
            deployment(&sim, "think", "o3"),
        ],
        json!({"max_job_retry": 1, "backoff_base": "1ms", "backoff_max": "2ms"}),
    ))
    .await;
    let mut body = chat(Some("gpt-4o"), "fail midway");
    body["stream"] = json!(true);
    let reply = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    assert!(
        events.len() >= 2,
        "deltas came before the error: {events:?}"
    );
    assert_eq!(
        sim.stats().deployment("gpt-4o").requests,
        1,
        "no retry after a delta"
    );

    body["model"] = json!("o3");
    let early = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(early.status, 502);
    assert_eq!(early.error_code(), "retries_exhausted");
    assert_eq!(
        sim.stats().deployment("o3").requests,
        2,
        "retried before any delta"
    );
    gw.stop().await;
}

fn slow(name: &str, ms: u64) -> DeploymentSpec {
    DeploymentSpec::new(name).latency(LatencySpec {
        ttft_ms: ms,
        ..LatencySpec::default()
    })
}

/// A chat request sent in the background: its status, when awaited.
fn spawn_chat(gw: &Arc<Gateway>, text: &'static str) -> actix_rt::task::JoinHandle<u16> {
    let gw = gw.clone();
    actix_rt::spawn(async move {
        post(&gw, "/v1/chat/completions", &chat(None, text))
            .await
            .status
    })
}

#[actix_rt::test]
async fn a_full_queue_answers_429_naming_when_room_will_exist() {
    let sim = sim(vec![slow("gpt-4o", 400)]).await;
    let gw = gateway(config(
        vec![deployment(&sim, "east", "gpt-4o")],
        json!({"num_workers": 1, "queue_capacity": 1}),
    ))
    .await;
    let gw = Arc::new(gw);
    let first = spawn_chat(&gw, "one");
    let second = spawn_chat(&gw, "two");
    until("two requests held", || gw.requests_held() == 2).await;
    let third = post(&gw, "/v1/chat/completions", &chat(None, "three")).await;
    assert_eq!(third.status, 429);
    assert_eq!(third.error_code(), "queue_full");
    let millis: u64 = third.header("retry-after-ms").unwrap().parse().unwrap();
    let seconds: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((100..=2_000).contains(&millis), "{millis}");
    assert_eq!(seconds, millis.div_ceil(1000));
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (200, 200));
    assert_eq!(gw.requests_held(), 0);
    assert_eq!(sim.stats().deployment("gpt-4o").requests, 2);
}

#[actix_rt::test]
async fn a_wait_beyond_max_wait_answers_429_with_the_cooldown_left() {
    let throttled = FaultSpec {
        p_429: 1.0,
        retry_after_secs: 30,
        ..FaultSpec::default()
    };
    let sim = sim(vec![DeploymentSpec::new("gpt-4o").faults(throttled)]).await;
    let gw = gateway(config(
        vec![deployment(&sim, "east", "gpt-4o")],
        json!({"max_wait": "1s"}),
    ))
    .await;
    let reply = post(&gw, "/v1/chat/completions", &chat(None, "wait")).await;
    assert_eq!(reply.status, 429, "{:?}", reply.body);
    assert_eq!(reply.error_code(), "no_endpoint_available");
    let millis: u64 = reply.header("retry-after-ms").unwrap().parse().unwrap();
    assert!((25_000..=30_000).contains(&millis), "{millis}");
    assert_eq!(
        reply.header("retry-after"),
        Some(millis.div_ceil(1000).to_string().as_str())
    );
    assert_eq!(sim.stats().deployment("gpt-4o").requests, 1);
    // Streamed, the same 429 (nothing was sent yet, so it is a status, not an event).
    let mut body = chat(None, "wait");
    body["stream"] = json!(true);
    let streamed = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(streamed.status, 429);
    assert!(streamed.header("retry-after-ms").is_some());
}

#[actix_rt::test]
async fn a_client_that_disconnects_cancels_its_unsent_job() {
    let sim = sim(vec![slow("gpt-4o", 500)]).await;
    let gw = Arc::new(
        gateway(config(
            vec![deployment(&sim, "east", "gpt-4o")],
            json!({"num_workers": 1}),
        ))
        .await,
    );
    let first = spawn_chat(&gw, "first");
    until("the first request in flight", || {
        sim.stats().deployment("gpt-4o").in_flight == 1
    })
    .await;
    // The second waits behind it; its client goes away.
    let body = chat(None, "leaves").to_string();
    let mut socket = std::net::TcpStream::connect(gw.local_addr()).unwrap();
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    until("the second request held", || gw.requests_held() == 2).await;
    drop(socket);
    until("the second request let go", || gw.requests_held() == 1).await;
    assert_eq!(first.await.unwrap(), 200);
    // A later request is placed after where the second was: had it been sent, it would be now.
    let third = post(&gw, "/v1/chat/completions", &chat(None, "third")).await;
    assert_eq!(third.status, 200);
    assert_eq!(
        sim.stats().deployment("gpt-4o").requests,
        2,
        "the second never went out"
    );
}

#[actix_rt::test]
async fn the_first_delta_reaches_the_client_while_the_upstream_still_streams() {
    use futures_util::StreamExt;
    let paced = DeploymentSpec::new("gpt-4o")
        .reply_tokens(20)
        .latency(LatencySpec {
            per_token_ms: 100,
            ..LatencySpec::default()
        });
    let sim = sim(vec![paced]).await;
    let gw = gateway(config(vec![deployment(&sim, "east", "gpt-4o")], json!({}))).await;
    let mut body = chat(None, "slowly");
    body["stream"] = json!(true);
    let mut response = client()
        .post(url(&gw, "/v1/chat/completions"))
        .send_json(&body)
        .await
        .expect("the gateway answers");
    assert_eq!(response.status().as_u16(), 200);
    let first = response
        .next()
        .await
        .expect("a first chunk")
        .expect("bytes");
    assert!(first.starts_with(b"data: {"), "{first:?}");
    // Two seconds of tokens upstream: the first one is here, the stream is still going.
    assert_eq!(sim.stats().deployment("gpt-4o").in_flight, 1);
    let mut rest = Vec::new();
    while let Some(chunk) = response.next().await {
        rest.extend_from_slice(&chunk.expect("bytes"));
    }
    assert!(rest.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(sim.stats().deployment("gpt-4o").in_flight, 0);
    gw.stop().await;
}
