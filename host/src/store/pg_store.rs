//! The PostgreSQL implementation of [`Store`], for several instances on one
//! database: every rule that sled enforces inside one process (single-use
//! refresh tokens, atomic lockout counting, unique names) is a conditional
//! statement or a row-locking transaction here, so it holds across
//! instances. Reads that authenticate requests are cached (see `cache`).
//!
//! The driver is `tokio-postgres` with a `deadpool-postgres` pool. An
//! unreachable database, an exhausted pool or a statement past its timeout
//! is [`StoreError::Unavailable`] (503 `store_unavailable`); the pool drops
//! broken connections and opens new ones, so the store recovers by itself.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::*;

mod accounts;
mod audit;
pub mod cache;
mod failures;
mod import;
mod ownership;
pub mod schema;
#[cfg(test)]
mod tests;

use cache::Cache;
pub use import::ImportCounts;

/// A [`Store`] on a PostgreSQL database. Cloning shares the pool and cache.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    cache: Arc<Cache>,
    statement_timeout: Duration,
    /// `(key id, second)` of API-key uses already written, so a key used
    /// many times a second is written once a second.
    touched: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// Maps a driver error: no SQLSTATE (connection lost, I/O) or a
/// connection/shutdown class is `Unavailable`; the rest is `Storage`.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.code().map(|c| c.code()) {
        None => StoreError::Unavailable(format!("the database is unreachable: {e}")),
        Some(code) if code.starts_with("08") || code.starts_with("57P") || code == "53300" => {
            StoreError::Unavailable(format!("the database refused the work: {e}"))
        }
        Some(_) => StoreError::Storage(match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        }),
    }
}

/// The SQLSTATE of a driver error, if the server sent one.
fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

fn valid(id: &str) -> StoreResult<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// Text PostgreSQL cannot hold (`\0`) names nothing stored.
fn storable(text: &str) -> StoreResult<()> {
    if text.contains('\0') {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// Unix seconds as a `BIGINT` (saturating).
fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A `BIGINT` back to unix seconds (negative: 0).
fn unsecs(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

/// Builds the driver's config: the URL plus the settings' timeouts.
fn driver_config(settings: &DatabaseSettings) -> StoreResult<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = settings
        .url
        .parse()
        .map_err(|e| StoreError::Storage(format!("{}: {e}", settings.masked_url())))?;
    config
        .connect_timeout(settings.connect_timeout)
        .keepalives_idle(Duration::from_secs(10));
    if config.get_application_name().is_none() {
        config.application_name("agentflow");
    }
    Ok(config)
}

/// A pool of connections per the settings.
pub(crate) fn build_pool(settings: &DatabaseSettings) -> StoreResult<Pool> {
    let manager = Manager::from_config(
        driver_config(settings)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Storage(format!("cannot build the connection pool: {e}")))
}

/// Opens one connection from `pool` and applies the migrations.
pub(crate) async fn connect_and_migrate(pool: &Pool) -> StoreResult<()> {
    let mut client = pool.get().await.map_err(pool_error)?;
    schema::migrate(&mut client).await
}

impl PgStore {
    /// Connects, applies the migrations and starts listening for other
    /// instances' changes. Fails (`Unavailable`) if the database cannot be
    /// reached now.
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<PgStore> {
        let pool = build_pool(settings)?;
        connect_and_migrate(&pool).await?;
        let cache = Arc::new(Cache::new(settings.cache_ttl));
        let listener = tokio::spawn(listen(driver_config(settings)?, cache.clone()));
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                cache,
                statement_timeout: settings.statement_timeout,
                touched: Default::default(),
                listener,
            }),
        })
    }

    /// Whether this instance receives other instances' invalidations (the
    /// cache is bypassed while it does not).
    pub fn is_listening(&self) -> bool {
        self.inner.cache.is_live()
    }

    fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// Runs `work` with a pooled connection, within the statement timeout.
    async fn with<T, F, Fut>(&self, work: F) -> StoreResult<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let run = async {
            let client = self.inner.pool.get().await.map_err(pool_error)?;
            work(client).await
        };
        self.in_time(run).await
    }

    /// Like [`with`](Self::with) for `work` that is one transaction: when
    /// the database rolls it back to break a deadlock or a serialization
    /// conflict with a concurrent one (logins of one account on several
    /// instances, say), it is run again, so such races never reach a client
    /// as an error. Only for a single transaction: a rolled-back one left
    /// nothing behind, so running it again is safe.
    async fn with_transaction<T, F, Fut>(&self, work: F) -> StoreResult<T>
    where
        F: Fn(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let run = async {
            let mut attempt = 0u32;
            loop {
                let client = self.inner.pool.get().await.map_err(pool_error)?;
                match work(client).await {
                    Err(e) if is_transient(&e) && attempt < TRANSIENT_RETRIES => {
                        attempt += 1;
                        // A short, growing pause lets the winner commit first.
                        tokio::time::sleep(Duration::from_millis(2u64 << attempt)).await;
                    }
                    result => return result,
                }
            }
        };
        self.in_time(run).await
    }

    /// `run`, or `Unavailable` once the statement timeout has passed.
    async fn in_time<T>(&self, run: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(self.inner.statement_timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(
                "the database did not answer in time".into(),
            )),
        }
    }
}

