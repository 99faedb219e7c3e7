//! Which API a job calls ([`Operation`]), the request of any operation ([`JobRequest`]) and the
//! reply of any operation ([`Reply`]).
//!
//! Why one request type with an operation, rather than a job type per operation: the scheduler,
//! the retry policy, the budgets and the Dispatcher do the same thing for every operation
//! (admit, charge, place, retry, deliver); only three things differ: what a request is charged
//! ([`crate::quota::operation_cost`]), the URL and body it is sent as (here), and how its reply
//! is read ([`Reply::parse`]). Keeping those behind one `match` each leaves one code path for
//! pacing and dispatch.
//!
//! ```
//! use aoai_blaster_core::embeddings::EmbeddingsRequest;
//! use aoai_blaster_core::operation::{ApiStyle, JobRequest, Operation};
//! use aoai_blaster_core::chat::RequestDefaults;
//!
//! let request = JobRequest::from(EmbeddingsRequest::new(vec!["a", "b"]));
//! assert_eq!(request.operation(), Operation::Embeddings);
//! let body = request.body_bytes(&RequestDefaults::default(), false, Some("embed-3"));
//! assert_eq!(body, br#"{"input":["a","b"],"model":"embed-3"}"#);
//! assert_eq!(
//!     ApiStyle::V1.url("https://r.openai.azure.com/", "embed-3", Operation::Embeddings),
//!     "https://r.openai.azure.com/openai/v1/embeddings"
//! );
//! ```

use std::fmt;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

use crate::chat::{ChatCompletion, ChatRequest, RequestDefaults, Usage};
use crate::embeddings::{EmbeddingsReply, EmbeddingsRequest};
use crate::raw_reply::RawReply;
use crate::responses::{ResponsesReply, ResponsesRequest};

/// The API a job calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `chat/completions`.
    Chat,
    /// `embeddings`.
    Embeddings,
    /// `responses` (the Responses API; only in the v1 API).
    Responses,
}

impl Operation {
    /// Every operation, in the order of [`Operation::name`]'s list.
    pub const ALL: [Operation; 3] = [Operation::Chat, Operation::Embeddings, Operation::Responses];

    /// Its name in config (`operations: [chat, embeddings, responses]`).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
            Operation::Responses => "responses",
        }
    }

    /// The operation a config name stands for (exact, trimmed).
    pub fn from_name(name: &str) -> Option<Operation> {
        let name = name.trim();
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The URL path after `.../openai/v1/` or `.../openai/deployments/{name}/`.
    pub fn path(self) -> &'static str {
        match self {
            Operation::Chat => "chat/completions",
            Operation::Embeddings => "embeddings",
            Operation::Responses => "responses",
        }
    }

    /// Whether replies of this operation may be streamed (embeddings never are).
    pub fn streams(self) -> bool {
        !matches!(self, Operation::Embeddings)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The operations a deployment takes (its `operations` key; chat alone by default).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operations(u8);

impl Operations {
    /// No operation.
    pub const NONE: Operations = Operations(0);

    /// These operations.
    pub fn of(operations: impl IntoIterator<Item = Operation>) -> Operations {
        operations
            .into_iter()
            .fold(Operations::NONE, |set, op| Operations(set.0 | op.bit()))
    }

    /// Whether `operation` is among them.
    pub fn contains(self, operation: Operation) -> bool {
        self.0 & operation.bit() != 0
    }

    /// True when there are none.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Each operation, in [`Operation::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Operation> {
        Operation::ALL
            .into_iter()
            .filter(move |op| self.contains(*op))
    }
}

impl Default for Operations {
    fn default() -> Self {
        Operations::of([Operation::Chat])
    }
}

impl fmt::Debug for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// How a deployment's URLs are formed: chosen by its `api_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiStyle {
    /// `{endpoint}openai/deployments/{deployment}/{op}?api-version={version}`.
    Dated,
    /// `api_version: v1`: `{endpoint}openai/v1/{op}`, the deployment in `body.model`.
    V1,
}

/// The `api_version` that selects [`ApiStyle::V1`].
pub const V1_API_VERSION: &str = "v1";

