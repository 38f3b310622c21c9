//! WebSocket proxying (`/v1/graph/ws`, `/v1/graph/live`): the token is read
//! from the `agentflow-bearer` subprotocol pair or `?token=` on upgrades
//! only, refusals are HTTP answers before any upgrade, frames cross both
//! ways, and the agent never sees the client's token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as HandshakeRequest, Response as HandshakeResponse,
};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::*;
use crate::support_agentflow::*;
use crate::tenancy::agent_messages;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An opened socket with its handshake response, or the HTTP refusal.
pub type Connected = Result<(Socket, http::Response<Option<Vec<u8>>>), WsError>;

/// Handshakes an agent stand-in saw: URI and headers.
type Handshakes = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The gateway with built-in JWT in front of `agent`.
fn gateway(agent: &str) -> Server {
    Server::start(
        json!({"agent": agent, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    )
}

fn token(user: &str) -> String {
    hs256(SECRET, json!({"sub": user, "exp": now() + 3600}))
}

/// `ws://` URL of `path` on the gateway.
pub fn ws_url(server: &Server, path: &str) -> String {
    server.url(path).replacen("http://", "ws://", 1)
}

/// Opens a socket with extra handshake headers; the handshake response or
/// the HTTP refusal.
pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Connected {
    let mut request = url.into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("the handshake answers")
}

/// Sends one run frame and collects the text frames up to the `done` update.
async fn run(socket: &mut Socket, text: &str, thread: &str) -> Vec<Value> {
    let frame = json!({"invoke_type": "fresh", "messages": [user_message(text)], "config": {"thread_id": thread}});
    socket.send(Message::text(frame.to_string())).await.unwrap();
    let mut chunks = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a chunk in time");
        let Some(Ok(Message::Text(text))) = next else {
            panic!("expected a text chunk, got {next:?} after {chunks:?}")
        };
        let chunk: Value = serde_json::from_str(&text).unwrap();
        let done = chunk["event"] == "updates" && chunk["data"]["status"] == "done";
        chunks.push(chunk);
        if done {
            return chunks;
        }
    }
}

/// The echo graph's report among streamed chunks.
fn echo_in(chunks: &[Value]) -> Value {
    let messages: Vec<Value> = chunks
        .iter()
        .map(|c| c["message"].clone())
        .filter(|m| m.is_object())
        .collect();
    echoed(&Value::Array(messages))
}

#[test]
fn a_run_streams_through_the_gateway_with_the_token_in_the_bearer_subprotocol() {
    let agent = AgentflowServer::start(None);
    let server = gateway(agent.url());
    let protocols = format!("agentflow-bearer, {}", token("alice"));
    runtime().block_on(async {
        let (mut socket, response) = connect(
            &ws_url(&server, "/v1/graph/ws"),
            &[("sec-websocket-protocol", &protocols)],
        )
        .await
        .unwrap_or_else(|e| panic!("upgrade refused: {e}\n{}", server.logs()));
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap()),
            Some("agentflow-bearer"),
            "browsers need the subprotocol echoed, and never the token"
        );
        let chunks = run(&mut socket, "hello over ws", "t-ws").await;
        let seen = echo_in(&chunks);
        assert_eq!(seen["last_user_message"], "hello over ws", "{chunks:?}");
        assert_eq!(seen["thread_id"], "t-ws");
        assert!(
            chunks.iter().any(|c| c["thread_id"] == "t-ws"),
            "{chunks:?}"
        );
        // The socket stays open for the next run.
        let again = run(&mut socket, "second run", "t-ws").await;
        assert_eq!(echo_in(&again)["last_user_message"], "second run");
        socket.close(None).await.unwrap();
    });
}

/// The text frame after one run frame naming `thread`: the error event a
/// refusal gets, or the run's first chunk.
async fn first_answer(socket: &mut Socket, text: &str, thread: &str) -> Value {
    let frame = json!({"invoke_type": "fresh", "messages": [user_message(text)], "config": {"thread_id": thread}});
    socket.send(Message::text(frame.to_string())).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), socket.next())
        .await
        .expect("an answer in time");
    let Some(Ok(Message::Text(text))) = next else {
        panic!("expected a text frame, got {next:?}")
    };
    serde_json::from_str(&text).unwrap()
}

