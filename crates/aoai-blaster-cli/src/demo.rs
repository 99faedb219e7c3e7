//! `aoai-blaster demo`: the whole product on a fresh machine, with no Azure account.
//!
//! It starts the simulator in-process with three deployments of different character, points a
//! blaster config at them, generates N prompts and runs them through the same loop as `run`,
//! with the live progress display; it ends with the summary, the per-endpoint health table and
//! what the simulator saw.
//!
//! | deployment | character |
//! |---|---|
//! | `tight` | a tight quota: 30,000 TPM and 180 RPM; the blaster paces the tokens (`tpm_limit`), keeps at most 4 requests in flight there and learns the request limit from its 429s |
//! | `flaky` | fast, but 5% 500s, 5% 503s and 1% requests that hang past the 2 s timeout |
//! | `slow` | 400 ms to the first token plus 5 ms per token, jitter up to 200 ms |

use std::sync::atomic::{AtomicBool, Ordering};

use aoai_blaster::{BlasterConfig, ConfigError};
use aoai_sim::{DeploymentSpec, FaultSpec, LatencySpec, SimConfig, SimHandle};
use indicatif::MultiProgress;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::batch::input::BatchRequest;
use crate::batch::output::ResultWriter;
use crate::batch::source::{Source, SourceCounters, SourceEvent};
use crate::cli::DemoArgs;
use crate::progress::ProgressMode;
use crate::run_loop::run_jobs;
use crate::summary::EXIT_USAGE;

/// The tight deployment's quota, in tokens per minute.
pub(crate) const TIGHT_TPM: u64 = 30_000;

/// The simulator the demo runs against.
pub(crate) fn sim_config() -> SimConfig {
    SimConfig {
        seed: 2026,
        workers: 2,
        deployments: vec![
            DeploymentSpec::new("tight").tpm(TIGHT_TPM),
            DeploymentSpec::new("flaky")
                .tpm(5_000_000)
                .latency(LatencySpec {
                    ttft_ms: 15,
                    per_token_ms: 0,
                    jitter_ms: 15,
                })
                .faults(FaultSpec {
                    p_500: 0.05,
                    p_503: 0.05,
                    p_hang: 0.01,
                    hang_secs: 30,
                    ..FaultSpec::default()
                }),
            DeploymentSpec::new("slow")
                .tpm(5_000_000)
                .latency(LatencySpec {
                    ttft_ms: 400,
                    per_token_ms: 5,
                    jitter_ms: 200,
                }),
        ],
        ..SimConfig::default()
    }
}

/// The blaster config for the demo simulator, given each deployment's base URL.
pub(crate) fn blaster_config(
    endpoint_of: impl Fn(&str) -> String,
) -> Result<BlasterConfig, ConfigError> {
    let deployment = |name: &str, extra: Value| {
        let mut value = json!({
            "name": name,
            "endpoint": endpoint_of(name),
            "api_key": aoai_sim::DEFAULT_API_KEY,
            "model": name,
        });
        if let (Some(target), Value::Object(extra)) = (value.as_object_mut(), extra) {
            target.extend(extra);
        }
        value
    };
    BlasterConfig::from_value(json!({
        "num_workers": 96,
        "max_job_retry": 6,
        "request_timeout": "2s",
        "connect_timeout": "1s",
        "backoff_base": "100ms",
        "backoff_max": "2s",
        "rate_limit_fallback": "1s",
        "auto_disable_threshold": 10,
        "reenable_after": "2s",
        "deployments": [
            deployment("tight", json!({"tpm_limit": TIGHT_TPM, "adaptive": true, "max_in_flight": 4})),
            deployment("flaky", json!({"weight": 2})),
            deployment("slow", json!({"max_in_flight": 48})),
        ],
    }))
}

