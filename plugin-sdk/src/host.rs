//! Services the server offers to plugins: logging, config, granted
//! secrets and a small private key-value store with atomic updates.
//!
//! Inside the server these reach the host. In a native `cargo test` they
//! reach the test host of [`crate::testing`] instead (an in-memory store, a
//! captured log, the secrets and config the test gave), so plugin logic that
//! uses them is unit-tested without a server.
//!
//! Also granted, through the standard library: the clock
//! (`std::time::{Instant, SystemTime}`) and a secure random source
//! (`wasi:random`, e.g. through the `getrandom` crate).

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail useful while developing a plugin.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

#[cfg(target_family = "wasm")]
mod backend {
    use super::Level;
    use crate::bindings::wit_host;

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Debug => wit_host::Level::Debug,
            Level::Info => wit_host::Level::Info,
            Level::Warn => wit_host::Level::Warn,
            Level::Error => wit_host::Level::Error,
        };
        wit_host::log(level, message);
    }

    pub fn config_json() -> String {
        wit_host::config()
    }

    pub fn secret(name: &str) -> Option<String> {
        wit_host::secret(name)
    }

    pub fn kv_get(key: &str) -> Option<Vec<u8>> {
        wit_host::kv_get(key)
    }

    pub fn kv_set(key: &str, value: &[u8], ttl: Option<u32>) -> Result<(), String> {
        wit_host::kv_set(key, value, ttl)
    }

    pub fn kv_compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl: Option<u32>,
    ) -> Result<bool, String> {
        wit_host::kv_compare_and_swap(key, expected, new, ttl)
    }

    pub fn kv_increment(key: &str, delta: i64, ttl: Option<u32>) -> Result<i64, String> {
        wit_host::kv_increment(key, delta, ttl)
    }
}

#[cfg(not(target_family = "wasm"))]
use crate::testing::backend;

/// Writes a line into the server's log at `level`, tagged with the plugin's
/// name. The [`crate::info!`] family of macros format and call this.
pub fn log(level: Level, message: &str) {
    backend::log(level, message);
}

/// Writes a debug line into the server's log.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes an info line into the server's log.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a warning into the server's log.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes an error into the server's log.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// This plugin's `config` from agentflow.json as JSON text.
pub fn config_json() -> String {
    backend::config_json()
}

/// The value of a secret granted to this plugin; `None` for names it was
/// not granted.
pub fn secret(name: &str) -> Option<String> {
    backend::secret(name)
}

/// Reads a value from this plugin's private key-value store (`None` when
/// absent or expired).
pub fn kv_get(key: &str) -> Option<Vec<u8>> {
    backend::kv_get(key)
}

/// Stores a value in this plugin's private key-value store, for good; an
/// empty value removes the key. Fails when the key is empty or over 1024
/// bytes, or the store would exceed the plugin's `kv_kb` cap. The store is
/// kept across reloads and restarts of the server.
pub fn kv_set(key: &str, value: &[u8]) -> Result<(), String> {
    backend::kv_set(key, value, None)
}

/// [`kv_set`] with the key expiring `expires_in_s` seconds from now.
pub fn kv_set_expiring(key: &str, value: &[u8], expires_in_s: u32) -> Result<(), String> {
    backend::kv_set(key, value, Some(expires_in_s))
}

/// Atomically sets `key` to `new` if its value is `expected` (`None`: the
/// key must be absent or expired); returns whether it did. An empty `new`
/// removes the key; `expires_in_s` as in [`kv_set_expiring`]. Use it for
/// single-use values (a code may be redeemed once) and read-modify-write.
pub fn kv_compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: &[u8],
    expires_in_s: Option<u32>,
) -> Result<bool, String> {
    backend::kv_compare_and_swap(key, expected, new, expires_in_s)
}

/// Atomically adds `delta` to the counter at `key` (absent or expired
/// counts as 0) and returns the new value. `expires_in_s` applies when the
/// counter is created: a fixed window starting at the first increment,
/// which is how a rate limit counts attempts.
pub fn kv_increment(key: &str, delta: i64, expires_in_s: Option<u32>) -> Result<i64, String> {
    backend::kv_increment(key, delta, expires_in_s)
}
