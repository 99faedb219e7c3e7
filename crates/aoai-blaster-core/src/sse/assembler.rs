//! Events to a completion: [`parse_stream_data`] reads one event's data as a [`StreamItem`] (a
//! chunk, the `[DONE]` sentinel, or a mid-stream error), and [`StreamAssembler`] folds chunks
//! into a [`ChatCompletion`] shaped like the non-streamed reply.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::SseError;
use crate::chat::{
    ApiErrorBody, AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ExtraFields,
    FunctionCall, ToolCall, Usage,
};

/// What one event of a chat stream means.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A chunk (possibly with no choices: prompt filter results or usage).
    Chunk(ChatCompletionChunk),
    /// `data: [DONE]`: the stream is complete.
    Done,
    /// `data: {"error": {...}}`: the service gave up mid-stream.
    Error(ApiErrorBody),
}

/// Reads one event's data.
///
/// ```
/// use aoai_blaster_core::sse::{parse_stream_data, StreamItem};
///
/// assert_eq!(parse_stream_data("[DONE]")?, StreamItem::Done);
/// let StreamItem::Error(error) = parse_stream_data(r#"{"error": {"code": "server_error", "message": "boom"}}"#)? else {
///     panic!("expected an error");
/// };
/// assert_eq!(error.code.as_deref(), Some("server_error"));
/// assert!(parse_stream_data("<html>").is_err());
/// # Ok::<(), aoai_blaster_core::sse::SseError>(())
/// ```
pub fn parse_stream_data(data: &str) -> Result<StreamItem, SseError> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(StreamItem::Done);
    }
    let mut chunk: ChatCompletionChunk =
        serde_json::from_str(data).map_err(|error| SseError::InvalidJson {
            message: error.to_string(),
            preview: data.chars().take(120).collect(),
        })?;
    if chunk.choices.is_empty()
        && let Some(error) = chunk.extra.remove("error")
    {
        let body = ApiErrorBody::from_error_value(&error).unwrap_or_else(|| ApiErrorBody {
            message: error.to_string(),
            ..ApiErrorBody::default()
        });
        return Ok(StreamItem::Error(body));
    }
    Ok(StreamItem::Chunk(chunk))
}
/// Fields that differ per chunk and mean nothing in an assembled completion.
const PER_CHUNK_FIELDS: &[&str] = &["obfuscation"];

/// Folds chunks into one [`ChatCompletion`] shaped like the non-streamed reply.
///
/// - `id`, `model`, `created`: the first non-empty values seen (Azure's first chunk has none).
/// - per choice index: `content` concatenated (`None` if no delta had any), `role` (default
///   `assistant`), the last `finish_reason`, `refusal` concatenated, tool calls merged by their
///   index (`name` and `arguments` concatenated), other fields merged (objects key by key, a
///   `null` never erasing a value, `logprobs` lists concatenated).
/// - `usage` from the usage chunk; chunk-level fields (`prompt_filter_results`,
///   `system_fingerprint`) kept in `extra`.
#[derive(Debug, Clone, Default)]
pub struct StreamAssembler {
    id: String,
    created: u64,
    model: String,
    usage: Option<Usage>,
    extra: Map<String, Value>,
    choices: BTreeMap<u32, ChoiceState>,
    saw_done: bool,
    deltas: u64,
    chunks: u64,
}

#[derive(Debug, Clone, Default)]
struct ChoiceState {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u32, ToolCall>,
    finish_reason: Option<String>,
    choice_extra: Map<String, Value>,
    message_extra: Map<String, Value>,
}

impl StreamAssembler {
    /// An empty assembler.
    pub fn new() -> StreamAssembler {
        StreamAssembler::default()
    }

    /// True once `[DONE]` has been seen.
    pub fn saw_done(&self) -> bool {
        self.saw_done
    }

    /// Choice deltas that carried text, a tool-call fragment or a refusal (see
    /// [`crate::chat::Delta::has_payload`]): what an incremental consumer has been given.
    pub fn delta_count(&self) -> u64 {
        self.deltas
    }

    /// Chunks folded in so far, including those without choices.
    pub fn chunk_count(&self) -> u64 {
        self.chunks
    }

    /// Folds in one item: a chunk, `[DONE]`, or a mid-stream error (returned as
    /// [`SseError::Api`]).
    pub fn push_item(&mut self, item: &StreamItem) -> Result<(), SseError> {
        match item {
            StreamItem::Chunk(chunk) => {
                self.push(chunk);
                Ok(())
            }
            StreamItem::Done => {
                self.saw_done = true;
                Ok(())
            }
            StreamItem::Error(error) => Err(SseError::Api(error.clone())),
        }
    }

