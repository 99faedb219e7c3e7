//! The Dispatcher's link to the shared quotas and health in Redis: one task owns the
//! [`SharedRedis`] connection and performs the scheduler's [`SharedEffect`]s in order (a carry
//! before the next ask, a health note before the next read), off the Dispatcher's mailbox; each
//! answer comes back as a [`SharedAnswer`], which becomes one scheduler event. The others'
//! notes the scheduler mirrors go to the endpoint actors ([`MirrorHealth`]). The task also
//! keeps the [`RedisUse`] (calls, ask round trips from the moment the Dispatcher handed the ask
//! over) that [`GetRedisUse`] reads.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;
use aoai_blaster_core::config::BlasterConfig;
use aoai_blaster_core::scheduler::SharedEffect;
use aoai_blaster_core::shared::{
    ASK_TIMEOUT, Grant, LEASE_TTL, LeaseLimits, LeaseSpans, LinkChange, RedisLink, SharedHealth,
    SharedKeys,
};
use tokio::sync::{mpsc, oneshot};

use super::{Dispatcher, StartError};
use crate::clock;
use crate::messages::{GetRedisUse, MirrorHealth};
use crate::shared::{RedisUse, SharedRedis};

/// What Redis answered to one call.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) enum SharedAnswer {
    /// An endpoint's lease (or wait).
    Granted {
        /// The endpoint's index.
        endpoint: usize,
        /// Redis' answer.
        grant: Grant,
    },
    /// Every deployment's shared health (in config order), for read `read`.
    Health {
        /// The read's number.
        read: u64,
        /// What the keys say.
        healths: Vec<SharedHealth>,
    },
    /// A probe reached Redis.
    Back,
    /// A call failed (the error is redacted).
    Failed(String),
}

/// Redis as the Dispatcher starts with it: the client, and whether it answered.
pub(crate) struct SharedStart {
    redis: SharedRedis,
    link: RedisLink,
}

impl SharedStart {
    /// Pings Redis for `config.shared` (nothing without it): an error with `fallback: error`,
    /// a warning and local pacing with `fallback: local`.
    pub(crate) fn connect(
        config: &BlasterConfig,
        trust: &crate::tls::TrustedCas,
    ) -> Result<Option<SharedStart>, StartError> {
        let Some(shared) = &config.shared else {
            return Ok(None);
        };
        let url = shared.redis_url.redacted();
        let mut redis = SharedRedis::trusting(&shared.redis_url, trust).map_err(|e| {
            StartError::Shared(aoai_blaster_core::shared::RedisUnreachable {
                url: url.to_owned(),
                error: e.message,
            })
        })?;
        let reached = redis.ping_blocking().map_err(|e| e.message);
        let (link, change) = RedisLink::at_start(clock::now(), reached, shared.fallback, url)
            .map_err(StartError::Shared)?;
        if let Some(change) = change {
            log_change(&change, shared.expected_processes);
        }
        Ok(Some(SharedStart { redis, link }))
    }
}

/// Logs a change of the link (the scheduler has already switched the quotas).
pub(crate) fn log_change(change: &LinkChange, processes: u32) {
    match change {
        LinkChange::Lost { error } => tracing::warn!(
            "shared quotas: Redis unreachable ({error}); pacing each shared deployment on \
             1/{processes} of its quota until Redis answers again"
        ),
        LinkChange::Restored { after } => tracing::warn!(
            "shared quotas: Redis answers again after {:.1} s; pacing through Redis",
            after.as_secs_f64()
        ),
    }
}

/// What the Redis task takes, in order.
enum Call {
    /// An effect, with the instant it was handed over.
    Effect(Instant, SharedEffect),
    /// Answer once every call before it is done.
    Flush(oneshot::Sender<()>),
}

/// Where the Dispatcher sends the shared effects.
pub(crate) struct SharedCalls {
    calls: mpsc::UnboundedSender<Call>,
    processes: u32,
    usage: Arc<Mutex<RedisUse>>,
}

