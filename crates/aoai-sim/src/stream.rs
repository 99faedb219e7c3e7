//! The plan of a streamed reply: which server-sent events, after which delays, and how the
//! stream ends. Pure; the server turns it into a body.

use std::time::Duration;

use bytes::Bytes;

use crate::azure_error::stream_error_json;
use crate::faults::Fault;
use crate::reply::{
    ChoiceText, DONE_EVENT, Delta, ReplyMeta, Usage, delta_event, prompt_filter_event, sse_event,
    usage_event,
};

/// One event, sent `delay` after the previous one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamEvent {
    pub(crate) delay: Duration,
    pub(crate) data: Bytes,
}

/// How the body ends after its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The body ends normally.
    Close,
    /// The connection is aborted.
    Abort,
    /// Nothing more is sent for this long, then the connection is aborted.
    StallThenAbort(Duration),
}

/// A streamed reply (or a plain body sent in pieces).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamPlan {
    pub(crate) events: Vec<StreamEvent>,
    /// One piece repeated at one place: a trickle or padding (generated lazily, so a 200 MB
    /// or endless reply holds no more memory than one piece).
    pub(crate) filler: Option<Filler>,
    pub(crate) end: StreamEnd,
}

/// A piece sent `count` times (`None`: without end) before `events[at]` (`at == events.len()`:
/// after the last event).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filler {
    pub(crate) at: usize,
    pub(crate) event: StreamEvent,
    pub(crate) count: Option<u64>,
}

impl StreamPlan {
    /// Events sent in order, then `end`.
    pub(crate) fn new(events: Vec<StreamEvent>, end: StreamEnd) -> Self {
        StreamPlan {
            events,
            filler: None,
            end,
        }
    }

    /// Every byte the plan sends, when it ends.
    pub(crate) fn total_bytes(&self) -> Option<u64> {
        let events: u64 = self.events.iter().map(|e| e.data.len() as u64).sum();
        match &self.filler {
            None => Some(events),
            Some(filler) => filler.count.map(|count| {
                events.saturating_add(count.saturating_mul(filler.event.data.len() as u64))
            }),
        }
    }

    /// The events one after the other, the filler's pieces in their place.
    pub(crate) fn into_cursor(self) -> PlanCursor {
        PlanCursor {
            events: self.events.into_iter(),
            position: 0,
            filler: self.filler,
            end: self.end,
        }
    }
}

/// Walks a [`StreamPlan`].
#[derive(Debug)]
pub(crate) struct PlanCursor {
    events: std::vec::IntoIter<StreamEvent>,
    position: usize,
    filler: Option<Filler>,
    pub(crate) end: StreamEnd,
}

impl PlanCursor {
    /// The next event to send, `None` once every event is sent.
    pub(crate) fn next_event(&mut self) -> Option<StreamEvent> {
        if let Some(filler) = &mut self.filler
            && filler.at == self.position
        {
            match &mut filler.count {
                None => return Some(filler.event.clone()),
                Some(0) => {}
                Some(left) => {
                    *left -= 1;
                    return Some(filler.event.clone());
                }
            }
        }
        let event = self.events.next()?;
        self.position += 1;
        Some(event)
    }
}

/// What a successful stream carries beyond its content.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Extra {
    /// Nothing.
    None,
    /// After the content, `piece` every `every`, `count` times (`None`: forever).
    Trickle {
        piece: Bytes,
        every: Duration,
        count: Option<u64>,
    },
    /// After the content, copies of `piece` until the stream has at least `bytes` bytes.
    Pad { piece: Bytes, bytes: u64 },
}

/// Delays of a stream: before the first content piece, and between content steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pacing {
    pub(crate) first_token: Duration,
    pub(crate) per_token: Duration,
}

fn now(data: Bytes) -> StreamEvent {
    StreamEvent {
        delay: Duration::ZERO,
        data,
    }
}

