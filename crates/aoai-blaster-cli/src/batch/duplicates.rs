//! Duplicate `custom_id`s and earlier answers, found before the run in flat memory.
//!
//! A line is a duplicate when an earlier *valid* line already claimed its `custom_id`, and a
//! valid line is skipped when the output already answers its id. Found while streaming, both
//! need every id seen so far in memory: 13 to 26 bytes per line, so a ten-million-line file
//! would hold a quarter of a gigabyte. Instead, before the run:
//!
//! - the resume scan writes each answer it finds in the output to an [`AnswerLog`] on disk;
//! - the reader notes each input line that has an id as an [`IdRecord`] (the id's fingerprint,
//!   the line number, whether the line is valid);
//! - [`IdSorter`] sorts answers and lines together by id, then line (answers first), on disk:
//!   runs of [`RUN_RECORDS`] sorted in memory, written to a temporary file, merged;
//! - walking the merged order, each id's answers and lines come together, and
//!   [`LineVerdicts::from_sorted`] gives every line its [`Verdict`].
//!
//! What stays in memory is two bits per input line (2.4 MiB for ten million lines) and one
//! run's buffer while sorting. The external-sort crates on crates.io pull in rayon and
//! build-time documentation tooling; the sort here is one file of runs and a k-way merge.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::ids::{IdFingerprint, IdIndex, IdTag};
use super::output::PreviousAnswer;

/// Records sorted in memory before a run is written out (24 bytes each: 6 MiB).
pub(crate) const RUN_RECORDS: usize = 1 << 18;

/// Bytes of one record on disk: the 96-bit fingerprint, then `line << 1 | flag`.
const RECORD_BYTES: usize = 20;

/// Records read at once from each run while merging (16 KB).
const MERGE_BUFFER_RECORDS: usize = 800;

/// An input line that has a `custom_id`, or an answer the output already holds for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct IdRecord {
    /// The id's fingerprint.
    pub(crate) id: IdFingerprint,
    /// The input line number (from 1); 0 for an answer in the output (so that an id's answers
    /// sort before its lines).
    pub(crate) line: u64,
    /// For a line: whether it is valid apart from a possible duplicate id (a valid line claims
    /// its id, an invalid one does not). For an answer: whether it is a success.
    pub(crate) flag: bool,
}

impl IdRecord {
    /// Input line `line` (from 1) with id `id`, valid or not.
    pub(crate) fn line(id: IdFingerprint, line: u64, valid: bool) -> IdRecord {
        IdRecord {
            id,
            line,
            flag: valid,
        }
    }

    /// An answer for `id` found in the output.
    pub(crate) fn answer(id: IdFingerprint, answer: PreviousAnswer) -> IdRecord {
        IdRecord {
            id,
            line: 0,
            flag: answer == PreviousAnswer::Succeeded,
        }
    }

    fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut bytes = [0u8; RECORD_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(self.id.words()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let tail = (self.line << 1) | u64::from(self.flag);
        bytes[12..].copy_from_slice(&tail.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8; RECORD_BYTES]) -> IdRecord {
        let word = |i: usize| {
            let mut four = [0u8; 4];
            four.copy_from_slice(&bytes[i * 4..i * 4 + 4]);
            u32::from_le_bytes(four)
        };
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&bytes[12..]);
        let tail = u64::from_le_bytes(eight);
        IdRecord {
            id: IdFingerprint::from_words([word(0), word(1), word(2)]),
            line: tail >> 1,
            flag: tail & 1 == 1,
        }
    }
}

/// What the check before the run found for one input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing: a valid line runs, an invalid one gets its own error.
    New,
    /// An earlier valid line has the same id.
    Duplicate,
    /// The line claims an id the output already answers: it is skipped.
    Answered(PreviousAnswer),
}

impl Verdict {
    fn bits(self) -> u64 {
        match self {
            Verdict::New => 0,
            Verdict::Duplicate => 1,
            Verdict::Answered(PreviousAnswer::Succeeded) => 2,
            Verdict::Answered(PreviousAnswer::Failed) => 3,
        }
    }

