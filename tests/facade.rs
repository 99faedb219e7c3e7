//! The `Blaster` facade from plain (non-actix) code: blocking calls, submitted jobs, reports,
//! and a `close` that drains what was submitted before it.

use aoai_blaster::{Blaster, BlasterConfig, ChatRequest};
use aoai_sim::{DeploymentSpec, LatencySpec, SimConfig, SimThread};
use serde_json::json;

fn request(i: usize) -> ChatRequest {
    ChatRequest::new(vec![
        json!({"role": "user", "content": format!("Facade prompt {i}")}),
    ])
}

fn blaster_for(sim: &SimThread) -> Blaster {
    let config = BlasterConfig::from_value(json!({
        "num_workers": 8,
        "deployments": [{
            "name": "gpt",
            "endpoint": sim.base_url(),
            "api_key": aoai_sim::DEFAULT_API_KEY,
            "model": "gpt",
        }],
    }))
    .expect("valid config");
    Blaster::from_config(config).expect("blaster starts")
}

#[test]
fn blocking_and_submitted_calls_answer_from_plain_threads() {
    let sim = SimThread::start(
        SimConfig::default().deployment(DeploymentSpec::new("gpt").tpm(100_000_000)),
    )
    .expect("simulator starts");
    let blaster = blaster_for(&sim);

    let result = blaster
        .blocking_chat_completion(request(0).temperature(0.1).option("seed", 7))
        .expect("blocking call answers");
    assert_eq!(result.endpoint, "gpt");
    assert_eq!(result.attempts.len(), 1);
    assert!(result.usage().expect("usage").total_tokens > 0);

    let handles: Vec<_> = (1..=20)
        .map(|i| blaster.submit_chat_completion(request(i)))
        .collect();
    for (i, handle) in (1..=20).zip(handles) {
        let result = handle.wait().expect("submitted job answers");
        let digest = aoai_sim::messages_digest(&json!([
            {"role": "user", "content": format!("Facade prompt {i}")}
        ]));
        assert!(result.text().expect("text").contains(&digest));
    }

    let async_result = futures_executor::block_on(blaster.chat_completion(request(21)))
        .expect("the async call works from any executor");
    assert_eq!(async_result.endpoint, "gpt");

    let report = blaster.blocking_report();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].counts.successes, 22);
    assert_eq!(report[0].state.as_str(), "healthy");
    blaster.close();
    assert_eq!(sim.stats().deployment("gpt").ok, 22);
    sim.stop();
}

#[test]
fn close_finishes_every_job_submitted_before_it() {
    let sim = SimThread::start(
        SimConfig::default().deployment(DeploymentSpec::new("gpt").tpm(100_000_000).latency(
            LatencySpec {
                ttft_ms: 50,
                per_token_ms: 0,
                jitter_ms: 0,
            },
        )),
    )
    .expect("simulator starts");
    let blaster = blaster_for(&sim);
    // 40 jobs with 8 in flight at a time: most are still queued when close() is called.
    let handles: Vec<_> = (0..40)
        .map(|i| blaster.submit_chat_completion(request(i)))
        .collect();
    blaster.close();
    for handle in handles {
        handle
            .wait()
            .expect("a job submitted before close is answered");
    }
    assert_eq!(sim.stats().deployment("gpt").ok, 40);
    sim.stop();
}

#[test]
fn dropped_or_cancelled_handles_of_queued_jobs_send_no_request() {
    let sim = SimThread::start(
        SimConfig::default().deployment(DeploymentSpec::new("gpt").tpm(100_000_000).latency(
            LatencySpec {
                ttft_ms: 300,
                per_token_ms: 0,
                jitter_ms: 0,
            },
        )),
    )
    .expect("simulator starts");
    let blaster = blaster_for(&sim);
    // 8 in flight for 300 ms; the 8 behind them are queued when their handles go.
    let running: Vec<_> = (0..8)
        .map(|i| blaster.submit_chat_completion(request(i)))
        .collect();
    let queued: Vec<_> = (8..16)
        .map(|i| blaster.submit_chat_completion(request(i)))
        .collect();
    for (i, handle) in queued.into_iter().enumerate() {
        if i % 2 == 0 {
            handle.cancel();
        } else {
            drop(handle);
        }
    }
    for handle in running {
        handle.wait().expect("a job in flight finishes");
    }
    // One more job after them: when it is answered, the queue has been worked through.
    blaster
        .blocking_chat_completion(request(99))
        .expect("a later job runs");
    blaster.close();
    assert_eq!(
        sim.stats().deployment("gpt").ok,
        9,
        "the 8 cancelled jobs sent no request"
    );
    sim.stop();
}
