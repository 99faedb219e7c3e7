//! Every job has a `job` span, each attempt an `attempt` span inside it, with names and numbers
//! only: the api key never reaches the trace.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use aoai_blaster::{ChatJob, Dispatcher};
use common::*;
use serde_json::json;
use tracing_subscriber::fmt::format::FmtSpan;

/// A writer that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_rt::test]
async fn jobs_and_attempts_are_traced_without_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let sim = start_sim(vec![spec("gpt")]).await;
    let config = config(json!({}), vec![deployment(&sim, "gpt", json!({}))]);
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    dispatcher
        .send(ChatJob::new(prompt(1)).labelled("line-7"))
        .await
        .expect("dispatcher alive")
        .expect("answered");
    // One more round trip: the handler that answered the job has returned (its span closed).
    dispatcher
        .send(aoai_blaster::GetReport)
        .await
        .expect("dispatcher alive");
    sim.stop().await;
    let text = String::from_utf8_lossy(&captured.0.lock().expect("not poisoned")).into_owned();
    let job_close = text
        .lines()
        .find(|line| {
            line.contains(" job{") && line.contains(" close") && !line.contains(":attempt{")
        })
        .unwrap_or_else(|| panic!("a closed job span in:\n{text}"));
    assert!(job_close.contains("label=\"line-7\""), "{job_close}");
    assert!(job_close.contains("outcome=\"ok\""), "{job_close}");
    assert!(job_close.contains("attempts=1"), "{job_close}");
    assert!(
        text.lines()
            .any(|line| line.contains("job{") && line.contains(":attempt{")),
        "the attempt span sits inside the job span:\n{text}"
    );
    assert!(!text.contains(KEY), "the api key leaked into the trace");
}
