//! The Responses API: the request as the simulator reads it, the `response` object, and the
//! stream in Azure's framing (each event an `event:` line naming its type and a `data:` line
//! with a JSON object whose `type` says the same; `response.completed` carries the whole
//! response with its usage; no `[DONE]`).
//!
//! The output text is the same deterministic text as chat's, starting with
//! `digest=<messages_digest(input)>`, so a client can prove each reply belongs to its request.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use crate::content::ReplyText;
use crate::faults::Fault;
use crate::reply::{ReplyMeta, Usage};
use crate::request::{InvalidRequest, json_object, optional_string, positive_integer, stream_flag};
use crate::stream::{Pacing, StreamEnd, StreamEvent, StreamPlan};

/// A Responses request, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResponsesRequest {
    /// `model` (the deployment on the v1 route).
    pub(crate) model: Option<String>,
    /// `input` as sent: its digest opens the reply text.
    pub(crate) input: Value,
    /// `instructions`, then the input, as chat messages: what the prompt estimate reads.
    pub(crate) messages: Vec<Value>,
    /// `max_output_tokens`, if given.
    pub(crate) max_output_tokens: Option<u64>,
    /// `stream`.
    pub(crate) stream: bool,
}

/// Parse and check a Responses request body.
pub(crate) fn parse_responses_request(body: &[u8]) -> Result<ResponsesRequest, InvalidRequest> {
    let mut body = json_object(body)?;
    let input = match body.remove("input") {
        Some(input @ Value::String(_)) => input,
        Some(Value::Array(items)) if !items.is_empty() => Value::Array(items),
        None | Some(Value::Null) => {
            return Err(InvalidRequest::new(
                "Missing required parameter: 'input'.",
                Some("input"),
            ));
        }
        Some(other) => {
            return Err(InvalidRequest::new(
                format!(
                    "Invalid value for 'input': expected a string or a non-empty list, got {other}."
                ),
                Some("input"),
            ));
        }
    };
    let mut messages = Vec::new();
    if let Some(instructions) = optional_string(&body, "instructions")? {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match &input {
        Value::Array(items) => messages.extend(items.iter().cloned()),
        text => messages.push(json!({"role": "user", "content": text})),
    }
    Ok(ResponsesRequest {
        model: optional_string(&body, "model")?,
        messages,
        input,
        max_output_tokens: positive_integer(&body, "max_output_tokens", 1)?,
        stream: stream_flag(&body)?,
    })
}

#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    status: &'static str,
    role: &'static str,
    content: Vec<OutputText<'a>>,
}

#[derive(Serialize)]
struct ResponsesUsage {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct Response<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    incomplete_details: Option<Value>,
    model: &'a str,
    output: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<ResponsesUsage>,
}

/// What the reply says: its text, whether it was cut at `max_output_tokens`, its usage.
pub(crate) struct ResponseParts<'a> {
    pub(crate) meta: &'a ReplyMeta,
    pub(crate) text: &'a ReplyText,
    pub(crate) cut: bool,
    pub(crate) usage: Usage,
}

impl ResponseParts<'_> {
    fn item_id(&self) -> String {
        format!("msg_{}", self.meta.id.trim_start_matches("resp_"))
    }

    /// The response object: `in_progress` with no output (the stream's first event), or
    /// finished.
    fn response(&self, finished: bool) -> Response<'_> {
        let status = match (finished, self.cut) {
            (false, _) => "in_progress",
            (true, false) => "completed",
            (true, true) => "incomplete",
        };
        Response {
            id: &self.meta.id,
            object: "response",
            created_at: self.meta.created,
            status,
            incomplete_details: (finished && self.cut)
                .then(|| json!({"reason": "max_output_tokens"})),
            model: &self.meta.model,
            output: if finished {
                vec![Message {
                    kind: "message",
                    id: self.item_id(),
                    status: "completed",
                    role: "assistant",
                    content: vec![OutputText {
                        kind: "output_text",
                        text: &self.text.content,
                        annotations: [],
                    }],
                }]
            } else {
                Vec::new()
            },
            usage: finished.then_some(ResponsesUsage {
                input_tokens: self.usage.prompt_tokens,
                output_tokens: self.usage.completion_tokens,
                total_tokens: self.usage.total_tokens,
            }),
        }
    }

    /// The plain reply's body.
    pub(crate) fn body(&self) -> Bytes {
        to_bytes(&self.response(true))
    }
}

