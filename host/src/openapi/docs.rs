//! `GET /openapi.json` and the docs page at `DOCS_PATH`: a vendored Swagger
//! UI build embedded in the binary (see `assets/swagger-ui/README.md`), so
//! the page works offline and loads nothing from elsewhere; its
//! Content-Security-Policy only lets it talk to this server.

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

use crate::config::Env;
use crate::settings::SettingError;

/// Where the document is served while docs are on (fixed, as the AgentFlow
/// server's `openapi_url`).
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The docs page's Content-Security-Policy: scripts and styles from this
/// server only, no inline code (Swagger UI sets element styles through the
/// DOM, which the policy allows), its SVG icons as `data:` images, requests
/// ("Try it out") only to this server.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'";

const BUNDLE: &str = include_str!("assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &str = include_str!("assets/swagger-ui/swagger-ui.css");
const START: &str = include_str!("assets/docs.js");

/// Paths the docs page may not take: the gateway's own routes and the
/// agent's (`/v1/...`), which it would shadow.
const RESERVED: &[&str] = &[
    "/v1",
    "/admin",
    "/.well-known",
    "/ping",
    "/ready",
    "/metrics",
    OPENAPI_PATH,
];

/// `DOCS_PATH`: where the docs page is served, or off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocsPath(Option<String>);

impl Default for DocsPath {
    /// `/docs`, as when `DOCS_PATH` is unset.
    fn default() -> Self {
        DocsPath(Some("/docs".into()))
    }
}

impl DocsPath {
    /// Docs and the document turned off (`DOCS_PATH=""`).
    pub fn off() -> DocsPath {
        DocsPath(None)
    }

    /// The page's path, when on.
    pub fn path(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Reads `DOCS_PATH`: unset is `/docs`, empty turns docs off, anything
    /// else must be a plain absolute path (letters, digits, `-._~/`; no
    /// empty, `.` or `..` segments; no trailing slash) that is not one of the
    /// gateway's or the agent's routes.
    pub fn from_env(env: &Env) -> Result<DocsPath, SettingError> {
        let Some(value) = env.get("DOCS_PATH") else {
            return Ok(DocsPath::default());
        };
        let value = value.trim();
        if value.is_empty() {
            return Ok(DocsPath::off());
        }
        let refuse = |reason: String| SettingError {
            name: "DOCS_PATH",
            reason,
        };
        let plain = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '/'));
        let segments_ok = value
            .strip_prefix('/')
            .is_some_and(|rest| rest.split('/').all(|s| !matches!(s, "" | "." | "..")));
        if !plain || !segments_ok {
            return Err(refuse(
                "must be an absolute path like /docs (letters, digits, `-._~/`, no trailing slash), or empty to turn docs off".into(),
            ));
        }
        if let Some(taken) = RESERVED
            .iter()
            .find(|r| value == **r || value.starts_with(&format!("{r}/")))
        {
            return Err(refuse(format!(
                "{value} would shadow {taken}, a route the gateway or the agent serves"
            )));
        }
        Ok(DocsPath(Some(value.to_owned())))
    }
}

/// `/openapi.json` and the docs page with its assets; empty when off.
pub fn router<S: Clone + Send + Sync + 'static>(docs: &DocsPath) -> Router<S> {
    let Some(base) = docs.path() else {
        return Router::new();
    };
    let page = page(base);
    Router::new()
        .route(OPENAPI_PATH, get(openapi_json))
        .route(
            base,
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    page.clone(),
                )
            }),
        )
        .route(
            &format!("{base}/swagger-ui-bundle.js"),
            get(|| asset("text/javascript; charset=utf-8", BUNDLE)),
        )
        .route(
            &format!("{base}/swagger-ui.css"),
            get(|| asset("text/css; charset=utf-8", CSS)),
        )
        .route(
            &format!("{base}/docs.js"),
            get(|| asset("text/javascript; charset=utf-8", START)),
        )
        .layer(middleware::from_fn(security_headers))
}

async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::json()).into_response()
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The page: the vendored bundle, its stylesheet and our start-up script,
/// all from `base` (validated to characters that need no escaping).
fn page(base: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>agentflow API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{base}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec="{OPENAPI_PATH}"></div>
<script src="{base}/swagger-ui-bundle.js"></script>
<script src="{base}/docs.js"></script>
</body>
</html>
"#
    )
}

/// The docs page's CSP and the usual hardening headers on every response
/// (the document too: it is only data, never a page).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
        // The document is an asset other tools fetch; the page's own
        // assets are same-origin anyway.
        ("cache-control", "no-cache"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: Option<&str>) -> Result<DocsPath, SettingError> {
        let env = Env::from_pairs(value.map(|v| ("DOCS_PATH".to_owned(), v.to_owned())));
        DocsPath::from_env(&env)
    }

    #[test]
    fn docs_path_defaults_turns_off_and_is_validated() {
        // The real environment wins over the pairs; these tests need it unset.
        if std::env::var_os("DOCS_PATH").is_some() {
            return;
        }
        assert_eq!(read(None).unwrap().path(), Some("/docs"));
        assert_eq!(read(Some("")).unwrap().path(), None);
        assert_eq!(read(Some("  ")).unwrap().path(), None);
        assert_eq!(read(Some("/api/docs")).unwrap().path(), Some("/api/docs"));
        for bad in [
            "docs",
            "/docs/",
            "/",
            "//docs",
            "/a/../docs",
            "/docs?x=1",
            "/do cs",
            "/d\"><script>",
            "/v1",
            "/v1/docs",
            "/admin/docs",
            "/openapi.json",
            "/ping",
        ] {
            let e = read(Some(bad)).expect_err(bad);
            assert_eq!(e.name, "DOCS_PATH");
        }
        assert!(
            read(Some("/v1x")).is_ok(),
            "only whole segments are reserved"
        );
    }

    #[test]
    fn the_page_names_only_this_server() {
        let html = page("/docs");
        assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("//"));
        assert!(!html.contains("<script>"), "no inline script");
        assert!(!START.contains("http"), "the start-up script calls no one");
    }
}
