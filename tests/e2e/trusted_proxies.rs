//! Trusted proxies (issue 14, item 3): the client address comes from
//! `X-Forwarded-For`/`Forwarded` only when the peer is in `trusted_proxies`,
//! and that one address is what the agent's `x-forwarded-for` and the login
//! throttle see. Never trusted by default.

use serde_json::{Value, json};

use crate::support::*;

fn token(user: &str) -> String {
    bearer(&hs256(
        SECRET,
        json!({"sub": user, "roles": ["user"], "exp": now() + 600}),
    ))
}

/// The gateway in front of `upstream`, JWT auth, logins throttled to two
/// attempts a minute per address, trusting `trusted` (JSON, may be null).
fn gateway(upstream: &Upstream, trusted: Value) -> Server {
    Server::start(
        json!({"agent": upstream.base, "auth": "jwt", "trusted_proxies": trusted}),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("AGENTFLOW_SUPERUSER", "admin"),
            ("AGENTFLOW_SUPERUSER_PASSWORD", "admin-password-1"),
            ("AGENTFLOW_LOGIN_ATTEMPTS_PER_MINUTE", "2"),
        ],
    )
}

/// A wrong-password login claiming to come from `forwarded_for`.
fn bad_login(server: &Server, forwarded_for: &str) -> Reply {
    post(
        &server.url("/v1/login"),
        &[("x-forwarded-for", forwarded_for)],
        json!({"username": "admin", "password": "wrong-password"}),
    )
}

#[test]
fn forwarding_headers_are_ignored_unless_the_peer_is_trusted() {
    let upstream = Upstream::start();
    let server = gateway(&upstream, Value::Null);
    let auth = token("alice");
    let reply = get(
        &server.url("/v1/threads"),
        &[
            ("authorization", auth.as_str()),
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.8"),
        ],
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("forwarded"), None);

    // A client rotating its claimed address still spends one budget.
    assert_eq!(bad_login(&server, "198.51.100.1").status, 401);
    assert_eq!(bad_login(&server, "198.51.100.2").status, 401);
    let third = bad_login(&server, "198.51.100.3");
    assert_eq!(third.status, 429, "{:?}", third.body);
    assert!(third.header("retry-after").is_some());

    // A trusted list that does not hold the peer changes nothing.
    let other = gateway(&upstream, json!(["10.0.0.0/8"]));
    get(
        &other.url("/v1/threads"),
        &[
            ("authorization", auth.as_str()),
            ("x-forwarded-for", "203.0.113.7"),
        ],
    );
    assert_eq!(upstream.last().header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn a_trusted_proxy_names_the_client_for_the_agent_and_the_login_throttle() {
    let upstream = Upstream::start();
    let server = gateway(&upstream, json!(["127.0.0.1"]));
    let auth = token("alice");

    // The leftmost entry is what the client wrote; the trusted proxy's own
    // entry (the last) is the address it saw.
    let reply = get(
        &server.url("/v1/threads"),
        &[
            ("authorization", auth.as_str()),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
        ],
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        upstream.last().header("x-forwarded-for"),
        Some("203.0.113.7")
    );

    // RFC 7239 `Forwarded`, IPv6 with a port.
    get(
        &server.url("/v1/threads"),
        &[
            ("authorization", auth.as_str()),
            ("forwarded", "for=\"[2001:db8::17]:4711\";proto=https"),
        ],
    );
    assert_eq!(
        upstream.last().header("x-forwarded-for"),
        Some("2001:db8::17")
    );

    // Each forwarded client has its own login budget.
    assert_eq!(bad_login(&server, "198.51.100.1").status, 401);
    assert_eq!(bad_login(&server, "198.51.100.1").status, 401);
    let throttled = bad_login(&server, "198.51.100.1");
    assert_eq!(throttled.status, 429, "{:?}", throttled.body);
    assert_eq!(bad_login(&server, "198.51.100.2").status, 401);
    // A hop that is not an address stops at the proxy: keyed on 127.0.0.1,
    // which has its own (unspent) budget.
    assert_eq!(bad_login(&server, "unknown").status, 401);
}

#[test]
fn a_bad_trusted_proxies_entry_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(
        &path,
        json!({"auth": "jwt", "trusted_proxies": ["10.0.0.0/8", "10.0.0.0/40"]}).to_string(),
    )
    .unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("trusted_proxies[1]") && err.contains("CIDR"),
        "{err}"
    );
}
