//! Positive introspection answers kept in the plugin's key-value store,
//! keyed by the SHA-256 of the token (the token itself is never stored).

use agentflow_plugin_sdk::{Identity, Map, Value};
use sha2::Digest;

/// One cached answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    /// Unix time after which the entry is stale.
    pub until: u64,
    /// The identity the token maps to.
    pub who: Identity,
}

impl CacheEntry {
    /// The stored form: JSON `{"until", "user_id", "roles", "claims"}`.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::json!({
            "until": self.until,
            "user_id": self.who.user_id,
            "roles": self.who.roles,
            "claims": self.who.claims,
        })
        .to_string()
        .into_bytes()
    }

    /// Reads the stored form; `None` when it is not one.
    pub fn decode(bytes: &[u8]) -> Option<CacheEntry> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let who = Identity {
            user_id: v["user_id"].as_str()?.to_owned(),
            roles: v["roles"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            claims: v["claims"].as_object()?.clone(),
        };
        Some(CacheEntry {
            until: v["until"].as_u64()?,
            who,
        })
    }
}

/// The kv key for `token`.
pub fn key(token: &str) -> String {
    format!(
        "tok:{}",
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    )
}

/// Until when an active answer may be reused: its `exp`, but at most
/// `max_s` from `now`; `None` when it must not be cached (no `exp`, already
/// expired, or caching off).
pub fn until(answer: &Map<String, Value>, now: u64, max_s: u64) -> Option<u64> {
    let exp = answer.get("exp")?.as_u64()?;
    let until = exp.min(now.saturating_add(max_s));
    (max_s > 0 && until > now).then_some(until)
}

/// The cached identity for `key`, if fresh; stale entries are removed.
#[cfg(target_family = "wasm")]
pub fn lookup(key: &str, now: u64) -> Option<Identity> {
    use agentflow_plugin_sdk::host;
    let entry = CacheEntry::decode(&host::kv_get(key)?);
    match entry {
        Some(e) if e.until > now => Some(e.who),
        _ => {
            // An empty value removes the key.
            let _ = host::kv_set(key, b"");
            None
        }
    }
}

/// Stores `entry`; a full store only means no caching.
#[cfg(target_family = "wasm")]
pub fn store(key: &str, entry: &CacheEntry) {
    if let Err(e) = agentflow_plugin_sdk::host::kv_set(key, &entry.encode()) {
        agentflow_plugin_sdk::host::warn(&format!("not caching the introspection answer: {e}"));
    }
}

/// Natively (unit tests) there is no store.
#[cfg(not(target_family = "wasm"))]
pub fn lookup(_key: &str, _now: u64) -> Option<Identity> {
    None
}

/// Natively (unit tests) there is no store.
#[cfg(not(target_family = "wasm"))]
pub fn store(_key: &str, _entry: &CacheEntry) {}
