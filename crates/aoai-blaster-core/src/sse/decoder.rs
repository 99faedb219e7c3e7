//! Bytes to events: the WHATWG event-stream rules (`\n`, `\r\n` or `\r` line ends,
//! multi-line `data:` joined by `\n`, `:` comments, `event:`/`id:`/`retry:` fields), for bytes
//! cut anywhere, with a bound on line and event size.

use std::time::Duration;

use super::SseError;

/// Default bound on one line and on one event's data: 8 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the event had one (chat streams do not use it).
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The last `id:` seen in the stream so far (it carries over, as the spec says).
    pub id: Option<String>,
}

/// Incremental event-stream decoder: feed it bytes as they arrive, cut anywhere.
///
/// ```
/// use aoai_blaster_core::sse::SseDecoder;
///
/// let mut decoder = SseDecoder::new();
/// assert!(decoder.push(b": keep-alive\r\ndata: one\r\nda").unwrap().is_empty());
/// let events = decoder.push(b"ta: two\r\n\r\n").unwrap();
/// assert_eq!(events[0].data, "one\ntwo");
/// assert_eq!(decoder.finish(), None); // ended on an event boundary
/// ```
#[derive(Debug, Clone)]
pub struct SseDecoder {
    /// Bytes of the line not yet terminated.
    line: Vec<u8>,
    /// The previous byte was `\r`: a `\n` right after it belongs to the same line end.
    after_cr: bool,
    /// No line has been completed yet (a byte-order mark may open the stream).
    first_line: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    retry: Option<Duration>,
    max_bytes: usize,
    failed: Option<SseError>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new()
    }
}

impl SseDecoder {
    /// A decoder bounding lines and events to [`DEFAULT_MAX_LINE_BYTES`].
    pub fn new() -> SseDecoder {
        SseDecoder::with_max_line_bytes(DEFAULT_MAX_LINE_BYTES)
    }

    /// A decoder bounding each line, and each event's data, to `max_bytes`.
    pub fn with_max_line_bytes(max_bytes: usize) -> SseDecoder {
        SseDecoder {
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            data: String::new(),
            has_data: false,
            event: None,
            last_id: None,
            retry: None,
            max_bytes,
            failed: None,
        }
    }

    /// The last `retry:` the server sent, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Feeds bytes; returns the events they complete, in order.
    ///
    /// After an error the stream is unusable: every later call returns the same error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let mut events = Vec::new();
        let result = self.push_into(bytes, &mut events);
        match result {
            Ok(()) => Ok(events),
            Err(error) => {
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    fn push_into(&mut self, mut rest: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if rest.is_empty() {
            return Ok(());
        }
        if self.after_cr {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            if self.line.len() + end > self.max_bytes {
                return Err(SseError::LineTooLong {
                    limit: self.max_bytes,
                });
            }
            if self.line.is_empty() {
                self.take_line(&rest[..end], events)?;
            } else {
                self.line.extend_from_slice(&rest[..end]);
                let line = std::mem::take(&mut self.line);
                self.take_line(&line, events)?;
                // Keep the allocation for the next partial line.
                self.line = line;
                self.line.clear();
            }
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    None => self.after_cr = true,
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                }
            }
        }
        if self.line.len() + rest.len() > self.max_bytes {
            return Err(SseError::LineTooLong {
                limit: self.max_bytes,
            });
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    fn take_line(&mut self, mut line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.first_line {
            self.first_line = false;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if let Some(event) = self.dispatch() {
                events.push(event);
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                let added = value.len() + usize::from(self.has_data);
                if self.data.len() + added > self.max_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_bytes,
                    });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            b"id" if !value.contains('\0') => {
                self.last_id = (!value.is_empty()).then(|| value.into_owned());
            }
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok().map(Duration::from_millis);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
        })
    }