impl SharedCalls {
    /// Shares `config`'s quotas in `scheduler` over `start.link` and starts the task that
    /// performs the calls, answering to `answers`.
    pub(crate) fn start<P: aoai_blaster_core::scheduler::Payload>(
        config: &BlasterConfig,
        start: SharedStart,
        scheduler: &mut aoai_blaster_core::scheduler::Scheduler<P>,
        answers: Recipient<SharedAnswer>,
    ) -> Option<SharedCalls> {
        let shared = config.shared.as_ref()?;
        scheduler.share_quotas(clock::now(), config, start.link);
        let deployments: Vec<(SharedKeys, LeaseLimits)> = config
            .deployments
            .iter()
            .map(|d| {
                let keys = SharedKeys::new(&shared.key_prefix, &d.endpoint, &d.model);
                let limits = LeaseLimits::new(d.rpm_limit, d.tpm_limit, config.rpm_window);
                (keys, limits)
            })
            .collect();
        let spans = LeaseSpans::new(LEASE_TTL, config.rpm_window);
        let (calls, receiver) = mpsc::unbounded_channel();
        let mut usage = RedisUse::default();
        // The ping at start is a call too.
        usage.set_calls(start.redis.operations());
        let usage = Arc::new(Mutex::new(usage));
        let link = TaskLink {
            calls: receiver,
            answers,
            usage: Arc::clone(&usage),
        };
        actix_rt::spawn(perform(start.redis, deployments, spans, link));
        Some(SharedCalls {
            calls,
            processes: shared.expected_processes,
            usage,
        })
    }
}

/// The Redis task's ends: the calls it takes, where it answers, what it counts.
struct TaskLink {
    calls: mpsc::UnboundedReceiver<Call>,
    answers: Recipient<SharedAnswer>,
    usage: Arc<Mutex<RedisUse>>,
}

impl TaskLink {
    /// Notes the calls made so far and, for an answered ask, its round trip since it was
    /// handed over and its script call alone (`sent` → now).
    fn count(&self, redis: &SharedRedis, ask: Option<(Instant, Instant)>) {
        if let Ok(mut usage) = self.usage.lock() {
            usage.set_calls(redis.operations());
            if let Some((handed, sent)) = ask {
                let now = clock::now();
                usage.record_ask(
                    now.saturating_duration_since(handed),
                    now.saturating_duration_since(sent),
                );
            }
        }
    }
}

