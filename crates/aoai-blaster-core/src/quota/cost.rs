//! What a request is charged on arrival: its prompt's tokens (the larger of a tokenizer's count
//! and a character estimate, [`prompt_charge`]) plus its completion allowance times its choices
//! ([`options_cost`], the one formula); for embeddings and responses, [`operation_cost`].

use serde_json::{Map, Value};

use super::Cost;
use crate::operation::JobRequest;
use crate::tokens::{Encoding, TokenMemo, count_chat_prompt, count_chat_prompt_memo};

/// Tokens charged per message on top of its text (role, separators), as OpenAI's chat format
/// spends them for the gpt-4o family.
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Tokens charged once per request for the reply's priming.
pub const TOKENS_PER_REPLY: u64 = 3;

/// Tokens charged per image part (a low-detail image's cost; the estimate does not open it).
pub const TOKENS_PER_IMAGE: u64 = 85;

/// Estimates a chat request's prompt tokens from characters: for each message,
/// [`TOKENS_PER_MESSAGE`] plus a quarter of the characters of its strings (content, text parts,
/// name, tool calls; not its role), rounded up, plus [`TOKENS_PER_IMAGE`] per image part; plus
/// [`TOKENS_PER_REPLY`]. About right for English with o200k/cl100k, low for scripts without
/// spaces (e.g. Chinese): the budget charges the larger of this and the tokenizer's count
/// ([`prompt_charge`]). For plain text messages this is also the simulator's own estimate; for
/// tool calls and images it errs high.
///
/// ```
/// use aoai_blaster_core::quota::estimate_prompt_tokens_chars;
/// use serde_json::json;
///
/// let messages = [json!({"role": "user", "content": "Say hello in French!"})]; // 20 chars
/// assert_eq!(estimate_prompt_tokens_chars(&messages), 3 + 5 + 3);
/// ```
pub fn estimate_prompt_tokens_chars(messages: &[serde_json::Value]) -> u64 {
    let per_messages: u64 = messages
        .iter()
        .map(|message| {
            let mut chars = 0u64;
            let mut images = 0u64;
            match message {
                serde_json::Value::Object(fields) => {
                    for (key, value) in fields {
                        if key != "role" {
                            count_text(value, &mut chars, &mut images);
                        }
                    }
                }
                other => count_text(other, &mut chars, &mut images),
            }
            TOKENS_PER_MESSAGE
                .saturating_add(chars.div_ceil(4))
                .saturating_add(images.saturating_mul(TOKENS_PER_IMAGE))
        })
        .fold(0u64, u64::saturating_add);
    per_messages.saturating_add(TOKENS_PER_REPLY)
}

fn count_text(value: &serde_json::Value, chars: &mut u64, images: &mut u64) {
    match value {
        serde_json::Value::String(text) => {
            *chars = chars.saturating_add(text.chars().count() as u64);
        }
        serde_json::Value::Array(items) => {
            for item in items {
                count_text(item, chars, images);
            }
        }
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                match key.as_str() {
                    // The part's type tag is no text of the prompt.
                    "type" => {}
                    "image_url" | "input_image" => *images = images.saturating_add(1),
                    _ => count_text(value, chars, images),
                }
            }
        }
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}

/// The cost Azure charges a chat request on arrival: `prompt_tokens` plus the completion
/// allowance (`max_completion_tokens` or `max_tokens`, the larger if both are given, else
/// `default_max_tokens`), all times `max(n, best_of, 1)`; one request. (Whether Azure multiplies
/// the prompt too is not documented; multiplying it is the cautious reading, and the one the
/// simulator charges.) Values that are missing or not non-negative integers count as absent.
/// Never overflows (saturates).
///
/// ```
/// use aoai_blaster_core::quota::{job_cost, Cost};
/// use serde_json::json;
///
/// let body = json!({"messages": [], "max_tokens": 100, "n": 3});
/// assert_eq!(job_cost(&body, 50, 4096), Cost { requests: 1, tokens: 3 * (50 + 100) });
/// ```
pub fn job_cost(body: &serde_json::Value, prompt_tokens: u64, default_max_tokens: u64) -> Cost {
    match body.as_object() {
        Some(options) => options_cost(options, prompt_tokens, default_max_tokens),
        None => options_cost(&serde_json::Map::new(), prompt_tokens, default_max_tokens),
    }
}

