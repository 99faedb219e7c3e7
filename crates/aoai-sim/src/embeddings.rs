//! Embeddings: the request as the simulator reads it, its charge (input tokens only, as Azure
//! charges embeddings), and the reply with deterministic vectors derived from each input
//! ([`embedding_vector`]), so a client can prove each vector belongs to its input.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::content::messages_digest;
use crate::quota::CHARS_PER_TOKEN;
use crate::reply::Usage;
use crate::request::{InvalidRequest, json_object, optional_string, positive_integer};

/// The most inputs Azure takes in one embeddings request.
pub const MAX_INPUTS: usize = 2048;

/// An embeddings request, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EmbeddingsRequest {
    /// `model` (the deployment on the v1 route).
    pub(crate) model: Option<String>,
    /// Each input: a string or a list of token ids.
    pub(crate) inputs: Vec<Value>,
    /// `dimensions`, if given.
    pub(crate) dimensions: Option<u64>,
    /// `encoding_format: "base64"`.
    pub(crate) base64: bool,
}

impl EmbeddingsRequest {
    /// The input tokens charged: per text a quarter of its characters (rounded up, at least
    /// one), per token list its length.
    pub(crate) fn input_tokens(&self) -> u64 {
        self.inputs.iter().map(input_tokens).sum()
    }
}

fn input_tokens(input: &Value) -> u64 {
    match input {
        Value::String(text) => (text.chars().count() as u64)
            .div_ceil(CHARS_PER_TOKEN)
            .max(1),
        Value::Array(ids) => ids.len() as u64,
        _ => 0,
    }
}

fn invalid_input() -> InvalidRequest {
    InvalidRequest::new(
        "'input' must be a string, a list of strings, a list of token ids, or a list of token id lists, none of them empty",
        Some("input"),
    )
}

fn is_token_list(value: &Value) -> bool {
    matches!(value, Value::Array(ids) if !ids.is_empty() && ids.iter().all(Value::is_u64))
}

/// Parse and check an embeddings request body.
pub(crate) fn parse_embeddings_request(body: &[u8]) -> Result<EmbeddingsRequest, InvalidRequest> {
    let mut body = json_object(body)?;
    let inputs = match body.remove("input") {
        None | Some(Value::Null) => {
            return Err(InvalidRequest::new(
                "'input' is a required property",
                Some("input"),
            ));
        }
        Some(Value::String(text)) if !text.is_empty() => vec![Value::String(text)],
        Some(list) if is_token_list(&list) => vec![list],
        Some(Value::Array(items)) => {
            let valid = |item: &Value| {
                matches!(item, Value::String(text) if !text.is_empty()) || is_token_list(item)
            };
            if items.is_empty() || !items.iter().all(valid) {
                return Err(invalid_input());
            }
            items
        }
        Some(_) => return Err(invalid_input()),
    };
    if inputs.len() > MAX_INPUTS {
        return Err(InvalidRequest::new(
            format!(
                "Too many inputs. The max number of inputs is {MAX_INPUTS}. We hope to increase \
                 the number of inputs per request soon."
            ),
            Some("input"),
        ));
    }
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(format)) if format == "float" => false,
        Some(Value::String(format)) if format == "base64" => true,
        Some(other) => {
            return Err(InvalidRequest::new(
                format!("{other} is not one of ['float', 'base64'] - 'encoding_format'"),
                Some("encoding_format"),
            ));
        }
    };
    Ok(EmbeddingsRequest {
        model: optional_string(&body, "model")?,
        inputs,
        dimensions: positive_integer(&body, "dimensions", 1)?,
        base64,
    })
}

