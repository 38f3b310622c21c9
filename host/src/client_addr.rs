//! The client's address, resolved once per request: the peer address, or —
//! only when the peer is one of the `trusted_proxies` — the address those
//! proxies recorded in `Forwarded` (RFC 7239) or `X-Forwarded-For`.
//!
//! Everything keyed on the client address (login throttling and lockouts,
//! rate limits, plugins' `client-ip`, the agent's `x-forwarded-for`) reads
//! the one [`ClientAddr`] this module puts on the request. Forwarding headers
//! are never believed by default: with no `trusted_proxies` a client could
//! otherwise pick any address it likes and escape every per-address limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderMap;
use ipnet::IpNet;
use serde_json::Value;

/// The resolved client address of a request (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The networks whose forwarding headers are believed (`trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses `trusted_proxies`: a list of CIDRs (`"10.0.0.0/8"`) or single
    /// addresses (`"127.0.0.1"`, `"::1"`); `null`/absent trusts nobody.
    /// Mistakes are `(key, reason)`.
    pub fn from_config(raw: &Value) -> Result<TrustedProxies, (String, String)> {
        let items = match raw {
            Value::Null => return Ok(TrustedProxies::default()),
            Value::Array(items) => items,
            _ => {
                return Err((
                    "trusted_proxies".into(),
                    "must be a list of CIDRs like [\"10.0.0.0/8\", \"127.0.0.1\"]".into(),
                ));
            }
        };
        let nets = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let key = format!("trusted_proxies[{i}]");
                let text = item
                    .as_str()
                    .ok_or_else(|| (key.clone(), "must be a string like \"10.0.0.0/8\"".into()))?;
                parse_net(text).ok_or_else(|| {
                    (
                        key,
                        format!("{text:?} is not an IP address or CIDR like \"10.0.0.0/8\""),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { nets })
    }

    /// Trusts exactly `nets` (for tests and embedding).
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { nets }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is trusted; then
    /// the forwarding chain is walked from the nearest hop outwards, each
    /// trusted hop vouching for the one before it, and the first address
    /// that is not trusted is the client. A hop that is not an address
    /// (`unknown`, an obfuscated name, garbage) ends the walk at the
    /// trusted proxy that wrote it: its own address is the safest key left.
    /// `Forwarded` wins over `X-Forwarded-For` when a proxy sent both.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if self.nets.is_empty() || !self.contains(client) {
            return client;
        }
        let hops = forwarded_hops(headers);
        for hop in hops.iter().rev() {
            if !self.contains(client) {
                break;
            }
            match hop {
                Some(ip) => client = ip.to_canonical(),
                None => break,
            }
        }
        client
    }
}

/// A CIDR, or a single address as a /32 or /128.
fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// The hops the proxies recorded, client first, nearest proxy last; `None`
/// for an entry that is not an address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<_> = headers.get_all(http::header::FORWARDED).iter().collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| split_list(v.to_str().ok()))
            .map(forwarded_for)
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| split_list(v.to_str().ok()))
        .map(parse_hop)
        .collect()
}

/// The comma-separated elements of one header line (a line that is not
/// text counts as one bad element, so it still ends the walk).
fn split_list(value: Option<&str>) -> Vec<&str> {
    match value {
        Some(v) => v.split(',').map(str::trim).collect(),
        None => vec![""],
    }
}

/// The `for=` node of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_hop(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// Middleware (outside every route): puts the resolved [`ClientAddr`] on
/// the request. Served without a peer address (a router in a test), no
/// address is recorded and per-address checks share one `unknown` key.
pub async fn resolve(
    State(trusted): State<Arc<TrustedProxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let client = trusted.resolve(peer.ip(), req.headers());
        req.extensions_mut().insert(ClientAddr(client));
    }
    next.run(req).await
}

/// The resolved client address of `req`, if it has one.
pub fn of(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ClientAddr>().map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::from_config(&json!(nets)).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nobody_is_trusted_by_default() {
        let t = TrustedProxies::from_config(&Value::Null).unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        assert_eq!(t.resolve(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(t.resolve(ip("192.0.2.9"), &h), ip("192.0.2.9"));
    }

    #[test]
    fn the_chain_is_walked_from_the_right_through_trusted_hops_only() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        // The client forged "6.6.6.6"; 198.51.100.7 is what our proxies saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(t.resolve(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(t.resolve(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // Every hop trusted: the farthest one is the client.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(t.resolve(ip("127.0.0.1"), &h), ip("10.9.9.9"));
    }

    #[test]
    fn garbage_stops_at_the_proxy_that_wrote_it() {
        let t = trusted(&["127.0.0.1/32"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4, not-an-ip")]);
        assert_eq!(t.resolve(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        let h = headers(&[("x-forwarded-for", "")]);
        assert_eq!(t.resolve(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn forwarded_is_read_and_wins_over_x_forwarded_for() {
        let t = trusted(&["::1", "127.0.0.0/8"]);
        let h = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\"",
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(t.resolve(ip("::1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(t.resolve(ip("127.0.0.2"), &h), ip("127.0.0.2"));
        let h = headers(&[("forwarded", "for=192.0.2.60:8080")]);
        assert_eq!(t.resolve(ip("127.0.0.2"), &h), ip("192.0.2.60"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let t = trusted(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(t.resolve(ip("::ffff:127.0.0.1"), &h), ip("203.0.113.5"));
    }

    #[test]
    fn config_mistakes_name_the_entry() {
        let e = TrustedProxies::from_config(&json!(["10.0.0.0/8", "10.0.0.0/33"])).unwrap_err();
        assert_eq!(e.0, "trusted_proxies[1]");
        let e = TrustedProxies::from_config(&json!("10.0.0.0/8")).unwrap_err();
        assert_eq!(e.0, "trusted_proxies");
        let e = TrustedProxies::from_config(&json!([8])).unwrap_err();
        assert_eq!(e.0, "trusted_proxies[0]");
    }
}
