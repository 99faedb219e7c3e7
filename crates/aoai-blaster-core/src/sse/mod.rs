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
//!
//! One file per role: `decoder` (bytes to events, the generic event-stream rules) and
//! `assembler` (events to chat items, items to a completion); [`SseError`] and [`ChatStream`]
//! live here.

use crate::chat::{ApiErrorBody, ChatCompletion, ChatCompletionChunk};

mod assembler;
mod decoder;

pub use assembler::{StreamAssembler, StreamItem, parse_stream_data};
pub use decoder::{DEFAULT_MAX_LINE_BYTES, SseDecoder, SseEvent};

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
    use serde_json::json;

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
}
