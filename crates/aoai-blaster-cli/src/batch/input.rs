//! Input lines in the OpenAI / Azure Batch format, parsed and validated one at a time.
//!
//! A line is `{"custom_id": "...", "method": "POST", "url": "/chat/completions", "body": {...}}`.
//! The `url` names the operation, as in Azure's Batch API: `/chat/completions`, `/embeddings`
//! or `/responses`, each also with a `/v1` prefix; one file may mix them. A line that breaks a
//! rule becomes an
//! [`InputError`] that names the line number and the fix; the run goes on with the next line.
//! The checks run in this order, and the first that fails names the error:
//!
//! | code | when |
//! |---|---|
//! | `line_too_long` | the line is longer than `--max-line-bytes` (read by [`super::source`]) |
//! | `invalid_json` | the line is not a JSON object |
//! | `missing_custom_id` | `custom_id` is missing, empty or not a string |
//! | `duplicate_custom_id` | an earlier valid line of this input has the same `custom_id` |
//! | `invalid_method` | `method` is not `"POST"` |
//! | `invalid_url` | `url` is none of `/chat/completions`, `/embeddings`, `/responses` (each with or without `/v1`) |
//! | `invalid_body` | `body` is not an object with a `messages` list (chat), or an `input` string or list (embeddings, responses) |
//!
//! Only a valid line claims its `custom_id`: an invalid line does not make a later valid line
//! with the same id a duplicate. Blank lines are skipped.
//!
//! **Pinning.** Azure puts the deployment in the URL, not in the body. When `body.model` names a
//! deployment of the config (its `name`, or else its `model`), the request is pinned to that
//! deployment; any other value is ignored. Either way `model` is removed from the body before
//! sending (a v1 deployment puts its own name there). `"stream": true` asks for a streamed
//! reply (chat and responses), assembled into the same answer.

use std::fmt;

use aoai_blaster::Operation;
use aoai_blaster::core::extra::kind_of;
use serde_json::{Map, Value};

use super::duplicates::{LineVerdicts, Verdict};
use super::ids::{IdFingerprint, IdIndex, IdTag};
use super::output::PreviousAnswer;

/// The URLs a line may name, and the operation each calls.
pub(crate) const ACCEPTED_URLS: [(&str, Operation); 6] = [
    ("/chat/completions", Operation::Chat),
    ("/v1/chat/completions", Operation::Chat),
    ("/embeddings", Operation::Embeddings),
    ("/v1/embeddings", Operation::Embeddings),
    ("/responses", Operation::Responses),
    ("/v1/responses", Operation::Responses),
];

/// Why an input line was rejected: the `error.code` of its output line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum InputErrorCode {
    /// The line is not a JSON object.
    InvalidJson,
    /// `custom_id` is missing, empty or not a string.
    MissingCustomId,
    /// An earlier valid line has the same `custom_id`.
    DuplicateCustomId,
    /// `method` is not `POST`.
    InvalidMethod,
    /// `url` names no operation we run.
    InvalidUrl,
    /// `body` is not the operation's request body.
    InvalidBody,
    /// The line is longer than `--max-line-bytes` (it was skipped unread).
    LineTooLong,
}

impl InputErrorCode {
    /// Every code, in the order the checks run.
    pub(crate) const ALL: [InputErrorCode; 7] = [
        InputErrorCode::LineTooLong,
        InputErrorCode::InvalidJson,
        InputErrorCode::MissingCustomId,
        InputErrorCode::DuplicateCustomId,
        InputErrorCode::InvalidMethod,
        InputErrorCode::InvalidUrl,
        InputErrorCode::InvalidBody,
    ];

    /// The code as it appears in output lines (`invalid_json`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InputErrorCode::InvalidJson => "invalid_json",
            InputErrorCode::MissingCustomId => "missing_custom_id",
            InputErrorCode::DuplicateCustomId => "duplicate_custom_id",
            InputErrorCode::InvalidMethod => "invalid_method",
            InputErrorCode::InvalidUrl => "invalid_url",
            InputErrorCode::InvalidBody => "invalid_body",
            InputErrorCode::LineTooLong => "line_too_long",
        }
    }

    /// The code named by `text`, if it is one of ours.
    pub(crate) fn parse(text: &str) -> Option<InputErrorCode> {
        InputErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
    }
}