/// Whether the agent holds any message on `thread`.
fn agent_has_messages(agent: &AgentflowServer, thread: &str) -> bool {
    let r = get(
        &format!("{}/v1/threads/{thread}/messages", agent.url()),
        &[],
    );
    r.status == 200
        && r.body["data"]["messages"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
}

#[test]
fn each_run_frame_is_put_to_the_authorizer_with_its_thread_id() {
    // No tenancy: the authorizer alone decides per thread, as on invoke.
    let agent = AgentflowServer::start(None);
    let authorizer = json!({"path": plugins().access_echo, "config": {
        "allow_id": "t-ok", "fail_id": "t-broken", "allow_unnamed": true}});
    let server = Server::start(
        json!({"agent": agent.url(), "auth": "jwt", "authorization": authorizer}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let bearer = format!("Bearer {}", token("alice"));
    let (denied, failed) = runtime().block_on(async {
        let (mut socket, _) = connect(
            &ws_url(&server, "/v1/graph/ws"),
            &[("authorization", &bearer)],
        )
        .await
        .unwrap_or_else(|e| panic!("upgrade refused: {e}\n{}", server.logs()));
        let denied = first_answer(&mut socket, "denied run", "t-other").await;
        let failed = first_answer(&mut socket, "failing check", "t-broken").await;
        // The socket stays open, and an allowed thread runs.
        let chunks = run(&mut socket, "allowed run", "t-ok").await;
        assert_eq!(echo_in(&chunks)["last_user_message"], "allowed run");
        (denied, failed)
    });
    assert_eq!(denied["event"], "error", "{denied}");
    let reason = denied["data"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(r#""resource_id":"t-other""#) && reason.contains(r#""action":"stream""#),
        "the authorizer saw the frame's thread: {denied}"
    );
    assert_eq!(
        failed["event"], "error",
        "a failing check fails closed: {failed}"
    );
    assert!(
        !agent_has_messages(&agent, "t-other"),
        "a denied run reached the agent"
    );
    assert!(
        !agent_has_messages(&agent, "t-broken"),
        "a failed check reached the agent"
    );
    assert!(agent_has_messages(&agent, "t-ok"));
}

/// Revokes a credential (blocking HTTP).
type Revoke<'a> = &'a dyn Fn();

#[test]
fn a_revoked_login_or_api_key_ends_its_open_socket_at_the_next_frame() {
    let agent = AgentflowServer::start(None);
    let server = Server::start(
        json!({"agent": agent.url(), "auth": ["jwt", "api_key"]}),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("AGENTFLOW_SUPERUSER", "admin"),
            ("AGENTFLOW_SUPERUSER_PASSWORD", "admin-password-1"),
        ],
    );
    let login = || {
        let r = post(
            &server.url("/v1/login"),
            &[],
            json!({"username": "admin", "password": "admin-password-1"}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r
    };
    let session = login();
    let bearer = format!("Bearer {}", session.body["access_token"].as_str().unwrap());
    let refresh = session.body["refresh_token"].clone();
    // An API key of the same account, for the second socket.
    let admin = format!("Bearer {}", login().body["access_token"].as_str().unwrap());
    let created = post(
        &server.url("/v1/api-keys"),
        &[("authorization", &admin)],
        json!({"name": "socket"}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.body["key"].as_str().unwrap().to_owned();
    let key_id = created.body["id"].as_str().unwrap().to_owned();

    let revoke_login = || {
        let out = post(
            &server.url("/v1/logout"),
            &[],
            json!({"refresh_token": refresh}),
        );
        assert_eq!(out.status, 200, "{}", out.body);
    };
    let revoke_key = || {
        let out = send(
            "DELETE",
            &server.url(&format!("/v1/api-keys/{key_id}")),
            &[("authorization", &admin)],
            None,
        );
        assert_eq!(out.status, 204, "{}", out.body);
    };
    // (thread, credential header, how it is revoked, the refusal's reason)
    let cases: [(&str, (&str, &str), Revoke, &str); 2] = [
        (
            "t-rev-login",
            ("authorization", &bearer),
            &revoke_login,
            "login has ended",
        ),
        (
            "t-rev-key",
            ("x-api-key", &key),
            &revoke_key,
            "API key has been revoked",
        ),
    ];
    for (thread, credential, revoke, why) in cases {
        let (refusal, closed) = runtime().block_on(async {
            let (mut socket, _) = connect(&ws_url(&server, "/v1/graph/ws"), &[credential])
                .await
                .unwrap_or_else(|e| panic!("upgrade refused: {e}\n{}", server.logs()));
            let chunks = run(&mut socket, "before revocation", thread).await;
            assert_eq!(echo_in(&chunks)["last_user_message"], "before revocation");
            tokio::task::block_in_place(revoke);
            let refusal = first_answer(&mut socket, "after revocation", thread).await;
            let closed = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("the gateway closes the socket");
            (refusal, closed)
        });
        assert_eq!(refusal["event"], "error", "{thread}: {refusal}");
        assert!(
            refusal["data"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(why),
            "{thread}: {refusal}"
        );
        match closed {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1008, "{thread}: {f:?}")
            }
            other => panic!("{thread}: expected a 1008 close, got {other:?}"),
        }
        let messages = agent_messages(&agent, thread);
        assert!(
            messages.iter().any(|m| m == "before revocation")
                && !messages.iter().any(|m| m == "after revocation"),
            "{thread}: a run after revocation reached the agent: {messages:?}"
        );
    }
}

#[test]
fn a_query_token_authenticates_an_upgrade() {
    let agent = AgentflowServer::start(None);
    let server = gateway(agent.url());
    runtime().block_on(async {
        let url = format!("{}?token={}", ws_url(&server, "/v1/graph/ws"), token("bob"));
        let (mut socket, response) = connect(&url, &[])
            .await
            .unwrap_or_else(|e| panic!("upgrade refused: {e}"));
        assert!(
            response.headers().get("sec-websocket-protocol").is_none(),
            "none offered, none selected"
        );
        let chunks = run(&mut socket, "via query", "t-query").await;
        assert_eq!(echo_in(&chunks)["last_user_message"], "via query");
    });
}

/// The HTTP refusal of an upgrade: status and JSON body.
fn refusal(result: Connected) -> (u16, Value) {
    match result {
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| serde_json::from_slice(b).unwrap())
                .unwrap_or(Value::Null);
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[test]
fn upgrades_without_a_valid_token_are_refused_with_401_before_upgrading() {
    let agent = AgentflowServer::start(None);
    let server = gateway(agent.url());
    runtime().block_on(async {
        let url = ws_url(&server, "/v1/graph/ws");
        let (status, body) = refusal(connect(&url, &[]).await);
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["code"], "not_authenticated");
        assert_eq!(
            body["error"]["code"], "NOT_AUTHENTICATED",
            "the AgentFlow envelope too: {body}"
        );

        let forged = hs256(
            "another-secret-0123456789abcdef0123456789",
            json!({"sub": "eve", "exp": now() + 60}),
        );
        let protocols = format!("agentflow-bearer, {forged}");
        let (status, body) =
            refusal(connect(&url, &[("sec-websocket-protocol", &protocols)]).await);
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_token")),
            "{body}"
        );
        let (status, _) = refusal(connect(&format!("{url}?token={forged}"), &[]).await);
        assert_eq!(status, 401);

        let live = ws_url(&server, "/v1/graph/live");
        assert_eq!(
            refusal(connect(&live, &[]).await).0,
            401,
            "the live route too"
        );
    });
}

#[test]
fn handshake_token_places_are_not_credentials_on_plain_http() {
    let agent = AgentflowServer::start(None);
    let server = gateway(agent.url());
    let good = token("alice");
    let r = get(&server.url(&format!("/v1/threads?token={good}")), &[]);
    assert_eq!(r.status, 401, "?token= on plain HTTP: {}", r.body);
    let protocols = format!("agentflow-bearer, {good}");
    let r = get(
        &server.url("/v1/threads"),
        &[("sec-websocket-protocol", &protocols)],
    );
    assert_eq!(
        r.status, 401,
        "the subprotocol pair on plain HTTP: {}",
        r.body
    );
    let r = get(&server.url(&format!("/v1/graph/ws?token={good}")), &[]);
    assert_eq!(
        r.status, 401,
        "nor on a socket route without an upgrade: {}",
        r.body
    );
    let r = get(
        &server.url("/v1/graph/ws"),
        &[("authorization", &bearer(&good))],
    );
    assert_eq!(
        r.status, 400,
        "a socket route is served as an upgrade only: {}",
        r.body
    );
    assert_eq!(
        get(
            &server.url("/v1/threads"),
            &[("authorization", &bearer(&good))]
        )
        .status,
        200
    );
}

/// A WebSocket agent stand-in: records each handshake (URI and headers),
/// echoes frames back, and closes with 4001 "bye" when sent `{"close": "me"}`.
struct EchoAgent {
    url: String,
    handshakes: Handshakes,
}

/// A text frame that is no run, echoed by the stand-in.
const PING: &str = r#"{"ping": "text"}"#;
/// The frame the stand-in answers by closing with 4001 "bye".
const CLOSE_ME: &str = r#"{"close": "me"}"#;

// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn echo_agent() -> EchoAgent {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let seen = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let record = |req: &HandshakeRequest, resp: HandshakeResponse| {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    seen.lock().unwrap().push((req.uri().to_string(), headers));
                    Ok(resp)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(tcp, record).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    match message {
                        Message::Text(t) if t.as_str() == CLOSE_ME => {
                            let frame = CloseFrame {
                                code: CloseCode::from(4001),
                                reason: "bye".into(),
                            };
                            let _ = socket.send(Message::Close(Some(frame))).await;
                        }
                        Message::Text(_) | Message::Binary(_) => {
                            let _ = socket.send(message).await;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    EchoAgent { url, handshakes }
}

#[test]
fn the_agent_gets_the_identity_never_the_client_token_and_frames_and_closes_cross() {
    let rt = runtime();
    let agent = rt.block_on(echo_agent());
    let server = gateway(&agent.url);
    let client_token = token("carol");
    rt.block_on(async {
        let url = format!(
            "{}?keep=1&token={client_token}&to%6Ben={client_token}",
            ws_url(&server, "/v1/graph/ws")
        );
        let protocols = format!("agentflow-bearer, {client_token}");
        let (mut socket, _) = connect(
            &url,
            &[("sec-websocket-protocol", &protocols), ("x-custom", "kept")],
        )
        .await
        .unwrap_or_else(|e| panic!("upgrade refused: {e}\n{}", server.logs()));

        // Text frames on a run socket are JSON objects (anything else is
        // refused, never passed on unread); this one is no run and passes.
        socket.send(Message::text(PING)).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Message::text(PING));
        socket.send(Message::text("ping-text")).await.unwrap();
        let refused: Value =
            serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(refused["event"], "error", "{refused}");
        socket
            .send(Message::binary(vec![0u8, 159, 255]))
            .await
            .unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 159, 255])
        );
        socket.send(Message::text(CLOSE_ME)).await.unwrap();
        match socket.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => {
                assert_eq!((u16::from(f.code), f.reason.as_str()), (4001, "bye"))
            }
            other => panic!("expected the agent's close, got {other:?}"),
        }
    });

    let handshakes = agent.handshakes.lock().unwrap().clone();
    assert_eq!(handshakes.len(), 1);
    let (uri, headers) = &handshakes[0];
    assert_eq!(
        uri, "/v1/graph/ws?keep=1",
        "every spelling of token is stripped"
    );
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("x-agentflow-user-id"), Some("carol"));
    assert_eq!(header("x-custom"), Some("kept"));
    assert_eq!(
        header("sec-websocket-protocol"),
        None,
        "the subprotocol pair carried the token"
    );
    assert_eq!(
        header("authorization"),
        None,
        "no upstream token is configured; the client's never goes"
    );
    for (name, value) in headers {
        assert!(
            !value.contains(&client_token),
            "{name} carried the client's token"
        );
    }
}

#[test]
fn an_unreachable_agent_is_502_before_upgrading() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let server = gateway(&url);
    runtime().block_on(async {
        let protocols = format!("agentflow-bearer, {}", token("alice"));
        let (status, body) = refusal(
            connect(
                &ws_url(&server, "/v1/graph/ws"),
                &[("sec-websocket-protocol", &protocols)],
            )
            .await,
        );
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["code"], "upstream_unavailable");
    });
}
