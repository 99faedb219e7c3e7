//! Shared helpers of the end-to-end tests: a simulator on 127.0.0.1 port 0 and configs for it.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use aoai_blaster::{BlasterConfig, ChatRequest, Dispatcher, HealthReport, StreamDelta, Subscribe};
use aoai_sim::{DeploymentSpec, SimConfig, SimHandle, SimStats};
use serde_json::{Value, json};

/// The api key the simulator accepts by default.
pub const KEY: &str = aoai_sim::DEFAULT_API_KEY;

/// A simulated deployment with a quota too large to matter (100 M TPM), for tests that are
/// not about quotas.
pub fn spec(name: &str) -> DeploymentSpec {
    DeploymentSpec::new(name).tpm(100_000_000)
}

/// Starts a simulator with these deployments.
pub async fn start_sim(deployments: Vec<DeploymentSpec>) -> SimHandle {
    let mut config = SimConfig::default();
    for deployment in deployments {
        config = config.deployment(deployment);
    }
    aoai_sim::start(config)
        .await
        .expect("simulator starts on 127.0.0.1")
}

/// Resilience settings small enough for tests (milliseconds, not seconds).
pub fn fast_top() -> Value {
    json!({
        "request_timeout": "2s",
        "connect_timeout": "500ms",
        "stream_idle_timeout": "1s",
        "backoff_base": "10ms",
        "backoff_max": "40ms",
        "rate_limit_fallback": "100ms",
        "max_job_retry": 5,
    })
}

/// A deployment entry pointing at `name` on the simulator, with `extra` keys merged in.
pub fn deployment(sim: &SimHandle, name: &str, extra: Value) -> Value {
    let mut entry = json!({
        "name": name,
        "endpoint": sim.endpoint_for(name).unwrap_or_else(|| sim.base_url()),
        "api_key": KEY,
        "model": name,
    });
    merge(&mut entry, extra);
    entry
}

/// A validated config from `top` keys (merged over [`fast_top`]) and deployment entries.
pub fn config(top: Value, deployments: Vec<Value>) -> BlasterConfig {
    let mut value = fast_top();
    merge(&mut value, top);
    value["deployments"] = Value::Array(deployments);
    BlasterConfig::from_value(value).expect("test config is valid")
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        for (key, value) in extra {
            into.insert(key, value);
        }
    }
}

/// The messages of prompt number `i`.
pub fn messages(i: usize) -> Value {
    json!([
        {"role": "system", "content": "You are concise."},
        {"role": "user", "content": format!("Question number {i}: why does backoff matter?")},
    ])
}

/// A request for prompt number `i`.
pub fn prompt(i: usize) -> ChatRequest {
    let Value::Array(messages) = messages(i) else {
        unreachable!("messages() builds an array")
    };
    ChatRequest::new(messages)
}

/// The simulator's counters, read over HTTP from `GET /stats` like any client would.
pub async fn http_stats(sim: &SimHandle) -> SimStats {
    let client = awc::Client::default();
    let mut response = client
        .get(format!("{}stats", sim.base_url()))
        .send()
        .await
        .expect("GET /stats answers");
    let body = response.body().await.expect("stats body");
    serde_json::from_slice(&body).expect("stats are JSON")
}

/// Polls `condition` every 5 ms until it holds, failing the test after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every job succeeded at its first attempt: none met a 429.
pub fn assert_first_tries(
    results: Vec<
        Result<Result<aoai_blaster::ChatResult, aoai_blaster::JobError>, actix::MailboxError>,
    >,
) {
    for result in results {
        let result = result.expect("dispatcher alive").expect("job succeeds");
        assert_eq!(result.attempts.len(), 1, "no attempt met a 429");
    }
}

/// The simulator answered `deployment` `ok` times with success and never with a 429.
pub async fn assert_no_429(sim: &SimHandle, deployment: &str, ok: u64) {
    let stats = http_stats(sim).await;
    assert_eq!(stats.deployment(deployment).rate_limited, 0);
    assert_eq!(stats.deployment(deployment).ok, ok);
}

/// Collects streamed deltas for a test.
pub struct Deltas(pub Arc<Mutex<Vec<StreamDelta>>>);

impl Actor for Deltas {
    type Context = Context<Self>;
}

impl Handler<StreamDelta> for Deltas {
    type Result = ();
    fn handle(&mut self, delta: StreamDelta, _: &mut Self::Context) {
        self.0.lock().expect("not poisoned").push(delta);
    }
}

/// Collects health reports for a test; [`Seen`] answers those it has handled.
pub struct Collector(Arc<Mutex<Vec<HealthReport>>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<HealthReport> for Collector {
    type Result = ();
    fn handle(&mut self, report: HealthReport, _: &mut Self::Context) {
        self.0.lock().expect("not poisoned").push(report);
    }
}

/// Asks a [`Collector`] for the reports handled so far: in mailbox order, so every report
/// sent to it before this message.
#[derive(Message)]
#[rtype(result = "Vec<HealthReport>")]
pub struct Seen;

impl Handler<Seen> for Collector {
    type Result = MessageResult<Seen>;
    fn handle(&mut self, _: Seen, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.0.lock().expect("not poisoned").clone())
    }
}

/// Subscribes a fresh [`Collector`] to `dispatcher`'s health reports.
pub async fn collect_reports(dispatcher: &Addr<Dispatcher>) -> Addr<Collector> {
    let collector = Collector(Arc::default()).start();
    dispatcher
        .send(Subscribe(collector.clone().recipient()))
        .await
        .expect("subscribed");
    collector
}
