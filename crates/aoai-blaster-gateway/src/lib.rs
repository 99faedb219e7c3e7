//! # aoai-blaster-gateway
//!
//! An OpenAI-compatible HTTP front over the aoai-blaster [`Dispatcher`]: point any OpenAI SDK at
//! `http://ADDR/v1` and its requests get the blaster's pacing to each deployment's quota,
//! failover, cancellation and metrics, with no code change. `aoai-blaster serve` runs it.
//!
//! Routes (every error in OpenAI's shape, `{"error": {"message", "type", "code"}}`):
//! - `POST /v1/chat/completions`, `/openai/v1/chat/completions` (`model` in the body) and
//!   `/openai/deployments/{name}/chat/completions` (Azure's form, `{name}` routes);
//! - `GET /v1/models` (and `/v1/models/{id}`), `GET /healthz`, `GET /metrics`;
//! - `POST /v1/embeddings`, `/openai/v1/embeddings`, `/openai/deployments/{name}/embeddings`
//!   and `POST /v1/responses`, `/openai/v1/responses` (streamed: each upstream event as it came).
//!
//! The decisions (routing by `model`, keys, error shape, retry hints) are plain values in
//! [`aoai_blaster::core::gateway`]; this crate is the actix-web shell that performs them.
//!
//! ```no_run
//! use aoai_blaster::BlasterConfig;
//! use aoai_blaster_gateway::{Gateway, GatewayOptions};
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = BlasterConfig::from_file("blaster.yaml")?;
//!     let gateway = Gateway::start(config, GatewayOptions::new("127.0.0.1:8080")).await?;
//!     println!("listening on http://{}", gateway.local_addr());
//!     gateway.stop().await;
//!     Ok(())
//! }
//! ```

#![forbid(unsafe_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use aoai_blaster::metrics::{MetricsError, MetricsHandle};
use aoai_blaster::{BlasterConfig, Close, Dispatcher, StartError};

/// The README's example, compiled so it follows the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod app;
mod chat;
mod disconnect;
mod metrics;
mod ops;
mod reply;
mod state;
mod stream;

/// How `serve` listens.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// `HOST:PORT` to listen on (port 0 picks a free one).
    pub listen: String,
    /// Listen on a non-loopback address without `gateway.api_keys`.
    pub allow_unauthenticated: bool,
    /// HTTP worker threads. 1 (the default): that one thread also runs the Dispatcher and the
    /// endpoint actors, so a request never crosses threads; more (0: one per core): the
    /// workers hand jobs to the Dispatcher on the System's thread.
    pub workers: usize,
}

impl GatewayOptions {
    /// Listen on `listen`, on one thread, loopback only without keys.
    pub fn new(listen: impl Into<String>) -> Self {
        GatewayOptions {
            listen: listen.into(),
            allow_unauthenticated: false,
            workers: 1,
        }
    }
}

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No inbound keys and an address others can reach.
    #[error(
        "refusing to listen on {addr} without inbound keys: anyone who reaches it could spend \
         your quota; set gateway.api_keys in the config, listen on 127.0.0.1, or pass \
         --allow-unauthenticated"
    )]
    Unauthenticated {
        /// The address asked for.
        addr: String,
    },
    /// The address could not be resolved or bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The Dispatcher could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// A running gateway: its HTTP server and its Dispatcher, in the current actix System.
pub struct Gateway {
    addr: SocketAddr,
    server: ServerHandle,
    dispatcher: Addr<Dispatcher>,
    state: Arc<state::State>,
}

impl Gateway {
    /// Installs the metrics recorder, starts the Dispatcher for `config` and listens; call it
    /// inside a running actix System (`#[actix::main]`).
    pub async fn start(
        config: BlasterConfig,
        options: GatewayOptions,
    ) -> Result<Gateway, ServeError> {
        let addrs: Vec<SocketAddr> = options
            .listen
            .to_socket_addrs()
            .map_err(|source| ServeError::Listen {
                addr: options.listen.clone(),
                source,
            })?
            .collect();
        let exposed = addrs.iter().any(|addr| !addr.ip().is_loopback());
        if config.gateway.api_keys.is_empty() && exposed && !options.allow_unauthenticated {
            return Err(ServeError::Unauthenticated {
                addr: options.listen,
            });
        }
        let metrics = MetricsHandle::install()?;
        metrics::describe();
        // One worker: the Dispatcher starts on the worker's thread (app::serve runs the seed
        // there); several: on this thread, which every worker then reaches.
        let (dispatcher, seed) = if options.workers == 1 {
            let seed = Dispatcher::prepare(config.clone())?;
            (seed.address(), Some(seed))
        } else {
            (Dispatcher::start(config.clone())?, None)
        };
        let state = Arc::new(state::State::new(&config, dispatcher.clone(), metrics));
        let listen_error = |source| ServeError::Listen {
            addr: options.listen.clone(),
            source,
        };
        let (addr, server, running) =
            app::serve(state.clone(), &addrs, options.workers, seed).map_err(listen_error)?;
        let handle = server.handle();
        actix_web::rt::spawn(server);
        if let Some(running) = running {
            // The worker runs the seed before it serves; if it never does, the server failed.
            running.await.map_err(|_| {
                listen_error(std::io::Error::other(
                    "the HTTP worker stopped before it started the Dispatcher",
                ))
            })?;
        }
        Ok(Gateway {
            addr,
            server: handle,
            dispatcher,
            state,
        })
    }

    /// The address it listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Dispatcher behind it (for reports and health subscriptions).
    pub fn dispatcher(&self) -> &Addr<Dispatcher> {
        &self.dispatcher
    }

    /// Requests that hold a job now (queued or in flight): at `num_workers + queue_capacity`,
    /// new ones get 429.
    pub fn requests_held(&self) -> usize {
        self.state.held()
    }

    /// Stops listening, lets requests in progress finish, then closes the Dispatcher.
    pub async fn stop(self) {
        self.server.stop(true).await;
        let _ = self.dispatcher.send(Close).await;
    }
}
