//! The AgentFlow routes the gateway forwards, documented from the proxy's
//! own route table ([`ROUTES`]): one operation per row, with the resource
//! and action the authorizer is asked about (`x-agentflow-access`), where
//! the resource id is read from, and the gateway's refusals. What the agent
//! answers is the agent's (`default`): its schemas are in its own
//! `/openapi.json`, which the gateway does not forward.
//!
//! Also the Envoy form of forward-auth (`/v1/auth/verify/{original}`): the
//! same handler as `/v1/auth/verify`, so the same operation with the
//! original path as a parameter instead of the headers.

use serde_json::json;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi, RefOr, Required, ResponseBuilder, Type,
};
use utoipa::{Modify, PartialSchema};

use super::layers::{error, not_authenticated, operations};
use crate::agent_request::{BodyId, IdSource, ROUTES, Route};
use crate::routes::verify::VERIFY_PATH;

/// See the module documentation.
pub struct AgentRoutes;

impl Modify for AgentRoutes {
    fn modify(&self, doc: &mut OpenApi) {
        add_envoy_verify(doc);
        for route in ROUTES {
            let method = http_method(route.method);
            let op = operation(route);
            let item = doc.paths.paths.entry(route.pattern.to_owned()).or_default();
            item.merge_operations(PathItem::new(method, op));
        }
        let tags = doc.tags.get_or_insert_with(Vec::new);
        for (resource, what) in [
            ("graph", "runs of the agent's graph"),
            ("checkpointer", "threads, their state and messages"),
            ("store", "long-term memories"),
            ("files", "uploaded files"),
            ("config", "the agent's configuration"),
        ] {
            tags.push(
                TagBuilder::new()
                    .name(tag(resource))
                    .description(Some(format!(
                        "AgentFlow routes on `{resource}` ({what}), forwarded to the agent"
                    )))
                    .build(),
            );
        }
    }
}

/// The tag of an agent resource.
fn tag(resource: &str) -> String {
    format!("agent: {resource}")
}

fn http_method(method: &str) -> HttpMethod {
    match method {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "DELETE" => HttpMethod::Delete,
        "PATCH" => HttpMethod::Patch,
        other => unreachable!("the route table has no {other} route"),
    }
}

/// Where the authorizer's resource id comes from, for people and for tools.
fn id_source(id: IdSource) -> (serde_json::Value, &'static str) {
    match id {
        IdSource::None => (
            serde_json::Value::Null,
            "The route names no single resource.",
        ),
        IdSource::Path(name) => (
            json!({"in": "path", "name": name}),
            "The resource id is the path parameter named in `x-agentflow-access.id`.",
        ),
        IdSource::Body(BodyId::RunThread) => (
            json!({"in": "body", "name": "config.thread_id", "or": "thread_id", "required": false}),
            "The thread id is read from the JSON body (`config.thread_id` or `thread_id`; optional, the agent makes a thread); both given and different is refused with 400.",
        ),
        IdSource::Body(BodyId::RequiredThread) => (
            json!({"in": "body", "name": "thread_id", "required": true}),
            "The thread id is the body's `thread_id` (required, non-blank; `config.thread_id`, if given, must be the same), else 400.",
        ),
        IdSource::Body(BodyId::AgUiThread) => (
            json!({"in": "body", "name": "threadId", "required": false}),
            "The thread id is the body's `threadId`.",
        ),
    }
}

