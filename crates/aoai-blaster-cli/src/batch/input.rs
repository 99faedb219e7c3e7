//! Input lines in the OpenAI / Azure Batch format, parsed and validated one at a time.
//!
//! A line is `{"custom_id": "...", "method": "POST", "url": "/chat/completions", "body": {...}}`
//! (`"/v1/chat/completions"` is accepted too). A line that breaks a rule becomes an
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
//! | `invalid_url` | `url` is not `/chat/completions` or `/v1/chat/completions` |
//! | `invalid_body` | `body` is not an object with a `messages` list |
//!
//! Only a valid line claims its `custom_id`: an invalid line does not make a later valid line
//! with the same id a duplicate. Blank lines are skipped.
//!
//! **Pinning.** Azure puts the deployment in the URL, not in the body. When `body.model` names a
//! deployment of the config (its `name`, or else its `model`), the request is pinned to that
//! deployment; any other value is ignored. Either way `model` is removed from the body before
//! sending. `"stream": true` asks for a streamed reply, assembled into the same answer.

use std::fmt;

use aoai_blaster::core::extra::kind_of;
use serde_json::{Map, Value};

use super::duplicates::{LineVerdicts, Verdict};
use super::ids::{IdFingerprint, IdIndex, IdTag};
use super::output::PreviousAnswer;

/// The URLs a line may name.
pub(crate) const ACCEPTED_URLS: [&str; 2] = ["/chat/completions", "/v1/chat/completions"];

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
    /// `url` is not a chat-completions URL.
    InvalidUrl,
    /// `body` is not an object with a `messages` list.
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
    /// The request body without `model` and `stream` (`messages` is there and is a list).
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
        check_url(&object).map_err(with_id)?;
        let mut body = body(&mut object).map_err(with_id)?;
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

/// `url` is one of [`ACCEPTED_URLS`].
fn check_url(object: &Map<String, Value>) -> Result<(), Rejection> {
    let message = match object.get("url") {
        Some(Value::String(url)) if ACCEPTED_URLS.contains(&url.as_str()) => return Ok(()),
        Some(other) => format!(
            "\"url\" must be \"/chat/completions\" or \"/v1/chat/completions\", got {}",
            short(other)
        ),
        None => "no \"url\"; add \"url\": \"/chat/completions\"".into(),
    };
    Err((InputErrorCode::InvalidUrl, message))
}

