//! `aoai-blaster run`: a Batch JSONL file through the configured deployments, resumable.
//!
//! Before the run, the output is scanned (ids answered before, a torn last line, `--retry-failed`)
//! and a reader thread checks the input for duplicate and answered ids; then the lines that need
//! work go through the run loop that `demo` shares ([`crate::run_loop`]).

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use aoai_blaster::BlasterConfig;
use indicatif::MultiProgress;
use tokio::sync::mpsc;

use crate::batch::duplicates::AnswerLog;
use crate::batch::input::{DeploymentNames, DuplicateCheck, LineParser};
use crate::batch::lock::{LockError, OutputLock};
use crate::batch::output::{ResultWriter, directory_of, prepare_output};
use crate::batch::source::{
    Source, SourceCounters, SourceEvent, find_line_verdicts, read_batch_input,
};
use crate::cli::RunArgs;
use crate::progress::ProgressMode;
use crate::run_loop::run_jobs;
use crate::summary::EXIT_USAGE;

fn usage_error(message: impl std::fmt::Display) -> u8 {
    eprintln!("aoai-blaster: {message}");
    EXIT_USAGE
}

/// `aoai-blaster run`.
pub(crate) async fn run_command(args: RunArgs, multi: MultiProgress, mode: ProgressMode) -> u8 {
    let config = match BlasterConfig::from_file(&args.config) {
        Ok(config) => config,
        Err(error) => {
            return usage_error(format_args!("config {}: {error}", args.config.display()));
        }
    };
    let input = match open_input(&args.input) {
        Ok(file) => file,
        Err(error) => {
            return usage_error(format_args!(
                "cannot open --input {}: {error}",
                args.input.display()
            ));
        }
    };
    if let Err(message) = check_output_directory(&args.output) {
        return usage_error(message);
    }
    if same_file(&args.input, &args.output) {
        return usage_error("--input and --output name the same file; write the results elsewhere");
    }
    // Held until the run ends (the kernel releases it if the process dies).
    let lock = match OutputLock::acquire(&lock_target(&args.output)) {
        Ok(lock) => lock,
        Err(error @ LockError::Held { .. }) => {
            return usage_error(format_args!("{error} {}", args.output.display()));
        }
        Err(error) => {
            return usage_error(format_args!("--output {}: {error}", args.output.display()));
        }
    };
    tracing::debug!(lock = %lock.path().display(), "output locked for this run");
    let max_line_bytes = args.max_line_bytes;
    let mut previous = match prepare_output(&args.output, args.retry_failed, max_line_bytes) {
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
    let answers = previous.take_answers();
    let reported_lines = std::mem::take(&mut previous.reported_lines);
    let path = args.input.clone();
    // The duplicate check sorts in the output's directory: a place the run may write to,
    // usually on a disk rather than a RAM-backed /tmp.
    let sort_dir = directory_of(&args.output).to_path_buf();
    let source = Source::spawn("read-input", move |sender, counters, stop| {
        let Some(parser) = parser_for_run(
            &input,
            names,
            &answers,
            FirstPass {
                sort_dir: &sort_dir,
                max_line_bytes,
            },
            counters,
            stop,
            sender,
        ) else {
            return;
        };
        drop(answers);
        let checked = parser.checked_lines().and_then(|_| input_version(&input));
        read_batch_input(
            BufReader::with_capacity(1 << 16, &input),
            parser,
            &reported_lines,
            max_line_bytes,
            sender,
            counters,
            stop,
        );
        if checked.is_some() && input_version(&input) != checked {
            tracing::warn!(
                input = %path.display(),
                "the input file changed during the run; duplicate and answered ids were found in the file as it was at the start: check the output, and run the same command again for lines added since"
            );
        }
    });
    let source = match source {
        Ok(source) => source,
        Err(error) => return usage_error(format_args!("cannot start the input reader: {error}")),
    };
    let status = run_jobs(&config, source, Some(writer), &args.options, multi, mode)
        .await
        .unwrap_or_else(usage_error);
    drop(lock);
    status
}

/// Where and how the first pass over the input reads.
struct FirstPass<'a> {
    /// The directory the ids are sorted in.
    sort_dir: &'a Path,
    /// `--max-line-bytes`.
    max_line_bytes: u64,
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
    FirstPass {
        sort_dir,
        max_line_bytes,
    }: FirstPass<'_>,
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
                max_line_bytes,
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

/// The input file, or standard input for `-` (read once, as a pipe is).
fn open_input(path: &Path) -> std::io::Result<File> {
    if path == Path::new("-") {
        let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
        return Ok(File::from(fd));
    }
    File::open(path)
}

/// Refuses an `--output` whose directory is missing or not a directory, naming it.
fn check_output_directory(output: &Path) -> Result<(), String> {
    let directory = directory_of(output);
    match std::fs::metadata(directory) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{} of --output {} is not a directory",
            directory.display(),
            output.display()
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "the directory {} of --output {} does not exist; create it",
            directory.display(),
            output.display()
        )),
        Err(error) => Err(format!(
            "cannot use the directory {} of --output {}: {error}",
            directory.display(),
            output.display()
        )),
    }
}

/// The path the output lock is taken for: the output's real path once it exists, so that two
/// names of one file share one lock.
fn lock_target(output: &Path) -> PathBuf {
    std::fs::canonicalize(output).unwrap_or_else(|_| output.to_path_buf())
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
    if previous.too_long_lines > 0 {
        tracing::warn!(
            lines = previous.too_long_lines,
            max_line_bytes = args.max_line_bytes,
            "the output has lines longer than --max-line-bytes; they are kept as they are but not read (an answer among them is not seen: its id runs again)"
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
