//! Hot reload of `agentflow.json` itself (`"plugins": {"watch": true}`):
//! a changed grant, a changed auth chain, broken files that never replace
//! the running setup, and a request in flight across a reload.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const KEY: &str = "svc-key-0123456789";
const METRICS_TOKEN: &str = "metrics-token-for-config-reload";
const ADMIN_PW: &str = "admin-password-1";

fn token(sub: &str, role: &str) -> String {
    bearer(&hs256(
        SECRET,
        json!({"sub": sub, "role": role, "exp": now() + 600}),
    ))
}

/// rbac where `user` may read threads when `may_read` (always: invoke).
fn rbac(may_read: bool) -> Value {
    let user = if may_read {
        json!({"graph": ["invoke"], "checkpointer": ["read"]})
    } else {
        json!({"graph": ["invoke"]})
    };
    json!({"path": plugins().rbac, "config": {"roles": {"admin": {"*": ["*"]}, "user": user}}})
}

fn config_path(server: &Server) -> PathBuf {
    server.dir.path().join("agentflow.json")
}

/// Saves the config as editors do: a new file renamed over the old one.
fn save(server: &Server, config: &Value) {
    let tmp = server.dir.path().join(".agentflow.json.swp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    std::fs::rename(&tmp, config_path(server)).unwrap();
}

/// `config` in `GET /v1/plugins`.
fn config_status(server: &Server) -> Value {
    let r = get(
        &server.url("/v1/plugins"),
        &[("authorization", &token("root", "admin"))],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["config"].clone()
}

fn plugin_status(server: &Server, name: &str) -> Value {
    let r = get(
        &server.url("/v1/plugins"),
        &[("authorization", &token("root", "admin"))],
    );
    r.body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not listed: {:?}", r.body))
}

/// Waits until the server applied `n` reloads.
fn wait_reloads(server: &Server, n: u64) {
    wait_for(Duration::from_secs(20), || {
        config_status(server)["reloads"].as_u64() == Some(n)
    })
    .unwrap_or_else(|| {
        panic!(
            "reload {n} not applied: {}\n{}",
            config_status(server),
            server.logs()
        )
    });
}

/// Waits until the last refused reload's error contains `needle`; returns it.
fn wait_refused(server: &Server, needle: &str) -> String {
    let mut seen = String::new();
    wait_for(Duration::from_secs(20), || {
        seen = config_status(server)["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.contains(needle)
    })
    .unwrap_or_else(|| {
        panic!(
            "no refused reload naming {needle:?} (last error: {seen:?})\n{}",
            server.logs()
        )
    });
    seen
}

fn threads(server: &Server, auth: &str) -> Reply {
    get(&server.url("/v1/threads"), &[("authorization", auth)])
}

#[test]
fn a_grant_removed_from_the_rbac_config_is_refused_without_restart() {
    let up = Upstream::start();
    let mut config = json!({
        "agent": up.base, "auth": "jwt", "authorization": rbac(true),
        "plugins": {"watch": true},
    });
    let server = Server::start(config.clone(), &[("JWT_SECRET_KEY", SECRET)]);
    let user = token("u-1", "user");
    assert_eq!(threads(&server, &user).status, 200);
    assert_eq!(threads(&server, &user).status, 200);
    let before = plugin_status(&server, "rbac");
    assert!(
        before["cache_hits"].as_u64().unwrap() >= 1,
        "the allow was cached: {before}"
    );

    config["authorization"] = rbac(false);
    save(&server, &config);
    wait_reloads(&server, 1);
    let r = threads(&server, &user);
    assert_eq!(
        r.status, 403,
        "the cached allow went with the old config: {:?}",
        r.body
    );
    assert!(
        r.detail().contains("may not read checkpointer"),
        "{:?}",
        r.body
    );
    let after = plugin_status(&server, "rbac");
    assert_eq!(
        after["cache_hits"], 0,
        "a fresh plugin, fresh cache: {after}"
    );
    assert_eq!(config_status(&server)["last_error"], Value::Null);
    // What the grant still allows still passes.
    let invoke = post(
        &server.url("/v1/graph/invoke"),
        &[("authorization", &user)],
        json!({"messages": []}),
    );
    assert_eq!(invoke.status, 200, "{:?}", invoke.body);
    assert!(server.logged("config reloaded"), "{}", server.logs());
}

#[test]
fn a_plugin_added_to_the_auth_chain_serves_its_keys_and_its_header_is_stripped() {
    let up = Upstream::start();
    let mut config = json!({"agent": up.base, "auth": "jwt", "plugins": {"watch": true}});
    let server = Server::start(config.clone(), &[("JWT_SECRET_KEY", SECRET)]);
    let invoke = |server: &Server| {
        post(
            &server.url("/v1/graph/invoke"),
            &[("x-service-key", KEY)],
            json!({"messages": []}),
        )
    };
    assert_eq!(invoke(&server).status, 401, "no method reads the key yet");

    config["auth"] = json!(["jwt", {
        "method": "custom", "name": "service-keys", "path": plugins().api_key,
        "config": {"header": "x-service-key",
                   "keys": [{"sha256": sha256_hex(KEY), "user_id": "svc-1", "roles": ["user"]}]}
    }]);
    save(&server, &config);
    wait_reloads(&server, 1);
    let r = invoke(&server);
    assert_eq!(r.status, 200, "{:?}\n{}", r.body, server.logs());
    let seen = up.last();
    assert_eq!(seen.header("x-agentflow-user-id"), Some("svc-1"));
    assert_eq!(
        seen.header("x-service-key"),
        None,
        "the new plugin's credential header is not forwarded"
    );
    let status = plugin_status(&server, "service-keys");
    assert_eq!(status["slot"], "authenticator");
    // JWTs still work beside it.
    let whoami = get(
        &server.url("/v1/whoami"),
        &[("authorization", &token("alice", "user"))],
    );
    assert_eq!(whoami.body["user_id"], "alice", "{:?}", whoami.body);
}

#[test]
fn a_broken_config_is_refused_and_the_last_good_setup_keeps_serving() {
    let up = Upstream::start();
    let good = json!({
        "agent": up.base, "auth": "jwt", "authorization": rbac(true),
        "plugins": {"watch": true},
    });
    let server = Server::start(
        good.clone(),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("AGENTFLOW_METRICS_TOKEN", METRICS_TOKEN),
            ("AGENTFLOW_SUPERUSER", "admin"),
            ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
        ],
    );
    let user = token("u-1", "user");
    assert_eq!(threads(&server, &user).status, 200);

    // Bad JSON, written in place.
    std::fs::write(config_path(&server), b"{\"auth\": \"jwt\",").unwrap();
    let error = wait_refused(&server, "EOF");
    assert!(error.contains("agentflow.json"), "{error}");
    assert_eq!(threads(&server, &user).status, 200);
    assert!(
        server.logged("config reload refused; the last good setup keeps serving"),
        "{}",
        server.logs()
    );

    // An unknown key: named.
    let mut typo = good.clone();
    typo["authorisation"] = rbac(false);
    save(&server, &typo);
    wait_refused(&server, "authorisation");
    assert_eq!(threads(&server, &user).status, 200);

    // A plugin whose init refuses the new config: the entry's key is named.
    let mut refused = good.clone();
    refused["authorization"] = json!({"path": plugins().rbac, "config": {"roles": 5}});
    save(&server, &refused);
    wait_refused(&server, "`authorization.config`");
    assert_eq!(threads(&server, &user).status, 200);

    // A key read only at start changes beside a grant: nothing applies.
    let mut restart = good.clone();
    restart["agent"] = json!("http://127.0.0.1:9");
    restart["authorization"] = rbac(false);
    save(&server, &restart);
    let error = wait_refused(&server, "`agent`");
    assert!(error.contains("needs a restart"), "{error}");
    assert_eq!(
        threads(&server, &user).status,
        200,
        "the grant change beside it was not applied either"
    );
    assert_eq!(config_status(&server)["reloads"], 0);

    // A fixed file applies and clears the error.
    let mut fixed = good.clone();
    fixed["authorization"] = rbac(false);
    save(&server, &fixed);
    wait_reloads(&server, 1);
    assert_eq!(config_status(&server)["last_error"], Value::Null);
    assert_eq!(threads(&server, &user).status, 403);

    let metrics = get(
        &server.url("/metrics"),
        &[("authorization", &bearer(METRICS_TOKEN))],
    );
    let text = metrics.body.as_str().map(str::to_owned).unwrap_or_else(|| {
        panic!("metrics are text: {:?}", metrics.body);
    });
    assert!(
        text.contains("agentflow_config_reloads_total{outcome=\"applied\"} 1"),
        "{text}"
    );
    // At least the four refusals above (a write in place can be seen as two
    // saves on a very slow machine).
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("agentflow_config_reloads_total{outcome=\"refused\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(refused >= 4, "{text}");

    // The audit trail keeps each attempt, with the reason.
    let login = post(
        &server.url("/v1/login"),
        &[],
        json!({"username": "admin", "password": ADMIN_PW}),
    );
    assert_eq!(login.status, 200, "{:?}", login.body);
    let superuser = bearer(login.body["access_token"].as_str().unwrap());
    let events = |kind: &str| {
        let r = get(
            &server.url(&format!("/v1/audit?type={kind}")),
            &[("authorization", &superuser)],
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["items"].as_array().unwrap().clone()
    };
    let mut failed = Vec::new();
    wait_for(Duration::from_secs(10), || {
        failed = events("config.reload_failed");
        failed.len() as u64 == refused
    })
    .unwrap_or_else(|| panic!("{failed:#?}"));
    // Newest first: the restart-only key, the refused init, the typo, the JSON.
    let errors: Vec<&str> = failed
        .iter()
        .map(|e| e["details"]["error"].as_str().unwrap())
        .collect();
    assert!(errors[0].contains("`agent`"), "{errors:?}");
    assert!(errors[1].contains("`authorization.config`"), "{errors:?}");
    assert!(errors[2].contains("authorisation"), "{errors:?}");
    assert!(errors[3..].iter().all(|e| e.contains("EOF")), "{errors:?}");
    let applied = events("config.reloaded");
    assert_eq!(applied.len(), 1, "{applied:#?}");
    assert_eq!(applied[0]["details"]["loaded"], json!(["rbac"]));
}

#[test]
fn a_request_in_flight_finishes_on_the_setup_it_started_with() {
    let up = Upstream::start();
    // No credentials: the slow plugin authenticates (3 s) as
    // `hostile-slow` with role `user`; admins use JWTs and skip it.
    let slow = json!({
        "method": "custom", "name": "slow", "path": plugins().hostile,
        "config": {"mode": "slow", "ms": 3000}, "timeout_ms": 10000,
    });
    let mut config = json!({
        "agent": up.base, "auth": ["jwt", slow], "authorization": rbac(true),
        "plugins": {"watch": true},
    });
    let server = Server::start(config.clone(), &[("JWT_SECRET_KEY", SECRET)]);

    let url = server.url("/v1/threads");
    let in_flight = std::thread::spawn(move || get(&url, &[]));
    std::thread::sleep(Duration::from_millis(400));
    config["authorization"] = rbac(false);
    save(&server, &config);
    wait_reloads(&server, 1);
    assert!(
        !in_flight.is_finished(),
        "the slow request ended before the reload: this test proves nothing"
    );
    let old = in_flight.join().unwrap();
    assert_eq!(
        old.status, 200,
        "authorized by the authorizer of the setup that authenticated it: {:?}",
        old.body
    );
    assert_eq!(
        up.last().header("x-agentflow-user-id"),
        Some("hostile-slow")
    );

    let new = get(&server.url("/v1/threads"), &[]);
    assert_eq!(new.status, 403, "{:?}", new.body);
    let slow = plugin_status(&server, "slow");
    assert_eq!(
        slow["calls"], 2,
        "the unchanged plugin kept its instance (and counters): {slow}"
    );
}

#[test]
fn a_plugin_added_by_a_reload_is_watched_for_new_builds() {
    let mut config = json!({"auth": "jwt", "plugins": {"watch": true}});
    let server = Server::start(config.clone(), &[("JWT_SECRET_KEY", SECRET)]);
    let wasm = server.dir.path().join("added.wasm");
    std::fs::copy(&plugins().probe, &wasm).unwrap();
    assert_eq!(get(&server.url("/v1/whoami"), &[]).status, 401);

    config["auth"] = json!(["jwt", {"method": "custom", "name": "added", "path": wasm, "config": {"mode": "echo"}}]);
    save(&server, &config);
    wait_reloads(&server, 1);
    let r = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(r.body["user_id"], "probe", "{:?}", r.body);

    // A new build of the added file is picked up like any plugin's.
    let before = plugin_status(&server, "added")["sha256"].clone();
    let mut rebuilt = std::fs::read(&plugins().probe).unwrap();
    // A custom section: a different file with the same behaviour.
    let (name, marker) = (b"agentflow-test", b"v2");
    rebuilt.extend([0, (1 + name.len() + marker.len()) as u8, name.len() as u8]);
    rebuilt.extend_from_slice(name);
    rebuilt.extend_from_slice(marker);
    std::fs::write(&wasm, rebuilt).unwrap();
    wait_for(Duration::from_secs(20), || {
        plugin_status(&server, "added")["sha256"] != before
    })
    .unwrap_or_else(|| panic!("the new build was not loaded:\n{}", server.logs()));
    assert!(server.logged("plugin reloaded"), "{}", server.logs());
    assert_eq!(
        config_status(&server)["reloads"],
        1,
        "a plugin file is not a config change"
    );
}

#[test]
fn changed_jwt_options_drop_the_verified_token_cache() {
    let mut config = json!({"auth": "jwt", "plugins": {"watch": true}});
    let server = Server::start(config.clone(), &[("JWT_SECRET_KEY", SECRET)]);
    let no_aud = token("alice", "user");
    let whoami = |t: &str| get(&server.url("/v1/whoami"), &[("authorization", t)]);
    assert_eq!(whoami(&no_aud).status, 200);
    assert_eq!(whoami(&no_aud).status, 200, "now from the token cache");

    config["auth"] = json!({"method": "jwt", "audience": ["gateway"]});
    save(&server, &config);
    // The listing's admin token has no `aud` either: watch the log.
    wait_for(Duration::from_secs(20), || server.logged("config reloaded"))
        .unwrap_or_else(|| panic!("not reloaded:\n{}", server.logs()));
    let r = whoami(&no_aud);
    assert_eq!(
        r.status, 401,
        "a token the old options accepted is checked again: {:?}",
        r.body
    );
    let with_aud = bearer(&hs256(
        SECRET,
        json!({"sub": "bob", "aud": "gateway", "exp": now() + 600}),
    ));
    assert_eq!(whoami(&with_aud).body["user_id"], "bob");
}