    /// Ends the stream. Returns the event it was in the middle of, if any (data lines not yet
    /// closed by a blank line, including an unterminated last line), so the caller can decide:
    /// the spec drops it, but a server that omits the final blank line is common, and a cut
    /// connection is worth reporting. `None` when the stream ended on an event boundary.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.failed.is_some() {
            return None;
        }
        let line = std::mem::take(&mut self.line);
        let mut ignored = Vec::new();
        if !line.is_empty() && self.take_line(&line, &mut ignored).is_err() {
            return None;
        }
        self.after_cr = false;
        self.dispatch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(decoder: &mut SseDecoder, parts: &[&[u8]]) -> Vec<SseEvent> {
        parts
            .iter()
            .flat_map(|part| decoder.push(part).unwrap())
            .collect()
    }

    fn data_of(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn line_endings_comments_and_fields() {
        let mut decoder = SseDecoder::new();
        let events = decode_all(
            &mut decoder,
            &[b"\xEF\xBB\xBF: comment\nevent: delta\rid: 7\r\ndata:no-space\ndata:  two spaces\n\n",
              b"data\n\nretry: 1500\nid\ndata: x\n\n"],
        );
        assert_eq!(
            events,
            [
                SseEvent {
                    event: Some("delta".into()),
                    data: "no-space\n two spaces".into(),
                    id: Some("7".into()),
                },
                SseEvent {
                    event: None,
                    data: String::new(),
                    id: Some("7".into()),
                },
                SseEvent {
                    event: None,
                    data: "x".into(),
                    id: None,
                },
            ]
        );
        assert_eq!(decoder.retry(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        let mut decoder = SseDecoder::new();
        assert!(decode_all(&mut decoder, &[b"\n\n: ping\n\nevent: x\n\n"]).is_empty());
        // The event type was reset by the blank line: the next event has none.
        let events = decode_all(&mut decoder, &[b"data: y\n\n"]);
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn cr_at_the_end_of_one_push_and_lf_at_the_start_of_the_next() {
        let mut decoder = SseDecoder::new();
        let events = decode_all(&mut decoder, &[b"data: a\r", b"\ndata: b\r", b"\r"]);
        assert_eq!(data_of(&events), ["a\nb"]);
        assert_eq!(decoder.finish(), None);
    }

    #[test]
    fn finish_reports_a_trailing_partial_event() {
        let mut decoder = SseDecoder::new();
        assert!(decode_all(&mut decoder, &[b"data: [DONE]"]).is_empty());
        assert_eq!(decoder.finish().unwrap().data, "[DONE]");

        let mut decoder = SseDecoder::new();
        decode_all(&mut decoder, &[b"data: {\"a\":\ndata: 1}\n"]);
        assert_eq!(decoder.finish().unwrap().data, "{\"a\":\n1}");
        assert_eq!(decoder.finish(), None);
    }

    #[test]
    fn long_lines_and_events_are_bounded() {
        let mut decoder = SseDecoder::with_max_line_bytes(16);
        assert!(decoder.push(b"data: 0123456789").unwrap().is_empty());
        let error = decoder.push(b"X").unwrap_err();
        assert_eq!(error, SseError::LineTooLong { limit: 16 });
        assert_eq!(decoder.push(b"\n\n").unwrap_err(), error, "stays failed");
        assert!(error.to_string().contains("with_max_line_bytes"));

        let mut decoder = SseDecoder::with_max_line_bytes(16);
        let error = decoder
            .push(b"data: 01234567\ndata: 01234567\n")
            .unwrap_err();
        assert_eq!(error, SseError::EventTooLarge { limit: 16 });

        // A line exactly at the bound is fine, in one piece or many.
        let mut decoder = SseDecoder::with_max_line_bytes(16);
        let events = decode_all(&mut decoder, &[b"data: 01234", b"56789\n\n"]);
        assert_eq!(data_of(&events), ["0123456789"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut decoder = SseDecoder::new();
        let events = decode_all(&mut decoder, &[b"data: a\xFFb\n\n"]);
        assert_eq!(data_of(&events), ["a\u{FFFD}b"]);
    }

    fn line_end() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]
    }

    fn event_text() -> impl Strategy<Value = (Vec<String>, String)> {
        // Data lines (no line breaks inside), rendered with random line endings and comments.
        // The blank line repeats the last line's ending ("\r" then "\n" would be one ending).
        (
            prop::collection::vec("[^\r\n]{0,12}", 1..4),
            prop::collection::vec(line_end(), 4),
            any::<bool>(),
        )
            .prop_map(|(lines, ends, comment)| {
                let mut text = String::new();
                if comment {
                    text.push_str(": keep-alive");
                    text.push_str(ends[3]);
                }
                for (i, line) in lines.iter().enumerate() {
                    text.push_str("data: ");
                    text.push_str(line);
                    text.push_str(ends[i]);
                }
                text.push_str(ends[lines.len() - 1]);
                (lines, text)
            })
    }

    proptest! {
        // A fixed seed: the same cases on every run, so a red CI always means a real change.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_2026),
            ..ProptestConfig::default()
        })]
        #[test]
        fn any_cut_gives_the_same_events(
            events in prop::collection::vec(event_text(), 1..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let text: String = events.iter().map(|(_, t)| t.as_str()).collect();
            let bytes = text.as_bytes();
            let expected: Vec<String> = events.iter().map(|(lines, _)| lines.join("\n")).collect();

            let mut whole = SseDecoder::new();
            let got_whole: Vec<String> = whole.push(bytes).unwrap().into_iter().map(|e| e.data).collect();
            prop_assert_eq!(&got_whole, &expected);

            let mut positions: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            positions.sort_unstable();
            let mut decoder = SseDecoder::new();
            let mut got = Vec::new();
            let mut start = 0;
            for position in positions.into_iter().chain([bytes.len()]) {
                got.extend(decoder.push(&bytes[start..position]).unwrap().into_iter().map(|e| e.data));
                start = position;
            }
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(decoder.finish(), None);

            let mut bytewise = SseDecoder::new();
            let mut got_bytewise = Vec::new();
            for byte in bytes {
                got_bytewise.extend(bytewise.push(std::slice::from_ref(byte)).unwrap().into_iter().map(|e| e.data));
            }
            prop_assert_eq!(&got_bytewise, &expected);
        }
    }
}
