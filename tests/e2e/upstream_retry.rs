//! An agent that drops a connection under a request (uvicorn resets its
//! kept-alive connection after its own 500s): idempotent requests the
//! gateway can replay are sent once more; POSTs and streamed bodies never.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use crate::support::*;

/// A keep-alive agent on loopback that reads each request and then, while
/// `drops` is above zero, resets the connection instead of answering.
struct FlakyAgent {
    base: String,
    /// Requests read (dropped or answered), with their request lines.
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    drops: Arc<AtomicUsize>,
}

impl FlakyAgent {
    fn start() -> FlakyAgent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let drops = Arc::new(AtomicUsize::new(0));
        let (s, d) = (seen.clone(), drops.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, d) = (s.clone(), d.clone());
                std::thread::spawn(move || serve(conn, &s, &d));
            }
        });
        FlakyAgent { base, seen, drops }
    }

    fn drop_next(&self, n: usize) {
        self.drops.store(n, Ordering::SeqCst);
        self.seen.lock().unwrap().clear();
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, seen: &std::sync::Mutex<Vec<String>>, drops: &AtomicUsize) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        }
        if chunked {
            // A streamed body: chunks until the empty one.
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
        }
        seen.lock().unwrap().push(line.trim().to_owned());
        if drops
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // No answer, the connection is gone (a FIN here; the unit
            // tests in host/src/proxy/retry.rs cover a reset too).
            let _ = conn.shutdown(std::net::Shutdown::Both);
            return;
        }
        let answer = json!({"ok": true, "line": line.trim()}).to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if conn
            .write_all(head.as_bytes())
            .and_then(|_| conn.write_all(answer.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn idempotent_requests_survive_a_dropped_connection_once() {
    let agent = FlakyAgent::start();
    let server = Server::start(json!({"agent": agent.base, "auth": null}), &[]);

    // A GET and a bodiless DELETE: sent again on a fresh connection.
    for (method, path) in [("GET", "/v1/threads"), ("DELETE", "/v1/threads/t1")] {
        agent.drop_next(1);
        let reply = send(method, &server.url(path), &[], None);
        assert_eq!(reply.status, 200, "{method} {path}: {:?}", reply.body);
        assert_eq!(reply.body["ok"], true);
        assert_eq!(agent.seen().len(), 2, "{method} {path}: {:?}", agent.seen());
    }

    // Only once: a second drop is the client's 502.
    agent.drop_next(2);
    let reply = get(&server.url("/v1/threads"), &[]);
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert_eq!(reply.body["code"], "upstream_unavailable");
    assert_eq!(agent.seen().len(), 2, "{:?}", agent.seen());
}

#[test]
fn posts_and_streamed_bodies_are_never_sent_twice() {
    let agent = FlakyAgent::start();
    let server = Server::start(json!({"agent": agent.base, "auth": null}), &[]);

    // A graph run (buffered body, but POST: it may have started).
    agent.drop_next(1);
    let reply = post(
        &server.url("/v1/graph/invoke"),
        &[],
        json!({"messages": []}),
    );
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert_eq!(reply.body["code"], "upstream_unavailable");
    assert_eq!(agent.seen(), vec!["POST /v1/graph/invoke HTTP/1.1"]);

    // A PUT whose body streams through: already consumed, cannot be replayed.
    agent.drop_next(1);
    let reply = send(
        "PUT",
        &server.url("/v1/threads/t1/state"),
        &[],
        Some(json!({"state": {}})),
    );
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert_eq!(agent.seen(), vec!["PUT /v1/threads/t1/state HTTP/1.1"]);

    // The agent is fine afterwards: nothing is left dropped.
    let reply = get(&server.url("/v1/threads"), &[]);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}
