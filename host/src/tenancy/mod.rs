//! Tenancy: each tenant's threads and memories are theirs alone, whatever
//! the agent does. A tenant is a user (`"owner": "user_id"`) or everyone
//! sharing a claim value (`"owner": "org_id"`).
//!
//! The policy keeps an owner registry in the account store (durable,
//! behind the [`Store`](crate::store::Store) trait):
//!
//! - a thread belongs to whoever first uses it: a run naming a new
//!   `thread_id`, the id the agent makes for a run without one (read from
//!   the invoke response or the stream's events as they pass), or a
//!   state/messages write to an unknown id; a memory to whoever created it;
//! - naming another tenant's (or an unowned) resource anywhere answers 404
//!   with nothing forwarded; listings are filtered; `forget` is refused
//!   (403) unless the agent scopes its store by user; deletes release;
//! - callers with a bypass role see and manage everything;
//! - with `share_via_authorizer`, another tenant's resource named by id is
//!   put to the authorizer (which sees its owner) instead of refused: a
//!   sharing rule may allow it, any refusal is still the 404.
//!
//! [`Tenancy::check`] decides before the authorizer runs and yields a
//! [`Grant`]: the ownership facts authorizers see, the claim to make once
//! the request is allowed, and how to forward it (see `forward`).

mod cache;
mod forward;
mod frames;
mod listing;
pub mod settings;

use std::collections::HashSet;
use std::sync::Arc;

use crate::accounts::Accounts;
use crate::agent_request::Route;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::plugins::Access;
use crate::store::{ResourceKind, Store, StoreError, unix_now};

pub use forward::Grant;
pub use frames::Credential;
pub use settings::{TenancySettings, TenantKey};

use cache::OwnerCache;

/// The ownership policy of one server.
pub struct Tenancy {
    settings: TenancySettings,
    accounts: Arc<Accounts>,
    /// Owner lookups remembered; `None` on a shared (PostgreSQL) registry.
    cache: Option<OwnerCache>,
}

/// What a request does to the resources tenancy guards, read off its route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Use {
    /// Nothing tenancy guards (graph metadata, files, config).
    Unguarded,
    /// Names a thread; `creates`: first use claims it (runs, state and
    /// message writes), otherwise an unowned id is 404.
    Thread { id: String, creates: bool },
    /// Deletes a thread (released once the agent confirms).
    DeleteThread(String),
    /// A run without a thread id: the agent makes one, claimed from its
    /// answer (`stream`: from the events as they pass).
    NewRun { stream: bool },
    /// `GET /v1/threads`.
    ListThreads,
    /// Names a memory (get, update).
    Memory(String),
    /// Deletes a memory.
    DeleteMemory(String),
    /// Creates a memory (claimed from the answer's `data.memory_id`).
    CreateMemory,
    /// Lists (`search: false`) or searches memories.
    ListMemories { search: bool },
    /// `forget`: bulk delete by filter.
    Forget,
    /// A WebSocket run route: each frame is checked (see `frames`).
    Socket,
}

impl Use {
    fn of(route: &Route, access: &Access) -> Use {
        let id = access.resource_id.clone();
        let method = route.method;
        match (route.pattern, id) {
            ("/v1/graph/ws" | "/v1/graph/live", _) => Use::Socket,
            ("/v1/graph/invoke" | "/v1/graph/stream" | "/v1/ag-ui", Some(id)) => {
                Use::Thread { id, creates: true }
            }
            ("/v1/graph/invoke", None) => Use::NewRun { stream: false },
            ("/v1/graph/stream" | "/v1/ag-ui", None) => Use::NewRun { stream: true },
            ("/v1/threads", _) => Use::ListThreads,
            ("/v1/threads/{thread_id}", Some(id)) if method == "DELETE" => Use::DeleteThread(id),
            (p, Some(id)) if p.starts_with("/v1/threads/{thread_id}") => {
                let creates = matches!(
                    (method, p),
                    ("PUT", "/v1/threads/{thread_id}/state")
                        | ("POST", "/v1/threads/{thread_id}/messages")
                );
                Use::Thread { id, creates }
            }
            ("/v1/graph/stop" | "/v1/graph/fix" | "/v1/observability/{thread_id}", Some(id)) => {
                Use::Thread { id, creates: false }
            }
            ("/v1/store/memories", _) => Use::CreateMemory,
            ("/v1/store/search", _) => Use::ListMemories { search: true },
            ("/v1/store/memories/list", _) => Use::ListMemories { search: false },
            ("/v1/store/memories/forget", _) => Use::Forget,
            ("/v1/store/memories/{memory_id}", Some(id)) if method == "DELETE" => {
                Use::DeleteMemory(id)
            }
            ("/v1/store/memories/{memory_id}", Some(id)) => Use::Memory(id),
            _ => Use::Unguarded,
        }
    }
}