/// The vector the simulator answers for `input` (a string or a list of token ids, as sent):
/// `dimensions` floats drawn from the input's digest ([`messages_digest`] of the input value)
/// with SplitMix64, scaled to unit length like OpenAI's embeddings. The same input always gets
/// the same vector; different inputs get unrelated ones.
///
/// ```
/// let a = aoai_sim::embedding_vector(&serde_json::json!("hello"), 8);
/// assert_eq!(a.len(), 8);
/// assert_eq!(a, aoai_sim::embedding_vector(&serde_json::json!("hello"), 8));
/// assert_ne!(a, aoai_sim::embedding_vector(&serde_json::json!("hello!"), 8));
/// let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
/// assert!((norm - 1.0).abs() < 1e-5);
/// ```
pub fn embedding_vector(input: &Value, dimensions: usize) -> Vec<f32> {
    let digest = messages_digest(input);
    let mut state = u64::from_str_radix(&digest, 16).unwrap_or(0);
    let mut next = || {
        // SplitMix64: small, fast and fully specified, so the vectors never change.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// [`embedding_vector`] as Azure's `encoding_format: "base64"` sends it: the floats' little-endian
/// bytes in standard base64.
pub fn embedding_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Value,
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: EmbeddingsUsage,
}

#[derive(Serialize)]
struct EmbeddingsUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// The reply body: one vector per input, of the request's `dimensions` (else
/// `default_dimensions`), as floats or base64.
pub(crate) fn embeddings_body(
    request: &EmbeddingsRequest,
    model: &str,
    default_dimensions: u64,
    usage: Usage,
) -> bytes::Bytes {
    let dimensions =
        usize::try_from(request.dimensions.unwrap_or(default_dimensions)).unwrap_or(usize::MAX);
    let data = request
        .inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding_vector(input, dimensions);
            let embedding = if request.base64 {
                Value::String(embedding_base64(&vector))
            } else {
                Value::Array(vector.into_iter().map(Value::from).collect())
            };
            Item {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let list = List {
        object: "list",
        data,
        model,
        usage: EmbeddingsUsage {
            prompt_tokens: usage.prompt_tokens,
            total_tokens: usage.total_tokens,
        },
    };
    // Plain structs and JSON values always serialise.
    bytes::Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<EmbeddingsRequest, String> {
        parse_embeddings_request(body.to_string().as_bytes()).map_err(|e| e.message)
    }

    #[test]
    fn inputs_of_every_shape_and_their_charge() {
        let one = parse(json!({"input": "abcdefghi", "model": "e"})).unwrap();
        assert_eq!((one.inputs.len(), one.input_tokens()), (1, 3));
        assert_eq!(one.model.as_deref(), Some("e"));
        let many = parse(json!({"input": ["abcd", "a"], "dimensions": 4})).unwrap();
        assert_eq!(
            (many.inputs.len(), many.input_tokens(), many.dimensions),
            (2, 2, Some(4))
        );
        let ids = parse(json!({"input": [1, 2, 3]})).unwrap();
        assert_eq!((ids.inputs.len(), ids.input_tokens()), (1, 3));
        let lists = parse(json!({"input": [[1, 2], [3]], "encoding_format": "base64"})).unwrap();
        assert_eq!(
            (lists.inputs.len(), lists.input_tokens(), lists.base64),
            (2, 3, true)
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        assert_eq!(
            parse(json!({})).unwrap_err(),
            "'input' is a required property"
        );
        for bad in [json!(""), json!([]), json!([""]), json!(["a", 1]), json!(7)] {
            assert!(
                parse(json!({"input": bad}))
                    .unwrap_err()
                    .contains("'input' must be")
            );
        }
        let too_many = vec!["x"; MAX_INPUTS + 1];
        assert!(
            parse(json!({"input": too_many}))
                .unwrap_err()
                .contains("Too many inputs")
        );
        assert!(
            parse(json!({"input": "a", "encoding_format": "int8"}))
                .unwrap_err()
                .contains("encoding_format")
        );
    }

    #[test]
    fn bodies_carry_each_inputs_own_vector() {
        let request = parse(json!({"input": ["first", [5, 6]], "dimensions": 3})).unwrap();
        let body = embeddings_body(&request, "emb", 1536, Usage::new(4, 0));
        let reply: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply["object"], "list");
        assert_eq!(
            reply["usage"],
            json!({"prompt_tokens": 4, "total_tokens": 4})
        );
        for (index, input) in [json!("first"), json!([5, 6])].iter().enumerate() {
            let item = &reply["data"][index];
            assert_eq!(item["index"], index);
            let got: Vec<f32> = serde_json::from_value(item["embedding"].clone()).unwrap();
            assert_eq!(got, embedding_vector(input, 3));
        }
        let request = parse(json!({"input": "first", "encoding_format": "base64"})).unwrap();
        let body = embeddings_body(&request, "emb", 2, Usage::new(2, 0));
        let reply: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            reply["data"][0]["embedding"],
            json!(embedding_base64(&embedding_vector(&json!("first"), 2)))
        );
    }
}
