//! A string that never shows itself: API keys and other credentials, and the one redactor for
//! text that came from elsewhere.
//!
//! [`Secret`] wraps the value so that `Debug`, `Display` and therefore logs, error messages and
//! reports print `***` instead. The only way to read it is [`Secret::expose`], which makes every
//! place that handles the real value easy to find.
//!
//! Text from upstream (an error body that echoes the request's headers) can hold a secret too:
//! [`redact`] replaces every secret this process holds (each `Secret` made registers itself)
//! and anything shaped like a bearer token or an `api-key` header value with `[REDACTED]`.
//!
//! ```
//! use aoai_blaster_core::secret::Secret;
//!
//! let key = Secret::new("0123456789abcdef");
//! assert_eq!(format!("{key:?} {key}"), "Secret(***) ***");
//! assert_eq!(key.expose(), "0123456789abcdef");
//! ```

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Deserializer};

/// What replaces a secret in redacted text.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are not searched for in text (they would match ordinary words);
/// real keys and tokens are 32 characters and more.
const MIN_SECRET_LEN: usize = 8;

/// The most secrets remembered (tokens are refreshed hourly: the oldest are forgotten).
const MAX_KNOWN: usize = 256;

/// Every secret made in this process, newest last.
static KNOWN: Mutex<VecDeque<Arc<str>>> = Mutex::new(VecDeque::new());

fn remember(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    if known.iter().any(|k| &**k == value) {
        return;
    }
    if known.len() == MAX_KNOWN {
        known.pop_front();
    }
    known.push_back(Arc::from(value));
}

/// `text` with every secret this process holds, every `Bearer <token>` and every `api-key`
/// header value replaced by [`REDACTED`]: for text from upstream before it reaches logs,
/// reports or output files.
///
/// ```
/// use aoai_blaster_core::secret::{Secret, redact};
///
/// let key = Secret::new("0123456789abcdef0123");
/// let echoed = format!("401: bad request headers {{\"api-key\": \"{}\"}}", key.expose());
/// assert_eq!(redact(&echoed), "401: bad request headers {\"api-key\": \"[REDACTED]\"}");
/// assert_eq!(redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"), "Authorization: Bearer [REDACTED]");
/// assert_eq!(redact("nothing to hide"), "nothing to hide");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    {
        let known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
        for secret in known.iter() {
            if out.contains(&**secret) {
                out = Cow::Owned(out.replace(&**secret, REDACTED));
            }
        }
    }
    for marker in ["bearer ", "api-key", "api_key", "authorization: basic "] {
        if let Some(masked) = mask_after(&out, marker) {
            out = Cow::Owned(masked);
        }
    }
    out
}

/// Masks the value after each case-insensitive `marker` (skipping `"`, `:`, `=` and spaces):
/// `None` when there is nothing to mask.
fn mask_after(text: &str, marker: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains(marker) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut changed = false;
    for (at, _) in lower.match_indices(marker) {
        if at < rest {
            continue;
        }
        let after = at + marker.len();
        let separators = text[after..]
            .find(|c: char| !matches!(c, '"' | '\'' | ':' | '=' | ' ' | '\\'))
            .map_or(text.len(), |i| after + i);
        let end = text[separators..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ';' | '\\'))
            .map_or(text.len(), |i| separators + i);
        let value = &text[separators..end];
        if value.len() < MIN_SECRET_LEN || value == REDACTED {
            continue;
        }
        out.push_str(&text[rest..separators]);
        out.push_str(REDACTED);
        rest = end;
        changed = true;
    }
    if !changed {
        return None;
    }
    out.push_str(&text[rest..]);
    Some(out)
}

/// A credential (API key, token) whose `Debug` and `Display` print `***`, never the value.
///
/// It deserializes from a plain string, so config structs can hold it directly. It deliberately
/// does not implement `Serialize`: writing a config back out must not write its keys.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (and remembers it for [`redact`]).
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        remember(&value);
        Secret(value)
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
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
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
                Ok(Secret::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret::new(v))
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

    #[test]
    fn redaction_covers_known_secrets_bearer_tokens_and_key_headers() {
        let key = Secret::new("test-key-0123456789-redaction");
        let body = format!(
            "echo: api-key={k}; authorization=Bearer abcdefghij.klmnop; again {k}",
            k = key.expose()
        );
        let clean = redact(&body);
        assert!(!clean.contains(key.expose()), "{clean}");
        assert!(!clean.contains("abcdefghij"), "{clean}");
        assert_eq!(
            clean,
            "echo: api-key=[REDACTED]; authorization=Bearer [REDACTED]; again [REDACTED]"
        );
        // Short values and ordinary words are left alone.
        assert_eq!(
            redact("api-key: short, bearer of bad news"),
            "api-key: short, bearer of bad news"
        );
        // A JSON echo of the request headers.
        let json = r#"{"headers": {"Api-Key": "zzzzzzzzzzzzzzzzzzzz", "x": 1}}"#;
        assert_eq!(
            redact(json),
            r#"{"headers": {"Api-Key": "[REDACTED]", "x": 1}}"#
        );
    }
}

/// Hostile text around registered secrets.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A key or token as services issue them (no brackets: `[REDACTED]` itself is not a key).
    fn secret() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.~+/=-]{8,48}".prop_filter("the marker itself", |s| !s.contains("REDACTED"))
    }

    /// Text pieces: arbitrary text, header-like markers, quotes and separators.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,16}",
            Just("Bearer ".to_owned()),
            Just("\"api-key\": \"".to_owned()),
            Just("api_key=".to_owned()),
            Just("Authorization: Basic ".to_owned()),
            Just(REDACTED.to_owned()),
            Just("\\\"".to_owned()),
            Just("é€😀".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(aoai_testkit::fuzz_config())]

        /// Whatever surrounds them, and however they overlap each other, no registered secret
        /// survives `redact`, and redacting again changes nothing.
        #[test]
        fn no_registered_secret_survives(
            secrets in prop::collection::vec(secret(), 1..4),
            pieces in prop::collection::vec((piece(), prop::option::of(0usize..4)), 0..12),
        ) {
            let held: Vec<Secret> = secrets.iter().map(|s| Secret::new(s.as_str())).collect();
            let mut text = String::new();
            for (piece, secret) in &pieces {
                text.push_str(piece);
                if let Some(i) = secret {
                    text.push_str(held[i % held.len()].expose());
                }
            }
            let redacted = redact(&text);
            for secret in &held {
                prop_assert!(
                    !redacted.contains(secret.expose()),
                    "{:?} in {:?}", secret.expose(), redacted
                );
            }
            let again = redact(&redacted).into_owned();
            prop_assert_eq!(again.as_str(), redacted.as_ref());
        }

        /// Any text at all: no panic (the markers are matched on a lowercased copy, so every
        /// cut must stay on a character boundary).
        #[test]
        fn any_text_is_redacted_without_panic(text in ".{0,200}") {
            let _ = redact(&text);
        }
    }
}
