//! Prompt token estimates with a real tokenizer (tiktoken's vocabularies, compiled in: works
//! offline), counted the way OpenAI counts a chat prompt.
//!
//! Why a tokenizer when Azure's rate limiter estimates partly from characters: a quarter of the
//! characters is right for English prose, but code, numbers, JSON and scripts without spaces
//! (Chinese, Japanese) take far more tokens per character. A budget that charges too little
//! sends too much, and learns of it from 429s. So the charge for a prompt is the **larger** of
//! the tokenizer's count and the character estimate ([`prompt_charge`]): whichever of the two
//! Azure's estimate is closer to, the budget does not undercharge.
//!
//! How a chat prompt is counted (OpenAI's cookbook, for the gpt-3.5/4/4o families): each message
//! costs [`TOKENS_PER_MESSAGE`] plus the tokens of its role, its text (a string `content`, or the
//! `text` of each content part) and any other string field (`name` costs one token more,
//! `tool_call_id`, `refusal`); each tool call costs the tokens of its function name and
//! arguments plus one; each image part a fixed allowance ([`TOKENS_PER_LOW_DETAIL_IMAGE`] or
//! [`TOKENS_PER_IMAGE_ALLOWANCE`]: the image is not opened); and the reply is primed with
//! [`TOKENS_PER_REPLY`]. Tool definitions sent in the request (`tools`, `functions`) are counted
//! as the tokens of their JSON text, which errs high.
//!
//! Counts equal tiktoken's `encode_ordinary(text).len()` (tested against tiktoken-rs); the
//! counter (`tokens/bpe.rs`) keeps each vocabulary as static tables plus one hash table of
//! ranks, about 2 MiB for o200k where tiktoken-rs's `CoreBPE` holds some 40 MiB. Each is built
//! once per process, on first use (a few milliseconds), and shared.
//!
//! ```
//! use aoai_blaster_core::tokens::{Encoding, count_chat_prompt};
//! use serde_json::json;
//!
//! let messages = [json!({"role": "user", "content": "hello world"})];
//! // 3 per message + "user" (1) + "hello world" (2) + 3 to prime the reply.
//! assert_eq!(count_chat_prompt(Encoding::O200kBase, &messages, None), Some(9));
//! ```

use std::sync::OnceLock;

use serde_json::{Map, Value};

mod bpe;
use bpe::Counter;

pub use crate::quota::{TOKENS_PER_MESSAGE, TOKENS_PER_REPLY};
// What a request is charged lives with the budgets (`quota::cost`); these names stay here too.
pub use crate::quota::{prompt_charge, prompt_charge_memo, tool_definitions};

/// Extra tokens for a message that has a `name`.
pub const TOKENS_PER_NAME: u64 = 1;

/// Extra tokens per tool (or function) call in an assistant message.
pub const TOKENS_PER_TOOL_CALL: u64 = 1;

/// Tokens charged for an image part with `"detail": "low"` (OpenAI's fixed low-detail cost).
pub const TOKENS_PER_LOW_DETAIL_IMAGE: u64 = 85;

/// Tokens charged for any other image part: the cost of a 1024×1024 image at high detail
/// (85 + 4 tiles × 170). Larger images cost more; the estimate does not open the image.
pub const TOKENS_PER_IMAGE_ALLOWANCE: u64 = 765;

/// A BPE encoding a deployment's `tokenizer` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// gpt-4o, gpt-4.1, gpt-5, o1/o3/o4 (the default).
    O200kBase,
    /// gpt-oss.
    O200kHarmony,
    /// gpt-4, gpt-3.5-turbo.
    Cl100kBase,
    /// Codex-era models.
    P50kBase,
    /// Edit models.
    P50kEdit,
    /// GPT-3 (`gpt2`).
    R50kBase,
}

impl Encoding {
    /// Every encoding, in the order of [`crate::config::TOKENIZERS`].
    pub const ALL: [Encoding; 6] = [
        Encoding::O200kBase,
        Encoding::O200kHarmony,
        Encoding::Cl100kBase,
        Encoding::P50kBase,
        Encoding::P50kEdit,
        Encoding::R50kBase,
    ];

