//! Refusals in both shapes (agentflow's `detail`/`code` and the AgentFlow
//! server's envelope its clients read) and request ids on every response.

use serde_json::json;

use crate::support::*;

/// What the official AgentFlow client does with an error body: it reads
/// `error.message` (and crashes when `error` is missing) and classifies by
/// status. Kept as data checks so the test fails if either shape drifts.
fn agentflow_client_error(r: &Reply) -> (&'static str, String) {
    let message = r.body["error"]["message"]
        .as_str()
        .expect("AgentFlow clients read error.message")
        .to_owned();
    let class = match r.status {
        401 => "AuthenticationError",
        403 => "PermissionError",
        404 => "NotFoundError",
        _ => "ApiError",
    };
    (class, message)
}

#[test]
fn refusals_carry_both_shapes_and_the_request_id() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );

    let r = get(&server.url("/v1/threads"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "not_authenticated");
    assert_eq!(r.body["detail"], "Not authenticated");
    assert_eq!(r.body["error"]["code"], "NOT_AUTHENTICATED");
    assert_eq!(r.body["error"]["details"], json!([]));
    let id = r
        .header("x-request-id")
        .expect("every response has x-request-id")
        .to_owned();
    assert_eq!(r.body["metadata"]["request_id"], id.as_str());
    assert!(
        r.body["metadata"]["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
        "{:?}",
        r.body
    );
    assert_eq!(
        agentflow_client_error(&r),
        ("AuthenticationError", "Not authenticated".to_owned())
    );

    // An expired token is an authentication error the client can recognise.
    let expired = bearer(&hs256(SECRET, json!({"sub": "alice", "exp": now() - 3600})));
    let r = get(&server.url("/v1/threads"), &[("authorization", &expired)]);
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "INVALID_TOKEN");
    assert_eq!(agentflow_client_error(&r).0, "AuthenticationError");
    assert!(agentflow_client_error(&r).1.contains("expired"));

    let token = bearer(&hs256(SECRET, json!({"sub": "alice", "exp": now() + 600})));
    let r = get(&server.url("/v1/nowhere"), &[("authorization", &token)]);
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "NOT_FOUND");
    assert_eq!(up.count(), 0, "nothing was forwarded");
}

#[test]
fn request_ids_are_echoed_when_safe_and_forwarded() {
    let up = Upstream::start();
    let server = Server::start(json!({"agent": up.base, "auth": null}), &[]);

    let r = get(
        &server.url("/v1/threads"),
        &[("x-request-id", "trace-42.a:b_c")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("trace-42.a:b_c"));
    assert_eq!(
        up.last().header("x-request-id"),
        Some("trace-42.a:b_c"),
        "the agent sees the same id"
    );

    // Unsafe or oversized ids are replaced, never echoed.
    for bad in ["has space", "<script>", &"x".repeat(200)] {
        let r = get(&server.url("/v1/threads"), &[("x-request-id", bad)]);
        let id = r.header("x-request-id").unwrap().to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 36, "a fresh UUID: {id}");
        assert_eq!(up.last().header("x-request-id"), Some(id.as_str()));
    }

    // Public routes too, and two requests never share an id.
    let a = get(&server.url("/ping"), &[]);
    let b = get(&server.url("/ping"), &[]);
    assert_ne!(
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap()
    );
}
