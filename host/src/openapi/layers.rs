//! Refusals that come from the layers in front of a handler rather than the
//! handler itself, added to each gateway operation they can reach (a
//! handler's own description of the same status wins):
//!
//! - every route but `/ping` answers 503 while the server is still loading
//!   (and when the account database or a fail-closed plugin is down);
//! - every route can answer 429 from the per-address rate limit;
//! - authenticated routes answer 401 without valid credentials;
//! - routes that read a body refuse malformed, slow, large or mistyped ones
//!   (see [`crate::extract`]);
//! - routes with path or query parameters refuse invalid ones with 400.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder, Type,
};
use utoipa::{Modify, PartialSchema};

/// See the module documentation.
pub struct LayerResponses;

impl Modify for LayerResponses {
    fn modify(&self, doc: &mut OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let liveness = path == "/ping";
            for op in operations(item) {
                add_layer_responses(op, liveness);
            }
        }
    }
}

/// Every operation of a path item.
pub fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn add_layer_responses(op: &mut Operation, liveness: bool) {
    let mut add = |status: &str, response: Response| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(response));
    };
    if !liveness {
        add(
            "503",
            error(
                "The server is still loading, or the account database or a fail-closed plugin is unavailable",
            ),
        );
    }
    add("429", too_many());
    if op.security.is_some() {
        add("401", not_authenticated());
    }
    if op.request_body.is_some() {
        add("400", error("The body is not valid JSON (or form data)"));
        add(
            "408",
            error("The body did not arrive within `AGENTFLOW_BODY_TIMEOUT_MS`"),
        );
        add("413", error("The body is larger than the route accepts"));
        add(
            "415",
            error("The body's `Content-Type` is not one the route reads"),
        );
        add(
            "422",
            error("The body does not have the expected shape (names the field, never the value)"),
        );
    }
    let has_params = op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query),
        RefOr::Ref(_) => false,
    });
    if has_params {
        add("400", error("A path or query parameter is not valid"));
    }
}

/// A refusal with the [`ErrorBody`] shape.
pub fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// 401, with the `WWW-Authenticate` challenge.
pub fn not_authenticated() -> Response {
    let mut response = error("No credentials, or credentials that are not valid");
    response.headers.insert(
        "www-authenticate".into(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(String::schema()))
                .description(Some(
                    "`Bearer`, with `error=\"invalid_token\"` when a token was refused",
                ))
                .build(),
        ),
    );
    response
}

/// 429, with `Retry-After`.
fn too_many() -> Response {
    let mut response =
        error("A rate limit (`rate_limits`) or the login throttle refused the request");
    response.headers.insert(
        "retry-after".into(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .build(),
                ))
                .description(Some("Seconds to wait"))
                .build(),
        ),
    );
    response
}