    /// The name used in configuration (`o200k_base`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::O200kHarmony => "o200k_harmony",
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::P50kBase => "p50k_base",
            Encoding::P50kEdit => "p50k_edit",
            Encoding::R50kBase => "r50k_base",
        }
    }

    /// The encoding a configuration name stands for (exact, trimmed), `None` if unknown.
    pub fn from_name(name: &str) -> Option<Encoding> {
        let name = name.trim();
        Encoding::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The shared counter, built on first use; `None` if it could not be built (then callers
    /// fall back to the character estimate). Encodings that differ only in special tokens
    /// (which count as ordinary text here) share one.
    fn encoder(self) -> Option<&'static Counter> {
        static COUNTERS: [OnceLock<Option<Counter>>; 4] = [const { OnceLock::new() }; 4];
        let (slot, tables) = match self {
            Encoding::O200kBase | Encoding::O200kHarmony => (0, bpe::O200K_BASE),
            Encoding::Cl100kBase => (1, bpe::CL100K_BASE),
            Encoding::P50kBase | Encoding::P50kEdit => (2, bpe::P50K_BASE),
            Encoding::R50kBase => (3, bpe::R50K_BASE),
        };
        COUNTERS[slot].get_or_init(|| Counter::new(tables)).as_ref()
    }

    /// Tokens of `text` in this encoding (special-token text counts as ordinary text), or
    /// `None` if the encoder is unavailable.
    pub fn count(self, text: &str) -> Option<u64> {
        let encoder = self.encoder()?;
        Some(encoder.count(text) as u64)
    }
}

/// Builds the encoder `tokenizer` names now (its hash table of ranks), so that the first job
/// does not wait for it. Returns whether the encoder is available; an
/// unknown name builds nothing. Safe to call from several threads: the encoder is built once.
///
/// ```
/// assert!(aoai_blaster_core::tokens::warm_up("cl100k_base"));
/// assert!(!aoai_blaster_core::tokens::warm_up("no_such_encoding"));
/// ```
pub fn warm_up(tokenizer: &str) -> bool {
    Encoding::from_name(tokenizer).is_some_and(|encoding| encoding.encoder().is_some())
}

/// Counts a chat prompt's tokens with `encoding`, the way OpenAI does (see the module docs);
/// `tools` is the request's `tools`/`functions` definitions, if any. `None` when the encoder is
/// unavailable.
pub fn count_chat_prompt(
    encoding: Encoding,
    messages: &[Value],
    tools: Option<&Value>,
) -> Option<u64> {
    let encoder = encoding.encoder()?;
    let count = |text: &str| encoder.count(text) as u64;
    Some(count_chat_prompt_by(&count, messages, tools))
}

/// [`count_chat_prompt`] that looks long texts up in `memo` first, and remembers them.
pub fn count_chat_prompt_memo(
    memo: &mut TokenMemo,
    encoding: Encoding,
    messages: &[Value],
    tools: Option<&Value>,
) -> Option<u64> {
    let encoder = encoding.encoder()?;
    let memo = std::cell::RefCell::new(memo);
    let count = |text: &str| memo.borrow_mut().count(encoding, encoder, text);
    Some(count_chat_prompt_by(&count, messages, tools))
}

fn count_chat_prompt_by(
    count: &impl Fn(&str) -> u64,
    messages: &[Value],
    tools: Option<&Value>,
) -> u64 {
    let mut total = TOKENS_PER_REPLY;
    for message in messages {
        total = total.saturating_add(TOKENS_PER_MESSAGE);
        let fields = match message {
            Value::Object(fields) => fields,
            other => {
                total = total.saturating_add(count_value(other, count));
                continue;
            }
        };
        for (key, value) in fields {
            let tokens = match key.as_str() {
                "name" => count_value(value, count).saturating_add(TOKENS_PER_NAME),
                "tool_calls" => count_tool_calls(value, count),
                "function_call" => count_function(value, count),
                _ => count_value(value, count),
            };
            total = total.saturating_add(tokens);
        }
    }
    if let Some(tools) = tools {
        let json = tools.to_string();
        total = total.saturating_add(count(&json));
    }
    total
}

/// Remembers the token counts of long texts: a batch repeats its system prompt, few-shot
/// examples and tool definitions in every job, and counting 1,000 tokens takes about 160 µs
/// (o200k, release build) where looking them up costs a hash of the text (a few µs).
///
/// Texts shorter than [`TokenMemo::MIN_BYTES`] are counted each time (counting them is as cheap
/// as remembering them). A text is known by its length and a 64-bit hash of it: a collision,
/// at odds of about one in 2^64, would only misestimate one prompt. When full, the memo starts
/// afresh.
///
/// ```
/// use aoai_blaster_core::tokens::{Encoding, TokenMemo, count_chat_prompt, count_chat_prompt_memo};
/// use serde_json::json;
///
/// let system = "You label support tickets. ".repeat(40);
/// let messages = [json!({"role": "system", "content": system}), json!({"role": "user", "content": "Printer on fire"})];
/// let mut memo = TokenMemo::new(1024);
/// let first = count_chat_prompt_memo(&mut memo, Encoding::O200kBase, &messages, None);
/// let second = count_chat_prompt_memo(&mut memo, Encoding::O200kBase, &messages, None);
/// assert_eq!(first, count_chat_prompt(Encoding::O200kBase, &messages, None));
/// assert_eq!(first, second);
/// assert_eq!(memo.hits(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct TokenMemo {
    counts: std::collections::HashMap<(Encoding, usize, u64), u64>,
    capacity: usize,
    hits: u64,
}

