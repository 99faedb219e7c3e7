//! Shared pieces of the aoai-blaster benchmarks.
//!
//! - [`sim`]: the simulator in a child process (the bench binary re-runs itself), so the
//!   client's CPU time is measured without the simulator's;
//! - [`cpu`]: CPU time of this process and of each of its threads, from `/proc`;
//! - [`latency`]: percentiles with `hdrhistogram`;
//! - [`drive`]: running jobs through the Dispatcher, closed loop or at a fixed open-loop rate;
//! - [`scenario`]: `bench-quota`'s deployments and batch;
//! - [`processes`]: that batch split between several `aoai-blaster run` processes.
//!
//! The binaries are `overhead` (jobs/s, CPU per job, added latency), `bench-shared` (Redis
//! calls and time per job of shared quotas) and `compare-python`
//! (side by side with the Python `azure-openai-blaster` 0.1.0). See the crate README.

pub mod cpu;
pub mod drive;
pub mod latency;
pub mod processes;
pub mod scenario;
pub mod sim;

/// Prints `line` and flushes, so progress shows while a long phase runs.
pub fn say(line: impl AsRef<str>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}
