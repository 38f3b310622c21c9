//! Forwarding to the agent upstream: what reaches it, what cannot be
//! spoofed, streaming, and the answers when it is missing.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[test]
fn no_auth_mode_forwards_everything_intact() {
    let up = Upstream::start();
    let server = Server::start(json!({"agent": up.base, "auth": null}), &[]);
    let r = send(
        "PUT",
        &server.url("/v1/threads/t-42/state?as_of=3&x=y"),
        &[("x-custom", "kept")],
        Some(json!({"state": {"a": 1}})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.header("x-upstream"),
        Some("yes"),
        "upstream headers come back"
    );
    let seen = up.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path_and_query, "/v1/threads/t-42/state?as_of=3&x=y");
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(seen.json(), json!({"state": {"a": 1}}), "body untouched");
    assert_eq!(
        get(&server.url("/v1/whoami"), &[]).body["user_id"],
        "anonymous"
    );
}

#[test]
fn identity_cannot_be_spoofed() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt", "upstream": {"merge_body": true}}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let token = bearer(&hs256(
        SECRET,
        json!({"sub": "alice", "roles": ["user"], "exp": now() + 600}),
    ));
    let body = json!({"messages": [], "config": {"thread_id": "t1", "user_id": "mallory", "user": {"user_id": "mallory", "roles": ["admin"]}}});
    let r = post(
        &server.url("/v1/graph/invoke"),
        &[
            ("authorization", &token),
            ("x-agentflow-user-id", "mallory"),
            ("x-agentflow-roles", "admin"),
            ("x-agentflow-identity", "e30"),
        ],
        body,
    );
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-agentflow-user-id"), Some("alice"));
    assert_eq!(seen.header("x-agentflow-roles"), Some("user"));
    let identity = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seen.header("x-agentflow-identity").unwrap())
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap()
    };
    assert_eq!(identity["user_id"], "alice");
    let cfg = &seen.json()["config"];
    assert_eq!(cfg["user_id"], "alice");
    assert_eq!(cfg["user"]["user_id"], "alice");
    assert_eq!(cfg["user"]["roles"], json!(["user"]));
    assert_eq!(cfg["thread_id"], "t1", "the rest of config is kept");

    let bad = post(
        &server.url("/v1/graph/invoke"),
        &[("authorization", &token)],
        json!({"config": "x"}),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.detail().contains("config"));
}

#[test]
fn graph_stream_arrives_as_it_is_produced() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let token = bearer(&hs256(SECRET, json!({"sub": "s1", "exp": now() + 600})));
    let started = Instant::now();
    let mut resp = reqwest::blocking::Client::new()
        .post(server.url("/v1/graph/stream"))
        .header("authorization", token)
        .json(&json!({"messages": []}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut first = [0u8; 64];
    let n = resp.read(&mut first).unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("data: {\"n\": 0}"));
    let mut rest = String::new();
    resp.read_to_string(&mut rest).unwrap();
    let all_at = started.elapsed();
    assert!(rest.contains("\"n\": 2"), "{rest}");
    assert!(
        all_at >= Duration::from_millis(550),
        "the upstream takes 600 ms"
    );
    assert!(
        first_at + Duration::from_millis(300) < all_at,
        "first event at {first_at:?}, all at {all_at:?}: not streamed"
    );
}

#[test]
fn unknown_routes_are_404_and_only_after_authentication() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let token = bearer(&hs256(SECRET, json!({"sub": "u", "exp": now() + 600})));
    assert_eq!(get(&server.url("/v1/admin/secrets"), &[]).status, 401);
    for (m, p) in [
        ("GET", "/v1/admin/secrets"),
        ("PATCH", "/v1/threads/t1"),
        ("GET", "/v1/nothing-here"),
        ("GET", "/v1/graph/invoke"),
    ] {
        let r = send(m, &server.url(p), &[("authorization", &token)], None);
        assert_eq!(r.status, 404, "{m} {p}");
        assert_eq!(r.body["code"], "not_found");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn missing_or_down_upstream_is_a_clear_error() {
    let server = Server::start(json!({"auth": null}), &[]);
    let r = post(&server.url("/v1/graph/invoke"), &[], json!({}));
    assert_eq!(r.status, 503);
    assert!(r.detail().contains("agent"), "{:?}", r.body);

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = Server::start(
        json!({"agent": format!("http://{closed}"), "auth": null}),
        &[],
    );
    let r = post(&server.url("/v1/graph/invoke"), &[], json!({}));
    assert_eq!(r.status, 502);
    assert_eq!(r.body["code"], "upstream_unavailable");
}