/// [`job_cost`] for a request's options (its body without `messages`), without building a
/// JSON value.
pub fn options_cost(
    options: &serde_json::Map<String, serde_json::Value>,
    prompt_tokens: u64,
    default_max_tokens: u64,
) -> Cost {
    let field = |name: &str| options.get(name).and_then(serde_json::Value::as_u64);
    let completion = match (field("max_completion_tokens"), field("max_tokens")) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => default_max_tokens,
    };
    let choices = field("n")
        .unwrap_or(1)
        .max(field("best_of").unwrap_or(1))
        .max(1);
    Cost {
        requests: 1,
        tokens: prompt_tokens
            .saturating_add(completion)
            .saturating_mul(choices),
    }
}

/// The prompt tokens a budget charges for a chat request: the larger of the tokenizer's count
/// ([`count_chat_prompt`] with the encoding `tokenizer` names) and the character estimate
/// ([`crate::quota::estimate_prompt_tokens_chars`]), so that neither way Azure's estimate leans
/// is undercharged. An unknown `tokenizer` name or an unavailable encoder gives the character
/// estimate alone.
///
/// ```
/// use aoai_blaster_core::quota::prompt_charge;
/// use serde_json::json;
///
/// // English prose: a quarter of the characters is the larger estimate.
/// let prose = [json!({"role": "user", "content": "Please summarise the following paragraph."})];
/// assert_eq!(prompt_charge("o200k_base", &prose, None), 3 + 11 + 3);
/// // Spaced digits (each digit and each space a token) take far more than characters / 4:
/// // the tokenizer's count wins.
/// let digits = [json!({"role": "user", "content": "3 1 4 1 5 9 2 6 5 3 5 8 9 7 9 3"})];
/// assert_eq!(prompt_charge("o200k_base", &digits, None), 3 + 1 + 31 + 3);
/// ```
pub fn prompt_charge(tokenizer: &str, messages: &[Value], tools: Option<&Value>) -> u64 {
    let counted = Encoding::from_name(tokenizer)
        .and_then(|encoding| count_chat_prompt(encoding, messages, tools))
        .unwrap_or(0);
    char_charge(messages, tools).max(counted)
}

/// [`prompt_charge`] with long texts looked up in (and added to) `memo`.
pub fn prompt_charge_memo(
    memo: &mut TokenMemo,
    tokenizer: &str,
    messages: &[Value],
    tools: Option<&Value>,
) -> u64 {
    let counted = Encoding::from_name(tokenizer)
        .and_then(|encoding| count_chat_prompt_memo(memo, encoding, messages, tools))
        .unwrap_or(0);
    char_charge(messages, tools).max(counted)
}

/// The character estimate alone (about 4 characters a token, tool definitions included): the
/// charge where no decision depends on a tokenizer's count.
pub fn char_charge(messages: &[Value], tools: Option<&Value>) -> u64 {
    crate::quota::estimate_prompt_tokens_chars(messages).saturating_add(
        tools
            .map(|t| (t.to_string().chars().count() as u64).div_ceil(4))
            .unwrap_or(0),
    )
}

/// The input tokens a budget charges for any operation's request, counted with `tokenizer`:
/// a chat prompt ([`prompt_charge_memo`]); a Responses input (its `instructions` and input read
/// as chat messages, [`ResponsesRequest::as_messages`](crate::responses::ResponsesRequest::as_messages),
/// with its `tools`); an embeddings input ([`embeddings_charge`]).
pub fn input_charge_memo(memo: &mut TokenMemo, tokenizer: &str, request: &JobRequest) -> u64 {
    match request {
        JobRequest::Chat(chat) => prompt_charge_memo(
            memo,
            tokenizer,
            &chat.messages,
            tool_definitions(&chat.options),
        ),
        JobRequest::Responses(responses) => prompt_charge_memo(
            memo,
            tokenizer,
            &responses.as_messages(),
            responses.options.get("tools"),
        ),
        JobRequest::Embeddings(embeddings) => embeddings_charge(tokenizer, &embeddings.input),
    }
}

