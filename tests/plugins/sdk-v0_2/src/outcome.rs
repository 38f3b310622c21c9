//! What a plugin answers: identities, refusals and the two outcome types.

use serde_json::{Map, Value};

use crate::bindings::wit;

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

/// Why a request is refused; `detail` is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status: 401, 403 or 429.
    pub status: u16,
    /// Reason shown to the client. Never include secrets.
    pub detail: String,
}

impl Refusal {
    /// 401: the credentials are not acceptable.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Refusal {
            status: 401,
            detail: detail.into(),
        }
    }

    /// 403: the caller is known but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Refusal {
            status: 403,
            detail: detail.into(),
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

impl From<CacheHint> for wit::CacheHint {
    fn from(c: CacheHint) -> Self {
        wit::CacheHint {
            ttl_ms: c.ttl_ms,
            vary: c.vary,
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
        AuthnOutcome::Refused(Refusal::unauthorized(detail))
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
}

impl Access {
    /// An access without a resource id.
    pub fn new(resource: &str, action: &str) -> Self {
        Access {
            resource: resource.to_owned(),
            action: action.to_owned(),
            resource_id: None,
        }
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

// Conversions to and from the generated WIT types.

impl From<Identity> for wit::Identity {
    fn from(i: Identity) -> Self {
        wit::Identity {
            user_id: i.user_id,
            roles: i.roles,
            claims: Value::Object(i.claims).to_string(),
        }
    }
}

impl From<wit::Identity> for Identity {
    fn from(i: wit::Identity) -> Self {
        let claims = match serde_json::from_str(&i.claims) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Identity {
            user_id: i.user_id,
            roles: i.roles,
            claims,
        }
    }
}

impl From<Refusal> for wit::Refusal {
    fn from(r: Refusal) -> Self {
        wit::Refusal {
            status: r.status,
            detail: r.detail,
        }
    }
}

impl From<AuthnOutcome> for wit::AuthnOutcome {
    fn from(o: AuthnOutcome) -> Self {
        match o {
            AuthnOutcome::Authenticated { who, cache } => {
                wit::AuthnOutcome::Authenticated(wit::Grant {
                    who: who.into(),
                    cache: cache.map(Into::into),
                })
            }
            AuthnOutcome::NoCredentials => wit::AuthnOutcome::NoCredentials,
            AuthnOutcome::Refused(r) => wit::AuthnOutcome::Refused(r.into()),
        }
    }
}

impl From<AuthzOutcome> for wit::AuthzOutcome {
    fn from(o: AuthzOutcome) -> Self {
        match o {
            AuthzOutcome::Allow => wit::AuthzOutcome::Allow(None),
            AuthzOutcome::AllowCached(hint) => wit::AuthzOutcome::Allow(Some(hint.into())),
            AuthzOutcome::Deny(r) => wit::AuthzOutcome::Deny(r.into()),
        }
    }
}

impl From<wit::Access> for Access {
    fn from(a: wit::Access) -> Self {
        Access {
            resource: a.resource,
            action: a.action,
            resource_id: a.resource_id,
        }
    }
}
