//! `stream: true`: the upstream deltas as server-sent events, as they arrive.
//!
//! Chat: each chunk with a delta, then the end. Responses: every upstream event as it came
//! (`event:` and `data:`, the job asks for them with `raw_reply`), `response.completed` last;
//! a failure after the first event is an `event: error` with OpenAI's error fields.
//!
//! The job's deltas go to a [`DeltaRelay`] actor, which hands each one to the reply's body.
//! The reply's head waits for the first chunk (or the job's end): a job that fails before any
//! delta gets a plain error reply with its status (a 429 with its retry hint), one that fails
//! after gets a `data: {"error": ...}` event, never a silent cut. The library retries an attempt
//! only before its first delta was delivered, so a client never sees two beginnings. The end is
//! each choice's `finish_reason`, the usage chunk when the client asked for it, `data: [DONE]`.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use actix_web::{HttpResponse, web};
use aoai_blaster::core::gateway::{GatewayError, Route};
use aoai_blaster::core::operation::Reply;
use aoai_blaster::{Job, JobError, JobResult, StreamDelta};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use crate::app::refuse;
use crate::chat::{client_gone, closing, described, job_failed, upstream_time};
use crate::disconnect::{PeerSocket, unless_gone};
use crate::state::{Permit, State};
use crate::{metrics, reply};

/// Which stream is relayed, and how it is written.
#[derive(Clone, Copy)]
pub(crate) enum StreamKind {
    /// Chat chunks; `include_usage`: the client asked for the usage chunk.
    Chat { include_usage: bool },
    /// Responses events, passed on as they came.
    Responses,
}

impl StreamKind {
    /// The label of its requests in metrics.
    fn route(self) -> &'static str {
        match self {
            StreamKind::Chat { .. } => crate::chat::ROUTE,
            StreamKind::Responses => "responses",
        }
    }
}

/// What a streamed request carries into its reply.
pub(crate) struct StreamCall {
    pub(crate) kind: StreamKind,
    pub(crate) state: web::Data<State>,
    pub(crate) route: Route,
    pub(crate) peer: Option<PeerSocket>,
    pub(crate) permit: Permit,
    pub(crate) started: Instant,
}

/// The job's answer, as `Addr::send` gives it.
type Answer = Result<Result<JobResult, JobError>, MailboxError>;

/// Receives the job's deltas and passes each on once (a chat chunk with deltas for several
/// choices comes once per choice).
struct DeltaRelay {
    chunks: Option<mpsc::UnboundedSender<StreamDelta>>,
    last: Option<StreamDelta>,
}

impl Actor for DeltaRelay {
    type Context = Context<Self>;
}

impl Handler<StreamDelta> for DeltaRelay {
    type Result = ();

    fn handle(&mut self, delta: StreamDelta, ctx: &mut Self::Context) {
        if self
            .last
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(&last.chunk, &delta.chunk))
        {
            return;
        }
        self.last = Some(delta.clone());
        let sent = self
            .chunks
            .as_ref()
            .is_some_and(|chunks| chunks.send(delta).is_ok());
        if !sent {
            // The reply is gone (the client left).
            ctx.stop();
        }
    }
}

/// Sent once the job has answered: every delta before it is in the relay's mailbox already
/// (the endpoint sends them before it reports the attempt's end), so after handling this the
/// relay closes the channel and the body knows it has them all.
#[derive(Message)]
#[rtype(result = "()")]
struct Finish;

impl Handler<Finish> for DeltaRelay {
    type Result = ();

    fn handle(&mut self, _: Finish, ctx: &mut Self::Context) {
        self.chunks = None;
        ctx.stop();
    }
}

