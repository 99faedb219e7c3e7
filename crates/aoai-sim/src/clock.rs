//! The simulator's time: how long since it started, from the wall clock or moved by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Time since the simulator started. Quota windows and outages are read from it.
#[derive(Debug, Clone)]
pub(crate) enum SimClock {
    /// Wall-clock time since `start`.
    Real { start: Instant },
    /// Nanoseconds set by hand; starts at zero.
    Manual { nanos: Arc<AtomicU64> },
}

impl SimClock {
    pub(crate) fn real(start: Instant) -> Self {
        SimClock::Real { start }
    }

    pub(crate) fn manual() -> Self {
        SimClock::Manual {
            nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        match self {
            SimClock::Real { start } => start.elapsed(),
            SimClock::Manual { nanos } => Duration::from_nanos(nanos.load(Ordering::Acquire)),
        }
    }

    /// Move a manual clock forward; returns false for the real clock.
    pub(crate) fn advance(&self, by: Duration) -> bool {
        match self {
            SimClock::Real { .. } => false,
            SimClock::Manual { nanos } => {
                let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
                let _ = nanos.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                    Some(now.saturating_add(by))
                });
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = SimClock::manual();
        assert_eq!(clock.elapsed(), Duration::ZERO);
        assert!(clock.advance(Duration::from_millis(1500)));
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
        let shared = clock.clone();
        assert!(shared.advance(Duration::from_millis(500)));
        assert_eq!(clock.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn real_clock_cannot_be_advanced() {
        let start = Instant::now();
        let clock = SimClock::real(start);
        assert!(!clock.advance(Duration::from_secs(1)));
        assert!(clock.elapsed() < Duration::from_secs(60));
    }
}
