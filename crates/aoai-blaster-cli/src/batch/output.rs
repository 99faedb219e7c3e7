//! Output lines in the OpenAI / Azure Batch format, the crash-safe writer, and the resume scan.
//!
//! Every line is one JSON object:
//! - an answer with an HTTP reply (2xx, or the final 4xx/5xx with Azure's error body):
//!   `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`;
//! - a job that failed with no reply (connection refused, timeouts, every endpoint disabled):
//!   `{"id", "custom_id", "response": null, "error": {"code", "message"}}`;
//! - a rejected input line: `{"id", "custom_id", "response": null,
//!   "error": {"code": "invalid_json" | ..., "message": "line N: ...", "line": N}}`.
//!
//! Answers may carry `attempts`: what each attempt met, endpoint by endpoint.
//!
//! **Crash safety.** [`ResultWriter`] writes each line whole with one `write` and flushes it,
//! so a killed run leaves at most one torn line, at the end. [`prepare_output`] reads an existing
//! output file before a run: it truncates a torn last line, notes the `custom_id`s already
//! answered (on disk: the run skips them) and the input lines already reported as invalid, and with
//! `retry_failed` rewrites the file atomically (temporary file, then rename) without the failed
//! answers, so those ids run again.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::duplicates::AnswerLog;
use super::head::classify_head;
use super::ids::IdFingerprint;
use super::input::{InputError, InputErrorCode};
use super::lines::{LineRead, copy_rest, into_writer, read_bounded, skip_rest};

/// One output line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutputLine {
    /// This line's own id (`batch_req_...`), unique across runs.
    pub(crate) id: String,
    /// The input line's `custom_id` (null for an input line without a usable one).
    pub(crate) custom_id: Option<String>,
    /// The HTTP reply, when there was one.
    pub(crate) response: Option<ResponsePart>,
    /// Why there is no reply, or why the input line was rejected.
    pub(crate) error: Option<ErrorPart>,
    /// What each attempt met (answers only; omitted when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) attempts: Vec<Value>,
}

/// The `response` of an answer line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResponsePart {
    /// HTTP status of the final reply.
    pub(crate) status_code: u16,
    /// Azure's request id of the final reply, when it sent one.
    pub(crate) request_id: Option<String>,
    /// The reply (2xx: completion, embeddings, response) or Azure's error body
    /// (`{"error": {...}}`), as JSON text: embedding vectors are written as the service sent
    /// them, never parsed into a tree.
    pub(crate) body: Box<RawValue>,
}

/// Equal when the same fields hold the same JSON text.
impl PartialEq for ResponsePart {
    fn eq(&self, other: &Self) -> bool {
        self.status_code == other.status_code
            && self.request_id == other.request_id
            && self.body.get() == other.body.get()
    }
}

/// `value` as JSON text, for [`ResponsePart::body`].
pub(crate) fn raw_json(value: &Value) -> Box<RawValue> {
    // A `Value` always serialises (the default, `null`, is never reached).
    serde_json::value::to_raw_value(value).unwrap_or_default()
}

/// The `error` of a line without a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ErrorPart {
    /// A short machine-readable code (`timeout`, `all_endpoints_disabled`, `invalid_json`, ...).
    pub(crate) code: String,
    /// What happened, for a person.
    pub(crate) message: String,
    /// The input line number, for rejected input lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) line: Option<u64>,
}

impl OutputLine {
    /// An answer with an HTTP reply.
    pub(crate) fn answer(
        id: String,
        custom_id: String,
        status_code: u16,
        request_id: Option<String>,
        body: Box<RawValue>,
        attempts: Vec<Value>,
    ) -> OutputLine {
        OutputLine {
            id,
            custom_id: Some(custom_id),
            response: Some(ResponsePart {
                status_code,
                request_id,
                body,
            }),
            error: None,
            attempts,
        }
    }

    /// A job that ended with no reply.
    pub(crate) fn failure(
        id: String,
        custom_id: String,
        code: impl Into<String>,
        message: impl Into<String>,
        attempts: Vec<Value>,
    ) -> OutputLine {
        OutputLine {
            id,
            custom_id: Some(custom_id),
            response: None,
            error: Some(ErrorPart {
                code: code.into(),
                message: message.into(),
                line: None,
            }),
            attempts,
        }
    }

