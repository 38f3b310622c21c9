//! Tenancy (issue 11) against the REAL AgentFlow server with its own auth
//! off (every caller is `anonymous` there, its in-memory checkpointer and
//! store scope nothing): only the gateway keeps alice, bob and an admin
//! apart. Bob never sees or changes alice's threads or memories (404 as if
//! they did not exist, 403 for `forget`), and the agent's own state shows
//! that nothing he sent reached it.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;
use crate::support_agentflow::*;
use crate::websocket::{Socket, connect, runtime, ws_url};

/// The gateway in front of `agent` with built-in jwt and `tenancy`.
pub fn tenant_gateway(agent: &str, tenancy: Value) -> Server {
    Server::start(
        json!({"agent": agent, "auth": "jwt", "tenancy": tenancy}),
        &[("JWT_SECRET_KEY", SECRET)],
    )
}

/// `Authorization` for `user` with `roles` and extra claims.
pub fn auth_for(user: &str, roles: &[&str], extra: Value) -> String {
    let mut claims = json!({"sub": user, "roles": roles, "exp": now() + 3600});
    if let Value::Object(extra) = extra {
        claims.as_object_mut().unwrap().extend(extra);
    }
    bearer(&hs256(SECRET, claims))
}

/// A request as `auth` on the gateway.
pub fn call(gw: &Server, auth: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
    send(method, &gw.url(path), &[("authorization", auth)], body)
}

/// An invoke on `thread` with `text`.
pub fn invoke_on(gw: &Server, auth: &str, thread: &str, text: &str) -> Reply {
    call(
        gw,
        auth,
        "POST",
        "/v1/graph/invoke",
        Some(json!({"messages": [user_message(text)], "config": {"thread_id": thread}})),
    )
}

/// The gateway's own "not found": nothing was forwarded.
pub fn assert_hidden(r: &Reply, what: &str) {
    assert_eq!(r.status, 404, "{what}: {}", r.body);
    assert_eq!(
        r.body["code"], "not_found",
        "{what}: the gateway answered: {}",
        r.body
    );
    assert!(
        r.body["error"]["message"].is_string(),
        "{what}: envelope: {}",
        r.body
    );
}

/// Not refused by the gateway (the agent answered).
pub fn assert_reached(r: &Reply, what: &str) {
    assert!(
        r.status < 400 && r.body.get("code").is_none(),
        "{what}: {} {}",
        r.status,
        r.body
    );
}

