//! Health and shutdown (issue 14, items 6 and 7): `/ready` follows the
//! agent, SIGTERM lets a slow request in flight finish while new
//! connections are refused and the process exits 0, and a second signal
//! exits at once.

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::json;

use crate::support::*;

/// An agent stand-in whose every answer takes `delay`.
struct SlowAgent {
    base: String,
    _runtime: tokio::runtime::Runtime,
}

impl SlowAgent {
    fn start(delay: Duration) -> SlowAgent {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = Router::new().fallback(move || async move {
            tokio::time::sleep(delay).await;
            axum::Json(json!({"slow": "done"}))
        });
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        SlowAgent {
            base: format!("http://{addr}"),
            _runtime: runtime,
        }
    }
}

fn token() -> String {
    bearer(&hs256(
        SECRET,
        json!({"sub": "alice", "roles": ["user"], "exp": now() + 600}),
    ))
}

fn signal(server: &Server, sig: libc::c_int) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(server.pid() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill failed");
}

fn host_port(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

#[test]
fn ready_answers_503_with_the_reason_until_the_agent_answers() {
    // An agent address nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(
        json!({"agent": format!("http://127.0.0.1:{port}"), "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_eq!(
        get(&server.url("/ping"), &[]).status,
        200,
        "liveness stays up"
    );
    let r = get(&server.url("/ready"), &[]);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["status"], "not ready");
    assert!(r.detail().contains("agent"), "{:?}", r.body);

    let upstream = Upstream::start();
    let server = Server::start(
        json!({"agent": upstream.base, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let r = get(&server.url("/ready"), &[]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "ready");
    assert_eq!(upstream.last().path_and_query, "/ping");
    // Cached for a second: a burst of probes reaches the agent once.
    let before = upstream.count();
    for _ in 0..5 {
        assert_eq!(get(&server.url("/ready"), &[]).status, 200);
    }
    assert!(upstream.count() - before <= 1, "probes were not cached");
}

#[test]
fn sigterm_lets_a_slow_request_finish_refuses_new_connections_and_exits_0() {
    let agent = SlowAgent::start(Duration::from_millis(1500));
    let mut server = Server::start(
        json!({"agent": agent.base, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let url = server.url("/v1/threads");
    let auth = token();
    let in_flight = thread::spawn(move || get(&url, &[("authorization", auth.as_str())]));
    thread::sleep(Duration::from_millis(400));
    signal(&server, libc::SIGTERM);

    let addr = host_port(&server);
    let refused = wait_for(Duration::from_secs(2), || {
        TcpStream::connect(&addr).is_err()
    });
    assert!(
        refused.is_some(),
        "new connections still accepted after SIGTERM"
    );

    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["slow"], "done");
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.logs()
    );
    assert!(server.logs().contains("shutting down"), "{}", server.logs());
}

#[test]
fn a_second_signal_exits_at_once() {
    let agent = SlowAgent::start(Duration::from_secs(20));
    let mut server = Server::start(
        json!({"agent": agent.base, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let url = server.url("/v1/threads");
    let auth = token();
    let _in_flight = thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let _ = client.get(&url).header("authorization", auth).send();
    });
    thread::sleep(Duration::from_millis(400));
    signal(&server, libc::SIGTERM);
    assert!(server.logged("shutting down"), "{}", server.logs());
    let started = Instant::now();
    signal(&server, libc::SIGINT);
    let code = server.wait_exit(Duration::from_secs(3));
    assert!(
        code.is_some_and(|c| c != 0),
        "still running or exited 0 after a second signal: {code:?}\n{}",
        server.logs()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}
