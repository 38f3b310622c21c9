//! The real AgentFlow server, driven directly (no gateway): pins down the
//! behaviour the gateway has to fit — its envelopes, where thread ids appear,
//! how it streams, its store routes, and what its `"auth": "jwt"` accepts.
//! If a new server version changes any of this, these tests say so first.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;
use crate::support_agentflow::*;

/// A 32+ byte HMAC secret for the server's own JWT auth.
const AGENT_SECRET: &str = "agentflow-server-e2e-secret-0123456789abcdef";

fn auth_header(token: &str) -> [(&'static str, String); 1] {
    [("authorization", bearer(token))]
}

fn headers<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn invoke(server: &AgentflowServer, auth: &[(&'static str, String)], body: Value) -> Reply {
    post(
        &format!("{}/v1/graph/invoke", server.url()),
        &headers(auth),
        body,
    )
}

/// The server's error envelope: `{"error": {code, message, details}, "metadata": {request_id, timestamp, message}}`.
fn assert_error_envelope(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
    assert!(r.body["error"]["details"].is_array(), "{}", r.body);
    assert!(
        r.body["metadata"]["request_id"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
    assert!(r.body["metadata"]["timestamp"].is_string(), "{}", r.body);
    assert_eq!(
        r.header("x-request-id"),
        r.body["metadata"]["request_id"].as_str()
    );
}

#[test]
fn invoke_runs_as_anonymous_with_auth_off_and_ignores_identity_in_the_body() {
    let server = AgentflowServer::start(None);
    let body = json!({
        "messages": [user_message("hello")],
        "config": {"thread_id": "t-invoke", "user_id": "mallory", "user": {"user_id": "mallory"}},
    });
    let r = invoke(&server, &[], body);
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.logs());
    assert!(
        r.body["metadata"]["request_id"].is_string(),
        "success envelope: {}",
        r.body
    );
    let seen = echoed(&r.body["data"]["messages"]);
    assert_eq!(
        seen["user_id"], "anonymous",
        "the server discards config.user_id: {seen}"
    );
    assert_eq!(seen["thread_id"], "t-invoke");
    assert_eq!(seen["last_user_message"], "hello");
    assert_eq!(r.body["data"]["meta"]["thread_id"], "t-invoke");
    assert_eq!(r.body["data"]["meta"]["is_new_thread"], true);
}

#[test]
fn invoke_without_thread_id_gets_a_server_made_one_in_meta() {
    let server = AgentflowServer::start(None);
    let r = invoke(
        &server,
        &[],
        json!({"messages": [user_message("who am i")]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let made = r.body["data"]["meta"]["thread_id"]
        .as_str()
        .expect("data.meta.thread_id")
        .to_owned();
    assert!(!made.is_empty());
    assert_eq!(
        echoed(&r.body["data"]["messages"])["thread_id"],
        made.as_str(),
        "the graph ran on the id in meta"
    );
    let again = invoke(&server, &[], json!({"messages": [user_message("again")]}));
    assert_ne!(
        again.body["data"]["meta"]["thread_id"],
        made.as_str(),
        "each new run gets its own thread"
    );
    let listed = get(&format!("{}/v1/threads", server.url()), &[]);
    let ids: Vec<&str> = listed.body["data"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["thread_id"].as_str())
        .collect();
    assert!(ids.contains(&made.as_str()), "{ids:?}");
}

#[test]
fn stream_is_newline_delimited_json_arriving_incrementally() {
    let server = AgentflowServer::start(None);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    // No thread id: the server makes one and names it on every line.
    let resp = client
        .post(format!("{}/v1/graph/stream", server.url()))
        .json(&json!({"messages": [user_message("stream me")], "config": {"delay_ms": 800}}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "labelled SSE: {content_type}"
    );
    let mut lines: Vec<(Duration, Value)> = Vec::new();
    for line in BufReader::new(resp).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            continue;
        }
        assert!(
            !line.starts_with("data:"),
            "not SSE framing, plain JSON lines: {line}"
        );
        lines.push((
            started.elapsed(),
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")),
        ));
    }
    assert!(lines.len() >= 3, "several events: {lines:?}");
    let thread = lines[0].1["thread_id"]
        .as_str()
        .expect("thread_id on the first event")
        .to_owned();
    for (_, event) in &lines {
        assert_eq!(event["thread_id"], thread.as_str(), "{event}");
        assert_eq!(event["metadata"]["thread_id"], thread.as_str(), "{event}");
        assert!(event["event"].is_string(), "{event}");
    }
    assert_eq!(lines[0].1["metadata"]["is_new_thread"], true);
    let echo_at = lines
        .iter()
        .position(|(_, e)| e["message"]["role"] == "assistant")
        .expect("the echo event");
    let seen: Value = serde_json::from_str(&message_text(&lines[echo_at].1["message"])).unwrap();
    assert_eq!(seen["user_id"], "anonymous");
    assert_eq!(seen["thread_id"], thread.as_str());
    assert_eq!(seen["last_user_message"], "stream me");
    // The echo is sent before the 800 ms `done` node runs, so it must arrive
    // well before the last event: the response is not buffered.
    let (echo_time, last_time) = (lines[echo_at].0, lines.last().unwrap().0);
    assert!(
        last_time - echo_time >= Duration::from_millis(500),
        "events arrived together: echo at {echo_time:?}, last at {last_time:?}"
    );
}

#[test]
fn thread_routes_list_get_state_messages_and_delete() {
    let server = AgentflowServer::start(None);
    let base = server.url();
    let r = invoke(
        &server,
        &[],
        json!({"messages": [user_message("my PIN is 4321")], "config": {"thread_id": "t-threads"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let list = get(&format!("{base}/v1/threads"), &[]);
    assert_eq!(list.status, 200);
    let threads = list.body["data"]["threads"]
        .as_array()
        .expect("data.threads");
    assert!(
        threads.iter().any(|t| t["thread_id"] == "t-threads"),
        "{threads:?}"
    );

    let one = get(&format!("{base}/v1/threads/t-threads"), &[]);
    assert_eq!(
        one.body["data"]["thread_data"]["thread"]["thread_id"], "t-threads",
        "{}",
        one.body
    );

    let state = get(&format!("{base}/v1/threads/t-threads/state"), &[]);
    let context = &state.body["data"]["state"]["context"];
    assert!(
        context
            .as_array()
            .is_some_and(|c| c.iter().any(|m| message_text(m) == "my PIN is 4321")),
        "{}",
        state.body
    );

    let messages = get(&format!("{base}/v1/threads/t-threads/messages"), &[]);
    let list = &messages.body["data"]["messages"];
    assert_eq!(echoed(list)["thread_id"], "t-threads");
    let first_id = list[0]["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned();
    let single = get(
        &format!("{base}/v1/threads/t-threads/messages/{first_id}"),
        &[],
    );
    assert_eq!(single.status, 200, "{}", single.body);

    // An unknown thread is not a 404 on this server: 200 with `thread: null`.
    let unknown = get(&format!("{base}/v1/threads/no-such-thread"), &[]);
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.body["data"]["thread_data"]["thread"], Value::Null);

    // DELETE takes a JSON body (`{"config": ...}`, may be empty); without one it is 422.
    let bodiless = send("DELETE", &format!("{base}/v1/threads/t-threads"), &[], None);
    assert_error_envelope(&bodiless, 422, "VALIDATION_ERROR");
    let deleted = send(
        "DELETE",
        &format!("{base}/v1/threads/t-threads"),
        &[],
        Some(json!({})),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.body["data"]["success"], true);
    let gone = get(&format!("{base}/v1/threads"), &[]);
    assert!(
        !gone.body["data"]["threads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["thread_id"] == "t-threads")
    );
}

#[test]
fn store_routes_create_get_search_list_update_delete_forget() {
    let server = AgentflowServer::start(None);
    let base = server.url();
    let created = post(
        &format!("{base}/v1/store/memories"),
        &[],
        json!({"content": "likes green tea"}),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.body["data"]["memory_id"]
        .as_str()
        .expect("data.memory_id")
        .to_owned();

    // Get one memory is POST (GET is 405 here).
    let one = post(&format!("{base}/v1/store/memories/{id}"), &[], json!({}));
    assert_eq!(
        one.body["data"]["memory"]["id"],
        id.as_str(),
        "{}",
        one.body
    );
    assert_eq!(one.body["data"]["memory"]["content"], "likes green tea");
    assert_eq!(one.body["data"]["memory"]["user_id"], "anonymous");
    assert_eq!(
        get(&format!("{base}/v1/store/memories/{id}"), &[]).status,
        405
    );

    let search = post(
        &format!("{base}/v1/store/search"),
        &[],
        json!({"query": "green tea"}),
    );
    assert!(
        search.body["data"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id.as_str()),
        "{}",
        search.body
    );
    let list = post(&format!("{base}/v1/store/memories/list"), &[], json!({}));
    assert!(
        list.body["data"]["memories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id.as_str()),
        "{}",
        list.body
    );

    let updated = send(
        "PUT",
        &format!("{base}/v1/store/memories/{id}"),
        &[],
        Some(json!({"content": "likes coffee"})),
    );
    assert_eq!(updated.body["data"]["success"], true, "{}", updated.body);
    let one = post(&format!("{base}/v1/store/memories/{id}"), &[], json!({}));
    assert_eq!(one.body["data"]["memory"]["content"], "likes coffee");

    let deleted = send(
        "DELETE",
        &format!("{base}/v1/store/memories/{id}"),
        &[],
        None,
    );
    assert_eq!(deleted.body["data"]["success"], true, "{}", deleted.body);
    let one = post(&format!("{base}/v1/store/memories/{id}"), &[], json!({}));
    assert_eq!(
        one.status, 200,
        "an unknown memory is 200 with null, not 404"
    );
    assert_eq!(one.body["data"]["memory"], Value::Null);

    post(
        &format!("{base}/v1/store/memories"),
        &[],
        json!({"content": "one"}),
    );
    post(
        &format!("{base}/v1/store/memories"),
        &[],
        json!({"content": "two"}),
    );
    let forgot = post(&format!("{base}/v1/store/memories/forget"), &[], json!({}));
    assert_eq!(
        forgot.body["data"]["data"], 2,
        "forget removes every memory the store matches: {}",
        forgot.body
    );
}

#[test]
fn jwt_mode_attributes_graph_and_store_requests_to_the_token_user() {
    let server = AgentflowServer::start(Some(AGENT_SECRET));
    let alice = auth_header(&hs256(
        AGENT_SECRET,
        json!({"user_id": "alice", "roles": ["user"], "exp": now() + 300}),
    ));
    let bob = auth_header(&hs256(
        AGENT_SECRET,
        json!({"user_id": "bob", "exp": now() + 300}),
    ));

    let body = json!({"messages": [user_message("hi")], "config": {"user_id": "mallory", "user": {"user_id": "mallory"}}});
    let r = invoke(&server, &alice, body.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = echoed(&r.body["data"]["messages"]);
    assert_eq!(seen["user_id"], "alice", "{seen}");
    assert_eq!(
        seen["claims"]["roles"],
        json!(["user"]),
        "the token's claims reach the graph as config.user"
    );
    let r = invoke(&server, &bob, body);
    assert_eq!(echoed(&r.body["data"]["messages"])["user_id"], "bob");

    let created = post(
        &format!("{}/v1/store/memories", server.url()),
        &headers(&alice),
        json!({"content": "alice's note"}),
    );
    let id = created.body["data"]["memory_id"]
        .as_str()
        .expect("memory_id")
        .to_owned();
    let one = post(
        &format!("{}/v1/store/memories/{id}", server.url()),
        &headers(&alice),
        json!({}),
    );
    assert_eq!(
        one.body["data"]["memory"]["user_id"], "alice",
        "{}",
        one.body
    );

    // `?token=` is read for WebSockets only; on HTTP it is no credential.
    let token = &alice[0].1["Bearer ".len()..];
    let by_query = get(&format!("{}/v1/threads?token={token}", server.url()), &[]);
    assert_error_envelope(&by_query, 401, "REVOKED_TOKEN");
}

#[test]
fn jwt_mode_refuses_a_token_without_user_id() {
    let server = AgentflowServer::start(Some(AGENT_SECRET));
    let token = auth_header(&hs256(
        AGENT_SECRET,
        json!({"sub": "alice", "exp": now() + 300}),
    ));
    let r = invoke(&server, &token, json!({"messages": [user_message("hi")]}));
    assert_error_envelope(&r, 401, "INVALID_TOKEN");
    assert_eq!(r.body["error"]["message"], "Invalid token, user_id missing");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"auth_required\"")
    );
}

#[test]
fn jwt_mode_refuses_an_unexpected_audience_and_missing_or_expired_tokens() {
    let server = AgentflowServer::start(Some(AGENT_SECRET));
    let aud = auth_header(&hs256(
        AGENT_SECRET,
        json!({"user_id": "alice", "aud": "someone-else", "exp": now() + 300}),
    ));
    let r = invoke(&server, &aud, json!({"messages": [user_message("hi")]}));
    assert_error_envelope(&r, 401, "INVALID_TOKEN");

    let r = invoke(&server, &[], json!({"messages": [user_message("hi")]}));
    assert_error_envelope(&r, 401, "REVOKED_TOKEN");

    let expired = auth_header(&hs256(
        AGENT_SECRET,
        json!({"user_id": "alice", "exp": now() - 120}),
    ));
    let r = invoke(&server, &expired, json!({"messages": [user_message("hi")]}));
    assert_error_envelope(&r, 401, "EXPIRED_TOKEN");

    let other_key = auth_header(&hs256(
        "another-secret-0123456789abcdef0123456789",
        json!({"user_id": "alice", "exp": now() + 300}),
    ));
    let r = invoke(
        &server,
        &other_key,
        json!({"messages": [user_message("hi")]}),
    );
    assert_error_envelope(&r, 401, "INVALID_TOKEN");
}

#[test]
fn jwt_mode_checks_audience_and_issuer_when_configured() {
    let server = AgentflowServer::start_with_env(
        Some(AGENT_SECRET),
        &[
            ("JWT_AUDIENCE", "agent-api"),
            ("JWT_ISSUER", "agentflow-gateway"),
        ],
    );
    let good = auth_header(&hs256(
        AGENT_SECRET,
        json!({"user_id": "carol", "aud": "agent-api", "iss": "agentflow-gateway", "exp": now() + 300}),
    ));
    let r = invoke(&server, &good, json!({"messages": [user_message("hi")]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echoed(&r.body["data"]["messages"])["user_id"], "carol");

    let no_iss = auth_header(&hs256(
        AGENT_SECRET,
        json!({"user_id": "carol", "aud": "agent-api", "exp": now() + 300}),
    ));
    assert_error_envelope(
        &invoke(&server, &no_iss, json!({"messages": [user_message("hi")]})),
        401,
        "INVALID_TOKEN",
    );
    let wrong_aud = auth_header(&hs256(
        AGENT_SECRET,
        json!({"user_id": "carol", "aud": "other", "iss": "agentflow-gateway", "exp": now() + 300}),
    ));
    assert_error_envelope(
        &invoke(
            &server,
            &wrong_aud,
            json!({"messages": [user_message("hi")]}),
        ),
        401,
        "INVALID_TOKEN",
    );
}
