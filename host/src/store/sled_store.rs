//! The sled implementation of [`Store`]: one tree per entity, one `index` tree
//! for every secondary key, multi-tree transactions wherever a write touches an
//! entity and its index entries, and a flush before a write is acknowledged.
//!
//! Trees: `users`, `api_keys`, `families`, `variables` (id → JSON), `failures`
//! (lower-cased username, or that and `\0{client address}` → JSON), `audit`
//! (time and sequence → JSON, see `audit`), `meta` (schema version) and `index`:
//! `name\0{lower username}` → user id, `keyhash\0{hash}` → key id,
//! `userkey\0{user}\0{key}`, `userfam\0{user}\0{family}` → empty,
//! `uservar\0{user}\0{name}` → variable id. `owners` and `owned` hold the
//! ownership registry (see `ownership`).
//!
//! sled calls are synchronous but short (in-memory tree, log-structured
//! writes): the `*_blocking` methods in `users`, `credentials` and
//! `variables` do them, and the [`Store`] impl here runs them and awaits the
//! flush (failed-login counters excepted: see the trait). sled allows one
//! process per database, whose folder is kept 0700 and files 0600.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{IVec, Transactional, Tree};
use subtle::ConstantTimeEq;

use super::*;

mod audit;
mod credentials;
mod export;
mod failures;
mod ownership;
mod users;
mod variables;

pub use export::Export;

const SCHEMA_VERSION: &[u8] = b"1";

