//! Plugin-private key-value storage behind `host.kv-get`/`host.kv-set`,
//! persisted in sled, or in PostgreSQL when the server runs on a database
//! (`kv_pg`, shared by every instance).
//!
//! One sled database per server at `<data dir>/plugins-kv`, where the data
//! dir is `AGENTFLOW_DATA_DIR` (relative paths resolve against the config
//! file's folder) or `./data` beside `agentflow.json`. Each plugin gets its
//! own tree, `plugin:<name>`, so plugins never see each other's keys; the
//! tree survives reloads (same name) and restarts. Every tree has a size
//! cap (keys plus values, in bytes) enforced on every write.
//!
//! Keys may expire (contract 0.3): the expiry of a key lives in a second
//! tree, `plugin-exp:<name>`, as unix milliseconds, so values stay exactly
//! the bytes a plugin stored (0.2 plugins read the same store). An expired
//! key reads as absent and its space is reclaimed when the store is full.
//! Compare-and-swap and increment run under the namespace's write lock, so
//! they are atomic against every other write of this server.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY: usize = 1024;

/// Keys with their values, as [`PluginKv::entries`] lists them.
pub type KvEntries = Vec<(Vec<u8>, Vec<u8>)>;

use super::kv_pg::{PgKvStore, PgNamespace};

/// The database holding every plugin's store.
#[derive(Clone)]
pub struct KvStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sled(sled::Db),
    Postgres(PgKvStore),
}

impl KvStore {
    /// Opens (or creates) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<KvStore, String> {
        let path = data_dir.join("plugins-kv");
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let db = sled::open(&path)
            .map_err(|e| format!("cannot open plugin storage at {}: {e}", path.display()))?;
        Ok(KvStore {
            backend: Backend::Sled(db),
        })
    }

    /// The store in the PostgreSQL database every instance shares.
    pub fn postgres(settings: &crate::store::DatabaseSettings) -> Result<KvStore, String> {
        Ok(KvStore {
            backend: Backend::Postgres(PgKvStore::connect(settings)?),
        })
    }

    /// A throw-away store, gone when dropped (for `agentflow plugin call`).
    pub fn temporary() -> Result<KvStore, String> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| format!("cannot open temporary storage: {e}"))?;
        Ok(KvStore {
            backend: Backend::Sled(db),
        })
    }

    /// The private namespace of plugin `name`, capped at `max_bytes`.
    pub fn namespace(&self, name: &str, max_bytes: u64) -> Result<PluginKv, String> {
        let db = match &self.backend {
            Backend::Sled(db) => db,
            Backend::Postgres(pg) => {
                return Ok(PluginKv {
                    namespace: Namespace::Postgres(pg.namespace(name, max_bytes)),
                });
            }
        };
        let tree = db
            .open_tree(format!("plugin:{name}"))
            .map_err(|e| format!("cannot open storage of {name:?}: {e}"))?;
        let expiry = db
            .open_tree(format!("plugin-exp:{name}"))
            .map_err(|e| format!("cannot open storage of {name:?}: {e}"))?;
        let mut used = 0u64;
        for item in tree.iter() {
            let (k, v) = item.map_err(|e| format!("cannot read storage of {name:?}: {e}"))?;
            used += (k.len() + v.len()) as u64;
        }
        Ok(PluginKv {
            namespace: Namespace::Sled(SledNamespace {
                tree,
                expiry,
                max_bytes,
                used: AtomicU64::new(used),
                write: Mutex::new(()),
            }),
        })
    }
}

/// One plugin's namespace: what `kv-get`/`kv-set` reach.
#[derive(Debug)]
pub struct PluginKv {
    namespace: Namespace,
}

#[derive(Debug)]
enum Namespace {
    Sled(SledNamespace),
    Postgres(PgNamespace),
}

