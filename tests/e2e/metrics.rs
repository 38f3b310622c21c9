//! Prometheus metrics (issue 14, item 1) and the log format (item 8): who may
//! read `/metrics`, what it counts after real traffic, the loopback
//! `--metrics-port`, and `--log-format json` without colour codes.

use serde_json::{Value, json};

use crate::support::*;

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

fn token(user: &str) -> String {
    bearer(&hs256(
        SECRET,
        json!({"sub": user, "roles": ["user"], "exp": now() + 600}),
    ))
}

/// The value of the sample `series` (name and labels as exported), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn metrics_text(server: &Server, headers: &[(&str, &str)]) -> Reply {
    get(&server.url("/metrics"), headers)
}

#[test]
fn metrics_count_real_traffic_and_need_the_token_or_a_superuser() {
    let upstream = Upstream::start();
    let server = Server::start_with_args(
        json!({"agent": upstream.base, "auth": ["jwt", "api_key"]}),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("AGENTFLOW_SUPERUSER", "admin"),
            ("AGENTFLOW_SUPERUSER_PASSWORD", "admin-password-1"),
            ("AGENTFLOW_METRICS_TOKEN", METRICS_TOKEN),
        ],
        &["--metrics-port", "0"],
    );
    let alice = token("alice");
    for _ in 0..3 {
        let r = get(
            &server.url("/v1/threads"),
            &[("authorization", alice.as_str())],
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    assert_eq!(get(&server.url("/v1/threads"), &[]).status, 401);

    // Who may read them.
    let r = metrics_text(&server, &[]);
    assert_eq!(r.status, 401, "{:?}", r.body);
    let r = metrics_text(&server, &[("authorization", alice.as_str())]);
    assert_eq!(
        r.status, 403,
        "an external JWT is not a superuser: {:?}",
        r.body
    );
    let r = metrics_text(&server, &[("authorization", "Bearer wrong-token")]);
    assert_eq!(r.status, 401, "{:?}", r.body);
    let login = post(
        &server.url("/v1/login"),
        &[],
        json!({"username": "admin", "password": "admin-password-1"}),
    );
    let admin = bearer(login.body["access_token"].as_str().unwrap());
    assert_eq!(
        metrics_text(&server, &[("authorization", admin.as_str())]).status,
        200
    );

    let bearer_token = format!("Bearer {METRICS_TOKEN}");
    let r = metrics_text(&server, &[("authorization", bearer_token.as_str())]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers
    );
    let text = r.body.as_str().expect("text").to_owned();
    assert_eq!(
        sample(
            &text,
            "agentflow_http_requests_total{class=\"agent\",status=\"200\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "agentflow_http_requests_total{class=\"agent\",status=\"401\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "agentflow_auth_outcomes_total{method=\"jwt\",outcome=\"authenticated\"}"
        ),
        // Three proxied requests and alice's refused look at /metrics.
        Some(4.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "agentflow_auth_outcomes_total{method=\"chain\",outcome=\"no-credentials\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "agentflow_authorization_outcomes_total{outcome=\"allowed\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "agentflow_upstream_duration_seconds_count{class=\"agent\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert!(
        sample(&text, "agentflow_http_open_connections").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Bounded labels: no user ids, no raw paths.
    assert!(
        !text.contains("alice") && !text.contains("/v1/threads"),
        "{text}"
    );

    // The loopback listener serves the same families without credentials.
    let line = server
        .logs()
        .lines()
        .find_map(|l| l.split("metrics on ").nth(1).map(str::to_owned))
        .expect("the metrics listener logged its address");
    let url = line.split([' ', '"']).next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let r = get(&url, &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .as_str()
            .unwrap()
            .contains("agentflow_http_requests_total"),
        "{:?}",
        r.body
    );
}

#[test]
fn plugin_calls_reloads_caches_and_lockouts_are_counted() {
    let upstream = Upstream::start();
    let plugin_dir = tempfile::tempdir().unwrap();
    let wasm = plugin_dir.path().join("policy.wasm");
    std::fs::copy(&plugins().rbac, &wasm).unwrap();
    let server = Server::start(
        json!({
            "agent": upstream.base,
            "auth": "jwt",
            "authorization": {"name": "policy", "path": wasm,
                              "config": {"roles": {"user": {"*": ["*"]}}}},
            "plugins": {"watch": true},
        }),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("AGENTFLOW_SUPERUSER", "admin"),
            ("AGENTFLOW_SUPERUSER_PASSWORD", "admin-password-1"),
            ("AGENTFLOW_METRICS_TOKEN", METRICS_TOKEN),
            ("AGENTFLOW_LOGIN_MAX_FAILURES", "2"),
        ],
    );
    let alice = token("alice");
    for _ in 0..3 {
        let r = get(
            &server.url("/v1/threads"),
            &[("authorization", alice.as_str())],
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // Two wrong passwords lock the account at this address; the third try
    // is refused before any hashing.
    let codes: Vec<u16> = (0..3)
        .map(|_| {
            post(
                &server.url("/v1/login"),
                &[],
                json!({"username": "admin", "password": "wrong-password"}),
            )
            .status
        })
        .collect();
    assert_eq!(codes, [401, 401, 429]);
    let read = || {
        let bearer_token = format!("Bearer {METRICS_TOKEN}");
        let r = metrics_text(&server, &[("authorization", bearer_token.as_str())]);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body.as_str().expect("text").to_owned()
    };
    let text = read();
    let exactly = |series: &str, n: f64| {
        assert_eq!(sample(&text, series), Some(n), "{series}:\n{text}");
    };
    // One verification, then the verified-token cache answers.
    exactly(
        "agentflow_cache_lookups_total{cache=\"token\",result=\"miss\"}",
        1.0,
    );
    exactly(
        "agentflow_cache_lookups_total{cache=\"token\",result=\"hit\"}",
        2.0,
    );
    // rbac allows with a cache hint: one call into the sandbox (timed),
    // then the outcome cache answers.
    exactly(
        "agentflow_plugin_call_duration_seconds_count{plugin=\"policy\"}",
        // `init` at load, then the first authorize.
        2.0,
    );
    exactly(
        "agentflow_cache_lookups_total{cache=\"plugin_outcome\",result=\"hit\"}",
        2.0,
    );
    exactly(
        "agentflow_login_refusals_total{reason=\"locked_address\"}",
        1.0,
    );

    // A rebuilt plugin is swapped in; a broken file is a failed reload.
    std::fs::write(
        &wasm,
        crate::plugin_platform::with_marker(&plugins().rbac, "v2"),
    )
    .unwrap();
    let swapped = "agentflow_plugin_reloads_total{plugin=\"policy\",result=\"swapped\"}";
    let reloaded = wait_for(std::time::Duration::from_secs(15), || {
        sample(&read(), swapped) == Some(1.0)
    });
    assert!(reloaded.is_some(), "{}\n{}", read(), server.logs());
    std::fs::write(&wasm, b"not a component").unwrap();
    let failed = "agentflow_plugin_reloads_total{plugin=\"policy\",result=\"failed\"}";
    let counted = wait_for(std::time::Duration::from_secs(15), || {
        sample(&read(), failed).is_some_and(|n| n >= 1.0)
    });
    assert!(counted.is_some(), "{}\n{}", read(), server.logs());
}

#[test]
fn json_logs_are_one_object_per_line_without_colour_codes() {
    let server = Server::start_with_args(
        json!({"auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
        &["--log-format", "json"],
    );
    assert_eq!(get(&server.url("/ping"), &[]).status, 200);
    let logs = server.logs();
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI codes in piped logs:\n{logs}"
    );
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("agentflow listening on http://")),
        "{logs}"
    );

    // Text logs to a pipe carry no colour codes either.
    let text = Server::start(json!({"auth": "jwt"}), &[("JWT_SECRET_KEY", SECRET)]);
    assert!(!text.logs().contains('\u{1b}'), "{}", text.logs());
}
