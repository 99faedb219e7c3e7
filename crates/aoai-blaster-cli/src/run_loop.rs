//! The run loop that `run` and `demo` share: jobs from a [`Source`] through a blaster, each
//! answer written as an output line, with the live display and the summary at the end.
//!
//! The loop keeps at most `queue_capacity + num_workers` jobs outstanding (the Dispatcher's own
//! bound), so memory stays flat however long the input is. Each finished job is written as one
//! whole, flushed line, in completion order. On the first SIGINT/SIGTERM it stops taking lines,
//! drops exactly the jobs of which no request went out (`JobHandle::cancel_unsent`; a rerun
//! runs them), lets the jobs sent finish for the grace period, writes what finished and ends with exit status
//! 130; a second signal exits at once (lines are written synchronously between two polls
//! of the loop, so no line is ever half written).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aoai_blaster::core::embeddings::EmbeddingsRequest;
use aoai_blaster::core::responses::ResponsesRequest;
use aoai_blaster::{
    Blaster, BlasterConfig, ChatRequest, EndpointReport, Job, JobError, JobErrorKind, JobRequest,
    JobResult, Operation,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indicatif::MultiProgress;
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::batch::answer::{Answer, answer_for};
use crate::batch::input::{BatchRequest, InputError, InputErrorCode};
use crate::batch::output::{LineIds, OutputLine, ResultWriter};
use crate::batch::source::{Source, SourceCounters, SourceEvent};
use crate::cli::RunOptions;
use crate::progress::{ProgressDisplay, ProgressMode, ProgressSnapshot};
use crate::redis_use::RedisFigures;
use crate::summary::{EXIT_INTERRUPTED, EXIT_USAGE, EndpointSummary, Summary};

/// Runs the jobs of `source` through a blaster built from `config`, writing each answer to
/// `writer` (none: answers are only counted), with the live display in `multi`; prints the
/// summary, writes `--summary-json`, and returns the exit status. `Err` says why the run could
/// not start (the metrics listener or the blaster); the reader is then told to stop.
pub(crate) async fn run_jobs(
    config: &BlasterConfig,
    source: Source,
    writer: Option<ResultWriter>,
    options: &RunOptions,
    multi: MultiProgress,
    mode: ProgressMode,
) -> Result<u8, String> {
    let started = options.start_metrics().and_then(|metrics| {
        let blaster = Blaster::from_config(config.clone()).map_err(|error| error.to_string())?;
        Ok((metrics, blaster))
    });
    let (_metrics, blaster) = match started {
        Ok(started) => started,
        Err(error) => {
            source.stop.store(true, Ordering::Relaxed);
            return Err(error);
        }
    };
    let Source {
        events,
        counters,
        stop,
    } = source;
    let capacity = config
        .queue_capacity
        .saturating_add(config.num_workers)
        .max(1);
    let started = Instant::now();
    let mut progress = ProgressDisplay::new(mode, multi, config.deployments.len());
    let outcome = RunLoop {
        blaster: &blaster,
        capacity,
        writer,
        ids: LineIds::new(run_id()),
        progress: &mut progress,
        grace_period: options.grace_period,
        counters,
        stop,
        started,
    }
    .drive(events)
    .await;
    let summary = conclude(blaster, config, outcome.summary, started, &progress).await;
    Ok(finish_run(&summary, options, outcome.fatal.as_deref()))
}

/// How often the display is refreshed.
const TICK: Duration = Duration::from_millis(200);

/// A job on its way, as the run loop remembers it.
#[derive(Debug, Default)]
struct JobMeta {
    custom_id: String,
    line: u64,
}

/// What the run loop ended with.
#[derive(Debug)]
struct LoopOutcome {
    /// The figures (without per-endpoint rows and makespan).
    summary: Summary,
    /// A reason the run had to stop early (the output could not be written, the input could
    /// not be read).
    fatal: Option<String>,
}

/// A unique number for this run's output line ids.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// The job for a validated request line.
fn job_for(request: BatchRequest) -> Result<Job<JobRequest>, String> {
    let BatchRequest {
        custom_id,
        operation,
        body,
        pin,
        stream,
        ..
    } = request;
    let body = Value::Object(body);
    let request: JobRequest = match operation {
        Operation::Chat => ChatRequest::from_body(body)
            .map_err(|error| error.to_string())?
            .into(),
        Operation::Embeddings => EmbeddingsRequest::from_body(body)
            .map_err(|error| error.to_string())?
            .into(),
        Operation::Responses => ResponsesRequest::from_body(body)
            .map_err(|error| error.to_string())?
            .into(),
    };
    let mut job = Job::new(request).labelled(custom_id);
    if stream {
        job = job.streamed();
    }
    if let Some(pin) = pin {
        job = job.pinned_to(pin);
    }
    Ok(job)
}

/// A submitted job's result, with what the loop needs to write its line.
struct PendingJob {
    meta: JobMeta,
    handle: aoai_blaster::JobHandle<JobResult>,
}

impl Future for PendingJob {
    type Output = (JobMeta, Result<JobResult, JobError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.handle).poll(cx) {
            Poll::Ready(result) => Poll::Ready((std::mem::take(&mut self.meta), result)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Per-endpoint rows for the summary: the Dispatcher's reports, with the config's quotas.
fn endpoint_summaries(
    reports: Vec<EndpointReport>,
    config: &BlasterConfig,
) -> Vec<EndpointSummary> {
    reports
        .into_iter()
        .map(|report| EndpointSummary {
            tpm_limit: config.deployment(&report.name).and_then(|d| d.tpm_limit),
            report,
        })
        .collect()
}

/// The sum of the deployments' `tpm_limit`s, when every deployment has one.
pub(crate) fn configured_tpm(config: &BlasterConfig) -> Option<u64> {
    config
        .deployments
        .iter()
        .map(|d| d.tpm_limit)
        .sum::<Option<u64>>()
}

/// Everything the run loop works with.
struct RunLoop<'a> {
    /// The running blaster.
    blaster: &'a Blaster,
    /// Jobs outstanding at most (`queue_capacity + num_workers`).
    capacity: usize,
    /// Where lines go (`None`: the demo without `--output`).
    writer: Option<ResultWriter>,
    /// Ids of output lines.
    ids: LineIds,
    /// The live display.
    progress: &'a mut ProgressDisplay,
    /// How long in-flight jobs may finish after the first signal.
    grace_period: Duration,
    /// The reader's counts.
    counters: Arc<SourceCounters>,
    /// Tells the reader to stop.
    stop: Arc<AtomicBool>,
    /// When the run started.
    started: Instant,
}

impl RunLoop<'_> {
    fn write(&mut self, line: &OutputLine) -> Result<(), String> {
        match self.writer.as_mut() {
            Some(writer) => writer
                .write(line)
                .map_err(|error| format!("cannot write to the output file: {error}")),
            None => Ok(()),
        }
    }

    fn write_invalid(&mut self, error: &InputError, summary: &mut Summary) -> Result<(), String> {
        tracing::debug!(line = error.line, code = %error.code, "{}", error.message);
        summary.record_invalid(error.line, error.code.as_str());
        let id = self.ids.next_id();
        self.write(&OutputLine::input_error(id, error))
    }

    async fn snapshot(&self, summary: &Summary, in_flight: usize) -> ProgressSnapshot {
        let reports = self.blaster.report().await;
        let counters = &self.counters;
        ProgressSnapshot {
            done: counters.settled_without_job() + summary.invalid_lines + summary.finished(),
            total: counters.total(),
            worked: summary.invalid_lines + summary.finished(),
            succeeded: summary.succeeded,
            failed: summary.failed,
            invalid: summary.invalid_lines
                + counters.invalid_reported_before.load(Ordering::Relaxed),
            skipped: counters.skipped.load(Ordering::Relaxed),
            in_flight: in_flight as u64,
            on_the_wire: reports.iter().map(|r| r.in_flight as u64).sum(),
            rate_limited: reports.iter().map(|r| r.counts.rate_limited).sum(),
            retries: summary.retry_attempts,
            tokens: summary.prompt_tokens + summary.completion_tokens,
            elapsed: self.started.elapsed(),
            endpoints: reports,
        }
    }

    /// Runs until the source is exhausted and every job is answered, or until interrupted.
    async fn drive(mut self, mut events: mpsc::Receiver<SourceEvent>) -> LoopOutcome {
        let mut state = LoopState::default();
        let (mut interrupts, mut terminations) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupts), Ok(terminations)) => (interrupts, terminations),
            (Err(error), _) | (_, Err(error)) => {
                return LoopOutcome {
                    summary: state.summary,
                    fatal: Some(format!("cannot listen for Ctrl-C: {error}")),
                };
            }
        };
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !state.is_over() {
            let take_more = !state.source_done
                && state.deadline.is_none()
                && state.inflight.len() < self.capacity;
            let mut signalled = false;
            let deadline = state.deadline;
            let step = tokio::select! {
                biased;
                _ = interrupts.recv() => { signalled = true; Ok(()) }
                _ = terminations.recv() => { signalled = true; Ok(()) }
                Some((meta, result)) = state.inflight.next(), if !state.inflight.is_empty() => {
                    self.write_answer(meta, &result, &mut state.summary)
                }
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                    tracing::warn!(
                        unfinished = state.inflight.len(),
                        "grace period over: stopping without the jobs still in flight (they run again next time)"
                    );
                    break;
                }
                _ = ticker.tick() => {
                    let snapshot = self.snapshot(&state.summary, state.inflight.len()).await;
                    self.progress.update(&snapshot, Instant::now());
                    Ok(())
                }
                event = events.recv(), if take_more => self.take(event, &mut state),
            };
            if let Err(error) = step {
                state.fatal = Some(error);
                break;
            }
            if signalled {
                self.interrupted(&mut state, &mut events);
            }
        }
        self.conclude_loop(state).await
    }

    /// Writes the line of a finished job (or counts it as unfinished).
    fn write_answer(
        &mut self,
        meta: JobMeta,
        result: &Result<JobResult, JobError>,
        summary: &mut Summary,
    ) -> Result<(), String> {
        if let Err(error) = result
            && matches!(error.kind, JobErrorKind::EndpointsRejected { .. })
        {
            // No endpoint will serve any line until the config is fixed: write no answer for
            // this line (nor for those not started: they run again after the fix) and stop.
            summary.unfinished += 1;
            self.stop.store(true, Ordering::Relaxed);
            return Err(format!(
                "{}; the lines not answered run when you run the same command again",
                error.kind
            ));
        }
        let id = self.ids.next_id();
        match answer_for(id, meta.custom_id, result) {
            Answer::Line(line, tally) => {
                summary.record_job(&tally);
                self.write(&line)
            }
            Answer::Unfinished => {
                tracing::debug!(
                    line = meta.line,
                    "job not finished: it runs again next time"
                );
                summary.unfinished += 1;
                Ok(())
            }
        }
    }

    /// Takes one event of the source (`None`: it is exhausted): submits the job, or writes the
    /// error line. `Err` when the output cannot be written.
    fn take(&mut self, event: Option<SourceEvent>, state: &mut LoopState) -> Result<(), String> {
        match event {
            Some(SourceEvent::Job(request)) => {
                let meta = JobMeta {
                    custom_id: request.custom_id.clone(),
                    line: request.line,
                };
                match job_for(request) {
                    Ok(job) => {
                        state.summary.submitted += 1;
                        state.inflight.push(PendingJob {
                            meta,
                            handle: self.blaster.submit_job(job),
                        });
                        Ok(())
                    }
                    Err(message) => {
                        let error = InputError {
                            line: meta.line,
                            custom_id: Some(meta.custom_id),
                            code: InputErrorCode::InvalidBody,
                            message: format!("line {}: {message}", meta.line),
                        };
                        self.write_invalid(&error, &mut state.summary)
                    }
                }
            }
            Some(SourceEvent::Invalid(error)) => self.write_invalid(&error, &mut state.summary),
            Some(SourceEvent::Failed(error)) => {
                state.fatal = Some(format!("cannot read the input: {error}"));
                state.source_done = true;
                Ok(())
            }
            None => {
                state.source_done = true;
                Ok(())
            }
        }
    }

    /// A signal: the first stops the reader, drops the jobs not yet sent (a rerun runs them)
    /// and starts the grace period for the jobs sent; the second exits the process at once.
    fn interrupted(&mut self, state: &mut LoopState, events: &mut mpsc::Receiver<SourceEvent>) {
        if state.deadline.is_some() {
            self.progress.finish();
            eprintln!(
                "aoai-blaster: second interrupt: stopping now; {} jobs in flight were not written and run again next time",
                state.inflight.len()
            );
            if let Some(writer) = &self.writer {
                let _ = writer.sync();
            }
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        state.summary.interrupted = true;
        self.stop.store(true, Ordering::Relaxed);
        events.close();
        let not_sent = drop_unsent(&mut state.inflight);
        state.summary.unfinished += not_sent;
        state.deadline = Some(tokio::time::Instant::now() + self.grace_period);
        tracing::warn!(
            in_flight = state.inflight.len(),
            not_sent,
            grace_period = ?self.grace_period,
            "interrupted: taking no more lines, dropped the jobs not yet sent (they run next time), finishing the jobs in flight; press Ctrl-C again to stop at once"
        );
    }

    /// The loop's figures once it stops: jobs still in flight count as unfinished, the reader's
    /// counts are added, and the output is flushed.
    async fn conclude_loop(&mut self, mut state: LoopState) -> LoopOutcome {
        let summary = &mut state.summary;
        summary.unfinished += state.inflight.len() as u64;
        summary.output = self
            .writer
            .as_ref()
            .map(|writer| writer.path().display().to_string());
        let snapshot = self.snapshot(summary, state.inflight.len()).await;
        self.progress.update(&snapshot, Instant::now());
        summary.lines_read = self.counters.lines.load(Ordering::Relaxed)
            - self.counters.blank.load(Ordering::Relaxed);
        summary.skipped = self.counters.skipped.load(Ordering::Relaxed);
        summary.skipped_failed = self.counters.skipped_failed.load(Ordering::Relaxed);
        summary.invalid_lines += self
            .counters
            .invalid_reported_before
            .load(Ordering::Relaxed);
        if let Some(writer) = &self.writer
            && let Err(error) = writer.sync()
        {
            state
                .fatal
                .get_or_insert(format!("cannot flush the output file: {error}"));
        }
        LoopOutcome {
            summary: state.summary,
            fatal: state.fatal,
        }
    }
}

