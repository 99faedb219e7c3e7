//! Embeddings and the Responses API through the library, on both URL styles, over loopback
//! HTTP to the simulator.

mod common;

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use aoai_blaster::{
    ChatJob, Dispatcher, EmbeddingsRequest, Job, JobErrorKind, Operation, Reply, ResponsesRequest,
};
use aoai_sim::{SimHandle, embedding_vector, messages_digest};
use common::*;
use serde_json::{Value, json};

fn embeddings_of(reply: &Reply) -> Vec<Vec<f32>> {
    let Reply::Embeddings(reply) = reply else {
        panic!("an embeddings reply expected, got {:?}", reply.operation());
    };
    let vectors = reply.vectors().expect("data is a list of embeddings");
    vectors
        .iter()
        .enumerate()
        .map(|(index, item)| {
            assert_eq!(item.index as usize, index);
            serde_json::from_value(item.embedding.clone()).expect("floats")
        })
        .collect()
}

/// A simulator serving an embeddings model `embed` and a chat model `gpt`, with
/// `(vector dimensions, reply tokens)`, and a Dispatcher over `deployments` of them, each a
/// model and the keys of its entry.
async fn embed_and_gpt<const N: usize>(
    (dimensions, reply_tokens): (u64, u64),
    deployments: [(&str, Value); N],
) -> (SimHandle, Addr<Dispatcher>) {
    let sim = start_sim(vec![
        spec("embed").embedding_dimensions(dimensions),
        spec("gpt").reply_tokens(reply_tokens),
    ])
    .await;
    let deployments = deployments
        .into_iter()
        .map(|(model, keys)| deployment(&sim, model, keys))
        .collect();
    let dispatcher = Dispatcher::start(config(json!({}), deployments)).expect("dispatcher starts");
    (sim, dispatcher)
}

