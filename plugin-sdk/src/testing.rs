//! The test host: what [`crate::host`] reaches in a native `cargo test`.
//!
//! Each test thread has its own host: an in-memory key-value store (with
//! expiry and the same atomic operations as the server's), a captured log,
//! and the config and secrets the test gave. Nothing is shared between
//! tests, so they run in parallel.
//!
//! ```
//! use agentflow_plugin_sdk::testing::{self, TestHost};
//! use agentflow_plugin_sdk::host;
//!
//! TestHost::new()
//!     .with_config(serde_json::json!({"limit": 3}))
//!     .with_secret("PEPPER", "p")
//!     .install();
//! assert_eq!(host::secret("PEPPER").as_deref(), Some("p"));
//! assert_eq!(host::kv_increment("n", 2, None), Ok(2));
//! agentflow_plugin_sdk::info!("counted {}", 2);
//! assert!(testing::logged("counted 2"));
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::host::Level;
use crate::{Authenticator, Authorizer, Error, Manifest};

/// Longest key the server accepts, in bytes.
const MAX_KEY: usize = 1024;

/// The host a test sets up; [`TestHost::install`] makes it this thread's.
#[derive(Debug, Clone)]
pub struct TestHost {
    config: Value,
    secrets: HashMap<String, String>,
    kv: HashMap<String, (Vec<u8>, Option<SystemTime>)>,
    log: Vec<(Level, String)>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

thread_local! {
    static HOST: RefCell<TestHost> = RefCell::new(TestHost::new());
}

impl TestHost {
    /// No config (`null`), no secrets, an empty store, an empty log.
    pub fn new() -> Self {
        TestHost {
            config: Value::Null,
            secrets: HashMap::new(),
            kv: HashMap::new(),
            log: Vec::new(),
        }
    }

    /// The plugin's `config` (what agentflow.json would give it).
    pub fn with_config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// A granted secret.
    pub fn with_secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.insert(name.to_owned(), value.to_owned());
        self
    }

    /// A value already in the store.
    pub fn with_kv(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.kv.insert(key.to_owned(), (value.into(), None));
        self
    }

    /// Makes this the host of the current test (thread), replacing any
    /// earlier one.
    pub fn install(self) {
        HOST.with(|h| *h.borrow_mut() = self);
    }
}

/// Every line the plugin logged on this thread, in order.
pub fn logs() -> Vec<(Level, String)> {
    HOST.with(|h| h.borrow().log.clone())
}

/// Whether some logged line contains `needle`.
pub fn logged(needle: &str) -> bool {
    HOST.with(|h| h.borrow().log.iter().any(|(_, l)| l.contains(needle)))
}

/// Makes every key stored so far with an expiry `by` older (so a test can
/// see a window end without sleeping).
pub fn advance_expiry(by: Duration) {
    HOST.with(|h| {
        for (_, at) in h.borrow_mut().kv.values_mut() {
            if let Some(at) = at {
                *at = at.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH);
            }
        }
    });
}

/// Builds authenticator `P` the way the server does at load: from the
/// installed config, then asks it for its manifest.
pub fn authenticator<P: Authenticator>() -> Result<(P, Manifest), Error> {
    let plugin = P::new(config::<P::Config>()?)?;
    let manifest = plugin.manifest();
    Ok((plugin, manifest))
}

/// Builds authorizer `P` the way the server does at load.
pub fn authorizer<P: Authorizer>() -> Result<(P, Manifest), Error> {
    let plugin = P::new(config::<P::Config>()?)?;
    let manifest = plugin.manifest();
    Ok((plugin, manifest))
}

fn config<C: serde::de::DeserializeOwned>() -> Result<C, Error> {
    let text = crate::host::config_json();
    serde_json::from_str(&text).map_err(|e| Error::msg(format!("invalid plugin config: {e}")))
}

/// What [`crate::host`] calls in native builds.
pub(crate) mod backend {
    use super::*;

    fn with<T>(f: impl FnOnce(&mut TestHost) -> T) -> T {
        HOST.with(|h| f(&mut h.borrow_mut()))
    }

    fn live(host: &TestHost, key: &str) -> Option<Vec<u8>> {
        let (value, at) = host.kv.get(key)?;
        match at {
            Some(at) if *at <= SystemTime::now() => None,
            _ => Some(value.clone()),
        }
    }

    fn check(key: &str) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(format!("keys must be 1..={MAX_KEY} bytes"));
        }
        Ok(())
    }

    fn put(host: &mut TestHost, key: &str, value: &[u8], ttl: Option<Option<u32>>) {
        if value.is_empty() {
            host.kv.remove(key);
            return;
        }
        let at = match ttl {
            Some(ttl) => ttl.map(|s| SystemTime::now() + Duration::from_secs(s.into())),
            None => host.kv.get(key).and_then(|(_, at)| *at),
        };
        host.kv.insert(key.to_owned(), (value.to_vec(), at));
    }

    pub fn log(level: Level, message: &str) {
        with(|h| h.log.push((level, message.to_owned())));
    }

    pub fn config_json() -> String {
        with(|h| h.config.to_string())
    }

    pub fn secret(name: &str) -> Option<String> {
        with(|h| h.secrets.get(name).cloned())
    }

    pub fn kv_get(key: &str) -> Option<Vec<u8>> {
        with(|h| live(h, key))
    }

    pub fn kv_set(key: &str, value: &[u8], ttl: Option<u32>) -> Result<(), String> {
        check(key)?;
        with(|h| put(h, key, value, Some(ttl)));
        Ok(())
    }

    pub fn kv_compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl: Option<u32>,
    ) -> Result<bool, String> {
        check(key)?;
        Ok(with(|h| {
            if live(h, key).as_deref() != expected {
                return false;
            }
            put(h, key, new, Some(ttl));
            true
        }))
    }

    pub fn kv_increment(key: &str, delta: i64, ttl: Option<u32>) -> Result<i64, String> {
        check(key)?;
        with(|h| {
            let (current, ttl) = match live(h, key) {
                None => (0, Some(ttl)),
                Some(v) => (
                    std::str::from_utf8(&v)
                        .ok()
                        .and_then(|t| t.trim().parse::<i64>().ok())
                        .ok_or_else(|| format!("the value of {key:?} is not an integer"))?,
                    None,
                ),
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| format!("the counter {key:?} would overflow"))?;
            put(h, key, next.to_string().as_bytes(), ttl);
            Ok(next)
        })
    }
}
