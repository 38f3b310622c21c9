//! What a plugin declares it needs, checked by the server at load.

/// Returned by a plugin's `manifest` (called once at load and on every
/// reload, after `new` accepted the config). The server checks it against
/// what the operator granted in agentflow.json: a plugin asking for a
/// secret or a host it was not granted does not load, and the error names
/// the key to fix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Request headers the plugin reads credentials from; the server never
    /// forwards them to the agent.
    pub credential_headers: Vec<String>,
    /// `host:port` entries the plugin sends HTTP requests to; each must be
    /// in its `allowed_hosts`.
    pub outbound_hosts: Vec<String>,
    /// Secret names it reads; each must be in its `secrets`.
    pub secrets: Vec<String>,
    /// Whether it wants the request body ([`crate::Request::body`]); the
    /// operator caps how much with `body_kb`.
    pub wants_body: bool,
}

impl Manifest {
    /// A manifest that asks for nothing.
    pub fn new() -> Self {
        Manifest::default()
    }

    /// Declares a credential header (builder style).
    pub fn credential_header(mut self, name: &str) -> Self {
        self.credential_headers.push(name.to_ascii_lowercase());
        self
    }

    /// Declares an outbound `host:port` (builder style).
    pub fn outbound_host(mut self, host: &str) -> Self {
        self.outbound_hosts.push(host.to_owned());
        self
    }

    /// Declares a secret it reads (builder style).
    pub fn secret(mut self, name: &str) -> Self {
        self.secrets.push(name.to_owned());
        self
    }

    /// Asks for the request body (builder style).
    pub fn with_body(mut self) -> Self {
        self.wants_body = true;
        self
    }
}
