//! A server that stays up under connection abuse (idle sockets, slowloris,
//! trickled bodies) and answers every refusal of its own routes with the
//! JSON shape and the right status, never echoing what was sent.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

fn addr(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// `/ping` on a fresh connection: (status, how long it took).
fn ping(server: &Server) -> (u16, Duration) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let status = client
        .get(server.url("/ping"))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    (status, started.elapsed())
}

/// Whether the server has closed `s` (EOF or reset), without blocking.
fn is_closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let closed = loop {
        match (&*s).read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// Raises this test process's soft open-files limit (it holds ~1000 sockets).
fn raise_own_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

#[test]
fn idle_sockets_and_a_slowloris_cannot_take_the_server_offline() {
    const CAP: usize = 64;
    let up = Upstream::start();
    // A server whose `ulimit -n` is 256: before the fix ~250 idle sockets
    // used every descriptor and nobody else got in.
    let server = Server::start_with_fd_limit(
        json!({"agent": up.base, "auth": "jwt"}),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("AGENTFLOW_MAX_CONNECTIONS", "64"),
            ("AGENTFLOW_HEADER_TIMEOUT_MS", "30000"),
        ],
        256,
    );
    let target = addr(&server);
    let wanted = 1000.min(raise_own_fd_limit().saturating_sub(300) as usize);
    assert!(
        wanted > 4 * CAP,
        "the test needs at least {} descriptors",
        4 * CAP + 300
    );

    // A slowloris: one header line every 500 ms, never the blank line.
    let mut slow = TcpStream::connect(target).unwrap();
    slow.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_slow = stop.clone();
    let slowloris = std::thread::spawn(move || {
        while !stop_slow.load(std::sync::atomic::Ordering::Relaxed) {
            if slow.write_all(b"X-Slow: 1\r\n").is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    });

    let mut idle = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..wanted {
        match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
            Ok(s) => idle.push(s),
            Err(e) => {
                refused.push(e.to_string());
                if refused.len() > 5 {
                    break;
                }
            }
        }
    }
    eprintln!("opened {} idle sockets; refused: {refused:?}", idle.len());
    for round in 0..3 {
        let (status, took) = ping(&server);
        assert_eq!(
            status,
            200,
            "round {round}: /ping must answer with {} idle sockets open",
            idle.len()
        );
        assert!(
            took < Duration::from_secs(3),
            "round {round}: /ping took {took:?}"
        );
    }
    assert_eq!(idle.len(), wanted, "every connection attempt was accepted");

    // The cap holds: all but the newest CAP idle sockets were closed by the server.
    let settled = wait_for(Duration::from_secs(5), || {
        idle.iter().filter(|s| !is_closed(s)).count() <= CAP
    });
    let open = idle.iter().filter(|s| !is_closed(s)).count();
    assert!(
        settled.is_some(),
        "{open} of {wanted} idle sockets still open; the cap is {CAP}"
    );
    wait_for(Duration::from_secs(5), || slowloris.is_finished());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        slowloris.join().unwrap(),
        "the slowloris connection was closed to make room"
    );
}

/// When the server closes `s` while `feed` keeps writing to it; `None`
/// if it is still open after `limit`.
fn closed_after(
    mut s: TcpStream,
    limit: Duration,
    mut feed: impl FnMut(&mut TcpStream),
) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        feed(&mut s);
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn slow_headers_and_idle_connections_are_cut_off_but_streams_are_not() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": null}),
        &[("AGENTFLOW_HEADER_TIMEOUT_MS", "400")],
    );
    let target = addr(&server);

    let slowloris = std::thread::spawn(move || {
        let mut s = TcpStream::connect(target).unwrap();
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut last = Instant::now();
        closed_after(s, Duration::from_secs(8), |s| {
            if last.elapsed() >= Duration::from_millis(200) {
                let _ = s.write_all(b"X-Slow: 1\r\n");
                last = Instant::now();
            }
        })
    });
    let silent = std::thread::spawn(move || {
        closed_after(
            TcpStream::connect(target).unwrap(),
            Duration::from_secs(8),
            |_| {},
        )
    });
    let kept_alive = std::thread::spawn(move || {
        let mut s = TcpStream::connect(target).unwrap();
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        closed_after(s, Duration::from_secs(8), |_| {})
    });

    // A response that streams for longer than the timeout (3 events 300 ms
    // apart) is not cut.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut resp = client
        .post(server.url("/v1/graph/stream"))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    resp.read_to_string(&mut text).unwrap();
    assert_eq!(
        text.matches("data:").count(),
        3,
        "the whole stream arrived: {text:?}"
    );

    for (name, handle) in [
        ("slowloris", slowloris),
        ("silent", silent),
        ("idle keep-alive", kept_alive),
    ] {
        let closed = handle
            .join()
            .unwrap()
            .unwrap_or_else(|| panic!("the {name} connection was never closed"));
        assert!(
            closed >= Duration::from_millis(300),
            "{name} closed too early: {closed:?}"
        );
        assert!(
            closed < Duration::from_secs(5),
            "{name} closed late: {closed:?}"
        );
    }
    assert_eq!(ping(&server).0, 200);
}

