//! The error body Azure OpenAI and OpenAI send, `{"error": {"code", "message", "type",
//! "param", ...}}`, read by one parser wherever it arrives: as an HTTP error reply
//! ([`crate::classify::ApiError::from_body`]) or as a mid-stream event
//! ([`crate::sse::parse_stream_data`]).
//!
//! Read leniently, like the rest of a reply: a numeric `code` is kept as its digits, a missing or
//! non-text `message` is empty, and the shapes gateways send in Azure's place are understood too:
//! `{"error": "text"}`, and API Management's `{"statusCode": 401, "message": "..."}`.
//!
//! ```
//! use aoai_blaster_core::error_body::ApiErrorBody;
//!
//! let body = br#"{"error": {"code": 429, "message": "slow down", "innererror": {"code": "x"}}}"#;
//! let error = ApiErrorBody::from_reply_body(body).unwrap();
//! assert_eq!(error.code.as_deref(), Some("429"));
//! assert_eq!(error.to_string(), "429: slow down");
//! assert_eq!(error.inner_code(), Some("x"));
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The `error` object of an error reply (`{"error": {...}}`), as Azure and OpenAI send it,
/// both as an HTTP error body and as a mid-stream event.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApiErrorBody {
    /// `content_filter`, `context_length_exceeded`, `429`, `DeploymentNotFound`, ...
    /// (numbers are turned into text; an empty or non-text code is none).
    pub code: Option<String>,
    /// Human-readable message (empty when the body gave none).
    pub message: String,
    /// `invalid_request_error`, ...
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The request parameter at fault (`prompt`, `messages`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Every other field (`innererror` with `content_filter_result`, `status`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ApiErrorBody {
    /// Reads an error reply's body: `{"error": {...}}`, `{"error": "text"}`, or a top-level
    /// `{"message": "text", "code": ...}` (API Management). `None` if it is none of these
    /// (not JSON, an HTML page, an unrelated object).
    ///
    /// ```
    /// use aoai_blaster_core::error_body::ApiErrorBody;
    /// let body = br#"{"error": {"code": "content_filter", "message": "filtered", "param": "prompt"}}"#;
    /// let error = ApiErrorBody::from_reply_body(body).unwrap();
    /// assert_eq!(error.code.as_deref(), Some("content_filter"));
    /// assert_eq!(error.to_string(), "content_filter: filtered");
    /// assert_eq!(ApiErrorBody::from_reply_body(b"<html>bad gateway</html>"), None);
    /// ```
    pub fn from_reply_body(body: &[u8]) -> Option<ApiErrorBody> {
        let value = serde_json::from_slice::<Value>(body).ok()?;
        ApiErrorBody::from_reply_value(&value)
    }

    /// [`ApiErrorBody::from_reply_body`] for a body already parsed as JSON.
    pub fn from_reply_value(body: &Value) -> Option<ApiErrorBody> {
        if let Some(error) = body.get("error").and_then(ApiErrorBody::from_error_value) {
            return Some(error);
        }
        let message = body.get("message")?.as_str()?.to_owned();
        Some(ApiErrorBody {
            code: body.get("code").and_then(code_text),
            message,
            ..ApiErrorBody::default()
        })
    }

    /// Reads the value of an `error` field: an object (`{"code", "message", ...}`) or a text
    /// (the message alone). `None` for anything else.
    pub fn from_error_value(error: &Value) -> Option<ApiErrorBody> {
        let fields = match error {
            Value::Object(fields) => fields,
            Value::String(message) => {
                return Some(ApiErrorBody {
                    message: message.clone(),
                    ..ApiErrorBody::default()
                });
            }
            _ => return None,
        };
        let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_owned);
        let extra = fields
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "code" | "message" | "type" | "param"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Some(ApiErrorBody {
            code: fields.get("code").and_then(code_text),
            message: text("message").unwrap_or_default(),
            kind: text("type"),
            param: text("param"),
            extra,
        })
    }

    /// Azure's inner error code (`ResponsibleAIPolicyViolation` for a content filter), if any.
    pub fn inner_code(&self) -> Option<&str> {
        self.extra.get("innererror")?.get("code")?.as_str()
    }

    /// The code, or when there is none the inner error's code (read like the code: text, or a
    /// number's digits).
    pub fn code_or_inner(&self) -> Option<String> {
        self.code.clone().or_else(|| {
            self.extra
                .get("innererror")
                .and_then(|inner| inner.get("code"))
                .and_then(code_text)
        })
    }
}

impl fmt::Display for ApiErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Deserialises with [`ApiErrorBody::from_error_value`]: the one parser.
impl<'de> Deserialize<'de> for ApiErrorBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        ApiErrorBody::from_error_value(&value).ok_or_else(|| {
            serde::de::Error::custom("expected an error object {\"code\", \"message\"} or a text")
        })
    }
}

/// A code as text: a non-empty string as is, a number as its digits; anything else is no code.
fn code_text(value: &Value) -> Option<String> {
    match value {
        Value::String(code) if !code.is_empty() => Some(code.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_parse_with_numeric_codes_and_inner_errors() {
        let filtered = ApiErrorBody::from_reply_body(
            json!({"error": {"message": "The response was filtered", "type": null, "param": "prompt",
                "code": "content_filter", "status": 400,
                "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {}}}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(filtered.code.as_deref(), Some("content_filter"));
        assert_eq!(filtered.inner_code(), Some("ResponsibleAIPolicyViolation"));
        assert_eq!(filtered.param.as_deref(), Some("prompt"));
        let numeric =
            ApiErrorBody::from_reply_body(br#"{"error": {"code": 429, "message": "slow down"}}"#)
                .unwrap();
        assert_eq!(numeric.code.as_deref(), Some("429"));
        assert_eq!(numeric.to_string(), "429: slow down");
        assert_eq!(
            ApiErrorBody::from_reply_body(b"<html>bad gateway</html>"),
            None
        );
        assert_eq!(ApiErrorBody::from_reply_body(br#"{"choices": []}"#), None);
    }

    #[test]
    fn gateway_shapes_and_inner_codes() {
        let text = ApiErrorBody::from_reply_body(br#"{"error": "bad things"}"#).unwrap();
        assert_eq!((text.code, text.message.as_str()), (None, "bad things"));
        let apim = ApiErrorBody::from_reply_body(br#"{"statusCode": 401, "message": "denied"}"#);
        assert_eq!(
            apim.map(|e| (e.code, e.message)),
            Some((None, "denied".into()))
        );
        let inner =
            ApiErrorBody::from_reply_body(br#"{"error": {"code": "", "innererror": {"code": 7}}}"#)
                .unwrap();
        assert_eq!((inner.code.as_deref(), inner.message.as_str()), (None, ""));
        assert_eq!(inner.code_or_inner().as_deref(), Some("7"));
        // Serde reads it with the same parser, and writes what it read.
        let round: ApiErrorBody =
            serde_json::from_value(json!({"code": 500, "message": "m", "status": 500})).unwrap();
        assert_eq!(round.code.as_deref(), Some("500"));
        assert_eq!(
            serde_json::to_value(&round).unwrap(),
            json!({"code": "500", "message": "m", "status": 500})
        );
    }
}
