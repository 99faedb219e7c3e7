//! Batch files in the OpenAI / Azure Batch JSONL format: input lines in, result lines out.
//!
//! - [`input`]: parse and validate one input line into a request or an error record.
//! - [`output`]: the output line types, the crash-safe writer, and the resume scan.
//! - [`head`]: what an output line too long to hold says, from its first bytes.
//! - [`lines`]: lines read with a bound (`--max-line-bytes`), never held whole.
//! - [`lock`]: one run at a time per output file (`OUT.lock`).
//! - [`source`]: the reader thread that streams the input into a bounded channel.
//! - [`answer`]: a finished job (completion or error) as an output line.
//! - [`ids`]: the compact index of `custom_id`s that makes duplicates and resume cheap.
//! - [`duplicates`]: duplicate `custom_id`s found before the run by sorting on disk (flat memory).

pub(crate) mod answer;
pub(crate) mod duplicates;
pub(crate) mod head;
pub(crate) mod ids;
pub(crate) mod input;
pub(crate) mod lines;
pub(crate) mod lock;
pub(crate) mod output;
pub(crate) mod source;
