//! Bad configuration: the process exits non-zero and says which key and why.

use serde_json::{Value, json};

use crate::support::*;

/// Runs `agentflow run` on `config` and returns its stderr, asserting it
/// exits non-zero without serving.
fn refuses(config: Value, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        env,
    );
    assert_ne!(code, 0, "should refuse to start:\n{err}");
    assert!(!err.contains("listening on"), "{err}");
    err
}

#[test]
fn bad_configs_name_the_key_and_reason() {
    let err = refuses(
        json!({"auth": "jwt", "agnet": "http://x"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert!(err.contains("unknown field `agnet`"), "{err}");

    let err = refuses(
        json!({"auth": {"method": "custom", "path": "nope.wasm"}}),
        &[],
    );
    assert!(
        err.contains("auth.path") && err.contains("file not found"),
        "{err}"
    );

    let err = refuses(
        json!({"auth": {"method": "custom", "path": plugins().rbac}}),
        &[],
    );
    assert!(
        err.contains("auth.path") && err.contains("agentflow:auth/authenticate"),
        "an authorizer in the auth slot: {err}"
    );

    let err = refuses(json!({"auth": "jwt"}), &[("JWT_SECRET_KEY", "too-short")]);
    assert!(
        err.contains("JWT_SECRET_KEY") && err.contains("32"),
        "{err}"
    );

    let err = refuses(json!({"auth": "jwt"}), &[]);
    assert!(
        err.contains("JWT_SECRET_KEY") && err.contains("not set"),
        "{err}"
    );

    let err = refuses(
        json!({"auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET), ("JWT_ALGORITHM", "HS1024")],
    );
    assert!(
        err.contains("JWT_ALGORITHM") && err.contains("unknown algorithm"),
        "{err}"
    );

    let err = refuses(json!({"auth": "jwt", "env": "missing.env"}), &[]);
    assert!(err.contains("`env`"), "{err}");

    let err = refuses(json!({"agent": "graph.react:app"}), &[]);
    assert!(err.contains("`agent`"), "{err}");

    let not_wasm = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_wasm.path(), b"hello").unwrap();
    let err = refuses(json!({"authorization": not_wasm.path()}), &[]);
    assert!(
        err.contains("authorization") && err.contains("not a valid WebAssembly component"),
        "{err}"
    );
}

#[test]
fn env_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("secrets.env"),
        format!("JWT_SECRET_KEY={SECRET}\n"),
    )
    .unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(
        &path,
        json!({"auth": "jwt", "env": "secrets.env"}).to_string(),
    )
    .unwrap();
    let server = Server::start_file(tempfile::tempdir().unwrap(), &path, &[]);
    let token = bearer(&hs256(
        SECRET,
        json!({"sub": "from-env-file", "exp": now() + 60}),
    ));
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("authorization", &token)]).body["user_id"],
        "from-env-file"
    );
}

#[test]
fn a_plugin_error_is_said_once() {
    let err = refuses(
        json!({"authorization": {"path": plugins().api_key, "config": {"keys": []}}}),
        &[],
    );
    let reason = "does not export `agentflow:auth/authorize@";
    assert_eq!(err.matches(reason).count(), 1, "{err}");
}
