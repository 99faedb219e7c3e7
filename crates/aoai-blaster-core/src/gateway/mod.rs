//! The decisions of the OpenAI-compatible gateway (`aoai-blaster serve`), as plain values: which
//! deployments a request's `model` may use ([`ModelRoutes`]), whether a client's key is one of
//! ours ([`InboundKeys`]), what an error looks like on the wire ([`GatewayError`], OpenAI's
//! `{"error": {"message", "type", "code"}}`) and when to tell a refused client to come back
//! ([`retry_after`]). The actix-web shell lives in the `aoai-blaster-gateway` crate.

mod error;
mod keys;
mod retry_after;
mod route;

pub use error::GatewayError;
pub use keys::{InboundKeys, presented_key};
pub use retry_after::{Backlog, MIN_RETRY_AFTER, Readiness, retry_after};
pub use route::{ModelEntry, ModelRoutes, Route};