    /// Records `[DONE]`.
    pub fn push_done(&mut self) {
        self.saw_done = true;
    }

    /// Folds in one chunk.
    pub fn push(&mut self, chunk: &ChatCompletionChunk) {
        self.chunks += 1;
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
        }
        if self.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        if self.created == 0 {
            self.created = chunk.created;
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        merge_fields(&mut self.extra, &chunk.extra, false);

        for choice in &chunk.choices {
            if choice.delta.has_payload() {
                self.deltas += 1;
            }
            let state = self.choices.entry(choice.index).or_default();
            let delta = &choice.delta;
            if let Some(role) = &delta.role
                && !role.is_empty()
            {
                state.role = Some(role.clone());
            }
            if let Some(content) = &delta.content {
                state
                    .content
                    .get_or_insert_with(String::new)
                    .push_str(content);
            }
            if let Some(Value::String(refusal)) = delta.extra.get("refusal") {
                state
                    .refusal
                    .get_or_insert_with(String::new)
                    .push_str(refusal);
            }
            let mut other = delta.extra.clone();
            if other.get("refusal").is_some_and(Value::is_string) {
                other.remove("refusal");
            }
            merge_fields(&mut state.message_extra, &other, false);
            for fragment in delta.tool_calls.iter().flatten() {
                let call = state
                    .tool_calls
                    .entry(fragment.index)
                    .or_insert_with(|| ToolCall {
                        id: String::new(),
                        kind: "function".to_owned(),
                        function: FunctionCall::default(),
                        extra: ExtraFields::new(),
                    });
                if let Some(id) = &fragment.id
                    && call.id.is_empty()
                {
                    call.id.clone_from(id);
                }
                if let Some(kind) = &fragment.kind
                    && !kind.is_empty()
                {
                    call.kind.clone_from(kind);
                }
                if let Some(function) = &fragment.function {
                    if let Some(name) = &function.name {
                        call.function.name.push_str(name);
                    }
                    if let Some(arguments) = &function.arguments {
                        call.function.arguments.push_str(arguments);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                state.finish_reason.clone_from(&choice.finish_reason);
            }
            merge_fields(&mut state.choice_extra, &choice.extra, false);
        }
    }

    /// The completion so far, whatever arrived (no checks).
    pub fn into_completion(self) -> ChatCompletion {
        let choices = self
            .choices
            .into_iter()
            .map(|(index, state)| {
                let mut message_extra = state.message_extra;
                if let Some(refusal) = state.refusal {
                    message_extra.insert("refusal".to_owned(), Value::String(refusal));
                }
                Choice {
                    index,
                    message: AssistantMessage {
                        role: state.role.unwrap_or_else(|| "assistant".to_owned()),
                        content: state.content,
                        tool_calls: (!state.tool_calls.is_empty())
                            .then(|| state.tool_calls.into_values().collect()),
                        extra: ExtraFields::from_map(message_extra),
                    },
                    finish_reason: state.finish_reason,
                    extra: ExtraFields::from_map(state.choice_extra),
                }
            })
            .collect();
        ChatCompletion {
            id: self.id,
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
            extra: ExtraFields::from_map(self.extra),
        }
    }

    /// The completion, if there is at least one choice ([`SseError::NoChoices`] otherwise).
    ///
    /// It does not require `[DONE]`: call it when `[DONE]` arrives, or check
    /// [`StreamAssembler::saw_done`] first when the byte stream ends (as
    /// [`StreamAssembler::finish_complete`] and [`ChatStream::finish`](super::ChatStream::finish) do).
    pub fn finish(self) -> Result<ChatCompletion, SseError> {
        if self.choices.is_empty() {
            return Err(SseError::NoChoices);
        }
        Ok(self.into_completion())
    }

    /// [`StreamAssembler::finish`], and [`SseError::MissingDone`] unless `[DONE]` was seen.
    pub fn finish_complete(self) -> Result<ChatCompletion, SseError> {
        if !self.saw_done {
            return Err(SseError::MissingDone {
                deltas: self.deltas,
            });
        }
        self.finish()
    }
}

/// Merges `new` into `into`: objects key by key, `null` never erases a value, lists replace
/// except under `logprobs` where they are concatenated (token by token log probabilities).
fn merge_fields(into: &mut Map<String, Value>, new: &Map<String, Value>, concat_lists: bool) {
    for (key, value) in new {
        if PER_CHUNK_FIELDS.contains(&key.as_str()) {
            continue;
        }
        let concat = concat_lists || key == "logprobs";
        match into.get_mut(key) {
            None => {
                into.insert(key.clone(), value.clone());
            }
            Some(_) if value.is_null() => {}
            Some(Value::Object(existing)) if value.is_object() => {
                if let Value::Object(new) = value {
                    merge_fields(existing, new, concat);
                }
            }
            Some(Value::Array(existing)) if concat && value.is_array() => {
                if let Value::Array(new) = value {
                    existing.extend(new.iter().cloned());
                }
            }
            Some(slot) => *slot = value.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_call_fragments_merge_by_index() {
        let chunks = [
            json!({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\""}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": ":\"UTC\"}"}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ];
        let mut assembler = StreamAssembler::new();
        for chunk in &chunks {
            let chunk: ChatCompletionChunk = serde_json::from_value(chunk.clone()).unwrap();
            assembler.push_item(&StreamItem::Chunk(chunk)).unwrap();
        }
        assembler.push_item(&StreamItem::Done).unwrap();
        assert_eq!(assembler.delta_count(), 5);
        let completion = assembler.finish_complete().unwrap();
        let message = &completion.choices[0].message;
        assert_eq!(message.content, None);
        let calls = message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].function.name.as_str()),
            ("call_a", "get_weather")
        );
        assert_eq!(calls[0].function.arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(
            (calls[1].id.as_str(), calls[1].function.arguments.as_str()),
            ("call_b", r#"{"tz":"UTC"}"#)
        );
        assert_eq!(completion.finish_reason(), Some("tool_calls"));
    }

    #[test]
    fn several_choices_refusals_and_logprobs() {
        let chunks = [
            json!({"choices": [
                {"index": 1, "delta": {"content": "B1"}, "logprobs": {"content": [{"token": "B1"}]}},
                {"index": 0, "delta": {"content": "A1", "refusal": null}, "logprobs": {"content": [{"token": "A1"}]}}]}),
            json!({"choices": [
                {"index": 0, "delta": {"content": "A2"}, "logprobs": {"content": [{"token": "A2"}]}, "finish_reason": "stop"},
                {"index": 1, "delta": {"refusal": "no"}, "logprobs": null}]}),
            json!({"choices": [{"index": 1, "delta": {"refusal": "pe"}, "finish_reason": "stop", "obfuscation": "xyz"}], "obfuscation": "abc"}),
        ];
        let mut assembler = StreamAssembler::new();
        for chunk in &chunks {
            assembler.push(&serde_json::from_value(chunk.clone()).unwrap());
        }
        assembler.push_done();
        let completion = assembler.finish_complete().unwrap();
        assert_eq!(completion.choices.len(), 2);
        let (a, b) = (&completion.choices[0], &completion.choices[1]);
        assert_eq!((a.index, a.message.content.as_deref()), (0, Some("A1A2")));
        assert_eq!(a.message.extra.get("refusal"), Some(Value::Null));
        assert_eq!(
            a.extra.get("logprobs"),
            Some(json!({"content": [{"token": "A1"}, {"token": "A2"}]}))
        );
        assert_eq!((b.index, b.message.content.as_deref()), (1, Some("B1")));
        assert_eq!(b.message.extra.get("refusal"), Some(json!("nope")));
        assert_eq!(
            b.extra.get("logprobs"),
            Some(json!({"content": [{"token": "B1"}]}))
        );
        assert!(
            !b.extra.contains_key("obfuscation") && !completion.extra.contains_key("obfuscation")
        );
        assert_eq!(completion.object, "chat.completion");
    }

    #[test]
    fn finish_leaves_done_to_the_caller_and_finish_complete_requires_it() {
        let chunk: ChatCompletionChunk = serde_json::from_value(
            json!({"choices": [{"index": 0, "delta": {"content": "partial"}}]}),
        )
        .unwrap();
        let mut assembler = StreamAssembler::new();
        assembler.push(&chunk);
        assert!(!assembler.saw_done());
        assert_eq!(assembler.chunk_count(), 1);
        assert_eq!(
            assembler.clone().finish_complete().unwrap_err(),
            SseError::MissingDone { deltas: 1 }
        );
        assert_eq!(assembler.finish().unwrap().text(), Some("partial"));
        assert_eq!(
            StreamAssembler::new().finish().unwrap_err(),
            SseError::NoChoices
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let error = parse_stream_data("<html><body>502 Bad Gateway</body></html>").unwrap_err();
        let SseError::InvalidJson { preview, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(preview.starts_with("<html>"));
        assert!(
            error
                .to_string()
                .starts_with("stream event is not a chat chunk")
        );
    }
}
