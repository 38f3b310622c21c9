//! The request a plugin is asked about, with the header helpers every
//! plugin needs.

use crate::Error;

/// What the plugin may see of the request body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Body {
    /// The plugin did not ask for it ([`crate::Manifest::wants_body`]).
    #[default]
    NotRequested,
    /// The whole body (empty when the request has none).
    Complete(Vec<u8>),
    /// Larger than the operator lets this plugin see (`body_kb`); the
    /// value is that cap in bytes.
    TooLarge(u32),
}

/// The HTTP request being authenticated or authorized.
///
/// Header names are lower-case; [`Request::header`] compares
/// case-insensitively anyway, so `req.header("X-API-Key")` works.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Upper-case HTTP method, e.g. `POST`.
    pub method: String,
    /// The path without the query string, e.g. `/v1/graph/invoke`.
    pub path: String,
    /// The raw query string without the leading `?`.
    pub query: String,
    /// Headers in arrival order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The client's IP address when the host knows it.
    pub client_ip: Option<String>,
    /// The body, when the plugin's manifest asked for it.
    pub body: Body,
}

impl Request {
    /// A request with the given method and path and nothing else; handy in
    /// unit tests together with [`Request::with_header`].
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            ..Default::default()
        }
    }

    /// Adds a header (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the body (builder style, for tests).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Complete(body.into());
        self
    }

    /// The body bytes; an error when the plugin did not ask for the body
    /// or it is over the operator's cap.
    pub fn body(&self) -> Result<&[u8], Error> {
        match &self.body {
            Body::Complete(b) => Ok(b),
            Body::NotRequested => Err(Error::msg(
                "the request body was not requested: return a manifest with wants_body",
            )),
            Body::TooLarge(cap) => Err(Error::msg(format!(
                "the request body is larger than this plugin may see ({cap} bytes)"
            ))),
        }
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(self.body()?)
            .map_err(|e| Error::msg(format!("the request body is not the JSON expected: {e}")))
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, compared case-insensitively.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The token of an `Authorization: Bearer <token>` header (scheme matched
    /// case-insensitively, RFC 6750); `None` when absent, another scheme, or
    /// empty.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case() {
        let req = Request::new("GET", "/").with_header("X-API-Key", "k1");
        assert_eq!(req.header("x-api-key"), Some("k1"));
        assert_eq!(req.header("X-Api-KEY"), Some("k1"));
        assert_eq!(req.header("authorization"), None);
    }

    #[test]
    fn the_body_is_read_only_when_present() {
        #[derive(serde::Deserialize)]
        struct Hook {
            event: String,
        }
        let req = Request::new("POST", "/hook").with_body(r#"{"event":"push"}"#);
        assert_eq!(req.json::<Hook>().unwrap().event, "push");
        assert!(Request::new("POST", "/").body().is_err());
        let mut big = Request::new("POST", "/");
        big.body = Body::TooLarge(1024);
        assert!(big.body().unwrap_err().message().contains("1024"));
    }

    #[test]
    fn bearer_token_needs_the_bearer_scheme() {
        let bearer = |v: &str| Request::new("GET", "/").with_header("Authorization", v);
        assert_eq!(bearer("Bearer abc").bearer_token(), Some("abc"));
        assert_eq!(bearer("bearer  abc ").bearer_token(), Some("abc"));
        assert_eq!(bearer("Basic abc").bearer_token(), None);
        assert_eq!(bearer("Bearer ").bearer_token(), None);
        assert_eq!(bearer("Bearer").bearer_token(), None);
    }
}