impl ApiStyle {
    /// The style an `api_version` selects.
    pub fn of(api_version: &str) -> ApiStyle {
        if api_version == V1_API_VERSION {
            ApiStyle::V1
        } else {
            ApiStyle::Dated
        }
    }

    /// The URL of `operation` on `deployment` at resource `endpoint` (ending with `/`);
    /// `api_version` goes in the query of the dated style.
    pub fn url_with_version(
        self,
        endpoint: &str,
        deployment: &str,
        operation: Operation,
        api_version: &str,
    ) -> String {
        match self {
            ApiStyle::Dated => format!(
                "{endpoint}openai/deployments/{deployment}/{}?api-version={api_version}",
                operation.path()
            ),
            ApiStyle::V1 => format!("{endpoint}openai/v1/{}", operation.path()),
        }
    }

    /// The v1 URL of `operation` (the dated style needs a version: see
    /// [`url_with_version`](Self::url_with_version)).
    pub fn url(self, endpoint: &str, deployment: &str, operation: Operation) -> String {
        self.url_with_version(endpoint, deployment, operation, V1_API_VERSION)
    }
}

/// A request of any operation: what the scheduler holds and the endpoints send.
#[derive(Debug, Clone, PartialEq)]
pub enum JobRequest {
    /// A chat completion.
    Chat(ChatRequest),
    /// Embeddings of one or more inputs.
    Embeddings(EmbeddingsRequest),
    /// A Responses API call.
    Responses(ResponsesRequest),
}

impl From<ChatRequest> for JobRequest {
    fn from(request: ChatRequest) -> Self {
        JobRequest::Chat(request)
    }
}

impl From<EmbeddingsRequest> for JobRequest {
    fn from(request: EmbeddingsRequest) -> Self {
        JobRequest::Embeddings(request)
    }
}

impl From<ResponsesRequest> for JobRequest {
    fn from(request: ResponsesRequest) -> Self {
        JobRequest::Responses(request)
    }
}

impl JobRequest {
    /// The operation it calls.
    pub fn operation(&self) -> Operation {
        match self {
            JobRequest::Chat(_) => Operation::Chat,
            JobRequest::Embeddings(_) => Operation::Embeddings,
            JobRequest::Responses(_) => Operation::Responses,
        }
    }

    /// Its body parameters besides the messages or input.
    pub fn options(&self) -> &Map<String, Value> {
        match self {
            JobRequest::Chat(request) => &request.options,
            JobRequest::Embeddings(request) => &request.options,
            JobRequest::Responses(request) => &request.options,
        }
    }

    /// The JSON body one attempt sends: the deployment's `defaults` where the operation takes
    /// them, the job's options, the messages or input, the streaming switch where the operation
    /// streams, and `model` (for the v1 API: the deployment) when given, replacing any
    /// `model` option.
    pub fn body_bytes(
        &self,
        defaults: &RequestDefaults,
        stream: bool,
        model: Option<&str>,
    ) -> Vec<u8> {
        match self {
            JobRequest::Chat(request) => {
                crate::chat::request_body_bytes_for(defaults, request, stream, model)
            }
            JobRequest::Embeddings(request) => to_bytes(&Body {
                options: &request.options,
                defaults: None,
                input: &request.input,
                model,
                stream: false,
            }),
            JobRequest::Responses(request) => to_bytes(&Body {
                options: &request.options,
                defaults: Some(defaults),
                input: &request.input,
                model,
                stream,
            }),
        }
    }
}

fn to_bytes(body: &impl Serialize) -> Vec<u8> {
    // A map with string keys and JSON values always serialises.
    serde_json::to_vec(body).unwrap_or_default()
}

/// An embeddings or responses body as a borrowed view, each key once.
struct Body<'a> {
    options: &'a Map<String, Value>,
    /// Responses take `temperature` and (as `max_output_tokens`) `max_completion_tokens`.
    defaults: Option<&'a RequestDefaults>,
    input: &'a Value,
    model: Option<&'a str>,
    stream: bool,
}

/// Keys the body sets itself, whatever the options say.
const OWN_KEYS: [&str; 3] = ["input", "model", "stream"];

