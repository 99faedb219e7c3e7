//! OpenAI / Azure OpenAI chat-completion wire types, and request-body building.
//!
//! Replies are parsed leniently (Azure omits `model` or `created` in some replies, and adds
//! fields such as `prompt_filter_results`): missing fields take defaults, and every field we do
//! not model is kept, as raw JSON text, in an `extra` map ([`ExtraFields`]) so that nothing is
//! lost on a round trip. Only `choices` is required in a completion.
//!
//! ```
//! use aoai_blaster_core::chat::{build_request_body, ChatCompletion, ChatRequest, RequestDefaults};
//! use serde_json::json;
//!
//! let request = ChatRequest::new(vec![json!({"role": "user", "content": "Hi"})]).option("seed", 7);
//! let defaults = RequestDefaults { temperature: Some(0.2), max_completion_tokens: Some(512) };
//! let body = build_request_body(&defaults, &request, false);
//! assert_eq!(body["temperature"], 0.2);
//! assert_eq!(body["seed"], 7);
//!
//! let reply: ChatCompletion = serde_json::from_value(json!({
//!     "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
//!     "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
//!                  "finish_reason": "stop"}],
//!     "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
//!     "system_fingerprint": "fp_1"
//! }))?;
//! assert_eq!(reply.text(), Some("Hello"));
//! assert_eq!(reply.extra.get("system_fingerprint"), Some(json!("fp_1")));
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

pub use crate::error_body::ApiErrorBody;
pub use crate::extra::ExtraFields;
use crate::extra::{deserialize_with_extra, kind_of};

fn chat_completion_object() -> String {
    "chat.completion".to_owned()
}

fn chat_completion_chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

fn assistant_role() -> String {
    "assistant".to_owned()
}

fn function_type() -> String {
    "function".to_owned()
}

/// Treats `null` like a missing field (Azure sends `"created": null` and the like at times).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A whole (non-streamed, or assembled) chat completion.
///
/// Parsed in one pass (see [`ExtraFields`] for the fields it does not model).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`; empty when the service gave none.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds; 0 when the service gave none.
    pub created: u64,
    /// The model that answered; empty when the service gave none.
    pub model: String,
    /// The answers (one unless the request set `n`).
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field (`system_fingerprint`, `prompt_filter_results`, ...), as raw JSON.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

deserialize_with_extra!(ChatCompletion, "a chat completion object", init: ChatCompletion {
        id: String::new(),
        object: chat_completion_object(),
        created: 0,
        model: String::new(),
        choices: Vec::new(),
        usage: None,
        extra: ExtraFields::new(),
    },
    required: ["choices"],
    fields: {
        0 "id" => |v, map| v.id = or_default(map.next_value()?),
        1 "object" => |v, map| if let Some(object) = map.next_value::<Option<String>>()? {
            v.object = object;
        },
        2 "created" => |v, map| v.created = or_default(map.next_value()?),
        3 "model" => |v, map| v.model = or_default(map.next_value()?),
        4 "choices" => |v, map| v.choices = map.next_value()?,
        5 "usage" => |v, map| v.usage = map.next_value()?,
    }
);

impl ChatCompletion {
    /// The first choice's text, if it has any.
    pub fn text(&self) -> Option<&str> {
        self.choices.first()?.message.content.as_deref()
    }

    /// The first choice's `finish_reason` (`stop`, `length`, `content_filter`, `tool_calls`).
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.first()?.finish_reason.as_deref()
    }
}

/// `null` read as "not given".
fn or_default<T: Default>(value: Option<T>) -> T {
    value.unwrap_or_default()
}

/// One answer in a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// Position among the choices.
    pub index: u32,
    /// The assistant's message.
    pub message: AssistantMessage,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// Every other field (`content_filter_results`, `logprobs`, ...), as raw JSON.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

