//! What a plugin answers: identities, refusals and the two outcome types.

use serde_json::{Map, Value};

/// Who the caller is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Identity {
    /// Stable identifier of the caller.
    pub user_id: String,
    /// Roles used by authorizers.
    pub roles: Vec<String>,
    /// Any other facts about the caller.
    pub claims: Map<String, Value>,
}

impl Identity {
    /// An identity with no roles and no claims.
    pub fn new(user_id: impl Into<String>) -> Self {
        Identity {
            user_id: user_id.into(),
            ..Default::default()
        }
    }

    /// Adds a role (builder style).
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }

    /// Adds several roles (builder style).
    pub fn with_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Adds a claim (builder style).
    pub fn with_claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// Whether the identity has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a request is refused; the text is shown to the client as `detail`
/// (never put secrets in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: the credentials are missing or not acceptable.
    Unauthenticated(String),
    /// 403: the caller is known and may not do this.
    Forbidden(String),
    /// 429 with `Retry-After: retry_after_s`: too many attempts.
    RateLimited {
        /// Seconds the client should wait (0 is sent as 1).
        retry_after_s: u32,
        /// Reason shown to the client.
        detail: String,
    },
}

impl Refusal {
    /// 401: the credentials are not acceptable.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Refusal::Unauthenticated(detail.into())
    }

    /// 403: the caller is known but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Refusal::Forbidden(detail.into())
    }

    /// 429: come back in `retry_after_s` seconds.
    pub fn rate_limited(retry_after_s: u32, detail: impl Into<String>) -> Self {
        Refusal::RateLimited {
            retry_after_s,
            detail: detail.into(),
        }
    }

    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthenticated(_) => 401,
            Refusal::Forbidden(_) => 403,
            Refusal::RateLimited { .. } => 429,
        }
    }
}

/// Permission for the host to reuse an answer for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHint {
    /// How long the answer stays valid, in milliseconds.
    pub ttl_ms: u32,
    /// Lower-case names of the headers the answer depends on.
    pub vary: Vec<String>,
}

impl CacheHint {
    /// Reuse for `ttl_ms` milliseconds, depending on no request header.
    pub fn for_ms(ttl_ms: u32) -> Self {
        CacheHint {
            ttl_ms,
            vary: Vec::new(),
        }
    }
}

/// What an authenticator concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthnOutcome {
    /// Valid credentials: this is the caller.
    Authenticated {
        /// The caller.
        who: Identity,
        /// Optional permission for the host to reuse this answer.
        cache: Option<CacheHint>,
    },
    /// No credentials this plugin understands; the host tries the next
    /// auth method.
    NoCredentials,
    /// Credentials were sent and are not acceptable.
    Refused(Refusal),
}

impl AuthnOutcome {
    /// Authenticated as `who`, without a cache hint.
    pub fn authenticated(who: Identity) -> Self {
        AuthnOutcome::Authenticated { who, cache: None }
    }

    /// Refused with 401 and `detail`.
    pub fn refused(detail: impl Into<String>) -> Self {
        AuthnOutcome::Refused(Refusal::unauthenticated(detail))
    }
}

/// The operation a caller wants to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `graph`, `checkpointer`, `store`, `files` or `config`.
    pub resource: String,
    /// `invoke`, `stream`, `read`, `write`, `delete`, `stop`, `fix` or `upload`.
    pub action: String,
    /// The thread, memory or file id the request names (path or body), if any.
    pub resource_id: Option<String>,
    /// The user id recorded as the owner of that resource, when the server
    /// tracks ownership (tenancy) and knows one.
    pub resource_owner: Option<String>,
    /// The caller's tenant key, when tenancy is on.
    pub caller_tenant: Option<String>,
}

impl Access {
    /// An access without a resource id.
    pub fn new(resource: &str, action: &str) -> Self {
        Access {
            resource: resource.to_owned(),
            action: action.to_owned(),
            resource_id: None,
            resource_owner: None,
            caller_tenant: None,
        }
    }

    /// Sets the resource id (builder style, for tests).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.resource_id = Some(id.into());
        self
    }

    /// Sets the recorded owner (builder style, for tests).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.resource_owner = Some(owner.into());
        self
    }

    /// Sets the caller's tenant key (builder style, for tests).
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.caller_tenant = Some(tenant.into());
        self
    }
}

/// What an authorizer concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzOutcome {
    /// Let the request through.
    Allow,
    /// Let the request through, and let the host give the same answer to
    /// the same caller (user id, roles, claims) asking for the same access
    /// for `ttl_ms`, without calling the plugin. Send it only when the
    /// decision depends on nothing else (or on the hint's `vary` headers).
    AllowCached(CacheHint),
    /// Refuse it.
    Deny(Refusal),
}

impl AuthzOutcome {
    /// Denied with 403 and `detail`.
    pub fn deny(detail: impl Into<String>) -> Self {
        AuthzOutcome::Deny(Refusal::forbidden(detail))
    }
}