    fn from_bits(bits: u64) -> Verdict {
        match bits & 0b11 {
            1 => Verdict::Duplicate,
            2 => Verdict::Answered(PreviousAnswer::Succeeded),
            3 => Verdict::Answered(PreviousAnswer::Failed),
            _ => Verdict::New,
        }
    }
}

/// An id's answer so far, with one more answer (a success or not): a success wins.
fn with_answer(so_far: Option<PreviousAnswer>, succeeded: bool) -> PreviousAnswer {
    if succeeded || so_far == Some(PreviousAnswer::Succeeded) {
        PreviousAnswer::Succeeded
    } else {
        PreviousAnswer::Failed
    }
}

/// The [`Verdict`] of every input line: two bits per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LineVerdicts {
    words: Vec<u64>,
    lines: u64,
    duplicates: u64,
    answered: u64,
    duplicate_answers: u64,
}

impl LineVerdicts {
    /// The verdict on line `line` (from 1).
    pub(crate) fn get(&self, line: u64) -> Verdict {
        let Ok(word) = usize::try_from(line / 32) else {
            return Verdict::New;
        };
        let shift = (line % 32) * 2;
        self.words
            .get(word)
            .map_or(Verdict::New, |bits| Verdict::from_bits(bits >> shift))
    }

    /// Lines of the input the verdicts are about (lines after them were not checked).
    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    /// The same verdicts, about an input of `lines` lines.
    pub(crate) fn about_lines(mut self, lines: u64) -> LineVerdicts {
        self.lines = lines;
        self
    }

    /// Lines that are duplicates.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Lines whose id the output already answers.
    pub(crate) fn answered(&self) -> u64 {
        self.answered
    }

    /// Answers in the output for an id that already had one (the file was edited or
    /// concatenated).
    pub(crate) fn duplicate_answers(&self) -> u64 {
        self.duplicate_answers
    }

    fn set(&mut self, line: u64, verdict: Verdict) {
        let Ok(word) = usize::try_from(line / 32) else {
            return;
        };
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let shift = (line % 32) * 2;
        self.words[word] = (self.words[word] & !(0b11 << shift)) | (verdict.bits() << shift);
        match verdict {
            Verdict::Duplicate => self.duplicates += 1,
            Verdict::Answered(_) => self.answered += 1,
            Verdict::New => {}
        }
    }

    /// The verdicts from `records` sorted by id, then line (each input line once).
    pub(crate) fn from_sorted(records: impl IntoIterator<Item = IdRecord>) -> LineVerdicts {
        let mut verdicts = LineVerdicts::default();
        let mut current: Option<IdFingerprint> = None;
        let mut answer: Option<PreviousAnswer> = None;
        let mut answers = 0u64;
        let mut claimed = false;
        for record in records {
            if current != Some(record.id) {
                verdicts.duplicate_answers += answers.saturating_sub(1);
                current = Some(record.id);
                answer = None;
                answers = 0;
                claimed = false;
            }
            if record.line == 0 {
                answers += 1;
                answer = Some(with_answer(answer, record.flag));
            } else if claimed {
                verdicts.set(record.line, Verdict::Duplicate);
            } else if record.flag {
                claimed = true;
                if let Some(answer) = answer {
                    verdicts.set(record.line, Verdict::Answered(answer));
                }
            }
        }
        verdicts.duplicate_answers += answers.saturating_sub(1);
        verdicts
    }
}

/// Records written to an unnamed temporary file in `dir`, or in the system's temporary
/// directory when `dir` refuses one (created on the first record).
#[derive(Debug)]
struct RecordFile {
    dir: PathBuf,
    writer: Option<BufWriter<File>>,
    records: u64,
}

impl RecordFile {
    fn new(dir: &Path) -> RecordFile {
        RecordFile {
            dir: dir.to_path_buf(),
            writer: None,
            records: 0,
        }
    }

    fn push(&mut self, record: &IdRecord) -> io::Result<()> {
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                // A directory we may not write to (an output file writable in a read-only
                // directory) leaves the system's temporary directory.
                let file = tempfile::tempfile_in(&self.dir)
                    .or_else(|error| tempfile::tempfile().map_err(|_| error))?;
                self.writer.insert(BufWriter::with_capacity(1 << 16, file))
            }
        };
        writer.write_all(&record.encode())?;
        self.records += 1;
        Ok(())
    }

    /// The file, everything written (`None` before the first record).
    fn into_file(self) -> io::Result<Option<File>> {
        self.writer
            .map(|writer| writer.into_inner().map_err(|error| error.into_error()))
            .transpose()
    }
}

