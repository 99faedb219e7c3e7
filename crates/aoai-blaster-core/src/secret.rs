//! A string that never shows itself: API keys and other credentials.
//!
//! [`Secret`] wraps the value so that `Debug`, `Display` and therefore logs, error messages and
//! reports print `***` instead. The only way to read it is [`Secret::expose`], which makes every
//! place that handles the real value easy to find.
//!
//! ```
//! use aoai_blaster_core::secret::Secret;
//!
//! let key = Secret::new("0123456789abcdef");
//! assert_eq!(format!("{key:?} {key}"), "Secret(***) ***");
//! assert_eq!(key.expose(), "0123456789abcdef");
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A credential (API key, token) whose `Debug` and `Display` print `***`, never the value.
///
/// It deserializes from a plain string, so config structs can hold it directly. It deliberately
/// does not implement `Serialize`: writing a config back out must not write its keys.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value: use it only where it is sent (an `api-key` header) or interpreted.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// Accepts a string only. The error for anything else never quotes the value (a key written
    /// without quotes may have been read as a number).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

const NOT_TEXT: &str = "must be a text value: put it in quotes (the value is not shown)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("sk-very-secret-value");
        let shown = format!("{secret:?} {secret} {secret:#?} {:?}", Some(&secret));
        assert!(!shown.contains("very-secret"), "{shown}");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "sk-very-secret-value");
    }

    #[test]
    fn deserializes_from_a_string_and_compares_by_value() {
        let secret: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(secret, Secret::from("abc"));
        assert_ne!(secret, Secret::from("abd"));
        assert!(Secret::default().is_empty());
        let error = serde_json::from_str::<Secret>("123456789")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("put it in quotes") && !error.contains("123456789"),
            "{error}"
        );
        assert!(serde_json::from_str::<Secret>("[1]").is_err());
    }
}