/// The tokens an embeddings `input` is charged (Azure charges embeddings by input tokens,
/// nothing for output): each text the larger of the tokenizer's count and a quarter of its
/// characters (as for chat prompts: neither way Azure's estimate leans is undercharged); a list
/// of token ids its length. Inputs of other kinds count nothing (Azure refuses them).
///
/// ```
/// use aoai_blaster_core::quota::embeddings_charge;
/// use serde_json::json;
///
/// assert_eq!(embeddings_charge("o200k_base", &json!("Please summarise this")), 6); // 21 chars
/// assert_eq!(embeddings_charge("o200k_base", &json!(["abcd", "abcdefgh"])), 1 + 2);
/// assert_eq!(embeddings_charge("o200k_base", &json!([[1, 2, 3], [4]])), 4);
/// assert_eq!(embeddings_charge("o200k_base", &json!([10, 11])), 2);
/// ```
pub fn embeddings_charge(tokenizer: &str, input: &Value) -> u64 {
    embeddings_charge_with(Encoding::from_name(tokenizer), input)
}

/// [`input_charge_memo`] without a tokenizer: the character estimate alone, for deployments
/// whose pacing no token count decides (no tables loaded).
pub fn input_char_charge(request: &JobRequest) -> u64 {
    match request {
        JobRequest::Chat(chat) => char_charge(&chat.messages, tool_definitions(&chat.options)),
        JobRequest::Responses(responses) => {
            char_charge(&responses.as_messages(), responses.options.get("tools"))
        }
        JobRequest::Embeddings(embeddings) => embeddings_charge_with(None, &embeddings.input),
    }
}

/// [`embeddings_charge`] with `encoding` (none: characters alone).
fn embeddings_charge_with(encoding: Option<Encoding>, input: &Value) -> u64 {
    let text = |text: &str| {
        let chars = (text.chars().count() as u64).div_ceil(4);
        chars.max(encoding.and_then(|e| e.count(text)).unwrap_or(0))
    };
    let ids = |items: &[Value]| items.len() as u64;
    match input {
        Value::String(input) => text(input),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
            ids(items)
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(input) => text(input),
                Value::Array(tokens) => ids(tokens),
                _ => 0,
            })
            .fold(0, u64::saturating_add),
        _ => 0,
    }
}

