//! A compact index of `custom_id`s: what lets a run with a million lines detect duplicates and
//! skip answered ids without keeping a million strings.
//!
//! Each id is reduced to a 128-bit fingerprint (two independent SipHash values). Two different
//! ids share a fingerprint with a probability around `n² / 2¹²⁹`, about 10⁻²⁷ for a million
//! ids, so the index behaves as an exact set while costing 16 bytes per id (plus the hash
//! table's slack) instead of the id's length plus a `String`'s 24 bytes of overhead.
//!
//! ```
//! use aoai_blaster_cli::batch::ids::{IdFingerprint, IdIndex};
//!
//! let mut index = IdIndex::default();
//! assert!(index.insert("req-1"));
//! assert!(!index.insert("req-1"));
//! assert!(index.contains("req-1"));
//! assert_eq!(IdFingerprint::of("a"), IdFingerprint::of("a"));
//! assert_ne!(IdFingerprint::of("a"), IdFingerprint::of("b"));
//! ```

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A 128-bit fingerprint of one `custom_id`, stable within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdFingerprint(u128);

impl IdFingerprint {
    /// The fingerprint of `id`.
    pub fn of(id: &str) -> IdFingerprint {
        let half = |salt: u8| {
            let mut hasher = DefaultHasher::new();
            salt.hash(&mut hasher);
            id.hash(&mut hasher);
            hasher.finish()
        };
        IdFingerprint((u128::from(half(0x5a)) << 64) | u128::from(half(0xa5)))
    }
}

/// A set of `custom_id`s, stored as fingerprints.
#[derive(Debug, Default, Clone)]
pub struct IdIndex {
    set: HashSet<IdFingerprint>,
}

impl IdIndex {
    /// Adds `id`; false when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        self.set.insert(IdFingerprint::of(id))
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(&IdFingerprint::of(id))
    }

    /// Removes `id`; false when it was not there.
    pub fn remove(&mut self, id: &str) -> bool {
        self.set.remove(&IdFingerprint::of(id))
    }

    /// Makes room for `additional` more ids at once, so that the table does not double (and
    /// briefly hold its old and new copies) while it fills.
    pub fn reserve(&mut self, additional: usize) {
        self.set.reserve(additional);
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no id is in the set.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_ids_get_distinct_fingerprints() {
        let mut seen = HashSet::new();
        for i in 0..50_000 {
            assert!(seen.insert(IdFingerprint::of(&format!("request-{i}"))));
        }
        assert_eq!(seen.len(), 50_000);
    }

    #[test]
    fn insert_remove_contains() {
        let mut index = IdIndex::default();
        assert!(index.is_empty());
        index.reserve(1000);
        assert!(index.is_empty());
        assert!(index.insert("x"));
        assert!(index.insert("y"));
        assert!(!index.insert("x"));
        assert_eq!(index.len(), 2);
        assert!(index.remove("x"));
        assert!(!index.remove("x"));
        assert!(!index.contains("x"));
        assert!(index.contains("y"));
    }

    #[test]
    fn halves_are_independent() {
        let IdFingerprint(value) = IdFingerprint::of("same");
        assert_ne!((value >> 64) as u64, value as u64);
    }
}
