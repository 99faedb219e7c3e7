//! `Blaster`: the facade for code that is not an actix app.
//!
//! It starts an actix System with the [`Dispatcher`] on a thread of its own, and offers the
//! Python package's surface: [`Blaster::chat_completion`] (async, any executor),
//! [`Blaster::blocking_chat_completion`], [`Blaster::submit_chat_completion`] (a future that
//! runs whether or not it is polled), [`Blaster::report`] and [`Blaster::close`]; jobs of any
//! operation (embeddings, responses) through [`Blaster::run_job`] and [`Blaster::submit_job`].

use std::future::Future;
use std::marker::PhantomData;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use actix::prelude::*;
use aoai_blaster_core::chat::ChatRequest;
use aoai_blaster_core::config::{BlasterConfig, ConfigError};
use aoai_blaster_core::operation::JobRequest;
use aoai_blaster_core::retry::{JobError, JobErrorKind};
use aoai_blaster_core::scheduler::{JobOutput, JobResult};
use tokio::sync::oneshot;

use crate::auth::CredentialRegistry;
use crate::dispatcher::{Dispatcher, StartError};
use crate::messages::{
    ChatJob, ChatResult, Close, GetRedisUse, GetReport, HealthReport, Job, SendGate, Subscribe,
    TrackedJob,
};
use crate::report::EndpointReport;

/// Why a [`Blaster`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BlasterError {
    /// The config file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The actors could not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A running blaster: the Dispatcher and one endpoint actor per deployment, on background
/// threads.
///
/// ```no_run
/// use aoai_blaster::{Blaster, ChatRequest};
/// use serde_json::json;
///
/// let blaster = Blaster::from_config_file("blaster.yaml")?;
/// let request = ChatRequest::new(vec![json!({"role": "user", "content": "Say hi"})]);
/// let result = blaster.blocking_chat_completion(request)?;
/// println!("{} (from {})", result.text().unwrap_or_default(), result.endpoint);
/// blaster.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Blaster {
    dispatcher: Addr<Dispatcher>,
    arbiter: ArbiterHandle,
    system: System,
    thread: Option<JoinHandle<()>>,
}

impl Blaster {
    /// Reads, validates and starts the config at `path` (YAML, JSON or TOML; environment
    /// overrides `AOAI_BLASTER__<KEY>` apply).
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self, BlasterError> {
        let config = BlasterConfig::from_file(path.as_ref())?;
        Ok(Self::from_config(config)?)
    }

    /// Starts the actors for a validated config.
    pub fn from_config(config: BlasterConfig) -> Result<Self, StartError> {
        Self::from_config_with(config, CredentialRegistry::default())
    }

    /// Starts the actors, building credentials with `registry`.
    pub fn from_config_with(
        config: BlasterConfig,
        registry: CredentialRegistry,
    ) -> Result<Self, StartError> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("aoai-blaster".into())
            .spawn(move || {
                let system = System::new();
                let started = system.block_on(async move {
                    Dispatcher::start_with_registry(config, registry)
                        .map(|addr| (addr, System::current(), Arbiter::current()))
                });
                let ok = started.is_ok();
                let _ = started_tx.send(started);
                if ok {
                    let _ = system.run();
                }
            })
            .map_err(|error| StartError::System(error.to_string()))?;
        match started_rx.recv() {
            Ok(Ok((dispatcher, system, arbiter))) => Ok(Self {
                dispatcher,
                arbiter,
                system,
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(StartError::System(
                    "the actor thread ended during start-up".into(),
                ))
            }
        }
    }

    /// The Dispatcher's address, for code that wants to send messages itself.
    pub fn dispatcher(&self) -> &Addr<Dispatcher> {
        &self.dispatcher
    }

    /// Runs one job and waits for its result (usable from any async executor).
    pub async fn run(&self, job: ChatJob) -> Result<ChatResult, JobError> {
        match self.dispatcher.send(job).await {
            Ok(result) => result,
            Err(_) => Err(closed()),
        }
    }

