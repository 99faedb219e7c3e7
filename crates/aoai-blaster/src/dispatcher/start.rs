//! How a Dispatcher starts: credentials, endpoint actors (on their arbiters) and the wiring
//! between them.

use std::sync::Arc;

use actix::prelude::*;
use aoai_blaster_core::config::BlasterConfig;
use aoai_blaster_core::scheduler::Scheduler;
use rand::SeedableRng;

use super::Dispatcher;
use super::shared::{SharedCalls, SharedStart};
use crate::auth::{AuthError, CredentialRegistry};
use crate::endpoint::{EndpointActor, EndpointSettings};
use crate::messages::{Attempt, AttemptDone, HealthReport, MirrorHealth, StopForRestart};
use crate::metrics::DispatcherMetrics;
use crate::tls::TrustedCas;

/// Why the Dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A deployment's credential could not be set up.
    #[error("deployment '{deployment}': {source}")]
    Auth {
        /// The deployment's name.
        deployment: String,
        /// What went wrong.
        source: AuthError,
    },
    /// The actor system could not be started.
    #[error("cannot start the actor system: {0}")]
    System(String),
    /// `shared:` is configured, Redis cannot be reached and `shared.fallback` is `error`.
    #[error(transparent)]
    Shared(#[from] aoai_blaster_core::shared::RedisUnreachable),
    /// The CA file to trust (`SSL_CERT_FILE`) cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// `Dispatcher::start` was called outside a running actix system.
    #[error(
        "no actix system is running: call Dispatcher::start inside #[actix::main] or \
         System::new().block_on(..), or use aoai_blaster::Blaster, which runs its own"
    )]
    NoSystem,
}

/// How the Dispatcher reaches one endpoint actor.
pub(crate) struct EndpointLink {
    pub(crate) attempts: Recipient<Attempt>,
    pub(crate) restart: Recipient<StopForRestart>,
    /// Where the others' health notes go (`shared:`).
    pub(crate) mirror: Recipient<MirrorHealth>,
}

impl EndpointLink {
    fn of(addr: Addr<EndpointActor>) -> Self {
        EndpointLink {
            attempts: addr.clone().recipient(),
            restart: addr.clone().recipient(),
            mirror: addr.recipient(),
        }
    }
}

impl Dispatcher {
    /// Starts the endpoint actors (on the current arbiter, or on `endpoint_threads` arbiters of
    /// their own) and the Dispatcher, in the current actix System. Use
    /// [`Blaster`](crate::Blaster) when you are not in an actix app. HTTPS trusts
    /// [`TrustedCas::from_env`]: the webpki roots plus the CAs of the file `SSL_CERT_FILE`
    /// names ([`StartError::Tls`] when it cannot be used).
    pub fn start(config: BlasterConfig) -> Result<Addr<Dispatcher>, StartError> {
        Self::start_with_registry(config, CredentialRegistry::default())
    }

    /// Like [`Dispatcher::start`], with credentials built by `registry`.
    pub fn start_with_registry(
        config: BlasterConfig,
        registry: CredentialRegistry,
    ) -> Result<Addr<Dispatcher>, StartError> {
        let trust = TrustedCas::from_env()?;
        Self::start_with(config, registry, trust)
    }

    /// Like [`Dispatcher::start`], with credentials built by `registry`, and HTTPS (and
    /// `rediss://`) trusting `trust` instead of what `SSL_CERT_FILE` says.
    pub fn start_with(
        config: BlasterConfig,
        registry: CredentialRegistry,
        trust: TrustedCas,
    ) -> Result<Addr<Dispatcher>, StartError> {
        Ok(Self::prepare_with(config, registry, trust)?.start_here())
    }

    /// Prepares a Dispatcher (credentials checked now) to run on the thread that later calls
    /// [`DispatcherSeed::start_here`]: an actix-web worker's, so that a request and its job
    /// never cross threads. Call it inside a running actix System.
    pub fn prepare(config: BlasterConfig) -> Result<DispatcherSeed, StartError> {
        let trust = TrustedCas::from_env()?;
        Self::prepare_with(config, CredentialRegistry::default(), trust)
    }