/// Performs each call in order; ends when the Dispatcher drops its sender.
async fn perform(
    mut redis: SharedRedis,
    deployments: Vec<(SharedKeys, LeaseLimits)>,
    spans: LeaseSpans,
    mut link: TaskLink,
) {
    let health_keys: Vec<SharedKeys> = deployments.iter().map(|(k, _)| k.clone()).collect();
    while let Some(call) = link.calls.recv().await {
        let (handed, call) = match call {
            Call::Effect(handed, call) => (handed, call),
            Call::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let answer = match call {
            SharedEffect::Renew { endpoint, renewal } => {
                let Some((keys, limits)) = deployments.get(endpoint) else {
                    continue;
                };
                let sent = clock::now();
                let reply = redis.renew(keys, *limits, spans, &renewal).await;
                let asked = renewal.ask.is_some() && reply.is_ok();
                link.count(&redis, asked.then_some((handed, sent)));
                match reply {
                    Ok(Some(grant)) => SharedAnswer::Granted { endpoint, grant },
                    Ok(None) => continue,
                    Err(e) => SharedAnswer::Failed(e.to_string()),
                }
            }
            SharedEffect::Carry { endpoint, carries } => {
                let Some((keys, _)) = deployments.get(endpoint) else {
                    continue;
                };
                let reply = redis.carry(keys, spans, &carries).await;
                link.count(&redis, None);
                match reply {
                    Ok(()) => continue,
                    Err(e) => SharedAnswer::Failed(e.to_string()),
                }
            }
            SharedEffect::Note { endpoint, note } => {
                let Some((keys, _)) = deployments.get(endpoint) else {
                    continue;
                };
                let reply = redis.note(keys, &note).await;
                link.count(&redis, None);
                match reply {
                    Ok(()) => continue,
                    Err(e) => SharedAnswer::Failed(e.to_string()),
                }
            }
            SharedEffect::ReadHealth { read } => {
                let reply = redis.health(&health_keys).await;
                link.count(&redis, None);
                match reply {
                    Ok(healths) => SharedAnswer::Health { read, healths },
                    Err(e) => SharedAnswer::Failed(e.to_string()),
                }
            }
            SharedEffect::Probe => {
                let reply = redis.ping().await;
                link.count(&redis, None);
                match reply {
                    Ok(()) => SharedAnswer::Back,
                    Err(e) => SharedAnswer::Failed(e.to_string()),
                }
            }
            SharedEffect::Link(_) | SharedEffect::Mirror { .. } => continue,
        };
        link.answers.do_send(answer);
    }
}

impl Dispatcher {
    /// Performs a shared effect: a change of the link is logged here, a mirror goes to its
    /// endpoint actor, calls go to Redis' task.
    pub(super) fn perform_shared(&mut self, effect: SharedEffect) {
        let Some(shared) = &self.shared else {
            return;
        };
        match effect {
            SharedEffect::Link(change) => {
                log_change(&change, shared.processes);
                self.metrics
                    .shared_link(self.scheduler.is_shared() == Some(true));
                return;
            }
            SharedEffect::Mirror { endpoint, mirror } => {
                if let Some(link) = self.endpoints.get(endpoint) {
                    link.mirror.do_send(MirrorHealth(mirror));
                }
                return;
            }
            _ => {}
        }
        // The task ends only with the Dispatcher, so a send cannot fail while it runs.
        let _ = shared.calls.send(Call::Effect(clock::now(), effect));
    }

    /// The Dispatcher is done: gives every lease held back to Redis, and resolves when Redis'
    /// task has sent those calls (at most [`ASK_TIMEOUT`] later). Without `shared:`, at once.
    pub(super) fn release_shared(&mut self) -> impl Future<Output = ()> + use<> {
        let mut effects = Vec::new();
        self.scheduler.release_shared(&mut effects);
        for effect in effects {
            if let aoai_blaster_core::scheduler::Effect::Shared(effect) = effect {
                self.perform_shared(effect);
            }
        }
        let (done, flushed) = oneshot::channel();
        match &self.shared {
            Some(shared) => {
                let _ = shared.calls.send(Call::Flush(done));
            }
            None => drop(done),
        }
        async move {
            let _ = tokio::time::timeout(ASK_TIMEOUT, flushed).await;
        }
    }
}

impl Handler<GetRedisUse> for Dispatcher {
    type Result = MessageResult<GetRedisUse>;

    fn handle(&mut self, _: GetRedisUse, _ctx: &mut Self::Context) -> Self::Result {
        let usage = self.shared.as_ref().and_then(|s| s.usage.lock().ok());
        MessageResult(usage.map(|u| u.clone()))
    }
}

impl Handler<SharedAnswer> for Dispatcher {
    type Result = ();

    fn handle(&mut self, answer: SharedAnswer, ctx: &mut Self::Context) {
        self.step(ctx, |s, now, fx| match answer {
            SharedAnswer::Granted { endpoint, grant } => s.lease_granted(now, endpoint, grant, fx),
            SharedAnswer::Health { read, healths } => s.health_read(now, read, &healths, fx),
            SharedAnswer::Back => s.redis_back(now, fx),
            SharedAnswer::Failed(error) => s.redis_failed(now, &error, fx),
        });
    }
}
