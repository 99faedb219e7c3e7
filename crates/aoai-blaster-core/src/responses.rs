//! The Responses API (v1 only): the request ([`ResponsesRequest`]), the reply
//! ([`ResponsesReply`]: the server's body kept as is, its output text and usage read out), and
//! the stream's events ([`parse_responses_event`]).
//!
//! A Responses stream is framed like Azure sends it: each event has an `event:` line naming
//! its type and a `data:` line with a JSON object whose `type` says the same.
//! `response.output_text.delta` events carry text; `response.completed` (or
//! `response.incomplete`) carries the whole response, usage included, and ends the stream;
//! `response.failed` and `error` end it with an error. There is no `[DONE]`.
//!
//! ```
//! use aoai_blaster_core::responses::{ResponsesEvent, parse_responses_event};
//!
//! let delta = parse_responses_event(
//!     Some("response.output_text.delta"),
//!     r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hel"}"#,
//! )?;
//! assert!(matches!(delta, ResponsesEvent::TextDelta { ref delta, .. } if delta == "Hel"));
//! let done = parse_responses_event(Some("response.completed"), r#"{"type":"response.completed","response":
//!     {"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":
//!     [{"type":"output_text","text":"Hello"}]}],"usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}}"#)?;
//! let ResponsesEvent::Completed(reply) = done else { panic!("expected the end") };
//! assert_eq!(reply.output_text(), "Hello");
//! assert_eq!(reply.usage().map(|u| u.total_tokens), Some(6));
//! # Ok::<(), aoai_blaster_core::sse::SseError>(())
//! ```

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::chat::{ApiErrorBody, ChatCompletionChunk, ChunkChoice, Delta};
use crate::embeddings::{InputBodyError, split_input};
use crate::sse::SseError;

/// A Responses API request: the input and any other body parameter (`instructions`,
/// `max_output_tokens`, `reasoning`, `tools`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    /// A string, or a list of input items (messages with `role` and `content`).
    pub input: Value,
    /// Every other body parameter.
    pub options: Map<String, Value>,
}

impl ResponsesRequest {
    /// A request for `input`.
    pub fn new(input: impl Into<Value>) -> ResponsesRequest {
        ResponsesRequest {
            input: input.into(),
            options: Map::new(),
        }
    }

    /// Splits a full request body (`{"input": ..., ...}`) into input and options.
    pub fn from_body(body: Value) -> Result<ResponsesRequest, InputBodyError> {
        let (input, options) = split_input(body)?;
        Ok(ResponsesRequest { input, options })
    }

    /// Sets any body parameter.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<Value>) -> ResponsesRequest {
        self.options.insert(key.into(), value.into());
        self
    }

    /// The input as chat messages, for counting its tokens: `instructions` as a system
    /// message, then the input (a string is one user message).
    pub fn as_messages(&self) -> Vec<Value> {
        let mut messages = Vec::new();
        if let Some(instructions) = self.options.get("instructions").filter(|v| !v.is_null()) {
            messages.push(serde_json::json!({"role": "system", "content": instructions}));
        }
        match &self.input {
            Value::Array(items) => messages.extend(items.iter().cloned()),
            other => messages.push(serde_json::json!({"role": "user", "content": other})),
        }
        messages
    }
}

/// A Responses API reply: the body as the server sent it, with what callers read most.
#[derive(Debug, Clone)]
pub struct ResponsesReply {
    body: Box<RawValue>,
    id: String,
    status: String,
    output_text: String,
    usage: Option<ResponsesUsage>,
}

impl PartialEq for ResponsesReply {
    fn eq(&self, other: &Self) -> bool {
        self.body.get() == other.body.get()
    }
}

/// Token counts of a Responses reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ResponsesUsage {
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens (reasoning included).
    #[serde(default)]
    pub output_tokens: u64,
    /// Their sum, as stated.
    #[serde(default)]
    pub total_tokens: u64,
}

