//! The plugin platform: hot reload, host capabilities (secrets, kv,
//! outbound HTTP) and the admin listing, against the real binary.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

fn admin() -> String {
    bearer(&hs256(
        SECRET,
        json!({"sub": "root", "role": "admin", "exp": now() + 600}),
    ))
}

fn probe(mode: &str, extra: Value) -> Value {
    let mut p = json!({"method": "custom", "name": "probe", "path": plugins().probe, "config": {"mode": mode}});
    p.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    p
}

/// The claims the probe answered with (no credentials: the probe runs).
fn probe_claims(server: &Server) -> Value {
    let r = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(r.status, 200, "{:?}\n{}", r.body, server.logs());
    r.body["claims"].clone()
}

/// The listing entry of plugin `name`.
fn status_of(server: &Server, name: &str) -> Value {
    let r = get(&server.url("/v1/plugins"), &[("authorization", &admin())]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .expect("plugin listed")
}

/// `wasm` plus a custom section: a different file (new sha256) with the
/// same behaviour, as a rebuild with no code change would give.
pub fn with_marker(wasm: &Path, marker: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(wasm).unwrap();
    let name = b"agentflow-test";
    let payload_len = 1 + name.len() + marker.len();
    bytes.push(0);
    bytes.push(payload_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(marker.as_bytes());
    bytes
}

#[test]
fn secrets_can_come_from_the_operators_encrypted_variables() {
    let env = [
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_SUPERUSER", "ops"),
        ("AGENTFLOW_SUPERUSER_PASSWORD", "ops-password-1"),
    ];
    let granted = probe(
        "secret",
        json!({"secrets": ["VAULT_TOKEN"], "config": {"mode": "secret", "secret": "VAULT_TOKEN"}}),
    );
    let server = Server::start(json!({"auth": ["jwt", granted]}), &env);
    assert_eq!(probe_claims(&server)["secret"], Value::Null);
    let login = post(
        &server.url("/v1/login"),
        &[],
        json!({"username": "ops", "password": "ops-password-1"}),
    );
    let token = bearer(login.body["access_token"].as_str().unwrap());
    let created = post(
        &server.url("/v1/variables"),
        &[("authorization", &token)],
        json!({"name": "VAULT_TOKEN", "value": "from-the-vault", "type": "credential"}),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    // Secrets are read when plugins load.
    let server = server.restart(&[]);
    assert_eq!(probe_claims(&server)["secret"], "from-the-vault");
}

#[test]
fn secrets_are_visible_only_to_the_plugin_granted_them() {
    let env = [
        ("JWT_SECRET_KEY", SECRET),
        ("PROBE_SECRET", "s3cret-value"),
        ("OTHER_SECRET", "not-yours"),
    ];
    let granted = probe(
        "secret",
        json!({"secrets": ["PROBE_SECRET"], "config": {"mode": "secret", "secret": "PROBE_SECRET"}}),
    );
    let server = Server::start(json!({"auth": ["jwt", granted]}), &env);
    assert_eq!(probe_claims(&server)["secret"], "s3cret-value");
    // A listing never shows secret values.
    let listing = get(&server.url("/v1/plugins"), &[("authorization", &admin())]);
    assert!(!listing.body.to_string().contains("s3cret-value"));
    drop(server);

    let other = probe(
        "secret",
        json!({"secrets": ["PROBE_SECRET"], "config": {"mode": "secret", "secret": "OTHER_SECRET"}}),
    );
    let server = Server::start(json!({"auth": other}), &env);
    assert_eq!(
        probe_claims(&server)["secret"],
        Value::Null,
        "a variable not granted stays hidden"
    );
    drop(server);

    let ungranted = probe(
        "secret",
        json!({"config": {"mode": "secret", "secret": "PROBE_SECRET"}}),
    );
    let server = Server::start(json!({"auth": ungranted}), &env);
    assert_eq!(
        probe_claims(&server)["secret"],
        Value::Null,
        "no grant, no secret"
    );
    assert!(!server.logs().contains("s3cret-value"));
}

#[test]
fn outbound_http_reaches_only_allowed_hosts() {
    let up = Upstream::start();
    let addr = up.base.trim_start_matches("http://").to_owned();
    let url = format!("{}/from-plugin", up.base);
    let allowed = probe(
        "http",
        json!({"allowed_hosts": [addr], "timeout_ms": 3000, "config": {"mode": "http", "url": url}}),
    );
    let server = Server::start(json!({"auth": allowed}), &[]);
    let claims = probe_claims(&server);
    assert_eq!(claims["status"], 200, "{claims}");
    assert!(
        claims["body"].as_str().unwrap().contains("/from-plugin"),
        "{claims}"
    );
    assert_eq!(up.count(), 1);
    drop(server);

    // Same URL, a different host allowed: denied inside the plugin.
    let denied = probe(
        "http",
        json!({"allowed_hosts": ["127.0.0.1:1"], "timeout_ms": 3000, "config": {"mode": "http", "url": url}}),
    );
    let server = Server::start(json!({"auth": denied}), &[]);
    let claims = probe_claims(&server);
    assert_eq!(claims["denied"], true, "{claims}");
    assert_eq!(
        up.count(),
        1,
        "the denied request never reached the network"
    );
    assert!(server.logged("outbound HTTP request denied"));
    drop(server);

    // No allowed_hosts at all: nothing goes out.
    let none = probe("http", json!({"config": {"mode": "http", "url": url}}));
    let server = Server::start(json!({"auth": none}), &[]);
    assert_eq!(probe_claims(&server)["denied"], true);
    assert_eq!(up.count(), 1);
}

#[test]
fn outbound_http_counts_against_the_time_limit() {
    // A server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let hold = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(5));
        drop(conns);
    });
    let p = probe(
        "http",
        json!({"allowed_hosts": [addr], "timeout_ms": 400, "config": {"mode": "http", "url": format!("http://{addr}/")}}),
    );
    let server = Server::start(json!({"auth": p}), &[]);
    let started = Instant::now();
    let r = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(server.logged("time limit"), "{}", server.logs());
    drop(hold);
}

#[test]
fn kv_persists_across_reloads_and_restarts_and_is_capped() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let plugin_dir = tempfile::tempdir().unwrap();
    let wasm = plugin_dir.path().join("probe.wasm");
    std::fs::copy(&plugins().probe, &wasm).unwrap();
    let config = json!({
        "auth": ["jwt", {"method": "custom", "name": "probe", "path": wasm, "config": {"mode": "kv"}}],
        "plugins": {"watch": true},
    });
    let env = [("JWT_SECRET_KEY", SECRET), ("AGENTFLOW_DATA_DIR", data_dir)];
    let server = Server::start(config.clone(), &env);
    assert_eq!(probe_claims(&server)["count"], 1);
    assert_eq!(probe_claims(&server)["count"], 2);

    let before = status_of(&server, "probe")["sha256"].clone();
    std::fs::write(&wasm, with_marker(&plugins().probe, "v2")).unwrap();
    let swapped = wait_for(Duration::from_secs(10), || {
        status_of(&server, "probe")["sha256"] != before
    });
    assert!(
        swapped.is_some(),
        "the new build was not loaded:\n{}",
        server.logs()
    );
    assert_eq!(probe_claims(&server)["count"], 3, "kv survives a reload");
    drop(server);

    let server = Server::start(config, &env);
    assert_eq!(probe_claims(&server)["count"], 4, "kv survives a restart");
    assert!(data.path().join("plugins-kv").is_dir());
    drop(server);

    // A small cap: writes past it fail inside the plugin.
    let capped = probe("kv-fill", json!({"kv_kb": 8}));
    let server = Server::start(json!({"auth": capped}), &[("AGENTFLOW_DATA_DIR", data_dir)]);
    let claims = probe_claims(&server);
    let stored = claims["stored"].as_u64().unwrap();
    assert!((1..8).contains(&stored), "{claims}");
    assert!(
        claims["kv_error"]
            .as_str()
            .unwrap()
            .contains("storage full"),
        "{claims}"
    );
}

