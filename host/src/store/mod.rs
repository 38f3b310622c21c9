//! Account storage: the async [`Store`] trait and its error type. The entities
//! (users, API keys, refresh-token families, variables, failed-login counters)
//! live in `types`, the audit trail's types in `audit`; all are re-exported
//! here; `sled_store` and `pg_store` implement the trait, and
//! [`StoreBackend`] is whichever one the server runs on.
//!
//! Timestamps are unix seconds (`u64`) passed in by the caller as `now`, so
//! tests are deterministic; [`unix_now`] gives the real clock. Every write that
//! a method acknowledges is durable (flushed) unless its doc says otherwise.

use std::fmt;
use std::future::Future;

mod audit;
#[cfg(test)]
mod audit_tests;
mod backend;
mod database_settings;
mod lockout;
mod ownership;
pub mod permissions;
pub mod pg_store;
#[cfg(test)]
pub(crate) mod pg_test;
pub mod sled_store;
#[cfg(test)]
mod tests;
mod types;

pub use audit::*;
pub use backend::StoreBackend;
pub use database_settings::{DatabaseSettings, mask_url};
pub use lockout::*;
pub use ownership::*;
pub use pg_store::PgStore;
pub use sled_store::SledStore;
pub use types::*;

/// Errors of the storage layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The user, key, family or variable does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule or a concurrent change refused the write (e.g.
    /// username taken); the text says which.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database failed (I/O, lock, …).
    #[error("storage error: {0}")]
    Storage(String),
    /// The database cannot be reached now (down, pool exhausted, too slow);
    /// the request may succeed later (503 `store_unavailable`).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Re-encryption during a key rotation failed for one variable; nothing
    /// was written.
    #[error("cannot re-encrypt variable {variable_id}: {reason}")]
    Reencrypt {
        /// Id of the variable whose value could not be re-encrypted.
        variable_id: String,
        /// Why (the rotation callback's error text).
        reason: String,
    },
}