/// Runs the job and answers with its stream (or, if it fails before a delta, its error).
pub(crate) async fn respond(call: StreamCall, job: Job) -> HttpResponse {
    let route = call.kind.route();
    let (sender, mut chunks) = mpsc::unbounded_channel();
    let relay = DeltaRelay {
        chunks: Some(sender),
        last: None,
    }
    .start();
    let job = job.with_deltas(relay.clone().recipient());
    let submitted = call.started.elapsed();
    let mut answer: Pin<Box<dyn Future<Output = Answer>>> =
        Box::pin(call.state.dispatcher.send(job));
    let first = unless_gone(call.peer.as_ref(), async {
        tokio::select! {
            biased;
            chunk = chunks.recv() => First::Chunk(chunk),
            answer = &mut answer => First::Answer(Box::new(answer)),
        }
    })
    .await;
    let first_at = Instant::now();
    let mut body = SseBody {
        chunks,
        relay,
        answer: Some(answer),
        phase: Phase::Forwarding,
        queued: VecDeque::new(),
        forwarded: BTreeSet::new(),
        kind: call.kind,
        started: call.started,
        _permit: call.permit,
    };
    let answer = match first {
        None => {
            body.relay.do_send(Finish);
            return client_gone(route, call.started);
        }
        Some(First::Chunk(chunk)) => {
            if let Some(chunk) = chunk {
                body.queue(&chunk);
            }
            None
        }
        Some(First::Answer(answer)) => Some(*answer),
    };
    match answer {
        None => {}
        Some(Err(_)) => return refuse(route, &closing(), call.started),
        Some(Ok(Err(error))) => {
            body.relay.do_send(Finish);
            let answer = job_failed(&call.state, &call.route, &error).await;
            let mut reply = reply::error(&answer);
            let upstream: Duration = error.attempts.iter().map(|a| a.elapsed).sum();
            let overhead = call.started.elapsed().saturating_sub(upstream);
            reply::overhead(&mut reply, overhead);
            metrics::answered(route, answer.status, overhead);
            return reply;
        }
        Some(Ok(Ok(result))) => {
            // Done before any delta passed the relay: its deltas (if any) are still queued.
            body.answer = None;
            body.relay.do_send(Finish);
            let mut reply = sse_reply();
            described(&mut reply, &result.endpoint, result.request_id.as_deref());
            let overhead = call
                .started
                .elapsed()
                .saturating_sub(upstream_time(result.total_time, result.queued_for));
            reply::overhead(&mut reply, overhead);
            body.phase = Phase::Draining(Some(Ok(Box::new(result))));
            return with_body(reply, body);
        }
    }
    let mut reply = sse_reply();
    // Before the job was handed over, and since its first delta arrived: the gateway's part of
    // the time to the first byte (the histogram gets the whole request's figure at its end).
    reply::overhead(&mut reply, submitted + first_at.elapsed());
    with_body(reply, body)
}

fn with_body(reply: HttpResponse, body: SseBody) -> HttpResponse {
    reply.set_body(actix_web::body::BoxBody::new(
        actix_web::body::BodyStream::new(body),
    ))
}

fn sse_reply() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("text/event-stream")))
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .finish()
}

/// What came first: a delta (`None`: the relay stopped) or the job's answer.
enum First {
    Chunk(Option<StreamDelta>),
    Answer(Box<Answer>),
}

/// Where the body is.
enum Phase {
    /// Passing chunks on while the job runs.
    Forwarding,
    /// The job answered: passing on the chunks still in the channel, then the end.
    Draining(Option<Result<Box<JobResult>, GatewayError>>),
    /// Everything is queued.
    Ended,
}

/// The reply's body: chunks as they come, then the end (or an error event).
struct SseBody {
    chunks: mpsc::UnboundedReceiver<StreamDelta>,
    relay: Addr<DeltaRelay>,
    answer: Option<Pin<Box<dyn Future<Output = Answer>>>>,
    phase: Phase,
    queued: VecDeque<Bytes>,
    /// Choices that had a delta passed on (chat).
    forwarded: BTreeSet<u32>,
    kind: StreamKind,
    started: Instant,
    /// Held until the stream ends: the request counts against the queue bound until then.
    _permit: Permit,
}