    fn prepare_with(
        config: BlasterConfig,
        mut registry: CredentialRegistry,
        trust: TrustedCas,
    ) -> Result<DispatcherSeed, StartError> {
        if actix::System::try_current().is_none() {
            return Err(StartError::NoSystem);
        }
        // One config for every endpoint's clients (and their TLS session cache).
        let tls = trust.client_config();
        let mut auths = Vec::with_capacity(config.deployments.len());
        for deployment in &config.deployments {
            let auth = registry
                .auth_for(&deployment.auth)
                .map_err(|source| StartError::Auth {
                    deployment: deployment.name.clone(),
                    source,
                })?;
            auths.push(auth);
        }
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let shared = SharedStart::connect(&config, &trust)?;
        // Endpoint actors on threads of their own only when asked: one thread for everything
        // costs least per job (no wake-ups across threads) and keeps up at well over 10,000
        // jobs/s.
        let threads = config.endpoint_threads.min(config.deployments.len());
        let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        let deployments = config.deployments.clone();
        let handles: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
        let build = Self::builder(&config, shared, move |reports, done| {
            let links = deployments
                .iter()
                .zip(auths)
                .enumerate()
                .map(|(index, (deployment, auth))| {
                    let arbiter = match handles.len() {
                        0 => Arbiter::current(),
                        n => handles[index % n].clone(),
                    };
                    let settings =
                        EndpointSettings::from_config(index, deployment, Arc::clone(&tls));
                    let addr = EndpointActor::start_supervised(
                        &arbiter,
                        settings,
                        auth,
                        reports.clone(),
                        done.clone(),
                    );
                    EndpointLink::of(addr)
                })
                .collect();
            (links, arbiters)
        });
        let (sender, receiver) = actix::dev::channel::channel(MAILBOX_CAPACITY);
        Ok(DispatcherSeed {
            address: Addr::new(sender),
            receiver,
            build: Box::new(build),
        })
    }

    /// Starts the Dispatcher for `config` with the endpoints `endpoints` starts (given where
    /// they send health reports and attempt ends), and whatever must live as long as it.
    #[cfg(test)]
    pub(crate) fn launch(
        config: &BlasterConfig,
        shared: Option<SharedStart>,
        endpoints: impl FnOnce(
            Recipient<HealthReport>,
            Recipient<AttemptDone>,
        ) -> (Vec<EndpointLink>, Vec<Arbiter>),
    ) -> Addr<Dispatcher> {
        Dispatcher::create(Self::builder(config, shared, endpoints))
    }

    /// What builds the Dispatcher for `config` in its context (on the thread that runs it);
    /// `Send` when `endpoints` is.
    fn builder<E>(
        config: &BlasterConfig,
        shared: Option<SharedStart>,
        endpoints: E,
    ) -> impl FnOnce(&mut Context<Dispatcher>) -> Dispatcher + use<E>
    where
        E: FnOnce(
            Recipient<HealthReport>,
            Recipient<AttemptDone>,
        ) -> (Vec<EndpointLink>, Vec<Arbiter>),
    {
        let mut scheduler = Scheduler::new(config, rand::rngs::StdRng::from_rng(&mut rand::rng()));
        // Building a tokenizer's counter (a hash table of its ranks, ~2 MiB for o200k) takes a
        // few milliseconds: start it now, off the actor's thread, so the first jobs do not wait
        // for it; only those pacing counts with (the scheduler never loads the others).
        let to_build: Vec<String> = scheduler.counted_tokenizers().map(str::to_owned).collect();
        if !to_build.is_empty() {
            let _ = std::thread::Builder::new()
                .name("aoai-tokenizer-warm-up".into())
                .spawn(move || {
                    for tokenizer in &to_build {
                        aoai_blaster_core::tokens::warm_up(tokenizer);
                    }
                });
        }
        let metrics = DispatcherMetrics::new(config.deployments.iter().map(|d| d.name.as_str()));
        // The shared-quota calls start with the actor (they need its address).
        let shared = shared.map(|start| (start, config.clone()));
        move |ctx| {
            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            let reports = ctx.address().recipient();
            let done = ctx.address().recipient();
            let (endpoints, arbiters) = endpoints(reports, done);
            let shared = shared.and_then(|(start, config)| {
                SharedCalls::start(&config, start, &mut scheduler, ctx.address().recipient())
            });
            if shared.is_some() {
                metrics.shared_link(scheduler.is_shared() == Some(true));
            }
            Dispatcher {
                scheduler,
                endpoints,
                effects: Vec::new(),
                subscribers: Vec::new(),
                wake: None,
                closing: false,
                close_waiters: Vec::new(),
                metrics,
                shared,
                _arbiters: arbiters,
            }
        }
    }
}

/// Messages the Dispatcher's mailbox holds before senders wait.
const MAILBOX_CAPACITY: usize = 4096;

/// A Dispatcher prepared by [`Dispatcher::prepare`], not running yet: its address takes
/// messages at once (they wait in its mailbox); [`DispatcherSeed::start_here`] runs it, and
/// the endpoint actors sharing its thread, on the calling thread's arbiter.
pub struct DispatcherSeed {
    address: Addr<Dispatcher>,
    receiver: actix::dev::channel::AddressReceiver<Dispatcher>,
    build: Box<Build>,
}

/// Builds the Dispatcher in its context, on the thread that runs it.
type Build = dyn FnOnce(&mut Context<Dispatcher>) -> Dispatcher + Send;

impl DispatcherSeed {
    /// The address the Dispatcher will have.
    pub fn address(&self) -> Addr<Dispatcher> {
        self.address.clone()
    }

    /// Runs the Dispatcher on the current thread's arbiter; its address.
    pub fn start_here(self) -> Addr<Dispatcher> {
        let mut ctx = Context::with_receiver(self.receiver);
        let dispatcher = (self.build)(&mut ctx);
        ctx.run(dispatcher)
    }
}

impl std::fmt::Debug for DispatcherSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherSeed").finish_non_exhaustive()
    }
}
