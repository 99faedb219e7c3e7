//! Streaming framing over HTTP.

use std::time::{Duration, Instant};

use aoai_sim::{DeploymentSpec, LatencySpec, SimConfig, messages_digest};
use serde_json::{Value, json};

use crate::common::{KEY, chat_url, client, post, post_chat, start};

fn parse(event: &str) -> Value {
    serde_json::from_str(event).unwrap_or_else(|err| panic!("event {event:?} is not JSON: {err}"))
}

#[actix_rt::test]
async fn stream_is_framed_like_azure() {
    let sim =
        start(SimConfig::default().deployment(DeploymentSpec::new("d").reply_tokens(6))).await;
    let messages = json!([{"role": "user", "content": "stream me"}]);
    let body = json!({
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let reply = post_chat(&sim, "d", &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = reply.events();
    // prompt filter, role, 6 pieces, finish, usage, [DONE]
    assert_eq!(events.len(), 1 + 1 + 6 + 1 + 1 + 1, "{events:#?}");

    let first = parse(&events[0]);
    assert_eq!(first["choices"], json!([]));
    assert!(first["prompt_filter_results"].is_array());

    let role = parse(&events[1]);
    assert_eq!(role["object"], "chat.completion.chunk");
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");

    let content: String = events[2..8]
        .iter()
        .map(|event| {
            let chunk = parse(event);
            assert!(chunk["choices"][0]["finish_reason"].is_null());
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        content.starts_with(&format!("digest={} ", messages_digest(&messages))),
        "{content}"
    );
    assert_eq!(content.split(' ').count(), 6);

    let finish = parse(&events[8]);
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));

    let usage = parse(&events[9]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert_eq!(
        usage["usage"]["total_tokens"].as_u64(),
        usage["usage"]["prompt_tokens"].as_u64().map(|p| p + 6)
    );
    assert_eq!(events[10], "[DONE]");
    assert_eq!(sim.stats().deployment("d").ok, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn stream_without_usage_option_has_no_usage_chunk_and_honours_n() {
    let sim =
        start(SimConfig::default().deployment(DeploymentSpec::new("d").reply_tokens(3))).await;
    let body = json!({
        "messages": [{"role": "user", "content": "two please"}],
        "stream": true,
        "n": 2,
        "max_tokens": 2,
    });
    let reply = post_chat(&sim, "d", &body).await;
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(!events.iter().any(|e| e.contains("\"usage\"")));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| parse(e))
        .collect();
    for index in 0..2 {
        let finishes: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == index)
            .filter_map(|c| c["choices"][0].get("finish_reason"))
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, [&json!("length")], "choice {index}");
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn stream_is_paced_by_the_latency_model() {
    let latency = LatencySpec {
        ttft_ms: 40,
        per_token_ms: 10,
        jitter_ms: 0,
    };
    let sim = start(
        SimConfig::default().deployment(DeploymentSpec::new("d").reply_tokens(4).latency(latency)),
    )
    .await;
    let client = client();
    let url = chat_url(&sim.base_url(), "d");
    let started = Instant::now();
    let body = json!({"messages": [{"role": "user", "content": "x"}], "stream": true});
    let reply = post(&client, &url, KEY, &body).await;
    assert_eq!(reply.status, 200);
    // 40 ms to the first token, then 3 x 10 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(70),
        "{:?}",
        started.elapsed()
    );
    // The simulator's own processing time excludes the latency it was told to add.
    assert!(reply.header_u64("x-sim-processing-us") < 40_000);

    let started = Instant::now();
    let body = json!({"messages": [{"role": "user", "content": "x"}]});
    let reply = post(&client, &url, KEY, &body).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "{:?}",
        started.elapsed()
    );
    assert!(reply.header_u64("x-sim-processing-us") < 40_000);
    sim.stop().await;
}