    /// A rejected input line.
    pub(crate) fn input_error(id: String, error: &InputError) -> OutputLine {
        OutputLine {
            id,
            custom_id: error.custom_id.clone(),
            response: None,
            error: Some(ErrorPart {
                code: error.code.as_str().to_owned(),
                message: error.message.clone(),
                line: Some(error.line),
            }),
            attempts: Vec::new(),
        }
    }

    /// True for an answer with a 2xx reply.
    #[cfg(test)]
    pub(crate) fn is_success(&self) -> bool {
        self.error.is_none()
            && self
                .response
                .as_ref()
                .is_some_and(|r| (200..300).contains(&r.status_code))
    }
}

/// Makes the `id` of each output line: `batch_req_<run>_<n>`, unique across runs as long as the
/// run part is (the caller derives it from the start time and process id).
#[derive(Debug, Clone)]
pub(crate) struct LineIds {
    run: u64,
    next: u64,
}

impl LineIds {
    /// Ids for the run identified by `run`.
    pub(crate) fn new(run: u64) -> LineIds {
        LineIds { run, next: 0 }
    }

    /// The next id.
    pub(crate) fn next_id(&mut self) -> String {
        self.next += 1;
        format!("batch_req_{:016x}_{}", self.run, self.next)
    }
}

/// Appends whole lines to the output file, flushing each one.
#[derive(Debug)]
pub(crate) struct ResultWriter {
    file: File,
    path: PathBuf,
    buffer: Vec<u8>,
    written: u64,
}

impl ResultWriter {
    /// Opens `path` for appending, creating it if needed.
    pub(crate) fn append_to(path: &Path) -> io::Result<ResultWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(ResultWriter {
            file,
            path: path.to_path_buf(),
            buffer: Vec::with_capacity(4096),
            written: 0,
        })
    }

    /// Writes `line` and its newline with one `write_all` on one buffer, then flushes.
    pub(crate) fn write(&mut self, line: &OutputLine) -> io::Result<()> {
        self.buffer.clear();
        serde_json::to_writer(&mut self.buffer, line).map_err(io::Error::other)?;
        self.buffer.push(b'\n');
        self.file.write_all(&self.buffer)?;
        self.file.flush()?;
        self.written += 1;
        Ok(())
    }

    /// The file written to.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Lines written by this writer.
    #[cfg(test)]
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Flushes the file's data to the disk (`fsync`), for the end of a run.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// What one existing output line is, for resuming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// An answer with a 2xx reply for this `custom_id`.
    Succeeded(String),
    /// A failed answer (no reply, or a final 4xx/5xx) for this `custom_id`.
    Failed(String),
    /// The error line of a rejected input line (its 1-based number).
    InputError(u64),
    /// Not an output line of ours.
    Unrecognised,
}

#[derive(Deserialize)]
struct ScanLine {
    #[serde(default)]
    custom_id: Option<String>,
    #[serde(default)]
    response: Option<ScanResponse>,
    #[serde(default)]
    error: Option<ScanError>,
}

#[derive(Deserialize)]
struct ScanResponse {
    status_code: u16,
    #[serde(default)]
    #[allow(dead_code)]
    body: IgnoredAny,
}

#[derive(Deserialize)]
struct ScanError {
    code: String,
    #[serde(default)]
    line: Option<u64>,
}

/// Classifies one output line (without its newline), reading no more of the body than needed.
pub(crate) fn classify_line(line: &[u8]) -> LineKind {
    let Ok(scan) = serde_json::from_slice::<ScanLine>(line) else {
        return LineKind::Unrecognised;
    };
    if let Some(error) = &scan.error
        && InputErrorCode::parse(&error.code).is_some()
    {
        return match error.line {
            Some(line) => LineKind::InputError(line),
            None => LineKind::Unrecognised,
        };
    }
    let Some(custom_id) = scan.custom_id else {
        return LineKind::Unrecognised;
    };
    match (&scan.response, &scan.error) {
        (Some(response), None) if (200..300).contains(&response.status_code) => {
            LineKind::Succeeded(custom_id)
        }
        (Some(_), _) | (None, Some(_)) => LineKind::Failed(custom_id),
        (None, None) => LineKind::Unrecognised,
    }
}

/// How an id skipped on resume was answered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreviousAnswer {
    /// A 2xx answer.
    Succeeded,
    /// A failed answer (kept because the run does not retry failures).
    Failed,
}

