//! The successful replies of embeddings and responses requests (chat's is [`super::success`]):
//! the same admission, headers, latency and faults, their own bodies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Admission, Body, Decision, success_headers};
use crate::content::{ReplyText, completion_length, messages_digest};
use crate::embeddings::{EmbeddingsRequest, embeddings_body};
use crate::faults::Fault;
use crate::reply::{ReplyMeta, Usage};
use crate::responses::{ResponseParts, ResponsesRequest, plan_responses_stream};
use crate::stream::{Pacing, StreamEnd};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A plain body, torn halfway by a `drop` fault.
fn plain(body: bytes::Bytes, fault: Option<Fault>) -> Body {
    if fault == Some(Fault::Drop) {
        let sent = body.len() / 2;
        Body::Torn { body, sent }
    } else {
        Body::Full(body)
    }
}

/// One vector per input, after the time to first token.
pub(super) fn embeddings_success(
    admission: &Admission<'_>,
    request: &EmbeddingsRequest,
    input_tokens: u64,
    fault: Option<Fault>,
) -> Decision {
    let spec = &admission.deployment.spec;
    let counters = &admission.deployment.counters;
    let usage = Usage::new(input_tokens, 0);
    counters.used(usage.total_tokens);
    counters.status(200);
    let body = embeddings_body(request, spec.model_name(), spec.embedding_dimensions, usage);
    Decision {
        status: 200,
        headers: success_headers(false, admission),
        body: plain(body, fault),
        delay: Duration::from_millis(spec.latency.ttft_ms) + admission.jitter,
        in_flight: None,
    }
}

/// The response (plain, or streamed in Azure's framing), its text opening with the input's
/// digest.
pub(super) fn responses_success(
    admission: &Admission<'_>,
    request: &ResponsesRequest,
    input_tokens: u64,
    fault: Option<Fault>,
) -> Decision {
    let spec = &admission.deployment.spec;
    let counters = &admission.deployment.counters;
    let (tokens, finish_reason) = completion_length(spec.reply_tokens, request.max_output_tokens);
    let text = ReplyText::new(&messages_digest(&request.input), 0, tokens);
    let usage = Usage::new(input_tokens, tokens);
    counters.used(usage.total_tokens);
    counters.status(200);
    let meta = ReplyMeta {
        id: format!("resp_sim{:012x}", admission.number),
        created: now_secs(),
        model: spec.model_name().to_owned(),
    };
    let parts = ResponseParts {
        meta: &meta,
        text: &text,
        cut: finish_reason == "length",
        usage,
    };
    let first_token = Duration::from_millis(spec.latency.ttft_ms) + admission.jitter;
    let per_token = Duration::from_millis(spec.latency.per_token_ms);
    let (body, delay) = if request.stream {
        let pacing = Pacing {
            first_token,
            per_token,
        };
        let mut plan = plan_responses_stream(&parts, pacing, fault);
        if fault == Some(Fault::StreamStall) {
            plan.end = StreamEnd::StallThenAbort(Duration::from_secs(spec.faults.hang_secs));
        }
        (Body::Stream(plan), Duration::ZERO)
    } else {
        let delay = first_token + per_token * u32::try_from(tokens).unwrap_or(u32::MAX);
        (plain(parts.body(), fault), delay)
    };
    Decision {
        status: 200,
        headers: success_headers(request.stream, admission),
        body,
        delay,
        in_flight: None,
    }
}
