//! Test support for aoai-blaster: real servers that a test starts itself, on a socket no other
//! test shares, and stops when it is dropped.
//!
//! Tests use real servers, never mocked clients: [`RedisServer`] runs Debian's `redis-server`
//! (or any binary named by `AOAI_REDIS_SERVER`) on a unix socket in a temp dir, so parallel
//! tests never collide on a port, and it can be killed and restarted mid-test to exercise
//! what happens when Redis goes away and comes back; [`RedisServer::start_tls`] also serves
//! TLS on a loopback port, with certificates `openssl` makes for it ([`TestCertificates`]: a
//! CA of the test's own and a server certificate it signed, for any TLS server a test starts).
//!
//! For the benchmarks that run the `aoai-blaster` binary: [`blaster_run`] builds its `run`
//! command, and [`Proc`] reads a process's CPU time, memory and open files from `/proc`
//! (Linux) while it runs. With the `proptest` feature, `fuzz_config` sets the property tests
//! that feed parsers hostile input.

mod certificates;
#[cfg(feature = "proptest")]
mod fuzzing;
mod process;
mod redis_server;

pub use certificates::{CertificateError, TestCertificates};
#[cfg(feature = "proptest")]
pub use fuzzing::fuzz_config;
pub use process::{Proc, Stat, blaster_run};
pub use redis_server::{REDIS_SERVER_ENV, RedisServer, RedisServerError};
