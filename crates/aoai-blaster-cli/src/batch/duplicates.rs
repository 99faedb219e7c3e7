//! Duplicate `custom_id`s found before the run, in flat memory.
//!
//! A line is a duplicate when an earlier *valid* line already claimed its `custom_id`. Found
//! while streaming, that needs every id seen so far in memory: 13 to 26 bytes per line, so a
//! ten-million-line file would hold a quarter of a gigabyte. Instead, before the run, the reader
//! notes each line that has an id as a [`LineId`] (the id's fingerprint, the line number, whether
//! the line is valid) and [`LineIdSorter`] sorts them by id, then line, on disk: runs of
//! [`RUN_RECORDS`] sorted in memory, written to a temporary file, merged. Walking the merged
//! order, each id's lines come together in file order, and every line after the id's first valid
//! one is marked. What stays in memory is [`DuplicateLines`], one bit per input line (1.2 MiB for
//! ten million lines), and one run's buffer while sorting.
//!
//! A general external-sort crate would do the sorting, but the ones on crates.io pull in rayon
//! and build-time documentation tooling; the sort here is one file of runs and a k-way merge.
//!
//! ```
//! use aoai_blaster_cli::batch::duplicates::{LineId, LineIdSorter};
//! use aoai_blaster_cli::batch::ids::IdFingerprint;
//!
//! let dir = tempfile::tempdir()?;
//! let mut sorter = LineIdSorter::new(dir.path(), 2);
//! let a = IdFingerprint::of("a");
//! let b = IdFingerprint::of("b");
//! sorter.push(LineId { id: a, line: 1, valid: false })?; // invalid: claims nothing
//! sorter.push(LineId { id: a, line: 2, valid: true })?; // claims "a"
//! sorter.push(LineId { id: b, line: 3, valid: true })?;
//! sorter.push(LineId { id: a, line: 4, valid: true })?; // duplicate of line 2
//! sorter.push(LineId { id: a, line: 5, valid: false })?; // duplicate too
//! let duplicates = sorter.finish()?;
//! assert_eq!(duplicates.len(), 2);
//! assert!(duplicates.contains(4) && duplicates.contains(5));
//! assert!(!duplicates.contains(1) && !duplicates.contains(2) && !duplicates.contains(3));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::ids::IdFingerprint;

/// Records sorted in memory before a run is written out (24 bytes each: 6 MiB).
pub const RUN_RECORDS: usize = 1 << 18;

/// Bytes of one record on disk: the 96-bit fingerprint, then `line << 1 | valid`.
const RECORD_BYTES: usize = 20;

/// Records read at once from each run while merging (16 KB).
const MERGE_BUFFER_RECORDS: usize = 800;

/// One input line that has a `custom_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineId {
    /// The id's fingerprint.
    pub id: IdFingerprint,
    /// The line number (1-based).
    pub line: u64,
    /// Whether the line is valid apart from a possible duplicate id (a valid line claims its
    /// id; an invalid one does not).
    pub valid: bool,
}

impl LineId {
    fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut bytes = [0u8; RECORD_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(self.id.words()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let tail = (self.line << 1) | u64::from(self.valid);
        bytes[12..].copy_from_slice(&tail.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8; RECORD_BYTES]) -> LineId {
        let word = |i: usize| {
            let mut four = [0u8; 4];
            four.copy_from_slice(&bytes[i * 4..i * 4 + 4]);
            u32::from_le_bytes(four)
        };
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&bytes[12..]);
        let tail = u64::from_le_bytes(eight);
        LineId {
            id: IdFingerprint::from_words([word(0), word(1), word(2)]),
            line: tail >> 1,
            valid: tail & 1 == 1,
        }
    }
}

/// The input lines that repeat an id an earlier valid line claimed: one bit per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DuplicateLines {
    bits: Vec<u64>,
    count: u64,
}

impl DuplicateLines {
    /// Whether line `line` (1-based) is a duplicate.
    pub fn contains(&self, line: u64) -> bool {
        let Ok(word) = usize::try_from(line / 64) else {
            return false;
        };
        self.bits
            .get(word)
            .is_some_and(|bits| bits & (1 << (line % 64)) != 0)
    }