impl fmt::Display for InputErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputError {
    /// 1-based line number in the input file.
    pub(crate) line: u64,
    /// The line's `custom_id`, when it had a usable one.
    pub(crate) custom_id: Option<String>,
    /// What is wrong.
    pub(crate) code: InputErrorCode,
    /// What is wrong and how to fix it, starting with `line N:`.
    pub(crate) message: String,
}

/// A valid input line, ready to become a job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchRequest {
    /// 1-based line number in the input file.
    pub(crate) line: u64,
    /// The caller's id, echoed in the output line.
    pub(crate) custom_id: String,
    /// The operation the line's `url` names.
    pub(crate) operation: Operation,
    /// The request body without `model` and `stream` (`messages` is there and is a list for
    /// chat; `input` a string or a list for the others).
    pub(crate) body: Map<String, Value>,
    /// The deployment `body.model` pinned the request to (a `name` of the config).
    pub(crate) pin: Option<String>,
    /// `body.stream` was `true`.
    pub(crate) stream: bool,
    /// How the output already answers this `custom_id`, for a resumed run (the line is then
    /// skipped).
    pub(crate) previous: Option<PreviousAnswer>,
}

/// What one input line turned into.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParsedLine {
    /// Empty or whitespace only: skipped, not counted.
    Blank,
    /// A valid request.
    Request(BatchRequest),
    /// A rejected line.
    Invalid(InputError),
}

/// The deployment names and models of the config, for pinning by `body.model`.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeploymentNames {
    deployments: Vec<(String, String)>,
}

impl DeploymentNames {
    /// From `(name, model)` pairs, in config order.
    pub(crate) fn new<N: Into<String>, M: Into<String>>(
        pairs: impl IntoIterator<Item = (N, M)>,
    ) -> DeploymentNames {
        DeploymentNames {
            deployments: pairs
                .into_iter()
                .map(|(name, model)| (name.into(), model.into()))
                .collect(),
        }
    }

    /// The deployment `name` that `model` designates: a deployment with that `name`, else the
    /// first deployment whose `model` it is.
    pub(crate) fn resolve(&self, model: &str) -> Option<&str> {
        self.deployments
            .iter()
            .find(|(name, _)| name == model)
            .or_else(|| self.deployments.iter().find(|(_, m)| m == model))
            .map(|(name, _)| name.as_str())
    }
}

/// Parses input lines in order and tells duplicate `custom_id`s (see [`DuplicateCheck`]).
#[derive(Debug, Clone)]
pub(crate) struct LineParser {
    deployments: DeploymentNames,
    index: IdIndex,
    duplicates: DuplicateCheck,
    claimed: usize,
}

/// How a [`LineParser`] tells that a line repeats an id an earlier valid line claimed.
#[derive(Debug, Clone)]
pub(crate) enum DuplicateCheck {
    /// Remember each claimed id in the parser's index (memory grows with the input).
    Remember,
    /// Every line's verdict (duplicate, answered before) was found before the run
    /// ([`super::duplicates`]); the index is not used.
    Found(LineVerdicts),
    /// Report no line as a duplicate and remember nothing: for the pass that finds them.
    Ignore,
}

impl LineParser {
    /// A parser that pins by `deployments`.
    pub(crate) fn new(deployments: DeploymentNames) -> LineParser {
        LineParser::resuming(deployments, IdIndex::default())
    }

    /// A parser for a resumed run: `answers` holds the ids the output already answers (tagged
    /// [`IdTag::Succeeded`] or [`IdTag::Failed`], as
    /// [`AnswerLog::to_index`](super::duplicates::AnswerLog::to_index) gives them). Each
    /// valid line with such an id says so in [`BatchRequest::previous`], and the same table then
    /// holds the run's own ids, so a resumed run needs no second index.
    pub(crate) fn resuming(deployments: DeploymentNames, answers: IdIndex) -> LineParser {
        LineParser {
            deployments,
            index: answers,
            duplicates: DuplicateCheck::Remember,
            claimed: 0,
        }
    }

    /// The parser for the pass that finds duplicates: validates only ([`DuplicateCheck::Ignore`]).
    pub(crate) fn validator(deployments: DeploymentNames) -> LineParser {
        LineParser {
            duplicates: DuplicateCheck::Ignore,
            ..LineParser::new(deployments)
        }
    }

