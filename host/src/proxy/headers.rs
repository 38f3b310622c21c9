//! Which client headers reach the agent. Names are compared after
//! lower-casing and mapping `_` to `-`: WSGI/CGI servers fold
//! `x_agentflow_user_id` and `X-AgentFlow-User-Id` into one variable, so
//! both spellings are the same header to us.

use http::header::{self, HeaderMap};

/// Connection-level headers (RFC 9110 §7.6.1); never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Client headers the agent never sees: what the client's transport
/// computed, the client's credentials (the agent gets the identity
/// instead), address claims (the host sets `x-forwarded-for` itself), and
/// overrides that would let an agent act on another method or path than
/// the one authorized.
const NEVER_FORWARDED: &[&str] = &[
    "host",
    "content-length",
    "authorization",
    "x-api-key",
    "cookie",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    // The AgentFlow server reads `agentflow-bearer, <token>` here as a
    // credential, even on plain HTTP.
    "sec-websocket-protocol",
];

/// Header families the host owns (`x-agentflow-*`) or that claim
/// forwarding facts (`x-forwarded-*`).
const NEVER_FORWARDED_PREFIXES: &[&str] = &["x-agentflow-", "x-forwarded-"];

/// The forwarding rule of one server: the built-in list plus the
/// `credential_headers` its plugins declared.
#[derive(Debug, Clone, Default)]
pub struct HeaderPolicy {
    /// Declared credential headers, normalized.
    credentials: Vec<String>,
}

impl HeaderPolicy {
    /// A policy that also strips `credential_headers` (any spelling).
    pub fn new<S: AsRef<str>>(credential_headers: impl IntoIterator<Item = S>) -> Self {
        let mut credentials: Vec<String> = credential_headers
            .into_iter()
            .map(|n| normalize(n.as_ref()))
            .collect();
        credentials.sort();
        credentials.dedup();
        HeaderPolicy { credentials }
    }

    /// Whether a client header called `name` may reach the agent.
    pub fn forwards(&self, name: &str) -> bool {
        !(is_hop_by_hop(name)
            || NEVER_FORWARDED.iter().any(|n| same_name(name, n))
            || NEVER_FORWARDED_PREFIXES.iter().any(|p| has_prefix(name, p))
            || self.credentials.iter().any(|n| same_name(name, n)))
    }

    /// The client headers the agent may see.
    pub fn filter(&self, client: &HeaderMap) -> HeaderMap {
        let listed = connection_named(client);
        let mut out = HeaderMap::with_capacity(client.len());
        for (name, value) in client {
            let name_str = name.as_str();
            if self.forwards(name_str) && !listed.iter().any(|l| same_name(name_str, l)) {
                out.append(name.clone(), value.clone());
            }
        }
        out
    }
}

/// The upstream's response headers without hop-by-hop ones.
pub fn end_to_end(upstream: &HeaderMap) -> HeaderMap {
    let listed = connection_named(upstream);
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        let name_str = name.as_str();
        if !is_hop_by_hop(name_str) && !listed.iter().any(|l| same_name(name_str, l)) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|n| same_name(name, n))
}

/// Headers named in `Connection` are hop-by-hop too.
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| normalize(n.trim()))
        .filter(|n| !n.is_empty())
        .collect()
}

fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

fn normalize(name: &str) -> String {
    name.bytes().map(|b| fold(b) as char).collect()
}

/// `a` and `b` name the same header once case and `_`/`-` are folded.
fn same_name(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

fn has_prefix(name: &str, prefix: &str) -> bool {
    name.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| same_bytes(head, prefix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_identity_and_forwarding_headers_in_any_spelling() {
        let p = HeaderPolicy::default();
        for name in [
            "x-agentflow-user-id",
            "x_agentflow_user_id",
            "X_AgentFlow-Roles",
            "x-forwarded-for",
            "x_forwarded_host",
            "X_FORWARDED_PROTO",
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "authorization",
            "x_api_key",
            "cookie",
            "transfer_encoding",
            "x-http-method-override",
            "x_original_url",
        ] {
            assert!(!p.forwards(name), "{name}");
        }
        for name in [
            "content-type",
            "accept",
            "x-custom",
            "x-agentflowish",
            "user-agent",
            "x-token",
        ] {
            assert!(p.forwards(name), "{name}");
        }
    }

    #[test]
    fn strips_declared_credential_headers_in_any_spelling() {
        let p = HeaderPolicy::new(["X-Token", "x_session"]);
        for name in ["x-token", "x_token", "x-session", "x_session"] {
            assert!(!p.forwards(name), "{name}");
        }
        assert!(p.forwards("x-tokens"));
    }

    #[test]
    fn filter_drops_headers_named_in_connection() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, X_Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("2"));
        let out = HeaderPolicy::default().filter(&h);
        assert_eq!(out.len(), 1);
        assert_eq!(out["x-kept"], "2");
    }
}
