//! What an output line of ours says, read from its head alone.
//!
//! The resume scan never holds a line longer than `--max-line-bytes`; an answer can be longer
//! than that (a large embeddings batch, a long completion with logprobs). Our writer puts
//! `custom_id` and `response.status_code` before the body, so the first bytes of such a line
//! say whose answer it is and whether it succeeded: this module parses the held head as far as
//! it goes and keeps what it saw before the bytes ran out.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::input::InputErrorCode;
use super::output::LineKind;

/// What the head of a line showed, field by field, before it ended.
#[derive(Debug, Default)]
struct Head {
    /// `custom_id`: `Some(None)` when it was `null`.
    custom_id: Option<Option<String>>,
    /// `response.status_code`.
    status_code: Option<u16>,
    /// `response` was `null`.
    no_response: bool,
    /// `error.code`, when `error` was an object with one.
    error_code: Option<String>,
    /// `error.line` (input-error lines).
    error_line: Option<u64>,
}

/// Why the parse stopped early: the head said enough.
const ENOUGH: &str = "enough";

/// Classifies a line of which only `head` (its first bytes) is held; see the module docs.
/// Lines whose head does not settle what they are count as [`LineKind::Unrecognised`] (kept
/// as they are; their id runs again).
pub(crate) fn classify_head(head: &[u8]) -> LineKind {
    let mut seen = Head::default();
    // The parse ends in an error (the head is cut off, or it stopped once it knew enough);
    // what was seen before that is all that counts.
    let _ = LineSeed(&mut seen).deserialize(&mut serde_json::Deserializer::from_slice(head));
    if let Some(code) = &seen.error_code
        && InputErrorCode::parse(code).is_some()
    {
        return seen
            .error_line
            .map_or(LineKind::Unrecognised, LineKind::InputError);
    }
    let Some(Some(custom_id)) = seen.custom_id else {
        return LineKind::Unrecognised;
    };
    match seen.status_code {
        Some(status) if (200..300).contains(&status) => LineKind::Succeeded(custom_id),
        Some(_) => LineKind::Failed(custom_id),
        None if seen.no_response && seen.error_code.is_some() => LineKind::Failed(custom_id),
        None => LineKind::Unrecognised,
    }
}

/// The line object.
struct LineSeed<'a>(&'a mut Head);

impl<'de> DeserializeSeed<'de> for LineSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an output line")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "custom_id" => self.0.custom_id = Some(map.next_value()?),
                "response" => map.next_value_seed(ResponseSeed(self.0))?,
                "error" => map.next_value_seed(ErrorSeed(self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `response`: `null`, or an object whose `status_code` ends the parse (the body follows).
struct ResponseSeed<'a>(&'a mut Head);

impl<'de> DeserializeSeed<'de> for ResponseSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ResponseSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a response object or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.no_response = true;
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "status_code" {
                self.0.status_code = Some(map.next_value()?);
                return Err(de::Error::custom(ENOUGH));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// `error`: `null`, or an object with `code` (and `line` for input errors).
struct ErrorSeed<'a>(&'a mut Head);

impl<'de> DeserializeSeed<'de> for ErrorSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ErrorSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an error object or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "code" => self.0.error_code = Some(map.next_value()?),
                "line" => self.0.error_line = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::output::{OutputLine, classify_line, raw_json};
    use serde_json::json;

    fn line_of(output: &OutputLine) -> Vec<u8> {
        serde_json::to_vec(output).unwrap()
    }

    fn long_answer(custom_id: &str, status: u16) -> Vec<u8> {
        line_of(&OutputLine::answer(
            format!("batch_req_{custom_id}"),
            custom_id.to_owned(),
            status,
            Some("req-1".into()),
            raw_json(&json!({"data": [{"embedding": vec![0.125; 5000]}]})),
            Vec::new(),
        ))
    }

    #[test]
    fn the_head_of_a_long_answer_names_its_id_and_outcome() {
        let ok = long_answer("doc-1", 200);
        let failed = long_answer("doc-2", 400);
        assert!(ok.len() > 20_000);
        for cut in [120, 200, 1000, ok.len()] {
            assert_eq!(
                classify_head(&ok[..cut.min(ok.len())]),
                LineKind::Succeeded("doc-1".into()),
                "{cut}"
            );
        }
        assert_eq!(
            classify_head(&failed[..300]),
            LineKind::Failed("doc-2".into())
        );
        // Cut before the status: not settled.
        let at = ok
            .windows(b"status_code".len())
            .position(|w| w == b"status_code")
            .unwrap();
        assert_eq!(classify_head(&ok[..at]), LineKind::Unrecognised);
    }

    #[test]
    fn whole_lines_read_the_same_as_the_full_parse() {
        let lines = [
            long_answer("a", 200),
            long_answer("b", 503),
            line_of(&OutputLine::failure(
                "batch_req_c".into(),
                "c".into(),
                "timeout",
                "no reply within 2s",
                Vec::new(),
            )),
            br#"{"id":"x","custom_id":null,"response":null,"error":{"code":"invalid_json","message":"line 4: ...","line":4}}"#.to_vec(),
            br#"{"custom_id":"d","response":null,"error":null}"#.to_vec(),
            br#"{"custom_id":"e"}"#.to_vec(),
            b"not json".to_vec(),
            br#"["custom_id"]"#.to_vec(),
        ];
        for line in &lines {
            assert_eq!(
                classify_head(line),
                classify_line(line),
                "{}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            );
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::batch::output::{OutputLine, classify_line, raw_json};
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #![proptest_config(aoai_testkit::fuzz_config())]

        /// Any bytes: a kind, never a panic.
        #[test]
        fn any_bytes_get_a_kind(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = classify_head(&bytes);
        }

        /// Any head of any answer line of ours: the full line's kind, or not settled; never
        /// another id or outcome.
        #[test]
        fn a_head_never_says_something_else(
            custom_id in "[a-z\\\\\"\\u{e9}]{0,12}",
            status in 100u16..600,
            filler in 0usize..300,
            cut in 0usize..2000,
        ) {
            let line = serde_json::to_vec(&OutputLine::answer(
                "batch_req_1".into(),
                custom_id,
                status,
                None,
                raw_json(&json!({"text": "x".repeat(filler)})),
                Vec::new(),
            ))
            .unwrap();
            let head = classify_head(&line[..cut.min(line.len())]);
            prop_assert!(head == LineKind::Unrecognised || head == classify_line(&line));
            prop_assert_eq!(classify_head(&line), classify_line(&line));
        }
    }
}
