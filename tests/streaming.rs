//! Streamed replies: assembled, incremental, and cut streams, over loopback HTTP.

mod common;

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use aoai_blaster::{ChatJob, Dispatcher, JobErrorKind};
use aoai_sim::FaultSpec;
use common::*;
use futures_util::future::join_all;
use serde_json::json;

#[actix_rt::test]
async fn an_assembled_stream_equals_the_plain_reply() {
    let sim = start_sim(vec![spec("gpt").reply_tokens(25)]).await;
    let config = config(json!({}), vec![deployment(&sim, "gpt", json!({}))]);
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let plain = dispatcher
        .send(ChatJob::new(prompt(7)))
        .await
        .expect("dispatcher alive")
        .expect("plain reply");
    let streamed = dispatcher
        .send(ChatJob::new(prompt(7)).streamed())
        .await
        .expect("dispatcher alive")
        .expect("streamed reply");
    assert_eq!(streamed.text(), plain.text());
    assert_eq!(
        streamed.reply.choices[0].finish_reason,
        plain.reply.choices[0].finish_reason
    );
    let usage = streamed.usage().expect("include_usage gives usage");
    assert_eq!(
        usage.completion_tokens,
        plain.usage().expect("usage").completion_tokens
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn deltas_arrive_one_by_one_and_add_up_to_the_result() {
    let sim = start_sim(vec![spec("gpt").reply_tokens(12)]).await;
    let config = config(json!({}), vec![deployment(&sim, "gpt", json!({}))]);
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recipient = Deltas(seen.clone()).start().recipient();
    let result = dispatcher
        .send(
            ChatJob::new(prompt(3))
                .with_deltas(recipient)
                .labelled("job-3"),
        )
        .await
        .expect("dispatcher alive")
        .expect("streamed reply");
    // The deltas were sent before the result; let the collector's mailbox drain.
    let expected = result.text().expect("text").to_owned();
    wait_until(std::time::Duration::from_secs(2), || {
        let seen = seen.clone();
        let expected = expected.clone();
        async move {
            let joined: String = seen
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|d| d.content.clone())
                .collect();
            joined == expected
        }
    })
    .await;
    let seen = seen.lock().expect("not poisoned").clone();
    assert!(seen.len() > 1, "the reply came in several deltas");
    assert!(seen.iter().all(|d| d.label.as_deref() == Some("job-3")));
    sim.stop().await;
}

#[actix_rt::test]
async fn cut_streams_are_retried_when_nothing_reached_the_caller() {
    let faults = FaultSpec {
        p_stream_cut: 0.5,
        ..FaultSpec::default()
    };
    let sim = start_sim(vec![spec("flaky").faults(faults)]).await;
    let config = config(
        json!({"max_job_retry": 20, "auto_disable_threshold": 1000}),
        vec![deployment(&sim, "flaky", json!({}))],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let jobs = (0..40).map(|i| dispatcher.send(ChatJob::new(prompt(i)).streamed()));
    for (i, result) in join_all(jobs).await.into_iter().enumerate() {
        let result = result
            .expect("dispatcher alive")
            .expect("assembled streams are retried");
        let digest = aoai_sim::messages_digest(&messages(i));
        assert!(result.text().expect("text").contains(&digest));
    }
    let stats = http_stats(&sim).await;
    assert!(
        stats.deployment("flaky").stream_cuts >= 1,
        "some streams were cut"
    );
    assert_eq!(
        stats.deployment("flaky").requests,
        40 + stats.deployment("flaky").stream_cuts
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn a_stream_cut_after_deltas_were_delivered_is_an_error_that_says_so() {
    let faults = FaultSpec {
        p_stream_cut: 1.0,
        ..FaultSpec::default()
    };
    let sim = start_sim(vec![spec("cut").reply_tokens(30).faults(faults)]).await;
    let config = config(json!({}), vec![deployment(&sim, "cut", json!({}))]);
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recipient = Deltas(seen.clone()).start().recipient();
    let error = dispatcher
        .send(ChatJob::new(prompt(1)).with_deltas(recipient))
        .await
        .expect("dispatcher alive")
        .expect_err("the stream was cut");
    assert!(
        matches!(error.kind, JobErrorKind::StreamInterrupted { deltas_delivered } if deltas_delivered > 0),
        "{error}"
    );
    assert_eq!(
        http_stats(&sim).await.deployment("cut").requests,
        1,
        "not retried"
    );
    sim.stop().await;
}