impl Serialize for Body<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(defaults) = self.defaults {
            if let Some(temperature) = defaults.temperature
                && !self.options.contains_key("temperature")
            {
                map.serialize_entry("temperature", &temperature)?;
            }
            if let Some(tokens) = defaults.max_completion_tokens
                && !self.options.contains_key("max_output_tokens")
            {
                map.serialize_entry("max_output_tokens", &tokens)?;
            }
        }
        for (key, value) in self.options {
            let own = OWN_KEYS.contains(&key.as_str()) && (key != "model" || self.model.is_some());
            if !value.is_null() && !own {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("input", self.input)?;
        if let Some(model) = self.model {
            map.serialize_entry("model", model)?;
        }
        if self.stream {
            map.serialize_entry("stream", &true)?;
        }
        map.end()
    }
}

/// The reply of any operation, as the endpoint read it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A chat completion (assembled, for streams).
    Chat(ChatCompletion),
    /// Embeddings, their vectors kept as the server's JSON text.
    Embeddings(EmbeddingsReply),
    /// A Responses API response (assembled from `response.completed`, for streams).
    Responses(ResponsesReply),
    /// Any operation's plain reply kept as the server's bytes, for a job that asked for it
    /// (`Job::raw_reply`): only its usage is read.
    Raw(RawReply),
}

impl From<ChatCompletion> for Reply {
    fn from(completion: ChatCompletion) -> Self {
        Reply::Chat(completion)
    }
}

/// Token counts of a reply, whatever its operation: prompt (input) and completion (output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Prompt or input tokens.
    pub prompt_tokens: u64,
    /// Completion or output tokens (0 for embeddings).
    pub completion_tokens: u64,
    /// What the reply says the total is.
    pub total_tokens: u64,
}

impl From<&Usage> for TokenCounts {
    fn from(usage: &Usage) -> Self {
        TokenCounts {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
        }
    }
}

impl Reply {
    /// Reads a plain (not streamed) 2xx reply body of `operation`.
    pub fn parse(operation: Operation, body: &[u8]) -> Result<Reply, serde_json::Error> {
        Ok(match operation {
            Operation::Chat => Reply::Chat(serde_json::from_slice(body)?),
            Operation::Embeddings => Reply::Embeddings(serde_json::from_slice(body)?),
            Operation::Responses => Reply::Responses(ResponsesReply::from_slice(body)?),
        })
    }

    /// The operation that answered.
    pub fn operation(&self) -> Operation {
        match self {
            Reply::Chat(_) => Operation::Chat,
            Reply::Embeddings(_) => Operation::Embeddings,
            Reply::Responses(_) => Operation::Responses,
            Reply::Raw(raw) => raw.operation(),
        }
    }

    /// Token counts, when the reply stated them.
    pub fn usage(&self) -> Option<TokenCounts> {
        match self {
            Reply::Chat(completion) => completion.usage.as_ref().map(TokenCounts::from),
            Reply::Embeddings(reply) => reply.usage.as_ref().map(|usage| TokenCounts {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: 0,
                total_tokens: usage.total_tokens,
            }),
            Reply::Responses(reply) => reply.usage().map(|usage| TokenCounts {
                prompt_tokens: usage.input_tokens,
                completion_tokens: usage.output_tokens,
                total_tokens: usage.total_tokens,
            }),
            Reply::Raw(raw) => raw.usage(),
        }
    }

