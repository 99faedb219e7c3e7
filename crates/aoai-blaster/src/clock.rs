//! The one source of "now" for the actors: tokio's clock, so a paused test clock governs it.

use std::time::Instant;

/// The current instant on tokio's clock, as a `std` instant for the pure logic.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