impl TokenMemo {
    /// Texts at least this long are remembered.
    pub const MIN_BYTES: usize = 256;

    /// A memo holding at most `capacity` texts' counts.
    pub fn new(capacity: usize) -> TokenMemo {
        TokenMemo {
            counts: std::collections::HashMap::new(),
            capacity: capacity.max(1),
            hits: 0,
        }
    }

    /// Counts answered from memory so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Texts remembered now.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    fn count(&mut self, encoding: Encoding, encoder: &Counter, text: &str) -> u64 {
        if text.len() < Self::MIN_BYTES {
            return encoder.count(text) as u64;
        }
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(text, &mut hasher);
        let key = (encoding, text.len(), std::hash::Hasher::finish(&hasher));
        if let Some(&tokens) = self.counts.get(&key) {
            self.hits += 1;
            return tokens;
        }
        let tokens = encoder.count(text) as u64;
        if self.counts.len() >= self.capacity {
            self.counts.clear();
        }
        self.counts.insert(key, tokens);
        tokens
    }
}

fn count_tool_calls(value: &Value, count: &impl Fn(&str) -> u64) -> u64 {
    let Value::Array(calls) = value else {
        return count_value(value, count);
    };
    calls
        .iter()
        .map(|call| match call.get("function") {
            Some(function) => count_function(function, count),
            None => count_value(call, count).saturating_add(TOKENS_PER_TOOL_CALL),
        })
        .fold(0, u64::saturating_add)
}

fn count_function(function: &Value, count: &impl Fn(&str) -> u64) -> u64 {
    let text = |key: &str| {
        function
            .get(key)
            .map(|v| count_value(v, count))
            .unwrap_or(0)
    };
    text("name")
        .saturating_add(text("arguments"))
        .saturating_add(TOKENS_PER_TOOL_CALL)
}

/// Tokens of every string inside `value` (content parts: their text; images: an allowance;
/// `type` tags and tool-call ids are skipped).
fn count_value(value: &Value, count: &impl Fn(&str) -> u64) -> u64 {
    match value {
        Value::String(text) => count(text),
        Value::Array(items) => items
            .iter()
            .map(|item| count_value(item, count))
            .fold(0, u64::saturating_add),
        Value::Object(fields) => count_part(fields, count),
        Value::Number(_) | Value::Bool(_) | Value::Null => 0,
    }
}

fn count_part(fields: &Map<String, Value>, count: &impl Fn(&str) -> u64) -> u64 {
    let mut total = 0u64;
    for (key, value) in fields {
        let tokens = match key.as_str() {
            "type" | "id" => 0,
            "image_url" | "input_image" => image_tokens(value),
            _ => count_value(value, count),
        };
        total = total.saturating_add(tokens);
    }
    total
}

