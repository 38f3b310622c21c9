//! The accept loop: HTTP/1 with a header-read timeout, a deadline on
//! request bodies, a cap on open connections that makes room by closing the
//! oldest one, and graceful shutdown with a bound.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::Request;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use super::deadline::DeadlineBody;
use crate::settings::ServerSettings;

/// How long a new connection waits for room when the cap is reached.
const ADMIT_WAIT: Duration = Duration::from_secs(2);
/// How often, while waiting, one more old connection is asked to close.
const ADMIT_STEP: Duration = Duration::from_millis(50);
/// Log "at capacity" at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Open connections, oldest first, each with the signal that asks it to close.
#[derive(Default)]
struct Connections {
    next_id: Mutex<u64>,
    open: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

impl Connections {
    /// Records a new connection; its id and close signal.
    fn register(&self) -> (u64, Arc<Notify>) {
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            *next
        };
        let close = Arc::new(Notify::new());
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, close.clone());
        crate::metrics::global().open_connections.inc();
        (id, close)
    }

    /// Forgets a finished connection.
    fn unregister(&self, id: u64) {
        let removed = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if removed.is_some() {
            crate::metrics::global().open_connections.dec();
        }
    }

    /// Asks the oldest connection not yet asked to close: an idle one (or
    /// one still sending its request head) closes at once, a busy one after
    /// its current response. Whether there was one.
    fn close_oldest(&self) -> bool {
        let oldest = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_first();
        oldest.map(|(_, close)| close.notify_one()).is_some()
    }

    /// Asks every connection to close (shutdown).
    fn close_all(&self) {
        let all = std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()));
        all.values().for_each(|close| close.notify_one());
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and gives open connections `settings.shutdown_timeout` to
/// finish. `max_connections` is the cap already fitted to the fd limit.
pub async fn run(
    listener: TcpListener,
    router: Router,
    settings: &ServerSettings,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    // hyper starts this timer whenever it waits for a request head: on a new
    // connection and after each response, so it bounds idle keep-alive too.
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    let http = Arc::new(http);
    let permits = Arc::new(Semaphore::new(max_connections));
    let connections = Arc::new(Connections::default());
    let mut last_warning: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors (or similar): make room and retry.
                    tracing::warn!(error = %e, "accepting a connection failed; closing the oldest connection");
                    connections.close_oldest();
                    tokio::time::sleep(ADMIT_STEP).await;
                    continue;
                }
            },
        };
        let Some(permit) = admit(&permits, &connections, &mut last_warning, max_connections).await
        else {
            tracing::debug!(%remote, "no room for a new connection; closed");
            continue;
        };
        let (id, close) = connections.register();
        let service = Service {
            router: router.clone(),
            remote,
            body_timeout: settings.body_timeout,
            in_flight: Arc::default(),
        };
        tokio::spawn(serve_connection(
            stream,
            service,
            http.clone(),
            close,
            connections.clone(),
            id,
            permit,
        ));
    }
    drop(listener);
    connections.close_all();
    let open = max_connections - permits.available_permits();
    if open > 0 {
        tracing::info!(open, "waiting for open connections to finish");
    }
    let everyone = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(settings.shutdown_timeout, permits.acquire_many(everyone))
        .await
        .is_err()
    {
        let open = max_connections - permits.available_permits();
        tracing::warn!(
            open,
            "connections still open after the shutdown timeout; closing them"
        );
    }
}

/// A permit for a new connection: at once if there is room, else after
/// asking the oldest connections to close, within [`ADMIT_WAIT`].
async fn admit(
    permits: &Arc<Semaphore>,
    connections: &Connections,
    last_warning: &mut Option<tokio::time::Instant>,
    max_connections: usize,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = permits.clone().try_acquire_owned() {
        return Some(permit);
    }
    if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
        tracing::warn!(
            max_connections,
            "connection cap reached: closing the oldest connections to make room (AGENTFLOW_MAX_CONNECTIONS)"
        );
        *last_warning = Some(tokio::time::Instant::now());
    }
    let give_up = tokio::time::Instant::now() + ADMIT_WAIT;
    while tokio::time::Instant::now() < give_up {
        connections.close_oldest();
        if let Ok(Ok(permit)) =
            tokio::time::timeout(ADMIT_STEP, permits.clone().acquire_owned()).await
        {
            return Some(permit);
        }
    }
    None
}

/// Serves one connection until it ends or is asked to close.
async fn serve_connection(
    stream: TcpStream,
    service: Service,
    http: Arc<http1::Builder>,
    close: Arc<Notify>,
    connections: Arc<Connections>,
    id: u64,
    _permit: OwnedSemaphorePermit,
) {
    // Small JSON answers go out without waiting for Nagle's timer.
    let _ = stream.set_nodelay(true);
    let in_flight = service.in_flight.clone();
    let conn = http
        .serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| service.call(req)),
        )
        .with_upgrades();
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = close.notified(), if !closing => {
                // Idle, or still sending its request head (a slowloris, which
                // hyper's graceful shutdown would wait for): drop it now.
                if in_flight.load(Ordering::Acquire) == 0 {
                    break;
                }
                // Busy: finish the current response, then close.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    connections.unregister(id);
}

/// The router as seen from one connection: each request gets the peer
/// address (`ConnectInfo`) and a deadline on its body.
#[derive(Clone)]
struct Service {
    router: Router,
    remote: SocketAddr,
    body_timeout: Duration,
    /// Requests of this connection whose response is not fully sent yet.
    in_flight: Arc<AtomicUsize>,
}

impl Service {
    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<Response, std::convert::Infallible>> + use<> {
        let guard = InFlight::enter(&self.in_flight);
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.remote));
        // Bodiless requests (most GETs) skip the wrapper and its timer.
        let body = if body.is_end_stream() {
            Body::new(body)
        } else {
            Body::new(DeadlineBody::new(
                body,
                tokio::time::Instant::now() + self.body_timeout,
            ))
        };
        let response = self
            .router
            .clone()
            .oneshot(Request::from_parts(parts, body));
        async move {
            let response = response.await?;
            // The request stays in flight until hyper has sent (and dropped) the body.
            Ok(response.map(|inner| {
                Body::new(GuardedBody {
                    inner,
                    _guard: guard,
                })
            }))
        }
    }
}

/// Counts a request as in flight while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted until it is dropped.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Errors that concern one connection only (the peer went away early).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_connection_is_asked_to_close_first_and_once() {
        let c = Connections::default();
        let (first, close_first) = c.register();
        let (_second, close_second) = c.register();
        assert!(c.close_oldest());
        // The signal is stored, so a connection busy elsewhere still sees it.
        tokio::time::timeout(Duration::from_millis(100), close_first.notified())
            .await
            .expect("oldest asked to close");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), close_second.notified())
                .await
                .is_err()
        );
        c.unregister(first);
        assert!(c.close_oldest());
        assert!(!c.close_oldest(), "nothing left to ask");
    }

    #[tokio::test]
    async fn close_all_reaches_every_connection() {
        let c = Connections::default();
        let signals: Vec<_> = (0..3).map(|_| c.register().1).collect();
        c.close_all();
        for s in signals {
            tokio::time::timeout(Duration::from_millis(100), s.notified())
                .await
                .expect("asked to close");
        }
        assert!(!c.close_oldest());
    }
}
