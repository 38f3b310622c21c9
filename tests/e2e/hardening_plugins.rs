//! Hardening of the plugin host (issue 9, items 2, 13 and 15), tried as an
//! attacker would: a careless cache hint must not hand an identity to
//! anonymous callers, a plugin cannot flood the server log or get query
//! strings logged, and two plugins cannot share one store by name.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// The cache-hint fixture accepting `x-api-key: k1` as alice (role admin),
/// with a hint that varies on `vary`.
fn cached_alice(vary: &[&str]) -> Value {
    json!({
        "method": "custom", "name": "careless-cache", "path": plugins().cache_hint,
        "config": {"token": "k1", "user_id": "alice", "roles": ["admin"], "ttl_ms": 60_000, "vary": vary},
    })
}

#[test]
fn a_cached_identity_never_answers_a_request_without_its_vary_headers() {
    let up = Upstream::start();
    // The plugin reads its credential from x-api-key but says the answer
    // varies on x-tenant, which the authenticated request does not carry.
    let server = Server::start(
        json!({"agent": up.base, "auth": cached_alice(&["x-tenant"])}),
        &[],
    );

    let r = get(&server.url("/v1/whoami"), &[("x-api-key", "k1")]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user_id"], "alice");

    let anonymous = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(
        anonymous.status, 401,
        "an anonymous request got a cached identity: {:?}",
        anonymous.body
    );
    assert_eq!(
        anonymous.body["code"], "not_authenticated",
        "{:?}",
        anonymous.body
    );
    assert!(!anonymous.detail().is_empty());

    let r = post(
        &server.url("/v1/graph/invoke"),
        &[],
        json!({"messages": []}),
    );
    assert_eq!(r.status, 401, "{:?}", r.body);
    // A blank vary header is no credential either.
    let r = post(
        &server.url("/v1/graph/invoke"),
        &[("x-tenant", "")],
        json!({"messages": []}),
    );
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(
        up.count(),
        0,
        "nothing reached the agent without credentials"
    );
}

/// (calls, cache hits) of the careless-cache plugin, read with `headers`
/// (the listing request is itself authenticated through the plugin).
fn counts(server: &Server, headers: &[(&str, &str)]) -> (u64, u64) {
    let r = get(&server.url("/v1/plugins"), headers);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let p = r.body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "careless-cache")
        .unwrap()
        .clone();
    (
        p["calls"].as_u64().unwrap(),
        p["cache_hits"].as_u64().unwrap(),
    )
}

#[test]
fn a_cached_identity_needs_every_vary_header_present() {
    let server = Server::start(
        json!({"auth": cached_alice(&["x-api-key", "x-tenant"])}),
        &[],
    );
    // The credential without x-tenant: answered, but never cached (a key
    // with x-tenant absent would match every request without x-tenant).
    for _ in 0..3 {
        assert_eq!(
            get(&server.url("/v1/whoami"), &[("x-api-key", "k1")]).body["user_id"],
            "alice"
        );
    }
    let full = [("x-api-key", "k1"), ("x-tenant", "t1")];
    assert_eq!(
        counts(&server, &full),
        (4, 0),
        "each request without x-tenant asked the plugin"
    );
    // With every vary header the hint is honoured.
    assert_eq!(
        counts(&server, &full),
        (4, 1),
        "a request with every vary header is served from the cache"
    );
    let r = get(&server.url("/v1/whoami"), &[("x-tenant", "t1")]);
    assert_eq!(r.status, 401, "{:?}", r.body);
}

#[test]
fn a_log_flooding_plugin_keeps_the_server_log_bounded() {
    let flood = json!({
        "method": "custom", "name": "log-flood", "path": plugins().hostile,
        "config": {"mode": "log-flood", "lines": 2000}, "timeout_ms": 10_000,
    });
    let server = Server::start(json!({"auth": flood}), &[]);
    std::thread::sleep(Duration::from_millis(200));
    let before = server.logs().len();
    for _ in 0..3 {
        let r = get(&server.url("/v1/whoami"), &[]);
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(
            r.body["user_id"], "hostile-log-flood",
            "the request is still answered"
        );
    }
    assert!(
        server.logged("suppressed"),
        "one note says lines were dropped:\n{}",
        tail(&server.logs())
    );
    std::thread::sleep(Duration::from_millis(300));
    let logs = server.logs();
    let grown = logs.len() - before;
    // 3 calls x 2000 lines x 64 KiB were attempted (375 MiB); a call may
    // write 16 KiB, plus the per-line prefix and the notes.
    assert!(
        grown < 80 * 1024,
        "the log grew by {grown} bytes:\n{}",
        tail(&logs)
    );
    assert!(
        logs.contains("suppressed 1992 log lines"),
        "the note counts the dropped lines:\n{}",
        tail(&logs)
    );
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("ERROR agentflow: forged")),
        "a plugin's line break starts no log line of its own"
    );
    assert!(
        logs.contains("flood\\nERROR agentflow: forged"),
        "the line break is shown escaped"
    );
    assert_eq!(get(&server.url("/ping"), &[]).status, 200);
}

#[test]
fn denied_outbound_requests_log_the_host_not_the_path_or_query() {
    let probe = json!({
        "method": "custom", "name": "probe-http", "path": plugins().probe, "allowed_hosts": ["127.0.0.1:2"],
        "timeout_ms": 3000, "config": {"mode": "http", "url": "http://127.0.0.1:1/introspect?token=query-secret-123"},
    });
    let server = Server::start(json!({"auth": probe}), &[]);
    let r = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["claims"]["denied"], true, "{:?}", r.body);
    assert!(
        server.logged("outbound HTTP request denied"),
        "{}",
        server.logs()
    );
    let logs = server.logs();
    assert!(
        logs.contains("http://127.0.0.1:1"),
        "the denied host is named:\n{logs}"
    );
    assert!(
        !logs.contains("query-secret-123"),
        "the query string is not logged:\n{logs}"
    );
    assert!(!logs.contains("/introspect"), "nor the path:\n{logs}");
}

/// Runs `agentflow run` on `config`, which must be refused as a config
/// error (exit code 2, nothing served); returns stderr.
fn refused(config: Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2, "should refuse to start:\n{err}");
    assert!(!err.contains("listening on"), "{err}");
    err
}

#[test]
fn two_plugins_with_one_name_are_refused_at_start() {
    let named = |name: &str| json!({"method": "custom", "name": name, "path": plugins().probe});
    let err = refused(json!({"auth": [named("shared"), "jwt", named("shared")]}));
    assert!(
        err.contains("`auth[2].name`") && err.contains("duplicates `auth[0]`"),
        "{err}"
    );
    assert!(err.contains("key-value store"), "says why: {err}");

    // Names taken from the file name collide as well.
    let unnamed = json!({"method": "custom", "path": plugins().probe});
    let err = refused(json!({"auth": [unnamed, unnamed]}));
    assert!(
        err.contains("`auth[1].path`")
            && err.contains("duplicates `auth[0]`")
            && err.contains("file name"),
        "{err}"
    );

    // An authorizer named like an authenticator, case aside.
    let err = refused(
        json!({"auth": named("Policy"), "authorization": {"path": plugins().rbac, "name": "policy"}}),
    );
    assert!(
        err.contains("`authorization.name`") && err.contains("duplicates `auth`"),
        "{err}"
    );
}

/// The last lines of a log, for failure messages.
fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(20)..]
        .iter()
        .map(|l| l.chars().take(300).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}
