//! What the performance work changes for users: cached plugin answers and
//! compiled plugins kept across restarts.

use serde_json::json;

use crate::support::*;

fn cache_hint_server(ttl_ms: u32) -> Server {
    let plugin = json!({
        "method": "custom", "name": "cached", "path": plugins().cache_hint,
        "config": {"token": "tok-1", "user_id": "cached-admin", "roles": ["admin"], "ttl_ms": ttl_ms}
    });
    Server::start(json!({"auth": plugin}), &[])
}

fn counts(server: &Server) -> (u64, u64) {
    let r = get(&server.url("/v1/plugins"), &[("x-api-key", "tok-1")]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let p = r.body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cached")
        .unwrap()
        .clone();
    (
        p["calls"].as_u64().unwrap(),
        p["cache_hits"].as_u64().unwrap(),
    )
}

#[test]
fn a_cache_hint_answers_repeated_credentials_without_calling_the_plugin() {
    let server = cache_hint_server(60_000);
    for _ in 0..3 {
        let r = get(&server.url("/v1/whoami"), &[("x-api-key", "tok-1")]);
        assert_eq!(r.body["user_id"], "cached-admin");
    }
    let (calls, hits) = counts(&server);
    assert_eq!(calls, 1, "only the first request reached the plugin");
    assert_eq!(
        hits, 3,
        "the other three (and the listing) came from the cache"
    );

    // Other credentials are not served from the cache.
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("x-api-key", "tok-2")]).status,
        401
    );
    assert_eq!(get(&server.url("/v1/whoami"), &[]).status, 401);
    let (calls, _) = counts(&server);
    assert_eq!(
        calls, 3,
        "refusals and missing credentials are asked every time"
    );
}

#[test]
fn cached_answers_expire() {
    let server = cache_hint_server(50);
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("x-api-key", "tok-1")]).status,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(120));
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("x-api-key", "tok-1")]).status,
        200
    );
    let (calls, _) = counts(&server);
    assert!(
        calls >= 2,
        "the expired answer was asked again ({calls} calls)"
    );
}

#[test]
fn compiled_plugins_are_reused_across_restarts() {
    let server = Server::start(
        json!({"auth": {"method": "custom", "path": plugins().api_key, "config": {"keys": []}}}),
        &[],
    );
    let compiled = server.dir.path().join("data").join("compiled");
    let files: Vec<_> = std::fs::read_dir(&compiled)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    let server = server.restart(&[]);
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("x-api-key", "k")]).status,
        401,
        "the cached compilation serves"
    );
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written,
        "not compiled again"
    );
}

fn memory_probe(reuse: Option<bool>) -> Server {
    let mut plugin = json!({"method": "custom", "name": "probe", "path": plugins().probe, "config": {"mode": "memory"}});
    if let Some(reuse) = reuse {
        plugin["reuse_instance"] = json!(reuse);
    }
    Server::start(json!({"auth": plugin}), &[])
}

fn whoami_as(server: &Server, caller: &str) -> serde_json::Value {
    let r = get(&server.url("/v1/whoami"), &[("x-caller", caller)]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["claims"].clone()
}

#[test]
fn every_call_gets_a_fresh_sandbox_by_default() {
    for server in [memory_probe(None), memory_probe(Some(false))] {
        for caller in ["alice", "bob", "carol"] {
            let claims = whoami_as(&server, caller);
            assert_eq!(claims["seen"], 1, "nothing survives a call: {claims}");
            assert_eq!(
                claims["last_caller"], "",
                "no caller sees the one before: {claims}"
            );
        }
    }
}

#[test]
fn reuse_instance_keeps_a_warm_sandbox_and_its_memory() {
    let server = memory_probe(Some(true));
    // Requests one after another find the same idle sandbox; the plugin's
    // memory carries over, which is the trade-off the opt-in accepts.
    let first = whoami_as(&server, "alice");
    assert_eq!(first["seen"], 1);
    let second = whoami_as(&server, "bob");
    assert_eq!(second["seen"], 2, "{second}");
    assert_eq!(second["last_caller"], "alice", "{second}");
}

#[test]
fn a_reused_sandbox_that_fails_is_thrown_away() {
    let server = memory_probe(Some(true));
    assert_eq!(whoami_as(&server, "alice")["seen"], 1);
    // The warm sandbox takes this call and traps in it: 503, and it is gone.
    let r = get(
        &server.url("/v1/whoami"),
        &[("x-caller", "mallory"), ("x-fail", "1")],
    );
    assert_eq!(r.status, 503, "{:?}", r.body);
    let next = whoami_as(&server, "bob");
    assert_eq!(
        next["seen"], 1,
        "a new sandbox serves after a failure: {next}"
    );
    assert_eq!(next["last_caller"], "", "{next}");
}
