//! A faithful Azure OpenAI simulator for tests, demos and benchmarks of rate-limit schedulers.
//!
//! It serves `POST /openai/deployments/{deployment}/chat/completions?api-version=...` and
//! `POST /openai/v1/chat/completions` over real HTTP (actix-web), counting quotas as Azure
//! documents them (TPM per minute window charged with an estimate on arrival, RPM per short
//! window, PTU semantics), answering 429 with `retry-after`/`retry-after-ms`, streaming like
//! Azure, and injecting seeded faults and scheduled outages.
//!
//! It also behaves like Azure at its edges, per deployment: day-long or absurd retry waits in
//! any set of retry headers, or none ([`RetryHeaders`]); outages answering 401, 403, 404, 429
//! or 503, or refusing connections, for a period ([`OutageSpec`]); replies that trickle a few
//! bytes at a time for a long time or forever ([`TrickleSpec`]); and replies padded to any size
//! ([`DeploymentSpec::reply_bytes`]).
//!
//! In-process (a test under `#[actix_rt::test]`):
//!
//! ```no_run
//! use aoai_sim::{DeploymentSpec, SimConfig};
//!
//! # async fn demo() -> Result<(), aoai_sim::SimError> {
//! let sim = aoai_sim::start(SimConfig {
//!     deployments: vec![DeploymentSpec::new("gpt-4o").tpm(60_000)],
//!     ..Default::default()
//! })
//! .await?;
//! let url = format!(
//!     "{}openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
//!     sim.base_url()
//! );
//! // POST {"messages": [...]} to `url` with `api-key: sim-key` (aoai_sim::DEFAULT_API_KEY).
//! # let _ = url;
//! let stats = sim.stats();
//! assert_eq!(stats.deployment("gpt-4o").rate_limited, 0);
//! sim.stop().await;
//! # Ok(()) }
//! ```
//!
//! From synchronous code: [`SimThread::start`] runs it on a thread of its own.
//!
//! Standalone: `aoai-sim --config examples/sim.yaml` (see the crate README).
//!
//! Modules: [`config`] (what can be configured), [`quota`] (the pure limiter), [`minimum`] (a
//! batch's theoretical minimum by the limiter's own rule), [`stats`] (counters). The engine,
//! reply, stream and fault logic is internal and pure; the server module only carries its
//! decisions out over HTTP.

pub mod config;
pub mod minimum;
pub mod quota;
pub mod stats;

mod azure_error;
mod clock;
mod content;
mod embeddings;
mod engine;
mod error;
mod faults;
mod reply;
mod request;
mod responses;
mod retry_after;
mod server;
mod stream;
mod thread;
mod tls;

pub use config::{
    ABSURD_RETRY_AFTER_SECS, ClockMode, DEFAULT_API_KEY, DEFAULT_BEARER_TOKEN, DEFAULT_MAX_TOKENS,
    DeploymentSpec, FaultSpec, LatencySpec, ListenFlags, Listener, ManagedIdentitySpec, OutageMode,
    OutageSpec, QuotaWindow, RemainingHeaders, RetryHeader, RetryHeaders, RpmWindow, SimConfig,
    TlsFiles, TokenCharge, TrickleEvent, TrickleSpec,
};
pub use content::messages_digest;
pub use embeddings::{MAX_INPUTS as MAX_EMBEDDING_INPUTS, embedding_base64, embedding_vector};
pub use error::SimError;
pub use minimum::{MinimumJob, minimum_makespan, minimum_makespan_from};
pub use reply::Usage;
pub use server::{ListenerInfo, SimHandle};
pub use stats::{DeploymentStats, SimStats};
pub use thread::SimThread;

/// Start the simulator on the current actix runtime (inside `#[actix_rt::test]`,
/// `#[actix_web::main]` or an `actix_rt::System`): bind its listeners (port 0 picks free ports)
/// and serve until [`SimHandle::stop`]. The configuration is validated first.
pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    server::start(config).await
}

/// The README's Rust snippets, compiled as doctests so they follow the simulator's API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