/// Cancels and drops the `pending` jobs no request of which went out (a rerun runs them), and
/// keeps the others, which finish during the grace period. Exact: a job is either cancelled
/// before its first request or kept ([`JobHandle::cancel_unsent`](aoai_blaster::JobHandle::cancel_unsent)).
/// Returns how many were dropped.
fn drop_unsent(pending: &mut FuturesUnordered<PendingJob>) -> u64 {
    let jobs = std::mem::take(pending);
    let mut dropped = 0;
    for job in jobs {
        if job.handle.cancel_unsent() {
            dropped += 1;
        } else {
            pending.push(job);
        }
    }
    dropped
}

/// What the run loop tracks while it runs.
#[derive(Default)]
struct LoopState {
    /// The figures so far.
    summary: Summary,
    /// Why the run must stop early, once known.
    fatal: Option<String>,
    /// Jobs submitted and not yet answered.
    inflight: FuturesUnordered<PendingJob>,
    /// The source has no more events.
    source_done: bool,
    /// When the grace period after the first signal ends.
    deadline: Option<tokio::time::Instant>,
}

impl LoopState {
    /// Every job is answered and no more will come (the source is done, or a signal came).
    fn is_over(&self) -> bool {
        self.inflight.is_empty() && (self.source_done || self.deadline.is_some())
    }
}

