//! The wait a 429 names: its header values and the number in its message, pure.

use std::time::Duration;

use crate::config::{ABSURD_RETRY_AFTER_SECS, RetryHeader, RetryHeaders};

/// How long a 429 asks the client to wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RetryWait {
    /// A wait a server could mean: headers in whole seconds and milliseconds, rounded up.
    Exact(Duration),
    /// Seconds from [`ABSURD_RETRY_AFTER_SECS`] on, written in exponent notation.
    Absurd(f64),
}

impl RetryWait {
    /// The wait of a configured number of seconds (finite and not negative, as validated).
    pub(crate) fn from_secs_f64(secs: f64) -> Self {
        if secs >= ABSURD_RETRY_AFTER_SECS {
            RetryWait::Absurd(secs)
        } else {
            RetryWait::Exact(Duration::from_secs_f64(secs.max(0.0)))
        }
    }

    /// `(seconds, milliseconds)` as written in headers and the message.
    pub(crate) fn texts(self) -> (String, String) {
        match self {
            RetryWait::Exact(wait) => {
                let millis = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
                (millis.div_ceil(1000).to_string(), millis.to_string())
            }
            RetryWait::Absurd(secs) => {
                let text = format!("{secs:e}");
                // Milliseconds: the same mantissa, the exponent plus 3 (no float rounding).
                let millis = match text.split_once('e') {
                    Some((mantissa, exponent)) => {
                        let exponent: i32 = exponent.parse().unwrap_or(0);
                        format!("{mantissa}e{}", exponent + 3)
                    }
                    None => text.clone(),
                };
                (text, millis)
            }
        }
    }
}

/// The retry headers a 429 carries, and the wait for its message (`None`: no header is sent,
/// so the message names no number either).
pub(crate) fn retry_headers(
    set: RetryHeaders,
    wait: RetryWait,
) -> (Vec<(&'static str, String)>, Option<String>) {
    if set.is_empty() {
        return (Vec::new(), None);
    }
    let (secs, millis) = wait.texts();
    let mut headers = Vec::with_capacity(3);
    if set.contains(RetryHeader::RetryAfter) {
        headers.push(("retry-after", secs.clone()));
    }
    if set.contains(RetryHeader::RetryAfterMs) {
        headers.push(("retry-after-ms", millis.clone()));
    }
    if set.contains(RetryHeader::XMsRetryAfterMs) {
        headers.push(("x-ms-retry-after-ms", millis));
    }
    (headers, Some(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(secs: f64) -> (String, String) {
        RetryWait::from_secs_f64(secs).texts()
    }

    #[test]
    fn waits_round_up_to_whole_units() {
        assert_eq!(texts(86_400.0), ("86400".to_owned(), "86400000".to_owned()));
        assert_eq!(texts(0.0), ("0".to_owned(), "0".to_owned()));
        assert_eq!(texts(0.0005), ("1".to_owned(), "1".to_owned()));
        assert_eq!(texts(1.25), ("2".to_owned(), "1250".to_owned()));
        assert_eq!(
            RetryWait::Exact(Duration::from_micros(47_654_500)).texts(),
            ("48".to_owned(), "47655".to_owned())
        );
    }

    #[test]
    fn absurd_waits_use_exponent_notation() {
        assert_eq!(texts(1e30), ("1e30".to_owned(), "1e33".to_owned()));
        assert_eq!(texts(2.5e20), ("2.5e20".to_owned(), "2.5e23".to_owned()));
        assert_eq!(texts(1e15), ("1e15".to_owned(), "1e18".to_owned()));
        assert_eq!(texts(1e15 - 1.0).0, "999999999999999");
    }

    #[test]
    fn header_sets() {
        let wait = RetryWait::from_secs_f64(2.0);
        let (headers, message) = retry_headers(RetryHeaders::AZURE, wait);
        assert_eq!(
            headers,
            [
                ("retry-after", "2".to_owned()),
                ("retry-after-ms", "2000".to_owned())
            ]
        );
        assert_eq!(message.as_deref(), Some("2"));
        let (headers, _) = retry_headers(RetryHeaders::only(RetryHeader::XMsRetryAfterMs), wait);
        assert_eq!(headers, [("x-ms-retry-after-ms", "2000".to_owned())]);
        assert_eq!(retry_headers(RetryHeaders::ALL, wait).0.len(), 3);
        assert_eq!(retry_headers(RetryHeaders::NONE, wait), (Vec::new(), None));
    }
}
