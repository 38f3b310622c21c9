//! The authenticated caller, whatever method proved who they are, and how
//! it was proved (which decides what the account API accepts).

use serde::Serialize;
use serde_json::{Map, Value};

/// Who is calling: produced by an auth method, checked by the authorizer,
/// forwarded to the agent upstream.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Identity {
    /// Stable identifier of the caller.
    pub user_id: String,
    /// Roles used for authorization.
    pub roles: Vec<String>,
    /// Every other fact the auth method reported (JWT claims, plugin claims).
    #[schema(value_type = Object)]
    pub claims: Map<String, Value>,
}

impl Identity {
    /// The identity as a JSON value (`user_id`, `roles`, `claims`).
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "user_id": self.user_id, "roles": self.roles, "claims": self.claims })
    }
}

/// How an identity was proved. Only the pipeline sets it, and only
/// [`IdentityOrigin::Account`] and [`IdentityOrigin::ApiKey`] act as an
/// account: a `user_id` alone (from a plugin or an external JWT) proves
/// nothing about who owns which account.
// Kept apart from `Identity` on purpose: plugins, authorizers and the agent
// see identities, never origins, and no code outside the pipeline can build
// an account origin by copying claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityOrigin {
    /// Auth is off (`"auth": null`).
    Anonymous,
    /// A JWT the account system did not issue (another issuer, `agentflow token`).
    Jwt,
    /// An authenticator plugin, by its name in agentflow.json.
    Plugin {
        /// The plugin entry's name.
        name: String,
    },
    /// An access token from `POST /v1/login`, `/v1/refresh` or
    /// `/v1/auto_login` whose login is live in the store.
    Account {
        /// The account's id.
        user_id: String,
        /// The login (refresh-token family) the token belongs to.
        login: String,
    },
    /// A built-in API key from `POST /v1/api-keys`.
    ApiKey {
        /// The key owner's account id.
        user_id: String,
        /// The key's id.
        key_id: String,
    },
}

impl IdentityOrigin {
    /// The account id when the account system itself issued the credential.
    pub fn account_id(&self) -> Option<&str> {
        match self {
            IdentityOrigin::Account { user_id, .. } | IdentityOrigin::ApiKey { user_id, .. } => {
                Some(user_id)
            }
            IdentityOrigin::Anonymous | IdentityOrigin::Jwt | IdentityOrigin::Plugin { .. } => None,
        }
    }

    /// A short description for refusals ("an external JWT", ...).
    pub fn describe(&self) -> String {
        match self {
            IdentityOrigin::Anonymous => "no authentication (auth is off)".into(),
            IdentityOrigin::Jwt => "a JWT not issued by this server's login".into(),
            IdentityOrigin::Plugin { name } => format!("the auth plugin {name:?}"),
            IdentityOrigin::Account { .. } => "a login token".into(),
            IdentityOrigin::ApiKey { .. } => "an API key".into(),
        }
    }
}

/// An identity and how it was proved: what the authentication chain returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    /// Who is calling.
    pub identity: Identity,
    /// How that was proved.
    pub origin: IdentityOrigin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_account_issued_origins_name_an_account() {
        let account = IdentityOrigin::Account {
            user_id: "u1".into(),
            login: "f1".into(),
        };
        let key = IdentityOrigin::ApiKey {
            user_id: "u2".into(),
            key_id: "k".into(),
        };
        assert_eq!(account.account_id(), Some("u1"));
        assert_eq!(key.account_id(), Some("u2"));
        for other in [
            IdentityOrigin::Anonymous,
            IdentityOrigin::Jwt,
            IdentityOrigin::Plugin { name: "p".into() },
        ] {
            assert_eq!(other.account_id(), None, "{other:?}");
        }
    }
}
