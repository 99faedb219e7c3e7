//! Lines read with a bound: no line, however long, is ever held whole in memory.
//!
//! [`read_bounded`] reads one line into a buffer of at most `max + 1` bytes; a line longer than
//! `max` (its newline not counted) comes back as [`LineRead::TooLong`] with the part read, and
//! the caller skips the rest ([`skip_rest`]) or copies it through in chunks ([`copy_rest`]).
//! An input of a billion bytes without a newline thus costs `max` bytes of memory, once.

use std::io::{self, BufRead, Read, Write};

/// The default bound on a line, in bytes (without the newline): 10 MiB.
///
/// Azure's Batch API takes input files of up to 200 MB and 100,000 requests; a request's body
/// is bounded by the model's context window (at most a million tokens, a few MB of text). 10 MiB
/// holds any such request with room to spare, and holding it costs the run nothing noticeable.
pub(crate) const DEFAULT_MAX_LINE_BYTES: u64 = 10 * 1024 * 1024;

/// How many bytes [`copy_rest`] moves at a time.
const CHUNK: u64 = 1 << 16;

/// What [`read_bounded`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineRead {
    /// The input is at its end.
    End,
    /// A whole line of this many bytes (its newline included) is in the buffer.
    Line(usize),
    /// The input ended with this many bytes and no newline: they are in the buffer.
    Unterminated(usize),
    /// The line is longer than the bound: its first `max + 1` bytes are in the buffer, the rest
    /// (up to and including its newline) is still to be read.
    TooLong,
}

/// Reads the next line of `input` into `buffer` (cleared first), holding at most `max + 1`
/// bytes. Interrupted reads are retried.
pub(crate) fn read_bounded(
    input: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    max: u64,
) -> io::Result<LineRead> {
    buffer.clear();
    let read = input
        .by_ref()
        .take(max.saturating_add(1))
        .read_until(b'\n', buffer)?;
    Ok(if read == 0 {
        LineRead::End
    } else if buffer.last() == Some(&b'\n') {
        LineRead::Line(read)
    } else if read as u64 > max {
        LineRead::TooLong
    } else {
        LineRead::Unterminated(read)
    })
}

/// Skips the rest of a line that [`read_bounded`] found too long, up to and including its
/// newline; returns the bytes skipped and whether a newline ended them (else the input ended).
pub(crate) fn skip_rest(input: &mut impl BufRead) -> io::Result<(u64, bool)> {
    let mut skipped = 0u64;
    loop {
        let (used, done) = {
            let available = match input.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if available.is_empty() {
                return Ok((skipped, false));
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            }
        };
        input.consume(used);
        skipped += used as u64;
        if done {
            return Ok((skipped, true));
        }
    }
}

/// Copies the rest of a line that [`read_bounded`] found too long into `sink`, in chunks, up to
/// and including its newline; `buffer` is scratch space. Returns the bytes copied and whether a
/// newline ended them.
pub(crate) fn copy_rest(
    input: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(u64, bool)> {
    let mut copied = 0u64;
    loop {
        buffer.clear();
        let read = input.by_ref().take(CHUNK).read_until(b'\n', buffer)?;
        if read == 0 {
            return Ok((copied, false));
        }
        sink(buffer)?;
        copied += read as u64;
        if buffer.last() == Some(&b'\n') {
            return Ok((copied, true));
        }
    }
}

/// A sink for [`copy_rest`] that writes to `writer`.
pub(crate) fn into_writer(writer: &mut impl Write) -> impl FnMut(&[u8]) -> io::Result<()> + '_ {
    move |bytes| writer.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> io::BufReader<&[u8]> {
        // A small buffer, so that lines cross the reader's buffer boundary.
        io::BufReader::with_capacity(4, bytes)
    }

    #[test]
    fn lines_within_the_bound_come_whole() {
        let mut input = reader(b"abc\n\nxyz");
        let mut buffer = Vec::new();
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 3).unwrap(),
            LineRead::Line(4)
        );
        assert_eq!(buffer, b"abc\n");
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 3).unwrap(),
            LineRead::Line(1)
        );
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 3).unwrap(),
            LineRead::Unterminated(3)
        );
        assert_eq!(buffer, b"xyz");
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 3).unwrap(),
            LineRead::End
        );
    }

    #[test]
    fn a_long_line_is_held_only_up_to_the_bound_then_skipped() {
        let mut input = reader(b"abcdefgh\nok\n");
        let mut buffer = Vec::new();
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 3).unwrap(),
            LineRead::TooLong
        );
        assert_eq!(buffer, b"abcd");
        assert_eq!(skip_rest(&mut input).unwrap(), (5, true));
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 3).unwrap(),
            LineRead::Line(3)
        );
        assert_eq!(buffer, b"ok\n");
    }

    #[test]
    fn a_long_line_without_a_newline_is_skipped_to_the_end() {
        let mut input = reader(b"abcdefgh");
        let mut buffer = Vec::new();
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 3).unwrap(),
            LineRead::TooLong
        );
        assert_eq!(skip_rest(&mut input).unwrap(), (4, false));
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 3).unwrap(),
            LineRead::End
        );
    }

    #[test]
    fn the_bound_counts_bytes_without_the_newline() {
        let mut buffer = Vec::new();
        assert_eq!(
            read_bounded(&mut reader(b"abc\n"), &mut buffer, 3).unwrap(),
            LineRead::Line(4)
        );
        assert_eq!(
            read_bounded(&mut reader(b"abcd\n"), &mut buffer, 3).unwrap(),
            LineRead::TooLong
        );
    }

    #[test]
    fn copy_rest_moves_the_line_through_in_chunks() {
        let long = vec![b'x'; 200_000];
        let mut bytes = long.clone();
        bytes.extend_from_slice(b"\nnext\n");
        let mut input = io::BufReader::new(&bytes[..]);
        let mut buffer = Vec::new();
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 10).unwrap(),
            LineRead::TooLong
        );
        let mut out = buffer.clone();
        let mut scratch = Vec::new();
        let (copied, ended) = copy_rest(&mut input, &mut scratch, into_writer(&mut out)).unwrap();
        assert!(ended);
        assert_eq!(copied, 200_000 - 11 + 1);
        assert!(scratch.capacity() < 200_000, "copied in chunks");
        assert_eq!(&out[..200_000], &long[..]);
        assert_eq!(out.len(), 200_001);
        assert_eq!(
            read_bounded(&mut input, &mut buffer, 10).unwrap(),
            LineRead::Line(5)
        );
    }
}