/// What [`prepare_output`] found in an existing output file.
#[derive(Debug, Default)]
pub(crate) struct ResumeScan {
    /// The answers kept in the file (2xx ones, and failed ones when they are not retried), on
    /// disk: each id's latest word is found before the run (see
    /// [`duplicates`](super::duplicates)).
    pub(crate) answers: AnswerLog,
    /// Input line numbers that already have an error line: the run does not write them again.
    pub(crate) reported_lines: HashSet<u64>,
    /// Successful answer lines found.
    pub(crate) succeeded: u64,
    /// Failed answer lines kept (not retried).
    pub(crate) failed: u64,
    /// Failed answer lines removed by `retry_failed` (their ids run again).
    pub(crate) dropped_failed: u64,
    /// Input-error lines found.
    pub(crate) input_errors: u64,
    /// Numbers (1-based) of lines that are not output lines of ours; kept as they are.
    pub(crate) unrecognised_lines: Vec<u64>,
    /// Of the unrecognised lines, those longer than `--max-line-bytes` (only their head read).
    pub(crate) too_long_lines: u64,
    /// Bytes of a torn last line that were cut off.
    pub(crate) torn_bytes: u64,
}

impl ResumeScan {
    /// Lines kept in the file.
    pub(crate) fn kept_lines(&self) -> u64 {
        self.succeeded + self.failed + self.input_errors + self.unrecognised_lines.len() as u64
    }

    /// The log of answers (the scan keeps an empty one).
    pub(crate) fn take_answers(&mut self) -> AnswerLog {
        std::mem::take(&mut self.answers)
    }

    /// Counts line number `number`, of `kind`; says whether the file keeps it (with
    /// `retry_failed`, failed answers are dropped).
    fn record(&mut self, kind: LineKind, number: u64, retry_failed: bool) -> io::Result<bool> {
        Ok(match kind {
            LineKind::Succeeded(id) => {
                self.answers
                    .push(IdFingerprint::of(&id), PreviousAnswer::Succeeded)?;
                self.succeeded += 1;
                true
            }
            LineKind::Failed(_) if retry_failed => {
                self.dropped_failed += 1;
                false
            }
            LineKind::Failed(id) => {
                self.answers
                    .push(IdFingerprint::of(&id), PreviousAnswer::Failed)?;
                self.failed += 1;
                true
            }
            LineKind::InputError(line) => {
                self.reported_lines.insert(line);
                self.input_errors += 1;
                true
            }
            LineKind::Unrecognised => {
                self.unrecognised_lines.push(number);
                true
            }
        })
    }
}

/// Whether a line of `kind` stays in the file (with `retry_failed`, failed answers go).
fn kind_kept(kind: &LineKind, retry_failed: bool) -> bool {
    !(retry_failed && matches!(kind, LineKind::Failed(_)))
}

