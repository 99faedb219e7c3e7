//! `aoai-blaster run`: a Batch JSONL file through the configured deployments, and the run loop
//! that `demo` shares.
//!
//! The loop keeps at most `queue_capacity + num_workers` jobs outstanding (the Dispatcher's own
//! bound), so memory stays flat however long the input is. Each finished job is written as one
//! whole, flushed line, in completion order. On the first SIGINT/SIGTERM it stops taking lines,
//! lets in-flight jobs finish for the grace period, writes what finished and ends with exit
//! status 130; a second signal exits at once (lines are written synchronously between two polls
//! of the loop, so no line is ever half written).

use std::fs::File;
use std::future::Future;
use std::io::{BufReader, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aoai_blaster::{
    Blaster, BlasterConfig, ChatJob, ChatRequest, ChatResult, EndpointReport, JobError,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indicatif::MultiProgress;
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::batch::answer::{Answer, answer_for};
use crate::batch::duplicates::AnswerLog;
use crate::batch::input::{BatchRequest, DeploymentNames, DuplicateCheck, InputError, LineParser};
use crate::batch::output::{LineIds, OutputLine, ResultWriter, directory_of, prepare_output};
use crate::batch::source::{SourceCounters, SourceEvent, find_line_verdicts, read_batch_input};
use crate::cli::{RunArgs, RunOptions};
use crate::progress::{ProgressDisplay, ProgressMode, ProgressSnapshot};
use crate::summary::{EXIT_INTERRUPTED, EXIT_USAGE, EndpointSummary, Summary};

/// Capacity of the channel between the reader thread and the run loop.
pub const SOURCE_CHANNEL_CAPACITY: usize = 256;

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
pub struct LoopOutcome {
    /// The figures (without per-endpoint rows and makespan).
    pub summary: Summary,
    /// A reason the run had to stop early (the output could not be written, the input could
    /// not be read).
    pub fatal: Option<String>,
}

/// A unique number for this run's output line ids.
pub fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// The job for a validated request line.
pub fn job_for(request: BatchRequest) -> Result<ChatJob, String> {
    let BatchRequest {
        custom_id,
        body,
        pin,
        stream,
        ..
    } = request;
    let chat = ChatRequest::from_body(Value::Object(body)).map_err(|error| error.to_string())?;
    let mut job = ChatJob::new(chat).labelled(custom_id);
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
    handle: aoai_blaster::JobHandle,
}

impl Future for PendingJob {
    type Output = (JobMeta, Result<ChatResult, JobError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.handle).poll(cx) {
            Poll::Ready(result) => Poll::Ready((std::mem::take(&mut self.meta), result)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Per-endpoint rows for the summary: the Dispatcher's reports, with the config's quotas.
pub fn endpoint_summaries(
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
pub fn configured_tpm(config: &BlasterConfig) -> Option<u64> {
    config
        .deployments
        .iter()
        .map(|d| d.tpm_limit)
        .sum::<Option<u64>>()
}

/// Everything the run loop works with.
pub struct RunLoop<'a> {
    /// The running blaster.
    pub blaster: &'a Blaster,
    /// Jobs outstanding at most (`queue_capacity + num_workers`).
    pub capacity: usize,
    /// Where lines go (`None`: the demo without `--output`).
    pub writer: Option<ResultWriter>,
    /// Ids of output lines.
    pub ids: LineIds,
    /// The live display.
    pub progress: &'a mut ProgressDisplay,
    /// How long in-flight jobs may finish after the first signal.
    pub grace_period: Duration,
    /// The reader's counts.
    pub counters: Arc<SourceCounters>,
    /// Tells the reader to stop.
    pub stop: Arc<AtomicBool>,
    /// When the run started.
    pub started: Instant,
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
        summary.invalid_lines += 1;
        let id = self.ids.next_id();
        self.write(&OutputLine::input_error(id, error))
    }

    async fn snapshot(&self, summary: &Summary, in_flight: usize) -> ProgressSnapshot {
        let reports = self.blaster.report().await;
        let counters = &self.counters;
        ProgressSnapshot {
            done: counters.settled_without_job() + summary.invalid_lines + summary.finished(),
            total: counters.total(),
            succeeded: summary.succeeded,
            failed: summary.failed,
            invalid: summary.invalid_lines
                + counters.invalid_reported_before.load(Ordering::Relaxed),
            skipped: counters.skipped.load(Ordering::Relaxed),
            in_flight: in_flight as u64,
            rate_limited: reports.iter().map(|r| r.rate_limited).sum(),
            retries: summary.retry_attempts,
            tokens: summary.prompt_tokens + summary.completion_tokens,
            elapsed: self.started.elapsed(),
            endpoints: reports,
        }
    }

    /// Runs until the source is exhausted and every job is answered, or until interrupted.
    pub async fn drive(mut self, mut events: mpsc::Receiver<SourceEvent>) -> LoopOutcome {
        let mut summary = Summary::default();
        let mut fatal = None;
        let mut inflight: FuturesUnordered<PendingJob> = FuturesUnordered::new();
        let mut source_done = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        let (mut interrupts, mut terminations) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupts), Ok(terminations)) => (interrupts, terminations),
            (Err(error), _) | (_, Err(error)) => {
                return LoopOutcome {
                    summary,
                    fatal: Some(format!("cannot listen for Ctrl-C: {error}")),
                };
            }
        };
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if inflight.is_empty() && (source_done || deadline.is_some()) {
                break;
            }
            let take_more = !source_done && deadline.is_none() && inflight.len() < self.capacity;
            let mut signalled = false;
            tokio::select! {
                biased;
                _ = interrupts.recv() => signalled = true,
                _ = terminations.recv() => signalled = true,
                Some((meta, result)) = inflight.next(), if !inflight.is_empty() => {
                    let id = self.ids.next_id();
                    match answer_for(id, meta.custom_id, &result) {
                        Answer::Line(line, tally) => {
                            summary.record_job(&tally);
                            if let Err(error) = self.write(&line) {
                                fatal = Some(error);
                                break;
                            }
                        }
                        Answer::Unfinished => {
                            tracing::debug!(line = meta.line, "job not finished: it runs again next time");
                            summary.unfinished += 1;
                        }
                    }
                }
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                    tracing::warn!(
                        unfinished = inflight.len(),
                        "grace period over: stopping without the jobs still in flight (they run again next time)"
                    );
                    break;
                }
                _ = ticker.tick() => {
                    let snapshot = self.snapshot(&summary, inflight.len()).await;
                    self.progress.update(&snapshot, Instant::now());
                }
                event = events.recv(), if take_more => match event {
                    Some(SourceEvent::Job(request)) => {
                        let meta = JobMeta { custom_id: request.custom_id.clone(), line: request.line };
                        match job_for(request) {
                            Ok(job) => {
                                summary.submitted += 1;
                                inflight.push(PendingJob { meta, handle: self.blaster.submit(job) });
                            }
                            Err(message) => {
                                let error = InputError {
                                    line: meta.line,
                                    custom_id: Some(meta.custom_id),
                                    code: crate::batch::input::InputErrorCode::InvalidBody,
                                    message: format!("line {}: {message}", meta.line),
                                };
                                if let Err(error) = self.write_invalid(&error, &mut summary) {
                                    fatal = Some(error);
                                    break;
                                }
                            }
                        }
                    }
                    Some(SourceEvent::Invalid(error)) => {
                        if let Err(error) = self.write_invalid(&error, &mut summary) {
                            fatal = Some(error);
                            break;
                        }
                    }
                    Some(SourceEvent::Failed(error)) => {
                        fatal = Some(format!("cannot read the input: {error}"));
                        source_done = true;
                    }
                    None => source_done = true,
                },
            }
            if signalled {
                if deadline.is_some() {
                    self.progress.finish();
                    eprintln!(
                        "aoai-blaster: second interrupt: stopping now; {} jobs in flight were not written and run again next time",
                        inflight.len()
                    );
                    if let Some(writer) = &self.writer {
                        let _ = writer.sync();
                    }
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
                summary.interrupted = true;
                self.stop.store(true, Ordering::Relaxed);
                events.close();
                deadline = Some(tokio::time::Instant::now() + self.grace_period);
                tracing::warn!(
                    in_flight = inflight.len(),
                    grace_period = ?self.grace_period,
                    "interrupted: taking no more lines, finishing the jobs in flight; press Ctrl-C again to stop at once"
                );
            }
        }
        summary.unfinished += inflight.len() as u64;
        let snapshot = self.snapshot(&summary, inflight.len()).await;
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
            fatal.get_or_insert(format!("cannot flush the output file: {error}"));
        }
        LoopOutcome { summary, fatal }
    }
}