fn to_bytes(value: &impl Serialize) -> Bytes {
    // Plain structs and JSON values always serialise.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// One event in Azure's framing: `event: <type>` then `data: <json>`.
fn event(kind: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// Plan the stream: `response.created`, one `response.output_text.delta` per token (paced),
/// then `response.completed` (or `response.incomplete`) with the whole response. A stream
/// fault cuts it after half the deltas: the connection drops (`stream_cut`), stalls then
/// drops, or an `error` event ends it (`stream_error`); `drop` tears the first event.
pub(crate) fn plan_responses_stream(
    parts: &ResponseParts<'_>,
    pacing: Pacing,
    fault: Option<Fault>,
) -> StreamPlan {
    let mut sequence = 0u64;
    let mut next = || {
        sequence += 1;
        sequence - 1
    };
    let now = |data: Bytes| StreamEvent {
        delay: std::time::Duration::ZERO,
        data,
    };
    let created = event(
        "response.created",
        &json!({"type": "response.created", "sequence_number": next(),
                "response": parts.response(false)}),
    );
    if fault == Some(Fault::Drop) {
        let half = created.len() / 2;
        return StreamPlan::new(vec![now(created.slice(..half))], StreamEnd::Abort);
    }
    let item_id = parts.item_id();
    let mut deltas: Vec<StreamEvent> = (0..parts.text.tokens())
        .filter_map(|step| parts.text.piece(step).map(|piece| (step, piece)))
        .map(|(step, piece)| StreamEvent {
            delay: if step == 0 {
                pacing.first_token
            } else {
                pacing.per_token
            },
            data: event(
                "response.output_text.delta",
                &json!({"type": "response.output_text.delta", "sequence_number": next(),
                        "item_id": item_id, "output_index": 0, "content_index": 0,
                        "delta": piece}),
            ),
        })
        .collect();
    let mut events = vec![now(created)];
    match fault {
        Some(Fault::StreamCut | Fault::StreamError | Fault::StreamStall) => {
            deltas.truncate(deltas.len().div_ceil(2));
            events.append(&mut deltas);
            let end = if fault == Some(Fault::StreamError) {
                events.push(now(event(
                    "error",
                    &json!({"type": "error", "sequence_number": next(), "code": "server_error",
                            "message": "The server had an error while processing your request. Sorry about that!",
                            "param": null}),
                )));
                StreamEnd::Close
            } else {
                StreamEnd::Abort
            };
            StreamPlan::new(events, end)
        }
        _ => {
            events.append(&mut deltas);
            let kind = if parts.cut {
                "response.incomplete"
            } else {
                "response.completed"
            };
            events.push(now(event(
                kind,
                &json!({"type": kind, "sequence_number": next(), "response": parts.response(true)}),
            )));
            StreamPlan::new(events, StreamEnd::Close)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::messages_digest;

    fn parts_for<'a>(meta: &'a ReplyMeta, text: &'a ReplyText, cut: bool) -> ResponseParts<'a> {
        ResponseParts {
            meta,
            text,
            cut,
            usage: Usage::new(9, text.tokens() as u64),
        }
    }

    fn meta() -> ReplyMeta {
        ReplyMeta {
            id: "resp_sim1".into(),
            created: 7,
            model: "gpt-5".into(),
        }
    }

    #[test]
    fn requests_read_input_instructions_and_limits() {
        let request = parse_responses_request(
            br#"{"input":"Hi","instructions":"Be brief.","max_output_tokens":30,"model":"gpt","stream":true}"#,
        )
        .unwrap();
        assert_eq!(request.messages.len(), 2);
        assert_eq!(
            request.messages[1],
            json!({"role": "user", "content": "Hi"})
        );
        assert_eq!(
            (request.max_output_tokens, request.stream),
            (Some(30), true)
        );
        assert_eq!(request.model.as_deref(), Some("gpt"));
        let missing = parse_responses_request(br#"{"model":"gpt"}"#).unwrap_err();
        assert_eq!(missing.message, "Missing required parameter: 'input'.");
        assert!(parse_responses_request(br#"{"input":[]}"#).is_err());
        assert!(parse_responses_request(br#"{"input":"x","max_output_tokens":0}"#).is_err());
    }

    #[test]
    fn body_and_stream_carry_the_same_text_and_usage() {
        let digest = messages_digest(&json!("Hi"));
        let text = ReplyText::new(&digest, 0, 4);
        let meta = meta();
        let parts = parts_for(&meta, &text, false);
        let body: Value = serde_json::from_slice(&parts.body()).unwrap();
        assert_eq!(body["status"], "completed");
        let content = &body["output"][0]["content"][0];
        assert_eq!(content["type"], "output_text");
        assert!(
            content["text"]
                .as_str()
                .unwrap()
                .starts_with(&format!("digest={digest}"))
        );
        assert_eq!(
            body["usage"],
            json!({"input_tokens": 9, "output_tokens": 4, "total_tokens": 13})
        );

        let plan = plan_responses_stream(&parts, Pacing::default(), None);
        assert_eq!(plan.end, StreamEnd::Close);
        let texts: Vec<String> = plan
            .events
            .iter()
            .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
            .collect();
        assert_eq!(texts.len(), 1 + 4 + 1);
        assert!(texts[0].starts_with("event: response.created\ndata: {"));
        let mut assembled = String::new();
        for delta in &texts[1..5] {
            let data: Value = serde_json::from_str(delta.split("data: ").nth(1).unwrap()).unwrap();
            assert_eq!(data["type"], "response.output_text.delta");
            assembled.push_str(data["delta"].as_str().unwrap());
        }
        assert_eq!(assembled, text.content);
        let last: Value = serde_json::from_str(texts[5].split("data: ").nth(1).unwrap()).unwrap();
        assert_eq!(last["type"], "response.completed");
        assert_eq!(last["response"], body);
    }

    #[test]
    fn faults_cut_the_stream_and_a_cut_reply_is_incomplete() {
        let text = ReplyText::new("0123456789abcdef", 0, 4);
        let meta = meta();
        let parts = parts_for(&meta, &text, true);
        let body: Value = serde_json::from_slice(&parts.body()).unwrap();
        assert_eq!(body["status"], "incomplete");
        let cut = plan_responses_stream(&parts, Pacing::default(), Some(Fault::StreamCut));
        assert_eq!((cut.events.len(), cut.end), (1 + 2, StreamEnd::Abort));
        let error = plan_responses_stream(&parts, Pacing::default(), Some(Fault::StreamError));
        assert_eq!(error.end, StreamEnd::Close);
        let last = error.events.last().unwrap();
        assert!(last.data.starts_with(b"event: error\n"));
    }
}
