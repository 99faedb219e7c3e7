//! The input side of a run: a thread that streams the input file line by line, validates each
//! line, drops the ones the output already answers, and hands the rest over a bounded channel.
//!
//! Nothing here holds more than one line at a time: memory is the channel's few hundred
//! requests and two bits per line for the verdicts found before the run
//! ([`find_line_verdicts`]: duplicates, ids an earlier run answered), however long the file is.

use std::collections::HashSet;
use std::io::{self, BufRead};
use std::path::Path;
use std::str::Utf8Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::duplicates::{AnswerLog, IdRecord, IdSorter, LineVerdicts, RUN_RECORDS};
use super::ids::IdFingerprint;
use super::input::{BatchRequest, InputError, InputErrorCode, LineParser, ParsedLine};
use super::lines::{LineRead, read_bounded, skip_rest};
use super::output::PreviousAnswer;

/// Capacity of the channel between the reader thread and the run loop.
pub(crate) const SOURCE_CHANNEL_CAPACITY: usize = 256;

/// What the reader hands to the run.
#[derive(Debug)]
pub(crate) enum SourceEvent {
    /// A valid line to run.
    Job(BatchRequest),
    /// A rejected line to report.
    Invalid(InputError),
    /// The input could not be read any further.
    Failed(io::Error),
}

/// Live counts of the reader, shared with the progress display.
#[derive(Debug)]
pub(crate) struct SourceCounters {
    total: AtomicU64,
    /// Lines read (every line, blank ones included).
    pub(crate) lines: AtomicU64,
    /// Blank lines (skipped).
    pub(crate) blank: AtomicU64,
    /// Valid lines whose `custom_id` the output already answers.
    pub(crate) skipped: AtomicU64,
    /// Of those, ids whose earlier answer is a failure.
    pub(crate) skipped_failed: AtomicU64,
    /// Invalid lines that an earlier run already reported (not written again).
    pub(crate) invalid_reported_before: AtomicU64,
}

/// The run's end of a reader thread: the events it sends (a bounded channel), its counts, and
/// the flag that tells it to stop.
#[derive(Debug)]
pub(crate) struct Source {
    /// Jobs, rejected lines and read failures, in input order.
    pub(crate) events: mpsc::Receiver<SourceEvent>,
    /// The reader's counts.
    pub(crate) counters: Arc<SourceCounters>,
    /// Set to make the reader stop before its next line.
    pub(crate) stop: Arc<AtomicBool>,
}

impl Source {
    /// Starts `read` on a thread named `name`. It sends into a channel of
    /// [`SOURCE_CHANNEL_CAPACITY`] events, keeps the counts, and returns when the input ends,
    /// `stop` is set or the channel is closed; the channel closes when it returns.
    pub(crate) fn spawn(
        name: &str,
        read: impl FnOnce(&mpsc::Sender<SourceEvent>, &SourceCounters, &AtomicBool) + Send + 'static,
    ) -> io::Result<Source> {
        let counters = Arc::new(SourceCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, events) = mpsc::channel(SOURCE_CHANNEL_CAPACITY);
        {
            let counters = counters.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || read(&sender, &counters, &stop))?;
        }
        Ok(Source {
            events,
            counters,
            stop,
        })
    }
}

impl Default for SourceCounters {
    fn default() -> Self {
        SourceCounters {
            total: AtomicU64::new(u64::MAX),
            lines: AtomicU64::new(0),
            blank: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            skipped_failed: AtomicU64::new(0),
            invalid_reported_before: AtomicU64::new(0),
        }
    }
}

impl SourceCounters {
    /// Records the number of lines of the input, once counted.
    pub(crate) fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// The number of lines of the input, if counted yet.
    pub(crate) fn total(&self) -> Option<u64> {
        let total = self.total.load(Ordering::Relaxed);
        (total != u64::MAX).then_some(total)
    }

    /// Lines dealt with without a job: blank, skipped, or reported before.
    pub(crate) fn settled_without_job(&self) -> u64 {
        self.blank.load(Ordering::Relaxed)
            + self.skipped.load(Ordering::Relaxed)
            + self.invalid_reported_before.load(Ordering::Relaxed)
    }
}

/// Input lines one at a time, numbered from 1 and decoded: every pass over an input numbers
/// its lines the same way. A line longer than the bound is skipped, never held whole.
struct Lines<R> {
    input: R,
    buffer: Vec<u8>,
    number: u64,
    max_line_bytes: u64,
}

