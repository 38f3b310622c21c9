//! An in-memory cache of owner lookups, so a request costs at most one
//! registry read and usually none. Entries (owned or not) are replaced on
//! every claim and release made through this process, and expire after
//! [`TTL`] as a safety net. It is used only on a registry no other instance
//! writes (sled): on a shared one (PostgreSQL) a stale "owned by alice" could
//! let alice into a thread released here and claimed by bob elsewhere, so
//! there every lookup is one query.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::ResourceKind;

/// How long a cached lookup is trusted.
pub const TTL: Duration = Duration::from_secs(30);

/// Most entries kept; on overflow the cache starts over (cheap, rare).
const CAPACITY: usize = 100_000;

type Key = (ResourceKind, String);

/// Owner lookups by resource (`None`: known to have no owner).
#[derive(Default)]
pub struct OwnerCache {
    entries: Mutex<HashMap<Key, (Option<String>, Instant)>>,
}

impl OwnerCache {
    /// The cached owner of a resource: `None` when not cached (or expired),
    /// `Some(None)` when known to be unowned.
    pub fn get(&self, kind: ResourceKind, id: &str) -> Option<Option<String>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (owner, at) = entries.get(&(kind, id.to_owned()))?;
        (at.elapsed() < TTL).then(|| owner.clone())
    }

    /// Records what the registry said (or what a claim or release made it).
    pub fn put(&self, kind: ResourceKind, id: &str, owner: Option<String>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert((kind, id.to_owned()), (owner, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_owners_and_absence_per_kind() {
        let c = OwnerCache::default();
        assert_eq!(c.get(ResourceKind::Thread, "t"), None);
        c.put(ResourceKind::Thread, "t", None);
        assert_eq!(c.get(ResourceKind::Thread, "t"), Some(None));
        c.put(ResourceKind::Thread, "t", Some("alice".into()));
        assert_eq!(c.get(ResourceKind::Thread, "t"), Some(Some("alice".into())));
        assert_eq!(c.get(ResourceKind::Memory, "t"), None);
    }
}