/// Reads records `from..to` (record numbers) of `file` in order.
struct RecordCursor {
    offset: u64,
    end: u64,
    buffer: Vec<u8>,
    position: usize,
}

impl RecordCursor {
    fn new(from: u64, to: u64) -> RecordCursor {
        RecordCursor {
            offset: from * RECORD_BYTES as u64,
            end: to * RECORD_BYTES as u64,
            buffer: Vec::new(),
            position: 0,
        }
    }

    fn next(&mut self, file: &File) -> io::Result<Option<IdRecord>> {
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
        Ok(Some(IdRecord::decode(&bytes)))
    }
}

/// The answers a resume scan found in the output, kept on disk (20 bytes each) rather than in
/// memory.
#[derive(Debug)]
pub(crate) struct AnswerLog {
    pending: RecordFile,
    file: Option<File>,
    records: u64,
}

impl Default for AnswerLog {
    fn default() -> Self {
        AnswerLog::new(Path::new("."))
    }
}

impl AnswerLog {
    /// An empty log whose file (when it gets a record) goes in `dir`.
    pub(crate) fn new(dir: &Path) -> AnswerLog {
        AnswerLog {
            pending: RecordFile::new(dir),
            file: None,
            records: 0,
        }
    }

    /// Notes an answer for `id`.
    pub(crate) fn push(&mut self, id: IdFingerprint, answer: PreviousAnswer) -> io::Result<()> {
        self.pending.push(&IdRecord::answer(id, answer))?;
        self.records += 1;
        Ok(())
    }

    /// Ends writing: call once every answer is in, before reading.
    pub(crate) fn seal(&mut self) -> io::Result<()> {
        let dir = self.pending.dir.clone();
        let pending = std::mem::replace(&mut self.pending, RecordFile::new(&dir));
        if let Some(file) = pending.into_file()? {
            self.file = Some(file);
        }
        Ok(())
    }

