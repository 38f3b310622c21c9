//! The [`ClientIp`] extractor: the caller's address as authentication
//! recorded it, for the audit trail.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use http::request::Parts;

use super::Caller;

/// The authenticated caller's client address (`None` when unknown).
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<Caller>()
                .and_then(|c| c.client_ip.clone()),
        ))
    }
}
