//! Plugin key-value storage in PostgreSQL (table `plugin_kv`), so every
//! instance sees one store per plugin. Plugins call `kv-get`/`kv-set`
//! synchronously, so the queries run on a small runtime of their own and
//! the caller waits for the answer (as it waits for sled's disk): the
//! server's own worker threads are never needed to finish a kv call.
//!
//! The size cap holds across instances: a write takes the plugin's advisory
//! lock for its transaction, then sums the namespace and writes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::store::pg_store::{build_pool, connect_and_migrate, db_error, pool_error};
use crate::store::{DatabaseSettings, unix_now};

/// The runtime and pool plugin storage queries run on.
struct Bridge {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    timeout: Duration,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; let it go quietly.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Bridge {
    /// Runs `work` on the storage runtime and waits for it (at most the
    /// statement timeout).
    fn run<T, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, String>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err("plugin storage is shut down".into());
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        let work = work(self.pool.clone());
        runtime.spawn(async move {
            let result = tokio::time::timeout(timeout, work)
                .await
                .unwrap_or_else(|_| Err("plugin storage did not answer in time".into()));
            let _ = tx.send(result);
        });
        let wait = move || {
            rx.recv_timeout(timeout + Duration::from_secs(1))
                .unwrap_or_else(|_| Err("plugin storage did not answer in time".into()))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

/// Plugin storage on a PostgreSQL database.
#[derive(Clone)]
pub struct PgKvStore {
    bridge: Arc<Bridge>,
}

impl PgKvStore {
    /// Connects and applies the schema; fails if the database is unreachable.
    pub fn connect(settings: &DatabaseSettings) -> Result<PgKvStore, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("agentflow-kv")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the plugin storage runtime: {e}"))?;
        let pool = {
            let _inside = runtime.enter();
            build_pool(settings).map_err(|e| e.to_string())?
        };
        let bridge = Bridge {
            runtime: Some(runtime),
            pool,
            timeout: settings.statement_timeout,
        };
        bridge
            .run(|pool| async move { connect_and_migrate(&pool).await.map_err(|e| e.to_string()) })
            .map_err(|e| {
                format!(
                    "cannot open plugin storage at {}: {e}",
                    settings.masked_url()
                )
            })?;
        Ok(PgKvStore {
            bridge: Arc::new(bridge),
        })
    }

    /// The namespace of plugin `name`, capped at `max_bytes`.
    pub fn namespace(&self, name: &str, max_bytes: u64) -> PgNamespace {
        PgNamespace {
            bridge: self.bridge.clone(),
            plugin: Arc::from(name),
            max_bytes,
        }
    }
}

/// One plugin's rows of `plugin_kv`.
pub struct PgNamespace {
    bridge: Arc<Bridge>,
    plugin: Arc<str>,
    max_bytes: u64,
}

impl std::fmt::Debug for PgNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgNamespace")
            .field("plugin", &self.plugin)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// A write operation (see [`PgNamespace::write`]).
enum Op {
    /// Store this value (empty: remove), expiring after so many seconds.
    Set(Vec<u8>, Option<u32>),
    /// Store the new value if the current one is the expected one.
    Swap(Option<Vec<u8>>, Vec<u8>, Option<u32>),
    /// Add to a decimal counter; the expiry applies when it is created.
    Add(i64, Option<u32>),
}

/// What a write did.
enum Done {
    /// The value was stored.
    Written,
    /// Whether a compare-and-swap stored its value.
    Swapped(bool),
    /// The counter's new value.
    Counted(i64),
}

fn failed(e: impl std::fmt::Display) -> String {
    format!("storage unavailable: {e}")
}

impl PgNamespace {
    /// The value under `key`, if any and not expired.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let (plugin, key) = (self.plugin.clone(), key.as_bytes().to_vec());
        self.bridge.run(move |pool| async move {
            let c = pool.get().await.map_err(|e| failed(pool_error(e)))?;
            let row = c
                .query_opt(
                    "SELECT value FROM plugin_kv WHERE plugin = $1 AND key = $2 \
                     AND (expires_at IS NULL OR expires_at > $3)",
                    &[&&*plugin, &key, &(unix_now() as i64)],
                )
                .await
                .map_err(|e| failed(db_error(e)))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    /// Every live (not expired) key and its value, in key order.
    pub fn entries(&self) -> Result<super::kv::KvEntries, String> {
        let plugin = self.plugin.clone();
        self.bridge.run(move |pool| async move {
            let c = pool.get().await.map_err(|e| failed(pool_error(e)))?;
            let rows = c
                .query(
                    "SELECT key, value FROM plugin_kv WHERE plugin = $1 \
                     AND (expires_at IS NULL OR expires_at > $2) ORDER BY key",
                    &[&&*plugin, &(unix_now() as i64)],
                )
                .await
                .map_err(|e| failed(db_error(e)))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Stores `value` under `key` (empty: removes it) unless the namespace
    /// would exceed its cap; with `expires_in_s` the key reads as absent
    /// after that many seconds. Durable (committed) when it returns `Ok`.
    pub fn set(&self, key: &str, value: &[u8], expires_in_s: Option<u32>) -> Result<(), String> {
        self.write(key, Op::Set(value.to_vec(), expires_in_s))
            .map(|_| ())
    }

    /// Replaces the value of `key` with `new` if it currently is `expected`
    /// (`None`: absent or expired); says whether it did. Atomic across
    /// instances (the plugin's advisory lock).
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        expires_in_s: Option<u32>,
    ) -> Result<bool, String> {
        let op = Op::Swap(expected.map(<[u8]>::to_vec), new.to_vec(), expires_in_s);
        self.write(key, op)
            .map(|done| matches!(done, Done::Swapped(true)))
    }

    /// Adds `delta` to the decimal counter at `key` (absent counts as 0) and
    /// returns the new value; `expires_in_s` applies when it is created.
    pub fn increment(
        &self,
        key: &str,
        delta: i64,
        expires_in_s: Option<u32>,
    ) -> Result<i64, String> {
        match self.write(key, Op::Add(delta, expires_in_s))? {
            Done::Counted(n) => Ok(n),
            _ => Err("plugin storage returned no counter".into()),
        }
    }

    /// One write in one transaction under the plugin's advisory lock:
    /// expired rows go first (they free space), then the current value is
    /// read, the operation decides the new one, and the cap is checked.
    fn write(&self, key: &str, op: Op) -> Result<Done, String> {
        let (plugin, key) = (self.plugin.clone(), key.as_bytes().to_vec());
        let max_bytes = self.max_bytes;
        self.bridge.run(move |pool| async move {
            let mut c = pool.get().await.map_err(|e| failed(pool_error(e)))?;
            let tx = c.transaction().await.map_err(|e| failed(db_error(e)))?;
            let plugin = &*plugin;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('agentflow_kv:' || $1, 0))",
                &[&plugin],
            )
            .await
            .map_err(|e| failed(db_error(e)))?;
            let now = unix_now() as i64;
            tx.execute(
                "DELETE FROM plugin_kv WHERE plugin = $1 AND expires_at <= $2",
                &[&plugin, &now],
            )
            .await
            .map_err(|e| failed(db_error(e)))?;
            let current: Option<Vec<u8>> = tx
                .query_opt(
                    "SELECT value FROM plugin_kv WHERE plugin = $1 AND key = $2",
                    &[&plugin, &key],
                )
                .await
                .map_err(|e| failed(db_error(e)))?
                .map(|r| r.get(0));
            let expires = |s: Option<u32>| s.map(|s| now + i64::from(s));
            // (new value, new expiry; None = keep the row's), and the answer.
            let (value, expiry, done) = match op {
                Op::Set(value, s) => (value, Some(expires(s)), Done::Written),
                Op::Swap(expected, new, s) => {
                    if current != expected {
                        return Ok(Done::Swapped(false));
                    }
                    (new, Some(expires(s)), Done::Swapped(true))
                }
                Op::Add(delta, s) => {
                    let (n, expiry) = match &current {
                        None => (0, Some(expires(s))),
                        Some(v) => {
                            let n = std::str::from_utf8(v)
                                .ok()
                                .and_then(|t| t.trim().parse::<i64>().ok())
                                .ok_or_else(|| {
                                    format!("the value of {:?} is not an integer", String::from_utf8_lossy(&key))
                                })?;
                            (n, None)
                        }
                    };
                    let next = n.checked_add(delta).ok_or_else(|| {
                        format!("the counter {:?} would overflow", String::from_utf8_lossy(&key))
                    })?;
                    (next.to_string().into_bytes(), expiry, Done::Counted(next))
                }
            };
            if value.is_empty() {
                tx.execute(
                    "DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2",
                    &[&plugin, &key],
                )
                .await
                .map_err(|e| failed(db_error(e)))?;
            } else {
                let row = tx
                    .query_one(
                        "SELECT COALESCE(SUM(octet_length(key) + octet_length(value)) \
                         FILTER (WHERE key <> $2), 0)::BIGINT FROM plugin_kv WHERE plugin = $1",
                        &[&plugin, &key],
                    )
                    .await
                    .map_err(|e| failed(db_error(e)))?;
                let others: i64 = row.get(0);
                let after = others as u64 + (key.len() + value.len()) as u64;
                if after > max_bytes {
                    return Err(format!(
                        "storage full: {after} bytes would exceed this plugin's {max_bytes} byte cap (\"kv_kb\" in agentflow.json)"
                    ));
                }
                match expiry {
                    Some(at) => {
                        tx.execute(
                            "INSERT INTO plugin_kv (plugin, key, value, expires_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (plugin, key) DO UPDATE SET value = $3, expires_at = $4",
                            &[&plugin, &key, &value, &at],
                        )
                        .await
                    }
                    None => {
                        tx.execute(
                            "UPDATE plugin_kv SET value = $3 WHERE plugin = $1 AND key = $2",
                            &[&plugin, &key, &value],
                        )
                        .await
                    }
                }
                .map_err(|e| failed(db_error(e)))?;
            }
            tx.commit().await.map_err(|e| failed(db_error(e)))?;
            Ok(done)
        })
    }

    /// Bytes used (keys plus values), or 0 if the database cannot say.
    pub fn used_bytes(&self) -> u64 {
        let plugin = self.plugin.clone();
        self.bridge
            .run(move |pool| async move {
                let c = pool.get().await.map_err(|e| failed(pool_error(e)))?;
                let row = c
                    .query_one(
                        "SELECT COALESCE(SUM(octet_length(key) + octet_length(value)), 0)::BIGINT \
                         FROM plugin_kv WHERE plugin = $1",
                        &[&&*plugin],
                    )
                    .await
                    .map_err(|e| failed(db_error(e)))?;
                Ok(row.get::<_, i64>(0) as u64)
            })
            .unwrap_or(0)
    }
}