#[test]
fn a_trickled_body_gets_408_json() {
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt"}),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("AGENTFLOW_BODY_TIMEOUT_MS", "1000"),
        ],
    );
    let mut s = TcpStream::connect(addr(&server)).unwrap();
    s.write_all(b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(8) && !complete(&got) {
        let _ = s.write_all(b" ");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => std::thread::sleep(Duration::from_millis(150)),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "after {:?}: {text:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        started.elapsed()
    );
    let body: Value =
        serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap();
    assert_eq!(body["code"], "request_timeout");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

/// Whether `raw` holds a whole response with a Content-Length body.
fn complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
    });
    length.is_some_and(|n| body.len() >= n)
}

/// A request with a raw body and exactly the headers given.
fn raw(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (Reply, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req.send().expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (
        Reply {
            status,
            headers,
            body,
        },
        text,
    )
}

#[test]
fn every_refusal_on_account_routes_is_json_with_the_right_status_and_no_echo() {
    const MARK: &str = "hunter2-7c1f";
    const NUMBER: &str = "98765432123";
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": ["jwt", "api_key"]}),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("AGENTFLOW_SUPERUSER", "admin"),
            ("AGENTFLOW_SUPERUSER_PASSWORD", "admin-password-1"),
        ],
    );
    let login = post(
        &server.url("/v1/login"),
        &[],
        json!({"username": "admin", "password": "admin-password-1"}),
    );
    assert_eq!(login.status, 200, "{:?}", login.body);
    let admin = bearer(login.body["access_token"].as_str().unwrap());
    let me = get(
        &server.url("/v1/users/whoami"),
        &[("authorization", &admin)],
    )
    .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let var = post(
        &server.url("/v1/variables"),
        &[("authorization", &admin)],
        json!({"name": "v1", "value": "x"}),
    );
    assert_eq!(var.status, 201, "{:?}", var.body);
    let var_id = var.body["id"].as_str().unwrap().to_owned();

    let json_ct = ("content-type", "application/json");
    let text_ct = ("content-type", "text/plain");
    let form_ct = ("content-type", "application/x-www-form-urlencoded");
    let auth = ("authorization", admin.as_str());
    let b = |s: String| Some(s.into_bytes());
    let user_url = format!("/v1/users/{me}");
    let var_url = format!("/v1/variables/{var_id}");
    // (method, path, headers, body, expected status)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<Vec<u8>>,
        u16,
    );
    let cases: Vec<Case> = vec![
        // login, refresh, logout: JSON or form
        (
            "POST",
            "/v1/login",
            vec![],
            b(format!(r#"{{"username": "admin", "password": "{MARK}"}}"#)),
            415,
        ),
        (
            "POST",
            "/v1/login",
            vec![text_ct],
            b(format!(r#"{{"username": "admin", "password": "{MARK}"}}"#)),
            415,
        ),
        (
            "POST",
            "/v1/login",
            vec![json_ct, text_ct],
            b(format!(r#"{{"username": "admin", "password": "{MARK}"}}"#)),
            400,
        ),
        (
            "POST",
            "/v1/login",
            vec![json_ct],
            b(format!(r#"{{"username": "admin", "password": {MARK}}}"#)),
            400,
        ),
        (
            "POST",
            "/v1/login",
            vec![json_ct],
            b(format!(r#"{{"username": "admin", "password": {NUMBER}}}"#)),
            422,
        ),
        ("GET", "/v1/login", vec![], None, 405),
        (
            "POST",
            "/v1/refresh",
            vec![text_ct],
            b(MARK.to_string()),
            415,
        ),
        (
            "POST",
            "/v1/refresh",
            vec![json_ct],
            b(format!(r#"{{"refresh_token": {NUMBER}}}"#)),
            422,
        ),
        (
            "POST",
            "/v1/logout",
            vec![json_ct],
            b(format!(r#"{{"refresh_token": "{MARK}""#)),
            400,
        ),
        // users
        (
            "POST",
            "/v1/users",
            vec![auth],
            b(format!(r#"{{"username": "u1", "password": "{MARK}"}}"#)),
            415,
        ),
        (
            "POST",
            "/v1/users",
            vec![auth, json_ct],
            b(format!(
                r#"{{"username": "u1", "password": "pw-12345678", "is_active": "{MARK}"}}"#
            )),
            422,
        ),
        (
            "POST",
            "/v1/users",
            vec![auth, json_ct],
            b(format!(
                r#"{{"username": "u1", "password": "pw-12345678", "{MARK}": 1}}"#
            )),
            422,
        ),
        (
            "POST",
            "/v1/users",
            vec![auth, json_ct],
            b(format!(r#"{{"username": "u1", "password": {MARK}"#)),
            400,
        ),
        ("PUT", "/v1/users", vec![auth, json_ct], b("{}".into()), 405),
        ("GET", "/v1/users?limit=hunter2-7c1f", vec![auth], None, 400),
        (
            "PATCH",
            &user_url,
            vec![auth, json_ct],
            b(format!(r#"{{"is_superuser": "{MARK}"}}"#)),
            422,
        ),
        (
            "PATCH",
            "/v1/users/%FF%FE",
            vec![auth, json_ct],
            b("{}".into()),
            400,
        ),
        ("POST", &user_url, vec![auth, json_ct], b("{}".into()), 405),
        // api keys
        (
            "POST",
            "/v1/api-keys",
            vec![auth, json_ct],
            b(format!(r#"{{"name": {NUMBER}}}"#)),
            422,
        ),
        (
            "POST",
            "/v1/api-keys",
            vec![auth, text_ct],
            b(MARK.to_string()),
            415,
        ),
        ("DELETE", "/v1/api-keys", vec![auth], None, 405),
        // variables
        (
            "POST",
            "/v1/variables",
            vec![auth, json_ct],
            b(format!(
                r#"{{"name": "n", "value": "v", "type": "{MARK}"}}"#
            )),
            422,
        ),
        (
            "POST",
            "/v1/variables",
            vec![auth, json_ct],
            b(format!(r#"{{"name": "n", "value": {NUMBER}}}"#)),
            422,
        ),
        (
            "PATCH",
            &var_url,
            vec![auth, text_ct],
            b(format!(r#"{{"value": "{MARK}"}}"#)),
            415,
        ),
        (
            "PATCH",
            &var_url,
            vec![auth, json_ct],
            b(format!(r#"{{"value": ["{MARK}"]}}"#)),
            422,
        ),
        ("PUT", &var_url, vec![auth, json_ct], b("{}".into()), 405),
    ];
    for (method, path, headers, body, status) in cases {
        let (reply, text) = raw(method, &server.url(path), &headers, body);
        let what = format!("{method} {path} {headers:?}");
        assert_eq!(reply.status, status, "{what}: {text:.300}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{what}: {text:.300}"
        );
        assert!(
            !reply.detail().is_empty() && reply.body["code"].is_string(),
            "{what}: {text:.300}"
        );
        assert!(
            !text.contains(MARK) && !text.contains(NUMBER),
            "{what} echoed the submitted value: {text}"
        );
        if status == 405 {
            assert!(
                reply.header("allow").is_some(),
                "{what}: 405 names the allowed methods"
            );
        }
    }
    // Oversized bodies: 413 from the declared length, before any of it is read.
    for (path, headers) in [
        ("/v1/login", vec![json_ct]),
        ("/v1/login", vec![form_ct]),
        ("/v1/refresh", vec![json_ct]),
        ("/v1/users", vec![auth, json_ct]),
        ("/v1/variables", vec![auth, json_ct]),
    ] {
        let (status, body) = declared_oversize(&server, path, &headers);
        assert_eq!(status, 413, "{path} {headers:?}: {body}");
        assert_eq!(body["code"], "payload_too_large", "{path}");
    }
    // Field names (ours) are named, values are not.
    let (reply, _) = raw(
        "POST",
        &server.url("/v1/users"),
        &[auth, json_ct],
        b(r#"{"username": "u1", "password": "pw-12345678", "is_active": "yes"}"#.into()),
    );
    assert!(
        reply.detail().contains("is_active") && reply.detail().contains("boolean"),
        "{:?}",
        reply.body
    );
    assert_eq!(up.count(), 0, "no refusal reached the agent");
}

/// POSTs headers declaring a 3 MiB body and sends none of it: (status, JSON body).
fn declared_oversize(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr(server)).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
        3 * 1024 * 1024
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    s.write_all(format!("{head}\r\n").as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(10) && !complete(&got) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::String(text));
    (status, body)
}