    /// Number of duplicate lines.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when no line is a duplicate.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn mark(&mut self, line: u64) {
        let Ok(word) = usize::try_from(line / 64) else {
            return;
        };
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let bit = 1 << (line % 64);
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.count += 1;
        }
    }

    /// Marks the duplicates among `records`, which come sorted by id, then line.
    pub fn from_sorted(records: impl IntoIterator<Item = LineId>) -> DuplicateLines {
        let mut duplicates = DuplicateLines::default();
        let mut current: Option<IdFingerprint> = None;
        let mut claimed = false;
        for record in records {
            if current != Some(record.id) {
                current = Some(record.id);
                claimed = false;
            }
            if claimed {
                duplicates.mark(record.line);
            } else if record.valid {
                claimed = true;
            }
        }
        duplicates
    }
}

/// Sorts [`LineId`]s in bounded memory and finds the [`DuplicateLines`] among them.
#[derive(Debug)]
pub struct LineIdSorter {
    dir: PathBuf,
    run_records: usize,
    buffer: Vec<LineId>,
    spill: Option<Spill>,
}

/// Sorted runs written out so far: one temporary file, the record count of each run.
#[derive(Debug)]
struct Spill {
    file: BufWriter<File>,
    runs: Vec<u64>,
}

impl LineIdSorter {
    /// A sorter that keeps up to `run_records` records in memory and writes longer inputs to a
    /// temporary file in `dir` (removed when the sorter is done).
    pub fn new(dir: &Path, run_records: usize) -> LineIdSorter {
        LineIdSorter {
            dir: dir.to_path_buf(),
            run_records: run_records.max(1),
            buffer: Vec::new(),
            spill: None,
        }
    }

    /// Adds one record.
    pub fn push(&mut self, record: LineId) -> io::Result<()> {
        if self.buffer.len() >= self.run_records {
            self.write_run()?;
        }
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(self.run_records);
        }
        self.buffer.push(record);
        Ok(())
    }

    fn write_run(&mut self) -> io::Result<()> {
        self.buffer.sort_unstable();
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => self.spill.insert(Spill {
                file: BufWriter::with_capacity(1 << 16, tempfile::tempfile_in(&self.dir)?),
                runs: Vec::new(),
            }),
        };
        for record in &self.buffer {
            spill.file.write_all(&record.encode())?;
        }
        spill.runs.push(self.buffer.len() as u64);
        self.buffer.clear();
        Ok(())
    }

    /// Sorts everything pushed and marks the duplicates.
    pub fn finish(mut self) -> io::Result<DuplicateLines> {
        if self.spill.is_none() {
            self.buffer.sort_unstable();
            return Ok(DuplicateLines::from_sorted(self.buffer));
        }
        if !self.buffer.is_empty() {
            self.write_run()?;
        }
        self.buffer = Vec::new();
        let Some(spill) = self.spill.take() else {
            return Ok(DuplicateLines::default());
        };
        let file = spill
            .file
            .into_inner()
            .map_err(|error| error.into_error())?;
        let mut runs = Vec::with_capacity(spill.runs.len());
        let mut offset = 0u64;
        for &records in &spill.runs {
            let end = offset + records * RECORD_BYTES as u64;
            runs.push(RunCursor {
                offset,
                end,
                buffer: Vec::new(),
                position: 0,
            });
            offset = end;
        }
        let mut merged = Merge::new(file, runs)?;
        let duplicates = DuplicateLines::from_sorted(merged.by_ref());
        match merged.error {
            Some(error) => Err(error),
            None => Ok(duplicates),
        }
    }
}

/// Where one sorted run is being read back (runs share one file, read at their own offsets).
struct RunCursor {
    offset: u64,
    end: u64,
    buffer: Vec<u8>,
    position: usize,
}

