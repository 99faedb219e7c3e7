//! Inbound keys: held as SHA-256 digests, compared in constant time.
//!
//! Why digests: the process never keeps a client key it could leak in a dump or a log, and
//! comparing fixed-size digests with [`subtle`] takes the same time whichever byte differs
//! (and whichever key matched: every key is compared, none short-circuits).

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The keys clients may present. Empty: the gateway takes requests without a key.
///
/// ```
/// use aoai_blaster_core::gateway::InboundKeys;
///
/// let keys = InboundKeys::new(["sk-team-a-0123456789", "sk-team-b-0123456789"]);
/// assert!(keys.accepts("sk-team-b-0123456789"));
/// assert!(!keys.accepts("sk-team-c-0123456789"));
/// assert_eq!(format!("{keys:?}"), "InboundKeys(2 digests)");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct InboundKeys {
    digests: Vec<[u8; 32]>,
}

impl InboundKeys {
    /// Hashes each key (the keys themselves are not kept).
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        InboundKeys {
            digests: keys.into_iter().map(digest).collect(),
        }
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// True when `presented` is one of the keys (every key is compared, in constant time).
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        let mut found = subtle::Choice::from(0);
        for digest in &self.digests {
            found |= digest.ct_eq(&presented);
        }
        found.into()
    }
}

impl fmt::Debug for InboundKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InboundKeys({} digests)", self.digests.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key a request presents: `Authorization: Bearer KEY` (what OpenAI SDKs send), else
/// `api-key: KEY` (what Azure SDKs send). Header values as the request carried them.
///
/// ```
/// use aoai_blaster_core::gateway::presented_key;
///
/// assert_eq!(presented_key(Some("Bearer sk-1"), None), Some("sk-1"));
/// assert_eq!(presented_key(Some("bearer  sk-1 "), Some("sk-2")), Some("sk-1"));
/// assert_eq!(presented_key(None, Some("sk-2")), Some("sk-2"));
/// assert_eq!(presented_key(Some("Basic dXNlcg=="), Some("sk-2")), Some("sk-2"));
/// assert_eq!(presented_key(Some("Basic dXNlcg=="), None), None);
/// assert_eq!(presented_key(None, Some(" ")), None);
/// ```
pub fn presented_key<'a>(
    authorization: Option<&'a str>,
    api_key: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = authorization.and_then(|value| {
        let (scheme, key) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
    });
    bearer
        .or(api_key)
        .map(str::trim)
        .filter(|key| !key.is_empty())
}
