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

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY: usize = 1024;

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
        let mut used = 0u64;
        for item in tree.iter() {
            let (k, v) = item.map_err(|e| format!("cannot read storage of {name:?}: {e}"))?;
            used += (k.len() + v.len()) as u64;
        }
        Ok(PluginKv {
            namespace: Namespace::Sled(SledNamespace {
                tree,
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

    /// Stores `value` under `key`; an empty value removes the key. Fails
    /// when the key is empty or too long, the namespace would exceed its
    /// cap, or the storage fails; `Ok` means durable.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(format!("keys must be 1..={MAX_KEY} bytes"));
        }
        match &self.namespace {
            Namespace::Sled(ns) => ns.set(key, value),
            Namespace::Postgres(ns) => ns.set(key, value),
        }
    }

    /// Bytes used (keys plus values).
    pub fn used_bytes(&self) -> u64 {
        match &self.namespace {
            Namespace::Sled(ns) => ns.used.load(Ordering::Relaxed),
            Namespace::Postgres(ns) => ns.used_bytes(),
        }
    }
}

/// One plugin's sled tree, with its size kept in memory.
#[derive(Debug)]
struct SledNamespace {
    tree: sled::Tree,
    max_bytes: u64,
    used: AtomicU64,
    /// Serialises writes so the size accounting stays exact.
    write: Mutex<()>,
}

impl SledNamespace {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.tree.get(key.as_bytes()) {
            Ok(v) => v.map(|v| v.to_vec()),
            Err(e) => {
                tracing::error!(error = %e, "plugin storage read failed");
                None
            }
        }
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self
            .tree
            .get(key.as_bytes())
            .map_err(|e| format!("storage read failed: {e}"))?;
        let old_size = old.map(|v| (key.len() + v.len()) as u64).unwrap_or(0);
        let used = self.used.load(Ordering::Relaxed);
        if value.is_empty() {
            self.tree
                .remove(key.as_bytes())
                .map_err(|e| format!("storage write failed: {e}"))?;
            self.used.store(used - old_size, Ordering::Relaxed);
            return self.flush();
        }
        let new_size = (key.len() + value.len()) as u64;
        let after = used - old_size + new_size;
        if after > self.max_bytes {
            return Err(format!(
                "storage full: {after} bytes would exceed this plugin's {} byte cap (\"kv_kb\" in agentflow.json)",
                self.max_bytes
            ));
        }
        self.tree
            .insert(key.as_bytes(), value)
            .map_err(|e| format!("storage write failed: {e}"))?;
        self.used.store(after, Ordering::Relaxed);
        self.flush()
    }

    /// Makes the write durable before the plugin goes on (a server killed
    /// right after must not forget it).
    fn flush(&self) -> Result<(), String> {
        self.tree
            .flush()
            .map(|_| ())
            .map_err(|e| format!("storage flush failed: {e}"))
    }
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
            a.set("k", b"from a").unwrap();
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
        kv.set("k", b"123456789").unwrap();
        let e = kv.set("j", b"1").unwrap_err();
        assert!(e.contains("storage full"), "{e}");
        // Overwriting counts the new size only.
        kv.set("k", b"12345").unwrap();
        kv.set("j", b"1").unwrap();
        kv.set("k", b"").unwrap();
        assert_eq!(kv.get("k"), None);
        assert_eq!(kv.used_bytes(), 2);
    }

    #[test]
    fn refuses_empty_and_long_keys() {
        let kv = KvStore::temporary()
            .unwrap()
            .namespace("p", 1 << 20)
            .unwrap();
        assert!(kv.set("", b"v").is_err());
        assert!(kv.set(&"k".repeat(MAX_KEY + 1), b"v").is_err());
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
