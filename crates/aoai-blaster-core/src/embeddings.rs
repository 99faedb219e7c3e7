//! Embeddings: the request ([`EmbeddingsRequest`]) and the reply ([`EmbeddingsReply`]).
//!
//! An embeddings reply is mostly numbers: 1,536 floats per input for `text-embedding-3-small`,
//! up to 2,048 inputs per request. Parsing them into a `serde_json::Value` tree would cost an
//! allocation per float and change their text (`1e-7` comes back as `1e-07`, base64 stays a
//! string either way); so the reply's `data` is kept as the server's raw JSON text and written
//! out as is. Parse it on demand with [`EmbeddingsReply::vectors`].
//!
//! ```
//! use aoai_blaster_core::embeddings::EmbeddingsReply;
//!
//! let text = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-1e-7]}],
//!               "model":"text-embedding-3-small","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
//! let reply: EmbeddingsReply = serde_json::from_str(text)?;
//! assert!(reply.data.get().contains("[0.25,-1e-7]"));
//! assert_eq!(reply.usage.as_ref().map(|u| u.prompt_tokens), Some(2));
//! assert_eq!(reply.vectors()?[0].index, 0);
//! assert!(serde_json::to_string(&reply)?.contains(r#""embedding":[0.25,-1e-7]"#));
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::extra::{ExtraFields, deserialize_with_extra, kind_of};

/// An embeddings request: the input and any other body parameter (`dimensions`,
/// `encoding_format`, `user`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// A string, a list of strings, a list of token ids, or a list of such lists.
    pub input: Value,
    /// Every other body parameter.
    pub options: Map<String, Value>,
}

/// A request body that cannot become an [`EmbeddingsRequest`] or a
/// [`ResponsesRequest`](crate::responses::ResponsesRequest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputBodyError {
    /// The body is not a JSON object.
    #[error("request body must be a JSON object with an \"input\", got {0}")]
    NotAnObject(&'static str),
    /// `input` is missing or null.
    #[error("request body needs an \"input\" (a string or a list)")]
    NoInput,
    /// `input` is of a kind the operation does not take.
    #[error("\"input\" must be a string or a list, got {0}")]
    BadInput(&'static str),
}

/// Splits a body into its `input` (a string or a list) and the other options.
pub(crate) fn split_input(body: Value) -> Result<(Value, Map<String, Value>), InputBodyError> {
    let Value::Object(mut options) = body else {
        return Err(InputBodyError::NotAnObject(kind_of(&body)));
    };
    match options.remove("input") {
        None | Some(Value::Null) => Err(InputBodyError::NoInput),
        Some(input @ (Value::String(_) | Value::Array(_))) => Ok((input, options)),
        Some(other) => Err(InputBodyError::BadInput(kind_of(&other))),
    }
}

impl EmbeddingsRequest {
    /// A request for `input` (a string, or a list of strings or token lists).
    pub fn new(input: impl Into<Value>) -> EmbeddingsRequest {
        EmbeddingsRequest {
            input: input.into(),
            options: Map::new(),
        }
    }

    /// Splits a full request body (`{"input": ..., ...}`) into input and options.
    ///
    /// ```
    /// use aoai_blaster_core::embeddings::{EmbeddingsRequest, InputBodyError};
    /// let request = EmbeddingsRequest::from_body(serde_json::json!({"input": ["a"], "dimensions": 8})).unwrap();
    /// assert_eq!(request.options["dimensions"], 8);
    /// assert_eq!(EmbeddingsRequest::from_body(serde_json::json!({"input": 3})), Err(InputBodyError::BadInput("a number")));
    /// ```
    pub fn from_body(body: Value) -> Result<EmbeddingsRequest, InputBodyError> {
        let (input, options) = split_input(body)?;
        Ok(EmbeddingsRequest { input, options })
    }

    /// Sets any body parameter.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<Value>) -> EmbeddingsRequest {
        self.options.insert(key.into(), value.into());
        self
    }

    /// How many inputs the request embeds.
    pub fn input_count(&self) -> usize {
        match &self.input {
            Value::Array(items) if items.iter().all(Value::is_number) && !items.is_empty() => 1,
            Value::Array(items) => items.len(),
            _ => 1,
        }
    }
}