/// What a request of any operation is charged on arrival, given its input tokens
/// ([`input_charge_memo`]): a chat request by [`options_cost`]; an embeddings request its input
/// tokens alone; a Responses request its input plus `max_output_tokens` (else
/// `default_max_tokens`, as for chat). One request each.
///
/// ```
/// use aoai_blaster_core::embeddings::EmbeddingsRequest;
/// use aoai_blaster_core::operation::JobRequest;
/// use aoai_blaster_core::quota::{operation_cost, Cost};
/// use aoai_blaster_core::responses::ResponsesRequest;
///
/// let embeddings = JobRequest::from(EmbeddingsRequest::new(vec!["a", "b"]));
/// assert_eq!(operation_cost(&embeddings, 2, 4096), Cost { requests: 1, tokens: 2 });
/// let responses = JobRequest::from(ResponsesRequest::new("hi").option("max_output_tokens", 50));
/// assert_eq!(operation_cost(&responses, 9, 4096), Cost { requests: 1, tokens: 59 });
/// let open = JobRequest::from(ResponsesRequest::new("hi"));
/// assert_eq!(operation_cost(&open, 9, 4096), Cost { requests: 1, tokens: 4105 });
/// ```
pub fn operation_cost(request: &JobRequest, input_tokens: u64, default_max_tokens: u64) -> Cost {
    match request {
        JobRequest::Chat(chat) => options_cost(&chat.options, input_tokens, default_max_tokens),
        JobRequest::Embeddings(_) => Cost {
            requests: 1,
            tokens: input_tokens,
        },
        JobRequest::Responses(responses) => {
            let output = responses
                .options
                .get("max_output_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(default_max_tokens);
            Cost {
                requests: 1,
                tokens: input_tokens.saturating_add(output),
            }
        }
    }
}

/// The request's tool definitions (`tools`, else the older `functions`), if any.
pub fn tool_definitions(options: &Map<String, Value>) -> Option<&Value> {
    options.get("tools").or_else(|| options.get("functions"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::test_support::cost;
    use serde_json::json;

    #[test]
    fn prompt_estimate_counts_text_parts_and_images() {
        let messages = [
            json!({"role": "system", "content": "You are terse."}), // 14 chars -> 4
            json!({"role": "user", "name": "ann", "content": [       // 3 + 8 chars -> 3
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]}), // "c1" + "f" + "{}" = 5 chars -> 2
        ];
        assert_eq!(
            estimate_prompt_tokens_chars(&messages),
            (3 + 4) + (3 + 3 + TOKENS_PER_IMAGE) + (3 + 2) + TOKENS_PER_REPLY
        );
        assert_eq!(estimate_prompt_tokens_chars(&[]), TOKENS_PER_REPLY);
        // Characters, not bytes: 8 accented letters are 2 tokens, not 4.
        let accented = [json!({"role": "user", "content": "éééééééé"})];
        assert_eq!(estimate_prompt_tokens_chars(&accented), 3 + 2 + 3);
    }

    #[test]
    fn job_cost_follows_azure_charging() {
        let cases = [
            (json!({}), 1_000 + 4096),
            (json!({"max_tokens": 200}), 1_000 + 200),
            (json!({"max_completion_tokens": 300}), 1_000 + 300),
            (
                json!({"max_tokens": 200, "max_completion_tokens": 300}),
                1_000 + 300,
            ),
            (json!({"max_tokens": 100, "n": 4}), 4 * 1_100),
            (json!({"max_tokens": 100, "n": 2, "best_of": 5}), 5 * 1_100),
            (json!({"max_tokens": -5, "n": "three"}), 1_000 + 4096),
            (json!({"max_tokens": 100, "n": 0}), 1_000 + 100),
        ];
        for (body, tokens) in cases {
            assert_eq!(job_cost(&body, 1_000, 4096), cost(tokens), "{body}");
        }
        let absurd = json!({"max_tokens": u64::MAX, "n": 128});
        assert_eq!(job_cost(&absurd, 10, 0).tokens, u64::MAX);
    }

    #[test]
    fn charge_is_the_larger_estimate_and_falls_back_on_unknown_names() {
        // 44 characters of prose: 11 by characters, fewer by the tokenizer.
        let prose =
            [json!({"role": "user", "content": "Please summarise the following paragraph."})];
        let counted = count_chat_prompt(Encoding::O200kBase, &prose, None).unwrap_or(0);
        let chars = crate::quota::estimate_prompt_tokens_chars(&prose);
        assert!(counted < chars, "{counted} < {chars}");
        assert_eq!(prompt_charge("o200k_base", &prose, None), chars);
        // Chinese: one token per character or so, far above characters / 4.
        let chinese =
            [json!({"role": "user", "content": "请用中文总结下面这段文字的主要内容和观点"})];
        let counted = count_chat_prompt(Encoding::O200kBase, &chinese, None).unwrap_or(0);
        assert!(counted > crate::quota::estimate_prompt_tokens_chars(&chinese));
        assert_eq!(prompt_charge("o200k_base", &chinese, None), counted);
        // Unknown encoding: the character estimate.
        assert_eq!(prompt_charge("no_such_encoding", &chinese, None), {
            crate::quota::estimate_prompt_tokens_chars(&chinese)
        });
    }
}