/// The directory `path` is in (`.` for a bare file name): where the output's temporary files go.
pub(crate) fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes an existing output file safe to append to and indexes it; see the module docs.
///
/// A missing file gives an empty scan. With `retry_failed`, the file is replaced atomically by
/// one without the failed answers (a temporary file in the same directory, then a rename). A
/// line longer than `max_line_bytes` is never held in memory: its head tells what it is
/// ([`classify_head`]), and it is kept as it is (copied through in chunks when the file is
/// rewritten) unless it is a failed answer that `retry_failed` drops.
pub(crate) fn prepare_output(
    path: &Path,
    retry_failed: bool,
    max_line_bytes: u64,
) -> io::Result<ResumeScan> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(ResumeScan::default());
        }
        Err(error) => return Err(error),
    };
    let mut rewrite = if retry_failed {
        let temp = tempfile::Builder::new()
            .prefix(".aoai-blaster-rewrite-")
            .tempfile_in(directory_of(path))?;
        let writer = BufWriter::with_capacity(1 << 16, temp.reopen()?);
        Some((temp, writer))
    } else {
        None
    };
    let mut scan = ResumeScan {
        answers: AnswerLog::new(directory_of(path)),
        ..ResumeScan::default()
    };
    let mut reader = BufReader::with_capacity(1 << 16, &file);
    let mut buffer = Vec::with_capacity(4096);
    let mut complete_end = 0u64;
    // Bytes of whole lines written to the rewrite.
    let mut rewritten = 0u64;
    let mut number = 0u64;
    loop {
        match read_bounded(&mut reader, &mut buffer, max_line_bytes)? {
            LineRead::End => break,
            LineRead::Unterminated(read) => {
                scan.torn_bytes = read as u64;
                break;
            }
            LineRead::Line(read) => {
                complete_end += read as u64;
                number += 1;
                let kind = classify_line(&buffer[..read - 1]);
                let keep = scan.record(kind, number, retry_failed)?;
                if keep && let Some((_, writer)) = rewrite.as_mut() {
                    writer.write_all(&buffer)?;
                    rewritten += read as u64;
                }
            }
            LineRead::TooLong => {
                // Told apart by its head, then copied through to the rewrite as it is read,
                // never held whole.
                let held = buffer.len() as u64;
                let kind = classify_head(&buffer);
                let copy = match rewrite.as_mut() {
                    Some((_, writer)) if kind_kept(&kind, retry_failed) => Some(writer),
                    _ => None,
                };
                let copied = copy.is_some();
                let (rest, newline) = match copy {
                    Some(writer) => {
                        writer.write_all(&buffer)?;
                        copy_rest(&mut reader, &mut buffer, into_writer(writer))?
                    }
                    None => skip_rest(&mut reader)?,
                };
                if !newline {
                    scan.torn_bytes = held + rest;
                    break;
                }
                complete_end += held + rest;
                if copied {
                    rewritten += held + rest;
                }
                number += 1;
                if kind == LineKind::Unrecognised {
                    scan.too_long_lines += 1;
                }
                scan.record(kind, number, retry_failed)?;
            }
        }
    }
    drop(reader);
    scan.answers.seal()?;
    match rewrite {
        Some((temp, writer)) => {
            let file = writer.into_inner().map_err(|error| error.into_error())?;
            // A torn line too long to hold was copied as it was read: cut it off.
            file.set_len(rewritten)?;
            file.sync_all()?;
            temp.persist(path).map_err(|error| error.error)?;
        }
        None if scan.torn_bytes > 0 => {
            file.set_len(complete_end)?;
            file.sync_all()?;
        }
        None => {}
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: u64 = crate::batch::lines::DEFAULT_MAX_LINE_BYTES;

    fn answer(custom_id: &str, status: u16) -> OutputLine {
        OutputLine::answer(
            format!("batch_req_{custom_id}"),
            custom_id.to_owned(),
            status,
            Some("req-1".into()),
            raw_json(&json!({"choices": []})),
            Vec::new(),
        )
    }

    fn failure(custom_id: &str) -> OutputLine {
        OutputLine::failure(
            format!("batch_req_{custom_id}"),
            custom_id.to_owned(),
            "timeout",
            "no reply within 2s",
            vec![json!({"endpoint": "east", "outcome": "timeout"})],
        )
    }

    fn input_error(line: u64) -> OutputLine {
        OutputLine::input_error(
            format!("batch_req_line{line}"),
            &InputError {
                line,
                custom_id: None,
                code: InputErrorCode::InvalidJson,
                message: format!("line {line}: not valid JSON"),
            },
        )
    }

    fn answer_of(scan: &ResumeScan, id: &str) -> Option<PreviousAnswer> {
        scan.answers
            .answer_of(IdFingerprint::of(id))
            .expect("the answer log reads")
    }

    fn write_lines(path: &Path, lines: &[OutputLine]) {
        let mut writer = ResultWriter::append_to(path).unwrap();
        for line in lines {
            writer.write(line).unwrap();
        }
        assert_eq!(writer.written(), lines.len() as u64);
    }

    fn read_lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn answer_line_has_exactly_the_batch_fields() {
        let line = serde_json::to_value(answer("a", 200)).unwrap();
        assert_eq!(
            line,
            json!({"id": "batch_req_a", "custom_id": "a", "error": null,
                   "response": {"status_code": 200, "request_id": "req-1", "body": {"choices": []}}})
        );
    }

    #[test]
    fn failure_line_has_null_response_and_attempts() {
        let line = serde_json::to_value(failure("b")).unwrap();
        assert_eq!(
            line,
            json!({"id": "batch_req_b", "custom_id": "b", "response": null,
                   "error": {"code": "timeout", "message": "no reply within 2s"},
                   "attempts": [{"endpoint": "east", "outcome": "timeout"}]})
        );
    }

    #[test]
    fn input_error_line_names_code_and_line() {
        let line = serde_json::to_value(input_error(4)).unwrap();
        assert_eq!(line["custom_id"], Value::Null);
        assert_eq!(line["response"], Value::Null);
        assert_eq!(line["error"]["code"], "invalid_json");
        assert_eq!(line["error"]["line"], 4);
    }

    #[test]
    fn success_is_a_2xx_without_error() {
        assert!(answer("a", 200).is_success());
        assert!(!answer("a", 400).is_success());
        assert!(!failure("a").is_success());
    }

    #[test]
    fn line_ids_are_unique_and_name_the_run() {
        let mut ids = LineIds::new(0xabc);
        let first = ids.next_id();
        assert_eq!(first, "batch_req_0000000000000abc_1");
        assert_ne!(ids.next_id(), first);
        assert_ne!(LineIds::new(0xabd).next_id(), first);
    }

    #[test]
    fn classify_tells_the_kinds_apart() {
        let bytes = |line: &OutputLine| serde_json::to_vec(line).unwrap();
        assert_eq!(
            classify_line(&bytes(&answer("a", 201))),
            LineKind::Succeeded("a".into())
        );
        assert_eq!(
            classify_line(&bytes(&answer("a", 429))),
            LineKind::Failed("a".into())
        );
        assert_eq!(
            classify_line(&bytes(&failure("b"))),
            LineKind::Failed("b".into())
        );
        assert_eq!(
            classify_line(&bytes(&input_error(9))),
            LineKind::InputError(9)
        );
        assert_eq!(classify_line(b"{\"id\": 1"), LineKind::Unrecognised);
        assert_eq!(classify_line(b"{\"hello\": 1}"), LineKind::Unrecognised);
        // An error line that claims an input code but has no line number is not ours.
        assert_eq!(
            classify_line(
                br#"{"custom_id": "x", "error": {"code": "invalid_json", "message": ""}}"#
            ),
            LineKind::Unrecognised
        );
    }

    #[test]
    fn writer_appends_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        write_lines(&path, &[answer("a", 200)]);
        write_lines(&path, &[failure("b")]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["custom_id"], "a");
        assert_eq!(lines[1]["custom_id"], "b");
    }

    #[test]
    fn a_missing_file_is_an_empty_scan() {
        let dir = tempfile::tempdir().unwrap();
        let scan = prepare_output(&dir.path().join("none.jsonl"), true, MAX).unwrap();
        assert!(scan.answers.is_empty());
        assert_eq!(scan.kept_lines(), 0);
        assert!(!dir.path().join("none.jsonl").exists());
    }

    #[test]
    fn scan_indexes_answers_and_reported_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        write_lines(
            &path,
            &[
                answer("a", 200),
                failure("b"),
                input_error(3),
                answer("c", 400),
            ],
        );
        let scan = prepare_output(&path, false, MAX).unwrap();
        assert_eq!((scan.succeeded, scan.failed, scan.input_errors), (1, 2, 1));
        assert_eq!(answer_of(&scan, "a"), Some(PreviousAnswer::Succeeded));
        assert_eq!(answer_of(&scan, "b"), Some(PreviousAnswer::Failed));
        assert_eq!(answer_of(&scan, "c"), Some(PreviousAnswer::Failed));
        assert_eq!(answer_of(&scan, "d"), None);
        assert!(scan.reported_lines.contains(&3));
        assert_eq!(scan.torn_bytes, 0);
        assert_eq!(read_lines(&path).len(), 4);
    }

    #[test]
    fn a_torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        write_lines(&path, &[answer("a", 200), answer("b", 200)]);
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"id": "batch_req_c", "custom_id": "c", "resp"#)
            .unwrap();
        drop(file);
        let scan = prepare_output(&path, false, MAX).unwrap();
        assert_eq!(scan.torn_bytes, 45);
        assert_eq!(scan.succeeded, 2);
        assert!(answer_of(&scan, "c").is_none());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        // Appending after the repair gives whole lines only.
        write_lines(&path, &[answer("c", 200)]);
        let ids: Vec<Value> = read_lines(&path)
            .into_iter()
            .map(|l| l["custom_id"].clone())
            .collect();
        assert_eq!(ids, vec![json!("a"), json!("b"), json!("c")]);
    }

    #[test]
    fn a_torn_line_that_lost_only_its_newline_is_cut_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut text = serde_json::to_string(&answer("a", 200)).unwrap();
        text.push('\n');
        text.push_str(&serde_json::to_string(&answer("b", 200)).unwrap());
        std::fs::write(&path, &text).unwrap();
        let scan = prepare_output(&path, false, MAX).unwrap();
        assert!(answer_of(&scan, "a").is_some());
        assert!(
            answer_of(&scan, "b").is_none(),
            "b's line was not whole: it runs again"
        );
        assert_eq!(read_lines(&path).len(), 1);
    }

    #[test]
    fn retry_failed_rewrites_without_failed_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        write_lines(
            &path,
            &[
                answer("a", 200),
                failure("b"),
                input_error(3),
                answer("c", 500),
            ],
        );
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"torn").unwrap();
        drop(file);
        let scan = prepare_output(&path, true, MAX).unwrap();
        assert_eq!(scan.dropped_failed, 2);
        assert_eq!(scan.failed, 0);
        assert!(answer_of(&scan, "a").is_some());
        assert!(answer_of(&scan, "b").is_none());
        assert!(answer_of(&scan, "c").is_none());
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["custom_id"], "a");
        assert_eq!(lines[1]["error"]["line"], 3);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.jsonl")]);
    }

    #[test]
    fn retry_failed_keeps_a_success_that_follows_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        write_lines(&path, &[failure("a"), answer("a", 200)]);
        let scan = prepare_output(&path, true, MAX).unwrap();
        assert!(answer_of(&scan, "a").is_some());
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["response"]["status_code"], 200);
    }

    #[test]
    fn unrecognised_and_duplicate_lines_are_counted_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        write_lines(&path, &[answer("a", 200), answer("a", 200)]);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"not json\n").unwrap();
        drop(file);
        let mut scan = prepare_output(&path, false, MAX).unwrap();
        assert_eq!(scan.unrecognised_lines, vec![3]);
        assert_eq!(scan.kept_lines(), 3);
        assert_eq!(answer_of(&scan, "a"), Some(PreviousAnswer::Succeeded));
        let answers = scan.take_answers();
        assert_eq!(answers.len(), 2);
        let (index, duplicate_answers) = answers.to_index().unwrap();
        assert_eq!((index.len(), duplicate_answers), (1, 1));
        assert_eq!(answer_of(&scan, "a"), None);
    }

    #[test]
    fn a_line_too_long_is_kept_unread_and_copied_through_a_rewrite() {
        for retry_failed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.jsonl");
            write_lines(&path, &[answer("a", 200), failure("b")]);
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            let long = format!(
                "{{\"custom_id\": \"c\", \"x\": \"{}\"}}\n",
                "y".repeat(200_000)
            );
            file.write_all(long.as_bytes()).unwrap();
            drop(file);
            write_lines(&path, &[answer("d", 200)]);
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            // A torn last line too long to hold: cut off either way.
            file.write_all("z".repeat(3000).as_bytes()).unwrap();
            drop(file);
            let scan = prepare_output(&path, retry_failed, 1000).unwrap();
            assert_eq!(scan.unrecognised_lines, vec![3]);
            assert_eq!(scan.too_long_lines, 1);
            assert_eq!(scan.torn_bytes, 3000);
            assert_eq!(scan.succeeded, 2);
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(
                lines.len(),
                if retry_failed { 3 } else { 4 },
                "{retry_failed}"
            );
            assert!(
                lines.contains(&long.trim_end()),
                "the long line is kept whole"
            );
            assert!(text.ends_with('\n'));
        }
    }

    #[test]
    fn answers_too_long_to_hold_count_by_their_head() {
        for retry_failed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.jsonl");
            let big = json!({"data": [{"embedding": vec![0.5; 4000]}]});
            let long = |custom_id: &str, status: u16| {
                OutputLine::answer(
                    format!("batch_req_{custom_id}"),
                    custom_id.to_owned(),
                    status,
                    None,
                    raw_json(&big),
                    Vec::new(),
                )
            };
            write_lines(
                &path,
                &[
                    long("a", 200),
                    answer("b", 200),
                    long("c", 429),
                    failure("d"),
                ],
            );
            let scan = prepare_output(&path, retry_failed, 1000).unwrap();
            assert_eq!(scan.succeeded, 2, "{retry_failed}");
            assert_eq!(answer_of(&scan, "a"), Some(PreviousAnswer::Succeeded));
            assert_eq!(scan.too_long_lines, 0);
            assert!(scan.unrecognised_lines.is_empty());
            let ids: Vec<Value> = read_lines(&path)
                .into_iter()
                .map(|line| line["custom_id"].clone())
                .collect();
            if retry_failed {
                assert_eq!((scan.failed, scan.dropped_failed), (0, 2));
                assert_eq!(ids, vec![json!("a"), json!("b")]);
            } else {
                assert_eq!((scan.failed, scan.dropped_failed), (2, 0));
                assert_eq!(answer_of(&scan, "c"), Some(PreviousAnswer::Failed));
                assert_eq!(ids, vec![json!("a"), json!("b"), json!("c"), json!("d")]);
            }
        }
    }
}
