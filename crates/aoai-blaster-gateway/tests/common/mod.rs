//! Helpers the gateway's tests share: a simulator, a gateway in front of it, requests with awc.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::time::Duration;

use aoai_blaster::BlasterConfig;
use aoai_blaster_gateway::{Gateway, GatewayOptions};
use aoai_sim::{DeploymentSpec, SimConfig, SimHandle};
use bytes::Bytes;
use serde_json::{Value, json};

pub const SIM_KEY: &str = aoai_sim::DEFAULT_API_KEY;

pub async fn sim(deployments: Vec<DeploymentSpec>) -> SimHandle {
    aoai_sim::start(SimConfig {
        deployments,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts")
}

/// A deployment entry: `name` served by the simulator's deployment `model`.
pub fn deployment(sim: &SimHandle, name: &str, model: &str) -> Value {
    json!({
        "name": name,
        "endpoint": sim.endpoint_for(model).expect("the simulator serves the model"),
        "api_key": SIM_KEY,
        "model": model,
        "api_version": "2024-10-21",
    })
}

/// A config of `deployments` with the top-level keys of `top`.
pub fn config(deployments: Vec<Value>, top: Value) -> BlasterConfig {
    let mut value = top;
    value["deployments"] = Value::Array(deployments);
    BlasterConfig::from_value_with_env(value, &|name| {
        (name == "GATEWAY_TEST_KEY").then(|| "sk-from-env-0123456789".to_owned())
    })
    .expect("test config is valid")
}

pub async fn gateway(config: BlasterConfig) -> Gateway {
    let mut options = GatewayOptions::new("127.0.0.1:0");
    options.workers = 1;
    Gateway::start(config, options)
        .await
        .expect("the gateway starts")
}

pub fn url(gateway: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gateway.local_addr())
}

pub fn client() -> awc::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

/// A reply read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// `{"error": {"message", "type", "code"}}`: the code, after checking the shape.
    pub fn error_code(&self) -> String {
        let body = self.json();
        let error = &body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(error["type"].as_str().is_some(), "{body}");
        error["code"].as_str().expect("a code").to_owned()
    }

    pub fn overhead_ms(&self) -> f64 {
        self.header("x-aoai-blaster-overhead-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no overhead header: {:?}", self.headers))
    }

    /// The `data:` payloads of an event stream, in order.
    pub fn events(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }
}

pub async fn send(request: awc::ClientRequest, body: Option<&Value>) -> Reply {
    let sent = match body {
        Some(body) => request.send_json(body).await,
        None => request.send().await,
    };
    let mut response = sent.expect("the gateway answers");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.body().limit(16 << 20).await.expect("a body");
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post(gateway: &Gateway, path: &str, body: &Value) -> Reply {
    send(client().post(url(gateway, path)), Some(body)).await
}

pub async fn get(gateway: &Gateway, path: &str) -> Reply {
    send(client().get(url(gateway, path)), None).await
}

/// A chat request body saying `text`, for `model` if given.
pub fn chat(model: Option<&str>, text: &str) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": text}], "max_tokens": 20});
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    body
}

/// The digest the simulator puts first in its reply to `body`'s messages.
pub fn digest_of(body: &Value) -> String {
    format!("digest={}", aoai_sim::messages_digest(&body["messages"]))
}

/// Polls `done` on the actix clock (no sleep decides the outcome: each check is exact).
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}