    /// Tells duplicates by `check` from now on.
    pub(crate) fn set_duplicate_check(&mut self, check: DuplicateCheck) {
        self.duplicates = check;
    }

    /// With verdicts found before the run: the number of lines they cover.
    pub(crate) fn checked_lines(&self) -> Option<u64> {
        match &self.duplicates {
            DuplicateCheck::Found(verdicts) => Some(verdicts.lines()),
            DuplicateCheck::Remember | DuplicateCheck::Ignore => None,
        }
    }

    /// Number of distinct `custom_id`s claimed by valid lines so far.
    #[cfg(test)]
    pub(crate) fn claimed(&self) -> usize {
        self.claimed
    }

    /// Parses and validates line number `line` (1-based).
    pub(crate) fn parse(&mut self, line: u64, text: &str) -> ParsedLine {
        if text.trim().is_empty() {
            return ParsedLine::Blank;
        }
        match self.validate(line, text) {
            Ok(request) => ParsedLine::Request(request),
            Err((custom_id, (code, message))) => ParsedLine::Invalid(InputError {
                line,
                custom_id,
                code,
                message: format!("line {line}: {message}"),
            }),
        }
    }

    /// Runs the checks in the documented order; a rejection carries the line's `custom_id` once
    /// it is known.
    fn validate(
        &mut self,
        line: u64,
        text: &str,
    ) -> Result<BatchRequest, (Option<String>, Rejection)> {
        let mut object = json_object(text).map_err(|rejection| (None, rejection))?;
        let custom_id = custom_id(&object).map_err(|rejection| (None, rejection))?;
        let with_id = |rejection| (Some(custom_id.clone()), rejection);
        let fingerprint = IdFingerprint::of(&custom_id);
        if self.is_duplicate(line, fingerprint) {
            return Err(with_id((
                InputErrorCode::DuplicateCustomId,
                format!(
                    "custom_id {custom_id:?} was already used by an earlier line; ids must be unique"
                ),
            )));
        }
        check_method(&object).map_err(with_id)?;
        let operation = operation(&object).map_err(with_id)?;
        let mut body = body(&mut object, operation).map_err(with_id)?;
        let pin = match body.remove("model") {
            Some(Value::String(model)) => self.deployments.resolve(&model).map(str::to_owned),
            _ => None,
        };
        let stream = matches!(body.remove("stream"), Some(Value::Bool(true)));
        if let DuplicateCheck::Remember = self.duplicates {
            self.index.insert(fingerprint, IdTag::Claimed);
        }
        self.claimed += 1;
        let previous = self.previous_answer(line, fingerprint);
        Ok(BatchRequest {
            line,
            custom_id,
            operation,
            body,
            pin,
            stream,
            previous,
        })
    }

    /// Whether an earlier valid line claimed the id of line `line`.
    fn is_duplicate(&self, line: u64, fingerprint: IdFingerprint) -> bool {
        match &self.duplicates {
            DuplicateCheck::Remember => self.index.contains(fingerprint, IdTag::Claimed),
            DuplicateCheck::Found(verdicts) => verdicts.get(line) == Verdict::Duplicate,
            DuplicateCheck::Ignore => false,
        }
    }

    /// How the output already answers the id of valid line `line`.
    fn previous_answer(&mut self, line: u64, fingerprint: IdFingerprint) -> Option<PreviousAnswer> {
        match &self.duplicates {
            DuplicateCheck::Found(verdicts) => match verdicts.get(line) {
                Verdict::Answered(answer) => Some(answer),
                Verdict::New | Verdict::Duplicate => None,
            },
            // Each id is asked about once, so its earlier answer can leave the index now.
            DuplicateCheck::Remember | DuplicateCheck::Ignore => {
                if self.index.remove(fingerprint, IdTag::Succeeded) {
                    Some(PreviousAnswer::Succeeded)
                } else if self.index.remove(fingerprint, IdTag::Failed) {
                    Some(PreviousAnswer::Failed)
                } else {
                    None
                }
            }
        }
    }
}

/// Why a check rejected a line: its code and the message (without the `line N:` prefix).
type Rejection = (InputErrorCode, String);

