//! Parsing a request body into what the simulator needs (no actix): chat completions here,
//! embeddings and responses in their own modules, [`ApiRequest`] for any of them.

use serde_json::{Map, Value};

use crate::embeddings::{EmbeddingsRequest, parse_embeddings_request};
use crate::responses::{ResponsesRequest, parse_responses_request};

/// The API a request calls (its URL's last part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `chat/completions`.
    Chat,
    /// `embeddings`.
    Embeddings,
    /// `responses`.
    Responses,
}

/// A parsed request of any API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ApiRequest {
    Chat(ChatRequest),
    Embeddings(EmbeddingsRequest),
    Responses(ResponsesRequest),
}

impl ApiRequest {
    /// `model` (the deployment on the v1 route).
    pub(crate) fn model(&self) -> Option<&str> {
        match self {
            ApiRequest::Chat(request) => request.model.as_deref(),
            ApiRequest::Embeddings(request) => request.model.as_deref(),
            ApiRequest::Responses(request) => request.model.as_deref(),
        }
    }

    /// Whether the reply is streamed.
    pub(crate) fn stream(&self) -> bool {
        match self {
            ApiRequest::Chat(request) => request.stream,
            ApiRequest::Embeddings(_) => false,
            ApiRequest::Responses(request) => request.stream,
        }
    }
}

/// Parse and check a request body of `api`.
pub(crate) fn parse_request(api: Api, body: &[u8]) -> Result<ApiRequest, InvalidRequest> {
    Ok(match api {
        Api::Chat => ApiRequest::Chat(parse_chat_request(body)?),
        Api::Embeddings => ApiRequest::Embeddings(parse_embeddings_request(body)?),
        Api::Responses => ApiRequest::Responses(parse_responses_request(body)?),
    })
}

/// The parts of a chat-completions request the simulator acts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatRequest {
    /// The `messages` array, as sent.
    pub(crate) messages: Value,
    /// `model` (the deployment on the v1 route).
    pub(crate) model: Option<String>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub(crate) max_tokens: Option<u64>,
    /// `n` (default 1).
    pub(crate) n: u64,
    /// `best_of`, if given.
    pub(crate) best_of: Option<u64>,
    /// `stream`.
    pub(crate) stream: bool,
    /// `stream_options.include_usage`.
    pub(crate) include_usage: bool,
}

impl ChatRequest {
    pub(crate) fn message_list(&self) -> &[Value] {
        self.messages.as_array().map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Why a body is refused with 400, in the words Azure uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidRequest {
    pub(crate) message: String,
    pub(crate) param: Option<&'static str>,
}

impl InvalidRequest {
    pub(crate) fn new(message: impl Into<String>, param: Option<&'static str>) -> Self {
        InvalidRequest {
            message: message.into(),
            param,
        }
    }
}

/// The most choices Azure returns for one request.
const MAX_N: u64 = 128;

/// A body as a JSON object, or the 400 Azure answers to anything else.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, InvalidRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        InvalidRequest::new(
            format!(
                "We could not parse the JSON body of your request ({err}). The API expects a JSON payload."
            ),
            None,
        )
    })?;
    match value {
        Value::Object(body) => Ok(body),
        _ => Err(InvalidRequest::new(
            "The request body must be a JSON object.",
            None,
        )),
    }
}

/// Parse and check a chat-completions request body.
pub(crate) fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, InvalidRequest> {
    let mut body = json_object(body)?;
    let messages = take_messages(&mut body)?;
    let model = optional_string(&body, "model")?;
    let max_completion_tokens = positive_integer(&body, "max_completion_tokens", 1)?;
    let max_tokens = positive_integer(&body, "max_tokens", 1)?;
    let n = positive_integer(&body, "n", 1)?.unwrap_or(1);
    if n > MAX_N {
        return Err(InvalidRequest::new(
            format!("{n} is greater than the maximum of {MAX_N} - 'n'"),
            Some("n"),
        ));
    }
    let best_of = positive_integer(&body, "best_of", 1)?;
    let (stream, include_usage) = stream_flags(&body)?;
    Ok(ChatRequest {
        messages,
        model,
        max_tokens: max_completion_tokens.or(max_tokens),
        n,
        best_of,
        stream,
        include_usage,
    })
}

