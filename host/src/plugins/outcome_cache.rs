//! Answers an authenticator allowed the host to reuse (its cache hint),
//! kept in memory for one plugin version: a reload starts empty.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{CacheHint, PluginRequest};
use crate::identity::Identity;

/// Most answers kept per plugin version.
const MAX_ENTRIES: usize = 10_000;
/// Longest reuse allowed, whatever the plugin asks.
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Distinct `vary` lists remembered per version (a plugin normally uses one).
const MAX_VARY_SETS: usize = 8;

/// Which vary list, and the request's values for those headers.
type Key = (usize, Vec<Option<String>>);

struct Entry {
    who: Identity,
    expires: Instant,
}

/// Cached authentications of one plugin version.
#[derive(Default)]
pub(crate) struct OutcomeCache {
    vary_sets: RwLock<Vec<Vec<String>>>,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl OutcomeCache {
    /// The identity a still-valid cached answer gives `req`, if any.
    pub fn lookup(&self, req: &PluginRequest) -> Option<Identity> {
        let sets = self.vary_sets.read().unwrap_or_else(|e| e.into_inner());
        if sets.is_empty() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sets.iter().enumerate().find_map(|(i, set)| {
            entries.get(&(i, values(req, set))).filter(|e| e.expires > now).map(|e| e.who.clone())
        })
    }

    /// Remembers that `req` authenticated as `who`, as the hint allows. A
    /// hint that varies on nothing would hand this identity to every
    /// request, so it is ignored.
    pub fn store(&self, req: &PluginRequest, hint: &CacheHint, who: &Identity) {
        let mut vary: Vec<String> = hint.vary.iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
        vary.sort();
        vary.dedup();
        if vary.is_empty() || hint.ttl_ms == 0 {
            return;
        }
        let index = {
            let mut sets = self.vary_sets.write().unwrap_or_else(|e| e.into_inner());
            match sets.iter().position(|s| *s == vary) {
                Some(i) => i,
                None if sets.len() < MAX_VARY_SETS => {
                    sets.push(vary.clone());
                    sets.len() - 1
                }
                None => return,
            }
        };
        let now = Instant::now();
        let ttl = Duration::from_millis(hint.ttl_ms.into()).min(MAX_TTL);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert((index, values(req, &vary)), Entry { who: who.clone(), expires: now + ttl });
    }
}

/// The request's values of `headers` (all values of a repeated header,
/// joined, so `a, b` and `a` never share an entry).
fn values(req: &PluginRequest, headers: &[String]) -> Vec<Option<String>> {
    headers
        .iter()
        .map(|name| {
            let all: Vec<&str> = req.0.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
            (!all.is_empty()).then(|| all.join("\0"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> PluginRequest {
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        PluginRequest::new("GET".into(), "/".into(), String::new(), headers, None)
    }

    fn who(id: &str) -> Identity {
        Identity { user_id: id.into(), roles: vec![], claims: Default::default() }
    }

    fn hint(ttl_ms: u32, vary: &[&str]) -> CacheHint {
        CacheHint { ttl_ms, vary: vary.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn answers_only_requests_with_the_same_vary_values() {
        let cache = OutcomeCache::default();
        cache.store(&req(&[("x-api-key", "k1")]), &hint(60_000, &["X-API-Key"]), &who("alice"));
        assert_eq!(cache.lookup(&req(&[("x-api-key", "k1"), ("other", "x")])).unwrap().user_id, "alice");
        assert!(cache.lookup(&req(&[("x-api-key", "k2")])).is_none());
        assert!(cache.lookup(&req(&[])).is_none());
        assert!(cache.lookup(&req(&[("x-api-key", "k1"), ("x-api-key", "k2")])).is_none());
    }

    #[test]
    fn ignores_hints_that_vary_on_nothing_or_expire_at_once() {
        let cache = OutcomeCache::default();
        cache.store(&req(&[("x-api-key", "k1")]), &hint(60_000, &[]), &who("alice"));
        cache.store(&req(&[("x-api-key", "k1")]), &hint(0, &["x-api-key"]), &who("alice"));
        assert!(cache.lookup(&req(&[("x-api-key", "k1")])).is_none());
        assert!(cache.lookup(&req(&[])).is_none());
    }

    #[test]
    fn entries_expire() {
        let cache = OutcomeCache::default();
        cache.store(&req(&[("x-api-key", "k1")]), &hint(1, &["x-api-key"]), &who("alice"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.lookup(&req(&[("x-api-key", "k1")])).is_none());
    }
}
