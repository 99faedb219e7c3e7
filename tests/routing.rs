//! Weighted routing and large fan-out, end to end over loopback HTTP.

mod common;

use aoai_blaster::{ChatJob, Dispatcher};
use common::*;
use futures_util::future::join_all;
use serde_json::json;

/// Also runs the endpoint actors on two threads of their own (`endpoint_threads`). Without
/// pacing (`adaptive: false`): an adaptive budget's probe of an unknown deployment (8 calls
/// before its first reply) would send the ring's next picks elsewhere at the start.
#[actix_rt::test]
async fn each_endpoint_takes_the_share_its_weight_gives() {
    let sim = start_sim(vec![spec("one"), spec("two"), spec("three")]).await;
    let config = config(
        json!({"num_workers": 16, "endpoint_threads": 2}),
        vec![
            deployment(&sim, "one", json!({"weight": 1, "adaptive": false})),
            deployment(&sim, "two", json!({"weight": 2, "adaptive": false})),
            deployment(&sim, "three", json!({"weight": 3, "adaptive": false})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let jobs = (0..600).map(|i| dispatcher.send(ChatJob::new(prompt(i))));
    for result in join_all(jobs).await {
        result.expect("dispatcher alive").expect("job succeeds");
    }
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("one").ok, 100);
    assert_eq!(stats.deployment("two").ok, 200);
    assert_eq!(stats.deployment("three").ok, 300);
    sim.stop().await;
}

#[actix_rt::test]
async fn ten_thousand_concurrent_jobs_each_get_their_own_answer() {
    let sim = start_sim(vec![spec("east"), spec("west")]).await;
    let config = config(
        json!({"num_workers": 128}),
        vec![
            deployment(&sim, "east", json!({})),
            deployment(&sim, "west", json!({})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let jobs = (0..10_000).map(|i| {
        let dispatcher = dispatcher.clone();
        async move { (i, dispatcher.send(ChatJob::new(prompt(i))).await) }
    });
    let mut answered = 0;
    for (i, result) in join_all(jobs).await {
        let result = result.expect("dispatcher alive").expect("job succeeds");
        let digest = aoai_sim::messages_digest(&messages(i));
        let text = result.text().expect("a reply has text");
        assert!(
            text.contains(&format!("digest={digest}")),
            "job {i} got someone else's answer: {text}"
        );
        answered += 1;
    }
    assert_eq!(answered, 10_000);
    let stats = http_stats(&sim).await;
    assert_eq!(stats.total().ok, 10_000);
    assert_eq!(stats.total().requests, 10_000);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_pinned_job_runs_only_on_its_deployment() {
    let sim = start_sim(vec![spec("east"), spec("west")]).await;
    let config = config(
        json!({}),
        vec![
            deployment(&sim, "east", json!({})),
            deployment(&sim, "west", json!({})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    for i in 0..10 {
        let result = dispatcher
            .send(ChatJob::new(prompt(i)).pinned_to("west"))
            .await
            .expect("dispatcher alive")
            .expect("job succeeds");
        assert_eq!(result.endpoint, "west");
    }
    let error = dispatcher
        .send(ChatJob::new(prompt(0)).pinned_to("north"))
        .await
        .expect("dispatcher alive")
        .expect_err("an unknown deployment is an error");
    assert!(error.to_string().contains("north"), "{error}");
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("west").ok, 10);
    assert_eq!(stats.deployment("east").requests, 0);
    sim.stop().await;
}
