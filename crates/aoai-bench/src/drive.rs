//! Running jobs through the Dispatcher: closed loop (a fixed number outstanding) or open loop
//! (a fixed arrival rate), collecting each job's client-side duration.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::Addr;
use aoai_blaster::{ChatJob, ChatRequest, Dispatcher};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::json;

use crate::latency::Latencies;

/// The workload's request number `i`: one short user message (the same text the Python
/// runner sends), with `max_tokens` when given.
pub fn request(i: u64, max_tokens: Option<u32>) -> ChatRequest {
    let mut request = ChatRequest::new(vec![json!({
        "role": "user",
        "content": format!("Question number {i}: why does backoff matter?"),
    })]);
    if let Some(max_tokens) = max_tokens {
        request
            .options
            .insert("max_tokens".into(), json!(max_tokens));
    }
    request
}

/// What a run of jobs gave.
#[derive(Default)]
pub struct Collected {
    /// Jobs that got a completion.
    pub ok: u64,
    /// Failed jobs by error text (first 80 characters).
    pub failures: BTreeMap<String, u64>,
    /// Client-side duration of each successful job: from handing it to the Dispatcher to its
    /// result.
    pub client: Latencies,
    /// The part of it spent in the answering HTTP call (`ChatResult::upstream_time`).
    pub upstream: Latencies,
    /// The rest: Dispatcher, mailboxes, queueing (`client - upstream`).
    pub dispatch: Latencies,
    /// What the blaster added: the client-side duration minus the server's own processing
    /// time, which each reply states (`ChatResult::server_time`). Jobs whose reply stated none
    /// are not in it.
    pub added: Latencies,
    /// How late the open-loop generator handed jobs over, compared with their schedule.
    pub lateness: Latencies,
    /// From the first job handed over to the last result (closed loop: to the last result
    /// received).
    pub elapsed: Duration,
}

impl Collected {
    /// Jobs that failed.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn record(&mut self, client: Duration, result: Result<aoai_blaster::ChatResult, String>) {
        match result {
            Ok(result) => {
                self.ok += 1;
                self.client.record(client);
                self.upstream.record(result.upstream_time);
                self.dispatch
                    .record(client.saturating_sub(result.upstream_time));
                if let Some(server) = result.server_time {
                    self.added.record(client.saturating_sub(server));
                }
            }
            Err(error) => {
                let key: String = error.chars().take(80).collect();
                *self.failures.entry(key).or_default() += 1;
            }
        }
    }
}

/// Hands `job` to the Dispatcher now and waits for its result: when it was handed over, the
/// client-side duration, and the result.
async fn run_timed(
    addr: Addr<Dispatcher>,
    job: ChatJob,
) -> (Instant, Duration, Result<aoai_blaster::ChatResult, String>) {
    let handed = Instant::now();
    let result = match addr.send(job).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(format!("mailbox: {error}")),
    };
    (handed, handed.elapsed(), result)
}

/// Runs `jobs` jobs (`make(i)` builds job `i`) keeping `outstanding` of them handed to the
/// Dispatcher at any time. Call inside the actix System that runs the Dispatcher.
pub async fn closed_loop(
    addr: &Addr<Dispatcher>,
    jobs: u64,
    outstanding: usize,
    make: impl Fn(u64) -> ChatJob,
) -> Collected {
    closed_loop_until(addr, jobs, outstanding, None, make).await
}

/// [`closed_loop`] that stops waiting after `limit` (when given): jobs without a result by
/// then are neither in [`Collected::ok`] nor in [`Collected::failures`].
pub async fn closed_loop_until(
    addr: &Addr<Dispatcher>,
    jobs: u64,
    outstanding: usize,
    limit: Option<Duration>,
    make: impl Fn(u64) -> ChatJob,
) -> Collected {
    let mut collected = Collected::default();
    let started = Instant::now();
    let deadline = limit.map(|limit| tokio::time::Instant::from_std(started + limit));
    let mut running = FuturesUnordered::new();
    let mut next = 0u64;
    loop {
        while next < jobs && running.len() < outstanding.max(1) {
            let job = make(next);
            let addr = addr.clone();
            next += 1;
            running.push(async move {
                let (_, client, result) = run_timed(addr, job).await;
                (client, result)
            });
        }
        let finished = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, running.next()).await {
                Ok(finished) => finished,
                Err(_) => break,
            },
            None => running.next().await,
        };
        match finished {
            Some((client, result)) => {
                collected.record(client, result);
                collected.elapsed = started.elapsed();
            }
            None => break,
        }
    }
    collected
}

/// Hands jobs to the Dispatcher at `rate` per second for `duration` (each job as its own task,
/// whatever the number outstanding), then waits for every result.
///
/// The schedule is kept by a thread of its own sleeping to each job's due time (the runtime's
/// timer ticks in milliseconds, which would hand jobs over in bursts); it passes each job to
/// this task, which hands it over. Durations are measured from that hand-over; the lateness
/// against the schedule (thread wake-up and the hop to this task) is in
/// [`Collected::lateness`].
pub async fn open_loop(
    addr: &Addr<Dispatcher>,
    rate: f64,
    duration: Duration,
    make: impl Fn(u64) -> ChatJob,
) -> Result<Collected, String> {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let shared = Rc::new(RefCell::new(Collected::default()));
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let started = Instant::now();
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            for i in 0..total {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if due_tx.send((i, due)).is_err() {
                    return;
                }
            }
        });
    if let Err(error) = pacer {
        return Err(format!("cannot start the pacing thread: {error}"));
    }
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    while let Some((i, due)) = due_rx.recv().await {
        let job = make(i);
        let addr = addr.clone();
        let shared = shared.clone();
        let done = done_tx.clone();
        actix_rt::spawn(async move {
            let (handed, client, result) = run_timed(addr, job).await;
            let mut collected = shared.borrow_mut();
            collected
                .lateness
                .record(handed.saturating_duration_since(due));
            collected.record(client, result);
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let mut finished = 0u64;
    while finished < total && done_rx.recv().await.is_some() {
        finished += 1;
    }
    let elapsed = started.elapsed();
    let mut collected = shared.take();
    collected.elapsed = elapsed;
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_differ_and_carry_max_tokens() {
        let a = request(1, Some(16));
        let b = request(2, None);
        assert_ne!(a.messages, b.messages);
        assert_eq!(a.options.get("max_tokens"), Some(&json!(16)));
        assert!(b.options.is_empty());
    }
}
