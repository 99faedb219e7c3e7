//! A compact index of `custom_id`s: what lets a run with a million lines detect duplicates and
//! skip answered ids without keeping a million strings.
//!
//! Each id is reduced to a 96-bit fingerprint (from two independent SipHash values), of which 94
//! bits identify the id and 2 bits carry an [`IdTag`]: claimed by a line of this run, answered
//! with a success before, or answered with a failure before. One table thus serves both the
//! duplicate check and the resume skip. Two different ids share a fingerprint with a probability
//! around `n² / 2⁹⁵`, about 10⁻¹⁵ for ten million ids, so the index behaves as an exact set while
//! costing 12 bytes per entry (13 with the hash table's control byte, before its slack: 13 to 26
//! MiB per million ids) instead of the id's length plus a `String`'s 24 bytes of overhead.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A fingerprint of one `custom_id`, stable within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct IdFingerprint([u32; 3]);

impl IdFingerprint {
    /// The fingerprint of `id`.
    pub(crate) fn of(id: &str) -> IdFingerprint {
        let half = |salt: u8| {
            let mut hasher = DefaultHasher::new();
            salt.hash(&mut hasher);
            id.hash(&mut hasher);
            hasher.finish()
        };
        let (high, low) = (half(0x5a), half(0xa5));
        IdFingerprint([(high >> 32) as u32, high as u32, (low as u32) & !TAG_MASK])
    }

    /// The fingerprint as three words (to store it).
    pub(crate) fn words(self) -> [u32; 3] {
        self.0
    }

    /// A fingerprint stored with [`IdFingerprint::words`].
    pub(crate) fn from_words(words: [u32; 3]) -> IdFingerprint {
        IdFingerprint(words)
    }

    fn tagged(self, tag: IdTag) -> [u32; 3] {
        let [a, b, c] = self.0;
        [a, b, c | tag as u32]
    }
}

const TAG_MASK: u32 = 0b11;

/// What an id in an [`IdIndex`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IdTag {
    /// A valid line of this run has the id.
    Claimed = 0,
    /// The output already has a successful answer for the id.
    Succeeded = 1,
    /// The output already has a failed answer for the id.
    Failed = 2,
}

/// A set of `(custom_id, tag)` pairs, stored as tagged fingerprints.
#[derive(Debug, Default, Clone)]
pub(crate) struct IdIndex {
    set: HashSet<[u32; 3]>,
}

impl IdIndex {
    /// Adds `id` with `tag`; false when that pair was already there.
    pub(crate) fn insert(&mut self, id: IdFingerprint, tag: IdTag) -> bool {
        self.set.insert(id.tagged(tag))
    }

    /// Whether `id` is there with `tag`.
    pub(crate) fn contains(&self, id: IdFingerprint, tag: IdTag) -> bool {
        self.set.contains(&id.tagged(tag))
    }

    /// Removes `id` with `tag`; false when that pair was not there.
    pub(crate) fn remove(&mut self, id: IdFingerprint, tag: IdTag) -> bool {
        self.set.remove(&id.tagged(tag))
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// True when there is no entry.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_example_holds() {
        let mut index = IdIndex::default();
        let id = IdFingerprint::of("req-1");
        assert!(index.insert(id, IdTag::Claimed));
        assert!(!index.insert(id, IdTag::Claimed));
        assert!(index.contains(id, IdTag::Claimed));
        assert!(!index.contains(id, IdTag::Succeeded));
        assert_ne!(IdFingerprint::of("a"), IdFingerprint::of("b"));
    }

    #[test]
    fn distinct_ids_get_distinct_fingerprints() {
        let mut seen = HashSet::new();
        for i in 0..50_000 {
            assert!(seen.insert(IdFingerprint::of(&format!("request-{i}"))));
        }
        assert_eq!(seen.len(), 50_000);
    }

    #[test]
    fn insert_remove_contains_per_tag() {
        let mut index = IdIndex::default();
        assert!(index.is_empty());
        let (x, y) = (IdFingerprint::of("x"), IdFingerprint::of("y"));
        assert!(index.insert(x, IdTag::Claimed));
        assert!(index.insert(x, IdTag::Succeeded));
        assert!(index.insert(y, IdTag::Failed));
        assert!(!index.insert(x, IdTag::Claimed));
        assert_eq!(index.len(), 3);
        assert!(index.remove(x, IdTag::Succeeded));
        assert!(!index.remove(x, IdTag::Succeeded));
        assert!(index.contains(x, IdTag::Claimed));
        assert!(!index.contains(y, IdTag::Claimed));
        assert!(index.contains(y, IdTag::Failed));
    }

    #[test]
    fn tags_live_in_the_low_bits_only() {
        let IdFingerprint(value) = IdFingerprint::of("same");
        assert_eq!(value[2] & TAG_MASK, 0);
        assert_ne!(value[0], value[2]);
        let tagged = IdFingerprint::of("same").tagged(IdTag::Failed);
        assert_eq!(tagged[..2], value[..2]);
        assert_eq!(tagged[2], value[2] | IdTag::Failed as u32);
        assert_eq!(std::mem::size_of_val(&tagged), 12);
    }
}