/// The line as a JSON object.
fn json_object(text: &str) -> Result<Map<String, Value>, Rejection> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err((
            InputErrorCode::InvalidJson,
            format!(
                "expected a JSON object {{\"custom_id\", \"method\", \"url\", \"body\"}}, got {}",
                kind_of(&other)
            ),
        )),
        Err(error) => Err((
            InputErrorCode::InvalidJson,
            format!("not valid JSON ({error}); each line must be one JSON object"),
        )),
    }
}

/// The line's `custom_id`: a non-empty string.
fn custom_id(object: &Map<String, Value>) -> Result<String, Rejection> {
    let message = match object.get("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => return Ok(id.clone()),
        Some(Value::String(_)) => {
            "\"custom_id\" is empty; give every line a unique non-empty string id".into()
        }
        Some(other) => format!(
            "\"custom_id\" must be a string, got {}; quote it",
            kind_of(other)
        ),
        None => "no \"custom_id\"; give every line a unique string id".into(),
    };
    Err((InputErrorCode::MissingCustomId, message))
}

/// `method` is `POST`.
fn check_method(object: &Map<String, Value>) -> Result<(), Rejection> {
    let message = match object.get("method") {
        Some(Value::String(method)) if method.eq_ignore_ascii_case("POST") => return Ok(()),
        Some(other) => format!("\"method\" must be \"POST\", got {}", short(other)),
        None => "no \"method\"; add \"method\": \"POST\"".into(),
    };
    Err((InputErrorCode::InvalidMethod, message))
}

/// The operation `url` names (one of [`ACCEPTED_URLS`]).
fn operation(object: &Map<String, Value>) -> Result<Operation, Rejection> {
    let message = match object.get("url") {
        Some(url) => match ACCEPTED_URLS
            .iter()
            .find(|(known, _)| Some(*known) == url.as_str())
        {
            Some((_, operation)) => return Ok(*operation),
            None => format!(
                "\"url\" must be \"/chat/completions\", \"/embeddings\" or \"/responses\" (each \
                 may start with \"/v1\"), got {}",
                short(url)
            ),
        },
        None => "no \"url\"; add \"url\": \"/chat/completions\" (or \"/embeddings\", \
                 \"/responses\")"
            .into(),
    };
    Err((InputErrorCode::InvalidUrl, message))
}

/// What the body of `operation` must hold, for messages.
fn body_shape(operation: Operation) -> &'static str {
    match operation {
        Operation::Chat => "a JSON object with a \"messages\" list",
        Operation::Embeddings | Operation::Responses => {
            "a JSON object with an \"input\" string or list"
        }
    }
}

/// The line's `body`, taken out of it: for chat an object with a `messages` list; for
/// embeddings and responses an object with an `input` string or list.
fn body(
    object: &mut Map<String, Value>,
    operation: Operation,
) -> Result<Map<String, Value>, Rejection> {
    let invalid = |message: String| Err((InputErrorCode::InvalidBody, message));
    let body = match object.remove("body") {
        Some(Value::Object(body)) => body,
        Some(other) => {
            return invalid(format!(
                "\"body\" must be {}, got {}",
                body_shape(operation),
                kind_of(&other)
            ));
        }
        None => {
            return invalid(format!(
                "no \"body\"; add the {operation} request body, {}",
                body_shape(operation)
            ));
        }
    };
    let (key, valid) = match operation {
        Operation::Chat => (
            "messages",
            body.get("messages").is_some_and(Value::is_array),
        ),
        Operation::Embeddings | Operation::Responses => (
            "input",
            matches!(body.get("input"), Some(Value::String(_) | Value::Array(_))),
        ),
    };
    if valid {
        return Ok(body);
    }
    let expected = match operation {
        Operation::Chat => "a list of message objects",
        _ => "a string or a list",
    };
    invalid(match body.get(key) {
        Some(other) => format!("\"body.{key}\" must be {expected}, got {}", kind_of(other)),
        None => format!("\"body\" has no \"{key}\" ({operation} needs {expected})"),
    })
}

/// A value for an error message: strings and scalars in full (up to 60 characters), containers by
/// kind.
fn short(value: &Value) -> String {
    match value {
        Value::String(text) if text.chars().count() <= 60 => format!("{text:?}"),
        Value::String(text) => {
            let head: String = text.chars().take(57).collect();
            format!("{head:?}...")
        }
        Value::Array(_) | Value::Object(_) => kind_of(value).to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
