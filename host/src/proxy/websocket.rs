//! WebSocket proxying for the agent's socket routes (`/v1/graph/ws`,
//! `/v1/graph/live`): where a handshake may carry its token, the upstream
//! handshake made with the gateway's identity (never the client's token),
//! and the frame relay between the two sockets.
//!
//! Order matters: the agent is connected first and the client upgraded
//! only after, so an unreachable or refusing agent is an HTTP answer the
//! client can read, not a socket that opens and dies.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::ws::{self, WebSocketUpgrade};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self as ts, Message, Utf8Bytes};
use tracing::Instrument as _;

use super::{Upstream, headers};
use crate::agent_request::AgentRequest;
use crate::error::ApiError;
use crate::identity::Identity;

/// The subprotocol the official AgentFlow client offers first, followed by
/// its token as a second "subprotocol"; echoed on accept (browsers close a
/// socket whose server selects none of the offered protocols).
pub const BEARER_SUBPROTOCOL: &str = "agentflow-bearer";

/// The query parameter the official client may carry its token in.
const TOKEN_PARAM: &str = "token";

/// Largest frame and message relayed either way (AgentFlow's live route
/// drops audio frames over 1 MiB; JSON run frames are far smaller).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// How long the agent may take to accept the upstream handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the second direction may run after the first one closed, so a
/// close handshake can complete without a silent peer holding the task.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Whether `method` + `headers` ask for a WebSocket upgrade (RFC 6455 §4.1:
/// a GET with `Upgrade: websocket` and `Connection: upgrade`).
pub fn is_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    method == Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
}

/// The token a WebSocket handshake carries outside `Authorization`, in the
/// AgentFlow server's order: the `agentflow-bearer, <token>` subprotocol
/// pair, then `?token=`. Call it only for upgrade requests on socket routes:
/// on plain HTTP neither place is a credential. Several `token` parameters
/// are refused (400) rather than guessing which one counts.
pub fn handshake_token(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let offered = offered_subprotocols(headers);
    if offered.first().map(String::as_str) == Some(BEARER_SUBPROTOCOL)
        && let Some(token) = offered.get(1)
    {
        return Ok(Some(token.clone()));
    }
    let mut tokens =
        query_pairs(query.unwrap_or_default()).filter(|(key, _, _)| key == TOKEN_PARAM);
    match (tokens.next(), tokens.next()) {
        (None, _) => Ok(None),
        (Some((_, value, _)), None) => Ok(Some(value)),
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "the query has more than one `token` parameter".into(),
        )),
    }
}

/// Every subprotocol offered, in order, across all header lines.
fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `(decoded key, decoded value, raw pair)` for each `&`-separated pair, decoded
/// as form data the way the agent (Starlette) reads its query.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String, &str)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query.split('&').filter(|p| !p.is_empty()).map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key), decode(value), pair)
    })
}

/// The query without any `token` parameter (in any spelling the agent
/// would decode to `token`), other pairs kept as sent.
fn without_token(query: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = query_pairs(query.unwrap_or_default())
        .filter(|(key, _, _)| key != TOKEN_PARAM)
        .map(|(_, _, raw)| raw)
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// What happens to one client frame on its way to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it.
    Forward,
    /// Drop it and tell the client why with an AgentFlow error event
    /// (`{"event":"error","data":{"reason":…}}`); the socket stays open, as
    /// the agent's own refusals of a run leave it open.
    Refuse(String),
    /// Drop it, tell the client why, and close both sides (1008): the
    /// caller may no longer use this socket at all (a revoked login).
    End(String),
}

/// Looks at every client frame before the agent sees it, and at every agent
/// frame before the client does. Tenancy checks each run frame's
/// `config.thread_id` here and claims the threads the agent reports. Async
/// because a verdict may need the ownership registry.
pub trait FrameInspector: Send + Sync {
    /// The verdict on a client `frame` (text, binary, ping, pong or close).
    fn inspect<'a>(&'a self, frame: &'a Message) -> BoxFuture<'a, Verdict>;

    /// The verdict on an agent `frame` on its way to the client: a refused
    /// frame is replaced by an error event. Relays everything by default.
    fn inspect_reply<'a>(&'a self, _frame: &'a Message) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(Verdict::Forward))
    }
}

/// Relays every frame unchanged.
pub struct ForwardAll;

impl FrameInspector for ForwardAll {
    fn inspect<'a>(&'a self, _frame: &'a Message) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(Verdict::Forward))
    }
}

