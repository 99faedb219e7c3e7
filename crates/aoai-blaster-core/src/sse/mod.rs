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

/// Hostile streams: arbitrary bytes cut anywhere, and chat chunks with hostile fields.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// `bytes` cut at `cuts` (indexes into it, in any order).
    fn pieces<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut positions: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        positions.sort_unstable();
        let mut out = Vec::new();
        let mut start = 0;
        for position in positions.into_iter().chain([bytes.len()]) {
            out.push(&bytes[start..position]);
            start = position;
        }
        out
    }

    /// Bytes that look like an event stream more often than random bytes do.
    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data: ".to_vec()),
            Just(b"data:".to_vec()),
            Just(b"event: x".to_vec()),
            Just(b"id: 1".to_vec()),
            Just(b"retry: 99999999999999999999".to_vec()),
            Just(b": ping".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just(b"[DONE]".to_vec()),
            Just(br#"{"choices":[{"index":0,"delta":{"content":"x"}}]}"#.to_vec()),
            Just(br#"{"error":{"message":"boom"}}"#.to_vec()),
            prop::collection::vec(any::<u8>(), 0..12),
        ];
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat()),
        ]
    }

    /// The outcome of a whole decode: the events, or the error that stopped it.
    fn decode(max: usize, parts: &[&[u8]]) -> (Vec<SseEvent>, Option<SseError>, Option<SseEvent>) {
        let mut decoder = SseDecoder::with_max_line_bytes(max);
        let mut events = Vec::new();
        for part in parts {
            match decoder.push(part) {
                Ok(more) => events.extend(more),
                Err(error) => {
                    // Failed for good: the next push says the same.
                    assert_eq!(decoder.push(b"\n\n").unwrap_err(), error);
                    return (events, Some(error), decoder.finish());
                }
            }
        }
        (events, None, decoder.finish())
    }

    /// A chunk with hostile fields: huge indexes, empty and odd roles, tool-call fragments
    /// out of order, nulls, extra nested fields, usage of any size.
    fn chunk() -> impl Strategy<Value = Value> {
        let text = prop_oneof![".{0,8}", Just(String::new())];
        let index = prop_oneof![0u32..3, Just(u32::MAX)];
        let tool_call = (
            index.clone(),
            prop::option::of(text.clone()),
            prop::option::of(text.clone()),
        )
            .prop_map(|(index, name, arguments)| {
                json!({"index": index, "id": "call", "type": "function",
                       "function": {"name": name, "arguments": arguments}})
            });
        let delta = (
            prop::option::of(prop_oneof![Just("assistant".to_owned()), text.clone()]),
            prop::option::of(text.clone()),
            prop::option::of(prop::collection::vec(tool_call, 0..3)),
            any::<bool>(),
        )
            .prop_map(|(role, content, tool_calls, extra)| {
                let mut delta = json!({"role": role, "content": content, "tool_calls": tool_calls});
                if extra {
                    delta["refusal"] = json!("no");
                    delta["logprobs"] = json!({"content": [{"token": "x", "logprob": -1.0}]});
                }
                delta
            });
        let choice = (index, delta, prop::option::of(text.clone())).prop_map(
            |(index, delta, finish_reason)| {
                json!({"index": index, "delta": delta, "finish_reason": finish_reason,
                       "logprobs": {"content": [1, 2]}, "nested": {"a": {"b": null}}})
            },
        );
        (
            prop::collection::vec(choice, 0..3),
            prop::option::of((any::<u64>(), any::<u64>())),
            text,
            any::<u64>(),
        )
            .prop_map(|(choices, usage, id, created)| {
                let mut chunk = json!({"id": id, "created": created, "model": "m",
                                       "choices": choices, "obfuscation": "x"});
                if let Some((prompt, completion)) = usage {
                    chunk["usage"] = json!({"prompt_tokens": prompt,
                                            "completion_tokens": completion,
                                            "total_tokens": prompt.wrapping_add(completion)});
                }
                chunk
            })
    }

    /// Each choice's content, concatenated in order, by index.
    fn expected_text(chunks: &[Value]) -> std::collections::BTreeMap<u64, String> {
        let mut text = std::collections::BTreeMap::new();
        for choice in chunks.iter().flat_map(|c| c["choices"].as_array().unwrap()) {
            let entry: &mut String = text.entry(choice["index"].as_u64().unwrap()).or_default();
            if let Some(content) = choice["delta"]["content"].as_str() {
                entry.push_str(content);
            }
        }
        text
    }

    proptest! {
        #![proptest_config(aoai_testkit::fuzz_config())]

        /// Any bytes, cut anywhere: the decoder gives the same events, or fails with the same
        /// named error, as for the whole; no event holds more data than the bound.
        #[test]
        fn decoder_takes_any_bytes_cut_anywhere(
            bytes in stream_bytes(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            max in prop_oneof![1usize..64, Just(DEFAULT_MAX_LINE_BYTES)],
        ) {
            let whole = decode(max, &[&bytes]);
            let cut = decode(max, &pieces(&bytes, &cuts));
            prop_assert_eq!(&whole.1, &cut.1);
            if whole.1.is_none() {
                prop_assert_eq!(&whole, &cut);
            }
            for event in whole.0.iter().chain(&cut.0) {
                prop_assert!(event.data.len() <= max, "{} > {max}", event.data.len());
            }
        }

        /// Any bytes through the whole chain: chunks or a named error, never a panic, and
        /// `finish` gives a completion or a named error.
        #[test]
        fn chat_stream_takes_any_bytes(
            bytes in stream_bytes(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            max in prop_oneof![1usize..64, Just(DEFAULT_MAX_LINE_BYTES)],
        ) {
            let mut stream = ChatStream::with_max_line_bytes(max);
            let mut failed = false;
            for piece in pieces(&bytes, &cuts) {
                if let Err(error) = stream.push(piece) {
                    prop_assert!(!error.to_string().is_empty());
                    failed = true;
                    break;
                }
            }
            if !failed {
                let finished = stream.finish();
                if let Err(error) = &finished {
                    prop_assert!(!error.to_string().is_empty());
                }
            }
        }

        /// Hostile but well-formed chunks, cut anywhere: with `[DONE]` and a choice the stream
        /// assembles, each choice's text the concatenation of its deltas; without `[DONE]` it
        /// reports the cut.
        #[test]
        fn hostile_chunks_assemble_or_fail_by_name(
            chunks in prop::collection::vec(chunk(), 0..6),
            done in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut text = String::new();
            for chunk in &chunks {
                text.push_str(&format!("data: {chunk}\n\n"));
            }
            if done {
                text.push_str("data: [DONE]\n\n");
            }
            let mut stream = ChatStream::new();
            for piece in pieces(text.as_bytes(), &cuts) {
                stream.push(piece).unwrap();
            }
            let expected = expected_text(&chunks);
            match stream.finish() {
                Ok(completion) => {
                    prop_assert!(done);
                    let got: std::collections::BTreeMap<u64, String> = completion
                        .choices
                        .iter()
                        .map(|c| (u64::from(c.index), c.message.content.clone().unwrap_or_default()))
                        .collect();
                    prop_assert_eq!(got, expected);
                }
                Err(SseError::MissingDone { .. }) => prop_assert!(!done),
                Err(SseError::NoChoices) => prop_assert!(expected.is_empty()),
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }
    }
}
