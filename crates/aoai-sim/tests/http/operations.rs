//! Embeddings and the Responses API, on both URL styles, with the same quotas, faults and
//! headers as chat.

use aoai_sim::{
    DeploymentSpec, FaultSpec, SimConfig, embedding_base64, embedding_vector, messages_digest,
};
use serde_json::{Value, json};

use crate::common::{API_VERSION, KEY, client, post, start};

fn deployment_url(base: &str, deployment: &str, op: &str) -> String {
    format!("{base}openai/deployments/{deployment}/{op}?api-version={API_VERSION}")
}

fn v1_url(base: &str, op: &str) -> String {
    format!("{base}openai/v1/{op}")
}

/// The data of a Responses stream body, each as (event name, JSON), checking the framing.
fn responses_events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let (name, data) = event
                .strip_prefix("event: ")
                .and_then(|rest| rest.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("not `event:` + `data:`: {event:?}"));
            let data: Value = serde_json::from_str(data).expect("data is JSON");
            assert_eq!(data["type"], name, "the type repeats the event name");
            (name.to_owned(), data)
        })
        .collect()
}

#[actix_rt::test]
async fn embeddings_on_both_routes_are_each_inputs_own_vector_charged_by_input_tokens() {
    let sim = start(
        SimConfig::default().deployment(DeploymentSpec::new("embed").embedding_dimensions(6)),
    )
    .await;
    let http = client();
    let inputs = json!(["first text", "second, a longer text", [101, 102, 103]]);
    let dated = post(
        &http,
        &deployment_url(&sim.base_url(), "embed", "embeddings"),
        KEY,
        &json!({"input": inputs}),
    )
    .await;
    let v1 = post(
        &http,
        &v1_url(&sim.base_url(), "embeddings"),
        KEY,
        &json!({"input": inputs, "model": "embed", "dimensions": 3}),
    )
    .await;
    for (reply, dimensions) in [(&dated, 6), (&v1, 3)] {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(reply.header("x-ratelimit-remaining-tokens").is_some());
        assert!(reply.header("x-sim-processing-us").is_some());
        let list = reply.json();
        assert_eq!(list["object"], "list");
        assert_eq!(list["model"], "embed");
        // ⌈10/4⌉ + ⌈21/4⌉ + 3 ids.
        assert_eq!(
            list["usage"],
            json!({"prompt_tokens": 3 + 6 + 3, "total_tokens": 12})
        );
        for (index, input) in inputs.as_array().unwrap().iter().enumerate() {
            assert_eq!(list["data"][index]["index"], index);
            assert_eq!(list["data"][index]["object"], "embedding");
            let vector: Vec<f32> =
                serde_json::from_value(list["data"][index]["embedding"].clone()).unwrap();
            assert_eq!(vector, embedding_vector(input, dimensions), "input {index}");
        }
    }
    let base64 = post(
        &http,
        &v1_url(&sim.base_url(), "embeddings"),
        KEY,
        &json!({"input": "first text", "model": "embed", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(
        base64.json()["data"][0]["embedding"],
        json!(embedding_base64(&embedding_vector(&json!("first text"), 6)))
    );
    let stats = sim.stats().deployment("embed");
    assert_eq!((stats.requests, stats.ok), (3, 3));
    assert_eq!(stats.charged_tokens, 12 + 12 + 3);
    let missing = post(
        &http,
        &v1_url(&sim.base_url(), "embeddings"),
        KEY,
        &json!({"input": "x"}),
    )
    .await;
    assert_eq!(
        missing.status, 400,
        "the v1 route needs the deployment in `model`"
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn embeddings_spend_the_same_token_quota_and_get_429s() {
    let sim = start(SimConfig::default().deployment(DeploymentSpec::new("embed").tpm(20))).await;
    let http = client();
    let url = deployment_url(&sim.base_url(), "embed", "embeddings");
    // 12 token ids: the first fits in 20 TPM, the second does not.
    let body = json!({"input": [vec![1; 12]]});
    assert_eq!(post(&http, &url, KEY, &body).await.status, 200);
    let refused = post(&http, &url, KEY, &body).await;
    assert_eq!(refused.status, 429);
    assert!(refused.header_u64("retry-after-ms") > 0);
    assert_eq!(refused.error_code(), "429");
    sim.stop().await;
}

#[actix_rt::test]
async fn responses_plain_and_streamed_carry_the_input_digest_and_usage() {
    let sim =
        start(SimConfig::default().deployment(DeploymentSpec::new("gpt-5").reply_tokens(5))).await;
    let http = client();
    let input = json!("Write one line about queues.");
    let digest = messages_digest(&input);
    let body = json!({"input": input, "model": "gpt-5", "instructions": "Be brief."});
    let plain = post(&http, &v1_url(&sim.base_url(), "responses"), KEY, &body).await;
    assert_eq!(plain.status, 200);
    let response = plain.json();
    assert_eq!(
        (response["object"].as_str(), response["status"].as_str()),
        (Some("response"), Some("completed"))
    );
    let text = response["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.starts_with(&format!("digest={digest} ")), "{text}");
    assert_eq!(text.split(' ').count(), 5);
    // Instructions (3 + ⌈9/4⌉) and input (3 + ⌈28/4⌉) messages, plus 3.
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 6 + 10 + 3, "output_tokens": 5, "total_tokens": 24})
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let stream = post(&http, &v1_url(&sim.base_url(), "responses"), KEY, &streamed).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let events = responses_events(&stream.body);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    let deltas: String = events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .map(|(_, data)| data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, text);
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["usage"], response["usage"]);

    // The deployment route serves it too; a cap cuts the reply, which is then incomplete.
    let capped = post(
        &http,
        &deployment_url(&sim.base_url(), "gpt-5", "responses"),
        KEY,
        &json!({"input": input, "max_output_tokens": 2}),
    )
    .await;
    assert_eq!(capped.json()["status"], "incomplete");
    assert_eq!(capped.json()["usage"]["output_tokens"], 2);
    let stats = sim.stats().deployment("gpt-5");
    // Charged on arrival: the input estimate plus the default allowance, or the cap.
    let default_max = DeploymentSpec::new("x").default_max_tokens;
    assert_eq!(stats.charged_tokens, 2 * (19 + default_max) + (10 + 3 + 2));
    sim.stop().await;
}

#[actix_rt::test]
async fn responses_streams_meet_the_same_faults() {
    let cut = FaultSpec {
        p_stream_error: 1.0,
        ..FaultSpec::default()
    };
    let sim = start(
        SimConfig::default().deployment(DeploymentSpec::new("gpt-5").reply_tokens(6).faults(cut)),
    )
    .await;
    let body = json!({"input": "hi", "model": "gpt-5", "stream": true});
    let reply = post(&client(), &v1_url(&sim.base_url(), "responses"), KEY, &body).await;
    let events = responses_events(&reply.body);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "error"
        ]
    );
    assert_eq!(events[4].1["code"], "server_error");
    assert_eq!(sim.stats().deployment("gpt-5").stream_errors, 1);
    sim.stop().await;
}