    /// Answers noted.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.records
    }

    /// True when no answer was noted.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Calls `each` with every answer, in the order they were noted (after [`AnswerLog::seal`]).
    pub(crate) fn for_each(
        &self,
        mut each: impl FnMut(IdRecord) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut cursor = RecordCursor::new(0, self.records);
        while let Some(record) = cursor.next(file)? {
            each(record)?;
        }
        Ok(())
    }

    /// How `id` was answered: a success if any answer is one (after [`AnswerLog::seal`]; reads
    /// the whole log).
    #[cfg(test)]
    pub(crate) fn answer_of(&self, id: IdFingerprint) -> io::Result<Option<PreviousAnswer>> {
        let mut found = None;
        self.for_each(|record| {
            if record.id == id {
                found = Some(with_answer(found, record.flag));
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The answers as an in-memory index (for an input that cannot be read twice), with the
    /// number of answers for an id that already had one.
    pub(crate) fn to_index(&self) -> io::Result<(IdIndex, u64)> {
        let mut index = IdIndex::default();
        let mut duplicates = 0u64;
        self.for_each(|record| {
            let earlier = if record.flag {
                !index.insert(record.id, IdTag::Succeeded) | index.remove(record.id, IdTag::Failed)
            } else {
                index.contains(record.id, IdTag::Succeeded)
                    || !index.insert(record.id, IdTag::Failed)
            };
            duplicates += u64::from(earlier);
            Ok(())
        })?;
        Ok((index, duplicates))
    }
}

/// Sorts [`IdRecord`]s in bounded memory and gives the [`LineVerdicts`] they imply.
#[derive(Debug)]
pub(crate) struct IdSorter {
    run_records: usize,
    buffer: Vec<IdRecord>,
    spill: RecordFile,
    runs: Vec<u64>,
}

impl IdSorter {
    /// A sorter that keeps up to `run_records` records in memory and writes longer inputs to an
    /// unnamed temporary file in `dir` (gone when the sorter is).
    pub(crate) fn new(dir: &Path, run_records: usize) -> IdSorter {
        IdSorter {
            run_records: run_records.max(1),
            buffer: Vec::new(),
            spill: RecordFile::new(dir),
            runs: Vec::new(),
        }
    }

    /// Adds one record.
    pub(crate) fn push(&mut self, record: IdRecord) -> io::Result<()> {
        if self.buffer.len() >= self.run_records {
            self.write_run()?;
        }
        if self.buffer.capacity() == 0 {
            // Address space only: pages are touched as records arrive.
            self.buffer.reserve_exact(self.run_records);
        }
        self.buffer.push(record);
        Ok(())
    }

    fn write_run(&mut self) -> io::Result<()> {
        self.buffer.sort_unstable();
        for record in &self.buffer {
            self.spill.push(record)?;
        }
        self.runs.push(self.buffer.len() as u64);
        self.buffer.clear();
        Ok(())
    }

    /// Sorts everything pushed and gives each line its verdict.
    pub(crate) fn finish(mut self) -> io::Result<LineVerdicts> {
        if self.runs.is_empty() {
            self.buffer.sort_unstable();
            return Ok(LineVerdicts::from_sorted(self.buffer));
        }
        if !self.buffer.is_empty() {
            self.write_run()?;
        }
        self.buffer = Vec::new();
        let Some(file) = self.spill.into_file()? else {
            return Ok(LineVerdicts::default());
        };
        let mut cursors = Vec::with_capacity(self.runs.len());
        let mut start = 0u64;
        for &records in &self.runs {
            cursors.push(RecordCursor::new(start, start + records));
            start += records;
        }
        let mut merged = Merge::new(file, cursors)?;
        let verdicts = LineVerdicts::from_sorted(merged.by_ref());
        match merged.error {
            Some(error) => Err(error),
            None => Ok(verdicts),
        }
    }
}

/// The k-way merge of sorted runs; the first read error ends it and is kept.
struct Merge {
    file: File,
    runs: Vec<RecordCursor>,
    heap: BinaryHeap<Reverse<(IdRecord, usize)>>,
    error: Option<io::Error>,
}

impl Merge {
    fn new(file: File, mut runs: Vec<RecordCursor>) -> io::Result<Merge> {
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
    type Item = IdRecord;

    fn next(&mut self) -> Option<IdRecord> {
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
    use std::collections::HashMap;

    #[test]
    fn the_module_example_holds() -> std::io::Result<()> {
        use crate::batch::ids::IdFingerprint;
        use crate::batch::output::PreviousAnswer;

        let dir = tempfile::tempdir()?;
        let mut sorter = IdSorter::new(dir.path(), 2);
        let (a, b) = (IdFingerprint::of("a"), IdFingerprint::of("b"));
        sorter.push(IdRecord::answer(b, PreviousAnswer::Succeeded))?; // the output answers "b"
        sorter.push(IdRecord::line(a, 1, false))?; // invalid: claims nothing
        sorter.push(IdRecord::line(a, 2, true))?; // claims "a"
        sorter.push(IdRecord::line(b, 3, true))?; // answered before: skipped
        sorter.push(IdRecord::line(a, 4, true))?; // duplicate of line 2
        let verdicts = sorter.finish()?;
        assert_eq!(verdicts.get(1), Verdict::New);
        assert_eq!(verdicts.get(2), Verdict::New);
        assert_eq!(
            verdicts.get(3),
            Verdict::Answered(PreviousAnswer::Succeeded)
        );
        assert_eq!(verdicts.get(4), Verdict::Duplicate);
        assert_eq!(verdicts.duplicates(), 1);
        Ok(())
    }

    fn fp(id: &str) -> IdFingerprint {
        IdFingerprint::of(id)
    }

    /// What the streaming check finds, with an in-memory map of answers and claimed ids.
    fn streaming(answers: &[(IdFingerprint, PreviousAnswer)], lines: &[IdRecord]) -> Vec<Verdict> {
        let mut answered: HashMap<IdFingerprint, PreviousAnswer> = HashMap::new();
        for (id, answer) in answers {
            let entry = answered.entry(*id).or_insert(*answer);
            if *answer == PreviousAnswer::Succeeded {
                *entry = PreviousAnswer::Succeeded;
            }
        }
        let mut claimed = std::collections::HashSet::new();
        lines
            .iter()
            .map(|r| {
                if claimed.contains(&r.id) {
                    Verdict::Duplicate
                } else if r.flag {
                    claimed.insert(r.id);
                    answered
                        .get(&r.id)
                        .map_or(Verdict::New, |a| Verdict::Answered(*a))
                } else {
                    Verdict::New
                }
            })
            .collect()
    }

    #[test]
    fn records_round_trip_through_their_bytes() {
        let r = IdRecord::line(fp("request-1"), (1 << 40) + 3, true);
        assert_eq!(IdRecord::decode(&r.encode()), r);
        let r = IdRecord::answer(fp("x"), PreviousAnswer::Failed);
        assert_eq!(IdRecord::decode(&r.encode()), r);
    }

    #[test]
    fn spilled_runs_give_what_the_streaming_check_gives() {
        // 5,000 lines over 200 ids (some invalid) and answers for 50 of them (some twice),
        // sorted in runs of 64: 80 runs merged.
        let lines: Vec<IdRecord> = (1..=5_000u64)
            .map(|line| {
                IdRecord::line(
                    fp(&format!("id-{}", (line * 7919) % 200)),
                    line,
                    line % 13 != 0,
                )
            })
            .collect();
        let answers: Vec<(IdFingerprint, PreviousAnswer)> = (0..60u64)
            .map(|k| {
                let answer = if k % 3 == 0 {
                    PreviousAnswer::Failed
                } else {
                    PreviousAnswer::Succeeded
                };
                (fp(&format!("id-{}", k % 50 * 4)), answer)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut log = AnswerLog::new(dir.path());
        for (id, answer) in &answers {
            log.push(*id, *answer).unwrap();
        }
        log.seal().unwrap();
        let mut sorter = IdSorter::new(dir.path(), 64);
        log.for_each(|record| sorter.push(record)).unwrap();
        for r in &lines {
            sorter.push(*r).unwrap();
        }
        let verdicts = sorter.finish().unwrap();
        let expected = streaming(&answers, &lines);
        let found: Vec<Verdict> = (1..=5_000).map(|l| verdicts.get(l)).collect();
        assert_eq!(found, expected);
        let count = |v: fn(&Verdict) -> bool| expected.iter().filter(|x| v(x)).count() as u64;
        assert_eq!(verdicts.duplicates(), count(|v| *v == Verdict::Duplicate));
        assert_eq!(
            verdicts.answered(),
            count(|v| matches!(v, Verdict::Answered(_)))
        );
        assert_eq!(verdicts.duplicate_answers(), 10);
        assert!(verdicts.answered() > 0 && verdicts.duplicates() > 0);
        // The same records sorted in memory only.
        let mut in_memory = IdSorter::new(dir.path(), 10_000);
        log.for_each(|record| in_memory.push(record)).unwrap();
        for r in &lines {
            in_memory.push(*r).unwrap();
        }
        assert_eq!(in_memory.finish().unwrap(), verdicts);
        // The in-memory index of the same answers agrees.
        let (index, duplicate_answers) = log.to_index().unwrap();
        assert_eq!(duplicate_answers, 10);
        assert_eq!(index.len(), 50);
        assert_eq!(
            log.answer_of(fp("id-0")).unwrap(),
            Some(PreviousAnswer::Succeeded)
        );
        assert_eq!(log.answer_of(fp("id-1")).unwrap(), None);
        // The temporary files have no names.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_invalid_first_line_claims_nothing() {
        let records = [
            IdRecord::line(fp("a"), 1, false),
            IdRecord::line(fp("a"), 2, false),
            IdRecord::line(fp("a"), 3, true),
            IdRecord::line(fp("a"), 4, false),
        ];
        let verdicts = LineVerdicts::from_sorted(records);
        let found: Vec<Verdict> = (1..=4).map(|l| verdicts.get(l)).collect();
        assert_eq!(
            found,
            vec![Verdict::New, Verdict::New, Verdict::New, Verdict::Duplicate]
        );
        assert_eq!(LineVerdicts::default().get(u64::MAX), Verdict::New);
        assert!(AnswerLog::new(Path::new(".")).is_empty());
    }
}
