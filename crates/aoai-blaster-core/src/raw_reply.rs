//! A reply kept as the server's bytes, with only its token counts read out.
//!
//! Why: a caller that hands the reply on unchanged (the gateway) gains nothing from the typed
//! [`Reply`](crate::operation::Reply) forms, whose parse (every field, unknown ones kept) and
//! re-serialisation were a large share of a request's cost. The settlement needs the usage
//! alone; this reads it with one borrowed pass that skips everything else, and still refuses a
//! body that is not JSON or lacks the operation's defining field, as the typed parse does.
//!
//! ```
//! use aoai_blaster_core::operation::Operation;
//! use aoai_blaster_core::raw_reply::RawReply;
//!
//! let body = br#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
//! let reply = RawReply::parse(Operation::Chat, bytes::Bytes::from_static(body)).unwrap();
//! assert_eq!(reply.usage().map(|u| u.total_tokens), Some(5));
//! assert_eq!(reply.body().as_ref(), body);
//! assert!(RawReply::parse(Operation::Embeddings, bytes::Bytes::from_static(body)).is_err());
//! ```

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::operation::{Operation, TokenCounts};

/// A 2xx reply body as the server sent it, and its usage.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReply {
    operation: Operation,
    body: Bytes,
    usage: Option<TokenCounts>,
}

/// The few fields read; serde skips the others without building them.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    choices: Option<IgnoredAny>,
    #[serde(default)]
    data: Option<IgnoredAny>,
    #[serde(default)]
    output: Option<IgnoredAny>,
    #[serde(default)]
    usage: Option<Counts>,
}

/// Chat and embeddings name them `prompt_tokens`/`completion_tokens`, Responses
/// `input_tokens`/`output_tokens`.
#[derive(Deserialize)]
struct Counts {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl RawReply {
    /// Reads the usage of a plain 2xx reply of `operation`; an error when the body is not a
    /// JSON object holding the operation's `choices`, `data` or `output`.
    pub fn parse(operation: Operation, body: Bytes) -> Result<RawReply, serde_json::Error> {
        use serde::de::Error;
        // A derived struct would also take a JSON array; a reply is an object.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(serde_json::Error::custom("expected a JSON object"));
        }
        let head: Head = serde_json::from_slice(&body)?;
        let (present, field) = match operation {
            Operation::Chat => (head.choices.is_some(), "choices"),
            Operation::Embeddings => (head.data.is_some(), "data"),
            Operation::Responses => (head.output.is_some(), "output"),
        };
        if !present {
            return Err(serde_json::Error::missing_field(field));
        }
        let usage = head.usage.map(|counts| TokenCounts {
            prompt_tokens: counts.prompt_tokens.unwrap_or(0),
            completion_tokens: counts.completion_tokens.unwrap_or(0),
            total_tokens: counts.total_tokens.unwrap_or(0),
        });
        Ok(RawReply {
            operation,
            body,
            usage,
        })
    }

    /// The operation that answered.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The body, byte for byte as the server sent it.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Token counts, when the reply stated them.
    pub fn usage(&self) -> Option<TokenCounts> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::Reply;

    fn raw(operation: Operation, body: &'static str) -> Result<RawReply, serde_json::Error> {
        RawReply::parse(operation, Bytes::from_static(body.as_bytes()))
    }

    #[test]
    fn reads_the_same_usage_as_the_typed_parse() {
        let bodies = [
            (
                Operation::Chat,
                r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            ),
            (Operation::Chat, r#"{"choices":[],"usage":null}"#),
            (
                Operation::Embeddings,
                r#"{"object":"list","data":[{"embedding":[0.1,0.2],"index":0}],"usage":{"prompt_tokens":7,"total_tokens":7}}"#,
            ),
            (
                Operation::Responses,
                r#"{"id":"resp_1","status":"completed","output":[],"usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}"#,
            ),
        ];
        for (operation, body) in bodies {
            let typed = Reply::parse(operation, body.as_bytes()).unwrap();
            let raw = raw(operation, body).unwrap();
            assert_eq!(raw.usage(), typed.usage(), "{body}");
            assert_eq!(raw.operation(), operation);
            assert_eq!(raw.body().as_ref(), body.as_bytes());
        }
    }

    #[test]
    fn refuses_what_the_typed_parse_refuses() {
        for (operation, body) in [
            (Operation::Chat, "{not json"),
            (Operation::Chat, r#"[{"choices":[]}]"#),
            (Operation::Chat, r#"{"id":"x"}"#),
            (Operation::Embeddings, r#"{"choices":[]}"#),
            (Operation::Responses, r#"{"data":[]}"#),
            (
                Operation::Chat,
                r#"{"choices":[],"usage":{"prompt_tokens":"three"}}"#,
            ),
        ] {
            assert!(Reply::parse(operation, body.as_bytes()).is_err(), "{body}");
            assert!(raw(operation, body).is_err(), "{body}");
        }
    }
}
