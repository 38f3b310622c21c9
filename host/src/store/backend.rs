//! The store the server runs on, chosen at start: sled (the default, one
//! process) or PostgreSQL (`AGENTFLOW_DATABASE_URL`, several instances).
//! [`StoreBackend`] implements [`Store`] by dispatching, so the rest of the
//! code does not know which one it has.

use std::fmt;

use super::*;

/// Either store.
#[derive(Clone, Debug)]
pub enum StoreBackend {
    /// The embedded sled database in the data dir.
    Sled(SledStore),
    /// A PostgreSQL database shared by every instance.
    Postgres(PgStore),
}

impl StoreBackend {
    /// Whether other instances write to this store too (PostgreSQL): then
    /// what this process remembers of it can be out of date at any moment.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreBackend::Postgres(_))
    }
}

/// Calls the same method on whichever store this is.
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            StoreBackend::Sled($s) => $call.await,
            StoreBackend::Postgres($s) => $call.await,
        }
    };
}

impl Store for StoreBackend {
    async fn create_user(&self, new: NewUser, now: u64) -> StoreResult<User> {
        dispatch!(self, s => s.create_user(new, now))
    }
    async fn get_user(&self, id: &str) -> StoreResult<User> {
        dispatch!(self, s => s.get_user(id))
    }
    async fn get_user_by_username(&self, username: &str) -> StoreResult<User> {
        dispatch!(self, s => s.get_user_by_username(username))
    }
    async fn update_user(&self, id: &str, update: UserUpdate, now: u64) -> StoreResult<User> {
        dispatch!(self, s => s.update_user(id, update, now))
    }
    async fn delete_user(&self, id: &str) -> StoreResult<()> {
        dispatch!(self, s => s.delete_user(id))
    }
    async fn list_users(&self, offset: u64, limit: u64) -> StoreResult<Page<User>> {
        dispatch!(self, s => s.list_users(offset, limit))
    }
    async fn create_api_key(&self, new: NewApiKey, now: u64) -> StoreResult<ApiKey> {
        dispatch!(self, s => s.create_api_key(new, now))
    }
    async fn get_api_key(&self, id: &str) -> StoreResult<ApiKey> {
        dispatch!(self, s => s.get_api_key(id))
    }
    async fn get_api_key_by_hash(&self, hash: &str) -> StoreResult<ApiKey> {
        dispatch!(self, s => s.get_api_key_by_hash(hash))
    }
    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        dispatch!(self, s => s.list_api_keys(user_id))
    }
    async fn touch_api_key(&self, id: &str, now: u64) -> StoreResult<bool> {
        dispatch!(self, s => s.touch_api_key(id, now))
    }
    async fn delete_api_key(&self, id: &str) -> StoreResult<()> {
        dispatch!(self, s => s.delete_api_key(id))
    }
    async fn create_family(
        &self,
        user_id: &str,
        jti: &str,
        now: u64,
    ) -> StoreResult<RefreshFamily> {
        dispatch!(self, s => s.create_family(user_id, jti, now))
    }
    async fn get_family(&self, id: &str) -> StoreResult<RefreshFamily> {
        dispatch!(self, s => s.get_family(id))
    }
    async fn rotate_family(
        &self,
        id: &str,
        presented: &str,
        new: &str,
    ) -> StoreResult<RotateOutcome> {
        dispatch!(self, s => s.rotate_family(id, presented, new))
    }
    async fn revoke_family(&self, id: &str) -> StoreResult<()> {
        dispatch!(self, s => s.revoke_family(id))
    }
    async fn revoke_user_families(&self, user_id: &str) -> StoreResult<u64> {
        dispatch!(self, s => s.revoke_user_families(user_id))
    }
    async fn create_variable(&self, new: NewVariable, now: u64) -> StoreResult<Variable> {
        dispatch!(self, s => s.create_variable(new, now))
    }
    async fn get_variable(&self, id: &str) -> StoreResult<Variable> {
        dispatch!(self, s => s.get_variable(id))
    }
    async fn get_variable_by_name(&self, user_id: &str, name: &str) -> StoreResult<Variable> {
        dispatch!(self, s => s.get_variable_by_name(user_id, name))
    }
    async fn update_variable(
        &self,
        id: &str,
        kind: VariableKind,
        value_encrypted: String,
        now: u64,
    ) -> StoreResult<Variable> {
        dispatch!(self, s => s.update_variable(id, kind, value_encrypted, now))
    }
    async fn delete_variable(&self, id: &str) -> StoreResult<()> {
        dispatch!(self, s => s.delete_variable(id))
    }
    async fn list_variables(&self, user_id: &str) -> StoreResult<Vec<Variable>> {
        dispatch!(self, s => s.list_variables(user_id))
    }
    async fn reencrypt_variables<F, E>(&self, f: F) -> StoreResult<u64>
    where
        F: FnMut(&str) -> Result<String, E> + Send,
        E: fmt::Display,
    {
        dispatch!(self, s => s.reencrypt_variables(f))
    }
    async fn begin_login_attempt(
        &self,
        keys: &AttemptKeys,
        now: u64,
        policy: LoginPolicy,
    ) -> StoreResult<AttemptVerdict> {
        dispatch!(self, s => s.begin_login_attempt(keys, now, policy))
    }
    async fn finish_login_attempt(
        &self,
        keys: &AttemptKeys,
        outcome: AttemptOutcome,
        policy: LoginPolicy,
    ) -> StoreResult<()> {
        dispatch!(self, s => s.finish_login_attempt(keys, outcome, policy))
    }
    async fn failure_state(&self, key: &str) -> StoreResult<FailureState> {
        dispatch!(self, s => s.failure_state(key))
    }
    async fn prune_failures(&self, before: u64) -> StoreResult<u64> {
        dispatch!(self, s => s.prune_failures(before))
    }
    async fn claim_resource(
        &self,
        kind: ResourceKind,
        id: &str,
        owner: &str,
        now: u64,
    ) -> StoreResult<Claim> {
        dispatch!(self, s => s.claim_resource(kind, id, owner, now))
    }
    async fn resource_owner(&self, kind: ResourceKind, id: &str) -> StoreResult<Option<Ownership>> {
        dispatch!(self, s => s.resource_owner(kind, id))
    }
    async fn release_resource(&self, kind: ResourceKind, id: &str) -> StoreResult<bool> {
        dispatch!(self, s => s.release_resource(kind, id))
    }
    async fn owned_resources(&self, kind: ResourceKind, owner: &str) -> StoreResult<Vec<String>> {
        dispatch!(self, s => s.owned_resources(kind, owner))
    }
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent> {
        dispatch!(self, s => s.append_audit(event))
    }
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Page<AuditEvent>> {
        dispatch!(self, s => s.list_audit(query))
    }
    async fn prune_audit(&self, before: u64) -> StoreResult<u64> {
        dispatch!(self, s => s.prune_audit(before))
    }
    async fn flush(&self) -> StoreResult<()> {
        dispatch!(self, s => s.flush())
    }
}