/// Prints the summary (stdout) and writes `--summary-json`; returns the exit status.
pub fn finish_run(summary: &Summary, options: &RunOptions, fatal: Option<&str>) -> u8 {
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

fn usage_error(message: impl std::fmt::Display) -> u8 {
    eprintln!("aoai-blaster: {message}");
    EXIT_USAGE
}

/// `aoai-blaster run`.
pub async fn run_command(args: RunArgs, multi: MultiProgress, mode: ProgressMode) -> u8 {
    let config = match BlasterConfig::from_file(&args.config) {
        Ok(config) => config,
        Err(error) => {
            return usage_error(format_args!("config {}: {error}", args.config.display()));
        }
    };
    let input = match File::open(&args.input) {
        Ok(file) => file,
        Err(error) => {
            return usage_error(format_args!(
                "cannot open --input {}: {error}",
                args.input.display()
            ));
        }
    };
    if same_file(&args.input, &args.output) {
        return usage_error("--input and --output name the same file; write the results elsewhere");
    }
    let mut previous = match prepare_output(&args.output, args.retry_failed) {
        Ok(previous) => previous,
        Err(error) => {
            return usage_error(format_args!(
                "cannot prepare --output {}: {error}",
                args.output.display()
            ));
        }
    };
    report_previous(&previous, &args);
    let writer = match ResultWriter::append_to(&args.output) {
        Ok(writer) => writer,
        Err(error) => {
            return usage_error(format_args!(
                "cannot open --output {} for writing: {error}",
                args.output.display()
            ));
        }
    };
    let names = DeploymentNames::new(
        config
            .deployments
            .iter()
            .map(|d| (d.name.clone(), d.model.clone())),
    );
    let counters = Arc::new(SourceCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = mpsc::channel(SOURCE_CHANNEL_CAPACITY);
    {
        let counters = counters.clone();
        let stop = stop.clone();
        let answers = previous.take_answers();
        let reported_lines = std::mem::take(&mut previous.reported_lines);
        let path = args.input.clone();
        // The duplicate check sorts in the output's directory: a place the run may write to,
        // usually on a disk rather than a RAM-backed /tmp.
        let sort_dir = directory_of(&args.output).to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("read-input".into())
            .spawn(move || {
                let Some(parser) =
                    parser_for_run(&input, names, &answers, &sort_dir, &counters, &stop, &sender)
                else {
                    return;
                };
                drop(answers);
                let checked = parser.checked_lines().and_then(|_| input_version(&input));
                read_batch_input(
                    BufReader::with_capacity(1 << 16, &input),
                    parser,
                    &reported_lines,
                    &sender,
                    &counters,
                    &stop,
                );
                if checked.is_some() && input_version(&input) != checked {
                    tracing::warn!(
                        input = %path.display(),
                        "the input file changed during the run; duplicate and answered ids were found in the file as it was at the start: check the output, and run the same command again for lines added since"
                    );
                }
            });
        if let Err(error) = spawned {
            return usage_error(format_args!("cannot start the input reader: {error}"));
        }
    }
    let capacity = config
        .queue_capacity
        .saturating_add(config.num_workers)
        .max(1);
    let endpoints = config.deployments.len();
    let _metrics = match args.options.start_metrics() {
        Ok(server) => server,
        Err(error) => return usage_error(error),
    };
    let blaster = match Blaster::from_config(config.clone()) {
        Ok(blaster) => blaster,
        Err(error) => return usage_error(error),
    };
    let started = Instant::now();
    let mut progress = ProgressDisplay::new(mode, multi, endpoints);
    let outcome = RunLoop {
        blaster: &blaster,
        capacity,
        writer: Some(writer),
        ids: LineIds::new(run_id()),
        progress: &mut progress,
        grace_period: args.options.grace_period,
        counters,
        stop,
        started,
    }
    .drive(receiver)
    .await;
    let summary = conclude(blaster, &config, outcome.summary, started, &progress).await;
    finish_run(&summary, &args.options, outcome.fatal.as_deref())
}

/// Completes the run's figures with the endpoints' final state and stops the blaster: closed
/// gracefully when every job finished, dropped (in-flight calls cancelled) when some did not.
pub async fn conclude(
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
        .max(reports.iter().map(|r| r.rate_limited).sum());
    summary.endpoints = endpoint_summaries(reports, config);
    summary.configured_tpm = configured_tpm(config);
    if summary.unfinished == 0 {
        blaster.close();
    } else {
        drop(blaster);
    }
    summary
}

/// The parser for the run's pass over the input. A first pass over a regular file finds every
/// line's verdict on disk (duplicates, ids answered before; flat memory) and counts the lines
/// for the progress total; an input that cannot be read twice, or a first pass that fails, falls
/// back to an in-memory index of the ids. `None` when the run must not go on (stopped, or the
/// answer log could not be read: then the reason was sent).
fn parser_for_run(
    input: &File,
    names: DeploymentNames,
    answers: &AnswerLog,
    sort_dir: &std::path::Path,
    counters: &SourceCounters,
    stop: &AtomicBool,
    events: &mpsc::Sender<SourceEvent>,
) -> Option<LineParser> {
    if input.metadata().is_ok_and(|metadata| metadata.is_file()) {
        let started = Instant::now();
        // The same open file as the run's pass (a clone shares its offset), read from the
        // start and rewound: both passes see the same file even if the path is replaced.
        let found = input.try_clone().and_then(|file| {
            let found = find_line_verdicts(
                BufReader::with_capacity(1 << 16, file),
                LineParser::validator(names.clone()),
                answers,
                sort_dir,
                stop,
            );
            (&*input).seek(SeekFrom::Start(0))?;
            found
        });
        match found {
            Ok((verdicts, total)) => {
                counters.set_total(total);
                tracing::info!(
                    lines = total,
                    duplicates = verdicts.duplicates(),
                    answered_before = verdicts.answered(),
                    seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
                    "input checked for duplicate and already answered custom_ids"
                );
                warn_duplicate_answers(verdicts.duplicate_answers());
                let mut parser = LineParser::new(names);
                parser.set_duplicate_check(DuplicateCheck::Found(verdicts));
                return Some(parser);
            }
            Err(_) if stop.load(Ordering::Relaxed) => return None,
            Err(error) => tracing::warn!(
                %error,
                dir = %sort_dir.display(),
                "could not check the input for duplicate and answered ids before the run; remembering every id in memory instead"
            ),
        }
    }
    match answers.to_index() {
        Ok((index, duplicate_answers)) => {
            warn_duplicate_answers(duplicate_answers);
            Some(LineParser::resuming(names, index))
        }
        Err(error) => {
            let _ = events.blocking_send(SourceEvent::Failed(std::io::Error::new(
                error.kind(),
                format!("cannot read back the answers found in the output: {error}"),
            )));
            None
        }
    }
}

fn warn_duplicate_answers(lines: u64) {
    if lines > 0 {
        tracing::warn!(
            lines,
            "the output has more than one answer line for some ids (was it edited or concatenated?)"
        );
    }
}

/// What tells that a file changed: its length and modification time.
fn input_version(file: &File) -> Option<(u64, SystemTime)> {
    let metadata = file.metadata().ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn report_previous(previous: &crate::batch::output::ResumeScan, args: &RunArgs) {
    if previous.torn_bytes > 0 {
        tracing::warn!(
            output = %args.output.display(),
            bytes = previous.torn_bytes,
            "the output ended with a torn line (an earlier run was killed while writing it): cut it off; its id runs again"
        );
    }
    if previous.kept_lines() > 0 || previous.dropped_failed > 0 {
        tracing::info!(
            succeeded = previous.succeeded,
            failed = previous.failed,
            invalid_lines = previous.input_errors,
            retrying = previous.dropped_failed,
            "resuming: ids already answered in the output are skipped"
        );
    }
    if let Some(first) = previous.unrecognised_lines.first() {
        tracing::warn!(
            lines = previous.unrecognised_lines.len(),
            first,
            "the output has lines that are not Batch output lines; they are kept as they are"
        );
    }
}
