//! First-contact papercuts (issue 14, item 9): the port is bound before
//! anything slow and a port in use is reported at once; a failed start
//! leaves no data dir behind; `secret-key rotate` reads the key from stdin;
//! with `"auth": null` the agent is told `anonymous`, as `/v1/whoami` says.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[test]
fn a_port_in_use_is_reported_at_once_and_leaves_no_data_dir() {
    let first = Server::start(json!({"auth": "jwt"}), &[("JWT_SECRET_KEY", SECRET)]);
    let port = first.base.rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(&path, json!({"auth": "jwt"}).to_string()).unwrap();
    let started = Instant::now();
    let (code, _, err) = run_agentflow(
        &["run", "--port", &port, "--config", path.to_str().unwrap()],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !dir.path().join("data").exists(),
        "a data dir was left behind"
    );
}

#[test]
fn a_start_that_fails_after_creating_the_data_dir_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    // An authorizer in the auth slot: refused when the plugins are loaded,
    // after the account store (and its generated key) was created.
    std::fs::write(
        &path,
        json!({"auth": {"method": "custom", "path": plugins().rbac}}).to_string(),
    )
    .unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[],
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("auth.path"), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "a failed start left data/ (with a generated secret) behind"
    );
}

#[test]
fn secret_key_rotate_reads_the_new_key_from_stdin() {
    let server = Server::start(json!({"auth": "jwt"}), &[("JWT_SECRET_KEY", SECRET)]);
    let key_file = server.dir.path().join("data").join("secret_key");
    assert!(key_file.exists());
    let stopped = server.stop();
    let (_, new_key, _) = run_agentflow(&["secret-key", "generate"], &[]);
    let new_key = new_key.trim().to_owned();

    let mut child = agentflow_command()
        .args(["secret-key", "rotate", "--config"])
        .arg(&stopped.config)
        .env("JWT_SECRET_KEY", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{new_key}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), new_key);

    // Nothing on stdin: a clear refusal, not a silent empty key.
    let out = agentflow_command()
        .args(["secret-key", "rotate", "--config"])
        .arg(&stopped.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AGENTFLOW_NEW_SECRET_KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_auth_off_the_agent_and_whoami_agree_on_anonymous() {
    let up = Upstream::start();
    let server = Server::start(json!({"agent": up.base, "auth": null}), &[]);
    assert_eq!(
        get(&server.url("/v1/whoami"), &[]).body["user_id"],
        "anonymous"
    );
    assert_eq!(get(&server.url("/v1/threads"), &[]).status, 200);
    assert_eq!(up.last().header("x-agentflow-user-id"), Some("anonymous"));
}
