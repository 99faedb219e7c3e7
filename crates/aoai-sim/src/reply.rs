//! The JSON bodies of successful replies: `chat.completion`, and the `chat.completion.chunk`
//! events of a stream, framed as Azure sends them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::content::ReplyText;

/// Token counts reported in `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Estimated prompt tokens (the same estimate the quota is charged with).
    pub prompt_tokens: u64,
    /// Completion tokens returned over all choices.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

impl Usage {
    pub(crate) fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// What every reply body of one request shares.
#[derive(Debug, Clone)]
pub(crate) struct ReplyMeta {
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
}

/// One choice's content and finish reason.
#[derive(Debug, Clone)]
pub(crate) struct ChoiceText {
    pub(crate) text: ReplyText,
    pub(crate) finish_reason: &'static str,
}

#[derive(Serialize)]
struct Category {
    filtered: bool,
    severity: &'static str,
}

const SAFE: Category = Category {
    filtered: false,
    severity: "safe",
};

#[derive(Serialize)]
struct FilterResults {
    hate: Category,
    self_harm: Category,
    sexual: Category,
    violence: Category,
}

const ALL_SAFE: FilterResults = FilterResults {
    hate: SAFE,
    self_harm: SAFE,
    sexual: SAFE,
    violence: SAFE,
};

#[derive(Serialize)]
struct PromptFilterResult {
    prompt_index: u32,
    content_filter_results: FilterResults,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<&'a str>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: usize,
    message: Message<'a>,
    finish_reason: &'static str,
    logprobs: Option<()>,
    content_filter_results: FilterResults,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    prompt_filter_results: [PromptFilterResult; 1],
    choices: Vec<Choice<'a>>,
    usage: Usage,
}

const SYSTEM_FINGERPRINT: &str = "fp_aoai_sim";

/// A `chat.completion` body.
pub(crate) fn completion_body(meta: &ReplyMeta, choices: &[ChoiceText], usage: Usage) -> Bytes {
    let completion = Completion {
        id: &meta.id,
        object: "chat.completion",
        created: meta.created,
        model: &meta.model,
        system_fingerprint: SYSTEM_FINGERPRINT,
        prompt_filter_results: [PromptFilterResult {
            prompt_index: 0,
            content_filter_results: ALL_SAFE,
        }],
        choices: choices
            .iter()
            .enumerate()
            .map(|(index, choice)| Choice {
                index,
                message: Message {
                    role: "assistant",
                    content: &choice.text.content,
                    refusal: None,
                },
                finish_reason: choice.finish_reason,
                logprobs: None,
                content_filter_results: ALL_SAFE,
            })
            .collect(),
        usage,
    };
    to_bytes(&completion)
}

fn to_bytes(value: &impl Serialize) -> Bytes {
    // Serialising these plain structs into memory cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Frame one JSON document as a server-sent event.
pub(crate) fn sse_event(json: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// The stream's terminating event.
pub(crate) const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

#[derive(Serialize)]
struct PromptFilterChunk {
    choices: [(); 0],
    created: u64,
    id: &'static str,
    model: &'static str,
    object: &'static str,
    prompt_filter_results: [PromptFilterResult; 1],
}

/// Azure's first stream event: no choices, the prompt filter results, empty id and model.
pub(crate) fn prompt_filter_event() -> Bytes {
    sse_event(&to_bytes(&PromptFilterChunk {
        choices: [],
        created: 0,
        id: "",
        model: "",
        object: "",
        prompt_filter_results: [PromptFilterResult {
            prompt_index: 0,
            content_filter_results: ALL_SAFE,
        }],
    }))
}

/// What a delta chunk carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Delta<'a> {
    /// `{"role": "assistant", "content": ""}`.
    Role,
    /// `{"content": piece}`.
    Content(&'a str),
    /// `{}` with a finish reason.
    Finish(&'static str),
}

#[derive(Serialize)]
struct DeltaBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct EmptyFilterResults {}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: DeltaBody<'a>,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
    content_filter_results: EmptyFilterResults,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// A `chat.completion.chunk` event with one choice's delta.
pub(crate) fn delta_event(meta: &ReplyMeta, index: usize, delta: Delta<'_>) -> Bytes {
    let (body, finish_reason) = match delta {
        Delta::Role => (
            DeltaBody {
                role: Some("assistant"),
                content: Some(""),
            },
            None,
        ),
        Delta::Content(piece) => (
            DeltaBody {
                role: None,
                content: Some(piece),
            },
            None,
        ),
        Delta::Finish(reason) => (
            DeltaBody {
                role: None,
                content: None,
            },
            Some(reason),
        ),
    };
    sse_event(&to_bytes(&Chunk {
        id: &meta.id,
        object: "chat.completion.chunk",
        created: meta.created,
        model: &meta.model,
        system_fingerprint: SYSTEM_FINGERPRINT,
        choices: vec![ChunkChoice {
            index,
            delta: body,
            finish_reason,
            logprobs: None,
            content_filter_results: EmptyFilterResults {},
        }],
        usage: None,
    }))
}

/// The usage event sent when `stream_options.include_usage` is set: no choices, `usage`.
pub(crate) fn usage_event(meta: &ReplyMeta, usage: Usage) -> Bytes {
    sse_event(&to_bytes(&Chunk {
        id: &meta.id,
        object: "chat.completion.chunk",
        created: meta.created,
        model: &meta.model,
        system_fingerprint: SYSTEM_FINGERPRINT,
        choices: Vec::new(),
        usage: Some(usage),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn meta() -> ReplyMeta {
        ReplyMeta {
            id: "chatcmpl-1".to_owned(),
            created: 1_700_000_000,
            model: "gpt-4o".to_owned(),
        }
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap_or(Value::Null)
    }

    fn event_json(event: &[u8]) -> Value {
        let text = std::str::from_utf8(event).unwrap_or("");
        assert!(
            text.starts_with("data: ") && text.ends_with("\n\n"),
            "{text:?}"
        );
        json(&text.as_bytes()["data: ".len()..text.len() - 2])
    }

    #[test]
    fn completion_has_openai_shape() {
        let choices = [
            ChoiceText {
                text: ReplyText::new("ab", 0, 2),
                finish_reason: "stop",
            },
            ChoiceText {
                text: ReplyText::new("ab", 1, 1),
                finish_reason: "length",
            },
        ];
        let body = json(&completion_body(&meta(), &choices, Usage::new(10, 3)));
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["id"], "chatcmpl-1");
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            choices[0].text.content
        );
        assert_eq!(body["choices"][1]["message"]["content"], "digest=ab");
        assert_eq!(body["choices"][1]["index"], 1);
        assert_eq!(body["choices"][1]["finish_reason"], "length");
        assert_eq!(body["usage"]["total_tokens"], 13);
    }

    #[test]
    fn stream_events_are_framed_like_azure() {
        let first = event_json(&prompt_filter_event());
        assert_eq!(first["choices"], serde_json::json!([]));
        assert_eq!(
            first["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"],
            false
        );
        let role = event_json(&delta_event(&meta(), 0, Delta::Role));
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        let piece = event_json(&delta_event(&meta(), 2, Delta::Content(" echo")));
        assert_eq!(piece["choices"][0]["index"], 2);
        assert_eq!(piece["choices"][0]["delta"]["content"], " echo");
        assert!(piece["choices"][0]["finish_reason"].is_null());
        let finish = event_json(&delta_event(&meta(), 0, Delta::Finish("stop")));
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        let usage = event_json(&usage_event(&meta(), Usage::new(1, 2)));
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 2);
    }
}
