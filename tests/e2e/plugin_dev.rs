//! A plugin developer's workflow: `agentflow plugin new` scaffolds a crate
//! that builds and tests as is, `plugin check` and `plugin call` work on its
//! build, and a server pointed at the crate folder rebuilds it on a save.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// Shared with the other test plugins, so dependencies build once.
fn target_dir() -> PathBuf {
    repo_root().join("target").join("e2e-plugins")
}

fn cargo(crate_dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO"))
        .current_dir(crate_dir)
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `plugin new` in `dir`, with the workspace's lock file so versions match
/// the ones already built.
fn scaffold(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let (code, out, err) = run_agentflow(
        &[
            "plugin",
            "new",
            name,
            "--kind",
            kind,
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created"), "{out}");
    let root = dir.join(name);
    std::fs::copy(repo_root().join("Cargo.lock"), root.join("Cargo.lock")).unwrap();
    root
}

fn wasm_of(name: &str) -> PathBuf {
    target_dir()
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

#[test]
fn the_scaffold_builds_tests_checks_calls_and_hot_reloads() {
    plugins(); // the shared dependencies are built once, by the suite
    let dir = tempfile::tempdir().unwrap();
    let root = scaffold(dir.path(), "scaffolded-auth", "authenticator");
    cargo(&root, &["test", "--release", "-q"]);
    cargo(
        &root,
        &["build", "--release", "--target", "wasm32-wasip2", "-q"],
    );
    let wasm = wasm_of("scaffolded-auth");

    let (code, out, err) = run_agentflow(&["plugin", "check", wasm.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("fits agentflow:auth/authenticator: yes"),
        "{out}"
    );
    assert!(out.contains("fits agentflow:auth/authorizer: no"), "{out}");
    assert!(
        out.contains("agentflow:auth/host@0.3.0"),
        "imports are listed: {out}"
    );

    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        json!({"headers": {"x-token": "t"}, "config": {"token": "t", "user": "dev"}}).to_string(),
    )
    .unwrap();
    let (code, out, err) = run_agentflow(
        &[
            "plugin",
            "call",
            wasm.to_str().unwrap(),
            "--request",
            request.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["outcome"], "authenticated");
    assert_eq!(answer["identity"]["user_id"], "dev");

    // The starter cases pass against the starter source (the crate folder
    // is built with the watch profile, as the server below builds it).
    let target = target_dir();
    let target_env = [("CARGO_TARGET_DIR", target.to_str().unwrap())];
    let (code, out, err) = run_agentflow(&["plugin", "test", root.to_str().unwrap()], &target_env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");
    assert!(
        out.contains("agentflow-dev/scaffolded_auth.wasm"),
        "built with the watch profile: {out}"
    );

    // The server builds the crate folder and rebuilds it when a source changes.
    let server = Server::start(
        json!({"auth": ["jwt", {"method": "custom", "name": "dev", "path": root, "config": {"token": "t", "user": "dev"}}],
               "plugins": {"watch": true}}),
        &[target_env[0], ("JWT_SECRET_KEY", SECRET)],
    );
    let whoami = || get(&server.url("/v1/whoami"), &[("x-token", "t")]);
    assert_eq!(whoami().body["roles"], json!(["user"]));
    let lib = root.join("src").join("lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        source.replace(".with_role(\"user\")", ".with_role(\"editor\")"),
    )
    .unwrap();
    let mut roles = json!(null);
    for _ in 0..600 {
        roles = whoami().body["roles"].clone();
        if roles == json!(["editor"]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        roles,
        json!(["editor"]),
        "the edited crate was not rebuilt and reloaded:\n{}",
        server.logs()
    );
    assert!(
        target
            .join("wasm32-wasip2/agentflow-dev/scaffolded_auth.wasm")
            .is_file(),
        "the watched crate is built with the agentflow-dev profile"
    );
    // The starter cases now catch the change.
    let (code, out, _) = run_agentflow(&["plugin", "test", root.to_str().unwrap()], &target_env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("expected roles [\"user\"], got [\"editor\"]"),
        "{out}"
    );

    // A save with 30 errors: the last good version keeps serving and the
    // listing shows every one of them, not the last lines of cargo's output.
    let mut broken = std::fs::read_to_string(&lib).unwrap();
    broken.push_str("\npub fn broken() -> u32 {\n");
    for i in 0..30 {
        broken.push_str(&format!("    let _ = undefined_{i};\n"));
    }
    broken.push_str("    0\n}\n");
    std::fs::write(&lib, broken).unwrap();
    let admin = bearer(&hs256(
        SECRET,
        json!({"sub": "root", "role": "admin", "exp": now() + 600}),
    ));
    let mut error = String::new();
    for _ in 0..600 {
        let r = get(&server.url("/v1/plugins"), &[("authorization", &admin)]);
        assert_eq!(r.status, 200, "{:?}", r.body);
        if let Some(e) = r.body["plugins"][0]["last_error"].as_str() {
            error = e.to_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        error.starts_with("cargo build failed:"),
        "{error}\n{}",
        server.logs()
    );
    for i in [0, 15, 29] {
        assert!(
            error.contains(&format!("cannot find value `undefined_{i}`")),
            "error {i} is missing:\n{error}"
        );
    }
    assert!(
        error.contains("could not compile `scaffolded-auth`"),
        "{error}"
    );
    assert!(
        !error.contains("   Compiling "),
        "progress lines are dropped: {error}"
    );
    assert!(
        server.logs().contains("cannot find value `undefined_0`"),
        "the log has the whole error too"
    );
    assert_eq!(whoami().body["roles"], json!(["editor"]));
}

#[test]
fn check_and_call_explain_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let (code, _, err) = run_agentflow(&["plugin", "check", not_wasm.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("not a valid WebAssembly component"), "{err}");

    // An authorizer: fits one world, and a call needs identity and access.
    let rbac = plugins().rbac.to_str().unwrap();
    let (code, out, _) = run_agentflow(&["plugin", "check", rbac], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("fits agentflow:auth/authorizer: yes"), "{out}");
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        json!({"config": {"roles": {"user": {"graph": ["invoke"]}}}, "identity": {"user_id": "u", "roles": ["user"]},
               "access": {"resource": "checkpointer", "action": "write"}})
        .to_string(),
    )
    .unwrap();
    let (code, out, err) = run_agentflow(
        &[
            "plugin",
            "call",
            rbac,
            "--request",
            request.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"deny\""), "{out}");

    // Failures name the plugin, the export and the cause.
    let hostile = plugins().hostile.to_str().unwrap();
    for (mode, cause) in [
        ("loop", "time limit"),
        ("grow-memory", "memory limit"),
        ("trap", "trapped on purpose"),
    ] {
        std::fs::write(&request, json!({"config": {"mode": mode}}).to_string()).unwrap();
        let (code, _, err) = run_agentflow(
            &[
                "plugin",
                "call",
                hostile,
                "--request",
                request.to_str().unwrap(),
                "--memory-mb",
                "16",
            ],
            &[],
        );
        assert_eq!(code, 2, "{mode}");
        assert!(
            err.contains("plugin \"hostile-plugin\" failed in authenticate"),
            "{mode}: {err}"
        );
        assert!(err.contains(cause), "{mode}: {err}");
    }

    // The authorizer scaffold builds and fits its world.
    let root = scaffold(dir.path(), "scaffolded-authz", "authorizer");
    cargo(
        &root,
        &["build", "--release", "--target", "wasm32-wasip2", "-q"],
    );
    let (code, out, _) = run_agentflow(
        &[
            "plugin",
            "check",
            wasm_of("scaffolded-authz").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert!(out.contains("fits agentflow:auth/authorizer: yes"), "{out}");
}