#[test]
fn hot_reload_swaps_behaviour_keeps_in_flight_calls_and_survives_broken_builds() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("auth.wasm");
    std::fs::copy(&plugins().hostile, &wasm).unwrap();
    let config = json!({
        "auth": ["jwt", {"method": "custom", "name": "swap", "path": wasm, "config": {"mode": "slow", "ms": 1500}}],
        "plugins": {"watch": true, "timeout_ms": 5000},
    });
    let server = Server::start(config, &[("JWT_SECRET_KEY", SECRET)]);
    let first = status_of(&server, "swap");
    assert_eq!(first["slot"], "authenticator");
    assert_eq!(first["last_error"], Value::Null);

    // A request in flight on the old (slow) version...
    let url = server.url("/v1/whoami");
    let in_flight = std::thread::spawn(move || get(&url, &[]));
    std::thread::sleep(Duration::from_millis(300));
    // ...while the new build is written over the file.
    let written = Instant::now();
    std::fs::write(&wasm, std::fs::read(&plugins().probe).unwrap()).unwrap();
    let old_sha = first["sha256"].clone();
    wait_for(Duration::from_secs(10), || {
        status_of(&server, "swap")["sha256"] != old_sha
    })
    .unwrap_or_else(|| panic!("the new build was not loaded:\n{}", server.logs()));
    let latency = written.elapsed();
    let server_side = server
        .logs()
        .lines()
        .find(|l| l.contains("plugin reloaded"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "hot reload: new version live {} ms after the write; server: {server_side}",
        latency.as_millis()
    );
    assert!(latency < Duration::from_secs(5), "reload took {latency:?}");
    let r = get(&server.url("/v1/whoami"), &[]);
    assert_eq!(
        r.body["user_id"], "probe",
        "new requests get the new version"
    );
    let old = in_flight.join().unwrap();
    assert_eq!(old.status, 200);
    assert_eq!(
        old.body["user_id"], "hostile-slow",
        "the in-flight request finished on the old version"
    );

    // A broken build: the last good version keeps serving, the error shows.
    let good_sha = status_of(&server, "swap")["sha256"].clone();
    let mut f = std::fs::File::create(&wasm).unwrap();
    f.write_all(b"\0asm this is not a component").unwrap();
    drop(f);
    wait_for(Duration::from_secs(10), || {
        status_of(&server, "swap")["last_error"].is_string()
    })
    .unwrap_or_else(|| panic!("the failed reload was not reported:\n{}", server.logs()));
    let s = status_of(&server, "swap");
    assert_eq!(s["sha256"], good_sha);
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{s}"
    );
    assert_eq!(get(&server.url("/v1/whoami"), &[]).body["user_id"], "probe");
    assert!(server.logged("plugin reload failed; the last good version keeps serving"));

    // A plugin of the wrong kind is refused the same way.
    std::fs::copy(&plugins().rbac, &wasm).unwrap();
    wait_for(Duration::from_secs(10), || {
        status_of(&server, "swap")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not export"))
    })
    .unwrap_or_else(|| panic!("the authorizer was not refused:\n{}", server.logs()));
    assert_eq!(get(&server.url("/v1/whoami"), &[]).body["user_id"], "probe");

    // The next good build clears the error.
    std::fs::write(&wasm, with_marker(&plugins().probe, "v3")).unwrap();
    wait_for(Duration::from_secs(10), || {
        status_of(&server, "swap")["last_error"].is_null()
    })
    .unwrap_or_else(|| panic!("the good build was not loaded:\n{}", server.logs()));
    let s = status_of(&server, "swap");
    assert!(s["calls"].as_u64().unwrap() >= 4, "{s}");
}

#[test]
fn plugin_listing_is_for_admins_only() {
    let server = Server::start(
        json!({"auth": ["jwt", probe("echo", json!({}))]}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let user = bearer(&hs256(
        SECRET,
        json!({"sub": "u", "role": "user", "exp": now() + 600}),
    ));
    assert_eq!(
        get(&server.url("/v1/plugins"), &[("authorization", &user)]).status,
        403
    );
    // Without credentials the probe authenticates as a plain user.
    assert_eq!(get(&server.url("/v1/plugins"), &[]).status, 403);
    let s = status_of(&server, "probe");
    for key in [
        "slot",
        "path",
        "wasm",
        "sha256",
        "loaded_at",
        "last_error",
        "calls",
        "denials",
        "failures",
    ] {
        assert!(s.get(key).is_some(), "{key} missing from {s}");
    }
}