impl PluginKv {
    /// The value stored under `key`, if any (a storage failure is logged
    /// and reads as absent).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match &self.namespace {
            Namespace::Sled(ns) => ns.get(key),
            Namespace::Postgres(ns) => ns.get(key).unwrap_or_else(|e| {
                tracing::error!(error = %e, "plugin storage read failed");
                None
            }),
        }
    }

    /// Stores `value` under `key`; an empty value removes the key. With
    /// `expires_in_s` the key reads as absent after that many seconds.
    /// Fails when the key is empty or too long, the namespace would exceed
    /// its cap, or the storage fails; `Ok` means durable.
    pub fn set(&self, key: &str, value: &[u8], expires_in_s: Option<u32>) -> Result<(), String> {
        check_key(key)?;
        match &self.namespace {
            Namespace::Sled(ns) => ns.set(key, value, expires_in_s),
            Namespace::Postgres(ns) => ns.set(key, value, expires_in_s),
        }
    }

    /// Replaces the value of `key` with `new` if it currently is
    /// `expected` (`None`: absent or expired); says whether it did.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        expires_in_s: Option<u32>,
    ) -> Result<bool, String> {
        check_key(key)?;
        match &self.namespace {
            Namespace::Sled(ns) => ns.compare_and_swap(key, expected, new, expires_in_s),
            Namespace::Postgres(ns) => ns.compare_and_swap(key, expected, new, expires_in_s),
        }
    }

    /// Adds `delta` to the decimal counter at `key` (absent counts as 0)
    /// and returns the new value; `expires_in_s` applies when the counter
    /// is created.
    pub fn increment(
        &self,
        key: &str,
        delta: i64,
        expires_in_s: Option<u32>,
    ) -> Result<i64, String> {
        check_key(key)?;
        match &self.namespace {
            Namespace::Sled(ns) => ns.increment(key, delta, expires_in_s),
            Namespace::Postgres(ns) => ns.increment(key, delta, expires_in_s),
        }
    }

    /// Every live (not expired) key with its value, in key order: what
    /// `agentflow plugin call` shows after a call.
    pub fn entries(&self) -> Result<KvEntries, String> {
        match &self.namespace {
            Namespace::Sled(ns) => {
                let mut out = Vec::new();
                for item in ns.tree.iter() {
                    let (key, _) = item.map_err(|e| format!("storage read failed: {e}"))?;
                    let live = std::str::from_utf8(&key)
                        .map_err(|e| e.to_string())
                        .and_then(|k| ns.live(k))?;
                    if let Some(value) = live {
                        out.push((key.to_vec(), value));
                    }
                }
                Ok(out)
            }
            Namespace::Postgres(ns) => ns.entries(),
        }
    }

    /// Bytes used (keys plus values, expired ones until reclaimed).
    pub fn used_bytes(&self) -> u64 {
        match &self.namespace {
            Namespace::Sled(ns) => ns.used_bytes(),
            Namespace::Postgres(ns) => ns.used_bytes(),
        }
    }
}

/// One plugin's sled tree, with its size kept in memory.
#[derive(Debug)]
struct SledNamespace {
    tree: sled::Tree,
    /// Key -> unix milliseconds after which it reads as absent.
    expiry: sled::Tree,
    max_bytes: u64,
    used: AtomicU64,
    /// Serialises writes so the size accounting stays exact.
    write: Mutex<()>,
}