fn operation(route: &Route) -> Operation {
    let (id, id_text) = id_source(route.id);
    let websocket = if route.websocket {
        " A WebSocket endpoint: the upgrade request is what is authorized; run ids travel in the frames."
    } else {
        ""
    };
    let description = format!(
        "Forwarded to the agent after authentication and the authorization check on \
         resource `{}`, action `{}`. {id_text}{websocket} The answer is the agent's, passed \
         through; the gateway's own refusals use the `ErrorBody` shape.",
        route.resource, route.action
    );
    let access = ExtensionsBuilder::new()
        .add(
            "x-agentflow-access",
            json!({
                "resource": route.resource,
                "action": route.action,
                "id": id,
                "websocket": route.websocket,
            }),
        )
        .build();
    let mut op = OperationBuilder::new()
        .tag(tag(route.resource))
        .summary(Some(format!("{} · {}", route.resource, route.action)))
        .description(Some(description))
        .operation_id(Some(operation_id(route)))
        .securities(Some([
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("api_key", Vec::<String>::new()),
        ]))
        .extensions(Some(access))
        .response(
            "default",
            ResponseBuilder::new()
                .description("The agent's answer (any status and media type), passed through")
                .build(),
        )
        .response("401", not_authenticated())
        .response(
            "403",
            error("The authorizer (or tenancy) refuses this resource and action"),
        )
        .response(
            "502",
            error("The agent is unreachable"),
        )
        .response(
            "503",
            error("No agent is configured, the server is still loading, or a fail-closed plugin is unavailable"),
        );
    for name in placeholders(route.pattern) {
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(String::schema())),
        );
    }
    if let Some(body) = request_body(route) {
        op = op.request_body(Some(body));
    }
    op.build()
}

/// `agent_post_v1_graph_invoke`: unique, stable, readable.
fn operation_id(route: &Route) -> String {
    let path: String = route
        .pattern
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = path
        .split('_')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    format!("agent_{}_{path}", route.method.to_ascii_lowercase())
}

/// The `{name}` placeholders of a pattern.
fn placeholders(pattern: &str) -> impl Iterator<Item = &str> {
    pattern
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// What the agent reads: multipart for uploads, JSON for the other writes.
fn request_body(route: &Route) -> Option<utoipa::openapi::request_body::RequestBody> {
    if !matches!(route.method, "POST" | "PUT" | "PATCH") {
        return None;
    }
    let (media, schema) = if route.pattern == "/v1/files/upload" {
        (
            "multipart/form-data",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "file",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .content_media_type("application/octet-stream"),
                )
                .required("file")
                .build(),
        )
    } else {
        let body = match route.id {
            // The id checks read an object; anything else is the agent's to refuse.
            IdSource::Body(BodyId::RequiredThread) => ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "thread_id",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .pattern(Some("\\S")),
                )
                .required("thread_id")
                .build(),
            IdSource::Body(_) => ObjectBuilder::new().schema_type(Type::Object).build(),
            _ => ObjectBuilder::new().build(),
        };
        ("application/json", body)
    };
    Some(
        RequestBodyBuilder::new()
            .description(Some("The agent's request body (see the agent's own API)"))
            .required(Some(Required::True))
            .content(media, ContentBuilder::new().schema(Some(schema)).build())
            .build(),
    )
}

/// `/v1/auth/verify/{original}`: the `/v1/auth/verify` operation with the
/// original path as a path parameter (Envoy `path_prefix`) instead of the
/// original method and URI headers.
fn add_envoy_verify(doc: &mut OpenApi) {
    let Some(mut item) = doc.paths.paths.get(VERIFY_PATH).cloned() else {
        return;
    };
    for op in operations(&mut item) {
        op.operation_id = Some("verify_path_prefix".into());
        op.description = Some(
            "Envoy `ext_authz` over HTTP with `path_prefix: /v1/auth/verify`: the original \
             path (and query) follows the prefix and the original method is this request's \
             own, so every method is accepted. Answers as `/v1/auth/verify`."
                .into(),
        );
        op.parameters = Some(vec![RefOr::T(
            ParameterBuilder::new()
                .name("original")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(
                    "The original path without its leading slash (`v1/threads/t1`)",
                ))
                .schema(Some(String::schema()))
                .build(),
        )]);
    }
    doc.paths
        .paths
        .insert(format!("{VERIFY_PATH}/{{original}}"), item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique_and_placeholders_are_found() {
        let mut ids: Vec<String> = ROUTES.iter().map(operation_id).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
        assert_eq!(
            placeholders("/v1/threads/{thread_id}/messages/{message_id}").collect::<Vec<_>>(),
            ["thread_id", "message_id"]
        );
        assert_eq!(
            operation_id(&ROUTES[3]),
            "agent_get_v1_graph_StateSchema",
            "{:?}",
            ROUTES[3]
        );
    }
}
