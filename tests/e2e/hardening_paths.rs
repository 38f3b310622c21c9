//! What is authorized is what is forwarded: hostile paths, identity in
//! bodies whatever the Content-Type, identity and forwarding headers in any
//! spelling, and credential headers plugins declare. Requests go over raw
//! TCP where an HTTP client would normalize what the attacker sends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// What came back from a raw request.
struct RawReply {
    status: u16,
    body: Value,
}

/// Writes the request line and headers exactly as given (plus `Host`,
/// `Connection: close` and `Content-Length`) and reads the whole answer.
fn raw(
    server: &Server,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawReply {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    RawReply {
        status,
        body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn token(user: &str, roles: &[&str]) -> String {
    bearer(&hs256(
        SECRET,
        json!({"sub": user, "roles": roles, "exp": now() + 600}),
    ))
}

/// The header names the upstream saw, lower-cased with `_` as `-`.
fn normalized_names(seen: &Recorded) -> Vec<(String, String)> {
    seen.headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase().replace('_', "-"), v.clone()))
        .collect()
}

#[test]
fn hostile_paths_are_refused_or_forwarded_exactly_as_authorized() {
    let up = Upstream::start();
    let rbac = json!({"path": plugins().rbac, "config": {"roles": {"reader": {"checkpointer": ["read"]}}}});
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt", "authorization": rbac}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let auth = token("alice", &["reader"]);

    // None: refused with 400/404 JSON, nothing forwarded.
    // Some(path): forwarded, and the upstream saw exactly this request target.
    let table: &[(&str, Option<&str>)] = &[
        ("/v1/threads/x\\..\\..\\graph", None),
        ("/v1/threads/x/..%2f..%2fgraph", None),
        ("/v1/threads/x/..%2F..%2Fgraph", None),
        ("/v1/threads/%2e%2e/state", None),
        ("/v1/threads/.%2E/state", None),
        ("/v1/threads/%2e/state", None),
        ("/v1/threads/x/../../graph", None),
        ("/v1/threads/x/./state", None),
        ("/v1/threads/x/state/../../../graph", None),
        ("/v1/threads/x%5c..%5c..%5cgraph", None),
        ("/v1/threads/x%5C..%5C..%5Cgraph/state", None),
        ("/v1/threads/x%00/state", None),
        ("/v1/threads/x%0d%0aX-Evil:%201/state", None),
        ("/v1/threads/%zz/state", None),
        ("/v1/threads/x%2/state", None),
        ("/v1/threads/%252e%252e/state", None),
        ("/v1/threads/%252e%252e%252fgraph", None),
        ("/v1/threads/%c0%ae%c0%ae/state", None),
        ("/v1/threads//state", None),
        ("/v1/threads/x/state/", None),
        ("/v1//graph", None),
        ("/v1/threads/x/..;/..;/graph", None),
        ("/v1/threads/x/state%23/../../graph", None),
        ("/V1/threads/x", None),
        (
            "/v1/threads/t-%61lice/state",
            Some("/v1/threads/t-alice/state"),
        ),
        (
            "/v1/threads/a%20b/state?x=%2e%2e/../graph",
            Some("/v1/threads/a%20b/state?x=%2e%2e/../graph"),
        ),
        ("/v1/threads/%74hreads", Some("/v1/threads/threads")),
        (
            "/v1/thr%65ads/x/messages/m%2e1",
            Some("/v1/threads/x/messages/m.1"),
        ),
        ("/v1/threads/x;y=1", Some("/v1/threads/x%3By%3D1")),
        (
            "http://evil.example/v1/threads/t1/state",
            Some("/v1/threads/t1/state"),
        ),
    ];
    for (target, expected) in table {
        let before = up.count();
        let r = raw(&server, "GET", target, &[("Authorization", &auth)], b"");
        match expected {
            None => {
                assert!(
                    r.status == 400 || r.status == 404,
                    "{target}: {} {:?}",
                    r.status,
                    r.body
                );
                assert!(
                    r.body["detail"].is_string() && r.body["code"].is_string(),
                    "{target}: {:?}",
                    r.body
                );
                assert_eq!(
                    up.count(),
                    before,
                    "{target} reached the upstream as {}",
                    up.last().path_and_query
                );
            }
            Some(path) => {
                assert_eq!(r.status, 200, "{target}: {:?}", r.body);
                assert_eq!(up.count(), before + 1, "{target}");
                assert_eq!(up.last().path_and_query, *path, "{target}");
            }
        }
    }

    // The authorizer still decides on the decoded route: graph is not the reader's.
    let before = up.count();
    for target in ["/v1/graph", "/v1/%67raph"] {
        let r = raw(&server, "GET", target, &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 403, "{target}: {:?}", r.body);
    }
    assert_eq!(up.count(), before);
}

#[test]
fn forged_identity_in_bodies_never_reaches_the_agent_whatever_the_content_type() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let auth = token("alice", &["user"]);
    let forged = json!({"messages": [], "config": {"thread_id": "t1", "user_id": "mallory", "user": {"user_id": "mallory"}}});
    let forged = forged.to_string();

    for content_type in [
        None,
        Some("text/plain"),
        Some("application/vnd.api+json"),
        Some("application/json; charset=utf-8"),
        Some("APPLICATION/JSON"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        let r = raw(
            &server,
            "POST",
            "/v1/graph/invoke",
            &headers,
            forged.as_bytes(),
        );
        assert_eq!(r.status, 200, "{content_type:?}: {:?}", r.body);
        let seen = up.last();
        let body = String::from_utf8_lossy(&seen.body);
        assert!(!body.contains("mallory"), "{content_type:?}: {body}");
        assert_eq!(
            seen.json()["config"]["user_id"],
            "alice",
            "{content_type:?}"
        );
        assert_eq!(seen.json()["config"]["thread_id"], "t1", "{content_type:?}");
        assert_eq!(
            seen.header("content-type"),
            Some("application/json"),
            "{content_type:?}"
        );
    }

    // Refused with 400, never forwarded: not a JSON object, a JSON array,
    // two Content-Types (either order), a compressed body.
    let before = up.count();
    let refused: &[(&[(&str, &str)], &str)] = &[
        (&[("Content-Type", "text/plain")], "user_id=mallory"),
        (
            &[("Content-Type", "application/json")],
            "[{\"config\": {\"user_id\": \"mallory\"}}]",
        ),
        (
            &[
                ("Content-Type", "application/json"),
                ("Content-Type", "text/plain"),
            ],
            &forged,
        ),
        (
            &[
                ("Content-Type", "text/plain"),
                ("content-type", "application/json"),
            ],
            &forged,
        ),
        (
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            &forged,
        ),
    ];
    for (headers, body) in refused {
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let r = raw(&server, "POST", "/v1/graph/invoke", &all, body.as_bytes());
        assert_eq!(r.status, 400, "{headers:?}: {:?}", r.body);
        assert_eq!(r.body["code"], "bad_request", "{headers:?}");
    }
    assert_eq!(up.count(), before);

    // Duplicate keys inside `config`: only the host's value is left.
    let dup = r#"{"config": {"user_id": "mallory", "user_id": "eve", "thread_id": "t1"}}"#;
    let r = raw(
        &server,
        "POST",
        "/v1/graph/invoke",
        &[("Authorization", &auth)],
        dup.as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let body = String::from_utf8_lossy(&up.last().body).into_owned();
    assert!(!body.contains("mallory") && !body.contains("eve"), "{body}");
    // Two `config` objects: which thread is meant is ambiguous, so refused.
    let before = up.count();
    let dup =
        r#"{"config": {"user_id": "mallory"}, "config": {"user_id": "mallory", "user_id": "eve"}}"#;
    let r = raw(
        &server,
        "POST",
        "/v1/graph/invoke",
        &[("Authorization", &auth)],
        dup.as_bytes(),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(up.count(), before);

    // An empty body has nothing to rewrite and is forwarded empty.
    let r = raw(
        &server,
        "POST",
        "/v1/graph/invoke",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(up.last().body.is_empty());
}

#[test]
fn identity_and_forwarding_headers_are_stripped_in_any_spelling() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let auth = token("alice", &["user"]);
    let hostile = [
        ("X_AgentFlow_User_Id", "mallory"),
        ("x_agentflow_roles", "admin"),
        ("X-AgentFlow-Identity", "e30"),
        ("x-agentflow-user-id", "mallory"),
        ("x_forwarded_for", "6.6.6.6"),
        ("X_Forwarded_Host", "evil.example"),
        ("X-Forwarded-Proto", "evil"),
        ("Forwarded", "for=6.6.6.6;host=evil.example"),
        ("X-Real-IP", "6.6.6.6"),
        ("x_real_ip", "6.6.6.6"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("x_original_url", "/v1/graph"),
        ("Cookie", "session=evil-cookie"),
        ("x_api_key", "sk-evil"),
        ("X-Custom", "kept"),
    ];
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(&hostile);
    let r = raw(&server, "GET", "/v1/threads/t1", &headers, b"");
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen = up.last();
    let names = normalized_names(&seen);
    for (name, value) in &names {
        for bad in ["mallory", "admin", "6.6.6.6", "evil", "DELETE", "/v1/graph"] {
            assert!(!value.contains(bad), "{name}: {value} reached the agent");
        }
        assert!(
            ![
                "forwarded",
                "x-real-ip",
                "cookie",
                "x-api-key",
                "x-http-method-override",
                "x-original-url"
            ]
            .contains(&name.as_str()),
            "{name} reached the agent"
        );
    }
    let count = |n: &str| names.iter().filter(|(name, _)| name == n).count();
    assert_eq!(count("x-agentflow-user-id"), 1);
    assert_eq!(count("x-agentflow-roles"), 1);
    assert_eq!(count("x-forwarded-for"), 1);
    assert_eq!(seen.header("x-agentflow-user-id"), Some("alice"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    let agentflow_headers: Vec<&String> = names
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("x-agentflow-"))
        .collect();
    assert_eq!(
        agentflow_headers.len(),
        3,
        "only the host's identity headers: {agentflow_headers:?}"
    );
    assert!(
        names
            .iter()
            .all(|(n, _)| !n.starts_with("x-forwarded-") || n == "x-forwarded-for"),
        "{names:?}"
    );
    assert_eq!(seen.header("x-custom"), Some("kept"), "other headers pass");
}

#[test]
fn credential_headers_declared_by_plugins_and_cookies_are_not_forwarded() {
    const KEY: &str = "tok-0123456789";
    let up = Upstream::start();
    let plugin = json!({
        "method": "custom",
        "path": plugins().api_key,
        "config": {"keys": [{"sha256": sha256_hex(KEY), "user_id": "svc-1", "roles": ["user"]}], "header": "x-token"},
        "credential_headers": ["X-Token"]
    });
    let server = Server::start(json!({"agent": up.base, "auth": [plugin]}), &[]);
    let r = raw(
        &server,
        "GET",
        "/v1/threads",
        &[
            ("X-Token", KEY),
            ("x_token", "tok-second-copy"),
            ("Cookie", "sid=s3cret"),
            ("X-Custom", "kept"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen = up.last();
    assert_eq!(
        seen.header("x-agentflow-user-id"),
        Some("svc-1"),
        "the plugin read the header"
    );
    for (name, value) in normalized_names(&seen) {
        assert!(
            name != "x-token" && name != "cookie",
            "{name} reached the agent"
        );
        assert!(
            !value.contains("tok-") && !value.contains("s3cret"),
            "{name}: {value} reached the agent"
        );
    }
    assert_eq!(seen.header("x-custom"), Some("kept"));

    // A declared name that is not a header name stops the server, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    let bad = json!({"auth": [{"method": "custom", "path": plugins().api_key, "config": {"keys": []}, "credential_headers": ["x-ok", "x token"]}]});
    std::fs::write(&path, bad.to_string()).unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[],
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("auth[0].credential_headers[1]") && err.contains("not a valid header name"),
        "{err}"
    );
}