/// The fields of a response object read out (the rest stays in the raw body).
#[derive(Deserialize)]
struct ResponseView {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    output: Option<Vec<OutputItem>>,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

#[derive(Deserialize)]
struct OutputItem {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    content: Option<Vec<ContentPart>>,
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

impl ResponsesReply {
    /// Reads a response object (a plain reply's body, or a stream's `response`).
    pub fn from_slice(body: &[u8]) -> Result<ResponsesReply, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_slice(body)?;
        ResponsesReply::from_raw(raw)
    }

    fn from_raw(body: Box<RawValue>) -> Result<ResponsesReply, serde_json::Error> {
        let view: ResponseView = serde_json::from_str(body.get())?;
        if view.output.is_none() {
            return Err(serde::de::Error::missing_field("output"));
        }
        let mut output_text = String::new();
        for item in view.output.iter().flatten() {
            if item.kind.as_deref() != Some("message") {
                continue;
            }
            for part in item.content.iter().flatten() {
                if part.kind.as_deref() == Some("output_text")
                    && let Some(text) = &part.text
                {
                    output_text.push_str(text);
                }
            }
        }
        Ok(ResponsesReply {
            id: view.id.unwrap_or_default(),
            status: view.status.unwrap_or_default(),
            output_text,
            usage: view.usage,
            body,
        })
    }

    /// The response id (`resp_...`); empty when the service gave none.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `completed`, `incomplete`, ...
    pub fn status(&self) -> &str {
        &self.status
    }

    /// The text of every `output_text` part of the output messages, in order.
    pub fn output_text(&self) -> &str {
        &self.output_text
    }

    /// Token counts, when stated.
    pub fn usage(&self) -> Option<ResponsesUsage> {
        self.usage
    }

    /// The response object as the server sent it.
    pub fn body(&self) -> &RawValue {
        &self.body
    }
}

/// What one event of a Responses stream means.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponsesEvent {
    /// `response.output_text.delta`: text to append.
    TextDelta {
        /// The output item it extends.
        output_index: u32,
        /// The item's id.
        item_id: String,
        /// The new text.
        delta: String,
    },
    /// `response.completed` or `response.incomplete`: the whole response; the stream is over.
    Completed(ResponsesReply),
    /// `response.failed` or `error`: the service gave up.
    Failed(ApiErrorBody),
    /// Any other event (created, in progress, item and part boundaries, `.done` events).
    Other,
}

#[derive(Deserialize)]
struct EventView {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    output_index: Option<u32>,
    #[serde(default)]
    item_id: Option<String>,
    #[serde(default)]
    delta: Option<String>,
    #[serde(default)]
    response: Option<Box<RawValue>>,
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
}

/// Reads one event of a Responses stream (`event`: its `event:` name; the data's `type` wins
/// when both are given).
pub fn parse_responses_event(event: Option<&str>, data: &str) -> Result<ResponsesEvent, SseError> {
    let invalid = |error: serde_json::Error| SseError::InvalidJson {
        message: error.to_string(),
        preview: data.chars().take(120).collect(),
    };
    let view: EventView = serde_json::from_str(data).map_err(invalid)?;
    let kind = view.kind.as_deref().or(event).unwrap_or("");
    Ok(match kind {
        "response.output_text.delta" => ResponsesEvent::TextDelta {
            output_index: view.output_index.unwrap_or(0),
            item_id: view.item_id.unwrap_or_default(),
            delta: view.delta.unwrap_or_default(),
        },
        "response.completed" | "response.incomplete" => match view.response {
            Some(raw) => ResponsesEvent::Completed(ResponsesReply::from_raw(raw).map_err(invalid)?),
            None => ResponsesEvent::Failed(ApiErrorBody {
                message: format!("`{kind}` event without its response"),
                ..ApiErrorBody::default()
            }),
        },
        "response.failed" => {
            let error = view
                .response
                .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
                .and_then(|response| ApiErrorBody::from_error_value(&response["error"]));
            ResponsesEvent::Failed(error.unwrap_or_else(|| ApiErrorBody {
                message: "the response failed".to_owned(),
                ..ApiErrorBody::default()
            }))
        }
        "error" => ResponsesEvent::Failed(ApiErrorBody {
            code: view.code.map(|code| match code {
                Value::String(text) => text,
                other => other.to_string(),
            }),
            message: view.message.unwrap_or_default(),
            ..ApiErrorBody::default()
        }),
        _ => ResponsesEvent::Other,
    })
}