    /// Runs one job of any operation (chat, embeddings, responses) and waits for its result.
    ///
    /// ```no_run
    /// use aoai_blaster::{Blaster, Job};
    /// use aoai_blaster::core::embeddings::EmbeddingsRequest;
    ///
    /// # async fn demo(blaster: &Blaster) -> Result<(), aoai_blaster::JobError> {
    /// let job = Job::from_request(EmbeddingsRequest::new(vec!["first", "second"]));
    /// let result = blaster.run_job(job).await?;
    /// println!("{} tokens", result.usage().map_or(0, |u| u.prompt_tokens));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_job(&self, job: Job<JobRequest>) -> Result<JobResult, JobError> {
        match self.dispatcher.send(job).await {
            Ok(result) => result,
            Err(_) => Err(closed()),
        }
    }

    /// Runs one chat completion and waits for it.
    pub async fn chat_completion(&self, request: ChatRequest) -> Result<ChatResult, JobError> {
        self.run(ChatJob::new(request)).await
    }

    /// Runs one chat completion, blocking the calling thread until it is done.
    pub fn blocking_chat_completion(&self, request: ChatRequest) -> Result<ChatResult, JobError> {
        futures_executor::block_on(self.chat_completion(request))
    }

    /// Submits a job now and returns a handle to its result; the job runs whether or not the
    /// handle is awaited (dropping the handle cancels the job if it has not started).
    pub fn submit(&self, job: ChatJob) -> JobHandle {
        self.submit_any(job.into_job())
    }

    /// Submits a job of any operation now; see [`Blaster::submit`].
    pub fn submit_job(&self, job: Job<JobRequest>) -> JobHandle<JobResult> {
        self.submit_any(job)
    }

    fn submit_any<T>(&self, job: Job<JobRequest>) -> JobHandle<T> {
        let (sender, receiver) = oneshot::channel();
        let gate = SendGate::default();
        // `send` puts the job in the Dispatcher's mailbox now (in submission order, before any
        // later `close`); the spawned task only waits for the answer.
        let request = self.dispatcher.send(TrackedJob {
            job,
            gate: gate.clone(),
        });
        self.arbiter.spawn(async move {
            let mut sender = sender;
            // Dropping the handle drops `request`: the Dispatcher then sends no request for the
            // job if it has not sent one yet.
            tokio::select! {
                result = request => {
                    let _ = sender.send(result.unwrap_or_else(|_| Err(closed())));
                }
                () = sender.closed() => {}
            }
        });
        JobHandle {
            receiver,
            gate,
            output: PhantomData,
        }
    }

    /// Submits a chat completion now; see [`Blaster::submit`].
    pub fn submit_chat_completion(&self, request: ChatRequest) -> JobHandle {
        self.submit(ChatJob::new(request))
    }

    /// Every endpoint's state and counts.
    pub async fn report(&self) -> Vec<EndpointReport> {
        self.dispatcher.send(GetReport).await.unwrap_or_default()
    }

    /// What the shared quotas cost in Redis so far: calls, and each ask's round trip (`None`
    /// without `shared:`).
    pub async fn redis_use(&self) -> Option<crate::shared::RedisUse> {
        self.dispatcher.send(GetRedisUse).await.ok().flatten()
    }

    /// [`Blaster::report`], blocking.
    pub fn blocking_report(&self) -> Vec<EndpointReport> {
        futures_executor::block_on(self.report())
    }

    /// Delivers every endpoint health change to `recipient`.
    pub fn subscribe(&self, recipient: Recipient<HealthReport>) {
        self.dispatcher.do_send(Subscribe(recipient));
    }

    /// Stops taking jobs, waits for the queued and in-flight ones to finish, then stops the
    /// actors and their threads.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = futures_executor::block_on(self.dispatcher.send(Close));
        self.system.stop();
        let _ = thread.join();
    }
}

impl Drop for Blaster {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.system.stop();
            let _ = thread.join();
        }
    }
}

fn closed() -> JobError {
    JobError {
        kind: JobErrorKind::QueueClosed,
        attempts: Vec::new(),
    }
}

/// The pending result of a submitted job: a [`ChatResult`] for a chat job
/// ([`Blaster::submit`]), a [`JobResult`] for a job of any operation ([`Blaster::submit_job`]).
/// Dropping it (or [`cancel`](JobHandle::cancel)) before the job has been sent cancels the job:
/// no request goes out. A job in flight may finish.
pub struct JobHandle<T = ChatResult> {
    receiver: oneshot::Receiver<Result<JobResult, JobError>>,
    gate: SendGate,
    output: PhantomData<fn() -> T>,
}

impl<T: JobOutput> Future for JobHandle<T> {
    type Output = Result<T, JobError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver).poll(cx).map(|result| {
            result
                .unwrap_or_else(|_| Err(closed()))
                .and_then(T::from_result)
        })
    }
}

impl<T: JobOutput> JobHandle<T> {
    /// Cancels the job: no request is sent if none has been yet (one in flight may finish,
    /// its answer is dropped).
    pub fn cancel(self) {}

    /// True once a request of the job went out (its first attempt was handed to an endpoint).
    /// A job not sent yet may be sent at any moment after this says `false`: to stop it for
    /// sure, use [`cancel_unsent`](JobHandle::cancel_unsent).
    pub fn is_sent(&self) -> bool {
        self.gate.is_sent()
    }

    /// Cancels the job if no request of it has gone out, and says whether it did: `true` means
    /// no request is ever sent for it (its result, a `Cancelled` error, comes once the
    /// Dispatcher next looks at it; the handle may as well be dropped), `false` that a request
    /// went out already (the job runs on).
    /// Exact, unlike [`is_sent`](JobHandle::is_sent) followed by a drop, which races with the
    /// Dispatcher sending the job.
    pub fn cancel_unsent(&self) -> bool {
        self.gate.cancel_unsent()
    }

    /// Blocks until the result is there.
    pub fn wait(self) -> Result<T, JobError> {
        futures_executor::block_on(self)
    }
}
