//! The simulator's errors: configuration, listening, control calls.

/// What can go wrong when loading, starting or steering the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration file could not be read or parsed.
    #[error("cannot load simulator config {path}: {source}")]
    Load {
        /// The file.
        path: String,
        /// The parser's complaint.
        #[source]
        source: config::ConfigError,
    },
    /// A configuration value is wrong; the message names the key and the fix.
    #[error("invalid simulator config: {0}")]
    Invalid(String),
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}; choose a free port, or port 0 for any")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A control call named a deployment the simulator does not serve.
    #[error("no deployment named {0:?} in the simulator config")]
    UnknownDeployment(String),
    /// `set_refusing` was called for a deployment on the shared listener.
    #[error(
        "deployment {0:?} is on the shared listener; refusing connections needs `listener: own`"
    )]
    SharedListener(String),
    /// The simulator's own thread (see [`SimThread`](crate::SimThread)) failed or is gone.
    #[error("{0}")]
    Thread(String),
    /// `advance_clock` was called while the simulator runs on the wall clock.
    #[error("the simulator runs on the real clock; set `clock: manual` to move time by hand")]
    RealClock,
}
