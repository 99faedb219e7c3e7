//! The gateway's own metrics, beside the blaster's (same recorder, same `/metrics`):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `aoai_blaster_gateway_requests_total{route,status}` | counter | requests answered, by route and HTTP status |
//! | `aoai_blaster_gateway_overhead_seconds{route}` | histogram | time spent in the gateway per request, upstream attempts excluded |

use std::time::Duration;

use metrics::Unit;

/// Registers the descriptions (once per process is enough; later calls change nothing).
pub(crate) fn describe() {
    metrics::describe_counter!(
        "aoai_blaster_gateway_requests_total",
        Unit::Count,
        "Gateway requests answered, by route and HTTP status"
    );
    metrics::describe_histogram!(
        "aoai_blaster_gateway_overhead_seconds",
        Unit::Seconds,
        "Time spent in the gateway per request, upstream attempts excluded"
    );
}

/// Counts one answered request and records its overhead.
pub(crate) fn answered(route: &'static str, status: u16, overhead: Duration) {
    metrics::counter!(
        "aoai_blaster_gateway_requests_total",
        "route" => route,
        "status" => status_label(status),
    )
    .increment(1);
    metrics::histogram!("aoai_blaster_gateway_overhead_seconds", "route" => route)
        .record(overhead.as_secs_f64());
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        404 => "404",
        429 => "429",
        499 => "499",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}
