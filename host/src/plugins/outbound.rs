//! Outbound HTTP for plugins: standard `wasi:http`, allowed only to the
//! `host:port` entries listed in the plugin's `allowed_hosts`, and never
//! past the call's deadline.
//!
//! The check runs in the wasi-http send hook, before any connection is
//! made: a request to any other host fails inside the plugin with
//! `HTTP-request-denied` and never reaches the network. A denial is
//! logged with the scheme and host only (a path or query may carry a
//! token), within the plugin's log allowance.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::log_limit::{self, LogLimiter};

/// The hosts one plugin may reach: its `allowed_hosts`, parsed once when
/// the config is loaded (the only place entries are checked) and handed
/// here as this type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Lower-case host and port of each entry.
    entries: Vec<(String, u16)>,
}

impl AllowList {
    /// Parses `host:port` entries. A bad entry fails the whole list: the
    /// error is its index and a reason saying how to write it.
    pub fn parse(entries: &[String]) -> Result<AllowList, (usize, String)> {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, e)| parse_entry(e).map_err(|reason| (i, reason)))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    /// Adds more `host:port` entries (e.g. `--allow-host` on the command
    /// line); a bad one is refused with its index among `more`.
    pub fn extend_parsed(&mut self, more: &[String]) -> Result<(), (usize, String)> {
        self.entries.extend(AllowList::parse(more)?.entries);
        Ok(())
    }

    /// Whether a request to `host` on `port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.entries.iter().any(|(h, p)| *h == host && *p == port)
    }

    /// Whether `entry` (`host:port`, as a plugin's manifest lists the hosts
    /// it calls) is on the list; an entry that does not parse is not.
    pub fn contains(&self, entry: &str) -> bool {
        parse_entry(entry).is_ok_and(|(host, port)| self.allows(&host, port))
    }

    /// Whether the plugin may make any request at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One `host:port` entry, the host lower-cased.
fn parse_entry(entry: &str) -> Result<(String, u16), String> {
    let hint = "write it as host:port, e.g. \"127.0.0.1:9100\" or \"auth.example.com:443\"";
    if entry.contains("://") || entry.contains('/') {
        return Err(format!("{entry:?} is not host:port ({hint})"));
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) => Ok((host.to_ascii_lowercase(), port)),
            Err(_) => Err(format!("{entry:?} is not host:port ({hint})")),
        },
        _ => Err(format!("{entry:?} is not host:port ({hint})")),
    }
}

/// The target of a request URI as the allow-list compares it; `None` when
/// the URI names no host. A missing port is the scheme's default.
fn target(uri: &http::Uri) -> Option<(String, u16)> {
    let host = uri.host()?.to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Some((host, port))
}

/// What a denial log line shows of a request URI: `scheme://host:port`,
/// never the path or query (they may carry tokens), escaped and cut like
/// any text a plugin chooses.
fn origin(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("(no scheme)");
    let origin = match (uri.host(), uri.port_u16()) {
        (Some(host), Some(port)) => format!("{scheme}://{host}:{port}"),
        (Some(host), None) => format!("{scheme}://{host}"),
        (None, _) => "(no host)".to_owned(),
    };
    log_limit::sanitize(&origin, 300)
}

/// The wasi-http hooks of one call: the allow-list, the deadline, and the
/// plugin's log allowance (denials are logged).
pub(crate) struct OutboundPolicy {
    plugin: String,
    allowed: AllowList,
    log: Arc<LogLimiter>,
    deadline: Instant,
}

impl OutboundPolicy {
    /// A policy for one call of `plugin` ending at `deadline`.
    pub fn new(
        plugin: String,
        allowed: AllowList,
        log: Arc<LogLimiter>,
        deadline: Instant,
    ) -> Self {
        OutboundPolicy {
            plugin,
            allowed,
            log,
            deadline,
        }
    }

    /// Moves the deadline (a reused sandbox's next call).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

/// wasmtime's own sender, reached through the trait's default method.
struct DefaultSender;

impl WasiHttpHooks for DefaultSender {}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let allowed =
            target(request.uri()).is_some_and(|(host, port)| self.allowed.allows(&host, port));
        if !allowed {
            let target = origin(request.uri());
            // A plugin can retry in a loop: its denials share its log allowance.
            if self.log.admit_host_line(target.len() + 100) {
                tracing::warn!(
                    plugin = %self.plugin,
                    target = %target,
                    "outbound HTTP request denied: the host is not in this plugin's \"allowed_hosts\""
                );
            }
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        // wasmtime's defaults wait up to 600 s; a plugin call has far less.
        let remaining = self
            .deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let clamp = |t: Option<Duration>| Some(t.map_or(remaining, |t| t.min(remaining)));
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: clamp(options.connect_timeout),
            first_byte_timeout: clamp(options.first_byte_timeout),
            between_bytes_timeout: clamp(options.between_bytes_timeout),
        };
        DefaultSender.send_request(request, Some(options), fut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_only_listed_host_and_port() {
        let list =
            AllowList::parse(&["127.0.0.1:9100".into(), "Auth.Example.com:443".into()]).unwrap();
        assert!(list.allows("127.0.0.1", 9100));
        assert!(list.allows("auth.example.com", 443));
        assert!(!list.allows("127.0.0.1", 9101));
        assert!(!list.allows("localhost", 9100));
        assert!(!list.allows("auth.example.com", 80));
        assert!(list.contains("AUTH.example.com:443"));
        assert!(!list.contains("auth.example.com"));
        assert!(AllowList::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_bad_entry_fails_the_list_naming_it() {
        for bad in [
            "https://auth.example.com",
            "auth.example.com",
            "auth.example.com:https",
            ":443",
            "host:70000",
            "host/path:80",
        ] {
            let entries = vec!["127.0.0.1:9100".to_owned(), bad.to_owned()];
            let (i, reason) = AllowList::parse(&entries).unwrap_err();
            assert_eq!(i, 1, "{bad}");
            assert!(reason.contains("host:port"), "{bad}: {reason}");
        }
    }

    #[test]
    fn default_ports_follow_the_scheme() {
        let t = |u: &str| target(&u.parse().unwrap());
        assert_eq!(
            t("https://auth.example.com/introspect"),
            Some(("auth.example.com".into(), 443))
        );
        assert_eq!(
            t("http://auth.example.com/x"),
            Some(("auth.example.com".into(), 80))
        );
        assert_eq!(
            t("http://127.0.0.1:9100/x"),
            Some(("127.0.0.1".into(), 9100))
        );
        assert_eq!(t("/relative"), None);
    }

    #[test]
    fn denials_show_the_origin_only() {
        let o = |u: &str| origin(&u.parse().unwrap());
        assert_eq!(
            o("https://auth.example.com/introspect?token=s3cret"),
            "https://auth.example.com"
        );
        assert_eq!(o("http://127.0.0.1:9/a/b?c=d#e"), "http://127.0.0.1:9");
        assert_eq!(o("/relative?token=s3cret"), "(no host)");
    }
}