/// The `i`-th demo request: prompts and `max_tokens` of varying size.
pub(crate) fn demo_request(i: u64) -> BatchRequest {
    let topics = [
        "rate limits",
        "retry budgets",
        "weighted round robin",
        "token buckets",
        "circuit breakers",
        "back-pressure",
        "idempotency",
    ];
    let topic = topics[(i % topics.len() as u64) as usize];
    let detail = " Keep it short and concrete.".repeat(1 + (i % 5) as usize);
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        json!([
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": format!("Request {i}: explain {topic} in one paragraph.{detail}")}
        ]),
    );
    body.insert("max_tokens".into(), json!(30 + (i % 4) * 15));
    BatchRequest {
        operation: aoai_blaster::Operation::Chat,
        line: i + 1,
        custom_id: format!("demo-{i}"),
        body,
        pin: None,
        stream: i % 10 == 9,
        previous: None,
    }
}

fn generate(
    count: u64,
    events: &mpsc::Sender<SourceEvent>,
    counters: &SourceCounters,
    stop: &AtomicBool,
) {
    counters.set_total(count);
    for i in 0..count {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        counters.lines.fetch_add(1, Ordering::Relaxed);
        if events
            .blocking_send(SourceEvent::Job(demo_request(i)))
            .is_err()
        {
            return;
        }
    }
}

fn sim_line(sim: &SimHandle) -> String {
    let stats = sim.stats();
    // One line per deployment, so that it fits 80 columns like the summary.
    let mut text = "The simulator saw:".to_owned();
    for (name, s) in &stats.deployments {
        text.push_str(&format!(
            "\n  {name}: {} requests, {} ok, {} 429, {} 5xx, {} hangs",
            s.requests, s.ok, s.rate_limited, s.server_errors, s.hangs
        ));
    }
    text
}

/// `aoai-blaster demo`.
pub(crate) async fn demo_command(args: DemoArgs, multi: MultiProgress, mode: ProgressMode) -> u8 {
    let sim = match aoai_sim::start(sim_config()).await {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("aoai-blaster: cannot start the embedded simulator: {error}");
            return EXIT_USAGE;
        }
    };
    let status = demo_on(&sim, &args, multi, mode).await;
    if status.is_ok() {
        crate::console::print_line(&sim_line(&sim));
    }
    sim.stop().await;
    status.unwrap_or_else(|error| {
        eprintln!("aoai-blaster: {error}");
        EXIT_USAGE
    })
}

/// The demo's run against the started simulator: its exit status, or why it could not start.
async fn demo_on(
    sim: &SimHandle,
    args: &DemoArgs,
    multi: MultiProgress,
    mode: ProgressMode,
) -> Result<u8, String> {
    let config = blaster_config(|name| sim.endpoint_for(name).unwrap_or_else(|| sim.base_url()))
        .map_err(|error| format!("demo config: {error}"))?;
    let writer = match &args.output {
        None => None,
        Some(path) => Some(
            std::fs::File::create(path)
                .and_then(|_| ResultWriter::append_to(path))
                .map_err(|error| format!("cannot create --output {}: {error}", path.display()))?,
        ),
    };
    tracing::info!(
        requests = args.requests,
        simulator = %sim.base_url(),
        "demo: tight (30k TPM), flaky (5xx, hangs), slow (400 ms+)"
    );
    let count = args.requests;
    let source = Source::spawn("demo-prompts", move |sender, counters, stop| {
        generate(count, sender, counters, stop);
    })
    .map_err(|error| format!("cannot start the prompt generator: {error}"))?;
    run_jobs(&config, source, writer, &args.options, multi, mode).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_loop::configured_tpm;

    #[test]
    fn the_demo_configs_are_valid() {
        assert!(sim_config().validate().is_ok());
        let config = blaster_config(|name| format!("http://127.0.0.1:1/{name}/")).unwrap();
        assert_eq!(config.deployments.len(), 3);
        assert_eq!(config.deployments[0].tpm_limit, Some(TIGHT_TPM));
        assert_eq!(configured_tpm(&config), None);
    }

    #[test]
    fn demo_requests_vary_and_are_valid() {
        let first = demo_request(0);
        let other = demo_request(3);
        assert_eq!(first.custom_id, "demo-0");
        assert_eq!(first.body["max_tokens"], 30);
        assert_eq!(other.body["max_tokens"], 75);
        assert!(demo_request(9).stream);
        assert!(aoai_blaster::ChatRequest::from_body(Value::Object(first.body)).is_ok());
    }
}
