//! Fault selection and outage schedules, with the random draw and the time as inputs.

use std::time::Duration;

use crate::config::{FaultSpec, OutageSpec};

/// A fault injected into one admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// 500.
    Internal,
    /// 503.
    Overloaded,
    /// Hold the request without replying.
    Hang,
    /// Headers and part of the body, then abort the connection.
    Drop,
    /// Stream stops without `[DONE]`, connection aborted.
    StreamCut,
    /// Stream sends an error event and ends.
    StreamError,
    /// 400 content filter.
    ContentFilter,
    /// 200 with a body that is not JSON.
    NotJson,
    /// 429 with a long `retry-after`, whatever the quota.
    Throttled,
    /// Stream stops sending after some deltas, then the connection is aborted.
    StreamStall,
}

const ORDER: [Fault; 10] = [
    Fault::Internal,
    Fault::Overloaded,
    Fault::Hang,
    Fault::Drop,
    Fault::StreamCut,
    Fault::StreamError,
    Fault::ContentFilter,
    Fault::NotJson,
    Fault::Throttled,
    Fault::StreamStall,
];

/// Pick the fault for a draw `u` in `[0, 1)`: the probabilities are laid end to end in
/// [`FaultSpec::probabilities`] order and `u` falls in one of them or past them (no fault).
/// Stream-only faults keep their share of `[0, 1)` for non-streaming requests but do nothing.
pub(crate) fn pick_fault(spec: &FaultSpec, stream: bool, u: f64) -> Option<Fault> {
    let mut upper = 0.0;
    for (fault, (_, p)) in ORDER.into_iter().zip(spec.probabilities()) {
        upper += p;
        if u < upper {
            let stream_only = matches!(
                fault,
                Fault::StreamCut | Fault::StreamError | Fault::StreamStall
            );
            return (!stream_only || stream).then_some(fault);
        }
    }
    None
}

/// The outage in force at `elapsed`, if any (the first listed wins when they overlap).
pub(crate) fn outage_at(outages: &[OutageSpec], elapsed: Duration) -> Option<&OutageSpec> {
    outages.iter().find(|outage| outage.covers(elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutageMode;

    #[test]
    fn draws_fall_into_consecutive_slices() {
        let spec = FaultSpec {
            p_500: 0.1,
            p_503: 0.1,
            p_hang: 0.1,
            p_drop: 0.1,
            p_stream_cut: 0.1,
            p_stream_error: 0.1,
            p_content_filter: 0.1,
            p_not_json: 0.1,
            p_429: 0.1,
            ..Default::default()
        };
        let expected = [
            (0.0, Some(Fault::Internal)),
            (0.15, Some(Fault::Overloaded)),
            (0.25, Some(Fault::Hang)),
            (0.35, Some(Fault::Drop)),
            (0.45, Some(Fault::StreamCut)),
            (0.55, Some(Fault::StreamError)),
            (0.65, Some(Fault::ContentFilter)),
            (0.75, Some(Fault::NotJson)),
            (0.85, Some(Fault::Throttled)),
            (0.95, None),
        ];
        for (u, fault) in expected {
            assert_eq!(pick_fault(&spec, true, u), fault, "u = {u}");
        }
        // Without streaming the stream faults do nothing and do not shift the others.
        assert_eq!(pick_fault(&spec, false, 0.45), None);
        assert_eq!(pick_fault(&spec, false, 0.55), None);
        assert_eq!(pick_fault(&spec, false, 0.65), Some(Fault::ContentFilter));
        // A stall takes the slice after the others, so adding it shifts no earlier draw.
        let stall = FaultSpec {
            p_stream_stall: 0.05,
            ..spec
        };
        assert_eq!(pick_fault(&stall, true, 0.85), Some(Fault::Throttled));
        assert_eq!(pick_fault(&stall, true, 0.92), Some(Fault::StreamStall));
        assert_eq!(pick_fault(&stall, false, 0.92), None);
        assert_eq!(pick_fault(&stall, true, 0.97), None);
    }

    #[test]
    fn certain_and_impossible_faults() {
        let certain = FaultSpec {
            p_hang: 1.0,
            ..Default::default()
        };
        assert_eq!(pick_fault(&certain, false, 0.999_999), Some(Fault::Hang));
        assert_eq!(pick_fault(&FaultSpec::default(), true, 0.0), None);
    }

    #[test]
    fn outages_follow_the_schedule() {
        let outages = [OutageSpec::status_503(5, 10), OutageSpec::refuse(20, 30)];
        let mode = |secs: f64| outage_at(&outages, Duration::from_secs_f64(secs)).map(|o| o.mode);
        assert_eq!(mode(4.0), None);
        assert_eq!(mode(5.0), Some(OutageMode::Status503));
        assert_eq!(mode(10.0), None);
        assert_eq!(mode(29.999), Some(OutageMode::Refuse));
    }
}
