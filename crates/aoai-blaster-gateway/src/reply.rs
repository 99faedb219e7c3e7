//! Building replies: errors in OpenAI's shape with their retry headers, and the overhead header
//! every reply carries.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use aoai_blaster::core::gateway::GatewayError;

/// The header naming the gateway's own time for the request, in milliseconds (upstream
/// attempts excluded); built at compile time, as `HeaderName::from_static` checks its text
/// at run time otherwise.
pub(crate) static OVERHEAD_HEADER: HeaderName =
    HeaderName::from_static("x-aoai-blaster-overhead-ms");

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

/// Sets the overhead header on `reply`: milliseconds with three decimals, written digit by
/// digit from the integer microseconds into a stack buffer (`format!` and float formatting
/// were a visible share of a request).
pub(crate) fn overhead(reply: &mut HttpResponse, overhead: Duration) {
    let micros = u64::try_from(overhead.as_micros()).unwrap_or(u64::MAX);
    let mut text = [0u8; 24];
    let mut start = text.len();
    let mut rest = micros;
    // At least "0.000": three decimals, the point, one integer digit.
    while rest > 0 || text.len() - start < 5 {
        start -= 1;
        text[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if text.len() - start == 3 {
            start -= 1;
            text[start] = b'.';
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(&text[start..]) {
        reply.headers_mut().insert(OVERHEAD_HEADER.clone(), value);
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
            (Duration::from_micros(1_000), "1.000"),
            (Duration::from_micros(999), "0.999"),
            (Duration::from_micros(10_005), "10.005"),
            (Duration::MAX, "18446744073709551.615"),
        ] {
            let mut reply = HttpResponse::Ok().finish();
            super::overhead(&mut reply, overhead);
            assert_eq!(reply.headers().get(&OVERHEAD_HEADER).unwrap(), text);
        }
    }
}
