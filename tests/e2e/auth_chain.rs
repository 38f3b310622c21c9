//! Plugins in the auth chain: the api-key authenticator, the
//! `["jwt", plugin]` chain and the rbac authorizer.

use serde_json::{Value, json};

use crate::support::*;

const KEY: &str = "ak-live-0123456789";

fn api_key_plugin() -> Value {
    json!({
        "method": "custom",
        "path": plugins().api_key,
        "config": {"keys": [{"sha256": sha256_hex(KEY), "user_id": "svc-1", "roles": ["user"], "name": "ci"}]}
    })
}

fn rbac_plugin() -> Value {
    json!({
        "path": plugins().rbac,
        "config": {"roles": {
            "admin": {"*": ["*"]},
            "user": {"graph": ["invoke", "stream"], "checkpointer": ["read"], "store": ["read"]},
            "guest": {"graph": ["invoke"]}
        }}
    })
}

#[test]
fn api_key_plugin_valid_invalid_missing() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": api_key_plugin(), "upstream": {"merge_body": true}}),
        &[],
    );
    let body = json!({"messages": []});

    let ok = post(
        &server.url("/v1/graph/invoke"),
        &[("x-api-key", KEY)],
        body.clone(),
    );
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let seen = up.last();
    assert_eq!(seen.header("x-agentflow-user-id"), Some("svc-1"));
    assert_eq!(seen.header("x-api-key"), None, "the key is not forwarded");
    assert_eq!(seen.json()["config"]["user"]["claims"]["key_name"], "ci");

    let wrong = post(
        &server.url("/v1/graph/invoke"),
        &[("x-api-key", "ak-live-wrong")],
        body.clone(),
    );
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.detail().contains("invalid API key"),
        "{:?}",
        wrong.body
    );

    let missing = post(&server.url("/v1/graph/invoke"), &[], body);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body["code"], "not_authenticated");
    assert_eq!(up.count(), 1);
}

#[test]
fn jwt_then_plugin_chain() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": ["jwt", api_key_plugin()]}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let token = hs256(SECRET, json!({"sub": "jwt-user", "exp": now() + 600}));

    let by_jwt = get(
        &server.url("/v1/whoami"),
        &[("authorization", &bearer(&token))],
    );
    assert_eq!(by_jwt.body["user_id"], "jwt-user");
    let by_key = get(&server.url("/v1/whoami"), &[("x-api-key", KEY)]);
    assert_eq!(
        by_key.body["user_id"], "svc-1",
        "no JWT: the chain falls through to the plugin"
    );
    assert_eq!(get(&server.url("/v1/whoami"), &[]).status, 401);

    // A refusal stops the chain: a bad JWT is not rescued by a good key.
    let expired = hs256(SECRET, json!({"sub": "jwt-user", "exp": now() - 600}));
    let r = get(
        &server.url("/v1/whoami"),
        &[("authorization", &bearer(&expired)), ("x-api-key", KEY)],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "invalid_token");
}

#[test]
fn rbac_allows_and_denies_per_role() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt", "authorization": rbac_plugin()}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let token = |role: &str| {
        bearer(&hs256(
            SECRET,
            json!({"sub": format!("{role}-1"), "role": role, "exp": now() + 600}),
        ))
    };
    let (guest, user, admin) = (token("guest"), token("user"), token("admin"));
    let invoke = |t: &str| {
        post(
            &server.url("/v1/graph/invoke"),
            &[("authorization", t)],
            json!({"messages": []}),
        )
        .status
    };
    let threads = |t: &str| get(&server.url("/v1/threads"), &[("authorization", t)]);
    let write_thread = |t: &str| {
        send(
            "PUT",
            &server.url("/v1/threads/t1/state"),
            &[("authorization", t)],
            Some(json!({"state": {}})),
        )
        .status
    };
    let delete_memory = |t: &str| {
        send(
            "DELETE",
            &server.url("/v1/store/memories/m1"),
            &[("authorization", t)],
            None,
        )
        .status
    };

    assert_eq!(invoke(&guest), 200, "guest may invoke the graph");
    let denied = threads(&guest);
    assert_eq!(denied.status, 403, "guest may not read threads");
    assert_eq!(denied.body["code"], "forbidden");
    assert!(!denied.detail().is_empty());

    assert_eq!(invoke(&user), 200);
    assert_eq!(threads(&user).status, 200);
    assert_eq!(write_thread(&user), 403);
    assert_eq!(delete_memory(&user), 403);

    assert_eq!(write_thread(&admin), 200);
    assert_eq!(delete_memory(&admin), 200);
    let m = up.last();
    assert_eq!(
        (m.method.as_str(), m.path_and_query.as_str()),
        ("DELETE", "/v1/store/memories/m1")
    );

    let nobody = bearer(&hs256(SECRET, json!({"sub": "x", "exp": now() + 600})));
    assert_eq!(invoke(&nobody), 403, "no role: default deny");
}

#[test]
fn rbac_allows_are_cached_per_caller_and_access_and_denials_never() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt", "authorization": rbac_plugin()}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let token = |sub: &str, role: &str| {
        bearer(&hs256(
            SECRET,
            json!({"sub": sub, "role": role, "exp": now() + 600}),
        ))
    };
    let (user, other_user, admin) = (
        token("u-1", "user"),
        token("u-2", "user"),
        token("admin-1", "admin"),
    );
    let invoke = |t: &str| {
        post(
            &server.url("/v1/graph/invoke"),
            &[("authorization", t)],
            json!({"messages": []}),
        )
        .status
    };
    let write_thread = |t: &str| {
        send(
            "PUT",
            &server.url("/v1/threads/t1/state"),
            &[("authorization", t)],
            Some(json!({"state": {}})),
        )
        .status
    };
    let counts = || {
        let r = get(&server.url("/v1/plugins"), &[("authorization", &admin)]);
        assert_eq!(r.status, 200, "{:?}", r.body);
        let p = r.body["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["slot"] == "authorizer")
            .unwrap()
            .clone();
        (
            p["calls"].as_u64().unwrap(),
            p["cache_hits"].as_u64().unwrap(),
        )
    };

    for _ in 0..3 {
        assert_eq!(invoke(&user), 200);
    }
    assert_eq!(counts(), (1, 2), "one call, then the cached allow");
    assert_eq!(invoke(&other_user), 200, "another caller is asked again");
    assert_eq!(counts(), (2, 2));
    for _ in 0..2 {
        assert_eq!(write_thread(&user), 403, "a denial is never cached");
    }
    assert_eq!(counts(), (4, 2));
    assert_eq!(up.count(), 4, "only the allowed requests reached the agent");
}
