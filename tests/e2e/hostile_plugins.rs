//! Plugins that misbehave fail closed (503) within their limits, and the
//! server keeps serving everyone else.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn hostile(mode: &str) -> serde_json::Value {
    json!({"method": "custom", "name": format!("hostile-{mode}"), "path": plugins().hostile, "config": {"mode": mode}})
}

#[test]
fn misbehaving_plugins_get_503_and_the_server_keeps_serving() {
    let up = Upstream::start();
    let modes = ["loop", "trap", "grow-memory", "recurse", "huge-output"];
    // Each hostile plugin sits behind its own header-less chain entry, so
    // one server exercises them all: the chain stops at the first failure.
    for mode in modes {
        let server = Server::start(
            json!({"agent": up.base, "auth": hostile(mode), "plugins": {"timeout_ms": 300, "memory_mb": 16}}),
            &[],
        );
        let started = Instant::now();
        let r = post(
            &server.url("/v1/graph/invoke"),
            &[],
            json!({"messages": []}),
        );
        let took = started.elapsed();
        assert_eq!(r.status, 503, "{mode}: {:?}", r.body);
        assert_eq!(r.body["code"], "plugin_failed", "{mode}");
        assert!(
            !r.detail().contains(&format!("hostile-{mode}"))
                && r.detail().contains("auth plugin failed"),
            "{mode}: the client is not told which plugin (the log is): {:?}",
            r.body
        );
        assert!(took < Duration::from_secs(5), "{mode}: took {took:?}");
        assert_eq!(
            get(&server.url("/ping"), &[]).status,
            200,
            "{mode}: still serving"
        );
        // A second failing call: the plugin is still sandboxed per request.
        assert_eq!(
            post(&server.url("/v1/graph/invoke"), &[], json!({})).status,
            503,
            "{mode}"
        );
        let logs = server.logs();
        assert!(
            logs.contains(&format!("hostile-{mode}")),
            "{mode}: the log names the plugin:\n{logs}"
        );
    }
    assert_eq!(up.count(), 0, "nothing got through a failing plugin");
}

#[test]
fn a_looping_plugin_does_not_stall_other_requests() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": ["jwt", hostile("loop")], "plugins": {"timeout_ms": 1500}}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let loop_url = server.url("/v1/graph/invoke");
    let stuck: Vec<_> = (0..4)
        .map(|_| {
            let url = loop_url.clone();
            std::thread::spawn(move || post(&url, &[], json!({})).status)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let token = bearer(&hs256(SECRET, json!({"sub": "u1", "exp": now() + 600})));
    let started = Instant::now();
    let r = get(&server.url("/v1/whoami"), &[("authorization", &token)]);
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "JWT request waited {:?} behind looping plugins",
        started.elapsed()
    );
    for t in stuck {
        assert_eq!(t.join().unwrap(), 503);
    }
}

#[test]
fn trap_reason_reaches_the_log() {
    let server = Server::start(json!({"auth": hostile("trap")}), &[]);
    assert_eq!(get(&server.url("/v1/whoami"), &[]).status, 503);
    std::thread::sleep(Duration::from_millis(100));
    let logs = server.logs();
    assert!(
        logs.contains("hostile plugin trapped on purpose"),
        "the panic message is in the log:\n{logs}"
    );
}
