//! Who may use the account API: the [`Account`] and [`Superuser`]
//! extractors. Only credentials the account system issued (login tokens
//! whose login is live, built-in API keys) name an account; a plugin or an
//! external JWT whose `user_id` happens to equal an account id gets 403.

use axum::extract::FromRequestParts;
use http::request::Parts;

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::store::{Store, StoreError, User};

/// The caller's account, as stored now. Put it in a handler's arguments to
/// make the handler "any account".
pub struct Account(pub User);

/// The caller's account when it is a superuser (else 403).
pub struct Superuser(pub User);

impl FromRequestParts<AppState> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .ok_or_else(|| ApiError::Internal("authentication did not run".into()))?;
        let Some(user_id) = caller.origin.account_id() else {
            return Err(ApiError::Forbidden(format!(
                "this endpoint needs an agentflow login token or API key; the caller was authenticated by {}",
                caller.origin.describe()
            )));
        };
        match state.accounts.store.get_user(user_id).await {
            Ok(u) if u.is_active => Ok(Account(u)),
            Ok(_) | Err(StoreError::NotFound) => Err(ApiError::InvalidCredentials {
                detail: "account is not active".into(),
                invalid_token: false,
            }),
            Err(e) => Err(e.into()),
        }
    }
}

impl FromRequestParts<AppState> for Superuser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Account(user) = Account::from_request_parts(parts, state).await?;
        if user.is_superuser {
            Ok(Superuser(user))
        } else {
            Err(ApiError::Forbidden("superuser only".into()))
        }
    }
}
