//! Building replies: errors in OpenAI's shape with their retry headers, and the overhead header
//! every reply carries.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use aoai_blaster::core::gateway::GatewayError;

/// The header naming the gateway's own time for the request, in milliseconds (upstream
/// attempts excluded).
pub(crate) const OVERHEAD_HEADER: &str = "x-aoai-blaster-overhead-ms";

/// An error reply: its status, `retry-after`/`retry-after-ms` when set, the JSON body.
pub(crate) fn error(error: &GatewayError) -> HttpResponse {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut reply = HttpResponse::build(status);
    if let Some((seconds, millis)) = error.retry_headers() {
        reply.insert_header(("retry-after", seconds));
        reply.insert_header(("retry-after-ms", millis));
    }
    reply
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(error.body().to_string())
}

/// Sets the overhead header on `reply` (milliseconds with three decimals, written from the
/// integer microseconds: float formatting was a visible share of a request).
pub(crate) fn overhead(reply: &mut HttpResponse, overhead: Duration) {
    let micros = overhead.as_micros();
    let millis = format!("{}.{:03}", micros / 1000, micros % 1000);
    if let Ok(value) = HeaderValue::try_from(millis) {
        reply.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(OVERHEAD_HEADER),
            value,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_written_in_milliseconds_with_three_decimals() {
        for (overhead, text) in [
            (Duration::from_nanos(1_234_567), "1.234"),
            (Duration::ZERO, "0.000"),
            (Duration::from_micros(45), "0.045"),
            (Duration::from_secs(12), "12000.000"),
        ] {
            let mut reply = HttpResponse::Ok().finish();
            super::overhead(&mut reply, overhead);
            assert_eq!(reply.headers().get(OVERHEAD_HEADER).unwrap(), text);
        }
    }
}
