//! Durations as the file writes them: a number of seconds (`30`, `0.5`, as in the Python
//! package) or a string such as `"1500ms"`, `"2m"` or `"1h 30m"`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub(super) fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<DurationValue>::deserialize(deserializer)?.map(|d| d.0))
}

/// `never`, or a duration as [`optional_duration`] reads it: `Some(None)` for `never`.
pub(super) fn optional_duration_or_never<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Duration>>, D::Error> {
    Ok(Option::<DurationOrNever>::deserialize(deserializer)?.map(|d| d.0))
}

/// `never` (any case) or a [`DurationValue`].
struct DurationOrNever(Option<Duration>);

impl<'de> Deserialize<'de> for DurationOrNever {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationOrNever;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "`never` or {DURATION_EXPECTED}")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationOrNever, E> {
                Ok(DurationOrNever(Some(Duration::from_secs(v))))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationOrNever, E> {
                DurationValue::deserialize(serde::de::value::I64Deserializer::<E>::new(v))
                    .map(|d| DurationOrNever(Some(d.0)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationOrNever, E> {
                DurationValue::deserialize(serde::de::value::F64Deserializer::<E>::new(v))
                    .map(|d| DurationOrNever(Some(d.0)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationOrNever, E> {
                if v.trim().eq_ignore_ascii_case("never") {
                    return Ok(DurationOrNever(None));
                }
                parse_duration(v)
                    .map(|d| DurationOrNever(Some(d)))
                    .map_err(|_| {
                        E::custom(format!(
                            "expected `never` or {DURATION_EXPECTED}, got {v:?}"
                        ))
                    })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A duration written as seconds (int or float) or as a humantime string.
struct DurationValue(Duration);

const DURATION_EXPECTED: &str =
    "a duration: a number of seconds (30, 0.5) or a string like \"1500ms\", \"2m\", \"1h 30m\"";

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationValue, E> {
                u64::try_from(v)
                    .map(|v| DurationValue(Duration::from_secs(v)))
                    .map_err(|_| E::custom(format!("must not be negative, got {v}")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationValue, E> {
                Duration::try_from_secs_f64(v)
                    .map(DurationValue)
                    .map_err(|_| E::custom(format!("expected {DURATION_EXPECTED}, got {v}")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses `"30"`, `"0.5"` (seconds) or a humantime string (`"1500ms"`, `"2m"`, `"1h 30m"`).
///
/// ```
/// # use std::time::Duration;
/// use aoai_blaster_core::config::parse_duration;
/// assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
/// assert!(parse_duration("soon").unwrap_err().contains("\"1500ms\""));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("expected {DURATION_EXPECTED}, got {text:?}"));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("expected {DURATION_EXPECTED}, got {text:?} ({error})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{deployment, load};
    use serde_json::{Value, json};

    #[test]
    fn durations_accept_seconds_and_humantime() {
        let timeout = |v: Value| {
            load(json!({"request_timeout": v, "deployments": [deployment("a")]}))
                .map(|c| c.deployments[0].timeouts.request)
        };
        assert_eq!(timeout(json!(90)).unwrap(), Duration::from_secs(90));
        assert_eq!(timeout(json!(1.5)).unwrap(), Duration::from_millis(1500));
        assert_eq!(timeout(json!("2m")).unwrap(), Duration::from_secs(120));
        assert_eq!(timeout(json!("45")).unwrap(), Duration::from_secs(45));
        let negative = timeout(json!(-1)).unwrap_err().to_string();
        assert!(
            negative.contains("request_timeout: must not be negative, got -1"),
            "{negative}"
        );
        let zero = timeout(json!(0)).unwrap_err().to_string();
        assert!(
            zero.contains("request_timeout: must be greater than 0"),
            "{zero}"
        );
        let word = timeout(json!("soon")).unwrap_err().to_string();
        assert!(
            word.contains("request_timeout: expected a duration"),
            "{word}"
        );
    }
}
