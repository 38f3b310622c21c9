//! Route classes: the few groups of routes that rate limits are configured
//! for (and that metrics label requests with), so neither depends on raw
//! paths, whose number is unbounded.

/// Which group a request path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `/v1/login`, `/v1/refresh`, `/v1/logout`, `/v1/auto_login`: where
    /// passwords and refresh tokens are guessed.
    Login,
    /// The gateway's own API: users, API keys, variables, whoami, plugins,
    /// the JWKS.
    Account,
    /// Forward-auth checks (`/v1/auth/verify`).
    Verify,
    /// Everything proxied to the agent.
    Agent,
    /// Health and operations: `/ping`, `/ready`, `/metrics` (never limited).
    Ops,
}

impl RouteClass {
    /// Every class, in the order config keys are documented.
    pub const ALL: [RouteClass; 5] = [
        RouteClass::Login,
        RouteClass::Account,
        RouteClass::Verify,
        RouteClass::Agent,
        RouteClass::Ops,
    ];

    /// The class of `path`.
    pub fn of(path: &str) -> RouteClass {
        match path {
            "/v1/login" | "/v1/refresh" | "/v1/logout" | "/v1/auto_login" => RouteClass::Login,
            "/ping" | "/ready" | "/metrics" => RouteClass::Ops,
            "/v1/whoami" | "/v1/plugins" | "/.well-known/jwks.json" => RouteClass::Account,
            p if is_under(p, "/v1/auth/verify") => RouteClass::Verify,
            p if ["/v1/users", "/v1/api-keys", "/v1/variables"]
                .iter()
                .any(|prefix| is_under(p, prefix)) =>
            {
                RouteClass::Account
            }
            _ => RouteClass::Agent,
        }
    }

    /// The class's name in `agentflow.json` and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            RouteClass::Login => "login",
            RouteClass::Account => "account",
            RouteClass::Verify => "verify",
            RouteClass::Agent => "agent",
            RouteClass::Ops => "ops",
        }
    }
}

/// `path` is `prefix` or a path below it (`/v1/users/x`, not `/v1/usersx`),
/// without allocating: this runs on every request, up to three times.
fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_in_their_class() {
        assert_eq!(RouteClass::of("/v1/login"), RouteClass::Login);
        assert_eq!(RouteClass::of("/v1/refresh"), RouteClass::Login);
        assert_eq!(RouteClass::of("/v1/users/abc"), RouteClass::Account);
        assert_eq!(RouteClass::of("/v1/usersx"), RouteClass::Agent);
        assert_eq!(
            RouteClass::of("/v1/auth/verify/v1/threads"),
            RouteClass::Verify
        );
        assert_eq!(RouteClass::of("/v1/threads/t1"), RouteClass::Agent);
        assert_eq!(RouteClass::of("/ping"), RouteClass::Ops);
    }
}
