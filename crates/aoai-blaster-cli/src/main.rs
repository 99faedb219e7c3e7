//! `aoai-blaster`: see `aoai-blaster --help` and the crate docs of `aoai_blaster_cli`.

use std::process::ExitCode;

use aoai_blaster_cli::cli::{Cli, Command};
use aoai_blaster_cli::progress::ProgressMode;
use aoai_blaster_cli::summary::EXIT_USAGE;
use aoai_blaster_cli::{check, demo, logging, run, sim};
use clap::Parser;

/// mimalloc: each job makes many small allocations, and glibc's
/// allocator cost about 15 % more CPU per job in the overhead benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
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
        Command::Check(_) | Command::Sim(_) => std::time::Duration::from_secs(5),
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
        }
    });
    ExitCode::from(status)
}
