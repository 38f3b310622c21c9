//! The request a plugin is asked about, with the header helpers every
//! plugin needs.

use crate::bindings::wit;

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
    /// The peer's IP address when the host knows it.
    pub client_ip: Option<String>,
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

impl From<wit::Request> for Request {
    fn from(r: wit::Request) -> Self {
        Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            client_ip: r.client_ip,
        }
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
    fn bearer_token_needs_the_bearer_scheme() {
        let bearer = |v: &str| Request::new("GET", "/").with_header("Authorization", v);
        assert_eq!(bearer("Bearer abc").bearer_token(), Some("abc"));
        assert_eq!(bearer("bearer  abc ").bearer_token(), Some("abc"));
        assert_eq!(bearer("Basic abc").bearer_token(), None);
        assert_eq!(bearer("Bearer ").bearer_token(), None);
        assert_eq!(bearer("Bearer").bearer_token(), None);
    }
}
