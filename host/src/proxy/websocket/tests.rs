use super::*;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn only_a_get_with_upgrade_and_connection_is_an_upgrade() {
    let up = headers(&[
        ("upgrade", "WebSocket"),
        ("connection", "keep-alive, Upgrade"),
    ]);
    assert!(is_upgrade(&Method::GET, &up));
    assert!(!is_upgrade(&Method::POST, &up));
    assert!(!is_upgrade(
        &Method::GET,
        &headers(&[("upgrade", "websocket")])
    ));
    assert!(!is_upgrade(
        &Method::GET,
        &headers(&[("upgrade", "h2c"), ("connection", "upgrade")])
    ));
    assert!(!is_upgrade(&Method::GET, &HeaderMap::new()));
}

#[test]
fn the_token_comes_from_the_bearer_subprotocol_pair_then_the_query() {
    let pair = headers(&[("sec-websocket-protocol", "agentflow-bearer, a.b.c")]);
    assert_eq!(
        handshake_token(&pair, Some("token=q.q.q"))
            .unwrap()
            .as_deref(),
        Some("a.b.c")
    );
    let split = headers(&[
        ("sec-websocket-protocol", "agentflow-bearer"),
        ("sec-websocket-protocol", "a.b.c"),
    ]);
    assert_eq!(
        handshake_token(&split, None).unwrap().as_deref(),
        Some("a.b.c"),
        "across header lines"
    );
    assert_eq!(
        handshake_token(&HeaderMap::new(), Some("x=1&token=q.q%2Eq"))
            .unwrap()
            .as_deref(),
        Some("q.q.q")
    );
    assert_eq!(
        handshake_token(&HeaderMap::new(), Some("to%6Ben=k"))
            .unwrap()
            .as_deref(),
        Some("k"),
        "decoded key"
    );
}

#[test]
fn a_bearer_subprotocol_not_offered_first_or_alone_is_no_token() {
    let second = headers(&[("sec-websocket-protocol", "chat, agentflow-bearer, a.b.c")]);
    assert_eq!(handshake_token(&second, None).unwrap(), None);
    let alone = headers(&[("sec-websocket-protocol", "agentflow-bearer")]);
    assert_eq!(handshake_token(&alone, None).unwrap(), None);
    assert_eq!(
        handshake_token(&HeaderMap::new(), Some("tokens=1&Token=2")).unwrap(),
        None
    );
}

#[test]
fn two_query_tokens_are_refused() {
    assert!(matches!(
        handshake_token(&HeaderMap::new(), Some("token=a&token=b")),
        Err(ApiError::BadRequest(_))
    ));
}

#[test]
fn every_spelling_of_the_token_parameter_is_stripped_for_the_agent() {
    assert_eq!(without_token(Some("token=a")), None);
    assert_eq!(
        without_token(Some("a=1&token=x&to%6Ben=y&b=%20&token")),
        Some("a=1&b=%20".into())
    );
    assert_eq!(
        without_token(Some("tokens=1&Token=2")),
        Some("tokens=1&Token=2".into())
    );
    assert_eq!(without_token(None), None);
}

/// Two connected in-memory sockets: (the relay's end, the peer's end).
async fn pair() -> (
    WebSocketStream<tokio::io::DuplexStream>,
    WebSocketStream<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
    let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
    (server, client)
}

/// Refuses text frames that mention "forbidden".
struct RefuseForbidden;

impl FrameInspector for RefuseForbidden {
    fn inspect<'a>(&'a self, frame: &'a Message) -> futures_util::future::BoxFuture<'a, Verdict> {
        let verdict = match frame {
            Message::Text(t) if t.contains("forbidden") => {
                Verdict::Refuse("thread not yours".into())
            }
            _ => Verdict::Forward,
        };
        Box::pin(std::future::ready(verdict))
    }
}

#[tokio::test]
async fn relays_both_ways_lets_the_inspector_veto_and_passes_the_close_code() {
    let (client_end, mut client) = pair().await;
    let (agent_end, mut agent) = pair().await;
    let relay = tokio::spawn(async move { relay(client_end, agent_end, &RefuseForbidden).await });

    client.send(Message::text("forbidden run")).await.unwrap();
    client.send(Message::text("run")).await.unwrap();
    client.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        agent.next().await.unwrap().unwrap(),
        Message::text("run"),
        "the vetoed frame never arrives"
    );
    assert_eq!(
        agent.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );

    let notice = client.next().await.unwrap().unwrap();
    let notice: serde_json::Value = serde_json::from_str(notice.to_text().unwrap()).unwrap();
    assert_eq!(
        notice,
        serde_json::json!({"event": "error", "data": {"reason": "thread not yours"}})
    );

    agent.send(Message::text("chunk")).await.unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::text("chunk")
    );

    let policy = CloseFrame {
        code: CloseCode::Policy,
        reason: "session expired".into(),
    };
    agent
        .send(Message::Close(Some(policy.clone())))
        .await
        .unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::Close(Some(policy))
    );
    // The client's close reply completes the handshake on both sockets.
    while client.next().await.is_some() {}
    while agent.next().await.is_some() {}
    tokio::time::timeout(Duration::from_secs(2), relay)
        .await
        .expect("the relay ends")
        .unwrap();
}

#[tokio::test]
async fn an_agent_that_vanishes_is_reported_to_the_client_as_1011() {
    let (client_end, mut client) = pair().await;
    let (agent_end, agent) = pair().await;
    let relay = tokio::spawn(async move { relay(client_end, agent_end, &ForwardAll).await });
    drop(agent);
    match client.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Error),
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop(client);
    tokio::time::timeout(Duration::from_secs(7), relay)
        .await
        .expect("the relay ends")
        .unwrap();
}
