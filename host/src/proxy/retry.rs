//! When a request to the agent may be sent a second time.
//!
//! A kept-alive connection can die under a request: the agent (uvicorn)
//! resets its connection after some of its own 500s, and the next request
//! the pool hands that connection fails before any answer. Such a request
//! is sent once more on a fresh connection, but only when doing it twice is
//! harmless: an idempotent method (never POST or PATCH) and a body the host
//! holds in memory (never a stream it has already consumed), and only when
//! the error says the connection was lost, not that the agent was slow.

use std::error::Error;
use std::io::ErrorKind;

use http::Method;

/// Methods that HTTP defines as idempotent, the ones a lost request may be
/// replayed for.
pub fn may_resend(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(method)
}

/// Whether `error` means no answer came because the connection could not be
/// made or was closed or reset under the request. Timeouts are not: the
/// agent may still be working on it, and waiting twice helps nobody.
pub fn connection_lost(error: &reqwest::Error) -> bool {
    !error.is_timeout() && (error.is_connect() || lost_in_chain(error))
}

/// Walks `error` and its sources for a connection that ended early.
fn lost_in_chain(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            // "connection closed before message completed" / the pooled
            // connection was gone before the request was dispatched.
            if e.is_incomplete_message() || e.is_canceled() {
                return true;
            }
        }
        if let Some(e) = e.downcast_ref::<std::io::Error>() {
            let lost = [
                ErrorKind::ConnectionReset,
                ErrorKind::ConnectionAborted,
                ErrorKind::BrokenPipe,
            ];
            if lost.contains(&e.kind()) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn only_idempotent_methods_are_resent() {
        for m in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"] {
            assert!(
                may_resend(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in ["POST", "PATCH", "CONNECT", "TRACE", "PROPFIND"] {
            assert!(
                !may_resend(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
    }

    /// What to do with a connection after reading the request head.
    #[derive(Clone, Copy)]
    enum Agent {
        Close,
        Reset,
        Hang,
        Garbage,
    }

    /// The error a GET gets from an agent on loopback that behaves as `agent`.
    async fn error_from(agent: Agent) -> reqwest::Error {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/threads", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            match agent {
                Agent::Close => drop(conn),
                Agent::Reset => {
                    conn.set_zero_linger().unwrap();
                    drop(conn);
                }
                Agent::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
                Agent::Garbage => {
                    use tokio::io::AsyncWriteExt;
                    conn.write_all(b"HTTP/1.1 abc\r\n\r\n").await.unwrap();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        client
            .get(url)
            .send()
            .await
            .expect_err("the agent answers nothing valid")
    }

    #[tokio::test]
    async fn a_connection_closed_or_reset_under_the_request_is_lost() {
        assert!(connection_lost(&error_from(Agent::Close).await));
        assert!(connection_lost(&error_from(Agent::Reset).await));
    }

    #[tokio::test]
    async fn a_refused_connection_is_lost() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = reqwest::get(format!("http://{addr}/")).await.unwrap_err();
        assert!(connection_lost(&e), "{e:?}");
    }

    #[tokio::test]
    async fn slow_or_broken_answers_are_not_resent() {
        assert!(!connection_lost(&error_from(Agent::Hang).await));
        assert!(!connection_lost(&error_from(Agent::Garbage).await));
    }

    #[test]
    fn the_source_chain_is_searched() {
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl Error for Wrapped {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = |kind| Wrapped(std::io::Error::from(kind));
        assert!(lost_in_chain(&io(ErrorKind::ConnectionReset)));
        assert!(lost_in_chain(&io(ErrorKind::BrokenPipe)));
        assert!(!lost_in_chain(&io(ErrorKind::TimedOut)));
        assert!(!lost_in_chain(&io(ErrorKind::InvalidData)));
    }
}