fn event(data: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(data.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// A named event (`event: NAME`, then the data), as the Responses API writes its stream.
fn named_event(name: Option<&str>, data: &[u8]) -> Bytes {
    let Some(name) = name else {
        return event(data);
    };
    let mut event = Vec::with_capacity(name.len() + data.len() + 16);
    event.extend_from_slice(b"event: ");
    event.extend_from_slice(name.as_bytes());
    event.push(b'\n');
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

impl SseBody {
    fn queue(&mut self, delta: &StreamDelta) {
        match self.kind {
            StreamKind::Chat { .. } => {
                for choice in &delta.chunk.choices {
                    self.forwarded.insert(choice.index);
                }
                if let Ok(data) = serde_json::to_vec(&*delta.chunk) {
                    self.queued.push_back(event(&data));
                }
            }
            StreamKind::Responses => {
                if let Some(upstream) = &delta.event {
                    let name = upstream.event.as_deref();
                    self.queued
                        .push_back(named_event(name, upstream.data.as_bytes()));
                }
            }
        }
    }

    /// The end of a delivered job. Chat: each choice's `finish_reason` (with its content when
    /// no delta of it was passed on), the usage chunk if asked for, `[DONE]`. Responses: the
    /// upstream's `response.completed` was the last event passed on.
    fn finish(&mut self, result: &JobResult) {
        if let (StreamKind::Chat { include_usage }, Reply::Chat(completion)) =
            (self.kind, &result.reply)
        {
            let head = |choices: serde_json::Value| {
                json!({
                    "id": completion.id,
                    "object": "chat.completion.chunk",
                    "created": completion.created,
                    "model": completion.model,
                    "choices": choices,
                })
            };
            for choice in &completion.choices {
                let delta = if self.forwarded.contains(&choice.index) {
                    json!({})
                } else {
                    json!({"role": choice.message.role, "content": choice.message.content})
                };
                let chunk = head(json!([{
                    "index": choice.index,
                    "delta": delta,
                    "finish_reason": choice.finish_reason,
                }]));
                self.queued.push_back(event(chunk.to_string().as_bytes()));
            }
            if include_usage && let Some(usage) = &completion.usage {
                let mut chunk = head(json!([]));
                chunk["usage"] = json!(usage);
                self.queued.push_back(event(chunk.to_string().as_bytes()));
            }
            self.queued
                .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        let overhead = self
            .started
            .elapsed()
            .saturating_sub(upstream_time(result.total_time, result.queued_for));
        metrics::answered(self.kind.route(), 200, overhead);
    }

    /// The end of a job that failed after its first delta: an error event (chat: `data:` with
    /// OpenAI's error object, no `[DONE]`; Responses: `event: error` with its fields).
    fn fail(&mut self, error: &GatewayError) {
        let body = error.body();
        let bytes = match self.kind {
            StreamKind::Chat { .. } => event(body.to_string().as_bytes()),
            StreamKind::Responses => {
                let mut fields = body["error"].clone();
                fields["type"] = json!("error");
                named_event(Some("error"), fields.to_string().as_bytes())
            }
        };
        self.queued.push_back(bytes);
        metrics::answered(self.kind.route(), error.status, self.started.elapsed());
    }

    fn answered(&mut self, answer: Answer) -> Result<Box<JobResult>, GatewayError> {
        match answer {
            Ok(Ok(result)) => Ok(Box::new(result)),
            Ok(Err(error)) => Err(GatewayError::from_job(&error, None)),
            Err(_) => Err(closing()),
        }
    }
}

impl futures_util::Stream for SseBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.queued.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            match &mut this.phase {
                Phase::Ended => return Poll::Ready(None),
                Phase::Forwarding => {
                    if let Poll::Ready(Some(chunk)) = this.chunks.poll_recv(cx) {
                        this.queue(&chunk);
                        continue;
                    }
                    let Some(answer) = this.answer.as_mut() else {
                        this.phase = Phase::Draining(None);
                        continue;
                    };
                    let Poll::Ready(answer) = answer.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    this.answer = None;
                    let outcome = this.answered(answer);
                    this.relay.do_send(Finish);
                    this.phase = Phase::Draining(Some(outcome));
                }
                Phase::Draining(outcome) => match this.chunks.poll_recv(cx) {
                    Poll::Ready(Some(chunk)) => this.queue(&chunk),
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        let outcome = outcome.take();
                        this.phase = Phase::Ended;
                        match outcome {
                            Some(Ok(result)) => this.finish(&result),
                            Some(Err(error)) => this.fail(&error),
                            None => this.fail(&closing()),
                        }
                    }
                },
            }
        }
    }
}