/// Prints the summary (stdout) and writes `--summary-json`; returns the exit status.
fn finish_run(summary: &Summary, options: &RunOptions, fatal: Option<&str>) -> u8 {
    crate::console::print(&summary.render());
    let mut status = summary.exit_status();
    if let Some(path) = &options.summary_json {
        let written = serde_json::to_vec_pretty(summary)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(path, bytes));
        if let Err(error) = written {
            eprintln!(
                "aoai-blaster: cannot write --summary-json {}: {error}",
                path.display()
            );
            if status != EXIT_INTERRUPTED {
                status = EXIT_USAGE;
            }
        }
    }
    if let Some(fatal) = fatal {
        eprintln!("aoai-blaster: {fatal}");
        if !summary.interrupted {
            status = EXIT_USAGE;
        }
    }
    status
}

/// Completes the run's figures with the endpoints' final state and stops the blaster: closed
/// gracefully when every job finished, dropped (in-flight calls cancelled) when some did not.
async fn conclude(
    blaster: Blaster,
    config: &BlasterConfig,
    mut summary: Summary,
    started: Instant,
    progress: &ProgressDisplay,
) -> Summary {
    summary.makespan = started.elapsed();
    let reports = blaster.report().await;
    progress.finish();
    summary.rate_limited = summary
        .rate_limited
        .max(reports.iter().map(|r| r.counts.rate_limited).sum());
    summary.endpoints = endpoint_summaries(reports, config);
    summary.configured_tpm = configured_tpm(config);
    let submitted = summary.submitted;
    summary.redis = blaster
        .redis_use()
        .await
        .map(|usage| RedisFigures::of(&usage, submitted));
    if summary.unfinished == 0 {
        blaster.close();
    } else {
        drop(blaster);
    }
    summary
}