/// The line's `body`, taken out of it: an object with a `messages` list.
fn body(object: &mut Map<String, Value>) -> Result<Map<String, Value>, Rejection> {
    let body = match object.remove("body") {
        Some(Value::Object(body)) => body,
        Some(other) => {
            return Err((
                InputErrorCode::InvalidBody,
                format!(
                    "\"body\" must be a JSON object with a \"messages\" list, got {}",
                    kind_of(&other)
                ),
            ));
        }
        None => {
            return Err((
                InputErrorCode::InvalidBody,
                "no \"body\"; add the chat-completion request body {\"messages\": [...]}".into(),
            ));
        }
    };
    let message = match body.get("messages") {
        Some(Value::Array(_)) => return Ok(body),
        Some(other) => format!(
            "\"body.messages\" must be a list of message objects, got {}",
            kind_of(other)
        ),
        None => "\"body\" has no \"messages\" list".into(),
    };
    Err((InputErrorCode::InvalidBody, message))
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
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_module_example_holds() {
        let names = DeploymentNames::new([("east", "gpt-4o"), ("west", "gpt-4o-mini")]);
        let mut parser = LineParser::new(names);
        let line = r#"{"custom_id": "r1", "method": "POST", "url": "/chat/completions",
                      "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}}"#;
        let ParsedLine::Request(request) = parser.parse(1, line) else {
            panic!()
        };
        assert_eq!(request.pin.as_deref(), Some("west"));
        assert!(request.body.get("model").is_none());

        let ParsedLine::Invalid(error) = parser.parse(2, line) else {
            panic!()
        };
        assert_eq!(error.code.as_str(), "duplicate_custom_id");
    }

    fn parser() -> LineParser {
        LineParser::new(DeploymentNames::new([
            ("east", "gpt-4o"),
            ("west", "gpt-4o-mini"),
            ("gpt-4o-mini", "other"),
        ]))
    }

    fn line(custom_id: Value, method: Value, url: Value, body: Value) -> String {
        json!({"custom_id": custom_id, "method": method, "url": url, "body": body}).to_string()
    }

    fn good(id: &str) -> String {
        line(
            json!(id),
            json!("POST"),
            json!("/chat/completions"),
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}),
        )
    }

    fn error_of(parsed: ParsedLine) -> InputError {
        match parsed {
            ParsedLine::Invalid(error) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn request_of(parsed: ParsedLine) -> BatchRequest {
        match parsed {
            ParsedLine::Request(request) => request,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn valid_line_becomes_a_request() {
        let request = request_of(parser().parse(7, &good("a")));
        assert_eq!(request.line, 7);
        assert_eq!(request.custom_id, "a");
        assert_eq!(request.body["max_tokens"], 5);
        assert_eq!(request.body["messages"][0]["content"], "Hi");
        assert_eq!(request.pin, None);
        assert!(!request.stream);
    }

    #[test]
    fn v1_url_and_lowercase_method_are_accepted() {
        let text = line(
            json!("a"),
            json!("post"),
            json!("/v1/chat/completions"),
            json!({"messages": []}),
        );
        assert_eq!(request_of(parser().parse(1, &text)).custom_id, "a");
    }

    #[test]
    fn blank_lines_are_skipped() {
        assert_eq!(parser().parse(3, "   \t"), ParsedLine::Blank);
        assert_eq!(parser().parse(3, ""), ParsedLine::Blank);
    }

    #[test]
    fn invalid_json_names_the_line() {
        let error = error_of(parser().parse(12, "{\"custom_id\": \"a\""));
        assert_eq!(error.code, InputErrorCode::InvalidJson);
        assert_eq!(error.line, 12);
        assert!(
            error.message.starts_with("line 12: not valid JSON"),
            "{}",
            error.message
        );
        assert_eq!(error.custom_id, None);
    }

    #[test]
    fn a_json_value_that_is_not_an_object_is_invalid_json() {
        let error = error_of(parser().parse(2, "[1, 2]"));
        assert_eq!(error.code, InputErrorCode::InvalidJson);
        assert!(error.message.contains("got a list"), "{}", error.message);
    }

    #[test]
    fn custom_id_must_be_a_non_empty_string() {
        let body = json!({"messages": []});
        let url = json!("/chat/completions");
        for (id, expect) in [
            (json!(17), "must be a string, got a number"),
            (json!(""), "is empty"),
            (Value::Null, "must be a string, got null"),
        ] {
            let text = line(id, json!("POST"), url.clone(), body.clone());
            let error = error_of(parser().parse(4, &text));
            assert_eq!(error.code, InputErrorCode::MissingCustomId);
            assert!(error.message.contains(expect), "{}", error.message);
        }
        let text = json!({"method": "POST", "url": url, "body": body}).to_string();
        let error = error_of(parser().parse(5, &text));
        assert_eq!(error.code, InputErrorCode::MissingCustomId);
        assert!(error.message.starts_with("line 5: no \"custom_id\""));
    }

    #[test]
    fn second_valid_line_with_an_id_is_a_duplicate() {
        let mut parser = parser();
        request_of(parser.parse(1, &good("a")));
        let error = error_of(parser.parse(2, &good("a")));
        assert_eq!(error.code, InputErrorCode::DuplicateCustomId);
        assert_eq!(error.custom_id.as_deref(), Some("a"));
        assert!(error.message.contains("\"a\" was already used"));
        request_of(parser.parse(3, &good("b")));
        assert_eq!(parser.claimed(), 2);
    }

    #[test]
    fn an_invalid_line_does_not_claim_its_id() {
        let mut parser = parser();
        let bad = line(
            json!("a"),
            json!("GET"),
            json!("/chat/completions"),
            json!({"messages": []}),
        );
        assert_eq!(
            error_of(parser.parse(1, &bad)).code,
            InputErrorCode::InvalidMethod
        );
        assert_eq!(request_of(parser.parse(2, &good("a"))).line, 2);
    }

    #[test]
    fn method_url_and_body_are_checked_in_order() {
        let messages = json!({"messages": []});
        let url = json!("/chat/completions");
        let cases = [
            (
                line(json!("a"), json!("GET"), json!("/embeddings"), json!(1)),
                InputErrorCode::InvalidMethod,
                "got \"GET\"",
            ),
            (
                json!({"custom_id": "a", "url": url, "body": messages}).to_string(),
                InputErrorCode::InvalidMethod,
                "no \"method\"",
            ),
            (
                line(json!("a"), json!("POST"), json!("/embeddings"), json!(1)),
                InputErrorCode::InvalidUrl,
                "got \"/embeddings\"",
            ),
            (
                json!({"custom_id": "a", "method": "POST", "body": messages}).to_string(),
                InputErrorCode::InvalidUrl,
                "no \"url\"",
            ),
            (
                line(json!("a"), json!("POST"), url.clone(), json!("hi")),
                InputErrorCode::InvalidBody,
                "got a string",
            ),
            (
                line(
                    json!("a"),
                    json!("POST"),
                    url.clone(),
                    json!({"prompt": "x"}),
                ),
                InputErrorCode::InvalidBody,
                "no \"messages\"",
            ),
            (
                line(
                    json!("a"),
                    json!("POST"),
                    url.clone(),
                    json!({"messages": "x"}),
                ),
                InputErrorCode::InvalidBody,
                "must be a list",
            ),
            (
                json!({"custom_id": "a", "method": "POST", "url": url}).to_string(),
                InputErrorCode::InvalidBody,
                "no \"body\"",
            ),
        ];
        for (text, code, expect) in cases {
            let error = error_of(parser().parse(9, &text));
            assert_eq!(error.code, code, "{text}");
            assert!(error.message.contains(expect), "{}", error.message);
            assert_eq!(error.custom_id.as_deref(), Some("a"));
        }
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let url = "/x".repeat(100);
        let text = line(
            json!("a"),
            json!("POST"),
            json!(url),
            json!({"messages": []}),
        );
        let error = error_of(parser().parse(1, &text));
        assert!(error.message.len() < 200, "{}", error.message);
        assert!(error.message.ends_with("\"..."), "{}", error.message);
    }

    #[test]
    fn model_pins_by_name_first_then_by_model() {
        let mut parser = parser();
        let with_model = |id: &str, model: &str| {
            line(
                json!(id),
                json!("POST"),
                json!("/chat/completions"),
                json!({"model": model, "messages": []}),
            )
        };
        // "gpt-4o-mini" is the `name` of the third deployment and the `model` of the second:
        // the name wins.
        let by_name = request_of(parser.parse(1, &with_model("a", "gpt-4o-mini")));
        assert_eq!(by_name.pin.as_deref(), Some("gpt-4o-mini"));
        let by_model = request_of(parser.parse(2, &with_model("b", "gpt-4o")));
        assert_eq!(by_model.pin.as_deref(), Some("east"));
        let unknown = request_of(parser.parse(3, &with_model("c", "gpt-5")));
        assert_eq!(unknown.pin, None);
        for request in [by_name, by_model, unknown] {
            assert!(request.body.get("model").is_none());
        }
    }

    #[test]
    fn stream_true_is_taken_out_of_the_body() {
        let text = line(
            json!("a"),
            json!("POST"),
            json!("/chat/completions"),
            json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}}),
        );
        let request = request_of(parser().parse(1, &text));
        assert!(request.stream);
        assert!(request.body.get("stream").is_none());
        assert_eq!(request.body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn a_resuming_parser_says_how_each_id_was_answered_once() {
        let mut answers = IdIndex::default();
        answers.insert(IdFingerprint::of("ok"), IdTag::Succeeded);
        answers.insert(IdFingerprint::of("bad"), IdTag::Failed);
        let mut parser = LineParser::resuming(DeploymentNames::default(), answers);
        let ok = request_of(parser.parse(1, &good("ok")));
        assert_eq!(ok.previous, Some(PreviousAnswer::Succeeded));
        let bad = request_of(parser.parse(2, &good("bad")));
        assert_eq!(bad.previous, Some(PreviousAnswer::Failed));
        let new = request_of(parser.parse(3, &good("new")));
        assert_eq!(new.previous, None);
        // A second line with an answered id is a duplicate, not a second skip.
        let again = error_of(parser.parse(4, &good("ok")));
        assert_eq!(again.code, InputErrorCode::DuplicateCustomId);
        assert_eq!(parser.claimed(), 3);
        // The answers left the table as the lines claimed their ids: one entry per id.
        assert_eq!(parser.index.len(), 3);
    }

    #[test]
    fn found_verdicts_are_used_by_line_and_nothing_is_remembered() {
        use crate::batch::duplicates::{IdRecord, IdSorter};
        let lines = [good("a"), good("b"), good("a"), good("c"), good("b")];
        // The finding pass: a validator sees every line as new; "c" was answered before.
        let mut validator = LineParser::validator(DeploymentNames::default());
        let dir = tempfile::tempdir().unwrap();
        let mut sorter = IdSorter::new(dir.path(), 2);
        sorter
            .push(IdRecord::answer(
                IdFingerprint::of("c"),
                PreviousAnswer::Succeeded,
            ))
            .unwrap();
        for (number, text) in (1u64..).zip(&lines) {
            let request = request_of(validator.parse(number, text));
            let id = IdFingerprint::of(&request.custom_id);
            sorter.push(IdRecord::line(id, number, true)).unwrap();
        }
        assert!(validator.index.is_empty());
        let verdicts = sorter.finish().unwrap();
        // The run's pass.
        let mut parser = LineParser::new(DeploymentNames::default());
        parser.set_duplicate_check(DuplicateCheck::Found(verdicts));
        let seen: Vec<String> = (1u64..)
            .zip(&lines)
            .map(|(number, text)| match parser.parse(number, text) {
                ParsedLine::Invalid(error) => error.code.to_string(),
                ParsedLine::Request(request) => format!("{:?}", request.previous),
                ParsedLine::Blank => "blank".into(),
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                "None",
                "None",
                "duplicate_custom_id",
                "Some(Succeeded)",
                "duplicate_custom_id"
            ]
        );
        assert_eq!(parser.claimed(), 3);
        assert!(parser.index.is_empty());
    }

    #[test]
    fn codes_round_trip() {
        for code in InputErrorCode::ALL {
            assert_eq!(InputErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!(InputErrorCode::parse("server_error"), None);
    }
}

/// Hostile input lines: any text, and JSON objects whose fields have every wrong type.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parser() -> LineParser {
        LineParser::new(DeploymentNames::new([
            ("east", "gpt-4o"),
            ("west", "gpt-4o-mini"),
        ]))
    }

    /// A field value: the right one, or one of every wrong kind.
    fn field(good: &'static [&'static str]) -> impl Strategy<Value = Option<Value>> {
        prop::option::weighted(
            0.9,
            prop_oneof![
                3 => prop::sample::select(good).prop_map(Value::from),
                1 => Just(Value::Null),
                1 => any::<bool>().prop_map(Value::from),
                1 => any::<i64>().prop_map(Value::from),
                1 => any::<f64>().prop_map(Value::from),
                1 => ".{0,70}".prop_map(Value::from),
                1 => Just(json!([])),
                1 => Just(json!({})),
            ],
        )
    }

    fn body() -> impl Strategy<Value = Option<Value>> {
        let messages = prop_oneof![
            3 => Just(json!([{"role": "user", "content": "Hi"}])),
            1 => Just(json!("Hi")),
            1 => Just(Value::Null),
        ];
        let model = prop_oneof![
            Just(json!("east")),
            Just(json!("gpt-4o-mini")),
            Just(json!("gpt-5")),
            Just(json!(7)),
        ];
        prop::option::weighted(
            0.9,
            prop_oneof![
                4 => (prop::option::of(messages), prop::option::of(model), prop::option::of(any::<bool>()))
                    .prop_map(|(messages, model, stream)| {
                        let mut body = Map::new();
                        for (key, value) in [("messages", messages), ("model", model), ("stream", stream.map(Value::from))] {
                            if let Some(value) = value {
                                body.insert(key.to_owned(), value);
                            }
                        }
                        Value::Object(body)
                    }),
                1 => Just(json!([])),
                1 => Just(json!("body")),
            ],
        )
    }

    /// A line object: each field present or not, right or wrong.
    fn line_object() -> impl Strategy<Value = Map<String, Value>> {
        (
            field(&["a", "b", "c", ""]),
            field(&["POST", "post", "GET"]),
            field(&["/chat/completions", "/v1/chat/completions", "/embeddings"]),
            body(),
        )
            .prop_map(|(id, method, url, body)| {
                let mut object = Map::new();
                for (key, value) in [
                    ("custom_id", id),
                    ("method", method),
                    ("url", url),
                    ("body", body),
                ] {
                    if let Some(value) = value {
                        object.insert(key.to_owned(), value);
                    }
                }
                object
            })
    }

    /// The code the documented checks give `object`, in their order (`None`: valid), with
    /// `claimed` the ids earlier valid lines claimed.
    fn expected_code(object: &Map<String, Value>, claimed: &[String]) -> Option<InputErrorCode> {
        let id = match object.get("custom_id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => return Some(InputErrorCode::MissingCustomId),
        };
        if claimed.contains(id) {
            return Some(InputErrorCode::DuplicateCustomId);
        }
        match object.get("method") {
            Some(Value::String(m)) if m.eq_ignore_ascii_case("POST") => {}
            _ => return Some(InputErrorCode::InvalidMethod),
        }
        match object.get("url").and_then(Value::as_str) {
            Some(url) if ACCEPTED_URLS.contains(&url) => {}
            _ => return Some(InputErrorCode::InvalidUrl),
        }
        match object.get("body").and_then(|b| b.get("messages")) {
            Some(Value::Array(_)) if object["body"].is_object() => None,
            _ => Some(InputErrorCode::InvalidBody),
        }
    }

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        /// Any text: blank, a request or an error that names the line; never a panic.
        #[test]
        fn any_text_is_a_request_or_an_error_naming_its_line(
            line in 1u64..u64::MAX,
            text in prop_oneof![".{0,200}", "\\{\"custom_id\": ?.{0,40}\\}?", "[{}\\[\\]\":, 0-9a-z]{0,60}"],
        ) {
            match parser().parse(line, &text) {
                ParsedLine::Blank => prop_assert!(text.trim().is_empty()),
                ParsedLine::Request(request) => {
                    prop_assert_eq!(request.line, line);
                    prop_assert!(!request.custom_id.is_empty());
                    prop_assert!(request.body.get("messages").is_some_and(Value::is_array));
                }
                ParsedLine::Invalid(error) => {
                    prop_assert_eq!(error.line, line);
                    let prefix = format!("line {line}: ");
                    prop_assert!(error.message.starts_with(&prefix), "{}", error.message);
                }
            }
        }

        /// Lines of hostile objects, ids reused: each gets the code the documented checks give
        /// it, in their order; a request loses `model` and `stream`; only valid lines claim ids.
        #[test]
        fn hostile_objects_get_the_documented_code(
            objects in prop::collection::vec(line_object(), 1..12),
        ) {
            let mut parser = parser();
            let mut claimed = Vec::new();
            for (number, object) in (1u64..).zip(&objects) {
                let text = Value::Object(object.clone()).to_string();
                let expected = expected_code(object, &claimed);
                match parser.parse(number, &text) {
                    ParsedLine::Request(request) => {
                        prop_assert_eq!(expected, None, "{}", text);
                        prop_assert!(request.body.get("model").is_none());
                        prop_assert!(request.body.get("stream").is_none());
                        prop_assert_eq!(
                            request.stream,
                            object["body"].get("stream") == Some(&Value::Bool(true))
                        );
                        claimed.push(request.custom_id);
                    }
                    ParsedLine::Invalid(error) => {
                        prop_assert_eq!(Some(error.code), expected, "{}", error.message);
                        prop_assert_eq!(error.line, number);
                        let prefix = format!("line {number}: ");
                        prop_assert!(error.message.starts_with(&prefix), "{}", error.message);
                        prop_assert!(error.message.len() < 400, "{}", error.message);
                    }
                    ParsedLine::Blank => prop_assert!(false, "{text} is not blank"),
                }
            }
            prop_assert_eq!(parser.claimed(), claimed.len());
        }
    }
}