impl Upstream {
    /// Proxies an authorized WebSocket handshake: connects to the agent with
    /// the gateway's identity, then upgrades the client and relays frames
    /// until either side closes. A request that is not a valid upgrade is
    /// 400; an agent that cannot be reached is 502; an agent that refuses
    /// the handshake has its HTTP answer relayed.
    pub async fn forward_websocket(
        &self,
        target: AgentRequest,
        mut parts: Parts,
        who: Option<&Identity>,
        client_ip: Option<&str>,
        inspector: Arc<dyn FrameInspector>,
    ) -> Result<Response<Body>, ApiError> {
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|rejection| {
                ApiError::BadRequest(format!(
                    "this route serves WebSocket upgrades only: {}",
                    rejection.body_text()
                ))
            })?;
        let request = self.handshake_request(&target, &parts.headers, who, client_ip)?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let agent = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(ts::Error::Http(refusal))) => return Ok(relay_refusal(*refusal)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "agent WebSocket handshake failed");
                return Err(ApiError::UpstreamUnavailable);
            }
            Err(_) => {
                tracing::warn!("agent WebSocket handshake timed out");
                return Err(ApiError::UpstreamUnavailable);
            }
        };
        let span = tracing::Span::current();
        Ok(upgrade
            .protocols([BEARER_SUBPROTOCOL])
            .max_message_size(MAX_MESSAGE_BYTES)
            .max_frame_size(MAX_MESSAGE_BYTES)
            .on_failed_upgrade(|e| tracing::warn!(error = %e, "client WebSocket upgrade failed"))
            .on_upgrade(move |client| {
                async move {
                    relay(client_messages(client), agent, inspector.as_ref()).await;
                    tracing::debug!("WebSocket relay ended");
                }
                .instrument(span)
            }))
    }

    /// The upstream handshake: `ws(s)://` + the authorized path and query
    /// (minus `token`), the client's forwardable headers minus its own
    /// WebSocket negotiation, and the identity set by the gateway.
    fn handshake_request(
        &self,
        target: &AgentRequest,
        client_headers: &HeaderMap,
        who: Option<&Identity>,
        client_ip: Option<&str>,
    ) -> Result<http::Request<()>, ApiError> {
        let mut url = self.url_for(target)?;
        url.set_query(without_token(target.query()).as_deref());
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| ApiError::Internal(format!("cannot make a {scheme} URL of {url}")))?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ApiError::Internal(format!("the agent WebSocket URL is unusable: {e}")))?;
        let out = request.headers_mut();
        for (name, value) in &self.headers.filter(client_headers) {
            // Extensions, version and key belong to our own handshake; the
            // offered subprotocols may carry the client's token.
            if !name.as_str().starts_with("sec-websocket-") {
                out.append(name.clone(), value.clone());
            }
        }
        if let Some(ip) = client_ip.and_then(|ip| HeaderValue::from_str(ip).ok()) {
            out.insert(HeaderName::from_static("x-forwarded-for"), ip);
        }
        if let Some(who) = who {
            self.attach(out, who)?;
        }
        Ok(request)
    }
}

/// The agent's refusal of the handshake, as it answered it.
fn relay_refusal(refusal: http::Response<Option<Vec<u8>>>) -> Response<Body> {
    let (parts, body) = refusal.into_parts();
    let mut response = Response::new(Body::from(body.unwrap_or_default()));
    *response.status_mut() = parts.status;
    *response.headers_mut() = headers::end_to_end(&parts.headers);
    response
}

/// axum's socket speaking tungstenite's message type, so one relay serves
/// both sides (and tests can drive it with plain tungstenite sockets).
fn client_messages(
    socket: ws::WebSocket,
) -> impl Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin {
    socket
        .with(|m: Message| {
            std::future::ready(
                to_axum(m).ok_or_else(|| axum::Error::new("raw frames are not relayed")),
            )
        })
        .map(|r| r.map(from_axum))
}

fn from_axum(m: ws::Message) -> Message {
    match m {
        ws::Message::Text(t) => Message::Text(utf8(Bytes::from(t))),
        ws::Message::Binary(b) => Message::Binary(b),
        ws::Message::Ping(b) => Message::Ping(b),
        ws::Message::Pong(b) => Message::Pong(b),
        ws::Message::Close(c) => Message::Close(c.map(|c| CloseFrame {
            code: CloseCode::from(c.code),
            reason: utf8(Bytes::from(c.reason)),
        })),
    }
}

fn to_axum(m: Message) -> Option<ws::Message> {
    let text =
        |t: Utf8Bytes| ws::Utf8Bytes::try_from(Bytes::from(t)).expect("tungstenite text is UTF-8");
    Some(match m {
        Message::Text(t) => ws::Message::Text(text(t)),
        Message::Binary(b) => ws::Message::Binary(b),
        Message::Ping(b) => ws::Message::Ping(b),
        Message::Pong(b) => ws::Message::Pong(b),
        Message::Close(c) => ws::Message::Close(c.map(|c| ws::CloseFrame {
            code: u16::from(c.code),
            reason: text(c.reason),
        })),
        Message::Frame(_) => return None,
    })
}

