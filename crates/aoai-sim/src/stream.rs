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
}

/// A streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamPlan {
    pub(crate) events: Vec<StreamEvent>,
    pub(crate) end: StreamEnd,
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
/// pieces (choices interleaved, one step per token, paced), a finish delta per choice, the usage
/// event when asked, `[DONE]`. A stream fault cuts it short.
pub(crate) fn plan_stream(
    meta: &ReplyMeta,
    choices: &[ChoiceText],
    pacing: Pacing,
    usage: Option<Usage>,
    fault: Option<Fault>,
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
            StreamPlan {
                events,
                end: StreamEnd::Abort,
            }
        }
        Some(Fault::StreamCut | Fault::StreamError) => {
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
            StreamPlan { events, end }
        }
        _ => {
            let mut events = head;
            events.append(&mut content);
            events.extend(choices.iter().enumerate().map(|(index, choice)| {
                now(delta_event(
                    meta,
                    index,
                    Delta::Finish(choice.finish_reason),
                ))
            }));
            events.extend(usage.map(|usage| now(usage_event(meta, usage))));
            events.push(now(Bytes::from_static(DONE_EVENT)));
            StreamPlan {
                events,
                end: StreamEnd::Close,
            }
        }
    }
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
        let plan = plan_stream(&meta(), &choices(), PACING, Some(Usage::new(5, 5)), None);
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
        let plan = plan_stream(&meta(), &choices(), Pacing::default(), None, None);
        assert_eq!(plan.events.len(), 11);
        assert!(plan.events.iter().all(|e| e.delay.is_zero()));
        assert!(!plan.events.iter().any(|e| payload(e).contains("usage")));
    }

    #[test]
    fn cut_stops_halfway_and_aborts() {
        let plan = plan_stream(&meta(), &choices(), PACING, None, Some(Fault::StreamCut));
        assert_eq!(plan.end, StreamEnd::Abort);
        assert_eq!(plan.events.len(), 3 + 3);
        assert!(!plan.events.iter().any(|e| payload(e) == "[DONE]"));
    }

    #[test]
    fn error_event_ends_the_stream() {
        let plan = plan_stream(&meta(), &choices(), PACING, None, Some(Fault::StreamError));
        assert_eq!(plan.end, StreamEnd::Close);
        let last = plan.events.last().map(json).unwrap_or(Value::Null);
        assert_eq!(last["error"]["code"], "server_error");
        assert!(!plan.events.iter().any(|e| payload(e) == "[DONE]"));
    }

    #[test]
    fn drop_tears_an_event() {
        let plan = plan_stream(&meta(), &choices(), PACING, None, Some(Fault::Drop));
        assert_eq!(plan.end, StreamEnd::Abort);
        assert_eq!(plan.events.len(), 2);
        assert!(!plan.events[1].data.ends_with(b"\n\n"));
    }
}
