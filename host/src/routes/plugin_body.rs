//! The request body for plugins whose manifest asks for it (contract 0.3):
//! read before authentication up to the largest cap an operator gave any of
//! them, and put back in front of the rest of the stream, so the agent
//! still receives every byte. A longer body is not buffered past the cap:
//! the plugins are told it was too large.

use axum::body::Body;
use axum::extract::Request;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyExt;

use crate::error::ApiError;
use crate::plugins::BufferedBody;

/// Reads up to `cap` bytes of `req`'s body (nothing when `cap` is 0) and
/// returns the request, body intact, with what was read.
pub async fn read(req: Request, cap: usize) -> Result<(Request, Option<BufferedBody>), ApiError> {
    if cap == 0 {
        return Ok((req, None));
    }
    let (parts, mut body) = req.into_parts();
    let mut read = BytesMut::new();
    let complete = loop {
        match body.frame().await {
            None => break true,
            Some(Err(e)) => {
                return Err(ApiError::BadRequest(format!(
                    "cannot read the request body: {e}"
                )));
            }
            Some(Ok(frame)) => {
                // Trailers carry nothing a plugin is shown.
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                    if read.len() > cap {
                        break false;
                    }
                }
            }
        }
    };
    let read = read.freeze();
    let (rebuilt, seen) = if complete {
        (Body::from(read.clone()), read)
    } else {
        let prefix = futures_util::stream::once(async move { Ok::<Bytes, axum::Error>(read) });
        let rest = body.into_data_stream();
        (Body::from_stream(prefix.chain(rest)), Bytes::new())
    };
    Ok((
        Request::from_parts(parts, rebuilt),
        Some(BufferedBody {
            bytes: seen,
            complete,
        }),
    ))
}
