//! # aoai-blaster-cli
//!
//! The `aoai-blaster` command line: a demo against the embedded simulator, resumable batch runs
//! in the OpenAI / Azure Batch JSONL format, a config check and the simulator itself. The binary
//! (`src/main.rs`) is glue over [`main`]; the modules are private to this crate and tested here,
//! the command as a whole by `tests/cli.rs` through the binary.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::progress::ProgressMode;
use crate::summary::EXIT_USAGE;

mod batch;
mod check;
mod cli;
mod console;
mod demo;
mod logging;
mod progress;
mod redis_use;
mod run;
mod run_loop;
mod serve;
mod setup;
mod sim;
mod summary;

/// Runs `aoai-blaster` with the process's arguments and returns its exit status: 0 every job
/// succeeded, 1 some failed or some input lines were invalid, 2 a usage, config, input or output
/// error, 130 interrupted (`--help` and `--version` exit 0).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let interval = match &cli.command {
        Command::Run(args) => args.options.progress_interval,
        Command::Demo(args) => args.options.progress_interval,
        Command::Check(_) | Command::Sim(_) | Command::Serve(_) => {
            std::time::Duration::from_secs(5)
        }
    };
    let mode = ProgressMode::detect(interval);
    let multi = mode.multi();
    logging::init(cli.log_format, multi.clone());
    let system = actix_rt::System::new();
    let status = system.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::demo_command(args, multi, mode).await,
            Command::Run(args) => run::run_command(args, multi, mode).await,
            Command::Check(args) => check::check_command(args).await,
            Command::Sim(args) => sim::sim_command(args).await,
            Command::Serve(args) => serve::serve_command(args).await,
        }
    });
    ExitCode::from(status)
}
