//! The gateway's own metrics, beside the blaster's (same recorder, same `/metrics`):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `aoai_blaster_gateway_requests_total{route,status}` | counter | requests answered, by route and HTTP status |
//! | `aoai_blaster_gateway_overhead_seconds{route}` | histogram | time spent in the gateway per request, upstream attempts excluded |

use std::cell::RefCell;
use std::time::Duration;

use metrics::{Counter, Histogram, Unit};

/// A route's and status's handles, registered once per thread: `counter!` with labels builds
/// and hashes its key on every call, a measurable share of a request's time.
struct Handles {
    route: &'static str,
    status: u16,
    requests: Counter,
    overhead: Histogram,
}

thread_local! {
    static HANDLES: RefCell<Vec<Handles>> = const { RefCell::new(Vec::new()) };
}

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
    HANDLES.with_borrow_mut(|handles| {
        let index = match handles
            .iter()
            .position(|h| h.status == status && h.route == route)
        {
            Some(index) => index,
            None => {
                handles.push(Handles {
                    route,
                    status,
                    requests: metrics::counter!(
                        "aoai_blaster_gateway_requests_total",
                        "route" => route,
                        "status" => status_label(status),
                    ),
                    overhead: metrics::histogram!(
                        "aoai_blaster_gateway_overhead_seconds",
                        "route" => route
                    ),
                });
                handles.len() - 1
            }
        };
        let handle = &handles[index];
        handle.requests.increment(1);
        handle.overhead.record(overhead.as_secs_f64());
    });
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