/// A Responses text delta as the chat chunk the per-delta surface (`StreamDelta`) carries: one
/// choice (index: the output item's) whose delta holds the text, the item's id as the chunk's
/// id, and `"type": "response.output_text.delta"` as chunk field and `object`.
///
/// ```
/// let chunk = aoai_blaster_core::responses::delta_chunk(0, "msg_1".into(), "Hel");
/// assert_eq!(chunk.text(), Some("Hel"));
/// assert_eq!(chunk.extra["type"], "response.output_text.delta");
/// ```
pub fn delta_chunk(output_index: u32, item_id: String, text: &str) -> ChatCompletionChunk {
    const KIND: &str = "response.output_text.delta";
    let mut extra = Map::new();
    extra.insert("type".to_owned(), Value::from(KIND));
    ChatCompletionChunk {
        id: item_id,
        object: KIND.to_owned(),
        created: 0,
        model: String::new(),
        choices: vec![ChunkChoice {
            index: output_index,
            delta: Delta {
                content: Some(text.to_owned()),
                ..Delta::default()
            },
            finish_reason: None,
            extra: Map::new(),
        }],
        usage: None,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reply_keeps_its_body_and_reads_text_and_usage() {
        let text = r#"{"id":"resp_9","object":"response","status":"completed","output":[
            {"type":"reasoning","summary":[]},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hel","annotations":[]},
             {"type":"refusal","refusal":"no"},{"type":"output_text","text":"lo"}]}],
            "usage":{"input_tokens":7,"output_tokens":2,"total_tokens":9,"output_tokens_details":{"reasoning_tokens":0}}}"#;
        let reply = ResponsesReply::from_slice(text.as_bytes()).unwrap();
        assert_eq!(reply.output_text(), "Hello");
        assert_eq!((reply.id(), reply.status()), ("resp_9", "completed"));
        assert_eq!(
            reply.usage(),
            Some(ResponsesUsage {
                input_tokens: 7,
                output_tokens: 2,
                total_tokens: 9
            })
        );
        assert_eq!(reply.body().get(), text);
        assert!(ResponsesReply::from_slice(br#"{"id":"x"}"#).is_err());
    }

    #[test]
    fn stream_events() {
        assert_eq!(
            parse_responses_event(Some("response.created"), r#"{"type":"response.created"}"#)
                .unwrap(),
            ResponsesEvent::Other
        );
        // The event name alone is enough when the data has no type.
        assert!(matches!(
            parse_responses_event(Some("response.output_text.delta"), r#"{"delta":"x"}"#).unwrap(),
            ResponsesEvent::TextDelta { ref delta, output_index: 0, .. } if delta == "x"
        ));
        let failed = parse_responses_event(
            Some("response.failed"),
            r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"boom"}}}"#,
        )
        .unwrap();
        assert!(matches!(failed, ResponsesEvent::Failed(ref e) if e.message == "boom"));
        let error = parse_responses_event(
            Some("error"),
            r#"{"type":"error","code":"rate_limit_exceeded","message":"slow"}"#,
        )
        .unwrap();
        assert!(
            matches!(error, ResponsesEvent::Failed(ref e) if e.code.as_deref() == Some("rate_limit_exceeded"))
        );
        assert!(parse_responses_event(None, "[DONE]").is_err());
    }

    #[test]
    fn input_as_messages_for_counting() {
        let request = ResponsesRequest::new("Hi").option("instructions", "Be brief.");
        assert_eq!(
            request.as_messages(),
            [
                json!({"role": "system", "content": "Be brief."}),
                json!({"role": "user", "content": "Hi"})
            ]
        );
        let items = ResponsesRequest::new(
            json!([{"role": "user", "content": [{"type": "input_text", "text": "Yo"}]}]),
        );
        assert_eq!(items.as_messages().len(), 1);
    }
}
