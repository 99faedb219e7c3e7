//! `aoai-blaster serve`: the OpenAI-compatible gateway ([`aoai_blaster_gateway`]) until Ctrl-C
//! or SIGTERM.

use aoai_blaster_gateway::{Gateway, GatewayOptions};

use crate::cli::ServeArgs;
use crate::setup::{StopSignals, load_config};
use crate::summary::{EXIT_OK, EXIT_USAGE};

/// `aoai-blaster serve`.
pub(crate) async fn serve_command(args: ServeArgs) -> u8 {
    let config = match load_config(&args.config) {
        Ok(config) => config,
        Err(status) => return status,
    };
    let mut stop = match StopSignals::listen() {
        Ok(stop) => stop,
        Err(status) => return status,
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
    stop.wait().await;
    gateway.stop().await;
    EXIT_OK
}