/// What a write does to a key's expiry.
#[derive(Clone, Copy)]
enum Expiry {
    /// Leave it as it is (an increment of an existing counter).
    Keep,
    /// Expire this many seconds from now, or never.
    Set(Option<u32>),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SledNamespace {
    /// The value stored under `key`, if any and not expired.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.live(key) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "plugin storage read failed");
                None
            }
        }
    }

    /// The value of `key` unless it has expired.
    fn live(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let read = |e: sled::Error| format!("storage read failed: {e}");
        let Some(value) = self.tree.get(key.as_bytes()).map_err(read)? else {
            return Ok(None);
        };
        if let Some(at) = self.expiry.get(key.as_bytes()).map_err(read)?
            && at.len() == 8
            && u64::from_be_bytes(at.as_ref().try_into().unwrap_or([0; 8])) <= now_ms()
        {
            return Ok(None);
        }
        Ok(Some(value.to_vec()))
    }

    /// Stores `value` under `key`; an empty value removes the key. With
    /// `expires_in_s` the key reads as absent after that many seconds.
    /// Fails when the key is empty or too long, or the namespace would
    /// exceed its cap.
    fn set(&self, key: &str, value: &[u8], expires_in_s: Option<u32>) -> Result<(), String> {
        check_key(key)?;
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        self.write_locked(key, value, Expiry::Set(expires_in_s))
    }

    /// Replaces the value of `key` with `new` if it currently is
    /// `expected` (`None`: absent or expired); says whether it did.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        expires_in_s: Option<u32>,
    ) -> Result<bool, String> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if self.live(key)?.as_deref() != expected {
            return Ok(false);
        }
        self.write_locked(key, new, Expiry::Set(expires_in_s))?;
        Ok(true)
    }

    /// Adds `delta` to the decimal counter at `key` (absent counts as 0)
    /// and returns the new value; `expires_in_s` applies when the counter
    /// is created.
    fn increment(&self, key: &str, delta: i64, expires_in_s: Option<u32>) -> Result<i64, String> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let (current, expiry) = match self.live(key)? {
            None => (0, Expiry::Set(expires_in_s)),
            Some(v) => {
                let n = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .ok_or_else(|| format!("the value of {key:?} is not an integer"))?;
                (n, Expiry::Keep)
            }
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| format!("the counter {key:?} would overflow"))?;
        self.write_locked(key, next.to_string().as_bytes(), expiry)?;
        Ok(next)
    }

    /// A write under the lock: size accounting, expiry, durability. When
    /// the cap would be exceeded, expired keys are reclaimed first.
    fn write_locked(&self, key: &str, value: &[u8], expiry: Expiry) -> Result<(), String> {
        let write = |e: sled::Error| format!("storage write failed: {e}");
        let old = self
            .tree
            .get(key.as_bytes())
            .map_err(|e| format!("storage read failed: {e}"))?;
        let old_size = old.map(|v| (key.len() + v.len()) as u64).unwrap_or(0);
        if value.is_empty() {
            self.tree.remove(key.as_bytes()).map_err(write)?;
            self.expiry.remove(key.as_bytes()).map_err(write)?;
            self.used.fetch_sub(old_size, Ordering::Relaxed);
            return self.flush();
        }
        let new_size = (key.len() + value.len()) as u64;
        let mut after = self.used.load(Ordering::Relaxed) - old_size + new_size;
        if after > self.max_bytes {
            self.purge_expired(key)?;
            after = self.used.load(Ordering::Relaxed) - old_size + new_size;
        }
        if after > self.max_bytes {
            return Err(format!(
                "storage full: {after} bytes would exceed this plugin's {} byte cap (\"kv_kb\" in agentflow.json)",
                self.max_bytes
            ));
        }
        self.tree.insert(key.as_bytes(), value).map_err(write)?;
        match expiry {
            Expiry::Keep => {}
            Expiry::Set(None) => {
                self.expiry.remove(key.as_bytes()).map_err(write)?;
            }
            Expiry::Set(Some(s)) => {
                let at = now_ms() + u64::from(s) * 1000;
                self.expiry
                    .insert(key.as_bytes(), &at.to_be_bytes())
                    .map_err(write)?;
            }
        }
        self.used.store(after, Ordering::Relaxed);
        self.flush()
    }

    /// Removes every expired key but `keep` (the one being written, whose
    /// size the caller already counts).
    fn purge_expired(&self, keep: &str) -> Result<(), String> {
        let now = now_ms();
        for item in self.expiry.iter() {
            let (k, at) = item.map_err(|e| format!("storage read failed: {e}"))?;
            let at = u64::from_be_bytes(at.as_ref().try_into().unwrap_or([0; 8]));
            if at > now || k.as_ref() == keep.as_bytes() {
                continue;
            }
            let write = |e: sled::Error| format!("storage write failed: {e}");
            if let Some(v) = self.tree.remove(&k).map_err(write)? {
                self.used
                    .fetch_sub((k.len() + v.len()) as u64, Ordering::Relaxed);
            }
            self.expiry.remove(&k).map_err(write)?;
        }
        Ok(())
    }

    /// Makes the write durable before the plugin goes on (a server killed
    /// right after must not forget it).
    fn flush(&self) -> Result<(), String> {
        self.tree
            .flush()
            .map(|_| ())
            .map_err(|e| format!("storage flush failed: {e}"))
    }

    /// Bytes used (keys plus values, expired ones until reclaimed).
    fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!("keys must be 1..={MAX_KEY} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use std::path::PathBuf;

    #[test]
    fn namespaces_are_private_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = KvStore::open(dir.path()).unwrap();
            let a = store.namespace("a", 1024).unwrap();
            let b = store.namespace("b", 1024).unwrap();
            a.set("k", b"from a", None).unwrap();
            assert_eq!(a.get("k").as_deref(), Some(&b"from a"[..]));
            assert_eq!(b.get("k"), None);
        }
        let store = KvStore::open(dir.path()).unwrap();
        let a = store.namespace("a", 1024).unwrap();
        assert_eq!(a.get("k").as_deref(), Some(&b"from a"[..]));
        assert_eq!(a.used_bytes(), 7);
    }

    #[test]
    fn refuses_writes_past_the_cap_and_frees_space_on_removal() {
        let store = KvStore::temporary().unwrap();
        let kv = store.namespace("p", 10).unwrap();
        kv.set("k", b"123456789", None).unwrap();
        let e = kv.set("j", b"1", None).unwrap_err();
        assert!(e.contains("storage full"), "{e}");
        // Overwriting counts the new size only.
        kv.set("k", b"12345", None).unwrap();
        kv.set("j", b"1", None).unwrap();
        kv.set("k", b"", None).unwrap();
        assert_eq!(kv.get("k"), None);
        assert_eq!(kv.used_bytes(), 2);
    }

    #[test]
    fn compare_and_swap_and_increment_are_atomic_and_keys_expire() {
        let kv = KvStore::temporary().unwrap();
        atomic_operations(std::sync::Arc::new(kv.namespace("p", 1 << 20).unwrap()));
    }

    /// The same operations on PostgreSQL (shared by every instance): the
    /// plugin's advisory lock makes them atomic there.
    #[test]
    fn compare_and_swap_and_increment_are_atomic_and_keys_expire_on_postgres() {
        let url = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::store::pg_test::fresh_url());
        let kv = KvStore::postgres(&crate::store::DatabaseSettings::for_url(&url)).unwrap();
        atomic_operations(std::sync::Arc::new(kv.namespace("p", 1 << 20).unwrap()));
    }

    fn atomic_operations(kv: std::sync::Arc<PluginKv>) {
        assert!(kv.compare_and_swap("k", None, b"1", None).unwrap());
        assert!(!kv.compare_and_swap("k", None, b"2", None).unwrap());
        assert!(!kv.compare_and_swap("k", Some(b"9"), b"2", None).unwrap());
        assert!(kv.compare_and_swap("k", Some(b"1"), b"2", None).unwrap());
        assert_eq!(kv.get("k").as_deref(), Some(&b"2"[..]));
        // 40 threads, 25 increments each: no update is lost.
        let threads: Vec<_> = (0..40)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        kv.increment("n", 1, None).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(kv.get("n").as_deref(), Some(&b"1000"[..]));
        assert!(kv.increment("k2", 1, None).is_ok());
        kv.set("text", b"abc", None).unwrap();
        assert!(
            kv.increment("text", 1, None)
                .unwrap_err()
                .contains("not an integer")
        );
        // An expired key reads as absent, and a counter restarts its window.
        kv.set("gone", b"v", Some(0)).unwrap();
        assert_eq!(kv.get("gone"), None);
        assert!(kv.compare_and_swap("gone", None, b"w", Some(60)).unwrap());
        assert_eq!(kv.get("gone").as_deref(), Some(&b"w"[..]));
        assert_eq!(kv.increment("w", 5, Some(0)).unwrap(), 5);
        assert_eq!(kv.increment("w", 1, Some(60)).unwrap(), 1);
    }

    #[test]
    fn expired_keys_are_reclaimed_when_the_store_is_full() {
        let kv = KvStore::temporary().unwrap().namespace("p", 10).unwrap();
        kv.set("a", b"12345678", Some(0)).unwrap();
        kv.set("b", b"12345678", None).unwrap();
        assert_eq!(kv.used_bytes(), 9);
    }

    #[test]
    fn refuses_empty_and_long_keys() {
        let kv = KvStore::temporary()
            .unwrap()
            .namespace("p", 1 << 20)
            .unwrap();
        assert!(kv.set("", b"v", None).is_err());
        assert!(kv.set(&"k".repeat(MAX_KEY + 1), b"v", None).is_err());
    }

    #[test]
    fn data_dir_defaults_beside_the_config() {
        let dir = crate::config::data_dir(&Env::from_pairs([]), Path::new("/etc/af"));
        if std::env::var_os("AGENTFLOW_DATA_DIR").is_none() {
            assert_eq!(dir, PathBuf::from("/etc/af/data"));
        }
        let dir = crate::config::data_dir(
            &Env::from_pairs([("AGENTFLOW_DATA_DIR".into(), "/var/lib/af".into())]),
            Path::new("/etc/af"),
        );
        if std::env::var_os("AGENTFLOW_DATA_DIR").is_none() {
            assert_eq!(dir, PathBuf::from("/var/lib/af"));
        }
    }
}