/// Plan the events: prompt filter results (`choices: []`), a role delta per choice, the content
/// pieces (choices interleaved, one step per token, paced), the `extra` pieces, a finish delta
/// per choice, the usage event when asked, `[DONE]`. A stream fault cuts it short (no extra).
pub(crate) fn plan_stream(
    meta: &ReplyMeta,
    choices: &[ChoiceText],
    pacing: Pacing,
    usage: Option<Usage>,
    fault: Option<Fault>,
    extra: Extra,
) -> StreamPlan {
    let mut head = vec![now(prompt_filter_event())];
    head.extend((0..choices.len()).map(|index| now(delta_event(meta, index, Delta::Role))));

    let steps = choices.iter().map(|c| c.text.tokens()).max().unwrap_or(0);
    let mut content = Vec::new();
    for step in 0..steps {
        let mut delay = if step == 0 {
            pacing.first_token
        } else {
            pacing.per_token
        };
        for (index, choice) in choices.iter().enumerate() {
            if let Some(piece) = choice.text.piece(step) {
                content.push(StreamEvent {
                    delay,
                    data: delta_event(meta, index, Delta::Content(piece)),
                });
                delay = Duration::ZERO;
            }
        }
    }

    match fault {
        Some(Fault::Drop) => {
            let torn = head.get(1).map(|event| {
                let half = event.data.len() / 2;
                now(event.data.slice(..half))
            });
            let mut events: Vec<StreamEvent> = head.into_iter().take(1).collect();
            events.extend(torn);
            StreamPlan::new(events, StreamEnd::Abort)
        }
        Some(Fault::StreamCut | Fault::StreamError | Fault::StreamStall) => {
            let keep = content.len().div_ceil(2);
            content.truncate(keep);
            let mut events = head;
            events.append(&mut content);
            let end = if fault == Some(Fault::StreamError) {
                events.push(now(sse_event(&stream_error_json())));
                StreamEnd::Close
            } else {
                StreamEnd::Abort
            };
            StreamPlan::new(events, end)
        }
        _ => {
            let mut events = head;
            events.append(&mut content);
            let at = events.len();
            events.extend(choices.iter().enumerate().map(|(index, choice)| {
                now(delta_event(
                    meta,
                    index,
                    Delta::Finish(choice.finish_reason),
                ))
            }));
            events.extend(usage.map(|usage| now(usage_event(meta, usage))));
            events.push(now(Bytes::from_static(DONE_EVENT)));
            let mut plan = StreamPlan::new(events, StreamEnd::Close);
            plan.filler = filler(extra, at, plan.total_bytes().unwrap_or(0));
            plan
        }
    }
}

fn filler(extra: Extra, at: usize, planned_bytes: u64) -> Option<Filler> {
    match extra {
        Extra::None => None,
        Extra::Trickle {
            piece,
            every,
            count,
        } => Some(Filler {
            at,
            event: StreamEvent {
                delay: every,
                data: piece,
            },
            count,
        }),
        Extra::Pad { piece, bytes } => Some(Filler {
            at,
            count: Some(pieces_to_fill(bytes, planned_bytes, piece.len())),
            event: now(piece),
        }),
    }
}

/// How many pieces of `piece_len` bytes take `planned` bytes to at least `want`.
pub(crate) fn pieces_to_fill(want: u64, planned: u64, piece_len: usize) -> u64 {
    want.saturating_sub(planned)
        .div_ceil((piece_len as u64).max(1))
}

/// Send `body` after `count` pieces of `piece`, each after `every` (`None`: the pieces never
/// end, nor does the reply).
pub(crate) fn trickle_body(
    body: Bytes,
    piece: Bytes,
    every: Duration,
    count: Option<u64>,
) -> StreamPlan {
    let mut plan = StreamPlan::new(vec![now(body)], StreamEnd::Close);
    plan.filler = Some(Filler {
        at: 0,
        event: StreamEvent {
            delay: every,
            data: piece,
        },
        count,
    });
    plan
}

