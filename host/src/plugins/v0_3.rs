//! Contract 0.3.0, the current one: its bindings and the conversions
//! between its types and the host's.

use super::state::PluginState;
use super::{Access, AuthnOutcome, AuthzOutcome, CacheHint, Manifest, PluginRequest, Refusal};
use crate::identity::Identity;

/// The `authenticator` world; also home of the shared `types`, `host` and
/// `plugin` interfaces.
pub(crate) mod authn {
    wasmtime::component::bindgen!({
        world: "authenticator",
        path: "../plugin-sdk/wit/v0.3",
        exports: { default: async },
    });
}

/// The `authorizer` world, reusing the types generated above.
pub(crate) mod authz {
    wasmtime::component::bindgen!({
        world: "authorizer",
        path: "../plugin-sdk/wit/v0.3",
        exports: { default: async },
        with: {
            "agentflow:auth/types": super::authn::agentflow::auth::types,
            "agentflow:auth/host": super::authn::agentflow::auth::host,
        },
    });
}

use authn::agentflow::auth::host as wit_host;
pub(crate) use authn::agentflow::auth::types as wit;

/// The request as a 0.3 plugin sees it: with the body only when its
/// manifest asked for it, and only when it fits the operator's cap.
pub(crate) fn request(req: &PluginRequest, wants_body: bool, cap: u32) -> wit::Request {
    let r = &req.0;
    let body = match (&r.body, wants_body) {
        (_, false) => wit::Body::NotRequested,
        // Nothing read: the operator allows this plugin no body at all, or
        // the request view was built without one (`plugin call`).
        (None, true) if cap == 0 => wit::Body::TooLarge(0),
        (None, true) => wit::Body::Complete(Vec::new()),
        (Some(b), true) if b.complete && b.bytes.len() <= cap as usize => {
            wit::Body::Complete(b.bytes.to_vec())
        }
        (Some(_), true) => wit::Body::TooLarge(cap),
    };
    wit::Request {
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers: r.headers.clone(),
        client_ip: r.client_ip.clone(),
        body,
    }
}

/// The caller as a 0.3 authorizer sees it.
pub(crate) fn identity(who: &Identity) -> wit::Identity {
    wit::Identity {
        user_id: who.user_id.clone(),
        roles: who.roles.clone(),
        claims: serde_json::Value::Object(who.claims.clone()).to_string(),
    }
}

/// The access, with the ownership facts tenancy records.
pub(crate) fn access(a: &Access) -> wit::Access {
    wit::Access {
        resource: a.resource.to_owned(),
        action: a.action.to_owned(),
        resource_id: a.resource_id.clone(),
        resource_owner: a.owner.clone(),
        caller_tenant: a.tenant.clone(),
    }
}

fn refusal(r: wit::Refusal) -> Refusal {
    match r {
        wit::Refusal::Unauthenticated(d) => Refusal::Unauthenticated(d),
        wit::Refusal::Forbidden(d) => Refusal::Forbidden(d),
        wit::Refusal::RateLimited(r) => Refusal::RateLimited {
            retry_after_s: r.retry_after_s.max(1),
            detail: r.detail,
        },
    }
}

fn hint(c: wit::CacheHint) -> CacheHint {
    CacheHint {
        ttl_ms: c.ttl_ms,
        vary: c.vary,
    }
}

/// Why a plugin's answer is not an outcome: it said `failed`, or it
/// answered something the host does not accept.
pub(crate) enum NoOutcome {
    /// The plugin reported an infrastructure failure.
    Failed(String),
    /// The answer broke the host's limits.
    Bad(String),
}

/// A 0.3 authenticator's answer.
pub(crate) fn authn_outcome(o: wit::AuthnOutcome) -> Result<AuthnOutcome, NoOutcome> {
    Ok(match o {
        wit::AuthnOutcome::Authenticated(grant) => AuthnOutcome::Authenticated {
            who: super::plugin::checked_identity(
                grant.who.user_id,
                grant.who.roles,
                &grant.who.claims,
            )
            .map_err(NoOutcome::Bad)?,
            cache: grant.cache.map(hint),
        },
        wit::AuthnOutcome::NoCredentials => AuthnOutcome::NoCredentials,
        wit::AuthnOutcome::Refused(r) => AuthnOutcome::Refused(refusal(r)),
        wit::AuthnOutcome::Failed(why) => return Err(NoOutcome::Failed(why)),
    })
}

/// A 0.3 authorizer's answer, with its cache hint.
pub(crate) fn authz_outcome(
    o: wit::AuthzOutcome,
) -> Result<(AuthzOutcome, Option<CacheHint>), NoOutcome> {
    Ok(match o {
        wit::AuthzOutcome::Allow(h) => (AuthzOutcome::Allow, h.map(hint)),
        wit::AuthzOutcome::Deny(r) => (AuthzOutcome::Deny(refusal(r)), None),
        wit::AuthzOutcome::Failed(why) => return Err(NoOutcome::Failed(why)),
    })
}

/// The manifest `init` returned.
pub(crate) fn manifest(m: wit::Manifest) -> Manifest {
    Manifest {
        credential_headers: m
            .credential_headers
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        outbound_hosts: m
            .outbound_hosts
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        secrets: m.secrets,
        wants_body: m.wants_body,
    }
}

impl wit::Host for PluginState {}

impl wit_host::Host for PluginState {
    fn log(&mut self, level: wit_host::Level, message: String) {
        let level = match level {
            wit_host::Level::Debug => tracing::Level::DEBUG,
            wit_host::Level::Info => tracing::Level::INFO,
            wit_host::Level::Warn => tracing::Level::WARN,
            wit_host::Level::Error => tracing::Level::ERROR,
        };
        self.log_line(level, &message);
    }

    fn config(&mut self) -> String {
        self.config_json()
    }

    fn secret(&mut self, name: String) -> Option<String> {
        self.secret_value(&name)
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.kv()?.get(&key)
    }

    fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        expires_in_s: Option<u32>,
    ) -> Result<(), String> {
        self.kv_or_err()?.set(&key, &value, expires_in_s)
    }

    fn kv_compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        expires_in_s: Option<u32>,
    ) -> Result<bool, String> {
        self.kv_or_err()?
            .compare_and_swap(&key, expected.as_deref(), &new, expires_in_s)
    }

    fn kv_increment(
        &mut self,
        key: String,
        delta: i64,
        expires_in_s: Option<u32>,
    ) -> Result<i64, String> {
        self.kv_or_err()?.increment(&key, delta, expires_in_s)
    }
}
