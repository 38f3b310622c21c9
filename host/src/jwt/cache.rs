//! The verified-token cache (as Envoy's jwt_authn has): a token that passed
//! every check is remembered, by its SHA-256, until its own `exp`, so the
//! signature is not checked again on every request. Bounded; failures are
//! never remembered; each entry keeps the key that verified it so a key the
//! provider dropped stops its tokens too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest as _, Sha256};

use super::jwks::RemoteKey;
use crate::identity::Identity;

/// The cache key: the token's SHA-256 (the token itself is not kept).
pub type TokenDigest = [u8; 32];

/// The SHA-256 of `token`.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// What a hit returns.
pub struct Hit {
    /// The identity the token proved.
    pub identity: Identity,
    /// The provider key that verified it (None: the `.env` key).
    pub key: Option<Arc<RemoteKey>>,
}

struct Entry {
    identity: Identity,
    /// The token's `exp` (Unix seconds): the entry is dead from then on.
    exp: u64,
    key: Option<Arc<RemoteKey>>,
}

/// Bounded map from token digest to verified identity, split in shards so
/// concurrent requests rarely wait on one lock.
pub struct TokenCache {
    shards: Box<[Mutex<HashMap<TokenDigest, Entry>>]>,
    per_shard: usize,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (at least 1).
    pub fn new(capacity: usize) -> TokenCache {
        let capacity = capacity.max(1);
        let shards = if capacity < 64 { 1 } else { 16 };
        TokenCache {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity / shards,
        }
    }

    fn shard(&self, digest: &TokenDigest) -> MutexGuard<'_, HashMap<TokenDigest, Entry>> {
        let shard = &self.shards[usize::from(digest[0]) % self.shards.len()];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The identity of a token verified before, if it has not expired by
    /// `now` (Unix seconds).
    pub fn get(&self, digest: &TokenDigest, now: u64) -> Option<Hit> {
        let mut shard = self.shard(digest);
        match shard.get(digest) {
            Some(e) if e.exp > now => Some(Hit {
                identity: e.identity.clone(),
                key: e.key.clone(),
            }),
            Some(_) => {
                shard.remove(digest);
                None
            }
            None => None,
        }
    }

    /// Remembers a token that passed every check until its `exp`. A full
    /// shard first drops its expired entries, then an eighth of the rest
    /// (arbitrary ones: the hash map's order).
    pub fn insert(
        &self,
        digest: TokenDigest,
        identity: Identity,
        exp: u64,
        key: Option<Arc<RemoteKey>>,
        now: u64,
    ) {
        if exp <= now {
            return;
        }
        let mut shard = self.shard(&digest);
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            shard.retain(|_, e| e.exp > now);
            if shard.len() >= self.per_shard {
                let drop = (self.per_shard / 8).max(1);
                let victims: Vec<TokenDigest> = shard.keys().take(drop).copied().collect();
                for victim in victims {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(digest, Entry { identity, exp, key });
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(id: &str) -> Identity {
        Identity {
            user_id: id.into(),
            roles: vec![],
            claims: Default::default(),
        }
    }

    #[test]
    fn remembers_until_exp_and_not_after() {
        let cache = TokenCache::new(100);
        let d = digest("token-a");
        cache.insert(d, who("a"), 1_000, None, 900);
        assert_eq!(cache.get(&d, 999).unwrap().identity.user_id, "a");
        assert!(cache.get(&d, 1_000).is_none(), "dead at exp");
        assert!(cache.is_empty(), "an expired entry is dropped when seen");
        cache.insert(d, who("a"), 1_000, None, 1_000);
        assert!(
            cache.is_empty(),
            "an already expired token is not remembered"
        );
    }

    #[test]
    fn different_tokens_do_not_share_entries() {
        let cache = TokenCache::new(100);
        cache.insert(digest("token-a"), who("a"), 1_000, None, 0);
        assert!(cache.get(&digest("token-b"), 0).is_none());
        assert!(cache.get(&digest("token-a "), 0).is_none());
    }

    #[test]
    fn stays_within_its_capacity() {
        for capacity in [10, 1_000] {
            let cache = TokenCache::new(capacity);
            for i in 0..capacity * 5 {
                cache.insert(digest(&format!("token-{i}")), who("u"), 1_000, None, 0);
                assert!(cache.len() <= capacity, "{} > {capacity}", cache.len());
            }
            assert!(
                cache.len() >= capacity / 2,
                "eviction drops only what it must: {}",
                cache.len()
            );
            // The newest entry is always kept.
            assert!(
                cache
                    .get(&digest(&format!("token-{}", capacity * 5 - 1)), 0)
                    .is_some()
            );
        }
    }

    #[test]
    fn a_full_shard_drops_expired_entries_first() {
        let cache = TokenCache::new(4);
        for i in 0..3 {
            cache.insert(digest(&format!("old-{i}")), who("u"), 100, None, 0);
        }
        cache.insert(digest("live"), who("u"), 1_000, None, 0);
        cache.insert(digest("new"), who("u"), 1_000, None, 500);
        assert!(cache.get(&digest("live"), 500).is_some());
        assert!(cache.get(&digest("new"), 500).is_some());
        assert_eq!(cache.len(), 2);
    }
}