/// Why a line has no text.
#[derive(Debug, Clone, Copy)]
enum BadLine {
    /// It is not UTF-8.
    NotUtf8(Utf8Error),
    /// It is longer than the bound (this many bytes, its newline not counted).
    TooLong(u64),
}

impl<R: BufRead> Lines<R> {
    fn new(input: R, max_line_bytes: u64) -> Self {
        Lines {
            input,
            buffer: Vec::with_capacity(4096),
            number: 0,
            max_line_bytes,
        }
    }

    /// The next line's number and text (without its line ending), or why it has none.
    fn next(&mut self) -> io::Result<Option<(u64, Result<&str, BadLine>)>> {
        match read_bounded(&mut self.input, &mut self.buffer, self.max_line_bytes)? {
            LineRead::End => return Ok(None),
            LineRead::Line(_) | LineRead::Unterminated(_) => {}
            LineRead::TooLong => {
                let held = self.buffer.len() as u64;
                self.buffer.clear();
                let (skipped, newline) = skip_rest(&mut self.input)?;
                self.number += 1;
                let length = held + skipped - u64::from(newline);
                return Ok(Some((self.number, Err(BadLine::TooLong(length)))));
            }
        }
        self.number += 1;
        let text = std::str::from_utf8(&self.buffer)
            .map(|text| text.trim_end_matches(['\n', '\r']))
            .map_err(BadLine::NotUtf8);
        Ok(Some((self.number, text)))
    }
}

/// Reads `input` once, before the run, and gives every line its [`Verdict`](super::duplicates::Verdict)
/// in flat memory (see [`super::duplicates`]): the `answers` of an earlier run and each line that
/// has a `custom_id` (with its number and whether `validator` finds it valid) go to an
/// [`IdSorter`], which spills to an unnamed temporary file in `sort_dir`. Returns the verdicts and
/// the number of lines read. Ends early with [`io::ErrorKind::Interrupted`] when `stop` is set.
pub(crate) fn find_line_verdicts(
    input: impl BufRead,
    mut validator: LineParser,
    answers: &AnswerLog,
    sort_dir: &Path,
    max_line_bytes: u64,
    stop: &AtomicBool,
) -> io::Result<(LineVerdicts, u64)> {
    let mut sorter = IdSorter::new(sort_dir, RUN_RECORDS);
    answers.for_each(|record| sorter.push(record))?;
    let mut lines = Lines::new(input, max_line_bytes);
    while let Some((number, text)) = lines.next()? {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        let Ok(text) = text else { continue };
        let (id, valid) = match validator.parse(number, text) {
            ParsedLine::Request(request) => (request.custom_id, true),
            ParsedLine::Invalid(InputError {
                custom_id: Some(id),
                ..
            }) => (id, false),
            ParsedLine::Invalid(_) | ParsedLine::Blank => continue,
        };
        sorter.push(IdRecord::line(IdFingerprint::of(&id), number, valid))?;
    }
    Ok((sorter.finish()?.about_lines(lines.number), lines.number))
}

