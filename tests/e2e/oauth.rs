//! The oauth-introspect plugin against a small RFC 7662 introspection
//! server on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde_json::json;

use crate::support::*;

const CLIENT_SECRET: &str = "introspection-client-secret";

/// An introspection endpoint knowing two tokens: `good-token` (alice,
/// scopes `user read`, valid ten minutes) and `revoked-token`.
struct Introspector {
    addr: String,
    hits: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl Introspector {
    fn start() -> Introspector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = Router::new()
            .route("/introspect", post(introspect))
            .with_state(hits.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Introspector {
            addr,
            hits,
            _runtime: runtime,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn introspect(
    State(hits): State<Arc<AtomicUsize>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("agentflow:{CLIENT_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            "bad client credentials",
        )
            .into_response();
    }
    let token = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or_default();
    let answer = match token {
        "good-token" => json!({
            "active": true, "sub": "alice", "scope": "user read", "client_id": "web",
            "exp": now() + 600, "iss": "https://issuer.test",
        }),
        _ => json!({"active": false}),
    };
    axum::Json(answer).into_response()
}

fn oauth_config(idp: &Introspector, secret_name: &str) -> serde_json::Value {
    json!({"auth": {
        "method": "custom", "name": "oauth", "path": plugins().oauth,
        "secrets": ["OAUTH_CLIENT_SECRET"],
        "allowed_hosts": [idp.addr],
        "timeout_ms": 3000,
        "config": {
            "introspection_url": format!("http://{}/introspect", idp.addr),
            "client_id": "agentflow",
            "client_secret": secret_name,
        },
    }})
}

#[test]
fn active_tokens_authenticate_and_are_cached() {
    let idp = Introspector::start();
    let server = Server::start(
        oauth_config(&idp, "OAUTH_CLIENT_SECRET"),
        &[("OAUTH_CLIENT_SECRET", CLIENT_SECRET)],
    );
    let r = get(
        &server.url("/v1/whoami"),
        &[("authorization", "Bearer good-token")],
    );
    assert_eq!(r.status, 200, "{:?}\n{}", r.body, server.logs());
    assert_eq!(r.body["user_id"], "alice");
    assert_eq!(r.body["roles"], json!(["user", "read"]));
    assert_eq!(r.body["claims"]["iss"], "https://issuer.test");
    assert_eq!(idp.hits(), 1);

    // The positive answer is reused from the plugin's kv.
    let r = get(
        &server.url("/v1/whoami"),
        &[("authorization", "Bearer good-token")],
    );
    assert_eq!(r.body["user_id"], "alice");
    assert_eq!(
        idp.hits(),
        1,
        "the second request was answered from the cache"
    );

    let r = get(
        &server.url("/v1/whoami"),
        &[("authorization", "Bearer revoked-token")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.detail(), "token is not active");
    assert_eq!(idp.hits(), 2);
    // Negative answers are not cached.
    get(
        &server.url("/v1/whoami"),
        &[("authorization", "Bearer revoked-token")],
    );
    assert_eq!(idp.hits(), 3);

    let r = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "not_authenticated");
}

#[test]
fn wrong_client_credentials_fail_closed() {
    let idp = Introspector::start();
    let server = Server::start(
        oauth_config(&idp, "OAUTH_CLIENT_SECRET"),
        &[("OAUTH_CLIENT_SECRET", "wrong-secret-value-xyz")],
    );
    let r = get(
        &server.url("/v1/whoami"),
        &[("authorization", "Bearer good-token")],
    );
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["code"], "plugin_failed");
    assert!(server.logged("answered HTTP 401"), "{}", server.logs());
    assert!(
        !server.logs().contains("wrong-secret-value-xyz"),
        "the secret is not logged"
    );
}

#[test]
fn an_ungranted_client_secret_is_reported() {
    // The plugin's manifest names the secret it reads; one that is not
    // granted stops the server at start, naming the key to fix, instead of
    // failing every request.
    let idp = Introspector::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(&path, oauth_config(&idp, "SOME_OTHER_SECRET").to_string()).unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[("SOME_OTHER_SECRET", CLIENT_SECRET)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("auth.secrets") && err.contains("SOME_OTHER_SECRET"),
        "{err}"
    );
    assert_eq!(idp.hits(), 0);
}