fn image_tokens(image: &Value) -> u64 {
    let low = image.get("detail").and_then(Value::as_str) == Some("low");
    if low {
        TOKENS_PER_LOW_DETAIL_IMAGE
    } else {
        TOKENS_PER_IMAGE_ALLOWANCE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_memo_counts_as_the_tokenizer_does_and_starts_afresh_when_full() {
        let long = |i: usize| format!("{i} ").repeat(TokenMemo::MIN_BYTES);
        let mut memo = TokenMemo::new(2);
        for round in 0..2 {
            for i in 0..2 {
                let messages = [
                    json!({"role": "system", "content": long(i)}),
                    json!({"role": "user", "content": "short"}),
                ];
                assert_eq!(
                    count_chat_prompt_memo(&mut memo, Encoding::O200kBase, &messages, None),
                    count_chat_prompt(Encoding::O200kBase, &messages, None),
                    "round {round}, text {i}"
                );
            }
        }
        // Short texts are never stored; the second round found both long ones.
        assert_eq!((memo.len(), memo.hits()), (2, 2));
        let third = [json!({"role": "system", "content": long(2)})];
        let _ = count_chat_prompt_memo(&mut memo, Encoding::O200kBase, &third, None);
        assert_eq!(memo.len(), 1, "a full memo starts afresh");
        // The same text under another encoding is another entry.
        let _ = count_chat_prompt_memo(&mut memo, Encoding::Cl100kBase, &third, None);
        assert_eq!((memo.len(), memo.hits()), (2, 2));
        let tools =
            json!([{"type": "function", "function": {"name": "f", "description": long(3)}}]);
        assert_eq!(
            prompt_charge_memo(&mut memo, "o200k_base", &third, Some(&tools)),
            prompt_charge("o200k_base", &third, Some(&tools))
        );
    }

    #[test]
    fn names_round_trip_and_match_the_config_list() {
        for encoding in Encoding::ALL {
            assert_eq!(Encoding::from_name(encoding.name()), Some(encoding));
        }
        let names: Vec<&str> = Encoding::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(names, crate::config::TOKENIZERS);
        assert_eq!(
            Encoding::from_name(" cl100k_base "),
            Some(Encoding::Cl100kBase)
        );
        assert_eq!(Encoding::from_name("gpt2"), None);
    }

    #[test]
    fn plain_text_counts_in_each_encoding() {
        assert_eq!(Encoding::O200kBase.count("hello world"), Some(2));
        assert_eq!(Encoding::Cl100kBase.count("hello world"), Some(2));
        assert_eq!(Encoding::R50kBase.count("hello world"), Some(2));
        assert_eq!(Encoding::O200kBase.count(""), Some(0));
        // The special token's text is ordinary text here (a user may type it).
        assert!(Encoding::O200kBase.count("<|endoftext|>").unwrap_or(0) > 1);
    }

    #[test]
    fn chat_prompt_adds_message_name_and_reply_overheads() {
        let one = [json!({"role": "user", "content": "hello world"})];
        assert_eq!(count_chat_prompt(Encoding::O200kBase, &one, None), Some(9));
        let named = [json!({"role": "user", "name": "ann", "content": "hello world"})];
        let ann = Encoding::O200kBase.count("ann").unwrap_or(0);
        assert_eq!(
            count_chat_prompt(Encoding::O200kBase, &named, None),
            Some(9 + ann + TOKENS_PER_NAME)
        );
        assert_eq!(
            count_chat_prompt(Encoding::O200kBase, &[], None),
            Some(TOKENS_PER_REPLY)
        );
    }

    #[test]
    fn content_parts_images_and_tool_calls() {
        let messages = [
            json!({"role": "user", "content": [
                {"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://x/z.png"}}
            ]}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "lookup", "arguments": "{}"}}
            ]}),
        ];
        let o = |t: &str| Encoding::O200kBase.count(t).unwrap_or(0);
        let expected = (TOKENS_PER_MESSAGE + o("user") + 2 + 85 + 765)
            + (TOKENS_PER_MESSAGE + o("assistant") + o("lookup") + o("{}") + TOKENS_PER_TOOL_CALL)
            + TOKENS_PER_REPLY;
        assert_eq!(
            count_chat_prompt(Encoding::O200kBase, &messages, None),
            Some(expected)
        );
        assert_eq!(o("user"), 1);
        assert_eq!(o("assistant"), 1);
    }

    #[test]
    fn tool_definitions_are_counted_as_json() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        let messages = [json!({"role": "user", "content": "hello world"})];
        let json_tokens = Encoding::O200kBase.count(&tools.to_string()).unwrap_or(0);
        assert!(json_tokens > 5);
        assert_eq!(
            count_chat_prompt(Encoding::O200kBase, &messages, Some(&tools)),
            Some(9 + json_tokens)
        );
        let mut options = Map::new();
        assert_eq!(tool_definitions(&options), None);
        options.insert("functions".into(), json!([]));
        assert_eq!(tool_definitions(&options), Some(&json!([])));
        options.insert("tools".into(), tools.clone());
        assert_eq!(tool_definitions(&options), Some(&tools));
    }

    #[test]
    fn encodings_differ_where_their_vocabularies_do() {
        let text = "    for (int i = 0; i < n; ++i) { total += values[i]; }";
        let o200k = Encoding::O200kBase.count(text).unwrap_or(0);
        let r50k = Encoding::R50kBase.count(text).unwrap_or(0);
        assert!(o200k > 0 && r50k > o200k, "o200k {o200k}, r50k {r50k}");
    }
}
