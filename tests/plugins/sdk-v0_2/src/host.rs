//! Services the server offers to plugins: logging, config, granted
//! secrets and a small private key-value store.
//!
//! These calls only work inside the server (or `agentflow plugin call`);
//! in native unit tests they are unavailable, so keep them out of the logic
//! you unit-test.

use crate::bindings::wit_host;

/// Writes a debug line into the server's log, tagged with the plugin name.
pub fn debug(message: &str) {
    wit_host::log(wit_host::Level::Debug, message);
}

/// Writes an info line into the server's log.
pub fn info(message: &str) {
    wit_host::log(wit_host::Level::Info, message);
}

/// Writes a warning into the server's log.
pub fn warn(message: &str) {
    wit_host::log(wit_host::Level::Warn, message);
}

/// Writes an error into the server's log.
pub fn error(message: &str) {
    wit_host::log(wit_host::Level::Error, message);
}

/// This plugin's `config` from agentflow.json as JSON text.
pub fn config_json() -> String {
    wit_host::config()
}

/// The value of a secret granted to this plugin; `None` for names it was
/// not granted.
pub fn secret(name: &str) -> Option<String> {
    wit_host::secret(name)
}

/// Reads a value from this plugin's private key-value store.
pub fn kv_get(key: &str) -> Option<Vec<u8>> {
    wit_host::kv_get(key)
}

/// Stores a value in this plugin's private key-value store; an empty value
/// removes the key. Fails when the key is empty or over 1024 bytes, or the
/// store would exceed the plugin's `kv_kb` cap. The store is kept across
/// reloads and restarts of the server.
pub fn kv_set(key: &str, value: &[u8]) -> Result<(), String> {
    wit_host::kv_set(key, value)
}
