//! Server-Sent Events for chat streams: bytes → events → chunks → one [`ChatCompletion`].
//!
//! Three layers, each usable alone:
//! - [`SseDecoder`] turns bytes, cut anywhere, into [`SseEvent`]s (the WHATWG event-stream
//!   rules: `\n`, `\r\n` or `\r` line ends, multi-line `data:` joined by `\n`, `:` comments,
//!   `event:`/`id:`/`retry:` fields), with a bound on line and event size.
//! - [`parse_stream_data`] reads one event's data as a [`StreamItem`]: a chunk, the `[DONE]`
//!   sentinel, or a mid-stream `{"error": {...}}`.
//! - [`StreamAssembler`] folds chunks into a [`ChatCompletion`] shaped like the non-streamed
//!   reply (content and tool calls concatenated, usage from the usage chunk).
//!
//! [`ChatStream`] chains the three for the common case:
//!
//! ```
//! use aoai_blaster_core::sse::ChatStream;
//!
//! let mut stream = ChatStream::new();
//! let body = concat!(
//!     "data: {\"choices\":[],\"prompt_filter_results\":[]}\n\n",
//!     "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
//!     "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
//!     "data: [DONE]\n\n",
//! );
//! let (first, rest) = body.as_bytes().split_at(37); // any cut works
//! let mut deltas = stream.push(first)?;
//! deltas.extend(stream.push(rest)?);
//! assert_eq!(deltas.iter().filter(|c| c.has_payload()).count(), 2);
//! let completion = stream.finish()?;
//! assert_eq!(completion.text(), Some("Hello"));
//! assert_eq!(completion.finish_reason(), Some("stop"));
//! # Ok::<(), aoai_blaster_core::sse::SseError>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::chat::{
    ApiErrorBody, AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ExtraFields,
    FunctionCall, ToolCall, Usage,
};

/// Default bound on one line and on one event's data: 8 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// What went wrong while reading a stream.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SseError {
    /// A line grew past the bound without a line break.
    #[error(
        "stream line longer than {limit} bytes without a line break: the reply is not a chat \
         event stream (raise the bound with SseDecoder::with_max_line_bytes if it is)"
    )]
    LineTooLong {
        /// The bound in bytes.
        limit: usize,
    },
    /// One event's `data:` lines add up past the bound.
    #[error(
        "stream event larger than {limit} bytes: the reply is not a chat event stream \
         (raise the bound with SseDecoder::with_max_line_bytes if it is)"
    )]
    EventTooLarge {
        /// The bound in bytes.
        limit: usize,
    },
    /// An event's data is neither `[DONE]` nor a JSON object.
    #[error("stream event is not a chat chunk ({message}); its data begins {preview:?}")]
    InvalidJson {
        /// What the JSON parser said.
        message: String,
        /// The first characters of the data.
        preview: String,
    },
    /// The service sent `{"error": {...}}` in the middle of the stream.
    #[error("the service reported an error mid-stream: {0}")]
    Api(ApiErrorBody),
    /// The stream ended without `data: [DONE]`.
    #[error(
        "the stream ended before `data: [DONE]` after {deltas} deltas: the connection was cut \
         mid-stream"
    )]
    MissingDone {
        /// Deltas with content received before the cut.
        deltas: u64,
    },
    /// The stream finished without a single choice.
    #[error("the stream finished without any choice: the service sent no answer")]
    NoChoices,
}

// ---------------------------------------------------------------------------------------------
// Bytes to events
// ---------------------------------------------------------------------------------------------

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the event had one (chat streams do not use it).
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The last `id:` seen in the stream so far (it carries over, as the spec says).
    pub id: Option<String>,
}

/// Incremental event-stream decoder: feed it bytes as they arrive, cut anywhere.
///
/// ```
/// use aoai_blaster_core::sse::SseDecoder;
///
/// let mut decoder = SseDecoder::new();
/// assert!(decoder.push(b": keep-alive\r\ndata: one\r\nda").unwrap().is_empty());
/// let events = decoder.push(b"ta: two\r\n\r\n").unwrap();
/// assert_eq!(events[0].data, "one\ntwo");
/// assert_eq!(decoder.finish(), None); // ended on an event boundary
/// ```
#[derive(Debug, Clone)]
pub struct SseDecoder {
    /// Bytes of the line not yet terminated.
    line: Vec<u8>,
    /// The previous byte was `\r`: a `\n` right after it belongs to the same line end.
    after_cr: bool,
    /// No line has been completed yet (a byte-order mark may open the stream).
    first_line: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    retry: Option<Duration>,
    max_bytes: usize,
    failed: Option<SseError>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new()
    }
}

