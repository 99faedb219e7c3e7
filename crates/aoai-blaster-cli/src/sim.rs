//! `aoai-blaster sim`: the Azure OpenAI simulator, standalone (the same as the `aoai-sim`
//! binary), until Ctrl-C or SIGTERM.

use crate::cli::SimArgs;
use crate::setup::StopSignals;
use crate::summary::{EXIT_OK, EXIT_USAGE};

/// `aoai-blaster sim`.
pub(crate) async fn sim_command(args: SimArgs) -> u8 {
    let mut config = match aoai_sim::SimConfig::from_file(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!(
                "aoai-blaster: simulator config {}: {error}",
                args.config.display()
            );
            return EXIT_USAGE;
        }
    };
    args.listen.apply(&mut config);
    let mut stop = match StopSignals::listen() {
        Ok(stop) => stop,
        Err(status) => return status,
    };
    let sim = match aoai_sim::start(config).await {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("aoai-blaster: cannot start the simulator: {error}");
            return EXIT_USAGE;
        }
    };
    for listener in sim.listeners() {
        if listener.shared {
            crate::console::print_line(&format!("aoai-sim listening on {}", listener.url));
        } else {
            crate::console::print_line(&format!(
                "aoai-sim listening on {} for {}",
                listener.url,
                listener.deployments.join(", ")
            ));
        }
    }
    if let Some(endpoint) = sim.managed_identity_endpoint() {
        crate::console::print_line(&format!("aoai-sim managed identity endpoint {endpoint}"));
    }
    stop.wait().await;
    sim.stop().await;
    EXIT_OK
}
