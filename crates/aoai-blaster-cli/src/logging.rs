//! Logging with `tracing`: `RUST_LOG` picks what is shown (default: this tool's `info`,
//! everything else `warn`, so an endpoint being disabled shows but each cooldown does not; the
//! progress display shows the endpoints' states), `--log-format json` prints JSON lines, and
//! every line goes to stderr above the progress bars.

use std::io::IsTerminal;

use indicatif::MultiProgress;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::progress::ProgressWriter;

/// The filter used when `RUST_LOG` is not set.
pub(crate) const DEFAULT_FILTER: &str = "warn,aoai_blaster_cli=info";

/// Installs the global subscriber. A `RUST_LOG` that does not parse falls back to the default,
/// with a warning saying so.
pub(crate) fn init(format: LogFormat, multi: MultiProgress) {
    let (filter, bad_filter) = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => match EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(DEFAULT_FILTER), Some((text, error))),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ProgressWriter::new(multi));
    let installed = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    if installed.is_ok()
        && let Some((text, error)) = bad_filter
    {
        tracing::warn!(
            "RUST_LOG={text:?} is not a valid filter ({error}); using {DEFAULT_FILTER:?}"
        );
    }
}
