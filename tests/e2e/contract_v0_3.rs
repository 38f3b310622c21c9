//! Plugin contract 0.3 next to 0.2: a plugin built with the 0.2 SDK loads
//! and works beside 0.3 ones; `init` checks config and grants at start;
//! typed refusals, `failed`, atomic storage and the request body reach the
//! client as they should.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::support::*;

fn probe(config: Value) -> Value {
    json!({"method": "custom", "path": plugins().probe, "config": config})
}

fn legacy() -> Value {
    json!({
        "method": "custom",
        "path": plugins().legacy_v0_2,
        "config": {"token": "old-token", "user": "legacy-user", "status": 429}
    })
}

/// Runs `agentflow run` on `config`, expecting it to refuse to start:
/// returns the exit code and stderr.
fn refused_start(config: Value) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[],
    );
    assert!(!err.contains("listening on"), "{err}");
    (code, err)
}

#[test]
fn a_plugin_built_with_the_0_2_sdk_works_next_to_0_3_plugins() {
    let up = Upstream::start();
    let server = Server::start(
        json!({
            "agent": up.base,
            "auth": [legacy(), probe(json!({"mode": "counter"}))],
            "authorization": {"path": plugins().rbac, "config": {"roles": {"user": {"graph": ["invoke"]}}}},
            "upstream": {"merge_body": true}
        }),
        &[],
    );
    let old = [("x-legacy-token", "old-token")];
    let me = get(&server.url("/v1/whoami"), &old);
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["user_id"], "legacy-user");
    assert_eq!(me.body["claims"]["contract"], "0.2.0");
    assert_eq!(me.body["claims"]["calls"], 1);
    // Its 0.2 host imports (kv) work: the count went on.
    assert_eq!(
        get(&server.url("/v1/whoami"), &old).body["claims"]["calls"],
        2
    );

    // 0.2's free status number still means what it meant.
    let wrong = get(&server.url("/v1/whoami"), &[("x-legacy-token", "nope")]);
    assert_eq!(wrong.status, 429, "{:?}", wrong.body);
    assert_eq!(wrong.detail(), "legacy token refused");

    // No legacy credential: the 0.3 plugin next in the chain answers.
    let probe = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(probe.body["user_id"], "probe");
    assert_eq!(probe.body["claims"]["count"], 1);

    // The 0.3 authorizer decides for the 0.2-authenticated caller.
    let invoke = post(
        &server.url("/v1/graph/invoke"),
        &old,
        json!({"messages": []}),
    );
    assert_eq!(invoke.status, 200, "{:?}", invoke.body);
    assert_eq!(up.last().header("x-agentflow-user-id"), Some("legacy-user"));

    let (code, out, err) = run_agentflow(
        &["plugin", "check", plugins().legacy_v0_2.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("agentflow:auth/host@0.2.0"), "{out}");
    assert!(
        out.contains("fits agentflow:auth/authenticator: yes"),
        "{out}"
    );
}

#[test]
fn init_checks_the_config_and_the_grants_before_the_server_starts() {
    let (code, err) = refused_start(json!({"auth": [legacy(), probe(json!({"mode": "reject"}))]}));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("auth[1].config") && err.contains("refuses every config"),
        "{err}"
    );

    let (code, err) = refused_start(json!({"auth": probe(json!({"needs_secret": "SIGNING_KEY"}))}));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("auth.secrets") && err.contains("SIGNING_KEY"),
        "{err}"
    );

    let (code, err) = refused_start(json!({
        "authorization": {"path": plugins().rbac, "config": {"roles": {"r": {"": ["read"]}}}}
    }));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("authorization.config") && err.contains("resource names must not be empty"),
        "{err}"
    );

    let (code, err) =
        refused_start(json!({"auth": probe(json!({"needs_host": "idp.example.com:443"}))}));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("auth.allowed_hosts") && err.contains("idp.example.com:443"),
        "{err}"
    );

    // Granted, the same manifest loads, and the listing shows it.
    let mut entry = probe(json!({"needs_secret": "SIGNING_KEY"}));
    entry["secrets"] = json!(["SIGNING_KEY"]);
    let server = Server::start(
        json!({"auth": ["jwt", entry]}),
        &[("JWT_SECRET_KEY", SECRET), ("SIGNING_KEY", "k")],
    );
    let admin = hs256(
        SECRET,
        json!({"sub": "root", "roles": ["admin"], "exp": now() + 600}),
    );
    let listed = get(
        &server.url("/v1/plugins"),
        &[("authorization", &bearer(&admin))],
    );
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body["plugins"][0]["contract"], "0.3.0");
    assert_eq!(
        listed.body["plugins"][0]["manifest"]["secrets"],
        json!(["SIGNING_KEY"])
    );
}

