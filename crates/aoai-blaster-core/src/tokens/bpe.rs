//! Counting a text's tokens the way tiktoken's `encode_ordinary` splits it, from a compact
//! vocabulary: the tokens' bytes are static data (written by `build.rs`, so only the pages
//! touched are resident) and the only heap is one hash table of ranks (~2 MiB for o200k), where
//! a tiktoken-rs `CoreBPE` holds the vocabulary three times over (~40 MiB).
//!
//! Same pre-tokenizer (each encoding's published regex, run by the same regex engine), same
//! merge rule (repeatedly join the adjacent pair whose bytes have the lowest rank, the leftmost
//! of equals), hence the same count; `tests/token_counts.rs` checks it against tiktoken-rs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

use fancy_regex::Regex;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// The pre-tokenizer of o200k_base (and o200k_harmony).
const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+",
);

/// The pre-tokenizer of cl100k_base.
const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// The pre-tokenizer of p50k_base, p50k_edit and r50k_base (GPT-2's).
const GPT2_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

/// One vocabulary's static tables, as `build.rs` wrote them.
#[derive(Clone, Copy)]
pub(crate) struct Tables {
    bytes: &'static [u8],
    ends: &'static [u8],
    pattern: &'static str,
}

pub(crate) const O200K_BASE: Tables = Tables {
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.bytes")),
    ends: include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.ends")),
    pattern: O200K_PATTERN,
};

pub(crate) const CL100K_BASE: Tables = Tables {
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.bytes")),
    ends: include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.ends")),
    pattern: CL100K_PATTERN,
};

pub(crate) const P50K_BASE: Tables = Tables {
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/p50k_base.bytes")),
    ends: include_bytes!(concat!(env!("OUT_DIR"), "/p50k_base.ends")),
    pattern: GPT2_PATTERN,
};

pub(crate) const R50K_BASE: Tables = Tables {
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/r50k_base.bytes")),
    ends: include_bytes!(concat!(env!("OUT_DIR"), "/r50k_base.ends")),
    pattern: GPT2_PATTERN,
};

/// A vocabulary ready to count with: the tables, a hash of token bytes → rank, the regex.
pub(crate) struct Counter {
    tables: Tables,
    ranks: HashTable<u32>,
    regex: Regex,
}

impl Counter {
    /// Indexes `tables`; `None` if the pattern does not compile (it always does).
    pub(crate) fn new(tables: Tables) -> Option<Counter> {
        let regex = Regex::new(tables.pattern).ok()?;
        let slots = u32::try_from(tables.ends.len() / 4).ok()?;
        let mut ranks = HashTable::with_capacity(slots as usize);
        let hash = |rank: &u32| FxBuildHasher.hash_one(token_of(tables, *rank));
        for rank in 0..slots {
            // Empty: a rank without an ordinary token (a special token's).
            if !token_of(tables, rank).is_empty() {
                ranks.insert_unique(hash(&rank), rank, hash);
            }
        }
        Some(Counter {
            tables,
            ranks,
            regex,
        })
    }

    /// The rank of the token whose bytes are `piece`, if there is one.
    fn rank(&self, piece: &[u8]) -> Option<u32> {
        let tables = self.tables;
        self.ranks
            .find(FxBuildHasher.hash_one(piece), |&r| {
                token_of(tables, r) == piece
            })
            .copied()
    }

    /// Tokens of `text` (special-token text is ordinary text). Should the regex give up on a
    /// pathological text (its backtracking limit), the rest is charged a token per byte: never
    /// less than its tokens.
    pub(crate) fn count(&self, text: &str) -> usize {
        let mut total = 0;
        for piece in self.regex.find_iter(text) {
            match piece {
                Ok(piece) => total += self.count_piece(piece.as_str().as_bytes()),
                Err(_) => return total + text.len(),
            }
        }
        total
    }

    /// Tokens of one pre-tokenized piece: byte-pair merges in rank order.
    fn count_piece(&self, piece: &[u8]) -> usize {
        if piece.len() <= 1 || self.rank(piece).is_some() {
            return piece.len().min(1);
        }
        // Parts as a linked list over byte positions: `next[i]` is where the part starting at
        // `i` ends. Candidate merges wait in a min-heap of (rank, start); one that is stale
        // (its part or its neighbour has changed since) is skipped when popped.
        let n = piece.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut heap = BinaryHeap::with_capacity(n);
        let pair_rank = |next: &[usize], start: usize| -> Option<u32> {
            let mid = next[start];
            let end = *next.get(mid)?;
            self.rank(&piece[start..end])
        };
        for start in 0..n - 1 {
            if let Some(rank) = pair_rank(&next, start) {
                heap.push(Reverse((rank, start, next[start + 1])));
            }
        }
        let mut parts = n;
        while let Some(Reverse((_, start, end))) = heap.pop() {
            // Stale: `start` was absorbed, or the pair no longer spans start..end.
            let alive = start == 0 || prev[start] != usize::MAX;
            let mid = next[start];
            if !alive || mid >= n || next[mid] != end {
                continue;
            }
            // Join the parts at `start` and `mid`.
            next[start] = end;
            prev[mid] = usize::MAX;
            if end < n {
                prev[end] = start;
            }
            parts -= 1;
            if let Some(rank) = pair_rank(&next, start) {
                heap.push(Reverse((rank, start, next[next[start]])));
            }
            if start > 0 {
                let before = prev[start];
                if let Some(rank) = pair_rank(&next, before) {
                    heap.push(Reverse((rank, before, next[start])));
                }
            }
        }
        parts
    }
}

fn token_of(tables: Tables, rank: u32) -> &'static [u8] {
    let end_at = |slot: usize| -> usize {
        let bytes = &tables.ends[slot * 4..slot * 4 + 4];
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
    };
    let rank = rank as usize;
    let start = if rank == 0 { 0 } else { end_at(rank - 1) };
    &tables.bytes[start..end_at(rank)]
}
