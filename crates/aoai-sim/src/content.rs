//! Deterministic reply text: the request's digest first, then one word per token.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex characters of the digest kept in replies.
pub(crate) const DIGEST_HEX_CHARS: usize = 16;

/// The digest of a request's `messages` that every reply's content starts with
/// (`digest=<hex> ...`), so a client can prove each result belongs to its own request.
///
/// It is the first 16 hex characters of the SHA-256 of the canonical JSON of `messages`:
/// compact, object keys sorted, strings escaped as serde_json does. Two `messages` values that
/// compare equal have the same digest, whatever the key order on the wire.
///
/// ```
/// let a = serde_json::json!([{"role": "user", "content": "hi"}]);
/// let b: serde_json::Value = serde_json::from_str(r#"[{"content":"hi","role":"user"}]"#).unwrap();
/// assert_eq!(aoai_sim::messages_digest(&a), aoai_sim::messages_digest(&b));
/// assert_eq!(aoai_sim::messages_digest(&a).len(), 16);
/// ```
pub fn messages_digest(messages: &Value) -> String {
    let mut canonical = Vec::with_capacity(256);
    write_canonical(messages, &mut canonical);
    let hash = Sha256::digest(&canonical);
    let mut hex = String::with_capacity(DIGEST_HEX_CHARS);
    for byte in hash.iter().take(DIGEST_HEX_CHARS / 2) {
        hex.push(HEX[usize::from(byte >> 4)]);
        hex.push(HEX[usize::from(byte & 0x0f)]);
    }
    hex
}

const HEX: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f',
];

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => out.extend_from_slice(number.to_string().as_bytes()),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail; serde_json does the escaping.
    let _ = serde_json::to_writer(&mut *out, text);
}

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// One choice's content, one piece per token: `digest=<hex>`, then ` word`s. The same request
/// always gets the same content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyText {
    /// The whole content.
    pub(crate) content: String,
    /// Byte offset where each piece starts.
    starts: Vec<usize>,
}

impl ReplyText {
    /// Build the text of choice `choice_index` with `tokens` pieces (at least one).
    pub(crate) fn new(digest: &str, choice_index: u64, tokens: u64) -> Self {
        let tokens = usize::try_from(tokens.max(1)).unwrap_or(usize::MAX);
        let offset = digest
            .bytes()
            .next()
            .map_or(0, usize::from)
            .wrapping_add(usize::try_from(choice_index).unwrap_or(0).wrapping_mul(5));
        let mut content = String::with_capacity(8 + digest.len() + tokens.saturating_mul(8));
        let mut starts = Vec::with_capacity(tokens);
        starts.push(0);
        content.push_str("digest=");
        content.push_str(digest);
        for i in 1..tokens {
            starts.push(content.len());
            content.push(' ');
            content.push_str(WORDS[offset.wrapping_add(i.wrapping_mul(7)) % WORDS.len()]);
        }
        ReplyText { content, starts }
    }

    /// The number of pieces (tokens).
    pub(crate) fn tokens(&self) -> usize {
        self.starts.len()
    }

    /// Piece `index`, if there is one.
    pub(crate) fn piece(&self, index: usize) -> Option<&str> {
        let start = *self.starts.get(index)?;
        let end = self
            .starts
            .get(index + 1)
            .copied()
            .unwrap_or(self.content.len());
        self.content.get(start..end)
    }

    /// Every piece in order.
    #[cfg(test)]
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &str> {
        (0..self.tokens()).filter_map(|index| self.piece(index))
    }
}

/// `len` bytes (at most 64 KiB) of padding text, ` pad` repeated: plain ASCII, so it needs no
/// escaping inside a JSON string. Built once.
pub(crate) fn padding(len: usize) -> &'static str {
    static PAD: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| " pad".repeat(PADDING_MAX / 4));
    &PAD[..len.min(PADDING_MAX)]
}

/// The longest piece [`padding`] hands out.
pub(crate) const PADDING_MAX: usize = 64 * 1024;

/// The completion length and finish reason for a deployment's natural `reply_tokens` under a
/// request's `max_tokens`.
pub(crate) fn completion_length(reply_tokens: u64, max_tokens: Option<u64>) -> (u64, &'static str) {
    match max_tokens {
        Some(max) if max < reply_tokens => (max.max(1), "length"),
        _ => (reply_tokens.max(1), "stop"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_is_canonical_and_sensitive() {
        let a = json!([{"role": "user", "content": "hello \"world\"\n", "n": 1.5}]);
        let reordered: Value =
            serde_json::from_str(r#"[{"n":1.5,"content":"hello \"world\"\n","role":"user"}]"#)
                .unwrap_or(Value::Null);
        assert_eq!(messages_digest(&a), messages_digest(&reordered));
        let b = json!([{"role": "user", "content": "hello \"world\"\n!", "n": 1.5}]);
        assert_ne!(messages_digest(&a), messages_digest(&b));
        let digest = messages_digest(&a);
        assert_eq!(digest.len(), DIGEST_HEX_CHARS);
        assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn digest_matches_sha256_of_compact_sorted_json() {
        // sha256("[]") = 4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945
        assert_eq!(messages_digest(&json!([])), "4f53cda18c2baa0c");
        let mut canonical = Vec::new();
        write_canonical(&json!({"b": [1, null, true], "a": "x"}), &mut canonical);
        assert_eq!(canonical, br#"{"a":"x","b":[1,null,true]}"#);
    }

    #[test]
    fn pieces_start_with_the_digest_and_count_tokens() {
        let text = ReplyText::new("0123456789abcdef", 0, 5);
        let pieces: Vec<&str> = text.pieces().collect();
        assert_eq!(pieces.len(), 5);
        assert_eq!(pieces[0], "digest=0123456789abcdef");
        assert!(
            pieces[1..]
                .iter()
                .all(|p| p.starts_with(' ') && p.len() > 1)
        );
        assert_eq!(pieces.concat(), text.content);
        assert_eq!(text.content.split(' ').count(), 5);
        assert_eq!(text.piece(5), None);
        assert_eq!(text, ReplyText::new("0123456789abcdef", 0, 5));
        assert_ne!(text, ReplyText::new("0123456789abcdef", 1, 5));
        assert_eq!(ReplyText::new("0123456789abcdef", 0, 0).tokens(), 1);
    }

    #[test]
    fn max_tokens_cuts_the_reply() {
        assert_eq!(completion_length(40, None), (40, "stop"));
        assert_eq!(completion_length(40, Some(40)), (40, "stop"));
        assert_eq!(completion_length(40, Some(10)), (10, "length"));
    }
}
