//! Audit events of plugins and refusals: loaded at start, reloaded, reload
//! refused, failed closed; authorization denials aggregated per caller and
//! route under a flood.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const ADMIN_PW: &str = "admin-password-1";

fn login(server: &Server, username: &str, password: &str) -> String {
    let r = post(
        &server.url("/v1/login"),
        &[],
        json!({"username": username, "password": password}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    bearer(r.body["access_token"].as_str().unwrap())
}

fn events(server: &Server, admin: &str, kind: &str) -> Vec<Value> {
    let r = get(
        &server.url(&format!("/v1/audit?type={kind}&limit=500")),
        &[("authorization", admin)],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

/// Waits until `check` holds for the events of `kind`; panics with the trail.
fn wait_events(
    server: &Server,
    admin: &str,
    kind: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let ok = wait_for(Duration::from_secs(15), || {
        seen = events(server, admin, kind);
        check(&seen)
    });
    assert!(ok.is_some(), "{kind}: {seen:#?}\n{}", server.logs());
    seen
}

#[test]
fn plugin_lifecycle_failures_and_flooding_denials_are_audited() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("auth.wasm");
    std::fs::copy(&plugins().hostile, &wasm).unwrap();
    let config = json!({
        "agent": up.base,
        "auth": ["jwt", {"method": "custom", "name": "fragile", "path": wasm, "config": {"mode": "trap"}}],
        "authorization": {"name": "policy", "path": plugins().rbac, "config": {"roles": {
            "admin": {"*": ["*"]},
            "user": {"graph": ["invoke"]}
        }}},
        "plugins": {"watch": true},
    });
    let server = Server::start(
        config,
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("AGENTFLOW_SUPERUSER", "admin"),
            ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
            ("AGENTFLOW_NEW_USER_IS_ACTIVE", "True"),
            ("AGENTFLOW_AUDIT_FLOOD_WINDOW_SECONDS", "3"),
        ],
    );
    let admin = login(&server, "admin", ADMIN_PW);

    // Loaded at start, with slot and sha256.
    let loaded = events(&server, &admin, "plugin.loaded");
    let mut names: Vec<&str> = loaded
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["fragile", "policy"]);
    let fragile = loaded.iter().find(|e| e["subject"] == "fragile").unwrap();
    assert_eq!(fragile["details"]["slot"], "authenticator");
    assert_eq!(fragile["details"]["sha256"].as_str().unwrap().len(), 64);

    // A request without a JWT reaches the trapping plugin: 503, failed closed.
    let r = get(&server.url("/v1/threads"), &[]);
    assert_eq!(r.status, 503, "{:?}", r.body);
    let failed = wait_events(&server, &admin, "plugin.failed_closed", |e| !e.is_empty());
    assert_eq!(failed[0]["subject"], "fragile");
    assert_eq!(failed[0]["details"]["path"], "/v1/threads");
    assert_eq!(failed[0]["client_ip"], "127.0.0.1");
    assert_eq!(failed[0]["request_id"].as_str(), r.header("x-request-id"));

    // The plugin listing shows the contract and the call latency.
    let listed = get(&server.url("/v1/plugins"), &[("authorization", &admin)]);
    let status = listed.body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "fragile")
        .unwrap()
        .clone();
    assert_eq!(status["contract"], "0.2.0");
    assert_eq!(status["failures"], 1);
    let (p50, p99) = (
        status["latency_p50_us"].as_u64().unwrap(),
        status["latency_p99_us"].as_u64().unwrap(),
    );
    assert!(p50 >= 1 && p50 <= p99 && p99.is_power_of_two(), "{status}");

    // Denials: the first one at once, a flood as one aggregate.
    let created = post(
        &server.url("/v1/users"),
        &[("authorization", &admin)],
        json!({"username": "eve", "password": "eve-password"}),
    );
    assert_eq!(created.status, 201);
    let eve = login(&server, "eve", "eve-password");
    for _ in 0..25 {
        let r = send(
            "DELETE",
            &server.url("/v1/threads/t-1"),
            &[("authorization", &eve)],
            None,
        );
        assert_eq!(r.status, 403, "{:?}", r.body);
    }
    let other = send(
        "GET",
        &server.url("/v1/threads"),
        &[("authorization", &eve)],
        None,
    );
    assert_eq!(other.status, 403);
    let denied = wait_events(&server, &admin, "access.denied", |e| {
        e.iter().any(|e| e["details"]["aggregated"] == true)
    });
    let on = |path: &str, aggregated: bool| {
        denied
            .iter()
            .filter(|e| {
                e["details"]["path"] == path && (e["details"]["aggregated"] == true) == aggregated
            })
            .count()
    };
    assert_eq!(
        on("/v1/threads/t-1", false),
        1,
        "one event recorded at once: {denied:#?}"
    );
    assert_eq!(
        on("/v1/threads/t-1", true),
        1,
        "one aggregate for the flood"
    );
    assert_eq!(on("/v1/threads", false), 1, "another route is its own key");
    let aggregate = denied
        .iter()
        .find(|e| e["details"]["aggregated"] == true)
        .unwrap();
    assert_eq!(aggregate["details"]["count"], 24);
    assert_eq!(aggregate["actor"], "eve");
    assert_eq!(aggregate["details"]["method"], "DELETE");
    assert!(denied.len() < 10, "a flood does not flood the trail");

    // Reloaded: a new build swapped in.
    std::fs::write(&wasm, std::fs::read(&plugins().probe).unwrap()).unwrap();
    let reloaded = wait_events(&server, &admin, "plugin.reloaded", |e| !e.is_empty());
    assert_eq!(reloaded[0]["subject"], "fragile");
    assert_ne!(
        reloaded[0]["details"]["sha256"],
        fragile["details"]["sha256"]
    );

    // A broken build is refused and recorded with why.
    std::fs::write(&wasm, b"\0asm this is not a component").unwrap();
    let refused = wait_events(&server, &admin, "plugin.reload_failed", |e| !e.is_empty());
    assert_eq!(refused[0]["subject"], "fragile");
    assert!(
        refused[0]["details"]["error"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{:?}",
        refused[0]
    );
}
