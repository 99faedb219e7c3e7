//! End-to-end: one Batch file mixing chat, embeddings and responses lines, run by the binary
//! against the simulator on 127.0.0.1 (port 0); and `check` trying each configured operation.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use aoai_sim::{DeploymentSpec, SimHandle, embedding_base64, embedding_vector, messages_digest};
use serde_json::{Value, json};

mod common;

use common::*;

const DIMENSIONS: usize = 5;

/// Chat on `gpt`, replies of 6 tokens; embeddings of [`DIMENSIONS`] floats on `embed`.
async fn gpt_and_embed() -> SimHandle {
    start_sim(vec![
        DeploymentSpec::new("gpt").tpm(50_000_000).reply_tokens(6),
        DeploymentSpec::new("embed")
            .tpm(50_000_000)
            .embedding_dimensions(DIMENSIONS as u64),
    ])
    .await
}

/// Chat on `gpt` (dated API); embeddings on `embed` (dated) and `embed-v1` (v1); responses and
/// chat on `gpt-v1` (v1).
fn write_config(dir: &Path, sim: &SimHandle) -> std::path::PathBuf {
    let endpoint = sim.base_url();
    let text = format!(
        "num_workers: 8\nrequest_timeout: 5s\nconnect_timeout: 1s\n\
         backoff_base: 50ms\nbackoff_max: 200ms\ndeployments:\n\
         \x20 - {{name: gpt, endpoint: '{endpoint}', api_key: sim-key, model: gpt}}\n\
         \x20 - {{name: embed, endpoint: '{endpoint}', api_key: sim-key, model: embed, operations: [embeddings]}}\n\
         \x20 - {{name: embed-v1, endpoint: '{endpoint}', api_key: sim-key, model: embed, api_version: v1, operations: [embeddings]}}\n\
         \x20 - {{name: gpt-v1, endpoint: '{endpoint}', api_key: sim-key, model: gpt, api_version: v1, operations: [responses, chat]}}\n"
    );
    let path = dir.join("blaster.yaml");
    std::fs::write(&path, text).expect("config written");
    path
}

async fn run(args: &[&str]) -> Output {
    run_to_end(args.iter().map(|s| s.to_string()).collect()).await
}

/// What each line asked for, by `custom_id`, to prove its answer belongs to it.
enum Asked {
    Chat(Value),
    Embeddings { inputs: Vec<Value>, base64: bool },
    Responses(Value),
}

/// `count` lines of each operation, interleaved, with every URL form and pins by `body.model`.
fn mixed_lines(count: usize) -> (Vec<String>, HashMap<String, Asked>) {
    let mut lines = Vec::new();
    let mut asked = HashMap::new();
    for i in 0..count {
        let messages = json!([{"role": "user", "content": format!("chat question {i}")}]);
        let id = format!("chat-{i}");
        let url = if i % 2 == 0 {
            "/chat/completions"
        } else {
            "/v1/chat/completions"
        };
        lines.push(json!({"custom_id": id, "method": "POST", "url": url,
            "body": {"messages": messages, "max_tokens": 20}}));
        asked.insert(id, Asked::Chat(messages));

        let inputs = vec![json!(format!("document {i}")), json!([i, i + 1, 7])];
        let base64 = i % 3 == 0;
        let id = format!("emb-{i}");
        let url = if i % 2 == 0 {
            "/embeddings"
        } else {
            "/v1/embeddings"
        };
        let mut body = json!({"input": inputs});
        if base64 {
            body["encoding_format"] = json!("base64");
        }
        if i % 4 == 1 {
            body["model"] = json!("embed-v1");
        }
        lines.push(json!({"custom_id": id, "method": "POST", "url": url, "body": body}));
        asked.insert(id, Asked::Embeddings { inputs, base64 });

        let input = json!(format!("respond to {i}"));
        let id = format!("resp-{i}");
        let url = if i % 2 == 0 {
            "/responses"
        } else {
            "/v1/responses"
        };
        let mut body = json!({"input": input, "max_output_tokens": 50});
        if i % 5 == 0 {
            body["stream"] = json!(true);
        }
        lines.push(json!({"custom_id": id, "method": "POST", "url": url, "body": body}));
        asked.insert(id, Asked::Responses(input));
    }
    (lines.iter().map(Value::to_string).collect(), asked)
}

