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

/// Sets the overhead header on `reply`.
pub(crate) fn overhead(reply: &mut HttpResponse, overhead: Duration) {
    let millis = format!("{:.3}", overhead.as_secs_f64() * 1000.0);
    if let Ok(value) = HeaderValue::from_str(&millis) {
        reply.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(OVERHEAD_HEADER),
            value,
        );
    }
}
