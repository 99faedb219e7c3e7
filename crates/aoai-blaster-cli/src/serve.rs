//! `aoai-blaster serve`: the OpenAI-compatible gateway ([`aoai_blaster_gateway`]) until Ctrl-C
//! or SIGTERM.

use aoai_blaster::BlasterConfig;
use aoai_blaster_gateway::{Gateway, GatewayOptions};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ServeArgs;
use crate::summary::{EXIT_OK, EXIT_USAGE};

/// `aoai-blaster serve`.
pub(crate) async fn serve_command(args: ServeArgs) -> u8 {
    let config = match BlasterConfig::from_file(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("aoai-blaster: config {}: {error}", args.config.display());
            return EXIT_USAGE;
        }
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // Signals first, so that one sent as soon as the address is printed stops cleanly.
    let (mut interrupts, mut terminations) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(interrupts), Ok(terminations)) => (interrupts, terminations),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("aoai-blaster: cannot listen for Ctrl-C: {error}");
            return EXIT_USAGE;
        }
    };
    let options = GatewayOptions {
        listen: args.listen,
        allow_unauthenticated: args.allow_unauthenticated,
        workers: args.workers,
    };
    let keys = config.gateway.api_keys.len();
    let gateway = match Gateway::start(config, options).await {
        Ok(gateway) => gateway,
        Err(error) => {
            eprintln!("aoai-blaster: {error}");
            return EXIT_USAGE;
        }
    };
    tracing::info!(inbound_keys = keys, "gateway ready");
    crate::console::print_line(&format!("listening on http://{}", gateway.local_addr()));
    tokio::select! {
        _ = interrupts.recv() => {}
        _ = terminations.recv() => {}
    }
    gateway.stop().await;
    EXIT_OK
}