/// Reads `input` to the end (or until `stop` is set or the receiver is gone; with verdicts found
/// before the run, up to the last line they cover), sending each line that needs work as a
/// [`SourceEvent`]. Lines whose id the output already answers (the parser
/// says so, see [`LineParser::resuming`]) and invalid lines in `reported_lines` (reported by an
/// earlier run) are counted, not sent. Blocking: run it on a thread of its own.
pub(crate) fn read_batch_input(
    input: impl BufRead,
    mut parser: LineParser,
    reported_lines: &HashSet<u64>,
    max_line_bytes: u64,
    events: &mpsc::Sender<SourceEvent>,
    counters: &SourceCounters,
    stop: &AtomicBool,
) {
    let checked_lines = parser.checked_lines();
    let mut lines = Lines::new(input, max_line_bytes);
    while !stop.load(Ordering::Relaxed) {
        let (number, text) = match lines.next() {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(error) => {
                let _ = events.blocking_send(SourceEvent::Failed(error));
                return;
            }
        };
        if let Some(checked) = checked_lines
            && number > checked
        {
            tracing::warn!(
                line = number,
                checked,
                "the input has more lines than when it was checked for duplicate custom_ids; they are not read in this run: run the same command again to process them"
            );
            return;
        }
        counters.lines.fetch_add(1, Ordering::Relaxed);
        let parsed = match text {
            Ok(text) => parser.parse(number, text),
            Err(BadLine::NotUtf8(error)) => ParsedLine::Invalid(InputError {
                line: number,
                custom_id: None,
                code: InputErrorCode::InvalidJson,
                message: format!(
                    "line {number}: not valid UTF-8 (at byte {}); save the file as UTF-8",
                    error.valid_up_to()
                ),
            }),
            Err(BadLine::TooLong(length)) => ParsedLine::Invalid(InputError {
                line: number,
                custom_id: None,
                code: InputErrorCode::LineTooLong,
                message: format!(
                    "line {number}: {length} bytes, longer than the limit of {max_line_bytes} bytes; split the request, or raise --max-line-bytes"
                ),
            }),
        };
        let event = match parsed {
            ParsedLine::Blank => {
                counters.blank.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            ParsedLine::Invalid(error) => {
                if reported_lines.contains(&error.line) {
                    counters
                        .invalid_reported_before
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                SourceEvent::Invalid(error)
            }
            ParsedLine::Request(request) => match request.previous {
                Some(answer) => {
                    counters.skipped.fetch_add(1, Ordering::Relaxed);
                    if answer == PreviousAnswer::Failed {
                        counters.skipped_failed.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                None => SourceEvent::Job(request),
            },
        };
        if events.blocking_send(event).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::input::{DeploymentNames, DuplicateCheck};
    use crate::batch::output::{OutputLine, ResultWriter, ResumeScan, prepare_output};
    use serde_json::json;

    const MAX: u64 = crate::batch::lines::DEFAULT_MAX_LINE_BYTES;

    fn line(id: &str) -> String {
        json!({"custom_id": id, "method": "POST", "url": "/chat/completions",
               "body": {"messages": [{"role": "user", "content": id}]}})
        .to_string()
    }

    /// Reads all of `input` with `parser`: the events sent, and the counts.
    fn read_all(
        input: &[u8],
        parser: LineParser,
        reported: &HashSet<u64>,
    ) -> (Vec<SourceEvent>, SourceCounters) {
        let (sender, mut receiver) = mpsc::channel(1024);
        let counters = SourceCounters::default();
        let stop = AtomicBool::new(false);
        read_batch_input(input, parser, reported, MAX, &sender, &counters, &stop);
        drop(sender);
        let mut events = Vec::new();
        while let Ok(event) = receiver.try_recv() {
            events.push(event);
        }
        (events, counters)
    }

    /// Reads `input` as a run does, both ways: with the verdicts found before the run, and
    /// with the in-memory index (for inputs that cannot be read twice). Both must send the
    /// same events; the first way's are returned.
    fn run_reader(input: &str, mut previous: ResumeScan) -> (Vec<SourceEvent>, SourceCounters) {
        let read = |parser: LineParser, reported: &HashSet<u64>| {
            read_all(input.as_bytes(), parser, reported)
        };
        let answers = previous.take_answers();
        let dir = tempfile::tempdir().unwrap();
        let (verdicts, lines) = find_line_verdicts(
            input.as_bytes(),
            LineParser::validator(DeploymentNames::default()),
            &answers,
            dir.path(),
            MAX,
            &AtomicBool::new(false),
        )
        .unwrap();
        let mut parser = LineParser::new(DeploymentNames::default());
        parser.set_duplicate_check(DuplicateCheck::Found(verdicts));
        let (events, counters) = read(parser, &previous.reported_lines);
        assert_eq!(counters.lines.load(Ordering::Relaxed), lines);
        let (index, _) = answers.to_index().unwrap();
        let remembered = read(
            LineParser::resuming(DeploymentNames::default(), index),
            &previous.reported_lines,
        );
        assert_eq!(describe(&events), describe(&remembered.0));
        assert_eq!(
            counters.settled_without_job(),
            remembered.1.settled_without_job()
        );
        (events, counters)
    }

    fn describe(events: &[SourceEvent]) -> Vec<String> {
        events
            .iter()
            .map(|event| match event {
                SourceEvent::Job(request) => format!("job {} @{}", request.custom_id, request.line),
                SourceEvent::Invalid(error) => format!("{} @{}", error.code, error.line),
                SourceEvent::Failed(error) => format!("failed {error}"),
            })
            .collect()
    }

    #[test]
    fn every_line_becomes_a_job_an_error_or_a_count() {
        let input = format!(
            "{}\n\n{}\nnot json\n{}\r\n{}",
            line("a"),
            line("b"),
            line("a"),
            line("c")
        );
        let (events, counters) = run_reader(&input, ResumeScan::default());
        assert_eq!(
            describe(&events),
            vec![
                "job a @1",
                "job b @3",
                "invalid_json @4",
                "duplicate_custom_id @5",
                "job c @6"
            ]
        );
        assert_eq!(counters.lines.load(Ordering::Relaxed), 6);
        assert_eq!(counters.blank.load(Ordering::Relaxed), 1);
        assert_eq!(counters.settled_without_job(), 1);
    }

    #[test]
    fn a_line_over_the_limit_is_line_too_long_and_the_next_lines_count_on() {
        let long = format!(
            "{{\"custom_id\": \"long\", \"body\": \"{}\"}}",
            "x".repeat(300)
        );
        let input = format!("{}\n{long}\n{}\n", line("a"), line("b"));
        for parser in [
            LineParser::new(DeploymentNames::default()),
            LineParser::validator(DeploymentNames::default()),
        ] {
            let (sender, mut receiver) = mpsc::channel(8);
            let counters = SourceCounters::default();
            read_batch_input(
                io::BufReader::with_capacity(16, input.as_bytes()),
                parser,
                &HashSet::new(),
                200,
                &sender,
                &counters,
                &AtomicBool::new(false),
            );
            drop(sender);
            let mut events = Vec::new();
            while let Ok(event) = receiver.try_recv() {
                events.push(event);
            }
            assert_eq!(
                describe(&events),
                vec!["job a @1", "line_too_long @2", "job b @3"]
            );
            let SourceEvent::Invalid(error) = &events[1] else {
                unreachable!()
            };
            assert!(
                error
                    .message
                    .starts_with(&format!("line 2: {} bytes", long.len())),
                "{}",
                error.message
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let (verdicts, lines) = find_line_verdicts(
            input.as_bytes(),
            LineParser::validator(DeploymentNames::default()),
            &AnswerLog::default(),
            dir.path(),
            200,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!((lines, verdicts.lines()), (3, 3));
    }

    #[test]
    fn lines_added_after_the_check_are_left_for_the_next_run() {
        let checked = format!("{}\n{}\n", line("a"), line("b"));
        let grown = format!("{checked}{}\n{}\n", line("a"), line("c"));
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let (verdicts, lines) = find_line_verdicts(
            checked.as_bytes(),
            LineParser::validator(DeploymentNames::default()),
            &AnswerLog::default(),
            dir.path(),
            MAX,
            &stop,
        )
        .unwrap();
        assert_eq!((lines, verdicts.lines()), (2, 2));
        let mut parser = LineParser::new(DeploymentNames::default());
        parser.set_duplicate_check(DuplicateCheck::Found(verdicts));
        let (events, _) = read_all(grown.as_bytes(), parser, &HashSet::new());
        // Line 3 repeats "a" but was never checked: it is not sent (nor line 4).
        assert_eq!(describe(&events), vec!["job a @1", "job b @2"]);
    }

    #[test]
    fn invalid_utf8_is_an_invalid_json_line() {
        let mut input = line("a").into_bytes();
        input.extend_from_slice(b"\n{\"custom_id\": \"\xff\"}\n");
        let (sender, mut receiver) = mpsc::channel(8);
        let counters = SourceCounters::default();
        read_batch_input(
            &input[..],
            LineParser::new(DeploymentNames::default()),
            &HashSet::new(),
            MAX,
            &sender,
            &counters,
            &AtomicBool::new(false),
        );
        drop(sender);
        let _job = receiver.try_recv().unwrap();
        let Ok(SourceEvent::Invalid(error)) = receiver.try_recv() else {
            panic!("expected an invalid line");
        };
        assert_eq!(error.line, 2);
        assert!(
            error.message.contains("not valid UTF-8"),
            "{}",
            error.message
        );
    }

    #[test]
    fn answered_ids_and_reported_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut writer = ResultWriter::append_to(&path).unwrap();
        writer
            .write(&OutputLine::answer(
                "x1".into(),
                "a".into(),
                200,
                None,
                crate::batch::output::raw_json(&json!({})),
                vec![],
            ))
            .unwrap();
        writer
            .write(&OutputLine::failure(
                "x2".into(),
                "b".into(),
                "timeout",
                "slow",
                vec![],
            ))
            .unwrap();
        writer
            .write(&OutputLine::input_error(
                "x3".into(),
                &InputError {
                    line: 3,
                    custom_id: None,
                    code: InputErrorCode::InvalidJson,
                    message: "line 3: bad".into(),
                },
            ))
            .unwrap();
        let previous = prepare_output(&path, false, MAX).unwrap();
        let input = format!(
            "{}\n{}\nnot json\n{}\n{}",
            line("a"),
            line("b"),
            line("c"),
            line("a")
        );
        let (events, counters) = run_reader(&input, previous);
        assert_eq!(
            describe(&events),
            vec!["job c @4", "duplicate_custom_id @5"]
        );
        assert_eq!(counters.skipped.load(Ordering::Relaxed), 2);
        assert_eq!(counters.skipped_failed.load(Ordering::Relaxed), 1);
        assert_eq!(counters.invalid_reported_before.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stop_ends_the_reading_before_the_next_line() {
        let (sender, mut receiver) = mpsc::channel(8);
        let counters = SourceCounters::default();
        let stop = AtomicBool::new(true);
        read_batch_input(
            line("a").as_bytes(),
            LineParser::new(DeploymentNames::default()),
            &HashSet::new(),
            MAX,
            &sender,
            &counters,
            &stop,
        );
        assert!(receiver.try_recv().is_err());
        assert_eq!(counters.lines.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_gone_receiver_ends_the_reading() {
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let counters = SourceCounters::default();
        let input = format!("{}\n{}\n", line("a"), line("b"));
        read_batch_input(
            input.as_bytes(),
            LineParser::new(DeploymentNames::default()),
            &HashSet::new(),
            MAX,
            &sender,
            &counters,
            &AtomicBool::new(false),
        );
        assert_eq!(counters.lines.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn total_is_unknown_until_set() {
        let counters = SourceCounters::default();
        assert_eq!(counters.total(), None);
        counters.set_total(0);
        assert_eq!(counters.total(), Some(0));
    }
}

/// Arbitrary bytes, read as a run reads its input.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::batch::input::DeploymentNames;
    use proptest::prelude::*;

    /// Bytes with line breaks, CRs, JSON and invalid UTF-8 more often than chance gives them.
    fn input() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\xFF\xFE".to_vec()),
            Just(br#"{"custom_id": "a", "method": "POST", "url": "/chat/completions", "body": {"messages": []}}"#.to_vec()),
            Just(br#"{"custom_id": "#.to_vec()),
            prop::collection::vec(any::<u8>(), 0..24),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(aoai_testkit::fuzz_config())]

        /// Any bytes, any bound, any buffer size: every line comes once, numbered in order,
        /// too long exactly when its bytes (newline not counted) pass the bound, else its
        /// text without the line ending or "not UTF-8"; the parser then gives each a request,
        /// blank or an error naming that line.
        #[test]
        fn any_bytes_are_read_line_by_line(
            bytes in input(),
            max in 0u64..64,
            capacity in 1usize..32,
        ) {
            let mut expected: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            if expected.last().is_some_and(|last| last.is_empty()) {
                expected.pop();
            }
            let reader = io::BufReader::with_capacity(capacity, bytes.as_slice());
            let mut lines = Lines::new(reader, max);
            let mut parser = LineParser::new(DeploymentNames::default());
            let mut count = 0u64;
            while let Some((number, text)) = lines.next().unwrap() {
                count += 1;
                prop_assert_eq!(number, count);
                let raw = expected[(number - 1) as usize];
                match text {
                    Err(BadLine::TooLong(length)) => {
                        prop_assert_eq!(length, raw.len() as u64);
                        prop_assert!(length > max);
                    }
                    Err(BadLine::NotUtf8(_)) => {
                        prop_assert!(raw.len() as u64 <= max);
                        prop_assert!(std::str::from_utf8(raw).is_err());
                    }
                    Ok(text) => {
                        prop_assert!(raw.len() as u64 <= max);
                        let raw = std::str::from_utf8(raw).unwrap();
                        prop_assert_eq!(text, raw.trim_end_matches(['\n', '\r']));
                        match parser.parse(number, text) {
                            ParsedLine::Invalid(error) => prop_assert_eq!(error.line, number),
                            ParsedLine::Request(request) => prop_assert_eq!(request.line, number),
                            ParsedLine::Blank => prop_assert!(text.trim().is_empty()),
                        }
                    }
                }
            }
            prop_assert_eq!(count, expected.len() as u64);
        }
    }
}