/// Thread ids of a `GET /v1/threads` answer.
pub fn listed_threads(r: &Reply) -> Vec<String> {
    r.body["data"]["threads"]
        .as_array()
        .unwrap_or_else(|| panic!("data.threads: {}", r.body))
        .iter()
        .map(|t| t["thread_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Memory ids of a list (`memories`) or search (`results`) answer.
pub fn listed_memories(r: &Reply, field: &str) -> Vec<String> {
    r.body["data"][field]
        .as_array()
        .unwrap_or_else(|| panic!("data.{field}: {}", r.body))
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The texts of a thread's messages as the agent itself has them.
pub fn agent_messages(agent: &AgentflowServer, thread: &str) -> Vec<String> {
    let r = get(
        &format!("{}/v1/threads/{thread}/messages", agent.url()),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(message_text)
        .collect()
}

/// Creates a memory as `auth`; its id.
pub fn remember(gw: &Server, auth: &str, content: &str) -> String {
    let r = call(
        gw,
        auth,
        "POST",
        "/v1/store/memories",
        Some(json!({"content": content})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"]["memory_id"]
        .as_str()
        .expect("data.memory_id")
        .to_owned()
}

#[test]
fn bob_never_sees_or_changes_alices_threads_and_memories() {
    let agent = AgentflowServer::start(None);
    let gw = tenant_gateway(
        agent.url(),
        json!({"owner": "user_id", "bypass_roles": ["admin"]}),
    );
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({}));
    let admin = auth_for("root", &["admin"], json!({}));

    // Alice's conversation, with a secret in it.
    let t = "t-alice";
    let r = invoke_on(&gw, &alice, t, "my PIN is 4321");
    assert_eq!(r.status, 200, "{}\n{}", r.body, agent.logs());
    let r = invoke_on(&gw, &bob, "t-bob", "hello from bob");
    assert_eq!(r.status, 200, "{}", r.body);
    let before = agent_messages(&agent, t);
    assert!(before.iter().any(|m| m.contains("4321")), "{before:?}");
    let first_message = call(
        &gw,
        &alice,
        "GET",
        &format!("/v1/threads/{t}/messages"),
        None,
    );
    assert_reached(&first_message, "alice reads her messages");
    let mid = first_message.body["data"]["messages"][0]["message_id"].clone();
    let mid = match mid {
        Value::String(s) => s,
        other => other.to_string(),
    };

    // Every thread route, run, stop and fix naming her thread.
    let by_id: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/threads/{t}"), None),
        ("GET", format!("/v1/threads/{t}/state"), None),
        (
            "PUT",
            format!("/v1/threads/{t}/state"),
            Some(json!({"state": {"context": []}})),
        ),
        ("DELETE", format!("/v1/threads/{t}/state"), Some(json!({}))),
        ("GET", format!("/v1/threads/{t}/messages"), None),
        (
            "POST",
            format!("/v1/threads/{t}/messages"),
            Some(json!({"messages": [user_message("bob was here")]})),
        ),
        ("GET", format!("/v1/threads/{t}/messages/{mid}"), None),
        (
            "DELETE",
            format!("/v1/threads/{t}/messages/{mid}"),
            Some(json!({})),
        ),
        ("GET", format!("/v1/observability/{t}"), None),
        (
            "POST",
            "/v1/graph/invoke".into(),
            Some(
                json!({"messages": [user_message("what is my PIN?")], "config": {"thread_id": t}}),
            ),
        ),
        (
            "POST",
            "/v1/graph/invoke".into(),
            Some(json!({"messages": [user_message("root id")], "thread_id": t})),
        ),
        (
            "POST",
            "/v1/graph/stream".into(),
            Some(
                json!({"messages": [user_message("what is my PIN?")], "config": {"thread_id": t}}),
            ),
        ),
        (
            "POST",
            "/v1/graph/stop".into(),
            Some(json!({"thread_id": t})),
        ),
        (
            "POST",
            "/v1/graph/fix".into(),
            Some(json!({"thread_id": t})),
        ),
        ("DELETE", format!("/v1/threads/{t}"), Some(json!({}))),
        // Other spellings of the same id.
        ("GET", "/v1/threads/t-%61lice/state".into(), None),
        ("GET", "/v1/threads/%74%2D%61%6C%69%63%65".into(), None),
        (
            "POST",
            "/v1/graph/invoke".into(),
            Some(json!({"messages": [], "config": {"thread_id": "  t-alice\t"}})),
        ),
    ];
    for (method, path, body) in &by_id {
        let r = call(&gw, &bob, method, path, body.clone());
        assert_hidden(&r, &format!("bob {method} {path}"));
    }
    // A non-string id is refused before anything else.
    let r = call(
        &gw,
        &bob,
        "POST",
        "/v1/graph/invoke",
        Some(json!({"config": {"thread_id": 42}})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        agent_messages(&agent, t),
        before,
        "nothing bob sent reached alice's thread"
    );

    // Listing: each sees their own; the admin sees both.
    let bobs = call(&gw, &bob, "GET", "/v1/threads", None);
    assert_eq!(bobs.status, 200, "{}", bobs.body);
    assert_eq!(listed_threads(&bobs), vec!["t-bob"]);
    assert!(
        bobs.body["metadata"]["request_id"].is_string(),
        "the agent's envelope is kept: {}",
        bobs.body
    );
    let alices = call(&gw, &alice, "GET", "/v1/threads", None);
    assert_eq!(listed_threads(&alices), vec![t]);
    let all = listed_threads(&call(&gw, &admin, "GET", "/v1/threads", None));
    assert!(
        all.contains(&t.to_owned()) && all.contains(&"t-bob".to_owned()),
        "{all:?}"
    );

    // Alice (and the admin) still can, under every spelling.
    for (method, path) in [
        ("GET", format!("/v1/threads/{t}")),
        ("GET", "/v1/threads/t-%61lice/state".to_owned()),
        ("GET", format!("/v1/observability/{t}")),
    ] {
        assert_reached(
            &call(&gw, &alice, method, &path, None),
            &format!("alice {method} {path}"),
        );
        assert_reached(
            &call(&gw, &admin, method, &path, None),
            &format!("admin {method} {path}"),
        );
    }
    let again = invoke_on(&gw, &alice, t, "what is my PIN?");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(echoed(&again.body["data"]["messages"])["thread_id"], t);
    let posted = call(
        &gw,
        &alice,
        "POST",
        &format!("/v1/threads/{t}/messages"),
        Some(json!({"messages": [user_message("a note")]})),
    );
    assert_reached(&posted, "alice posts a message");

    // Memories.
    let m_alice = remember(&gw, &alice, "alice: my PIN is 4321");
    let m_bob = remember(&gw, &bob, "bob: likes tea");
    for (method, path, body) in [
        ("POST", format!("/v1/store/memories/{m_alice}"), json!({})),
        (
            "PUT",
            format!("/v1/store/memories/{m_alice}"),
            json!({"content": "overwritten by bob"}),
        ),
        ("DELETE", format!("/v1/store/memories/{m_alice}"), json!({})),
    ] {
        assert_hidden(
            &call(&gw, &bob, method, &path, Some(body)),
            &format!("bob {method} {path}"),
        );
    }
    let search = call(
        &gw,
        &bob,
        "POST",
        "/v1/store/search",
        Some(json!({"query": "PIN", "limit": 5})),
    );
    assert_eq!(search.status, 200, "{}", search.body);
    assert!(
        !listed_memories(&search, "results").contains(&m_alice),
        "{}",
        search.body
    );
    let list = call(
        &gw,
        &bob,
        "POST",
        "/v1/store/memories/list",
        Some(json!({})),
    );
    assert_eq!(listed_memories(&list, "memories"), vec![m_bob.clone()]);
    let forget = call(
        &gw,
        &bob,
        "POST",
        "/v1/store/memories/forget",
        Some(json!({})),
    );
    assert_eq!(forget.status, 403, "{}", forget.body);
    assert!(forget.detail().contains("forget"), "{}", forget.body);
    let one = call(
        &gw,
        &alice,
        "POST",
        &format!("/v1/store/memories/{m_alice}"),
        Some(json!({})),
    );
    assert_eq!(
        one.body["data"]["memory"]["content"], "alice: my PIN is 4321",
        "bob changed nothing: {}",
        one.body
    );
    let search = call(
        &gw,
        &alice,
        "POST",
        "/v1/store/search",
        Some(json!({"query": "PIN"})),
    );
    assert_eq!(listed_memories(&search, "results"), vec![m_alice.clone()]);
    let admin_list = call(
        &gw,
        &admin,
        "POST",
        "/v1/store/memories/list",
        Some(json!({})),
    );
    let every = listed_memories(&admin_list, "memories");
    assert!(
        every.contains(&m_alice) && every.contains(&m_bob),
        "{every:?}"
    );

    // Restart the gateway in the middle: ownership persists.
    let gw = gw.restart(&[]);
    assert_hidden(
        &call(&gw, &bob, "GET", &format!("/v1/threads/{t}/state"), None),
        "after restart",
    );
    assert_hidden(
        &call(
            &gw,
            &bob,
            "POST",
            &format!("/v1/store/memories/{m_alice}"),
            Some(json!({})),
        ),
        "memory after restart",
    );
    assert_reached(
        &call(&gw, &alice, "GET", &format!("/v1/threads/{t}/state"), None),
        "alice after restart",
    );
    assert_eq!(
        listed_threads(&call(&gw, &bob, "GET", "/v1/threads", None)),
        vec!["t-bob"]
    );

    // Deleting releases: alice deletes her memory and thread; they are gone
    // for her too, and a new first use may claim the id again.
    let del = call(
        &gw,
        &alice,
        "DELETE",
        &format!("/v1/store/memories/{m_alice}"),
        Some(json!({})),
    );
    assert_reached(&del, "alice deletes her memory");
    assert_hidden(
        &call(
            &gw,
            &alice,
            "POST",
            &format!("/v1/store/memories/{m_alice}"),
            Some(json!({})),
        ),
        "a deleted memory",
    );
    let del = call(
        &gw,
        &alice,
        "DELETE",
        &format!("/v1/threads/{t}"),
        Some(json!({})),
    );
    assert_reached(&del, "alice deletes her thread");
    assert!(listed_threads(&call(&gw, &alice, "GET", "/v1/threads", None)).is_empty());

    // The admin may forget; bypass roles manage everything.
    let forget = call(
        &gw,
        &admin,
        "POST",
        "/v1/store/memories/forget",
        Some(json!({})),
    );
    assert_reached(&forget, "admin forgets");
}

#[test]
fn thread_listing_pages_over_the_tenants_threads_only() {
    let agent = AgentflowServer::start(None);
    let gw = tenant_gateway(agent.url(), json!({"owner": "user_id"}));
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({}));
    // Interleaved so that the agent's pages mix both tenants.
    for i in 0..4 {
        assert_eq!(invoke_on(&gw, &alice, &format!("a-{i}"), "hi").status, 200);
        assert_eq!(invoke_on(&gw, &bob, &format!("b-{i}"), "hi").status, 200);
    }
    let all = listed_threads(&call(&gw, &alice, "GET", "/v1/threads", None));
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.iter().all(|id| id.starts_with("a-")), "{all:?}");
    let p1 = listed_threads(&call(
        &gw,
        &alice,
        "GET",
        "/v1/threads?offset=0&limit=3",
        None,
    ));
    let p2 = listed_threads(&call(
        &gw,
        &alice,
        "GET",
        "/v1/threads?limit=3&offset=3",
        None,
    ));
    assert_eq!(p1.len(), 3, "a full first page: {p1:?}");
    assert_eq!(p2.len(), 1, "the rest: {p2:?}");
    let mut joined = [p1, p2].concat();
    joined.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(
        joined, expected,
        "pages cover the tenant's threads once each"
    );
    let bad = call(&gw, &alice, "GET", "/v1/threads?limit=0", None);
    assert_eq!(bad.status, 422, "{}", bad.body);
}

#[test]
fn server_generated_ids_are_claimed_and_streaming_stays_incremental() {
    let agent = AgentflowServer::start(None);
    let gw = tenant_gateway(agent.url(), json!({"owner": "user_id"}));
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({}));

    // Invoke without a thread id: the id the agent made is alice's.
    let r = call(
        &gw,
        &alice,
        "POST",
        "/v1/graph/invoke",
        Some(json!({"messages": [user_message("new")]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let made = r.body["data"]["meta"]["thread_id"]
        .as_str()
        .expect("meta.thread_id")
        .to_owned();
    assert_hidden(
        &call(&gw, &bob, "GET", &format!("/v1/threads/{made}/state"), None),
        "bob on a made id",
    );
    assert_hidden(
        &invoke_on(&gw, &bob, &made, "continue it"),
        "bob continues a made id",
    );
    assert_reached(
        &call(
            &gw,
            &alice,
            "GET",
            &format!("/v1/threads/{made}/state"),
            None,
        ),
        "alice on her made id",
    );

    // Stream without a thread id: claimed from the events as they pass, and
    // the first event arrives long before the run ends.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    let resp = client
        .post(gw.url("/v1/graph/stream"))
        .header("authorization", &alice)
        .json(&json!({"messages": [user_message("stream me")], "config": {"delay_ms": 1500}}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut lines: Vec<(Duration, Value)> = Vec::new();
    for line in BufReader::new(resp).lines() {
        let line = line.unwrap();
        if !line.is_empty() {
            lines.push((started.elapsed(), serde_json::from_str(&line).unwrap()));
        }
    }
    let (first_at, first) = &lines[0];
    let (last_at, _) = lines.last().unwrap();
    assert!(
        *last_at >= *first_at + Duration::from_millis(1000),
        "events are relayed as they come, not buffered: first at {first_at:?}, last at {last_at:?}"
    );
    let streamed = first["thread_id"].as_str().expect("thread_id").to_owned();
    assert_hidden(
        &call(
            &gw,
            &bob,
            "GET",
            &format!("/v1/threads/{streamed}/messages"),
            None,
        ),
        "bob on a streamed id",
    );
    assert_reached(
        &call(
            &gw,
            &alice,
            "GET",
            &format!("/v1/threads/{streamed}/messages"),
            None,
        ),
        "alice on her streamed id",
    );
    let mine = listed_threads(&call(&gw, &alice, "GET", "/v1/threads", None));
    assert!(mine.contains(&made) && mine.contains(&streamed), "{mine:?}");
    assert!(listed_threads(&call(&gw, &bob, "GET", "/v1/threads", None)).is_empty());

    // A state write to an unknown id claims it too.
    let put = call(
        &gw,
        &bob,
        "PUT",
        "/v1/threads/t-bob-state/state",
        Some(json!({"state": {"context": []}})),
    );
    assert!(put.body.get("code").is_none(), "{}", put.body);
    assert_hidden(
        &call(&gw, &alice, "GET", "/v1/threads/t-bob-state/state", None),
        "alice on bob's written id",
    );
}

#[test]
fn websocket_runs_on_another_tenants_thread_are_refused() {
    let agent = AgentflowServer::start(None);
    let gw = tenant_gateway(agent.url(), json!({"owner": "user_id"}));
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({}));
    assert_eq!(
        invoke_on(&gw, &alice, "t-ws-alice", "secret plans").status,
        200
    );
    let before = agent_messages(&agent, "t-ws-alice");

    let rt = runtime();
    let url = ws_url(&gw, "/v1/graph/ws");
    let (refusal, new_thread) = rt.block_on(async {
        let (mut socket, _) = connect(&url, &[("authorization", &bob)])
            .await
            .unwrap();
        let frames = |text: &str, thread: &str| {
            Message::text(
                json!({"invoke_type": "fresh", "messages": [user_message(text)], "config": {"thread_id": thread}})
                    .to_string(),
            )
        };
        socket.send(frames("what are the plans?", "t-ws-alice")).await.unwrap();
        let refusal = next_text(&mut socket).await;
        // The socket stays usable: a run on a new thread works and is bob's.
        socket.send(frames("my own run", "new")).await.unwrap();
        let mut thread = None;
        loop {
            let v = next_text(&mut socket).await;
            if thread.is_none() {
                thread = v["thread_id"].as_str().map(str::to_owned);
            }
            if v["data"]["status"] == "done" {
                break;
            }
        }
        (refusal, thread.expect("the run names its thread"))
    });
    assert_eq!(refusal["event"], "error", "{refusal}");
    assert!(
        refusal["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not found"),
        "{refusal}"
    );
    assert_eq!(
        agent_messages(&agent, "t-ws-alice"),
        before,
        "nothing reached alice's thread"
    );
    assert_hidden(
        &call(
            &gw,
            &alice,
            "GET",
            &format!("/v1/threads/{new_thread}/state"),
            None,
        ),
        "bob's socket run is bob's",
    );
    assert_reached(
        &call(
            &gw,
            &bob,
            "GET",
            &format!("/v1/threads/{new_thread}/state"),
            None,
        ),
        "bob on his socket run",
    );
}

#[test]
fn websocket_frames_the_gateway_cannot_read_do_not_reach_the_agent() {
    let agent = AgentflowServer::start(None);
    let gw = tenant_gateway(agent.url(), json!({"owner": "user_id"}));
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({}));
    assert_eq!(
        invoke_on(&gw, &alice, "t-ws-odd", "secret plans").status,
        200
    );
    let before = agent_messages(&agent, "t-ws-odd");
    let run = |extra: &str| {
        format!(
            r#"{{"invoke_type": "fresh", "messages": [{}], "config": {{"thread_id": "t-ws-odd"{extra}}}}}"#,
            user_message("bob writes")
        )
    };
    // Python's json reads all three and would run on alice's thread;
    // serde_json refuses each, so the gateway cannot see the thread id.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let frames = [
        run(r#", "x": NaN"#),
        run(r#", "x": "\udc00""#),
        run(&format!(r#", "x": {deep}"#)),
    ];

    let rt = runtime();
    let url = ws_url(&gw, "/v1/graph/ws");
    let answers = rt.block_on(async {
        let (mut socket, _) = connect(&url, &[("authorization", &bob)]).await.unwrap();
        let mut answers = Vec::new();
        for frame in &frames {
            socket.send(Message::text(frame.clone())).await.unwrap();
            answers.push(next_text(&mut socket).await);
        }
        answers
    });
    for (frame, answer) in frames.iter().zip(&answers) {
        assert_eq!(answer["event"], "error", "{frame}: {answer}");
        assert!(
            answer["data"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("must be a JSON object"),
            "{frame}: {answer}"
        );
    }
    assert_eq!(
        agent_messages(&agent, "t-ws-odd"),
        before,
        "nothing reached alice's thread"
    );
}

#[test]
fn a_thread_deleted_and_claimed_by_another_tenant_is_no_longer_an_open_sockets() {
    let agent = AgentflowServer::start(None);
    let gw = tenant_gateway(agent.url(), json!({"owner": "user_id"}));
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({}));
    let rt = runtime();
    let url = ws_url(&gw, "/v1/graph/ws");
    let frame = |text: &str| {
        Message::text(
            json!({"invoke_type": "fresh", "messages": [user_message(text)], "config": {"thread_id": "t-handed-over"}})
                .to_string(),
        )
    };
    let refusal = rt.block_on(async {
        let (mut socket, _) = connect(&url, &[("authorization", &alice)]).await.unwrap();
        // Alice's socket run claims the thread.
        socket.send(frame("alice on the socket")).await.unwrap();
        loop {
            if next_text(&mut socket).await["data"]["status"] == "done" {
                break;
            }
        }
        // Over HTTP she deletes it, and bob takes the id for himself.
        tokio::task::block_in_place(|| {
            let deleted = call(
                &gw,
                &alice,
                "DELETE",
                "/v1/threads/t-handed-over",
                Some(json!({})),
            );
            assert_reached(&deleted, "alice deletes her thread");
            let taken = invoke_on(&gw, &bob, "t-handed-over", "bob's own now");
            assert_eq!(taken.status, 200, "{}", taken.body);
        });
        socket.send(frame("alice again")).await.unwrap();
        next_text(&mut socket).await
    });
    assert_eq!(refusal["event"], "error", "{refusal}");
    assert!(
        refusal["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not found"),
        "{refusal}"
    );
    let messages = agent_messages(&agent, "t-handed-over");
    assert!(
        !messages.iter().any(|m| m == "alice again"),
        "alice's socket wrote into bob's thread: {messages:?}"
    );
}

/// The next text frame as JSON.
async fn next_text(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(t) = frame {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}