/// Result type of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// Async storage of accounts. Implementations are cheap to share (`Clone` an
/// `Arc` or the store itself) and every returned future is `Send`. Use it as a
/// generic bound (`S: Store`); it is not meant for `dyn`.
pub trait Store: Send + Sync + 'static {
    /// Creates a user; `Conflict` if the username is taken ignoring case.
    fn create_user(&self, new: NewUser, now: u64)
    -> impl Future<Output = StoreResult<User>> + Send;
    /// A user by id.
    fn get_user(&self, id: &str) -> impl Future<Output = StoreResult<User>> + Send;
    /// A user by username, ignoring case.
    fn get_user_by_username(
        &self,
        username: &str,
    ) -> impl Future<Output = StoreResult<User>> + Send;
    /// Applies a partial update; `Conflict` if a new username is taken.
    fn update_user(
        &self,
        id: &str,
        update: UserUpdate,
        now: u64,
    ) -> impl Future<Output = StoreResult<User>> + Send;
    /// Deletes a user with its API keys, refresh families, variables and
    /// failed-login counter.
    fn delete_user(&self, id: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Users ordered by lower-cased username, `limit` of them after `offset`.
    fn list_users(
        &self,
        offset: u64,
        limit: u64,
    ) -> impl Future<Output = StoreResult<Page<User>>> + Send;

    /// Stores an API key; `NotFound` if the user does not exist, `Conflict`
    /// if the hash is already stored.
    fn create_api_key(
        &self,
        new: NewApiKey,
        now: u64,
    ) -> impl Future<Output = StoreResult<ApiKey>> + Send;
    /// An API key by id.
    fn get_api_key(&self, id: &str) -> impl Future<Output = StoreResult<ApiKey>> + Send;
    /// An API key by the SHA-256 hex of the full key.
    fn get_api_key_by_hash(&self, hash: &str) -> impl Future<Output = StoreResult<ApiKey>> + Send;
    /// A user's API keys, oldest first; `NotFound` if the user does not exist.
    fn list_api_keys(&self, user_id: &str)
    -> impl Future<Output = StoreResult<Vec<ApiKey>>> + Send;
    /// Records a use of the key; `true` when this was its first recorded
    /// use (exactly one caller sees `true`, across instances too). Not
    /// flushed (it runs on every request); the database's periodic flush
    /// persists it.
    fn touch_api_key(&self, id: &str, now: u64) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Deletes an API key.
    fn delete_api_key(&self, id: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Starts a refresh family for a login whose first token has `jti`.
    fn create_family(
        &self,
        user_id: &str,
        jti: &str,
        now: u64,
    ) -> impl Future<Output = StoreResult<RefreshFamily>> + Send;
    /// A refresh family by id.
    fn get_family(&self, id: &str) -> impl Future<Output = StoreResult<RefreshFamily>> + Send;
    /// Atomically swaps the family's current jti from `presented_jti` to
    /// `new_jti`. A presented jti that is not current revokes the family.
    fn rotate_family(
        &self,
        id: &str,
        presented_jti: &str,
        new_jti: &str,
    ) -> impl Future<Output = StoreResult<RotateOutcome>> + Send;
    /// Revokes one family (logout).
    fn revoke_family(&self, id: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Revokes every family of a user (logout everywhere, password change);
    /// returns how many were newly revoked.
    fn revoke_user_families(&self, user_id: &str) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Creates a variable; `NotFound` if the user does not exist, `Conflict`
    /// if the user already has one with that name.
    fn create_variable(
        &self,
        new: NewVariable,
        now: u64,
    ) -> impl Future<Output = StoreResult<Variable>> + Send;
    /// A variable by id.
    fn get_variable(&self, id: &str) -> impl Future<Output = StoreResult<Variable>> + Send;
    /// A user's variable by name.
    fn get_variable_by_name(
        &self,
        user_id: &str,
        name: &str,
    ) -> impl Future<Output = StoreResult<Variable>> + Send;
    /// Replaces a variable's kind and encrypted value.
    fn update_variable(
        &self,
        id: &str,
        kind: VariableKind,
        value_encrypted: String,
        now: u64,
    ) -> impl Future<Output = StoreResult<Variable>> + Send;
    /// Deletes a variable.
    fn delete_variable(&self, id: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// A user's variables ordered by name; `NotFound` if the user does not exist.
    fn list_variables(
        &self,
        user_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<Variable>>> + Send;
    /// Key rotation: maps every variable's `value_encrypted` through `f` and
    /// writes all new values in one transaction. If `f` fails for any
    /// variable, nothing is written (`Reencrypt`); if a variable changed
    /// meanwhile, nothing is written (`Conflict`, retry). Returns the count.
    ///
    /// In a running server, first switch the live `SecretBox` to
    /// `old.with_new_key(new)` (so new writes use the new key and old values
    /// still decrypt), then call this with `|v| new_box.reencrypt(v)`: a
    /// variable written meanwhile is then already under the new key.
    fn reencrypt_variables<F, E>(&self, f: F) -> impl Future<Output = StoreResult<u64>> + Send
    where
        F: FnMut(&str) -> Result<String, E> + Send,
        E: fmt::Display;

    /// Counts a login attempt under both of `keys`' counters *before* its
    /// password is checked, atomically: `Locked` (nothing counted) if
    /// either counter is locked at `now`. Not flushed (see
    /// [`finish_login_attempt`](Store::finish_login_attempt)).
    fn begin_login_attempt(
        &self,
        keys: &AttemptKeys,
        now: u64,
        policy: LoginPolicy,
    ) -> impl Future<Output = StoreResult<AttemptVerdict>> + Send;
    /// Settles an admitted attempt (see [`AttemptOutcome`]). Counters are
    /// not flushed: they run on every anonymous login, and a flush per
    /// attempt queued logins behind each other's fsync under a flood; the
    /// database's periodic flush (every 500 ms) persists them.
    fn finish_login_attempt(
        &self,
        keys: &AttemptKeys,
        outcome: AttemptOutcome,
        policy: LoginPolicy,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// The counter under `key` (an [`AttemptKeys`] field; default if none).
    fn failure_state(&self, key: &str) -> impl Future<Output = StoreResult<FailureState>> + Send;
    /// Removes counters whose last failure is before `before` and that are not
    /// locked at `before`; returns how many. Failures are counted for unknown
    /// usernames too, so run this now and then.
    fn prune_failures(&self, before: u64) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Ownership registry (tenancy): records `owner` as the owner of the
    /// resource unless it has one already, atomically (of two concurrent
    /// first claims exactly one wins; both see the winner). Durable when
    /// `claimed`.
    fn claim_resource(
        &self,
        kind: ResourceKind,
        id: &str,
        owner: &str,
        now: u64,
    ) -> impl Future<Output = StoreResult<Claim>> + Send;
    /// The recorded owner of a resource, if any.
    fn resource_owner(
        &self,
        kind: ResourceKind,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<Ownership>>> + Send;
    /// Forgets a resource's owner (the resource was deleted); returns whether
    /// one was recorded. Durable.
    fn release_resource(
        &self,
        kind: ResourceKind,
        id: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Ids of every resource of `kind` that `owner` owns, in byte order of
    /// the id (used to filter and page the agent's listings).
    fn owned_resources(
        &self,
        kind: ResourceKind,
        owner: &str,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Records an audit event and returns it with its id. Not flushed: events
    /// come with every login (a flood included); the database's periodic
    /// flush (every 500 ms) persists them.
    fn append_audit(
        &self,
        event: NewAuditEvent,
    ) -> impl Future<Output = StoreResult<AuditEvent>> + Send;
    /// Events matching `query`'s filters, newest first (by time, then by
    /// recording order), paged by its `offset` and `limit`; `total` counts
    /// every match.
    fn list_audit(
        &self,
        query: &AuditQuery,
    ) -> impl Future<Output = StoreResult<Page<AuditEvent>>> + Send;
    /// Deletes events older than `before` (unix seconds; retention); returns
    /// how many.
    fn prune_audit(&self, before: u64) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Flushes everything to disk.
    fn flush(&self) -> impl Future<Output = StoreResult<()>> + Send;
}
