//! Prometheus metrics end to end: jobs run against the simulator while the metrics listener is
//! scraped over HTTP, and the scraped counts equal the simulator's own `/stats`.
//!
//! This file is its own test binary, hence its own process: the `metrics` crate's one global
//! recorder belongs to it alone. Keep a single test here so no other run adds to the counts.

mod common;

use std::time::Duration;

use aoai_blaster::metrics::{self, MetricsHandle};
use aoai_blaster::{ChatJob, Dispatcher};
use aoai_sim::FaultSpec;
use common::*;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::json;

/// Sum of the samples of `name` whose labels include every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels.iter().all(|(k, v)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn scrape(url: &str) -> String {
    let client = awc::Client::default();
    let mut response = client.get(url).send().await.expect("GET /metrics answers");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.body().limit(8 << 20).await.expect("metrics body");
    String::from_utf8(body.to_vec()).expect("metrics are UTF-8")
}

#[actix_rt::test]
async fn scraped_metrics_match_the_simulator_stats() {
    let handle = MetricsHandle::install().expect("the only recorder of this process");
    let again = MetricsHandle::install().expect("installing twice returns the same handle");
    let server = metrics::serve(handle.clone(), "127.0.0.1:0").expect("listener binds port 0");
    let url = format!("http://{}/metrics", server.local_addr());

    // `steady` answers everything; `flaky` fails a fifth with 500; `tight` admits one request
    // per second, so it answers 429 to most of what it gets.
    let sim = start_sim(vec![
        spec("steady"),
        spec("flaky").faults(FaultSpec {
            p_500: 0.2,
            ..FaultSpec::default()
        }),
        spec("tight").rpm(60),
    ])
    .await;
    let names = ["steady", "flaky", "tight"];
    let config = config(
        json!({"auto_disable_threshold": 50, "num_workers": 8}),
        names
            .iter()
            .map(|name| deployment(&sim, name, json!({})))
            .collect(),
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");

    let jobs: u32 = 90;
    let mut running: FuturesUnordered<_> = (0..jobs)
        .map(|i| dispatcher.send(ChatJob::new(prompt(i as usize)).labelled(format!("job-{i}"))))
        .collect();
    let mut done = 0;
    let mut scraped_during_run = false;
    while let Some(result) = running.next().await {
        let result = result.expect("dispatcher alive");
        assert!(result.is_ok(), "job failed: {:?}", result.err());
        done += 1;
        if done == jobs / 2 {
            // Mid-run: at least the finished jobs' successes are there, and no more attempts
            // than the simulator has seen.
            let text = scrape(&url).await;
            let ok = sample(&text, "aoai_blaster_requests_total", &[("status", "2xx")]);
            let requests = sample(&text, "aoai_blaster_requests_total", &[]);
            let stats = http_stats(&sim).await;
            assert!(ok >= f64::from(done), "{ok} successes after {done} jobs");
            assert!(requests <= stats.total().requests as f64);
            scraped_during_run = true;
        }
    }
    assert!(scraped_during_run);

    let text = scrape(&url).await;
    assert_eq!(text.lines().count(), again.render().lines().count());
    let stats = http_stats(&sim).await;
    let mut answered = 0.0;
    for name in names {
        let sim_counts = stats.deployment(name);
        let endpoint = ("endpoint", name);
        let count = |metric: &str, extra: &[(&str, &str)]| {
            let mut labels = vec![endpoint];
            labels.extend_from_slice(extra);
            sample(&text, metric, &labels)
        };
        let context = format!("{name}: {sim_counts:?}\n{text}");
        assert_eq!(
            count("aoai_blaster_requests_total", &[]),
            sim_counts.requests as f64,
            "{context}"
        );
        assert_eq!(
            count("aoai_blaster_requests_total", &[("status", "2xx")]),
            sim_counts.ok as f64,
            "{context}"
        );
        assert_eq!(
            count("aoai_blaster_outcomes_total", &[("outcome", "success")]),
            sim_counts.ok as f64,
            "{context}"
        );
        assert_eq!(
            count("aoai_blaster_requests_total", &[("status", "429")]),
            sim_counts.rate_limited as f64,
            "{context}"
        );
        assert_eq!(
            count("aoai_blaster_rate_limited_total", &[]),
            sim_counts.rate_limited as f64,
            "{context}"
        );
        assert_eq!(
            count("aoai_blaster_requests_total", &[("status", "5xx")]),
            sim_counts.server_errors as f64,
            "{context}"
        );
        assert_eq!(
            count("aoai_blaster_tokens_used_total", &[]),
            sim_counts.used_tokens as f64,
            "{context}"
        );
        assert_eq!(
            count("aoai_blaster_upstream_seconds_count", &[]),
            sim_counts.requests as f64,
            "{context}"
        );
        assert_eq!(
            count("aoai_blaster_server_seconds_count", &[]),
            sim_counts.requests as f64,
            "{context}"
        );
        assert_eq!(count("aoai_blaster_endpoint_in_flight", &[]), 0.0);
        answered += sim_counts.ok as f64;
    }
    assert_eq!(answered, f64::from(jobs));
    // The faults and the quota really happened, so the checks above compared non-zero counts.
    assert!(stats.deployment("flaky").server_errors > 0);
    assert!(stats.deployment("tight").rate_limited > 0);
    // Every job succeeded, so each 429 or 500 was followed by exactly one retry of its job.
    assert_eq!(
        sample(&text, "aoai_blaster_retries_total", &[]),
        (stats.total().rate_limited + stats.total().server_errors) as f64
    );
    assert_eq!(
        sample(
            &text,
            "aoai_blaster_endpoint_state",
            &[("endpoint", "steady"), ("state", "healthy")]
        ),
        1.0
    );
    assert!(
        !text.contains(KEY),
        "the api key must never reach the metrics"
    );

    server.stop().await;
    let after_stop = tokio::time::timeout(
        Duration::from_secs(2),
        awc::Client::default().get(&url).send(),
    )
    .await;
    assert!(
        matches!(after_stop, Ok(Err(_))),
        "the listener still answers after stop"
    );
}
