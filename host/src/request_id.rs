//! Request ids: every response carries `x-request-id` (a well-formed one the
//! client sent, or a fresh one), the id is forwarded to the agent, log lines
//! written while the request runs name it, and refusals quote it in their
//! AgentFlow envelope (`metadata.request_id`).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use http::header::HeaderName;
use tracing::Instrument as _;

/// The header that carries the id, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent id that is echoed; longer ones are replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Middleware (outermost): settles the id, runs the request inside a span
/// that names it, and stamps it on the response.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_well_formed(v))
        .map(str::to_owned)
        .unwrap_or_else(generate);
    let value =
        HeaderValue::from_str(&id).expect("ids are checked or generated as header-safe text");
    // Replaces every client copy, so the agent sees exactly the id we log.
    req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    let span = tracing::info_span!("request", request_id = %id);
    let method = req.method().clone();
    let mut response = CURRENT
        .scope(id, async move {
            let response = next.run(req).await;
            tracing::debug!(%method, status = response.status().as_u16(), "answered");
            response
        })
        .instrument(span)
        .await;
    response.headers_mut().insert(REQUEST_ID_HEADER, value);
    response
}

/// Client ids are echoed only when short and made of characters that are
/// safe in headers and logs (letters, digits, `-`, `_`, `.`, `:`).
fn is_well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A random UUID (version 4), the form the AgentFlow server uses.
fn generate() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // Written by hand rather than with `format!`: this runs on every request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_only_safe_ids() {
        assert!(is_well_formed("abc-123_x.y:z"));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed("a b"));
        assert!(!is_well_formed("a\"b"));
        assert!(!is_well_formed("<script>"));
        assert!(!is_well_formed(&"a".repeat(MAX_LEN + 1)));
    }

    #[test]
    fn generated_ids_are_uuid_v4() {
        let id = generate();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(is_well_formed(&id));
        assert_ne!(generate(), id);
    }
}