/// Text that was UTF-8 on one socket type is UTF-8 on the other.
fn utf8(bytes: Bytes) -> Utf8Bytes {
    Utf8Bytes::try_from(bytes).expect("axum text is UTF-8")
}

/// How one direction of the relay ended.
enum End {
    /// A close frame went through.
    Closed,
    /// The source went away (or errored) without a close frame.
    Lost,
}

/// Relays frames between `client` and `agent` until both directions end:
/// each close frame (code and reason) is passed on, a side that vanishes
/// without one makes the gateway close the other (1011 towards the client,
/// 1001 towards the agent), and after the first direction ends the other
/// gets [`CLOSE_GRACE`] to finish the close handshake.
pub async fn relay<C, CE, A, AE>(client: C, agent: A, inspector: &dyn FrameInspector)
where
    C: Stream<Item = Result<Message, CE>> + Sink<Message, Error = CE> + Unpin,
    A: Stream<Item = Result<Message, AE>> + Sink<Message, Error = AE> + Unpin,
    CE: std::fmt::Display,
    AE: std::fmt::Display,
{
    let (mut client_tx, mut client_rx) = client.split();
    let (mut agent_tx, mut agent_rx) = agent.split();
    // Refusal notices go to the client through the downstream half.
    let (notice_tx, mut notice_rx) = tokio::sync::mpsc::channel::<Message>(8);

    let upstream = async move {
        loop {
            let frame = match client_rx.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "client WebSocket failed");
                    let _ = agent_tx
                        .send(close(CloseCode::Away, "client went away"))
                        .await;
                    return End::Lost;
                }
                None => {
                    let _ = agent_tx
                        .send(close(CloseCode::Away, "client went away"))
                        .await;
                    return End::Lost;
                }
            };
            let is_close = matches!(frame, Message::Close(_));
            match inspector.inspect(&frame).await {
                Verdict::Forward => {
                    if agent_tx.send(frame).await.is_err() {
                        return End::Lost;
                    }
                }
                Verdict::Refuse(reason) if !is_close => {
                    let _ = notice_tx.send(refusal_event(&reason)).await;
                }
                Verdict::End(reason) if !is_close => {
                    let _ = notice_tx.send(refusal_event(&reason)).await;
                    let _ = notice_tx
                        .send(close(CloseCode::Policy, "credentials no longer valid"))
                        .await;
                    let _ = agent_tx
                        .send(close(CloseCode::Away, "client refused"))
                        .await;
                    return End::Closed;
                }
                // A close is never held back: the client is leaving anyway.
                Verdict::Refuse(_) | Verdict::End(_) => {
                    let _ = agent_tx.send(frame).await;
                }
            }
            if is_close {
                return End::Closed;
            }
        }
    };

    let downstream = async move {
        loop {
            let frame = tokio::select! {
                biased;
                Some(notice) = notice_rx.recv() => notice,
                next = agent_rx.next() => match next {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "agent WebSocket failed");
                        let _ = client_tx.send(close(CloseCode::Error, "agent connection lost")).await;
                        return End::Lost;
                    }
                    None => {
                        let _ = client_tx.send(close(CloseCode::Error, "agent connection lost")).await;
                        return End::Lost;
                    }
                },
            };
            let frame = match inspector.inspect_reply(&frame).await {
                Verdict::Forward => frame,
                Verdict::Refuse(reason) | Verdict::End(reason)
                    if !matches!(frame, Message::Close(_)) =>
                {
                    refusal_event(&reason)
                }
                Verdict::Refuse(_) | Verdict::End(_) => frame,
            };
            let is_close = matches!(frame, Message::Close(_));
            if client_tx.send(frame).await.is_err() {
                return End::Lost;
            }
            if is_close {
                return End::Closed;
            }
        }
    };

    tokio::pin!(upstream, downstream);
    let first = tokio::select! {
        end = &mut upstream => ("client", end),
        end = &mut downstream => ("agent", end),
    };
    let outcome = if matches!(first.1, End::Closed) {
        "closed"
    } else {
        "lost"
    };
    tracing::debug!(side = first.0, outcome, "WebSocket relay: first side done");
    if first.0 == "client" {
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut downstream).await;
    } else {
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut upstream).await;
    }
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// A refused frame's notice, shaped like the agent's own error chunks.
fn refusal_event(reason: &str) -> Message {
    Message::text(serde_json::json!({"event": "error", "data": {"reason": reason}}).to_string())
}

#[cfg(test)]
mod tests;