deserialize_with_extra!(Choice, "a choice object", init: Choice {
        index: 0,
        message: AssistantMessage::default(),
        finish_reason: None,
        extra: ExtraFields::new(),
    },
    required: [],
    fields: {
        0 "index" => |v, map| v.index = or_default(map.next_value()?),
        1 "message" => |v, map| v.message = or_default(map.next_value()?),
        2 "finish_reason" => |v, map| v.finish_reason = map.next_value()?,
    }
);

/// The message of a [`Choice`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: String,
    /// The text; `None` for a pure tool call or a filtered answer.
    pub content: Option<String>,
    /// Tool calls the model asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Every other field (`refusal`, `annotations`, `context`, ...), as raw JSON.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

deserialize_with_extra!(AssistantMessage, "an assistant message object",
    init: AssistantMessage::default(),
    required: [],
    fields: {
        0 "role" => |v, map| if let Some(role) = map.next_value::<Option<String>>()? {
            v.role = role;
        },
        1 "content" => |v, map| v.content = map.next_value()?,
        2 "tool_calls" => |v, map| v.tool_calls = map.next_value()?,
    }
);

impl Default for AssistantMessage {
    fn default() -> Self {
        AssistantMessage {
            role: assistant_role(),
            content: None,
            tool_calls: None,
            extra: ExtraFields::new(),
        }
    }
}

/// A tool call in an [`AssistantMessage`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    /// `call_...`.
    pub id: String,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function and its JSON-encoded arguments.
    pub function: FunctionCall,
    /// Every other field, as raw JSON.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

deserialize_with_extra!(ToolCall, "a tool call object", init: ToolCall {
        id: String::new(),
        kind: function_type(),
        function: FunctionCall::default(),
        extra: ExtraFields::new(),
    },
    required: [],
    fields: {
        0 "id" => |v, map| v.id = or_default(map.next_value()?),
        1 "type" => |v, map| if let Some(kind) = map.next_value::<Option<String>>()? {
            v.kind = kind;
        },
        2 "function" => |v, map| v.function = or_default(map.next_value()?),
    }
);

/// The function of a [`ToolCall`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Function name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Arguments as a JSON text (as the model wrote it; it may not be valid JSON).
    #[serde(default, deserialize_with = "null_as_default")]
    pub arguments: String,
}

/// Token counts of a reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
    /// Every other field (`prompt_tokens_details`, `completion_tokens_details`, ...), as raw
    /// JSON.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

deserialize_with_extra!(Usage, "a usage object", init: Usage::default(),
    required: [],
    fields: {
        0 "prompt_tokens" => |v, map| v.prompt_tokens = or_default(map.next_value()?),
        1 "completion_tokens" => |v, map| v.completion_tokens = or_default(map.next_value()?),
        2 "total_tokens" => |v, map| v.total_tokens = or_default(map.next_value()?),
    }
);

/// One `data:` event of a streamed completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// `chatcmpl-...`; empty in Azure's first (prompt filter) chunk.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// `chat.completion.chunk` (empty in Azure's first chunk).
    #[serde(default = "chat_completion_chunk_object")]
    pub object: String,
    /// Unix seconds; 0 in Azure's first chunk.
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: u64,
    /// The model; empty in Azure's first chunk.
    #[serde(default, deserialize_with = "null_as_default")]
    pub model: String,
    /// Deltas; empty in the prompt-filter chunk and in the usage chunk.
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<ChunkChoice>,
    /// Token counts (in the last chunk, when `stream_options.include_usage` was set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field (`prompt_filter_results`, `system_fingerprint`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionChunk {
    /// True when some choice's delta carries text, a tool-call fragment or a refusal: the
    /// chunks worth delivering to an incremental consumer.
    pub fn has_payload(&self) -> bool {
        self.choices.iter().any(|choice| choice.delta.has_payload())
    }

    /// The first choice's new text, if any.
    pub fn text(&self) -> Option<&str> {
        self.choices.first()?.delta.content.as_deref()
    }
}