    /// The generated text: the first choice's, or the Responses output text (`None` for
    /// embeddings and raw replies, which are not read).
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Chat(completion) => completion.text(),
            Reply::Embeddings(_) | Reply::Raw(_) => None,
            Reply::Responses(reply) => Some(reply.output_text()),
        }
    }

    /// The reply as JSON text, as an output line carries it (embedding vectors and Responses
    /// bodies written from the server's own text, untouched).
    pub fn to_json(&self) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
        match self {
            Reply::Chat(completion) => serde_json::value::to_raw_value(completion),
            Reply::Embeddings(reply) => serde_json::value::to_raw_value(reply),
            Reply::Responses(reply) => Ok(reply.body().to_owned()),
            Reply::Raw(raw) => serde_json::from_slice(raw.body()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_paths_and_sets() {
        for op in Operation::ALL {
            assert_eq!(Operation::from_name(op.name()), Some(op));
        }
        assert_eq!(
            Operation::from_name(" embeddings "),
            Some(Operation::Embeddings)
        );
        assert_eq!(Operation::from_name("completions"), None);
        let set = Operations::of([Operation::Responses, Operation::Chat]);
        assert!(set.contains(Operation::Chat) && set.contains(Operation::Responses));
        assert!(!set.contains(Operation::Embeddings));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Operation::Chat, Operation::Responses]
        );
        assert_eq!(
            Operations::default().iter().collect::<Vec<_>>(),
            [Operation::Chat]
        );
        assert!(Operations::NONE.is_empty());
    }

    #[test]
    fn urls_of_both_styles() {
        let endpoint = "https://r.openai.azure.com/";
        assert_eq!(
            ApiStyle::Dated.url_with_version(endpoint, "emb", Operation::Embeddings, "2024-10-21"),
            "https://r.openai.azure.com/openai/deployments/emb/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            ApiStyle::of("v1").url(endpoint, "gpt", Operation::Responses),
            "https://r.openai.azure.com/openai/v1/responses"
        );
        assert_eq!(
            ApiStyle::of("v1").url(endpoint, "gpt", Operation::Chat),
            "https://r.openai.azure.com/openai/v1/chat/completions"
        );
        assert_eq!(ApiStyle::of("2025-01-01-preview"), ApiStyle::Dated);
    }

    #[test]
    fn bodies_hold_each_key_once_with_the_deployment_as_model() {
        let defaults = RequestDefaults {
            temperature: Some(0.5),
            max_completion_tokens: Some(300),
        };
        let embeddings = JobRequest::from(
            EmbeddingsRequest::new("hello")
                .option("model", "ignored")
                .option("dimensions", 8),
        );
        let body: Value =
            serde_json::from_slice(&embeddings.body_bytes(&defaults, true, Some("emb"))).unwrap();
        assert_eq!(
            body,
            json!({"dimensions": 8, "input": "hello", "model": "emb"})
        );
        // Dated style: no model is added; a caller's `model` option stays as given.
        let body: Value =
            serde_json::from_slice(&embeddings.body_bytes(&defaults, false, None)).unwrap();
        assert_eq!(
            body,
            json!({"dimensions": 8, "input": "hello", "model": "ignored"})
        );

        let responses = JobRequest::from(
            ResponsesRequest::new("Say hi")
                .option("instructions", "Be brief.")
                .option("stream", false),
        );
        let bytes = responses.body_bytes(&defaults, true, Some("gpt"));
        let text = String::from_utf8(bytes).unwrap();
        for key in [
            "temperature",
            "max_output_tokens",
            "input",
            "model",
            "stream",
        ] {
            assert_eq!(
                text.matches(&format!("\"{key}\":")).count(),
                1,
                "{key} in {text}"
            );
        }
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body,
            json!({"temperature": 0.5, "max_output_tokens": 300, "instructions": "Be brief.",
                   "input": "Say hi", "model": "gpt", "stream": true})
        );
        let chat = JobRequest::from(ChatRequest::empty().user("Hi").option("model", "x"));
        let body: Value = serde_json::from_slice(&chat.body_bytes(
            &RequestDefaults::default(),
            false,
            Some("gpt"),
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({"messages": [{"role": "user", "content": "Hi"}], "model": "gpt"})
        );
    }

    #[test]
    fn replies_give_usage_and_text() {
        let chat = Reply::parse(
            Operation::Chat,
            br#"{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(chat.text(), Some("Hi"));
        assert_eq!(
            chat.usage(),
            Some(TokenCounts {
                prompt_tokens: 3,
                completion_tokens: 1,
                total_tokens: 4
            })
        );
        let embeddings = Reply::parse(
            Operation::Embeddings,
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-1e-7]}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}"#,
        )
        .unwrap();
        assert_eq!(embeddings.text(), None);
        assert_eq!(
            embeddings.usage(),
            Some(TokenCounts {
                prompt_tokens: 2,
                completion_tokens: 0,
                total_tokens: 2
            })
        );
        assert!(embeddings.to_json().unwrap().get().contains("[0.5,-1e-7]"));
        assert!(Reply::parse(Operation::Embeddings, br#"{"object":"list"}"#).is_err());
    }
}