impl RunCursor {
    fn next(&mut self, file: &File) -> io::Result<Option<LineId>> {
        if self.position + RECORD_BYTES > self.buffer.len() {
            let left = usize::try_from(self.end - self.offset).unwrap_or(usize::MAX);
            let want = left.min(MERGE_BUFFER_RECORDS * RECORD_BYTES);
            if want < RECORD_BYTES {
                return Ok(None);
            }
            self.buffer.resize(want, 0);
            file.read_exact_at(&mut self.buffer, self.offset)?;
            self.offset += want as u64;
            self.position = 0;
        }
        let mut bytes = [0u8; RECORD_BYTES];
        bytes.copy_from_slice(&self.buffer[self.position..self.position + RECORD_BYTES]);
        self.position += RECORD_BYTES;
        Ok(Some(LineId::decode(&bytes)))
    }
}

/// The k-way merge of sorted runs; the first read error ends it and is kept.
struct Merge {
    file: File,
    runs: Vec<RunCursor>,
    heap: BinaryHeap<Reverse<(LineId, usize)>>,
    error: Option<io::Error>,
}

impl Merge {
    fn new(file: File, mut runs: Vec<RunCursor>) -> io::Result<Merge> {
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (index, run) in runs.iter_mut().enumerate() {
            if let Some(record) = run.next(&file)? {
                heap.push(Reverse((record, index)));
            }
        }
        Ok(Merge {
            file,
            runs,
            heap,
            error: None,
        })
    }
}

impl Iterator for Merge {
    type Item = LineId;

    fn next(&mut self) -> Option<LineId> {
        let Reverse((record, index)) = self.heap.pop()?;
        match self.runs[index].next(&self.file) {
            Ok(Some(next)) => self.heap.push(Reverse((next, index))),
            Ok(None) => {}
            Err(error) => {
                self.error = Some(error);
                self.heap.clear();
            }
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, line: u64, valid: bool) -> LineId {
        LineId {
            id: IdFingerprint::of(id),
            line,
            valid,
        }
    }

    /// What the streaming check finds: a line is a duplicate when an earlier valid line has
    /// its id.
    fn streaming(records: &[LineId]) -> Vec<u64> {
        let mut claimed = std::collections::HashSet::new();
        let mut duplicates = Vec::new();
        for r in records {
            if claimed.contains(&r.id) {
                duplicates.push(r.line);
            } else if r.valid {
                claimed.insert(r.id);
            }
        }
        duplicates
    }

    fn found(duplicates: &DuplicateLines, lines: u64) -> Vec<u64> {
        (0..=lines).filter(|&l| duplicates.contains(l)).collect()
    }

    #[test]
    fn records_round_trip_through_their_bytes() {
        let r = record("request-1", (1 << 40) + 3, true);
        assert_eq!(LineId::decode(&r.encode()), r);
        let r = record("x", 1, false);
        assert_eq!(LineId::decode(&r.encode()), r);
    }

    #[test]
    fn spilled_runs_find_what_the_streaming_check_finds() {
        // 5,000 lines over 200 ids (some lines invalid), sorted in runs of 64: 79 runs merged.
        let records: Vec<LineId> = (1..=5_000u64)
            .map(|line| {
                let id = format!("id-{}", (line * 7919) % 200);
                record(&id, line, line % 13 != 0)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut sorter = LineIdSorter::new(dir.path(), 64);
        for r in &records {
            sorter.push(*r).unwrap();
        }
        let duplicates = sorter.finish().unwrap();
        let expected = streaming(&records);
        assert_eq!(found(&duplicates, 5_000), expected);
        assert_eq!(duplicates.len(), expected.len() as u64);
        // The same records sorted in memory only.
        let mut in_memory = LineIdSorter::new(dir.path(), 10_000);
        for r in &records {
            in_memory.push(*r).unwrap();
        }
        assert_eq!(in_memory.finish().unwrap(), duplicates);
        // The temporary file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_invalid_first_line_claims_nothing() {
        let records = [
            record("a", 1, false),
            record("a", 2, false),
            record("a", 3, true),
            record("a", 4, false),
        ];
        let duplicates = DuplicateLines::from_sorted(records);
        assert_eq!(found(&duplicates, 4), vec![4]);
        assert!(!DuplicateLines::default().contains(u64::MAX));
        assert!(DuplicateLines::default().is_empty());
    }
}