/// A [`Store`] on a sled database. Cloning shares the same database.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    users: Tree,
    api_keys: Tree,
    families: Tree,
    variables: Tree,
    failures: Tree,
    audit: Tree,
    index: Tree,
    owners: Tree,
    owned: Tree,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn storage(e: impl fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn enc<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn dec<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn name_key(username: &str) -> Vec<u8> {
    key(&["name", &username.to_lowercase()])
}

fn valid(id: &str) -> StoreResult<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

impl SledStore {
    /// Opens (or creates) the database in the directory `path`, readable
    /// by the owner only (folder 0700, files 0600, whatever the umask).
    pub fn open(path: &Path) -> StoreResult<SledStore> {
        let private = |e: std::io::Error| {
            StoreError::Storage(format!("cannot make {} private: {e}", path.display()))
        };
        permissions::private_dir(path).map_err(private)?;
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| StoreError::Storage(format!("cannot open {}: {e}", path.display())))?;
        // sled created its files with the umask's modes.
        permissions::private_tree(path).map_err(private)?;
        Self::from_db(db)
    }

    /// A database that lives in a temporary directory and is deleted on drop
    /// (for tests).
    pub fn open_temporary() -> StoreResult<SledStore> {
        Self::from_db(
            sled::Config::new()
                .temporary(true)
                .open()
                .map_err(storage)?,
        )
    }

    fn from_db(db: sled::Db) -> StoreResult<SledStore> {
        let tree = |name: &str| db.open_tree(name).map_err(storage);
        let meta = tree("meta")?;
        match meta.get("schema_version").map_err(storage)? {
            Some(v) if v.as_ref() == SCHEMA_VERSION => {}
            Some(v) => {
                let v = String::from_utf8_lossy(&v).into_owned();
                return Err(StoreError::Corrupt(format!(
                    "database schema version {v} is not supported (expected 1)"
                )));
            }
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(storage)?;
                db.flush().map_err(storage)?;
            }
        }
        Ok(SledStore {
            users: tree("users")?,
            api_keys: tree("api_keys")?,
            families: tree("families")?,
            variables: tree("variables")?,
            failures: tree("failures")?,
            audit: tree("audit")?,
            index: tree("index")?,
            owners: tree("owners")?,
            owned: tree("owned")?,
            db,
        })
    }

    async fn flush_now(&self) -> StoreResult<()> {
        self.db.flush_async().await.map(|_| ()).map_err(storage)
    }

    /// Flushes after a successful write, then hands back its result.
    async fn flushed<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        let value = result?;
        self.flush_now().await?;
        Ok(value)
    }

    /// Like `flushed`, but only when the write changed something.
    async fn flushed_if<T>(&self, result: StoreResult<(T, bool)>) -> StoreResult<T> {
        let (value, changed) = result?;
        if changed {
            self.flush_now().await?;
        }
        Ok(value)
    }

    fn get_json<T: DeserializeOwned>(&self, tree: &Tree, what: &str, id: &str) -> StoreResult<T> {
        valid(id)?;
        let bytes = tree.get(id).map_err(storage)?.ok_or(StoreError::NotFound)?;
        dec(what, &bytes)
    }

    fn require_user(&self, user_id: &str) -> StoreResult<()> {
        valid(user_id)?;
        if self.users.contains_key(user_id).map_err(storage)? {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    /// `(index key, id)` of every index entry under `kind\0{user_id}\0`.
    fn children(&self, kind: &str, user_id: &str) -> StoreResult<Vec<(IVec, String)>> {
        let prefix = key(&[kind, user_id, ""]);
        self.index
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, v) = item.map_err(storage)?;
                let id = match kind {
                    "uservar" => String::from_utf8_lossy(&v).into_owned(),
                    _ => String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                };
                Ok((k, id))
            })
            .collect()
    }

    /// Reads, changes and compare-and-swaps one JSON value until no concurrent
    /// writer interferes. `f` returns the new value (`None`: leave as is) and a
    /// result; the bool says whether anything was written.
    fn cas_update<T, R>(
        &self,
        tree: &Tree,
        what: &str,
        id: &str,
        mut f: impl FnMut(T) -> (Option<T>, R),
    ) -> StoreResult<(bool, R)>
    where
        T: Serialize + DeserializeOwned,
    {
        valid(id)?;
        loop {
            let old = tree.get(id).map_err(storage)?.ok_or(StoreError::NotFound)?;
            let (new, result) = f(dec(what, &old)?);
            let Some(new) = new else {
                return Ok((false, result));
            };
            if tree
                .compare_and_swap(id, Some(&old), Some(enc(&new)?))
                .map_err(storage)?
                .is_ok()
            {
                return Ok((true, result));
            }
        }
    }

    /// Inserts `value` under `id` in `tree` plus index entries, after checking
    /// that the owner exists and that `unique` (if any) is free.
    fn insert_owned<T: Serialize>(
        &self,
        tree: &Tree,
        user_id: &str,
        id: &str,
        value: &T,
        index_entries: &[(Vec<u8>, &[u8])],
        unique: Option<(&[u8], &str)>,
    ) -> StoreResult<()> {
        valid(user_id)?;
        let bytes = enc(value)?;
        (&self.users, tree, &self.index)
            .transaction(
                |(users, tree, index): &(
                    TransactionalTree,
                    TransactionalTree,
                    TransactionalTree,
                )| {
                    if users.get(user_id)?.is_none() {
                        return abort(StoreError::NotFound);
                    }
                    if let Some((k, what)) = unique
                        && index.get(k)?.is_some()
                    {
                        return abort(StoreError::Conflict(what.to_string()));
                    }
                    for (k, v) in index_entries {
                        index.insert(k.as_slice(), *v)?;
                    }
                    tree.insert(id.as_bytes(), bytes.as_slice())?;
                    Ok(())
                },
            )
            .map_err(tx_error)
    }

    fn list_children<T: DeserializeOwned>(
        &self,
        kind: &str,
        tree: &Tree,
        what: &str,
        user_id: &str,
    ) -> StoreResult<Vec<T>> {
        self.require_user(user_id)?;
        let mut out = Vec::new();
        for (_, id) in self.children(kind, user_id)? {
            match self.get_json(tree, what, &id) {
                Ok(v) => out.push(v),
                Err(StoreError::NotFound) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

impl Store for SledStore {
    async fn create_user(&self, new: NewUser, now: u64) -> StoreResult<User> {
        self.flushed(self.create_user_blocking(new, now)).await
    }

    async fn get_user(&self, id: &str) -> StoreResult<User> {
        self.get_json(&self.users, "user", id)
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<User> {
        self.get_user_by_username_blocking(username)
    }

    async fn update_user(&self, id: &str, update: UserUpdate, now: u64) -> StoreResult<User> {
        self.flushed(self.update_user_blocking(id, update, now))
            .await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<()> {
        self.flushed(self.delete_user_blocking(id)).await
    }

    async fn list_users(&self, offset: u64, limit: u64) -> StoreResult<Page<User>> {
        self.list_users_blocking(offset, limit)
    }

    async fn create_api_key(&self, new: NewApiKey, now: u64) -> StoreResult<ApiKey> {
        self.flushed(self.create_api_key_blocking(new, now)).await
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<ApiKey> {
        self.get_json(&self.api_keys, "api key", id)
    }

    async fn get_api_key_by_hash(&self, hash: &str) -> StoreResult<ApiKey> {
        self.get_api_key_by_hash_blocking(hash)
    }

    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        self.list_api_keys_blocking(user_id)
    }

    async fn touch_api_key(&self, id: &str, now: u64) -> StoreResult<bool> {
        // Deliberately not flushed: see the trait docs.
        self.touch_api_key_blocking(id, now)
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<()> {
        self.flushed(self.delete_api_key_blocking(id)).await
    }

    async fn create_family(
        &self,
        user_id: &str,
        jti: &str,
        now: u64,
    ) -> StoreResult<RefreshFamily> {
        self.flushed(self.create_family_blocking(user_id, jti, now))
            .await
    }

    async fn get_family(&self, id: &str) -> StoreResult<RefreshFamily> {
        self.get_json(&self.families, "refresh family", id)
    }

    async fn rotate_family(
        &self,
        id: &str,
        presented: &str,
        new: &str,
    ) -> StoreResult<RotateOutcome> {
        self.flushed_if(self.rotate_family_blocking(id, presented, new))
            .await
    }

    async fn revoke_family(&self, id: &str) -> StoreResult<()> {
        let changed = self.revoke_family_blocking(id);
        self.flushed_if(changed.map(|c| ((), c))).await
    }

    async fn revoke_user_families(&self, user_id: &str) -> StoreResult<u64> {
        let count = self.revoke_user_families_blocking(user_id);
        self.flushed_if(count.map(|n| (n, n > 0))).await
    }

    async fn create_variable(&self, new: NewVariable, now: u64) -> StoreResult<Variable> {
        self.flushed(self.create_variable_blocking(new, now)).await
    }

    async fn get_variable(&self, id: &str) -> StoreResult<Variable> {
        self.get_json(&self.variables, "variable", id)
    }

    async fn get_variable_by_name(&self, user_id: &str, name: &str) -> StoreResult<Variable> {
        self.get_variable_by_name_blocking(user_id, name)
    }

    async fn update_variable(
        &self,
        id: &str,
        kind: VariableKind,
        value_encrypted: String,
        now: u64,
    ) -> StoreResult<Variable> {
        self.flushed(self.update_variable_blocking(id, kind, value_encrypted, now))
            .await
    }

    async fn delete_variable(&self, id: &str) -> StoreResult<()> {
        self.flushed(self.delete_variable_blocking(id)).await
    }

    async fn list_variables(&self, user_id: &str) -> StoreResult<Vec<Variable>> {
        self.list_variables_blocking(user_id)
    }

    async fn reencrypt_variables<F, E>(&self, f: F) -> StoreResult<u64>
    where
        F: FnMut(&str) -> Result<String, E> + Send,
        E: fmt::Display,
    {
        self.flushed(self.reencrypt_variables_blocking(f)).await
    }

    async fn begin_login_attempt(
        &self,
        keys: &AttemptKeys,
        now: u64,
        policy: LoginPolicy,
    ) -> StoreResult<AttemptVerdict> {
        // Not flushed: see the trait docs.
        self.begin_login_attempt_blocking(keys, now, policy)
    }

    async fn finish_login_attempt(
        &self,
        keys: &AttemptKeys,
        outcome: AttemptOutcome,
        policy: LoginPolicy,
    ) -> StoreResult<()> {
        // Not flushed: see the trait docs.
        self.finish_login_attempt_blocking(keys, outcome, policy)
    }

    async fn failure_state(&self, key: &str) -> StoreResult<FailureState> {
        self.failure_state_blocking(key)
    }

    async fn prune_failures(&self, before: u64) -> StoreResult<u64> {
        // Not flushed: forgetting a counter twice after a crash is harmless.
        self.prune_failures_blocking(before)
    }

    async fn claim_resource(
        &self,
        kind: ResourceKind,
        id: &str,
        owner: &str,
        now: u64,
    ) -> StoreResult<Claim> {
        let claim = self.claim_resource_blocking(kind, id, owner, now);
        self.flushed_if(claim.map(|c| {
            let new = c.claimed;
            (c, new)
        }))
        .await
    }

    async fn resource_owner(&self, kind: ResourceKind, id: &str) -> StoreResult<Option<Ownership>> {
        self.resource_owner_blocking(kind, id)
    }

    async fn release_resource(&self, kind: ResourceKind, id: &str) -> StoreResult<bool> {
        let released = self.release_resource_blocking(kind, id);
        self.flushed_if(released.map(|r| (r, r))).await
    }

    async fn owned_resources(&self, kind: ResourceKind, owner: &str) -> StoreResult<Vec<String>> {
        self.owned_resources_blocking(kind, owner)
    }

    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent> {
        // Not flushed: see the trait docs.
        self.append_audit_blocking(event)
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Page<AuditEvent>> {
        self.list_audit_blocking(query)
    }

    async fn prune_audit(&self, before: u64) -> StoreResult<u64> {
        self.flushed(self.prune_audit_blocking(before)).await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.flush_now().await
    }
}