/// One choice's delta in a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice this delta extends.
    #[serde(default, deserialize_with = "null_as_default")]
    pub index: u32,
    /// The new part.
    #[serde(default, deserialize_with = "null_as_default")]
    pub delta: Delta,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Every other field (`content_filter_results`, `logprobs`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The new part of a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, in the first delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text to append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool-call fragments to merge by `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Every other field (`refusal`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Delta {
    /// True when this delta carries something for the caller: text, a tool-call fragment or a
    /// refusal (a bare `role` or an empty string does not count).
    pub fn has_payload(&self) -> bool {
        self.content.as_deref().is_some_and(|c| !c.is_empty())
            || self.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
            || self
                .extra
                .get("refusal")
                .and_then(Value::as_str)
                .is_some_and(|r| !r.is_empty())
    }
}

/// A fragment of a tool call in a [`Delta`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call this fragment extends.
    #[serde(default, deserialize_with = "null_as_default")]
    pub index: u32,
    /// Set in the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, in the first fragment.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name (first fragment) and a piece of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

/// A fragment of a function call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// Set in the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the JSON arguments text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// What a deployment puts in every request unless the job says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestDefaults {
    /// Sent only when set (o-series models reject `temperature`).
    pub temperature: Option<f64>,
    /// Sent only when set, and not when the job gives `max_tokens`.
    pub max_completion_tokens: Option<u32>,
}

/// A job's chat request: the messages and any OpenAI parameters.
///
/// Options override the deployment's defaults; an option set to `null` removes the key
/// altogether (e.g. `.option("temperature", Value::Null)` to send no temperature to a deployment
/// that has one configured).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation, as OpenAI message objects.
    pub messages: Vec<Value>,
    /// Every other body parameter (`temperature`, `response_format`, `tools`, `seed`, ...).
    pub options: Map<String, Value>,
}

/// A request body that cannot become a [`ChatRequest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestBodyError {
    /// The body is not a JSON object.
    #[error("request body must be a JSON object with a \"messages\" list, got {0}")]
    NotAnObject(&'static str),
    /// `messages` is missing or not a list.
    #[error("request body needs a \"messages\" list of message objects")]
    NoMessages,
}

impl ChatRequest {
    /// A request with these messages and no options.
    pub fn new(messages: Vec<Value>) -> ChatRequest {
        ChatRequest {
            messages,
            options: Map::new(),
        }
    }

    /// An empty request, to build with [`system`](Self::system), [`user`](Self::user) and
    /// [`assistant`](Self::assistant) (raw JSON messages go through [`new`](Self::new) or
    /// [`message`](Self::message)).
    ///
    /// ```
    /// use aoai_blaster_core::chat::ChatRequest;
    /// let request = ChatRequest::empty().system("Be brief.").user("Say hi").max_completion_tokens(20);
    /// assert_eq!(request.messages[0], serde_json::json!({"role": "system", "content": "Be brief."}));
    /// assert_eq!(request.messages[1]["role"], "user");
    /// assert_eq!(request.options["max_completion_tokens"], 20);
    /// ```
    pub fn empty() -> ChatRequest {
        ChatRequest::new(Vec::new())
    }

    /// Appends a system message.
    pub fn system(self, content: impl Into<String>) -> ChatRequest {
        self.said("system", content.into())
    }

    /// Appends a user message.
    pub fn user(self, content: impl Into<String>) -> ChatRequest {
        self.said("user", content.into())
    }

    /// Appends an assistant message (an earlier turn, or a few-shot example).
    pub fn assistant(self, content: impl Into<String>) -> ChatRequest {
        self.said("assistant", content.into())
    }

    /// Appends a message given as raw JSON (tool calls, image parts, names, ...).
    pub fn message(mut self, message: Value) -> ChatRequest {
        self.messages.push(message);
        self
    }

    fn said(self, role: &str, content: String) -> ChatRequest {
        self.message(serde_json::json!({"role": role, "content": content}))
    }

    /// Splits a full request body (`{"messages": [...], ...}`) into messages and options.
    ///
    /// ```
    /// use aoai_blaster_core::chat::ChatRequest;
    /// let request = ChatRequest::from_body(serde_json::json!({
    ///     "messages": [{"role": "user", "content": "Hi"}], "seed": 1
    /// })).unwrap();
    /// assert_eq!(request.messages.len(), 1);
    /// assert_eq!(request.options["seed"], 1);
    /// ```
    pub fn from_body(body: Value) -> Result<ChatRequest, RequestBodyError> {
        let Value::Object(mut options) = body else {
            return Err(RequestBodyError::NotAnObject(kind_of(&body)));
        };
        match options.remove("messages") {
            Some(Value::Array(messages)) => Ok(ChatRequest { messages, options }),
            _ => Err(RequestBodyError::NoMessages),
        }
    }

    /// Sets any body parameter.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<Value>) -> ChatRequest {
        self.options.insert(key.into(), value.into());
        self
    }

    /// Sets `temperature`.
    pub fn temperature(self, temperature: f64) -> ChatRequest {
        self.option("temperature", temperature)
    }

    /// Sets `max_completion_tokens`.
    pub fn max_completion_tokens(self, tokens: u32) -> ChatRequest {
        self.option("max_completion_tokens", tokens)
    }
}

/// The JSON body for one attempt: deployment defaults, then the job's options over them, then
/// `messages`, then the streaming switch.
///
/// - `temperature` / `max_completion_tokens` from `defaults` only when set; a job's `max_tokens`
///   suppresses the default `max_completion_tokens` (Azure rejects both together).
/// - An option whose value is `null` removes that key.
/// - `stream: true` sets `"stream": true` and `"stream_options": {"include_usage": true}`
///   (a caller-given `stream_options` is kept, with `include_usage` added if absent);
///   `stream: false` removes both.
///
/// ```
/// use aoai_blaster_core::chat::{build_request_body, ChatRequest, RequestDefaults};
/// use serde_json::json;
///
/// let defaults = RequestDefaults { temperature: Some(1.0), max_completion_tokens: Some(512) };
/// let request = ChatRequest::new(vec![json!({"role": "user", "content": "Hi"})])
///     .temperature(0.1)
///     .option("max_tokens", 50);
/// let body = build_request_body(&defaults, &request, true);
/// assert_eq!(body["temperature"], 0.1);
/// assert_eq!(body["max_tokens"], 50);
/// assert!(body.get("max_completion_tokens").is_none());
/// assert_eq!(body["stream_options"], json!({"include_usage": true}));
/// ```
pub fn build_request_body(
    defaults: &RequestDefaults,
    request: &ChatRequest,
    stream: bool,
) -> Value {
    // Serialising a map with string keys into a `Value` cannot fail.
    serde_json::to_value(RequestBody::new(defaults, request, stream)).unwrap_or(Value::Null)
}

/// The request body of [`build_request_body`] as JSON bytes, written straight from the
/// request (no copy of the messages into a `Value` first): what is sent on the wire.
///
/// ```
/// use aoai_blaster_core::chat::{build_request_body, request_body_bytes, ChatRequest, RequestDefaults};
/// use serde_json::json;
///
/// let request = ChatRequest::new(vec![json!({"role": "user", "content": "Hi"})]).option("seed", 7);
/// let defaults = RequestDefaults { temperature: Some(0.2), max_completion_tokens: None };
/// let bytes = request_body_bytes(&defaults, &request, false);
/// let sent: serde_json::Value = serde_json::from_slice(&bytes)?;
/// assert_eq!(sent, build_request_body(&defaults, &request, false));
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn request_body_bytes(
    defaults: &RequestDefaults,
    request: &ChatRequest,
    stream: bool,
) -> Vec<u8> {
    request_body_bytes_for(defaults, request, stream, None)
}

/// [`request_body_bytes`] with `model` set (the v1 API names the deployment there), replacing
/// any `model` option.
pub fn request_body_bytes_for(
    defaults: &RequestDefaults,
    request: &ChatRequest,
    stream: bool,
    model: Option<&str>,
) -> Vec<u8> {
    let mut body = RequestBody::new(defaults, request, stream);
    body.model = model;
    // Writing a map with string keys and JSON values into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A request body as a borrowed view: serialises to the body [`build_request_body`] describes,
/// each key once.
struct RequestBody<'a> {
    defaults: &'a RequestDefaults,
    request: &'a ChatRequest,
    stream: bool,
    /// The deployment, for the v1 API.
    model: Option<&'a str>,
}

impl<'a> RequestBody<'a> {
    fn new(defaults: &'a RequestDefaults, request: &'a ChatRequest, stream: bool) -> Self {
        RequestBody {
            defaults,
            request,
            stream,
            model: None,
        }
    }
}

/// Keys the body sets itself, whatever the options say.
const OWN_KEYS: [&str; 3] = ["messages", "stream", "stream_options"];

impl Serialize for RequestBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let options = &self.request.options;
        let mut map = serializer.serialize_map(None)?;
        if let Some(temperature) = self.defaults.temperature
            && !options.contains_key("temperature")
        {
            map.serialize_entry("temperature", &temperature)?;
        }
        let job_caps_tokens =
            options.contains_key("max_tokens") || options.contains_key("max_completion_tokens");
        if let (Some(tokens), false) = (self.defaults.max_completion_tokens, job_caps_tokens) {
            map.serialize_entry("max_completion_tokens", &tokens)?;
        }
        for (key, value) in options {
            let replaced = key == "model" && self.model.is_some();
            if !value.is_null() && !OWN_KEYS.contains(&key.as_str()) && !replaced {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("messages", &self.request.messages)?;
        if let Some(model) = self.model {
            map.serialize_entry("model", model)?;
        }
        if self.stream {
            map.serialize_entry("stream", &true)?;
            match options.get("stream_options") {
                Some(Value::Object(own)) if own.contains_key("include_usage") => {
                    map.serialize_entry("stream_options", own)?;
                }
                Some(Value::Object(own)) => {
                    map.serialize_entry("stream_options", &WithUsage(own))?;
                }
                Some(Value::Null) | None => {
                    map.serialize_entry("stream_options", &WithUsage(&Map::new()))?;
                }
                Some(other) => map.serialize_entry("stream_options", other)?,
            }
        }
        map.end()
    }
}

/// A caller's `stream_options` with `"include_usage": true` added.
struct WithUsage<'a>(&'a Map<String, Value>);