/// How often work rolled back by a transient conflict is run again.
const TRANSIENT_RETRIES: u32 = 5;

/// Whether `e` is a conflict the database resolved by rolling the work back
/// (`40P01` deadlock detected, `40001` serialization failure), so running it
/// again is safe. [`db_error`] keeps the SQLSTATE at the start of the text.
fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Storage(m) if m.starts_with("40P01:") || m.starts_with("40001:"))
}

/// Keeps one connection listening on the cache channel, reconnecting every
/// second while the database is away; the cache is only used while it is up.
async fn listen(config: tokio_postgres::Config, cache: Arc<Cache>) {
    let mut warned = false;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        std::pin::pin!(futures_util::stream::poll_fn(
                            move |cx| connection.poll_message(cx)
                        ));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_owned()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                let listening = format!("LISTEN {}", schema::CACHE_CHANNEL);
                if client.batch_execute(&listening).await.is_ok() {
                    if warned {
                        tracing::info!("database reachable again: cache invalidations resumed");
                        warned = false;
                    }
                    cache.set_live(true);
                    while let Some(payload) = rx.recv().await {
                        cache.invalidate(&payload);
                    }
                    cache.set_live(false);
                }
                driver.abort();
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot listen for cache invalidations; caching is off until the database is back");
                    warned = true;
                }
            }
        }
        cache.set_live(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Store for PgStore {
    async fn create_user(&self, new: NewUser, now: u64) -> StoreResult<User> {
        self.create_user_sql(new, now).await
    }

    async fn get_user(&self, id: &str) -> StoreResult<User> {
        self.get_user_sql(id).await
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<User> {
        self.get_user_by_username_sql(username).await
    }

    async fn update_user(&self, id: &str, update: UserUpdate, now: u64) -> StoreResult<User> {
        self.update_user_sql(id, update, now).await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<()> {
        self.delete_user_sql(id).await
    }

    async fn list_users(&self, offset: u64, limit: u64) -> StoreResult<Page<User>> {
        self.list_users_sql(offset, limit).await
    }

    async fn create_api_key(&self, new: NewApiKey, now: u64) -> StoreResult<ApiKey> {
        self.create_api_key_sql(new, now).await
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<ApiKey> {
        self.get_api_key_sql(id).await
    }

    async fn get_api_key_by_hash(&self, hash: &str) -> StoreResult<ApiKey> {
        self.get_api_key_by_hash_sql(hash).await
    }

    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        self.list_api_keys_sql(user_id).await
    }

    async fn touch_api_key(&self, id: &str, now: u64) -> StoreResult<bool> {
        self.touch_api_key_sql(id, now).await
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<()> {
        self.delete_api_key_sql(id).await
    }

    async fn create_family(
        &self,
        user_id: &str,
        jti: &str,
        now: u64,
    ) -> StoreResult<RefreshFamily> {
        self.create_family_sql(user_id, jti, now).await
    }

    async fn get_family(&self, id: &str) -> StoreResult<RefreshFamily> {
        self.get_family_sql(id).await
    }

    async fn rotate_family(
        &self,
        id: &str,
        presented: &str,
        new: &str,
    ) -> StoreResult<RotateOutcome> {
        self.rotate_family_sql(id, presented, new).await
    }

    async fn revoke_family(&self, id: &str) -> StoreResult<()> {
        self.revoke_family_sql(id).await
    }

    async fn revoke_user_families(&self, user_id: &str) -> StoreResult<u64> {
        self.revoke_user_families_sql(user_id).await
    }

    async fn create_variable(&self, new: NewVariable, now: u64) -> StoreResult<Variable> {
        self.create_variable_sql(new, now).await
    }

    async fn get_variable(&self, id: &str) -> StoreResult<Variable> {
        self.get_variable_sql(id).await
    }

    async fn get_variable_by_name(&self, user_id: &str, name: &str) -> StoreResult<Variable> {
        self.get_variable_by_name_sql(user_id, name).await
    }

    async fn update_variable(
        &self,
        id: &str,
        kind: VariableKind,
        value_encrypted: String,
        now: u64,
    ) -> StoreResult<Variable> {
        self.update_variable_sql(id, kind, value_encrypted, now)
            .await
    }

    async fn delete_variable(&self, id: &str) -> StoreResult<()> {
        self.delete_variable_sql(id).await
    }

    async fn list_variables(&self, user_id: &str) -> StoreResult<Vec<Variable>> {
        self.list_variables_sql(user_id).await
    }

    async fn reencrypt_variables<F, E>(&self, f: F) -> StoreResult<u64>
    where
        F: FnMut(&str) -> Result<String, E> + Send,
        E: fmt::Display,
    {
        self.reencrypt_variables_sql(f).await
    }

    async fn begin_login_attempt(
        &self,
        keys: &AttemptKeys,
        now: u64,
        policy: LoginPolicy,
    ) -> StoreResult<AttemptVerdict> {
        self.begin_login_attempt_sql(keys, now, policy).await
    }

    async fn finish_login_attempt(
        &self,
        keys: &AttemptKeys,
        outcome: AttemptOutcome,
        policy: LoginPolicy,
    ) -> StoreResult<()> {
        self.finish_login_attempt_sql(keys, outcome, policy).await
    }

    async fn failure_state(&self, key: &str) -> StoreResult<FailureState> {
        self.failure_state_sql(key).await
    }

    async fn prune_failures(&self, before: u64) -> StoreResult<u64> {
        self.prune_failures_sql(before).await
    }

    async fn claim_resource(
        &self,
        kind: ResourceKind,
        id: &str,
        owner: &str,
        now: u64,
    ) -> StoreResult<Claim> {
        self.claim_resource_sql(kind, id, owner, now).await
    }

    async fn resource_owner(&self, kind: ResourceKind, id: &str) -> StoreResult<Option<Ownership>> {
        self.resource_owner_sql(kind, id).await
    }

    async fn release_resource(&self, kind: ResourceKind, id: &str) -> StoreResult<bool> {
        self.release_resource_sql(kind, id).await
    }

    async fn owned_resources(&self, kind: ResourceKind, owner: &str) -> StoreResult<Vec<String>> {
        self.owned_resources_sql(kind, owner).await
    }

    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent> {
        self.append_audit_sql(event).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Page<AuditEvent>> {
        self.list_audit_sql(query).await
    }

    async fn prune_audit(&self, before: u64) -> StoreResult<u64> {
        self.prune_audit_sql(before).await
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every acknowledged statement is committed (durable) already.
        Ok(())
    }
}
