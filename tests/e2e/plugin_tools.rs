//! A plugin author's command-line tools on the reference plugins:
//! `plugin call --config-from` (the entry of an agentflow.json), the cache
//! hint and the key-value store in `plugin call`'s answer, and `plugin test`
//! with passing and failing case files.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::*;

/// SHA-256 of the api-key plugin's test key `"test"`.
const TEST_KEY_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// An agentflow.json like the repository's: jwt, then the api-key plugin
/// (`auth[1]`), and rbac as the authorizer.
fn config_file(dir: &Path) -> PathBuf {
    let path = dir.join("agentflow.json");
    let config = json!({
        "auth": ["jwt", {"method": "custom", "path": plugins().api_key, "timeout_ms": 500,
                         "config": {"keys": [{"sha256": TEST_KEY_SHA256, "user_id": "svc-1", "roles": ["user"]}]}}],
        "authorization": {"path": plugins().rbac,
                          "config": {"roles": {"admin": {"*": ["*"]}, "user": {"graph": ["invoke", "stream"]}}}},
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `plugin call ARGS`: the printed answer, asserting success.
fn call(args: &[&str]) -> Value {
    let mut all = vec!["plugin", "call"];
    all.extend_from_slice(args);
    let (code, out, err) = run_agentflow(&all, &[("JWT_SECRET_KEY", SECRET)]);
    assert_eq!(code, 0, "plugin call {args:?}:\n{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn plugin_call_takes_its_config_from_an_agentflow_entry_and_shows_cache_hints() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path());
    let cfg = cfg.to_str().unwrap();
    let user = |resource: &str, action: &str| {
        json!({"method": "POST", "path": "/v1/threads/t/runs",
               "identity": {"user_id": "u", "roles": ["user"]},
               "access": {"resource": resource, "action": action}})
    };

    // The authorizer's entry, by key, with no component named: the
    // entry's path and config are used, and an allow shows rbac's hint.
    let allowed = write_json(dir.path(), "allowed.json", &user("graph", "invoke"));
    let answer = call(&[
        "--config-from",
        &format!("{cfg}#authorization"),
        "--request",
        &allowed,
    ]);
    assert_eq!(answer["outcome"], "allow", "{answer}");
    assert_eq!(answer["cache"]["ttl_ms"], 60_000, "rbac's hint: {answer}");
    let denied = write_json(dir.path(), "denied.json", &user("store", "write"));
    let answer = call(&[
        "--config-from",
        &format!("{cfg}#authorization"),
        "--request",
        &denied,
    ]);
    assert_eq!(answer["outcome"], "deny", "{answer}");
    assert_eq!(answer["status"], 403);
    assert_eq!(answer["cache"], Value::Null, "denials carry no hint");

    // The same request without the entry and with no roles configured is
    // denied: the entry's config was what allowed it.
    let mut bare = user("graph", "invoke");
    bare["config"] = json!({"roles": {}});
    let bare = write_json(dir.path(), "bare.json", &bare);
    let (code, out, err) = run_agentflow(
        &[
            "plugin",
            "call",
            plugins().rbac.to_str().unwrap(),
            "--request",
            &bare,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"deny\""), "{out}");

    // The authenticator entry, by position and by name.
    let keyed = write_json(
        dir.path(),
        "keyed.json",
        &json!({"headers": {"x-api-key": "test"}}),
    );
    for entry in ["auth[1]", "api-key"] {
        let answer = call(&[
            plugins().api_key.to_str().unwrap(),
            "--config-from",
            &format!("{cfg}#{entry}"),
            "--request",
            &keyed,
        ]);
        assert_eq!(answer["outcome"], "authenticated", "{entry}: {answer}");
        assert_eq!(answer["identity"]["user_id"], "svc-1");
        assert_eq!(answer["identity"]["roles"], json!(["user"]));
    }

    // A config in the request file wins over the entry's.
    let other_key = write_json(
        dir.path(),
        "other.json",
        &json!({"headers": {"x-api-key": "test"}, "config": {"keys": []}}),
    );
    let answer = call(&[
        "--config-from",
        &format!("{cfg}#auth[1]"),
        "--request",
        &other_key,
    ]);
    assert_eq!(answer["outcome"], "refused", "{answer}");

    // An entry that is not there: the error lists those that are.
    let (code, _, err) = run_agentflow(
        &[
            "plugin",
            "call",
            "--config-from",
            &format!("{cfg}#auth[0]"),
            "--request",
            &keyed,
        ],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no plugin entry \"auth[0]\""), "{err}");
    assert!(
        err.contains("#auth[1] (\"api-key\")") && err.contains("#authorization (\"rbac\")"),
        "{err}"
    );
    // Two plugins and no key: say which.
    let (code, _, err) = run_agentflow(
        &["plugin", "call", "--config-from", cfg, "--request", &keyed],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_eq!(code, 2);
    assert!(err.contains("names 2 plugins"), "{err}");
}

#[test]
fn plugin_call_seeds_the_kv_store_and_prints_it_after_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let request = write_json(dir.path(), "kv.json", &json!({"config": {"mode": "kv"}}));
    let probe = plugins().probe.to_str().unwrap();
    // The probe increments the counter it finds under `count`.
    let answer = call(&[
        probe,
        "--request",
        &request,
        "--kv",
        "count=41",
        "--kv",
        "note=seeded",
    ]);
    assert_eq!(answer["outcome"], "authenticated", "{answer}");
    assert_eq!(answer["identity"]["claims"]["count"], 42, "{answer}");
    assert_eq!(answer["kv"], json!({"count": "42", "note": "seeded"}));
    // Unseeded, the store starts empty (and is thrown away after).
    let answer = call(&[probe, "--request", &request]);
    assert_eq!(answer["identity"]["claims"]["count"], 1, "{answer}");
    assert_eq!(answer["kv"], json!({"count": "1"}));
    // The probe in echo mode stores nothing; its authenticator hint is null.
    let echo = write_json(dir.path(), "echo.json", &json!({"config": {}}));
    let answer = call(&[probe, "--request", &echo]);
    assert_eq!(answer["kv"], json!({}));
    assert_eq!(answer["cache"], Value::Null);

    // A trap is reported as the guest's, with its panic message.
    let trap = write_json(
        dir.path(),
        "trap.json",
        &json!({"config": {"mode": "memory"}, "headers": {"x-fail": "1"}}),
    );
    let (code, _, err) = run_agentflow(&["plugin", "call", probe, "--request", &trap], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("failed in authenticate: the guest trapped")
            && err.contains("asked to fail by x-fail"),
        "{err}"
    );

    let (code, _, err) = run_agentflow(
        &[
            "plugin",
            "call",
            probe,
            "--request",
            &request,
            "--kv",
            "novalue",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("use KEY=VALUE"), "{err}");
}

#[test]
fn plugin_test_reports_each_case_and_fails_when_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path());
    let cfg = cfg.to_str().unwrap();
    let who = |role: &str| json!({"user_id": "u", "roles": [role]});
    let passing = write_json(
        dir.path(),
        "rbac-cases.json",
        &json!({"cases": [
            {"name": "users invoke graphs", "identity": who("user"),
             "access": {"resource": "graph", "action": "invoke"},
             "expect": {"outcome": "allow", "cache": true}},
            {"name": "users may not write the store", "identity": who("user"),
             "access": {"resource": "store", "action": "write"},
             "expect": {"outcome": "deny", "status": 403, "cache": false}},
            {"name": "admins may do anything", "identity": who("admin"),
             "request": {"method": "DELETE", "path": "/v1/threads/t"},
             "access": {"resource": "checkpointer", "action": "delete"},
             "expect": {"outcome": "allow"}}
        ]}),
    );
    let (code, out, err) = run_agentflow(
        &[
            "plugin",
            "test",
            "--cases",
            &passing,
            "--config-from",
            &format!("{cfg}#authorization"),
        ],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_eq!(code, 0, "{out}{err}");
    for name in [
        "users invoke graphs",
        "users may not write the store",
        "admins may do anything",
    ] {
        assert!(out.contains(&format!("ok    {name}")), "{out}");
    }
    assert!(out.contains("3 passed, 0 failed"), "{out}");

    // The same plugin, a case file with two wrong expectations.
    let failing = write_json(
        dir.path(),
        "wrong.json",
        &json!([
            {"name": "users invoke graphs", "identity": who("user"),
             "access": {"resource": "graph", "action": "invoke"},
             "expect": {"outcome": "allow"}},
            {"name": "users delete threads (wrong)", "identity": who("user"),
             "access": {"resource": "checkpointer", "action": "delete"},
             "expect": {"outcome": "allow"}},
            {"name": "denials are 401 (wrong)", "identity": who("user"),
             "access": {"resource": "store", "action": "write"},
             "expect": {"outcome": "deny", "status": 401}}
        ]),
    );
    let (code, out, err) = run_agentflow(
        &[
            "plugin",
            "test",
            plugins().rbac.to_str().unwrap(),
            "--cases",
            &failing,
            "--config-from",
            &format!("{cfg}#rbac"),
        ],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_eq!(code, 1, "failed cases exit 1:\n{out}{err}");
    assert!(out.contains("ok    users invoke graphs"), "{out}");
    assert!(out.contains("FAIL  users delete threads (wrong)"), "{out}");
    assert!(
        out.contains("expected outcome \"allow\", got {") && out.contains("\"outcome\":\"deny\""),
        "{out}"
    );
    assert!(out.contains("FAIL  denials are 401 (wrong)"), "{out}");
    assert!(out.contains("expected status 401, got 403"), "{out}");
    assert!(out.contains("1 passed, 2 failed"), "{out}");
    assert!(err.contains("2 of 3 cases failed"), "{err}");

    // An authenticator, config from the cases file; the store is shared by
    // the cases in order, and a trap is the `failed` outcome.
    let probe_cases = write_json(
        dir.path(),
        "probe.json",
        &json!({"config": {"mode": "kv"}, "cases": [
            {"name": "first call counts 1", "expect": {"outcome": "authenticated", "claims": {"count": 1}}},
            {"name": "second call sees the first", "expect": {"outcome": "authenticated", "claims": {"count": 2}, "kv": {"count": "2"}}},
            {"name": "seeded", "kv": {"count": "9"}, "expect": {"outcome": "authenticated", "user_id": "probe", "kv": {"count": "10", "absent": null}}},
            {"name": "a trap fails closed", "config": {"mode": "memory"}, "request": {"headers": {"x-fail": "1"}},
             "expect": {"outcome": "failed", "detail": "asked to fail by x-fail"}}
        ]}),
    );
    let (code, out, err) = run_agentflow(
        &[
            "plugin",
            "test",
            plugins().probe.to_str().unwrap(),
            "--cases",
            &probe_cases,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 passed, 0 failed"), "{out}");

    // The api-key plugin through its entry, one case wrong about the user.
    let key_cases = write_json(
        dir.path(),
        "keys.json",
        &json!([
            {"name": "the key", "request": {"headers": {"x-api-key": "test"}},
             "expect": {"outcome": "authenticated", "user_id": "svc-2", "roles": ["user"]}},
            {"name": "no key", "expect": {"outcome": "no-credentials"}},
            {"name": "bad key", "request": {"headers": {"x-api-key": "nope"}},
             "expect": {"outcome": "refused", "status": 401}}
        ]),
    );
    let (code, out, _) = run_agentflow(
        &[
            "plugin",
            "test",
            "--cases",
            &key_cases,
            "--config-from",
            &format!("{cfg}#auth[1]"),
        ],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  the key") && out.contains("expected user_id \"svc-2\", got \"svc-1\""),
        "{out}"
    );
    assert!(out.contains("2 passed, 1 failed"), "{out}");

    // A case file with a typo is refused before anything runs.
    let typo = write_json(
        dir.path(),
        "typo.json",
        &json!([{"name": "x", "expect": {"outcome": "allowed"}}]),
    );
    let (code, _, err) = run_agentflow(
        &[
            "plugin",
            "test",
            plugins().rbac.to_str().unwrap(),
            "--cases",
            &typo,
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("unknown outcome \"allowed\""), "{err}");
}
