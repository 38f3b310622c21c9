//! Rate limits (issue 14, item 2): per client address and per identity, by
//! route class, answered 429 with `Retry-After` and the `RateLimit` headers.

use serde_json::json;

use crate::support::*;

fn token(user: &str) -> String {
    bearer(&hs256(
        SECRET,
        json!({"sub": user, "roles": ["user"], "exp": now() + 600}),
    ))
}

/// A 429 from the rate limiter: headers and JSON as documented.
fn assert_limited(reply: &Reply, policy: &str) {
    assert_eq!(reply.status, 429, "{:?}", reply.body);
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(policy),
        "{:?}",
        reply.headers
    );
    let state = reply.header("ratelimit").expect("RateLimit header");
    let name = policy.split(';').next().unwrap();
    assert_eq!(state, format!("{name};r=0;t={retry}"));
    assert_eq!(reply.body["code"], "too_many_requests");
    assert!(
        reply.detail().contains("too many requests"),
        "{:?}",
        reply.body
    );
}

#[test]
fn refresh_guessing_is_limited_per_address_by_default() {
    let server = Server::start(json!({"auth": "jwt"}), &[("JWT_SECRET_KEY", SECRET)]);
    let guess = |from: &str| {
        post(
            &server.url("/v1/refresh"),
            &[("x-forwarded-for", from)],
            json!({"refresh_token": "guess-0123456789"}),
        )
    };
    for i in 0..60 {
        let reply = guess("198.51.100.1");
        assert_ne!(
            reply.status, 429,
            "request {i} was limited: {:?}",
            reply.body
        );
    }
    // The bucket refills one request a second, so a slow loop may have
    // earned one or two more; the claimed address changes nothing.
    let limited = (0..5)
        .map(|_| guess("198.51.100.2"))
        .find(|r| r.status == 429)
        .expect("no 429 after the budget of 60");
    assert_limited(&limited, "\"per-address\";q=60;w=60");
    // Normal traffic elsewhere is untouched.
    assert_eq!(get(&server.url("/ping"), &[]).status, 200);
}

#[test]
fn per_identity_limits_count_each_user_apart() {
    let upstream = Upstream::start();
    let server = Server::start(
        json!({
            "agent": upstream.base,
            "auth": "jwt",
            "rate_limits": {"agent": {"per_identity": {"requests": 3, "window_s": 60}}},
        }),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let alice = token("alice");
    for _ in 0..3 {
        let reply = get(
            &server.url("/v1/threads"),
            &[("authorization", alice.as_str())],
        );
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    let reply = get(
        &server.url("/v1/threads"),
        &[("authorization", alice.as_str())],
    );
    assert_limited(&reply, "\"per-identity\";q=3;w=60");
    assert_eq!(upstream.count(), 3, "a limited request reached the agent");
    let bob = token("bob");
    assert_eq!(
        get(
            &server.url("/v1/threads"),
            &[("authorization", bob.as_str())]
        )
        .status,
        200
    );
    // The gateway's own API is another class, with no limit configured.
    assert_eq!(
        get(
            &server.url("/v1/whoami"),
            &[("authorization", alice.as_str())]
        )
        .status,
        200
    );
}

#[test]
fn per_address_limits_apply_before_authentication_to_the_resolved_client() {
    let upstream = Upstream::start();
    let server = Server::start(
        json!({
            "agent": upstream.base,
            "auth": "jwt",
            "trusted_proxies": ["127.0.0.1"],
            "rate_limits": {"agent": {"per_address": {"requests": 2, "window_s": 60}}},
        }),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let alice = token("alice");
    let from = |client: &str, auth: Option<&str>| {
        let mut h = vec![("x-forwarded-for", client)];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        get(&server.url("/v1/threads"), &h)
    };
    // Requests without credentials spend the budget too (guessing is limited).
    assert_eq!(from("203.0.113.1", None).status, 401);
    assert_eq!(from("203.0.113.1", Some(&alice)).status, 200);
    assert_limited(
        &from("203.0.113.1", Some(&alice)),
        "\"per-address\";q=2;w=60",
    );
    // Another client behind the same proxy has its own budget.
    assert_eq!(from("203.0.113.2", Some(&alice)).status, 200);
}

#[test]
fn a_bad_rate_limit_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(
        &path,
        json!({"auth": "jwt", "rate_limits": {"login": {"per_address": {"requests": 0, "window_s": 60}}}})
            .to_string(),
    )
    .unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("rate_limits.login.per_address") && err.contains("requests"),
        "{err}"
    );
}
