//! How one stream event is folded into a call's result: a chat chunk (its deltas forwarded),
//! `[DONE]`, a Responses event, or an error event.

use std::sync::Arc;

use aoai_blaster_core::classify::AttemptOutcome;
use aoai_blaster_core::operation::Reply;
use aoai_blaster_core::responses::{ResponsesEvent, delta_chunk, parse_responses_event};
use aoai_blaster_core::sse::{SseEvent, StreamAssembler, StreamItem, parse_stream_data};

use super::{CallResult, HttpCall, stream_cut};
use crate::messages::StreamDelta;

impl HttpCall {
    /// Folds one stream event in: a chunk (its deltas forwarded), `[DONE]` (the completion
    /// assembled) or an error event. `Some` when the stream is over.
    pub(super) fn take_event(
        &self,
        data: &str,
        assembler: &mut StreamAssembler,
        result: &mut CallResult,
    ) -> Option<AttemptOutcome> {
        match parse_stream_data(data) {
            Ok(StreamItem::Chunk(chunk)) => {
                let chunk = Arc::new(chunk);
                assembler.push(&chunk);
                if let Some(recipient) = &self.deltas {
                    for choice in &chunk.choices {
                        let content = choice.delta.content.clone().unwrap_or_default();
                        if content.is_empty() && choice.delta.tool_calls.is_none() {
                            continue;
                        }
                        result.deltas_delivered += 1;
                        recipient.do_send(StreamDelta {
                            label: self.label.clone(),
                            choice: choice.index,
                            content,
                            chunk: chunk.clone(),
                            event: None,
                        });
                    }
                }
                None
            }
            Ok(StreamItem::Done) => Some(match std::mem::take(assembler).finish() {
                Ok(completion) => {
                    result.reply = Some(Reply::Chat(completion));
                    AttemptOutcome::Success
                }
                Err(error) => stream_cut(error.to_string()),
            }),
            Ok(StreamItem::Error(error)) => {
                Some(stream_cut(format!("error event in stream: {error}")))
            }
            Err(error) => Some(stream_cut(format!("unreadable stream event: {error}"))),
        }
    }

    /// Folds one Responses stream event in: a text delta (forwarded to the caller's recipient
    /// as a one-choice chunk), the completed response, or a failure. `Some` when the stream is
    /// over. With [`Job::raw_reply`](crate::Job::raw_reply) every event but a failure's also
    /// goes to the recipient as it came ([`StreamDelta::event`]), for a caller that passes the
    /// stream on.
    pub(super) fn take_responses_event(
        &self,
        event: SseEvent,
        result: &mut CallResult,
    ) -> Option<AttemptOutcome> {
        match parse_responses_event(event.event.as_deref(), &event.data) {
            Ok(ResponsesEvent::TextDelta {
                output_index,
                item_id,
                delta,
            }) => {
                if let Some(recipient) = &self.deltas
                    && (!delta.is_empty() || self.raw_reply)
                {
                    result.deltas_delivered += 1;
                    let chunk = Arc::new(delta_chunk(output_index, item_id, &delta));
                    recipient.do_send(StreamDelta {
                        label: self.label.clone(),
                        choice: output_index,
                        content: delta,
                        chunk,
                        event: self.raw_reply.then(|| Arc::new(event)),
                    });
                }
                None
            }
            Ok(ResponsesEvent::Completed(reply)) => {
                self.forward_raw(event, result);
                result.reply = Some(Reply::Responses(reply));
                Some(AttemptOutcome::Success)
            }
            Ok(ResponsesEvent::Failed(error)) => {
                Some(stream_cut(format!("error event in stream: {error}")))
            }
            Ok(ResponsesEvent::Other) => {
                self.forward_raw(event, result);
                None
            }
            Err(error) => Some(stream_cut(format!("unreadable stream event: {error}"))),
        }
    }

    /// Passes an event without text on as it came, when the job asked for raw events.
    fn forward_raw(&self, event: SseEvent, result: &mut CallResult) {
        if !self.raw_reply {
            return;
        }
        if let Some(recipient) = &self.deltas {
            result.deltas_delivered += 1;
            recipient.do_send(StreamDelta {
                label: self.label.clone(),
                choice: 0,
                content: String::new(),
                chunk: Arc::new(delta_chunk(0, String::new(), "")),
                event: Some(Arc::new(event)),
            });
        }
    }
}