#[actix_rt::test]
async fn embeddings_and_responses_on_both_url_styles() {
    let (sim, dispatcher) = embed_and_gpt(
        (4, 6),
        [
            (
                "embed",
                json!({"name": "emb-dated", "operations": ["embeddings"]}),
            ),
            (
                "embed",
                json!({"name": "emb-v1", "api_version": "v1", "operations": ["embeddings"]}),
            ),
            (
                "gpt",
                json!({"name": "gpt-v1", "api_version": "v1", "operations": ["chat", "responses"]}),
            ),
        ],
    )
    .await;
    let inputs = json!(["alpha text", "beta text, longer", [7, 8, 9]]);
    for name in ["emb-dated", "emb-v1"] {
        let job = Job::from_request(EmbeddingsRequest::new(inputs.clone())).pinned_to(name);
        let result = dispatcher
            .send(job)
            .await
            .expect("alive")
            .expect("embeddings");
        assert_eq!(result.endpoint, name);
        let vectors = embeddings_of(&result.reply);
        assert_eq!(vectors.len(), 3);
        for (vector, input) in vectors.iter().zip(inputs.as_array().expect("list")) {
            assert_eq!(vector, &embedding_vector(input, 4), "{name}: {input}");
        }
        let usage = result.usage().expect("usage");
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (3 + 5 + 3, 0)
        );
    }

    let input = "Name one queueing discipline.";
    let job = Job::from_request(ResponsesRequest::new(input));
    let result = dispatcher
        .send(job)
        .await
        .expect("alive")
        .expect("response");
    assert_eq!(result.endpoint, "gpt-v1");
    assert_eq!(result.reply.operation(), Operation::Responses);
    let text = result.text().expect("output text");
    assert!(
        text.starts_with(&format!("digest={} ", messages_digest(&json!(input)))),
        "{text}"
    );
    assert_eq!(result.usage().expect("usage").completion_tokens, 6);

    // Chat on the v1 API: the deployment goes in `body.model`.
    let chat = dispatcher
        .send(ChatJob::new(prompt(1)).pinned_to("gpt-v1"))
        .await
        .expect("alive")
        .expect("chat over v1");
    let digest = messages_digest(&messages(1));
    assert!(
        chat.text()
            .expect("text")
            .starts_with(&format!("digest={digest} "))
    );

    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("embed").requests, 2);
    assert_eq!(stats.deployment("gpt").requests, 2);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_streamed_response_is_assembled_and_delivered_delta_by_delta() {
    let (sim, dispatcher) = embed_and_gpt(
        (1, 9),
        [(
            "gpt",
            json!({"api_version": "v1", "operations": ["responses"]}),
        )],
    )
    .await;
    let request = || ResponsesRequest::new(json!([{"role": "user", "content": "Stream please"}]));
    let plain = dispatcher
        .send(Job::from_request(request()))
        .await
        .expect("alive")
        .expect("plain");
    let assembled = dispatcher
        .send(Job::from_request(request()).streamed())
        .await
        .expect("alive")
        .expect("assembled");
    assert_eq!(assembled.text(), plain.text());
    assert_eq!(assembled.usage(), plain.usage());

    let seen = Arc::new(Mutex::new(Vec::new()));
    let recipient = Deltas(seen.clone()).start().recipient();
    let incremental = dispatcher
        .send(
            Job::from_request(request())
                .with_deltas(recipient)
                .labelled("r-1"),
        )
        .await
        .expect("alive")
        .expect("incremental");
    let expected = incremental.text().expect("text").to_owned();
    assert_eq!(Some(expected.as_str()), plain.text());
    wait_until(std::time::Duration::from_secs(2), || {
        let seen = seen.clone();
        let expected = expected.clone();
        async move {
            let seen = seen.lock().expect("not poisoned");
            let joined: String = seen.iter().map(|d| d.content.as_str()).collect();
            joined == expected
        }
    })
    .await;
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 9, "one delta per token");
    assert!(
        seen.iter()
            .all(|d| d.label.as_deref() == Some("r-1") && d.choice == 0)
    );
    assert_eq!(
        seen[0].chunk.extra.get("type"),
        Some(&Value::from("response.output_text.delta"))
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn a_job_whose_operation_no_deployment_takes_never_reaches_the_service() {
    let (sim, dispatcher) = embed_and_gpt((1, 1), [("gpt", json!({}))]).await;
    let requests: [aoai_blaster::JobRequest; 2] = [
        ResponsesRequest::new("hi").into(),
        EmbeddingsRequest::new("hi").into(),
    ];
    for request in requests {
        let error = dispatcher
            .send(Job::from_request(request))
            .await
            .expect("alive")
            .expect_err("no deployment takes it");
        assert!(
            matches!(error.kind, JobErrorKind::UnsupportedOperation { .. }),
            "{error}"
        );
        assert!(error.attempts.is_empty());
    }
    assert_eq!(http_stats(&sim).await.deployment("gpt").requests, 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_raw_reply_job_gets_the_servers_bytes_and_the_same_usage() {
    let (sim, dispatcher) = embed_and_gpt(
        (3, 5),
        [
            (
                "embed",
                json!({"name": "emb", "operations": ["embeddings"]}),
            ),
            ("gpt", json!({"name": "chat"})),
        ],
    )
    .await;
    let requests: [(&str, Job); 2] = [
        ("emb", Job::from_request(EmbeddingsRequest::new("raw text"))),
        ("chat", Job::from_request(prompt(2))),
    ];
    for (name, job) in requests {
        let typed = dispatcher
            .send(job.clone().pinned_to(name))
            .await
            .expect("alive")
            .expect("typed reply");
        let raw = dispatcher
            .send(job.pinned_to(name).with_raw_reply())
            .await
            .expect("alive")
            .expect("raw reply");
        let Reply::Raw(body) = &raw.reply else {
            panic!("{name}: a raw reply expected, got {:?}", raw.reply);
        };
        assert_eq!(body.operation(), typed.reply.operation());
        assert!(raw.usage().is_some(), "{name}: usage read from the bytes");
        assert_eq!(raw.usage(), typed.usage(), "{name}");
        // The bytes are the server's reply: the same document the typed parse read.
        let bytes: Value = serde_json::from_slice(body.body()).expect("JSON");
        let typed_json: Value = serde_json::from_str(typed.reply.to_json().unwrap().get()).unwrap();
        assert_eq!(bytes["object"], typed_json["object"], "{name}");
        assert_eq!(raw.text(), None);
    }
    sim.stop().await;
}
