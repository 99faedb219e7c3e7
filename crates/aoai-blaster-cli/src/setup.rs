//! Start-up steps the long-running commands share: the config, and the signals that stop them.

use std::path::Path;

use aoai_blaster::BlasterConfig;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::summary::EXIT_USAGE;

/// Reads and validates the config at `path` and logs its warnings; on failure prints why and
/// gives the usage exit code.
pub(crate) fn load_config(path: &Path) -> Result<BlasterConfig, u8> {
    match BlasterConfig::from_file(path) {
        Ok(config) => {
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            Ok(config)
        }
        Err(error) => {
            eprintln!("aoai-blaster: config {}: {error}", path.display());
            Err(EXIT_USAGE)
        }
    }
}

/// Ctrl-C and SIGTERM. Listen before announcing an address, so that a signal sent as soon as
/// the address is printed stops the command cleanly.
pub(crate) struct StopSignals {
    interrupts: Signal,
    terminations: Signal,
}

impl StopSignals {
    /// Starts listening; on failure prints why and gives the usage exit code.
    pub(crate) fn listen() -> Result<StopSignals, u8> {
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupts), Ok(terminations)) => Ok(StopSignals {
                interrupts,
                terminations,
            }),
            (Err(error), _) | (_, Err(error)) => {
                eprintln!("aoai-blaster: cannot listen for Ctrl-C: {error}");
                Err(EXIT_USAGE)
            }
        }
    }

    /// Waits for the first of them.
    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupts.recv() => {}
            _ = self.terminations.recv() => {}
        }
    }
}
