//! Outbound HTTP from a plugin, over standard `wasi:http`.
//!
//! The server lets a plugin reach only the `host:port` entries listed in
//! its `"allowed_hosts"`; any other request fails with an error whose
//! [`HttpError::is_denied`] is true, and never reaches the network. Calls
//! block the plugin (a plugin call is one synchronous question), and count
//! against the plugin's time limit.
//!
//! ```no_run
//! use agentflow_plugin_sdk::http::HttpRequest;
//!
//! let resp = HttpRequest::post("http://127.0.0.1:9100/introspect")
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .body("token=abc")
//!     .send()?;
//! if resp.status == 200 {
//!     let answer: serde_json::Value = resp.json()?;
//! }
//! # Ok::<(), agentflow_plugin_sdk::http::HttpError>(())
//! ```

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// Largest response body read, so a hostile server cannot exhaust memory.
pub const MAX_RESPONSE_BODY: usize = 4 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    message: String,
    denied: bool,
}

impl HttpError {
    fn new(message: impl Into<String>) -> Self {
        HttpError {
            message: message.into(),
            denied: false,
        }
    }

    /// Whether the server refused the request because the host is not in
    /// this plugin's `allowed_hosts`.
    pub fn is_denied(&self) -> bool {
        self.denied
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpError {}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> Self {
        let denied = matches!(code, ErrorCode::HttpRequestDenied);
        let message = if denied {
            "request denied: the host is not in this plugin's \"allowed_hosts\"".to_owned()
        } else {
            format!("request failed: {code:?}")
        };
        HttpError { message, denied }
    }
}

/// An outgoing request, built in builder style and sent with [`HttpRequest::send`].
#[derive(Debug, Clone)]
pub struct HttpRequest {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A response, with its body read in full.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Parses the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::new(format!("response is not the expected JSON: {e}")))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl HttpRequest {
    /// A request with any method.
    pub fn new(method: &str, url: &str) -> Self {
        HttpRequest {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<HttpResponse, HttpError> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
            .collect();
        let fields = Fields::from_list(&entries)
            .map_err(|e| HttpError::new(format!("invalid header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        };
        let invalid = |what: &str| HttpError::new(format!("invalid {what} in {:?}", self.url));
        request.set_method(&method).map_err(|_| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|_| invalid("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|_| invalid("host"))?;
        request
            .set_path_with_query(Some(path))
            .map_err(|_| invalid("path"))?;
        let body = request
            .body()
            .map_err(|_| HttpError::new("request body already taken"))?;
        let pending = outgoing_handler::handle(request, None)?;
        write_body(&body, &self.body)?;
        OutgoingBody::finish(body, None)?;

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(result)) => result?,
            _ => return Err(HttpError::new("no response")),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let incoming = response
            .consume()
            .map_err(|_| HttpError::new("response body already taken"))?;
        let stream = incoming
            .stream()
            .map_err(|_| HttpError::new("response body already taken"))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_RESPONSE_BODY {
                        return Err(HttpError::new(format!(
                            "response body larger than {MAX_RESPONSE_BODY} bytes"
                        )));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::new(format!(
                        "reading the response failed: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), HttpError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let stream = body
        .write()
        .map_err(|_| HttpError::new("request body already written"))?;
    // wasi:io allows at most 4096 bytes per blocking write.
    for chunk in bytes.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| HttpError::new(format!("sending the body failed: {e:?}")))?;
    }
    Ok(())
}

/// `scheme://authority/path?query` into its parts (path defaults to `/`).
fn split_url(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::new(format!("{url:?} is not an absolute URL")))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(HttpError::new(format!(
                "unsupported scheme {other:?} in {url:?}"
            )));
        }
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::new(format!("{url:?} names no host")));
    }
    Ok((scheme, authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let (s, a, p) = split_url("http://127.0.0.1:9100/introspect?x=1").unwrap();
        assert!(matches!(s, Scheme::Http));
        assert_eq!((a, p), ("127.0.0.1:9100", "/introspect?x=1"));
        let (s, a, p) = split_url("https://auth.example.com").unwrap();
        assert!(matches!(s, Scheme::Https));
        assert_eq!((a, p), ("auth.example.com", "/"));
        assert!(split_url("ftp://x/").is_err());
        assert!(split_url("/relative").is_err());
        assert!(split_url("http:///x").is_err());
    }
}