impl SseDecoder {
    /// A decoder bounding lines and events to [`DEFAULT_MAX_LINE_BYTES`].
    pub fn new() -> SseDecoder {
        SseDecoder::with_max_line_bytes(DEFAULT_MAX_LINE_BYTES)
    }

    /// A decoder bounding each line, and each event's data, to `max_bytes`.
    pub fn with_max_line_bytes(max_bytes: usize) -> SseDecoder {
        SseDecoder {
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            data: String::new(),
            has_data: false,
            event: None,
            last_id: None,
            retry: None,
            max_bytes,
            failed: None,
        }
    }

    /// The last `retry:` the server sent, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Feeds bytes; returns the events they complete, in order.
    ///
    /// After an error the stream is unusable: every later call returns the same error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let mut events = Vec::new();
        let result = self.push_into(bytes, &mut events);
        match result {
            Ok(()) => Ok(events),
            Err(error) => {
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    fn push_into(&mut self, mut rest: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if rest.is_empty() {
            return Ok(());
        }
        if self.after_cr {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            if self.line.len() + end > self.max_bytes {
                return Err(SseError::LineTooLong {
                    limit: self.max_bytes,
                });
            }
            if self.line.is_empty() {
                self.take_line(&rest[..end], events)?;
            } else {
                self.line.extend_from_slice(&rest[..end]);
                let line = std::mem::take(&mut self.line);
                self.take_line(&line, events)?;
                // Keep the allocation for the next partial line.
                self.line = line;
                self.line.clear();
            }
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    None => self.after_cr = true,
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                }
            }
        }
        if self.line.len() + rest.len() > self.max_bytes {
            return Err(SseError::LineTooLong {
                limit: self.max_bytes,
            });
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    fn take_line(&mut self, mut line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.first_line {
            self.first_line = false;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if let Some(event) = self.dispatch() {
                events.push(event);
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                let added = value.len() + usize::from(self.has_data);
                if self.data.len() + added > self.max_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_bytes,
                    });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            b"id" if !value.contains('\0') => {
                self.last_id = (!value.is_empty()).then(|| value.into_owned());
            }
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok().map(Duration::from_millis);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
        })
    }

    /// Ends the stream. Returns the event it was in the middle of, if any (data lines not yet
    /// closed by a blank line, including an unterminated last line), so the caller can decide:
    /// the spec drops it, but a server that omits the final blank line is common, and a cut
    /// connection is worth reporting. `None` when the stream ended on an event boundary.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.failed.is_some() {
            return None;
        }
        let line = std::mem::take(&mut self.line);
        let mut ignored = Vec::new();
        if !line.is_empty() && self.take_line(&line, &mut ignored).is_err() {
            return None;
        }
        self.after_cr = false;
        self.dispatch()
    }
}

// ---------------------------------------------------------------------------------------------
// Events to items
// ---------------------------------------------------------------------------------------------

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
        let body = match error {
            Value::String(message) => ApiErrorBody {
                message,
                ..ApiErrorBody::default()
            },
            other => serde_json::from_value(other.clone()).unwrap_or_else(|_| ApiErrorBody {
                message: other.to_string(),
                ..ApiErrorBody::default()
            }),
        };
        return Ok(StreamItem::Error(body));
    }
    Ok(StreamItem::Chunk(chunk))
}

// ---------------------------------------------------------------------------------------------
// Chunks to a completion
// ---------------------------------------------------------------------------------------------

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
    /// [`StreamAssembler::finish_complete`] and [`ChatStream::finish`] do).
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

// ---------------------------------------------------------------------------------------------
// All three together
// ---------------------------------------------------------------------------------------------

/// Decoder, parser and assembler in one: push bytes, get the chunks they complete (already
/// folded in), then [`ChatStream::finish`].
#[derive(Debug, Clone, Default)]
pub struct ChatStream {
    decoder: SseDecoder,
    assembler: StreamAssembler,
}

impl ChatStream {
    /// A stream with the default line bound ([`DEFAULT_MAX_LINE_BYTES`]).
    pub fn new() -> ChatStream {
        ChatStream::default()
    }