/// Send `body` with copies of `piece` inserted at byte `at` until it has at least `bytes`
/// bytes.
pub(crate) fn padded_body(body: Bytes, at: usize, piece: Bytes, bytes: u64) -> StreamPlan {
    let count = pieces_to_fill(bytes, body.len() as u64, piece.len());
    let at = at.min(body.len());
    let mut plan = StreamPlan::new(
        vec![now(body.slice(..at)), now(body.slice(at..))],
        StreamEnd::Close,
    );
    plan.filler = Some(Filler {
        at: 1,
        event: now(piece),
        count: Some(count),
    });
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ReplyText;
    use serde_json::Value;

    fn meta() -> ReplyMeta {
        ReplyMeta {
            id: "chatcmpl-7".to_owned(),
            created: 1,
            model: "m".to_owned(),
        }
    }

    fn choices() -> Vec<ChoiceText> {
        vec![
            ChoiceText {
                text: ReplyText::new("aa", 0, 3),
                finish_reason: "stop",
            },
            ChoiceText {
                text: ReplyText::new("aa", 1, 2),
                finish_reason: "length",
            },
        ]
    }

    fn payload(event: &StreamEvent) -> String {
        let text = String::from_utf8_lossy(&event.data).into_owned();
        text.trim_start_matches("data: ").trim_end().to_owned()
    }

    fn json(event: &StreamEvent) -> Value {
        serde_json::from_str(&payload(event)).unwrap_or(Value::Null)
    }

    const PACING: Pacing = Pacing {
        first_token: Duration::from_millis(100),
        per_token: Duration::from_millis(10),
    };

    #[test]
    fn full_stream_order_and_pacing() {
        let plan = plan_stream(
            &meta(),
            &choices(),
            PACING,
            Some(Usage::new(5, 5)),
            None,
            Extra::None,
        );
        assert_eq!(plan.end, StreamEnd::Close);
        // filter, 2 roles, 5 content pieces, 2 finishes, usage, DONE
        assert_eq!(plan.events.len(), 1 + 2 + 5 + 2 + 1 + 1);
        assert_eq!(json(&plan.events[0])["choices"], serde_json::json!([]));
        assert_eq!(
            json(&plan.events[1])["choices"][0]["delta"]["role"],
            "assistant"
        );
        assert_eq!(json(&plan.events[2])["choices"][0]["index"], 1);
        let delays: Vec<u64> = plan
            .events
            .iter()
            .map(|e| e.delay.as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 0, 100, 0, 10, 0, 10, 0, 0, 0, 0]);
        let contents: Vec<String> = plan.events[3..8]
            .iter()
            .map(|e| {
                json(e)["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        let texts = choices();
        let expected: Vec<&str> = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
            .iter()
            .filter_map(|&(choice, piece)| texts[choice].text.piece(piece))
            .collect();
        assert_eq!(contents, expected);
        assert_eq!(contents[0], "digest=aa");
        assert_eq!(
            json(&plan.events[9])["choices"][0]["finish_reason"],
            "length"
        );
        assert_eq!(json(&plan.events[10])["usage"]["total_tokens"], 10);
        assert_eq!(payload(&plan.events[11]), "[DONE]");
    }

    #[test]
    fn no_usage_event_unless_asked() {
        let plan = plan_stream(
            &meta(),
            &choices(),
            Pacing::default(),
            None,
            None,
            Extra::None,
        );
        assert_eq!(plan.events.len(), 11);
        assert!(plan.events.iter().all(|e| e.delay.is_zero()));
        assert!(!plan.events.iter().any(|e| payload(e).contains("usage")));
    }

    #[test]
    fn cut_stops_halfway_and_aborts() {
        let plan = plan_stream(
            &meta(),
            &choices(),
            PACING,
            None,
            Some(Fault::StreamCut),
            Extra::None,
        );
        assert_eq!(plan.end, StreamEnd::Abort);
        assert_eq!(plan.events.len(), 3 + 3);
        assert!(!plan.events.iter().any(|e| payload(e) == "[DONE]"));
    }

    #[test]
    fn error_event_ends_the_stream() {
        let plan = plan_stream(
            &meta(),
            &choices(),
            PACING,
            None,
            Some(Fault::StreamError),
            Extra::None,
        );
        assert_eq!(plan.end, StreamEnd::Close);
        let last = plan.events.last().map(json).unwrap_or(Value::Null);
        assert_eq!(last["error"]["code"], "server_error");
        assert!(!plan.events.iter().any(|e| payload(e) == "[DONE]"));
    }

    #[test]
    fn drop_tears_an_event() {
        let plan = plan_stream(
            &meta(),
            &choices(),
            PACING,
            None,
            Some(Fault::Drop),
            Extra::None,
        );
        assert_eq!(plan.end, StreamEnd::Abort);
        assert_eq!(plan.events.len(), 2);
        assert!(!plan.events[1].data.ends_with(b"\n\n"));
    }

    fn drain(plan: StreamPlan, limit: usize) -> Vec<StreamEvent> {
        let mut cursor = plan.into_cursor();
        std::iter::from_fn(|| cursor.next_event())
            .take(limit)
            .collect()
    }

    #[test]
    fn trickle_comes_after_the_content_and_before_the_finish() {
        let extra = Extra::Trickle {
            piece: Bytes::from_static(b": tick\n\n"),
            every: Duration::from_millis(7),
            count: Some(4),
        };
        let plan = plan_stream(&meta(), &choices(), PACING, None, None, extra);
        let base = plan.events.len();
        let events = drain(plan.clone(), 1000);
        assert_eq!(events.len(), base + 4);
        // filter, 2 roles, 5 content pieces, then the 4 ticks, then the finishes.
        assert!(
            events[8..12]
                .iter()
                .all(|e| e.data.as_ref() == b": tick\n\n")
        );
        assert!(
            events[8..12]
                .iter()
                .all(|e| e.delay == Duration::from_millis(7))
        );
        assert_eq!(payload(&events[events.len() - 1]), "[DONE]");
        let ticks = 4 * b": tick\n\n".len() as u64;
        let plain: u64 = events.iter().map(|e| e.data.len() as u64).sum();
        assert_eq!(plan.total_bytes(), Some(plain));
        assert!(plain > ticks);
    }

    #[test]
    fn endless_trickle_has_no_length() {
        let extra = Extra::Trickle {
            piece: Bytes::from_static(b": tick\n\n"),
            every: Duration::from_millis(1),
            count: None,
        };
        let plan = plan_stream(&meta(), &choices(), PACING, None, None, extra);
        assert_eq!(plan.total_bytes(), None);
        let events = drain(plan, 10_000);
        assert_eq!(events.len(), 10_000, "it goes on");
        assert!(!events.iter().any(|e| payload(e) == "[DONE]"));
    }

    #[test]
    fn padding_reaches_the_size_asked() {
        let piece = Bytes::from(vec![b'x'; 1000]);
        let extra = Extra::Pad {
            piece,
            bytes: 50_000,
        };
        let plan = plan_stream(&meta(), &choices(), PACING, None, None, extra);
        let total = plan.total_bytes().unwrap_or(0);
        assert!((50_000..51_000).contains(&total), "{total}");
        let sent: u64 = drain(plan, 1000).iter().map(|e| e.data.len() as u64).sum();
        assert_eq!(sent, total);
        // Faulty streams are not padded.
        let extra = Extra::Pad {
            piece: Bytes::from_static(b"x"),
            bytes: 50_000,
        };
        let cut = plan_stream(
            &meta(),
            &choices(),
            PACING,
            None,
            Some(Fault::StreamCut),
            extra,
        );
        assert!(cut.filler.is_none());
    }

    #[test]
    fn padded_and_trickled_bodies() {
        let body = Bytes::from_static(b"{\"content\":\"ab\"}");
        let plan = padded_body(body.clone(), 14, Bytes::from_static(b"xy"), 25);
        assert_eq!(plan.total_bytes(), Some(26));
        let text: Vec<u8> = drain(plan, 100)
            .iter()
            .flat_map(|e| e.data.to_vec())
            .collect();
        assert_eq!(text, b"{\"content\":\"abxyxyxyxyxy\"}");
        assert_eq!(pieces_to_fill(10, 20, 3), 0);
        let plan = trickle_body(
            body,
            Bytes::from_static(b" "),
            Duration::from_millis(5),
            Some(3),
        );
        let events = drain(plan, 100);
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].data.as_ref(), b" ");
        assert_eq!(events[3].data.as_ref(), b"{\"content\":\"ab\"}");
    }
}
