//! # aoai-blaster
//!
//! Push chat-completion traffic through many Azure OpenAI deployments at once, as fast as their
//! combined quotas allow, without losing a job.
//!
//! The system is two kinds of actix actors:
//! - one [`Dispatcher`] holds the bounded job queue, the weighted ring, each endpoint's admission
//!   state and the retry policy, and decides which endpoint may take a job now;
//! - one endpoint actor per deployment owns its HTTP client, its auth, its cooldown timer and
//!   its failure streak, and reports health changes as [`HealthReport`] messages.
//!
//! Actix apps embed the Dispatcher (`dispatcher.send(ChatJob::new(request)).await`); other code
//! uses the [`Blaster`] facade. All decisions (routing, backoff, retry, classification, quota)
//! live in the pure crate `aoai-blaster-core`, re-exported here.
//!
//! ```no_run
//! use aoai_blaster::{BlasterConfig, ChatJob, ChatRequest, Dispatcher};
//! use serde_json::json;
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = BlasterConfig::from_file("blaster.yaml")?;
//!     let dispatcher = Dispatcher::start(config)?;
//!     let request = ChatRequest::new(vec![json!({"role": "user", "content": "Say hi"})]);
//!     let result = dispatcher.send(ChatJob::new(request)).await??;
//!     println!("{}", result.text().unwrap_or_default());
//!     Ok(())
//! }
//! ```

pub mod auth;
mod blaster;
mod clock;
mod dispatcher;
mod endpoint;
mod messages;
pub mod metrics;
mod report;
pub mod shared;
mod tls;

pub use aoai_blaster_core as core;
pub use aoai_blaster_core::chat::{ChatCompletion, ChatRequest, Usage};
pub use aoai_blaster_core::config::{BlasterConfig, ConfigError};
pub use aoai_blaster_core::embeddings::EmbeddingsRequest;
pub use aoai_blaster_core::operation::{JobRequest, Operation, Reply};
pub use aoai_blaster_core::responses::ResponsesRequest;
pub use aoai_blaster_core::retry::{AttemptRecord, JobError, JobErrorKind};
pub use aoai_blaster_core::scheduler::{EndpointCounters, QuotaSharing};
pub use blaster::{Blaster, BlasterError, JobHandle};
pub use dispatcher::{Dispatcher, DispatcherSeed, JobAnswer, StartError};
pub use messages::{
    ChatJob, ChatResult, Close, GetRedisUse, GetReport, HealthEvent, HealthReport, HealthSnapshot,
    Job, JobResult, RestartEndpoint, StreamDelta, Subscribe,
};
pub use report::{EndpointReport, EndpointState, clock_time};
pub use tls::{CERT_FILE_ENV, TlsError, TrustedCas};

#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use endpoint::test_hooks;