    /// A stream bounding lines and events to `max_bytes`.
    pub fn with_max_line_bytes(max_bytes: usize) -> ChatStream {
        ChatStream {
            decoder: SseDecoder::with_max_line_bytes(max_bytes),
            assembler: StreamAssembler::new(),
        }
    }

    /// Feeds bytes; returns the chunks they complete. A mid-stream error event, a malformed
    /// event or an oversized line is an error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<ChatCompletionChunk>, SseError> {
        let mut chunks = Vec::new();
        for event in self.decoder.push(bytes)? {
            self.take_event(&event, &mut chunks)?;
        }
        Ok(chunks)
    }

    fn take_event(
        &mut self,
        event: &SseEvent,
        chunks: &mut Vec<ChatCompletionChunk>,
    ) -> Result<(), SseError> {
        match parse_stream_data(&event.data)? {
            StreamItem::Chunk(chunk) => {
                self.assembler.push(&chunk);
                chunks.push(chunk);
            }
            StreamItem::Done => self.assembler.push_done(),
            StreamItem::Error(error) => return Err(SseError::Api(error)),
        }
        Ok(())
    }

    /// True once `[DONE]` has been seen.
    pub fn saw_done(&self) -> bool {
        self.assembler.saw_done()
    }

    /// Deltas with a payload so far (see [`StreamAssembler::delta_count`]).
    pub fn delta_count(&self) -> u64 {
        self.assembler.delta_count()
    }

    /// Ends the stream: a trailing event without its blank line is still read (a `[DONE]`
    /// that lost its final newline counts), then the completion is checked as in
    /// [`StreamAssembler::finish`].
    pub fn finish(mut self) -> Result<ChatCompletion, SseError> {
        if let Some(event) = self.decoder.finish() {
            let mut ignored = Vec::new();
            match self.take_event(&event, &mut ignored) {
                Ok(()) => {}
                // A cut in the middle of a chunk: report the cut, not the broken JSON.
                Err(SseError::InvalidJson { .. }) if !self.assembler.saw_done() => {
                    return Err(SseError::MissingDone {
                        deltas: self.assembler.delta_count(),
                    });
                }
                Err(error) => return Err(error),
            }
        }
        self.assembler.finish_complete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn decode_all(decoder: &mut SseDecoder, parts: &[&[u8]]) -> Vec<SseEvent> {
        parts
            .iter()
            .flat_map(|part| decoder.push(part).unwrap())
            .collect()
    }

    fn data_of(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn line_endings_comments_and_fields() {
        let mut decoder = SseDecoder::new();
        let events = decode_all(
            &mut decoder,
            &[b"\xEF\xBB\xBF: comment\nevent: delta\rid: 7\r\ndata:no-space\ndata:  two spaces\n\n",
              b"data\n\nretry: 1500\nid\ndata: x\n\n"],
        );
        assert_eq!(
            events,
            [
                SseEvent {
                    event: Some("delta".into()),
                    data: "no-space\n two spaces".into(),
                    id: Some("7".into()),
                },
                SseEvent {
                    event: None,
                    data: String::new(),
                    id: Some("7".into()),
                },
                SseEvent {
                    event: None,
                    data: "x".into(),
                    id: None,
                },
            ]
        );
        assert_eq!(decoder.retry(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        let mut decoder = SseDecoder::new();
        assert!(decode_all(&mut decoder, &[b"\n\n: ping\n\nevent: x\n\n"]).is_empty());
        // The event type was reset by the blank line: the next event has none.
        let events = decode_all(&mut decoder, &[b"data: y\n\n"]);
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn cr_at_the_end_of_one_push_and_lf_at_the_start_of_the_next() {
        let mut decoder = SseDecoder::new();
        let events = decode_all(&mut decoder, &[b"data: a\r", b"\ndata: b\r", b"\r"]);
        assert_eq!(data_of(&events), ["a\nb"]);
        assert_eq!(decoder.finish(), None);
    }

    #[test]
    fn finish_reports_a_trailing_partial_event() {
        let mut decoder = SseDecoder::new();
        assert!(decode_all(&mut decoder, &[b"data: [DONE]"]).is_empty());
        assert_eq!(decoder.finish().unwrap().data, "[DONE]");

        let mut decoder = SseDecoder::new();
        decode_all(&mut decoder, &[b"data: {\"a\":\ndata: 1}\n"]);
        assert_eq!(decoder.finish().unwrap().data, "{\"a\":\n1}");
        assert_eq!(decoder.finish(), None);
    }

    #[test]
    fn long_lines_and_events_are_bounded() {
        let mut decoder = SseDecoder::with_max_line_bytes(16);
        assert!(decoder.push(b"data: 0123456789").unwrap().is_empty());
        let error = decoder.push(b"X").unwrap_err();
        assert_eq!(error, SseError::LineTooLong { limit: 16 });
        assert_eq!(decoder.push(b"\n\n").unwrap_err(), error, "stays failed");
        assert!(error.to_string().contains("with_max_line_bytes"));

        let mut decoder = SseDecoder::with_max_line_bytes(16);
        let error = decoder
            .push(b"data: 01234567\ndata: 01234567\n")
            .unwrap_err();
        assert_eq!(error, SseError::EventTooLarge { limit: 16 });

        // A line exactly at the bound is fine, in one piece or many.
        let mut decoder = SseDecoder::with_max_line_bytes(16);
        let events = decode_all(&mut decoder, &[b"data: 01234", b"56789\n\n"]);
        assert_eq!(data_of(&events), ["0123456789"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut decoder = SseDecoder::new();
        let events = decode_all(&mut decoder, &[b"data: a\xFFb\n\n"]);
        assert_eq!(data_of(&events), ["a\u{FFFD}b"]);
    }

    fn line_end() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]
    }

    fn event_text() -> impl Strategy<Value = (Vec<String>, String)> {
        // Data lines (no line breaks inside), rendered with random line endings and comments.
        // The blank line repeats the last line's ending ("\r" then "\n" would be one ending).
        (
            prop::collection::vec("[^\r\n]{0,12}", 1..4),
            prop::collection::vec(line_end(), 4),
            any::<bool>(),
        )
            .prop_map(|(lines, ends, comment)| {
                let mut text = String::new();
                if comment {
                    text.push_str(": keep-alive");
                    text.push_str(ends[3]);
                }
                for (i, line) in lines.iter().enumerate() {
                    text.push_str("data: ");
                    text.push_str(line);
                    text.push_str(ends[i]);
                }
                text.push_str(ends[lines.len() - 1]);
                (lines, text)
            })
    }

    proptest! {
        // A fixed seed: the same cases on every run, so a red CI always means a real change.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_2026),
            ..ProptestConfig::default()
        })]
        #[test]
        fn any_cut_gives_the_same_events(
            events in prop::collection::vec(event_text(), 1..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let text: String = events.iter().map(|(_, t)| t.as_str()).collect();
            let bytes = text.as_bytes();
            let expected: Vec<String> = events.iter().map(|(lines, _)| lines.join("\n")).collect();

            let mut whole = SseDecoder::new();
            let got_whole: Vec<String> = whole.push(bytes).unwrap().into_iter().map(|e| e.data).collect();
            prop_assert_eq!(&got_whole, &expected);

            let mut positions: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            positions.sort_unstable();
            let mut decoder = SseDecoder::new();
            let mut got = Vec::new();
            let mut start = 0;
            for position in positions.into_iter().chain([bytes.len()]) {
                got.extend(decoder.push(&bytes[start..position]).unwrap().into_iter().map(|e| e.data));
                start = position;
            }
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(decoder.finish(), None);

            let mut bytewise = SseDecoder::new();
            let mut got_bytewise = Vec::new();
            for byte in bytes {
                got_bytewise.extend(bytewise.push(std::slice::from_ref(byte)).unwrap().into_iter().map(|e| e.data));
            }
            prop_assert_eq!(&got_bytewise, &expected);
        }
    }

    /// A stream as Azure sends it: prompt filter chunk, role chunk, content, finish, usage.
    const AZURE_STREAM: &str = concat!(
        "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",",
        "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}}}]}\r\n\r\n",
        "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"\",\"refusal\":null,\"role\":\"assistant\"},",
        "\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1732500000,\"id\":\"chatcmpl-X\",",
        "\"model\":\"gpt-4o-2024-11-20\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_1\",\"usage\":null}\r\n\r\n",
        "data: {\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}},\"delta\":{\"content\":\"Back\"},",
        "\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1732500000,\"id\":\"chatcmpl-X\",",
        "\"model\":\"gpt-4o-2024-11-20\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_1\",\"usage\":null}\r\n\r\n",
        "data: {\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}},\"delta\":{\"content\":\"off ✓\"},",
        "\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1732500000,\"id\":\"chatcmpl-X\",",
        "\"model\":\"gpt-4o-2024-11-20\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_1\",\"usage\":null}\r\n\r\n",
        "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{},\"finish_reason\":\"stop\",\"index\":0,\"logprobs\":null}],",
        "\"created\":1732500000,\"id\":\"chatcmpl-X\",\"model\":\"gpt-4o-2024-11-20\",\"object\":\"chat.completion.chunk\",",
        "\"system_fingerprint\":\"fp_1\",\"usage\":null}\r\n\r\n",
        "data: {\"choices\":[],\"created\":1732500000,\"id\":\"chatcmpl-X\",\"model\":\"gpt-4o-2024-11-20\",",
        "\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_1\",",
        "\"usage\":{\"completion_tokens\":3,\"completion_tokens_details\":{\"reasoning_tokens\":0},\"prompt_tokens\":20,\"total_tokens\":23}}\r\n\r\n",
        "data: [DONE]\r\n\r\n",
    );

    fn expected_azure_completion() -> ChatCompletion {
        serde_json::from_value(json!({
            "id": "chatcmpl-X",
            "object": "chat.completion",
            "created": 1_732_500_000,
            "model": "gpt-4o-2024-11-20",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Backoff ✓", "refusal": null},
                "finish_reason": "stop",
                "logprobs": null,
                "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}
            }],
            "usage": {"completion_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 0},
                      "prompt_tokens": 20, "total_tokens": 23},
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}],
            "system_fingerprint": "fp_1"
        }))
        .unwrap()
    }

    #[test]
    fn azure_stream_assembles_like_the_non_streamed_reply() {
        let mut stream = ChatStream::new();
        let chunks = stream.push(AZURE_STREAM.as_bytes()).unwrap();
        assert_eq!(chunks.len(), 6);
        assert_eq!(stream.delta_count(), 2);
        assert!(stream.saw_done());
        assert_eq!(stream.finish().unwrap(), expected_azure_completion());
    }

    #[test]
    fn azure_stream_split_at_every_byte_assembles_the_same() {
        let mut stream = ChatStream::new();
        let mut texts = String::new();
        for byte in AZURE_STREAM.as_bytes() {
            for chunk in stream.push(std::slice::from_ref(byte)).unwrap() {
                texts.push_str(chunk.text().unwrap_or_default());
            }
        }
        assert_eq!(texts, "Backoff ✓");
        assert_eq!(stream.finish().unwrap(), expected_azure_completion());
    }

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
    fn mid_stream_error_is_reported_with_its_code() {
        let mut stream = ChatStream::new();
        let body = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"error\":{\"code\":\"server_error\",\"message\":\"The server had an error\"}}\n\n",
        );
        let error = stream.push(body.as_bytes()).unwrap_err();
        let SseError::Api(body) = &error else {
            panic!("expected Api, got {error:?}");
        };
        assert_eq!(body.code.as_deref(), Some("server_error"));
        assert_eq!(
            error.to_string(),
            "the service reported an error mid-stream: server_error: The server had an error"
        );
        assert_eq!(
            parse_stream_data(r#"{"error": "overloaded"}"#).unwrap(),
            StreamItem::Error(ApiErrorBody {
                message: "overloaded".into(),
                ..Default::default()
            })
        );
    }

    #[test]
    fn a_cut_stream_says_so() {
        let whole = AZURE_STREAM.as_bytes();
        // Cut in the middle of the third chunk's JSON.
        let cut = AZURE_STREAM.find("off ✓").unwrap();
        let mut stream = ChatStream::new();
        stream.push(&whole[..cut]).unwrap();
        let error = stream.finish().unwrap_err();
        assert_eq!(error, SseError::MissingDone { deltas: 1 });
        assert!(
            error
                .to_string()
                .contains("ended before `data: [DONE]` after 1 deltas")
        );

        // Cut right before [DONE]'s blank line: still complete.
        let mut stream = ChatStream::new();
        stream.push(&whole[..whole.len() - 2]).unwrap();
        assert_eq!(stream.finish().unwrap(), expected_azure_completion());

        // [DONE] with no choices at all.
        let mut stream = ChatStream::new();
        stream
            .push(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n")
            .unwrap();
        assert_eq!(stream.finish().unwrap_err(), SseError::NoChoices);
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
