//! Conversions between the SDK's types and the generated WIT types (wasm
//! builds only).

use serde_json::{Map, Value};

use crate::bindings::wit;
use crate::{
    Access, AuthnOutcome, AuthzOutcome, Body, CacheHint, Identity, Manifest, Refusal, Request,
};

impl From<CacheHint> for wit::CacheHint {
    fn from(c: CacheHint) -> Self {
        wit::CacheHint {
            ttl_ms: c.ttl_ms,
            vary: c.vary,
        }
    }
}

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
        match r {
            Refusal::Unauthenticated(d) => wit::Refusal::Unauthenticated(d),
            Refusal::Forbidden(d) => wit::Refusal::Forbidden(d),
            Refusal::RateLimited {
                retry_after_s,
                detail,
            } => wit::Refusal::RateLimited(wit::RateLimit {
                retry_after_s,
                detail,
            }),
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
            resource_owner: a.resource_owner,
            caller_tenant: a.caller_tenant,
        }
    }
}

impl From<wit::Request> for Request {
    fn from(r: wit::Request) -> Self {
        Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            client_ip: r.client_ip,
            body: match r.body {
                wit::Body::NotRequested => Body::NotRequested,
                wit::Body::Complete(b) => Body::Complete(b),
                wit::Body::TooLarge(cap) => Body::TooLarge(cap),
            },
        }
    }
}

impl From<Manifest> for wit::Manifest {
    fn from(m: Manifest) -> Self {
        wit::Manifest {
            credential_headers: m.credential_headers,
            outbound_hosts: m.outbound_hosts,
            secrets: m.secrets,
            wants_body: m.wants_body,
        }
    }
}
