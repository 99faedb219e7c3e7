//! `aoai-sim --config sim.yaml`: run the simulator until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A faithful Azure OpenAI simulator.
#[derive(Debug, Parser)]
#[command(name = "aoai-sim", version, about)]
struct Args {
    /// Configuration file (YAML, JSON or TOML, by extension).
    #[arg(long, short)]
    config: PathBuf,
    #[command(flatten)]
    listen: aoai_sim::ListenFlags,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let system = actix_rt::System::new();
    system.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let mut config = match aoai_sim::SimConfig::from_file(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("aoai-sim: {err}");
            return ExitCode::from(2);
        }
    };
    args.listen.apply(&mut config);
    let sim = match aoai_sim::start(config).await {
        Ok(sim) => sim,
        Err(err) => {
            eprintln!("aoai-sim: {err}");
            return ExitCode::from(2);
        }
    };
    // Listen for the signals before announcing the address: a caller that reads the address
    // and signals at once must not kill the process before the handler is in place.
    let stop = match StopSignal::listen() {
        Ok(stop) => stop,
        Err(err) => {
            eprintln!("aoai-sim: cannot listen for Ctrl-C: {err}");
            sim.stop().await;
            return ExitCode::FAILURE;
        }
    };
    for listener in sim.listeners() {
        if listener.shared {
            println!("aoai-sim listening on {}", listener.url);
        } else {
            println!(
                "aoai-sim listening on {} for {}",
                listener.url,
                listener.deployments.join(", ")
            );
        }
    }
    if let Some(endpoint) = sim.managed_identity_endpoint() {
        println!("aoai-sim managed identity endpoint {endpoint}");
    }
    stop.wait().await;
    sim.stop().await;
    ExitCode::SUCCESS
}

/// SIGINT or SIGTERM, registered before the wait begins.
#[cfg(unix)]
struct StopSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignal {
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Ctrl-C, where Unix signals are not available.
#[cfg(not(unix))]
struct StopSignal;

#[cfg(not(unix))]
impl StopSignal {
    fn listen() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