impl Tenancy {
    /// The policy for `settings`, keeping its registry in the account store.
    pub fn new(settings: TenancySettings, accounts: Arc<Accounts>) -> Tenancy {
        Tenancy {
            settings,
            // Only a registry no other instance writes can be cached: on a
            // shared one, a thread released here and claimed by another
            // tenant elsewhere would still read as its old owner's.
            cache: (!accounts.store.is_shared()).then(OwnerCache::default),
            accounts,
        }
    }

    /// The caller's tenant key; a caller without the configured claim is
    /// refused (403): without it they belong to no tenant.
    pub fn tenant_of(&self, who: &Identity) -> Result<String, ApiError> {
        match &self.settings.owner {
            TenantKey::UserId => Ok(who.user_id.clone()),
            TenantKey::Claim(claim) => match who.claims.get(claim) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                _ => Err(ApiError::Forbidden(format!(
                    "tenancy: your credentials carry no `{claim}` claim, which says whose threads and memories you may use"
                ))),
            },
        }
    }

    /// Whether the caller has a bypass role.
    pub fn bypasses(&self, who: &Identity) -> bool {
        who.roles
            .iter()
            .any(|r| self.settings.bypass_roles.iter().any(|b| b == r))
    }

    /// The recorded owner (cached: at most one registry read per request).
    async fn owner(&self, kind: ResourceKind, id: &str) -> Result<Option<String>, ApiError> {
        if let Some(owner) = self.cache.as_ref().and_then(|c| c.get(kind, id)) {
            return Ok(owner);
        }
        let owner = self
            .accounts
            .store
            .resource_owner(kind, id)
            .await
            .map_err(registry_down)?
            .map(|o| o.owner);
        self.remember(kind, id, owner.clone());
        Ok(owner)
    }

    /// Records an owner lookup, claim or release in the cache, if there is one.
    fn remember(&self, kind: ResourceKind, id: &str, owner: Option<String>) {
        if let Some(cache) = &self.cache {
            cache.put(kind, id, owner);
        }
    }

    /// Claims for `tenant` unless owned; returns the owner afterwards.
    async fn claim(&self, kind: ResourceKind, id: &str, tenant: &str) -> Result<String, ApiError> {
        let claim = self
            .accounts
            .store
            .claim_resource(kind, id, tenant, unix_now())
            .await
            .map_err(registry_down)?;
        let owner = claim.ownership.owner;
        self.remember(kind, id, Some(owner.clone()));
        Ok(owner)
    }

    /// Forgets the owner of a deleted resource.
    async fn release(&self, kind: ResourceKind, id: &str) -> Result<(), ApiError> {
        self.accounts
            .store
            .release_resource(kind, id)
            .await
            .map_err(registry_down)?;
        self.remember(kind, id, None);
        Ok(())
    }

    /// Every id of `kind` the tenant owns (for filtering listings).
    async fn owned(&self, kind: ResourceKind, tenant: &str) -> Result<HashSet<String>, ApiError> {
        Ok(self
            .accounts
            .store
            .owned_resources(kind, tenant)
            .await
            .map_err(registry_down)?
            .into_iter()
            .collect())
    }

    /// Decides on a request (its route and access) for `who`: 404 for a resource that is not
    /// theirs, 403 for `forget` or a caller without a tenant; otherwise the
    /// grant that carries the facts for the authorizer and the rest of the
    /// work (claims, filtering, releases).
    pub async fn check(
        self: &Arc<Self>,
        who: &Identity,
        route: &Route,
        access: &Access,
    ) -> Result<Grant, ApiError> {
        let used = Use::of(route, access);
        if used == Use::Unguarded {
            // Nothing to guard; authorizers still learn the tenant, if any.
            return Ok(match self.tenant_of(who) {
                Ok(tenant) => Grant::for_tenant(self.clone(), tenant, self.bypasses(who)),
                Err(_) => Grant::open(),
            });
        }
        let tenant = self.tenant_of(who)?;
        let bypass = self.bypasses(who);
        let mut grant = Grant::for_tenant(self.clone(), tenant.clone(), bypass);
        match used {
            Use::Unguarded => {}
            Use::Thread { id, creates } => {
                self.guard(&mut grant, ResourceKind::Thread, id, creates)
                    .await?
            }
            Use::DeleteThread(id) => {
                self.guard(&mut grant, ResourceKind::Thread, id.clone(), false)
                    .await?;
                grant.release_after(ResourceKind::Thread, id);
            }
            Use::Memory(id) => {
                self.guard(&mut grant, ResourceKind::Memory, id, false)
                    .await?
            }
            Use::DeleteMemory(id) => {
                self.guard(&mut grant, ResourceKind::Memory, id.clone(), false)
                    .await?;
                grant.release_after(ResourceKind::Memory, id);
            }
            Use::NewRun { stream } => grant.claim_new_run(stream),
            Use::CreateMemory => grant.claim_new_memory(),
            Use::ListThreads if !bypass => grant.filter_threads(),
            Use::ListMemories { search } if !bypass => grant.filter_memories(search),
            Use::ListThreads | Use::ListMemories { .. } => {}
            Use::Forget if bypass || self.settings.agent_scopes_store => {}
            Use::Forget => {
                return Err(ApiError::Forbidden(
                    "tenancy: `forget` deletes memories by filter across every tenant, so it is refused; delete your memories one by one (or set tenancy.agent_scopes_store when the agent scopes its store by user)".into(),
                ));
            }
            Use::Socket => grant.inspect_frames(),
        }
        Ok(grant)
    }

    /// The owner check of one named resource: another tenant's is 404
    /// (bypass roles pass); an unowned one is claimed once the request is
    /// allowed when `creates`, else 404 for tenants (it is not theirs).
    async fn guard(
        &self,
        grant: &mut Grant,
        kind: ResourceKind,
        id: String,
        creates: bool,
    ) -> Result<(), ApiError> {
        let owner = self.owner(kind, &id).await?;
        let tenant = grant.tenant().unwrap_or_default().to_owned();
        let bypass = grant.bypass();
        match owner {
            Some(owner) if owner == tenant || bypass => grant.set_owner(owner),
            Some(owner) if self.settings.share_via_authorizer => {
                grant.set_owner(owner);
                grant.foreign(kind, id);
            }
            Some(_) => return Err(not_found(kind, &id)),
            None if creates => grant.claim_first(kind, id),
            None if bypass => {}
            None => return Err(not_found(kind, &id)),
        }
        Ok(())
    }
}

/// The 404 a tenant gets for what is not theirs: the same as for what does
/// not exist (a 403 would confirm it exists).
fn not_found(kind: ResourceKind, id: &str) -> ApiError {
    let what = match kind {
        ResourceKind::Thread => "thread",
        ResourceKind::Memory => "memory",
    };
    ApiError::NotFound(format!("{what} {id:?} not found"))
}

/// A registry failure fails closed (503).
fn registry_down(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "ownership registry failed; request refused");
    ApiError::Unavailable("the ownership registry is unavailable; the request was refused".into())
}