#[test]
fn typed_refusals_and_failures_reach_the_client() {
    let server = Server::start(
        json!({"auth": probe(json!({"mode": "rate", "window_s": 7}))}),
        &[],
    );
    let limited = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(limited.status, 429, "{:?}", limited.body);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(limited.detail(), "slow down");

    let server = Server::start(json!({"auth": probe(json!({"mode": "fail"}))}), &[]);
    let failed = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(failed.status, 503, "{:?}", failed.body);
    assert!(
        !failed.detail().contains("dependency is down"),
        "the reason stays in the log: {:?}",
        failed.body
    );
    assert!(
        wait_for(std::time::Duration::from_secs(5), || server
            .logged("the probe's dependency is down"))
        .is_some(),
        "{}",
        server.logs()
    );
}

#[test]
fn storage_updates_are_atomic_under_parallel_requests() {
    let server = Arc::new(Server::start(
        json!({"auth": probe(json!({"mode": "counter"}))}),
        &[],
    ));
    let threads: Vec<_> = (0..40)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                let r = get(&server.url("/v1/whoami"), &[]);
                assert_eq!(r.status, 200, "{:?}", r.body);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let last = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(last.body["claims"]["count"], 41, "no increment is lost");

    let once = Server::start(json!({"auth": probe(json!({"mode": "once"}))}), &[]);
    let nonce = [("x-nonce", "n-1")];
    assert_eq!(
        get(&once.url("/v1/whoami"), &nonce).body["claims"]["first"],
        true
    );
    assert_eq!(
        get(&once.url("/v1/whoami"), &nonce).body["claims"]["first"],
        false
    );
}

#[test]
fn a_plugin_that_asks_for_the_body_sees_it_up_to_its_cap_and_the_agent_gets_all_of_it() {
    let up = Upstream::start();
    let mut entry = probe(json!({"mode": "body"}));
    entry["body_kb"] = json!(1);
    let server = Server::start(
        json!({"agent": up.base, "auth": entry, "upstream": {"merge_body": true}}),
        &[],
    );
    let small = json!({"messages": [{"role": "user", "content": "hi"}]});
    let r = post(&server.url("/v1/graph/invoke"), &[], small.clone());
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen = up.last().json();
    let shown: Value =
        serde_json::from_str(seen["config"]["user"]["claims"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(shown, small, "the plugin saw the body the client sent");
    assert_eq!(seen["messages"], small["messages"], "and the agent got it");

    let big = json!({"messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let r = post(&server.url("/v1/graph/invoke"), &[], big.clone());
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen = up.last().json();
    let error = seen["config"]["user"]["claims"]["body_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("1024 bytes"),
        "told it was too large: {seen}"
    );
    assert_eq!(
        seen["messages"], big["messages"],
        "the agent still got all of it"
    );
}

#[test]
fn the_built_in_api_key_method_passes_keys_it_does_not_know_to_the_next_method() {
    const KEY: &str = "ak-plugin-0123456789";
    let server = Server::start(
        json!({"auth": ["api_key", {
            "method": "custom",
            "path": plugins().api_key,
            "config": {"keys": [{"sha256": sha256_hex(KEY), "user_id": "svc-plugin"}]}
        }]}),
        &[],
    );
    let by_plugin = get(&server.url("/v1/whoami"), &[("x-api-key", KEY)]);
    assert_eq!(by_plugin.status, 200, "{:?}", by_plugin.body);
    assert_eq!(by_plugin.body["user_id"], "svc-plugin");

    let nobody = get(&server.url("/v1/whoami"), &[("x-api-key", "ak-unknown")]);
    assert_eq!(nobody.status, 401);
    assert_eq!(nobody.detail(), "invalid API key");
}