/// Asserts that `body` answers what `asked` asked.
fn assert_belongs(id: &str, asked: &Asked, body: &Value) {
    match asked {
        Asked::Chat(messages) => {
            assert_eq!(body["object"], "chat.completion", "{id}");
            let text = body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default();
            assert!(
                text.starts_with(&format!("digest={} ", messages_digest(messages))),
                "{id}: {text}"
            );
        }
        Asked::Embeddings { inputs, base64 } => {
            assert_eq!(body["object"], "list", "{id}");
            assert_eq!(
                body["data"].as_array().map(Vec::len),
                Some(inputs.len()),
                "{id}"
            );
            for (index, input) in inputs.iter().enumerate() {
                let item = &body["data"][index];
                assert_eq!(item["index"], index, "{id}");
                let vector = embedding_vector(input, DIMENSIONS);
                if *base64 {
                    assert_eq!(item["embedding"], json!(embedding_base64(&vector)), "{id}");
                } else {
                    let got: Vec<f32> = serde_json::from_value(item["embedding"].clone())
                        .unwrap_or_else(|e| panic!("{id}: {e}"));
                    assert_eq!(got, vector, "{id} input {index}");
                }
            }
        }
        Asked::Responses(input) => {
            assert_eq!(body["object"], "response", "{id}");
            let text = body["output"][0]["content"][0]["text"]
                .as_str()
                .unwrap_or_default();
            assert!(
                text.starts_with(&format!("digest={} ", messages_digest(input))),
                "{id}: {text}"
            );
            assert_eq!(body["usage"]["output_tokens"], 6, "{id}");
        }
    }
}

#[actix_rt::test]
async fn a_batch_file_mixing_chat_embeddings_and_responses_runs_end_to_end() {
    let sim = gpt_and_embed().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = write_config(dir.path(), &sim);
    let (mut lines, asked) = mixed_lines(12);
    // An operation no deployment takes for this pin: answered with an error, not lost.
    lines.push(
        json!({"custom_id": "resp-pinned-dated", "method": "POST", "url": "/responses",
               "body": {"input": "x", "model": "gpt"}})
        .to_string(),
    );
    lines.push(
        json!({"custom_id": "bad-url", "method": "POST", "url": "/completions",
               "body": {"prompt": "x"}})
        .to_string(),
    );
    let input = dir.path().join("requests.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("input written");
    let output = dir.path().join("results.jsonl");
    let config = config.display().to_string();
    let (input, output_arg) = (input.display().to_string(), output.display().to_string());
    let result = run(&[
        "run",
        "--config",
        &config,
        "--input",
        &input,
        "--output",
        &output_arg,
    ])
    .await;
    assert_eq!(
        result.status.code(),
        Some(1),
        "one job failed: {}",
        describe(&result)
    );

    let text = std::fs::read_to_string(&output).expect("output written");
    let answers: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(answers.len(), 36 + 2);
    let mut seen = HashMap::new();
    for line in &answers {
        let id = line["custom_id"].as_str().expect("custom_id");
        *seen.entry(id.to_owned()).or_insert(0) += 1;
        if let Some(asked) = asked.get(id) {
            assert_eq!(line["response"]["status_code"], 200, "{id}: {line}");
            assert!(line["error"].is_null(), "{id}");
            assert!(
                line["id"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("batch_req_"))
            );
            assert_belongs(id, asked, &line["response"]["body"]);
        }
    }
    assert!(seen.values().all(|count| *count == 1), "one line per id");
    assert_eq!(seen.len(), 38);
    let by_id = |id: &str| answers.iter().find(|l| l["custom_id"] == id).expect(id);
    let pinned = by_id("resp-pinned-dated");
    assert_eq!(pinned["error"]["code"], "unsupported_operation", "{pinned}");
    assert!(pinned["response"].is_null());
    assert_eq!(by_id("bad-url")["error"]["code"], "invalid_url");

    let stats = sim.stats();
    assert_eq!(stats.deployment("embed").requests, 12);
    assert_eq!(stats.deployment("gpt").requests, 24);
    sim.stop().await;
}

#[actix_rt::test]
async fn check_tries_each_operation_each_deployment_takes() {
    let sim = gpt_and_embed().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = write_config(dir.path(), &sim).display().to_string();
    let result = run(&["check", "--config", &config]).await;
    assert_eq!(result.status.code(), Some(0), "{}", describe(&result));
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    let rows: Vec<(&str, &str)> = stdout
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .filter(|(name, _)| !name.starts_with("config"))
        .collect();
    assert_eq!(
        rows,
        [
            ("gpt", "chat"),
            ("embed", "embeddings"),
            ("embed-v1", "embeddings"),
            ("gpt-v1", "chat"),
            ("gpt-v1", "responses")
        ],
        "{stdout}"
    );
    assert!(
        stdout.lines().skip(1).take(5).all(|l| l.contains(" 200 ")),
        "{stdout}"
    );
    let stats = sim.stats();
    assert_eq!(
        (
            stats.deployment("gpt").requests,
            stats.deployment("embed").requests
        ),
        (3, 2)
    );
    sim.stop().await;
}