/// Take `messages` out of the body: a non-empty array of objects that each have a `role`.
fn take_messages(body: &mut Map<String, Value>) -> Result<Value, InvalidRequest> {
    let messages = match body.remove("messages") {
        None | Some(Value::Null) => {
            return Err(InvalidRequest::new(
                "'messages' is a required property",
                Some("messages"),
            ));
        }
        Some(messages @ Value::Array(_)) => messages,
        Some(other) => {
            return Err(InvalidRequest::new(
                format!("{other} is not of type 'array' - 'messages'"),
                Some("messages"),
            ));
        }
    };
    let list = messages.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return Err(InvalidRequest::new(
            "[] is too short - 'messages'",
            Some("messages"),
        ));
    }
    for (index, message) in list.iter().enumerate() {
        if !message.get("role").is_some_and(Value::is_string) {
            return Err(InvalidRequest::new(
                format!("'role' is a required property - 'messages.{index}'"),
                Some("messages"),
            ));
        }
    }
    Ok(messages)
}

pub(crate) fn optional_string(
    body: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, InvalidRequest> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(InvalidRequest::new(
            format!("{other} is not of type 'string' - '{key}'"),
            Some(key),
        )),
    }
}

/// `stream`: a boolean, false when absent.
pub(crate) fn stream_flag(body: &Map<String, Value>) -> Result<bool, InvalidRequest> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(stream)) => Ok(*stream),
        Some(other) => Err(InvalidRequest::new(
            format!("{other} is not of type 'boolean' - 'stream'"),
            Some("stream"),
        )),
    }
}

/// `stream` and `stream_options.include_usage` (options are refused without streaming).
fn stream_flags(body: &Map<String, Value>) -> Result<(bool, bool), InvalidRequest> {
    let stream = stream_flag(body)?;
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(_) if !stream => {
            return Err(InvalidRequest::new(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                Some("stream_options"),
            ));
        }
        Some(Value::Object(options)) => options
            .get("include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        Some(other) => {
            return Err(InvalidRequest::new(
                format!("{other} is not of type 'object' - 'stream_options'"),
                Some("stream_options"),
            ));
        }
    };
    Ok((stream, include_usage))
}

pub(crate) fn positive_integer(
    body: &Map<String, Value>,
    key: &'static str,
    minimum: u64,
) -> Result<Option<u64>, InvalidRequest> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(number) if number >= minimum => Ok(Some(number)),
            Some(number) => Err(InvalidRequest::new(
                format!("{number} is less than the minimum of {minimum} - '{key}'"),
                Some(key),
            )),
            None => Err(InvalidRequest::new(
                format!("{value} is not of type 'integer' - '{key}'"),
                Some(key),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, InvalidRequest> {
        parse_chat_request(body.as_bytes())
    }

    fn error(body: &str) -> String {
        match parse(body) {
            Err(err) => err.message,
            Ok(req) => format!("<parsed {req:?}>"),
        }
    }

    #[test]
    fn reads_the_fields_that_matter() {
        let req = parse(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":7,"n":2,
                "stream":true,"stream_options":{"include_usage":true}}"#,
        );
        let req = req.unwrap_or_else(|err| panic!("{err:?}"));
        assert_eq!(req.model.as_deref(), Some("m"));
        assert_eq!(req.max_tokens, Some(7));
        assert_eq!(req.n, 2);
        assert!(req.stream && req.include_usage);
        assert_eq!(req.message_list().len(), 1);
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let req = parse(
            r#"{"messages":[{"role":"user"}],"max_tokens":7,"max_completion_tokens":9,"n":null}"#,
        );
        assert_eq!(req.map(|r| (r.max_tokens, r.n)), Ok((Some(9), 1)));
    }

    #[test]
    fn bad_bodies_are_named() {
        assert!(error("{nope").contains("could not parse the JSON body"));
        assert!(error("[1]").contains("JSON object"));
        assert_eq!(error("{}"), "'messages' is a required property");
        assert!(error(r#"{"messages":"hi"}"#).contains("is not of type 'array'"));
        assert_eq!(error(r#"{"messages":[]}"#), "[] is too short - 'messages'");
        assert!(error(r#"{"messages":[{"content":"x"}]}"#).contains("'messages.0'"));
        assert!(error(r#"{"messages":[{"role":"user"}],"max_tokens":0}"#).contains("minimum"));
        assert!(error(r#"{"messages":[{"role":"user"}],"n":"2"}"#).contains("'n'"));
        assert!(error(r#"{"messages":[{"role":"user"}],"n":129}"#).contains("maximum"));
        assert!(
            error(r#"{"messages":[{"role":"user"}],"stream_options":{"include_usage":true}}"#)
                .contains("only allowed when 'stream' is enabled")
        );
        assert!(error(r#"{"messages":[{"role":"user"}],"stream":"yes"}"#).contains("'stream'"));
    }
}