impl Serialize for WithUsage<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len() + 1))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("include_usage", &true)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn azure_reply() -> Value {
        json!({
            "choices": [{
                "content_filter_results": {
                    "hate": {"filtered": false, "severity": "safe"},
                    "self_harm": {"filtered": false, "severity": "safe"}
                },
                "finish_reason": "stop",
                "index": 0,
                "logprobs": null,
                "message": {"annotations": [], "content": "Backoff spreads retries.", "refusal": null, "role": "assistant"}
            }],
            "created": 1_732_500_000,
            "id": "chatcmpl-AbC",
            "model": "gpt-4o-2024-11-20",
            "object": "chat.completion",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}],
            "system_fingerprint": "fp_b705f0c291",
            "usage": {
                "completion_tokens": 5,
                "completion_tokens_details": {"reasoning_tokens": 0},
                "prompt_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 0},
                "total_tokens": 25
            }
        })
    }

    #[test]
    fn parses_an_azure_reply_and_round_trips_unknown_fields() {
        let reply: ChatCompletion = serde_json::from_value(azure_reply()).unwrap();
        assert_eq!(reply.text(), Some("Backoff spreads retries."));
        assert_eq!(reply.finish_reason(), Some("stop"));
        assert_eq!(reply.id, "chatcmpl-AbC");
        assert_eq!(reply.created, 1_732_500_000);
        let usage = reply.usage.as_ref().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (20, 5, 25)
        );
        assert_eq!(
            usage.extra.get("prompt_tokens_details").unwrap()["cached_tokens"],
            0
        );
        assert!(reply.extra.contains_key("prompt_filter_results"));
        assert_eq!(
            reply.choices[0]
                .extra
                .get("content_filter_results")
                .unwrap()["hate"]["severity"],
            "safe"
        );
        assert!(reply.choices[0].message.extra.contains_key("annotations"));
        assert_eq!(serde_json::to_value(&reply).unwrap(), azure_reply());
    }

    #[test]
    fn parsing_bytes_keeps_unknown_fields_verbatim_and_reads_escaped_keys() {
        let text = r#"{"choices": [{"message": {"content": "Hi", "r\u0065fusal": null}}],
            "usage": {"prompt_tokens": 2, "total_tokens": null, "prompt_tokens_details": {"cached_tokens": 0}},
            "system_fingerprint":  "fp_1", "id": null}"#;
        let reply: ChatCompletion = serde_json::from_slice(text.as_bytes()).unwrap();
        assert_eq!(reply.text(), Some("Hi"));
        assert_eq!(reply.id, "");
        assert_eq!(
            reply.extra.raw("system_fingerprint").map(|raw| raw.get()),
            Some(r#""fp_1""#)
        );
        assert_eq!(
            reply.choices[0].message.extra.get("refusal"),
            Some(Value::Null)
        );
        let usage = reply.usage.as_ref().unwrap();
        assert_eq!((usage.prompt_tokens, usage.total_tokens), (2, 0));
        assert_eq!(
            usage
                .extra
                .raw("prompt_tokens_details")
                .map(|raw| raw.get()),
            Some(r#"{"cached_tokens": 0}"#)
        );
        // From bytes and from a `Value`, the same completion.
        let from_bytes: ChatCompletion =
            serde_json::from_slice(azure_reply().to_string().as_bytes()).unwrap();
        let from_value: ChatCompletion = serde_json::from_value(azure_reply()).unwrap();
        assert_eq!(from_bytes, from_value);
        let wrong = serde_json::from_slice::<ChatCompletion>(br#"{"choices": 3}"#).unwrap_err();
        assert!(wrong.to_string().contains("invalid type"), "{wrong}");
    }

    #[test]
    fn missing_fields_take_defaults_but_choices_are_required() {
        let reply: ChatCompletion = serde_json::from_value(json!({
            "created": null,
            "choices": [{"message": {"content": null}, "finish_reason": "content_filter"}]
        }))
        .unwrap();
        assert_eq!(reply.model, "");
        assert_eq!(reply.created, 0);
        assert_eq!(reply.object, "chat.completion");
        assert_eq!(reply.choices[0].message.role, "assistant");
        assert_eq!(reply.text(), None);
        assert_eq!(reply.usage, None);
        let error = serde_json::from_value::<ChatCompletion>(json!({"id": "x"})).unwrap_err();
        assert!(
            error.to_string().contains("missing field `choices`"),
            "{error}"
        );
    }

    #[test]
    fn tool_calls_parse_typed() {
        let reply: ChatCompletion = serde_json::from_value(json!({"choices": [{
            "index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]}
        }]}))
        .unwrap();
        let call = &reply.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.id, "call_1");
        assert_eq!(call.kind, "function");
        assert_eq!(call.function.name, "get_weather");
        assert_eq!(call.function.arguments, r#"{"city":"Oslo"}"#);
    }

    #[test]
    fn deployment_defaults_then_job_options() {
        let defaults = RequestDefaults {
            temperature: Some(0.7),
            max_completion_tokens: Some(512),
        };
        let request = ChatRequest::new(vec![json!({"role": "user", "content": "Hi"})])
            .temperature(0.1)
            .option("response_format", json!({"type": "json_object"}))
            .option("seed", 7)
            .option("stop", json!(["\n"]))
            .option("messages", json!("ignored: the request's messages win"));
        let body = build_request_body(&defaults, &request, false);
        assert_eq!(
            body,
            json!({
                "temperature": 0.1,
                "max_completion_tokens": 512,
                "response_format": {"type": "json_object"},
                "seed": 7,
                "stop": ["\n"],
                "messages": [{"role": "user", "content": "Hi"}]
            })
        );
    }

    #[test]
    fn nothing_is_sent_that_was_not_configured() {
        let request = ChatRequest::new(vec![]).option("stream", true);
        let body = build_request_body(&RequestDefaults::default(), &request, false);
        assert_eq!(body, json!({"messages": []}));
        let bytes = request_body_bytes(&RequestDefaults::default(), &request, false);
        assert_eq!(bytes, br#"{"messages":[]}"#);
    }

    #[test]
    fn wire_bytes_hold_each_key_once() {
        let defaults = RequestDefaults {
            temperature: Some(0.7),
            max_completion_tokens: Some(512),
        };
        let request = ChatRequest::new(vec![json!({"role": "user", "content": "Hi"})])
            .temperature(0.1)
            .option("stream", false)
            .option("stream_options", json!({"x": 1}))
            .option("messages", json!("ignored"));
        let bytes = request_body_bytes(&defaults, &request, true);
        let text = String::from_utf8(bytes).expect("JSON is UTF-8");
        for key in [
            "temperature",
            "max_completion_tokens",
            "messages",
            "stream",
            "stream_options",
        ] {
            assert_eq!(
                text.matches(&format!("\"{key}\":")).count(),
                1,
                "{key} in {text}"
            );
        }
        let sent: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(sent, build_request_body(&defaults, &request, true));
        assert_eq!(
            sent["stream_options"],
            json!({"x": 1, "include_usage": true})
        );
        assert_eq!(sent["temperature"], 0.1);
    }

    #[test]
    fn null_option_removes_a_deployment_default() {
        let defaults = RequestDefaults {
            temperature: Some(0.7),
            max_completion_tokens: None,
        };
        let request = ChatRequest::new(vec![]).option("temperature", Value::Null);
        let body = build_request_body(&defaults, &request, false);
        assert_eq!(body, json!({"messages": []}));
    }

    #[test]
    fn job_max_tokens_suppresses_default_max_completion_tokens() {
        let defaults = RequestDefaults {
            temperature: None,
            max_completion_tokens: Some(512),
        };
        let with_max_tokens = ChatRequest::new(vec![]).option("max_tokens", 10);
        let body = build_request_body(&defaults, &with_max_tokens, false);
        assert_eq!(body, json!({"max_tokens": 10, "messages": []}));
        let with_own = ChatRequest::new(vec![]).max_completion_tokens(20);
        let body = build_request_body(&defaults, &with_own, false);
        assert_eq!(body, json!({"max_completion_tokens": 20, "messages": []}));
    }

    #[test]
    fn streaming_adds_usage_and_keeps_caller_stream_options() {
        let plain =
            build_request_body(&RequestDefaults::default(), &ChatRequest::new(vec![]), true);
        assert_eq!(
            plain,
            json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}})
        );
        let own =
            ChatRequest::new(vec![]).option("stream_options", json!({"include_usage": false}));
        let body = build_request_body(&RequestDefaults::default(), &own, true);
        assert_eq!(body["stream_options"], json!({"include_usage": false}));
        let other = ChatRequest::new(vec![]).option("stream_options", json!({"x": 1}));
        let body = build_request_body(&RequestDefaults::default(), &other, true);
        assert_eq!(
            body["stream_options"],
            json!({"x": 1, "include_usage": true})
        );
    }

    #[test]
    fn request_from_body_rejects_a_body_without_messages() {
        assert_eq!(
            ChatRequest::from_body(json!([1])),
            Err(RequestBodyError::NotAnObject("a list"))
        );
        assert_eq!(
            ChatRequest::from_body(json!({"messages": "hi"})),
            Err(RequestBodyError::NoMessages)
        );
    }
}
