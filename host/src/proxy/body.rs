//! Request bodies that carry identity (graph routes): parsed and rewritten
//! whatever the client's Content-Type says, so no content type, charset or
//! `+json` variant lets a forged `config.user_id` through.

use http::header::{self, HeaderMap};
use serde_json::Value;

use crate::error::ApiError;
use crate::identity::Identity;

/// Refuses more than one `Content-Type`: the host and the agent could each
/// read a different one.
pub fn check_single_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.get_all(header::CONTENT_TYPE).iter().nth(1).is_some() {
        return Err(ApiError::BadRequest("more than one Content-Type header".into()));
    }
    Ok(())
}

/// The body to forward for a route that carries identity: the client's JSON
/// object (already read and size-checked by
/// [`AgentRequest::with_body`](crate::agent_request::AgentRequest::with_body))
/// with `config.user` and `config.user_id` set by the host, or `None` when
/// the body is empty (nothing to rewrite; it is forwarded empty). Anything
/// else — not JSON, not an object — is refused with 400 rather than
/// forwarded as sent.
pub fn with_identity(bytes: &[u8], who: &Identity) -> Result<Option<Vec<u8>>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    merge_identity_into(bytes, who).map(Some)
}

/// Puts the identity into `config.user` / `config.user_id` of a JSON object,
/// overwriting whatever the client sent there (duplicate keys included:
/// the body is re-serialized, so only the host's value is left).
fn merge_identity_into(body: &[u8], who: &Identity) -> Result<Vec<u8>, ApiError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(root) = &mut value else {
        return Err(ApiError::BadRequest("request body must be a JSON object".into()));
    };
    let config = root.entry("config").or_insert_with(|| Value::Object(Default::default()));
    if config.is_null() {
        *config = Value::Object(Default::default());
    }
    let Value::Object(config) = config else {
        return Err(ApiError::BadRequest("`config` in the request body must be an object".into()));
    };
    config.insert("user".into(), who.to_json());
    config.insert("user_id".into(), Value::String(who.user_id.clone()));
    serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn alice() -> Identity {
        Identity { user_id: "alice".into(), roles: vec!["user".into()], claims: Default::default() }
    }

    fn run(body: &'static [u8]) -> Result<Option<Value>, ApiError> {
        with_identity(body, &alice()).map(|o| o.map(|b| serde_json::from_slice(&b).unwrap()))
    }

    #[test]
    fn merge_overwrites_spoofed_user() {
        let body =
            br#"{"messages": [], "config": {"thread_id": "t1", "user_id": "mallory", "user": {"user_id": "mallory"}}}"#;
        let out: Value = serde_json::from_slice(&merge_identity_into(body, &alice()).unwrap()).unwrap();
        assert_eq!(out["config"]["user_id"], "alice");
        assert_eq!(out["config"]["user"]["user_id"], "alice");
        assert_eq!(out["config"]["thread_id"], "t1");
    }

    #[test]
    fn duplicate_keys_leave_only_the_hosts_value() {
        let body = br#"{"config": {"user_id": "mallory"}, "config": {"user_id": "mallory", "user_id": "eve"}}"#;
        let out = String::from_utf8(merge_identity_into(body, &alice()).unwrap()).unwrap();
        assert!(!out.contains("mallory") && !out.contains("eve"), "{out}");
    }

    #[test]
    fn merge_creates_config_and_rejects_non_objects() {
        let out: Value = serde_json::from_slice(&merge_identity_into(b"{}", &alice()).unwrap()).unwrap();
        assert_eq!(out, json!({"config": {"user_id": "alice", "user": alice().to_json()}}));
        assert!(matches!(merge_identity_into(b"[1]", &alice()), Err(ApiError::BadRequest(_))));
        assert!(matches!(merge_identity_into(b"{\"config\": 3}", &alice()), Err(ApiError::BadRequest(_))));
        assert!(matches!(merge_identity_into(b"{", &alice()), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn only_json_objects_are_forwarded() {
        let out = run(br#"{"config": {"user_id": "mallory"}}"#).unwrap().unwrap();
        assert_eq!(out["config"]["user_id"], "alice");
        assert!(matches!(run(b"user_id=mallory"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn empty_bodies_stay_empty() {
        assert!(run(b"").unwrap().is_none());
        assert!(run(b" \r\n").unwrap().is_none());
    }

    #[test]
    fn two_content_types_are_refused() {
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(check_single_content_type(&h).is_ok());
        h.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(check_single_content_type(&h), Err(ApiError::BadRequest(_))));
    }
}
