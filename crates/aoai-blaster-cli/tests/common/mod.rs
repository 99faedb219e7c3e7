//! What the binary's end-to-end tests share: the simulator on 127.0.0.1 (port 0), the binary
//! run as a child process, and its output described for a failed assertion.
#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Output, Stdio};

use aoai_sim::{DeploymentSpec, SimConfig, SimHandle};

/// The `aoai-blaster` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_aoai-blaster");

/// A simulator serving `deployments` on two worker threads.
pub async fn start_sim(deployments: Vec<DeploymentSpec>) -> SimHandle {
    aoai_sim::start(SimConfig {
        deployments,
        workers: 2,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts")
}

/// The binary with `args`, its logs at `warn` (its own at `info`), stdout and stderr piped,
/// and no `AOAI_BLASTER__NUM_WORKERS` from the environment.
pub fn command(args: &[String]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("RUST_LOG", "warn,aoai_blaster_cli=info")
        .env_remove("AOAI_BLASTER__NUM_WORKERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs the binary to its end without blocking the simulator's runtime.
pub async fn run_to_end(args: Vec<String>) -> Output {
    actix_rt::task::spawn_blocking(move || command(&args).output().expect("the binary runs"))
        .await
        .expect("the blocking task finishes")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The exit status, stdout and stderr, for an assertion's message.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    )
}