/// An embeddings reply: `data` as the server's JSON text, the rest parsed.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingsReply {
    /// `list`.
    pub object: String,
    /// The `data` list (`[{"object": "embedding", "index": 0, "embedding": [...]}, ...]`),
    /// untouched.
    pub data: Box<RawValue>,
    /// The model that answered; empty when the service gave none.
    pub model: String,
    /// Token counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<EmbeddingsUsage>,
    /// Every other field, as raw JSON.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl PartialEq for EmbeddingsReply {
    fn eq(&self, other: &Self) -> bool {
        self.object == other.object
            && self.data.get() == other.data.get()
            && self.model == other.model
            && self.usage == other.usage
            && self.extra == other.extra
    }
}

fn list_object() -> String {
    "list".to_owned()
}

/// Stands in for `data` until the reply's own is read (it is required).
fn empty_list() -> Box<RawValue> {
    // `[]` is valid JSON (the default, `null`, is never reached).
    RawValue::from_string("[]".to_owned()).unwrap_or_default()
}

deserialize_with_extra!(EmbeddingsReply, "an embeddings list object", init: EmbeddingsReply {
        object: list_object(),
        data: empty_list(),
        model: String::new(),
        usage: None,
        extra: ExtraFields::new(),
    },
    required: ["data"],
    fields: {
        0 "object" => |v, map| if let Some(object) = map.next_value::<Option<String>>()? {
            v.object = object;
        },
        1 "data" => |v, map| v.data = map.next_value()?,
        2 "model" => |v, map| v.model = map.next_value::<Option<String>>()?.unwrap_or_default(),
        3 "usage" => |v, map| v.usage = map.next_value()?,
    }
);

/// One entry of [`EmbeddingsReply::data`], parsed on demand.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Embedding {
    /// Which input it embeds.
    #[serde(default)]
    pub index: u32,
    /// A list of floats, or a base64 string with `encoding_format: "base64"`.
    pub embedding: Value,
}

impl EmbeddingsReply {
    /// The vectors, parsed (the reply keeps its text; this is for callers who want numbers).
    pub fn vectors(&self) -> Result<Vec<Embedding>, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }
}

/// Token counts of an embeddings reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EmbeddingsUsage {
    /// Tokens of all inputs.
    pub prompt_tokens: u64,
    /// The same, as Azure states it.
    pub total_tokens: u64,
    /// Every other field, as raw JSON.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

deserialize_with_extra!(EmbeddingsUsage, "a usage object", init: EmbeddingsUsage::default(),
    required: [],
    fields: {
        0 "prompt_tokens" => |v, map| v.prompt_tokens = map.next_value::<Option<u64>>()?.unwrap_or_default(),
        1 "total_tokens" => |v, map| v.total_tokens = map.next_value::<Option<u64>>()?.unwrap_or_default(),
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_and_base64_pass_through_untouched() {
        let text = concat!(
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1.0000000,-0.0]},"#,
            r#"{"object":"embedding","index":1,"embedding":"AACAPwAAAAA="}],"#,
            r#""model":"emb","usage":{"prompt_tokens":5,"total_tokens":5},"x-extra":{"a":1}}"#
        );
        let reply: EmbeddingsReply = serde_json::from_str(text).unwrap();
        let out = serde_json::to_string(&reply).unwrap();
        assert!(out.contains(r#""embedding":[1.0000000,-0.0]"#), "{out}");
        assert!(out.contains(r#""embedding":"AACAPwAAAAA=""#), "{out}");
        assert!(out.contains(r#""x-extra":{"a":1}"#), "{out}");
        let vectors = reply.vectors().unwrap();
        assert_eq!(vectors[1].index, 1);
        assert_eq!(vectors[1].embedding, json!("AACAPwAAAAA="));
        assert_eq!(
            reply.usage,
            Some(EmbeddingsUsage {
                prompt_tokens: 5,
                total_tokens: 5,
                extra: ExtraFields::new()
            })
        );
    }

    #[test]
    fn bodies_and_counts() {
        assert_eq!(EmbeddingsRequest::new("a").input_count(), 1);
        assert_eq!(EmbeddingsRequest::new(vec!["a", "b", "c"]).input_count(), 3);
        assert_eq!(EmbeddingsRequest::new(json!([1, 2, 3])).input_count(), 1);
        assert_eq!(
            EmbeddingsRequest::new(json!([[1, 2], [3]])).input_count(),
            2
        );
        assert_eq!(
            EmbeddingsRequest::from_body(json!([1])),
            Err(InputBodyError::NotAnObject("a list"))
        );
        assert_eq!(
            EmbeddingsRequest::from_body(json!({"input": null})),
            Err(InputBodyError::NoInput)
        );
        let missing = serde_json::from_str::<EmbeddingsReply>(r#"{"object":"list"}"#).unwrap_err();
        assert!(
            missing.to_string().contains("missing field `data`"),
            "{missing}"
        );
    }
}
