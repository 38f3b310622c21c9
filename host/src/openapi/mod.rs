//! The OpenAPI 3.1 document served at `/openapi.json` and the offline docs
//! page at `DOCS_PATH` (default `/docs`; `DOCS_PATH=""` turns both off, as
//! the AgentFlow server's setting does).
//!
//! The document is generated, not written by hand: the gateway's own routes
//! from their handlers' `#[utoipa::path]` annotations and their types'
//! `ToSchema` derives, the proxied AgentFlow routes from the route table the
//! proxy classifies requests with ([`crate::agent_request::ROUTES`], see
//! [`agent_routes`]), and the refusals every route can get from the layers
//! in front of the handlers (authentication, body parsing, rate limits,
//! loading) from [`layers`].

mod agent_routes;
mod docs;
mod layers;

use std::sync::OnceLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use agent_routes::AgentRoutes;
use layers::LayerResponses;

pub use docs::{DocsPath, router};

/// The gateway's own routes, from their handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentflow",
        description = "Authentication and authorization gateway in front of an AgentFlow agent API. \
            The gateway's own routes (login, accounts, API keys, variables, plugins, audit, \
            forward-auth, health) are served here; every other documented route is the agent's, \
            forwarded after authentication and an authorization check on its resource and action \
            (`x-agentflow-access`).",
    ),
    paths(
        crate::routes::ping,
        crate::readiness::ready,
        crate::routes::metrics::metrics,
        crate::routes::jwks::jwks,
        crate::routes::auth::login,
        crate::routes::auth::refresh,
        crate::routes::auth::logout,
        crate::routes::auth::auto_login,
        crate::routes::whoami::whoami,
        crate::routes::users::whoami,
        crate::routes::users::list,
        crate::routes::users::create,
        crate::routes::users::update,
        crate::routes::users::delete,
        crate::routes::api_keys::list,
        crate::routes::api_keys::create,
        crate::routes::api_keys::delete,
        crate::routes::variables::list,
        crate::routes::variables::create,
        crate::routes::variables::update,
        crate::routes::variables::delete,
        crate::routes::plugins::list,
        crate::routes::audit::list,
        crate::routes::verify::verify,
    ),
    modifiers(&SecuritySchemes, &LayerResponses, &AgentRoutes),
    tags(
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "login", description = "Password login and the token pair it hands out"),
        (name = "identity", description = "Who the caller is, and the keys the gateway signs with"),
        (name = "users", description = "Accounts (superusers manage everyone's)"),
        (name = "api keys", description = "The caller's API keys, for the `x-api-key` header"),
        (name = "variables", description = "The caller's encrypted variables"),
        (name = "plugins", description = "What the loaded WebAssembly plugins are running"),
        (name = "audit", description = "The audit trail"),
        (name = "forward-auth", description = "Authorization answers for a proxy in front of the agent (nginx, Traefik, Envoy)"),
    ),
)]
struct GatewayApi;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    GatewayApi::openapi()
}

/// The document as JSON, built once (it only depends on the binary).
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_json()
            .expect("the generated OpenAPI document serializes")
    })
}

/// The credentials the gateway's built-in methods read (plugins may read
/// others; those are the deployment's, not the API's).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /v1/login`, or a JWT the `jwt` method accepts",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "A key from `POST /v1/api-keys`",
            ))),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(json()).unwrap()
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_gateway_and_agent_routes() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/login",
            "/v1/refresh",
            "/v1/users",
            "/v1/users/{id}",
            "/v1/api-keys",
            "/v1/variables/{id}",
            "/v1/plugins",
            "/v1/audit",
            "/v1/auth/verify",
            "/v1/auth/verify/{original}",
            "/v1/graph/invoke",
            "/v1/threads/{thread_id}/messages/{message_id}",
        ] {
            assert!(paths.contains_key(path), "{path} is missing");
        }
        // Every route of the proxy's table is documented, with its access.
        for route in crate::agent_request::ROUTES {
            let op = &paths[route.pattern][route.method.to_ascii_lowercase()];
            assert_eq!(
                op["x-agentflow-access"]["resource"], route.resource,
                "{} {}",
                route.method, route.pattern
            );
            assert_eq!(op["x-agentflow-access"]["action"], route.action);
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = doc();
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{ids:?}");
        assert!(n > 50, "{n}");
    }

    #[test]
    fn layer_refusals_are_documented_where_the_layers_run() {
        let doc = doc();
        let users = &doc["paths"]["/v1/users"]["post"]["responses"];
        for status in [
            "400", "401", "403", "409", "413", "415", "422", "429", "503",
        ] {
            assert!(users.get(status).is_some(), "POST /v1/users lacks {status}");
        }
        // Per-handler text wins over the generic one.
        assert_eq!(users["403"]["description"], "The caller is not a superuser");
        let ping = &doc["paths"]["/ping"]["get"]["responses"];
        assert!(ping.get("401").is_none() && ping.get("503").is_none());
        assert!(doc["paths"]["/v1/login"]["post"]["security"].is_null());
    }

    #[test]
    fn error_bodies_match_the_error_type() {
        let doc = doc();
        let schema = &doc["components"]["schemas"]["ErrorBody"];
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let body = crate::error::envelope("forbidden", "no");
        for field in required {
            assert!(body.get(field).is_some(), "{field}");
        }
    }
}
