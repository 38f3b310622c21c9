//! Contract 0.2.0: its bindings and the one place its types are converted
//! to and from the host's. 0.2 plugins keep loading unchanged next to 0.3
//! ones; what 0.2 lacks (a body, typed refusals, ownership facts) they
//! simply do not see or say.

use super::state::PluginState;
use super::{Access, AuthnOutcome, AuthzOutcome, CacheHint, PluginRequest, Refusal};
use crate::identity::Identity;

/// The `authenticator` world; also home of the shared `types` and `host`
/// interfaces.
pub(crate) mod authn {
    wasmtime::component::bindgen!({
        world: "authenticator",
        path: "../plugin-sdk/wit/v0.2",
        exports: { default: async },
    });
}

/// The `authorizer` world, reusing the types generated above.
pub(crate) mod authz {
    wasmtime::component::bindgen!({
        world: "authorizer",
        path: "../plugin-sdk/wit/v0.2",
        exports: { default: async },
        with: {
            "agentflow:auth/types": super::authn::agentflow::auth::types,
            "agentflow:auth/host": super::authn::agentflow::auth::host,
        },
    });
}

use authn::agentflow::auth::host as wit_host;
pub(crate) use authn::agentflow::auth::types as wit;

/// The request as a 0.2 plugin sees it (no body).
pub(crate) fn request(req: &PluginRequest) -> wit::Request {
    let r = &req.0;
    wit::Request {
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers: r.headers.clone(),
        client_ip: r.client_ip.clone(),
    }
}

/// The caller as a 0.2 authorizer sees it.
pub(crate) fn identity(who: &Identity) -> wit::Identity {
    wit::Identity {
        user_id: who.user_id.clone(),
        roles: who.roles.clone(),
        claims: serde_json::Value::Object(who.claims.clone()).to_string(),
    }
}

/// The access as a 0.2 authorizer sees it (no ownership facts).
pub(crate) fn access(a: &Access) -> wit::Access {
    wit::Access {
        resource: a.resource.to_owned(),
        action: a.action.to_owned(),
        resource_id: a.resource_id.clone(),
    }
}

/// A 0.2 refusal: a free status number, read as the typed refusal it
/// means; other numbers mean 401 from an authenticator, 403 from an
/// authorizer.
fn refusal(r: wit::Refusal, authenticating: bool) -> Refusal {
    match r.status {
        401 => Refusal::Unauthenticated(r.detail),
        403 => Refusal::Forbidden(r.detail),
        429 => Refusal::RateLimited {
            retry_after_s: 1,
            detail: r.detail,
        },
        _ if authenticating => Refusal::Unauthenticated(r.detail),
        _ => Refusal::Forbidden(r.detail),
    }
}

fn hint(c: wit::CacheHint) -> CacheHint {
    CacheHint {
        ttl_ms: c.ttl_ms,
        vary: c.vary,
    }
}

/// A 0.2 authenticator's answer, before the host's checks on identities.
pub(crate) fn authn_outcome(o: wit::AuthnOutcome) -> Result<AuthnOutcome, String> {
    Ok(match o {
        wit::AuthnOutcome::Authenticated(grant) => AuthnOutcome::Authenticated {
            who: super::plugin::checked_identity(
                grant.who.user_id,
                grant.who.roles,
                &grant.who.claims,
            )?,
            cache: grant.cache.map(hint),
        },
        wit::AuthnOutcome::NoCredentials => AuthnOutcome::NoCredentials,
        wit::AuthnOutcome::Refused(r) => AuthnOutcome::Refused(refusal(r, true)),
    })
}

/// A 0.2 authorizer's answer, with its cache hint.
pub(crate) fn authz_outcome(o: wit::AuthzOutcome) -> (AuthzOutcome, Option<CacheHint>) {
    match o {
        wit::AuthzOutcome::Allow(h) => (AuthzOutcome::Allow, h.map(hint)),
        wit::AuthzOutcome::Deny(r) => (AuthzOutcome::Deny(refusal(r, false)), None),
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

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.kv_or_err()?.set(&key, &value, None)
    }
}
