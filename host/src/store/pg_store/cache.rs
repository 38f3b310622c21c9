//! What one instance remembers of the database so that authenticating a
//! request does not query it: users by id, logins (refresh families) by id
//! and API keys by hash, each for at most the TTL.
//!
//! Another instance's change reaches this one through `LISTEN
//! agentflow_cache` (the schema's triggers send the changed row's key on
//! commit), so a revocation is seen on the next request. While the listening
//! connection is down the cache is not used at all (and is emptied), so a
//! missed notification cannot keep a revoked entry alive; the TTL bounds
//! what is left (notifications delivered late).
//!
//! A read that raced with an invalidation must not put the old row back:
//! every invalidation bumps an epoch, and a row read from the database is
//! only cached if no invalidation happened since the read began.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::super::{ApiKey, RefreshFamily, User};

/// Entries per map; a full map is emptied rather than grown.
const MAX_ENTRIES: usize = 100_000;

/// One map of cached rows.
struct TtlMap<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlMap<V> {
    fn new() -> Self {
        TtlMap {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str, ttl: Duration) -> Option<V> {
        let map = self.lock();
        let (at, v) = map.get(key)?;
        (at.elapsed() < ttl).then(|| v.clone())
    }

    fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    fn retain(&self, keep: impl Fn(&V) -> bool) {
        self.lock().retain(|_, (_, v)| keep(v));
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

/// A point in the invalidation history, taken before a database read.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// The cache of one `PgStore`.
pub struct Cache {
    ttl: Duration,
    /// Whether the listening connection is up (else nothing is cached).
    live: AtomicBool,
    epoch: AtomicU64,
    users: TtlMap<User>,
    families: TtlMap<RefreshFamily>,
    keys: TtlMap<ApiKey>,
}

impl Cache {
    /// An empty cache whose entries live `ttl` (zero: nothing is cached).
    pub fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            live: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            users: TtlMap::new(),
            families: TtlMap::new(),
            keys: TtlMap::new(),
        }
    }

    fn usable(&self) -> bool {
        !self.ttl.is_zero() && self.live.load(Ordering::Acquire)
    }

    /// Marks the listening connection up or down; either way the cache
    /// starts empty (notifications may have been missed).
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
        self.invalidate_all();
    }

    /// Whether invalidations are being received.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Take before reading a row that may be cached afterwards.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn put<V: Clone>(&self, map: &TtlMap<V>, ticket: Ticket, key: &str, value: &V) {
        if !self.usable() {
            return;
        }
        let mut entries = map.lock();
        // Checked under the map's lock: an invalidation bumps the epoch
        // before it takes the lock to remove, so it either sees this entry
        // or this check sees its bump.
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key.to_string(), (Instant::now(), value.clone()));
    }

    fn get<V: Clone>(&self, map: &TtlMap<V>, key: &str) -> Option<V> {
        if !self.usable() {
            return None;
        }
        map.get(key, self.ttl)
    }

    /// A cached user.
    pub fn user(&self, id: &str) -> Option<User> {
        self.get(&self.users, id)
    }

    /// Caches a user read after `ticket`.
    pub fn put_user(&self, ticket: Ticket, user: &User) {
        self.put(&self.users, ticket, &user.id, user);
    }

    /// A cached login.
    pub fn family(&self, id: &str) -> Option<RefreshFamily> {
        self.get(&self.families, id)
    }

    /// Caches a login read after `ticket`.
    pub fn put_family(&self, ticket: Ticket, family: &RefreshFamily) {
        self.put(&self.families, ticket, &family.id, family);
    }

    /// A cached API key by hash.
    pub fn key(&self, hash: &str) -> Option<ApiKey> {
        self.get(&self.keys, hash)
    }

    /// Caches an API key read after `ticket`.
    pub fn put_key(&self, ticket: Ticket, key: &ApiKey) {
        self.put(&self.keys, ticket, &key.hash, key);
    }

    /// Forgets what a notification payload names: `u:{user id}`,
    /// `f:{family id}`, `k:{key hash}`; anything else empties the cache.
    pub fn invalidate(&self, payload: &str) {
        self.bump();
        match payload.split_once(':') {
            Some(("u", id)) => self.users.remove(id),
            Some(("f", id)) => self.families.remove(id),
            Some(("k", hash)) => self.keys.remove(hash),
            _ => self.invalidate_all(),
        }
    }

    /// Forgets a user with its logins and keys (after a local delete).
    pub fn invalidate_user_everything(&self, user_id: &str) {
        self.bump();
        self.users.remove(user_id);
        self.families.retain(|f| f.user_id != user_id);
        self.keys.retain(|k| k.user_id != user_id);
    }

    /// Forgets a user's logins (after a local revoke-all).
    pub fn invalidate_user_families(&self, user_id: &str) {
        self.bump();
        self.families.retain(|f| f.user_id != user_id);
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.bump();
        self.users.clear();
        self.families.clear();
        self.keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            username: "u".into(),
            password_hash: String::new(),
            is_active: true,
            is_superuser: false,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_read_older_than_an_invalidation_is_not_cached() {
        let cache = Cache::new(Duration::from_secs(60));
        cache.set_live(true);
        let ticket = cache.ticket();
        cache.invalidate("u:a");
        cache.put_user(ticket, &user("a"));
        assert!(cache.user("a").is_none());
        cache.put_user(cache.ticket(), &user("a"));
        assert!(cache.user("a").is_some());
        cache.invalidate("u:a");
        assert!(cache.user("a").is_none());
    }

    #[test]
    fn nothing_is_cached_while_not_listening_or_past_the_ttl() {
        let cache = Cache::new(Duration::from_secs(60));
        cache.put_user(cache.ticket(), &user("a"));
        assert!(cache.user("a").is_none(), "not live yet");
        cache.set_live(true);
        cache.put_user(cache.ticket(), &user("a"));
        cache.set_live(false);
        assert!(cache.user("a").is_none(), "emptied when the listener drops");
        let short = Cache::new(Duration::from_millis(1));
        short.set_live(true);
        short.put_user(short.ticket(), &user("a"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.user("a").is_none());
    }
}
