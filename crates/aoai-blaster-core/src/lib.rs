//! Pure logic of aoai-blaster: everything that decides, with no actors and no sockets.
//!
//! Every type here takes time (`Instant`, `SystemTime`) and randomness as inputs, so it is
//! tested with exact values. The `aoai-blaster` crate wraps these in actix actors.

pub mod chat;
pub mod classify;
pub mod config;
pub mod embeddings;
pub mod error_body;
pub mod extra;
pub mod gateway;
pub mod health;
pub mod operation;
pub mod quota;
pub mod raw_reply;
pub mod responses;
pub mod retry;
pub mod ring;
pub mod scheduler;
pub mod secret;
pub mod shared;
pub mod sse;
pub mod stale;
pub mod strategy;
pub mod tokens;

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
